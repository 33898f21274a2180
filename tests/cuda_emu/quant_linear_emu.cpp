// kernels/cuda/quant_linear.cu (per-token activation quantization and its inverse) built by the
// host compiler against the CPU emulation, with C entry points for ctypes.
#define PYPERFCORE_CUDA_EMULATE 1
#include "quant_linear.cu"

extern "C" {
int emu_quantize_rows_u8(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* q, int64_t ldq, float* scales,
                         int32_t* zps, int symmetric, int* flag, int* nonfinite) {
  return pyperfcore::cuda::quantize_rows_u8(x, m, k, ldx, q, ldq, scales, zps, symmetric, flag, nullptr, nonfinite);
}

int emu_dequantize_rows_u8(const uint8_t* q, int64_t m, int64_t k, int64_t ldq, const float* scales, const int32_t* zps,
                           float* out) {
  return pyperfcore::cuda::dequantize_rows_u8(q, m, k, ldq, scales, zps, out, nullptr);
}
}
