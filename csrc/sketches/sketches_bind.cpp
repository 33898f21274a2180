// Python bindings of the sketches capability (filled in by its issue).
#include "../bindings/bind.hpp"

namespace pyperfcore {

void bind_sketches(pybind11::module_& m) { (void)m; }

}  // namespace pyperfcore
