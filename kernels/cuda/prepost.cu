// CUDA kernels of the fused pre/post-processing ops. Arithmetic follows the CPU backend: the
// same float32 tap weights summed horizontally then vertically, (x - mean) * inv_std, IEEE
// division and round-half-to-even for int8 / uint8 outputs.
#include <cmath>

#include "cuda_compat.hpp"
#include "prepost_cuda.hpp"

namespace pyperfcore {
namespace cuda {
namespace {

template <int KIND>
struct OutT;
template <>
struct OutT<kOutF32> {
  using type = float;
  static __device__ __forceinline__ float conv(float v, float) { return v; }
};
template <>
struct OutT<kOutF16> {
  using type = __half;
  static __device__ __forceinline__ __half conv(float v, float) { return __float2half_rn(v); }
};
template <>
struct OutT<kOutBF16> {
  using type = __nv_bfloat16;
  static __device__ __forceinline__ __nv_bfloat16 conv(float v, float) { return __float2bfloat16_rn(v); }
};
template <>
struct OutT<kOutI8> {
  using type = int8_t;
  static __device__ __forceinline__ int8_t conv(float v, float s) {
    float q = fminf(fmaxf(__fdiv_rn(v, s), -127.f), 127.f);
    return static_cast<int8_t>(__float2int_rn(q));
  }
};
template <>
struct OutT<kOutU8> {
  using type = uint8_t;
  static __device__ __forceinline__ uint8_t conv(float v, float) {
    return static_cast<uint8_t>(__float2int_rn(fminf(fmaxf(v, 0.f), 255.f)));
  }
};

// grid (ceil(ow / blockDim.x), oh, n): one thread per output pixel, every channel.
template <int KIND, bool RESIZE>
__global__ void preprocess_kernel(PrepostImageArgs a) {
  using O = typename OutT<KIND>::type;
  const int64_t xo = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t y = blockIdx.y, i = blockIdx.z;
  if (xo >= a.ow) return;
  const uint8_t* img = a.x + i * a.xs_n;
  O* out = static_cast<O*>(a.out) + i * a.os_n + y * a.os_h + xo * a.os_w;
  int64_t y0 = 0, x0 = 0;
  if (RESIZE) {
    y0 = a.ys[y];
    x0 = a.xs[xo];
  }
  for (int64_t c = 0; c < a.c; ++c) {
    const int64_t sc = a.swap_rb ? 2 - c : c;
    float acc;
    if (RESIZE) {
      acc = 0.f;
      for (int64_t jy = 0; jy < a.ty; ++jy) {
        const float wy = a.yw[y * a.ty + jy];
        const int64_t sy = min(y0 + jy, a.h - 1);
        const uint8_t* row = img + sy * a.xs_h + sc * a.xs_c;
        float h = 0.f;
        for (int64_t jx = 0; jx < a.tx; ++jx) {
          const int64_t sx = min(x0 + jx, a.w - 1);
          h += a.xw[xo * a.tx + jx] * static_cast<float>(row[sx * a.xs_w]);
        }
        acc = jy == 0 ? wy * h : acc + wy * h;
      }
    } else {
      acc = static_cast<float>(img[(a.top + y) * a.xs_h + (a.left + xo) * a.xs_w + sc * a.xs_c]);
    }
    out[c * a.os_c] = OutT<KIND>::conv((acc - a.mean[c]) * a.inv_std[c], a.out_scale);
  }
}

// Resize path: one thread per output pixel. Each tap reads all channels of a source pixel at
// once (one tap-weight load per tap instead of one per channel) and keeps per-channel sums in
// registers; the sums run in the same order as preprocess_kernel's (horizontal, then vertical).
// NT > 0: both tap counts are NT (OpenCV / antialias=False bilinear has 2), loops unrolled.
template <int KIND, int C, int NT>
__global__ void __launch_bounds__(128) resize_kernel(PrepostImageArgs a) {
  using O = typename OutT<KIND>::type;
  const int64_t xo = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t y = blockIdx.y, i = blockIdx.z;
  if (xo >= a.ow) return;
  const uint8_t* img = a.x + i * a.xs_n;
  const int64_t y0 = a.ys[y], x0 = a.xs[xo];
  const int tx = NT > 0 ? NT : static_cast<int>(a.tx), ty = NT > 0 ? NT : static_cast<int>(a.ty);
  const float* __restrict__ xw = a.xw + xo * a.tx;
  const float* __restrict__ yw = a.yw + y * a.ty;
  float acc[C];
#pragma unroll
  for (int c = 0; c < C; ++c) acc[c] = 0.f;
#pragma unroll
  for (int jy = 0; jy < ty; ++jy) {
    const float wy = yw[jy];
    const uint8_t* row = img + min(y0 + jy, a.h - 1) * a.xs_h;
    float h[C];
#pragma unroll
    for (int c = 0; c < C; ++c) h[c] = 0.f;
#pragma unroll
    for (int jx = 0; jx < tx; ++jx) {
      const float w = xw[jx];
      const uint8_t* px = row + min(x0 + jx, a.w - 1) * a.xs_w;
#pragma unroll
      for (int c = 0; c < C; ++c) h[c] += w * static_cast<float>(px[c * a.xs_c]);
    }
#pragma unroll
    for (int c = 0; c < C; ++c) acc[c] = jy == 0 ? wy * h[c] : acc[c] + wy * h[c];
  }
  O* out = static_cast<O*>(a.out) + i * a.os_n + y * a.os_h + xo * a.os_w;
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const float v = (C == 3 && a.swap_rb) ? acc[C - 1 - c] : acc[c];
    out[c * a.os_c] = OutT<KIND>::conv((v - a.mean[c]) * a.inv_std[c], a.out_scale);
  }
}

// The normalize / layout fast path: no resize, no crop, contiguous HWC rows (the image is a flat
// run of pixels) and a contiguous NCHW plane per channel. One block takes kFlatPix pixels of
// one image: 16-byte loads of the packed pixels into shared memory, then each thread converts
// 4 consecutive pixels of one plane and writes them as one vector (16 bytes for float32), so
// both the loads and the per-plane stores are coalesced (the HWC -> CHW transpose happens in
// shared memory). Same arithmetic as preprocess_kernel.
constexpr int kFlatThreads = 256;
constexpr int kFlatPix = 4096;

template <class O>
struct alignas(4 * sizeof(O)) Vec4 {
  O v[4];
};

template <int KIND, int C>
__global__ void __launch_bounds__(kFlatThreads) normalize_flat_kernel(PrepostImageArgs a, int64_t hw, int aligned) {
  using O = typename OutT<KIND>::type;
  __shared__ __align__(16) uint8_t tile[kFlatPix * C];
  const int64_t i = blockIdx.y;
  const int64_t p0 = static_cast<int64_t>(blockIdx.x) * kFlatPix;
  const int npix = static_cast<int>(min(static_cast<int64_t>(kFlatPix), hw - p0));
  const int nbytes = npix * C;
  const uint8_t* src = a.x + i * a.xs_n + p0 * C;
  if (aligned && (nbytes & 15) == 0) {
    const uint4* s4 = reinterpret_cast<const uint4*>(src);
    uint4* t4 = reinterpret_cast<uint4*>(tile);
    for (int j = threadIdx.x; j < (nbytes >> 4); j += kFlatThreads) t4[j] = __ldg(s4 + j);
  } else {
    for (int j = threadIdx.x; j < nbytes; j += kFlatThreads) tile[j] = src[j];
  }
  __syncthreads();
  O* out = static_cast<O*>(a.out) + i * a.os_n + p0;
  const bool vec = aligned && (npix & 3) == 0;
#pragma unroll
  for (int c = 0; c < C; ++c) {
    const int sc = (C == 3 && a.swap_rb) ? 2 - c : c;
    const float mean = a.mean[c], inv = a.inv_std[c];
    O* plane = out + c * a.os_c;
    if (vec) {
      Vec4<O>* p4 = reinterpret_cast<Vec4<O>*>(plane);
      for (int q = threadIdx.x; q < (npix >> 2); q += kFlatThreads) {
        Vec4<O> v;
#pragma unroll
        for (int e = 0; e < 4; ++e)
          v.v[e] = OutT<KIND>::conv((static_cast<float>(tile[(q * 4 + e) * C + sc]) - mean) * inv, a.out_scale);
        p4[q] = v;
      }
    } else {
      for (int p = threadIdx.x; p < npix; p += kFlatThreads)
        plane[p] = OutT<KIND>::conv((static_cast<float>(tile[p * C + sc]) - mean) * inv, a.out_scale);
    }
  }
}

// Whether the batch and the output take the flat path, and whether its vector accesses are aligned.
inline bool flat_layout(const PrepostImageArgs& a) {
  return a.ys == nullptr && a.top == 0 && a.left == 0 && a.oh == a.h && a.ow == a.w && a.xs_c == 1 && a.xs_w == a.c &&
         a.xs_h == a.w * a.c && a.os_w == 1 && a.os_h == a.ow;
}

template <int KIND>
cudaError_t launch_flat(const PrepostImageArgs& a, cudaStream_t s) {
  using O = typename OutT<KIND>::type;
  const int64_t hw = a.h * a.w;
  const uintptr_t xp = reinterpret_cast<uintptr_t>(a.x), op = reinterpret_cast<uintptr_t>(a.out);
  const int aligned = xp % 16 == 0 && a.xs_n % 16 == 0 && op % (4 * sizeof(O)) == 0 && a.os_n % 4 == 0 && a.os_c % 4 == 0;
  dim3 grid(static_cast<unsigned>((hw + kFlatPix - 1) / kFlatPix), static_cast<unsigned>(a.n));
  auto* kernel = a.c == 3 ? &normalize_flat_kernel<KIND, 3> : &normalize_flat_kernel<KIND, 1>;
  PFC_LAUNCH(kernel, grid, dim3(kFlatThreads), s, a, hw, aligned);
  return cudaGetLastError();
}

template <int KIND>
cudaError_t launch_preprocess(const PrepostImageArgs& a, cudaStream_t s) {
  if (flat_layout(a) && (a.h * a.w + kFlatPix - 1) / kFlatPix <= 2147483647LL) return launch_flat<KIND>(a, s);
  const int threads = 128;
  dim3 grid(static_cast<unsigned>((a.ow + threads - 1) / threads), static_cast<unsigned>(a.oh), static_cast<unsigned>(a.n));
  const bool two = a.tx == 2 && a.ty == 2;
  auto* kernel = a.ys != nullptr && a.c == 3 && two ? &resize_kernel<KIND, 3, 2>
                 : a.ys != nullptr && a.c == 3      ? &resize_kernel<KIND, 3, 0>
                 : a.ys != nullptr                  ? &resize_kernel<KIND, 1, 0>
                                                    : &preprocess_kernel<KIND, false>;
  PFC_LAUNCH(kernel, grid, dim3(threads), s, a);
  return cudaGetLastError();
}

// ---------------------------------------------------------------- top-k
template <class T>
__device__ __forceinline__ float load_logit(const T* row, int64_t j, const float* scales, int64_t n_scales);
template <>
__device__ __forceinline__ float load_logit<float>(const float* row, int64_t j, const float*, int64_t) { return row[j]; }
template <>
__device__ __forceinline__ float load_logit<__half>(const __half* row, int64_t j, const float*, int64_t) {
  return __half2float(row[j]);
}
template <>
__device__ __forceinline__ float load_logit<int8_t>(const int8_t* row, int64_t j, const float* scales, int64_t n_scales) {
  return static_cast<float>(row[j]) * scales[n_scales == 1 ? 0 : j];
}

// (v, i) is better than (bv, bi) in the order value descending, index ascending.
__device__ __forceinline__ bool better(float v, int64_t i, float bv, int64_t bi) { return v > bv || (v == bv && i < bi); }

constexpr int kTopkThreads = 128;
constexpr int kWarps = kTopkThreads / 32;

// One block per row. Passes over the row (it stays in L1/L2): max and flags, sum of exp, then
// one arg-best pass per output: the best element strictly after the previous pick in the
// order, so nothing needs marking as taken.
template <class T>
__global__ void __launch_bounds__(kTopkThreads) topk_kernel(const T* __restrict__ x, int64_t cols, int64_t row_stride,
                                                            const float* __restrict__ scales, int64_t n_scales, int64_t k,
                                                            int softmax, float* __restrict__ values,
                                                            int64_t* __restrict__ indices, int32_t* __restrict__ bad) {
  __shared__ float s_v[kWarps];
  __shared__ int64_t s_i[kWarps];
  __shared__ int s_f[kWarps];
  const int64_t r = blockIdx.x;
  const T* row = x + r * row_stride;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float inf = __int_as_float(0x7f800000);

  float m = -inf;
  int flags = 0;
  for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
    const float v = load_logit(row, j, scales, n_scales);
    if (v != v) flags |= 1;
    else if (v == inf) flags |= 2;
    m = fmaxf(m, v);
  }
  for (int off = 16; off > 0; off >>= 1) {
    m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
    flags |= __shfl_xor_sync(0xffffffffu, flags, off);
  }
  if (lane == 0) {
    s_v[warp] = m;
    s_f[warp] = flags;
  }
  __syncthreads();
  m = s_v[0];
  flags = s_f[0];
  for (int w = 1; w < kWarps; ++w) {
    m = fmaxf(m, s_v[w]);
    flags |= s_f[w];
  }
  const int code = (flags & 1) ? 1 : ((flags & 2) ? 2 : ((softmax && m == -inf) ? 3 : 0));
  if (bad != nullptr && threadIdx.x == 0) bad[r] = code;
  if (code != 0) {  // the whole block takes this branch: the row is poisoned (NaN, index -1)
    for (int64_t t = threadIdx.x; t < k; t += blockDim.x) {
      values[r * k + t] = __int_as_float(0x7fc00000);
      indices[r * k + t] = -1;
    }
    return;
  }
  __syncthreads();

