"""Service level objectives, error budgets and multiwindow, multi-burn-rate alerts.

An :class:`SLO` says what fraction of events must be good over a rolling period (30 days by
default). Events come from counters (good/total), from latency histograms (a request is good when
it lands in the bucket whose upper bound is exactly the threshold) or, for time-sliced objectives
(throughput, freshness, drift), from one sample per evaluation tick.

:class:`SLOTracker` keeps per-time-bucket counts in a fixed ring (memory bounded by
``period / resolution``) and evaluates the SRE Workbook alert tiers in-process: a tier fires when
the burn rate (error ratio / (1 - objective)) exceeds the tier's rate over both its long and its
short window. The same tiers are exported as Prometheus recording and alerting rules in the
shape Sloth generates (:func:`prometheus_rules`), and SLOs round-trip through OpenSLO v1 YAML
(:func:`to_openslo`, :func:`from_openslo`).
"""
from __future__ import annotations

import math
import re
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

__all__ = ["SLO", "BurnTier", "DEFAULT_TIERS", "SLOTracker", "SLOStatus", "Alert", "Budget",
           "prometheus_rules", "rules_yaml", "to_openslo", "from_openslo", "load_slos",
           "parse_duration", "format_duration", "KINDS"]

KINDS = ("latency", "availability", "throughput", "freshness", "drift")
# time-sliced kinds: one event per sample, good when the sample meets the threshold
_SLICE_OPS = {"throughput": "gte", "freshness": "lte", "drift": "lte"}

