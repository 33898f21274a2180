// Symmetric INT8 quantization (the pilot op). ISA-free API over raw pointers and strides.
#pragma once
#include <cstdint>

#include "../common/cpu.hpp"

namespace pyperfcore {
namespace quant {

enum class FloatType : int { f32 = 0, f16 = 1 };

// A read-only view of x as [outer, channels, inner] with strides counted in elements.
struct View3 {
  const void* data;
  FloatType dtype;
  int64_t outer, channels, inner;
  int64_t s_outer, s_channel, s_inner;
};

// Symmetric per-channel INT8 quantization along the middle dimension of `x`:
//   scale[c] = amax_c / 127 (float32), or 1 when that is below FLT_MIN (an all-zero or all-subnormal channel);
//   q = clip(round_half_to_even(x / scale[c]), -127, 127), the quotient computed in float32.
// Per-tensor quantization is channels == 1. `q` is written C-contiguous [outer, channels, inner];
// `scales` has `channels` entries. Throws std::invalid_argument if x holds NaN or +-inf.
// `target` selects a SIMD variant (the highest one <= target that the kernel provides).
void quantize_int8(const View3& x, int8_t* q, float* scales, CpuTarget target);
inline void quantize_int8(const View3& x, int8_t* q, float* scales) {
  quantize_int8(x, q, scales, active_target());
}

// out[o, c, i] = float(q[o, c, i]) * scales[c]; q and out C-contiguous [outer, channels, inner].
void dequantize_int8(const int8_t* q, const float* scales, int64_t outer, int64_t channels, int64_t inner,
                     float* out, CpuTarget target);
inline void dequantize_int8(const int8_t* q, const float* scales, int64_t outer, int64_t channels,
                            int64_t inner, float* out) {
  dequantize_int8(q, scales, outer, channels, inner, out, active_target());
}

// Convenience for C++ callers: a C-contiguous float32 matrix [rows, cols], one scale per row.
inline void quantize_rows_int8(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scales) {
  View3 v{x, FloatType::f32, 1, rows, cols, rows * cols, cols, 1};
  quantize_int8(v, q, scales);
}

// IEEE half -> float, exact (used by the scalar paths and tests).
float half_to_float(uint16_t h);

}  // namespace quant
}  // namespace pyperfcore
