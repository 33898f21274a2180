#include <stdexcept>

#include "../bindings/bind.hpp"
#include "../common/buffers.hpp"
#include "quant.hpp"

namespace pyperfcore {

namespace {

py::tuple quantize_int8_py(const py::array& x, const py::object& target) {
  if (x.ndim() != 3) throw py::value_error("quantize_int8 expects a 3-D view [outer, channels, inner]");
  quant::FloatType dt;
  if (x.dtype().is(py::dtype::of<float>()))
    dt = quant::FloatType::f32;
  else if (x.dtype().kind() == 'f' && x.itemsize() == 2)
    dt = quant::FloatType::f16;
  else
    throw py::type_error("quantize_int8: x must be float32 or float16, got " + std::string(py::str(x.dtype())));
  const CpuTarget t = resolve_target(target);
  const auto is = x.itemsize();
  quant::View3 v{x.data(), dt, x.shape(0), x.shape(1), x.shape(2),
                 elem_stride(x.strides(0), is, "x"), elem_stride(x.strides(1), is, "x"),
                 elem_stride(x.strides(2), is, "x")};
  py::array_t<int8_t> q({x.shape(0), x.shape(1), x.shape(2)});
  py::array_t<float> scales(x.shape(1));
  int8_t* qp = q.mutable_data();
  float* sp = scales.mutable_data();
  {
    py::gil_scoped_release nogil;
    quant::quantize_int8(v, qp, sp, t);
  }
  return py::make_tuple(q, scales);
}

py::array_t<float> dequantize_int8_py(const py::array_t<int8_t, py::array::c_style>& q,
                                      const py::array_t<float, py::array::c_style | py::array::forcecast>& scales,
                                      const py::object& target) {
  if (q.ndim() != 3) throw py::value_error("dequantize_int8 expects q as [outer, channels, inner]");
  if (scales.ndim() != 1 || scales.shape(0) != q.shape(1))
    throw py::value_error("dequantize_int8: scales must have one entry per channel");
  const CpuTarget t = resolve_target(target);
  py::array_t<float> out({q.shape(0), q.shape(1), q.shape(2)});
  const int8_t* qp = q.data();
  const float* sp = scales.data();
  float* op = out.mutable_data();
  const int64_t o = q.shape(0), c = q.shape(1), i = q.shape(2);
  {
    py::gil_scoped_release nogil;
    quant::dequantize_int8(qp, sp, o, c, i, op, t);
  }
  return out;
}

}  // namespace

void bind_quant(py::module_& m) {
  m.def("quantize_int8", &quantize_int8_py, py::arg("x"), py::arg("target") = py::none(),
        "Symmetric INT8 quantization of a 3-D [outer, channels, inner] float32/float16 view along "
        "its middle axis. Returns (q int8 [outer, channels, inner], scales float32 [channels]). "
        "ValueError on NaN or inf.");
  m.def("dequantize_int8", &dequantize_int8_py, py::arg("q"), py::arg("scales"), py::arg("target") = py::none(),
        "float32 q * scales[channel] for q as [outer, channels, inner].");
}

}  // namespace pyperfcore
