"""Capacity planning: a discrete-event simulation of the dynamic batcher (Triton's rule: a batch
is formed only when a replica is free; it leaves at once when full, else when the oldest request
has waited ``max_delay``), recommendations for ``max_batch_size``, ``max_delay_ms`` and the
replica count at an SLO, hardware choice by cost per 1k predictions, a keep-alive window for
cold starts, and a Kubernetes HPA spec that follows from the plan.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

__all__ = ["measure_batch_latency", "batch_latency_curve", "poisson_arrivals", "simulate", "SimResult", "recommend",
           "Plan", "compare_hardware", "keep_alive", "hpa_spec", "arrival_profile"]


def batch_latency_curve(points: Mapping[int, float]) -> Callable[[int], float]:
    """Measured ``{batch_size: seconds}`` -> a function of any batch size (linear
    interpolation, linear extrapolation from the last two points)."""
    if not points:
        raise ValueError("need at least one measured (batch size, seconds) point")
    b = np.array(sorted(points), dtype=np.float64)
    s = np.array([points[int(k)] for k in sorted(points)], dtype=np.float64)
    if np.any(b < 1) or np.any(~np.isfinite(s)) or np.any(s <= 0):
        raise ValueError("batch sizes must be >= 1 and latencies positive and finite")

    def f(n: int) -> float:
        if b.size == 1:
            return float(s[0] * n / b[0]) if n > b[0] else float(s[0])
        if n <= b[-1]:
            return float(np.interp(n, b, s))
        slope = (s[-1] - s[-2]) / (b[-1] - b[-2])
        return float(s[-1] + slope * (n - b[-1]))
    return f


def measure_batch_latency(fn: Callable, make_batch: Callable[[int], object],
                          sizes: Sequence[int] = (1, 2, 4, 8, 16, 32), *, repeats: int = 7,
                          warmup: int = 2, stat: str = "median",
                          clock: Callable[[], float] | None = None) -> dict:
    """The measured batch-latency curve ``{batch size: seconds}`` of ``fn`` on
    ``make_batch(size)`` (what :func:`batch_latency_curve`, :func:`simulate` and
    :func:`recommend` take): the ``median`` (or ``min``: the undisturbed time on a busy
    host) of ``repeats`` runs after ``warmup`` ones."""
    import time

    clock = clock or time.perf_counter
    if repeats < 1 or warmup < 0:
        raise ValueError("need repeats >= 1 and warmup >= 0")
    if stat not in ("median", "min"):
        raise ValueError("stat is median or min")
    out = {}
    for n in sizes:
        if int(n) < 1:
            raise ValueError(f"batch sizes are >= 1, got {n}")
        batch = make_batch(int(n))
        for _ in range(warmup):
            fn(batch)
        ts = []
        for _ in range(repeats):
            t = clock()
            fn(batch)
            ts.append(clock() - t)
        out[int(n)] = float(np.median(ts) if stat == "median" else np.min(ts))
    return out


def poisson_arrivals(rate: float, duration_s: float, rng: np.random.Generator) -> np.ndarray:
    if rate <= 0 or duration_s <= 0:
        raise ValueError("rate and duration must be positive")
    n = rng.poisson(rate * duration_s)
    return np.sort(rng.uniform(0, duration_s, n))


def arrival_profile(kind: str, base_rps: float, duration_s: float, rng: np.random.Generator,
                    *, peak_factor: float = 3.0) -> np.ndarray:
    """Arrival times for the standard load profiles: ``steady``, ``ramp`` (0 -> peak linearly)
    or ``spike`` (base, with peak_factor x base in the middle fifth), by thinning."""
    if kind not in ("steady", "ramp", "spike"):
        raise ValueError("profile is steady, ramp or spike")
    peak = base_rps * (peak_factor if kind != "steady" else 1.0)
    t = poisson_arrivals(peak, duration_s, rng)
    if kind == "steady":
        return t
    if kind == "ramp":
        rate = peak * t / duration_s
    else:
        mid = (t > 0.4 * duration_s) & (t < 0.6 * duration_s)
        rate = np.where(mid, peak, base_rps)
    return t[rng.random(t.size) < rate / peak]


@dataclass
class SimResult:
    latency: np.ndarray  # per request, seconds (queue + batch)
    batch_sizes: np.ndarray
    busy_fraction: float

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.latency, q)) if self.latency.size else 0.0

    def summary(self) -> dict:
        return {"p50_ms": self.quantile(0.5) * 1e3, "p90_ms": self.quantile(0.9) * 1e3,
                "p99_ms": self.quantile(0.99) * 1e3,
                "mean_batch": float(self.batch_sizes.mean()) if self.batch_sizes.size else 0.0,
                "busy_fraction": self.busy_fraction, "requests": int(self.latency.size)}


def simulate(arrivals, batch_latency: Callable[[int], float], *, max_batch_size: int,
             max_delay_s: float, replicas: int = 1) -> SimResult:
    """Per-request latency of a dynamic batcher with ``replicas`` model instances."""
    arr = np.asarray(arrivals, dtype=np.float64)
    if arr.ndim != 1 or (arr.size and np.any(np.diff(arr) < 0)):
        raise ValueError("arrivals must be a sorted 1-D array of times")
    if max_batch_size < 1 or replicas < 1 or max_delay_s < 0:
        raise ValueError("need max_batch_size >= 1, replicas >= 1, max_delay_s >= 0")
    n = arr.size
    lat = np.empty(n)
    sizes = []
    free = [0.0] * replicas
    busy = 0.0
    i = 0
    B = int(max_batch_size)
    while i < n:
        r_free = heapq.heappop(free)
        ready = max(r_free, arr[i])
        if i + B - 1 < n and arr[i + B - 1] <= ready:
            send, size = ready, B
        else:
            full_at = arr[i + B - 1] if i + B - 1 < n else math.inf
            send = max(ready, min(arr[i] + max_delay_s, full_at))
            k = int(np.searchsorted(arr, send, side="right"))
            size = min(B, k - i)
        d = batch_latency(size)
        fin = send + d
        busy += d
        lat[i:i + size] = fin - arr[i:i + size]
        sizes.append(size)
        heapq.heappush(free, fin)
        i += size
    span = (max(free) - arr[0]) if n else 0.0
    return SimResult(lat, np.asarray(sizes), busy / (span * replicas) if span > 0 else 0.0)


@dataclass
class Plan:
    max_batch_size: int
    max_delay_ms: float
    replicas: int
    p99_ms: float
    mean_batch: float
    busy_fraction: float
    cost_per_1k: float | None
    meets_slo: bool
    considered: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d.pop("considered")
        return d


def recommend(curve: Callable[[int], float] | Mapping[int, float], arrival_rps: float, *,
              slo_seconds: float, quantile: float = 0.99, hourly_price: float | None = None,
              batch_sizes: Sequence[int] = (1, 2, 4, 8, 16, 32, 64),
              delays_ms: Sequence[float] = (0, 1, 2, 5, 10), max_replicas: int = 64,
              duration_s: float = 60.0, seed: int = 0, arrivals=None) -> Plan:
    """The fewest replicas, and then the (batch size, delay) with the lowest tail, whose
    simulated ``quantile`` latency meets ``slo_seconds`` at ``arrival_rps`` (Poisson unless
    ``arrivals`` are given). ``meets_slo`` is False (with the best found) if none does."""
    f = batch_latency_curve(curve) if isinstance(curve, Mapping) else curve
    rng = np.random.default_rng(seed)
    arr = np.asarray(arrivals) if arrivals is not None else \
        poisson_arrivals(arrival_rps, duration_s, rng)
    # lower bound on replicas from throughput at the largest batch
    best_tput = max(b / f(b) for b in batch_sizes)
    r = max(1, int(math.ceil(arrival_rps / best_tput)))
    considered, best = [], None
    while r <= max_replicas:
        for b in batch_sizes:
            for d in delays_ms:
                res = simulate(arr, f, max_batch_size=b, max_delay_s=d / 1e3, replicas=r)
                q = res.quantile(quantile)
                s = res.summary()
                considered.append({"replicas": r, "max_batch_size": b, "max_delay_ms": d,
                                   "p_ms": q * 1e3, **s})
                if best is None or (q, -b) < (best[0], -best[1]):
                    best = (q, b, d, res)
        if best[0] <= slo_seconds:
            break
        r += 1
        best = None if r <= max_replicas else best
    r = min(r, max_replicas)
    q, b, d, res = best
    cost = (r * hourly_price / (3600 * arrival_rps) * 1000) if hourly_price else None
    return Plan(b, d, r, q * 1e3, float(res.batch_sizes.mean()), res.busy_fraction, cost,
                q <= slo_seconds, considered)


def compare_hardware(options: Mapping[str, tuple], arrival_rps: float, *, slo_seconds: float,
                     **kw) -> dict:
    """``{name: (latency curve, hourly price)}`` -> each one's plan and the cheapest per 1k
    predictions among those that meet the SLO."""
    plans = {name: recommend(curve, arrival_rps, slo_seconds=slo_seconds, hourly_price=price,
                             **kw) for name, (curve, price) in options.items()}
    ok = {n: p for n, p in plans.items() if p.meets_slo}
    choice = min(ok, key=lambda n: ok[n].cost_per_1k) if ok else None
    return {"choice": choice, "plans": {n: p.to_dict() for n, p in plans.items()}}


def keep_alive(idle_gaps_s, *, cold_start_s: float, hourly_price: float,
               coverage: float = 0.95) -> dict:
    """How long to keep an idle replica warm: the ``coverage`` quantile of observed idle gaps
    (so that share of requests after an idle spell find a warm replica), and what it costs per
    gap against the cold-start seconds it saves."""
    g = np.asarray(idle_gaps_s, dtype=np.float64)
    if g.size == 0:
        return {"keep_alive_s": 0.0, "reason": "no idle gaps observed"}
    if np.any(g < 0) or np.isnan(g).any():
        raise ValueError("idle gaps are non-negative seconds")
    ka = float(np.quantile(g, coverage))
    warm_cost = float(np.minimum(g, ka).mean()) * hourly_price / 3600
    return {"keep_alive_s": ka, "cold_starts_avoided": float((g <= ka).mean()),
            "cold_start_s": cold_start_s, "cost_per_gap": warm_cost,
            "cold_seconds_saved_per_gap": float((g <= ka).mean() * cold_start_s)}


def hpa_spec(name: str, plan: Plan, *, metric: str = "pyperfcore_queue_depth",
             min_replicas: int | None = None, max_replicas: int | None = None,
             target: str = "Deployment") -> dict:
    """``autoscaling/v2`` HorizontalPodAutoscaler on queue depth per pod: the target is one full
    batch waiting per replica, the depth at which the plan's batcher still meets its SLO.

    ``target`` is ``Deployment`` (apps/v1) or ``Rollout`` (Argo Rollouts, which has the scale
    subresource an HPA needs). Checked against the official schema by
    :func:`pyperfcore.ops.k8s.validate` in the tests."""
    refs = {"Deployment": "apps/v1", "Rollout": "argoproj.io/v1alpha1"}
    if target not in refs:
        raise ValueError(f"target is one of {sorted(refs)}, got {target!r}")
    lo = min_replicas if min_replicas is not None else max(1, plan.replicas)
    hi = max_replicas if max_replicas is not None else max(lo, plan.replicas * 3)
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": refs[target], "kind": target,
                                        "name": name},
                     "minReplicas": lo, "maxReplicas": hi,
                     "metrics": [{"type": "Pods", "pods": {
                         "metric": {"name": metric},
                         "target": {"type": "AverageValue",
                                    "averageValue": str(plan.max_batch_size)}}}],
                     "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}}}
