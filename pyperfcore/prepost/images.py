"""Fused image pre-processing: resize -> crop -> channel order -> normalize -> layout -> dtype.

Resize semantics (bilinear):

- ``antialias=True`` (default) is Pillow's ``Image.resize(..., Image.BILINEAR)``: a triangle
  filter whose support grows with the downscale factor, with taps outside the image dropped
  and the rest renormalized (torchvision's ``antialias=True`` follows the same definition).
- ``antialias=False`` is OpenCV's ``cv2.resize(..., interpolation=cv2.INTER_LINEAR)``, which is
  also ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False,
  antialias=False)``: two taps at ``src = (dst + 0.5) * in / out - 0.5`` clamped to the edges.

Both are computed in float32 without the intermediate uint8 rounding of Pillow and OpenCV, so a
uint8 result differs from theirs by at most one unit.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .. import _backends
from .._backends import is_torch_tensor, register
from .._runtime import _core
from ._common import dtype_name, to_numpy
from ._gpu import launch

__all__ = ["preprocess_images", "resize_weights"]

_DTYPES = {"float32": 0, "float16": 1, "bfloat16": 2, "int8": 3, "uint8": 4}
_LAYOUTS = {"NCHW": 0, "NHWC": 1}


# Derived state of validated same-size batches, keyed by every argument that determines it (the
# batch's shape, not its contents): a repeated call (a serving loop) skips the Python validation
# and geometry, which otherwise costs more host time than a GPU kernel takes for 32 images.
_PLAN_CACHE: dict[tuple, dict[str, Any]] = {}


_SCALARS = frozenset({type(None), bool, int, float, str, np.float32, np.float64, np.int32, np.int64})
_NO_KEY = ("<no key>",)


def _arg_key(v: Any) -> Any:
    """A hashable, type-preserving key of a small argument, or _NO_KEY."""
    t = type(v)
    if t in _SCALARS:
        return t, v
    if t is list or t is tuple:
        if len(v) <= 8:
            types = tuple(map(type, v))
            if _SCALARS.issuperset(types):  # one C call, not a generator per element
                return t, types, tuple(v)
        return _NO_KEY
    if t is np.ndarray and v.size <= 8:
        return t, v.dtype.str, v.shape, v.tobytes()
    return _NO_KEY


def _plan_key(images: Any, *args: Any) -> tuple | None:
    key = [type(images), tuple(images.shape)]
    for a in args:
        k = _arg_key(a)
        if k is _NO_KEY:
            return None
        key.append(k)
    return tuple(key)


class _Plan:
    """Validated arguments and per-image geometry shared by every backend."""

    def __init__(self, images: Any, size: Any, crop: Any, mean: Any, std: Any, layout: str, dtype: str,
                 input_order: str, antialias: bool, scale: float | None):
        self.batch = None  # a 4-D array/tensor, or None for a list
        self.out: Any = None  # the caller's validated out=, if any
        self.items: list[Any] = []
        if images is None:
            raise TypeError("preprocess_images: images is None; pass a uint8 [N, H, W, C] array or a list of HWC images")
        if isinstance(images, np.ndarray) or is_torch_tensor(images):
            if dtype_name(images) != "uint8":
                raise TypeError(f"preprocess_images: images must be uint8, got {dtype_name(images)}")
            if images.ndim == 3 and not isinstance(images, list):
                raise ValueError("preprocess_images: a 3-D array is one image; pass [image] or a 4-D [N, H, W, C] batch")
            if images.ndim != 4:
                raise ValueError(f"preprocess_images: a batch must be 4-D [N, H, W, C], got {images.ndim}-D")
            self.batch = images
            key = _plan_key(images, size, crop, mean, std, layout, dtype, input_order, antialias, scale)
            hit = _PLAN_CACHE.get(key) if key is not None else None
            if hit is not None:  # the same arguments validated before: reuse the derived state
                self.__dict__.update(hit)
                return
            shapes = [tuple(images.shape[1:])] * int(images.shape[0])
        elif isinstance(images, (list, tuple)):
            shapes = []
            for i, im in enumerate(images):
                if not (isinstance(im, np.ndarray) or is_torch_tensor(im)):
                    raise TypeError(f"preprocess_images: image {i} is a {type(im).__name__}, not an array or tensor")
                if dtype_name(im) != "uint8":
                    raise TypeError(f"preprocess_images: image {i} must be uint8, got {dtype_name(im)}")
                if im.ndim == 2:
                    shapes.append((im.shape[0], im.shape[1], 1))
                elif im.ndim == 3:
                    shapes.append(tuple(im.shape))
                else:
                    raise ValueError(f"preprocess_images: image {i} must be HWC or HW, got {im.ndim}-D")
                self.items.append(im)
        else:
            raise TypeError(f"preprocess_images: images must be an array, tensor or list, got {type(images).__name__}")
        chans = {s[2] for s in shapes}
        if len(chans) > 1:
            raise ValueError(f"preprocess_images: images have different channel counts {sorted(chans)}")
        self.channels = chans.pop() if chans else 3
        if self.channels not in (1, 3):
            raise ValueError(f"preprocess_images: images must have 1 or 3 channels (HWC), got {self.channels}")
        for i, s in enumerate(shapes):
            if s[0] == 0 or s[1] == 0:
                raise ValueError(f"preprocess_images: image {i} is empty ({s[0]}x{s[1]})")
        if layout not in _LAYOUTS:
            raise ValueError(f"preprocess_images: layout must be 'NCHW' or 'NHWC', got {layout!r}")
        if dtype not in _DTYPES:
            raise ValueError(f"preprocess_images: dtype must be one of {', '.join(_DTYPES)}, got {dtype!r}")
        if input_order not in ("RGB", "BGR"):
            raise ValueError(f"preprocess_images: input_order must be 'RGB' or 'BGR', got {input_order!r}")
        if dtype == "int8":
            if scale is None or not np.isfinite(scale) or scale <= 0:
                raise ValueError("preprocess_images: dtype='int8' needs scale= > 0 (q = round(value / scale))")
        elif scale is not None:
            raise ValueError("preprocess_images: scale= applies to dtype='int8' only")
        self.layout, self.dtype, self.antialias = layout, dtype, bool(antialias)
        self.scale = float(scale) if scale is not None else 1.0
        self.swap = input_order == "BGR" and self.channels == 3
        c = self.channels
        self.mean = self._per_channel(mean, "mean", c)
        self.std = self._per_channel(std, "std", c)
        if np.any(self.std == 0):
            raise ValueError("preprocess_images: std must not be 0")
        self.inv_std = (np.float32(1) / self.std).astype(np.float32)
        if self.batch is not None and shapes:  # one geometry for the whole batch
            g = self._geometry(shapes[0][0], shapes[0][1], size, crop)
            self.geometry = np.empty((len(shapes), 6), dtype=np.int64)
            self.geometry[:] = g
            outs = {(g[4], g[5])}
        else:
            self.geometry = np.array([self._geometry(s[0], s[1], size, crop) for s in shapes],
                                     dtype=np.int64).reshape(-1, 6)
            outs = {(int(g[4]), int(g[5])) for g in self.geometry}
        if len(outs) > 1:
            raise ValueError("preprocess_images: images of different sizes need size= or crop= giving one output "
                             f"size; got output sizes {sorted(outs)}")
        if outs:
            self.out_h, self.out_w = outs.pop()
        else:  # an empty batch: the output size the arguments fix, else the batch's, else 0 x 0
            self.out_h, self.out_w = self._empty_size(images, size, crop)
        self.n = len(shapes)
        # Per-device launch arguments of the GPU backends, filled on first use; the dict object is
        # shared with the plan cache, so a repeated call finds them ready.
        self.gpu: dict[Any, Any] = {}
        if self.batch is not None and self.n:
            key = _plan_key(images, size, crop, mean, std, layout, dtype, input_order, antialias, scale)
            if key is not None:
                if len(_PLAN_CACHE) >= 64:
                    _PLAN_CACHE.clear()
                _PLAN_CACHE[key] = {k: v for k, v in self.__dict__.items() if k not in ("batch", "out", "items")}

    def _empty_size(self, images: Any, size: Any, crop: Any) -> tuple[int, int]:
        if isinstance(crop, (int, np.integer)) and not isinstance(crop, bool):
            return int(crop), int(crop)
        if isinstance(crop, (tuple, list)) and len(crop) in (2, 4):
            return int(crop[-2]), int(crop[-1])
        if isinstance(size, (tuple, list)) and len(size) == 2:
            return int(size[0]), int(size[1])
        if self.batch is not None and size is None:
            return int(images.shape[1]), int(images.shape[2])
        return 0, 0

    @staticmethod
    def _per_channel(v: Any, what: str, c: int) -> np.ndarray:
        a = np.asarray(v, dtype=np.float32).reshape(-1)
        if a.size == 1:
            a = np.repeat(a, c)
        if a.size != c:
            raise ValueError(f"preprocess_images: {what} has {a.size} values for {c}-channel images")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"preprocess_images: {what} must be finite")
        return a

    @staticmethod
    def _geometry(h: int, w: int, size: Any, crop: Any) -> tuple[int, int, int, int, int, int]:
        """(resize_h, resize_w, top, left, out_h, out_w) of one image."""
        if size is None:
            rh, rw = h, w
        elif isinstance(size, (int, np.integer)) and not isinstance(size, bool):
            if size <= 0:
                raise ValueError(f"preprocess_images: size must be positive, got {size}")
            # torchvision: the shorter side becomes `size`, the longer one int(size * long / short).
            if w <= h:
                rw, rh = int(size), int(size * h / w)
            else:
                rh, rw = int(size), int(size * w / h)
        elif isinstance(size, (tuple, list)) and len(size) == 2:
            rh, rw = int(size[0]), int(size[1])
            if rh <= 0 or rw <= 0:
                raise ValueError(f"preprocess_images: size must be positive, got {tuple(size)}")
        else:
            raise ValueError(f"preprocess_images: size must be None, an int (shorter side) or (height, width), got {size!r}")
        if crop is None:
            return rh, rw, 0, 0, rh, rw
        if isinstance(crop, (int, np.integer)) and not isinstance(crop, bool):
            crop = (int(crop), int(crop))
        if not isinstance(crop, (tuple, list)) or len(crop) not in (2, 4):
            raise ValueError(f"preprocess_images: crop must be an int, (height, width) or (top, left, height, width), got {crop!r}")
        if len(crop) == 2:
            ch, cw = int(crop[0]), int(crop[1])
            # torchvision's center_crop offsets: int(round((size - crop) / 2)).
            top, left = int(round((rh - ch) / 2.0)), int(round((rw - cw) / 2.0))
        else:
            top, left, ch, cw = (int(v) for v in crop)
        if ch <= 0 or cw <= 0 or top < 0 or left < 0 or top + ch > rh or left + cw > rw:
            raise ValueError(f"preprocess_images: crop {ch}x{cw} at ({top}, {left}) does not fit in the "
                             f"{rh}x{rw} resized image")
        return rh, rw, top, left, ch, cw

    def out_shape(self) -> tuple[int, int, int, int]:
        if self.layout == "NCHW":
            return (self.n, self.channels, self.out_h, self.out_w)
        return (self.n, self.out_h, self.out_w, self.channels)


def preprocess_images(images: Any, size: Any = None, crop: Any = None, mean: Any = 0.0, std: Any = 1.0,
                      layout: str = "NCHW", dtype: str = "float32", input_order: str = "RGB",
                      antialias: bool = True, scale: float | None = None, out: Any = None,
                      backend: str | None = None) -> Any:
    """Resize, crop, reorder, normalize, re-layout and convert uint8 images in one pass.

    Parameters
    ----------
    images : numpy.ndarray, torch.Tensor or list of them
        A uint8 batch ``[N, H, W, C]`` or a list of uint8 ``[H, W, C]`` / ``[H, W]`` images of
        possibly different sizes. ``C`` is 1 or 3. Rows may be strided (views of larger images).
    size : None, int or (height, width)
        Resize target: an int resizes the shorter side to it keeping the aspect ratio
        (torchvision's rule, the longer side ``int(size * long / short)``); a pair resizes to
        exactly that; None keeps the size.
    crop : None, int, (height, width) or (top, left, height, width)
        Window of the resized image: centered (torchvision's offsets,
        ``round((size - crop) / 2)``) or given. It must fit inside the resized image.
    mean, std : float or sequence
        Per output channel (RGB order), in the input's units (0-255): ``out = (x - mean) / std``.
    layout : "NCHW" or "NHWC"
    dtype : "float32", "float16", "bfloat16", "int8" or "uint8"
        int8 is ``clip(round_half_even(out / scale), -127, 127)``; uint8 is
        ``clip(round_half_even(out), 0, 255)`` (with mean 0 and std 1 this is a plain resize).
        With numpy input, bfloat16 comes back as uint16 holding the bfloat16 bits
        (``torch.from_numpy(a).view(torch.bfloat16)``); with torch input as torch.bfloat16.
    input_order : "RGB" or "BGR"
        Channel order of the input; the output is always RGB.
    antialias : bool
        True: Pillow's bilinear; False: OpenCV's INTER_LINEAR (see the module docstring).
    scale : float, only for dtype="int8"
    out : numpy.ndarray or torch.Tensor, optional
        A preallocated C-contiguous result of exactly the output's shape and dtype (numpy uint16
        for bfloat16), of the input's kind and device; it is filled and returned. Saves the
        allocation (and the page faults of a fresh buffer) on every call.
    backend : None, "reference", "cpu", "cuda" or "triton"
        ``cuda`` and ``triton`` take a same-size ``[N, H, W, C]`` torch tensor batch on the GPU
        (triton also a CPU tensor under ``TRITON_INTERPRET=1``).

    Returns
    -------
    numpy.ndarray or torch.Tensor of the input's kind and device, ``[N, C, h, w]`` or ``[N, h, w, C]``.

    Raises
    ------
    TypeError
        images None, not arrays, or not uint8.
    ValueError
        Channel count other than 1 or 3, mixed sizes without a common output size, a crop that does
        not fit, std 0, bad layout/dtype/order names, int8 without a scale.
    """
    plan = _Plan(images, size, crop, mean, std, layout, dtype, input_order, antialias, scale)
    plan.out = _check_out(plan, out)
    probe = plan.batch if plan.batch is not None else (plan.items[0] if plan.items else np.empty(0, np.uint8))
    impl = _backends.select("preprocess_images", probe, backend)
    return impl(plan)


_NP_OUT = {"float32": np.float32, "float16": np.float16, "bfloat16": np.uint16, "int8": np.int8, "uint8": np.uint8}


def _torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, name)


def _check_out(plan: _Plan, out: Any) -> Any:
    """Validate a caller's ``out=``: kind and device of the input, exact shape and dtype,
    C-contiguous, and not overlapping the input."""
    if out is None:
        return None
    src = plan.batch if plan.batch is not None else (plan.items[0] if plan.items else None)
    torch_in = src is not None and is_torch_tensor(src)
    shape = plan.out_shape()
    if is_torch_tensor(out):
        if src is not None and not torch_in:
            raise TypeError("preprocess_images: out is a torch.Tensor but the images are numpy arrays; pass a numpy out")
        if torch_in and out.device != src.device:
            raise ValueError(f"preprocess_images: out is on {out.device} but the images are on {src.device}")
        want = _torch_dtype(plan.dtype)
        if out.dtype != want:
            raise TypeError(f"preprocess_images: out must be {want} for dtype={plan.dtype!r}, got {out.dtype}")
        if tuple(out.shape) != shape:
            raise ValueError(f"preprocess_images: out has shape {tuple(out.shape)}, expected {shape} ({plan.layout})")
        if not out.is_contiguous():
            raise ValueError("preprocess_images: out must be C-contiguous")
        if torch_in and out.numel() and src.numel() and _overlaps(out.data_ptr(), out.numel() * out.element_size(),
                                                                  src.data_ptr(), src.numel() * src.element_size()):
            raise ValueError("preprocess_images: out overlaps the input images")
        return out
    if not isinstance(out, np.ndarray):
        raise TypeError(f"preprocess_images: out must be a numpy.ndarray or torch.Tensor, got {type(out).__name__}")
    if torch_in:
        raise TypeError("preprocess_images: out is a numpy array but the images are torch tensors; pass a torch out")
    want = np.dtype(_NP_OUT[plan.dtype])
    if out.dtype != want:
        extra = " (bfloat16 bits)" if plan.dtype == "bfloat16" else ""
        raise TypeError(f"preprocess_images: out must be {want}{extra} for dtype={plan.dtype!r}, got {out.dtype}")
    if out.shape != shape:
        raise ValueError(f"preprocess_images: out has shape {out.shape}, expected {shape} ({plan.layout})")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("preprocess_images: out must be a writeable C-contiguous array")
    inputs = [plan.batch] if plan.batch is not None else plan.items
    for a in inputs:
        if isinstance(a, np.ndarray) and np.shares_memory(out, a):
            raise ValueError("preprocess_images: out overlaps the input images")
    return out


def _overlaps(a: int, na: int, b: int, nb: int) -> bool:
    return a < b + nb and b < a + na


def resize_weights(in_size: int, out_size: int, antialias: bool = True) -> np.ndarray:
    """The dense ``[out_size, in_size]`` float64 matrix of one resize axis (rows sum to 1).

    Pure numpy from the definitions in the module docstring (used by the reference backend).
    """
    m = np.zeros((out_size, in_size), dtype=np.float64)
    scale = in_size / out_size
    for i in range(out_size):
        if antialias:
            fs = max(scale, 1.0)
            center = (i + 0.5) * scale
            lo = max(int(center - fs + 0.5), 0)
            hi = min(int(center + fs + 0.5), in_size)
            j = np.arange(lo, hi)
            w = np.maximum(0.0, 1.0 - np.abs((j - center + 0.5) / fs))
            if w.sum() != 0:
                m[i, lo:hi] = w / w.sum()
        else:
            sx = (i + 0.5) * scale - 0.5
            x0 = int(np.floor(sx))
            f = sx - x0
            if x0 < 0:
                x0, f = 0, 0.0
            if x0 >= in_size - 1:
                x0, f = in_size - 1, 0.0
            m[i, x0] += 1 - f
            if f > 0:
                m[i, x0 + 1] += f
    return m


# ------------------------------------------------------------------ output conversion (numpy)
def _convert(v: np.ndarray, dtype: str, scale: float) -> np.ndarray:
    v = v.astype(np.float32)
    if dtype == "float32":
        return v
    if dtype == "float16":
        return v.astype(np.float16)
    if dtype == "bfloat16":
        b = v.view(np.uint32).astype(np.uint64)
        b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
        return b.astype(np.uint16)
    if dtype == "int8":
        return np.clip(np.rint(v / np.float32(scale)), -127, 127).astype(np.int8)
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


def _image_list(plan: _Plan) -> list[np.ndarray]:
    if plan.batch is not None:
        b = to_numpy(plan.batch)
        return [b[i] for i in range(b.shape[0])]
    return [to_numpy(im).reshape(im.shape[0], im.shape[1], -1) for im in plan.items]


def _wrap(plan: _Plan, out: np.ndarray) -> Any:
    if plan.out is not None:
        dst = _np_out(plan)
        if dst.size and dst.ctypes.data != out.ctypes.data:  # the reference backend computed a fresh array
            np.copyto(dst, out)
        return plan.out
    src = plan.batch if plan.batch is not None else (plan.items[0] if plan.items else None)
    if src is not None and is_torch_tensor(src):
        import torch

        t = torch.from_numpy(np.ascontiguousarray(out))
        return t.view(torch.bfloat16) if plan.dtype == "bfloat16" else t
    return out


def _np_out(plan: _Plan) -> np.ndarray | None:
    """A numpy view of the caller's out (torch CPU tensors share memory; bfloat16 as uint16)."""
    o = plan.out
    if o is None or isinstance(o, np.ndarray):
        return o
    import torch

    if o.is_cuda:
        raise ValueError("preprocess_images: a CUDA out needs backend='cuda' or 'triton'")
    if o.dtype == torch.bfloat16:
        return o.view(torch.int16).numpy().view(np.uint16)
    return o.numpy()


