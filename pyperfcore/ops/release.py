"""Release control: in-process router (shadow, canary, sticky A/B, blue-green), canary analysis
with automated rollback, and generated Argo Rollouts / Flagger specs for Kubernetes.

Integration is by duck typing, so any of these may be passed in:

* ``audit``: an object with ``append(record: dict)`` (:class:`pyperfcore.ops.AuditLog`);
* ``registry``: an object with ``set_alias(name, alias, version, by=, reason=)``,
  ``remove_alias(name, alias, by=, reason=)`` and ``promote(name, version, alias=, by=,
  reason=)`` (:class:`pyperfcore.ops.Registry`), so rollbacks land in the alias history;
* triggers: callables ``trigger(controller) -> str | None`` returning a reason to roll back
  (see :func:`slo_trigger`, :func:`error_rate_trigger`, :func:`latency_trigger`,
  :func:`drift_trigger`).
"""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .judge import Judge, JudgeResult, MetricConfig
from .output_drift import OutputDriftConfig, extract_values, has_nan

__all__ = ["hash_bucket", "Router", "ArmStats", "CanaryController", "CanaryStep",
           "slo_trigger", "error_rate_trigger", "latency_trigger", "drift_trigger",
           "default_judge", "argo_analysis_template", "argo_rollout", "flagger_canary",
           "OutputDriftConfig"]

BUCKETS = 10_000  # weight resolution: 0.01 %


def hash_bucket(key, salt: str = "") -> int:
    """Stable bucket in ``[0, 10000)`` for ``key`` (SHA-256 of ``salt`` and ``str(key)``): the
    same key always lands in the same bucket, in every process and replica."""
    h = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") % BUCKETS


class ArmStats:
    """Bounded recent samples for one arm: latency (s), error flag, output agreement and (when
    the router collects them) output values per named extractor, per request; ``window`` most
    recent kept."""

    def __init__(self, window: int = 50_000):
        self.window = window
        self.latency = deque(maxlen=window)
        self.error = deque(maxlen=window)
        self.agree = deque(maxlen=window)
        self.outputs: dict = {}  # extractor name -> deque, one scalar or 1-D array per request
        self.requests = 0
        self.errors = 0
        self.epoch = 0  # bumped by reset(): late background results of an old step are dropped
        self._lock = threading.Lock()

    def add(self, latency_s: float, error: bool, agree: float | None = None,
            outputs: dict | None = None) -> None:
        with self._lock:
            self.requests += 1
            self.errors += bool(error)
            self.latency.append(float(latency_s))
            self.error.append(1.0 if error else 0.0)
            if agree is not None:
                self.agree.append(float(agree))
            if outputs:
                for name, v in outputs.items():
                    d = self.outputs.get(name)
                    if d is None:
                        d = self.outputs[name] = deque(maxlen=self.window)
                    d.append(v)

    def add_agreement(self, agree: float, epoch: int | None = None) -> bool:
        """One agreement sample measured apart from the request (canary comparison); ignored
        if ``epoch`` is given and the stats were reset since."""
        with self._lock:
            if epoch is not None and epoch != self.epoch:
                return False
            self.agree.append(float(agree))
            return True

    def reset(self) -> None:
        with self._lock:
            self.latency.clear(), self.error.clear(), self.agree.clear()
            self.outputs = {}
            self.requests = self.errors = 0
            self.epoch += 1

    def arrays(self) -> dict:
        with self._lock:
            outs = {k: _pool(d) for k, d in self.outputs.items()}
            return {"latency": np.array(self.latency), "error": np.array(self.error),
                    "agreement": np.array(self.agree), "outputs": outs}


_SCALARS = (float, int, str, bool, np.floating, np.integer, np.bool_, np.str_)


def _pool(d) -> np.ndarray:
    """One 1-D array from per-request entries: scalars (the fast path) or 1-D arrays."""
    if not d:
        return np.array([])
    items = list(d)
    if all(isinstance(v, _SCALARS) for v in items):
        return np.asarray(items)
    return np.concatenate([np.atleast_1d(np.asarray(v)) for v in items])


