"""Per-call cost of small activations: forward + backward of a 1,000-element tensor.

At this size a call is all overhead (autograd, Python, argument handling), so the useful
baseline is not only ReLU but the cheapest activation *defined in Python*: an
``autograd.Function`` whose forward is ``torch.relu`` and whose backward is
``threshold_backward``. Its ratio to ReLU is the floor for any Python-defined op, SPOCU's
included. Every candidate runs once per round in the same process, rounds interleaved;
medians of per-round medians.

    python benchmarks/small_calls.py                 # SPOCU's default path
    python benchmarks/small_calls.py --node          # with the optional C++ autograd node
    python benchmarks/small_calls.py --numel 10000 --rounds 9
    python benchmarks/small_calls.py --clock thread  # this thread's CPU time: steadier on a busy machine
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import spocu.torch


class _PythonReLU(torch.autograd.Function):
    """ReLU as a Python-defined op: the floor of every activation written as an autograd.Function."""

    @staticmethod
    def forward(x):
        return torch.relu(x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, y, 0)


# Function.apply without its Python wrapper (as spocu's own fast path calls its Functions)
_python_relu = super(torch.autograd.Function, _PythonReLU).apply


def _per_call_us(fn, x: torch.Tensor, grad: torch.Tensor, calls: int, clock=time.perf_counter) -> float:
    times = []
    for _ in range(calls):
        start = clock()
        fn(x).backward(grad)
        times.append(clock() - start)
    return statistics.median(times[calls // 5 :]) * 1e6  # the first fifth is warm-up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--numel", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=600, help="calls per candidate per round")
    parser.add_argument("--node", action="store_true", help="build and use the optional C++ autograd node")
    parser.add_argument(
        "--clock",
        choices=("wall", "thread"),
        default="wall",
        help="wall: time.perf_counter; thread: time.thread_time, this thread's CPU time, which time spent "
        "waiting for a core on a busy machine does not inflate (small calls run on the calling thread)",
    )
    args = parser.parse_args()
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    if args.node:
        spocu.torch.build_kernels()
    candidates = {
        "ReLU": torch.relu,
        "GELU": torch.nn.functional.gelu,
        "Python Function (ReLU)": _python_relu,
        "SPOCU": spocu.torch.spocu,
    }
    status = spocu.torch.kernel_status()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.numel} elements, "
          f"kernels {spocu.torch.kernel_path(torch.float32)}, C++ node {status['node_state']}, {args.clock} clock")  # fmt: skip
    for dtype in (torch.bfloat16, torch.float32):
        x = torch.randn(args.numel, dtype=dtype, requires_grad=True)
        grad = torch.ones_like(x)
        rounds: dict[str, list[float]] = {name: [] for name in candidates}
        for _ in range(args.rounds):
            for name, fn in candidates.items():
                rounds[name].append(_per_call_us(fn, x, grad, args.calls, clock))
        relu = statistics.median(rounds["ReLU"])
        for name, values in rounds.items():
            us = statistics.median(values)
            print(f"{str(dtype).removeprefix('torch.'):9s} {name:24s} {us:8.1f} us  {us / relu:5.2f}x ReLU")


if __name__ == "__main__":
    main()
