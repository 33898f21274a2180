// SIMD variants of the float row primitives behind softmax / top-k. Per-function targets only.
#include <cmath>
#include <limits>

#include "prepost_kernels.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace pyperfcore {
namespace prepost {
namespace detail {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

float s_max_nan(const float* x, int64_t n, bool* bad) {
  float m = kNegInf;
  bool b = false;
  for (int64_t i = 0; i < n; ++i) {
    b |= std::isnan(x[i]);
    m = x[i] > m ? x[i] : m;
  }
  if (b) *bad = true;
  return m;
}
float s_sum_exp(const float* x, int64_t n, float m) {
  float s = 0.f;
  for (int64_t i = 0; i < n; ++i) s += std::exp(x[i] - m);
  return s;
}
void s_exp_scale(const float* x, int64_t n, float m, float mul, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = std::exp(x[i] - m) * mul;
}
int64_t s_next_greater(const float* x, int64_t i, int64_t n, float t) {
  for (; i < n; ++i)
    if (x[i] > t) return i;
  return n;
}

int s_lane_max(const float* x, int64_t n, bool* bad, float* lanes) {
  bool b = false;
  for (int j = 0; j < 8; ++j) lanes[j] = kNegInf;
  for (int64_t i = 0; i < n; ++i) {
    b |= std::isnan(x[i]);
    float& l = lanes[i & 7];
    l = x[i] > l ? x[i] : l;
  }
  if (b) *bad = true;
  return 8;
}
int64_t s_collect_ge(const float* x, int64_t n, float t, float* vals, int32_t* idx) {
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i)
    if (x[i] >= t) {
      vals[c] = x[i];
      idx[c++] = static_cast<int32_t>(i);
    }
  return c;
}
const RowOps kScalarOps = {s_max_nan, s_sum_exp, s_exp_scale, s_next_greater, s_lane_max, s_collect_ge};

#if defined(__x86_64__)
// exp(x) for x <= 0 (the softmax case) and any finite x, Cephes' expf polynomial after
// reduction by ln 2; about 1 ulp. Inputs below -87.3 (and -inf) give exactly 0.
#define PFC_AVX2 __attribute__((target("avx2,fma")))
PFC_AVX2 inline __m256 a2_exp(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3f);
  const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500E-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073E-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894E-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459E-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201E-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_andnot_ps(under, _mm256_mul_ps(p, _mm256_castsi256_ps(e)));
}
PFC_AVX2 inline float a2_hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
PFC_AVX2 float a2_max_nan(const float* x, int64_t n, bool* bad) {
  __m256 m0 = _mm256_set1_ps(kNegInf), m1 = m0, nan = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
    m0 = _mm256_max_ps(m0, a);
    m1 = _mm256_max_ps(m1, b);
  }
  m0 = _mm256_max_ps(m0, m1);
  alignas(32) float t[8];
  _mm256_store_ps(t, m0);
  float m = kNegInf;
  for (float v : t) m = v > m ? v : m;
  if (_mm256_movemask_ps(nan)) *bad = true;
  float r = s_max_nan(x + i, n - i, bad);
  return r > m ? r : m;
}
PFC_AVX2 float a2_sum_exp(const float* x, int64_t n, float m) {
  const __m256 mv = _mm256_set1_ps(m);
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    s0 = _mm256_add_ps(s0, a2_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv)));
    s1 = _mm256_add_ps(s1, a2_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), mv)));
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_add_ps(s0, a2_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv)));
  return a2_hsum(_mm256_add_ps(s0, s1)) + s_sum_exp(x + i, n - i, m);
}
PFC_AVX2 void a2_exp_scale(const float* x, int64_t n, float m, float mul, float* out) {
  const __m256 mv = _mm256_set1_ps(m), k = _mm256_set1_ps(mul);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(a2_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv)), k));
  s_exp_scale(x + i, n - i, m, mul, out + i);
}
PFC_AVX2 int64_t a2_next_greater(const float* x, int64_t i, int64_t n, float t) {
  const __m256 tv = _mm256_set1_ps(t);
  for (; i + 8 <= n; i += 8) {
    int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), tv, _CMP_GT_OQ));
    if (mask) return i + __builtin_ctz(static_cast<unsigned>(mask));
  }
  return s_next_greater(x, i, n, t);
}
PFC_AVX2 int a2_lane_max(const float* x, int64_t n, bool* bad, float* lanes) {
  __m256 m0 = _mm256_set1_ps(kNegInf), m1 = m0, nan = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
    m0 = _mm256_max_ps(m0, a);
    m1 = _mm256_max_ps(m1, b);
  }
  _mm256_storeu_ps(lanes, m0);
  _mm256_storeu_ps(lanes + 8, m1);
  if (_mm256_movemask_ps(nan)) *bad = true;
  for (; i < n; ++i) {  // the tail into lanes by position
    if (std::isnan(x[i])) *bad = true;
    float& l = lanes[i & 15];
    l = x[i] > l ? x[i] : l;
  }
  return 16;
}
PFC_AVX2 int64_t a2_collect_ge(const float* x, int64_t n, float t, float* vals, int32_t* idx) {
  const __m256 tv = _mm256_set1_ps(t);
  int64_t c = 0, i = 0;
  for (; i + 8 <= n; i += 8) {
    unsigned mask = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), tv, _CMP_GE_OQ)));
    while (mask) {
      const int j = __builtin_ctz(mask);
      vals[c] = x[i + j];
      idx[c++] = static_cast<int32_t>(i + j);
      mask &= mask - 1;
    }
  }
  for (; i < n; ++i)
    if (x[i] >= t) {
      vals[c] = x[i];
      idx[c++] = static_cast<int32_t>(i);
    }
  return c;
}
const RowOps kAvx2Ops = {a2_max_nan, a2_sum_exp, a2_exp_scale, a2_next_greater, a2_lane_max, a2_collect_ge};

