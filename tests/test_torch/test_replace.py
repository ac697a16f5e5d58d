"""spocu.torch.replace_activations on nested models: what is replaced, fresh instances, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from spocu.core import reference_spocu
from spocu.torch import SPOCU, replace_activations


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.act = nn.ReLU(inplace=True)
        self.branches = nn.ModuleDict({"a": nn.ReLU(), "b": nn.Sequential(nn.Linear(3, 3), nn.GELU())})
        self.stack = nn.ModuleList([nn.ReLU(), nn.Tanh()])

    def forward(self, x):
        x = self.act(self.fc(x))
        x = self.branches["a"](x) + self.branches["b"](x)
        return self.stack[1](self.stack[0](x)) + F.relu(x)  # F.relu: code, swapped by a call-site replacement


def _net() -> nn.Module:
    return nn.Sequential(nn.Linear(2, 3), nn.ReLU(), Block(), nn.Sequential(nn.ReLU(), nn.Linear(3, 1)))


def _types(net: nn.Module) -> list[str]:
    return [
        type(m).__name__
        for m in net.modules()
        if not isinstance(m, (nn.Linear, nn.Sequential, nn.ModuleDict, nn.ModuleList, Block))
    ]


def test_every_relu_at_every_depth_is_replaced_and_the_rest_kept():
    net = _net()
    before = _types(net)
    assert before.count("ReLU") == 5
    out = replace_activations(net, "relu", SPOCU)
    assert out is net  # in place
    after = _types(net)
    assert after.count("ReLU") == 0 and after.count("SPOCU") == 6  # 5 modules, 1 for Block's F.relu call
    assert isinstance(net[2].spocu_calls[next(iter(net[2].spocu_calls))], SPOCU)
    assert after.count("GELU") == 1 and after.count("Tanh") == 1  # other activations untouched
    spocus = [m for m in net.modules() if isinstance(m, SPOCU)]
    assert len({id(m) for m in spocus}) == 6  # a fresh instance each
    x = torch.randn(4, 2)
    assert net(x).shape == (4, 1)


def test_replacement_computes_spocu_in_place_of_relu():
    net = nn.Sequential(nn.Identity(), nn.ReLU())
    replace_activations(net, nn.ReLU, lambda: SPOCU(c=1.0))
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    expected = torch.as_tensor(reference_spocu(x.numpy(), c=1.0))
    torch.testing.assert_close(net(x), expected, rtol=1e-6, atol=1e-9)


def test_tuple_of_classes_and_learnable_parameters_not_shared():
    net = nn.Sequential(nn.ReLU(), nn.GELU(), nn.Linear(2, 2), nn.ReLU())
    replace_activations(net, (nn.ReLU, nn.GELU), lambda: SPOCU(learnable=True))
    layers = [m for m in net if isinstance(m, SPOCU)]
    assert len(layers) == 3
    params = [set(id(p) for p in m.parameters()) for m in layers]
    assert all(params[0]) and not (params[0] & params[1]) and not (params[1] & params[2])


def test_module_that_is_itself_old_is_returned_replaced():
    assert isinstance(replace_activations(nn.ReLU(), "relu", SPOCU), SPOCU)


def test_nothing_matched_names_what_was_searched_and_functional_calls():
    net = nn.Sequential(nn.Linear(2, 2), nn.Tanh())
    with pytest.raises(
        ValueError, match=r"torch\.nn\.modules\.activation\.ReLU, timm's ReLU nor calls relu functionally"
    ):
        replace_activations(net, "relu", SPOCU)


def test_bad_arguments():
    with pytest.raises(TypeError, match="instance"):
        replace_activations(_net(), "relu", SPOCU())
    with pytest.raises(ValueError, match="unknown activation 'nope'"):
        replace_activations(_net(), "nope", SPOCU)
    with pytest.raises(TypeError, match="not a torch.nn.Module"):
        replace_activations(_net(), "relu", lambda: 3)
    with pytest.raises(TypeError, match="old must be"):
        replace_activations(_net(), 42, SPOCU)
    with pytest.raises(TypeError, match="module must be a torch.nn.Module, not list"):  # was an AttributeError
        replace_activations([_net()], "relu", SPOCU)
