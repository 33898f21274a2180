"""Shared helpers of the prepost ops: input kinds, conversions, validation."""
from __future__ import annotations

from typing import Any

import numpy as np

from .._backends import is_torch_tensor


def dtype_name(x: Any) -> str:
    if is_torch_tensor(x):
        return str(x.dtype).replace("torch.", "")
    return np.asarray(x).dtype.name if not isinstance(x, np.ndarray) else x.dtype.name


def to_numpy(x: Any) -> np.ndarray:
    """A CPU numpy view of x (torch CPU tensors share memory)."""
    if is_torch_tensor(x):
        if x.is_cuda:
            raise ValueError("a CUDA tensor cannot be read by a CPU backend; use backend='cuda' or 'triton'")
        return x.detach().numpy()
    return np.asarray(x)


def like(x: Any, *arrays: np.ndarray) -> tuple[Any, ...]:
    """Return arrays as torch tensors when x is one, else unchanged."""
    if is_torch_tensor(x):
        import torch

        return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    return arrays


def check_logits(x: Any, what: str) -> None:
    if x is None:
        raise TypeError(f"{what}: logits is None; pass a numpy array or torch tensor")
    if not (is_torch_tensor(x) or isinstance(x, np.ndarray)):
        raise TypeError(f"{what}: logits must be a numpy.ndarray or torch.Tensor, got {type(x).__name__}")
    name = dtype_name(x)
    if name not in ("float32", "float16", "int8"):
        raise TypeError(f"{what}: logits must be float32, float16 or int8 (with scale=), got {name}")
    if x.ndim not in (1, 2):
        raise ValueError(f"{what}: logits must be 1-D [classes] or 2-D [rows, classes], got {x.ndim}-D")


def scale_arg(x: Any, scale: Any, what: str) -> np.ndarray | None:
    """The dequantization scale of int8 logits as float32 [1] or [classes]; None for floats."""
    is_int8 = dtype_name(x) == "int8"
    if scale is None:
        if is_int8:
            raise ValueError(f"{what}: int8 logits need scale= (one value or one per class) to dequantize")
        return None
    if not is_int8:
        raise ValueError(f"{what}: scale= is for int8 logits only; float logits are used as they are")
    s = np.asarray(to_numpy(scale) if is_torch_tensor(scale) else scale, dtype=np.float32).reshape(-1)
    ncls = x.shape[-1]
    if s.size not in (1, ncls):
        raise ValueError(f"{what}: scale has {s.size} values; give one, or one per class ({ncls})")
    if not (np.all(np.isfinite(s)) and np.all(s > 0)):
        raise ValueError(f"{what}: scale must be positive and finite")
    return s


def dequantized(x: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """float32 logits (int8 ones times their scale)."""
    if scale is None:
        return np.asarray(x, dtype=np.float32)
    return x.astype(np.float32) * (scale if scale.size > 1 else scale[0])
