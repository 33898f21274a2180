// SIMD variants of the float row primitives behind softmax / top-k. Per-function targets only.
#include <algorithm>
#include <cmath>
#include <limits>

#include "../quant/quant.hpp"
#include "prepost_kernels.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace pyperfcore {
namespace prepost {
namespace detail {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();

// exp(d) for d <= 0 (every caller passes x - max): n = round(d / ln 2), r = d - n ln 2 in two
// steps (Cody-Waite; 0.693359375 has 9 significant bits, so n * it is exact for |n| < 2^15),
// e^r by a degree-5 polynomial fitted here to the relative error on [-ln2/2, ln2/2] (9.1e-8),
// times 2^n. Measured against float64 over 3e6 points of [-87, 0]: at most 2 ulp, 1.6e-7
// relative. d is clamped at -104 (where 2^n underflows to 0 or a denormal), which also maps -inf
// to a finite reduction instead of -inf - -inf = NaN.
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2Hi = 0.693359375f;
constexpr float kLn2Lo = -2.12194440e-4f;
constexpr float kP1 = 9.9999970198e-01f, kP2 = 4.9999150634e-01f, kP3 = 1.6667635739e-01f,
                kP4 = 4.1897930205e-02f, kP5 = 8.2903150469e-03f;
constexpr float kExpLo = -104.f;

// ------------------------------------------------------------------ scalar (baseline x86-64)
// The scalar exp is the C library's (correctly rounded in practice); the vector ones above.
void s_widen(const void* src, int dtype, int64_t n, const float* scales, int64_t n_scales, float* dst) {
  if (dtype == 1) {
    const uint16_t* p = static_cast<const uint16_t*>(src);
    for (int64_t i = 0; i < n; ++i) dst[i] = quant::half_to_float(p[i]);
    return;
  }
  const int8_t* p = static_cast<const int8_t*>(src);
  if (n_scales == 1) {
    const float s = scales[0];
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(p[i]) * s;
  } else {
    for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<float>(p[i]) * scales[i];
  }
}
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
// The scalar sums run in double: one float accumulator over n terms would lose n * 2^-24.
float s_sum_exp(const float* x, int64_t n, float m) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(x[i] - m);
  return static_cast<float>(s);
}
float s_exp_store(const float* x, int64_t n, float m, float* out) {
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    out[i] = std::exp(x[i] - m);
    s += out[i];
  }
  return static_cast<float>(s);
}
void s_scale(float* x, int64_t n, float a) {
  for (int64_t i = 0; i < n; ++i) x[i] *= a;
}
void s_sub2(const float* x, int64_t n, float hi, float lo, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = (x[i] - hi) - lo;
}
int64_t s_next_greater(const float* x, int64_t i, int64_t n, float t) {
  for (; i < n; ++i)
    if (x[i] > t) return i;
  return n;
}
// The k-th largest of v[0..L) (1 <= k <= L <= 16) by insertion into a descending list.
float kth_of(const float* v, int L, int64_t k) {
  float top[16];
  int64_t cnt = 0;
  for (int i = 0; i < L; ++i) {
    const float x = v[i];
    if (cnt == k && !(x > top[k - 1])) continue;
    int64_t pos = cnt < k ? cnt++ : k - 1;
    while (pos > 0 && top[pos - 1] < x) {
      top[pos] = top[pos - 1];
      --pos;
    }
    top[pos] = x;
  }
  return top[k - 1];
}
TopkScan s_topk_scan(const float* x, int64_t n, int64_t k, bool want_sum, float* vals, int32_t* idx, float* exps,
                     const float*) {
  TopkScan r;
  float lanes[8];
  bool nan = false;
  for (int j = 0; j < 8; ++j) lanes[j] = kNegInf;
  for (int64_t i = 0; i < n; ++i) {
    nan |= std::isnan(x[i]);
    float& l = lanes[i & 7];
    l = x[i] > l ? x[i] : l;
  }
  float m = kNegInf;
  for (float l : lanes) m = l > m ? l : m;
  r.max = m;
  if (nan || m == kPosInf || (want_sum && m == kNegInf)) {
    r.status = nan ? kScanNan : (m == kPosInf ? kScanPosInf : kScanAllNegInf);
    return r;
  }
  const float bound = kth_of(lanes, 8, k);
  double s = 0.0;
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float e = want_sum ? std::exp(x[i] - m) : 0.f;
    s += e;
    if (x[i] >= bound) {
      vals[c] = x[i];
      exps[c] = e;
      idx[c++] = static_cast<int32_t>(i);
    }
  }
  r.sum = static_cast<float>(s);
  r.count = c;
  if (want_sum)  // the candidates' exps in double: no rounding of x - max
    for (int64_t j = 0; j < c; ++j) exps[j] = static_cast<float>(std::exp(static_cast<double>(vals[j]) - m));
  return r;
}
const RowOps kScalarOps = {8, s_widen, s_max_nan, s_sum_exp, s_exp_store, s_scale, s_sub2, s_next_greater, s_topk_scan};

