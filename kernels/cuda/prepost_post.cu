// CUDA kernels of the prepost post-processing ops without a float tolerance: batched NMS (IoU
// bitmask then a one-warp sequential pass) and embedding L2-normalization / INT8 compression
// (the CPU backend's float32 operation order, so results agree bit for bit). Explicit _rn
// intrinsics keep nvcc from contracting multiply-adds.
#include <cuda_runtime.h>

#include <cstdint>

#include "prepost_cuda.hpp"

namespace pyperfcore {
namespace cuda {
namespace {

constexpr int kNmsBlock = 64;

// grid (col_blocks, col_blocks): block (cb, rb) fills word cb of the rows of block rb. Only
// words the sequential pass reads are computed: cb >= rb, and only where the two blocks can
// hold boxes of one class (boxes are sorted by class).
__global__ void __launch_bounds__(kNmsBlock) nms_mask_kernel(const float* __restrict__ boxes,
                                                             const int64_t* __restrict__ cls, int64_t n,
                                                             int64_t col_blocks, float thr,
                                                             unsigned long long* __restrict__ mask) {
  const int64_t rb = blockIdx.y, cb = blockIdx.x;
  if (cb < rb) return;
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
    for (int64_t w = b + 1 + lane; w < col_blocks; w += 32) {
      unsigned long long acc = removed[w];
      unsigned long long kk = kept;
      while (kk) {
        const int r = __ffsll(static_cast<long long>(kk)) - 1;
        kk &= kk - 1ULL;
        if (w <= s_wend[r]) acc |= mask[(base + r) * col_blocks + w];
      }
      removed[w] = acc;
    }
  }
  if (lane == 0) *count = static_cast<int32_t>(nk);
}

constexpr int kEmbedThreads = 256;

// One warp per row. The sum of squares follows the CPU backend: 16 accumulators over the full
// 16-element chunks (lanes 0..15), the tail summed in order (lane 0), then the accumulators
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
  if (lane == 0) bad[r] = nonfinite;
  if (nonfinite) return;
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

}  // namespace

int prepost_nms(const float* boxes, const int64_t* classes, const int64_t* class_end, int64_t n, float iou_threshold,
                uint64_t* mask, uint64_t* removed, int64_t* keep, int32_t* count, void* stream_ptr) {
  cudaStream_t s = static_cast<cudaStream_t>(stream_ptr);
  if (n <= 0) return cudaMemsetAsync(count, 0, sizeof(int32_t), s);
  const int64_t cb = (n + kNmsBlock - 1) / kNmsBlock;
  if (cb > 65535) return cudaErrorInvalidConfiguration;
  cudaError_t e = cudaMemsetAsync(removed, 0, static_cast<size_t>(cb) * sizeof(uint64_t), s);
  if (e != cudaSuccess) return e;
  auto* m = reinterpret_cast<unsigned long long*>(mask);
  nms_mask_kernel<<<dim3(static_cast<unsigned>(cb), static_cast<unsigned>(cb)), kNmsBlock, 0, s>>>(boxes, classes, n, cb,
                                                                                                 iou_threshold, m);
  e = cudaGetLastError();
  if (e != cudaSuccess) return e;
  nms_reduce_kernel<<<1, 32, 0, s>>>(m, class_end, n, cb, reinterpret_cast<unsigned long long*>(removed), keep, count);
  return cudaGetLastError();
}

int prepost_embed(const float* x, int64_t rows, int64_t dim, int64_t row_stride, float eps, int normalize, float* out,
                  int8_t* q, float* scales, int32_t* bad, void* stream_ptr) {
  if (rows <= 0) return 0;
  cudaStream_t s = static_cast<cudaStream_t>(stream_ptr);
  const int64_t blocks = (rows + kEmbedThreads / 32 - 1) / (kEmbedThreads / 32);
  if (blocks > 2147483647LL) return cudaErrorInvalidConfiguration;
  embed_kernel<<<static_cast<unsigned>(blocks), kEmbedThreads, 0, s>>>(x, rows, dim, row_stride, eps, normalize, out, q,
                                                                        scales, bad);
  return cudaGetLastError();
}

}  // namespace cuda
}  // namespace pyperfcore
