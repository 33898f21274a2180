// SIMD variants of the drift accumulator kernels. Each function carries its own target
// attribute; nothing here is compiled for a whole-file ISA, so the binary runs on any x86-64.
#include <cmath>
#include <cstring>
#include <limits>

#include "drift_kernels.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace pyperfcore {
namespace drift {
namespace detail {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();

// Slot of x in counts[k + 3] (see Histogram): branch-free upper bound over the edges.
inline int64_t slot_of(double x, const double* e, int64_t ne) {
  if (x != x) return ne + 1;
  int64_t lo = 0, len = ne;
  while (len > 1) {
    const int64_t half = len >> 1;
    lo = (e[lo + half] <= x) ? lo + half : lo;
    len -= half;
  }
  const int64_t ub = lo + (e[lo] <= x ? 1 : 0);
  return ub - (x == e[ne - 1] ? 1 : 0);
}

template <class T>
void s_hist(const T* x, int64_t n, const double* e, int64_t ne, uint64_t* counts) {
  for (int64_t i = 0; i < n; ++i) ++counts[slot_of(static_cast<double>(x[i]), e, ne)];
}

template <class T>
void s_pass1(const T* x, int64_t n, Pass1* o) {
  Pass1 r;
  double mn = kInf, mx = -kInf;
  for (int64_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(x[i]);
    if (v != v) {
      ++r.nan;
    } else if (v == kInf) {
      ++r.posinf;
    } else if (v == -kInf) {
      ++r.neginf;
    } else {
      ++r.n;
      r.sum += v;
      mn = v < mn ? v : mn;
      mx = v > mx ? v : mx;
    }
  }
  r.min = mn;
  r.max = mx;
  *o = r;
}

template <class T>
void s_pass2(const T* x, int64_t n, double mean, double* s) {
  double s2 = 0, s3 = 0, s4 = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(x[i]);
    if (!(std::fabs(v) < kInf)) continue;
    const double d = v - mean, d2 = d * d;
    s2 += d2;
    s3 += d2 * d;
    s4 += d2 * d2;
  }
  s[0] += s2;
  s[1] += s3;
  s[2] += s4;
}
// Slot of a value outside [e[0], e[ne - 1]) or NaN (see Histogram).
inline int64_t out_slot(double v, double first, double last, int64_t ne) {
  return v != v ? ne + 1 : (v < first ? 0 : (v == last ? ne - 1 : ne));
}

// Lookup-table slots (see Histogram::lut_), one value at a time, by the same steps as the SIMD
// variants: start at lut[c], scan the cell's own edges (lut[c] .. lut[c + 1]) past those <= v.
template <class T>
void s_hist_lut(const T* x, int64_t n, const double* e, int64_t ne, const uint32_t* lut, int64_t cells, double scale,
                uint64_t* counts) {
  const double first = e[0], last = e[ne - 1];
  for (int64_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(x[i]);
    if (!(v >= first && v < last)) {
      ++counts[out_slot(v, first, last, ne)];
      continue;
    }
    int64_t c = static_cast<int64_t>((v - first) * scale);
    c = c < cells - 1 ? c : cells - 1;
    uint32_t idx = lut[c];
    const uint32_t hi = lut[c + 1];
    while (idx < hi && e[idx] <= v) ++idx;
    ++counts[idx];
  }
}
}  // namespace

const Kernels kScalar = {s_hist<double>, s_hist<float>, s_pass1<double>, s_pass1<float>,
                         s_pass2<double>, s_pass2<float>, nullptr, nullptr};

