"""Activation parsing, the models, and the paired initialization."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from reference_checks import assert_matches_reference
from spocu.core import SPOCUParams
from spocu.experiments.activations import ACTIVATIONS, parse_activation, split_activation_list
from spocu.experiments.config import ModelSpec, resolve_config
from spocu.experiments.models.torch_models import build_model, count_parameters, initialize
from spocu.experiments.run.engine import batch_order


@pytest.mark.parametrize(
    "text, canonical",
    [
        ("spocu", "spocu"),
        ("SPOCU", "spocu"),
        ("spocu(c=1)", "spocu(c=1)"),
        ("spocu( c = 1.0 )", "spocu(c=1)"),
        ("spocu(c=inf, alpha=3.0937)", "spocu"),  # defaults are dropped
        ("spocu(gamma=2, alpha=1.5, beta=0.5, c=2)", "spocu(alpha=1.5, beta=0.5, gamma=2, c=2)"),
        ("elu(alpha=0.5)", "elu(alpha=0.5)"),
        ("gelu(approximate=tanh)", "gelu(approximate=tanh)"),
    ],
)
def test_canonical_names(text, canonical):
    assert parse_activation(text).canonical == canonical


@pytest.mark.parametrize(
    "text, message",
    [
        ("swish", "unknown activation 'swish'"),
        ("spocu(d=1)", "has no parameter 'd'; its parameters: alpha, beta, gamma, c"),
        ("spocu(beta=1.5)", "beta=1.5 is out of range"),
        ("spocu(c=0.5)", "c=0.5 is out of range"),
        ("spocu(alpha=x)", "alpha='x' is not a number"),
        ("spocu(c=1, c=2)", "given twice"),
        ("spocu(c)", "is not key=value"),
        ("relu(alpha=1)", "has no parameter 'alpha'"),
        ("gelu(approximate=cubic)", "approximate must be none or tanh"),
        ("spocu(c=1", "cannot parse"),
    ],
)
def test_bad_activations_are_named(text, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_activation(text)


def test_every_activation_has_a_customary_init_and_a_module():
    x = torch.linspace(-3, 3, 7)
    for name in ACTIVATIONS:
        spec = parse_activation(name)
        assert spec.init in ("lecun-normal", "he-normal", "glorot-normal")
        assert spec.torch_module()(x).shape == x.shape
    assert parse_activation("selu").init == "lecun-normal"  # SELU's authors require it
    assert parse_activation("relu").init == "he-normal"
    assert parse_activation("relu", init="glorot-uniform").init == "glorot-uniform"


@pytest.mark.parametrize("text", ["spocu", "spocu(c=1)", "spocu(alpha=2, beta=0.3, gamma=1.5, c=1.2)"])
def test_spocu_parameters_reach_the_module(text):
    spec = parse_activation(text)
    p = spec.all_params
    params = SPOCUParams(p["alpha"], p["beta"], p["gamma"], p["c"])
    x = np.linspace(-6, 8, 301)
    y = spec.torch_module()(torch.tensor(x, dtype=torch.float64)).numpy()
    assert_matches_reference(x, y, params, "float64")


def test_elu_alpha_reaches_the_module():
    x = np.linspace(-3, 1, 41)
    y = parse_activation("elu(alpha=0.5)").torch_module()(torch.tensor(x)).numpy()
    np.testing.assert_allclose(y, np.where(x > 0, x, 0.5 * np.expm1(x)), rtol=1e-12, atol=1e-15)


def test_split_activation_list_respects_parentheses():
    assert split_activation_list("spocu(c=1, beta=0.5),relu, selu,") == ["spocu(c=1, beta=0.5)", "relu", "selu"]


def test_duplicate_activations_after_canonicalization_are_an_error():
    with pytest.raises(ValueError, match="listed twice: spocu"):
        resolve_config({"activations": ("spocu", "spocu(c=inf)")})


# ----------------------------------------------------------------------------- models


def test_seed_cnn_has_the_seeds_42442_parameters():
    net = build_model(ModelSpec("seed-cnn"), (3, 32, 32), 10, parse_activation("relu"))
    assert count_parameters(net) == 42_442  # 896 + 18,496 + 23,050, the seed's Keras summary
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_seed_cnn_adapts_to_other_image_shapes():
    mnist = build_model(ModelSpec("seed-cnn"), (1, 28, 28), 10, parse_activation("relu"))
    # 28 -> conv 26 -> pool 13 -> conv 11 -> pool 5: 320 + 18,496 + (64*5*5*10 + 10)
    assert count_parameters(mnist) == 320 + 18_496 + 16_010
    digits = build_model(ModelSpec("seed-cnn"), (1, 8, 8), 10, parse_activation("relu"))
    assert digits(torch.zeros(3, 1, 8, 8)).shape == (3, 10)  # 8 -> 6 -> 3 -> 1, the last pool skipped
    with pytest.raises(ValueError, match="needs image inputs"):
        build_model(ModelSpec("seed-cnn"), (30,), 2, parse_activation("relu"))


def test_mlp_and_deep_mlp_shapes():
    mlp = build_model(ModelSpec.make("mlp", (16, 8)), (30,), 2, parse_activation("selu"))
    assert count_parameters(mlp) == (30 * 16 + 16) + (16 * 8 + 8) + (8 * 2 + 2)
    deep = build_model(ModelSpec.make("deep-mlp", depth=16, width=32), (1, 8, 8), 10, parse_activation("selu"))
    assert sum(isinstance(m, torch.nn.SELU) for m in deep) == 16
    assert deep(torch.zeros(4, 1, 8, 8)).shape == (4, 10)


def test_same_seed_gives_the_same_draws_scaled_by_each_init():
    spec = ModelSpec.make("mlp", (64, 64))
    nets = {}
    for name in ("relu", "selu", "spocu"):
        act = parse_activation(name)
        nets[name] = build_model(spec, (30,), 2, act)
        initialize(nets[name], act.init, seed=7)
    for relu_layer, selu_layer, spocu_layer in zip(*(n.modules() for n in nets.values())):
        if isinstance(relu_layer, torch.nn.Linear):
            torch.testing.assert_close(
                relu_layer.weight, selu_layer.weight * math.sqrt(2), rtol=1e-6, atol=0
            )  # He = sqrt(2) LeCun
            torch.testing.assert_close(spocu_layer.weight, selu_layer.weight, rtol=0, atol=0)  # both LeCun normal
            assert torch.count_nonzero(relu_layer.bias) == 0
    other = build_model(spec, (30,), 2, parse_activation("selu"))
    initialize(other, "lecun-normal", seed=8)
    assert not torch.equal(other[1].weight, nets["selu"][1].weight)


@pytest.mark.parametrize(
    "scheme, variance",
    [
        ("lecun-normal", 1 / 400),
        ("he-normal", 2 / 400),
        ("glorot-normal", 2 / 600),
        ("glorot-uniform", 2 / 600),
        ("torch-default", 1 / 1200),
    ],
)
def test_init_variances(scheme, variance):
    layer = torch.nn.Sequential(torch.nn.Linear(400, 200))
    initialize(layer, scheme, seed=0)
    w = layer[0].weight.detach().double().flatten().numpy()
    # 80,000 draws: the sample variance is within 2% of the target with overwhelming probability
    assert w.var() == pytest.approx(variance, rel=0.02)
    assert abs(w.mean()) < 4 * math.sqrt(variance / len(w))


def test_batch_order_depends_on_seed_and_epoch_only():
    a, b = batch_order(1, 0, 100), batch_order(1, 0, 100)
    assert np.array_equal(a, b) and sorted(a) == list(range(100))
    assert not np.array_equal(a, batch_order(1, 1, 100))
    assert not np.array_equal(a, batch_order(2, 0, 100))
