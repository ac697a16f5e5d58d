"""torch.fx tracing of models with SPOCU, and the constructor contract timm's ``act_layer`` relies on."""

from __future__ import annotations

import functools
import inspect

import pytest
import torch
import torch.fx
from torch import nn

import spocu.torch as st
from spocu.torch import SPOCU, spocu


class Net(nn.Module):
    """SPOCU as a module (fixed and learnable) and as a functional call, between layers."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = SPOCU(learnable=True, num_parameters=4)
        self.fixed = SPOCU(c=1.0)
        self.head = nn.Linear(4 * 6 * 6, 2)

    def forward(self, x):
        x = self.fixed(self.act(self.conv(x)))
        return self.head(spocu(x, 2.0, 0.5, 1.5).flatten(1))


def _value_and_grads(model, x):
    model.zero_grad()
    leaf = x.detach().clone().requires_grad_(True)
    y = model(leaf)
    y.backward(torch.ones_like(y))
    return [y.detach(), leaf.grad] + [p.grad.clone() for p in model.parameters()]


@pytest.fixture
def net_and_input():
    torch.manual_seed(0)
    return Net(), torch.randn(2, 3, 8, 8) * 2


def test_symbolic_trace_equals_eager_in_value_and_gradient(net_and_input):
    net, x = net_and_input
    traced = torch.fx.symbolic_trace(net)
    calls = [n for n in traced.graph.nodes if n.op == "call_function" and n.target is spocu]
    assert len(calls) == 3  # the learnable and fixed modules and the functional: one node each
    for got, want in zip(_value_and_grads(traced, x), _value_and_grads(net, x), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_a_plain_tracer_with_spocu_as_leaf_module(net_and_input):
    """What torchvision's feature extraction does: a Tracer whose leaves are given modules."""

    class LeafSPOCU(torch.fx.Tracer):
        def is_leaf_module(self, m, qualname):
            return isinstance(m, SPOCU) or super().is_leaf_module(m, qualname)

    net, x = net_and_input
    graph = LeafSPOCU().trace(net)
    module = torch.fx.GraphModule(net, graph)
    assert [n.target for n in graph.nodes if n.op == "call_module"] == ["conv", "act", "fixed", "head"]
    for got, want in zip(_value_and_grads(module, x), _value_and_grads(net, x), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_a_plain_tracer_records_the_functional_as_one_node():
    graph = torch.fx.Tracer().trace(nn.Sequential(nn.Linear(3, 3), SPOCU()))
    assert [n.op for n in graph.nodes] == ["placeholder", "call_module", "call_function", "output"]


def test_inplace_is_accepted_and_ignored_as_timm_passes_it():
    """timm builds activations as ``act_layer(inplace=True)``; SPOCU keeps its input (for backward)."""
    assert "inplace" in inspect.signature(SPOCU).parameters
    x = torch.linspace(-4, 4, 9)
    for make in (SPOCU, functools.partial(SPOCU, c=1.0), functools.partial(SPOCU, learnable=True)):
        layer = make(inplace=True)
        kept = x.clone()
        y = layer(kept)
        torch.testing.assert_close(kept, x)  # not overwritten
        torch.testing.assert_close(y, make()(x))
    assert SPOCU(inplace=False).c == SPOCU().c


def test_kernel_path_names_the_kernels_of_this_process():
    assert st.kernel_path(torch.float32, "cpu", backend="eager") == "eager"
    path = st.kernel_path(torch.float32)
    assert path == st.kernel_path(torch.float32)  # decided once
    assert path == "eager" or path == f"cpp-{st.kernel_status()['isa']}"
