"""The one place that decides which kernel computes SPOCU for a given call.

Paths (``SPOCU_TORCH_BACKEND`` environment variable or the ``backend=`` argument):

* ``"eager"`` -- plain PyTorch ops in a save-the-input ``autograd.Function``.
* ``"auto"`` (default) -- the best available path for the tensor.
"""

from __future__ import annotations

import os

import torch

__all__ = ["BACKENDS", "ENV_VAR", "resolve_backend"]

ENV_VAR = "SPOCU_TORCH_BACKEND"
BACKENDS = ("auto", "eager")


def resolve_backend(x: torch.Tensor, backend: str | None = None) -> str:
    """Return the concrete path ("eager", ...) for input ``x``."""
    requested = backend if backend is not None else os.environ.get(ENV_VAR, "auto")
    requested = requested.strip().lower()
    if requested not in BACKENDS:
        source = "backend=" if backend is not None else f"${ENV_VAR}="
        raise ValueError(f"unknown SPOCU torch backend {source}{requested!r}; choose one of {', '.join(BACKENDS)}")
    return "eager"
