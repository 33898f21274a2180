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
