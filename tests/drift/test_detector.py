"""Detector defaults, effect-size decisions, windows, hooks, serialization and merging."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyperfcore import drift


def test_default_methods_follow_evidently(rng):
    small = {"num": rng.normal(size=500), "few": rng.integers(0, 4, 500), "bin": rng.integers(0, 2, 500),
             "cat": rng.choice(["a", "b", "c"], 500)}
    big = {k: np.resize(v, 5000) for k, v in small.items()}
    r = drift.detect_drift(small, small)
    assert [r.features[k].method for k in small] == ["ks", "chisquare", "z", "chisquare"]
    r = drift.detect_drift(big, big)
    assert [r.features[k].method for k in big] == ["wasserstein", "jensenshannon", "jensenshannon", "jensenshannon"]
    assert not r.dataset_drift


def test_wasserstein_normed_value(rng):
    a, b = rng.normal(0, 2, 3000), rng.normal(0.5, 2, 3000)
    import scipy.stats as ss

    f = drift.detect_drift({"x": a}, {"x": b}).features["x"]
    assert f.statistic == pytest.approx(ss.wasserstein_distance(a, b) / np.std(a), rel=1e-9)
    assert f.drifted


def test_large_samples_do_not_alarm_on_negligible_shift(rng):
    # 0.005-sigma shift with 1e6 vs 1e6: KS p ~ 1e-3, but D is negligible.
    a, b = rng.normal(0, 1, 1_000_000), rng.normal(0.005, 1, 1_000_000)
    ks = drift.ks_2samp(a, b)
    assert ks.pvalue < 0.05
    r = drift.detect_drift({"x": a[:800]}, {"x": b}, methods={"x": "ks"})  # small ref -> p-value test
    f = r.features["x"]
    assert not f.drifted
    r = drift.detect_drift({"x": a}, {"x": b}, methods={"x": "ks"}, preset="evidently")
    assert r.features["x"].drifted == (r.features["x"].pvalue <= 0.05)


def test_real_shift_detected_with_correction(rng):
    ref = {f"f{i}": rng.normal(size=600) for i in range(6)}
    cur = {f"f{i}": rng.normal(0.6 if i < 3 else 0.0, 1, 600) for i in range(6)}
    r = drift.detect_drift(ref, cur)
    assert set(r.drifted_features) == {"f0", "f1", "f2"}
    assert r.dataset_drift  # 3 of 6 >= 0.5
    assert all(f.pvalue_adjusted >= f.pvalue for f in r.features.values())


def test_missing_values_counted_not_dropped_silently(rng):
    cur = rng.normal(size=2000)
    cur[:10] = np.nan
    cur[10:15] = np.inf
    f = drift.detect_drift({"x": rng.normal(size=2000)}, {"x": cur}).features["x"]
    assert f.n_missing_current == 15 and f.n_current == 1985


def _stream(rng, n, shift_at, shift):
    x = rng.normal(size=(n, 3))
    x[shift_at:, 0] += shift
    return x


@pytest.mark.parametrize("window,kw", [("tumbling", {}), ("sliding", {"step": 500}), ("decay", {"step": 500, "half_life": 1000})])
def test_monitor_detects_injected_drift(rng, window, kw):
    prof = drift.ReferenceProfile.fit(rng.normal(size=(5000, 3)), names=["a", "b", "c"])
    mon = drift.DriftMonitor(prof, window, 2000, **kw)
    stream = _stream(rng, 12000, 6000, 1.0)
    for i in range(0, 12000, 700):  # batches straddle window boundaries
        mon.update(stream[i:i + 700])
    first = next(r for r in mon.reports if "a" in r.drifted_features)
    assert first.window["end_row"] > 6000
    assert all("a" not in r.drifted_features for r in mon.reports if r.window["end_row"] <= 6000)
    assert all(set(r.drifted_features) <= {"a"} for r in mon.reports)


def test_monitor_hooks_and_errors(rng):
    prof = drift.ReferenceProfile.fit({"x": rng.normal(size=3000)})
    seen = []
    mon = drift.DriftMonitor(prof, "tumbling", 1000, on_drift=seen.append)
    mon.update({"x": rng.normal(3, 1, 1000)})
    assert len(seen) == 1 and seen[0].features["x"].drifted

    def bad(_):
        raise RuntimeError("pager down")

    mon = drift.DriftMonitor(prof, "tumbling", 1000, on_drift=[bad])
    with pytest.raises(drift.DriftHookError, match="pager down") as ei:
        mon.update({"x": rng.normal(3, 1, 1000)})
    assert ei.value.report.features["x"].drifted and len(mon.reports) == 1
    with pytest.raises(ValueError):
        mon.update({"y": [1.0]})
    assert mon.update({"x": np.array([])}) == []


def test_monitor_categorical_unknown_and_missing(rng):
    prof = drift.ReferenceProfile.fit({"c": rng.choice(["a", "b"], 3000)})
    mon = drift.DriftMonitor(prof, "tumbling", 1000)
    batch = np.array(["a", "b", "zz", None] * 250, dtype=object)
    (rep,) = mon.update({"c": batch})
    f = rep.features["c"]
    assert f.n_missing_current == 250 and f.metrics["unknown"] == 250 and f.drifted


def test_profile_and_monitor_serialize_and_merge(rng):
    prof = drift.ReferenceProfile.fit({"x": rng.normal(size=4000), "c": rng.choice(["u", "v", "w"], 4000)})
    p2 = drift.ReferenceProfile.from_bytes(prof.to_bytes())
    assert p2.fingerprint() == prof.fingerprint()
    m1 = drift.DriftMonitor(prof, "tumbling", 10_000)
    m2 = drift.DriftMonitor(p2, "tumbling", 10_000)
    b1 = {"x": rng.normal(size=800), "c": rng.choice(["u", "v"], 800)}
    b2 = {"x": rng.normal(size=700), "c": rng.choice(["u", "w"], 700)}
    m1.update(b1)
    m2.update(b2)
    m1.merge(m2)
    one = drift.DriftMonitor(prof, "tumbling", 10_000)
    one.update({k: np.concatenate([b1[k], b2[k]]) for k in b1})
    a, b = m1.report(), one.report()
    for k in ("x", "c"):
        assert a.features[k].n_current == b.features[k].n_current == 1500
        assert a.features[k].statistic == pytest.approx(b.features[k].statistic, rel=1e-9)
    restored = drift.DriftMonitor.from_bytes(m1.to_bytes())
    assert restored.report().features["c"].statistic == pytest.approx(a.features["c"].statistic)
    assert pickle.loads(pickle.dumps(m1)).rows_seen == 1500
    with pytest.raises(ValueError):
        m1.merge(drift.DriftMonitor(drift.ReferenceProfile.fit({"x": rng.normal(size=100)}), "tumbling", 10_000))


@given(st.binary(max_size=300), st.integers(0, 400), st.integers(0, 255))
def test_fuzz_profile_and_monitor_blobs(junk, pos, byte):
    rng = np.random.default_rng(1)
    prof = drift.ReferenceProfile.fit({"x": rng.normal(size=50), "c": rng.choice(["a", "b"], 50)})
    mon = drift.DriftMonitor(prof, "sliding", 100, step=50)
    for cls, good in ((drift.ReferenceProfile, prof.to_bytes()), (drift.DriftMonitor, mon.to_bytes())):
        for blob in (junk, good[: pos % len(good)], good[:pos % len(good)] + bytes([byte]) + good[pos % len(good) + 1:]):
            try:
                cls.from_bytes(blob)
            except ValueError:
                pass


def test_schema_and_freshness(rng):
    data = {"age": np.array([10.0, 200.0, np.nan, 30.0]), "kind": np.array(["a", "b", "z", "a"])}
    rep = drift.validate_schema(data, {"age": {"dtype": "numeric", "min": 0, "max": 120, "max_null_rate": 0.1},
                                      "kind": {"allowed": ["a", "b"]}, "absent": {}})
    assert rep["age"]["above_max"] == 1 and rep["age"]["nulls"] == 1 and rep["age"]["violations"] == 2
    assert rep["kind"]["not_allowed"] == 1 and rep["absent"]["violations"] == 1
    f = drift.freshness(np.array([100.0, 50.0, np.nan, 0.0]), now=100.0, sla_seconds=60)
    assert f == {**f, "missing": 1, "stale": 1, "count": 4}
