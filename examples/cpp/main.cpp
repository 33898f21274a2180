// Quantizes a weight matrix per row with pyperfcore's C++ core, on every CPU target this
// machine supports, and checks the targets agree with each other and with a plain loop.
#include <pyperfcore/common/cpu.hpp>
#include <pyperfcore/common/threads.hpp>
#include <pyperfcore/quant/quant.hpp>

#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <random>
#include <vector>

int main() {
  using namespace pyperfcore;
  const int64_t rows = 256, cols = 1000;
  std::vector<float> w(static_cast<size_t>(rows * cols));
  std::mt19937 gen(7);
  std::normal_distribution<float> dist(0.f, 0.05f);
  for (float& v : w) v = dist(gen);

  std::printf("pyperfcore C++ example: %d threads, best CPU target %s\n", get_num_threads(),
              target_name(best_supported_target()));
  std::vector<int8_t> q0;
  std::vector<float> s0;
  int failures = 0;
  for (CpuTarget t : supported_targets()) {
    std::vector<int8_t> q(w.size());
    std::vector<float> s(static_cast<size_t>(rows));
    quant::View3 v{w.data(), quant::FloatType::f32, 1, rows, cols, rows * cols, cols, 1};
    quant::quantize_int8(v, q.data(), s.data(), t);
    if (q0.empty()) {
      q0 = q;
      s0 = s;
    } else if (q != q0 || s != s0) {
      std::printf("  target %s disagrees with scalar\n", target_name(t));
      ++failures;
    }
    // Independent check of row 0 from the definition.
    float amax = 0.f;
    for (int64_t j = 0; j < cols; ++j) amax = std::fmax(amax, std::fabs(w[static_cast<size_t>(j)]));
    float scale = amax / 127.f;
    for (int64_t j = 0; j < cols; ++j) {
      float r = std::nearbyint(std::fmin(127.f, std::fmax(-127.f, w[static_cast<size_t>(j)] / scale)));
      if (static_cast<int8_t>(r) != q[static_cast<size_t>(j)]) {
        ++failures;
        break;
      }
    }
    std::printf("  %-12s scale[0]=%.6g q[0][0..3]=%d %d %d %d\n", target_name(t), s[0], q[0], q[1], q[2], q[3]);
  }
  std::vector<float> back(w.size());
  quant::dequantize_int8(q0.data(), s0.data(), 1, rows, cols, back.data());
  double err = 0, norm = 0;
  for (size_t i = 0; i < w.size(); ++i) {
    err += (back[i] - w[i]) * (back[i] - w[i]);
    norm += w[i] * w[i];
  }
  std::printf("  relative error after dequantize: %.5f\n", std::sqrt(err / norm));
  // Bad input is an exception, not a crash.
  w[5] = std::nanf("");
  try {
    std::vector<int8_t> q(w.size());
    std::vector<float> s(static_cast<size_t>(rows));
    quant::quantize_rows_int8(w.data(), rows, cols, q.data(), s.data());
    ++failures;
  } catch (const std::invalid_argument& e) {
    std::printf("  NaN rejected: %s\n", e.what());
  }
  std::printf(failures ? "FAILED\n" : "ok\n");
  return failures ? 1 : 0;
}
