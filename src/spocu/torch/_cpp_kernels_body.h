// The body of SPOCU's CPU kernels, included once per instruction set by _cpp_kernels.cpp, each time
// inside its own namespace (SPOCU_NS) and compiler target region. Not a header of its own: no
// include guard, on purpose. SPOCU_F16C, SPOCU_TARGET_AVX512 and SPOCU_TARGET_AVX512BF16 say which
// instructions this copy may use (GCC's target pragma does not define __AVX512F__ and friends).

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

// ------------------------------------------------------------------ half types in blocks
// float16/bfloat16 data is widened to float in blocks that stay in L1, computed by the float loops,
// and rounded back (round to nearest even): separate simple loops that the compiler vectorizes.

constexpr int64_t kBlock = 1024;

inline void widen(const uint16_t* src, float* dst, int64_t n, BF16) {
  uint32_t* bits = reinterpret_cast<uint32_t*>(dst);  // built with -fno-strict-aliasing
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) bits[i] = static_cast<uint32_t>(src[i]) << 16;
}

inline void narrow(const float* src, uint16_t* dst, int64_t n, BF16) {
  const uint32_t* bits = reinterpret_cast<const uint32_t*>(src);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t b = bits[i];
    const uint32_t rounded = (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
    const uint32_t quiet_nan = (b >> 16) | 0x40u;
    dst[i] = static_cast<uint16_t>((b & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
  }
}

inline void widen(const _Float16* src, float* dst, int64_t n, F16) {
  int64_t i = 0;
#if defined(SPOCU_F16C)  // the compiler does not vectorize _Float16 conversions by itself
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#endif
  for (; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

inline void narrow(const float* src, _Float16* dst, int64_t n, F16) {
  int64_t i = 0;
#if defined(SPOCU_F16C)
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                     _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#endif
  for (; i < n; ++i) dst[i] = static_cast<_Float16>(src[i]);
}

// ------------------------------------------------------------------ fixed parameters
// table = [lo, hi, e_1..e_8]: s(x) = xc * (e_1 + e_2 xc + ... + e_8 xc^7), xc = clamp(x, lo, hi)

template <class C>
struct Forward {
  C lo, hi, e1, e2, e3, e4, e5, e6, e7, e8;
  explicit Forward(const double* t)
      : lo(C(t[0])), hi(C(t[1])), e1(C(t[2])), e2(C(t[3])), e3(C(t[4])), e4(C(t[5])), e5(C(t[6])),
        e6(C(t[7])), e7(C(t[8])), e8(C(t[9])) {}
  __attribute__((noinline)) void run(const C* x, C* y, int64_t n) const {  // one vectorized copy
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const C v = x[i];
      const C xc = v < lo ? lo : (v > hi ? hi : v);  // NaN stays NaN, as torch.clamp
      C acc = xc * e8 + e7;
      acc = acc * xc + e6;
      acc = acc * xc + e5;
      acc = acc * xc + e4;
      acc = acc * xc + e3;
      acc = acc * xc + e2;
      acc = acc * xc + e1;
      y[i] = acc * xc;
    }
  }
};

// table = [lo, hi, cap, s'_0..s'_7]: out = grad * s'(clamp(x, lo, cap)), s' = 0 where x <= lo or x >= hi

template <class C>
struct Backward {
  C lo, hi, cap, d0, d1, d2, d3, d4, d5, d6, d7;
  explicit Backward(const double* t)
      : lo(C(t[0])), hi(C(t[1])), cap(C(t[2])), d0(C(t[3])), d1(C(t[4])), d2(C(t[5])), d3(C(t[6])),
        d4(C(t[7])), d5(C(t[8])), d6(C(t[9])), d7(C(t[10])) {}
  __attribute__((noinline)) void run(const C* g, const C* x, C* out, int64_t n) const {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const C v = x[i];
      const C xc = v < lo ? lo : (v > cap ? cap : v);
      C ds = xc * d7 + d6;
      ds = ds * xc + d5;
      ds = ds * xc + d4;
      ds = ds * xc + d3;
      ds = ds * xc + d2;
      ds = ds * xc + d1;
      ds = ds * xc + d0;
      const bool outside = (v <= lo) | (v >= hi);
      out[i] = (outside ? C(0) : ds) * g[i];
    }
  }
};

// ------------------------------------------------------------------ half types in AVX-512 registers
// With AVX-512 (-march=native on Skylake-X, Zen 4 and later) float16 -- and bfloat16 where the CPU
// has AVX512-BF16's VCVTNEPS2BF16 -- are widened, computed and rounded in registers, 16 lanes at a
// time: the block loops spend more time converting than computing (bfloat16, one thread: 0.45 ->
// 0.24 ns/element). Same clamps, same FMAs in the same order as Forward/Backward, so the float
// results are bit for bit those of the block loops, and so is the rounding: VCVTPS2PH is the
// instruction `narrow` uses for float16; VCVTNEPS2BF16 rounds to nearest even and quiets NaN as
// BF16::store does, but flushes subnormal results to zero, so lanes with a subnormal result take
// BF16::store's integer rule.

#if defined(SPOCU_TARGET_AVX512)
#define SPOCU_HALF_VECTOR 1
#define SPOCU_AVX512 1

struct F16x16 {
  static __m512 load(const _Float16* p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  }
  static void store(_Float16* p, __m512 v) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
};

#if defined(SPOCU_TARGET_AVX512BF16)
#define SPOCU_BF16_VECTOR 1
struct BF16x16 {
  static __m512 load(const uint16_t* p) {
    return _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))), 16));
  }
  static void store(uint16_t* p, __m512 v) {
    __m256i out = reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(v));
    const __mmask16 subnormal = _mm512_fpclass_ps_mask(v, 0x20);
    if (__builtin_expect(subnormal != 0, 0)) {  // b + 0x7fff + lsb, then the high half, as BF16::store
      const __m512i b = _mm512_castps_si512(v);
      const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
      const __m512i rounded =
          _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), lsb), 16);
      out = _mm256_mask_blend_epi16(subnormal, out, _mm512_cvtepi32_epi16(rounded));
    }
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), out);
  }
};
#endif

