"""spocu.science.fit: fitted values checked by independent computations (mpmath, Monte Carlo,
published SELU constants), the no-solution report, uniqueness and bad requests."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

import spocu
from science_independent import monte_carlo_moments, mp_normal_moments, mp_spocu
from spocu.science import PARETO_RECIPE, Condition, Normal, NoSolutionError, Pareto, Samples, fit, jacobian
from spocu.science.families import SPOCU


@pytest.fixture(scope="module")
def default_fit():
    return fit()


def test_default_fit_recovers_the_known_solution(default_fit):
    r = default_fit
    assert r.solved and r.unique
    assert r.free == ("alpha", "beta") and r.fixed == {"gamma": 4.437, "c": math.inf}
    # the quick scipy check and the reference notes (§2.3): α = 3.245827, β = 0.667237
    assert r.alpha == pytest.approx(3.245827, abs=2e-6)
    assert r.beta == pytest.approx(0.667237, abs=2e-6)
    assert r.max_residual < 1e-8


def test_default_fit_moments_by_mpmath_quadrature(default_fit):
    p = default_fit.parameters
    m1, m2 = mp_normal_moments(p["alpha"], p["beta"], p["gamma"], p["c"])
    assert abs(m1) < 1e-10 and abs(m2 - 1.0) < 1e-10


def test_default_fit_moments_by_monte_carlo(default_fit):
    z = np.random.default_rng(20240501).standard_normal(1_000_000)
    mean, se_mean, second, se_second = monte_carlo_moments(z, default_fit.parameters)
    assert abs(mean) < 5 * se_mean
    assert abs(second - 1.0) < 5 * se_second
    # and the copied defaults are measurably off the fixed point (issue: E[s^2] ≈ 0.908)
    mean_d, _, second_d, se_d = monte_carlo_moments(z, SPOCU.defaults)
    assert abs(second_d - 0.908) < 5 * se_d and second_d < 1 - 10 * se_d


@pytest.mark.slow
def test_c1_fit_matches_reference_notes():
    r = fit(fixed={"c": 1.0})
    assert r.solved and r.unique
    assert (r.alpha, r.beta) == pytest.approx((3.222326, 0.688995), abs=2e-6)
    m1, m2 = mp_normal_moments(r.alpha, r.beta, r.gamma, 1.0)
    assert abs(m1) < 1e-10 and abs(m2 - 1.0) < 1e-10


def test_selu_constants_are_recovered_by_the_same_solver():
    r = fit(family="selu")
    assert r.solved and r.unique
    # Klambauer et al. (2017): λ01 ≈ 1.0507009873554805, α01 ≈ 1.6732632423543772
    assert r.parameters["lambda"] == pytest.approx(1.0507009873554805, abs=1e-9)
    assert r.parameters["alpha"] == pytest.approx(1.6732632423543772, abs=1e-9)
    # their Jacobian at the fixed point (ω = 0, τ = 1): [[0, 0.088834], [0, 0.782648]]
    np.testing.assert_allclose(r.jacobian, [[0.0, 0.088834], [0.0, 0.782648]], atol=2e-6)
    assert r.norms["norm_2"] == pytest.approx(0.7877, abs=1e-4)
    assert r.stable


def test_jacobian_matches_the_heat_equation_identity():
    """For z ~ N(0, v): d/dv E[f(z)] = E[f''(z)]/2, so J = [[·, E s''/2], [·, E(s'^2 + s s'')]]
    (valid when s and s' are continuous, as for SPOCU) -- independent of the finite differences."""
    from scipy import integrate

    from spocu.core import reference_spocu, reference_spocu_grad, reference_spocu_grad2

    for c in (math.inf, 1.0):
        p = dict(SPOCU.defaults, c=c)
        pts = [-p["gamma"] * p["beta"]] + ([p["gamma"] * (c - p["beta"])] if c != math.inf else [])

        def expect(f):
            edges = [-40.0, *pts, 40.0]
            return sum(
                integrate.quad(lambda x: float(f(x)) * stats.norm.pdf(x), a, b, epsabs=1e-13)[0]
                for a, b in zip(edges[:-1], edges[1:])
            )

        s = lambda x: reference_spocu(x, **p)  # noqa: E731
        ds = lambda x: reference_spocu_grad(x, **p)  # noqa: E731
        d2s = lambda x: reference_spocu_grad2(x, **p)  # noqa: E731
        expected = np.array([[0.0, 0.5 * expect(d2s)], [0.0, expect(lambda x: ds(x) ** 2 + s(x) * d2s(x))]])
        got = jacobian(SPOCU.build(p), Normal())
        np.testing.assert_allclose(got, expected, atol=1e-7)
    # the reference notes' values at the copied defaults, c = ∞: [[0, -0.116925], [0, 0.533399]]
    np.testing.assert_allclose(
        jacobian(SPOCU.build(SPOCU.defaults), Normal()), [[0, -0.116925], [0, 0.533399]], atol=2e-6
    )


@pytest.mark.slow
def test_no_exact_solution_is_reported_not_passed_off():
    r = fit(fixed={"gamma": 2.0})
    assert not r.solved
    assert r.parameters is None and r.unique is None and r.solutions == ()
    assert r.max_residual > 1e-3
    assert any("no exact solution" in note for note in r.notes)
    with pytest.raises(NoSolutionError, match="no exact solution"):
        _ = r.alpha
    d = r.to_dict()
    assert d["alpha"] is None and d["status"] == "no_exact_solution"
    # the best residual reported is the truth at the best point (mpmath)
    b = r.best_parameters
    m1, m2 = mp_normal_moments(b["alpha"], b["beta"], b["gamma"], b["c"])
    assert r.residuals == pytest.approx((m1, m2 - 1.0), abs=1e-10)


def test_no_solution_for_gamma_2_is_real():
    """With α free, E[s] = 0 fixes β alone (E[s] is linear in α): for γ = 2 no β in (0, 1) gives it."""
    betas = np.linspace(0.01, 0.99, 50)
    z, w = np.polynomial.hermite_e.hermegauss(120)
    w = w / w.sum()
    means = [w @ np.array([float(mp_spocu(float(x), 1.0, b, 2.0, math.inf)) for x in z]) for b in betas]
    assert min(means) > 0


@pytest.mark.slow
def test_two_solutions_are_found_and_reported():
    # c = 1, α held: E[s^2] crosses 1 twice as β runs over (0, 1)
    r = fit(fixed={"alpha": 3.2458, "c": 1.0}, conditions=["second_moment=1"])
    assert r.solved and r.unique is False and len(r.solutions) == 2
    for solution in r.solutions:
        _, m2 = mp_normal_moments(solution["alpha"], solution["beta"], solution["gamma"], 1.0)
        assert m2 == pytest.approx(1.0, abs=1e-9)
    betas = sorted(s["beta"] for s in r.solutions)
    assert 0.58 < betas[0] < 0.62 and 0.70 < betas[1] < 0.74


def test_pareto_recipe_meets_its_conditions():
    a = 3.0
    r = fit(Pareto(a), **PARETO_RECIPE)
    assert r.solved and r.unique
    alpha, beta = r.alpha, r.beta
    # s'(0) = 1 in the closed form of the reference notes (§1.3, γ = 1)
    assert 2 * alpha * beta**2 * (1 - beta) * (3 + 3 * beta + 3 * beta**2 + 3 * beta**3 - 4 * beta**4) == pytest.approx(
        1, abs=1e-10
    )
    # E[s^2] = 1 under g(x) = a(x + 1)^(-a-1): Monte Carlo with scipy's Lomax sampler
    x = stats.lomax(a).rvs(size=400_000, random_state=np.random.default_rng(7))
    s2 = spocu.reference_spocu(x, alpha, beta, 1.0, 1.0) ** 2
    assert abs(s2.mean() - 1.0) < 5 * s2.std() / math.sqrt(x.size)


def test_samples_input_uses_sample_means(tmp_path):
    rng = np.random.default_rng(3)
    values = rng.standard_normal(4000) * 1.1 + 0.05
    r = fit(Samples(values), starts=4)
    assert r.solved
    s = spocu.reference_spocu(values, r.alpha, r.beta, r.gamma, r.c)
    assert abs(s.mean()) < 1e-9 and abs((s**2).mean() - 1.0) < 1e-9
    # the same samples read from .npy and from text give the same fit
    np.save(tmp_path / "z.npy", values)
    (tmp_path / "z.txt").write_text("# pre-activations\n" + "\n".join(repr(float(v)) for v in values) + "\n\n")
    for name in ("z.npy", "z.txt"):
        other = fit(Samples.from_file(tmp_path / name), starts=1)
        assert (other.alpha, other.beta) == pytest.approx((r.alpha, r.beta), abs=1e-9)


def test_normal_with_mean_and_variance_by_monte_carlo():
    r = fit(Normal(0.3, 1.5), starts=1)
    assert r.solved
    z = np.random.default_rng(11).normal(0.3, math.sqrt(1.5), 1_000_000)
    mean, se_mean, second, se_second = monte_carlo_moments(z, r.parameters)
    assert abs(mean) < 5 * se_mean and abs(second - 1) < 5 * se_second


def test_json_is_strict_and_has_the_keys(default_fit):
    d = json.loads(default_fit.to_json())
    for key in ("alpha", "beta", "gamma", "c", "jacobian", "jacobian_norm_2", "unique", "moments", "conditions"):
        assert key in d
    assert d["c"] == "inf" and d["gamma"] == 4.437 and d["solved"] is True


def test_lazy_top_level_fit():
    assert spocu.fit is fit


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"conditions": ["mean=0", "second_moment=1", "slope=1"]}, "overdetermined"),
        ({"conditions": ["mean=0"]}, "continuum"),
        ({"fixed": {"beta": 1.5}}, r"beta=1.5 is outside the parameter domain 0 < beta < 1"),
        ({"fixed": {"c": 0.5}}, "outside the parameter domain 1 <= c"),
        ({"fixed": {"delta": 1.0}}, "no parameter 'delta'"),
        ({"free": ["gamma"], "fixed": {"gamma": 2.0}}, "both as fixed and as free"),
        ({"search": {"beta": (0.5, 1.5)}}, "leaves the parameter domain"),
        ({"search": {"alpha": (3.0, 2.0)}}, "low < high"),
        ({"search": {"gamma": (1.0, 2.0)}}, "not a free parameter"),
        ({"conditions": ["kurtosis=3", "mean=0"]}, "unknown condition"),
        ({"conditions": ["second_moment=-1", "mean=0"]}, "impossible"),
        ({"conditions": ["mean=0", "mean=0"]}, "given twice"),
        ({"family": "selu", "conditions": ["slope=1", "mean=0"]}, "not defined for selu"),
        ({"fixed": {"alpha": 1.0, "beta": 0.5}}, "nothing to fit"),
        ({"family": "gelu"}, "unknown activation family"),
        ({"starts": 0}, "starts"),
    ],
)
def test_bad_requests_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        fit(**kwargs)


