"""Drift of a candidate model's outputs against the baseline's, as a metric of the canary judge.

Agreement (``Router(compare=...)``) catches a candidate that answers the *same requests*
differently; output drift catches a candidate whose *distribution* of answers moved (scores
shifted, a class predicted more often, embeddings shrunk) even when latency, errors and a small
agreement sample look fine. Kayenta judges metrics by a Mann-Whitney test over time series; a
drift statistic is one number per analysis, so this metric is judged against a threshold:
``High`` (failed) when the statistic exceeds it, ``Pass`` otherwise, ``NoData`` with fewer than
``min_samples`` values in either arm. It takes part in the judge's score like any metric, and a
critical one (the default) makes the score 0 when it fails.

What is compared (``kind``):

* ``numeric`` (scores, probabilities, embedding norms, regression outputs): ``psi`` over ten
  quantile bins of the baseline (open outer bins), ``wasserstein`` divided by the baseline's
  standard deviation (floored at 1e-3, Evidently's normalisation), ``ks`` (the KS statistic D;
  its p-value is reported) or ``jensenshannon`` over the same bins;
* ``labels`` (predicted classes, strings or integers): ``psi`` or ``jensenshannon`` over the label
  distribution (one bin per label seen in either arm).

``auto`` takes floating-point values as numeric and integers, booleans and strings as labels.
All statistics come from :mod:`pyperfcore.drift` (equal to scipy's, see docs/drift.md).

Default thresholds (``threshold=None``) are sized for canary samples of a few hundred requests
per arm, where Evidently's monitoring thresholds (0.1) would fire on noise alone. Measured with
two samples of the same distribution (normal scores; 10 classes), fraction of analyses over the
threshold at 200 vs 200 / 1000 vs 200 values: psi 0.2 -> 2.5 % / 0 %; ks 0.15 -> 2.5 % / 0.3 %;
wasserstein 0.3 -> about 1 % / 0 %; jensenshannon (natural log) 0.2 -> under 1 % / 0 %; label
psi 0.2 -> 1.8 % / 0 %. PSI 0.2 is also the usual "significant shift" band; it fails a mean shift
of 0.5 standard deviations 91 % of the time at 1000 vs 200 values (see docs/release.md).

NaN policy: the statistics here raise ``ValueError`` on NaN (a NaN output is not a value whose
drift means anything). :class:`pyperfcore.ops.release.Router` never hands them one: with output
collection on, a request whose numeric output contains NaN is counted as an error of the arm that
produced it (so ``error_rate`` sees it) and its values are left out of the drift sample.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .judge import MetricResult

__all__ = ["OutputDriftConfig", "DriftStat", "drift_statistic", "extract_values",
           "DEFAULT_THRESHOLDS", "has_nan", "OutputTypeMismatch"]

DEFAULT_THRESHOLDS = {"psi": 0.2, "ks": 0.15, "wasserstein": 0.3, "jensenshannon": 0.2}
_METHODS = {"numeric": ("psi", "wasserstein", "ks", "jensenshannon"),
            "labels": ("psi", "jensenshannon")}
_EXTRACT = ("values", "argmax", "max", "norm")


class OutputTypeMismatch(TypeError):
    """The candidate's outputs are not of the baseline's kind (labels vs values, strings vs
    integers): the judge fails the drift metric with this reason rather than comparing them."""


@dataclass(frozen=True)
class DriftStat:
    value: float
    method: str
    kind: str
    baseline_n: int
    candidate_n: int
    p_value: float | None = None


def extract_values(out: Any, how: str | Callable = "values") -> np.ndarray:
    """The values one model output contributes to the drift sample (1-D).

    ``values``: every element (a score, a probability vector, a label, a list of labels);
    ``argmax``: the predicted class per row of a score matrix (the last axis); ``max``: the top
    score per row; ``norm``: the L2 norm per row (embeddings); or a callable ``out -> array``.
    """
    if callable(how):
        a = np.asarray(how(out))
        return a.ravel()
    if how not in _EXTRACT:
        raise ValueError(f"extract is one of {_EXTRACT} or a callable, got {how!r}")
    a = np.asarray(out)
    if how == "values":
        return a.ravel()
    if a.dtype.kind not in "biuf":
        raise TypeError(f"extract={how!r} needs numeric outputs, got dtype {a.dtype}")
    if a.ndim == 0:
        a = a.reshape(1)
    if how == "argmax":
        return np.atleast_1d(np.argmax(a, axis=-1)).ravel()
    if how == "max":
        return np.atleast_1d(np.max(a, axis=-1)).ravel().astype(np.float64)
    return np.atleast_1d(np.linalg.norm(a.astype(np.float64), axis=-1)).ravel()


def has_nan(values: np.ndarray) -> bool:
    """True when a numeric sample holds NaN (or +-inf: no drift statistic is defined on it)."""
    return values.dtype.kind in "fc" and not np.isfinite(values).all()


def _kind(base: np.ndarray, cand: np.ndarray, kind: str) -> str:
    if kind != "auto":
        return kind
    kinds = {base.dtype.kind, cand.dtype.kind}
    if kinds <= set("f") or (kinds <= set("biuf") and "f" in kinds):
        return "numeric"
    return "labels"


def _as_labels(a: np.ndarray) -> np.ndarray:
    # One representation for both arms (a label 3 must match 3, never "3"): objects whose
    # items are all str become a unicode array; integers stay integers.
    if a.dtype.kind == "O":
        if all(isinstance(v, str) for v in a):
            return a.astype(str)
        if all(isinstance(v, (int, np.integer, bool, np.bool_)) for v in a):
            return a.astype(np.int64)
        raise TypeError("labels must be all strings or all integers")
    if a.dtype.kind == "f":
        raise TypeError("labels must be integers, booleans or strings, got floats "
                        "(pass kind='numeric' to compare them as values)")
    return a.astype(np.int64) if a.dtype.kind in "biu" else a


def drift_statistic(baseline, candidate, *, kind: str = "auto", method: str | None = None,
                    bins: int = 10) -> DriftStat:
    """Drift of ``candidate`` values against ``baseline`` values (both non-empty, 1-D).

    Raises ValueError on NaN/inf in numeric values, on empty samples, and on a method that does
    not fit the kind; TypeError on labels of mixed or float type."""
    from .. import drift as D

    b, c = np.asarray(baseline).ravel(), np.asarray(candidate).ravel()
    if kind not in ("auto", "numeric", "labels"):
        raise ValueError(f"kind is 'auto', 'numeric' or 'labels', got {kind!r}")
    if b.size == 0 or c.size == 0:
        raise ValueError("output drift needs two non-empty samples")
    if (b.dtype.kind in "biuf") != (c.dtype.kind in "biuf"):
        raise OutputTypeMismatch(f"one arm's outputs are numeric, the other's are not "
                                 f"({b.dtype} vs {c.dtype})")
    k = _kind(b, c, kind)
    m = method or "psi"
    if m not in _METHODS[k]:
        raise ValueError(f"method {m!r} does not apply to {k} outputs; use one of {_METHODS[k]}")
    if k == "labels":
        b, c = _as_labels(b), _as_labels(c)
        if b.dtype.kind != c.dtype.kind:
            raise OutputTypeMismatch(f"baseline and candidate labels differ in type "
                                     f"({b.dtype} vs {c.dtype})")
        fn = D.psi if m == "psi" else D.jensen_shannon
        return DriftStat(float(fn(b, c, kind="categorical")), m, k, b.size, c.size)
    if b.dtype.kind not in "biuf" or c.dtype.kind not in "biuf":
        raise OutputTypeMismatch(f"numeric output drift needs numeric values in both arms "
                                 f"({b.dtype} vs {c.dtype})")
    b, c = b.astype(np.float64), c.astype(np.float64)
    for name, a in (("baseline", b), ("candidate", c)):
        if not np.isfinite(a).all():
            raise ValueError(f"{name} outputs contain {int((~np.isfinite(a)).sum())} NaN/inf "
                             "value(s); count them as errors and leave them out of the sample")
    if m == "psi":
        v = D.psi(b, c, bins=bins, strategy="quantile")
    elif m == "jensenshannon":
        v = D.jensen_shannon(b, c, bins=bins, strategy="quantile")
    elif m == "wasserstein":
        v = D.wasserstein_distance(b, c) / max(float(b.std()), 1e-3)
    else:
        r = D.ks_2samp(b, c)
        return DriftStat(float(r.statistic), m, k, b.size, c.size, float(r.pvalue))
    return DriftStat(float(v), m, k, b.size, c.size)


@dataclass(frozen=True)
class OutputDriftConfig:
    """Output drift as a metric of :class:`pyperfcore.ops.judge.Judge`.

    The judge's ``control`` / ``experiment`` dicts carry, under ``name``, the baseline's and the
    candidate's output values (1-D, pooled over the analysis). ``threshold=None`` takes the
    method's default from :data:`DEFAULT_THRESHOLDS`; ``min_samples`` values are needed in each
    arm or the metric is ``NoData`` (left out of the score, never a pass or a fail on its own).
    ``extract`` says how the router turns one model output into values (see
    :func:`extract_values`).
    """
    name: str = "output_drift"
    kind: str = "auto"
    method: str | None = None
    threshold: float | None = None
    critical: bool = True
    weight: float = 1.0
    group: str | None = None
    min_samples: int = 200
    bins: int = 10
    extract: Any = "values"

    def __post_init__(self):
        if self.kind not in ("auto", "numeric", "labels"):
            raise ValueError(f"{self.name}: kind is 'auto', 'numeric' or 'labels'")
        if self.method is not None and self.method not in DEFAULT_THRESHOLDS:
            raise ValueError(f"{self.name}: method is one of {tuple(DEFAULT_THRESHOLDS)}")
        if self.kind == "labels" and self.method not in (None, *_METHODS["labels"]):
            raise ValueError(f"{self.name}: labels are compared by psi or jensenshannon")
        if self.threshold is not None and not (self.threshold > 0 and math.isfinite(self.threshold)):
            raise ValueError(f"{self.name}: threshold must be a positive number")
        if not self.weight >= 0:
            raise ValueError(f"{self.name}: weight must be >= 0")
        if self.min_samples < 1 or self.bins < 2:
            raise ValueError(f"{self.name}: need min_samples >= 1 and bins >= 2")
        if not (callable(self.extract) or self.extract in _EXTRACT):
            raise ValueError(f"{self.name}: extract is one of {_EXTRACT} or a callable")

    @property
    def effective_threshold(self) -> float:
        return self.threshold if self.threshold is not None else \
            DEFAULT_THRESHOLDS[self.method or "psi"]

    def classify(self, control, experiment) -> MetricResult:
        b = np.asarray(control if control is not None else []).ravel()
        c = np.asarray(experiment if experiment is not None else []).ravel()
        base = dict(name=self.name, critical=self.critical, group=self.group or self.name,
                    control_n=int(b.size), experiment_n=int(c.size))
        if b.size < self.min_samples or c.size < self.min_samples:
            who = "control" if b.size < self.min_samples else "experiment"
            return MetricResult(classification="NoData", **base,
                                reason=f"{min(b.size, c.size)} output values for {who}, "
                                       f"need {self.min_samples}")
        thr = self.effective_threshold
        try:
            s = drift_statistic(b, c, kind=self.kind, method=self.method, bins=self.bins)
        except OutputTypeMismatch as e:
            return MetricResult(classification="High", threshold=thr, **base,
                                reason=f"candidate outputs not comparable with the "
                                       f"baseline's: {e}")
        extra = f", p={s.p_value:.2g}" if s.p_value is not None else ""
        if s.value > thr:
            return MetricResult(classification="High", value=s.value, threshold=thr,
                                method=f"{s.kind}/{s.method}", **base,
                                reason=f"candidate {s.kind} outputs drifted: {s.method} "
                                       f"{s.value:.4g} > {thr:g}{extra}")
        return MetricResult(classification="Pass", value=s.value, threshold=thr,
                            method=f"{s.kind}/{s.method}", **base,
                            reason=f"{s.kind} output {s.method} {s.value:.4g} <= {thr:g}{extra}")
