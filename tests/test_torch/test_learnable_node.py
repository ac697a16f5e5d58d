"""The C++ learnable autograd node (``torch.ops.spocu_cpu.learnable``): exactly the Python Function's
bits, the per-channel sums in low precision and at the vector steps' edges, the memory contract,
gradients of any order, and the calls it must leave to the Python paths.

Its values and the gradients of x, alpha, beta, gamma on the wide inputs, in every dtype and
parameter set, are in the parity matrix (tests/test_parity.py, column ``torch-learnable-cpp``);
the layouts, for every fused learnable route, in test_fused.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from spocu.torch import SPOCU, _node, spocu

from .test_fused import _learnable_reference
from .test_fused import learnable_case as _case

NODE = "torch::autograd::CppNode<spocu::LearnableSPOCU>"
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


@pytest.fixture(scope="module")
def node_ready(cpp_ready):
    import spocu.torch

    status = spocu.torch.build_kernels()
    if status["node_state"] != "ready" or not _node.learnable_available():
        pytest.fail(f"the C++ autograd node was not built: {status['node_reason']}")
    return status


def _run(x, params, g, c, param_dtype=None):
    """y and the gradients of x and the parameters (leaves made here)."""
    x = x.detach().clone().requires_grad_()
    leaves = [p.detach().to(param_dtype or p.dtype).requires_grad_() for p in params]
    y = spocu(x, *leaves, c=c)
    grads = torch.autograd.grad(y, [x, *leaves], g)
    return y, grads


def test_low_precision_parameter_gradients_sum_a_channel_against_the_float64_formulas(node_ready):
    """Computed in float32 (torch's opmath), returned in the input's dtype; parameter gradients in theirs,
    each the sum over a channel's 90 elements. (Per element, in every dtype and parameter set, the
    parity matrix checks the node on the wide inputs.) Every failing dtype is named."""
    failures = []
    for dtype in ("float32", "bfloat16", "float16"):
        x, params, g = _case("nchw", DTYPES[dtype])
        y, grads = _run(x, params, g, 2.5, param_dtype=torch.float32)
        y_ref, grads_ref = _learnable_reference(
            x.double().numpy(), g.double().numpy(), *(p.float().double().numpy() for p in params), 2.5
        )
        eps = torch.finfo(DTYPES[dtype]).eps
        try:
            assert y.grad_fn.name() == NODE
            assert y.dtype == x.dtype and grads[0].dtype == x.dtype and all(p.dtype == torch.float32 for p in grads[1:])
            np.testing.assert_allclose(
                y.detach().double().numpy(), y_ref, rtol=2 * eps, atol=2 * eps * np.abs(y_ref).max()
            )
            np.testing.assert_allclose(
                grads[0].double().numpy(), grads_ref[0], rtol=4 * eps, atol=4 * eps * np.abs(grads_ref[0]).max()
            )
            for got, want in zip(grads[1:], grads_ref[1:]):  # sums over 90 terms of float32 products
                np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
        except AssertionError as error:
            failures.append(f"{dtype}: {error}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("c", [math.inf, 2.5])
def test_float32_rows_match_the_float64_formulas_at_the_pieces_edges_in_vector_steps_and_tail(node_ready, c):
    """Rows of 37 elements: two 16-lane steps (the AVX-512 loop where the CPU has it) and a tail of 5.
    Each row holds the points where the pieces meet (u = 0, u = c), their float32 neighbours, and
    values on both flat pieces, at one place in the vector steps and one in the tail."""
    gen = torch.Generator().manual_seed(5)
    alpha = torch.tensor([2.0, 3.0937, 1.5], dtype=torch.float64)
    beta = torch.tensor([0.5, 0.25, 0.75], dtype=torch.float64)
    gamma = torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)  # 1.0: x / gamma is x, the edges exact
    x = (torch.rand(2, 3, 37, dtype=torch.float64, generator=gen) * 8 - 4).float()
    for k in range(3):
        edges = [-beta[k] * gamma[k]]
        if math.isfinite(c):
            edges.append((c - beta[k]) * gamma[k])
        points = []
        for e in torch.tensor(edges, dtype=torch.float32):
            points += [e, torch.nextafter(e, e - 1), torch.nextafter(e, e + 1)]
        points += [torch.tensor(-30.0), torch.tensor(5.0 if math.isfinite(c) else 1.5)]
        for start in (3, 37 - len(points)):  # in the first vector step, and at the end of the tail
            x[:, k, start : start + len(points)] = torch.stack(points)
    g = torch.randn(x.shape, generator=gen).float()
    y, grads = _run(x, [p.float() for p in (alpha, beta, gamma)], g, c)
    assert y.grad_fn.name() == NODE
    params64 = [p.float().double().numpy() for p in (alpha, beta, gamma)]
    y_ref, grads_ref = _learnable_reference(x.double().numpy(), g.double().numpy(), *params64, c)
    eps = torch.finfo(torch.float32).eps
    np.testing.assert_allclose(y.detach().double().numpy(), y_ref, rtol=4 * eps, atol=4 * eps * np.abs(y_ref).max())
    np.testing.assert_allclose(
        grads[0].double().numpy(), grads_ref[0], rtol=8 * eps, atol=8 * eps * np.abs(grads_ref[0]).max()
    )
    for got, want in zip(grads[1:], grads_ref[1:]):  # sums over 74 terms of float32 products
        np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_nan_stays_nan_in_the_float32_rows(node_ready):
    """A NaN input gives NaN value and NaN input gradient at its place only, in the vector steps and
    in the tail (as torch.clamp lets NaN through); its channel's parameter gradients are NaN."""
    _, params, _ = _case("ncl")
    x = torch.rand(2, 4, 37, generator=torch.Generator().manual_seed(2)) * 6 - 2
    x[0, 1, 5] = x[1, 1, 35] = math.nan
    g = torch.ones_like(x)
    y, grads = _run(x, params, g, math.inf, param_dtype=torch.float32)
    nan = torch.isnan(x)
    assert torch.equal(torch.isnan(y), nan) and torch.equal(torch.isnan(grads[0]), nan)
    for p in grads[1:]:
        assert torch.equal(torch.isnan(p), torch.tensor([False, True, False, False]))


