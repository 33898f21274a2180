// Batch kernels of the DataSketches HLL update for 8-byte keys (int64, or float64 bits), one
// variant per CPU target (scalar, AVX2 with 32x32-bit multiplies, AVX-512 with 64-bit lanes),
// all bit-identical to the scalar MurmurHash3_x64_128 of sk_hash.hpp. ISA-free header.
#pragma once
#include <cstdint>

#include "../common/cpu.hpp"

namespace pyperfcore {
namespace sketches {

// h1[i], h2[i] := MurmurHash3_x64_128 of the 8 little-endian bytes of keys[i].
void murmur3_u64_batch(const uint64_t* keys, int64_t n, uint64_t seed, uint64_t* h1, uint64_t* h2, CpuTarget t);

// DataSketches coupons (seed 9001) of n keys. With is_f64 the keys are float64 bit patterns and
// are canonicalised first (-0.0 -> 0.0, every NaN -> 0x7ff8000000000000), as DataSketches does.
void ds_coupons_u64(const uint64_t* keys, int64_t n, bool is_f64, uint32_t* out, CpuTarget t);

// The coupons of n keys whose value exceeds the register of their slot (regs: 2^lg_k bytes, one
// per slot), in input order: every other coupon leaves an HLL-mode sketch unchanged, whatever
// is applied before it, because registers only grow. Returns how many were written to out
// (room for n).
int64_t ds_hll_candidates(const uint64_t* keys, int64_t n, bool is_f64, const uint8_t* regs, int lg_k, uint32_t* out,
                          CpuTarget t);

// r[i] := max(r[i], s[i]) for n bytes (HLL register union).
void max_bytes(uint8_t* r, const uint8_t* s, int64_t n, CpuTarget t);

}  // namespace sketches
}  // namespace pyperfcore
