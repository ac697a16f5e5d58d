"""Keras checks that run on whatever backend KERAS_BACKEND selects, in this process or a fresh one.

The tests import these functions for the in-process backend and run this file
as a script for the others (Keras picks its backend once per process)::

    KERAS_BACKEND=jax python keras_worker.py values OUT.npz     # parity inputs: values and gradients
    KERAS_BACKEND=jax python keras_worker.py edges OUT.npz      # kinks and non-finite inputs (test_parity.py)
    KERAS_BACKEND=jax python keras_worker.py promote            # integer/bool inputs, every entry point, JSON
    KERAS_BACKEND=jax python keras_worker.py save OUTDIR        # fit + save models, run checks, print JSON
    KERAS_BACKEND=jax python keras_worker.py load INDIR OUT.npz # load every saved model, predict
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: reference_checks

from spocu._llvm import preload_triton_before_tensorflow  # noqa: E402

# Test processes load TensorFlow and torch's compiler stack (Triton): Triton must come first.
preload_triton_before_tensorflow()

HALF = ("float16", "bfloat16")
#: dtypes each Keras backend is checked in (all of them handle float64 natively)
DTYPES = ("float32", "float64", "float16", "bfloat16")


def backend() -> str:
    import keras

    return keras.backend.backend()


def float64_supported() -> bool:
    """JAX computes in float64 only with x64 enabled (JAX_ENABLE_X64=1); the other backends always do."""
    if backend() == "jax":
        import jax

        return bool(jax.config.jax_enable_x64)
    return True


def to_float64(t) -> np.ndarray:
    from keras import ops

    t = ops.cast(t, "float32") if str(t.dtype).split(".")[-1] in HALF else t
    return np.asarray(ops.convert_to_numpy(t), dtype=np.float64)


def value_and_grad(fn, x64: np.ndarray, dtype: str):
    """(x rounded to dtype, fn(x), d/dx sum(fn(x))) as float64 arrays, on the current backend."""
    import keras
    from keras import ops

    x = ops.cast(ops.convert_to_tensor(np.asarray(x64, np.float64)), dtype)
    b = keras.backend.backend()
    if b == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            tape.watch(x)
            y = fn(x)
        g = tape.gradient(y, x, output_gradients=tf.ones_like(y))
    elif b == "jax":
        import jax

        y, vjp = jax.vjp(fn, x)
        (g,) = vjp(ops.ones_like(y))
    elif b == "torch":
        x = x.detach().requires_grad_(True)
        y = fn(x)
        y.backward(ops.ones_like(y))
        g = x.grad
    else:
        raise NotImplementedError(f"no gradient helper for the {b} backend")
    assert keras.backend.standardize_dtype(y.dtype) == dtype, (y.dtype, dtype)
    assert keras.backend.standardize_dtype(g.dtype) == dtype, (g.dtype, dtype)
    return to_float64(x), to_float64(y), to_float64(g)


def parity_values() -> dict[str, np.ndarray]:
    """Values and gradients of spocu.keras.spocu on the shared wide inputs, every dtype and parameter set."""
    import spocu.keras
    from reference_checks import PARAM_SETS, wide_inputs

    out = {}
    for dtype in DTYPES:
        if dtype == "float64" and not float64_supported():
            continue
        for name, params in PARAM_SETS.items():
            x, y, g = value_and_grad(
                lambda v: spocu.keras.spocu(v, **params.as_dict()), wide_inputs(dtype, params), dtype
            )
            out[f"{dtype}/{name}/x"], out[f"{dtype}/{name}/y"], out[f"{dtype}/{name}/g"] = x, y, g
    return out


# ---------------------------------------------------------------- kinks and non-finite inputs

#: alpha=1, beta=0.5, gamma=2: the kinks sit exactly at x = -1 and (c = 1.5) x = 2
EDGE_PARAMS = {"c1.5": (1.0, 0.5, 2.0, 1.5), "cinf": (1.0, 0.5, 2.0, float("inf"))}


def edge_inputs(dtype: str) -> np.ndarray:
    """Both kinks, both flat pieces, points of the active piece, huge finite and infinite inputs."""
    big = {"float32": 3e38, "float64": 1e300}[dtype]
    return np.array([-np.inf, -big, -1e30, -3.0, -1.0, -0.5, 0.0, 0.5, 2.0, 2.5, 7.0, 1e30, big, np.inf])


def value_and_grads(fn, arrays: list[np.ndarray], dtype: str) -> list[np.ndarray]:
    """[x, fn(x, *rest), d sum(fn)/d args...] as float64 arrays (x = arrays[0] rounded to dtype), on the
    current backend."""
    import keras
    from keras import ops

    args = [ops.cast(ops.convert_to_tensor(np.asarray(a, np.float64)), dtype) for a in arrays]
    b = keras.backend.backend()
    if b == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            for a in args:
                tape.watch(a)
            y = fn(*args)
        grads = tape.gradient(y, args, output_gradients=tf.ones_like(y))
    elif b == "jax":
        import jax

        y, vjp = jax.vjp(fn, *args)
        grads = vjp(ops.ones_like(y))
    elif b == "torch":
        args = [a.detach().requires_grad_(True) for a in args]
        y = fn(*args)
        y.backward(ops.ones_like(y))
        grads = [a.grad for a in args]
    else:
        raise NotImplementedError(f"no gradient helper for the {b} backend")
    return [to_float64(t) for t in [args[0], y, *grads]]  # the first input as the backend rounded it


def edge_values() -> dict[str, np.ndarray]:
    """spocu.keras.spocu with float and with tensor parameters at the kinks and non-finite inputs:
    keys ``<path>/<dtype>/<params>/<x|y|gx|galpha|gbeta|ggamma>``."""
    import spocu.keras

    out = {}
    for dtype in ("float32", "float64"):
        if dtype == "float64" and not float64_supported():
            continue
        for name, (a, b, g, c) in EDGE_PARAMS.items():
            x = edge_inputs(dtype)
            key = f"{dtype}/{name}"
            x, y, gx = value_and_grads(lambda v: spocu.keras.spocu(v, a, b, g, c), [x], dtype)
            out.update({f"fixed/{key}/x": x, f"fixed/{key}/y": y, f"fixed/{key}/gx": gx})
            full = [np.full(x.shape, p) for p in (a, b, g)]  # one parameter per element: per-element gradients
            _, y, gx, ga, gb, gg = value_and_grads(
                lambda v, pa, pb, pg: spocu.keras.spocu(v, pa, pb, pg, c), [x, *full], dtype
            )
            out.update(
                {
                    f"tensor/{key}/x": x,
                    f"tensor/{key}/y": y,
                    f"tensor/{key}/gx": gx,
                    f"tensor/{key}/galpha": ga,
                    f"tensor/{key}/gbeta": gb,
                    f"tensor/{key}/ggamma": gg,
                }
            )
            layer = spocu.keras.SPOCU(a, b, g, c, dtype=dtype)  # the layer (and learnable layer) entry points
            _, y, gx = value_and_grads(layer, [x], dtype)
            out.update({f"layer/{key}/x": x, f"layer/{key}/y": y, f"layer/{key}/gx": gx})
    return out


def promoted_dtypes() -> dict[str, str]:
    """The output dtype and values of every Keras entry point for integer and bool inputs."""
    import keras
    from keras import ops

    import spocu.keras
    from spocu.spocu_tensorflow import SPOCU as SeedSPOCU

    entries = {
        "function": spocu.keras.spocu,
        "layer": spocu.keras.SPOCU(),
        "learnable": spocu.keras.SPOCU(learnable=True),
        "shim": SeedSPOCU(),
        "tensor_params": lambda v: spocu.keras.spocu(v, ops.convert_to_tensor(3.0937), 0.6653, 4.437),
    }
    out = {}
    for name, fn in entries.items():
        for kind, x in (("int", np.arange(-3, 4)), ("bool", np.array([False, True]))):
            y = fn(x)
            out[f"{name}/{kind}"] = keras.backend.standardize_dtype(y.dtype)
            out[f"{name}/{kind}/values"] = [float(v) for v in to_float64(y)]
    out["floatx"] = keras.config.floatx()
    return out


# ---------------------------------------------------------------- save / load


def build_models() -> dict:
    """One small model per way of using SPOCU in Keras."""
    import keras

    import spocu.keras
    from spocu.keras import SPOCU
    from spocu.spocu_tensorflow import SPOCU as SeedSPOCU

    L = keras.layers
    inputs = keras.Input((8,))
    return {
        "function_activation": keras.Sequential(
            [keras.Input((8,)), L.Dense(6, activation=spocu.keras.spocu), L.Dense(3)]
        ),
        "layer_activation": keras.Sequential(
            [
                keras.Input((6, 6, 2)),
                L.Conv2D(4, 3, activation=SPOCU(alpha=2.0, beta=0.3, gamma=1.5, c=2.0)),
                L.Flatten(),
                L.Dense(3),
            ]
        ),
        "standalone_layer": keras.Sequential([keras.Input((8,)), L.Dense(6), SPOCU(beta=0.2, c=1.0), L.Dense(3)]),
        "learnable": keras.Sequential(
            [
                keras.Input((8,)),
                L.Dense(6, activation=SPOCU(c=3.0, learnable=True)),
                SPOCU(alpha=2.0, learnable=True),
                L.Dense(3),
            ]
        ),
        "seed_style": keras.Sequential(
            [
                keras.Input((6, 6, 3)),
                L.Conv2D(4, 3, activation=SeedSPOCU(3.0937, 0.6653, 4.437)),
                L.MaxPool2D(),
                L.Flatten(),
                L.Dense(3, activation="softmax"),
            ]
        ),
        "functional_api": keras.Model(inputs, L.Dense(3)(spocu.keras.spocu(L.Dense(6)(inputs), gamma=2.0, c=4.0))),
    }


def _data(model, seed: int):
    rng = np.random.default_rng(seed)
    shape = (16,) + tuple(model.input_shape[1:])
    return rng.normal(0.0, 2.0, shape).astype("float32"), rng.normal(0.0, 1.0, (16, 3)).astype("float32")


def save_models(outdir: str) -> dict:
    """Save each model (the learnable one after a few training steps) and record its predictions."""
    import keras

    keras.utils.set_random_seed(0)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    report, preds = {}, {}
    for i, (name, model) in enumerate(build_models().items()):
        x, y = _data(model, i)
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
        before = {w.path: to_float64(w.value).copy() for w in model.weights if "raw_" in w.path}
        if before:  # train so that the saved learnable parameters differ from their initial values
            model.fit(x, y, epochs=2, batch_size=8, verbose=0)
        moved = {p: float(abs(to_float64(w.value) - before[p]).max()) for w in model.weights if (p := w.path) in before}
        model.save(out / f"{name}.keras")
        preds[f"{name}/x"], preds[f"{name}/y"] = x, to_float64(model(x))
        report[name] = {"learnable_moved": moved}
    np.savez(out / "predictions.npz", **preds)
    return report


def load_models(indir: str) -> dict[str, np.ndarray]:
    """Predictions of every model saved under ``indir/<backend>/`` (needs only ``import spocu.keras``).

    Models saved by another backend are loaded with ``compile=False``: their
    optimizer config names that backend's optimizer module (e.g. Keras's torch
    Adam), and importing torch into a TensorFlow process aborts in this
    environment (two LLVMs); architecture and weights are what must carry over.
    """
    import keras

    import spocu.keras  # noqa: F401  registers SPOCU with Keras's serialization

    out = {}
    for saved in sorted(Path(indir).glob("*/*.keras")):
        reference = np.load(saved.parent / "predictions.npz")
        model = keras.models.load_model(saved, compile=saved.parent.name == backend())
        out[f"{saved.parent.name}/{saved.stem}"] = to_float64(model(reference[f"{saved.stem}/x"]))
    return out


# ---------------------------------------------------------------- backend checks


def saved_for_backward() -> list[str]:
    """What the backend keeps for SPOCU's backward pass, described per saved tensor."""
    import keras
    from keras import ops

    import spocu.keras

    b = keras.backend.backend()
    x = ops.convert_to_tensor(np.linspace(-4.0, 4.0, 9).astype("float32"))
    if b == "jax":
        from jax.ad_checkpoint import print_saved_residuals

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            print_saved_residuals(lambda v: ops.sum(spocu.keras.spocu(v)), x)
        return [ln for ln in buf.getvalue().splitlines() if ln.strip()]
    if b == "torch":
        import torch

        x = x.detach().requires_grad_(True)
        saved = []

        def pack(t):
            saved.append("the input" if t.data_ptr() == x.data_ptr() and t.shape == x.shape else f"{t.dtype}{t.shape}")
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            spocu.keras.spocu(x).sum().backward()
        return saved
    if b == "tensorflow":
        import tensorflow as tf

        @tf.function
        def grad(v):
            with tf.GradientTape() as tape:
                tape.watch(v)
                y = spocu.keras.spocu(v)
            return tape.gradient(y, v)

        graph = grad.get_concrete_function(tf.TensorSpec([9], tf.float32)).graph
        calls = [
            op
            for op in graph.get_operations()
            if op.type.endswith("PartitionedCall") and "spocu_backward" in str(op.get_attr("f").name)
        ]
        assert len(calls) == 1, [op.type for op in graph.get_operations()]
        # inputs of the backward kernel: x itself (the graph's placeholder) and the upstream gradient
        return ["the input" if t.op.type == "Placeholder" else t.op.type for t in calls[0].inputs[:1]]
    raise NotImplementedError(b)