#define PFC_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")))
PFC_AVX512 inline __m512 a5_exp(__m512 x) {
  const __m512 lo = _mm512_set1_ps(-87.3f);
  const __mmask16 keep = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ);
  x = _mm512_min_ps(x, _mm512_set1_ps(88.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500E-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073E-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894E-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459E-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201E-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.f)));
  return _mm512_maskz_scalef_ps(keep, p, n);
}
inline __mmask16 tail(int64_t k) { return static_cast<__mmask16>((1u << k) - 1u); }
PFC_AVX512 float a5_max_nan(const float* x, int64_t n, bool* bad) {
  __m512 m0 = _mm512_set1_ps(kNegInf), m1 = m0;
  __mmask16 nan = 0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
    nan |= _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q);
    m0 = _mm512_max_ps(m0, a);
    m1 = _mm512_max_ps(m1, b);
  }
  for (; i < n; i += 16) {
    __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail(n - i);
    __m512 a = _mm512_mask_loadu_ps(_mm512_set1_ps(kNegInf), k, x + i);
    nan |= _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    m0 = _mm512_max_ps(m0, a);
  }
  if (nan) *bad = true;
  return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}
PFC_AVX512 float a5_sum_exp(const float* x, int64_t n, float m) {
  const __m512 mv = _mm512_set1_ps(m);
  __m512 s0 = _mm512_setzero_ps(), s1 = s0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_add_ps(s0, a5_exp(_mm512_sub_ps(_mm512_loadu_ps(x + i), mv)));
    s1 = _mm512_add_ps(s1, a5_exp(_mm512_sub_ps(_mm512_loadu_ps(x + i + 16), mv)));
  }
  for (; i < n; i += 16) {
    __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail(n - i);
    s0 = _mm512_add_ps(s0, _mm512_maskz_mov_ps(k, a5_exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), mv))));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}
PFC_AVX512 void a5_exp_scale(const float* x, int64_t n, float m, float mul, float* out) {
  const __m512 mv = _mm512_set1_ps(m), k = _mm512_set1_ps(mul);
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 t = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail(n - i);
    _mm512_mask_storeu_ps(out + i, t, _mm512_mul_ps(a5_exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(t, x + i), mv)), k));
  }
}
PFC_AVX512 int64_t a5_next_greater(const float* x, int64_t i, int64_t n, float t) {
  const __m512 tv = _mm512_set1_ps(t);
  for (; i + 32 <= n; i += 32) {
    __mmask16 a = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i), tv, _CMP_GT_OQ);
    __mmask16 b = _mm512_cmp_ps_mask(_mm512_loadu_ps(x + i + 16), tv, _CMP_GT_OQ);
    if (a | b) return a ? i + __builtin_ctz(a) : i + 16 + __builtin_ctz(b);
  }
  for (; i < n; i += 16) {
    __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail(n - i);
    __mmask16 a = _mm512_mask_cmp_ps_mask(k, _mm512_maskz_loadu_ps(k, x + i), tv, _CMP_GT_OQ);
    if (a) return i + __builtin_ctz(a);
  }
  return n;
}
PFC_AVX512 int a5_lane_max(const float* x, int64_t n, bool* bad, float* lanes) {
  __m512 m0 = _mm512_set1_ps(kNegInf), m1 = m0;
  __mmask16 nan = 0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
    nan |= _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q);
    m0 = _mm512_max_ps(m0, a);
    m1 = _mm512_max_ps(m1, b);
  }
  for (; i < n; i += 16) {
    __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail(n - i);
    __m512 a = _mm512_mask_loadu_ps(_mm512_set1_ps(kNegInf), k, x + i);
    nan |= _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    m0 = _mm512_max_ps(m0, a);
  }
  if (nan) *bad = true;
  _mm512_storeu_ps(lanes, m0);
  _mm512_storeu_ps(lanes + 16, m1);
  return 32;
}
PFC_AVX512 int64_t a5_collect_ge(const float* x, int64_t n, float t, float* vals, int32_t* idx) {
  const __m512 tv = _mm512_set1_ps(t);
  const __m512i step = _mm512_set1_epi32(16);
  __m512i iv = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int64_t c = 0;
  for (int64_t i = 0; i < n; i += 16, iv = _mm512_add_epi32(iv, step)) {
    const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail(n - i);
    const __m512 v = _mm512_maskz_loadu_ps(k, x + i);
    const __mmask16 hit = _mm512_mask_cmp_ps_mask(k, v, tv, _CMP_GE_OQ);
    if (hit) {
      // Compress in registers and store all 16 lanes (the buffers have 16 spare slots): the
      // memory form of vcompress is microcoded and slow on several CPUs.
      _mm512_storeu_ps(vals + c, _mm512_maskz_compress_ps(hit, v));
      _mm512_storeu_si512(idx + c, _mm512_maskz_compress_epi32(hit, iv));
      c += __builtin_popcount(static_cast<unsigned>(hit));
    }
  }
  return c;
}
const RowOps kAvx512Ops = {a5_max_nan, a5_sum_exp, a5_exp_scale, a5_next_greater, a5_lane_max, a5_collect_ge};
#endif

}  // namespace

const RowOps& row_ops(CpuTarget t) {
#if defined(__x86_64__)
  if (t >= CpuTarget::avx512) return kAvx512Ops;
  if (t >= CpuTarget::avx2) return kAvx2Ops;
#endif
  return kScalarOps;
}

}  // namespace detail
}  // namespace prepost
}  // namespace pyperfcore
