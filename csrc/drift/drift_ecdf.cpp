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
#include <limits>
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
constexpr int64_t kBlock = int64_t(1) << 17;    // values per pass-2 task (fixed: sums do not
                                                // depend on the thread count)

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
  parallel_for(2, 1, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) {
      std::vector<double>& v = i == 0 ? sa : sb;
      std::sort(v.begin(), v.end());
    }
  });
}

int64_t auto_buckets(int64_t total) {
  int64_t k = 1024;
  while (k < (int64_t(1) << 16) && k * 32 < total) k <<= 1;
  return k;
}

struct Plan {
  BucketMap m;
  int64_t K = 0;
  bool ok = false;
};

// Buckets 1..K-2 cover [lo, hi] of a strided sample (trimmed by 1/1024 at each end so that
// outliers do not stretch the grid); buckets 0 and K-1 take everything beyond.
Plan make_plan(const double* a, int64_t na, const double* b, int64_t nb, int64_t K) {
  Plan p;
  std::vector<double> s;
  s.reserve(8200);
  auto take = [&](const double* x, int64_t n) {
    const int64_t step = std::max<int64_t>(1, n / 4096);
    for (int64_t i = 0; i < n; i += step)
      if (std::fabs(x[i]) < kInf) s.push_back(x[i]);
  };
  take(a, na);
  take(b, nb);
  if (s.size() < 2) return p;
  const size_t q = s.size() / 1024;
  std::nth_element(s.begin(), s.begin() + static_cast<std::ptrdiff_t>(q), s.end());
  double lo = s[q];
  std::nth_element(s.begin(), s.end() - 1 - static_cast<std::ptrdiff_t>(q), s.end());
  double hi = s[s.size() - 1 - q];
  if (!(hi > lo)) {
    lo = *std::min_element(s.begin(), s.end());
    hi = *std::max_element(s.begin(), s.end());
  }
  if (!(hi > lo)) return p;
  const double range = hi - lo, scale = static_cast<double>(K - 2) / range;
  if (!(range < kInf) || !(scale > 0) || !(scale < kInf)) return p;
  p.m.lo = lo - 1.0 / scale;  // t(lo) ~ 1: bucket 0 holds only values below the sample's range
  p.m.scale = scale;
  p.m.kmax = static_cast<double>(K - 1);
  if (!(std::fabs(p.m.lo) < kInf)) return p;
  p.K = K;
  p.ok = true;
  return p;
}

// Bucket counts of both samples (exact integers: independent of the thread split).
int count_both(const BucketKernels& k, const Plan& p, const double* a, int64_t na, const double* b, int64_t nb,
               std::vector<uint32_t>& ca, std::vector<uint32_t>& cb) {
  const int64_t K = p.K;
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(get_num_threads(), (na + nb) / kBlock));
  std::vector<std::vector<uint32_t>> local(static_cast<size_t>(parts));
  std::vector<int> bad(static_cast<size_t>(parts), 0);
  parallel_for(parts, 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      std::vector<uint32_t>& h = local[static_cast<size_t>(q)];
      h.assign(static_cast<size_t>(2 * K), 0);
      const int64_t a0 = na * q / parts, a1 = na * (q + 1) / parts, b0 = nb * q / parts, b1 = nb * (q + 1) / parts;
      bad[static_cast<size_t>(q)] = k.count(a + a0, a1 - a0, p.m, h.data()) | k.count(b + b0, b1 - b0, p.m, h.data() + K);
    }
  });
  ca.assign(local[0].begin(), local[0].begin() + K);
  cb.assign(local[0].begin() + K, local[0].end());
  int flags = bad[0];
  for (size_t q = 1; q < local.size(); ++q) {
    flags |= bad[q];
    const uint32_t* h = local[q].data();
    for (int64_t j = 0; j < K; ++j) ca[static_cast<size_t>(j)] += h[j], cb[static_cast<size_t>(j)] += h[K + j];
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
  std::vector<std::vector<double>> xs(static_cast<size_t>(nba + nbb));
  std::vector<std::vector<uint32_t>> js(static_cast<size_t>(nba + nbb));
  std::vector<double> acc(static_cast<size_t>(nba + nbb), 0.0);
  parallel_for(nba + nbb, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const bool is_a = c < nba;
      const double* x = is_a ? a : b;
      const int64_t n = is_a ? na : nb, i0 = (is_a ? c : c - nba) * kBlock, m = std::min(kBlock, n - i0);
      acc[static_cast<size_t>(c)] = k.pass2(x + i0, m, p.m, sg.data(), &xs[static_cast<size_t>(c)], &js[static_cast<size_t>(c)]);
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
    const std::vector<double>& x = xs[static_cast<size_t>(c)];
    const std::vector<uint32_t>& j = js[static_cast<size_t>(c)];
    for (size_t i = 0; i < x.size(); ++i) out[static_cast<size_t>(cur[static_cast<size_t>(pos[j[i]])]++)] = x[i];
  }
}

