// Hash functions the sketches must share bit-for-bit with their peers:
// MurmurHash3_x64_128 (Apache DataSketches, seed 9001) and MurmurHash64A (Redis HLL, seed 0xadc83b19).
#pragma once
#include <cstddef>
#include <cstdint>

namespace pyperfcore {
namespace sketches {

struct Hash128 {
  uint64_t h1, h2;
};

// Austin Appleby's MurmurHash3, x64 128-bit variant, little-endian reads.
Hash128 murmur3_x64_128(const void* key, size_t len, uint64_t seed);
// Specialised form for exactly 8 bytes (one int64/double), the hot path of the HLL update.
Hash128 murmur3_x64_128_u64(uint64_t k, uint64_t seed);
// MurmurHash64A (64-bit), as used by Redis' hyperloglog.c.
uint64_t murmur64a(const void* key, size_t len, uint64_t seed);

}  // namespace sketches
}  // namespace pyperfcore
