// SIMD variants of the image row kernels. Each function carries its own target attribute; the
// generic templates are inlined into per-target wrappers so the compiler vectorizes them for
// that ISA only, and nothing here is compiled for a whole-file ISA.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "prepost_kernels.hpp"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#define PFC_INLINE inline __attribute__((always_inline))

namespace pyperfcore {
namespace prepost {
namespace detail {
namespace {

// ---------------------------------------------------------------- generic (any ISA)
template <OutType T>
PFC_INLINE void g_emit_u8(const uint8_t* src, int64_t w, const PreprocessParams& p, RowDst dst) {
  using O = typename Out<T>::type;
  const int64_t C = p.channels;
  O* out = static_cast<O*>(dst.base);
  const float s = p.out_scale;
  if (C == 1) {
    const float m = p.mean[0], k = p.inv_std[0];
    for (int64_t x = 0; x < w; ++x) out[x] = Out<T>::conv((static_cast<float>(src[x]) - m) * k, s);
    return;
  }
  for (int64_t c = 0; c < 3; ++c) {
    const int64_t sc = p.swap_rb ? 2 - c : c;
    const float m = p.mean[c], k = p.inv_std[c];
    if (p.layout == Layout::nchw) {
      O* o = out + c * dst.plane;
      for (int64_t x = 0; x < w; ++x) o[x] = Out<T>::conv((static_cast<float>(src[3 * x + sc]) - m) * k, s);
    } else {
      for (int64_t x = 0; x < w; ++x) out[3 * x + c] = Out<T>::conv((static_cast<float>(src[3 * x + sc]) - m) * k, s);
    }
  }
}

template <OutType T>
PFC_INLINE void g_emit_f32(const float* src, int64_t w, const PreprocessParams& p, RowDst dst) {
  using O = typename Out<T>::type;
  const int64_t C = p.channels;
  O* out = static_cast<O*>(dst.base);
  const float s = p.out_scale;
  for (int64_t c = 0; c < C; ++c) {
    const int64_t sc = (C == 3 && p.swap_rb) ? 2 - c : c;
    const float m = p.mean[c], k = p.inv_std[c];
    if (p.layout == Layout::nchw || C == 1) {
      O* o = out + c * dst.plane;
      for (int64_t x = 0; x < w; ++x) o[x] = Out<T>::conv((src[C * x + sc] - m) * k, s);
    } else {
      for (int64_t x = 0; x < w; ++x) out[C * x + c] = Out<T>::conv((src[C * x + sc] - m) * k, s);
    }
  }
}

PFC_INLINE void g_hresize(const uint8_t* src, const AxisTaps& tx, int64_t C, float* dst) {
  const int64_t n = static_cast<int64_t>(tx.start.size()), K = tx.max_taps;
  if (C == 3) {
    for (int64_t x = 0; x < n; ++x) {
      const uint8_t* s = src + 3 * static_cast<int64_t>(tx.start[x]);
      const float* w = tx.weights.data() + x * K;
      float a0 = 0.f, a1 = 0.f, a2 = 0.f;
      for (int64_t j = 0, cnt = tx.count[x]; j < cnt; ++j) {
        a0 += w[j] * static_cast<float>(s[3 * j]);
        a1 += w[j] * static_cast<float>(s[3 * j + 1]);
        a2 += w[j] * static_cast<float>(s[3 * j + 2]);
      }
      dst[3 * x] = a0;
      dst[3 * x + 1] = a1;
      dst[3 * x + 2] = a2;
    }
    return;
  }
  for (int64_t x = 0; x < n; ++x) {
    const uint8_t* s = src + tx.start[x];
    const float* w = tx.weights.data() + x * K;
    float a = 0.f;
    for (int64_t j = 0, cnt = tx.count[x]; j < cnt; ++j) a += w[j] * static_cast<float>(s[j]);
    dst[x] = a;
  }
}

PFC_INLINE void g_vresize(const float* const* rows, const float* w, int64_t taps, int64_t n, float* dst) {
  const float w0 = w[0];
  const float* r0 = rows[0];
  for (int64_t j = 0; j < n; ++j) dst[j] = w0 * r0[j];
  for (int64_t k = 1; k < taps; ++k) {
    const float wk = w[k];
    const float* rk = rows[k];
    for (int64_t j = 0; j < n; ++j) dst[j] += wk * rk[j];
  }
}

// ---------------------------------------------------------------- scalar instantiation
template <OutType T>
void s_emit_u8(const uint8_t* src, int64_t w, const PreprocessParams& p, RowDst dst) { g_emit_u8<T>(src, w, p, dst); }
template <OutType T>
void s_emit_f32(const float* src, int64_t w, const PreprocessParams& p, RowDst dst) { g_emit_f32<T>(src, w, p, dst); }
void s_hresize(const uint8_t* src, const AxisTaps& tx, int64_t C, float* dst) { g_hresize(src, tx, C, dst); }
void s_vresize(const float* const* rows, const float* w, int64_t taps, int64_t n, float* dst) {
  g_vresize(rows, w, taps, n, dst);
}

#if defined(__x86_64__)
// 48 packed bytes (16 RGB pixels) -> three 16-byte chunks by pshufb: for NCHW chunk k holds
// output channel k of the 16 pixels; for NHWC chunk k is bytes 16k..16k+15 of the output
// pixels with their channels reordered. mask[k][s] picks bytes of input chunk s (0x80 = none).
struct Shuffle48 {
  alignas(16) uint8_t mask[3][3][16];
  alignas(64) float mean[3][16], inv[3][16];  // per output chunk and lane
};

void make_shuffle(const PreprocessParams& p, Shuffle48* sh) {
  for (int k = 0; k < 3; ++k)
    for (int l = 0; l < 16; ++l) {
      int px, c;
      if (p.layout == Layout::nchw) {
        px = l;
        c = k;
      } else {
        px = (16 * k + l) / 3;
        c = (16 * k + l) % 3;
      }
      const int b = 3 * px + (p.swap_rb ? 2 - c : c);
      for (int s = 0; s < 3; ++s) sh->mask[k][s][l] = (b / 16 == s) ? static_cast<uint8_t>(b % 16) : 0x80;
      sh->mean[k][l] = p.mean[c];
      sh->inv[k][l] = p.inv_std[c];
    }
}

// ---------------------------------------------------------------- AVX2 + FMA + F16C
#define PFC_AVX2 __attribute__((target("avx2,fma,f16c")))

PFC_AVX2 PFC_INLINE void a2_shuffle(const uint8_t* src, const Shuffle48& sh, __m128i out[3]) {
  const __m128i in0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src));
  const __m128i in1 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 16));
  const __m128i in2 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + 32));
  for (int k = 0; k < 3; ++k) {
    const __m128i* m = reinterpret_cast<const __m128i*>(sh.mask[k]);
    out[k] = _mm_or_si128(_mm_or_si128(_mm_shuffle_epi8(in0, _mm_load_si128(m)), _mm_shuffle_epi8(in1, _mm_load_si128(m + 1))),
                          _mm_shuffle_epi8(in2, _mm_load_si128(m + 2)));
  }
}

