"""Which kernels compute SPOCU in a run: decided before its first step, never changed, recorded.

The fused kernels and the plain PyTorch ops give SPOCU values that differ in the last bits, so a
run that switched from one to the other mid-run (the plain ops serving while the C++ kernels were
still being built, then the kernels) would give numbers that depend on timing, not on the seed
alone. :func:`fix_kernel_path` decides the path before a run trains, waiting for a build in
progress rather than training on the plain ops meanwhile, and returns its name for the run file
(``kernel_path``): ``"cpp..."`` (the fused CPU kernels), ``"triton"``, ``"inductor"`` or
``"eager"`` (the plain ops). :func:`check_kernel_path` confirms after the run that it did not change.

It asks :func:`spocu.torch.kernel_path` where the installed spocu has it (kernels built at install,
the path decided once per process); otherwise it waits for the background build itself
(:func:`spocu.torch.build_kernels`, the kernels and the C++ autograd node) and reads
:func:`spocu.torch.kernel_status`.

A run whose network holds no SPOCU (a built-in model with another activation) records None.

Example:
    >>> fix_kernel_path("cpu", backend="eager")
    'eager'
"""

from __future__ import annotations

from typing import Any

__all__ = ["fix_kernel_path", "check_kernel_path", "uses_spocu"]


def uses_spocu(activation: Any, model: Any) -> bool:
    """Whether the run's network may compute SPOCU: the activation is SPOCU or the user's, or the model is a factory."""
    return (
        activation.name == "spocu" or getattr(activation, "is_user", False) or bool(getattr(model, "is_factory", False))
    )


def fix_kernel_path(device: Any, backend: str | None = None) -> str:
    """The kernels that compute SPOCU on ``device`` (float32) in this process from now on; see the module docstring."""
    import torch

    from spocu.torch import _dispatch

    device = torch.device(device)
    requested = _dispatch.requested_backend(backend)
    public = getattr(__import__("spocu.torch", fromlist=["kernel_path"]), "kernel_path", None)
    if public is not None:  # the path is decided once per process by the library itself
        return public(torch.float32, device, backend=backend)
    if device.type == "cpu" and requested in ("auto", "cpp"):
        from spocu.torch import build_kernels

        state = build_kernels()["state"]  # waits for the build in progress (or its failure): no mid-run switch
        return "cpp" if state == "ready" else "eager"
    probe = torch.empty(0, dtype=torch.float32, device=device)
    return _dispatch.resolve_backend(probe, backend)


def check_kernel_path(path: str | None, device: Any, backend: str | None = None) -> None:
    """Raise RuntimeError if SPOCU's kernels on ``device`` are no longer ``path`` (None: nothing to check)."""
    if path is None:
        return
    now = fix_kernel_path(device, backend)
    if now != path:
        raise RuntimeError(
            f"SPOCU's kernel path changed during the run ({path} -> {now}); its numbers would depend on timing"
        )