#if defined(__x86_64__)
#define PFC_AVX2 __attribute__((target("avx2,fma,f16c")))
PFC_AVX2 inline __m256 a2_exp(__m256 d) {
  d = _mm256_max_ps(d, _mm256_set1_ps(kExpLo));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(d, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), d);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_fmadd_ps(_mm256_set1_ps(kP5), r, _mm256_set1_ps(kP4));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP3));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP2));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kP1));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  // 2^n in two factors, each a normal float (n >= -150 here): 2^ceil(n/2) * 2^floor(n/2).
  const __m256i ni = _mm256_cvtps_epi32(n);
  const __m256i h1 = _mm256_srai_epi32(ni, 1), h2 = _mm256_sub_epi32(ni, h1);
  const __m256 f1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h1, _mm256_set1_epi32(127)), 23));
  const __m256 f2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(h2, _mm256_set1_epi32(127)), 23));
  return _mm256_mul_ps(_mm256_mul_ps(p, f1), f2);
}
PFC_AVX2 inline float a2_hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
PFC_AVX2 inline float a2_hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
// Long rows: the vector partial sums go into a double every kFlush + 1 values, so the float
// rounding does not grow with the row length.
constexpr int64_t kFlush = 2047;
PFC_AVX2 inline void a2_flush(__m256& s0, __m256& s1, double& acc) {
  acc += a2_hsum(_mm256_add_ps(s0, s1));
  s0 = s1 = _mm256_setzero_ps();
}
PFC_AVX2 void a2_widen(const void* src, int dtype, int64_t n, const float* scales, int64_t n_scales, float* dst) {
  int64_t i = 0;
  if (dtype == 1) {
    const uint16_t* p = static_cast<const uint16_t*>(src);
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + i))));
  } else {
    const int8_t* p = static_cast<const int8_t*>(src);
    const __m256 s1 = _mm256_set1_ps(scales[0]);
    for (; i + 8 <= n; i += 8) {
      const __m256 v = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p + i))));
      _mm256_storeu_ps(dst + i, _mm256_mul_ps(v, n_scales == 1 ? s1 : _mm256_loadu_ps(scales + i)));
    }
  }
  if (i < n) s_widen(static_cast<const char*>(src) + i * (dtype == 1 ? 2 : 1), dtype, n - i, n_scales == 1 ? scales : scales + i,
                     n_scales, dst + i);
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
  const float m = a2_hmax(_mm256_max_ps(m0, m1));
  if (_mm256_movemask_ps(nan)) *bad = true;
  float r = s_max_nan(x + i, n - i, bad);
  return r > m ? r : m;
}
PFC_AVX2 float a2_sum_exp(const float* x, int64_t n, float m) {
  const __m256 mv = _mm256_set1_ps(m);
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  int64_t i = 0;
  double acc = 0.0;
  for (; i + 16 <= n; i += 16) {
    if ((i & kFlush) == 0 && i != 0) a2_flush(s0, s1, acc);
    s0 = _mm256_add_ps(s0, a2_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv)));
    s1 = _mm256_add_ps(s1, a2_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i + 8), mv)));
  }
  for (; i + 8 <= n; i += 8) s0 = _mm256_add_ps(s0, a2_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv)));
  a2_flush(s0, s1, acc);
  float s = static_cast<float>(acc);
  for (; i < n; ++i) s += _mm256_cvtss_f32(a2_exp(_mm256_set1_ps(x[i] - m)));  // same rounding as the body
  return s;
}
PFC_AVX2 float a2_exp_store(const float* x, int64_t n, float m, float* out) {
  const __m256 mv = _mm256_set1_ps(m);
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  int64_t i = 0;
  double acc = 0.0;
  for (; i + 8 <= n; i += 8) {
    if ((i & kFlush) == 0 && i != 0) a2_flush(s0, s1, acc);
    const __m256 e = a2_exp(_mm256_sub_ps(_mm256_loadu_ps(x + i), mv));
    _mm256_storeu_ps(out + i, e);
    s0 = _mm256_add_ps(s0, e);
  }
  a2_flush(s0, s1, acc);
  float s = static_cast<float>(acc);
  for (; i < n; ++i) {
    out[i] = _mm256_cvtss_f32(a2_exp(_mm256_set1_ps(x[i] - m)));
    s += out[i];
  }
  return s;
}
PFC_AVX2 void a2_scale(float* x, int64_t n, float a) {
  const __m256 av = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), av));
  s_scale(x + i, n - i, a);
}
PFC_AVX2 void a2_sub2(const float* x, int64_t n, float hi, float lo, float* out) {
  const __m256 h = _mm256_set1_ps(hi), l = _mm256_set1_ps(lo);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), h), l));
  s_sub2(x + i, n - i, hi, lo, out + i);
}
PFC_AVX2 int64_t a2_next_greater(const float* x, int64_t i, int64_t n, float t) {
  const __m256 tv = _mm256_set1_ps(t);
  for (; i + 8 <= n; i += 8) {
    int mask = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), tv, _CMP_GT_OQ));
    if (mask) return i + __builtin_ctz(static_cast<unsigned>(mask));
  }
  return s_next_greater(x, i, n, t);
}
// The k-th largest of the 8 lanes of v (1 <= k <= 8) without branches: lane j is among the top k
// when fewer than k lanes are strictly greater; the smallest such lane is the k-th largest.
PFC_AVX2 float a2_kth(__m256 v, int64_t k) {
  __m256i greater = _mm256_setzero_si256();
  for (int j = 0; j < 8; ++j) {
    const __m256 b = _mm256_permutevar8x32_ps(v, _mm256_set1_epi32(j));
    greater = _mm256_sub_epi32(greater, _mm256_castps_si256(_mm256_cmp_ps(b, v, _CMP_GT_OQ)));
  }
  const __m256 in_top = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(k)), greater));
  const __m256 cand = _mm256_blendv_ps(_mm256_set1_ps(kPosInf), v, in_top);
  __m128 s = _mm_min_ps(_mm256_castps256_ps128(cand), _mm256_extractf128_ps(cand, 1));
  s = _mm_min_ps(s, _mm_movehl_ps(s, s));
  s = _mm_min_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
