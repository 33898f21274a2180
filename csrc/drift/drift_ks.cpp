// Sample statistics: radix sort, two-sample Kolmogorov-Smirnov (statistic and the p-value
// algorithms scipy.stats.ks_2samp uses), and Wasserstein-1.
//
// p-values follow the published algorithms scipy implements, so results agree with it to
// rounding: Hodges (1958) lattice-path counting for exact two-sample p-values (with
// Viehmann's 2021 recursion for 1 - p), and for the asymptotic path the two-sided one-sample
// distribution at round(n*m/(n+m)) evaluated as Simard & L'Ecuyer (2011) prescribe
// (Durbin/Marsaglia-Tsang-Wang matrix, Pomeranz recursion, Pelz-Good series, Smirnov's exact
// one-sided sum).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "../common/threads.hpp"
#include "drift.hpp"
#include "drift_kernels.hpp"

namespace pyperfcore {
namespace drift {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();

inline uint64_t key_of(double d) {
  uint64_t u;
  std::memcpy(&u, &d, 8);
  return (u >> 63) ? ~u : (u | 0x8000000000000000ULL);
}
inline double val_of(uint64_t k) {
  const uint64_t u = (k >> 63) ? (k & 0x7fffffffffffffffULL) : ~k;
  double d;
  std::memcpy(&d, &u, 8);
  return d;
}

// LSD radix sort on order-preserving keys, 11-bit digits; passes whose digit is constant over
// the whole input are skipped. `tmp` must hold n keys.
void radix_sort(const double* x, int64_t n, double* out, uint64_t* keys, uint64_t* tmp) {
  constexpr int kBits = 11, kPasses = 6, kBuckets = 1 << kBits;
  std::vector<uint32_t> hist(static_cast<size_t>(kPasses) * kBuckets, 0);
  for (int64_t i = 0; i < n; ++i) {
    const uint64_t k = key_of(x[i]);
    keys[i] = k;
    for (int p = 0; p < kPasses; ++p) ++hist[static_cast<size_t>(p) * kBuckets + ((k >> (p * kBits)) & (kBuckets - 1))];
  }
  uint64_t *src = keys, *dst = tmp;
  for (int p = 0; p < kPasses; ++p) {
    uint32_t* h = hist.data() + static_cast<size_t>(p) * kBuckets;
    const uint64_t first = (src[0] >> (p * kBits)) & (kBuckets - 1);
    if (h[first] == static_cast<uint32_t>(n)) continue;
    uint32_t sum = 0;
    for (int b = 0; b < kBuckets; ++b) {
      const uint32_t c = h[b];
      h[b] = sum;
      sum += c;
    }
    for (int64_t i = 0; i < n; ++i) {
      const uint64_t k = src[i];
      dst[h[(k >> (p * kBits)) & (kBuckets - 1)]++] = k;
    }
    std::swap(src, dst);
  }
  for (int64_t i = 0; i < n; ++i) out[i] = val_of(src[i]);
}

void check_finite_order(const double* x, int64_t n, const char* what) {
  for (int64_t i = 0; i < n; ++i)
    if (std::isnan(x[i])) throw std::invalid_argument(std::string(what) + ": input contains NaN");
}

// ---- exact two-sample distribution (Hodges 1958)

// Pr(D_{n,n} >= h/n): alternating sum of binomial ratios evaluated with a Horner-like scheme.
double prob_outside_square(int64_t n, int64_t h) {
  double P = 0.0;
  for (int64_t k = n / h; k >= 0; --k) {
    double p1 = 1.0;
    for (int64_t j = 0; j < h; ++j)
      p1 = static_cast<double>(n - k * h - j) * p1 / static_cast<double>(n + k * h + j + 1);
    P = p1 * (1.0 - P);
  }
  return 2 * P;
}

// Proportion of lattice paths (0,0)->(m,n) that leave the band |x/m - y/n| < h/lcm, computed
// directly as 1 - p with Viehmann's normalized recursion over one sliding column.
double outer_prob_inside(int64_t m, int64_t n, int64_t g, int64_t h) {
  if (m < n) std::swap(m, n);
  const int64_t mg = m / g, ng = n / g;
  int64_t minj = 0, maxj = std::min<int64_t>(static_cast<int64_t>(std::ceil(static_cast<double>(h) / mg)), n + 1);
  int64_t curlen = maxj - minj;
  const int64_t lenA = std::min<int64_t>(2 * maxj + 2, n + 1);
  std::vector<double> A(static_cast<size_t>(lenA), 1.0);
  for (int64_t j = minj; j < maxj; ++j) A[static_cast<size_t>(j)] = 0.0;
  for (int64_t i = 1; i <= m; ++i) {
    const int64_t lastminj = minj, lastlen = curlen;
    minj = std::max<int64_t>(static_cast<int64_t>(std::floor(static_cast<double>(ng * i - h) / mg)) + 1, 0);
    minj = std::min(minj, n);
    maxj = std::min<int64_t>(static_cast<int64_t>(std::ceil(static_cast<double>(ng * i + h) / mg)), n + 1);
    if (maxj <= minj) return 1.0;
    double val = minj == 0 ? 0.0 : 1.0;
    for (int64_t jj = 0; jj < maxj - minj; ++jj) {
      const int64_t j = jj + minj;
      val = (A[static_cast<size_t>(jj + minj - lastminj)] * static_cast<double>(i) + val * static_cast<double>(j)) /
            static_cast<double>(i + j);
      A[static_cast<size_t>(jj)] = val;
    }
    curlen = maxj - minj;
    if (lastlen > curlen)
      for (int64_t t = maxj - minj; t < maxj - minj + (lastlen - curlen) && t < lenA; ++t) A[static_cast<size_t>(t)] = 1.0;
  }
  return A[static_cast<size_t>(maxj - minj - 1)];
}

// ---- two-sided one-sample distribution (Simard & L'Ecuyer 2011)

double clip01(double p) { return std::min(std::max(p, 0.0), 1.0); }

double log_nfact_div_npown(double n) {
  // log(n! / n^n) by Stirling's series with Bernoulli-number coefficients B_2j / (2j (2j - 1)).
  static const double c[] = {-2.955065359477124183e-2, 6.4102564102564102564e-3, -1.9175269175269175269e-3,
                             8.4175084175084175084e-4, -5.952380952380952381e-4, 7.9365079365079365079e-4,
                             -2.7777777777777777778e-3, 8.3333333333333333333e-2};
  const double rn = 1.0 / n, z = rn / n;
  double poly = 0;
  for (double ci : c) poly = poly * z + ci;
  return std::log(n) / 2 - n + std::log(2 * M_PI) / 2 + rn * poly;
}

// Durbin's matrix method in Marsaglia-Tsang-Wang form: Pr(D_n <= d).
double kolmogn_dmtw(int64_t n, double d) {
  if (d >= 1.0) return 1.0;
  const double nd = static_cast<double>(n) * d;
  if (nd <= 0.5) return 0.0;
  const int64_t k = static_cast<int64_t>(std::ceil(nd));
  const double h = static_cast<double>(k) - nd;
  const int64_t m = 2 * k - 1;
  const size_t M = static_cast<size_t>(m);
  std::vector<double> H(M * M, 0.0), v(M), w(M);
  double fac = 1.0;
  for (int64_t j = 1; j <= m; ++j) {
    v[static_cast<size_t>(j - 1)] = 1.0 - std::pow(h, static_cast<double>(j));
    w[static_cast<size_t>(j - 1)] = fac;
    fac /= static_cast<double>(j);
    v[static_cast<size_t>(j - 1)] *= fac;
  }
  const double tt = std::pow(std::max(2 * h - 1.0, 0.0), static_cast<double>(m)) - 2 * std::pow(h, static_cast<double>(m));
  v[M - 1] = (1.0 + tt) * fac;
  for (size_t i = 1; i < M; ++i)
    for (size_t r = i - 1; r < M; ++r) H[r * M + i] = w[r - (i - 1)];
  for (size_t r = 0; r < M; ++r) H[r * M] = v[r];
  for (size_t c = 0; c < M; ++c) H[(M - 1) * M + c] = v[M - 1 - c];
  std::vector<double> P(M * M, 0.0), T(M * M);
  for (size_t i = 0; i < M; ++i) P[i * M + i] = 1.0;
  auto mul = [M, &T](const std::vector<double>& A, const std::vector<double>& B, std::vector<double>& C) {
    std::fill(T.begin(), T.end(), 0.0);
    for (size_t i = 0; i < M; ++i)
      for (size_t l = 0; l < M; ++l) {
        const double a = A[i * M + l];
        if (a == 0.0) continue;
        for (size_t j = 0; j < M; ++j) T[i * M + j] += a * B[l * M + j];
      }
    C.swap(T);
    T.assign(M * M, 0.0);
  };
  const double ep128 = std::ldexp(1.0, 128), em128 = std::ldexp(1.0, -128);
  int64_t nn = n, expnt = 0, hexpnt = 0;
  while (nn > 0) {
    if (nn % 2) {
      mul(P, H, P);
      expnt += hexpnt;
    }
    mul(H, H, H);
    hexpnt *= 2;
    if (std::fabs(H[static_cast<size_t>(k - 1) * M + static_cast<size_t>(k - 1)]) > ep128) {
      for (double& x : H) x /= ep128;
      hexpnt += 128;
    }
    nn /= 2;
  }
  double p = P[static_cast<size_t>(k - 1) * M + static_cast<size_t>(k - 1)];
  for (int64_t i = 1; i <= n; ++i) {
    p = static_cast<double>(i) * p / static_cast<double>(n);
    if (std::fabs(p) < em128) {
      p *= ep128;
      expnt -= 128;
    }
  }
  if (expnt != 0) p = std::ldexp(p, static_cast<int>(expnt));
  return clip01(p);
}

// Pomeranz's recursion: Pr(D_n <= x).
double kolmogn_pomeranz(int64_t n, double x) {
  const double t = static_cast<double>(n) * x;
  const int64_t ll = static_cast<int64_t>(std::floor(t));
  const double f = t - static_cast<double>(ll);
  const double g = std::min(f, 1.0 - f);
  const int64_t ceilf = f > 0 ? 1 : 0, roundf = f > 0.5 ? 1 : 0;
  const int64_t npwrs = 2 * (ll + 1);
  const size_t NP = static_cast<size_t>(npwrs);
  std::vector<double> gp(NP), g2p(NP), om2gp(NP);
  gp[0] = g2p[0] = om2gp[0] = 1.0;
  const double nd = static_cast<double>(n);
  const double a1 = g / nd, a2 = 2 * g / nd, a3 = (1 - 2 * g) / nd;
  for (size_t m = 1; m < NP; ++m) {
    gp[m] = gp[m - 1] * a1 / static_cast<double>(m);
    g2p[m] = g2p[m - 1] * a2 / static_cast<double>(m);
    om2gp[m] = om2gp[m - 1] * a3 / static_cast<double>(m);
  }
  auto bounds = [&](int64_t i, int64_t* j1, int64_t* j2) {
    int64_t a, b;
    if (i == 0) {
      a = -ll - ceilf - 1, b = ll + ceilf - 1;
    } else {
      const int64_t q = (i + 1) / 2, r = (i + 1) % 2;
      if (r == 0) {
        if (q == n + 1)
          a = n - ll - ceilf - 1, b = n + ll + ceilf - 1;
        else
          a = q - 1 - ll - roundf - 1, b = q + ll - 1 + ceilf - 1;
      } else {
        a = q - 1 - ll - 1, b = q + ll + roundf - 1;
      }
    }
    *j1 = std::max<int64_t>(a + 2, 0);
    *j2 = std::min<int64_t>(b, n);
  };
  std::vector<double> V0(NP, 0.0), V1(NP, 0.0), conv;
  V1[0] = 1;
  int64_t V0s = 0, V1s = 0, j1, j2, expnt = 0;
  const double ep128 = std::ldexp(1.0, 128), em128 = std::ldexp(1.0, -128);
  bounds(0, &j1, &j2);
  for (int64_t i = 1; i < 2 * n + 2; ++i) {
    const int64_t k1 = j1;
    std::swap(V0, V1);
    std::swap(V0s, V1s);
    std::fill(V1.begin(), V1.end(), 0.0);
    bounds(i, &j1, &j2);
    const std::vector<double>& pw = (i == 1 || i == 2 * n + 1) ? gp : (i % 2 ? g2p : om2gp);
    const int64_t ln2 = j2 - k1 + 1;
    if (ln2 > 0) {
      // full convolution of V0[k1 - V0s : k1 - V0s + ln2] with pw[:ln2]
      const size_t L = static_cast<size_t>(ln2);
      conv.assign(2 * L - 1, 0.0);
      const int64_t off = k1 - V0s;
      for (size_t a = 0; a < L; ++a) {
        const int64_t ia = off + static_cast<int64_t>(a);
        const double va = (ia >= 0 && ia < npwrs) ? V0[static_cast<size_t>(ia)] : 0.0;
        if (va == 0.0) continue;
        for (size_t b = 0; b < L && b < NP; ++b) conv[a + b] += va * pw[b];
      }
      const int64_t cs = j1 - k1, cl = j2 - j1 + 1;
      double mx = 0;
      for (int64_t q = 0; q < cl; ++q) {
        const int64_t src = cs + q;
        V1[static_cast<size_t>(q)] = (src >= 0 && src < static_cast<int64_t>(conv.size())) ? conv[static_cast<size_t>(src)] : 0.0;
        mx = std::max(mx, V1[static_cast<size_t>(q)]);
      }
      if (0 < mx && mx < em128) {
        for (double& vv : V1) vv *= ep128;
        expnt -= 128;
      }
      V1s = V0s + j1 - k1;
    }
  }
  double ans = V1[static_cast<size_t>(n - V1s)];
  for (int64_t m = 1; m <= n; ++m) {
    if (std::fabs(ans) > ep128) {
      ans *= em128;
      expnt += 128;
    }
    ans *= static_cast<double>(m);
  }
  if (expnt != 0) ans = std::ldexp(ans, static_cast<int>(expnt));
  return clip01(ans);
}

// Pelz-Good asymptotic series for Pr(D_n <= x).
double kolmogn_pelzgood(int64_t n, double x) {
  if (x <= 0.0) return 0.0;
  if (x >= 1.0) return 1.0;
  const double pi2 = M_PI * M_PI, pi4 = pi2 * pi2, pi6 = pi4 * pi2;
  const double z = std::sqrt(static_cast<double>(n)) * x;
  const double z2 = z * z, z3 = z2 * z, z4 = z2 * z2, z6 = z4 * z2;
  const double qlog = -pi2 / 8 / z2;
  if (qlog < -708) return 0.0;
  double q = std::exp(qlog);
  const double k1a = -z2, k1b = pi2 / 4;
  const double k2a = 6 * z6 + 2 * z4, k2b = (2 * z4 - 5 * z2) * pi2 / 4, k2c = pi4 * (1 - 2 * z2) / 16;
  const double k3d = pi6 * (5 - 30 * z2) / 64, k3c = pi4 * (-60 * z2 + 212 * z4) / 16,
               k3b = pi2 * (135 * z4 - 96 * z6) / 4, k3a = -30 * z6 - 90 * std::pow(z, 8);
  double K[4] = {0, 0, 0, 0};
  const int64_t maxk = static_cast<int64_t>(std::ceil(16 * z / M_PI));
  for (int64_t k = maxk; k > 0; --k) {
    const double m = static_cast<double>(2 * k - 1), m2 = m * m, m4 = m2 * m2, m6 = m4 * m2;
    const double qp = std::pow(q, static_cast<double>(8 * k));
    const double c[4] = {1.0, k1a + k1b * m2, k2a + k2b * m2 + k2c * m4, k3a + k3b * m2 + k3c * m4 + k3d * m6};
    for (int i = 0; i < 4; ++i) K[i] = K[i] * qp + c[i];
  }
  const double s2pi = std::sqrt(2 * M_PI);
  const double den[4] = {z, 6 * z4, 72 * std::pow(z, 7), 6480 * std::pow(z, 10)};
  for (int i = 0; i < 4; ++i) K[i] = K[i] * q * s2pi / den[i];
  q = std::exp(-pi2 / 2 / z2);
  double k2x = 0, k3x = 0;
  const double s3z = std::sqrt(3.0) * z;
  for (int64_t k = maxk; k > 0; --k) {
    const double kk = static_cast<double>(k), ks = kk * kk, qq = std::pow(q, ks), kp = M_PI * kk;
    k2x += ks * qq;
    k3x += (s3z + kp) * (s3z - kp) * ks * qq;
  }
  K[2] += k2x * pi2 * s2pi / (-36 * z3);
  K[3] += k3x * pi2 * s2pi / (216 * z6);
  const double nd = static_cast<double>(n);
  double sum = 0;
  for (int i = 0; i < 4; ++i) sum += K[i] / std::pow(nd, i / 2.0);
  return sum;
}

}  // namespace

// One-sided Pr(D_n^+ >= x): Birnbaum-Tingey / Smirnov exact sum in extended precision.
double smirnov_sf(int64_t n, double x) {
  if (!(n > 0 && x >= 0.0 && x <= 1.0)) return std::nan("");
  if (n == 1) return 1 - x;
  if (x == 0.0) return 1.0;
  if (x == 1.0) return 0.0;
  const long double N = static_cast<long double>(n), X = x;
  const long double nx = N * X;
  long double fl = std::floor(nx);
  long double alpha = nx - fl;
  int64_t nxfl = static_cast<int64_t>(fl);
  if (alpha >= 1) ++nxfl, alpha = 0;
  if (nxfl == 0 || (nxfl == 1 && alpha == 0)) {
    const long double cdf = X * std::pow(1.0L + X, N - 1);
    return clip01(static_cast<double>(1.0L - cdf));
  }
  if (-2.0 * static_cast<double>(n) * x * x < -708.3964185322641) return 0.0;
  if (nxfl >= n - 1) return clip01(static_cast<double>(std::pow(1.0L - X, N)));
  if (n > 1000000) {
    const double lp = -std::pow(6.0 * static_cast<double>(n) * x + 1, 2) / 18.0 / static_cast<double>(n);
    return lp < -M_LN2 ? std::exp(lp) : 1.0 - (-std::expm1(lp));
  }
  // sum_{v=0}^{last} C(n,v) (x + v/n)^(v-1) (1 - x - v/n)^(n-v), times x. The terms are
  // unimodal in v, so the sum starts at the largest term and walks outwards in both directions
  // until the remaining terms cannot change it (at most ~sqrt(n) terms instead of n).
  const int64_t last = n - nxfl - 1;
  const long double lgn = std::lgamma(N + 1);
  auto logterm = [&](int64_t v) -> long double {
    const long double V = static_cast<long double>(v);
    const long double a = X + V / N, b = (N - V) / N - X;
    if (b <= 0) return -std::numeric_limits<long double>::infinity();
    return lgn - std::lgamma(V + 1) - std::lgamma(N - V + 1) + (V - 1) * std::log(a) + (N - V) * std::log(b);
  };
  int64_t lo = 0, hi = last;
  while (hi - lo > 2) {
    const int64_t m1 = lo + (hi - lo) / 3, m2 = hi - (hi - lo) / 3;
    if (logterm(m1) < logterm(m2))
      lo = m1 + 1;
    else
      hi = m2 - 1;
  }
  int64_t peak = lo;
  for (int64_t v = lo + 1; v <= hi; ++v)
    if (logterm(v) > logterm(peak)) peak = v;
  // The terms are flat around the peak (hundreds of thousands matter for n ~ 1e6), so they
  // are summed in parallel chunks: each chunk starts from an exact log-binomial and steps it
  // in extended precision; chunks whose end terms are both below e^-60 of the peak are skipped
  // (unimodality bounds every term inside them).
  const long double lpeak = logterm(peak);
  // Where the terms fall below e^-70 of the peak (unimodality: bisection on each side).
  constexpr long double kCut = -70.0L;
  auto edge = [&](int64_t inside, int64_t outside) {  // logterm(inside) >= cut > logterm(outside)
    while (std::llabs(outside - inside) > 1) {
      const int64_t mid = inside + (outside - inside) / 2;
      if (logterm(mid) - lpeak >= kCut)
        inside = mid;
      else
        outside = mid;
    }
    return inside;
  };
  const bool lo_tail = logterm(0) - lpeak < kCut, hi_tail = logterm(last) - lpeak < kCut;
  const int64_t vlo = lo_tail ? edge(peak, 0) : 0, vhi = hi_tail ? edge(peak, last) : last;
  const int64_t width = vhi - vlo + 1;
  if (lo_tail && hi_tail && width >= 8192) {
    // The terms are samples of a smooth, analytic, bell-shaped function of v whose both tails
    // are negligible inside [0, last]; by Poisson summation, h * (sum at every h-th point)
    // equals the sum over every integer up to aliasing terms of order exp(-2 pi^2 (sigma/h)^2)
    // (sigma ~ width / 24). With h ~ width / 512 that is far below double rounding, so a few
    // hundred terms replace the hundreds of thousands the direct sum walks (checked against
    // scipy.special.smirnov in the tests).
    // The step must also resolve the factor (x + v/n)^(v-1), which changes on a scale of n*x
    // terms: with n*x in the hundreds a step of width/512 aliased up to 3e-7 (relative) against
    // scipy.special.smirnov (checked against a 40-digit mpmath sum).
    const int64_t h = std::max<int64_t>(1, std::min<int64_t>(width / 512, nxfl / 32));
    const int64_t v0 = peak - ((peak - vlo) / h) * h;
    long double sum = 0.0L;
    for (int64_t v = v0; v <= vhi; v += h) sum += std::exp(logterm(v) - lpeak);
    sum *= static_cast<long double>(h) * std::exp(lpeak);
    return clip01(static_cast<double>(X * sum));
  }
  constexpr int64_t kTerms = 4096;
  const int64_t nchunks = last / kTerms + 1;
  std::vector<long double> part(static_cast<size_t>(nchunks), 0.0L);
  parallel_for(nchunks, 1, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      const int64_t v0 = c * kTerms, v1 = std::min(last, v0 + kTerms - 1);
      if (!(v0 <= peak && peak <= v1) && std::max(logterm(v0), logterm(v1)) - lpeak < -60) continue;
      const long double V0 = static_cast<long double>(v0);
      long double logc = lgn - std::lgamma(V0 + 1) - std::lgamma(N - V0 + 1), acc = 0.0L;
      for (int64_t v = v0; v <= v1; ++v) {
        const long double V = static_cast<long double>(v);
        const double la = std::log(static_cast<double>(X + V / N));
        const double lb = std::log(static_cast<double>((N - V) / N - X));
        const long double lt = logc + (V - 1) * la + (N - V) * lb - lpeak;
        acc += std::exp(static_cast<double>(lt));
        logc += std::log(static_cast<double>((N - V) / (V + 1)));
      }
      part[static_cast<size_t>(c)] = acc;
    }
  });
  long double sum = 0.0L;
  for (long double t : part) sum += t;
  sum *= std::exp(lpeak);
  return clip01(static_cast<double>(X * sum));
}

