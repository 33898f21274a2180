"""Demo stage: distinct users, latency histograms and quantiles.

Every replica of the service keeps small mergeable summaries of its traffic; the fleet combines
them in systems that already exist. Here four simulated replicas each see a share of the
scenario's traffic (``ctx.data['features']['stream']`` and ``ctx.data['traffic']`` when the
scenario stage ran, a synthetic stream otherwise) and keep:

- a DataSketches-compatible HyperLogLog of user ids (the union is written as bytes that the
  ``datasketches`` package, Spark, Druid or BigQuery read back),
- a Redis-format HyperLogLog of the same ids (``SET`` the blob, ``PFCOUNT``/``PFMERGE`` in Redis),
- a latency histogram with the SLO thresholds counted exactly (Prometheus buckets),
- a KLL sketch of a model input feature, and exact moments of it.
"""
from __future__ import annotations

import time

import numpy as np

from pyperfcore.sketches import (HyperLogLog, HyperLogLogUnion, KLLSketch, LatencyHistogram, Moments,
                                 RedisHyperLogLog)

TITLE = "distinct users, latency histograms and quantiles"
SLO_THRESHOLDS_S = (0.025, 0.05, 0.1, 0.25)
REPLICAS = 4


def _traffic(ctx) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(arrival_s, feature values, latency_s) per request."""
    rng = np.random.default_rng(11)
    feats = ctx.data.get("features", {})
    stream = feats.get("stream")
    arrival = ctx.data.get("traffic", {}).get("arrival_s")
    if stream is not None and arrival is not None and len(stream) == len(arrival):
        x = np.asarray(stream, dtype=np.float32).mean(axis=1)  # mean pixel intensity per request
        arrival = np.asarray(arrival, dtype=np.float64)
    else:
        n = 2000 if ctx.quick else 8000
        arrival = np.cumsum(rng.exponential(1 / 400.0, n))
        x = rng.normal(0.3, 0.05, n).astype(np.float32)
    # latency: a service time plus queueing that grows with the local arrival rate (the spike)
    gaps = np.diff(arrival, prepend=arrival[0])
    rate = 1.0 / np.maximum(np.convolve(gaps, np.ones(50) / 50, mode="same"), 1e-6)
    latency = rng.lognormal(np.log(0.012), 0.35, arrival.size) * (1 + (rate / 1500.0) ** 2)
    return arrival, x, latency


def run(ctx) -> dict:
    t0 = time.perf_counter()
    arrival, feature, latency = _traffic(ctx)
    n = arrival.size
    rng = np.random.default_rng(12)
    # user ids: a heavy-tailed population, so many requests come from returning users; the
    # stream is replayed to reach a size where counting distinct users needs a sketch
    reps = 20 if ctx.quick else 100
    users = (rng.zipf(1.2, n * reps) % 3_000_000).astype(np.int64)
    replica_of = rng.integers(0, REPLICAS, n * reps)

    hll, rhll = [], []
    for r in range(REPLICAS):
        ids = users[replica_of == r]
        hll.append(HyperLogLog(lg_k=12).update(ids))
        rhll.append(RedisHyperLogLog().update(ids))
    union = HyperLogLogUnion(12).update_many(hll)  # every replica's sketch in one native call
    fleet = union.get_result("HLL_8")
    redis_fleet = rhll[0]
    for h in rhll[1:]:
        redis_fleet.merge(h)
    exact = int(np.unique(users).size)
    est, lo, hi = fleet.estimate(), fleet.lower_bound(2), fleet.upper_bound(2)
    ctx.log(f"distinct users over {users.size:,} requests on {REPLICAS} replicas: exact {exact:,}, "
            f"HLL {est:,.0f} (95% interval {lo:,.0f}-{hi:,.0f}, error {100 * (est - exact) / exact:+.2f}%), "
            f"Redis HLL {redis_fleet.estimate():,}")

    hll_path = ctx.workdir / "distinct_users.hll"
    hll_path.write_bytes(fleet.to_bytes())
    redis_path = ctx.workdir / "distinct_users.redis-hll"
    redis_path.write_bytes(redis_fleet.to_bytes())
    readback = None
    try:  # the DataSketches package reads our bytes back, when it is installed
        import datasketches

        readback = float(datasketches.hll_sketch.deserialize(hll_path.read_bytes()).get_estimate())
        ctx.log(f"datasketches reads {hll_path.name} back: estimate {readback:,.1f} (ours {est:,.1f})")
    except ImportError:
        ctx.log("datasketches not installed: skipped reading the HLL image back with it")

    # latency histograms per replica, merged; SLO thresholds are exact Prometheus buckets
    lat_rep = rng.integers(0, REPLICAS, n)
    hists = [LatencyHistogram(0.01, SLO_THRESHOLDS_S).update(latency[lat_rep == r]) for r in range(REPLICAS)]
    lat = hists[0]
    for h in hists[1:]:
        lat.merge(h)
    p50, p99, p999 = (lat.quantile(q) for q in (0.5, 0.99, 0.999))
    buckets = lat.prometheus_buckets()
    exact_ok = all(c == int((latency <= le).sum()) for le, c in buckets[:-1])
    ctx.log(f"latency p50 {1e3 * p50:.1f} ms, p99 {1e3 * p99:.1f} ms, p99.9 {1e3 * p999:.1f} ms; "
            f"within 100 ms: {100 * buckets[2][1] / n:.2f}% (exact buckets: {exact_ok})")

    # quantiles and moments of a model input before and after the scenario's drift point
    drift_start = int(ctx.data.get("features", {}).get("drift_start", n // 2))
    halves = {}
    for name, part in (("before", feature[:drift_start]), ("after", feature[drift_start:])):
        k = KLLSketch(200, seed=13).update(part)
        m = Moments().update(part)
        halves[name] = {"p05": float(k.quantile(0.05)), "p50": float(k.quantile(0.5)),
                        "p95": float(k.quantile(0.95)), "mean": m.mean, "std": m.variance() ** 0.5}
    b, a = halves["before"], halves["after"]
    ctx.log(f"mean pixel intensity median {b['p50']:.3f} -> {a['p50']:.3f} after request {drift_start} "
            f"(p95 {b['p95']:.3f} -> {a['p95']:.3f}, std {b['std']:.3f} -> {a['std']:.3f})")

    elapsed = time.perf_counter() - t0
    return {
        "requests": int(users.size), "replicas": REPLICAS, "distinct_users_exact": exact,
        "distinct_users_hll": est, "hll_interval_2sd": [lo, hi], "distinct_users_redis_hll": redis_fleet.estimate(),
        "hll_bytes": str(hll_path), "hll_bytes_size": hll_path.stat().st_size,
        "datasketches_readback_estimate": readback, "redis_blob": str(redis_path),
        "redis_blob_size": redis_path.stat().st_size, "redis_encoding": redis_fleet.encoding,
        "latency_ms": {"p50": 1e3 * p50, "p99": 1e3 * p99, "p99.9": 1e3 * p999},
        "prometheus_buckets": [[le, c] for le, c in buckets], "slo_buckets_exact": exact_ok,
        "feature_quantiles": halves, "duration_s": elapsed,
    }