def mixed_precision(policy: str) -> dict:
    """Under ``policy``: SPOCU's values in float16/bfloat16 and a few training steps of a model using it."""
    import keras

    import spocu.keras
    from reference_checks import assert_matches_reference, wide_inputs
    from spocu.core import SPOCUParams

    half = policy.split("_")[1]
    old = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        layer = spocu.keras.SPOCU(c=2.0)
        x64 = wide_inputs(half, SPOCUParams(c=2.0))
        y = layer(x64.astype("float32"))
        out_dtype = keras.backend.standardize_dtype(y.dtype)
        x_in, y_fn, g_fn = value_and_grad(spocu.keras.spocu, x64, half)
        assert_matches_reference(x_in, to_float64(y), SPOCUParams(c=2.0), half)
        assert_matches_reference(x_in, y_fn, SPOCUParams(), half)
        assert_matches_reference(x_in, g_fn, SPOCUParams(), half, derivative=True)
        model = keras.Sequential(
            [
                keras.Input((8,)),
                keras.layers.Dense(16, activation=spocu.keras.spocu),
                spocu.keras.SPOCU(c=1.0, learnable=True),
                keras.layers.Dense(1),
            ]
        )
        rng = np.random.default_rng(0)
        model.compile(optimizer="adam", loss="mse")
        history = model.fit(rng.normal(size=(64, 8)), rng.normal(size=(64, 1)), epochs=2, batch_size=16, verbose=0)
        hidden = keras.backend.standardize_dtype(model.layers[0].compute_dtype)
        raw_dtype = keras.backend.standardize_dtype(model.layers[1].raw_alpha.dtype)
        return {
            "layer_output": out_dtype,
            "hidden_compute": hidden,
            "weights": raw_dtype,
            "loss": [float(v) for v in history.history["loss"]],
        }
    finally:
        keras.config.set_dtype_policy(old)


