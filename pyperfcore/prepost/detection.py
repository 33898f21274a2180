"""Detection post-processing: batched (per-class) non-maximum suppression."""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _backends
from .._backends import register
from .._runtime import _core
from ._common import dtype_name, like, to_numpy
from ._gpu import launch

__all__ = ["batched_nms"]


def batched_nms(boxes: Any, scores: Any, idxs: Any, iou_threshold: float, backend: str | None = None) -> Any:
    """Non-maximum suppression per category, as ``torchvision.ops.batched_nms`` defines it.

    Parameters
    ----------
    boxes : float32 [n, 4] as (x1, y1, x2, y2)
    scores : float32 [n]
    idxs : integer [n], the category of each box; boxes of different categories never
        suppress each other.
    iou_threshold : float; a box is discarded when its IoU with a kept box of its category is
        strictly greater.

    Returns
    -------
    int64 indices of the kept boxes, by decreasing score (ties: lower index first; torchvision
    leaves tie order unspecified). IoU is computed in float32 with torchvision's expression.
    """
    for name, v in (("boxes", boxes), ("scores", scores), ("idxs", idxs)):
        if v is None or not hasattr(v, "shape"):
            raise TypeError(f"batched_nms: {name} must be an array or tensor")
    if dtype_name(boxes) != "float32" or dtype_name(scores) != "float32":
        raise TypeError("batched_nms: boxes and scores must be float32")
    if not dtype_name(idxs).startswith(("int", "uint")):
        raise TypeError(f"batched_nms: idxs must be integers, got {dtype_name(idxs)}")
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"batched_nms: boxes must be [n, 4], got {tuple(boxes.shape)}")
    n = boxes.shape[0]
    if tuple(scores.shape) != (n,) or tuple(idxs.shape) != (n,):
        raise ValueError("batched_nms: scores and idxs must be 1-D with one entry per box")
    if not np.isfinite(iou_threshold) and not np.isinf(iou_threshold):
        raise ValueError("batched_nms: iou_threshold is NaN")
    return _backends.select("batched_nms", boxes, backend)(boxes, scores, idxs, float(iou_threshold))


@register("batched_nms", "reference", ("cpu",))
def _nms_reference(boxes: Any, scores: Any, idxs: Any, thr: float) -> Any:
    b, s, c = to_numpy(boxes), to_numpy(scores), to_numpy(idxs).astype(np.int64)
    if not np.isfinite(b).all() or np.isnan(s).any():
        raise ValueError("batched_nms: boxes or scores contain NaN or infinity")
    order = np.lexsort((np.arange(len(s)), -s))
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    keep: list[int] = []
    for i in order:
        ok = True
        for j in keep:
            if c[j] != c[i]:
                continue
            w = max(np.float32(0), min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0]))
            h = max(np.float32(0), min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1]))
            inter = np.float32(w * h)
            if np.float32(inter / np.float32(area[j] + area[i] - inter)) > thr:
                ok = False
                break
        if ok:
            keep.append(int(i))
    return like(boxes, np.asarray(keep, dtype=np.int64))[0]


@register("batched_nms", "cpu", ("cpu",))
def _nms_cpu(boxes: Any, scores: Any, idxs: Any, thr: float) -> Any:
    b = np.ascontiguousarray(to_numpy(boxes))
    s = np.ascontiguousarray(to_numpy(scores))
    c = np.ascontiguousarray(to_numpy(idxs), dtype=np.int64)
    return like(boxes, _core().prepost_batched_nms(b, s, c, thr))[0]


_NMS_MASK_LIMIT = 2**31  # bytes of the n x ceil(n / 64) uint64 bitmask (about 131,000 boxes)


_torch: Any = None
_cuda: Any = None


@register("batched_nms", "cuda", ("cuda",))
def _nms_cuda(boxes: Any, scores: Any, idxs: Any, thr: float) -> Any:
    """Sort by (class, score descending, index) with torch, build the IoU bitmask of each class's
    run of boxes and pick the kept ones in one warp (kernels/cuda/prepost_post.cu), then order the
    kept indices by score (ties: lower index). The threshold is compared as float32, as on the
    CPU backend. Synchronizes once: the number of kept boxes and the NaN / infinity flag (set by
    the bitmask kernel) come back together, so NMS always raises on bad values."""
    global _torch, _cuda
    if _cuda is None:
        import torch

        from .._runtime import _cuda_module

        _torch, _cuda = torch, _cuda_module()
    torch = _torch
    dev = boxes.device
    if scores.device != dev or idxs.device != dev:
        raise ValueError("batched_nms: boxes, scores and idxs must be on the same device")
    n = int(boxes.shape[0])
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=dev)
    cb = (n + 63) // 64
    if n * cb * 8 > _NMS_MASK_LIMIT:
        raise ValueError(f"batched_nms: {n} boxes need a {n * cb * 8 / 2**30:.1f} GiB IoU bitmask on the GPU (limit "
                         f"{_NMS_MASK_LIMIT / 2**30:.0f} GiB); filter by score first or use backend='cpu'")
    b = boxes.contiguous()
    s = scores.contiguous()
    c = idxs if idxs.dtype == torch.int64 else idxs.to(torch.int64)
    order = torch.sort(s, descending=True, stable=True).indices  # ties: lower index first
    cs, rank = torch.sort(c[order], stable=True)  # by class, then score rank
    perm = order[rank]
    bs = b[perm]
    ends = torch.searchsorted(cs, cs, right=True)
    # One scratch allocation: bitmask, suppression words (+1: the NaN flag), kept positions, counts.
    ws = torch.empty(n * cb + cb + 1 + n + 1, dtype=torch.int64, device=dev)
    mask, removed = ws[:n * cb], ws[n * cb:n * cb + cb + 1]
    keep, count = ws[n * cb + cb + 1:n * cb + cb + 1 + n], ws[n * cb + cb + 1 + n:]
    launch(b, _cuda.prepost_nms, bs.data_ptr(), s.data_ptr(), cs.data_ptr(), ends.data_ptr(), n, thr,
           mask.data_ptr(), removed.data_ptr(), keep.data_ptr(), count.data_ptr())
    nkeep, nbad = count.view(torch.int32).tolist()
    if nbad:
        raise ValueError("batched_nms: boxes or scores contain NaN or infinity")
    # keep holds positions in perm; rank[p] is that box's place in the score order, so sorting
    # the ranks gives score descending, ties by index (order is a stable sort).
    return order[torch.sort(rank[keep[:nkeep]]).values]