  float lse = 0.f;
  if (softmax) {
    float s = 0.f;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) s += expf(load_logit(row, j, scales, n_scales) - m);
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) s_v[warp] = s;
    __syncthreads();
    s = 0.f;
    for (int w = 0; w < kWarps; ++w) s += s_v[w];
    lse = m + logf(s);
    __syncthreads();
  }

  float pv = inf;
  int64_t pi = -1;
  for (int64_t t = 0; t < k; ++t) {
    float bv = -inf;
    int64_t bi = cols;
    for (int64_t j = threadIdx.x; j < cols; j += blockDim.x) {
      const float v = load_logit(row, j, scales, n_scales);
      if ((v < pv || (v == pv && j > pi)) && better(v, j, bv, bi)) {
        bv = v;
        bi = j;
      }
    }
    for (int off = 16; off > 0; off >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, off);
      const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, off);
      if (better(ov, oi, bv, bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if (lane == 0) {
      s_v[warp] = bv;
      s_i[warp] = bi;
    }
    __syncthreads();
    bv = s_v[0];
    bi = s_i[0];
    for (int w = 1; w < kWarps; ++w)
      if (better(s_v[w], s_i[w], bv, bi)) {
        bv = s_v[w];
        bi = s_i[w];
      }
    if (threadIdx.x == 0) {
      values[r * k + t] = softmax ? expf(bv - lse) : bv;
      indices[r * k + t] = bi;
    }
    pv = bv;
    pi = bi;
    __syncthreads();  // s_v / s_i are rewritten by the next round
  }
}

