"""SPOCU's CPU kernels in C++, built once per machine in the background and loaded in milliseconds.

:file:`_cpp_kernels.cpp` (the math of :mod:`spocu.torch._eager` and of the
learnable formulas, one pass forward, one pass backward, OpenMP threads) needs
no PyTorch headers, so the system C++ compiler builds it in about a second. The
library is cached on disk (``$SPOCU_CACHE_DIR``, else ``$XDG_CACHE_HOME/spocu``,
else ``~/.cache/spocu``) under a key made of the source, the compiler, the flags
and the CPU, and called through :mod:`ctypes` on raw storage pointers (about
2 us a call, no guard checks, no dispatcher).

First use in a process:

* cached library: loaded (and self-checked against the plain ops) on the first
  call, a few milliseconds;
* no cached library: the first call starts the build in a background thread and
  returns at once; calls are served by the plain ops until the library is
  ready, then by it. The compiler runs as its own process, which finishes and
  renames the library into the cache even if this process exits first, so short
  scripts build it once for the next ones. Processes that start together (the
  ``--jobs`` workers) build it once: the others wait for the file.
* no working compiler: the plain ops, after one :class:`RuntimeWarning` (issued
  by :mod:`spocu.torch._dispatch`, the one place that warns about fallbacks).

:func:`kernel_status` says which of these holds; :func:`build` waits for the
library (for instance to warm a container image).

Examples:
    >>> status = kernel_status()
    >>> status["state"] in ("idle", "building", "ready", "failed")
    True
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import torch
import torch.autograd.forward_ad as _forward_ad

from spocu.core import SHIFTED_COEFFICIENT_POLYNOMIALS
from spocu.torch import _eager
from spocu.torch._constants import KernelConstants
from spocu.torch._layout import dense_like, is_plain

__all__ = [
    "CACHE_ENV",
    "DTYPES",
    "backward",
    "build",
    "failed",
    "forward",
    "kernel_status",
    "learnable_backward",
    "learnable_forward",
    "ready",
    "unavailable_reason",
    "unsupported_input",
]

SOURCE = Path(__file__).with_name("_cpp_kernels.cpp")
CACHE_ENV = "SPOCU_CACHE_DIR"
#: dtypes the library computes (float16/bfloat16 in float32, as torch's opmath)
DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.bfloat16: "bfloat16", torch.float16: "float16"}
#: compiler flags, best first: a compiler that rejects one set gets the next
FLAG_SETS = (
    ("-O3", "-march=native", "-fopenmp"),
    ("-O3", "-fopenmp"),
    ("-O3",),
)
_COMMON_FLAGS = ("-shared", "-fPIC", "-std=c++17", "-fvisibility=hidden", "-fno-strict-aliasing",
                 "-fno-trapping-math")  # FP exceptions are never read: lets branches become selects
#: how long a process waits for another one's build before building itself
_PEER_BUILD_WAIT_S = 120.0
#: a build slower than this is given up (the plain ops keep serving)
_BUILD_TIMEOUT_S = 600.0

_lock = threading.Lock()
_lib: Any = None  # the loaded library's function table once ready (read without the lock: one assignment)
_state = "idle"  # idle -> building -> ready | failed
_reason: str | None = None
_path: Path | None = None
_done = threading.Event()


# ---------------------------------------------------------------- where the library lives


def cache_dir() -> Path:
    """The directory holding built libraries."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "spocu"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_identity() -> str:
    """What -march=native depends on: the machine and, on Linux, the CPU model and feature flags."""
    parts = [platform.machine(), platform.system()]
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features", "CPU part")):
                    parts.append(line.strip())
                if line.strip() == "":  # the first processor is enough
                    break
    except OSError:
        parts.append(platform.processor())
    return "\n".join(parts)


