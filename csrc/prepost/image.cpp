// Fused image pre-processing: resize (separable, two reference semantics) -> crop -> channel
// order -> normalize -> layout -> dtype, one pass per output row.
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "../common/threads.hpp"
#include "prepost.hpp"
#include "prepost_kernels.hpp"

#if defined(__x86_64__)
#include <xmmintrin.h>  // _mm_sfence (SSE, part of baseline x86-64)
#endif

namespace pyperfcore {
namespace prepost {

AxisTaps resize_taps(int64_t in_size, int64_t out_size, int64_t first, int64_t n, bool antialias) {
  if (in_size <= 0 || out_size <= 0 || first < 0 || n < 0 || first + n > out_size)
    throw std::invalid_argument("resize_taps: bad sizes");
  AxisTaps t;
  const double scale = static_cast<double>(in_size) / static_cast<double>(out_size);
  t.start.resize(static_cast<size_t>(n));
  t.count.resize(static_cast<size_t>(n));
  if (antialias) {
    // PIL (Pillow's ImagingResample, BILINEAR): a triangle filter of support 1, stretched by
    // the downscale factor; taps whose centers fall outside the image are dropped and the
    // remaining weights renormalized.
    const double fscale = std::max(scale, 1.0), support = fscale, ss = 1.0 / fscale;
    t.max_taps = static_cast<int64_t>(std::ceil(support)) * 2 + 1;
    t.weights.assign(static_cast<size_t>(n * t.max_taps), 0.f);
    std::vector<double> w(static_cast<size_t>(t.max_taps));
    for (int64_t i = 0; i < n; ++i) {
      const double center = (static_cast<double>(first + i) + 0.5) * scale;
      int64_t lo = static_cast<int64_t>(center - support + 0.5);
      if (lo < 0) lo = 0;
      int64_t hi = static_cast<int64_t>(center + support + 0.5);
      if (hi > in_size) hi = in_size;
      int64_t cnt = std::min<int64_t>(hi - lo, t.max_taps);
      double sum = 0.0;
      for (int64_t j = 0; j < cnt; ++j) {
        const double d = std::fabs((static_cast<double>(j + lo) - center + 0.5) * ss);
        w[static_cast<size_t>(j)] = d < 1.0 ? 1.0 - d : 0.0;
        sum += w[static_cast<size_t>(j)];
      }
      // Trailing zero weights cost work only: drop them.
      while (cnt > 1 && w[static_cast<size_t>(cnt - 1)] == 0.0) --cnt;
      int64_t skip = 0;
      while (skip < cnt - 1 && w[static_cast<size_t>(skip)] == 0.0) ++skip;
      t.start[static_cast<size_t>(i)] = static_cast<int32_t>(lo + skip);
      t.count[static_cast<size_t>(i)] = static_cast<int32_t>(cnt - skip);
      for (int64_t j = skip; j < cnt; ++j)
        t.weights[static_cast<size_t>(i * t.max_taps + j - skip)] =
            static_cast<float>(sum != 0.0 ? w[static_cast<size_t>(j)] / sum : 0.0);
    }
  } else {
    // OpenCV INTER_LINEAR (= torch bilinear, align_corners=False, antialias=False): two taps
    // around src = (dst + 0.5) * scale - 0.5, clamped to the first and last pixel.
    t.max_taps = 2;
    t.weights.assign(static_cast<size_t>(n * 2), 0.f);
    for (int64_t i = 0; i < n; ++i) {
      const double sx = (static_cast<double>(first + i) + 0.5) * scale - 0.5;
      int64_t x0 = static_cast<int64_t>(std::floor(sx));
      double f = sx - static_cast<double>(x0);
      if (x0 < 0) {
        x0 = 0;
        f = 0.0;
      }
      if (x0 >= in_size - 1) {
        x0 = in_size - 1;
        f = 0.0;
      }
      t.start[static_cast<size_t>(i)] = static_cast<int32_t>(x0);
      t.count[static_cast<size_t>(i)] = f > 0.0 ? 2 : 1;
      t.weights[static_cast<size_t>(2 * i)] = static_cast<float>(1.0 - f);
      t.weights[static_cast<size_t>(2 * i + 1)] = static_cast<float>(f);
    }
  }
  return t;
}

namespace {

size_t out_elem_size(OutType t) {
  switch (t) {
    case OutType::f32: return 4;
    case OutType::f16:
    case OutType::bf16: return 2;
    default: return 1;
  }
}

void check_params(const ImageRef* images, int64_t n, const PreprocessParams& p) {
  if (p.channels != 1 && p.channels != 3) throw std::invalid_argument("preprocess_images: channels must be 1 or 3");
  if (p.out_h < 0 || p.out_w < 0) throw std::invalid_argument("preprocess_images: negative output size");
  if (p.dtype == OutType::i8 && !(p.out_scale > 0.f && std::isfinite(p.out_scale)))
    throw std::invalid_argument("preprocess_images: int8 output needs a positive finite scale");
  for (int64_t c = 0; c < p.channels; ++c)
    if (!std::isfinite(p.mean[c]) || !std::isfinite(p.inv_std[c]))
      throw std::invalid_argument("preprocess_images: mean and 1/std must be finite");
  for (int64_t i = 0; i < n; ++i) {
    const ImageRef& im = images[i];
    const std::string at = "preprocess_images: image " + std::to_string(i) + ": ";
    if (im.height <= 0 || im.width <= 0) throw std::invalid_argument(at + "empty image");
    if (im.row_stride < im.width * p.channels) throw std::invalid_argument(at + "row stride smaller than a row");
    if (im.resize_h <= 0 || im.resize_w <= 0) throw std::invalid_argument(at + "resize size must be positive");
    if (im.top < 0 || im.left < 0 || im.top + p.out_h > im.resize_h || im.left + p.out_w > im.resize_w)
      throw std::invalid_argument(at + "crop window " + std::to_string(p.out_h) + "x" + std::to_string(p.out_w) + " at (" +
                                  std::to_string(im.top) + ", " + std::to_string(im.left) + ") does not fit in the " +
                                  std::to_string(im.resize_h) + "x" + std::to_string(im.resize_w) + " resized image");
    if (im.height > INT32_MAX || im.width > INT32_MAX) throw std::invalid_argument(at + "image too large");
  }
}

}  // namespace

void preprocess_images(const ImageRef* images, int64_t n, const PreprocessParams& p, void* out, CpuTarget target) {
  check_params(images, n, p);
  if (n == 0 || p.out_h == 0 || p.out_w == 0) return;
  const int64_t C = p.channels, OH = p.out_h, OW = p.out_w;
  const size_t es = out_elem_size(p.dtype);
  const int64_t img_elems = C * OH * OW;
  // Outputs far larger than the caches are written with streaming stores: no read-for-ownership
  // of the destination lines, and the input stays cached.
  const bool stream = n * img_elems * static_cast<int64_t>(es) >= (int64_t{4} << 20);
  const detail::ImageKernels k = detail::image_kernels(target, p.dtype, C, p.layout, stream);
  char* obase = static_cast<char*>(out);

  auto row_dst = [&](int64_t i, int64_t y) {
    if (p.layout == Layout::nchw)
      return detail::RowDst{obase + static_cast<ptrdiff_t>((i * img_elems + y * OW) * static_cast<int64_t>(es)), OH * OW};
    return detail::RowDst{obase + static_cast<ptrdiff_t>((i * img_elems + y * OW * C) * static_cast<int64_t>(es)), 0};
  };

  // Resize taps per image (only the columns and rows of the crop window).
  std::vector<AxisTaps> tx(static_cast<size_t>(n)), ty(static_cast<size_t>(n));
  std::vector<char> resized(static_cast<size_t>(n), 0);
  bool any_resize = false;
  for (int64_t i = 0; i < n; ++i) {
    const ImageRef& im = images[i];
    if (im.resize_h != im.height || im.resize_w != im.width) {
      resized[static_cast<size_t>(i)] = 1;
      any_resize = true;
      tx[static_cast<size_t>(i)] = resize_taps(im.width, im.resize_w, im.left, OW, p.antialias);
      ty[static_cast<size_t>(i)] = resize_taps(im.height, im.resize_h, im.top, OH, p.antialias);
    }
  }

  // Tasks are bands of output rows; a resized band recomputes the source rows at its edges.
  const int64_t band = any_resize ? std::max<int64_t>(8, std::min<int64_t>(OH, 32)) : std::max<int64_t>(1, 16384 / std::max<int64_t>(OW * C, 1));
  const int64_t bands = (OH + band - 1) / band;
  parallel_for(n * bands, 1, [&](int64_t b, int64_t e) {
    std::vector<float> ring, vrow;
    std::vector<const float*> rows;
    for (int64_t t = b; t < e; ++t) {
      const int64_t i = t / bands, y0 = (t % bands) * band, y1 = std::min(OH, y0 + band);
      const ImageRef& im = images[i];
      if (!resized[static_cast<size_t>(i)]) {
        for (int64_t y = y0; y < y1; ++y) {
          const uint8_t* src = im.data + (im.top + y) * im.row_stride + im.left * C;
          k.emit_u8(src, OW, p, row_dst(i, y));
        }
        continue;
      }
      const AxisTaps& X = tx[static_cast<size_t>(i)];
      const AxisTaps& Y = ty[static_cast<size_t>(i)];
      const int64_t cap = Y.max_taps, rw = OW * C;
      ring.resize(static_cast<size_t>(cap * rw));
      vrow.resize(static_cast<size_t>(rw));
      rows.resize(static_cast<size_t>(cap));
      // Horizontally resized source rows [lo, hi) live in ring slot (row % cap).
      int64_t lo = 0, hi = 0;
      for (int64_t y = y0; y < y1; ++y) {
        const int64_t s0 = Y.start[static_cast<size_t>(y)], cnt = Y.count[static_cast<size_t>(y)];
        if (s0 >= hi || s0 < lo || hi > s0 + cnt) lo = hi = s0;
        for (int64_t r = std::max(hi, s0); r < s0 + cnt; ++r)
          k.hresize(im.data + r * im.row_stride, X, C, ring.data() + (r % cap) * rw);
        lo = s0;
        hi = std::max(hi, s0 + cnt);
        for (int64_t j = 0; j < cnt; ++j) rows[static_cast<size_t>(j)] = ring.data() + ((s0 + j) % cap) * rw;
        k.vresize(rows.data(), Y.weights.data() + y * Y.max_taps, cnt, rw, vrow.data());
        k.emit_f32(vrow.data(), OW, p, row_dst(i, y));
      }
    }
#if defined(__x86_64__)
    if (stream) _mm_sfence();  // streaming stores are weakly ordered: publish before returning
#endif
  });
}

}  // namespace prepost
}  // namespace pyperfcore