// Merge of (max, sum of exp(x - max)) pairs; a zero sum means "no finite value yet".
__device__ __forceinline__ void lse_merge(float& m, float& s, float m2, float s2) {
  if (s2 == 0.f) return;
  if (s == 0.f) {
    m = m2;
    s = s2;
  } else if (m2 > m) {
    s = s * expf(m - m2) + s2;
    m = m2;
  } else {
    s += s2 * expf(m2 - m);
  }
}

// The small-k path (k <= K <= 16): a single pass over the row. Each thread keeps its own top-K
// in registers (sorted, insertion by the unrolled compare-swap chain) and an online
// (max, sum of exp) of its elements; the block then merges the sums and picks the k best of
// the per-thread lists, the winning thread shifting its list by one each round.
template <class T, int K>
__global__ void __launch_bounds__(kTopkThreads) topk_small_kernel(const T* __restrict__ x, int64_t cols, int64_t row_stride,
                                                                  const float* __restrict__ scales, int64_t n_scales,
                                                                  int64_t k, int softmax, float* __restrict__ values,
                                                                  int64_t* __restrict__ indices,
                                                                  int32_t* __restrict__ bad) {
  __shared__ float s_v[kWarps];
  __shared__ float s_s[kWarps];
  __shared__ int s_i[kWarps];
  __shared__ int s_f[kWarps];
  const int64_t r = blockIdx.x;
  const T* row = x + r * row_stride;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const float inf = __int_as_float(0x7f800000);
  constexpr int kNone = 0x7fffffff;  // index of an empty slot: after every real index

  float tv[K];
  int ti[K];
#pragma unroll
  for (int e = 0; e < K; ++e) {
    tv[e] = -inf;
    ti[e] = kNone;
  }
  float m = -inf, sum = 0.f, mx = -inf;
  int flags = 0;
  for (int j = threadIdx.x; j < cols; j += kTopkThreads) {
    const float v = load_logit(row, j, scales, n_scales);
    if (v != v) {
      flags |= 1;
      continue;
    }
    if (v == inf) {
      flags |= 2;
      continue;
    }
    mx = fmaxf(mx, v);
    if (softmax && v != -inf) {
      if (sum == 0.f) {
        m = v;
        sum = 1.f;
      } else if (v > m) {
        sum = sum * expf(m - v) + 1.f;
        m = v;
      } else {
        sum += expf(v - m);
      }
    }
    if (better(v, j, tv[K - 1], ti[K - 1])) {
      float cv = v;
      int ci = j;
#pragma unroll
      for (int e = 0; e < K; ++e) {
        if (better(cv, ci, tv[e], ti[e])) {
          const float tv2 = tv[e];
          const int ti2 = ti[e];
          tv[e] = cv;
          ti[e] = ci;
          cv = tv2;
          ci = ti2;
        }
      }
    }
  }
  for (int off = 16; off > 0; off >>= 1) {
    const float om = __shfl_xor_sync(0xffffffffu, m, off), os = __shfl_xor_sync(0xffffffffu, sum, off);
    lse_merge(m, sum, om, os);
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    flags |= __shfl_xor_sync(0xffffffffu, flags, off);
  }
  if (lane == 0) {
    s_v[warp] = m;
    s_s[warp] = sum;
    s_f[warp] = flags;
    s_i[warp] = __float_as_int(mx);
  }
  __syncthreads();
  m = s_v[0];
  sum = s_s[0];
  flags = s_f[0];
  mx = __int_as_float(s_i[0]);
  for (int w = 1; w < kWarps; ++w) {
    lse_merge(m, sum, s_v[w], s_s[w]);
    flags |= s_f[w];
    mx = fmaxf(mx, __int_as_float(s_i[w]));
  }
  const int code = (flags & 1) ? 1 : ((flags & 2) ? 2 : ((softmax && mx == -inf) ? 3 : 0));
  if (bad != nullptr && threadIdx.x == 0) bad[r] = code;
  if (code != 0) {  // the whole block takes this branch: the row is poisoned (NaN, index -1)
    for (int64_t t = threadIdx.x; t < k; t += blockDim.x) {
      values[r * k + t] = __int_as_float(0x7fc00000);
      indices[r * k + t] = -1;
    }
    return;
  }
  const float lse = softmax ? m + logf(sum) : 0.f;
  __syncthreads();  // s_v / s_i are reused below

  for (int64_t t = 0; t < k; ++t) {
    float bv = tv[0];
    int bi = ti[0];
    for (int off = 16; off > 0; off >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, off);
      const int oi = __shfl_xor_sync(0xffffffffu, bi, off);
      if (better(ov, oi, bv, bi)) {
        bv = ov;
        bi = oi;
      }
    }
    if (lane == 0) {
      s_v[warp] = bv;
      s_i[warp] = bi;
    }
    __syncthreads();
    bv = s_v[0];
    bi = s_i[0];
    for (int w = 1; w < kWarps; ++w)
      if (better(s_v[w], s_i[w], bv, bi)) {
        bv = s_v[w];
        bi = s_i[w];
      }
    if (ti[0] == bi) {  // indices are unique across threads: the owner drops its head
#pragma unroll
      for (int e = 0; e + 1 < K; ++e) {
        tv[e] = tv[e + 1];
        ti[e] = ti[e + 1];
      }
      tv[K - 1] = -inf;
      ti[K - 1] = kNone;
    }
    if (threadIdx.x == 0) {
      values[r * k + t] = softmax ? expf(bv - lse) : bv;
      indices[r * k + t] = bi;
    }
    __syncthreads();  // s_v / s_i are rewritten by the next round
  }
}

