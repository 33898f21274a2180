#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "../bindings/bind.hpp"
#include "../common/buffers.hpp"
#include "attention.hpp"
#include "linear.hpp"
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


// ------------------------------------------------------------------ quantized linear layers
quant::Activation parse_activation(const std::string& name) {
  if (name == "none" || name.empty()) return quant::Activation::none;
  if (name == "relu") return quant::Activation::relu;
  if (name == "gelu") return quant::Activation::gelu;
  if (name == "gelu_tanh") return quant::Activation::gelu_tanh;
  if (name == "silu") return quant::Activation::silu;
  throw py::value_error("unknown activation '" + name + "'; use none, relu, gelu, gelu_tanh or silu");
}

// A float32 2-D array whose rows are contiguous (any row stride); returns its row stride.
int64_t rows_f32(const py::array& a, const char* what, int64_t cols) {
  if (!a.dtype().is(py::dtype::of<float>()))
    throw py::type_error(std::string(what) + " must be float32, got " + std::string(py::str(a.dtype())));
  if (a.ndim() != 2) throw py::value_error(std::string(what) + " must be 2-D");
  if (cols >= 0 && a.shape(1) != cols)
    throw py::value_error(std::string(what) + " has " + std::to_string(a.shape(1)) + " columns, expected " +
                          std::to_string(cols));
  if (a.size() == 0) return a.shape(1);  // nothing is read: strides do not matter
  if (a.shape(1) > 1 && a.strides(1) != 4) throw py::value_error(std::string(what) + ": rows must be contiguous");
  if (a.shape(0) > 1 && (a.strides(0) < 0 || a.strides(0) % 4 != 0))
    throw py::value_error(std::string(what) + ": unsupported row stride");
  return a.shape(0) > 1 ? a.strides(0) / 4 : a.shape(1);
}

const float* opt_vec(const py::object& o, int64_t n, const char* what, py::array* keep) {
  if (o.is_none()) return nullptr;
  *keep = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(o);
  if (!keep->ptr()) throw py::type_error(std::string(what) + " must be a float array");
  if (keep->ndim() != 1 || keep->shape(0) != n)
    throw py::value_error(std::string(what) + " must have shape (" + std::to_string(n) + ",)");
  return static_cast<const float*>(keep->data());
}

py::array_t<int8_t> packed_data_i8(const quant::PackedInt8& p) {
  py::array_t<int8_t> a(static_cast<py::ssize_t>(p.data.size()));
  std::memcpy(a.mutable_data(), p.data.data(), p.data.size());
  return a;
}

struct LinearArgs {
  const float* x;
  int64_t m, ldx;
  quant::Epilogue ep;
  py::array bias_keep, res_keep;
};

LinearArgs linear_args(const py::array& x, int64_t k, int64_t n, const py::object& bias, const std::string& act,
                       const py::object& residual) {
  LinearArgs a;
  a.ldx = rows_f32(x, "x", k);
  a.x = static_cast<const float*>(x.data());
  a.m = x.shape(0);
  a.ep.bias = opt_vec(bias, n, "bias", &a.bias_keep);
  a.ep.act = parse_activation(act);
  if (!residual.is_none()) {
    a.res_keep = py::array::ensure(residual);
    if (!a.res_keep.ptr()) throw py::type_error("residual must be a float32 array");
    int64_t ldr = rows_f32(a.res_keep, "residual", n);
    if (a.res_keep.shape(0) != a.m) throw py::value_error("residual must have shape (m, out_features)");
    a.ep.residual = static_cast<const float*>(a.res_keep.data());
    a.ep.ld_residual = ldr;
  }
  return a;
}

}  // namespace

// q / k / v: float32 [B, H, T, D] with the head dim contiguous (any other strides).
quant::AttnStrides attn_strides(const py::array& a, const char* what, const std::vector<int64_t>& shape) {
  if (!py::isinstance<py::array_t<float>>(a) || a.ndim() != 4)
    throw py::type_error(std::string("attention: ") + what + " must be a float32 array [batch, heads, seq, head_dim]");
  for (int i = 0; i < 4; ++i)
    if (a.shape(i) != shape[static_cast<size_t>(i)])
      throw py::value_error(std::string("attention: ") + what + " has another shape than q");
  if (a.shape(3) > 1 && a.strides(3) != 4)
    throw py::value_error(std::string("attention: ") + what + "'s last (head) dimension must be contiguous");
  for (int i = 0; i < 3; ++i)
    if (a.strides(i) % 4) throw py::value_error(std::string("attention: ") + what + " is not float-aligned");
  return {a.strides(0) / 4, a.strides(1) / 4, a.strides(2) / 4};
}

