"""Seeds: each run's random streams derived from its seed alone.

A run draws its weights (stream :data:`STREAM_INIT`) and its batch order (stream
:data:`STREAM_ORDER`) from independent generators seeded by :func:`derive_seed`, so a seed's
runs start from the same draws whatever the activation, executor or machine.

Example:
    >>> derive_seed(0, STREAM_INIT) == derive_seed(0, STREAM_INIT) != derive_seed(1, STREAM_INIT)
    True
    >>> sorted(batch_order(0, 1, 5).tolist())
    [0, 1, 2, 3, 4]
"""

from __future__ import annotations

import numpy as np

__all__ = ["STREAM_INIT", "STREAM_ORDER", "batch_order", "derive_seed"]


def derive_seed(seed: int, *stream: int) -> int:
    """An independent 63-bit seed for one random stream of a run (``numpy.random.SeedSequence``)."""
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


#: stream ids passed to :func:`derive_seed`
STREAM_INIT, STREAM_ORDER = 1, 2


def batch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The permutation of the ``n`` training samples in ``epoch``: a function of (seed, epoch) only."""
    return np.random.default_rng(derive_seed(seed, STREAM_ORDER, epoch)).permutation(n)
