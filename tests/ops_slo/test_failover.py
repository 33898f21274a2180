"""Fallback routing (health checks, retries, hedging, extra cost) and region-by-region rollout
with cross-region failover, on fake endpoints and injected clocks."""
from __future__ import annotations

import threading

import pytest

from pyperfcore.ops import failover as F
from pyperfcore.ops.audit import AuditLog


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Replica:
    """A fake replica that can disappear (``gone``) and come back."""

    def __init__(self, name, scale=2):
        self.name, self.scale, self.gone, self.calls = name, scale, False, 0

    def __call__(self, x):
        self.calls += 1
        if self.gone:
            raise ConnectionError(f"{self.name} preempted")
        return x * self.scale


def _router(clock, n_primary=3, n_fallback=1, **kw):
    reps = [Replica(f"spot-{i}") for i in range(n_primary)]
    fbs = [Replica(f"ondemand-{i}") for i in range(n_fallback)]
    prim = [F.Endpoint(r.name, r, cost_per_call=1.0) for r in reps]
    fb = [F.Endpoint(r.name, r, cost_per_call=3.0) for r in fbs]
    health = F.HealthChecker(prim + fb, probe_input=1, interval_s=10, fail_after=2,
                             recover_after=2, eject_after=2, cooldown_s=60, clock=clock)
    return F.FallbackRouter(prim, fb, health=health, clock=clock, **kw), reps, fbs


def test_all_healthy_costs_nothing_extra_and_round_robins():
    clock = Clock()
    r, reps, fbs = _router(clock)
    assert [r(i) for i in range(30)] == [2 * i for i in range(30)]
    st = r.stats()
    # 10 requests each, plus one health probe at t=0 (probes are not billed as requests)
    assert [x.calls for x in reps] == [11, 11, 11]
    assert st["served_primary"] == 30 and st["served_fallback"] == 0
    assert st["cost_total"] == 30.0 and st["extra_cost"] == 0.0


def test_preempted_replica_is_retried_ejected_and_the_extra_cost_counted():
    clock = Clock()
    r, reps, fbs = _router(clock, retries=1)
    r(0)  # health probe at t=0, all healthy
    reps[0].gone = True
    out = [r(i) for i in range(1, 31)]
    assert out == [2 * i for i in range(1, 31)]  # no user saw the failure
    st = r.stats()
    # spot-0 failed twice in a row (retried each time) and was then ejected for 60 s
    assert st["failures"] == {"spot-0": 2}
    assert st["retries"] == 2 and st["served_fallback"] == 0
    assert any(e["event"] == "ejected" and e["endpoint"] == "spot-0" for e in st["health_events"])
    assert st["extra_cost"] == pytest.approx(2.0)  # the two wasted calls
    # every primary gone: the fallback pool serves, at 3x the price
    for rep in reps:
        rep.gone = True
    clock.t = 100.0  # spot-0's cool-down is over, but the probe round at t=100 marks it unhealthy
    out = [r(i) for i in range(5)]
    assert out == [2 * i for i in range(5)]
    st2 = r.stats()
    assert st2["served_fallback"] == 5
    assert st2["cost_by_pool"]["fallback"] == pytest.approx(5 * 3.0)
    # second probe round: primaries marked unhealthy, no more wasted calls on them
    clock.t = 110.0
    before = dict(st2["calls"])
    for i in range(5):
        r(i)
    st3 = r.stats()
    assert all(st3["calls"].get(f"spot-{i}", 0) == before.get(f"spot-{i}", 0) for i in range(3))
    assert {e["endpoint"] for e in st3["health_events"] if e["event"] == "unhealthy"} == \
        {"spot-0", "spot-1", "spot-2"}
    # capacity comes back: two good probe rounds readmit them
    for rep in reps:
        rep.gone = False
    clock.t = 120.0
    r(1)
    clock.t = 130.0
    r(1)
    assert r.stats()["served_primary"] >= st3["served_primary"] + 1
    assert all(ep.healthy for ep in r.primary)
    for f in fbs:
        f.gone = True
    for rep in reps:
        rep.gone = True
    with pytest.raises(F.NoHealthyEndpoint, match="preempted"):
        r(3)
    assert r.stats()["failed"] == 1


