// CUDA kernels of the prepost post-processing ops without a float tolerance: batched NMS (IoU
// bitmask then a one-warp sequential pass) and embedding L2-normalization / INT8 compression
// (the CPU backend's float32 operation order, so results agree bit for bit). Explicit _rn
// intrinsics keep nvcc from contracting multiply-adds.
#include <cstdint>

#include "cuda_compat.hpp"
#include "prepost_cuda.hpp"

namespace pyperfcore {
namespace cuda {
namespace {

constexpr int kNmsBlock = 64;

// grid (col_blocks, col_blocks): block (cb, rb) fills word cb of the rows of block rb. Only
// words the sequential pass reads are computed: cb >= rb, and only where the two blocks can
// hold boxes of one class (boxes are sorted by class).
// The diagonal blocks also check every box (sorted position i) and every score (original
// position i) once, OR-ing a flag into *flag, so the NaN / infinity test costs no extra launch.
__global__ void __launch_bounds__(kNmsBlock) nms_mask_kernel(const float* __restrict__ boxes,
                                                             const float* __restrict__ scores,
                                                             const int64_t* __restrict__ cls, int64_t n,
                                                             int64_t col_blocks, float thr,
                                                             unsigned long long* __restrict__ mask,
                                                             unsigned long long* flag) {
  const int64_t rb = blockIdx.y, cb = blockIdx.x;
  if (cb < rb) return;
  if (cb == rb && rb * kNmsBlock + threadIdx.x < n) {
    const int64_t i = rb * kNmsBlock + threadIdx.x;
    const float* b = boxes + i * 4;
    const float fmax = 3.40282347e38f;
    const bool ok = fabsf(b[0]) <= fmax && fabsf(b[1]) <= fmax && fabsf(b[2]) <= fmax && fabsf(b[3]) <= fmax &&
                    scores[i] == scores[i];
    if (!ok) atomicOr(flag, 1ULL);
  }
  const int64_t r0 = rb * kNmsBlock, c0 = cb * kNmsBlock;
  const int rsize = static_cast<int>(min(n - r0, static_cast<int64_t>(kNmsBlock)));
  const int csize = static_cast<int>(min(n - c0, static_cast<int64_t>(kNmsBlock)));
  if (cls[c0] > cls[r0 + rsize - 1]) return;  // every column box has a later class than every row box
  __shared__ float sx1[kNmsBlock], sy1[kNmsBlock], sx2[kNmsBlock], sy2[kNmsBlock], sa[kNmsBlock];
  __shared__ int64_t sc[kNmsBlock];
  const int t = threadIdx.x;
  if (t < csize) {
    const float* b = boxes + (c0 + t) * 4;
    sx1[t] = b[0];
    sy1[t] = b[1];
    sx2[t] = b[2];
    sy2[t] = b[3];
    sa[t] = __fmul_rn(__fsub_rn(b[2], b[0]), __fsub_rn(b[3], b[1]));
    sc[t] = cls[c0 + t];
  }
  __syncthreads();
  if (t >= rsize) return;
  const int64_t i = r0 + t;
  const float* b = boxes + i * 4;
  const float x1 = b[0], y1 = b[1], x2 = b[2], y2 = b[3];
  const float area = __fmul_rn(__fsub_rn(x2, x1), __fsub_rn(y2, y1));
  const int64_t ci = cls[i];
  unsigned long long bits = 0;
  for (int j = (rb == cb ? t + 1 : 0); j < csize; ++j) {
    if (sc[j] != ci) continue;
    const float w = fmaxf(0.f, __fsub_rn(fminf(x2, sx2[j]), fmaxf(x1, sx1[j])));
    const float h = fmaxf(0.f, __fsub_rn(fminf(y2, sy2[j]), fmaxf(y1, sy1[j])));
    const float inter = __fmul_rn(w, h);
    // kept (row, higher score) area + candidate area - inter, as torchvision and the CPU backend
    const float iou = __fdiv_rn(inter, __fsub_rn(__fadd_rn(area, sa[j]), inter));
    if (iou > thr) bits |= 1ULL << j;
  }
  mask[i * col_blocks + cb] = bits;
}

// One warp. Block b of 64 boxes: the diagonal words decide, in order, which of its boxes
// survive (uniform across lanes); then the lanes OR the kept rows' later words into `removed`,
// each up to the last word of that row's class.
__global__ void __launch_bounds__(32) nms_reduce_kernel(const unsigned long long* __restrict__ mask,
                                                        const int64_t* __restrict__ class_end, int64_t n,
                                                        int64_t col_blocks, unsigned long long* removed,
                                                        int64_t* __restrict__ keep, int32_t* __restrict__ count) {
  const int lane = threadIdx.x;
  __shared__ int64_t s_wend[kNmsBlock];
  int64_t nk = 0;
  for (int64_t b = 0; b < col_blocks; ++b) {
    const int64_t base = b * kNmsBlock;
    const int bs = static_cast<int>(min(n - base, static_cast<int64_t>(kNmsBlock)));
    __syncwarp();
    unsigned long long cur = removed[b];
    const unsigned long long d0 = lane < bs ? mask[(base + lane) * col_blocks + b] : 0ULL;
    const unsigned long long d1 = lane + 32 < bs ? mask[(base + lane + 32) * col_blocks + b] : 0ULL;
    if (lane < bs) s_wend[lane] = (class_end[base + lane] - 1) / kNmsBlock;
    if (lane + 32 < bs) s_wend[lane + 32] = (class_end[base + lane + 32] - 1) / kNmsBlock;
    unsigned long long kept = 0;
    for (int r = 0; r < bs; ++r) {
      const unsigned long long d = __shfl_sync(0xffffffffu, r < 32 ? d0 : d1, r & 31);
      if (!((cur >> r) & 1ULL)) {
        kept |= 1ULL << r;
        cur |= d;
      }
    }
    for (int r = lane; r < bs; r += 32)
      if ((kept >> r) & 1ULL) keep[nk + __popcll(kept & ((1ULL << r) - 1ULL))] = base + r;
    nk += __popcll(kept);
    __syncwarp();  // s_wend is written above and read below by other lanes
    // The last word any kept row of this block can suppress (its class's end): usually b or b + 1.
    int wmax = static_cast<int>(b);
    for (int r = lane; r < bs; r += 32)
      if ((kept >> r) & 1ULL) wmax = max(wmax, static_cast<int>(s_wend[r]));
    for (int off = 16; off > 0; off >>= 1) wmax = max(wmax, __shfl_xor_sync(0xffffffffu, wmax, off));
    // Lanes over words; per word, the kept rows' bits are fetched 16 loads at a time (independent
    // predicated loads in flight together, not one dependent load per kept row).
    for (int64_t w = b + 1 + lane; w <= wmax; w += 32) {
      unsigned long long acc = removed[w];
      for (int r0 = 0; r0 < bs; r0 += 16) {
        unsigned long long t[16];
#pragma unroll
        for (int u = 0; u < 16; ++u) {
          const int r = r0 + u;
          t[u] = (r < bs && ((kept >> r) & 1ULL) && w <= s_wend[r]) ? __ldg(mask + (base + r) * col_blocks + w) : 0ULL;
        }
#pragma unroll
        for (int u = 0; u < 16; ++u) acc |= t[u];
      }
      removed[w] = acc;
    }
  }
  if (lane == 0) {
    count[0] = static_cast<int32_t>(nk);
    count[1] = removed[col_blocks] != 0ULL ? 1 : 0;  // the mask kernel's NaN / infinity flag
  }
}

constexpr int kEmbedThreads = 256;

// Writes a poisoned row (the policy of the GPU ops: no synchronization by default): NaN values,
// NaN scale, zero codes. Run by all lanes of the row's warp.
__device__ __forceinline__ void embed_poison(int lane, int64_t r, int64_t dim, float* out, int8_t* q, float* scales) {
  const float qnan = __int_as_float(0x7fc00000);
  for (int64_t i = lane; i < dim; i += 32) {
    if (out != nullptr) out[r * dim + i] = qnan;
    if (q != nullptr) q[r * dim + i] = 0;
  }
  if (q != nullptr && lane == 0) scales[r] = qnan;
}

// One warp per row, any dim. The sum of squares follows the CPU backend: 16 accumulators over the
// full 16-element chunks (lanes 0..15), the tail summed in order (lane 0), then the accumulators
// added to it in order.
__global__ void __launch_bounds__(kEmbedThreads) embed_kernel(const float* __restrict__ x, int64_t rows, int64_t dim,
                                                              int64_t row_stride, float eps, int normalize,
                                                              float* __restrict__ out, int8_t* __restrict__ q,
                                                              float* __restrict__ scales, int32_t* __restrict__ bad) {
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * (kEmbedThreads / 32) + (threadIdx.x >> 5);
  if (r >= rows) return;  // whole warps
  const float* p = x + r * row_stride;
  const float fmax = 3.40282347e38f;
  const int64_t nfull = dim / 16 * 16;
  float acc = 0.f;
  int nonfinite = 0;
  if (lane < 16)
    for (int64_t i = lane; i < nfull; i += 16) {
      const float v = p[i];
      nonfinite |= !(fabsf(v) <= fmax);
      acc = __fadd_rn(acc, __fmul_rn(v, v));
    }
  float s = 0.f;
  if (lane == 0)
    for (int64_t i = nfull; i < dim; ++i) {
      const float v = p[i];
      nonfinite |= !(fabsf(v) <= fmax);
      s = __fadd_rn(s, __fmul_rn(v, v));
    }
  for (int j = 0; j < 16; ++j) s = __fadd_rn(s, __shfl_sync(0xffffffffu, acc, j));
  s = __shfl_sync(0xffffffffu, s, 0);
  nonfinite = __any_sync(0xffffffffu, nonfinite);
  if (bad != nullptr && lane == 0) bad[r] = nonfinite;
  if (nonfinite) {
    embed_poison(lane, r, dim, out, q, scales);
    return;
  }
  const float sq = __fsqrt_rn(s);
  const float d = sq < eps ? eps : sq;  // std::max(sqrt, eps)
  if (out != nullptr) {
    float* o = out + r * dim;
    for (int64_t i = lane; i < dim; i += 32) o[i] = __fdiv_rn(p[i], d);
  }
  if (q == nullptr) return;
  float amax = 0.f;
  for (int64_t i = lane; i < dim; i += 32) amax = fmaxf(amax, fabsf(normalize ? __fdiv_rn(p[i], d) : p[i]));
  for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
  const float sc = amax > 0.f ? __fdiv_rn(amax, 127.f) : 1.f;
  if (lane == 0) scales[r] = sc;
  int8_t* qo = q + r * dim;
  for (int64_t i = lane; i < dim; i += 32) {
    const float v = normalize ? __fdiv_rn(p[i], d) : p[i];
    const float t = fminf(fmaxf(__fdiv_rn(v, sc), -127.f), 127.f);
    qo[i] = static_cast<int8_t>(__float2int_rn(t));
  }
}

// One warp per row of dim <= 32 * K, the row held in registers (element lane + 32 t in v[t]):
// one round of independent coalesced loads, then everything from registers. Same float32
// operations in the same order as embed_kernel (and the CPU backend):
// - accumulator j (lane j < 16) adds chunk 2t's element from its own v[t] and chunk 2t + 1's from
//   lane j + 16's v[t], alternately, so each accumulator still runs over its chunks in order;
// - the tail (< 16 values from nfull, a multiple of 16) lies in one register slot, nfull / 32,
//   and is summed in order through shuffles; then the 16 accumulators are added in order.
template <int K>
__global__ void __launch_bounds__(kEmbedThreads) embed_reg_kernel(const float* __restrict__ x, int64_t rows, int dim,
                                                                  int64_t row_stride, float eps, int normalize,
                                                                  float* __restrict__ out, int8_t* __restrict__ q,
                                                                  float* __restrict__ scales, int32_t* __restrict__ bad) {
  const int lane = threadIdx.x & 31;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * (kEmbedThreads / 32) + (threadIdx.x >> 5);
  if (r >= rows) return;  // whole warps
  const float* p = x + r * row_stride;
  const float fmax = 3.40282347e38f;
  float v[K];
#pragma unroll
  for (int t = 0; t < K; ++t) {
    const int i = lane + 32 * t;
    v[t] = i < dim ? __ldg(p + i) : 0.f;  // zeros past the row: finite, add nothing
  }
  const int nfull = dim / 16 * 16;
  const int tt = nfull / 32;
  int nonfinite = 0;
  float acc = 0.f, tailsq = 0.f;
#pragma unroll
  for (int t = 0; t < K; ++t) {
    nonfinite |= !(fabsf(v[t]) <= fmax);
    const float sq = __fmul_rn(v[t], v[t]);
    const float hi = __shfl_down_sync(0xffffffffu, sq, 16);
    if (32 * t < nfull) acc = __fadd_rn(acc, sq);       // chunk 2t is full
    if (32 * t + 16 < nfull) acc = __fadd_rn(acc, hi);  // chunk 2t + 1 is full
    if (t == tt) tailsq = sq;
  }
  float s = 0.f;
  const int tb = nfull & 31;
  for (int j = 0; j < 16; ++j) {
    const float tv = __shfl_sync(0xffffffffu, tailsq, (tb + j) & 31);
    if (nfull + j < dim) s = __fadd_rn(s, tv);
  }
  for (int j = 0; j < 16; ++j) s = __fadd_rn(s, __shfl_sync(0xffffffffu, acc, j));
  nonfinite = __any_sync(0xffffffffu, nonfinite);
  if (bad != nullptr && lane == 0) bad[r] = nonfinite;
  if (nonfinite) {
    embed_poison(lane, r, dim, out, q, scales);
    return;
  }
  const float sqr = __fsqrt_rn(s);
  const float d = sqr < eps ? eps : sqr;
  if (out != nullptr) {
    float* o = out + r * dim;
#pragma unroll
    for (int t = 0; t < K; ++t)
      if (lane + 32 * t < dim) o[lane + 32 * t] = __fdiv_rn(v[t], d);
  }
  if (q == nullptr) return;
  float amax = 0.f;
#pragma unroll
  for (int t = 0; t < K; ++t) {
    if (normalize) v[t] = __fdiv_rn(v[t], d);
    amax = fmaxf(amax, fabsf(v[t]));
  }
  for (int off = 16; off > 0; off >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
  const float sc = amax > 0.f ? __fdiv_rn(amax, 127.f) : 1.f;
  if (lane == 0) scales[r] = sc;
  int8_t* qo = q + r * dim;
#pragma unroll
  for (int t = 0; t < K; ++t)
    if (lane + 32 * t < dim)
      qo[lane + 32 * t] = static_cast<int8_t>(__float2int_rn(fminf(fmaxf(__fdiv_rn(v[t], sc), -127.f), 127.f)));
}

}  // namespace

int prepost_nms(const float* boxes, const float* scores, const int64_t* classes, const int64_t* class_end, int64_t n,
                float iou_threshold, uint64_t* mask, uint64_t* removed, int64_t* keep, int32_t* count, void* stream_ptr) {
  cudaStream_t s = static_cast<cudaStream_t>(stream_ptr);
  if (n <= 0) return cudaMemsetAsync(count, 0, 2 * sizeof(int32_t), s);
  const int64_t cb = (n + kNmsBlock - 1) / kNmsBlock;
  if (cb > 65535) return cudaErrorInvalidConfiguration;
  cudaError_t e = cudaMemsetAsync(removed, 0, static_cast<size_t>(cb + 1) * sizeof(uint64_t), s);
  if (e != cudaSuccess) return e;
  auto* m = reinterpret_cast<unsigned long long*>(mask);
  auto* rm = reinterpret_cast<unsigned long long*>(removed);
  auto* mask_kernel = &nms_mask_kernel;
  PFC_LAUNCH(mask_kernel, dim3(static_cast<unsigned>(cb), static_cast<unsigned>(cb)), dim3(kNmsBlock), s, boxes, scores,
             classes, n, cb, iou_threshold, m, rm + cb);
  e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  auto* reduce_kernel = &nms_reduce_kernel;
  PFC_LAUNCH(reduce_kernel, dim3(1), dim3(32), s, static_cast<const unsigned long long*>(m), class_end, n, cb, rm, keep,
             count);
  return cudaGetLastError();
}

int prepost_embed(const float* x, int64_t rows, int64_t dim, int64_t row_stride, float eps, int normalize, float* out,
                  int8_t* q, float* scales, int32_t* bad, void* stream_ptr) {
  if (rows <= 0 || dim <= 0) return 0;  // nothing to read; the caller fills dim-0 scales
  cudaStream_t s = static_cast<cudaStream_t>(stream_ptr);
  const int64_t blocks = (rows + kEmbedThreads / 32 - 1) / (kEmbedThreads / 32);
  if (blocks > 2147483647LL) return cudaErrorInvalidConfiguration;
  const unsigned g = static_cast<unsigned>(blocks);
  const int d = static_cast<int>(dim < 2048 ? dim : 2048);
  if (dim > 1024) {
    auto* kernel = &embed_kernel;
    PFC_LAUNCH(kernel, dim3(g), dim3(kEmbedThreads), s, x, rows, dim, row_stride, eps, normalize, out, q, scales, bad);
  } else {
    auto* kernel = dim <= 128   ? &embed_reg_kernel<4>
                   : dim <= 256 ? &embed_reg_kernel<8>
                   : dim <= 512 ? &embed_reg_kernel<16>
                                : &embed_reg_kernel<32>;
    PFC_LAUNCH(kernel, dim3(g), dim3(kEmbedThreads), s, x, rows, d, row_stride, eps, normalize, out, q, scales, bad);
  }
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace pyperfcore
