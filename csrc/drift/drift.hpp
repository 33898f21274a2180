// Streaming drift statistics: mergeable accumulators and two-sample statistics. ISA-free API
// over raw pointers; no Python here (a C++ service links this through pyperfcore_core).
//
// NaN policy: accumulators never drop or propagate NaN. Histograms count NaN in their own slot,
// moments count NaN / +inf / -inf separately and accumulate finite values only, categorical
// counts keep a "missing" slot. Sample statistics (KS, Wasserstein) require NaN-free input.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "../common/cpu.hpp"

namespace pyperfcore {
namespace drift {

// Version byte carried by every serialized accumulator ("PFDR" magic, then this).
constexpr uint8_t kFormatVersion = 1;
// Limits that bound the memory a deserializer may be asked to allocate.
constexpr int64_t kMaxBins = int64_t(1) << 20;
constexpr int64_t kMaxCategories = int64_t(1) << 24;

// Counts of values over fixed, strictly increasing bin edges e[0..k] (k bins; infinite outer
// edges are allowed). Bin i holds e[i] <= x < e[i+1], the last bin also x == e[k] (numpy's
// np.histogram convention). counts() layout: [below e[0], bin 0 .. bin k-1, above e[k], NaN].
class Histogram {
 public:
  Histogram() = default;
  // Throws std::invalid_argument unless 1 <= k <= kMaxBins and edges are strictly increasing
  // and not NaN.
  explicit Histogram(std::vector<double> edges);
  int64_t bins() const { return static_cast<int64_t>(edges_.size()) - 1; }
  const std::vector<double>& edges() const { return edges_; }
  const std::vector<uint64_t>& counts() const { return counts_; }
  uint64_t total() const;  // every value seen, NaN included
  // Contiguous input; an empty update changes nothing.
  void update(const double* x, int64_t n, CpuTarget t);
  void update(const float* x, int64_t n, CpuTarget t);
  // Throws std::invalid_argument if the edges differ.
  void merge(const Histogram& o);
  void clear();
  std::vector<uint8_t> serialize() const;
  // Throws std::invalid_argument on any malformed, truncated or inconsistent blob.
  static Histogram deserialize(const uint8_t* p, size_t n);

 private:
  std::vector<double> edges_;
  std::vector<uint64_t> counts_;
  // Bin lookup for finite edges: cell c of a uniform grid over [e[0], e[k]) holds the number of
  // edges in lower cells, so a value's bin is found by arithmetic plus a scan of the few edges
  // inside its own cell (uniform edges: usually none). Empty when an edge is infinite.
  std::vector<uint32_t> lut_;
  double lut_scale_ = 0;
  uint32_t lut_span_ = 0;  // most edges inside one cell: the SIMD lookup scans at most this many
};

// Count, mean and central moments (M2..M4) of the finite values, exactly mergeable
// (Chan et al. / Pebay pairwise formulas), computed per batch with a two-pass algorithm.
struct MomentState {
  uint64_t n = 0, n_nan = 0, n_posinf = 0, n_neginf = 0;
  double mean = 0, m2 = 0, m3 = 0, m4 = 0;
  double min = 0, max = 0;  // meaningful only when n > 0
};

class Moments {
 public:
  const MomentState& state() const { return s_; }
  void update(const double* x, int64_t n, CpuTarget t);
  void update(const float* x, int64_t n, CpuTarget t);
  void merge(const MomentState& o);
  void merge(const Moments& o) { merge(o.s_); }
  void clear() { s_ = MomentState{}; }
  std::vector<uint8_t> serialize() const;
  static Moments deserialize(const uint8_t* p, size_t n);

 private:
  MomentState s_;
};

// Counts of categorical codes: code c in [0, k) -> slot c, c >= k -> "unknown" (slot k),
// c < 0 -> "missing" (slot k+1).
class CategoryCounts {
 public:
  CategoryCounts() = default;
  explicit CategoryCounts(int64_t k);  // 0 <= k <= kMaxCategories
  int64_t categories() const { return static_cast<int64_t>(counts_.size()) - 2; }
  const std::vector<uint64_t>& counts() const { return counts_; }
  void update(const int64_t* codes, int64_t n);
  void merge(const CategoryCounts& o);
  void clear();
  std::vector<uint8_t> serialize() const;
  static CategoryCounts deserialize(const uint8_t* p, size_t n);

