// Fused attention: per (batch, head) the keys are transposed once into [D, T] so that a query's
// T scores come out of D broadcast-FMAs over vectors of keys (no horizontal reductions), then a
// max / exp / sum softmax over the row and T broadcast-FMAs over the value rows. Sizes of serving
// encoders (T of tens to hundreds, D of 32-128) keep both in L1.
#include "attention.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "../common/threads.hpp"
#include "simd_exp.hpp"

namespace pyperfcore {
namespace quant {
namespace {

struct Head {
  const float *q, *k, *v;
  const float* mask;  // [T] additive, or null
  float* out;         // out[t * H * D + d] for this head
  int64_t out_st;     // H * D
};

// Plain C++ (every target but AVX-512): the same algorithm, libm exp.
void head_scalar(const Head& h, AttnStrides qs, AttnStrides ks, AttnStrides vs, int64_t T, int64_t D, float scale,
                 std::vector<float>& s) {
  s.resize(static_cast<size_t>(T));
  for (int64_t t = 0; t < T; ++t) {
    const float* qt = h.q + t * qs.t;
    float m = -std::numeric_limits<float>::infinity();
    for (int64_t j = 0; j < T; ++j) {
      const float* kj = h.k + j * ks.t;
      float acc = 0.f;
      for (int64_t d = 0; d < D; ++d) acc += qt[d] * kj[d];
      s[j] = acc * scale + (h.mask ? h.mask[j] : 0.f);
      m = std::max(m, s[j]);
    }
    float* o = h.out + t * h.out_st;
    std::fill(o, o + D, 0.f);
    if (m == -std::numeric_limits<float>::infinity()) continue;  // every key masked: 0, as torch
    float sum = 0.f;
    for (int64_t j = 0; j < T; ++j) {
      s[j] = std::exp(s[j] - m);
      sum += s[j];
    }
    for (int64_t j = 0; j < T; ++j) {
      const float* vj = h.v + j * vs.t;
      const float p = s[j] / sum;
      for (int64_t d = 0; d < D; ++d) o[d] += p * vj[d];
    }
  }
}

#if defined(__x86_64__)
#define PFC_ATT __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
inline __mmask16 tail(int64_t n) { return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u); }

// Queries in groups of kQB: every FMA chain (a query's 16 scores, a query's 16 output dims) is
// independent of the other queries', so kQB chains run side by side instead of one latency-bound
// chain per query. A short last group repeats the last query and drops its copies.
constexpr int kQB = 8;
PFC_ATT void head_avx512(const Head& h, AttnStrides qs, AttnStrides ks, AttnStrides vs, int64_t T, int64_t D,
                         float scale, std::vector<float>& kt, std::vector<float>& s) {
  const int64_t Tp = (T + 15) / 16 * 16;
  kt.resize(static_cast<size_t>(D * Tp));
  s.resize(static_cast<size_t>(kQB * Tp));
  for (int64_t j = 0; j < T; ++j)  // keys transposed: kt[d * Tp + j] = k[j, d]
    for (int64_t d = 0; d < D; ++d) kt[static_cast<size_t>(d * Tp + j)] = h.k[j * ks.t + d];
  const float ninf_f = -std::numeric_limits<float>::infinity();
  const __m512 ninf = _mm512_set1_ps(ninf_f), vscale = _mm512_set1_ps(scale);
  float* const sb = s.data();
  for (int64_t t0 = 0; t0 < T; t0 += kQB) {
    const int nq = static_cast<int>(std::min<int64_t>(kQB, T - t0));
    const float* qt[kQB];
    for (int i = 0; i < kQB; ++i) qt[i] = h.q + std::min<int64_t>(t0 + i, T - 1) * qs.t;
    // scores: s[i, j] = scale * sum_d q[i, d] kt[d, j] + mask[j], 16 keys per vector
    __m512 mx[kQB];
    for (int i = 0; i < kQB; ++i) mx[i] = ninf;
    for (int64_t j0 = 0; j0 < T; j0 += 16) {
      const __mmask16 mk = tail(T - j0);
      __m512 acc[kQB];
      for (int i = 0; i < kQB; ++i) acc[i] = _mm512_setzero_ps();
      for (int64_t d = 0; d < D; ++d) {
        const __m512 kv = _mm512_loadu_ps(&kt[d * Tp + j0]);
        for (int i = 0; i < kQB; ++i) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(qt[i][d]), kv, acc[i]);
      }
      const __m512 mv = h.mask ? _mm512_maskz_loadu_ps(mk, h.mask + j0) : _mm512_setzero_ps();
      for (int i = 0; i < kQB; ++i) {
        __m512 a = _mm512_mask_blend_ps(mk, ninf, _mm512_add_ps(_mm512_mul_ps(acc[i], vscale), mv));
        _mm512_storeu_ps(sb + i * Tp + j0, a);  // positions beyond T hold -inf and never count
        mx[i] = _mm512_max_ps(mx[i], a);
      }
    }
    // softmax numerators in place; exp(-inf - m) must be 0 and the polynomial clamps its input,
    // so masked lanes are zeroed explicitly. All keys masked: m = -inf, every numerator 0 and the
    // output 0, as torch's CPU attention gives.
    float inv[kQB];
    for (int i = 0; i < kQB; ++i) {
      const float m = _mm512_reduce_max_ps(mx[i]);
      const __m512 vm = _mm512_set1_ps(m);
      __m512 sum = _mm512_setzero_ps();
      for (int64_t j0 = 0; j0 < Tp; j0 += 16) {
        const __m512 x = _mm512_loadu_ps(sb + i * Tp + j0);
        const __mmask16 live = _mm512_cmp_ps_mask(x, ninf, _CMP_NEQ_OQ);
        const __m512 e = _mm512_maskz_mov_ps(live, detail::a5_exp(_mm512_sub_ps(x, vm)));
        _mm512_storeu_ps(sb + i * Tp + j0, e);
        sum = _mm512_add_ps(sum, e);
      }
      inv[i] = m == ninf_f ? 0.f : 1.f / _mm512_reduce_add_ps(sum);
    }
    // out[i, :] = inv[i] * sum_j p[i, j] v[j, :], 16 dims per vector
    for (int64_t d0 = 0; d0 < D; d0 += 16) {
      const __mmask16 md = tail(D - d0);
      __m512 acc[kQB];
      for (int i = 0; i < kQB; ++i) acc[i] = _mm512_setzero_ps();
      for (int64_t j = 0; j < T; ++j) {
        const __m512 vv = _mm512_maskz_loadu_ps(md, h.v + j * vs.t + d0);
        for (int i = 0; i < kQB; ++i) acc[i] = _mm512_fmadd_ps(_mm512_set1_ps(sb[i * Tp + j]), vv, acc[i]);
      }
      for (int i = 0; i < nq; ++i)
        _mm512_mask_storeu_ps(h.out + (t0 + i) * h.out_st + d0, md, _mm512_mul_ps(acc[i], _mm512_set1_ps(inv[i])));
    }
  }
}
#endif

}  // namespace

