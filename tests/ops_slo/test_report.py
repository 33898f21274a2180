"""The demo report on a synthetic context: every plot drawn from the data the stages leave,
well-formed self-contained SVG, strict JSON, and graceful notes when stages did not run."""
from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pyperfcore.demo import DemoContext
from pyperfcore.demo import report as RP

SVG_NS = "{http://www.w3.org/2000/svg}"


def _synthetic_ctx(tmp_path):
    rng = np.random.default_rng(0)
    ctx = DemoContext(workdir=tmp_path)
    n = 3000
    rates = np.full(n, 400.0)
    rates[1200:1800] *= 6
    arrival = np.cumsum(rng.exponential(1 / rates))
    ref = rng.normal(0.3, 0.1, (1000, 8))
    stream = rng.normal(0.3, 0.1, (n, 8))
    stream[1500:] += 0.15  # injected drift
    stream[:, 0] = ref[0, 0] = 0.5  # a constant column must not break the drift score
    ref[:, 0] = 0.5
    ctx.data.update(
        traffic={"arrival_s": arrival, "spike": (1200, 1800)},
        features={"reference": ref, "stream": stream, "drift_start": 1500},
        batching_stats={"batch_size": {"buckets": [(1.0, 5), (2.0, 9), (4.0, 20), (8.0, 41),
                                                   (float("inf"), 41)]}},
        slo_timeline=[{"minute": m, "p50_ms": 80.0, "p90_ms": 120.0 + (300 if 60 <= m < 70 else 0),
                       "p99_ms": 200.0 + (700 if 60 <= m < 70 else 0), "threshold_ms": 300.0,
                       "requests": 1200, "lat:burn_5m": 30.0 if 60 <= m < 70 else 0.5,
                       "lat:burn_1h": 8.0 if 60 <= m < 75 else 0.4, "alerts": []}
                      for m in range(1, 121)],
        slo_events=[{"t_min": 62.0, "event": "firing", "slo": "lat", "tier": "page-fast",
                     "severity": "page"},
                    {"t_min": 75.0, "event": "resolved", "slo": "lat", "tier": "page-fast",
                     "severity": "page"}],
        slo_spike_min=(60, 70),
        canary_timeline={"requests": [0, 50, 100, 400, 450], "weight": [5, 5, 5, 25, 0],
                         "events": [{"request": 300, "weight": 5, "kind": "canary_analysis",
                                     "verdict": "pass"},
                                    {"request": 450, "weight": 25, "kind": "rollback",
                                     "verdict": None}],
                         "agreement_x": [100, 200, 300, 400], "agreement": [1.0, 0.95, 0.7, 0.6]},
    )
    ctx.results.update(
        scenario={"requests": n, "accuracy": 0.97, "seconds": 1.2},
        drift={"error": "RuntimeError: boom", "seconds": 0.1},
        quant={"skipped": "missing torch"},
        release={"rollback_reason": "canary analysis fail at 25% (agreement)",
                 "diagnosis": [{"cause": "data", "score": 0.9, "evidence": ["PSI 0.4 on f3"]}]},
    )
    return ctx


def _svgs(html):
    return re.findall(r"<svg .*?</svg>", html, flags=re.S)


def test_report_draws_every_plot_from_stage_data(tmp_path):
    ctx = _synthetic_ctx(tmp_path)
    path = RP.write_report(ctx)
    html = path.read_text()
    svgs = _svgs(html)
    assert len(svgs) == 6
    for s in svgs:
        root = ET.fromstring(s)  # well-formed XML
        assert root.tag == f"{SVG_NS}svg"
        assert "not available" not in s
        assert root.iter(f"{SVG_NS}polyline") or root.iter(f"{SVG_NS}rect")
    lines = sum(len(list(ET.fromstring(s).iter(f"{SVG_NS}polyline"))) for s in svgs)
    assert lines >= 1 + 3 + 1 + 2 + 2  # rate, 3 percentiles, drift, 2 burn windows, canary 2
    # self-contained: nothing loaded from elsewhere
    assert not re.search(r"<script|<img|<link|src=|href=", html)
    assert "Canary rolled back" in html and "PSI 0.4 on f3" in html
    assert "failed: RuntimeError: boom" in html and "skipped: missing torch" in html
    doc = json.loads((tmp_path / "report.json").read_text())
    se = doc["series"]
    assert doc["stages"]["scenario"]["accuracy"] == 0.97
    # the request rate shows the 6x spike
    t, rps = np.array(se["request_rate"]["t_s"]), np.array(se["request_rate"]["rps"])
    a, b = se["request_rate"]["spike_s"]
    inside, outside = rps[(t > a + 0.1) & (t < b - 0.1)], rps[(t < a - 0.1) | (t > b + 0.1)]
    assert inside.mean() > 4 * outside.mean()
    assert a < se["request_rate"]["drift_start_s"] < b
    # the drift score (computed by the report from the features) rises after the injection
    x, sc = np.array(se["drift"]["x"]), np.array(se["drift"]["score"])
    assert sc[x > 1500].min() > se["drift"]["threshold"] > sc[x < 1500].max()
    assert se["batch_sizes"]["batches"] == [5, 4, 11, 21]
    assert se["batch_sizes"]["labels"] == ["1", "2", "3-4", "5-8"]
    assert se["latency"]["source"].startswith("SLO stage")
    assert len(se["slo_burn"]["events"]) == 2


