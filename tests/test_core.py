"""The math core: parameters, coefficients and the float64 reference, checked
against independent computations (exact polynomial arithmetic, mpmath)."""

import math

import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spocu import core
from spocu.core import SPOCUParams, reference_spocu, reference_spocu_grad, reference_spocu_grad2, validate_params

mpmath.mp.dps = 50


def mp_spocu(x, alpha=core.DEFAULT_ALPHA, beta=core.DEFAULT_BETA, gamma=core.DEFAULT_GAMMA, c=math.inf):
    """SPOCU in 50-digit arithmetic, straight from the definition."""

    def r(u):
        return u**3 * (u**5 - 2 * u**4 + 2)

    def h(u):
        if u < 0:
            return mpmath.mpf(0)
        if c != math.inf and u >= c:
            return r(mpmath.mpf(c))
        return r(u)

    a, b, g = (mpmath.mpf(v) for v in (alpha, beta, gamma))
    return a * h(mpmath.mpf(x) / g + b) - a * h(b)


def test_facts_from_the_issue():
    assert reference_spocu(0.0) == 0.0
    assert reference_spocu(5.0) == pytest.approx(-4.14656, abs=5e-6)
    assert reference_spocu(20.0) == pytest.approx(973685.05, abs=5e-3)
    assert reference_spocu(-np.inf) == pytest.approx(-1.58383, abs=5e-6)
    assert core.r_prime(1.0) == 0.0
    # r < 0 exactly on (1.3002, 1.8162)
    assert core.r(1.3001) > 0 > core.r(1.3003)
    assert core.r(1.8161) < 0 < core.r(1.8163)
    assert (core.r(np.linspace(1.301, 1.816, 500)) < 0).all()


def test_factored_derivative_equals_expanded():
    u = np.linspace(-2, 3, 101)
    factored = 2 * u**2 * (u - 1) * (4 * u**4 - 3 * u**3 - 3 * u**2 - 3 * u - 3)
    np.testing.assert_allclose(core.r_prime(u), factored, rtol=1e-12, atol=1e-12)


