// SPOCU's CPU kernels: one pass over memory forward, one backward.
//
// Built once per machine (and compiler, CPU, source) by spocu.torch._cpp with the
// system C++ compiler -- no PyTorch headers, so the build takes about a second --
// and called through ctypes on raw storage pointers. The math is that of
// spocu.torch._eager (fixed parameters) and spocu.torch._learnable (tensor
// parameters): the same clamps, the same Horner order, the compute dtype of
// torch's opmath (float for float32/bfloat16/float16, double for float64).
// Threads: OpenMP (libgomp, the runtime torch itself loads), at most the number
// the caller passes (torch.get_num_threads()), one per 32768 elements.

#include <cstdint>
#include <cstring>
#include <vector>
#ifdef _OPENMP
#include <omp.h>
#endif

namespace {

constexpr int64_t kGrain = 32768;  // torch's at::internal::GRAIN_SIZE

int threads_for(int64_t work, int max_threads) {
  int64_t t = (work + kGrain - 1) / kGrain;
  if (t > max_threads) t = max_threads;
  return t < 1 ? 1 : static_cast<int>(t);
}

// Run body(begin, end) over [0, n) split into one contiguous chunk per thread.
template <class Body>
void parallel_chunks(int64_t n, int64_t work, int max_threads, const Body& body) {
  const int nt = threads_for(work, max_threads);
#ifdef _OPENMP
  if (nt > 1) {
#pragma omp parallel num_threads(nt)
    {
      const int t = omp_get_thread_num(), count = omp_get_num_threads();
      const int64_t begin = n * t / count, end = n * (t + 1) / count;
      if (begin < end) body(begin, end);
    }
    return;
  }
#endif
  (void)nt;
  body(0, n);
}

struct F32 {
  using S = float;
  using C = float;
  static C load(S v) { return v; }
  static S store(C v) { return v; }
};

struct F64 {
  using S = double;
  using C = double;
  static C load(S v) { return v; }
  static S store(C v) { return v; }
};

struct BF16 {  // round to nearest even, NaN stays NaN (as torch converts)
  using S = uint16_t;
  using C = float;
  static C load(S v) {
    uint32_t b = static_cast<uint32_t>(v) << 16;
    float f;
    std::memcpy(&f, &b, 4);
    return f;
  }
  static S store(C f) {
    uint32_t b;
    std::memcpy(&b, &f, 4);
    if ((b & 0x7fffffffu) > 0x7f800000u) return static_cast<S>((b >> 16) | 0x40u);
    b += 0x7fffu + ((b >> 16) & 1u);
    return static_cast<S>(b >> 16);
  }
};

struct F16 {
  using S = _Float16;
  using C = float;
  static C load(S v) { return static_cast<C>(v); }
  static S store(C v) { return static_cast<S>(v); }
};

// ------------------------------------------------------------------ fixed parameters
// table = [lo, hi, e_1..e_8]: s(x) = xc * (e_1 + e_2 xc + ... + e_8 xc^7), xc = clamp(x, lo, hi)

template <class T>
void fixed_forward(const void* xv, void* yv, int64_t n, const double* table, int max_threads) {
  using S = typename T::S;
  using C = typename T::C;
  const S* x = static_cast<const S*>(xv);
  S* y = static_cast<S*>(yv);
  const C lo = C(table[0]), hi = C(table[1]);
  const C e1 = C(table[2]), e2 = C(table[3]), e3 = C(table[4]), e4 = C(table[5]);
  const C e5 = C(table[6]), e6 = C(table[7]), e7 = C(table[8]), e8 = C(table[9]);
  parallel_chunks(n, n, max_threads, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const C v = T::load(x[i]);
      const C xc = v < lo ? lo : (v > hi ? hi : v);  // NaN stays NaN, as torch.clamp
      C acc = xc * e8 + e7;
      acc = acc * xc + e6;
      acc = acc * xc + e5;
      acc = acc * xc + e4;
      acc = acc * xc + e3;
      acc = acc * xc + e2;
      acc = acc * xc + e1;
      y[i] = T::store(acc * xc);
    }
  });
}

// table = [lo, hi, cap, s'_0..s'_7]: out = grad * s'(clamp(x, lo, cap)), s' = 0 where x <= lo or x >= hi

