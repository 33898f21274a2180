"""Fallback routing for replicas that disappear (spot or preemptible capacity), and a
region-by-region rollout of an alias change with failover to another region.

* :class:`Endpoint`: a replica (any callable) with a pool, a region and a cost per call.
* :class:`HealthChecker`: active probes on an injected clock (``fail_after`` failures in a row
  eject a replica, ``recover_after`` successes readmit it) plus passive ejection on request
  errors with a cool-down, as load balancers do (Envoy's outlier detection, for example).
* :class:`FallbackRouter`: picks a healthy primary replica round-robin; a failed call is
  retried on another primary, then on the fallback pool; optionally a *hedged* request goes to
  the fallback pool when the primary has not answered within ``hedge_after_s`` and the first
  answer wins. Every call's cost is counted, and ``extra_cost`` is what the failures, retries and
  hedges cost over serving every request by one primary call.
* :class:`RegionalRouter` and :class:`RegionalRollout`: each region serves its own alias
  (``production@eu-west``); requests go to their own region and fail over to the next healthy
  region in a preference order. A rollout moves the alias one region at a time, bakes, checks
  the region (error ratio by default, or any ``check(region) -> reason | None``) and rolls every
  region it changed back on failure; each move lands in the registry's alias history and the
  audit trail (duck-typed as in :mod:`pyperfcore.ops.release`).

Everything takes a ``clock`` so tests are deterministic; the hedge's wait is the only real-time
wait (it must race a call that is really running).
"""
from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

__all__ = ["Endpoint", "HealthChecker", "FallbackRouter", "NoHealthyEndpoint",
           "RegionalRouter", "RegionalRollout", "error_ratio_check"]


class NoHealthyEndpoint(RuntimeError):
    """Every replica that could serve the request failed or is ejected."""


@dataclass(eq=False)
class Endpoint:
    """One replica: ``fn(x) -> output``. ``cost_per_call`` in any currency unit (e.g. the
    replica's hourly price / its calls per hour); ``pool`` is ``primary`` or ``fallback``."""
    name: str
    fn: Callable[[Any], Any]
    pool: str = "primary"
    region: str = ""
    cost_per_call: float = 0.0
    healthy: bool = True
    ejected_until: float = 0.0
    consecutive_failures: int = 0
    consecutive_successes: int = 0

    def __post_init__(self):
        if not callable(self.fn):
            raise TypeError(f"endpoint {self.name!r}: fn must be callable")
        if self.pool not in ("primary", "fallback"):
            raise ValueError(f"endpoint {self.name!r}: pool is primary or fallback")
        if not self.cost_per_call >= 0:
            raise ValueError(f"endpoint {self.name!r}: cost_per_call must be >= 0")

    def available(self, now: float) -> bool:
        return self.healthy and now >= self.ejected_until


