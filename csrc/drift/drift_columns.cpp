// Helpers that let detect_drift handle a whole frame natively: the capped distinct-value scan
// that picks each numeric column's test, and Wasserstein over many columns at once.
#include <algorithm>
#include <exception>
#include <limits>
#include <mutex>
#include <numeric>

#include "../common/threads.hpp"
#include "drift.hpp"

namespace pyperfcore {
namespace drift {

bool small_support(const double* a, int64_t na, const double* b, int64_t nb, int64_t cap, std::vector<double>& values,
                   std::vector<int64_t>& ca, std::vector<int64_t>& cb) {
  values.clear();
  ca.clear();
  cb.clear();
  if (cap < 0) return false;
  std::vector<int64_t> cnt[2];
  if (cap <= 8) {
    // Up to 8 values: compare each value with all 8 slots (empty slots hold NaN, which matches
    // nothing) and select the hit without branches; only a new value branches.
    double slot[8];
    int64_t c8[2][8] = {};
    int used = 0;
    for (double& v : slot) v = std::numeric_limits<double>::quiet_NaN();
    for (int s = 0; s < 2; ++s) {
      const double* x = s == 0 ? a : b;
      const int64_t n = s == 0 ? na : nb;
      for (int64_t i = 0; i < n; ++i) {
        const double v = x[i];
        int j = -1;
        for (int k = 0; k < 8; ++k) j = slot[k] == v ? k : j;
        if (j < 0) {
          if (used >= cap || v != v) return false;
          slot[used] = v;
          j = used++;
        }
        ++c8[s][j];
      }
    }
    values.assign(slot, slot + used);
    cnt[0].assign(c8[0], c8[0] + used);
    cnt[1].assign(c8[1], c8[1] + used);
  } else {
    size_t last = 0;  // runs of equal values hit the same slot without a search
    for (int s = 0; s < 2; ++s) {
      const double* x = s == 0 ? a : b;
      const int64_t n = s == 0 ? na : nb;
      for (int64_t i = 0; i < n; ++i) {
        const double v = x[i];
        if (last < values.size() && values[last] == v) {
          ++cnt[s][last];
          continue;
        }
        size_t j = 0;
        while (j < values.size() && values[j] != v) ++j;
        if (j == values.size()) {
          if (static_cast<int64_t>(values.size()) >= cap) return false;
          values.push_back(v);
          cnt[0].resize(values.size(), 0);
          cnt[1].resize(values.size(), 0);
        }
        ++cnt[s][j];
        last = j;
      }
    }
  }
  std::vector<size_t> order(values.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::sort(order.begin(), order.end(), [&](size_t x, size_t y) { return values[x] < values[y]; });
  std::vector<double> sorted(values.size());
  ca.resize(values.size());
  cb.resize(values.size());
  for (size_t i = 0; i < order.size(); ++i) {
    sorted[i] = values[order[i]];
    ca[i] = cnt[0][order[i]];
    cb[i] = cnt[1][order[i]];
  }
  values.swap(sorted);
  return true;
}

void wasserstein_many(const double* const* a, const int64_t* na, const double* const* b, const int64_t* nb, int64_t k,
                      double* out, CpuTarget t) {
  std::exception_ptr first;
  std::mutex mu;
  parallel_for(k, 1, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) {
      try {
        out[i] = wasserstein(a[i], na[i], b[i], nb[i], t, 0);
      } catch (...) {
        std::lock_guard<std::mutex> g(mu);
        if (!first) first = std::current_exception();
      }
    }
  });
  if (first) std::rethrow_exception(first);
}

}  // namespace drift
}  // namespace pyperfcore
