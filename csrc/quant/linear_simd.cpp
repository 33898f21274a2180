// SIMD variants of the quantized-linear tile kernels. Every function carries its own target
// attribute; nothing here is compiled for a whole-file ISA, so the binary runs on any x86-64.
//
// INT8 GEMM: activations are uint8 (per-token zero point), weights int8 in [-127, 127].
//   avx512_vnni: VPDPBUSD (u8 x s8 -> s32, no intermediate saturation).
//   avx512/avx2: VPMADDUBSW saturates its int16 pair sums (255 * 127 * 2 > 32767), so each
//     activation byte is split as a = 2h + l (h <= 127, l <= 1); both partial products fit in
//     int16 and VPMADDWD widens them, which keeps every target exact and bit-identical in INT32.
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstring>

#include "linear_kernels.hpp"
#include "quant.hpp"
#include "simd_exp.hpp"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#endif

namespace pyperfcore {
namespace quant {
namespace detail {

namespace {
// (exp's constants and the AVX-512 exp live in simd_exp.hpp, shared with the attention kernel)
// GELU (erf form) as gelu(v) = max(v, 0) - |v| h(|v|), h(a) = Phi(-a) = erfc(a / sqrt 2) / 2: the
// same expression for either sign, and no cancellation in the negative tail, where h is small and
// computed with a small relative error. h is a (6, 7) rational minimax fit in a on [0, 5.75]
// (|fit error| 1.3e-8; fitted here for this kernel, coefficients rounded to float):
// 13 FMAs and one reciprocal instead of a polynomial erfc times exp(). Beyond 5.75, h is 0:
// gelu(v) = max(v, 0), off by |v| Phi(-|v|) <= 2.6e-8 (and falling fast). Evaluated in float32
// the activation stays within 2e-6 |y| + 7e-8 max(1, |v|) of the exact GELU (tests check 1e-7).
constexpr float kGeluClamp = 5.75f;
constexpr float kGp[7] = {0.5f, -0.5668782f, 0.26981822f, -0.068968415f, 0.00997845f, -0.0007742672f, 2.5155123e-05f};
constexpr float kGq[8] = {1.0f, -0.33587f, 0.2716304f, -0.05410053f, 0.021281753f, -0.0005868386f, 6.340581e-05f,
                          0.00017374197f};
constexpr float kGeluTanhC = 0.79788456080286536f;  // sqrt(2 / pi)
constexpr float kGeluTanhB = 0.044715f;

inline int32_t ld_i32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// ---------------------------------------------------------------- scalar (always built)
inline float s_exp(float x) {
  x = std::min(std::max(x, kExpLo), kExpHi);
  float n = std::nearbyint(x * kLog2e);
  float r = x - n * kLn2Hi;
  r = r - n * kLn2Lo;
  float p = 1.f / 720;
  p = p * r + 1.f / 120;
  p = p * r + 1.f / 24;
  p = p * r + 1.f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.f;
  p = p * r + 1.f;
  int32_t e = (static_cast<int32_t>(n) + 127) << 23;
  float s;
  std::memcpy(&s, &e, 4);
  return p * s;
}
}  // namespace

float scalar_activation(float v, Activation act) {
  switch (act) {
    case Activation::relu: return v > 0.f ? v : 0.f;
    case Activation::gelu: {
      const float av = std::fabs(v), a = std::min(av, kGeluClamp);
      float p = kGp[6], q = kGq[7];
      for (int i = 5; i >= 0; --i) p = p * a + kGp[i];
      for (int i = 6; i >= 0; --i) q = q * a + kGq[i];
      const float h = av <= kGeluClamp ? p / q : 0.f;
      return (v > 0.f ? v : 0.f) - av * h;
    }
    case Activation::gelu_tanh: {
      float u = kGeluTanhC * (v + kGeluTanhB * v * v * v);
      return v / (1.f + s_exp(-2.f * u));
    }
    case Activation::silu: return v / (1.f + s_exp(-v));
    default: return v;
  }
}

namespace {
inline float s_finish(float v, int64_t j, const float* bias, Activation act, const float* res) {
  if (bias) v += bias[j];
  v = scalar_activation(v, act);
  if (res) v += res[j];
  return v;
}

void s_minmax(const float* x, int64_t k, float* lo, float* hi, bool* bad) {
  float mn = 0.f, mx = 0.f;
  bool b = false;
  for (int64_t i = 0; i < k; ++i) {
    float v = x[i];
    b |= !(std::fabs(v) <= FLT_MAX);
    mn = v < mn ? v : mn;
    mx = v > mx ? v : mx;
  }
  if (b) *bad = true;
  *lo = mn;
  *hi = mx;
}

void s_quant_row(const float* x, int64_t k, float inv, float zp, float qmin, float qmax, uint8_t* q, bool* bad) {
  bool b = false;
  for (int64_t i = 0; i < k; ++i) {
    b |= !(std::fabs(x[i]) <= FLT_MAX);
    float v = std::nearbyint(x[i] * inv) + zp;
    v = std::min(std::max(v, qmin), qmax);
    q[i] = static_cast<uint8_t>(static_cast<int>(v == v ? v : qmin));  // NaN: any code (the caller throws)
  }
  if (b && bad) *bad = true;
}

void s_gemm_tile(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t kp, int32_t* c) {
  for (int r = 0; r < rows; ++r) {
    int32_t acc[kPanel] = {0};
    const uint8_t* ar = a + r * lda;
    for (int64_t g = 0; g < kp / 4; ++g) {
      const int8_t* w = panel + g * kPanel * 4;
      const int32_t a0 = ar[4 * g], a1 = ar[4 * g + 1], a2 = ar[4 * g + 2], a3 = ar[4 * g + 3];
      for (int j = 0; j < kPanel; ++j)
        acc[j] += a0 * w[4 * j] + a1 * w[4 * j + 1] + a2 * w[4 * j + 2] + a3 * w[4 * j + 3];
    }
    std::memcpy(c + r * kPanel, acc, sizeof(acc));
  }
}

void s_epi_i8(const int32_t* acc, int64_t ncols, float sa, int32_t zp, const float* sw, const int32_t* colsum,
              const float* bias, Activation act, const float* res, float* y) {
  for (int64_t j = 0; j < ncols; ++j) {
    float s = sa * sw[j];
    float v = static_cast<float>(acc[j] - zp * colsum[j]) * s;
    y[j] = s_finish(v, j, bias, act, res);
  }
}

inline float bf16f(uint16_t h) {
  uint32_t b = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

void s_half_tile(const float* x, int64_t ldx, int rows, const uint16_t* panel, int64_t k, bool bf16, float* c) {
  float wf[kPanel];
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < kPanel; ++j) c[r * kPanel + j] = 0.f;
  for (int64_t kk = 0; kk < k; ++kk) {
    const uint16_t* w = panel + kk * kPanel;
    for (int j = 0; j < kPanel; ++j) wf[j] = bf16 ? bf16f(w[j]) : half_to_float(w[j]);
    for (int r = 0; r < rows; ++r) {
      const float xv = x[r * ldx + kk];
      for (int j = 0; j < kPanel; ++j) c[r * kPanel + j] += xv * wf[j];
    }
  }
}

void s_widen_panel(const uint16_t* panel, int64_t k, bool bf16, float* out) {
  for (int64_t i = 0; i < k * kPanel; ++i) out[i] = bf16 ? bf16f(panel[i]) : half_to_float(panel[i]);
}

void s_f32_tile(const float* x, int64_t ldx, int rows, const float* panel, int64_t k, float* c) {
  for (int r = 0; r < rows; ++r)
    for (int j = 0; j < kPanel; ++j) c[r * kPanel + j] = 0.f;
  for (int64_t kk = 0; kk < k; ++kk) {
    const float* wf = panel + kk * kPanel;
    for (int r = 0; r < rows; ++r) {
      const float xv = x[r * ldx + kk];
      for (int j = 0; j < kPanel; ++j) c[r * kPanel + j] += xv * wf[j];
    }
  }
}

void s_epi_f(const float* acc, int64_t ncols, const float* bias, Activation act, const float* res, float* y) {
  for (int64_t j = 0; j < ncols; ++j) y[j] = s_finish(acc[j], j, bias, act, res);
}
}  // namespace

namespace {
template <void (*EPI)(const int32_t*, int64_t, float, int32_t, const float*, const int32_t*, const float*, Activation,
                      const float*, float*)>
void rows_of(const int32_t* acc, int rows, int64_t ncols, const float* sa, const int32_t* zp, const float* sw,
             const int32_t* colsum, const float* bias, Activation act, const float* res, int64_t ldres, float* y,
             int64_t ldy) {
  for (int r = 0; r < rows; ++r)
    EPI(acc + r * kPanel, ncols, sa[r], zp[r], sw, colsum, bias, act, res ? res + r * ldres : nullptr, y + r * ldy);
}
}  // namespace

const LinearKernels kLinScalar = {s_minmax, s_quant_row, s_gemm_tile, s_epi_i8, rows_of<s_epi_i8>, s_half_tile,
                                  s_widen_panel, s_f32_tile, s_epi_f, 0};

#if defined(__x86_64__)
// ---------------------------------------------------------------- AVX2 + FMA + F16C
#define PFC_AVX2 __attribute__((target("avx2,fma,f16c")))
namespace {
PFC_AVX2 inline __m256 a2_exp(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(kExpLo)), _mm256_set1_ps(kExpHi));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Hi), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Lo), r);
  __m256 p = _mm256_set1_ps(1.f / 720);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 120));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 24));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f / 6));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.f));
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
PFC_AVX2 inline __m256 a2_act(__m256 v, Activation act) {
  const __m256 one = _mm256_set1_ps(1.f);
  switch (act) {
    case Activation::relu: return _mm256_max_ps(v, _mm256_setzero_ps());
    case Activation::gelu: {
      const __m256 av = _mm256_andnot_ps(_mm256_set1_ps(-0.f), v);
      const __m256 a = _mm256_min_ps(av, _mm256_set1_ps(kGeluClamp));
      __m256 p = _mm256_set1_ps(kGp[6]), q = _mm256_set1_ps(kGq[7]);
      for (int i = 5; i >= 0; --i) p = _mm256_fmadd_ps(p, a, _mm256_set1_ps(kGp[i]));
      for (int i = 6; i >= 0; --i) q = _mm256_fmadd_ps(q, a, _mm256_set1_ps(kGq[i]));
      const __m256 h = _mm256_and_ps(_mm256_div_ps(p, q), _mm256_cmp_ps(av, _mm256_set1_ps(kGeluClamp), _CMP_LE_OQ));
      return _mm256_fnmadd_ps(av, h, _mm256_max_ps(v, _mm256_setzero_ps()));
    }
    case Activation::gelu_tanh: {
      __m256 v3 = _mm256_mul_ps(_mm256_mul_ps(v, v), v);
      __m256 u = _mm256_mul_ps(_mm256_set1_ps(kGeluTanhC), _mm256_fmadd_ps(_mm256_set1_ps(kGeluTanhB), v3, v));
      return _mm256_div_ps(v, _mm256_add_ps(one, a2_exp(_mm256_mul_ps(_mm256_set1_ps(-2.f), u))));
    }
    case Activation::silu:
      return _mm256_div_ps(v, _mm256_add_ps(one, a2_exp(_mm256_sub_ps(_mm256_setzero_ps(), v))));
    default: return v;
  }
}

