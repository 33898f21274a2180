"""CI/CD gate (candidate vs baseline on replayed traffic) and decision thresholds for
high-stakes classifiers."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

__all__ = ["gate", "GateReport", "psi", "decision_threshold"]


def psi(reference, current, bins: int = 10) -> float:
    """Population stability index over quantile bins of ``reference`` (empty bins floored at
    1e-4). Local so the gate works on its own; pyperfcore.drift offers the full suite."""
    r, c = np.asarray(reference, np.float64).ravel(), np.asarray(current, np.float64).ravel()
    if r.size == 0 or c.size == 0:
        return 0.0
    edges = np.unique(np.quantile(r, np.linspace(0, 1, bins + 1)))
    if edges.size < 2:
        edges = np.array([r[0] - 0.5, r[0] + 0.5])
    edges[0], edges[-1] = -np.inf, np.inf
    p = np.maximum(np.histogram(r, edges)[0] / r.size, 1e-4)
    q = np.maximum(np.histogram(c, edges)[0] / c.size, 1e-4)
    return float(np.sum((q - p) * np.log(q / p)))


@dataclass
class GateReport:
    ok: bool
    checks: list = field(default_factory=list)  # (name, ok, value, limit, note)

    def text(self) -> str:
        lines = [f"gate: {'PASS' if self.ok else 'FAIL'}"]
        for name, ok, value, limit, note in self.checks:
            lines.append(f"  [{'ok' if ok else 'FAIL':>4}] {name:<18} {value:<14} limit {limit}"
                         + (f"  ({note})" if note else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "checks": [dict(zip(("name", "ok", "value", "limit", "note"), c))
                                          for c in self.checks]}


def _agree(a, b, atol) -> float:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return 0.0
    if a.dtype.kind in "fc" or b.dtype.kind in "fc":
        return float(np.allclose(a, b, atol=atol, rtol=0))
    return float(np.array_equal(a, b))


def gate(candidate: Callable, baseline: Callable, inputs: Sequence, *,
         candidate_size_bytes: int | None = None, max_size_bytes: int | None = None,
         max_p99_s: float | None = None, max_p99_ratio: float | None = 1.5,
         min_agreement: float = 0.98, labels: Sequence | None = None,
         min_accuracy_delta: float = -0.01, max_output_psi: float = 0.2,
         atol: float = 1e-4, repeats: int = 1, load_rps: float | None = None,
         load_duration_s: float = 3.0, max_load_p99_ratio: float = 1.5,
         max_batch_size: int = 16, max_delay_ms: float = 2.0) -> GateReport:
    """Replay ``inputs`` (e.g. from the inference log) one request at a time through both models
    and check size, p99 latency (absolute and relative to the baseline), agreement, accuracy
    against ``labels`` when given, and the drift (PSI) of the candidate's outputs.

    With ``load_rps``, both models are also driven through the batcher by the standard steady
    load of :func:`pyperfcore.ops.bench.bench_model` (Poisson arrivals at ``load_rps`` for
    ``load_duration_s``), and the candidate's p99 under that load must stay within
    ``max_load_p99_ratio`` of the baseline's (and under ``max_p99_s`` when given), with no
    errors or unfinished requests."""
    if len(inputs) == 0:
        raise ValueError("the gate needs replayed inputs")
    lat = {"candidate": [], "baseline": []}
    outs = {"candidate": [], "baseline": []}
    for _ in range(repeats):
        for x in inputs:
            for name, fn in (("baseline", baseline), ("candidate", candidate)):
                t = time.perf_counter()
                try:
                    y = fn(x)
                except Exception as exc:
                    raise RuntimeError(f"{name} model raised on a replayed input: {exc!r}") from exc
                lat[name].append(time.perf_counter() - t)
                outs[name].append(y)
    checks = []
    if max_size_bytes is not None:
        ok = candidate_size_bytes is not None and candidate_size_bytes <= max_size_bytes
        checks.append(("model size", ok, f"{candidate_size_bytes} B", f"{max_size_bytes} B",
                       "" if candidate_size_bytes is not None else "size unknown"))
    p99c = float(np.quantile(lat["candidate"], 0.99))
    p99b = float(np.quantile(lat["baseline"], 0.99))
    if max_p99_s is not None:
        checks.append(("p99 latency", p99c <= max_p99_s, f"{p99c * 1e3:.2f} ms",
                       f"{max_p99_s * 1e3:.2f} ms", ""))
    if max_p99_ratio is not None:
        r = p99c / p99b if p99b > 0 else 1.0
        checks.append(("p99 vs baseline", r <= max_p99_ratio, f"{r:.2f}x",
                       f"{max_p99_ratio:.2f}x", f"baseline {p99b * 1e3:.2f} ms"))
    n = len(inputs) * repeats
    agree = float(np.mean([_agree(outs["candidate"][i], outs["baseline"][i], atol)
                           for i in range(n)]))
    checks.append(("agreement", agree >= min_agreement, f"{agree:.4f}", f">= {min_agreement}",
                   ""))
    if labels is not None:
        lab = np.asarray(list(labels) * repeats)
        acc = {k: float(np.mean([np.array_equal(np.asarray(o), l) for o, l in zip(v, lab)]))
               for k, v in outs.items()}
        d = acc["candidate"] - acc["baseline"]
        checks.append(("accuracy delta", d >= min_accuracy_delta, f"{d:+.4f}",
                       f">= {min_accuracy_delta:+}", f"candidate {acc['candidate']:.4f}"))
    checks.append(_drift_check(outs, max_output_psi))
    if load_rps is not None:
        checks.extend(_load_checks(candidate, baseline, inputs, load_rps, load_duration_s,
                                   max_load_p99_ratio, max_p99_s, max_batch_size, max_delay_ms))
    return GateReport(all(c[1] for c in checks), checks)


def _drift_check(outs, max_psi) -> tuple:
    """PSI of the candidate's outputs against the baseline's: numeric values over quantile bins
    (:func:`psi`), labels (strings, integers, booleans) over the label distribution. A NaN/inf
    output fails the check (it has no place in a distribution and must not pass unseen)."""
    from .output_drift import drift_statistic

    vals = {}
    for k, v in outs.items():
        arrs = [np.asarray(o).ravel() for o in v]
        try:
            vals[k] = np.concatenate(arrs) if arrs else np.array([])
        except ValueError:
            return ("output drift PSI", True, "n/a", f"<= {max_psi}", "outputs of mixed shape")
    b, c = vals["baseline"], vals["candidate"]
    nan = {k: int((~np.isfinite(a)).sum()) for k, a in vals.items() if a.dtype.kind in "fc"}
    if any(nan.values()):
        return ("output drift PSI", False, "NaN", f"<= {max_psi}",
                ", ".join(f"{k} {n} NaN/inf output values" for k, n in nan.items() if n))
    if b.size == 0 or c.size == 0:
        return ("output drift PSI", True, "n/a", f"<= {max_psi}", "no output values")
    if b.dtype.kind == "f" or c.dtype.kind == "f":
        try:
            d = psi(b.astype(np.float64), c.astype(np.float64))
        except (TypeError, ValueError):
            return ("output drift PSI", True, "n/a", f"<= {max_psi}", "outputs are not numeric")
        return ("output drift PSI", d <= max_psi, f"{d:.4f}", f"<= {max_psi}", "")
    try:
        d = drift_statistic(b, c, kind="labels", method="psi").value
    except (TypeError, ValueError) as e:
        return ("output drift PSI", True, "n/a", f"<= {max_psi}", f"outputs not comparable: {e}")
    return ("output drift PSI", d <= max_psi, f"{d:.4f}", f"<= {max_psi}", "label distribution")


def _load_checks(candidate, baseline, inputs, rps, duration_s, max_ratio, max_p99_s,
                 max_batch_size, max_delay_ms) -> list:
    from .bench import bench_model

    res = {}
    for name, fn in (("baseline", baseline), ("candidate", candidate)):
        # The gate's models take one request; the batcher hands over a list of them.
        def batch_fn(batch, fn=fn):
            return [fn(x) for x in batch]

        run = bench_model(batch_fn, list(inputs), profiles=("steady",), rps=rps,
                          duration_s=duration_s, max_batch_size=max_batch_size,
                          max_delay_ms=max_delay_ms, model_name=name)
        res[name] = run["profiles"]["steady"]
    c, b = res["candidate"], res["baseline"]
    checks = []
    failed = c["errors"] + c["unfinished"]
    checks.append(("errors under load", failed == 0, str(failed), "0",
                   f"{c['requests']} requests at {rps:g} req/s"))
    if c["p99_ms"] is not None and b["p99_ms"] is not None:
        r = c["p99_ms"] / b["p99_ms"] if b["p99_ms"] > 0 else 1.0
        checks.append(("p99 under load", r <= max_ratio, f"{r:.2f}x", f"{max_ratio:.2f}x",
                       f"candidate {c['p99_ms']:.2f} ms, baseline {b['p99_ms']:.2f} ms"))
        if max_p99_s is not None:
            checks.append(("p99 under load abs", c["p99_ms"] <= max_p99_s * 1e3,
                           f"{c['p99_ms']:.2f} ms", f"{max_p99_s * 1e3:.2f} ms", ""))
    else:
        checks.append(("p99 under load", False, "n/a", f"{max_ratio:.2f}x", "no request completed"))
    return checks


def decision_threshold(scores, labels, *, cost_fp: float, cost_fn: float,
                       min_precision: float | None = None, min_recall: float | None = None
                       ) -> dict:
    """The score threshold (predict positive when ``score >= threshold``) that minimizes
    ``cost_fp * FP + cost_fn * FN`` on validation data under optional precision/recall floors,
    with the whole precision/recall/cost curve."""
    s = np.asarray(scores, np.float64).ravel()
    y = np.asarray(labels).ravel()
    if s.shape != y.shape or s.size == 0:
        raise ValueError("scores and labels must be non-empty and of the same length")
    if np.isnan(s).any():
        raise ValueError("NaN scores")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0/1")
    y = y.astype(bool)
    order = np.argsort(-s, kind="mergesort")
    ss, yy = s[order], y[order]
    last = np.r_[np.flatnonzero(ss[1:] != ss[:-1]), ss.size - 1]  # end of each distinct score
    tp = np.cumsum(yy)[last]
    fp = np.cumsum(~yy)[last]
    P = y.sum()
    thr = ss[last]
    # also "predict nothing positive"
    thr = np.r_[np.inf, thr]
    tp, fp = np.r_[0, tp], np.r_[0, fp]
    fn = P - tp
    precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1), 1.0)
    recall = tp / P if P else np.ones_like(tp, dtype=float)
    cost = cost_fp * fp + cost_fn * fn
    ok = np.ones(thr.size, bool)
    if min_precision is not None:
        ok &= precision >= min_precision
    if min_recall is not None:
        ok &= recall >= min_recall
    if not ok.any():
        return {"threshold": None, "feasible": False, "curve": _curve(thr, precision, recall,
                                                                      cost)}
    i = int(np.flatnonzero(ok)[np.argmin(cost[ok])])
    return {"threshold": float(thr[i]), "feasible": True, "cost": float(cost[i]),
            "precision": float(precision[i]), "recall": float(recall[i]),
            "fp": int(fp[i]), "fn": int(fn[i]),
            "curve": _curve(thr, precision, recall, cost)}


def _curve(thr, p, r, c) -> dict:
    return {"threshold": thr.tolist(), "precision": p.tolist(), "recall": r.tolist(),
            "cost": c.tolist()}
