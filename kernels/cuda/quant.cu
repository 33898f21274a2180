// CUDA kernels of the pilot quantize op. Results are bit-identical to the CPU backend:
// IEEE division (__fdiv_rn) and round-half-to-even (__float2int_rn).
#include <cstring>

#include "cuda_compat.hpp"
#include "quant_cuda.hpp"

namespace pyperfcore {
namespace cuda {
namespace {

template <class T>
__device__ __forceinline__ float load_f(const T* p);
template <>
__device__ __forceinline__ float load_f<float>(const float* p) { return *p; }
template <>
__device__ __forceinline__ float load_f<__half>(const __half* p) { return __half2float(*p); }

// grid: (channels, blocks over outer*inner). amax stored as the bit pattern of a non-negative
// float, so integer atomicMax orders them correctly.
template <class T>
__global__ void amax_kernel(const T* __restrict__ x, int64_t outer, int64_t inner, int64_t s_o, int64_t s_c,
                            int64_t s_i, unsigned int* __restrict__ amax_bits, unsigned int* __restrict__ bad) {
  const int64_t c = blockIdx.x;
  const int64_t n = outer * inner;
  float m = 0.f;
  bool b = false;
  for (int64_t idx = static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.y) * blockDim.x) {
    const int64_t o = idx / inner, i = idx % inner;
    float a = fabsf(load_f(x + o * s_o + c * s_c + i * s_i));
    if (!(a <= 3.402823466e38f)) b = true;
    else m = fmaxf(m, a);
  }
  for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_down_sync(0xffffffffu, m, off));
  __shared__ float warp_max[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) warp_max[warp] = m;
  if (b) atomicOr(bad, 1u);
  __syncthreads();
  if (warp == 0) {
    m = lane < (static_cast<int>(blockDim.x) + 31) / 32 ? warp_max[lane] : 0.f;
    for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_down_sync(0xffffffffu, m, off));
    if (lane == 0) atomicMax(amax_bits + c, __float_as_uint(m));
  }
}

// Channels along the last, contiguous dimension (x[o, c], inner == 1, s_c == 1): each thread
// owns one channel and walks a slice of the rows, so neighbouring threads read neighbouring
// addresses (the per-channel kernel above would read with a stride of a whole row).
template <class T>
__global__ void amax_columns_kernel(const T* __restrict__ x, int64_t outer, int64_t channels, int64_t s_o,
                                    int64_t rows_per_block, unsigned int* __restrict__ amax_bits,
                                    unsigned int* __restrict__ bad) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= channels) return;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_block;
  const int64_t r1 = r0 + rows_per_block < outer ? r0 + rows_per_block : outer;
  float m = 0.f;
  bool b = false;
  for (int64_t o = r0; o < r1; ++o) {
    float a = fabsf(load_f(x + o * s_o + c));
    if (!(a <= 3.402823466e38f)) b = true;
    else m = fmaxf(m, a);
  }
  if (b) atomicOr(bad, 1u);
  atomicMax(amax_bits + c, __float_as_uint(m));
}

__global__ void scale_kernel(const unsigned int* __restrict__ amax_bits, float* __restrict__ scales, int64_t channels) {
  int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c < channels) {
    float a = __uint_as_float(amax_bits[c]);
    const float s = __fdiv_rn(a, 127.f);
    scales[c] = s >= 1.17549435e-38f ? s : 1.f;  // see scale_of in csrc/quant/quant.cpp
  }
}

// The quantize pass seen as a 2-D [rows, cols] grid with no per-element integer division:
// ROW_SCALE: rows are (outer, channel) pairs, cols run along `inner` (one scale per row);
// otherwise rows are `outer` and cols are the channels (inner == 1, one scale per column).
template <class T, bool ROW_SCALE>
__global__ void quant2d_kernel(const T* __restrict__ x, int64_t rows, int64_t cols, int64_t channels, int64_t s_o,
                               int64_t s_c, int64_t s_i, const float* __restrict__ scales, int8_t* __restrict__ q) {
  for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
    int64_t base, stride;
    float row_scale = 1.f;
    if (ROW_SCALE) {
      const int64_t o = r / channels, c = r - o * channels;  // once per row
      base = o * s_o + c * s_c;
      stride = s_i;
      row_scale = scales[c];
    } else {
      base = r * s_o;
      stride = s_c;
    }
    int8_t* out = q + r * cols;
    for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < cols;
         j += static_cast<int64_t>(gridDim.x) * blockDim.x) {
      float v = __fdiv_rn(load_f(x + base + j * stride), ROW_SCALE ? row_scale : scales[j]);
      v = fminf(fmaxf(v, -127.f), 127.f);
      out[j] = static_cast<int8_t>(__float2int_rn(v));
    }
  }
}