PFC_AVX2 TopkScan a2_topk_scan(const float* x, int64_t n, int64_t k, bool want_sum, float* vals, int32_t* idx,
                                 float* exps, const float*) {
  TopkScan r;
  __m256 m0 = _mm256_set1_ps(kNegInf), m1 = m0, nan = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
    m0 = _mm256_max_ps(m0, a);
    m1 = _mm256_max_ps(m1, b);
  }
  bool bad = _mm256_movemask_ps(nan) != 0;
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, m0);  // the tail (< 16 values) joins lane i mod 8
  for (; i < n; ++i) {
    bad |= std::isnan(x[i]);
    float& l = lanes[i & 7];
    l = x[i] > l ? x[i] : l;
  }
  m0 = _mm256_load_ps(lanes);
  // Eight lanes of maxima over disjoint sets: the k-th largest of them is <= the k-th largest value.
  const __m256 lane_max = _mm256_max_ps(m0, m1);
  const float m = a2_hmax(lane_max);
  r.max = m;
  if (bad || m == kPosInf || (want_sum && m == kNegInf)) {
    r.status = bad ? kScanNan : (m == kPosInf ? kScanPosInf : kScanAllNegInf);
    return r;
  }
  const __m256 tv = _mm256_set1_ps(a2_kth(lane_max, k)), mv = _mm256_set1_ps(m);
  __m256 s0 = _mm256_setzero_ps(), s1 = s0, ea = s0, eb = s0;
  int64_t c = 0;
  double acc = 0.0;
  for (i = 0; i + 16 <= n; i += 16) {
    const __m256 a = _mm256_loadu_ps(x + i), b = _mm256_loadu_ps(x + i + 8);
    if (want_sum) {
      if ((i & kFlush) == 0 && i != 0) a2_flush(s0, s1, acc);
      ea = a2_exp(_mm256_sub_ps(a, mv));
      eb = a2_exp(_mm256_sub_ps(b, mv));
      s0 = _mm256_add_ps(s0, ea);
      s1 = _mm256_add_ps(s1, eb);
    }
    unsigned mask = static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(a, tv, _CMP_GE_OQ))) |
                    static_cast<unsigned>(_mm256_movemask_ps(_mm256_cmp_ps(b, tv, _CMP_GE_OQ))) << 8;
    if (mask) {
      alignas(32) float e[16];
      _mm256_store_ps(e, ea);
      _mm256_store_ps(e + 8, eb);
      do {
        const int j = __builtin_ctz(mask);
        vals[c] = x[i + j];
        exps[c] = e[j];
        idx[c++] = static_cast<int32_t>(i + j);
        mask &= mask - 1;
      } while (mask);
    }
  }
  a2_flush(s0, s1, acc);
  float s = static_cast<float>(acc);
  const float bound = _mm256_cvtss_f32(tv);
  for (; i < n; ++i) {  // the tail through the same vector exp, so every element rounds alike
    float e = 0.f;
    if (want_sum) {
      e = _mm256_cvtss_f32(a2_exp(_mm256_set1_ps(x[i] - m)));
      s += e;
    }
    if (x[i] >= bound) {
      vals[c] = x[i];
      exps[c] = e;
      idx[c++] = static_cast<int32_t>(i);
    }
  }
  r.sum = s;
  r.count = c;
  if (want_sum) {  // the candidates' exps again, with x - max's rounding error put back (TwoSum)
    const __m256 nm = _mm256_set1_ps(-m);
    for (int64_t j = 0; j < c; j += 8) {
      alignas(32) float v8[8] = {0, 0, 0, 0, 0, 0, 0, 0}, e8[8];
      const int64_t w = c - j < 8 ? c - j : 8;
      for (int64_t q = 0; q < w; ++q) v8[q] = vals[j + q];
      const __m256 v = _mm256_load_ps(v8);
      const __m256 d = _mm256_add_ps(v, nm), bb = _mm256_sub_ps(d, v);
      __m256 err = _mm256_add_ps(_mm256_sub_ps(v, _mm256_sub_ps(d, bb)), _mm256_sub_ps(nm, bb));
      err = _mm256_and_ps(err, _mm256_cmp_ps(err, err, _CMP_ORD_Q));  // -inf candidates: NaN -> 0
      const __m256 e = a2_exp(d);
      _mm256_store_ps(e8, _mm256_fmadd_ps(e, err, e));
      for (int64_t q = 0; q < w; ++q) exps[j + q] = e8[q];
    }
  }
  return r;
}
const RowOps kAvx2Ops = {8, a2_widen, a2_max_nan, a2_sum_exp, a2_exp_store, a2_scale, a2_sub2, a2_next_greater, a2_topk_scan};