def test_the_node_gives_the_python_functions_bits(node_ready, monkeypatch):
    """In every dtype and a few layouts; every case whose bits differ is named."""
    differ = []
    for dtype in DTYPES:
        for layout in ("nchw", "channels_last", "nc", "shared"):
            x, params, g = _case(layout, DTYPES[dtype], seed=1)
            monkeypatch.setattr(_node, "ENABLED", True)
            got = _run(x, params, g, 2.5, param_dtype=torch.float32)
            monkeypatch.setattr(_node, "ENABLED", False)
            want = _run(x, params, g, 2.5, param_dtype=torch.float32)
            assert got[0].grad_fn.name() == NODE and want[0].grad_fn.name() == "_FusedLearnableSPOCUBackward"
            same = [torch.equal(got[0], want[0])] + [torch.equal(a, b) for a, b in zip(got[1], want[1])]
            if not all(same):
                differ.append(
                    f"{dtype} {layout}: " + ", ".join(n for n, ok in zip(("y", "dx", "da", "db", "dg"), same) if not ok)
                )
    assert not differ, "the node's bits differ from the Python Function's: " + "; ".join(differ)


@pytest.mark.parametrize("which", ["x only", "parameters only", "alpha only"])
def test_only_the_gradients_asked_for(node_ready, which):
    x, params, g = _case("nchw")
    x = x.requires_grad_(which == "x only")
    leaves = [p.clone().requires_grad_(which == "parameters only" or (which == "alpha only" and i == 0))
              for i, p in enumerate(params)]  # fmt: skip
    y = spocu(x, *leaves, c=2.5)
    assert y.grad_fn.name() == NODE
    y.backward(g)
    _, grads_ref = _learnable_reference(x.detach().numpy(), g.numpy(), *(p.numpy() for p in params), 2.5)
    for tensor, want in zip([x, *leaves], grads_ref):
        if tensor.requires_grad:
            np.testing.assert_allclose(tensor.grad.numpy(), want, rtol=1e-9, atol=1e-10)
        else:
            assert tensor.grad is None