double kstwo_sf(double x, int64_t n) {
  if (n <= 0) return std::nan("");
  if (std::isnan(x)) return std::nan("");
  if (x >= 1.0) return 0.0;
  if (x <= 0.0) return 1.0;
  const double nd = static_cast<double>(n), t = nd * x;
  if (t <= 1.0) {
    if (t <= 0.5) return 1.0;
    double prob;
    if (n <= 140) {
      prob = 1.0;
      for (int64_t i = 1; i <= n; ++i) prob *= static_cast<double>(i) * (1.0 / nd) * (2 * t - 1);
    } else {
      prob = std::exp(log_nfact_div_npown(nd) + nd * std::log(2 * t - 1));
    }
    return clip01(1.0 - prob);
  }
  if (t >= nd - 1) return clip01(2 * std::pow(1.0 - x, nd));
  if (x >= 0.5) return clip01(2 * smirnov_sf(n, x));
  const double nxx = t * x;
  if (n <= 140) {
    if (nxx <= 0.754693) return clip01(1.0 - kolmogn_dmtw(n, x));
    if (nxx <= 4) return clip01(1.0 - kolmogn_pomeranz(n, x));
    return clip01(2 * smirnov_sf(n, x));
  }
  if (nxx >= 370.0) return 0.0;
  if (nxx >= 2.2) return clip01(2 * smirnov_sf(n, x));
  double cdf;
  if (nxx >= 18.0)
    cdf = 1.0;
  else if (n <= 100000 && nd * std::pow(x, 1.5) <= 1.4)
    cdf = kolmogn_dmtw(n, x);
  else
    cdf = kolmogn_pelzgood(n, x);
  return clip01(1.0 - clip01(cdf));
}

