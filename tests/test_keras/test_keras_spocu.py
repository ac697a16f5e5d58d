"""spocu.keras on the in-process Keras backend (TensorFlow unless KERAS_BACKEND says otherwise).

Values and gradients on every backend and dtype are checked against the float64
reference in tests/test_parity.py; this file checks behaviour: special inputs,
validation, the layer, serialization, learnable parameters, mixed precision and
the seed's code.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import keras_worker as worker  # noqa: E402  (first: it loads Triton before TensorFlow, see there)

keras = pytest.importorskip("keras", reason="Keras is not installed (pip install 'spocu[keras]')")
from keras import ops  # noqa: E402

import spocu.keras  # noqa: E402
from reference_checks import PARAM_SETS, assert_matches_reference, wide_inputs  # noqa: E402
from spocu.core import SPOCUParams, reference_spocu, reference_spocu_grad, reference_spocu_param_grads  # noqa: E402
from spocu.keras import SPOCU  # noqa: E402
from spocu.keras import kernels as K  # noqa: E402

BACKEND = keras.backend.backend()


def _needs(dtype: str) -> None:
    if dtype == "float64" and not worker.float64_supported():
        pytest.skip("float64 on the JAX backend needs JAX_ENABLE_X64=1 (tests/test_parity.py runs it so)")


@pytest.mark.parametrize("c", [math.inf, 1.0])
def test_nan_and_infinities(c):
    x, y, g = worker.value_and_grad(lambda v: spocu.keras.spocu(v, c=c), np.array([np.nan, np.inf, -np.inf]), "float32")
    ref = reference_spocu(x, c=c)
    assert math.isnan(y[0]) and math.isnan(g[0])  # NaN in -> NaN out, NaN gradient
    assert y[1] == (math.inf if math.isinf(ref[1]) else pytest.approx(ref[1], rel=1e-5))
    assert y[2] == pytest.approx(ref[2], rel=1e-5) and g[2] == 0.0


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "float64"])
@pytest.mark.parametrize("param_name", list(PARAM_SETS))
def test_no_nan_gradient_for_any_finite_input(dtype, param_name):
    _needs(dtype)
    params = PARAM_SETS[param_name]
    info = np.finfo(np.float32 if dtype == "bfloat16" else dtype)
    big = 3.0e38 if dtype == "bfloat16" else float(info.max)
    x = np.array([-big, -1e4, -1.0, -float(info.tiny), 0.0, float(info.tiny), 1.0, 100.0, 1e4, big])
    _, _, g = worker.value_and_grad(lambda v: spocu.keras.spocu(v, **params.as_dict()), x, dtype)
    assert not np.isnan(g).any(), g


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_generic_keras_ops_route_matches_reference(dtype):
    _needs(dtype)
    """The keras.ops route (used on backends without a native kernel, and on TensorFlow without XLA)."""
    params = PARAM_SETS["c2"]
    x, y, g = worker.value_and_grad(lambda v: K._generic(v, params), wide_inputs(dtype, params), dtype)
    assert_matches_reference(x, y, params, dtype)
    assert_matches_reference(x, g, params, dtype, derivative=True)


def test_tensorflow_route_without_xla_matches_reference(monkeypatch):
    if BACKEND != "tensorflow":
        pytest.skip(f"TF_JIT_COMPILE only concerns the TensorFlow backend (this process runs {BACKEND})")
    monkeypatch.setattr(K, "TF_JIT_COMPILE", False)
    params = PARAM_SETS["default"]
    x, y, g = worker.value_and_grad(spocu.keras.spocu, wide_inputs("float32", params), "float32")
    assert_matches_reference(x, y, params, "float32")
    assert_matches_reference(x, g, params, "float32", derivative=True)


def test_backward_keeps_only_the_input():
    saved = worker.saved_for_backward()
    assert len(saved) == 1 and ("the input" in saved[0] or "from the argument" in saved[0]), saved


def test_second_derivative_matches_reference():
    error = worker.second_derivative_error()
    assert error is not None and error < 1e-10, error


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.slow
def test_mixed_precision_policies(policy):
    half = policy.split("_")[1]
    result = worker.mixed_precision(policy)  # values and gradients vs the reference happen inside
    assert result["layer_output"] == half and result["hidden_compute"] == half
    assert result["weights"] == "float32"
    assert all(math.isfinite(v) for v in result["loss"])


def test_integer_inputs_promote_and_complex_is_refused():
    y = spocu.keras.spocu(np.arange(-3, 4))
    assert keras.backend.standardize_dtype(y.dtype) == keras.config.floatx()
    np.testing.assert_allclose(ops.convert_to_numpy(y), reference_spocu(np.arange(-3, 4.0)), rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="real"):
        spocu.keras.spocu(np.zeros(2, np.complex64))


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"alpha": 0.0}, "alpha"),
        ({"beta": 1.0}, "beta"),
        ({"gamma": -2.0}, "gamma"),
        ({"c": 0.5}, "c"),
        ({"alpha": float("inf")}, "alpha"),
    ],
)
def test_invalid_parameters_raise_the_core_error(kwargs, name):
    with pytest.raises(ValueError) as core:
        SPOCUParams(**kwargs)
    for make in (
        lambda: spocu.keras.spocu(np.ones(2), **kwargs),
        lambda: SPOCU(**kwargs),
        lambda: SPOCU(learnable=True, **kwargs),
    ):
        with pytest.raises(ValueError, match=f"SPOCU parameter {name}=") as ours:
            make()
        assert str(ours.value) == str(core.value)


def test_layer_config_round_trip_and_values():
    layer = SPOCU(alpha=2.0, beta=0.3, gamma=1.5, c=2.0, name="act")
    config = layer.get_config()
    assert {k: config[k] for k in ("alpha", "beta", "gamma", "c", "learnable")} == {
        "alpha": 2.0,
        "beta": 0.3,
        "gamma": 1.5,
        "c": 2.0,
        "learnable": False,
    }
    assert SPOCU().get_config()["c"] is None  # inf is stored as None: plain JSON
    clone = SPOCU.from_config(config)
    x = np.linspace(-5, 8, 41)
    ref = reference_spocu(x, 2.0, 0.3, 1.5, 2.0)
    for m in (layer, clone):
        np.testing.assert_allclose(ops.convert_to_numpy(m(x)), ref, rtol=1e-5, atol=1e-6)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert type(restored) is SPOCU and restored.get_config() == config


def test_activation_function_serializes_by_registered_name():
    config = keras.activations.serialize(spocu.keras.spocu)
    assert "spocu>spocu" in str(config)
    assert keras.activations.deserialize(config) is spocu.keras.spocu
    dense = keras.layers.Dense(3, activation=spocu.keras.spocu)
    assert keras.layers.Dense.from_config(dense.get_config()).activation is spocu.keras.spocu


def test_functional_api_call_inserts_a_spocu_layer():
    inputs = keras.Input((4,))
    outputs = spocu.keras.spocu(inputs, gamma=2.0, c=3.0)
    model = keras.Model(inputs, outputs)
    layers = [lr for lr in model.layers if isinstance(lr, SPOCU)]
    assert len(layers) == 1 and layers[0].gamma == 2.0 and layers[0].c == 3.0
    x = np.linspace(-4, 6, 8).reshape(2, 4)
    np.testing.assert_allclose(model.predict(x, verbose=0), reference_spocu(x, gamma=2.0, c=3.0), rtol=1e-5, atol=1e-6)


def test_layer_keeps_shape_dtype_and_masking():
    layer = SPOCU()
    assert layer.supports_masking
    for shape in [(3,), (2, 3), (2, 3, 4, 5)]:
        assert tuple(layer(np.zeros(shape, "float32")).shape) == shape
    assert layer.compute_output_shape((None, 7)) == (None, 7)
    if worker.float64_supported():
        y = SPOCU(dtype="float64")(np.linspace(-1, 1, 5))
        assert keras.backend.standardize_dtype(y.dtype) == "float64"


def _weight_gradients(layer, x: np.ndarray) -> tuple[float, list[float]]:
    """sum(layer(x)) and its gradient w.r.t. the layer's (raw) weights, on the current backend."""
    weights = layer.trainable_weights
    if BACKEND == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = ops.sum(layer(x))
        grads = tape.gradient(loss, weights)
    elif BACKEND == "jax":
        import jax

        def loss_fn(values):
            y, _ = layer.stateless_call(values, [], x)
            return ops.sum(y)

        loss, grads = jax.value_and_grad(loss_fn)([w.value for w in weights])
    elif BACKEND == "torch":
        loss = ops.sum(layer(x))
        loss.backward()
        grads = [w.value.grad for w in weights]
    else:
        pytest.skip(f"no gradient helper for the {BACKEND} backend")
    return float(worker.to_float64(loss)), [float(worker.to_float64(g)) for g in grads]


