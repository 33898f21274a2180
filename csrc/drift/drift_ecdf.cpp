// Two-sample ECDF statistics (KS, Wasserstein-1) on unsorted samples without sorting them.
//
// Both samples are counted into K value buckets through a monotone map (x < y implies
// bucket(x) <= bucket(y); linear in x between robust extremes of a strided sample, clamped at
// both ends). The counts give the exact ECDFs F_a, F_b at the end of every bucket, and bounds on
// F_a - F_b inside it: between A_{j-1}/na - B_j/nb and A_j/na - B_{j-1}/nb.
// - KS: the value at a bucket's last element is attained, so the best bucket ends bound the
//   extremes from one side; only buckets whose inner bound reaches past them can hold an
//   extreme. Those few are gathered, sorted and walked exactly as scipy evaluates
//   cdf1 - cdf2 (same divisions and subtraction), so statistic, location and sign are
//   bit-identical to the full merge.
// - Wasserstein: in a bucket where F_a - F_b cannot change sign, the integral of |F_a - F_b|
//   over the bucket follows from the counts and the sum of the values' offsets inside it
//   (integral of #{x_i <= x} over [L, U] = sum (U - x_i)); the buckets where the sign may change
//   and the two unbounded end buckets are gathered, sorted and integrated exactly. The integral
//   runs in t = (x - lo) * scale and is divided by scale at the end.
// Small samples, degenerate value ranges (a sample of the data with one value) and, for
// Wasserstein, infinite values take the plain path: sort both, walk.
#include <algorithm>
#include <cmath>
#include <exception>
#include <limits>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "../common/threads.hpp"
#include "drift.hpp"
#include "drift_kernels.hpp"

