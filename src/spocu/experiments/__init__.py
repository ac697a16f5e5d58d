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
- :mod:`~spocu.experiments.store`: the output directory (ours or refused), its protocol, lock
  and run files, validated before use
- :mod:`~spocu.experiments.runner`: the plan of (activation, seed) runs, trained in order, resumable
- :mod:`~spocu.experiments.executors`: where ``--jobs`` runs train, by name;
  :mod:`~spocu.experiments.parallel`: independent runs in worker processes (``--jobs N``);
  :mod:`~spocu.experiments.ray_executor`: one Ray task per run, on any Ray cluster (``--executor ray``);
  :mod:`~spocu.experiments.distributed`: each run data-parallel over a ``torchrun`` group
- :mod:`~spocu.experiments.results` (results.json, epochs.csv, the results table),
  :mod:`~spocu.experiments.stats` (scipy/statsmodels) and :mod:`~spocu.experiments.report`
- :mod:`~spocu.experiments.compare`: the whole ``spocu compare`` run as one function
- :mod:`~spocu.experiments.errors`: what the user is told (one line each)

Imports run one way: compare -> runner -> executors/store -> engines; parallel -> store; ray_executor -> store, parallel.

Importing this package imports neither torch nor matplotlib.
"""
