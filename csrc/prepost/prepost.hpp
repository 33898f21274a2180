// Fused pre- and post-processing for inference: one pass over memory per op. ISA-free API over
// raw pointers; SIMD variants are chosen at run time by `target` (see ../common/cpu.hpp).
// Every function throws std::invalid_argument on bad arguments and never reads out of bounds.
#pragma once
#include <cstdint>
#include <vector>

#include "../common/cpu.hpp"

namespace pyperfcore {
namespace prepost {

// ------------------------------------------------------------------ images

enum class Layout : int { nchw = 0, nhwc = 1 };
// Output element types. u8 rounds half to even and clips to [0, 255]; i8 divides by
// `out_scale`, rounds half to even and clips to [-127, 127] (symmetric, as pyperfcore.quant).
enum class OutType : int { f32 = 0, f16 = 1, bf16 = 2, i8 = 3, u8 = 4 };

// One uint8 HWC image (pixels packed: channel stride 1, pixel stride `channels`), the size it is
// resized to (resize_h/resize_w; equal to height/width for no resize) and the top-left corner of
// the output window inside the resized image.
struct ImageRef {
  const uint8_t* data;
  int64_t height, width;
  int64_t row_stride;  // bytes between rows, >= width * channels
  int64_t resize_h, resize_w;
  int64_t top, left;
};

struct PreprocessParams {
  int64_t channels = 3;    // 1 or 3
  int64_t out_h = 0, out_w = 0;
  // true: PIL's bilinear (a triangle filter stretched by the downscale factor, weights normalized
  // at the borders); false: OpenCV INTER_LINEAR / torch bilinear(align_corners=False,
  // antialias=False): two taps at src = (dst + 0.5) * in / out - 0.5, clamped to the edges.
  bool antialias = true;
  bool swap_rb = false;    // input is BGR: output channel c reads input channel 2 - c
  float mean[3] = {0, 0, 0};
  float inv_std[3] = {1, 1, 1};  // 1 / std, in the input's units
  Layout layout = Layout::nchw;
  OutType dtype = OutType::f32;
  float out_scale = 1.f;   // i8 only
};

// Writes n images into `out` (C-contiguous [n, C, out_h, out_w] or [n, out_h, out_w, C] of
// `dtype`). Per output value: v = (resized_crop(x) - mean[c]) * inv_std[c], then the dtype's
// conversion. The window [top, top + out_h) x [left, left + out_w) must lie inside the resized
// image.
void preprocess_images(const ImageRef* images, int64_t n, const PreprocessParams& p, void* out, CpuTarget target);

// One axis of a separable resize: for each output index i, `count[i]` taps starting at source
// index `start[i]` with weights `weights[i * max_taps + j]` (summing to 1).
struct AxisTaps {
  int64_t max_taps = 0;
  std::vector<int32_t> start, count;
  std::vector<float> weights;
};
// Taps of output indices [first, first + n) when resizing `in_size` to `out_size`.
AxisTaps resize_taps(int64_t in_size, int64_t out_size, int64_t first, int64_t n, bool antialias);

// ------------------------------------------------------------------ classification

// Logit rows: `rows` rows of `cols` values, row r starting at element r * row_stride.
// dtype 0 float32, 1 float16 (IEEE bits), 2 int8 (dequantized by `scales`: one value when
// n_scales == 1, else one per column).
struct Logits {
  const void* data;
  int dtype;
  int64_t rows, cols, row_stride;
  const float* scales;
  int64_t n_scales;
};

// The k largest logits of each row in descending order (ties: lower index first), as softmax
// probabilities exp(x - logsumexp(row)) when `softmax`, else the (dequantized) logits.
// values [rows, k] float32, indices [rows, k] int64. Throws on NaN or +inf, or a row that is
// all -inf when `softmax`; k must be in [0, cols].
void topk(const Logits& x, int64_t k, bool softmax, float* values, int64_t* indices, CpuTarget target);
// out [rows, cols] float32: log_softmax (log_space) or softmax of each row.
void softmax_rows(const Logits& x, bool log_space, float* out, CpuTarget target);
// mask[r, c] = 1 if logit > logit_threshold else 0 (sigmoid(x) > t, decided in logit space).
void sigmoid_threshold(const Logits& x, double logit_threshold, uint8_t* mask, CpuTarget target);

// ------------------------------------------------------------------ embeddings

// out[r] = x[r] / max(||x[r]||_2, eps); x float32 [rows, dim] with row stride in elements.
void l2_normalize(const float* x, int64_t rows, int64_t dim, int64_t row_stride, float eps, float* out,
                  CpuTarget target);
// Optionally L2-normalizes each row, then quantizes it symmetrically to int8:
// scale[r] = amax / 127 (1 for an all-zero row), q = clip(rne(v / scale), -127, 127).
void compress_embeddings(const float* x, int64_t rows, int64_t dim, int64_t row_stride, bool normalize, float eps,
                         int8_t* q, float* scales, CpuTarget target);

// ------------------------------------------------------------------ detection

// torchvision.ops.batched_nms semantics: boxes (x1, y1, x2, y2) float32 [n, 4]; boxes of
// different `classes` never suppress each other; within a class, greedy in decreasing score
// order (ties: lower index first), a box is dropped when its IoU with a kept box is > iou_threshold.
// Returns the kept indices in decreasing score order (ties: lower index first).
std::vector<int64_t> batched_nms(const float* boxes, const float* scores, const int64_t* classes, int64_t n,
                                 float iou_threshold);

// ------------------------------------------------------------------ text

// Sequences in CSR form: sequence i is ids[offsets[i] .. offsets[i+1]). Writes out_ids [n, length]
// and mask [n, length] (1 on real tokens): each sequence truncated to `length` (keeping its start,
// or its end when `keep_end`) and padded with pad_id on the right (or the left when `pad_left`).
void pad_sequences(const int64_t* ids, const int64_t* offsets, int64_t n, int64_t length, int64_t pad_id,
                   bool keep_end, bool pad_left, int64_t* out_ids, uint8_t* mask);

// ------------------------------------------------------------------ tabular

// One output block of a tabular row. kind 0 numeric: reads float64 values[r] (NaN = missing ->
// fill), writes clip((v - mean) / std, lo, hi) into one column. kind 1 one-hot: reads int32
// codes[r] in [-1, n_out) (-1 = missing/unknown -> all zeros) and writes n_out columns.
// kind 2 ordinal: writes the code as a float (missing -> fill).
struct TabColumn {
  int kind;
  const double* values;
  const int32_t* codes;
  int64_t n_out;
  double mean, std, lo, hi, fill;
};
// out [rows, sum(n_out)] float32 (C-contiguous).
void tabular_encode(const TabColumn* cols, int64_t ncols, int64_t rows, float* out);

}  // namespace prepost
}  // namespace pyperfcore
