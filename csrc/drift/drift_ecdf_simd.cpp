// Bucket passes of the two-sample statistics (see drift_ecdf.cpp) in scalar, AVX2 and AVX-512
// variants. Each function carries its own target attribute; the bucket of a value is computed
// with the same IEEE operations as detail::bucket_of in every variant.
#include <cmath>

#include "drift_kernels.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace pyperfcore {
namespace drift {
namespace detail {

namespace {
constexpr double kHuge = 1152921504606846976.0;  // 2^60: |t| at or above it flags the input

inline void tally(int32_t j, double v, uint32_t* counts, double* mm) {
  ++counts[j];
  double* q = mm + 2 * static_cast<int64_t>(j);
  q[0] = v < q[0] ? v : q[0];
  q[1] = v > q[1] ? v : q[1];
}

template <bool MM>
int s_count_t(const double* x, int64_t n, const BucketMap& m, uint32_t* counts, double* mm) {
  int bad = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double t = (x[i] - m.lo) * m.scale;
    if (!(std::fabs(t) < kHuge)) bad |= t != t ? 1 : 2;
    const int32_t j = bucket_of(t, m.kmax);
    if (MM)
      tally(j, x[i], counts, mm);
    else
      ++counts[j];
  }
  return bad;
}
int s_count_mm(const double* x, int64_t n, const BucketMap& m, uint32_t* counts, double* mm) {
  return s_count_t<true>(x, n, m, counts, mm);
}
int s_count(const double* x, int64_t n, const BucketMap& m, uint32_t* counts) {
  return s_count_t<false>(x, n, m, counts, nullptr);
}

int64_t s_pass2(const double* x, int64_t n, const BucketMap& m, const double* sg, double* xs, uint32_t* js,
                double* acc) {
  double sum = 0;
  int64_t w = 0;
  for (int64_t i = 0; i < n; ++i) {  // branch-free: flagged values are often half of a run
    const double t = (x[i] - m.lo) * m.scale;
    const int32_t j = bucket_of(t, m.kmax);
    const double s = sg[j];
    const bool flag = s != s;
    xs[w] = x[i];
    js[w] = static_cast<uint32_t>(j);
    w += flag;
    const double c = s * (1.0 - (t - static_cast<double>(j)));
    sum += flag ? 0.0 : c;
  }
  *acc += sum;
  return w;
}
}  // namespace

const BucketKernels kBucketScalar = {s_count, s_count_mm, s_pass2};

#if defined(__x86_64__)
// ---------------------------------------------------------------- AVX2
#define PFC_AVX2 __attribute__((target("avx2")))
namespace {
template <bool MM>
PFC_AVX2 int a2_count_t(const double* x, int64_t n, const BucketMap& m, uint32_t* counts, double* mm) {
  const __m256d lo = _mm256_set1_pd(m.lo), sc = _mm256_set1_pd(m.scale), km = _mm256_set1_pd(m.kmax);
  const __m256d zero = _mm256_setzero_pd(), huge = _mm256_set1_pd(kHuge);
  const __m256d absmask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL));
  __m256d nan = zero, big = zero;
  alignas(16) int32_t j[8];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {  // two vectors per step: the increments of one overlap the other's math
    const __m256d t0 = _mm256_mul_pd(_mm256_sub_pd(_mm256_loadu_pd(x + i), lo), sc);
    const __m256d t1 = _mm256_mul_pd(_mm256_sub_pd(_mm256_loadu_pd(x + i + 4), lo), sc);
    nan = _mm256_or_pd(nan, _mm256_or_pd(_mm256_cmp_pd(t0, t0, _CMP_UNORD_Q), _mm256_cmp_pd(t1, t1, _CMP_UNORD_Q)));
    big = _mm256_or_pd(big, _mm256_or_pd(_mm256_cmp_pd(_mm256_and_pd(t0, absmask), huge, _CMP_NLT_UQ),
                                         _mm256_cmp_pd(_mm256_and_pd(t1, absmask), huge, _CMP_NLT_UQ)));
    _mm_store_si128(reinterpret_cast<__m128i*>(j), _mm256_cvttpd_epi32(_mm256_min_pd(_mm256_max_pd(t0, zero), km)));
    _mm_store_si128(reinterpret_cast<__m128i*>(j + 4), _mm256_cvttpd_epi32(_mm256_min_pd(_mm256_max_pd(t1, zero), km)));
    for (int k = 0; k < 8; ++k) {
      if (MM)
        tally(j[k], x[i + k], counts, mm);
      else
        ++counts[j[k]];
    }
  }
  int bad = s_count_t<MM>(x + i, n - i, m, counts, mm);
  if (_mm256_movemask_pd(nan)) bad |= 1;
  if (_mm256_movemask_pd(big)) bad |= 2;  // also set by NaN lanes: callers test bit 1 first
  return bad;
}

