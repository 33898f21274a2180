// Internal: per-ISA row kernels of the prepost ops and scalar conversion helpers.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#include "prepost.hpp"

namespace pyperfcore {
namespace prepost {
namespace detail {

// float -> IEEE half bits, round half to even (inf/NaN kept; overflow to inf).
inline uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7FFFFFFFu;
  if (ax >= 0x7F800000u) return static_cast<uint16_t>(sign | 0x7C00u | (ax > 0x7F800000u ? 0x200u : 0u));
  if (ax >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds to >= 65520: inf
  if (ax < 0x38800000u) {  // below the smallest normal half: multiples of 2^-24, exact scaling
    float a;
    std::memcpy(&a, &ax, 4);
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(std::nearbyint(a * 16777216.0f)));
  }
  ax += 0xC8000FFFu + ((ax >> 13) & 1u);  // rebias the exponent by -112 and round to nearest even
  return static_cast<uint16_t>(sign | (ax >> 13));
}

// float -> bfloat16 bits, round half to even (finite inputs; NaN stays NaN).
inline uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);
  x += 0x7FFFu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

// The store of one normalized value in each output type.
template <OutType T>
struct Out;
template <>
struct Out<OutType::f32> {
  using type = float;
  static inline float conv(float v, float) { return v; }
};
template <>
struct Out<OutType::f16> {
  using type = uint16_t;
  static inline uint16_t conv(float v, float) { return float_to_half(v); }
};
template <>
struct Out<OutType::bf16> {
  using type = uint16_t;
  static inline uint16_t conv(float v, float) { return float_to_bf16(v); }
};
template <>
struct Out<OutType::i8> {
  using type = int8_t;
  static inline int8_t conv(float v, float s) {
    float q = v / s;
    q = q < -127.f ? -127.f : (q > 127.f ? 127.f : q);
    return static_cast<int8_t>(std::nearbyint(q));
  }
};
template <>
struct Out<OutType::u8> {
  using type = uint8_t;
  static inline uint8_t conv(float v, float) {
    v = v < 0.f ? 0.f : (v > 255.f ? 255.f : v);
    return static_cast<uint8_t>(std::nearbyint(v));
  }
};

// Where one output row goes: for NCHW, plane c starts at base + c * plane; for NHWC the row is
// interleaved at base. Offsets in elements of the output type.
struct RowDst {
  void* base;
  int64_t plane;
};

// Row emitters: from packed uint8 pixels (no resize) or from a float row (after resize), both
// in the input's channel order, into the output row: normalize, reorder channels, convert.
using EmitU8 = void (*)(const uint8_t* src, int64_t w, const PreprocessParams& p, RowDst dst);
using EmitF32 = void (*)(const float* src, int64_t w, const PreprocessParams& p, RowDst dst);

struct ImageKernels {
  EmitU8 emit_u8;
  EmitF32 emit_f32;
  // Horizontal resize of one uint8 row into w * channels floats.
  void (*hresize)(const uint8_t* src, const AxisTaps& tx, int64_t channels, float* dst);
  // dst[j] = sum_k w[k] * rows[k][j] over n values.
  void (*vresize)(const float* const* rows, const float* w, int64_t taps, int64_t n, float* dst);
};

// stream: emit_u8 writes with non-temporal stores where the row's alignment allows (for outputs
// much larger than the caches, which the caller must then fence with _mm_sfence).
ImageKernels image_kernels(CpuTarget t, OutType dtype, int64_t channels, Layout layout, bool stream = false);

// Float row primitives of the classification ops.
enum ScanStatus : int { kScanOk = 0, kScanNan = 1, kScanPosInf = 2, kScanAllNegInf = 3 };
struct TopkScan {
  int status = kScanOk;
  float max = 0.f;    // the row's maximum
  float sum = 0.f;    // sum of exp(x - max) when asked for
  int64_t count = 0;  // candidates written
};
struct RowOps {
  // topk_scan handles 1 <= k <= lanes.
  int lanes;
  // dst = the float values of a float16 (dtype 1) or int8 (dtype 2, times scales[0] or scales[i])
  // row of n values.
  void (*widen)(const void* src, int dtype, int64_t n, const float* scales, int64_t n_scales, float* dst);
  // max over n values; sets *bad when one is NaN.
  float (*max_nan)(const float* x, int64_t n, bool* bad);
  // sum of exp(x - m) (m >= every x).
  float (*sum_exp)(const float* x, int64_t n, float m);
  // out = exp(x - m); returns the sum of out.
  float (*exp_store)(const float* x, int64_t n, float m, float* out);
  // x *= a.
  void (*scale)(float* x, int64_t n, float a);
  // out = (x - hi) - lo: subtracting a double constant given as hi + lo floats.
  void (*sub2)(const float* x, int64_t n, float hi, float lo, float* out);
  // index of the first value > t at or after i (n if none).
  int64_t (*next_greater)(const float* x, int64_t i, int64_t n, float t);
  // One row of top-k (1 <= k <= lanes): max, NaN / +inf checks (and all -inf when want_sum), the
  // sum of exp(x - max) when want_sum, and every value >= a lower bound of the k-th largest
  // (so every top-k value and every tie of the k-th) with its index and, when want_sum, its
  // exp(x - max) as summed, in index order. vals, idx and exps need room for n + 32 entries. On a
  // bad status nothing else is valid. `next` (may be null): the next row of n values, prefetched.
  TopkScan (*topk_scan)(const float* x, int64_t n, int64_t k, bool want_sum, float* vals, int32_t* idx, float* exps,
                        const float* next);
};
const RowOps& row_ops(CpuTarget t);

}  // namespace detail
}  // namespace prepost
}  // namespace pyperfcore
