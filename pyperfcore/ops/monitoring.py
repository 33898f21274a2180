"""Observability: Prometheus metrics, OpenTelemetry spans, an inference logger and silent-failure
canaries.

``prometheus_client`` and ``opentelemetry`` are imported only when used (``pip install
prometheus_client`` / ``opentelemetry-sdk``); the logger and canaries need neither.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["DEFAULT_BUCKETS", "read_parquet_log", "latency_buckets", "Metrics", "Tracing", "InferenceLogger",
           "Sampler", "CanaryProbe", "ProbeResult"]

# prometheus_client's default histogram buckets (seconds)
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)


def latency_buckets(thresholds: Iterable[float] = (), base: Sequence[float] = DEFAULT_BUCKETS
                    ) -> tuple:
    """``base`` plus every SLO threshold, exactly (a latency SLO can only be read off a histogram
    that has a bucket bound at its threshold). Accepts SLO objects too."""
    ts = []
    for t in thresholds:
        v = getattr(t, "threshold", t) if not isinstance(t, (int, float)) else t
        if getattr(t, "kind", "latency") != "latency" or v is None:
            continue
        v = float(v)
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"latency threshold must be positive and finite, got {v}")
        ts.append(v)
    return tuple(sorted(set(float(b) for b in base) | set(ts)))


def _prom():
    try:
        import prometheus_client
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError("Prometheus export needs prometheus_client: "
                                  "pip install prometheus_client", name="prometheus_client") from exc
    return prometheus_client


class Metrics:
    """Every pyperfcore metric on one ``prometheus_client`` registry.

    Request path: :meth:`observe_request` (latency histogram whose buckets include each SLO
    threshold, request counter by status code), :meth:`observe_stage`. Pull sources, read at
    scrape time: :meth:`watch_batcher` (anything with ``stats()`` in the shape of
    :meth:`pyperfcore.batching.Batcher.stats`), :meth:`watch_slo` (an ``SLOTracker``),
    :meth:`set_drift`, :meth:`add_cost`, :meth:`cache`.
    """

    def __init__(self, slos: Iterable = (), *, service: str = "pyperfcore", registry=None,
                 namespace: str = "pyperfcore"):
        pc = _prom()
        self._pc = pc
        self.registry = registry if registry is not None else pc.CollectorRegistry()
        self.service = service
        self.buckets = latency_buckets(slos)
        r, ns = self.registry, namespace
        L = ["service", "model", "version"]
        self.request_latency = pc.Histogram(f"{ns}_request_latency_seconds",
                                            "End-to-end request latency", L,
                                            buckets=self.buckets, registry=r)
        self.requests = pc.Counter(f"{ns}_requests", "Requests by status code", L + ["code"],
                                   registry=r)
        self.stage_latency = pc.Histogram(f"{ns}_stage_latency_seconds", "Latency per stage",
                                          ["service", "stage"], buckets=self.buckets, registry=r)
        self.cache_events = pc.Counter(f"{ns}_cache", "Cache lookups", ["service", "cache",
                                                                        "result"], registry=r)
        self.drift = pc.Gauge(f"{ns}_drift_score", "Drift score per feature",
                              ["service", "feature", "method"], registry=r)
        self.cost = pc.Counter(f"{ns}_cost_dollars", "Cost accrued", ["service", "model"],
                               registry=r)
        self.silent_failures = pc.Counter(f"{ns}_canary_probe_failures",
                                          "Known-answer probes that returned a wrong answer",
                                          ["service", "probe"], registry=r)
        self._batchers: dict = {}
        self._slos: list = []
        r.register(_Collector(self))

    def observe_request(self, latency_s: float, *, code: str = "200", model: str = "",
                        version: str = "") -> None:
        self.request_latency.labels(self.service, model, str(version)).observe(latency_s)
        self.requests.labels(self.service, model, str(version), str(code)).inc()

    @contextlib.contextmanager
    def time_stage(self, stage: str):
        t = time.perf_counter()
        try:
            yield
        finally:
            self.stage_latency.labels(self.service, stage).observe(time.perf_counter() - t)

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_latency.labels(self.service, stage).observe(seconds)

    def cache(self, name: str, hit: bool) -> None:
        self.cache_events.labels(self.service, name, "hit" if hit else "miss").inc()

    def set_drift(self, feature: str, score: float, method: str = "psi") -> None:
        self.drift.labels(self.service, feature, method).set(score)

    def add_cost(self, dollars: float, model: str = "") -> None:
        self.cost.labels(self.service, model).inc(dollars)

    def watch_batcher(self, name: str, batcher) -> None:
        if not callable(getattr(batcher, "stats", None)):
            raise TypeError("watch_batcher needs an object with stats()")
        self._batchers[name] = batcher

    def watch_slo(self, tracker) -> None:
        self._slos.append(tracker)

    def exposition(self) -> bytes:
        """The text exposition format, as a scrape would see it."""
        return self._pc.generate_latest(self.registry)

    def serve(self, port: int = 9464, addr: str = "127.0.0.1"):
        """Start the exposition HTTP server on a daemon thread; returns (server, thread)."""
        return self._pc.start_http_server(port, addr=addr, registry=self.registry)


class _Collector:
    """Scrape-time gauges from batchers and SLO trackers."""

    def __init__(self, m: Metrics):
        self.m = m

    def describe(self):
        return []

    def collect(self):
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily)
        m = self.m
        depth = GaugeMetricFamily("pyperfcore_queue_depth", "Requests waiting in the batcher",
                                  labels=["service", "batcher"])
        infl = GaugeMetricFamily("pyperfcore_batches_in_flight", "Batches running",
                                 labels=["service", "batcher"])
        inf = CounterMetricFamily("pyperfcore_inferences", "Requests run by the model",
                                  labels=["service", "batcher"])
        exe = CounterMetricFamily("pyperfcore_executions", "Batches run by the model",
                                  labels=["service", "batcher"])
        fams = [depth, infl, inf, exe]
        for name, b in m._batchers.items():
            s = b.stats()
            lab = [m.service, name]
            depth.add_metric(lab, float(s.get("queue_depth", 0)))
            infl.add_metric(lab, float(s.get("in_flight", 0)))
            inf.add_metric(lab, float(s.get("inferences", 0)))
            exe.add_metric(lab, float(s.get("executions", 0)))
            for key, metric in (("batch_size", "pyperfcore_batch_size"),
                                ("queue_wait_s", "pyperfcore_queue_wait_seconds"),
                                ("model_time_s", "pyperfcore_model_time_seconds")):
                h = s.get(key)
                if not h:
                    continue
                fam = HistogramMetricFamily(metric, f"batcher {key}", labels=["service", "batcher"])
                fam.add_metric(lab, [(_fmt(ub), c) for ub, c in h["buckets"]], h.get("sum", 0.0))
                fams.append(fam)
        burn = GaugeMetricFamily("pyperfcore_slo_burn_rate", "Error budget burn rate",
                                 labels=["service", "slo", "window"])
        rem = GaugeMetricFamily("pyperfcore_slo_budget_remaining", "Error budget remaining",
                                labels=["service", "slo"])
        alerts = GaugeMetricFamily("pyperfcore_slo_alerts_firing", "Burn-rate alerts firing",
                                   labels=["service", "slo", "severity"])
        for tr in m._slos:
            st = tr.evaluate()
            for w, v in st.burn_rates.items():
                burn.add_metric([m.service, tr.slo.name, w], v)
            rem.add_metric([m.service, tr.slo.name], st.budget.remaining)
            for sev in ("page", "ticket"):
                alerts.add_metric([m.service, tr.slo.name, sev],
                                  float(sum(a.severity == sev for a in st.alerts)))
        fams += [burn, rem, alerts]
        yield from fams


def _fmt(ub: float) -> str:
    return "+Inf" if ub == math.inf else repr(float(ub))


# ---------------------------------------------------------------------- tracing
class Tracing:
    """Spans around pre-processing, queue wait, model and post-processing with the model
    version, input schema and feature-store versions as attributes.

    Uses OpenTelemetry when installed (``tracer`` from ``opentelemetry.trace`` or the one given);
    without it, :meth:`span` still measures and keeps the last ``keep`` spans in ``self.spans``
    so nothing in the request path changes.
    """

    def __init__(self, *, tracer=None, attributes: Mapping | None = None, keep: int = 1000,
                 use_otel: bool | None = None):
        self.attributes = dict(attributes or {})
        self.spans: list = []
        self.keep = keep
        self._tracer = tracer
        if tracer is None and use_otel is not False:
            try:
                from opentelemetry import trace
                self._tracer = trace.get_tracer("pyperfcore")
            except ModuleNotFoundError:
                if use_otel:
                    raise ModuleNotFoundError("tracing needs opentelemetry-sdk: pip install "
                                              "opentelemetry-sdk", name="opentelemetry")

    @contextlib.contextmanager
    def span(self, stage: str, **attributes):
        attrs = {**self.attributes, **attributes, "pyperfcore.stage": stage}
        t = time.perf_counter()
        if self._tracer is not None:
            with self._tracer.start_as_current_span(f"pyperfcore.{stage}",
                                                    attributes=_otel_attrs(attrs)) as sp:
                yield sp
        else:
            yield None
        rec = {"stage": stage, "seconds": time.perf_counter() - t, **attrs}
        self.spans.append(rec)
        if len(self.spans) > self.keep:
            del self.spans[: len(self.spans) - self.keep]


def _otel_attrs(d: Mapping) -> dict:
    return {k: v if isinstance(v, (str, bool, int, float)) else str(v) for k, v in d.items()}


# ---------------------------------------------------------------------- inference logger
class Sampler:
    """Which requests the inference logger keeps.

    strategy : ``all``, ``uniform`` (keep with probability ``rate``), ``reservoir`` (a uniform
        sample of ``k`` per ``period_s`` window, written when the window closes), or
        ``stratified`` (per predicted class ``rate``, with ``per_class`` overriding it).
    Errors and requests slower than ``slow_s`` are always kept (``keep_errors``).
    """

    def __init__(self, strategy: str = "all", *, rate: float = 1.0, k: int = 1000,
                 period_s: float = 60.0, per_class: Mapping | None = None,
                 slow_s: float | None = None, keep_errors: bool = True, seed: int | None = None):
        if strategy not in ("all", "uniform", "reservoir", "stratified"):
            raise ValueError("strategy is all, uniform, reservoir or stratified")
        if not 0 <= rate <= 1:
            raise ValueError("rate is a probability")
        if k < 1 or period_s <= 0:
            raise ValueError("need k >= 1 and period_s > 0")
        self.strategy, self.rate, self.k, self.period_s = strategy, rate, int(k), period_s
        self.per_class = dict(per_class or {})
        self.slow_s, self.keep_errors = slow_s, keep_errors
        self._rng = random.Random(seed)
        self._res: list = []
        self._seen = 0
        self._win_start: float | None = None

    def always(self, rec: Mapping) -> bool:
        if self.keep_errors and rec.get("error"):
            return True
        lat = rec.get("latency_s")
        return self.slow_s is not None and lat is not None and lat > self.slow_s

    def offer(self, rec: dict, t: float) -> list:
        """Records to write now (possibly none, possibly a closed reservoir window)."""
        out = []
        if self.strategy == "reservoir":
            if self._win_start is None:
                self._win_start = t
            if t - self._win_start >= self.period_s:
                out.extend(self.flush())
                self._win_start = t
            if self.always(rec):
                out.append(rec)
                return out
            self._seen += 1
            if len(self._res) < self.k:
                self._res.append(rec)
            else:
                j = self._rng.randrange(self._seen)
                if j < self.k:
                    self._res[j] = rec
            return out
        if self.always(rec) or self.strategy == "all":
            return [rec]
        p = self.rate
        if self.strategy == "stratified":
            p = self.per_class.get(rec.get("predicted_class"), self.rate)
        if self._rng.random() < p:
            rec["sample_weight"] = 1.0 / p  # lets analyses reweight to the full traffic
            return [rec]
        return []

    def flush(self) -> list:
        out = self._res
        for r in out:
            r["sample_weight"] = max(1.0, self._seen / max(1, len(out)))
        self._res, self._seen = [], 0
        return out


class InferenceLogger:
    """Per-request records (inputs, outputs, latency, model version, schema and feature
    versions) written to rotating JSON-lines files by a background thread.

    :meth:`log` never blocks: it samples, applies the access policy (anything with
    ``protect(record) -> record``, e.g. :class:`pyperfcore.ops.AccessPolicy`) on the writer
    thread, and puts the record on a bounded queue; when the queue is full the record is dropped
    and counted in ``dropped``. Files rotate at ``max_bytes`` and the oldest beyond
    ``max_files`` are deleted. ``format='parquet'`` writes one Parquet file per rotation
    (needs pyarrow).
    """

    def __init__(self, directory, *, sampler: Sampler | None = None, policy=None,
                 max_bytes: int = 64 << 20, max_files: int = 20, queue_size: int = 10_000,
                 format: str = "jsonl", prefix: str = "inference",
                 clock: Callable[[], float] = time.time):
        if format not in ("jsonl", "parquet"):
            raise ValueError("format is jsonl or parquet")
        if format == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ModuleNotFoundError as exc:
                raise ModuleNotFoundError("format='parquet' needs pyarrow: pip install pyarrow",
                                          name="pyarrow") from exc
        if max_bytes < 1024 or max_files < 1:
            raise ValueError("need max_bytes >= 1024 and max_files >= 1")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sampler = sampler or Sampler()
        self.policy, self.format, self.prefix, self.clock = policy, format, prefix, clock
        self.max_bytes, self.max_files = int(max_bytes), int(max_files)
        self._q: queue.Queue = queue.Queue(maxsize=queue_size)
        self.dropped = 0
        self.written = 0
        self.errors: list = []
        self._closed = False
        self._lock = threading.Lock()
        self._seq = 0
        self._fh = None
        self._size = 0
        self._rows: list = []
        self._thread = threading.Thread(target=self._run, name="pyperfcore-inference-log",
                                        daemon=True)
        self._thread.start()

    def log(self, *, inputs=None, outputs=None, latency_s: float | None = None,
            model: str = "", version="", schema: str | None = None,
            features: Mapping | None = None, error: str | None = None,
            predicted_class=None, request_id: str | None = None, **extra) -> bool:
        """Offer one request; returns True if it was queued for writing."""
        if self._closed:
            raise RuntimeError("InferenceLogger is closed")
        t = self.clock()
        rec = {"ts": t, "request_id": request_id, "model": model, "version": version,
               "schema": schema, "features": dict(features or {}), "latency_s": latency_s,
               "error": error, "predicted_class": predicted_class, "inputs": inputs,
               "outputs": outputs, **extra}
        with self._lock:
            out = self.sampler.offer(rec, t)
        ok = False
        for r in out:
            try:
                self._q.put_nowait(r)
                ok = True
            except queue.Full:
                self.dropped += 1
        return ok

    def _path(self) -> Path:
        ext = "jsonl" if self.format == "jsonl" else "parquet"
        return self.dir / f"{self.prefix}-{int(time.time() * 1000):013d}-{self._seq:05d}.{ext}"

    def _rotate(self) -> None:
        self._close_file()
        files = sorted(self.dir.glob(f"{self.prefix}-*.*"))
        for old in files[: max(0, len(files) - self.max_files + 1)]:
            old.unlink(missing_ok=True)
        self._seq += 1

    def _close_file(self) -> None:
        if self.format == "jsonl":
            if self._fh is not None:
                self._fh.close()
                self._fh = None
        elif self._rows:
            _write_parquet(self._rows, self._path())
            self._rows = []
        self._size = 0

    def _write(self, rec: dict) -> None:
        if self.policy is not None:
            rec = self.policy.protect(rec)
        line = json.dumps(rec, default=_json_default, separators=(",", ":")) + "\n"
        if self._size + len(line) > self.max_bytes and self._size > 0:
            self._rotate()
        if self.format == "jsonl":
            if self._fh is None:
                self._fh = open(self._path(), "a", encoding="utf-8")
            self._fh.write(line)
        else:
            self._rows.append(rec)
        self._size += len(line)
        self.written += 1

    def _run(self) -> None:
        while True:
            rec = self._q.get()
            if rec is None:
                self._q.task_done()
                break
            try:
                self._write(rec)
            except Exception as exc:  # keep serving; report what failed
                self.errors.append(repr(exc))
            finally:
                self._q.task_done()

    def flush(self) -> None:
        """Block until everything queued so far is written (not for the request path)."""
        self._q.join()
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._closed:
            return
        with self._lock:
            rest = self.sampler.flush() if self.sampler.strategy == "reservoir" else []
        for r in rest:
            self._q.put(r)
        self._closed = True
        self._q.put(None)
        self._thread.join()
        self._close_file()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def files(self) -> list:
        return sorted(self.dir.glob(f"{self.prefix}-*.*"))

    def read(self) -> list:
        """All records in the current files (JSON lines or Parquet), oldest first."""
        out = []
        for f in self.files():
            if f.suffix == ".jsonl":
                out.extend(json.loads(line) for line in f.read_text().splitlines() if line)
            elif f.suffix == ".parquet":
                out.extend(read_parquet_log(f))
        return out


_SCALARS = (bool, int, float, str)
_JSON_COLS_KEY = b"pyperfcore.json_columns"


def _write_parquet(rows: list, path: Path) -> None:
    """One Parquet file; a column whose values are not all one scalar type (inputs, outputs,
    feature maps, mixed types) is stored as JSON text, and named in the file's metadata so
    :func:`read_parquet_log` can decode it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    keys = list(dict.fromkeys(k for r in rows for k in r))
    json_cols = []
    for k in keys:
        types = {type(r[k]) for r in rows if r.get(k) is not None}
        if types - {int, float} and not (len(types) == 1 and types <= set(_SCALARS)):
            json_cols.append(k)
    cols = {}
    for k in keys:
        vals = [r.get(k) for r in rows]
        if k in json_cols:
            vals = [None if v is None else json.dumps(v, default=_json_default) for v in vals]
        cols[k] = vals
    table = pa.table(cols).replace_schema_metadata({_JSON_COLS_KEY: json.dumps(json_cols)})
    pq.write_table(table, path)


