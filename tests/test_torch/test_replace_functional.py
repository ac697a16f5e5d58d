"""replace_activations swaps functional calls (F.relu, torch.relu, x.relu(), ...) too, and never silently half-swaps.

Models are kuangliu/pytorch-cifar style (tests/test_torch/zoo.py); the swapped model is checked against
a twin written with SPOCU modules, and single calls against the float64 NumPy reference.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch_zoo as zoo
from torch import nn
from torch.nn import functional as F

from spocu.core import reference_spocu
from spocu.torch import SPOCU, replace_activations
from spocu.torch.replace import count_activations

X64 = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _relus(model: nn.Module, x: torch.Tensor) -> int:
    return sum(n for (kind, _), n in count_activations(model, x).items() if kind == "relu")


def _learnable64() -> SPOCU:
    return SPOCU(c=1.0, learnable=True, dtype=torch.float64)


def test_simple_dla_every_relu_swapped_and_the_report_counts_them():
    model = zoo.SimpleDLA()
    assert _relus(model, torch.zeros(2, 3, 16, 16)) == 35
    report = replace_activations(model, "relu", SPOCU, example_inputs=torch.zeros(2, 3, 16, 16), report=True)
    assert report.summary() == "35 of 35 relu (3 modules, 32 functional calls)"
    assert report.left == {} and report.model is model
    assert sorted(report.modules) == ["base.2", "layer1.2", "layer2.2"]
    assert report.call_sites["layer3.root"] == [f"torch_zoo.py:{_line(zoo.Root.forward, 'F.relu')}"]
    assert _relus(model, torch.zeros(2, 3, 16, 16)) == 0


def _line(function, text: str) -> int:
    import inspect

    lines, start = inspect.getsourcelines(function)
    return start + next(i for i, line in enumerate(lines) if text in line)


@pytest.mark.parametrize("learnable", [False, True])
def test_resnet_swap_equals_the_hand_built_spocu_model_in_value_and_gradient(learnable):
    make = _learnable64 if learnable else (lambda: SPOCU(c=1.0))
    torch.manual_seed(1)
    swapped = zoo.ResNet().double()
    hand = zoo.HandResNet(make).double()
    hand.load_state_dict(swapped.state_dict(), strict=False)  # convolutions, norms, linear: the same weights
    replace_activations(swapped, "relu", make, example_inputs=X64)
    assert _relus(swapped, X64) == 0
    for model in (swapped, hand):
        model.train()
    x1, x2 = X64.clone().requires_grad_(), X64.clone().requires_grad_()
    y1, y2 = swapped(x1), hand(x2)
    torch.testing.assert_close(y1, y2, rtol=1e-12, atol=1e-12)
    (y1**2).sum().backward()
    (y2**2).sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(
        swapped.layer2[0].conv1.weight.grad,
        hand.layer2[0].conv1.weight.grad,
        rtol=1e-10,
        atol=1e-12,
    )
    if learnable:  # each call site of each block has its own parameters, trained like the hand-built ones
        site = swapped.layer1[1].spocu_calls[f"forward_L{_line(zoo.BasicBlock.forward, 'out = F.relu(out)')}"]
        torch.testing.assert_close(
            site.raw_alpha.grad,
            hand.layer1[1].act2.raw_alpha.grad,
            rtol=1e-10,
            atol=1e-12,
        )
        assert len([p for p in swapped.parameters()]) == len([p for p in hand.parameters()])


def _spocu64(x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(reference_spocu(x.detach().numpy(), c=1.0))


class EveryForm(nn.Module):
    """Each functional relu form once; the in-place ones write into their input."""

    def forward(self, x):
        a = F.relu(x)
        b = torch.relu(x)
        c = x.relu()
        d = x.clone().relu_()
        e = F.relu(x.clone(), inplace=True)
        f = torch.relu_(x.clone())
        g = F.relu(x.clone(), True)
        return torch.stack([a, b, c, d, e, f, g])


def test_every_functional_relu_form_computes_spocu():
    x = torch.linspace(-3, 3, 25, dtype=torch.float64)
    model = EveryForm()
    report = replace_activations(model, "relu", lambda: SPOCU(c=1.0), example_inputs=x, report=True)
    assert report.summary() == "7 of 7 relu (0 modules, 7 functional calls)"
    out = model(x)
    for row in out:
        torch.testing.assert_close(row, _spocu64(x), rtol=1e-12, atol=1e-12)


class InPlaceInput(nn.Module):
    def forward(self, x):
        y = x * 1.0
        F.relu(y, inplace=True)  # the result is y itself
        return y


def test_in_place_call_writes_spocu_into_its_input():
    x = torch.linspace(-2, 2, 9, dtype=torch.float64)
    model = InPlaceInput()
    replace_activations(model, "relu", lambda: SPOCU(c=1.0))
    torch.testing.assert_close(model(x), _spocu64(x), rtol=1e-12, atol=1e-12)


class Mixed(nn.Module):
    def forward(self, x):
        return torch.stack(
            [
                F.gelu(x),
                F.gelu(x, approximate="tanh"),
                F.silu(x),
                F.relu6(x),
                F.elu(x),
                F.hardswish(x),
                torch.tanh(x),
            ]
        )


@pytest.mark.parametrize(
    ("kind", "rows"),
    [
        ("gelu", [0, 1]),
        ("silu", [2]),
        ("swish", [2]),
        ("relu6", [3]),
        ("elu", [4]),
        ("hardswish", [5]),
    ],
)
def test_each_kind_swaps_its_calls_only(kind, rows):
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    plain = Mixed()(x)
    model = Mixed()
    replace_activations(model, kind, lambda: SPOCU(c=1.0), example_inputs=x)
    out = model(x)
    for row in range(7):
        torch.testing.assert_close(out[row], _spocu64(x) if row in rows else plain[row], rtol=1e-12, atol=1e-12)


def test_several_kinds_at_once():
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    model = Mixed()
    report = replace_activations(model, ("gelu", "silu"), lambda: SPOCU(c=1.0), example_inputs=x, report=True)
    assert report.functional_calls == 3 and report.left == {}


def _swapped_resnet() -> nn.Module:
    torch.manual_seed(2)
    model = zoo.ResNet().double()
    replace_activations(model, "relu", _learnable64, example_inputs=X64)
    for p in model.parameters():  # parameters away from their initial values, so a lost one shows
        p.data.add_(0.01 * torch.randn_like(p))
    return model.eval()


def test_survives_state_dict_deepcopy_whole_model_save_and_train_eval():
    model = _swapped_resnet()
    expected = model(X64)
    again = zoo.ResNet().double()
    replace_activations(again, "relu", _learnable64, example_inputs=X64)
    again.load_state_dict(model.state_dict())  # strict: same keys, site parameters included
    assert any(".spocu_calls." in key for key in model.state_dict())
    torch.testing.assert_close(again.eval()(X64), expected, rtol=0, atol=0)
    copied = copy.deepcopy(model)
    torch.testing.assert_close(copied(X64), expected, rtol=0, atol=0)
    assert _relus(copied, X64) == 0
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    torch.testing.assert_close(loaded(X64), expected, rtol=0, atol=0)
    for net in (model, copied):
        net.train()
        net(X64)
        net.eval()
    assert _relus(model, X64) == 0
    torch.testing.assert_close(model(X64), copied(X64), rtol=0, atol=0)
    assert not torch.equal(model(X64), expected)  # the batch-norm statistics moved in training mode


class Checkpointed(nn.Module):
    def __init__(self, use: bool) -> None:
        super().__init__()
        self.net, self.use = zoo.ResNet(), use

    def forward(self, x):
        net = self.net
        out = F.relu(net.bn1(net.conv1(x)))
        for block in [*net.layer1, *net.layer2]:
            out = torch.utils.checkpoint.checkpoint(block, out, use_reentrant=False) if self.use else block(out)
        return net.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


def test_gradient_checkpointing_recomputes_with_the_swap():
    grads = []
    for use in (False, True):
        torch.manual_seed(3)
        model = Checkpointed(use).double().train()
        replace_activations(model, "relu", _learnable64, example_inputs=X64)
        model(X64).square().sum().backward()
        grads.append({name: p.grad for name, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and any(".spocu_calls." in name for name in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-10, atol=1e-12)


@pytest.mark.slow
def test_torch_compile_gives_the_eager_values():
    model = zoo.ResNet().eval()
    replace_activations(model, "relu", lambda: SPOCU(c=1.0), example_inputs=torch.zeros(2, 3, 8, 8))
    x = X64.float()
    expected = model(x)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="eager")
    torch.testing.assert_close(compiled(x), expected, rtol=1e-5, atol=1e-6)


def test_ddp_with_one_gloo_process(tmp_path):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0, world_size=1)
    try:
        torch.manual_seed(4)
        model = zoo.ResNet().double()
        replace_activations(model, "relu", _learnable64, example_inputs=X64)
        plain = copy.deepcopy(model)
        wrapped = nn.parallel.DistributedDataParallel(model)
        wrapped(X64).sum().backward()
        plain(X64).sum().backward()
        site = f"forward_L{_line(zoo.BasicBlock.forward, 'out = F.relu(out)')}"
        torch.testing.assert_close(
            model.layer1[0].spocu_calls[site].raw_beta.grad,
            plain.layer1[0].spocu_calls[site].raw_beta.grad,
        )
        assert _relus(wrapped.module, X64) == 0
    finally:
        dist.destroy_process_group()


class Hidden(nn.Module):
    """A relu the swap cannot see: the aten op called directly."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return torch.ops.aten.relu.default(F.relu(self.fc(x)))


