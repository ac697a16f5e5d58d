"""SPOCU's CPU kernels in C++, compiled when the package is installed and loaded with ctypes.

:file:`_cpp_kernels.cpp` (the math of :mod:`spocu.torch._eager` and of the
learnable formulas, one pass forward, one pass backward, OpenMP threads) needs no
PyTorch headers. ``setup.py`` compiles it into the extension module
``spocu.torch._kernels`` (an optional setuptools ``Extension``: without a compiler
the install succeeds and the plain ops serve) and records the file's SHA-256 next to
it. It holds one copy of the kernels per x86-64 instruction set (baseline, AVX2,
AVX-512, AVX-512 with BF16); this module binds the best one the CPU runs.

Why ctypes and not a Python extension's own functions: the kernels take raw storage
pointers and sizes, nothing Python; a ctypes call costs about 2 us, needs no Python
C API in the kernels, and keeps one stable-ABI (abi3) library for every Python.

Loading happens once per process, synchronously, on the first call that could use
the kernels, before its result (a few milliseconds: hash check, ``dlopen``, a
self-check against the plain ops). The outcome never changes afterwards: either the
kernels serve every eligible call of the process, or the plain ops do (after one
:class:`RuntimeWarning` from :mod:`spocu.torch._dispatch` saying why). A library whose
bytes do not match the recorded hash (truncated, overwritten) is never mapped, so it
cannot crash the process.

``$SPOCU_CPU_ISA`` (``base``, ``avx2``, ``avx512`` or ``avx512bf16``) caps the
instruction set, e.g. to get the same bits on machines with different CPUs.

Example:
    >>> status = kernel_status()
    >>> status["state"] in ("idle", "ready", "failed")
    True
"""

from __future__ import annotations

import ctypes
import hashlib
import importlib.util
import os
import threading
from pathlib import Path
from typing import Any

import torch

from spocu.core import SHIFTED_COEFFICIENT_POLYNOMIALS
from spocu.torch import _eager
from spocu.torch._compat import outside_modes
from spocu.torch._compat import transforms_active as _compat_transforms_active
from spocu.torch._constants import KernelConstants
from spocu.torch._layout import dense_like, has_raw_storage

__all__ = [
    "DTYPES",
    "ISA_ENV",
    "ISAS",
    "load",
    "verify",
    "backward",
    "failed",
    "forward",
    "kernel_status",
    "learnable_backward",
    "learnable_forward",
    "param_block",
    "ready",
    "run_learnable_backward",
    "run_learnable_forward",
    "unavailable_reason",
    "unsupported_input",
]

MODULE = "spocu.torch._kernels"
#: dtypes the library computes (float16/bfloat16 in float32, as torch's opmath)
DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.bfloat16: "bfloat16", torch.float16: "float16"}
#: the library's copies of the kernels, best last
ISAS = ("base", "avx2", "avx512", "avx512bf16")
ISA_ENV = "SPOCU_CPU_ISA"
HASH_SUFFIX = ".sha256"
_ABI_VERSION = 3

_lock = threading.Lock()
_lib: Any = None  # the loaded library's function table once ready (read without the lock: one assignment)
_state = "idle"  # idle -> ready | failed, once per process
_reason: str | None = None
_path: Path | None = None
_isa: str | None = None


# ---------------------------------------------------------------- finding, verifying, loading


def library_path() -> Path | None:
    """The installed kernel library, or None if the package was installed without it."""
    try:
        spec = importlib.util.find_spec(MODULE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not os.path.isfile(spec.origin):
        return None
    return Path(spec.origin)


def verify(path: Path) -> None:
    """Raise :class:`RuntimeError` unless ``path``'s bytes have the SHA-256 recorded when it was built.

    Read before ``dlopen``: a truncated library mapped into the process dies with a bus
    error on first touch of a missing page, which no exception handler can catch.
    """
    record = Path(str(path) + HASH_SUFFIX)
    try:
        expected = record.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise RuntimeError(f"{path} has no readable recorded hash ({record.name}: {type(exc).__name__})") from None
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != expected:
        raise RuntimeError(
            f"{path} does not match the hash recorded when it was built (damaged or replaced; "
            "reinstall spocu to rebuild it)"
        )


def _chosen_isa(lib: Any) -> str:
    """The best copy of the kernels this CPU runs, capped by ``$SPOCU_CPU_ISA``."""
    cap = os.environ.get(ISA_ENV, "").strip().lower() or ISAS[-1]
    if cap not in ISAS:
        raise ValueError(f"${ISA_ENV}={cap!r} is not one of {', '.join(ISAS)}")
    lib.spocu_isa_supported.argtypes = [ctypes.c_char_p]
    lib.spocu_isa_supported.restype = ctypes.c_int
    usable = [isa for isa in ISAS[: ISAS.index(cap) + 1] if lib.spocu_isa_supported(isa.encode())]
    return usable[-1]


_SIGNATURES = {
    "forward": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int],
    "backward": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int],
    "learnable_forward": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                          ctypes.c_void_p, ctypes.c_double, ctypes.c_void_p, ctypes.c_int],
    "learnable_backward": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                           ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_double, ctypes.c_double,
                           ctypes.c_void_p, ctypes.c_int],
}  # fmt: skip


