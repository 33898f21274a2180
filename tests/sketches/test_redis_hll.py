"""RedisHyperLogLog against a real redis-server (started here on 127.0.0.1, a free port, no
persistence) and against its own format rules."""
import copy
import pickle
import shutil
import socket
import subprocess
import time

import numpy as np
import pytest

from pyperfcore.sketches import RedisHyperLogLog
from tests import reference as ref

redis = pytest.importorskip("redis")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (Debian package redis-server); "
                    "the Redis compatibility tests need the real server")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 15
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.02)
    try:
        yield client
    finally:
        client.close()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def r(server):
    server.flushdb()
    return server


def _pfadd(r, key, values, chunk=20_000):
    pipe = r.pipeline(transaction=False)
    for i in range(0, len(values), chunk):
        pipe.pfadd(key, *values[i:i + chunk])
    pipe.execute()


def _redis_registers(r, key):
    return np.array(r.execute_command("PFDEBUG", "GETREG", key), dtype=np.uint8)


def _stale(blob: bytes) -> bytes:
    """The same HLL with its cached cardinality marked invalid (Redis must recompute it)."""
    b = bytearray(blob)
    b[15] |= 0x80
    return bytes(b)


@pytest.mark.parametrize("n", [1, 60, 1500, 40_000])
def test_update_equals_pfadd_ints(r, n, rng):
    # integers are hashed as the decimal strings a client sends (negative and 64-bit ones too)
    x = np.concatenate([rng.integers(-(2**63), 2**63 - 1, n // 2, dtype=np.int64),
                        rng.integers(-1000, 1000, n - n // 2)])
    ours = RedisHyperLogLog().update(x)
    _pfadd(r, "k", x.tolist())
    enc = r.execute_command("PFDEBUG", "ENCODING", "k").decode()
    theirs = RedisHyperLogLog.from_bytes(r.get("k"))
    assert np.array_equal(theirs.registers, ours.registers)
    assert r.pfcount("k") == ours.estimate() == theirs.estimate()
    assert ours.encoding == enc == theirs.encoding
    assert np.array_equal(_redis_registers(r, "k"), ours.registers)


def test_update_equals_pfadd_single_int(r):
    ours = RedisHyperLogLog().update([42])
    assert np.array_equal(RedisHyperLogLog().update(np.array([42], dtype=np.uint8)).registers, ours.registers)
    r.execute_command("PFADD", "k", "42")
    assert np.array_equal(RedisHyperLogLog.from_bytes(r.get("k")).registers, ours.registers)
    assert r.pfcount("k") == ours.estimate() == 1


def test_update_equals_pfadd_text(r, rng):
    words = [f"user-{i}-é" for i in rng.integers(0, 10**9, 3000).tolist()]
    raw = [bytes(rng.integers(0, 256, int(rng.integers(0, 12)), dtype=np.uint8)) for _ in range(500)]
    ours = RedisHyperLogLog().update(words).update(raw).update(np.array(words))
    _pfadd(r, "k", [w.encode() for w in words] + raw)
    assert np.array_equal(RedisHyperLogLog.from_bytes(r.get("k")).registers, ours.registers)
    assert r.pfcount("k") == ours.estimate()


def test_uint64_above_int64_hashed_as_unsigned_decimal(r):
    x = np.array([2**64 - 1, 2**63, 7], dtype=np.uint64)
    ours = RedisHyperLogLog().update(x)
    r.execute_command("PFADD", "k", *[str(v) for v in x.tolist()])
    assert np.array_equal(RedisHyperLogLog.from_bytes(r.get("k")).registers, ours.registers)


@pytest.mark.parametrize("n", [0, 10, 2000, 100_000])
def test_our_blob_set_then_pfcount(r, n, rng):
    ours = RedisHyperLogLog().update(rng.integers(0, 10**12, n))
    blob = ours.to_bytes()
    assert blob[4] == (1 if ours.encoding == "sparse" else 0)
    r.set("ours", blob)
    assert r.pfcount("ours") == ours.estimate()  # Redis' cached value: ours
    r.set("stale", _stale(blob))
    assert r.pfcount("stale") == ours.estimate()  # recomputed by Redis from our registers
    r.execute_command("PFMERGE", "merged", "ours")
    assert r.pfcount("merged") == ours.estimate()
    assert np.array_equal(_redis_registers(r, "stale"), ours.registers)


def test_pfmerge_equals_our_merge(r, rng):
    a = rng.integers(0, 50_000, 30_000)
    b = rng.integers(25_000, 200_000, 30_000)
    c = rng.integers(0, 10**9, 500)
    _pfadd(r, "a", a.tolist())
    _pfadd(r, "b", b.tolist())
    mine = RedisHyperLogLog().update(c)
    r.set("c", mine.to_bytes())
    r.execute_command("PFMERGE", "m", "a", "b", "c")
    merged = RedisHyperLogLog.from_bytes(r.get("a")).merge(RedisHyperLogLog.from_bytes(r.get("b"))).merge(mine)
    assert np.array_equal(merged.registers, RedisHyperLogLog.from_bytes(r.get("m")).registers)
    assert merged.estimate() == r.pfcount("m")
    exact = ref.exact_distinct(np.concatenate([a, b, c]))
    assert abs(merged.estimate() - exact) / exact < 4 * 0.0081
    # merging our blob back into a Redis key with PFMERGE agrees with merging in Python
    r.set("back", merged.to_bytes())
    r.execute_command("PFMERGE", "back", "a")
    assert r.pfcount("back") == merged.estimate()


def test_blob_from_redis_reserializes_identically(r, rng):
    for key, n in (("small", 30), ("big", 50_000)):
        _pfadd(r, key, rng.integers(0, 10**9, n).tolist())
        for _ in range(2):  # stale cache after PFADD, then valid cache after PFCOUNT
            raw = r.get(key)
            assert RedisHyperLogLog.from_bytes(raw).to_bytes() == raw
            r.pfcount(key)


def test_empty_matches_redis(r):
    r.execute_command("PFADD", "e")
    assert r.get("e") == _stale(RedisHyperLogLog().to_bytes())  # PFADD leaves the cache invalid
    assert r.pfcount("e") == RedisHyperLogLog().estimate() == 0
    assert r.get("e") == RedisHyperLogLog().to_bytes()  # PFCOUNT caches 0, as our image holds


def test_sparse_promotes_to_dense_like_redis(r, rng):
    # walk through the sparse -> dense switch (hll-sparse-max-bytes 3000) batch by batch
    ours = RedisHyperLogLog()
    for step in range(40):
        x = rng.integers(0, 10**12, 100)
        ours.update(x)
        _pfadd(r, "k", x.tolist())
        enc = r.execute_command("PFDEBUG", "ENCODING", "k").decode()
        assert ours.encoding == enc, f"after {100 * (step + 1)} values: ours {ours.encoding}, Redis {enc}"
    assert ours.encoding == "dense"


# ------------------------------------------------------------------- format rules, no server
def _dense_with(values_at):
    regs = np.zeros(16384, dtype=np.uint8)
    for i, v in values_at.items():
        regs[i] = v
    bits = np.unpackbits(regs[:, None], axis=1, bitorder="little")[:, :6].reshape(-1)
    body = np.packbits(bits, bitorder="little").tobytes()
    return b"HYLL" + b"\x00" * 4 + b"\x00" * 7 + b"\x80" + body


def test_dense_register_values_checked():
    ok = RedisHyperLogLog.from_bytes(_dense_with({0: 51, 16383: 1}))
    assert ok.registers[0] == 51 and ok.registers[16383] == 1 and ok.encoding == "dense"
    for v in (52, 63):  # CVE-2025-32023-style register values no 64-bit hash can produce
        with pytest.raises(ValueError, match="above 51"):
            RedisHyperLogLog.from_bytes(_dense_with({5: v}))


@pytest.mark.parametrize("blob, why", [
    (b"HYLL\x01\x00\x00\x00" + b"\x00" * 8 + bytes([0x7f, 0xff, 0x7f, 0xff]), "past the last register"),
    (b"HYLL\x01\x00\x00\x00" + b"\x00" * 8 + bytes([0x7f, 0xff, 0x80]), "past the last register"),
    (b"HYLL\x01\x00\x00\x00" + b"\x00" * 8 + bytes([0x7f]), "truncated XZERO"),
    (b"HYLL\x01\x00\x00\x00" + b"\x00" * 8 + bytes([0x7f, 0xfe]), "cover 16383"),
    (b"HYLL\x00\x00\x00\x00" + b"\x00" * 8 + b"\x00" * 100, "dense image of"),
    (b"HYLL\x02\x00\x00\x00" + b"\x00" * 8, "unknown encoding"),
    (b"HYLX\x01\x00\x00\x00" + b"\x00" * 8 + bytes([0x7f, 0xff]), "magic"),
    (b"HYLL\x01\x00\x01\x00" + b"\x00" * 8 + bytes([0x7f, 0xff]), "reserved"),
    (b"HYLL", "header"),
])
def test_malformed_blobs_rejected(blob, why):
    with pytest.raises(ValueError, match=why):
        RedisHyperLogLog.from_bytes(blob)


def test_estimate_accuracy_and_bounds(rng):
    for n in (100, 10_000, 300_000):
        x = rng.integers(0, 10**15, n)
        h = RedisHyperLogLog().update(x)
        exact = ref.exact_distinct(x)
        assert abs(h.estimate() - exact) <= 4 * 0.0081 * exact + 1
        assert h.lower_bound(3) <= exact <= h.upper_bound(3)


def test_input_rules_pickle_copy(rng):
    h = RedisHyperLogLog().update(rng.integers(0, 10**6, 5000))
    before = h.to_bytes()
    h.update([]).update(np.array([], dtype=np.int64))
    assert h.to_bytes() == before
    with pytest.raises(TypeError, match="float"):
        h.update(np.array([1.5]))
    with pytest.raises(TypeError):
        h.update(None)
    with pytest.raises(TypeError):
        h.merge(object())
    assert pickle.loads(pickle.dumps(h)).to_bytes() == before
    c = copy.deepcopy(h)
    c.update([10**9 + 1])
    assert h.to_bytes() == before
