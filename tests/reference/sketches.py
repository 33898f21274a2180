"""numpy oracles for the sketches: exact answers the approximations are checked against."""
import numpy as np

__all__ = ["exact_distinct", "exact_rank", "exact_moments"]


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
