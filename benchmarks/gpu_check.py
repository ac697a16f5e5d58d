"""One short GPU check of SPOCU's CUDA paths: correctness, then speed, learnable path, first-call latency.

Run from the repository root on a machine with a CUDA GPU and ``triton`` (spocu installed,
or ``PYTHONPATH=src``)::

    python benchmarks/gpu_check.py --json gpu.json     # under 3 minutes on a GPU
    python benchmarks/gpu_check.py --cpu                # rehearse the script on CPU (Triton interpreter, tiny sizes)

Sections, each in its own try/except (a failing section prints its error and the rest run):

1. parity: the Triton path, the default path and plain ops on the device against the
   float64 reference (:mod:`spocu.testing`) in float32, bfloat16, float16 and float64 for
   three parameter sets; non-dense layouts; one saved tensor per call; ``torch.compile``
   of a small CNN with fixed and learnable SPOCU.
2. throughput: forward and forward+backward at 1e6 and 1.6e7 elements, float32 and
   bfloat16, interleaved medians (synchronised) of SPOCU (Triton, default, plain ops),
   ReLU and GELU; throughput relative to ReLU (goal >= 90%).
3. learnable: per-channel learnable SPOCU on an N x C x H x W tensor (fwd+bwd, with the
   parameter gradients) against fixed SPOCU and ReLU, and one seed-CNN training step.
4. latency: the first call in fresh processes with cold and warm compiler caches.

Exit status 1 when a parity check or a section failed; the JSON (``--json PATH``) holds
every number and every failure.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback

CPU = "--cpu" in sys.argv[1:]
if CPU:  # the interpreter must be chosen before triton is imported
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from spocu._atomic import atomic_write_text  # noqa: E402
from spocu.bench import cnn, latency  # noqa: E402
from spocu.bench.timing import interleaved_medians, saved_bytes_ratio  # noqa: E402
from spocu.core import reference_spocu, reference_spocu_grad  # noqa: E402
from spocu.testing import PARAM_SETS, assert_matches_reference, wide_inputs  # noqa: E402
from spocu.torch import SPOCU, _dispatch, spocu  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
DEVICE = "cpu" if CPU else "cuda"
results: dict = {"device": None, "parity": {}, "throughput": [], "learnable": [], "latency": [], "failures": []}


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def section(name: str, fn) -> None:
    """Run one section; print and record its error instead of stopping the script."""
    start = time.perf_counter()
    print(f"\n== {name}", flush=True)
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 -- report every failure, then go on
        results["failures"].append(f"{name}: {type(exc).__name__}: {exc}")
        print(f"FAIL {name}\n{traceback.format_exc()}", flush=True)
    print(f"   ({time.perf_counter() - start:.1f} s)", flush=True)


def check(name: str, fn) -> None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001
        results["parity"][name] = f"FAIL {type(exc).__name__}: {exc}"
        results["failures"].append(name)
        print(f"FAIL {name}: {type(exc).__name__}: {str(exc)[:300]}", flush=True)
    else:
        results["parity"][name] = "ok"


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


def run_parity() -> None:
    backends = ("triton", "auto", "eager")
    for dtype_name in DTYPES:
        for param_name in PARAM_SETS:
            for backend in backends:
                check(f"{backend} {dtype_name} {param_name}", lambda: parity(backend, dtype_name, param_name))
    check("layouts (channels_last, transposed, sliced, expanded)", layouts)
    check("memory (one saved tensor) and auto dispatch", memory_and_dispatch)
    check("torch.compile (fixed and learnable)", compiled_models)
    bad = [k for k, v in results["parity"].items() if v != "ok"]
    print(f"parity: {len(results['parity']) - len(bad)} of {len(results['parity'])} checks ok"
          + (f"; failed: {', '.join(bad)}" if bad else ""))  # fmt: skip


def run_throughput() -> None:
    sizes = (1_000, 10_000) if CPU else (10_000, 1_000_000, 16_000_000)  # 1e4: the per-call host overhead alone
    rounds, inner = (3, 1) if CPU else (15, 5)
    fns = {
        "SPOCU (triton)": lambda t: spocu(t, backend="triton"),
        "SPOCU (default)": lambda t: spocu(t),
        "SPOCU (plain ops)": lambda t: spocu(t, backend="eager"),
        "ReLU": torch.relu,
        "GELU": torch.nn.functional.gelu,
    }
    print("median ms per call; throughput = ReLU's time / this time (goal for SPOCU: >= 90%)")
    for dtype in (torch.float32, torch.bfloat16):
        for n in sizes:
            x0 = (torch.randn(n, device=DEVICE) * 3).to(dtype)
            g = torch.randn(n, device=DEVICE).to(dtype)
            x = x0.clone().requires_grad_(True)

            def fwd(fn):
                def call():
                    with torch.no_grad():
                        fn(x0)

                return call

            def fb(fn):
                def call():
                    fn(x).backward(g)
                    x.grad = None

                return call

            t_fwd = interleaved_medians(
                {k: fwd(f) for k, f in fns.items()}, rounds=rounds, warmup=3, inner=inner, sync=sync
            )
            t_fb = interleaved_medians(
                {k: fb(f) for k, f in fns.items()}, rounds=rounds, warmup=3, inner=inner, sync=sync
            )
            for name in fns:
                row = {"dtype": str(dtype).replace("torch.", ""), "numel": n, "name": name,
                       "fwd_ms": t_fwd[name] * 1e3, "fwd_throughput_vs_relu": t_fwd["ReLU"] / t_fwd[name],
                       "fwd_bwd_ms": t_fb[name] * 1e3, "fwd_bwd_throughput_vs_relu": t_fb["ReLU"] / t_fb[name]}  # fmt: skip
                results["throughput"].append(row)
                print(f"  {row['dtype']:9s} {n:9.3g} {name:18s} fwd {row['fwd_ms']:8.4f} ms ({row['fwd_throughput_vs_relu']:5.0%})"
                      f"   fwd+bwd {row['fwd_bwd_ms']:8.4f} ms ({row['fwd_bwd_throughput_vs_relu']:5.0%})", flush=True)  # fmt: skip


def run_learnable() -> None:
    shape = (4, 8, 16, 16) if CPU else (64, 256, 32, 32)  # 1.6e7 elements on the GPU
    rounds = 3 if CPU else 15
    channels = shape[1]
    x = (torch.randn(shape, device=DEVICE) * 3).requires_grad_(True)
    g = torch.randn(shape, device=DEVICE)
    modules = {
        "ReLU": torch.nn.ReLU(),
        "SPOCU fixed": SPOCU().to(DEVICE),
        "SPOCU learnable, per channel": SPOCU(learnable=True, num_parameters=channels).to(DEVICE),
    }

    def fb(module):
        def call():
            module(x).backward(g)
            x.grad = None
            for p in module.parameters():
                p.grad = None

        return call

    times = interleaved_medians({k: fb(m) for k, m in modules.items()}, rounds=rounds, warmup=3, inner=1 if CPU else 5,
                                sync=sync)  # fmt: skip
    print(f"fwd+bwd on {tuple(shape)} float32 (median ms; throughput vs ReLU)")
    for name, t in times.items():
        results["learnable"].append({"what": f"elementwise {tuple(shape)}", "name": name, "ms": t * 1e3,
                                     "throughput_vs_relu": times["ReLU"] / t})  # fmt: skip
        print(f"  {name:30s} {t * 1e3:8.4f} ms ({times['ReLU'] / t:5.0%})", flush=True)
    # one training step of the seed CNN (batch 100, eager), the experiments' network
    gen = torch.Generator().manual_seed(0)
    xb = torch.rand(100, 3, 32, 32, generator=gen).to(DEVICE)
    yb = torch.randint(0, 10, (100,), generator=gen).to(DEVICE)
    makers = {"ReLU": lambda ch: torch.nn.ReLU(), "SPOCU fixed": lambda ch: SPOCU(),
              "SPOCU learnable, per channel": lambda ch: SPOCU(learnable=True, num_parameters=ch)}  # fmt: skip
    steps = {k: cnn.stepper(m, False, xb, yb, 0, torch.device(DEVICE)) for k, m in makers.items()}
    times = interleaved_medians(steps, rounds=3 if CPU else 20, warmup=3, sync=sync)
    print("seed CNN training step, batch 100, eager (median ms; ratio to ReLU)")
    for name, t in times.items():
        results["learnable"].append(
            {"what": "seed CNN step", "name": name, "ms": t * 1e3, "ratio_to_relu": t / times["ReLU"]}
        )
        print(f"  {name:30s} {t * 1e3:8.3f} ms ({t / times['ReLU']:.3f}x)", flush=True)


def run_latency() -> None:
    with tempfile.TemporaryDirectory(prefix="spocu-gpu-cache-") as cache:
        for state in latency.STATES:
            result = latency.measure_first_call(DEVICE, cache, timeout=120)
            results["latency"].append({"cache": state, **result})
            fused = (f"{result.get('fused_first_call_s', float('nan')):.3f} s" if "fused_error" not in result
                     else f"failed ({result['fused_error']})")  # fmt: skip
            print(f"  {state}: import {result['import_s']:.2f} s, first call {result['first_call_s']:.3f} s, "
                  f"second {result['second_call_s'] * 1e3:.2f} ms, first {result['fused_backend']} call {fused}", flush=True)  # fmt: skip


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu", action="store_true", help="rehearse on CPU with the Triton interpreter, tiny sizes")
    parser.add_argument("--json", metavar="PATH", help="write every number and failure to this JSON file")
    parser.add_argument("--sections", default="parity,throughput,learnable,latency", help="comma-separated subset")
    args = parser.parse_args(argv)
    if not CPU and not torch.cuda.is_available():
        print("no CUDA device: nothing to check (use --cpu to rehearse the script with the Triton interpreter)")
        return 2
    start = time.perf_counter()
    results["device"] = (
        torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu (Triton interpreter: timings are not speeds)"
    )
    results["torch"] = torch.__version__
    print(f"spocu gpu_check on {results['device']}, torch {torch.__version__}")
    chosen = args.sections.split(",")
    for name, fn in (("parity", run_parity), ("throughput", run_throughput), ("learnable", run_learnable),
                     ("latency", run_latency)):  # fmt: skip
        if name in chosen:
            section(name, fn)
    results["total_s"] = time.perf_counter() - start
    print(f"\n{len(results['failures'])} failure(s) in {results['total_s']:.0f} s"
          + (": " + "; ".join(results["failures"]) if results["failures"] else ""))  # fmt: skip
    if args.json:
        atomic_write_text(args.json, json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