@pytest.mark.parametrize("c", [math.inf, 3.0])
def test_learnable_parameters_gradients_match_finite_differences_of_the_reference(c):
    _needs("float64")
    layer = SPOCU(alpha=2.0, beta=0.4, gamma=1.5, c=c, learnable=True, dtype="float64")
    assert [w.path.split("/")[-1] for w in layer.trainable_weights] == ["raw_alpha", "raw_beta", "raw_gamma"]
    assert float(layer.alpha) == pytest.approx(2.0, rel=1e-12) and float(layer.beta) == pytest.approx(0.4, rel=1e-9)
    x = np.array([-5.0, -1.0, -0.1, 0.0, 0.3, 2.0, 3.5, 7.0])
    loss, grads = _weight_gradients(layer, x)
    raw = np.array([float(worker.to_float64(w.value)) for w in layer.trainable_weights])

    def reference_loss(r):  # the documented map raw -> (alpha, beta, gamma)
        softplus = lambda v: math.log1p(math.exp(v)) + 1e-6  # noqa: E731
        beta = 1e-6 + (1 - 2e-6) / (1 + math.exp(-r[1]))
        return float(reference_spocu(x, softplus(r[0]), beta, softplus(r[2]), c).sum())

    assert loss == pytest.approx(reference_loss(raw), rel=1e-12)
    h = 1e-6
    fd = [(reference_loss(raw + h * e) - reference_loss(raw - h * e)) / (2 * h) for e in np.eye(3)]
    np.testing.assert_allclose(grads, fd, rtol=1e-6)


