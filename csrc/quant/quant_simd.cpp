// SIMD variants of the quantize row kernels. Each function carries its own target attribute;
// nothing in this file is compiled for a whole-file ISA, so the binary runs on any x86-64.
#include <cfloat>
#include <cmath>
#include <cstring>

#include "quant.hpp"
#include "quant_kernels.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace pyperfcore {
namespace quant {
namespace detail {

// ---------------------------------------------------------------- scalar (always built)
namespace {
inline float ld(const float* p) { return *p; }
inline float ld(const uint16_t* p) { return half_to_float(*p); }

// Round half to even of the float32 quotient, clipped to [-127, 127]. Bounds are integers, so
// clipping before rounding gives the same result as clipping after.
inline int8_t q_one(float x, float scale) {
  float v = x / scale;
  v = v < -127.f ? -127.f : (v > 127.f ? 127.f : v);
  return static_cast<int8_t>(std::nearbyint(v));
}

template <class T>
float s_amax(const T* p, int64_t n, bool* bad) {
  float m = 0.f;
  bool b = false;
  for (int64_t i = 0; i < n; ++i) {
    float a = std::fabs(ld(p + i));
    b |= !(a <= FLT_MAX);
    m = a > m ? a : m;
  }
  if (b) *bad = true;
  return m;
}
template <class T>
void s_amax_acc(const T* p, int64_t n, float* acc, bool* bad) {
  bool b = false;
  for (int64_t i = 0; i < n; ++i) {
    float a = std::fabs(ld(p + i));
    b |= !(a <= FLT_MAX);
    acc[i] = a > acc[i] ? a : acc[i];
  }
  if (b) *bad = true;
}
template <class T>
void s_quant(const T* p, int64_t n, float scale, int8_t* q) {
  for (int64_t i = 0; i < n; ++i) q[i] = q_one(ld(p + i), scale);
}
template <class T>
void s_quant_vec(const T* p, int64_t n, const float* scales, int8_t* q) {
  for (int64_t i = 0; i < n; ++i) q[i] = q_one(ld(p + i), scales[i]);
}
void s_dequant(const int8_t* q, int64_t n, float scale, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(q[i]) * scale;
}
void s_dequant_vec(const int8_t* q, int64_t n, const float* scales, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<float>(q[i]) * scales[i];
}
}  // namespace

const RowKernels kScalar = {s_amax<float>,      s_amax<uint16_t>,      s_amax_acc<float>, s_amax_acc<uint16_t>,
                            s_quant<float>,     s_quant<uint16_t>,     s_quant_vec<float>, s_quant_vec<uint16_t>,
                            s_dequant,          s_dequant_vec};

#if defined(__x86_64__)
// ---------------------------------------------------------------- AVX2 + FMA + F16C
#define PFC_AVX2 __attribute__((target("avx2,fma,f16c")))
namespace {
PFC_AVX2 inline __m256 l8(const float* p) { return _mm256_loadu_ps(p); }
PFC_AVX2 inline __m256 l8(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
PFC_AVX2 inline __m256 abs8(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.f), v); }
PFC_AVX2 inline void store8_i8(int8_t* q, __m256 v) {
  const __m256 lo = _mm256_set1_ps(-127.f), hi = _mm256_set1_ps(127.f);
  __m256i r = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));  // MXCSR: nearest-even
  __m256i w = _mm256_packs_epi32(r, r);
  __m256i b = _mm256_packs_epi16(w, w);
  __m128i x = _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(q), x);
}

// x / s rounded half to even without a division per element: y = x * inv (inv within 2^-23 of
// 1/s) is within 2^-15 of the IEEE quotient for |x / s| <= 128, so rint(y) equals rint of the
// IEEE quotient unless y lies within 2^-14 of a half-integer; those rare lanes are redone with
// the exact division. Results are bit-identical to dividing every element.
PFC_AVX2 inline __m256 quot8(__m256 x, __m256 inv, __m256 s) {
  const __m256 lo = _mm256_set1_ps(-127.f), hi = _mm256_set1_ps(127.f);
  __m256 y = _mm256_min_ps(_mm256_max_ps(_mm256_mul_ps(x, inv), lo), hi);
  __m256 r = _mm256_round_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 d = _mm256_andnot_ps(_mm256_set1_ps(-0.f), _mm256_sub_ps(y, r));
  __m256 near = _mm256_cmp_ps(d, _mm256_set1_ps(0.5f - 0x1p-14f), _CMP_GT_OQ);
  if (_mm256_movemask_ps(near)) y = _mm256_blendv_ps(y, _mm256_div_ps(x, s), near);
  return y;
}
PFC_AVX2 inline __m256 recip8(__m256 s) {  // one Newton step on rcp: relative error < 2^-23
  __m256 r0 = _mm256_rcp_ps(s);
  __m256 r1 = _mm256_fmadd_ps(r0, _mm256_fnmadd_ps(s, r0, _mm256_set1_ps(1.f)), r0);
  return _mm256_fmadd_ps(r1, _mm256_fnmadd_ps(s, r1, _mm256_set1_ps(1.f)), r1);
}