#define PFC_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
PFC_AVX512 inline __m512 a5_exp(__m512 d) {
  d = _mm512_max_ps(d, _mm512_set1_ps(kExpLo));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(d, _mm512_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Hi), d);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(kLn2Lo), r);
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(kP5), r, _mm512_set1_ps(kP4));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP3));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP2));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(kP1));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);  // p * 2^n, gradual underflow to 0
}
// exp(d) for the terms of a sum (d <= 0): t = d * log2(e), e = 2^frac(t) * 2^floor(t), the
// fraction by vreduceps (exact) and the scaling by vscalefps (which floors t itself): 10
// operations instead of a5_exp's 14, measured 17% faster alone. t's rounding adds |t| * 2^-24 of
// relative error, which only matters where 2^t is tiny, so the sum keeps about 2e-7 (polynomial
// fitted here on [0, 1): 8.2e-8, float evaluation 1.5e-7); the values that become probabilities
// are recomputed with a5_exp. Finite d of any size gives 0 where exp(d) underflows (frac = 0,
// then 2^floor(t) = 0); -inf may give NaN, which the caller detects and redoes with the clamp.
constexpr float kQ1 = 6.9315129519e-01f, kQ2 = 2.4016444385e-01f, kQ3 = 5.5799912661e-02f, kQ4 = 9.0170297772e-03f,
                kQ5 = 1.8671303988e-03f;