namespace pyperfcore {
namespace drift {

namespace {
using detail::BucketKernels;
using detail::BucketMap;
using detail::KSExtremes;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kAutoMin = int64_t(1) << 13;  // na + nb below this: sort (automatic choice)
constexpr int64_t kLeaf = 1024;                  // a bucket with fewer values is sorted, not split
constexpr int kMaxDepth = 4;                     // levels of buckets inside buckets
constexpr int64_t kBlock = int64_t(1) << 17;    // values per pass-2 task (fixed: sums do not
                                                // depend on the thread count)

// parallel_for whose body may throw (allocations): the pool's tasks must not, so the first
// exception is kept and rethrown on the calling thread after the loop.
template <class Fn>
void parallel_for_safe(int64_t n, int64_t grain, const Fn& fn) {
  std::exception_ptr first;
  std::mutex mu;
  parallel_for(n, grain, [&](int64_t s, int64_t e) {
    try {
      fn(s, e);
    } catch (...) {
      std::lock_guard<std::mutex> g(mu);
      if (!first) first = std::current_exception();
    }
  });
  if (first) std::rethrow_exception(first);
}

void check_sizes(int64_t na, int64_t nb, const char* what) {
  if (na <= 0 || nb <= 0) throw std::invalid_argument(std::string(what) + ": samples must not be empty");
  if (static_cast<uint64_t>(na) >= (uint64_t(1) << 32) || static_cast<uint64_t>(nb) >= (uint64_t(1) << 32))
    throw std::invalid_argument(std::string(what) + ": samples of 2^32 values or more are not supported");
}

[[noreturn]] void nan_error(const char* what) {
  throw std::invalid_argument(std::string(what) + ": input contains NaN");
}

void sorted_copies(const double* a, int64_t na, const double* b, int64_t nb, std::vector<double>& sa,
                   std::vector<double>& sb, const char* what) {
  for (int64_t i = 0; i < na; ++i)
    if (a[i] != a[i]) nan_error(what);
  for (int64_t i = 0; i < nb; ++i)
    if (b[i] != b[i]) nan_error(what);
  sa.assign(a, a + na);
  sb.assign(b, b + nb);
  parallel_for_safe(2, 1, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) {
      std::vector<double>& v = i == 0 ? sa : sb;
      if (v.size() > 4096)
        sort_f64(v.data(), static_cast<int64_t>(v.size()), v.data());  // LSD radix: ~2x std::sort here
      else
        std::sort(v.begin(), v.end());
    }
  });
}

// About 32 values per bucket, at most 2^16 buckets (the count tables stay in L2).
int64_t auto_buckets(int64_t total) {
  int64_t k = 64;
  while (k < (int64_t(1) << 16) && k * 32 < total) k <<= 1;
  return k;
}

struct Plan {
  BucketMap m;
  int64_t K = 0;
  bool ok = false;
  bool ties = false;  // the sample repeats values: track bucket extremes (one-valued buckets)
};

// Buckets 1..K-2 cover a core [lo, hi] of the values, from a strided sample: its 1/256 and
// 255/256 quantiles, or, when those are far apart compared with the 1/16 and 15/16 ones (heavy
// tails: Cauchy, log-normal), the latter, so that the bulk of the mass gets fine buckets; and
// the quartiles when even that core is over 8x wider than them (log-normal sigma 3: 13x). A
// quartile core costs where the end buckets then hold an extreme and are split again (Cauchy,
// 5x: measured 10 ms with the 1/16 core, 18 ms with the quartiles).
// Buckets 0 and K-1 take everything beyond the core (they are split again when they matter).
// A sample with one value falls back to the exact extremes of the data.
Plan make_plan(const double* a, int64_t na, const double* b, int64_t nb, int64_t K) {
  Plan p;
  std::vector<double> s;
  const int64_t per = std::min<int64_t>(4096, std::max<int64_t>(64, (na + nb) / 8));
  s.reserve(static_cast<size_t>(2 * per + 2));
  auto take = [&](const double* x, int64_t n) {
    const int64_t step = std::max<int64_t>(1, n / per);
    for (int64_t i = 0; i < n; i += step)
      if (std::fabs(x[i]) < kInf) s.push_back(x[i]);
  };
  take(a, na);
  take(b, nb);
  if (s.size() >= 2) {  // repeated values in ~1024 of the sample: 1/16 or more is tie-heavy data
    std::vector<double> d;
    for (size_t i = 0, step = std::max<size_t>(1, s.size() / 1024); i < s.size(); i += step) d.push_back(s[i]);
    std::sort(d.begin(), d.end());
    size_t dup = 0;
    for (size_t i = 1; i < d.size(); ++i) dup += d[i] == d[i - 1];
    p.ties = dup * 16 >= d.size();
  }
  double lo = kInf, hi = -kInf;
  if (s.size() >= 2) {
    auto quantile = [&](size_t r) {
      std::nth_element(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(r), s.end());
      return s[r];
    };
    const size_t n = s.size(), q256 = n / 256, q16 = n / 16, q4 = n / 4;
    lo = quantile(q256), hi = quantile(n - 1 - q256);
    const double lo16 = quantile(q16), hi16 = quantile(n - 1 - q16);
    if (hi16 > lo16 && hi - lo > 4 * (hi16 - lo16)) {
      lo = lo16, hi = hi16;
      const double lo4 = quantile(q4), hi4 = quantile(n - 1 - q4);
      if (hi4 > lo4 && hi - lo > 8 * (hi4 - lo4)) lo = lo4, hi = hi4;
    }
    if (!(hi > lo)) {
      lo = *std::min_element(s.begin(), s.end());
      hi = *std::max_element(s.begin(), s.end());
    }
  }
  if (!(hi > lo)) {  // one value in the sample (or none finite): the data's own extremes
    lo = kInf, hi = -kInf;
    for (const double* x : {a, b})
      for (int64_t i = 0, n = x == a ? na : nb; i < n; ++i)
        if (std::fabs(x[i]) < kInf) lo = std::min(lo, x[i]), hi = std::max(hi, x[i]);
  }
  if (!(hi > lo)) return p;
  const double range = hi - lo, scale = static_cast<double>(K - 2) / range;
  if (!(range < kInf) || !(scale > 0) || !(scale < kInf)) return p;
  p.m.lo = lo - 1.0 / scale;  // t(lo) ~ 1: bucket 0 holds only values below the core
  p.m.scale = scale;
  p.m.kmax = static_cast<double>(K - 1);
  if (!(std::fabs(p.m.lo) < kInf)) return p;
  p.K = K;
  p.ok = true;
  return p;
}

// Bucket counts of both samples (exact integers: independent of the thread split) and, for
// tie-heavy data, the extremes of each bucket over both samples, mm[2j] = min, mm[2j + 1] = max
// (a bucket whose min equals its max holds one value: its ECDFs need no sorting); mm is left
// empty otherwise.
int count_both(const BucketKernels& k, const Plan& p, const double* a, int64_t na, const double* b, int64_t nb,
               std::vector<uint32_t>& ca, std::vector<uint32_t>& cb, std::vector<double>& mm) {
  const int64_t K = p.K;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(get_num_threads(), (na + nb) / kBlock));
  std::vector<std::vector<uint32_t>> local(static_cast<size_t>(parts));
  std::vector<std::vector<double>> lmm(static_cast<size_t>(parts));
  std::vector<int> bad(static_cast<size_t>(parts), 0);
  parallel_for_safe(parts, 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      std::vector<uint32_t>& h = local[static_cast<size_t>(q)];
      std::vector<double>& e = lmm[static_cast<size_t>(q)];
      h.assign(static_cast<size_t>(2 * K), 0);
      if (p.ties) {
        e.resize(static_cast<size_t>(2 * K));
        for (int64_t j = 0; j < K; ++j) e[static_cast<size_t>(2 * j)] = kInf, e[static_cast<size_t>(2 * j + 1)] = -kInf;
      }
      const int64_t a0 = na * q / parts, a1 = na * (q + 1) / parts, b0 = nb * q / parts, b1 = nb * (q + 1) / parts;
      if (p.ties)
        bad[static_cast<size_t>(q)] = k.count_mm(a + a0, a1 - a0, p.m, h.data(), e.data()) |
                                      k.count_mm(b + b0, b1 - b0, p.m, h.data() + K, e.data());
      else
        bad[static_cast<size_t>(q)] = k.count(a + a0, a1 - a0, p.m, h.data()) | k.count(b + b0, b1 - b0, p.m, h.data() + K);
    }
  });
  ca.assign(local[0].begin(), local[0].begin() + K);
  cb.assign(local[0].begin() + K, local[0].end());
  mm.swap(lmm[0]);
  int flags = bad[0];
  for (size_t q = 1; q < local.size(); ++q) {
    flags |= bad[q];
    const uint32_t* h = local[q].data();
    const double* e = lmm[q].data();
    for (int64_t j = 0; j < K; ++j) {
      const size_t u = static_cast<size_t>(j);
      ca[u] += h[j], cb[u] += h[K + j];
      if (!p.ties) continue;
      mm[2 * u] = std::min(mm[2 * u], e[2 * j]);
      mm[2 * u + 1] = std::max(mm[2 * u + 1], e[2 * j + 1]);
    }
  }
  return flags;
}

