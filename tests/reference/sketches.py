"""numpy oracles for the sketches: exact answers the approximations are checked against."""
import numpy as np

__all__ = ["exact_distinct", "exact_rank", "exact_moments", "ds_key_bytes", "ds_coupon"]


def exact_distinct(values) -> int:
    return int(np.unique(np.asarray(values)).size)


def exact_rank(data, x) -> np.ndarray:
    s = np.sort(np.asarray(data, dtype=np.float64))
    return np.searchsorted(s, np.asarray(x, dtype=np.float64), side="right") / s.size


def exact_moments(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.mean()
    d = x - m
    m2 = (d ** 2).mean()
    if m2 == 0:  # constant data: skewness and kurtosis are undefined
        return {"mean": m, "var": m2, "skew": np.nan, "kurt": np.nan}
    return {"mean": m, "var": m2, "skew": (d ** 3).mean() / m2 ** 1.5, "kurt": (d ** 4).mean() / m2 ** 2 - 3}


def ds_key_bytes(key: int, is_f64: bool) -> bytes:
    """The 8 bytes DataSketches hashes for an int64 (its bits) or a float64 given by its bits:
    -0.0 -> 0.0 and every NaN -> 0x7ff8000000000000 (Java's doubleToLongBits)."""
    if is_f64:
        d = np.frombuffer(int(key).to_bytes(8, "little"), dtype="<f8")[0]
        if d == 0.0:
            key = 0
        elif np.isnan(d):
            key = 0x7FF8000000000000
    return int(key).to_bytes(8, "little")


def ds_coupon(h1: int, h2: int) -> int:
    """DataSketches' HLL coupon of a 128-bit hash: (min(nlz(h2), 62) + 1) << 26 | low 26 bits of h1."""
    nlz = 64 - int(h2).bit_length()
    return ((min(nlz, 62) + 1) << 26) | (int(h1) & ((1 << 26) - 1))