#if defined(__x86_64__)
// ---------------------------------------------------------------- AVX2
#define PFC_AVX2 __attribute__((target("avx2,fma")))
namespace {
PFC_AVX2 inline __m256d ld4(const double* p) { return _mm256_loadu_pd(p); }
PFC_AVX2 inline __m256d ld4(const float* p) { return _mm256_cvtps_pd(_mm_loadu_ps(p)); }

template <class T>
PFC_AVX2 void a2_hist(const T* x, int64_t n, const double* e, int64_t ne, uint64_t* counts) {
  const __m256d last = _mm256_set1_pd(e[ne - 1]);
  const __m256i nanslot = _mm256_set1_epi64x(ne + 1);
  alignas(32) int64_t slots[4];
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m256d v = ld4(x + i);
    __m256i lo = _mm256_setzero_si256();
    int64_t len = ne;
    while (len > 1) {
      const int64_t half = len >> 1;
      const __m256i h = _mm256_set1_epi64x(half);
      const __m256d g = _mm256_i64gather_pd(e, _mm256_add_epi64(lo, h), 8);
      const __m256i le = _mm256_castpd_si256(_mm256_cmp_pd(g, v, _CMP_LE_OQ));
      lo = _mm256_add_epi64(lo, _mm256_and_si256(le, h));
      len -= half;
    }
    const __m256d g = _mm256_i64gather_pd(e, lo, 8);
    __m256i ub = _mm256_sub_epi64(lo, _mm256_castpd_si256(_mm256_cmp_pd(g, v, _CMP_LE_OQ)));
    ub = _mm256_add_epi64(ub, _mm256_castpd_si256(_mm256_cmp_pd(v, last, _CMP_EQ_OQ)));
    const __m256d isnan = _mm256_cmp_pd(v, v, _CMP_UNORD_Q);
    ub = _mm256_castpd_si256(_mm256_blendv_pd(_mm256_castsi256_pd(ub), _mm256_castsi256_pd(nanslot), isnan));
    _mm256_store_si256(reinterpret_cast<__m256i*>(slots), ub);
    ++counts[slots[0]];
    ++counts[slots[1]];
    ++counts[slots[2]];
    ++counts[slots[3]];
  }
  s_hist(x + i, n - i, e, ne, counts);
}

template <class T>
PFC_AVX2 void a2_pass1(const T* x, int64_t n, Pass1* o) {
  const __m256d inf = _mm256_set1_pd(kInf), ninf = _mm256_set1_pd(-kInf);
  const __m256d absmask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL));
  __m256d sum = _mm256_setzero_pd(), mn = inf, mx = ninf;
  uint64_t cn = 0, cnan = 0, cpos = 0, cneg = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m256d v = ld4(x + i);
    const __m256d fin = _mm256_cmp_pd(_mm256_and_pd(v, absmask), inf, _CMP_LT_OQ);
    sum = _mm256_add_pd(sum, _mm256_and_pd(v, fin));
    mn = _mm256_min_pd(mn, _mm256_blendv_pd(inf, v, fin));
    mx = _mm256_max_pd(mx, _mm256_blendv_pd(ninf, v, fin));
    cn += static_cast<uint64_t>(__builtin_popcount(_mm256_movemask_pd(fin)));
    cnan += static_cast<uint64_t>(__builtin_popcount(_mm256_movemask_pd(_mm256_cmp_pd(v, v, _CMP_UNORD_Q))));
    cpos += static_cast<uint64_t>(__builtin_popcount(_mm256_movemask_pd(_mm256_cmp_pd(v, inf, _CMP_EQ_OQ))));
    cneg += static_cast<uint64_t>(__builtin_popcount(_mm256_movemask_pd(_mm256_cmp_pd(v, ninf, _CMP_EQ_OQ))));
  }
  alignas(32) double s[4], a[4], b[4];
  _mm256_store_pd(s, sum);
  _mm256_store_pd(a, mn);
  _mm256_store_pd(b, mx);
  Pass1 t;
  s_pass1(x + i, n - i, &t);
  Pass1 r;
  r.n = cn + t.n;
  r.nan = cnan + t.nan;
  r.posinf = cpos + t.posinf;
  r.neginf = cneg + t.neginf;
  r.sum = ((s[0] + s[1]) + (s[2] + s[3])) + t.sum;
  r.min = t.n ? t.min : kInf;
  r.max = t.n ? t.max : -kInf;
  for (int j = 0; j < 4; ++j) {
    r.min = a[j] < r.min ? a[j] : r.min;
    r.max = b[j] > r.max ? b[j] : r.max;
  }
  *o = r;
}

