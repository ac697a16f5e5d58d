"""The documentation's code examples run: every ```python block of a page, in order, as one script.

Each page (``docs/**/*.md`` and ``README.md``) runs in a fresh Python process in a temporary
directory, as a reader would run it, so one page's imports (TensorFlow, JAX) cannot change
another test's process. A page whose top-level imports are not installed is skipped, naming
them. Blocks fenced as ``py`` are illustrations (they need a GPU, a cluster or torchvision)
and do not run; see docs/development.md.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

grab_code_blocks = pytest.importorskip(
    "mktestdocs", reason="mktestdocs is not installed (pip install -e '.[dev]')"
).grab_code_blocks

ROOT = Path(__file__).resolve().parents[1]
PAGES = sorted(p for p in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")] if grab_code_blocks(p.read_text()))
_IMPORT = re.compile(r"^\s*(?:import|from)\s+([A-Za-z_]\w*)", re.MULTILINE)


def page_script(page: Path) -> str:
    return "\n\n".join(grab_code_blocks(page.read_text(encoding="utf-8")))


def missing_imports(script: str) -> list[str]:
    return sorted({name for name in _IMPORT.findall(script) if importlib.util.find_spec(name) is None})


def test_pages_have_examples():
    names = {p.relative_to(ROOT).as_posix() for p in PAGES}
    assert {"README.md", "docs/pytorch.md", "docs/keras.md", "docs/jax.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
@pytest.mark.slow
def test_page_examples_run(page: Path, tmp_path: Path):
    script = page_script(page)
    missing = missing_imports(script)
    if missing:
        pytest.skip(f"{page.name} imports {', '.join(missing)}, not installed")
    (tmp_path / "page.py").write_text(script, encoding="utf-8")
    path = [str(ROOT / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.setdefault("JAX_PLATFORMS", "cpu")
    done = subprocess.run(
        [sys.executable, "page.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{page.name}'s examples failed:\n{done.stderr[-4000:]}"
