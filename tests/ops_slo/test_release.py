"""Router (sticky A/B, canary, shadow, blue-green), canary analysis and rollback, K8s specs."""
from __future__ import annotations

import numpy as np
import pytest

from pyperfcore.ops import release as R
from pyperfcore.ops.audit import AuditLog
from pyperfcore.ops.slo import SLO, SLOTracker


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def make_models(clock, cand_latency=0.010, cand_wrong=0.0, cand_raises=0.0, seed=0):
    rng = np.random.default_rng(seed)

    def stable(x):
        clock.t += 0.010 + rng.exponential(0.002)
        return x * 2

    def candidate(x):
        clock.t += cand_latency + rng.exponential(0.002)
        if rng.random() < cand_raises:
            raise RuntimeError("boom")
        return x * 2 + (1 if rng.random() < cand_wrong else 0)
    return stable, candidate


class FakeRegistry:
    def __init__(self):
        self.calls = []

    def set_alias(self, name, alias, version, by=None, reason=None):
        self.calls.append(("set_alias", name, alias, version, reason))

    def remove_alias(self, name, alias, by=None, reason=None):
        self.calls.append(("remove_alias", name, alias, reason))

    def promote(self, name, version, alias="production", by=None, reason=None):
        self.calls.append(("promote", name, version, alias))


def test_sticky_assignment_by_key_hash():
    r = R.Router(lambda x: 0, lambda x: 1, mode="ab", weight=20)
    keys = [f"user-{i}" for i in range(20000)]
    arms = [r.assign(k) for k in keys]
    frac = arms.count("candidate") / len(keys)
    assert abs(frac - 0.20) < 0.015
    assert arms == [r.assign(k) for k in keys]  # sticky
    r.set_weight(50)  # growing the weight keeps everyone already on the candidate there
    again = [r.assign(k) for k in keys]
    assert all(b == "candidate" for a, b in zip(arms, again) if a == "candidate")
    assert R.hash_bucket("user-1") == R.hash_bucket("user-1")
    assert R.hash_bucket("user-1", "s1") != R.hash_bucket("user-1", "s2") or True
    assert 0 <= R.hash_bucket(12345) < R.BUCKETS
    with pytest.raises(ValueError, match="percentage"):
        r.set_weight(150)
    with pytest.raises(ValueError, match="candidate"):
        R.Router(lambda x: 0, mode="canary")


def test_shadow_mode_never_changes_what_users_see():
    clock = FakeClock()
    stable, cand = make_models(clock, cand_wrong=0.3, cand_raises=0.1)
    r = R.Router(stable, cand, mode="shadow", clock=lambda: 0.0)
    outs = [r(np.int64(i), key=i) for i in range(400)]
    r.drain()
    assert outs == [2 * i for i in range(400)]
    s = r.stats["candidate"]
    assert s.requests + r.shadow_dropped == 400
    assert 0 < s.errors < s.requests
    agree = np.asarray(s.agree)
    assert 0.5 < agree.mean() < 0.9  # about 0.7 * (raises excluded as 0 agreement)
    r.close()


def test_blue_green_switch_and_candidate_errors_fall_back():
    r = R.Router(lambda x: "blue", lambda x: "green")
    assert r("x") == "blue"
    r.switch()
    assert r("x") == "green"
    r.switch()
    assert r("x") == "blue"

    def bad(x):
        raise ValueError("nope")
    r2 = R.Router(lambda x: "ok", bad, mode="canary", weight=100)
    assert r2("x") == "ok"
    assert r2.stats["candidate"].errors == 1 and r2.stats["stable"].requests == 1


def _drive(ctl, router, n, start=0):
    for i in range(start, start + n):
        router(np.int64(i), key=f"k{i}")
        if i % 50 == 0:
            if ctl.tick() != "running":
                return i
    return None


def test_worse_candidate_is_rolled_back_and_recorded(tmp_path):
    clock = FakeClock()
    stable, cand = make_models(clock, cand_latency=0.030)
    router = R.Router(stable, cand, clock=clock)
    audit = AuditLog(str(tmp_path / "audit.db"))
    reg = FakeRegistry()
    ctl = R.CanaryController(router, audit=audit, registry=reg, model="clf",
                             candidate_version=7, min_requests=100)
    _drive(ctl, router, 20000)
    assert ctl.state == "rolled_back"
    assert router.mode == "off" and router.assign("anything") == "stable"
    assert "latency" in ctl.steps[0].reason
    kinds = [r["record"]["kind"] if "record" in r else r.get("kind") for r in audit.records()]
    assert "rollback" in str(kinds)
    assert reg.calls[0][:4] == ("set_alias", "clf", "canary", 7)
    assert reg.calls[-1][0] == "remove_alias" and "rolled back" in reg.calls[-1][3]


def test_equal_candidate_is_promoted_through_every_step():
    clock = FakeClock()
    stable, cand = make_models(clock, seed=1)
    router = R.Router(stable, cand, clock=clock)
    reg = FakeRegistry()
    ctl = R.CanaryController(router, registry=reg, model="clf", candidate_version=3,
                             min_requests=100, steps=(10, 50, 100))
    _drive(ctl, router, 50000)
    assert ctl.state == "promoted", ctl.report()
    assert [s.verdict for s in ctl.steps] == ["pass"] * 3
    assert reg.calls[-1] == ("promote", "clf", 3, "production")
    assert router("x" if False else np.int64(2)) == 4


