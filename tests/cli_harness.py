"""Run the ``spocu`` CLI as a user would and check that bad input fails cleanly.

Each case runs ``python -m spocu ARGS`` in a fresh subprocess, in a temporary working
directory, and :func:`assert_clean_failure` checks the contract of the CLI for bad input:
a non-zero exit, no Python traceback, one ``spocu <command>: error: ...`` (or argparse
``error:``) line naming the problem, and no file created outside the temporary directory.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REPO_SRC = Path(__file__).resolve().parent.parent / "src"


@dataclass
class CliResult:
    args: list[str]
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def run_cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 240) -> CliResult:
    """Run ``python -m spocu *args`` in ``cwd`` with the test's interpreter and this checkout's code."""
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_SRC), full_env.get("PYTHONPATH", "")]))
    full_env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    full_env.setdefault("JAX_PLATFORMS", "cpu")
    full_env["COLUMNS"] = "200"  # one-line messages stay one line
    full_env.update(env or {})
    done = subprocess.run(
        [sys.executable, "-m", "spocu", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return CliResult(list(args), done.returncode, done.stdout, done.stderr)


def snapshot(directory: Path) -> set[str]:
    """Every path below ``directory`` (to check that a refused command wrote nothing)."""
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


def assert_clean_failure(result: CliResult, pattern: str) -> None:
    """A refused invocation: non-zero exit, no traceback, an error line matching ``pattern`` (regex, case-insensitive)."""
    where = f"spocu {' '.join(result.args)}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    assert result.code != 0, f"exit 0 for bad input: {where}"
    assert "Traceback" not in result.output, f"traceback: {where}"
    errors = [line for line in result.output.splitlines() if "error" in line.lower()]
    assert errors, f"no error line: {where}"
    assert re.search(pattern, result.output, re.IGNORECASE), f"message does not match {pattern!r}: {where}"
