// pyperfcore._cuda: thin bindings over the CUDA launchers. Pointers arrive as integers
// (torch's data_ptr()); the stream is the caller's current stream. Importing this module
// never touches a GPU: the driver is first asked when an op or status() is called.
#include <dlfcn.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "bind.hpp"
#include "quant_cuda.hpp"

namespace py = pybind11;
using namespace pyperfcore::cuda;

namespace {

constexpr int kErrNoDevice = 100;            // cudaErrorNoDevice
constexpr int kErrInsufficientDriver = 35;   // cudaErrorInsufficientDriver
constexpr int kErrNotPermitted = 800;        // cudaErrorNotPermitted (e.g. sandboxed)

// Tells "no driver" from "driver too old" by asking the driver library directly.
std::string driver_problem() {
  const std::string rt = std::to_string(runtime_version() / 1000) + "." + std::to_string(runtime_version() % 1000 / 10);
  void* lib = dlopen("libcuda.so.1", RTLD_LAZY | RTLD_LOCAL);
  if (!lib) return "no NVIDIA driver is installed (libcuda.so.1 not found); CUDA ops need a GPU and its driver";
  using GetVersion = int (*)(int*);
  auto get = reinterpret_cast<GetVersion>(dlsym(lib, "cuDriverGetVersion"));
  int v = 0;
  std::string out;
  if (get && get(&v) == 0)
    out = "the NVIDIA driver supports CUDA " + std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10) +
          ", older than the CUDA " + rt + " runtime this module was built with; update the driver";
  else
    out = "the NVIDIA driver is too old for the CUDA " + rt + " runtime this module was built with";
  dlclose(lib);
  return out;
}

std::string describe(int err) {
  std::string base = error_string(err);
  if (err == kErrNoDevice) return "no CUDA GPU is visible on this machine (" + base + ")";
  if (err == kErrInsufficientDriver) return driver_problem() + " (" + base + ")";
  if (err == 34 /* cudaErrorStubLibrary */) return "no NVIDIA driver is installed (" + base + ")";
  return base;
}


std::string status() {
  int n = 0;
  int err = device_count(&n);
  if (err != 0) return describe(err);
  if (n == 0) return "no CUDA GPU is visible on this machine";
  return "ok";
}

}  // namespace

namespace pyperfcore {
namespace cuda {
void require_device() {
  std::string s = status();
  if (s != "ok") throw std::runtime_error("CUDA op cannot run: " + s);
}
void check(int err, const char* what) {
  if (err != 0) throw std::runtime_error(std::string(what) + ": " + describe(err));
}
}  // namespace cuda
}  // namespace pyperfcore

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "pyperfcore CUDA kernels (private; use the public pyperfcore modules)";
  m.def("status", &status, "'ok' if a CUDA device can be used, else the reason it cannot.");
  m.def("runtime_version", &runtime_version);
  m.def("archs", [] {
    std::vector<std::string> out;
    std::string s = PYPERFCORE_CUDA_ARCHS;
    size_t start = 0;
    while (start <= s.size()) {
      size_t end = s.find(',', start);
      if (end == std::string::npos) end = s.size();
      if (end > start) out.push_back(s.substr(start, end - start));
      start = end + 1;
    }
    return out;
  });
  m.def("device_name", [](int index) {
    require_device();
    char buf[256];
    check(device_name(index, buf, sizeof buf), "device_name");
    return std::string(buf);
  }, py::arg("index") = 0);
  bind_cuda_quant(m);
  bind_cuda_prepost(m);
}
