"""Moment propagation: the simulated network against the analytic map (and that against
mpmath), fixed points, divergence, and `spocu analyze`'s files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from reference_checks import PARAM_SETS, assert_matches_reference
from science_independent import mp_normal_moments
from spocu import cli
from spocu.science import SPOCU, fit
from spocu.science.analysis import analyze
from spocu.science.propagation import RELU_HE, analytic_runs, fixed_points, simulate, spocu_contender

DEFAULT_INF = dict(SPOCU.defaults)


@pytest.mark.parametrize("name", sorted(PARAM_SETS))
def test_family_values_match_the_float64_reference(name):
    params = PARAM_SETS[name]
    x = np.concatenate([np.linspace(-8, 12, 20001), np.geomspace(1e-8, 1e3, 2000), -np.geomspace(1e-8, 1e3, 2000)])
    act = SPOCU.build(params.as_dict())
    assert_matches_reference(x, act.values(x), params, "float64")
    scalar = np.array([act.value(float(v)) for v in x[::50]])
    assert_matches_reference(x[::50], scalar, params, "float64")


def test_network_follows_the_mean_field_map():
    """A wide random network's per-layer second moment tracks the analytic map (quad),
    within the sampling error of its finite width and batch."""
    fitted = fit(fixed={"c": 1.0}, starts=1).parameters
    players = [spocu_contender("default c=1", dict(DEFAULT_INF, c=1.0)), spocu_contender("fitted c=1", fitted)]
    runs = simulate(players, depth=6, width=512, batch=512, seed=1)
    for contender in players:
        means, seconds = analytic_runs(contender, [1.0], 6)[1.0]
        run = runs[contender.name]
        np.testing.assert_allclose(run.second_moments, seconds, rtol=0.03)
        np.testing.assert_allclose(run.means, means, atol=0.03)
    # ReLU with He init keeps the second moment: E[relu(z)^2] = (2/2)·ν
    relu = simulate([RELU_HE], depth=3, width=512, batch=512, seed=2)[RELU_HE.name]
    np.testing.assert_allclose(relu.second_moments, 1.0, rtol=0.05)


def test_fixed_points_of_the_default_c_inf_map():
    points = fixed_points(spocu_contender("d", DEFAULT_INF))
    stable, unstable = points
    assert stable["slope"] < 1 < unstable["slope"]
    # independent: mpmath's E[s(z)^2] at z ~ N(0, ν*) returns ν*
    for p in points:
        _, m2 = mp_normal_moments(
            DEFAULT_INF["alpha"], DEFAULT_INF["beta"], DEFAULT_INF["gamma"], math.inf, variance=p["second_moment"]
        )
        assert m2 == pytest.approx(p["second_moment"], rel=1e-9)
    # reference notes §2.3: converges (to ≈ 0.80, mean ≈ 0.023) below ≈ 2.05, diverges from 2.1 up
    assert stable["second_moment"] == pytest.approx(0.8038, abs=1e-4) and stable["mean"] == pytest.approx(
        0.023, abs=1e-3
    )
    assert 2.05 < unstable["second_moment"] < 2.1
    runs = analytic_runs(spocu_contender("d", DEFAULT_INF), [2.0, 2.1], 40)
    assert runs[2.0][1][-1] == pytest.approx(stable["second_moment"], rel=1e-6)
    assert math.isinf(runs[2.1][1][-1])


def test_relu_map_is_neutral():
    assert fixed_points(RELU_HE) is None


def test_analyze_writes_its_files(tmp_path):
    out = tmp_path / "analysis"
    analyze(out, depth=4, width=32, batch=64, seed=0, starts=[0.5, 1.0, 2.5])
    names = sorted(p.name for p in out.iterdir())
    assert names == ["final_distribution.png", "network_moments.png", "results.json", "summary.md", "variance_map.png"]
    for png in ("final_distribution.png", "network_moments.png", "variance_map.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    data = json.loads((out / "results.json").read_text())
    assert set(data["activations"]) == {
        "SPOCU default, c=∞", "SPOCU default, c=1", "SPOCU fitted, c=∞", "SPOCU fitted, c=1", "SELU", "ReLU (He init)",
    }  # fmt: skip
    assert len(data["activations"]["SELU"]["network"]["variance"]) == 5
    summary = (out / "summary.md").read_text()
    assert "| SELU |" in summary and "2.0516" in summary  # the c = ∞ divergence threshold


def test_analyze_command(tmp_path, capsys):
    out = tmp_path / "a"
    assert (
        cli.main(["analyze", "--depth", "3", "--width", "16", "--batch", "32", "--starts", "1", "--out", str(out)]) == 0
    )
    assert "SELU" in capsys.readouterr().out and (out / "summary.md").exists()
    assert cli.main(["analyze", "--starts", "one", "--out", str(out)]) == 2
    assert "--starts" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["analyze", "--depth", "2", "--out", str(blocker)]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert cli.main(["analyze", "--depth", "0", "--out", str(out)]) == 2
