// Embedding normalization / INT8 compression and batched non-maximum suppression.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "../common/threads.hpp"
#include "prepost.hpp"

namespace pyperfcore {
namespace prepost {

namespace {

// sum of squares in float32 with 16 independent accumulators (vectorizable, and the order
// the reference's tolerance allows).
inline float sumsq(const float* x, int64_t n, bool* bad) {
  float acc[16] = {0};
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    for (int j = 0; j < 16; ++j) acc[j] += x[i + j] * x[i + j];
  float s = 0.f;
  for (; i < n; ++i) s += x[i] * x[i];
  for (float a : acc) s += a;
  if (!std::isfinite(s)) {
    for (int64_t j = 0; j < n; ++j)
      if (!std::isfinite(x[j])) *bad = true;
  }
  return s;
}

inline float amax_of(const float* x, int64_t n) {
  float m = 0.f;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, std::fabs(x[i]));
  return m;
}

}  // namespace

void l2_normalize(const float* x, int64_t rows, int64_t dim, int64_t row_stride, float eps, float* out,
                  CpuTarget target) {
  if (rows < 0 || dim < 0) throw std::invalid_argument("l2_normalize: negative shape");
  if (!(eps >= 0.f)) throw std::invalid_argument("l2_normalize: eps must be >= 0");
  std::atomic<bool> bad{false};
  parallel_for(rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(dim, 1)), [&](int64_t b, int64_t e) {
    bool lbad = false;
    for (int64_t r = b; r < e; ++r) {
      const float* p = x + r * row_stride;
      const float d = std::max(std::sqrt(sumsq(p, dim, &lbad)), eps);
      float* o = out + r * dim;
      for (int64_t i = 0; i < dim; ++i) o[i] = p[i] / d;
    }
    if (lbad) bad.store(true);
  });
  if (bad.load()) throw std::invalid_argument("l2_normalize: embeddings contain NaN or infinity");
}

void compress_embeddings(const float* x, int64_t rows, int64_t dim, int64_t row_stride, bool normalize, float eps,
                         int8_t* q, float* scales, CpuTarget target) {
  if (rows < 0 || dim < 0) throw std::invalid_argument("compress_embeddings: negative shape");
  std::atomic<bool> bad{false};
  parallel_for(rows, std::max<int64_t>(1, 8192 / std::max<int64_t>(dim, 1)), [&](int64_t b, int64_t e) {
    bool lbad = false;
    std::vector<float> v(static_cast<size_t>(dim));
    for (int64_t r = b; r < e; ++r) {
      const float* p = x + r * row_stride;
      const float ss = sumsq(p, dim, &lbad);
      if (lbad) break;
      if (normalize) {
        const float d = std::max(std::sqrt(ss), eps);
        for (int64_t i = 0; i < dim; ++i) v[static_cast<size_t>(i)] = p[i] / d;
      } else {
        std::copy(p, p + dim, v.begin());
      }
      const float a = amax_of(v.data(), dim);
      const float s = a > 0.f ? a / 127.f : 1.f;
      scales[r] = s;
      int8_t* o = q + r * dim;
      for (int64_t i = 0; i < dim; ++i) {
        float t = v[static_cast<size_t>(i)] / s;
        t = t < -127.f ? -127.f : (t > 127.f ? 127.f : t);
        o[i] = static_cast<int8_t>(std::nearbyint(t));
      }
    }
    if (lbad) bad.store(true);
  });
  if (bad.load()) throw std::invalid_argument("compress_embeddings: embeddings contain NaN or infinity");
}

