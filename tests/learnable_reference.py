"""Float64 reference for the gradients of learnable SPOCU's raw weights (the softplus/sigmoid map, chain rule)."""

from __future__ import annotations

import numpy as np

from spocu.core import (
    LEARNABLE_MARGIN,
    learnable_to_params,
    reference_spocu,
    reference_spocu_grad,
    reference_spocu_param_grads,
)


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


#: (alpha, beta, gamma): ordinary, and alpha/gamma = 1e-3 (s' fits float32 far beyond where r'(u) does)
TAIL_PARAMS = [(1.3, 0.4, 0.7), (0.01, 0.4, 10.0)]


def tail_points(params, c, dtype=np.float32):
    """float32 inputs x at u = x/gamma + beta ordinary, around u_cap (2.7e4), where s' fits float32 but
    r'(u) does not (3e5), beyond float32, and huge; a finite x whose x/gamma overflows (gamma < 1);
    around the top kink when c is finite; +-inf."""
    _, beta, gamma = params
    us = [0.3, 1.2, 3.0, 2.0e4, 5.4e4, 1e5, 3e5, 1e6, 1e30]
    if np.isfinite(c):
        us += [c * (1 - 1e-3), c * (1 + 1e-3)]
    xs = [(u - beta) * gamma for u in us] + [0.9 * float(np.finfo(dtype).max), np.inf, -np.inf]
    return np.asarray(xs, dtype=dtype)


def check_partials_beyond_the_cap(partials_at, c, dtype=np.float32, rtol=2e-5):
    """``partials_at(x, alpha, beta, gamma)`` -> (ds/dx, ds/dalpha, ds/dbeta, ds/dgamma) at one point x
    (of ``dtype``): equal to the float64 reference where it fits ``dtype``, saturated at +-max with its
    sign where it does not, never NaN; at every :func:`tail_points` of both :data:`TAIL_PARAMS`."""
    big = float(np.finfo(dtype).max)
    for params in TAIL_PARAMS:
        a, b, g = params
        for x in tail_points(params, c, dtype):
            got = np.asarray([float(v) for v in partials_at(x, a, b, g)])
            xs = np.asarray([float(x)])
            with np.errstate(over="ignore", invalid="ignore"):
                ref = np.asarray(
                    [
                        reference_spocu_grad(xs, a, b, g, c)[0],
                        *(r[0] for r in reference_spocu_param_grads(xs, a, b, g, c)),
                    ]
                )
            what = f"x={float(x)!r} alpha={a} beta={b} gamma={g} c={c}: got {got}, reference {ref}"
            assert not np.isnan(got).any(), what
            over = np.abs(ref) > big
            np.testing.assert_array_equal(got[over], np.sign(ref[over]) * big, err_msg=what)
            np.testing.assert_allclose(got[~over], ref[~over], rtol=rtol, atol=0, err_msg=what)
