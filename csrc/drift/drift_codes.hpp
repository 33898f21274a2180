// Dense codes for categorical string values: a hash table from byte strings to codes 0, 1, ...
// in first-seen order. ISA-free API over raw pointers; no Python here.
//
// Keys are (kind, bytes): text is stored as UTF-8 (lone surrogates encoded as their 3 bytes, as
// Python's "surrogatepass" does, so every Python str has exactly one key), byte strings as given.
// 'a' (text) and b'a' (bytes) are different keys. Fixed-width numpy items ('U' = UCS-4, 'S')
// lose their trailing NUL units first, as numpy does when it reads an item.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace pyperfcore {
namespace drift {

enum class KeyKind : uint8_t { text = 0, bytes = 1, missing = 255 };

// Codes an input item gets besides 0..size()-1.
constexpr int64_t kCodeMissing = -1;  // a missing item (kind missing)
constexpr int64_t kCodeUnknown = -2;  // a key not in the table when encoding without insertion

// Appends the UTF-8 form of code point cp (surrogates included); false if cp > 0x10FFFF.
inline bool append_utf8(uint32_t cp, std::vector<uint8_t>& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<uint8_t>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<uint8_t>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<uint8_t>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<uint8_t>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<uint8_t>(0x80 | (cp & 0x3F)));
  } else if (cp <= 0x10FFFF) {
    out.push_back(static_cast<uint8_t>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<uint8_t>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<uint8_t>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<uint8_t>(0x80 | (cp & 0x3F)));
  } else {
    return false;
  }
  return true;
}

class StringCoder {
 public:
  StringCoder();

  int64_t size() const { return static_cast<int64_t>(kind_.size()); }
  KeyKind kind(int64_t code) const { return static_cast<KeyKind>(kind_[code]); }
  const uint8_t* data(int64_t code) const { return bytes_.data() + off_[code]; }
  size_t length(int64_t code) const { return static_cast<size_t>(off_[code + 1] - off_[code]); }
  // Both text and byte-string keys were seen (Python cannot order such a mix).
  bool mixed_kinds() const { return n_text_ > 0 && n_bytes_ > 0; }

  // Code of one key; a new key gets size() when insert, else kCodeUnknown.
  int64_t code(KeyKind kind, const uint8_t* p, size_t len, bool insert);

  // Items i = 0..n-1 of kind kinds[i] with bytes arena[off[i] .. off[i+1]) (off has n+1
  // entries); kind missing -> kCodeMissing. The arena must be readable up to off[n] + 8 bytes
  // (short keys are read as one masked 8-byte word).
  void encode_spans(const uint8_t* arena, const int64_t* off, const uint8_t* kinds, int64_t n, bool insert,
                    int64_t* codes);
  // Fixed-width items at base + i * stride (any sign), itemsize bytes each: UCS-4 text (ucs4) or
  // bytes. Throws std::invalid_argument on a code point above 0x10FFFF (items before it are
  // coded; the table may hold their keys).
  void encode_fixed(const uint8_t* base, int64_t n, int64_t stride, int64_t itemsize, bool ucs4, bool insert,
                    int64_t* codes);
  // The same, adding counts instead of writing codes: counts[code + 2] += 1 for every item
  // (counts[0]: unknown, counts[1]: missing); counts is grown to size() + 2 as keys are added.
  void count_spans(const uint8_t* arena, const int64_t* off, const uint8_t* kinds, int64_t n, bool insert,
                   std::vector<int64_t>& counts);
  void count_fixed(const uint8_t* base, int64_t n, int64_t stride, int64_t itemsize, bool ucs4, bool insert,
                   std::vector<int64_t>& counts);

  // Codes in ascending key order: byte-wise lexicographic, which for UTF-8 is code point order
  // (Python's str order) and for byte strings Python's bytes order. Text keys sort before byte
  // keys (callers check mixed_kinds() first when they need Python's rules).
  std::vector<int64_t> sorted_codes() const;

 private:
  // Keys of at most 8 bytes are identified by (word, meta) alone: the bytes as a little-endian
  // word (zero above the length) and meta = kind << 8 | length. Longer keys have meta =
  // kind << 8 | 0xFF and are compared byte by byte after their hash.
  struct Slot {
    uint64_t h;
    uint64_t word;
    uint32_t meta;
    int32_t code;  // -1: empty
  };
  template <class Sink>
  void spans(const uint8_t* arena, const int64_t* off, const uint8_t* kinds, int64_t n, bool insert, Sink&& sink);
  template <class Sink>
  void fixed(const uint8_t* base, int64_t n, int64_t stride, int64_t itemsize, bool ucs4, bool insert,
             Sink&& sink);
  int64_t code_short(uint64_t word, uint32_t meta, const uint8_t* p, bool insert);
  int64_t code_long(KeyKind kind, const uint8_t* p, size_t len, bool insert);
  int64_t add(KeyKind kind, const uint8_t* p, size_t len, uint64_t h, uint64_t word, uint32_t meta, size_t slot);
  uint64_t short_hash(uint64_t word, uint32_t meta) const;
  void grow();

  uint64_t seed_, seed2_;
  std::vector<Slot> slots_;     // open addressing, linear probing; size a power of two
  std::vector<uint8_t> kind_;   // per code
  std::vector<int64_t> off_;    // per code + 1: key bytes in bytes_
  std::vector<uint8_t> bytes_;
  int64_t n_text_ = 0, n_bytes_ = 0;
};

}  // namespace drift
}  // namespace pyperfcore