def test_learnable_input_gradient_matches_reference():
    _needs("float64")
    layer = SPOCU(c=2.0, learnable=True, dtype="float64")
    x, _, g = worker.value_and_grad(layer, np.linspace(-5, 10, 61), "float64")
    np.testing.assert_allclose(g, reference_spocu_grad(x, c=2.0), rtol=1e-6, atol=1e-12)


def test_seed_example_prints_a_tensor(capsys):
    if BACKEND != "tensorflow":
        pytest.skip(f"the seed's example uses tf.Variable (this process runs the {BACKEND} backend)")
    import tensorflow as tf

    from spocu.spocu_tensorflow import SPOCU as SeedSPOCU

    alpha, beta, gamma = 3.0937, 0.6653, 4.437
    spocu_layer = SeedSPOCU(alpha, beta, gamma)
    X = tf.Variable(tf.random.normal([10, 10], stddev=5, mean=4))
    print(spocu_layer(X))
    assert capsys.readouterr().out.startswith("tf.Tensor(")
    y = spocu_layer(X)
    assert isinstance(y, tf.Tensor) and y.shape == (10, 10) and y.dtype == tf.float32
    np.testing.assert_allclose(y.numpy(), reference_spocu(X.numpy().astype(np.float64)), rtol=1e-5, atol=1e-5)
    # the old helper h2_function(v) = v^3 (v^5 - 2 v^4 + 2) for v > 0, else 0
    assert spocu_layer.h2_function(beta) == pytest.approx(beta**3 * (beta**5 - 2 * beta**4 + 2), rel=1e-12)
    assert spocu_layer.h2_function(-0.5) == 0.0


