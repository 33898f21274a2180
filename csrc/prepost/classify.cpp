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

// Row r as contiguous floats: the input itself (float32) or `buf` (n values) filled from it.
const float* row_floats(const Logits& x, const detail::RowOps& ops, int64_t r, float* buf) {
  if (x.dtype == 0) return static_cast<const float*>(x.data) + r * x.row_stride;
  const int64_t item = x.dtype == 1 ? 2 : 1;
  ops.widen(static_cast<const char*>(x.data) + r * x.row_stride * item, x.dtype, x.cols, x.scales, x.n_scales, buf);
  return buf;
}

[[noreturn]] void throw_bad(int why) {
  if (why == detail::kScanNan) throw std::invalid_argument("logits contain NaN");
  if (why == detail::kScanPosInf) throw std::invalid_argument("logits contain +inf; softmax is undefined");
  throw std::invalid_argument("a row of logits is all -inf; softmax is undefined");
}

// Rows per task. Below 2^18 values (some 60-80 us of top-k or softmax work on one core) the
// calling thread does it all: waking the pool costs microseconds, and on this project's shared
// 2-core machine a second thread did not lower the median at [256, 1000] (see docs/prepost.md).
// Above, tasks of about 2^15 values: the pool hands them out one at a time, so when the other
// cores are busy the caller simply takes more of them.
int64_t grain_rows(int64_t rows, int64_t cols) {
  const int64_t c = std::max<int64_t>(cols, 1);
  if (rows * c < (int64_t{1} << 18)) return std::max<int64_t>(rows, 1);
  return std::max<int64_t>(1, (int64_t{1} << 15) / c);
}

// Sorted (value desc, index asc) list of the best k so far, written in place in the output row,
// each with a payload (its position in the candidate list). Candidates arrive in index order, so
// a value equal to one in the list goes after it, and one equal to the k-th is not better: ties
// keep the lower index.
struct TopList {
  float* v;
  int64_t* i;
  int32_t* p;
  int64_t k, cnt = 0;
  inline void insert(float x, int64_t j, int32_t payload) {
    if (cnt == k && !(x > v[k - 1])) return;
    int64_t pos = cnt < k ? cnt++ : k - 1;
    while (pos > 0 && v[pos - 1] < x) {
      v[pos] = v[pos - 1];
      i[pos] = i[pos - 1];
      p[pos] = p[pos - 1];
      --pos;
    }
    v[pos] = x;
    i[pos] = j;
    p[pos] = payload;
  }
};

int bad_of(bool nan, float m, bool softmax) {
  if (nan) return detail::kScanNan;
  if (m == kInf) return detail::kScanPosInf;
  return softmax && m == -kInf ? detail::kScanAllNegInf : detail::kScanOk;
}

}  // namespace

void topk(const Logits& x, int64_t k, bool softmax, float* values, int64_t* indices, CpuTarget target) {
  check_logits(x);
  if (k < 0 || k > x.cols)
    throw std::invalid_argument("top-k: k = " + std::to_string(k) + " must be in [0, " + std::to_string(x.cols) + "]");
  if (x.rows == 0 || x.cols == 0) return;
  const detail::RowOps& ops = detail::row_ops(target);
  std::atomic<int> bad{detail::kScanOk};
  const int64_t n = x.cols;
  // The scan collects candidates with int32 indices and takes 1 <= k <= the target's lanes; other
  // k walk the row with next_greater.
  const bool scan = k >= 1 && k <= ops.lanes && n < INT32_MAX - 64;
  parallel_for(x.rows, grain_rows(x.rows, n), [&](int64_t b, int64_t e) {
    std::vector<float> buf(x.dtype == 0 ? 0 : static_cast<size_t>(n));
    std::vector<float> cv(scan ? static_cast<size_t>(n + 32) : 0), ce(scan ? static_cast<size_t>(n + 32) : 0);
    std::vector<int32_t> ci(scan ? static_cast<size_t>(n + 32) : 0);
    std::vector<int32_t> slot(static_cast<size_t>(std::max<int64_t>(k, 1)));
    for (int64_t r = b; r < e; ++r) {
      if (bad.load(std::memory_order_relaxed) != detail::kScanOk) return;
      const float* row = row_floats(x, ops, r, buf.data());
      float* vo = values + r * k;
      int64_t* io = indices + r * k;
      if (scan) {
        const float* next = x.dtype == 0 && r + 1 < e ? row + x.row_stride : nullptr;
        const detail::TopkScan sc = ops.topk_scan(row, n, k, softmax, cv.data(), ci.data(), ce.data(), next);
        if (sc.status != detail::kScanOk) {
          bad.store(sc.status);
          return;
        }
        TopList top{vo, io, slot.data(), k};
        for (int64_t j = 0; j < sc.count; ++j)
          top.insert(cv[static_cast<size_t>(j)], ci[static_cast<size_t>(j)], static_cast<int32_t>(j));
        // The probabilities from the exps the sum was made of: exp(x - max) / sum, accurate for
        // logits of any magnitude (x - max is exact or nearly for the top values).
        if (softmax)
          for (int64_t j = 0; j < k; ++j) vo[j] = ce[static_cast<size_t>(slot[j])] / sc.sum;
        continue;
      }
      // k = 0 or k > lanes: walk the row with next_greater.
      bool nan = false;
      const float m = ops.max_nan(row, n, &nan);
      const int why = bad_of(nan, m, softmax);
      if (why != detail::kScanOk) {
        bad.store(why);
        return;
      }
      if (k == 0) continue;
      TopList top{vo, io, slot.data(), k};
      for (int64_t i = 0; i < k; ++i) top.insert(row[i], i, 0);
      for (int64_t i = k; i < n; ++i) {
        i = ops.next_greater(row, i, n, vo[k - 1]);
        if (i >= n) break;
        top.insert(row[i], i, 0);
      }
      if (softmax) {  // the numerators in double, as the scan's are corrected (TwoSum)
        const double s = ops.sum_exp(row, n, m);
        for (int64_t j = 0; j < k; ++j) vo[j] = static_cast<float>(std::exp(static_cast<double>(vo[j]) - m) / s);
      }
    }
  });
  if (bad.load() != detail::kScanOk) throw_bad(bad.load());
}

