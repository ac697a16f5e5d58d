"""The C++ autograd node (``torch.ops.spocu_cpu.fixed``): values, gradients of any order, the
memory contract, autograd's safety checks, and its life cycle (built only by
``spocu.torch.build_kernels()``, refused when it disagrees with the kernels, optional).

Its values and gradients on the wide inputs, in every dtype and parameter set, are checked against
the float64 reference in the one parity matrix (tests/test_parity.py, column ``torch-cpp``, which
asserts that the node served the call); here the node is checked to give exactly the bits of the
Python ``autograd.Function`` over the same kernels, which it replaces on eager calls, and the
properties specific to it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch

import spocu.torch as spocu_torch
from spocu.core import SPOCUParams, reference_spocu_grad, reference_spocu_grad2
from spocu.testing import PARAM_SETS, assert_matches_reference
from spocu.torch import SPOCU, _node, spocu
from spocu.torch._constants import kernel_constants
from spocu.torch._layout import is_dense

from .test_cpp_kernels import run_scenario

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}


@pytest.fixture(scope="module")
def node_ready(cpp_ready):
    status = spocu_torch.build_kernels()
    if status["node_state"] != "ready":
        pytest.fail(f"the C++ autograd node was not built: {status['node_reason']}")
    return status


@contextlib.contextmanager
def python_function():
    """Calls in this block take the Python autograd.Function over the same kernels."""
    _node.ENABLED = False
    try:
        yield
    finally:
        _node.ENABLED = True


def served_by_node(y: torch.Tensor) -> bool:
    return y.grad_fn is not None and "FixedSPOCU" in y.grad_fn.name()


def forward_backward(x: torch.Tensor, grad: torch.Tensor, **params):
    x = x.detach().clone().requires_grad_()
    y = spocu(x, **params)
    (dx,) = torch.autograd.grad(y, x, grad)
    return y, dx


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_node_gives_the_python_functions_bits(node_ready, dtype):
    torch.manual_seed(0)
    x = (torch.randn(7, 33) * 4).to(DTYPES[dtype])
    g = torch.randn(7, 33).to(DTYPES[dtype])
    y, dx = forward_backward(x, g)
    with python_function():
        y_py, dx_py = forward_backward(x, g)
    assert served_by_node(y) and not served_by_node(y_py)
    assert torch.equal(y, y_py) and torch.equal(dx, dx_py)


LAYOUTS = {
    "contiguous": lambda t: t,
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
    "transposed": lambda t: t.transpose(1, 3),
    "stepped slice": lambda t: t[:, ::2],
    "negated view": lambda t: torch._neg_view(t),
}
GRAD_LAYOUTS = {
    "contiguous": lambda g, y: g.contiguous(),
    "expanded": lambda g, y: g[:1].expand_as(y),
    "transposed": lambda g, y: g.transpose(0, 1).contiguous().transpose(0, 1),
}


def test_any_input_and_gradient_layout(node_ready):
    """Every input layout with every upstream-gradient layout; every failing pair is named."""
    failures = []
    for layout in LAYOUTS:
        for grad_layout in GRAD_LAYOUTS:
            torch.manual_seed(1)
            base = (torch.randn(2, 6, 3, 5, dtype=torch.float64) * 4).requires_grad_()
            x = LAYOUTS[layout](base)
            y = spocu(x)
            g = GRAD_LAYOUTS[grad_layout](torch.randn(y.shape, dtype=torch.float64), y)
            (dbase,) = torch.autograd.grad(y, base, g)
            xv = x.detach().resolve_neg().numpy()
            want = torch.autograd.grad(LAYOUTS[layout](base), base, torch.from_numpy(reference_spocu_grad(xv)) * g)[0]
            try:
                assert served_by_node(y), y.grad_fn.name()
                assert y.shape == x.shape
                if is_dense(x):
                    assert y.stride() == x.stride(), f"strides {y.stride()}, input's {x.stride()}"  # empty_like's
                assert_matches_reference(xv, y.detach().numpy(), SPOCUParams(), "float64")
                torch.testing.assert_close(dbase, want, rtol=1e-12, atol=1e-12)
            except AssertionError as error:
                failures.append(f"{layout} input, {grad_layout} gradient: {error}")
    assert not failures, "\n".join(failures)


def test_saves_only_its_input(node_ready):
    x = torch.randn(64, 32, requires_grad=True)
    h = x * 2
    packed = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t, lambda t: t):
        before = len(packed)
        y = spocu(h)
    assert served_by_node(y)
    saved = packed[before:]
    assert len(saved) == 1 and saved[0].data_ptr() == h.data_ptr() and saved[0].shape == h.shape


def test_saved_tensor_hooks_can_move_the_saved_input(node_ready):
    """Offloading hooks (as activation checkpointing and CPU offload use) see and restore the input."""
    x = (torch.randn(40, dtype=torch.float64) * 4).requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone().numpy(), lambda a: torch.from_numpy(a)):
        y = spocu(x)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), reference_spocu_grad(x.detach().numpy()), rtol=1e-12, atol=1e-14)


def test_an_input_modified_in_place_after_the_call_is_refused(node_ready):
    x = torch.randn(10, requires_grad=True)
    h = x * 1.0
    y = spocu(h)
    h.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_gradients_of_any_order(node_ready):
    x = torch.linspace(-4.0, 8.0, 301, dtype=torch.float64).requires_grad_()
    y = spocu(x)
    assert served_by_node(y)
    (d1,) = torch.autograd.grad(y.sum(), x, create_graph=True)
    (d2,) = torch.autograd.grad(d1.sum(), x, create_graph=True)
    xs = x.detach().numpy()
    np.testing.assert_allclose(d1.detach().numpy(), reference_spocu_grad(xs), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(d2.detach().numpy(), reference_spocu_grad2(xs), rtol=1e-9, atol=1e-11)
    (d3,) = torch.autograd.grad(d2.sum(), x)  # s''' by finite differences of the reference s''
    h = 1e-6
    fd = (reference_spocu_grad2(xs + h) - reference_spocu_grad2(xs - h)) / (2 * h)
    inside = np.abs(xs - SPOCUParams().lower_bound) > 1e-3  # s'' has a kink at x_lo
    np.testing.assert_allclose(d3.numpy()[inside], fd[inside], rtol=1e-5, atol=1e-6)


def test_gradcheck_and_gradgradcheck(node_ready):
    x = (torch.randn(30, dtype=torch.float64) * 3).requires_grad_()
    c = PARAM_SETS["c2"]
    fn = lambda t: spocu(t, c.alpha, c.beta, c.gamma, c.c)  # noqa: E731
    assert served_by_node(fn(x))
    # batched gradients (vmap over the backward): the node hands storage-less gradients to Python
    assert torch.autograd.gradcheck(fn, (x,), check_batched_grad=True)
    assert torch.autograd.gradgradcheck(fn, (x,), check_batched_grad=True)


def test_no_graph_without_grad_and_under_inference_mode(node_ready):
    x = torch.linspace(-5, 5, 50, requires_grad=True)
    with torch.no_grad():
        y = spocu(x)
    with torch.inference_mode():
        z = spocu(x.detach())
    assert y.grad_fn is None and not y.requires_grad and z.is_inference()
    with python_function():
        want = spocu(x.detach())
    assert torch.equal(y, want) and torch.equal(z, want)


def test_results_do_not_depend_on_the_thread_count(node_ready):
    x = torch.randn(200_000, dtype=torch.float32) * 4
    g = torch.randn_like(x)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = forward_backward(x, g)
        torch.set_num_threads(max(2, threads))
        many = forward_backward(x, g)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one[0], many[0]) and torch.equal(one[1], many[1])


def test_a_module_training_step_matches_the_python_function(node_ready):
    def step():
        torch.manual_seed(3)
        net = torch.nn.Sequential(torch.nn.Linear(8, 16), SPOCU(), torch.nn.Linear(16, 16), SPOCU(c=2.0),
                                  torch.nn.Linear(16, 1))  # fmt: skip
        x = torch.randn(32, 8)
        loss = net(x).square().mean()
        loss.backward()
        return loss.detach(), [p.grad for p in net.parameters()]

    loss, grads = step()
    with python_function():
        loss_py, grads_py = step()
    assert torch.equal(loss, loss_py)
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_py))


def test_activation_checkpointing_recomputes_through_the_node(node_ready):
    from torch.utils.checkpoint import checkpoint

    x = (torch.randn(4, 20, dtype=torch.float64) * 3).requires_grad_()
    y = checkpoint(lambda t: spocu(t * 1.5), x, use_reentrant=False)
    y.sum().backward()
    want = 1.5 * reference_spocu_grad(1.5 * x.detach().numpy())
    np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-12, atol=1e-14)


def test_torch_func_transforms_take_the_python_path_with_the_same_values(node_ready):
    x = torch.randn(25, dtype=torch.float64) * 3
    grads = torch.func.vmap(torch.func.grad(lambda t: spocu(t)))(x)
    np.testing.assert_allclose(grads.numpy(), reference_spocu_grad(x.numpy()), rtol=1e-12, atol=1e-14)


def test_the_op_names_bad_arguments(node_ready):
    k = _node.tables(kernel_constants(SPOCUParams(), torch.float32))
    p = SPOCUParams()
    with pytest.raises(RuntimeError, match="computes float32, float64, bfloat16 and float16, got Int"):
        _node._op(torch.arange(3, dtype=torch.int32), *k, p.alpha, p.beta, p.gamma, p.c)
    with pytest.raises(RuntimeError, match="contiguous 1-D float64 CPU tensor"):
        _node._op(torch.zeros(3), k[0].float(), k[1], p.alpha, p.beta, p.gamma, p.c)
    with pytest.raises(RuntimeError, match="strided CPU tensor"):
        _node._op(torch.zeros(3, device="meta"), *k, p.alpha, p.beta, p.gamma, p.c)


def test_a_node_that_disagrees_with_the_kernels_is_refused(node_ready):
    """The load-time self-check compares the node's bits with the kernel library's."""
    wrong = lambda x, forward_table, backward_table, *params: x * 1.0  # noqa: E731 -- differentiable, wrong
    with pytest.raises(RuntimeError, match="disagrees with the kernel library"):
        _node._self_check(wrong)


def test_a_node_library_of_another_spocu_version_is_refused(monkeypatch):
    """_load reads the library's ABI version before binding anything to it."""

    class OtherVersion:
        def spocu_node_abi_version(self):
            return 1

        def __getattr__(self, name):  # pragma: no cover - nothing else may be called
            raise AssertionError(f"{name} was called on a library of another version")

    monkeypatch.setattr(_node.ctypes, "CDLL", lambda path: OtherVersion())
    with pytest.raises(RuntimeError, match=r"^/old/spocu_torch_node\.so is from another version of spocu$"):
        _node._load(Path("/old/spocu_torch_node.so"))