// The values of the flagged buckets (sg[j] NaN), grouped by bucket in ascending order, and
// the pass-2 sums of both samples.
struct Flagged {
  std::vector<int32_t> buckets;        // flagged bucket ids, ascending
  std::vector<int64_t> off_a, off_b;   // start of each flagged bucket's values in va / vb (+ end)
  std::vector<double> va, vb;
  double acc_a = 0, acc_b = 0;
};

void gather(const BucketKernels& k, const Plan& p, const double* a, int64_t na, const double* b, int64_t nb,
            const std::vector<double>& sg, const std::vector<uint32_t>& ca, const std::vector<uint32_t>& cb,
            Flagged& f) {
  const int64_t K = p.K;
  std::vector<int32_t> pos(static_cast<size_t>(K), -1);
  f.off_a.assign(1, 0);
  f.off_b.assign(1, 0);
  for (int64_t j = 0; j < K; ++j) {
    const double s = sg[static_cast<size_t>(j)];
    if (s == s) continue;
    pos[static_cast<size_t>(j)] = static_cast<int32_t>(f.buckets.size());
    f.buckets.push_back(static_cast<int32_t>(j));
    f.off_a.push_back(f.off_a.back() + ca[static_cast<size_t>(j)]);
    f.off_b.push_back(f.off_b.back() + cb[static_cast<size_t>(j)]);
  }
  const int64_t nba = (na + kBlock - 1) / kBlock, nbb = (nb + kBlock - 1) / kBlock;
  // Room for a whole block each, left uninitialized: only the pages written are touched.
  std::unique_ptr<double[]> xs(new double[static_cast<size_t>(na + nb)]);
  std::unique_ptr<uint32_t[]> js(new uint32_t[static_cast<size_t>(na + nb)]);
  std::vector<int64_t> got(static_cast<size_t>(nba + nbb), 0);
  std::vector<double> acc(static_cast<size_t>(nba + nbb), 0.0);
  auto start = [&](int64_t c) { return c < nba ? c * kBlock : na + (c - nba) * kBlock; };
  parallel_for_safe(nba + nbb, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const bool is_a = c < nba;
      const double* x = is_a ? a : b;
      const int64_t n = is_a ? na : nb, i0 = (is_a ? c : c - nba) * kBlock, m = std::min(kBlock, n - i0);
      const size_t u = static_cast<size_t>(c);
      got[u] = k.pass2(x + i0, m, p.m, sg.data(), xs.get() + start(c), js.get() + start(c), &acc[u]);
    }
  });
  f.va.resize(static_cast<size_t>(f.off_a.back()));
  f.vb.resize(static_cast<size_t>(f.off_b.back()));
  std::vector<int64_t> cur_a(f.off_a.begin(), f.off_a.end() - 1), cur_b(f.off_b.begin(), f.off_b.end() - 1);
  for (int64_t c = 0; c < nba + nbb; ++c) {
    const bool is_a = c < nba;
    (is_a ? f.acc_a : f.acc_b) += acc[static_cast<size_t>(c)];
    std::vector<double>& out = is_a ? f.va : f.vb;
    std::vector<int64_t>& cur = is_a ? cur_a : cur_b;
    const double* x = xs.get() + start(c);
    const uint32_t* j = js.get() + start(c);
    for (int64_t i = 0; i < got[static_cast<size_t>(c)]; ++i) out[static_cast<size_t>(cur[static_cast<size_t>(pos[j[i]])]++)] = x[i];
  }
}