class HealthChecker:
    """Active and passive health for a set of endpoints.

    ``probe(endpoint) -> bool`` (default: call ``endpoint.fn(probe_input)`` and treat any
    exception as a failure) runs from :meth:`check` or :meth:`maybe_check` (every
    ``interval_s`` of the clock). Requests report through :meth:`report`: ``eject_after``
    consecutive request errors eject a replica for ``cooldown_s``.
    """

    def __init__(self, endpoints: Sequence[Endpoint], *, probe: Callable[[Endpoint], bool] | None = None,
                 probe_input: Any = None, interval_s: float = 5.0, fail_after: int = 2,
                 recover_after: int = 2, eject_after: int = 3, cooldown_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic):
        if fail_after < 1 or recover_after < 1 or eject_after < 1:
            raise ValueError("fail_after, recover_after and eject_after are >= 1")
        if interval_s <= 0 or cooldown_s < 0:
            raise ValueError("interval_s must be > 0 and cooldown_s >= 0")
        self.endpoints = list(endpoints)
        self.probe = probe or (lambda ep: (ep.fn(probe_input), True)[1])
        self.interval_s, self.fail_after, self.recover_after = interval_s, fail_after, recover_after
        self.eject_after, self.cooldown_s, self.clock = eject_after, cooldown_s, clock
        self.last_check = -float("inf")
        self.events: list = []
        self._lock = threading.Lock()

    def _probe_ok(self, ep: Endpoint) -> bool:
        try:
            return bool(self.probe(ep))
        except Exception:
            return False

    def check(self) -> dict:
        """Probe every endpoint now; returns ``{name: healthy}``."""
        now = self.clock()
        self.last_check = now
        for ep in self.endpoints:
            ok = self._probe_ok(ep)
            with self._lock:
                if ok:
                    ep.consecutive_failures = 0
                    ep.consecutive_successes += 1
                    if not ep.healthy and ep.consecutive_successes >= self.recover_after:
                        ep.healthy = True
                        ep.ejected_until = 0.0
                        self.events.append({"t": now, "endpoint": ep.name, "event": "recovered"})
                else:
                    ep.consecutive_successes = 0
                    ep.consecutive_failures += 1
                    if ep.healthy and ep.consecutive_failures >= self.fail_after:
                        ep.healthy = False
                        self.events.append({"t": now, "endpoint": ep.name, "event": "unhealthy"})
        return {ep.name: ep.healthy for ep in self.endpoints}

    def maybe_check(self) -> bool:
        """Probe if ``interval_s`` has passed since the last probe; True if it probed."""
        if self.clock() - self.last_check >= self.interval_s:
            self.check()
            return True
        return False

    def report(self, ep: Endpoint, ok: bool) -> None:
        """Passive health from a real request."""
        with self._lock:
            if ok:
                ep.consecutive_failures = 0
                return
            ep.consecutive_failures += 1
            if ep.consecutive_failures >= self.eject_after and self.clock() >= ep.ejected_until:
                ep.ejected_until = self.clock() + self.cooldown_s
                self.events.append({"t": self.clock(), "endpoint": ep.name, "event": "ejected",
                                    "until": ep.ejected_until})


