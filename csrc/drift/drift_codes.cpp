// String -> code hash table for categorical columns (see drift_codes.hpp).
#include "drift_codes.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>

namespace pyperfcore {
namespace drift {

namespace {

constexpr uint64_t kP0 = 0xa0761d6478bd642full, kP1 = 0xe7037ed1a0b428dbull, kP2 = 0x8ebc6af09c88c6e3ull;
constexpr uint32_t kLongLen = 0xFF;

inline uint64_t mum(uint64_t a, uint64_t b) {
  const __uint128_t r = static_cast<__uint128_t>(a) * b;
  return static_cast<uint64_t>(r) ^ static_cast<uint64_t>(r >> 64);
}
inline uint64_t rd8(const uint8_t* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;
}
inline uint64_t rd4(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
// Low `len` bytes (0..8) of a little-endian word.
inline uint64_t low_bytes(uint64_t w, size_t len) { return len == 0 ? 0 : w & (~uint64_t(0) >> (64 - 8 * len)); }
// The first len <= 8 bytes at p as a word, without reading past p + len.
inline uint64_t load_short(const uint8_t* p, size_t len) {
  uint64_t w = 0;
  std::memcpy(&w, p, len);
  return w;
}

// Equality of two n-byte strings with (overlapping) word loads.
inline bool eq_bytes(const uint8_t* a, const uint8_t* b, size_t n) {
  if (n <= 8) {
    if (n >= 4) return rd4(a) == rd4(b) && rd4(a + n - 4) == rd4(b + n - 4);
    if (n == 0) return true;
    return a[0] == b[0] && a[n >> 1] == b[n >> 1] && a[n - 1] == b[n - 1];
  }
  if (n <= 16) return rd8(a) == rd8(b) && rd8(a + n - 8) == rd8(b + n - 8);
  return std::memcmp(a, b, n) == 0;
}

// Multiply-fold hash in the style of wyhash: short keys read with (overlapping) 4-byte loads,
// longer ones in 16-byte blocks plus an overlapping 16-byte tail.
uint64_t hash_bytes(uint64_t s, const uint8_t* p, size_t len) {
  uint64_t a, b;
  if (len <= 16) {
    if (len >= 4) {
      const size_t m = (len >> 3) << 2;
      a = (rd4(p) << 32) | rd4(p + m);
      b = (rd4(p + len - 4) << 32) | rd4(p + len - 4 - m);
    } else if (len > 0) {
      a = (static_cast<uint64_t>(p[0]) << 16) | (static_cast<uint64_t>(p[len >> 1]) << 8) | p[len - 1];
      b = 0;
    } else {
      a = b = 0;
    }
  } else {
    size_t i = len;
    const uint8_t* q = p;
    while (i > 16) {
      s = mum(rd8(q) ^ kP1, rd8(q + 8) ^ s);
      q += 16;
      i -= 16;
    }
    a = rd8(q + i - 16);
    b = rd8(q + i - 8);
  }
  return mum(kP1 ^ len, mum(a ^ kP1, b ^ s) ^ kP2);
}

inline uint32_t meta_of(KeyKind kind, size_t len) {
  return (static_cast<uint32_t>(kind) << 8) | (len <= 8 ? static_cast<uint32_t>(len) : kLongLen);
}

struct CodeSink {
  int64_t* codes;
  void operator()(int64_t i, int64_t c) { codes[i] = c; }
};
struct CountSink {
  std::vector<int64_t>& counts;
  void operator()(int64_t, int64_t c) {
    const size_t j = static_cast<size_t>(c + 2);
    if (j >= counts.size()) counts.resize(std::max(j + 1, counts.size() * 2), 0);
    ++counts[j];
  }
};

}  // namespace

StringCoder::StringCoder() : slots_(64, Slot{0, 0, 0, -1}), off_(1, 0) {
  // A per-table seed: codes never depend on it (first-seen order), but inputs crafted to collide
  // under one fixed seed do not collide under another.
  std::random_device rd;
  seed_ = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ reinterpret_cast<uintptr_t>(this);
  seed2_ = mum(seed_ ^ kP0, kP2);
}

uint64_t StringCoder::short_hash(uint64_t word, uint32_t meta) const {
  return mum(word ^ seed_, (static_cast<uint64_t>(meta) * kP0) ^ seed2_);
}

void StringCoder::grow() {
  std::vector<Slot> s(slots_.size() * 2, Slot{0, 0, 0, -1});
  const size_t mask = s.size() - 1;
  for (const Slot& o : slots_) {
    if (o.code < 0) continue;
    size_t i = o.h & mask;
    while (s[i].code >= 0) i = (i + 1) & mask;
    s[i] = o;
  }
  slots_.swap(s);
}

int64_t StringCoder::add(KeyKind kind, const uint8_t* p, size_t len, uint64_t h, uint64_t word, uint32_t meta,
                         size_t slot) {
  const int64_t c = size();
  if (c >= std::numeric_limits<int32_t>::max()) throw std::length_error("too many distinct categories");
  kind_.push_back(static_cast<uint8_t>(kind));
  bytes_.insert(bytes_.end(), p, p + len);
  off_.push_back(static_cast<int64_t>(bytes_.size()));
  (kind == KeyKind::text ? n_text_ : n_bytes_) += 1;
  slots_[slot] = Slot{h, word, meta, static_cast<int32_t>(c)};
  if (static_cast<size_t>(size()) * 2 > slots_.size()) grow();
  return c;
}

inline int64_t StringCoder::code_short(uint64_t word, uint32_t meta, const uint8_t* p, bool insert) {
  const uint64_t h = short_hash(word, meta);
  const size_t mask = slots_.size() - 1;
  size_t i = h & mask;
  for (;;) {
    const Slot& sl = slots_[i];
    if (sl.code < 0) break;
    if (sl.word == word && sl.meta == meta) return sl.code;
    i = (i + 1) & mask;
  }
  if (!insert) return kCodeUnknown;
  return add(static_cast<KeyKind>(meta >> 8), p, meta & 0xFF, h, word, meta, i);
}

int64_t StringCoder::code_long(KeyKind kind, const uint8_t* p, size_t len, bool insert) {
  const uint32_t meta = meta_of(kind, len);
  const uint64_t h = hash_bytes(seed_ ^ (static_cast<uint64_t>(kind) + 1) * kP0, p, len);
  const size_t mask = slots_.size() - 1;
  size_t i = h & mask;
  for (;;) {
    const Slot& sl = slots_[i];
    if (sl.code < 0) break;
    if (sl.h == h && sl.meta == meta && length(sl.code) == len && eq_bytes(data(sl.code), p, len)) return sl.code;
    i = (i + 1) & mask;
  }
  if (!insert) return kCodeUnknown;
  return add(kind, p, len, h, 0, meta, i);
}

int64_t StringCoder::code(KeyKind kind, const uint8_t* p, size_t len, bool insert) {
  if (len <= 8) return code_short(load_short(p, len), meta_of(kind, len), p, insert);
  return code_long(kind, p, len, insert);
}

template <class Sink>
void StringCoder::spans(const uint8_t* arena, const int64_t* off, const uint8_t* kinds, int64_t n, bool insert,
                        Sink&& sink) {
  for (int64_t i = 0; i < n; ++i) {
    const KeyKind k = static_cast<KeyKind>(kinds[i]);
    const uint8_t* p = arena + off[i];
    const size_t len = static_cast<size_t>(off[i + 1] - off[i]);
    int64_t c;
    if (k == KeyKind::missing) c = kCodeMissing;
    else if (len <= 8) c = code_short(low_bytes(rd8(p), len), meta_of(k, len), p, insert);  // padded arena
    else c = code_long(k, p, len, insert);
    sink(i, c);
  }
}

// Fixed-width items: equal values have equal raw items (numpy pads with zero units), so the raw
// items are hashed as they are into a table local to the call, and only each distinct raw item is
// stripped, converted to UTF-8 and looked up in the coder's own table.
template <class Sink>
void StringCoder::fixed(const uint8_t* base, int64_t n, int64_t stride, int64_t itemsize, bool ucs4, bool insert,
                        Sink&& sink) {
  if (n <= 0) return;
  const size_t w = static_cast<size_t>(itemsize);
  if (w == 0 || base == nullptr) {  // zero-width items: every one is the empty key
    static const uint8_t empty = 0;
    const int64_t c = code(ucs4 ? KeyKind::text : KeyKind::bytes, &empty, 0, insert);
    for (int64_t i = 0; i < n; ++i) sink(i, c);
    return;
  }
  struct Raw {
    uint64_t h;
    const uint8_t* item;  // nullptr: empty
    int64_t code;
  };
  std::vector<Raw> table(64, Raw{0, nullptr, 0});
  size_t mask = table.size() - 1, used = 0;
  std::vector<uint8_t> buf;
  buf.reserve(w);
  const uint64_t rseed = seed_ ^ kP2;
  auto canonical = [&](const uint8_t* p, int64_t i) -> int64_t {
    if (!ucs4) {
      size_t len = w;
      while (len > 0 && p[len - 1] == 0) --len;
      return code(KeyKind::bytes, p, len, insert);
    }
    int64_t len = itemsize / 4;
    uint32_t cp = 0;
    while (len > 0) {
      std::memcpy(&cp, p + 4 * (len - 1), 4);
      if (cp != 0) break;
      --len;
    }
    buf.clear();
    for (int64_t j = 0; j < len; ++j) {
      std::memcpy(&cp, p + 4 * j, 4);
      if (!append_utf8(cp, buf))
        throw std::invalid_argument("item " + std::to_string(i) + " holds code point " + std::to_string(cp) +
                                    ", above U+10FFFF");
    }
    return code(KeyKind::text, buf.data(), buf.size(), insert);
  };
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* p = base + i * stride;
    const uint64_t h = hash_bytes(rseed, p, w);
    size_t j = h & mask;
    for (;;) {
      const Raw& r = table[j];
      if (r.item == nullptr || (r.h == h && eq_bytes(r.item, p, w))) break;
      j = (j + 1) & mask;
    }
    if (table[j].item != nullptr) {
      sink(i, table[j].code);
      continue;
    }
    const int64_t c = canonical(p, i);
    table[j] = Raw{h, p, c};
    sink(i, c);
    if (++used * 2 > table.size()) {
      std::vector<Raw> t(table.size() * 2, Raw{0, nullptr, 0});
      mask = t.size() - 1;
      for (const Raw& r : table) {
        if (r.item == nullptr) continue;
        size_t k = r.h & mask;
        while (t[k].item != nullptr) k = (k + 1) & mask;
        t[k] = r;
      }
      table.swap(t);
    }
  }
}

void StringCoder::encode_spans(const uint8_t* arena, const int64_t* off, const uint8_t* kinds, int64_t n,
                               bool insert, int64_t* codes) {
  spans(arena, off, kinds, n, insert, CodeSink{codes});
}
void StringCoder::count_spans(const uint8_t* arena, const int64_t* off, const uint8_t* kinds, int64_t n,
                              bool insert, std::vector<int64_t>& counts) {
  if (counts.size() < static_cast<size_t>(size()) + 2) counts.resize(static_cast<size_t>(size()) + 2, 0);
  spans(arena, off, kinds, n, insert, CountSink{counts});
  counts.resize(static_cast<size_t>(size()) + 2, 0);
}
void StringCoder::encode_fixed(const uint8_t* base, int64_t n, int64_t stride, int64_t itemsize, bool ucs4,
                               bool insert, int64_t* codes) {
  fixed(base, n, stride, itemsize, ucs4, insert, CodeSink{codes});
}
void StringCoder::count_fixed(const uint8_t* base, int64_t n, int64_t stride, int64_t itemsize, bool ucs4,
                              bool insert, std::vector<int64_t>& counts) {
  if (counts.size() < static_cast<size_t>(size()) + 2) counts.resize(static_cast<size_t>(size()) + 2, 0);
  fixed(base, n, stride, itemsize, ucs4, insert, CountSink{counts});
  counts.resize(static_cast<size_t>(size()) + 2, 0);
}

std::vector<int64_t> StringCoder::sorted_codes() const {
  std::vector<int64_t> order(static_cast<size_t>(size()));
  std::iota(order.begin(), order.end(), int64_t(0));
  std::sort(order.begin(), order.end(), [this](int64_t x, int64_t y) {
    if (kind_[x] != kind_[y]) return kind_[x] < kind_[y];
    const size_t lx = length(x), ly = length(y);
    const size_t m = std::min(lx, ly);
    const int c = m ? std::memcmp(data(x), data(y), m) : 0;
    return c != 0 ? c < 0 : lx < ly;
  });
  return order;
}

}  // namespace drift
}  // namespace pyperfcore
