"""Every path users take: torch.func, forward AD, batched gradcheck, compile with dynamic shapes and
changing parameters, jit.trace/script, export; the kink/infinity convention; parameter ranges.

Values are compared with the float64 references s' (``reference_spocu_grad``) and
s'' (``reference_spocu_grad2``), on every kernel path (``path`` fixture: eager,
inductor, triton under the interpreter) and every entry point (functional,
module, custom op).
"""

from __future__ import annotations

import math
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwAD
from torch.func import functional_call, grad, hessian, jacfwd, jacrev, jvp, vjp, vmap

from spocu.core import SPOCUParams, reference_spocu, reference_spocu_grad, reference_spocu_grad2
from spocu.torch import SPOCU, spocu

#: the issue's example: kinks at x = -gamma*beta = -1 and x = gamma*(c - beta) = 2 (left derivative there
#: -4.640625, but the convention says 0)
KINKED = SPOCUParams(alpha=1.0, beta=0.5, gamma=2.0, c=1.5)
#: points on both flat pieces, both kinks and inside
XS = [-5.0, -1.0, -0.4, 0.0, 0.7, 1.5, 2.0, 3.0]


def _entry(name: str, path: str, p: SPOCUParams):
    """f(x) for one entry point on one kernel path."""
    if name == "functional":
        return lambda t: spocu(t, p.alpha, p.beta, p.gamma, p.c, backend=path)
    if name == "op":
        return lambda t: torch.ops.spocu.spocu(t, p.alpha, p.beta, p.gamma, p.c, path)
    module = SPOCU(p.alpha, p.beta, p.gamma, p.c)
    return lambda t: spocu(t, module.alpha, module.beta, module.gamma, module.c, backend=path)


ENTRIES = ["functional", "op", "module"]


def _refs(x: torch.Tensor, p: SPOCUParams):
    x64 = x.detach().cpu().double().numpy()
    d1 = torch.tensor(reference_spocu_grad(x64, **p.as_dict()), dtype=x.dtype, device=x.device)
    d2 = torch.tensor(reference_spocu_grad2(x64, **p.as_dict()), dtype=x.dtype, device=x.device)
    return d1, d2


def _close(got, want):
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("entry", ENTRIES)
def test_torch_func_transforms_match_the_reference_including_the_kinks(entry, path, dev):
    f = _entry(entry, path, KINKED)
    x = torch.tensor(XS, dtype=torch.float64, device=dev)
    d1, d2 = _refs(x, KINKED)
    assert d1[1] == 0 and d1[6] == 0  # the kinks are in XS
    ones = torch.ones_like(x)
    _close(jvp(f, (x,), (ones,))[1], d1)
    _close(vjp(f, x)[1](ones)[0], d1)
    _close(jacfwd(f)(x).diagonal(), d1)
    _close(jacrev(f)(x).diagonal(), d1)
    _close(vmap(grad(f))(x), d1)  # per-sample gradients
    _close(vmap(hessian(f))(x), d2)
    _close(vmap(jacfwd(grad(f)))(x), d2)  # forward over reverse
    _close(vmap(grad(grad(f)))(x), d2)
    _close(vmap(jacrev(jacfwd(f)))(x), d2)  # reverse over forward
    _close(vmap(vmap(f))(x.reshape(2, 4)).flatten(), f(x))  # nested vmap over a batch
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual(f(fwAD.make_dual(x, ones))).tangent
    assert tangent is not None
    _close(tangent, d1)


@pytest.mark.parametrize("entry", ENTRIES)
@pytest.mark.slow
def test_gradcheck_with_forward_ad_and_batched_grads(entry, path, dev):
    p = SPOCUParams(alpha=2.0, beta=0.4, gamma=3.0, c=2.5)
    x = torch.tensor([-5.0, -0.9, 0.0, 0.3, 1.7, 4.0, 9.0], dtype=torch.float64, device=dev, requires_grad=True)
    f = _entry(entry, path, p)
    assert torch.autograd.gradcheck(
        f, (x,), check_forward_ad=True, check_batched_grad=True, check_batched_forward_grad=True
    )
    assert torch.autograd.gradgradcheck(f, (x,), check_fwd_over_rev=True, check_batched_grad=True)


@pytest.mark.parametrize("entry", ["functional", "op"])
def test_backward_saves_only_the_input_on_the_functional_and_the_op(entry, path, dev):
    x = torch.randn(16, 8, dtype=torch.float32, device=dev, requires_grad=True)
    f = _entry(entry, path, SPOCUParams())
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = f(x)
    assert len(saved) == 1 and saved[0].untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    y.sum().backward()
    np.testing.assert_allclose(x.grad.cpu().numpy(), reference_spocu_grad(x.detach().cpu().double().numpy()),
                               rtol=1e-5, atol=1e-6)  # fmt: skip