def build_key(compiler: str, source: Path, *parts: str) -> str:
    """The cache key of a library built from ``source`` by ``compiler``, with whatever else it depends on."""
    stat = os.stat(compiler)
    text = "\n".join([source.read_text(), os.path.realpath(compiler), str(stat.st_size), str(stat.st_mtime_ns), *parts])
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _library_key(compiler: str) -> str:
    return build_key(compiler, SOURCE, repr(FLAG_SETS), repr(_COMMON_FLAGS), _cpu_identity())


# ---------------------------------------------------------------- loading and checking


_SIGNATURES = {
    "forward": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int],
    "backward": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int],
    "learnable_forward": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                          ctypes.c_void_p, ctypes.c_double, ctypes.c_void_p, ctypes.c_int],
    "learnable_backward": [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                           ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_double, ctypes.c_double,
                           ctypes.c_void_p, ctypes.c_int],
}  # fmt: skip


def _load(path: Path) -> dict[tuple[str, torch.dtype], Any]:
    """The library's kernels by (kind, dtype), after checking them against the plain ops."""
    lib = ctypes.CDLL(str(path))
    if lib.spocu_abi_version() != 2:
        raise RuntimeError(f"{path} is from another version of spocu")
    table = {}
    for kind, argtypes in _SIGNATURES.items():
        for dtype, name in DTYPES.items():
            fn = getattr(lib, f"spocu_{kind}_{name}")
            fn.argtypes = argtypes
            fn.restype = None
            table[kind, dtype] = fn
    table["handle"] = lib
    _self_check(table)
    return table


