#include "linear.hpp"

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "../common/threads.hpp"
#include "linear_kernels.hpp"
#include "quant.hpp"

namespace pyperfcore {
namespace quant {

namespace {
using detail::LinearKernels;
using detail::kMaxRows;

const LinearKernels& lin_kernels(CpuTarget t) {
  switch (t) {
    case CpuTarget::avx512_vnni: return detail::kLinAvx512Vnni;
    case CpuTarget::avx512: return detail::kLinAvx512;
    case CpuTarget::avx2: return detail::kLinAvx2;
    default: return detail::kLinScalar;
  }
}

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// Runs fn(begin, end) over [0, n) in at most `threads` contiguous chunks (<= 0: the pool size).
template <class F>
void run_chunks(int64_t n, int threads, int64_t min_per_chunk, F&& fn) {
  if (n <= 0) return;
  if (threads <= 0) threads = get_num_threads();
  int64_t chunks = std::min<int64_t>(threads, std::max<int64_t>(1, n / std::max<int64_t>(1, min_per_chunk)));
  if (chunks <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  parallel_for(chunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) fn(c * n / chunks, (c + 1) * n / chunks);
  });
}

void check_dims(int64_t m, int64_t k, int64_t ld, const char* what) {
  if (m < 0 || k < 0) throw std::invalid_argument(std::string(what) + ": negative dimension");
  if (ld < k && m > 1) throw std::invalid_argument(std::string(what) + ": row stride smaller than the row length");
}
}  // namespace

float apply_activation(float v, Activation act) { return detail::scalar_activation(v, act); }

uint16_t float_to_half(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  uint32_t ax = x & 0x7FFFFFFFu;
  if (ax >= 0x7F800000u) return static_cast<uint16_t>(sign | 0x7C00u | (ax > 0x7F800000u ? 0x200u : 0u));
  if (ax >= 0x477FF000u) return static_cast<uint16_t>(sign | 0x7C00u);  // rounds past 65504
  if (ax < 0x38800000u) {  // subnormal half (or zero): value / 2^-24, rounded to nearest even
    float af;
    std::memcpy(&af, &ax, 4);
    float q = std::nearbyint(af * 16777216.f);  // exact scaling by 2^24
    return static_cast<uint16_t>(sign | static_cast<uint32_t>(q));
  }
  uint32_t mant = ax & 0x7FFFFFu, exp = (ax >> 23) - 127 + 15;
  uint32_t h = (exp << 10) | (mant >> 13);
  uint32_t rem = mant & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // carries into the exponent correctly
  return static_cast<uint16_t>(sign | h);
}

uint16_t float_to_bf16(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  if ((x & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // quiet NaN
  x += 0x7FFFu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

float bf16_to_float(uint16_t h) {
  uint32_t b = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// ------------------------------------------------------------------ packing
void pack_int8(const int8_t* w, int64_t ldw, const float* scales, int64_t n, int64_t k, PackedInt8* out) {
  check_dims(n, k, ldw, "pack_int8");
  if (k > kMaxK) throw std::invalid_argument("pack_int8: in_features > 65536 could overflow the INT32 accumulator");
  for (int64_t j = 0; j < n; ++j)
    if (!(scales[j] > 0.f && scales[j] <= FLT_MAX))
      throw std::invalid_argument("pack_int8: weight scales must be finite and > 0");
  PackedInt8& p = *out;
  p.n = n;
  p.k = k;
  p.np = round_up(n, kPanel);
  p.kp = round_up(std::max<int64_t>(k, 1), 4);
  p.data.assign(static_cast<size_t>(p.np * p.kp), 0);
  p.scales.assign(scales, scales + n);
  p.colsum.assign(static_cast<size_t>(n), 0);
  const int64_t groups = p.kp / 4;
  for (int64_t j = 0; j < n; ++j) {
    const int8_t* row = w + j * ldw;
    const int64_t panel = j / kPanel, c = j % kPanel;
    int32_t s = 0;
    for (int64_t kk = 0; kk < k; ++kk) {
      if (row[kk] == -128) throw std::invalid_argument("pack_int8: weights must lie in [-127, 127] (symmetric INT8)");
      s += row[kk];
      p.data[static_cast<size_t>(((panel * groups + kk / 4) * kPanel + c) * 4 + kk % 4)] = row[kk];
    }
    p.colsum[static_cast<size_t>(j)] = s;
  }
}

void unpack_check_int8(PackedInt8* p) {
  if (p->n < 0 || p->k < 0 || p->k > kMaxK || p->np != round_up(p->n, kPanel) ||
      p->kp != round_up(std::max<int64_t>(p->k, 1), 4) || static_cast<int64_t>(p->data.size()) != p->np * p->kp ||
      static_cast<int64_t>(p->scales.size()) != p->n)
    throw std::invalid_argument("packed INT8 weights: sizes do not match [n, k]");
  for (float s : p->scales)
    if (!(s > 0.f && s <= FLT_MAX)) throw std::invalid_argument("packed INT8 weights: scales must be finite and > 0");
  const int64_t groups = p->kp / 4;
  p->colsum.assign(static_cast<size_t>(p->n), 0);
  for (int64_t panel = 0; panel < p->np / kPanel; ++panel)
    for (int64_t g = 0; g < groups; ++g)
      for (int64_t c = 0; c < kPanel; ++c)
        for (int64_t b = 0; b < 4; ++b) {
          const int8_t v = p->data[static_cast<size_t>(((panel * groups + g) * kPanel + c) * 4 + b)];
          const int64_t j = panel * kPanel + c, kk = g * 4 + b;
          if (v == -128) throw std::invalid_argument("packed INT8 weights: value -128 is outside [-127, 127]");
          if (j >= p->n || kk >= p->k) {
            if (v != 0) throw std::invalid_argument("packed INT8 weights: padding must be zero");
          } else {
            p->colsum[static_cast<size_t>(j)] += v;
          }
        }
}

void pack_half(const float* w, int64_t ldw, int64_t n, int64_t k, HalfType type, PackedHalf* out) {
  check_dims(n, k, ldw, "pack_half");
  PackedHalf& p = *out;
  p.n = n;
  p.k = k;
  p.np = round_up(n, kPanel);
  p.type = type;
  p.data.assign(static_cast<size_t>(p.np * k), 0);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t kk = 0; kk < k; ++kk) {
      const float v = w[j * ldw + kk];
      if (!(std::fabs(v) <= FLT_MAX)) throw std::invalid_argument("pack_half: weights contain NaN or infinity");
      uint16_t h = type == HalfType::f16 ? float_to_half(v) : float_to_bf16(v);
      if (type == HalfType::f16 && (h & 0x7C00u) == 0x7C00u)
        throw std::invalid_argument("pack_half: a weight exceeds the float16 range (|w| > 65504); use bfloat16");
      p.data[static_cast<size_t>(((j / kPanel) * k + kk) * kPanel + j % kPanel)] = h;
    }
  prepare_half(&p);
}

void prepare_half(PackedHalf* p) {
  p->pairs.clear();
  p->kp2 = 0;
  if (p->type != HalfType::bf16 || !detail::amx_bf16_supported() || p->n == 0 || p->k == 0) return;
  const int64_t kp2 = round_up(p->k, 32), groups = kp2 / 2, panels = p->np / kPanel;
  p->pairs.assign(static_cast<size_t>(panels * groups * kPanel * 2), 0);
  for (int64_t q = 0; q < panels; ++q)
    for (int64_t kk = 0; kk < p->k; ++kk)
      for (int64_t c = 0; c < kPanel; ++c)
        p->pairs[static_cast<size_t>(((q * groups + kk / 2) * kPanel + c) * 2 + (kk & 1))] =
            p->data[static_cast<size_t>((q * p->k + kk) * kPanel + c)];
  p->kp2 = kp2;
  // one copy of the weights: the fp32-activation path widens panels straight from the pairs
  p->data.clear();
  p->data.shrink_to_fit();
}

std::vector<uint16_t> half_panels(const PackedHalf& w) {
  if (!w.data.empty() || w.pairs.empty()) return w.data;
  std::vector<uint16_t> out(static_cast<size_t>(w.np * w.k));
  const int64_t groups = w.kp2 / 2;
  for (int64_t q = 0; q < w.np / kPanel; ++q)
    for (int64_t kk = 0; kk < w.k; ++kk)
      for (int64_t c = 0; c < kPanel; ++c)
        out[static_cast<size_t>((q * w.k + kk) * kPanel + c)] =
            w.pairs[static_cast<size_t>(((q * groups + kk / 2) * kPanel + c) * 2 + (kk & 1))];
  return out;
}

void unpack_check_half(const PackedHalf& p) {
  if (p.n < 0 || p.k < 0 || p.np != round_up(p.n, kPanel) || static_cast<int64_t>(p.data.size()) != p.np * p.k)
    throw std::invalid_argument("packed half weights: sizes do not match [n, k]");
  for (uint16_t h : p.data) {
    bool bad = p.type == HalfType::f16 ? (h & 0x7C00u) == 0x7C00u : (h & 0x7F80u) == 0x7F80u;
    if (bad) throw std::invalid_argument("packed half weights: NaN or infinity");
  }
}

// ------------------------------------------------------------------ activation quantization
namespace {
void quant_one_row(const LinearKernels& kr, const float* x, int64_t k, int64_t kp, uint8_t* q, float* scale,
                   int32_t* zp, bool symmetric, bool* bad) {
  float lo, hi;
  kr.minmax(x, k, &lo, &hi, bad);
  if (*bad) return;
  float s, inv, z, qmin, qmax;
  if (symmetric) {
    const float amax = std::max(-lo, hi);
    s = amax / 127.f;
    s = s >= FLT_MIN ? s : 1.f;  // zero or subnormal scale: 1 / s would overflow
    inv = 1.f / s;
    z = 128.f;
    qmin = 1.f;
    qmax = 255.f;
  } else {
    const float range = hi - lo;
    s = range / 255.f;
    s = s >= FLT_MIN ? s : 1.f;
    inv = 1.f / s;
    z = std::min(std::max(std::nearbyint(-lo * inv), 0.f), 255.f);
    qmin = 0.f;
    qmax = 255.f;
  }
  kr.quant_row(x, k, inv, z, qmin, qmax, q, nullptr);  // minmax has checked finiteness
  std::memset(q + k, static_cast<int>(z), static_cast<size_t>(kp - k));
  *scale = s;
  *zp = static_cast<int32_t>(z);
}
[[noreturn]] void throw_nonfinite() {
  throw std::invalid_argument("linear: activations contain NaN or infinity");
}
}  // namespace

void quantize_rows_u8(const float* x, int64_t m, int64_t k, int64_t ldx, uint8_t* q, int64_t ldq, float* scales,
                      int32_t* zps, bool symmetric, CpuTarget target, int threads) {
  check_dims(m, k, ldx, "quantize_rows_u8");
  const int64_t kp = round_up(std::max<int64_t>(k, 1), 4);
  if (ldq < kp && m > 1) throw std::invalid_argument("quantize_rows_u8: ldq < round_up(k, 4)");
  const LinearKernels& kr = lin_kernels(target);
  std::atomic<bool> bad{false};
  run_chunks(m, threads, 8, [&](int64_t b, int64_t e) {
    bool lbad = false;
    for (int64_t r = b; r < e && !lbad; ++r)
      quant_one_row(kr, x + r * ldx, k, kp, q + r * ldq, scales + r, zps + r, symmetric, &lbad);
    if (lbad) bad.store(true);
  });
  if (bad.load()) throw_nonfinite();
}

void quantize_rows_u8_static(const float* x, int64_t m, int64_t k, int64_t ldx, float scale, uint8_t* q, int64_t ldq,
                             float* scales, int32_t* zps, CpuTarget target, int threads) {
  check_dims(m, k, ldx, "quantize_rows_u8_static");
  if (!(scale >= FLT_MIN && scale <= FLT_MAX))
    throw std::invalid_argument("quantize_rows_u8_static: the activation scale must be finite and > 0");
  const int64_t kp = round_up(std::max<int64_t>(k, 1), 4);
  if (ldq < kp && m > 1) throw std::invalid_argument("quantize_rows_u8_static: ldq < round_up(k, 4)");
  const LinearKernels& kr = lin_kernels(target);
  const float inv = 1.f / scale;
  std::atomic<bool> bad{false};
  // no min/max pass: one read of x, finiteness checked inside the quantization
  run_chunks(m, threads, 8, [&](int64_t b, int64_t e) {
    bool lbad = false;
    for (int64_t r = b; r < e && !lbad; ++r) {
      kr.quant_row(x + r * ldx, k, inv, 128.f, 1.f, 255.f, q + r * ldq, &lbad);
      std::memset(q + r * ldq + k, 128, static_cast<size_t>(kp - k));
      scales[r] = scale;
      zps[r] = 128;
    }
    if (lbad) bad.store(true);
  });
  if (bad.load()) throw_nonfinite();
}

// ------------------------------------------------------------------ GEMM and fused linear
namespace {
std::atomic<bool> g_amx_on{true};

bool use_amx(CpuTarget target, int64_t m) {
  return target == CpuTarget::avx512_vnni && m >= kAmxMinRows && g_amx_on.load(std::memory_order_relaxed) &&
         detail::amx_supported();
}

std::atomic<bool> g_amx_block2{true};

// Like for_tiles with 16-row blocks (32-row blocks with the 2x2 tile blocking); each chunk
// configures the AMX tiles on its own thread (again when the row count of a block changes) and
// releases them before returning, so no tile state outlives the call (other libraries on the same
// thread configure tiles their own way). fn(p, r0, rows, gemm) gets the block GEMM to call.
using AmxBlockFn = void (*)(const uint8_t*, int64_t, int, const int8_t*, int64_t, int32_t*);
template <class TileFn>
void for_tiles_amx(int64_t m, int64_t np, int threads, TileFn&& fn) {
  const bool b2 = g_amx_block2.load(std::memory_order_relaxed);
  const int64_t R = b2 ? detail::kAmxRows2 : detail::kAmxRows;
  const AmxBlockFn gemm = b2 ? detail::amx_gemm_block2 : detail::amx_gemm_block;
  const int64_t mblocks = (m + R - 1) / R, panels = np / kPanel;
  run_chunks(mblocks * panels, threads, 1, [&](int64_t b, int64_t e) {
    int configured = 0;
    for (int64_t t = b; t < e; ++t) {
      const int64_t p = t / mblocks, mb = t % mblocks;
      const int64_t r0 = mb * R;
      const int rows = static_cast<int>(std::min<int64_t>(R, m - r0));
      if (rows != configured) {
        if (b2)
          detail::amx_configure2(rows);
        else
          detail::amx_configure(rows);
        configured = rows;
      }
      fn(p, r0, rows, gemm);
    }
    if (configured) detail::amx_release();
  });
}
}  // namespace

bool amx_blocking() { return g_amx_block2.load(); }
void set_amx_blocking(bool on) { g_amx_block2.store(on); }
bool amx_available() { return detail::amx_supported(); }
bool amx_enabled() { return g_amx_on.load() && detail::amx_supported(); }
void set_amx_enabled(bool on) { g_amx_on.store(on); }

namespace {
// Work item t covers panel t / mblocks and rows [mb * kMaxRows, ...) of block t % mblocks:
// consecutive items reuse one weight panel (kept in L2) across row blocks.
template <class TileFn>
void for_tiles(int64_t m, int64_t np, int threads, TileFn&& fn) {
  const int64_t mblocks = (m + kMaxRows - 1) / kMaxRows, panels = np / kPanel;
  run_chunks(mblocks * panels, threads, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      const int64_t p = t / mblocks, mb = t % mblocks;
      const int64_t r0 = mb * kMaxRows;
      fn(p, r0, static_cast<int>(std::min<int64_t>(kMaxRows, m - r0)));
    }
  });
}
}  // namespace

void gemm_u8s8(const uint8_t* a, int64_t m, int64_t lda, const PackedInt8& w, int32_t* c, int64_t ldc,
               CpuTarget target, int threads) {
  if (m <= 0 || w.n == 0) return;
  const LinearKernels& kr = lin_kernels(target);
  auto store = [&](const int32_t* tile, int64_t p, int64_t r0, int rows) {
    const int64_t nc = std::min(kPanel, w.n - p * kPanel);
    for (int r = 0; r < rows; ++r)
      std::memcpy(c + (r0 + r) * ldc + p * kPanel, tile + r * kPanel, static_cast<size_t>(nc) * 4);
  };
  if (use_amx(target, m)) {
    for_tiles_amx(m, w.np, threads, [&](int64_t p, int64_t r0, int rows, AmxBlockFn gemm) {
      alignas(64) int32_t tile[detail::kAmxRows2 * kPanel];
      gemm(a + r0 * lda, lda, rows, w.data.data() + p * kPanel * w.kp, w.kp, tile);
      store(tile, p, r0, rows);
    });
    return;
  }
  for_tiles(m, w.np, threads, [&](int64_t p, int64_t r0, int rows) {
    alignas(64) int32_t tile[kMaxRows * kPanel];
    kr.gemm_tile(a + r0 * lda, lda, rows, w.data.data() + p * kPanel * w.kp, w.kp, tile);
    if (kr.gemm_shift) {  // the tile holds sum (a - shift) w: add shift * colsum back
      const int64_t j0 = p * kPanel, nc = std::min(kPanel, w.n - j0);
      for (int r = 0; r < rows; ++r)
        for (int64_t j = 0; j < nc; ++j) tile[r * kPanel + j] += kr.gemm_shift * w.colsum[static_cast<size_t>(j0 + j)];
    }
    store(tile, p, r0, rows);
  });
}

namespace {
// Per-thread scratch of the calling thread, reused across calls (no allocation once it has grown
// to the batch size). The pool threads must see the caller's buffers: pass them as pointers, a
// thread_local named inside a worker lambda would be the worker's own.
struct Scratch {
  std::vector<uint8_t> qa;
  std::vector<float> sa, h;
  std::vector<int32_t> zp, zp_shifted;
};
Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

// y = epilogue(sa[m] * sw[n] * (qa[m, :] . w[n, :] - zp[m] * colsum[n])) for activation codes
// already quantized (row stride w.kp).
void linear_codes(const uint8_t* qa, const float* sa, const int32_t* zp, int64_t m, const PackedInt8& w,
                  const Epilogue& ep, float* y, int64_t ldy, CpuTarget target, int threads) {
  const LinearKernels& kr = lin_kernels(target);
  // the epilogue runs on the block while it is still in L1, right after its accumulation
  auto finish = [&](const int32_t* tile, int64_t p, int64_t r0, int rows) {
    const int64_t j0 = p * kPanel, nc = std::min(kPanel, w.n - j0);
    kr.epi_i8_rows(tile, rows, nc, sa + r0, zp + r0, w.scales.data() + j0, w.colsum.data() + j0,
                   ep.bias ? ep.bias + j0 : nullptr, ep.act,
                   ep.residual ? ep.residual + r0 * ep.ld_residual + j0 : nullptr, ep.ld_residual, y + r0 * ldy + j0, ldy);
  };
  if (use_amx(target, m)) {
    for_tiles_amx(m, w.np, threads, [&](int64_t p, int64_t r0, int rows, AmxBlockFn gemm) {
      alignas(64) int32_t tile[detail::kAmxRows2 * kPanel];
      gemm(qa + r0 * w.kp, w.kp, rows, w.data.data() + p * kPanel * w.kp, w.kp, tile);
      finish(tile, p, r0, rows);
    });
    return;
  }
  if (kr.gemm_shift) {
    // tiles of sum (a - shift) w: acc - zp colsum = tile - (zp - shift) colsum, the same integer
    std::vector<int32_t>& zs = scratch().zp_shifted;
    zs.resize(static_cast<size_t>(m));
    for (int64_t r = 0; r < m; ++r) zs[static_cast<size_t>(r)] = zp[r] - kr.gemm_shift;
    zp = zs.data();
  }
  for_tiles(m, w.np, threads, [&](int64_t p, int64_t r0, int rows) {
    alignas(64) int32_t tile[kMaxRows * kPanel];
    kr.gemm_tile(qa + r0 * w.kp, w.kp, rows, w.data.data() + p * kPanel * w.kp, w.kp, tile);
    finish(tile, p, r0, rows);
  });
}
}  // namespace

void linear_w8a8(const float* x, int64_t m, int64_t ldx, const PackedInt8& w, bool symmetric_act,
                 const Epilogue& ep, float* y, int64_t ldy, CpuTarget target, int threads) {
  check_dims(m, w.k, ldx, "linear_w8a8");
  if (m == 0 || w.n == 0) return;
  Scratch& s = scratch();
  s.qa.resize(static_cast<size_t>(m * w.kp));
  s.sa.resize(static_cast<size_t>(m));
  s.zp.resize(static_cast<size_t>(m));
  quantize_rows_u8(x, m, w.k, ldx, s.qa.data(), w.kp, s.sa.data(), s.zp.data(), symmetric_act, target, threads);
  linear_codes(s.qa.data(), s.sa.data(), s.zp.data(), m, w, ep, y, ldy, target, threads);
}

void linear_w8a8_static(const float* x, int64_t m, int64_t ldx, const PackedInt8& w, float act_scale,
                        const Epilogue& ep, float* y, int64_t ldy, CpuTarget target, int threads) {
  check_dims(m, w.k, ldx, "linear_w8a8_static");
  if (!(act_scale >= FLT_MIN && act_scale <= FLT_MAX))
    throw std::invalid_argument("linear_w8a8_static: the activation scale must be finite and > 0");
  if (m == 0 || w.n == 0) return;
  Scratch& s = scratch();
  s.qa.resize(static_cast<size_t>(m * w.kp));
  s.sa.resize(static_cast<size_t>(m));
  s.zp.resize(static_cast<size_t>(m));
  quantize_rows_u8_static(x, m, w.k, ldx, act_scale, s.qa.data(), w.kp, s.sa.data(), s.zp.data(), target, threads);
  linear_codes(s.qa.data(), s.sa.data(), s.zp.data(), m, w, ep, y, ldy, target, threads);
}

void mlp_w8a8(const float* x, int64_t m, int64_t ldx, const PackedInt8& w1, bool sym1, const Epilogue& ep1,
              const PackedInt8& w2, bool sym2, const Epilogue& ep2, float* y, int64_t ldy, CpuTarget target,
              int threads) {
  check_dims(m, w1.k, ldx, "mlp_w8a8");
  if (w2.k != w1.n) throw std::invalid_argument("mlp_w8a8: the second layer's in_features must equal the first's out_features");
  if (m == 0) return;
  // Rows are independent (per-token quantization, INT32 sums identical on every GEMM path): long
  // batches run in chunks of 32 rows (two AMX blocks; 36 = six VPDPBUSD tiles without AMX), so
  // h (32 x 1536 floats = 192 KB for the 384-1536-384 MLP) and both weight matrices stay in L2
  // together. Measured 4-5% faster than 256-row chunks at m = 64..256 (and no slower at 32).
  const int64_t kChunk = use_amx(target, 32) ? 32 : 36;
  if (m > kChunk) {
    for (int64_t r0 = 0; r0 < m; r0 += kChunk) {
      Epilogue e2 = ep2;
      if (e2.residual) e2.residual += r0 * e2.ld_residual;
      Epilogue e1 = ep1;
      if (e1.residual) e1.residual += r0 * e1.ld_residual;
      mlp_w8a8(x + r0 * ldx, std::min(kChunk, m - r0), ldx, w1, sym1, e1, w2, sym2, e2, y + r0 * ldy, ldy, target,
               threads);
    }
    return;
  }
  Scratch& s = scratch();
  const int64_t n1 = w1.n;
  s.h.resize(static_cast<size_t>(m * std::max<int64_t>(n1, 1)));
  s.sa.resize(static_cast<size_t>(m));
  s.zp.resize(static_cast<size_t>(m));
  float* const h = s.h.data();
  if (n1 > 0) {
    s.qa.resize(static_cast<size_t>(m * w1.kp));
    quantize_rows_u8(x, m, w1.k, ldx, s.qa.data(), w1.kp, s.sa.data(), s.zp.data(), sym1, target, threads);
    linear_codes(s.qa.data(), s.sa.data(), s.zp.data(), m, w1, ep1, h, n1, target, threads);
  }
  // h is hot in cache: quantize it per token into the code buffer the first layer no longer needs
  s.qa.resize(static_cast<size_t>(m * w2.kp));
  quantize_rows_u8(h, m, n1, n1, s.qa.data(), w2.kp, s.sa.data(), s.zp.data(), sym2, target, threads);
  linear_codes(s.qa.data(), s.sa.data(), s.zp.data(), m, w2, ep2, y, ldy, target, threads);
}

bool amx_bf16_available() { return detail::amx_bf16_supported(); }
bool half_uses_amx(const PackedHalf& w, CpuTarget target) {
  return target == CpuTarget::avx512_vnni && !w.pairs.empty() && g_amx_on.load(std::memory_order_relaxed);
}

namespace {
// bf16 x bf16 on AMX: x rounded to bf16 once per call (finiteness checked in the same pass), then
// 16-row x 64-column fp32 blocks per panel, each finished by the epilogue while in L1.
void linear_half_amx(const float* x, int64_t m, int64_t ldx, const PackedHalf& w, const Epilogue& ep, float* y,
                     int64_t ldy, CpuTarget target, int threads) {
  const LinearKernels& kr = lin_kernels(target);
  thread_local std::vector<uint16_t> xa_buf;  // the caller's; the workers get its pointer
  xa_buf.resize(static_cast<size_t>(m * w.kp2));
  uint16_t* const xa = xa_buf.data();
  std::atomic<bool> bad{false};
  run_chunks(m, threads, 8, [&](int64_t b, int64_t e) {
    bool lbad = false;
    for (int64_t r = b; r < e && !lbad; ++r) detail::bf16_row(x + r * ldx, w.k, w.kp2, xa + r * w.kp2, &lbad);
    if (lbad) bad.store(true);
  });
  if (bad.load()) throw_nonfinite();
  // 32-row blocks (2x2 tiles) unless the batch fits one 16-row block; a block's last rows may be
  // 1-16 (one-block kernel) or 17-31 (2x2 kernel), configured per row count
  const int64_t R = m > detail::kAmxRows ? detail::kAmxRows2 : detail::kAmxRows;
  const int64_t mblocks = (m + R - 1) / R, panels = w.np / kPanel, groups = w.kp2 / 2;
  run_chunks(mblocks * panels, threads, 1, [&](int64_t b, int64_t e) {
    int configured = 0;
    alignas(64) float tile[detail::kAmxRows2 * kPanel];
    for (int64_t t = b; t < e; ++t) {
      const int64_t p = t / mblocks, r0 = (t % mblocks) * R;
      const int rows = static_cast<int>(std::min<int64_t>(R, m - r0));
      const bool two = rows > detail::kAmxRows;
      const int cfg = two ? rows + 1000 : rows;  // the two kernels configure the tiles differently
      if (cfg != configured) {
        if (two)
          detail::amx_configure2(rows);
        else
          detail::amx_configure(rows);
        configured = cfg;
      }
      const uint16_t* panel = w.pairs.data() + p * groups * kPanel * 2;
      if (two)
        detail::amx_bf16_block2(xa + r0 * w.kp2, w.kp2, rows, panel, w.kp2, tile);
      else
        detail::amx_bf16_block(xa + r0 * w.kp2, w.kp2, rows, panel, w.kp2, tile);
      const int64_t j0 = p * kPanel, nc = std::min(kPanel, w.n - j0);
      for (int r = 0; r < rows; ++r) {
        const int64_t row = r0 + r;
        kr.epi_f(tile + r * kPanel, nc, ep.bias ? ep.bias + j0 : nullptr, ep.act,
                 ep.residual ? ep.residual + row * ep.ld_residual + j0 : nullptr, y + row * ldy + j0);
      }
    }
    if (configured) detail::amx_release();
  });
}
}  // namespace

void linear_half(const float* x, int64_t m, int64_t ldx, const PackedHalf& w, const Epilogue& ep, float* y,
                 int64_t ldy, CpuTarget target, int threads) {
  check_dims(m, w.k, ldx, "linear_half");
  if (m == 0 || w.n == 0) return;
  if (half_uses_amx(w, target)) {
    linear_half_amx(x, m, ldx, w, ep, y, ldy, target, threads);
    return;
  }
  const LinearKernels& kr = lin_kernels(target);
  std::atomic<bool> bad{false};
  run_chunks(m, threads, 8, [&](int64_t b, int64_t e) {
    bool lbad = false;
    for (int64_t r = b; r < e && !lbad; ++r) {
      float lo, hi;
      kr.minmax(x + r * ldx, w.k, &lo, &hi, &lbad);
    }
    if (lbad) bad.store(true);
  });
  if (bad.load()) throw_nonfinite();
  const bool bf16 = w.type == HalfType::bf16;
  // With three or more row blocks, each thread widens a weight panel to fp32 once (k x 64 floats,
  // L2-resident for k up to a few thousand) and runs an fp32 FMA tile over it for every row block
  // it owns; fewer rows convert on the fly. Both do the same FMAs in the same order: same bits.
  // A pairs-only packing (bf16 on an AMX-BF16 CPU, here with AMX off or another target) is read
  // by pairs_tile for few rows and widened for more: the same FMAs in the same order either way.
  // (The scalar target's f32 tile rounds products and sums separately, pairs_tile uses FMA: there
  // a pairs-only packing is always widened, so its bits stay those of the scalar tile.)
  const bool from_pairs = w.data.empty();
  const bool widen = m > 2 * kMaxRows || (from_pairs && target == CpuTarget::scalar);
  static std::atomic<uint64_t> calls{0};
  const uint64_t call = calls.fetch_add(1) + 1;
  for_tiles(m, w.np, threads, [&](int64_t p, int64_t r0, int rows) {
    alignas(64) float tile[kMaxRows * kPanel];
    const uint16_t* panel = from_pairs ? nullptr : w.data.data() + p * kPanel * w.k;
    if (widen) {
      // per worker thread; valid only for this call's (call id, panel): a chunk may start mid-panel,
      // and a later call's weights may sit at the same address
      thread_local std::vector<float> wide;
      thread_local uint64_t wide_call = 0;
      thread_local int64_t wide_p = -1;
      if (wide_call != call || wide_p != p) {
        wide.resize(static_cast<size_t>(w.k * kPanel));
        if (from_pairs)
          detail::widen_pairs(w.pairs.data() + p * (w.kp2 / 2) * kPanel * 2, w.k, wide.data());
        else
          kr.widen_panel(panel, w.k, bf16, wide.data());
        wide_call = call;
        wide_p = p;
      }
      kr.f32_tile(x + r0 * ldx, ldx, rows, wide.data(), w.k, tile);
    } else if (from_pairs) {
      detail::pairs_tile(x + r0 * ldx, ldx, rows, w.pairs.data() + p * (w.kp2 / 2) * kPanel * 2, w.k, tile);
    } else {
      kr.half_tile(x + r0 * ldx, ldx, rows, panel, w.k, bf16, tile);
    }
    const int64_t j0 = p * kPanel, nc = std::min(kPanel, w.n - j0);
    for (int r = 0; r < rows; ++r) {
      const int64_t row = r0 + r;
      kr.epi_f(tile + r * kPanel, nc, ep.bias ? ep.bias + j0 : nullptr, ep.act,
               ep.residual ? ep.residual + row * ep.ld_residual + j0 : nullptr, y + row * ldy + j0);
    }
  });
}

}  // namespace quant
}  // namespace pyperfcore
