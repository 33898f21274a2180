#include "cpu.hpp"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace pyperfcore {

namespace {
constexpr int kUnresolved = -1;
std::atomic<int> g_active{kUnresolved};

#if defined(__x86_64__) || defined(_M_X64)
constexpr bool kX86 = true;
#else
constexpr bool kX86 = false;
#endif
}  // namespace

const char* target_name(CpuTarget t) {
  switch (t) {
    case CpuTarget::scalar: return "scalar";
    case CpuTarget::avx2: return "avx2";
    case CpuTarget::avx512: return "avx512";
    case CpuTarget::avx512_vnni: return "avx512_vnni";
  }
  return "unknown";
}

bool parse_target(const std::string& name, CpuTarget* out) {
  for (CpuTarget t : {CpuTarget::scalar, CpuTarget::avx2, CpuTarget::avx512, CpuTarget::avx512_vnni}) {
    if (name == target_name(t)) {
      *out = t;
      return true;
    }
  }
  return false;
}

std::vector<CpuTarget> compiled_targets() {
  if (kX86) return {CpuTarget::scalar, CpuTarget::avx2, CpuTarget::avx512, CpuTarget::avx512_vnni};
  return {CpuTarget::scalar};
}

bool cpu_supports(CpuTarget t) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  switch (t) {
    case CpuTarget::scalar: return true;
    case CpuTarget::avx2:
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    case CpuTarget::avx512:
      return cpu_supports(CpuTarget::avx2) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq");
    case CpuTarget::avx512_vnni:
      return cpu_supports(CpuTarget::avx512) && __builtin_cpu_supports("avx512vnni");
  }
  return false;
#else
  return t == CpuTarget::scalar;
#endif
}

std::vector<CpuTarget> supported_targets() {
  std::vector<CpuTarget> out;
  for (CpuTarget t : compiled_targets())
    if (cpu_supports(t)) out.push_back(t);
  return out;
}

CpuTarget best_supported_target() { return supported_targets().back(); }

void set_active_target(CpuTarget t) {
  bool compiled = false;
  for (CpuTarget c : compiled_targets()) compiled |= (c == t);
  if (!compiled)
    throw std::invalid_argument(std::string("CPU target '") + target_name(t) + "' was not compiled into this build");
  if (!cpu_supports(t))
    throw std::invalid_argument(std::string("CPU target '") + target_name(t) +
                                "' is not supported by this CPU; supported here: " +
                                [] {
                                  std::string s;
                                  for (CpuTarget x : supported_targets()) s += std::string(s.empty() ? "" : ", ") + target_name(x);
                                  return s;
                                }());
  g_active.store(static_cast<int>(t));
}

CpuTarget active_target() {
  int v = g_active.load(std::memory_order_relaxed);
  if (v != kUnresolved) return static_cast<CpuTarget>(v);
  const char* env = std::getenv("PYPERFCORE_CPU_TARGET");
  if (env && *env) {
    CpuTarget t;
    if (!parse_target(env, &t))
      throw std::invalid_argument(std::string("PYPERFCORE_CPU_TARGET='") + env +
                                  "' is not a CPU target; use scalar, avx2, avx512 or avx512_vnni");
    set_active_target(t);
    return t;
  }
  CpuTarget best = best_supported_target();
  int expected = kUnresolved;
  g_active.compare_exchange_strong(expected, static_cast<int>(best));
  return static_cast<CpuTarget>(g_active.load());
}

}  // namespace pyperfcore
