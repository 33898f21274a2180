"""Classification post-processing: softmax top-k, softmax / log-softmax, argmax with labels,
multi-label thresholds in logit space; int8 logits are dequantized in the same pass.

Ordering rule everywhere: descending value, ties broken by the lower class index (numpy's
``argmax`` rule extended to k > 1).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .. import _backends
from .._backends import register
from .._runtime import _core
from ._common import check_logits, dequantized, like, scale_arg, to_numpy
from ._gpu import check_kw, launch

__all__ = ["softmax_topk", "softmax", "log_softmax", "argmax", "sigmoid_threshold"]


def _rows(x: Any) -> tuple[Any, bool]:
    return (x.reshape(1, -1), True) if x.ndim == 1 else (x, False)


# The lean path: a 2-D numpy array with contiguous classes that the C++ kernel takes as it is
# (float32 or float16 without scale, int8 with one scale as a number), no backend named, goes
# straight to the native call, which checks k, NaN, +inf and the scale itself. It skips the
# generic checks and backend selection, which cost several microseconds (a tenth of the kernel at
# [256, 1000]). The choice it makes is the one `select` makes for such an input (cpu when the
# native module is built).
_LEAN_FLOATS = (np.dtype(np.float32), np.dtype(np.float16))
_I8 = np.dtype(np.int8)
_fast_core: Any = None


def _lean(x: Any, scale: Any, backend: Any) -> tuple[Any, Any]:
    """(native module, scale list or None) when x can take the lean path, else (None, None)."""
    global _fast_core
    if backend is not None or type(x) is not np.ndarray or x.ndim != 2:
        return None, None
    dt = x.dtype
    if dt in _LEAN_FLOATS:
        if scale is not None:
            return None, None
        sc = None
    elif dt == _I8 and isinstance(scale, (float, int, np.floating, np.integer)) and not isinstance(scale, bool):
        sc = [float(scale)]
    else:
        return None, None
    if x.strides[1] != x.itemsize and x.shape[1] > 1:
        return None, None
    if _fast_core is None:
        if _backends.available("softmax_topk", "cpu") is not None:
            return None, None
        _fast_core = _core()
    return _fast_core, sc


# The GPU lean path: a 2-D float32 / float16 CUDA tensor without scale, backend None or "cuda",
# goes straight to the cuda launcher (which checks the rest: contiguity, k) once the cuda backend
# has been used and found available. It skips the generic checks and selection (several us of
# host time per call, a third of the kernel's time at [256, 1000] on an H100).
_GPU_LEAN_DTYPES: tuple = ()


def _gpu_lean(x: Any, scale: Any, backend: Any) -> bool:
    return (bool(_GPU_LEAN_DTYPES) and scale is None and (backend is None or backend == "cuda")
            and type(x) is _torch.Tensor and x.is_cuda and x.ndim == 2 and x.dtype in _GPU_LEAN_DTYPES)


def softmax_topk(logits: Any, k: int, scale: Any = None, backend: str | None = None, *,
                 check_finite: bool = True) -> tuple[Any, Any]:
    """The k most probable classes of each row with their full-softmax probabilities.

    Parameters
    ----------
    logits : float32 / float16 [rows, classes] or [classes], or int8 with ``scale``
    k : int, 0 <= k <= classes
    scale : float or [classes] float, only for int8 logits (``logit = q * scale``)

    Returns
    -------
    (values float32 [rows, k], indices int64 [rows, k]), descending, ties by lower index;
    ``values = exp(logit - logsumexp(row))``. 1-D input gives 1-D results.

    Raises
    ------
    ValueError
        k out of range, NaN or +inf logits, a row that is all -inf, int8 without scale.
        On the GPU backends (cuda, triton) this check costs one synchronization per call;
        ``check_finite=False`` skips it for hot paths that accept the consequence: such a row
        then comes back poisoned (values NaN, indices -1) and nothing is raised. The CPU
        backends always raise.
    """
    core, sc = _lean(logits, scale, backend)
    if core is not None and type(k) is int and 0 <= k <= logits.shape[1]:
        return core.prepost_topk(logits, k, True, sc)
    if _gpu_lean(logits, scale, backend) and type(k) is int and 0 <= k <= logits.shape[1]:
        return _topk_cuda(logits, k, None, True, bool(check_finite))
    check_logits(logits, "softmax_topk")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"softmax_topk: k must be an int, got {type(k).__name__}")
    ncls = logits.shape[-1]
    if not 0 <= k <= ncls:
        raise ValueError(f"softmax_topk: k = {k} but the logits have {ncls} classes (need 0 <= k <= {ncls})")
    s = scale_arg(logits, scale, "softmax_topk")
    x, flat = _rows(logits)
    v, i = _backends.select("softmax_topk", x, backend)(x, int(k), s, True, **check_kw(check_finite, x, backend))
    return (v[0], i[0]) if flat else (v, i)


def softmax(logits: Any, scale: Any = None, backend: str | None = None, *, check_finite: bool = True) -> Any:
    """Row-wise softmax as float32 (int8 logits dequantized by ``scale`` first).

    NaN / +inf / an all -inf row: ValueError (on the GPU one synchronization; with
    ``check_finite=False`` the row comes back NaN instead, as in :func:`softmax_topk`)."""
    core, sc = _lean(logits, scale, backend)
    if core is not None:
        return core.prepost_softmax(logits, False, sc)
    check_logits(logits, "softmax")
    s = scale_arg(logits, scale, "softmax")
    x, flat = _rows(logits)
    out = _backends.select("softmax", x, backend)(x, s, False, **check_kw(check_finite, x, backend))
    return out[0] if flat else out


def log_softmax(logits: Any, scale: Any = None, backend: str | None = None, *, check_finite: bool = True) -> Any:
    """Row-wise ``x - logsumexp(x)`` as float32. Bad values as :func:`softmax`."""
    core, sc = _lean(logits, scale, backend)
    if core is not None:
        return core.prepost_softmax(logits, True, sc)
    check_logits(logits, "log_softmax")
    s = scale_arg(logits, scale, "log_softmax")
    x, flat = _rows(logits)
    out = _backends.select("softmax", x, backend)(x, s, True, **check_kw(check_finite, x, backend))
    return out[0] if flat else out


def argmax(logits: Any, labels: Sequence[Any] | np.ndarray | None = None, scale: Any = None,
           backend: str | None = None, *, check_finite: bool = True) -> Any:
    """Index of the largest logit of each row (first on ties), or its label when ``labels`` is given.

    ``labels`` has one entry per class; the result is ``np.asarray(labels)[indices]``.
    NaN / +inf: ValueError; on the GPU backends with ``check_finite=False``, index -1 instead (as softmax_topk);
    with ``labels`` the values are always checked (the labels are looked up on the host anyway).
    """
    core, sc = _lean(logits, scale, backend)
    if core is not None and labels is None and logits.shape[1] > 0:
        return core.prepost_topk(logits, 1, False, sc)[1][:, 0]
    check_logits(logits, "argmax")
    if logits.shape[-1] == 0:
        raise ValueError("argmax: logits have no classes")
    if labels is not None and len(labels) != logits.shape[-1]:
        raise ValueError(f"argmax: {len(labels)} labels for {logits.shape[-1]} classes")
    s = scale_arg(logits, scale, "argmax")
    x, flat = _rows(logits)
    kw = check_kw(check_finite or labels is not None, x, backend)
    _, idx = _backends.select("softmax_topk", x, backend)(x, 1, s, False, **kw)
    idx = idx[:, 0]
    if labels is not None:
        host = idx.cpu() if getattr(idx, "is_cuda", False) else idx
        return np.asarray(labels)[to_numpy(host)][0] if flat else np.asarray(labels)[to_numpy(host)]
    return idx[0] if flat else idx


def sigmoid_threshold(logits: Any, threshold: float = 0.5, scale: Any = None, backend: str | None = None) -> Any:
    """Multi-label decision ``sigmoid(logit) > threshold`` as a bool mask, decided in logit space
    (``logit > log(t / (1 - t))``) so no sigmoid is computed. ``threshold`` in [0, 1]."""
    check_logits(logits, "sigmoid_threshold")
    t = float(threshold)
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"sigmoid_threshold: threshold must be in [0, 1], got {threshold}")
    lt = -math.inf if t == 0.0 else (math.inf if t == 1.0 else math.log(t) - math.log1p(-t))
    s = scale_arg(logits, scale, "sigmoid_threshold")
    x, flat = _rows(logits)
    out = _backends.select("sigmoid_threshold", x, backend)(x, lt, s)
    return out[0] if flat else out


# ------------------------------------------------------------------ reference (numpy)
def _ref_rows(x: Any, s: np.ndarray | None) -> np.ndarray:
    v = dequantized(to_numpy(x), s)
    if np.isnan(v).any():
        raise ValueError("logits contain NaN")
    return v


def _ref_lse(v: np.ndarray) -> np.ndarray:
    if (v == np.inf).any():
        raise ValueError("logits contain +inf; softmax is undefined")
    if v.shape[1] and (v.max(axis=1, initial=-np.inf) == -np.inf).any():
        raise ValueError("a row of logits is all -inf; softmax is undefined")
    m = v.max(axis=1, keepdims=True, initial=-np.inf).astype(np.float64)
    return m + np.log(np.exp(v - m).sum(axis=1, keepdims=True))


@register("softmax_topk", "reference", ("cpu",))
def _topk_reference(x: Any, k: int, s: np.ndarray | None, soft: bool) -> tuple[Any, Any]:
    v = _ref_rows(x, s)
    if (v == np.inf).any():
        raise ValueError("logits contain +inf")
    order = np.argsort(-v, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(v, order, axis=1)
    if soft and v.shape[0]:
        top = np.exp(top - _ref_lse(v)).astype(np.float32)
    return like(x, top.astype(np.float32), order.astype(np.int64))


@register("softmax", "reference", ("cpu",))
def _softmax_reference(x: Any, s: np.ndarray | None, log: bool) -> Any:
    v = _ref_rows(x, s)
    if v.size == 0:
        return like(x, v.astype(np.float32))[0]
    lse = _ref_lse(v)
    out = (v - lse) if log else np.exp(v - lse)
    return like(x, out.astype(np.float32))[0]


@register("sigmoid_threshold", "reference", ("cpu",))
def _sigmoid_reference(x: Any, lt: float, s: np.ndarray | None) -> Any:
    v = _ref_rows(x, s)
    return like(x, v.astype(np.float64) > lt)[0]


# ------------------------------------------------------------------ cpu (C++)
def _cpu_in(x: Any) -> np.ndarray:
    a = to_numpy(x)
    if a.shape[1] > 1 and a.strides[1] != a.itemsize:
        a = np.ascontiguousarray(a)
    return a


@register("softmax_topk", "cpu", ("cpu",))
def _topk_cpu(x: Any, k: int, s: np.ndarray | None, soft: bool) -> tuple[Any, Any]:
    v, i = _core().prepost_topk(_cpu_in(x), k, soft, None if s is None else s.tolist())
    return like(x, v, i)


@register("softmax", "cpu", ("cpu",))
def _softmax_cpu(x: Any, s: np.ndarray | None, log: bool) -> Any:
    return like(x, _core().prepost_softmax(_cpu_in(x), log, None if s is None else s.tolist()))[0]


@register("sigmoid_threshold", "cpu", ("cpu",))
def _sigmoid_cpu(x: Any, lt: float, s: np.ndarray | None) -> Any:
    return like(x, _core().prepost_sigmoid_threshold(_cpu_in(x), lt, None if s is None else s.tolist()))[0]


# ------------------------------------------------------------------ GPU (triton / cuda)
def _gpu_scale(x: Any, s: np.ndarray | None) -> Any:
    if s is None:
        return None
    import torch

    return torch.from_numpy(np.ascontiguousarray(s, dtype=np.float32)).to(x.device)


@register("softmax_topk", "triton", ("cuda",))
def _topk_triton(x: Any, k: int, s: np.ndarray | None, soft: bool, check_finite: bool = False) -> tuple[Any, Any]:
    from ..kernels import prepost as tk

    return tk.topk_rows(x, k, _gpu_scale(x, s), soft, check_finite)


@register("softmax", "triton", ("cuda",))
def _softmax_triton(x: Any, s: np.ndarray | None, log: bool, check_finite: bool = False) -> Any:
    from ..kernels import prepost as tk

    return tk.softmax_rows(x, _gpu_scale(x, s), log, check_finite)


@register("sigmoid_threshold", "triton", ("cuda",))
def _sigmoid_triton(x: Any, lt: float, s: np.ndarray | None) -> Any:
    from ..kernels import prepost as tk

    return tk.sigmoid_threshold(x, _float_threshold(lt), _gpu_scale(x, s))


def _float_threshold(lt: float) -> float:
    """The largest float32 <= lt: for float32 x, ``x > lt`` exactly iff ``x > that``."""
    if math.isinf(lt):
        return lt
    f = np.float32(lt)
    if float(f) > lt:
        f = np.nextafter(f, np.float32(-np.inf))
    return float(f)


_BAD = {1: "logits contain NaN", 2: "logits contain +inf; softmax is undefined",
        3: "a row of logits is all -inf; softmax is undefined"}


_torch: Any = None
_cuda: Any = None
_CODES: dict[Any, int] = {}


@register("softmax_topk", "cuda", ("cuda",))
def _topk_cuda(x: Any, k: int, s: np.ndarray | None, soft: bool, check_finite: bool = False) -> tuple[Any, Any]:
    """One block per row (kernels/cuda/prepost.cu). No synchronization unless ``check_finite``:
    bad rows are poisoned (NaN, -1) by the kernel."""
    global _torch, _cuda
    if _cuda is None:
        import torch

        from .._runtime import _cuda_module

        _torch, _cuda = torch, _cuda_module()
        _CODES.update({torch.float32: 0, torch.float16: 1, torch.int8: 2})
        global _GPU_LEAN_DTYPES
        if _backends.available("softmax_topk", "cuda") is None:  # it is: we are running on it
            _GPU_LEAN_DTYPES = (torch.float32, torch.float16)
    torch = _torch
    rows, n = x.shape
    dev = x.device
    v = torch.empty((rows, k), dtype=torch.float32, device=dev)
    i = torch.empty((rows, k), dtype=torch.int64, device=dev)
    if rows == 0 or n == 0:
        return v, i
    if n > 1 and x.stride(1) != 1:
        x = x.contiguous()
    sc = None if s is None else _gpu_scale(x, s)
    bad = torch.empty(rows, dtype=torch.int32, device=dev) if check_finite else None
    launch(x, _cuda.prepost_topk, x.data_ptr(), _CODES[x.dtype], rows, n, x.stride(0),
           0 if sc is None else sc.data_ptr(), 0 if sc is None else sc.numel(), k, soft, v.data_ptr(), i.data_ptr(),
           0 if bad is None else bad.data_ptr())
    if bad is not None:
        worst = int(bad.max())  # synchronizes: bad input is an error at the call site
        if worst:
            raise ValueError(_BAD[1 if bool((bad == 1).any()) else worst])
    return v, i
