// SPOCU's autograd nodes in C++: the ops torch.ops.spocu_cpu.fixed (float parameters),
// torch.ops.spocu_cpu.learnable (tensor parameters, one shared or one per channel along dim 1) and
// torch.ops.spocu_cpu.learnable_raw (the learnable module's raw weights, its parameterization inside).
//
// Built by spocu.torch._cpp against this process's PyTorch headers (once per torch version and
// compiler, cached on disk, in the background; about 15 s on 2 cores) after the kernel library
// (_cpp_kernels.cpp) is loaded. It holds no math: spocu_node_bind hands it the kernel library's
// own entry points, so its results are those kernels' bits. What it removes is Python from the
// call: a Python autograd.Function costs ~40 us per forward + backward on a small tensor, this
// node about as much as a native op's.
//
// Contract, as the Python Functions': saves only x of the input's size (through SavedVariable, so
// saved-tensor hooks and the in-place version check apply; learnable also keeps its C-element
// parameters); output in empty_like's layout; backward with create_graph (grad mode on), or with a
// gradient that has no storage (vmap), goes through spocu_cpu::fixed_derivative /
// learnable_derivative / learnable_raw_derivative, which spocu.torch._node implements with the
// differentiable Python Functions, so gradients of any order work.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>
#include <utility>

namespace spocu {  // named: the node shows as torch::autograd::CppNode<spocu::FixedSPOCU>

using ForwardKernel = void (*)(const void* x, void* y, int64_t n, const double* table, int threads);
using BackwardKernel = void (*)(const void* g, const void* x, void* out, int64_t n, const double* table,
                                int threads);

// by dtype: float32, float64, bfloat16, float16 (the order spocu_node_bind receives them in)
ForwardKernel forward_kernels[4] = {nullptr, nullptr, nullptr, nullptr};
BackwardKernel backward_kernels[4] = {nullptr, nullptr, nullptr, nullptr};

int dtype_slot(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return 0;
    case at::kDouble: return 1;
    case at::kBFloat16: return 2;
    case at::kHalf: return 3;
    default: return -1;
  }
}

void check_input(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.device().is_cpu() && t.layout() == at::kStrided,
              "spocu_cpu: ", what, " must be a strided CPU tensor, got ", t.device(), " ", t.layout());
  const int slot = dtype_slot(t.scalar_type());
  TORCH_CHECK(slot >= 0, "spocu_cpu computes float32, float64, bfloat16 and float16, got ", t.scalar_type());
  TORCH_CHECK(forward_kernels[slot] != nullptr, "spocu_cpu.fixed: the kernels are not bound (spocu_node_bind)");
}

void check_table(const at::Tensor& table) {
  TORCH_CHECK(table.device().is_cpu() && table.scalar_type() == at::kDouble && table.dim() == 1 &&
                  table.is_contiguous(),
              "spocu_cpu.fixed: a coefficient table must be a contiguous 1-D float64 CPU tensor");
}

// t itself if its elements fill one block of storage (any dense layout), else a copy in
// empty_like's layout; negation views are resolved (the kernels read raw storage)
at::Tensor dense(const at::Tensor& t) {
  at::Tensor r = t.resolve_neg();
  return r.is_non_overlapping_and_dense() ? r : at::empty_like(r).copy_(r);
}

bool same_layout(const at::Tensor& a, const at::Tensor& b) {
  if (a.sizes() != b.sizes()) return false;
  for (int64_t d = 0; d < a.dim(); ++d) {
    if (a.size(d) != 1 && a.stride(d) != b.stride(d)) return false;
  }
  return true;
}

at::Tensor run_forward(const at::Tensor& x, const at::Tensor& table) {
  const at::Tensor src = (x.is_contiguous() && !x.is_neg()) ? x : dense(x);
  at::Tensor out = at::empty_like(src);
  const int64_t n = src.numel();
  if (n) {
    forward_kernels[dtype_slot(x.scalar_type())](src.const_data_ptr(), out.mutable_data_ptr(), n,
                                                 table.const_data_ptr<double>(), at::get_num_threads());
  }
  return out;
}

at::Tensor run_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& table) {
  at::Tensor src = x, g = grad;
  if (!(x.is_contiguous() && grad.is_contiguous() && grad.scalar_type() == x.scalar_type() &&
        grad.sizes() == x.sizes() && !x.is_neg() && !grad.is_neg())) {
    src = dense(x);
    g = grad.to(x.scalar_type()).resolve_neg().expand_as(x);
    if (!(g.is_non_overlapping_and_dense() && same_layout(g, src))) g = at::empty_like(src).copy_(g);
  }
  at::Tensor out = at::empty_like(src);
  const int64_t n = src.numel();
  if (n) {
    backward_kernels[dtype_slot(x.scalar_type())](g.const_data_ptr(), src.const_data_ptr(), out.mutable_data_ptr(),
                                                  n, table.const_data_ptr<double>(), at::get_num_threads());
  }
  return out;
}

