// Quantized linear layers: W8A8 (INT8 weights, per-token INT8 activations, INT32 accumulation)
// and half-size weights (FP16/BF16) computed in fp32, each with a fused epilogue.
// ISA-free API over raw pointers; the SIMD variant is chosen at run time (see cpu.hpp).
#pragma once
#include <cstdint>
#include <vector>

#include "../common/cpu.hpp"

namespace pyperfcore {
namespace quant {

// Output columns per packed weight panel (four 16-lane vectors).
constexpr int64_t kPanel = 64;
// K beyond this could overflow the INT32 accumulator (255 * 127 * K < 2^31).
constexpr int64_t kMaxK = 65536;

enum class Activation : int { none = 0, relu = 1, gelu = 2, gelu_tanh = 3, silu = 4 };

// The fused epilogue, applied per output element before it is stored:
//   y = act(acc_dequantized + bias[n]) + residual[m, n]
// bias and residual may be null. `gelu` is the erf form (torch.nn.GELU()) through a rational
// minimax fit of erfc (no exp), `gelu_tanh` the tanh approximation (GELU(approximate="tanh")),
// which, like silu, uses a polynomial exp: |act error| <= 2e-6 |y| + 1e-7 max(1, |v|).
struct Epilogue {
  const float* bias = nullptr;
  Activation act = Activation::none;
  const float* residual = nullptr;
  int64_t ld_residual = 0;
};

// INT8 weights, symmetric per output channel, packed once into panels of 64 columns x 4
// consecutive k (the operand layout of VPDPBUSD): byte (p, g, c, b) at
// ((p * kp/4 + g) * 64 + c) * 4 + b holds w[p*64 + c, g*4 + b], zero in the padding.
struct PackedInt8 {
  int64_t n = 0, k = 0;    // logical [out_features, in_features]
  int64_t np = 0, kp = 0;  // padded to multiples of 64 and 4
  std::vector<int8_t> data;
  std::vector<float> scales;    // [n] dequantization scale per output channel
  std::vector<int32_t> colsum;  // [n] sum_k w[n, k]: the zero-point compensation
};

// w: int8 [n, k] row-major with row stride ldw (elements); scales: [n], finite and > 0.
// Throws std::invalid_argument for bad sizes/scales or k > kMaxK.
void pack_int8(const int8_t* w, int64_t ldw, const float* scales, int64_t n, int64_t k, PackedInt8* out);
// Rebuilds a PackedInt8 from its `data` (as written by pack_int8) and scales, for loading saved
// weights without re-quantizing. Validates sizes; recomputes colsum.
void unpack_check_int8(PackedInt8* p);

// Per-token (per-row) dynamic quantization of activations to uint8, x[m, k] with row stride ldx:
//   asymmetric: lo = min(0, min_k x), hi = max(0, max_k x); scale = (hi - lo) / 255 (1 if < FLT_MIN);
//               inv = 1 / scale; zp = clip(rne(-lo * inv), 0, 255);
//               q = clip(rne(x * inv) + zp, 0, 255)
//   symmetric:  scale = amax / 127 (1 if < FLT_MIN); inv = 1 / scale; zp = 128;
//               q = clip(rne(x * inv), -127, 127) + 128
// (all in float32). q has row stride ldq >= kp = round_up(k, 4); bytes k..kp-1 are set to zp.
// Throws std::invalid_argument if x holds NaN or +-inf.
void quantize_rows_u8(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* q, int64_t ldq, float* scales,
                      int32_t* zps, bool symmetric, CpuTarget target, int threads);

// Static (calibrated) per-tensor activation quantization, symmetric, one scale for every row:
//   inv = 1 / scale; q = clip(rne(x * inv), -127, 127) + 128; zero point 128
// (values beyond 127 * scale clip). scale finite and > 0. No min/max pass: x is read once;
// NaN or +-inf still throw std::invalid_argument. scales[m] / zps[m] are filled with scale / 128.
void quantize_rows_u8_static(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, uint8_t* q, int64_t ldq,
                             float* scales, int32_t* zps, CpuTarget target, int threads);

// c[m, n] = sum_k a[m, k] * w[n, k] in INT32 (a: uint8 rows of w.kp bytes, stride lda).
void gemm_u8s8(const uint8_t* a, int64_t m, int64_t lda, const PackedInt8& w, int32_t* c, int64_t ldc,
               CpuTarget target, int threads);

// y[m, n] = epilogue(sa[m] * sw[n] * (sum_k qa[m, k] * w[n, k] - zp[m] * colsum[n]))
// with x quantized per token as quantize_rows_u8 does. x: float32 [m, k] (row stride ldx),
// y: float32 [m, n] (row stride ldy). `threads` <= 0 means get_num_threads().
void linear_w8a8(const float* x, int64_t m, int64_t ldx, const PackedInt8& w, bool symmetric_act,
                 const Epilogue& ep, float* y, int64_t ldy, CpuTarget target, int threads);

// linear_w8a8 with activations quantized statically (quantize_rows_u8_static) by act_scale.
void linear_w8a8_static(const float* x, int64_t m, int64_t ldx, const PackedInt8& w, float act_scale,
                        const Epilogue& ep, float* y, int64_t ldy, CpuTarget target, int threads);

// Two W8A8 layers in one call, the Linear -> activation -> Linear chain of an MLP:
//   h = linear_w8a8(x, w1, sym1, ep1);  y = linear_w8a8(h, w2, sym2, ep2)
// with h [m, w1.n] kept in a per-thread buffer reused across calls (never returned, never
// allocated per call) and quantized per token straight from it. The result has the same bits as
// the two calls (same tiles, same epilogue code, same quantization). Needs w2.k == w1.n.
void mlp_w8a8(const float* x, int64_t m, int64_t ldx, const PackedInt8& w1, bool sym1, const Epilogue& ep1,
              const PackedInt8& w2, bool sym2, const Epilogue& ep2, float* y, int64_t ldy, CpuTarget target,
              int threads);

// AMX INT8 tiles (TDPBUSD) run the INT8 GEMM of the avx512_vnni target when the CPU has AMX-INT8,
// the OS grants the tile state, and the batch has at least kAmxMinRows rows; results are the same
// exact INT32 sums. set_amx_enabled(false) forces the VPDPBUSD kernel (tests compare both).
constexpr int64_t kAmxMinRows = 8;
bool amx_available();

bool amx_enabled();
void set_amx_enabled(bool on);
// The AMX GEMM computes 32-row blocks with 2x2 tile blocking (four tile loads per four TDPBUSD)
// unless set_amx_blocking(false) selects the 16-row blocks (five loads per four); same sums.
bool amx_blocking();
void set_amx_blocking(bool on);

enum class HalfType : int { f16 = 0, bf16 = 1 };

// Half-size weights in panels of 64 columns: element (p, kk, c) at (p * k + kk) * 64 + c holds
// w[p*64 + c, kk] (IEEE half or bfloat16 bits, round to nearest even), zero in the padding.
struct PackedHalf {
  int64_t n = 0, k = 0, np = 0;
  HalfType type = HalfType::f16;
  std::vector<uint16_t> data;
  // bf16 on CPUs with AMX-BF16 only (built by pack_half / prepare_half): the same weights as
  // k-pairs, the TDPBF16PS operand layout, K padded with zeros to kp2 (a multiple of 32):
  // element (p, g, c, b) at ((p * kp2/2 + g) * 64 + c) * 2 + b holds w[p*64 + c, 2g + b].
  std::vector<uint16_t> pairs;  // when present, `data` is empty
  int64_t kp2 = 0;
};

// w: float32 [n, k] (row stride ldw), finite; values beyond the half range are an error for f16.
void pack_half(const float* w, int64_t ldw, int64_t n, int64_t k, HalfType type, PackedHalf* out);
void unpack_check_half(const PackedHalf& p);
// Builds `pairs` for a bf16 PackedHalf when the CPU has AMX-BF16 and then drops `data` (one copy
// of the weights; no-op otherwise).
void prepare_half(PackedHalf* p);
// The weights in the `data` panel layout (rebuilt from `pairs` when only those are kept).
std::vector<uint16_t> half_panels(const PackedHalf& w);
// y = epilogue(x @ float(w)^T), accumulated in fp32. Where the CPU has fast bf16 math (AMX-BF16,
// the avx512_vnni target, AMX enabled) a bf16 layer computes as a bf16 model does: x rounded to
// bf16 (nearest even), bf16 x bf16 products summed in fp32 by TDPBF16PS, for every batch size
// (a row's result does not depend on the batch it came in). Elsewhere, and for f16, x stays fp32.
void linear_half(const float* x, int64_t m, int64_t ldx, const PackedHalf& w, const Epilogue& ep, float* y,
                 int64_t ldy, CpuTarget target, int threads);

// AMX-BF16 usable (AMX available and CPUID lists AMX-BF16): bf16 layers then take the AMX path.
bool amx_bf16_available();
// Whether linear_half takes the AMX-BF16 path for w on this target (with AMX enabled).
bool half_uses_amx(const PackedHalf& w, CpuTarget target);

uint16_t float_to_half(float f);  // round to nearest even; overflow -> inf
uint16_t float_to_bf16(float f);  // round to nearest even
float bf16_to_float(uint16_t h);

// Scalar reference of the epilogue's activation (the formula the SIMD variants follow).
float apply_activation(float v, Activation act);

}  // namespace quant
}  // namespace pyperfcore
