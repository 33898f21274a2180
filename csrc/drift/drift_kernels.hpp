// Internal: per-ISA kernels of the drift accumulators. Not installed API (harmless if seen).
#pragma once
#include <cstdint>
#include <vector>

#include "../common/cpu.hpp"
#include "drift.hpp"

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
  // Histogram through the lookup table of finite edges (Histogram::lut_, cells + 1 entries):
  // same slots as hist_f64. Null where the target has none (scalar: drift.cpp's hist_lut).
  void (*hist_lut_f64)(const double* x, int64_t n, const double* edges, int64_t ne, const uint32_t* lut,
                       int64_t cells, double scale, uint64_t* counts);
  void (*hist_lut_f32)(const float* x, int64_t n, const double* edges, int64_t ne, const uint32_t* lut,
                       int64_t cells, double scale, uint64_t* counts);
};
// Cells with more edges than this use the scalar lookup (binary search inside the cell).
constexpr uint32_t kLutSimdSpan = 4;

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


// Extremes of the ECDF difference F_a - F_b at the data points, as scipy's ks_2samp locates
// them: mx over values of a, mn_a over values of a, mn_b over values only b holds; each with
// the smallest value where it is reached.
struct KSExtremes {
  double mx = -__builtin_inf(), mn_a = __builtin_inf(), mn_b = __builtin_inf();
  double loc_mx = 0, loc_mn_a = 0, loc_mn_b = 0;
};
// Statistic, location, sign and p-value from the extremes (drift_ks.cpp).
KSResult ks_finish(const KSExtremes& e, int64_t na, int64_t nb, KSMethod method, KSAlternative alt);

// ---- bucket passes of the sample statistics (drift_ecdf.cpp)
// A monotone map of values to buckets: t = (x - lo) * scale, j = trunc(clamp(t, 0, kmax)).
// Every variant computes t and j with the same IEEE operations in the same order (no FMA), so
// all targets put every value in the same bucket; only the order of the floating-point
// accumulation in bucket_pass2 differs.
struct BucketMap {
  double lo = 0, scale = 0, kmax = 0;
};

// Scalar reference of the map; SIMD variants mirror it exactly (max/min with the same operand
// order, so NaN lands in bucket 0 instead of indexing out of range).
inline int32_t bucket_of(double t, double kmax) {
  double c = t > 0.0 ? t : 0.0;
  c = c < kmax ? c : kmax;
  return static_cast<int32_t>(c);
}

struct BucketKernels {
  // counts[j(x)] += 1 for each x. Returns a bit set: 1 if some x is NaN, 2 if some |t| is not
  // below 2^60 (infinite input or a value far outside the mapped range; may also be set by NaN).
  int (*count)(const double* x, int64_t n, const BucketMap& m, uint32_t* counts);
  // The same, and the bucket's extremes mm[2j] = min, mm[2j + 1] = max (for data with ties).
  int (*count_mm)(const double* x, int64_t n, const BucketMap& m, uint32_t* counts, double* mm);
  // For each x with sg[j] NaN: append x and j to xs / js (room for n each). Otherwise add
  // sg[j] * (1 - (t - j)) to *acc (meaningless where sg is 0 and t infinite). Returns the
  // number of values appended.
  int64_t (*pass2)(const double* x, int64_t n, const BucketMap& m, const double* sg, double* xs, uint32_t* js,
                   double* acc);
};

extern const BucketKernels kBucketScalar;
extern const BucketKernels kBucketAvx2;
extern const BucketKernels kBucketAvx512;

inline const BucketKernels& bucket_kernels_for(CpuTarget t) {
  switch (t) {
    case CpuTarget::avx512:
    case CpuTarget::avx512_vnni: return kBucketAvx512;
    case CpuTarget::avx2: return kBucketAvx2;
    default: return kBucketScalar;
  }
}

}  // namespace detail
}  // namespace drift
}  // namespace pyperfcore