struct FixedSPOCU : public torch::autograd::Function<FixedSPOCU> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                            const at::Tensor& forward_table, const at::Tensor& backward_table, double alpha,
                            double beta, double gamma, double c) {
    ctx->save_for_backward({x});  // the only tensor kept for backward: ReLU's memory
    ctx->saved_data["table"] = backward_table;  // constants, shared by every call with these parameters
    ctx->saved_data["alpha"] = alpha;
    ctx->saved_data["beta"] = beta;
    ctx->saved_data["gamma"] = gamma;
    ctx->saved_data["c"] = c;
    return run_forward(x, forward_table);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor x = ctx->get_saved_variables()[0];
    at::Tensor dx;
    // create_graph (a differentiable derivative), or a gradient without storage (a vmap/batched-grad
    // wrapper, which the kernels cannot read): the Python Functions, which handle both
    if (at::GradMode::is_enabled() || !grads[0].has_storage()) {
      static auto derivative = c10::Dispatcher::singleton()
                                   .findSchemaOrThrow("spocu_cpu::fixed_derivative", "")
                                   .typed<at::Tensor(const at::Tensor&, const at::Tensor&, double, double,
                                                     double, double)>();
      dx = derivative.call(grads[0], x, ctx->saved_data["alpha"].toDouble(), ctx->saved_data["beta"].toDouble(),
                           ctx->saved_data["gamma"].toDouble(), ctx->saved_data["c"].toDouble());
    } else {
      dx = run_backward(grads[0], x, ctx->saved_data["table"].toTensor());
    }
    return {dx, at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor fixed(const at::Tensor& x, const at::Tensor& forward_table, const at::Tensor& backward_table,
                 double alpha, double beta, double gamma, double c) {
  check_input(x, "x");
  check_table(forward_table);
  check_table(backward_table);
  if (!(x.requires_grad() && at::GradMode::is_enabled())) return run_forward(x, forward_table);
  return FixedSPOCU::apply(x, forward_table, backward_table, alpha, beta, gamma, c);
}


// ------------------------------------------------------------------ tensor (learnable) parameters
// The kernel library's learnable entry points: x viewed as (A, C, B), parameters per channel as
// [alpha[C], beta[C], gamma[C]] in double; shift: its table of the shifted polynomials' coefficients.
using LearnableForwardKernel = void (*)(const void* x, void* y, int64_t A, int64_t C, int64_t B, const double* params,
                                        double c, const double* shift, int threads);
using LearnableBackwardKernel = void (*)(const void* g, const void* x, void* out, double* sums, int64_t A, int64_t C,
                                         int64_t B, const double* params, double c, double cap, const double* shift,
                                         int threads);
LearnableForwardKernel learnable_forward_kernels[4] = {nullptr, nullptr, nullptr, nullptr};
LearnableBackwardKernel learnable_backward_kernels[4] = {nullptr, nullptr, nullptr, nullptr};
const double* shift_table = nullptr;

// x in a layout the kernels read as (A, C, B) blocks, as spocu.torch._learnable._layout_for/_as_acb:
// one shared parameter set: any dense layout, (1, 1, n); per channel: contiguous (N, C, rest) or
// channels-last-like (rest, C, 1); anything else is copied to contiguous first
struct Blocks {
  at::Tensor src;
  int64_t A, C, B;
};

bool channels_last_like(const at::Tensor& x) {
  if (x.dim() < 3) return false;
  // contiguous once dim 1 moves last: stride 1 on dim 1, then dims d-1 .. 2, 0 nested in order
  int64_t expected = 1;
  if (x.size(1) != 1 && x.stride(1) != expected) return false;
  expected *= x.size(1);
  for (int64_t d = x.dim() - 1; d >= 2; --d) {
    if (x.size(d) != 1 && x.stride(d) != expected) return false;
    expected *= x.size(d);
  }
  return x.size(0) == 1 || x.stride(0) == expected;
}

Blocks blocks(const at::Tensor& x, int64_t channels) {
  at::Tensor r = x.resolve_neg();
  if (channels == 1) {
    at::Tensor src = r.is_non_overlapping_and_dense() ? r : at::empty_like(r).copy_(r);
    return {src, 1, 1, src.numel()};
  }
  if (r.is_contiguous()) return {r, r.size(0), channels, r.size(0) ? r.numel() / (r.size(0) * channels) : 0};
  if (channels_last_like(r)) return {r, r.numel() / channels, channels, 1};
  at::Tensor src = r.contiguous();
  return {src, src.size(0), channels, src.size(0) ? src.numel() / (src.size(0) * channels) : 0};
}

at::Tensor param_block(const at::Tensor& alpha, const at::Tensor& beta, const at::Tensor& gamma) {
  return at::cat({alpha.reshape(-1), beta.reshape(-1), gamma.reshape(-1)}).to(at::kDouble).contiguous();
}

void check_learnable(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& beta, const at::Tensor& gamma) {
  check_input(x, "x");
  TORCH_CHECK(learnable_forward_kernels[dtype_slot(x.scalar_type())] != nullptr && shift_table != nullptr,
              "spocu_cpu.learnable: the kernels are not bound (spocu_node_bind_learnable)");
  const int64_t channels = alpha.numel();
  for (const at::Tensor* p : {&alpha, &beta, &gamma}) {
    TORCH_CHECK(p->device().is_cpu() && p->layout() == at::kStrided && p->is_floating_point(),
                "spocu_cpu.learnable: parameters must be floating-point CPU tensors");
    TORCH_CHECK(p->numel() == channels, "spocu_cpu.learnable: alpha, beta, gamma must have one count");
  }
  TORCH_CHECK(channels >= 1 && (channels == 1 || (x.dim() >= 2 && x.size(1) == channels)),
              "spocu_cpu.learnable: ", channels, " parameters per channel for an input of shape ", x.sizes());
}

at::Tensor run_learnable_forward(const at::Tensor& x, const at::Tensor& params, int64_t channels, double c) {
  const Blocks b = blocks(x, channels);
  at::Tensor out = at::empty_like(b.src);
  if (b.src.numel()) {
    learnable_forward_kernels[dtype_slot(x.scalar_type())](b.src.const_data_ptr(), out.mutable_data_ptr(), b.A, b.C,
                                                           b.B, params.const_data_ptr<double>(), c, shift_table,
                                                           at::get_num_threads());
  }
  return out;
}

// Both learnable nodes' backward: the four gradients from the differentiable Python implementation
// `name` (create_graph, or a gradient without storage), kept where asked for
torch::autograd::variable_list python_derivative(const char* name, torch::autograd::AutogradContext* ctx,
                                                 const at::Tensor& grad, const torch::autograd::variable_list& saved,
                                                 double c, size_t inputs) {
  const auto derivative = c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<
      std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                                 const at::Tensor&, const at::Tensor&,
                                                                 const at::Tensor&, double)>();
  const auto d = derivative.call(grad, saved[0], saved[1], saved[2], saved[3], c);
  const at::Tensor parts[4] = {std::get<0>(d), std::get<1>(d), std::get<2>(d), std::get<3>(d)};
  torch::autograd::variable_list out(inputs);
  for (int i = 0; i < 4; ++i) {
    if (ctx->needs_input_grad(i)) out[i] = parts[i];
  }
  return out;
}

bool python_derivative_needed(const at::Tensor& grad) { return at::GradMode::is_enabled() || !grad.has_storage(); }

// ... and the kernels': dL/dx and the per-channel sums of dL/dalpha, dL/dbeta, dL/dgamma (3 x C, double)
std::pair<at::Tensor, at::Tensor> kernel_backward(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& block,
                                                  int64_t channels, double c, double cap) {
  const Blocks b = blocks(x, channels);
  at::Tensor g = grad;
  if (!(g.scalar_type() == x.scalar_type() && !g.is_neg() && g.is_non_overlapping_and_dense() &&
        same_layout(g, b.src))) {
    g = at::empty_like(b.src).copy_(g);  // converts the dtype, expands, resolves a negation
  }
  at::Tensor dx = at::empty_like(b.src);
  at::Tensor sums = at::zeros({3, channels}, x.options().dtype(at::kDouble));
  if (b.src.numel()) {
    learnable_backward_kernels[dtype_slot(x.scalar_type())](
        g.const_data_ptr(), b.src.const_data_ptr(), dx.mutable_data_ptr(), sums.mutable_data_ptr<double>(), b.A, b.C,
        b.B, block.const_data_ptr<double>(), c, cap, shift_table, at::get_num_threads());
  }
  return {dx, sums};
}

// whether a call records an autograd node: grad mode on and some input asks for a gradient
bool records(const at::Tensor& x, const at::Tensor& a, const at::Tensor& b, const at::Tensor& g) {
  return at::GradMode::is_enabled() && (x.requires_grad() || a.requires_grad() || b.requires_grad() || g.requires_grad());
}

// sums[i] as the gradient of a parameter shaped and typed like `like`
at::Tensor param_grad(const at::Tensor& sums, int i, const at::Tensor& like) {
  return sums[i].reshape(like.sizes()).to(like.scalar_type());
}

struct LearnableSPOCU : public torch::autograd::Function<LearnableSPOCU> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& alpha,
                            const at::Tensor& beta, const at::Tensor& gamma, double c, double cap) {
    ctx->save_for_backward({x, alpha, beta, gamma});  // x: the one saved tensor of the input's size
    ctx->saved_data["c"] = c;
    ctx->saved_data["cap"] = cap;
    const at::Tensor block = param_block(alpha, beta, gamma);
    ctx->saved_data["block"] = block;  // (3 C values, for the kernels' backward)
    return run_learnable_forward(x, block, alpha.numel(), c);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &alpha = saved[1], &beta = saved[2], &gamma = saved[3];
    const double c = ctx->saved_data["c"].toDouble();
    if (python_derivative_needed(grads[0])) {
      return python_derivative("spocu_cpu::learnable_derivative", ctx, grads[0], saved, c, 6);
    }
    const auto [dx, sums] = kernel_backward(grads[0], x, ctx->saved_data["block"].toTensor(), alpha.numel(), c,
                                            ctx->saved_data["cap"].toDouble());
    torch::autograd::variable_list out(6);
    if (ctx->needs_input_grad(0)) out[0] = dx;
    const at::Tensor* params[3] = {&alpha, &beta, &gamma};
    for (int i = 0; i < 3; ++i) {
      if (ctx->needs_input_grad(i + 1)) out[i + 1] = param_grad(sums, i, *params[i]);
    }
    return out;
  }
};

