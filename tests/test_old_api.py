"""The drop-ins of the original ``spocu`` 0.0.1 API: three parameters (the seed's code) or four (with c)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from spocu.core import reference_spocu

SEED = (3.0937, 0.6653, 4.437)
X = np.linspace(-20.0, 30.0, 101)


@pytest.mark.parametrize("c", [None, math.inf, 1.0, 2.5])
def test_pytorch_drop_in_three_and_four_positionals(c):
    torch = pytest.importorskip("torch")
    from spocu.spocu_pytorch import SPOCU

    layer = SPOCU(*SEED) if c is None else SPOCU(*SEED, c)
    want_c = math.inf if c is None else c
    assert layer.c == want_c
    out = layer(torch.tensor(X, dtype=torch.float64)).numpy()
    np.testing.assert_allclose(out, reference_spocu(X, *SEED, want_c), rtol=1e-12, atol=1e-12)
    if c is not None:
        assert SPOCU(*SEED, c=c).c == want_c  # also by keyword


def test_pytorch_drop_in_rejects_a_bad_c():
    pytest.importorskip("torch")
    from spocu.spocu_pytorch import SPOCU

    with pytest.raises(ValueError, match="c=0.5"):
        SPOCU(*SEED, 0.5)


_KERAS_CHECKS = """
import math, numpy as np, keras, tempfile, os
from spocu.spocu_tensorflow import SPOCU
from spocu.core import reference_spocu
x = np.linspace(-20.0, 30.0, 101).astype("float32")
data = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
for layer in (SPOCU(3.0937, 0.6653, 4.437), SPOCU(3.0937, 0.6653, 4.437, float("inf")), SPOCU(3.0937, 0.6653, 4.437, 1.0)):
    y = keras.ops.convert_to_numpy(layer(x)).astype(np.float64)
    ref = reference_spocu(x.astype(np.float64), 3.0937, 0.6653, 4.437, layer.c)
    assert np.allclose(y, ref, rtol=1e-5, atol=1e-5), np.abs(y - ref).max()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation=layer)])
    path = os.path.join(tempfile.mkdtemp(), "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert np.array_equal(keras.ops.convert_to_numpy(model(data)), keras.ops.convert_to_numpy(loaded(data)))
    print(repr(layer.c), repr(loaded.layers[0].activation.c))
"""


@pytest.mark.slow
def test_tensorflow_drop_in_three_and_four_positionals_save_and_load():
    pytest.importorskip("keras")
    # Keras's backend is fixed per process: check in a fresh one, as a user would
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", _KERAS_CHECKS], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-3:] == ["inf inf", "inf inf", "1.0 1.0"]
