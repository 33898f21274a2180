// Per-token (per-row) activation quantization shared by the CUDA launchers (quant_linear.cu,
// w8a8_small.cu). Bit-identical to the CPU kernels (csrc/quant/linear.hpp): IEEE division and
// multiplication without contraction (__fdiv_rn, __fmul_rn), round half to even (rintf).
#pragma once
#include <cstdint>

#include "cuda_compat.hpp"

namespace pyperfcore {
namespace cuda {
namespace detail {

__device__ __forceinline__ float to_f32(float v) { return v; }
__device__ __forceinline__ float to_f32(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 v) { return __bfloat162float(v); }

// A block's strided walk over one row of k elements: f(j, value) for each j = threadIdx.x +
// i * blockDim.x < k. kRowUnroll loads are issued before any is used, so a thread has that many
// in flight: one row per block means few blocks at small M, and a loop with one load per trip
// (what the sm_90 build of the plain loop gave) waits one memory round trip per blockDim.x
// elements, 16 in a row at K = 4096.
constexpr int kRowUnroll = 8;

template <typename T, typename F>
__device__ __forceinline__ void for_row(const T* __restrict__ xr, int64_t k, F&& f) {
  const int64_t bd = blockDim.x;
  int64_t j = threadIdx.x;
  for (; j + (kRowUnroll - 1) * bd < k; j += kRowUnroll * bd) {
    float v[kRowUnroll];
#pragma unroll
    for (int u = 0; u < kRowUnroll; ++u) v[u] = to_f32(xr[j + u * bd]);
#pragma unroll
    for (int u = 0; u < kRowUnroll; ++u) f(j + u * bd, v[u]);
  }
  for (; j < k; j += bd) f(j, to_f32(xr[j]));
}

// One block per row (blockIdx.x + row0). The row's [min, max] with 0 included (or its absolute
// maximum when symmetric) gives the scale and zero point; codes are uint8 q, or with kSigned the
// int8 q - 128 (the same bits with the top one flipped), for the signed x signed dot product.
// Columns k..kp-1 get the zero point's code. A row holding NaN/inf sets row_bad[row] (if given)
// and *any_bad (if given); its codes are then meaningless.
template <typename T, bool kSigned>
__global__ void quantize_rows_kernel(const T* __restrict__ x, int64_t k, int64_t kp, int64_t ldx,
                                     uint8_t* __restrict__ q, int64_t ldq, float* __restrict__ scales,
                                     int32_t* __restrict__ zps, int symmetric, int* __restrict__ any_bad,
                                     int32_t* __restrict__ row_bad) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * ldx;
  float lo = 0.f, hi = 0.f;
  int b = 0;
  for_row(xr, k, [&](int64_t, float v) {
    if (!(fabsf(v) <= 3.402823466e38f)) {
      b = 1;
    } else {
      lo = fminf(lo, v);
      hi = fmaxf(hi, v);
    }
  });
  for (int off = 16; off > 0; off >>= 1) {
    lo = fminf(lo, __shfl_down_sync(0xffffffffu, lo, off));
    hi = fmaxf(hi, __shfl_down_sync(0xffffffffu, hi, off));
  }
  __shared__ float s_lo[32], s_hi[32];
  __shared__ float s_inv, s_zp;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) {
    s_lo[warp] = lo;
    s_hi[warp] = hi;
  }
  const int bad = __syncthreads_or(b);  // also the barrier for s_lo / s_hi
  if (threadIdx.x == 0) {
    for (int w = 1; w < (static_cast<int>(blockDim.x) + 31) / 32; ++w) {
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
    if (row_bad) row_bad[row] = bad;
    if (any_bad && bad) atomicOr(any_bad, 1);
  }
  __syncthreads();
  const float inv = s_inv, zp = s_zp, qmin = symmetric ? 1.f : 0.f;
  uint8_t* qr = q + row * ldq;
  for_row(xr, k, [&](int64_t j, float x) {
    const float v = fminf(fmaxf(__fadd_rn(rintf(__fmul_rn(x, inv)), zp), qmin), 255.f);
    const uint8_t code = static_cast<uint8_t>(static_cast<int>(v));
    qr[j] = kSigned ? static_cast<uint8_t>(code ^ 0x80u) : code;
  });
  const uint8_t pad = static_cast<uint8_t>(static_cast<int>(zp));  // columns k..kp-1: the zero point's code
  for (int64_t j = k + threadIdx.x; j < kp; j += blockDim.x) qr[j] = kSigned ? static_cast<uint8_t>(pad ^ 0x80u) : pad;
}

}  // namespace detail
}  // namespace cuda
}  // namespace pyperfcore
