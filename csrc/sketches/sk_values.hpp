// A batch of values to feed a sketch, described with raw pointers (no Python here).
// The bindings normalise numpy/torch/list inputs into one of these kinds.
#pragma once
#include <cstdint>
#include <cstring>
#include <string>

namespace pyperfcore {
namespace sketches {

enum class VKind : int {
  i64 = 0,         // contiguous int64 (smaller ints are sign-extended by the caller)
  f64 = 1,         // contiguous float64 (float32 widened by the caller)
  bytes_fixed = 2, // numpy 'S': itemsize bytes per item, trailing NULs stripped
  ucs4_fixed = 3,  // numpy 'U': itemsize/4 code points per item, trailing NULs stripped, hashed as UTF-8
  spans = 4,       // ptrs[i], lens[i]: bytes as given (str already encoded as UTF-8)
};

struct ValueBatch {
  VKind kind = VKind::i64;
  const void* data = nullptr;
  int64_t n = 0;
  int64_t itemsize = 0;
  const char* const* ptrs = nullptr;
  const int64_t* lens = nullptr;
};

// Encodes one fixed-width UCS4 item as UTF-8 into out (capacity >= 4 * chars). Returns the byte
// length, or -1 for a code point that is not valid Unicode scalar value.
inline int64_t ucs4_to_utf8(const uint32_t* s, int64_t chars, char* out) {
  while (chars > 0 && s[chars - 1] == 0) --chars;
  int64_t o = 0;
  for (int64_t i = 0; i < chars; ++i) {
    uint32_t c = s[i];
    if (c < 0x80) {
      out[o++] = static_cast<char>(c);
    } else if (c < 0x800) {
      out[o++] = static_cast<char>(0xC0 | (c >> 6));
      out[o++] = static_cast<char>(0x80 | (c & 0x3F));
    } else if (c < 0x10000) {
      if (c >= 0xD800 && c <= 0xDFFF) return -1;
      out[o++] = static_cast<char>(0xE0 | (c >> 12));
      out[o++] = static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out[o++] = static_cast<char>(0x80 | (c & 0x3F));
    } else if (c <= 0x10FFFF) {
      out[o++] = static_cast<char>(0xF0 | (c >> 18));
      out[o++] = static_cast<char>(0x80 | ((c >> 12) & 0x3F));
      out[o++] = static_cast<char>(0x80 | ((c >> 6) & 0x3F));
      out[o++] = static_cast<char>(0x80 | (c & 0x3F));
    } else {
      return -1;
    }
  }
  return o;
}

// Calls f(ptr, len) for items [begin, end) of a byte-like batch (kinds bytes_fixed, ucs4_fixed,
// spans). scratch must hold 4 * (itemsize / 4) bytes for ucs4. Returns false on invalid UCS4.
template <class F>
bool for_each_bytes(const ValueBatch& b, int64_t begin, int64_t end, std::string& scratch, F&& f) {
  if (b.kind == VKind::spans) {
    for (int64_t i = begin; i < end; ++i) f(reinterpret_cast<const uint8_t*>(b.ptrs[i]), static_cast<size_t>(b.lens[i]));
  } else if (b.kind == VKind::bytes_fixed) {
    const uint8_t* base = static_cast<const uint8_t*>(b.data);
    for (int64_t i = begin; i < end; ++i) {
      const uint8_t* p = base + i * b.itemsize;
      int64_t len = b.itemsize;
      while (len > 0 && p[len - 1] == 0) --len;
      f(p, static_cast<size_t>(len));
    }
  } else if (b.kind == VKind::ucs4_fixed) {
    const int64_t chars = b.itemsize / 4;
    scratch.resize(static_cast<size_t>(4 * chars + 4));
    const uint8_t* base = static_cast<const uint8_t*>(b.data);
    for (int64_t i = begin; i < end; ++i) {
      uint32_t tmp[64];
      const uint32_t* s;
      std::string big;
      // numpy 'U' data may be unaligned for uint32 reads: copy when it is.
      const uint8_t* p = base + i * b.itemsize;
      if (reinterpret_cast<uintptr_t>(p) % 4 == 0) {
        s = reinterpret_cast<const uint32_t*>(p);
      } else if (chars <= 64) {
        std::memcpy(tmp, p, static_cast<size_t>(4 * chars));
        s = tmp;
      } else {
        big.assign(reinterpret_cast<const char*>(p), static_cast<size_t>(4 * chars));
        s = reinterpret_cast<const uint32_t*>(big.data());
      }
      int64_t len = ucs4_to_utf8(s, chars, &scratch[0]);
      if (len < 0) return false;
      f(reinterpret_cast<const uint8_t*>(scratch.data()), static_cast<size_t>(len));
    }
  }
  return true;
}

}  // namespace sketches
}  // namespace pyperfcore
