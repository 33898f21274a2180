"""SLOs, error budgets and multiwindow multi-burn-rate alerts on synthetic streams whose answer is
known, checked against a raw-event numpy oracle, Prometheus itself (promtool) and OpenSLO."""
from __future__ import annotations

import math
import shutil
import subprocess

import numpy as np
import pytest
import yaml

from pyperfcore.ops import slo as S
from tests.ops_slo._oracle import window_burn


def test_default_tiers_match_the_sre_workbook():
    period = 30 * 86400
    got = [(t.severity, t.long_window_s, t.short_window_s, t.burn_rate(period))
           for t in S.DEFAULT_TIERS]
    assert got == [("page", 3600, 300, 14.4), ("page", 21600, 1800, 6.0),
                   ("ticket", 259200, 21600, 1.0)]
    # a derived tier's short window is 1/12 of the long one
    assert S.BurnTier.make("x", "page", "2h", 0.01).short_window_s == 600


def _run_outage(objective=0.999, clean_s=21600, outage_s=600, after_s=2000):
    """1 request/s, clean, then a full outage, then clean again; evaluated every second."""
    slo = S.SLO("api", "availability", objective)  # 30 days: the Workbook's numbers
    tr = S.SLOTracker(slo, resolution_s=1)
    events = []
    tr.subscribe(lambda what, a, st: events.append((what, a.tier, st.t)))
    start = 1_000_000.0
    first = {}
    times, bad = [], []
    for i in range(clean_s + outage_s + after_s):
        t = start + i
        err = clean_s <= i < clean_s + outage_s
        tr.record_errors(int(err), 1, t)
        times.append(t)
        bad.append(err)
        st = tr.evaluate(t)
        for a in st.alerts:
            first.setdefault(a.tier, i - clean_s)
    return tr, events, first, np.array(times), np.array(bad), start


def test_full_outage_pages_after_the_workbook_detection_time():
    tr, events, first, times, bad, start = _run_outage()
    # 14.4x over 1 h at 99.9%: 0.0144 h = 51.84 s of total failure; 1 s resolution
    assert 51.84 <= first["page-fast"] + 1 <= 52.84
    # the 6x tier needs 0.006 * 6 h = 129.6 s
    assert 129.6 <= first["page-slow"] + 1 <= 130.6
    fired = [e[1] for e in events if e[0] == "firing"]
    assert fired.index("page-fast") < fired.index("page-slow")
    # after recovery the short window (5 m) resets the fast page within 5 min + 1 step
    resolved = {tier: t for what, tier, t in events if what == "resolved"}
    end = start + 21600 + 600
    # (the long windows are still far above threshold: only the short ones can reset it)
    assert 290 < resolved["page-fast"] - end <= 301
    assert 1780 < resolved["page-slow"] - end <= 1801


@pytest.mark.parametrize("burn,expect", [
    (0.5, set()), (2, {"ticket"}), (8, {"page-slow", "ticket"}),
    (20, {"page-fast", "page-slow", "ticket"})])
def test_steady_burn_selects_tiers(burn, expect):
    slo = S.SLO("lat", "availability", 0.999)
    tr = S.SLOTracker(slo, resolution_s=60)
    t0 = 5e6
    for m in range(3 * 24 * 60 + 1):
        tr.record(10000 - burn * 10, 10000, t0 + 60 * m)
    st = tr.evaluate(t0 + 60 * 3 * 24 * 60)
    assert {a.tier for a in st.alerts} == expect
    for w in ("5m", "1h", "6h", "3d"):
        assert st.burn_rates[w] == pytest.approx(burn, rel=1e-9)
    # budget over what was seen: burn x consumes burn x of the proportional allowance
    assert st.budget.remaining == pytest.approx(1 - burn, rel=1e-9)


