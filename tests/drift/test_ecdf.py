"""KS and Wasserstein on unsorted samples (value buckets, csrc/drift/drift_ecdf.cpp) against scipy
and against the plain sort-and-walk path, on every CPU target. `buckets` forces the bucket
algorithm with few buckets on small samples, so that buckets hold many values, ties straddle
bucket edges and the pruning decides on close calls."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyperfcore import drift
from pyperfcore._runtime import _core
from tests import reference as ref

ss = pytest.importorskip("scipy.stats")

KINDS = ["normal", "ties", "ints", "cauchy", "outliers", "zeros", "const"]


def _draw(draw, max_n):
    n = draw(st.integers(1, max_n))
    kind = draw(st.sampled_from(KINDS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    shift = draw(st.floats(0, 1))
    if kind == "normal":
        x = rng.normal(shift, 1, n)
    elif kind == "ties":
        x = np.round(rng.normal(shift, 1, n), 1)
    elif kind == "ints":
        x = rng.integers(0, 5, n).astype(np.float64)
    elif kind == "cauchy":
        x = rng.standard_cauchy(n) + shift
    elif kind == "outliers":
        x = rng.normal(shift, 1, n)
        x[rng.random(n) < 0.05] = rng.choice([-1e6, 3e5, 1e12], size=1)[0]
    elif kind == "zeros":  # signed zeros are one value for scipy's searchsorted
        x = np.where(rng.random(n) < 0.5, 0.0, -0.0) * rng.integers(0, 2, n)
        x[rng.random(n) < 0.3] = shift
    else:
        x = np.full(n, np.round(shift, 1))
    return x


@st.composite
def pairs(draw, max_n=300):
    a = _draw(draw, max_n)
    r = draw(st.integers(0, 9))
    if r == 0:
        b = a.copy()
    elif r == 1:  # b drawn from a's values: ties across the samples
        b = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).choice(a, draw(st.integers(1, max_n)))
    else:
        b = _draw(draw, max_n)
    return a, b


BUCKETS = st.sampled_from([3, 4, 5, 8, 16, 64, 1024])


def _ks(a, b, alt, buckets):
    return _core().drift_ks_2samp(a, b, "auto", False, alt, buckets)


@given(pairs(), BUCKETS, st.sampled_from(["two-sided", "less", "greater"]))
def test_ks_buckets_match_scipy_and_sorting(cpu_target, pair, buckets, alt):
    a, b = pair
    s = ss.ks_2samp(a, b, alt)
    stat, p, loc, sign, _ = _ks(a, b, alt, buckets)
    assert stat == s.statistic  # bit-identical: same divisions and subtraction as scipy
    assert loc == s.statistic_location and sign == s.statistic_sign
    assert abs(p - s.pvalue) <= 1e-9 * max(s.pvalue, 1e-300)
    assert _ks(a, b, alt, buckets) == _ks(a, b, alt, -1)


@given(pairs(), BUCKETS)
def test_wasserstein_buckets_match_scipy(cpu_target, pair, buckets):
    a, b = pair
    w = _core().drift_wasserstein(a, b, False, buckets)
    assert w == pytest.approx(ss.wasserstein_distance(a, b), rel=1e-9, abs=1e-12)
    assert w == pytest.approx(ref.drift_wasserstein(a, b), rel=1e-9, abs=1e-12)
    assert w == pytest.approx(_core().drift_wasserstein(a, b, False, -1), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("kind", ["shift", "scale", "ties", "mixture", "lognormal", "identical"])
def test_large_samples_every_target(cpu_target, kind, rng):
    """Automatic bucket count, parallel passes, two-sided and one-sided, against scipy."""
    n1, n2 = 60_001, 45_000
    a = rng.normal(0, 1, n1)
    if kind == "shift":
        b = rng.normal(0.02, 1, n2)
    elif kind == "scale":
        b = rng.normal(0, 1.03, n2)
    elif kind == "ties":
        a, b = np.round(a, 2), np.round(rng.normal(0.01, 1, n2), 2)
    elif kind == "mixture":  # mass concentrated on one value inside a wide range
        b = np.where(rng.random(n2) < 0.4, 0.0, rng.standard_cauchy(n2))
    elif kind == "lognormal":  # heavy tail: the buckets' core is fitted to the bulk, split again
        a, b = rng.lognormal(0, 3, n1), rng.lognormal(0.05, 3, n2)
    else:
        b = a.copy()
    for alt in ("two-sided", "less", "greater"):
        r, s = drift.ks_2samp(a, b, alt), ss.ks_2samp(a, b, alt)
        assert r.statistic == s.statistic and r.statistic_location == s.statistic_location
        assert r.statistic_sign == s.statistic_sign
        assert abs(r.pvalue - s.pvalue) <= 1e-9 * max(s.pvalue, 1e-300), (kind, alt, r, s)
    assert drift.wasserstein_distance(a, b) == pytest.approx(ss.wasserstein_distance(a, b), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("case", ["inf", "neg_inf_twice", "huge", "tiny_range", "constant", "one_other"])
def test_edge_values_match_scipy(case, rng):
    """Inputs that defeat the value buckets (infinite t, overflowing ranges, no spread in the
    sample of the data) fall back or clamp; both statistics stay equal to scipy's."""
    a, b = rng.normal(size=20_000), rng.normal(0.1, 1, size=15_000)
    if case == "inf":
        a[5], b[9] = np.inf, -np.inf
    elif case == "neg_inf_twice":  # scipy: -inf - -inf = nan in its differences -> nan
        a[5], b[7] = -np.inf, -np.inf
    elif case == "huge":
        a[5], b[3], a[9] = 1e300, -1e300, 1.7e308
    elif case == "tiny_range":  # K / range overflows
        a, b = a * 1e-310, b * 1e-310
    elif case == "constant":
        a, b = np.full(20_000, 3.0), np.full(15_000, 3.0)
    else:  # the strided sample of the data sees one value only
        a, b = np.zeros(20_000), np.zeros(15_000)
        a[1::1000] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        sw = ss.wasserstein_distance(a, b)
    w = drift.wasserstein_distance(a, b)
    assert (np.isnan(w) and np.isnan(sw)) or w == pytest.approx(sw, rel=1e-9, abs=1e-300)
    for alt in ("two-sided", "less", "greater"):
        r, s = drift.ks_2samp(a, b, alt), ss.ks_2samp(a, b, alt)
        assert r.statistic == s.statistic and r.statistic_location == s.statistic_location
        assert abs(r.pvalue - s.pvalue) <= 1e-9 * max(s.pvalue, 1e-300), (case, alt)


