"""spocu.jax.spocu against the float64 reference: values, derivatives, transforms, residuals."""

from __future__ import annotations

import math

import numpy as np
import pytest

jax = pytest.importorskip("jax", reason="JAX is not installed (pip install 'spocu[jax]')")
import jax.numpy as jnp  # noqa: E402
from jax.ad_checkpoint import print_saved_residuals  # noqa: E402

from reference_checks import PARAM_SETS, assert_matches_reference, wide_inputs  # noqa: E402
from spocu.core import (  # noqa: E402
    SPOCUParams,
    reference_spocu,
    reference_spocu_grad,
    reference_spocu_grad2,
    reference_spocu_param_grads,
)
from spocu.jax import spocu  # noqa: E402

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def _value_and_grad(x64: np.ndarray, dtype, params: SPOCUParams):
    x = jnp.asarray(x64).astype(dtype)
    y, vjp = jax.vjp(lambda v: spocu(v, **params.as_dict()), x)
    (g,) = vjp(jnp.ones_like(y))
    as64 = lambda a: np.asarray(a.astype(jnp.float32) if a.dtype != jnp.float64 else a, dtype=np.float64)  # noqa: E731
    return as64(x), as64(y), as64(g), y


@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("param_name", list(PARAM_SETS))
def test_forward_and_gradient_match_reference(dtype_name, param_name):
    params = PARAM_SETS[param_name]
    x_in, y, g, out = _value_and_grad(wide_inputs(dtype_name, params), DTYPES[dtype_name], params)
    assert out.dtype == DTYPES[dtype_name]
    assert_matches_reference(x_in, y, params, dtype_name)
    assert_matches_reference(x_in, g, params, dtype_name, derivative=True)


@pytest.mark.parametrize("param_name", list(PARAM_SETS))
def test_float64_forward_gradient_and_second_derivative(param_name):
    params = PARAM_SETS[param_name]
    with jax.enable_x64(True):
        x = jnp.asarray(wide_inputs("float64", params), dtype=jnp.float64)
        f = lambda v: spocu(v, **params.as_dict())  # noqa: E731
        y = f(x)
        g = jax.vmap(jax.grad(f))(x)
        g2 = jax.vmap(jax.grad(jax.grad(f)))(x)
        assert y.dtype == jnp.float64 and g.dtype == jnp.float64
        x64 = np.asarray(x)
        assert_matches_reference(x64, np.asarray(y), params, "float64")
        assert_matches_reference(x64, np.asarray(g), params, "float64", derivative=True)
        # s'' on the interior of the active piece, away from the kinks
        inner = (x64 > params.lower_bound + 1e-3) & (x64 < min(params.upper_bound, 50.0) - 1e-3)
        ref2 = reference_spocu_grad2(x64[inner], **params.as_dict())
        np.testing.assert_allclose(np.asarray(g2)[inner], ref2, rtol=1e-9, atol=1e-12 * np.abs(ref2).max())


def test_jit_vmap_grad_and_forward_mode_agree_with_reference():
    params = SPOCUParams(c=2.0)
    x = jnp.linspace(-6.0, 12.0, 301)
    f = lambda v: spocu(v, c=2.0)  # noqa: E731
    g_rev = jax.jit(jax.vmap(jax.grad(f)))(x)
    _, g_fwd = jax.jvp(f, (x,), (jnp.ones_like(x),))
    hess_diag = jnp.diag(jax.hessian(lambda v: f(v).sum())(x[:7]))
    for g in (g_rev, g_fwd):
        assert_matches_reference(np.asarray(x, np.float64), np.asarray(g), params, "float32", derivative=True)
    assert np.all(np.isfinite(np.asarray(hess_diag)))
    np.testing.assert_allclose(
        np.asarray(jax.jit(f)(x)), reference_spocu(np.asarray(x, np.float64), c=2.0), rtol=1e-5, atol=1e-5
    )


