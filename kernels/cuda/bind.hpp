// Entry points of each capability's CUDA bindings, called from cuda_module.cpp.
#pragma once
#include <pybind11/pybind11.h>

#include <string>

namespace pyperfcore {
namespace cuda {
void bind_cuda_quant(pybind11::module_& m);
void bind_cuda_prepost(pybind11::module_& m);
// Raises RuntimeError with the reason if no CUDA device can be used (no GPU, no driver,
// a driver too old for this runtime).
void require_device();
// Throws RuntimeError "<what>: <reason>" for a non-zero cudaError_t.
void check(int err, const char* what);
}  // namespace cuda
}  // namespace pyperfcore
