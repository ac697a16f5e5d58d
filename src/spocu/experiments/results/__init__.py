"""What a comparison found: results.json and epochs.csv, the statistics, the report and plots.

- :mod:`~spocu.experiments.results.summary`: results.json, epochs.csv and the results table;
- :mod:`~spocu.experiments.results.stats`: the statistics (scipy, statsmodels);
- :mod:`~spocu.experiments.results.report`: report.md and the figures.

The top of the layer: imports ``run`` (the run records), never the other way.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any


def __getattr__(name: str) -> Any:
    # spocu 0.1 had a module spocu.experiments.results; its names now live in results.summary
    summary = importlib.import_module(__name__ + ".summary")
    if name.startswith("_") or not hasattr(summary, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(f"{__name__}.{name} moved to {__name__}.summary.{name}", DeprecationWarning, stacklevel=2)
    return getattr(summary, name)
