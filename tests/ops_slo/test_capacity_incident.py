"""Queueing simulation against M/D/1 theory, recommendations, diagnose, gate, thresholds, CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pyperfcore.ops import capacity as C
from pyperfcore.ops import gate as G
from pyperfcore.ops import incident as I


def test_simulation_matches_md1_theory():
    rng = np.random.default_rng(0)
    D, lam = 0.010, 70.0  # rho = 0.7
    arr = C.poisson_arrivals(lam, 1200, rng)
    res = C.simulate(arr, lambda b: D, max_batch_size=1, max_delay_s=0, replicas=1)
    rho = lam * D
    want = D + rho * D / (2 * (1 - rho))  # Pollaczek-Khinchine, deterministic service
    assert res.latency.mean() == pytest.approx(want, rel=0.04)
    assert res.busy_fraction == pytest.approx(rho, rel=0.03)


def test_batching_rules_and_more_replicas_help():
    # three requests at t=0, batch 4, delay 5 ms: sent at 5 ms as one batch
    r = C.simulate([0, 0, 0], lambda b: 0.001 * b, max_batch_size=4, max_delay_s=0.005)
    assert r.batch_sizes.tolist() == [3] and np.allclose(r.latency, 0.008)
    # a full batch leaves at once
    r = C.simulate([0, 0, 0, 0], lambda b: 0.001, max_batch_size=4, max_delay_s=1.0)
    assert np.allclose(r.latency, 0.001)
    rng = np.random.default_rng(1)
    arr = C.poisson_arrivals(300, 20, rng)
    f = C.batch_latency_curve({1: 0.004, 8: 0.008, 32: 0.02})
    one = C.simulate(arr, f, max_batch_size=8, max_delay_s=0.002, replicas=1)
    two = C.simulate(arr, f, max_batch_size=8, max_delay_s=0.002, replicas=2)
    assert two.quantile(0.99) < one.quantile(0.99)
    with pytest.raises(ValueError, match="sorted"):
        C.simulate([1, 0], f, max_batch_size=1, max_delay_s=0)


def test_recommend_meets_the_slo_with_few_replicas_and_hpa():
    curve = {1: 0.004, 8: 0.008, 32: 0.020}
    plan = C.recommend(curve, 1500, slo_seconds=0.05, hourly_price=1.0, duration_s=10,
                       batch_sizes=(1, 8, 32), delays_ms=(0, 2))
    assert plan.meets_slo and plan.p99_ms <= 50
    # fewer replicas cannot meet it (checked by simulation of every config at r - 1)
    if plan.replicas > 1:
        fewer = [c for c in plan.considered if c["replicas"] == plan.replicas - 1]
        assert fewer and min(c["p_ms"] for c in fewer) > 50
    assert plan.cost_per_1k == pytest.approx(plan.replicas / 3600 / 1500 * 1000)
    hpa = C.hpa_spec("clf", plan)
    assert hpa["kind"] == "HorizontalPodAutoscaler" and hpa["spec"]["minReplicas"] == plan.replicas
    cmp = C.compare_hardware({"cpu": ({1: 0.004, 8: 0.03}, 0.2), "gpu": (curve, 3.0)}, 200,
                             slo_seconds=0.05, duration_s=5, batch_sizes=(1, 8), delays_ms=(0, 2))
    assert cmp["choice"] in ("cpu", "gpu")
    ka = C.keep_alive([1, 2, 3, 100], cold_start_s=5, hourly_price=1, coverage=0.75)
    assert 3 <= ka["keep_alive_s"] <= 100


def test_diagnose_ranks_the_injected_cause():
    data = I.diagnose({"drift": {"age": 0.45, "income": 0.3, "zip": 0.02},
                       "latency_p99_s": 0.1, "baseline_latency_p99_s": 0.095,
                       "accuracy": 0.90, "baseline_accuracy": 0.93})
    assert data[0].cause == "data" and "age" in data[0].evidence[0]
    infra = I.diagnose({"latency_p99_s": 0.9, "baseline_latency_p99_s": 0.1, "queue_depth": 400,
                        "baseline_queue_depth": 10, "utilization": 0.97})
    assert infra[0].cause == "infrastructure" and len(infra[0].evidence) == 3
    model = I.diagnose({"accuracy": 0.8, "baseline_accuracy": 0.9, "canary_failures": 3,
                        "drift": {"age": 0.01}})
    assert model[0].cause == "model" and "stable" in model[0].evidence[-1]
    assert all(h.score == 0 for h in I.diagnose({}))
    text = I.format_diagnosis(data)
    assert text.startswith("1. data")


def test_postmortem_runbooks_and_retraining():
    events = [{"ts": 100.0, "record": {"kind": "rollback", "reason": "latency"}},
              {"ts": 50.0, "kind": "canary_started"}]
    md = I.postmortem("canary rolled back", events=events, metrics={"p99_ms": 420})
    assert md.index("canary_started") < md.index("rollback") and "p99_ms" in md
    assert "burn-rate" in I.runbook("latency")
    with pytest.raises(KeyError):
        I.runbook("gremlins")
    pol = I.RetrainingPolicy(max_drift=0.2, min_accuracy=0.9, max_age_s=86400)
    got = []
    pol.subscribe(got.append)
    ev = pol.check(model="clf", drift={"a": 0.5}, accuracy=0.85, trained_at=0, now=2 * 86400)
    assert {e["reason"] for e in ev} == {"drift", "performance", "age"} and len(got) == 3
    assert pol.check(model="clf", drift={"a": 0.5}, now=1) == []  # once per reason


def test_gate_passes_equal_and_fails_worse_models():
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=4) for _ in range(300)]
    w = rng.normal(size=4)
    base = lambda x: int(x @ w > 0)  # noqa: E731
    same = lambda x: int(x @ w > 0)  # noqa: E731
    worse = lambda x: int(x @ w > 0.8)  # noqa: E731
    rep = G.gate(same, base, xs, candidate_size_bytes=10, max_size_bytes=100,
                 max_p99_ratio=None)
    assert rep.ok, rep.text()
    rep = G.gate(worse, base, xs, candidate_size_bytes=1000, max_size_bytes=100,
                 max_p99_ratio=None)
    assert not rep.ok
    failed = {c[0] for c in rep.checks if not c[1]}
    assert {"model size", "agreement"} <= failed
    with pytest.raises(ValueError):
        G.gate(same, base, [])
    with pytest.raises(RuntimeError, match="raised"):
        G.gate(lambda x: 1 / 0, base, xs)


def test_gate_latency_under_standard_load():
    # Both models driven through the batcher at a steady rate: a candidate that takes 10 ms per
    # request where the baseline takes nothing fails the p99-under-load check; an equal one
    # passes; one that raises under load is reported as failing requests, not a crash.
    import time

    rng = np.random.default_rng(1)
    xs = [rng.normal(size=4) for _ in range(50)]
    fast = lambda x: float(x.sum())  # noqa: E731

    def slow(x):
        time.sleep(0.010)
        return float(x.sum())

    # Generous limit for equal models: p99 of a short run on a shared machine is noisy.
    rep = G.gate(fast, fast, xs, max_p99_ratio=None, load_rps=200, load_duration_s=0.5,
                 max_load_p99_ratio=4.0)
    names = {c[0]: c for c in rep.checks}
    assert names["errors under load"][1] and names["p99 under load"][1], rep.text()
    rep = G.gate(slow, fast, xs, max_p99_ratio=None, load_rps=200, load_duration_s=0.5,
                 max_load_p99_ratio=1.5)
    names = {c[0]: c for c in rep.checks}
    assert not rep.ok and not names["p99 under load"][1], rep.text()
    assert names["agreement"][1]  # same answers: only the latency under load fails

    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        if calls["n"] > len(xs):  # fine on the one-at-a-time replay, fails under load
            raise RuntimeError("overloaded")
        return float(x.sum())

    rep = G.gate(flaky, fast, xs, max_p99_ratio=None, load_rps=200, load_duration_s=0.3)
    names = {c[0]: c for c in rep.checks}
    assert not names["errors under load"][1], rep.text()


def test_decision_threshold_matches_brute_force():
    rng = np.random.default_rng(4)
    y = rng.random(500) < 0.2
    s = np.round(np.where(y, rng.normal(0.7, 0.2, 500), rng.normal(0.4, 0.2, 500)), 2)
    res = G.decision_threshold(s, y, cost_fp=1, cost_fn=5, min_recall=0.8)
    best = None
    for t in np.r_[np.inf, np.unique(s)]:
        pred = s >= t
        tp, fp = (pred & y).sum(), (pred & ~y).sum()
        fn = y.sum() - tp
        if tp / y.sum() < 0.8:
            continue
        c = fp + 5 * fn
        if best is None or c < best:
            best = c
    assert res["feasible"] and res["cost"] == best and res["recall"] >= 0.8
    assert not G.decision_threshold(s, y, cost_fp=1, cost_fn=1, min_precision=1.01)["feasible"]
    with pytest.raises(ValueError):
        G.decision_threshold([0.1, np.nan], [0, 1], cost_fp=1, cost_fn=1)


def test_cli_gate_and_diagnose(tmp_path, capsys):
    import argparse
    from pyperfcore import ops_cli

    (tmp_path / "models.py").write_text(
        "def base(x):\n    return int(sum(x) > 0)\n"
        "def bad(x):\n    return 1\n")
    with open(tmp_path / "log.jsonl", "w") as f:
        rng = np.random.default_rng(0)
        for _ in range(200):
            f.write(json.dumps({"inputs": rng.normal(size=3).tolist()}) + "\n")
    parser = argparse.ArgumentParser()
    ops_cli.register(parser.add_subparsers(dest="cmd"))
    m = str(tmp_path / "models.py")
    a = parser.parse_args(["gate", "--candidate", f"{m}:base", "--baseline", f"{m}:base",
                           "--replay", str(tmp_path / "log.jsonl"), "--max-p99-ratio", "100"])
    assert a.func(a) == 0
    a = parser.parse_args(["gate", "--candidate", f"{m}:bad", "--baseline", f"{m}:base",
                           "--replay", str(tmp_path), "--max-p99-ratio", "100"])
    assert a.func(a) == 1
    assert "FAIL" in capsys.readouterr().out
    (tmp_path / "sig.json").write_text(json.dumps({"drift": {"age": 0.5}}))
    a = parser.parse_args(["diagnose", str(tmp_path / "sig.json")])
    assert a.func(a) == 0 and "1. data" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{nope")
    a = parser.parse_args(["diagnose", str(tmp_path / "bad.json")])
    assert a.func(a) == 2
    with pytest.raises(ValueError, match="module:attribute"):
        ops_cli.load_callable("nocolon")
    (tmp_path / "broken.jsonl").write_text("{]\n")
    with pytest.raises(ValueError, match="not JSON"):
        ops_cli.read_replay(tmp_path / "broken.jsonl")


def test_bench_model_drives_the_real_batcher():
    from pyperfcore.ops.bench import SCHEMA, bench_model

    def model(xs):
        return [x * 2 for x in xs]
    r = bench_model(model, [1, 2, 3], profiles=("steady", "spike"), rps=200, duration_s=0.5,
                    hourly_price=1.0)
    assert r["schema"] == SCHEMA and set(r["profiles"]) == {"steady", "spike"}
    for p in r["profiles"].values():
        assert p["errors"] == 0 and p["unfinished"] == 0 and p["requests"] > 0
        assert 0 < p["p50_ms"] <= p["p90_ms"] <= p["p99_ms"]
        assert p["mean_batch_size"] >= 1 and p["cost_per_1k"] > 0
    with pytest.raises(ValueError):
        bench_model(model, [])


def test_simulation_agrees_with_measured_bench_model_runs():
    """The queueing simulation, fed the measured batch-latency curve and the submit times of a
    real bench-model run, predicts that run's median latency and mean batch size.

    Tolerance: the simulation leaves out the batcher's per-batch dispatch overhead (worker
    wake-up, resolving futures: a few tenths of a millisecond here) and the host's scheduling
    noise (2 shared cores, often at load average 10 while this suite was written). Both only add
    latency, so the measured p50 must lie in [0.9, 1.35] x the simulated one plus 1 ms, and
    the mean batch sizes agree within 25%. A wrong batching rule is off by far more (ignoring
    the delay or the batch limit changes these figures by 2x or diverges at this load)."""
    import time

    from pyperfcore.ops.bench import bench_model

    def model(xs):  # 2 ms fixed + 0.25 ms per item, like a small model on an accelerator
        time.sleep(0.002 + 0.00025 * len(xs))
        return xs

    def attempt():
        curve = C.measure_batch_latency(model, lambda n: [0] * n, sizes=(1, 2, 4, 8, 16),
                                        repeats=7, stat="min")
        assert curve[16] > curve[1]
        f = C.batch_latency_curve(curve)
        r = bench_model(model, [0], profiles=("steady", "spike"), rps=800, duration_s=1.5,
                        max_batch_size=16, max_delay_ms=2.0, samples=True)
        bad = []
        for prof, p in r["profiles"].items():
            assert p["errors"] == 0 and p["unfinished"] == 0
            arr = np.sort(np.asarray(p["submitted_s"]))
            sim = C.simulate(arr, f, max_batch_size=16, max_delay_s=0.002).summary()
            # the same arrivals without batching would not keep up: the check can fail
            nob = C.simulate(arr, f, max_batch_size=1, max_delay_s=0.0).summary()
            assert nob["p50_ms"] > 3 * p["p50_ms"]
            if not (0.9 * sim["p50_ms"] <= p["p50_ms"] <= 1.35 * sim["p50_ms"] + 1.0) or \
                    p["mean_batch_size"] != pytest.approx(sim["mean_batch"], rel=0.25):
                bad.append((prof, {k: p[k] for k in ("p50_ms", "p90_ms", "mean_batch_size")},
                            sim))
        return bad

    # A timing comparison on a shared 2-core host: a burst of other work during the curve
    # measurement or the run skews one attempt; a wrong model of the batcher fails all three.
    fails = []
    for _ in range(3):
        bad = attempt()
        if not bad:
            return
        fails.append(bad)
    pytest.fail(f"simulation and measured runs disagree in 3 attempts: {fails}")
