"""Fused multi-head attention for inference on the CPU (float32).

:func:`attention` computes ``softmax(scale * q k^T + mask) v`` for all batches and heads in one
native call, without materialising the ``[B, H, T, T]`` scores, and returns the ``[B, T, H, D]``
layout that the output projection reads (``.reshape(B, T, H * D)`` is free). It takes numpy
arrays or CPU torch tensors (views such as ``x.view(B, T, H, D).transpose(1, 2)`` included:
only the head dimension has to be contiguous). :func:`pyperfcore.quant.optimize` switches the
attention of the encoders in :mod:`pyperfcore.quant.bert` to it.

Policy: a query whose keys are all masked gets zeros (as torch's CPU
``scaled_dot_product_attention``, so an optimized model answers as the original); NaN or infinity in q/k/v reach the rows they touch (the INT8
layer after attention then raises on them); the mask must be 0 or -inf (or finite offsets).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._backends import is_torch_tensor
from .._runtime import _core

__all__ = ["attention"]


def _as_f32(a: Any, what: str) -> np.ndarray:
    if is_torch_tensor(a):
        if a.device.type != "cpu":
            raise ValueError(f"attention: {what} must be on the CPU, got {a.device}")
        if str(a.dtype) != "torch.float32":
            raise TypeError(f"attention: {what} must be float32, got {a.dtype}")
        a = a.detach().numpy()
    if not isinstance(a, np.ndarray):
        raise TypeError(f"attention: {what} must be a numpy array or a torch tensor, got {type(a).__name__}")
    if a.dtype != np.float32:
        raise TypeError(f"attention: {what} must be float32, got {a.dtype}")
    return a


def attention(q: Any, k: Any, v: Any, mask: Any = None, *, scale: float | None = None, threads: int = 0) -> Any:
    """Scaled dot-product attention over ``[B, H, T, D]`` float32 q, k, v.

    Parameters
    ----------
    q, k, v
        Same shape ``[batch, heads, seq, head_dim]``; the last dimension contiguous.
    mask
        Additive per-key mask ``[batch, seq]`` (0 to attend, -inf to drop a padding key), or
        ``[batch, 1, 1, seq]`` as BERT-style models build it; ``None`` attends to every key.
    scale
        Multiplies the scores; default ``1 / sqrt(head_dim)``.
    threads
        Worker threads (0: ``pyperfcore.get_num_threads()``); batches x heads are split among them.

    Returns
    -------
    ``[batch, seq, heads, head_dim]`` float32, of the input's kind (numpy or torch).
    """
    qn, kn, vn = _as_f32(q, "q"), _as_f32(k, "k"), _as_f32(v, "v")
    if qn.ndim != 4:
        raise ValueError(f"attention: q must be [batch, heads, seq, head_dim], got shape {qn.shape}")
    if kn.shape != qn.shape or vn.shape != qn.shape:
        raise ValueError(f"attention: q, k, v shapes differ: {qn.shape}, {kn.shape}, {vn.shape}")
    b, _, t, d = qn.shape
    mn = None
    if mask is not None:
        mn = _as_f32(mask, "mask")
        if mn.ndim == 4 and mn.shape[1:3] == (1, 1):
            mn = mn[:, 0, 0, :]
        if mn.shape != (b, t):
            raise ValueError(f"attention: mask must be [batch, seq] = {(b, t)} (or [batch, 1, 1, seq]), got {mn.shape}")
        if np.isnan(mn).any() or (mn == np.inf).any():
            raise ValueError("attention: mask must not hold NaN or +inf (0 keeps a key, -inf drops it)")
    s = 1.0 / math.sqrt(d) if scale is None else float(scale)
    if not math.isfinite(s):
        raise ValueError(f"attention: scale must be finite, got {scale!r}")
    out = _core().attention(qn, kn, vn, mn, s, int(threads))
    if is_torch_tensor(q):
        import torch

        return torch.from_numpy(out)
    return out