def self_check_inputs(points: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, grad) in float64 for the load-time self-checks: both pieces, the signed zeros, infinities."""
    x = torch.linspace(-12.0, 12.0, points, dtype=torch.float64)
    x = torch.cat([x, torch.tensor([0.0, -0.0, float("inf"), -float("inf")], dtype=torch.float64)])
    return x, torch.linspace(-2.0, 3.0, x.numel(), dtype=torch.float64)


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
                    raise RuntimeError(f"the built kernels disagree with the plain ops (max error {worst:.3g})")


def _try_load_cached() -> bool:
    """Load the library if it is already in the cache (called with the lock held)."""
    global _lib, _state, _path, _reason
    compiler = _compiler()
    path = None
    if compiler is not None:
        path = cache_dir() / f"spocu_kernels_{_library_key(compiler)}.so"
        _path = path
    if path is None or not path.exists():
        return False
    try:
        _lib = _load(path)
    except Exception as exc:  # noqa: BLE001 -- a broken cached file: rebuild it
        _reason = f"cached {path.name} unusable ({type(exc).__name__}: {exc}); rebuilding"
        return False
    _state = "ready"
    _done.set()
    _start_node()
    return True


def _start_node() -> None:
    """Once the kernels are loaded: the C++ autograd node, loaded or built in the background."""
    from spocu.torch import _node

    _node.start()


# ---------------------------------------------------------------- building


#: a build at idle priority that has not finished after this long (a machine busy on every core)
#: is restarted at normal priority
_IDLE_BUILD_TIMEOUT_S = 120.0


def _build_command(
    compiler: str, flags: tuple[str, ...], tmp: Path, final: Path, idle: bool = True, source: Path = SOURCE,
    common: tuple[str, ...] = _COMMON_FLAGS, libraries: tuple[str, ...] = (),
) -> list[str]:
    # idle: the compiler runs at idle priority (SCHED_IDLE; else nice 19) while the plain ops serve
    # the caller: at normal priority it took a core from the caller's OpenMP threads, which then
    # stalled at every barrier (on 2 cores a 1e6-element fwd+bwd took 0.29 s during the build, 0.05 s
    # with the compiler idle). The shell renames the finished file (rename(2): atomic, never a
    # half-written library) even if this process has exited by then.
    lower = (
        'if chrt --idle 0 true 2>/dev/null; then set -- chrt --idle 0 "$@"; '
        'elif nice -n 19 true 2>/dev/null; then set -- nice -n 19 "$@"; fi; '
    )
    script = 'tmp="$1"; final="$2"; shift 2; ' + (lower if idle else "") + '"$@" -o "$tmp" && mv -f "$tmp" "$final"'
    return ["/bin/sh", "-c", script, "spocu-build", str(tmp), str(final),
            compiler, *flags, *common, str(source), *libraries]  # fmt: skip


def _run_build(command: list[str], lock_fd: int, timeout: float) -> subprocess.CompletedProcess:
    """Run a build command in its own session; on timeout kill the whole session (the compiler too)."""
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, pass_fds=(lock_fd,), start_new_session=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, 9)
        except OSError:
            pass
        proc.communicate()
        raise
    return subprocess.CompletedProcess(command, proc.returncode, out, err)


def _compile(
    compiler: str, final: Path, source: Path = SOURCE, flag_sets: tuple[tuple[str, ...], ...] = FLAG_SETS,
    common: tuple[str, ...] = _COMMON_FLAGS, libraries: tuple[str, ...] = (),
) -> None:
    """Build ``final`` from ``source`` with the first of ``flag_sets`` the compiler accepts (holding an
    exclusive lock on ``final``.lock, shared with the compiler process)."""
    import fcntl  # POSIX only, like the shell build

    final.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(str(final) + ".lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        deadline = time.monotonic() + _PEER_BUILD_WAIT_S
        while True:  # another process building the same library: wait for its file
            try:
                fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError:
                if final.exists():  # (a forked copy of the builder's descriptor may keep the lock held)
                    return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"another process has held {final}.lock for {_PEER_BUILD_WAIT_S:.0f} s")
                time.sleep(0.1)
        if final.exists():
            return
        errors = []
        for flags in flag_sets:
            tmp = final.with_name(f".{final.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            command = functools.partial(_build_command, compiler, flags, tmp, final, source=source, common=common,
                                        libraries=libraries)  # fmt: skip
            try:
                proc = _run_build(command(), lock_fd, _IDLE_BUILD_TIMEOUT_S)
            except subprocess.TimeoutExpired:  # starved at idle priority: build at normal priority
                tmp.unlink(missing_ok=True)
                proc = _run_build(command(idle=False), lock_fd, _BUILD_TIMEOUT_S)
            if proc.returncode == 0 and final.exists():
                return
            tmp.unlink(missing_ok=True)
            errors.append(f"{' '.join(flags)}: {' '.join(proc.stderr.split())[:300]}")
        raise RuntimeError(f"{compiler} could not build {source.name} ({'; '.join(errors)})")
    finally:
        os.close(lock_fd)


#: held while a background thread runs torch code (loading and self-checking a library): an
#: interpreter that exits under it tears torch down mid-call (std::terminate, exit status 134), so
#: exit waits for it (milliseconds) and no load starts after
_torch_work = threading.Lock()
_exiting = False


def guarded_load(load: Any, path: Path) -> Any:
    """``load(path)`` from a background thread, never overlapping the interpreter's exit."""
    with _torch_work:
        if _exiting:
            raise RuntimeError("the interpreter is exiting")
        return load(path)


def _stop_background_loads() -> None:
    global _exiting
    with _torch_work:  # a load in progress finishes first
        _exiting = True


atexit.register(_stop_background_loads)


