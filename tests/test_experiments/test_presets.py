"""The paper presets: where each value comes from, and the correction's SPOCU (c = γ = 1, α and β fitted)."""

from __future__ import annotations

import json

import pytest

from spocu import cli
from spocu.core import DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_C, DEFAULT_GAMMA
from spocu.experiments.activations import parse_activation
from spocu.experiments.config import (
    CORRECTION_ALPHA,
    CORRECTION_BETA,
    PAPER_PROVENANCE,
    PRESETS,
    SPOCU_CORRECTION,
    resolve_config,
)
from spocu.science import fit


def test_the_correction_variant_is_what_spocu_fit_solves():
    """α, β of the correction's variant, recomputed by the fitting code: E[s] = 0, E[s²] = 1 under N(0, 1), c = γ = 1."""
    result = fit(fixed={"c": 1.0, "gamma": 1.0})
    assert result.solved
    assert result.parameters["alpha"] == pytest.approx(CORRECTION_ALPHA, rel=1e-9)
    assert result.parameters["beta"] == pytest.approx(CORRECTION_BETA, rel=1e-9)
    spec = parse_activation(SPOCU_CORRECTION)
    params = spec.all_params
    assert (params["c"], params["gamma"]) == (1.0, 1.0)
    assert params["alpha"] == pytest.approx(CORRECTION_ALPHA, rel=1e-14) and params["beta"] == pytest.approx(
        CORRECTION_BETA, rel=1e-14
    )


def test_the_0_0_1_values_are_the_reference_of_the_paper_presets():
    assert (DEFAULT_ALPHA, DEFAULT_BETA, DEFAULT_GAMMA, DEFAULT_C) == (3.0937, 0.6653, 4.437, float("inf"))
    for name in ("paper-wdbc", "paper-mnist"):
        config = resolve_config({"preset": name})
        assert config.reference.canonical == "spocu"  # every parameter at the 0.0.1 package's value
        assert parse_activation(SPOCU_CORRECTION) in config.activations
        provenance = PRESETS[name]["provenance"]
        assert any("0.0.1 package" in source and "4.437" in what for what, source in provenance.items())
        assert any("correction" in source and what == SPOCU_CORRECTION for what, source in provenance.items())
        assert any(source.startswith("not from the paper") for source in provenance.values())


def test_the_default_contenders():
    config = resolve_config({})
    assert [a.canonical for a in config.activations] == ["spocu", "spocu(c=1)", "relu", "selu"]
    assert config.reference == parse_activation("spocu")


def test_a_preset_run_reports_where_its_values_come_from(tmp_path):
    out = tmp_path / "paper"
    assert (
        cli.main(
            ["compare", "--no-progress", "--preset", "paper-wdbc", "--seeds", "1", "--epochs", "1", "--out", str(out)]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert results["preset_provenance"] == PAPER_PROVENANCE
    report = (out / "report.md").read_text()
    assert "from the 0.0.1 package" in report and "doi 10.1007/s00521-020-05412-6" in report
    assert parse_activation(SPOCU_CORRECTION).canonical in results["config"]["activations"]
