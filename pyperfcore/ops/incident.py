"""Incident response: ``diagnose`` (ranked hypotheses from the signals pyperfcore holds), runbooks
per alert, a blameless postmortem skeleton with the timeline from the audit trail, and retraining
triggers as events.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Mapping

__all__ = ["Hypothesis", "diagnose", "format_diagnosis", "RUNBOOKS", "runbook", "postmortem",
           "RetrainingPolicy"]


@dataclass
class Hypothesis:
    cause: str  # infrastructure | data | model
    score: float  # 0..1, how strongly the signals point here
    evidence: list = field(default_factory=list)
    next_steps: list = field(default_factory=list)


def _ratio(now, base):
    if now is None or base is None or base <= 0:
        return None
    return now / base


def diagnose(signals: Mapping) -> list:
    """Ranked hypotheses with their evidence.

    ``signals`` (all optional): ``latency_p99_s`` and ``baseline_latency_p99_s``,
    ``queue_depth`` and ``baseline_queue_depth``, ``utilization`` (0..1), ``error_rate`` and
    ``baseline_error_rate``, ``drift`` ({feature: score}) with ``drift_threshold`` (0.1),
    ``schema_violations`` (count), ``feature_age_s`` and ``max_feature_age_s``,
    ``accuracy`` and ``baseline_accuracy`` (delayed labels), ``canary_failures`` (silent-failure
    probe failures), ``recent_deploy`` (a version string when the model changed recently).
    """
    s = dict(signals)
    hyps = []
    # infrastructure: latency and queueing rise together with saturation
    ev, sc = [], 0.0
    lr = _ratio(s.get("latency_p99_s"), s.get("baseline_latency_p99_s"))
    qr = _ratio(s.get("queue_depth"), s.get("baseline_queue_depth") or None)
    util = s.get("utilization")
    if lr is not None and lr > 1.5:
        ev.append(f"p99 latency {lr:.1f}x baseline")
        sc += 0.35
    if qr is not None and qr > 2:
        ev.append(f"queue depth {qr:.1f}x baseline")
        sc += 0.3
    elif s.get("queue_depth", 0) and not s.get("baseline_queue_depth") and lr and lr > 1.5:
        ev.append(f"queue depth {s['queue_depth']} (no baseline)")
        sc += 0.15
    if util is not None and util >= 0.85:
        ev.append(f"utilization {util:.0%}")
        sc += 0.3
    er = _ratio(s.get("error_rate"), s.get("baseline_error_rate"))
    if er is not None and er > 3 and sc > 0:
        ev.append(f"error rate {er:.1f}x baseline alongside saturation")
        sc += 0.05
    hyps.append(Hypothesis("infrastructure", min(1.0, sc), ev,
                           ["check replica count and autoscaler", "look for noisy neighbours "
                            "or lost replicas", "compare batch sizes with the capacity plan"]))
    # data: drift, schema violations, stale features
    ev, sc = [], 0.0
    thr = float(s.get("drift_threshold", 0.1))
    drift = {k: v for k, v in (s.get("drift") or {}).items() if v is not None}
    drifted = sorted(((v, k) for k, v in drift.items() if v >= thr), reverse=True)
    if drifted:
        ev.append("drifted features: " + ", ".join(f"{k} ({v:.2f})" for v, k in drifted[:5]))
        sc += min(0.5, 0.25 + 0.05 * len(drifted))
    if s.get("schema_violations"):
        ev.append(f"{s['schema_violations']} schema violations")
        sc += 0.3
    age, max_age = s.get("feature_age_s"), s.get("max_feature_age_s")
    if age is not None and max_age and age > max_age:
        ev.append(f"features are {age / 3600:.1f} h old (limit {max_age / 3600:.1f} h)")
        sc += 0.25
    hyps.append(Hypothesis("data", min(1.0, sc), ev,
                           ["inspect upstream pipelines for the drifted features",
                            "validate the feature store's freshness", "compare the input "
                            "distribution with the training data"]))
    # model: quality falls while inputs are stable
    ev, sc = [], 0.0
    ar = s.get("accuracy"), s.get("baseline_accuracy")
    if None not in ar and ar[1] - ar[0] > 0.02:
        ev.append(f"accuracy {ar[0]:.3f} vs baseline {ar[1]:.3f}")
        sc += 0.4
    if s.get("canary_failures"):
        ev.append(f"{s['canary_failures']} known-answer probes returned wrong answers")
        sc += 0.35
    if s.get("recent_deploy"):
        ev.append(f"model changed recently ({s['recent_deploy']})")
        sc += 0.15
    if sc > 0 and not drifted and not s.get("schema_violations"):
        ev.append("inputs are stable, so the model itself is the likely cause")
        sc += 0.1
    elif sc > 0 and drifted:
        sc *= 0.6  # drifted inputs explain a quality drop better
    hyps.append(Hypothesis("model", min(1.0, sc), ev,
                           ["roll back to the previous version", "re-run the gate against "
                            "the baseline", "check the delayed labels for a segment"]))
    return sorted(hyps, key=lambda h: -h.score)


def format_diagnosis(hyps: Iterable[Hypothesis]) -> str:
    lines = []
    for i, h in enumerate(hyps, 1):
        lines.append(f"{i}. {h.cause:<15} score {h.score:.2f}")
        for e in h.evidence or ["no supporting signal"]:
            lines.append(f"     - {e}")
        if h.score > 0:
            lines.append(f"     next: {h.next_steps[0]}")
    return "\n".join(lines)


RUNBOOKS = {
    "latency": ["Confirm the burn-rate alert on the latency SLO dashboard.",
                "pyperfcore diagnose: is it infrastructure (queue, utilization) or the model?",
                "If a canary or deploy is in progress, roll it back.",
                "Scale replicas to the capacity plan for the current arrival rate.",
                "Check batch sizes and max_delay_ms against the plan."],
    "availability": ["Find the failing stage from the error counters by code and stage.",
                     "Roll back any release from the last hour.",
                     "Fail over to the fallback pool or region if replicas are lost."],
    "drift": ["List drifted features and their scores.", "Check the upstream data pipelines.",
              "Decide: wait, retrain (retraining trigger), or pin a fallback model."],
    "freshness": ["Check the feature-store job that feeds the stale features.",
                  "Serve with cached/default features only if the model card allows it."],
    "throughput": ["Check autoscaler events and replica health.",
                   "Compare offered load with the capacity plan."],
    "silent_failure": ["A known-answer probe got a wrong answer with a success status.",
                       "Roll back the model or the pre/post-processing change.",
                       "Verify artifacts' hashes against the registry."],
}


def runbook(kind: str) -> str:
    steps = RUNBOOKS.get(kind)
    if steps is None:
        raise KeyError(f"no runbook for {kind!r}; known: {sorted(RUNBOOKS)}")
    return "\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))


def postmortem(title: str, *, events: Iterable[Mapping] = (), hypotheses=(),
               metrics: Mapping | None = None, start: float | None = None,
               end: float | None = None) -> str:
    """Blameless postmortem skeleton in Markdown, with the timeline filled from audit records
    (dicts with ``ts`` and ``kind``, or the AuditLog's ``{"ts":..., "record": {...}}`` rows)
    and a metrics table."""
    rows = []
    for e in events:
        rec = e.get("record", e)
        ts = e.get("ts", rec.get("ts"))
        if ts is None or (start is not None and ts < start) or (end is not None and ts > end):
            continue
        what = rec.get("kind", "event")
        detail = rec.get("reason") or rec.get("message") or rec.get("verdict") or ""
        rows.append((ts, what, detail))
    rows.sort()
    fmt = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))  # noqa: E731
    out = [f"# Postmortem: {title}", "", "Blameless: describe systems and decisions, not people.",
           "", "## Summary", "", "_What happened, impact on users, how long._", "",
           "## Timeline (UTC, from the audit trail)", "", "| time | event | detail |",
           "| --- | --- | --- |"]
    out += [f"| {fmt(t)} | {k} | {d} |" for t, k, d in rows] or ["| - | no events | |"]
    if metrics:
        out += ["", "## Metrics", "", "| signal | value |", "| --- | --- |"]
        out += [f"| {k} | {v} |" for k, v in metrics.items()]
    if hypotheses:
        out += ["", "## Diagnosis at the time", "", "```", format_diagnosis(hypotheses), "```"]
    out += ["", "## Root cause", "", "_To be filled in._", "", "## What went well", "",
            "## What went wrong", "", "## Action items", "", "| action | owner | due |",
            "| --- | --- | --- |", ""]
    return "\n".join(out)


class RetrainingPolicy:
    """Emits ``retrain`` events to subscribers when drift or performance cross thresholds or the
    model is older than ``max_age_s``; each reason fires once until :meth:`reset`."""

    def __init__(self, *, max_drift: float | None = 0.2, min_accuracy: float | None = None,
                 max_age_s: float | None = None):
        self.max_drift, self.min_accuracy, self.max_age_s = max_drift, min_accuracy, max_age_s
        self._subs: list = []
        self._fired: set = set()

    def subscribe(self, cb: Callable[[dict], None]) -> None:
        if not callable(cb):
            raise TypeError("callback must be callable")
        self._subs.append(cb)

    def reset(self) -> None:
        self._fired.clear()

    def check(self, *, model: str, drift: Mapping | None = None, accuracy: float | None = None,
              trained_at: float | None = None, now: float | None = None) -> list:
        now = time.time() if now is None else now
        events = []
        if self.max_drift is not None and drift:
            worst = max(drift.items(), key=lambda kv: kv[1])
            if worst[1] > self.max_drift:
                events.append({"reason": "drift", "feature": worst[0], "score": worst[1]})
        if self.min_accuracy is not None and accuracy is not None and accuracy < self.min_accuracy:
            events.append({"reason": "performance", "accuracy": accuracy})
        if self.max_age_s is not None and trained_at is not None and \
                now - trained_at > self.max_age_s:
            events.append({"reason": "age", "age_s": now - trained_at})
        out = []
        for e in events:
            if e["reason"] in self._fired:
                continue
            self._fired.add(e["reason"])
            ev = {"kind": "retrain", "model": model, "ts": now, **e}
            out.append(ev)
            for cb in self._subs:
                cb(ev)
        return out