// NT: non-temporal (streaming) store; the caller guarantees the alignment of the store width.
template <OutType T, bool NT = false>
PFC_AVX2 PFC_INLINE void a2_store8(typename Out<T>::type* dst, __m256 v, float s) {
  if constexpr (T == OutType::f32) {
    if constexpr (NT) _mm256_stream_ps(dst, v);
    else _mm256_storeu_ps(dst, v);
  } else if constexpr (T == OutType::f16) {
    const __m128i h = _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    if constexpr (NT) _mm_stream_si128(reinterpret_cast<__m128i*>(dst), h);
    else _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), h);
  } else if constexpr (T == OutType::bf16) {
    __m256i b = _mm256_castps_si256(v);
    __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
    b = _mm256_srli_epi32(_mm256_add_epi32(b, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
    __m256i pk = _mm256_permute4x64_epi64(_mm256_packus_epi32(b, b), 0x08);
    if constexpr (NT) _mm_stream_si128(reinterpret_cast<__m128i*>(dst), _mm256_castsi256_si128(pk));
    else _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), _mm256_castsi256_si128(pk));
  } else {
    __m256 lo, hi;
    if constexpr (T == OutType::i8) {
      v = _mm256_div_ps(v, _mm256_set1_ps(s));
      lo = _mm256_set1_ps(-127.f);
      hi = _mm256_set1_ps(127.f);
    } else {
      lo = _mm256_setzero_ps();
      hi = _mm256_set1_ps(255.f);
    }
    __m256i r = _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));  // MXCSR: nearest-even
    __m256i w = _mm256_packs_epi32(r, r);
    __m256i b = T == OutType::i8 ? _mm256_packs_epi16(w, w) : _mm256_packus_epi16(w, w);
    __m128i x = _mm_unpacklo_epi32(_mm256_castsi256_si128(b), _mm256_extracti128_si256(b, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), x);
  }
}

// Pixels to write with plain stores before the first 16-pixel block whose stores (of `align`
// bytes each) are aligned for streaming; -1 when this row is not streamed. Only rows that start
// aligned are streamed (peel 0): with a head of plain stores before the streamed lines, rows of
// a misaligned buffer measured 3-4x slower than plain stores (the plain and streaming stores to
// neighbouring lines interfere), so those rows use plain stores throughout.
template <class O>
inline int64_t stream_peel(const O* out, int64_t w, bool nchw, int64_t plane, uintptr_t align) {
  if (nchw && (static_cast<uintptr_t>(plane) * sizeof(O)) % align != 0) return -1;
  if (w < 16 || reinterpret_cast<uintptr_t>(out) % align != 0) return -1;
  return 0;
}

