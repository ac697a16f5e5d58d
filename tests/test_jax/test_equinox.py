"""spocu.equinox.SPOCU: fixed and learnable, in eqx.nn.MLP, under filter_jit / filter_grad / vmap, against the
float64 reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax")
eqx = pytest.importorskip("equinox", reason="Equinox is not installed (pip install 'spocu[equinox]')")
optax = pytest.importorskip("optax")
import jax.numpy as jnp  # noqa: E402

from learnable_reference import raw_gradients  # noqa: E402
from spocu.core import (  # noqa: E402
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_C,
    DEFAULT_GAMMA,
    learnable_to_params,
    reference_spocu,
)
from spocu.equinox import SPOCU  # noqa: E402


def test_fixed_has_no_array_leaves_and_matches_the_reference_under_filter_jit_and_vmap():
    act = SPOCU(2.0, 0.3, 1.5, 1.0)
    assert jax.tree_util.tree_leaves(eqx.filter(act, eqx.is_array)) == []
    x = np.linspace(-10, 20, 60).reshape(6, 10)
    y = eqx.filter_jit(jax.vmap(act))(jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(np.asarray(y), reference_spocu(x, 2.0, 0.3, 1.5, 1.0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c", [math.inf, 1.5])
def test_learnable_filter_grad_matches_the_float64_reference(c):
    rng = np.random.default_rng(2)
    x, w = rng.normal(0, 4, size=(30, 3)), rng.normal(size=(30, 3))
    raws = (np.array([0.2, 1.1, 2.0]), np.array([-0.4, 0.7, 1.5]), np.array([0.5, 1.4, 3.0]))
    with jax.enable_x64(True):
        act = SPOCU(c=c, learnable=True, num_parameters=3, param_dtype=jnp.float64)
        act = eqx.tree_at(lambda m: (m.raw_alpha, m.raw_beta, m.raw_gamma), act, tuple(jnp.asarray(r) for r in raws))
        grads = eqx.filter_jit(eqx.filter_grad(lambda m, v: jnp.sum(jnp.asarray(w) * jax.vmap(m)(v))))(
            act, jnp.asarray(x)
        )
    want, _ = raw_gradients(x, w, *raws, c)
    for name, ref in zip(("raw_alpha", "raw_beta", "raw_gamma"), want):
        np.testing.assert_allclose(np.asarray(getattr(grads, name)), ref, rtol=1e-9, atol=1e-9, err_msg=name)


def test_learnable_in_mlp_gives_each_unit_its_own_parameters_with_reference_gradients():
    """eqx.nn.MLP copies the activation per hidden unit: d loss / d raw_alpha[0, j] from the float64 chain rule."""
    with jax.enable_x64(True):
        mlp = eqx.nn.MLP(
            3,
            1,
            5,
            1,
            activation=SPOCU(learnable=True, param_dtype=jnp.float64),
            key=jax.random.key(0),
            dtype=jnp.float64,
        )
        assert mlp.activation.raw_alpha.shape == (1, 5)
        x = np.random.default_rng(3).normal(0, 2, size=(7, 3))
        grads = eqx.filter_grad(lambda m, v: jnp.sum(jax.vmap(m)(v)))(mlp, jnp.asarray(x))
        w0, b0 = np.asarray(mlp.layers[0].weight), np.asarray(mlp.layers[0].bias)
        w1 = np.asarray(mlp.layers[1].weight)[0]
        raws = [
            float(np.asarray(r)[0, 0])
            for r in (mlp.activation.raw_alpha, mlp.activation.raw_beta, mlp.activation.raw_gamma)
        ]
    pre = x @ w0.T + b0  # (7, 5)
    a, b, g = (float(v) for v in learnable_to_params(*raws, np))
    np.testing.assert_allclose((a, b, g), (3.0937, 0.6653, 4.437), rtol=1e-12)  # initialized to the defaults
    want, _ = raw_gradients(pre, np.broadcast_to(w1, pre.shape), *[np.full(5, r) for r in raws], math.inf)
    for name, ref in zip(("raw_alpha", "raw_beta", "raw_gamma"), want):
        np.testing.assert_allclose(
            np.asarray(getattr(grads.activation, name))[0], ref, rtol=1e-9, atol=1e-10, err_msg=name
        )


def test_mlp_with_learnable_spocu_trains_under_filter_jit_with_optax():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(128, 2)), jnp.float32)
    y = jnp.asarray((np.asarray(x)[:, 0] * np.asarray(x)[:, 1] > 0).astype(np.float32))  # XOR-like
    model = eqx.nn.MLP(2, "scalar", 16, 2, activation=SPOCU(c=1.0, learnable=True), key=jax.random.key(1))
    opt = optax.adam(2e-2)
    state = opt.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, state):
        def loss_fn(m):
            return optax.sigmoid_binary_cross_entropy(jax.vmap(m)(x), y).mean()

        loss, grads = eqx.filter_value_and_grad(loss_fn)(model)
        updates, state = opt.update(grads, state, eqx.filter(model, eqx.is_array))
        return eqx.apply_updates(model, updates), state, loss

    start = np.asarray(model.activation.raw_gamma).copy()
    losses = []
    for _ in range(150):
        model, state, loss = step(model, state)
        losses.append(float(loss))
    assert losses[-1] < 0.6 * losses[0], (losses[0], losses[-1])
    assert np.abs(np.asarray(model.activation.raw_gamma) - start).max() > 1e-3
    a, b, g = (np.asarray(v) for v in (model.activation.alpha, model.activation.beta, model.activation.gamma))
    assert (a > 0).all() and (g > 0).all() and ((b > 0) & (b < 1)).all()


def test_errors():
    with pytest.raises(ValueError, match="SPOCU parameter gamma=0.0"):
        SPOCU(gamma=0.0)
    with pytest.raises(ValueError, match="needs learnable=True"):
        SPOCU(num_parameters=2)
    with pytest.raises(ValueError, match=r"num_parameters=2 .* shape \(3,\)"):
        SPOCU(learnable=True, num_parameters=2)(jnp.zeros(3))


def test_parameter_properties_fixed_floats_and_learnable_arrays():
    """alpha/beta/gamma: the given (or spocu.core default) floats when fixed; the mapped arrays when learnable."""
    fixed = SPOCU(2, 0.25, 1.5, 3.0)
    assert (fixed.alpha, fixed.beta, fixed.gamma, fixed.c) == (2.0, 0.25, 1.5, 3.0)
    assert all(type(v) is float for v in (fixed.alpha, fixed.beta, fixed.gamma))
    default = SPOCU()
    assert (default.alpha, default.beta, default.gamma, default.c) == (
        DEFAULT_ALPHA,
        DEFAULT_BETA,
        DEFAULT_GAMMA,
        DEFAULT_C,
    )
    with jax.enable_x64(True):
        act = SPOCU(2.0, 0.25, 1.5, learnable=True, num_parameters=3, param_dtype=jnp.float64)
        raws = (np.array([0.2, 1.1, -2.0]), np.array([-0.4, 0.7, 1.5]), np.array([0.5, 1.4, 3.0]))
        moved = eqx.tree_at(lambda m: (m.raw_alpha, m.raw_beta, m.raw_gamma), act, tuple(jnp.asarray(r) for r in raws))
        got_initial = [np.asarray(v) for v in (act.alpha, act.beta, act.gamma)]
        got_moved = [np.asarray(v) for v in (moved.alpha, moved.beta, moved.gamma)]
    for name, got, want in zip("abg", got_initial, (2.0, 0.25, 1.5)):
        assert got.shape == (3,) and got.dtype == np.float64, name
        np.testing.assert_allclose(got, np.full(3, want), rtol=1e-12, err_msg=name)  # initialized to the values given
    for name, got, want in zip("abg", got_moved, learnable_to_params(*raws, np)):
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=name)  # follow the raw leaves, float64 reference
