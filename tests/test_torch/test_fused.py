"""The fused kernel paths: dispatch, fallback, layouts, custom ops, torch.compile and ONNX export.

Numeric parity of every path with the float64 reference (fixed and learnable parameters, every
dtype and parameter set) is in the one parity matrix, tests/test_parity.py; here are the
properties specific to the fused paths (layouts, per-channel sums, dispatch, compilation).
"""

from __future__ import annotations

import math
import threading
import warnings

import numpy as np
import pytest
import torch

from reference_checks import PARAM_SETS, assert_matches_reference
from spocu.core import SPOCUParams, reference_spocu, reference_spocu_grad
from spocu.torch import SPOCU, _dispatch, _inductor, _node, spocu
from spocu.torch._layout import is_dense

FUSED = ["inductor", "triton"]


@pytest.fixture(params=[pytest.param(p, marks=pytest.mark.slow) for p in FUSED])  # compiled or interpreted: slow
def fused(request):
    if request.param == "triton":
        request.getfixturevalue("triton_ready")
    return request.param


# ---------------------------------------------------------------- dispatch


def test_auto_uses_the_cpp_kernels_on_cpu_at_every_size_once_ready(cpp_ready, monkeypatch):
    monkeypatch.delenv("SPOCU_TORCH_BACKEND", raising=False)
    for n in (1, 10, 1 << 16):
        assert _dispatch.resolve_backend(torch.zeros(n)) == "cpp"
    assert _dispatch.resolve_backend(torch.zeros(4, dtype=torch.bfloat16)) == "cpp"
    monkeypatch.setenv("SPOCU_TORCH_BACKEND", "eager")
    assert _dispatch.resolve_backend(torch.zeros(10)) == "eager"
    assert _dispatch.resolve_backend(torch.zeros(10), "inductor") == "inductor"  # the argument wins


def test_cpp_asked_for_on_another_device_falls_back_with_one_warning(cpp_ready, monkeypatch):
    monkeypatch.setattr(_dispatch, "_warned", set())
    monkeypatch.setattr(_dispatch, "_ROUTES", {})
    with pytest.warns(RuntimeWarning, match="'cpp' cannot run here.*CPU tensors, got device 'meta'") as record:
        assert _dispatch.resolve_backend(torch.zeros(3, device="meta"), "cpp") == "eager"
        assert _dispatch.resolve_backend(torch.zeros(3, device="meta"), "cpp") == "eager"
    assert len(record) == 1