def test_infinite_moment_under_heavy_tail_is_an_error():
    # c = ∞: s grows like x^8, so E[s^2] needs a > 16 under the Pareto density
    with pytest.raises(ValueError, match="infinite under Pareto"):
        fit(Pareto(3.0))
    with pytest.raises(ValueError, match="a > 1"):
        Pareto(0.5)


def test_condition_parsing():
    assert Condition.parse("slope=1") == Condition("slope", 1.0)
    with pytest.raises(ValueError, match="KIND=TARGET"):
        Condition.parse("mean")
    with pytest.raises(ValueError, match="not a number"):
        Condition.parse("mean=zero")


@pytest.mark.parametrize(
    ("content", "name", "message"),
    [
        ("1.0\nabc\n", "bad.txt", "line 2"),
        ("1.0\nnan\n2.0\n", "nan.txt", "NaN or infinite"),
        ("1.0\n", "one.txt", "at least 2"),
        ("2.0\n2.0\n", "same.txt", "variance is 0"),
        (None, "missing.txt", "does not exist"),
    ],
)
def test_bad_samples_files(tmp_path, content, name, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message):
        Samples.from_file(path)


def test_bad_npy_and_binary_files(tmp_path):
    np.save(tmp_path / "s.npy", np.array(["a", "b"]))
    with pytest.raises(ValueError, match="expected real numbers"):
        Samples.from_file(tmp_path / "s.npy")
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(ValueError, match="not a readable .npy"):
        Samples.from_file(tmp_path / "junk.npy")
    (tmp_path / "bin.dat").write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match="not text"):
        Samples.from_file(tmp_path / "bin.dat")


def test_import_spocu_does_not_import_scipy():
    import subprocess
    import sys

    code = "import sys, spocu; print('scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
