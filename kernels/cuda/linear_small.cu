// Linear layers for serving's small batches (M <= 16 rows per launch group), launched from C++:
//   W8A8:      y = act(sa * sw * (sum_k q * w - zp * colsum) + bias) + residual
//   FP16/BF16: y = act(sum_k round_w(x) * w + bias) + residual   (fp32 products and sums)
// INT8 weights per channel, or float16/bfloat16 weights, [n, k] with row stride ldw. At these
// sizes the weight read is the floor (16 MB for a 4096 x 4096 INT8 layer: ~6 us on an H100) and
// the host's launch cost is what a synchronized serving call pays on top, so each layer is two
// plain kernel launches from one C++ call, no Python launcher:
//   1. prepare: one block per row of x (float32/float16/bfloat16): per-token int8 codes q - 128
//      (quant_rows.cuh, bit-identical to the CPU and Triton codes), or x rounded to the weight's
//      type, into the workspace, with a per-row NaN/inf flag;
//   2. GEMV-like product: each warp owns kCols output columns and streams their weight rows once
//      (16-byte loads where rows allow, coalesced, not kept in L1); the prepared activations (a
//      few KB, L1/L2 resident) are re-read per column group. INT8: __dp4a, int32 sums; halves:
//      fp32 FMA of exactly widened values. Sums are reduced across the warp and the epilogue
//      (dequantize, bias, activation, residual) stores float32/float16/bfloat16.
// Rows of x holding NaN/inf (or values that round to inf in the weight's type) give NaN rows of
// y, without a host synchronization. tests/quant/test_linear_cuda.py checks the compiled kernels
// against the numpy oracle on a GPU; tests/quant/test_cuda_emulated.py checks this same source,
// built by the host compiler against a CPU emulation of the device (cuda_compat.hpp), anywhere.
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
constexpr int kPrepThreads = 256;

// B bytes of a row per lane and step: 16 (int4 loads), 4 (one word), 2 or 1 (narrow rows).
template <int B>
struct Raw;
template <>
struct Raw<16> {
  int4 v;
  __device__ __forceinline__ void load(const void* p) { v = __ldg(static_cast<const int4*>(p)); }
  __device__ __forceinline__ void load_stream(const void* p) { v = __ldcs(static_cast<const int4*>(p)); }
  __device__ __forceinline__ int word(int i) const { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }
};
template <>
struct Raw<4> {
  int v;
  __device__ __forceinline__ void load(const void* p) { v = __ldg(static_cast<const int*>(p)); }
  __device__ __forceinline__ void load_stream(const void* p) { v = __ldcs(static_cast<const int*>(p)); }
  __device__ __forceinline__ int word(int) const { return v; }
};
template <>
struct Raw<2> {
  int v;  // the 16 bits, zero-extended
  __device__ __forceinline__ void load(const void* p) { v = __ldg(static_cast<const unsigned short*>(p)); }
  __device__ __forceinline__ void load_stream(const void* p) { v = __ldcs(static_cast<const unsigned short*>(p)); }
  __device__ __forceinline__ int word(int) const { return v; }
};
template <>
struct Raw<1> {
  int v;  // the byte, sign-extended
  __device__ __forceinline__ void load(const void* p) { v = __ldg(static_cast<const signed char*>(p)); }
  __device__ __forceinline__ void load_stream(const void* p) { v = __ldcs(static_cast<const signed char*>(p)); }
  __device__ __forceinline__ int word(int) const { return v; }
};

// The two halves of a 32-bit word of float16 / bfloat16 values, widened exactly.
__device__ __forceinline__ float lo_f(int bits, __half) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>(bits & 0xffff)));
}
__device__ __forceinline__ float hi_f(int bits, __half) {
  return __half2float(__ushort_as_half(static_cast<unsigned short>((bits >> 16) & 0xffff)));
}
__device__ __forceinline__ float lo_f(int bits, __nv_bfloat16) { return __uint_as_float(static_cast<unsigned>(bits) << 16); }
__device__ __forceinline__ float hi_f(int bits, __nv_bfloat16) {
  return __uint_as_float(static_cast<unsigned>(bits) & 0xffff0000u);
}