def test_coefficient_tables_match_polynomials():
    u = np.linspace(-1.5, 2.5, 41)
    for coefficients, fn in (
        (core.R_COEFFICIENTS, core.r),
        (core.R_PRIME_COEFFICIENTS, core.r_prime),
        (core.R_SECOND_COEFFICIENTS, core.r_second),
    ):
        np.testing.assert_allclose(np.polynomial.polynomial.polyval(u, coefficients), fn(u), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("c", [math.inf, 1.0, 1.5, 3.0])
def test_reference_matches_mpmath(c):
    xs = np.concatenate([np.linspace(-6, 12, 181), [-1e3, 1e3]])
    ref = reference_spocu(xs, c=c)
    exact = np.array([float(mp_spocu(x, c=c)) for x in xs])
    # The literal definition cancels near x = 0: allow eps times the size of the cancelled terms.
    u = np.clip(xs / core.DEFAULT_GAMMA + core.DEFAULT_BETA, 0, c)
    scale = core.DEFAULT_ALPHA * (np.abs(u) ** 8 + 2 * np.abs(u) ** 7 + 2 * np.abs(u) ** 3 + 1)
    assert (np.abs(ref - exact) <= 8 * 2.0**-52 * scale).all()


@pytest.mark.parametrize("c", [math.inf, 1.0, 2.5])
def test_reference_grad_matches_mpmath_derivative(c):
    p = SPOCUParams(c=c)
    xs = np.linspace(p.lower_bound + 0.01, min(p.upper_bound - 0.01, 15.0), 97)
    exact = np.array([float(mpmath.diff(lambda t: mp_spocu(t, c=c), x)) for x in xs])
    np.testing.assert_allclose(reference_spocu_grad(xs, c=c), exact, rtol=1e-10, atol=1e-10)
    exact2 = np.array([float(mpmath.diff(lambda t: mp_spocu(t, c=c), x, 2)) for x in xs])
    np.testing.assert_allclose(reference_spocu_grad2(xs, c=c), exact2, rtol=1e-9, atol=1e-9)


def test_derivative_conventions():
    p = SPOCUParams(c=2.0)
    assert reference_spocu_grad(p.upper_bound, c=2.0) == 0.0  # h'(c) = 0 at the kink
    assert reference_spocu_grad(p.upper_bound * (1 - 1e-9), c=2.0) > 0
    assert reference_spocu_grad(p.lower_bound - 1e-9) == 0.0
    assert reference_spocu_grad(-np.inf) == 0.0
    assert np.isnan(reference_spocu_grad(np.nan))
    assert reference_spocu_grad(0.0) == pytest.approx(
        (p.alpha / p.gamma)
        * 2
        * p.beta**2
        * (1 - p.beta)
        * (3 + 3 * p.beta + 3 * p.beta**2 + 3 * p.beta**3 - 4 * p.beta**4),
        rel=1e-13,
    )


def test_c1_is_bounded_and_saturates():
    p = SPOCUParams(c=1.0)
    assert reference_spocu(1e6, c=1.0) == pytest.approx(p.alpha * (1 - core.r(p.beta)), rel=1e-14)
    assert p.upper_value == pytest.approx(p.alpha * (1 - core.r(p.beta)))
    x = np.linspace(-10, 10, 2001)
    assert (np.diff(reference_spocu(x, c=1.0)) >= -1e-12).all()  # monotone for c = 1


@pytest.mark.parametrize("c", [math.inf, 1.0, 3.0])
def test_shifted_polynomial_equals_definition(c):
    p = SPOCUParams(c=c)
    xs = np.linspace(p.lower_bound, min(p.upper_bound, 30.0), 301)
    poly = np.polynomial.polynomial.polyval(xs, (0.0,) + p.x_coefficients)
    exact = np.array([float(mp_spocu(x, c=c)) for x in xs])
    np.testing.assert_allclose(poly, exact, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize(
    "kwargs, name, fragment",
    [
        ({"alpha": 0.0}, "alpha", "> 0"),
        ({"alpha": -1.0}, "alpha", "> 0"),
        ({"alpha": float("nan")}, "alpha", "> 0"),
        ({"alpha": float("inf")}, "alpha", "finite"),
        ({"beta": 0.0}, "beta", "(0, 1)"),
        ({"beta": 1.0}, "beta", "(0, 1)"),
        ({"beta": float("nan")}, "beta", "(0, 1)"),
        ({"gamma": 0.0}, "gamma", "> 0"),
        ({"gamma": -2.0}, "gamma", "> 0"),
        ({"c": 0.99}, "c", "1 <= c <= inf"),
        ({"c": float("nan")}, "c", "1 <= c <= inf"),
    ],
)
def test_bad_parameters_are_named(kwargs, name, fragment):
    with pytest.raises(ValueError) as info:
        SPOCUParams(**kwargs)
    message = str(info.value)
    assert f"{name}=" in message and fragment in message
    with pytest.raises(ValueError):
        reference_spocu(0.0, **kwargs)


def test_non_numbers_are_type_errors():
    with pytest.raises(TypeError, match="alpha"):
        validate_params(alpha="big")
    with pytest.raises(TypeError, match="beta"):
        validate_params(beta=True)


def test_edges_of_the_domain_are_allowed():
    assert validate_params(1e-9, 1e-9, 1e-9, 1.0) == (1e-9, 1e-9, 1e-9, 1.0)
    assert validate_params(c=None)[3] == math.inf


@settings(max_examples=200, deadline=None)
@given(
    alpha=st.floats(0.1, 10),
    beta=st.floats(0.01, 0.99),
    gamma=st.floats(0.1, 10),
    c=st.one_of(st.just(math.inf), st.floats(1.0, 3.0)),
    x=st.floats(-50, 50),
)
def test_properties_of_the_reference(alpha, beta, gamma, c, x):
    s = float(reference_spocu(x, alpha, beta, gamma, c))
    assert reference_spocu(0.0, alpha, beta, gamma, c) == 0.0
    lower = -alpha * float(core.r(beta))
    assert s >= lower - 1e-9 * max(1.0, abs(s)) + alpha * min(0.0, float(core.r(1.6484257))) - 1e-9
    if x <= -gamma * beta:
        assert s == pytest.approx(lower, rel=1e-12)
    if math.isfinite(c) and x >= gamma * (c - beta):
        assert s == pytest.approx(alpha * (float(core.r(c)) - float(core.r(beta))), rel=1e-9, abs=1e-9)
    # the shifted form equals the definition
    p = SPOCUParams(alpha, beta, gamma, c)
    xc = min(max(x, p.lower_bound), p.upper_bound)
    poly = float(np.polynomial.polynomial.polyval(xc, (0.0,) + p.x_coefficients))
    assert poly == pytest.approx(float(mp_spocu(x, alpha, beta, gamma, c)), rel=1e-9, abs=1e-9 * alpha)


def test_derivative_safe_bound_keeps_the_derivative_finite():
    p = SPOCUParams()
    bound = p.derivative_safe_bound(np.finfo(np.float32).max)
    assert 1e5 < bound < 1e7
    assert np.isfinite(np.float32(reference_spocu_grad(bound)))
    assert SPOCUParams(c=1.0).derivative_safe_bound(3e38) == SPOCUParams(c=1.0).upper_bound


# ---------------------------------------------------------------- supported range of fixed parameters


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"alpha": 1e308}, "alpha"),
        ({"alpha": 1e-300}, "alpha"),
        ({"gamma": 1e308}, "gamma"),
        ({"gamma": 1e-300}, "gamma"),
        ({"alpha": 1e30, "gamma": 1e-4}, "gamma"),
    ],
)
def test_in_domain_parameters_outside_the_supported_range_are_named(kwargs, name):
    """In the domain, but the float32-coefficient kernels' coefficients would overflow or flush to 0: the
    Keras and JAX adapters' parameters (cached_kernel_params) raise a ValueError naming the parameter and the range (not NaN,
    OverflowError or ZeroDivisionError)."""
    with pytest.raises(ValueError, match=rf"SPOCU parameter {name}=.* outside the supported range.*must lie in \["):
        core.cached_kernel_params(kwargs.get("alpha", 3.0937), 0.6653, kwargs.get("gamma", 4.437), None)
    SPOCUParams(**kwargs)  # the domain itself allows them: the float64 reference and shape tools still evaluate them