template <class T>
PFC_AVX2 float a2_amax(const T* p, int64_t n, bool* bad) {
  __m256 m0 = _mm256_setzero_ps(), m1 = _mm256_setzero_ps(), badv = _mm256_setzero_ps();
  const __m256 big = _mm256_set1_ps(FLT_MAX);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 a = abs8(l8(p + i)), b = abs8(l8(p + i + 8));
    badv = _mm256_or_ps(badv, _mm256_or_ps(_mm256_cmp_ps(a, big, _CMP_NLE_UQ), _mm256_cmp_ps(b, big, _CMP_NLE_UQ)));
    m0 = _mm256_max_ps(m0, a);
    m1 = _mm256_max_ps(m1, b);
  }
  for (; i + 8 <= n; i += 8) {
    __m256 a = abs8(l8(p + i));
    badv = _mm256_or_ps(badv, _mm256_cmp_ps(a, big, _CMP_NLE_UQ));
    m0 = _mm256_max_ps(m0, a);
  }
  m0 = _mm256_max_ps(m0, m1);
  alignas(32) float t[8];
  _mm256_store_ps(t, m0);
  float m = 0.f;
  for (float v : t) m = v > m ? v : m;
  if (_mm256_movemask_ps(badv)) *bad = true;
  float tail = s_amax(p + i, n - i, bad);
  return tail > m ? tail : m;
}
template <class T>
PFC_AVX2 void a2_amax_acc(const T* p, int64_t n, float* acc, bool* bad) {
  __m256 badv = _mm256_setzero_ps();
  const __m256 big = _mm256_set1_ps(FLT_MAX);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 a = abs8(l8(p + i));
    badv = _mm256_or_ps(badv, _mm256_cmp_ps(a, big, _CMP_NLE_UQ));
    _mm256_storeu_ps(acc + i, _mm256_max_ps(_mm256_loadu_ps(acc + i), a));
  }
  if (_mm256_movemask_ps(badv)) *bad = true;
  s_amax_acc(p + i, n - i, acc + i, bad);
}
template <class T>
PFC_AVX2 void a2_quant(const T* p, int64_t n, float scale, int8_t* q) {
  const __m256 s = _mm256_set1_ps(scale), inv = _mm256_set1_ps(1.f / scale);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) store8_i8(q + i, quot8(l8(p + i), inv, s));
  s_quant(p + i, n - i, scale, q + i);
}
template <class T>
PFC_AVX2 void a2_quant_vec(const T* p, int64_t n, const float* scales, int8_t* q) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 s = _mm256_loadu_ps(scales + i);
    store8_i8(q + i, quot8(l8(p + i), recip8(s), s));
  }
  s_quant_vec(p + i, n - i, scales + i, q + i);
}
PFC_AVX2 inline __m256 q8(const int8_t* q) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q))));
}
PFC_AVX2 void a2_dequant(const int8_t* q, int64_t n, float scale, float* out) {
  const __m256 s = _mm256_set1_ps(scale);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(q8(q + i), s));
  s_dequant(q + i, n - i, scale, out + i);
}
PFC_AVX2 void a2_dequant_vec(const int8_t* q, int64_t n, const float* scales, float* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, _mm256_mul_ps(q8(q + i), _mm256_loadu_ps(scales + i)));
  s_dequant_vec(q + i, n - i, scales + i, out + i);
}
}  // namespace

const RowKernels kAvx2 = {a2_amax<float>,  a2_amax<uint16_t>,  a2_amax_acc<float>,  a2_amax_acc<uint16_t>,
                          a2_quant<float>, a2_quant<uint16_t>, a2_quant_vec<float>, a2_quant_vec<uint16_t>,
                          a2_dequant,      a2_dequant_vec};