class FallbackRouter:
    """Serve from the primary pool, retry, hedge and fall back (see the module docstring).

    ``retries``: further primaries tried after a failed call (each a different replica) before
    the fallback pool. ``hedge_after_s``: if set, a primary call that has not answered after
    that many (real) seconds gets a duplicate on the fallback pool; the first to answer wins and
    the loser's cost is still counted. ``stats()`` has calls and cost per endpoint and pool.
    """

    def __init__(self, primary: Sequence[Endpoint], fallback: Sequence[Endpoint] = (), *,
                 retries: int = 1, hedge_after_s: float | None = None,
                 health: HealthChecker | None = None, hedge_workers: int = 4,
                 clock: Callable[[], float] = time.monotonic):
        if not primary:
            raise ValueError("need at least one primary endpoint")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        if hedge_after_s is not None and (hedge_after_s < 0 or not fallback):
            raise ValueError("hedging needs hedge_after_s >= 0 and a fallback pool")
        for ep in primary:
            ep.pool = "primary"
        for ep in fallback:
            ep.pool = "fallback"
        self.primary, self.fallback = list(primary), list(fallback)
        self.retries, self.hedge_after_s, self.clock = retries, hedge_after_s, clock
        self.health = health or HealthChecker(self.primary + self.fallback, clock=clock)
        self._rr = {"primary": 0, "fallback": 0}
        self._lock = threading.Lock()
        self._pool: cf.ThreadPoolExecutor | None = None
        self._workers = hedge_workers
        self.calls: dict = defaultdict(int)
        self.failures: dict = defaultdict(int)
        self.cost: dict = defaultdict(float)
        self.counts = {"requests": 0, "served_primary": 0, "served_fallback": 0, "retries": 0,
                       "hedges": 0, "hedge_wins": 0, "failed": 0}

    # ------------------------------------------------------------------ selection
    def _candidates(self, pool: str, exclude: set) -> list:
        eps = self.primary if pool == "primary" else self.fallback
        now = self.clock()
        ok = [e for e in eps if e.available(now) and e.name not in exclude]
        if not ok:
            return []
        with self._lock:
            i = self._rr[pool] % len(ok)
            self._rr[pool] += 1
        return ok[i:] + ok[:i]

    def _charge(self, ep: Endpoint) -> None:
        with self._lock:
            self.calls[ep.name] += 1
            self.cost[ep.name] += ep.cost_per_call

    def _invoke(self, ep: Endpoint, x):
        self._charge(ep)
        try:
            out = ep.fn(x)
        except Exception:
            with self._lock:
                self.failures[ep.name] += 1
            self.health.report(ep, False)
            raise
        self.health.report(ep, True)
        return out

    # ------------------------------------------------------------------ serving
    def __call__(self, x):
        self.health.maybe_check()
        with self._lock:
            self.counts["requests"] += 1
        tried: set = set()
        errors = []
        for attempt in range(self.retries + 1):
            cands = self._candidates("primary", tried)
            if not cands:
                break
            ep = cands[0]
            tried.add(ep.name)
            if attempt:
                with self._lock:
                    self.counts["retries"] += 1
            try:
                if self.hedge_after_s is not None:
                    out, pool = self._hedged(ep, x, tried)
                else:
                    out, pool = self._invoke(ep, x), "primary"
            except Exception as exc:
                errors.append(f"{ep.name}: {type(exc).__name__}: {exc}")
                continue
            with self._lock:
                self.counts[f"served_{pool}"] += 1
            return out
        for ep in self._candidates("fallback", tried):
            tried.add(ep.name)
            try:
                out = self._invoke(ep, x)
            except Exception as exc:
                errors.append(f"{ep.name}: {type(exc).__name__}: {exc}")
                continue
            with self._lock:
                self.counts["served_fallback"] += 1
            return out
        with self._lock:
            self.counts["failed"] += 1
        raise NoHealthyEndpoint("no endpoint answered: " + ("; ".join(errors) or
                                                            "every endpoint is ejected or unhealthy"))

    def _hedged(self, ep: Endpoint, x, tried: set):
        with self._lock:
            if self._pool is None:
                self._pool = cf.ThreadPoolExecutor(self._workers, thread_name_prefix="pyperfcore-hedge")
        first = self._pool.submit(self._invoke, ep, x)
        try:
            return first.result(timeout=self.hedge_after_s), "primary"
        except cf.TimeoutError:
            pass
        backups = self._candidates("fallback", tried)
        if not backups:
            return first.result(), "primary"
        hedge_ep = backups[0]
        tried.add(hedge_ep.name)
        with self._lock:
            self.counts["hedges"] += 1
        second = self._pool.submit(self._invoke, hedge_ep, x)
        pending = {first: "primary", second: "fallback"}
        last_exc: BaseException | None = None
        while pending:
            done, _ = cf.wait(list(pending), return_when=cf.FIRST_COMPLETED)
            for fut in done:
                pool = pending.pop(fut)
                if fut.exception() is None:
                    if pool == "fallback":
                        with self._lock:
                            self.counts["hedge_wins"] += 1
                    return fut.result(), pool
                last_exc = fut.exception()
        assert last_exc is not None
        raise last_exc

    # ------------------------------------------------------------------ accounting
    def stats(self) -> dict:
        with self._lock:
            served = self.counts["served_primary"] + self.counts["served_fallback"]
            prim_cost = [e.cost_per_call for e in self.primary]
            base = served * (sum(prim_cost) / len(prim_cost))
            total = sum(self.cost.values())
            by_pool = {"primary": sum(self.cost[e.name] for e in self.primary),
                       "fallback": sum(self.cost[e.name] for e in self.fallback)}
            return {**self.counts, "calls": dict(self.calls), "failures": dict(self.failures),
                    "cost_by_endpoint": dict(self.cost), "cost_by_pool": by_pool,
                    "cost_total": total, "cost_all_primary": base, "extra_cost": total - base,
                    "health_events": list(self.health.events)}

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