// x clamped to [lo, hi] as the ternaries of Forward: MAXPS/MINPS return their second operand when
// either is NaN, so NaN stays NaN
inline __m512 clamp16(__m512 v, __m512 lo, __m512 hi) { return _mm512_min_ps(hi, _mm512_max_ps(lo, v)); }

// c[0] + c[1] x + ... + c[7] x^7 by Horner's rule from the highest power, as Forward and Backward
inline __m512 horner16(__m512 x, const __m512 (&c)[8]) {
  __m512 acc = _mm512_fmadd_ps(x, c[7], c[6]);
  for (int k = 5; k >= 0; --k) acc = _mm512_fmadd_ps(acc, x, c[k]);
  return acc;
}

// the first multiple-of-16 elements of [0, n); returns how many were done
template <class V, class S>
int64_t forward16(const Forward<float>& f, const S* x, S* y, int64_t n) {
  const __m512 lo = _mm512_set1_ps(f.lo), hi = _mm512_set1_ps(f.hi);
  const __m512 e[8] = {_mm512_set1_ps(f.e1), _mm512_set1_ps(f.e2), _mm512_set1_ps(f.e3), _mm512_set1_ps(f.e4),
                       _mm512_set1_ps(f.e5), _mm512_set1_ps(f.e6), _mm512_set1_ps(f.e7), _mm512_set1_ps(f.e8)};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 xc = clamp16(V::load(x + i), lo, hi);
    V::store(y + i, _mm512_mul_ps(horner16(xc, e), xc));
  }
  return i;
}

template <class V, class S>
int64_t backward16(const Backward<float>& f, const S* g, const S* x, S* out, int64_t n) {
  const __m512 lo = _mm512_set1_ps(f.lo), hi = _mm512_set1_ps(f.hi), cap = _mm512_set1_ps(f.cap);
  const __m512 d[8] = {_mm512_set1_ps(f.d0), _mm512_set1_ps(f.d1), _mm512_set1_ps(f.d2), _mm512_set1_ps(f.d3),
                       _mm512_set1_ps(f.d4), _mm512_set1_ps(f.d5), _mm512_set1_ps(f.d6), _mm512_set1_ps(f.d7)};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = V::load(x + i);
    const __mmask16 outside = _mm512_cmp_ps_mask(v, lo, _CMP_LE_OQ) | _mm512_cmp_ps_mask(v, hi, _CMP_GE_OQ);
    const __m512 ds = _mm512_mask_mov_ps(horner16(clamp16(v, lo, cap), d), outside, _mm512_setzero_ps());
    V::store(out + i, _mm512_mul_ps(ds, V::load(g + i)));
  }
  return i;
}
#endif

// ------------------------------------------------------------------ half types in AVX2 registers
// The same with AVX2 and F16C (x86-64-v3: Haswell, Zen 1 and later), 8 lanes at a time, where the
// AVX-512 loops are not compiled in: float16 through VCVTPH2PS/VCVTPS2PH (as `widen`/`narrow`),
// bfloat16 widened by a shift and rounded with BF16::store's integer rule (round to nearest even,
// NaN quieted), which is exact for every input, subnormals included: no lane is rounded apart.

#if defined(SPOCU_F16C)
#define SPOCU_VECTOR8 1

struct F16x8 {
  static __m256 load(const _Float16* p) { return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))); }
  static void store(_Float16* p, __m256 v) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  }
};

struct BF16x8 {
  static __m256 load(const uint16_t* p) {
    return _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
  }
  static void store(uint16_t* p, __m256 v) {  // BF16::store, lane by lane: b + 0x7fff + lsb, the high half
    const __m256i b = _mm256_castps_si256(v);
    const __m256i high = _mm256_srli_epi32(b, 16);
    __m256i out = _mm256_srli_epi32(
        _mm256_add_epi32(_mm256_add_epi32(b, _mm256_set1_epi32(0x7fff)), _mm256_and_si256(high, _mm256_set1_epi32(1))),
        16);
    const __m256 nan = _mm256_cmp_ps(v, v, _CMP_UNORD_Q);
    if (__builtin_expect(_mm256_movemask_ps(nan) != 0, 0))  // NaN lanes: the high half, quieted
      out = _mm256_blendv_epi8(out, _mm256_or_si256(high, _mm256_set1_epi32(0x40)), _mm256_castps_si256(nan));
    // each lane < 2^16: packus keeps it
    _mm_storeu_si128(reinterpret_cast<__m128i*>(p),
                     _mm_packus_epi32(_mm256_castsi256_si128(out), _mm256_extracti128_si256(out, 1)));
  }
};

// as clamp16 and horner16
inline __m256 clamp8(__m256 v, __m256 lo, __m256 hi) { return _mm256_min_ps(hi, _mm256_max_ps(lo, v)); }

inline __m256 horner8(__m256 x, const __m256 (&c)[8]) {
  __m256 acc = _mm256_fmadd_ps(x, c[7], c[6]);
  for (int k = 5; k >= 0; --k) acc = _mm256_fmadd_ps(acc, x, c[k]);
  return acc;
}