def test_gradient_layouts_and_dtypes_the_engine_may_hand_over(node_ready):
    """Expanded, permuted and negated-view gradients are read as their values: the same bits as a
    contiguous copy of the same gradient."""
    x, params, g = _case("nchw")
    for grad in (g[:1].expand_as(g), g.transpose(1, 3).contiguous().transpose(1, 3), torch._neg_view(-g)):
        _, got = _run(x, params, grad, 2.5)
        _, want = _run(x, params, grad.contiguous().resolve_neg(), 2.5)
        assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_keeps_only_the_input_and_the_small_parameters(node_ready):
    m = SPOCU(learnable=True, num_parameters=8)
    x = torch.randn(4, 8, 16, 16, requires_grad=True)
    h = x * 2
    alpha, beta, gamma = m.alpha, m.beta, m.gamma
    packed = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t, lambda t: t):
        before = len(packed)
        y = spocu(h, alpha, beta, gamma)
    assert y.grad_fn.name() == NODE
    saved = packed[before:]
    big = [t for t in saved if t.numel() > 8]
    assert len(big) == 1 and big[0].data_ptr() == h.data_ptr()
    assert len(saved) == 4


def test_an_input_modified_in_place_after_the_call_is_refused(node_ready):
    x, params, g = _case("nc")
    h = x.clone().requires_grad_() * 1.0
    y = spocu(h, *params)
    assert y.grad_fn.name() == NODE
    h.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward(g)


def _second_order_against_eager(run, monkeypatch, node: str, rtol: float, atol: float) -> None:
    """``run()`` gives (grad_fn name, second-order gradients); the node's must match those of the plain
    ops (backend "eager")."""
    name, got = run()
    monkeypatch.setenv("SPOCU_TORCH_BACKEND", "eager")
    eager_name, want = run()
    assert name == node and eager_name == "_LearnableSPOCUBackward"
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol)


def _second_order(forward, leaves: list[torch.Tensor], g: torch.Tensor):
    """(grad_fn name, d/d leaves of the sum of squared first derivatives of (forward(*leaves) * g).sum())."""
    y = forward(*leaves)
    first = torch.autograd.grad((y * g).sum(), leaves, create_graph=True)
    total = sum((f * f).sum() for f in first)
    return y.grad_fn.name(), torch.autograd.grad(total, leaves)


def test_gradients_of_any_order_match_the_plain_formulas(node_ready, monkeypatch):
    x, params, g = _case("ncl")
    leaves = lambda: [x.clone().requires_grad_(), *(p.clone().requires_grad_() for p in params)]  # noqa: E731
    run = lambda: _second_order(lambda xx, *p: spocu(xx, *p, c=2.5), leaves(), g)  # noqa: E731
    _second_order_against_eager(run, monkeypatch, NODE, rtol=1e-10, atol=1e-12)


def test_gradcheck_and_gradgradcheck(node_ready):
    x, params, _ = _case("ncl")
    inputs = (x[:, :, :3].contiguous().requires_grad_(), *(p.clone().requires_grad_() for p in params))
    fn = lambda *t: spocu(*t, c=2.5)  # noqa: E731
    assert fn(*inputs).grad_fn.name() == NODE
    assert torch.autograd.gradcheck(fn, inputs, check_batched_grad=True)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_no_graph_without_grad_and_under_inference_mode(node_ready, monkeypatch):
    m = SPOCU(learnable=True, num_parameters=4)
    x = torch.randn(3, 4, 5)
    with torch.no_grad():
        y = m(x)
    with torch.inference_mode():
        z = m(x)
    assert y.grad_fn is None and not y.requires_grad and z.is_inference()
    monkeypatch.setattr(_node, "ENABLED", False)
    with torch.no_grad():
        want = m(x)
    assert torch.equal(y, want) and torch.equal(z, want)


