"""``python -m pytest -p block_imports``: run the suite as if optional packages were not installed.

``SPOCU_BLOCK`` names them (comma-separated; default: the frameworks and table readers that
the ``dev`` extra adds). A ``None`` entry in ``sys.modules`` makes ``import x`` raise
``ModuleNotFoundError`` and ``importlib.util.find_spec("x")`` return ``None``, as for a package
that is absent, so every test and docstring example that needs one is skipped with the reason
(see the root ``conftest.py``). Needs ``tests/`` on ``PYTHONPATH`` (``-p`` loads it before any
conftest): ``PYTHONPATH=tests SPOCU_BLOCK=keras,jax python -m pytest -p block_imports``.

Importing this module does nothing (``--doctest-modules`` imports every file of tests/): the
packages are blocked only when pytest loads it as a plugin and calls :func:`pytest_configure`.
"""

import os
import sys

DEFAULT = "keras,tensorflow,jax,jaxlib,flax,equinox,optax,pandas,pyarrow,ray"


def pytest_configure(config):
    for name in os.environ.get("SPOCU_BLOCK", DEFAULT).split(","):
        if name.strip():
            sys.modules[name.strip()] = None