template <class V, class S>
int64_t forward8(const Forward<float>& f, const S* x, S* y, int64_t n) {
  const __m256 lo = _mm256_set1_ps(f.lo), hi = _mm256_set1_ps(f.hi);
  const __m256 e[8] = {_mm256_set1_ps(f.e1), _mm256_set1_ps(f.e2), _mm256_set1_ps(f.e3), _mm256_set1_ps(f.e4),
                       _mm256_set1_ps(f.e5), _mm256_set1_ps(f.e6), _mm256_set1_ps(f.e7), _mm256_set1_ps(f.e8)};
  int64_t i = 0;
  constexpr int kChains = 4;  // independent Horner chains, interleaved: the FMAs' latency overlaps
  for (; i + 8 * kChains <= n; i += 8 * kChains) {
    __m256 xc[kChains], acc[kChains];
    for (int k = 0; k < kChains; ++k) xc[k] = clamp8(V::load(x + i + 8 * k), lo, hi);
    for (int k = 0; k < kChains; ++k) acc[k] = _mm256_fmadd_ps(xc[k], e[7], e[6]);
    for (int j = 5; j >= 0; --j)
      for (int k = 0; k < kChains; ++k) acc[k] = _mm256_fmadd_ps(acc[k], xc[k], e[j]);
    for (int k = 0; k < kChains; ++k) V::store(y + i + 8 * k, _mm256_mul_ps(acc[k], xc[k]));
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 xc = clamp8(V::load(x + i), lo, hi);
    V::store(y + i, _mm256_mul_ps(horner8(xc, e), xc));
  }
  return i;
}

template <class V, class S>
int64_t backward8(const Backward<float>& f, const S* g, const S* x, S* out, int64_t n) {
  const __m256 lo = _mm256_set1_ps(f.lo), hi = _mm256_set1_ps(f.hi), cap = _mm256_set1_ps(f.cap);
  const __m256 d[8] = {_mm256_set1_ps(f.d0), _mm256_set1_ps(f.d1), _mm256_set1_ps(f.d2), _mm256_set1_ps(f.d3),
                       _mm256_set1_ps(f.d4), _mm256_set1_ps(f.d5), _mm256_set1_ps(f.d6), _mm256_set1_ps(f.d7)};
  int64_t i = 0;
  constexpr int kChains = 4;  // as forward8
  for (; i + 8 * kChains <= n; i += 8 * kChains) {
    __m256 v[kChains], xc[kChains], acc[kChains];
    for (int k = 0; k < kChains; ++k) v[k] = V::load(x + i + 8 * k), xc[k] = clamp8(v[k], lo, cap);
    for (int k = 0; k < kChains; ++k) acc[k] = _mm256_fmadd_ps(xc[k], d[7], d[6]);
    for (int j = 5; j >= 0; --j)
      for (int k = 0; k < kChains; ++k) acc[k] = _mm256_fmadd_ps(acc[k], xc[k], d[j]);
    for (int k = 0; k < kChains; ++k) {
      const __m256 outside =
          _mm256_or_ps(_mm256_cmp_ps(v[k], lo, _CMP_LE_OQ), _mm256_cmp_ps(v[k], hi, _CMP_GE_OQ));
      V::store(out + i + 8 * k, _mm256_mul_ps(_mm256_andnot_ps(outside, acc[k]), V::load(g + i + 8 * k)));
    }
  }
  for (; i + 8 <= n; i += 8) {
    const __m256 v = V::load(x + i);
    const __m256 outside = _mm256_or_ps(_mm256_cmp_ps(v, lo, _CMP_LE_OQ), _mm256_cmp_ps(v, hi, _CMP_GE_OQ));
    const __m256 ds = _mm256_andnot_ps(outside, horner8(clamp8(v, lo, cap), d));  // +0 outside, as Backward
    V::store(out + i, _mm256_mul_ps(ds, V::load(g + i)));
  }
  return i;
}
#endif

// how many leading elements the register loops did (the rest: block loops)
template <class T, class S>
int64_t vector_forward(const Forward<float>& f, const S* x, S* y, int64_t n) {
#if defined(SPOCU_BF16_VECTOR)
  if constexpr (std::is_same_v<T, BF16>) return forward16<BF16x16>(f, x, y, n);
#elif defined(SPOCU_VECTOR8)
  if constexpr (std::is_same_v<T, BF16>) return forward8<BF16x8>(f, x, y, n);
#endif
#if defined(SPOCU_HALF_VECTOR)
  if constexpr (std::is_same_v<T, F16>) return forward16<F16x16>(f, x, y, n);
#elif defined(SPOCU_VECTOR8)
  if constexpr (std::is_same_v<T, F16>) return forward8<F16x8>(f, x, y, n);
#endif
  return 0;
}

template <class T, class S>
int64_t vector_backward(const Backward<float>& f, const S* g, const S* x, S* out, int64_t n) {
#if defined(SPOCU_BF16_VECTOR)
  if constexpr (std::is_same_v<T, BF16>) return backward16<BF16x16>(f, g, x, out, n);
#elif defined(SPOCU_VECTOR8)
  if constexpr (std::is_same_v<T, BF16>) return backward8<BF16x8>(f, g, x, out, n);
#endif
#if defined(SPOCU_HALF_VECTOR)
  if constexpr (std::is_same_v<T, F16>) return backward16<F16x16>(f, g, x, out, n);
#elif defined(SPOCU_VECTOR8)
  if constexpr (std::is_same_v<T, F16>) return backward8<F16x8>(f, g, x, out, n);
#endif
  return 0;
}

template <class T>
void fixed_forward(const void* xv, void* yv, int64_t n, const double* table, int max_threads) {
  using S = typename T::S;
  using C = typename T::C;
  const Forward<C> f(table);
  const S* x = static_cast<const S*>(xv);
  S* y = static_cast<S*>(yv);
  parallel_chunks(n, n, max_threads, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<S, C>) {
      f.run(x + begin, y + begin, end - begin);
    } else {
      int64_t i = begin + vector_forward<T>(f, x + begin, y + begin, end - begin);
      alignas(64) float xb[kBlock], yb[kBlock];
      for (; i < end; i += kBlock) {
        const int64_t m = end - i < kBlock ? end - i : kBlock;
        widen(x + i, xb, m, T{});
        f.run(xb, yb, m);
        narrow(yb, y + i, m, T{});
      }
    }
  });
}

