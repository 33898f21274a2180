"""The 8-byte-key HLL kernels (hash, coupons, register filter, register max) on every CPU target
against the scalar MurmurHash3 and numpy, and the sketch built through them against DataSketches."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import pyperfcore
from pyperfcore._runtime import _core
from pyperfcore.sketches import HyperLogLog, HyperLogLogUnion
from tests import reference as ref

ds = pytest.importorskip("datasketches")
T = {"HLL_4": ds.tgt_hll_type.HLL_4, "HLL_6": ds.tgt_hll_type.HLL_6, "HLL_8": ds.tgt_hll_type.HLL_8}

u64 = st.integers(0, 2**64 - 1)
# float64 bit patterns that matter: signed zeros, infinities, quiet/signalling NaNs with payloads
special = st.sampled_from([0, 1 << 63, 0x7FF0000000000000, 0xFFF0000000000000, 0x7FF8000000000000,
                           0xFFF8000000000001, 0x7FF0000000000001, 0x7FFFFFFFFFFFFFFF, 2**64 - 1, 1])
keys_st = st.lists(st.one_of(u64, special), max_size=70)  # lengths around the 4/8/16-lane steps


def _hash(key_bytes: bytes, seed: int = 9001):
    return _core().murmur3_x64_128(key_bytes, seed)


@given(keys_st, st.integers(0, 2**64 - 1))
def test_murmur3_batch_matches_scalar(cpu_target, keys, seed):
    k = np.array(keys, dtype=np.uint64)
    h1, h2 = _core()._ds_murmur3_u64(k, seed, cpu_target)
    want = [_hash(int(v).to_bytes(8, "little"), seed) for v in keys]
    assert [(int(a), int(b)) for a, b in zip(h1, h2)] == want


@given(keys_st, st.booleans(), st.integers(4, 12), st.integers(0, 2**32))
def test_coupons_and_candidates_match_reference(cpu_target, keys, is_f64, lg_k, seed):
    k = np.array(keys, dtype=np.uint64)
    want = [ref.ds_coupon(*_hash(ref.ds_key_bytes(v, is_f64))) for v in keys]
    got = _core()._ds_coupons_u64(k, is_f64, cpu_target)
    assert got.tolist() == want
    # candidates: the coupons whose value exceeds the register of their slot, in input order
    regs = np.random.default_rng(seed).integers(0, 8, 1 << lg_k).astype(np.uint8)
    w = np.array(want, dtype=np.int64)
    keep = (w >> 26) > regs[w & ((1 << lg_k) - 1)] if len(keys) else np.zeros(0, bool)
    cand = _core()._ds_hll_candidates(k, is_f64, regs, lg_k, cpu_target)
    assert cand.tolist() == w[keep].tolist()


def test_candidates_refuse_wrong_register_count():
    with pytest.raises(ValueError, match="2\\^lg_k"):
        _core()._ds_hll_candidates(np.zeros(4, np.uint64), False, np.zeros(100, np.uint8), 12)


@pytest.mark.parametrize("n", [0, 5, 300, 200_000])
def test_update_bytes_identical_on_every_target(cpu_target, n, rng):
    # int64 and float64 streams (with -0.0, NaN payloads and infinities) through LIST, SET and HLL
    x = rng.integers(-(2**62), 2**62, n)
    f = rng.normal(size=n) * 1e6
    if n:
        f[rng.integers(0, n, max(1, n // 50))] = np.array([-0.0, np.inf, -np.inf, np.nan])[rng.integers(0, 4)]
        f[-1] = np.frombuffer((0xFFF8000000000123).to_bytes(8, "little"), "<f8")[0]  # NaN with a payload
    for t in ("HLL_4", "HLL_8"):
        for lg_k in (5, 12):
            ours = HyperLogLog(lg_k, t).update(x).update(f)
            theirs = ds.hll_sketch(lg_k, T[t])
            for v in x.tolist() + f.tolist():
                theirs.update(v)
            assert ours.to_bytes() == theirs.serialize_compact()
            assert ours.estimate() == pytest.approx(theirs.get_estimate(), rel=1e-12, abs=1e-12)


def test_update_same_on_every_thread_count(rng):
    x = rng.integers(0, 2**62, 300_000)
    want = HyperLogLog(14, "HLL_6").update(x).to_bytes()
    prev = pyperfcore.get_num_threads()
    try:
        for th in (1, 2, 3):
            pyperfcore.set_num_threads(th)
            assert HyperLogLog(14, "HLL_6").update(x).to_bytes() == want
    finally:
        pyperfcore.set_num_threads(prev)


@given(st.integers(0, 300), st.integers(0, 2**32))
def test_max_bytes(cpu_target, n, seed):
    g = np.random.default_rng(seed)
    a, b = g.integers(0, 64, n).astype(np.uint8), g.integers(0, 64, n).astype(np.uint8)
    want = np.maximum(a, b)
    _core()._max_bytes(a, b, cpu_target)
    assert np.array_equal(a, want)


def test_union_update_many_equals_one_by_one(cpu_target, rng):
    # HLL-mode inputs of several lg_k, LIST/SET inputs, empty ones, repeated ones
    sizes = [(12, 50_000), (14, 80_000), (10, 3), (12, 0), (11, 700), (12, 50_000), (13, 20_000)]
    sketches = [HyperLogLog(lg, t).update(rng.integers(0, 10**9, n))
                for (lg, n), t in zip(sizes, ["HLL_8", "HLL_4", "HLL_6", "HLL_8", "HLL_8", "HLL_6", "HLL_4"])]
    sketches.append(sketches[0])
    for lg_max in (10, 12, 16):
        one = HyperLogLogUnion(lg_max)
        for s in sketches:
            one.update(s)
        many = HyperLogLogUnion(lg_max).update_many(sketches)
        assert many.to_bytes() == one.to_bytes()
        assert many.estimate() == one.estimate()
        assert many.lower_bound(2) == one.lower_bound(2)
        theirs = ds.hll_union(lg_max)
        for s in sketches:
            theirs.update(ds.hll_sketch.deserialize(s.to_bytes()))
            theirs.get_estimate()  # sidesteps DataSketches' shrinking-lg_k quirk (docs/sketches.md)
        assert many.estimate() == pytest.approx(theirs.get_estimate(), rel=1e-12)
    # in two calls (the second starts from an HLL gadget) and with nothing
    u = HyperLogLogUnion(12).update_many(sketches[:3]).update_many(sketches[3:]).update_many([])
    assert u.to_bytes() == HyperLogLogUnion(12).update_many(sketches).to_bytes()


def test_union_update_many_bad_input():
    u = HyperLogLogUnion(12)
    with pytest.raises(TypeError, match="item 1"):
        u.update_many([HyperLogLog(12), "x"])
    with pytest.raises(TypeError):
        u.update_many(HyperLogLog(12))
    assert u.estimate() == 0
