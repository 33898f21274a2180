// Fused multi-head attention for inference, float32: one call for all batches and heads,
// scores, masked softmax and the weighted sum without materialising [B, H, T, T].
#pragma once
#include <cstdint>

#include "../common/cpu.hpp"

namespace pyperfcore {
namespace quant {

struct AttnStrides {
  int64_t b, h, t;  // element strides of q / k / v over batch, head and position; the head dim is contiguous
};

// out[b, t, h, :] = sum_j p[j] * v[b, h, j, :], p = softmax_j(scale * q[b, h, t, :] . k[b, h, j, :]
// + mask[b, j]) for t, j < T. mask: additive float32 per key [B, T] with row stride mask_sb (0 or
// -inf to drop padding), or null. out: [B, T, H, D] contiguous (the layout the projection after
// attention reads). Scores and the softmax are fp32 (exp through the shared polynomial, sum in
// fp32). A query whose keys are all masked gets 0, as torch's CPU scaled_dot_product_attention.
// Throws std::invalid_argument for negative sizes.
void attention_f32(const float* q, AttnStrides qs, const float* k, AttnStrides ks, const float* v, AttnStrides vs,
                   int64_t B, int64_t H, int64_t T, int64_t D, const float* mask, int64_t mask_sb, float scale,
                   float* out, CpuTarget target, int threads);

}  // namespace quant
}  // namespace pyperfcore
