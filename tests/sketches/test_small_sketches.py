"""Moments, FrequentItems, LatencyHistogram and ReservoirSample against exact numpy answers."""
import copy
import math
import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pyperfcore.sketches import FrequentItems, LatencyHistogram, Moments, ReservoirSample
from tests import reference as ref


# ---------------------------------------------------------------- Moments
@settings(max_examples=40)
@given(st.lists(st.lists(st.floats(-1e6, 1e6, allow_nan=False), max_size=50), min_size=1, max_size=6),
       st.floats(-1e9, 1e9))
def test_moments_merge_is_concatenation(chunks, shift):
    allx = np.concatenate([np.asarray(c, dtype=np.float64) for c in chunks]) + shift
    parts = []
    for c in chunks:
        m = Moments().update(np.asarray(c, dtype=np.float64) + shift)
        parts.append(m)
    merged = Moments()
    for p in parts:
        merged.merge(p)
    assert merged.n == allx.size
    if allx.size == 0:
        with pytest.raises(ValueError):
            merged.mean
        return
    e = ref.exact_moments(allx)
    scale = max(1.0, float(np.abs(allx).max()))
    assert merged.mean == pytest.approx(e["mean"], rel=1e-9, abs=1e-12 * scale)
    assert merged.variance() == pytest.approx(e["var"], rel=1e-7, abs=1e-12 * scale * scale)
    assert merged.min == allx.min() and merged.max == allx.max()
    if e["var"] > 1e-6 * scale * scale:
        assert merged.skewness == pytest.approx(e["skew"], rel=1e-5, abs=1e-7)
        assert merged.kurtosis == pytest.approx(e["kurt"], rel=1e-5, abs=1e-7)


def test_moments_stable_with_large_offset(rng):
    x = 1e9 + rng.normal(size=200_000)  # naive sum-of-squares loses everything here
    m = Moments()
    for chunk in np.array_split(x, 37):
        m.update(chunk)
    e = ref.exact_moments(x)
    assert m.variance() == pytest.approx(e["var"], rel=1e-6)
    assert m.variance(ddof=1) == pytest.approx(np.var(x, ddof=1), rel=1e-6)
    assert m.skewness == pytest.approx(e["skew"], abs=1e-3)
    assert m.kurtosis == pytest.approx(e["kurt"], abs=1e-3)