void sort_segment(double* p, int64_t n) {
  if (n > 1 && !std::is_sorted(p, p + n)) std::sort(p, p + n);
}

// Values of one (sub)problem: the samples' values inside a range where the counts before it,
// A0 and B0, are known.
struct Node {
  double* a;
  int64_t la;
  double* b;
  int64_t lb;
  uint64_t A0, B0;
};

struct Ctx {
  const BucketKernels* k;
  double fa, fb;
  int64_t forced;  // buckets per level when forced (tests), else 0
  int64_t leaf;    // nodes with at most this many values are sorted
  int max_depth;
};

// Counts before each flagged bucket of a level.
void flagged_offsets(const Flagged& f, const std::vector<uint32_t>& ca, const std::vector<uint32_t>& cb, uint64_t A0,
                     uint64_t B0, std::vector<uint64_t>& fa0, std::vector<uint64_t>& fb0) {
  const size_t nf = f.buckets.size();
  fa0.resize(nf);
  fb0.resize(nf);
  uint64_t sa = A0, sb = B0;
  size_t q = 0;
  for (size_t j = 0; j < ca.size() && q < nf; ++j) {
    if (f.buckets[q] == static_cast<int32_t>(j)) fa0[q] = sa, fb0[q] = sb, ++q;
    sa += ca[j], sb += cb[j];
  }
}

// Runs fn(q, node) over the flagged buckets of a level in parallel (fn writes only slot q).
template <class Fn>
void for_each_flagged(Flagged& f, const std::vector<uint64_t>& fa0, const std::vector<uint64_t>& fb0, const Fn& fn) {
  const int64_t nf = static_cast<int64_t>(f.buckets.size());
  parallel_for_safe(nf, 8, [&](int64_t s, int64_t e) {
    for (int64_t q = s; q < e; ++q) {
      const size_t u = static_cast<size_t>(q);
      Node n{f.va.data() + f.off_a[u], f.off_a[u + 1] - f.off_a[u], f.vb.data() + f.off_b[u],
             f.off_b[u + 1] - f.off_b[u], fa0[u], fb0[u]};
      fn(q, n);
    }
  });
}

bool all_equal(const Node& n) {
  const double v = n.la ? n.a[0] : n.b[0];
  for (int64_t i = 0; i < n.la; ++i)
    if (!(n.a[i] == v)) return false;
  for (int64_t i = 0; i < n.lb; ++i)
    if (!(n.b[i] == v)) return false;
  return true;
}

// ---------------------------------------------------------------- KS

