"""Plain numpy oracles of the prepost ops, written from their definitions."""
from __future__ import annotations

import numpy as np

__all__ = ["prepost_resize_matrix", "prepost_preprocess", "prepost_softmax_topk", "prepost_softmax",
           "prepost_log_softmax", "prepost_sigmoid_threshold", "prepost_l2_normalize", "prepost_compress",
           "prepost_batched_nms", "prepost_pad", "prepost_bf16_to_f32"]


def prepost_resize_matrix(n_in: int, n_out: int, antialias: bool) -> np.ndarray:
    """[n_out, n_in] weights. antialias: Pillow's stretched triangle filter (support
    max(in/out, 1), taps [int(c - s + .5), int(c + s + .5)) clipped, renormalized);
    else OpenCV INTER_LINEAR (src = (i + .5) * in/out - .5, clamped, two taps)."""
    scale = n_in / n_out
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        if antialias:
            s = max(scale, 1.0)
            c = (i + 0.5) * scale
            for j in range(max(int(c - s + 0.5), 0), min(int(c + s + 0.5), n_in)):
                m[i, j] = max(0.0, 1.0 - abs((j + 0.5 - c) / s))
            if m[i].sum():
                m[i] /= m[i].sum()
        else:
            src = min(max((i + 0.5) * scale - 0.5, 0.0), n_in - 1.0)
            j = int(np.floor(src))
            f = src - j
            m[i, j] += 1.0 - f
            if f > 0:
                m[i, j + 1] += f
    return m


def prepost_preprocess(img: np.ndarray, resize: tuple[int, int] | None, box: tuple[int, int, int, int] | None,
                       mean, std, bgr: bool, antialias: bool) -> np.ndarray:
    """float64 [C, h, w] RGB normalized result of one HWC uint8 image."""
    x = img.reshape(img.shape[0], img.shape[1], -1).astype(np.float64)
    if resize is not None and tuple(resize) != x.shape[:2]:
        my = prepost_resize_matrix(x.shape[0], resize[0], antialias)
        mx = prepost_resize_matrix(x.shape[1], resize[1], antialias)
        x = np.stack([my @ x[:, :, c] @ mx.T for c in range(x.shape[2])], axis=2)
    if box is not None:
        t, l, h, w = box
        x = x[t:t + h, l:l + w]
    if bgr and x.shape[2] == 3:
        x = x[:, :, ::-1]
    x = (x - np.asarray(mean, dtype=np.float64)) / np.asarray(std, dtype=np.float64)
    return x.transpose(2, 0, 1)


def prepost_bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _lse(x: np.ndarray) -> np.ndarray:
    m = x.max(axis=1, keepdims=True)
    return m + np.log(np.exp(x - m).sum(axis=1, keepdims=True))


def prepost_softmax_topk(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, indices): descending logit, ties by lower index."""
    x = x.astype(np.float64)
    idx = np.array([sorted(range(x.shape[1]), key=lambda j: (-x[r, j], j))[:k] for r in range(x.shape[0])],
                   dtype=np.int64).reshape(x.shape[0], k)
    return np.exp(np.take_along_axis(x, idx, 1) - _lse(x)), idx


def prepost_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return np.exp(x - _lse(x))


def prepost_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    return x - _lse(x)


def prepost_sigmoid_threshold(x: np.ndarray, t: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64))) > t


def prepost_l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = x.astype(np.float64)
    return x / np.maximum(np.sqrt((x * x).sum(axis=1, keepdims=True)), eps)


def prepost_compress(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v = prepost_l2_normalize(x)
    s = np.abs(v).max(axis=1) / 127
    s[s == 0] = 1
    return np.clip(np.rint(v / s[:, None]), -127, 127), s


def prepost_batched_nms(boxes: np.ndarray, scores: np.ndarray, idxs: np.ndarray, thr: float) -> np.ndarray:
    """Greedy NMS per category in float32 (torchvision's IoU expression)."""
    b = boxes.astype(np.float32)
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    kept: list[int] = []
    for i in order:
        ok = True
        for j in kept:
            if idxs[i] != idxs[j]:
                continue
            w = np.float32(max(0.0, min(b[i, 2], b[j, 2]) - max(b[i, 0], b[j, 0])))
            h = np.float32(max(0.0, min(b[i, 3], b[j, 3]) - max(b[i, 1], b[j, 1])))
            inter = np.float32(w * h)
            aj = np.float32((b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1]))
            ai = np.float32((b[i, 2] - b[i, 0]) * (b[i, 3] - b[i, 1]))
            if np.float32(inter / np.float32(np.float32(aj + ai) - inter)) > np.float32(thr):
                ok = False
                break
        if ok:
            kept.append(i)
    return np.asarray(kept, dtype=np.int64)


def prepost_pad(seqs, length: int, pad_id: int, keep_end: bool, pad_left: bool) -> tuple[np.ndarray, np.ndarray]:
    ids = np.full((len(seqs), length), pad_id, dtype=np.int64)
    mask = np.zeros((len(seqs), length), dtype=np.uint8)
    for i, s in enumerate(seqs):
        s = list(s)
        s = s[-length:] if (keep_end and length) else s[:length]
        for j, t in enumerate(s):
            pos = length - len(s) + j if pad_left else j
            ids[i, pos] = t
            mask[i, pos] = 1
    return ids, mask
