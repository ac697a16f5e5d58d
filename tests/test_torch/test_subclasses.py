"""Tensor subclasses and tensors without storage of their own never reach a raw-pointer kernel.

FakeTensor, meta tensors, DTensor (one rank, gloo), a ``__torch_dispatch__`` logging wrapper
and functional tensors take the composite plain ops, which respect
``__torch_function__``/``__torch_dispatch__``; their values and gradients equal those of
plain tensors (which the C++ kernels compute), within rounding, and both match the float64
reference. Each case would crash the process (exit 139) if it reached ``data_ptr()``, so each
runs where a crash fails the test rather than the session: in a subprocess for the FakeTensor
case, the one that crashed before.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import spocu.torch as st
from spocu.core import reference_spocu, reference_spocu_grad

SRC = str(Path(__file__).resolve().parents[2] / "src")
TOL = {"rtol": 1e-5, "atol": 1e-6}


def plain_result(module_or_fn, x: torch.Tensor):
    """(value, input gradient, parameter gradients) of a plain-tensor call."""
    leaf = x.detach().clone().requires_grad_(True)
    y = module_or_fn(leaf)
    y.backward(torch.ones_like(y))
    params = [p.grad.clone() for p in getattr(module_or_fn, "parameters", lambda: [])()]
    if hasattr(module_or_fn, "zero_grad"):
        module_or_fn.zero_grad()
    return y.detach(), leaf.grad, params


def cases():
    return {"functional": st.spocu, "fixed": st.SPOCU(c=1.5),
            "learnable": st.SPOCU(learnable=True, num_parameters=3)}  # fmt: skip


def test_plain_tensors_match_the_reference():
    x = torch.linspace(-5, 5, 30, dtype=torch.float64).reshape(2, 3, 5)
    y, dx, _ = plain_result(st.spocu, x)
    np.testing.assert_allclose(y.numpy(), reference_spocu(x.numpy()), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dx.numpy(), reference_spocu_grad(x.numpy()), rtol=1e-11, atol=1e-12)


@pytest.mark.slow
def test_fake_tensors_get_shapes_and_never_a_pointer_in_a_fresh_process():
    """The issue's crash: ``with FakeTensorMode(): spocu(torch.empty(2, 3))`` on the first call of a process."""
    script = textwrap.dedent(
        """
        import torch, spocu.torch as st
        from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
        with FakeTensorMode():
            x = torch.empty(2, 3, 4, requires_grad=True)
            for f in (st.spocu, st.SPOCU(c=1.0), st.SPOCU(learnable=True, num_parameters=3)):
                y = f(x)
                y.sum().backward()
                assert isinstance(y, FakeTensor) and y.shape == x.shape and x.grad.shape == x.shape, f
            z = torch.ops.spocu.spocu(x, 3.0937, 0.6653, 4.437, float("inf"), "auto")
            assert isinstance(z, FakeTensor) and z.shape == x.shape
        print("OK", st.kernel_path(torch.float32))
        """
    )
    env = {**os.environ, "PYTHONPATH": SRC}
    env.pop("SPOCU_TORCH_BACKEND", None)
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.startswith("OK")


def test_meta_tensors_and_the_custom_ops_meta_kernels():
    x = torch.empty(4, 3, 5, device="meta", requires_grad=True)
    for name, f in cases().items():
        if name == "learnable":
            f = f.to("meta")
        y = f(x)
        assert y.device.type == "meta" and y.shape == x.shape, name
    for op, args in ((torch.ops.spocu.spocu, (x,)), (torch.ops.spocu.spocu_backward, (x, x))):
        out = op(*args, 3.0937, 0.6653, 4.437, float("inf"), "auto")
        assert out.device.type == "meta" and out.shape == x.shape


def test_a_torch_dispatch_logging_wrapper_sees_the_ops_and_gets_plain_values():
    from torch.testing._internal.logging_tensor import LoggingTensor, capture_logs

    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(0)) * 3
    for name, f in cases().items():
        want = plain_result(f, x)
        leaf = LoggingTensor(x.clone()).requires_grad_(True)
        with capture_logs() as logs:
            y = f(leaf)
            y.backward(torch.ones_like(y))
        assert type(y) is LoggingTensor and len(logs) > 3, name  # the composite ops ran through it
        torch.testing.assert_close(y.elem, want[0], **TOL)
        torch.testing.assert_close(leaf.grad.elem, want[1], **TOL)
        for p, g in zip(getattr(f, "parameters", lambda: [])(), want[2]):
            torch.testing.assert_close(p.grad, g, **TOL)


def test_functional_tensors_under_functionalize():
    x = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(1)) * 3
    for f in cases().values():
        got = torch.func.functionalize(f)(x)
        # standard ops in another order than the fused kernels: float32 rounding apart
        torch.testing.assert_close(got, f(x), rtol=2e-4, atol=1e-4)
        grad = torch.func.functionalize(torch.func.grad(lambda t: f(t).sum()))(x)  # noqa: B023
        # autograd through the polynomial's standard ops, not the closed-form s': float32 rounding apart
        torch.testing.assert_close(grad, plain_result(f, x)[1], rtol=2e-4, atol=1e-5)


@pytest.fixture(scope="module")
def one_rank_gloo(tmp_path_factory):
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_gloo_available()):
        pytest.skip("torch.distributed with gloo is not available")
    # a file rendezvous, not a TCP port: test processes running side by side cannot collide
    store = tmp_path_factory.mktemp("gloo") / "store"
    dist.init_process_group("gloo", init_method=store.as_uri(), rank=0, world_size=1)
    try:
        from torch.distributed.device_mesh import init_device_mesh

        yield init_device_mesh("cpu", (1,))
    finally:
        dist.destroy_process_group()


def _check_on_dtensor(mesh, wrap=lambda f: f):
    """Each case, ``wrap``-ped, on a DTensor input: a DTensor out, with plain tensors' values and gradients."""
    try:
        from torch.distributed.tensor import DTensor, Shard, distribute_module, distribute_tensor
    except ImportError:  # torch 2.4: a prototype in torch.distributed._tensor (no masked_fill_ sharding)
        pytest.skip(f"DTensor is public from torch 2.5 (this torch: {torch.__version__})")

    x = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(2)) * 3
    for name, f in cases().items():
        want = plain_result(f, x)
        if name == "learnable":
            f = distribute_module(f, mesh)
        leaf = distribute_tensor(x.clone(), mesh, [Shard(0)]).requires_grad_(True)
        y = wrap(f)(leaf)
        y.backward(torch.ones_like(y))
        assert isinstance(y, DTensor), name
        torch.testing.assert_close(y.full_tensor(), want[0], **TOL)
        torch.testing.assert_close(leaf.grad.full_tensor(), want[1], **TOL)
        for p, g in zip(getattr(f, "parameters", lambda: [])(), want[2], strict=True):
            torch.testing.assert_close(p.grad.full_tensor(), g, **TOL)


def test_dtensor_on_one_gloo_rank(one_rank_gloo):
    """(The learnable module's parameters are replicated DTensors, as for any layer with weights.)"""
    _check_on_dtensor(one_rank_gloo)


@pytest.mark.slow
def test_torch_compile_over_dtensor_on_one_gloo_rank(one_rank_gloo):
    """torch.compile of SPOCU (functional, fixed, learnable) with DTensor inputs: values and gradients of plain tensors."""
    torch._dynamo.reset()
    _check_on_dtensor(one_rank_gloo, torch.compile)