def test_random_streams_match_raw_event_oracle():
    rng = np.random.default_rng(7)
    for trial in range(5):
        slo = S.SLO("r", "latency", 0.99, threshold=0.25, period_s="7d")
        res = float(rng.choice([1, 10, 60]))
        tr = S.SLOTracker(slo, resolution_s=res)
        n = 3000
        times = np.sort(rng.uniform(0, 30000, n)) + 1e6
        lat = rng.lognormal(-2.0, 1.0, n)
        order = rng.permutation(n)[: n // 10]  # some events arrive out of order (late)
        mask = np.ones(n, bool)
        mask[order] = False
        for i in np.nonzero(mask)[0]:
            tr.observe([lat[i]], times[i])
        for i in order:
            tr.observe([lat[i]], times[i])
        t = times[-1] + rng.uniform(0, 100)
        for w in (300, 3600, 21600):
            want = window_burn(times, lat > 0.25, t, w, res, 0.01)
            assert tr.burn_rate(w, t) == pytest.approx(want, rel=1e-12, abs=1e-12)


def test_histogram_and_counter_sources():
    slo = S.SLO("p99", "latency", 0.99, threshold=0.3)
    tr = S.SLOTracker(slo, resolution_s=10)
    bounds = [0.1, 0.3, 1.0, math.inf]
    tr.update_from_histogram(bounds, [10, 20, 25, 30], t=100)  # origin only
    assert tr.budget(100).total == 0
    tr.update_from_histogram(bounds, [50, 110, 115, 120], t=110)  # +90 total, +90 good? no: +90 at <=0.3 of +90
    b = tr.budget(110)
    assert (b.total, b.bad) == (90, 0)
    tr.update_from_histogram(bounds, [50, 110, 130, 140], t=120)  # +20 total, all slow
    assert tr.budget(120).bad == 20
    # a restart resets the counters: the new values are the delta
    tr.update_from_histogram(bounds, [1, 3, 4, 5], t=130)
    b = tr.budget(130)
    assert (b.total, b.bad) == (115, 22)
    with pytest.raises(ValueError, match="no histogram bucket at the threshold"):
        tr.update_from_histogram([0.1, 0.25, math.inf], [1, 2, 3], t=140)
    with pytest.raises(ValueError, match="cumulative"):
        tr.update_from_histogram(bounds, [5, 4, 6, 7], t=140)
    # pull sources
    state = {"g": 0, "n": 0}
    av = S.SLOTracker(S.SLO("av", "availability", 0.9), resolution_s=1)
    av.add_source(lambda: (state["g"], state["n"]))
    av.poll(1)
    state.update(g=80, n=100)
    av.poll(2)
    assert av.error_ratio(10, 2) == pytest.approx(0.2)
    av.add_source(lambda: 1 / 0)
    with pytest.raises(RuntimeError, match="raised"):
        av.poll(3)


def test_time_sliced_kinds():
    thr = S.SLOTracker(S.SLO("rps", "throughput", 0.9, threshold=100), resolution_s=1)
    thr.observe([150, 120, 80, 99, 101], t=10)
    assert thr.error_ratio(5, 10) == pytest.approx(2 / 5)
    fresh = S.SLOTracker(S.SLO("age", "freshness", 0.9, threshold=3600), resolution_s=1)
    fresh.observe([10, 7200], t=10)
    assert fresh.error_ratio(5, 10) == pytest.approx(0.5)
    drift = S.SLOTracker(S.SLO("d", "drift", 0.95, threshold=0.1), resolution_s=1)
    drift.observe([0.05, 0.2, 0.1], t=10)
    assert drift.error_ratio(5, 10) == pytest.approx(1 / 3)


def test_bad_input_is_rejected_and_empty_is_a_no_op():
    with pytest.raises(ValueError, match="fraction"):
        S.SLO("a", "availability", 99.9)
    with pytest.raises(ValueError, match="threshold"):
        S.SLO("a", "latency", 0.99)
    with pytest.raises(ValueError, match="kind"):
        S.SLO("a", "speed", 0.99)
    with pytest.raises(ValueError, match="name"):
        S.SLO("a b", "availability", 0.99)
    with pytest.raises(ValueError, match="duration"):
        S.parse_duration("5 parsecs")
    tr = S.SLOTracker(S.SLO("a", "latency", 0.99, threshold=0.1), resolution_s=1)
    with pytest.raises(ValueError, match="good <= total"):
        tr.record(5, 3, t=1)
    with pytest.raises(ValueError, match="NaN"):
        tr.observe([0.1, float("nan")], t=1)
    tr.observe([], t=1)
    st = tr.evaluate(2)
    assert st.budget.total == 0 and st.budget.sli is None and st.ok
    with pytest.raises(TypeError, match="booleans"):
        S.SLOTracker(S.SLO("b", "availability", 0.9)).observe([0.5])


def test_budget_over_the_period_forgets_old_events():
    slo = S.SLO("a", "availability", 0.99, period_s="1h",
                tiers=[S.BurnTier.make("fast", "page", "1h", 0.5, "5m")])
    tr = S.SLOTracker(slo, resolution_s=60)
    tr.record(0, 100, t=0)          # 100 bad at t=0
    tr.record(1000, 1000, t=1800)
    b = tr.budget(1800)
    assert b.bad == 100 and b.allowed_bad == pytest.approx(11.0) and b.remaining < 0
    b = tr.budget(3600 + 120)     # the bad minute left the rolling hour
    assert b.bad == 0 and b.remaining == 1.0
    tr.record(0, 5, t=10)          # too old to count: dropped, not mis-filed
    assert tr.budget(3720).bad == 0


# ------------------------------------------------------------------ Prometheus rules
def _slos():
    return [S.SLO("checkout-availability", "availability", 0.999, service="shop",
                  metric="pyperfcore_requests_total", selector='job="shop"'),
            S.SLO("checkout-latency", "latency", 0.99, threshold=0.3, service="shop",
                  metric="pyperfcore_request_latency_seconds"),
            S.SLO("features-fresh", "freshness", 0.95, threshold=3600, service="shop"),
            S.SLO("custom", "availability", 0.995, service="shop",
                  error_query='sum(rate(errs_total[{{.window}}]))',
                  total_query='sum(rate(reqs_total[{{.window}}]))',
                  tiers=[S.BurnTier.make("fast", "page", "2h", 0.05)], period_s="7d")]


def test_rules_have_sloths_shape():
    rules = S.prometheus_rules(_slos())
    names = [g["name"] for g in rules["groups"]]
    assert "sloth-slo-sli-recordings-shop-checkout-availability" in names
    assert "sloth-slo-alerts-shop-checkout-latency" in names
    sli = rules["groups"][0]["rules"]
    assert [r["record"] for r in sli] == [f"slo:sli_error:ratio_rate{w}" for w in
                                         ("5m", "30m", "1h", "6h", "3d")]
    assert sli[0]["labels"]["sloth_window"] == "5m"
    lat = next(g for g in rules["groups"] if g["name"] == "sloth-slo-sli-recordings-shop-checkout-latency")
    assert 'le="0.3"' in lat["rules"][0]["expr"]
    alert = next(g for g in rules["groups"] if g["name"] == "sloth-slo-alerts-shop-checkout-availability")
    page = alert["rules"][0]["expr"]
    assert "(14.4 * 0.0010000000000000009)" in page and "(6 * 0.0010000000000000009)" in page
    custom = next(g for g in rules["groups"] if g["name"] == "sloth-slo-alerts-shop-custom")
    assert len(custom["rules"]) == 1 and "(4.2 * " in custom["rules"][0]["expr"]


promtool = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    promtool is None, reason="promtool not installed (apt-get install prometheus)")


