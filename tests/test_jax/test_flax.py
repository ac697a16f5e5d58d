"""spocu.flax.SPOCU (NNX) and spocu.flax.linen.SPOCU: values and raw-weight gradients against the float64
reference, a small CNN trained with optax under nnx.jit / jax.jit, state serialization round trips."""

from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
pytest.importorskip("flax", reason="Flax is not installed (pip install 'spocu[flax]')")
optax = pytest.importorskip("optax")
import flax.serialization  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import linen as nn  # noqa: E402
from flax import nnx  # noqa: E402

from learnable_reference import raw_gradients  # noqa: E402
from spocu.core import reference_spocu, reference_spocu_grad  # noqa: E402
from spocu.flax import SPOCU  # noqa: E402
from spocu.flax import linen as spocu_linen  # noqa: E402

RAWS = (np.array([0.1, 1.0, 2.5]), np.array([-0.5, 0.6, 1.7]), np.array([0.3, 1.2, 4.0]))


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 4, size=(40, 3)), rng.normal(size=(40, 3))


# ---------------------------------------------------------------- NNX


def test_fixed_module_matches_the_reference_and_has_no_params():
    x = np.linspace(-10, 20, 61)
    m = SPOCU(2.0, 0.3, 1.5, 2.0)
    np.testing.assert_allclose(
        np.asarray(m(jnp.asarray(x, jnp.float32))), reference_spocu(x, 2.0, 0.3, 1.5, 2.0), rtol=1e-5, atol=1e-5
    )
    assert nnx.state(m, nnx.Param) == nnx.State({})