template <class T>
void fixed_backward(const void* gv, const void* xv, void* ov, int64_t n, const double* table, int max_threads) {
  using S = typename T::S;
  using C = typename T::C;
  const S* g = static_cast<const S*>(gv);
  const S* x = static_cast<const S*>(xv);
  S* out = static_cast<S*>(ov);
  const C lo = C(table[0]), hi = C(table[1]), cap = C(table[2]);
  const C d0 = C(table[3]), d1 = C(table[4]), d2 = C(table[5]), d3 = C(table[6]);
  const C d4 = C(table[7]), d5 = C(table[8]), d6 = C(table[9]), d7 = C(table[10]);
  parallel_chunks(n, n, max_threads, [&](int64_t begin, int64_t end) {
#pragma omp simd
    for (int64_t i = begin; i < end; ++i) {
      const C v = T::load(x[i]);
      const C xc = v < lo ? lo : (v > cap ? cap : v);
      C ds = xc * d7 + d6;
      ds = ds * xc + d5;
      ds = ds * xc + d4;
      ds = ds * xc + d3;
      ds = ds * xc + d2;
      ds = ds * xc + d1;
      ds = ds * xc + d0;
      const bool outside = (v <= lo) | (v >= hi);
      out[i] = T::store((outside ? C(0) : ds) * T::load(g[i]));
    }
  });
}

// ------------------------------------------------------------------ tensor (learnable) parameters
// x is an (A, C, B) contiguous block, parameters per channel (C of them). params = [alpha[C], beta[C],
// gamma[C]] in double; shift = the 8 polynomials of core.SHIFTED_COEFFICIENT_POLYNOMIALS, each padded
// to 8 coefficients (lowest power of beta first): d_k(beta) for s = alpha * t * sum_k d_k t^(k-1).

template <class Cc>
struct Channel {
  Cc alpha, beta, gamma, lower, upper, slope_at_beta, scale;  // scale = alpha / gamma
  Cc d[8];
};

template <class Cc>
Cc r_prime(Cc u) {  // r'(u) = u^6 (8u - 14) + 6u^2, as _learnable._r_prime
  const Cc u2 = u * u;
  const Cc u6 = u2 * u2 * u2;
  return u6 * (Cc(8) * u - Cc(14)) + Cc(6) * u2;
}

template <class Cc>
std::vector<Channel<Cc>> channels(int64_t count, const double* params, double c, const double* shift) {
  std::vector<Channel<Cc>> out(count);
  for (int64_t k = 0; k < count; ++k) {
    Channel<Cc>& ch = out[k];
    const double beta = params[count + k];
    ch.alpha = Cc(params[k]);
    ch.beta = Cc(beta);
    ch.gamma = Cc(params[2 * count + k]);
    ch.lower = -ch.beta;
    ch.upper = Cc(c) - ch.beta;  // +inf for c = inf
    ch.slope_at_beta = r_prime(ch.beta);
    ch.scale = ch.alpha / ch.gamma;
    for (int j = 0; j < 8; ++j) {
      const double* p = shift + 8 * j;
      double acc = p[7];
      for (int q = 6; q >= 0; --q) acc = acc * beta + p[q];
      ch.d[j] = Cc(acc);
    }
  }
  return out;
}

template <class Cc>
inline Cc shifted_poly(const Channel<Cc>& ch, Cc t) {  // sum_k d_k t^(k-1), Horner as _learnable._poly
  Cc acc = ch.d[7];
  for (int j = 6; j >= 0; --j) acc = acc * t + ch.d[j];
  return acc;
}

template <class T>
void learnable_forward(const void* xv, void* yv, int64_t A, int64_t C, int64_t B, const double* params, double c,
                       const double* shift, int max_threads) {
  using S = typename T::S;
  using Cc = typename T::C;
  const S* x = static_cast<const S*>(xv);
  S* y = static_cast<S*>(yv);
  const std::vector<Channel<Cc>> chs = channels<Cc>(C, params, c, shift);
  const int64_t rows = A * C;
  parallel_chunks(rows, rows * B, max_threads, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const Channel<Cc> ch = chs[r % C];
      const S* xr = x + r * B;
      S* yr = y + r * B;
#pragma omp simd
      for (int64_t b = 0; b < B; ++b) {
        const Cc t_raw = T::load(xr[b]) / ch.gamma;
        const Cc t = t_raw < ch.lower ? ch.lower : (t_raw > ch.upper ? ch.upper : t_raw);
        yr[b] = T::store(ch.alpha * t * shifted_poly(ch, t));
      }
    }
  });
}

