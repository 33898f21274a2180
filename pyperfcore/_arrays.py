"""Helpers to look at numpy arrays and torch tensors as strided 3-D views without copying."""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ._backends import is_torch_tensor


def _collapse(shape: Sequence[int], strides: Sequence[int]) -> tuple[int, int] | None:
    """Merge dims into one (count, stride) if memory allows it, else None."""
    n_total = math.prod(shape) if len(shape) else 1
    if n_total == 0:
        return 0, 1
    dims = [(n, s) for n, s in zip(shape, strides) if n != 1]
    if not dims:
        return 1, 1
    n, s = dims[-1]
    for m, t in reversed(dims[:-1]):
        if t != s * n:
            return None
        n *= m
    return n, s


def view3_params(shape: Sequence[int], strides: Sequence[int], axis: int | None) -> tuple[int, ...] | None:
    """(outer, channels, inner, s_outer, s_channel, s_inner) in elements, or None if x must be copied."""
    if math.prod(shape) == 0:  # nothing is read: only the counts matter
        if axis is None:
            return (1, 1, 0, 0, 0, 0)
        return (math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1 :]), 0, 0, 0)
    if axis is None:
        whole = _collapse(shape, strides)
        if whole is not None:
            return (1, 1, whole[0], 0, 0, whole[1])
        if len(shape) >= 2:
            outer = _collapse(shape[:-1], strides[:-1])
            if outer is not None:
                return (outer[0], 1, shape[-1], outer[1], 0, strides[-1])
        return None
    outer = _collapse(shape[:axis], strides[:axis])
    inner = _collapse(shape[axis + 1 :], strides[axis + 1 :])
    if outer is None or inner is None:
        return None
    return (outer[0], shape[axis], inner[0], outer[1], strides[axis], inner[1])


def normalize_axis(axis: int | None, ndim: int, what: str) -> int | None:
    if axis is None:
        return None
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{what}: axis must be an int or None, got {type(axis).__name__}")
    if ndim == 0:
        raise ValueError(f"{what}: a 0-d input has no axis {axis}; use axis=None")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{what}: axis {axis} is out of range for an input with {ndim} dims")
    return int(axis) % ndim


def numpy_view3(x: np.ndarray, axis: int | None) -> np.ndarray:
    """x as a 3-D strided view [outer, channels, inner]; a contiguous copy only if unavoidable."""
    isz = x.itemsize
    if any(s % isz for s in x.strides):
        x = np.ascontiguousarray(x)
    p = view3_params(x.shape, [s // isz for s in x.strides], axis)
    if p is None:
        x = np.ascontiguousarray(x)
        p = view3_params(x.shape, [s // isz for s in x.strides], axis)
        assert p is not None
    o, c, i, so, sc, si = p
    return np.lib.stride_tricks.as_strided(x, shape=(o, c, i), strides=(so * isz, sc * isz, si * isz), writeable=False)


def torch_view3(x: Any, axis: int | None) -> Any:
    """Same as numpy_view3 for a torch tensor (CPU or CUDA)."""
    p = view3_params(tuple(x.shape), tuple(x.stride()), axis)
    if p is None:
        x = x.contiguous()
        p = view3_params(tuple(x.shape), tuple(x.stride()), axis)
        assert p is not None
    o, c, i, so, sc, si = p
    return x.as_strided((o, c, i), (so, sc, si))


def as_numpy(x: Any) -> np.ndarray:
    """A numpy view of a CPU tensor or array (never copies a numpy array)."""
    if is_torch_tensor(x):
        if x.is_cuda:
            raise ValueError("expected a CPU tensor")
        return x.detach().numpy()
    return x