namespace {
inline int64_t floordiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// One-sided exact p-value for n1 != n2: Hodges' count of the lattice paths (0,0)->(m,n) that
// reach m*y <= n*x - h*g, by first-passage points, over C(m+n, n). Evaluated in extended
// precision from a log-factorial table; false (caller falls back to asymp, as scipy does) when
// C(m+n, n) overflows a double or the result is not a probability.
bool one_sided_exact(int64_t m, int64_t n, int64_t g, int64_t h, double* prob) {
  if (m < n) std::swap(m, n);
  const int64_t mg = m / g, ng = n / g;
  std::vector<long double> lf(static_cast<size_t>(m + n + 1));
  lf[0] = 0.0L;
  for (int64_t k = 1; k <= m + n; ++k) lf[static_cast<size_t>(k)] = lf[static_cast<size_t>(k - 1)] + std::log(static_cast<long double>(k));
  auto binom = [&](int64_t a, int64_t k) -> long double {
    if (k < 0 || k > a) return 0.0L;
    return std::exp(lf[static_cast<size_t>(a)] - lf[static_cast<size_t>(k)] - lf[static_cast<size_t>(a - k)]);
  };
  const long double total = binom(m + n, n);
  if (!(total <= static_cast<long double>(std::numeric_limits<double>::max()))) return false;
  const int64_t lxj = n + floordiv(mg - h, mg);
  long double paths;
  if (lxj <= 0) {
    paths = total;
  } else {
    std::vector<int64_t> xj(static_cast<size_t>(lxj));
    for (int64_t j = 0; j < lxj; ++j) xj[static_cast<size_t>(j)] = (h + mg * j + ng - 1) / ng;
    std::vector<long double> B(static_cast<size_t>(lxj), 0.0L);
    B[0] = 1.0L;
    for (int64_t j = 1; j < lxj; ++j) {
      long double bj = binom(xj[static_cast<size_t>(j)] + j, j);
      for (int64_t i = 0; i < j; ++i)
        bj -= binom(xj[static_cast<size_t>(j)] - xj[static_cast<size_t>(i)] + j - i, j - i) * B[static_cast<size_t>(i)];
      B[static_cast<size_t>(j)] = bj;
    }
    paths = 0.0L;
    for (int64_t j = 0; j < lxj; ++j) paths += B[static_cast<size_t>(j)] * binom(m - xj[static_cast<size_t>(j)] + n - j, n - j);
  }
  if (!std::isfinite(static_cast<double>(paths)) || paths > total) return false;
  const double p = static_cast<double>(paths / total);
  if (!(p >= 0.0 && p <= 1.0)) return false;
  *prob = p;
  return true;
}
}  // namespace