def read_parquet_log(path) -> list:
    """Records of one Parquet inference-log file, JSON columns decoded."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    meta = table.schema.metadata or {}
    json_cols = set(json.loads(meta.get(_JSON_COLS_KEY, b"[]")))
    rows = table.to_pylist()
    for r in rows:
        for k in json_cols:
            if r.get(k) is not None:
                r[k] = json.loads(r[k])
    return rows


def _json_default(o):
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.integer, np.floating, np.bool_)):
        return o.item()
    return str(o)


# ---------------------------------------------------------------------- silent-failure canaries
class ProbeResult:
    __slots__ = ("name", "ok", "error", "latency_s", "detail")

    def __init__(self, name, ok, error, latency_s, detail):
        self.name, self.ok, self.error, self.latency_s, self.detail = (name, ok, error,
                                                                       latency_s, detail)

    def __repr__(self):
        return f"ProbeResult({self.name!r}, ok={self.ok}, {self.detail})"


class CanaryProbe:
    """Known inputs with known answers, replayed through the live path; a wrong answer that
    came back without an error (a 'silent failure': 200 OK, wrong prediction) is an alert.

    cases : ``[(name, input, expected), ...]``.
    predict : the live path (the router, the batcher, an HTTP client...).
    compare : ``compare(output, expected) -> bool``; default exact equality, or
        ``np.allclose`` with ``atol`` for float arrays.
    on_alert : called with the list of failing :class:`ProbeResult`.
    """

    def __init__(self, cases: Sequence, predict: Callable, *, compare: Callable | None = None,
                 atol: float = 1e-6, on_alert: Callable | None = None, metrics: Metrics | None = None):
        cases = list(cases)
        if not cases:
            raise ValueError("a canary probe needs at least one known case")
        for c in cases:
            if len(c) != 3:
                raise ValueError("cases are (name, input, expected) triples")
        self.cases, self.predict, self.on_alert, self.metrics = cases, predict, on_alert, metrics
        self.compare = compare or (lambda out, exp: _equal(out, exp, atol))
        self.runs = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> list:
        results = []
        for name, x, expected in self.cases:
            t = time.perf_counter()
            try:
                out = self.predict(x)
            except Exception as exc:
                results.append(ProbeResult(name, False, True, time.perf_counter() - t,
                                           f"raised {exc!r}"))
                continue
            dt = time.perf_counter() - t
            try:
                ok = bool(self.compare(out, expected))
            except Exception as exc:
                ok, out = False, f"compare raised {exc!r}"
            results.append(ProbeResult(name, ok, False, dt,
                                       "ok" if ok else f"expected {expected!r}, got {out!r}"))
        self.runs += 1
        bad = [r for r in results if not r.ok]
        self.failures += len(bad)
        if bad:
            if self.metrics is not None:
                for r in bad:
                    self.metrics.silent_failures.labels(self.metrics.service, r.name).inc()
            if self.on_alert is not None:
                self.on_alert(bad)
        return results

    def start(self, interval_s: float) -> None:
        """Replay every ``interval_s`` seconds on a daemon thread until :meth:`stop`."""
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        if self._thread is not None:
            raise RuntimeError("probe already started")

        def loop():
            while not self._stop.wait(interval_s):
                self.run_once()
        self._thread = threading.Thread(target=loop, name="pyperfcore-canary-probe", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def _equal(out, exp, atol) -> bool:
    a, b = np.asarray(out), np.asarray(exp)
    if a.shape != b.shape:
        return False
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        return bool(np.allclose(a, b, atol=atol, rtol=0, equal_nan=False))
    return bool(np.array_equal(a, b))
