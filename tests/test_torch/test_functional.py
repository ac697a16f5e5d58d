"""spocu.torch.spocu: special inputs, gradients, memory, on every kernel path.

Every numeric test runs on every kernel path (the ``path`` fixture: "eager", "cpp",
"inductor", "triton"); see conftest.py. Values and gradients on the wide inputs, in every
dtype and parameter set, are checked against the float64 reference on every path in the
one parity matrix, tests/test_parity.py.
"""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference_checks import PARAM_SETS, assert_matches_reference
from spocu.core import SPOCUParams, reference_spocu, reference_spocu_grad
from spocu.torch import spocu


def _value_and_grad(x64: np.ndarray, dtype: torch.dtype, params: SPOCUParams, device="cpu", backend=None):
    x = torch.tensor(x64, dtype=torch.float64).to(dtype).to(device).requires_grad_(True)
    y = spocu(x, **params.as_dict(), backend=backend)
    y.backward(torch.ones_like(y))
    as64 = lambda t: t.detach().cpu().to(torch.float64).numpy()  # noqa: E731
    return as64(x), as64(y), as64(x.grad), y


def test_issue_facts_in_float32():
    x = torch.tensor([0.0, 5.0, 20.0, -1e6])
    y = spocu(x)
    assert y[0].item() == 0.0
    assert y[1].item() == pytest.approx(-4.14656, rel=1e-5)
    assert y[2].item() == pytest.approx(973685.05, rel=1e-6)
    assert y[3].item() == pytest.approx(-1.58383, rel=1e-5)


def test_shapes_are_kept(path, dev):
    for shape in [(), (0,), (1,), (3,), (2, 3), (2, 3, 4, 5), (1, 0, 7)]:
        x = torch.randn(shape, device=dev, requires_grad=True)
        y = spocu(x, backend=path)
        assert y.shape == x.shape
        y.sum().backward()
        assert x.grad.shape == x.shape
        np.testing.assert_allclose(
            y.detach().cpu().double().numpy(), reference_spocu(x.detach().cpu().double().numpy()), rtol=1e-5, atol=1e-6
        )


def test_integer_and_bool_inputs_promote_like_sigmoid(path, dev):
    for x in (torch.arange(-3, 4), torch.tensor([True, False]), torch.arange(5, dtype=torch.uint8)):
        y = spocu(x.to(dev), backend=path).cpu()
        assert y.dtype == torch.sigmoid(x).dtype
        np.testing.assert_allclose(y.numpy(), reference_spocu(x.double().numpy()), rtol=1e-5, atol=1e-6)


def test_complex_input_is_refused():
    with pytest.raises(TypeError, match="real"):
        spocu(torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        spocu([1.0, 2.0])


@pytest.mark.parametrize("c", [math.inf, 1.0])
def test_nan_and_infinities(c, path, dev):
    x = torch.tensor([float("nan"), float("inf"), -float("inf")], device=dev, requires_grad=True)
    y = spocu(x, c=c, backend=path)
    ref = reference_spocu(x.detach().cpu().double().numpy(), c=c)
    assert math.isnan(y[0].item())
    assert y[1].item() == pytest.approx(ref[1], rel=1e-5) if math.isfinite(ref[1]) else y[1].item() == math.inf
    assert y[2].item() == pytest.approx(ref[2], rel=1e-5)
    y.backward(torch.ones(3, device=dev))
    assert math.isnan(x.grad[0].item())  # NaN in -> NaN gradient, as torch.sigmoid
    assert x.grad[2].item() == 0.0
    # s'(+inf) as the float64 reference defines it (0: +inf is outside the active piece)
    assert x.grad[1].item() == float(reference_spocu_grad(math.inf, c=c))


@pytest.mark.parametrize("params", list(PARAM_SETS.values()), ids=list(PARAM_SETS))
def test_no_nan_gradient_for_any_finite_input(params, path, dev):
    # one item per parameter set and path; the dtypes and upstream gradients are looped over (each call is tiny)
    for dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64):
        info = torch.finfo(dtype)
        points = [info.min, -1e4, -1.0, -info.tiny, 0.0, info.tiny, 1.0, 100.0, 1e4, info.max]
        for upstream in (0.0, 1.0, -3.0):
            x = torch.tensor(points, dtype=torch.float64).to(dtype).to(dev).requires_grad_(True)
            y = spocu(x, **params.as_dict(), backend=path)
            y.backward(torch.full_like(y, upstream))
            assert not torch.isnan(x.grad).any(), (dtype, upstream, x.grad)


