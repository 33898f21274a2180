"""Text pre-processing: token-id sequences padded or truncated to length buckets, with masks."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .. import _backends
from .._backends import register
from .._runtime import _core

__all__ = ["PaddedBatch", "pad_to_buckets", "bucket_lengths"]


@dataclass
class PaddedBatch:
    """``ids`` int64 [n, length], ``mask`` uint8 [n, length] (1 on real tokens), ``length``
    (the bucket), ``lengths`` int64 [n] (tokens kept per sequence)."""

    ids: np.ndarray
    mask: np.ndarray
    length: int
    lengths: np.ndarray


def _check_buckets(buckets: Sequence[int] | None) -> np.ndarray | None:
    if buckets is None:
        return None
    b = np.asarray(sorted(int(v) for v in buckets), dtype=np.int64)
    if b.size == 0 or b[0] <= 0:
        raise ValueError("buckets must be a non-empty list of positive lengths")
    return b


def bucket_lengths(lengths: Any, buckets: Sequence[int]) -> np.ndarray:
    """The bucket of each sequence length: the smallest bucket >= it, else the largest bucket
    (the sequence will be truncated). Use as the batcher's bucket key."""
    b = _check_buckets(buckets)
    ln = np.asarray(lengths, dtype=np.int64)
    if (ln < 0).any():
        raise ValueError("bucket_lengths: lengths must be >= 0")
    pos = np.minimum(np.searchsorted(b, ln, side="left"), b.size - 1)
    return b[pos]


def _csr(sequences: Any) -> tuple[np.ndarray, np.ndarray]:
    if sequences is None:
        raise TypeError("pad_to_buckets: sequences is None")
    if isinstance(sequences, tuple) and len(sequences) == 2 and all(isinstance(a, np.ndarray) for a in sequences):
        ids, off = (np.ascontiguousarray(a, dtype=np.int64) for a in sequences)
        return ids, off
    seqs = [np.asarray(s) for s in sequences]
    for i, s in enumerate(seqs):
        if s.ndim != 1 or (s.size and s.dtype.kind not in "iu"):
            raise TypeError(f"pad_to_buckets: sequence {i} must be a 1-D list/array of integer token ids")
    off = np.zeros(len(seqs) + 1, dtype=np.int64)
    if seqs:
        np.cumsum([s.size for s in seqs], out=off[1:])
    ids = np.concatenate([s.astype(np.int64, copy=False) for s in seqs]) if seqs else np.zeros(0, np.int64)
    return np.ascontiguousarray(ids, dtype=np.int64), off


def pad_to_buckets(sequences: Any, buckets: Sequence[int] | None = None, pad_id: int = 0,
                   truncation: str = "right", padding_side: str = "right", max_length: int | None = None,
                   backend: str | None = None) -> PaddedBatch:
    """Pad or truncate a batch of token-id sequences to one length bucket.

    Parameters
    ----------
    sequences : list of 1-D integer sequences, or ``(ids, offsets)`` in CSR form
    buckets : allowed lengths; the batch gets the smallest one >= its longest sequence, else the
        largest one (longer sequences are truncated). None: the longest sequence (capped by
        ``max_length``).
    truncation : "right" keeps the start of a long sequence, "left" keeps its end.
    padding_side : "right" or "left".
    """
    if truncation not in ("right", "left"):
        raise ValueError(f"pad_to_buckets: truncation must be 'right' or 'left', got {truncation!r}")
    if padding_side not in ("right", "left"):
        raise ValueError(f"pad_to_buckets: padding_side must be 'right' or 'left', got {padding_side!r}")
    b = _check_buckets(buckets)
    ids, off = _csr(sequences)
    if off.ndim != 1 or off.size < 1 or off[0] != 0 or off[-1] != ids.size or (np.diff(off) < 0).any():
        raise ValueError("pad_to_buckets: offsets must be non-decreasing from 0 to len(ids)")
    lengths = np.diff(off)
    longest = int(lengths.max()) if lengths.size else 0
    if b is not None:
        length = int(bucket_lengths([longest], b)[0])
    else:
        length = longest if max_length is None else min(longest, int(max_length))
    if max_length is not None:
        if max_length < 0:
            raise ValueError("pad_to_buckets: max_length must be >= 0")
        length = min(length, int(max_length))
    impl = _backends.select("pad_to_buckets", ids, backend)
    out, mask = impl(ids, off, length, int(pad_id), truncation == "left", padding_side == "left")
    return PaddedBatch(out, mask, length, np.minimum(lengths, length))


@register("pad_to_buckets", "reference", ("cpu",))
def _pad_reference(ids, off, length, pad_id, keep_end, pad_left):
    n = off.size - 1
    out = np.full((n, length), pad_id, dtype=np.int64)
    mask = np.zeros((n, length), dtype=np.uint8)
    for i in range(n):
        s = ids[off[i]:off[i + 1]]
        s = s[len(s) - min(len(s), length):] if keep_end else s[:length]
        at = length - len(s) if pad_left else 0
        out[i, at:at + len(s)] = s
        mask[i, at:at + len(s)] = 1
    return out, mask


@register("pad_to_buckets", "cpu", ("cpu",))
def _pad_cpu(ids, off, length, pad_id, keep_end, pad_left):
    return _core().prepost_pad_sequences(ids, off, length, pad_id, keep_end, pad_left)