// INT8 weights: codes q - 128 against int8 weights, int32 sums.
struct Int8Op {
  using Acc = int;
  static constexpr int kElem = 1;
  template <int B>
  __device__ static __forceinline__ int dot(const Raw<B>& w, const Raw<B>& a, int c) {
    if constexpr (B == 1) {
      return c + w.v * a.v;
    } else {
#pragma unroll
      for (int i = 0; i < B / 4; ++i) c = __dp4a(w.word(i), a.word(i), c);
      return c;
    }
  }
};

// float16 / bfloat16 weights and activations rounded to that type: fp32 products (exact) and sums.
template <typename W>
struct HalfOp {
  using Acc = float;
  static constexpr int kElem = 2;
  template <int B>
  __device__ static __forceinline__ float dot(const Raw<B>& w, const Raw<B>& a, float c) {
    if constexpr (B == 2) {
      return fmaf(lo_f(a.v, W{}), lo_f(w.v, W{}), c);
    } else {
#pragma unroll
      for (int i = 0; i < B / 4; ++i) {
        c = fmaf(lo_f(a.word(i), W{}), lo_f(w.word(i), W{}), c);
        c = fmaf(hi_f(a.word(i), W{}), hi_f(w.word(i), W{}), c);
      }
      return c;
    }
  }
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
  const void* xa;  // prepared activations [m, ldq] (int8 codes q - 128, or x in the weight's type)
  int64_t ldq;     // in elements
  const float* sa;    // W8A8: per-row scales
  const int32_t* zp;  // W8A8: per-row zero points
  const int32_t* bad;
  int m;
  int64_t k;
  const void* w;
  int64_t ldw;  // in elements
  int64_t n;
  const float* wscale;    // W8A8
  const int32_t* colsum;  // W8A8
  const float* bias;
  const void* res;
  int r_dtype;
  int64_t ldr;
  void* y;
  int y_dtype;
  int64_t ldy;
  int act;
};

template <class Op, int MT, int B>
__global__ void __launch_bounds__(kWarps * 32) linear_small_kernel(const SmallArgs a) {
  using Acc = typename Op::Acc;
  constexpr int E = Op::kElem;        // bytes per element
  constexpr int STEP = B / E;         // elements per lane and step
  const int lane = threadIdx.x & 31;
  const int64_t col0 = (static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5)) * kCols;
  if (col0 >= a.n) return;  // warp-uniform
  const int row0 = blockIdx.y * MT;
  const int rows = min(MT, a.m - row0);
  const char* wrow[kCols];
#pragma unroll
  for (int c = 0; c < kCols; ++c)  // columns past n: computed from the last row, not stored
    wrow[c] = static_cast<const char*>(a.w) + min(col0 + c, a.n - 1) * a.ldw * E;
  const char* xrow = static_cast<const char*>(a.xa) + static_cast<int64_t>(row0) * a.ldq * E;
  Acc acc[kCols][MT];
#pragma unroll
  for (int c = 0; c < kCols; ++c)
