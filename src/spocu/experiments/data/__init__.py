"""The data a comparison trains on: built-in datasets, downloads, file formats, the user's own data, splits.

- :mod:`~spocu.experiments.data.datasets`: :class:`~spocu.experiments.data.datasets.Dataset`, the
  built-in wdbc, digits, mnist and cifar10, and the train/validation/test split;
- :mod:`~spocu.experiments.data.download`: fetch and verify (checksums, atomic writes);
- :mod:`~spocu.experiments.data.formats`: IDX files, CIFAR pickles (restricted unpickler), ``mnist.npz``;
- :mod:`~spocu.experiments.data.user_data`: the user's tables (csv, parquet), npz arrays and image folders.

Imports nothing from the rest of ``spocu.experiments`` but its base modules (errors, seeding).
"""
