"""Every from_bytes treats its input as untrusted: random bytes, truncations and mutations of valid
images either load into a sketch that answers sensibly or raise ValueError - never another
exception, a crash, a hang or an absurd estimate."""
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pyperfcore.sketches import (FrequentItems, HyperLogLog, KLLSketch, LatencyHistogram, Moments,
                                 RedisHyperLogLog, ReservoirSample)


def _valid_images():
    rng = np.random.default_rng(5)
    out = {}
    for t in ("HLL_4", "HLL_6", "HLL_8"):
        for n, lg_k in ((0, 12), (5, 12), (300, 12), (50_000, 10), (20, 4)):
            h = HyperLogLog(lg_k, t).update(rng.integers(0, 10**9, n))
            out[f"hll-{t}-{n}-{lg_k}-c"] = (HyperLogLog, h.to_bytes())
            out[f"hll-{t}-{n}-{lg_k}-u"] = (HyperLogLog, h.to_bytes(compact=False))
    for n in (0, 50, 100_000):
        out[f"redis-{n}"] = (RedisHyperLogLog, RedisHyperLogLog().update(rng.integers(0, 10**9, n)).to_bytes())
    for n in (0, 10, 5000):
        k = KLLSketch(64, seed=1)
        if n:
            k.update(rng.normal(size=n))
        out[f"kll-{n}"] = (KLLSketch, k.to_bytes())
        out[f"kll-ds-{n}"] = (KLLSketch, k.to_datasketches())  # DataSketches' KLL layout
        out[f"kll-ds-f-{n}"] = (KLLSketch, KLLSketch(64, seed=1).update(rng.normal(size=n).astype(np.float32))
                                .to_datasketches("float"))
    out["moments"] = (Moments, Moments().update(rng.normal(size=100)).to_bytes())
    out["freq"] = (FrequentItems, FrequentItems(8).update(rng.integers(0, 30, 500)).update(["a", "b"]).to_bytes())
    out["lat"] = (LatencyHistogram, LatencyHistogram(0.01, [0.1, 0.5]).update(rng.exponential(0.1, 500)).to_bytes())
    out["res"] = (ReservoirSample, ReservoirSample(16, seed=1).update(rng.normal(size=100)).to_bytes())
    return out


VALID = _valid_images()
KINDS = [HyperLogLog, RedisHyperLogLog, KLLSketch, Moments, FrequentItems, LatencyHistogram, ReservoirSample]


def _check_loaded(obj):
    """A sketch that loaded must answer its queries with sane numbers (or ValueError)."""
    if isinstance(obj, HyperLogLog):
        e = obj.estimate()
        assert math.isfinite(e) and 0 <= e <= 2**64
        for s in (1, 2, 3):
            lo, hi = obj.lower_bound(s), obj.upper_bound(s)
            assert math.isfinite(lo) and math.isfinite(hi) and 0 <= lo
        assert HyperLogLog.from_bytes(obj.to_bytes()).to_bytes() == obj.to_bytes()
        obj.copy().update(np.arange(50))  # an accepted image stays updatable
    elif isinstance(obj, RedisHyperLogLog):
        e = obj.estimate()
        assert 0 <= e <= 2**64
        assert RedisHyperLogLog.from_bytes(obj.to_bytes()).to_bytes() == obj.to_bytes()
        obj.merge(RedisHyperLogLog().update([1, 2, 3]))
    elif isinstance(obj, KLLSketch):
        if obj.n:
            q = obj.quantile([0.0, 0.5, 1.0])
            assert obj.min <= q[1] <= obj.max
            r = obj.rank(q[1])
            assert 0.0 <= r <= 1.0
        obj.update(np.arange(100.0))
    elif isinstance(obj, Moments):
        if obj.n:
            assert obj.min <= obj.mean <= obj.max
            assert obj.variance() >= 0
    elif isinstance(obj, LatencyHistogram):
        if obj.n:
            assert obj.quantile(0.5) >= 0
        obj.prometheus_buckets()
    elif isinstance(obj, FrequentItems):
        obj.frequent_items()
    elif isinstance(obj, ReservoirSample):
        assert obj.sample.size <= obj.k


def _load(cls, data):
    try:
        obj = cls.from_bytes(data)
    except ValueError:
        return
    _check_loaded(obj)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(KINDS), st.binary(max_size=200))
def test_random_bytes(cls, data):
    _load(cls, data)


@settings(max_examples=150)
@given(st.sampled_from(KINDS), st.binary(min_size=8, max_size=64))
def test_random_bytes_with_valid_header(cls, tail):
    # the right magic / preamble followed by garbage reaches the deeper checks
    heads = {HyperLogLog: [b"\x02\x01\x07\x0c\x03\x08\x01\x08", b"\x03\x01\x07\x0c\x05\x08\x00\x09",
                           b"\x0a\x01\x07\x08\x00\x08\x00\x0a", b"\x0a\x01\x07\x08\x04\x08\x00\x02"],
             RedisHyperLogLog: [b"HYLL\x01\x00\x00\x00", b"HYLL\x00\x00\x00\x00"],
             KLLSketch: [b"PKLL\x01\x02\x08\x00"], Moments: [b"PMOM\x01"], FrequentItems: [b"PFIT"],
             LatencyHistogram: [b"PLHG\x01"], ReservoirSample: [b"PRSV\x01"]}
    for h in heads[cls]:
        _load(cls, h + tail)


@pytest.mark.parametrize("name", sorted(VALID))
def test_truncations(name):
    cls, image = VALID[name]
    _check_loaded(cls.from_bytes(image))
    cuts = sorted(set(range(0, min(len(image), 64))) | set(np.linspace(0, len(image) - 1, 40).astype(int).tolist()))
    for cut in cuts:
        _load(cls, image[:cut])


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(VALID)), st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 255)),
                                                min_size=1, max_size=4))
def test_mutations(name, edits):
    cls, image = VALID[name]
    b = bytearray(image)
    for pos, val in edits:
        # half the edits hit the header, where the counts and sizes live
        i = pos % min(len(b), 48) if pos % 2 else pos % len(b)
        b[i] = val
    _load(cls, bytes(b))


@settings(max_examples=100)
@given(st.sampled_from(sorted(VALID)), st.binary(min_size=1, max_size=16))
def test_appended_bytes(name, extra):
    cls, image = VALID[name]
    _load(cls, image + extra)


def test_wrong_types():
    for cls in KINDS:
        with pytest.raises(TypeError):
            cls.from_bytes("not bytes")
        with pytest.raises(TypeError):
            cls.from_bytes(None)