def test_reverse_mode_saves_only_the_input(capsys):
    x = jnp.linspace(-3.0, 3.0, 7)
    print_saved_residuals(lambda v: spocu(v).sum(), x)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 1 and "from the argument" in lines[0], lines
    # composed: spocu(sin(x)) keeps sin's output (spocu's input) and sin's own cos, nothing of its own
    print_saved_residuals(lambda v: spocu(jnp.sin(v)).sum(), x)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert sorted(ln.split(" output of ")[-1].split(" ")[0] for ln in lines) == ["cos", "sin"], lines


@pytest.mark.parametrize("params", list(PARAM_SETS.values()), ids=list(PARAM_SETS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize("upstream", [0.0, 1.0, -3.0])
def test_no_nan_gradient_for_any_finite_input(params, dtype, upstream):
    info = jnp.finfo(dtype)
    x = jnp.array(
        [float(info.min), -1e4, -1.0, -float(info.tiny), 0.0, float(info.tiny), 1.0, 100.0, 1e4, float(info.max)],
        dtype=jnp.float32,
    ).astype(dtype)
    _, vjp = jax.vjp(lambda v: spocu(v, **params.as_dict()), x)
    (g,) = vjp(jnp.full(x.shape, upstream, dtype))
    assert not np.isnan(np.asarray(g, np.float32)).any(), g


@pytest.mark.parametrize("c", [math.inf, 1.0])
def test_nan_and_infinities(c):
    x = jnp.array([jnp.nan, jnp.inf, -jnp.inf])
    y = spocu(x, c=c)
    g = jax.vmap(jax.grad(lambda v: spocu(v, c=c)))(x)
    ref = reference_spocu(np.asarray(x, np.float64), c=c)
    assert math.isnan(float(y[0])) and math.isnan(float(g[0]))
    assert float(y[1]) == (math.inf if math.isinf(ref[1]) else pytest.approx(ref[1], rel=1e-5))
    assert float(y[2]) == pytest.approx(ref[2], rel=1e-5)
    assert float(g[2]) == 0.0


def test_array_parameters_are_differentiable_and_match_finite_differences():
    """Gradients w.r.t. alpha, beta, gamma against central differences of the float64 reference."""
    with jax.enable_x64(True):
        x = jnp.array([-5.0, -1.0, -0.1, 0.0, 0.3, 2.0, 7.0, 12.0], dtype=jnp.float64)
        theta = jnp.array([2.0, 0.4, 1.5])
        for c in (math.inf, 3.0):
            loss = lambda th: spocu(x, th[0], th[1], th[2], c).sum()  # noqa: E731
            ref_loss = lambda th: reference_spocu(np.asarray(x), *th, c=c).sum()  # noqa: E731
            np.testing.assert_allclose(float(loss(theta)), ref_loss(np.asarray(theta)), rtol=1e-12)
            h = 1e-6
            fd = [
                (ref_loss(np.asarray(theta) + h * e) - ref_loss(np.asarray(theta) - h * e)) / (2 * h) for e in np.eye(3)
            ]
            np.testing.assert_allclose(np.asarray(jax.grad(loss)(theta)), fd, rtol=1e-6)
            # d/dx on the array path agrees with the reference derivative too
            gx = jax.grad(lambda v: spocu(v, theta[0], theta[1], theta[2], c).sum())(x)
            np.testing.assert_allclose(
                np.asarray(gx), reference_spocu_grad(np.asarray(x), *np.asarray(theta), c=c), rtol=1e-12, atol=1e-14
            )


def test_array_parameters_broadcast_per_feature():
    x = jnp.asarray(np.random.default_rng(0).normal(0, 4, size=(5, 3)), jnp.float32)
    alpha, beta, gamma = jnp.array([1.0, 2.0, 3.0]), jnp.array([0.2, 0.5, 0.8]), jnp.array([1.0, 4.0, 0.5])
    y = spocu(x, alpha, beta, gamma)
    for j in range(3):
        np.testing.assert_allclose(
            np.asarray(y[:, j]),
            reference_spocu(np.asarray(x[:, j], np.float64), float(alpha[j]), float(beta[j]), float(gamma[j])),
            rtol=2e-5,
            atol=1e-5,
        )


def test_half_precision_is_computed_in_float32():
    # 1.5 in float16: computing P in float16 would lose ~3 digits; float32 inside gives the rounded reference
    x = jnp.array([1.5, 3.0, -2.0], dtype=jnp.float16)
    y = spocu(x)
    assert y.dtype == jnp.float16
    expected = reference_spocu(np.asarray(x, np.float64)).astype(np.float16)
    np.testing.assert_array_equal(np.asarray(y), expected)


def test_integer_inputs_promote_and_complex_is_refused():
    y = spocu(jnp.arange(-3, 4))
    assert jnp.issubdtype(y.dtype, jnp.floating)
    np.testing.assert_allclose(np.asarray(y), reference_spocu(np.arange(-3, 4.0)), rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="real"):
        spocu(jnp.zeros(2, jnp.complex64))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"alpha": 0.0}, "alpha"),
        ({"beta": 1.0}, "beta"),
        ({"gamma": -2.0}, "gamma"),
        ({"c": 0.5}, "c"),
        ({"beta": float("nan")}, "beta"),
        ({"alpha": 1e308}, "alpha"),
        ({"gamma": 1e308}, "gamma"),
        ({"gamma": 1e-300}, "gamma"),
    ],
)
def test_invalid_parameters_raise_the_core_error(kwargs, name):
    from spocu.core import cached_kernel_params

    full = {"alpha": 3.0937, "beta": 0.6653, "gamma": 4.437, "c": None, **kwargs}
    with pytest.raises(ValueError) as err:
        cached_kernel_params(full["alpha"], full["beta"], full["gamma"], full["c"])
    with pytest.raises(ValueError, match=f"SPOCU parameter {name}=") as ours:
        spocu(jnp.ones(2), **kwargs)
    assert str(ours.value) == str(err.value)