def _load(path: Path) -> dict[Any, Any]:
    """The library's kernels by (kind, dtype), after verifying the file and checking them against the plain ops."""
    verify(path)
    lib = ctypes.CDLL(str(path))
    if lib.spocu_abi_version() != _ABI_VERSION:
        raise RuntimeError(f"{path} is from another version of spocu")
    isa = _chosen_isa(lib)
    table: dict[Any, Any] = {"handle": lib, "isa": isa}
    for kind, argtypes in _SIGNATURES.items():
        for dtype, name in DTYPES.items():
            fn = getattr(lib, f"spocu_{kind}_{name}_{isa}")
            fn.argtypes = argtypes
            fn.restype = None
            table[kind, dtype] = fn
    _self_check(table)
    return table


def self_check_inputs(points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, grad) in float64 for the load-time self-checks: both pieces, the signed zeros, infinities."""
    cpu = {"dtype": torch.float64, "device": "cpu"}  # explicit: a `with torch.device(...)` may be active
    x = torch.linspace(-12.0, 12.0, points, **cpu)
    x = torch.cat([x, torch.tensor([0.0, -0.0, float("inf"), -float("inf")], **cpu)])
    return x, torch.linspace(-2.0, 3.0, x.numel(), **cpu)


def _self_check(table: dict) -> None:
    """A miscompiled library must not give silent wrong results: compare with the plain ops once."""
    from spocu.core import SPOCUParams
    from spocu.torch._constants import kernel_constants

    x, g = self_check_inputs(97)
    for params in (SPOCUParams(), SPOCUParams(c=1.5)):
        for dtype, tol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
            k = kernel_constants(params, dtype)
            xd, gd = x.to(dtype), g.to(dtype)
            pairs = [
                (_run_forward(table, xd, k), _eager.forward(xd, k)),
                (_run_backward(table, gd, xd, k), _eager.backward(gd, xd, k)),
            ]
            for got, want in pairs:
                if not torch.allclose(got, want, rtol=tol, atol=tol, equal_nan=True):
                    worst = (got - want).abs().nan_to_num(0.0).max().item()
                    raise RuntimeError(f"the kernels disagree with the plain ops (max error {worst:.3g})")


def failure_reason(exc: BaseException) -> str:
    """One line saying why loading failed (what :func:`kernel_status` reports)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"


def _start() -> None:
    """Load the library once per process (idempotent; the outcome is final)."""
    global _lib, _state, _reason, _path, _isa
    with _lock:
        if _state != "idle":
            return
        path = library_path()
        _path = path
        if path is None:
            _state, _reason = (
                "failed",
                (
                    f"{MODULE} was not built when spocu was installed (no C++ compiler then?); "
                    "reinstall with a compiler (g++ or clang++) to get the fused CPU kernels"
                ),
            )
            return
        try:
            with outside_modes():  # (a first call under FakeTensorMode must not make the self-check's tensors fake)
                table = _load(path)
        except Exception as exc:  # noqa: BLE001 -- any failure means "plain ops", said once by the dispatcher
            _state, _reason = "failed", failure_reason(exc)
            return
        _isa = table["isa"]
        _lib = table
        _state = "ready"


# ---------------------------------------------------------------- public state


transforms_active = _compat_transforms_active


def ready() -> bool:
    """True when the kernels serve calls in this process; the first call loads them (once)."""
    if _lib is not None:
        return True
    if _state == "idle":
        _start()
    return _lib is not None


