// Host launchers of the prepost CUDA kernels (no CUDA headers needed by includers). Each returns
// a cudaError_t as int (0 = success) and runs on `stream` (a cudaStream_t) without synchronizing.
#pragma once
#include <cstdint>

namespace pyperfcore {
namespace cuda {

// Output element kinds of prepost_preprocess: values round to nearest even; int8 is
// clip(v / out_scale, -127, 127), uint8 clip(v, 0, 255).
enum PrepostOut : int { kOutF32 = 0, kOutF16 = 1, kOutBF16 = 2, kOutI8 = 3, kOutU8 = 4 };

struct PrepostImageArgs {
  const uint8_t* x;                      // [n, h, w, c] uint8, byte strides below
  int64_t n, h, w, c;
  int64_t xs_n, xs_h, xs_w, xs_c;
  void* out;                             // element strides below, (n, c, y, x) order
  int out_kind;
  int64_t oh, ow;
  int64_t os_n, os_c, os_h, os_w;
  float mean[3], inv_std[3];             // per output channel
  int swap_rb;                           // output channel c reads input channel 2 - c
  float out_scale;                       // int8 only
  int64_t top, left;                     // window origin when there is no resize
  // Resize taps of the crop window (device pointers; null for no resize): start index per
  // output row/column and ty / tx weights each, zero past the tap count.
  const int32_t* ys;
  const float* yw;
  int64_t ty;
  const int32_t* xs;
  const float* xw;
  int64_t tx;
};
int prepost_preprocess(const PrepostImageArgs& a, void* stream);

// Top-k of each logits row (value descending, ties by lower index), optionally as full-softmax
// probabilities. x: dtype 0 float32, 1 float16, 2 int8 (times `scales`: n_scales 1 or cols,
// device pointer); rows of `cols` contiguous values, `row_stride` elements apart.
// bad[r] (device int32 [rows], or null) gets 0, or 1 NaN, 2 +inf, 3 a row of -inf with softmax;
// such a row is poisoned: values NaN, indices -1.
int prepost_topk(const void* x, int dtype, int64_t rows, int64_t cols, int64_t row_stride, const float* scales,
                 int64_t n_scales, int64_t k, int softmax, float* values, int64_t* indices, int32_t* bad, void* stream);

// Batched NMS over boxes already sorted by (class, score descending, index): boxes float32
// [n, 4] (x1, y1, x2, y2), classes int64 [n], class_end int64 [n] (one past the last box of each
// box's class in that order); scores float32 [n] in any order (only checked for NaN). Writes into
// `mask` (uint64 [n * ceil(n / 64)], scratch), `removed` (uint64 [ceil(n / 64) + 1], scratch)
// the IoU bitmask and the suppression state, then `keep` (int64 [n]) the kept positions in that
// order, count[0] (int32 [2]) their number and count[1] 1 if a box coordinate is NaN / infinite
// or a score is NaN (0 otherwise). A box is suppressed when float32 IoU (torchvision's
// expression) with a kept box of its class is > `iou_threshold`.
int prepost_nms(const float* boxes, const float* scores, const int64_t* classes, const int64_t* class_end, int64_t n,
                float iou_threshold, uint64_t* mask, uint64_t* removed, int64_t* keep, int32_t* count, void* stream);

// Per row of x (float32, rows of `dim` contiguous values `row_stride` apart): the sum of squares
// in the CPU backend's order, d = max(sqrt(ss), eps); `out` (float32 [rows, dim], or null) gets
// x / d. With `q` (int8 [rows, dim]) and `scales` (float32 [rows]) non-null: v = normalize ? x / d
// : x, scale = max|v| / 127 (1 for a zero row), q = clip(rne(v / scale), -127, 127). bad[r]
// (int32 [rows], or null) gets 1 for a row with NaN / infinity; such a row is poisoned: out NaN,
// scale NaN, q 0. dim 0 writes nothing.
int prepost_embed(const float* x, int64_t rows, int64_t dim, int64_t row_stride, float eps, int normalize, float* out,
                  int8_t* q, float* scales, int32_t* bad, void* stream);

}  // namespace cuda
}  // namespace pyperfcore
