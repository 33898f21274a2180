// CUDA bindings of the prepost capability (filled in by its issue).
#include "bind.hpp"

namespace pyperfcore {
namespace cuda {

void bind_cuda_prepost(pybind11::module_& m) { (void)m; }

}  // namespace cuda
}  // namespace pyperfcore
