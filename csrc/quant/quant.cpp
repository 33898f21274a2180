#include "quant.hpp"

#include <algorithm>
#include <atomic>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "../common/threads.hpp"
#include "quant_kernels.hpp"

namespace pyperfcore {
namespace quant {

float half_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1Fu, man = h & 0x3FFu, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal half: normalize
      int e = -1;
      do {
        ++e;
        man <<= 1;
      } while (!(man & 0x400u));
      bits = sign | static_cast<uint32_t>(127 - 15 - e) << 23 | (man & 0x3FFu) << 13;
    }
  } else if (exp == 0x1F) {
    bits = sign | 0x7F800000u | man << 13;
  } else {
    bits = sign | (exp + 127 - 15) << 23 | man << 13;
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

namespace {

using detail::RowKernels;

const RowKernels& kernels_for(CpuTarget t) {
  // The quantize op has scalar, AVX2 and AVX-512 variants; VNNI adds nothing here.
  switch (t) {
    case CpuTarget::avx512:
    case CpuTarget::avx512_vnni: return detail::kAvx512;
    case CpuTarget::avx2: return detail::kAvx2;
    default: return detail::kScalar;
  }
}

inline size_t elem_size(FloatType t) { return t == FloatType::f32 ? 4 : 2; }

// Element pointer of x[o, c, i].
inline const char* at(const View3& x, int64_t o, int64_t c, int64_t i) {
  return static_cast<const char*>(x.data) +
         static_cast<ptrdiff_t>((o * x.s_outer + c * x.s_channel + i * x.s_inner) * static_cast<int64_t>(elem_size(x.dtype)));
}

float run_amax(const RowKernels& k, const View3& x, const char* p, int64_t n, int64_t stride, bool* bad) {
  if (stride == 1)
    return x.dtype == FloatType::f32 ? k.amax_f32(reinterpret_cast<const float*>(p), n, bad)
                                     : k.amax_f16(reinterpret_cast<const uint16_t*>(p), n, bad);
  float m = 0.f;
  const size_t es = elem_size(x.dtype);
  for (int64_t i = 0; i < n; ++i) {
    const char* e = p + static_cast<ptrdiff_t>(i * stride * static_cast<int64_t>(es));
    float a = x.dtype == FloatType::f32 ? std::fabs(*reinterpret_cast<const float*>(e))
                                        : std::fabs(half_to_float(*reinterpret_cast<const uint16_t*>(e)));
    if (!(a <= FLT_MAX)) *bad = true;
    m = a > m ? a : m;
  }
  return m;
}

void run_quant(const RowKernels& k, const View3& x, const char* p, int64_t n, int64_t stride, float scale, int8_t* q) {
  if (stride == 1) {
    if (x.dtype == FloatType::f32)
      k.quant_f32(reinterpret_cast<const float*>(p), n, scale, q);
    else
      k.quant_f16(reinterpret_cast<const uint16_t*>(p), n, scale, q);
    return;
  }
  const size_t es = elem_size(x.dtype);
  for (int64_t i = 0; i < n; ++i) {
    const char* e = p + static_cast<ptrdiff_t>(i * stride * static_cast<int64_t>(es));
    if (x.dtype == FloatType::f32)
      detail::kScalar.quant_f32(reinterpret_cast<const float*>(e), 1, scale, q + i);
    else
      detail::kScalar.quant_f16(reinterpret_cast<const uint16_t*>(e), 1, scale, q + i);
  }
}

// 1 when amax / 127 is below the smallest normal float (an all-zero or all-subnormal channel):
// a zero or subnormal scale would make x / scale overflow or divide 0 by 0.
inline float scale_of(float amax) {
  const float s = amax / 127.f;
  return s >= FLT_MIN ? s : 1.f;
}

constexpr int64_t kSeg = 1 << 15;  // elements per parallel task along a contiguous run

[[noreturn]] void throw_nonfinite() {
  throw std::invalid_argument("input contains NaN or infinity; INT8 quantization needs finite values");
}

// Channels along runs of `inner` elements: x[o, c, :].
void quantize_runs(const View3& x, int8_t* q, float* scales, const RowKernels& k) {
  const int64_t O = x.outer, C = x.channels, I = x.inner;
  std::atomic<bool> bad{false};
  if (O == 1 && C >= 2 * get_num_threads()) {
    // Each channel is one run: find its amax and quantize it while it is still in cache.
    parallel_for(C, 1, [&](int64_t b, int64_t e) {
      bool lbad = false;
      for (int64_t c = b; c < e; ++c) {
        const char* p = at(x, 0, c, 0);
        float s = scale_of(run_amax(k, x, p, I, x.s_inner, &lbad));
        scales[c] = s;
        if (!lbad) run_quant(k, x, p, I, x.s_inner, s, q + c * I);
      }
      if (lbad) bad.store(true);
    });
    if (bad.load()) throw_nonfinite();
    return;
  }
  const int64_t segs = (I + kSeg - 1) / kSeg, runs = O * C;
  std::vector<float> part(static_cast<size_t>(runs * segs), 0.f);
  parallel_for(runs * segs, 1, [&](int64_t b, int64_t e) {
    bool lbad = false;
    for (int64_t t = b; t < e; ++t) {
      int64_t r = t / segs, s = t % segs, o = r / C, c = r % C;
      int64_t i0 = s * kSeg, n = std::min(kSeg, I - i0);
      part[static_cast<size_t>(t)] = run_amax(k, x, at(x, o, c, i0), n, x.s_inner, &lbad);
    }
    if (lbad) bad.store(true);
  });
  if (bad.load()) throw_nonfinite();
  std::vector<float> amax(static_cast<size_t>(C), 0.f);
  for (int64_t t = 0; t < runs * segs; ++t) {
    int64_t c = (t / segs) % C;
    amax[static_cast<size_t>(c)] = std::max(amax[static_cast<size_t>(c)], part[static_cast<size_t>(t)]);
  }
  for (int64_t c = 0; c < C; ++c) scales[c] = scale_of(amax[static_cast<size_t>(c)]);
  parallel_for(runs * segs, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      int64_t r = t / segs, s = t % segs, o = r / C, c = r % C;
      int64_t i0 = s * kSeg, n = std::min(kSeg, I - i0);
      run_quant(k, x, at(x, o, c, i0), n, x.s_inner, scales[c], q + (o * C + c) * I + i0);
    }
  });
}

