"""The C++ CPU kernels' life cycle: built in the background, cached on disk, loaded, or replaced by plain ops.

Each scenario runs in a fresh Python process with its own cache directory, as a
user's first script would. Wall-clock bounds are not asserted (see
``spocu bench --sections latency``); what is asserted is what a caller can
observe: correct values at once, the state ``spocu.torch.kernel_status()``
reports, and which kernel module served a call.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from spocu.core import SPOCUParams, reference_spocu, reference_spocu_grad, shifted_coefficients
from spocu.torch import _cpp, spocu

SRC = str(Path(__file__).resolve().parents[2] / "src")

# the scenario prelude: a float64 input, its reference values, and a checker
PRELUDE = textwrap.dedent(
    """
    import json, os, sys, threading, warnings
    import numpy as np
    import torch
    import spocu.torch as spocu_torch
    from spocu.core import reference_spocu, reference_spocu_grad
    from spocu.torch import spocu

    X = torch.linspace(-9, 9, 3001, dtype=torch.float64)

    def call_and_check(x=X):
        x = x.clone().requires_grad_(True)
        y = spocu(x)
        y.sum().backward()
        np.testing.assert_allclose(y.detach().numpy(), reference_spocu(x.detach().numpy()), rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(x.grad.numpy(), reference_spocu_grad(x.detach().numpy()), rtol=1e-10, atol=1e-12)
        if "FixedSPOCU" in y.grad_fn.name():  # the C++ autograd node (it computes with the C++ kernels)
            return "_node"
        return y.grad_fn.kernels.__name__.rsplit(".", 1)[-1]  # the kernel module that served the call

    out = {}
    """
)


def run_scenario(body: str, cache: Path, **env: str) -> dict:
    """Run PRELUDE + body in a fresh interpreter; the body fills the dict ``out``, returned here.

    The C++ autograd node (built after the kernels, ~15 s) is off unless ``env`` turns it on
    (``SPOCU_TORCH_NODE="1"``): these scenarios are about the kernel library.
    """
    script = PRELUDE + textwrap.dedent(body) + "\nprint('RESULT=' + json.dumps(out))\n"
    full_env = {**os.environ, "PYTHONPATH": SRC, "SPOCU_CACHE_DIR": str(cache), "SPOCU_TORCH_NODE": "0", **env}
    full_env.pop("SPOCU_TORCH_BACKEND", None)
    proc = subprocess.run([sys.executable, "-c", script], env=full_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT=")][-1]
    return json.loads(line.removeprefix("RESULT="))


def compiler_wrapper(tmp_path: Path, shell: str) -> Path:
    """``tmp_path/bin/c++``: runs the ``shell`` lines, then the real compiler (skips the test without one)."""
    compiler = _cpp._compiler()
    if compiler is None:
        pytest.skip("no C++ compiler here")
    wrapper = tmp_path / "bin" / "c++"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\n{shell}\nexec {compiler} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """A cache directory holding a built library (built by a first, cold process)."""
    cache = tmp_path_factory.mktemp("spocu-cache-warm")
    result = run_scenario(
        """
        out["first_state"] = spocu_torch.kernel_status()["state"]
        out["first_node"] = call_and_check()
        out["after_first_call"] = spocu_torch.kernel_status()["state"]
        out["built"] = spocu_torch.build_kernels(timeout=600)
        out["later_node"] = call_and_check()
        """,
        cache,
    )
    return cache, result


def test_cold_cache_first_call_is_served_by_plain_ops_then_the_kernels(warm_cache):
    cache, result = warm_cache
    assert result["first_state"] == "idle"  # importing spocu builds nothing
    # the first call starts the build and does not wait for it
    assert result["after_first_call"] in ("building", "ready")
    if result["after_first_call"] == "building":
        assert result["first_node"] == "_eager"  # the plain ops served it
    assert result["built"]["state"] == "ready", result["built"]
    assert result["later_node"] == "_cpp"
    library = Path(result["built"]["library"])
    assert library.parent == cache and library.exists()
    assert not list(cache.glob(".*.tmp"))  # nothing half-written left behind


def test_warm_cache_first_call_uses_the_kernels(warm_cache):
    cache, _ = warm_cache
    result = run_scenario(
        """
        out["first_node"] = call_and_check()
        out["state"] = spocu_torch.kernel_status()["state"]
        """,
        cache,
    )
    assert result == {"first_node": "_cpp", "state": "ready"}


def test_no_compiler_warns_once_and_uses_plain_ops(tmp_path):
    result = run_scenario(
        """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            nodes = [call_and_check() for _ in range(3)]
        out["nodes"] = nodes
        out["warnings"] = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        out["status"] = spocu_torch.kernel_status()
        """,
        tmp_path,
        PATH=str(tmp_path),  # no compiler on the PATH
        CXX="",
    )
    assert result["nodes"] == ["_eager"] * 3
    assert len(result["warnings"]) == 1 and "no C++ compiler found" in result["warnings"][0]
    assert result["status"]["state"] == "failed"


def test_a_broken_compiler_is_reported_once_after_the_build_fails(tmp_path):
    fake = tmp_path / "bin" / "c++"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'fake compiler: internal error' >&2\nexit 1\n")
    fake.chmod(0o755)
    result = run_scenario(
        """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out["first"] = call_and_check()
            out["status"] = spocu_torch.build_kernels(timeout=120)
            out["later"] = [call_and_check() for _ in range(2)]
        out["warnings"] = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        """,
        tmp_path / "cache",
        CXX=str(fake),
    )
    assert result["status"]["state"] == "failed" and "internal error" in result["status"]["reason"]
    assert result["later"] == ["_eager"] * 2
    assert len(result["warnings"]) == 1 and "internal error" in result["warnings"][0]
    assert not list((tmp_path / "cache").glob("*.so"))


def test_the_build_runs_at_idle_priority_and_a_starved_build_restarts_at_normal_priority(tmp_path):
    """The compiler must not take cores from the caller (it runs SCHED_IDLE, else nice 19); on a
    machine busy on every core that build may starve, so after a while it is killed (with its
    children) and run again at normal priority."""
    real = shutil.which("c++") or shutil.which("g++")
    if real is None:
        pytest.skip("no C++ compiler here")
    fake = tmp_path / "bin" / "c++"
    fake.parent.mkdir()
    marker = tmp_path / "idle-pid"
    # a compiler that hangs whenever it runs at idle priority, and compiles otherwise
    fake.write_text(
        "#!/bin/sh\n"
        "if [ \"$(nice)\" = 19 ] || chrt -p $$ 2>/dev/null | grep -q SCHED_IDLE; then\n"
        f"  echo $$ > {marker}; exec sleep 600\n"
        "fi\n"
        f"exec {real} \"$@\"\n"
    )
    fake.chmod(0o755)
    result = run_scenario(
        """
        from spocu.torch import _cpp
        _cpp._IDLE_BUILD_TIMEOUT_S = 3.0
        out["status"] = spocu_torch.build_kernels(timeout=600)
        out["node"] = call_and_check()
        """,
        tmp_path / "cache",
        CXX=str(fake),
    )
    assert marker.exists()  # the first attempt ran at idle priority
    assert result["status"]["state"] == "ready", result["status"]
    assert result["node"] == "_cpp"
    hung = int(marker.read_text())
    stat = Path(f"/proc/{hung}/stat")
    assert not stat.exists() or stat.read_text().split(")")[-1].split()[0] == "Z"  # killed, not left running


def test_threads_racing_on_a_cold_cache_all_get_correct_results(tmp_path):
    result = run_scenario(
        """
        errors = []
        def work():
            try:
                for _ in range(20):
                    call_and_check()
            except Exception as exc:
                errors.append(repr(exc))
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads: t.start()
        for t in threads: t.join()
        out["errors"] = errors
        out["state"] = spocu_torch.build_kernels(timeout=600)["state"]
        out["later"] = call_and_check()
        """,
        tmp_path,
    )
    assert result == {"errors": [], "state": "ready", "later": "_cpp"}
    assert len(list(tmp_path.glob("*.so"))) == 1


def test_a_process_forked_during_the_build_gets_the_kernels(tmp_path):
    result = run_scenario(
        """
        import multiprocessing as mp

        def child(queue):
            node = call_and_check()
            status = spocu_torch.build_kernels(timeout=600)
            queue.put((node, status["state"], call_and_check()))

        call_and_check()  # starts the build
        out["parent_state_at_fork"] = spocu_torch.kernel_status()["state"]
        ctx = mp.get_context("fork")
        queue = ctx.Queue()
        proc = ctx.Process(target=child, args=(queue,))
        proc.start()
        out["child"] = queue.get(timeout=600)
        proc.join(60)
        out["exitcode"] = proc.exitcode
        out["parent"] = spocu_torch.build_kernels(timeout=600)["state"]
        """,
        tmp_path,
    )
    assert result["exitcode"] == 0
    assert result["child"][1:] == ["ready", "_cpp"]
    assert result["parent"] == "ready"


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
    d = [float(v) for v in shifted_coefficients(p["beta"])]  # s = alpha sum_k d_k t^k, s' = alpha/gamma sum k d_k t^(k-1)
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


def test_the_portable_build_computes_every_half_precision_value_within_half_an_ulp(cpp_ready, tmp_path):
    """Built without -march=native (as for a CPU without AVX-512 or FMA) the block loops serve float16
    and bfloat16, with separate multiplies and adds: the same bound holds."""
    wrapper = compiler_wrapper(tmp_path, 'for a; do shift; [ "$a" = -march=native ] || set -- "$@" "$a"; done')
    out_file = tmp_path / "portable.pt"
    result = run_scenario(
        f"""
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_cpp_kernels import half_precision_outputs
        out["status"] = spocu_torch.build_kernels(timeout=300)
        torch.save({{str(d): half_precision_outputs(d, {{}}) for d in (torch.bfloat16, torch.float16)}}, {str(out_file)!r})
        """,
        tmp_path / "cache",
        CXX=str(wrapper),
    )
    assert result["status"]["state"] == "ready"
    params = SPOCUParams().as_dict()
    for outputs in torch.load(out_file).values():
        check_half_precision_outputs(outputs, params)
