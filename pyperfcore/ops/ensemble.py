"""The ensemble check: what each member of an ensemble buys (its marginal accuracy: the
ensemble's accuracy with it minus without it) against what it costs (latency and money).

Members are given as class-probability arrays on a labelled validation set (or callables that
produce them, which are then timed). The combination is the mean of the members' probabilities
(soft voting) or, with ``weights``, their weighted mean. For each member the check reports its
own accuracy, the leave-one-out marginal accuracy with an exact McNemar test on the requests
where the two ensembles disagree in correctness (so a gain that is noise is not read as one),
its latency and cost, the marginal accuracy per millisecond and per unit of cost, and a verdict:
``drop`` when removing it does not lower accuracy significantly, else ``keep``.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Mapping

import numpy as np

__all__ = ["ensemble_check", "mcnemar_exact"]


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (binomial, p=1/2)."""
    if b < 0 or c < 0:
        raise ValueError("discordant counts are non-negative")
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0 ** n
    return min(1.0, 2.0 * tail)


def _probs(name, p, n: int | None) -> np.ndarray:
    a = np.asarray(p, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] < 2:
        raise ValueError(f"member {name!r}: probabilities must be (n, classes >= 2), got {a.shape}")
    if n is not None and a.shape[0] != n:
        raise ValueError(f"member {name!r}: {a.shape[0]} rows for {n} labels")
    if not np.isfinite(a).all():
        raise ValueError(f"member {name!r}: non-finite probabilities")
    return a


def ensemble_check(members: Mapping[str, object], labels, *, inputs=None,
                   latency_ms: Mapping[str, float] | None = None,
                   cost_per_1k: Mapping[str, float] | None = None,
                   weights: Mapping[str, float] | None = None, alpha: float = 0.05,
                   parallel: bool = True, clock: Callable[[], float] = time.perf_counter) -> dict:
    """Each member's marginal accuracy against its latency and cost.

    ``members``: name -> ``(n, classes)`` probabilities, or a callable ``f(inputs) -> probs``
    (timed once over ``inputs``; its latency is that time per request unless ``latency_ms``
    gives one). ``parallel``: members run side by side (ensemble latency = the slowest) or
    one after another (the sum).
    """
    if len(members) < 2:
        raise ValueError("an ensemble check needs at least two members")
    y = np.asarray(labels).ravel()
    if y.size == 0:
        raise ValueError("need labelled validation data")
    if not 0 < alpha < 1:
        raise ValueError("alpha is in (0, 1)")
    latency_ms = dict(latency_ms or {})
    cost_per_1k = dict(cost_per_1k or {})
    P = {}
    for name, m in members.items():
        if callable(m):
            if inputs is None:
                raise ValueError(f"member {name!r} is a callable: pass inputs=")
            t = clock()
            out = m(inputs)
            dt = clock() - t
            latency_ms.setdefault(name, dt * 1e3 / y.size)
            m = out
        P[name] = _probs(name, m, y.size)
    shapes = {a.shape for a in P.values()}
    if len(shapes) != 1:
        raise ValueError(f"members disagree on the number of classes: {sorted(shapes)}")
    w = {n: float((weights or {}).get(n, 1.0)) for n in P}
    if any(v < 0 for v in w.values()) or sum(w.values()) <= 0:
        raise ValueError("weights are non-negative with a positive sum")

    def correct(names) -> np.ndarray:
        tot = sum(w[n] for n in names)
        if tot <= 0:
            return np.zeros(y.size, bool)
        avg = sum(w[n] * P[n] for n in names) / tot
        return avg.argmax(1) == y

    names = list(P)
    full = correct(names)
    rows = {}
    for n in names:
        rest = [m for m in names if m != n]
        without = correct(rest)
        b = int(np.sum(full & ~without))   # the member fixes these
        c = int(np.sum(~full & without))   # ... and breaks these
        gain = (b - c) / y.size
        p = mcnemar_exact(b, c)
        lat, cost = latency_ms.get(n), cost_per_1k.get(n)
        rows[n] = {"accuracy": float((P[n].argmax(1) == y).mean()), "marginal_accuracy": gain,
                   "fixes": b, "breaks": c, "p_value": p, "latency_ms": lat, "cost_per_1k": cost,
                   "marginal_per_ms": gain / lat if lat else None,
                   "marginal_per_cost": gain / cost if cost else None,
                   "verdict": "keep" if gain > 0 and p < alpha else "drop"}
    lats = [latency_ms[n] for n in names if n in latency_ms]
    ens_lat = (max(lats) if parallel else sum(lats)) if len(lats) == len(names) else None
    costs = [cost_per_1k[n] for n in names if n in cost_per_1k]
    return {"ensemble_accuracy": float(full.mean()), "requests": int(y.size),
            "ensemble_latency_ms": ens_lat, "parallel": parallel,
            "ensemble_cost_per_1k": sum(costs) if len(costs) == len(names) else None,
            "best_single": max(names, key=lambda n: rows[n]["accuracy"]),
            "members": rows}