def _default_agree(a, b) -> float:
    try:
        return float(np.array_equal(np.asarray(a), np.asarray(b)))
    except Exception:
        return float(a == b)


class Router:
    """Routes each request to the stable or the candidate model inside one process.

    Modes: ``off`` (stable only), ``canary`` (``weight`` percent of keys see the candidate),
    ``ab`` (the same, meant for experiments: assignment is sticky by key hash), ``shadow``
    (every request also goes to the candidate on a background pool; users always get the
    stable answer; outputs are compared with ``agree(stable_out, candidate_out) -> [0, 1]``).

    A request without ``key`` gets a random bucket. A candidate that raises is counted as an
    error and the request is served by the stable model (users are protected while the
    analysis sees the failure).

    Output agreement during a canary or A/B test: with ``compare`` > 0 that share of the
    requests the candidate serves is also given to the stable model, and
    ``agree(stable_out, candidate_out)`` is recorded in the candidate's stats, so the judge sees
    agreement at every step (not only in shadow mode). The comparison runs on the background
    pool (``compare_sync=False``, the user's latency is untouched; it costs one extra stable
    call per compared request, counted in ``compare_calls``) or inline after the candidate
    answered (``compare_sync=True``: deterministic, for tests and batch jobs). Which requests are
    compared is decided by the key hash (with a different salt), so it is reproducible.

    Output values for drift (``outputs=`` or :meth:`collect_outputs`, set by a
    :class:`CanaryController` whose judge has an output-drift metric): a dict name -> extractor
    (see :func:`pyperfcore.ops.output_drift.extract_values`), or one extractor stored as
    ``output_drift``. Each answered request adds its extracted values to its arm's stats. An
    output whose numeric values hold NaN/inf, or that an extractor cannot read, counts as an
    error of the arm that produced it and adds no values (the user still gets that output).
    """

    def __init__(self, stable: Callable, candidate: Callable | None = None, *,
                 mode: str = "off", weight: float = 0.0, salt: str = "pyperfcore",
                 agree: Callable = _default_agree, shadow_workers: int = 2,
                 shadow_queue: int = 1024, window: int = 50_000, compare: float = 0.0,
                 compare_sync: bool = False, outputs=None,
                 clock: Callable[[], float] = time.perf_counter):
        if not callable(stable):
            raise TypeError("stable model must be callable")
        self.stable, self.candidate = stable, candidate
        self.salt, self.agree, self.clock = salt, agree, clock
        self.stats = {"stable": ArmStats(window), "candidate": ArmStats(window)}
        self.shadow_dropped = 0
        if not 0.0 <= compare <= 1.0:
            raise ValueError(f"compare is a fraction in [0, 1], got {compare}")
        self.compare, self.compare_sync = float(compare), bool(compare_sync)
        self.compare_calls = 0
        self.served = 0  # requests answered, all arms
        self._pool: cf.ThreadPoolExecutor | None = None
        self._shadow_workers, self._shadow_cap = shadow_workers, shadow_queue
        self._pending = 0
        self._lock = threading.Lock()
        self._rng = np.random.default_rng()
        self.mode, self.weight = "off", 0.0
        self.set_mode(mode, weight)
        self._extractors: dict = {}
        self.collect_outputs(outputs)

    def collect_outputs(self, extractors) -> None:
        """Record output values per request: ``{name: extractor}``, one extractor (stored as
        ``output_drift``) or None to stop."""
        if extractors is None:
            ex = {}
        elif isinstance(extractors, dict):
            ex = dict(extractors)
        else:
            ex = {"output_drift": extractors}
        for name, how in ex.items():
            if not (callable(how) or how in ("values", "argmax", "max", "norm")):
                raise ValueError(f"output extractor {name!r}: 'values', 'argmax', 'max', "
                                 f"'norm' or a callable, got {how!r}")
        self._extractors = ex

    def _values(self, out):
        """(values per extractor or None, bad output?)"""
        if not self._extractors:
            return None, False
        vals = {}
        for name, how in self._extractors.items():
            if how == "values" and isinstance(out, _SCALARS):
                # one scalar per request (a score, a label): kept as is, no array per request
                if isinstance(out, (float, np.floating)) and not math.isfinite(out):
                    return None, True
                vals[name] = out
                continue
            try:
                v = extract_values(out, how)
            except Exception:
                return None, True
            if has_nan(v):
                return None, True
            vals[name] = v
        return vals, False

    def set_mode(self, mode: str, weight: float | None = None) -> None:
        if mode not in ("off", "canary", "ab", "shadow"):
            raise ValueError("mode is off, canary, ab or shadow")
        if mode != "off" and self.candidate is None:
            raise ValueError(f"mode {mode!r} needs a candidate model")
        w = self.weight if weight is None else float(weight)
        if not 0 <= w <= 100:
            raise ValueError(f"weight is a percentage in [0, 100], got {w}")
        with self._lock:
            self.mode, self.weight = mode, w

    def set_weight(self, weight: float) -> None:
        self.set_mode(self.mode, weight)

    def assign(self, key=None) -> str:
        """Which arm serves this key now: ``stable`` or ``candidate``."""
        if self.mode in ("off", "shadow") or self.weight <= 0:
            return "stable"
        b = hash_bucket(key, self.salt) if key is not None else int(self._rng.integers(BUCKETS))
        return "candidate" if b < self.weight * (BUCKETS // 100) else "stable"

    def _call(self, arm: str, fn: Callable, x):
        t = self.clock()
        try:
            out = fn(x)
        except Exception:
            self.stats[arm].add(self.clock() - t, True)
            raise
        return out, self.clock() - t

    def _compared(self, key) -> bool:
        if self.compare <= 0:
            return False
        if self.compare >= 1:
            return True
        b = hash_bucket(key, self.salt + "/compare") if key is not None \
            else int(self._rng.integers(BUCKETS))
        return b < self.compare * BUCKETS

    def __call__(self, x, key=None):
        arm = self.assign(key)
        self.served += 1
        if arm == "candidate":
            try:
                out, dt = self._call("candidate", self.candidate, x)
            except Exception:
                out, dt = self._call("stable", self.stable, x)
                self.stats["stable"].add(dt, False)
                return out
            vals, bad = self._values(out)
            self.stats["candidate"].add(dt, bad, outputs=vals)
            if self._compared(key):
                self._compare(x, out)
            return out
        out, dt = self._call("stable", self.stable, x)
        vals, bad = self._values(out)
        if self.mode == "shadow":
            self._shadow(x, out)
        self.stats["stable"].add(dt, bad, outputs=vals)
        return out

    def _shadow(self, x, stable_out) -> None:
        with self._lock:
            if self._pending >= self._shadow_cap:
                self.shadow_dropped += 1  # never slow the user down: drop, and count it
                return
            self._pending += 1
            if self._pool is None:
                self._pool = cf.ThreadPoolExecutor(self._shadow_workers,
                                                   thread_name_prefix="pyperfcore-shadow")
        self._pool.submit(self._run_shadow, x, stable_out)

    def _compare(self, x, cand_out) -> None:
        stats = self.stats["candidate"]
        epoch = stats.epoch
        self.compare_calls += 1
        if self.compare_sync:
            self._run_compare(x, cand_out, stats, epoch, pending=False)
            return
        with self._lock:
            if self._pending >= self._shadow_cap:
                self.shadow_dropped += 1
                return
            self._pending += 1
            if self._pool is None:
                self._pool = cf.ThreadPoolExecutor(self._shadow_workers,
                                                   thread_name_prefix="pyperfcore-shadow")
        self._pool.submit(self._run_compare, x, cand_out, stats, epoch, True)

    def _run_compare(self, x, cand_out, stats, epoch, pending: bool) -> None:
        try:
            try:
                ref = self.stable(x)
            except Exception:
                return  # the stable model failing is not the candidate's disagreement
            stats.add_agreement(float(self.agree(ref, cand_out)), epoch)
        finally:
            if pending:
                with self._lock:
                    self._pending -= 1

    def _run_shadow(self, x, stable_out) -> None:
        try:
            t = self.clock()
            try:
                out = self.candidate(x)
            except Exception:
                self.stats["candidate"].add(self.clock() - t, True, 0.0)
                return
            dt = self.clock() - t
            vals, bad = self._values(out)
            self.stats["candidate"].add(dt, bad, float(self.agree(stable_out, out)), vals)
        finally:
            with self._lock:
                self._pending -= 1

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until queued shadow calls have finished (tests, shutdown)."""
        end = time.monotonic() + timeout
        while self._pending and time.monotonic() < end:
            time.sleep(0.001)

    def switch(self) -> None:
        """Blue-green: the candidate becomes stable and the old stable the candidate; all
        traffic moves at once (mode ``off``); call again to switch back."""
        if self.candidate is None:
            raise ValueError("no candidate to switch to")
        with self._lock:
            self.stable, self.candidate = self.candidate, self.stable
            self.mode, self.weight = "off", 0.0
            self.stats = {"stable": self.stats["candidate"], "candidate": self.stats["stable"]}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


# ------------------------------------------------------------------------ triggers
def error_rate_trigger(max_ratio: float, min_requests: int = 50) -> Callable:
    """Roll back when the candidate's error ratio in this step exceeds ``max_ratio``."""
    def trig(ctl: "CanaryController"):
        s = ctl.router.stats["candidate"]
        e = np.asarray(s.error)
        if e.size >= min_requests and e.mean() > max_ratio:
            return f"candidate error ratio {e.mean():.3f} > {max_ratio}"
        return None
    return trig


def latency_trigger(quantile: float, max_seconds: float, min_requests: int = 50) -> Callable:
    """Roll back when the candidate's latency quantile exceeds ``max_seconds``."""
    def trig(ctl: "CanaryController"):
        lat = np.asarray(ctl.router.stats["candidate"].latency)
        if lat.size >= min_requests:
            q = float(np.quantile(lat, quantile))
            if q > max_seconds:
                return f"candidate p{quantile * 100:g} latency {q * 1e3:.1f} ms > {max_seconds * 1e3:g} ms"
        return None
    return trig


def slo_trigger(tracker, severities: Sequence[str] = ("page",)) -> Callable:
    """Roll back when ``tracker`` (an :class:`~pyperfcore.ops.slo.SLOTracker` fed by the
    candidate's traffic) has a burn-rate alert of these severities firing."""
    def trig(ctl):
        st = tracker.evaluate()
        hit = [a for a in st.alerts if a.severity in severities]
        return hit[0].message() if hit else None
    return trig


def drift_trigger(score: Callable[[], float], threshold: float) -> Callable:
    """Roll back when ``score()`` (e.g. the drift of the candidate's outputs against the stable
    model's, from pyperfcore.drift) exceeds ``threshold``."""
    def trig(ctl):
        s = float(score())
        return f"candidate output drift {s:.3f} > {threshold}" if s > threshold else None
    return trig


def default_judge() -> Judge:
    """Latency and error rate (rise fails) and output agreement (fall fails, critical).

    The per-interval rates are judged without IQR outlier removal: when most intervals have no
    error (or full agreement) the IQR is 0 and the removal would discard exactly the intervals
    that show the problem."""
    return Judge([MetricConfig("latency", direction="increase"),
                  MetricConfig("error_rate", direction="increase", critical=True,
                               outlier_factor=None),
                  MetricConfig("agreement", direction="decrease", critical=True,
                               outlier_factor=None)])


@dataclass
class CanaryStep:
    weight: float
    verdict: str | None = None
    score: float | None = None
    reason: str | None = None


class CanaryController:
    """Walks a candidate through ``steps`` (percent of traffic), judging each step before
    moving on; rolls back on a failed analysis or any trigger; promotes after the last step.

    Call :meth:`tick` periodically (or after requests). Per-request samples are grouped into
    intervals of ``interval`` requests so error rate and agreement are judged as rates.

    Output drift: with ``output_drift=True`` (the default :class:`OutputDriftConfig`: PSI 0.2,
    critical) or a config, or with a judge that already has such metrics, the controller makes
    the router collect each arm's output values and judges, at every step, the drift of the
    candidate's outputs against the stable arm's outputs of the same step (at 100 %, the previous
    step's, as for the other metrics). A failing critical drift metric scores 0 and rolls back
    like any failed analysis (audit trail, alias history). With ``metrics`` (a
    :class:`pyperfcore.ops.monitoring.Metrics`, or anything with ``set_drift(feature, score,
    method)``) each judged drift value is also published, as feature ``output:<metric name>``
    (``pyperfcore_drift_score`` in Prometheus).

    State: ``running`` -> ``promoted`` | ``rolled_back``.
    """

    def __init__(self, router: Router, *, steps: Sequence[float] = (5, 25, 50, 100),
                 judge: Judge | None = None, min_requests: int = 200, interval: int = 20,
                 triggers: Sequence[Callable] = (), max_marginal_retries: int = 1,
                 audit=None, registry=None, model: str | None = None,
                 candidate_version: int | None = None, actor: str = "pyperfcore-canary",
                 on_event: Callable[[dict], None] | None = None,
                 output_drift: OutputDriftConfig | bool | None = None, metrics=None):
        if not steps or any(not 0 < s <= 100 for s in steps) or list(steps) != sorted(steps):
            raise ValueError("steps are increasing percentages in (0, 100]")
        if steps[0] >= 100:
            raise ValueError("a canary needs a first step below 100% to collect a baseline")
        if min_requests < interval or interval < 1:
            raise ValueError("need 1 <= interval <= min_requests")
        judge = judge or default_judge()
        if output_drift:
            cfg = OutputDriftConfig() if output_drift is True else output_drift
            if not isinstance(cfg, OutputDriftConfig):
                raise TypeError("output_drift is True or an OutputDriftConfig")
            if any(m.name == cfg.name for m in judge.metrics):
                raise ValueError(f"the judge already has a metric named {cfg.name!r}")
            judge = Judge([*judge.metrics, cfg], pass_threshold=judge.pass_threshold,
                          marginal_threshold=judge.marginal_threshold)
        self.router, self.judge, self.metrics = router, judge, metrics
        self._drift = [m for m in judge.metrics if isinstance(m, OutputDriftConfig)]
        if self._drift:
            router.collect_outputs({m.name: m.extract for m in self._drift})
        self.steps = [CanaryStep(float(s)) for s in steps]
        self.min_requests, self.interval = int(min_requests), int(interval)
        self.triggers = list(triggers)
        self.max_marginal_retries = max_marginal_retries
        self.audit, self.registry, self.model = audit, registry, model
        self.candidate_version, self.actor, self.on_event = candidate_version, actor, on_event
        self.state = "running"
        self.index = 0
        self.retries = 0
        self.history: list = []
        self.last_result: JudgeResult | None = None
        self._record("canary_started", weight=self.steps[0].weight)
        if registry is not None and model is not None and candidate_version is not None:
            registry.set_alias(model, "canary", candidate_version, by=actor,
                               reason="canary started")
        self._enter_step()

    def _record(self, kind: str, **fields) -> None:
        ev = {"kind": kind, "ts": time.time(), "served": self.router.served, "model": self.model,
              "version": self.candidate_version, "actor": self.actor,
              "subject": f"model:{self.model}:{self.candidate_version}", **fields}
        self.history.append(ev)
        if self.audit is not None:
            self.audit.append(ev)
        if self.on_event is not None:
            self.on_event(ev)

    def _enter_step(self) -> None:
        # at 100% the stable arm gets no traffic: judge against the previous step's baseline
        if self.steps[self.index].weight < 100:
            self.router.stats["stable"].reset()
        self.router.stats["candidate"].reset()
        self.router.set_mode("canary", self.steps[self.index].weight)

    def _intervals(self, arm: str) -> dict:
        a = self.router.stats[arm].arrays()
        k = self.interval
        n = (a["error"].size // k) * k
        rates = a["error"][:n].reshape(-1, k).mean(axis=1) if n else np.array([])
        out = {"latency": a["latency"], "error_rate": rates}
        for m in self._drift:  # pooled over the step: one drift statistic per analysis
            out[m.name] = a["outputs"].get(m.name, np.array([]))
        if arm == "candidate" and a["agreement"].size:
            m = (a["agreement"].size // k) * k
            out["agreement"] = a["agreement"][:m].reshape(-1, k).mean(axis=1)
        return out

    def tick(self) -> str:
        """Check triggers, and judge the step once both arms have ``min_requests``."""
        if self.state != "running":
            return self.state
        for trig in self.triggers:
            reason = trig(self)
            if reason:
                self.rollback(reason)
                return self.state
        cs, ss = self.router.stats["candidate"], self.router.stats["stable"]
        if cs.requests < self.min_requests or ss.requests < self.min_requests:
            return self.state
        if self.router.compare > 0 and self.router.mode in ("canary", "ab") and \
                len(cs.agree) < max(5 * self.interval,
                                    int(self.min_requests * min(1.0, self.router.compare))):
            # too few agreement samples yet (the judge needs about 5 intervals against the
            # control's for a 98% interval) or still arriving from the comparison pool
            return self.state
        ctl, exp = self._intervals("stable"), self._intervals("candidate")
        if "agreement" in exp:
            ctl["agreement"] = np.ones_like(exp["agreement"])  # stable agrees with itself
        res = self.judge.judge(ctl, exp)
        self.last_result = res
        if self.metrics is not None:
            for m in res.metrics:
                if m.value is not None and m.name in {d.name for d in self._drift}:
                    self.metrics.set_drift(f"output:{m.name}", m.value,
                                           (m.method or "").split("/")[-1] or "drift")
        step = self.steps[self.index]
        step.verdict, step.score = res.verdict, res.score
        self._record("canary_analysis", weight=step.weight, verdict=res.verdict,
                     score=res.score, metrics=[m.to_dict() for m in res.metrics],
                     agreement_intervals=[float(v) for v in exp.get("agreement", [])],
                     errors={"stable": self.router.stats["stable"].errors,
                             "candidate": cs.errors})
        if res.verdict == "fail" or (res.verdict == "marginal"
                                     and self.retries >= self.max_marginal_retries):
            failed = [m.name for m in res.metrics if m.failed]
            why = next((m.reason for m in res.metrics if m.name == res.critical_failure), None)
            self.rollback(f"canary analysis {res.verdict} at {step.weight:g}% "
                          f"(score {res.score:.0f}; failing: {', '.join(failed) or '-'})"
                          + (f": {why}" if why else ""))
        elif res.verdict == "marginal":
            self.retries += 1
            self._enter_step()
        else:
            self.retries = 0
            if self.index + 1 < len(self.steps):
                self.index += 1
                self._record("canary_step", weight=self.steps[self.index].weight)
                self._enter_step()
            else:
                self.promote()
        return self.state

    def rollback(self, reason: str) -> None:
        """Send all traffic back to stable and record why (audit trail and alias history)."""
        if self.state != "running":
            return
        self.router.set_mode("off", 0.0)
        self.state = "rolled_back"
        self.steps[self.index].reason = reason
        self._record("rollback", reason=reason, weight=self.steps[self.index].weight)
        if self.registry is not None and self.model is not None:
            try:
                self.registry.remove_alias(self.model, "canary", by=self.actor,
                                           reason=f"rolled back: {reason}")
            except LookupError:
                pass  # the alias was never set or is already gone

    def promote(self) -> None:
        self.router.switch()
        self.state = "promoted"
        self._record("promoted", weight=100.0)
        if self.registry is not None and self.model is not None and \
                self.candidate_version is not None:
            self.registry.promote(self.model, self.candidate_version, by=self.actor,
                                  reason="canary analysis passed at every step")

    def report(self) -> dict:
        return {"state": self.state, "steps": [s.__dict__ for s in self.steps],
                "last": self.last_result.to_dict() if self.last_result else None}


# ------------------------------------------------------------------------ Kubernetes specs
def _prom_metrics(service: str, max_error_ratio: float, p99_seconds: float,
                  prometheus: str, interval: str) -> list:
    err = (f'sum(rate(pyperfcore_requests_total{{service="{service}",code=~"5.."}}[{interval}]))'
           f' / sum(rate(pyperfcore_requests_total{{service="{service}"}}[{interval}]))')
    lat = (f'histogram_quantile(0.99, sum by (le) (rate(pyperfcore_request_latency_seconds_bucket'
           f'{{service="{service}"}}[{interval}])))')
    prov = lambda q: {"prometheus": {"address": prometheus, "query": q}}  # noqa: E731
    return [
        {"name": "error-rate", "interval": interval, "failureLimit": 1,
         "successCondition": f"result[0] <= {max_error_ratio!r}", "provider": prov(err)},
        {"name": "latency-p99", "interval": interval, "failureLimit": 1,
         "successCondition": f"result[0] <= {p99_seconds!r}", "provider": prov(lat)},
    ]


def argo_analysis_template(name: str, service: str, *, max_error_ratio: float = 0.01,
                           p99_seconds: float = 0.3, interval: str = "1m",
                           prometheus: str = "http://prometheus.monitoring:9090") -> dict:
    """Argo Rollouts ``AnalysisTemplate`` with the same gates the in-process canary uses."""
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "AnalysisTemplate",
            "metadata": {"name": name},
            "spec": {"metrics": _prom_metrics(service, max_error_ratio, p99_seconds,
                                              prometheus, interval)}}


def argo_rollout(name: str, image: str, *, steps: Sequence[float] = (5, 25, 50, 100),
                 analysis_template: str, pause: str = "5m", replicas: int = 2,
                 port: int = 8080) -> dict:
    """Argo Rollouts ``Rollout`` with ``setWeight``/``pause`` steps and a background analysis."""
    st = []
    for w in steps:
        st.append({"setWeight": int(w)})
        if w < 100:
            st.append({"pause": {"duration": pause}})
    labels = {"app": name}
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout",
            "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": {"containers": [{"name": name, "image": image,
                                                           "ports": [{"containerPort": port}]}]}},
                     "strategy": {"canary": {
                         "analysis": {"templates": [{"templateName": analysis_template}],
                                      "startingStep": 1},
                         "steps": st}}}}


