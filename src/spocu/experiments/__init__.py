"""Multi-seed activation comparisons: the machinery behind ``spocu compare``.

This layer uses only spocu's public API (:class:`spocu.torch.SPOCU`, :mod:`spocu.core`).
Modules, each small and replaceable:

- :mod:`~spocu.experiments.activations`: ``"spocu(c=1)"`` -> activation spec + customary init
- :mod:`~spocu.experiments.datasets`: one loader interface for wdbc, digits, mnist, cifar10
  (:mod:`~spocu.experiments.download` fetches and verifies, :mod:`~spocu.experiments.formats`
  parses IDX files, CIFAR pickles with a restricted unpickler, ``mnist.npz``)
- :mod:`~spocu.experiments.config`: the experiment's protocol, grid and presets
- :mod:`~spocu.experiments.engines`: the framework-neutral engine interface and run schema;
  :mod:`~spocu.experiments.engine_torch` and :mod:`~spocu.experiments.models_torch` implement it
- :mod:`~spocu.experiments.runner`: the plan of (activation, seed) runs, resume, atomic writes
- :mod:`~spocu.experiments.parallel`: independent runs in worker processes (``--jobs N``);
  :mod:`~spocu.experiments.distributed`: each run data-parallel over a ``torchrun`` group
- :mod:`~spocu.experiments.stats` (scipy/statsmodels) and :mod:`~spocu.experiments.report`

Importing this package imports neither torch nor matplotlib.
"""
