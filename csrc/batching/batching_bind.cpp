// Python bindings of the batching capability (filled in by its issue).
#include "../bindings/bind.hpp"

namespace pyperfcore {

void bind_batching(pybind11::module_& m) { (void)m; }

}  // namespace pyperfcore
