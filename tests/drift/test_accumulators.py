"""Native accumulators: oracles on every CPU target, merging, empty input, blobs and fuzzing."""
from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from pyperfcore import drift
from tests import reference as ref

edges_st = hnp.arrays(np.float64, st.integers(2, 40), elements=st.floats(-100, 100), unique=True).map(np.sort)
values_st = hnp.arrays(np.float64, st.integers(0, 300),
                       elements=st.one_of(st.floats(-150, 150), st.just(np.nan), st.just(np.inf), st.just(-np.inf)))


@given(edges_st, values_st)
def test_histogram_matches_oracle_every_target(edges, x):
    import pyperfcore

    want = ref.drift_hist_counts(x, edges)
    x = np.concatenate([x, edges])  # values exactly on edges
    want = ref.drift_hist_counts(x, edges)
    for t in pyperfcore.build_info()["cpu_targets_supported"]:
        h = drift.Histogram(edges)
        h.update(x, target=t)
        np.testing.assert_array_equal(h.counts, want, err_msg=t)
        h32 = drift.Histogram(edges)
        x32 = x.astype(np.float32)
        h32.update(x32, target=t)
        np.testing.assert_array_equal(h32.counts, ref.drift_hist_counts(x32.astype(np.float64), edges), err_msg=t)


def test_histogram_large_parallel(cpu_target, rng):
    x = rng.normal(size=300_001)
    x[::1000] = np.nan
    edges = np.quantile(x[~np.isnan(x)], np.linspace(0, 1, 17))
    h = drift.Histogram(edges)
    h.update(x)
    want = np.zeros(edges.size + 1, dtype=np.int64)
    fin = x[~np.isnan(x)]
    want[1:-1] = np.histogram(fin, edges)[0]
    np.testing.assert_array_equal(h.counts[:-1], want)
    assert h.counts[-1] == np.isnan(x).sum()


@given(values_st)
def test_moments_match_oracle_every_target(x):
    import pyperfcore

    want = ref.drift_moments(x)
    for t in pyperfcore.build_info()["cpu_targets_supported"]:
        m = drift.Moments()
        m.update(x, target=t)
        s = m.state
        for k in ("n", "n_nan", "n_posinf", "n_neginf"):
            assert s[k] == want[k], (t, k)
        if want["n"]:
            for k in ("mean", "m2", "m3", "m4", "min", "max"):
                assert s[k] == pytest.approx(want[k], rel=1e-9, abs=1e-6), (t, k)


@given(values_st, values_st)
def test_moments_merge_equals_concatenation(a, b):
    ma, mb, mc = drift.Moments(), drift.Moments(), drift.Moments()
    ma.update(a)
    mb.update(b)
    mc.update(np.concatenate([a, b]))
    ma.merge(mb)
    for k, v in mc.state.items():
        assert ma.state[k] == pytest.approx(v, rel=1e-9, abs=1e-6), k


def test_empty_update_leaves_state_unchanged(rng):
    h = drift.Histogram([0.0, 1.0, 2.0])
    h.update(rng.uniform(0, 2, 10))
    before = h.to_bytes()
    h.update(np.array([]))
    assert h.to_bytes() == before
    m = drift.Moments()
    m.update(np.array([], dtype=np.float32))
    assert m.state["n"] == 0
    c = drift.CategoryCounts(3)
    c.update(np.array([], dtype=np.int64))
    assert c.counts.sum() == 0


def test_category_counts(rng):
    codes = rng.integers(-2, 6, 1000)
    c = drift.CategoryCounts(4)
    c.update(codes)
    want = [(codes == i).sum() for i in range(4)] + [(codes >= 4).sum(), (codes < 0).sum()]
    np.testing.assert_array_equal(c.counts, want)


def test_bad_inputs():
    with pytest.raises(ValueError):
        drift.Histogram([1.0, 1.0])
    with pytest.raises(ValueError):
        drift.Histogram([0.0, np.nan, 1.0])
    h = drift.Histogram([0.0, 1.0])
    with pytest.raises(TypeError):
        h.update(np.array(["a"]))
    with pytest.raises(ValueError):
        h.update(np.zeros((2, 2)))
    with pytest.raises(ValueError):
        h.merge(drift.Histogram([0.0, 2.0]))
    with pytest.raises(TypeError):
        h.merge(drift.Moments())


def _accs(rng):
    h = drift.Histogram(np.linspace(-2, 2, 9))
    h.update(rng.normal(size=500))
    m = drift.Moments()
    m.update(rng.normal(size=500))
    c = drift.CategoryCounts(5)
    c.update(rng.integers(-1, 7, 300))
    return [h, m, c]