template <class T>
PFC_AVX2 void a2_pass2(const T* x, int64_t n, double mean, double* s) {
  const __m256d inf = _mm256_set1_pd(kInf), m = _mm256_set1_pd(mean);
  const __m256d absmask = _mm256_castsi256_pd(_mm256_set1_epi64x(0x7fffffffffffffffLL));
  __m256d s2 = _mm256_setzero_pd(), s3 = s2, s4 = s2;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m256d v = ld4(x + i);
    const __m256d fin = _mm256_cmp_pd(_mm256_and_pd(v, absmask), inf, _CMP_LT_OQ);
    const __m256d d = _mm256_and_pd(_mm256_sub_pd(v, m), fin);
    const __m256d d2 = _mm256_mul_pd(d, d);
    s2 = _mm256_add_pd(s2, d2);
    s3 = _mm256_fmadd_pd(d2, d, s3);
    s4 = _mm256_fmadd_pd(d2, d2, s4);
  }
  alignas(32) double a[4], b[4], c[4];
  _mm256_store_pd(a, s2);
  _mm256_store_pd(b, s3);
  _mm256_store_pd(c, s4);
  s[0] += (a[0] + a[1]) + (a[2] + a[3]);
  s[1] += (b[0] + b[1]) + (b[2] + b[3]);
  s[2] += (c[0] + c[1]) + (c[2] + c[3]);
  s_pass2(x + i, n - i, mean, s);
}
template <class T>
PFC_AVX2 void a2_hist_lut(const T* x, int64_t n, const double* e, int64_t ne, const uint32_t* lut, int64_t cells,
                          double scale, uint64_t* counts) {
  const double first = e[0], last = e[ne - 1];
  const __m256d vf = _mm256_set1_pd(first), vl = _mm256_set1_pd(last), sc = _mm256_set1_pd(scale);
  const __m256i low = _mm256_set1_epi64x(0xffffffffLL);
  const __m128i cmax = _mm_set1_epi32(static_cast<int32_t>(cells - 1));
  alignas(32) int64_t slots[4];
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    const __m256d v = ld4(x + i);
    const __m256d in = _mm256_and_pd(_mm256_cmp_pd(v, vf, _CMP_GE_OQ), _mm256_cmp_pd(v, vl, _CMP_LT_OQ));
    const __m256d t = _mm256_and_pd(in, _mm256_mul_pd(_mm256_sub_pd(v, vf), sc));  // 0 outside
    const __m128i c = _mm_min_epi32(_mm256_cvttpd_epi32(t), cmax);
    // lut[c] and lut[c + 1] in one 8-byte gather (little-endian: lut[c] in the low half)
    const __m256i pr = _mm256_i32gather_epi64(reinterpret_cast<const long long*>(lut), c, 4);
    __m256i idx = _mm256_and_si256(pr, low);
    const __m256i hi = _mm256_srli_epi64(pr, 32);
    __m256d m = _mm256_and_pd(in, _mm256_castsi256_pd(_mm256_cmpgt_epi64(hi, idx)));
    while (_mm256_movemask_pd(m)) {  // only lanes whose cell holds edges
      m = _mm256_and_pd(m, _mm256_cmp_pd(_mm256_mask_i64gather_pd(v, e, idx, m, 8), v, _CMP_LE_OQ));
      idx = _mm256_sub_epi64(idx, _mm256_castpd_si256(m));  // m lanes are -1
      m = _mm256_and_pd(m, _mm256_castsi256_pd(_mm256_cmpgt_epi64(hi, idx)));
    }
    _mm256_store_si256(reinterpret_cast<__m256i*>(slots), idx);
    const int inm = _mm256_movemask_pd(in);
    for (int j = 0; j < 4; ++j)
      ++counts[(inm >> j & 1) ? slots[j] : out_slot(static_cast<double>(x[i + j]), first, last, ne)];
  }
  s_hist_lut(x + i, n - i, e, ne, lut, cells, scale, counts);
}
}  // namespace