def test_a_learnable_node_with_the_right_values_and_a_wrong_gradient_is_refused(cpp_ready):
    """The learnable node's load-time check compares every gradient too, not only the values
    (test_learnable_node.py checks wrong values)."""
    from spocu.torch._learnable import _CppKernels, _FusedLearnableSPOCU

    def right_values_wrong_alpha_gradient(x, alpha, beta, gamma, c, cap):
        y = _FusedLearnableSPOCU.apply(x, alpha, beta, gamma, c, _CppKernels)
        return y + (alpha.sum() - alpha.sum().detach())  # adds exactly 0 to y, sum(g) to d/d alpha

    with pytest.raises(RuntimeError, match=r"learnable autograd node disagrees .*\(torch.float64, per channel\)"):
        _node._self_check_learnable(right_values_wrong_alpha_gradient)


@pytest.fixture
def unbuilt_node(monkeypatch):
    """The node as in a process that has not asked for it yet; every module global restored afterwards."""
    for name, value in (("_state", "idle"), ("_reason", None), ("_path", None)):
        monkeypatch.setattr(_node, name, value)
    for name in ("_op", "_learnable_op", "_learnable_raw_op"):
        monkeypatch.setattr(_node, name, getattr(_node, name))
    monkeypatch.delenv(_node.ENV_VAR, raising=False)
    return _node


