// Python bindings of the drift capability (filled in by its issue).
#include "../bindings/bind.hpp"

namespace pyperfcore {

void bind_drift(pybind11::module_& m) { (void)m; }

}  // namespace pyperfcore