@pytest.mark.parametrize("buckets", [0, -1, 3, 64])
def test_size_one_and_tiny_samples(buckets):
    for a, b in [([1.0], [2.0]), ([2.0], [1.0]), ([1.0], [1.0]), ([0.0, -0.0], [0.0]), ([5.0], [1.0, 5.0, 9.0])]:
        a, b = np.array(a), np.array(b)
        s = ss.ks_2samp(a, b)
        stat, p, loc, sign, _ = _core().drift_ks_2samp(a, b, "auto", False, "two-sided", buckets)
        assert (stat, loc, sign) == (s.statistic, s.statistic_location, s.statistic_sign)
        assert p == pytest.approx(s.pvalue, rel=1e-9)
        assert _core().drift_wasserstein(a, b, False, buckets) == pytest.approx(ss.wasserstein_distance(a, b), abs=1e-15)


@pytest.mark.parametrize("buckets", [0, -1, 16])
def test_nan_rejected_natively(buckets, rng):
    """NaN anywhere (also past the strided sample the bucket map is fitted on) is an error."""
    a, b = rng.normal(size=30_000), rng.normal(size=30_000)
    b[-1] = np.nan
    for fn in (lambda: _core().drift_ks_2samp(a, b, "auto", False, "two-sided", buckets),
               lambda: _core().drift_wasserstein(a, b, False, buckets)):
        with pytest.raises(ValueError, match="NaN"):
            fn()
    with pytest.raises(ValueError, match="data2 contains 1 NaN"):
        drift.ks_2samp(a, b)
    with pytest.raises(ValueError, match="v_values contains 1 NaN"):
        drift.wasserstein_distance(a, b)
    r = drift.ks_2samp(a, b, nan_policy="omit")
    assert r.n_omitted == 1 and r.statistic == ss.ks_2samp(a, b[:-1]).statistic
    assert drift.wasserstein_distance(a, b, nan_policy="omit") == pytest.approx(
        ss.wasserstein_distance(a, b[:-1]), rel=1e-9)


