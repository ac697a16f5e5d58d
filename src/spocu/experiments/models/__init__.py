"""The models a comparison trains: built-in PyTorch and Keras networks, and the user's factories.

- :mod:`~spocu.experiments.models.spec`: :class:`~spocu.experiments.models.spec.ModelSpec` (no framework);
- :mod:`~spocu.experiments.models.factories`: loading and checking a user's ``MODULE:FUNCTION`` factory;
- :mod:`~spocu.experiments.models.torch_models` / :mod:`~spocu.experiments.models.keras_models`: the
  built-in networks, their initialization, and a factory's model built (and swapped) in that framework.

Imports nothing from ``data``, ``run`` or ``results``.
"""