def test_ops_left_after_the_swap_raise_naming_count_and_place_or_warn():
    with pytest.raises(
        ValueError,
        match=r"1 relu ops still ran after the swap \(1 of 2 relu .*\): 1 in \(model\) \(test_replace_functional\.py:\d+\)",
    ):
        replace_activations(Hidden(), "relu", SPOCU, example_inputs=torch.zeros(1, 3))
    with pytest.warns(UserWarning, match="1 relu ops still ran"):
        report = replace_activations(
            Hidden(),
            "relu",
            SPOCU,
            example_inputs=torch.zeros(1, 3),
            strict=False,
            report=True,
        )
    assert report.left_count == 1 and report.functional_calls == 1


def _helper(x):
    return F.relu(x)


class UsesHelper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 3)
        self.act = nn.ReLU()

    def forward(self, x):
        return _helper(self.fc(self.act(x)))


def test_a_call_outside_the_model_classes_shares_a_parameter_free_replacement_or_fails_loudly():
    x = torch.linspace(-2, 2, 6, dtype=torch.float64).reshape(2, 3)
    model = UsesHelper().double()
    report = replace_activations(model, "relu", lambda: SPOCU(c=1.0), example_inputs=x, report=True)
    assert report.summary() == "2 of 2 relu (1 modules, 1 functional calls)"
    torch.testing.assert_close(model(x), _spocu64(model.fc(_spocu64(x))), rtol=1e-12, atol=1e-12)
    with pytest.raises(
        RuntimeError,
        match=r"test_replace_functional\.py:\d+ is in a function outside any module's method",
    ):
        replace_activations(UsesHelper().double(), "relu", _learnable64, example_inputs=x)
    learnable = UsesHelper().double()
    replace_activations(learnable, "relu", _learnable64)  # nothing run: the forward is where it fails
    with pytest.raises(RuntimeError, match="outside any module's method"):
        learnable(x)