template <OutType T, bool NT = false>
PFC_AVX2 void a2_emit_u8(const uint8_t* src, int64_t w, const PreprocessParams& p, RowDst dst) {
  using O = typename Out<T>::type;
  if (p.channels != 3 || w < 16) {
    g_emit_u8<T>(src, w, p, dst);
    return;
  }
  int64_t x = 0;
  if constexpr (NT) {
    const int64_t peel = stream_peel(static_cast<O*>(dst.base), w, p.layout == Layout::nchw, dst.plane, 8 * sizeof(O));
    if (peel < 0) {
      a2_emit_u8<T, false>(src, w, p, dst);
      return;
    }
    x = peel;
  }
  Shuffle48 sh;
  make_shuffle(p, &sh);
  O* out = static_cast<O*>(dst.base);
  const bool nchw = p.layout == Layout::nchw;
  __m256 mean[3][2], inv[3][2];
  for (int k = 0; k < 3; ++k)
    for (int h = 0; h < 2; ++h) {
      mean[k][h] = _mm256_load_ps(sh.mean[k] + 8 * h);
      inv[k][h] = _mm256_load_ps(sh.inv[k] + 8 * h);
    }
  // Each block reads exactly its 16 pixels' 48 bytes: never past the row.
  for (; x + 16 <= w; x += 16) {
    __m128i ch[3];
    a2_shuffle(src + 3 * x, sh, ch);
    for (int k = 0; k < 3; ++k) {
      O* d = nchw ? out + k * dst.plane + x : out + 3 * x + 16 * k;
      __m256 v0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(ch[k]));
      __m256 v1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(ch[k], 8)));
      a2_store8<T, NT>(d, _mm256_mul_ps(_mm256_sub_ps(v0, mean[k][0]), inv[k][0]), p.out_scale);
      a2_store8<T, NT>(d + 8, _mm256_mul_ps(_mm256_sub_ps(v1, mean[k][1]), inv[k][1]), p.out_scale);
    }
  }
  if (x < w) {
    RowDst rest{nchw ? static_cast<void*>(out + x) : static_cast<void*>(out + 3 * x), dst.plane};
    g_emit_u8<T>(src + 3 * x, w - x, p, rest);
  }
}
template <OutType T>
PFC_AVX2 void a2_emit_f32(const float* src, int64_t w, const PreprocessParams& p, RowDst dst) { g_emit_f32<T>(src, w, p, dst); }
PFC_AVX2 void a2_hresize(const uint8_t* src, const AxisTaps& tx, int64_t C, float* dst) { g_hresize(src, tx, C, dst); }
PFC_AVX2 void a2_vresize(const float* const* rows, const float* w, int64_t taps, int64_t n, float* dst) {
  g_vresize(rows, w, taps, n, dst);
}

// ---------------------------------------------------------------- AVX-512 (F, BW, VL, DQ)
#define PFC_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))

template <bool NT>
PFC_AVX512 PFC_INLINE void a5_put256(void* dst, __m256i v) {
  if constexpr (NT) _mm256_stream_si256(reinterpret_cast<__m256i*>(dst), v);
  else _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), v);
}
template <bool NT>
PFC_AVX512 PFC_INLINE void a5_put128(void* dst, __m128i v) {
  if constexpr (NT) _mm_stream_si128(reinterpret_cast<__m128i*>(dst), v);
  else _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), v);
}

// NT: non-temporal (streaming) store of 16 values; dst is then aligned to 16 * sizeof(type).
template <OutType T, bool NT = false>
PFC_AVX512 PFC_INLINE void a5_store16(typename Out<T>::type* dst, __m512 v, float s) {
  if constexpr (T == OutType::f32) {
    if constexpr (NT) _mm512_stream_ps(dst, v);
    else _mm512_storeu_ps(dst, v);
  } else if constexpr (T == OutType::f16) {
    a5_put256<NT>(dst, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
  } else if constexpr (T == OutType::bf16) {
    __m512i b = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    b = _mm512_srli_epi32(_mm512_add_epi32(b, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF))), 16);
    a5_put256<NT>(dst, _mm512_cvtepi32_epi16(b));
  } else if constexpr (T == OutType::i8) {
    v = _mm512_div_ps(v, _mm512_set1_ps(s));
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_set1_ps(-127.f)), _mm512_set1_ps(127.f));
    __m512i r = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    a5_put128<NT>(dst, _mm512_cvtsepi32_epi8(r));
  } else {
    v = _mm512_min_ps(_mm512_max_ps(v, _mm512_setzero_ps()), _mm512_set1_ps(255.f));
    __m512i r = _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    a5_put128<NT>(dst, _mm512_cvtusepi32_epi8(r));
  }
}