def failed() -> bool:
    """True once the library cannot be had in this process (the dispatcher then warns once)."""
    if _state == "idle":
        _start()
    return _state == "failed"


def isa() -> str | None:
    """The instruction set of the kernel copy in use (``"avx2"``, ...), None when none is loaded."""
    return _isa if ready() else None


def unsupported_input(x: torch.Tensor) -> str | None:
    """Why the kernels can never compute ``x`` (device, dtype), else None."""
    if x.device.type != "cpu":
        return f"the C++ kernels run on CPU tensors, got device {x.device.type!r}"
    if x.dtype not in DTYPES:
        return f"the C++ kernels compute {', '.join(str(d) for d in DTYPES)}, got {x.dtype}"
    return None


def unavailable_reason(x: torch.Tensor | None = None) -> str | None:
    """None if the kernels can compute ``x``, else why not."""
    if x is not None and unsupported_input(x) is not None:
        return unsupported_input(x)
    return None if ready() else _reason


def kernel_status() -> dict[str, Any]:
    """Where the fused CPU kernels stand in this process.

    Returns a dict with ``state`` (``"idle"``: not asked for yet; ``"ready"``: every
    eligible call uses them; ``"failed"``: plain ops for the whole process),
    ``library`` (the installed file), ``isa`` (the instruction set of the copy in
    use) and ``reason`` (why not ready).

    Examples:
        >>> sorted(kernel_status())
        ['isa', 'library', 'reason', 'state']
    """
    return {
        "state": _state,
        "library": str(_path) if _path is not None else None,
        "isa": _isa,
        "reason": _reason if _state != "ready" else None,
    }


def load() -> dict[str, Any]:
    """Load the kernels now if this process has not yet (milliseconds); returns :func:`kernel_status`."""
    _start()
    return kernel_status()


# ---------------------------------------------------------------- the kernels


def _threads() -> int:
    return torch.get_num_threads()


def _table_buffer(values: tuple[float, ...]) -> Any:
    return (ctypes.c_double * len(values))(*values)


#: id(k) -> (k, address of k's forward table, address of its backward table, the two tables as
#: float64 tensors); holding k keeps its id unique. The C++ autograd node keeps the tensors it reads.
_TABLES: dict[int, tuple[KernelConstants, int, int, torch.Tensor, torch.Tensor]] = {}


def _tables(k: KernelConstants) -> tuple[KernelConstants, int, int, torch.Tensor, torch.Tensor]:
    entry = _TABLES.get(id(k))
    if entry is None or entry[0] is not k:
        fwd, bwd = (torch.tensor(t, dtype=torch.float64, device="cpu") for t in (k.forward_table(), k.backward_table()))
        entry = (k, fwd.data_ptr(), bwd.data_ptr(), fwd, bwd)
        if len(_TABLES) > 4096:  # a program sweeping parameters: start over rather than grow
            _TABLES.clear()
        _TABLES[id(k)] = entry
    return entry


def _run_forward(table: dict, x: torch.Tensor, k: KernelConstants) -> torch.Tensor:
    if not x.is_cpu:  # never hand a device pointer to CPU code
        raise RuntimeError(unsupported_input(x))
    src = x if x.is_contiguous() and not x.is_neg() else dense_like(x.resolve_neg())
    out = torch.empty_like(src)
    n = src.numel()
    if n:
        table["forward", x.dtype](src.data_ptr(), out.data_ptr(), n, _tables(k)[1], torch.get_num_threads())
    return out


def _run_backward(table: dict, grad: torch.Tensor, x: torch.Tensor, k: KernelConstants) -> torch.Tensor:
    if not (x.is_cpu and grad.is_cpu):
        raise RuntimeError(unsupported_input(x if not x.is_cpu else grad))
    if (
        x.is_contiguous() and grad.is_contiguous() and grad.dtype == x.dtype and grad.shape == x.shape
        and not (x.is_neg() or grad.is_neg())
    ):  # fmt: skip
        src, g = x, grad
    else:
        src = dense_like(x.resolve_neg())
        g = dense_like(grad.to(x.dtype).resolve_neg().expand_as(x), src)
    out = torch.empty_like(src)
    n = src.numel()
    if n:
        table["backward", x.dtype](
            g.data_ptr(), src.data_ptr(), out.data_ptr(), n, _tables(k)[2], torch.get_num_threads()
        )
    return out


