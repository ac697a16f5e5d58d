"""``spocu bench`` and :mod:`spocu.bench`: the measurements it reports are the right ones
(timings themselves are not tested)."""

from __future__ import annotations

import json
import math
import sys
import zipfile

import numpy as np
import pytest
import torch

from spocu import cli
from spocu.bench import BenchConfig, cnn, elementwise, latency, old, report, run_section, timing
from spocu.core import reference_spocu


def test_elementwise_section_reports_every_function_and_the_saved_memory(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--sections", "elementwise", "--sizes", "3000", "--dtypes", "float32,bfloat16",
            "--rounds", "1", "--no-old", "--json", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    data = json.loads(out.read_text())
    rows = {(r["dtype"], r["name"]): r for r in data["rows"]}
    for dtype in ("float32", "bfloat16"):
        assert rows[(dtype, "ReLU")]["fwd_bwd_ratio"] == 1.0
        # every SPOCU path keeps exactly the input for backward, as ReLU keeps its output
        for name in ("SPOCU (default path)", "SPOCU (plain ops)", "ReLU", "GELU"):
            assert rows[(dtype, name)]["saved_per_input_byte"] == 1.0, name
            assert rows[(dtype, name)]["forward_ms"] > 0 and rows[(dtype, name)]["fwd_bwd_ms"] > 0
        # ... unlike the textbook composition, whose autograd keeps intermediates
        assert rows[(dtype, "SPOCU (composed torch ops)")]["saved_per_input_byte"] >= 3
    assert data["machine"]["cores"] >= 1
    # timed on the default path: the kernels built at install, loaded first, and said so
    assert any(n.startswith("PyTorch CPU kernels: cpp-") and "C++ autograd node: " in n for n in data["notes"]), data[
        "notes"
    ]
    assert "fwd+bwd / ReLU" in capsys.readouterr().out
    assert [p.name for p in tmp_path.iterdir()] == ["bench.json"]  # atomic: no temporary left


def test_textbook_composition_uses_the_core_defaults():
    x = np.linspace(-5, 8, 301)
    y = elementwise.textbook_spocu(torch.tensor(x, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(y, reference_spocu(x), rtol=1e-10, atol=1e-12)


def test_cnn_is_the_seed_cnn_of_the_experiments_with_the_chosen_activation():
    from spocu.experiments.activations import parse_activation
    from spocu.experiments.config import ModelSpec
    from spocu.experiments.models.torch_models import build_model, count_parameters
    from spocu.torch import SPOCU

    reference = build_model(ModelSpec("seed-cnn"), (3, 32, 32), 10, parse_activation("relu"))
    net = cnn.seed_cnn(lambda ch: SPOCU(learnable=True, num_parameters=ch))
    assert [type(m).__name__ for m in net] == [type(m).__name__ if not isinstance(m, torch.nn.ReLU) else "SPOCU"
                                               for m in reference]  # fmt: skip
    spocus = [m for m in net if isinstance(m, SPOCU)]
    assert [m.alpha.numel() for m in spocus] == [32, 64]  # one parameter set per channel
    assert count_parameters(reference) == 42442 == count_parameters(net) - 3 * (32 + 64)  # α, β, γ per channel


def test_cnn_section_times_every_variant_against_relu_of_the_same_mode(monkeypatch):
    monkeypatch.setattr(cnn, "variants", lambda quick: {
        ("eager", "ReLU"): (lambda ch: torch.nn.ReLU(), False),
        ("eager", "SPOCU (default path)"): (lambda ch: __import__("spocu.torch").torch.SPOCU(), False),
    })  # fmt: skip
    rows = run_section("cnn", BenchConfig(rounds=1), [])
    assert [(r["mode"], r["name"]) for r in rows] == [("eager", "ReLU"), ("eager", "SPOCU (default path)")]
    assert rows[0]["ratio"] == 1.0 and rows[1]["step_ms"] > 0
    assert all(r["page_faults_per_step"] is None or r["page_faults_per_step"] >= 0 for r in rows)


def test_the_cnn_section_times_four_steps_per_round_asked_for(monkeypatch):
    calls = {}

    def counting_stepper(activation, compiled, x, y, seed, device):
        name = type(activation(8)).__name__
        calls[name] = 0

        def step():
            calls[name] += 1

        return step

    monkeypatch.setattr(cnn, "stepper", counting_stepper)
    monkeypatch.setattr(
        cnn,
        "variants",
        lambda quick: {
            ("eager", "ReLU"): (lambda ch: torch.nn.ReLU(), False),
            ("eager", "GELU"): (lambda ch: torch.nn.GELU(), False),
        },
    )
    rows = run_section("cnn", BenchConfig(rounds=5), [])
    assert calls == {"ReLU": 3 + 20, "GELU": 3 + 20}  # warm-up, then 4 x 5 timed steps
    assert all(len(r["ratio_ci95"]) == 2 for r in rows)


def test_page_faults_are_counted_per_step():
    pytest.importorskip("resource")
    counts = []
    touch = cnn.counting_faults(lambda: bytearray(64 << 20), counts)  # 64 MiB, zero-filled: every page touched
    for _ in range(3):
        touch()
    idle = cnn.counting_faults(lambda: None, counts)
    idle()
    assert len(counts) == 4
    assert min(counts[:3]) > 1000 and counts[3] < 100  # 16384 pages of 4 KiB, unless glibc keeps them mapped


def test_latency_measures_cold_then_warm_in_fresh_processes(monkeypatch):
    seen = []

    def fake(device, cache):
        seen.append((device, cache))
        return {"import_s": 1.0, "first_call_s": 2.0, "second_call_s": 0.001, "fused_backend": "inductor"}

    monkeypatch.setattr(latency, "measure_first_call", fake)
    rows = latency.run(BenchConfig(), [])
    assert [r["cache"] for r in rows] == ["cold", "warm"]
    assert seen[0][1] == seen[1][1]  # the warm run reads the cache the cold one filled
    assert "first call s" in report.tables(rows)[0][1]


@pytest.mark.slow
def test_latency_subprocess_reports_the_first_and_second_call(tmp_path):
    result = latency.measure_first_call("cpu", str(tmp_path))
    assert result["first_call_s"] > 0 and result["second_call_s"] > 0 and result["import_s"] > 0
    assert result["torch_first_call_s"] > 0
    assert result["kernel_path"].startswith("cpp-")  # decided and loaded in the first call
    assert "fused_first_call_s" in result or "fused_error" in result


def test_old_module_is_loaded_from_a_wheel_under_another_name(tmp_path):
    wheel = tmp_path / "spocu-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(
            "spocu/spocu_pytorch.py", "class SPOCU:\n    def __init__(self, a, b, g):\n        self.a = a\n"
        )
    module, note = old.load_old_module("spocu_pytorch", str(wheel))
    assert note == "" and module.__name__ == "spocu_old_spocu_pytorch"
    assert module.SPOCU(1.0, 0.5, 2.0).a == 1.0
    assert sys.modules["spocu"].__file__.endswith("spocu/__init__.py")  # ours is untouched
    missing, note = old.load_old_module("spocu_pytorch", str(tmp_path / "nope.whl"))
    assert missing is None and "does not exist" in note
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("spocu/spocu_pytorch.py", "raise ImportError('needs numpy<1.20')\n")
    broken, note = old.load_old_module("spocu_pytorch", str(wheel))
    assert broken is None and "needs numpy<1.20" in note


def test_interleaved_medians_runs_each_candidate_warmup_plus_rounds_times_inner():
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1

        return fn

    result = timing.interleaved_medians({"a": make("a"), "b": make("b")}, rounds=4, warmup=2, inner=3)
    assert calls == {"a": 2 + 4 * 3, "b": 2 + 4 * 3}
    assert set(result) == {"a", "b"} and all(v >= 0 for v in result.values())


def test_paired_ratio_cancels_a_load_that_drifts_between_rounds():
    load = [1.0, 3.0, 1.5, 0.7, 2.2, 5.0, 1.1]  # the machine's speed, round by round
    samples = {"relu": [0.010 * f for f in load], "spocu": [0.0104 * f for f in load]}
    ratio, low, high = timing.paired_ratio(samples, "spocu", "relu")
    assert ratio == pytest.approx(1.04) and low == pytest.approx(1.04) and high == pytest.approx(1.04)
    # paired by round: the same times in other rounds give another ratio
    unpaired = {"relu": samples["relu"], "spocu": samples["spocu"][1:] + samples["spocu"][:1]}
    assert abs(timing.paired_ratio(unpaired, "spocu", "relu")[0] - 1.04) > 0.05


def test_paired_ratio_interval_covers_the_true_ratio_and_needs_five_rounds():
    rng = np.random.default_rng(0)
    load = rng.uniform(0.5, 2.0, 40)
    noise = rng.lognormal(0.0, 0.05, 40)
    samples = {"relu": list(load), "spocu": list(1.10 * load * noise)}
    ratio, low, high = timing.paired_ratio(samples, "spocu", "relu")
    assert low < ratio < high and low < 1.10 < high and high - low < 0.1
    assert timing.paired_ratio(samples, "relu", "relu") == (1.0, 1.0, 1.0)
    few = {k: v[:4] for k, v in samples.items()}
    assert all(math.isnan(v) for v in timing.paired_ratio(few, "spocu", "relu")[1:])


def test_markdown_table():
    text = report.markdown("T", ["a", "b"], [["1", "x|y"]])
    assert text.splitlines()[2:] == ["| a | b |", "|---|---|", "| 1 | x\\|y |"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sections", "gpu-magic"], "unknown section"),
        (["--rounds", "0"], "--rounds"),
        (["--threads", "0"], "--threads must be >= 1"),
        (["--dtypes", "int8"], "int8 not timed"),
        (["--device", "tpu"], "'tpu'"),
        (["--keras-backends", "mxnet"], "mxnet"),
        (["--seed", "-1"], "--seed"),
    ],
)
def test_bad_options_are_one_line_errors(capsys, argv, message):
    assert cli.main(["bench", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spocu bench: error:") and message in err and len(err.strip().splitlines()) == 1


def test_no_hard_coded_defaults_in_the_harness():
    from pathlib import Path

    import spocu.bench

    for path in Path(spocu.bench.__file__).parent.glob("*.py"):
        assert "3.0937" not in path.read_text(), path.name
