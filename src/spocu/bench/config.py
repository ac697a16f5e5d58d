"""What a benchmark run measures: :class:`BenchConfig`, checked before anything runs.

>>> config = BenchConfig(sections=("elementwise",), sizes=(1000,), dtypes=("float32",))
>>> config.check()
>>> BenchConfig(threads=0).check()
Traceback (most recent call last):
...
ValueError: --threads must be >= 1, got 0
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

__all__ = [
    "BenchConfig",
    "SECTIONS",
    "DTYPES",
    "KERAS_BACKENDS",
    "DEFAULT_SIZES",
    "STEP_ROUNDS_FACTOR",
    "check_device",
    "check_json_path",
]

SECTIONS = ("elementwise", "cnn", "keras", "latency")
#: floating-point dtypes the elementwise section times
DTYPES = ("float32", "bfloat16", "float16", "float64")
KERAS_BACKENDS = ("tensorflow", "jax", "torch")
DEFAULT_SIZES = (10_000, 1_000_000, 16_000_000)
#: the training-step sections time this many times ``--rounds`` rounds (see BenchConfig.step_rounds)
STEP_ROUNDS_FACTOR = 4
#: bytes per element the elementwise section holds at once (inputs, gradients, outputs, float64 worst case)
_BYTES_PER_ELEMENT = 8 * 8


@dataclass
class BenchConfig:
    """The options of ``spocu bench`` (same names)."""

    sections: tuple[str, ...] = SECTIONS
    sizes: tuple[int, ...] = DEFAULT_SIZES
    dtypes: tuple[str, ...] = ("float32", "bfloat16")
    rounds: int = 9
    device: str = "cpu"
    threads: int | None = None
    keras_backends: tuple[str, ...] = ("tensorflow",)
    old_wheel: str | None = None
    no_old: bool = False
    quick: bool = False
    seed: int = 0

    @property
    def step_rounds(self) -> int:
        """Rounds of the training-step sections (cnn, keras): ``STEP_ROUNDS_FACTOR`` x ``rounds``.

        One training step is one sample of 20-60 ms, which a shared machine moves by 10-40%
        (with 9 rounds the seed CNN's 95% interval of SPOCU / ReLU was 0.57-1.23; with 36, five
        runs gave intervals 0.03-0.13 wide).

        >>> BenchConfig(rounds=9).step_rounds
        36
        """
        return STEP_ROUNDS_FACTOR * self.rounds

    def check(self) -> None:
        """Raise ``ValueError`` naming the option for anything out of range (torch not needed)."""
        unknown = [s for s in self.sections if s not in SECTIONS]
        if unknown or not self.sections:
            raise ValueError(
                f"unknown section(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(SECTIONS)}"
            )
        bad = [d for d in self.dtypes if d not in DTYPES]
        if bad or not self.dtypes:
            raise ValueError(f"--dtypes: {', '.join(bad) or '(none given)'} not timed; choose from {', '.join(DTYPES)}")
        if not self.sizes or any(n < 1 for n in self.sizes):
            raise ValueError(
                f"--sizes must be positive element counts, got {', '.join(map(str, self.sizes)) or '(none)'}"
            )
        if not 1 <= self.rounds <= 10_000:
            raise ValueError(f"--rounds must be in [1, 10000], got {self.rounds}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        if not 0 <= self.seed < 2**63:
            raise ValueError(f"--seed must be in [0, 2**63), got {self.seed}")
        bad = [b for b in self.keras_backends if b not in KERAS_BACKENDS]
        if bad:
            raise ValueError(f"--keras-backends: unknown {', '.join(bad)}; choose from {', '.join(KERAS_BACKENDS)}")
        if self.old_wheel is not None and not os.path.isfile(self.old_wheel):
            raise ValueError(f"--old-wheel {self.old_wheel!r} is not a file")
        if "elementwise" in self.sections:
            need = max(self.sizes) * _BYTES_PER_ELEMENT
            memory = _physical_memory()
            if memory is not None and need > memory / 2:
                raise ValueError(
                    f"--sizes {max(self.sizes):.3g} needs about {need / 2**30:.3g} GiB "
                    f"(this machine has {memory / 2**30:.3g} GiB); use smaller sizes"
                )


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_device(device: str):
    """The ``torch.device`` for ``device`` if it is usable here, else ``ValueError`` saying why."""
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"--device {device!r} is not a device; use cpu or cuda (cuda:N)") from None
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {device!r}: spocu bench runs on cpu or cuda, not {parsed.type}")
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {device!r}: no CUDA device is available here (torch {torch.__version__})")
        index = parsed.index or 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"--device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return parsed


def check_json_path(path: str) -> None:
    """Refuse a ``--json`` path that cannot be written, before the benchmark runs."""
    if not path.strip():
        raise ValueError("--json must name a file, got an empty string")
    if os.path.isdir(path):
        raise ValueError(f"--json {path!r} is a directory; name a file, e.g. {os.path.join(path, 'bench.json')}")
    parent = os.path.dirname(os.path.abspath(path))
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise ValueError(f"--json {path!r}: {parent!r} is a file, so the file cannot be made below it")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--json {path!r}: {parent!r} is not writable")


def finite_int(text: str) -> int:
    """``"1e6"`` -> 1000000; ``ValueError`` for what is not a finite whole number."""
    value = float(text)
    if not math.isfinite(value) or value != int(value):
        raise ValueError(f"{text!r} is not a whole number")
    return int(value)