def forward(x: torch.Tensor, k: KernelConstants) -> torch.Tensor:
    """s(x) with the C++ kernel; output in ``torch.empty_like(x)``'s layout. Plain ops for anything
    without raw storage of its own (see :func:`spocu.torch._layout.has_raw_storage`) or when the
    library is unavailable.

    Runs below autograd: the caller (an ``autograd.Function``) records the graph.
    """
    if (_lib is not None or ready()) and x.is_cpu and has_raw_storage(x):
        return _run_forward(_lib, x, k)
    return _eager.forward(x, k)


def backward(grad: torch.Tensor, x: torch.Tensor, k: KernelConstants) -> torch.Tensor:
    """grad * s'(x) with the C++ kernel; output in ``torch.empty_like(x)``'s layout."""
    if (_lib is not None or ready()) and x.is_cpu and grad.is_cpu and has_raw_storage(grad, x):
        return _run_backward(_lib, grad, x, k)
    return _eager.backward(grad, x, k)


#: core.SHIFTED_COEFFICIENT_POLYNOMIALS padded to 8 coefficients each, as the kernels read them
_SHIFT = _table_buffer(tuple(p for poly in SHIFTED_COEFFICIENT_POLYNOMIALS for p in (*poly, *[0.0] * (8 - len(poly)))))


def param_block(alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """[alpha[C], beta[C], gamma[C]] in float64, contiguous (what the kernels read)."""
    return torch.cat([p.detach().reshape(-1) for p in (alpha, beta, gamma)]).to(torch.float64).contiguous()


def learnable_forward(
    x3: torch.Tensor,
    out3: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    gamma: torch.Tensor,
    c: float,
    block: torch.Tensor | None = None,
) -> bool:
    """Write s(x) into ``out3``; x3, out3: contiguous (A, C, B) blocks, C per-channel parameters.

    ``block``: :func:`param_block` of the parameters when the caller has it already. False
    (nothing written) if the kernels are not ready.
    """
    if not (ready() and has_raw_storage(x3, out3, alpha, beta, gamma)):
        return False
    run_learnable_forward(x3, out3, x3.shape, param_block(alpha, beta, gamma) if block is None else block, c)
    return True


def run_learnable_forward(x: torch.Tensor, out: torch.Tensor, dims, block: torch.Tensor, c: float) -> None:
    """:func:`learnable_forward` without its checks: the caller knows the kernels are ready and that
    x and out are CPU tensors of one dtype with raw storage whose storage orders are the (A, C, B)
    block ``dims``; ``block``: :func:`param_block` of the C parameters."""
    a, ch, b = dims
    _lib["learnable_forward", x.dtype](
        x.data_ptr(), out.data_ptr(), a, ch, b, block.data_ptr(), float(c), ctypes.addressof(_SHIFT), _threads()
    )


def learnable_backward(
    grad3: torch.Tensor,
    x3: torch.Tensor,
    out3: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    gamma: torch.Tensor,
    c: float,
    cap: float,
    block: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Write dL/dx into ``out3``; return [dL/dalpha, dL/dbeta, dL/dgamma] per channel, a (3, C) float64 tensor.

    All blocks are contiguous (A, C, B) of one dtype; ``cap``: ``_learnable._partial_cap``, beyond
    which (u = x/gamma + beta > cap) a row whose partials overflow is redone with the folded formulas
    of ``_learnable._partials_at``; ``block`` as in :func:`learnable_forward`.
    None (nothing written) if the kernels are not ready.
    """
    if not (ready() and has_raw_storage(grad3, x3, out3, alpha, beta, gamma)):
        return None
    block = param_block(alpha, beta, gamma) if block is None else block
    return run_learnable_backward(grad3, x3, out3, x3.shape, block, c, cap)


def run_learnable_backward(
    grad: torch.Tensor, x: torch.Tensor, out: torch.Tensor, dims, block: torch.Tensor, c: float, cap: float
) -> torch.Tensor:
    """:func:`learnable_backward` without its checks (as :func:`run_learnable_forward`; grad too)."""
    a, ch, b = dims
    sums = torch.zeros(3, ch, dtype=torch.float64, device="cpu")
    _lib["learnable_backward", x.dtype](
        grad.data_ptr(), x.data_ptr(), out.data_ptr(), sums.data_ptr(), a, ch, b, block.data_ptr(), float(c),
        float(cap), ctypes.addressof(_SHIFT), _threads(),
    )  # fmt: skip
    return sums
