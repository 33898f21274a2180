#include "hll_redis.hpp"

#include <charconv>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "sk_hash.hpp"

namespace pyperfcore {
namespace sketches {
namespace {

constexpr uint64_t kSeed = 0xadc83b19ULL;
constexpr size_t kSparseMaxBytes = 3000;  // Redis' default hll-sparse-max-bytes
constexpr int kSparseValMax = 32;

[[noreturn]] void bad(const std::string& why) { throw std::invalid_argument("Redis HLL image: " + why); }

double sigma(double x) {
  if (x == 1.) return INFINITY;
  double zp, y = 1, z = x;
  do {
    x *= x;
    zp = z;
    z += x * y;
    y += y;
  } while (zp != z);
  return z;
}

double tau(double x) {
  if (x == 0. || x == 1.) return 0.;
  double zp, y = 1.0, z = 1 - x;
  do {
    x = std::sqrt(x);
    zp = z;
    y *= 0.5;
    z -= std::pow(1 - x, 2) * y;
  } while (zp != z);
  return z / 3;
}

void encode_sparse(const std::vector<uint8_t>& r, std::vector<uint8_t>& out) {
  int i = 0;
  while (i < kRedisRegisters) {
    const uint8_t v = r[i];
    int j = i;
    while (j < kRedisRegisters && r[j] == v) ++j;
    int run = j - i;
    if (v == 0) {
      while (run > 0) {
        if (run > 64) {
          const int n = std::min(run, 16384);
          out.push_back(static_cast<uint8_t>(0x40 | ((n - 1) >> 8)));
          out.push_back(static_cast<uint8_t>((n - 1) & 0xff));
          run -= n;
        } else {
          out.push_back(static_cast<uint8_t>(run - 1));
          run = 0;
        }
      }
    } else {
      while (run > 0) {
        const int n = std::min(run, 4);
        out.push_back(static_cast<uint8_t>(0x80 | ((v - 1) << 2) | (n - 1)));
        run -= n;
      }
    }
    i = j;
  }
}

}  // namespace

RedisHll::RedisHll() : regs_(kRedisRegisters, 0) {}

void RedisHll::touched() {
  card_valid_ = false;
  image_.clear();
}

void RedisHll::add_hash(uint64_t hash) {
  const uint32_t index = static_cast<uint32_t>(hash & (kRedisRegisters - 1));
  hash >>= kRedisP;
  hash |= uint64_t(1) << (64 - kRedisP);
  const uint8_t count = static_cast<uint8_t>(__builtin_ctzll(hash) + 1);
  if (count > regs_[index]) {
    regs_[index] = count;
    if (count > kSparseValMax) sparse_ = false;
    if (card_valid_ || !image_.empty()) touched();
  }
}

void RedisHll::update(const ValueBatch& b) {
  if (b.n == 0) return;
  if (b.kind == VKind::i64) {
    const int64_t* v = static_cast<const int64_t*>(b.data);
    char buf[24];
    for (int64_t i = 0; i < b.n; ++i) {
      auto res = std::to_chars(buf, buf + sizeof buf, v[i]);
      add_hash(murmur64a(buf, static_cast<size_t>(res.ptr - buf), kSeed));
    }
  } else if (b.kind == VKind::f64) {
    throw std::invalid_argument("RedisHyperLogLog: float values must be formatted as strings first");
  } else {
    std::string scratch;
    if (!for_each_bytes(b, 0, b.n, scratch, [&](const uint8_t* p, size_t len) { add_hash(murmur64a(p, len, kSeed)); }))
      throw std::invalid_argument("update: a string holds a code point that is not valid Unicode");
  }
  if (sparse_ && sparse_size() > kSparseMaxBytes) sparse_ = false;
}

uint64_t RedisHll::estimate() const {
  if (card_valid_) return card_;
  int hist[64] = {0};
  for (uint8_t r : regs_) hist[r]++;
  const double m = kRedisRegisters;
  double z = m * tau((m - hist[kRedisMaxValue]) / m);
  for (int j = kRedisMaxValue - 1; j >= 1; --j) {
    z += hist[j];
    z *= 0.5;
  }
  z += m * sigma(hist[0] / m);
  const double alpha_inf = 0.721347520444481703680;
  card_ = static_cast<uint64_t>(std::llround(alpha_inf * m * m / z));
  card_valid_ = true;
  return card_;
}

size_t RedisHll::sparse_size() const {
  std::vector<uint8_t> tmp;
  tmp.reserve(4096);
  encode_sparse(regs_, tmp);
  return 16 + tmp.size();
}

std::vector<uint8_t> RedisHll::serialize() const {
  if (!image_.empty()) return image_;
  std::vector<uint8_t> out(16, 0);
  std::memcpy(out.data(), "HYLL", 4);
  out[4] = sparse_ ? 1 : 0;
  const uint64_t card = estimate();
  for (int i = 0; i < 8; ++i) out[8 + i] = static_cast<uint8_t>(card >> (8 * i));
  if (sparse_) {
    encode_sparse(regs_, out);
  } else {
    out.resize(kRedisDenseBytes, 0);
    uint8_t* p = out.data() + 16;
    for (int i = 0; i < kRedisRegisters; ++i) {
      const uint32_t bit = static_cast<uint32_t>(i) * 6, byte = bit >> 3, sh = bit & 7;
      const uint32_t v = static_cast<uint32_t>(regs_[i]) << sh;
      p[byte] |= static_cast<uint8_t>(v);
      if (byte + 1 < kRedisRegisters * 6 / 8) p[byte + 1] |= static_cast<uint8_t>(v >> 8);
    }
  }
  return out;
}

RedisHll RedisHll::deserialize(const uint8_t* d, size_t len) {
  if (len < 16) bad("shorter than the 16-byte header");
  if (std::memcmp(d, "HYLL", 4) != 0) bad("missing 'HYLL' magic");
  if (d[4] > 1) bad("unknown encoding " + std::to_string(d[4]));
  if (d[5] || d[6] || d[7]) bad("reserved header bytes are not zero");
  RedisHll h;
  h.sparse_ = d[4] == 1;
  const uint8_t* p = d + 16;
  const size_t n = len - 16;
  if (!h.sparse_) {
    if (len != kRedisDenseBytes) bad("dense image of " + std::to_string(len) + " bytes (expected 12304)");
    for (int i = 0; i < kRedisRegisters; ++i) {
      const uint32_t bit = static_cast<uint32_t>(i) * 6, byte = bit >> 3, sh = bit & 7;
      uint32_t two = p[byte];
      if (byte + 1 < n) two |= static_cast<uint32_t>(p[byte + 1]) << 8;
      const uint8_t v = static_cast<uint8_t>((two >> sh) & 63);
      if (v > kRedisMaxValue) bad("register value " + std::to_string(v) + " above 51");
      h.regs_[i] = v;
    }
  } else {
    size_t i = 0;
    int idx = 0;
    while (i < n) {
      const uint8_t op = p[i];
      int run;
      if ((op & 0xc0) == 0) {
        run = (op & 0x3f) + 1;
        i += 1;
        if (idx + run > kRedisRegisters) bad("sparse run past the last register");
      } else if ((op & 0xc0) == 0x40) {
        if (i + 1 >= n) bad("truncated XZERO opcode");
        run = (((op & 0x3f) << 8) | p[i + 1]) + 1;
        i += 2;
        if (idx + run > kRedisRegisters) bad("sparse run past the last register");
      } else {
        run = (op & 3) + 1;
        const uint8_t v = static_cast<uint8_t>(((op >> 2) & 0x1f) + 1);
        i += 1;
        if (idx + run > kRedisRegisters) bad("sparse run past the last register");
        for (int j = 0; j < run; ++j) h.regs_[idx + j] = v;
      }
      idx += run;
    }
    if (idx != kRedisRegisters) bad("sparse runs cover " + std::to_string(idx) + " registers, not 16384");
  }
  h.image_.assign(d, d + len);
  return h;
}

void RedisHll::merge(const RedisHll& o) {
  bool changed = false;
  for (int i = 0; i < kRedisRegisters; ++i) {
    if (o.regs_[i] > regs_[i]) {
      regs_[i] = o.regs_[i];
      changed = true;
      if (regs_[i] > kSparseValMax) sparse_ = false;
    }
  }
  if (!o.sparse_) sparse_ = false;  // as PFMERGE, a dense input gives a dense result
  if (sparse_ && sparse_size() > kSparseMaxBytes) sparse_ = false;
  if (changed || !o.sparse_) touched();
}

}  // namespace sketches
}  // namespace pyperfcore