PFC_AVX2 void a2_minmax(const float* x, int64_t k, float* lo, float* hi, bool* bad) {
  __m256 mn = _mm256_setzero_ps(), mx = _mm256_setzero_ps(), badv = _mm256_setzero_ps();
  const __m256 big = _mm256_set1_ps(FLT_MAX), sign = _mm256_set1_ps(-0.f);
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    __m256 v = _mm256_loadu_ps(x + i);
    badv = _mm256_or_ps(badv, _mm256_cmp_ps(_mm256_andnot_ps(sign, v), big, _CMP_NLE_UQ));
    mn = _mm256_min_ps(mn, v);
    mx = _mm256_max_ps(mx, v);
  }
  alignas(32) float tn[8], tx[8];
  _mm256_store_ps(tn, mn);
  _mm256_store_ps(tx, mx);
  float l, h;
  s_minmax(x + i, k - i, &l, &h, bad);
  for (int j = 0; j < 8; ++j) {
    l = std::min(l, tn[j]);
    h = std::max(h, tx[j]);
  }
  if (_mm256_movemask_ps(badv)) *bad = true;
  *lo = l;
  *hi = h;
}

PFC_AVX2 void a2_quant_row(const float* x, int64_t k, float inv, float zp, float qmin, float qmax, uint8_t* q,
                           bool* bad) {
  const __m256 vi = _mm256_set1_ps(inv), vz = _mm256_set1_ps(zp), vlo = _mm256_set1_ps(qmin), vhi = _mm256_set1_ps(qmax);
  const __m256 big = _mm256_set1_ps(FLT_MAX), sign = _mm256_set1_ps(-0.f);
  __m256 badv = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= k; i += 8) {
    const __m256 xv = _mm256_loadu_ps(x + i);
    badv = _mm256_or_ps(badv, _mm256_cmp_ps(_mm256_andnot_ps(sign, xv), big, _CMP_NLE_UQ));
    __m256 v = _mm256_round_ps(_mm256_mul_ps(xv, vi), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, vz), vlo), vhi);
    __m256i r = _mm256_cvtps_epi32(v);
    __m256i w = _mm256_packus_epi32(r, r);
    __m256i b = _mm256_packus_epi16(w, w);
    __m128i o = _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(q + i), o);
  }
  s_quant_row(x + i, k - i, inv, zp, qmin, qmax, q + i, bad);
  if (bad && _mm256_movemask_ps(badv)) *bad = true;
}

// Without VNNI the u8 x s8 product goes through VPMADDUBSW, whose int16 pair sums saturate for
// codes near 255 (2 * 255 * 127 > 32767). The codes are therefore shifted to a' = a - 128 (the
// byte XOR 0x80, read as int8) and multiplied as |a'| (unsigned, <= 128) by w carrying a''s sign
// (|w| <= 127, never -128, so negating it is exact): every pair stays within 2 * 128 * 127 =
// 32512, exact, in 4 instructions per 32 products (the previous a = 2h + l split took 6). The
// tile then holds sum (a - 128) w = sum a w - 128 colsum: kGemmShift, which the callers add back
// (linear.cpp), so every path still yields the same exact INT32 sums.
PFC_AVX2 void a2_gemm_tile(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t kp, int32_t* c) {
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80)), ones = _mm256_set1_epi16(1);
  for (int r = 0; r < rows; ++r) {
    __m256i acc[8];
    for (auto& v : acc) v = _mm256_setzero_si256();
    const uint8_t* ar = a + r * lda;
    for (int64_t g = 0; g < kp / 4; ++g) {
      const __m256i sa = _mm256_xor_si256(_mm256_set1_epi32(ld_i32(ar + 4 * g)), flip);
      const __m256i ua = _mm256_abs_epi8(sa);
      const int8_t* w = panel + g * kPanel * 4;
      for (int j = 0; j < 8; ++j) {
        __m256i wv = _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + 32 * j)), sa);
        acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(_mm256_maddubs_epi16(ua, wv), ones));
      }
    }
    for (int j = 0; j < 8; ++j) _mm256_storeu_si256(reinterpret_cast<__m256i*>(c + r * kPanel + 8 * j), acc[j]);
  }
}

PFC_AVX2 void a2_epi_i8(const int32_t* acc, int64_t ncols, float sa, int32_t zp, const float* sw, const int32_t* colsum,
                        const float* bias, Activation act, const float* res, float* y) {
  const __m256 vsa = _mm256_set1_ps(sa);
  const __m256i vzp = _mm256_set1_epi32(zp);
  int64_t j = 0;
  for (; j + 8 <= ncols; j += 8) {
    __m256 s = _mm256_mul_ps(vsa, _mm256_loadu_ps(sw + j));
    __m256i ai = _mm256_sub_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + j)),
                                  _mm256_mullo_epi32(vzp, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(colsum + j))));
    __m256 v = _mm256_mul_ps(_mm256_cvtepi32_ps(ai), s);
    if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + j));
    v = a2_act(v, act);
    if (res) v = _mm256_add_ps(v, _mm256_loadu_ps(res + j));
    _mm256_storeu_ps(y + j, v);
  }
  if (j < ncols)
    s_epi_i8(acc + j, ncols - j, sa, zp, sw + j, colsum + j, bias ? bias + j : nullptr, act, res ? res + j : nullptr, y + j);
}

