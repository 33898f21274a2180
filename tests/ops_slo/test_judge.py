"""The Kayenta-style judge: Mann-Whitney against scipy, Hodges-Lehmann against brute force,
interval coverage by simulation, and the scoring rules."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, strategies as st

from pyperfcore.ops import judge as J

scipy_stats = pytest.importorskip("scipy.stats")


@given(st.integers(1, 60), st.integers(1, 60), st.integers(0, 2**32 - 1), st.booleans())
def test_u_and_p_match_scipy(m, n, seed, ties):
    rng = np.random.default_rng(seed)
    x = rng.normal(0.3, 1, m)
    y = rng.normal(0, 1, n)
    if ties:
        x, y = np.round(x * 2), np.round(y * 2)
    r = J.mann_whitney(x, y)
    ref = scipy_stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic")
    assert r.u == pytest.approx(ref.statistic, abs=1e-9)
    if np.unique(np.concatenate([x, y])).size > 1:
        assert r.p_value == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-12)
    d = (x[:, None] - y[None, :]).ravel()
    assert r.estimate == pytest.approx(np.median(d), abs=1e-12)
    assert r.lower <= r.estimate <= r.upper


def test_bisection_path_matches_exact(monkeypatch):
    rng = np.random.default_rng(3)
    x, y = rng.lognormal(0, 1, 301), rng.lognormal(0.1, 1, 257)
    exact = J.mann_whitney(x, y)
    monkeypatch.setattr(J, "_EXACT_PAIRS", 10)
    approx = J.mann_whitney(x, y)
    for a, b in ((exact.estimate, approx.estimate), (exact.lower, approx.lower),
                 (exact.upper, approx.upper)):
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)


def test_interval_covers_the_true_shift_at_its_confidence():
    rng = np.random.default_rng(11)
    hits = 0
    trials = 400
    for _ in range(trials):
        x = rng.exponential(1.0, 40) + 0.5
        y = rng.exponential(1.0, 50)
        r = J.mann_whitney(x, y, confidence=0.98)
        hits += r.lower <= 0.5 <= r.upper
    assert 0.95 <= hits / trials <= 1.0  # nominal 0.98; binomial sd ~0.007


def test_outliers_nan_and_classification():
    rng = np.random.default_rng(5)
    control = rng.normal(100, 5, 300)
    worse = rng.normal(130, 5, 300)
    same = rng.normal(100, 5, 300)
    lat = J.MetricConfig("latency_ms")
    assert J.classify(control, worse, lat).classification == "High"
    assert J.classify(control, same, lat).classification == "Pass"
    # a decrease is not a failure of an 'increase' metric, and is 'Low' for 'either'
    assert J.classify(worse, control, lat).classification == "Pass"
    assert J.classify(worse, control, J.MetricConfig("x", direction="either")).classification == "Low"
    # a few wild outliers in the experiment are removed (factor 3 IQR), NaN removed
    spiky = np.concatenate([same, [1e6, 5e6, np.nan]])
    r = J.classify(control, spiky, lat)
    assert r.classification == "Pass" and r.experiment_n == 300
    assert J.remove_outliers([1, 2, 3, 4, 100]).tolist() == [1, 2, 3, 4]
    assert J.classify([], same, lat).classification == "NoData"
    assert J.classify([1.0] * 5, [1.0] * 7, lat).classification == "Pass"
    with pytest.raises(ValueError, match="infinite"):
        J.classify(control, [np.inf], lat)
    r = J.classify([np.nan, 1, 2], [np.nan, 1, 2],
                   J.MetricConfig("z", nan="replace", nan_value=0.0, outlier_factor=None))
    assert r.control_n == 3


def test_scoring_weights_and_critical_metrics():
    rng = np.random.default_rng(9)
    ctl = {"latency": rng.normal(100, 5, 200), "errors": rng.binomial(1, 0.01, 200) * 1.0,
           "agreement": np.ones(200)}
    good = {"latency": rng.normal(100, 5, 200), "errors": rng.binomial(1, 0.01, 200) * 1.0,
            "agreement": np.ones(200)}
    metrics = [J.MetricConfig("latency", weight=1), J.MetricConfig("errors", weight=1),
               J.MetricConfig("agreement", direction="decrease", weight=2, critical=True)]
    judge = J.Judge(metrics)
    res = judge.judge(ctl, good)
    assert res.score == 100 and res.verdict == "pass"
    slow = dict(good, latency=rng.normal(140, 5, 200))
    res = judge.judge(ctl, slow)
    assert res.score == pytest.approx(100 * 3 / 4) and res.verdict == "marginal"
    # 0/1 per-request samples make the HL shift 0 while most pairs tie: like Kayenta (which
    # judges time series), judge such metrics as per-interval rates
    binary = dict(good, agreement=(rng.random(200) > 0.3) * 1.0)
    assert judge.judge(ctl, binary).metrics[2].test.estimate == 0
    wrong = dict(good, agreement=rng.binomial(50, 0.7, 200) / 50)
    res = judge.judge(ctl, wrong)
    assert res.score == 0 and res.verdict == "fail" and res.critical_failure == "agreement"
    assert "agreement" in res.summary()
    # nothing to judge is a failure, never a silent pass
    assert J.Judge([J.MetricConfig("a")]).judge({}, {}).verdict == "fail"
    with pytest.raises(ValueError, match="unique"):
        J.Judge([J.MetricConfig("a"), J.MetricConfig("a")])
    with pytest.raises(ValueError, match="direction"):
        J.MetricConfig("a", direction="up")


def test_too_few_samples_are_no_data_not_a_shift():
    import json
    import math

    from pyperfcore.ops import judge as J

    # 2 experiment vs 3 control values cannot bound a shift at 98%: the old clamp read the
    # range of the 6 differences as the interval and called it "Low"
    r = J.mann_whitney([0.80, 0.85], [1.0, 1.0, 1.0], 0.98)
    assert math.isinf(r.lower) and math.isinf(r.upper)
    m = J.classify([1.0, 1.0, 1.0], [0.80, 0.85],
                   J.MetricConfig("agreement", direction="decrease", critical=True))
    assert m.classification == "NoData" and "too few" in m.reason
    json.dumps(m.to_dict(), allow_nan=False)  # strict JSON for the audit trail
    # with enough intervals the same drop is found
    m = J.classify([1.0] * 10, [0.80, 0.85, 0.75, 0.8, 0.82],
                   J.MetricConfig("agreement", direction="decrease", critical=True))
    assert m.classification == "Low"
