"""Timing utilities: interleaved medians, saved-tensor bytes, and where the numbers came from.

Every timing of :mod:`spocu.bench` is the median over rounds after warm-up; in each round
the candidates run once each, in a shuffled order (interleaved), so that a busy machine
slows all of them alike. Where a ratio to a baseline is the result (a training step of
SPOCU against ReLU's), :func:`paired_ratio` takes it round by round, so a load that
drifts between rounds cancels, and gives a bootstrap confidence interval of its median.

    >>> calls = []
    >>> medians = interleaved_medians({"a": lambda: calls.append("a")}, rounds=3, warmup=1)
    >>> len(calls), list(medians)
    (4, ['a'])
"""

from __future__ import annotations

import math
import os
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "interleaved_samples",
    "interleaved_medians",
    "paired_ratio",
    "saved_bytes_ratio",
    "machine_info",
    "device_sync",
    "calls_per_sample",
]


def machine_info() -> dict[str, Any]:
    """A description of where the numbers came from (CPU model, cores, Python, load)."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }
    if hasattr(os, "getloadavg"):
        info["load_average_at_start"] = round(os.getloadavg()[0], 2)
    return info


def device_sync(device) -> Callable[[], None]:
    """A function that waits for ``device``'s queued work (CUDA), or does nothing (CPU)."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


def interleaved_samples(
    candidates: dict[str, Callable[[], Any]],
    *,
    rounds: int,
    warmup: int = 2,
    inner: int = 1,
    sync: Callable[[], None] = lambda: None,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Seconds per call of each candidate, one sample per round; each round runs all candidates in a shuffled order.

    Every candidate runs ``warmup`` times, then ``rounds`` samples of ``inner`` calls each.
    """
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    sync()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    order = list(candidates)
    rng = random.Random(seed)
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            fn = candidates[name]
            sync()
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            sync()
            samples[name].append((time.perf_counter() - start) / inner)
    return samples


def interleaved_medians(candidates: dict[str, Callable[[], Any]], **options: Any) -> dict[str, float]:
    """Median seconds per call of each candidate (:func:`interleaved_samples`, same options)."""
    return {name: statistics.median(values) for name, values in interleaved_samples(candidates, **options).items()}


def paired_ratio(
    samples: dict[str, list[float]], name: str, baseline: str, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """(median, low, high): the median over rounds of ``name``'s time / ``baseline``'s in the same round.

    ``low``, ``high``: a percentile-bootstrap confidence interval of that median
    (``scipy.stats.bootstrap``); NaN with fewer than 5 rounds.

    >>> paired_ratio({"a": [2.0, 4.0, 2.2, 2.0, 3.0], "b": [1.0, 2.0, 1.0, 1.0, 1.5]}, "a", "b")[0]
    2.0
    """
    import numpy as np
    from scipy import stats

    ratios = np.asarray(samples[name], dtype=float) / np.asarray(samples[baseline], dtype=float)
    middle = float(np.median(ratios))
    if len(ratios) < 5 or name == baseline:
        return middle, (middle if name == baseline else math.nan), (middle if name == baseline else math.nan)
    if np.ptp(ratios) == 0:
        return middle, middle, middle
    result = stats.bootstrap((ratios,), np.median, confidence_level=confidence, method="percentile",
                             n_resamples=2000, random_state=seed)  # fmt: skip
    return middle, float(result.confidence_interval.low), float(result.confidence_interval.high)


def calls_per_sample(fn: Callable[[], Any], target_s: float = 0.004, limit: int = 200, sync=lambda: None) -> int:
    """How many calls of ``fn`` make one sample last about ``target_s`` (timer resolution at small sizes)."""
    fn()
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return max(1, min(limit, round(target_s / max(time.perf_counter() - start, 1e-7))))


def saved_bytes_ratio(fn: Callable, x) -> float:
    """Bytes the autograd graph of ``fn(x)`` keeps for backward, per byte of ``x`` (unique storages)."""
    import torch

    storages: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn(x)
    return sum(storages.values()) / (x.numel() * x.element_size())