#pragma unroll
    for (int r = 0; r < MT; ++r) acc[c][r] = Acc(0);

  // The weight stream: U steps of the warp's K walk are loaded before any is used (U x kCols
  // loads in flight per lane; the sm_90 build of a one-step loop issued the next step's loads
  // only after this step's products, one memory round trip per 32 x STEP elements of K). Each
  // lane still sums its K positions in increasing order, so the results are unchanged.
  constexpr int U = MT >= 8 ? 2 : 4;
  auto step = [&](const Raw<B>(&wv)[kCols], int64_t kk) {
#pragma unroll
    for (int r = 0; r < MT; ++r) {
      // (row 0 always exists: written unconditionally so that the weight loads are used on
      // every path; behind a branch, ptxas sank them into it, one step at a time again)
      if (r == 0 || r < rows) {
        Raw<B> av;
        av.load(xrow + (r * a.ldq + kk) * E);
#pragma unroll
        for (int c = 0; c < kCols; ++c) acc[c][r] = Op::dot(wv[c], av, acc[c][r]);
      }
    }
  };
  int64_t kk = static_cast<int64_t>(lane) * STEP;
  for (; kk + (U - 1) * 32 * STEP < a.k; kk += U * 32 * STEP) {
    Raw<B> wv[U][kCols];
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int c = 0; c < kCols; ++c) wv[u][c].load_stream(wrow[c] + (kk + u * 32 * STEP) * E);
#pragma unroll
    for (int u = 0; u < U; ++u) step(wv[u], kk + u * 32 * STEP);
  }
  for (; kk < a.k; kk += 32 * STEP) {
    Raw<B> wv[kCols];
#pragma unroll
    for (int c = 0; c < kCols; ++c) wv[c].load_stream(wrow[c] + kk * E);
    step(wv, kk);
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
    Acc tot = Acc(0);
#pragma unroll
    for (int cc = 0; cc < kCols; ++cc)
#pragma unroll
      for (int rr = 0; rr < MT; ++rr)
        if (cc * MT + rr == p) tot = acc[cc][rr];  // static register indices (no local memory)
    const int64_t row = row0 + r;
    float v;
    if constexpr (E == 1) {
      const int t = tot + (128 - a.zp[row]) * a.colsum[col];  // exact: sum q * w - zp * colsum
      v = __fmul_rn(static_cast<float>(t), __fmul_rn(a.sa[row], a.wscale[col]));
    } else {
      v = tot;
    }
    if (a.bias) v = __fadd_rn(v, a.bias[col]);
    v = activate(v, a.act);
    if (a.res) v = __fadd_rn(v, load_f(a.res, a.r_dtype, row * a.ldr + col));
    if (a.bad[row]) v = __int_as_float(0x7fc00000);
    store_f(a.y, a.y_dtype, row * a.ldy + col, v);
  }
}

__device__ __forceinline__ __half to_w(float v, __half) { return __float2half_rn(v); }
__device__ __forceinline__ __nv_bfloat16 to_w(float v, __nv_bfloat16) { return __float2bfloat16_rn(v); }

// Rows of x rounded to the weight's type W (round to nearest even) into q [m, ldq]; columns
// k..kq-1 zero. A row is flagged when it holds NaN/inf or a value that rounds to inf in W.
template <typename T, typename W>
__global__ void round_rows_kernel(const T* __restrict__ x, int64_t k, int64_t kq, int64_t ldx, W* __restrict__ q,
                                  int32_t* __restrict__ row_bad) {
  const int64_t row = blockIdx.x;
  const T* xr = x + row * ldx;
  W* qr = q + row * kq;
  int b = 0;
  detail::for_row(xr, k, [&](int64_t j, float v) {
    const W h = to_w(v, W{});
    if (!(fabsf(detail::to_f32(h)) <= 3.402823466e38f)) b = 1;
    qr[j] = h;
  });
  for (int64_t j = k + threadIdx.x; j < kq; j += blockDim.x) qr[j] = to_w(0.f, W{});
  const int bad = __syncthreads_or(b);
  if (threadIdx.x == 0) row_bad[row] = bad;
}

template <class Op, int MT>
cudaError_t launch_product(const SmallArgs& a, int b, dim3 grid, cudaStream_t st) {
  auto* kernel = b == 16  ? &linear_small_kernel<Op, MT, 16>
                 : b == 4 ? &linear_small_kernel<Op, MT, 4>
                          : &linear_small_kernel<Op, MT, Op::kElem>;
  PFC_LAUNCH(kernel, grid, dim3(kWarps * 32), st, a);
  return cudaGetLastError();
}

template <class Op>
cudaError_t launch_rows(const SmallArgs& a, int b, dim3 grid, int mt, cudaStream_t st) {
  switch (mt) {
    case 1:
      return launch_product<Op, 1>(a, b, grid, st);
    case 2:
      return launch_product<Op, 2>(a, b, grid, st);
    case 4:
      return launch_product<Op, 4>(a, b, grid, st);
    case 8:
      return launch_product<Op, 8>(a, b, grid, st);
    default:
      return launch_product<Op, kMaxRows>(a, b, grid, st);
  }
}