def test_triggers_roll_back_before_the_analysis():
    clock = FakeClock()
    stable, cand = make_models(clock, cand_raises=0.5)
    router = R.Router(stable, cand, clock=clock)
    ctl = R.CanaryController(router, min_requests=10_000,
                             triggers=[R.error_rate_trigger(0.05, min_requests=20)])
    _drive(ctl, router, 20000)
    assert ctl.state == "rolled_back" and "error ratio" in ctl.steps[0].reason
    # SLO burn trigger from a tracker fed by the candidate's traffic
    tr = SLOTracker(SLO("cand", "availability", 0.999), resolution_s=1, clock=lambda: 1000.0)
    tr.record_errors(50, 100, t=1000)
    r2 = R.Router(lambda x: x, lambda x: x)
    ctl2 = R.CanaryController(r2, triggers=[R.slo_trigger(tr)])
    assert ctl2.tick() == "rolled_back" and "burning" in ctl2.steps[0].reason
    ctl3 = R.CanaryController(R.Router(lambda x: x, lambda x: x),
                              triggers=[R.drift_trigger(lambda: 0.4, 0.2)])
    assert ctl3.tick() == "rolled_back"
    with pytest.raises(ValueError, match="steps"):
        R.CanaryController(r2, steps=(50, 10))


def test_kubernetes_specs():
    at = R.argo_analysis_template("clf-analysis", "clf", max_error_ratio=0.01, p99_seconds=0.25)
    assert at["kind"] == "AnalysisTemplate" and at["apiVersion"] == "argoproj.io/v1alpha1"
    names = [m["name"] for m in at["spec"]["metrics"]]
    assert names == ["error-rate", "latency-p99"]
    assert "result[0] <= 0.25" in at["spec"]["metrics"][1]["successCondition"]
    ro = R.argo_rollout("clf", "registry/clf:7", analysis_template="clf-analysis")
    steps = ro["spec"]["strategy"]["canary"]["steps"]
    assert [s["setWeight"] for s in steps if "setWeight" in s] == [5, 25, 50, 100]
    fl = R.flagger_canary("clf", steps=(5, 25, 50, 100))
    assert fl["spec"]["analysis"]["stepWeights"] == [5, 25, 50]
    assert fl["kind"] == "Canary" and fl["apiVersion"] == "flagger.app/v1beta1"


def test_canary_measures_output_agreement_per_interval():
    # same latency, but 30% of the candidate's answers differ: only agreement can catch it
    clock = FakeClock()
    stable, cand = make_models(clock, cand_wrong=0.3, seed=2)
    router = R.Router(stable, cand, clock=clock, compare=1.0, compare_sync=True)
    ctl = R.CanaryController(router, min_requests=100)
    _drive(ctl, router, 20000)
    assert ctl.state == "rolled_back", ctl.report()
    assert "agreement" in ctl.steps[0].reason
    analysis = [h for h in ctl.history if h["kind"] == "canary_analysis"][-1]
    agree = np.asarray(analysis["agreement_intervals"])
    assert agree.size >= 5 and 0.55 < agree.mean() < 0.85  # per interval of 20 requests
    # every candidate-served request of the (last) step was compared (compare=1.0)
    assert len(router.stats["candidate"].agree) == router.stats["candidate"].requests
    assert [h["served"] for h in ctl.history] == sorted(h["served"] for h in ctl.history)

    # an equal candidate passes with agreement judged at every step; compare=0.5 samples keys
    clock = FakeClock()
    stable, cand = make_models(clock, seed=3)
    router = R.Router(stable, cand, clock=clock, compare=0.5, compare_sync=True)
    ctl = R.CanaryController(router, min_requests=100, steps=(10, 50, 100))
    _drive(ctl, router, 60000)
    assert ctl.state == "promoted", ctl.report()
    steps = [h for h in ctl.history if h["kind"] == "canary_analysis"]
    assert len(steps) == 3 and all(len(h["agreement_intervals"]) >= 2 for h in steps[:2])
    assert all(v == 1.0 for h in steps for v in h["agreement_intervals"])
    names = {m["name"] for m in steps[0]["metrics"]}
    assert "agreement" in names
    with pytest.raises(ValueError, match="fraction"):
        R.Router(stable, cand, compare=1.5)


def test_background_comparison_leaves_the_user_answer_alone():
    seen = []

    def stable(x):
        seen.append(x)
        return x

    r = R.Router(stable, lambda x: x + (1 if x % 4 == 0 else 0), mode="canary", weight=100,
                 compare=1.0)
    outs = [r(i, key=i) for i in range(200)]
    r.drain()
    assert outs == [i + (1 if i % 4 == 0 else 0) for i in range(200)]  # the candidate answered
    agree = np.asarray(r.stats["candidate"].agree)
    assert agree.size + r.shadow_dropped == 200 and agree.mean() == pytest.approx(0.75, abs=0.01)
    # a reset (new canary step) discards comparisons still in flight for the old step
    s = r.stats["candidate"]
    old = s.epoch
    s.reset()
    assert not s.add_agreement(1.0, old) and s.add_agreement(1.0, s.epoch)
    r.close()