void sort_segment(double* p, int64_t n) {
  if (n > 1 && !std::is_sorted(p, p + n)) std::sort(p, p + n);
}

// scipy's cdf1 - cdf2 at the end of each run of equal values of one bucket, from the counts
// before it. Strict comparisons over ascending values keep the first (smallest) location.
void walk_ks(const double* sa, int64_t la, const double* sb, int64_t lb, uint64_t ca, uint64_t cb, double fa,
             double fb, KSExtremes& e) {
  int64_t i = 0, k = 0;
  while (i < la || k < lb) {
    const double v = (k >= lb || (i < la && sa[i] <= sb[k])) ? sa[i] : sb[k];
    bool has_a = false;
    while (i < la && sa[i] == v) ++i, ++ca, has_a = true;
    while (k < lb && sb[k] == v) ++k, ++cb;
    const double d = static_cast<double>(ca) / fa - static_cast<double>(cb) / fb;
    if (has_a) {
      if (d > e.mx) e.mx = d, e.loc_mx = v;
      if (d < e.mn_a) e.mn_a = d, e.loc_mn_a = v;
    } else if (d < e.mn_b) {
      e.mn_b = d, e.loc_mn_b = v;
    }
  }
}

// Integral of |F_a - F_b| over bucket j in t - j units (from 0 to 1; the end buckets hold
// F = 0 beyond their extreme values, so the same bounds serve them).
double walk_w(const double* sa, int64_t la, const double* sb, int64_t lb, uint64_t ca, uint64_t cb, double fa,
              double fb, const BucketMap& m, int32_t j) {
  const double jd = static_cast<double>(j);
  double F = static_cast<double>(ca) / fa - static_cast<double>(cb) / fb, prev = 0.0, I = 0.0;
  int64_t i = 0, k = 0;
  while (i < la || k < lb) {
    const double v = (k >= lb || (i < la && sa[i] <= sb[k])) ? sa[i] : sb[k];
    const double f = (v - m.lo) * m.scale - jd;
    I += std::fabs(F) * (f - prev);
    while (i < la && sa[i] == v) ++i, ++ca;
    while (k < lb && sb[k] == v) ++k, ++cb;
    F = static_cast<double>(ca) / fa - static_cast<double>(cb) / fb;
    prev = f;
  }
  return I + std::fabs(F) * (1.0 - prev);
}

