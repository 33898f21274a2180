"""Demo stage: traffic with a spike served through the dynamic batcher and the request cache.

Requests arrive from asyncio tasks at a base rate, then a spike, then the base rate again; a
share of them repeat earlier inputs (answered by the request cache). The model is
``ctx.data['model_fn']`` when an earlier stage provides one (a batch function over a stacked
float32 array), else a small numpy MLP. Shows the batch-size distribution, why batches were sent
and the latency percentiles per phase; then thread callers with the default
``caller_runs="auto"``: the model (hundreds of microseconds a batch) is left to the worker threads,
which batch it, while a microsecond lookup is run by the callers themselves.
"""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from ..batching import Batcher
from ..cache import RequestCache


def _numpy_model(rng: np.random.Generator, dim: int = 384, hidden: int = 1536):
    w1 = (rng.standard_normal((dim, hidden)) / np.sqrt(dim)).astype(np.float32)
    w2 = (rng.standard_normal((hidden, dim)) / np.sqrt(hidden)).astype(np.float32)

    def model(x: np.ndarray) -> np.ndarray:
        h = np.maximum(x @ w1, 0)
        return h @ w2

    return model, dim


async def _traffic(b: Batcher, inputs: np.ndarray, phases, repeat_share: float, rng: np.random.Generator):
    lat: dict[str, list[float]] = {name: [] for name, _, _ in phases}
    tasks = []

    async def one(x, phase, t0):
        await b.infer(x)
        lat[phase].append(time.perf_counter() - t0)

    k = 0
    for name, rate, secs in phases:
        n = int(rate * secs)
        start = time.perf_counter()
        for i in range(n):
            # Always yield, so the callers run even when the generator is behind schedule.
            await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
            j = int(rng.integers(0, max(1, k))) if k and rng.random() < repeat_share else k
            k += 1
            tasks.append(asyncio.ensure_future(one(inputs[j % len(inputs)], name, time.perf_counter())))
    await asyncio.gather(*tasks)
    return lat


def run(ctx) -> dict:
    model = ctx.data.get("model_fn")
    if model is not None:
        dim = int(ctx.data.get("model_input_dim", 384))
        source = "ctx.data['model_fn']"
    else:
        model, dim = _numpy_model(ctx.rng)
        source = "numpy MLP 384-1536-384"
    scale = 0.4 if ctx.quick else 1.0
    phases = [("base", 300, 1.5 * scale), ("spike", 1500, 1.0 * scale), ("after", 300, 1.5 * scale)]
    inputs = ctx.rng.standard_normal((4096, dim)).astype(np.float32)
    cache = RequestCache(max_bytes=32 << 20, model_version="demo-v1")

    def batch_fn(x: np.ndarray):
        return list(model(x))

    # The model runs on the batcher's worker thread (numpy releases the GIL), so the event loop
    # keeps accepting requests while a batch computes.
    b = Batcher(batch_fn, max_batch_size=64, max_delay_ms=2, stack=True, cache=cache, driver="thread",
                name="demo")

    async def main():
        return await _traffic(b, inputs, phases, repeat_share=0.2, rng=ctx.rng)

    ctx.log(f"model: {source}; phases: " + ", ".join(f"{n} {r}/s for {s:.1f} s" for n, r, s in phases))
    lat = asyncio.run(main())
    b.close(drain=True, timeout=10)
    st = b.stats()
    cst = cache.stats()
    ctx.log(f"{st['inferences']} requests reached the model in {st['executions']} batches "
            f"(mean batch {st['mean_batch_size']:.1f}); cache answered {st['cache_hits']} hits and "
            f"{st['cache_joined']} joined in-flight duplicates")
    ctx.log(f"model time per batch: mean {st['model_time_s']['sum'] / max(1, st['model_time_s']['count']) * 1e3:.2f} ms")
    ctx.log("batches sent because: " + ", ".join(f"{k} {v}" for k, v in st["sent"].items()))
    hist = st["batch_size"]["buckets"]
    prev = 0
    rows = []
    for le, cum in hist:
        if cum - prev:
            rows.append(f"<= {le:g}: {cum - prev}")
        prev = cum
    ctx.log("batch sizes: " + "; ".join(rows))
    summary = {"model": source, "requests": sum(len(v) for v in lat.values()), "batches": st["executions"],
               "mean_batch_size": st["mean_batch_size"], "sent": st["sent"], "cache_hits": st["cache_hits"],
               "cache_joined": st["cache_joined"], "cache_hit_ratio": cst["hit_ratio"],
               "batch_size_histogram": hist, "latency_ms": {}}
    for name, vals in lat.items():
        a = np.array(vals) * 1e3
        p = {q: float(np.percentile(a, q)) for q in (50, 90, 99)} if len(a) else {}
        summary["latency_ms"][name] = p
        if p:
            ctx.log(f"latency {name:<6} p50 {p[50]:.2f} ms  p90 {p[90]:.2f} ms  p99 {p[99]:.2f} ms  ({len(a)} requests)")
    summary["thread_callers"] = _thread_callers(ctx, model, inputs)
    ctx.data["batching_stats"] = st
    return summary


def _thread_callers(ctx, model, inputs: np.ndarray, threads: int = 4, per: int = 200) -> dict:
    """Plain ``batcher(x)`` calls from threads, caller_runs="auto" (the default)."""
    out = {}
    for label, fn in (("model", lambda xs: list(model(np.stack(xs)))),
                      ("lookup", lambda xs: [float(x[0]) for x in xs])):
        with Batcher(fn, max_batch_size=64, max_delay_ms=0, driver="thread", name=f"demo-{label}") as tb:
            def work(tb=tb):
                for i in range(per):
                    tb(inputs[i % len(inputs)])

            ts = [threading.Thread(target=work) for _ in range(threads)]
            t0 = time.perf_counter()
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            rate = threads * per / (time.perf_counter() - t0)
            st = tb.stats()
        cr = st["caller_runs"]
        who = "callers run the batches" if cr["callers_run_batches"] else "worker threads run and batch them"
        ctx.log(f"threads x{threads}, {label}: {rate:,.0f} calls/s, mean batch {st['mean_batch_size']:.1f}, "
                f"model {cr['model_time_ewma_us']:.1f} us/batch -> {who}")
        out[label] = {"calls_per_s": rate, "mean_batch_size": st["mean_batch_size"],
                      "model_time_ewma_us": cr["model_time_ewma_us"], "callers_run_batches": cr["callers_run_batches"]}
    return out