template <class T>
void fixed_backward(const void* gv, const void* xv, void* ov, int64_t n, const double* table, int max_threads) {
  using S = typename T::S;
  using C = typename T::C;
  const Backward<C> f(table);
  const S* g = static_cast<const S*>(gv);
  const S* x = static_cast<const S*>(xv);
  S* out = static_cast<S*>(ov);
  parallel_chunks(n, n, max_threads, [&](int64_t begin, int64_t end) {
    if constexpr (std::is_same_v<S, C>) {
      f.run(g + begin, x + begin, out + begin, end - begin);
    } else {
      int64_t i = begin + vector_backward<T>(f, g + begin, x + begin, out + begin, end - begin);
      alignas(64) float gb[kBlock], xb[kBlock], ob[kBlock];
      for (; i < end; i += kBlock) {
        const int64_t m = end - i < kBlock ? end - i : kBlock;
        widen(g + i, gb, m, T{});
        widen(x + i, xb, m, T{});
        f.run(gb, xb, ob, m);
        narrow(ob, out + i, m, T{});
      }
    }
  });
}

// ------------------------------------------------------------------ tensor (learnable) parameters
// x is an (A, C, B) contiguous block, parameters per channel (C of them). params = [alpha[C], beta[C],
// gamma[C]] in double; shift = the 8 polynomials of core.SHIFTED_COEFFICIENT_POLYNOMIALS, each padded
// to 8 coefficients (lowest power of beta first): d_k(beta) for s = alpha * t * sum_k d_k t^(k-1).

template <class Cc>
struct Channel {
  // scale = alpha / gamma, t_cap = cap - beta; x * inv_gamma, not x / gamma: a division costs as
  // much as the rest of the forward (within 1 ulp of x / gamma)
  Cc alpha, beta, gamma, inv_gamma, lower, upper, t_cap, slope_at_beta, scale;
  Cc d[8];
};

template <class Cc>
Cc r_prime(Cc u) {  // r'(u) = u^6 (8u - 14) + 6u^2, as _learnable._r_prime
  const Cc u2 = u * u;
  const Cc u6 = u2 * u2 * u2;
  return u6 * (Cc(8) * u - Cc(14)) + Cc(6) * u2;
}

