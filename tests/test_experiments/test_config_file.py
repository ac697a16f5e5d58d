"""``spocu compare --config FILE.toml``: the options from a file, recorded in OUT/config.toml, rerun from it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import tomllib

from spocu import cli


def _compare(*args: str) -> int:
    return cli.main(["compare", "--no-progress", *args])


def _runs(out: Path) -> dict[str, dict]:
    """Each run file's results, less what depends on timing and the clock."""
    timing = {"seconds", "started_at", "finished_at"}
    runs = {}
    for path in sorted((out / "runs").iterdir()):
        data = json.loads(path.read_text())
        for record in data.get("epochs", []):
            for key in [k for k in record if "second" in k]:
                record.pop(key)
        runs[path.name] = {k: v for k, v in data.items() if k not in timing}
    return runs


@pytest.fixture(scope="module")
def from_options(tmp_path_factory):
    out = tmp_path_factory.mktemp("options") / "run"
    args = ("--activations", "spocu(c=1)", "relu", "--seeds", "2", "--epochs", "2", "--hidden", "8,8", "--lr", "0.003")
    assert _compare(*args, "--out", str(out)) == 0
    return out


def test_the_output_records_the_options_as_toml(from_options):
    recorded = tomllib.loads((from_options / "config.toml").read_text())
    assert recorded == {"activations": ["spocu(c=1)", "relu"], "seeds": 2, "epochs": 2, "hidden": [8, 8], "lr": 0.003}


@pytest.mark.slow
def test_a_recorded_config_reruns_the_same_experiment(from_options, tmp_path):
    again = tmp_path / "again"
    assert _compare("--config", str(from_options / "config.toml"), "--out", str(again)) == 0
    first, second = (json.loads((d / "config.json").read_text()) for d in (from_options, again))
    assert first == second
    assert _runs(from_options) == _runs(again) != {}
    assert (again / "config.toml").read_text() == (from_options / "config.toml").read_text()


def test_the_command_line_overrides_the_file(tmp_path, capsys):
    config = tmp_path / "experiment.toml"
    config.write_text('activations = ["relu", "selu"]\nseeds = 3\nepochs = 1\nbatch-size = 16\nno-download = true\n')
    out = tmp_path / "out"
    # an option before --config keeps its value too, as one after it does
    assert _compare("--seeds", "1", "--config", str(config), "--hidden", "4", "--out", str(out)) == 0
    recorded = tomllib.loads((out / "config.toml").read_text())
    assert recorded == {
        "activations": ["relu", "selu"],
        "seeds": 1,
        "epochs": 1,
        "batch-size": 16,
        "hidden": [4],
        "no-download": True,
    }
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["relu-seed0.json", "selu-seed0.json"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("epocs = 3\n", "'epocs' is not an option of this command"),
        ("epochs = 0\n", "--epochs: must be >= 1, got 0"),
        ('epochs = "many"\n', "--epochs: expected a whole number, got 'many'"),
        ('optimizer = "lion"\n', "--optimizer: invalid choice: 'lion'"),
        ("no-download = 1\n", "--no-download is a flag; write true or false"),
        ("lr = true\n", "lr = True: expected a string or a number"),
        ('config = "other.toml"\n', "'config' is not an option of this command"),
        ("epochs = [\n", "not a TOML file"),
    ],
)
def test_a_bad_file_is_refused_in_one_line_before_anything_is_written(tmp_path, capsys, text, message):
    config = tmp_path / "bad.toml"
    config.write_text(text)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        _compare("--config", str(config), "--out", str(out))
    assert stop.value.code == 2
    error = capsys.readouterr().err
    assert message in error and "Traceback" not in error
    assert not out.exists()


def test_a_missing_file_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        _compare("--config", str(tmp_path / "nowhere.toml"))
    assert stop.value.code == 2
    assert "cannot read it" in capsys.readouterr().err