// scipy's cdf1 - cdf2 at the end of each run of equal values of a sorted node, from the counts
// before it. Strict comparisons over ascending values keep the first (smallest) location.
void walk_ks(const Node& n, const Ctx& c, KSExtremes& e) {
  sort_segment(n.a, n.la);
  sort_segment(n.b, n.lb);
  const double *sa = n.a, *sb = n.b;
  uint64_t ca = n.A0, cb = n.B0;
  int64_t i = 0, k = 0;
  while (i < n.la || k < n.lb) {
    const double v = (k >= n.lb || (i < n.la && sa[i] <= sb[k])) ? sa[i] : sb[k];
    bool has_a = false;
    while (i < n.la && sa[i] == v) ++i, ++ca, has_a = true;
    while (k < n.lb && sb[k] == v) ++k, ++cb;
    const double d = static_cast<double>(ca) / c.fa - static_cast<double>(cb) / c.fb;
    if (has_a) {
      if (d > e.mx) e.mx = d, e.loc_mx = v;
      if (d < e.mn_a) e.mn_a = d, e.loc_mn_a = v;
    } else if (d < e.mn_b) {
      e.mn_b = d, e.loc_mn_b = v;
    }
  }
}

void merge_extremes(KSExtremes& e, const KSExtremes& x) {  // x lies after e: first occurrences win
  if (x.mx > e.mx) e.mx = x.mx, e.loc_mx = x.loc_mx;
  if (x.mn_a < e.mn_a) e.mn_a = x.mn_a, e.loc_mn_a = x.loc_mn_a;
  if (x.mn_b < e.mn_b) e.mn_b = x.mn_b, e.loc_mn_b = x.loc_mn_b;
}

struct KSBounds {
  bool want_max, want_min;
  double lb_max, ub_min;  // attained: the maximum is >= lb_max, the minimum <= ub_min
};

KSExtremes ks_node(const Ctx& c, const Node& n, KSBounds bd, int depth);

// One level: count, tighten the bounds with the bucket ends, gather the buckets that can hold
// an extreme and resolve each (sorted, or split again).
KSExtremes ks_level(const Ctx& c, const Plan& p, const double* a, int64_t la, const double* b, int64_t lb,
                    uint64_t A0, uint64_t B0, KSBounds bd, int depth, int* flags) {
  std::vector<uint32_t> ca, cb;
  std::vector<double> mm;
  *flags = count_both(*c.k, p, a, la, b, lb, ca, cb, mm);
  if (*flags & 1) return KSExtremes{};
  // (Bounds use reciprocals: within a few ulps of scipy's divisions, far inside kSlack.)
  const double ra = 1.0 / c.fa, rb = 1.0 / c.fb;
  uint64_t A = A0, B = B0;
  for (int64_t j = 0; j < p.K; ++j) {
    const uint32_t x = ca[static_cast<size_t>(j)], y = cb[static_cast<size_t>(j)];
    if (x + y == 0) continue;
    A += x, B += y;
    const double d = static_cast<double>(A) * ra - static_cast<double>(B) * rb;
    bd.lb_max = std::max(bd.lb_max, d);
    bd.ub_min = std::min(bd.ub_min, d);
  }
  // A bucket can hold an extreme only if its inner bound reaches the attained one. The slack
  // (1e-12) covers the rounding of bounds and statistic (~1e-16) many times over. A bucket of
  // one value has one point, at its end: it is resolved here from its counts, never gathered.
  constexpr double kSlack = 1e-12;
  // Two-sided: the side that cannot reach the other's attained value cannot decide the result
  // (statistic, location and sign all come from the larger side; the max side on a tie), so
  // each side is resolved only where it can reach max(lb_max, -ub_min).
  const double thr_max = bd.want_min ? std::max(bd.lb_max, -bd.ub_min) : bd.lb_max;
  const double thr_min = bd.want_max ? std::min(bd.ub_min, -bd.lb_max) : bd.ub_min;
  std::vector<double> sg(static_cast<size_t>(p.K), 0.0);
  std::vector<std::pair<int64_t, KSExtremes>> single;
  A = A0, B = B0;
  for (int64_t j = 0; j < p.K; ++j) {
    const size_t u = static_cast<size_t>(j);
    const uint32_t x = ca[u], y = cb[u];
    if (x + y == 0) continue;
    if (!mm.empty() && mm[2 * u] == mm[2 * u + 1]) {
      const double d = static_cast<double>(A + x) / c.fa - static_cast<double>(B + y) / c.fb, v = mm[2 * u];
      if ((bd.want_max && x > 0 && d >= thr_max - kSlack) || (bd.want_min && d <= thr_min + kSlack)) {
        KSExtremes e;
        if (x > 0)
          e.mx = e.mn_a = d, e.loc_mx = e.loc_mn_a = v;
        else
          e.mn_b = d, e.loc_mn_b = v;
        single.emplace_back(j, e);
      }
    } else {
      const double hi = static_cast<double>(A + x) * ra - static_cast<double>(B) * rb;
      const double lo = static_cast<double>(A) * ra - static_cast<double>(B + y) * rb;
      if ((bd.want_max && hi >= thr_max - kSlack) || (bd.want_min && lo <= thr_min + kSlack))
        sg[u] = std::numeric_limits<double>::quiet_NaN();
    }
    A += x, B += y;
  }
  Flagged f;
  gather(*c.k, p, a, la, b, lb, sg, ca, cb, f);
  std::vector<uint64_t> fa0, fb0;
  flagged_offsets(f, ca, cb, A0, B0, fa0, fb0);
  std::vector<KSExtremes> part(f.buckets.size());
  for_each_flagged(f, fa0, fb0, [&](int64_t q, const Node& n) { part[static_cast<size_t>(q)] = ks_node(c, n, bd, depth + 1); });
  KSExtremes e;  // both lists in ascending bucket order, merged
  size_t q = 0, s = 0;
  while (q < part.size() || s < single.size()) {
    if (s >= single.size() || (q < part.size() && f.buckets[q] < single[s].first))
      merge_extremes(e, part[q++]);
    else
      merge_extremes(e, single[s++].second);
  }
  return e;
}

