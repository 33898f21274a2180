"""SLO evaluation and canary judging: pyperfcore vs the obvious alternatives, same run.

Run: python -m pytest benchmarks/bench_slo.py --benchmark-only -p no:cacheprovider
"""
from __future__ import annotations

import numpy as np
import pytest

from pyperfcore.ops import judge as J
from pyperfcore.ops import slo as S

scipy_stats = pytest.importorskip("scipy.stats")


def _stream(n=20_000, seed=0):
    rng = np.random.default_rng(seed)
    return np.sort(rng.uniform(0, 3 * 86400, n)) + 1e6, rng.random(n) < 0.002


@pytest.mark.parametrize("impl", ["tracker", "numpy-recompute"])
def test_evaluate_every_second_of_a_stream(benchmark, impl):
    """Ingest a 3-day stream and evaluate all tiers once per 100 events (60 s resolution)."""
    times, bad = _stream()
    benchmark.group = "slo evaluate (20k events, 200 evaluations)"
    slo = S.SLO("a", "availability", 0.999)

    def ours():
        tr = S.SLOTracker(slo, resolution_s=60)
        fired = 0
        for i in range(times.size):
            tr.record(0 if bad[i] else 1, 1, times[i])
            if i % 100 == 99:
                fired += len(tr.evaluate(times[i]).alerts)
        return fired

    def naive():  # recompute each window from the raw events, as a query over a log would
        fired = 0
        for i in range(99, times.size, 100):
            t = times[i]
            seen = slice(0, i + 1)
            ts, bs = times[seen], bad[seen]
            for tier in slo.tiers:
                thr = tier.burn_rate(slo.period_s)
                ok = True
                for w in (tier.long_window_s, tier.short_window_s):
                    m = (np.floor(ts / 60) > np.floor(t / 60) - np.ceil(w / 60))
                    r = bs[m].mean() / slo.error_budget if m.any() else 0.0
                    ok &= r > thr
                fired += ok
        return fired

    want = naive()
    assert ours() == want
    fn = ours if impl == "tracker" else naive
    res = benchmark.pedantic(fn, rounds=3, iterations=1)
    benchmark.extra_info["events_per_s"] = times.size / benchmark.stats.stats.median
    assert res == want


@pytest.mark.parametrize("impl", ["pyperfcore", "scipy"])
@pytest.mark.parametrize("n", [1000, 10000])
def test_mann_whitney(benchmark, impl, n):
    rng = np.random.default_rng(1)
    x, y = rng.lognormal(0, 1, n), rng.lognormal(0.05, 1, n)
    benchmark.group = f"mann-whitney U + p-value n={n}"
    ours = J.mann_whitney(x, y)
    ref = scipy_stats.mannwhitneyu(x, y, method="asymptotic")
    assert ours.u == pytest.approx(ref.statistic) and ours.p_value == pytest.approx(ref.pvalue)
    if impl == "pyperfcore":  # includes the Hodges-Lehmann estimate and its 98% interval
        benchmark(J.mann_whitney, x, y)
    else:  # p-value only
        benchmark(scipy_stats.mannwhitneyu, x, y, method="asymptotic")
    benchmark.extra_info["pairs"] = n * n


# ------------------------------------------------------------------------ canary output drift
def _psi_numpy(ref, cur, bins=10):
    e = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)))
    e[0], e[-1] = -np.inf, np.inf
    p = np.histogram(ref, e)[0] / ref.size
    q = np.histogram(cur, e)[0] / cur.size
    p, q = np.where(p == 0, 1e-4, p), np.where(q == 0, 1e-4, q)
    return float(np.sum((q - p) * np.log(q / p)))


@pytest.mark.parametrize("impl", ["pyperfcore", "numpy-scipy"])
@pytest.mark.parametrize("method", ["psi", "ks", "wasserstein"])
@pytest.mark.parametrize("n", [5_000, 50_000])
def test_output_drift_statistic(benchmark, impl, method, n):
    """One canary analysis's output-drift statistic over n outputs per arm."""
    from pyperfcore.ops.output_drift import drift_statistic

    rng = np.random.default_rng(2)
    b, c = rng.beta(2, 5, n), rng.beta(2.2, 5, n)
    benchmark.group = f"output drift {method} n={n} per arm"
    ref = {"psi": lambda: _psi_numpy(b, c),
           "ks": lambda: scipy_stats.ks_2samp(b, c).statistic,
           "wasserstein": lambda: scipy_stats.wasserstein_distance(b, c) / b.std()}[method]
    ours = lambda: drift_statistic(b, c, method=method).value  # noqa: E731
    assert ours() == pytest.approx(ref(), rel=1e-9, abs=1e-12)
    benchmark(ours if impl == "pyperfcore" else ref)
    benchmark.extra_info["values_per_s"] = 2 * n / benchmark.stats.stats.median


@pytest.mark.parametrize("impl", ["bare-call", "router", "router+outputs"])
def test_router_per_request(benchmark, impl):
    """Per-request cost of the in-process router in canary mode, without and with output-value
    collection for the drift metric (a float score per request)."""
    from pyperfcore.ops import release as R

    model = lambda x: 0.25 * x  # noqa: E731
    benchmark.group = "router per request (canary 50 %)"
    if impl == "bare-call":
        fn = model
    else:
        fn = R.Router(model, model, mode="canary", weight=50, window=10_000,
                      outputs="values" if impl == "router+outputs" else None)
    xs = np.random.default_rng(3).random(1000)
    assert fn(0.5) == 0.125

    def run():
        for i in range(xs.size):
            fn(xs[i])
    benchmark(run)
    benchmark.extra_info["requests_per_s"] = xs.size / benchmark.stats.stats.median