void softmax_rows(const Logits& x, bool log_space, float* out, CpuTarget target) {
  check_logits(x);
  if (x.rows == 0 || x.cols == 0) return;
  const detail::RowOps& ops = detail::row_ops(target);
  std::atomic<int> bad{detail::kScanOk};
  const int64_t n = x.cols;
  parallel_for(x.rows, grain_rows(x.rows, n), [&](int64_t b, int64_t e) {
    std::vector<float> buf(x.dtype == 0 ? 0 : static_cast<size_t>(n));
    for (int64_t r = b; r < e; ++r) {
      if (bad.load(std::memory_order_relaxed) != detail::kScanOk) return;
      const float* row = row_floats(x, ops, r, buf.data());
      bool nan = false;
      const float m = ops.max_nan(row, n, &nan);
      const int why = bad_of(nan, m, true);
      if (why != detail::kScanOk) {
        bad.store(why);
        return;
      }
      float* o = out + r * n;
      if (log_space) {
        // x - lse with lse in double, subtracted as two floats (hi + lo).
        const double lse = static_cast<double>(m) + std::log(static_cast<double>(ops.sum_exp(row, n, m)));
        const float hi = static_cast<float>(lse);
        ops.sub2(row, n, hi, static_cast<float>(lse - static_cast<double>(hi)), o);
      } else {
        // One exp pass: store exp(x - m), then scale the (L1-resident) row by 1 / sum.
        const float s = ops.exp_store(row, n, m, o);
        ops.scale(o, n, 1.f / s);
      }
    }
  });
  if (bad.load() != detail::kScanOk) throw_bad(bad.load());
}

void sigmoid_threshold(const Logits& x, double logit_threshold, uint8_t* mask, CpuTarget target) {
  check_logits(x);
  if (std::isnan(logit_threshold)) throw std::invalid_argument("sigmoid_threshold: threshold is NaN");
  if (x.rows == 0 || x.cols == 0) return;
  // x > t in exact arithmetic, for float x: x > t  <=>  x > the largest float <= t.
  float tf = static_cast<float>(logit_threshold);
  if (static_cast<double>(tf) > logit_threshold) tf = std::nextafter(tf, -kInf);
  const detail::RowOps& ops = detail::row_ops(target);
  std::atomic<int> bad{detail::kScanOk};
  parallel_for(x.rows, grain_rows(x.rows, x.cols), [&](int64_t b, int64_t e) {
    std::vector<float> buf(x.dtype == 0 ? 0 : static_cast<size_t>(x.cols));
    for (int64_t r = b; r < e; ++r) {
      const float* row = row_floats(x, ops, r, buf.data());
      uint8_t* o = mask + r * x.cols;
      bool nan = false;
      for (int64_t i = 0; i < x.cols; ++i) {
        nan |= row[i] != row[i];
        o[i] = row[i] > tf ? 1 : 0;
      }
      if (nan) {
        bad.store(detail::kScanNan);
        return;
      }
    }
  });
  if (bad.load() != detail::kScanOk) throw_bad(bad.load());
}

}  // namespace prepost
}  // namespace pyperfcore
