"""More contenders for ``spocu compare --activations``: learnable SPOCU, PReLU, and the user's own activation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spocu import cli
from spocu.core import reference_spocu
from spocu.experiments.activations import parse_activation

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
    assert _compare("--activations", "relu", "prelu", "spocu(learnable=True)", "--seeds", "1", "--epochs", "1", "--out", str(out)) == 0
    results = json.loads((out / "results.json").read_text())
    counts = {r["activation"]: r["num_parameters"] for r in results["runs"]}
    # 30-64-64-2: two activation places; PReLU learns one slope in each, learnable SPOCU alpha, beta, gamma in each
    assert counts["prelu"] == counts["relu"] + 2 and counts["spocu(learnable=True)"] == counts["relu"] + 6
    assert sorted(p.name for p in (out / "runs").iterdir()) == ["prelu-seed0.json", "relu-seed0.json", "spocu_learnable-True-seed0.json"]
