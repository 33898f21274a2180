"""Drift statistics against scipy and the numpy oracles, on random inputs, every CPU target."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pyperfcore import drift
from pyperfcore._runtime import _core
from tests import reference as ref

scipy_stats = pytest.importorskip("scipy.stats")
scipy_special = pytest.importorskip("scipy.special")


def _sample(draw, max_n):
    n = draw(st.integers(1, max_n))
    kind = draw(st.sampled_from(["normal", "ties", "ints"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shift = draw(st.floats(0, 1.5))
    if kind == "normal":
        return rng.normal(shift, 1, n)
    if kind == "ties":
        return np.round(rng.normal(shift, 1, n), 1)
    return rng.integers(0, 5, n).astype(np.float64)


@st.composite
def sample_pair(draw, max_n=400):
    a = _sample(draw, max_n)
    b = a.copy() if draw(st.integers(0, 9)) == 0 else _sample(draw, max_n)
    if draw(st.booleans()):
        b = b[: max(1, min(len(b), len(a)))]
        b = np.resize(b, len(a))  # equal sizes exercise the n == m exact path
    return a, b


@given(sample_pair())
def test_ks_2samp_matches_scipy_exact(pair):
    a, b = pair
    r, s = drift.ks_2samp(a, b), scipy_stats.ks_2samp(a, b)
    assert abs(r.statistic - s.statistic) <= 1e-12
    assert abs(r.pvalue - s.pvalue) <= 1e-9 * max(s.pvalue, 1e-300)
    assert r.statistic_location == s.statistic_location and r.statistic_sign == s.statistic_sign


@given(st.integers(10_001, 30_000), st.integers(1, 30_000), st.floats(0, 0.2), st.integers(0, 2**32 - 1))
def test_ks_2samp_matches_scipy_asymptotic(n1, n2, shift, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.normal(0, 1, n1), rng.normal(shift, 1, n2)
    r, s = drift.ks_2samp(a, b), scipy_stats.ks_2samp(a, b)
    assert r.method == "asymp"
    assert abs(r.statistic - s.statistic) <= 1e-12
    assert abs(r.pvalue - s.pvalue) <= 1e-9 * max(s.pvalue, 1e-300)


@pytest.mark.parametrize("method", ["exact", "asymp"])
def test_ks_methods_match_scipy(method, rng):
    for n1, n2 in [(30, 45), (200, 200), (1000, 17), (3, 5000)]:
        a, b = rng.normal(0, 1, n1), rng.normal(0.2, 1, n2)
        r, s = drift.ks_2samp(a, b, method=method), scipy_stats.ks_2samp(a, b, method=method)
        assert abs(r.statistic - s.statistic) <= 1e-12
        assert abs(r.pvalue - s.pvalue) <= 1e-9 * max(s.pvalue, 1e-300), (n1, n2)


@given(sample_pair(), st.sampled_from(["less", "greater"]))
def test_ks_one_sided_matches_scipy_exact(pair, alternative):
    a, b = pair
    r, s = drift.ks_2samp(a, b, alternative), scipy_stats.ks_2samp(a, b, alternative)
    assert abs(r.statistic - s.statistic) <= 1e-12
    assert abs(r.pvalue - s.pvalue) <= 1e-9 * max(s.pvalue, 1e-300), (r, s)
    assert r.statistic_location == s.statistic_location and r.statistic_sign == s.statistic_sign


@pytest.mark.parametrize("alternative", ["less", "greater"])
@pytest.mark.parametrize("method", ["auto", "asymp", "exact"])
def test_ks_one_sided_methods_match_scipy(alternative, method, rng):
    import warnings

    for n1, n2, shift in [(30, 45, 0.3), (200, 200, -0.2), (1000, 17, 0.5), (12_000, 9_000, 0.03), (800, 600, 0.0)]:
        if method == "exact" and n1 * n2 > 1e7:
            continue
        a, b = rng.normal(0, 1, n1), rng.normal(shift, 1, n2)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # scipy's exact -> asymp fallback notice
            s = scipy_stats.ks_2samp(a, b, alternative, method=method)
        r = drift.ks_2samp(a, b, alternative, method=method)
        assert abs(r.statistic - s.statistic) <= 1e-12
        assert abs(r.pvalue - s.pvalue) <= 1e-9 * max(s.pvalue, 1e-300), (n1, n2, r, s)
        assert r.statistic_location == s.statistic_location


def test_ks_rejects_bad_alternative(rng):
    a = rng.normal(size=20)
    with pytest.raises(ValueError, match="alternative"):
        drift.ks_2samp(a, a, "bigger")
    with pytest.raises(ValueError, match="method="):
        drift.ks_2samp(a, a, "exact")


@settings(max_examples=20)  # scipy's own sum takes ~0.1 s per call at n ~ 1e6
@given(st.integers(1_000, 1_000_000), st.floats(2.2, 350.0))
def test_smirnov_large_n_matches_scipy(n, nxx):
    """The range where the one-sided sum is long (n x^2 in [2.2, 350], as kstwo uses it): the
    subsampled sum must agree with scipy's full double-double sum."""
    x = float(np.sqrt(nxx / n))
    if x >= 1:
        return
    s = scipy_special.smirnov(n, x)
    assert abs(_core().drift_smirnov_sf(n, x) - s) <= 1e-9 * max(s, 1e-300), (n, x)
    k = scipy_stats.kstwo.sf(x, n)
    assert abs(_core().drift_kstwo_sf(x, n) - k) <= 1e-9 * max(k, 1e-300), (n, x)