double ks_2samp_pvalue(int64_t n1, int64_t n2, double d, KSMethod method, bool* exact_used, double* d_out,
                       KSAlternative alt) {
  if (n1 <= 0 || n2 <= 0) throw std::invalid_argument("ks_2samp: samples must not be empty");
  bool exact = method == KSMethod::exact || (method == KSMethod::automatic && std::max(n1, n2) <= 10000);
  const int64_t g = std::gcd(n1, n2), n1g = n1 / g, n2g = n2 / g;
  if (method == KSMethod::exact && static_cast<double>(n1g) >= 2147483647.0 / static_cast<double>(n2g)) exact = false;
  double prob = 0;
  if (exact) {
    const double lcm = static_cast<double>(n1g) * static_cast<double>(n2);
    const int64_t h = static_cast<int64_t>(std::nearbyint(d * lcm));
    d = static_cast<double>(h) / lcm;
    if (h == 0) {
      prob = 1.0;
    } else if (alt == KSAlternative::two_sided) {
      prob = n1 == n2 ? prob_outside_square(n1, h) : outer_prob_inside(n1, n2, g, h);
      if (!std::isfinite(prob) || !(prob >= 0 && prob <= 1)) exact = false;  // as scipy: fall back
    } else if (n1 == n2) {
      // C(2n, n - h) / C(2n, n) as a running product (scipy's form)
      prob = 1.0;
      for (int64_t j = 0; j < h; ++j) prob *= static_cast<double>(n1 - j) / (static_cast<double>(n1 + j) + 1.0);
      if (!(prob >= 0 && prob <= 1)) exact = false;
    } else {
      exact = one_sided_exact(n1, n2, g, h, &prob);
    }
  }
  if (!exact) {
    const double m = static_cast<double>(std::max(n1, n2)), n = static_cast<double>(std::min(n1, n2));
    const double en = m * n / (m + n);
    if (alt == KSAlternative::two_sided) {
      prob = kstwo_sf(d, static_cast<int64_t>(std::nearbyint(en)));
    } else {
      // Hodges' (1958) eq. 5.3 approximation, m the larger sample
      const double z = std::sqrt(en) * d;
      prob = std::exp(-2 * z * z - 2 * z * (m + 2 * n) / std::sqrt(m * n * (m + n)) / 3.0);
    }
  }
  if (exact_used) *exact_used = exact;
  if (d_out) *d_out = d;
  return clip01(prob);
}

