"""Plain-numpy oracles of the drift statistics (slow, obviously right)."""
from __future__ import annotations

import numpy as np

__all__ = ["drift_hist_counts", "drift_moments", "drift_psi", "drift_js", "drift_hellinger", "drift_linf",
           "drift_ks_statistic", "drift_wasserstein", "drift_category_counts", "drift_small_support"]


def drift_hist_counts(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """[below, bins..., above, NaN] with numpy's histogram convention (last bin closed)."""
    x = np.asarray(x, dtype=np.float64)
    k = edges.size - 1
    out = np.zeros(k + 3, dtype=np.int64)
    for v in x:
        if np.isnan(v):
            out[k + 2] += 1
        elif v < edges[0]:
            out[0] += 1
        elif v > edges[-1]:
            out[k + 1] += 1
        elif v == edges[-1]:
            out[k] += 1
        else:
            out[int(np.searchsorted(edges, v, side="right"))] += 1
    return out


def drift_moments(x: np.ndarray) -> dict:
    x = np.asarray(x, dtype=np.float64)
    fin = x[np.isfinite(x)]
    d = fin - fin.mean() if fin.size else fin
    return {"n": fin.size, "n_nan": int(np.isnan(x).sum()), "n_posinf": int((x == np.inf).sum()),
            "n_neginf": int((x == -np.inf).sum()), "mean": fin.mean() if fin.size else 0.0,
            "m2": float((d ** 2).sum()), "m3": float((d ** 3).sum()), "m4": float((d ** 4).sum()),
            "min": fin.min() if fin.size else 0.0, "max": fin.max() if fin.size else 0.0}


def _props(r, c):
    r, c = np.asarray(r, float), np.asarray(c, float)
    return r / r.sum(), c / c.sum()


def drift_psi(r, c, eps=1e-4):
    p, q = _props(r, c)
    for v in (p, q):
        mn = v[v != 0].min()
        v[v == 0] = mn / 1e6 if mn <= eps else eps
    return float(np.sum((p - q) * np.log(p / q)))


def drift_js(r, c):
    p, q = _props(r, c)
    m = (p + q) / 2
    def kl(a):
        pos = a > 0
        return float((a[pos] * np.log(a[pos] / m[pos])).sum())

    return float(np.sqrt(max((kl(p) + kl(q)) / 2, 0.0)))


def drift_hellinger(r, c):
    p, q = _props(r, c)
    return float(np.sqrt(1 - min(max(np.sqrt(p * q).sum(), 0.0), 1.0)))


def drift_linf(r, c):
    p, q = _props(r, c)
    return float(np.abs(p - q).max())


def drift_ks_statistic(a, b):
    a, b = np.sort(a), np.sort(b)
    allv = np.concatenate([a, b])
    d = np.searchsorted(a, allv, side="right") / a.size - np.searchsorted(b, allv, side="right") / b.size
    return float(np.abs(d).max())


def drift_wasserstein(a, b):
    allv = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), allv[:-1], side="right") / len(a)
    fb = np.searchsorted(np.sort(b), allv[:-1], side="right") / len(b)
    return float(np.sum(np.abs(fa - fb) * np.diff(allv)))


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def drift_category_counts(samples):
    """Shared vocabulary of categorical samples, one Python value at a time: (vocabulary list,
    [counts per sample], [missing per sample]). Missing: None and float NaN. The vocabulary is
    sorted, or in first-seen order when Python cannot order the values (str mixed with bytes)."""
    items = [[v for v in np.asarray(s, dtype=object).tolist()] if not isinstance(s, list) else list(s)
             for s in samples]
    seen = {}
    for s in items:
        for v in s:
            if not _is_missing(v):
                seen.setdefault(v, len(seen))
    vocab = list(seen)
    try:
        vocab = sorted(vocab)
    except TypeError:
        pass
    pos = {v: i for i, v in enumerate(vocab)}
    counts = []
    for s in items:
        c = np.zeros(len(vocab), dtype=np.int64)
        for v in s:
            if not _is_missing(v):
                c[pos[v]] += 1
        counts.append(c)
    return vocab, counts, [sum(_is_missing(v) for v in s) for s in items]


def drift_small_support(a, b, cap):
    """(sorted distinct values, counts in a, counts in b) when a and b have at most cap distinct
    values together, else None."""
    vals = np.unique(np.concatenate([a, b]))
    if vals.size > cap:
        return None
    return vals, np.array([(a == v).sum() for v in vals]), np.array([(b == v).sum() for v in vals])
