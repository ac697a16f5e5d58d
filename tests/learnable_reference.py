"""Float64 reference for the gradients of learnable SPOCU's raw weights (the softplus/sigmoid map, chain rule)."""

from __future__ import annotations

import numpy as np

from spocu.core import LEARNABLE_MARGIN, learnable_to_params, reference_spocu, reference_spocu_param_grads


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-np.asarray(v, np.float64)))


def raw_gradients(x, upstream, raw_alpha, raw_beta, raw_gamma, c):
    """d/d raw of sum(upstream * s(x)), per channel on the last axis (scalars: one shared set); and s(x)."""
    x = np.asarray(x, np.float64)
    upstream = np.broadcast_to(np.asarray(upstream, np.float64), x.shape)
    raws = [np.atleast_1d(np.asarray(r, np.float64)) for r in (raw_alpha, raw_beta, raw_gamma)]
    shared = np.ndim(raw_alpha) == 0
    xs = x.reshape(-1, 1) if shared else x.reshape(-1, x.shape[-1])
    us = upstream.reshape(xs.shape)
    grads = np.zeros((3, raws[0].size))
    out = np.empty_like(xs)
    for j in range(raws[0].size):
        a, b, g = (float(v) for v in learnable_to_params(raws[0][j], raws[1][j], raws[2][j], np))
        out[:, j] = reference_spocu(xs[:, j], a, b, g, c)
        d_a, d_b, d_g = reference_spocu_param_grads(xs[:, j], a, b, g, c)
        sa, sb, sg = _sigmoid(raws[0][j]), _sigmoid(raws[1][j]), _sigmoid(raws[2][j])
        chain = (sa, (1.0 - 2.0 * LEARNABLE_MARGIN) * sb * (1.0 - sb), sg)
        for k, (d, factor) in enumerate(zip((d_a, d_b, d_g), chain)):
            grads[k, j] = float(np.sum(us[:, j] * d)) * factor
    if shared:
        return tuple(float(g[0]) for g in grads), out.reshape(x.shape)
    return tuple(grads), out.reshape(x.shape)
