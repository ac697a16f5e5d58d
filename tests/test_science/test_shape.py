"""spocu.science.shape and `spocu shape`: facts checked against numpy.roots, dense grids,
the paper notes' closed forms, and actual evaluation in float16/bfloat16/float32."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spocu import cli
from spocu.core import R_COEFFICIENTS, R_PRIME_COEFFICIENTS, SPOCUParams, reference_spocu
from spocu.science.shape import overflow_table, plot_shape, r_facts, spocu_facts, spocu_range
from spocu.torch import spocu as torch_spocu


def _positive_real_roots(coefficients_low_first):
    roots = np.roots(list(reversed(coefficients_low_first)))
    return sorted(float(z.real) for z in roots if abs(z.imag) < 1e-9 and z.real > 1e-6)


def test_r_stationary_points_and_zeros_match_numpy_roots():
    facts = r_facts()
    np.testing.assert_allclose(facts["stationary_points"][1:], _positive_real_roots(R_PRIME_COEFFICIENTS), rtol=1e-12)
    assert facts["stationary_points"][0] == 0.0
    np.testing.assert_allclose(facts["zeros"], _positive_real_roots(R_COEFFICIENTS), rtol=1e-12)
    # the values the issue quotes
    assert facts["stationary_points"][2] == pytest.approx(1.6484, abs=5e-5)
    assert facts["zeros"] == pytest.approx([1.3002, 1.8162], abs=5e-5)
    assert facts["r_at_stationary_points"][2] == pytest.approx(-2.669381, abs=1e-6)


def test_spocu_facts_at_the_defaults_against_a_dense_grid():
    p = SPOCUParams()
    facts = spocu_facts(p)
    x = np.linspace(0.5, 6.0, 2_000_001)
    s = reference_spocu(x, **p.as_dict())
    interior = (x > 0.5) & (x < 3.0)
    (local_max,), (local_min,) = facts["extrema"][:1], facts["extrema"][1:]
    assert local_max["x"] == pytest.approx(x[interior][np.argmax(s[interior])], abs=1e-5)
    assert local_max["s"] == pytest.approx(s[interior].max(), abs=1e-9)
    assert local_min["x"] == pytest.approx(x[np.argmin(s)], abs=1e-5)
    assert local_min["s"] == pytest.approx(s.min(), abs=1e-9)
    lo, hi = facts["negative_for_positive_x"]
    negative = x[s < 0]
    assert lo == pytest.approx(negative.min(), abs=1e-5) and hi == pytest.approx(negative.max(), abs=1e-5)
    # the reference notes (§2.3): local max 1.509871 at 1.4851, min -9.842093 at 4.3621, s < 0 on (2.4453, 5.1616)
    assert (local_max["x"], local_max["s"]) == pytest.approx((1.4851, 1.509871), abs=1e-4)
    assert (local_min["x"], local_min["s"]) == pytest.approx((4.3621, -9.842093), abs=1e-4)
    assert (lo, hi) == pytest.approx((2.4453, 5.1616), abs=1e-4)


def test_slope_at_zero_closed_form():
    for p in (SPOCUParams(), SPOCUParams(alpha=2.0, beta=0.3, gamma=1.5, c=2.0)):
        a, b, g = p.alpha, p.beta, p.gamma
        expected = 2 * a * b**2 / g * (1 - b) * (3 + 3 * b + 3 * b**2 + 3 * b**3 - 4 * b**4)
        assert spocu_facts(p)["slope_at_zero"] == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("c", [1.0, 1.2, 1.5, 1.7, 2.0, 3.0])
def test_range_for_finite_c_against_a_dense_grid(c):
    p = SPOCUParams(c=c)
    x = np.linspace(p.lower_bound - 1.0, p.upper_bound + 1.0, 300_001)
    s = reference_spocu(x, **p.as_dict())
    lo, hi = spocu_range(p)
    assert lo == pytest.approx(s.min(), abs=1e-7) and hi == pytest.approx(s.max(), abs=1e-7)
    if c == 1.0:  # closed form: [-α r(β), α(1 - r(β))]
        rb = p.beta**3 * (p.beta**5 - 2 * p.beta**4 + 2)
        assert (lo, hi) == pytest.approx((-p.alpha * rb, p.alpha * (1 - rb)), rel=1e-13)
    negative = spocu_facts(p)["negative_for_positive_x"]
    has_negative = bool((s[x > 0] < 0).any())
    assert (negative is not None) == has_negative


@pytest.fixture(scope="module")
def table():
    return {row["dtype"]: row for row in overflow_table()}


def _neighbour(value: float, dtype: torch.dtype, steps: int) -> torch.Tensor:
    bits = torch.tensor(value, dtype=dtype).view(torch.int16 if dtype != torch.float32 else torch.int32)
    return (bits + steps).view(dtype)


def test_exact_overflow_thresholds(table):
    p = SPOCUParams()
    assert table["float16"]["s_exceeds_max_above"] == pytest.approx(13.95, abs=0.01)  # the estimate
    for row in table.values():
        x = row["s_exceeds_max_above"]
        assert (
            reference_spocu(x * (1 + 1e-12), **p.as_dict())
            > row["max"]
            > reference_spocu(x * (1 - 1e-12), **p.as_dict())
        )


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32"])
def test_inf_output_threshold_by_evaluation(table, name):
    dtype = getattr(torch, name)
    row = table[name]
    at = torch.tensor(row["output_inf_from"], dtype=dtype)
    assert at.item() == row["output_inf_from"]  # representable
    # correctly rounded: the float64 reference cast to the dtype is inf here, finite one value below
    below = _neighbour(row["output_inf_from"], dtype, -1)
    ref = torch.tensor(reference_spocu(np.array([at.item(), below.item()])), dtype=torch.float64).to(dtype)
    assert torch.isinf(ref[0]) and torch.isfinite(ref[1])
    # spocu's own kernels: inf here; finite below (float32 arithmetic may move it by one input value)
    assert torch.isinf(torch_spocu(at))
    slack = 2 if name == "float32" else 1
    assert torch.isfinite(torch_spocu(_neighbour(row["output_inf_from"], dtype, -slack)))


@pytest.mark.parametrize("name", ["float16", "bfloat16", "float32"])
def test_literal_formula_nan_threshold_in_torch(table, name):
    dtype = getattr(torch, name)
    p = SPOCUParams()

    def literal(x: torch.Tensor) -> torch.Tensor:
        u = torch.clamp(x / p.gamma + p.beta, min=0)
        b = torch.tensor(p.beta, dtype=dtype)
        r = lambda v: v**3 * (v**5 - 2 * v**4 + 2)  # noqa: E731
        return p.alpha * r(u) - p.alpha * r(b)

    x = torch.tensor(table[name]["naive_nan_from"], dtype=dtype)
    assert torch.isnan(literal(x)) and not torch.isnan(literal(_neighbour(x.item(), dtype, -1)))
    x_inf = torch.tensor(table[name]["naive_inf_from"], dtype=dtype)
    assert not torch.isfinite(literal(x_inf)) and torch.isfinite(literal(_neighbour(x_inf.item(), dtype, -1)))


def test_finite_c_cannot_overflow():
    with pytest.raises(ValueError, match="bounded"):
        overflow_table(SPOCUParams(c=1.0))


def test_plot_shape_writes_a_png(tmp_path):
    path = tmp_path / "sub" / "shape.png"
    plot_shape(str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in path.parent.iterdir()] == ["shape.png"]  # no temporary left behind


def test_shape_command(tmp_path, capsys):
    figure = tmp_path / "s.png"
    assert cli.main(["shape", "--figure", str(figure)]) == 0
    out = capsys.readouterr().out
    assert "1.648426" in out and "13.9504" in out and "float32" in out and figure.exists()
    assert cli.main(["shape", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["overflow"][0]["dtype"] == "float16" and d["spocu"]["parameters"]["c"] == "inf"
    assert cli.main(["shape", "--c", "1"]) == 0
    assert "overflow: none" in capsys.readouterr().out
    assert cli.main(["shape", "--beta", "1.5"]) == 2
    assert "beta" in capsys.readouterr().err


def test_atomic_writes_get_the_usual_permissions(tmp_path):
    import os

    from spocu._atomic import atomic_write_text

    path = tmp_path / "note.txt"
    atomic_write_text(path, "hello")
    umask = os.umask(0)
    os.umask(umask)
    assert path.read_text() == "hello" and (path.stat().st_mode & 0o777) == (0o666 & ~umask)