def test_auto_on_cpu_without_the_cpp_kernels_uses_plain_ops_with_one_warning(monkeypatch):
    """Where the C++ kernels did not load, "auto" says why once and the plain ops give the reference values."""
    from spocu.torch import _cpp

    monkeypatch.delenv("SPOCU_TORCH_BACKEND", raising=False)
    monkeypatch.setattr(_dispatch, "_warned", set())
    monkeypatch.setattr(_dispatch, "_ROUTES", {})  # (routes are decided once per process: start afresh)
    monkeypatch.setattr(_dispatch, "_FAST_CALLS", {})
    monkeypatch.setattr(_cpp, "ready", lambda: False)
    monkeypatch.setattr(_cpp, "unavailable_reason", lambda x=None: "no kernel library in this test")
    x = torch.linspace(-8, 8, 1001, dtype=torch.float64, requires_grad=True)
    warning = r"backend 'cpp' cannot run here \(no kernel library in this test\); using 'eager' instead"
    with pytest.warns(RuntimeWarning, match=warning) as record:
        assert _dispatch.resolve_backend(x) == "eager"
        y = spocu(x)
        y.sum().backward()
        assert _dispatch.kernel_path(torch.float64) == "eager"
    assert len(record) == 1
    np.testing.assert_allclose(y.detach().numpy(), reference_spocu(x.detach().numpy()), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(x.grad.numpy(), reference_spocu_grad(x.detach().numpy()), rtol=1e-11, atol=1e-13)


def _kernel_calls(monkeypatch) -> list[str]:
    """Record which kernel module's forward/backward run (they still compute)."""
    calls: list[str] = []
    for name, module in _dispatch.KERNELS.items():
        for fn in ("forward", "backward"):
            original = getattr(module, fn)
            monkeypatch.setattr(module, fn, lambda *a, _o=original, _n=name: calls.append(_n) or _o(*a))
    # the C++ autograd node runs the C++ kernels' forward and backward inside one call
    monkeypatch.setattr(_node, "apply", lambda *a, _o=_node.apply: calls.append("cpp node") or _o(*a))
    return calls


@pytest.mark.parametrize("entry", ["functional", "op"])
def test_the_chosen_path_runs(entry, cpp_ready, monkeypatch):
    """Every entry point runs the kernel the one dispatcher picks: the C++ kernels for CPU tensors of
    any size under "auto" (also for the custom op), plain ops when "eager" is asked for."""
    monkeypatch.delenv("SPOCU_TORCH_BACKEND", raising=False)
    p = SPOCUParams()
    run = {
        "functional": lambda t: spocu(t),
        "op": lambda t: torch.ops.spocu.spocu(t, p.alpha, p.beta, p.gamma, p.c, "auto"),
    }[entry]
    calls = _kernel_calls(monkeypatch)
    # the functional's eager calls go through the C++ autograd node once it is built (cpp_ready waits)
    expected = ["cpp node"] if entry == "functional" and _node.available() else ["cpp", "cpp"]
    big = torch.randn(1 << 16, requires_grad=True)
    small = torch.randn(10, requires_grad=True)
    run(big).sum().backward()
    assert calls == expected
    calls.clear()
    run(small).sum().backward()
    assert calls == expected
    if entry == "functional":  # (the op's impl argument is explicit, so it wins over the environment)
        calls.clear()
        monkeypatch.setenv("SPOCU_TORCH_BACKEND", "eager")
        run(big).sum().backward()
        assert calls == ["eager", "eager"]


def test_an_unavailable_inductor_falls_back_with_one_warning_per_pair(monkeypatch):
    monkeypatch.setattr(_inductor, "unavailable_reason", lambda x=None: "no compiler in this test")
    monkeypatch.setattr(_dispatch, "_warned", set())
    monkeypatch.setattr(_dispatch, "_ROUTES", {})  # (routes are decided once per process: start afresh)
    with pytest.warns(RuntimeWarning, match="'inductor' cannot run here.*no compiler in this test") as record:
        assert _dispatch.resolve_backend(torch.zeros(3), "inductor") == "eager"
        assert _dispatch.resolve_backend(torch.zeros(3), "inductor") == "eager"
    assert len(record) == 1
    assert _dispatch.resolve_backend(torch.zeros(1 << 16), "auto") in ("cpp", "eager")  # never Inductor


def test_the_ops_have_no_dispatch_rule_of_their_own():
    from spocu.torch import _ops

    assert not hasattr(_ops, "IMPLS") and not hasattr(_ops, "_impl")


def test_triton_on_an_unsupported_device_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    import spocu.torch._triton as tr

    monkeypatch.setattr(tr, "_installed", lambda: False)  # as on a machine without triton
    with pytest.raises(RuntimeError, match="triton.*not installed"):
        spocu(torch.zeros(4), backend="triton")


@pytest.fixture
def fresh_misreads_check():
    """_interpreter_misreads is asked once per process (lru_cache): forget its answer before and after."""
    import spocu.torch._triton as tr

    tr._interpreter_misreads.cache_clear()
    yield tr
    tr._interpreter_misreads.cache_clear()


def _fake_versions(monkeypatch, triton_version, numpy_version):
    """importlib.metadata.version and numpy.__version__ as on a machine with these releases."""
    import importlib.metadata

    real_version = importlib.metadata.version

    def version(name):
        if name != "triton":
            return real_version(name)
        if triton_version is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return triton_version

    monkeypatch.setattr(importlib.metadata, "version", version)
    monkeypatch.setattr(np, "__version__", numpy_version)


def test_triton_interpreter_before_3_2_under_numpy_2_is_refused_by_name(fresh_misreads_check, monkeypatch):
    """Triton 3.0's CPU interpreter (torch 2.4's) misreads tensors under NumPy 2: backend='triton' refuses it."""
    tr = fresh_misreads_check
    _fake_versions(monkeypatch, "3.0.0", "2.1.3")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(tr, "_installed", lambda: True)
    monkeypatch.setattr(tr, "llvm_conflict", lambda: None)
    monkeypatch.setattr(_dispatch, "_ROUTES", {})  # (routes are decided once per process: start afresh)
    want = "Triton 3.0.0's CPU interpreter misreads tensors under NumPy 2.1.3 (triton >= 3.2 reads them right)"
    assert tr.unavailable_reason(torch.device("cpu")) == want
    assert not tr.available(torch.device("cpu"))
    with pytest.raises(RuntimeError, match=r"backend 'triton' is not available: Triton 3\.0\.0's CPU interpreter"):
        spocu(torch.zeros(4), backend="triton")


@pytest.mark.parametrize(
    ("triton_version", "numpy_version"),
    [
        ("3.0.0", "1.26.4"),  # the old interpreter reads NumPy 1 right
        ("3.2.0", "2.1.3"),  # fixed from 3.2 on
        ("3.10.1", "2.3.0"),  # compared as numbers, not strings
        ("main", "2.1.3"),  # a version that is not a release: not refused on a guess
        (None, "2.1.3"),  # no metadata for triton: nothing to tell
    ],
)
def test_triton_interpreter_is_not_refused_otherwise(fresh_misreads_check, monkeypatch, triton_version, numpy_version):
    tr = fresh_misreads_check
    _fake_versions(monkeypatch, triton_version, numpy_version)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(tr, "_installed", lambda: True)
    monkeypatch.setattr(tr, "llvm_conflict", lambda: None)
    assert tr.unavailable_reason(torch.device("cpu")) is None


def test_triton_refuses_where_importing_it_would_abort_the_process(monkeypatch):
    """An LLVM clash (spocu._llvm) is the reason given, before any device question."""
    import spocu.torch._triton as tr

    monkeypatch.setattr(tr, "_installed", lambda: True)
    monkeypatch.setattr(tr, "llvm_conflict", lambda: "TensorFlow's LLVM is loaded (test)")
    for device in ("cpu", "cuda"):
        assert tr.unavailable_reason(torch.device(device)) == "TensorFlow's LLVM is loaded (test)"


# ---------------------------------------------------------------- the compiled CPU kernels


@pytest.fixture
def fresh_inductor_state(monkeypatch):
    """Let a test break the compiler without leaving the fused path broken for the others."""
    monkeypatch.setattr(_inductor, "_failure", None)
    monkeypatch.setattr(_inductor, "_ready", set())
    return _inductor


def test_compile_failure_falls_back_to_plain_ops_with_one_warning(fresh_inductor_state, monkeypatch):
    def broken(*key):
        def fn(*args):  # what torch.compile's kernel raises where no compiler works
            raise RuntimeError("no C++ compiler found")

        return fn

    monkeypatch.setattr(_inductor, "_compiled", broken)
    x = torch.linspace(-8, 8, 1001, dtype=torch.float64, requires_grad=True)
    with pytest.warns(RuntimeWarning, match="no C\\+\\+ compiler found") as record:
        y = spocu(x, backend="inductor")
        y.sum().backward()
        spocu(x, backend="inductor")
    assert len([w for w in record if "could not compile" in str(w.message)]) == 1
    assert not _inductor.usable() and "no C++ compiler" in _inductor.failure()
    np.testing.assert_allclose(y.detach().numpy(), reference_spocu(x.detach().numpy()), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(x.grad.numpy(), reference_spocu_grad(x.detach().numpy()), rtol=1e-11, atol=1e-13)
    # "auto" never uses Inductor on CPU (the C++ kernels or the plain ops serve), and warns no more
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _dispatch.resolve_backend(torch.zeros(1 << 16), "auto") in ("cpp", "eager")


@pytest.mark.slow
def test_one_compiled_kernel_serves_every_parameter_set_and_size():
    """Coefficients are data, not constants: new (alpha, beta, gamma, c) and sizes compile nothing."""
    from torch._dynamo.utils import counters

    x = torch.randn(3000, dtype=torch.float64, requires_grad=True)
    spocu(x, backend="inductor").sum().backward()  # compiled (or cached) for float64
    before = counters["stats"]["unique_graphs"]
    for params in PARAM_SETS.values():
        for n in (100, 5000):
            xs = (torch.randn(n, dtype=torch.float64) * 4).requires_grad_(True)
            y = spocu(xs, **params.as_dict(), backend="inductor")
            y.sum().backward()
            assert_matches_reference(xs.detach().numpy(), y.detach().numpy(), params, "float64")
            assert_matches_reference(xs.detach().numpy(), xs.grad.numpy(), params, "float64", derivative=True)
    assert counters["stats"]["unique_graphs"] == before


@pytest.mark.slow
def test_concurrent_first_calls_are_correct(fresh_inductor_state):
    params = SPOCUParams(c=1.5)
    xs = [torch.randn(5000, dtype=torch.float32) * 3 for _ in range(4)]
    results: list = [None] * 4

    def work(i):
        results[i] = spocu(xs[i], **params.as_dict(), backend="inductor")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, y in zip(xs, results):
        assert_matches_reference(x.numpy(), y.numpy(), params, "float32")


# ---------------------------------------------------------------- layouts and outputs


def _layouts(device):
    base = torch.randn(4, 6, 5, 3, dtype=torch.float64, device=device) * 3
    return {
        "contiguous": base,
        "channels_last": base.contiguous(memory_format=torch.channels_last),
        "transposed": base.transpose(1, 3),
        "sliced": base[:, ::2, 1:],
        "expanded": base[:1].expand(3, 6, 5, 3),
        "storage_offset": base.flatten()[7:307].view(10, 30),
        "five_dims_strided": base.reshape(2, 2, 6, 5, 3)[:, :, ::2].permute(4, 0, 2, 1, 3),
    }


@pytest.mark.parametrize(
    "layout", ["contiguous", "channels_last", "transposed", "sliced", "expanded", "storage_offset", "five_dims_strided"]
)
def test_any_layout_gives_empty_like_strides_and_exact_values(fused, layout):
    device = "cuda" if fused == "triton" and torch.cuda.is_available() else "cpu"
    x = _layouts(device)[layout]
    y = spocu(x, backend=fused)
    assert y.stride() == torch.empty_like(x).stride()  # what the fake (meta) kernels promise
    x64 = x.cpu().numpy()
    np.testing.assert_allclose(y.cpu().numpy(), reference_spocu(x64), rtol=1e-12, atol=1e-13)
    g = torch.randn(x.shape, dtype=x.dtype, device=device).transpose(0, -1).contiguous().transpose(0, -1)
    gx = torch.ops.spocu.spocu_backward(g, x, *SPOCUParams().as_dict().values(), fused)
    assert gx.stride() == torch.empty_like(x).stride()
    np.testing.assert_allclose(gx.cpu().numpy(), g.cpu().numpy() * reference_spocu_grad(x64), rtol=1e-11, atol=1e-13)


def test_output_is_a_fresh_tensor_that_may_be_modified_in_place(path, dev):
    x = torch.randn(8, 16, device=dev, requires_grad=True)
    y = spocu(x, backend=path)
    assert y._base is None and y.data_ptr() != x.data_ptr()
    y.mul_(2.0)  # e.g. an in-place op after the activation
    y.sum().backward()
    np.testing.assert_allclose(
        x.grad.cpu().numpy(), 2.0 * reference_spocu_grad(x.detach().cpu().double().numpy()), rtol=1e-5, atol=1e-6
    )


def test_double_backward_through_the_fused_paths_matches_the_reference(fused):
    device = "cuda" if fused == "triton" and torch.cuda.is_available() else "cpu"
    x = torch.linspace(-2.5, 6.0, 301, dtype=torch.float64, device=device, requires_grad=True)
    (g,) = torch.autograd.grad(spocu(x, backend=fused).sum(), x, create_graph=True)
    (gg,) = torch.autograd.grad(g.sum(), x)
    from spocu.core import reference_spocu_grad2

    np.testing.assert_allclose(gg.cpu().numpy(), reference_spocu_grad2(x.detach().cpu().numpy()), rtol=1e-9, atol=1e-11)


# ---------------------------------------------------------------- custom ops


@pytest.mark.parametrize("impl", ["eager", "cpp", "inductor", "triton"])
@pytest.mark.parametrize("c", [math.inf, 1.0])
@pytest.mark.slow
def test_custom_ops_pass_opcheck(impl, c, request):
    if impl == "triton":
        request.getfixturevalue("triton_ready")
    if impl == "cpp":
        request.getfixturevalue("cpp_ready")
    device = "cuda" if impl == "triton" and torch.cuda.is_available() else "cpu"
    p = SPOCUParams(c=c)
    args = (p.alpha, p.beta, p.gamma, p.c, impl)
    x = (torch.randn(3, 5, dtype=torch.float64, device=device) * 3).requires_grad_(True)
    g = torch.randn(3, 5, dtype=torch.float64, device=device).requires_grad_(True)
    torch.library.opcheck(torch.ops.spocu.spocu.default, (x, *args))
    torch.library.opcheck(torch.ops.spocu.spocu_backward.default, (g, x.detach().requires_grad_(True), *args))
    xt = x.detach().t().requires_grad_(True)  # a non-contiguous layout too
    torch.library.opcheck(torch.ops.spocu.spocu.default, (xt, *args))


def test_custom_op_gradients_and_second_derivatives_match_gradcheck():
    x = torch.tensor([-5.0, -1.0, 0.0, 0.3, 1.7, 4.0, 9.0], dtype=torch.float64, requires_grad=True)
    fn = lambda t: torch.ops.spocu.spocu(t, 2.0, 0.4, 3.0, 2.5, "inductor")  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_unknown_op_impl_is_refused():
    with pytest.raises(ValueError, match="unknown SPOCU torch backend.*cuda-magic"):
        torch.ops.spocu.spocu(torch.zeros(3), 3.0937, 0.6653, 4.437, math.inf, "cuda-magic")


def test_a_backend_that_is_not_a_string_is_refused_by_type(monkeypatch):
    monkeypatch.delenv("SPOCU_TORCH_BACKEND", raising=False)
    with pytest.raises(TypeError, match=r"^SPOCU torch backend must be a string, got int$"):
        spocu(torch.zeros(3), backend=1)
    assert _dispatch.requested_backend(" Eager ") == "eager"  # (a string is stripped and lower-cased)


# ---------------------------------------------------------------- torch.compile


def _net(act):
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), act, torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(36, 3)
    ).double()