@register("preprocess_images", "reference", ("cpu",))
def _preprocess_reference(plan: _Plan) -> Any:
    out = np.empty((plan.n, plan.out_h, plan.out_w, plan.channels), dtype=np.float32)
    order = [2, 1, 0] if plan.swap else list(range(plan.channels))
    for i, im in enumerate(_image_list(plan)):
        rh, rw, top, left, oh, ow = (int(v) for v in plan.geometry[i])
        x = im.astype(np.float64)
        if (rh, rw) != im.shape[:2]:
            wy = resize_weights(im.shape[0], rh, plan.antialias)[top:top + oh]
            wx = resize_weights(im.shape[1], rw, plan.antialias)[left:left + ow]
            x = np.tensordot(wy, x, axes=(1, 0))  # [oh, w, c]
            x = np.einsum("xw,ywc->yxc", wx, x)
        else:
            x = x[top:top + oh, left:left + ow]
        v = (x[..., order].astype(np.float32) - plan.mean) * plan.inv_std
        out[i] = v
    res = _convert(out, plan.dtype, plan.scale)
    if plan.layout == "NCHW":
        res = np.ascontiguousarray(res.transpose(0, 3, 1, 2))
    return _wrap(plan, res)


@register("preprocess_images", "cpu", ("cpu",))
def _preprocess_cpu(plan: _Plan) -> Any:
    if plan.n == 0:
        np_dt = {"bfloat16": np.uint16}.get(plan.dtype, plan.dtype)
        return _wrap(plan, np.empty(plan.out_shape(), dtype=np_dt))
    if plan.batch is not None:
        b = to_numpy(plan.batch)
        if b.strides[3] != 1 or b.strides[2] != plan.channels:
            b = np.ascontiguousarray(b)
        images: Any = b
    else:
        images = []
        for im in plan.items:
            a = to_numpy(im)
            if a.ndim == 3 and (a.strides[2] != 1 or a.strides[1] != a.shape[2]) or a.ndim == 2 and a.strides[1] != 1 \
                    or a.strides[0] < 0:
                a = np.ascontiguousarray(a)
            images.append(a)
    out = _core().prepost_preprocess_images(
        images, plan.geometry[:, :4], plan.channels, plan.out_h, plan.out_w, plan.antialias, plan.swap,
        plan.mean.tolist(), plan.inv_std.tolist(), _LAYOUTS[plan.layout], _DTYPES[plan.dtype], plan.scale,
        out=_np_out(plan))
    return _wrap(plan, out)