template <class Cc>
std::vector<Channel<Cc>> channels(int64_t count, const double* params, double c, double cap, const double* shift) {
  std::vector<Channel<Cc>> out(count);
  for (int64_t k = 0; k < count; ++k) {
    Channel<Cc>& ch = out[k];
    const double beta = params[count + k];
    ch.alpha = Cc(params[k]);
    ch.beta = Cc(beta);
    ch.gamma = Cc(params[2 * count + k]);
    ch.inv_gamma = Cc(1) / ch.gamma;
    ch.lower = -ch.beta;
    ch.upper = Cc(c) - ch.beta;  // +inf for c = inf
    ch.t_cap = Cc(cap) - ch.beta;
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

// One row of B elements of one channel. The channel's numbers are copied into locals so that the
// compiler vectorizes the loop (it does not through a struct); noinline: one vectorized copy.
template <class Cc>
__attribute__((noinline)) void learnable_row_forward(const Channel<Cc>& ch, const Cc* x, Cc* y, int64_t B) {
  const Cc alpha = ch.alpha, inv_gamma = ch.inv_gamma, lower = ch.lower, upper = ch.upper;
  const Cc d1 = ch.d[0], d2 = ch.d[1], d3 = ch.d[2], d4 = ch.d[3], d5 = ch.d[4], d6 = ch.d[5], d7 = ch.d[6],
           d8 = ch.d[7];
#pragma omp simd
  for (int64_t b = 0; b < B; ++b) {
    const Cc t_raw = x[b] * inv_gamma;
    const Cc t = t_raw < lower ? lower : (t_raw > upper ? upper : t_raw);
    Cc acc = d8 * t + d7;  // sum_k d_k t^(k-1), Horner as _learnable._poly
    acc = acc * t + d6;
    acc = acc * t + d5;
    acc = acc * t + d4;
    acc = acc * t + d3;
    acc = acc * t + d2;
    acc = acc * t + d1;
    y[b] = alpha * t * acc;
  }
}

#ifdef SPOCU_AVX512
// learnable_row_backward's loop for float in AVX-512 registers, 16 elements a step: the compiler's
// vectorization of the ternaries moves every mask through general registers (about 60 instructions
// per 16 elements; these are about 30, and the backward of a seed-CNN layer is 1.4-1.5x faster).
// The same clamps (MAXPS/MINPS return their second operand when either is NaN, so NaN stays NaN, as
// the ternaries) and the same FMAs as the scalar `element`. pa, pb, pg: the 16 partial sums.
inline int64_t learnable_row_backward16(const Channel<float>& ch, const float* g, const float* x, float* out,
                                        int64_t B, float* pa, float* pb, float* pg) {
  const __m512 inv_gamma = _mm512_set1_ps(ch.inv_gamma), lower = _mm512_set1_ps(ch.lower),
               upper = _mm512_set1_ps(ch.upper), beta = _mm512_set1_ps(ch.beta),
               scale = _mm512_set1_ps(ch.scale), slope_at_beta = _mm512_set1_ps(ch.slope_at_beta),
               eight = _mm512_set1_ps(8.0f), fourteen = _mm512_set1_ps(14.0f), six = _mm512_set1_ps(6.0f);
  const __m512 d[8] = {_mm512_set1_ps(ch.d[0]), _mm512_set1_ps(ch.d[1]), _mm512_set1_ps(ch.d[2]),
                       _mm512_set1_ps(ch.d[3]), _mm512_set1_ps(ch.d[4]), _mm512_set1_ps(ch.d[5]),
                       _mm512_set1_ps(ch.d[6]), _mm512_set1_ps(ch.d[7])};
  __m512 sa = _mm512_load_ps(pa), sb = _mm512_load_ps(pb), sg = _mm512_load_ps(pg);
  int64_t b = 0;
  for (; b + 16 <= B; b += 16) {
    const __m512 gout = _mm512_loadu_ps(g + b);
    const __m512 t_raw = _mm512_mul_ps(_mm512_loadu_ps(x + b), inv_gamma);
    const __m512 t = clamp16(t_raw, lower, upper);  // (not capped: see exact_element)
    const __mmask16 outside = _mm512_cmp_ps_mask(t_raw, lower, _CMP_LE_OQ) | _mm512_cmp_ps_mask(t_raw, upper, _CMP_GE_OQ);
    const __m512 u = _mm512_add_ps(beta, t);
    const __m512 u2 = _mm512_mul_ps(u, u);
    const __m512 u6 = _mm512_mul_ps(_mm512_mul_ps(u2, u2), u2);
    const __m512 slope = _mm512_fmadd_ps(u6, _mm512_fmsub_ps(eight, u, fourteen), _mm512_mul_ps(six, u2));
    const __m512 dr = _mm512_mask_mov_ps(slope, outside, _mm512_setzero_ps());
    const __m512 poly = horner16(t, d);  // sum_k d_k t^(k-1)
    const __m512 dx = _mm512_mul_ps(_mm512_mul_ps(gout, scale), dr);
    _mm512_storeu_ps(out + b, dx);
    sa = _mm512_fmadd_ps(_mm512_mul_ps(gout, t), poly, sa);
    sb = _mm512_fmadd_ps(gout, _mm512_sub_ps(dr, slope_at_beta), sb);
    sg = _mm512_fnmadd_ps(dx, t, sg);
  }
  _mm512_store_ps(pa, sa), _mm512_store_ps(pb, sb), _mm512_store_ps(pg, sg);
  return b;
}
#endif

#if defined(SPOCU_VECTOR8) && !defined(SPOCU_AVX512)
// learnable_row_backward16 in AVX2 registers (where the AVX-512 loops are not compiled in): 16
// elements a step as two halves of 8, so that each of the 16 partial sums gets the elements it gets in
// the scalar loop, with the same clamps and FMAs (the same bits; a seed-CNN layer's backward takes
// about 0.7 of the time of the compiler's vectorization of `element`, one thread, an AVX2 EPYC).
inline int64_t learnable_row_backward8(const Channel<float>& ch, const float* g, const float* x, float* out,
                                       int64_t B, float* pa, float* pb, float* pg) {
  const __m256 inv_gamma = _mm256_set1_ps(ch.inv_gamma), lower = _mm256_set1_ps(ch.lower),
               upper = _mm256_set1_ps(ch.upper), beta = _mm256_set1_ps(ch.beta),
               scale = _mm256_set1_ps(ch.scale), slope_at_beta = _mm256_set1_ps(ch.slope_at_beta),
               eight = _mm256_set1_ps(8.0f), fourteen = _mm256_set1_ps(14.0f), six = _mm256_set1_ps(6.0f);
  const __m256 d[8] = {_mm256_set1_ps(ch.d[0]), _mm256_set1_ps(ch.d[1]), _mm256_set1_ps(ch.d[2]),
                       _mm256_set1_ps(ch.d[3]), _mm256_set1_ps(ch.d[4]), _mm256_set1_ps(ch.d[5]),
                       _mm256_set1_ps(ch.d[6]), _mm256_set1_ps(ch.d[7])};
  __m256 sa[2] = {_mm256_load_ps(pa), _mm256_load_ps(pa + 8)}, sb[2] = {_mm256_load_ps(pb), _mm256_load_ps(pb + 8)},
         sg[2] = {_mm256_load_ps(pg), _mm256_load_ps(pg + 8)};
  int64_t b = 0;
  for (; b + 16 <= B; b += 16) {
    for (int h = 0; h < 2; ++h) {
      const int64_t i = b + 8 * h;
      const __m256 gout = _mm256_loadu_ps(g + i);
      const __m256 t_raw = _mm256_mul_ps(_mm256_loadu_ps(x + i), inv_gamma);
      const __m256 t = clamp8(t_raw, lower, upper);  // (not capped: see exact_element)
      const __m256 outside =
          _mm256_or_ps(_mm256_cmp_ps(t_raw, lower, _CMP_LE_OQ), _mm256_cmp_ps(t_raw, upper, _CMP_GE_OQ));
      const __m256 u = _mm256_add_ps(beta, t);
      const __m256 u2 = _mm256_mul_ps(u, u);
      const __m256 u6 = _mm256_mul_ps(_mm256_mul_ps(u2, u2), u2);
      const __m256 slope = _mm256_fmadd_ps(u6, _mm256_fmsub_ps(eight, u, fourteen), _mm256_mul_ps(six, u2));
      const __m256 dr = _mm256_andnot_ps(outside, slope);
      const __m256 poly = horner8(t, d);  // sum_k d_k t^(k-1)
      const __m256 dx = _mm256_mul_ps(_mm256_mul_ps(gout, scale), dr);
      _mm256_storeu_ps(out + i, dx);
      sa[h] = _mm256_fmadd_ps(_mm256_mul_ps(gout, t), poly, sa[h]);
      sb[h] = _mm256_fmadd_ps(gout, _mm256_sub_ps(dr, slope_at_beta), sb[h]);
      sg[h] = _mm256_fnmadd_ps(dx, t, sg[h]);
    }
  }
  _mm256_store_ps(pa, sa[0]), _mm256_store_ps(pa + 8, sa[1]), _mm256_store_ps(pb, sb[0]);
  _mm256_store_ps(pb + 8, sb[1]), _mm256_store_ps(pg, sg[0]), _mm256_store_ps(pg + 8, sg[1]);
  return b;
}
#endif

// ------------------------------------------------------------------ beyond the partials' cap
// The loops evaluate the partials in the compute type as they are, not capped: where none overflows
// (every finite result) that is exact. Where one does, an inf (or a NaN: 0 * inf, inf - inf) reaches
// the row's sums (dL/dgamma's holds dx * t, dL/dbeta's r', dL/dalpha's t * sum d_k t^k), so a row (or
// block of pixels) whose sums are not finite -- only with huge inputs (u beyond about 6.5e4 in float,
// c = inf or c that large), inf or NaN in -- is done again by `exact_element`, in double, with no
// cost to the loops. Beyond u = cap (t_cap = cap - beta; 8 cap^8 is 1/128 of the compute type's
// largest value) each partial is evaluated with its scale folded in first, as a chain of products no
// larger than the result (u >= cap >= 2.7e4), so that only a partial that itself overflows does,
// k r'(u) = (k u^6)(8u - 14) + 6 (k u^2), r(u) = u^7 (u - 2) + 2u^3, and saturated at +-max of the
// compute type, never inf (no 0 * inf = NaN downstream; as spocu.torch._learnable._partials_at).

inline double scaled_r_prime(double k, double u) {  // k r'(u), for u >= 2
  const double k2 = k * u * u;
  const double k6 = k2 * u * u * u * u;
  return k6 * (8.0 * u - 14.0) + 6.0 * k2;
}

inline double saturate(double v, double big) { return v > big ? big : (v < -big ? -big : v); }  // NaN stays

// one element of a row done again: its contributions to the three sums (dL/dbeta's
// with the factor alpha) added to s[0..2] in double; returns whether it is itself beyond the cap,
// and then its dL/dx in *dx (else the loops' value stands)
template <class Cc>
bool exact_element(const Channel<Cc>& ch, Cc gout, Cc xv, double* s, Cc* dx) {
  const Cc t_raw = xv * ch.inv_gamma;  // t and the pieces as the loops have them
  const Cc t_in = t_raw < ch.lower ? ch.lower : (t_raw > ch.upper ? ch.upper : t_raw);
  // x = +inf is flat (also for c = inf), a finite x whose x / gamma overflows is not
  const bool top = std::isinf(ch.upper) ? xv == std::numeric_limits<Cc>::infinity() : t_raw >= ch.upper;
  const bool outside = (t_raw <= ch.lower) | top;
  const double g = gout, alpha = ch.alpha, beta = ch.beta, t = t_in, u = beta + t;
  const double slope_at_beta = alpha * double(ch.slope_at_beta);
  if (!(t_in > ch.t_cap)) {  // the usual formulas (NaN too), in double
    const double dr = outside ? 0.0 : scaled_r_prime(1.0, u);
    double acc = ch.d[7];
    for (int k = 6; k >= 0; --k) acc = acc * t + double(ch.d[k]);
    s[0] += g * t * acc;
    s[1] += g * (alpha * dr - slope_at_beta);
    s[2] -= g * double(ch.scale) * dr * t;
    return false;
  }
  const double big = std::numeric_limits<Cc>::max();
  const double k = alpha / double(ch.gamma);
  const double d_x = outside ? 0.0 : saturate(scaled_r_prime(k, u), big);
  const double d_beta = outside ? -slope_at_beta : saturate(scaled_r_prime(alpha, u) - slope_at_beta, big);
  const double d_gamma = outside ? 0.0 : saturate(-scaled_r_prime(k, u) * t, big);
  const double u3 = u * u * u;
  const double r_beta = std::pow(beta, 7) * (beta - 2.0) + 2.0 * beta * beta * beta;
  s[0] += g * saturate(u3 * u * u * u * u * (u - 2.0) + 2.0 * u3 - r_beta, big);
  s[1] += g * d_beta;
  s[2] += g * d_gamma;
  *dx = Cc(saturate(g * d_x, big));
  return true;
}

// writes dL/dx for the row, adds the row's dL/dalpha, dL/dbeta, dL/dgamma to sums[0..2]
template <class Cc>
__attribute__((noinline)) void learnable_row_backward(const Channel<Cc>& ch, const Cc* g, const Cc* x, Cc* out,
                                                      int64_t B, double* sums) {
  const Cc beta = ch.beta, inv_gamma = ch.inv_gamma, lower = ch.lower, upper = ch.upper;
  const Cc scale = ch.scale, slope_at_beta = ch.slope_at_beta;
  const Cc d1 = ch.d[0], d2 = ch.d[1], d3 = ch.d[2], d4 = ch.d[3], d5 = ch.d[4], d6 = ch.d[5], d7 = ch.d[6],
           d8 = ch.d[7];
  // 16 partial sums per gradient (one per SIMD lane), added up at the end of the row; dL/dbeta's
  // without the factor alpha, applied once per row
  constexpr int kLanes = 16;
  alignas(64) Cc pa[kLanes] = {}, pb[kLanes] = {}, pg[kLanes] = {};
  auto element = [&](int64_t b, int lane) {
    const Cc gout = g[b];
    const Cc t_raw = x[b] * inv_gamma;
    const Cc t = t_raw < lower ? lower : (t_raw > upper ? upper : t_raw);  // NaN stays NaN; not capped
    const bool outside = (t_raw <= lower) | (t_raw >= upper);
    const Cc u = beta + t;
    const Cc u2 = u * u;
    const Cc u6 = u2 * u2 * u2;
    const Cc slope = u6 * (Cc(8) * u - Cc(14)) + Cc(6) * u2;  // r'(beta + t)
    const Cc dr = outside ? Cc(0) : slope;
    Cc acc = d8 * t + d7;
    acc = acc * t + d6;
    acc = acc * t + d5;
    acc = acc * t + d4;
    acc = acc * t + d3;
    acc = acc * t + d2;
    acc = acc * t + d1;
    const Cc dx = gout * scale * dr;
    out[b] = dx;
    pa[lane] += gout * t * acc;
    pb[lane] += gout * (dr - slope_at_beta);
    pg[lane] -= dx * t;  // -gout * (alpha / gamma) * dr * t
  };
  int64_t b = 0;
#if defined(SPOCU_AVX512)
  if constexpr (std::is_same_v<Cc, float>) b = learnable_row_backward16(ch, g, x, out, B, pa, pb, pg);
#elif defined(SPOCU_VECTOR8)
  if constexpr (std::is_same_v<Cc, float>) b = learnable_row_backward8(ch, g, x, out, B, pa, pb, pg);
#endif
  for (; b + kLanes <= B; b += kLanes) {
#pragma omp simd
    for (int lane = 0; lane < kLanes; ++lane) element(b + lane, lane);
  }
  for (int lane = 0; b < B; ++b, ++lane) element(b, lane);
  double sa = 0, sb = 0, sg = 0;
  for (int lane = 0; lane < kLanes; ++lane) sa += pa[lane], sb += pb[lane], sg += pg[lane];
  if (__builtin_expect(!(std::isfinite(sa) & std::isfinite(sb) & std::isfinite(sg)), 0)) {
    double s[3] = {0.0, 0.0, 0.0};  // a partial overflowed (or NaN, inf in): the row again, exactly
    for (b = 0; b < B; ++b) exact_element(ch, g[b], x[b], s, out + b);
    sums[0] += s[0], sums[1] += s[1], sums[2] += s[2];
    return;
  }
  sums[0] += sa;
  sums[1] += double(ch.alpha) * sb;
  sums[2] += sg;
}

// With B == 1 (channels last, or (N, C) inputs) the channels are adjacent: one "pixel" of C channels
// at a time, vectorized across channels, the channels' numbers as arrays.
template <class Cc>
struct ChannelArrays {
  std::vector<Cc> alpha, beta, gamma, inv_gamma, lower, upper, slope_at_beta, scale, d[8];
  explicit ChannelArrays(const std::vector<Channel<Cc>>& chs) {
    for (const Channel<Cc>& ch : chs) {
      alpha.push_back(ch.alpha), beta.push_back(ch.beta), gamma.push_back(ch.gamma);
      inv_gamma.push_back(ch.inv_gamma);
      lower.push_back(ch.lower), upper.push_back(ch.upper);
      slope_at_beta.push_back(ch.slope_at_beta), scale.push_back(ch.scale);
      for (int j = 0; j < 8; ++j) d[j].push_back(ch.d[j]);
    }
  }
};

template <class Cc>
__attribute__((noinline)) void learnable_pixel_forward(const ChannelArrays<Cc>& p, const Cc* x, Cc* y, int64_t C) {
  const Cc *alpha = p.alpha.data(), *inv_gamma = p.inv_gamma.data(), *lower = p.lower.data(), *upper = p.upper.data();
  const Cc *d1 = p.d[0].data(), *d2 = p.d[1].data(), *d3 = p.d[2].data(), *d4 = p.d[3].data();
  const Cc *d5 = p.d[4].data(), *d6 = p.d[5].data(), *d7 = p.d[6].data(), *d8 = p.d[7].data();
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    const Cc t_raw = x[c] * inv_gamma[c];
    const Cc t = t_raw < lower[c] ? lower[c] : (t_raw > upper[c] ? upper[c] : t_raw);
    Cc acc = d8[c] * t + d7[c];
    acc = acc * t + d6[c];
    acc = acc * t + d5[c];
    acc = acc * t + d4[c];
    acc = acc * t + d3[c];
    acc = acc * t + d2[c];
    acc = acc * t + d1[c];
    y[c] = alpha[c] * t * acc;
  }
}

template <class Cc>
__attribute__((noinline)) void learnable_pixel_backward(const ChannelArrays<Cc>& p, const Cc* g, const Cc* x, Cc* out,
                                                        int64_t C, double* sa, double* sb, double* sg) {
  const Cc *alpha = p.alpha.data(), *beta = p.beta.data(), *inv_gamma = p.inv_gamma.data(), *lower = p.lower.data();
  const Cc *upper = p.upper.data(), *slope_at_beta = p.slope_at_beta.data(), *scale = p.scale.data();
  const Cc *d1 = p.d[0].data(), *d2 = p.d[1].data(), *d3 = p.d[2].data(), *d4 = p.d[3].data();
  const Cc *d5 = p.d[4].data(), *d6 = p.d[5].data(), *d7 = p.d[6].data(), *d8 = p.d[7].data();
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) {
    const Cc gout = g[c];
    const Cc t_raw = x[c] * inv_gamma[c];
    const Cc t = t_raw < lower[c] ? lower[c] : (t_raw > upper[c] ? upper[c] : t_raw);  // as the rows
    const bool outside = (t_raw <= lower[c]) | (t_raw >= upper[c]);
    const Cc u = beta[c] + t;
    const Cc u2 = u * u;
    const Cc u6 = u2 * u2 * u2;
    const Cc slope = u6 * (Cc(8) * u - Cc(14)) + Cc(6) * u2;
    const Cc dr = outside ? Cc(0) : slope;
    Cc acc = d8[c] * t + d7[c];
    acc = acc * t + d6[c];
    acc = acc * t + d5[c];
    acc = acc * t + d4[c];
    acc = acc * t + d3[c];
    acc = acc * t + d2[c];
    acc = acc * t + d1[c];
    const Cc dx = gout * scale[c] * dr;
    out[c] = dx;
    sa[c] += gout * t * acc;
    sb[c] += gout * alpha[c] * (dr - slope_at_beta[c]);
    sg[c] -= dx * t;
  }
}

