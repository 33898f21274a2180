"""Embedding post-processing: L2 normalization and INT8 compression (one scale per row)."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _backends
from .._backends import register
from .._runtime import _core
from ._common import dtype_name, like, to_numpy
from ._gpu import check_kw, launch

__all__ = ["l2_normalize", "compress_embeddings", "decompress_embeddings"]


def _check(x: Any, what: str) -> None:
    if x is None:
        raise TypeError(f"{what}: x is None")
    if not hasattr(x, "ndim") or dtype_name(x) != "float32":
        raise TypeError(f"{what}: embeddings must be a float32 array or tensor, got "
                        f"{dtype_name(x) if hasattr(x, 'dtype') else type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{what}: embeddings must be 2-D [rows, dim], got {x.ndim}-D")


def l2_normalize(x: Any, eps: float = 1e-12, backend: str | None = None, *, check_finite: bool = True) -> Any:
    """``x / max(||x||_2, eps)`` per row (``torch.nn.functional.normalize`` semantics), float32.

    NaN or infinity: ValueError (on the GPU backends at the cost of one synchronization).
    ``check_finite=False`` skips that synchronization on the GPU backends: such a row then comes
    back as NaN and nothing is raised (the CPU backends raise either way)."""
    _check(x, "l2_normalize")
    if not eps >= 0:
        raise ValueError("l2_normalize: eps must be >= 0")
    return _backends.select("l2_normalize", x, backend)(x, float(eps), **check_kw(check_finite, x, backend))


def compress_embeddings(x: Any, normalize: bool = True, eps: float = 1e-12,
                        backend: str | None = None, *, check_finite: bool = True) -> tuple[Any, Any]:
    """Optionally L2-normalize each row, then quantize it to int8 with one scale per row.

    Returns ``(q int8 [rows, dim], scales float32 [rows])``: ``scale = amax / 127`` (1 for a zero
    row), ``q = clip(round_half_even(v / scale), -127, 127)``. Inner products of compressed
    unit vectors stay within about 1% of the float ones at dim >= 64. NaN or infinity as in
    :func:`l2_normalize`; with ``check_finite=False`` a bad GPU row has scale NaN and codes 0.
    """
    _check(x, "compress_embeddings")
    return _backends.select("compress_embeddings", x, backend)(x, bool(normalize), float(eps),
                                                                **check_kw(check_finite, x, backend))


def decompress_embeddings(q: Any, scales: Any) -> Any:
    """float32 ``q * scales[:, None]``."""
    qn = to_numpy(q)
    if qn.dtype != np.int8 or qn.ndim != 2:
        raise TypeError("decompress_embeddings: q must be int8 [rows, dim]")
    s = np.asarray(to_numpy(scales), dtype=np.float32).reshape(-1)
    if s.size != qn.shape[0]:
        raise ValueError(f"decompress_embeddings: {s.size} scales for {qn.shape[0]} rows")
    return like(q, qn.astype(np.float32) * s[:, None])[0]


def _ref_in(x: Any, what: str) -> np.ndarray:
    a = to_numpy(x).astype(np.float32)
    if not np.isfinite(a).all():
        raise ValueError(f"{what}: embeddings contain NaN or infinity")
    return a


@register("l2_normalize", "reference", ("cpu",))
def _l2_reference(x: Any, eps: float) -> Any:
    a = _ref_in(x, "l2_normalize")
    n = np.sqrt((a.astype(np.float64) ** 2).sum(axis=1, keepdims=True)).astype(np.float32)
    return like(x, (a / np.maximum(n, np.float32(eps))).astype(np.float32))[0]


@register("compress_embeddings", "reference", ("cpu",))
def _compress_reference(x: Any, normalize: bool, eps: float) -> tuple[Any, Any]:
    a = _ref_in(x, "compress_embeddings")
    if normalize:
        n = np.sqrt((a.astype(np.float64) ** 2).sum(axis=1, keepdims=True)).astype(np.float32)
        a = (a / np.maximum(n, np.float32(eps))).astype(np.float32)
    amax = np.max(np.abs(a), axis=1, initial=np.float32(0)).astype(np.float32)
    s = np.where(amax > 0, amax / np.float32(127), np.float32(1)).astype(np.float32)
    q = np.clip(np.rint(a / s[:, None]), -127, 127).astype(np.int8)
    return like(x, q, s)


def _cpu_in(x: Any) -> np.ndarray:
    a = to_numpy(x)
    if a.shape[1] > 1 and a.strides[1] != 4:
        a = np.ascontiguousarray(a)
    return a


@register("l2_normalize", "cpu", ("cpu",))
def _l2_cpu(x: Any, eps: float) -> Any:
    return like(x, _core().prepost_l2_normalize(_cpu_in(x), eps))[0]


@register("compress_embeddings", "cpu", ("cpu",))
def _compress_cpu(x: Any, normalize: bool, eps: float) -> tuple[Any, Any]:
    q, s = _core().prepost_compress_embeddings(_cpu_in(x), normalize, eps)
    return like(x, q, s)


@register("l2_normalize", "triton", ("cuda",))
def _l2_triton(x: Any, eps: float, check_finite: bool = False) -> Any:
    from ..kernels import prepost as tk

    return tk.l2_normalize(x, eps, check_finite)


@register("compress_embeddings", "triton", ("cuda",))
def _compress_triton(x: Any, normalize: bool, eps: float, check_finite: bool = False) -> tuple[Any, Any]:
    from ..kernels import prepost as tk

    return tk.compress_embeddings(x, normalize, eps, check_finite)


_torch: Any = None
_cuda: Any = None


def _embed_cuda(x: Any, eps: float, normalize: bool, l2: bool, quant: bool, what: str,
                check: bool) -> tuple[Any, Any, Any]:
    """One warp per row (kernels/cuda/prepost_post.cu), the CPU backend's float32 operations in
    its order: equal to it bit for bit. Synchronizes only with ``check`` (NaN / infinity)."""
    global _torch, _cuda
    if _cuda is None:
        import torch

        from .._runtime import _cuda_module

        _torch, _cuda = torch, _cuda_module()
    torch = _torch
    rows, dim = x.shape
    dev = x.device
    out = torch.empty((rows, dim), dtype=torch.float32, device=dev) if l2 else None
    q = torch.empty((rows, dim), dtype=torch.int8, device=dev) if quant else None
    sc = torch.empty(rows, dtype=torch.float32, device=dev) if quant else None
    if rows == 0 or dim == 0:  # nothing to read: no launch (a zero-width row's scale is 1)
        if quant and rows:
            sc.fill_(1.0)
        return out, q, sc
    if dim > 1 and x.stride(1) != 1:
        x = x.contiguous()
    bad = torch.empty(rows, dtype=torch.int32, device=dev) if check else None
    launch(x, _cuda.prepost_embed, x.data_ptr(), rows, dim, x.stride(0), eps, normalize,
           out.data_ptr() if l2 else 0, q.data_ptr() if quant else 0, sc.data_ptr() if quant else 0,
           bad.data_ptr() if check else 0)
    if check and bool(bad.any()):
        raise ValueError(f"{what}: embeddings contain NaN or infinity")
    return out, q, sc


@register("l2_normalize", "cuda", ("cuda",))
def _l2_cuda(x: Any, eps: float, check_finite: bool = False) -> Any:
    return _embed_cuda(x, eps, True, True, False, "l2_normalize", check_finite)[0]


@register("compress_embeddings", "cuda", ("cuda",))
def _compress_cuda(x: Any, normalize: bool, eps: float, check_finite: bool = False) -> tuple[Any, Any]:
    _, q, sc = _embed_cuda(x, eps, normalize, False, True, "compress_embeddings", check_finite)
    return q, sc