PFC_AVX2 int64_t a2_pass2(const double* x, int64_t n, const BucketMap& m, const double* sg, double* xs, uint32_t* js,
                          double* acc) {
  const __m256d lo = _mm256_set1_pd(m.lo), sc = _mm256_set1_pd(m.scale), km = _mm256_set1_pd(m.kmax);
  const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0);
  __m256d sum = zero;
  alignas(16) int32_t jj[4];
  int64_t i = 0, w = 0;
  for (; i + 4 <= n; i += 4) {
    const __m256d t = _mm256_mul_pd(_mm256_sub_pd(_mm256_loadu_pd(x + i), lo), sc);
    const __m128i j = _mm256_cvttpd_epi32(_mm256_min_pd(_mm256_max_pd(t, zero), km));
    const __m256d s = _mm256_i32gather_pd(sg, j, 8);
    const __m256d g = _mm256_cmp_pd(s, s, _CMP_UNORD_Q);
    const __m256d c = _mm256_mul_pd(s, _mm256_sub_pd(one, _mm256_sub_pd(t, _mm256_cvtepi32_pd(j))));
    sum = _mm256_add_pd(sum, _mm256_andnot_pd(g, c));
    const int mask = _mm256_movemask_pd(g);
    if (mask) {  // branch-free append of the flagged lanes
      _mm_store_si128(reinterpret_cast<__m128i*>(jj), j);
      for (int k = 0; k < 4; ++k) {
        xs[w] = x[i + k];
        js[w] = static_cast<uint32_t>(jj[k]);
        w += mask >> k & 1;
      }
    }
  }
  alignas(32) double a[4];
  _mm256_store_pd(a, sum);
  *acc += (a[0] + a[1]) + (a[2] + a[3]);
  return w + s_pass2(x + i, n - i, m, sg, xs + w, js + w, acc);
}
}  // namespace

PFC_AVX2 int a2_count(const double* x, int64_t n, const BucketMap& m, uint32_t* counts) {
  return a2_count_t<false>(x, n, m, counts, nullptr);
}
PFC_AVX2 int a2_count_mm(const double* x, int64_t n, const BucketMap& m, uint32_t* counts, double* mm) {
  return a2_count_t<true>(x, n, m, counts, mm);
}

const BucketKernels kBucketAvx2 = {a2_count, a2_count_mm, a2_pass2};

