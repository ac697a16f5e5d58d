"""The benchmark harness behind ``spocu bench``: how much SPOCU costs next to ReLU.

- :mod:`spocu.bench.timing` -- interleaved medians, saved-tensor bytes, machine info;
- :mod:`spocu.bench.old` -- the old ``spocu`` 0.0.1 package, loaded under another name;
- one module per section: :mod:`~spocu.bench.elementwise`, :mod:`~spocu.bench.cnn`,
  :mod:`~spocu.bench.keras`, :mod:`~spocu.bench.latency`;
- :mod:`spocu.bench.report` -- tables (rich, Markdown) and the JSON file;
- :mod:`spocu.bench.config` -- :class:`BenchConfig`, the options, checked up front.

Timings are benchmarks, not tests. Ratios are what to compare across machines.

Example (one small section)::

    from spocu.bench import BenchConfig, run_sections
    rows, notes = run_sections(BenchConfig(sections=("elementwise",), sizes=(10_000,), rounds=3, no_old=True))
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from spocu.bench.config import SECTIONS, BenchConfig
from spocu.bench.timing import interleaved_medians, machine_info, saved_bytes_ratio

__all__ = [
    "BenchConfig",
    "SECTIONS",
    "run_section",
    "run_sections",
    "interleaved_medians",
    "saved_bytes_ratio",
    "machine_info",
]


def steady_state_kernels() -> str:
    """Load the installed C++ kernels before timing (the default path; the optional C++ autograd node
    is timed only if this process built it, with ``spocu.torch.build_kernels()``); returns a note
    saying which path the timed calls take."""
    import torch

    import spocu.torch

    status = spocu.torch.kernel_status()
    note = f"PyTorch CPU kernels: {spocu.torch.kernel_path(torch.float32)}; C++ autograd node: {status['node_state']}"
    reason = spocu.torch.kernel_status()["reason"]
    return note + (f" ({reason})" if reason else "")


def run_section(name: str, config: BenchConfig, notes: list[str]) -> list[dict[str, Any]]:
    """The rows of one section (``config.sections`` is not consulted)."""
    if name not in SECTIONS:
        raise ValueError(f"unknown section {name!r}; choose from {', '.join(SECTIONS)}")
    return importlib.import_module(f"spocu.bench.{name}").run(config, notes)


def run_sections(
    config: BenchConfig, on_section: Callable[[str, float], None] | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Every section of ``config`` in the standard order: (rows, notes)."""
    import time

    config.check()
    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    if config.device == "cpu" and {"elementwise", "cnn"} & set(config.sections):
        notes.append(steady_state_kernels())
    for name in SECTIONS:
        if name in config.sections:
            start = time.perf_counter()
            rows += run_section(name, config, notes)
            if on_section is not None:
                on_section(name, time.perf_counter() - start)
    return rows, notes
