"""Training the runs: engines, executors, the runner and the output directory.

- :mod:`~spocu.experiments.run.engine`: the framework-neutral engine interface and run schema;
  :mod:`~spocu.experiments.run.torch_engine` and :mod:`~spocu.experiments.run.keras_engine` implement it;
- :mod:`~spocu.experiments.run.executors`: where runs train, by name:
  :mod:`~spocu.experiments.run.parallel` (worker processes, ``--jobs``),
  :mod:`~spocu.experiments.run.ray_executor` (one Ray task per run),
  :mod:`~spocu.experiments.run.distributed` (one run data-parallel over ``torchrun``);
- :mod:`~spocu.experiments.run.runner`: the plan of (activation, seed) runs, resumable;
- :mod:`~spocu.experiments.run.store`: the output directory, its protocol, lock and run files. It
  lives here, not in ``results``, because the runs' workers write their run files into it;
- :mod:`~spocu.experiments.run.inputs`: the user's data and model loaded, fingerprinted and checked
  before anything is written.

Imports ``data`` and ``models``, never ``results``.
"""
