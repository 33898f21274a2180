// CUDA kernels for the W8A8 linear's activations: per-token uint8 quantization and its inverse.
// Bit-identical to the CPU kernels: IEEE division and multiplication without contraction
// (__fdiv_rn, __fmul_rn), round half to even (rintf).
#include <cuda_runtime.h>

#include <cstdint>

#include "quant_cuda.hpp"

namespace pyperfcore {
namespace cuda {
namespace {

constexpr int kThreads = 256;

__global__ void quantize_rows_kernel(const float* __restrict__ x, int64_t k, int64_t kp, int64_t ldx,
                                     uint8_t* __restrict__ q, int64_t ldq, float* __restrict__ scales,
                                     int32_t* __restrict__ zps, int symmetric, int* __restrict__ bad) {
  const int64_t row = blockIdx.x;
  const float* xr = x + row * ldx;
  float lo = 0.f, hi = 0.f;
  bool b = false;
  for (int64_t j = threadIdx.x; j < k; j += blockDim.x) {
    const float v = xr[j];
    if (!(fabsf(v) <= 3.402823466e38f)) b = true;
    else {
      lo = fminf(lo, v);
      hi = fmaxf(hi, v);
    }
  }
  for (int off = 16; off > 0; off >>= 1) {
    lo = fminf(lo, __shfl_down_sync(0xffffffffu, lo, off));
    hi = fmaxf(hi, __shfl_down_sync(0xffffffffu, hi, off));
  }
  __shared__ float s_lo[32], s_hi[32];
  __shared__ float s_inv, s_zp;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (b) atomicOr(bad, 1);
  if (lane == 0) {
    s_lo[warp] = lo;
    s_hi[warp] = hi;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int w = 1; w < (blockDim.x + 31) / 32; ++w) {
      lo = fminf(lo, s_lo[w]);
      hi = fmaxf(hi, s_hi[w]);
    }
    float s, zp;
    if (symmetric) {
      const float amax = fmaxf(-lo, hi);
      s = __fdiv_rn(amax, 127.f);
      s = s >= 1.17549435e-38f ? s : 1.f;
      zp = 128.f;
    } else {
      const float range = __fsub_rn(hi, lo);
      s = __fdiv_rn(range, 255.f);
      s = s >= 1.17549435e-38f ? s : 1.f;
      zp = fminf(fmaxf(rintf(__fmul_rn(-lo, __fdiv_rn(1.f, s))), 0.f), 255.f);
    }
    s_inv = __fdiv_rn(1.f, s);
    s_zp = zp;
    scales[row] = s;
    zps[row] = static_cast<int32_t>(zp);
  }
  __syncthreads();
  const float inv = s_inv, zp = s_zp, qmin = symmetric ? 1.f : 0.f;
  uint8_t* qr = q + row * ldq;
  for (int64_t j = threadIdx.x; j < kp; j += blockDim.x) {
    float v = zp;
    if (j < k) v = fminf(fmaxf(__fadd_rn(rintf(__fmul_rn(xr[j], inv)), zp), qmin), 255.f);
    qr[j] = static_cast<uint8_t>(static_cast<int>(v));
  }
}

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
  quantize_rows_kernel<<<static_cast<unsigned int>(m), kThreads, 0, st>>>(x, k, kp, ldx, q, ldq, scales, zps, symmetric,
                                                                          flag);
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
  dequantize_rows_kernel<<<blocks, kThreads, 0, static_cast<cudaStream_t>(stream)>>>(q, m, k, ldq, scales, zps, out);
  return static_cast<int>(cudaGetLastError());
}

}  // namespace cuda
}  // namespace pyperfcore
