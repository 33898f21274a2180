// W8A8 linear for serving's small batches (M <= 16 rows per launch group), launched from C++:
//   y = act(sa * sw * (sum_k q * w - zp * colsum) + bias) + residual
// with per-token activation codes (quant_rows.cuh, bit-identical to the CPU and Triton codes)
// and per-channel INT8 weights [n, k] (row stride ldw). At these sizes the weight read is the
// floor (16 MB for 4096 x 4096: ~6 us on an H100) and the host's launch cost is what a
// synchronized serving call pays on top, so the whole layer is two plain kernel launches from
// one C++ call, no Python launcher:
//   1. quantize: one block per row, int8 codes q - 128 into the workspace, per-row NaN flags;
//   2. GEMV-like product: each warp owns kCols output columns and streams their weight rows
//      once (16-byte loads, coalesced, not kept in L1), the activation codes (a few KB, L1/L2
//      resident) are re-read per column group; __dp4a on signed int8 x int8, int32 sums reduced
//      across the warp; the epilogue adds (128 - zp) * colsum (exact in int32), scales, adds the
//      bias, applies the activation and the residual and stores float32/float16/bfloat16.
// Rows with NaN/inf in x give NaN output rows (no host synchronization). Nothing here runs on a
// machine without an NVIDIA GPU as CUDA; tests/quant/test_linear_cuda.py checks it against the
// numpy oracle on a GPU, and tests/quant/test_cuda_emulated.py checks this same source, built
// by the host compiler against a CPU emulation of the device (cuda_compat.hpp), everywhere.
#include <cstdint>

#include "cuda_compat.hpp"
#include "quant_cuda.hpp"
#include "quant_rows.cuh"

namespace pyperfcore {
namespace cuda {
namespace {

constexpr int kWarps = 4;     // warps per block of the product kernel
constexpr int kCols = 4;      // output columns per warp
constexpr int kMaxRows = 16;  // rows per launch group (grid.y walks the groups)
constexpr int kQuantThreads = 256;

// VEC bytes of int8 per lane and step: 16 (int4 loads), 4 (one word) or 1 (unaligned rows).
template <int VEC>
struct Vec;

template <>
struct Vec<16> {
  int4 v;
  __device__ __forceinline__ void load(const int8_t* p) { v = __ldg(reinterpret_cast<const int4*>(p)); }
  __device__ __forceinline__ void load_stream(const int8_t* p) { v = __ldcs(reinterpret_cast<const int4*>(p)); }
  __device__ __forceinline__ int dot(const Vec& o, int c) const {
    c = __dp4a(v.x, o.v.x, c);
    c = __dp4a(v.y, o.v.y, c);
    c = __dp4a(v.z, o.v.z, c);
    return __dp4a(v.w, o.v.w, c);
  }
};

template <>
struct Vec<4> {
  int v;
  __device__ __forceinline__ void load(const int8_t* p) { v = __ldg(reinterpret_cast<const int*>(p)); }
  __device__ __forceinline__ void load_stream(const int8_t* p) { v = __ldcs(reinterpret_cast<const int*>(p)); }
  __device__ __forceinline__ int dot(const Vec& o, int c) const { return __dp4a(v, o.v, c); }
};

template <>
struct Vec<1> {
  int v;
  __device__ __forceinline__ void load(const int8_t* p) { v = __ldg(p); }
  __device__ __forceinline__ void load_stream(const int8_t* p) { v = __ldcs(p); }
  __device__ __forceinline__ int dot(const Vec& o, int c) const { return c + v * o.v; }
};

__device__ __forceinline__ float load_f(const void* p, int dtype, int64_t i) {
  if (dtype == 1) return __half2float(static_cast<const __half*>(p)[i]);
  if (dtype == 2) return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
  return static_cast<const float*>(p)[i];
}

__device__ __forceinline__ void store_f(void* p, int dtype, int64_t i, float v) {
  if (dtype == 1)
    static_cast<__half*>(p)[i] = __float2half_rn(v);
  else if (dtype == 2)
    static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16_rn(v);
  else
    static_cast<float*>(p)[i] = v;
}

// Activation codes as in the Triton epilogue: 1 relu, 2 gelu (erf), 3 gelu (tanh), 4 silu.
__device__ __forceinline__ float activate(float v, int act) {
  switch (act) {
    case 1:
      return fmaxf(v, 0.f);
    case 2:
      return 0.5f * v * (1.f + erff(v * 0.7071067811865476f));
    case 3: {
      const float u = 0.7978845608028654f * (v + 0.044715f * v * v * v);
      return v / (1.f + expf(-2.f * u));
    }
    case 4:
      return v / (1.f + expf(-v));
    default:
      return v;
  }
}

struct SmallArgs {
  const int8_t* qa;  // [m, ldq] codes q - 128
  int64_t ldq;
  const float* sa;
  const int32_t* zp;
  const int32_t* bad;
  int m;
  int64_t k;
  const int8_t* w;
  int64_t ldw;
  int64_t n;
  const float* wscale;
  const int32_t* colsum;
  const float* bias;
  const void* res;
  int r_dtype;
  int64_t ldr;
  void* y;
  int y_dtype;
  int64_t ldy;
  int act;
};

template <int MT, int VEC>
__global__ void __launch_bounds__(kWarps * 32) w8a8_small_kernel(const SmallArgs a) {
  const int lane = threadIdx.x & 31;
  const int64_t col0 = (static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5)) * kCols;
  if (col0 >= a.n) return;
  const int row0 = blockIdx.y * MT;
  const int rows = min(MT, a.m - row0);
  const int8_t* wrow[kCols];
#pragma unroll
  for (int c = 0; c < kCols; ++c) wrow[c] = a.w + min(col0 + c, a.n - 1) * a.ldw;  // past n: computed, not stored
  const int8_t* qrow = a.qa + static_cast<int64_t>(row0) * a.ldq;
  int acc[kCols][MT];
#pragma unroll
  for (int c = 0; c < kCols; ++c)
#pragma unroll
    for (int r = 0; r < MT; ++r) acc[c][r] = 0;