namespace {
using Extremes = detail::KSExtremes;

// scipy evaluates cdf1 - cdf2 (counts divided by the sizes, then subtracted) at every value of
// concat(sorted a, sorted b) and reports the first position of the extreme. The maximum is
// always reached at a value of a, so it is scanned over a only: per element (i + 1) / na -
// #(b <= a[i]) / nb, which inside a run of ties only grows towards the run's value (so the
// first maximal element carries the run's value). The minimum is scanned over the last element
// of each run of a (values of a come first in scipy's order) and over the values of b that a
// does not hold, per element #(a <= b[j]) / na - (j + 1) / nb (shared values are already the
// a runs). The counts come from one branch-free merge, split into independent chunks of a so
// both halves run in parallel; every subtraction is the one scipy does, so results are
// bit-identical.
Extremes ks_extremes(const double* a, int64_t na, const double* b, int64_t nb) {
  const double fa = static_cast<double>(na), fb = static_cast<double>(nb);
  constexpr int64_t kGrain = int64_t(1) << 15;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(na / kGrain, 64));
  std::vector<Extremes> part(static_cast<size_t>(chunks));
  std::vector<uint32_t> cb(static_cast<size_t>(na)), ca(static_cast<size_t>(nb));
  parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const int64_t i0 = na * c / chunks, i1 = na * (c + 1) / chunks;
      // b values merged in this chunk: after a[i0 - 1] and up to a[i1 - 1] (all remaining for the last).
      const int64_t j0 = i0 == 0 ? 0 : std::upper_bound(b, b + nb, a[i0 - 1]) - b;
      const int64_t j1 = c == chunks - 1 ? nb : std::upper_bound(b, b + nb, a[i1 - 1]) - b;
      uint32_t* cbp = cb.data();
      uint32_t* cap = ca.data();
      // b first on ties: when a[i] is stored, every b <= a[i] was taken; when b[j] is taken,
      // exactly the a < b[j] were. (A branch-free one-step-per-value merge measured slower:
      // its loop-carried dependency costs more than the mispredictions here.)
      int64_t j = j0;
      for (int64_t i = i0; i < i1; ++i) {
        const double v = a[i];
        while (j < j1 && b[j] <= v) cap[j++] = static_cast<uint32_t>(i);
        cbp[i] = static_cast<uint32_t>(j);
      }
      for (; j < j1; ++j) cap[j] = static_cast<uint32_t>(i1);
      Extremes e;
      for (int64_t k = i0; k < i1; ++k) {
        const double d = static_cast<double>(k + 1) / fa - static_cast<double>(cbp[k]) / fb;
        if (d > e.mx) e.mx = d, e.loc_mx = a[k];
        const bool last = k + 1 == na || a[k + 1] != a[k];
        if (last && d < e.mn_a) e.mn_a = d, e.loc_mn_a = a[k];
      }
      for (int64_t k = j0; k < j1; ++k) {
        const int64_t ia = cap[k];
        if (ia < na && a[ia] == b[k]) continue;  // shared value: counted among the a runs
        const double d = static_cast<double>(ia) / fa - static_cast<double>(k + 1) / fb;
        if (d < e.mn_b) e.mn_b = d, e.loc_mn_b = b[k];
      }
      part[static_cast<size_t>(c)] = e;
    }
  });
  Extremes r;  // chunks in order, strict comparisons: first occurrences win
  for (const Extremes& e : part) {
    if (e.mx > r.mx) r.mx = e.mx, r.loc_mx = e.loc_mx;
    if (e.mn_a < r.mn_a) r.mn_a = e.mn_a, r.loc_mn_a = e.loc_mn_a;
    if (e.mn_b < r.mn_b) r.mn_b = e.mn_b, r.loc_mn_b = e.loc_mn_b;
  }
  return r;
}
}  // namespace