@pytest.mark.slow
def test_seed_cnn_as_written():
    """The seed's Keras code, unchanged but for the data: 42,442 parameters, compile, fit, evaluate."""
    if BACKEND != "tensorflow":
        pytest.skip(f"the seed's code uses tf.keras (this process runs the {BACKEND} backend)")
    import tensorflow as tf
    from keras.layers import Conv2D, Dense, Flatten, MaxPool2D
    from keras.models import Sequential

    from spocu.spocu_tensorflow import SPOCU as SeedSPOCU

    spocu_act = SeedSPOCU(3.0937, 0.6653, 4.437)
    model = Sequential()
    with pytest.warns(UserWarning, match="input_shape"):  # Keras 3 prefers keras.Input; the seed's style still works
        model.add(Conv2D(filters=32, kernel_size=(3, 3), activation=spocu_act, input_shape=(32, 32, 3)))
    model.add(MaxPool2D())
    model.add(Conv2D(filters=64, kernel_size=(3, 3), activation=spocu_act))
    model.add(MaxPool2D())
    model.add(Flatten())
    model.add(Dense(10, activation="softmax"))
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    assert model.count_params() == 42_442
    model.compile(optimizer="adam", loss=tf.keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    rng = np.random.default_rng(0)
    X_train, y_train = rng.random((200, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, (200, 1))
    history = model.fit(X_train, y_train, batch_size=100, epochs=1, verbose=0, validation_data=(X_train, y_train))
    loss, accuracy = model.evaluate(X_train, y_train, verbose=0)
    assert math.isfinite(history.history["loss"][0]) and math.isfinite(loss) and 0.0 <= accuracy <= 1.0


def test_seed_cnn_on_this_backend():
    """The seed's CNN through keras.* only (on TensorFlow the test above runs the seed's code verbatim)."""
    if BACKEND == "tensorflow":
        pytest.skip("on TensorFlow test_seed_cnn_as_written runs the seed's code itself")
    result = worker.seed_cnn()
    assert result["params"] == 42_442
    assert math.isfinite(result["fit_loss"]) and math.isfinite(result["eval_loss"])


# ---------------------------------------------------------------- inputs, parameters, convention, structure


def test_integer_and_bool_inputs_promote_in_every_entry_point():
    from test_keras_backends import check_promoted

    check_promoted(worker.promoted_dtypes())


@pytest.mark.parametrize("learnable", ["no", 1, 0.0, None])
def test_learnable_must_be_a_bool(learnable):
    with pytest.raises(TypeError, match="learnable"):
        SPOCU(learnable=learnable)


def test_learnable_accepts_numpy_bools():
    assert SPOCU(learnable=np.bool_(True)).learnable is True
    assert SPOCU(learnable=np.bool_(False)).trainable_weights == []


@pytest.mark.parametrize(
    "kwargs, name, learnable_only",
    [
        ({"alpha": 1e308}, "alpha", False),
        ({"gamma": 1e308}, "gamma", False),
        ({"gamma": 1e-300}, "gamma", False),
        ({"beta": 1e-9}, "beta", True),
        ({"alpha": 1e-6}, "alpha", True),
        ({"alpha": 5e-7}, "alpha", True),
    ],
)
def test_in_domain_parameters_work_or_name_the_supported_range(kwargs, name, learnable_only):
    makers = [lambda: SPOCU(learnable=True, **kwargs)]
    if not learnable_only:
        makers += [lambda: spocu.keras.spocu(np.ones(2), **kwargs), lambda: SPOCU(**kwargs)]
    else:  # fixed parameters take these values
        x = np.array([-3.0, 0.0, 2.0])
        np.testing.assert_allclose(
            ops.convert_to_numpy(SPOCU(**kwargs)(x)), reference_spocu(x, **kwargs), rtol=1e-5, atol=1e-12
        )
    for make in makers:
        with pytest.raises(ValueError, match=rf"SPOCU parameter {name}=.*(range|interval)"):
            make()


def test_tensor_parameter_gradients_reduce_to_the_parameter_shapes():
    """Per-feature (3,) and scalar parameters: the gradient is the reference derivative summed over the batch."""
    x = np.linspace(-3.0, 7.0, 12).reshape(4, 3)
    alpha, beta, gamma = np.array([1.0, 2.0, 0.5]), np.array(0.5), np.array([[2.0, 1.5, 3.0]])
    _, y, gx, ga, gb, gg = worker.value_and_grads(
        lambda v, a, b, g: spocu.keras.spocu(v, a, b, g, 2.5), [x, alpha, beta, gamma], "float32"
    )
    assert ga.shape == (3,) and gb.shape == () and gg.shape == (1, 3) and gx.shape == (4, 3)
    per_element = [np.zeros((4, 3)) for _ in range(3)]
    for j in range(3):
        column = reference_spocu_param_grads(x[:, j], alpha[j], float(beta), gamma[0, j], 2.5)
        for k in range(3):
            per_element[k][:, j] = column[k]
        np.testing.assert_allclose(
            gx[:, j], reference_spocu_grad(x[:, j], alpha[j], float(beta), gamma[0, j], 2.5), rtol=1e-5, atol=1e-5
        )
    np.testing.assert_allclose(ga, per_element[0].sum(0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gb, per_element[1].sum(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gg[0], per_element[2].sum(0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c", [math.inf, 1.5])
def test_tensor_parameter_derivatives_match_the_reference_on_a_dense_grid(c):
    _needs("float64")
    alpha, beta, gamma = 1.25, 0.375, 2.5  # binary fractions: the kinks are exact
    p = SPOCUParams(alpha, beta, gamma, c)
    x = np.concatenate([np.linspace(-4.0, 9.0, 131), [p.lower_bound], [p.upper_bound] if math.isfinite(c) else []])
    full = [np.full(x.shape, v) for v in (alpha, beta, gamma)]
    _, y, gx, *gp = worker.value_and_grads(lambda v, a, b, g: spocu.keras.spocu(v, a, b, g, c), [x, *full], "float64")
    np.testing.assert_allclose(y, reference_spocu(x, alpha, beta, gamma, c), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(gx, reference_spocu_grad(x, alpha, beta, gamma, c), rtol=1e-12, atol=1e-13)
    for got, ref in zip(gp, reference_spocu_param_grads(x, alpha, beta, gamma, c)):
        scale = np.abs(ref) + alpha * np.abs(reference_spocu_grad(x, alpha, beta, gamma, c)) * (1 + np.abs(x))
        assert (np.abs(got - ref) <= 1e-12 * scale + 1e-14).all()
    kinks = (x == p.lower_bound) | (x == p.upper_bound)
    assert (gx[kinks] == 0).all() and (gp[2][kinks] == 0).all()


def test_kernels_live_in_one_module_without_function_level_imports_of_spocu_keras():
    """layers and functional both import spocu.keras.kernels; no import inside a function breaks a cycle."""
    import ast
    import inspect

    import spocu.keras.functional
    import spocu.keras.kernels
    import spocu.keras.layers

    for module in (spocu.keras.functional, spocu.keras.layers, spocu.keras.kernels):
        tree = ast.parse(inspect.getsource(module))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("spocu.keras"):
                        raise AssertionError(f"{module.__name__}.{node.name} imports {inner.module} inside a function")
    assert spocu.keras.functional.spocu_fixed is spocu.keras.layers.spocu_fixed is spocu.keras.kernels.spocu_fixed
    assert spocu.keras.functional.SPOCU is spocu.keras.layers.SPOCU


@pytest.mark.parametrize("c", [math.inf, 5e4], ids=["cinf", "c5e4"])
def test_tensor_parameter_partials_beyond_the_cap_equal_the_reference_or_saturate(c):
    """Beyond u_cap (2.7e4 in float32) each partial of the tensor-parameter route is exact where float32
    holds it, also where r'(u) alone does not (alpha/gamma = 1e-3 at u = 3e5), and saturates with its sign
    where it overflows; a finite x whose x/gamma overflows is not flat (as on the torch paths)."""
    from learnable_reference import check_partials_beyond_the_cap

    def partials_at(x, a, b, g):
        arrays = [np.asarray([v], np.float64) for v in (x, a, b, g)]
        _, _, *grads = worker.value_and_grads(lambda *t: K.spocu_tensor_params(*t, c=c), arrays, "float32")
        return [grad[0] for grad in grads]

    check_partials_beyond_the_cap(partials_at, c)