def _no_build(*args, **kwargs):  # pragma: no cover - must not be called
    raise AssertionError("the node was built")


def test_spocu_torch_node_0_disables_the_node_for_good(unbuilt_node, monkeypatch):
    from torch.utils import cpp_extension

    monkeypatch.setattr(cpp_extension, "load", _no_build)
    monkeypatch.setenv(_node.ENV_VAR, " 0 ")
    assert _node.build() == "disabled" == _node.state()
    assert _node.reason() == "SPOCU_TORCH_NODE=0"
    monkeypatch.delenv(_node.ENV_VAR)
    assert _node.build() == "disabled"  # decided once per process


def test_without_the_kernel_library_the_node_fails_and_says_why(unbuilt_node, monkeypatch):
    from torch.utils import cpp_extension

    from spocu.torch import _cpp

    monkeypatch.setattr(cpp_extension, "load", _no_build)
    monkeypatch.setattr(_cpp, "ready", lambda: False)
    monkeypatch.setattr(_cpp, "unavailable_reason", lambda x=None: "no kernel library in this test")
    assert _node.build() == "failed" == _node.state()
    assert _node.reason() == "RuntimeError: the kernel library is not loaded (no kernel library in this test)"
    assert _node.build() == "failed"  # decided once per process: not tried again