// out = dL/dx; sums (3 x C, double, zeroed by the caller) += dL/dalpha, dL/dbeta, dL/dgamma per channel
template <class T>
void learnable_backward(const void* gv, const void* xv, void* ov, double* sums, int64_t A, int64_t C, int64_t B,
                        const double* params, double c, const double* shift, int max_threads) {
  using S = typename T::S;
  using Cc = typename T::C;
  const S* g = static_cast<const S*>(gv);
  const S* x = static_cast<const S*>(xv);
  S* out = static_cast<S*>(ov);
  const std::vector<Channel<Cc>> chs = channels<Cc>(C, params, c, shift);
  const int64_t rows = A * C;
  parallel_chunks(rows, rows * B, max_threads, [&](int64_t begin, int64_t end) {
    std::vector<double> local(3 * C, 0.0);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t k = r % C;
      const Channel<Cc> ch = chs[k];
      const S* gr = g + r * B;
      const S* xr = x + r * B;
      S* outr = out + r * B;
      Cc sa = 0, sb = 0, sg = 0;
#pragma omp simd reduction(+ : sa, sb, sg)
      for (int64_t b = 0; b < B; ++b) {
        const Cc gout = T::load(gr[b]);
        const Cc t_raw = T::load(xr[b]) / ch.gamma;
        const Cc t = t_raw < ch.lower ? ch.lower : (t_raw > ch.upper ? ch.upper : t_raw);
        const bool outside = (t_raw <= ch.lower) | (t_raw >= ch.upper);
        const Cc dr = outside ? Cc(0) : r_prime(ch.beta + t);
        outr[b] = T::store(gout * ch.scale * dr);
        sa += gout * t * shifted_poly(ch, t);
        sb += gout * ch.alpha * (dr - ch.slope_at_beta);
        sg += -gout * ch.alpha * dr * t / ch.gamma;
      }
      local[k] += sa;
      local[C + k] += sb;
      local[2 * C + k] += sg;
    }
#ifdef _OPENMP
#pragma omp critical(spocu_learnable_sums)
#endif
    for (int64_t i = 0; i < 3 * C; ++i) sums[i] += local[i];
  });
}

}  // namespace

#define SPOCU_EXPORT extern "C" __attribute__((visibility("default")))

#define SPOCU_DTYPE_ENTRIES(NAME, T)                                                                         \
  SPOCU_EXPORT void spocu_forward_##NAME(const void* x, void* y, int64_t n, const double* table, int threads) { \
    fixed_forward<T>(x, y, n, table, threads);                                                              \
  }                                                                                                         \
  SPOCU_EXPORT void spocu_backward_##NAME(const void* g, const void* x, void* out, int64_t n,                \
                                          const double* table, int threads) {                               \
    fixed_backward<T>(g, x, out, n, table, threads);                                                        \
  }                                                                                                         \
  SPOCU_EXPORT void spocu_learnable_forward_##NAME(const void* x, void* y, int64_t A, int64_t C, int64_t B,  \
                                                   const double* params, double c, const double* shift,     \
                                                   int threads) {                                           \
    learnable_forward<T>(x, y, A, C, B, params, c, shift, threads);                                         \
  }                                                                                                         \
  SPOCU_EXPORT void spocu_learnable_backward_##NAME(const void* g, const void* x, void* out, double* sums,    \
                                                    int64_t A, int64_t C, int64_t B, const double* params,  \
                                                    double c, const double* shift, int threads) {           \
    learnable_backward<T>(g, x, out, sums, A, C, B, params, c, shift, threads);                             \
  }

SPOCU_DTYPE_ENTRIES(float32, F32)
SPOCU_DTYPE_ENTRIES(float64, F64)
SPOCU_DTYPE_ENTRIES(bfloat16, BF16)
SPOCU_DTYPE_ENTRIES(float16, F16)

SPOCU_EXPORT int spocu_abi_version() { return 1; }