# ------------------------------------------------------------------ GPU (triton / cuda)
_TAPS_CACHE: dict[tuple, Any] = {}


def _gpu_batch(plan: _Plan, what: str) -> Any:
    x = plan.batch
    if x is None or not is_torch_tensor(x):
        raise ValueError(f"preprocess_images: the {what} backend takes a same-size uint8 [N, H, W, C] torch tensor "
                         "batch (torch.stack the images first)")
    return x


def _gpu_out(plan: _Plan, x: Any) -> tuple[Any, tuple[int, int, int, int]]:
    """The output tensor and its (n, c, h, w) element strides."""
    import torch

    out = plan.out if plan.out is not None else torch.empty(plan.out_shape(), dtype=_torch_dtype(plan.dtype),
                                                            device=x.device)
    st = out.stride()
    return out, (st if plan.layout == "NCHW" else (st[0], st[3], st[1], st[2]))


def _gpu_taps(plan: _Plan, x: Any) -> Any:
    """Device tap tables (y_start, y_weights, x_start, x_weights) of the crop window, or None
    when there is no resize. Cached per geometry and device (they are a few KiB)."""
    import torch

    h, w = int(x.shape[1]), int(x.shape[2])
    rh, rw, top, left, oh, ow = (int(v) for v in plan.geometry[0])
    if (rh, rw) == (h, w):
        return None
    key = (h, w, rh, rw, top, left, oh, ow, plan.antialias, str(x.device))
    taps = _TAPS_CACHE.get(key)
    if taps is None:
        ys, _, yw = _core().prepost_resize_taps(h, rh, plan.antialias)
        xs, _, xw = _core().prepost_resize_taps(w, rw, plan.antialias)
        taps = tuple(torch.from_numpy(np.ascontiguousarray(a)).to(x.device)
                     for a in (ys[top:top + oh], yw[top:top + oh], xs[left:left + ow], xw[left:left + ow]))
        if len(_TAPS_CACHE) > 64:
            _TAPS_CACHE.clear()
        _TAPS_CACHE[key] = taps
    return taps


