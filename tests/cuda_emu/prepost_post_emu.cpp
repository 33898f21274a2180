// kernels/cuda/prepost_post.cu (batched NMS, embedding normalization / compression) built by the
// host compiler against the CPU emulation, with C entry points for ctypes.
#define PYPERFCORE_CUDA_EMULATE 1
#include "prepost_post.cu"

extern "C" {
int emu_prepost_nms(const float* boxes, const float* scores, const int64_t* classes, const int64_t* class_end, int64_t n,
                    float iou_threshold, uint64_t* mask, uint64_t* removed, int64_t* keep, int32_t* count) {
  return pyperfcore::cuda::prepost_nms(boxes, scores, classes, class_end, n, iou_threshold, mask, removed, keep, count,
                                       nullptr);
}

int emu_prepost_embed(const float* x, int64_t rows, int64_t dim, int64_t row_stride, float eps, int normalize, float* out,
                      int8_t* q, float* scales, int32_t* bad) {
  return pyperfcore::cuda::prepost_embed(x, rows, dim, row_stride, eps, normalize, out, q, scales, bad, nullptr);
}
}