namespace detail {
KSResult ks_finish(const KSExtremes& e, int64_t na, int64_t nb, KSMethod method, KSAlternative alt) {
  const double mn = std::min(e.mn_a, e.mn_b);
  const double loc_mn = e.mn_a <= e.mn_b ? e.loc_mn_a : e.loc_mn_b;
  const double minS = std::min(std::max(-mn, 0.0), 1.0), maxS = e.mx;
  KSResult r;
  if (alt == KSAlternative::less || (alt == KSAlternative::two_sided && minS > maxS)) {
    r.statistic = minS, r.sign = -1, r.location = loc_mn;
  } else {
    r.statistic = maxS, r.sign = 1, r.location = e.loc_mx;
  }
  bool exact = false;
  double d = r.statistic;
  r.pvalue = ks_2samp_pvalue(na, nb, r.statistic, method, &exact, &d, alt);
  r.statistic = d;
  r.exact = exact;
  return r;
}
}  // namespace detail

KSResult ks_2samp_sorted(const double* a, int64_t na, const double* b, int64_t nb, KSMethod method,
                         KSAlternative alt) {
  if (na <= 0 || nb <= 0) throw std::invalid_argument("ks_2samp: samples must not be empty");
  if (static_cast<uint64_t>(na) >= (uint64_t(1) << 32) || static_cast<uint64_t>(nb) >= (uint64_t(1) << 32))
    throw std::invalid_argument("ks_2samp: samples of 2^32 values or more are not supported");
  return detail::ks_finish(ks_extremes(a, na, b, nb), na, nb, method, alt);
}

