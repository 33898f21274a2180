"""Triton kernels for symmetric INT8 quantization of a strided [outer, channels, inner] view."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from . import _check_interpreter

_check_interpreter()

_FLT_MAX = tl.constexpr(3.4028234663852886e38)  # globals in kernels must be constexpr
_FLT_MIN = tl.constexpr(1.1754943508222875e-38)  # smallest normal float32


@triton.jit
def _amax_scale_kernel(
    x_ptr, scale_ptr, bad_ptr, OUTER, INNER, s_o, s_c, s_i, BLOCK: tl.constexpr
):
    # One program per channel: max |x| over its OUTER * INNER elements, then its scale.
    c = tl.program_id(0).to(tl.int64)
    n = OUTER * INNER
    acc = tl.zeros([BLOCK], dtype=tl.float32)
    bad = tl.zeros([BLOCK], dtype=tl.int32)
    for start in range(0, n, BLOCK):
        idx = start + tl.arange(0, BLOCK).to(tl.int64)
        m = idx < n
        o = idx // INNER
        i = idx % INNER
        v = tl.load(x_ptr + o * s_o + c * s_c + i * s_i, mask=m, other=0.0).to(tl.float32)
        a = tl.abs(v)
        finite = a <= _FLT_MAX  # false for NaN and inf
        bad = tl.maximum(bad, tl.where(m & ~finite, 1, 0))
        acc = tl.maximum(acc, tl.where(finite, a, 0.0))
    amax = tl.max(acc, axis=0)
    # IEEE-rounded division so the scale matches every other backend bit for bit.
    scale = tl.math.div_rn(amax, 127.0)
    scale = tl.where(scale >= _FLT_MIN, scale, 1.0)
    tl.store(scale_ptr + c, scale)
    tl.store(bad_ptr + c, tl.max(bad, axis=0))


@triton.jit
def _amax_columns_partial_kernel(
    x_ptr, part_ptr, bad_ptr, OUTER, C, ROWS_PER, s_o, s_c, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr
):
    # Channels along the last dimension (inner == 1): program (i, j) owns BLOCK_C neighbouring
    # channels over the j-th slice of ROWS_PER rows, so loads are contiguous runs of channels
    # and the whole GPU is busy; partial maxima go to part[j, c].
    cols = tl.program_id(0).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    split = tl.program_id(1).to(tl.int64)
    cmask = cols < C
    acc = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.float32)
    bad = tl.zeros([BLOCK_R, BLOCK_C], dtype=tl.int32)
    r_begin = split * ROWS_PER
    for r0 in range(0, ROWS_PER, BLOCK_R):
        rows = r_begin + r0 + tl.arange(0, BLOCK_R).to(tl.int64)
        m = (rows[:, None] < OUTER) & (rows[:, None] < r_begin + ROWS_PER) & cmask[None, :]
        v = tl.load(x_ptr + rows[:, None] * s_o + cols[None, :] * s_c, mask=m, other=0.0).to(tl.float32)
        a = tl.abs(v)
        finite = a <= _FLT_MAX
        bad = tl.maximum(bad, tl.where(m & ~finite, 1, 0))
        acc = tl.maximum(acc, tl.where(finite, a, 0.0))
    tl.store(part_ptr + split * C + cols, tl.max(acc, axis=0), mask=cmask)
    tl.store(bad_ptr + split * C + cols, tl.max(bad, axis=0), mask=cmask)


@triton.jit
def _scale_from_partials_kernel(part_ptr, bad_ptr, scale_ptr, flag_ptr, C, SPLITS, BLOCK: tl.constexpr):
    cols = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    cmask = cols < C
    amax = tl.zeros([BLOCK], dtype=tl.float32)
    bad = tl.zeros([BLOCK], dtype=tl.int32)
    for j in range(0, SPLITS):
        amax = tl.maximum(amax, tl.load(part_ptr + j * C + cols, mask=cmask, other=0.0))
        bad = tl.maximum(bad, tl.load(bad_ptr + j * C + cols, mask=cmask, other=0))
    scale = tl.math.div_rn(amax, 127.0)
    scale = tl.where(scale >= _FLT_MIN, scale, 1.0)
    tl.store(scale_ptr + cols, scale, mask=cmask)
    tl.store(flag_ptr + cols, bad, mask=cmask)


@triton.jit
def _quantize_columns_kernel(
    x_ptr, scale_ptr, q_ptr, OUTER, C, s_o, s_c, BLOCK_R: tl.constexpr, BLOCK_C: tl.constexpr
):
    # inner == 1: a [BLOCK_R, BLOCK_C] tile of rows x channels, one scale per column.
    rows = tl.program_id(0).to(tl.int64) * BLOCK_R + tl.arange(0, BLOCK_R).to(tl.int64)
    cols = tl.program_id(1).to(tl.int64) * BLOCK_C + tl.arange(0, BLOCK_C).to(tl.int64)
    m = (rows[:, None] < OUTER) & (cols[None, :] < C)
    v = tl.load(x_ptr + rows[:, None] * s_o + cols[None, :] * s_c, mask=m, other=0.0).to(tl.float32)
    s = tl.load(scale_ptr + cols, mask=cols < C, other=1.0)
    r = tl.math.div_rn(v, s[None, :])
    r = tl.minimum(tl.maximum(r, -127.0), 127.0)
    tl.store(q_ptr + rows[:, None] * C + cols[None, :], _rne(r).to(tl.int8), mask=m)


@triton.jit
def _rne(v):
    # Round half to even, exact for |v| <= 2**22.
    f = tl.floor(v)
    d = v - f
    odd = (f - 2.0 * tl.floor(f * 0.5)) != 0.0
    return tl.where((d > 0.5) | ((d == 0.5) & odd), f + 1.0, f)


@triton.jit
def _quantize_kernel(
    x_ptr, scale_ptr, q_ptr, OUTER, C, INNER, s_o, s_c, s_i, BLOCK: tl.constexpr
):
    c = tl.program_id(0).to(tl.int64)
    pid = tl.program_id(1).to(tl.int64)
    idx = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    m = idx < OUTER * INNER
    o = idx // INNER
    i = idx % INNER
    v = tl.load(x_ptr + o * s_o + c * s_c + i * s_i, mask=m, other=0.0).to(tl.float32)
    s = tl.load(scale_ptr + c)
    r = tl.math.div_rn(v, s)
    r = tl.minimum(tl.maximum(r, -127.0), 127.0)
    tl.store(q_ptr + (o * C + c) * INNER + i, _rne(r).to(tl.int8), mask=m)


@triton.jit
def _dequantize_kernel(q_ptr, scale_ptr, out_ptr, N, C, INNER, BLOCK: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)
    idx = pid * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
    m = idx < N
    c = (idx // INNER) % C
    q = tl.load(q_ptr + idx, mask=m, other=0).to(tl.float32)
    s = tl.load(scale_ptr + c, mask=m, other=1.0)
    tl.store(out_ptr + idx, q * s, mask=m)


def _block(n: int) -> int:
    return max(64, min(4096, triton.next_power_of_2(max(int(n), 1))))


def quantize_int8(x3: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantize a 3-D [outer, channels, inner] float32/float16 tensor along dim 1.

    Returns (q int8 C-contiguous [outer, channels, inner], scales float32 [channels]).
    Raises ValueError if x3 holds NaN or inf.
    """
    if x3.dim() != 3:
        raise ValueError("quantize_int8 expects a 3-D [outer, channels, inner] tensor")
    if x3.dtype not in (torch.float32, torch.float16):
        raise TypeError(f"quantize_int8: x must be float32 or float16, got {x3.dtype}")
    outer, chans, inner = x3.shape
    q = torch.empty((outer, chans, inner), dtype=torch.int8, device=x3.device)
    scales = torch.ones((chans,), dtype=torch.float32, device=x3.device)
    n = outer * inner
    if chans == 0 or n == 0:
        return q, scales
    bad = torch.zeros((chans,), dtype=torch.int32, device=x3.device)
    so, sc, si = x3.stride()
    block = _block(n)
    columns = inner == 1 and chans > 1
    if columns:
        block_c, block_r = 64, 16
        col_blocks = triton.cdiv(chans, block_c)
        # Enough row slices to give the GPU a few hundred programs, each at least 64 rows.
        splits = max(1, min(triton.cdiv(outer, 64), triton.cdiv(512, col_blocks)))
        rows_per = triton.cdiv(outer, splits)
        splits = triton.cdiv(outer, rows_per)
        part = torch.empty((splits, chans), dtype=torch.float32, device=x3.device)
        part_bad = torch.empty((splits, chans), dtype=torch.int32, device=x3.device)
        _amax_columns_partial_kernel[(col_blocks, splits)](
            x3, part, part_bad, outer, chans, rows_per, so, sc, BLOCK_R=block_r, BLOCK_C=block_c
        )
        _scale_from_partials_kernel[(triton.cdiv(chans, 256),)](part, part_bad, scales, bad, chans, splits, BLOCK=256)
    else:
        _amax_scale_kernel[(chans,)](x3, scales, bad, outer, inner, so, sc, si, BLOCK=block)
    if bool(bad.any()):
        raise ValueError("quantize: input contains NaN or infinity; INT8 quantization needs finite values")
    if columns:
        _quantize_columns_kernel[(triton.cdiv(outer, 32), triton.cdiv(chans, 64))](
            x3, scales, q, outer, chans, so, sc, BLOCK_R=32, BLOCK_C=64
        )
    else:
        _quantize_kernel[(chans, triton.cdiv(n, block))](x3, scales, q, outer, chans, inner, so, sc, si, BLOCK=block)
    return q, scales


def dequantize_int8(q3: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """float32 q3 * scales[channel] for a contiguous int8 [outer, channels, inner] tensor."""
    outer, chans, inner = q3.shape
    out = torch.empty(q3.shape, dtype=torch.float32, device=q3.device)
    n = q3.numel()
    if n == 0:
        return out
    block = 1024
    _dequantize_kernel[(triton.cdiv(n, block),)](q3, scales, out, n, chans, inner, BLOCK=block)
    return out
