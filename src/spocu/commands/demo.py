"""``spocu demo``: a tiny network trained with SPOCU and with ReLU, to see it learn."""

from __future__ import annotations

import argparse

from spocu.errors import CommandError

HELP = "train a tiny network with SPOCU and ReLU on a toy task and print the losses"

#: the toy task has converged long before this; more steps only spend time
MAX_STEPS = 100_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``spocu demo`` options: ``--steps`` and ``--seed``."""
    parser.add_argument("--steps", type=int, default=300, help=f"optimizer steps (default 300, at most {MAX_STEPS})")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0; 0 <= seed < 2**63)")


def run(args: argparse.Namespace) -> int:
    """``spocu demo``: fit sin(2x)·cos(y) with a small MLP, SPOCU then ReLU (same seed and
    steps), and print each one's mean squared error at the start and the end; returns the exit status.
    """
    if not 1 <= args.steps <= MAX_STEPS:
        raise CommandError(f"--steps must be in [1, {MAX_STEPS}], got {args.steps}")
    if not 0 <= args.seed < 2**63:  # torch.manual_seed takes a 64-bit integer
        raise CommandError(f"--seed must be in [0, 2**63), got {args.seed}")

    import torch

    from spocu.torch import SPOCU

    generator = torch.Generator().manual_seed(args.seed)
    x = torch.rand(512, 2, generator=generator) * 4 - 2
    y = torch.sin(x[:, :1] * 2) * torch.cos(x[:, 1:])
    for name, act in (("spocu", SPOCU()), ("relu", torch.nn.ReLU())):
        torch.manual_seed(args.seed)
        net = torch.nn.Sequential(torch.nn.Linear(2, 32), act, torch.nn.Linear(32, 1))
        opt = torch.optim.Adam(net.parameters(), lr=1e-2)
        first = None
        for _ in range(args.steps):
            loss = torch.nn.functional.mse_loss(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            first = loss.item() if first is None else first
        print(f"{name:6s} mse: start {first:.4f} -> end {loss.item():.4f}")
    return 0