# ====================================================================== regions
class RegionalRouter:
    """Per-region serving of versioned endpoints, with failover across regions.

    ``endpoints[region][version] -> callable``; ``serving[region]`` is the version the region's
    alias points at. A request for region ``r`` goes to ``r``'s serving version; if ``r`` is
    down (``set_down``) or its call raises, it goes to the next region of ``failover[r]``
    (default: the other regions in the given order), serving *that* region's version. Stats per
    region: requests, errors, failovers out and in, cross-region cost.
    """

    def __init__(self, endpoints: Mapping[str, Mapping[Any, Callable]], serving: Mapping[str, Any], *,
                 failover: Mapping[str, Sequence[str]] | None = None,
                 cross_region_cost: float = 0.0):
        if not endpoints:
            raise ValueError("need at least one region")
        self.endpoints = {r: dict(v) for r, v in endpoints.items()}
        self.regions = list(self.endpoints)
        self.serving = {}
        for r in self.regions:
            if r not in serving:
                raise ValueError(f"region {r!r} has no serving version")
            self._check(r, serving[r])
            self.serving[r] = serving[r]
        self.failover = {r: list(failover.get(r, ())) if failover else
                         [o for o in self.regions if o != r] for r in self.regions}
        for r, order in self.failover.items():
            unknown = set(order) - set(self.regions)
            if unknown:
                raise ValueError(f"failover for {r!r} names unknown regions {sorted(unknown)}")
        self.cross_region_cost = float(cross_region_cost)
        self.down: set = set()
        self._lock = threading.Lock()
        self.stats = {r: {"requests": 0, "errors": 0, "failover_out": 0, "failover_in": 0,
                          "by_version": defaultdict(int)} for r in self.regions}
        self.extra_cost = 0.0

    def _check(self, region, version) -> None:
        if version not in self.endpoints[region]:
            raise ValueError(f"region {region!r} has no endpoint for version {version!r}")

    def set_serving(self, region: str, version) -> None:
        if region not in self.endpoints:
            raise KeyError(f"unknown region {region!r}")
        self._check(region, version)
        with self._lock:
            self.serving[region] = version

    def set_down(self, region: str, down: bool = True) -> None:
        if region not in self.endpoints:
            raise KeyError(f"unknown region {region!r}")
        (self.down.add if down else self.down.discard)(region)

    def reset_stats(self, region: str) -> None:
        with self._lock:
            self.stats[region] = {"requests": 0, "errors": 0, "failover_out": 0,
                                  "failover_in": 0, "by_version": defaultdict(int)}

    def __call__(self, x, region: str):
        if region not in self.endpoints:
            raise KeyError(f"unknown region {region!r}")
        errors = []
        for k, r in enumerate([region] + self.failover[region]):
            if r in self.down:
                errors.append(f"{r}: down")
                continue
            version = self.serving[r]
            try:
                out = self.endpoints[r][version](x)
            except Exception as exc:
                with self._lock:
                    self.stats[r]["errors"] += 1
                    self.stats[r]["requests"] += 1
                errors.append(f"{r}: {type(exc).__name__}: {exc}")
                continue
            with self._lock:
                self.stats[r]["requests"] += 1
                self.stats[r]["by_version"][version] += 1
                if k:
                    self.stats[region]["failover_out"] += 1
                    self.stats[r]["failover_in"] += 1
                    self.extra_cost += self.cross_region_cost
            return out
        raise NoHealthyEndpoint(f"no region could serve a request from {region!r}: "
                                + "; ".join(errors))


def error_ratio_check(router: RegionalRouter, max_ratio: float, min_requests: int = 50) -> Callable:
    """A region check: the region's error ratio since the rollout reached it (None while it
    has fewer than ``min_requests``: the rollout keeps baking)."""
    def check(region: str):
        st = router.stats[region]
        if st["requests"] < min_requests:
            return None
        ratio = st["errors"] / st["requests"]
        return f"error ratio {ratio:.3f} > {max_ratio} in {region}" if ratio > max_ratio else ""
    return check


