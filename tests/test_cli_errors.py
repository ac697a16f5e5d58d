"""Bad invocations of ``spocu fit``, ``analyze``, ``shape``, ``demo`` and ``bench`` fail cleanly.

Every case asserts the CLI's contract for bad input: a non-zero exit, one
``spocu <command>: error: ...`` line (or argparse's ``error:`` line) that names the
problem, no ``Traceback``, and no file created (neither in the temporary working
directory nor in ``/`` or the repository). Most cases run in-process through
:func:`spocu.cli.main` (fast); a handful run as real subprocesses through
``tests/cli_harness.py``. In-domain values that used to crash or hang ``spocu shape``
must now work, in bounded time.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from cli_harness import assert_clean_failure, run_cli, snapshot
from spocu import cli

REPO = Path(__file__).resolve().parent.parent

#: (argv, regex the error must match); FILE is a regular file, DIR a directory in the temp dir
CASES = [
    # bench
    (["bench", "--device", "cuda"], r"--device 'cuda': no CUDA device"),
    (["bench", "--device", "tpu"], r"--device 'tpu'"),
    (["bench", "--device", "mps"], r"--device 'mps'"),
    (["bench", "--threads", "0"], r"--threads must be >= 1"),
    (["bench", "--threads", "-3"], r"--threads must be >= 1"),
    (["bench", "--dtypes", "int8"], r"--dtypes: int8 not timed"),
    (["bench", "--dtypes", "float32,complex64"], r"complex64"),
    (["bench", "--json", "/tmp"], r"--json '/tmp' is a directory"),
    (["bench", "--json", "FILE/out.json"], r"is a file"),
    (["bench", "--sections", "gpu-magic"], r"unknown section"),
    (["bench", "--rounds", "0"], r"--rounds must be in"),
    (["bench", "--sizes", "0"], r"--sizes must be positive"),
    (["bench", "--sizes", "1e400"], r"--sizes"),
    (["bench", "--sizes", "nan"], r"--sizes"),
    (["bench", "--sizes", "1e13"], r"--sizes .* GiB"),
    (["bench", "--keras-backends", "mxnet"], r"mxnet"),
    (["bench", "--old-wheel", "missing.whl"], r"--old-wheel 'missing.whl' is not a file"),
    (["bench", "--seed", "-1"], r"--seed"),
    # demo
    (["demo", "--seed", "99999999999999999999"], r"--seed must be in"),
    (["demo", "--seed", "-1"], r"--seed must be in"),
    (["demo", "--steps", "0"], r"--steps must be in"),
    (["demo", "--steps", "1000000000"], r"--steps must be in"),
    # analyze
    (["analyze", "--out", "FILE/sub"], r"is a file"),
    (["analyze", "--out", "FILE"], r"not a directory"),
    (["analyze", "--out", "/proc/spocu-no-such/x", "--depth", "2"], r"--out '/proc/spocu-no-such/x'"),
    (["analyze", "--out", ""], r"--out must name a directory"),
    (["analyze", "--width", "100000", "--batch", "100000"], r"--width 100000 --batch 100000 needs about .* GiB"),
    (["analyze", "--depth", "0"], r"--depth must be >= 1"),
    (["analyze", "--width", "0"], r"--width must be >= 1"),
    (["analyze", "--batch", "1"], r"--batch must be >= 2"),
    (["analyze", "--seed", "-1"], r"--seed must be in"),
    (["analyze", "--starts", "one"], r"--starts 'one'"),
    (["analyze", "--starts", "inf", "--depth", "1", "--out", "DIR/a"], r"positive numbers"),
    (["analyze", "--starts", "1,-2", "--depth", "1", "--out", "DIR/a"], r"positive numbers"),
    # shape
    (["shape", "--figure", "x.xyz"], r"--figure 'x.xyz': cannot write 'xyz'"),
    (["shape", "--figure", "FILE/s.png"], r"cannot write --figure"),
    (["shape", "--beta", "1.5"], r"beta"),
    (["shape", "--alpha", "nan"], r"alpha"),
    (["shape", "--gamma", "-1"], r"gamma"),
    (["shape", "--gamma", "inf"], r"gamma"),
    (["shape", "--c", "0.5"], r"\bc\b"),
    # fit
    (["fit", "--starts", "100000000"], r"--starts 100000000 .* days\); use at most 4096"),
    (["fit", "--starts", "0"], r"--starts must be >= 1"),
    (["fit", "--tau", "-1"], r"--tau must be a finite number > 0"),
    (["fit", "--tau", "0"], r"--tau must be a finite number > 0"),
    (["fit", "--tau", "nan"], r"--tau must be a finite number > 0"),
    (["fit", "--omega", "nan"], r"--omega must be a finite number"),
    (["fit", "--omega", "inf"], r"--omega must be a finite number"),
    (["fit", "--tolerance", "0"], r"--tolerance"),
    (["fit", "--normal", "0", "0"], r"variance must be > 0"),
    (["fit", "--normal", "nan", "1"], r"--normal"),
    (["fit", "--pareto", "1"], r"a > 1"),
    (["fit", "--pareto", "inf"], r"finite"),
    (["fit", "--samples", "DIR"], r"is a directory"),
    (["fit", "--samples", "FILE"], r"not a number"),
    (["fit", "--samples", "missing.npy"], r"does not exist"),
    (["fit", "--fix", "gamma=inf"], r"outside the parameter domain"),
    (["fit", "--fix", "c=0.5"], r"outside the parameter domain"),
    (["fit", "--free", "delta"], r"no parameter 'delta'"),
    (["fit", "--search", "alpha=5:1"], r"low < high"),
    (["fit", "--condition", "mean=nan", "--condition", "second-moment=1"], r"finite target"),
    (["fit", "--family", "relu"], r"invalid choice"),
]


def _materialize(argv: list[str], tmp: Path) -> list[str]:
    return [a.replace("FILE", str(tmp / "notes.txt")).replace("DIR", str(tmp / "dir")) for a in argv]


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    (tmp_path / "notes.txt").write_text("a user's notes\n")
    (tmp_path / "dir").mkdir()
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _outside() -> dict[str, set[str]]:
    """Entries of the places a stray file would land outside the temporary directory."""
    return {str(p): set(os.listdir(p)) for p in (Path("/"), REPO)}


@pytest.mark.parametrize(("argv", "pattern"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_invocation_fails_cleanly(argv, pattern, workdir, capsys):
    if argv[:3] == ["bench", "--device", "cuda"]:
        import torch

        if torch.cuda.is_available():
            pytest.skip("a CUDA device is available here")
    before, outside = snapshot(workdir), _outside()
    try:
        code = cli.main(_materialize(argv, workdir))
    except SystemExit as exit_:  # argparse's own errors
        code = exit_.code
    captured = capsys.readouterr()
    assert code not in (0, None), f"exit 0 for {argv}"
    err = captured.err.strip()
    assert "Traceback" not in captured.out + captured.err
    lines = [line for line in err.splitlines() if "error" in line]
    assert len(lines) == 1, f"not one error line: {err!r}"
    if not lines[0].startswith(f"spocu {argv[0]}: error:"):
        assert argv[0] in err.splitlines()[0] and "error: argument" in lines[0], err  # argparse's usage + error
    assert re.search(pattern, lines[0]), f"{lines[0]!r} does not match {pattern!r}"
    assert snapshot(workdir) == before, "a refused command wrote a file"
    assert _outside() == outside, "a file appeared outside the temporary directory"


# a handful as real processes: the exit status and stderr a user sees
SUBPROCESS_CASES = [
    (["bench", "--json", "/tmp", "--sections", "elementwise"], r"is a directory"),
    (["demo", "--seed", "99999999999999999999"], r"--seed"),
    (["fit", "--tau", "-1"], r"--tau"),
    (["analyze", "--out", "notes.txt/sub"], r"is a file"),
    (["shape", "--figure", "x.xyz"], r"xyz"),
]


@pytest.mark.parametrize(("argv", "pattern"), SUBPROCESS_CASES, ids=[" ".join(a) for a, _ in SUBPROCESS_CASES])
def test_bad_invocation_in_a_subprocess(argv, pattern, workdir):
    before, outside = snapshot(workdir), _outside()
    result = run_cli(argv, workdir, timeout=120)
    assert_clean_failure(result, pattern)
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert snapshot(workdir) == before and _outside() == outside


# in-domain parameters that used to raise or hang: they work, in bounded time
@pytest.mark.parametrize(
    "argv",
    [["--gamma", "1e4"], ["--alpha", "1e20"], ["--gamma", "1e-20"], ["--gamma", "1e280"], ["--alpha", "1e-300"],
     ["--c", "1e300"], ["--c", "1.2"]],
    ids=lambda a: " ".join(a),
)  # fmt: skip
def test_shape_works_for_in_domain_parameters(argv, capsys):
    assert cli.main(["shape", "--json", *argv]) == 0
    facts = json.loads(capsys.readouterr().out)
    lo, hi = facts["spocu"]["range"]
    # never "bounded" with an infinite upper end
    assert not (facts["spocu"]["bounded"] and hi == "inf")
    for row in facts["overflow"] or []:
        for key in ("s_exceeds_max_above", "grad_exceeds_max_above", "output_inf_from"):
            assert row[key] is None or isinstance(row[key], float)


def test_shape_gamma_1e280_ends_quickly_in_a_subprocess(tmp_path):
    result = run_cli(["shape", "--gamma", "1e280"], tmp_path, timeout=60)
    assert result.code == 0 and "Traceback" not in result.output
    assert "float16" in result.stdout


def test_shape_huge_c_says_the_bound_exceeds_float64(capsys):
    assert cli.main(["shape", "--c", "1e300"]) == 0
    out = capsys.readouterr().out
    assert "exceeds float64" in out and "(bounded," not in out and "overflow: none" not in out
