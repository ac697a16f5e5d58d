"""The `spocu fit` command."""

from __future__ import annotations

import json

import numpy as np
import pytest

from spocu import cli


def test_fit_json_parses_and_has_the_keys(capsys):
    assert cli.main(["fit", "--json", "--starts", "1"]) == 0
    d = json.loads(capsys.readouterr().out)
    for key in (
        "alpha",
        "beta",
        "gamma",
        "c",
        "moments",
        "jacobian",
        "jacobian_norm_2",
        "stable",
        "unique",
        "conditions",
    ):
        assert key in d
    assert d["alpha"] == pytest.approx(3.245827, abs=2e-6) and d["beta"] == pytest.approx(0.667237, abs=2e-6)
    assert d["gamma"] == 4.437 and d["c"] == "inf"
    assert d["stable"] is True and d["jacobian_norm_2"] < 1


def test_fit_table_is_readable(capsys):
    assert cli.main(["fit", "--fix", "c=1", "--starts", "1"]) == 0
    out = capsys.readouterr().out
    assert "solved" in out and "3.222326" in out and "0.6889945" in out
    assert "E[s²]" in out and "stable fixed point" in out


@pytest.mark.slow
def test_fit_without_solution_exits_1_and_says_so(capsys):
    assert cli.main(["fit", "--fix", "gamma=2", "--starts", "4", "--json"]) == 1
    d = json.loads(capsys.readouterr().out)
    assert d["solved"] is False and d["alpha"] is None and d["max_residual"] > 1e-3
    assert cli.main(["fit", "--fix", "gamma=2", "--starts", "1"]) == 1
    assert "NO EXACT SOLUTION" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--fix", "beta=2"], "outside the parameter domain"),
        (["--fix", "beta"], "NAME=VALUE"),
        (["--fix", "beta=x"], "not a number"),
        (["--condition", "mean=0"], "continuum"),
        (["--recipe", "pareto"], "needs the Pareto input"),
        (["--search", "beta=0.1"], "LOW:HIGH"),
        (["--samples", "/no/such/file.npy"], "does not exist"),
        (["--pareto", "3"], "infinite under Pareto"),
    ],
)
def test_fit_bad_requests_exit_2_with_a_message(capsys, argv, message):
    assert cli.main(["fit", *argv]) == 2
    assert message in capsys.readouterr().err


def test_fit_from_samples_file_and_pareto_recipe(tmp_path, capsys):
    path = tmp_path / "z.txt"
    path.write_text("\n".join(str(v) for v in np.random.default_rng(1).standard_normal(500)))
    assert cli.main(["fit", "--samples", str(path), "--starts", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["input"]["kind"] == "samples"
    assert cli.main(["fit", "--pareto", "3", "--recipe", "pareto", "--starts", "1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["gamma"] == 1.0 and d["c"] == 1.0 and d["moments"]["slope_at_zero"] == pytest.approx(1.0)


def test_fixed_point_only_where_the_output_feeds_the_same_input(capsys):
    """N(0, 2) maps to E[s^2] = 1, i.e. the next layer sees N(0, τ·1): a fixed point only with τ = 2."""
    assert cli.main(["fit", "--normal", "0", "2", "--starts", "1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["fixed_point"] is False and d["stable"] is None and d["jacobian_meaning"].startswith("local sensitivity")
    assert d["next_layer_input"]["variance"] == pytest.approx(1.0, abs=1e-8)
    assert cli.main(["fit", "--normal", "0", "2", "--starts", "1"]) == 0
    out = capsys.readouterr().out
    assert "stable" not in out and "local sensitivity" in out and "--tau 2" in out
    assert cli.main(["fit", "--normal", "0", "2", "--tau", "2", "--starts", "1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["fixed_point"] is True and d["next_layer_input"]["variance"] == pytest.approx(2.0, abs=1e-7)
    assert d["stable"] is (d["jacobian_norm_2"] < 1)


def test_the_pareto_recipe_is_not_a_fixed_point(capsys):
    assert cli.main(["fit", "--pareto", "3", "--recipe", "pareto", "--starts", "1"]) == 0
    out = capsys.readouterr().out
    assert "stable" not in out and "not a fixed point" in out
    assert cli.main(["fit", "--pareto", "3", "--recipe", "pareto", "--starts", "1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    # the numbers: output mean 0.75 against the Pareto input's mean 0.5
    assert d["moments"]["mean"] == pytest.approx(0.7507, abs=1e-3) and 1 / (d["input"]["a"] - 1) == 0.5
    assert d["fixed_point"] is False and d["stable"] is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tau", "-1"], "--tau must be a finite number > 0"),
        (["--tau", "0"], "--tau must be a finite number > 0"),
        (["--tau", "inf"], "--tau must be a finite number > 0"),
        (["--omega", "nan"], "--omega must be a finite number"),
        (["--starts", "100000000"], "use at most 4096"),
        (["--starts", "0"], "--starts must be >= 1"),
        (["--tolerance", "nan"], "--tolerance"),
        (["--normal", "0", "inf"], "finite"),
    ],
)
def test_meaningless_layer_values_are_refused(capsys, argv, message):
    assert cli.main(["fit", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