template <bool BF>
PFC_AVX2 inline __m256 a2_ld_half(const uint16_t* p) {
  __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  if (BF) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}
template <bool BF>
PFC_AVX2 void a2_half_tile_t(const float* x, int64_t ldx, int rows, const uint16_t* panel, int64_t k, float* c) {
  for (int r = 0; r < rows; ++r) {
    __m256 acc[8];
    for (auto& v : acc) v = _mm256_setzero_ps();
    const float* xr = x + r * ldx;
    for (int64_t kk = 0; kk < k; ++kk) {
      __m256 xb = _mm256_set1_ps(xr[kk]);
      const uint16_t* w = panel + kk * kPanel;
      for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(xb, a2_ld_half<BF>(w + 8 * j), acc[j]);
    }
    for (int j = 0; j < 8; ++j) _mm256_storeu_ps(c + r * kPanel + 8 * j, acc[j]);
  }
}
PFC_AVX2 void a2_half_tile(const float* x, int64_t ldx, int rows, const uint16_t* panel, int64_t k, bool bf16, float* c) {
  if (bf16)
    a2_half_tile_t<true>(x, ldx, rows, panel, k, c);
  else
    a2_half_tile_t<false>(x, ldx, rows, panel, k, c);
}

PFC_AVX2 void a2_widen_panel(const uint16_t* panel, int64_t k, bool bf16, float* out) {
  for (int64_t i = 0; i < k * kPanel; i += 8)
    _mm256_storeu_ps(out + i, bf16 ? a2_ld_half<true>(panel + i) : a2_ld_half<false>(panel + i));
}
PFC_AVX2 void a2_f32_tile(const float* x, int64_t ldx, int rows, const float* panel, int64_t k, float* c) {
  for (int r = 0; r < rows; ++r) {
    __m256 acc[8];
    for (auto& v : acc) v = _mm256_setzero_ps();
    const float* xr = x + r * ldx;
    for (int64_t kk = 0; kk < k; ++kk) {
      __m256 xb = _mm256_set1_ps(xr[kk]);
      const float* w = panel + kk * kPanel;
      for (int j = 0; j < 8; ++j) acc[j] = _mm256_fmadd_ps(xb, _mm256_loadu_ps(w + 8 * j), acc[j]);
    }
    for (int j = 0; j < 8; ++j) _mm256_storeu_ps(c + r * kPanel + 8 * j, acc[j]);
  }
}

PFC_AVX2 void a2_epi_f(const float* acc, int64_t ncols, const float* bias, Activation act, const float* res, float* y) {
  int64_t j = 0;
  for (; j + 8 <= ncols; j += 8) {
    __m256 v = _mm256_loadu_ps(acc + j);
    if (bias) v = _mm256_add_ps(v, _mm256_loadu_ps(bias + j));
    v = a2_act(v, act);
    if (res) v = _mm256_add_ps(v, _mm256_loadu_ps(res + j));
    _mm256_storeu_ps(y + j, v);
  }
  if (j < ncols) s_epi_f(acc + j, ncols - j, bias ? bias + j : nullptr, act, res ? res + j : nullptr, y + j);
}
}  // namespace

const LinearKernels kLinAvx2 = {a2_minmax, a2_quant_row, a2_gemm_tile, a2_epi_i8, rows_of<a2_epi_i8>, a2_half_tile,
                                a2_widen_panel, a2_f32_tile, a2_epi_f, kGemmShift};

// ---------------------------------------------------------------- AVX-512 (F, BW, VL, DQ)
#define PFC_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define PFC_VNNI __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,avx2,fma,f16c")))
// Accumulators are named variables, not an array: GCC keeps arrays of vectors in memory.
#define PFC_DECL4(T, r, z) T c##r##0 = z, c##r##1 = z, c##r##2 = z, c##r##3 = z;
#define PFC_DECL_ALL(T, z) PFC_DECL4(T, 0, z) PFC_DECL4(T, 1, z) PFC_DECL4(T, 2, z) PFC_DECL4(T, 3, z) PFC_DECL4(T, 4, z) PFC_DECL4(T, 5, z)
#define PFC_FOR_ROWS(M) M(0) M(1) M(2) M(3) M(4) M(5)
#define PFC_ST_ROW(r)                                     \
  if (R > r) {                                            \
    _mm512_storeu_si512(c + r * kPanel, c##r##0);         \
    _mm512_storeu_si512(c + r * kPanel + 16, c##r##1);    \
    _mm512_storeu_si512(c + r * kPanel + 32, c##r##2);    \
    _mm512_storeu_si512(c + r * kPanel + 48, c##r##3);    \
  }

namespace {
constexpr int kA5Rows = 4;
inline __mmask16 mask_n(int64_t n) { return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u); }

// 1 / d with one Newton step on the 14-bit estimate (about 1 ulp; d is in [0.88, 56] here).
PFC_AVX512 inline __m512 a5_rcp(__m512 d) {
  __m512 r = _mm512_rcp14_ps(d);
  return _mm512_mul_ps(r, _mm512_fnmadd_ps(d, r, _mm512_set1_ps(2.f)));
}
PFC_AVX512 inline __m512 a5_act(__m512 v, Activation act) {
  const __m512 one = _mm512_set1_ps(1.f);
  switch (act) {
    case Activation::relu: return _mm512_max_ps(v, _mm512_setzero_ps());
    case Activation::gelu: {
      // see kGp / kGq: ~20 instructions per 16 outputs (was ~33 with the A-S erfc and exp())
      const __m512 av = _mm512_abs_ps(v);
      const __m512 a = _mm512_min_ps(av, _mm512_set1_ps(kGeluClamp));
      __m512 p = _mm512_fmadd_ps(_mm512_set1_ps(kGp[6]), a, _mm512_set1_ps(kGp[5]));
      __m512 q = _mm512_fmadd_ps(_mm512_set1_ps(kGq[7]), a, _mm512_set1_ps(kGq[6]));
      for (int i = 4; i >= 0; --i) p = _mm512_fmadd_ps(p, a, _mm512_set1_ps(kGp[i]));
      for (int i = 5; i >= 0; --i) q = _mm512_fmadd_ps(q, a, _mm512_set1_ps(kGq[i]));
      const __mmask16 in = _mm512_cmp_ps_mask(av, _mm512_set1_ps(kGeluClamp), _CMP_LE_OQ);
      return _mm512_fnmadd_ps(av, _mm512_maskz_mul_ps(in, p, a5_rcp(q)), _mm512_max_ps(v, _mm512_setzero_ps()));
    }
    case Activation::gelu_tanh: {
      __m512 v3 = _mm512_mul_ps(_mm512_mul_ps(v, v), v);
      __m512 u = _mm512_mul_ps(_mm512_set1_ps(kGeluTanhC), _mm512_fmadd_ps(_mm512_set1_ps(kGeluTanhB), v3, v));
      return _mm512_div_ps(v, _mm512_add_ps(one, a5_exp(_mm512_mul_ps(_mm512_set1_ps(-2.f), u))));
    }
    case Activation::silu:
      return _mm512_div_ps(v, _mm512_add_ps(one, a5_exp(_mm512_sub_ps(_mm512_setzero_ps(), v))));
    default: return v;
  }
}
PFC_AVX512 inline void a5_finish(__m512 v, int64_t j, __mmask16 m, const float* bias, Activation act,
                                 const float* res, float* y) {
  if (bias) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, bias + j));
  v = a5_act(v, act);
  if (res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, res + j));
  _mm512_mask_storeu_ps(y + j, m, v);
}

PFC_AVX512 void a5_minmax(const float* x, int64_t k, float* lo, float* hi, bool* bad) {
  __m512 mn = _mm512_setzero_ps(), mx = _mm512_setzero_ps();
  const __m512 big = _mm512_set1_ps(FLT_MAX);
  __mmask16 b = 0;
  for (int64_t i = 0; i < k; i += 16) {
    __mmask16 m = mask_n(k - i);
    __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    b |= _mm512_mask_cmp_ps_mask(m, _mm512_abs_ps(v), big, _CMP_NLE_UQ);
    mn = _mm512_min_ps(mn, v);
    mx = _mm512_max_ps(mx, v);
  }
  if (b) *bad = true;
  *lo = _mm512_reduce_min_ps(mn);
  *hi = _mm512_reduce_max_ps(mx);
}

PFC_AVX512 void a5_quant_row(const float* x, int64_t k, float inv, float zp, float qmin, float qmax, uint8_t* q,
                             bool* bad) {
  const __m512 vi = _mm512_set1_ps(inv), vz = _mm512_set1_ps(zp), vlo = _mm512_set1_ps(qmin), vhi = _mm512_set1_ps(qmax);
  const __m512 big = _mm512_set1_ps(FLT_MAX);
  __mmask16 b = 0;
  for (int64_t i = 0; i < k; i += 16) {
    __mmask16 m = mask_n(k - i);
    const __m512 xv = _mm512_maskz_loadu_ps(m, x + i);
    b |= _mm512_mask_cmp_ps_mask(m, _mm512_abs_ps(xv), big, _CMP_NLE_UQ);
    __m512 v = _mm512_roundscale_ps(_mm512_mul_ps(xv, vi), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    v = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(v, vz), vlo), vhi);
    _mm_mask_storeu_epi8(q + i, m, _mm512_cvtusepi32_epi8(_mm512_cvtps_epu32(v)));
  }
  if (b && bad) *bad = true;
}

