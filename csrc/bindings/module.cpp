// The single extension module pyperfcore._core; each capability registers itself in order.
#include "bind.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "pyperfcore native core (private; use the public pyperfcore modules)";
  m.attr("__version__") = PYPERFCORE_VERSION;
  pyperfcore::bind_common(m);
  pyperfcore::bind_quant(m);
  pyperfcore::bind_batching(m);
  pyperfcore::bind_sketches(m);
  pyperfcore::bind_drift(m);
  pyperfcore::bind_prepost(m);
}