# ---------------------------------------------------------------- learnable parameters


def _learnable_pieces():
    m = SPOCU(alpha=1.7, beta=0.45, gamma=2.5, c=3.0, learnable=True, num_parameters=3, dtype=torch.float64)
    return m, dict(m.named_parameters())


@pytest.mark.parametrize("backend", ["eager", "cpp", "inductor"])
def test_learnable_module_under_torch_func_and_forward_ad(backend, monkeypatch, request):
    if backend == "cpp":
        request.getfixturevalue("cpp_ready")
    monkeypatch.setenv("SPOCU_TORCH_BACKEND", backend)
    m, params = _learnable_pieces()
    x = torch.linspace(-6, 9, 3 * 4, dtype=torch.float64).reshape(4, 3)
    p = SPOCUParams(alpha=1.7, beta=0.45, gamma=2.5, c=3.0)
    d1 = torch.tensor(reference_spocu_grad(x.numpy(), **p.as_dict()))
    d2 = torch.tensor(reference_spocu_grad2(x.numpy(), **p.as_dict()))
    f = lambda t: functional_call(m, params, (t,))  # noqa: E731
    ones = torch.ones_like(x)
    _close(jvp(f, (x,), (ones,))[1], d1)
    _close(vmap(vmap(grad(lambda t: f(t.reshape(1, 1).expand(1, 3)).sum() / 3)))(x), d1)
    with fwAD.dual_level():
        _close(fwAD.unpack_dual(m(fwAD.make_dual(x, ones))).tangent, d1)
    # per-sample parameter gradients (Opacus-style) equal one backward per sample
    loss = lambda ps, t: functional_call(m, ps, (t.unsqueeze(0),)).pow(2).sum()  # noqa: E731
    per_sample = vmap(grad(loss), in_dims=(None, 0))(params, x)
    for i in range(x.shape[0]):
        want = torch.autograd.grad(loss(params, x[i]), list(params.values()))
        for name, w in zip(params, want):
            _close(per_sample[name][i], w)
    # hessian of the output in x matches s''
    _close(vmap(jacfwd(jacrev(lambda t: f(t.expand(1, 3)).sum() / 3)))(x.reshape(-1, 1)).flatten(), d2.flatten())


@pytest.mark.parametrize("kernels", ["eager", "cpp", "inductor"])
@pytest.mark.slow
def test_learnable_gradcheck_with_forward_ad_and_batched_grads(kernels, request):
    from spocu.torch._learnable import spocu_tensor_params

    if kernels == "cpp":
        request.getfixturevalue("cpp_ready")

    x = torch.tensor([[-5.0, -0.9, 0.0], [0.3, 1.7, 8.0]], dtype=torch.float64, requires_grad=True)
    a, b, g = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in ([2.0], [0.4], [3.0]))
    f = lambda *t: spocu_tensor_params(*t, 2.5, path=kernels)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, a, b, g), check_forward_ad=True, check_batched_grad=True)
    assert torch.autograd.gradgradcheck(f, (x, a, b, g))


# ---------------------------------------------------------------- the convention at kinks and infinities


def _all_paths_grads(x: torch.Tensor, p: SPOCUParams, path: str):
    """d/dx on every entry of one kernel path, and (fixed floats given as tensors) the learnable paths."""
    out = {}
    for entry in ENTRIES:
        xx = x.clone().requires_grad_(True)
        _entry(entry, path, p)(xx).sum().backward()
        out[entry] = xx.grad
    for kernels in ("eager", "cpp", "inductor"):
        from spocu.torch._learnable import spocu_tensor_params

        xx = x.clone().requires_grad_(True)
        params = [torch.tensor([v], dtype=x.dtype, requires_grad=True) for v in (p.alpha, p.beta, p.gamma)]
        spocu_tensor_params(xx, *params, p.c, path=kernels).sum().backward()
        out[f"learnable-{kernels}"] = xx.grad
        for name, prm in zip("abg", params):
            assert not torch.isnan(prm.grad).any(), (kernels, name, prm.grad)
    return out


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.slow
def test_derivative_is_zero_at_the_kinks_and_flat_pieces_on_every_path(dtype, path, dev):
    x = torch.tensor([-1e30, -3.0, -1.0, 2.0, 2.5, 1e30], dtype=dtype, device=dev)
    for name, got in _all_paths_grads(x, KINKED, path).items():
        assert torch.equal(got, torch.zeros_like(got)), (name, got)