template <OutType T, bool NT = false>
PFC_AVX512 void a5_emit_u8(const uint8_t* src, int64_t w, const PreprocessParams& p, RowDst dst) {
  using O = typename Out<T>::type;
  O* out = static_cast<O*>(dst.base);
  int64_t x0 = 0;
  if constexpr (NT) {
    const bool planes = p.channels == 3 && p.layout == Layout::nchw;
    const int64_t peel = stream_peel(out, w, p.channels == 1 || planes, planes ? dst.plane : 0, 16 * sizeof(O));
    if (peel < 0) {
      a5_emit_u8<T, false>(src, w, p, dst);
      return;
    }
    x0 = peel;
  }
  if (p.channels == 1) {
    const __m512 m = _mm512_set1_ps(p.mean[0]), k = _mm512_set1_ps(p.inv_std[0]);
    int64_t x = x0;
    for (; x + 16 <= w; x += 16) {
      __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + x))));
      a5_store16<T, NT>(out + x, _mm512_mul_ps(_mm512_sub_ps(v, m), k), p.out_scale);
    }
    if (x < w) g_emit_u8<T>(src + x, w - x, p, RowDst{out + x, dst.plane});
    return;
  }
  if (w < 16) {
    g_emit_u8<T>(src, w, p, dst);
    return;
  }
  Shuffle48 sh;
  make_shuffle(p, &sh);
  const bool nchw = p.layout == Layout::nchw;
  __m512 mean[3], inv[3];
  for (int k = 0; k < 3; ++k) {
    mean[k] = _mm512_load_ps(sh.mean[k]);
    inv[k] = _mm512_load_ps(sh.inv[k]);
  }
  int64_t x = x0;
  for (; x + 16 <= w; x += 16) {
    __m128i ch[3];
    a2_shuffle(src + 3 * x, sh, ch);
    for (int k = 0; k < 3; ++k) {
      O* d = nchw ? out + k * dst.plane + x : out + 3 * x + 16 * k;
      __m512 v = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(ch[k]));
      a5_store16<T, NT>(d, _mm512_mul_ps(_mm512_sub_ps(v, mean[k]), inv[k]), p.out_scale);
    }
  }
  if (x < w) {
    RowDst rest{nchw ? static_cast<void*>(out + x) : static_cast<void*>(out + 3 * x), dst.plane};
    g_emit_u8<T>(src + 3 * x, w - x, p, rest);
  }
}
template <OutType T>
PFC_AVX512 void a5_emit_f32(const float* src, int64_t w, const PreprocessParams& p, RowDst dst) { g_emit_f32<T>(src, w, p, dst); }
PFC_AVX512 void a5_hresize(const uint8_t* src, const AxisTaps& tx, int64_t C, float* dst) { g_hresize(src, tx, C, dst); }
PFC_AVX512 void a5_vresize(const float* const* rows, const float* w, int64_t taps, int64_t n, float* dst) {
  g_vresize(rows, w, taps, n, dst);
}
#endif

template <OutType T>
ImageKernels kernels_of(CpuTarget t, bool stream) {
#if defined(__x86_64__)
  // AVX2 has no 8-byte streaming store for the 8-lane int8 / uint8 blocks: plain stores there.
  constexpr bool a2_nt_ok = T == OutType::f32 || T == OutType::f16 || T == OutType::bf16;
  if (t >= CpuTarget::avx512)
    return {stream ? a5_emit_u8<T, true> : a5_emit_u8<T, false>, a5_emit_f32<T>, a5_hresize, a5_vresize};
  if (t >= CpuTarget::avx2)
    return {stream && a2_nt_ok ? a2_emit_u8<T, a2_nt_ok> : a2_emit_u8<T, false>, a2_emit_f32<T>, a2_hresize, a2_vresize};
#endif
  (void)stream;
  return {s_emit_u8<T>, s_emit_f32<T>, s_hresize, s_vresize};
}

}  // namespace

ImageKernels image_kernels(CpuTarget t, OutType dtype, int64_t channels, Layout layout, bool stream) {
  switch (dtype) {
    case OutType::f16: return kernels_of<OutType::f16>(t, stream);
    case OutType::bf16: return kernels_of<OutType::bf16>(t, stream);
    case OutType::i8: return kernels_of<OutType::i8>(t, stream);
    case OutType::u8: return kernels_of<OutType::u8>(t, stream);
    default: return kernels_of<OutType::f32>(t, stream);
  }
}

}  // namespace detail
}  // namespace prepost
}  // namespace pyperfcore