std::vector<int64_t> batched_nms(const float* boxes, const float* scores, const int64_t* classes, int64_t n,
                                 float iou_threshold) {
  if (n < 0) throw std::invalid_argument("batched_nms: negative count");
  if (std::isnan(iou_threshold)) throw std::invalid_argument("batched_nms: iou_threshold is NaN");
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(scores[i])) throw std::invalid_argument("batched_nms: scores contain NaN");
    for (int j = 0; j < 4; ++j)
      if (!std::isfinite(boxes[4 * i + j])) throw std::invalid_argument("batched_nms: boxes contain NaN or infinity");
  }
  // Order: by class, then score descending, then index: each class is a contiguous run.
  std::vector<int64_t> order(static_cast<size_t>(n));
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    if (classes[a] != classes[b]) return classes[a] < classes[b];
    if (scores[a] != scores[b]) return scores[a] > scores[b];
    return a < b;
  });
  std::vector<int64_t> kept;
  kept.reserve(static_cast<size_t>(n));
  // Kept boxes of the current class, packed for the inner loop: x1, y1, x2, y2, area.
  std::vector<float> kb;
  int64_t run_start = 0;
  while (run_start < n) {
    int64_t run_end = run_start;
    const int64_t cls = classes[order[static_cast<size_t>(run_start)]];
    while (run_end < n && classes[order[static_cast<size_t>(run_end)]] == cls) ++run_end;
    kb.clear();
    for (int64_t t = run_start; t < run_end; ++t) {
      const int64_t i = order[static_cast<size_t>(t)];
      const float* bi = boxes + 4 * i;
      const float x1 = bi[0], y1 = bi[1], x2 = bi[2], y2 = bi[3];
      const float area = (x2 - x1) * (y2 - y1);
      bool keep = true;
      const int64_t nk = static_cast<int64_t>(kb.size()) / 5;
      for (int64_t j = 0; j < nk; ++j) {
        const float* k = kb.data() + 5 * j;
        const float w = std::max(0.f, std::min(x2, k[2]) - std::max(x1, k[0]));
        const float h = std::max(0.f, std::min(y2, k[3]) - std::max(y1, k[1]));
        const float inter = w * h;
        // The same float expression as torchvision's CPU kernel (kept area + candidate area).
        const float iou = inter / (k[4] + area - inter);
        if (iou > iou_threshold) {
          keep = false;
          break;
        }
      }
      if (keep) {
        kept.push_back(i);
        kb.insert(kb.end(), {x1, y1, x2, y2, area});
      }
    }
    run_start = run_end;
  }
  std::sort(kept.begin(), kept.end(), [&](int64_t a, int64_t b) {
    if (scores[a] != scores[b]) return scores[a] > scores[b];
    return a < b;
  });
  return kept;
}

void pad_sequences(const int64_t* ids, const int64_t* offsets, int64_t n, int64_t length, int64_t pad_id,
                   bool keep_end, bool pad_left, int64_t* out_ids, uint8_t* mask) {
  if (n < 0 || length < 0) throw std::invalid_argument("pad_sequences: negative size");
  for (int64_t i = 0; i < n; ++i)
    if (offsets[i + 1] < offsets[i] || offsets[i] < 0)
      throw std::invalid_argument("pad_sequences: offsets must be non-decreasing and non-negative");
  parallel_for(n, std::max<int64_t>(1, 16384 / std::max<int64_t>(length, 1)), [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      const int64_t len = offsets[i + 1] - offsets[i], take = std::min(len, length);
      const int64_t* src = ids + offsets[i] + (keep_end ? len - take : 0);
      int64_t* o = out_ids + i * length;
      uint8_t* m = mask + i * length;
      const int64_t at = pad_left ? length - take : 0;
      for (int64_t j = 0; j < length; ++j) {
        o[j] = pad_id;
        m[j] = 0;
      }
      for (int64_t j = 0; j < take; ++j) {
        o[at + j] = src[j];
        m[at + j] = 1;
      }
    }
  });
}

void tabular_encode(const TabColumn* cols, int64_t ncols, int64_t rows, float* out) {
  int64_t width = 0;
  for (int64_t c = 0; c < ncols; ++c) {
    const TabColumn& t = cols[c];
    if (t.kind < 0 || t.kind > 2) throw std::invalid_argument("tabular_encode: unknown column kind");
    if (t.kind == 1 ? t.n_out < 0 : t.n_out != 1) throw std::invalid_argument("tabular_encode: bad column width");
    if ((t.kind == 0 && t.values == nullptr) || (t.kind != 0 && t.codes == nullptr))
      throw std::invalid_argument("tabular_encode: missing column data");
    if (t.kind == 0 && !(t.std > 0.0)) throw std::invalid_argument("tabular_encode: std must be > 0");
    width += t.n_out;
  }
  std::atomic<bool> bad{false};
  parallel_for(rows, 256, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r) {
      float* o = out + r * width;
      for (int64_t c = 0; c < ncols; ++c) {
        const TabColumn& t = cols[c];
        if (t.kind == 0) {
          double v = t.values[r];
          if (std::isnan(v)) v = t.fill;
          v = (v - t.mean) / t.std;
          v = v < t.lo ? t.lo : (v > t.hi ? t.hi : v);
          *o++ = static_cast<float>(v);
        } else {
          const int32_t code = t.codes[r];
          if (code < -1 || (t.kind == 1 && code >= t.n_out)) bad.store(true);
          if (t.kind == 1) {
            for (int64_t j = 0; j < t.n_out; ++j) o[j] = 0.f;
            if (code >= 0 && code < t.n_out) o[code] = 1.f;
            o += t.n_out;
          } else {
            *o++ = code >= 0 ? static_cast<float>(code) : static_cast<float>(t.fill);
          }
        }
      }
    }
  });
  if (bad.load()) throw std::invalid_argument("tabular_encode: a category code is out of range");
}

}  // namespace prepost
}  // namespace pyperfcore
