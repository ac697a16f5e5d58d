"""spocu.keras.replace_activations on nested Sequential/functional models: what changes, weights, save/load."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import keras_worker  # noqa: E402,F401  (first: it loads Triton before TensorFlow)

keras = pytest.importorskip("keras", reason="Keras is not installed (pip install 'spocu[keras]')")

import spocu.keras  # noqa: E402
from spocu.core import reference_spocu  # noqa: E402
from spocu.keras import SPOCU, replace_activations  # noqa: E402


def _model() -> keras.Model:
    inner = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(4, activation="relu"), keras.layers.Activation("relu")], name="inner"
    )
    inputs = keras.Input((3,))
    x = keras.layers.Dense(4, activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = inner(x)
    x = keras.layers.Dense(4, activation="tanh")(x)
    x = keras.layers.ReLU(max_value=6.0)(x)  # ReLU6 is not plain relu: kept
    outputs = keras.layers.Dense(2)(x)
    return keras.Model(inputs, outputs)


def _leaves(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _leaves(layer)
        else:
            yield layer


def _activations(model) -> list[str]:
    names = []
    for layer in _leaves(model):
        fn = getattr(layer, "activation", None)
        if fn is not None:
            names.append(type(fn).__name__ if isinstance(fn, keras.layers.Layer) else fn.__name__)
        elif isinstance(layer, keras.layers.ReLU):
            names.append("ReLU-layer")
    return names


def test_every_relu_nested_and_standalone_is_replaced_weights_kept():
    model = _model()
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    model(x)  # builds the batch-norm statistics path
    model.layers[2].moving_mean.assign(np.arange(4, dtype="float32"))  # non-trainable weights are copied too
    swapped = replace_activations(model, "relu", SPOCU)
    assert _activations(model) == [
        "relu",
        "ReLU-layer",
        "relu",
        "relu",
        "tanh",
        "ReLU-layer",
        "linear",
    ]  # original unchanged
    assert _activations(swapped) == ["SPOCU", "SPOCU", "SPOCU", "SPOCU", "tanh", "ReLU-layer", "linear"]
    spocu_layers = [
        layer.activation for layer in _leaves(swapped) if isinstance(getattr(layer, "activation", None), SPOCU)
    ]
    assert len({id(s) for s in spocu_layers}) == 4  # fresh instances
    for original, copy in zip(model.weights, swapped.weights):
        np.testing.assert_array_equal(np.asarray(original), np.asarray(copy))
    assert len(model.weights) == len(swapped.weights)


def test_swapped_model_computes_spocu_where_relu_was():
    model = keras.Sequential([keras.Input((7,)), keras.layers.Activation("relu")])
    swapped = replace_activations(model, keras.activations.relu, spocu.keras.spocu)
    x = np.linspace(-3, 3, 7)[None].astype("float32")
    np.testing.assert_allclose(np.asarray(swapped(x))[0], reference_spocu(x[0].astype("float64")), rtol=2e-6, atol=1e-6)


def test_swapped_model_saves_and_loads(tmp_path):
    model = _model()
    swapped = replace_activations(model, "relu", lambda: SPOCU(c=1.0))
    path = tmp_path / "m.keras"
    swapped.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(1).normal(size=(6, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(swapped(x)), rtol=1e-6, atol=1e-6)
    assert _activations(loaded)[:4] == ["SPOCU"] * 4


def test_errors():
    with pytest.raises(ValueError, match="no layer of .* uses activation 'selu'"):
        replace_activations(_model(), "selu", SPOCU)
    with pytest.raises(TypeError, match="layer instance"):
        replace_activations(_model(), "relu", SPOCU())

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2, activation="relu")

        def call(self, x):
            return self.dense(x)

    with pytest.raises(ValueError, match="subclassed"):
        replace_activations(Sub(), "relu", SPOCU)


def test_a_learnable_spocu_in_activation_keeps_the_layers_weights_and_its_own_fresh():
    """Dense(8, activation="relu") -> a learnable SPOCU: Keras counts its 3 parameters as the Dense's (5, not 2)."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(2)])
    swapped = replace_activations(model, "relu", lambda: SPOCU(learnable=True))
    dense, fresh = swapped.layers[0], SPOCU(learnable=True)
    assert isinstance(dense.activation, SPOCU) and len(dense.weights) == 2 + len(dense.activation.weights) > 2
    for original, copy in zip(model.layers[0].weights[:2], dense.weights[:2]):  # kernel and bias copied
        np.testing.assert_array_equal(np.asarray(original), np.asarray(copy))
    fresh.build((None, 8))
    for built, new in zip(dense.activation.weights, fresh.weights):  # the activation's own: as a new SPOCU starts
        np.testing.assert_array_equal(np.asarray(built), np.asarray(new))
    x = np.random.default_rng(2).normal(size=(4, 3)).astype("float32")
    kernel, bias = (np.asarray(w, dtype="float64") for w in model.layers[0].weights)
    hidden = reference_spocu(x.astype("float64") @ kernel + bias)  # the defaults are the fixed SPOCU's parameters
    np.testing.assert_allclose(np.asarray(dense(x)), hidden, rtol=2e-5, atol=1e-6)


def test_relu_with_max_value_6_is_relu6_and_several_kinds_at_once():
    model = _model()
    only6 = replace_activations(model, "relu6", SPOCU)
    assert only6.spocu_replaced == (model.layers[-2].name,)  # MobileNetV2's ReLU(6.0); the plain ReLU stays
    both = replace_activations(model, ["relu", "relu6"], SPOCU)
    assert len(both.spocu_replaced) == 5 and "ReLU-layer" not in _activations(both)
    x = np.linspace(-2, 2, 9, dtype=np.float32).reshape(3, 3)
    capped = keras.Sequential([keras.Input((3,)), keras.layers.ReLU(max_value=6.0)])
    swapped = replace_activations(capped, "relu6", lambda: SPOCU(c=1.0))
    np.testing.assert_allclose(
        np.asarray(swapped(x)), reference_spocu(x.astype(np.float64), c=1.0), rtol=1e-5, atol=1e-6
    )


def test_nothing_matched_says_which_activation_kinds_the_model_has():
    with pytest.raises(
        ValueError, match=r"uses activation 'gelu'; nothing replaced; its activations: 4 relu, 1 relu6, 1 tanh"
    ):
        replace_activations(_model(), "gelu", SPOCU)
