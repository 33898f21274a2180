import copy
import pickle

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pyperfcore.sketches import KLLSketch
from tests import reference as ref

ds = pytest.importorskip("datasketches")

QS = np.linspace(0.005, 0.995, 199)


def _max_rank_error(data, quantile_fn):
    """Largest |true normalized rank of the returned item - requested rank| over QS."""
    got = np.asarray(quantile_fn(QS), dtype=np.float64)
    return float(np.abs(ref.exact_rank(data, got) - QS).max())


@pytest.mark.parametrize("dist", ["normal", "lognormal", "uniform_ints", "sorted", "reversed"])
def test_rank_error_within_datasketches_bound(dist, rng):
    n = 300_000
    x = {"normal": lambda: rng.normal(size=n), "lognormal": lambda: rng.lognormal(0, 2, n),
         "uniform_ints": lambda: rng.integers(0, 1000, n).astype(np.float64),
         "sorted": lambda: np.sort(rng.normal(size=n)), "reversed": lambda: np.sort(rng.normal(size=n))[::-1].copy()}[dist]()
    ours = KLLSketch(200, seed=11).update(x)
    theirs = ds.kll_doubles_sketch(200)
    theirs.update(x)
    bound = theirs.normalized_rank_error(True)  # two-sided PMF bound at k=200, about 1.65%
    assert 0.015 < bound < 0.018
    e_ours = _max_rank_error(x, ours.quantile)
    e_theirs = _max_rank_error(x, lambda q: theirs.get_quantiles(q))
    assert e_ours <= bound, (e_ours, e_theirs)
    # ranks the other way round: rank(item) against the exact rank
    probe = np.quantile(x, QS)
    assert np.abs(ours.rank(probe) - ref.exact_rank(x, probe)).max() <= bound
    assert ours.n == theirs.n == n
    assert ours.min == theirs.get_min_value() and ours.max == theirs.get_max_value()
    # the sketch stays about as small as DataSketches' for the same k
    assert ours._s.num_retained <= 1.2 * theirs.num_retained


def test_rank_error_over_many_seeds_float32(rng):
    x = rng.standard_exponential(100_000).astype(np.float32)
    worst = max(_max_rank_error(x.astype(np.float64), KLLSketch(200, seed=s).update(x).quantile) for s in range(8))
    theirs = ds.kll_floats_sketch(200)
    theirs.update(x)
    assert worst <= theirs.normalized_rank_error(True)
    # float32 input keeps its values exactly
    assert KLLSketch(200).update(x).max == float(x.max())


@settings(max_examples=30)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=400), st.integers(0, 2**32))
def test_small_streams_are_exact(values, seed):
    # below k items nothing is compacted: quantiles and ranks are exact
    x = np.array(values)
    s = KLLSketch(500, seed=seed).update(x)
    probe = np.array(values[:20] + [-2e6, 2e6])
    assert np.array_equal(s.rank(probe), ref.exact_rank(x, probe))
    srt = np.sort(x)
    q = np.array([0.0, 0.3, 0.5, 1.0])
    idx = np.maximum(np.ceil(q * x.size).astype(int) - 1, 0)
    assert np.array_equal(s.quantile(q), srt[idx])


def test_merge_matches_one_stream_accuracy(rng):
    parts = [rng.normal(i, 1 + i, 40_000) for i in range(6)]
    merged = KLLSketch(200, seed=1)
    for i, p in enumerate(parts):
        merged.merge(KLLSketch(200, seed=100 + i).update(p))
    allx = np.concatenate(parts)
    assert merged.n == allx.size
    assert merged.min == allx.min() and merged.max == allx.max()
    theirs = ds.kll_doubles_sketch(200)
    for p in parts:
        t = ds.kll_doubles_sketch(200)
        t.update(p)
        theirs.merge(t)
    assert _max_rank_error(allx, merged.quantile) <= theirs.normalized_rank_error(True)
    # merging into an empty sketch and merging an empty one
    e = KLLSketch(200)
    e.merge(merged)
    assert e.n == merged.n
    before = merged.to_bytes()
    merged.merge(KLLSketch(200))
    assert merged.to_bytes() == before
    merged.merge(merged)  # self-merge doubles every weight
    assert merged.n == 2 * allx.size


def test_serialization_pickle_copy(rng):
    s = KLLSketch(100, seed=5).update(rng.normal(size=20_000))
    b = s.to_bytes()
    assert b[:5] == b"PKLL\x01"  # magic and format version
    t = KLLSketch.from_bytes(b)
    assert t.to_bytes() == b
    assert np.array_equal(t.quantile(QS), s.quantile(QS))
    for c in (pickle.loads(pickle.dumps(s)), copy.deepcopy(s), copy.copy(s)):
        assert c.to_bytes() == b
    c = copy.deepcopy(s)
    c.update(np.arange(1000.0))
    assert s.to_bytes() == b  # a copy is independent
    # identical continuation after a round trip (the random state travels with the image)
    more = rng.normal(size=5000)
    assert t.update(more).to_bytes() == s.update(more).to_bytes()