def test_moments_nan_null_and_roundtrip(rng):
    m = Moments().update(np.array([1.0, np.nan, 3.0])).update([None, 2.0, None])
    assert (m.n, m.nan_count, m.null_count) == (3, 1, 2)
    assert m.mean == 2.0 and m.variance() == pytest.approx(2 / 3)
    b = m.to_bytes()
    assert b[:5] == b"PMOM\x01"
    for c in (Moments.from_bytes(b), pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert c.to_bytes() == b
    before = m.to_bytes()
    m.update([]).update(np.array([]))
    assert m.to_bytes() == before
    assert math.isnan(Moments().update([5.0, 5.0]).skewness)
    with pytest.raises(TypeError):
        Moments().update(["a"])
    with pytest.raises(TypeError):
        m.merge(3)
    with pytest.raises(ValueError):
        Moments().update([1.0]).variance(ddof=1)


# ---------------------------------------------------------------- FrequentItems
def _zipf_stream(rng, n, vocab):
    return rng.zipf(1.3, n) % vocab


@pytest.mark.parametrize("k", [8, 64])
def test_frequent_items_bounds_hold(k, rng):
    sketches, chunks = [], []
    for i in range(4):
        x = _zipf_stream(rng, 30_000, 5000)
        chunks.append(x)
        sketches.append(FrequentItems(k).update(x[:10_000]).update(x[10_000:]))
    merged = sketches[0]
    for s in sketches[1:]:
        merged.merge(s)
    allx = np.concatenate(chunks)
    keys, counts = np.unique(allx, return_counts=True)
    true = dict(zip(keys.tolist(), counts.tolist()))
    assert merged.n == allx.size
    assert merged.maximum_error <= allx.size / (k + 1) + 1e-9
    for key, c in true.items():
        assert merged.lower_bound(key) <= c <= merged.upper_bound(key)
    # every item above n / (k + 1) is reported, and nothing reported is a false positive
    reported = {r[0] for r in merged.frequent_items()}
    for key, c in true.items():
        if c > 2 * merged.maximum_error:
            assert key in reported
    for key in reported:
        assert true[key] > 0 and merged.lower_bound(key) > merged.maximum_error


def test_frequent_items_strings_bytes_roundtrip():
    f = FrequentItems(4).update(["a", "b", "a", "c", "a"]).update([b"z", b"z"]).update(np.array([7, 7, 7]))
    assert f.lower_bound("a") <= 3 <= f.upper_bound("a")
    b = f.to_bytes()
    g = FrequentItems.from_bytes(b)
    assert g.to_bytes() == b and pickle.loads(pickle.dumps(f)).to_bytes() == b
    before = f.to_bytes()
    f.update([])
    assert f.to_bytes() == before
    with pytest.raises(TypeError):
        f.update(np.array([1.5]))
    with pytest.raises(TypeError):
        f.merge("x")


# ---------------------------------------------------------------- LatencyHistogram
@pytest.mark.parametrize("rel", [0.01, 0.002])
def test_latency_quantiles_relative_error(rel, rng):
    x = np.concatenate([rng.lognormal(-4, 1, 100_000), np.zeros(100)])
    h = LatencyHistogram(rel)
    for c in np.array_split(x, 7):
        h.update(c)
    srt = np.sort(x)
    for q in np.linspace(0, 1, 101):
        want = srt[int(q * (x.size - 1))]  # the item of rank q (lower), which the histogram reports
        got = h.quantile(float(q))
        assert abs(got - want) <= rel * want + 1e-300, (q, got, want)


def test_latency_thresholds_exact_and_prometheus(rng):
    thr = [0.005, 0.05, 0.1, 0.25, 1.0]
    x = rng.exponential(0.08, 50_000)
    x[:500] = 0.1  # values sitting exactly on a threshold count as <= it (Prometheus' le)
    a, b = LatencyHistogram(0.01, thr), LatencyHistogram(0.01, thr)
    a.update(x[:20_000])
    b.update(x[20_000:])
    a.merge(b)
    buckets = a.prometheus_buckets()
    assert buckets[-1] == (math.inf, x.size)
    for le, count in buckets[:-1]:
        assert count == int((x <= le).sum())  # exact at the configured thresholds
    # other bounds are resolved to the histogram's relative error
    for le, count in a.prometheus_buckets([0.03, 0.2])[:-1]:
        assert int((x <= le * 0.98).sum()) <= count <= int((x <= le * 1.02).sum())
    assert a.n == x.size and a.sum == pytest.approx(x.sum())
    bts = a.to_bytes()
    assert LatencyHistogram.from_bytes(bts).to_bytes() == bts
    assert pickle.loads(pickle.dumps(a)).prometheus_buckets() == buckets


def test_latency_bad_input():
    h = LatencyHistogram()
    with pytest.raises(ValueError, match="empty"):
        h.quantile(0.5)
    h.update([np.nan, 0.5])
    assert h.nan_count == 1 and h.n == 1
    with pytest.raises(ValueError):
        h.update([-1.0])
    with pytest.raises(ValueError):
        h.update([np.inf])
    with pytest.raises(ValueError):
        LatencyHistogram(0.7)
    with pytest.raises(ValueError):
        h.merge(LatencyHistogram(0.02))
    before = h.to_bytes()
    h.update([])
    assert h.to_bytes() == before


# ---------------------------------------------------------------- ReservoirSample
def test_reservoir_uniform(rng):
    # each of 1000 items lands in a 100-item sample with probability 0.1: chi-square over 2000 runs
    n, k, runs = 1000, 100, 2000
    hits = np.zeros(n)
    for r in range(runs):
        s = ReservoirSample(k, seed=r)
        for c in np.array_split(np.arange(n), 3):
            s.update(c)
        smp = s.sample
        assert smp.size == k and np.unique(smp).size == k
        hits[smp] += 1
    expected = runs * k / n
    chi2 = float(((hits - expected) ** 2 / expected).sum())
    assert 850 < chi2 < 1160  # chi-square with 999 dof: mean 999, sd 44.7 (3.5 sd either side)


def test_reservoir_merge_is_uniform_over_union():
    n_a, n_b, k, runs = 300, 900, 60, 1500
    from_a = 0
    for r in range(runs):
        a = ReservoirSample(k, seed=2 * r).update(np.zeros(n_a))
        b = ReservoirSample(k, seed=2 * r + 1).update(np.ones(n_b))
        a.merge(b)
        assert a.n == n_a + n_b and a.sample.size == k
        from_a += int((a.sample == 0).sum())
    p = from_a / (runs * k)
    assert abs(p - n_a / (n_a + n_b)) < 0.01


def test_reservoir_weighted(rng):
    # item 0 has weight 50, the other 99 weight 1: Efraimidis-Spirakis inclusion for k = 1 is w/W
    w = np.ones(100)
    w[0] = 50.0
    picks = sum(int(ReservoirSample(1, seed=r).update(np.arange(100), w).sample[0] == 0) for r in range(3000))
    assert abs(picks / 3000 - 50 / 149) < 0.03
    s = ReservoirSample(5, seed=1)
    with pytest.raises(ValueError):
        s.update([1, 2], [1.0])
    with pytest.raises(ValueError):
        s.update([1, 2], [1.0, -1.0])
    s.update(np.arange(20))
    b = s.to_bytes()
    assert ReservoirSample.from_bytes(b).to_bytes() == b
    assert np.array_equal(pickle.loads(pickle.dumps(s)).sample, s.sample)
    before = s.to_bytes()
    s.update([])
    assert s.to_bytes() == before
