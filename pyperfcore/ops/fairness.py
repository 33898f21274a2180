"""Group fairness metrics for binary classifiers, with confidence intervals.

Definitions follow Fairlearn: demographic parity difference = max - min of the groups'
selection rates, ratio = min / max; equalized odds difference = the larger of the TPR gap and
the FPR gap. The four-fifths rule flags every group whose selection rate is below 0.8 of the
highest group's.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["FairnessReport", "fairness_report", "wilson_interval", "FairnessMonitor"]


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple:
    """Wilson score interval for a proportion (95% by default); (nan, nan) when n == 0."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _rate(num: int, den: int) -> float:
    return num / den if den else math.nan


@dataclass
class FairnessReport:
    """Per-group metrics and the disparity summaries. ``groups[g]`` holds ``n``,
    ``selection_rate``, ``tpr``, ``fpr``, ``accuracy`` and a 95% Wilson interval ``*_ci`` for
    each rate (NaN where a group has no positives or no negatives)."""
    groups: dict
    demographic_parity_difference: float
    demographic_parity_ratio: float
    equalized_odds_difference: float
    four_fifths_flagged: list
    four_fifths_threshold: float = 0.8
    overall: dict = field(default_factory=dict)

    @property
    def adverse_impact(self) -> bool:
        return bool(self.four_fifths_flagged)

    def to_dict(self) -> dict:
        def clean(x):
            if isinstance(x, float) and math.isnan(x):
                return None
            if isinstance(x, dict):
                return {k: clean(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [clean(v) for v in x]
            return x
        return clean({"groups": self.groups,
                      "demographic_parity_difference": self.demographic_parity_difference,
                      "demographic_parity_ratio": self.demographic_parity_ratio,
                      "equalized_odds_difference": self.equalized_odds_difference,
                      "four_fifths_flagged": self.four_fifths_flagged,
                      "four_fifths_threshold": self.four_fifths_threshold,
                      "overall": self.overall})


def _metrics(yt: np.ndarray, yp: np.ndarray) -> dict:
    n = int(yt.size)
    sel = int(yp.sum())
    pos = int(yt.sum())
    neg = n - pos
    tp = int((yt & yp).sum())
    fp = int((~yt & yp).sum())
    correct = int((yt == yp).sum())
    return {"n": n, "positives": pos, "negatives": neg,
            "selection_rate": _rate(sel, n), "selection_rate_ci": wilson_interval(sel, n),
            "tpr": _rate(tp, pos), "tpr_ci": wilson_interval(tp, pos),
            "fpr": _rate(fp, neg), "fpr_ci": wilson_interval(fp, neg),
            "accuracy": _rate(correct, n), "accuracy_ci": wilson_interval(correct, n)}


def fairness_report(y_true, y_pred, groups, *, threshold: float = 0.8) -> FairnessReport:
    """Fairness metrics of binary predictions ``y_pred`` against labels ``y_true`` by group.

    Parameters
    ----------
    y_true, y_pred : 1-D arrays of 0/1 (or bool) of the same length.
    groups : 1-D array of group labels (any hashable values), same length.
    threshold : the four-fifths rule ratio (0.8).
    """
    yt = np.asarray(y_true)
    yp = np.asarray(y_pred)
    g = np.asarray(groups)
    if yt.ndim != 1 or yp.shape != yt.shape or g.shape != yt.shape:
        raise ValueError(f"y_true, y_pred and groups must be 1-D of equal length, got shapes "
                         f"{yt.shape}, {yp.shape}, {g.shape}")
    for arr, nm in ((yt, "y_true"), (yp, "y_pred")):
        if arr.size and not np.isin(arr, (0, 1)).all():
            raise ValueError(f"{nm} must contain only 0/1 (binary outcomes)")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold must be within (0, 1], got {threshold}")
    yt = yt.astype(bool)
    yp = yp.astype(bool)
    labels, inverse = np.unique(g, return_inverse=True) if g.size else (np.array([]), g)
    per: dict = {}
    for i, lab in enumerate(labels):
        m = inverse == i
        key = lab.item() if hasattr(lab, "item") else lab
        per[str(key)] = _metrics(yt[m], yp[m])
    sel = [v["selection_rate"] for v in per.values()]
    tpr = [v["tpr"] for v in per.values() if not math.isnan(v["tpr"])]
    fpr = [v["fpr"] for v in per.values() if not math.isnan(v["fpr"])]
    if sel:
        dpd = max(sel) - min(sel)
        dpr = (min(sel) / max(sel)) if max(sel) > 0 else math.nan
    else:
        dpd = dpr = math.nan
    tgap = (max(tpr) - min(tpr)) if tpr else math.nan
    fgap = (max(fpr) - min(fpr)) if fpr else math.nan
    eod = max(x for x in (tgap, fgap) if not math.isnan(x)) if tpr or fpr else math.nan
    top = max(sel) if sel else 0.0
    flagged = sorted(k for k, v in per.items() if top > 0 and v["selection_rate"] < threshold * top)
    return FairnessReport(per, dpd, dpr, eod, flagged, threshold,
                          _metrics(yt, yp) if yt.size else {})


class FairnessMonitor:
    """Runs :func:`fairness_report` on logged predictions on a schedule and records each
    result in the audit trail (kind ``fairness_assessment``).

    ``source()`` returns ``(y_true, y_pred, groups)`` for the window to assess, e.g. read from
    the decision log joined with labels that arrived later.
    """

    def __init__(self, source: Callable[[], tuple], audit, *, model: str, version=None,
                 interval_s: float = 3600.0, threshold: float = 0.8,
                 on_flag: Callable | None = None):
        if interval_s <= 0:
            raise ValueError("interval_s must be > 0")
        self.source, self.audit, self.model, self.version = source, audit, model, version
        self.interval_s, self.threshold, self.on_flag = interval_s, threshold, on_flag
        self._stop = threading.Event()
        self._thread = None

    def run_once(self) -> FairnessReport:
        y_true, y_pred, groups = self.source()
        rep = fairness_report(y_true, y_pred, groups, threshold=self.threshold)
        subject = f"model:{self.model}:{self.version}" if self.version is not None \
            else f"model:{self.model}"
        self.audit.append({"kind": "fairness_assessment", "subject": subject,
                           "model": self.model, "version": self.version,
                           "report": rep.to_dict()})
        if rep.adverse_impact and self.on_flag is not None:
            self.on_flag(rep)
        return rep

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("monitor already started")

        def loop():
            while not self._stop.wait(self.interval_s):
                self.run_once()
        self._thread = threading.Thread(target=loop, name="pyperfcore-fairness", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
