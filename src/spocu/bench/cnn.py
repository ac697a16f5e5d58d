"""The cnn section: one training step of the seed's CIFAR-10 CNN (batch 100, Adam).

The network is :func:`spocu.experiments.models.torch_models.build_model`'s ``seed-cnn``
(conv32-act-pool-conv64-act-pool-dense10, 42,442 parameters); :func:`seed_cnn` swaps its
activations for the variant timed (learnable SPOCU gets one parameter set per channel).
ms per step (median) with SPOCU, ReLU (and in the full run GELU, LeakyReLU, plain ops,
learnable per channel), PyTorch eager and ``torch.compile``; the ratio to ReLU is the median
of the per-round ratios with a 95% bootstrap interval (:func:`spocu.bench.timing.paired_ratio`).

Two costs in this step belong to the network, not to the activation's own work, and the
table shows both so that they are not mistaken for SPOCU's: ReLU's output is half exact
zeros, on which the CPU max-pool that follows runs faster than on any dense output; and
ReLU keeps its output for backward, which max-pool keeps anyway, while SPOCU, GELU and
LeakyReLU keep their input, one more live buffer, which glibc's allocator returns to the
system and takes back every step (minor page faults per step, the last column, where the
platform counts them). LeakyReLU(0.01) costs what ReLU costs per element but has a dense
output and keeps its input: SPOCU / LeakyReLU is the part that is SPOCU's.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from spocu.bench.config import BenchConfig
from spocu.bench.timing import device_sync, interleaved_samples, paired_ratio

__all__ = ["seed_cnn", "variants", "run", "NAMES"]

#: table order of the activations
NAMES = ("ReLU", "LeakyReLU", "GELU", "SPOCU (default path)", "SPOCU (plain ops)", "SPOCU learnable, per channel")


def seed_cnn(activation: Callable[[int], Any]):
    """The seed CNN of :mod:`spocu.experiments.models.torch_models` with ``activation(channels)`` after each convolution.

    >>> import torch
    >>> net = seed_cnn(lambda channels: torch.nn.Tanh())
    >>> [type(m).__name__ for m in net][:3], sum(p.numel() for p in net.parameters())
    (['Conv2d', 'Tanh', 'MaxPool2d'], 42442)
    """
    from torch import nn

    from spocu.experiments.activations import parse_activation
    from spocu.experiments.config import ModelSpec
    from spocu.experiments.models.torch_models import build_model

    net = build_model(ModelSpec("seed-cnn"), (3, 32, 32), 10, parse_activation("relu"))
    for i, module in enumerate(net):
        if isinstance(module, nn.ReLU):
            net[i] = activation(net[i - 1].out_channels)
    return net


def forced_backend_module(backend: str):
    """An ``nn.Module`` applying ``spocu(t, backend=backend)``."""
    import torch

    from spocu.torch import spocu

    class Forced(torch.nn.Module):
        def forward(self, t):
            return spocu(t, backend=backend)

    return Forced()


def variants(quick: bool) -> dict[tuple[str, str], tuple[Callable[[int], Any], bool]]:
    """(mode, name) -> (activation factory, compiled?)."""
    from torch import nn

    from spocu.torch import SPOCU

    out = {
        ("eager", "ReLU"): (lambda ch: nn.ReLU(), False),
        ("eager", "SPOCU (default path)"): (lambda ch: SPOCU(), False),
        ("compiled", "ReLU"): (lambda ch: nn.ReLU(), True),
        ("compiled", "SPOCU (default path)"): (lambda ch: SPOCU(), True),
    }
    if not quick:
        # GELU: a smooth activation whose output, unlike ReLU's, has no exact zeros (pooling and
        # convolution backward run faster on ReLU's sparse output: that part is not SPOCU's cost)
        out[("eager", "GELU")] = (lambda ch: nn.GELU(), False)
        out[("eager", "LeakyReLU")] = (lambda ch: nn.LeakyReLU(0.01), False)
        out[("eager", "SPOCU (plain ops)")] = (lambda ch: forced_backend_module("eager"), False)
        out[("eager", "SPOCU learnable, per channel")] = (lambda ch: SPOCU(learnable=True, num_parameters=ch), False)
        out[("compiled", "GELU")] = (lambda ch: nn.GELU(), True)
        out[("compiled", "SPOCU learnable, per channel")] = (lambda ch: SPOCU(learnable=True, num_parameters=ch), True)
    return out


def stepper(activation, compiled: bool, x, y, seed: int, device):
    """One Adam training step of a fresh seed CNN (same initial weights for every activation)."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = seed_cnn(activation).to(device)
    opt = torch.optim.Adam(model.parameters())
    forward = torch.compile(model) if compiled else model

    def step():
        loss = nn.functional.cross_entropy(forward(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def _minor_faults() -> int | None:
    """Minor page faults of this process so far (None where the platform does not count them)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def counting_faults(step: Callable[[], None], counts: list[int]) -> Callable[[], None]:
    """``step`` that also appends the minor page faults each call took to ``counts``."""

    def counted() -> None:
        before = _minor_faults()
        step()
        if before is not None:
            counts.append(_minor_faults() - before)

    return counted


def run(config: BenchConfig, notes: list[str]) -> list[dict[str, Any]]:
    """Time one training step of the seed CNN per variant (interleaved rounds after warm-up);
    one row per variant: ms per step, the ratio to ReLU with its 95% interval, page faults per step.
    """
    import torch

    device = torch.device(config.device)
    gen = torch.Generator().manual_seed(config.seed)
    x = torch.rand(100, 3, 32, 32, generator=gen).to(device)
    y = torch.randint(0, 10, (100,), generator=gen).to(device)
    chosen = variants(config.quick)
    faults: dict[str, list[int]] = {f"{mode}|{name}": [] for mode, name in chosen}
    steps = {key: counting_faults(stepper(act, compiled, x, y, config.seed, device), faults[key])
             for key, (act, compiled) in zip(faults, chosen.values())}  # fmt: skip
    samples = interleaved_samples(
        steps, rounds=config.step_rounds, warmup=3, sync=device_sync(device), seed=config.seed
    )
    rows = []
    for mode, name in sorted(chosen, key=lambda v: (v[0] != "eager", NAMES.index(v[1]))):
        key = f"{mode}|{name}"
        ratio, low, high = paired_ratio(samples, key, f"{mode}|ReLU", seed=config.seed)
        timed = faults[key][-config.step_rounds :]  # the timed rounds, after warm-up
        rows.append({"section": "cnn", "framework": "PyTorch", "mode": mode, "name": name, "ratio": ratio,
                     "step_ms": statistics.median(samples[key]) * 1e3, "ratio_ci95": [low, high],
                     "page_faults_per_step": statistics.median(timed) if timed else None})  # fmt: skip
    return rows
