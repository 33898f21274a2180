// Shared helpers for the *_bind.cpp files only (includes pybind11; never part of the core).
#pragma once
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "cpu.hpp"

namespace pyperfcore {
namespace py = pybind11;

// Resolves the `target` argument of a kernel binding: None -> the active target, else a name.
inline CpuTarget resolve_target(const py::object& target) {
  if (target.is_none()) return active_target();
  std::string name = py::cast<std::string>(target);
  CpuTarget t;
  if (!parse_target(name, &t))
    throw py::value_error("unknown CPU target '" + name + "'; use scalar, avx2, avx512 or avx512_vnni");
  if (!cpu_supports(t)) throw py::value_error("CPU target '" + name + "' is not supported by this CPU");
  return t;
}

// Byte stride -> element stride, refusing strides that are not a whole number of elements.
inline int64_t elem_stride(py::ssize_t bytes, py::ssize_t itemsize, const char* what) {
  if (bytes % itemsize != 0) throw py::value_error(std::string(what) + ": strides must be multiples of the item size");
  return static_cast<int64_t>(bytes / itemsize);
}

}  // namespace pyperfcore
