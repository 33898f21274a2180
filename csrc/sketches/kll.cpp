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
  for (int d = 0; d < 64; ++d) {
    const double c = std::round(k_ * std::pow(2.0 / 3.0, static_cast<double>(d)));
    cap_by_depth_[d] = static_cast<uint32_t>(std::max<double>(kM, c));
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
void multi_select(uint64_t* a, size_t n, const uint32_t* ranks, size_t m, uint64_t* out, int depth) {
  if (m == 0) return;
  if (n <= 160 || depth > 10) {
    std::sort(a, a + n);
    for (size_t j = 0; j < m; ++j) out[j] = a[ranks[j]];
    return;
  }
  uint64_t lo = a[0], hi = a[0];
  for (size_t i = 1; i < n; ++i) {
    lo = a[i] < lo ? a[i] : lo;
    hi = a[i] > hi ? a[i] : hi;
  }
  if (lo == hi) {
    for (size_t j = 0; j < m; ++j) out[j] = lo;
    return;
  }
  const int want_bits = n >= 8192 ? 11 : (n >= 1024 ? 9 : 7);
  const uint64_t range = hi - lo;
  const int bits = 64 - __builtin_clzll(range);
  const int shift = bits > want_bits ? bits - want_bits : 0;
  const size_t nb = static_cast<size_t>(range >> shift) + 1;
  std::vector<uint32_t> cnt(nb, 0), pos(nb), inc(nb, 0), first(nb);
  for (size_t i = 0; i < n; ++i) ++cnt[(a[i] - lo) >> shift];
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
    const size_t b = static_cast<size_t>((a[i] - lo) >> shift);
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

bool Kll::insert_block(uint64_t* keys, size_t n) {
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
  multi_select(keys, n, ranks.data(), size, picked.data(), 0);
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
      for (; i < n && got < kBlock; ++i) {
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
      if (!insert_block(kb, kBlock)) { i = start; break; }
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

}  // namespace sketches
}  // namespace pyperfcore
