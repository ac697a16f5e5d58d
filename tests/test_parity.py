"""One parity matrix: every SPOCU implementation against the float64 reference.

For the same wide inputs (both flat pieces, the active piece densely, tiny and
huge magnitudes; see ``reference_checks.wide_inputs``) and every parameter set,
the values and gradients of

* ``spocu.torch.spocu``                      (PyTorch, on each kernel path: plain ops, the C++
                                             kernels -- through the C++ autograd node and through the
                                             Python Function --, Inductor, Triton -- on CUDA, else its CPU
                                             interpreter; and learnable SPOCU, tensor parameters with
                                             their gradients too, on plain ops, the learnable C++ node,
                                             the fused Function over the C++ kernels and over Inductor's),
* ``spocu.jax.spocu``                        (JAX; float64 under ``jax.enable_x64``),
* ``spocu.keras.spocu`` on Keras's TensorFlow, JAX and torch backends

must equal the float64 reference within the principled tolerances of
``reference_checks.assert_matches_reference``, in float32, float64, float16 and
bfloat16. Keras backends other than this process's run in subprocesses (Keras
picks its backend once per process). A framework that is not installed is
skipped with the reason, never passed.

A second matrix (``test_kinks_and_non_finite_inputs_equal_the_reference``) runs
the edge cases through every path of every framework -- torch eager, fused
(Inductor), learnable plain, C++ (node and Function) and fused (Inductor), ``torch.compile`` (fixed and learnable),
``torch.export`` (what ONNX export traces); JAX with float and with array parameters; Keras with float and tensor
parameters and the layer, on each backend -- against the float64 reference of
the value, of s' and of the parameter derivatives
(:func:`spocu.core.reference_spocu_param_grads`): one convention everywhere,
s' = 0 exactly at the kinks x = -gamma*beta and x = gamma*(c - beta), on the flat
pieces and at x = +-inf, and no NaN for any non-NaN input.
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

from reference_checks import PARAM_SETS, assert_matches_reference, assert_param_grads_match_reference, wide_inputs
from spocu.core import SPOCUParams, reference_spocu, reference_spocu_grad, reference_spocu_param_grads

WORKER = Path(__file__).parent / "test_keras" / "keras_worker.py"
FRAMEWORKS = ["torch", "jax", "keras-tensorflow", "keras-jax", "keras-torch"]
DTYPES = ["float32", "float64", "float16", "bfloat16"]


def _missing(framework: str) -> str | None:
    needed = ["keras", framework.split("-")[1]] if framework.startswith("keras-") else [framework]
    absent = [m for m in needed if importlib.util.find_spec(m) is None]
    return f"{' and '.join(absent)} not installed, so {framework} cannot be compared" if absent else None


#: the kernel paths of spocu.torch that the matrix forces (``backend=``), each its own column: "cpp" is
#: the C++ autograd node (after ``build_kernels()``), "cpp-function" the Python Function over the same kernels
TORCH_PATHS = ["eager", "cpp", "cpp-function", "inductor", "triton"]
#: learnable SPOCU (tensor parameters, one per element along dim 1: per-element parameter gradients):
#: plain ops, the learnable C++ node, the fused Python Function over the C++ kernels, over Inductor's
LEARNABLE_PATHS = ["learnable-eager", "learnable-cpp", "learnable-cpp-function", "learnable-inductor"]
#: the autograd route each path must take (its grad_fn, or the kernels a fused Function recorded)
ROUTES = {
    "eager": "over spocu.torch._eager",
    "cpp": "FixedSPOCU",
    "cpp-function": "over spocu.torch._cpp",
    "inductor": "over spocu.torch._inductor",
    "triton": "over spocu.torch._triton",
    "learnable-eager": "_LearnableSPOCUBackward",
    "learnable-cpp": "CppNode<spocu::LearnableSPOCU>",
    "learnable-cpp-function": "over _CppKernels",
    "learnable-inductor": "over _InductorKernels",
}


def _route(y) -> str:
    """The grad_fn's name, and for a Python Function the kernels it recorded."""
    kernels = getattr(y.grad_fn, "kernels", None)  # (a Python Function's grad_fn is its context)
    return y.grad_fn.name() + ("" if kernels is None else f" over {kernels.__name__}")


def _param_dtype(dtype: str) -> str:
    """Learnable parameters' dtype in the matrix: the compute dtype (float32 for the half types)."""
    return "float64" if dtype == "float64" else "float32"


