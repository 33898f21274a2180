// Target variants of the 8-byte-key HLL kernels (see hll_simd.hpp). Each function carries its own
// target attribute; nothing here is compiled for a whole-file ISA.
#include "hll_simd.hpp"

#include <cstring>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace pyperfcore {
namespace sketches {
namespace {

constexpr uint64_t kC1 = 0x87c37b91114253d5ULL;
constexpr uint64_t kC2 = 0x4cf5ad432745937fULL;
constexpr uint64_t kF1 = 0xff51afd7ed558ccdULL;
constexpr uint64_t kF2 = 0xc4ceb9fe1a85ec53ULL;
constexpr uint64_t kDsSeed = 9001;
constexpr uint32_t kMask26 = (1u << 26) - 1;
constexpr uint64_t kCanonNaN = 0x7ff8000000000000ULL;

// ---------------------------------------------------------------- scalar (always built)
inline uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline uint64_t fmix(uint64_t k) {
  k ^= k >> 33;
  k *= kF1;
  k ^= k >> 33;
  k *= kF2;
  k ^= k >> 33;
  return k;
}
// MurmurHash3_x64_128 of 8 bytes: no full 16-byte block, the key is the k1 tail.
inline void mm3_8(uint64_t k, uint64_t seed, uint64_t& o1, uint64_t& o2) {
  k *= kC1;
  k = rotl(k, 31);
  k *= kC2;
  uint64_t h1 = (seed ^ k) ^ 8, h2 = seed ^ 8;
  h1 += h2;
  h2 += h1;
  h1 = fmix(h1);
  h2 = fmix(h2);
  h1 += h2;
  h2 += h1;
  o1 = h1;
  o2 = h2;
}
inline uint64_t canon_f64(uint64_t b) {
  if ((b << 1) == 0) return 0;                                             // -0.0 -> 0.0
  if ((b & 0x7ff0000000000000ULL) == 0x7ff0000000000000ULL && (b << 12)) return kCanonNaN;
  return b;
}
inline uint32_t coupon_of(uint64_t h1, uint64_t h2) {
  const int lz = h2 == 0 ? 64 : __builtin_clzll(h2);
  return (static_cast<uint32_t>((lz < 62 ? lz : 62) + 1) << 26) | static_cast<uint32_t>(h1 & kMask26);
}

void s_murmur(const uint64_t* keys, int64_t n, uint64_t seed, uint64_t* h1, uint64_t* h2) {
  for (int64_t i = 0; i < n; ++i) mm3_8(keys[i], seed, h1[i], h2[i]);
}
void s_coupons(const uint64_t* keys, int64_t n, bool f64, uint32_t* out) {
  for (int64_t i = 0; i < n; ++i) {
    uint64_t a, b;
    mm3_8(f64 ? canon_f64(keys[i]) : keys[i], kDsSeed, a, b);
    out[i] = coupon_of(a, b);
  }
}
int64_t s_candidates(const uint64_t* keys, int64_t n, bool f64, const uint8_t* regs, int lg_k, uint32_t* out) {
  const uint32_t mask = (1u << lg_k) - 1;
  int64_t c = 0;
  for (int64_t i = 0; i < n; ++i) {
    uint64_t a, b;
    mm3_8(f64 ? canon_f64(keys[i]) : keys[i], kDsSeed, a, b);
    const uint32_t cp = coupon_of(a, b);
    out[c] = cp;  // written always, kept only when it can raise its register (no branch)
    c += (cp >> 26) > regs[cp & mask];
  }
  return c;
}

#if defined(__x86_64__)
// ---------------------------------------------------------------- AVX2: 4 lanes, 64-bit multiply
// from three 32x32->64 multiplies (the high x high product falls outside the low 64 bits).
#define PFC_AVX2 __attribute__((target("avx2,fma,f16c")))
PFC_AVX2 inline __m256i a2_mul(__m256i a, __m256i b) {
  const __m256i lo = _mm256_mul_epu32(a, b);
  const __m256i cross = _mm256_add_epi64(_mm256_mul_epu32(_mm256_srli_epi64(a, 32), b),
                                         _mm256_mul_epu32(a, _mm256_srli_epi64(b, 32)));
  return _mm256_add_epi64(lo, _mm256_slli_epi64(cross, 32));
}
template <int R>
PFC_AVX2 inline __m256i a2_rotl(__m256i x) {
  return _mm256_or_si256(_mm256_slli_epi64(x, R), _mm256_srli_epi64(x, 64 - R));
}
PFC_AVX2 inline __m256i a2_fmix(__m256i k) {
  k = _mm256_xor_si256(k, _mm256_srli_epi64(k, 33));
  k = a2_mul(k, _mm256_set1_epi64x(static_cast<long long>(kF1)));
  k = _mm256_xor_si256(k, _mm256_srli_epi64(k, 33));
  k = a2_mul(k, _mm256_set1_epi64x(static_cast<long long>(kF2)));
  return _mm256_xor_si256(k, _mm256_srli_epi64(k, 33));
}
PFC_AVX2 inline __m256i a2_canon(__m256i k) {
  const __m256d d = _mm256_castsi256_pd(k);
  const __m256d zero = _mm256_cmp_pd(d, _mm256_setzero_pd(), _CMP_EQ_OQ);
  const __m256d nan = _mm256_cmp_pd(d, d, _CMP_UNORD_Q);
  k = _mm256_andnot_si256(_mm256_castpd_si256(zero), k);
  return _mm256_blendv_epi8(k, _mm256_set1_epi64x(static_cast<long long>(kCanonNaN)), _mm256_castpd_si256(nan));
}
PFC_AVX2 inline void a2_hash(__m256i k, uint64_t seed, __m256i& h1, __m256i& h2) {
  k = a2_mul(k, _mm256_set1_epi64x(static_cast<long long>(kC1)));
  k = a2_rotl<31>(k);
  k = a2_mul(k, _mm256_set1_epi64x(static_cast<long long>(kC2)));
  const __m256i s8 = _mm256_set1_epi64x(static_cast<long long>(seed ^ 8));
  h1 = _mm256_xor_si256(k, s8);
  h2 = s8;
  h1 = _mm256_add_epi64(h1, h2);
  h2 = _mm256_add_epi64(h2, h1);
  h1 = a2_fmix(h1);
  h2 = a2_fmix(h2);
  h1 = _mm256_add_epi64(h1, h2);
  h2 = _mm256_add_epi64(h2, h1);
}
PFC_AVX2 void a2_murmur(const uint64_t* keys, int64_t n, uint64_t seed, uint64_t* o1, uint64_t* o2) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    __m256i h1, h2;
    a2_hash(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(keys + i)), seed, h1, h2);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o1 + i), h1);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(o2 + i), h2);
  }
  s_murmur(keys + i, n - i, seed, o1 + i, o2 + i);
}
PFC_AVX2 inline uint32_t a2_coupon(uint64_t h1, uint64_t h2) {
  const int lz = h2 == 0 ? 64 : __builtin_clzll(h2);
  return (static_cast<uint32_t>((lz < 62 ? lz : 62) + 1) << 26) | static_cast<uint32_t>(h1 & kMask26);
}
PFC_AVX2 void a2_coupons(const uint64_t* keys, int64_t n, bool f64, uint32_t* out) {
  int64_t i = 0;
  alignas(32) uint64_t t1[4], t2[4];
  for (; i + 4 <= n; i += 4) {
    __m256i k = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(keys + i));
    if (f64) k = a2_canon(k);
    __m256i h1, h2;
    a2_hash(k, kDsSeed, h1, h2);
    _mm256_store_si256(reinterpret_cast<__m256i*>(t1), h1);
    _mm256_store_si256(reinterpret_cast<__m256i*>(t2), h2);
    for (int l = 0; l < 4; ++l) out[i + l] = a2_coupon(t1[l], t2[l]);
  }
  s_coupons(keys + i, n - i, f64, out + i);
}
PFC_AVX2 int64_t a2_candidates(const uint64_t* keys, int64_t n, bool f64, const uint8_t* regs, int lg_k,
                               uint32_t* out) {
  const uint32_t mask = (1u << lg_k) - 1;
  int64_t i = 0, c = 0;
  alignas(32) uint64_t t1[4], t2[4];
  for (; i + 4 <= n; i += 4) {
    __m256i k = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(keys + i));
    if (f64) k = a2_canon(k);
    __m256i h1, h2;
    a2_hash(k, kDsSeed, h1, h2);
    _mm256_store_si256(reinterpret_cast<__m256i*>(t1), h1);
    _mm256_store_si256(reinterpret_cast<__m256i*>(t2), h2);
    for (int l = 0; l < 4; ++l) {
      const uint32_t cp = a2_coupon(t1[l], t2[l]);
      out[c] = cp;
      c += (cp >> 26) > regs[cp & mask];
    }
  }
  return c + s_candidates(keys + i, n - i, f64, regs, lg_k, out + c);
}