def test_shapes_are_kept():
    for shape in [(), (0,), (3,), (2, 3, 4)]:
        assert spocu(jnp.zeros(shape)).shape == shape


def _per_element(x, a, b, g, c):
    """(y, dy/dx, dy/da, dy/db, dy/dg) elementwise, with one parameter per element."""
    full = [jnp.full(x.shape, p, x.dtype) for p in (a, b, g)]
    y, vjp = jax.vjp(lambda *v: spocu(v[0], *v[1:], c=c), x, *full)
    return (y, *vjp(jnp.ones_like(y)))


@pytest.mark.parametrize("c", [math.inf, 1.5])
def test_array_parameter_derivatives_match_the_reference_on_a_dense_grid(c):
    alpha, beta, gamma = 1.25, 0.375, 2.5  # binary fractions: the kinks -0.9375 and (c = 1.5) 2.8125 are exact
    p = SPOCUParams(alpha, beta, gamma, c)
    with jax.enable_x64(True):
        x = jnp.asarray(
            np.concatenate([np.linspace(-4.0, 9.0, 521), [p.lower_bound], [p.upper_bound] if math.isfinite(c) else []])
        )
        y, gx, ga, gb, gg = (np.asarray(v) for v in _per_element(x, alpha, beta, gamma, c))
    x64 = np.asarray(x)
    np.testing.assert_allclose(y, reference_spocu(x64, alpha, beta, gamma, c), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gx, reference_spocu_grad(x64, alpha, beta, gamma, c), rtol=1e-12, atol=1e-13)
    for got, ref in zip((ga, gb, gg), reference_spocu_param_grads(x64, alpha, beta, gamma, c)):
        # the reference's r'(u) - r'(beta) cancels near x = 0: allow eps times the size of the terms
        scale = np.abs(ref) + alpha * np.abs(reference_spocu_grad(x64, alpha, beta, gamma, c)) * (1 + np.abs(x64))
        assert (np.abs(got - ref) <= 1e-12 * scale + 1e-14).all()
    kinks = (x64 == p.lower_bound) | (x64 == p.upper_bound)
    assert kinks.sum() == (1 if math.isinf(c) else 2)
    assert (gx[kinks] == 0).all() and (gg[kinks] == 0).all()


