// Internal: per-ISA tile kernels of the quantized linear layers (see linear.hpp).
#pragma once
#include <cstdint>

#include "linear.hpp"

namespace pyperfcore {
namespace quant {
namespace detail {

constexpr int kMaxRows = 6;  // rows of one GEMM tile (24 zmm accumulators on AVX-512)

struct LinearKernels {
  // lo = min(x), hi = max(x) over k contiguous floats; *bad set if any is NaN or +-inf.
  void (*minmax)(const float* x, int64_t k, float* lo, float* hi, bool* bad);
  // q[j] = clip(rne(x[j] * inv) + zp, qmin, qmax) as uint8; *bad set (if bad) when any x is NaN or
  // +-inf (the static mode has no min/max pass to find them).
  void (*quant_row)(const float* x, int64_t k, float inv, float zp, float qmin, float qmax, uint8_t* q, bool* bad);
  // c[r, 0:64] = sum over kp of (a[r, :] - gemm_shift) * panel, for r < rows <= kMaxRows (INT32,
  // exact): the callers add gemm_shift * colsum back.
  void (*gemm_tile)(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t kp, int32_t* c);
  // y[j] = finish(float(acc[j] - zp * colsum[j]) * (sa * sw[j])) for j < ncols <= 64.
  void (*epi_i8)(const int32_t* acc, int64_t ncols, float sa, int32_t zp, const float* sw, const int32_t* colsum,
                 const float* bias, Activation act, const float* res, float* y);
  // epi_i8 for rows r < rows of one block (acc row stride 64): row r takes sa[r], zp[r],
  // res + r * ldres (if res) and writes y + r * ldy. Same per-element math and bits as epi_i8.
  void (*epi_i8_rows)(const int32_t* acc, int rows, int64_t ncols, const float* sa, const int32_t* zp, const float* sw,
                      const int32_t* colsum, const float* bias, Activation act, const float* res, int64_t ldres, float* y,
                      int64_t ldy);
  // c[r, 0:64] = sum over k of x[r, kk] * float(panel[kk, :]) (fp32), rows <= kMaxRows.
  void (*half_tile)(const float* x, int64_t ldx, int rows, const uint16_t* panel, int64_t k, bool bf16, float* c);
  // out[kk * 64 + c] = float(panel[kk * 64 + c]) for kk < k: one half panel widened to fp32.
  void (*widen_panel)(const uint16_t* panel, int64_t k, bool bf16, float* out);
  // half_tile on a widened panel: the same FMA sequence per element, so the same bits.
  void (*f32_tile)(const float* x, int64_t ldx, int rows, const float* panel, int64_t k, float* c);
  // y[j] = finish(acc[j]) for j < ncols <= 64.
  void (*epi_f)(const float* acc, int64_t ncols, const float* bias, Activation act, const float* res, float* y);
  // 0, or kGemmShift for the kernels that multiply signed codes a - 128 (no VNNI: see linear_simd.cpp).
  int32_t gemm_shift;
};
constexpr int32_t kGemmShift = 128;

float scalar_activation(float v, Activation act);

extern const LinearKernels kLinScalar;
extern const LinearKernels kLinAvx2;
extern const LinearKernels kLinAvx512;
extern const LinearKernels kLinAvx512Vnni;

// AMX INT8 (Sapphire Rapids and later), used inside the avx512_vnni target for larger batches.
// amx_gemm_block computes one block of rows <= kAmxRows x 64 columns of the INT32 product
// (the same exact sums as gemm_tile) into c (row stride 64); the calling thread must have run
// amx_configure(rows) for that row count and calls amx_release() when done.
constexpr int kAmxRows = 16;
bool amx_supported();
void amx_configure(int rows);
void amx_release();
void amx_gemm_block(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t kp, int32_t* c);
// 2x2-blocked variant: rows <= kAmxRows2 (32) x 64 columns per call, after amx_configure2(rows).
constexpr int kAmxRows2 = 32;
// AMX-BF16: CPUID lists it (and amx_supported()). One block of rows <= 16 x 64 columns of fp32
// sums over kp2 (a multiple of 32) of bf16 rows a (row stride lda elements) times a `pairs` panel,
// after amx_configure(rows).
bool amx_bf16_supported();
void amx_bf16_block(const uint16_t* a, int64_t lda, int rows, const uint16_t* pairs, int64_t kp2, float* c);
// 17 <= rows <= 32 (after amx_configure2(rows)): 2x2 tile blocking, the same per-row bits.
void amx_bf16_block2(const uint16_t* a, int64_t lda, int rows, const uint16_t* pairs, int64_t kp2, float* c);
// out[kk * 64 + c] = float(w[c, kk]) for kk < k from one `pairs` panel (the fp32-activation path
// of a pairs-only packing; pairs exist only on CPUs with AMX-BF16, so AVX-512 is there).
void widen_pairs(const uint16_t* pairs, int64_t k, float* out);
// c[r, 0:64] = sum over k of x[r, kk] * float(w[., kk]) from one pairs panel, fp32 FMA in k order
// (the bits of f32_tile on the widened panel), rows <= kMaxRows.
void pairs_tile(const float* x, int64_t ldx, int rows, const uint16_t* pairs, int64_t k, float* c);
// Rounds k floats to bf16 (nearest even) into q, zero-filling q[k..kp2); *bad if any is NaN/inf.
void bf16_row(const float* x, int64_t k, int64_t kp2, uint16_t* q, bool* bad);
void amx_configure2(int rows);
void amx_gemm_block2(const uint8_t* a, int64_t lda, int rows, const int8_t* panel, int64_t kp, int32_t* c);

}  // namespace detail
}  // namespace quant
}  // namespace pyperfcore