KSExtremes ks_node(const Ctx& c, const Node& n, KSBounds bd, int depth) {
  KSExtremes e;
  if (n.la + n.lb > c.leaf && depth < c.max_depth && !all_equal(n)) {
    const Plan p = make_plan(n.a, n.la, n.b, n.lb, c.forced ? c.forced : auto_buckets(n.la + n.lb));
    int flags = 0;
    if (p.ok) return ks_level(c, p, n.a, n.la, n.b, n.lb, n.A0, n.B0, bd, depth, &flags);  // no NaN below the top
  }
  walk_ks(n, c, e);
  return e;
}

// ---------------------------------------------------------------- Wasserstein

// A point of the line given in the t units of a bucket map, x = lo + t / scale, and measured
// against a value v through t(v) = (v - lo) * scale: the same rounding that put v in its bucket,
// so bucket edges and values agree. Lengths between values are taken in x (as scipy does).
struct Edge {
  double lo, scale, t;
};
inline double from_edge(const Edge& L, double v) { return ((v - L.lo) * L.scale - L.t) / L.scale; }
inline double to_edge(double v, const Edge& U) { return (U.t - (v - U.lo) * U.scale) / U.scale; }
inline double edge_x(const Edge& e) { return e.lo + e.t / e.scale; }

// Integral of |F_a - F_b| over [L, U] for a sorted node (F constant between values; a zero F
// times an infinite length counts 0: F vanishes beyond the samples' extremes).
double walk_w(const Node& n, const Ctx& c, const Edge& L, const Edge& U) {
  sort_segment(n.a, n.la);
  sort_segment(n.b, n.lb);
  const double *sa = n.a, *sb = n.b;
  uint64_t ca = n.A0, cb = n.B0;
  double F = static_cast<double>(ca) / c.fa - static_cast<double>(cb) / c.fb, prev = 0.0, I = 0.0;
  bool first = true;
  int64_t i = 0, k = 0;
  while (i < n.la || k < n.lb) {
    const double v = (k >= n.lb || (i < n.la && sa[i] <= sb[k])) ? sa[i] : sb[k];
    if (F != 0.0) I += std::fabs(F) * (first ? from_edge(L, v) : v - prev);
    while (i < n.la && sa[i] == v) ++i, ++ca;
    while (k < n.lb && sb[k] == v) ++k, ++cb;
    F = static_cast<double>(ca) / c.fa - static_cast<double>(cb) / c.fb;
    prev = v;
    first = false;
  }
  if (F != 0.0) I += std::fabs(F) * (first ? edge_x(U) - edge_x(L) : to_edge(prev, U));
  return I;
}

double w_node(const Ctx& c, const Node& n, const Edge& L, const Edge& U, int depth, double* err);