def test_empty_sketch_and_bad_input():
    s = KLLSketch()
    assert s.is_empty() and s.n == 0
    for call in (lambda: s.quantile(0.5), lambda: s.rank(0.0), lambda: s.cdf([0.0]), lambda: s.pmf([0.0]),
                 lambda: s.min, lambda: s.max):
        with pytest.raises(ValueError, match="empty"):
            call()
    before = s.to_bytes()
    s.update(np.array([])).update([]).update(np.array([np.nan, np.nan]))
    assert s.to_bytes() == before and s.n == 0  # NaN is skipped
    assert KLLSketch.from_bytes(before).n == 0
    s.update([1.0, 2.0, 3.0])
    with pytest.raises(ValueError):
        s.quantile(1.5)
    with pytest.raises(ValueError):
        s.quantile(np.nan)
    with pytest.raises(ValueError):
        s.rank(np.nan)
    with pytest.raises(ValueError):
        s.cdf([2.0, 1.0])
    with pytest.raises(TypeError):
        s.update(["a", "b"])
    with pytest.raises(TypeError):
        s.update(None)
    with pytest.raises(TypeError):
        s.merge(object())
    with pytest.raises(ValueError):
        KLLSketch(4)


def test_cdf_pmf_and_input_kinds(rng):
    x = rng.normal(size=50_000)
    s = KLLSketch(200, seed=2).update(x)
    sp = [-1.0, 0.0, 1.0]
    cdf = s.cdf(sp)
    assert cdf[-1] == 1.0 and np.all(np.diff(cdf) >= 0)
    assert np.abs(cdf[:-1] - ref.exact_rank(x, sp)).max() < 0.0165
    assert s.pmf(sp).sum() == pytest.approx(1.0)
    assert np.array_equal(s.pmf(sp), np.diff(np.concatenate([[0.0], cdf])))
    a = KLLSketch(200, seed=9).update(x.astype(np.float32))
    b = KLLSketch(200, seed=9).update(x.astype(np.float32).tolist())
    c = KLLSketch(200, seed=9).update(x.astype(np.float32).reshape(100, -1))
    assert a.quantile(0.5) == pytest.approx(b.quantile(0.5)) and a.n == b.n == c.n
    ints = KLLSketch(200, seed=9).update(rng.integers(0, 100, 1000))
    assert 0 <= ints.quantile(0.5) <= 99
    torch = pytest.importorskip("torch")
    t = KLLSketch(200, seed=9).update(torch.from_numpy(x.astype(np.float32)))
    assert t.to_bytes() == a.to_bytes()


def _levels(image: bytes) -> list[np.ndarray]:
    """The items of each level of a PKLL v1 image (layout in csrc/sketches/kll.cpp)."""
    nl = image[5]
    sizes = np.frombuffer(image, dtype="<u4", count=nl, offset=40)
    items = np.frombuffer(image, dtype="<f8", offset=40 + 4 * nl)
    return np.split(items, np.cumsum(sizes)[:-1])


BLOCK = 1 << 14  # the bulk path's block size (kll.cpp)


