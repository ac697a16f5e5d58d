"""Atomic file writes, the one implementation every command uses.

A file written here is either absent, its old version, or complete -- never half-written:
the data goes to a temporary file beside the target, is flushed to disk, and is renamed over
the target with ``os.replace`` (atomic on POSIX and Windows). The result gets the usual
permissions (``0o666`` less the umask), not ``mkstemp``'s private ``0o600``.

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "out" / "note.txt"
    >>> atomic_write_text(target, "hello")
    >>> target.read_text()
    'hello'
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_savefig", "atomic_open", "temp_owner"]


def temp_owner(name: str) -> int | None:
    """The process id in a temporary file name made by :func:`atomic_open`, or None if it is not one.

    Temporary files are named ``.<target>.<pid>.<random>.tmp``: each belongs to the process that
    made it, so a cleanup can remove its own (or a dead process's) and leave anyone else's.

    Example:
        >>> temp_owner(".results.json.4242.k3j_9x2a.tmp"), temp_owner(".notes.txt.tmp")
        (4242, None)
    """
    parts = name.split(".")
    if len(parts) < 5 or parts[0] != "" or parts[-1] != "tmp" or not parts[-3].isdigit():
        return None
    return int(parts[-3])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], *, fsync: bool = True) -> Iterator[IO[bytes]]:
    """Open a temporary binary file beside ``path``; on a clean exit it replaces ``path``.

    On any exception (including KeyboardInterrupt) the temporary file is removed and
    ``path`` is untouched. The parent directory is created if needed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # .<name>.<pid>.<random>.tmp: whose it is stays readable (temp_owner), and two processes never collide
    handle, temp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp")
    try:
        os.chmod(temp, 0o666 & ~_umask())
        with os.fdopen(handle, "wb") as stream:
            handle = -1
            yield stream
            stream.flush()
            if fsync:
                os.fsync(stream.fileno())
        os.replace(temp, target)
    except BaseException:
        if handle != -1:
            os.close(handle)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file beside it, fsync, ``os.replace``)."""
    with atomic_open(path) as stream:
        stream.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_savefig(fig: Any, path: str | os.PathLike[str], **kwargs: Any) -> None:
    """``fig.savefig`` into ``path`` atomically; the format comes from the suffix (default png)."""
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    with atomic_open(path) as stream:
        fig.savefig(stream, format=fmt, **kwargs)
