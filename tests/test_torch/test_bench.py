"""``spocu bench``: the measurements it reports are the right ones (timings themselves are not tested)."""

from __future__ import annotations

import json
import sys
import zipfile

import pytest

from spocu import cli
from spocu.commands import bench


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
    assert "fwd+bwd / ReLU" in capsys.readouterr().out


def test_old_module_is_loaded_from_a_wheel_under_another_name(tmp_path):
    wheel = tmp_path / "spocu-0.0.1-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("spocu/spocu_pytorch.py", "class SPOCU:\n    def __init__(self, a, b, g):\n        self.a = a\n")
    module, note = bench.load_old_module("spocu_pytorch", str(wheel))
    assert note == "" and module.__name__ == "spocu_old_spocu_pytorch"
    assert module.SPOCU(1.0, 0.5, 2.0).a == 1.0
    assert sys.modules["spocu"].__file__.endswith("spocu/__init__.py")  # ours is untouched
    missing, note = bench.load_old_module("spocu_pytorch", str(tmp_path / "nope.whl"))
    assert missing is None and "does not exist" in note
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("spocu/spocu_pytorch.py", "raise ImportError('needs numpy<1.20')\n")
    broken, note = bench.load_old_module("spocu_pytorch", str(wheel))
    assert broken is None and "needs numpy<1.20" in note


def test_interleaved_medians_runs_each_candidate_warmup_plus_rounds_times_inner():
    calls = {"a": 0, "b": 0}

    def make(name):
        def fn():
            calls[name] += 1

        return fn

    result = bench.interleaved_medians({"a": make("a"), "b": make("b")}, rounds=4, warmup=2, inner=3)
    assert calls == {"a": 2 + 4 * 3, "b": 2 + 4 * 3}
    assert set(result) == {"a", "b"} and all(v >= 0 for v in result.values())


def test_markdown_table_and_bad_arguments():
    text = bench.markdown("T", ["a", "b"], [["1", "x|y"]])
    assert text.splitlines()[2:] == ["| a | b |", "|---|---|", "| 1 | x\\|y |"]
    with pytest.raises(SystemExit, match="unknown section"):
        cli.main(["bench", "--sections", "gpu-magic"])
    with pytest.raises(SystemExit, match="rounds"):
        cli.main(["bench", "--rounds", "0"])