@pytest.mark.parametrize("alpha", [1e-30, 1e-3, core.DEFAULT_ALPHA, 1e30])
def test_the_supported_gamma_range_keeps_every_coefficient_a_float32_number(alpha):
    lo, hi = core.supported_gamma_range(alpha)
    assert lo <= 1.0 <= hi
    for gamma in (lo * (1 + 1e-12), hi * (1 - 1e-12)):
        e = np.array([alpha * d / gamma ** (k + 1) for k, d in enumerate(core.shifted_coefficients(0.6653))])
        e32 = e.astype(np.float32)
        assert np.isfinite(e32).all() and (np.abs(e32[e != 0]) >= np.finfo(np.float32).tiny).all()
        core.check_kernel_range(alpha, gamma)  # accepted
    for gamma in (lo * (1 - 1e-9), hi * (1 + 1e-9)):
        with pytest.raises(ValueError, match="gamma"):
            core.check_kernel_range(alpha, gamma)


def test_tiny_beta_is_supported_with_fixed_parameters():
    p = SPOCUParams(beta=1e-9)
    assert all(math.isfinite(e) for e in p.x_coefficients)
    assert float(np.polynomial.polynomial.polyval(1.0, (0.0,) + p.x_coefficients)) == pytest.approx(
        float(mp_spocu(1.0, beta=1e-9)), rel=1e-12
    )


# ---------------------------------------------------------------- parameter derivatives


