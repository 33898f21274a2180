"""Calibration: activation ranges from a set of batches, and SmoothQuant smoothing factors.

Range methods (symmetric, a clipping threshold ``amax`` for ``scale = amax / 127``):

- ``minmax``: the largest ``|x|`` seen.
- ``percentile``: the given percentile of ``|x|`` (99.99 by default).
- ``entropy``: TensorRT-style KL-divergence minimisation between the 2048-bin histogram of ``|x|``
  and its 128-level quantization, over candidate thresholds.
- ``mse``: the threshold minimising the mean squared quantize-dequantize error over the histogram.

An empty calibration set, NaN or inf are a ``ValueError``.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from .._backends import is_torch_tensor

__all__ = ["calibrate", "channel_amax", "smooth_factors", "SmoothQuant", "METHODS"]

METHODS = ("minmax", "percentile", "entropy", "mse")


def _as_np(x: Any) -> np.ndarray:
    if is_torch_tensor(x):
        x = x.detach().cpu().float().numpy()
    a = np.asarray(x, dtype=np.float32)
    if a.size and not np.isfinite(a).all():
        raise ValueError("calibration data contains NaN or infinity")
    return a


def _collect(batches: Iterable[Any]) -> np.ndarray:
    if batches is None:
        raise TypeError("calibration batches are None")
    parts = [np.abs(_as_np(b)).reshape(-1) for b in batches]
    if not parts or sum(p.size for p in parts) == 0:
        raise ValueError("the calibration set is empty; pass at least one non-empty batch")
    return np.concatenate(parts)


def _histogram(a: np.ndarray, bins: int) -> tuple[np.ndarray, float]:
    amax = float(a.max())
    if amax == 0.0:
        return np.zeros(bins), 0.0
    hist, _ = np.histogram(a, bins=bins, range=(0.0, amax))
    return hist.astype(np.float64), amax / bins


def _entropy_threshold(hist: np.ndarray, width: float, levels: int = 128) -> float:
    best, best_i = np.inf, len(hist)
    total = hist.sum()
    for i in range(levels, len(hist) + 1, 16):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()  # outliers are clipped into the last bin
        # Q: merge p's bins into `levels` groups, spread each group's mass over its non-empty bins.
        q = np.zeros(i)
        edges = np.linspace(0, i, levels + 1).astype(int)
        src = hist[:i]
        for a, b in zip(edges[:-1], edges[1:]):
            nz = src[a:b] > 0
            if nz.any():
                q[a:b][nz] = src[a:b].sum() / nz.sum()
        q[-1] += 0  # q keeps the unclipped mass; p carries the clipped one
        mask = p > 0
        if not (q[mask] > 0).all():
            q[mask & (q == 0)] = 1e-12
        pn, qn = p / total, q / max(q.sum(), 1e-30)
        kl = float(np.sum(pn[mask] * np.log(pn[mask] / qn[mask])))
        if kl < best:
            best, best_i = kl, i
    return (best_i + 0.5) * width


def _mse_threshold(hist: np.ndarray, width: float, levels: int = 127) -> float:
    centers = (np.arange(len(hist)) + 0.5) * width
    amax = len(hist) * width
    best, best_t = np.inf, amax
    for t in np.linspace(amax * 0.05, amax, 96):
        s = t / levels
        deq = np.clip(np.rint(centers / s), -levels, levels) * s
        err = float(np.sum(hist * (centers - deq) ** 2))
        if err < best:
            best, best_t = err, t
    return float(best_t)


def calibrate(batches: Iterable[Any], method: str = "minmax", *, percentile: float = 99.99, bins: int = 2048) -> float:
    """The symmetric clipping threshold ``amax`` of a tensor stream (numpy arrays or tensors)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    a = _collect(batches)
    if method == "minmax":
        return float(a.max())
    if method == "percentile":
        if not 0 < percentile <= 100:
            raise ValueError("percentile must be in (0, 100]")
        return float(np.percentile(a, percentile))
    hist, width = _histogram(a, bins)
    if width == 0.0:
        return 0.0
    return _entropy_threshold(hist, width) if method == "entropy" else _mse_threshold(hist, width)


def channel_amax(batches: Iterable[Any]) -> np.ndarray:
    """Per-channel (last axis) ``max |x|`` over batches of shape ``[..., channels]``."""
    if batches is None:
        raise TypeError("calibration batches are None")
    out: np.ndarray | None = None
    for b in batches:
        a = _as_np(b)
        if a.size == 0:
            continue
        m = np.abs(a.reshape(-1, a.shape[-1])).max(axis=0)
        if out is not None and m.shape != out.shape:
            raise ValueError("calibration batches disagree on the number of channels")
        out = m if out is None else np.maximum(out, m)
    if out is None:
        raise ValueError("the calibration set is empty; pass at least one non-empty batch")
    return out.astype(np.float32)


def smooth_factors(act_amax: Any, weight: Any, alpha: float = 0.5) -> np.ndarray:
    """SmoothQuant factors ``s_j = max|X_j|^alpha / max|W_:,j|^(1 - alpha)`` per input channel.

    The layer then computes ``(x / s) @ (W * s)^T``: activation outliers move into the weights
    (quantized per output channel, where they hurt less). Channels with no signal get ``s = 1``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError("alpha must be in [0, 1]")
    xa = np.asarray(act_amax, dtype=np.float64)
    w = _as_np(weight)
    if w.ndim != 2 or xa.shape != (w.shape[1],):
        raise ValueError("act_amax must have one entry per input channel of weight [out, in]")
    wa = np.abs(w).max(axis=0).astype(np.float64)
    ok = (xa > 0) & (wa > 0)
    s = np.ones_like(xa)
    s[ok] = xa[ok] ** alpha / wa[ok] ** (1 - alpha)
    return np.clip(s, 1e-4, 1e4).astype(np.float32)


class SmoothQuant:
    """Observer that gathers per-channel activation maxima and turns them into factors."""

    def __init__(self, alpha: float = 0.5) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError("alpha must be in [0, 1]")
        self.alpha = alpha
        self.amax: np.ndarray | None = None

    def observe(self, x: Any) -> None:
        m = channel_amax([x])
        self.amax = m if self.amax is None else np.maximum(self.amax, m)

    def factors(self, weight: Any) -> np.ndarray:
        if self.amax is None:
            raise ValueError("SmoothQuant saw no calibration data")
        return smooth_factors(self.amax, weight, self.alpha)