// Rows of x viewed as (A, C, B): one channel's B adjacent elements per row (B > 1), or pixels (B == 1).
template <class T>
void learnable_forward(const void* xv, void* yv, int64_t A, int64_t C, int64_t B, const double* params, double c,
                       const double* shift, int max_threads) {
  using S = typename T::S;
  using Cc = typename T::C;
  const S* x = static_cast<const S*>(xv);
  S* y = static_cast<S*>(yv);
  const std::vector<Channel<Cc>> chs = channels<Cc>(C, params, c, HUGE_VAL, shift);
  if (B == 1 && C > 1) {
    const ChannelArrays<Cc> arrays(chs);
    parallel_chunks(A, A * C, max_threads, [&](int64_t begin, int64_t end) {
      std::vector<Cc> xb, yb;
      if (!std::is_same_v<S, Cc>) xb.resize(C), yb.resize(C);
      for (int64_t a = begin; a < end; ++a) {
        if constexpr (std::is_same_v<S, Cc>) {
          learnable_pixel_forward(arrays, x + a * C, y + a * C, C);
        } else {
          widen(x + a * C, xb.data(), C, T{});
          learnable_pixel_forward(arrays, xb.data(), yb.data(), C);
          narrow(yb.data(), y + a * C, C, T{});
        }
      }
    });
    return;
  }
  const int64_t rows = A * C;
  parallel_chunks(rows, rows * B, max_threads, [&](int64_t begin, int64_t end) {
    std::vector<Cc> xb, yb;
    if (!std::is_same_v<S, Cc>) xb.resize(B), yb.resize(B);
    for (int64_t r = begin; r < end; ++r) {
      const Channel<Cc>& ch = chs[r % C];
      if constexpr (std::is_same_v<S, Cc>) {
        learnable_row_forward(ch, x + r * B, y + r * B, B);
      } else {
        widen(x + r * B, xb.data(), B, T{});
        learnable_row_forward(ch, xb.data(), yb.data(), B);
        narrow(yb.data(), y + r * B, B, T{});
      }
    }
  });
}

