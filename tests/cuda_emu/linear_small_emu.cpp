// kernels/cuda/linear_small.cu built by the host compiler against the CPU emulation, with C entry
// points for ctypes (tests/quant/test_cuda_emulated.py builds and loads it).
#define PYPERFCORE_CUDA_EMULATE 1
#include "linear_small.cu"

extern "C" {
int64_t emu_w8a8_small_workspace(int64_t m, int64_t k) { return pyperfcore::cuda::w8a8_small_workspace(m, k); }

int emu_linear_w8a8_small(const void* x, int x_dtype, int64_t m, int64_t k, int64_t ldx, const int8_t* w, int64_t n,
                          int64_t ldw, const float* wscale, const int32_t* colsum, const float* bias,
                          const void* residual, int r_dtype, int64_t ldr, void* y, int y_dtype, int64_t ldy, int act,
                          int symmetric, void* workspace, int64_t workspace_bytes) {
  return pyperfcore::cuda::linear_w8a8_small(x, x_dtype, m, k, ldx, w, n, ldw, wscale, colsum, bias, residual, r_dtype,
                                             ldr, y, y_dtype, ldy, act, symmetric, workspace, workspace_bytes, nullptr);
}

int64_t emu_half_small_workspace(int64_t m, int64_t k) { return pyperfcore::cuda::half_small_workspace(m, k); }

int emu_linear_half_small(const void* x, int x_dtype, int64_t m, int64_t k, int64_t ldx, const void* w, int w_dtype,
                          int64_t n, int64_t ldw, const float* bias, const void* residual, int r_dtype, int64_t ldr,
                          void* y, int y_dtype, int64_t ldy, int act, void* workspace, int64_t workspace_bytes) {
  return pyperfcore::cuda::linear_half_small(x, x_dtype, m, k, ldx, w, w_dtype, n, ldw, bias, residual, r_dtype, ldr, y,
                                             y_dtype, ldy, act, workspace, workspace_bytes, nullptr);
}
}