// ---------------------------------------------------------------- AVX-512: 8 lanes of 64-bit
// multiplies (DQ), rotates (F), leading-zero counts (CD), a gather of the registers and a
// compress-store of the coupons that can change the sketch.
#define PFC_AVX512 __attribute__((target("avx512f,avx512dq,avx512cd,avx512bw,avx512vl")))
PFC_AVX512 inline __m512i a5_fmix(__m512i k) {
  k = _mm512_xor_si512(k, _mm512_srli_epi64(k, 33));
  k = _mm512_mullo_epi64(k, _mm512_set1_epi64(static_cast<long long>(kF1)));
  k = _mm512_xor_si512(k, _mm512_srli_epi64(k, 33));
  k = _mm512_mullo_epi64(k, _mm512_set1_epi64(static_cast<long long>(kF2)));
  return _mm512_xor_si512(k, _mm512_srli_epi64(k, 33));
}
PFC_AVX512 inline __m512i a5_canon(__m512i k) {
  const __m512d d = _mm512_castsi512_pd(k);
  const __mmask8 zero = _mm512_cmp_pd_mask(d, _mm512_setzero_pd(), _CMP_EQ_OQ);
  const __mmask8 nan = _mm512_cmp_pd_mask(d, d, _CMP_UNORD_Q);
  k = _mm512_mask_mov_epi64(k, zero, _mm512_setzero_si512());
  return _mm512_mask_mov_epi64(k, nan, _mm512_set1_epi64(static_cast<long long>(kCanonNaN)));
}
PFC_AVX512 inline void a5_hash(__m512i k, uint64_t seed, __m512i& h1, __m512i& h2) {
  k = _mm512_mullo_epi64(k, _mm512_set1_epi64(static_cast<long long>(kC1)));
  k = _mm512_rol_epi64(k, 31);
  k = _mm512_mullo_epi64(k, _mm512_set1_epi64(static_cast<long long>(kC2)));
  const __m512i s8 = _mm512_set1_epi64(static_cast<long long>(seed ^ 8));
  h1 = _mm512_add_epi64(_mm512_xor_si512(k, s8), s8);
  h2 = _mm512_add_epi64(s8, h1);
  h1 = a5_fmix(h1);
  h2 = a5_fmix(h2);
  h1 = _mm512_add_epi64(h1, h2);
  h2 = _mm512_add_epi64(h2, h1);
}
// coupon = (min(nlz(h2), 62) + 1) << 26 | (h1 & (2^26 - 1)), as 8 x uint32
PFC_AVX512 inline __m256i a5_coupon(__m512i h1, __m512i h2, __m256i& value) {
  __m512i v = _mm512_min_epu64(_mm512_lzcnt_epi64(h2), _mm512_set1_epi64(62));
  v = _mm512_add_epi64(v, _mm512_set1_epi64(1));
  value = _mm512_cvtepi64_epi32(v);
  const __m512i c = _mm512_or_si512(_mm512_slli_epi64(v, 26), _mm512_and_si512(h1, _mm512_set1_epi64(kMask26)));
  return _mm512_cvtepi64_epi32(c);
}
PFC_AVX512 void a5_murmur(const uint64_t* keys, int64_t n, uint64_t seed, uint64_t* o1, uint64_t* o2) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m512i h1, h2;
    a5_hash(_mm512_loadu_si512(keys + i), seed, h1, h2);
    _mm512_storeu_si512(o1 + i, h1);
    _mm512_storeu_si512(o2 + i, h2);
  }
  s_murmur(keys + i, n - i, seed, o1 + i, o2 + i);
}
PFC_AVX512 void a5_coupons(const uint64_t* keys, int64_t n, bool f64, uint32_t* out) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m512i k = _mm512_loadu_si512(keys + i);
    if (f64) k = a5_canon(k);
    __m512i h1, h2;
    a5_hash(k, kDsSeed, h1, h2);
    __m256i v;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), a5_coupon(h1, h2, v));
  }
  s_coupons(keys + i, n - i, f64, out + i);
}
PFC_AVX512 inline int64_t a5_step(__m512i k, bool f64, const uint8_t* regs, __m512i mask, uint32_t* out) {
  if (f64) k = a5_canon(k);
  __m512i h1, h2;
  a5_hash(k, kDsSeed, h1, h2);
  __m256i value;
  const __m256i cp = a5_coupon(h1, h2, value);
  // Register bytes: gather the aligned 32-bit word holding each slot, shift its byte down.
  const __m512i slot = _mm512_and_si512(h1, mask);
  const __m256i word = _mm512_i64gather_epi32(_mm512_srli_epi64(slot, 2), regs, 4);
  const __m256i sh = _mm512_cvtepi64_epi32(_mm512_slli_epi64(_mm512_and_si512(slot, _mm512_set1_epi64(3)), 3));
  const __m256i reg = _mm256_and_si256(_mm256_srlv_epi32(word, sh), _mm256_set1_epi32(0xff));
  const __mmask8 up = _mm256_cmpgt_epi32_mask(value, reg);
  _mm256_mask_compressstoreu_epi32(out, up, cp);
  return __builtin_popcount(up);
}
PFC_AVX512 int64_t a5_candidates(const uint64_t* keys, int64_t n, bool f64, const uint8_t* regs, int lg_k,
                                 uint32_t* out) {
  const __m512i mask = _mm512_set1_epi64((1LL << lg_k) - 1);
  int64_t i = 0, c = 0;
  for (; i + 16 <= n; i += 16) {  // two independent vectors per step for the multiplier latency
    const __m512i ka = _mm512_loadu_si512(keys + i), kb = _mm512_loadu_si512(keys + i + 8);
    c += a5_step(ka, f64, regs, mask, out + c);
    c += a5_step(kb, f64, regs, mask, out + c);
  }
  for (; i + 8 <= n; i += 8) c += a5_step(_mm512_loadu_si512(keys + i), f64, regs, mask, out + c);
  return c + s_candidates(keys + i, n - i, f64, regs, lg_k, out + c);
}
PFC_AVX2 void a2_max_bytes(uint8_t* r, const uint8_t* s, int64_t n) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(r + i));
    const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + i));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(r + i), _mm256_max_epu8(a, b));
  }
  for (; i < n; ++i) r[i] = r[i] > s[i] ? r[i] : s[i];
}
PFC_AVX512 void a5_max_bytes(uint8_t* r, const uint8_t* s, int64_t n) {
  int64_t i = 0;
  for (; i + 64 <= n; i += 64)
    _mm512_storeu_si512(r + i, _mm512_max_epu8(_mm512_loadu_si512(r + i), _mm512_loadu_si512(s + i)));
  for (; i < n; ++i) r[i] = r[i] > s[i] ? r[i] : s[i];
}
#endif

