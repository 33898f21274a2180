// Python bindings of the prepost capability (filled in by its issue).
#include "../bindings/bind.hpp"

namespace pyperfcore {

void bind_prepost(pybind11::module_& m) { (void)m; }

}  // namespace pyperfcore
