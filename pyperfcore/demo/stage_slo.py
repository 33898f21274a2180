"""Demo stage: SLOs on a traffic spike. Two hours of traffic (simulated clock) with a spike that
saturates the service; the latency and availability SLOs' multiwindow burn-rate alerts fire in
the spike and resolve after it; metrics are exposed for Prometheus and the SLOs exported as
Sloth-shaped rules (checked with promtool when it is installed) and OpenSLO."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np


def run(ctx) -> dict:
    import yaml

    from ..ops import slo as S

    lat_slo = S.SLO("predict-latency", "latency", 0.99, threshold=0.3, service="demo",
                    description="99% of predictions within 300 ms")
    av_slo = S.SLO("predict-availability", "availability", 0.999, service="demo")
    trackers = {s.name: S.SLOTracker(s, resolution_s=10) for s in (lat_slo, av_slo)}
    events = []
    for tr in trackers.values():
        tr.subscribe(lambda what, a, st: events.append(
            {"t_min": round(st.t / 60, 2), "event": what, "slo": a.slo, "tier": a.tier,
             "severity": a.severity, "message": a.message()}))
    metrics = None
    try:
        from ..ops.monitoring import Metrics
        metrics = Metrics([lat_slo], service="demo")
    except ModuleNotFoundError:
        ctx.log("prometheus_client not installed: skipping the exposition part")
    rng = ctx.rng
    minutes = 120 if not ctx.quick else 90
    spike = (60, 70)
    t0 = 0.0
    per_s = 20
    timeline = []
    minute_lat: list = []
    minute_n = 0
    for sec in ctx.progress(range(minutes * 60), "traffic", total=minutes * 60):
        t = t0 + sec
        in_spike = spike[0] * 60 <= sec < spike[1] * 60
        n = per_s * (4 if in_spike else 1)
        base = rng.gamma(4.0, 0.02, n)  # ~80 ms median
        lat = base + (rng.exponential(0.35, n) if in_spike else 0)  # queueing in the spike
        err = rng.random(n) < (0.03 if in_spike else 0.0003)
        minute_lat.append(lat)
        minute_n += n
        trackers[lat_slo.name].observe(lat, t)
        trackers[av_slo.name].observe(err, t)
        if metrics is not None and sec % 10 == 0:
            for v, e in zip(lat[:5], err[:5]):
                metrics.observe_request(float(v), code="500" if e else "200", model="demo")
        if sec % 60 == 59:
            st = {n: tr.evaluate(t) for n, tr in trackers.items()}
            ml = np.concatenate(minute_lat)
            p50, p90, p99 = np.percentile(ml, [50, 90, 99]) * 1e3
            timeline.append({"minute": sec // 60 + 1, "requests": minute_n,
                             "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
                             "threshold_ms": lat_slo.threshold * 1e3,
                             **{f"{n}:burn_{w}": s.burn_rates[w] for n, s in st.items()
                                for w in ("5m", "1h")},
                             "alerts": sorted({a.tier for s in st.values() for a in s.alerts})})
            minute_lat, minute_n = [], 0
    fired = [e for e in events if e["event"] == "firing"]
    for e in events:
        ctx.log(f"t={e['t_min']:6.1f} min  {e['event']:<8} {e['slo']} {e['tier']}: "
                + e["message"].split(": ", 1)[1])
    first_page = next((e["t_min"] for e in fired if e["severity"] == "page"), None)
    if first_page is not None:
        ctx.log(f"first page {first_page - spike[0]:.1f} min after the spike began")
    rules_path = ctx.workdir / "slo.rules.yml"
    rules_path.write_text(S.rules_yaml([lat_slo, av_slo]))
    (ctx.workdir / "slo.openslo.yml").write_text(
        yaml.safe_dump_all([S.to_openslo(s) for s in (lat_slo, av_slo)], sort_keys=False))
    promtool = shutil.which("promtool")
    checked = None
    if promtool:
        r = subprocess.run([promtool, "check", "rules", str(rules_path)], capture_output=True,
                           text=True)
        checked = r.returncode == 0
        ctx.log(f"promtool check rules {rules_path.name}: {'SUCCESS' if checked else 'FAILED'}")
    if metrics is not None:
        text = metrics.exposition()
        (ctx.workdir / "metrics.prom").write_bytes(text)
        ctx.log(f"Prometheus exposition: {len(text.splitlines())} lines (metrics.prom)")
    ctx.data["slo_events"] = events
    ctx.data["slo_trackers"] = trackers
    ctx.data["slo_timeline"] = timeline  # per minute, for the report's plots
    ctx.data["slo_spike_min"] = spike
    final = {n: tr.budget(minutes * 60 - 1) for n, tr in trackers.items()}
    return {"alerts": events, "first_page_minutes_after_spike":
            None if first_page is None else first_page - spike[0],
            "budget_remaining": {n: b.remaining for n, b in final.items()},
            "rules_file": str(rules_path), "promtool_ok": checked,
            "timeline": [{k: v for k, v in r.items() if k == "minute" or ":burn_1h" in k
                          or k == "alerts"} for r in timeline[::10]]}