void bind_quant(py::module_& m) {
  m.def("quantize_int8", &quantize_int8_py, py::arg("x"), py::arg("target") = py::none(),
        "Symmetric INT8 quantization of a 3-D [outer, channels, inner] float32/float16 view along "
        "its middle axis. Returns (q int8 [outer, channels, inner], scales float32 [channels]). "
        "ValueError on NaN or inf.");
  m.def("dequantize_int8", &dequantize_int8_py, py::arg("q"), py::arg("scales"), py::arg("target") = py::none(),
        "float32 q * scales[channel] for q as [outer, channels, inner].");

  py::class_<quant::PackedInt8>(m, "PackedInt8", "INT8 weights packed for the W8A8 GEMM (see linear.hpp).")
      .def_static(
          "from_int8",
          [](const py::array_t<int8_t, py::array::c_style>& w, const py::array_t<float, py::array::c_style | py::array::forcecast>& s) {
            if (w.ndim() != 2) throw py::value_error("weights must be 2-D [out_features, in_features]");
            if (s.ndim() != 1 || s.shape(0) != w.shape(0)) throw py::value_error("scales must have one entry per output row");
            quant::PackedInt8 p;
            const int8_t* wp = w.data();
            const float* sp = s.data();
            const int64_t n = w.shape(0), k = w.shape(1);
            {
              py::gil_scoped_release nogil;
              quant::pack_int8(wp, k, sp, n, k, &p);
            }
            return p;
          },
          py::arg("w"), py::arg("scales"))
      .def_static(
          "from_packed",
          [](int64_t n, int64_t k, const py::array_t<int8_t, py::array::c_style>& data,
             const py::array_t<float, py::array::c_style | py::array::forcecast>& s) {
            quant::PackedInt8 p;
            p.n = n;
            p.k = k;
            p.np = (n + quant::kPanel - 1) / quant::kPanel * quant::kPanel;
            p.kp = (std::max<int64_t>(k, 1) + 3) / 4 * 4;
            if (data.ndim() != 1 || s.ndim() != 1) throw py::value_error("packed data and scales must be 1-D");
            p.data.assign(data.data(), data.data() + data.shape(0));
            p.scales.assign(s.data(), s.data() + s.shape(0));
            quant::unpack_check_int8(&p);
            return p;
          },
          py::arg("n"), py::arg("k"), py::arg("data"), py::arg("scales"))
      .def_readonly("n", &quant::PackedInt8::n)
      .def_readonly("k", &quant::PackedInt8::k)
      .def_readonly("kp", &quant::PackedInt8::kp)
      .def_property_readonly("data", &packed_data_i8)
      .def_property_readonly("scales", [](const quant::PackedInt8& p) { return py::array_t<float>(p.scales.size(), p.scales.data()); })
      .def_property_readonly("colsum", [](const quant::PackedInt8& p) { return py::array_t<int32_t>(p.colsum.size(), p.colsum.data()); })
      .def_property_readonly("nbytes", [](const quant::PackedInt8& p) { return p.data.size() + 8 * p.scales.size(); });

  py::class_<quant::PackedHalf>(m, "PackedHalf", "FP16/BF16 weights packed in 64-column panels (see linear.hpp).")
      .def_static(
          "from_float",
          [](const py::array_t<float, py::array::c_style | py::array::forcecast>& w, const std::string& type) {
            if (w.ndim() != 2) throw py::value_error("weights must be 2-D [out_features, in_features]");
            if (type != "float16" && type != "bfloat16") throw py::value_error("type must be 'float16' or 'bfloat16'");
            quant::PackedHalf p;
            const float* wp = w.data();
            const int64_t n = w.shape(0), k = w.shape(1);
            const auto t = type == "float16" ? quant::HalfType::f16 : quant::HalfType::bf16;
            {
              py::gil_scoped_release nogil;
              quant::pack_half(wp, k, n, k, t, &p);
            }
            return p;
          },
          py::arg("w"), py::arg("type"))
      .def_static(
          "from_packed",
          [](int64_t n, int64_t k, const std::string& type, const py::array_t<uint16_t, py::array::c_style>& data) {
            if (type != "float16" && type != "bfloat16") throw py::value_error("type must be 'float16' or 'bfloat16'");
            quant::PackedHalf p;
            p.n = n;
            p.k = k;
            p.np = (n + quant::kPanel - 1) / quant::kPanel * quant::kPanel;
            p.type = type == "float16" ? quant::HalfType::f16 : quant::HalfType::bf16;
            if (data.ndim() != 1) throw py::value_error("packed data must be 1-D");
            p.data.assign(data.data(), data.data() + data.shape(0));
            quant::unpack_check_half(p);
            quant::prepare_half(&p);
            return p;
          },
          py::arg("n"), py::arg("k"), py::arg("type"), py::arg("data"))
      .def_readonly("n", &quant::PackedHalf::n)
      .def_readonly("k", &quant::PackedHalf::k)
      .def_property_readonly("type", [](const quant::PackedHalf& p) { return p.type == quant::HalfType::f16 ? "float16" : "bfloat16"; })
      .def_property_readonly("data",
                             [](const quant::PackedHalf& p) {
                               std::vector<uint16_t> d = quant::half_panels(p);
                               return py::array_t<uint16_t>(d.size(), d.data());
                             })
      .def_property_readonly("nbytes", [](const quant::PackedHalf& p) { return (p.data.size() + p.pairs.size()) * 2; });

  m.def(
      "quantize_rows_u8",
      [](const py::array& x, bool symmetric, const py::object& target) {
        const CpuTarget t = resolve_target(target);
        const int64_t ldx = rows_f32(x, "x", -1), mm = x.shape(0), k = x.shape(1);
        const int64_t kp = (std::max<int64_t>(k, 1) + 3) / 4 * 4;
        py::array_t<uint8_t> q({mm, kp});
        py::array_t<float> s(mm);
        py::array_t<int32_t> z(mm);
        const float* xp = static_cast<const float*>(x.data());
        uint8_t* qp = q.mutable_data();
        float* sp = s.mutable_data();
        int32_t* zp = z.mutable_data();
        {
          py::gil_scoped_release nogil;
          quant::quantize_rows_u8(xp, mm, k, ldx, qp, kp, sp, zp, symmetric, t, 0);
        }
        return py::make_tuple(q, s, z);
      },
      py::arg("x"), py::arg("symmetric") = false, py::arg("target") = py::none(),
      "Per-token uint8 quantization of float32 [m, k]: (q uint8 [m, round_up(k, 4)], scales [m], zero points [m]).");
  m.def(
      "quantize_rows_u8_static",
      [](const py::array& x, float scale, const py::object& target) {
        const CpuTarget t = resolve_target(target);
        const int64_t ldx = rows_f32(x, "x", -1), mm = x.shape(0), k = x.shape(1);
        const int64_t kp = (std::max<int64_t>(k, 1) + 3) / 4 * 4;
        py::array_t<uint8_t> q({mm, kp});
        py::array_t<float> s(mm);
        py::array_t<int32_t> z(mm);
        const float* xp = static_cast<const float*>(x.data());
        uint8_t* qp = q.mutable_data();
        float* sp = s.mutable_data();
        int32_t* zp = z.mutable_data();
        {
          py::gil_scoped_release nogil;
          quant::quantize_rows_u8_static(xp, mm, k, ldx, scale, qp, kp, sp, zp, t, 0);
        }
        return py::make_tuple(q, s, z);
      },
      py::arg("x"), py::arg("scale"), py::arg("target") = py::none(),
      "Static symmetric uint8 quantization of float32 [m, k] with one scale: (q [m, round_up(k, 4)], scales, zero points 128).");
  m.def(
      "attention",
      [](const py::array& q, const py::array& k, const py::array& v, const py::object& mask, float scale, int threads,
         const py::object& target) {
        const CpuTarget t = resolve_target(target);
        if (q.ndim() != 4) throw py::value_error("attention: q must be [batch, heads, seq, head_dim]");
        const std::vector<int64_t> shape{q.shape(0), q.shape(1), q.shape(2), q.shape(3)};
        const quant::AttnStrides qs = attn_strides(q, "q", shape), ks = attn_strides(k, "k", shape),
                                 vs = attn_strides(v, "v", shape);
        const int64_t B = shape[0], H = shape[1], T = shape[2], D = shape[3];
        py::array_t<float, py::array::c_style> mk;
        if (!mask.is_none()) {
          mk = py::array_t<float, py::array::c_style>::ensure(mask);
          if (!mk || mk.ndim() != 2 || mk.shape(0) != B || mk.shape(1) != T)
            throw py::value_error("attention: mask must be float32 [batch, seq] (0 to keep a key, -inf to drop it)");
        }
        if (!std::isfinite(scale)) throw py::value_error("attention: scale must be finite");
        py::array_t<float> out({B, T, H, D});
        const float *qp = static_cast<const float*>(q.data()), *kp = static_cast<const float*>(k.data()),
                    *vp = static_cast<const float*>(v.data());
        const float* mp = mask.is_none() ? nullptr : mk.data();
        float* op = out.mutable_data();
        {
          py::gil_scoped_release nogil;
          quant::attention_f32(qp, qs, kp, ks, vp, vs, B, H, T, D, mp, T, scale, op, t, threads);
        }
        return out;
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask") = py::none(), py::arg("scale") = 1.0f,
      py::arg("threads") = 0, py::arg("target") = py::none(),
      "Fused attention over [B, H, T, D] float32 q/k/v with an additive [B, T] key mask: returns [B, T, H, D].");
  m.def(
      "gemm_u8s8",
      [](const py::array_t<uint8_t, py::array::c_style>& a, const quant::PackedInt8& w, const py::object& target, int threads) {
        const CpuTarget t = resolve_target(target);
        if (a.ndim() != 2 || a.shape(1) != w.kp) throw py::value_error("a must be uint8 [m, kp] with kp = round_up(k, 4)");
        const int64_t mm = a.shape(0);
        py::array_t<int32_t> c({mm, w.n});
        const uint8_t* ap = a.data();
        int32_t* cp = c.mutable_data();
        {
          py::gil_scoped_release nogil;
          quant::gemm_u8s8(ap, mm, w.kp, w, cp, w.n, t, threads);
        }
        return c;
      },
      py::arg("a"), py::arg("w"), py::arg("target") = py::none(), py::arg("threads") = 0,
      "INT32 c = a @ w^T for uint8 activations a [m, kp] and packed INT8 weights.");
  m.def(
      "linear_w8a8",
      [](const py::array& x, const quant::PackedInt8& w, const py::object& bias, const std::string& act,
         const py::object& residual, bool symmetric, int threads, const py::object& target) {
        const CpuTarget t = resolve_target(target);
        LinearArgs a = linear_args(x, w.k, w.n, bias, act, residual);
        py::array_t<float> y({a.m, w.n});
        float* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          quant::linear_w8a8(a.x, a.m, a.ldx, w, symmetric, a.ep, yp, w.n, t, threads);
        }
        return y;
      },
      py::arg("x"), py::arg("w"), py::arg("bias") = py::none(), py::arg("activation") = "none",
      py::arg("residual") = py::none(), py::arg("symmetric_act") = false, py::arg("threads") = 0,
      py::arg("target") = py::none(),
      "W8A8 linear: per-token uint8 activations x INT8 weights, fused dequant + bias + activation + residual.");
  m.def(
      "linear_w8a8_static",
      [](const py::array& x, const quant::PackedInt8& w, float act_scale, const py::object& bias, const std::string& act,
         const py::object& residual, int threads, const py::object& target) {
        const CpuTarget t = resolve_target(target);
        LinearArgs a = linear_args(x, w.k, w.n, bias, act, residual);
        py::array_t<float> y({a.m, w.n});
        float* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          quant::linear_w8a8_static(a.x, a.m, a.ldx, w, act_scale, a.ep, yp, w.n, t, threads);
        }
        return y;
      },
      py::arg("x"), py::arg("w"), py::arg("act_scale"), py::arg("bias") = py::none(), py::arg("activation") = "none",
      py::arg("residual") = py::none(), py::arg("threads") = 0, py::arg("target") = py::none(),
      "W8A8 linear with static (calibrated) per-tensor symmetric activation quantization.");
  m.def(
      "mlp_w8a8",
      [](const py::array& x, const quant::PackedInt8& w1, const py::object& bias1, const std::string& act1,
         const quant::PackedInt8& w2, const py::object& bias2, const std::string& act2, const py::object& residual,
         bool symmetric1, bool symmetric2, int threads, const py::object& target) {
        const CpuTarget t = resolve_target(target);
        if (w2.k != w1.n)
          throw py::value_error("mlp_w8a8: w2 has in_features " + std::to_string(w2.k) + ", expected w1's out_features " +
                                std::to_string(w1.n));
        LinearArgs a1 = linear_args(x, w1.k, w1.n, bias1, act1, py::none());
        LinearArgs a2 = linear_args(x, w1.k, w2.n, bias2, act2, residual);
        py::array_t<float> y({a1.m, w2.n});
        float* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          quant::mlp_w8a8(a1.x, a1.m, a1.ldx, w1, symmetric1, a1.ep, w2, symmetric2, a2.ep, yp, w2.n, t, threads);
        }
        return y;
      },
      py::arg("x"), py::arg("w1"), py::arg("bias1"), py::arg("activation1"), py::arg("w2"), py::arg("bias2"),
      py::arg("activation2") = "none", py::arg("residual") = py::none(), py::arg("symmetric_act1") = false,
      py::arg("symmetric_act2") = false, py::arg("threads") = 0, py::arg("target") = py::none(),
      "Two W8A8 layers in one call (Linear -> activation -> Linear): the intermediate stays in a native buffer. "
      "Same bits as two linear_w8a8 calls.");
  m.def(
      "linear_half",
      [](const py::array& x, const quant::PackedHalf& w, const py::object& bias, const std::string& act,
         const py::object& residual, int threads, const py::object& target) {
        const CpuTarget t = resolve_target(target);
        LinearArgs a = linear_args(x, w.k, w.n, bias, act, residual);
        py::array_t<float> y({a.m, w.n});
        float* yp = y.mutable_data();
        {
          py::gil_scoped_release nogil;
          quant::linear_half(a.x, a.m, a.ldx, w, a.ep, yp, w.n, t, threads);
        }
        return y;
      },
      py::arg("x"), py::arg("w"), py::arg("bias") = py::none(), py::arg("activation") = "none",
      py::arg("residual") = py::none(), py::arg("threads") = 0, py::arg("target") = py::none(),
      "FP16/BF16-weight linear computed in fp32 with the fused epilogue.");
  m.def("apply_activation",
        [](const py::array_t<float, py::array::c_style | py::array::forcecast>& v, const std::string& act) {
          py::array_t<float> out(v.size());
          const auto a = parse_activation(act);
          for (py::ssize_t i = 0; i < v.size(); ++i) out.mutable_data()[i] = quant::apply_activation(v.data()[i], a);
          return out;
        },
        py::arg("v"), py::arg("activation"), "The scalar epilogue activation (for tests).");
  m.def("amx_available", &quant::amx_available, "True when the CPU has AMX-INT8 and the OS grants the tile state.");
  m.def("amx_bf16_available", &quant::amx_bf16_available,
        "True when bf16 layers compute on AMX-BF16 tiles (activations rounded to bf16) on the avx512_vnni target.");
  m.def(
      "half_uses_amx",
      [](const quant::PackedHalf& w, const py::object& target) { return quant::half_uses_amx(w, resolve_target(target)); },
      py::arg("w"), py::arg("target") = py::none(),
      "Whether linear_half takes the AMX-BF16 path for these weights on this target (AMX enabled).");
  m.def("amx_enabled", &quant::amx_enabled, "True when the avx512_vnni INT8 GEMM uses AMX tiles for batches >= 8.");
  m.def("amx_blocking", &quant::amx_blocking, "True when the AMX INT8 GEMM uses 32-row 2x2 tile blocking.");
  m.def("set_amx_blocking", &quant::set_amx_blocking, py::arg("on"),
        "Select the AMX INT8 GEMM blocking: 32 rows x 2x2 tiles (True, default) or 16-row blocks (False); same results.");
  m.def("set_amx_enabled", &quant::set_amx_enabled, py::arg("on"),
        "Allow (default) or forbid AMX in the avx512_vnni INT8 GEMM; results are identical either way.");
}

}  // namespace pyperfcore