// The same signed-shift scheme as a2_gemm_tile (see there): AVX-512 has no VPSIGNB, so a''s sign
// is applied to the weights as a masked negation by the code's sign bits.
template <int R>
PFC_AVX512 void a5_gemm_rows(const uint8_t* a, int64_t lda, const int8_t* panel, int64_t kp, int32_t* c) {
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80)), ones = _mm512_set1_epi16(1);
  const __m512i z = _mm512_setzero_si512();
  PFC_DECL_ALL(__m512i, z)
  for (int64_t g = 0; g < kp / 4; ++g) {
    const int8_t* w = panel + g * kPanel * 4;
    const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 64), w2 = _mm512_loadu_si512(w + 128),
                  w3 = _mm512_loadu_si512(w + 192);
#define PFC_MAC(acc, ua, neg, wv) \
  acc = _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(ua, _mm512_mask_sub_epi8(wv, neg, z, wv)), ones));
#define PFC_A5_ROW(r)                                                                                        \
  if (R > r) {                                                                                               \
    const __m512i sa = _mm512_xor_si512(_mm512_set1_epi32(ld_i32(a + r * lda + 4 * g)), flip);             \
    const __m512i ua = _mm512_abs_epi8(sa);                                                                  \
    const __mmask64 neg = _mm512_movepi8_mask(sa);                                                           \
    PFC_MAC(c##r##0, ua, neg, w0) PFC_MAC(c##r##1, ua, neg, w1) PFC_MAC(c##r##2, ua, neg, w2) PFC_MAC(c##r##3, ua, neg, w3) \
  }
    PFC_FOR_ROWS(PFC_A5_ROW)
#undef PFC_A5_ROW
#undef PFC_MAC
  }
  PFC_FOR_ROWS(PFC_ST_ROW)
}
PFC_AVX512 void a5_gemm_tile(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t kp, int32_t* c) {
  for (int r = 0; r < rows;) {
    int n = std::min(rows - r, kA5Rows);  // kA5Rows rows x 4 accumulators + weights + temporaries in 32 zmm
    if (n == 4)
      a5_gemm_rows<4>(a + r * lda, lda, panel, kp, c + r * kPanel);
    else if (n == 3)
      a5_gemm_rows<3>(a + r * lda, lda, panel, kp, c + r * kPanel);
    else if (n == 2)
      a5_gemm_rows<2>(a + r * lda, lda, panel, kp, c + r * kPanel);
    else
      a5_gemm_rows<1>(a + r * lda, lda, panel, kp, c + r * kPanel);
    r += n;
  }
}

PFC_AVX512 void a5_epi_i8(const int32_t* acc, int64_t ncols, float sa, int32_t zp, const float* sw, const int32_t* colsum,
                          const float* bias, Activation act, const float* res, float* y) {
  const __m512 vsa = _mm512_set1_ps(sa);
  const __m512i vzp = _mm512_set1_epi32(zp);
  for (int64_t j = 0; j < ncols; j += 16) {
    __mmask16 m = mask_n(ncols - j);
    __m512 s = _mm512_mul_ps(vsa, _mm512_maskz_loadu_ps(m, sw + j));
    __m512i ai = _mm512_sub_epi32(_mm512_maskz_loadu_epi32(m, acc + j),
                                  _mm512_mullo_epi32(vzp, _mm512_maskz_loadu_epi32(m, colsum + j)));
    a5_finish(_mm512_mul_ps(_mm512_cvtepi32_ps(ai), s), j, m, bias, act, res, y);
  }
}

