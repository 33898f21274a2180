"""``bench-model``: a standard load test through the dynamic batcher with steady, ramp and spike
profiles, reported in one JSON schema (``pyperfcore.bench-model/1``) comparable across teams."""
from __future__ import annotations

import os
import platform
import threading
import time
from typing import Callable, Sequence

import numpy as np

from .capacity import arrival_profile

__all__ = ["bench_model", "SCHEMA"]

SCHEMA = "pyperfcore.bench-model/1"


def _run_profile(batcher, xs, arrivals, wait_s: float) -> tuple:
    lat = np.full(arrivals.size, np.nan)
    sub = np.full(arrivals.size, np.nan)  # when each request was really submitted
    errors = [0]
    done = threading.Event()
    left = [arrivals.size]
    lock = threading.Lock()

    def cb(i, t0):
        def f(fut):
            if fut.exception() is not None:
                errors[0] += 1
            else:
                lat[i] = time.perf_counter() - t0
            with lock:
                left[0] -= 1
                if left[0] == 0:
                    done.set()
        return f
    start = time.perf_counter()
    for i, at in enumerate(arrivals):
        delay = start + at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t0 = time.perf_counter()
        sub[i] = t0 - start
        batcher.submit(xs[i % len(xs)]).add_done_callback(cb(i, t0))
    if arrivals.size:
        done.wait(timeout=wait_s)
    wall = time.perf_counter() - start
    with lock:
        unfinished = left[0]  # a wedged or dead batcher: reported, never waited for forever
    ok = lat[~np.isnan(lat)]
    q = (lambda p: float(np.quantile(ok, p) * 1e3)) if ok.size else (lambda p: None)
    return {"requests": int(arrivals.size), "errors": int(errors[0]),
            "unfinished": int(unfinished),
            "throughput_rps": float(ok.size / wall) if wall > 0 else 0.0,
            "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99)}, lat, sub


def bench_model(fn: Callable, inputs: Sequence, *, profiles=("steady", "ramp", "spike"),
                rps: float = 200.0, duration_s: float = 5.0, max_batch_size: int = 16,
                max_delay_ms: float = 2.0, hourly_price: float | None = None,
                model_name: str = "", seed: int = 0, replicas: int = 1,
                samples: bool = False) -> dict:
    """``fn`` takes a list of inputs and returns a list of outputs (the batcher's contract).

    ``replicas``: model slots of the batcher (``max_concurrent_batches``). ``samples``: also
    return each profile's planned ``arrival_s``, the times requests were really submitted
    (``submitted_s``: the load generator can fall behind) and per-request ``latency_s`` from
    submission (NaN for errors), e.g. to check :func:`pyperfcore.ops.capacity.simulate`
    against the run."""
    try:
        from ..batching import Batcher
    except ImportError as exc:  # pragma: no cover - batching ships with pyperfcore
        raise RuntimeError(f"bench-model needs pyperfcore.batching: {exc}") from exc
    if not inputs:
        raise ValueError("bench-model needs inputs to replay")
    rng = np.random.default_rng(seed)
    out = {"schema": SCHEMA, "model": model_name,
           "machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                       "python": platform.python_version()},
           "config": {"rps": rps, "duration_s": duration_s, "max_batch_size": max_batch_size,
                      "max_delay_ms": max_delay_ms, "replicas": replicas,
                      "hourly_price": hourly_price},
           "profiles": {}}
    for prof in profiles:
        arr = arrival_profile(prof, rps, duration_s, rng)
        with Batcher(fn, max_batch_size=max_batch_size, max_delay_ms=max_delay_ms,
                     max_concurrent_batches=replicas, driver="thread") as b:
            res, lat, sub = _run_profile(b, list(inputs), arr, wait_s=max(30.0, 4 * duration_s))
            st = b.stats()
        if samples:
            res["arrival_s"], res["submitted_s"] = arr.tolist(), sub.tolist()
            res["latency_s"] = lat.tolist()
        ex, inf = st.get("executions", 0), st.get("inferences", 0)
        res["mean_batch_size"] = inf / ex if ex else 0.0
        if hourly_price and res["throughput_rps"] > 0:
            res["cost_per_1k"] = hourly_price / 3600 / res["throughput_rps"] * 1000
        out["profiles"][prof] = res
    return out
