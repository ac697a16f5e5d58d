"""One short GPU check of SPOCU's CUDA paths (Triton kernel, compiled models): correctness, then speed.

Run from the repository root on a machine with a CUDA GPU and ``triton``::

    python benchmarks/gpu_check.py            # about 1-3 minutes
    TRITON_INTERPRET=1 python benchmarks/gpu_check.py --cpu   # rehearse the script itself on CPU (slow, small)

1. Correctness (exit status 1 on any failure): the Triton path, the default
   path and ``torch.compile`` against the float64 reference in float32,
   bfloat16, float16 and float64, over the whole useful input range, for three
   parameter sets; non-dense layouts; one saved tensor per call.
2. Speed: forward and forward+backward at 1.6e7 elements, float32 and
   bfloat16, as interleaved medians (CUDA-synchronised) of SPOCU (Triton),
   SPOCU (plain ops), ReLU and GELU, and the throughput relative to ReLU
   (target: >= 90% of ReLU's).
"""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from reference_checks import PARAM_SETS, assert_matches_reference, wide_inputs  # noqa: E402

from spocu.commands.bench import interleaved_medians, saved_bytes_ratio  # noqa: E402
from spocu.core import reference_spocu, reference_spocu_grad  # noqa: E402
from spocu.torch import SPOCU, _dispatch, spocu  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
DEVICE = "cuda"
failures: list[str] = []


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def check(name: str, fn) -> None:
    start = time.perf_counter()
    try:
        fn()
    except Exception:  # noqa: BLE001 -- report every failure, then exit non-zero
        failures.append(name)
        print(f"FAIL {name}\n{traceback.format_exc()}")
    else:
        print(f"ok   {name} ({time.perf_counter() - start:.1f} s)")


def parity(backend: str, dtype_name: str, param_name: str) -> None:
    params = PARAM_SETS[param_name]
    x64 = wide_inputs(dtype_name, params)
    x = torch.tensor(x64).to(DTYPES[dtype_name]).to(DEVICE).requires_grad_(True)
    y = spocu(x, **params.as_dict(), backend=backend)
    y.backward(torch.ones_like(y))
    as64 = lambda t: t.detach().cpu().double().numpy()  # noqa: E731
    assert y.device.type == DEVICE and y.dtype == x.dtype
    assert_matches_reference(as64(x), as64(y), params, dtype_name)
    assert_matches_reference(as64(x), as64(x.grad), params, dtype_name, derivative=True)


def layouts() -> None:
    base = torch.randn(8, 6, 5, 4, dtype=torch.float64, device=DEVICE) * 3
    for view in (base.contiguous(memory_format=torch.channels_last), base.transpose(1, 3), base[:, ::2, 1:],
                 base[:1].expand(3, 6, 5, 4)):  # fmt: skip
        leaf = view.detach().requires_grad_(True)  # a leaf with the view's strides
        y = spocu(leaf, backend="triton")
        assert y.stride() == torch.empty_like(leaf).stride()
        v64 = view.cpu().numpy()
        np.testing.assert_allclose(y.detach().cpu().numpy(), reference_spocu(v64), rtol=1e-12, atol=1e-13)
        y.sum().backward()
        np.testing.assert_allclose(leaf.grad.cpu().numpy(), reference_spocu_grad(v64), rtol=1e-11, atol=1e-13)


def memory_and_dispatch() -> None:
    x = torch.randn(4096, device=DEVICE, requires_grad=True)
    assert saved_bytes_ratio(lambda t: spocu(t, backend="triton"), x) == 1.0
    if DEVICE == "cuda":
        assert _dispatch.resolve_backend(x) == "triton"  # auto -> triton on CUDA


def compiled_models() -> None:
    for make in (lambda: SPOCU(c=2.0), lambda: SPOCU(learnable=True, num_parameters=8)):
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), make(), torch.nn.MaxPool2d(2), torch.nn.Flatten(),
                                  torch.nn.Linear(8 * 15 * 15, 10)).to(DEVICE)  # fmt: skip
        x = torch.randn(16, 3, 32, 32, device=DEVICE) * 3
        ref = net(x)
        ref.sum().backward()
        grads = [p.grad.clone() for p in net.parameters()]
        net.zero_grad()
        out = torch.compile(net, fullgraph=True)(x)
        out.sum().backward()
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)
        for p, g in zip(net.parameters(), grads):
            torch.testing.assert_close(p.grad, g, rtol=1e-3, atol=1e-4)


def speed(n: int = 16_000_000) -> None:
    where = torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (Triton interpreter: not a speed)"
    print(f"\nspeed on {where}, {n:.3g} elements (median ms per call; throughput vs ReLU)")
    for dtype in (torch.float32, torch.bfloat16):
        x0 = (torch.randn(n, device=DEVICE) * 3).to(dtype)
        g = torch.randn(n, device=DEVICE).to(dtype)
        x = x0.clone().requires_grad_(True)
        fns = {
            "SPOCU (triton)": lambda t: spocu(t, backend="triton"),
            "SPOCU (plain ops)": lambda t: spocu(t, backend="eager"),
            "ReLU": torch.relu,
            "GELU": torch.nn.functional.gelu,
        }

        def fwd(fn):
            return lambda: fn(x0)

        def fb(fn):
            def call():
                fn(x).backward(g)
                x.grad = None

            return call

        with torch.no_grad():
            t_fwd = interleaved_medians({k: fwd(f) for k, f in fns.items()}, rounds=15, warmup=3, inner=5,
                                        sync=sync)  # fmt: skip
        t_fb = interleaved_medians({k: fb(f) for k, f in fns.items()}, rounds=15, warmup=3, inner=5,
                                   sync=sync)  # fmt: skip
        for name in fns:
            print(f"  {str(dtype):15s} {name:18s} fwd {t_fwd[name] * 1e3:7.3f} ms ({t_fwd['ReLU'] / t_fwd[name]:5.0%})"
                  f"   fwd+bwd {t_fb[name] * 1e3:7.3f} ms ({t_fb['ReLU'] / t_fb[name]:5.0%})")  # fmt: skip


def main(argv: list[str]) -> int:
    global DEVICE
    if "--cpu" in argv:  # rehearsal of this script without a GPU (needs TRITON_INTERPRET=1)
        DEVICE = "cpu"
    elif not torch.cuda.is_available():
        print("no CUDA device: nothing to check (use --cpu with TRITON_INTERPRET=1 to rehearse the script)")
        return 2
    for dtype_name in DTYPES:
        for param_name in PARAM_SETS:
            for backend in ("triton", "auto", "eager"):
                check(f"parity {backend} {dtype_name} {param_name}", lambda: parity(backend, dtype_name, param_name))
    check("layouts (channels_last, transposed, sliced, expanded)", layouts)
    check("memory (one saved tensor) and auto dispatch", memory_and_dispatch)
    check("torch.compile on CUDA (fixed and learnable)", compiled_models)
    speed(16_000_000 if DEVICE == "cuda" else 100_000)
    print(f"\n{len(failures)} failure(s)" + (": " + ", ".join(failures) if failures else ""))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
