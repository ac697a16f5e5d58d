"""TensorFlow and Triton in one process.

Both bundle LLVM. Importing Triton *after* TensorFlow makes LLVM abort the whole
process ("inconsistency in registered CommandLine options"); the other order
works. Triton is imported by ``torch._dynamo`` (so by ``torch.compile`` and the
fused kernels of :mod:`spocu.torch`) whenever it is installed. This module
knows about the clash without importing either framework.
"""

from __future__ import annotations

import importlib.util
import sys

__all__ = ["triton_conflict", "preload_triton_before_tensorflow"]


def triton_conflict() -> str | None:
    """Why importing Triton now would abort the process, else None."""
    if "triton" in sys.modules or "tensorflow" not in sys.modules:
        return None
    if importlib.util.find_spec("triton") is None:
        return None
    return (
        "TensorFlow is loaded in this process and Triton is installed but not yet imported: importing Triton "
        "after TensorFlow aborts the process (both bundle LLVM); import torch's compiler stack first "
        "(`import triton` before `import tensorflow`) to use the fused kernels next to TensorFlow"
    )


def preload_triton_before_tensorflow() -> None:
    """Import Triton (if installed) while TensorFlow is not loaded yet, so both can be used later."""
    if "tensorflow" not in sys.modules and importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401