void attention_f32(const float* q, AttnStrides qs, const float* k, AttnStrides ks, const float* v, AttnStrides vs,
                   int64_t B, int64_t H, int64_t T, int64_t D, const float* mask, int64_t mask_sb, float scale,
                   float* out, CpuTarget target, int threads) {
  if (B < 0 || H < 0 || T < 0 || D < 0) throw std::invalid_argument("attention: negative size");
  if (B == 0 || H == 0 || T == 0 || D == 0) {
    if (B * T * H * D) std::fill(out, out + B * T * H * D, 0.f);
    return;
  }
  const bool wide = target == CpuTarget::avx512 || target == CpuTarget::avx512_vnni;
  const int64_t n = B * H;
  if (threads <= 0) threads = get_num_threads();
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(threads, n));
  auto run = [&](int64_t lo, int64_t hi) {
    thread_local std::vector<float> kt, s;
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t b = i / H, hh = i % H;
      Head h{q + b * qs.b + hh * qs.h, k + b * ks.b + hh * ks.h, v + b * vs.b + hh * vs.h,
             mask ? mask + b * mask_sb : nullptr, out + (b * T * H + hh) * D, H * D};
#if defined(__x86_64__)
      if (wide) {
        head_avx512(h, qs, ks, vs, T, D, scale, kt, s);
        continue;
      }
#endif
      (void)wide;
      head_scalar(h, qs, ks, vs, T, D, scale, s);
    }
  };
  if (chunks == 1) {
    run(0, n);
    return;
  }
  parallel_for(chunks, 1, [&](int64_t b, int64_t e) {
    for (int64_t c = b; c < e; ++c) run(c * n / chunks, (c + 1) * n / chunks);
  });
}

}  // namespace quant
}  // namespace pyperfcore