// The module's parameterization folded into one node: alpha = softplus(raw_alpha) + floor,
// beta = margin + span * sigmoid(raw_beta), gamma = softplus(raw_gamma) + floor (spocu.core's
// learnable_positive / learnable_unit, with its constants passed in), and in backward the chain rule
// through the same ATen derivative ops autograd records for those expressions (AddBackward passes the
// gradient on, MulBackward multiplies by span, SoftplusBackward, SigmoidBackward): the module's bits,
// with one node instead of eight.
struct Mapped {
  at::Tensor alpha, beta, gamma, sigmoid_beta;
};

Mapped mapped(const at::Tensor& raw_alpha, const at::Tensor& raw_beta, const at::Tensor& raw_gamma, double floor,
              double margin, double span) {
  at::Tensor sigmoid_beta = at::sigmoid(raw_beta);
  return {at::softplus(raw_alpha, 1, 20).add(floor), sigmoid_beta.mul(span).add(margin),
          at::softplus(raw_gamma, 1, 20).add(floor), sigmoid_beta};
}

struct LearnableRawSPOCU : public torch::autograd::Function<LearnableRawSPOCU> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& raw_alpha,
                            const at::Tensor& raw_beta, const at::Tensor& raw_gamma, double floor, double margin,
                            double span, double c, double cap) {
    ctx->save_for_backward({x, raw_alpha, raw_beta, raw_gamma});  // x: the one saved tensor of the input's size
    ctx->saved_data["span"] = span;
    ctx->saved_data["c"] = c;
    ctx->saved_data["cap"] = cap;
    const Mapped p = mapped(raw_alpha, raw_beta, raw_gamma, floor, margin, span);
    const at::Tensor block = param_block(p.alpha, p.beta, p.gamma);
    ctx->saved_data["block"] = block;  // (3 C values: what backward needs of the map, not recomputed)
    ctx->saved_data["sigmoid_beta"] = p.sigmoid_beta;
    return run_learnable_forward(x, block, p.alpha.numel(), c);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const torch::autograd::variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &raw_alpha = saved[1], &raw_beta = saved[2], &raw_gamma = saved[3];
    const double c = ctx->saved_data["c"].toDouble(), span = ctx->saved_data["span"].toDouble();
    if (python_derivative_needed(grads[0])) {
      return python_derivative("spocu_cpu::learnable_raw_derivative", ctx, grads[0], saved, c, 9);
    }
    const auto [dx, sums] = kernel_backward(grads[0], x, ctx->saved_data["block"].toTensor(), raw_alpha.numel(), c,
                                            ctx->saved_data["cap"].toDouble());
    torch::autograd::variable_list out(9);
    if (ctx->needs_input_grad(0)) out[0] = dx;
    // the mapped parameters have their raw weights' shapes and dtypes
    if (ctx->needs_input_grad(1)) out[1] = at::softplus_backward(param_grad(sums, 0, raw_alpha), raw_alpha, 1, 20);
    if (ctx->needs_input_grad(2)) {
      out[2] = at::sigmoid_backward(param_grad(sums, 1, raw_beta).mul(span), ctx->saved_data["sigmoid_beta"].toTensor());
    }
    if (ctx->needs_input_grad(3)) out[3] = at::softplus_backward(param_grad(sums, 2, raw_gamma), raw_gamma, 1, 20);
    return out;
  }
};