def test_learnable_initializes_to_the_given_values_with_the_right_shapes():
    shared = SPOCU(learnable=True)
    per_channel = SPOCU(2.0, 0.3, 1.5, learnable=True, num_parameters=5)
    assert shared.raw_alpha.shape == () and per_channel.raw_alpha.shape == (5,)
    for m, want in ((shared, (3.0937, 0.6653, 4.437)), (per_channel, (2.0, 0.3, 1.5))):
        for got, w in zip((m.alpha, m.beta, m.gamma), want):
            np.testing.assert_allclose(np.asarray(got), w, rtol=1e-6)
    x = np.linspace(-10, 20, 61)
    np.testing.assert_allclose(
        np.asarray(shared(jnp.asarray(x, jnp.float32))), reference_spocu(x), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("c", [math.inf, 1.5])
@pytest.mark.parametrize("num_parameters", [1, 3])
def test_nnx_gradients_match_the_float64_reference(c, num_parameters):
    x, w = _data()
    with jax.enable_x64(True):
        m = SPOCU(c=c, learnable=True, num_parameters=num_parameters, param_dtype=jnp.float64)
        raws = RAWS if num_parameters == 3 else tuple(r[1] for r in RAWS)
        m.raw_alpha[...], m.raw_beta[...], m.raw_gamma[...] = (jnp.asarray(r) for r in raws)

        def loss(model, v):
            return jnp.sum(jnp.asarray(w) * model(v))

        xs = jnp.asarray(x)
        grads = nnx.grad(loss)(m, xs)
        gx = jax.grad(loss, argnums=1)(m, xs)
        y = m(xs)
        a, b, g = (np.broadcast_to(np.asarray(v), (3,)) for v in (m.alpha, m.beta, m.gamma))
    want, ref_y = raw_gradients(x, w, *raws, c)
    np.testing.assert_allclose(np.asarray(y), ref_y, rtol=1e-12, atol=1e-12)
    for name, ref in zip(("raw_alpha", "raw_beta", "raw_gamma"), want):
        np.testing.assert_allclose(np.asarray(getattr(grads, name)[...]), ref, rtol=1e-9, atol=1e-9, err_msg=name)
    ref_gx = (
        np.stack([reference_spocu_grad(x[:, j], float(a[j]), float(b[j]), float(g[j]), c) for j in range(3)], axis=1)
        * w
    )
    np.testing.assert_allclose(np.asarray(gx), ref_gx, rtol=1e-10, atol=1e-12)


class _NNXCNN(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 4, (3, 3), rngs=rngs)
        self.act = SPOCU(learnable=True, num_parameters=4)
        self.head = nnx.Linear(4, 2, rngs=rngs)

    def __call__(self, x):
        return self.head(self.act(self.conv(x)).mean(axis=(1, 2)))


def _images(n=64, seed=0):
    """Class 1: a bright 3x3 patch in the top half; class 0: in the bottom half."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 0.3, size=(n, 8, 8, 1)).astype(np.float32)
    y = rng.integers(0, 2, n)
    for i in range(n):
        row = rng.integers(0, 2) + (0 if y[i] else 5)
        col = rng.integers(0, 6)
        x[i, row : row + 3, col : col + 3, 0] += 2.0
    return jnp.asarray(x), jnp.asarray(y)


def _xent(logits, y):
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def test_nnx_cnn_trains_under_nnx_jit_with_optax_and_params_stay_in_the_domain():
    x, y = _images()
    model = _NNXCNN(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)
    start = [np.asarray(v[...]).copy() for v in (model.act.raw_alpha, model.act.raw_beta, model.act.raw_gamma)]

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: _xent(m(x), y))(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer, x, y)) for _ in range(80)]
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    moved = [
        np.abs(np.asarray(v[...]) - s).max()
        for v, s in zip((model.act.raw_alpha, model.act.raw_beta, model.act.raw_gamma), start)
    ]
    assert min(moved) > 1e-3, moved  # alpha, beta and gamma all learn
    a, b, g = (np.asarray(v) for v in (model.act.alpha, model.act.beta, model.act.gamma))
    assert (a > 0).all() and (g > 0).all() and ((b > 0) & (b < 1)).all()


def test_a_huge_step_keeps_the_parameters_in_the_domain():
    m = SPOCU(learnable=True, num_parameters=2)
    for name in ("raw_alpha", "raw_beta", "raw_gamma"):
        getattr(m, name)[...] = jnp.array([-1e4, 1e4], jnp.float32)
    a, b, g = (np.asarray(v) for v in (m.alpha, m.beta, m.gamma))
    assert (a > 0).all() and (g > 0).all() and ((b > 0) & (b < 1)).all()


def test_nnx_state_serializes_and_reloads_with_equal_outputs():
    x, y = _images(16)
    model = _NNXCNN(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)
    for _ in range(3):
        grads = nnx.grad(lambda m: _xent(m(x), y))(model)
        optimizer.update(model, grads)
    blob = flax.serialization.msgpack_serialize(nnx.to_pure_dict(nnx.state(model)))
    fresh = _NNXCNN(nnx.Rngs(1))
    assert not np.array_equal(np.asarray(fresh(x)), np.asarray(model(x)))
    state = nnx.state(fresh)
    nnx.replace_by_pure_dict(state, flax.serialization.msgpack_restore(blob))
    nnx.update(fresh, state)
    np.testing.assert_array_equal(np.asarray(fresh(x)), np.asarray(model(x)))
    np.testing.assert_array_equal(np.asarray(fresh.act.raw_beta[...]), np.asarray(model.act.raw_beta[...]))


def test_errors_are_clear():
    with pytest.raises(ValueError, match="SPOCU parameter beta=1.5"):
        SPOCU(beta=1.5)
    with pytest.raises(ValueError, match="needs learnable=True"):
        SPOCU(num_parameters=3)
    with pytest.raises(TypeError, match="learnable= must be a bool"):
        SPOCU(learnable=1)
    with pytest.raises(ValueError, match="learnable beta"):
        SPOCU(beta=1e-9, learnable=True)
    with pytest.raises(ValueError, match=r"num_parameters=3 .* shape \(2, 4\)"):
        SPOCU(learnable=True, num_parameters=3)(jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match=r"gamma=1e\+30 is out of range for a learnable gamma: .* 65504\]"):
        SPOCU(gamma=1e30, learnable=True, param_dtype=jnp.float16)
    with pytest.raises(ValueError, match="alpha=2e-06 cannot be represented by a float16 weight"):
        SPOCU(alpha=2e-6, learnable=True, param_dtype=jnp.float16)


# ---------------------------------------------------------------- Linen


@pytest.mark.parametrize("c", [math.inf, 1.5])
def test_linen_gradients_match_the_float64_reference(c):
    x, w = _data(1)
    with jax.enable_x64(True):
        m = spocu_linen.SPOCU(c=c, learnable=True, num_parameters=3, param_dtype=jnp.float64)
        variables = m.init(jax.random.key(0), jnp.asarray(x))
        for k in (0, 1, 2):
            np.testing.assert_allclose(  # initialized to the defaults
                np.asarray(m.apply(variables, jnp.asarray(x)))[:, k], reference_spocu(x[:, k], c=c), rtol=1e-12
            )
        params = {name: jnp.asarray(r) for name, r in zip(("raw_alpha", "raw_beta", "raw_gamma"), RAWS)}
        grads = jax.grad(lambda p: jnp.sum(jnp.asarray(w) * m.apply({"params": p}, jnp.asarray(x))))(params)
    want, _ = raw_gradients(x, w, *RAWS, c)
    for name, ref in zip(("raw_alpha", "raw_beta", "raw_gamma"), want):
        np.testing.assert_allclose(np.asarray(grads[name]), ref, rtol=1e-9, atol=1e-9, err_msg=name)


class _LinenCNN(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = nn.Conv(4, (3, 3))(x)
        x = spocu_linen.SPOCU(learnable=True, num_parameters=4)(x)
        return nn.Dense(2)(x.mean(axis=(1, 2)))


def test_linen_cnn_trains_under_jax_jit_and_serializes():
    x, y = _images()
    model = _LinenCNN()
    params = model.init(jax.random.key(0), x)["params"]
    tx = optax.adam(3e-2)
    opt_state = tx.init(params)
    start = jax.tree.map(np.asarray, params["SPOCU_0"])

    @jax.jit
    def step(params, opt_state):
        loss, grads = jax.value_and_grad(lambda p: _xent(model.apply({"params": p}, x), y))(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    losses = []
    for _ in range(80):
        params, opt_state, loss = step(params, opt_state)
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])
    assert min(np.abs(np.asarray(params["SPOCU_0"][k]) - start[k]).max() for k in start) > 1e-3
    blob = flax.serialization.to_bytes(params)
    template = model.init(jax.random.key(1), x)["params"]
    restored = flax.serialization.from_bytes(template, blob)
    np.testing.assert_array_equal(
        np.asarray(model.apply({"params": restored}, x)), np.asarray(model.apply({"params": params}, x))
    )


def test_linen_fixed_and_errors():
    x = np.linspace(-10, 20, 61)
    np.testing.assert_allclose(
        np.asarray(spocu_linen.SPOCU(c=1.0).apply({}, jnp.asarray(x, jnp.float32))),
        reference_spocu(x, c=1.0),
        rtol=1e-5,
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="SPOCU parameter alpha=-1"):
        spocu_linen.SPOCU(alpha=-1.0)
    with pytest.raises(ValueError, match="needs learnable=True"):
        spocu_linen.SPOCU(num_parameters=2)
