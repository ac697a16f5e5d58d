"""More contenders for ``spocu compare --activations``: learnable SPOCU, PReLU, and the user's own activation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spocu import cli
from spocu.core import reference_spocu
from spocu.experiments.activations import parse_activation, split_activation_list

X = np.linspace(-6.0, 6.0, 241)


def _compare(*args: str) -> int:
    return cli.main(["compare", "--no-progress", *args])


def test_learnable_spocu_parses_and_starts_at_the_fixed_function():
    spec = parse_activation("spocu(learnable=True)")
    assert (spec.canonical, spec.slug, spec.init) == ("spocu(learnable=True)", "spocu_learnable-True", "lecun-normal")
    assert parse_activation("spocu(learnable=false)").canonical == "spocu"  # the default is left out
    assert parse_activation("spocu(c=1, learnable=1)").canonical == "spocu(c=1, learnable=True)"
    with pytest.raises(ValueError, match="must be True or False"):
        parse_activation("spocu(learnable=maybe)")
    module = spec.torch_module()
    assert sum(p.numel() for p in module.parameters() if p.requires_grad) == 3  # alpha, beta, gamma
    got = module(torch.tensor(X, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(got, reference_spocu(X), rtol=1e-5, atol=1e-5)  # float32 parameters and arithmetic


def test_prelu_is_one_learned_slope_starting_at_a_quarter():
    spec = parse_activation("prelu")
    assert (spec.canonical, spec.init) == ("prelu", "he-normal")
    assert parse_activation("prelu(init=0.1)").canonical == "prelu(init=0.1)"
    module = spec.torch_module()
    assert [p.numel() for p in module.parameters()] == [1]
    got = module(torch.tensor(X, dtype=torch.float32)).detach().numpy()
    np.testing.assert_allclose(got, np.where(X >= 0, X, 0.25 * X), rtol=1e-6)


def test_keras_prelu_is_the_same_network_as_pytorchs():
    keras = pytest.importorskip("keras")
    from spocu.experiments.models.keras_models import keras_activation

    layer = keras_activation(parse_activation("prelu(init=0.1)"))
    got = keras.ops.convert_to_numpy(layer(keras.ops.convert_to_tensor(X.reshape(-1, 1).astype("float32")))).ravel()
    np.testing.assert_allclose(got, np.where(X >= 0, X, 0.1 * X), rtol=1e-6)
    assert [int(np.prod(w.shape)) for w in layer.trainable_weights] == [1]


def test_compare_trains_learnable_spocu_and_prelu(tmp_path):
    out = tmp_path / "o"
    assert (
        _compare(
            "--activations",
            "relu",
            "prelu",
            "spocu(learnable=True)",
            "--seeds",
            "1",
            "--epochs",
            "1",
            "--out",
            str(out),
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    counts = {r["activation"]: r["num_parameters"] for r in results["runs"]}
    # 30-64-64-2: two activation places; PReLU learns one slope in each, learnable SPOCU alpha, beta, gamma in each
    assert counts["prelu"] == counts["relu"] + 2 and counts["spocu(learnable=True)"] == counts["relu"] + 6
    assert sorted(p.name for p in (out / "runs").iterdir()) == [
        "prelu-seed0.json",
        "relu-seed0.json",
        "spocu_learnable-True-seed0.json",
    ]


ACTS = """\
import torch
from torch import nn

LIMIT = 3.0


def swish(x):
    return x * torch.sigmoid(x)


class Clipped(nn.Module):
    def forward(self, x):
        return torch.clamp(x, -1.0, 1.0)
"""


def test_a_users_function_or_module_class_is_an_activation(tmp_path):
    path = tmp_path / "acts.py"
    path.write_text(ACTS)
    spec = parse_activation(f"{path}:swish")
    assert spec.is_user and spec.canonical == f"{path}:swish" and spec.slug == "acts.py-swish"
    assert spec.init == "he-normal" and parse_activation(f"{path}:swish", "lecun-normal").init == "lecun-normal"
    assert spec.source_sha256 == __import__("hashlib").sha256(path.read_bytes()).hexdigest()[:16]
    got = spec.torch_module()(torch.tensor(X, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(got, X / (1 + np.exp(-X)), rtol=1e-12)
    clipped = parse_activation(f"{path}:Clipped").torch_module()
    assert type(clipped).__name__ == "Clipped" and clipped is not parse_activation(f"{path}:Clipped").torch_module()
    hardswish = parse_activation("torch.nn:Hardswish")  # MODULE:NAME, a module class
    assert type(hardswish.torch_module()).__name__ == "Hardswish" and hardswish.slug == "torch.nn-Hardswish"
    assert split_activation_list(f"relu, {path}:swish") == ["relu", f"{path}:swish"]


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing.py:swish", "no such file"),
        ("{path}:nothing", "has no 'nothing'; it defines Clipped, swish"),
        ("{path}:LIMIT", "is a float, not a function or class"),
        ("no_such_module_xyz:f", "cannot import no_such_module_xyz"),
    ],
)
def test_a_bad_user_activation_is_named_in_one_line(tmp_path, capsys, name, message):
    path = tmp_path / "acts.py"
    path.write_text(ACTS)
    name = name.format(path=path)
    with pytest.raises(ValueError, match="--activations"):
        parse_activation(name)
    assert _compare("--activations", "relu", name, "--seeds", "1", "--epochs", "1", "--out", str(tmp_path / "o")) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and not (tmp_path / "o").exists()


def test_compare_with_a_users_activation_records_its_source_and_refuses_changed_code(tmp_path, capsys):
    path = tmp_path / "acts.py"
    path.write_text(ACTS)
    out = tmp_path / "o"
    args = (
        "--activations",
        "relu",
        f"{path}:swish",
        "--seeds",
        "1",
        "--epochs",
        "1",
        "--hidden",
        "8",
        "--out",
        str(out),
    )
    assert _compare(*args) == 0
    digest = parse_activation(f"{path}:swish").source_sha256
    results = json.loads((out / "results.json").read_text())
    assert results["activation_sources"] == {f"{path}:swish": {"source_sha256": digest}}
    run = json.loads((out / "runs" / "acts.py-swish-seed0.json").read_text())
    assert (
        run["activation"] == f"{path}:swish"
        and run["activation_source_sha256"] == digest
        and run["init"] == "he-normal"
    )
    assert f"Your activation {path}:swish: source sha256 {digest}." in (out / "report.md").read_text()
    path.write_text(ACTS.replace("torch.sigmoid(x)", "torch.sigmoid(1.5 * x)"))
    capsys.readouterr()
    assert _compare(*args) == 2
    assert "other code of the activation" in capsys.readouterr().err
