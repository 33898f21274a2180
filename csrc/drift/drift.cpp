// Drift accumulators (histogram, moments, category counts), their serialization, and the
// statistics computed from count vectors.
#include "drift.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "../common/threads.hpp"
#include "drift_kernels.hpp"

namespace pyperfcore {
namespace drift {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr int64_t kChunk = int64_t(1) << 16;  // elements per parallel task (fixed: results
                                              // do not depend on the thread count)
enum Kind : uint8_t { kHist = 1, kMoments = 2, kCategories = 3 };
constexpr size_t kHeader = 12;

static_assert(sizeof(double) == 8, "IEEE double expected");

// Little-endian writer / bounds-checked reader.
struct Writer {
  std::vector<uint8_t> b;
  template <class T>
  void put(T v) {
    uint8_t tmp[sizeof(T)];
    std::memcpy(tmp, &v, sizeof(T));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    std::reverse(tmp, tmp + sizeof(T));
#endif
    b.insert(b.end(), tmp, tmp + sizeof(T));
  }
};

struct Reader {
  const uint8_t* p;
  size_t n, pos = 0;
  template <class T>
  T get() {
    if (n - pos < sizeof(T)) throw std::invalid_argument("drift blob truncated");
    uint8_t tmp[sizeof(T)];
    std::memcpy(tmp, p + pos, sizeof(T));
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    std::reverse(tmp, tmp + sizeof(T));
#endif
    pos += sizeof(T);
    T v;
    std::memcpy(&v, tmp, sizeof(T));
    return v;
  }
};

void put_header(Writer& w, Kind kind, size_t payload) {
  w.b.insert(w.b.end(), {'P', 'F', 'D', 'R'});
  w.put<uint8_t>(kFormatVersion);
  w.put<uint8_t>(kind);
  w.put<uint16_t>(0);
  w.put<uint32_t>(static_cast<uint32_t>(payload));
}

// Checks magic, version, kind and that the blob is exactly header + payload long.
Reader open_blob(const uint8_t* p, size_t n, Kind kind, const char* what) {
  if (p == nullptr && n != 0) throw std::invalid_argument("drift blob: null data");
  if (n < kHeader) throw std::invalid_argument(std::string(what) + " blob too short for its header");
  if (std::memcmp(p, "PFDR", 4) != 0) throw std::invalid_argument(std::string(what) + " blob: bad magic (not a pyperfcore drift blob)");
  Reader r{p, n, 4};
  const uint8_t ver = r.get<uint8_t>();
  if (ver != kFormatVersion)
    throw std::invalid_argument(std::string(what) + " blob: unsupported format version " + std::to_string(ver));
  const uint8_t k = r.get<uint8_t>();
  if (k != kind) throw std::invalid_argument(std::string(what) + " blob: holds another kind of accumulator");
  if (r.get<uint16_t>() != 0) throw std::invalid_argument(std::string(what) + " blob: reserved bytes not zero");
  const uint32_t len = r.get<uint32_t>();
  if (static_cast<uint64_t>(len) != static_cast<uint64_t>(n - kHeader))
    throw std::invalid_argument(std::string(what) + " blob: payload length does not match the blob size");
  return r;
}

void check_sum(const std::vector<uint64_t>& c) {
  uint64_t t = 0;
  for (uint64_t v : c)
    if (__builtin_add_overflow(t, v, &t)) throw std::invalid_argument("drift blob: counts overflow");
}

void add_counts(std::vector<uint64_t>& a, const std::vector<uint64_t>& b) {
  for (size_t i = 0; i < a.size(); ++i)
    if (__builtin_add_overflow(a[i], b[i], &a[i])) throw std::overflow_error("drift: count overflow in merge");
}

// Histogram slots through the lookup table (see Histogram::lut_): a binary search over the
// edges of the value's cell (the correction loops after it never move for a table built by
// the constructor; they keep the result exact for any table).
template <class T>
void hist_lut(const T* x, int64_t n, const double* e, int64_t ne, const uint32_t* lut, int64_t cells, double scale,
              uint64_t* counts) {
  const double first = e[0], last = e[ne - 1];
  for (int64_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(x[i]);
    int64_t slot;
    if (v >= first && v < last) {
      int64_t c = static_cast<int64_t>((v - first) * scale);
      c = c < cells ? c : cells - 1;
      int64_t lo = lut[c], hi = lut[c + 1];
      while (lo < hi) {  // first edge > v among the cell's edges (usually 0 or 1 of them)
        const int64_t mid = (lo + hi) >> 1;
        if (e[mid] <= v)
          lo = mid + 1;
        else
          hi = mid;
      }
      while (lo < ne - 1 && e[lo] <= v) ++lo;  // rounding at cell borders
      while (e[lo - 1] > v) --lo;
      slot = lo;  // e[lo - 1] <= v < e[lo]: bin lo - 1, slot lo
    } else {
      slot = v != v ? ne + 1 : (v < first ? 0 : (v == last ? ne - 1 : ne));
    }
    ++counts[slot];
  }
}

template <class T>
void hist_update(std::vector<uint64_t>& counts, const std::vector<double>& edges, const std::vector<uint32_t>& lut,
                 double scale, uint32_t span, const T* x, int64_t n, CpuTarget t) {
  if (n <= 0) return;
  const detail::Kernels& k = detail::kernels_for(t);
  const int64_t ne = static_cast<int64_t>(edges.size());
  const double* e = edges.data();
  const size_t slots = counts.size();
  std::mutex mu;
  std::vector<uint64_t> total(slots, 0);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  parallel_for(chunks, 1, [&](int64_t b, int64_t end) {
    std::vector<uint64_t> local(slots, 0);
    for (int64_t c = b; c < end; ++c) {
      const int64_t i0 = c * kChunk, m = std::min(kChunk, n - i0);
      const int64_t cells = static_cast<int64_t>(lut.size()) - 1;
      // SIMD lookup (linear scan of the cell's edges, all lanes together) where cells hold few
      // edges; the scalar lookup binary-searches wide cells.
      if (!lut.empty() && span <= detail::kLutSimdSpan && k.hist_lut_f64 != nullptr && k.hist_lut_f32 != nullptr) {
        if constexpr (std::is_same<T, double>::value)
          k.hist_lut_f64(x + i0, m, e, ne, lut.data(), cells, scale, local.data());
        else
          k.hist_lut_f32(x + i0, m, e, ne, lut.data(), cells, scale, local.data());
      } else if (!lut.empty())
        hist_lut(x + i0, m, e, ne, lut.data(), cells, scale, local.data());
      else if constexpr (std::is_same<T, double>::value)
        k.hist_f64(x + i0, m, e, ne, local.data());
      else
        k.hist_f32(x + i0, m, e, ne, local.data());
    }
    std::lock_guard<std::mutex> g(mu);
    for (size_t i = 0; i < slots; ++i) total[i] += local[i];
  });
  add_counts(counts, total);
}

// Pairwise combination of two moment states (Chan et al. 1979; Pebay 2008).
MomentState combine(const MomentState& a, const MomentState& b) {
  MomentState r;
  r.n_nan = a.n_nan + b.n_nan;
  r.n_posinf = a.n_posinf + b.n_posinf;
  r.n_neginf = a.n_neginf + b.n_neginf;
  if (b.n == 0) {
    r.n = a.n, r.mean = a.mean, r.m2 = a.m2, r.m3 = a.m3, r.m4 = a.m4, r.min = a.min, r.max = a.max;
    return r;
  }
  if (a.n == 0) {
    r.n = b.n, r.mean = b.mean, r.m2 = b.m2, r.m3 = b.m3, r.m4 = b.m4, r.min = b.min, r.max = b.max;
    return r;
  }
  const double na = static_cast<double>(a.n), nb = static_cast<double>(b.n), n = na + nb;
  const double d = b.mean - a.mean, dn = d / n, dn2 = dn * dn;
  r.n = a.n + b.n;
  r.mean = a.mean + dn * nb;
  const double t = d * dn * na * nb;  // d^2 na nb / n
  r.m2 = a.m2 + b.m2 + t;
  r.m3 = a.m3 + b.m3 + t * dn * (na - nb) + 3.0 * dn * (na * b.m2 - nb * a.m2);
  r.m4 = a.m4 + b.m4 + t * dn2 * (na * na - na * nb + nb * nb) + 6.0 * dn2 * (na * na * b.m2 + nb * nb * a.m2) +
         4.0 * dn * (na * b.m3 - nb * a.m3);
  r.min = std::min(a.min, b.min);
  r.max = std::max(a.max, b.max);
  return r;
}

template <class T>
MomentState moments_of(const T* x, int64_t n, CpuTarget t) {
  const detail::Kernels& k = detail::kernels_for(t);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<MomentState> parts(static_cast<size_t>(chunks));
  parallel_for(chunks, 1, [&](int64_t b, int64_t end) {
    for (int64_t c = b; c < end; ++c) {
      const int64_t i0 = c * kChunk, m = std::min(kChunk, n - i0);
      detail::Pass1 p;
      if constexpr (std::is_same<T, double>::value)
        k.pass1_f64(x + i0, m, &p);
      else
        k.pass1_f32(x + i0, m, &p);
      MomentState& s = parts[static_cast<size_t>(c)];
      s.n = p.n, s.n_nan = p.nan, s.n_posinf = p.posinf, s.n_neginf = p.neginf;
      if (p.n > 0) {
        s.mean = p.sum / static_cast<double>(p.n);
        double acc[3] = {0, 0, 0};
        if constexpr (std::is_same<T, double>::value)
          k.pass2_f64(x + i0, m, s.mean, acc);
        else
          k.pass2_f32(x + i0, m, s.mean, acc);
        s.m2 = acc[0], s.m3 = acc[1], s.m4 = acc[2], s.min = p.min, s.max = p.max;
      }
    }
  });
  MomentState r;
  for (const MomentState& s : parts) r = combine(r, s);
  return r;
}

void normalize(const double* c, int64_t k, std::vector<double>& p, const char* what) {
  if (k <= 0) throw std::invalid_argument(std::string(what) + ": empty count vectors");
  double t = 0;
  for (int64_t i = 0; i < k; ++i) {
    if (!(c[i] >= 0) || !std::isfinite(c[i])) throw std::invalid_argument(std::string(what) + ": counts must be finite and >= 0");
    t += c[i];
  }
  if (!(t > 0)) throw std::invalid_argument(std::string(what) + ": a distribution with total count 0 has no proportions");
  p.resize(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i) p[static_cast<size_t>(i)] = c[i] / t;
}

}  // namespace

// ------------------------------------------------------------------------ Histogram
Histogram::Histogram(std::vector<double> edges) : edges_(std::move(edges)) {
  const int64_t k = static_cast<int64_t>(edges_.size()) - 1;
  if (k < 1 || k > kMaxBins) throw std::invalid_argument("histogram needs between 2 and 2^20 + 1 bin edges");
  for (size_t i = 0; i < edges_.size(); ++i) {
    if (std::isnan(edges_[i])) throw std::invalid_argument("histogram edges must not be NaN");
    if (i > 0 && !(edges_[i] > edges_[i - 1])) throw std::invalid_argument("histogram edges must be strictly increasing");
  }
  counts_.assign(static_cast<size_t>(k + 3), 0);
  const double first = edges_.front(), last = edges_.back(), span = last - first;
  if (std::isfinite(first) && std::isfinite(last) && std::isfinite(span) && span > 0) {
    const int64_t cells = std::min<int64_t>(std::max<int64_t>(16 * k, 64), int64_t(1) << 18);
    const double scale = static_cast<double>(cells) / span;
    if (std::isfinite(scale) && scale > 0) {
      // lut[c] = number of edges whose own cell is below c, with the cell of a value computed
      // exactly as the lookups compute it (same operations, so the same rounding): an edge in
      // a lower cell is < v, one in a higher cell is > v, so a value in cell c has
      // lut[c] + #(edges of cell c that are <= v) edges <= v, with no correction.
      lut_.assign(static_cast<size_t>(cells) + 1, 0);
      for (size_t i = 0; i < edges_.size(); ++i) {
        int64_t c = static_cast<int64_t>((edges_[i] - first) * scale);
        c = c < cells ? c : cells - 1;
        ++lut_[static_cast<size_t>(c) + 1];
      }
      for (int64_t c = 1; c <= cells; ++c) {
        lut_span_ = std::max(lut_span_, lut_[static_cast<size_t>(c)]);
        lut_[static_cast<size_t>(c)] += lut_[static_cast<size_t>(c - 1)];
      }
      lut_scale_ = scale;
    }
  }
}

uint64_t Histogram::total() const {
  uint64_t t = 0;
  for (uint64_t c : counts_) t += c;
  return t;
}

void Histogram::update(const double* x, int64_t n, CpuTarget t) {
  if (edges_.empty()) throw std::logic_error("histogram has no edges");
  hist_update(counts_, edges_, lut_, lut_scale_, lut_span_, x, n, t);
}
void Histogram::update(const float* x, int64_t n, CpuTarget t) {
  if (edges_.empty()) throw std::logic_error("histogram has no edges");
  hist_update(counts_, edges_, lut_, lut_scale_, lut_span_, x, n, t);
}

void Histogram::merge(const Histogram& o) {
  if (o.edges_.size() != edges_.size() ||
      !std::equal(edges_.begin(), edges_.end(), o.edges_.begin(),
                  [](double a, double b) { return std::memcmp(&a, &b, 8) == 0; }))
    throw std::invalid_argument("cannot merge histograms with different bin edges");
  add_counts(counts_, o.counts_);
}

void Histogram::clear() { std::fill(counts_.begin(), counts_.end(), 0); }

std::vector<uint8_t> Histogram::serialize() const {
  const int64_t k = bins();
  Writer w;
  put_header(w, kHist, 4 + 8 * static_cast<size_t>(k + 1) + 8 * static_cast<size_t>(k + 3));
  w.put<uint32_t>(static_cast<uint32_t>(k));
  for (double e : edges_) w.put<double>(e);
  for (uint64_t c : counts_) w.put<uint64_t>(c);
  return w.b;
}

Histogram Histogram::deserialize(const uint8_t* p, size_t n) {
  Reader r = open_blob(p, n, kHist, "histogram");
  const uint32_t k = r.get<uint32_t>();
  if (k < 1 || k > kMaxBins) throw std::invalid_argument("histogram blob: bin count out of range");
  if (n - r.pos != 8 * (static_cast<size_t>(k) + 1) + 8 * (static_cast<size_t>(k) + 3))
    throw std::invalid_argument("histogram blob: size does not match its bin count");
  std::vector<double> e(k + 1);
  for (double& v : e) v = r.get<double>();
  Histogram h(std::move(e));  // validates the edges
  for (uint64_t& c : h.counts_) c = r.get<uint64_t>();
  check_sum(h.counts_);
  return h;
}

// ------------------------------------------------------------------------ Moments
void Moments::update(const double* x, int64_t n, CpuTarget t) {
  if (n > 0) s_ = combine(s_, moments_of(x, n, t));
}
void Moments::update(const float* x, int64_t n, CpuTarget t) {
  if (n > 0) s_ = combine(s_, moments_of(x, n, t));
}
void Moments::merge(const MomentState& o) { s_ = combine(s_, o); }

std::vector<uint8_t> Moments::serialize() const {
  Writer w;
  put_header(w, kMoments, 80);
  w.put<uint64_t>(s_.n);
  w.put<uint64_t>(s_.n_nan);
  w.put<uint64_t>(s_.n_posinf);
  w.put<uint64_t>(s_.n_neginf);
  for (double v : {s_.mean, s_.m2, s_.m3, s_.m4, s_.min, s_.max}) w.put<double>(v);
  return w.b;
}

Moments Moments::deserialize(const uint8_t* p, size_t n) {
  Reader r = open_blob(p, n, kMoments, "moments");
  if (n - r.pos != 80) throw std::invalid_argument("moments blob: wrong payload size");
  Moments m;
  MomentState& s = m.s_;
  s.n = r.get<uint64_t>();
  s.n_nan = r.get<uint64_t>();
  s.n_posinf = r.get<uint64_t>();
  s.n_neginf = r.get<uint64_t>();
  check_sum({s.n, s.n_nan, s.n_posinf, s.n_neginf});
  s.mean = r.get<double>(), s.m2 = r.get<double>(), s.m3 = r.get<double>(), s.m4 = r.get<double>();
  s.min = r.get<double>(), s.max = r.get<double>();
  for (double v : {s.mean, s.m2, s.m3, s.m4, s.min, s.max})
    if (!std::isfinite(v)) throw std::invalid_argument("moments blob: non-finite moment");
  if (s.n == 0) {
    for (double v : {s.mean, s.m2, s.m3, s.m4, s.min, s.max})
      if (v != 0) throw std::invalid_argument("moments blob: moments of an empty state must be 0");
  } else if (s.m2 < 0 || s.m4 < 0 || s.min > s.max) {
    throw std::invalid_argument("moments blob: inconsistent moments");
  }
  return m;
}

// ------------------------------------------------------------------------ CategoryCounts
CategoryCounts::CategoryCounts(int64_t k) {
  if (k < 0 || k > kMaxCategories) throw std::invalid_argument("category count out of range (0 .. 2^24)");
  counts_.assign(static_cast<size_t>(k + 2), 0);
}

void CategoryCounts::update(const int64_t* codes, int64_t n) {
  if (counts_.empty()) throw std::logic_error("category counts not initialized");
  if (n <= 0) return;
  const int64_t k = categories();
  const size_t slots = counts_.size();
  std::mutex mu;
  std::vector<uint64_t> total(slots, 0);
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  parallel_for(chunks, 1, [&](int64_t b, int64_t end) {
    std::vector<uint64_t> local(slots, 0);
    for (int64_t i = b * kChunk; i < std::min(n, end * kChunk); ++i) {
      const int64_t c = codes[i];
      ++local[static_cast<size_t>(c < 0 ? k + 1 : (c >= k ? k : c))];
    }
    std::lock_guard<std::mutex> g(mu);
    for (size_t i = 0; i < slots; ++i) total[i] += local[i];
  });
  add_counts(counts_, total);
}

void CategoryCounts::merge(const CategoryCounts& o) {
  if (o.counts_.size() != counts_.size()) throw std::invalid_argument("cannot merge category counts of different vocabularies");
  add_counts(counts_, o.counts_);
}

void CategoryCounts::clear() { std::fill(counts_.begin(), counts_.end(), 0); }

std::vector<uint8_t> CategoryCounts::serialize() const {
  Writer w;
  put_header(w, kCategories, 4 + 8 * counts_.size());
  w.put<uint32_t>(static_cast<uint32_t>(categories()));
  for (uint64_t c : counts_) w.put<uint64_t>(c);
  return w.b;
}

CategoryCounts CategoryCounts::deserialize(const uint8_t* p, size_t n) {
  Reader r = open_blob(p, n, kCategories, "category counts");
  const uint32_t k = r.get<uint32_t>();
  if (k > kMaxCategories) throw std::invalid_argument("category counts blob: too many categories");
  if (n - r.pos != 8 * (static_cast<size_t>(k) + 2)) throw std::invalid_argument("category counts blob: size does not match");
  CategoryCounts c(k);
  for (uint64_t& v : c.counts_) v = r.get<uint64_t>();
  check_sum(c.counts_);
  return c;
}

// ------------------------------------------------------------------------ statistics on counts
double psi(const double* ref, const double* cur, int64_t k, double eps) {
  std::vector<double> p, q;
  normalize(ref, k, p, "psi");
  normalize(cur, k, q, "psi");
  auto fill = [eps](std::vector<double>& v) {
    double mn = kInf;
    for (double x : v)
      if (x != 0 && x < mn) mn = x;
    const double f = mn <= eps ? mn / 1e6 : eps;
    for (double& x : v)
      if (x == 0) x = f;
  };
  fill(p);
  fill(q);
  double s = 0;
  for (int64_t i = 0; i < k; ++i) s += (p[i] - q[i]) * std::log(p[i] / q[i]);
  return s;
}

double jensen_shannon(const double* ref, const double* cur, int64_t k, double base) {
  std::vector<double> p, q;
  normalize(ref, k, p, "jensen_shannon");
  normalize(cur, k, q, "jensen_shannon");
  double s = 0;
  for (int64_t i = 0; i < k; ++i) {
    const double m = (p[i] + q[i]) / 2.0;
    if (p[i] > 0) s += p[i] * std::log(p[i] / m);
    if (q[i] > 0) s += q[i] * std::log(q[i] / m);
  }
  double js = s / 2.0;
  if (base > 0) js /= std::log(base);
  return std::sqrt(std::max(js, 0.0));
}

double hellinger(const double* ref, const double* cur, int64_t k) {
  std::vector<double> p, q;
  normalize(ref, k, p, "hellinger");
  normalize(cur, k, q, "hellinger");
  double bc = 0;
  for (int64_t i = 0; i < k; ++i) bc += std::sqrt(p[i] * q[i]);
  bc = std::min(std::max(bc, 0.0), 1.0);
  return std::sqrt(1.0 - bc);
}

double linf(const double* ref, const double* cur, int64_t k) {
  std::vector<double> p, q;
  normalize(ref, k, p, "linf");
  normalize(cur, k, q, "linf");
  double m = 0;
  for (int64_t i = 0; i < k; ++i) m = std::max(m, std::fabs(p[i] - q[i]));
  return m;
}

double chi2_contingency(const double* ref, const double* cur, int64_t k, double* dof, double* pvalue) {
  std::vector<double> p, q;
  normalize(ref, k, p, "chi2");
  normalize(cur, k, q, "chi2");
  double n1 = 0, n2 = 0;
  for (int64_t i = 0; i < k; ++i) n1 += ref[i], n2 += cur[i];
  const double n = n1 + n2;
  double stat = 0;
  int64_t cols = 0;
  for (int64_t i = 0; i < k; ++i) {
    const double c = ref[i] + cur[i];
    if (c == 0) continue;
    ++cols;
    const double e1 = n1 * c / n, e2 = n2 * c / n;
    stat += (ref[i] - e1) * (ref[i] - e1) / e1 + (cur[i] - e2) * (cur[i] - e2) / e2;
  }
  const double df = static_cast<double>(std::max<int64_t>(cols - 1, 0));
  if (dof) *dof = df;
  if (pvalue) *pvalue = df > 0 ? chi2_sf(stat, df) : 1.0;
  return stat;
}

double ks_binned(const double* ref, const double* cur, int64_t k, double* err) {
  std::vector<double> p, q;
  normalize(ref, k, p, "ks_binned");
  normalize(cur, k, q, "ks_binned");
  double P = 0, Q = 0, d = 0, e = 0;
  for (int64_t i = 0; i < k; ++i) {
    P += p[i], Q += q[i];
    if (i + 1 < k) d = std::max(d, std::fabs(P - Q));
    e = std::max(e, std::max(p[i], q[i]));
  }
  if (err) *err = e;
  return d;
}

double wasserstein_binned(const double* ref, const double* cur, const double* edges, int64_t k) {
  std::vector<double> p, q;
  normalize(ref, k, p, "wasserstein_binned");
  normalize(cur, k, q, "wasserstein_binned");
  for (int64_t i = 0; i <= k; ++i)
    if (!std::isfinite(edges[i])) throw std::invalid_argument("wasserstein_binned needs finite edges");
  double d0 = 0, s = 0;
  for (int64_t i = 0; i < k; ++i) {
    const double d1 = d0 + p[i] - q[i], w = edges[i + 1] - edges[i];
    const double a = std::fabs(d0), b = std::fabs(d1);
    if ((d0 >= 0) == (d1 >= 0) || a + b == 0)
      s += w * (a + b) / 2.0;
    else
      s += w * (a * a + b * b) / (2.0 * (a + b));
    d0 = d1;
  }
  return s;
}

// Regularized upper incomplete gamma Q(a, x): series for x < a + 1, else Lentz continued fraction.
double chi2_sf(double x, double dof) {
  if (!(dof > 0)) throw std::invalid_argument("chi2_sf: dof must be > 0");
  if (std::isnan(x)) return std::nan("");
  if (x <= 0) return 1.0;
  if (std::isinf(x)) return 0.0;
  const double a = dof / 2.0, z = x / 2.0;
  const double lg = a * std::log(z) - z - std::lgamma(a);
  if (z < a + 1.0) {
    double sum = 1.0 / a, term = sum, ap = a;
    for (int i = 0; i < 100000; ++i) {
      ap += 1.0;
      term *= z / ap;
      sum += term;
      if (std::fabs(term) < std::fabs(sum) * 1e-17) break;
    }
    return std::max(0.0, 1.0 - sum * std::exp(lg));
  }
  const double tiny = 1e-300;
  double b = z + 1.0 - a, c = 1.0 / tiny, d = 1.0 / b, h = d;
  for (int i = 1; i < 100000; ++i) {
    const double an = -i * (i - a);
    b += 2.0;
    d = an * d + b;
    if (std::fabs(d) < tiny) d = tiny;
    c = b + an / c;
    if (std::fabs(c) < tiny) c = tiny;
    d = 1.0 / d;
    const double del = d * c;
    h *= del;
    if (std::fabs(del - 1.0) < 1e-17) break;
  }
  return std::exp(lg) * h;
}

double normal_two_sided(double z) {
  if (std::isnan(z)) return std::nan("");
  return std::erfc(std::fabs(z) / std::sqrt(2.0));
}

}  // namespace drift
}  // namespace pyperfcore