def test_ks_large_samples_match_scipy(rng):
    """Parallel merge chunks (> 32k values), ties across chunk borders, both signs."""
    for shift, rnd in [(0.01, None), (-0.02, 2), (0.0, 1)]:
        a, b = rng.normal(0, 1, 150_001), rng.normal(shift, 1.05, 120_000)
        if rnd is not None:
            a, b = np.round(a, rnd), np.round(b, rnd)
        for alt in ("two-sided", "less", "greater"):
            r, s = drift.ks_2samp(a, b, alt), scipy_stats.ks_2samp(a, b, alt)
            assert abs(r.statistic - s.statistic) <= 1e-12
            assert abs(r.pvalue - s.pvalue) <= 1e-9 * max(s.pvalue, 1e-300), (shift, rnd, alt, r, s)
            assert r.statistic_location == s.statistic_location and r.statistic_sign == s.statistic_sign


@given(st.integers(1, 2_000_000), st.floats(0, 1))
def test_kstwo_and_smirnov_match_scipy(n, x):
    core = _core()
    assert abs(core.drift_kstwo_sf(x, n) - scipy_stats.kstwo.sf(x, n)) <= 1e-9 * max(scipy_stats.kstwo.sf(x, n), 1e-300)
    s = scipy_special.smirnov(n, x)
    assert abs(core.drift_smirnov_sf(n, x) - s) <= 1e-9 * max(s, 1e-300)


@given(sample_pair())
def test_wasserstein_matches_scipy_and_oracle(pair):
    a, b = pair
    w = drift.wasserstein_distance(a, b)
    assert w == pytest.approx(scipy_stats.wasserstein_distance(a, b), rel=1e-9, abs=1e-12)
    assert w == pytest.approx(ref.drift_wasserstein(a, b), rel=1e-9, abs=1e-12)


counts = hnp.arrays(np.float64, st.integers(1, 30), elements=st.one_of(st.integers(0, 1000).map(float), st.floats(0.5, 1000)))


