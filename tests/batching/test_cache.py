"""Request cache and feature cache (with a real redis-server as the shared second level)."""
import shutil
import socket
import subprocess
import threading
import time

import numpy as np
import pytest

from pyperfcore import batching as B
from pyperfcore.cache import FeatureCache, RequestCache, redis_client, request_key

T = 5.0


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def test_request_key_depends_on_bytes_dtype_shape_and_version():
    a = np.arange(6, dtype=np.float32)
    assert request_key(a) == request_key(a.copy())
    assert request_key(a) != request_key(a.astype(np.float64))
    assert request_key(a) != request_key(a.reshape(2, 3))
    assert request_key(a) != request_key(a, model_version="v2")
    assert request_key(a[::2]) == request_key(np.ascontiguousarray(a[::2]))
    assert request_key("x") != request_key(b"x")
    with pytest.raises(TypeError):
        request_key(lambda: 0)


def test_lru_by_bytes_ttl_and_stats():
    clock = Clock()
    c = RequestCache(max_bytes=3 * (8000 + 128 + 16), ttl_s=10, clock=clock)
    vals = {i: np.full(1000, i, dtype=np.float64) for i in range(4)}
    for i in range(3):
        c.put(i, vals[i])
    assert c.get(0)[0]  # 0 is now most recent
    c.put(3, vals[3])  # evicts 1, the least recently used
    assert not c.get(1)[0] and c.get(0)[0] and c.get(3)[0]
    clock.t += 10
    assert not c.get(0)[0]
    s = c.stats()
    assert s["evictions"] == 1 and s["expired"] == 1 and s["hits"] == 3 and s["misses"] == 2
    c.put("big", np.zeros(10**6))
    assert not c.get("big")[0] and c.stats()["too_large"] == 1


def test_single_flight_threads():
    c = RequestCache()
    calls = []
    gate = threading.Event()

    def compute(x):
        calls.append(x)
        gate.wait(T)
        return x * 2

    out = []
    ts = [threading.Thread(target=lambda: out.append(c.get_or_compute(21, compute, timeout=T))) for _ in range(8)]
    for t in ts:
        t.start()
    time.sleep(0.02)
    gate.set()
    for t in ts:
        t.join(T)
    assert out == [42] * 8 and calls == [21]
    # An exception reaches every waiter, and nothing is cached.
    def boom(x):
        raise ValueError("bad")
    with pytest.raises(ValueError):
        c.get_or_compute(5, boom)
    assert not c.get(5)[0]


def test_batcher_with_cache_computes_identical_requests_once():
    clock = Clock()
    seen = []
    cache = RequestCache(model_version="m1")
    b = B.Batcher(lambda xs: seen.extend(map(int, (x.sum() for x in xs))) or [x.sum() for x in xs],
                  max_batch_size=8, max_delay_ms=1, cache=cache, clock=clock)
    x = np.arange(4.0)
    fs = [b.submit(x.copy()) for _ in range(5)] + [b.submit(np.ones(3))]
    clock.t += 1
    b.step()
    assert [f.result(0) for f in fs] == [6.0] * 5 + [3.0]
    assert seen == [6, 3]  # identical requests in flight computed once
    f = b.submit(x.copy())  # now a cache hit, answered at once
    assert f.done() and f.result(0) == 6.0
    st = b.stats()
    assert st["cache_joined"] == 4 and st["cache_hits"] == 1
    # A failing leader: its followers get the error, nothing is cached.
    b.fn = lambda xs: 1 / 0
    g = [b.submit(np.zeros(2)) for _ in range(3)]
    clock.t += 1
    b.step()
    for h in g:
        with pytest.raises(ZeroDivisionError):
            h.result(0)
    assert not cache.get(np.zeros(2))[0]
    b.close()


