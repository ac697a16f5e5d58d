"""spocu.keras.register_activation_name on the installed Keras: activation="spocu" / "spocu_c1", in process and
through save -> load_model (and a hand-written config) in fresh processes.

The function writes into Keras's private table of activation names; these tests pin that it still works (and
that, without it, Keras does not resolve the names) on the Keras installed here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

keras = pytest.importorskip("keras", reason="Keras is not installed (pip install 'spocu[keras]')")

import spocu.keras  # noqa: E402
from spocu.core import reference_spocu  # noqa: E402

X = np.linspace(-12.0, 25.0, 75).astype("float32")


def _fresh(code: str) -> str:
    """Run code in a fresh interpreter (nothing registered yet), on this process's Keras backend."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND=keras.backend.backend())
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_names_resolve_to_the_functions_and_compute_spocu():
    spocu.keras.register_activation_name()
    spocu.keras.register_activation_name()  # idempotent
    assert keras.activations.get("spocu") is spocu.keras.spocu
    assert keras.activations.get("spocu_c1") is spocu.keras.spocu_c1
    for name, c in (("spocu", float("inf")), ("spocu_c1", 1.0)):
        y = keras.ops.convert_to_numpy(keras.activations.get(name)(X)).astype(np.float64)
        np.testing.assert_allclose(y, reference_spocu(X.astype(np.float64), c=c), rtol=1e-5, atol=1e-5)
        layer = keras.layers.Dense(3, activation=name)
        assert layer.activation is spocu.keras.names.ACTIVATION_NAMES[name]


def test_a_name_taken_by_another_activation_is_not_overwritten(monkeypatch):
    from keras.src import activations as private

    monkeypatch.setitem(private.ALL_OBJECTS_DICT, "spocu_c1", keras.activations.relu)
    with pytest.raises(RuntimeError, match="'spocu_c1' is already taken"):
        spocu.keras.register_activation_name()
    assert private.ALL_OBJECTS_DICT["spocu_c1"] is keras.activations.relu


def test_a_keras_without_the_table_gets_a_clear_error(monkeypatch):
    from keras.src import activations as private

    monkeypatch.delattr(private, "ALL_OBJECTS_DICT")
    with pytest.raises(RuntimeError, match="has no activation table.*activation=spocu.keras.spocu"):
        spocu.keras.register_activation_name()


def test_without_registration_keras_does_not_resolve_the_name():
    # pins the reason the opt-in exists: Keras reads only its own table, custom_object_scope does not help
    out = _fresh(
        "import keras, spocu.keras\n"
        "with keras.saving.custom_object_scope({'spocu': spocu.keras.spocu}):\n"
        "    try:\n"
        "        keras.activations.get('spocu'); print('resolved')\n"
        "    except ValueError as e:\n"
        "        print('refused')\n"
    )
    assert out == "refused"


@pytest.mark.slow
def test_save_and_load_model_in_a_fresh_process(tmp_path):
    spocu.keras.register_activation_name()
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(6, activation="spocu"),
            keras.layers.Dense(5, activation="spocu_c1"),
            keras.layers.Dense(1),
        ]
    )
    data = np.random.default_rng(0).normal(0, 3, size=(8, 4)).astype("float32")
    path = tmp_path / "named.keras"
    model.save(path)
    np.save(tmp_path / "data.npy", data)
    np.save(tmp_path / "want.npy", keras.ops.convert_to_numpy(model(data)))
    # hidden layer values against the reference: the strings really computed SPOCU with c = inf and c = 1
    hidden = keras.ops.convert_to_numpy(model.layers[0](data)).astype(np.float64)
    pre = data.astype(np.float64) @ keras.ops.convert_to_numpy(model.layers[0].kernel).astype(np.float64)
    np.testing.assert_allclose(hidden, reference_spocu(pre), rtol=1e-4, atol=1e-4)
    # a fresh process that only imports spocu.keras (the saved names are the registered "spocu>...")
    out = _fresh(
        "import numpy as np, keras, spocu.keras\n"
        f"m = keras.models.load_model({str(path)!r})\n"
        f"got = keras.ops.convert_to_numpy(m(np.load({str(tmp_path / 'data.npy')!r})))\n"
        f"print(np.array_equal(got, np.load({str(tmp_path / 'want.npy')!r})), "
        "m.layers[0].activation is spocu.keras.spocu, m.layers[1].activation is spocu.keras.spocu_c1)\n"
    )
    assert out == "True True True"


@pytest.mark.slow
def test_hand_written_config_with_plain_names_loads_after_registration():
    config = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(2, activation="relu"), keras.layers.Dense(2, activation="relu")]
    ).to_json()
    as_dict = json.loads(config)
    as_dict["config"]["layers"][1]["config"]["activation"] = "spocu"  # layers[0] is the InputLayer
    as_dict["config"]["layers"][2]["config"]["activation"] = "spocu_c1"
    out = _fresh(
        "import keras, spocu.keras\n"
        "spocu.keras.register_activation_name()\n"
        f"m = keras.models.model_from_json({json.dumps(as_dict)!r})\n"
        "print(m.layers[0].activation is spocu.keras.spocu, m.layers[1].activation is spocu.keras.spocu_c1)\n"
    )
    assert out == "True True"