@pytest.mark.parametrize("upstream", [0.0, 1.0])
def test_array_parameters_never_give_nan_for_non_nan_inputs(upstream):
    """Differentiating x alone, one parameter alone, or everything, in forward and reverse mode."""
    x = jnp.array([-jnp.inf, -3e38, -1e30, -1.0, 0.0, 2.0, 1e30, 3e38, jnp.inf], jnp.float32)
    ones = jnp.ones_like(x)
    for c in (math.inf, 1.5):
        a, b, g = jnp.float32(1.0), jnp.float32(0.5), jnp.float32(2.0)
        results = []
        for argnums in [(0,), (1,), (2,), (3,), (0, 1, 2, 3)]:
            _, vjp = jax.vjp(lambda *v: spocu(v[0], v[1], v[2], v[3], c), x, a * ones, b * ones, g * ones)
            grads = vjp(jnp.full(x.shape, upstream, x.dtype))
            results += [grads[i] for i in argnums]
        _, tangent = jax.jvp(lambda v: spocu(v, a, b, g, c), (x,), (ones,))
        results.append(tangent)
        for r in results:
            assert not np.isnan(np.asarray(r)).any(), (c, r)


def test_array_parameters_forward_mode_equals_reverse_mode():
    with jax.enable_x64(True):
        x = jnp.asarray(np.linspace(-3.0, 6.0, 37))
        params = (jnp.float64(1.3), jnp.float64(0.4), jnp.float64(2.2))
        f = lambda v, a, b, g: spocu(v, a, b, g, 3.0)  # noqa: E731
        tangents = (jnp.ones_like(x), jnp.float64(0.3), jnp.float64(-0.7), jnp.float64(1.1))
        _, forward = jax.jvp(f, (x, *params), tangents)
        _, vjp = jax.vjp(f, x, *params)
        for i, e in enumerate(np.eye(len(x))):  # row i of the Jacobian, dotted with the tangents
            grads = vjp(jnp.asarray(e))
            reverse = sum(float(jnp.sum(gr * t)) for gr, t in zip(grads, tangents))
            assert float(forward[i]) == pytest.approx(reverse, rel=1e-12, abs=1e-14)
            if i > 4:
                break
        g2 = jax.vmap(jax.grad(jax.grad(lambda v: f(v, *params))))(x)
        np.testing.assert_allclose(
            np.asarray(g2), reference_spocu_grad2(np.asarray(x), 1.3, 0.4, 2.2, 3.0), rtol=1e-10, atol=1e-12
        )


@pytest.mark.parametrize("c", [math.inf, 5e4], ids=["cinf", "c5e4"])
def test_array_parameter_partials_beyond_the_cap_equal_the_reference_or_saturate(c):
    """Beyond u_cap (2.7e4 in float32) each partial is exact where float32 holds it, also where r'(u)
    alone does not (alpha/gamma = 1e-3 at u = 3e5), and saturates with its sign where it overflows; a
    finite x whose x/gamma overflows is not flat (as on the torch paths)."""
    from learnable_reference import check_partials_beyond_the_cap

    def partials_at(x, a, b, g):
        f = lambda *args: spocu(*args, c=c)  # noqa: E731
        return jax.grad(f, argnums=(0, 1, 2, 3))(jnp.float32(x), *(jnp.float32(p) for p in (a, b, g)))

    check_partials_beyond_the_cap(partials_at, c)
