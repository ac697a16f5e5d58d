"""The C++ CPU kernels: built at install, verified and loaded once per process, or replaced by plain ops.

The life-cycle scenarios run in fresh Python processes, as a user's first script
would. Wall-clock bounds are not asserted (see ``spocu bench --sections latency``);
what is asserted is what a caller can observe: correct values from the first call,
the state ``spocu.torch.kernel_status()`` reports, which kernels served a call, and
that a damaged library file gives one warning, never a crash.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from spocu.core import (
    SPOCUParams,
    reference_spocu,
    reference_spocu_grad,
    shifted_coefficients,
)
from spocu.torch import _cpp, spocu
from spocu.torch._constants import kernel_constants

SRC = str(Path(__file__).resolve().parents[2] / "src")

# the scenario prelude: a float64 input, its reference values, and a checker
PRELUDE = textwrap.dedent(
    """
    import json, os, shutil, sys, warnings
    from pathlib import Path
    import numpy as np
    import torch
    import spocu.torch as spocu_torch
    from spocu.core import reference_spocu, reference_spocu_grad
    from spocu.torch import _cpp, spocu

    X = torch.linspace(-9, 9, 3001, dtype=torch.float64)

    def call_and_check(x=X):
        x = x.clone().requires_grad_(True)
        y = spocu(x)
        y.sum().backward()
        np.testing.assert_allclose(y.detach().numpy(), reference_spocu(x.detach().numpy()), rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(x.grad.numpy(), reference_spocu_grad(x.detach().numpy()), rtol=1e-10, atol=1e-12)
        return y.grad_fn.kernels.__name__.rsplit(".", 1)[-1]  # the kernel module that served the call

    out = {}
    """
)


def run_scenario(body: str, **env: str) -> dict:
    """Run PRELUDE + body in a fresh interpreter; the body fills the dict ``out``, returned here."""
    script = PRELUDE + textwrap.dedent(body) + "\nprint('RESULT=' + json.dumps(out))\n"
    full_env = {**os.environ, "PYTHONPATH": SRC, **env}
    full_env.pop("SPOCU_TORCH_BACKEND", None)
    proc = subprocess.run([sys.executable, "-c", script], env=full_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT=")][-1]
    return json.loads(line.removeprefix("RESULT="))


def test_the_first_call_in_a_fresh_process_uses_the_installed_kernels(cpp_ready):
    result = run_scenario(
        """
        out["before"] = spocu_torch.kernel_status()["state"]
        out["served_by"] = call_and_check()
        out["status"] = spocu_torch.kernel_status()
        out["path"] = spocu_torch.kernel_path(torch.float64)
        """
    )
    assert result["before"] == "idle"  # importing loads nothing
    assert result["served_by"] == "_cpp"
    assert result["status"]["state"] == "ready" and result["status"]["isa"] in _cpp.ISAS
    assert result["path"] == f"cpp-{result['status']['isa']}"


# a damaged copy of the installed library, put where spocu looks for it
DAMAGE = """
    lib = Path(_cpp.library_path()); damaged = Path({tmp!r}) / lib.name
    shutil.copy(lib, damaged); shutil.copy(str(lib) + ".sha256", str(damaged) + ".sha256")
    {damage}
    _cpp.library_path = lambda: damaged
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out["served_by"] = [call_and_check() for _ in range(3)]
        out["path"] = spocu_torch.kernel_path(torch.float64)
    out["warnings"] = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    out["status"] = spocu_torch.kernel_status()
    out["damaged"] = str(damaged)
"""


@pytest.mark.parametrize(
    "damage, why",
    [
        ("os.truncate(damaged, 40000)", "does not match the hash"),  # the bus error of issue 25
        ("damaged.write_bytes(b'garbage' * 1000)", "does not match the hash"),
        ("os.remove(str(damaged) + '.sha256')", "no readable recorded hash"),
        # a file whose recorded hash matches but that is no library: dlopen refuses it
        (
            "damaged.write_bytes(b'garbage'); Path(str(damaged) + '.sha256').write_text("
            "__import__('hashlib').sha256(b'garbage').hexdigest())",
            "OSError",
        ),
    ],
    ids=["truncated", "garbage", "no-hash", "garbage-with-its-hash"],
)
def test_a_damaged_library_gives_one_warning_naming_it_and_plain_ops(cpp_ready, tmp_path, damage, why):
    result = run_scenario(DAMAGE.format(tmp=str(tmp_path), damage=damage))
    assert result["served_by"] == ["_eager"] * 3 and result["path"] == "eager"
    assert result["status"]["state"] == "failed" and why in result["status"]["reason"]
    assert len(result["warnings"]) == 1, result["warnings"]
    assert result["damaged"] in result["warnings"][0] and "'eager'" in result["warnings"][0]


def test_a_package_installed_without_the_kernels_warns_once_and_uses_plain_ops():
    result = run_scenario(
        """
        _cpp.library_path = lambda: None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out["served_by"] = [call_and_check() for _ in range(2)]
        out["warnings"] = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        """
    )
    assert result["served_by"] == ["_eager"] * 2
    assert len(result["warnings"]) == 1 and "not built when spocu was installed" in result["warnings"][0]


@pytest.mark.parametrize("isa", _cpp.ISAS)
def test_every_instruction_set_this_cpu_runs_matches_the_reference(cpp_ready, isa, tmp_path):
    """``$SPOCU_CPU_ISA`` caps the copy of the kernels; each copy the CPU runs gives the reference's values
    (float64 to 1e-11, every float16/bfloat16 value within half an ulp)."""
    lib = ctypes.CDLL(_cpp.kernel_status()["library"])
    lib.spocu_isa_supported.argtypes = [ctypes.c_char_p]
    if not lib.spocu_isa_supported(isa.encode()):
        pytest.skip(f"this CPU (or this build) has no {isa} copy")
    out_file = tmp_path / "half.pt"
    result = run_scenario(
        f"""
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_cpp_kernels import half_precision_outputs
        out["served_by"] = call_and_check()
        out["isa"] = spocu_torch.kernel_status()["isa"]
        torch.save({{str(d): half_precision_outputs(d, {{}}) for d in (torch.bfloat16, torch.float16)}}, {str(out_file)!r})
        """,
        SPOCU_CPU_ISA=isa,
    )
    assert result == {"served_by": "_cpp", "isa": isa}
    for outputs in torch.load(out_file).values():
        check_half_precision_outputs(outputs, SPOCUParams().as_dict())


def test_an_unknown_instruction_set_is_refused_with_one_warning():
    result = run_scenario(
        """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out["served_by"] = call_and_check()
        out["warnings"] = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        """,
        SPOCU_CPU_ISA="avx9000",
    )
    assert result["served_by"] == "_eager"
    assert len(result["warnings"]) == 1 and "SPOCU_CPU_ISA='avx9000'" in result["warnings"][0]


def test_a_wrong_library_is_refused_by_the_self_check(cpp_ready, monkeypatch):
    """A miscompiled library must never serve: the load-time comparison with the plain ops catches it."""
    table = dict(_cpp._lib)
    real = table["forward", torch.float64]

    def wrong(x_ptr, y_ptr, n, tab, threads):  # writes s(x) * (1 + 1e-6): close, but wrong
        real(x_ptr, y_ptr, n, tab, threads)
        np.frombuffer((ctypes.c_double * n).from_address(y_ptr), dtype=np.float64)[:] *= 1 + 1e-6

    table["forward", torch.float64] = wrong
    with pytest.raises(RuntimeError, match="disagree with the plain ops"):
        _cpp._self_check(table)


def test_every_dtype_matches_the_plain_ops_and_the_reference(cpp_ready):
    params = SPOCUParams(c=1.5)
    x64 = torch.linspace(-8, 8, 5001, dtype=torch.float64)
    for dtype, rtol in ((torch.float64, 1e-12), (torch.float32, 2e-5), (torch.bfloat16, 1e-2), (torch.float16, 2e-3)):
        x = x64.to(dtype).detach().requires_grad_(True)
        y = x.view(-1)  # a non-leaf input, as inside a network
        out = spocu(y, **params.as_dict(), backend="cpp")
        out.backward(torch.ones_like(out))
        xs = x.detach().double().numpy()
        np.testing.assert_allclose(out.detach().double().numpy(), reference_spocu(xs, **params.as_dict()),
                                   rtol=rtol, atol=rtol)  # fmt: skip
        np.testing.assert_allclose(x.grad.double().numpy(), reference_spocu_grad(xs, **params.as_dict()),
                                   rtol=rtol, atol=rtol)  # fmt: skip


def _float32_horner_slack(t: np.ndarray, coefficients: list[float]) -> np.ndarray:
    """What evaluating sum_k a_k t^k by Horner's rule in float32 may be off by: 16 eps * sum_k |a_k| |t|^k."""
    return 16 * np.finfo(np.float32).eps * sum(abs(a) * np.abs(t) ** k for k, a in enumerate(coefficients))


def half_precision_outputs(dtype: torch.dtype, params: dict) -> dict[str, torch.Tensor]:
    """x (all 65,536 values of ``dtype``, shuffled, 5 left out), a gradient, and the C++ kernels' s(x), dL/dx."""
    info = torch.finfo(dtype)
    everything = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(dtype)
    order = torch.randperm(65536, generator=torch.Generator().manual_seed(0))
    x = everything[order][:-5].clone()  # not a multiple of 16: the tail takes the block loop
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    grad[::7] = info.tiny / 4  # subnormal gradients: dL/dx subnormal where s' is of order 1
    leaf = x.detach().requires_grad_(True)
    y = spocu(leaf, **params, backend="cpp")
    y.backward(grad)
    return {"x": x, "grad": grad, "y": y.detach(), "dx": leaf.grad}


def check_half_precision_outputs(out: dict[str, torch.Tensor], params: dict) -> None:
    """Each result within half an ulp of the float64 reference, plus float32's rounding error where the
    polynomial cancels; overflow gives inf, NaN stays NaN."""
    x, grad, p = out["x"], out["grad"], params
    info = torch.finfo(x.dtype)
    finite = torch.isfinite(x)
    xs, gs = x[finite].double().numpy(), grad[finite].double().numpy()
    t = np.clip(xs / p["gamma"], -p["beta"], p["c"] - p["beta"])
    d = [
        float(v) for v in shifted_coefficients(p["beta"])
    ]  # s = alpha sum_k d_k t^k, s' = alpha/gamma sum k d_k t^(k-1)
    # the reference's literal formula cancels to 0 for |x| < ~1e-20 (it subtracts alpha h(beta)); there
    # s(x) = s'(0) x to far better than half precision (the next term is s''(0) x^2 / 2)
    linear = reference_spocu_grad(0.0, **p) * xs
    want_y = np.where(np.abs(xs) < 1e-10, linear, reference_spocu(xs, **p))
    slack_y = p["alpha"] * _float32_horner_slack(t, [0.0, *d])
    slope = reference_spocu_grad(xs, **p)
    want_dx = gs * slope
    slack_dx = np.abs(gs) * p["alpha"] / p["gamma"] * _float32_horner_slack(t, [k * v for k, v in enumerate(d, 1)])
    for want in (want_y, want_dx):  # subnormal results are among those checked
        assert ((np.abs(want) < info.tiny / 2) & (want != 0)).sum() > 50

    # s' beyond float32's range saturates (the backward's documented rule, tested with the other edge
    # cases in test_parity): the gradient is checked where s' stays far inside it
    in_range = np.abs(slope) < 1e30
    checks = ((out["y"][finite], want_y, slack_y, np.ones_like(xs, dtype=bool)),
              (out["dx"][finite], want_dx, slack_dx, in_range))  # fmt: skip
    for got, want, slack, where in checks:
        got, want, slack = got.double().numpy()[where], want[where], slack[where]
        overflow = np.isinf(torch.from_numpy(want).to(x.dtype).double().numpy())
        np.testing.assert_array_equal(got[overflow], np.sign(want[overflow]) * np.inf)
        # half an ulp (eps / 2 relative) or, for subnormals, half their spacing (tiny * eps)
        bound = info.eps / 2 * np.abs(want) + info.tiny * info.eps / 2 + slack * (1 + 2.0**-7)
        excess = np.where(overflow, 0.0, np.abs(got - want) - bound)
        worst = int(np.argmax(excess))
        assert (excess <= 0).all(), (
            f"{(excess > 0).sum()} results off; worst at x={xs[where][worst]}: got {got[worst]}, reference {want[worst]}"
        )
    assert torch.isnan(out["y"][torch.isnan(x)]).all()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("params", [SPOCUParams(), SPOCUParams(alpha=2.0, beta=0.3, gamma=0.7, c=2.5)], ids=str)
def test_every_half_precision_value_forward_and_backward_within_half_an_ulp_of_the_reference(cpp_ready, params, dtype):
    """All 65,536 bfloat16 or float16 inputs, subnormal results included, in the fused kernels.

    The kernels compute in float32 and round to the half type, in AVX-512 registers where the
    CPU has them (bfloat16's VCVTNEPS2BF16 flushes subnormals: those lanes are rounded apart).
    """
    check_half_precision_outputs(half_precision_outputs(dtype, params.as_dict()), params.as_dict())


def _kernel(lib: ctypes.CDLL, kind: str, dtype: torch.dtype, isa: str):
    fn = getattr(lib, f"spocu_{kind}_{_cpp.DTYPES[dtype]}_{isa}")
    fn.argtypes, fn.restype = _cpp._SIGNATURES[kind], None
    return fn


def _bfloat16_store(f: torch.Tensor) -> torch.Tensor:
    """float32 -> bfloat16 bits as the kernels' BF16::store: round to nearest even, NaN quieted (its sign and
    payload kept), computed here in int64 from the float32 bits."""
    b = f.view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    rounded = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return torch.where(torch.isnan(f), (b >> 16) | 0x40, rounded).to(torch.int32).to(torch.int16)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_kernels_give_the_float32_kernels_results_rounded_bit_for_bit(cpp_ready, dtype):
    """All 65,536 half-precision inputs through every copy of the kernels this CPU runs (AVX2 or AVX-512
    register loops, then the block loops for the tail): the result is the float32 kernel's on the widened
    input, rounded by torch (bfloat16: also NaN bits as BF16::store quiets them), bit for bit, forward and
    backward, subnormal results included."""
    lib = ctypes.CDLL(_cpp.kernel_status()["library"])
    lib.spocu_isa_supported.argtypes = [ctypes.c_char_p]
    isas = [isa for isa in _cpp.ISAS if lib.spocu_isa_supported(isa.encode())]
    x = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(dtype)[3:]  # 65,533: a tail for the blocks
    wide = x.float()
    tiny = torch.finfo(dtype).tiny
    shuffled = x[torch.randperm(x.numel(), generator=torch.Generator().manual_seed(0))]
    grads = [torch.full_like(x, v) for v in (1.0, -0.75, tiny / 4, math.inf)] + [shuffled]

    def check(got: torch.Tensor, want32: torch.Tensor, what: str) -> None:
        nan = torch.isnan(want32)
        assert torch.equal(torch.isnan(got), nan), what
        bits, want = got.view(torch.int16), want32.to(dtype).view(torch.int16)
        assert torch.equal(bits[~nan], want[~nan]), f"{what}: {(bits[~nan] != want[~nan]).sum()} values differ"
        if dtype == torch.bfloat16:
            assert torch.equal(bits, _bfloat16_store(want32)), f"{what}: NaN bits"
        assert ((want32 != 0) & (want32.abs() < tiny)).sum() > 50 or what.startswith("backward"), what

    for isa in isas:
        for params in (SPOCUParams(), SPOCUParams(alpha=2.0, beta=0.3, gamma=0.7, c=2.5)):
            _, forward_table, backward_table, _, _ = _cpp._tables(kernel_constants(params, dtype))
            for threads in (1, 2):
                y, y32 = torch.empty_like(x), torch.empty_like(wide)
                _kernel(lib, "forward", dtype, isa)(x.data_ptr(), y.data_ptr(), x.numel(), forward_table, threads)
                _kernel(lib, "forward", torch.float32, isa)(
                    wide.data_ptr(), y32.data_ptr(), x.numel(), forward_table, 1
                )
                check(y, y32, f"forward {isa} {params} {threads} threads")
                for i, g in enumerate(grads):
                    g32, dx, dx32 = g.float(), torch.empty_like(x), torch.empty_like(wide)
                    _kernel(lib, "backward", dtype, isa)(g.data_ptr(), x.data_ptr(), dx.data_ptr(), x.numel(),
                                                         backward_table, threads)  # fmt: skip
                    _kernel(lib, "backward", torch.float32, isa)(g32.data_ptr(), wide.data_ptr(), dx32.data_ptr(),
                                                                 x.numel(), backward_table, 1)  # fmt: skip
                    check(dx, dx32, f"backward {isa} {params} {threads} threads, gradient {i}")


def test_ready_loads_once_and_a_failed_load_leaves_the_learnable_kernels_declining(monkeypatch):
    """ready() starts the load on its first call only; after a failed load the learnable backward
    writes nothing and returns None (the caller's plain ops serve), instead of touching memory."""
    from spocu.torch import _cpp

    starts = []

    def failing_start():
        starts.append(1)
        monkeypatch.setattr(_cpp, "_state", "failed")

    monkeypatch.setattr(_cpp, "_lib", None)
    monkeypatch.setattr(_cpp, "_state", "idle")
    monkeypatch.setattr(_cpp, "_start", failing_start)
    assert _cpp.ready() is False
    assert _cpp.ready() is False
    assert starts == [1]
    x3 = torch.randn(1, 2, 3)
    out3 = torch.full_like(x3, 7.0)
    params = [torch.ones(2, dtype=torch.float64) * v for v in (1.0, 0.5, 1.0)]
    assert _cpp.learnable_backward(torch.ones_like(x3), x3, out3, *params, float("inf"), 1e4) is None
    assert torch.equal(out3, torch.full_like(x3, 7.0))
