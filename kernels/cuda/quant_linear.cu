// CUDA launchers for the W8A8 linear's activations: per-token uint8 quantization (the kernel is
// in quant_rows.cuh) and its inverse.
#include <cstdint>

#include "cuda_compat.hpp"
#include "quant_cuda.hpp"
#include "quant_rows.cuh"

namespace pyperfcore {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__global__ void dequantize_rows_kernel(const uint8_t* __restrict__ q, int64_t m, int64_t k, int64_t ldq,
                                       const float* __restrict__ scales, const int32_t* __restrict__ zps,
                                       float* __restrict__ out) {
  const int64_t n = m * k;
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = idx / k, j = idx % k;
    out[idx] = __fmul_rn(static_cast<float>(static_cast<int32_t>(q[r * ldq + j]) - zps[r]), scales[r]);
  }
}

}  // namespace

int quantize_rows_u8(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* q, int64_t ldq, float* scales,
                     int32_t* zps, int symmetric, int* flag, void* stream, int* nonfinite) {
  *nonfinite = 0;
  if (m <= 0) return 0;
  const int64_t kp = (k > 0 ? (k + 3) / 4 : 1) * 4;
  if (ldq < kp) return static_cast<int>(cudaErrorInvalidValue);
  auto st = static_cast<cudaStream_t>(stream);
  cudaError_t err = cudaMemsetAsync(flag, 0, sizeof(int), st);
  if (err != cudaSuccess) return static_cast<int>(err);
  // One block per row; grid.x allows 2^31 - 1 rows.
  auto* kernel = &detail::quantize_rows_kernel<float, false>;
  PFC_LAUNCH(kernel, dim3(static_cast<unsigned int>(m)), dim3(kThreads), st, x, k, kp, ldx, q, ldq, scales, zps, symmetric,
             flag, static_cast<int32_t*>(nullptr));
  err = cudaGetLastError();
  if (err != cudaSuccess) return static_cast<int>(err);
  int host = 0;
  err = cudaMemcpyAsync(&host, flag, sizeof(int), cudaMemcpyDeviceToHost, st);
  if (err != cudaSuccess) return static_cast<int>(err);
  err = cudaStreamSynchronize(st);
  *nonfinite = host;
  return static_cast<int>(err);
}

int dequantize_rows_u8(const uint8_t* q, int64_t m, int64_t k, int64_t ldq, const float* scales, const int32_t* zps,
                       float* out, void* stream) {
  const int64_t n = m * k;
  if (n <= 0) return 0;
  const int64_t blocks64 = (n + kThreads - 1) / kThreads;
  const unsigned int blocks = static_cast<unsigned int>(blocks64 < 65535 * 8 ? blocks64 : 65535 * 8);
  auto* kernel = &dequantize_rows_kernel;
  PFC_LAUNCH(kernel, dim3(blocks), dim3(kThreads), static_cast<cudaStream_t>(stream), q, m, k, ldq, scales, zps, out);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace cuda
}  // namespace pyperfcore
