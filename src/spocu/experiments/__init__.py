"""Multi-seed activation comparisons: the machinery behind ``spocu compare``.

This layer uses only spocu's public API (:class:`spocu.torch.SPOCU`, :mod:`spocu.core`). It has
four rooms over a few base modules, and imports run one way, from the bottom up:

1. base: :mod:`~spocu.experiments.errors` (what the user is told, one line each),
   :mod:`~spocu.experiments.activations` (``"spocu(c=1)"`` -> activation spec + customary init),
   :mod:`~spocu.experiments.seeding` (each run's random streams from its seed) and
   :mod:`~spocu.experiments.environment` (versions and machine, for the report);
2. :mod:`~spocu.experiments.data` (datasets, downloads, formats, the user's data, splits) and
   :mod:`~spocu.experiments.models` (built-in torch and Keras models, the user's factories, swapping);
3. :mod:`~spocu.experiments.config`: the experiment's protocol, grid and presets, resolved from the
   options against the data and model names;
4. :mod:`~spocu.experiments.run`: engines, executors (local ``--jobs``, Ray, torchrun), the runner and
   the output directory;
5. :mod:`~spocu.experiments.results`: results.json, statistics, report;
6. :mod:`~spocu.experiments.compare`: the whole ``spocu compare`` run as one function.

A module imports only from its own level or below (``tests/test_experiments/test_layers.py``
checks it, function-level imports included).

Importing this package imports neither torch nor matplotlib.

The modules' paths of spocu 0.1 (``spocu.experiments.datasets``, ``...engine_torch``, ...) still
import, with a :class:`DeprecationWarning` naming the new path.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

#: spocu 0.1's module names (``spocu.experiments.NAME``) -> where they live now
MOVED_MODULES = {
    "datasets": "data.datasets",
    "download": "data.download",
    "formats": "data.formats",
    "userdata": "data.user_data",
    "models_torch": "models.torch_models",
    "models_keras": "models.keras_models",
    "user_models": "models.factories",
    "engines": "run.engine",
    "engine_torch": "run.torch_engine",
    "engine_keras": "run.keras_engine",
    "executors": "run.executors",
    "parallel": "run.parallel",
    "ray_executor": "run.ray_executor",
    "distributed": "run.distributed",
    "runner": "run.runner",
    "store": "run.store",
    "user_inputs": "run.inputs",
    "stats": "results.stats",
    "report": "results.report",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an 0.1 path as the module at its new path (the same module object), with a warning."""

    _prefix = __name__ + "."

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(self._prefix) or fullname[len(self._prefix) :] not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = self._prefix + MOVED_MODULES[spec.name[len(self._prefix) :]]
        warnings.warn(f"{spec.name} moved to {new}; import it from there", DeprecationWarning, stacklevel=2)
        return importlib.import_module(new)

    def exec_module(self, module):  # the new module is already executed
        pass


if not any(isinstance(finder, _MovedModuleFinder) for finder in sys.meta_path):
    sys.meta_path.append(_MovedModuleFinder())
