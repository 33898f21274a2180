#include <pybind11/stl.h>

#include "../bindings/bind.hpp"
#include "buffers.hpp"
#include "threads.hpp"

namespace pyperfcore {

void bind_common(py::module_& m) {
  m.def("compiled_cpu_targets", [] {
    std::vector<std::string> out;
    for (CpuTarget t : compiled_targets()) out.emplace_back(target_name(t));
    return out;
  }, "Names of the CPU targets compiled into this build.");
  m.def("supported_cpu_targets", [] {
    std::vector<std::string> out;
    for (CpuTarget t : supported_targets()) out.emplace_back(target_name(t));
    return out;
  }, "Names of the compiled CPU targets this CPU can run.");
  m.def("get_cpu_target", [] { return std::string(target_name(active_target())); },
        "The CPU target kernels dispatch to (PYPERFCORE_CPU_TARGET, or the best supported).");
  m.def("set_cpu_target", [](const std::string& name) {
    CpuTarget t;
    if (!parse_target(name, &t))
      throw py::value_error("unknown CPU target '" + name + "'; use scalar, avx2, avx512 or avx512_vnni");
    set_active_target(t);
  }, py::arg("name"), "Force the CPU target; ValueError if this CPU cannot run it.");
  m.def("get_num_threads", &get_num_threads, "Threads used by native parallel loops.");
  m.def("set_num_threads", [](int n) {
    if (n < 1) throw py::value_error("set_num_threads: n must be >= 1");
    set_num_threads(n);
  }, py::arg("n"), "Set the threads used by native parallel loops.");
  m.def("default_num_threads", &default_num_threads,
        "PYPERFCORE_NUM_THREADS, else OMP_NUM_THREADS, else the cores available.");
  m.def("parallel_sum_test", [](int64_t n) {
    // Exercises the pool (used by the fork-safety test): sum of 0..n-1 computed in chunks.
    std::vector<int64_t> part(static_cast<size_t>(std::max<int64_t>(n, 1)), 0);
    {
      py::gil_scoped_release nogil;
      parallel_for(n, 1024, [&](int64_t b, int64_t e) {
        int64_t s = 0;
        for (int64_t i = b; i < e; ++i) s += i;
        part[static_cast<size_t>(b)] = s;
      });
    }
    int64_t s = 0;
    for (int64_t v : part) s += v;
    return s;
  }, py::arg("n"));
}

}  // namespace pyperfcore