def test_hedged_request_goes_to_the_fallback_when_the_primary_hangs():
    clock = Clock()
    release = threading.Event()
    started = threading.Event()

    def slow(x):
        started.set()
        release.wait(10)
        return ("slow", x)

    prim = [F.Endpoint("spot", slow, cost_per_call=1.0)]
    fb = [F.Endpoint("ondemand", lambda x: ("fast", x), cost_per_call=2.0)]
    health = F.HealthChecker(prim + fb, probe=lambda ep: True, clock=clock)
    r = F.FallbackRouter(prim, fb, hedge_after_s=0.5, health=health, clock=clock)
    assert r(5) == ("fast", 5)
    assert started.is_set()
    st = r.stats()
    assert st["hedges"] == 1 and st["hedge_wins"] == 1 and st["served_fallback"] == 1
    assert st["cost_total"] == 3.0 and st["extra_cost"] == 2.0  # both calls paid for
    release.set()
    assert r(6) == ("slow", 6)  # a primary that answers in time is not hedged
    assert r.stats()["hedges"] == 1
    r.close()
    with pytest.raises(ValueError, match="hedging"):
        F.FallbackRouter(prim, [], hedge_after_s=0.1)


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError, match="primary"):
        F.FallbackRouter([])
    with pytest.raises(TypeError, match="callable"):
        F.Endpoint("x", 3)
    with pytest.raises(ValueError, match="pool"):
        F.Endpoint("x", abs, pool="spare")
    with pytest.raises(ValueError):
        F.HealthChecker([], fail_after=0)


class FakeRegistry:
    def __init__(self):
        self.calls = []

    def set_alias(self, name, alias, version, by=None, reason=None):
        self.calls.append((name, alias, version))


def _regions(bad_in=None):
    def make(region, version):
        def fn(x):
            if version == 2 and region == bad_in:
                raise RuntimeError(f"v2 broken in {region}")
            return (region, version, x)
        return fn
    regions = ("us-east", "eu-west", "ap-south")
    return {r: {v: make(r, v) for v in (1, 2)} for r in regions}


def _drive(rr, clock, rollout, seconds, per_s=20):
    for _ in range(seconds):
        clock.t += 1
        for i in range(per_s):
            for region in rr.regions:
                try:
                    rr(i, region)
                except F.NoHealthyEndpoint:
                    pass
        if rollout.tick() != "running":
            return


def test_region_by_region_rollout_with_registry_and_audit(tmp_path):
    clock = Clock()
    rr = F.RegionalRouter(_regions(), {r: 1 for r in ("us-east", "eu-west", "ap-south")})
    reg = FakeRegistry()
    audit = AuditLog(str(tmp_path / "a.db"))
    ro = F.RegionalRollout(rr, 2, order=["eu-west", "us-east", "ap-south"], bake_s=60,
                           model="clf", registry=reg, audit=audit, clock=clock)
    assert rr.serving == {"us-east": 1, "eu-west": 2, "ap-south": 1}  # one region at a time
    _drive(rr, clock, ro, 30)
    assert ro.state == "running" and rr.serving["us-east"] == 1  # still baking
    _drive(rr, clock, ro, 400)
    assert ro.state == "done" and set(rr.serving.values()) == {2}
    assert reg.calls == [("clf", "production@eu-west", 2), ("clf", "production@us-east", 2),
                         ("clf", "production@ap-south", 2)]
    kinds = [e["kind"] for e in ro.history]
    assert kinds == ["rollout_started"] + ["region_switched", "region_healthy"] * 3 + ["rollout_done"]
    assert audit.verify()
    audit.close()


def test_failed_region_rolls_back_every_changed_region_and_fails_over():
    clock = Clock()
    rr = F.RegionalRouter(_regions(bad_in="us-east"), {r: 1 for r in ("us-east", "eu-west", "ap-south")},
                          cross_region_cost=0.5)
    reg = FakeRegistry()
    ro = F.RegionalRollout(rr, 2, order=["eu-west", "us-east", "ap-south"], bake_s=60,
                           check=F.error_ratio_check(rr, 0.01, min_requests=50), model="clf",
                           registry=reg, clock=clock)
    _drive(rr, clock, ro, 500)
    assert ro.state == "rolled_back"
    assert [s.state for s in ro.steps] == ["rolled_back", "failed", "pending"]
    assert "us-east" in ro.steps[1].reason
    assert rr.serving == {"us-east": 1, "eu-west": 1, "ap-south": 1}
    assert reg.calls[-2:] == [("clf", "production@eu-west", 1), ("clf", "production@us-east", 1)]
    # while us-east ran the broken v2, its requests failed over to eu-west, at a cost
    assert rr.stats["us-east"]["failover_out"] > 0 and rr.extra_cost > 0
    assert rr.extra_cost == pytest.approx(0.5 * rr.stats["us-east"]["failover_out"])
    # a region that is down fails over along its preference list
    rr.set_down("eu-west")
    assert rr(7, "eu-west") == ("us-east", 1, 7)
    rr.set_down("us-east"), rr.set_down("ap-south")
    with pytest.raises(F.NoHealthyEndpoint, match="down"):
        rr(1, "eu-west")
    with pytest.raises(ValueError, match="version"):
        F.RegionalRollout(rr, 3)
    with pytest.raises(ValueError, match="order"):
        F.RegionalRollout(rr, 2, order=["mars"])