at::Tensor learnable_raw(const at::Tensor& x, const at::Tensor& raw_alpha, const at::Tensor& raw_beta,
                         const at::Tensor& raw_gamma, double floor, double margin, double span, double c, double cap) {
  check_learnable(x, raw_alpha, raw_beta, raw_gamma);
  if (!records(x, raw_alpha, raw_beta, raw_gamma)) {
    const Mapped p = mapped(raw_alpha, raw_beta, raw_gamma, floor, margin, span);
    return run_learnable_forward(x, param_block(p.alpha, p.beta, p.gamma), p.alpha.numel(), c);
  }
  return LearnableRawSPOCU::apply(x, raw_alpha, raw_beta, raw_gamma, floor, margin, span, c, cap);
}

at::Tensor learnable(const at::Tensor& x, const at::Tensor& alpha, const at::Tensor& beta, const at::Tensor& gamma,
                     double c, double cap) {
  check_learnable(x, alpha, beta, gamma);
  if (!records(x, alpha, beta, gamma)) return run_learnable_forward(x, param_block(alpha, beta, gamma), alpha.numel(), c);
  return LearnableSPOCU::apply(x, alpha, beta, gamma, c, cap);
}

}  // namespace spocu

using spocu::BackwardKernel;
using spocu::ForwardKernel;
using spocu::backward_kernels;
using spocu::forward_kernels;

