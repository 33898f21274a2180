"""Demo stage: release control and incident response. A deliberately worse candidate model
(slower and less accurate) goes through a canary (5/25/50/100 %) judged Kayenta-style; it is
rolled back automatically and the rollback lands in the audit trail. The same candidate then
fails the CI gate on replayed traffic, and ``diagnose`` explains the injected input drift."""
from __future__ import annotations

import json

import numpy as np


def run(ctx) -> dict:
    from ..ops.audit import AuditLog
    from ..ops.gate import gate, psi
    from ..ops.incident import diagnose, format_diagnosis, postmortem
    from ..ops.release import CanaryController, Router, argo_analysis_template, flagger_canary

    rng = ctx.rng
    d = 16
    w = rng.normal(size=d)
    X = rng.normal(size=(4000, d))
    clock = {"t": 0.0}

    def stable(x):
        clock["t"] += 0.008 + rng.exponential(0.002)
        return int(x @ w > 0)

    w_bad = w + rng.normal(scale=0.8, size=d)  # a worse model: other weights, and slower

    def candidate(x):
        clock["t"] += 0.014 + rng.exponential(0.003)
        return int(x @ w_bad > 0)

    # every candidate-served request is also answered by the stable model, inline (the
    # demo's clock is simulated), so the judge sees output agreement at every step
    router = Router(stable, candidate, clock=lambda: clock["t"], compare=1.0, compare_sync=True)
    audit = AuditLog(str(ctx.workdir / "release-audit.db"))
    ctl = CanaryController(router, audit=audit, model="demo-classifier", candidate_version=2,
                           min_requests=100 if ctx.quick else 200, output_drift=True)
    served = 0
    tl = {"requests": [0], "weight": [ctl.steps[0].weight], "events": [], "agreement_x": [],
          "agreement": []}
    for i in ctx.progress(range(len(X) * 5), "canary traffic"):
        router(X[i % len(X)], key=f"user-{i}")
        served += 1
        if i % 50 == 0:
            state = ctl.tick()
            tl["requests"].append(served)
            tl["weight"].append(router.weight if router.mode == "canary" else 0.0)
            if state != "running":
                break
    router.drain()
    step_start = 0
    for h in ctl.history:
        if h["kind"] in ("canary_analysis", "canary_step", "rollback", "promoted"):
            tl["events"].append({"request": h["served"], "weight": h.get("weight", 0.0),
                                 "kind": h["kind"], "verdict": h.get("verdict")})
        if h["kind"] == "canary_analysis" and h.get("agreement_intervals"):
            a = h["agreement_intervals"]
            tl["agreement_x"] += np.linspace(step_start, h["served"], len(a) + 1)[1:].tolist()
            tl["agreement"] += list(a)
        if h["kind"] in ("canary_step", "canary_analysis"):
            step_start = h["served"]
    ctx.data["canary_timeline"] = tl
    ctx.log(f"canary: {ctl.state} after {served} requests")
    if ctl.last_result is not None:
        for line in ctl.last_result.summary().splitlines():
            ctx.log(line)
    rollback = [h for h in ctl.history if h["kind"] == "rollback"]
    if rollback:
        ctx.log(f"rollback reason: {rollback[0]['reason']}")
    audit_kinds = [r.get("record", r).get("kind") for r in audit.records()]
    ctx.log(f"audit trail: {', '.join(audit_kinds)}; verify: {bool(audit.verify())}")

    # CI gate on traffic replayed from the log
    rep = gate(candidate, stable, list(X[:400]), max_p99_ratio=None, min_agreement=0.95)
    for line in rep.text().splitlines():
        ctx.log(line)

    # injected drift: two features shift in live traffic; labels arrive late and accuracy drops
    live = X[:2000].copy()
    live[:, 3] += 1.5
    live[:, 7] *= 2.5
    drift = {f"f{j}": psi(X[2000:, j], live[:, j]) for j in range(d)}
    acc_live = float(np.mean([stable(x) == int(x @ w > 0.3) for x in live[:500]]))
    signals = {"drift": drift, "drift_threshold": 0.1, "latency_p99_s": 0.012,
               "baseline_latency_p99_s": 0.011, "queue_depth": 3, "baseline_queue_depth": 3,
               "utilization": 0.45, "accuracy": acc_live, "baseline_accuracy": 0.97}
    hyps = diagnose(signals)
    ctx.log("diagnose:")
    for line in format_diagnosis(hyps).splitlines():
        ctx.log("  " + line)
    pm = postmortem("demo canary rolled back", events=audit.records(),
                    hypotheses=hyps, metrics={"canary_state": ctl.state})
    (ctx.workdir / "postmortem.md").write_text(pm)
    specs = {"argo_analysis_template": argo_analysis_template("demo-analysis", "demo"),
             "flagger_canary": flagger_canary("demo")}
    (ctx.workdir / "release-specs.json").write_text(json.dumps(specs, indent=2))
    audit.close()
    return {"canary_state": ctl.state, "canary": ctl.report(),
            "rollback_reason": rollback[0]["reason"] if rollback else None,
            "audit_kinds": audit_kinds, "gate": rep.to_dict(),
            "diagnosis": [h.__dict__ for h in hyps]}