// One level over [L, U]; returns the integral in x units. Interior buckets where F cannot
// change sign: closed form from counts and offsets (in t units, divided by scale). One-valued
// buckets: from their counts. The others (and the two end buckets, which reach L and U) keep
// their values in x and are integrated between their edges, sorted or split again. Lengths
// from an edge to a value go through t, lengths between values are differences of values, so
// the rounding of t never scales with the distance of the data from the map's origin.
// flags: bit 1 NaN, bit 2 a value too far out for t (the caller falls back).
// *err += a bound on the rounding error: positions in t carry up to ~2 eps |t| each, i.e.
// eps times the level's range in x, for every value of the level (weighted by 1 / n).
double w_level(const Ctx& c, const Plan& p, const double* a, int64_t la, const double* b, int64_t lb, uint64_t A0,
               uint64_t B0, const Edge& L, const Edge& U, int depth, int* flags, double* err) {
  std::vector<uint32_t> ca, cb;
  std::vector<double> mm;
  *flags = count_both(*c.k, p, a, la, b, lb, ca, cb, mm);
  if (*flags & 3) return 0.0;
  *err += 8 * std::numeric_limits<double>::epsilon() * (static_cast<double>(p.K) / p.m.scale) *
          (static_cast<double>(la) / c.fa + static_cast<double>(lb) / c.fb);
  const unsigned __int128 NA = static_cast<uint64_t>(c.fa), NB = static_cast<uint64_t>(c.fb);
  auto left = [&](int64_t j) { return j == 0 ? L : Edge{p.m.lo, p.m.scale, static_cast<double>(j)}; };
  auto right = [&](int64_t j) { return j == p.K - 1 ? U : Edge{p.m.lo, p.m.scale, static_cast<double>(j + 1)}; };
  std::vector<double> sg(static_cast<size_t>(p.K));
  long double closed = 0.0L;  // closed-form buckets: |F| at their start, times their width 1 (t units)
  long double single = 0.0L;  // buckets of one value v: |F0| (v - start) + |F1| (end - v) (x units)
  uint64_t A = A0, B = B0;
  for (int64_t j = 0; j < p.K; ++j) {
    const size_t u = static_cast<size_t>(j);
    const uint64_t A1 = A + ca[u], B1 = B + cb[u];
    double s = std::numeric_limits<double>::quiet_NaN();
    if (!mm.empty() && mm[2 * u] == mm[2 * u + 1]) {
      const double v = mm[2 * u];
      const double F0 = static_cast<double>(A) / c.fa - static_cast<double>(B) / c.fb;
      const double F1 = static_cast<double>(A1) / c.fa - static_cast<double>(B1) / c.fb;
      if (F0 != 0.0) single += std::fabs(F0) * from_edge(left(j), v);  // zero F times an infinite end: 0
      if (F1 != 0.0) single += std::fabs(F1) * to_edge(v, right(j));
      s = 0.0;
    } else if (j > 0 && j < p.K - 1) {  // exact integer tests of min F >= 0 / max F <= 0 inside
      if (A * NB >= B1 * NA)
        s = 1.0;
      else if (A1 * NB <= B * NA)
        s = -1.0;
      if (s == s) closed += s * (static_cast<double>(A) / c.fa - static_cast<double>(B) / c.fb);
    }
    sg[u] = s;
    A = A1, B = B1;
  }
  Flagged f;
  gather(*c.k, p, a, la, b, lb, sg, ca, cb, f);
  std::vector<uint64_t> fa0, fb0;
  flagged_offsets(f, ca, cb, A0, B0, fa0, fb0);
  std::vector<double> part(f.buckets.size(), 0.0), perr(f.buckets.size(), 0.0);
  for_each_flagged(f, fa0, fb0, [&](int64_t q, const Node& n) {
    const int64_t j = f.buckets[static_cast<size_t>(q)];
    part[static_cast<size_t>(q)] = w_node(c, n, left(j), right(j), depth + 1, &perr[static_cast<size_t>(q)]);
  });
  long double exact = 0.0L;
  for (double v : part) exact += v;
  for (double v : perr) *err += v;
  const long double in_t = closed + static_cast<long double>(f.acc_a) / c.fa - static_cast<long double>(f.acc_b) / c.fb;
  return static_cast<double>(in_t / static_cast<long double>(p.m.scale) + single + exact);
}

