"""Sketches: pyperfcore vs the Apache DataSketches Python package, with numpy exact counting /
sorting as a floor, in the same run.

Run: python -m pytest benchmarks/bench_sketches.py --benchmark-only -p no:cacheprovider
Each group holds ours and the peers; extra_info carries items/s (or merges/s, queries/s).
"""
from __future__ import annotations

import numpy as np
import pytest

from pyperfcore.sketches import HyperLogLog, HyperLogLogUnion, KLLSketch

ds = pytest.importorskip("datasketches")

N_INT = 1_000_000
N_STR = 200_000


def _ints():
    return np.random.default_rng(0).integers(0, 2**62, N_INT)


def _strs():
    return np.array([f"user-{i}" for i in np.random.default_rng(1).integers(0, 10**9, N_STR).tolist()])


def _ds_hll(values, lg_k=12):
    s = ds.hll_sketch(lg_k, ds.tgt_hll_type.HLL_8)
    for v in values:  # the package has no array update: one call per item
        s.update(v)
    return s


@pytest.mark.parametrize("impl", ["pyperfcore", "datasketches", "numpy-unique"])
def test_hll_update_int64(benchmark, impl):
    x = _ints()
    benchmark.group = f"hll update int64 lg_k=12 ({N_INT:,} items)"
    xs = x.tolist()
    ref = _ds_hll(xs)
    assert HyperLogLog(12).update(x).to_bytes() == ref.serialize_compact()  # same sketch, byte for byte
    fn = {"pyperfcore": lambda: HyperLogLog(12).update(x),
          "datasketches": lambda: _ds_hll(xs),
          "numpy-unique": lambda: np.unique(x).size}[impl]
    benchmark.pedantic(fn, rounds=3, iterations=1)
    benchmark.extra_info["items_per_s"] = N_INT / benchmark.stats.stats.median


@pytest.mark.parametrize("impl", ["pyperfcore", "pyperfcore-list", "datasketches", "numpy-unique"])
def test_hll_update_strings(benchmark, impl):
    u = _strs()
    words = u.tolist()
    benchmark.group = f"hll update str lg_k=12 ({N_STR:,} items)"
    ref = _ds_hll(words)
    assert HyperLogLog(12).update(u).to_bytes() == ref.serialize_compact()
    assert HyperLogLog(12).update(words).to_bytes() == ref.serialize_compact()
    fn = {"pyperfcore": lambda: HyperLogLog(12).update(u),  # numpy 'U' array
          "pyperfcore-list": lambda: HyperLogLog(12).update(words),  # list of str
          "datasketches": lambda: _ds_hll(words),
          "numpy-unique": lambda: np.unique(u).size}[impl]
    benchmark.pedantic(fn, rounds=3, iterations=1)
    benchmark.extra_info["items_per_s"] = N_STR / benchmark.stats.stats.median


@pytest.mark.parametrize("impl", ["pyperfcore", "datasketches"])
def test_hll_union_of_8(benchmark, impl):
    rng = np.random.default_rng(2)
    parts = [rng.integers(0, 10**9, 50_000) for _ in range(8)]
    ours = [HyperLogLog(12).update(p) for p in parts]
    theirs = [_ds_hll(p.tolist()) for p in parts]
    benchmark.group = "hll union of 8 lg_k=12 sketches"

    def run_ours():
        u = HyperLogLogUnion(12)
        for s in ours:
            u.update(s)
        return u.estimate()

    def run_theirs():
        u = ds.hll_union(12)
        for s in theirs:
            u.update(s)
        return u.get_estimate()

    assert run_ours() == pytest.approx(run_theirs(), rel=1e-12)
    benchmark.pedantic(run_ours if impl == "pyperfcore" else run_theirs, rounds=20, iterations=5)
    benchmark.extra_info["unions_per_s"] = 1 / benchmark.stats.stats.median


@pytest.mark.parametrize("impl", ["pyperfcore", "datasketches", "numpy-sort"])
def test_kll_update(benchmark, impl):
    x = np.random.default_rng(3).normal(size=N_INT)
    benchmark.group = f"kll update float64 k=200 ({N_INT:,} items)"
    srt = np.sort(x)

    def rank_err(q_fn):
        qs = np.linspace(0.01, 0.99, 99)
        return np.abs(np.searchsorted(srt, np.asarray(q_fn(qs)), side="right") / x.size - qs).max()

    def theirs():
        s = ds.kll_doubles_sketch(200)
        s.update(x)
        return s

    assert rank_err(KLLSketch(200, seed=1).update(x).quantile) < 0.0165
    assert rank_err(lambda q: theirs().get_quantiles(q)) < 0.0165
    fn = {"pyperfcore": lambda: KLLSketch(200, seed=1).update(x), "datasketches": theirs,
          "numpy-sort": lambda: np.sort(x)}[impl]
    benchmark.pedantic(fn, rounds=3, iterations=1)
    benchmark.extra_info["items_per_s"] = N_INT / benchmark.stats.stats.median


@pytest.mark.parametrize("impl", ["pyperfcore", "datasketches"])
def test_kll_quantile_query(benchmark, impl):
    x = np.random.default_rng(4).normal(size=N_INT)
    ours = KLLSketch(200, seed=1).update(x)
    theirs = ds.kll_doubles_sketch(200)
    theirs.update(x)
    qs = np.linspace(0.001, 0.999, 999)
    benchmark.group = "kll 999 quantiles in one call (k=200, 1e6 items)"
    srt = np.sort(x)
    for got in (ours.quantile(qs), np.asarray(theirs.get_quantiles(qs))):
        assert np.abs(np.searchsorted(srt, got, side="right") / x.size - qs).max() < 0.0165
    fn = (lambda: ours.quantile(qs)) if impl == "pyperfcore" else (lambda: theirs.get_quantiles(qs))
    benchmark.pedantic(fn, rounds=20, iterations=3)
    benchmark.extra_info["queries_per_s"] = qs.size / benchmark.stats.stats.median
