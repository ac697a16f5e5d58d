"""spocu.torch.SPOCU: the module, learnable parameters, training, the old-API shim."""

import math

import numpy as np
import pytest
import torch

from reference_checks import assert_matches_reference
from spocu.core import SPOCUParams, h, r, r_prime, reference_spocu, reference_spocu_grad
from spocu.torch import SPOCU, spocu


@pytest.fixture(params=["eager", "cpp", pytest.param("inductor", marks=pytest.mark.slow)])  # Inductor compiles
def learnable_path(request, monkeypatch):
    """The learnable path's plain ops, or its compiled kernels (forced for these small tensors)."""
    monkeypatch.setenv("SPOCU_TORCH_BACKEND", request.param)
    return request.param


def test_repr_shows_parameters():
    assert repr(SPOCU()) == "SPOCU(alpha=3.0937, beta=0.6653, gamma=4.437, c=inf)"
    assert "c=1.0" in repr(SPOCU(c=1))
    text = repr(SPOCU(learnable=True, num_parameters=2))
    assert "learnable=True" in text and "num_parameters=2" in text and "alpha=[3.094, 3.094]" in text


def test_module_matches_reference_and_has_no_parameters_when_fixed():
    m = SPOCU(alpha=2.0, beta=0.4, gamma=3.0, c=1.5)
    assert list(m.parameters()) == []
    x = torch.linspace(-10, 10, 2001, dtype=torch.float64)
    assert_matches_reference(x.numpy(), m(x).numpy(), SPOCUParams(2.0, 0.4, 3.0, 1.5), "float64")


@pytest.mark.parametrize("kwargs", [{"alpha": -1}, {"beta": 1}, {"gamma": 0}, {"c": 0.5}, {"beta": float("nan")}])
def test_module_validates(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        SPOCU(**kwargs)


def test_num_parameters_needs_learnable():
    with pytest.raises(ValueError, match="learnable"):
        SPOCU(num_parameters=3)
    with pytest.raises(ValueError, match="num_parameters"):
        SPOCU(learnable=True, num_parameters=0)


@pytest.mark.slow
def test_gradient_reaches_layers_before_spocu_and_loss_falls():
    """The old package's bug: no gradient reached the first Linear. Here it must, and train."""
    torch.manual_seed(0)
    x = torch.randn(256, 4)
    y = (x[:, :1] * x[:, 1:2]).sin() + 0.5 * x[:, 2:3]
    net = torch.nn.Sequential(torch.nn.Linear(4, 32), SPOCU(), torch.nn.Linear(32, 1))
    opt = torch.optim.Adam(net.parameters(), lr=5e-3)
    losses = []
    for _ in range(200):
        loss = torch.nn.functional.mse_loss(net(x), y)
        opt.zero_grad()
        loss.backward()
        assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_learnable_gradients_match_reference_formulas(learnable_path):
    """dS/dalpha, dS/dbeta, dS/dgamma from autograd against the analytic float64 formulas."""
    params = SPOCUParams(alpha=2.5, beta=0.55, gamma=3.0, c=2.0)
    x = torch.tensor([-5.0, -1.0, 0.3, 1.0, 2.0, 3.5, 10.0], dtype=torch.float64)
    a, b, g = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (2.5, 0.55, 3.0))
    y = spocu(x, a, b, g, 2.0)
    assert_matches_reference(x.numpy(), y.detach().numpy(), params, "float64")
    y.sum().backward()
    xn = x.numpy()
    u = xn / 3.0 + 0.55
    hp = np.where((u >= 0) & (u < 2.0), r_prime(np.clip(u, 0, 2.0)), 0.0)
    np.testing.assert_allclose(a.grad.item(), np.sum(h(u, 2.0) - h(0.55, 2.0)), rtol=1e-12)
    np.testing.assert_allclose(b.grad.item(), np.sum(2.5 * (hp - r_prime(0.55))), rtol=1e-12)
    np.testing.assert_allclose(g.grad.item(), np.sum(2.5 * hp * (-xn / 9.0)), rtol=1e-12)


