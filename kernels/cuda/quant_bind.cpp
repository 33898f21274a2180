// CUDA bindings of the quantize op. Pointers arrive as integers (torch's data_ptr()); the
// stream is the caller's current stream.
#include <pybind11/pybind11.h>

#include "bind.hpp"
#include "quant_cuda.hpp"

namespace py = pybind11;

namespace pyperfcore {
namespace cuda {

void bind_cuda_quant(py::module_& m) {
  m.def("quantize_int8", [](uintptr_t x, int dtype, int64_t o, int64_t c, int64_t i, int64_t so, int64_t sc, int64_t si,
                            uintptr_t q, uintptr_t scales, uintptr_t stream) {
    require_device();
    int bad = 0;
    {
      py::gil_scoped_release nogil;
      check(quantize_int8(reinterpret_cast<const void*>(x), dtype, o, c, i, so, sc, si, reinterpret_cast<int8_t*>(q),
                          reinterpret_cast<float*>(scales), reinterpret_cast<void*>(stream), &bad),
            "quantize_int8");
    }
    if (bad) throw py::value_error("quantize: input contains NaN or infinity; INT8 quantization needs finite values");
  });
  m.def("dequantize_int8", [](uintptr_t q, uintptr_t scales, int64_t o, int64_t c, int64_t i, uintptr_t out, uintptr_t stream) {
    require_device();
    py::gil_scoped_release nogil;
    check(dequantize_int8(reinterpret_cast<const int8_t*>(q), reinterpret_cast<const float*>(scales), o, c, i,
                          reinterpret_cast<float*>(out), reinterpret_cast<void*>(stream)),
          "dequantize_int8");
  });
  m.def("quantize_rows_u8", [](uintptr_t x, int64_t mm, int64_t k, int64_t ldx, uintptr_t q, int64_t ldq, uintptr_t scales,
                               uintptr_t zps, bool symmetric, uintptr_t flag, uintptr_t stream) {
    require_device();
    int bad = 0;
    {
      py::gil_scoped_release nogil;
      check(quantize_rows_u8(reinterpret_cast<const float*>(x), mm, k, ldx, reinterpret_cast<uint8_t*>(q), ldq,
                             reinterpret_cast<float*>(scales), reinterpret_cast<int32_t*>(zps), symmetric ? 1 : 0,
                             reinterpret_cast<int*>(flag), reinterpret_cast<void*>(stream), &bad),
            "quantize_rows_u8");
    }
    if (bad) throw py::value_error("linear: activations contain NaN or infinity");
  });
  m.def("w8a8_small_workspace", &w8a8_small_workspace, "bytes of workspace linear_w8a8_small needs for m rows of k");
  // The hot path of small-batch serving: no device query here (the caller holds CUDA tensors),
  // two launches, no synchronization; errors of the launch itself are raised.
  m.def("linear_w8a8_small", [](uintptr_t x, int x_dtype, int64_t mm, int64_t k, int64_t ldx, uintptr_t w, int64_t n,
                                int64_t ldw, uintptr_t wscale, uintptr_t colsum, uintptr_t bias, uintptr_t residual,
                                int r_dtype, int64_t ldr, uintptr_t y, int y_dtype, int64_t ldy, int act, bool symmetric,
                                uintptr_t workspace, int64_t workspace_bytes, uintptr_t stream) {
    check(linear_w8a8_small(reinterpret_cast<const void*>(x), x_dtype, mm, k, ldx, reinterpret_cast<const int8_t*>(w), n,
                            ldw, reinterpret_cast<const float*>(wscale), reinterpret_cast<const int32_t*>(colsum),
                            reinterpret_cast<const float*>(bias), reinterpret_cast<const void*>(residual), r_dtype, ldr,
                            reinterpret_cast<void*>(y), y_dtype, ldy, act, symmetric ? 1 : 0,
                            reinterpret_cast<void*>(workspace), workspace_bytes, reinterpret_cast<void*>(stream)),
          "linear_w8a8_small");
  });
  m.def("half_small_workspace", &half_small_workspace, "bytes of workspace linear_half_small needs for m rows of k");
  m.def("linear_half_small", [](uintptr_t x, int x_dtype, int64_t mm, int64_t k, int64_t ldx, uintptr_t w, int w_dtype,
                                int64_t n, int64_t ldw, uintptr_t bias, uintptr_t residual, int r_dtype, int64_t ldr,
                                uintptr_t y, int y_dtype, int64_t ldy, int act, uintptr_t workspace,
                                int64_t workspace_bytes, uintptr_t stream) {
    check(linear_half_small(reinterpret_cast<const void*>(x), x_dtype, mm, k, ldx, reinterpret_cast<const void*>(w),
                            w_dtype, n, ldw, reinterpret_cast<const float*>(bias), reinterpret_cast<const void*>(residual),
                            r_dtype, ldr, reinterpret_cast<void*>(y), y_dtype, ldy, act,
                            reinterpret_cast<void*>(workspace), workspace_bytes, reinterpret_cast<void*>(stream)),
          "linear_half_small");
  });
  m.def("dequantize_rows_u8", [](uintptr_t q, int64_t mm, int64_t k, int64_t ldq, uintptr_t scales, uintptr_t zps, uintptr_t out,
                                 uintptr_t stream) {
    require_device();
    py::gil_scoped_release nogil;
    check(dequantize_rows_u8(reinterpret_cast<const uint8_t*>(q), mm, k, ldq, reinterpret_cast<const float*>(scales),
                             reinterpret_cast<const int32_t*>(zps), reinterpret_cast<float*>(out), reinterpret_cast<void*>(stream)),
          "dequantize_rows_u8");
  });
}

}  // namespace cuda
}  // namespace pyperfcore