extern "C" __attribute__((visibility("default"))) int spocu_node_abi_version() { return 2; }

// The kernel library's entry points, by dtype (float32, float64, bfloat16, float16).
extern "C" __attribute__((visibility("default"))) void spocu_node_bind(const void* const* forward,
                                                                      const void* const* backward) {
  for (int i = 0; i < 4; ++i) {
    forward_kernels[i] = reinterpret_cast<ForwardKernel>(const_cast<void*>(forward[i]));
    backward_kernels[i] = reinterpret_cast<BackwardKernel>(const_cast<void*>(backward[i]));
  }
}

// The kernel library's learnable entry points, by dtype, and its shifted-polynomial table.
extern "C" __attribute__((visibility("default"))) void spocu_node_bind_learnable(const void* const* forward,
                                                                                const void* const* backward,
                                                                                const double* shift) {
  for (int i = 0; i < 4; ++i) {
    spocu::learnable_forward_kernels[i] =
        reinterpret_cast<spocu::LearnableForwardKernel>(const_cast<void*>(forward[i]));
    spocu::learnable_backward_kernels[i] =
        reinterpret_cast<spocu::LearnableBackwardKernel>(const_cast<void*>(backward[i]));
  }
  spocu::shift_table = shift;
}

TORCH_LIBRARY(spocu_cpu, m) {
  m.def("fixed(Tensor x, Tensor forward_table, Tensor backward_table, float alpha, float beta, float gamma, "
        "float c) -> Tensor");
  m.def("fixed_derivative(Tensor grad, Tensor x, float alpha, float beta, float gamma, float c) -> Tensor");
  m.def("learnable(Tensor x, Tensor alpha, Tensor beta, Tensor gamma, float c, float cap) -> Tensor");
  m.def("learnable_derivative(Tensor grad, Tensor x, Tensor alpha, Tensor beta, Tensor gamma, float c) -> (Tensor, Tensor, Tensor, Tensor)");
  m.def("learnable_raw(Tensor x, Tensor raw_alpha, Tensor raw_beta, Tensor raw_gamma, float floor, float margin, "
        "float span, float c, float cap) -> Tensor");
  m.def("learnable_raw_derivative(Tensor grad, Tensor x, Tensor raw_alpha, Tensor raw_beta, Tensor raw_gamma, "
        "float c) -> (Tensor, Tensor, Tensor, Tensor)");
}

// CompositeImplicitAutograd: one kernel for every dispatch key, recording its own autograd node
TORCH_LIBRARY_IMPL(spocu_cpu, CompositeImplicitAutograd, m) {
  m.impl("fixed", spocu::fixed);
  m.impl("learnable", spocu::learnable);
  m.impl("learnable_raw", spocu::learnable_raw);
}
