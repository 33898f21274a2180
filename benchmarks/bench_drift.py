"""Drift statistics against scipy and numpy on 1e6 vs 1e6 samples (same run, same group)."""
from __future__ import annotations

import numpy as np
import pytest

from pyperfcore import drift

ss = pytest.importorskip("scipy.stats")
N = 1_000_000


@pytest.fixture(scope="module")
def samples():
    rng = np.random.default_rng(7)
    return rng.normal(0, 1, N), rng.normal(0.01, 1.05, N)


@pytest.fixture(scope="module")
def hard_samples():
    """Inputs that a value grid handles worst: heavy ties (values rounded to 0.01) and a heavy
    tail (log-normal, sigma 3: the bulk sits in a tiny part of the range)."""
    rng = np.random.default_rng(11)
    return {"ties": (np.round(rng.normal(0, 1, N), 2), np.round(rng.normal(0.01, 1, N), 2)),
            "lognormal": (rng.lognormal(0, 3, N), rng.lognormal(0.02, 3, N))}


def _numpy_psi(a, b, bins=10):
    e = np.quantile(a, np.linspace(0, 1, bins + 1))
    e[0], e[-1] = -np.inf, np.inf
    p = np.histogram(a, e)[0] / a.size
    q = np.histogram(b, e)[0] / b.size
    p, q = np.where(p == 0, 1e-4, p), np.where(q == 0, 1e-4, q)
    return float(np.sum((p - q) * np.log(p / q)))


@pytest.mark.benchmark(group="ks_2samp 1e6 vs 1e6")
@pytest.mark.parametrize("impl", ["pyperfcore", "scipy"])
def test_ks(benchmark, samples, impl):
    a, b = samples
    ours, ref = drift.ks_2samp(a, b), ss.ks_2samp(a, b)
    assert ours.statistic == ref.statistic and abs(ours.pvalue - ref.pvalue) <= 1e-9 * ref.pvalue
    assert ours.statistic_location == ref.statistic_location
    fn = (lambda: drift.ks_2samp(a, b)) if impl == "pyperfcore" else (lambda: ss.ks_2samp(a, b))
    benchmark.pedantic(fn, rounds=3 if impl == "scipy" else 10, iterations=1)
    benchmark.extra_info["items_per_s"] = 2 * N / benchmark.stats["median"]


@pytest.mark.benchmark(group="wasserstein 1e6 vs 1e6")
@pytest.mark.parametrize("impl", ["pyperfcore", "scipy"])
def test_wasserstein(benchmark, samples, impl):
    a, b = samples
    assert drift.wasserstein_distance(a, b) == pytest.approx(ss.wasserstein_distance(a, b), rel=1e-9)
    fn = (lambda: drift.wasserstein_distance(a, b)) if impl == "pyperfcore" else (lambda: ss.wasserstein_distance(a, b))
    benchmark.pedantic(fn, rounds=3 if impl == "scipy" else 10, iterations=1)
    benchmark.extra_info["items_per_s"] = 2 * N / benchmark.stats["median"]


@pytest.mark.benchmark(group="psi deciles 1e6 vs 1e6")
@pytest.mark.parametrize("impl", ["pyperfcore", "numpy"])
def test_psi(benchmark, samples, impl):
    a, b = samples
    assert drift.psi(a, b, 10) == pytest.approx(_numpy_psi(a, b), rel=1e-9)
    fn = (lambda: drift.psi(a, b, 10)) if impl == "pyperfcore" else (lambda: _numpy_psi(a, b))
    benchmark.pedantic(fn, rounds=5, iterations=1)
    benchmark.extra_info["items_per_s"] = 2 * N / benchmark.stats["median"]


@pytest.mark.benchmark(group="histogram update 1e6 (fixed 100 reference bins)")
@pytest.mark.parametrize("impl", ["pyperfcore", "numpy"])
def test_hist_update(benchmark, samples, impl):
    a, b = samples
    e = np.quantile(a, np.linspace(0, 1, 101))
    h = drift.Histogram(e)
    h.update(b)
    assert np.array_equal(h.counts[1:-2], np.histogram(b[(b >= e[0]) & (b <= e[-1])], e)[0])
    fn = (lambda: drift.Histogram(e).update(b)) if impl == "pyperfcore" else (lambda: np.histogram(b, e))
    benchmark.pedantic(fn, rounds=10, iterations=1)
    benchmark.extra_info["items_per_s"] = N / benchmark.stats["median"]


@pytest.mark.benchmark(group="histogram update 1e6 (100 uniform bins)")
@pytest.mark.parametrize("impl", ["pyperfcore", "numpy"])
def test_hist_update_uniform(benchmark, samples, impl):
    a, b = samples
    e = np.linspace(-5, 5, 101)
    h = drift.Histogram(e)
    h.update(b)
    assert np.array_equal(h.counts[1:-2], np.histogram(b[(b >= e[0]) & (b <= e[-1])], e)[0])
    fn = (lambda: drift.Histogram(e).update(b)) if impl == "pyperfcore" else (lambda: np.histogram(b, e))
    benchmark.pedantic(fn, rounds=10, iterations=1)
    benchmark.extra_info["items_per_s"] = N / benchmark.stats["median"]