// Sorts each flagged bucket's values and runs fn(index, sa, la, sb, lb) over the flagged
// buckets in parallel (fn writes only its own slot).
template <class Fn>
void for_each_flagged(Flagged& f, const Fn& fn) {
  const int64_t nf = static_cast<int64_t>(f.buckets.size());
  parallel_for(nf, 16, [&](int64_t s, int64_t e) {
    for (int64_t q = s; q < e; ++q) {
      const size_t u = static_cast<size_t>(q);
      double* sa = f.va.data() + f.off_a[u];
      double* sb = f.vb.data() + f.off_b[u];
      const int64_t la = f.off_a[u + 1] - f.off_a[u], lb = f.off_b[u + 1] - f.off_b[u];
      sort_segment(sa, la);
      sort_segment(sb, lb);
      fn(q, sa, la, sb, lb);
    }
  });
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
  Plan p;
  if (use_buckets(na, nb, buckets)) p = make_plan(a, na, b, nb, buckets ? buckets : auto_buckets(na + nb));
  if (!p.ok) {
    std::vector<double> sa, sb;
    sorted_copies(a, na, b, nb, sa, sb, "ks_2samp");
    return ks_2samp_sorted(sa.data(), na, sb.data(), nb, method, alt);
  }
  const BucketKernels& k = detail::bucket_kernels_for(t);
  std::vector<uint32_t> ca, cb;
  if (count_both(k, p, a, na, b, nb, ca, cb) & 1) nan_error("ks_2samp");
  const double fa = static_cast<double>(na), fb = static_cast<double>(nb);
  const bool want_max = alt != KSAlternative::less, want_min = alt != KSAlternative::greater;
  // Attained values at bucket ends bound the extremes: max >= lb_max, min <= ub_min.
  // (Bounds use reciprocals: within a few ulps of the divisions, far inside kSlack below.)
  const double ra = 1.0 / fa, rb = 1.0 / fb;
  double lb_max = -kInf, ub_min = kInf;
  uint64_t A = 0, B = 0;
  for (int64_t j = 0; j < p.K; ++j) {
    const uint32_t x = ca[static_cast<size_t>(j)], y = cb[static_cast<size_t>(j)];
    if (x + y == 0) continue;
    A += x, B += y;
    const double d = static_cast<double>(A) * ra - static_cast<double>(B) * rb;
    lb_max = std::max(lb_max, d);
    ub_min = std::min(ub_min, d);
  }
  // A bucket can hold an extreme only if its inner bound reaches the attained one; the
  // slack covers rounding of the bounds (1e-12 >> 1 ulp, << 1/(na nb) steps do not matter).
  constexpr double kSlack = 1e-12;
  std::vector<double> sg(static_cast<size_t>(p.K), 0.0);
  A = B = 0;
  for (int64_t j = 0; j < p.K; ++j) {
    const uint32_t x = ca[static_cast<size_t>(j)], y = cb[static_cast<size_t>(j)];
    if (x + y == 0) continue;
    const double hi = static_cast<double>(A + x) * ra - static_cast<double>(B) * rb;
    const double lo = static_cast<double>(A) * ra - static_cast<double>(B + y) * rb;
    if ((want_max && hi >= lb_max - kSlack) || (want_min && lo <= ub_min + kSlack))
      sg[static_cast<size_t>(j)] = std::numeric_limits<double>::quiet_NaN();
    A += x, B += y;
  }
  Flagged f;
  gather(k, p, a, na, b, nb, sg, ca, cb, f);
  // Counts before each flagged bucket.
  const size_t nf = f.buckets.size();
  std::vector<uint64_t> A0(nf), B0(nf);
  {
    uint64_t sa = 0, sb = 0;
    size_t q = 0;
    for (int64_t j = 0; j < p.K && q < nf; ++j) {
      if (f.buckets[q] == j) A0[q] = sa, B0[q] = sb, ++q;
      sa += ca[static_cast<size_t>(j)], sb += cb[static_cast<size_t>(j)];
    }
  }
  std::vector<KSExtremes> part(nf);
  for_each_flagged(f, [&](int64_t q, const double* sa, int64_t la, const double* sb, int64_t lb) {
    walk_ks(sa, la, sb, lb, A0[static_cast<size_t>(q)], B0[static_cast<size_t>(q)], fa, fb, part[static_cast<size_t>(q)]);
  });
  KSExtremes e;  // buckets in ascending order, strict comparisons: first occurrences win
  for (const KSExtremes& x : part) {
    if (x.mx > e.mx) e.mx = x.mx, e.loc_mx = x.loc_mx;
    if (x.mn_a < e.mn_a) e.mn_a = x.mn_a, e.loc_mn_a = x.loc_mn_a;
    if (x.mn_b < e.mn_b) e.mn_b = x.mn_b, e.loc_mn_b = x.loc_mn_b;
  }
  return detail::ks_finish(e, na, nb, method, alt);
}