def failure_reason(exc: BaseException) -> str:
    """One line saying why a build or load failed (what :func:`kernel_status` reports)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:500]}"


def _build_in_background(compiler: str, final: Path) -> None:
    global _lib, _state, _reason
    try:
        _compile(compiler, final)
        lib = guarded_load(_load, final)
    except Exception as exc:  # noqa: BLE001 -- any failure means "plain ops", said once by the caller
        with _lock:
            _state, _reason = "failed", failure_reason(exc)
        _done.set()
        return
    with _lock:
        _lib = lib
        _state = "ready"
    _done.set()
    _start_node()


def _start() -> None:
    """Load the cached library or start building it (idempotent; never blocks on a compiler)."""
    global _state, _reason
    with _lock:
        if _state != "idle":
            return
        if os.name != "posix":
            _state, _reason = "failed", f"the C++ kernels are built with a POSIX shell and compiler (os.name={os.name!r})"
            _done.set()
            return
        if _try_load_cached():
            return
        compiler = _compiler()
        if compiler is None:
            _state, _reason = "failed", "no C++ compiler found (set $CXX or install g++ or clang++)"
            _done.set()
            return
        _state = "building"
        _done.clear()
        threading.Thread(target=_build_in_background, args=(compiler, _path), name="spocu-kernel-build",
                         daemon=True).start()  # fmt: skip


def _after_fork_in_child() -> None:
    # the builder thread does not exist in the child: start over (the cache file may be there by now)
    global _lock, _state, _done, _torch_work
    _lock = threading.Lock()
    _torch_work = threading.Lock()  # (a parent's loading thread does not exist here)
    if _state == "building":
        _state = "idle"
        _done = threading.Event()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# ---------------------------------------------------------------- public state


def transforms_active() -> bool:
    """A torch.func transform or a forward-mode AD level is active (tensors may be wrappers or duals)."""
    return _forward_ad._current_level >= 0 or torch._C._functorch.peek_interpreter_stack() is not None


def ready() -> bool:
    """True once the kernels serve calls; the first call starts loading or building them."""
    if _lib is not None:
        return True
    if _state == "idle":
        _start()
    return _lib is not None


def failed() -> bool:
    """True once the library cannot be had in this process (the dispatcher then warns once)."""
    return _state == "failed"


def unsupported_input(x: torch.Tensor) -> str | None:
    """Why the kernels can never compute ``x`` (device, dtype), else None."""
    if x.device.type != "cpu":
        return f"the C++ kernels run on CPU tensors, got device {x.device.type!r}"
    if x.dtype not in DTYPES:
        return f"the C++ kernels compute {', '.join(str(d) for d in DTYPES)}, got {x.dtype}"
    return None


def unavailable_reason(x: torch.Tensor | None = None) -> str | None:
    """None if the kernels can compute ``x`` now, else why not (they may still be building)."""
    if x is not None and unsupported_input(x) is not None:
        return unsupported_input(x)
    if ready():
        return None
    return "the C++ kernels are still being built" if _state == "building" else _reason


def kernel_status() -> dict[str, Any]:
    """Where the fused CPU kernels stand in this process.

    Returns a dict with ``state`` (``"idle"``: not asked for yet; ``"building"``:
    compiling in the background while the plain ops serve; ``"ready"``: every
    call uses them; ``"failed"``: plain ops for good), ``library`` (the cached
    file), ``reason`` (why not ready) and ``cache_dir``.

    ``node_state``, ``node_library`` and ``node_reason`` say the same of the C++
    autograd node (:mod:`spocu.torch._node`), built after the kernels; until it is
    ready the kernels serve through a Python ``autograd.Function``, with the same results.

    Examples:
        >>> sorted(kernel_status())
        ['cache_dir', 'library', 'node_library', 'node_reason', 'node_state', 'reason', 'state']
    """
    from spocu.torch import _node

    return {
        "state": _state,
        "library": str(_path) if _path is not None else None,
        "reason": _reason if _state != "ready" else None,
        "cache_dir": str(cache_dir()),
        "node_state": _node.state(),
        "node_library": str(_node.library_path()) if _node.library_path() is not None else None,
        "node_reason": _node.reason(),
    }


def build(timeout: float | None = None, node: bool = True) -> dict[str, Any]:
    """Load or build the kernels and (``node=True``) the autograd node now and wait (at most
    ``timeout`` s in all); returns :func:`kernel_status`.

    Useful to build the library ahead of time, e.g. in a container image:
    ``python -c "import spocu.torch; spocu.torch.build_kernels()"``.
    """
    from spocu.torch import _node

    deadline = None if timeout is None else time.monotonic() + timeout
    _start()
    _done.wait(timeout)
    if node and _lib is not None:  # and the autograd node built after them
        _node.build(None if deadline is None else max(0.0, deadline - time.monotonic()))
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
        fwd, bwd = (torch.tensor(t, dtype=torch.float64) for t in (k.forward_table(), k.backward_table()))
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
    """s(x) with the C++ kernel (plain ops until it is ready); output in ``torch.empty_like(x)``'s layout.

    Runs below autograd: the caller (an ``autograd.Function``) records the graph.
    """
    lib = _lib
    if lib is None or not is_plain(x):  # not built yet, or a legacy-vmap (gradcheck) batched tensor
        if lib is None and ready():
            return _run_forward(_lib, x, k)
        return _eager.forward(x, k)
    return _run_forward(lib, x, k)


def backward(grad: torch.Tensor, x: torch.Tensor, k: KernelConstants) -> torch.Tensor:
    """grad * s'(x) with the C++ kernel; output in ``torch.empty_like(x)``'s layout."""
    lib = _lib
    if lib is None or not is_plain(grad, x):
        if lib is None and ready() and is_plain(grad, x):
            return _run_backward(_lib, grad, x, k)
        return _eager.backward(grad, x, k)
    return _run_backward(lib, grad, x, k)


#: core.SHIFTED_COEFFICIENT_POLYNOMIALS padded to 8 coefficients each, as the kernels read them
_SHIFT = _table_buffer(tuple(p for poly in SHIFTED_COEFFICIENT_POLYNOMIALS for p in (*poly, *[0.0] * (8 - len(poly)))))


def _param_block(alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """[alpha[C], beta[C], gamma[C]] in float64, contiguous (what the kernels read)."""
    return torch.cat([p.detach().reshape(-1) for p in (alpha, beta, gamma)]).to(torch.float64).contiguous()


def learnable_forward(
    x3: torch.Tensor, out3: torch.Tensor, alpha: torch.Tensor, beta: torch.Tensor, gamma: torch.Tensor, c: float
) -> bool:
    """Write s(x) into ``out3``; x3, out3: contiguous (A, C, B) blocks, C per-channel parameters.

    False (nothing written) if the kernels are not ready.
    """
    if _lib is None and not ready():
        return False
    params = _param_block(alpha, beta, gamma)
    out = out3
    a, ch, b = x3.shape
    _lib["learnable_forward", x3.dtype](
        x3.data_ptr(), out.data_ptr(), a, ch, b, params.data_ptr(), float(c), ctypes.addressof(_SHIFT), _threads()
    )
    return True


def learnable_backward(
    grad3: torch.Tensor,
    x3: torch.Tensor,
    out3: torch.Tensor,
    alpha: torch.Tensor,
    beta: torch.Tensor,
    gamma: torch.Tensor,
    c: float,
    cap: float,
) -> torch.Tensor | None:
    """Write dL/dx into ``out3``; return [dL/dalpha, dL/dbeta, dL/dgamma] per channel, a (3, C) float64 tensor.

    All blocks are contiguous (A, C, B) of one dtype; the partials are evaluated at
    ``t <= cap - beta`` (see ``_learnable._partials``). None (nothing written) if the kernels are not ready.
    """
    if _lib is None and not ready():
        return None
    params = _param_block(alpha, beta, gamma)
    out = out3
    a, ch, b = x3.shape
    sums = torch.zeros(3, ch, dtype=torch.float64)
    _lib["learnable_backward", x3.dtype](
        grad3.data_ptr(), x3.data_ptr(), out.data_ptr(), sums.data_ptr(), a, ch, b, params.data_ptr(), float(c),
        float(cap), ctypes.addressof(_SHIFT), _threads(),
    )  # fmt: skip
    return sums