@settings(max_examples=25)
@given(st.sampled_from(["normal", "ints", "huge_range", "ties", "signed_zeros", "with_inf"]), st.integers(0, 2**32))
def test_bulk_block_keeps_strided_order_statistics(kind, seed):
    # One full block into an empty k=200 sketch is compacted 7 times at once: level 7 must then
    # hold exactly sorted(x)[r::128] for one offset r (what 7 successive compactions keep).
    g = np.random.default_rng(seed)
    x = {"normal": lambda: g.normal(size=BLOCK),
         "ints": lambda: g.integers(-50, 50, BLOCK).astype(np.float64),
         "huge_range": lambda: g.choice([-1, 1], BLOCK) * 10.0 ** g.uniform(-300, 300, BLOCK),
         "ties": lambda: np.repeat(g.normal(size=BLOCK // 512), 512),
         "signed_zeros": lambda: g.choice([-0.0, 0.0, 1.0, -1.0], BLOCK),
         "with_inf": lambda: np.where(g.random(BLOCK) < 0.01, np.inf, g.normal(size=BLOCK))}[kind]()
    s = KLLSketch(200, seed=seed).update(x)
    lv = _levels(s.to_bytes())
    assert [l.size for l in lv] == [0] * 7 + [128]
    srt = np.sort(x)
    assert any(np.array_equal(lv[7], srt[r::128]) for r in range(128))
    assert s.n == BLOCK and s.min == srt[0] and s.max == srt[-1]


def test_bulk_and_item_paths_agree_in_accuracy(rng):
    # The same stream through whole-array updates (bulk blocks) and through 1000-item updates (the
    # item-by-item path) stays within the bound either way, and the sketch keeps its size.
    x = rng.lognormal(0, 1.5, 400_000)
    x[rng.random(x.size) < 0.001] = np.nan  # NaN is skipped on both paths, also inside a block
    clean = x[~np.isnan(x)]
    bulk = KLLSketch(200, seed=3).update(x)
    small = KLLSketch(200, seed=3)
    for part in np.array_split(x, 400):
        small.update(part)
    theirs = ds.kll_doubles_sketch(200)
    theirs.update(clean)
    bound = theirs.normalized_rank_error(True)
    for s in (bulk, small):
        assert s.n == clean.size and s.min == clean.min() and s.max == clean.max()
        assert _max_rank_error(clean, s.quantile) <= bound
        assert s._s.num_retained <= 1.2 * theirs.num_retained
    t = KLLSketch.from_bytes(bulk.to_bytes())  # a bulk-built image loads and reserializes
    assert t.to_bytes() == bulk.to_bytes()


@pytest.mark.parametrize("n", [0, 1, 2, 150, 5000, 300_000])
@pytest.mark.parametrize("item_type", ["double", "float"])
def test_datasketches_reads_our_kll_bytes(n, item_type, rng):
    x = rng.lognormal(0, 1, n).astype(np.float32 if item_type == "float" else np.float64)
    ours = KLLSketch(200, seed=4).update(x)
    cls = ds.kll_doubles_sketch if item_type == "double" else ds.kll_floats_sketch
    img = ours.to_datasketches(item_type)
    theirs = cls.deserialize(img)
    assert theirs.n == ours.n and theirs.num_retained == ours._s.num_retained and theirs.k == 200
    if n == 0:
        assert theirs.is_empty()
        assert KLLSketch.from_bytes(img).n == 0
        return
    assert theirs.get_min_value() == ours.min and theirs.get_max_value() == ours.max
    # same retained items and weights: the same answers to every query
    assert np.array_equal(np.asarray(theirs.get_quantiles(QS, inclusive=True)), ours.quantile(QS))
    probe = np.unique(np.quantile(x, QS).astype(x.dtype))
    assert np.allclose(np.asarray(theirs.get_cdf(probe, inclusive=True))[:-1], ours.cdf(probe)[:-1], rtol=0, atol=1e-12)
    # they keep updating it and serialize it; we read their image back
    more = rng.normal(size=n // 2 + 3).astype(x.dtype)
    theirs.update(more)
    img2 = theirs.serialize()
    back = KLLSketch.from_bytes(img2)
    assert back.n == theirs.n and back.min == theirs.get_min_value() and back.max == theirs.get_max_value()
    assert np.array_equal(back.quantile(QS), np.asarray(theirs.get_quantiles(QS, inclusive=True)))
    out = back.to_datasketches(item_type)
    assert out[:3] + out[4:] == img2[:3] + img2[4:]  # byte for byte but the level-0-sorted flag


@pytest.mark.parametrize("item_type", ["double", "float"])
def test_we_read_datasketches_kll_bytes(item_type, rng):
    cls = ds.kll_doubles_sketch if item_type == "double" else ds.kll_floats_sketch
    x = rng.normal(size=200_000).astype(np.float64 if item_type == "double" else np.float32)
    theirs = cls(200)
    theirs.update(x)
    theirs.get_quantile(0.5)  # sorts their level 0: the image then carries the sorted flag
    for img in (cls(200).serialize(), theirs.serialize()):
        ours = KLLSketch.from_datasketches(img, item_type, seed=1)
        assert ours.n == (0 if len(img) == 8 else x.size)
        if ours.n:
            assert np.array_equal(ours.quantile(QS), np.asarray(theirs.get_quantiles(QS, inclusive=True)))
            assert _max_rank_error(x.astype(np.float64), ours.quantile) <= theirs.normalized_rank_error(True)
            # a loaded image goes back out byte for byte (the sorted flag aside)
            out = ours.to_datasketches(item_type)
            assert out[:3] == img[:3] and out[4:] == img[4:]
            # and keeps working as a sketch: merged with our own, updated
            ours.merge(KLLSketch(200, seed=2).update(x[:1000])).update(x[:20_000])
            assert ours.n == x.size + 21_000
    with pytest.raises(ValueError, match="float32"):
        KLLSketch(200).update(np.array([0.1, 0.2])).to_datasketches("float")
    with pytest.raises(ValueError, match="item_type"):
        KLLSketch(200).to_datasketches("int")


def test_datasketches_kll_bad_images(rng):
    good = KLLSketch(200, seed=3).update(rng.normal(size=3000)).to_datasketches()
    bad = {
        "family": good[:2] + b"\x07" + good[3:],
        "m": good[:6] + b"\x04" + good[7:],
        "min_k": good[:16] + (100).to_bytes(2, "little") + good[18:],
        "levels": good[:18] + b"\x3f" + good[19:],
        "truncated": good[:-8],
        "appended": good + b"\x00" * 8,
        "offsets": good[:20] + (10**6).to_bytes(4, "little") + good[24:],
        "n": good[:8] + (12345).to_bytes(8, "little") + good[16:],
        "nan": good[:-8] + np.array([np.nan]).tobytes(),
        "flags": good[:3] + b"\x80" + good[4:],
    }
    for why, b in bad.items():
        with pytest.raises(ValueError):
            KLLSketch.from_datasketches(b)
        with pytest.raises(ValueError):
            KLLSketch.from_bytes(b)