def test_model_without_the_kind_is_refused_naming_what_it_has():
    model = nn.Sequential(nn.Linear(2, 2), nn.Tanh(), nn.GELU())
    with pytest.raises(ValueError, match=r"nothing replaced \(activation modules it has: GELU, Tanh\)"):
        replace_activations(model, "relu", SPOCU, example_inputs=torch.zeros(1, 2))


def test_mobilenet_style_block_with_only_functional_calls_is_swapped():
    model = zoo.MobileBlock()
    report = replace_activations(model, "relu", SPOCU, example_inputs=torch.zeros(1, 4, 4, 4), report=True)
    assert report.summary() == "2 of 2 relu (0 modules, 2 functional calls)"


def test_third_party_classes_match_by_name_without_importing_them():
    timm_gelu = zoo.third_party("timm.layers.activations", "GELU", F.gelu)
    timm_gelu_tanh = zoo.third_party("timm.layers.activations", "GELUTanh", lambda x: F.gelu(x, approximate="tanh"))
    hf_gelu = zoo.third_party("transformers.activations", "GELUActivation", F.gelu)
    hf_new = zoo.third_party(
        "transformers.activations",
        "NewGELUActivation",
        lambda x: F.gelu(x, approximate="tanh"),
    )
    hf_fast = zoo.third_party(
        "transformers.activations",
        "FastGELUActivation",
        lambda x: F.gelu(x, approximate="tanh"),
    )
    hf_quick = zoo.third_party(
        "transformers.activations",
        "QuickGELUActivation",
        lambda x: x * torch.sigmoid(1.702 * x),
    )
    timm_swish = zoo.third_party("timm.layers.activations", "Swish", F.silu)
    lookalike = zoo.third_party("mypackage.layers", "GELU", F.gelu)  # same name, another package: not matched
    model = nn.Sequential(
        timm_gelu(),
        timm_gelu_tanh(),
        hf_gelu(),
        hf_new(),
        hf_fast(),
        hf_quick(),
        timm_swish(),
        lookalike(),
    )
    report = replace_activations(
        model,
        "gelu",
        SPOCU,
        report=True,
        example_inputs=torch.zeros(1, 3),
        strict=False,
    )
    assert sorted(report.modules) == ["0", "1", "2", "3", "4"]
    assert (
        "7" in report.call_sites and report.left == {}
    )  # the look-alike is not the class, but its F.gelu call is swapped
    replace_activations(model, ["quick_gelu", "silu"], SPOCU)
    assert [type(m).__name__ for m in model] == ["SPOCU"] * 7 + ["GELU"]
    replace_activations(model, "mypackage.layers.GELU", SPOCU)  # a dotted class path
    assert all(type(m).__name__ == "SPOCU" for m in model)


def test_the_report_without_a_probe_names_modules_and_call_sites():
    report = replace_activations(zoo.ResNet(), "relu", SPOCU, report=True)
    assert not report.probed
    assert report.summary() == "relu: 0 modules and 9 functional call sites replaced (not run)"
    assert set(report.call_sites) == {
        "",
        "layer1.0",
        "layer1.1",
        "layer2.0",
        "layer2.1",
    }


def test_sequential_is_never_given_extra_layers():
    model = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
    replace_activations(model, "relu", SPOCU)
    assert [type(m).__name__ for m in model] == ["Linear", "SPOCU", "Linear"]
    assert model(torch.zeros(1, 2)).shape == (1, 2)
