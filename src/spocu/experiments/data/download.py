"""Fetch a file into the cache, verified by checksum, never leaving a partial file under the final name.

The file is streamed to a temporary name in the destination directory while its digest is
computed, with a rich progress bar; only when it is complete and its checksum matches is it
renamed (``os.replace``, atomic) to its final name. A failed, interrupted or corrupt download
leaves nothing behind.

The cache directory is ``$SPOCU_DATA``, or ``~/.cache/spocu`` (:func:`cache_dir`).

Example:
    >>> import hashlib, tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (tmp / "x.bin").write_bytes(b"spocu")
    >>> file_digest(tmp / "x.bin", "md5") == hashlib.md5(b"spocu").hexdigest()
    True
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from spocu._atomic import atomic_open

__all__ = ["DatasetError", "ChecksumError", "RemoteFile", "cache_dir", "file_digest", "verify", "fetch"]


class DatasetError(RuntimeError):
    """A dataset cannot be found, downloaded or read; the message says what to do."""


class ChecksumError(DatasetError):
    """A file's digest differs from the published one."""


@dataclass(frozen=True)
class RemoteFile:
    """A published file: its name, where to download it, and its digest (``algorithm``: md5 or sha256)."""

    name: str
    url: str
    digest: str
    algorithm: str = "md5"
    size: int | None = None


def cache_dir() -> Path:
    """The download cache: ``$SPOCU_DATA`` or ``~/.cache/spocu``."""
    env = os.environ.get("SPOCU_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "spocu"


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, expected: str, algorithm: str = "md5") -> None:
    """Raise :class:`ChecksumError` unless ``path``'s digest is ``expected``."""
    actual = file_digest(path, algorithm)
    if actual != expected.lower():
        raise ChecksumError(
            f"checksum mismatch for {path}: {algorithm} {actual}, expected {expected}. "
            "The file is corrupt, truncated or not the published one: delete it and try again."
        )


Opener = Callable[..., object]


def fetch(remote: RemoteFile, directory: Path, *, progress: bool = True, opener: Opener | None = None) -> Path:
    """Download ``remote`` into ``directory`` (created if needed) and return the verified file's path.

    Raises:
        ChecksumError: the downloaded bytes do not match ``remote.digest`` (nothing is kept).
        DatasetError: the download failed (no network, HTTP error); nothing is kept.
    """
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / remote.name
    open_url = opener or urllib.request.urlopen
    digest = hashlib.new(remote.algorithm)
    try:
        response = open_url(remote.url, timeout=60)
    except (urllib.error.URLError, OSError, ValueError) as error:
        raise DatasetError(f"cannot download {remote.url}: {getattr(error, 'reason', error)}") from None
    # the bytes land under the final name only once complete and verified (atomic_open)
    with response, atomic_open(final) as out:
        length = response.headers.get("Content-Length") if hasattr(response, "headers") else None
        total = int(length) if length and length.isdigit() else remote.size
        with _progress_bar(remote.name, total, progress) as advance:
            while True:
                try:
                    chunk = response.read(1 << 16)
                except OSError as error:
                    raise DatasetError(f"download of {remote.url} broke off: {error}") from None
                if not chunk:
                    break
                out.write(chunk)
                digest.update(chunk)
                advance(len(chunk))
        if digest.hexdigest() != remote.digest.lower():
            raise ChecksumError(
                f"checksum mismatch for {remote.url}: {remote.algorithm} {digest.hexdigest()}, expected "
                f"{remote.digest}; the download is corrupt or truncated and was discarded."
            )
    return final


class _progress_bar:
    """A rich download bar (bytes, speed) on stderr, or nothing when ``enabled`` is False."""

    def __init__(self, name: str, total: int | None, enabled: bool) -> None:
        self.name, self.total, self.enabled = name, total, enabled
        self._progress = None

    def __enter__(self) -> Callable[[int], None]:
        if not self.enabled:
            return lambda n: None
        from rich.console import Console
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

        self._progress = Progress(
            TextColumn("downloading {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._progress.start()
        task = self._progress.add_task(self.name, total=self.total)
        return lambda n: self._progress.advance(task, n)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
