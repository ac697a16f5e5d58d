"""The old ``spocu`` 0.0.1 package, loaded next to ours for comparison.

It shares our import name, so its files are read from its wheel and loaded as
``spocu_old_<member>``; the wheel is the one given (``--old-wheel``) or fetched once with
``pip download spocu==0.0.1 --no-deps`` into ``~/.cache/spocu/bench/``. Anything that goes
wrong gives ``(None, reason)``: the benchmark reports the reason and skips the old rows.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from spocu._atomic import atomic_write_text
from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_GAMMA

__all__ = ["OLD_VERSION", "OLD_DEFAULTS", "wheel_path", "load_old_module"]

OLD_VERSION = "0.0.1"
#: the old package's constructor arguments: our (its) defaults
OLD_DEFAULTS = (DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_GAMMA)


def wheel_path(explicit: str | None) -> tuple[Path | None, str]:
    """The old spocu wheel: the given path, or one fetched with ``pip download`` (cached)."""
    if explicit:
        path = Path(explicit)
        return (path, "") if path.is_file() else (None, f"--old-wheel {explicit} does not exist")
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "spocu" / "bench"
    found = sorted(cache.glob(f"spocu-{OLD_VERSION}-*.whl"))
    if found:
        return found[0], ""
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return None, f"cannot create the wheel cache {cache} ({exc.strerror or exc})"
    cmd = [sys.executable, "-m", "pip", "download", f"spocu=={OLD_VERSION}", "--no-deps", "-q", "-d", str(cache)]
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=120)
    except (subprocess.SubprocessError, OSError) as exc:
        return None, f"pip download spocu=={OLD_VERSION} failed ({type(exc).__name__})"
    found = sorted(cache.glob(f"spocu-{OLD_VERSION}-*.whl"))
    return (found[0], "") if found else (None, f"pip download gave no spocu-{OLD_VERSION} wheel")


def load_old_module(member: str, wheel: str | None) -> tuple[Any, str]:
    """Load ``spocu/<member>.py`` of spocu 0.0.1 from its wheel as module ``spocu_old_<member>``.

    Returns (module or None, note saying why not).
    """
    import importlib.util
    import zipfile

    path, note = wheel_path(wheel)
    if path is None:
        return None, note
    try:
        with zipfile.ZipFile(path) as archive:
            source = archive.read(f"spocu/{member}.py").decode()
    except (KeyError, zipfile.BadZipFile, OSError, UnicodeDecodeError) as exc:
        return None, f"cannot read spocu/{member}.py from {path.name} ({type(exc).__name__})"
    name = f"spocu_old_{member}"
    target = Path(tempfile.mkdtemp(prefix="spocu-old-")) / f"{name}.py"
    atomic_write_text(target, source)
    spec = importlib.util.spec_from_file_location(name, target)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 -- any failure of foreign code means "skip it"
        return None, f"spocu {OLD_VERSION} {member} does not import here ({type(exc).__name__}: {exc})"
    return module, ""