@given(counts, st.data())
def test_count_statistics_match_oracles(r, data):
    c = data.draw(hnp.arrays(np.float64, r.size, elements=st.one_of(st.integers(0, 1000).map(float), st.floats(0.5, 1000))))
    if r.sum() <= 0 or c.sum() <= 0:
        with pytest.raises(ValueError):
            _core().drift_psi(r, c)
        return
    core = _core()
    assert core.drift_psi(r, c) == pytest.approx(ref.drift_psi(r, c), rel=1e-9, abs=1e-12)
    assert core.drift_jensen_shannon(r, c) == pytest.approx(ref.drift_js(r, c), rel=1e-7, abs=1e-7)
    from scipy.spatial.distance import jensenshannon

    assert core.drift_jensen_shannon(r, c) == pytest.approx(jensenshannon(r, c), rel=1e-7, abs=1e-7)
    assert core.drift_hellinger(r, c) == pytest.approx(ref.drift_hellinger(r, c), rel=1e-7, abs=1e-7)
    assert core.drift_linf(r, c) == pytest.approx(ref.drift_linf(r, c), rel=1e-12, abs=1e-15)
    stat, p, dof = core.drift_chi2_contingency(r, c)
    keep = (r + c) > 0
    if keep.sum() >= 2:
        s = scipy_stats.chi2_contingency(np.vstack([r[keep], c[keep]]), correction=False)
        assert stat == pytest.approx(s.statistic, rel=1e-9, abs=1e-9)
        assert p == pytest.approx(s.pvalue, rel=1e-8, abs=1e-300)


@given(st.floats(0, 1e4), st.integers(1, 200))
def test_chi2_sf_matches_scipy(x, dof):
    s = scipy_stats.chi2.sf(x, dof)
    assert _core().drift_chi2_sf(x, float(dof)) == pytest.approx(s, rel=1e-9, abs=1e-300)


def test_chi2_and_z_like_evidently(rng):
    r = rng.choice(["a", "b", "c"], 500, p=[0.5, 0.3, 0.2])
    c = rng.choice(["a", "b", "c"], 800, p=[0.4, 0.4, 0.2])
    keys = ["a", "b", "c"]
    fr = np.array([(r == k).sum() for k in keys], float)
    fc = np.array([(c == k).sum() for k in keys], float)
    s = scipy_stats.chisquare(fc, fr * len(c) / len(r))
    stat, p = drift.chi2_test(r, c)
    assert stat == pytest.approx(s.statistic, rel=1e-12) and p == pytest.approx(s.pvalue, rel=1e-9)
    rb, cb = r[r != "c"], c[c != "c"]
    p1, p2 = (rb != "a").mean(), (cb != "a").mean()
    P = (p1 * rb.size + p2 * cb.size) / (rb.size + cb.size)
    z = (p1 - p2) / np.sqrt(P * (1 - P) * (1 / rb.size + 1 / cb.size))
    zz, pz = drift.z_test(rb, cb)
    assert zz == pytest.approx(z, rel=1e-12)
    assert pz == pytest.approx(2 * (1 - scipy_stats.norm.cdf(abs(z))), rel=1e-9)


def test_psi_evidently_sturges(rng):
    a, b = rng.normal(0, 1, 3000), rng.normal(0.3, 1.2, 2000)
    edges = np.histogram_bin_edges(np.concatenate([a, b]), bins="sturges")
    rp, cp = np.histogram(a, edges)[0] / a.size, np.histogram(b, edges)[0] / b.size
    want = ref.drift_psi(rp, cp)
    assert drift.psi(a, b, "sturges") == pytest.approx(want, rel=1e-12)


def test_nan_policy_is_explicit(rng):
    a = rng.normal(size=50)
    b = a.copy()
    b[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        drift.ks_2samp(a, b)
    r = drift.ks_2samp(a, b, nan_policy="omit")
    assert r.n_omitted == 1
    assert r.statistic == scipy_stats.ks_2samp(a, b[~np.isnan(b)]).statistic
    with pytest.raises(ValueError):
        drift.ks_2samp(a, [])
    with pytest.raises(TypeError):
        drift.ks_2samp(a, np.array(["x"]))


def test_correct_pvalues():
    p = np.array([0.01, 0.04, 0.03, 0.2])
    np.testing.assert_allclose(drift.correct_pvalues(p, "bonferroni"), np.minimum(p * 4, 1))
    # Benjamini-Hochberg by hand
    np.testing.assert_allclose(drift.correct_pvalues(p, "bh"), [0.04, 0.04 * 4 / 3, 0.04 * 4 / 3, 0.2])
    assert drift.correct_pvalues([], "bh").size == 0
