// kernels/cuda/prepost.cu (image preprocessing, top-k) built by the host compiler against the CPU
// emulation, with C entry points for ctypes.
#define PYPERFCORE_CUDA_EMULATE 1
#include "prepost.cu"

extern "C" {
int emu_prepost_preprocess(const pyperfcore::cuda::PrepostImageArgs* a) {
  return pyperfcore::cuda::prepost_preprocess(*a, nullptr);
}

int emu_prepost_topk(const void* x, int dtype, int64_t rows, int64_t cols, int64_t row_stride, const float* scales,
                     int64_t n_scales, int64_t k, int softmax, float* values, int64_t* indices, int32_t* bad) {
  return pyperfcore::cuda::prepost_topk(x, dtype, rows, cols, row_stride, scales, n_scales, k, softmax, values, indices,
                                        bad, nullptr);
}

int64_t emu_prepost_image_args_size() { return sizeof(pyperfcore::cuda::PrepostImageArgs); }
}