@pytest.mark.parametrize("c", [math.inf, 1.5])
def test_infinite_and_huge_inputs_never_give_nan_gradients(c, path, dev):
    p = SPOCUParams(c=c)
    x = torch.tensor([-math.inf, -3e38, 3e38, math.inf], dtype=torch.float32, device=dev)
    for name, got in _all_paths_grads(x, p, path).items():
        assert not torch.isnan(got).any(), (name, got)
        assert got[0] == 0 and got[1] == 0, name  # flat at -inf
        if math.isfinite(c):
            assert got[2] == 0 and got[3] == 0, name  # flat at +inf for finite c


def test_exported_graph_is_differentiable_with_the_convention():
    m = SPOCU(**KINKED.as_dict())
    x = torch.tensor(XS, dtype=torch.float64)
    exported = torch.export.export(m, (x,)).module()
    xx = x.clone().requires_grad_(True)
    y = exported(xx)
    y.sum().backward()
    np.testing.assert_allclose(y.detach().numpy(), reference_spocu(x.numpy(), **KINKED.as_dict()), rtol=1e-12)
    np.testing.assert_allclose(xx.grad.numpy(), reference_spocu_grad(x.numpy(), **KINKED.as_dict()), rtol=1e-12,
                               atol=0)  # fmt: skip
    assert xx.grad[1] == 0 and xx.grad[6] == 0


# ---------------------------------------------------------------- compile and trace


def _net(learnable: bool):
    torch.manual_seed(0)
    act = SPOCU(c=2.0, learnable=learnable, num_parameters=6 if learnable else 1)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), act, torch.nn.Linear(6, 1)).double()


@pytest.mark.parametrize("learnable", [False, True], ids=["fixed", "learnable"])
@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.slow
def test_compile_fullgraph_over_batch_sizes_and_changing_float_parameters(learnable, dynamic):
    torch._dynamo.reset()
    net = _net(learnable)

    def f(x, alpha, beta, gamma, c):
        return spocu(net(x), alpha, beta, gamma, c)

    compiled = torch.compile(f, fullgraph=True, dynamic=dynamic, backend="aot_eager")
    for n, (alpha, beta, gamma, c) in zip((2, 3, 5), ((3.0937, 0.6653, 4.437, math.inf), (3.0937, 0.6653, 4.437,
                                                      math.inf), (1.0, 0.5, 2.0, 1.5))):  # fmt: skip
        x = (torch.randn(n, 4, dtype=torch.float64) * 3).requires_grad_(True)
        inputs = [x, *net.parameters()]
        y = compiled(x, alpha, beta, gamma, c)
        grads = torch.autograd.grad(y.sum(), inputs)
        y_ref = f(x, alpha, beta, gamma, c)
        grads_ref = torch.autograd.grad(y_ref.sum(), inputs)
        torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
        for got, want in zip(grads, grads_ref):
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