template <class T>
void launch_quant2d(const T* x, int64_t outer, int64_t channels, int64_t inner, int64_t s_o, int64_t s_c,
                    int64_t s_i, const float* scales, int8_t* q, cudaStream_t stream) {
  const int threads = 256;
  const bool row_scale = !(inner == 1 && channels > 1);
  const int64_t rows = row_scale ? outer * channels : outer;
  const int64_t cols = row_scale ? inner : channels;
  int64_t gx = (cols + threads - 1) / threads;
  if (gx > 1024) gx = 1024;
  const int64_t gy = rows < 65535 ? rows : 65535;
  dim3 grid(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
  auto* kernel = row_scale ? &quant2d_kernel<T, true> : &quant2d_kernel<T, false>;
  PFC_LAUNCH(kernel, grid, dim3(threads), stream, x, rows, cols, channels, s_o, s_c, s_i, scales, q);
}

__global__ void dequant_kernel(const int8_t* __restrict__ q, const float* __restrict__ scales, int64_t n,
                               int64_t channels, int64_t inner, float* __restrict__ out) {
  for (int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[idx] = static_cast<float>(q[idx]) * scales[(idx / inner) % channels];
}

inline unsigned grid_for(int64_t n, int threads) {
  int64_t g = (n + threads - 1) / threads;
  return static_cast<unsigned>(g < 65535 * 8 ? (g > 0 ? g : 1) : 65535 * 8);
}

}  // namespace

int quantize_int8(const void* x, int dtype, int64_t outer, int64_t channels, int64_t inner, int64_t s_o, int64_t s_c,
                  int64_t s_i, int8_t* q, float* scales, void* stream_ptr, int* nonfinite) {
  *nonfinite = 0;
  if (channels <= 0) return 0;
  cudaStream_t stream = static_cast<cudaStream_t>(stream_ptr);
  const int64_t n = outer * inner;
  unsigned int* ws = nullptr;
  cudaError_t err = cudaMallocAsync(reinterpret_cast<void**>(&ws), sizeof(unsigned int) * (channels + 1), stream);
  if (err != cudaSuccess) return err;
  cudaMemsetAsync(ws, 0, sizeof(unsigned int) * (channels + 1), stream);
  const int threads = 256;
  if (n > 0 && inner == 1 && s_c == 1 && channels > 1) {
    const int64_t col_blocks = (channels + threads - 1) / threads;
    // Enough row slices to fill the GPU (a few hundred blocks), at least 16 rows each.
    int64_t slices = (1024 + col_blocks - 1) / col_blocks;
    if (slices > (outer + 15) / 16) slices = (outer + 15) / 16;
    if (slices < 1) slices = 1;
    if (slices > 65535) slices = 65535;
    const int64_t rows_per = (outer + slices - 1) / slices;
    dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(slices));
    if (dtype == 0) {
      auto* kernel = &amax_columns_kernel<float>;
      PFC_LAUNCH(kernel, grid, dim3(threads), stream, static_cast<const float*>(x), outer, channels, s_o, rows_per, ws,
                 ws + channels);
    } else {
      auto* kernel = &amax_columns_kernel<__half>;
      PFC_LAUNCH(kernel, grid, dim3(threads), stream, static_cast<const __half*>(x), outer, channels, s_o, rows_per, ws,
                 ws + channels);
    }
  } else if (n > 0) {
    int64_t per_channel_blocks = (n + threads * 8 - 1) / (threads * 8);
    dim3 grid(static_cast<unsigned>(channels), static_cast<unsigned>(per_channel_blocks < 1024 ? per_channel_blocks : 1024));
    if (dtype == 0) {
      auto* kernel = &amax_kernel<float>;
      PFC_LAUNCH(kernel, grid, dim3(threads), stream, static_cast<const float*>(x), outer, inner, s_o, s_c, s_i, ws,
                 ws + channels);
    } else {
      auto* kernel = &amax_kernel<__half>;
      PFC_LAUNCH(kernel, grid, dim3(threads), stream, static_cast<const __half*>(x), outer, inner, s_o, s_c, s_i, ws,
                 ws + channels);
    }
  }
  auto* scale = &scale_kernel;
  PFC_LAUNCH(scale, dim3(grid_for(channels, threads)), dim3(threads), stream, static_cast<const unsigned int*>(ws), scales,
             channels);
  unsigned int flag = 0;
  cudaMemcpyAsync(&flag, ws + channels, sizeof(unsigned int), cudaMemcpyDeviceToHost, stream);
  err = cudaStreamSynchronize(stream);
  if (err != cudaSuccess) {
    cudaFreeAsync(ws, stream);
    return err;
  }
  if (flag) {
    *nonfinite = 1;
    cudaFreeAsync(ws, stream);
    return 0;
  }
  if (n > 0) {
    if (dtype == 0)
      launch_quant2d(static_cast<const float*>(x), outer, channels, inner, s_o, s_c, s_i, scales, q, stream);
    else
      launch_quant2d(static_cast<const __half*>(x), outer, channels, inner, s_o, s_c, s_i, scales, q, stream);
  }
  cudaFreeAsync(ws, stream);
  return cudaGetLastError();
}

int dequantize_int8(const int8_t* q, const float* scales, int64_t outer, int64_t channels, int64_t inner, float* out,
                    void* stream_ptr) {
  const int64_t n = outer * channels * inner;
  if (n <= 0) return 0;
  const int threads = 256;
  auto* kernel = &dequant_kernel;
  PFC_LAUNCH(kernel, dim3(grid_for(n, threads)), dim3(threads), static_cast<cudaStream_t>(stream_ptr), q, scales, n,
             channels, inner, out);
  return cudaGetLastError();
}

int runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

int device_count(int* count) {
  *count = 0;
  return cudaGetDeviceCount(count);
}

const char* error_string(int err) { return cudaGetErrorString(static_cast<cudaError_t>(err)); }

int device_name(int index, char* buf, int len) {
  cudaDeviceProp prop;
  cudaError_t err = cudaGetDeviceProperties(&prop, index);
  if (err != cudaSuccess) return err;
  std::strncpy(buf, prop.name, static_cast<size_t>(len - 1));
  buf[len - 1] = 0;
  return 0;
}

}  // namespace cuda
}  // namespace pyperfcore