@pytest.mark.parametrize(
    "make",
    [
        lambda: SPOCU(),
        lambda: SPOCU(c=1.0),
        lambda: SPOCU(learnable=True, num_parameters=4),
        lambda: _Forced("inductor"),
    ],
    ids=["default", "c1", "learnable", "forced-op"],
)
@pytest.mark.slow
def test_models_compile_without_graph_breaks_and_match_eager(make):
    torch.manual_seed(0)
    net = _net(make())
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64) * 3
    explanation = torch._dynamo.explain(net)(x)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1, explanation.break_reasons
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    y_ref = net(x)
    y_ref.sum().backward()
    grads_ref = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    y = compiled(x)
    y.sum().backward()
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for p, g in zip(net.parameters(), grads_ref):
        torch.testing.assert_close(p.grad, g, rtol=1e-10, atol=1e-12)


class _Forced(torch.nn.Module):
    def __init__(self, backend):
        super().__init__()
        self.backend = backend

    def forward(self, t):
        return spocu(t, backend=self.backend)


def _saved_by_compiled_forward(fn, x):
    """Tensors the compiled forward keeps for backward (AOTAutograd with Inductor's partitioner)."""
    from functorch.compile import make_boxed_func, min_cut_rematerialization_partition
    from torch._dynamo.backends.common import aot_autograd

    graphs = {}

    def keep(name):
        def compiler(gm, _inputs):
            graphs[name] = gm
            return make_boxed_func(gm.forward)

        return compiler

    backend = aot_autograd(
        fw_compiler=keep("fw"), bw_compiler=keep("bw"), partition_fn=min_cut_rematerialization_partition
    )
    y = torch.compile(fn, backend=backend, fullgraph=True)(x)
    y.sum().backward()
    outputs = next(n for n in graphs["fw"].graph.nodes if n.op == "output").args[0]
    return [o for o in outputs[1:] if isinstance(o, torch.fx.Node) and isinstance(o.meta.get("val"), torch.Tensor)]