def test_report_degrades_when_stages_did_not_run(tmp_path):
    ctx = DemoContext(workdir=tmp_path / "empty")
    path = RP.write_report(ctx)
    html = path.read_text()
    svgs = _svgs(html)
    assert len(svgs) == 6 and all("not available" in s for s in svgs)
    for s in svgs:
        ET.fromstring(s)
    doc = json.loads((tmp_path / "empty" / "report.json").read_text())
    assert all(v is None for v in doc["series"].values())
    # malformed stage data is reported in the plot, not raised
    ctx2 = DemoContext(workdir=tmp_path / "bad")
    ctx2.data["traffic"] = {"arrival_s": ["not", "numbers"]}
    ctx2.data["latency_series"] = {"t_s": np.arange(100.0), "latency_s": np.full(100, np.nan)}
    ctx2.data["features"] = {"reference": np.ones((10, 3)), "stream": np.ones((5, 4))}
    ctx2.results["x"] = {"value": float("nan")}
    html2 = RP.write_report(ctx2).read_text()
    assert "could not convert" in html2 or "ValueError" in html2
    json.loads((tmp_path / "bad" / "report.json").read_text())  # NaN became null: strict JSON


def test_latency_series_from_per_request_samples(tmp_path):
    ctx = DemoContext(workdir=tmp_path)
    rng = np.random.default_rng(1)
    t = np.sort(rng.uniform(0, 10, 5000))
    lat = rng.exponential(0.01, t.size) + np.where((t > 4) & (t < 6), 0.05, 0.0)
    ctx.data["latency_series"] = {"t_s": t, "latency_s": lat, "source": "batcher"}
    se = RP.collect_series(ctx)["latency"]
    x, p99 = np.array(se["x"]), np.array(se["p99_ms"])
    assert np.all(np.array(se["p50_ms"]) <= np.array(se["p90_ms"]))
    assert np.all(np.array(se["p90_ms"]) <= p99)
    assert p99[(x > 4.3) & (x < 5.7)].min() > p99[(x < 3.7) | (x > 6.3)].max()


@given(st.floats(-1e6, 1e6), st.floats(1e-6, 1e6), st.integers(2, 10))
def test_nice_ticks_cover_the_range_with_round_even_steps(lo, span, n):
    assume(span >= 1e-6 * max(1.0, abs(lo)))  # below that, doubles cannot hold the ticks apart
    hi = lo + span
    ticks = RP.nice_ticks(lo, hi, n)
    assert ticks and all(lo - 1e-9 * span <= v <= hi + 1e-9 * span for v in ticks)
    if len(ticks) > 1:
        steps = np.diff(ticks)
        assert np.allclose(steps, steps[0], rtol=1e-6, atol=1e-9 * span)
        mant = steps[0] / 10 ** np.floor(np.log10(steps[0]))
        assert any(abs(mant - m) < 1e-4 for m in (1, 2, 2.5, 5, 10))
        assert len(ticks) <= 2 * n + 1
        assert steps[0] * (len(ticks) + 1) >= span  # the ticks span the range


def test_line_chart_maps_data_to_pixels():
    svg = RP.svg_line_chart([{"x": [0, 5, 10], "y": [0, 5, 10], "label": "a"}], title="t",
                            ylim=(0, 10), width=400, height=200)
    root = ET.fromstring(svg)
    pts = [tuple(map(float, p.split(","))) for p in
           next(root.iter(f"{SVG_NS}polyline")).get("points").split()]
    xs, ys = zip(*pts)
    assert xs[0] < xs[1] < xs[2] and ys[0] > ys[1] > ys[2]  # SVG y grows downwards
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1], abs=0.2)
    with pytest.raises(ValueError, match="points"):
        RP.svg_line_chart([{"x": [1, 2], "y": [1]}], title="bad")
    with pytest.raises(ValueError, match="labels"):
        RP.svg_bar_chart(["a"], [1, 2], title="bad")
    assert "no data" in RP.svg_line_chart([{"x": [np.nan], "y": [1]}], title="t")
    # escaping: a label cannot inject markup
    svg = RP.svg_line_chart([{"x": [0, 1], "y": [0, 1], "label": "<script>x</script>"}], title="&")
    ET.fromstring(svg)
    assert "<script>" not in svg