def test_bad_bucket_count(rng):
    a = rng.normal(size=10)
    for k in (1, 2, 2**25):
        with pytest.raises(ValueError, match="buckets"):
            _core().drift_ks_2samp(a, a, "auto", False, "two-sided", k)


@settings(max_examples=25)
@given(st.sampled_from(KINDS + ["lognormal", "mixture"]), st.sampled_from(KINDS + ["lognormal", "mixture"]),
       st.integers(4_096, 30_000), st.integers(4_096, 30_000), st.integers(0, 2**32 - 1),
       st.sampled_from(["two-sided", "less", "greater"]))
def test_automatic_path_random_kinds(cpu_target, ka, kb, n1, n2, seed, alt):
    """The automatic choices (bucket count, core, leaf size, depth) on samples large enough for
    the bucket path, drawn from mixed kinds, against scipy."""
    rng = np.random.default_rng(seed)

    def draw(kind, n):
        if kind == "lognormal":
            return rng.lognormal(0, rng.uniform(0.5, 4), n)
        if kind == "mixture":
            return np.where(rng.random(n) < rng.uniform(0.1, 0.9), np.round(rng.uniform(-2, 2)), rng.normal(0, 1, n))
        return _draw_np(rng, kind, n)

    a, b = draw(ka, n1), draw(kb, n2)
    r, s = drift.ks_2samp(a, b, alt), ss.ks_2samp(a, b, alt)
    assert r.statistic == s.statistic and r.statistic_location == s.statistic_location
    assert r.statistic_sign == s.statistic_sign
    assert abs(r.pvalue - s.pvalue) <= 1e-9 * max(s.pvalue, 1e-300)
    w, sw = drift.wasserstein_distance(a, b), ss.wasserstein_distance(a, b)
    assert w == pytest.approx(sw, rel=1e-9, abs=1e-12)


def _draw_np(rng, kind, n):
    shift = rng.uniform(0, 1)
    if kind == "normal":
        return rng.normal(shift, 1, n)
    if kind == "ties":
        return np.round(rng.normal(shift, 1, n), 1)
    if kind == "ints":
        return rng.integers(0, 5, n).astype(np.float64)
    if kind == "cauchy":
        return rng.standard_cauchy(n) + shift
    if kind == "outliers":
        x = rng.normal(shift, 1, n)
        x[rng.random(n) < 0.05] = 1e6
        return x
    if kind == "zeros":
        x = np.where(rng.random(n) < 0.5, 0.0, -0.0)
        x[rng.random(n) < 0.3] = shift
        return x
    return np.full(n, np.round(shift, 1))


@pytest.mark.parametrize("n", [95, 50_000])
@pytest.mark.parametrize("buckets", [0, 3, 64])
def test_wasserstein_far_outliers_keep_precision(cpu_target, n, buckets, rng):
    """A distance tiny next to the values' range (equal outliers at 1e12 in both samples): the
    closed-form buckets would lose the small values' positions, so the rounding bound sends this
    to the exact path (a regression case found by hypothesis)."""
    a = rng.normal(0, 1, n)
    a[n // 3] = 1e12
    b = a + 1.0
    b[n // 3] = 1e12
    w = _core().drift_wasserstein(a, b, False, buckets)
    assert w == pytest.approx(ss.wasserstein_distance(a, b), rel=1e-9)