@pytest.mark.parametrize("backend", ["auto", "inductor"])
@pytest.mark.slow
def test_compiled_graphs_save_only_the_input(backend):
    x = torch.randn(16, 32, requires_grad=True)
    saved = _saved_by_compiled_forward(lambda t: spocu(t, backend=backend), x)
    big = [n for n in saved if n.meta["val"].numel() > 1]
    assert len(big) == 1, saved  # besides it at most 0-d parameter scalars (alpha, beta, ... as tensors)
    assert big[0].op == "placeholder"  # the input itself, not a derived tensor
    assert big[0].meta["val"].shape == x.shape


@pytest.mark.slow
def test_inductor_compiled_model_runs_and_matches_eager():
    """One real Inductor compile of a model (the other compile tests use aot_eager for speed)."""
    torch.manual_seed(0)
    net = _net(SPOCU(c=2.0)).float()
    x = torch.randn(4, 3, 8, 8) * 3
    y_ref = net(x)
    y_ref.sum().backward()
    grads_ref = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    compiled = torch.compile(net, fullgraph=True)
    y = compiled(x)
    y.sum().backward()
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    for p, g in zip(net.parameters(), grads_ref):
        torch.testing.assert_close(p.grad, g, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- ONNX export


@pytest.mark.parametrize(
    "make",
    [lambda: SPOCU(), lambda: SPOCU(c=1.0), lambda: SPOCU(learnable=True, num_parameters=4)],
    ids=["default", "c1", "learnable"],
)
@pytest.mark.parametrize("dynamo", [True, False], ids=["dynamo", "torchscript"])
@pytest.mark.slow
def test_onnx_export_uses_standard_ops_and_matches_onnxruntime(make, dynamo, monkeypatch):
    if dynamo and not hasattr(torch.compiler, "is_exporting"):
        pytest.skip(
            f"torch.compiler.is_exporting (telling export from compile) is from torch 2.5 (this: {torch.__version__})"
        )
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import io

    monkeypatch.setenv("SPOCU_TORCH_BACKEND", "inductor")  # even a forced fused path exports as standard ops
    torch.manual_seed(0)
    net = _net(make()).float().eval()
    x = torch.randn(2, 3, 8, 8) * 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            model = torch.onnx.export(net, (x,), dynamo=True, verbose=False).model_proto
            data = model.SerializeToString()
        else:
            buffer = io.BytesIO()
            torch.onnx.export(net, (x,), buffer, dynamo=False)
            data = buffer.getvalue()
            model = onnx.load_from_string(data)
    assert {node.domain for node in model.graph.node} <= {"", "ai.onnx"}
    assert not any("spocu" in node.op_type.lower() for node in model.graph.node)
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    for scale in (1.0, 4.0):
        xs = torch.randn(2, 3, 8, 8) * scale
        out = session.run(None, {session.get_inputs()[0].name: xs.numpy()})[0]
        with torch.no_grad():
            np.testing.assert_allclose(out, net(xs).numpy(), rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- learnable parameters on the fused path


def _learnable_reference(x, g_out, alpha, beta, gamma, c):
    """float64 NumPy s(x) and the gradients w.r.t. x, alpha, beta, gamma (params per channel, dim 1)."""
    from spocu.core import h, r_prime

    shape = [1, -1] + [1] * (x.ndim - 2) if alpha.size > 1 else [1] * x.ndim
    a, b, g = (p.reshape(shape) for p in (alpha, beta, gamma))
    u = x / g + b
    inside = (u >= 0) & (u < c)
    hp = np.where(inside, r_prime(np.clip(u, 0, None if math.isinf(c) else c)), 0.0)
    y = a * (h(u, c) - h(b, c))
    axes = tuple(i for i in range(x.ndim) if not (alpha.size > 1 and i == 1))
    grads = [g_out * a / g * hp]
    for part in (h(u, c) - h(b, c), a * (hp - r_prime(b)), a * hp * (-x / g**2)):
        grads.append((g_out * part).sum(axis=axes).reshape(alpha.shape))
    return y, grads


def _learnable_path(y: torch.Tensor) -> str:
    """Which learnable path recorded ``y``: the C++ autograd node (cpp), the fused Python Function over
    the C++ kernels (cpp-function: the node switched off) or over the Inductor kernels (inductor)."""
    from spocu.torch import _learnable

    kernels = getattr(y.grad_fn, "kernels", None)  # (a Python Function's grad_fn is its context)
    if kernels is not None:
        return {_learnable._CppKernels: "cpp-function", _learnable._InductorKernels: "inductor"}[kernels]
    return {"torch::autograd::CppNode<spocu::LearnableSPOCU>": "cpp"}.get(y.grad_fn.name(), y.grad_fn.name())


def _force_learnable_path(backend: str, monkeypatch, request) -> None:
    if backend.startswith("cpp"):
        request.getfixturevalue("cpp_ready")
    if backend == "cpp":
        import spocu.torch

        assert spocu.torch.build_kernels()["node_state"] == "ready"
    monkeypatch.setattr(_node, "ENABLED", backend != "cpp-function")
    monkeypatch.setenv("SPOCU_TORCH_BACKEND", backend.removesuffix("-function"))


#: shape, channels (1: one shared parameter set), how to lay the input out
LEARNABLE_LAYOUTS = {
    "nchw": ((3, 4, 5, 6), 4, lambda t: t),
    "channels_last": ((3, 4, 5, 6), 4, lambda t: t.contiguous(memory_format=torch.channels_last)),
    "channels_last_3d": ((2, 3, 2, 4, 5), 3, lambda t: t.contiguous(memory_format=torch.channels_last_3d)),
    "nc": ((40, 4), 4, lambda t: t),
    "ncl": ((3, 4, 7), 4, lambda t: t),
    "batch_of_one": ((1, 4, 6, 5), 4, lambda t: t),
    "transposed": ((5, 4, 6), 4, lambda t: t.transpose(0, 2).contiguous().transpose(0, 2)),
    "stepped_slice": ((3, 4, 10), 4, lambda t: t[..., ::2]),
    "shared": ((3, 4, 5, 6), 1, lambda t: t),
    "shared_transposed": ((6, 5), 1, lambda t: t.t()),
    "scalar_input": ((), 1, lambda t: t),
}
#: the layouts Inductor's kernels are checked on (a new shape compiles them anew: these bound the time)
INDUCTOR_LAYOUTS = ("nchw", "channels_last", "nc", "ncl", "shared", "batch_of_one")


def learnable_case(layout: str, dtype=torch.float64, seed: int = 0):
    """(x laid out as ``layout``, per-channel float64 alpha, beta, gamma, an upstream gradient)."""
    shape, channels, lay = LEARNABLE_LAYOUTS[layout]
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(shape, dtype=torch.float64, generator=gen) * 12 - 4  # both flat pieces and the polynomial
    x = lay(base.to(dtype))
    params = [torch.full((channels,), v, dtype=torch.float64) for v in (2.5, 0.6, 2.0)]
    params[0] += torch.linspace(0.0, 1.0, channels, dtype=torch.float64)
    params[1] += torch.linspace(-0.2, 0.2, channels, dtype=torch.float64)
    params[2] += torch.linspace(0.0, 1.5, channels, dtype=torch.float64)
    g = torch.randn(x.shape, dtype=torch.float64, generator=gen).to(dtype)
    return x, params, g


@pytest.mark.parametrize("backend", ["cpp", "cpp-function", "inductor"])
@pytest.mark.slow
def test_fused_learnable_paths_match_the_float64_formulas_on_every_layout(backend, monkeypatch, request):
    """Each fused learnable route (the C++ node, the fused Function over the C++ kernels, over Inductor's)
    on each layout and c, with per-channel parameters: the route asked for runs, the output has
    empty_like's layout (a contiguous copy where the channels are neither (N, C, rest) nor channels
    last), and the value and the gradients of x and of the parameters (summed over each channel) equal
    the float64 formulas. The parity matrix checks these routes on the wide inputs in every dtype;
    here are the layouts and the per-channel sums. Every failing case is named."""
    _force_learnable_path(backend, monkeypatch, request)
    failures = []
    for layout in INDUCTOR_LAYOUTS if backend == "inductor" else LEARNABLE_LAYOUTS:
        for c in (math.inf, 2.5):
            x, params, g = learnable_case(layout)
            x.requires_grad_(True)
            leaves = [p.clone().requires_grad_(True) for p in params]
            y = spocu(x, *leaves, c=c)
            grads = torch.autograd.grad(y, [x, *leaves], g)
            y_ref, grads_ref = _learnable_reference(x.detach().numpy(), g.numpy(), *(p.numpy() for p in params), c)
            try:
                assert _learnable_path(y) == backend, f"ran {_learnable_path(y)}"
                assert y.shape == x.shape
                if layout == "transposed":  # per channel, neither (N, C, rest) nor channels last: a contiguous copy
                    assert y.is_contiguous(), y.stride()
                elif is_dense(x):
                    assert y.stride() == x.stride(), f"strides {y.stride()}, input's {x.stride()}"  # empty_like's
                np.testing.assert_allclose(y.detach().numpy(), y_ref, rtol=1e-11, atol=1e-12, err_msg="value")
                for name, got, want in zip(("x", "alpha", "beta", "gamma"), grads, grads_ref):
                    np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-10, err_msg=f"d/d{name}")
            except AssertionError as error:
                failures.append(f"{layout}, c={c}: {error}")
    assert not failures, f"{len(failures)} cases fail on {backend}:\n" + "\n".join(failures)


@pytest.mark.parametrize("backend", ["eager", "cpp", "cpp-function", "inductor"])
@pytest.mark.slow
def test_mixed_shared_and_per_channel_parameters(backend, monkeypatch, request):
    """Some parameters one per channel, others one shared value (a float or a 1-element tensor):
    every path gives the per-channel result, and the shared ones get the channels' summed gradient.
    Every failing sharing is named."""
    _force_learnable_path(backend, monkeypatch, request)
    per_channel = {"alpha": torch.tensor([2.0, 2.5, 3.0, 3.5]), "beta": torch.tensor([0.5, 0.6, 0.7, 0.4]),
                   "gamma": torch.tensor([3.0, 2.0, 4.0, 1.5])}  # fmt: skip
    shared_value = {"alpha": 3.1, "beta": 0.62, "gamma": 2.5}
    failures = []
    for shared in ("alpha", "beta", "gamma", "beta_gamma"):
        gen = torch.Generator().manual_seed(5)
        x = (torch.rand(3, 4, 5, 6, dtype=torch.float64, generator=gen) * 9 - 3).requires_grad_(True)
        args, params = {}, {}
        for name in per_channel:
            if name in shared.split("_"):
                # a float for beta (made a 0-d tensor by spocu), 1-element tensors otherwise
                params[name] = torch.tensor([shared_value[name]], dtype=torch.float64, requires_grad=True)
                args[name] = shared_value[name] if name == "beta" else params[name]
            else:
                params[name] = per_channel[name].to(torch.float64).requires_grad_(True)
                args[name] = params[name]
        y = spocu(x, args["alpha"], args["beta"], args["gamma"], c=2.5)
        g_out = torch.randn(x.shape, dtype=torch.float64, generator=gen)
        y.backward(g_out)
        expanded = [params[n].detach().expand(4).numpy() for n in ("alpha", "beta", "gamma")]
        y_ref, grads_ref = _learnable_reference(x.detach().numpy(), g_out.numpy(), *expanded, 2.5)
        try:
            np.testing.assert_allclose(y.detach().numpy(), y_ref, rtol=1e-11, atol=1e-12, err_msg="value")
            np.testing.assert_allclose(x.grad.numpy(), grads_ref[0], rtol=1e-9, atol=1e-10, err_msg="d/dx")
            for name, want in zip(("alpha", "beta", "gamma"), grads_ref[1:]):
                if name == "beta" and "beta" in shared:
                    continue  # a float: no gradient to read
                got = params[name].grad
                want = want.sum(keepdims=True) if got.numel() == 1 else want
                np.testing.assert_allclose(got.numpy(), want, rtol=1e-9, atol=1e-10, err_msg=f"d/d{name}")
        except AssertionError as error:
            failures.append(f"{shared} shared: {error}")
    assert not failures, f"{len(failures)} sharings fail on {backend}:\n" + "\n".join(failures)


@pytest.mark.parametrize("backend", ["auto", "inductor"])
@pytest.mark.slow
def test_learnable_tensors_take_the_fused_path_and_save_only_the_input(backend, cpp_ready, monkeypatch):
    monkeypatch.setenv("SPOCU_TORCH_BACKEND", backend)
    m = SPOCU(learnable=True, num_parameters=8)
    x = torch.randn(8, 8, 32, 32, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = m(x)
    assert _learnable_path(y) == ("cpp" if backend == "auto" else backend)
    big = [t for t in saved if t.numel() >= x.numel()]
    assert len(big) == 1 and big[0].data_ptr() == x.data_ptr()
    y.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    monkeypatch.setenv("SPOCU_TORCH_BACKEND", "eager")
    assert type(m(x).grad_fn).__name__ == "_LearnableSPOCUBackward"