def test_a_training_step_matches_the_python_function(node_ready, monkeypatch):
    def step():
        torch.manual_seed(4)
        net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), SPOCU(learnable=True, num_parameters=6), torch.nn.Flatten(),
                                  torch.nn.Linear(6 * 6 * 6, 5), SPOCU(learnable=True), torch.nn.Linear(5, 1))  # fmt: skip
        x = torch.randn(10, 3, 8, 8)
        loss = net(x).square().mean()
        loss.backward()
        return loss.detach(), [p.grad for p in net.parameters()]

    loss, grads = step()
    monkeypatch.setattr(_node, "ENABLED", False)
    loss_py, grads_py = step()
    assert torch.equal(loss, loss_py)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_py))


def test_forward_mode_and_torch_func_take_the_python_paths(node_ready):
    x, params, _ = _case("nc")
    tangent = torch.ones_like(x)
    import torch.autograd.forward_ad as fwAD

    with fwAD.dual_level():
        out = spocu(fwAD.make_dual(x, tangent), *params, c=2.5)
        jvp = fwAD.unpack_dual(out).tangent
    dx_ref = _learnable_reference(x.numpy(), np.ones(x.shape), *(p.numpy() for p in params), 2.5)[1][0]
    np.testing.assert_allclose(jvp.numpy(), dx_ref, rtol=1e-9, atol=1e-10)  # jvp with a ones tangent = s'(x)
    per_row = torch.func.vmap(lambda row: spocu(row[None], *params, c=2.5)[0])(x)
    np.testing.assert_allclose(
        per_row.numpy(),
        _learnable_reference(x.numpy(), np.ones(x.shape), *(p.numpy() for p in params), 2.5)[0],
        rtol=1e-11,
        atol=1e-12,
    )


def test_the_op_names_bad_arguments(node_ready):
    op = _node._learnable_op
    ones = torch.ones(3)
    with pytest.raises(RuntimeError, match="computes float32, float64, bfloat16 and float16, got Int"):
        op(torch.arange(6, dtype=torch.int32).reshape(2, 3), ones, ones, ones, 2.0, 1e30)
    with pytest.raises(RuntimeError, match="one count"):
        op(torch.zeros(2, 3), ones, torch.ones(1), ones, 2.0, 1e30)
    with pytest.raises(RuntimeError, match="3 parameters per channel for an input of shape \\[2, 4\\]"):
        op(torch.zeros(2, 4), ones, ones, ones, 2.0, 1e30)


def test_a_learnable_node_that_disagrees_with_the_kernels_is_refused(node_ready):
    def wrong(x, alpha, beta, gamma, c, cap):  # differentiable in every input, and wrong
        return x * alpha.sum() + beta.sum() + gamma.sum()

    with pytest.raises(RuntimeError, match="learnable autograd node disagrees with the kernel library"):
        _node._self_check_learnable(wrong)


# ---------------------------------------------------------------- the module's call: raw weights, map inside

RAW_NODE = "torch::autograd::CppNode<spocu::LearnableRawSPOCU>"


def _module(channels: int, raws: tuple[list[float], list[float], list[float]], dtype=torch.float64) -> SPOCU:
    m = SPOCU(learnable=True, num_parameters=channels, dtype=dtype)
    with torch.no_grad():
        for parameter, values in zip((m.raw_alpha, m.raw_beta, m.raw_gamma), raws):
            parameter.copy_(torch.tensor(values, dtype=dtype))
    return m


#: raw weights on both sides of softplus's linear threshold (20) and of 0
RAWS = ([-3.0, 0.5, 21.0, 2.0], [-2.0, 0.0, 1.5, 4.0], [1.0, 25.0, -1.0, 0.3])


