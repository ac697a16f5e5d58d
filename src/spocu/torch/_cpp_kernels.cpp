// SPOCU's CPU kernels: one pass over memory forward, one backward.
//
// Compiled when the package is built or installed (setup.py, an optional setuptools Extension: no
// compiler means plain PyTorch ops, never a failed install) into the extension module
// spocu.torch._kernels, which spocu.torch._cpp loads with ctypes and calls on raw storage
// pointers. No PyTorch headers. The math is that of spocu.torch._eager (fixed parameters) and
// spocu.torch._learnable (tensor parameters): the same clamps, the same Horner order, the compute
// dtype of torch's opmath (float for float32/bfloat16/float16, double for float64).
// Threads: OpenMP (libgomp, the runtime torch itself loads), at most the number the caller passes
// (torch.get_num_threads()), one per 32768 elements.
//
// One build serves every x86-64 CPU: with GCC the body (_cpp_kernels_body.h) is compiled once per
// instruction set, each copy in its own namespace and target region, and spocu.torch._cpp binds
// the best copy this CPU runs (spocu_isa_supported, from cpuid), once per process. Other compilers
// build the baseline copy only.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>
#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define SPOCU_MULTI_ISA 1
#endif

namespace {

#ifdef SPOCU_MULTI_ISA
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,lzcnt,movbe,popcnt,avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx512bf16")  // x86-64-v4 and AVX512-BF16 (Cooper Lake, Zen 4)
#define SPOCU_F16C 1
#define SPOCU_TARGET_AVX512 1
#define SPOCU_TARGET_AVX512BF16 1
namespace avx512bf16 {
#include "_cpp_kernels_body.h"
}
#undef SPOCU_TARGET_AVX512BF16
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,lzcnt,movbe,popcnt,avx512f,avx512bw,avx512cd,avx512dq,avx512vl")  // x86-64-v4 (Skylake-X and later)
namespace avx512 {
#include "_cpp_kernels_body.h"
}
#undef SPOCU_TARGET_AVX512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,bmi,bmi2,lzcnt,movbe,popcnt")  // x86-64-v3 (Haswell, Zen 1 and later)
namespace avx2 {
#include "_cpp_kernels_body.h"
}
#undef SPOCU_F16C
#pragma GCC pop_options
#endif

namespace base {
#include "_cpp_kernels_body.h"
}

}  // namespace

#define SPOCU_EXPORT extern "C" __attribute__((visibility("default")))

#define SPOCU_DTYPE_ENTRIES(ISA, NAME, T)                                                                     \
  SPOCU_EXPORT void spocu_forward_##NAME##_##ISA(const void* x, void* y, int64_t n, const double* table,       \
                                                 int threads) {                                              \
    ISA::fixed_forward<ISA::T>(x, y, n, table, threads);                                                     \
  }                                                                                                          \
  SPOCU_EXPORT void spocu_backward_##NAME##_##ISA(const void* g, const void* x, void* out, int64_t n,          \
                                                  const double* table, int threads) {                        \
    ISA::fixed_backward<ISA::T>(g, x, out, n, table, threads);                                               \
  }                                                                                                          \
  SPOCU_EXPORT void spocu_learnable_forward_##NAME##_##ISA(const void* x, void* y, int64_t A, int64_t C,       \
                                                           int64_t B, const double* params, double c,        \
                                                           const double* shift, int threads) {               \
    ISA::learnable_forward<ISA::T>(x, y, A, C, B, params, c, shift, threads);                                \
  }                                                                                                          \
  SPOCU_EXPORT void spocu_learnable_backward_##NAME##_##ISA(const void* g, const void* x, void* out,           \
                                                            double* sums, int64_t A, int64_t C, int64_t B,    \
                                                            const double* params, double c, double cap,      \
                                                            const double* shift, int threads) {              \
    ISA::learnable_backward<ISA::T>(g, x, out, sums, A, C, B, params, c, cap, shift, threads);               \
  }

#define SPOCU_ISA_ENTRIES(ISA)                \
  SPOCU_DTYPE_ENTRIES(ISA, float32, F32)      \
  SPOCU_DTYPE_ENTRIES(ISA, float64, F64)      \
  SPOCU_DTYPE_ENTRIES(ISA, bfloat16, BF16)    \
  SPOCU_DTYPE_ENTRIES(ISA, float16, F16)

SPOCU_ISA_ENTRIES(base)
#ifdef SPOCU_MULTI_ISA
SPOCU_ISA_ENTRIES(avx2)
SPOCU_ISA_ENTRIES(avx512)
SPOCU_ISA_ENTRIES(avx512bf16)
#endif

// Whether this library holds the copy for `isa` ("base", "avx2", "avx512", "avx512bf16") and this
// CPU (and its operating system) can run it.
SPOCU_EXPORT int spocu_isa_supported(const char* isa) {
  if (std::strcmp(isa, "base") == 0) return 1;
#ifdef SPOCU_MULTI_ISA
  __builtin_cpu_init();
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2") &&
                  __builtin_cpu_supports("popcnt");
  const bool v4 = v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                  __builtin_cpu_supports("avx512cd") && __builtin_cpu_supports("avx512dq") &&
                  __builtin_cpu_supports("avx512vl");
  if (std::strcmp(isa, "avx2") == 0) return v3;
  if (std::strcmp(isa, "avx512") == 0) return v4;
  if (std::strcmp(isa, "avx512bf16") == 0) return v4 && __builtin_cpu_supports("avx512bf16");
#endif
  return 0;
}

SPOCU_EXPORT int spocu_abi_version() { return 3; }

// An importable extension module (empty): setuptools builds, names and installs the library as
// one, which gives it the interpreter's platform tag; spocu.torch._cpp finds it with
// importlib.util.find_spec and loads it with ctypes.
#ifdef SPOCU_PYTHON_MODULE
#include <Python.h>
static struct PyModuleDef spocu_kernels_module = {PyModuleDef_HEAD_INIT, "_kernels",
                                                  "SPOCU's CPU kernels (called through ctypes by spocu.torch._cpp)",
                                                  0, nullptr};
PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&spocu_kernels_module); }
#endif
