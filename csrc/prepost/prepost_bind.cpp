// Python bindings of the prepost capability: buffer checks, output allocation, GIL release.
// The public, documented API is pyperfcore.prepost; these are its private kernels.
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "../bindings/bind.hpp"
#include "../common/buffers.hpp"
#include "prepost.hpp"

namespace pyperfcore {

namespace {

using prepost::ImageRef;
using prepost::PreprocessParams;

std::string dtype_name(const py::array& a) { return py::str(a.dtype()); }

// One image as an ImageRef; pixels must be packed (channel stride 1, pixel stride C).
ImageRef image_ref(const py::array& a, int64_t channels, const char* what) {
  if (!a.dtype().is(py::dtype::of<uint8_t>()))
    throw py::type_error(std::string(what) + ": images must be uint8, got " + dtype_name(a));
  const int64_t c = a.ndim() == 2 ? 1 : a.shape(2);
  if ((a.ndim() != 2 && a.ndim() != 3) || c != channels)
    throw py::value_error(std::string(what) + ": every image must be HWC with " + std::to_string(channels) + " channels");
  if (a.ndim() == 3 && (a.strides(2) != 1 || a.strides(1) != channels))
    throw py::value_error(std::string(what) + ": pixels must be packed (channel stride 1)");
  if (a.ndim() == 2 && a.strides(1) != 1) throw py::value_error(std::string(what) + ": pixels must be packed");
  if (a.strides(0) < a.shape(1) * channels) throw py::value_error(std::string(what) + ": negative or overlapping rows");
  return ImageRef{static_cast<const uint8_t*>(a.data()), a.shape(0), a.shape(1), a.strides(0), a.shape(0), a.shape(1), 0, 0};
}

py::dtype out_dtype(int dtype) {
  switch (static_cast<prepost::OutType>(dtype)) {
    case prepost::OutType::f32: return py::dtype::of<float>();
    case prepost::OutType::f16: return py::dtype("float16");
    case prepost::OutType::bf16: return py::dtype::of<uint16_t>();  // bfloat16 bits
    case prepost::OutType::i8: return py::dtype::of<int8_t>();
    case prepost::OutType::u8: return py::dtype::of<uint8_t>();
  }
  throw py::value_error("unknown output dtype code");
}

// A C-contiguous output whose data starts on a 64-byte boundary, so rows whose byte length is a
// multiple of 64 can all be written with aligned (streaming) stores.
py::array alloc_out(int dtype, const std::vector<py::ssize_t>& shape) {
  py::dtype dt = out_dtype(dtype);
  size_t bytes = static_cast<size_t>(dt.itemsize());
  for (py::ssize_t d : shape) bytes *= static_cast<size_t>(d);
  void* mem = std::aligned_alloc(64, (bytes + 63) / 64 * 64 + 64);
  if (mem == nullptr) throw std::bad_alloc();
  py::capsule owner(mem, [](void* q) { std::free(q); });
  return py::array(dt, shape, mem, owner);
}

py::array preprocess_py(const py::object& images, const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& geom,
                        int64_t channels, int64_t out_h, int64_t out_w, bool antialias, bool swap_rb,
                        const std::vector<float>& mean, const std::vector<float>& inv_std, int layout, int dtype,
                        float out_scale, const py::object& out_arg, const py::object& target) {
  const CpuTarget t = resolve_target(target);
  if (channels != 1 && channels != 3) throw py::value_error("preprocess_images: channels must be 1 or 3");
  if (static_cast<int64_t>(mean.size()) != channels || static_cast<int64_t>(inv_std.size()) != channels)
    throw py::value_error("preprocess_images: mean and std need one value per channel");
  std::vector<py::array> keep;  // keeps list items alive while the GIL is released
  std::vector<ImageRef> refs;
  if (py::isinstance<py::array>(images) && py::cast<py::array>(images).ndim() == 4) {
    py::array a = py::cast<py::array>(images);
    if (!a.dtype().is(py::dtype::of<uint8_t>()))
      throw py::type_error("preprocess_images: images must be uint8, got " + dtype_name(a));
    if (a.shape(3) != channels || a.strides(3) != 1 || a.strides(2) != channels || a.strides(0) < 0)
      throw py::value_error("preprocess_images: the batch must be [N, H, W, C] with packed pixels");
    for (py::ssize_t i = 0; i < a.shape(0); ++i) {
      refs.push_back(ImageRef{static_cast<const uint8_t*>(a.data()) + i * a.strides(0), a.shape(1), a.shape(2),
                              a.strides(1), a.shape(1), a.shape(2), 0, 0});
      if (a.strides(1) < a.shape(2) * channels) throw py::value_error("preprocess_images: overlapping rows");
    }
    keep.push_back(a);
  } else {
    for (const py::handle& h : images) {
      keep.push_back(py::reinterpret_borrow<py::array>(h));
      refs.push_back(image_ref(keep.back(), channels, "preprocess_images"));
    }
  }
  const int64_t n = static_cast<int64_t>(refs.size());
  if (geom.ndim() != 2 || geom.shape(0) != n || geom.shape(1) != 4)
    throw py::value_error("preprocess_images: geometry must be [n, 4] (resize_h, resize_w, top, left)");
  for (int64_t i = 0; i < n; ++i) {
    refs[i].resize_h = geom.at(i, 0);
    refs[i].resize_w = geom.at(i, 1);
    refs[i].top = geom.at(i, 2);
    refs[i].left = geom.at(i, 3);
  }
  PreprocessParams p;
  p.channels = channels;
  p.out_h = out_h;
  p.out_w = out_w;
  p.antialias = antialias;
  p.swap_rb = swap_rb;
  for (int64_t c = 0; c < channels; ++c) {
    p.mean[c] = mean[c];
    p.inv_std[c] = inv_std[c];
  }
  if (layout != 0 && layout != 1) throw py::value_error("preprocess_images: layout code must be 0 (NCHW) or 1 (NHWC)");
  if (dtype < 0 || dtype > 4) throw py::value_error("preprocess_images: unknown output dtype code");
  p.layout = static_cast<prepost::Layout>(layout);
  p.dtype = static_cast<prepost::OutType>(dtype);
  p.out_scale = out_scale;
  std::vector<py::ssize_t> shape = layout == 0 ? std::vector<py::ssize_t>{n, channels, out_h, out_w}
                                               : std::vector<py::ssize_t>{n, out_h, out_w, channels};
  py::array out;
  if (out_arg.is_none()) {
    out = alloc_out(dtype, shape);
  } else {
    // A caller's buffer: exactly the dtype and shape this call produces, C-contiguous, writeable.
    if (!py::isinstance<py::array>(out_arg)) throw py::type_error("preprocess_images: out must be a numpy array");
    out = py::reinterpret_borrow<py::array>(out_arg);
    py::dtype want = out_dtype(dtype);
    if (out.dtype().num() != want.num() || out.itemsize() != want.itemsize())
      throw py::type_error("preprocess_images: out must be " + std::string(py::str(want)) + ", got " + dtype_name(out));
    if (out.ndim() != 4) throw py::value_error("preprocess_images: out must be 4-D");
    for (int d = 0; d < 4; ++d)
      if (out.shape(d) != shape[static_cast<size_t>(d)]) throw py::value_error("preprocess_images: out has the wrong shape");
    if (!(out.flags() & py::array::c_style)) throw py::value_error("preprocess_images: out must be C-contiguous");
    if (!out.writeable()) throw py::value_error("preprocess_images: out is read-only");
  }
  void* op = out.mutable_data();
  try {
    py::gil_scoped_release nogil;
    prepost::preprocess_images(refs.data(), n, p, op, t);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  return out;
}

// A 2-D logits view (float32 / float16 / int8), columns contiguous.
struct LogitsArg {
  prepost::Logits l;
  std::vector<float> scales;
};

LogitsArg logits_arg(const py::array& x, const py::object& scales, const char* what) {
  if (x.ndim() != 2) throw py::value_error(std::string(what) + ": logits must be 2-D [rows, classes]");
  int dt;
  if (x.dtype().is(py::dtype::of<float>()))
    dt = 0;
  else if (x.dtype().kind() == 'f' && x.itemsize() == 2)
    dt = 1;
  else if (x.dtype().is(py::dtype::of<int8_t>()))
    dt = 2;
  else
    throw py::type_error(std::string(what) + ": logits must be float32, float16 or int8, got " + dtype_name(x));
  if (x.shape(0) > 0 && x.shape(1) > 1 && x.strides(1) != x.itemsize())
    throw py::value_error(std::string(what) + ": classes must be contiguous");
  LogitsArg a;
  if (dt == 2) {
    if (scales.is_none()) throw py::value_error(std::string(what) + ": int8 logits need scale=");
    a.scales = py::cast<std::vector<float>>(scales);
  } else if (!scales.is_none()) {
    throw py::value_error(std::string(what) + ": scale= applies to int8 logits only");
  }
  const int64_t rs = x.shape(0) > 0 ? elem_stride(x.strides(0), x.itemsize(), what) : 0;
  a.l = prepost::Logits{x.data(), dt, x.shape(0), x.shape(1), rs,
                        a.scales.empty() ? nullptr : a.scales.data(), static_cast<int64_t>(a.scales.size())};
  return a;
}

template <class F>
void run_nogil(F&& f) {
  try {
    py::gil_scoped_release nogil;
    f();
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
}

py::tuple topk_py(const py::array& x, int64_t k, bool softmax, const py::object& scales, const py::object& target) {
  const CpuTarget t = resolve_target(target);
  LogitsArg a = logits_arg(x, scales, "softmax_topk");
  if (k < 0 || k > a.l.cols)
    throw py::value_error("softmax_topk: k = " + std::to_string(k) + " but there are only " + std::to_string(a.l.cols) +
                          " classes");
  py::array_t<float> v({a.l.rows, k});
  py::array_t<int64_t> idx({a.l.rows, k});
  float* vp = v.mutable_data();
  int64_t* ip = idx.mutable_data();
  run_nogil([&] { prepost::topk(a.l, k, softmax, vp, ip, t); });
  return py::make_tuple(v, idx);
}

py::array_t<float> softmax_py(const py::array& x, bool log_space, const py::object& scales, const py::object& target) {
  const CpuTarget t = resolve_target(target);
  LogitsArg a = logits_arg(x, scales, log_space ? "log_softmax" : "softmax");
  py::array_t<float> out({a.l.rows, a.l.cols});
  float* op = out.mutable_data();
  run_nogil([&] { prepost::softmax_rows(a.l, log_space, op, t); });
  return out;
}

py::array sigmoid_threshold_py(const py::array& x, double logit_t, const py::object& scales, const py::object& target) {
  const CpuTarget t = resolve_target(target);
  LogitsArg a = logits_arg(x, scales, "sigmoid_threshold");
  py::array out(py::dtype("bool"), {a.l.rows, a.l.cols});
  uint8_t* op = static_cast<uint8_t*>(out.mutable_data());
  run_nogil([&] { prepost::sigmoid_threshold(a.l, logit_t, op, t); });
  return out;
}

void check_rows(const py::array_t<float>& x, const char* what) {
  if (x.ndim() != 2) throw py::value_error(std::string(what) + ": embeddings must be 2-D [rows, dim]");
  if (x.shape(0) > 0 && x.shape(1) > 1 && x.strides(1) != 4) throw py::value_error(std::string(what) + ": dim must be contiguous");
}

py::array_t<float> l2_normalize_py(const py::array_t<float>& x, float eps, const py::object& target) {
  const CpuTarget t = resolve_target(target);
  check_rows(x, "l2_normalize");
  py::array_t<float> out({x.shape(0), x.shape(1)});
  const float* xp = x.data();
  float* op = out.mutable_data();
  const int64_t rs = x.shape(0) > 0 ? elem_stride(x.strides(0), 4, "l2_normalize") : 0;
  run_nogil([&] { prepost::l2_normalize(xp, x.shape(0), x.shape(1), rs, eps, op, t); });
  return out;
}

py::tuple compress_py(const py::array_t<float>& x, bool normalize, float eps, const py::object& target) {
  const CpuTarget t = resolve_target(target);
  check_rows(x, "compress_embeddings");
  py::array_t<int8_t> q({x.shape(0), x.shape(1)});
  py::array_t<float> s(x.shape(0));
  const float* xp = x.data();
  int8_t* qp = q.mutable_data();
  float* sp = s.mutable_data();
  const int64_t rs = x.shape(0) > 0 ? elem_stride(x.strides(0), 4, "compress_embeddings") : 0;
  run_nogil([&] { prepost::compress_embeddings(xp, x.shape(0), x.shape(1), rs, normalize, eps, qp, sp, t); });
  return py::make_tuple(q, s);
}

py::array_t<int64_t> nms_py(const py::array_t<float, py::array::c_style>& boxes, const py::array_t<float, py::array::c_style>& scores,
                            const py::array_t<int64_t, py::array::c_style>& classes, float iou) {
  if (boxes.ndim() != 2 || boxes.shape(1) != 4) throw py::value_error("batched_nms: boxes must be [n, 4]");
  const int64_t n = boxes.shape(0);
  if (scores.ndim() != 1 || scores.shape(0) != n || classes.ndim() != 1 || classes.shape(0) != n)
    throw py::value_error("batched_nms: scores and idxs must be 1-D with one entry per box");
  std::vector<int64_t> kept;
  const float* bp = boxes.data();
  const float* sp = scores.data();
  const int64_t* cp = classes.data();
  run_nogil([&] { kept = prepost::batched_nms(bp, sp, cp, n, iou); });
  py::array_t<int64_t> out(static_cast<py::ssize_t>(kept.size()));
  std::copy(kept.begin(), kept.end(), out.mutable_data());
  return out;
}

py::tuple pad_py(const py::array_t<int64_t, py::array::c_style>& ids, const py::array_t<int64_t, py::array::c_style>& offsets,
                 int64_t length, int64_t pad_id, bool keep_end, bool pad_left) {
  if (ids.ndim() != 1 || offsets.ndim() != 1 || offsets.shape(0) < 1)
    throw py::value_error("pad_sequences: ids and offsets must be 1-D, offsets with n + 1 entries");
  const int64_t n = offsets.shape(0) - 1;
  const int64_t* op = offsets.data();
  if (op[0] != 0 || op[n] != ids.shape(0)) throw py::value_error("pad_sequences: offsets must run from 0 to len(ids)");
  py::array_t<int64_t> out({n, length});
  py::array out_mask(py::dtype("uint8"), {n, length});
  const int64_t* ip = ids.data();
  int64_t* outp = out.mutable_data();
  uint8_t* mp = static_cast<uint8_t*>(out_mask.mutable_data());
  run_nogil([&] { prepost::pad_sequences(ip, op, n, length, pad_id, keep_end, pad_left, outp, mp); });
  return py::make_tuple(out, out_mask);
}

py::array_t<float> tabular_py(const py::list& columns, int64_t rows) {
  std::vector<prepost::TabColumn> cols;
  std::vector<py::array> keep;
  int64_t width = 0;
  for (const py::handle& h : columns) {
    py::tuple c = py::reinterpret_borrow<py::tuple>(h);
    if (c.size() != 8) throw py::value_error("tabular_encode: column spec must have 8 fields");
    prepost::TabColumn t{};
    t.kind = py::cast<int>(c[0]);
    py::array data = py::reinterpret_borrow<py::array>(c[1]);
    if (data.ndim() != 1 || data.shape(0) != rows) throw py::value_error("tabular_encode: every column needs one value per row");
    if (t.kind == 0) {
      if (!data.dtype().is(py::dtype::of<double>()) || data.strides(0) != 8)
        throw py::type_error("tabular_encode: numeric columns must be contiguous float64");
      t.values = static_cast<const double*>(data.data());
    } else {
      if (!data.dtype().is(py::dtype::of<int32_t>()) || data.strides(0) != 4)
        throw py::type_error("tabular_encode: category codes must be contiguous int32");
      t.codes = static_cast<const int32_t*>(data.data());
    }
    keep.push_back(data);
    t.n_out = py::cast<int64_t>(c[2]);
    t.mean = py::cast<double>(c[3]);
    t.std = py::cast<double>(c[4]);
    t.lo = py::cast<double>(c[5]);
    t.hi = py::cast<double>(c[6]);
    t.fill = py::cast<double>(c[7]);
    width += t.n_out;
    cols.push_back(t);
  }
  py::array_t<float> out({rows, width});
  float* op = out.mutable_data();
  run_nogil([&] { prepost::tabular_encode(cols.data(), static_cast<int64_t>(cols.size()), rows, op); });
  return out;
}

py::tuple taps_py(int64_t in_size, int64_t out_size, bool antialias) {
  prepost::AxisTaps t;
  try {
    t = prepost::resize_taps(in_size, out_size, 0, out_size, antialias);
  } catch (const std::invalid_argument& e) {
    throw py::value_error(e.what());
  }
  py::array_t<int32_t> start(out_size), count(out_size);
  py::array_t<float> w({out_size, t.max_taps});
  std::copy(t.start.begin(), t.start.end(), start.mutable_data());
  std::copy(t.count.begin(), t.count.end(), count.mutable_data());
  std::copy(t.weights.begin(), t.weights.end(), w.mutable_data());
  return py::make_tuple(start, count, w);
}

}  // namespace

void bind_prepost(py::module_& m) {
  m.def("prepost_preprocess_images", &preprocess_py, py::arg("images"), py::arg("geometry"), py::arg("channels"),
        py::arg("out_h"), py::arg("out_w"), py::arg("antialias"), py::arg("swap_rb"), py::arg("mean"),
        py::arg("inv_std"), py::arg("layout"), py::arg("dtype"), py::arg("out_scale"), py::arg("out") = py::none(), py::arg("target") = py::none(),
        "Fused resize/crop/normalize/layout/dtype of uint8 HWC images (a [N,H,W,C] batch or a list); "
        "geometry [n, 4] = (resize_h, resize_w, top, left) per image.");
  m.def("prepost_resize_taps", &taps_py, py::arg("in_size"), py::arg("out_size"), py::arg("antialias"),
        "(start int32 [out], count int32 [out], weights float32 [out, max_taps]) of one resize axis.");
  m.def("prepost_topk", &topk_py, py::arg("logits"), py::arg("k"), py::arg("softmax"), py::arg("scale") = py::none(),
        py::arg("target") = py::none(), "Top-k of each row (values desc, ties lower index), optionally as softmax probabilities.");
  m.def("prepost_softmax", &softmax_py, py::arg("logits"), py::arg("log"), py::arg("scale") = py::none(),
        py::arg("target") = py::none(), "softmax or log_softmax of each row, float32.");
  m.def("prepost_sigmoid_threshold", &sigmoid_threshold_py, py::arg("logits"), py::arg("logit_threshold"),
        py::arg("scale") = py::none(), py::arg("target") = py::none(), "bool mask logits > logit_threshold.");
  m.def("prepost_l2_normalize", &l2_normalize_py, py::arg("x"), py::arg("eps"), py::arg("target") = py::none());
  m.def("prepost_compress_embeddings", &compress_py, py::arg("x"), py::arg("normalize"), py::arg("eps"),
        py::arg("target") = py::none());
  m.def("prepost_batched_nms", &nms_py, py::arg("boxes"), py::arg("scores"), py::arg("idxs"), py::arg("iou_threshold"));
  m.def("prepost_pad_sequences", &pad_py, py::arg("ids"), py::arg("offsets"), py::arg("length"), py::arg("pad_id"),
        py::arg("keep_end"), py::arg("pad_left"));
  m.def("prepost_tabular_encode", &tabular_py, py::arg("columns"), py::arg("rows"));
}

}  // namespace pyperfcore
