"""One parity matrix: every SPOCU implementation against the float64 reference.

For the same wide inputs (both flat pieces, the active piece densely, tiny and
huge magnitudes; see ``reference_checks.wide_inputs``) and every parameter set,
the values and gradients of

* ``spocu.torch.spocu``                      (PyTorch),
* ``spocu.jax.spocu``                        (JAX; float64 under ``jax.enable_x64``),
* ``spocu.keras.spocu`` on Keras's TensorFlow, JAX and torch backends

must equal the float64 reference within the principled tolerances of
``reference_checks.assert_matches_reference``, in float32, float64, float16 and
bfloat16. Keras backends other than this process's run in subprocesses (Keras
picks its backend once per process). A framework that is not installed is
skipped with the reason, never passed.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from reference_checks import PARAM_SETS, assert_matches_reference, wide_inputs

WORKER = Path(__file__).parent / "test_keras" / "keras_worker.py"
FRAMEWORKS = ["torch", "jax", "keras-tensorflow", "keras-jax", "keras-torch"]
DTYPES = ["float32", "float64", "float16", "bfloat16"]


def _missing(framework: str) -> str | None:
    needed = ["keras", framework.split("-")[1]] if framework.startswith("keras-") else [framework]
    absent = [m for m in needed if importlib.util.find_spec(m) is None]
    return f"{' and '.join(absent)} not installed, so {framework} cannot be compared" if absent else None


def _torch_values() -> dict[str, np.ndarray]:
    import torch

    from spocu.torch import spocu

    out = {}
    for dtype in DTYPES:
        for name, params in PARAM_SETS.items():
            x = torch.tensor(wide_inputs(dtype, params), dtype=torch.float64).to(getattr(torch, dtype))
            x.requires_grad_(True)
            y = spocu(x, **params.as_dict())
            y.backward(torch.ones_like(y))
            as64 = lambda t: t.detach().to(torch.float64).numpy()  # noqa: E731
            key = f"{dtype}/{name}"
            out[f"{key}/x"], out[f"{key}/y"], out[f"{key}/g"] = as64(x), as64(y), as64(x.grad)
    return out


def _jax_values() -> dict[str, np.ndarray]:
    import jax
    import jax.numpy as jnp

    from spocu.jax import spocu

    out = {}
    with jax.enable_x64(True):  # only inside: other tests keep JAX's float32 default
        for dtype in DTYPES:
            for name, params in PARAM_SETS.items():
                x = jnp.asarray(wide_inputs(dtype, params), dtype=jnp.float64).astype(dtype)
                y, vjp = jax.vjp(lambda v: spocu(v, **params.as_dict()), x)
                (g,) = vjp(jnp.ones_like(y))
                assert y.dtype == x.dtype and g.dtype == x.dtype
                as64 = lambda a: np.asarray(a.astype(jnp.float64))  # noqa: E731
                out[f"{dtype}/{name}/x"], out[f"{dtype}/{name}/y"], out[f"{dtype}/{name}/g"] = as64(x), as64(y), as64(g)
    return out


def _keras_in_process() -> str | None:
    """The Keras backend of this process, if Keras is importable."""
    if importlib.util.find_spec("keras") is None:
        return None
    sys.path.insert(0, str(WORKER.parent))
    import keras_worker  # noqa: F401  before keras: it loads Triton before TensorFlow (see there)
    import keras

    return keras.backend.backend()


@lru_cache(maxsize=1)
def _all_values(tmp: str) -> dict[str, dict[str, np.ndarray] | str]:
    """Every installed framework's values (subprocesses for the other Keras backends run in parallel)."""
    current = _keras_in_process()
    procs = {}
    for fw in FRAMEWORKS:
        if fw.startswith("keras-") and _missing(fw) is None and fw != f"keras-{current}":
            b = fw.split("-")[1]
            env = {**os.environ, "KERAS_BACKEND": b, "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu",
                   "JAX_ENABLE_X64": "1"}  # a process of its own: float64 on Keras's JAX backend needs x64
            procs[fw] = subprocess.Popen([sys.executable, str(WORKER), "values", f"{tmp}/{fw}.npz"], env=env,
                                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results: dict[str, dict[str, np.ndarray] | str] = {}
    for fw in FRAMEWORKS:
        if (reason := _missing(fw)) is not None:
            results[fw] = reason
        elif fw == "torch":
            results[fw] = _torch_values()
        elif fw == "jax":
            results[fw] = _jax_values()
        elif fw == f"keras-{current}":
            import keras_worker

            results[fw] = keras_worker.parity_values()
    for fw, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise AssertionError(f"the {fw} worker failed (exit {proc.returncode}):\n{err[-4000:]}")
        results[fw] = dict(np.load(f"{tmp}/{fw}.npz"))
    return results


@pytest.fixture(scope="module")
def values(tmp_path_factory):
    return _all_values(str(tmp_path_factory.mktemp("parity")))


@pytest.mark.parametrize("param_name", list(PARAM_SETS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_value_and_gradient_equal_the_reference(framework, dtype, param_name, values):
    got = values[framework]
    if isinstance(got, str):
        pytest.skip(got)
    key = f"{dtype}/{param_name}"
    if f"{key}/x" not in got:
        pytest.skip(f"{framework} does not compute in {dtype} in this configuration")
    params = PARAM_SETS[param_name]
    x = got[f"{key}/x"]
    # every framework saw the same points (rounded to dtype)
    np.testing.assert_array_equal(x, _rounded_inputs(dtype, param_name, values))
    assert_matches_reference(x, got[f"{key}/y"], params, dtype)
    assert_matches_reference(x, got[f"{key}/g"], params, dtype, derivative=True)


def _rounded_inputs(dtype: str, param_name: str, values) -> np.ndarray:
    """The inputs rounded to dtype, as the first installed framework saw them."""
    for fw in FRAMEWORKS:
        got = values[fw]
        if not isinstance(got, str) and f"{dtype}/{param_name}/x" in got:
            return got[f"{dtype}/{param_name}/x"]
    raise AssertionError("no framework computed these inputs")