template <bool kClamp>
PFC_AVX512 inline __m512 a5_exp2_term(__m512 t) {
  if (kClamp) t = _mm512_max_ps(t, _mm512_set1_ps(-150.f));
  const __m512 f = _mm512_reduce_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);  // t - floor(t), exact
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(kQ5), f, _mm512_set1_ps(kQ4));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kQ3));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kQ2));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kQ1));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, t);
}
template <bool kClamp>
PFC_AVX512 inline __m512 a5_exp_term(__m512 d) {
  __m512 t = _mm512_mul_ps(d, _mm512_set1_ps(kLog2e));
  if (kClamp) t = _mm512_max_ps(t, _mm512_set1_ps(-150.f));
  const __m512 f = _mm512_reduce_ps(t, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);  // t - floor(t), exact
  __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(kQ5), f, _mm512_set1_ps(kQ4));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kQ3));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kQ2));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(kQ1));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, t);
}
PFC_AVX512 inline void a5_flush(__m512& s0, __m512& s1, double& acc) {
  acc += _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
  s0 = s1 = _mm512_setzero_ps();
}
inline __mmask16 tail(int64_t k) { return static_cast<__mmask16>((1u << k) - 1u); }
PFC_AVX512 void a5_widen(const void* src, int dtype, int64_t n, const float* scales, int64_t n_scales, float* dst) {
  if (dtype == 1) {
    const uint16_t* p = static_cast<const uint16_t*>(src);
    for (int64_t i = 0; i < n; i += 16) {
      const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail(n - i);
      _mm512_mask_storeu_ps(dst + i, k, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(k, p + i)));
    }
    return;
  }
  const int8_t* p = static_cast<const int8_t*>(src);
  const __m512 s1 = _mm512_set1_ps(scales[0]);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail(n - i);
    const __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(k, p + i)));
    _mm512_mask_storeu_ps(dst + i, k, _mm512_mul_ps(v, n_scales == 1 ? s1 : _mm512_maskz_loadu_ps(k, scales + i)));
  }
}
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
// The sum behind log_softmax's lse and the wide-k top-k: terms by a5_exp_term (the sum keeps
// about 2e-7); rows with -inf are summed again with the clamp.
template <bool kClamp>
PFC_AVX512 float a5_sum_terms(const float* x, int64_t n, __m512 mv) {
  __m512 s0 = _mm512_setzero_ps(), s1 = s0;
  int64_t i = 0;
  double acc = 0.0;
  for (; i + 32 <= n; i += 32) {
    if ((i & kFlush) == 0 && i != 0) a5_flush(s0, s1, acc);
    s0 = _mm512_add_ps(s0, a5_exp_term<kClamp>(_mm512_sub_ps(_mm512_loadu_ps(x + i), mv)));
    s1 = _mm512_add_ps(s1, a5_exp_term<kClamp>(_mm512_sub_ps(_mm512_loadu_ps(x + i + 16), mv)));
  }
  for (; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail(n - i);
    s0 = _mm512_add_ps(s0, _mm512_maskz_mov_ps(k, a5_exp_term<kClamp>(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), mv))));
  }
  a5_flush(s0, s1, acc);
  return static_cast<float>(acc);
}
PFC_AVX512 float a5_sum_exp(const float* x, int64_t n, float m) {
  const float s = a5_sum_terms<false>(x, n, _mm512_set1_ps(m));
  return std::isfinite(s) ? s : a5_sum_terms<true>(x, n, _mm512_set1_ps(m));
}
PFC_AVX512 float a5_exp_store(const float* x, int64_t n, float m, float* out) {
  const __m512 mv = _mm512_set1_ps(m);
  __m512 s0 = _mm512_setzero_ps(), s1 = s0;
  double acc = 0.0;
  for (int64_t i = 0; i < n; i += 16) {
    if ((i & kFlush) == 0 && i != 0) a5_flush(s0, s1, acc);
    const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail(n - i);
    const __m512 e = _mm512_maskz_mov_ps(k, a5_exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), mv)));
    _mm512_mask_storeu_ps(out + i, k, e);
    s0 = _mm512_add_ps(s0, e);
  }
  a5_flush(s0, s1, acc);
  return static_cast<float>(acc);
}
PFC_AVX512 void a5_scale(float* x, int64_t n, float a) {
  const __m512 av = _mm512_set1_ps(a);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail(n - i);
    _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), av));
  }
}
PFC_AVX512 void a5_sub2(const float* x, int64_t n, float hi, float lo, float* out) {
  const __m512 h = _mm512_set1_ps(hi), l = _mm512_set1_ps(lo);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail(n - i);
    _mm512_mask_storeu_ps(out + i, k, _mm512_sub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), h), l));
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
// The k-th largest of the 16 lanes of v (1 <= k <= 16) without branches: lane j is among the
// top k when fewer than k lanes are strictly greater; the smallest such lane is the k-th largest.
PFC_AVX512 float a5_kth(__m512 v, int64_t k) {
  // Broadcasts from memory run on the load ports, leaving the shuffle port to the compares.
  alignas(64) float lane[16];
  _mm512_store_ps(lane, v);
  __m512i g0 = _mm512_setzero_si512(), g1 = g0;
  const __m512i one = _mm512_set1_epi32(1);
  for (int j = 0; j < 16; j += 2) {
    g0 = _mm512_mask_add_epi32(g0, _mm512_cmp_ps_mask(_mm512_set1_ps(lane[j]), v, _CMP_GT_OQ), g0, one);
    g1 = _mm512_mask_add_epi32(g1, _mm512_cmp_ps_mask(_mm512_set1_ps(lane[j + 1]), v, _CMP_GT_OQ), g1, one);
  }
  const __m512i greater = _mm512_add_epi32(g0, g1);
  const __mmask16 in_top = _mm512_cmplt_epi32_mask(greater, _mm512_set1_epi32(static_cast<int>(k)));
  return _mm512_mask_reduce_min_ps(in_top, v);
}
// Pass 2 of a5_topk_scan (the row is in L1 now): the exp sum and, in the same loop, the values
// >= t with their indices, compressed in registers (all 16 lanes stored; the buffers have spare
// slots: the memory form of vcompress is microcoded and slow on several CPUs). Only about k + 1
// values pass for typical logits, so the branch around the compress is nearly never taken.
template <bool kSum, bool kClamp, bool kLong>
PFC_AVX512 int64_t a5_pass2_rows(const float* x, int64_t n, __m512 tv, __m512 mv, float* vals, int32_t* idx,
                                 const float* next, float* sum) {
  const __m512i step = _mm512_set1_epi32(16);
  __m512i iv = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512 s0 = _mm512_setzero_ps(), s1 = s0;
  int64_t c = 0, i = 0;
  // t = x log2(e) - cm in one FMA, cm = fl(m log2(e)): the terms are 2^((x - m) log2(e)) times
  // the common factor 2^(m log2(e) - cm), which is divided out in double below.
  const float m = _mm512_cvtss_f32(mv);
  const float cm = m * kLog2e;
  const __m512 l2e = _mm512_set1_ps(kLog2e), nc = _mm512_set1_ps(-cm);
  double acc = 0.0;
  while (i + 32 <= n) {  // blocks of kFlush + 1 values, each sum flushed into acc
    const int64_t end = kLong ? std::min<int64_t>(n, i + kFlush + 1) : n;
    for (; i + 32 <= end; i += 32) {
      const __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
      if (next != nullptr) {  // the next row into L1 while this one is computed
        _mm_prefetch(reinterpret_cast<const char*>(next + i), _MM_HINT_T0);
        _mm_prefetch(reinterpret_cast<const char*>(next + i + 16), _MM_HINT_T0);
      }
      if (kSum) {
        s0 = _mm512_add_ps(s0, a5_exp2_term<kClamp>(_mm512_fmadd_ps(a, l2e, nc)));
        s1 = _mm512_add_ps(s1, a5_exp2_term<kClamp>(_mm512_fmadd_ps(b, l2e, nc)));
      }
      const __mmask16 ha = _mm512_cmp_ps_mask(a, tv, _CMP_GE_OQ), hb = _mm512_cmp_ps_mask(b, tv, _CMP_GE_OQ);
      if (ha | hb) {
        _mm512_storeu_ps(vals + c, _mm512_maskz_compress_ps(ha, a));
        _mm512_storeu_si512(idx + c, _mm512_maskz_compress_epi32(ha, iv));
        c += __builtin_popcount(static_cast<unsigned>(ha));
        _mm512_storeu_ps(vals + c, _mm512_maskz_compress_ps(hb, b));
        _mm512_storeu_si512(idx + c, _mm512_maskz_compress_epi32(hb, _mm512_add_epi32(iv, step)));
        c += __builtin_popcount(static_cast<unsigned>(hb));
      }
      iv = _mm512_add_epi32(iv, _mm512_add_epi32(step, step));
    }
    if (kSum && kLong) a5_flush(s0, s1, acc);
  }
  for (; i < n; i += 16, iv = _mm512_add_epi32(iv, step)) {
    const __mmask16 t = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail(n - i);
    const __m512 a = _mm512_maskz_loadu_ps(t, x + i);
    if (kSum) s0 = _mm512_add_ps(s0, _mm512_maskz_mov_ps(t, a5_exp2_term<kClamp>(_mm512_fmadd_ps(a, l2e, nc))));
    const __mmask16 ha = _mm512_mask_cmp_ps_mask(t, a, tv, _CMP_GE_OQ);
    _mm512_storeu_ps(vals + c, _mm512_maskz_compress_ps(ha, a));
    _mm512_storeu_si512(idx + c, _mm512_maskz_compress_epi32(ha, iv));
    c += __builtin_popcount(static_cast<unsigned>(ha));
  }
  if (kSum) {
    const double shift = static_cast<double>(m) * static_cast<double>(kLog2e) - static_cast<double>(cm);  // exact
    a5_flush(s0, s1, acc);
    *sum = static_cast<float>(acc * std::exp2(-shift));
  } else {
    *sum = 0.f;
  }
  return c;
}
// Rows longer than one flush block take the blocked loop; the others skip its bookkeeping
// (measured 3% of the call at 1000 classes).
template <bool kSum, bool kClamp>
PFC_AVX512 int64_t a5_pass2(const float* x, int64_t n, __m512 tv, __m512 mv, float* vals, int32_t* idx,
                            const float* next, float* sum) {
  if (n > kFlush + 1) return a5_pass2_rows<kSum, kClamp, true>(x, n, tv, mv, vals, idx, next, sum);
  return a5_pass2_rows<kSum, kClamp, false>(x, n, tv, mv, vals, idx, next, sum);
}
// argmax (k = 1 without the sum) in one pass: per lane the maximum and the index where it first
// appeared (strict > keeps the first), then the smallest index among the lanes holding the row's
// maximum: numpy's first-occurrence rule.
PFC_AVX512 TopkScan a5_argmax(const float* x, int64_t n, float* vals, int32_t* idx) {
  TopkScan r;
  const __m512i step = _mm512_set1_epi32(16);
  __m512i iv = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512 m0 = _mm512_set1_ps(kNegInf), m1 = m0;
  __m512i i0 = _mm512_setzero_si512(), i1 = _mm512_set1_epi32(16);
  __mmask16 nan = 0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
    nan |= _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q);
    const __mmask16 ga = _mm512_cmp_ps_mask(a, m0, _CMP_GT_OQ), gb = _mm512_cmp_ps_mask(b, m1, _CMP_GT_OQ);
    m0 = _mm512_mask_mov_ps(m0, ga, a);
    m1 = _mm512_mask_mov_ps(m1, gb, b);
    i0 = _mm512_mask_mov_epi32(i0, ga, iv);
    i1 = _mm512_mask_mov_epi32(i1, gb, _mm512_add_epi32(iv, step));
    iv = _mm512_add_epi32(iv, _mm512_add_epi32(step, step));
  }
  for (; i < n; i += 16, iv = _mm512_add_epi32(iv, step)) {
    const __mmask16 t = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail(n - i);
    const __m512 a = _mm512_mask_loadu_ps(_mm512_set1_ps(kNegInf), t, x + i);
    nan |= _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    const __mmask16 ga = _mm512_cmp_ps_mask(a, m0, _CMP_GT_OQ);
    m0 = _mm512_mask_mov_ps(m0, ga, a);
    i0 = _mm512_mask_mov_epi32(i0, ga, iv);
  }
  // Lanes of m0 and m1 merged: the larger value, on equal values the smaller index.
  const __mmask16 take1 = _mm512_cmp_ps_mask(m1, m0, _CMP_GT_OQ) |
                          (_mm512_cmp_ps_mask(m1, m0, _CMP_EQ_OQ) & _mm512_cmp_epi32_mask(i1, i0, _MM_CMPINT_LT));
  const __m512 mv = _mm512_mask_mov_ps(m0, take1, m1);
  const __m512i ix = _mm512_mask_mov_epi32(i0, take1, i1);
  const float m = _mm512_reduce_max_ps(mv);
  r.max = m;
  if (nan || m == kPosInf) {
    r.status = nan ? kScanNan : kScanPosInf;
    return r;
  }
  // A row of -inf updates no lane: every lane holds -inf with index 0 or 16, and 0 (a -inf of the
  // row) wins, as in numpy. Otherwise only lanes that were updated can hold the maximum.
  const __mmask16 at = _mm512_cmp_ps_mask(mv, _mm512_set1_ps(m), _CMP_EQ_OQ);
  const __m512i cand = _mm512_mask_mov_epi32(_mm512_set1_epi32(INT32_MAX), at, ix);
  vals[0] = m;
  idx[0] = _mm512_reduce_min_epi32(cand);
  r.count = 1;
  return r;
}
// Pass 1: 32 lane maxima and the NaN flag; then pass 2 above with the bound; then the accurate
// exps of the candidates.
PFC_AVX512 TopkScan a5_topk_scan(const float* x, int64_t n, int64_t k, bool want_sum, float* vals, int32_t* idx,
                                  float* exps, const float* next) {
  if (k == 1 && !want_sum) return a5_argmax(x, n, vals, idx);
  TopkScan r;
  // Four independent maxima: with two, the 4-cycle latency of vmaxps bounded this pass.
  __m512 m0 = _mm512_set1_ps(kNegInf), m1 = m0, m2 = m0, m3 = m0;
  __mmask16 nan = 0;
  int64_t i = 0;
  for (; i + 64 <= n; i += 64) {
    const __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
    const __m512 c = _mm512_loadu_ps(x + i + 32), d = _mm512_loadu_ps(x + i + 48);
    nan |= static_cast<__mmask16>(_mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q) | _mm512_cmp_ps_mask(c, d, _CMP_UNORD_Q));
    m0 = _mm512_max_ps(m0, a);
    m1 = _mm512_max_ps(m1, b);
    m2 = _mm512_max_ps(m2, c);
    m3 = _mm512_max_ps(m3, d);
  }
  m0 = _mm512_max_ps(m0, m2);
  m1 = _mm512_max_ps(m1, m3);
  for (; i + 32 <= n; i += 32) {
    const __m512 a = _mm512_loadu_ps(x + i), b = _mm512_loadu_ps(x + i + 16);
    nan |= _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q);
    m0 = _mm512_max_ps(m0, a);
    m1 = _mm512_max_ps(m1, b);
  }
  for (; i < n; i += 16) {
    const __mmask16 t = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail(n - i);
    const __m512 a = _mm512_mask_loadu_ps(_mm512_set1_ps(kNegInf), t, x + i);
    nan |= _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
    m1 = _mm512_max_ps(m1, a);
  }
  const __m512 lane_max = _mm512_max_ps(m0, m1);
  const float m = _mm512_reduce_max_ps(lane_max);
  r.max = m;
  if (nan || m == kPosInf || (want_sum && m == kNegInf)) {
    r.status = nan ? kScanNan : (m == kPosInf ? kScanPosInf : kScanAllNegInf);
    return r;
  }
  // Sixteen maxima over disjoint sets: the k-th largest of them is <= the k-th largest value.
  const __m512 tv = _mm512_set1_ps(k == 1 ? m : a5_kth(lane_max, k)), mv = _mm512_set1_ps(m);
  if (!want_sum) {
    r.count = a5_pass2<false, false>(x, n, tv, mv, vals, idx, next, &r.sum);
    return r;
  }
  r.count = a5_pass2<true, false>(x, n, tv, mv, vals, idx, next, &r.sum);
  if (!std::isfinite(r.sum))  // -inf logits: again with the clamp
    r.count = a5_pass2<true, true>(x, n, tv, mv, vals, idx, nullptr, &r.sum);
  // exp(x - max) of the candidates with x - max's rounding error put back (TwoSum: the error e
  // of d = fl(x - max) is exact, and exp(d + e) = exp(d) * (1 + e)), so a probability far below
  // the top one keeps its few ulp instead of |x - max| * 2^-24.
  const __m512 nm = _mm512_set1_ps(-m);
  for (int64_t j = 0; j < r.count; j += 16) {
    const __mmask16 t = r.count - j >= 16 ? static_cast<__mmask16>(0xFFFF) : tail(r.count - j);
    const __m512 v = _mm512_maskz_loadu_ps(t, vals + j);
    const __m512 d = _mm512_add_ps(v, nm), bb = _mm512_sub_ps(d, v);
    __m512 err = _mm512_add_ps(_mm512_sub_ps(v, _mm512_sub_ps(d, bb)), _mm512_sub_ps(nm, bb));
    err = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(err, err, _CMP_ORD_Q), err);  // -inf candidates: NaN -> 0
    const __m512 e = a5_exp(d);
    _mm512_mask_storeu_ps(exps + j, t, _mm512_fmadd_ps(e, err, e));
  }
  return r;
}
const RowOps kAvx512Ops = {16, a5_widen, a5_max_nan, a5_sum_exp, a5_exp_store, a5_scale, a5_sub2, a5_next_greater, a5_topk_scan};
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