def _gpu_empty(plan: _Plan, x: Any) -> bool:
    return plan.n == 0 or plan.out_h == 0 or plan.out_w == 0


_KIND = {"float32": 0, "float16": 0, "bfloat16": 0, "int8": 1, "uint8": 2}


@register("preprocess_images", "triton", ("cuda",))
def _preprocess_triton(plan: _Plan) -> Any:
    from ..kernels import prepost as tk

    x = _gpu_batch(plan, "triton")
    out, ostr = _gpu_out(plan, x)
    if _gpu_empty(plan, x):
        return out
    g = plan.geometry[0]
    tk.preprocess_batch(x, out, (plan.out_h, plan.out_w), ostr, plan.mean.tolist(), plan.inv_std.tolist(),
                        _gpu_taps(plan, x), int(g[2]), int(g[3]), plan.swap, _KIND[plan.dtype], plan.scale)
    return out


_cuda: Any = None


def _cuda_args(plan: _Plan, x: Any) -> tuple:
    """The launch arguments that depend only on the plan and the device (tap table pointers,
    per-channel constants, window origin), computed once per plan and device."""
    idx = x.get_device()
    st = plan.gpu.get(idx)
    if st is None:
        taps = _gpu_taps(plan, x)
        g = plan.geometry[0]
        if taps is None:
            ptrs = (0, 0, 0, 0, 0, 0)
        else:
            ys, yw, xs, xw = taps
            ptrs = (ys.data_ptr(), yw.data_ptr(), int(yw.shape[1]), xs.data_ptr(), xw.data_ptr(), int(xw.shape[1]))
        # The tap tensors stay alive in _TAPS_CACHE; keep them referenced here too, since that
        # cache may be cleared while this plan is still cached.
        st = plan.gpu[idx] = (_DTYPES[plan.dtype], plan.out_h, plan.out_w, plan.mean.tolist(), plan.inv_std.tolist(),
                              plan.swap, plan.scale, int(g[2]), int(g[3])) + ptrs, taps
    return st[0]


@register("preprocess_images", "cuda", ("cuda",))
def _preprocess_cuda(plan: _Plan) -> Any:
    global _cuda
    if _cuda is None:
        from .._runtime import _cuda_module

        _cuda = _cuda_module()
    x = _gpu_batch(plan, "cuda")
    out, ostr = _gpu_out(plan, x)
    if _gpu_empty(plan, x):
        return out
    kind, oh, ow, mean, inv, swap, scale, top, left, ys, yw, ty, xs, xw, tx = _cuda_args(plan, x)
    launch(x, _cuda.prepost_preprocess, x.data_ptr(), x.shape, x.stride(), out.data_ptr(), kind, oh, ow, ostr, mean,
           inv, swap, scale, top, left, ys, yw, ty, xs, xw, tx)
    return out