// ---------------------------------------------------------------- AVX-512
#define PFC_AVX512 __attribute__((target("avx512f,avx512dq,avx2")))
namespace {
template <bool MM>
PFC_AVX512 int a5_count_t(const double* x, int64_t n, const BucketMap& m, uint32_t* counts, double* mm) {
  const __m512d lo = _mm512_set1_pd(m.lo), sc = _mm512_set1_pd(m.scale), km = _mm512_set1_pd(m.kmax);
  const __m512d zero = _mm512_setzero_pd(), huge = _mm512_set1_pd(kHuge);
  __mmask8 nan = 0, big = 0;
  alignas(32) int32_t j[16];
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512d t0 = _mm512_mul_pd(_mm512_sub_pd(_mm512_loadu_pd(x + i), lo), sc);
    const __m512d t1 = _mm512_mul_pd(_mm512_sub_pd(_mm512_loadu_pd(x + i + 8), lo), sc);
    nan |= _mm512_cmp_pd_mask(t0, t0, _CMP_UNORD_Q) | _mm512_cmp_pd_mask(t1, t1, _CMP_UNORD_Q);
    big |= _mm512_cmp_pd_mask(_mm512_abs_pd(t0), huge, _CMP_NLT_UQ) | _mm512_cmp_pd_mask(_mm512_abs_pd(t1), huge, _CMP_NLT_UQ);
    _mm256_store_si256(reinterpret_cast<__m256i*>(j), _mm512_cvttpd_epi32(_mm512_min_pd(_mm512_max_pd(t0, zero), km)));
    _mm256_store_si256(reinterpret_cast<__m256i*>(j + 8), _mm512_cvttpd_epi32(_mm512_min_pd(_mm512_max_pd(t1, zero), km)));
    for (int k = 0; k < 16; ++k) {
      if (MM)
        tally(j[k], x[i + k], counts, mm);
      else
        ++counts[j[k]];
    }
  }
  int bad = s_count_t<MM>(x + i, n - i, m, counts, mm);
  if (nan) bad |= 1;
  if (big) bad |= 2;  // also set by NaN lanes: callers test bit 1 first
  return bad;
}

PFC_AVX512 int64_t a5_pass2(const double* x, int64_t n, const BucketMap& m, const double* sg, double* xs,
                            uint32_t* js, double* acc) {
  const __m512d lo = _mm512_set1_pd(m.lo), sc = _mm512_set1_pd(m.scale), km = _mm512_set1_pd(m.kmax);
  const __m512d zero = _mm512_setzero_pd(), one = _mm512_set1_pd(1.0);
  __m512d sum = zero;
  int64_t i = 0, w = 0;
  for (; i + 8 <= n; i += 8) {
    const __m512d v = _mm512_loadu_pd(x + i);
    const __m512d t = _mm512_mul_pd(_mm512_sub_pd(v, lo), sc);
    const __m256i j = _mm512_cvttpd_epi32(_mm512_min_pd(_mm512_max_pd(t, zero), km));
    const __m512d s = _mm512_i32gather_pd(j, sg, 8);
    const __mmask8 g = _mm512_cmp_pd_mask(s, s, _CMP_UNORD_Q);
    const __m512d c = _mm512_mul_pd(s, _mm512_sub_pd(one, _mm512_sub_pd(t, _mm512_cvtepi32_pd(j))));
    sum = _mm512_mask_add_pd(sum, static_cast<__mmask8>(~g), sum, c);
    if (g) {  // compress-store the flagged lanes
      _mm512_mask_compressstoreu_pd(xs + w, g, v);
      _mm512_mask_compressstoreu_epi32(js + w, static_cast<__mmask16>(g), _mm512_castsi256_si512(j));
      w += __builtin_popcount(g);
    }
  }
  *acc += _mm512_reduce_add_pd(sum);
  return w + s_pass2(x + i, n - i, m, sg, xs + w, js + w, acc);
}
}  // namespace

PFC_AVX512 int a5_count(const double* x, int64_t n, const BucketMap& m, uint32_t* counts) {
  return a5_count_t<false>(x, n, m, counts, nullptr);
}
PFC_AVX512 int a5_count_mm(const double* x, int64_t n, const BucketMap& m, uint32_t* counts, double* mm) {
  return a5_count_t<true>(x, n, m, counts, mm);
}

const BucketKernels kBucketAvx512 = {a5_count, a5_count_mm, a5_pass2};
#else
const BucketKernels kBucketAvx2 = kBucketScalar;
const BucketKernels kBucketAvx512 = kBucketScalar;
#endif

}  // namespace detail
}  // namespace drift
}  // namespace pyperfcore
