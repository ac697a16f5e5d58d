"""spocu.jax.spocu under jax.jit: static Python-number parameters, traced c refused, traced parameters
outside the domain give NaN (values and derivatives), never plausible numbers."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="JAX is not installed (pip install 'spocu[jax]')")
import jax.numpy as jnp  # noqa: E402

from spocu.core import reference_spocu, reference_spocu_grad  # noqa: E402
from spocu.jax import spocu  # noqa: E402

X = jnp.linspace(-8.0, 16.0, 97)
X64 = np.asarray(X, np.float64)


def test_traced_c_is_refused_naming_the_fix():
    with pytest.raises(TypeError, match=r"static_argnames.*functools\.partial"):
        jax.jit(spocu)(X, c=1.0)


def test_static_python_parameters_match_the_reference():
    kwargs = {"alpha": 2.0, "beta": 0.3, "gamma": 1.5, "c": 1.0}
    ref = reference_spocu(X64, **kwargs)
    by_name = jax.jit(spocu, static_argnames=("alpha", "beta", "gamma", "c"))(X, **kwargs)
    by_partial = jax.jit(functools.partial(spocu, **kwargs))(X)
    for y in (by_name, by_partial):
        np.testing.assert_allclose(np.asarray(y), ref, rtol=1e-5, atol=1e-5)


def test_static_parameters_are_still_validated():
    with pytest.raises(ValueError, match="SPOCU parameter alpha=-1.0"):
        jax.jit(spocu, static_argnames=("alpha",))(X, alpha=-1.0)


def test_traced_python_parameters_take_the_array_path_and_match_the_reference():
    y = jax.jit(spocu)(X, 2.0, 0.3, 1.5)  # alpha, beta, gamma traced; c static by default
    np.testing.assert_allclose(np.asarray(y), reference_spocu(X64, 2.0, 0.3, 1.5), rtol=1e-5, atol=1e-5)
    g = jax.jit(jax.vmap(jax.grad(spocu), in_axes=(0, None, None, None)))(X, 2.0, 0.3, 1.5)
    np.testing.assert_allclose(np.asarray(g), reference_spocu_grad(X64, 2.0, 0.3, 1.5), rtol=1e-5, atol=1e-5)


BAD = [
    ("alpha", -1.0),
    ("alpha", 0.0),
    ("alpha", math.inf),
    ("beta", 0.0),
    ("beta", 1.0),
    ("beta", 1.5),
    ("beta", math.nan),
    ("gamma", -2.0),
    ("gamma", 0.0),
    ("gamma", math.nan),
]


@pytest.mark.parametrize(("name", "value"), BAD)
def test_traced_parameters_outside_the_domain_give_nan(name, value):
    y = jax.jit(lambda x, v: spocu(x, **{name: v}))(X, value)
    assert np.isnan(np.asarray(y)).all()
    # and the derivatives (x and the parameter), forward and reverse
    grads = jax.grad(lambda x, v: spocu(x, **{name: v}).sum(), argnums=(0, 1))(X, value)
    assert all(np.isnan(np.asarray(gr)).all() for gr in grads)
    # (a concrete array is validated eagerly, so trace it: jvp inside jit)
    _, tangent = jax.jit(lambda x, v: jax.jvp(lambda u: spocu(u, **{name: v}), (x,), (jnp.ones_like(x),)))(X, value)
    assert np.isnan(np.asarray(tangent)).all()


def test_nan_only_where_a_per_feature_parameter_is_bad():
    x = jnp.asarray(np.random.default_rng(0).normal(0, 3, size=(6, 3)), jnp.float32)
    alpha = jnp.array([1.0, -1.0, 2.0])  # the middle feature is outside the domain
    y = np.asarray(jax.jit(spocu)(x, alpha))
    assert np.isnan(y[:, 1]).all() and np.isfinite(y[:, [0, 2]]).all()
    for j in (0, 2):
        np.testing.assert_allclose(
            y[:, j], reference_spocu(np.asarray(x[:, j], np.float64), float(alpha[j])), rtol=1e-5, atol=1e-5
        )
    g = np.asarray(jax.grad(lambda a: jax.jit(spocu)(x, a).sum())(alpha))
    assert np.isnan(g[1]) and np.isfinite(g[[0, 2]]).all()


@pytest.mark.parametrize(("name", "value"), [("alpha", -1.0), ("beta", 1.5), ("gamma", 0.0)])
def test_concrete_array_parameters_outside_the_domain_raise(name, value):
    with pytest.raises(ValueError, match=f"SPOCU parameter {name}={value!r} is out of range"):
        spocu(X, **{name: jnp.array([1.0, value]) if name != "beta" else jnp.array([0.5, value])})