  for (int64_t kk = static_cast<int64_t>(lane) * VEC; kk < a.k; kk += 32 * VEC) {
    Vec<VEC> wv[kCols];
#pragma unroll
    for (int c = 0; c < kCols; ++c) wv[c].load_stream(wrow[c] + kk);
#pragma unroll
    for (int r = 0; r < MT; ++r) {
      if (r < rows) {
        Vec<VEC> av;
        av.load(qrow + r * a.ldq + kk);
#pragma unroll
        for (int c = 0; c < kCols; ++c) acc[c][r] = wv[c].dot(av, acc[c][r]);
      }
    }
  }
  // every lane ends with every (column, row) total
#pragma unroll
  for (int c = 0; c < kCols; ++c)
#pragma unroll
    for (int r = 0; r < MT; ++r)
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) acc[c][r] += __shfl_xor_sync(0xffffffffu, acc[c][r], off);

  // epilogue: lane p takes pairs p, p + 32, ... (column p / MT, row p % MT)
  for (int p = lane; p < kCols * MT; p += 32) {
    const int c = p / MT, r = p % MT;
    const int64_t col = col0 + c;
    if (r >= rows || col >= a.n) continue;
    int tot = 0;
#pragma unroll
    for (int cc = 0; cc < kCols; ++cc)
#pragma unroll
      for (int rr = 0; rr < MT; ++rr)
        if (cc * MT + rr == p) tot = acc[cc][rr];  // static register indices (no local memory)
    const int64_t row = row0 + r;
    tot += (128 - a.zp[row]) * a.colsum[col];
    float v = __fmul_rn(static_cast<float>(tot), __fmul_rn(a.sa[row], a.wscale[col]));
    if (a.bias) v = __fadd_rn(v, a.bias[col]);
    v = activate(v, a.act);
    if (a.res) v = __fadd_rn(v, load_f(a.res, a.r_dtype, row * a.ldr + col));
    if (a.bad[row]) v = __int_as_float(0x7fc00000);
    store_f(a.y, a.y_dtype, row * a.ldy + col, v);
  }
}

template <int MT>
cudaError_t launch_vec(const SmallArgs& a, int vec, dim3 grid, cudaStream_t st) {
  auto* kernel = vec == 16 ? &w8a8_small_kernel<MT, 16> : vec == 4 ? &w8a8_small_kernel<MT, 4> : &w8a8_small_kernel<MT, 1>;
  PFC_LAUNCH(kernel, grid, dim3(kWarps * 32), st, a);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_quant(const void* x, int64_t m, int64_t k, int64_t kq, int64_t ldx, uint8_t* q, float* sa,
                         int32_t* zp, int32_t* bad, int symmetric, cudaStream_t st) {
  auto* kernel = &detail::quantize_rows_kernel<T, true>;
  PFC_LAUNCH(kernel, dim3(static_cast<unsigned int>(m)), dim3(kQuantThreads), st, static_cast<const T*>(x), k, kq, ldx,
             q, kq, sa, zp, symmetric, static_cast<int*>(nullptr), bad);
  return cudaGetLastError();
}

}  // namespace

int64_t w8a8_small_workspace(int64_t m, int64_t k) {
  if (m <= 0) return 0;
  const int64_t kq = (k + 15) / 16 * 16;
  return m * kq + 3 * ((4 * m + 15) / 16 * 16);
}

int linear_w8a8_small(const void* x, int x_dtype, int64_t m, int64_t k, int64_t ldx, const int8_t* w, int64_t n,
                      int64_t ldw, const float* wscale, const int32_t* colsum, const float* bias,
                      const void* residual, int r_dtype, int64_t ldr, void* y, int y_dtype, int64_t ldy, int act,
                      int symmetric, void* workspace, int64_t workspace_bytes, void* stream) {
  if (m <= 0 || n <= 0) return 0;
  if (k < 0 || x_dtype < 0 || x_dtype > 2 || y_dtype < 0 || y_dtype > 2 || r_dtype < 0 || r_dtype > 2 || act < 0 ||
      act > 4 || m > (int64_t{1} << 30) || workspace_bytes < w8a8_small_workspace(m, k))
    return static_cast<int>(cudaErrorInvalidValue);
  const int mt = m <= 1 ? 1 : m <= 2 ? 2 : m <= 4 ? 4 : m <= 8 ? 8 : kMaxRows;
  const int64_t cols_per_block = int64_t{kWarps} * kCols;
  const int64_t gx = (n + cols_per_block - 1) / cols_per_block;
  const int64_t gy = (m + mt - 1) / mt;
  if (gx > 0x7fffffff || gy > 65535) return static_cast<int>(cudaErrorInvalidValue);
  const dim3 grid(static_cast<unsigned int>(gx), static_cast<unsigned int>(gy));
  auto st = static_cast<cudaStream_t>(stream);
  const int64_t kq = (k + 15) / 16 * 16;
  auto* base = static_cast<uint8_t*>(workspace);
  auto* q = base;
  const int64_t vec_bytes = (4 * m + 15) / 16 * 16;
  auto* sa = reinterpret_cast<float*>(base + m * kq);
  auto* zp = reinterpret_cast<int32_t*>(base + m * kq + vec_bytes);
  auto* bad = reinterpret_cast<int32_t*>(base + m * kq + 2 * vec_bytes);
  cudaError_t err;
  if (x_dtype == 1)
    err = launch_quant<__half>(x, m, k, kq, ldx, q, sa, zp, bad, symmetric, st);
  else if (x_dtype == 2)
    err = launch_quant<__nv_bfloat16>(x, m, k, kq, ldx, q, sa, zp, bad, symmetric, st);
  else
    err = launch_quant<float>(x, m, k, kq, ldx, q, sa, zp, bad, symmetric, st);
  if (err != cudaSuccess) return static_cast<int>(err);

  SmallArgs a{reinterpret_cast<const int8_t*>(q), kq, sa, zp, bad, static_cast<int>(m), k, w, ldw, n, wscale,
              colsum, bias, residual, r_dtype, ldr, y, y_dtype, ldy, act};
  const auto waddr = reinterpret_cast<uintptr_t>(w);
  const int vec = (k % 16 == 0 && ldw % 16 == 0 && waddr % 16 == 0 && reinterpret_cast<uintptr_t>(q) % 16 == 0)
                      ? 16
                      : (k % 4 == 0 && ldw % 4 == 0 && waddr % 4 == 0) ? 4 : 1;
  switch (mt) {
    case 1:
      return static_cast<int>(launch_vec<1>(a, vec, grid, st));
    case 2:
      return static_cast<int>(launch_vec<2>(a, vec, grid, st));
    case 4:
      return static_cast<int>(launch_vec<4>(a, vec, grid, st));
    case 8:
      return static_cast<int>(launch_vec<8>(a, vec, grid, st));
    default:
      return static_cast<int>(launch_vec<kMaxRows>(a, vec, grid, st));
  }
}

}  // namespace cuda
}  // namespace pyperfcore
