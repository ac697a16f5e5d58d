"""SPOCU for PyTorch: :func:`spocu` (functional) and :class:`SPOCU` (module).

Example:
    >>> import torch
    >>> import spocu.torch
    >>> layer = torch.nn.Sequential(torch.nn.Linear(4, 8), spocu.torch.SPOCU(), torch.nn.Linear(8, 1))
    >>> layer(torch.zeros(2, 4)).shape
    torch.Size([2, 1])
"""

from spocu.torch._dispatch import build_kernels, kernel_path, kernel_status
from spocu.torch.functional import spocu
from spocu.torch.modules import SPOCU
from spocu.torch.replace import replace_activations  # noqa: F401  (public: spocu.torch.replace_activations)

__all__ = ["spocu", "SPOCU", "build_kernels", "kernel_path", "kernel_status"]