const Kernels kAvx2 = {a2_hist<double>, a2_hist<float>, a2_pass1<double>, a2_pass1<float>,
                       a2_pass2<double>, a2_pass2<float>, a2_hist_lut<double>, a2_hist_lut<float>};

// ---------------------------------------------------------------- AVX-512
#define PFC_AVX512 __attribute__((target("avx512f,avx512dq,avx2,fma")))
namespace {
PFC_AVX512 inline __m512d ld8(const double* p) { return _mm512_loadu_pd(p); }
PFC_AVX512 inline __m512d ld8(const float* p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }

template <class T>
PFC_AVX512 void a5_hist(const T* x, int64_t n, const double* e, int64_t ne, uint64_t* counts) {
  const __m512d last = _mm512_set1_pd(e[ne - 1]);
  const __m512i nanslot = _mm512_set1_epi64(ne + 1), one = _mm512_set1_epi64(1);
  alignas(64) int64_t slots[8];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m512d v = ld8(x + i);
    __m512i lo = _mm512_setzero_si512();
    int64_t len = ne;
    while (len > 1) {
      const int64_t half = len >> 1;
      const __m512i h = _mm512_set1_epi64(half);
      const __m512d g = _mm512_i64gather_pd(_mm512_add_epi64(lo, h), e, 8);
      const __mmask8 le = _mm512_cmp_pd_mask(g, v, _CMP_LE_OQ);
      lo = _mm512_mask_add_epi64(lo, le, lo, h);
      len -= half;
    }
    const __m512d g = _mm512_i64gather_pd(lo, e, 8);
    __m512i ub = _mm512_mask_add_epi64(lo, _mm512_cmp_pd_mask(g, v, _CMP_LE_OQ), lo, one);
    ub = _mm512_mask_sub_epi64(ub, _mm512_cmp_pd_mask(v, last, _CMP_EQ_OQ), ub, one);
    ub = _mm512_mask_mov_epi64(ub, _mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q), nanslot);
    _mm512_store_si512(reinterpret_cast<__m512i*>(slots), ub);
    for (int j = 0; j < 8; ++j) ++counts[slots[j]];
  }
  s_hist(x + i, n - i, e, ne, counts);
}

template <class T>
PFC_AVX512 void a5_pass1(const T* x, int64_t n, Pass1* o) {
  const __m512d inf = _mm512_set1_pd(kInf), ninf = _mm512_set1_pd(-kInf);
  __m512d sum = _mm512_setzero_pd(), mn = inf, mx = ninf;
  uint64_t cn = 0, cnan = 0, cpos = 0, cneg = 0;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m512d v = ld8(x + i);
    const __mmask8 fin = _mm512_cmp_pd_mask(_mm512_abs_pd(v), inf, _CMP_LT_OQ);
    sum = _mm512_mask_add_pd(sum, fin, sum, v);
    mn = _mm512_mask_min_pd(mn, fin, mn, v);
    mx = _mm512_mask_max_pd(mx, fin, mx, v);
    cn += static_cast<uint64_t>(__builtin_popcount(fin));
    cnan += static_cast<uint64_t>(__builtin_popcount(_mm512_cmp_pd_mask(v, v, _CMP_UNORD_Q)));
    cpos += static_cast<uint64_t>(__builtin_popcount(_mm512_cmp_pd_mask(v, inf, _CMP_EQ_OQ)));
    cneg += static_cast<uint64_t>(__builtin_popcount(_mm512_cmp_pd_mask(v, ninf, _CMP_EQ_OQ)));
  }
  Pass1 t;
  s_pass1(x + i, n - i, &t);
  Pass1 r;
  r.n = cn + t.n;
  r.nan = cnan + t.nan;
  r.posinf = cpos + t.posinf;
  r.neginf = cneg + t.neginf;
  r.sum = _mm512_reduce_add_pd(sum) + t.sum;
  const double a = _mm512_reduce_min_pd(mn), b = _mm512_reduce_max_pd(mx);
  r.min = t.n && t.min < a ? t.min : a;
  r.max = t.n && t.max > b ? t.max : b;
  *o = r;
}