@pytest.mark.parametrize("c", [math.inf, 1.5])
def test_learnable_gradcheck(c, learnable_path):
    torch.manual_seed(1)
    x = torch.rand(3, 4, 5, dtype=torch.float64) * 8 - 2.5
    params = [torch.tensor(v, dtype=torch.float64).repeat(4).requires_grad_(True) for v in (2.0, 0.6, 3.0)]
    params[1].data += torch.tensor([0.0, 0.05, -0.05, 0.1], dtype=torch.float64)
    if math.isfinite(c):  # keep away from the kink at u = c
        u = x / 3.0 + 0.6
        x = torch.where((u - c).abs() < 0.05, x + 0.3, x)
    x.requires_grad_(True)
    fn = lambda t, a, b, g: spocu(t, a, b, g, c)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, *params))
    assert torch.autograd.gradgradcheck(fn, (x, *params))


def test_learnable_per_channel_forward_matches_reference_per_channel(learnable_path):
    m = SPOCU(learnable=True, num_parameters=3, dtype=torch.float64)
    with torch.no_grad():
        m.raw_beta.copy_(torch.logit((torch.tensor([0.2, 0.5, 0.8], dtype=torch.float64) - 1e-6) / (1 - 2e-6)))
    x = torch.randn(2, 3, 5, dtype=torch.float64) * 4
    y = m(x).detach()
    for ch, beta in enumerate([0.2, 0.5, 0.8]):
        assert_matches_reference(x[:, ch].numpy(), y[:, ch].numpy(), SPOCUParams(beta=beta), "float64")


def test_learnable_channel_mismatch_is_a_clear_error(learnable_path):
    m = SPOCU(learnable=True, num_parameters=3)
    with pytest.raises(ValueError, match="channel"):
        m(torch.randn(2, 4))


def test_learnable_parameters_stay_in_domain_under_aggressive_training():
    torch.manual_seed(0)
    act = SPOCU(learnable=True, num_parameters=8, c=1.0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), act, torch.nn.Linear(8, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1.0)  # steps of ~1 push the raw values far out
    x = torch.randn(64, 3)
    for _ in range(200):
        # drive beta to 1 and alpha, gamma to 0: the edges of the domain
        loss = net(x).pow(2).mean() - act.beta.sum() + act.alpha.sum() + act.gamma.sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert (act.alpha > 0).all() and (act.gamma > 0).all()
        assert ((act.beta > 0) & (act.beta < 1)).all()
        assert torch.isfinite(net(x)).all()
    assert act.raw_alpha.grad is not None and act.raw_beta.grad is not None and act.raw_gamma.grad is not None


def test_learnable_module_saves_only_input_sized_tensors(learnable_path):
    m = SPOCU(learnable=True, num_parameters=4)
    x = torch.randn(8, 4, 16, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        m(x)
    big = [t for t in saved if t.numel() >= x.numel()]
    assert len(big) == 1 and big[0].shape == x.shape


def test_learnable_module_state_dict_round_trip():
    a = SPOCU(learnable=True, num_parameters=2)
    with torch.no_grad():
        a.raw_alpha.add_(0.3)
    b = SPOCU(learnable=True, num_parameters=2)
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 2)
    torch.testing.assert_close(a(x), b(x))


def test_compat_shim_runs_the_seed_code_and_is_differentiable():
    from spocu.spocu_pytorch import SPOCU as OldSPOCU

    alpha, beta, gamma = 3.0937, 0.6653, 4.437
    spocu_old_api = OldSPOCU(alpha, beta, gamma)
    x = torch.rand((10, 10))
    out = spocu_old_api(x)
    assert out.shape == (10, 10) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), reference_spocu(x.double().numpy()), rtol=1e-5, atol=1e-6)
    assert spocu_old_api.h2_function(beta) == pytest.approx(float(r(beta)), rel=1e-15)
    lin = torch.nn.Linear(10, 10)
    spocu_old_api(lin(x)).sum().backward()
    assert lin.weight.grad is not None
    xb = torch.randn(4, 4, dtype=torch.bfloat16)
    assert spocu_old_api(xb).dtype == torch.bfloat16
    g = torch.autograd.functional.jacobian(spocu_old_api, torch.tensor([0.5], dtype=torch.float64))
    assert g.item() == pytest.approx(float(reference_spocu_grad(0.5)), rel=1e-12)
