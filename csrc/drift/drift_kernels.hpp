// Internal: per-ISA kernels of the drift accumulators. Not installed API (harmless if seen).
#pragma once
#include <cstdint>

#include "../common/cpu.hpp"

namespace pyperfcore {
namespace drift {
namespace detail {

// First pass over a chunk: finite count and sum, extremes of finite values, non-finite counts.
struct Pass1 {
  uint64_t n = 0, nan = 0, posinf = 0, neginf = 0;
  double sum = 0, min = 0, max = 0;  // min/max valid when n > 0
};

struct Kernels {
  // counts[k + 3] += slot of each x (see Histogram); edges has ne = k + 1 entries.
  void (*hist_f64)(const double* x, int64_t n, const double* edges, int64_t ne, uint64_t* counts);
  void (*hist_f32)(const float* x, int64_t n, const double* edges, int64_t ne, uint64_t* counts);
  void (*pass1_f64)(const double* x, int64_t n, Pass1* out);
  void (*pass1_f32)(const float* x, int64_t n, Pass1* out);
  // s[0..2] += sum over finite x of d^2, d^3, d^4 with d = x - mean.
  void (*pass2_f64)(const double* x, int64_t n, double mean, double* s);
  void (*pass2_f32)(const float* x, int64_t n, double mean, double* s);
};

extern const Kernels kScalar;
extern const Kernels kAvx2;
extern const Kernels kAvx512;

inline const Kernels& kernels_for(CpuTarget t) {
  switch (t) {
    case CpuTarget::avx512:
    case CpuTarget::avx512_vnni: return kAvx512;
    case CpuTarget::avx2: return kAvx2;
    default: return kScalar;
  }
}

}  // namespace detail
}  // namespace drift
}  // namespace pyperfcore