@pytest.mark.benchmark(group="ks_2samp one-sided 1e6 vs 1e6")
@pytest.mark.parametrize("impl", ["pyperfcore", "scipy"])
def test_ks_greater(benchmark, samples, impl):
    a, b = samples
    ours, ref = drift.ks_2samp(a, b, "greater"), ss.ks_2samp(a, b, "greater")
    assert ours.statistic == ref.statistic and abs(ours.pvalue - ref.pvalue) <= 1e-9 * ref.pvalue
    fn = (lambda: drift.ks_2samp(a, b, "greater")) if impl == "pyperfcore" else (lambda: ss.ks_2samp(a, b, "greater"))
    benchmark.pedantic(fn, rounds=3 if impl == "scipy" else 10, iterations=1)
    benchmark.extra_info["items_per_s"] = 2 * N / benchmark.stats["median"]


@pytest.mark.parametrize("kind", ["ties", "lognormal"])
@pytest.mark.parametrize("impl", ["pyperfcore", "scipy"])
def test_ks_hard(benchmark, hard_samples, kind, impl):
    benchmark.group = f"ks_2samp 1e6 vs 1e6 ({kind})"
    a, b = hard_samples[kind]
    ours, ref = drift.ks_2samp(a, b), ss.ks_2samp(a, b)
    assert ours.statistic == ref.statistic and ours.statistic_location == ref.statistic_location
    assert abs(ours.pvalue - ref.pvalue) <= 1e-9 * max(ref.pvalue, 1e-300)
    fn = (lambda: drift.ks_2samp(a, b)) if impl == "pyperfcore" else (lambda: ss.ks_2samp(a, b))
    benchmark.pedantic(fn, rounds=3 if impl == "scipy" else 10, iterations=1)
    benchmark.extra_info["items_per_s"] = 2 * N / benchmark.stats["median"]


@pytest.mark.parametrize("impl", ["pyperfcore", "scipy"])
def test_wasserstein_lognormal(benchmark, hard_samples, impl):
    benchmark.group = "wasserstein 1e6 vs 1e6 (lognormal)"
    a, b = hard_samples["lognormal"]
    assert drift.wasserstein_distance(a, b) == pytest.approx(ss.wasserstein_distance(a, b), rel=1e-9)
    fn = (lambda: drift.wasserstein_distance(a, b)) if impl == "pyperfcore" else (lambda: ss.wasserstein_distance(a, b))
    benchmark.pedantic(fn, rounds=3 if impl == "scipy" else 10, iterations=1)
    benchmark.extra_info["items_per_s"] = 2 * N / benchmark.stats["median"]


@pytest.fixture(scope="module")
def string_samples():
    """1e6 vs 1e6 category labels (12 values, 2-11 characters) as object arrays (what pandas
    gives for a string column) and as numpy 'U' arrays."""
    rng = np.random.default_rng(5)
    labels = np.array(["red", "green", "blue", "cyan", "magenta", "yellow", "black", "white", "orange",
                       "purple", "ultramarine", "teal"])
    a = labels[rng.integers(0, 12, N)]
    b = labels[np.minimum(rng.geometric(0.2, N) - 1, 11)]
    return {"U": (a, b), "object": (a.astype(object), b.astype(object))}


def _js_of_counts(r, c):
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(r / r.sum(), c / c.sum()))


def _numpy_js(a, b):
    vals, inv = np.unique(np.concatenate([a, b]), return_inverse=True)
    k = vals.size
    return _js_of_counts(np.bincount(inv[:a.size], minlength=k).astype(float),
                         np.bincount(inv[a.size:], minlength=k).astype(float))


def _pandas_js(a, b):
    import pandas as pd

    codes, uniq = pd.factorize(np.concatenate([a, b]), sort=True)
    k = uniq.size
    return _js_of_counts(np.bincount(codes[:a.size], minlength=k).astype(float),
                         np.bincount(codes[a.size:], minlength=k).astype(float))


@pytest.mark.parametrize("form", ["object", "U"])
@pytest.mark.parametrize("impl", ["pyperfcore", "pandas", "numpy"])
def test_categorical_js(benchmark, string_samples, form, impl):
    """Jensen-Shannon distance of two categorical string samples: coding the strings is the cost."""
    if impl == "pandas":
        pytest.importorskip("pandas")
    benchmark.group = f"categorical JS 1e6 vs 1e6 strings ({form})"
    a, b = string_samples[form]
    want = _numpy_js(a.astype("U"), b.astype("U"))
    fn = {"pyperfcore": lambda: drift.jensen_shannon(a, b, kind="categorical"),
          "pandas": lambda: _pandas_js(a, b), "numpy": lambda: _numpy_js(a, b)}[impl]
    assert fn() == pytest.approx(want, rel=1e-12)
    benchmark.pedantic(fn, rounds=3 if impl == "numpy" else 5, iterations=1)
    benchmark.extra_info["items_per_s"] = 2 * N / benchmark.stats["median"]