def learnable_params(params, dtype: str):
    """``params`` as learnable SPOCU holds them in ``dtype``'s matrix: alpha, beta, gamma rounded to
    the parameters' dtype (the reference is taken at these values)."""
    rounded = [float(np.asarray(v, _param_dtype(dtype))) for v in (params.alpha, params.beta, params.gamma)]
    return SPOCUParams(*rounded, c=params.c)


#: the columns this session's selected tests use (set by the ``values`` and ``edges`` fixtures before they
#: compute): the slow tier's columns (compiled, interpreted, the optional C++ node) cost nothing when deselected
_WANTED: frozenset[str] | None = None

#: columns that compile (Inductor, torch.compile, torch.export), interpret (Triton on CPU) or build the
#: optional C++ autograd node (torch.utils.cpp_extension): seconds to minutes each, so marked slow
SLOW_COLUMNS = frozenset(
    {
        "torch-cpp",
        "torch-inductor",
        "torch-triton",
        "torch-learnable-cpp",
        "torch-learnable-inductor",
        "torch-fused",
        "torch-learnable-fused",
        "torch-export",
        "torch-compiled",
        "torch-learnable-compiled",
    }
)


def _columns(names) -> list:
    """``names`` as pytest params, the :data:`SLOW_COLUMNS` marked slow."""
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_COLUMNS else n for n in names]


def _wanted(column: str) -> bool:
    return _WANTED is None or column in _WANTED


def _select(request, argname: str) -> None:
    """Remember which ``argname`` values the selected tests of this module use (after ``-m``)."""
    global _WANTED
    _WANTED = frozenset(
        item.callspec.params[argname]
        for item in request.session.items
        if getattr(item, "module", None) is request.module
        and hasattr(item, "callspec")
        and argname in item.callspec.params
    )


def _torch_path_unavailable(path: str) -> tuple[str | None, str]:
    """(why ``path`` cannot run here or None, the device it runs on)."""
    import torch

    path = path.removeprefix("learnable-")
    if path == "cpp-function":  # the kernels built at install, without the optional node
        from spocu.torch import _cpp

        status = _cpp.load()
        return (
            None if status["state"] == "ready" else f"the C++ kernels are unavailable here: {status['reason']}"
        ), "cpu"
    if path == "cpp":
        import spocu.torch

        status = spocu.torch.build_kernels(timeout=600)
        if status["state"] != "ready":
            return f"the C++ kernels are unavailable here: {status['reason']}", "cpu"
        if path == "cpp" and status["node_state"] != "ready":
            return f"the C++ autograd node is {status['node_state']}: {status['node_reason']}", "cpu"
        return None, "cpu"
    if path == "inductor":
        from spocu.torch import _inductor

        return _inductor.unavailable_reason(), "cpu"
    if path == "triton":
        if importlib.util.find_spec("triton") is None:
            return "triton is not installed", "cpu"
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            os.environ["TRITON_INTERPRET"] = "1"  # Triton's CPU interpreter (read lazily by Triton)
        from spocu.torch import _triton

        return _triton.unavailable_reason(torch.device(device)), device
    return None, "cpu"


def _torch_values() -> dict[str, np.ndarray | str]:
    """Keyed ``path/dtype/params/{x,y,g}``, or ``path/unavailable`` with the reason."""
    import torch

    from spocu.torch import _node, spocu

    as64 = lambda t: t.detach().cpu().to(torch.float64).numpy()  # noqa: E731
    out: dict[str, np.ndarray | str] = {}
    for path in TORCH_PATHS + LEARNABLE_PATHS:
        if not _wanted(f"torch-{path}"):
            continue
        reason, device = _torch_path_unavailable(path)
        if reason is not None:
            out[f"{path}/unavailable"] = reason
            continue
        learnable = path.startswith("learnable-")
        backend = path.removeprefix("learnable-").removesuffix("-function")
        _node.ENABLED = not path.endswith("-function")  # "-function": the C++ kernels without the node
        try:
            for dtype in DTYPES:
                for name, params in PARAM_SETS.items():
                    key = f"{path}/{dtype}/{name}"
                    x = torch.tensor(wide_inputs(dtype, params), dtype=torch.float64).to(getattr(torch, dtype))
                    if not learnable:
                        x = x.to(device).requires_grad_(True)
                        y = spocu(x, **params.as_dict(), backend=backend)
                        y.backward(torch.ones_like(y))
                        assert y.dtype == x.dtype and y.device == x.device
                        out[f"{key}/x"], out[f"{key}/y"], out[f"{key}/g"] = as64(x), as64(y), as64(x.grad)
                        out[f"{key}/route"] = _route(y)
                        continue
                    # one channel per element (x of shape (1, n)): per-element parameter gradients
                    x = x[None, :].to(device).requires_grad_(True)
                    held = learnable_params(params, dtype)
                    pdtype = getattr(torch, _param_dtype(dtype))
                    ps = [torch.full((x.shape[1],), v, dtype=pdtype, device=device, requires_grad=True)
                          for v in (held.alpha, held.beta, held.gamma)]  # fmt: skip
                    y = spocu(x, *ps, c=held.c, backend=backend)
                    y.backward(torch.ones_like(y))
                    assert y.dtype == x.dtype and y.device == x.device and x.grad.dtype == x.dtype
                    assert all(p.grad.dtype == pdtype for p in ps)
                    out[f"{key}/x"], out[f"{key}/y"], out[f"{key}/g"] = as64(x[0]), as64(y[0]), as64(x.grad[0])
                    for pname, p in zip(("alpha", "beta", "gamma"), ps):
                        out[f"{key}/g{pname}"] = as64(p.grad)
                    out[f"{key}/route"] = _route(y)
        finally:
            _node.ENABLED = True
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
    # isort: off
    import keras_worker  # noqa: F401  before keras: it loads Triton before TensorFlow (see there)
    import keras

    # isort: on
    return keras.backend.backend()