_DUR = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)\s*$")
_UNIT = {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(value) -> float:
    """``"5m"``, ``"1h"``, ``"30d"``, ``"1w"`` or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise TypeError("a duration is a number of seconds or a string like '5m'")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"duration must be a positive finite number of seconds, got {value}")
        return float(value)
    if isinstance(value, str):
        m = _DUR.match(value)
        if not m:
            raise ValueError(f"cannot parse duration {value!r}: expected e.g. '5m', '1h', '30d'")
        s = float(m.group(1)) * _UNIT[m.group(2)]
        if s <= 0:
            raise ValueError(f"duration must be positive, got {value!r}")
        return s
    raise TypeError(f"a duration is a number of seconds or a string like '5m', got {type(value).__name__}")


def format_duration(seconds: float) -> str:
    """Seconds -> the largest Prometheus unit that divides them exactly (``3600 -> '1h'``)."""
    for unit in ("w", "d", "h", "m", "s"):
        n = seconds / _UNIT[unit]
        if n >= 1 and abs(n - round(n)) < 1e-9:
            return f"{int(round(n))}{unit}"
    return f"{int(round(seconds * 1000))}ms"


@dataclass(frozen=True)
class BurnTier:
    """One multiwindow alert: fire when ``budget_fraction`` of the period's error budget would be
    spent within ``long_window`` and the short window confirms it is still burning.

    The burn-rate threshold follows: ``budget_fraction * period / long_window`` (for 30 days:
    2% over 1 h -> 14.4, 5% over 6 h -> 6, 10% over 3 d -> 1).
    """
    name: str
    severity: str
    long_window_s: float
    short_window_s: float
    budget_fraction: float

    def __post_init__(self):
        if self.severity not in ("page", "ticket"):
            raise ValueError(f"severity must be 'page' or 'ticket', got {self.severity!r}")
        if not 0 < self.short_window_s <= self.long_window_s:
            raise ValueError("need 0 < short_window <= long_window")
        if not 0 < self.budget_fraction <= 1:
            raise ValueError(f"budget_fraction must be in (0, 1], got {self.budget_fraction}")

    @classmethod
    def make(cls, name, severity, long_window, budget_fraction, short_window=None) -> "BurnTier":
        lw = parse_duration(long_window)
        sw = parse_duration(short_window) if short_window is not None else lw / 12
        return cls(name, severity, lw, sw, float(budget_fraction))

    def burn_rate(self, period_s: float) -> float:
        return round(self.budget_fraction * period_s / self.long_window_s, 10)


DEFAULT_TIERS = (
    BurnTier.make("page-fast", "page", "1h", 0.02, "5m"),
    BurnTier.make("page-slow", "page", "6h", 0.05, "30m"),
    BurnTier.make("ticket", "ticket", "3d", 0.10, "6h"),
)


@dataclass(frozen=True)
class SLO:
    """A service level objective.

    Parameters
    ----------
    name : identifier (``[a-zA-Z0-9_-]``).
    kind : ``latency`` (fraction of requests at or under ``threshold`` seconds),
        ``availability`` (fraction of requests without error), ``throughput`` (fraction of time
        slices with at least ``threshold`` req/s), ``freshness`` (fraction of slices whose feature
        or model age is at most ``threshold`` seconds), ``drift`` (fraction of slices whose drift
        score is at most ``threshold``).
    objective : target good fraction in (0, 1), e.g. 0.999.
    threshold : see ``kind`` (required except for availability).
    period : rolling period (seconds or ``"30d"``).
    tiers : alert tiers; the SRE Workbook's three by default.
    metric, selector : Prometheus names for export: the histogram (latency), the request counter
        (availability, with ``error_selector`` marking errors) or the gauge (time-sliced kinds).
    error_query, total_query : explicit PromQL templates with ``{{.window}}`` (Sloth's
        convention); they override ``metric``.
    """
    name: str
    kind: str
    objective: float
    threshold: float | None = None
    period_s: float = 30 * 86400.0
    service: str = "pyperfcore"
    description: str = ""
    tiers: tuple = DEFAULT_TIERS
    metric: str | None = None
    selector: str = ""
    error_selector: str = 'code=~"5.."'
    error_query: str | None = None
    total_query: str | None = None
    labels: tuple = ()

    def __post_init__(self):
        if not isinstance(self.name, str) or not re.fullmatch(r"[A-Za-z0-9_-]+", self.name):
            raise ValueError(f"SLO name must match [A-Za-z0-9_-]+, got {self.name!r}")
        if self.kind not in KINDS:
            raise ValueError(f"SLO kind must be one of {KINDS}, got {self.kind!r}")
        obj = self.objective
        if isinstance(obj, bool) or not isinstance(obj, (int, float)) or not 0 < obj < 1:
            raise ValueError(f"objective is a fraction in (0, 1) such as 0.999, got {obj!r}")
        if self.kind != "availability":
            if self.threshold is None or not math.isfinite(self.threshold):
                raise ValueError(f"a {self.kind} SLO needs a finite threshold")
            if self.kind in ("latency", "freshness") and self.threshold <= 0:
                raise ValueError(f"a {self.kind} threshold is a positive number of seconds")
        object.__setattr__(self, "period_s", parse_duration(self.period_s))
        object.__setattr__(self, "tiers", tuple(self.tiers))
        object.__setattr__(self, "labels", tuple(sorted(dict(self.labels).items())))
        for t in self.tiers:
            if not isinstance(t, BurnTier):
                raise TypeError("tiers must be BurnTier objects")
            if t.long_window_s > self.period_s:
                raise ValueError(f"tier {t.name}: long window exceeds the SLO period")
        if (self.error_query is None) != (self.total_query is None):
            raise ValueError("give both error_query and total_query, or neither")

    @property
    def error_budget(self) -> float:
        """Allowed bad fraction, ``1 - objective``."""
        return 1.0 - self.objective

    @property
    def time_sliced(self) -> bool:
        return self.kind in _SLICE_OPS

    def is_good(self, value) -> np.ndarray:
        """For a time-sliced SLO: which samples meet the threshold."""
        v = np.asarray(value, dtype=np.float64)
        if np.isnan(v).any():
            raise ValueError(f"{self.name}: NaN sample")
        return v >= self.threshold if _SLICE_OPS[self.kind] == "gte" else v <= self.threshold

    def to_dict(self) -> dict:
        d = {"name": self.name, "kind": self.kind, "objective": self.objective,
             "period": format_duration(self.period_s), "service": self.service}
        for k in ("threshold", "description", "metric", "selector", "error_query",
                  "total_query"):
            v = getattr(self, k)
            if v not in (None, ""):
                d[k] = v
        if self.kind == "availability":
            d["error_selector"] = self.error_selector
        if self.labels:
            d["labels"] = dict(self.labels)
        if self.tiers != DEFAULT_TIERS:
            d["tiers"] = [{"name": t.name, "severity": t.severity,
                           "long_window": format_duration(t.long_window_s),
                           "short_window": format_duration(t.short_window_s),
                           "budget_fraction": t.budget_fraction} for t in self.tiers]
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "SLO":
        """From pyperfcore's own YAML/dict form (see :meth:`to_dict`)."""
        if not isinstance(d, Mapping):
            raise TypeError("an SLO declaration is a mapping")
        known = {"name", "kind", "objective", "threshold", "period", "service", "description",
                 "metric", "selector", "error_selector", "error_query", "total_query", "labels",
                 "tiers"}
        extra = set(d) - known
        if extra:
            raise ValueError(f"unknown SLO fields: {sorted(extra)}")
        kw = {k: d[k] for k in ("name", "kind", "objective", "threshold", "service",
                                "description", "metric", "selector", "error_selector",
                                "error_query", "total_query") if k in d}
        if "period" in d:
            kw["period_s"] = d["period"]
        if "labels" in d:
            kw["labels"] = tuple(dict(d["labels"]).items())
        if "tiers" in d:
            kw["tiers"] = tuple(BurnTier.make(t["name"], t["severity"], t["long_window"],
                                              t["budget_fraction"], t.get("short_window"))
                                for t in d["tiers"])
        return cls(**kw)


@dataclass(frozen=True)
class Alert:
    """A tier that is firing: both windows burn faster than ``threshold``."""
    slo: str
    tier: str
    severity: str
    threshold: float
    burn_long: float
    burn_short: float
    long_window: str
    short_window: str

    def message(self) -> str:
        return (f"{self.slo}: error budget burning at {self.burn_long:.1f}x over "
                f"{self.long_window} and {self.burn_short:.1f}x over {self.short_window} "
                f"(threshold {self.threshold:g}x) -> {self.severity}")


@dataclass(frozen=True)
class Budget:
    """Error budget over the SLO period (so far, as far as the tracker has seen)."""
    total: float
    bad: float
    allowed_bad: float
    remaining: float  # fraction of budget left; negative once overspent
    sli: float | None  # good fraction, None without events


@dataclass(frozen=True)
class SLOStatus:
    slo: SLO
    t: float
    budget: Budget
    burn_rates: dict  # window label -> burn rate
    alerts: tuple  # firing Alert objects

    @property
    def ok(self) -> bool:
        return not self.alerts

    def to_dict(self) -> dict:
        return {"slo": self.slo.name, "t": self.t, "sli": self.budget.sli,
                "budget_remaining": self.budget.remaining, "events": self.budget.total,
                "bad_events": self.budget.bad, "burn_rates": dict(self.burn_rates),
                "alerts": [a.__dict__ | {"message": a.message()} for a in self.alerts]}


class SLOTracker:
    """In-process evaluation of one SLO from counters, histograms or samples.

    Parameters
    ----------
    slo : the objective.
    resolution_s : width of one time bucket. Windows are whole buckets ending with the current
        one, so a window is exact to one resolution step. Default: a fifth of the shortest tier
        window, at most 60 s.
    clock : returns the current time in seconds (``time.time``); tests pass a fake clock.

    Thread-safe: ``record``/``observe*`` may be called from request threads while another thread
    evaluates. Subscribers (:meth:`subscribe`) get ``("firing"|"resolved", Alert, SLOStatus)``
    on each transition seen by :meth:`evaluate`.
    """

    def __init__(self, slo: SLO, *, resolution_s: float | None = None,
                 clock: Callable[[], float] = time.time):
        if not isinstance(slo, SLO):
            raise TypeError("SLOTracker needs an SLO")
        self.slo = slo
        if resolution_s is None:
            shortest = min((t.short_window_s for t in slo.tiers), default=300.0)
            resolution_s = min(60.0, shortest / 5)
        self.res = parse_duration(resolution_s)
        self.nb = int(math.ceil(slo.period_s / self.res)) + 1
        self._good = np.zeros(self.nb, dtype=np.float64)
        self._total = np.zeros(self.nb, dtype=np.float64)
        self._head: int | None = None  # absolute index of the newest bucket
        self._init_running()
        self.clock = clock
        self._lock = threading.Lock()
        self._firing: dict = {}
        self._subs: list = []
        self._cum: dict = {}  # source key -> last cumulative (good, total)
        self._sources: list = []

    # ------------------------------------------------------------------ ingestion
    # Running sums are kept for every tier window and the period, so evaluate() is O(windows)
    # however fine the resolution; other windows are summed from the ring on demand.
    def _init_running(self) -> None:
        ws = {t.long_window_s for t in self.slo.tiers} | {t.short_window_s for t in self.slo.tiers}
        ws.add(self.slo.period_s)
        self._run = {self._nbuckets(w): [0.0, 0.0] for w in ws}

    def _nbuckets(self, window_s: float) -> int:
        return min(self.nb, max(1, int(math.ceil(window_s / self.res - 1e-9))))

    def _advance(self, b: int) -> None:
        if self._head is None:
            self._head = b
            return
        if b <= self._head:
            return
        gap = b - self._head
        if gap >= self.nb:
            self._good[:] = 0
            self._total[:] = 0
            for acc in self._run.values():
                acc[0] = acc[1] = 0.0
        else:
            g, tot, nb = self._good, self._total, self.nb
            for n, acc in self._run.items():
                # buckets head-n+1 .. b-n leave a window of n buckets ending at b
                lo, hi = self._head - n + 1, min(b - n, self._head)
                if hi < lo:
                    continue
                if hi - lo < 16:  # the common case: a few steps; plain indexing is cheaper
                    for j in range(lo, hi + 1):
                        acc[0] -= g[j % nb]
                        acc[1] -= tot[j % nb]
                else:
                    idx = np.arange(lo, hi + 1) % nb
                    acc[0] -= float(g[idx].sum())
                    acc[1] -= float(tot[idx].sum())
            if gap < 16:
                for j in range(self._head + 1, b + 1):
                    g[j % nb] = 0.0
                    tot[j % nb] = 0.0
            else:
                idx = np.arange(self._head + 1, b + 1) % nb
                g[idx] = 0
                tot[idx] = 0
        self._head = b

    def _now(self, t):
        t = self.clock() if t is None else float(t)
        if not math.isfinite(t):
            raise ValueError("time must be finite")
        return t

    def record(self, good, total, t: float | None = None) -> None:
        """Add ``good`` good events out of ``total`` at time ``t`` (default: now).

        Events older than the newest bucket are added to their own bucket if it is still kept.
        """
        good, total = float(good), float(total)
        if not (math.isfinite(good) and math.isfinite(total)) or good < 0 or total < good:
            raise ValueError(f"need 0 <= good <= total, got good={good}, total={total}")
        if total == 0:
            return
        t = self._now(t)
        b = int(math.floor(t / self.res))
        with self._lock:
            self._advance(b)
            if b <= self._head - self.nb + 1:
                return  # older than the period: outside every window
            i = b % self.nb
            self._good[i] += good
            self._total[i] += total
            for n, acc in self._run.items():
                if b > self._head - n:
                    acc[0] += good
                    acc[1] += total

    def record_errors(self, errors, total, t: float | None = None) -> None:
        """Availability convenience: ``errors`` bad out of ``total``."""
        self.record(float(total) - float(errors), total, t)

    def observe(self, values, t: float | None = None) -> None:
        """Latency SLO: request durations in seconds (good when ``<= threshold``); time-sliced
        SLOs: samples (throughput req/s, age seconds, drift score), each one event.
        Availability: booleans, True for an error."""
        v = np.asarray(values)
        if v.size == 0:
            return
        if self.slo.kind == "availability":
            if v.dtype != np.bool_:
                raise TypeError("availability observations are booleans (True = error)")
            self.record(v.size - int(v.sum()), v.size, t)
            return
        v = v.astype(np.float64, copy=False)
        if np.isnan(v).any():
            raise ValueError(f"{self.slo.name}: NaN in observations")
        if self.slo.kind == "latency":
            good = int(np.count_nonzero(v <= self.slo.threshold))
        else:
            good = int(np.count_nonzero(self.slo.is_good(v)))
        self.record(good, v.size, t)

    def update_from_totals(self, good_total, total, t: float | None = None, *,
                           key="default") -> None:
        """Feed monotonic cumulative counters (Prometheus-style); the tracker adds the deltas
        since the previous call with the same ``key``. A counter that went down was reset
        (process restart): its new value is taken as the delta, as Prometheus' ``rate`` does."""
        g, n = float(good_total), float(total)
        if g < 0 or n < g or not (math.isfinite(g) and math.isfinite(n)):
            raise ValueError(f"need 0 <= good_total <= total, got {g}, {n}")
        prev = self._cum.get(key)
        self._cum[key] = (g, n)
        if prev is None:
            return  # the first reading only sets the origin
        dg, dn = g - prev[0], n - prev[1]
        if dn < 0 or dg < 0:  # reset
            dg, dn = g, n
        if dn > 0:
            self.record(min(dg, dn), dn, t)

    def update_from_histogram(self, upper_bounds, cumulative_counts, t: float | None = None, *,
                              key="default") -> None:
        """Latency SLO from a cumulative histogram snapshot (Prometheus ``le`` buckets: count of
        observations ``<= upper_bounds[i]`` since start, the last bound ``+Inf``). One bound must
        equal the threshold exactly; otherwise the SLI could only be interpolated."""
        if self.slo.kind != "latency":
            raise ValueError("update_from_histogram is for latency SLOs")
        b = np.asarray(upper_bounds, dtype=np.float64)
        c = np.asarray(cumulative_counts, dtype=np.float64)
        if b.ndim != 1 or c.shape != b.shape or b.size == 0:
            raise ValueError("upper_bounds and cumulative_counts must be 1-D of the same length")
        if np.any(np.diff(b) <= 0) or np.any(np.diff(c) < 0):
            raise ValueError("bounds must increase and counts be cumulative (non-decreasing)")
        hit = np.nonzero(np.isclose(b, self.slo.threshold, rtol=1e-12, atol=0))[0]
        if hit.size == 0:
            raise ValueError(f"{self.slo.name}: no histogram bucket at the threshold "
                             f"{self.slo.threshold:g} s; add it (see monitoring.latency_buckets)")
        self.update_from_totals(c[hit[0]], c[-1], t, key=key)

    def add_source(self, fn: Callable[[], tuple], *, kind: str = "totals", key=None) -> None:
        """Register a pull source polled by :meth:`poll`: ``kind='totals'`` returns
        ``(good_total, total)``, ``kind='histogram'`` returns ``(upper_bounds,
        cumulative_counts)``, ``kind='sample'`` returns one value (time-sliced SLOs)."""
        if kind not in ("totals", "histogram", "sample"):
            raise ValueError("kind is 'totals', 'histogram' or 'sample'")
        if not callable(fn):
            raise TypeError("a source is a callable")
        self._sources.append((fn, kind, key if key is not None else f"src{len(self._sources)}"))

    def poll(self, t: float | None = None) -> None:
        """Read every registered source once."""
        t = self._now(t)
        for fn, kind, key in self._sources:
            try:
                v = fn()
            except Exception as exc:
                raise RuntimeError(f"SLO source {key!r} of {self.slo.name} raised: {exc!r}") from exc
            if kind == "totals":
                self.update_from_totals(*v, t, key=key)
            elif kind == "histogram":
                self.update_from_histogram(*v, t, key=key)
            else:
                self.observe([v], t)

    # ------------------------------------------------------------------ queries
    def _window(self, window_s: float, t: float) -> tuple:
        b = int(math.floor(t / self.res))
        n = self._nbuckets(window_s)
        with self._lock:
            self._advance(b)
            if b < self._head:
                raise ValueError(f"cannot evaluate at t={t}: the tracker has moved past it")
            acc = self._run.get(n)
            if acc is not None:
                return max(0.0, acc[0]), max(0.0, acc[1])
            lo = b - n + 1
            idx = np.arange(lo, b + 1) % self.nb
            return float(self._good[idx].sum()), float(self._total[idx].sum())

    def error_ratio(self, window, t: float | None = None) -> float:
        """Bad fraction over the last ``window`` (0 when there were no events)."""
        g, n = self._window(parse_duration(window), self._now(t))
        return (n - g) / n if n > 0 else 0.0

    def burn_rate(self, window, t: float | None = None) -> float:
        return self.error_ratio(window, t) / self.slo.error_budget

    def budget(self, t: float | None = None) -> Budget:
        g, n = self._window(self.slo.period_s, self._now(t))
        bad = n - g
        allowed = self.slo.error_budget * n
        remaining = 1.0 - bad / allowed if allowed > 0 else 1.0
        return Budget(n, bad, allowed, remaining, g / n if n > 0 else None)

    def evaluate(self, t: float | None = None) -> SLOStatus:
        """Burn rates for every tier window, the budget, and the alerts firing now."""
        t = self._now(t)
        rates, alerts = {}, []
        for tier in self.slo.tiers:
            lw, sw = format_duration(tier.long_window_s), format_duration(tier.short_window_s)
            bl = rates.setdefault(lw, self.burn_rate(tier.long_window_s, t))
            bs = rates.setdefault(sw, self.burn_rate(tier.short_window_s, t))
            thr = tier.burn_rate(self.slo.period_s)
            if bl > thr and bs > thr:
                alerts.append(Alert(self.slo.name, tier.name, tier.severity, thr, bl, bs, lw, sw))
        status = SLOStatus(self.slo, t, self.budget(t), rates, tuple(alerts))
        now_firing = {a.tier: a for a in alerts}
        events = [("firing", a) for k, a in now_firing.items() if k not in self._firing]
        events += [("resolved", a) for k, a in self._firing.items() if k not in now_firing]
        self._firing = now_firing
        for what, a in events:
            for cb in list(self._subs):
                cb(what, a, status)
        return status

    def subscribe(self, callback: Callable) -> Callable[[], None]:
        """``callback(event, alert, status)`` on each firing/resolved transition; returns an
        unsubscribe function."""
        if not callable(callback):
            raise TypeError("callback must be callable")
        self._subs.append(callback)
        return lambda: self._subs.remove(callback)

    @property
    def firing(self) -> list:
        return list(self._firing.values())


# ---------------------------------------------------------------------- Prometheus rules
def _sli_queries(slo: SLO) -> tuple:
    """(error_query, total_query) templates with ``{{.window}}``."""
    if slo.error_query is not None:
        return slo.error_query, slo.total_query
    sel = slo.selector.strip()
    metric = slo.metric
    if slo.kind == "latency":
        metric = metric or "pyperfcore_request_latency_seconds"
        le = f'le="{_le(slo.threshold)}"'
        sel_le = f"{sel},{le}" if sel else le
        base = f"{{{sel}}}" if sel else ""
        total = f"sum(rate({metric}_count{base}[{{{{.window}}}}]))"
        err = (f"({total} - sum(rate({metric}_bucket{{{sel_le}}}[{{{{.window}}}}])))")
        return err, total
    if slo.kind == "availability":
        metric = metric or "pyperfcore_requests_total"
        es = f"{sel},{slo.error_selector}" if sel else slo.error_selector
        base = f"{{{sel}}}" if sel else ""
        return (f"sum(rate({metric}{{{es}}}[{{{{.window}}}}]))",
                f"sum(rate({metric}{base}[{{{{.window}}}}]))")
    # time-sliced: the fraction of samples in the window that miss the threshold
    metric = metric or {"throughput": "pyperfcore_throughput_rps",
                        "freshness": "pyperfcore_feature_age_seconds",
                        "drift": "pyperfcore_drift_score"}[slo.kind]
    base = f"{{{sel}}}" if sel else ""
    bad_op = "<" if _SLICE_OPS[slo.kind] == "gte" else ">"
    return (f"sum(count_over_time(({metric}{base} {bad_op} {slo.threshold!r})[{{{{.window}}}}:]))"
            f" or vector(0)",
            f"sum(count_over_time(({metric}{base})[{{{{.window}}}}:]))")


def _le(x: float) -> str:
    # prometheus_client writes bucket bounds with repr-style floats ("0.3", "1.0")
    return repr(float(x))


def prometheus_rules(slos: Iterable[SLO]) -> dict:
    """Prometheus rule groups in the shape Sloth generates: per SLO, a group of SLI recording
    rules ``slo:sli_error:ratio_rate<window>`` (one per distinct alert window, labelled
    ``sloth_id``/``sloth_service``/``sloth_slo``/``sloth_window``), a group of metadata
    recordings (objective, error budget, period burn and remaining budget) and a group with one
    page and one ticket alert, each the OR of its tiers' two-window conditions."""
    groups = []
    for slo in slos:
        sid = f"{slo.service}-{slo.name}"
        ids = {"sloth_id": sid, "sloth_service": slo.service, "sloth_slo": slo.name}
        sel = ", ".join(f'{k}="{v}"' for k, v in ids.items())
        err_t, tot_t = _sli_queries(slo)
        windows = sorted({w for t in slo.tiers for w in (t.long_window_s, t.short_window_s)}
                         | {300.0})
        sli_rules = []
        for w in windows:
            ws = format_duration(w)
            expr = (f"({err_t.replace('{{.window}}', ws)})\n/\n"
                    f"({tot_t.replace('{{.window}}', ws)})\n")
            sli_rules.append({"record": f"slo:sli_error:ratio_rate{ws}", "expr": expr,
                              "labels": {**ids, "sloth_window": ws, **dict(slo.labels)}})
        period = format_duration(slo.period_s)
        days = slo.period_s / 86400
        meta_labels = {**ids, **dict(slo.labels)}
        meta = [
            {"record": "slo:objective:ratio", "expr": f"vector({slo.objective!r})",
             "labels": meta_labels},
            {"record": "slo:error_budget:ratio", "expr": f"vector(1 - {slo.objective!r})",
             "labels": meta_labels},
            {"record": "slo:time_period:days", "expr": f"vector({days:g})", "labels": meta_labels},
            {"record": "slo:current_burn_rate:ratio",
             "expr": (f"slo:sli_error:ratio_rate5m{{{sel}}}\n/ on({', '.join(ids)}) "
                      f"group_left\nslo:error_budget:ratio{{{sel}}}\n"), "labels": meta_labels},
            {"record": "slo:period_burn_rate:ratio",
             "expr": (f"slo:sli_error:ratio_rate{period}{{{sel}}}\n/ on({', '.join(ids)}) "
                      f"group_left\nslo:error_budget:ratio{{{sel}}}\n")
             if slo.period_s in windows else
             (f"(sum_over_time(slo:sli_error:ratio_rate5m{{{sel}}}[{period}])\n/ ignoring"
              f"(sloth_window)\ncount_over_time(slo:sli_error:ratio_rate5m{{{sel}}}[{period}]))"
              f"\n/ on({', '.join(ids)}) group_left\nslo:error_budget:ratio{{{sel}}}\n"),
             "labels": meta_labels},
            {"record": "slo:period_error_budget_remaining:ratio",
             "expr": f"1 - slo:period_burn_rate:ratio{{{sel}}}", "labels": meta_labels},
            {"record": "sloth_slo_info", "expr": "vector(1)",
             "labels": {**meta_labels, "sloth_objective": f"{slo.objective * 100:g}",
                        "sloth_mode": "pyperfcore", "sloth_kind": slo.kind}},
        ]
        alerts = []
        for sev in ("page", "ticket"):
            tiers = [t for t in slo.tiers if t.severity == sev]
            if not tiers:
                continue
            parts = []
            for t in tiers:
                thr = t.burn_rate(slo.period_s)
                c = []
                for w in (t.short_window_s, t.long_window_s):
                    c.append(f"max(slo:sli_error:ratio_rate{format_duration(w)}{{{sel}}} > "
                             f"({thr:g} * {slo.error_budget!r})) without (sloth_window)")
                parts.append("(\n    " + "\n    and\n    ".join(c) + "\n)")
            name = "".join(p.capitalize() for p in re.split(r"[-_]", slo.name))
            alerts.append({
                "alert": f"{name}{'Page' if sev == 'page' else 'Ticket'}BurnRate",
                "expr": "\nor\n".join(parts) + "\n",
                "labels": {"severity": sev, "sloth_severity": sev, "slo": slo.name,
                           "service": slo.service},
                "annotations": {
                    "summary": f"{slo.service}/{slo.name} is burning its error budget too fast",
                    "title": f"({sev}) {slo.service} {slo.name} SLO error budget burn rate is "
                             "too high",
                    "runbook": f"pyperfcore runbook {slo.kind}"}})
        groups.append({"name": f"sloth-slo-sli-recordings-{sid}", "rules": sli_rules})
        groups.append({"name": f"sloth-slo-meta-recordings-{sid}", "rules": meta})
        if alerts:
            groups.append({"name": f"sloth-slo-alerts-{sid}", "rules": alerts})
    return {"groups": groups}


def _yaml():
    try:
        import yaml
    except ModuleNotFoundError as exc:  # pragma: no cover - pyyaml is a common dependency
        raise ModuleNotFoundError("YAML needs PyYAML: pip install pyyaml", name="yaml") from exc
    return yaml


def rules_yaml(slos: Iterable[SLO]) -> str:
    """:func:`prometheus_rules` as a YAML rule file for ``rule_files:`` / ``promtool``."""
    head = "# Generated by pyperfcore.ops.slo (Sloth-compatible layout). Do not edit.\n"
    return head + _yaml().safe_dump(prometheus_rules(slos), sort_keys=False, width=100)


# ---------------------------------------------------------------------- OpenSLO
_PYP = "pyperfcore.io/"


def to_openslo(slo: SLO) -> dict:
    """OpenSLO v1 ``kind: SLO`` document with an inline SLI (``ratioMetric`` for latency and
    availability, ``thresholdMetric`` with a ``Timeslices`` budget for the time-sliced kinds).
    Fields OpenSLO has no place for are kept in ``metadata.annotations`` (``pyperfcore.io/*``)."""
    err_t, tot_t = _sli_queries(slo)
    q = lambda s: {"metricSource": {"type": "Prometheus",  # noqa: E731
                                    "spec": {"query": s.replace("{{.window}}", "1m")}}}
    ann = {_PYP + "kind": slo.kind}
    if slo.threshold is not None:
        ann[_PYP + "threshold"] = repr(float(slo.threshold))
    if slo.metric:
        ann[_PYP + "metric"] = slo.metric
    if slo.selector:
        ann[_PYP + "selector"] = slo.selector
    if slo.error_query is not None:  # keep the {{.window}} templates for a lossless round trip
        ann[_PYP + "error-query"] = slo.error_query
        ann[_PYP + "total-query"] = slo.total_query
    if slo.tiers != DEFAULT_TIERS:
        ann[_PYP + "tiers"] = ";".join(
            f"{t.name},{t.severity},{format_duration(t.long_window_s)},"
            f"{format_duration(t.short_window_s)},{t.budget_fraction!r}" for t in slo.tiers)
    spec = {"description": slo.description, "service": slo.service,
            "timeWindow": [{"duration": format_duration(slo.period_s), "isRolling": True}]}
    if slo.time_sliced:
        spec["indicator"] = {"metadata": {"name": f"{slo.name}-sli"},
                             "spec": {"thresholdMetric": {"metricSource": q(tot_t)["metricSource"]}}}
        spec["budgetingMethod"] = "Timeslices"
        spec["objectives"] = [{"displayName": slo.name, "op": _SLICE_OPS[slo.kind],
                               "value": float(slo.threshold), "timeSliceTarget": slo.objective,
                               "timeSliceWindow": "1m"}]
    else:
        spec["indicator"] = {"metadata": {"name": f"{slo.name}-sli"},
                             "spec": {"ratioMetric": {"counter": True, "bad": q(err_t),
                                                      "total": q(tot_t)}}}
        spec["budgetingMethod"] = "Occurrences"
        obj = {"displayName": slo.name, "target": slo.objective}
        if slo.kind == "latency":
            obj.update(op="lte", value=float(slo.threshold))
        spec["objectives"] = [obj]
    return {"apiVersion": "openslo/v1", "kind": "SLO",
            "metadata": {"name": slo.name, "displayName": slo.description or slo.name,
                         "annotations": ann}, "spec": spec}


def from_openslo(doc: Mapping) -> SLO:
    """An :class:`SLO` from an OpenSLO v1 ``kind: SLO`` document (ours or another tool's).

    Without pyperfcore annotations the kind is inferred: ``Timeslices`` with ``op: gte`` ->
    throughput, ``op: lte`` -> freshness; ``Occurrences`` with an ``op``/``value`` objective ->
    latency; otherwise availability. The ratio queries become ``error_query``/``total_query``
    (a ``good`` query ``G`` is turned into ``total - G``)."""
    if not isinstance(doc, Mapping) or doc.get("kind") != "SLO":
        raise ValueError("not an OpenSLO SLO document (kind: SLO)")
    if doc.get("apiVersion") not in ("openslo/v1", "openslo/v1alpha"):
        raise ValueError(f"unsupported OpenSLO apiVersion {doc.get('apiVersion')!r}")
    meta = doc.get("metadata") or {}
    spec = doc.get("spec") or {}
    ann = meta.get("annotations") or {}
    objs = spec.get("objectives") or []
    if len(objs) != 1:
        raise ValueError("pyperfcore SLOs have exactly one objective; split the document")
    obj = objs[0]
    method = spec.get("budgetingMethod", "Occurrences")
    kind = ann.get(_PYP + "kind")
    if kind is None:
        if method == "Timeslices":
            kind = "throughput" if obj.get("op") in ("gte", "gt") else "freshness"
        elif "value" in obj:
            kind = "latency"
        else:
            kind = "availability"
    target = obj.get("timeSliceTarget") if method == "Timeslices" else obj.get("target")
    if target is None:
        raise ValueError("objective has no target")
    threshold = ann.get(_PYP + "threshold", obj.get("value"))
    windows = spec.get("timeWindow") or [{"duration": "30d"}]
    kw = dict(name=meta.get("name"), kind=kind, objective=float(target),
              threshold=None if threshold is None else float(threshold),
              period_s=windows[0]["duration"], service=spec.get("service", "pyperfcore"),
              description=spec.get("description") or "")
    if _PYP + "metric" in ann:
        kw["metric"] = ann[_PYP + "metric"]
    if _PYP + "selector" in ann:
        kw["selector"] = ann[_PYP + "selector"]
    if _PYP + "tiers" in ann:
        tiers = []
        for part in ann[_PYP + "tiers"].split(";"):
            n, sev, lw, sw, frac = part.split(",")
            tiers.append(BurnTier.make(n, sev, lw, float(frac), sw))
        kw["tiers"] = tuple(tiers)
    if _PYP + "error-query" in ann:
        kw["error_query"], kw["total_query"] = ann[_PYP + "error-query"], ann[_PYP + "total-query"]
    elif _PYP + "metric" not in ann:
        ratio = ((spec.get("indicator") or {}).get("spec") or {}).get("ratioMetric")
        if ratio:
            def query(part):
                return ratio[part]["metricSource"]["spec"]["query"]
            total = query("total")
            if "bad" in ratio:
                kw["error_query"], kw["total_query"] = query("bad"), total
            elif "good" in ratio:
                kw["error_query"], kw["total_query"] = f"({total}) - ({query('good')})", total
    return SLO(**kw)


def load_slos(text_or_path) -> list:
    """SLOs from YAML: OpenSLO documents (one or many, ``---``-separated) or pyperfcore's own
    ``{slos: [{name, kind, objective, threshold, ...}]}`` form."""
    from pathlib import Path

    text = text_or_path
    if isinstance(text_or_path, Path) or (isinstance(text_or_path, str)
                                          and "\n" not in text_or_path
                                          and Path(text_or_path).is_file()):
        text = Path(text_or_path).read_text()
    out = []
    for doc in _yaml().safe_load_all(text):
        if doc is None:
            continue
        if isinstance(doc, Mapping) and doc.get("kind") == "SLO":
            out.append(from_openslo(doc))
        elif isinstance(doc, Mapping) and "slos" in doc:
            out.extend(SLO.from_dict(d) for d in doc["slos"])
        else:
            raise ValueError("YAML document is neither OpenSLO (kind: SLO) nor {slos: [...]}")
    return out


def with_tiers(slo: SLO, tiers: Sequence[BurnTier]) -> SLO:
    """A copy of ``slo`` with other alert tiers."""
    return replace(slo, tiers=tuple(tiers))
