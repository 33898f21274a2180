"""Oracle for symmetric INT8 quantization, written element by element from the definition."""
import math

import numpy as np

__all__ = ["quantize_int8", "dequantize_int8", "quantize_rows_u8", "quantize_rows_u8_static", "activation", "linear_w8a8",
           "linear_half", "round_bf16"]


def quantize_int8(x, axis):
    """scale = amax/127 in float32 (1 for an all-zero channel); q = clip(rne(x/scale)) in float32."""
    x = np.asarray(x).astype(np.float32)
    if axis is None:
        groups = [x.reshape(-1)]
    else:
        moved = np.moveaxis(x, axis, 0)
        groups = [moved[c].reshape(-1) for c in range(moved.shape[0])]
    scales = []
    for g in groups:
        amax = np.float32(0)
        for v in g:
            amax = max(amax, np.float32(abs(v)))
        s = np.float32(np.float32(amax) / np.float32(127))
        scales.append(s if s >= np.finfo(np.float32).tiny else np.float32(1))  # zero/subnormal -> 1
    scales = np.array(scales, dtype=np.float32)
    q = np.empty(x.shape, dtype=np.int8)
    it = np.nditer(x, flags=["multi_index", "zerosize_ok"])
    for v in it:
        s = scales[0] if axis is None else scales[it.multi_index[axis]]
        quot = np.float32(v) / s  # float32 division
        r = float(np.round(np.float64(quot)))  # numpy rounds half to even
        q[it.multi_index] = int(min(127.0, max(-127.0, r)))
    return q, (scales.reshape(()) if axis is None else scales)


def dequantize_int8(q, scale, axis):
    q = np.asarray(q).astype(np.float32)
    s = np.asarray(scale, dtype=np.float32)
    if axis is not None:
        shape = [1] * q.ndim
        shape[axis] = -1
        s = s.reshape(shape)
    return (q * s).astype(np.float32)


def quantize_rows_u8(x, symmetric):
    """Per-row uint8 quantization, row by row in float32 scalars (see linear.hpp for the rules)."""
    x = np.asarray(x, dtype=np.float32)
    m, k = x.shape
    kp = max(4, -(-k // 4) * 4)
    f = np.float32
    q = np.zeros((m, kp), dtype=np.uint8)
    scales = np.zeros(m, dtype=np.float32)
    zps = np.zeros(m, dtype=np.int32)
    for r in range(m):
        lo, hi = f(0), f(0)
        for v in x[r]:
            lo, hi = min(lo, f(v)), max(hi, f(v))
        if symmetric:
            amax = max(-lo, hi)
            s = f(amax / f(127))
            s = s if s >= np.finfo(np.float32).tiny else f(1)
            inv = f(f(1) / s)
            zp, qmin, qmax = 128.0, 1.0, 255.0
        else:
            s = f(f(hi - lo) / f(255))
            s = s if s >= np.finfo(np.float32).tiny else f(1)
            inv = f(f(1) / s)
            zp, qmin, qmax = float(min(max(np.rint(f(-lo * inv)), 0.0), 255.0)), 0.0, 255.0
        for j in range(k):
            q[r, j] = int(min(max(float(np.rint(f(x[r, j] * inv))) + zp, qmin), qmax))
        q[r, k:] = int(zp)
        scales[r], zps[r] = s, int(zp)
    return q, scales, zps


def quantize_rows_u8_static(x, scale):
    """One symmetric scale for all rows, element by element: q = clip(rne(x * f32(1/scale)) + 128, 1, 255)."""
    x = np.asarray(x, dtype=np.float32)
    m, k = x.shape
    kp = max(4, -(-k // 4) * 4)
    f = np.float32
    inv = f(f(1) / f(scale))
    q = np.full((m, kp), 128, dtype=np.uint8)
    for r in range(m):
        for j in range(k):
            with np.errstate(over="ignore"):
                v = float(np.rint(f(x[r, j] * inv)))  # inf beyond float32: clipped below
            q[r, j] = int(min(max(v + 128.0, 1.0), 255.0))
    return q, np.full(m, f(scale), dtype=np.float32), np.full(m, 128, dtype=np.int32)


def activation(v, act):
    """The epilogue activations from their definitions, in float64."""
    v = np.asarray(v, dtype=np.float64)
    if act == "relu":
        return np.maximum(v, 0.0)
    if act == "gelu":
        return np.vectorize(lambda t: 0.5 * t * (1.0 + math.erf(t / math.sqrt(2.0))))(v) if v.size else v
    if act == "gelu_tanh":
        return 0.5 * v * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))
    if act == "silu":
        return v / (1.0 + np.exp(-np.clip(v, -700, 700)))
    return v


def linear_w8a8(x, qweight, wscale, bias=None, act="none", residual=None, symmetric=False, static_scale=None):
    """y = act(sa * sw * (sum qa * qw - zp * sum qw) + bias) + residual, integer sums exact."""
    x = np.asarray(x, dtype=np.float32)
    if static_scale is not None:
        q, sa, zp = quantize_rows_u8_static(x, static_scale)
    else:
        q, sa, zp = quantize_rows_u8(x, symmetric)
    k = x.shape[1]
    acc = q[:, :k].astype(np.int64) @ np.asarray(qweight, dtype=np.int64).T
    acc = acc - zp.astype(np.int64)[:, None] * np.asarray(qweight, dtype=np.int64).sum(axis=1)[None, :]
    v = acc.astype(np.float64) * (sa.astype(np.float64)[:, None] * np.asarray(wscale, np.float64)[None, :])
    if bias is not None:
        v = v + np.asarray(bias, np.float64)[None, :]
    v = activation(v, act)
    if residual is not None:
        v = v + np.asarray(residual, np.float64)
    return v


def round_bf16(x):
    """float32 -> nearest-even bfloat16, returned as float32 (the bits above the low 16)."""
    b = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16 << 16
    return b.astype(np.uint32).view(np.float32)


def linear_half(x, weight_rounded, bias=None, act="none", residual=None, round_x=False):
    """fp32 activations times the half-rounded weights; round_x: activations rounded to bf16 first
    (the AMX-BF16 path)."""
    x = round_bf16(x) if round_x else x
    v = np.asarray(x, np.float64) @ np.asarray(weight_rounded, np.float64).T
    if bias is not None:
        v = v + np.asarray(bias, np.float64)[None, :]
    v = activation(v, act)
    if residual is not None:
        v = v + np.asarray(residual, np.float64)
    return v
