"""Prometheus exposition, SLO-exact buckets, inference logger, silent-failure canaries."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from pyperfcore.ops import monitoring as M
from pyperfcore.ops.access import AccessPolicy
from pyperfcore.ops.slo import SLO, SLOTracker

pytest.importorskip("prometheus_client")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402


def _families(text):
    return {f.name: f for f in text_string_to_metric_families(text.decode())}


class FakeBatcher:
    def stats(self):
        return {"queue_depth": 7, "in_flight": 1, "inferences": 120, "executions": 10,
                "batch_size": {"buckets": [(1.0, 2), (8.0, 6), (16.0, 10), (float("inf"), 10)],
                               "sum": 120.0, "count": 10}}


def test_buckets_include_every_slo_threshold_exactly():
    slos = [SLO("a", "latency", 0.99, threshold=0.3), SLO("b", "latency", 0.9, threshold=0.123),
            SLO("c", "availability", 0.999)]
    b = M.latency_buckets(slos)
    assert 0.3 in b and 0.123 in b and set(M.DEFAULT_BUCKETS) <= set(b)
    assert list(b) == sorted(b)
    with pytest.raises(ValueError):
        M.latency_buckets([-1.0])


def test_exposition_and_slo_from_the_exported_histogram():
    slo = SLO("p99", "latency", 0.99, threshold=0.3)
    m = M.Metrics([slo], service="svc")
    rng = np.random.default_rng(0)
    lat = rng.exponential(0.1, 1000)
    for v in lat:
        m.observe_request(float(v), model="clf", version="3")
    m.observe_request(0.01, code="500", model="clf", version="3")
    m.watch_batcher("main", FakeBatcher())
    tr = SLOTracker(slo, resolution_s=1, clock=lambda: 100.0)
    tr.record(99, 100, t=100)
    m.watch_slo(tr)
    m.set_drift("age", 0.31)
    m.add_cost(0.25, "clf")
    m.cache("features", True)
    text = m.exposition()
    fam = _families(text)
    assert "pyperfcore_request_latency_seconds" in fam
    le = {s.labels["le"]: s.value for s in fam["pyperfcore_request_latency_seconds"].samples
          if s.name.endswith("_bucket")}
    assert le["0.3"] == np.count_nonzero(lat <= 0.3) + 1  # the 500 was fast
    assert fam["pyperfcore_queue_depth"].samples[0].value == 7
    assert any(s.name == "pyperfcore_requests_total" and s.labels["code"] == "500"
               for s in fam["pyperfcore_requests"].samples)
    assert fam["pyperfcore_slo_burn_rate"].samples[0].value == pytest.approx(1.0)
    assert fam["pyperfcore_drift_score"].samples[0].value == pytest.approx(0.31)
    assert "pyperfcore_batch_size" in fam
    # the exported histogram feeds an SLO tracker exactly (a bucket sits at the threshold)
    bounds = [float(k) for k in sorted(le, key=float)]
    counts = [le[k] for k in sorted(le, key=float)]
    tr2 = SLOTracker(slo, resolution_s=1)
    tr2.update_from_histogram(bounds, [0] * len(counts), t=1)
    tr2.update_from_histogram(bounds, counts, t=2)
    assert tr2.budget(2).bad == np.count_nonzero(lat > 0.3)
    with m.time_stage("model"):
        pass
    with pytest.raises(TypeError):
        m.watch_batcher("x", object())


def test_inference_logger_samples_rotates_and_redacts(tmp_path):
    pol = AccessPolicy(pii={"inputs.email": "redact"})
    lg = M.InferenceLogger(tmp_path, sampler=M.Sampler("uniform", rate=0.1, slow_s=0.5, seed=1),
                           policy=pol, max_bytes=4096, max_files=3)
    for i in range(2000):
        lg.log(inputs={"email": f"u{i}@x.org", "x": [i, i + 1]}, outputs=[i % 3],
               latency_s=0.9 if i % 100 == 0 else 0.01, model="clf", version=3,
               error="boom" if i % 250 == 0 else None, predicted_class=i % 3)
    lg.close()
    files = lg.files()
    assert 1 <= len(files) <= 3  # rotated, oldest deleted
    recs = lg.read()
    import re
    assert recs and not any(re.fullmatch(r"u\d+@x\.org", str(r["inputs"].get("email")))
                            for r in recs)
    assert all(r["inputs"]["x"][1] == r["inputs"]["x"][0] + 1 for r in recs)
    assert any(r["error"] for r in recs) and any(r["latency_s"] > 0.5 for r in recs)
    assert lg.written > len(recs)  # rotation deleted the oldest
    assert not lg.errors
    with pytest.raises(RuntimeError, match="closed"):
        lg.log(inputs=1)


def test_sampling_strategies_keep_errors_and_slow():
    s = M.Sampler("stratified", rate=0.0, per_class={1: 1.0}, slow_s=0.5, seed=0)
    kept = []
    for i in range(300):
        kept += s.offer({"predicted_class": i % 3, "latency_s": 0.9 if i == 7 else 0.01,
                         "error": "e" if i == 8 else None, "i": i}, t=i)
    ids = {r["i"] for r in kept}
    assert ids == {i for i in range(300) if i % 3 == 1} | {7, 8}
    r = M.Sampler("reservoir", k=10, period_s=100, seed=0)
    out = []
    for i in range(1000):
        out += r.offer({"i": i}, t=i * 0.05)  # 50 s: one window
    assert out == []
    out += r.flush()
    assert len(out) == 10 and len({o["i"] for o in out}) == 10
    assert out[0]["sample_weight"] == pytest.approx(100.0)
    with pytest.raises(ValueError):
        M.Sampler("sometimes")


def test_logger_never_blocks_when_the_writer_is_behind(tmp_path):
    class SlowPolicy:
        def protect(self, rec):
            time.sleep(0.01)
            return rec
    lg = M.InferenceLogger(tmp_path, policy=SlowPolicy(), queue_size=5)
    t = time.perf_counter()
    for i in range(200):
        lg.log(inputs=i)
    elapsed = time.perf_counter() - t
    assert lg.dropped > 150  # the queue was full: dropped and counted, not waited for
    assert elapsed < 1.0     # 200 writes would take >= 2 s if log() waited for the writer
    lg.close()


def test_canary_probe_flags_silent_failures():
    alerts = []
    model = {"broken": False}

    def predict(x):
        return np.asarray(x) * (3 if model["broken"] else 2)
    m = M.Metrics(service="svc")
    probe = M.CanaryProbe([("two", [1.0], [2.0]), ("ints", [1, 2], [2, 4])], predict,
                          on_alert=alerts.append, metrics=m)
    assert all(r.ok for r in probe.run_once()) and not alerts
    model["broken"] = True
    res = probe.run_once()
    assert not any(r.ok for r in res) and not any(r.error for r in res)
    assert len(alerts) == 1 and "expected" in alerts[0][0].detail
    fam = _families(m.exposition())
    assert sum(s.value for s in fam["pyperfcore_canary_probe_failures"].samples
               if s.name.endswith("_total")) == 2
    probe2 = M.CanaryProbe([("x", 1, 2)], lambda x: 1 / 0)
    assert probe2.run_once()[0].error
    with pytest.raises(ValueError):
        M.CanaryProbe([], predict)


def test_tracing_without_opentelemetry_still_measures():
    tr = M.Tracing(attributes={"model.version": "3", "schema": "v2"}, use_otel=False)
    with tr.span("preprocess", batch=4):
        pass
    assert tr.spans[0]["stage"] == "preprocess" and tr.spans[0]["model.version"] == "3"
