"""The user's Python code named on the command line: ``MODULE:NAME`` or ``path/to/file.py:NAME``.

One loader for ``--model`` factories (:mod:`spocu.experiments.models.factories`) and the user's
activations (:mod:`spocu.experiments.activations`): import the module or file, find the name, and
hash the source file, so that a resumed experiment notices changed code.

Example:
    >>> is_user_code("mynet.py:build"), is_user_code("spocu(c=1)")
    (True, False)
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

__all__ = ["import_named", "is_file_reference", "is_user_code", "source_file", "source_sha256"]


def is_user_code(text: str) -> bool:
    """``text`` names code (``MODULE:NAME`` or ``file.py:NAME``), not a built-in name."""
    module, sep, name = str(text).rpartition(":")
    return bool(sep and module and name and "(" not in module)


def is_file_reference(module_text: str) -> bool:
    """Whether ``MODULE`` of ``MODULE:NAME`` is a file path (ends in ``.py`` or holds a path separator),
    not a module name.

    Example:
        >>> is_file_reference("models/net.py"), is_file_reference("mypackage.models")
        (True, False)
    """
    return module_text.endswith(".py") or "/" in module_text or "\\" in module_text


def source_sha256(path: Path | None) -> str | None:
    """sha256 (first 16 hex digits) of the source file, None if there is none."""
    if path is None or not path.is_file():
        return None
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def source_file(obj: Any) -> Path | None:
    """The file that defines ``obj`` (None if Python cannot tell)."""
    try:
        found = inspect.getsourcefile(obj)
    except TypeError:
        found = None
    return Path(found) if found else None


def import_file(path: Path, what: str, error: type[Exception]) -> Any:
    """Import ``path`` as a module of its own (``what`` prefixes any ``error`` raised)."""
    if not path.is_file():
        raise error(f"{what}: no such file {path}")
    # a unique module name per file, so two files with one name do not collide
    module_name = "spocu_user_model_" + hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise error(f"{what}: {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    write_bytecode = sys.dont_write_bytecode
    sys.dont_write_bytecode = True  # no __pycache__/ left beside the user's file: spocu writes only under --out
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as failure:  # sys.exit() in a user's file must not end spocu silently
        sys.modules.pop(module_name, None)
        raise error(f"{what}: importing {path} failed: {type(failure).__name__}: {failure}") from None
    finally:
        sys.dont_write_bytecode = write_bytecode
    return module


def import_named(text: str, what: str, error: type[Exception]) -> tuple[Any, Any]:
    """``(module, object)`` named by ``text``; ``error(f"{what}: ...")`` if it cannot be had."""
    module_text, sep, name = text.rpartition(":")
    if not sep or not module_text or not name:
        raise error(f"{what}: expected MODULE:NAME or path/to/file.py:NAME")
    if is_file_reference(module_text):
        module = import_file(Path(module_text).expanduser(), what, error)
    else:
        try:
            module = importlib.import_module(module_text)
        except (Exception, SystemExit) as failure:
            raise error(f"{what}: cannot import {module_text} ({type(failure).__name__}: {failure})") from None
    obj = getattr(module, name, None)
    if obj is None:
        available = sorted(
            n
            for n, v in vars(module).items()
            if callable(v) and not n.startswith("_") and getattr(v, "__module__", None) == module.__name__
        )
        listed = f"; it defines {', '.join(available)}" if available else ""
        raise error(f"{what}: {module_text} has no {name!r}{listed}")
    return module, obj