int64_t pad16(int64_t bytes) { return (bytes + 15) / 16 * 16; }

// Shared checks and geometry; returns cudaSuccess or cudaErrorInvalidValue.
cudaError_t plan(int x_dtype, int64_t m, int64_t k, int64_t n, int r_dtype, int y_dtype, int act, dim3* grid, int* mt) {
  if (k < 0 || x_dtype < 0 || x_dtype > 2 || y_dtype < 0 || y_dtype > 2 || r_dtype < 0 || r_dtype > 2 || act < 0 ||
      act > 4 || m > (int64_t{1} << 30))
    return cudaErrorInvalidValue;
  *mt = m <= 1 ? 1 : m <= 2 ? 2 : m <= 4 ? 4 : m <= 8 ? 8 : kMaxRows;
  const int64_t cols_per_block = int64_t{kWarps} * kCols;
  const int64_t gx = (n + cols_per_block - 1) / cols_per_block;
  const int64_t gy = (m + *mt - 1) / *mt;
  if (gx > 0x7fffffff || gy > 65535) return cudaErrorInvalidValue;
  *grid = dim3(static_cast<unsigned int>(gx), static_cast<unsigned int>(gy));
  return cudaSuccess;
}

// The widest load every row allows: `elem`-byte elements, rows of k elements at stride ld.
int row_bytes(int64_t k, int64_t ld, const void* p, int elem) {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  const int64_t kb = k * elem, lb = ld * elem;
  if (kb % 16 == 0 && lb % 16 == 0 && addr % 16 == 0) return 16;
  if (kb % 4 == 0 && lb % 4 == 0 && addr % 4 == 0) return 4;
  return elem;
}

template <typename T>
cudaError_t launch_quant(const void* x, int64_t m, int64_t k, int64_t kq, int64_t ldx, uint8_t* q, float* sa,
                         int32_t* zp, int32_t* bad, int symmetric, cudaStream_t st) {
  auto* kernel = &detail::quantize_rows_kernel<T, true>;
  PFC_LAUNCH(kernel, dim3(static_cast<unsigned int>(m)), dim3(kPrepThreads), st, static_cast<const T*>(x), k, kq, ldx,
             q, kq, sa, zp, symmetric, static_cast<int*>(nullptr), bad);
  return cudaGetLastError();
}

template <typename T, typename W>
cudaError_t launch_round(const void* x, int64_t m, int64_t k, int64_t kq, int64_t ldx, W* q, int32_t* bad,
                         cudaStream_t st) {
  auto* kernel = &round_rows_kernel<T, W>;
  PFC_LAUNCH(kernel, dim3(static_cast<unsigned int>(m)), dim3(kPrepThreads), st, static_cast<const T*>(x), k, kq, ldx,
             q, bad);
  return cudaGetLastError();
}

template <typename W>
cudaError_t prepare_half(const void* x, int x_dtype, int64_t m, int64_t k, int64_t kq, int64_t ldx, W* q, int32_t* bad,
                         cudaStream_t st) {
  if (x_dtype == 1) return launch_round<__half, W>(x, m, k, kq, ldx, q, bad, st);
  if (x_dtype == 2) return launch_round<__nv_bfloat16, W>(x, m, k, kq, ldx, q, bad, st);
  return launch_round<float, W>(x, m, k, kq, ldx, q, bad, st);
}

}  // namespace

int64_t w8a8_small_workspace(int64_t m, int64_t k) {
  if (m <= 0) return 0;
  return m * pad16(k) + 3 * pad16(4 * m);
}

int64_t half_small_workspace(int64_t m, int64_t k) {
  if (m <= 0) return 0;
  return m * pad16(2 * k) + pad16(4 * m);
}

