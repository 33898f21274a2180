#include "kll.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

namespace pyperfcore {
namespace sketches {
namespace {
constexpr int kM = 8;
constexpr uint8_t kKllVersion = 1;
[[noreturn]] void bad(const std::string& why) { throw std::invalid_argument("KLL image: " + why); }
}  // namespace

Kll::Kll(int k, uint64_t seed) : k_(k), rng_(seed | 1) {
  if (k < kM || k > 65535) throw std::invalid_argument("k must be in [8, 65535], got " + std::to_string(k));
  // round(k (2/3)^d) in integers, as DataSketches computes it (twice rounded beyond depth 30),
  // so the level offsets of a DataSketches image agree with its own capacity rule.
  auto rnd = [](uint64_t kk, int d) {
    uint64_t p3 = 1;
    for (int i = 0; i < d; ++i) p3 *= 3;
    return (((kk << 1) << d) / p3 + 1) >> 1;
  };
  for (int d = 0; d < 64; ++d) {
    const int dd = d > 60 ? 60 : d;
    const uint64_t c = dd <= 30 ? rnd(static_cast<uint64_t>(k_), dd) : rnd(rnd(static_cast<uint64_t>(k_), dd / 2), dd - dd / 2);
    cap_by_depth_[d] = static_cast<uint32_t>(std::max<uint64_t>(kM, c));
  }
  levels_.resize(1);
}

uint64_t Kll::next_random() {
  rng_ ^= rng_ << 13;
  rng_ ^= rng_ >> 7;
  rng_ ^= rng_ << 17;
  return rng_;
}

uint32_t Kll::capacity(size_t level) const {
  const size_t depth = levels_.size() - level - 1;
  return cap_by_depth_[depth < 64 ? depth : 63];
}

uint64_t Kll::total_capacity() const {
  uint64_t t = 0;
  for (size_t h = 0; h < levels_.size(); ++h) t += capacity(h);
  return t;
}

size_t Kll::num_retained() const {
  size_t t = 0;
  for (const auto& l : levels_) t += l.size();
  return t;
}

void Kll::compress() {
  // Compact the lowest level that is at or over capacity, until the whole sketch fits.
  while (num_retained() > total_capacity()) {
    size_t h = 0;
    while (h < levels_.size() && levels_[h].size() < capacity(h)) ++h;
    if (h == levels_.size()) h = 0;
    if (h + 1 == levels_.size()) levels_.emplace_back();
    auto& cur = levels_[h];
    if (h == 0) std::sort(cur.begin(), cur.end());
    double keep = 0;
    const bool odd = cur.size() % 2 == 1;
    if (odd) { keep = cur.front(); cur.erase(cur.begin()); }
    const size_t off = next_random() & 1;
    auto& up = levels_[h + 1];
    // up := merge(up, every other item of cur), through one reused scratch buffer
    const size_t nh = cur.size() / 2;
    scratch_.resize(up.size() + nh);
    size_t a = 0, b = off, o = 0;
    while (a < up.size() && b < cur.size()) {
      if (up[a] <= cur[b]) {
        scratch_[o++] = up[a++];
      } else {
        scratch_[o++] = cur[b];
        b += 2;
      }
    }
    while (a < up.size()) scratch_[o++] = up[a++];
    for (; b < cur.size(); b += 2) scratch_[o++] = cur[b];
    up.swap(scratch_);
    cur.clear();
    if (odd) cur.push_back(keep);
  }
}

namespace {
// Order-preserving map double <-> uint64 (NaN excluded by the caller); -0.0 sorts just below 0.0.
inline uint64_t key_of(double d) {
  uint64_t b;
  std::memcpy(&b, &d, 8);
  return b ^ (static_cast<uint64_t>(static_cast<int64_t>(b) >> 63) | 0x8000000000000000ULL);
}
inline double value_of(uint64_t k) {
  const uint64_t b = (k >> 63) ? (k ^ 0x8000000000000000ULL) : ~k;
  double d;
  std::memcpy(&d, &b, 8);
  return d;
}

// out[j] := the ranks[j]-th smallest (0-based) of a[0, n), ranks ascending; a is reordered.
// Radix selection: bucket by the leading bits of (key - min), keep only the buckets that hold a
// wanted rank, recurse into each. Every level narrows the key range by 2^bits, so the depth is
// bounded (64 / 7); small slices are sorted.
// lo_hi: the smallest and largest key when the caller knows them (saves a pass), else null.
void multi_select(uint64_t* a, size_t n, const uint32_t* ranks, size_t m, uint64_t* out, int depth,
                  const uint64_t* lo_hi = nullptr) {
  if (m == 0) return;
  if (n <= 160 || depth > 10) {
    std::sort(a, a + n);
    for (size_t j = 0; j < m; ++j) out[j] = a[ranks[j]];
    return;
  }
  uint64_t lo = a[0], hi = a[0];
  if (lo_hi) {
    lo = lo_hi[0];
    hi = lo_hi[1];
  } else {
    for (size_t i = 1; i < n; ++i) {
      lo = a[i] < lo ? a[i] : lo;
      hi = a[i] > hi ? a[i] : hi;
    }
  }
  if (lo == hi) {
    for (size_t j = 0; j < m; ++j) out[j] = lo;
    return;
  }
  const int want_bits = n >= 8192 ? 11 : (n >= 1024 ? 9 : 7);
  const uint64_t range = hi - lo;
  const int bits = 64 - __builtin_clzll(range);
  const int shift = bits > want_bits ? bits - want_bits : 0;
  // The first level buckets by value (equal-width), deeper ones by key. Keys are log-like: for
  // data around zero (normal) most of a key range is tiny magnitudes nobody uses, and a value
  // range spreads it well; for heavy tails (lognormal) the first value bucket takes the bulk and
  // the key levels below split it. Both maps are monotone, which is all the ranks need.
  const double vlo = value_of(lo), vhi = value_of(hi);
  bool by_value = depth == 0 && std::isfinite(vhi - vlo) && vhi > vlo;
  const size_t nbv = size_t(1) << want_bits;
  const double scale = by_value ? static_cast<double>(nbv) / (vhi - vlo) : 0.0;
  if (by_value) {
    // Pick the map that spreads a sample better (fewer items in its fullest bucket).
    constexpr size_t kS = 256;
    uint64_t sk[kS], sv[kS];
    const size_t step = n / kS;
    for (size_t i = 0; i < kS; ++i) {
      const uint64_t key = a[i * step];
      sk[i] = (key - lo) >> shift;
      const double b = (value_of(key) - vlo) * scale;
      sv[i] = b < static_cast<double>(nbv - 1) ? static_cast<uint64_t>(b) : nbv - 1;
    }
    auto fullest = [](uint64_t* v) {
      std::sort(v, v + kS);
      size_t best = 1, run = 1;
      for (size_t i = 1; i < kS; ++i) {
        run = v[i] == v[i - 1] ? run + 1 : 1;
        best = run > best ? run : best;
      }
      return best;
    };
    by_value = fullest(sv) < fullest(sk);
  }
  const size_t nb = by_value ? nbv : static_cast<size_t>(range >> shift) + 1;
  auto bucket = [&](uint64_t key) -> size_t {
    if (!by_value) return static_cast<size_t>((key - lo) >> shift);
    const double b = (value_of(key) - vlo) * scale;
    return b < static_cast<double>(nb - 1) ? static_cast<size_t>(b) : nb - 1;
  };
  std::vector<uint32_t> cnt(nb, 0), pos(nb), inc(nb, 0), first(nb);
  for (size_t i = 0; i < n; ++i) ++cnt[bucket(a[i])];
  // Wanted buckets get consecutive slices of buf; every other bucket writes to one dummy slot.
  uint32_t below = 0;
  size_t total = 0, j = 0;
  std::vector<uint32_t> wanted;
  for (size_t b = 0; b < nb && j < m; ++b) {
    first[b] = below;
    const uint32_t end = below + cnt[b];
    if (ranks[j] < end) {
      wanted.push_back(static_cast<uint32_t>(b));
      pos[b] = static_cast<uint32_t>(total);
      inc[b] = 1;
      total += cnt[b];
      while (j < m && ranks[j] < end) ++j;
    }
    below = end;
  }
  for (size_t b = 0; b < nb; ++b)
    if (!inc[b]) pos[b] = static_cast<uint32_t>(total);
  std::vector<uint64_t> buf(total + 1);
  for (size_t i = 0; i < n; ++i) {
    const size_t b = bucket(a[i]);
    const uint32_t d = pos[b];
    buf[d] = a[i];
    pos[b] = d + inc[b];
  }
  std::vector<uint32_t> sub;
  size_t off = 0;
  j = 0;
  for (uint32_t b : wanted) {
    const uint32_t f = first[b], end = f + cnt[b];
    sub.clear();
    uint64_t* o = out + j;
    for (; j < m && ranks[j] < end; ++j) sub.push_back(ranks[j] - f);
    multi_select(buf.data() + off, cnt[b], sub.data(), sub.size(), o, depth + 1);
    off += cnt[b];
  }
}
}  // namespace

bool Kll::insert_block(uint64_t* keys, size_t n, uint64_t kmin, uint64_t kmax) {
  // Compacting a sorted buffer h times in a row with random offsets o_0..o_{h-1} keeps exactly
  // the items at sorted positions r, r + 2^h, r + 2*2^h, ... with r = sum o_l 2^l uniform in
  // [0, 2^h): so the block is compacted by selecting those order statistics, and lands at level h
  // with weight 2^h. Each of its h compactions errs by at most its weight on any rank (the usual
  // KLL compaction bound). h is the first level whose capacity holds what is left: a compactor
  // fed one item at a time compacts buffers at least that large at every level below h, so the
  // block adds no more compactions per level than item-by-item updates would.
  const size_t nl = levels_.size();
  size_t h = 0, size = n;
  while (size > (h < nl ? capacity(h) : static_cast<uint32_t>(k_)) && size % 2 == 0) {
    size /= 2;
    ++h;
  }
  if (h == 0) return false;
  uint64_t r = 0;
  for (size_t l = 0; l < h; ++l) r |= (next_random() & 1) << l;
  std::vector<uint32_t> ranks(size);
  for (size_t t = 0; t < size; ++t) ranks[t] = static_cast<uint32_t>(r + (t << h));
  std::vector<uint64_t> picked(size);
  const uint64_t lo_hi[2] = {kmin, kmax};
  multi_select(keys, n, ranks.data(), size, picked.data(), 0, lo_hi);
  if (h + 1 > levels_.size()) levels_.resize(h + 1);
  auto& lv = levels_[h];
  scratch_.resize(lv.size() + size);
  size_t a = 0, b = 0, o = 0;
  while (a < lv.size() && b < size) {
    const double v = value_of(picked[b]);
    if (lv[a] <= v) scratch_[o++] = lv[a++];
    else { scratch_[o++] = v; ++b; }
  }
  while (a < lv.size()) scratch_[o++] = lv[a++];
  for (; b < size; ++b) scratch_[o++] = value_of(picked[b]);
  lv.swap(scratch_);
  n_ += n;
  if (num_retained() > total_capacity()) compress();
  return true;
}

template <class T>
void Kll::update_items(const T* x, int64_t n) {
  // Items go to level 0 in runs: the sketch may hold total_capacity() items, so a compaction is
  // due exactly when the run that crosses that count ends (as if checked after every item).
  int64_t i = 0;
  while (i < n) {
    const size_t held = num_retained();
    const uint64_t cap = total_capacity();
    const int64_t room = static_cast<int64_t>(cap >= held ? cap - held + 1 : 1);
    auto& l0 = levels_[0];
    int64_t taken = 0;
    double lo = n_ ? min_ : INFINITY, hi = n_ ? max_ : -INFINITY;
    for (; i < n && taken < room; ++i) {
      const double v = static_cast<double>(x[i]);
      if (v != v) continue;  // NaN is skipped
      l0.push_back(v);
      lo = v < lo ? v : lo;
      hi = v > hi ? v : hi;
      ++taken;
    }
    if (taken) {
      min_ = lo;
      max_ = hi;
      n_ += static_cast<uint64_t>(taken);
    }
    if (num_retained() > total_capacity()) compress();
  }
}

template <class T>
void Kll::update_impl(const T* x, int64_t n) {
  // Whole blocks of kBlock non-NaN items take the bulk path; what is left (a short input or the
  // tail of a long one) goes item by item, so small updates behave exactly as before.
  constexpr size_t kBlock = 1 << 14;
  int64_t i = 0;
  if (n >= static_cast<int64_t>(kBlock)) {
    block_.resize(kBlock);
    uint64_t* kb = block_.data();
    while (n - i >= static_cast<int64_t>(kBlock)) {
      const int64_t start = i;
      size_t got = 0;
      uint64_t kmin = ~uint64_t(0), kmax = 0;
      {
        // Common case first: a block without NaN, in a loop the compiler can vectorize.
        double lo = INFINITY, hi = -INFINITY;
        bool nan = false;
        const T* xb = x + i;
        for (size_t j = 0; j < kBlock; ++j) {
          const double v = static_cast<double>(xb[j]);
          kb[j] = key_of(v);
          nan |= v != v;
          lo = v < lo ? v : lo;
          hi = v > hi ? v : hi;
        }
        if (!nan) {
          i += static_cast<int64_t>(kBlock);
          got = kBlock;
          kmin = key_of(lo);
          kmax = key_of(hi);
        }
      }
      for (; got < kBlock && i < n; ++i) {
        const double v = static_cast<double>(x[i]);
        const uint64_t key = key_of(v);
        kb[got] = key;
        got += (v == v);  // NaN is skipped: its slot is overwritten by the next item
        kmin = (v == v && key < kmin) ? key : kmin;
        kmax = (v == v && key > kmax) ? key : kmax;
      }
      if (got < kBlock) { i = start; break; }  // NaNs made the block short: finish item by item
      const double vmin = value_of(kmin), vmax = value_of(kmax);
      const uint64_t n_before = n_;
      if (!insert_block(kb, kBlock, kmin, kmax)) { i = start; break; }
      min_ = n_before ? std::min(min_, vmin) : vmin;
      max_ = n_before ? std::max(max_, vmax) : vmax;
    }
  }
  if (i < n) update_items(x + i, n - i);
}

void Kll::update(const double* x, int64_t n) { update_impl(x, n); }
void Kll::update(const float* x, int64_t n) { update_impl(x, n); }

void Kll::merge(const Kll& o) {
  if (o.n_ == 0) return;
  if (n_ == 0) { min_ = o.min_; max_ = o.max_; }
  else { min_ = std::min(min_, o.min_); max_ = std::max(max_, o.max_); }
  n_ += o.n_;
  if (o.levels_.size() > levels_.size()) levels_.resize(o.levels_.size());
  levels_[0].insert(levels_[0].end(), o.levels_[0].begin(), o.levels_[0].end());
  for (size_t h = 1; h < o.levels_.size(); ++h) {
    std::vector<double> merged(levels_[h].size() + o.levels_[h].size());
    std::merge(levels_[h].begin(), levels_[h].end(), o.levels_[h].begin(), o.levels_[h].end(), merged.begin());
    levels_[h].swap(merged);
  }
  compress();
}

void Kll::sorted_view(std::vector<double>& v, std::vector<uint64_t>& cum) const {
  std::vector<std::pair<double, uint64_t>> items;
  items.reserve(num_retained());
  for (size_t h = 0; h < levels_.size(); ++h)
    for (double x : levels_[h]) items.emplace_back(x, uint64_t(1) << h);
  std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  v.resize(items.size());
  cum.resize(items.size());
  uint64_t c = 0;
  for (size_t i = 0; i < items.size(); ++i) {
    v[i] = items[i].first;
    c += items[i].second;
    cum[i] = c;
  }
}

void Kll::quantiles(const double* q, int64_t n, double* out) const {
  if (n_ == 0) throw std::invalid_argument("quantile of an empty sketch");
  std::vector<double> v;
  std::vector<uint64_t> cum;
  sorted_view(v, cum);
  const uint64_t total = cum.back();
  for (int64_t i = 0; i < n; ++i) {
    if (!(q[i] >= 0.0 && q[i] <= 1.0)) throw std::invalid_argument("quantile ranks must be in [0, 1]");
    if (q[i] == 0.0) { out[i] = min_; continue; }
    if (q[i] == 1.0) { out[i] = max_; continue; }
    const double want = std::ceil(q[i] * static_cast<double>(total));
    const auto it = std::lower_bound(cum.begin(), cum.end(), static_cast<uint64_t>(want));
    out[i] = it == cum.end() ? max_ : v[static_cast<size_t>(it - cum.begin())];
  }
}

void Kll::ranks(const double* x, int64_t n, double* out) const {
  if (n_ == 0) throw std::invalid_argument("rank on an empty sketch");
  std::vector<double> v;
  std::vector<uint64_t> cum;
  sorted_view(v, cum);
  const double total = static_cast<double>(cum.back());
  for (int64_t i = 0; i < n; ++i) {
    if (std::isnan(x[i])) throw std::invalid_argument("rank of NaN");
    const auto it = std::upper_bound(v.begin(), v.end(), x[i]);
    const size_t j = static_cast<size_t>(it - v.begin());
    out[i] = j == 0 ? 0.0 : static_cast<double>(cum[j - 1]) / total;
  }
}

// Image: 'PKLL' u8 version, u8 levels, u16 k, u64 n, u64 rng, f64 min, f64 max,
// u32 size per level, then the items level by level (float64, little-endian).
std::vector<uint8_t> Kll::serialize() const {
  const size_t nl = levels_.size();
  std::vector<uint8_t> out(4 + 1 + 1 + 2 + 8 + 8 + 16 + 4 * nl + 8 * num_retained());
  uint8_t* p = out.data();
  std::memcpy(p, "PKLL", 4);
  p[4] = kKllVersion;
  p[5] = static_cast<uint8_t>(nl);
  const uint16_t k = static_cast<uint16_t>(k_);
  std::memcpy(p + 6, &k, 2);
  std::memcpy(p + 8, &n_, 8);
  std::memcpy(p + 16, &rng_, 8);
  std::memcpy(p + 24, &min_, 8);
  std::memcpy(p + 32, &max_, 8);
  size_t o = 40;
  for (const auto& l : levels_) {
    const uint32_t s = static_cast<uint32_t>(l.size());
    std::memcpy(p + o, &s, 4);
    o += 4;
  }
  for (const auto& l : levels_) {
    if (!l.empty()) std::memcpy(p + o, l.data(), 8 * l.size());
    o += 8 * l.size();
  }
  return out;
}

Kll Kll::deserialize(const uint8_t* d, size_t len) {
  if (len < 40) bad("shorter than its 40-byte header");
  if (std::memcmp(d, "PKLL", 4) != 0) bad("missing 'PKLL' magic");
  if (d[4] != kKllVersion) bad("unsupported version " + std::to_string(d[4]));
  const size_t nl = d[5];
  if (nl < 1 || nl > 61) bad("level count out of range");
  uint16_t k;
  std::memcpy(&k, d + 6, 2);
  if (k < kM) bad("k below 8");
  Kll s(k);
  std::memcpy(&s.n_, d + 8, 8);
  std::memcpy(&s.rng_, d + 16, 8);
  if (s.rng_ == 0) bad("random state is zero (xorshift needs a non-zero state)");
  std::memcpy(&s.min_, d + 24, 8);
  std::memcpy(&s.max_, d + 32, 8);
  if (len < 40 + 4 * nl) bad("truncated level sizes");
  s.levels_.assign(nl, {});
  size_t total = 0;
  std::vector<uint32_t> sizes(nl);
  for (size_t h = 0; h < nl; ++h) {
    std::memcpy(&sizes[h], d + 40 + 4 * h, 4);
    if (sizes[h] > 2u * 65535u + 16) bad("level larger than any valid sketch holds");
    total += sizes[h];
  }
  if (len != 40 + 4 * nl + 8 * total) bad("length does not match the level sizes");
  const uint8_t* p = d + 40 + 4 * nl;
  unsigned __int128 weight = 0;
  for (size_t h = 0; h < nl; ++h) {
    auto& l = s.levels_[h];
    l.resize(sizes[h]);
    if (sizes[h]) std::memcpy(l.data(), p, 8 * sizes[h]);
    p += 8 * sizes[h];
    for (double x : l)
      if (std::isnan(x) || x < s.min_ || x > s.max_) bad("item outside [min, max] or NaN");
    if (h > 0 && !std::is_sorted(l.begin(), l.end())) bad("level " + std::to_string(h) + " is not sorted");
    weight += static_cast<unsigned __int128>(sizes[h]) << h;
  }
  if (weight != s.n_) bad("item weights do not add up to n");
  if (s.n_ > 0 && !(s.min_ <= s.max_)) bad("min above max");
  if (s.num_retained() > s.total_capacity() + 1) bad("more items than the capacity allows");
  return s;
}

namespace {
constexpr uint8_t kDsFamily = 15;
constexpr uint8_t kDsFlagEmpty = 1, kDsFlagSorted0 = 2, kDsFlagSingle = 4;
void put_item(uint8_t* p, double v, int sz) {
  if (sz == 8) {
    std::memcpy(p, &v, 8);
  } else {
    const float f = static_cast<float>(v);
    std::memcpy(p, &f, 4);
  }
}
double get_item(const uint8_t* p, int sz) {
  if (sz == 8) {
    double v;
    std::memcpy(&v, p, 8);
    return v;
  }
  float f;
  std::memcpy(&f, p, 4);
  return static_cast<double>(f);
}
[[noreturn]] void bad_ds(const std::string& why) {
  throw std::invalid_argument("DataSketches KLL image: " + why);
}
}  // namespace

// Layout (little-endian): preInts (2 empty/one item, 5 otherwise), serVer (1, or 2 for one item),
// family 15, flags (1 empty, 2 level 0 sorted, 4 one item), u16 k, u8 m = 8, one unused byte;
// then, unless empty or one item: u64 n, u16 min_k, u8 number of levels L, unused byte,
// L u32 level offsets into an items array of total_capacity slots (level 0 first, the top level
// ends at the capacity), min, max, the retained items level by level. One item: just the item.
std::vector<uint8_t> Kll::serialize_ds(int sz) const {
  if (sz != 4 && sz != 8) throw std::invalid_argument("item size must be 4 (float) or 8 (double)");
  if (sz == 4) {
    auto exact = [](double v) { return static_cast<double>(static_cast<float>(v)) == v; };
    bool ok = n_ == 0 || (exact(min_) && exact(max_));
    for (const auto& l : levels_)
      for (double v : l) ok = ok && exact(v);
    if (!ok) throw std::invalid_argument("a kept value is not exactly a float32: use item_type 'double'");
  }
  const uint16_t k = static_cast<uint16_t>(k_);
  auto header = [&](std::vector<uint8_t>& out, uint8_t pre, uint8_t ver, uint8_t flags) {
    out[0] = pre;
    out[1] = ver;
    out[2] = kDsFamily;
    out[3] = flags;
    std::memcpy(out.data() + 4, &k, 2);
    out[6] = kM;
    out[7] = 0;
  };
  if (n_ == 0) {
    std::vector<uint8_t> out(8);
    header(out, 2, 1, kDsFlagEmpty);
    return out;
  }
  if (n_ == 1) {
    std::vector<uint8_t> out(8 + static_cast<size_t>(sz));
    header(out, 2, 2, kDsFlagSingle);
    put_item(out.data() + 8, levels_[0].at(0), sz);
    return out;
  }
  const size_t nl = levels_.size();
  const size_t kept = num_retained();
  const uint64_t cap = total_capacity();
  if (kept > cap) throw std::invalid_argument("sketch holds more items than its capacity");
  std::vector<uint8_t> out(20 + 4 * nl + (2 + kept) * static_cast<size_t>(sz));
  header(out, 5, 1, 0);
  std::memcpy(out.data() + 8, &n_, 8);
  std::memcpy(out.data() + 16, &k, 2);
  out[18] = static_cast<uint8_t>(nl);
  out[19] = 0;
  uint32_t off = static_cast<uint32_t>(cap - kept);
  size_t o = 20;
  for (const auto& l : levels_) {
    std::memcpy(out.data() + o, &off, 4);
    o += 4;
    off += static_cast<uint32_t>(l.size());
  }
  put_item(out.data() + o, min_, sz);
  put_item(out.data() + o + sz, max_, sz);
  o += 2 * static_cast<size_t>(sz);
  for (const auto& l : levels_)
    for (double v : l) {
      put_item(out.data() + o, v, sz);
      o += static_cast<size_t>(sz);
    }
  return out;
}

Kll Kll::deserialize_ds(const uint8_t* d, size_t len, int sz, uint64_t seed) {
  if (sz != 0 && sz != 4 && sz != 8) throw std::invalid_argument("item size must be 4 (float) or 8 (double)");
  if (len < 8) bad_ds("shorter than its 8-byte preamble");
  const uint8_t pre = d[0], ver = d[1], flags = d[3];
  if (d[2] != kDsFamily) bad_ds("family " + std::to_string(d[2]) + " is not KLL (15)");
  uint16_t k;
  std::memcpy(&k, d + 4, 2);
  if (k < kM) bad_ds("k below 8");
  if (d[6] != kM) bad_ds("m = " + std::to_string(d[6]) + " (only DataSketches' default 8 is supported)");
  if (flags & ~(kDsFlagEmpty | kDsFlagSorted0 | kDsFlagSingle)) bad_ds("unknown flags");
  Kll s(k, seed);
  if (flags & kDsFlagEmpty) {
    if (pre != 2 || ver != 1 || (flags & kDsFlagSingle) || len != 8) bad_ds("malformed empty image");
    return s;
  }
  if (flags & kDsFlagSingle) {
    if (pre != 2 || ver != 2) bad_ds("malformed one-item image");
    const size_t isz = sz ? static_cast<size_t>(sz) : len - 8;
    if ((isz != 4 && isz != 8) || len != 8 + isz) bad_ds("length does not match one item");
    const double v = get_item(d + 8, static_cast<int>(isz));
    if (std::isnan(v)) bad_ds("NaN item");
    s.levels_[0].push_back(v);
    s.n_ = 1;
    s.min_ = s.max_ = v;
    return s;
  }
  if (pre != 5 || ver != 1) bad_ds("unsupported preamble " + std::to_string(pre) + " / serial version " + std::to_string(ver));
  if (len < 20) bad_ds("truncated header");
  uint64_t n;
  std::memcpy(&n, d + 8, 8);
  uint16_t min_k;
  std::memcpy(&min_k, d + 16, 2);
  if (min_k != k) bad_ds("min_k differs from k (a union of sketches of different k is not supported)");
  const size_t nl = d[18];
  if (nl < 1 || nl > 61) bad_ds("level count out of range");
  if (len < 20 + 4 * nl) bad_ds("truncated level offsets");
  s.levels_.assign(nl, {});
  const uint64_t cap = s.total_capacity();
  std::vector<uint64_t> offs(nl + 1);
  for (size_t h = 0; h < nl; ++h) {
    uint32_t o;
    std::memcpy(&o, d + 20 + 4 * h, 4);
    offs[h] = o;
  }
  offs[nl] = cap;
  for (size_t h = 0; h < nl; ++h)
    if (offs[h] > offs[h + 1]) bad_ds("level offsets are not increasing up to the capacity");
  const uint64_t kept = cap - offs[0];
  const uint64_t fixed = 20 + 4 * nl;
  size_t isz = static_cast<size_t>(sz);
  if (!sz) isz = len == fixed + (2 + kept) * 8 ? 8 : 4;
  if (len != fixed + (2 + kept) * isz) bad_ds("length does not match the level offsets");
  const uint8_t* p = d + fixed;
  s.min_ = get_item(p, static_cast<int>(isz));
  s.max_ = get_item(p + isz, static_cast<int>(isz));
  if (!(s.min_ <= s.max_)) bad_ds("min above max, or NaN");
  p += 2 * isz;
  unsigned __int128 weight = 0;
  for (size_t h = 0; h < nl; ++h) {
    auto& l = s.levels_[h];
    l.resize(static_cast<size_t>(offs[h + 1] - offs[h]));
    for (auto& v : l) {
      v = get_item(p, static_cast<int>(isz));
      p += isz;
      if (std::isnan(v) || v < s.min_ || v > s.max_) bad_ds("item outside [min, max] or NaN");
    }
    if (h > 0 && !std::is_sorted(l.begin(), l.end())) bad_ds("level " + std::to_string(h) + " is not sorted");
    weight += static_cast<unsigned __int128>(l.size()) << h;
  }
  if (weight != n || n < 2) bad_ds("item weights do not add up to n");
  s.n_ = n;
  return s;
}

}  // namespace sketches
}  // namespace pyperfcore