@dataclass
class _RegionStep:
    region: str
    previous: Any
    started: float | None = None
    state: str = "pending"  # pending -> baking -> done | failed | rolled_back
    reason: str | None = None


class RegionalRollout:
    """Moves ``alias`` to ``version`` one region at a time.

    Call :meth:`tick` periodically. The current region is switched, its stats reset, and after
    ``bake_s`` (on ``clock``) ``check(region)`` decides: ``None`` = not enough data yet (keep
    baking), ``""`` = healthy (next region), any other string = the reason to roll back every
    region changed so far to its previous version. States: ``running`` -> ``done`` |
    ``rolled_back``. The alias in region ``r`` is named ``f"{alias}@{r}"`` in the registry.
    """

    def __init__(self, router: RegionalRouter, version, *, order: Sequence[str] | None = None,
                 check: Callable[[str], str | None] | None = None, bake_s: float = 300.0,
                 alias: str = "production", model: str | None = None, registry=None, audit=None,
                 actor: str = "pyperfcore-rollout", clock: Callable[[], float] = time.monotonic):
        order = list(order or router.regions)
        unknown = set(order) - set(router.regions)
        if unknown or len(set(order)) != len(order) or not order:
            raise ValueError(f"order must list distinct known regions, got {order}")
        for r in order:
            router._check(r, version)
        if bake_s < 0:
            raise ValueError("bake_s must be >= 0")
        self.router, self.version, self.bake_s, self.clock = router, version, bake_s, clock
        self.check = check or error_ratio_check(router, 0.01)
        self.alias, self.model, self.registry, self.audit, self.actor = alias, model, registry, audit, actor
        self.steps = [_RegionStep(r, router.serving[r]) for r in order]
        self.index = 0
        self.state = "running"
        self.history: list = []
        self._record("rollout_started", regions=order)
        self._enter()

    def _record(self, kind: str, **fields) -> None:
        ev = {"kind": kind, "t": self.clock(), "ts": time.time(), "model": self.model,
              "version": self.version, "alias": self.alias, "actor": self.actor,
              "subject": f"model:{self.model}:{self.version}", **fields}
        self.history.append(ev)
        if self.audit is not None:
            self.audit.append(ev)

    def _move_alias(self, region: str, version, reason: str) -> None:
        self.router.set_serving(region, version)
        if self.registry is not None and self.model is not None:
            self.registry.set_alias(self.model, f"{self.alias}@{region}", version, by=self.actor,
                                    reason=reason)

    def _enter(self) -> None:
        st = self.steps[self.index]
        self._move_alias(st.region, self.version, f"rollout to {st.region}")
        self.router.reset_stats(st.region)
        st.started, st.state = self.clock(), "baking"
        self._record("region_switched", region=st.region, previous=st.previous)

    def tick(self) -> str:
        if self.state != "running":
            return self.state
        st = self.steps[self.index]
        if self.clock() - st.started < self.bake_s:
            return self.state
        verdict = self.check(st.region)
        if verdict is None:
            return self.state
        if verdict:
            st.state, st.reason = "failed", verdict
            self.rollback(verdict)
            return self.state
        st.state = "done"
        self._record("region_healthy", region=st.region)
        if self.index + 1 < len(self.steps):
            self.index += 1
            self._enter()
        else:
            self.state = "done"
            self._record("rollout_done")
        return self.state

    def rollback(self, reason: str) -> None:
        """Every region switched so far goes back to its previous version."""
        if self.state != "running":
            return
        for st in self.steps[: self.index + 1]:
            self._move_alias(st.region, st.previous, f"rollout rolled back: {reason}")
            if st.state != "failed":
                st.state = "rolled_back"
        self.state = "rolled_back"
        self._record("rollout_rolled_back", reason=reason,
                     regions=[s.region for s in self.steps[: self.index + 1]])

    def report(self) -> dict:
        return {"state": self.state, "version": self.version,
                "steps": [dict(s.__dict__) for s in self.steps]}
