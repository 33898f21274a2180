// Host launchers of the CUDA kernels (no CUDA headers needed by includers).
#pragma once
#include <cstdint>

namespace pyperfcore {
namespace cuda {

// Returns a cudaError_t as int (0 = success). `stream` is a cudaStream_t.
// dtype: 0 float32, 1 float16. x is a strided [outer, channels, inner] view (element strides).
// `workspace` must hold `channels` uint32 values (amax bits) plus one flag; on return
// *nonfinite is nonzero if x held NaN or inf (the call synchronizes the stream to read it).
int quantize_int8(const void* x, int dtype, int64_t outer, int64_t channels, int64_t inner, int64_t s_o, int64_t s_c,
                  int64_t s_i, int8_t* q, float* scales, void* stream, int* nonfinite);
int dequantize_int8(const int8_t* q, const float* scales, int64_t outer, int64_t channels, int64_t inner, float* out,
                    void* stream);

// Per-token (per-row) uint8 quantization of float32 x [m, k] (row stride ldx) exactly as the CPU
// kernels do it (csrc/quant/linear.hpp): q [m, ldq] with columns k..kp-1 set to the zero point
// (kp = round_up(k, 4) <= ldq), scales [m], zero points [m]. `flag` is a device int that the
// launcher zeroes; *nonfinite reports NaN/inf after synchronizing the stream.
int quantize_rows_u8(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* q, int64_t ldq, float* scales,
                     int32_t* zps, int symmetric, int* flag, void* stream, int* nonfinite);
// out[r, j] = (q[r, j] - zp[r]) * scale[r] for q [m, ldq], out [m, k] contiguous.
int dequantize_rows_u8(const uint8_t* q, int64_t m, int64_t k, int64_t ldq, const float* scales, const int32_t* zps,
                       float* out, void* stream);

// W8A8 linear for small M (linear_small.cu): y [m, n] (row stride ldy) =
//   act(sa * sw * (q @ w^T - zp * colsum) + bias) + residual
// with x [m, k] (row stride ldx), w int8 [n, k] (row stride ldw), wscale [n], colsum [n] int32
// (sum over k of w), bias [n] float32 or null, residual [m, n] (row stride ldr) or null.
// Dtype codes for x, residual and y: 0 float32, 1 float16, 2 bfloat16. act: 0 none, 1 relu,
// 2 gelu, 3 gelu_tanh, 4 silu. `workspace` (16-byte aligned) holds w8a8_small_workspace(m, k)
// bytes: codes, scales, zero points and per-row NaN flags. Two launches on `stream`, no
// synchronization: rows of x holding NaN/inf give NaN rows of y.
int64_t w8a8_small_workspace(int64_t m, int64_t k);
int linear_w8a8_small(const void* x, int x_dtype, int64_t m, int64_t k, int64_t ldx, const int8_t* w, int64_t n,
                      int64_t ldw, const float* wscale, const int32_t* colsum, const float* bias,
                      const void* residual, int r_dtype, int64_t ldr, void* y, int y_dtype, int64_t ldy, int act,
                      int symmetric, void* workspace, int64_t workspace_bytes, void* stream);

// The same for float16 (w_dtype 1) or bfloat16 (2) weights [n, k]: x rounded to the weight's
// type (round to nearest even), fp32 products and sums, then bias, activation and residual; rows
// of x holding NaN/inf or values that round to inf give NaN rows. Workspace:
// half_small_workspace(m, k) bytes, 16-byte aligned.
int64_t half_small_workspace(int64_t m, int64_t k);
int linear_half_small(const void* x, int x_dtype, int64_t m, int64_t k, int64_t ldx, const void* w, int w_dtype,
                      int64_t n, int64_t ldw, const float* bias, const void* residual, int r_dtype, int64_t ldr, void* y,
                      int y_dtype, int64_t ldy, int act, void* workspace, int64_t workspace_bytes, void* stream);

int runtime_version();
// 0 and a device count, or a cudaError_t explaining why no device can be used.
int device_count(int* count);
const char* error_string(int err);
int device_name(int index, char* buf, int len);

}  // namespace cuda
}  // namespace pyperfcore