def test_roundtrip_pickle_copy(rng):
    for a in _accs(rng):
        b = type(a).from_bytes(a.to_bytes())
        assert b.to_bytes() == a.to_bytes()
        assert pickle.loads(pickle.dumps(a)).to_bytes() == a.to_bytes()
        assert copy.deepcopy(a).to_bytes() == a.to_bytes()
        blob = a.to_bytes()
        assert blob[:4] == b"PFDR" and blob[4] == 1  # magic and format version


@given(st.data())
def test_fuzz_mutated_and_random_blobs(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    for a in _accs(rng):
        blob = bytearray(a.to_bytes())
        how = data.draw(st.sampled_from(["truncate", "flip", "random", "extend"]))
        if how == "truncate":
            blob = blob[: data.draw(st.integers(0, len(blob) - 1))]
        elif how == "flip":
            for _ in range(data.draw(st.integers(1, 8))):
                i = data.draw(st.integers(0, len(blob) - 1))
                blob[i] = data.draw(st.integers(0, 255))
        elif how == "random":
            blob = bytearray(data.draw(st.binary(max_size=200)))
        else:
            blob += data.draw(st.binary(min_size=1, max_size=16))
        try:
            b = type(a).from_bytes(bytes(blob))
        except ValueError:
            continue
        assert b.to_bytes() == bytes(blob)  # anything that loads re-serializes identically


@given(st.integers(1, 300), st.floats(-1e3, 1e3), st.floats(1e-6, 1e3), st.integers(0, 2**32 - 1))
def test_histogram_uniform_and_clustered_edges(k, lo, width, seed):
    """Uniform edges (bins by arithmetic) and edges a few ulps apart (many edges in one lookup
    cell, values on cell borders) against numpy's convention, every target."""
    import pyperfcore

    rng = np.random.default_rng(seed)
    uni = np.linspace(lo, lo + width, k + 1)
    uni = np.unique(uni)
    if uni.size < 2:
        return
    tight = np.unique(np.concatenate([uni, [np.nextafter(uni[0], np.inf), np.nextafter(np.nextafter(uni[0], np.inf), np.inf)]]))
    for edges in (uni, tight):
        x = np.concatenate([rng.uniform(lo - width * 0.1, lo + width * 1.1, 500), edges,
                            np.nextafter(edges, np.inf), np.nextafter(edges, -np.inf), [np.nan, np.inf, -np.inf]])
        want = ref.drift_hist_counts(x, edges)
        for t in pyperfcore.build_info()["cpu_targets_supported"]:
            h = drift.Histogram(edges)
            h.update(x, target=t)
            np.testing.assert_array_equal(h.counts, want, err_msg=t)


def test_histogram_infinite_edges_every_target(cpu_target, rng):
    """Infinite outer edges take the per-target binary-search kernels (no lookup table)."""
    edges = np.r_[-np.inf, np.quantile(rng.normal(size=1000), np.linspace(0.05, 0.95, 19)), np.inf]
    x = np.concatenate([rng.normal(size=20_003), edges, [np.nan]])
    h = drift.Histogram(edges)
    h.update(x, target=cpu_target)
    np.testing.assert_array_equal(h.counts, ref.drift_hist_counts(x, edges))


@given(st.lists(st.tuples(st.floats(-100, 100), st.integers(1, 8)), min_size=1, max_size=12),
       st.integers(0, 2**32 - 1))
def test_histogram_lookup_edge_groups_every_target(groups, seed):
    """Groups of 1-8 edges a few ulps apart (cells holding more edges than the SIMD lookup scans
    take the scalar search), values on, just beside and between the edges, every target."""
    import pyperfcore

    edges = []
    for v, m in groups:
        e = v
        for _ in range(m):
            edges.append(e)
            e = np.nextafter(e, np.inf)
    edges = np.unique(np.asarray(edges, dtype=np.float64))
    if edges.size < 2:
        return
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.uniform(edges[0] - 1, edges[-1] + 1, 997), edges, np.nextafter(edges, np.inf),
                        np.nextafter(edges, -np.inf), [np.nan, np.inf, -np.inf]])
    want = ref.drift_hist_counts(x, edges)
    for t in pyperfcore.build_info()["cpu_targets_supported"]:
        h = drift.Histogram(edges)
        h.update(x, target=t)
        np.testing.assert_array_equal(h.counts, want, err_msg=t)