// out = dL/dx; sums (3 x C, double, zeroed by the caller) += dL/dalpha, dL/dbeta, dL/dgamma per channel
template <class T>
void learnable_backward(const void* gv, const void* xv, void* ov, double* sums, int64_t A, int64_t C, int64_t B,
                        const double* params, double c, double cap, const double* shift, int max_threads) {
  using S = typename T::S;
  using Cc = typename T::C;
  const S* g = static_cast<const S*>(gv);
  const S* x = static_cast<const S*>(xv);
  S* out = static_cast<S*>(ov);
  const std::vector<Channel<Cc>> chs = channels<Cc>(C, params, c, cap, shift);
  if (B == 1 && C > 1) {
    const ChannelArrays<Cc> arrays(chs);
    // blocks of about 4096 elements, each with its own sums: a block whose sums are not finite is
    // done again (exact_element) and its sums replaced, as a row
    const int64_t pixels = C >= 4096 ? 1 : 4096 / C;
    parallel_chunks(A, A * C, max_threads, [&](int64_t begin, int64_t end) {
      std::vector<double> local(3 * C, 0.0), block(3 * C);
      std::vector<Cc> gb, xb, ob;
      if (!std::is_same_v<S, Cc>) gb.resize(C), xb.resize(C), ob.resize(C);
      for (int64_t a0 = begin; a0 < end; a0 += pixels) {
        const int64_t a1 = end - a0 < pixels ? end : a0 + pixels;
        std::fill(block.begin(), block.end(), 0.0);
        for (int64_t a = a0; a < a1; ++a) {
          if constexpr (std::is_same_v<S, Cc>) {
            learnable_pixel_backward(arrays, g + a * C, x + a * C, out + a * C, C, block.data(), block.data() + C,
                                     block.data() + 2 * C);
          } else {
            widen(g + a * C, gb.data(), C, T{});
            widen(x + a * C, xb.data(), C, T{});
            learnable_pixel_backward(arrays, gb.data(), xb.data(), ob.data(), C, block.data(), block.data() + C,
                                     block.data() + 2 * C);
            narrow(ob.data(), out + a * C, C, T{});
          }
        }
        bool finite = true;
        for (int64_t i = 0; i < 3 * C; ++i) finite &= std::isfinite(block[i]);
        if (__builtin_expect(!finite, 0)) {
          std::fill(block.begin(), block.end(), 0.0);
          for (int64_t i = a0 * C; i < a1 * C; ++i) {
            const int64_t k = i % C;
            double s[3] = {0.0, 0.0, 0.0};
            Cc dx;
            if (exact_element(chs[k], T::load(g[i]), T::load(x[i]), s, &dx)) out[i] = T::store(dx);
            block[k] += s[0], block[C + k] += s[1], block[2 * C + k] += s[2];
          }
        }
        for (int64_t i = 0; i < 3 * C; ++i) local[i] += block[i];
      }
#ifdef _OPENMP
#pragma omp critical(spocu_learnable_sums)
#endif
      for (int64_t i = 0; i < 3 * C; ++i) sums[i] += local[i];
    });
    return;
  }
  const int64_t rows = A * C;
  parallel_chunks(rows, rows * B, max_threads, [&](int64_t begin, int64_t end) {
    std::vector<double> local(3 * C, 0.0);
    std::vector<Cc> gb, xb, ob;
    if (!std::is_same_v<S, Cc>) gb.resize(B), xb.resize(B), ob.resize(B);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t k = r % C;
      double row[3] = {0.0, 0.0, 0.0};
      if constexpr (std::is_same_v<S, Cc>) {
        learnable_row_backward(chs[k], g + r * B, x + r * B, out + r * B, B, row);
      } else {
        widen(g + r * B, gb.data(), B, T{});
        widen(x + r * B, xb.data(), B, T{});
        learnable_row_backward(chs[k], gb.data(), xb.data(), ob.data(), B, row);
        narrow(ob.data(), out + r * B, B, T{});
      }
      local[k] += row[0];
      local[C + k] += row[1];
      local[2 * C + k] += row[2];
    }
#ifdef _OPENMP
#pragma omp critical(spocu_learnable_sums)
#endif
    for (int64_t i = 0; i < 3 * C; ++i) sums[i] += local[i];
  });
}


#undef SPOCU_HALF_VECTOR
#undef SPOCU_AVX512
#undef SPOCU_BF16_VECTOR
#undef SPOCU_VECTOR8
