// SPOCU's fixed-parameter autograd node in C++: the op torch.ops.spocu_cpu.fixed.
//
// Built by spocu.torch._cpp against this process's PyTorch headers (once per torch version and
// compiler, cached on disk, in the background; about 15 s on 2 cores) after the kernel library
// (_cpp_kernels.cpp) is loaded. It holds no math: spocu_node_bind hands it the kernel library's
// own entry points, so its results are those kernels' bits. What it removes is Python from the
// call: a Python autograd.Function costs ~40 us per forward + backward on a small tensor, this
// node about as much as a native op's.
//
// Contract, as SPOCUFunction's: saves only x (through SavedVariable, so saved-tensor hooks and the
// in-place version check apply); output in empty_like(x)'s layout; backward with create_graph
// (grad mode on), or with a gradient that has no storage (vmap), goes through spocu_cpu::fixed_derivative, which spocu.torch._cpp implements with
// the differentiable Python Functions, so gradients of any order work.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/csrc/autograd/custom_function.h>
#include <torch/library.h>

#include <cstdint>

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
              "spocu_cpu.fixed: ", what, " must be a strided CPU tensor, got ", t.device(), " ", t.layout());
  const int slot = dtype_slot(t.scalar_type());
  TORCH_CHECK(slot >= 0, "spocu_cpu.fixed computes float32, float64, bfloat16 and float16, got ", t.scalar_type());
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

}  // namespace spocu

using spocu::BackwardKernel;
using spocu::ForwardKernel;
using spocu::backward_kernels;
using spocu::forward_kernels;

extern "C" __attribute__((visibility("default"))) int spocu_node_abi_version() { return 1; }

// The kernel library's entry points, by dtype (float32, float64, bfloat16, float16).
extern "C" __attribute__((visibility("default"))) void spocu_node_bind(const void* const* forward,
                                                                      const void* const* backward) {
  for (int i = 0; i < 4; ++i) {
    forward_kernels[i] = reinterpret_cast<ForwardKernel>(const_cast<void*>(forward[i]));
    backward_kernels[i] = reinterpret_cast<BackwardKernel>(const_cast<void*>(backward[i]));
  }
}

TORCH_LIBRARY(spocu_cpu, m) {
  m.def("fixed(Tensor x, Tensor forward_table, Tensor backward_table, float alpha, float beta, float gamma, "
        "float c) -> Tensor");
  m.def("fixed_derivative(Tensor grad, Tensor x, float alpha, float beta, float gamma, float c) -> Tensor");
}

// CompositeImplicitAutograd: one kernel for every dispatch key, recording its own autograd node
TORCH_LIBRARY_IMPL(spocu_cpu, CompositeImplicitAutograd, m) {
  m.impl("fixed", spocu::fixed);
}