double w_node(const Ctx& c, const Node& n, const Edge& L, const Edge& U, int depth, double* err) {
  if (n.la + n.lb > c.leaf && depth < c.max_depth && !all_equal(n)) {
    const Plan p = make_plan(n.a, n.la, n.b, n.lb, c.forced ? c.forced : auto_buckets(n.la + n.lb));
    int flags = 0;
    double e = 0.0;
    if (p.ok) {
      const double r = w_level(c, p, n.a, n.la, n.b, n.lb, n.A0, n.B0, L, U, depth, &flags, &e);
      if (!flags) return *err += e, r;
    }
  }
  return walk_w(n, c, L, U);
}

Ctx make_ctx(CpuTarget t, int64_t na, int64_t nb, int64_t buckets) {
  Ctx c{&detail::bucket_kernels_for(t), static_cast<double>(na), static_cast<double>(nb), 0, kLeaf, kMaxDepth};
  if (buckets > 0) c.forced = buckets, c.leaf = 8, c.max_depth = 6;  // tests: split small samples too
  return c;
}

bool use_buckets(int64_t na, int64_t nb, int64_t buckets) {
  if (buckets < 0) return false;
  if (buckets == 0) return na + nb >= kAutoMin;
  if (buckets < 3) throw std::invalid_argument("buckets must be 0 (automatic), negative (sort) or at least 3");
  if (buckets > (int64_t(1) << 24)) throw std::invalid_argument("buckets must be at most 2^24");
  return true;
}
}  // namespace

KSResult ks_2samp(const double* a, int64_t na, const double* b, int64_t nb, KSMethod method, KSAlternative alt,
                  CpuTarget t, int64_t buckets) {
  check_sizes(na, nb, "ks_2samp");
  const Ctx c = make_ctx(t, na, nb, buckets);
  Plan p;
  if (use_buckets(na, nb, buckets)) p = make_plan(a, na, b, nb, c.forced ? c.forced : auto_buckets(na + nb));
  if (p.ok) {
    const KSBounds bd{alt != KSAlternative::less, alt != KSAlternative::greater, -kInf, kInf};
    int flags = 0;
    const KSExtremes e = ks_level(c, p, a, na, b, nb, 0, 0, bd, 0, &flags);
    if (flags & 1) nan_error("ks_2samp");
    return detail::ks_finish(e, na, nb, method, alt);
  }
  std::vector<double> sa, sb;
  sorted_copies(a, na, b, nb, sa, sb, "ks_2samp");
  return ks_2samp_sorted(sa.data(), na, sb.data(), nb, method, alt);
}

KSResult ks_2samp(const double* a, int64_t na, const double* b, int64_t nb, KSMethod method, KSAlternative alt) {
  return ks_2samp(a, na, b, nb, method, alt, active_target(), 0);
}

double wasserstein(const double* a, int64_t na, const double* b, int64_t nb, CpuTarget t, int64_t buckets) {
  check_sizes(na, nb, "wasserstein");
  const Ctx c = make_ctx(t, na, nb, buckets);
  Plan p;
  if (use_buckets(na, nb, buckets)) p = make_plan(a, na, b, nb, c.forced ? c.forced : auto_buckets(na + nb));
  if (p.ok) {
    int flags = 0;
    double err = 0.0;
    const double w = w_level(c, p, a, na, b, nb, 0, 0, Edge{0.0, 1.0, -kInf}, Edge{0.0, 1.0, kInf}, 0, &flags, &err);
    if (flags & 1) nan_error("wasserstein");
    // Accept unless the rounding bound could exceed 1e-10 of the result: a distance tiny next to
    // the spread of the values around it (outliers far away on both sides) takes the plain path.
    if (!flags && (err <= 1e-10 * w || w == 0.0)) return w;
    // bit 2: infinite values (scipy's inf / nan arithmetic) or t overflow: plain path
  }
  std::vector<double> sa, sb;
  sorted_copies(a, na, b, nb, sa, sb, "wasserstein");
  return wasserstein_sorted(sa.data(), na, sb.data(), nb);
}

double wasserstein(const double* a, int64_t na, const double* b, int64_t nb) {
  return wasserstein(a, na, b, nb, active_target(), 0);
}

}  // namespace drift
}  // namespace pyperfcore