def test_non_contiguous_inputs(path, dev):
    base = torch.randn(6, 8, dtype=torch.float64, device=dev) * 3
    for view in (base.t(), base[:, ::2], base[::3], base.unsqueeze(0).expand(2, 6, 8)):
        assert not view.is_contiguous()
        leaf = view.detach().clone().requires_grad_(True)
        strided = leaf.t().contiguous().t() if leaf.dim() == 2 else leaf
        y = spocu(strided, backend=path)
        view64 = view.cpu().numpy()
        np.testing.assert_allclose(y.detach().cpu().numpy(), reference_spocu(view64), rtol=1e-12, atol=1e-12)
        y.sum().backward()
        np.testing.assert_allclose(leaf.grad.cpu().numpy(), reference_spocu_grad(view64), rtol=1e-11, atol=1e-12)


def test_non_contiguous_layout_matches_sigmoid(path, dev):
    x = torch.randn(4, 6, device=dev)[:, ::2]
    assert spocu(x, backend=path).shape == torch.sigmoid(x).shape
    cl = torch.randn(2, 3, 4, 5, device=dev).to(memory_format=torch.channels_last)
    assert spocu(cl, backend=path).shape == cl.shape
    assert spocu(cl, backend=path).is_contiguous(memory_format=torch.channels_last)  # layout kept, as sigmoid


@pytest.mark.parametrize("c", [math.inf, 2.0])
def test_gradcheck_and_gradgradcheck(c, path, dev):
    params = SPOCUParams(c=c)
    gen = torch.Generator().manual_seed(0)
    x = torch.empty(40, dtype=torch.float64).uniform_(params.lower_bound + 0.05, 10.0, generator=gen)
    if math.isfinite(c):
        x = x[(x - params.upper_bound).abs() > 0.05]
    x = torch.cat([x, torch.tensor([-20.0, -5.0], dtype=torch.float64)]).to(dev).requires_grad_(True)
    fn = lambda t: spocu(t, c=c, backend=path)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def _saved_tensors(fn, x):
    saved = []

    def pack(t):
        saved.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        y = fn(x)
    return saved, y


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_backward_saves_only_the_input(dtype, path, dev):
    x = torch.randn(64, 32, dtype=dtype, device=dev, requires_grad=True)
    saved, y = _saved_tensors(lambda t: spocu(t, backend=path), x)
    assert len(saved) == 1
    assert saved[0].shape == x.shape and saved[0].dtype == x.dtype
    assert saved[0].untyped_storage().data_ptr() == x.untyped_storage().data_ptr()  # the input itself, no copy
    relu_saved, _ = _saved_tensors(torch.relu, x)
    total = lambda ts: sum(t.numel() * t.element_size() for t in ts)  # noqa: E731
    assert total(saved) == total(relu_saved)


def test_parameters_are_validated():
    with pytest.raises(ValueError, match="beta"):
        spocu(torch.zeros(2), beta=1.5)
    with pytest.raises(ValueError, match="c="):
        spocu(torch.zeros(2), c=0.5)


def test_unknown_backend_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="backend"):
        spocu(torch.zeros(2), backend="nope")
    monkeypatch.setenv("SPOCU_TORCH_BACKEND", "nope")
    with pytest.raises(ValueError, match="SPOCU_TORCH_BACKEND"):
        spocu(torch.zeros(2))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    xs=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=20),
    alpha=st.floats(0.1, 5),
    beta=st.floats(0.05, 0.95),
    gamma=st.floats(0.5, 8),
    c=st.one_of(st.just(math.inf), st.floats(1.0, 2.5)),
)
def test_property_float64_matches_reference(path, dev, xs, alpha, beta, gamma, c):
    params = SPOCUParams(alpha, beta, gamma, c)
    x = np.array(xs)
    _, y, g, _ = _value_and_grad(x, torch.float64, params, device=dev, backend=path)
    assert_matches_reference(x, y, params, "float64")
    assert_matches_reference(x, g, params, "float64", derivative=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_output_stays_on_device():
    x = torch.randn(1000, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    y = spocu(x)
    assert y.device.type == "cuda" and y.dtype == torch.bfloat16
    y.sum().backward()
    assert x.grad.device.type == "cuda"


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_huge_inputs_overflow_to_inf_not_nan(dtype, path, dev):
    """With c = inf, s(x) grows like x^8: beyond the dtype's range the answer is +inf on every path
    (a reordered polynomial evaluation must not produce inf - inf = NaN on the way)."""
    info = torch.finfo(dtype)
    x = torch.tensor([1e3, 1e6, 1e20, 1e30, info.max, float("inf")], dtype=torch.float64)
    x = x.clamp(max=info.max).to(dtype).to(dev)
    y = spocu(x.repeat(6000), backend=path)[: x.numel()].float().cpu()  # large enough for the fused path
    ref = reference_spocu(x.double().cpu().numpy())
    expect_inf = ref > info.max
    assert torch.isposinf(y[torch.from_numpy(expect_inf)]).all(), y
    assert not torch.isnan(y).any(), y