def seed_cnn() -> dict:
    """The seed's CIFAR-10 CNN with ``activation=SPOCU(alpha, beta, gamma)``, on 200 random images."""
    import keras

    from spocu.spocu_tensorflow import SPOCU

    spocu = SPOCU(3.0937, 0.6653, 4.437)
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Conv2D(filters=32, kernel_size=(3, 3), activation=spocu),
            keras.layers.MaxPool2D(),
            keras.layers.Conv2D(filters=64, kernel_size=(3, 3), activation=spocu),
            keras.layers.MaxPool2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(), metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x, y = rng.random((200, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, (200, 1))
    history = model.fit(x, y, batch_size=100, epochs=1, verbose=0)
    loss, accuracy = model.evaluate(x, y, verbose=0)
    return {
        "params": int(model.count_params()),
        "fit_loss": float(history.history["loss"][0]),
        "eval_loss": float(loss),
        "accuracy": float(accuracy),
    }


def second_derivative_error() -> float | None:
    """Max relative error of s'' against the reference on the active piece (None where unsupported)."""
    import keras

    import spocu.keras
    from spocu.core import reference_spocu_grad2

    b = keras.backend.backend()
    x64 = np.linspace(-2.5, 12.0, 97)
    if b == "tensorflow":
        import tensorflow as tf

        x = tf.constant(x64)
        with tf.GradientTape() as outer:
            outer.watch(x)
            with tf.GradientTape() as inner:
                inner.watch(x)
                y = spocu.keras.spocu(x)
            g = inner.gradient(y, x)
        g2 = to_float64(outer.gradient(g, x))
    elif b == "jax":
        import jax

        with jax.enable_x64(True):
            g2 = jax.vmap(jax.grad(jax.grad(lambda v: spocu.keras.spocu(v))))(jax.numpy.asarray(x64))
            g2 = np.asarray(g2)
    elif b == "torch":
        import torch

        x = torch.tensor(x64, requires_grad=True)
        (g,) = torch.autograd.grad(spocu.keras.spocu(x).sum(), x, create_graph=True)
        (g2,) = torch.autograd.grad(g.sum(), x)
        g2 = to_float64(g2)
    else:
        return None
    ref = reference_spocu_grad2(x64)
    return float(np.max(np.abs(g2 - ref) / np.maximum(np.abs(ref), 1.0)))


def backend_checks() -> dict:
    return {
        "backend": backend(),
        "saved_for_backward": saved_for_backward(),
        "second_derivative_error": second_derivative_error(),
        "mixed_float16": mixed_precision("mixed_float16"),
        "mixed_bfloat16": mixed_precision("mixed_bfloat16"),
        "seed_cnn": seed_cnn(),
        "promoted": promoted_dtypes(),
    }


def main(argv: list[str]) -> int:
    mode = argv[1]
    if mode == "values":
        np.savez(argv[2], **parity_values())
    elif mode == "edges":
        np.savez(argv[2], **edge_values())
    elif mode == "promote":
        print("REPORT " + json.dumps(promoted_dtypes()))
    elif mode == "save":
        report = {"models": save_models(argv[2]), "checks": backend_checks()}
        print("REPORT " + json.dumps(report, allow_nan=True))
    elif mode == "load":
        np.savez(argv[3], **load_models(argv[2]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    raise SystemExit(main(sys.argv))