def test_under_torch_2_4_the_node_is_found_among_the_loaded_libraries(unbuilt_node, monkeypatch):
    """torch 2.4's cpp_extension.load(is_python_module=False) returns None: the library is the one it loaded."""
    from torch.utils import cpp_extension

    from spocu.torch import _cpp

    ops = (object(), object(), object())
    loaded = []
    monkeypatch.setattr(_cpp, "ready", lambda: True)
    monkeypatch.setattr(cpp_extension, "load", lambda **kwargs: None)
    monkeypatch.setattr(
        torch.ops, "loaded_libraries", {"/ext/other_op/other_op.so", "/ext/spocu_torch_node/spocu_torch_node.so"}
    )
    monkeypatch.setattr(_node, "_load", lambda path: loaded.append(path) or ops)
    assert _node.build() == "ready" and _node.reason() is None
    assert loaded == [Path("/ext/spocu_torch_node/spocu_torch_node.so")] and _node.library_path() == loaded[0]
    assert (_node._op, _node._learnable_op, _node._learnable_raw_op) == ops


@pytest.mark.slow
def test_built_only_when_asked_for_and_then_the_same_bits(cpp_ready):
    """A fresh process never builds or loads the node by itself; build_kernels() does, in the calling
    thread, and the calls after it give the bits of the calls before it."""
    result = run_scenario(
        """
        torch.manual_seed(0)
        x = torch.randn(4096, dtype=torch.float32) * 4
        def bits():
            leaf = x.clone().requires_grad_(True)
            y = spocu(leaf)
            y.backward(torch.ones_like(y))
            return [y.detach().view(torch.int32).tolist(), leaf.grad.view(torch.int32).tolist()], y.grad_fn.name()
        before, out["before_fn"] = bits()
        out["before_state"] = spocu_torch.kernel_status()["node_state"]
        out["status"] = spocu_torch.build_kernels()
        after, out["after_fn"] = bits()
        out["same_bits"] = before == after
        """
    )
    assert result["before_state"] == "idle" and result["before_fn"] == "SPOCUFunctionBackward"
    assert result["status"]["node_state"] == "ready", result["status"]
    assert "FixedSPOCU" in result["after_fn"] and result["same_bits"]


@pytest.mark.slow
def test_the_node_can_be_turned_off(cpp_ready):
    result = run_scenario(
        """
        out["status"] = spocu_torch.build_kernels()
        out["node"] = call_and_check()
        """,
        SPOCU_TORCH_NODE="0",
    )
    assert result["status"]["node_state"] == "disabled" and result["node"] == "_cpp"