// inner == 1 with channels contiguous along each outer row: x[o, :] holds one value per channel.
void quantize_columns(const View3& x, int8_t* q, float* scales, const RowKernels& k) {
  const int64_t O = x.outer, C = x.channels;
  const int threads = get_num_threads();
  const int64_t nblocks = std::min<int64_t>(O, threads);
  std::vector<float> part(static_cast<size_t>(nblocks * C), 0.f);
  std::atomic<bool> bad{false};
  const int64_t per = (O + nblocks - 1) / nblocks;
  parallel_for(nblocks, 1, [&](int64_t b, int64_t e) {
    bool lbad = false;
    for (int64_t blk = b; blk < e; ++blk) {
      float* acc = part.data() + blk * C;
      for (int64_t o = blk * per; o < std::min(O, (blk + 1) * per); ++o) {
        const char* p = at(x, o, 0, 0);
        if (x.dtype == FloatType::f32)
          k.amax_acc_f32(reinterpret_cast<const float*>(p), C, acc, &lbad);
        else
          k.amax_acc_f16(reinterpret_cast<const uint16_t*>(p), C, acc, &lbad);
      }
    }
    if (lbad) bad.store(true);
  });
  if (bad.load()) throw_nonfinite();
  for (int64_t c = 0; c < C; ++c) {
    float m = 0.f;
    for (int64_t blk = 0; blk < nblocks; ++blk) m = std::max(m, part[static_cast<size_t>(blk * C + c)]);
    scales[c] = scale_of(m);
  }
  parallel_for(O, std::max<int64_t>(1, kSeg / std::max<int64_t>(C, 1)), [&](int64_t b, int64_t e) {
    for (int64_t o = b; o < e; ++o) {
      const char* p = at(x, o, 0, 0);
      if (x.dtype == FloatType::f32)
        k.quant_vec_f32(reinterpret_cast<const float*>(p), C, scales, q + o * C);
      else
        k.quant_vec_f16(reinterpret_cast<const uint16_t*>(p), C, scales, q + o * C);
    }
  });
}

}  // namespace

void quantize_int8(const View3& x, int8_t* q, float* scales, CpuTarget target) {
  if (x.outer < 0 || x.channels < 0 || x.inner < 0) throw std::invalid_argument("negative dimension");
  if (x.channels == 0) return;
  if (x.outer == 0 || x.inner == 0) {
    for (int64_t c = 0; c < x.channels; ++c) scales[c] = 1.f;  // an empty channel is all zeros
    return;
  }
  const RowKernels& k = kernels_for(target);
  if (x.inner == 1 && x.s_channel == 1 && x.channels > 1)
    quantize_columns(x, q, scales, k);
  else if (x.inner == 1) {
    // A single value per (outer, channel) row with strided channels: treat outer as the run.
    View3 t{x.data, x.dtype, 1, x.channels, x.outer, 0, x.s_channel, x.s_outer};
    std::vector<int8_t> tq(static_cast<size_t>(x.channels * x.outer));
    quantize_runs(t, tq.data(), scales, k);
    for (int64_t o = 0; o < x.outer; ++o)
      for (int64_t c = 0; c < x.channels; ++c) q[o * x.channels + c] = tq[static_cast<size_t>(c * x.outer + o)];
  } else {
    quantize_runs(x, q, scales, k);
  }
}

void dequantize_int8(const int8_t* q, const float* scales, int64_t outer, int64_t channels, int64_t inner,
                     float* out, CpuTarget target) {
  if (outer <= 0 || channels <= 0 || inner <= 0) return;
  const RowKernels& k = kernels_for(target);
  if (inner == 1) {
    parallel_for(outer, std::max<int64_t>(1, kSeg / channels), [&](int64_t b, int64_t e) {
      for (int64_t o = b; o < e; ++o) k.dequant_vec(q + o * channels, channels, scales, out + o * channels);
    });
    return;
  }
  const int64_t segs = (inner + kSeg - 1) / kSeg, runs = outer * channels;
  parallel_for(runs * segs, 1, [&](int64_t b, int64_t e) {
    for (int64_t t = b; t < e; ++t) {
      int64_t r = t / segs, s = t % segs, c = r % channels;
      int64_t i0 = s * kSeg, n = std::min(kSeg, inner - i0);
      k.dequant(q + r * inner + i0, n, scales[c], out + r * inner + i0);
    }
  });
}

}  // namespace quant
}  // namespace pyperfcore