class _AliasRecorder(torch.overrides.TorchFunctionMode):
    """Records every op whose result is one of its own inputs (a no-op ``.to``, an in-place op)."""

    def __init__(self):
        super().__init__()
        self.aliases: list[tuple[str, torch.Tensor]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and any(out is a for a in args):
            self.aliases.append((getattr(func, "__name__", repr(func)), out))
        return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_the_traced_function_computes_its_output_without_aliasing_an_input(dtype):
    """What Dynamo traces (``_CompiledSPOCU``) returns no alias of an intermediate, in every dtype.

    torch 2.11 sends the gradient of an ``autograd.Function`` whose forward returns a no-op
    ``.to()`` (or an in-place result) to the wrong slot under ``torch.compile``: the layers before
    SPOCU got zero gradients (the compile test above fails there). This holds the line on any torch.
    """
    from spocu.core import shifted_coefficients
    from spocu.torch._learnable import _CompiledSPOCU, first_order_constants

    ctype = torch.float32 if dtype == torch.bfloat16 else dtype
    alpha, beta, gamma = (torch.tensor(v, dtype=ctype) for v in (3.0937, 0.6653, 4.437))
    d = torch.stack(shifted_coefficients(beta), dim=-1)
    c = torch.tensor(2.0, dtype=ctype)
    q = first_order_constants(alpha, beta, gamma, c)
    x = torch.linspace(-4, 12, 9, dtype=dtype)
    recorder = _AliasRecorder()
    with recorder:
        y = _CompiledSPOCU.forward(SimpleNamespace(save_for_backward=lambda *t: None), x, alpha, beta, gamma, d, q, c)
    in_place = [name for name, _ in recorder.aliases if name.endswith("_") and not name.startswith("__")]
    assert in_place == []
    assert not any(y is alias for _, alias in recorder.aliases), "the output is a no-op alias of an intermediate"
    want = reference_spocu(x.double().numpy(), 3.0937, 0.6653, 4.437, 2.0)
    tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
    np.testing.assert_allclose(y.double().numpy(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("learnable", [False, True], ids=["fixed", "learnable"])
def test_jit_trace_passes_its_check_and_matches_eager(learnable):
    net = _net(learnable)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # also no TracerWarning
        warnings.simplefilter("ignore", DeprecationWarning)  # torch's own notice that jit.trace is deprecated
        traced = torch.jit.trace(net, torch.randn(2, 4, dtype=torch.float64))  # check_trace=True by default
    x = (torch.randn(7, 4, dtype=torch.float64) * 3).requires_grad_(True)
    inputs = [x, *net.parameters()]
    y, y_ref = traced(x), net(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(torch.autograd.grad(y.sum(), inputs), torch.autograd.grad(y_ref.sum(), inputs)):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_jit_script_is_refused_with_a_clear_message():
    with pytest.raises(RuntimeError, match="torch.jit.script.*use torch.jit.trace, torch.compile"):
        torch.jit.script(_net(False))


# ---------------------------------------------------------------- parameters


@pytest.mark.parametrize(
    "kwargs, dtype",
    [({"alpha": 1e308}, torch.float64), ({"alpha": 1e308}, torch.float32), ({"gamma": 1e-300}, torch.float64),
     ({"gamma": 1e-300}, torch.float32), ({"gamma": 1e308}, torch.float32)],
    ids=["alpha-huge-f64", "alpha-huge-f32", "gamma-tiny-f64", "gamma-tiny-f32", "gamma-huge-f32"],
)  # fmt: skip
def test_parameters_beyond_the_dtype_raise_a_value_error_naming_them(kwargs, dtype):
    (name,) = kwargs
    with pytest.raises(ValueError, match=f"{name}=.*out of the range supported"):
        spocu(torch.zeros(3, dtype=dtype), **kwargs)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "kwargs",
    [{"gamma": 1e6}, {"alpha": 1e-300}, {"alpha": 1e-7}, {"beta": 1e-9}, {"beta": 1 - 1e-12}],
    ids=["gamma-1e6", "alpha-tiny", "alpha-1e-7", "beta-tiny", "beta-near-1"],
)
def test_extreme_in_domain_parameters_work(kwargs, dtype):
    p = SPOCUParams(**kwargs)
    x = torch.tensor([-1e3, -2.0, -0.5, 0.0, 0.5, 2.0, 1e3], dtype=dtype, requires_grad=True)
    y = spocu(x, **kwargs)
    y.sum().backward()
    assert not torch.isnan(y).any() and not torch.isnan(x.grad).any()
    for gamma in (1e30, 1e308) if dtype == torch.float64 else (1e30,):  # 1e308 fits float64 only
        huge = spocu(x, gamma=gamma)  # (finer than the reference resolves: only finiteness is checked)
        assert torch.isfinite(huge).all() and torch.isfinite(torch.autograd.grad(huge.sum(), x)[0]).all()
    ref = torch.tensor(reference_spocu(x.detach().double().numpy(), **p.as_dict()), dtype=dtype)
    torch.testing.assert_close(y.detach(), ref, rtol=1e-5 if dtype == torch.float32 else 1e-10, atol=1e-30)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"beta": 1e-9}, "beta=1e-09.*learnable beta.*must lie in"),
        ({"alpha": 1e-6}, "alpha=1e-06.*learnable alpha.*must lie in \\(1e-06,"),
        ({"gamma": 1e-300}, "gamma=1e-300.*learnable gamma"),
        ({"gamma": 1e308}, "gamma=1e\\+308 .*learnable gamma.*3.40282e\\+38"),
    ],
)
def test_learnable_values_outside_the_reparameterization_raise_value_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SPOCU(learnable=True, **kwargs)


def test_learnable_and_num_parameters_accept_what_prelu_accepts():
    assert SPOCU(learnable=np.bool_(True), num_parameters=np.int64(3)).num_parameters == 3
    assert SPOCU(learnable=False).learnable is False
    for bad in ("no", 1, None):
        with pytest.raises(TypeError, match="learnable"):
            SPOCU(learnable=bad)
    for bad in (2.0, "3", True):
        with pytest.raises(TypeError, match="num_parameters"):
            SPOCU(learnable=True, num_parameters=bad)
    with pytest.raises(ValueError, match="num_parameters"):
        SPOCU(learnable=True, num_parameters=np.int32(0))


def test_reset_parameters_restores_the_initial_values():
    m = SPOCU(alpha=2.0, beta=0.3, gamma=1.5, learnable=True, num_parameters=2)
    with torch.no_grad():
        for prm in m.parameters():
            prm.add_(0.7)
    m.reset_parameters()
    for name, want in (("alpha", 2.0), ("beta", 0.3), ("gamma", 1.5)):
        torch.testing.assert_close(getattr(m, name).detach(), torch.full((2,), want), rtol=1e-6, atol=0)
    SPOCU().reset_parameters()  # fixed: nothing to reset
