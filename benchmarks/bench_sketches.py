"""Sketches: pyperfcore vs the Apache DataSketches Python package, with numpy exact counting /
sorting as a floor, in the same run.

Run: python -m pytest benchmarks/bench_sketches.py --benchmark-only -p no:cacheprovider
Each group holds ours and the peers; extra_info carries items/s (or merges/s, queries/s).
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

import pyperfcore
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


@contextlib.contextmanager
def _one_thread_on(target):
    """One pyperfcore thread and the given CPU target (None: the best one), set outside the timed
    calls (changing the pool size is not free)."""
    prev_t, prev_n = pyperfcore.get_cpu_target(), pyperfcore.get_num_threads()
    pyperfcore.set_num_threads(1)
    if target:
        pyperfcore.set_cpu_target(target)
    try:
        yield
    finally:
        pyperfcore.set_cpu_target(prev_t)
        pyperfcore.set_num_threads(prev_n)


@pytest.mark.parametrize("impl", ["pyperfcore", "pyperfcore-avx2", "pyperfcore-scalar", "datasketches", "numpy-unique"])
def test_hll_update_int64(benchmark, impl):
    # pyperfcore on ONE thread (the target is per core), with the best and the lower targets
    x = _ints()
    benchmark.group = f"hll update int64 lg_k=12 ({N_INT:,} items, 1 thread)"
    xs = x.tolist()
    ref = _ds_hll(xs)
    target = {"pyperfcore": None, "pyperfcore-avx2": "avx2", "pyperfcore-scalar": "scalar"}.get(impl)
    if impl.startswith("pyperfcore"):
        if target and target not in pyperfcore.build_info()["cpu_targets_supported"]:
            pytest.skip(f"this CPU cannot run {target}")
        with _one_thread_on(target):
            assert HyperLogLog(12).update(x).to_bytes() == ref.serialize_compact()  # same sketch, byte for byte
            benchmark.pedantic(lambda: HyperLogLog(12).update(x), rounds=7, iterations=1)
    else:
        fn = {"datasketches": lambda: _ds_hll(xs), "numpy-unique": lambda: np.unique(x).size}[impl]
        benchmark.pedantic(fn, rounds=5, iterations=1)
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


@pytest.mark.parametrize("impl", ["pyperfcore-update_many", "pyperfcore-loop", "datasketches"])
def test_hll_union_of_8(benchmark, impl):
    rng = np.random.default_rng(2)
    parts = [rng.integers(0, 10**9, 50_000) for _ in range(8)]
    ours = [HyperLogLog(12).update(p) for p in parts]
    theirs = [_ds_hll(p.tolist()) for p in parts]
    benchmark.group = "hll union of 8 lg_k=12 sketches"

    def run_many():
        return HyperLogLogUnion(12).update_many(ours).estimate()

    def run_loop():
        u = HyperLogLogUnion(12)
        for s in ours:
            u.update(s)
        return u.estimate()

    def run_theirs():
        u = ds.hll_union(12)
        for s in theirs:
            u.update(s)
        return u.get_estimate()

    assert run_many() == run_loop() == pytest.approx(run_theirs(), rel=1e-12)
    fn = {"pyperfcore-update_many": run_many, "pyperfcore-loop": run_loop, "datasketches": run_theirs}[impl]
    benchmark.pedantic(fn, rounds=30, iterations=10)
    benchmark.extra_info["unions_per_s"] = 1 / benchmark.stats.stats.median


@pytest.mark.parametrize("dist", ["normal", "lognormal"])
@pytest.mark.parametrize("impl", ["pyperfcore", "datasketches", "numpy-sort"])
def test_kll_update(benchmark, impl, dist):
    g = np.random.default_rng(3)
    x = g.normal(size=N_INT) if dist == "normal" else g.lognormal(0, 2, N_INT)
    benchmark.group = f"kll update float64 k=200 ({N_INT:,} {dist} items, 1 thread)"
    srt = np.sort(x)

    def rank_err(q_fn):
        qs = np.linspace(0.01, 0.99, 99)
        return np.abs(np.searchsorted(srt, np.asarray(q_fn(qs)), side="right") / x.size - qs).max()

    def theirs():
        s = ds.kll_doubles_sketch(200)
        s.update(x)
        return s

    def ours():
        return KLLSketch(200, seed=1).update(x)

    assert rank_err(ours().quantile) < 0.0165
    assert rank_err(lambda q: theirs().get_quantiles(q)) < 0.0165
    fn = {"pyperfcore": ours, "datasketches": theirs, "numpy-sort": lambda: np.sort(x)}[impl]
    with _one_thread_on(None):  # the KLL update is single-threaded anyway
        benchmark.pedantic(fn, rounds=5, iterations=1)
    benchmark.extra_info["items_per_s"] = N_INT / benchmark.stats.stats.median


@pytest.mark.parametrize("impl", ["pyperfcore", "datasketches"])
def test_kll_update_small_batches(benchmark, impl):
    # 1000-item updates: below the bulk block size, so ours goes item by item into level 0
    x = np.random.default_rng(5).normal(size=200_000)
    parts = np.array_split(x, 200)
    benchmark.group = "kll update float64 k=200 (200 batches of 1,000 items)"

    def ours():
        s = KLLSketch(200, seed=1)
        for p in parts:
            s.update(p)
        return s

    def theirs():
        s = ds.kll_doubles_sketch(200)
        for p in parts:
            s.update(p)
        return s

    assert ours().n == theirs().n == x.size
    benchmark.pedantic(ours if impl == "pyperfcore" else theirs, rounds=5, iterations=1)
    benchmark.extra_info["items_per_s"] = x.size / benchmark.stats.stats.median


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