// ---------------------------------------------------------------- AVX-512 (F, BW, VL, DQ)
#define PFC_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
namespace {
PFC_AVX512 inline __m512 l16(const float* p) { return _mm512_loadu_ps(p); }
PFC_AVX512 inline __m512 l16(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
PFC_AVX512 inline __m512 l16m(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
PFC_AVX512 inline __m512 l16m(const uint16_t* p, __mmask16 m) { return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p)); }
PFC_AVX512 inline __m128i rne16(__m512 v) {
  const __m512 lo = _mm512_set1_ps(-127.f), hi = _mm512_set1_ps(127.f);
  __m512i r = _mm512_cvt_roundps_epi32(_mm512_min_ps(_mm512_max_ps(v, lo), hi), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  return _mm512_cvtsepi32_epi8(r);
}
// See quot8: multiply by a near-reciprocal, redo lanes near a rounding tie with the division.
PFC_AVX512 inline __m512 quot16(__m512 x, __m512 inv, __m512 s) {
  const __m512 lo = _mm512_set1_ps(-127.f), hi = _mm512_set1_ps(127.f);
  __m512 y = _mm512_min_ps(_mm512_max_ps(_mm512_mul_ps(x, inv), lo), hi);
  __m512 r = _mm512_roundscale_ps(y, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __mmask16 near = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(y, r)), _mm512_set1_ps(0.5f - 0x1p-14f), _CMP_GT_OQ);
  if (near) y = _mm512_mask_div_ps(y, near, x, s);
  return y;
}
PFC_AVX512 inline __m512 recip16(__m512 s) {  // rcp14 and one Newton step: relative error < 2^-23
  __m512 r0 = _mm512_rcp14_ps(s);
  return _mm512_fmadd_ps(r0, _mm512_fnmadd_ps(s, r0, _mm512_set1_ps(1.f)), r0);
}
inline __mmask16 tail_mask(int64_t k) { return static_cast<__mmask16>((1u << k) - 1u); }

template <class T>
PFC_AVX512 float a5_amax(const T* p, int64_t n, bool* bad) {
  __m512 m0 = _mm512_setzero_ps(), m1 = _mm512_setzero_ps();
  const __m512 big = _mm512_set1_ps(FLT_MAX);
  __mmask16 b = 0;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512 x0 = _mm512_abs_ps(l16(p + i)), x1 = _mm512_abs_ps(l16(p + i + 16));
    b |= _mm512_cmp_ps_mask(x0, big, _CMP_NLE_UQ) | _mm512_cmp_ps_mask(x1, big, _CMP_NLE_UQ);
    m0 = _mm512_max_ps(m0, x0);
    m1 = _mm512_max_ps(m1, x1);
  }
  for (; i < n; i += 16) {
    __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail_mask(n - i);
    __m512 x0 = _mm512_abs_ps(l16m(p + i, k));
    b |= _mm512_mask_cmp_ps_mask(k, x0, big, _CMP_NLE_UQ);
    m0 = _mm512_max_ps(m0, x0);
  }
  if (b) *bad = true;
  return _mm512_reduce_max_ps(_mm512_max_ps(m0, m1));
}
template <class T>
PFC_AVX512 void a5_amax_acc(const T* p, int64_t n, float* acc, bool* bad) {
  const __m512 big = _mm512_set1_ps(FLT_MAX);
  __mmask16 b = 0;
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail_mask(n - i);
    __m512 x = _mm512_abs_ps(l16m(p + i, k));
    b |= _mm512_mask_cmp_ps_mask(k, x, big, _CMP_NLE_UQ);
    _mm512_mask_storeu_ps(acc + i, k, _mm512_max_ps(_mm512_maskz_loadu_ps(k, acc + i), x));
  }
  if (b) *bad = true;
}
template <class T>
PFC_AVX512 void a5_quant(const T* p, int64_t n, float scale, int8_t* q) {
  const __m512 s = _mm512_set1_ps(scale), inv = _mm512_set1_ps(1.f / scale);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + i), rne16(quot16(l16(p + i), inv, s)));
  if (i < n) {
    __mmask16 k = tail_mask(n - i);
    _mm_mask_storeu_epi8(q + i, k, rne16(quot16(l16m(p + i, k), inv, s)));
  }
}
template <class T>
PFC_AVX512 void a5_quant_vec(const T* p, int64_t n, const float* scales, int8_t* q) {
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail_mask(n - i);
    // Masked-off lanes divide 0 by 1, never by a zero scale.
    __m512 s = _mm512_mask_loadu_ps(_mm512_set1_ps(1.f), k, scales + i);
    _mm_mask_storeu_epi8(q + i, k, rne16(quot16(l16m(p + i, k), recip16(s), s)));
  }
}
PFC_AVX512 inline __m512 q16(const int8_t* q, __mmask16 k) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(k, q)));
}
PFC_AVX512 void a5_dequant(const int8_t* q, int64_t n, float scale, float* out) {
  const __m512 s = _mm512_set1_ps(scale);
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail_mask(n - i);
    _mm512_mask_storeu_ps(out + i, k, _mm512_mul_ps(q16(q + i, k), s));
  }
}
PFC_AVX512 void a5_dequant_vec(const int8_t* q, int64_t n, const float* scales, float* out) {
  for (int64_t i = 0; i < n; i += 16) {
    __mmask16 k = n - i >= 16 ? static_cast<__mmask16>(0xFFFF) : tail_mask(n - i);
    _mm512_mask_storeu_ps(out + i, k, _mm512_mul_ps(q16(q + i, k), _mm512_maskz_loadu_ps(k, scales + i)));
  }
}
}  // namespace

const RowKernels kAvx512 = {a5_amax<float>,  a5_amax<uint16_t>,  a5_amax_acc<float>,  a5_amax_acc<uint16_t>,
                            a5_quant<float>, a5_quant<uint16_t>, a5_quant_vec<float>, a5_quant_vec<uint16_t>,
                            a5_dequant,      a5_dequant_vec};
#else
const RowKernels kAvx2 = kScalar;
const RowKernels kAvx512 = kScalar;
#endif

}  // namespace detail
}  // namespace quant
}  // namespace pyperfcore
