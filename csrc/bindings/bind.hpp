// Declarations of each capability's binding entry point (defined in csrc/<cap>/<cap>_bind.cpp).
#pragma once
#include <pybind11/pybind11.h>

namespace pyperfcore {
void bind_common(pybind11::module_& m);
void bind_quant(pybind11::module_& m);
void bind_batching(pybind11::module_& m);
void bind_sketches(pybind11::module_& m);
void bind_drift(pybind11::module_& m);
void bind_prepost(pybind11::module_& m);
}  // namespace pyperfcore