def test_feature_cache_ttl_single_flight_staleness():
    clock = Clock()
    loads = []
    gate = threading.Event()

    def loader(k):
        loads.append(k)
        gate.wait(T)
        return {"user": k, "n": len(loads)}

    fc = FeatureCache(loader, ttl_s=10, freshness_sla_s=5, max_entries=2, clock=clock)
    out = []
    ts = [threading.Thread(target=lambda: out.append(fc.get("u1"))) for _ in range(6)]
    for t in ts:
        t.start()
    time.sleep(0.02)
    gate.set()
    for t in ts:
        t.join(T)
    assert len(out) == 6 and all(o == out[0] for o in out) and loads == ["u1"]
    clock.t += 6
    assert fc.get("u1")["n"] == 1  # still within TTL, but past the freshness SLA
    assert fc.stats()["stale_reads"] == 1
    clock.t += 5
    assert fc.get("u1")["n"] == 2  # TTL passed: reloaded
    fc.get("u2")
    fc.get("u3")
    assert len(fc) == 2 and fc.stats()["evictions"] == 1
    snap = fc.stats()["staleness_s"]
    assert snap["count"] == 10 and snap["max"] >= 6


def test_feature_cache_loader_failure_serves_stale_or_raises():
    clock = Clock()
    fail = [False]

    def loader(k):
        if fail[0]:
            raise ConnectionError("feature store down")
        return k.upper()

    fc = FeatureCache(loader, ttl_s=1, clock=clock)
    assert fc.get("a") == "A"
    fail[0] = True
    clock.t += 2
    assert fc.get("a") == "A"  # stale value served, counted
    assert fc.stats()["stale_served_on_error"] == 1
    with pytest.raises(ConnectionError):
        fc.get("b")


def _free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture
def redis_server(tmp_path):
    exe = shutil.which("redis-server") or ("/usr/bin/redis-server" if shutil.os.path.exists("/usr/bin/redis-server")
                                           else None)
    redis = pytest.importorskip("redis")
    if exe is None:
        pytest.skip("redis-server not installed (Debian package redis-server)")
    port = _free_port()
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis_client("127.0.0.1", port, timeout_s=0.5)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            time.sleep(0.01)
    else:
        proc.kill()
        pytest.fail("redis-server did not start")
    yield proc, client, port
    proc.kill()
    proc.wait(T)


def test_feature_cache_redis_shared_between_replicas(redis_server):
    proc, client, port = redis_server
    loads = []
    loader = lambda k: loads.append(k) or f"feat-{k}"  # noqa: E731
    a = FeatureCache(loader, ttl_s=30, redis=client)
    b = FeatureCache(loader, ttl_s=30, redis=client)  # another replica
    assert a.get("k1") == "feat-k1"
    assert b.get("k1") == "feat-k1"  # from Redis, not the loader
    assert loads == ["k1"] and b.stats()["redis_hits"] == 1
    # Redis TTL is set.
    assert 0 < client.pttl(a._redis_key("k1")) <= 30_000


def test_feature_cache_redis_ttl_expires(redis_server):
    proc, client, port = redis_server
    loads = []
    a = FeatureCache(lambda k: loads.append(k) or k, ttl_s=30, redis=client, redis_ttl_s=0.05)
    a.get("x")
    time.sleep(0.1)
    b = FeatureCache(lambda k: loads.append(k) or k, ttl_s=30, redis=client)
    b.get("x")
    assert loads == ["x", "x"]  # expired in Redis: the second replica loaded it


def test_feature_cache_keeps_serving_when_redis_goes_down(redis_server):
    proc, client, port = redis_server
    fc = FeatureCache(lambda k: f"v-{k}", ttl_s=30, redis=client)
    assert fc.get("a") == "v-a"
    proc.kill()
    proc.wait(T)
    t0 = time.monotonic()
    assert fc.get("a") == "v-a"  # local tier
    assert fc.get("b") == "v-b"  # loader, Redis errors counted
    assert fc.get("c") == "v-c"  # Redis is skipped for a while after an error
    assert time.monotonic() - t0 < 3.0
    st = fc.stats()
    assert st["redis_errors"] >= 1 and st["redis_skipped"] >= 1


def test_feature_cache_redis_unreachable_from_start():
    pytest.importorskip("redis")
    client = redis_client("127.0.0.1", _free_port(), timeout_s=0.2)
    fc = FeatureCache(lambda k: k * 2, ttl_s=30, redis=client, redis_backoff_s=0.0)
    t0 = time.monotonic()
    assert fc.get(4) == 8 and fc.get(4) == 8 and fc.get(5) == 10
    assert time.monotonic() - t0 < 3.0
    assert fc.stats()["redis_errors"] >= 2 and fc.stats()["hits"] == 1