KSResult ks_2samp(const double* a, int64_t na, const double* b, int64_t nb, KSMethod method, KSAlternative alt) {
  return ks_2samp(a, na, b, nb, method, alt, active_target(), 0);
}

double wasserstein(const double* a, int64_t na, const double* b, int64_t nb, CpuTarget t, int64_t buckets) {
  check_sizes(na, nb, "wasserstein");
  Plan p;
  if (use_buckets(na, nb, buckets)) p = make_plan(a, na, b, nb, buckets ? buckets : auto_buckets(na + nb));
  const BucketKernels& k = detail::bucket_kernels_for(t);
  std::vector<uint32_t> ca, cb;
  if (p.ok) {
    const int flags = count_both(k, p, a, na, b, nb, ca, cb);
    if (flags & 1) nan_error("wasserstein");
    if (flags & 2) p.ok = false;  // infinite values (scipy's inf / nan arithmetic): plain path
  }
  if (!p.ok) {
    std::vector<double> sa, sb;
    sorted_copies(a, na, b, nb, sa, sb, "wasserstein");
    return wasserstein_sorted(sa.data(), na, sb.data(), nb);
  }
  const double fa = static_cast<double>(na), fb = static_cast<double>(nb);
  const unsigned __int128 NA = static_cast<uint64_t>(na), NB = static_cast<uint64_t>(nb);
  // sg = +1 / -1 where F_a - F_b keeps its sign over the whole bucket (exact integer tests),
  // NaN where it may change sign and in the two unbounded end buckets.
  std::vector<double> sg(static_cast<size_t>(p.K));
  long double closed = 0.0L;  // sum over closed-form buckets of |F at the bucket start|
  uint64_t A = 0, B = 0;
  for (int64_t j = 0; j < p.K; ++j) {
    const uint64_t A1 = A + ca[static_cast<size_t>(j)], B1 = B + cb[static_cast<size_t>(j)];
    double s = std::numeric_limits<double>::quiet_NaN();
    if (j > 0 && j < p.K - 1) {
      if (A * NB >= B1 * NA)
        s = 1.0;
      else if (A1 * NB <= B * NA)
        s = -1.0;
    }
    sg[static_cast<size_t>(j)] = s;
    if (s == s) closed += s * (static_cast<double>(A) / fa - static_cast<double>(B) / fb);
    A = A1, B = B1;
  }
  Flagged f;
  gather(k, p, a, na, b, nb, sg, ca, cb, f);
  const size_t nf = f.buckets.size();
  std::vector<uint64_t> A0(nf), B0(nf);
  {
    uint64_t sa = 0, sb = 0;
    size_t q = 0;
    for (int64_t j = 0; j < p.K && q < nf; ++j) {
      if (f.buckets[q] == j) A0[q] = sa, B0[q] = sb, ++q;
      sa += ca[static_cast<size_t>(j)], sb += cb[static_cast<size_t>(j)];
    }
  }
  std::vector<double> part(nf, 0.0);
  for_each_flagged(f, [&](int64_t q, const double* sa, int64_t la, const double* sb, int64_t lb) {
    const size_t u = static_cast<size_t>(q);
    part[u] = walk_w(sa, la, sb, lb, A0[u], B0[u], fa, fb, p.m, f.buckets[u]);
  });
  long double exact = 0.0L;
  for (double v : part) exact += v;
  const long double total = closed + static_cast<long double>(f.acc_a) / fa - static_cast<long double>(f.acc_b) / fb + exact;
  return static_cast<double>(total / static_cast<long double>(p.m.scale));
}

double wasserstein(const double* a, int64_t na, const double* b, int64_t nb) {
  return wasserstein(a, na, b, nb, active_target(), 0);
}

}  // namespace drift
}  // namespace pyperfcore
