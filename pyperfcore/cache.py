"""Request cache and feature cache for serving code.

:class:`RequestCache` answers identical requests (same bytes, dtype, shape and model version)
from memory: bounded by bytes (LRU), optional TTL, hit/miss/eviction stats, and concurrent
identical requests computed once (single flight). It composes with the batcher:
``Batcher(fn, cache=RequestCache(...))``.

:class:`FeatureCache` serves online feature lookups: a loader callback on miss (single flight),
TTL, bounded memory, the age of every value served recorded (staleness histogram and reads past
a freshness SLA), and an optional shared second level in Redis (redis-py) so replicas share
features. When Redis is down the local tier keeps serving, the error is counted and nothing
hangs (the client's socket timeouts bound each call).
"""
from __future__ import annotations

import hashlib
import pickle
import sys
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Hashable

from .batching import Histogram

__all__ = ["RequestCache", "FeatureCache", "request_key", "sizeof", "redis_client"]


def redis_client(host: str = "127.0.0.1", port: int = 6379, timeout_s: float = 0.2, **kwargs: Any) -> Any:
    """A redis-py client suited to a cache tier: short socket timeouts and no retries, so a
    Redis outage costs one timeout per call (then the FeatureCache backs off), never a hang."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis(host=host, port=port, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                       retry=Retry(NoBackoff(), 0), **kwargs)

_STALENESS_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600]


def sizeof(value: Any) -> int:
    """Approximate bytes held by a cached value (arrays and tensors by their buffer)."""
    nbytes = getattr(value, "nbytes", None)
    if isinstance(nbytes, int):
        return nbytes + 128
    if hasattr(value, "element_size") and hasattr(value, "numel"):  # torch tensor
        return int(value.element_size() * value.numel()) + 128
    if isinstance(value, (bytes, bytearray, str)):
        return len(value) + 64
    if isinstance(value, (list, tuple)):
        return sys.getsizeof(value) + sum(sizeof(v) for v in value)
    if isinstance(value, dict):
        return sys.getsizeof(value) + sum(sizeof(k) + sizeof(v) for k, v in value.items())
    return sys.getsizeof(value)


def request_key(x: Any, model_version: str = "") -> bytes:
    """A 16-byte BLAKE2b digest of a request: bytes, dtype and shape of arrays/tensors, the
    pickled value of other objects, plus the model version."""
    h = hashlib.blake2b(digest_size=16)
    h.update(model_version.encode())
    h.update(b"\0")
    mod = type(x).__module__
    if mod.startswith("torch"):
        x = x.detach().cpu().contiguous().numpy()
        mod = "numpy"
    if mod == "numpy" and hasattr(x, "dtype") and hasattr(x, "shape"):
        import numpy as np

        a = np.ascontiguousarray(x)
        h.update(b"nd")
        h.update(a.dtype.str.encode())
        h.update(repr(a.shape).encode())
        h.update(memoryview(a).cast("B"))
    elif isinstance(x, (bytes, bytearray, memoryview)):
        h.update(b"b")
        h.update(bytes(x))
    elif isinstance(x, str):
        h.update(b"s")
        h.update(x.encode())
    else:
        try:
            h.update(b"p")
            h.update(pickle.dumps(x, protocol=5))
        except Exception as exc:
            raise TypeError(f"request_key: cannot hash a {type(x).__name__} request ({exc})") from None
    return h.digest()


class RequestCache:
    """LRU cache of model results keyed by request content.

    Parameters
    ----------
    max_bytes
        Bound on the approximate bytes of cached results (LRU eviction beyond it).
    ttl_s
        Seconds a result stays valid (None: until evicted).
    model_version
        Part of every key: a new model version never serves the old one's results.
    clock
        Monotonic seconds (injectable for tests).
    """

    def __init__(self, max_bytes: int = 64 << 20, ttl_s: float | None = None, model_version: str = "",
                 clock: Callable[[], float] = time.monotonic):
        if not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an int >= 0, got {max_bytes!r}")
        if ttl_s is not None and not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0 or None, got {ttl_s!r}")
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.model_version = str(model_version)
        self._clock = clock
        self._data: OrderedDict[bytes, tuple[Any, float, int]] = OrderedDict()  # key -> (value, stored_at, size)
        self._bytes = 0
        self._lock = threading.Lock()
        self._flights: dict[bytes, _Flight] = {}
        self._c = {"hits": 0, "misses": 0, "evictions": 0, "expired": 0, "joined": 0, "too_large": 0}

    def key_for(self, x: Any) -> bytes:
        return request_key(x, self.model_version)

    def get_key(self, key: bytes) -> tuple[bool, Any]:
        with self._lock:
            item = self._data.get(key)
            if item is not None:
                value, stored, size = item
                if self.ttl_s is not None and self._clock() - stored >= self.ttl_s:
                    del self._data[key]
                    self._bytes -= size
                    self._c["expired"] += 1
                else:
                    self._data.move_to_end(key)
                    self._c["hits"] += 1
                    return True, value
            self._c["misses"] += 1
            return False, None

    def put_key(self, key: bytes, value: Any) -> None:
        size = sizeof(value) + len(key)
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[2]
            if size > self.max_bytes:
                self._c["too_large"] += 1
                return
            self._data[key] = (value, self._clock(), size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, _, s) = self._data.popitem(last=False)
                self._bytes -= s
                self._c["evictions"] += 1

    def get(self, x: Any) -> tuple[bool, Any]:
        """(True, result) on a hit, (False, None) on a miss."""
        return self.get_key(self.key_for(x))

    def put(self, x: Any, value: Any) -> None:
        self.put_key(self.key_for(x), value)

    def get_or_compute(self, x: Any, compute: Callable[[Any], Any], timeout: float | None = None) -> Any:
        """The cached result for x, or compute(x) stored; concurrent identical calls compute once
        (the others wait up to ``timeout`` s and get the same result or exception)."""
        key = self.key_for(x)
        hit, value = self.get_key(key)
        if hit:
            return value
        leader, flight = _join_flight(self._lock, self._flights, key)
        if not leader:
            self._count_joined()
            return flight.wait(timeout)
        try:
            value = compute(x)
        except BaseException as exc:
            _end_flight(self._lock, self._flights, key, flight, False, exc)
            raise
        self.put_key(key, value)
        _end_flight(self._lock, self._flights, key, flight, True, value)
        return value

    def _count_joined(self) -> None:
        with self._lock:
            self._c["joined"] += 1

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            total = self._c["hits"] + self._c["misses"]
            return {**self._c, "entries": len(self._data), "bytes": self._bytes, "max_bytes": self.max_bytes,
                    "hit_ratio": self._c["hits"] / total if total else 0.0}


class _Flight:
    __slots__ = ("event", "ok", "value")

    def __init__(self):
        self.event = threading.Event()
        self.ok = False
        self.value: Any = None

    def wait(self, timeout: float | None) -> Any:
        if not self.event.wait(timeout):
            raise TimeoutError(f"waited {timeout} s for an identical request in flight")
        if self.ok:
            return self.value
        raise self.value


def _join_flight(lock: threading.Lock, flights: dict, key: Any) -> tuple[bool, _Flight]:
    with lock:
        f = flights.get(key)
        if f is not None:
            return False, f
        f = flights[key] = _Flight()
        return True, f


def _end_flight(lock: threading.Lock, flights: dict, key: Any, f: _Flight, ok: bool, value: Any) -> None:
    with lock:
        if flights.get(key) is f:
            del flights[key]
    f.ok, f.value = ok, value
    f.event.set()


class FeatureCache:
    """Online feature lookups with a loader on miss, TTL, bounded memory and staleness tracking.

    Parameters
    ----------
    loader
        ``loader(key) -> value`` called on a miss; concurrent misses of one key call it once.
    ttl_s
        Seconds a loaded value is served from the local tier.
    max_entries
        Bound on local entries (LRU).
    freshness_sla_s
        A read of a value older than this counts as ``stale_reads`` (default: ttl_s).
    redis
        Optional redis-py client (e.g. ``redis.Redis(host, port, socket_timeout=0.2)``), the
        shared second level: values are pickled under ``prefix + repr(key)`` with ``redis_ttl_s``.
        Only connect it to a Redis server you trust: values read from it are unpickled.
    serve_stale_on_error
        When the loader fails and an expired value is still held, serve it (counted) instead
        of raising.
    """

    def __init__(self, loader: Callable[[Hashable], Any], ttl_s: float = 60.0, max_entries: int = 100_000,
                 freshness_sla_s: float | None = None, redis: Any = None, redis_ttl_s: float | None = None,
                 prefix: str = "pyperfcore:feat:", serve_stale_on_error: bool = True, load_timeout_s: float = 30.0,
                 redis_backoff_s: float = 5.0,
                 clock: Callable[[], float] = time.time):
        if not callable(loader):
            raise TypeError("loader must be callable")
        if not ttl_s > 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s!r}")
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be an int >= 1, got {max_entries!r}")
        self.loader = loader
        self.ttl_s = float(ttl_s)
        self.max_entries = max_entries
        self.freshness_sla_s = float(freshness_sla_s if freshness_sla_s is not None else ttl_s)
        self.redis = redis
        self.redis_ttl_s = float(redis_ttl_s if redis_ttl_s is not None else ttl_s)
        self.prefix = prefix
        self.serve_stale_on_error = serve_stale_on_error
        self.load_timeout_s = load_timeout_s
        self.redis_backoff_s = float(redis_backoff_s)
        self._redis_down_until = float("-inf")  # after an error Redis is skipped for redis_backoff_s
        self._clock = clock
        self._data: OrderedDict[Hashable, tuple[Any, float]] = OrderedDict()  # key -> (value, loaded_at)
        self._lock = threading.Lock()
        self._flights: dict[Hashable, _Flight] = {}
        self.staleness = Histogram(_STALENESS_BUCKETS)
        self._c = {"hits": 0, "misses": 0, "loads": 0, "load_errors": 0, "joined": 0, "evictions": 0,
                   "stale_reads": 0, "stale_served_on_error": 0, "redis_hits": 0, "redis_misses": 0,
                   "redis_errors": 0, "redis_skipped": 0}

    def _served(self, loaded_at: float, now: float) -> None:
        age = max(0.0, now - loaded_at)
        self.staleness.observe(age)
        if age > self.freshness_sla_s:
            self._c["stale_reads"] += 1

    def _store(self, key: Hashable, value: Any, loaded_at: float) -> None:
        with self._lock:
            self._data[key] = (value, loaded_at)
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)
                self._c["evictions"] += 1

    def _redis_key(self, key: Hashable) -> str:
        return self.prefix + repr(key)

    def _redis_ok(self) -> bool:
        if time.monotonic() < self._redis_down_until:
            self._c["redis_skipped"] += 1
            return False
        return True

    def _redis_failed(self) -> None:
        self._c["redis_errors"] += 1
        self._redis_down_until = time.monotonic() + self.redis_backoff_s

    def _redis_get(self, key: Hashable) -> tuple[bool, Any, float]:
        if not self._redis_ok():
            return False, None, 0.0
        try:
            raw = self.redis.get(self._redis_key(key))
        except Exception:
            self._redis_failed()
            return False, None, 0.0
        if raw is None:
            self._c["redis_misses"] += 1
            return False, None, 0.0
        try:
            loaded_at, value = pickle.loads(raw)
        except Exception:
            self._c["redis_errors"] += 1
            return False, None, 0.0
        self._c["redis_hits"] += 1
        return True, value, float(loaded_at)

    def _redis_set(self, key: Hashable, value: Any, loaded_at: float) -> None:
        if not self._redis_ok():
            return
        try:
            self.redis.set(self._redis_key(key), pickle.dumps((loaded_at, value), protocol=5),
                           px=max(1, int(self.redis_ttl_s * 1000)))
        except Exception:
            self._redis_failed()

    def get(self, key: Hashable) -> Any:
        """The feature value for key: local tier, then Redis, then the loader (single flight)."""
        now = self._clock()
        with self._lock:
            item = self._data.get(key)
            if item is not None and now - item[1] < self.ttl_s:
                self._data.move_to_end(key)
                self._c["hits"] += 1
                self._served(item[1], now)
                return item[0]
            self._c["misses"] += 1
        leader, flight = _join_flight(self._lock, self._flights, key)
        if not leader:
            with self._lock:
                self._c["joined"] += 1
            value, loaded_at = flight.wait(self.load_timeout_s)
            self._served(loaded_at, self._clock())
            return value
        try:
            value, loaded_at = self._load(key, item)
        except BaseException as exc:
            _end_flight(self._lock, self._flights, key, flight, False, exc)
            raise
        _end_flight(self._lock, self._flights, key, flight, True, (value, loaded_at))
        self._served(loaded_at, self._clock())
        return value

    def _load(self, key: Hashable, stale: tuple[Any, float] | None) -> tuple[Any, float]:
        if self.redis is not None:
            hit, value, loaded_at = self._redis_get(key)
            if hit and self._clock() - loaded_at < self.ttl_s:
                self._store(key, value, loaded_at)
                return value, loaded_at
        self._c["loads"] += 1
        try:
            value = self.loader(key)
        except Exception:
            self._c["load_errors"] += 1
            if stale is not None and self.serve_stale_on_error:
                self._c["stale_served_on_error"] += 1
                return stale
            raise
        loaded_at = self._clock()
        self._store(key, value, loaded_at)
        if self.redis is not None:
            self._redis_set(key, value, loaded_at)
        return value, loaded_at

    def invalidate(self, key: Hashable) -> None:
        with self._lock:
            self._data.pop(key, None)
        if self.redis is not None:
            try:
                self.redis.delete(self._redis_key(key))
            except Exception:
                self._c["redis_errors"] += 1

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {**self._c, "entries": len(self._data), "staleness_s": self.staleness.snapshot(),
                    "freshness_sla_s": self.freshness_sla_s}
