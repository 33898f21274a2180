"""Kayenta-style canary judge.

Per metric: drop NaN (or replace them), drop outliers outside ``[q1 - 3 IQR, q3 + 3 IQR]``, then
a two-sided Mann-Whitney U test of experiment vs control with a Hodges-Lehmann estimate of the
shift and its distribution-free (Moses) confidence interval at 98%. The metric is ``High`` when
the whole interval lies above ``+tolerance * |HL|``, ``Low`` when it lies below
``-tolerance * |HL|`` (tolerance 0.25), else ``Pass`` (Kayenta's MannWhitneyClassifier rule).
A group's score is passes / classified metrics x 100; the run's score is the weighted mean of the
group scores; any critical metric that fails in its watched direction makes the score 0.

Judge rates (errors, agreement) as per-interval values, as Kayenta judges time series: with
per-request 0/1 samples most pairwise differences tie at 0 and the HL shift is 0.

The U statistic and its p-value match ``scipy.stats.mannwhitneyu(method="asymptotic")`` (tie
and continuity corrected); scipy is not needed at run time.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Mapping, Sequence

import numpy as np

__all__ = ["mann_whitney", "MannWhitneyResult", "hodges_lehmann", "remove_outliers",
           "MetricConfig", "MetricResult", "Judge", "JudgeResult", "classify"]

_EXACT_PAIRS = 4_000_000  # above this many pairwise differences, order statistics are bisected


@dataclass(frozen=True)
class MannWhitneyResult:
    u: float          # U statistic of the experiment sample (scipy's first return value)
    p_value: float    # two-sided, normal approximation with tie and continuity correction
    estimate: float   # Hodges-Lehmann shift, experiment - control
    lower: float      # confidence interval of the shift
    upper: float
    confidence: float


def _clean(a, name) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).ravel()
    if np.isinf(a).any():
        raise ValueError(f"{name}: infinite values")
    return a


def _kth_difference(x: np.ndarray, y: np.ndarray, k: int) -> float:
    """k-th smallest (1-based) of all x_i - y_j; x and y sorted."""
    m, n = x.size, y.size
    if m * n <= _EXACT_PAIRS:
        d = (x[:, None] - y[None, :]).ravel()
        return float(np.partition(d, k - 1)[k - 1])
    lo, hi = x[0] - y[-1], x[-1] - y[0]
    for _ in range(200):  # count(v) = #{x_i - y_j <= v} is monotone in v
        mid = lo + (hi - lo) / 2
        if mid <= lo or mid >= hi:
            break
        if int(np.searchsorted(x, y + mid, side="right").sum()) >= k:
            hi = mid
        else:
            lo = mid
    return float(hi)


def hodges_lehmann(experiment, control) -> float:
    """Median of all pairwise differences experiment_i - control_j."""
    x, y = np.sort(_clean(experiment, "experiment")), np.sort(_clean(control, "control"))
    if x.size == 0 or y.size == 0:
        raise ValueError("Hodges-Lehmann needs two non-empty samples")
    N = x.size * y.size
    if N % 2:
        return _kth_difference(x, y, N // 2 + 1)
    return 0.5 * (_kth_difference(x, y, N // 2) + _kth_difference(x, y, N // 2 + 1))


def mann_whitney(experiment, control, confidence: float = 0.98) -> MannWhitneyResult:
    """Two-sided Mann-Whitney U test with the Hodges-Lehmann shift and its confidence interval."""
    if not 0 < confidence < 1:
        raise ValueError("confidence must be in (0, 1)")
    x, y = _clean(experiment, "experiment"), _clean(control, "control")
    if np.isnan(x).any() or np.isnan(y).any():
        raise ValueError("NaN in samples; remove or replace them first (see MetricConfig.nan)")
    m, n = x.size, y.size
    if m == 0 or n == 0:
        raise ValueError("Mann-Whitney needs two non-empty samples")
    allv = np.concatenate([x, y])
    order = np.argsort(allv, kind="mergesort")
    sv = allv[order]
    # average ranks for ties
    starts = np.flatnonzero(np.r_[True, sv[1:] != sv[:-1]])
    counts = np.diff(np.r_[starts, sv.size])
    avg = starts + (counts + 1) / 2.0
    ranks = np.empty(sv.size)
    ranks[order] = np.repeat(avg, counts)
    r1 = ranks[:m].sum()
    u1 = r1 - m * (m + 1) / 2.0
    N = m + n
    tie = float((counts.astype(np.float64) ** 3 - counts).sum())
    var = m * n / 12.0 * ((N + 1) - tie / (N * (N - 1))) if N > 1 else 0.0
    mu = m * n / 2.0
    if var <= 0:
        p = 1.0
    else:
        u = max(u1, m * n - u1)
        z = (u - mu - 0.5) / math.sqrt(var)
        p = min(1.0, math.erfc(z / math.sqrt(2.0)))  # 2 * sf(z)
    xs, ys = np.sort(x), np.sort(y)
    hl = hodges_lehmann(xs, ys)
    zc = NormalDist().inv_cdf(0.5 + confidence / 2)
    k = int(math.floor(mu - zc * math.sqrt(max(var, 0.0))))
    if k < 1:
        # too few samples to bound the shift at this confidence: an unbounded interval, never
        # the range of the observed differences (which would claim a shift from 2 samples)
        return MannWhitneyResult(float(u1), float(p), hl, -math.inf, math.inf, confidence)
    k = min(k, m * n)
    lower = _kth_difference(xs, ys, k)
    upper = _kth_difference(xs, ys, m * n - k + 1)
    return MannWhitneyResult(float(u1), float(p), hl, lower, upper, confidence)


def remove_outliers(a, factor: float = 3.0) -> np.ndarray:
    """Keep values within ``[q1 - factor*IQR, q3 + factor*IQR]`` (numpy's linear percentiles)."""
    a = np.asarray(a, dtype=np.float64)
    if a.size < 4:
        return a
    q1, q3 = np.percentile(a, [25, 75])
    iqr = q3 - q1
    return a[(a >= q1 - factor * iqr) & (a <= q3 + factor * iqr)]


@dataclass(frozen=True)
class MetricConfig:
    """How one metric is judged.

    direction : ``increase`` (only a rise fails, e.g. latency, errors), ``decrease`` (only a fall
        fails, e.g. agreement, accuracy) or ``either``.
    critical : a failure makes the whole score 0.
    weight : weight of the metric's group (metrics without ``group`` are their own group).
    nan : ``remove`` or ``replace`` (by ``nan_value``).
    """
    name: str
    direction: str = "increase"
    critical: bool = False
    weight: float = 1.0
    group: str | None = None
    nan: str = "remove"
    nan_value: float = 0.0
    outlier_factor: float | None = 3.0
    tolerance: float = 0.25
    confidence: float = 0.98

    def __post_init__(self):
        if self.direction not in ("increase", "decrease", "either"):
            raise ValueError(f"{self.name}: direction is increase, decrease or either")
        if self.nan not in ("remove", "replace"):
            raise ValueError(f"{self.name}: nan is 'remove' or 'replace'")
        if not self.weight >= 0:
            raise ValueError(f"{self.name}: weight must be >= 0")
        if self.tolerance < 0:
            raise ValueError(f"{self.name}: tolerance must be >= 0")


@dataclass(frozen=True)
class MetricResult:
    name: str
    classification: str  # High | Low | Pass | NoData
    critical: bool
    group: str
    reason: str
    ratio: float | None = None  # mean(experiment) / mean(control)
    test: MannWhitneyResult | None = None
    control_n: int = 0
    experiment_n: int = 0
    value: float | None = None      # threshold metrics (output drift): the statistic ...
    threshold: float | None = None  # ... and the limit it was judged against
    method: str | None = None

    @property
    def failed(self) -> bool:
        return self.classification in ("High", "Low")

    def to_dict(self) -> dict:
        d = {"name": self.name, "classification": self.classification,
             "critical": self.critical, "group": self.group, "reason": self.reason,
             "ratio": self.ratio, "control_n": self.control_n,
             "experiment_n": self.experiment_n}
        if self.value is not None:
            d.update(value=self.value, threshold=self.threshold, method=self.method)
        if self.test is not None:
            fin = lambda v: v if math.isfinite(v) else None  # noqa: E731 (strict JSON)
            d.update(p_value=self.test.p_value, estimate=self.test.estimate,
                     ci=[fin(self.test.lower), fin(self.test.upper)])
        return d


def _prepare(values, cfg: MetricConfig) -> np.ndarray:
    a = np.asarray(values if values is not None else [], dtype=np.float64).ravel()
    if np.isinf(a).any():
        raise ValueError(f"{cfg.name}: infinite values")
    nan = np.isnan(a)
    if nan.any():
        a = a[~nan] if cfg.nan == "remove" else np.where(nan, cfg.nan_value, a)
    if cfg.outlier_factor is not None:
        a = remove_outliers(a, cfg.outlier_factor)
    return a


def classify(control, experiment, cfg: MetricConfig) -> MetricResult:
    """Kayenta's classification of one metric."""
    group = cfg.group or cfg.name
    c, e = _prepare(control, cfg), _prepare(experiment, cfg)
    base = dict(name=cfg.name, critical=cfg.critical, group=group, control_n=int(c.size),
                experiment_n=int(e.size))
    if c.size == 0 or e.size == 0:
        return MetricResult(classification="NoData", reason="no data for "
                            + ("control" if c.size == 0 else "experiment"), **base)
    cm = float(c.mean())
    ratio = float(e.mean()) / cm if cm != 0 else None
    if np.array_equal(np.sort(c), np.sort(e)) or np.unique(np.concatenate([c, e])).size == 1:
        return MetricResult(classification="Pass", reason="identical data", ratio=ratio, **base)
    r = mann_whitney(e, c, cfg.confidence)
    if not (math.isfinite(r.lower) and math.isfinite(r.upper)):
        return MetricResult(classification="NoData", ratio=ratio, test=r, **base,
                            reason=f"too few samples ({e.size} vs {c.size}) for a "
                                   f"{cfg.confidence:.0%} interval of the shift")
    crit = cfg.tolerance * abs(r.estimate)
    if cfg.direction in ("increase", "either") and r.lower > crit:
        return MetricResult(classification="High", ratio=ratio, test=r, **base,
                            reason=f"{cfg.name} higher than control: shift {r.estimate:.4g} "
                                   f"(CI {r.lower:.4g}..{r.upper:.4g}, p={r.p_value:.2g})")
    if cfg.direction in ("decrease", "either") and r.upper < -crit:
        return MetricResult(classification="Low", ratio=ratio, test=r, **base,
                            reason=f"{cfg.name} lower than control: shift {r.estimate:.4g} "
                                   f"(CI {r.lower:.4g}..{r.upper:.4g}, p={r.p_value:.2g})")
    return MetricResult(classification="Pass", ratio=ratio, test=r, **base,
                        reason=f"shift {r.estimate:.4g} within tolerance "
                               f"(CI {r.lower:.4g}..{r.upper:.4g})")


@dataclass
class JudgeResult:
    score: float
    verdict: str  # pass | marginal | fail
    metrics: list = field(default_factory=list)
    group_scores: dict = field(default_factory=dict)
    critical_failure: str | None = None

    @property
    def passed(self) -> bool:
        return self.verdict == "pass"

    def summary(self) -> str:
        lines = [f"canary score {self.score:.1f} -> {self.verdict.upper()}"
                 + (f" (critical metric {self.critical_failure} failed)"
                    if self.critical_failure else "")]
        for m in self.metrics:
            lines.append(f"  {m.name:<24} {m.classification:<7} {m.reason}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"score": self.score, "verdict": self.verdict,
                "group_scores": self.group_scores, "critical_failure": self.critical_failure,
                "metrics": [m.to_dict() for m in self.metrics]}


class Judge:
    """Scores a canary: ``Judge(metrics).judge(control, experiment)`` with dicts of
    metric name -> samples (per-request or per-interval values).

    ``metrics`` are :class:`MetricConfig` (Mann-Whitney) or any config with ``name``,
    ``group``, ``weight``, ``critical`` and ``classify(control, experiment) -> MetricResult``,
    such as :class:`pyperfcore.ops.output_drift.OutputDriftConfig` (a threshold on the drift of
    the candidate's outputs).

    pass_threshold / marginal_threshold : score at or above which the verdict is ``pass`` /
        ``marginal`` (95 / 75 by default); below marginal it is ``fail``.
    """

    def __init__(self, metrics: Sequence[MetricConfig], *, pass_threshold: float = 95.0,
                 marginal_threshold: float = 75.0):
        if not metrics:
            raise ValueError("a judge needs at least one metric")
        names = [m.name for m in metrics]
        if len(set(names)) != len(names):
            raise ValueError("metric names must be unique")
        if not 0 <= marginal_threshold <= pass_threshold <= 100:
            raise ValueError("need 0 <= marginal_threshold <= pass_threshold <= 100")
        gw: dict = {}
        for m in metrics:
            g = m.group or m.name
            if g in gw and gw[g] != m.weight:
                raise ValueError(f"metrics of group {g!r} give different weights")
            gw[g] = m.weight
        self.metrics = list(metrics)
        self.group_weights = gw
        self.pass_threshold = pass_threshold
        self.marginal_threshold = marginal_threshold

    def judge(self, control: Mapping, experiment: Mapping) -> JudgeResult:
        results = [m.classify(control.get(m.name), experiment.get(m.name))
                   if hasattr(m, "classify") else
                   classify(control.get(m.name), experiment.get(m.name), m)
                   for m in self.metrics]
        groups: dict = {}
        for r in results:
            if r.classification == "NoData":
                continue
            p, t = groups.get(r.group, (0, 0))
            groups[r.group] = (p + (r.classification == "Pass"), t + 1)
        gs = {g: 100.0 * p / t for g, (p, t) in groups.items()}
        wsum = sum(self.group_weights[g] for g in gs)
        score = sum(gs[g] * self.group_weights[g] for g in gs) / wsum if wsum > 0 else 0.0
        crit = next((r.name for r in results if r.critical and r.failed), None)
        if crit is not None:
            score = 0.0
        if not gs:
            verdict = "fail"  # nothing could be judged: never a silent pass
        elif score >= self.pass_threshold:
            verdict = "pass"
        elif score >= self.marginal_threshold:
            verdict = "marginal"
        else:
            verdict = "fail"
        return JudgeResult(score, verdict, results, gs, crit)