def test_the_module_maps_its_raw_weights_inside_one_node_and_matches_the_float64_chain_rule(node_ready):
    from spocu.core import LEARNABLE_MARGIN, learnable_to_params

    m = _module(4, RAWS)
    x, _, g = _case("nchw")
    x.requires_grad_(True)
    y = m(x)
    assert y.grad_fn.name() == RAW_NODE
    y.backward(g)
    raws = [np.array(r) for r in RAWS]
    params = learnable_to_params(*raws)  # the float64 NumPy map
    y_ref, (dx_ref, da, db, dg) = _learnable_reference(x.detach().numpy(), g.numpy(), *params, math.inf)
    sig = [1.0 / (1.0 + np.exp(-r)) for r in raws]
    want = [da * sig[0], db * (1.0 - 2.0 * LEARNABLE_MARGIN) * sig[1] * (1.0 - sig[1]), dg * sig[2]]
    # torch's softplus is linear above 20 (softplus(21) = 21, not 21 + 7.6e-10): 4e-11 relative in α there
    np.testing.assert_allclose(y.detach().numpy(), y_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), dx_ref, rtol=1e-9, atol=1e-10)
    for parameter, expected in zip((m.raw_alpha, m.raw_beta, m.raw_gamma), want):
        np.testing.assert_allclose(parameter.grad.numpy(), expected, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "nc", "shared"])
def test_the_module_node_gives_the_bits_of_map_then_learnable_function(node_ready, dtype, layout, monkeypatch):
    x, params, g = _case(layout, DTYPES[dtype], seed=2)
    channels = params[0].numel()
    raws = tuple(r[:channels] for r in RAWS)

    def run(composed=False):
        m = _module(channels, raws, torch.float32)
        xx = x.detach().clone().requires_grad_()
        y = _composed(m, xx) if composed else m(xx)
        grads = torch.autograd.grad(y, [xx, *m.parameters()], g)
        return y, grads

    got = run()
    monkeypatch.setattr(_node, "ENABLED", False)
    python_node, want = run(), run(composed=True)  # the module's Python node, and the map then the Function
    assert got[0].grad_fn.name() == RAW_NODE and python_node[0].grad_fn.name() == "_RawLearnableSPOCUBackward"
    assert want[0].grad_fn.name() == "_FusedLearnableSPOCUBackward"
    for result in (got, python_node):
        assert torch.equal(result[0], want[0])
        assert all(torch.equal(a, b) for a, b in zip(result[1], want[1]))


def _composed(m: SPOCU, x: torch.Tensor) -> torch.Tensor:
    """The module's call spelled out: spocu.core's map with autograd, then the learnable Python Function."""
    from spocu.torch._learnable import _CppKernels, _FusedLearnableSPOCU

    return _FusedLearnableSPOCU.apply(x, m.alpha, m.beta, m.gamma, m.c, _CppKernels)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "nc", "shared", "transposed", "stepped_slice"])
def test_the_modules_python_node_gives_the_bits_of_map_then_learnable_function(cpp_ready, dtype, layout, monkeypatch):
    """Without the C++ node the module's eager CPU call is one Python node (map and SPOCU): the bits of
    the composition, values, every gradient, double backward, and with some gradients not asked for."""
    monkeypatch.setattr(_node, "ENABLED", False)
    x, params, g = _case(layout, DTYPES[dtype], seed=3)
    channels = params[0].numel()
    raws = tuple(r[:channels] for r in RAWS)
    for frozen in ("nothing", "input", "weights"):

        def run(composed):
            m = _module(channels, raws, torch.float32)
            m.requires_grad_(frozen != "weights")
            xx = x.detach().clone().requires_grad_(frozen != "input")
            y = _composed(m, xx) if composed else m(xx)
            wrt = [t for t in (xx, *m.parameters()) if t.requires_grad]
            first = torch.autograd.grad(y, wrt, g, create_graph=dtype in ("float32", "float64"))
            if not first[0].requires_grad:
                return y, first
            second = torch.autograd.grad(sum((d.square().sum() for d in first), torch.zeros(())), wrt)
            return y, first + second

        got, want = run(composed=False), run(composed=True)
        assert got[0].grad_fn.name() == "_RawLearnableSPOCUBackward"
        assert torch.equal(got[0], want[0]) and len(got[1]) == len(want[1])
        assert all(torch.equal(a, b) for a, b in zip(got[1], want[1])), frozen