 private:
  std::vector<uint64_t> counts_;
};

// ---- statistics over two count vectors of equal length k (weights may be fractional, e.g.
// decayed windows). Each normalizes by its own total; a total of 0 is std::invalid_argument.

// Population stability index sum((p - q) * ln(p / q)); proportions equal to 0 are replaced
// first (Evidently's rule): by eps, or by min_nonzero / 1e6 when min_nonzero <= eps.
double psi(const double* ref, const double* cur, int64_t k, double eps);
// Jensen-Shannon distance sqrt(JS divergence) with natural logs unless base > 0
// (scipy.spatial.distance.jensenshannon).
double jensen_shannon(const double* ref, const double* cur, int64_t k, double base);
// Hellinger distance sqrt(1 - sum(sqrt(p * q))), clipped to [0, 1].
double hellinger(const double* ref, const double* cur, int64_t k);
// Largest absolute difference of proportions.
double linf(const double* ref, const double* cur, int64_t k);
// Chi-square test of homogeneity on the 2 x k table of raw counts (columns with both counts 0
// are dropped). Returns the statistic; *dof and *pvalue are set.
double chi2_contingency(const double* ref, const double* cur, int64_t k, double* dof, double* pvalue);
// KS statistic between binned CDFs (evaluated at bin boundaries). The exact statistic of the
// underlying samples lies in [D, D + *err]; err = max over bins of max(p_i, q_i).
double ks_binned(const double* ref, const double* cur, int64_t k, double* err);
// Wasserstein-1 between binned distributions with mass spread uniformly inside each bin of
// `edges` (k+1 finite edges).
double wasserstein_binned(const double* ref, const double* cur, const double* edges, int64_t k);

// Upper tail of the chi-square distribution with `dof` degrees of freedom.
double chi2_sf(double x, double dof);
// Two-sided normal tail 2 * (1 - Phi(|z|)) (as Evidently's Z-test computes it).
double normal_two_sided(double z);

// ---- sample statistics (inputs NaN-free; sorted copies are made internally)

// Sorts a copy of x ascending (LSD radix sort on the IEEE order); -0.0 sorts before 0.0.
void sort_f64(const double* x, int64_t n, double* out);

struct KSResult {
  double statistic = 0;
  double pvalue = 1;
  double location = 0;
  int sign = 1;
  bool exact = false;  // which p-value method ran
};
enum class KSMethod : int { automatic = 0, exact = 1, asymp = 2 };
// Alternative hypothesis as scipy names it: 'greater' uses max(F_a - F_b), 'less' max(F_b - F_a).
enum class KSAlternative : int { two_sided = 0, less = 1, greater = 2 };
// Two-sided two-sample KS exactly as scipy.stats.ks_2samp(a, b, method=...) (scipy >= 1.11):
// statistic, location, sign and p-value (exact path counting when allowed, else the
// Simard-L'Ecuyer two-sided one-sample distribution at round(n*m/(n+m))).
// One-sided alternatives follow scipy too: exact path counting (Hodges) when allowed, else
// Hodges' eq. 5.3 approximation. Inputs of ks_2samp_sorted must be sorted ascending, NaN-free.
KSResult ks_2samp_sorted(const double* a, int64_t na, const double* b, int64_t nb, KSMethod m,
                         KSAlternative alt = KSAlternative::two_sided);
KSResult ks_2samp(const double* a, int64_t na, const double* b, int64_t nb, KSMethod m,
                  KSAlternative alt = KSAlternative::two_sided);
// The unsorted forms (ks_2samp, wasserstein) never sort whole samples when they are large: both
// are counted into value buckets (a monotone linear map fitted to a sample of the data), the
// ECDFs are known exactly at every bucket end, and only the buckets that can hold the extremes
// (KS) or where F_a - F_b may change sign (Wasserstein) are gathered and sorted; the others
// contribute through their counts (and, for Wasserstein, the sum of their values' offsets).
// `buckets`: 0 chooses (sorting for small samples), < 0 forces sorting both samples, >= 3 forces
// that many buckets (for tests). Results do not depend on the choice beyond floating-point
// rounding of the Wasserstein sum; KS statistic, location and sign are bit-identical.
// Throws std::invalid_argument on NaN input.
KSResult ks_2samp(const double* a, int64_t na, const double* b, int64_t nb, KSMethod m, KSAlternative alt,
                  CpuTarget t, int64_t buckets = 0);
// p-value only, for a statistic d of samples of sizes n1, n2 (sets *exact_used, *d_out to the
// statistic scipy reports, which the exact path rounds to a multiple of 1/lcm(n1, n2)).
double ks_2samp_pvalue(int64_t n1, int64_t n2, double d, KSMethod m, bool* exact_used, double* d_out,
                       KSAlternative alt = KSAlternative::two_sided);
// Survival function of the two-sided one-sample KS statistic D_n (scipy.stats.kstwo.sf).
double kstwo_sf(double d, int64_t n);
// One-sided one-sample KS survival function (scipy.special.smirnov).
double smirnov_sf(int64_t n, double x);

// Wasserstein-1 distance between two samples (scipy.stats.wasserstein_distance, unweighted).
double wasserstein_sorted(const double* a, int64_t na, const double* b, int64_t nb);
double wasserstein(const double* a, int64_t na, const double* b, int64_t nb);
double wasserstein(const double* a, int64_t na, const double* b, int64_t nb, CpuTarget t, int64_t buckets = 0);

// ---- whole-report helpers (detect_drift)

// The distinct values of a and b together (NaN-free input; -0.0 == 0.0) when there are at most
// `cap` of them: `values` sorted ascending, ca / cb each sample's count per value. Returns false
// as soon as a (cap + 1)-th distinct value is seen (the outputs are then unspecified), so a
// continuous column costs a few dozen values, not a sort.
bool small_support(const double* a, int64_t na, const double* b, int64_t nb, int64_t cap, std::vector<double>& values,
                   std::vector<int64_t>& ca, std::vector<int64_t>& cb);

// out[i] = wasserstein(a[i], na[i], b[i], nb[i], t) for k column pairs, the columns spread over
// the thread pool (each column's own passes then run on its thread). Throws what a column throws.
void wasserstein_many(const double* const* a, const int64_t* na, const double* const* b, const int64_t* nb, int64_t k,
                      double* out, CpuTarget t);

}  // namespace drift
}  // namespace pyperfcore