def _across_frameworks(kind: str, tmp: str, in_process: dict, prefix: bool) -> dict[str, dict[str, np.ndarray] | str]:
    """Every installed framework's ``kind`` ("values" or "edges") results: torch and JAX here (``in_process``),
    this process's Keras backend through ``keras_worker``, the other Keras backends in parallel
    subprocesses. ``prefix``: key the Keras results by path (``keras-jax-fixed/...``)."""
    current = _keras_in_process()
    procs = {}
    for fw in FRAMEWORKS:
        if fw.startswith("keras-") and _missing(fw) is None and fw != f"keras-{current}":
            env = {
                **os.environ,
                "KERAS_BACKEND": fw.split("-")[1],
                "TF_CPP_MIN_LOG_LEVEL": "3",
                "JAX_PLATFORMS": "cpu",
                "JAX_ENABLE_X64": "1",
            }  # a process of its own: float64 on Keras's JAX backend needs x64
            procs[fw] = subprocess.Popen(
                [sys.executable, str(WORKER), kind, f"{tmp}/{fw}.npz"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
    named = (lambda fw, got: {f"{fw}-{k}": v for k, v in got.items()}) if prefix else (lambda fw, got: dict(got))
    results: dict[str, dict[str, np.ndarray] | str] = {}
    for fw in FRAMEWORKS:
        if (reason := _missing(fw)) is not None:
            results[fw] = reason
        elif fw in in_process:
            results[fw] = in_process[fw]()
        elif fw == f"keras-{current}":
            import keras_worker

            results[fw] = named(fw, keras_worker.parity_values() if kind == "values" else keras_worker.edge_values())
    for fw, proc in procs.items():
        _, err = proc.communicate(timeout=600)
        if proc.returncode != 0:
            raise AssertionError(f"the {fw} worker failed (exit {proc.returncode}):\n{err[-4000:]}")
        results[fw] = named(fw, np.load(f"{tmp}/{fw}.npz"))
    return results


@lru_cache(maxsize=1)
def _all_values(tmp: str) -> dict[str, dict[str, np.ndarray] | str]:
    """Every installed framework's values (subprocesses for the other Keras backends run in parallel)."""
    return _across_frameworks("values", tmp, {"torch": _torch_values, "jax": _jax_values}, prefix=False)


@pytest.fixture(scope="module")
def values(request, tmp_path_factory):
    _select(request, "framework")
    return _all_values(str(tmp_path_factory.mktemp("parity")))


def _column(framework: str, values) -> tuple[dict, str]:
    """(the results of ``framework``, the prefix of its keys); ``torch-PATH`` is one path of torch's."""
    if framework.startswith("torch-"):
        got = values["torch"]
        if isinstance(got, str):
            pytest.skip(got)
        path = framework.removeprefix("torch-")
        if f"{path}/unavailable" in got:
            pytest.skip(f"torch path {path!r}: {got[f'{path}/unavailable']}")
        return got, f"{path}/"
    got = values[framework]
    if isinstance(got, str):
        pytest.skip(got)
    return got, ""


# Triton's CPU interpreter evaluates in NumPy, which warns where float32 overflows to inf on purpose (huge inputs)
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("param_name", list(PARAM_SETS))
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "framework",
    _columns([*(f"torch-{p}" for p in TORCH_PATHS + LEARNABLE_PATHS), *(f for f in FRAMEWORKS if f != "torch")]),
)
def test_value_and_gradient_equal_the_reference(framework, dtype, param_name, values):
    got, prefix = _column(framework, values)
    key = f"{prefix}{dtype}/{param_name}"
    if f"{key}/x" not in got:
        pytest.skip(f"{framework} does not compute in {dtype} in this configuration")
    params = PARAM_SETS[param_name]
    path = prefix.removesuffix("/")
    if path in ROUTES:  # the path asked for is the path that ran
        assert ROUTES[path] in got[f"{key}/route"], f"{framework} ran {got[f'{key}/route']}, not {ROUTES[path]}"
    if path.startswith("learnable-"):
        params = learnable_params(params, dtype)  # the reference at the parameters as held
    x = got[f"{key}/x"]
    # every framework saw the same points (rounded to dtype)
    np.testing.assert_array_equal(x, _rounded_inputs(dtype, param_name, values))
    assert_matches_reference(x, got[f"{key}/y"], params, dtype)
    if not path.startswith("learnable-"):
        assert_matches_reference(x, got[f"{key}/g"], params, dtype, derivative=True)
        return
    grads = {name: got[f"{key}/g{name}"] for name in ("alpha", "beta", "gamma")}
    assert_matches_reference(x, got[f"{key}/g"], params, dtype, derivative=True)
    assert_param_grads_match_reference(x, grads, params, dtype)


def _rounded_inputs(dtype: str, param_name: str, values) -> np.ndarray:
    """The inputs rounded to dtype, as the first installed framework (torch: its plain-ops path) saw them."""
    for fw in FRAMEWORKS:
        got = values[fw]
        for key in (f"{dtype}/{param_name}/x", f"eager/{dtype}/{param_name}/x"):
            if not isinstance(got, str) and key in got:
                return got[key]
    raise AssertionError("no framework computed these inputs")


# ---------------------------------------------------------------- kinks and non-finite inputs

sys.path.insert(0, str(WORKER.parent))
from keras_worker import EDGE_PARAMS, edge_inputs  # noqa: E402  (plain NumPy: imports no framework)

EDGE_DTYPES = ("float32", "float64")
#: the largest finite value per dtype; a reference beyond it must come back as an infinity of its sign
#: or saturated (at least max/1024: the fixed-parameter kernels stop s' a little below max/16)
EDGE_MAX = {"float32": float(np.finfo(np.float32).max), "float64": float(np.finfo(np.float64).max)}
EDGE_RTOL = {"float32": 2e-5, "float64": 1e-11}


def _record(out: dict, path: str, key: str, fn) -> None:
    """out[path/key/...] = fn()'s arrays, or the error text (reported by the test, not swallowed)."""
    try:
        for name, value in fn().items():
            out[f"{path}/{key}/{name}"] = value
    except Exception as error:  # noqa: BLE001 -- each path fails its own test with the message
        out[f"{path}/{key}/error"] = f"{type(error).__name__}: {error}"


def _torch_edges() -> dict:
    import torch

    from spocu.torch import SPOCU, _node, spocu

    as64 = lambda t: t.detach().to(torch.float64).numpy()  # noqa: E731
    out: dict = {}

    def fixed(x64, dtype, a, b, g, c, backend):
        def run():
            x = torch.tensor(x64, dtype=getattr(torch, dtype), requires_grad=True)
            y = spocu(x, a, b, g, c, backend=backend)
            y.backward(torch.ones_like(y))
            return {"x": as64(x), "y": as64(y), "gx": as64(x.grad)}

        return run

    def tensor_params(x64, dtype, a, b, g, c, backend, node=True):
        def run():  # one parameter per channel (dim 1) and one element per channel: per-element gradients
            tdt = getattr(torch, dtype)
            x = torch.tensor(x64, dtype=tdt)[None, :].requires_grad_(True)
            ps = [torch.full((x.shape[1],), p, dtype=tdt, requires_grad=True) for p in (a, b, g)]
            _node.ENABLED = node  # False: the fused Function over the C++ kernels instead of the C++ node
            try:
                y = spocu(x, *ps, c, backend=backend)
            finally:
                _node.ENABLED = True
            y.backward(torch.ones_like(y))
            return {
                "x": as64(x[0]),
                "y": as64(y[0]),
                "gx": as64(x.grad[0]),
                "galpha": as64(ps[0].grad),
                "gbeta": as64(ps[1].grad),
                "ggamma": as64(ps[2].grad),
            }

        return run

    def exported(x64, dtype, a, b, g, c):
        def run():
            tdt = getattr(torch, dtype)
            module = SPOCU(a, b, g, c)
            program = torch.export.export(module, (torch.zeros(len(x64), dtype=tdt),))
            x = torch.tensor(x64, dtype=tdt, requires_grad=True)
            y = program.module()(x)
            y.backward(torch.ones_like(y))
            return {"x": as64(x), "y": as64(y), "gx": as64(x.grad)}

        return run

    def compiled(x64, dtype, a, b, g, c, learnable):
        def run():  # torch.compile(fullgraph=True) with Inductor: the traced path, its compiled backward
            tdt = getattr(torch, dtype)
            x = torch.tensor(x64, dtype=tdt)[None, :].requires_grad_(True)
            ps = [torch.full((x.shape[1],), p, dtype=tdt, requires_grad=True) for p in (a, b, g)] if learnable else []
            fn = torch.compile(lambda t, *q: spocu(t, *(q or (a, b, g)), c), fullgraph=True)
            y = fn(x, *ps)
            y.backward(torch.ones_like(y))
            got = {"x": as64(x[0]), "y": as64(y[0]), "gx": as64(x.grad[0])}
            if learnable:
                got.update(galpha=as64(ps[0].grad), gbeta=as64(ps[1].grad), ggamma=as64(ps[2].grad))
            return got

        return run

    node = _wanted("torch-learnable-cpp") and _torch_path_unavailable("cpp")[0] is None  # (builds the C++ node)
    kernels = _wanted("torch-learnable-cpp-function") and _torch_path_unavailable("cpp-function")[0] is None

    def record(column: str, key: str, run) -> None:
        if _wanted(column):
            _record(out, column, key, run)

    for dtype in EDGE_DTYPES:
        for name, (a, b, g, c) in EDGE_PARAMS.items():
            x64, key = edge_inputs(dtype), f"{dtype}/{name}"
            record("torch-eager", key, fixed(x64, dtype, a, b, g, c, "eager"))
            record("torch-learnable", key, tensor_params(x64, dtype, a, b, g, c, "eager"))
            if node:
                record("torch-learnable-cpp", key, tensor_params(x64, dtype, a, b, g, c, "cpp"))
            if kernels:
                record("torch-learnable-cpp-function", key, tensor_params(x64, dtype, a, b, g, c, "cpp", False))
            record("torch-export", key, exported(x64, dtype, a, b, g, c))
            if dtype == "float32":  # the fused kernels are compiled per dtype: one is enough here
                record("torch-fused", key, fixed(x64, dtype, a, b, g, c, "inductor"))
                record("torch-learnable-fused", key, tensor_params(x64, dtype, a, b, g, c, "inductor"))
                record("torch-compiled", key, compiled(x64, dtype, a, b, g, c, learnable=False))
                record("torch-learnable-compiled", key, compiled(x64, dtype, a, b, g, c, learnable=True))
    return out


def _jax_edges() -> dict:
    import jax
    import jax.numpy as jnp

    from spocu.jax import spocu

    out: dict = {}
    with jax.enable_x64(True):
        for dtype in EDGE_DTYPES:
            for name, (a, b, g, c) in EDGE_PARAMS.items():
                x = jnp.asarray(edge_inputs(dtype), dtype=dtype)
                key = f"{dtype}/{name}"

                def fixed():
                    y, vjp = jax.vjp(lambda v: spocu(v, a, b, g, c), x)
                    return {
                        "x": np.asarray(x, np.float64),
                        "y": np.asarray(y, np.float64),
                        "gx": np.asarray(vjp(jnp.ones_like(y))[0], np.float64),
                    }

                def arrays():
                    ps = [jnp.full(x.shape, p, dtype=dtype) for p in (a, b, g)]
                    y, vjp = jax.vjp(lambda *v: spocu(v[0], *v[1:], c=c), x, *ps)
                    grads = [np.asarray(t, np.float64) for t in vjp(jnp.ones_like(y))]
                    return {
                        "x": np.asarray(x, np.float64),
                        "y": np.asarray(y, np.float64),
                        "gx": grads[0],
                        "galpha": grads[1],
                        "gbeta": grads[2],
                        "ggamma": grads[3],
                    }

                _record(out, "jax-fixed", key, fixed)
                _record(out, "jax-array", key, arrays)
    return out


@lru_cache(maxsize=1)
def _all_edges(tmp: str) -> dict[str, dict[str, np.ndarray] | str]:
    """Edge-case values per framework (the other Keras backends in parallel subprocesses)."""
    return _across_frameworks("edges", tmp, {"torch": _torch_edges, "jax": _jax_edges}, prefix=True)


@pytest.fixture(scope="module")
def edges(request, tmp_path_factory):
    _select(request, "path")
    return _all_edges(str(tmp_path_factory.mktemp("edges")))


EDGE_PATHS = {
    "torch": [
        "torch-eager",
        "torch-fused",
        "torch-learnable",
        "torch-learnable-cpp",
        "torch-learnable-cpp-function",
        "torch-learnable-fused",
        "torch-export",
        "torch-compiled",
        "torch-learnable-compiled",
    ],
    "jax": ["jax-fixed", "jax-array"],
    **{
        f"keras-{b}": [f"keras-{b}-fixed", f"keras-{b}-tensor", f"keras-{b}-layer"]
        for b in ("tensorflow", "jax", "torch")
    },
}


def _assert_edge(got: np.ndarray, ref: np.ndarray, x: np.ndarray, dtype: str, what: str) -> None:
    def where(mask: np.ndarray) -> str:
        return ", ".join(f"x={xi!r}: got {gi!r}, reference {ri!r}" for xi, gi, ri in zip(x[mask], got[mask], ref[mask]))

    nan = np.isnan(got)
    assert not nan.any(), f"{what}: NaN for a non-NaN input at {where(nan)}"
    big = EDGE_MAX[dtype]
    over = np.abs(ref) > big
    bad = over & ~((np.sign(got) == np.sign(ref)) & (np.abs(got) >= big / 1024))
    assert not bad.any(), f"{what}: beyond the {dtype} range the result must overflow or saturate; {where(bad)}"
    exact = ~over & ((ref == 0) | ~np.isfinite(x))  # the convention: exact at the kinks, flat pieces, +-inf
    bad = exact & (got != ref)
    assert not bad.any(), f"{what}: must equal the reference exactly at {where(bad)}"
    rest = ~over & ~exact
    with np.errstate(invalid="ignore"):  # (inf - inf where both overflow: not in rest)
        bad = rest & (np.abs(got - ref) > EDGE_RTOL[dtype] * np.maximum(np.abs(ref), 1.0))
    assert not bad.any(), f"{what}: off the reference at {where(bad)}"


@pytest.mark.parametrize("param_name", list(EDGE_PARAMS))
@pytest.mark.parametrize("dtype", EDGE_DTYPES)
@pytest.mark.parametrize("path", _columns([p for paths in EDGE_PATHS.values() for p in paths]))
def test_kinks_and_non_finite_inputs_equal_the_reference(path, dtype, param_name, edges):
    framework = next(fw for fw, paths in EDGE_PATHS.items() if path in paths)
    got = edges[framework]
    if isinstance(got, str):
        pytest.skip(got)
    key = f"{path}/{dtype}/{param_name}"
    if f"{key}/error" in got:
        raise AssertionError(f"{path} failed on the edge inputs: {got[f'{key}/error']}")
    if f"{key}/x" not in got:
        pytest.skip(
            f"{path} does not run in {dtype} here (fused and compiled paths: float32 only; JAX: no x64; "
            "C++ paths: no C++ kernels or node)"
        )
    a, b, g, c = EDGE_PARAMS[param_name]
    x = got[f"{key}/x"]
    np.testing.assert_array_equal(x, edge_inputs(dtype).astype(dtype).astype(np.float64))  # the same points
    with np.errstate(over="ignore", invalid="ignore"):
        refs = {"y": reference_spocu(x, a, b, g, c), "gx": reference_spocu_grad(x, a, b, g, c)}
        refs.update(zip(("galpha", "gbeta", "ggamma"), reference_spocu_param_grads(x, a, b, g, c)))
    checked = [name for name in refs if f"{key}/{name}" in got]
    assert {"y", "gx"} <= set(checked)
    if "learnable" in path or path.endswith(("-array", "-tensor")):
        assert {"galpha", "gbeta", "ggamma"} <= set(checked)
    for name in checked:
        _assert_edge(got[f"{key}/{name}"], refs[name], x, dtype, f"{path} {dtype} {param_name} {name}")