template <class T>
PFC_AVX512 void a5_pass2(const T* x, int64_t n, double mean, double* s) {
  const __m512d inf = _mm512_set1_pd(kInf), m = _mm512_set1_pd(mean);
  __m512d s2 = _mm512_setzero_pd(), s3 = s2, s4 = s2;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m512d v = ld8(x + i);
    const __mmask8 fin = _mm512_cmp_pd_mask(_mm512_abs_pd(v), inf, _CMP_LT_OQ);
    const __m512d d = _mm512_maskz_sub_pd(fin, v, m);
    const __m512d d2 = _mm512_mul_pd(d, d);
    s2 = _mm512_add_pd(s2, d2);
    s3 = _mm512_fmadd_pd(d2, d, s3);
    s4 = _mm512_fmadd_pd(d2, d2, s4);
  }
  s[0] += _mm512_reduce_add_pd(s2);
  s[1] += _mm512_reduce_add_pd(s3);
  s[2] += _mm512_reduce_add_pd(s4);
  s_pass2(x + i, n - i, mean, s);
}
template <class T>
PFC_AVX512 void a5_hist_lut(const T* x, int64_t n, const double* e, int64_t ne, const uint32_t* lut, int64_t cells,
                            double scale, uint64_t* counts) {
  const double first = e[0], last = e[ne - 1];
  const __m512d vf = _mm512_set1_pd(first), vl = _mm512_set1_pd(last), sc = _mm512_set1_pd(scale);
  const __m512i one = _mm512_set1_epi64(1), low = _mm512_set1_epi64(0xffffffffLL);
  const __m256i cmax = _mm256_set1_epi32(static_cast<int32_t>(cells - 1));
  alignas(64) int64_t slots[8];
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m512d v = ld8(x + i);
    const __mmask8 in = _mm512_cmp_pd_mask(v, vf, _CMP_GE_OQ) & _mm512_cmp_pd_mask(v, vl, _CMP_LT_OQ);
    const __m512d t = _mm512_maskz_mul_pd(in, _mm512_sub_pd(v, vf), sc);  // 0 outside
    const __m256i c = _mm256_min_epi32(_mm512_cvttpd_epi32(t), cmax);
    // lut[c] and lut[c + 1] in one 8-byte gather (little-endian: lut[c] in the low half)
    const __m512i pr = _mm512_i32gather_epi64(c, reinterpret_cast<const long long*>(lut), 4);
    __m512i idx = _mm512_and_si512(pr, low);
    const __m512i hi = _mm512_srli_epi64(pr, 32);
    __mmask8 m = in & _mm512_cmplt_epu64_mask(idx, hi);
    while (m) {  // only lanes whose cell holds edges
      m &= _mm512_cmp_pd_mask(_mm512_mask_i64gather_pd(v, m, idx, e, 8), v, _CMP_LE_OQ);
      idx = _mm512_mask_add_epi64(idx, m, idx, one);
      m &= _mm512_cmplt_epu64_mask(idx, hi);
    }
    _mm512_store_si512(reinterpret_cast<__m512i*>(slots), idx);
    if (in == 0xff) {
      for (int j = 0; j < 8; ++j) ++counts[slots[j]];
    } else {
      for (int j = 0; j < 8; ++j)
        ++counts[(in >> j & 1) ? slots[j] : out_slot(static_cast<double>(x[i + j]), first, last, ne)];
    }
  }
  s_hist_lut(x + i, n - i, e, ne, lut, cells, scale, counts);
}
}  // namespace

const Kernels kAvx512 = {a5_hist<double>, a5_hist<float>, a5_pass1<double>, a5_pass1<float>,
                         a5_pass2<double>, a5_pass2<float>, a5_hist_lut<double>, a5_hist_lut<float>};
#else
const Kernels kAvx2 = kScalar;
const Kernels kAvx512 = kScalar;
#endif

}  // namespace detail
}  // namespace drift
}  // namespace pyperfcore
