"""Learnable SPOCU's four partials beyond u_cap = (max/1024)^(1/8) of the compute dtype (reachable with
c = inf or c > u_cap): equal to the float64 reference where they fit the compute dtype, saturated with
their sign where they overflow, NaN only for NaN, and never NaN from a zero upstream gradient; on each
path (the plain ops, the Function torch.compile traces, the C++ kernels in every copy this CPU runs,
Inductor's fused kernels), shared and per-channel parameters, float32, bfloat16 and float64.

Each element's parameter gradients are read one element at a time: the upstream gradient is 1 there and
0 everywhere else (so a saturated partial elsewhere must give 0, not NaN). The points sit among ordinary
inputs, first (the C++ register loops) or last (their scalar remainder), in rows (B > 1) and pixels (B = 1).
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest
import torch

from reference_checks import COMPUTE, MAX, assert_matches_reference, assert_param_grads_match_reference
from spocu.core import SPOCUParams, reference_spocu_grad, reference_spocu_param_grads
from spocu.torch import _cpp
from spocu.torch._learnable import _partial_cap, spocu_tensor_params

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}
#: (alpha, beta, gamma) of three channels; the shared cases take the first
CHANNELS = [(1.3, 0.4, 0.7), (0.8, 0.6, 2.5), (2.0, 0.2, 1.0)]


def _u_points(dtype: torch.dtype) -> list[float]:
    """u = x/gamma + beta: ordinary, just below and above u_cap, s' finite beyond it, s' overflowing, huge."""
    compute = torch.float64 if dtype == torch.float64 else torch.float32
    cap = _partial_cap(compute)
    beyond = [1e39, 1e45, 1e100, 1e300] if compute == torch.float64 else [1e5, 1e6, 1e30]
    return [0.3, 1.2, 3.0, cap * (1 - 1e-3), cap * (1 + 1e-3), 2 * cap, *beyond]


def _params(channels: int, dtype: torch.dtype) -> list[torch.Tensor]:
    pdtype = torch.float64 if dtype == torch.float64 else torch.float32
    return [torch.tensor([ch[k] for ch in CHANNELS[:channels]], dtype=pdtype) for k in range(3)]


def _points(dtype: torch.dtype, params: list[torch.Tensor], c: float) -> tuple[torch.Tensor, int]:
    """(points, how many of them are finite): per channel (columns), x rounded to ``dtype``; then +-inf."""
    us = _u_points(dtype)
    if math.isfinite(c):  # around and beyond the upper kink too: d/dalpha = r(c) - r(beta) on the flat top
        us += [c * (1 - 1e-3), c * (1 + 1e-3), 4 * c]
    columns = [[(u - float(b)) * float(g) for u in us] for b, g in zip(params[1].tolist(), params[2].tolist())]
    if dtype != torch.float64:  # a finite x whose x / gamma overflows (gamma < 1): not flat, saturated
        columns = [[*column, 0.9 * float(torch.finfo(dtype).max)] for column in columns]
    x = torch.tensor(columns, dtype=torch.float64).T.contiguous()  # (points, channels)
    rows = torch.cat([x, torch.full((2, x.shape[1]), math.inf), torch.full((1, x.shape[1]), -math.inf)])
    return rows.to(dtype), x.shape[0]


def _embed(points: torch.Tensor, layout: str, where: str) -> tuple[torch.Tensor, tuple]:
    """The points (P, C) among ordinary inputs: "row" (1, C, B) with B = P + 37, "pixel" (B, C) (C > 1) or
    "flat" (B,) (C = 1); ``where``: the points first or last. Returns x and the index of each point."""
    p, channels = points.shape
    filler = torch.linspace(-3, 5, 37, dtype=torch.float64).to(points.dtype).reshape(-1, 1).expand(-1, channels)
    block = torch.cat([points, filler] if where == "first" else [filler, points])
    offset = 0 if where == "first" else 37
    rows = torch.arange(offset, offset + p)
    if layout == "row":
        return block.T.unsqueeze(0).contiguous(), (rows,)
    if layout == "pixel":
        return block.contiguous(), (rows,)
    return block[:, 0].contiguous(), (rows,)


def _run(path: str, x: torch.Tensor, params: list[torch.Tensor], c: float, upstream: torch.Tensor):
    """(dL/dx, dL/dalpha, dL/dbeta, dL/dgamma) of sum(upstream * s(x)) on ``path``."""
    xx = x.clone().requires_grad_(True)
    ps = [p.clone().requires_grad_(True) for p in params]
    if path == "compiled":  # the Function torch.compile and export trace, run eagerly
        y = spocu_tensor_params(xx, *ps, c, traced=True)
    else:
        y = spocu_tensor_params(xx, *ps, c, path=path)
    if path == "cpp":
        assert y.grad_fn.name() == "_FusedLearnableSPOCUBackward"
    return torch.autograd.grad(y, [xx, *ps], upstream)


def _check(path: str, dtype_name: str, layout: str, where: str, c: float):
    dtype = DTYPES[dtype_name]
    channels = 1 if layout == "flat" else 3
    params = _params(channels, dtype)
    points, finite = _points(dtype, params, c)
    x, (rows,) = _embed(points, layout, where)
    index = (lambda i, k: (0, k, i)) if layout == "row" else (lambda i, k: (i, k)) if layout == "pixel" else None
    for k in range(channels):
        held = SPOCUParams(*(float(p[k]) for p in params), c=c)
        xs = points[:, k].double().numpy()
        got = {name: np.empty(len(xs)) for name in ("x", "alpha", "beta", "gamma")}
        for i, r in enumerate(rows.tolist()):
            at = (r,) if index is None else index(r, k)
            upstream = torch.zeros_like(x)
            upstream[at] = 1.0
            gx, ga, gb, gg = _run(path, x, params, c, upstream)
            assert not any(torch.isnan(g).any() for g in (gx, ga, gb, gg)), (path, xs[i], gx, ga, gb, gg)
            got["x"][i] = float(gx[at])
            for name, grad in zip(("alpha", "beta", "gamma"), (ga, gb, gg)):
                got[name][i] = float(grad[k])
        with np.errstate(over="ignore", invalid="ignore"):
            # s' beyond the compute dtype: saturated (the learnable convention) or inf, with its sign
            over = np.abs(reference_spocu_grad(xs[:finite], **held.as_dict())) > MAX[COMPUTE[dtype_name]] / 1024
            saturated = got["x"][:finite][over]
            assert (saturated >= MAX[COMPUTE[dtype_name]] / 1024).all(), (path, xs[:finite][over], saturated)
            assert_matches_reference(xs[:finite][~over], got["x"][:finite][~over], held, dtype_name, derivative=True)
            assert_param_grads_match_reference(
                xs[:finite], {n: got[n][:finite] for n in ("alpha", "beta", "gamma")}, held, dtype_name
            )
            # +-inf: flat (s' = 0, d/dgamma = 0, d/dbeta = -alpha r'(beta)), d/dalpha = r(top) - r(beta)
            # (+inf, c = inf: beyond any dtype, saturated)
            ref_x = reference_spocu_grad(xs[finite:], **held.as_dict())
            refs = reference_spocu_param_grads(xs[finite:], **held.as_dict())
        what = f"{path} {dtype_name} {layout} {where} c={c} channel {k}"
        np.testing.assert_array_equal(got["x"][finite:], ref_x, err_msg=what)
        np.testing.assert_array_equal(got["gamma"][finite:], refs[2], err_msg=what)
        np.testing.assert_allclose(got["beta"][finite:], refs[1], rtol=1e-2, err_msg=what)
        big = float(torch.finfo(torch.float64 if dtype == torch.float64 else torch.float32).max)
        over = np.abs(refs[0]) > big
        assert (got["alpha"][finite:][over] >= big).all(), what
        np.testing.assert_allclose(got["alpha"][finite:][~over], refs[0][~over], rtol=1e-2, err_msg=what)


CASES = [
    pytest.param(layout, where, id=f"{layout}-{where}")
    for layout in ("flat", "row", "pixel")
    for where in ("first", "last")
]


@pytest.mark.parametrize("c", [math.inf, 5e4], ids=["cinf", "c5e4"])
@pytest.mark.parametrize("layout, where", CASES)
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("path", ["eager", "compiled", "cpp"])
def test_partials_beyond_the_cap_equal_the_reference_or_saturate(path, dtype_name, layout, where, c, request):
    if path == "cpp":
        request.getfixturevalue("cpp_ready")
    if dtype_name == "float64" and math.isfinite(c):
        c = 1e40  # beyond float64's u_cap (1.4e38)
    _check(path, dtype_name, layout, where, c)


@pytest.mark.slow
@pytest.mark.parametrize("layout, where", [("row", "first"), ("pixel", "last")])
@pytest.mark.parametrize("c", [math.inf, 5e4], ids=["cinf", "c5e4"])
def test_inductor_partials_beyond_the_cap_equal_the_reference_or_saturate(layout, where, c):
    _check("inductor", "float32", layout, where, c)


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16", "float64"])
def test_every_cpp_copy_this_cpu_runs_handles_the_partials_beyond_the_cap(cpp_ready, dtype_name, monkeypatch):
    """The learnable backward of each instruction set (AVX-512 and AVX2 register loops, the baseline's
    compiler-vectorized loops), in rows and pixels."""
    dtype = DTYPES[dtype_name]
    lib = ctypes.CDLL(_cpp.kernel_status()["library"])
    lib.spocu_isa_supported.argtypes = [ctypes.c_char_p]
    for isa in (isa for isa in _cpp.ISAS if lib.spocu_isa_supported(isa.encode())):
        fn = getattr(lib, f"spocu_learnable_backward_{_cpp.DTYPES[dtype]}_{isa}")
        fn.argtypes, fn.restype = _cpp._SIGNATURES["learnable_backward"], None
        monkeypatch.setitem(_cpp._lib, ("learnable_backward", dtype), fn)
        for layout, where in (("row", "first"), ("row", "last"), ("pixel", "first")):
            _check("cpp", dtype_name, layout, where, math.inf)


@pytest.mark.parametrize("path", ["eager", "compiled", "cpp"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_nan_in_gives_nan_partials_and_leaves_the_others_alone(path, dtype, request):
    if path == "cpp":
        request.getfixturevalue("cpp_ready")
    params = _params(1, dtype)
    x = torch.tensor([1.0, math.nan, 1e6, math.inf], dtype=dtype)
    gx, *gp = _run(path, x, params, math.inf, torch.ones_like(x))
    assert torch.isnan(gx[1]) and not torch.isnan(gx[[0, 2, 3]]).any(), (path, gx)
    assert all(torch.isnan(g).all() for g in gp), (path, gp)  # (sums over x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_plain_partials_have_nan_free_double_backward_and_forward_mode_at_every_finite_input(dtype):
    """Double backward, forward mode and the Hessian of the plain ops at ordinary, near-cap and huge inputs,
    beyond the cap for c = inf and on the flat top for c > u_cap: never NaN (saturated values have zero
    derivative, and the branch not taken only ever sees finite arguments)."""
    big = float(torch.finfo(dtype).max)
    for c in (math.inf, 5e4):
        params = _params(1, dtype)
        # (not +-max: where x / gamma overflows, d2/dgamma2 is NaN, as before the cap was fixed: autograd's
        # x / gamma^2 times a zero gradient)
        x = torch.tensor([-big / 4, -2.0, 0.5, 3.0, 1.9e4, 2.1e4, 1e5, 1e6, 1e30, big / 4], dtype=dtype)
        xx = x.clone().requires_grad_(True)
        ps = [p.clone().requires_grad_(True) for p in params]
        y = spocu_tensor_params(xx, *ps, c, path="eager")
        first = torch.autograd.grad(y, [xx, *ps], torch.ones_like(y), create_graph=True)
        second = torch.autograd.grad(sum(f.sum() for f in first), [xx, *ps])
        assert not any(torch.isnan(g).any() for g in (*first, *second)), (c, first, second)
        hessian = torch.func.jacfwd(torch.func.grad(lambda t: spocu_tensor_params(t, *params, c).sum()))(x)
        assert not torch.isnan(hessian).any(), (c, hessian)
        tangents = [torch.ones_like(x), *(torch.ones_like(p) for p in params)]
        _, jvp = torch.func.jvp(lambda *a: spocu_tensor_params(*a, c), (x, *params), tuple(tangents))
        assert not torch.isnan(jvp).any(), (c, jvp)
