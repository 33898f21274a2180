"""INT8 quantization.

The pilot op, :func:`quantize` / :func:`dequantize`: symmetric INT8 quantization, per channel
(one scale per index along ``axis``, as ``torch.quantize_per_channel`` means it) or per tensor
(``axis=None``), on every backend (``reference``, ``cpu``, ``cuda``, ``triton``) with identical
results.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _backends
from .._arrays import as_numpy, normalize_axis, numpy_view3, torch_view3
from .._backends import is_torch_tensor, register
from .._runtime import _core, _cuda_module

__all__ = ["quantize", "dequantize"]

_FLOAT_DTYPES = ("float32", "float16")
# A scale below the smallest normal float32 (all-zero or all-subnormal channel) becomes 1.
_FLT_MIN = np.finfo(np.float32).tiny


def _check_input(x: Any, what: str) -> None:
    if x is None:
        raise TypeError(f"{what}: x is None; pass a numpy array or a torch tensor")
    if is_torch_tensor(x):
        name = str(x.dtype).replace("torch.", "")
    elif isinstance(x, np.ndarray):
        name = x.dtype.name
    else:
        raise TypeError(f"{what}: x must be a numpy.ndarray or torch.Tensor, got {type(x).__name__}")
    if name not in _FLOAT_DTYPES:
        raise TypeError(f"{what}: x must be float32 or float16, got {name}")


def quantize(x: Any, axis: int | None = None, dtype: str = "int8", backend: str | None = None) -> tuple[Any, Any]:
    """Symmetric INT8 quantization, per channel or per tensor.

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor
        float32 or float16, any shape and strides. torch tensors may live on CPU or CUDA.
    axis : int or None
        The channel axis: one scale per index along it. ``None`` quantizes per tensor.
    dtype : str
        Only ``"int8"``.
    backend : str or None
        ``"reference"`` (numpy), ``"cpu"`` (C++, SIMD chosen at run time), ``"cuda"`` or
        ``"triton"``. ``None`` picks the best one for the input's device.

    Returns
    -------
    q, scale
        ``q`` is int8 with ``x``'s shape (C-contiguous), ``scale`` float32 of shape
        ``(x.shape[axis],)`` or ``()`` per tensor; both of ``x``'s kind and device.
        ``scale = amax / 127`` (float32), 1 when that is below the smallest normal float32 (an all-zero or all-subnormal channel);
        ``q = clip(round_half_to_even(x / scale), -127, 127)`` with the quotient in float32
        (ties such as 2.5 go to 2). Identical on every backend and CPU target.

    Raises
    ------
    ValueError
        If ``x`` contains NaN or +-inf, or ``axis`` is out of range.
    TypeError
        If ``x`` is not a float32/float16 array or tensor.
    pyperfcore.BackendUnavailable
        If the requested backend was not built or cannot run on this input here.
    """
    _check_input(x, "quantize")
    if dtype != "int8":
        raise ValueError(f"quantize: dtype must be 'int8', got {dtype!r}")
    ax = normalize_axis(axis, x.ndim, "quantize")
    impl = _backends.select("quantize", x, backend)
    return impl(x, ax)


def dequantize(q: Any, scale: Any, axis: int | None = None, backend: str | None = None) -> Any:
    """float32 ``q * scale`` broadcast along ``axis`` (the inverse of :func:`quantize`).

    ``q`` is int8 (numpy or torch), ``scale`` float32 with ``q.shape[axis]`` entries, or one
    value for ``axis=None``. Returns float32 of ``q``'s shape, kind and device.
    """
    if q is None or scale is None:
        raise TypeError("dequantize: q and scale must be arrays or tensors, not None")
    qname = str(q.dtype).replace("torch.", "") if is_torch_tensor(q) else getattr(getattr(q, "dtype", None), "name", None)
    if qname != "int8":
        raise TypeError(f"dequantize: q must be int8, got {qname}")
    ax = normalize_axis(axis, q.ndim, "dequantize")
    nch = 1 if ax is None else q.shape[ax]
    ssize = scale.numel() if is_torch_tensor(scale) else np.size(scale)
    if ssize != nch:
        raise ValueError(f"dequantize: scale has {ssize} entries, expected {nch} for axis={axis}")
    impl = _backends.select("dequantize", q, backend)
    return impl(q, scale, ax)


# ------------------------------------------------------------------ reference (numpy)
def _reference_np(x: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    xf = np.asarray(x, dtype=np.float32)
    if xf.size and not np.isfinite(xf).all():
        raise ValueError("quantize: input contains NaN or infinity; INT8 quantization needs finite values")
    if axis is None:
        amax = np.float32(np.max(np.abs(xf), initial=np.float32(0)))
        s = np.float32(amax / np.float32(127))
        scale = np.asarray(s if s >= _FLT_MIN else np.float32(1), dtype=np.float32)
        sb = scale
    else:
        others = tuple(d for d in range(xf.ndim) if d != axis)
        amax = np.max(np.abs(xf), axis=others, initial=np.float32(0)).astype(np.float32)
        q = (amax / np.float32(127)).astype(np.float32)
        scale = np.where(q >= _FLT_MIN, q, np.float32(1)).astype(np.float32)
        shape = [1] * xf.ndim
        shape[axis] = -1
        sb = scale.reshape(shape)
    q = np.clip(np.rint(xf / sb), -127, 127).astype(np.int8)
    return np.ascontiguousarray(q), scale


def _to_like(x: Any, *arrays: np.ndarray) -> tuple[Any, ...]:
    if is_torch_tensor(x):
        import torch

        return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    return arrays


@register("quantize", "reference", ("cpu",))
def _quantize_reference(x: Any, axis: int | None) -> tuple[Any, Any]:
    q, s = _reference_np(as_numpy(x), axis)
    return _to_like(x, q, s)


@register("dequantize", "reference", ("cpu",))
def _dequantize_reference(q: Any, scale: Any, axis: int | None) -> Any:
    qn = as_numpy(q)
    s = np.asarray(as_numpy(scale), dtype=np.float32)
    if axis is not None:
        shape = [1] * qn.ndim
        shape[axis] = -1
        s = s.reshape(shape)
    out = qn.astype(np.float32) * s.reshape(s.shape if axis is not None else ())
    return _to_like(q, np.asarray(out, dtype=np.float32))[0]


# ------------------------------------------------------------------ cpu (C++)
@register("quantize", "cpu", ("cpu",))
def _quantize_cpu(x: Any, axis: int | None) -> tuple[Any, Any]:
    xn = as_numpy(x)
    q3, scales = _core().quantize_int8(numpy_view3(xn, axis))
    q = q3.reshape(xn.shape)
    s = scales.reshape(()) if axis is None else scales
    return _to_like(x, q, s)


@register("dequantize", "cpu", ("cpu",))
def _dequantize_cpu(q: Any, scale: Any, axis: int | None) -> Any:
    qn = np.ascontiguousarray(as_numpy(q))
    s = np.ascontiguousarray(np.asarray(as_numpy(scale), dtype=np.float32).reshape(-1))
    shape = qn.shape
    if axis is None:
        q3 = qn.reshape(1, 1, -1)
    else:
        outer = int(np.prod(shape[:axis], dtype=np.int64))
        inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
        q3 = qn.reshape(outer, shape[axis], inner)
    out = _core().dequantize_int8(q3, s).reshape(shape)
    return _to_like(q, out)[0]


# ------------------------------------------------------------------ cuda (kernels/cuda)
def _torch_dtype_code(x: Any) -> int:
    import torch

    return {torch.float32: 0, torch.float16: 1}[x.dtype]


@register("quantize", "cuda", ("cuda",))
def _quantize_cuda(x: Any, axis: int | None) -> tuple[Any, Any]:
    import torch

    cuda = _cuda_module()
    x3 = torch_view3(x, axis)
    o, c, i = x3.shape
    so, sc, si = x3.stride()
    q = torch.empty((o, c, i), dtype=torch.int8, device=x.device)
    scales = torch.empty((c,), dtype=torch.float32, device=x.device)
    with torch.cuda.device(x.device):
        stream = torch.cuda.current_stream(x.device).cuda_stream
        cuda.quantize_int8(x3.data_ptr(), _torch_dtype_code(x), o, c, i, so, sc, si, q.data_ptr(), scales.data_ptr(), stream)
    return q.reshape(x.shape), (scales.reshape(()) if axis is None else scales)


@register("dequantize", "cuda", ("cuda",))
def _dequantize_cuda(q: Any, scale: Any, axis: int | None) -> Any:
    import torch

    cuda = _cuda_module()
    qc = q.contiguous()
    s = scale.to(device=q.device, dtype=torch.float32).reshape(-1).contiguous()
    shape = tuple(qc.shape)
    if axis is None:
        o, c, i = 1, 1, qc.numel()
    else:
        o = int(np.prod(shape[:axis], dtype=np.int64))
        c = shape[axis]
        i = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    out = torch.empty(shape, dtype=torch.float32, device=q.device)
    with torch.cuda.device(q.device):
        stream = torch.cuda.current_stream(q.device).cuda_stream
        cuda.dequantize_int8(qc.data_ptr(), s.data_ptr(), o, c, i, out.data_ptr(), stream)
    return out


# ------------------------------------------------------------------ triton (kernels/triton)
@register("quantize", "triton", ("cuda",))
def _quantize_triton(x: Any, axis: int | None) -> tuple[Any, Any]:
    from ..kernels import quant as tq

    x3 = torch_view3(x, axis)
    q, scales = tq.quantize_int8(x3)
    return q.reshape(x.shape), (scales.reshape(()) if axis is None else scales)


@register("dequantize", "triton", ("cuda",))
def _dequantize_triton(q: Any, scale: Any, axis: int | None) -> Any:
    import torch

    from ..kernels import quant as tq

    qc = q.contiguous()
    s = scale.to(device=q.device, dtype=torch.float32).reshape(-1).contiguous()
    shape = tuple(qc.shape)
    if axis is None:
        o, c, i = 1, 1, qc.numel()
    else:
        o = int(np.prod(shape[:axis], dtype=np.int64))
        c, i = shape[axis], int(np.prod(shape[axis + 1 :], dtype=np.int64))
    return tq.dequantize_int8(qc.reshape(o, c, i), s).reshape(shape)