void sort_f64(const double* x, int64_t n, double* out) {
  if (n <= 0) return;
  check_finite_order(x, n, "sort");
  std::vector<uint64_t> k(static_cast<size_t>(n)), t(static_cast<size_t>(n));
  radix_sort(x, n, out, k.data(), t.data());
}

double wasserstein_sorted(const double* a, int64_t na, const double* b, int64_t nb) {
  if (na <= 0 || nb <= 0) throw std::invalid_argument("wasserstein: samples must not be empty");
  const double fa = static_cast<double>(na), fb = static_cast<double>(nb);
  int64_t i = 0, j = 0;
  double prev = 0, s = 0;
  bool started = false;
  while (i < na || j < nb) {
    const double v = (j >= nb || (i < na && a[i] <= b[j])) ? a[i] : b[j];
    if (started) s += std::fabs(static_cast<double>(i) / fa - static_cast<double>(j) / fb) * (v - prev);
    const int64_t i0 = i, j0 = j;
    while (i < na && a[i] == v) ++i;
    while (j < nb && b[j] == v) ++j;
    // scipy differences consecutive values of the merged sample: a repeated infinity gives
    // inf - inf = NaN there, and NaN propagates through its sum.
    if (std::isinf(v) && (i - i0) + (j - j0) > 1) return std::nan("");
    prev = v;
    started = true;
  }
  return s;
}

}  // namespace drift
}  // namespace pyperfcore
