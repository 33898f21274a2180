#include "hll_ds.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "../common/threads.hpp"
#include "hll_simd.hpp"
#include "hll_tables.inc"
#include "sk_hash.hpp"

namespace pyperfcore {
namespace sketches {
namespace {

constexpr uint32_t kKeyMask26 = (1u << 26) - 1;
constexpr uint8_t kAuxToken = 15;
constexpr int kLgInitList = 3;
constexpr int kLgInitSet = 5;
// log2 of the initial exception-table size by lg_k (DataSketches' LG_AUX_ARR_INTS).
constexpr uint8_t kLgAuxArrInts[] = {0, 2, 2, 2, 2, 2, 2, 3, 3, 3, 4, 4, 5, 5, 6, 7, 8, 9, 10, 11, 12, 13};
// sqrt(ln 2) and sqrt(3 ln 2 - 1) as DataSketches writes them (rounded): the bounds for lg_k > 12
// then agree to the last bit, not just to 1e-10.
constexpr double kHipRseFactor = 0.8325546;
constexpr double kNonHipRseFactor = 1.03896;
constexpr double kCouponRse = 0.409 / (1 << 13);

// Empirical relative-error quantiles for lg_k 4..12 (sd 1, 2, 3), DataSketches' RelativeErrorTables.
constexpr double kHipLB[] = {0.207316195, 0.502865572, 0.882303765, 0.146981579, 0.335426881, 0.557052,
                             0.104026721, 0.227683872, 0.365888317, 0.073614601, 0.156781585, 0.245740374,
                             0.05205248,  0.108783763, 0.168030442, 0.036770852, 0.075727545, 0.11593785,
                             0.025990219, 0.053145536, 0.080772263, 0.018373987, 0.037266176, 0.056271814,
                             0.012936253, 0.02613829,  0.039387631};
constexpr double kHipUB[] = {-0.207805347, -0.355574279, -0.475535095, -0.146988328, -0.262390832, -0.360864026,
                             -0.103877775, -0.191503663, -0.269311582, -0.073452978, -0.138513438, -0.198487447,
                             -0.051982806, -0.099703123, -0.144128618, -0.036768609, -0.07138158,  -0.104430324,
                             -0.025991325, -0.050854296, -0.0748143,   -0.01834533,  -0.036121138, -0.05327616,
                             -0.012920332, -0.025572893, -0.037896952};
constexpr double kNonHipLB[] = {0.254409839, 0.682266712, 1.304022158, 0.181817353, 0.443389054, 0.778776219,
                                0.129432281, 0.295782195, 0.49252279,  0.091640655, 0.201175925, 0.323664385,
                                0.064858051, 0.138523393, 0.218805328, 0.045851855, 0.095925072, 0.148635751,
                                0.032454144, 0.067009668, 0.102660669, 0.022921382, 0.046868565, 0.071307398,
                                0.016155679, 0.032825719, 0.049677541};
constexpr double kNonHipUB[] = {-0.256980172, -0.411905944, -0.52651057,  -0.182332109, -0.310275547, -0.412660505,
                                -0.129314228, -0.230142294, -0.315636197, -0.091584836, -0.16834013,  -0.236346847,
                                -0.06487411,  -0.122045231, -0.174112107, -0.04591465,  -0.08784505,  -0.126917615,
                                -0.032433119, -0.062897613, -0.091862929, -0.022960633, -0.044875401, -0.065736049,
                                -0.016186662, -0.031827816, -0.046973459};

double rel_err(bool upper, bool ooo, int lg_k, int n_std) {
  if (lg_k > 12) {
    const double f = ooo ? kNonHipRseFactor : kHipRseFactor;
    return (upper ? -1.0 : 1.0) * (n_std * f) / std::sqrt(static_cast<double>(1u << lg_k));
  }
  const int idx = (lg_k - 4) * 3 + (n_std - 1);
  if (!ooo) return upper ? kHipUB[idx] : kHipLB[idx];
  return upper ? kNonHipUB[idx] : kNonHipLB[idx];
}

// Coupon-collector interpolation (lg 26 coupons), DataSketches' CubicInterpolation tables.
constexpr int kCouponEntries = 40;
constexpr double kCouponX[kCouponEntries] = {
    0.0, 1.0, 20.0, 400.0, 8000.0, 160000.0, 300000.0, 600000.0, 900000.0, 1200000.0,
    1500000.0, 1800000.0, 2100000.0, 2400000.0, 2700000.0, 3000000.0, 3300000.0, 3600000.0, 3900000.0, 4200000.0,
    4500000.0, 4800000.0, 5100000.0, 5400000.0, 5700000.0, 6000000.0, 6300000.0, 6600000.0, 6900000.0, 7200000.0,
    7500000.0, 7800000.0, 8100000.0, 8400000.0, 8700000.0, 9000000.0, 9300000.0, 9600000.0, 9900000.0, 10200000.0};
constexpr double kCouponY[kCouponEntries] = {
    0.0000000000000000, 1.0000000000000000, 20.0000009437402611, 400.0003963713384110,
    8000.1589294602090376, 160063.6067763759638183, 300223.7071597663452849, 600895.5933856170158833,
    902016.8065120954997838, 1203588.4983199508860707, 1505611.8245524743106216, 1808087.9449319066479802,
    2111018.0231759352609515, 2414403.2270142501220107, 2718244.7282051891088486, 3022543.7025524540804327,
    3327301.3299219091422856, 3632518.7942584538832307, 3938197.2836029687896371, 4244337.9901093561202288,
    4550942.1100616492331028, 4858010.8438911894336343, 5165545.3961938973516226, 5473546.9757476449012756,
    5782016.7955296505242586, 6090956.0727340159937739, 6400366.0287892958149314, 6710247.8893762007355690,
    7020602.8844453142955899, 7331432.2482349723577499, 7642737.2192891482263803, 7954519.0404754765331745,
    8266778.9590033423155546, 8579518.2264420464634895, 8892738.0987390466034412, 9206439.8362383283674717,
    9520624.7036988288164139, 9835293.9703129194676876, 10150448.9097250290215015, 10466090.8000503256917000};

double cubic(double x0, double y0, double x1, double y1, double x2, double y2, double x3, double y3, double x) {
  const double l0n = (x - x1) * (x - x2) * (x - x3), l1n = (x - x0) * (x - x2) * (x - x3);
  const double l2n = (x - x0) * (x - x1) * (x - x3), l3n = (x - x0) * (x - x1) * (x - x2);
  const double l0d = (x0 - x1) * (x0 - x2) * (x0 - x3), l1d = (x1 - x0) * (x1 - x2) * (x1 - x3);
  const double l2d = (x2 - x0) * (x2 - x1) * (x2 - x3), l3d = (x3 - x0) * (x3 - x1) * (x3 - x2);
  return y0 * l0n / l0d + y1 * l1n / l1d + y2 * l2n / l2d + y3 * l3n / l3d;
}

// j with x[j] <= v < x[j+1] (v < x[len-1]).
int straddle(const double* x, int len, double v) {
  int l = 0, r = len - 1;
  while (l + 1 < r) {
    const int m = l + (r - l) / 2;
    if (x[m] <= v) l = m; else r = m;
  }
  return l;
}

double coupon_interp(double v) {
  const int len = kCouponEntries;
  if (v >= kCouponX[len - 1]) return kCouponY[len - 1];
  int off = straddle(kCouponX, len, v);
  off = off == 0 ? 0 : (off == len - 2 ? off - 2 : off - 1);
  return cubic(kCouponX[off], kCouponY[off], kCouponX[off + 1], kCouponY[off + 1], kCouponX[off + 2],
               kCouponY[off + 2], kCouponX[off + 3], kCouponY[off + 3], v);
}

double stride_interp(const double* x, int len, double ys, double v) {
  if (v == x[len - 1]) return ys * (len - 1);
  int off = straddle(x, len, v);
  off = off == 0 ? 0 : (off == len - 2 ? off - 2 : off - 1);
  return cubic(x[off], ys * off, x[off + 1], ys * (off + 1), x[off + 2], ys * (off + 2), x[off + 3], ys * (off + 3), v);
}

double harmonic(uint64_t n) {
  static const double exact[25] = {0.0, 1.0, 1.5, 11.0 / 6.0, 25.0 / 12.0, 137.0 / 60.0, 49.0 / 20.0,
                                   363.0 / 140.0, 761.0 / 280.0, 7129.0 / 2520.0, 7381.0 / 2520.0,
                                   83711.0 / 27720.0, 86021.0 / 27720.0, 1145993.0 / 360360.0,
                                   1171733.0 / 360360.0, 1195757.0 / 360360.0, 2436559.0 / 720720.0,
                                   42142223.0 / 12252240.0, 14274301.0 / 4084080.0, 275295799.0 / 77597520.0,
                                   55835135.0 / 15519504.0, 18858053.0 / 5173168.0, 19093197.0 / 5173168.0,
                                   444316699.0 / 118982864.0, 1347822955.0 / 356948592.0};
  if (n < 25) return exact[n];
  const double x = static_cast<double>(n);
  const double inv_sq = 1.0 / (x * x);
  double sum = std::log(x) + 0.577215664901532860606512090082 + 1.0 / (2.0 * x);
  double p = inv_sq;
  sum -= p * (1.0 / 12.0);
  p *= inv_sq;
  sum += p * (1.0 / 120.0);
  p *= inv_sq;
  sum -= p * (1.0 / 252.0);
  p *= inv_sq;
  sum += p * (1.0 / 240.0);
  return sum;
}

// 2^-e for register values 0..63 (exact), looked up on the union's register loops.
struct InvPow2Table {
  double v[64];
  InvPow2Table() {
    for (int e = 0; e < 64; ++e) v[e] = std::ldexp(1.0, -e);
  }
};
const InvPow2Table kInvPow2;
inline double inv_pow2(int e) { return kInvPow2.v[e & 63]; }

template <class T>
void put(std::vector<uint8_t>& out, size_t off, T v) {
  std::memcpy(out.data() + off, &v, sizeof(T));
}
template <class T>
T get(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

[[noreturn]] void bad(const std::string& why) { throw std::invalid_argument("HLL image: " + why); }

}  // namespace

uint32_t ds_coupon(uint64_t h1, uint64_t h2) {
  const int lz = h2 == 0 ? 64 : __builtin_clzll(h2);
  const uint32_t value = static_cast<uint32_t>(std::min(lz, 62) + 1);
  return (value << 26) | static_cast<uint32_t>(h1 & kKeyMask26);
}

bool ds_coupons(const ValueBatch& b, int64_t begin, int64_t end, uint32_t* out) {
  if (b.kind == VKind::i64) {
    const int64_t* v = static_cast<const int64_t*>(b.data);
    for (int64_t i = begin; i < end; ++i) {
      const Hash128 h = murmur3_x64_128_u64(static_cast<uint64_t>(v[i]), kDsSeed);
      out[i - begin] = ds_coupon(h.h1, h.h2);
    }
    return true;
  }
  if (b.kind == VKind::f64) {
    const double* v = static_cast<const double*>(b.data);
    for (int64_t i = begin; i < end; ++i) {
      double d = v[i];
      uint64_t bits;
      if (d == 0.0) d = 0.0;  // -0.0 -> 0.0
      std::memcpy(&bits, &d, 8);
      if (std::isnan(d)) bits = 0x7ff8000000000000ULL;  // one NaN, as Java's doubleToLongBits
      const Hash128 h = murmur3_x64_128_u64(bits, kDsSeed);
      out[i - begin] = ds_coupon(h.h1, h.h2);
    }
    return true;
  }
  std::string scratch;
  uint32_t* o = out;
  return for_each_bytes(b, begin, end, scratch, [&](const uint8_t* p, size_t len) {
    if (len == 0) {
      *o++ = 0;  // empty strings are ignored, as DataSketches does
    } else {
      const Hash128 h = murmur3_x64_128(p, len, kDsSeed);
      *o++ = ds_coupon(h.h1, h.h2);
    }
  });
}

DsHll::DsHll(int lg_k, HllType type) : lg_k_(static_cast<uint8_t>(lg_k)), type_(type) {
  if (lg_k < kDsMinLgK || lg_k > kDsMaxLgK)
    throw std::invalid_argument("lg_k must be in [4, 21], got " + std::to_string(lg_k));
  if (static_cast<int>(type) > 2) throw std::invalid_argument("hll_type must be HLL_4, HLL_6 or HLL_8");
  coupons_.assign(1u << kLgInitList, 0);
  lg_arr_ = kLgInitList;
}

bool DsHll::is_empty() const {
  if (mode_ != HllMode::hll) return count_ == 0;
  return cur_min_ == 0 && num_at_cur_min_ == (1u << lg_k_);
}

void DsHll::update(const ValueBatch& b) {
  if (b.kind == VKind::i64 || b.kind == VKind::f64) {
    update_u64(static_cast<const uint64_t*>(b.data), b.n, b.kind == VKind::f64);
    return;
  }
  constexpr int64_t kChunk = 1 << 15;
  std::vector<uint32_t> buf(static_cast<size_t>(std::min<int64_t>(b.n, kChunk)));
  for (int64_t start = 0; start < b.n; start += kChunk) {
    const int64_t len = std::min(kChunk, b.n - start);
    if (!ds_coupons(b, start, start + len, buf.data()))
      throw std::invalid_argument("update: a string holds a code point that is not valid Unicode");
    apply_coupons(buf.data(), len);
  }
}

void DsHll::apply_coupons(const uint32_t* c, int64_t len) {
  int64_t i = 0;
  while (i < len && mode_ != HllMode::hll) {
    if (c[i] != 0) coupon_update(c[i]);
    ++i;
  }
  if (i == len) return;
  const uint32_t mask = (1u << lg_k_) - 1;
  if (type_ == HllType::hll4) {
    for (; i < len; ++i)
      if (c[i] != 0 && (c[i] >> 26) > cur_min_) hll4_update(c[i] & mask, static_cast<uint8_t>(c[i] >> 26));
  } else {
    uint8_t* r = regs_.data();
    for (; i < len; ++i) {
      const uint32_t slot = c[i] & mask;
      const uint8_t v = static_cast<uint8_t>(c[i] >> 26);
      if (v > r[slot]) hll_update(slot, v);  // rare once the sketch has warmed up
    }
  }
}

void DsHll::update_u64(const uint64_t* keys, int64_t n, bool is_f64) {
  // LIST / SET modes take every coupon. In HLL mode the SIMD kernel hashes a chunk and keeps only
  // the coupons above their register (against the registers as they were before the chunk:
  // the others cannot change anything, registers only grow); those few are then applied in
  // input order, because the HIP accumulator depends on the order of register changes.
  const CpuTarget t = active_target();
  constexpr int64_t kChunk = 1 << 14;
  constexpr int64_t kPart = 1 << 13;  // per-thread share of a chunk for the candidate scan
  std::vector<uint32_t> buf(static_cast<size_t>(std::min<int64_t>(n, kChunk)));
  int64_t i = 0;
  while (i < n && mode_ != HllMode::hll) {
    const int64_t len = std::min<int64_t>(mode_ == HllMode::list ? 64 : 1024, n - i);
    ds_coupons_u64(keys + i, len, is_f64, buf.data(), t);
    apply_coupons(buf.data(), len);
    i += len;
  }
  // Below AVX-512 the scan is hash-bound and a second thread helps; the AVX-512 kernel runs at
  // several hundred million keys/s on one core, where handing chunks to the pool costs more.
  const int threads = t >= CpuTarget::avx512 ? 1 : get_num_threads();
  while (i < n) {
    const int64_t len = std::min(kChunk, n - i);
    const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(threads, len / kPart));
    int64_t counts[64];
    const int64_t np = std::min<int64_t>(parts, 64);
    const int64_t per = (len + np - 1) / np;
    const uint8_t* regs = regs_.data();
    auto scan = [&](int64_t lo, int64_t hi) {
      for (int64_t p = lo; p < hi; ++p) {
        const int64_t b = p * per, e = std::min(len, b + per);
        counts[p] = ds_hll_candidates(keys + i + b, e - b, is_f64, regs, lg_k_, buf.data() + b, t);
      }
    };
    if (np > 1) parallel_for(np, 1, scan);
    else scan(0, 1);
    for (int64_t p = 0; p < np; ++p) apply_coupons(buf.data() + p * per, counts[p]);
    i += len;
  }
}

void DsHll::coupon_update(uint32_t coupon) {
  if (coupon == 0) return;
  if (mode_ == HllMode::list) {
    for (size_t i = 0; i < coupons_.size(); ++i) {
      if (coupons_[i] == 0) {
        coupons_[i] = coupon;
        if (++count_ == coupons_.size()) {
          if (lg_k_ < 8) promote_to_hll(); else promote_list_to_set();
        }
        return;
      }
      if (coupons_[i] == coupon) return;
    }
    return;
  }
  if (mode_ == HllMode::set) {
    const int idx = set_find(coupon);
    if (idx >= 0) return;
    coupons_[static_cast<size_t>(~idx)] = coupon;
    ++count_;
    if (4 * count_ > 3 * (1u << lg_arr_)) {
      if (lg_arr_ == lg_k_ - 3) promote_to_hll(); else set_grow();
    }
    return;
  }
  const uint32_t slot = (coupon & kKeyMask26) & ((1u << lg_k_) - 1);
  const uint8_t v = static_cast<uint8_t>(coupon >> 26);
  if (type_ == HllType::hll4) {
    if (v > cur_min_) hll4_update(slot, v);
  } else if (v > regs_[slot]) {
    hll_update(slot, v);
  }
}

int DsHll::set_find(uint32_t coupon) const {
  const uint32_t mask = (1u << lg_arr_) - 1;
  uint32_t probe = coupon & mask;
  const uint32_t start = probe;
  do {
    const uint32_t at = coupons_[probe];
    if (at == 0) return ~static_cast<int>(probe);
    if (at == coupon) return static_cast<int>(probe);
    const uint32_t stride = ((coupon & kKeyMask26) >> lg_arr_) | 1;
    probe = (probe + stride) & mask;
  } while (probe != start);
  throw std::invalid_argument("HLL coupon table is full");  // only reachable from a corrupt image
}

void DsHll::set_grow() {
  std::vector<uint32_t> old;
  old.swap(coupons_);
  ++lg_arr_;
  coupons_.assign(1u << lg_arr_, 0);
  for (uint32_t c : old) {
    if (c == 0) continue;
    const int idx = set_find(c);
    if (idx >= 0) throw std::invalid_argument("HLL image: duplicate coupon");
    coupons_[static_cast<size_t>(~idx)] = c;
  }
}

void DsHll::promote_list_to_set() {
  std::vector<uint32_t> old;
  old.swap(coupons_);
  mode_ = HllMode::set;
  lg_arr_ = kLgInitSet;
  count_ = 0;
  coupons_.assign(1u << lg_arr_, 0);
  for (uint32_t c : old)
    if (c != 0) coupon_update(c);
}

void DsHll::promote_to_hll() {
  const double est = coupon_estimate();
  std::vector<uint32_t> old;
  old.swap(coupons_);
  mode_ = HllMode::hll;
  count_ = 0;
  lg_arr_ = 0;
  const uint32_t k = 1u << lg_k_;
  regs_.assign(k, 0);
  hip_ = 0;
  kxq0_ = k;
  kxq1_ = 0;
  cur_min_ = 0;
  num_at_cur_min_ = k;
  has_aux_ = false;
  aux_.clear();
  aux_count_ = 0;
  ooo_ = false;
  for (uint32_t c : old)
    if (c != 0) coupon_update(c);
  hip_ = est;
  ooo_ = false;
}

void DsHll::hip_kxq_update(uint8_t old_v, uint8_t new_v) {
  const double k = static_cast<double>(1u << lg_k_);
  if (!ooo_) hip_ += k / (kxq0_ + kxq1_);
  if (old_v < 32) kxq0_ -= inv_pow2(old_v); else kxq1_ -= inv_pow2(old_v);
  if (new_v < 32) kxq0_ += inv_pow2(new_v); else kxq1_ += inv_pow2(new_v);
}

void DsHll::hll_update(uint32_t slot, uint8_t v) {
  const uint8_t old = regs_[slot];
  regs_[slot] = v;
  hip_kxq_update(old, v);
  if (old == 0) --num_at_cur_min_;
}

void DsHll::hll4_update(uint32_t slot, uint8_t v) {
  const uint8_t old = regs_[slot];
  if (v <= old) return;
  hip_kxq_update(old, v);
  const bool old_exc = old - cur_min_ >= kAuxToken;
  if (old_exc) aux_replace(slot, v);
  else if (v - cur_min_ >= kAuxToken) aux_add(slot, v);
  regs_[slot] = v;
  if (old == cur_min_) {
    --num_at_cur_min_;
    while (num_at_cur_min_ == 0) shift_cur_min();
  }
}

void DsHll::shift_cur_min() {
  const uint8_t nm = static_cast<uint8_t>(cur_min_ + 1);
  uint32_t n_at = 0;
  for (uint8_t r : regs_) n_at += (r == nm);
  std::vector<uint32_t> old;
  old.swap(aux_);
  const bool had = has_aux_;
  has_aux_ = false;
  aux_count_ = 0;
  cur_min_ = nm;
  if (had) {
    for (uint32_t e : old) {
      if (e == 0) continue;
      const uint8_t val = static_cast<uint8_t>(e >> 26);
      if (val - nm >= kAuxToken) aux_add(e & ((1u << lg_k_) - 1), val);
    }
  }
  num_at_cur_min_ = n_at;
}

int DsHll::aux_find(uint32_t slot) const {
  const uint32_t amask = (1u << lg_aux_) - 1;
  const uint32_t kmask = (1u << lg_k_) - 1;
  uint32_t probe = slot & amask;
  const uint32_t start = probe;
  do {
    const uint32_t e = aux_[probe];
    if (e == 0) return ~static_cast<int>(probe);
    if ((e & kmask) == slot) return static_cast<int>(probe);
    const uint32_t stride = (slot >> lg_aux_) | 1;
    probe = (probe + stride) & amask;
  } while (probe != start);
  throw std::invalid_argument("HLL exception table is full");
}

void DsHll::aux_add(uint32_t slot, uint8_t v) {
  if (!has_aux_) {
    has_aux_ = true;
    lg_aux_ = kLgAuxArrInts[lg_k_];
    aux_.assign(1u << lg_aux_, 0);
    aux_count_ = 0;
  }
  const int idx = aux_find(slot);
  if (idx >= 0) throw std::invalid_argument("HLL image: duplicate exception slot");
  aux_[static_cast<size_t>(~idx)] = (static_cast<uint32_t>(v) << 26) | slot;
  ++aux_count_;
  if (4 * aux_count_ > 3 * (1u << lg_aux_)) {
    std::vector<uint32_t> old;
    old.swap(aux_);
    ++lg_aux_;
    aux_.assign(1u << lg_aux_, 0);
    for (uint32_t e : old) {
      if (e == 0) continue;
      const int j = aux_find(e & ((1u << lg_k_) - 1));
      aux_[static_cast<size_t>(~j)] = e;
    }
  }
}

void DsHll::aux_replace(uint32_t slot, uint8_t v) {
  const int idx = has_aux_ ? aux_find(slot) : -1;
  if (idx < 0) throw std::invalid_argument("HLL image: exception slot missing from the aux table");
  aux_[static_cast<size_t>(idx)] = (static_cast<uint32_t>(v) << 26) | slot;
}

double DsHll::coupon_estimate() const {
  return std::max(coupon_interp(static_cast<double>(count_)), static_cast<double>(count_));
}

double DsHll::hll_raw_estimate() const {
  const double k = static_cast<double>(1u << lg_k_);
  double cf;
  if (lg_k_ == 4) cf = 0.673;
  else if (lg_k_ == 5) cf = 0.697;
  else if (lg_k_ == 6) cf = 0.709;
  else cf = 0.7213 / (1.0 + 1.079 / k);
  return cf * k * k / (kxq0_ + kxq1_);
}

double DsHll::bitmap_estimate() const {
  const uint32_t k = 1u << lg_k_;
  const uint32_t unhit = cur_min_ == 0 ? num_at_cur_min_ : 0;
  if (unhit == 0) return k * std::log(k / 0.5);
  const uint32_t hit = k - unhit;
  return k * (harmonic(k) - harmonic(k - hit));
}

double DsHll::composite_estimate() const {
  if (mode_ != HllMode::hll) return coupon_estimate();
  const double raw = hll_raw_estimate();
  const double* x = hlltab::kCompositeX[lg_k_ - 4];
  const int len = 257;
  const double ys = hlltab::kCompositeYStride[lg_k_ - 4];
  if (raw < x[0]) return 0;
  if (raw > x[len - 1]) return raw * (ys * (len - 1) / x[len - 1]);
  const double adj = stride_interp(x, len, ys, raw);
  if (adj > 3.0 * (1u << lg_k_)) return adj;
  const double lin = bitmap_estimate();
  const double avg = (adj + lin) / 2.0;
  double cross = 0.64;
  if (lg_k_ == 4) cross = 0.718;
  else if (lg_k_ == 5) cross = 0.672;
  return avg > cross * (1u << lg_k_) ? adj : lin;
}

double DsHll::estimate() const {
  if (mode_ != HllMode::hll) return coupon_estimate();
  return ooo_ ? composite_estimate() : hip_;
}

double DsHll::lower_bound(int n_std) const {
  if (n_std < 1 || n_std > 3) throw std::invalid_argument("n_std must be 1, 2 or 3");
  if (mode_ != HllMode::hll) {
    const double est = coupon_interp(count_);
    return std::max(est / (1.0 + n_std * kCouponRse), static_cast<double>(count_));
  }
  const uint32_t k = 1u << lg_k_;
  const double nz = cur_min_ == 0 ? static_cast<double>(k - num_at_cur_min_) : k;
  return std::max(estimate() / (1.0 + rel_err(false, ooo_, lg_k_, n_std)), nz);
}

double DsHll::upper_bound(int n_std) const {
  if (n_std < 1 || n_std > 3) throw std::invalid_argument("n_std must be 1, 2 or 3");
  if (mode_ != HllMode::hll) {
    const double est = coupon_interp(count_);
    return std::max(est / (1.0 - n_std * kCouponRse), static_cast<double>(count_));
  }
  return estimate() / (1.0 + rel_err(true, ooo_, lg_k_, n_std));
}

static uint32_t hll_arr_bytes(HllType t, int lg_k) {
  const uint32_t k = 1u << lg_k;
  if (t == HllType::hll4) return k / 2;
  if (t == HllType::hll6) return ((k * 3) >> 2) + 1;
  return k;
}

std::vector<uint8_t> DsHll::serialize(bool compact) const {
  const bool empty = is_empty();
  uint8_t flags = static_cast<uint8_t>((empty ? 4 : 0) | (compact ? 8 : 0) | (ooo_ ? 16 : 0));
  const uint8_t mode_byte = static_cast<uint8_t>(static_cast<uint8_t>(mode_) | (static_cast<uint8_t>(type_) << 2));
  std::vector<uint8_t> out;
  if (mode_ != HllMode::hll) {
    const bool set = mode_ == HllMode::set;
    const size_t start = set ? 12 : 8;
    const size_t n = compact ? count_ : coupons_.size();
    out.assign(start + 4 * n, 0);
    out[0] = set ? 3 : 2;
    out[1] = 1;
    out[2] = 7;
    out[3] = lg_k_;
    out[4] = lg_arr_;
    out[5] = flags;
    out[6] = set ? 0 : static_cast<uint8_t>(count_);
    out[7] = mode_byte;
    if (set) put<uint32_t>(out, 8, count_);
    size_t o = start;
    for (uint32_t c : coupons_) {
      if (compact && c == 0) continue;
      put<uint32_t>(out, o, c);
      o += 4;
    }
    return out;
  }
  const uint32_t k = 1u << lg_k_;
  const uint32_t arr = hll_arr_bytes(type_, lg_k_);
  size_t aux_bytes = 0;
  if (type_ == HllType::hll4) {
    if (has_aux_) aux_bytes = compact ? 4u * aux_count_ : (4u << lg_aux_);
    else if (!compact) aux_bytes = 4u << kLgAuxArrInts[lg_k_];
  }
  out.assign(40 + arr + aux_bytes, 0);
  out[0] = 10;
  out[1] = 1;
  out[2] = 7;
  out[3] = lg_k_;
  out[4] = has_aux_ ? lg_aux_ : 0;
  out[5] = flags;
  out[6] = cur_min_;
  out[7] = mode_byte;
  put<double>(out, 8, hip_);
  put<double>(out, 16, kxq0_);
  put<double>(out, 24, kxq1_);
  put<uint32_t>(out, 32, num_at_cur_min_);
  put<uint32_t>(out, 36, has_aux_ ? aux_count_ : 0);
  uint8_t* a = out.data() + 40;
  if (type_ == HllType::hll8) {
    std::memcpy(a, regs_.data(), k);
  } else if (type_ == HllType::hll6) {
    for (uint32_t i = 0; i < k; ++i) {
      const uint32_t bit = i * 6, byte = bit >> 3, sh = bit & 7;
      const uint32_t v = static_cast<uint32_t>(regs_[i] & 63) << sh;
      a[byte] |= static_cast<uint8_t>(v);
      a[byte + 1] |= static_cast<uint8_t>(v >> 8);
    }
  } else {
    for (uint32_t i = 0; i < k; ++i) {
      const uint32_t sh = regs_[i] - cur_min_;
      const uint8_t nib = static_cast<uint8_t>(sh >= kAuxToken ? kAuxToken : sh);
      a[i >> 1] |= static_cast<uint8_t>((i & 1) ? nib << 4 : nib);
    }
    uint8_t* x = a + arr;
    if (has_aux_) {
      if (compact) {
        for (uint32_t e : aux_)
          if (e != 0) { std::memcpy(x, &e, 4); x += 4; }
      } else {
        std::memcpy(x, aux_.data(), 4u << lg_aux_);
      }
    }
  }
  return out;
}

DsHll DsHll::deserialize(const uint8_t* d, size_t len) {
  if (len < 8) bad("shorter than its 8-byte preamble");
  const uint8_t pre = d[0];
  if (d[1] != 1) bad("unsupported serial version " + std::to_string(d[1]) + " (expected 1)");
  if (d[2] != 7) bad("family id " + std::to_string(d[2]) + " is not HLL (7)");
  const int lg_k = d[3];
  if (lg_k < kDsMinLgK || lg_k > kDsMaxLgK) bad("lg_k " + std::to_string(lg_k) + " outside [4, 21]");
  const uint8_t flags = d[5];
  const int mode = d[7] & 3;
  const int type = (d[7] >> 2) & 3;
  if (type > 2) bad("unknown target type");
  if (d[7] >> 4) bad("unknown bits in the mode byte");
  const bool compact = flags & 8, ooo = flags & 16, empty = flags & 4;
  if (flags & ~(4 | 8 | 16 | 32 | 2 | 1)) bad("unknown flag bits");
  DsHll s(lg_k, static_cast<HllType>(type));
  if (mode == 0 || mode == 1) {
    const bool set = mode == 1;
    if (pre != (set ? 3 : 2)) bad("preamble size does not match the mode");
    const size_t start = set ? 12 : 8;
    if (set && lg_k < 8) bad("SET mode needs lg_k >= 8");
    if (len < start) bad("truncated SET header");
    uint32_t count = set ? get<uint32_t>(d + 8) : d[6];
    if (empty) count = 0;
    const uint32_t cap = set ? (3u << (lg_k - 3)) / 4 : 7;  // most coupons a valid LIST/SET holds
    if (count > (set ? cap + 1 : 8)) bad("coupon count " + std::to_string(count) + " too large for its mode");
    int lg_arr = d[4];
    size_t n_in;
    if (compact || empty) {
      n_in = count;
    } else {
      const int max_lg = set ? lg_k - 3 : kLgInitList;
      if (lg_arr < (set ? kLgInitSet : kLgInitList) || lg_arr > max_lg) bad("bad array size byte");
      n_in = size_t(1) << lg_arr;
    }
    if (len < start + 4 * n_in) bad("truncated coupon array (" + std::to_string(len) + " bytes)");
    if (set) {
      s.mode_ = HllMode::set;
      if (!compact && !empty) {
        // Updatable image: the table is taken as stored (DataSketches copies it), after checking
        // that every coupon sits where a probe for it would find it (no duplicates, no holes).
        s.lg_arr_ = static_cast<uint8_t>(lg_arr);
        s.coupons_.assign(n_in, 0);
        uint32_t seen = 0;
        for (size_t i = 0; i < n_in; ++i) {
          const uint32_t c = get<uint32_t>(d + start + 4 * i);
          if (c == 0) continue;
          if ((c >> 26) < 1) bad("coupon value out of range");
          s.coupons_[i] = c;
          ++seen;
        }
        if (seen != count) bad("coupon count does not match the coupons present");
        if (4ull * count > 3ull * n_in) bad("coupon table fuller than DataSketches lets it grow");
        for (size_t i = 0; i < n_in; ++i) {
          const uint32_t c = s.coupons_[i];
          if (c != 0 && s.set_find(c) != static_cast<int>(i)) bad("coupon table is not a valid hash table");
        }
        s.count_ = count;
        s.ooo_ = ooo;
        return s;
      }
      // Compact image: replayed into a fresh table from its initial size, as DataSketches does,
      // so the table (and the next image) has the order DataSketches' own reload gives.
      s.lg_arr_ = kLgInitSet;
      s.coupons_.assign(1u << kLgInitSet, 0);
    }
    uint32_t seen = 0;
    for (size_t i = 0; i < n_in; ++i) {
      const uint32_t c = get<uint32_t>(d + start + 4 * i);
      if (c == 0) {
        if (compact) bad("empty coupon in a compact image");
        continue;
      }
      const uint32_t v = c >> 26;
      if (v < 1 || v > 63) bad("coupon value out of range");
      // a duplicate coupon would change the count: refuse rather than silently repair
      if (s.mode_ == HllMode::list) {
        for (uint32_t j = 0; j < s.count_; ++j)
          if (s.coupons_[j] == c) bad("duplicate coupon");
      } else if (s.mode_ == HllMode::set && s.set_find(c) >= 0) {
        bad("duplicate coupon");
      }
      s.coupon_update(c);
      ++seen;
    }
    if (seen != count) bad("coupon count does not match the coupons present");
    if (s.mode_ != HllMode::hll) s.ooo_ = ooo;
    return s;
  }
  if (mode != 2) bad("unknown mode");
  if (pre != 10) bad("preamble size does not match HLL mode");
  const uint32_t k = 1u << lg_k;
  const uint32_t arr = hll_arr_bytes(s.type_, lg_k);
  if (len < 40 + size_t(arr)) bad("truncated register array (" + std::to_string(len) + " bytes)");
  const double hip = get<double>(d + 8), kxq0 = get<double>(d + 16), kxq1 = get<double>(d + 24);
  const uint32_t num_at = get<uint32_t>(d + 32), aux_count = get<uint32_t>(d + 36);
  const uint8_t cur_min = d[6];
  if (!std::isfinite(hip) || hip < 0 || hip > 1e19) bad("HIP accumulator out of range");
  s.mode_ = HllMode::hll;
  s.coupons_.clear();
  s.count_ = 0;
  s.lg_arr_ = 0;
  s.regs_.assign(k, 0);
  s.ooo_ = ooo;
  const uint8_t* a = d + 40;
  if (s.type_ == HllType::hll8) {
    for (uint32_t i = 0; i < k; ++i) {
      if (a[i] > 63) bad("register value above 63");
      s.regs_[i] = a[i];
    }
  } else if (s.type_ == HllType::hll6) {
    for (uint32_t i = 0; i < k; ++i) {
      const uint32_t bit = i * 6, byte = bit >> 3, sh = bit & 7;
      const uint32_t two = a[byte] | (static_cast<uint32_t>(a[byte + 1]) << 8);
      s.regs_[i] = static_cast<uint8_t>((two >> sh) & 63);
    }
  } else {
    if (cur_min > 63) bad("cur_min above 63");
    const size_t off = 40 + arr;
    uint32_t tokens = 0;
    for (uint32_t i = 0; i < k; ++i) {
      const uint8_t nib = (a[i >> 1] >> ((i & 1) * 4)) & 15;
      if (nib == kAuxToken) { ++tokens; s.regs_[i] = 0xFF; continue; }
      if (nib + cur_min > 63) bad("register value above 63");
      s.regs_[i] = static_cast<uint8_t>(nib + cur_min);
    }
    if (aux_count != tokens) bad("exception count does not match the exception tokens");
    if (aux_count > 0) {
      size_t n_in;
      int lg_aux;
      if (compact) {
        n_in = aux_count;
        uint32_t p2 = 1;
        while (p2 < aux_count) p2 <<= 1;
        if (4ull * aux_count > 3ull * p2) p2 <<= 1;
        int lg = 0;
        while ((1u << lg) < p2) ++lg;
        lg_aux = std::max<int>(kLgAuxArrInts[lg_k], lg);
      } else {
        lg_aux = d[4];
        if (lg_aux < kLgAuxArrInts[lg_k] || lg_aux > lg_k) bad("bad exception table size");
        n_in = size_t(1) << lg_aux;
      }
      if (len < off + 4 * n_in) bad("truncated exception table");
      s.has_aux_ = true;
      s.lg_aux_ = static_cast<uint8_t>(lg_aux);
      s.aux_.assign(1u << lg_aux, 0);
      s.aux_count_ = 0;
      s.cur_min_ = cur_min;
      uint32_t found = 0;
      for (size_t i = 0; i < n_in; ++i) {
        const uint32_t e = get<uint32_t>(d + off + 4 * i);
        if (e == 0) {
          if (compact) bad("empty exception entry in a compact image");
          continue;
        }
        const uint32_t slot = (e & kKeyMask26) & (k - 1);
        const uint32_t v = e >> 26;
        if ((e & kKeyMask26) >= k) bad("exception slot out of range");
        if (s.regs_[slot] != 0xFF) bad("exception for a slot without an exception token");
        if (v > 63 || v < cur_min + 15u) bad("exception value out of range");
        if (s.aux_find(slot) >= 0) bad("duplicate exception slot");
        // insert keeping DataSketches' table order (growth included)
        s.aux_add(slot, static_cast<uint8_t>(v));
        ++found;
      }
      if (found != aux_count) bad("exception count does not match the table");
      for (uint32_t i = 0; i < k; ++i) {
        if (s.regs_[i] != 0xFF) continue;
        const int idx = s.aux_find(i);
        if (idx < 0) bad("exception token without an exception entry");
        s.regs_[i] = static_cast<uint8_t>(s.aux_[static_cast<size_t>(idx)] >> 26);
      }
    }
  }
  // Counters are checked against the registers: a forged image must not give absurd estimates.
  uint8_t mn = 63;
  uint32_t zeros = 0, n_min = 0;
  double q0 = 0, q1 = 0;
  for (uint8_t r : s.regs_) {
    zeros += (r == 0);
    if (r < mn) { mn = r; n_min = 0; }
    n_min += (r == mn);
    if (r < 32) q0 += inv_pow2(r); else q1 += inv_pow2(r);
  }
  if (s.type_ == HllType::hll4) {
    if (cur_min != mn) bad("cur_min does not match the registers");
    if (num_at != n_min) bad("count at cur_min does not match the registers");
    s.cur_min_ = cur_min;
  } else if (cur_min == 0) {
    if (num_at != zeros) bad("zero count does not match the registers");
    s.cur_min_ = 0;
  } else {
    // DataSketches' union gadget, once its estimate was asked for, rebuilds curMin and the
    // count at curMin from the registers and copies them into an HLL_8 result.
    if (cur_min != mn || num_at != n_min) bad("cur_min / count at cur_min do not match the registers");
    s.cur_min_ = cur_min;
  }
  s.num_at_cur_min_ = num_at;
  if (!(std::fabs(kxq0 + kxq1 - (q0 + q1)) <= 1e-6 * (q0 + q1))) bad("kxq registers do not match the registers");
  s.kxq0_ = kxq0;
  s.kxq1_ = kxq1;
  s.hip_ = hip;
  if (!ooo) {
    // The HIP accumulator is what estimate() reports: it must be of the order the registers
    // imply (real sketches stay within a few standard errors; the bound is far looser).
    const double reg = s.composite_estimate();
    const double kk = static_cast<double>(k);
    if (hip > 8.0 * (reg + kk) || hip < reg / 8.0 - kk) bad("HIP accumulator inconsistent with the registers");
  }
  return s;
}

DsHll DsHll::hll_from_values(const DsHll& src, HllType type) {
  // Rebuild an HLL-mode sketch of another type by replaying the registers in slot order.
  DsHll d(src.lg_k_, type);
  d.coupons_.clear();
  d.mode_ = HllMode::hll;
  d.lg_arr_ = 0;
  const uint32_t k = 1u << src.lg_k_;
  d.regs_.assign(k, 0);
  d.kxq0_ = k;
  d.kxq1_ = 0;
  d.num_at_cur_min_ = k;
  d.ooo_ = src.ooo_;
  for (uint32_t i = 0; i < k; ++i) {
    const uint8_t v = src.regs_[i];
    if (v == 0) continue;
    if (type == HllType::hll4) { if (v > d.cur_min_) d.hll4_update(i, v); }
    else if (v > d.regs_[i]) d.hll_update(i, v);
  }
  d.hip_ = src.hip_;
  return d;
}

DsHll DsHll::copy_as(HllType type) const {
  if (mode_ != HllMode::hll) {
    DsHll d = *this;
    d.type_ = type;
    return d;
  }
  if (type == type_ && !rebuild_) {
    DsHll d = *this;
    return d;
  }
  return hll_from_values(*this, type);
}

void DsHll::rebuild_kxq_zeros() {
  double q0 = static_cast<double>(1u << lg_k_), q1 = 0;
  uint32_t zeros = 0;
  for (uint8_t v : regs_) {
    if (v == 0) { ++zeros; continue; }
    if (v < 32) q0 += inv_pow2(v) - 1.0; else q1 += inv_pow2(v) - 1.0;
  }
  kxq0_ = q0;
  kxq1_ = q1;
  cur_min_ = 0;
  num_at_cur_min_ = zeros;
}

void DsHll::max_registers(const DsHll& src) {
  const uint32_t k = 1u << lg_k_;
  const uint32_t sk = 1u << src.lg_k_;
  const CpuTarget t = active_target();
  for (uint32_t base = 0; base < sk; base += k)  // src.lg_k >= lg_k: fold src onto k slots
    max_bytes(regs_.data(), src.regs_.data() + base, k, t);
  rebuild_ = true;
}

void DsHll::merge_hll_registers(const DsHll& src) {
  max_registers(src);
  rebuild_kxq_zeros();  // our estimates never read stale counters
}

void DsHll::union_update_many(DsHll& g, const DsHll* const* srcs, size_t n, int lg_max_k) {
  bool stale = false;  // registers merged, counters not yet rebuilt
  for (size_t j = 0; j < n; ++j) {
    const DsHll& src = *srcs[j];
    if (src.is_empty()) continue;
    // g is non-empty whenever it is stale (it just took a non-empty source), so the fast case
    // is exactly union_update's in-place case.
    if (g.mode_ == HllMode::hll && src.mode_ == HllMode::hll && src.lg_k_ >= g.lg_k_ && (stale || !g.is_empty())) {
      g.max_registers(src);
      g.ooo_ = true;
      g.hip_ = 0;
      stale = true;
      continue;
    }
    if (stale) { g.rebuild_kxq_zeros(); stale = false; }
    union_update(g, src, lg_max_k);
  }
  if (stale) g.rebuild_kxq_zeros();
}

DsHll DsHll::copy_or_downsample(const DsHll& src, int tgt_lg_k) {
  if (src.lg_k_ <= tgt_lg_k) return src.copy_as(HllType::hll8);
  DsHll d(tgt_lg_k, HllType::hll8);
  d.coupons_.clear();
  d.mode_ = HllMode::hll;
  d.lg_arr_ = 0;
  d.regs_.assign(1u << tgt_lg_k, 0);
  d.merge_hll_registers(src);
  d.hip_ = src.hip_;
  d.ooo_ = src.ooo_;
  return d;
}

void DsHll::union_update(DsHll& g, const DsHll& src, int lg_max_k) {
  if (src.is_empty()) return;
  if (g.mode_ == HllMode::hll && src.mode_ == HllMode::hll && src.lg_k_ >= g.lg_k_ && !g.is_empty()) {
    // the common case, in place: same result as union_of's last branch without copying the gadget
    g.merge_hll_registers(src);
    g.ooo_ = true;
    g.hip_ = 0;
    return;
  }
  g = union_of(g, src, lg_max_k);
}

DsHll DsHll::union_of(const DsHll& gadget, const DsHll& src, int lg_max_k) {
  if (src.is_empty()) return gadget;
  if (src.mode_ != HllMode::hll) {
    if (gadget.is_empty() && src.lg_k_ == gadget.lg_k_) return src.copy_as(HllType::hll8);
    DsHll d = gadget;
    for (uint32_t c : src.coupons_)
      if (c != 0) d.coupon_update(c);
    return d;
  }
  if (gadget.is_empty()) return copy_or_downsample(src, lg_max_k);
  if (gadget.mode_ != HllMode::hll) {
    DsHll d = copy_or_downsample(src, lg_max_k);
    for (uint32_t c : gadget.coupons_)
      if (c != 0) {
        const uint32_t slot = (c & kKeyMask26) & ((1u << d.lg_k_) - 1);
        const uint8_t v = static_cast<uint8_t>(c >> 26);
        if (v > d.regs_[slot]) d.hll_update(slot, v);
      }
    return d;
  }
  DsHll d = src.lg_k_ < gadget.lg_k_ ? copy_or_downsample(gadget, src.lg_k_) : gadget;
  d.merge_hll_registers(src);
  d.ooo_ = true;
  d.hip_ = 0;
  return d;
}

}  // namespace sketches
}  // namespace pyperfcore