// The whole block in one call, the activation a template argument: no call, no switch and no
// mask per vector, and a full 64-column row as four independent straight-line chains, so the
// out-of-order core overlaps them (GELU is ~20 dependent instructions: one vector at a time it
// was latency-bound). Per element the same instructions as a5_epi_i8: the same bits.
template <Activation A>
PFC_AVX512 void a5_epi_rows_t(const int32_t* acc, int rows, int64_t ncols, const float* sa, const int32_t* zp,
                              const float* sw, const int32_t* colsum, const float* bias, const float* res, int64_t ldres,
                              float* y, int64_t ldy) {
  if (ncols != kPanel) {
    for (int r = 0; r < rows; ++r)
      a5_epi_i8(acc + r * kPanel, ncols, sa[r], zp[r], sw, colsum, bias, A, res ? res + r * ldres : nullptr, y + r * ldy);
    return;
  }
  __m512 sw0 = _mm512_loadu_ps(sw), sw1 = _mm512_loadu_ps(sw + 16), sw2 = _mm512_loadu_ps(sw + 32),
         sw3 = _mm512_loadu_ps(sw + 48);
  const __m512i cs0 = _mm512_loadu_si512(colsum), cs1 = _mm512_loadu_si512(colsum + 16),
                cs2 = _mm512_loadu_si512(colsum + 32), cs3 = _mm512_loadu_si512(colsum + 48);
  const __m512 z = _mm512_setzero_ps();
  const __m512 b0 = bias ? _mm512_loadu_ps(bias) : z, b1 = bias ? _mm512_loadu_ps(bias + 16) : z,
               b2 = bias ? _mm512_loadu_ps(bias + 32) : z, b3 = bias ? _mm512_loadu_ps(bias + 48) : z;
  for (int r = 0; r < rows; ++r) {
    const int32_t* a = acc + r * kPanel;
    const __m512 vsa = _mm512_set1_ps(sa[r]);
    const __m512i vzp = _mm512_set1_epi32(zp[r]);
#define PFC_EPI_V(i)                                                                                        \
  __m512 v##i = _mm512_mul_ps(                                                                             \
      _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_loadu_si512(a + 16 * i), _mm512_mullo_epi32(vzp, cs##i))), \
      _mm512_mul_ps(vsa, sw##i));                                                                          \
  if (bias) v##i = _mm512_add_ps(v##i, b##i);
    PFC_EPI_V(0) PFC_EPI_V(1) PFC_EPI_V(2) PFC_EPI_V(3)
#undef PFC_EPI_V
    v0 = a5_act(v0, A);
    v1 = a5_act(v1, A);
    v2 = a5_act(v2, A);
    v3 = a5_act(v3, A);
    float* yr = y + r * ldy;
    if (res) {
      const float* rr = res + r * ldres;
      v0 = _mm512_add_ps(v0, _mm512_loadu_ps(rr));
      v1 = _mm512_add_ps(v1, _mm512_loadu_ps(rr + 16));
      v2 = _mm512_add_ps(v2, _mm512_loadu_ps(rr + 32));
      v3 = _mm512_add_ps(v3, _mm512_loadu_ps(rr + 48));
    }
    _mm512_storeu_ps(yr, v0);
    _mm512_storeu_ps(yr + 16, v1);
    _mm512_storeu_ps(yr + 32, v2);
    _mm512_storeu_ps(yr + 48, v3);
  }
}
PFC_AVX512 void a5_epi_i8_rows(const int32_t* acc, int rows, int64_t ncols, const float* sa, const int32_t* zp,
                               const float* sw, const int32_t* colsum, const float* bias, Activation act, const float* res,
                               int64_t ldres, float* y, int64_t ldy) {
  switch (act) {
    case Activation::relu: return a5_epi_rows_t<Activation::relu>(acc, rows, ncols, sa, zp, sw, colsum, bias, res, ldres, y, ldy);
    case Activation::gelu: return a5_epi_rows_t<Activation::gelu>(acc, rows, ncols, sa, zp, sw, colsum, bias, res, ldres, y, ldy);
    case Activation::gelu_tanh:
      return a5_epi_rows_t<Activation::gelu_tanh>(acc, rows, ncols, sa, zp, sw, colsum, bias, res, ldres, y, ldy);
    case Activation::silu: return a5_epi_rows_t<Activation::silu>(acc, rows, ncols, sa, zp, sw, colsum, bias, res, ldres, y, ldy);
    default: return a5_epi_rows_t<Activation::none>(acc, rows, ncols, sa, zp, sw, colsum, bias, res, ldres, y, ldy);
  }
}

template <bool BF>
PFC_AVX512 inline __m512 a5_ld_half(const uint16_t* p) {
  __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  if (BF) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  return _mm512_cvtph_ps(h);
}
template <int R, bool BF>
PFC_AVX512 void a5_half_rows(const float* x, int64_t ldx, const uint16_t* panel, int64_t k, float* c) {
  const __m512 z = _mm512_setzero_ps();
  PFC_DECL_ALL(__m512, z)
  for (int64_t kk = 0; kk < k; ++kk) {
    const uint16_t* w = panel + kk * kPanel;
    const __m512 w0 = a5_ld_half<BF>(w), w1 = a5_ld_half<BF>(w + 16), w2 = a5_ld_half<BF>(w + 32),
                 w3 = a5_ld_half<BF>(w + 48);
#define PFC_HF_ROW(r)                                 \
  if (R > r) {                                        \
    const __m512 b = _mm512_set1_ps(x[r * ldx + kk]); \
    c##r##0 = _mm512_fmadd_ps(b, w0, c##r##0);        \
    c##r##1 = _mm512_fmadd_ps(b, w1, c##r##1);        \
    c##r##2 = _mm512_fmadd_ps(b, w2, c##r##2);        \
    c##r##3 = _mm512_fmadd_ps(b, w3, c##r##3);        \
  }
    PFC_FOR_ROWS(PFC_HF_ROW)
#undef PFC_HF_ROW
  }
#define PFC_STF_ROW(r)                               \
  if (R > r) {                                       \
    _mm512_storeu_ps(c + r * kPanel, c##r##0);       \
    _mm512_storeu_ps(c + r * kPanel + 16, c##r##1);  \
    _mm512_storeu_ps(c + r * kPanel + 32, c##r##2);  \
    _mm512_storeu_ps(c + r * kPanel + 48, c##r##3);  \
  }
  PFC_FOR_ROWS(PFC_STF_ROW)
#undef PFC_STF_ROW
}
template <bool BF>
PFC_AVX512 void a5_half_tile_t(const float* x, int64_t ldx, int rows, const uint16_t* panel, int64_t k, float* c) {
  switch (rows) {
    case 6: a5_half_rows<6, BF>(x, ldx, panel, k, c); break;
    case 5: a5_half_rows<5, BF>(x, ldx, panel, k, c); break;
    case 4: a5_half_rows<4, BF>(x, ldx, panel, k, c); break;
    case 3: a5_half_rows<3, BF>(x, ldx, panel, k, c); break;
    case 2: a5_half_rows<2, BF>(x, ldx, panel, k, c); break;
    default: a5_half_rows<1, BF>(x, ldx, panel, k, c); break;
  }
}
PFC_AVX512 void a5_half_tile(const float* x, int64_t ldx, int rows, const uint16_t* panel, int64_t k, bool bf16, float* c) {
  if (bf16)
    a5_half_tile_t<true>(x, ldx, rows, panel, k, c);
  else
    a5_half_tile_t<false>(x, ldx, rows, panel, k, c);
}

PFC_AVX512 void a5_widen_panel(const uint16_t* panel, int64_t k, bool bf16, float* out) {
  for (int64_t i = 0; i < k * kPanel; i += 16)
    _mm512_storeu_ps(out + i, bf16 ? a5_ld_half<true>(panel + i) : a5_ld_half<false>(panel + i));
}
template <int R>
PFC_AVX512 void a5_f32_rows(const float* x, int64_t ldx, const float* panel, int64_t k, float* c) {
  const __m512 z = _mm512_setzero_ps();
  PFC_DECL_ALL(__m512, z)
  for (int64_t kk = 0; kk < k; ++kk) {
    const float* w = panel + kk * kPanel;
    const __m512 w0 = _mm512_loadu_ps(w), w1 = _mm512_loadu_ps(w + 16), w2 = _mm512_loadu_ps(w + 32),
                 w3 = _mm512_loadu_ps(w + 48);
#define PFC_F_ROW(r)                                  \
  if (R > r) {                                        \
    const __m512 b = _mm512_set1_ps(x[r * ldx + kk]); \
    c##r##0 = _mm512_fmadd_ps(b, w0, c##r##0);        \
    c##r##1 = _mm512_fmadd_ps(b, w1, c##r##1);        \
    c##r##2 = _mm512_fmadd_ps(b, w2, c##r##2);        \
    c##r##3 = _mm512_fmadd_ps(b, w3, c##r##3);        \
  }
    PFC_FOR_ROWS(PFC_F_ROW)
#undef PFC_F_ROW
  }
#define PFC_STF_ROW(r)                               \
  if (R > r) {                                       \
    _mm512_storeu_ps(c + r * kPanel, c##r##0);       \
    _mm512_storeu_ps(c + r * kPanel + 16, c##r##1);  \
    _mm512_storeu_ps(c + r * kPanel + 32, c##r##2);  \
    _mm512_storeu_ps(c + r * kPanel + 48, c##r##3);  \
  }
  PFC_FOR_ROWS(PFC_STF_ROW)
#undef PFC_STF_ROW
}
PFC_AVX512 void a5_f32_tile(const float* x, int64_t ldx, int rows, const float* panel, int64_t k, float* c) {
  switch (rows) {
    case 6: a5_f32_rows<6>(x, ldx, panel, k, c); break;
    case 5: a5_f32_rows<5>(x, ldx, panel, k, c); break;
    case 4: a5_f32_rows<4>(x, ldx, panel, k, c); break;
    case 3: a5_f32_rows<3>(x, ldx, panel, k, c); break;
    case 2: a5_f32_rows<2>(x, ldx, panel, k, c); break;
    default: a5_f32_rows<1>(x, ldx, panel, k, c); break;
  }
}

PFC_AVX512 void a5_epi_f(const float* acc, int64_t ncols, const float* bias, Activation act, const float* res, float* y) {
  for (int64_t j = 0; j < ncols; j += 16) {
    __mmask16 m = mask_n(ncols - j);
    a5_finish(_mm512_maskz_loadu_ps(m, acc + j), j, m, bias, act, res, y);
  }
}

// ---------------------------------------------------------------- AVX-512 VNNI
template <int R>
PFC_VNNI void vn_gemm_rows(const uint8_t* a, int64_t lda, const int8_t* panel, int64_t kp, int32_t* c) {
  const __m512i z = _mm512_setzero_si512();
  PFC_DECL_ALL(__m512i, z)
  const int64_t groups = kp / 4;
  for (int64_t g = 0; g < groups; ++g) {
    const int8_t* w = panel + g * kPanel * 4;
    const __m512i w0 = _mm512_loadu_si512(w), w1 = _mm512_loadu_si512(w + 64), w2 = _mm512_loadu_si512(w + 128),
                  w3 = _mm512_loadu_si512(w + 192);
#define PFC_VN_ROW(r)                                                  \
  if (R > r) {                                                         \
    const __m512i b = _mm512_set1_epi32(ld_i32(a + r * lda + 4 * g)); \
    c##r##0 = _mm512_dpbusd_epi32(c##r##0, b, w0);                     \
    c##r##1 = _mm512_dpbusd_epi32(c##r##1, b, w1);                     \
    c##r##2 = _mm512_dpbusd_epi32(c##r##2, b, w2);                     \
    c##r##3 = _mm512_dpbusd_epi32(c##r##3, b, w3);                     \
  }
    PFC_FOR_ROWS(PFC_VN_ROW)
#undef PFC_VN_ROW
  }
  PFC_FOR_ROWS(PFC_ST_ROW)
}
// One row (a batch of 1, the GEMV of b=1 serving): four accumulators would be four dependency
// chains of VPDPBUSD (latency 5, two per cycle), so even and odd k-groups go to two sets of four
// and are added at the end (integer sums: the same exact result in any order).
PFC_VNNI void vn_gemm_row1(const uint8_t* a, const int8_t* panel, int64_t kp, int32_t* c) {
  __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, d0 = c0, d1 = c0, d2 = c0, d3 = c0;
  const int64_t groups = kp / 4;
  int64_t g = 0;
  for (; g + 2 <= groups; g += 2) {
    const int8_t* w = panel + g * kPanel * 4;
    const __m512i b0 = _mm512_set1_epi32(ld_i32(a + 4 * g)), b1 = _mm512_set1_epi32(ld_i32(a + 4 * g + 4));
    c0 = _mm512_dpbusd_epi32(c0, b0, _mm512_loadu_si512(w));
    c1 = _mm512_dpbusd_epi32(c1, b0, _mm512_loadu_si512(w + 64));
    c2 = _mm512_dpbusd_epi32(c2, b0, _mm512_loadu_si512(w + 128));
    c3 = _mm512_dpbusd_epi32(c3, b0, _mm512_loadu_si512(w + 192));
    d0 = _mm512_dpbusd_epi32(d0, b1, _mm512_loadu_si512(w + 256));
    d1 = _mm512_dpbusd_epi32(d1, b1, _mm512_loadu_si512(w + 320));
    d2 = _mm512_dpbusd_epi32(d2, b1, _mm512_loadu_si512(w + 384));
    d3 = _mm512_dpbusd_epi32(d3, b1, _mm512_loadu_si512(w + 448));
  }
  if (g < groups) {
    const int8_t* w = panel + g * kPanel * 4;
    const __m512i b0 = _mm512_set1_epi32(ld_i32(a + 4 * g));
    c0 = _mm512_dpbusd_epi32(c0, b0, _mm512_loadu_si512(w));
    c1 = _mm512_dpbusd_epi32(c1, b0, _mm512_loadu_si512(w + 64));
    c2 = _mm512_dpbusd_epi32(c2, b0, _mm512_loadu_si512(w + 128));
    c3 = _mm512_dpbusd_epi32(c3, b0, _mm512_loadu_si512(w + 192));
  }
  _mm512_storeu_si512(c, _mm512_add_epi32(c0, d0));
  _mm512_storeu_si512(c + 16, _mm512_add_epi32(c1, d1));
  _mm512_storeu_si512(c + 32, _mm512_add_epi32(c2, d2));
  _mm512_storeu_si512(c + 48, _mm512_add_epi32(c3, d3));
}
PFC_VNNI void vn_gemm_tile(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t kp, int32_t* c) {
  if (rows == 1) return vn_gemm_row1(a, panel, kp, c);
  switch (rows) {
    case 6: vn_gemm_rows<6>(a, lda, panel, kp, c); break;
    case 5: vn_gemm_rows<5>(a, lda, panel, kp, c); break;
    case 4: vn_gemm_rows<4>(a, lda, panel, kp, c); break;
    case 3: vn_gemm_rows<3>(a, lda, panel, kp, c); break;
    case 2: vn_gemm_rows<2>(a, lda, panel, kp, c); break;
    default: vn_gemm_rows<1>(a, lda, panel, kp, c); break;
  }
}
}  // namespace

const LinearKernels kLinAvx512 = {a5_minmax, a5_quant_row, a5_gemm_tile, a5_epi_i8, a5_epi_i8_rows, a5_half_tile,
                                  a5_widen_panel, a5_f32_tile, a5_epi_f, kGemmShift};

// ---------------------------------------------------------------- AMX (TDPBUSD), inside avx512_vnni
// One 16-row x 64-column INT32 block per call: C tiles 0-3 (16 columns each), A tile 4 (rows x 64
// k-bytes), B tiles 5-6 alternating. The packed panel (64 columns x 4 k per 256-byte group) already
// is the B operand: 16 columns x 4 k of one group are 64 contiguous bytes, consecutive groups 256
// bytes apart, so a B tile loads straight from the panel with stride 256. K beyond the last full
// 64-byte step is finished with VPDPBUSD on the stored block. INT32 sums are exact on both paths.
// AMX intrinsics need GCC 11 / clang 12; older compilers build without this path.
#if (defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11)
#define PFC_HAVE_AMX 1
#define PFC_AMX __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vnni")))
namespace {
struct alignas(64) TileCfg {
  uint8_t palette = 1, start_row = 0, reserved[14] = {0};
  uint16_t colsb[16] = {0};
  uint8_t rows[16] = {0};
};
}  // namespace

PFC_AMX void amx_configure(int rows) {
  TileCfg cfg;
  for (int t = 0; t < 4; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = static_cast<uint8_t>(rows);
  }
  cfg.colsb[4] = 64;
  cfg.rows[4] = static_cast<uint8_t>(rows);
  for (int t = 5; t < 7; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  // GCC 12 does not see that LDTILECFG reads the struct and drops the stores above without this.
  asm volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

PFC_AMX void amx_release() { _tile_release(); }

PFC_AMX void amx_gemm_block(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t kp, int32_t* c) {
  const int64_t steps = kp / 64;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t s = 0; s < steps; ++s) {
    const int8_t* b = panel + s * 16 * 256;
    _tile_loadd(4, a + s * 64, lda);
    _tile_loadd(5, b, 256);
    _tile_dpbusd(0, 4, 5);
    _tile_loadd(6, b + 64, 256);
    _tile_dpbusd(1, 4, 6);
    _tile_loadd(5, b + 128, 256);
    _tile_dpbusd(2, 4, 5);
    _tile_loadd(6, b + 192, 256);
    _tile_dpbusd(3, 4, 6);
  }
  _tile_stored(0, c, kPanel * 4);
  _tile_stored(1, c + 16, kPanel * 4);
  _tile_stored(2, c + 32, kPanel * 4);
  _tile_stored(3, c + 48, kPanel * 4);
  if (steps * 64 == kp) return;
  for (int r = 0; r < rows; ++r) {  // the remaining < 16 groups of 4 k
    int32_t* cr = c + r * kPanel;
    __m512i c0 = _mm512_loadu_si512(cr), c1 = _mm512_loadu_si512(cr + 16), c2 = _mm512_loadu_si512(cr + 32),
            c3 = _mm512_loadu_si512(cr + 48);
    for (int64_t g = steps * 16; g < kp / 4; ++g) {
      const int8_t* w = panel + g * kPanel * 4;
      const __m512i bv = _mm512_set1_epi32(ld_i32(a + r * lda + 4 * g));
      c0 = _mm512_dpbusd_epi32(c0, bv, _mm512_loadu_si512(w));
      c1 = _mm512_dpbusd_epi32(c1, bv, _mm512_loadu_si512(w + 64));
      c2 = _mm512_dpbusd_epi32(c2, bv, _mm512_loadu_si512(w + 128));
      c3 = _mm512_dpbusd_epi32(c3, bv, _mm512_loadu_si512(w + 192));
    }
    _mm512_storeu_si512(cr, c0);
    _mm512_storeu_si512(cr + 16, c1);
    _mm512_storeu_si512(cr + 32, c2);
    _mm512_storeu_si512(cr + 48, c3);
  }
}

// 2x2 blocking: up to 32 rows x 64 columns per call, in two passes over 32-column halves. Each
// pass keeps four C tiles (rows 0-15 / 16-31 x two 16-column strips: tiles 0-3), loads A rows
// 0-15 (tile 4), rows 16-31 (tile 5) and two B strips (tiles 6, 7) per 64-byte k step and issues
// four TDPBUSD: four tile loads per four TDPBUSD instead of five. Rows 16.. may be fewer than 16
// (tile rows set by amx_configure2). The K tail is finished with VPDPBUSD as in amx_gemm_block.
PFC_AMX void amx_configure2(int rows) {
  const int r0 = rows < 16 ? rows : 16, r1 = rows - r0;
  TileCfg cfg;
  for (int t = 0; t < 2; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = static_cast<uint8_t>(r0);
  }
  for (int t = 2; t < 4; ++t) {  // rows 16.. or, for <= 16 rows, columns 32-63 of rows 0..
    cfg.colsb[t] = 64;
    cfg.rows[t] = static_cast<uint8_t>(r1 > 0 ? r1 : r0);
  }
  cfg.colsb[4] = 64;
  cfg.rows[4] = static_cast<uint8_t>(r0);
  cfg.colsb[5] = r1 > 0 ? 64 : 0;
  cfg.rows[5] = static_cast<uint8_t>(r1);
  for (int t = 6; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  asm volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

#ifndef PFC_AMX_KSTEPS
#define PFC_AMX_KSTEPS 6
#endif
constexpr int64_t kAmxKSteps = PFC_AMX_KSTEPS;

PFC_AMX void amx_gemm_block2(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t kp, int32_t* c) {
  const int64_t steps = kp / 64;
  if (rows > 16) {
    const uint8_t* a1 = a + 16 * lda;
    int32_t* c1 = c + 16 * kPanel;
    // K-blocking: both halves run over one k chunk (A 32 x 384 bytes + B 64 x 384 bytes = 36 KiB,
    // L1-resident on the second half) before the next chunk; C goes through memory between chunks.
    for (int64_t s0 = 0; s0 < steps || s0 == 0; s0 += kAmxKSteps)
    for (int h = 0; h < 2; ++h) {
      if (s0 == 0) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
      } else {
        _tile_loadd(0, c + h * 32, kPanel * 4);
        _tile_loadd(1, c + h * 32 + 16, kPanel * 4);
        _tile_loadd(2, c1 + h * 32, kPanel * 4);
        _tile_loadd(3, c1 + h * 32 + 16, kPanel * 4);
      }
      const int8_t* bh = panel + h * 128;
      const int64_t s1 = std::min<int64_t>(steps, s0 + kAmxKSteps);
      for (int64_t s = s0; s < s1; ++s) {
        const int8_t* b = bh + s * 16 * 256;
        _tile_loadd(4, a + s * 64, lda);
        _tile_loadd(6, b, 256);
        _tile_dpbusd(0, 4, 6);
        _tile_loadd(5, a1 + s * 64, lda);
        _tile_dpbusd(2, 5, 6);
        _tile_loadd(7, b + 64, 256);
        _tile_dpbusd(1, 4, 7);
        _tile_dpbusd(3, 5, 7);
      }
      _tile_stored(0, c + h * 32, kPanel * 4);
      _tile_stored(1, c + h * 32 + 16, kPanel * 4);
      _tile_stored(2, c1 + h * 32, kPanel * 4);
      _tile_stored(3, c1 + h * 32 + 16, kPanel * 4);
    }
  } else {  // <= 16 rows: one A tile, four B strips (amx_gemm_block with tiles 0-3, 4, 6-7)
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int64_t s = 0; s < steps; ++s) {
      const int8_t* b = panel + s * 16 * 256;
      _tile_loadd(4, a + s * 64, lda);
      _tile_loadd(6, b, 256);
      _tile_dpbusd(0, 4, 6);
      _tile_loadd(7, b + 64, 256);
      _tile_dpbusd(1, 4, 7);
      _tile_loadd(6, b + 128, 256);
      _tile_dpbusd(2, 4, 6);
      _tile_loadd(7, b + 192, 256);
      _tile_dpbusd(3, 4, 7);
    }
    _tile_stored(0, c, kPanel * 4);
    _tile_stored(1, c + 16, kPanel * 4);
    _tile_stored(2, c + 32, kPanel * 4);
    _tile_stored(3, c + 48, kPanel * 4);
  }
  if (steps * 64 == kp) return;
  for (int r = 0; r < rows; ++r) {  // the remaining < 16 groups of 4 k
    int32_t* cr = c + r * kPanel;
    __m512i d0 = _mm512_loadu_si512(cr), d1 = _mm512_loadu_si512(cr + 16), d2 = _mm512_loadu_si512(cr + 32),
            d3 = _mm512_loadu_si512(cr + 48);
    for (int64_t g = steps * 16; g < kp / 4; ++g) {
      const int8_t* w = panel + g * kPanel * 4;
      const __m512i bv = _mm512_set1_epi32(ld_i32(a + r * lda + 4 * g));
      d0 = _mm512_dpbusd_epi32(d0, bv, _mm512_loadu_si512(w));
      d1 = _mm512_dpbusd_epi32(d1, bv, _mm512_loadu_si512(w + 64));
      d2 = _mm512_dpbusd_epi32(d2, bv, _mm512_loadu_si512(w + 128));
      d3 = _mm512_dpbusd_epi32(d3, bv, _mm512_loadu_si512(w + 192));
    }
    _mm512_storeu_si512(cr, d0);
    _mm512_storeu_si512(cr + 16, d1);
    _mm512_storeu_si512(cr + 32, d2);
    _mm512_storeu_si512(cr + 48, d3);
  }
}

// AMX-BF16: the same block geometry as amx_gemm_block (C tiles 0-3 of rows x 16 fp32, A tile 4 of
// rows x 32 bf16, B tiles 5-6 of 16 k-pairs x 16 columns loaded from the pairs panel with stride
// 256 bytes) and TDPBF16PS; K is zero-padded to a multiple of 32 in both operands, so no tail.
#define PFC_AMX_BF16 __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl")))
PFC_AMX_BF16 void amx_bf16_block(const uint16_t* a, int64_t lda, int rows, const uint16_t* pairs, int64_t kp2,
                                 float* c) {
  (void)rows;  // the tile configuration holds the row count
  const int64_t steps = kp2 / 32;
  _tile_zero(0);
  _tile_zero(1);
  _tile_zero(2);
  _tile_zero(3);
  for (int64_t s = 0; s < steps; ++s) {
    const uint16_t* b = pairs + s * 16 * 128;  // 16 k-pairs x 64 columns x 2
    _tile_loadd(4, a + s * 32, lda * 2);
    _tile_loadd(5, b, 256);
    _tile_dpbf16ps(0, 4, 5);
    _tile_loadd(6, b + 32, 256);
    _tile_dpbf16ps(1, 4, 6);
    _tile_loadd(5, b + 64, 256);
    _tile_dpbf16ps(2, 4, 5);
    _tile_loadd(6, b + 96, 256);
    _tile_dpbf16ps(3, 4, 6);
  }
  _tile_stored(0, c, kPanel * 4);
  _tile_stored(1, c + 16, kPanel * 4);
  _tile_stored(2, c + 32, kPanel * 4);
  _tile_stored(3, c + 48, kPanel * 4);
}

// 2x2 blocking for 17-32 rows (after amx_configure2(rows)): per 32-column half, C tiles 0-3 (rows
// 0-15 / 16-31 x two 16-column strips), A tiles 4 and 5, B strips 6 and 7: four tile loads per
// four TDPBF16PS instead of five per four, and each weight strip loaded once for 32 rows. K runs
// in chunks of kAmxKSteps steps (C through memory between chunks) so the chunk of both A row
// blocks and B stays in L1 for the second half. Rows of a block do not interact: same bits per row
// as amx_bf16_block (each C element sums the same products in the same k order).
PFC_AMX_BF16 void amx_bf16_block2(const uint16_t* a, int64_t lda, int rows, const uint16_t* pairs, int64_t kp2,
                                  float* c) {
  (void)rows;
  const int64_t steps = kp2 / 32;
  const uint16_t* a1 = a + 16 * lda;
  float* c1 = c + 16 * kPanel;
  for (int64_t s0 = 0; s0 < steps; s0 += kAmxKSteps)
    for (int h = 0; h < 2; ++h) {
      if (s0 == 0) {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
      } else {
        _tile_loadd(0, c + h * 32, kPanel * 4);
        _tile_loadd(1, c + h * 32 + 16, kPanel * 4);
        _tile_loadd(2, c1 + h * 32, kPanel * 4);
        _tile_loadd(3, c1 + h * 32 + 16, kPanel * 4);
      }
      const uint16_t* bh = pairs + h * 64;  // columns 32h.. of each 256-byte k-pair row
      const int64_t s1 = std::min<int64_t>(steps, s0 + kAmxKSteps);
      for (int64_t s = s0; s < s1; ++s) {
        const uint16_t* b = bh + s * 16 * 128;
        _tile_loadd(4, a + s * 32, lda * 2);
        _tile_loadd(6, b, 256);
        _tile_dpbf16ps(0, 4, 6);
        _tile_loadd(5, a1 + s * 32, lda * 2);
        _tile_dpbf16ps(2, 5, 6);
        _tile_loadd(7, b + 32, 256);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(3, 5, 7);
      }
      _tile_stored(0, c + h * 32, kPanel * 4);
      _tile_stored(1, c + h * 32 + 16, kPanel * 4);
      _tile_stored(2, c1 + h * 32, kPanel * 4);
      _tile_stored(3, c1 + h * 32 + 16, kPanel * 4);
    }
}

// A 64-byte row of the pairs layout is 16 columns x (even k, odd k) as 32-bit lanes: the even k
// is the low half (shift it up), the odd k the high half (mask the low one off).
PFC_AVX512 void widen_pairs(const uint16_t* pairs, int64_t k, float* out) {
  const __m512i hi = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  for (int64_t g = 0; 2 * g < k; ++g) {
    const bool odd = 2 * g + 1 < k;
    for (int j = 0; j < 4; ++j) {
      const __m512i v = _mm512_loadu_si512(pairs + g * kPanel * 2 + j * 32);
      _mm512_storeu_ps(out + (2 * g) * kPanel + 16 * j, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
      if (odd) _mm512_storeu_ps(out + (2 * g + 1) * kPanel + 16 * j, _mm512_castsi512_ps(_mm512_and_si512(v, hi)));
    }
  }
}

// fp32 FMA tile (rows <= 6) straight from a pairs panel: per k-pair the even k's weights, then the
// odd k's, each FMA'd into every row: the same k-ascending FMA sequence as a5_f32_rows on a
// widened panel, so the same bits, without writing the widened panel for a few rows.
template <int R>
PFC_AVX512 void pairs_rows(const float* x, int64_t ldx, const uint16_t* pairs, int64_t k, float* c) {
  const __m512i hi = _mm512_set1_epi32(static_cast<int>(0xFFFF0000u));
  __m512 acc[R][4];
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_ps();
  for (int64_t g = 0; 2 * g < k; ++g) {
    const uint16_t* w = pairs + g * kPanel * 2;
    __m512i v[4];
    for (int j = 0; j < 4; ++j) v[j] = _mm512_loadu_si512(w + 32 * j);
    for (int j = 0; j < 4; ++j) {
      const __m512 we = _mm512_castsi512_ps(_mm512_slli_epi32(v[j], 16));
      for (int r = 0; r < R; ++r) acc[r][j] = _mm512_fmadd_ps(_mm512_set1_ps(x[r * ldx + 2 * g]), we, acc[r][j]);
    }
    if (2 * g + 1 < k)
      for (int j = 0; j < 4; ++j) {
        const __m512 wo = _mm512_castsi512_ps(_mm512_and_si512(v[j], hi));
        for (int r = 0; r < R; ++r)
          acc[r][j] = _mm512_fmadd_ps(_mm512_set1_ps(x[r * ldx + 2 * g + 1]), wo, acc[r][j]);
      }
  }
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < 4; ++j) _mm512_storeu_ps(c + r * kPanel + 16 * j, acc[r][j]);
}
PFC_AVX512 void pairs_tile(const float* x, int64_t ldx, int rows, const uint16_t* pairs, int64_t k, float* c) {
  switch (rows) {
    case 6: pairs_rows<6>(x, ldx, pairs, k, c); break;
    case 5: pairs_rows<5>(x, ldx, pairs, k, c); break;
    case 4: pairs_rows<4>(x, ldx, pairs, k, c); break;
    case 3: pairs_rows<3>(x, ldx, pairs, k, c); break;
    case 2: pairs_rows<2>(x, ldx, pairs, k, c); break;
    default: pairs_rows<1>(x, ldx, pairs, k, c); break;
  }
}

// Round to nearest even as float_to_bf16 does (bits + 0x7FFF + lsb) >> 16, 16 at a time.
PFC_AVX512 void bf16_row(const float* x, int64_t k, int64_t kp2, uint16_t* q, bool* bad) {
  const __m512 big = _mm512_set1_ps(FLT_MAX);
  const __m512i bias = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1);
  __mmask16 b = 0;
  for (int64_t i = 0; i < kp2; i += 16) {
    const __mmask16 m = mask_n(std::max<int64_t>(k - i, 0));
    const __m512 v = _mm512_maskz_loadu_ps(m, x + i);
    b |= _mm512_mask_cmp_ps_mask(m, _mm512_abs_ps(v), big, _CMP_NLE_UQ);
    const __m512i u = _mm512_castps_si512(v);
    const __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(u, bias), _mm512_and_si512(_mm512_srli_epi32(u, 16), one)), 16);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), _mm512_cvtepi32_epi16(r));
  }
  if (b) *bad = true;
}

#endif  // compiler with AMX intrinsics

// CPUID.(7,0):EDX bits 24 (AMX-TILE) and 25 (AMX-INT8), then Linux must grant the 8 KiB tile
// state to this process (arch_prctl ARCH_REQ_XCOMP_PERM for XTILEDATA); any failure means no AMX.
bool amx_supported() {
#if !defined(PFC_HAVE_AMX)
  return false;
#else
  static const bool ok = [] {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    if (!((d >> 24) & 1u) || !((d >> 25) & 1u)) return false;
#if defined(__linux__)
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
    return false;
#endif
  }();
  return ok;
#endif
}
// CPUID.(7,0):EDX bit 22 (AMX-BF16) on top of amx_supported().
bool amx_bf16_supported() {
#if !defined(PFC_HAVE_AMX)
  return false;
#else
  static const bool ok = [] {
    unsigned a, b, c, d;
    if (!amx_supported() || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return ((d >> 22) & 1u) != 0;
  }();
  return ok;
#endif
}
#if !defined(PFC_HAVE_AMX)
void amx_configure(int) {}
void amx_release() {}
void amx_gemm_block(const uint8_t*, int64_t, int, const int8_t*, int64_t, int32_t*) {}
void amx_configure2(int) {}
void amx_gemm_block2(const uint8_t*, int64_t, int, const int8_t*, int64_t, int32_t*) {}
void amx_bf16_block(const uint16_t*, int64_t, int, const uint16_t*, int64_t, float*) {}
void amx_bf16_block2(const uint16_t*, int64_t, int, const uint16_t*, int64_t, float*) {}
void bf16_row(const float*, int64_t, int64_t, uint16_t*, bool*) {}
void widen_pairs(const uint16_t*, int64_t, float*) {}
void pairs_tile(const float*, int64_t, int, const uint16_t*, int64_t, float*) {}
#endif

const LinearKernels kLinAvx512Vnni = {a5_minmax, a5_quant_row, vn_gemm_tile, a5_epi_i8, a5_epi_i8_rows, a5_half_tile,
                                      a5_widen_panel, a5_f32_tile, a5_epi_f, 0};
#else
const LinearKernels kLinAvx2 = kLinScalar;
const LinearKernels kLinAvx512 = kLinScalar;
const LinearKernels kLinAvx512Vnni = kLinScalar;
bool amx_supported() { return false; }
bool amx_bf16_supported() { return false; }
void amx_configure(int) {}
void amx_release() {}
void amx_gemm_block(const uint8_t*, int64_t, int, const int8_t*, int64_t, int32_t*) {}
void amx_configure2(int) {}
void amx_gemm_block2(const uint8_t*, int64_t, int, const int8_t*, int64_t, int32_t*) {}
void amx_bf16_block(const uint16_t*, int64_t, int, const uint16_t*, int64_t, float*) {}
void amx_bf16_block2(const uint16_t*, int64_t, int, const uint16_t*, int64_t, float*) {}
void bf16_row(const float*, int64_t, int64_t, uint16_t*, bool*) {}
void widen_pairs(const uint16_t*, int64_t, float*) {}
void pairs_tile(const float*, int64_t, int, const uint16_t*, int64_t, float*) {}
#endif

}  // namespace detail
}  // namespace quant
}  // namespace pyperfcore