int linear_w8a8_small(const void* x, int x_dtype, int64_t m, int64_t k, int64_t ldx, const int8_t* w, int64_t n,
                      int64_t ldw, const float* wscale, const int32_t* colsum, const float* bias,
                      const void* residual, int r_dtype, int64_t ldr, void* y, int y_dtype, int64_t ldy, int act,
                      int symmetric, void* workspace, int64_t workspace_bytes, void* stream) {
  if (m <= 0 || n <= 0) return 0;
  dim3 grid;
  int mt = 0;
  cudaError_t err = plan(x_dtype, m, k, n, r_dtype, y_dtype, act, &grid, &mt);
  if (err != cudaSuccess || workspace_bytes < w8a8_small_workspace(m, k)) return static_cast<int>(cudaErrorInvalidValue);
  auto st = static_cast<cudaStream_t>(stream);
  const int64_t kq = pad16(k);
  auto* q = static_cast<uint8_t*>(workspace);
  auto* sa = reinterpret_cast<float*>(q + m * kq);
  auto* zp = reinterpret_cast<int32_t*>(q + m * kq + pad16(4 * m));
  auto* bad = reinterpret_cast<int32_t*>(q + m * kq + 2 * pad16(4 * m));
  if (x_dtype == 1)
    err = launch_quant<__half>(x, m, k, kq, ldx, q, sa, zp, bad, symmetric, st);
  else if (x_dtype == 2)
    err = launch_quant<__nv_bfloat16>(x, m, k, kq, ldx, q, sa, zp, bad, symmetric, st);
  else
    err = launch_quant<float>(x, m, k, kq, ldx, q, sa, zp, bad, symmetric, st);
  if (err != cudaSuccess) return static_cast<int>(err);
  const SmallArgs a{q, kq, sa, zp, bad, static_cast<int>(m), k, w, ldw, n, wscale, colsum, bias, residual, r_dtype, ldr,
                    y, y_dtype, ldy, act};
  const int b = reinterpret_cast<uintptr_t>(q) % 16 == 0 ? row_bytes(k, ldw, w, 1) : 1;
  return static_cast<int>(launch_rows<Int8Op>(a, b, grid, mt, st));
}

int linear_half_small(const void* x, int x_dtype, int64_t m, int64_t k, int64_t ldx, const void* w, int w_dtype,
                      int64_t n, int64_t ldw, const float* bias, const void* residual, int r_dtype, int64_t ldr, void* y,
                      int y_dtype, int64_t ldy, int act, void* workspace, int64_t workspace_bytes, void* stream) {
  if (m <= 0 || n <= 0) return 0;
  dim3 grid;
  int mt = 0;
  cudaError_t err = plan(x_dtype, m, k, n, r_dtype, y_dtype, act, &grid, &mt);
  if (err != cudaSuccess || (w_dtype != 1 && w_dtype != 2) || workspace_bytes < half_small_workspace(m, k))
    return static_cast<int>(cudaErrorInvalidValue);
  auto st = static_cast<cudaStream_t>(stream);
  const int64_t kq = pad16(2 * k) / 2;  // elements per prepared row (16-byte rows)
  auto* q = static_cast<uint8_t*>(workspace);
  auto* bad = reinterpret_cast<int32_t*>(q + m * kq * 2);
  if (w_dtype == 1)
    err = prepare_half<__half>(x, x_dtype, m, k, kq, ldx, reinterpret_cast<__half*>(q), bad, st);
  else
    err = prepare_half<__nv_bfloat16>(x, x_dtype, m, k, kq, ldx, reinterpret_cast<__nv_bfloat16*>(q), bad, st);
  if (err != cudaSuccess) return static_cast<int>(err);
  const SmallArgs a{q, kq, nullptr, nullptr, bad, static_cast<int>(m), k, w, ldw, n, nullptr, nullptr, bias, residual,
                    r_dtype, ldr, y, y_dtype, ldy, act};
  const int b = reinterpret_cast<uintptr_t>(q) % 16 == 0 ? row_bytes(k, ldw, w, 2) : 2;
  if (w_dtype == 1) return static_cast<int>(launch_rows<HalfOp<__half>>(a, b, grid, mt, st));
  return static_cast<int>(launch_rows<HalfOp<__nv_bfloat16>>(a, b, grid, mt, st));
}

}  // namespace cuda
}  // namespace pyperfcore
