// Classification post-processing: top-k with softmax, softmax / log-softmax rows, multi-label
// thresholds in logit space. float16 and int8 rows are widened into a per-thread row buffer
// (L1-resident), so each input byte is read from memory once.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <vector>

#include "../common/threads.hpp"
#include "../quant/quant.hpp"
#include "prepost.hpp"
#include "prepost_kernels.hpp"

namespace pyperfcore {
namespace prepost {

namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

void check_logits(const Logits& x) {
  if (x.rows < 0 || x.cols < 0) throw std::invalid_argument("logits: negative shape");
  if (x.dtype < 0 || x.dtype > 2) throw std::invalid_argument("logits: dtype must be float32, float16 or int8");
  if (x.dtype == 2) {
    if (x.scales == nullptr || (x.n_scales != 1 && x.n_scales != x.cols))
      throw std::invalid_argument("int8 logits need a scale: one value or one per class");
    for (int64_t i = 0; i < x.n_scales; ++i)
      if (!(x.scales[i] > 0.f) || !std::isfinite(x.scales[i]))
        throw std::invalid_argument("int8 logits: scales must be positive and finite");
  }
}

// Row r as contiguous floats: the input itself (float32) or `buf` filled from it.
const float* row_floats(const Logits& x, int64_t r, std::vector<float>& buf) {
  const int64_t n = x.cols;
  if (x.dtype == 0) return static_cast<const float*>(x.data) + r * x.row_stride;
  buf.resize(static_cast<size_t>(n));
  if (x.dtype == 1) {
    const uint16_t* p = static_cast<const uint16_t*>(x.data) + r * x.row_stride;
    for (int64_t i = 0; i < n; ++i) buf[static_cast<size_t>(i)] = quant::half_to_float(p[i]);
  } else {
    const int8_t* p = static_cast<const int8_t*>(x.data) + r * x.row_stride;
    if (x.n_scales == 1) {
      const float s = x.scales[0];
      for (int64_t i = 0; i < n; ++i) buf[static_cast<size_t>(i)] = static_cast<float>(p[i]) * s;
    } else {
      for (int64_t i = 0; i < n; ++i) buf[static_cast<size_t>(i)] = static_cast<float>(p[i]) * x.scales[i];
    }
  }
  return buf.data();
}

// The k-th largest of n <= 32 values (1 <= k <= n) by insertion into a descending list: for the
// small k of top-k this is a few dozen compares, several times cheaper than std::nth_element.
float kth_largest(const float* v, int n, int64_t k) {
  float top[32];
  int64_t cnt = 0;
  for (int i = 0; i < n; ++i) {
    const float x = v[i];
    if (cnt == k && !(x > top[k - 1])) continue;
    int64_t pos = cnt < k ? cnt++ : k - 1;
    while (pos > 0 && top[pos - 1] < x) {
      top[pos] = top[pos - 1];
      --pos;
    }
    top[pos] = x;
  }
  return top[k - 1];
}

enum Bad : int { kOk = 0, kNan = 1, kPosInf = 2, kAllNegInf = 3 };

[[noreturn]] void throw_bad(int why) {
  if (why == kNan) throw std::invalid_argument("logits contain NaN");
  if (why == kPosInf) throw std::invalid_argument("logits contain +inf; softmax is undefined");
  throw std::invalid_argument("a row of logits is all -inf; softmax is undefined");
}

// Rows per task: about 2^18 values (some 50-100 us of work), so small batches run on the calling
// thread alone: waking the pool costs more than they take.
int64_t grain_rows(int64_t cols) { return std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(cols, 1)); }

}  // namespace

