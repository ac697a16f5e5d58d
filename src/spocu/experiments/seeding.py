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

__all__ = [
    "STREAM_INIT",
    "STREAM_ORDER",
    "STREAM_SPLIT",
    "batch_bounds",
    "batch_order",
    "derive_seed",
    "merges_last_batch",
    "split_seed_for",
]


def derive_seed(seed: int, *stream: int) -> int:
    """An independent 63-bit seed for one random stream of a run (``numpy.random.SeedSequence``)."""
    return int(np.random.SeedSequence([seed, *stream]).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


#: stream ids passed to :func:`derive_seed`
STREAM_INIT, STREAM_ORDER, STREAM_SPLIT = 1, 2, 3


def batch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The permutation of the ``n`` training samples in ``epoch``: a function of (seed, epoch) only."""
    return np.random.default_rng(derive_seed(seed, STREAM_ORDER, epoch)).permutation(n)


def merges_last_batch(n: int, batch_size: int) -> bool:
    """Whether an epoch of ``n`` samples in batches of ``batch_size`` would end on a batch of one sample.

    Such a batch is merged into the one before it (:func:`batch_bounds`): batch statistics
    (BatchNorm in training mode) are undefined for a single sample. The protocol records it
    (``last_batch: "merged"``), so runs on the old plan are not pooled with these.
    """
    return n > 1 and batch_size > 1 and n % batch_size == 1


def batch_bounds(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of each training batch of an epoch of ``n`` samples.

    Batches of ``batch_size``; a last batch of exactly one sample joins the batch before it
    (``batch_size + 1`` samples), so no training step ever sees a single sample -- unless the
    whole training set is one sample or ``batch_size`` is 1 (asked for).

    Example:
        >>> batch_bounds(7, 3), batch_bounds(6, 3)
        ([(0, 3), (3, 7)], [(0, 3), (3, 6)])
    """
    bounds = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
    if merges_last_batch(n, batch_size):
        bounds[-2:] = [(bounds[-2][0], n)]
    return bounds


def split_seed_for(split_seed: int, seed: int) -> int:
    """The ``random_state`` (< 2**32, as scikit-learn takes it) of run seed ``seed``'s own data split (``--split per-seed``).

    Example:
        >>> split_seed_for(0, 1) == split_seed_for(0, 1) != split_seed_for(0, 2)
        True
    """
    return derive_seed(seed, STREAM_SPLIT, split_seed) % 2**32