@needs_promtool
def test_promtool_checks_the_generated_rules(tmp_path):
    f = tmp_path / "slo.rules.yml"
    f.write_text(S.rules_yaml(_slos()))
    r = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


@needs_promtool
def test_prometheus_and_the_tracker_fire_at_the_same_moments(tmp_path):
    """One stream, two evaluators: Prometheus (promtool test rules) on the generated rules and
    SLOTracker in-process. A full outage starts at minute 60."""
    slo = S.SLO("api", "availability", 0.999, service="svc", metric="reqs_total")
    (tmp_path / "rules.yml").write_text(S.rules_yaml([slo]))
    ok = "0+60x60 3600+0x120"
    err = "0+0x60 60+60x119"
    groups = S.prometheus_rules([slo])["groups"]
    page = next(r for g in groups for r in g["rules"] if r.get("alert", "").endswith("PageBurnRate"))
    labels = {**page["labels"], "sloth_id": "svc-api", "sloth_service": "svc", "sloth_slo": "api"}
    test = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": [{"series": 'reqs_total{code="200"}', "values": ok},
                         {"series": 'reqs_total{code="500"}', "values": err}],
        "alert_rule_test": [
            {"eval_time": "59m", "alertname": page["alert"], "exp_alerts": []},
            {"eval_time": "75m", "alertname": page["alert"],
             "exp_alerts": [{"exp_labels": labels, "exp_annotations": page["annotations"]}]}]}]}
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    r = subprocess.run([promtool, "test", "rules", "test.yml"], cwd=tmp_path,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    tr = S.SLOTracker(slo, resolution_s=60)
    fired_at = {}
    for m in range(181):
        good = 60 * min(m, 60)
        bad = 0 if m <= 60 else 60 * (m - 60)
        tr.update_from_totals(good, good + bad, t=60 * m - 0.5)
        st = tr.evaluate(60 * m - 0.5)
        for a in st.alerts:
            fired_at.setdefault(a.severity, m)
    assert 60 < fired_at["page"] <= 62
    assert "ticket" in fired_at


# ------------------------------------------------------------------ OpenSLO and YAML
@pytest.mark.parametrize("slo", _slos() + [S.SLO("rps", "throughput", 0.9, threshold=50),
                                           S.SLO("drift", "drift", 0.99, threshold=0.1)],
                         ids=lambda s: s.name)
def test_openslo_round_trip(slo):
    doc = S.to_openslo(slo)
    assert doc["apiVersion"] == "openslo/v1" and doc["kind"] == "SLO"
    text = yaml.safe_dump(doc)
    back = S.load_slos(text)[0]
    assert back.to_dict() == slo.to_dict()


def test_foreign_openslo_documents():
    doc = """
apiVersion: openslo/v1
kind: SLO
metadata: {name: web-availability}
spec:
  service: web
  indicator:
    metadata: {name: web-ok}
    spec:
      ratioMetric:
        counter: true
        good: {metricSource: {type: Prometheus, spec: {query: 'sum(rate(ok_total[5m]))'}}}
        total: {metricSource: {type: Prometheus, spec: {query: 'sum(rate(all_total[5m]))'}}}
  timeWindow: [{duration: 28d, isRolling: true}]
  budgetingMethod: Occurrences
  objectives: [{displayName: good, target: 0.995}]
---
slos:
  - {name: p99, kind: latency, objective: 0.99, threshold: 0.25, period: 7d}
"""
    a, b = S.load_slos(doc)
    assert a.kind == "availability" and a.objective == 0.995 and a.period_s == 28 * 86400
    assert a.error_query == "(sum(rate(all_total[5m]))) - (sum(rate(ok_total[5m])))"
    assert b.kind == "latency" and b.threshold == 0.25 and b.period_s == 7 * 86400
    with pytest.raises(ValueError, match="neither OpenSLO"):
        S.load_slos("foo: 1\n")
    with pytest.raises(ValueError, match="unknown SLO fields"):
        S.SLO.from_dict({"name": "x", "kind": "availability", "objective": 0.9, "bogus": 1})