void topk(const Logits& x, int64_t k, bool softmax, float* values, int64_t* indices, CpuTarget target) {
  check_logits(x);
  if (k < 0 || k > x.cols)
    throw std::invalid_argument("top-k: k = " + std::to_string(k) + " must be in [0, " + std::to_string(x.cols) + "]");
  if (x.rows == 0 || x.cols == 0) return;
  const detail::RowOps& ops = detail::row_ops(target);
  std::atomic<int> bad{kOk};
  const bool filter_ok = x.cols < INT32_MAX;
  parallel_for(x.rows, grain_rows(x.cols), [&](int64_t b, int64_t e) {
    std::vector<float> buf, cv;
    std::vector<int32_t> ci;
    std::vector<float> tv(static_cast<size_t>(k + 1));
    std::vector<int64_t> ti(static_cast<size_t>(k + 1));
    for (int64_t r = b; r < e; ++r) {
      const float* row = row_floats(x, r, buf);
      const int64_t n = x.cols;
      bool nan = false;
      float lanes[32];
      const int L = ops.lane_max(row, n, &nan, lanes);
      float m = -kInf;
      for (int j = 0; j < L; ++j) m = lanes[j] > m ? lanes[j] : m;
      if (nan) {
        bad.store(kNan);
        return;
      }
      if (m == kInf) {
        bad.store(kPosInf);
        return;
      }
      if (softmax && m == -kInf) {
        bad.store(kAllNegInf);
        return;
      }
      if (k == 0) continue;
      // Sorted (value desc, index asc) list of the best k so far. Candidates arrive in index
      // order, so a value equal to one in the list goes after it, and one equal to the k-th
      // is not better: ties keep the lower index.
      int64_t cnt = 0;
      auto insert = [&](float v, int64_t i) {
        if (cnt == k && !(v > tv[static_cast<size_t>(k - 1)])) return;
        int64_t pos = cnt < k ? cnt : k - 1;
        while (pos > 0 && tv[static_cast<size_t>(pos - 1)] < v) {
          tv[static_cast<size_t>(pos)] = tv[static_cast<size_t>(pos - 1)];
          ti[static_cast<size_t>(pos)] = ti[static_cast<size_t>(pos - 1)];
          --pos;
        }
        tv[static_cast<size_t>(pos)] = v;
        ti[static_cast<size_t>(pos)] = i;
        if (cnt < k) ++cnt;
      };
      if (filter_ok && k <= L) {
        // Threshold filter: the k-th largest lane maximum bounds the k-th largest value from
        // below, so every top-k element (and every tie of the k-th) is >= it; typically only
        // about 2k values pass, and one vector pass collects them.
        const float bound = kth_largest(lanes, L, k);
        cv.resize(static_cast<size_t>(n + 16));
        ci.resize(static_cast<size_t>(n + 16));
        const int64_t c = ops.collect_ge(row, n, bound, cv.data(), ci.data());
        for (int64_t j = 0; j < c; ++j) insert(cv[static_cast<size_t>(j)], ci[static_cast<size_t>(j)]);
      } else {
        for (int64_t i = 0; i < k; ++i) insert(row[i], i);
        int64_t i = k;
        while (i < n) {
          i = ops.next_greater(row, i, n, tv[static_cast<size_t>(k - 1)]);
          if (i >= n) break;
          insert(row[i], i);
          ++i;
        }
      }
      float* vo = values + r * k;
      int64_t* io = indices + r * k;
      if (softmax) {
        const float lse = m + std::log(ops.sum_exp(row, n, m));
        for (int64_t j = 0; j < k; ++j) vo[j] = std::exp(tv[static_cast<size_t>(j)] - lse);
      } else {
        for (int64_t j = 0; j < k; ++j) vo[j] = tv[static_cast<size_t>(j)];
      }
      for (int64_t j = 0; j < k; ++j) io[j] = ti[static_cast<size_t>(j)];
    }
  });
  if (bad.load() != kOk) throw_bad(bad.load());
}

void softmax_rows(const Logits& x, bool log_space, float* out, CpuTarget target) {
  check_logits(x);
  if (x.rows == 0 || x.cols == 0) return;
  const detail::RowOps& ops = detail::row_ops(target);
  std::atomic<int> bad{kOk};
  parallel_for(x.rows, grain_rows(x.cols), [&](int64_t b, int64_t e) {
    std::vector<float> buf;
    for (int64_t r = b; r < e; ++r) {
      const float* row = row_floats(x, r, buf);
      const int64_t n = x.cols;
      bool nan = false;
      const float m = ops.max_nan(row, n, &nan);
      int why = nan ? kNan : (m == kInf ? kPosInf : (m == -kInf ? kAllNegInf : kOk));
      if (why != kOk) {
        bad.store(why);
        return;
      }
      const float s = ops.sum_exp(row, n, m);
      float* o = out + r * n;
      if (log_space) {
        const float lse = m + std::log(s);
        for (int64_t i = 0; i < n; ++i) o[i] = row[i] - lse;
      } else {
        ops.exp_scale(row, n, m, 1.f / s, o);
      }
    }
  });
  if (bad.load() != kOk) throw_bad(bad.load());
}

void sigmoid_threshold(const Logits& x, double logit_threshold, uint8_t* mask, CpuTarget target) {
  check_logits(x);
  if (std::isnan(logit_threshold)) throw std::invalid_argument("sigmoid_threshold: threshold is NaN");
  if (x.rows == 0 || x.cols == 0) return;
  // x > t in exact arithmetic, for float x: x > t  <=>  x > the largest float <= t.
  float tf = static_cast<float>(logit_threshold);
  if (static_cast<double>(tf) > logit_threshold) tf = std::nextafter(tf, -kInf);
  std::atomic<int> bad{kOk};
  parallel_for(x.rows, grain_rows(x.cols), [&](int64_t b, int64_t e) {
    std::vector<float> buf;
    for (int64_t r = b; r < e; ++r) {
      const float* row = row_floats(x, r, buf);
      uint8_t* o = mask + r * x.cols;
      bool nan = false;
      for (int64_t i = 0; i < x.cols; ++i) {
        nan |= row[i] != row[i];
        o[i] = row[i] > tf ? 1 : 0;
      }
      if (nan) {
        bad.store(kNan);
        return;
      }
    }
  });
  if (bad.load() != kOk) throw_bad(bad.load());
}

}  // namespace prepost
}  // namespace pyperfcore