void s_max_bytes(uint8_t* r, const uint8_t* s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) r[i] = r[i] > s[i] ? r[i] : s[i];
}

enum class Impl { scalar, avx2, avx512 };
Impl impl_for(CpuTarget t) {
#if defined(__x86_64__)
  // The avx512 target guarantees F/BW/VL/DQ; the leading-zero count needs CD as well (every
  // AVX-512 CPU so far has it, but it is checked rather than assumed).
  static const bool has_cd = __builtin_cpu_supports("avx512cd");
  if (t >= CpuTarget::avx512 && has_cd) return Impl::avx512;
  if (t >= CpuTarget::avx2) return Impl::avx2;
#endif
  return Impl::scalar;
}

}  // namespace

void murmur3_u64_batch(const uint64_t* keys, int64_t n, uint64_t seed, uint64_t* h1, uint64_t* h2, CpuTarget t) {
  switch (impl_for(t)) {
#if defined(__x86_64__)
    case Impl::avx512: return a5_murmur(keys, n, seed, h1, h2);
    case Impl::avx2: return a2_murmur(keys, n, seed, h1, h2);
#endif
    default: return s_murmur(keys, n, seed, h1, h2);
  }
}

void ds_coupons_u64(const uint64_t* keys, int64_t n, bool is_f64, uint32_t* out, CpuTarget t) {
  switch (impl_for(t)) {
#if defined(__x86_64__)
    case Impl::avx512: return a5_coupons(keys, n, is_f64, out);
    case Impl::avx2: return a2_coupons(keys, n, is_f64, out);
#endif
    default: return s_coupons(keys, n, is_f64, out);
  }
}

int64_t ds_hll_candidates(const uint64_t* keys, int64_t n, bool is_f64, const uint8_t* regs, int lg_k, uint32_t* out,
                          CpuTarget t) {
  switch (impl_for(t)) {
#if defined(__x86_64__)
    case Impl::avx512: return a5_candidates(keys, n, is_f64, regs, lg_k, out);
    case Impl::avx2: return a2_candidates(keys, n, is_f64, regs, lg_k, out);
#endif
    default: return s_candidates(keys, n, is_f64, regs, lg_k, out);
  }
}

void max_bytes(uint8_t* r, const uint8_t* s, int64_t n, CpuTarget t) {
  switch (impl_for(t)) {
#if defined(__x86_64__)
    case Impl::avx512: return a5_max_bytes(r, s, n);
    case Impl::avx2: return a2_max_bytes(r, s, n);
#endif
    default: return s_max_bytes(r, s, n);
  }
}

}  // namespace sketches
}  // namespace pyperfcore