def flagger_canary(name: str, *, namespace: str = "default", port: int = 8080,
                   steps: Sequence[float] = (5, 25, 50), min_success_pct: float = 99.0,
                   max_duration_ms: float = 300.0, interval: str = "1m",
                   threshold: int = 5, autoscaler: str | None = None) -> dict:
    """Flagger ``Canary`` with explicit ``stepWeights`` and the built-in success-rate and
    duration checks (``threshold`` failed checks roll back); ``autoscaler`` names the
    ``autoscaling/v2`` HPA (e.g. :func:`pyperfcore.ops.capacity.hpa_spec`) Flagger should
    manage for the primary and canary. Validate with :func:`pyperfcore.ops.k8s.validate`
    (Flagger's intervals must read like ``30s`` or ``1m``)."""
    steps_pct = [int(s) for s in steps if s < 100]
    if not steps_pct:
        raise ValueError("a Flagger canary needs at least one step weight below 100")
    spec = {"targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "service": {"port": port}}
    if autoscaler is not None:
        spec["autoscalerRef"] = {"apiVersion": "autoscaling/v2",
                                 "kind": "HorizontalPodAutoscaler", "name": autoscaler}
    return {"apiVersion": "flagger.app/v1beta1", "kind": "Canary",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {**spec,
                     "analysis": {"interval": interval, "threshold": threshold,
                                  "stepWeights": steps_pct,
                                  "metrics": [
                                      {"name": "request-success-rate", "interval": interval,
                                       "thresholdRange": {"min": min_success_pct}},
                                      {"name": "request-duration", "interval": interval,
                                       "thresholdRange": {"max": max_duration_ms}}]}}}
