"""Oracle for symmetric INT8 quantization, written element by element from the definition."""
import numpy as np

__all__ = ["quantize_int8", "dequantize_int8"]


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
        scales.append(np.float32(amax) / np.float32(127) if amax > 0 else np.float32(1))
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