@pytest.mark.parametrize("c", [math.inf, 1.5])
def test_reference_param_grads_match_mpmath_derivatives(c):
    alpha, beta, gamma = 1.3, 0.4, 2.2
    p = SPOCUParams(alpha, beta, gamma, c)
    xs = np.concatenate([np.linspace(p.lower_bound + 0.01, min(p.upper_bound - 0.01, 9.0), 23), [-3.0]])
    got = core.reference_spocu_param_grads(xs, alpha, beta, gamma, c)
    for i, name in enumerate(("alpha", "beta", "gamma")):

        def f(v, x):
            kw = {"alpha": alpha, "beta": beta, "gamma": gamma, name: v}
            return mp_spocu(x, c=c, **kw)

        exact = np.array(
            [float(mpmath.diff(lambda v: f(v, x), {"alpha": alpha, "beta": beta, "gamma": gamma}[name])) for x in xs]
        )
        np.testing.assert_allclose(got[i], exact, rtol=1e-9, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("c", [math.inf, 1.5])
def test_reference_param_grads_at_kinks_flat_pieces_and_infinities(c):
    """The convention: h' = 0 at the kinks, on the flat pieces and at +-inf; no NaN for a non-NaN input."""
    alpha, beta, gamma = 1.0, 0.5, 2.0
    r_prime_beta = float(core.r_prime(beta))
    xs = (
        np.array([-np.inf, -1e300, -1.0, 2.0, 1e300, np.inf]) if math.isfinite(c) else np.array([-np.inf, -1.0, np.inf])
    )
    d_alpha, d_beta, d_gamma = core.reference_spocu_param_grads(xs, alpha, beta, gamma, c)
    assert not np.isnan(np.stack([d_alpha, d_beta, d_gamma])).any()
    np.testing.assert_array_equal(d_gamma, 0.0)
    np.testing.assert_array_equal(d_beta, -alpha * r_prime_beta)
    assert d_alpha[0] == -float(core.r(beta))
    if math.isinf(c):
        assert d_alpha[-1] == np.inf  # s(+inf) = inf grows with alpha
    assert all(np.isnan(v).all() for v in core.reference_spocu_param_grads(np.nan, alpha, beta, gamma, c))


# ---------------------------------------------------------------- the learnable reparameterization


def _float64_map(raw_a, raw_b, raw_g):
    """softplus + 1e-6 and 1e-6 + (1 - 2e-6) sigmoid in 50-digit arithmetic."""
    softplus = lambda v: mpmath.log1p(mpmath.exp(v)) + mpmath.mpf("1e-6")  # noqa: E731
    beta = mpmath.mpf("1e-6") + (1 - mpmath.mpf("2e-6")) / (1 + mpmath.exp(-mpmath.mpf(raw_b)))
    return float(softplus(mpmath.mpf(raw_a))), float(beta), float(softplus(mpmath.mpf(raw_g)))


RAWS = [(-40.0, -30.0, -5.0), (-1.0, 0.0, 0.5), (3.0, 2.5, 30.0), (80.0, 16.0, 1e4)]


def _namespaces():
    import importlib.util

    out = [("numpy", np, lambda v: np.float64(v), float, 1e-12)]
    if importlib.util.find_spec("torch"):
        import torch

        out.append(("torch", torch, lambda v: torch.tensor(v, dtype=torch.float64), lambda t: float(t), 1e-12))
    if importlib.util.find_spec("jax"):
        import jax.numpy as jnp

        # float32 unless JAX's x64 mode is on
        out.append(("jax.numpy", jnp, lambda v: jnp.asarray(v), lambda t: float(np.asarray(t)), 2e-6))
    return out


@pytest.mark.parametrize("namespace", _namespaces(), ids=lambda n: n[0])
def test_learnable_to_params_matches_a_float64_computation(namespace):
    _, xp, make, value, tolerance = namespace
    for raws in RAWS:
        got = core.learnable_to_params(*(make(v) for v in raws), xp)
        expected = _float64_map(*raws)
        np.testing.assert_allclose([value(v) for v in got], expected, rtol=tolerance)
        assert 0.0 < value(got[1]) < 1.0 and value(got[0]) > 0.0 and value(got[2]) > 0.0


@pytest.mark.parametrize(
    "alpha, beta, gamma",
    [(3.0937, 0.6653, 4.437), (1e-6 * (1 + 1e-6), 2e-6, 1e-5), (1e30, 1 - 2e-6, 0.5), (1.0, 0.5, 1.0)],
)
def test_params_to_learnable_inverts_learnable_to_params(alpha, beta, gamma):
    raws = core.params_to_learnable(alpha, beta, gamma)
    assert all(math.isfinite(v) and abs(v) <= np.finfo(np.float32).max for v in raws)
    np.testing.assert_allclose(_float64_map(*raws), (alpha, beta, gamma), rtol=1e-9)


@pytest.mark.parametrize(
    "kwargs, name, interval",
    [
        ({"beta": 1e-9}, "beta", "(1e-06, 0.999999)"),
        ({"beta": 1 - 1e-7}, "beta", "(1e-06, 0.999999)"),
        ({"alpha": 1e-6}, "alpha", "(1e-06, 3.40282e+38]"),
        ({"alpha": 5e-7}, "alpha", "(1e-06, 3.40282e+38]"),
        ({"gamma": 1e-300}, "gamma", "(1e-06, 3.40282e+38]"),
        ({"alpha": 1e39}, "alpha", "(1e-06, 3.40282e+38]"),
    ],
)
def test_params_to_learnable_names_the_supported_range(kwargs, name, interval):
    values = {"alpha": 1.0, "beta": 0.5, "gamma": 1.0, **kwargs}
    with pytest.raises(ValueError) as info:
        core.params_to_learnable(**values)
    assert f"SPOCU parameter {name}=" in str(info.value) and interval in str(info.value)


def test_params_to_learnable_respects_the_weights_dtype():
    with pytest.raises(ValueError, match=r"alpha=.*\(1e-06, 65504\]"):
        core.params_to_learnable(1e5, 0.5, 1.0, max_value=65504.0)
    assert core.params_to_learnable(1e5, 0.5, 1.0, max_value=1.8e308)[0] == pytest.approx(1e5)


def test_unknown_array_namespace_is_a_type_error():
    with pytest.raises(TypeError, match="namespace"):
        core.learnable_to_params(0.0, 0.0, 0.0, math)
