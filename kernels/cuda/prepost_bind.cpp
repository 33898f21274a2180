// CUDA bindings of the prepost capability. Pointers arrive as integers (torch's data_ptr());
// the stream is the caller's current stream; calls do not synchronize. Shapes, dtypes and
// devices are validated by pyperfcore.prepost before these are called.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <vector>

#include "bind.hpp"
#include "prepost_cuda.hpp"

namespace py = pybind11;

namespace pyperfcore {
namespace cuda {
namespace {
// The device check asks the driver (cudaGetDeviceCount); once it has passed it stays passed,
// so each call costs a flag test, not a driver query.
bool g_device_ok = false;
inline void device_ok() {
  if (!g_device_ok) {
    require_device();
    g_device_ok = true;
  }
}
}  // namespace

void bind_cuda_prepost(py::module_& m) {
  m.def(
      "prepost_preprocess",
      [](uintptr_t x, const std::vector<int64_t>& shape, const std::vector<int64_t>& x_strides, uintptr_t out, int out_kind,
         int64_t oh, int64_t ow, const std::vector<int64_t>& out_strides, const std::vector<float>& mean,
         const std::vector<float>& inv_std, bool swap_rb, float out_scale, int64_t top, int64_t left, uintptr_t ys,
         uintptr_t yw, int64_t ty, uintptr_t xs, uintptr_t xw, int64_t tx, uintptr_t stream) {
        if (shape.size() != 4 || x_strides.size() != 4 || out_strides.size() != 4)
          throw py::value_error("prepost_preprocess: shape and strides need 4 entries (n, h, w, c) / (n, c, h, w)");
        const int64_t c = shape[3];
        if (c != 1 && c != 3) throw py::value_error("prepost_preprocess: channels must be 1 or 3");
        if (static_cast<int64_t>(mean.size()) != c || static_cast<int64_t>(inv_std.size()) != c)
          throw py::value_error("prepost_preprocess: mean and inv_std need one value per channel");
        if (out_kind < kOutF32 || out_kind > kOutU8) throw py::value_error("prepost_preprocess: unknown output kind");
        if ((ys == 0) != (xs == 0) || (ys != 0 && (ty <= 0 || tx <= 0)))
          throw py::value_error("prepost_preprocess: give both tap tables (with positive tap counts) or neither");
        if (oh > 65535 || shape[0] > 65535)
          throw py::value_error("prepost_preprocess: at most 65535 images and 65535 output rows per call");
        PrepostImageArgs a{};
        a.x = reinterpret_cast<const uint8_t*>(x);
        a.n = shape[0];
        a.h = shape[1];
        a.w = shape[2];
        a.c = c;
        a.xs_n = x_strides[0];
        a.xs_h = x_strides[1];
        a.xs_w = x_strides[2];
        a.xs_c = x_strides[3];
        a.out = reinterpret_cast<void*>(out);
        a.out_kind = out_kind;
        a.oh = oh;
        a.ow = ow;
        a.os_n = out_strides[0];
        a.os_c = out_strides[1];
        a.os_h = out_strides[2];
        a.os_w = out_strides[3];
        for (int64_t i = 0; i < c; ++i) {
          a.mean[i] = mean[static_cast<size_t>(i)];
          a.inv_std[i] = inv_std[static_cast<size_t>(i)];
        }
        a.swap_rb = swap_rb && c == 3 ? 1 : 0;
        a.out_scale = out_scale;
        a.top = top;
        a.left = left;
        a.ys = reinterpret_cast<const int32_t*>(ys);
        a.yw = reinterpret_cast<const float*>(yw);
        a.ty = ty;
        a.xs = reinterpret_cast<const int32_t*>(xs);
        a.xw = reinterpret_cast<const float*>(xw);
        a.tx = tx;
        device_ok();
        py::gil_scoped_release nogil;
        check(prepost_preprocess(a, reinterpret_cast<void*>(stream)), "prepost_preprocess");
      },
      py::arg("x"), py::arg("shape"), py::arg("x_strides"), py::arg("out"), py::arg("out_kind"), py::arg("oh"), py::arg("ow"),
      py::arg("out_strides"), py::arg("mean"), py::arg("inv_std"), py::arg("swap_rb"), py::arg("out_scale"), py::arg("top"),
      py::arg("left"), py::arg("ys"), py::arg("yw"), py::arg("ty"), py::arg("xs"), py::arg("xw"), py::arg("tx"),
      py::arg("stream"),
      "Fused resize (tap tables) / crop / channel order / normalize / layout / dtype of a uint8 NHWC batch.");
  m.def(
      "prepost_topk",
      [](uintptr_t x, int dtype, int64_t rows, int64_t cols, int64_t row_stride, uintptr_t scales, int64_t n_scales, int64_t k,
         bool softmax, uintptr_t values, uintptr_t indices, uintptr_t bad, uintptr_t stream) {
        if (dtype < 0 || dtype > 2) throw py::value_error("prepost_topk: dtype must be 0 (f32), 1 (f16) or 2 (int8)");
        if (k < 0 || k > cols) throw py::value_error("prepost_topk: k must be in [0, cols]");
        if (dtype == 2 && (scales == 0 || (n_scales != 1 && n_scales != cols)))
          throw py::value_error("prepost_topk: int8 logits need one scale or one per class");
        device_ok();
        py::gil_scoped_release nogil;
        check(prepost_topk(reinterpret_cast<const void*>(x), dtype, rows, cols, row_stride, reinterpret_cast<const float*>(scales),
                           n_scales, k, softmax ? 1 : 0, reinterpret_cast<float*>(values), reinterpret_cast<int64_t*>(indices),
                           reinterpret_cast<int32_t*>(bad), reinterpret_cast<void*>(stream)),
              "prepost_topk");
      },
      py::arg("x"), py::arg("dtype"), py::arg("rows"), py::arg("cols"), py::arg("row_stride"), py::arg("scales"),
      py::arg("n_scales"), py::arg("k"), py::arg("softmax"), py::arg("values"), py::arg("indices"), py::arg("bad"),
      py::arg("stream"), "Top-k (optionally softmax probabilities) of each logits row; bad[r] (or 0) flags NaN/+inf/all -inf, "
      "whose rows are poisoned (NaN, -1).");
  m.def(
      "prepost_nms",
      [](uintptr_t boxes, uintptr_t scores, uintptr_t classes, uintptr_t class_end, int64_t n, float iou_threshold,
         uintptr_t mask, uintptr_t removed, uintptr_t keep, uintptr_t count, uintptr_t stream) {
        if (n < 0) throw py::value_error("prepost_nms: n must be >= 0");
        if ((n + 63) / 64 > 65535) throw py::value_error("prepost_nms: at most 65535 * 64 boxes per call");
        device_ok();
        py::gil_scoped_release nogil;
        check(prepost_nms(reinterpret_cast<const float*>(boxes), reinterpret_cast<const float*>(scores),
                          reinterpret_cast<const int64_t*>(classes), reinterpret_cast<const int64_t*>(class_end), n,
                          iou_threshold, reinterpret_cast<uint64_t*>(mask), reinterpret_cast<uint64_t*>(removed),
                          reinterpret_cast<int64_t*>(keep), reinterpret_cast<int32_t*>(count),
                          reinterpret_cast<void*>(stream)),
              "prepost_nms");
      },
      py::arg("boxes"), py::arg("scores"), py::arg("classes"), py::arg("class_end"), py::arg("n"), py::arg("iou_threshold"),
      py::arg("mask"), py::arg("removed"), py::arg("keep"), py::arg("count"), py::arg("stream"),
      "NMS of boxes sorted by (class, score desc, index): kept positions into keep, count[0] their number, "
      "count[1] the NaN / infinity flag.");
  m.def(
      "prepost_embed",
      [](uintptr_t x, int64_t rows, int64_t dim, int64_t row_stride, float eps, bool normalize, uintptr_t out, uintptr_t q,
         uintptr_t scales, uintptr_t bad, uintptr_t stream) {
        if (rows < 0 || dim < 0) throw py::value_error("prepost_embed: negative shape");
        if ((q == 0) != (scales == 0) && rows > 0 && dim > 0)
          throw py::value_error("prepost_embed: give both q and scales or neither");
        device_ok();
        py::gil_scoped_release nogil;
        check(prepost_embed(reinterpret_cast<const float*>(x), rows, dim, row_stride, eps, normalize ? 1 : 0,
                            reinterpret_cast<float*>(out), reinterpret_cast<int8_t*>(q), reinterpret_cast<float*>(scales),
                            reinterpret_cast<int32_t*>(bad), reinterpret_cast<void*>(stream)),
              "prepost_embed");
      },
      py::arg("x"), py::arg("rows"), py::arg("dim"), py::arg("row_stride"), py::arg("eps"), py::arg("normalize"),
      py::arg("out"), py::arg("q"), py::arg("scales"), py::arg("bad"), py::arg("stream"),
      "L2-normalize (out) and/or INT8-compress (q, scales) float32 rows; bad[r] (or 0) flags NaN/infinity, "
      "whose rows are poisoned (NaN, scale NaN, q 0).");
}

}  // namespace cuda
}  // namespace pyperfcore
