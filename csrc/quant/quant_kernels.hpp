// Internal: per-ISA row kernels of the quantize op. Not installed API (but harmless if seen).
#pragma once
#include <cstdint>

namespace pyperfcore {
namespace quant {
namespace detail {

// One set of row primitives per SIMD target; T is float or uint16_t (IEEE half bits).
struct RowKernels {
  // max |x| over n contiguous values; sets *bad if any is NaN or +-inf.
  float (*amax_f32)(const float*, int64_t, bool*);
  float (*amax_f16)(const uint16_t*, int64_t, bool*);
  // acc[j] = max(acc[j], |x[j]|) over n contiguous values.
  void (*amax_acc_f32)(const float*, int64_t, float*, bool*);
  void (*amax_acc_f16)(const uint16_t*, int64_t, float*, bool*);
  // q[j] = clip(rne(x[j] / scale)) with one scale.
  void (*quant_f32)(const float*, int64_t, float, int8_t*);
  void (*quant_f16)(const uint16_t*, int64_t, float, int8_t*);
  // q[j] = clip(rne(x[j] / scales[j])).
  void (*quant_vec_f32)(const float*, int64_t, const float*, int8_t*);
  void (*quant_vec_f16)(const uint16_t*, int64_t, const float*, int8_t*);
  // out[j] = q[j] * scale  /  out[j] = q[j] * scales[j].
  void (*dequant)(const int8_t*, int64_t, float, float*);
  void (*dequant_vec)(const int8_t*, int64_t, const float*, float*);
};

extern const RowKernels kScalar;
extern const RowKernels kAvx2;
extern const RowKernels kAvx512;

}  // namespace detail
}  // namespace quant
}  // namespace pyperfcore