@pytest.mark.parametrize("shape", [(0, 4), (0, 4, 3, 3), (2, 4, 0)])
def test_an_empty_batch_gives_an_empty_output_and_zero_parameter_gradients(shape):
    m = SPOCU(learnable=True, num_parameters=4)
    x = torch.randn(shape, requires_grad=True)
    for y in (m(x), spocu(x, m.alpha, m.beta, m.gamma)):
        y.sum().backward()
        assert y.shape == x.shape and x.grad.shape == x.shape
    assert all(torch.equal(p.grad, torch.zeros(4)) for p in m.parameters())


@pytest.mark.parametrize("frozen", ["weights", "input"])
def test_the_module_node_returns_only_the_gradients_asked_for(node_ready, frozen, monkeypatch):
    m = _module(4, RAWS)
    x, _, g = _case("ncl")
    x.requires_grad_(frozen == "weights")
    if frozen == "weights":
        m.requires_grad_(False)
    y = m(x)
    assert y.grad_fn.name() == RAW_NODE
    y.backward(g)
    monkeypatch.setattr(_node, "ENABLED", False)
    m2 = _module(4, RAWS)
    x2 = x.detach().clone().requires_grad_(frozen == "weights")
    if frozen == "weights":
        m2.requires_grad_(False)
    m2(x2).backward(g)
    if frozen == "weights":
        assert all(p.grad is None for p in m.parameters()) and torch.equal(x.grad, x2.grad)
    else:
        assert x.grad is None
        assert all(torch.equal(a.grad, b.grad) for a, b in zip(m.parameters(), m2.parameters()))


def test_the_module_node_differentiates_to_any_order(node_ready, monkeypatch):
    x, _, g = _case("ncl")

    def run():
        m = _module(4, RAWS)
        return _second_order(lambda xx, *_: m(xx), [x.clone().requires_grad_(), *m.parameters()], g)

    # the node's first derivative of softplus is sigmoid exactly; autograd's uses softplus's
    # linear branch above 20 (a 2e-9 relative difference there)
    _second_order_against_eager(run, monkeypatch, RAW_NODE, rtol=1e-8, atol=1e-10)


def test_the_module_node_passes_gradcheck_with_batched_gradients(node_ready):
    x, _, _ = _case("ncl")
    raws = [
        torch.tensor(r, dtype=torch.float64, requires_grad=True)
        for r in ([-1.0, 0.5, 2.0, 1.0], [-2.0, 0.0, 1.5, 0.7], [1.0, 2.0, -1.0, 0.3])
    ]
    inputs = (x[:, :, :3].contiguous().requires_grad_(), *raws)
    fn = lambda *t: _node.apply_learnable_raw(*t, 2.5)  # noqa: E731
    assert fn(*inputs).grad_fn.name() == RAW_NODE
    assert torch.autograd.gradcheck(fn, inputs, check_batched_grad=True)
    assert torch.autograd.gradgradcheck(fn, inputs)


def test_a_module_node_that_disagrees_with_the_composition_is_refused(node_ready):
    def wrong(x, ra, rb, rg, *constants):  # the learnable op without the map: differentiable, wrong
        return _node._learnable_op(x, ra, rb, rg, 2.5, 1e30)

    with pytest.raises(RuntimeError, match="learnable_raw autograd node disagrees with the module's composition"):
        _node._self_check_learnable_raw(wrong)
