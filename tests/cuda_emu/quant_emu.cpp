// kernels/cuda/quant.cu (the pilot quantize / dequantize op) built by the host compiler against
// the CPU emulation, with C entry points for ctypes.
#define PYPERFCORE_CUDA_EMULATE 1
#include "quant.cu"

extern "C" {
int emu_quantize_int8(const void* x, int dtype, int64_t outer, int64_t channels, int64_t inner, int64_t s_o,
                      int64_t s_c, int64_t s_i, int8_t* q, float* scales, int* nonfinite) {
  return pyperfcore::cuda::quantize_int8(x, dtype, outer, channels, inner, s_o, s_c, s_i, q, scales, nullptr,
                                         nonfinite);
}

int emu_dequantize_int8(const int8_t* q, const float* scales, int64_t outer, int64_t channels, int64_t inner,
                        float* out) {
  return pyperfcore::cuda::dequantize_int8(q, scales, outer, channels, inner, out, nullptr);
}
}