template <class T>
cudaError_t launch_topk(const T* x, int64_t rows, int64_t cols, int64_t row_stride, const float* scales, int64_t n_scales,
                        int64_t k, int softmax, float* values, int64_t* indices, int32_t* bad, cudaStream_t s) {
  const unsigned grid = static_cast<unsigned>(rows);
  auto* kernel = cols >= 2147483647LL || k > 16 ? &topk_kernel<T>
                 : k <= 1                        ? &topk_small_kernel<T, 1>
                 : k <= 2                        ? &topk_small_kernel<T, 2>
                 : k <= 4                        ? &topk_small_kernel<T, 4>
                 : k <= 8                        ? &topk_small_kernel<T, 8>
                                                 : &topk_small_kernel<T, 16>;
  PFC_LAUNCH(kernel, dim3(grid), dim3(kTopkThreads), s, x, cols, row_stride, scales, n_scales, k, softmax, values, indices,
             bad);
  return cudaGetLastError();
}

}  // namespace

int prepost_preprocess(const PrepostImageArgs& a, void* stream_ptr) {
  if (a.n <= 0 || a.oh <= 0 || a.ow <= 0) return 0;
  if (a.oh > 65535 || a.n > 65535) return cudaErrorInvalidConfiguration;
  cudaStream_t s = static_cast<cudaStream_t>(stream_ptr);
  switch (a.out_kind) {
    case kOutF32: return launch_preprocess<kOutF32>(a, s);
    case kOutF16: return launch_preprocess<kOutF16>(a, s);
    case kOutBF16: return launch_preprocess<kOutBF16>(a, s);
    case kOutI8: return launch_preprocess<kOutI8>(a, s);
    case kOutU8: return launch_preprocess<kOutU8>(a, s);
    default: return cudaErrorInvalidValue;
  }
}

int prepost_topk(const void* x, int dtype, int64_t rows, int64_t cols, int64_t row_stride, const float* scales,
                 int64_t n_scales, int64_t k, int softmax, float* values, int64_t* indices, int32_t* bad, void* stream_ptr) {
  if (rows <= 0 || cols <= 0) return 0;
  if (rows > 2147483647LL) return cudaErrorInvalidConfiguration;
  cudaStream_t s = static_cast<cudaStream_t>(stream_ptr);
  if (dtype == 0)
    return launch_topk(static_cast<const float*>(x), rows, cols, row_stride, scales, n_scales, k, softmax, values, indices,
                       bad, s);
  if (dtype == 1)
    return launch_topk(static_cast<const __half*>(x), rows, cols, row_stride, scales, n_scales, k, softmax, values, indices,
                       bad, s);
  if (dtype == 2)
    return launch_topk(static_cast<const int8_t*>(x), rows, cols, row_stride, scales, n_scales, k, softmax, values, indices,
                       bad, s);
  return cudaErrorInvalidValue;
}

}  // namespace cuda
}  // namespace pyperfcore
