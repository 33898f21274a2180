"""Dynamic batching inside your own serving process.

Many threads or asyncio tasks call a model one request at a time; a :class:`Batcher` groups
those requests into batches for the model and hands each caller its own result. The queue and
batch formation are native (``csrc/batching``): priorities, deadlines, keys that never mix,
back-pressure, and batches formed only when a model slot is free. Thread callers wait in native
code with the GIL released; for asyncio callers batches are formed and results delivered on the
event loop's own thread.

Example
-------
>>> b = Batcher(lambda xs: [x * 2 for x in xs], max_batch_size=32, max_delay_ms=2)
>>> b(21)
42
>>> b.close()
"""
from __future__ import annotations

import asyncio
import atexit
import bisect
import collections
import concurrent.futures as cf
import functools
import inspect
import itertools
import math
import os
import threading
import time
import weakref
from typing import Any, Awaitable, Callable, Hashable, Iterable, Sequence

from ._errors import PyperfcoreError
from ._runtime import _core

__all__ = [
    "Batcher",
    "batched",
    "BatcherClosed",
    "QueueFull",
    "RequestTooLarge",
    "BatchResultError",
    "Histogram",
    "pad_batch",
    "bucket_for",
    "DEFAULT_MAX_QUEUE_SIZE",
    "CALLER_RUNS_MAX_MODEL_US",
]

#: Requests a Batcher queues before ``submit`` raises :class:`QueueFull` (``None``: unbounded).
DEFAULT_MAX_QUEUE_SIZE = 10_000

#: Loop driver: the most of ``max_delay`` that the lead for the delay timer's measured wake-up
#: lateness (its 90th percentile) may take off it (see ``Batcher._note_timer_lateness``).
TIMER_LEAD_MAX_FRACTION = 0.25

#: ``caller_runs="auto"``: a ``batcher(x)`` caller runs a due batch itself while the model's mean
#: batch time is at most this (microseconds). Measured on the 2-core CI VM, 8 threads, a model
#: that holds the GIL: callers running batches 5.2x / 2.8x / 2.0x / 1.2x the worker hand-off at
#: 0 / 2 / 5 / 10 us per batch, 0.72x at 20 us and 0.46x at 50 us (workers then batch 3-4).
CALLER_RUNS_MAX_MODEL_US = 10.0

_NO_DEADLINE = 2**63 - 1
# Id spaces (disjoint): single requests count up from 1; loop-buffered asyncio requests
# ("fast path") from _FAST_BASE, consecutive, so a batch of them is one run; bulk submissions
# from _BULK_BASE.
_FAST_BASE = 1 << 61
_BULK_BASE = 1 << 62
_get_running_loop = asyncio.events._get_running_loop
_fut_done = asyncio.Future.done
_REASONS = ("none", "full", "preferred", "delay", "drain")



def _sub_field(name: str) -> property:
    """A Batcher attribute kept on its native submitter (``self._sub.<name>``)."""
    return property(lambda self: getattr(self._sub, name), lambda self, v: setattr(self._sub, name, v))

class BatcherClosed(PyperfcoreError, RuntimeError):
    """The batcher was closed: it takes no new requests (or dropped this one at close)."""


class QueueFull(PyperfcoreError, RuntimeError):
    """The queue holds ``max_queue_size`` requests; raised at once by submit/infer/call."""


class RequestTooLarge(PyperfcoreError, ValueError):
    """A request's ``cost`` exceeds ``max_batch_cost`` and no ``splitter`` was given."""


class BatchResultError(PyperfcoreError, RuntimeError):
    """The model function returned something that cannot be matched to the batch's callers."""


# --------------------------------------------------------------------------- metrics


class Histogram:
    """A cumulative-bucket histogram (Prometheus style) of seconds or sizes.

    ``observe`` is a bisect and two additions; read it with :meth:`snapshot` (``buckets``:
    list of ``(upper_bound, cumulative_count)`` ending with ``inf``; ``sum``; ``count``) or
    :meth:`quantile` (bucket upper bound, an over-estimate within one bucket).
    """

    __slots__ = ("bounds", "_counts", "sum", "count", "max", "_pull")

    def __init__(self, bounds: Sequence[float]):
        b = sorted(float(x) for x in bounds)
        if not b or any(math.isnan(x) for x in b):
            raise ValueError("Histogram needs at least one finite bucket bound")
        self.bounds = b
        self._counts = [0] * (len(b) + 1)
        self.sum = 0.0
        self.count = 0
        self.max = 0.0
        # Called before every read: a batcher whose batches run natively adds what its native
        # runner recorded since the last read.
        self._pull: Callable[[], None] | None = None

    def observe(self, value: float, n: int = 1) -> None:
        self._counts[bisect.bisect_left(self.bounds, value)] += n
        self.sum += value * n
        self.count += n
        if value > self.max:
            self.max = value

    def snapshot(self) -> dict[str, Any]:
        if self._pull is not None:
            self._pull()
        cum = list(itertools.accumulate(self._counts))
        return {"buckets": list(zip(self.bounds + [math.inf], cum)), "sum": self.sum, "count": self.count,
                "max": self.max}

    def quantile(self, q: float) -> float:
        """Upper bound of the bucket holding quantile q (0 when empty; ``max`` in the last bucket)."""
        if self._pull is not None:
            self._pull()
        if self.count == 0:
            return 0.0
        target = q * self.count
        acc = 0
        for i, c in enumerate(self._counts):
            acc += c
            if acc >= target and c:
                return self.bounds[i] if i < len(self.bounds) else self.max
        return self.max

    def mean(self) -> float:
        if self._pull is not None:
            self._pull()
        return self.sum / self.count if self.count else 0.0


# Seconds buckets: fine below 1 ms (where batching delays live), Prometheus-like above.
_TIME_BUCKETS = [25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3,
                 500e-3, 1.0, 2.5, 5.0, 10.0]


def _time_buckets(extra: Iterable[float] | None) -> list[float]:
    """Default seconds buckets plus the caller's bounds (e.g. an SLO threshold), deduplicated."""
    b = set(_TIME_BUCKETS)
    for x in extra or ():
        if not isinstance(x, (int, float)) or isinstance(x, bool) or not (x > 0) or math.isinf(x):
            raise ValueError(f"extra bucket bounds must be finite numbers of seconds > 0, got {x!r}")
        b.add(float(x))
    return sorted(b)


def _size_buckets(max_batch_size: int) -> list[float]:
    b = {1.0, float(max_batch_size)}
    p = 2
    while p < max_batch_size:
        b.add(float(p))
        p *= 2
    return sorted(b)


# --------------------------------------------------------------------------- helpers


def bucket_for(length: int, buckets: Sequence[int]) -> int:
    """The smallest bucket >= length (a good ``key=`` for sequence-length bucketing).

    ValueError when length exceeds the largest bucket or buckets is empty.
    """
    if not buckets:
        raise ValueError("bucket_for: buckets must not be empty")
    bs = sorted(int(b) for b in buckets)
    i = bisect.bisect_left(bs, int(length))
    if i == len(bs):
        raise ValueError(f"bucket_for: length {length} exceeds the largest bucket {bs[-1]}")
    return bs[i]


def pad_batch(items: Sequence[Any], buckets: Sequence[int] | None = None, value: float = 0) -> tuple[Any, Any]:
    """Pads numpy arrays or torch tensors of different lengths (axis 0) into one batch.

    Returns ``(batch, mask)``: batch has shape ``[n, L, *rest]`` where ``L`` is the smallest
    bucket that holds the longest item (the longest length if ``buckets`` is None), and mask is
    a boolean ``[n, L]`` that is True on real positions. All items must share dtype and trailing
    shape. Empty ``items`` gives an empty batch.
    """
    import numpy as np

    if len(items) == 0:
        return np.zeros((0, 0), dtype=np.float32), np.zeros((0, 0), dtype=bool)
    is_torch = type(items[0]).__module__.startswith("torch")
    shapes = [tuple(it.shape) for it in items]
    if any(len(s) == 0 for s in shapes):
        raise ValueError("pad_batch: items must have at least one dimension (the padded length)")
    rest = shapes[0][1:]
    if any(s[1:] != rest for s in shapes):
        raise ValueError(f"pad_batch: items differ in trailing shape: {sorted(set(s[1:] for s in shapes))}")
    longest = max(s[0] for s in shapes)
    length = bucket_for(longest, buckets) if buckets is not None else longest
    n = len(items)
    if is_torch:
        import torch

        dtypes = {it.dtype for it in items}
        if len(dtypes) != 1:
            raise TypeError(f"pad_batch: items have different dtypes {dtypes}")
        batch = torch.full((n, length, *rest), value, dtype=items[0].dtype, device=items[0].device)
        mask = torch.zeros((n, length), dtype=torch.bool, device=items[0].device)
    else:
        items = [np.asarray(it) for it in items]
        dtypes = {it.dtype for it in items}
        if len(dtypes) != 1:
            raise TypeError(f"pad_batch: items have different dtypes {sorted(map(str, dtypes))}")
        batch = np.full((n, length, *rest), value, dtype=items[0].dtype)
        mask = np.zeros((n, length), dtype=bool)
    for i, it in enumerate(items):
        m = it.shape[0]
        batch[i, :m] = it
        mask[i, :m] = True
    return batch, mask


def _stack(inputs: list[Any]) -> Any:
    first = inputs[0]
    if type(first).__module__.startswith("torch"):
        import torch

        return torch.stack(inputs)
    import numpy as np

    return np.stack([np.asarray(x) for x in inputs])


def _check_pos_int(name: str, v: Any, minimum: int = 1, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if not isinstance(v, int) or isinstance(v, bool):
        raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")


def _check_nonneg_number(name: str, v: Any, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        raise TypeError(f"{name} must be a number, got {type(v).__name__}")
    if not (v >= 0) or math.isinf(v):
        raise ValueError(f"{name} must be a finite number >= 0, got {v}")


# --------------------------------------------------------------------------- requests

# Where a request's outcome goes.
_K_CF, _K_WAIT, _K_AIO = 0, 1, 2


class _Req:
    __slots__ = ("x", "kind", "sink", "loop", "ok", "value", "ckey", "followers", "rid")

    def __init__(self, x: Any, kind: int, sink: Any, loop: Any = None):
        self.x = x
        self.kind = kind
        self.sink = sink  # cf.Future | asyncio.Future | None (native waiter)
        self.loop = loop
        self.ok = True
        self.value: Any = None
        self.ckey: Any = None
        self.followers: list[_Req] | None = None
        self.rid = 0

    def cancelled(self) -> bool:
        return self.kind != _K_WAIT and self.sink.done()


class _FdTimer:
    """The loop driver's delay timer where the OS has timerfd (Linux): armed at an absolute
    monotonic deadline in nanoseconds and watched by the loop with ``add_reader``.

    A ``loop.call_at`` timer wakes through the selector's timeout, which epoll takes in whole
    milliseconds rounded up (a 1 ms delay often became 1.3-2 ms); the timerfd wakes the selector
    when it expires. The reader is registered only while armed (it holds the callback).
    """

    __slots__ = ("fd", "loop", "cb", "registered", "armed")

    def __init__(self, loop: asyncio.AbstractEventLoop, cb: Callable[[], None]):
        fd = _core().batching_timerfd()
        if fd < 0:
            raise NotImplementedError("no timerfd on this platform")
        self.fd, self.loop, self.cb = fd, loop, cb
        self.registered = self.armed = False
        try:
            loop.add_reader(fd, self._fired)  # NotImplementedError on loops without readers
            self.registered = True
        except BaseException:
            os.close(fd)
            self.fd = -1
            raise

    def arm(self, deadline_ns: int) -> None:
        _core().batching_timerfd_arm(self.fd, max(1, deadline_ns))
        self.armed = True
        if not self.registered:
            self.loop.add_reader(self.fd, self._fired)
            self.registered = True

    def _fired(self) -> None:
        try:
            os.read(self.fd, 8)
        except BlockingIOError:  # disarmed meanwhile
            return
        self.armed = False
        self.cb()
        if not self.armed and self.registered:
            self.loop.remove_reader(self.fd)
            self.registered = False

    def cancel(self) -> None:
        """Disarms (any thread); the reader goes when the loop next fires it or at close()."""
        if self.fd >= 0:
            _core().batching_timerfd_arm(self.fd, 0)
        self.armed = False

    def close(self) -> None:
        """On the loop's thread."""
        if self.fd < 0:
            return
        if self.registered:
            try:
                self.loop.remove_reader(self.fd)
            except Exception:  # pragma: no cover - loop already closed
                pass
            self.registered = False
        os.close(self.fd)
        self.fd = -1

    def __del__(self) -> None:  # pragma: no cover - close() is the normal way
        if self.fd >= 0 and (not self.registered or self.loop.is_closed()):
            try:
                os.close(self.fd)
            except OSError:
                pass


_live_batchers: "weakref.WeakSet[Batcher]" = weakref.WeakSet()
# Native objects of a parent process, kept alive in a forked child: their mutexes may be held
# by threads that do not exist there, so they are never touched or destroyed again.
_fork_leftovers: list[Any] = []


def _after_fork_in_child() -> None:
    for b in list(_live_batchers):
        b._reset_after_fork()


def _close_all_at_exit() -> None:
    for b in list(_live_batchers):
        try:
            b.close(drain=True, timeout=5.0)
        except Exception:  # pragma: no cover - best effort at exit
            pass


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_close_all_at_exit)


# --------------------------------------------------------------------------- the batcher


class Batcher:
    """Groups single requests into batches for ``fn`` and gives each caller its own result.

    Parameters
    ----------
    fn
        ``fn(requests) -> results``: takes a list of requests (or, with ``stack=True``, one
        stacked numpy array / torch tensor) and returns one result per request, in order. May be
        an ``async def`` (then it runs on the event loop of the asyncio callers).
    max_batch_size
        Most requests in one batch (>= 1).
    max_delay_ms
        How long the oldest queued request may wait for a batch to fill before whatever is
        queued is sent (only while a model slot is free).
    preferred_batch_sizes
        Sizes that are sent at once as soon as the queue fills them (the largest that fits).
    max_batch_cost
        Limit on the sum of ``cost=`` in one batch (e.g. tokens); ``None``: no cost limit. A
        request costlier than this raises :class:`RequestTooLarge` unless ``splitter`` is given.
    max_queue_size
        Queued requests before submit raises :class:`QueueFull` (default 10,000; ``None``: unbounded).
    max_concurrent_batches
        Model slots: batches in flight at once (default 1). A batch is formed only when one is free.
    starvation_ms
        With priorities: a request that has waited this long is served before higher priorities.
    stack
        Pass the model one stacked array/tensor and split its output along axis 0.
    cache
        A :class:`pyperfcore.cache.RequestCache`: identical requests are answered from it and
        concurrent identical requests are computed once.
    splitter, merger
        ``splitter(x, max_cost) -> [(part, cost), ...]`` splits an oversized request;
        ``merger(results) -> result`` joins the parts' results (default: the list).
    target_p99_ms
        SLO-aware batching: learn the model's batch time online and shorten the delay so that
        queue + model latency stays under this p99 target at the current arrival rate.
    clock
        Injected clock (seconds, monotonic). The batcher then runs no thread: call :meth:`step`
        to form and run the batches due at ``clock()`` (deterministic tests of timing policy).
    driver
        ``"auto"`` (asyncio if first used from ``await infer()``, else a worker thread),
        ``"thread"``, ``"asyncio"`` or ``"manual"`` (the default with ``clock``).
    extra_buckets_s
        Extra upper bounds (seconds) for the ``queue_wait_s`` and ``model_time_s`` histograms, so
        that an SLO threshold sits exactly on a bucket edge (Prometheus style).
    caller_runs
        Thread driver only: a ``batcher(x)`` caller whose request finds a batch due (a free
        model slot and a full batch, or ``max_delay_ms`` elapsed, e.g. at once with
        ``max_delay_ms=0``) runs that batch itself on its own thread, GIL held, instead of
        handing it to a worker thread and sleeping; it sleeps (GIL released) only when nothing is
        due. Saves the thread and GIL hand-offs of a round trip; the model then also runs on
        caller threads (still one batch at a time per model slot). ``True``: always;
        ``False``: never (the model runs on the worker threads only); ``"auto"`` (default):
        only while the model's mean batch time (natively run batches, weighted 1/8) is at most
        ``CALLER_RUNS_MAX_MODEL_US`` (10 us). Below that a worker hand-off costs more than the
        batch; above it, batches that workers form (a caller running a batch alone gets batches
        of one when the model holds the GIL) are worth the hand-off. ``"auto"`` needs the native
        runner (no ``stack=``, no ``target_p99_ms``); without it the workers run every batch.
    """

    def __init__(
        self,
        fn: Callable[[Any], Any],
        max_batch_size: int = 32,
        max_delay_ms: float = 5.0,
        *,
        preferred_batch_sizes: Iterable[int] | None = None,
        max_batch_cost: int | None = None,
        max_queue_size: int | None = DEFAULT_MAX_QUEUE_SIZE,
        max_concurrent_batches: int = 1,
        starvation_ms: float | None = None,
        stack: bool = False,
        cache: Any = None,
        splitter: Callable[[Any, int], Sequence[tuple[Any, int]]] | None = None,
        merger: Callable[[list[Any]], Any] | None = None,
        target_p99_ms: float | None = None,
        clock: Callable[[], float] | None = None,
        driver: str = "auto",
        name: str | None = None,
        extra_buckets_s: Iterable[float] | None = None,
        caller_runs: bool | str = "auto",
    ):
        if not callable(fn):
            raise TypeError(f"Batcher: fn must be callable, got {type(fn).__name__}")
        _check_pos_int("max_batch_size", max_batch_size)
        _check_nonneg_number("max_delay_ms", max_delay_ms)
        pref = [] if preferred_batch_sizes is None else list(preferred_batch_sizes)
        for p in pref:
            _check_pos_int("preferred_batch_sizes entries", p)
            if p > max_batch_size:
                raise ValueError(f"preferred batch size {p} exceeds max_batch_size {max_batch_size}")
        _check_pos_int("max_batch_cost", max_batch_cost, allow_none=True)
        _check_pos_int("max_queue_size", max_queue_size, allow_none=True)
        _check_pos_int("max_concurrent_batches", max_concurrent_batches)
        _check_nonneg_number("starvation_ms", starvation_ms, allow_none=True)
        if target_p99_ms is not None:
            _check_nonneg_number("target_p99_ms", target_p99_ms)
            if target_p99_ms <= 0:
                raise ValueError("target_p99_ms must be > 0")
        if splitter is not None and not callable(splitter):
            raise TypeError("splitter must be callable")
        if merger is not None and not callable(merger):
            raise TypeError("merger must be callable")
        if clock is not None and not callable(clock):
            raise TypeError("clock must be a callable returning seconds")
        if not isinstance(caller_runs, bool) and caller_runs != "auto":
            raise TypeError(f"caller_runs must be True, False or 'auto', got {caller_runs!r}")
        if driver not in ("auto", "thread", "asyncio", "manual"):
            raise ValueError("driver must be 'auto', 'thread', 'asyncio' or 'manual'")
        if clock is not None and driver not in ("auto", "manual"):
            raise ValueError("an injected clock runs the batcher manually (driver='manual'); call step()")
        if driver == "manual" and clock is None:
            clock = time.monotonic
        self._time_bounds = _time_buckets(extra_buckets_s)
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "batcher")
        self._is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(getattr(fn, "__call__", None))
        if self._is_async and (clock is not None or driver == "thread"):
            raise ValueError("an async fn runs on an event loop: use driver='auto' or 'asyncio'")
        self.max_batch_size = max_batch_size
        self.max_delay_ms = float(max_delay_ms)
        self.max_batch_cost = max_batch_cost
        self.max_queue_size = max_queue_size
        self.max_concurrent_batches = max_concurrent_batches
        self.stack = bool(stack)
        self.cache = cache
        self.splitter = splitter
        self.merger = merger
        self.target_p99_ms = target_p99_ms
        self.caller_runs = caller_runs
        self._cr_handler = self._caller_runs_batch  # bound once (a call passes them to native code)
        self._cr_outcome = self._slots_outcome
        self._cr_runner: Any = None  # the LoopSubmitter whose native statistics caller-runs batches use
        # batcher(x) on the fast path: None = call_slot (workers run every batch); else
        # call_slot_runs with this inline_max_ns (-1: the caller always runs due batches).
        self._cr_inline_ns: int | None = None
        self._clock = clock
        self._cfg = dict(
            max_batch_size=max_batch_size,
            max_delay_ns=int(self.max_delay_ms * 1e6),
            preferred=sorted(set(pref)),
            max_batch_cost=max_batch_cost or 0,
            max_queue_size=max_queue_size or 0,
            max_concurrent_batches=max_concurrent_batches,
            starvation_ns=int((starvation_ms or 0) * 1e6),
        )
        self._driver = "manual" if clock is not None else driver
        self._new_native()
        self._lock = threading.Lock()  # guards driver start-up, close and the cache's in-flight table
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None
        self._reset_fast()
        self._timer: asyncio.TimerHandle | _FdTimer | None = None  # armed delay timer
        self._timer_ns = _NO_DEADLINE
        self._fdtimer: _FdTimer | bool | None = None  # None: not tried yet; False: unavailable
        # Loop driver: the delay timer's recent wake-up latenesses (ns), their weighted mean, and
        # the lead taken off max_delay to make up for them (see _note_timer_lateness).
        self._timer_lates: collections.deque[int] = collections.deque(maxlen=64)
        self._timer_late_ns = 0.0
        self._timer_lead_ns = 0
        self._closed = False
        self._ids = itertools.count(1)  # single requests (next() is atomic under the GIL)
        self._bulk_next = _BULK_BASE  # contiguous ranges for push_many
        self._key_ids: dict[Hashable, int] = {None: 0}
        self._cache_inflight: dict[Any, _Req] = {}
        self._pid = os.getpid()
        self._init_stats()
        self._slo = _SloPolicy(self) if target_p99_ms is not None else None
        _live_batchers.add(self)

    # ----------------------------------------------------------------- set-up

    def _new_native(self) -> None:
        c = self._cfg
        self._q = _core().BatchQueue(c["max_batch_size"], c["max_delay_ns"], c["preferred"], c["max_batch_cost"],
                                     c["max_queue_size"], c["max_concurrent_batches"], c["starvation_ns"])
        self._waits = _core().Completions()
        self._pending: dict[int, _Req] = {}

    def _reset_fast(self) -> None:
        """State of the loop fast path (touched on the loop's thread only).

        Default-attribute ``infer()`` calls from the driving loop append (input, future) here and
        get the future back; once per loop iteration the new ones are pushed with one native call
        as consecutive ids. ``_ff[i]`` is the future of id ``_fbase + i``; ids below
        ``_fpushed`` are in the native queue. They leave it in id order (one FIFO: key 0,
        priority 0), so a batch ending at index e retires every index below e (``_fdead``; the
        retired prefix is deleted once it is the larger half, so a long queue costs O(1) per
        batch). ``None`` marks an entry already answered (cancelled and swept, or rejected);
        ``_fnone`` counts them above ``_fdead``.
        """
        if "_sub" in self.__dict__:
            self._fold_native_stats()
        self._native_drive: Callable[..., Any] | None = None  # batching_drive_fast, when it applies
        self.__dict__.pop("infer", None)  # the per-loop fast infer / infer_future (see _enable_fast)
        self.__dict__.pop("infer_future", None)
        self._call_fast = False  # batcher(x) may skip its checks (thread driver running, no cache)
        self._fast_loop: asyncio.AbstractEventLoop | None = None
        self._fx: list[Any] = []
        self._ff: list[Any] = []
        # The per-request step in native code (one vectorcall; see LoopSubmitter in
        # batching_bind.cpp); it also holds the scheduled flag and the admission limit.
        self._sub = _core().LoopSubmitter(self._fx, self._ff)
        self._fbase = _FAST_BASE
        self._fpushed = _FAST_BASE
        self._fdead = 0
        self._fnone = 0
        self._fast_limit = 1 << 62

    def _enable_fast(self, loop: asyncio.AbstractEventLoop) -> None:
        """Installs ``infer`` / ``infer_future`` for the driving loop as instance attributes.

        ``infer_future`` is the native :class:`LoopSubmitter` itself: one vectorcall per request
        that checks (one positional argument, the loop's thread, below the admission limit),
        makes the future, appends (x, future) to the two lists and schedules the driver once
        per loop iteration; anything else goes to the checked path. ``infer`` is a coroutine
        around the same native step (a coroutine is what create_task/TaskGroup need).
        """
        self._update_fast_limit()
        self._fast_loop = loop
        sub = self._sub
        slow = self._infer
        me = self
        # The loop's thread, not _get_running_loop() (measured ~5% of a round trip): only the
        # loop's thread can await these futures; from a loop that replaced a closed one on the
        # same thread, call_soon raises "Event loop is closed" at the call.
        tid = self._loop_thread_id
        get_ident = threading.get_ident
        ff = self._ff

        def slow_kw(x: Any, timeout: float | None = None, priority: int = 0, key: Hashable = None,
                    cost: int = 1) -> Awaitable[Any]:
            if timeout is None and priority == 0 and key is None and cost == 1 and type(priority) is int and \
                    type(cost) is int and sub.enabled and len(ff) < sub.limit and get_ident() == tid:
                return sub(x)  # default values spelled out: still the fast path
            return slow(x, timeout, priority, key, cost)

        def future_fallback(x: Any, /, **kw: Any) -> Any:
            return _as_future(slow_kw(x, **kw))

        aw = sub.aw

        async def infer(x: Any, /, **kw: Any) -> Any:
            # The checks run when the coroutine starts, i.e. on the thread that awaits it.
            if kw:
                return await slow_kw(x, **kw)
            return await aw(x)

        # Futures straight from the loop's own future type when the loop does not override
        # create_future (the base loop's create_future is a Python-level call around it).
        create = loop.create_future
        if getattr(type(loop), "create_future", None) is asyncio.BaseEventLoop.create_future:
            create = functools.partial(asyncio.Future, loop=loop)
        sub.enable(create, loop.call_soon, me._drive, future_fallback, slow_kw, tid, infer)
        # A sync model without stack= or SLO bookkeeping: fast-path batches run natively
        # (batching_drive_fast), statistics folded in when read.
        self._native_drive = None
        if not self._is_async and not self.stack and self._slo is None:
            self._configure_native_stats()
            self._native_drive = _core().batching_drive_fast
        # `infer` itself: the native entry (one vectorcall; on the fast path the request is queued
        # at the call and an InferCall, a coroutine for asyncio around its future, comes back;
        # anything else gets the coroutine above, checked when awaited).
        _register_infer_call()
        entry = sub.coroutine_entry()
        functools.update_wrapper(entry, Batcher.infer)
        _mark_coroutine_function(entry)
        sub.__doc__ = Batcher.infer_future.__doc__
        sub.__wrapped__ = Batcher.infer_future
        self.infer = entry  # type: ignore[method-assign]
        self.infer_future = sub  # type: ignore[method-assign]

    def _disable_fast(self) -> None:
        self._call_fast = False
        self._fast_loop = None
        self._sub.disable()
        self.__dict__.pop("infer", None)
        self.__dict__.pop("infer_future", None)

    # Shared with the native submitter (which reads them per request): stored on self._sub.
    _drive_scheduled = _sub_field("scheduled")
    _fast_limit = _sub_field("limit")
    _fbase = _sub_field("fbase")
    _fpushed = _sub_field("fpushed")
    _fdead = _sub_field("fdead")
    _fnone = _sub_field("fnone")

    def _configure_native_stats(self) -> None:
        """Native runners record batch statistics in self._sub; the histograms fold them on read."""
        self._sub.configure_runner(asyncio.Future, asyncio.Future.done, asyncio.Future.set_result,
                                   asyncio.InvalidStateError, self._batch_sizes.bounds, self._queue_wait.bounds,
                                   self.max_queue_size or 0)
        for h in (self._batch_sizes, self._queue_wait, self._model_time):
            h._pull = self._fold_native_stats

    def _fold_native_stats(self) -> None:
        """Adds the native batch runner's statistics (kept since the last fold) to the Python ones."""
        t = self._sub.take_stats()
        if t is None:
            return
        ex, inf, canc, *hs = t
        c = self._py_counts
        c["executions"] += ex
        c["inferences"] += inf
        c["cancellations"] += canc
        for h, (counts, hsum, hmax, hcount) in zip((self._batch_sizes, self._queue_wait, self._model_time), hs):
            hc = h._counts
            for i, k in enumerate(counts):
                if k:
                    hc[i] += k
            h.sum += int(hsum) if h is self._batch_sizes else hsum
            h.count += hcount
            if hcount and hmax > h.max:
                h.max = int(hmax) if h is self._batch_sizes else hmax

    def _init_stats(self) -> None:
        self._batch_sizes = Histogram(_size_buckets(self.max_batch_size))
        self._queue_wait = Histogram(self._time_bounds)
        self._model_time = Histogram(self._time_bounds)
        self._failures: dict[str, int] = {}
        self._py_counts = {"timeouts": 0, "cancellations": 0, "cache_hits": 0, "cache_joined": 0, "executions": 0,
                           "inferences": 0, "rejected_full": 0, "rejected_closed": 0, "rejected_cost": 0}

    def _reset_after_fork(self) -> None:
        """In a forked child: the parent's worker threads and waiters do not exist here."""
        _fork_leftovers.extend([self._q, self._waits])
        self._new_native()
        self._timer_lates.clear()
        self._timer_late_ns = 0.0
        self._timer_lead_ns = 0
        self._lock = threading.Lock()
        self._threads = []
        self._loop = None
        self._loop_thread_id = None
        self._reset_fast()
        self._timer = None
        self._timer_ns = _NO_DEADLINE
        self._fdtimer = None  # the parent's belongs to the parent's loop
        self._cr_runner = None  # set again when the thread driver restarts
        self._cr_inline_ns = None
        self._cache_inflight = {}
        self._pid = os.getpid()
        if self._driver in ("thread", "asyncio") and self._clock is None:
            self._driver = "auto"
        if self._closed:  # a closed batcher stays closed in the child
            self._q.close(False)

    def _now_ns(self) -> int:
        if self._clock is not None:
            return int(self._clock() * 1e9)
        return time.monotonic_ns()

    def _ensure_driver(self, want_loop: asyncio.AbstractEventLoop | None) -> None:
        """Starts the driver on first use: the caller's event loop, or worker threads."""
        if self._driver in ("thread", "manual") and (self._threads or self._driver == "manual"):
            return
        if self._driver == "asyncio" and self._loop is not None:
            return
        with self._lock:
            if self._closed:
                return
            if self._driver == "auto":
                self._driver = "asyncio" if want_loop is not None else "thread"
            if self._driver == "asyncio" and self._loop is None:
                if want_loop is None:
                    raise RuntimeError(
                        "this Batcher is driven by an event loop (driver='asyncio'); make the first call with "
                        "`await batcher.infer(x)` from that loop")
                self._loop = want_loop
                self._loop_thread_id = threading.get_ident()
                if self.cache is None:
                    self._enable_fast(want_loop)
            elif self._driver == "thread" and not self._threads:
                # One more thread than model slots, so expired requests are answered promptly
                # even while every slot is busy with the model.
                for i in range(self.max_concurrent_batches + 1):
                    t = threading.Thread(target=self._thread_main, name=f"pyperfcore-batcher-{self.name}-{i}",
                                         daemon=True)
                    t.start()
                    self._threads.append(t)
                self._call_fast = self.cache is None
                if not self.stack and self._slo is None:
                    # Batches made only of plain batcher(x) calls run natively, on the worker
                    # (inside its wait loop) or, with caller_runs, on the caller's thread.
                    self._configure_native_stats()
                    self._cr_runner = self._sub
                if self.caller_runs is True:
                    self._cr_inline_ns = -1
                elif self.caller_runs == "auto" and self._cr_runner is not None:
                    self._cr_inline_ns = int(CALLER_RUNS_MAX_MODEL_US * 1000)
                else:
                    self._cr_inline_ns = None

    # ----------------------------------------------------------------- submission

    def _key_id(self, key: Hashable) -> int:
        kid = self._key_ids.get(key)
        if kid is None:
            try:
                hash(key)
            except TypeError:
                raise TypeError(f"key must be hashable, got {type(key).__name__}") from None
            with self._lock:
                kid = self._key_ids.setdefault(key, len(self._key_ids))
        return kid

    def _check_attrs(self, timeout: float | None, priority: int, cost: int) -> None:
        if timeout is not None:
            if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or math.isnan(timeout):
                raise TypeError(f"timeout must be a number of seconds or None, got {timeout!r}")
            if timeout < 0:
                raise ValueError(f"timeout must be >= 0, got {timeout}")
        if not isinstance(priority, int) or isinstance(priority, bool) or not -(2**31) <= priority < 2**31:
            raise TypeError(f"priority must be a 32-bit int, got {priority!r}")
        if not isinstance(cost, int) or isinstance(cost, bool) or cost < 0:
            raise ValueError(f"cost must be an int >= 0, got {cost!r}")

    def _call_model(self, xs: Any) -> Any:
        """fn(xs) with this thread marked as running this batcher's model (see _reentrant_error)."""
        tok = self._q.enter_model()
        try:
            return self.fn(xs)
        finally:
            self._q.exit_model(tok)

    def _reentrant_error(self) -> RuntimeError:
        return RuntimeError(
            f"batcher {self.name!r}: a blocking call from inside its own model would wait for the model slot "
            "its batch holds (max_concurrent_batches=1); call the model code directly, or use "
            "max_concurrent_batches >= 2")

    def _raise_push(self, st: int, cost: int) -> None:
        if st == -3:
            raise self._reentrant_error()
        if st == 1:
            self._py_counts["rejected_full"] += 1
            raise QueueFull(f"batcher {self.name!r}: queue holds max_queue_size={self.max_queue_size} requests")
        if st == 2:
            self._py_counts["rejected_closed"] += 1
            raise BatcherClosed(f"batcher {self.name!r} is closed")
        if st == 3:
            self._py_counts["rejected_cost"] += 1
            raise RequestTooLarge(f"request cost {cost} exceeds max_batch_cost={self.max_batch_cost}; pass "
                                  "splitter= to split such requests")
        raise RuntimeError(f"native queue refused a request (status {st})")  # pragma: no cover

    def _enqueue(self, req: _Req, key: Hashable, priority: int, cost: int, timeout: float | None) -> int:
        """Registers req and pushes it natively; raises QueueFull/BatcherClosed/RequestTooLarge."""
        if self._closed:
            self._py_counts["rejected_closed"] += 1
            raise BatcherClosed(f"batcher {self.name!r} is closed")
        if os.getpid() != self._pid:  # fork without the at-fork hook (should not happen)
            self._reset_after_fork()
        kid = self._key_id(key)
        now = self._now_ns()
        deadline = _NO_DEADLINE if timeout is None else now + int(timeout * 1e9)
        rid = next(self._ids)
        req.rid = rid
        self._pending[rid] = req
        if req.kind == _K_WAIT:
            self._waits.expect(rid)
        st = self._q.push(rid, kid, priority, cost, deadline, now)
        if st:
            self._pending.pop(rid, None)
            if req.kind == _K_WAIT:
                self._waits.forget(rid)
            self._raise_push(st, cost)
        return rid

    def _reserve_ids(self, n: int) -> int:
        with self._lock:
            first = self._bulk_next
            self._bulk_next += n
        return first

    def _cache_lookup(self, x: Any, req: _Req) -> bool:
        """True if req was answered from the cache or joined an identical request in flight."""
        c = self.cache
        ckey = c.key_for(x)
        hit, value = c.get_key(ckey)
        if hit:
            self._py_counts["cache_hits"] += 1
            req.value = value
            self._deliver_now(req)
            return True
        with self._lock:
            leader = self._cache_inflight.get(ckey)
            if leader is not None:
                if leader.followers is None:
                    leader.followers = []
                leader.followers.append(req)
                self._py_counts["cache_joined"] += 1
                c._count_joined()
                return True
            self._cache_inflight[ckey] = req
        req.ckey = ckey
        return False

    def _deliver_now(self, req: _Req) -> None:
        if req.kind == _K_CF:
            _set_cf(req.sink, req.ok, req.value)
        elif req.kind == _K_AIO:
            _set_aio(req.sink, req.ok, req.value)

    def _split_submit(self, x: Any, key: Hashable, priority: int, cost: int, timeout: float | None) -> cf.Future:
        parts = list(self.splitter(x, self.max_batch_cost))
        if not parts:
            raise ValueError("splitter returned no parts")
        for p in parts:
            if not (isinstance(p, tuple) and len(p) == 2):
                raise TypeError("splitter must return a list of (part, cost) pairs")
            if p[1] > self.max_batch_cost:
                raise RequestTooLarge(f"splitter produced a part of cost {p[1]} > max_batch_cost={self.max_batch_cost}")
        futs = [self.submit(part, timeout=timeout, priority=priority, key=key, cost=pc) for part, pc in parts]
        out: cf.Future = cf.Future()
        merger = self.merger or list
        left = [len(futs)]
        lock = threading.Lock()

        def done(_f: cf.Future) -> None:
            with lock:
                left[0] -= 1
                last = left[0] == 0
            if not last or out.done():
                return
            errs = [f for f in futs if f.cancelled() or f.exception() is not None]
            if errs:
                f = errs[0]
                _set_cf(out, False, cf.CancelledError() if f.cancelled() else f.exception())
                return
            try:
                _set_cf(out, True, merger([f.result() for f in futs]))
            except Exception as exc:
                _set_cf(out, False, exc)

        for f in futs:
            f.add_done_callback(done)
        return out

    def submit(self, x: Any, *, timeout: float | None = None, priority: int = 0, key: Hashable = None,
               cost: int = 1) -> cf.Future:
        """Queues one request; returns a ``concurrent.futures.Future`` of its result.

        Raises :class:`QueueFull`, :class:`BatcherClosed` or :class:`RequestTooLarge` at once
        (never as a failed future). If the request waits past ``timeout`` seconds it never
        reaches the model and the future fails with ``TimeoutError``. Cancelling the future
        removes the request from the queue.
        """
        self._check_attrs(timeout, priority, cost)
        if self.max_batch_cost is not None and cost > self.max_batch_cost and self.splitter is not None:
            return self._split_submit(x, key, priority, cost, timeout)
        fut: cf.Future = cf.Future()
        req = _Req(x, _K_CF, fut)
        if self.cache is not None and self._cache_lookup(x, req):
            return fut
        if self._driver != "asyncio":
            self._ensure_driver(None)
        try:
            rid = self._enqueue(req, key, priority, cost, timeout)
        except BaseException:
            self._abandon_cache(req)
            raise
        fut.add_done_callback(functools.partial(self._on_cf_done, rid))
        self._kick()
        return fut

    def submit_many(self, xs: Sequence[Any], *, timeout: float | None = None, priority: int = 0,
                    key: Hashable = None, cost: int = 1) -> list[cf.Future]:
        """Queues many requests with one native call (all or nothing against max_queue_size)."""
        self._check_attrs(timeout, priority, cost)
        xs = list(xs)
        if not xs:
            return []
        if self._closed:
            self._py_counts["rejected_closed"] += len(xs)
            raise BatcherClosed(f"batcher {self.name!r} is closed")
        if self.cache is not None or (self.max_batch_cost is not None and cost > self.max_batch_cost):
            return [self.submit(x, timeout=timeout, priority=priority, key=key, cost=cost) for x in xs]
        if self._driver != "asyncio":
            self._ensure_driver(None)
        kid = self._key_id(key)
        now = self._now_ns()
        deadline = _NO_DEADLINE if timeout is None else now + int(timeout * 1e9)
        n = len(xs)
        first = self._reserve_ids(n)
        futs = [cf.Future() for _ in range(n)]
        reqs = [_Req(x, _K_CF, f) for x, f in zip(xs, futs)]
        for i, r in enumerate(reqs):
            r.rid = first + i
        self._pending.update(zip(range(first, first + n), reqs))
        st = self._q.push_many(first, n, kid, priority, cost, deadline, now)
        if st:
            for i in range(first, first + n):
                self._pending.pop(i, None)
            self._raise_push(st, cost)
        for i, f in enumerate(futs):
            f.add_done_callback(functools.partial(self._on_cf_done, first + i))
        self._kick()
        return futs

    def __call__(self, x: Any, /, **kw: Any) -> Any:
        """``batcher(x, *, timeout=None, priority=0, key=None, cost=1)``: runs one request and
        returns its result; the thread waits in native code (GIL released).

        Raises the model's exception, ``TimeoutError`` after ``timeout`` seconds, or
        QueueFull/BatcherClosed/RequestTooLarge at once.
        """
        if kw or not self._call_fast:
            return self._call(x, **kw)
        # Fast path: thread driver running, no cache, default attributes (set in _ensure_driver,
        # cleared by close() and after fork; _closed is checked natively by the push). One
        # native call with the GIL released: the request's input and result travel in a slot on
        # the native stack (no Python object or table entry per request).
        try:
            cr = self._cr_inline_ns
            if cr is not None:
                return self._q.call_slot_runs(self._waits, x, self._cr_handler, self._cr_runner, self.fn,
                                              self._cr_outcome, cr)
            return self._q.call_slot(x)
        except _core()._BatchSlotStatus as e:
            st = int(str(e))
        if st == -2:
            raise BatcherClosed(f"batcher {self.name!r} was closed without draining")
        self._raise_push(st, 1)

    def _call(self, x: Any, timeout: float | None = None, priority: int = 0, key: Hashable = None,
              cost: int = 1) -> Any:
        if self._driver in ("manual", "asyncio") or self.cache is not None or (
                self.splitter is not None and self.max_batch_cost is not None and cost > self.max_batch_cost):
            if self._driver == "asyncio" and self._loop_thread_id == threading.get_ident():
                raise RuntimeError("batcher(x) would block its own event loop; use `await batcher.infer(x)`")
            if self.max_concurrent_batches == 1 and self._q.in_model():
                raise self._reentrant_error()
            return self.submit(x, timeout=timeout, priority=priority, key=key, cost=cost).result(timeout)
        if timeout is not None or priority != 0 or cost != 1 or type(priority) is not int:
            self._check_attrs(timeout, priority, cost)
        if not self._threads:
            self._ensure_driver(None)
            if self._driver != "thread":  # another thread made it loop-driven meanwhile
                return self.submit(x, timeout=timeout, priority=priority, key=key, cost=cost).result(timeout)
        if self._closed:
            self._py_counts["rejected_closed"] += 1
            raise BatcherClosed(f"batcher {self.name!r} is closed")
        # No getpid() per call (a syscall, ~5% of a caller's GIL time): every fork that leaves a
        # usable interpreter in the child runs PyOS_AfterFork_Child and so our at-fork hook.
        kid = 0 if key is None else self._key_id(key)
        now = time.monotonic_ns()
        deadline = _NO_DEADLINE if timeout is None else now + int(timeout * 1e9)
        req = _Req(x, _K_WAIT, None)
        rid = req.rid = next(self._ids)
        self._pending[rid] = req
        # Register, push and wait (GIL released) in one native call.
        st = self._q.push_wait(self._waits, rid, kid, priority, cost, deadline, now,
                               -1 if timeout is None else int(timeout * 1e9))
        if st == 0:
            if req.ok:
                return req.value
            raise req.value
        if st > 0 or st == -3:
            self._pending.pop(rid, None)
            self._raise_push(st, cost)
        # Timed out while queued or in the model: whoever pops the request first owns it.
        if self._pending.pop(rid, None) is not None:
            self._q.cancel(rid)
        self._py_counts["timeouts"] += 1
        raise TimeoutError(f"batcher {self.name!r}: no result within {timeout} s")

    async def infer(self, x: Any, *, timeout: float | None = None, priority: int = 0, key: Hashable = None,
                    cost: int = 1) -> Any:
        """``await batcher.infer(x)`` from asyncio: one request's result.

        A coroutine function (``asyncio.create_task``, ``gather``, ``wait_for`` and
        ``TaskGroup`` all take it). Batches are formed and results delivered on the event loop's
        thread. Cancelling the awaiting task means the request never reaches the model (its queue
        place is freed when its batch forms, or at once when the queue would otherwise be full).
        Errors (``QueueFull``, ``BatcherClosed``, ``RequestTooLarge``, bad arguments) are raised
        by the ``await``. Once the batcher is bound to a loop (its first request, or
        :meth:`start`), ``batcher.infer`` on that loop is a native callable whose ``infer(x)``
        returns an ``InferCall``: a coroutine for asyncio (``asyncio.iscoroutine`` is true) with
        no Python frame per request, queued when first awaited.
        """
        loop = self._fast_loop
        if (loop is not None and timeout is None and priority == 0 and key is None and cost == 1
                and len(self._ff) < self._fast_limit and _get_running_loop() is loop):
            return await self._push_fast(loop, x)
        return await self._infer(x, timeout, priority, key, cost)

    def infer_future(self, x: Any, *, timeout: float | None = None, priority: int = 0, key: Hashable = None,
                     cost: int = 1) -> "asyncio.Future[Any]":
        """Like :meth:`infer` but returns an ``asyncio.Future`` (call it from a running loop).

        On the fast path (the driving loop's thread, default ``timeout``/``priority``/``key``/
        ``cost``, no cache) no coroutine is made: the request is queued at the call and the future
        itself comes back. Otherwise the checked path runs as a task. ``QueueFull`` and
        ``BatcherClosed`` are raised at the call on the fast path and by the future otherwise.
        Cancelling the future drops the request (it never reaches the model).
        """
        loop = self._fast_loop
        if (loop is not None and timeout is None and priority == 0 and key is None and cost == 1
                and len(self._ff) < self._fast_limit and _get_running_loop() is loop):
            return self._push_fast(loop, x)
        loop = asyncio.get_running_loop()  # first: no coroutine is made (and left unawaited) without one
        return loop.create_task(self._infer(x, timeout, priority, key, cost))

    def _push_fast(self, loop: asyncio.AbstractEventLoop, x: Any) -> "asyncio.Future[Any]":
        f = loop.create_future()
        self._fx.append(x)
        self._ff.append(f)
        if not self._drive_scheduled:
            self._drive_scheduled = True
            loop.call_soon(self._drive)
        return f

    async def _infer(self, x: Any, timeout: float | None, priority: int, key: Hashable, cost: int) -> Any:
        loop = asyncio.get_running_loop()
        self._check_attrs(timeout, priority, cost)
        if self._driver != "asyncio" or self._loop is not loop:
            if self._driver in ("auto", "asyncio"):
                self._ensure_driver(loop)
            if self._loop is not loop or self.splitter is not None and self.max_batch_cost is not None and \
                    cost > self.max_batch_cost:
                # Driven by threads or by another loop: bridge the concurrent future.
                return await asyncio.wrap_future(self.submit(x, timeout=timeout, priority=priority, key=key,
                                                             cost=cost))
        fut = loop.create_future()
        req = _Req(x, _K_AIO, fut, loop)
        if self.cache is not None and self._cache_lookup(x, req):
            return await fut
        try:
            try:
                rid = self._enqueue(req, key, priority, cost, timeout)
            except QueueFull:
                # Cancelled fast-path requests may still hold places: free them and retry once.
                if not self._sweep_fast():
                    raise
                self._py_counts["rejected_full"] -= 1
                rid = self._enqueue(req, key, priority, cost, timeout)
        except BaseException:
            self._abandon_cache(req)
            raise
        if not self._drive_scheduled:
            self._drive_scheduled = True
            loop.call_soon(self._drive)
        if timeout is not None:
            loop.call_later(timeout, _expire_aio, fut, self, timeout)
        try:
            return await fut
        except asyncio.CancelledError:
            if self._pending.pop(rid, None) is not None:
                self._q.cancel(rid)
                self._abandon_cache(req)
                if self._fpushed != self._fbase + len(self._ff):
                    self._kick()  # buffered fast-path requests may fit now
            self._py_counts["cancellations"] += 1
            raise

    def _sweep_fast(self) -> int:
        """Loop thread: removes cancelled fast-path requests from the native queue; returns how many."""
        if self._loop is None or threading.get_ident() != self._loop_thread_id:
            return 0
        ff, fx, q, base = self._ff, self._fx, self._q, self._fbase
        n = 0
        for i in range(self._fdead, min(len(ff), self._fpushed - base)):
            f = ff[i]
            if f is not None and f.done() and q.cancel(base + i):
                ff[i] = fx[i] = None
                n += 1
        if n:
            self._fnone += n
            self._py_counts["cancellations"] += n
            self._update_fast_limit()
        return n

    # ----------------------------------------------------------------- cancellation

    def _on_cf_done(self, rid: int, fut: cf.Future) -> None:
        if fut.cancelled():
            req = self._pending.pop(rid, None)
            if req is not None:
                self._q.cancel(rid)
                self._abandon_cache(req)
            self._py_counts["cancellations"] += 1

    def _abandon_cache(self, req: _Req) -> None:
        """A cache leader that will not run hands its followers to a fresh request."""
        if req.ckey is None:
            return
        with self._lock:
            if self._cache_inflight.get(req.ckey) is req:
                del self._cache_inflight[req.ckey]
        followers, req.followers = req.followers or [], None
        for f in followers:
            if f.kind == _K_AIO and f.loop is not None:
                f.loop.call_soon_threadsafe(_resubmit_aio, self, f)
            else:
                try:
                    self._resubmit(f)
                except Exception as exc:
                    f.ok, f.value = False, exc
                    self._deliver_now(f)

    def _resubmit(self, f: _Req) -> None:
        g = self.submit(f.x)
        if f.kind == _K_CF:
            g.add_done_callback(lambda gf, tgt=f.sink: _chain_cf(gf, tgt))

    # ----------------------------------------------------------------- drivers

    def _kick(self) -> None:
        """After a thread push into a loop-driven batcher: make the loop look at the queue."""
        if self._driver == "asyncio" and self._loop is not None and threading.get_ident() != self._loop_thread_id:
            try:
                self._loop.call_soon_threadsafe(self._drive)
            except RuntimeError:  # loop closed: the requests stay queued until close()
                pass
        elif self._driver == "asyncio" and self._loop is not None and not self._drive_scheduled:
            self._drive_scheduled = True
            self._loop.call_soon(self._drive)

    def _thread_main(self) -> None:
        q, waits = self._q, self._waits
        slots = _core().SlotBatch()
        answered: list[int] = []
        ran = False
        res: Any = None
        rok = True
        while True:
            # Waking the answered callers (per-call slots and registered waiters), freeing the
            # slot and waiting all happen in one native call with the GIL released.
            (runs, key, reason, expired, dropped, _wake, finished, oldest, _cost, _n,
             sxs) = q.cycle_slots(waits, answered, ran, -1, slots, res, rok, self._cr_runner, self.fn, self._cr_outcome)
            answered = []
            ran = False
            res, rok = None, True
            if expired or dropped:
                self._answer_gone(expired, dropped)
            if sxs is not None:
                ran = True
                try:
                    res, rok = self._run_slots(sxs, runs, oldest, answered)
                except BaseException as exc:  # pragma: no cover - every caller still gets an answer
                    res, rok = exc, False
            elif runs:
                ran = True
                try:
                    self._run_batch(runs, reason, oldest, answered)
                except BaseException:  # pragma: no cover - _run_batch answers its callers itself
                    q.batch_done()
                    ran = False
                    raise
            if finished:
                q.interrupt()  # let the sibling threads see it too
                return

    def _slots_outcome(self, k: int, ok: bool, out: Any, t0: int) -> tuple[Any, bool]:
        """A natively run caller-runs batch whose model raised or returned something other than a
        list of k results: (results list, True) or (exception, False), counted as in _run_slots."""
        ok, out, results = self._observe_model(k, ok, out, t0)
        return (list(results), True) if ok else (out, False)

    def _caller_runs_batch(self, runs: list[tuple[int, int]], reason: int, oldest: int, sxs: list[Any] | None,
                           expired: list[int], dropped: list[int]) -> tuple[Any, bool, list[int]]:
        """A caller-runs caller's turn with what one poll handed out (the worker's per-batch
        step): answers expired/dropped requests, runs the batch. Returns (slot results or the
        exception, ok, ids of waiting callers to wake); the native side answers the slots, wakes
        everyone and frees the model slot."""
        if expired or dropped:
            self._answer_gone(expired, dropped)
        answered: list[int] = []
        if sxs is not None:
            res, rok = self._run_slots(sxs, runs, oldest, answered)
            return res, rok, answered
        if runs:
            self._run_batch(runs, reason, oldest, answered)
        return None, True, answered

    def _run_slots(self, sxs: list[Any], runs: list[tuple[int, int]], oldest: int,
                   answered: list[int]) -> tuple[Any, bool]:
        """A worker's batch holding per-call slot requests (inputs ``sxs``, first in the batch)
        and maybe other requests (``runs``). Returns what the slot callers get: (results list,
        True) or (exception, False); the others are answered as in _run_batch."""
        reqs = self._take(runs) if runs else None
        k = len(sxs)
        xs = sxs if not reqs else sxs + [r.x for r in reqs]
        t0 = self._now_ns()
        try:
            out, ok = self._call_model(self._prepare(xs, oldest, t0)), True
        except Exception as exc:
            out, ok = exc, False
        if not reqs and ok and self._slo is None and type(out) is list and len(out) == k:
            self._model_time.observe((self._now_ns() - t0) / 1e9)
            return out, True
        ok, out, results = self._observe_model(len(xs), ok, out, t0)
        if reqs:
            self._deliver(reqs, ok, out, results[k:] if ok else None, answered)
        if ok:
            return list(results[:k]), True
        return out, False

    def _drive(self) -> None:
        """One pass of the loop driver: hand out everything that is due, then arm a timer."""
        sub = self._sub
        sub.scheduled = False
        q = self._q
        loop = self._loop
        native = self._native_drive
        while True:
            now = time.monotonic_ns()
            if native is not None:
                # Pushes, polls and runs fast-path batches natively; back here for the rest.
                r = native(sub, q, self.fn)
                if len(r) == 1:  # nothing due (admission limit updated natively): arm the timer
                    self._arm_if_sooner(loop, r[0], now)
                    return
                st, polled, fin = r
                if fin is not None:  # the model raised or returned a bad batch: answer here
                    try:
                        self._complete_fast(*fin)
                    finally:
                        q.batch_done()
                    continue
                if st:
                    self._flush_fast()
            else:
                first = sub.fpushed
                n = sub.fbase + len(self._ff) - first
                st, polled = q.push_poll_runs(first, n, now)
                if n:
                    if st == 0:
                        sub.fpushed = first + n
                    else:  # full or closed: _flush_fast pushes what fits or fails the rest
                        self._flush_fast()
            runs, key, reason, expired, dropped, wake, finished, oldest, _cost, queued = polled
            if expired or dropped:
                self._answer_gone(expired, dropped)
            if not runs:
                break
            if self._is_async:
                loop.create_task(self._run_batch_async(runs, reason, oldest))
            elif len(runs) == 1 and _FAST_BASE <= runs[0][0] < _BULK_BASE:
                self._run_fast_sync(runs[0][0], runs[0][1], oldest)
            else:
                self._run_batch(runs, reason, oldest)
        if self.max_queue_size is not None:
            self._update_fast_limit(queued)
        self._arm_if_sooner(loop, wake, now)

    def _arm_if_sooner(self, loop: asyncio.AbstractEventLoop | None, wake: int, now: int) -> None:
        if self._closed and self._fdtimer:
            self._release_fdtimer()
        if wake < _NO_DEADLINE and loop is not None and (self._timer is None or wake < self._timer_ns):
            if self._timer is not None:
                self._timer.cancel()
            self._timer_ns = wake
            self._timer = self._arm_timer(loop, wake, now)

    def _release_fdtimer(self) -> None:
        """Closed and idle: the timerfd and its reader go (a later timer would use call_at)."""
        t = self._fdtimer
        if not t or not self._closed or self._q.size() or self._q.in_flight():
            return
        self._fdtimer = False
        if self._loop is not None and threading.get_ident() == self._loop_thread_id:
            t.close()
        elif self._loop is not None:
            try:
                self._loop.call_soon_threadsafe(t.close)
            except RuntimeError:  # loop closed: its selector is gone
                os.close(t.fd)
                t.fd = -1

    def _arm_timer(self, loop: asyncio.AbstractEventLoop, wake: int, now: int) -> Any:
        """A timer calling _on_timer at monotonic time ``wake`` (ns): the timerfd where there is
        one, else ``loop.call_at`` (millisecond wake-ups on epoll)."""
        t = self._fdtimer
        if t is None:
            try:
                t = _FdTimer(loop, self._on_timer)
            except (NotImplementedError, OSError, RuntimeError):
                t = False
            self._fdtimer = t
        if t:
            t.arm(wake)
            return t
        return loop.call_at(loop.time() + max(0, wake - now) / 1e9, self._on_timer)

    def _run_fast_sync(self, s: int, c: int, oldest: int) -> None:
        """A batch of fast-path requests with a sync model, on the loop: _run_batch with the
        common case inlined (one Python call per batch instead of about eight)."""
        try:
            xs, fs = self._take_fast(s, c)
            if not fs:
                return
            n = len(fs)
            t0 = time.monotonic_ns()  # the loop driver never has an injected clock
            self._batch_sizes.observe(n)
            counts = self._py_counts
            counts["executions"] += 1
            counts["inferences"] += n
            self._queue_wait.observe(max(0, t0 - oldest) / 1e9)
            try:
                out, ok = self.fn(_stack(xs) if self.stack else xs), True
            except Exception as exc:
                out, ok = exc, False
            if ok and self._slo is None and type(out) is list and len(out) == n:
                self._model_time.observe((time.monotonic_ns() - t0) / 1e9)
                try:
                    for f, v in zip(fs, out):
                        f.set_result(v)
                except asyncio.InvalidStateError:  # the model cancelled a caller: answer the rest
                    for f, v in zip(fs, out):
                        if not f.done():
                            f.set_result(v)
            else:  # errors, wrong result counts, non-list results, SLO bookkeeping
                self._complete_fast(fs, ok, out, t0)
        finally:
            self._q.batch_done()

    def _update_fast_limit(self, queued: int | None = None) -> None:
        """Fast-path admission: fast entries may grow while (live fast + other queued) < max_queue_size."""
        if self.max_queue_size is None:
            return
        live_fast = self._fpushed - self._fbase - self._fdead - self._fnone
        other = (self._q.size() if queued is None else queued) - live_fast
        self._fast_limit = self.max_queue_size - max(0, other) + self._fnone + self._fdead

    def _flush_fast(self) -> None:
        """Pushes the loop's new fast-path requests with one native call (consecutive ids).

        If the queue filled up meanwhile (a thread producer, or a cancelled task whose place is
        freed a loop iteration later), what fits is pushed and the rest stays buffered for the
        next pass; only a closed queue fails them.
        """
        first = self._fpushed
        n = self._fbase + len(self._ff) - first
        q = self._q
        st = q.push_many(first, n, 0, 0, 1, _NO_DEADLINE, time.monotonic_ns())
        if st == 1:
            room = self.max_queue_size - q.size() if self.max_queue_size is not None else 0
            n = max(0, min(n, room))
            st = q.push_many(first, n, 0, 0, 1, _NO_DEADLINE, time.monotonic_ns()) if n else 0
        self._fpushed = first + n
        if st:
            ff, fx = self._ff, self._fx
            for i in range(first - self._fbase, len(ff)):
                f = ff[i]
                ff[i] = fx[i] = None
                self._fnone += 1
                try:
                    self._raise_push(st, 1)
                except Exception as exc:
                    if not f.done():
                        f.set_exception(exc)
            self._fpushed = self._fbase + len(ff)

    def _take_fast(self, s: int, c: int) -> tuple[list[Any], list[Any]]:
        """Takes fast-path ids s .. s+c-1 (and frees every entry below them, which has left the queue)."""
        ff, fx = self._ff, self._fx
        i = s - self._fbase
        e = i + c
        fs = ff[i:e]
        xs = fx[i:e]
        dead = self._fdead
        if self._fnone:
            self._fnone -= ff[dead:e].count(None)
        self._fast_limit += e - dead  # retired entries still count in len(ff) until deleted
        if e > 64 and 2 * e > len(ff):
            del ff[:e]
            del fx[:e]
            self._fbase += e
            self._fast_limit -= e
            e = 0
        self._fdead = e
        try:
            cancelled = any(map(_fut_done, fs))
        except TypeError:  # a loop whose futures are not asyncio.Future
            cancelled = any(f.done() for f in fs)
        if cancelled:  # a cancelled caller's request never reaches the model
            keep = [k for k, f in enumerate(fs) if not f.done()]
            self._py_counts["cancellations"] += len(fs) - len(keep)
            fs = [fs[k] for k in keep]
            xs = [xs[k] for k in keep]
        return xs, fs

    def _on_timer(self) -> None:
        late = time.monotonic_ns() - self._timer_ns
        self._timer = None
        self._timer_ns = _NO_DEADLINE
        self._note_timer_lateness(late)
        self._drive()

    def _note_timer_lateness(self, late_ns: int) -> None:
        """The loop's delay timer wakes late (timerfd about 30-100 us here, loop.call_at up to a
        millisecond): a lone request would wait max_delay plus that. max_delay is a maximum, so
        the driver sends delay batches early by the 90th percentile of the last 64 measured
        wake-up latenesses (each clipped to the cap): the queue's delay becomes
        ``max_delay - lead``, the lead capped at ``TIMER_LEAD_MAX_FRACTION`` of max_delay, so that
        about nine lone requests in ten have left by max_delay. Not with ``target_p99_ms`` (its
        controller sets the delay) or an injected clock."""
        d = self._cfg["max_delay_ns"]
        if d <= 0 or self._slo is not None or self._clock is not None:
            return
        cap = int(d * TIMER_LEAD_MAX_FRACTION)
        lates = self._timer_lates
        lates.append(min(max(int(late_ns), 0), cap))
        self._timer_late_ns += (lates[-1] - self._timer_late_ns) * 0.125
        if len(lates) % 8 and len(lates) < lates.maxlen:
            return  # re-estimated every 8th sample while filling, then on every sample
        srt = sorted(lates)
        lead = srt[(len(srt) - 1) * 9 // 10]
        if abs(lead - self._timer_lead_ns) >= 2000:  # 2 us steps: no native call per batch
            self._timer_lead_ns = lead
            self._q.set_policy(self.max_batch_size, d - lead)

    def step(self) -> int:
        """Manual driver (injected clock): forms and runs every batch due at ``clock()``.

        Returns the number of batches run. Expired requests get TimeoutError here.
        """
        if self._driver != "manual":
            raise RuntimeError("step() drives a batcher made with clock= (or driver='manual')")
        n = 0
        while True:
            runs, key, reason, expired, dropped, _w, _f, oldest, _c, _n = self._q.poll_runs(self._now_ns())
            if expired or dropped:
                self._answer_gone(expired, dropped)
            if not runs:
                return n
            self._run_batch(runs, reason, oldest)
            n += 1

    def next_wake(self) -> float | None:
        """Manual driver: the clock() time at which step() may have something new (None: never)."""
        w = self._q.poll_runs(self._now_ns())
        if w[3] or w[4]:
            self._answer_gone(w[3], w[4])
        if w[0]:  # pragma: no cover - poll took a batch: run it rather than lose it
            self._run_batch(w[0], w[2], w[7])
            return self._now_ns() / 1e9
        return None if w[5] >= _NO_DEADLINE else w[5] / 1e9

    # ----------------------------------------------------------------- running a batch

    def _answer_gone(self, expired: list[int], dropped: list[int]) -> None:
        waits: list[int] = []
        for rid in expired:
            req = self._pending.pop(rid, None)
            if req is None:
                continue
            self._py_counts["timeouts"] += 1
            req.ok, req.value = False, TimeoutError(f"batcher {self.name!r}: request expired in the queue")
            self._finish(req, waits)
        for rid in dropped:
            if _FAST_BASE <= rid < _BULK_BASE:  # loop fast path (this runs on the loop's thread)
                i = rid - self._fbase
                f = self._ff[i] if self._fdead <= i < len(self._ff) else None
                if f is not None:
                    self._ff[i] = self._fx[i] = None
                    self._fnone += 1
                    if not f.done():
                        f.set_exception(BatcherClosed(f"batcher {self.name!r} was closed without draining"))
                continue
            req = self._pending.pop(rid, None)
            if req is None:
                continue
            req.ok, req.value = False, BatcherClosed(f"batcher {self.name!r} was closed without draining")
            self._finish(req, waits)
        if waits:
            self._waits.complete(waits)

    def _take(self, runs: list[tuple[int, int]]) -> list[_Req]:
        pend = self._pending
        reqs = []
        for s, c in runs:
            if _FAST_BASE <= s < _BULK_BASE:  # fast-path requests in a mixed batch
                xs, fs = self._take_fast(s, c)
                loop = self._loop
                reqs.extend(_Req(x, _K_AIO, f, loop) for x, f in zip(xs, fs))
                continue
            for rid in range(s, s + c):
                r = pend.pop(rid, None)
                if r is not None and not r.cancelled():
                    reqs.append(r)
        return reqs

    def _prepare(self, xs: list[Any], oldest: int, t0: int) -> Any:
        n = len(xs)
        self._batch_sizes.observe(n)
        counts = self._py_counts
        counts["executions"] += 1
        counts["inferences"] += n
        self._queue_wait.observe(max(0, t0 - oldest) / 1e9)
        return _stack(xs) if self.stack else xs

    def _run_batch(self, runs: list[tuple[int, int]], reason: int, oldest: int,
                   answered: list[int] | None = None) -> None:
        """Runs one batch. With ``answered`` (a worker thread), the ids of thread callers to wake
        are appended to it and the slot is left taken: the worker's next native call does both."""
        try:
            if len(runs) == 1 and _FAST_BASE <= runs[0][0] < _BULK_BASE:
                xs, fs = self._take_fast(*runs[0])
                if not fs:
                    return
                t0 = self._now_ns()
                try:
                    out, ok = self._call_model(self._prepare(xs, oldest, t0)), True
                except Exception as exc:
                    out, ok = exc, False
                self._complete_fast(fs, ok, out, t0)
                return
            reqs = self._take(runs)
            if not reqs:
                return
            t0 = self._now_ns()
            try:
                inputs = self._prepare([r.x for r in reqs], oldest, t0)
                out, ok = self._call_model(inputs), True
            except Exception as exc:
                out, ok = exc, False
            self._complete(reqs, ok, out, t0, answered)
        finally:
            if answered is None:
                self._q.batch_done()

    async def _run_batch_async(self, runs: list[tuple[int, int]], reason: int, oldest: int) -> None:
        try:
            if len(runs) == 1 and _FAST_BASE <= runs[0][0] < _BULK_BASE:
                xs, fs = self._take_fast(*runs[0])
                if not fs:
                    return
                t0 = self._now_ns()
                try:
                    out, ok = await self.fn(self._prepare(xs, oldest, t0)), True
                except Exception as exc:
                    out, ok = exc, False
                self._complete_fast(fs, ok, out, t0)
                return
            reqs = self._take(runs)
            if not reqs:
                return
            t0 = self._now_ns()
            try:
                inputs = self._prepare([r.x for r in reqs], oldest, t0)
                out, ok = await self.fn(inputs), True
            except Exception as exc:
                out, ok = exc, False
            self._complete(reqs, ok, out, t0)
        finally:
            self._q.batch_done()
            if not self._drive_scheduled:  # a slot is free: form the next batch now
                self._drive_scheduled = True
                asyncio.get_running_loop().call_soon(self._drive)

    def _observe_model(self, n: int, ok: bool, out: Any, t0: int) -> tuple[bool, Any, Any]:
        t1 = self._now_ns()
        self._model_time.observe((t1 - t0) / 1e9)
        results = None
        if ok:
            try:
                results = _split_results(out, n)
            except BatchResultError as exc:
                ok, out = False, exc
        if not ok:
            reason = "model_error" if not isinstance(out, BatchResultError) else "result_count"
            self._failures[reason] = self._failures.get(reason, 0) + 1
        if self._slo is not None:
            self._slo.observe(n, (t1 - t0) / 1e9)
        return ok, out, results

    def _complete_fast(self, fs: list[asyncio.Future], ok: bool, out: Any, t0: int) -> None:
        """Answers a batch of fast-path futures on the loop thread: no object per request."""
        ok, out, results = self._observe_model(len(fs), ok, out, t0)
        if ok:
            try:
                for f, v in zip(fs, results):
                    f.set_result(v)
            except asyncio.InvalidStateError:  # cancelled while an async model ran
                for f, v in zip(fs, results):
                    if not f.done():
                        f.set_result(v)
        else:
            for f in fs:
                if not f.done():
                    f.set_exception(out)

    def _complete(self, reqs: list[_Req], ok: bool, out: Any, t0: int, answered: list[int] | None = None) -> None:
        ok, out, results = self._observe_model(len(reqs), ok, out, t0)
        self._deliver(reqs, ok, out, results, answered)

    def _deliver(self, reqs: list[_Req], ok: bool, out: Any, results: Any, answered: list[int] | None = None) -> None:
        waits: list[int] = [] if answered is None else answered
        by_loop: dict[Any, list[_Req]] = {}
        here = self._loop if self._loop is not None and threading.get_ident() == self._loop_thread_id else None
        for i, r in enumerate(reqs):
            if ok:
                r.ok, r.value = True, results[i]
            else:
                r.ok, r.value = False, out
            if r.ckey is None and not r.followers:
                kind = r.kind
                if kind == _K_WAIT:
                    waits.append(r.rid)
                    continue
                if kind == _K_CF:
                    _set_cf(r.sink, r.ok, r.value)
                    continue
                if r.loop is here:
                    _set_aio(r.sink, r.ok, r.value)
                    continue
            self._finish(r, waits, by_loop)
        if waits and answered is None:
            self._waits.complete(waits)
        for loop, rs in by_loop.items():
            try:  # one hand-off per loop and batch
                loop.call_soon_threadsafe(_deliver_aio_many, rs)
            except RuntimeError:  # that loop is closed: nobody is left to answer
                pass

    def _finish(self, r: _Req, waits: list[int], by_loop: dict | None = None) -> None:
        """Routes r's outcome to its caller (and its cache followers)."""
        if r.ckey is not None:
            with self._lock:
                if self._cache_inflight.get(r.ckey) is r:
                    del self._cache_inflight[r.ckey]
            if r.ok:
                self.cache.put_key(r.ckey, r.value)
        group = [r] if not r.followers else [r, *r.followers]
        for g in group:
            if g is not r:
                g.ok, g.value = r.ok, r.value
            if g.kind == _K_CF:
                _set_cf(g.sink, g.ok, g.value)
            elif g.kind == _K_WAIT:
                waits.append(self._wait_id(g))
            elif g.loop is self._loop and threading.get_ident() == self._loop_thread_id:
                _set_aio(g.sink, g.ok, g.value)
            elif by_loop is not None:
                by_loop.setdefault(g.loop, []).append(g)
            else:
                try:
                    g.loop.call_soon_threadsafe(_deliver_aio_many, [g])
                except RuntimeError:
                    pass

    @staticmethod
    def _wait_id(r: _Req) -> int:
        return r.rid

    # ----------------------------------------------------------------- closing

    def start(self) -> "Batcher":
        """Starts the driver now rather than at the first request; returns the batcher.

        From a running event loop's thread (a FastAPI lifespan, an ``async def main``) a batcher
        with ``driver="auto"`` or ``"asyncio"`` binds to that loop, so the very first
        ``await infer(x)`` already takes the fast path (and ``b.infer`` / ``b.infer_future`` are
        the per-loop native callables from here on). Otherwise (``driver="thread"``, or
        ``"auto"`` with no running loop) the worker threads start. Nothing to start for the
        manual driver. Calling it again does nothing; a closed batcher raises BatcherClosed.
        """
        if self._closed:
            raise BatcherClosed(f"batcher {self.name!r} is closed")
        if self._driver == "manual":
            return self
        loop = _get_running_loop()
        if self._driver == "asyncio" and loop is None and self._loop is None:
            raise RuntimeError("driver='asyncio': call start() from the event loop that will drive the batcher")
        self._ensure_driver(loop if self._driver in ("auto", "asyncio") else None)
        return self

    def close(self, drain: bool = True, timeout: float | None = None) -> None:
        """Stops taking requests. ``drain=True`` sends everything still queued (at once, without
        waiting for the delay) and, for thread-driven batchers, waits up to ``timeout`` seconds
        for the workers; ``drain=False`` fails queued requests with :class:`BatcherClosed`.
        Idempotent."""
        with self._lock:
            first = not self._closed
            self._closed = True
        self._disable_fast()  # later infer() calls take the checked path (BatcherClosed)
        if self._loop is not None and threading.get_ident() == self._loop_thread_id and \
                self._fpushed != self._fbase + len(self._ff):
            self._flush_fast()  # requests made before close() are queued (and drained) too
        if first or not drain:
            self._q.close(bool(drain))
        if self._driver == "manual":
            self.step()
        elif self._driver == "asyncio" and self._loop is not None:
            if threading.get_ident() == self._loop_thread_id:
                self._drive()
            else:
                try:
                    self._loop.call_soon_threadsafe(self._drive)
                except RuntimeError:
                    pass
        elif self._driver == "auto":
            # Never driven: nothing can be queued, but answer anything left to be safe.
            self._answer_gone(*self._q.poll(self._now_ns())[3:5])
        if self._driver == "thread" and threading.current_thread() not in self._threads:
            end = None if timeout is None else time.monotonic() + timeout
            for t in self._threads:
                t.join(None if end is None else max(0.0, end - time.monotonic()))
        if self._timer is not None and self._q.size() == 0 and self._q.in_flight() == 0:
            self._timer.cancel()
            self._timer = None
        self._release_fdtimer()
        _live_batchers.discard(self)

    async def aclose(self, drain: bool = True) -> None:
        """close() for loop-driven batchers: returns once every queued request is answered."""
        self.close(drain=drain)
        while self._q.size() or self._q.in_flight():
            await asyncio.sleep(0.001)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "Batcher":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(drain=True)

    async def __aenter__(self) -> "Batcher":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.aclose(drain=True)

    def __del__(self) -> None:  # pragma: no cover - safety net; close() is the API
        try:
            if not self._closed:
                self._q.close(False)
        except Exception:
            pass

    # ----------------------------------------------------------------- observability

    def stats(self) -> dict[str, Any]:
        """Counters and histograms, cheap enough to read every second (plain Python values).

        ``queue_depth``, ``in_flight``, ``submitted``, ``executions`` (batches run) and
        ``inferences`` (requests in them; their ratio is the mean batch size), ``sent`` (why each
        batch left: full / preferred / delay / drain), ``rejected`` (full / closed / cost),
        ``timeouts``, ``cancellations``, ``failures`` by reason (model_error / result_count),
        ``cache_hits``, and histograms ``batch_size``, ``queue_wait_s`` (the oldest request of each
        batch), ``model_time_s``.
        """
        self._fold_native_stats()
        c = self._q.counters()
        p = self._py_counts
        out = {
            "queue_depth": self._q.size(),
            "in_flight": self._q.in_flight(),
            "submitted": c["pushed"],
            "executions": p["executions"],
            "inferences": p["inferences"],
            "mean_batch_size": p["inferences"] / p["executions"] if p["executions"] else 0.0,
            "sent": {"full": c["sent_full"], "preferred": c["sent_preferred"], "delay": c["sent_delay"],
                     "drain": c["sent_drain"]},
            "rejected": {"full": p["rejected_full"], "closed": p["rejected_closed"], "cost": p["rejected_cost"]},
            "timeouts": p["timeouts"],
            "cancellations": p["cancellations"],
            "failures": dict(self._failures),
            "cache_hits": p["cache_hits"],
            "cache_joined": p["cache_joined"],
            "batch_size": self._batch_sizes.snapshot(),
            "queue_wait_s": self._queue_wait.snapshot(),
            "model_time_s": self._model_time.snapshot(),
            "max_delay_ms": self._q.config()["max_delay_ns"] / 1e6,
        }
        if self._slo is not None:
            out["slo"] = self._slo.state()
        if self._timer_late_ns:
            # Loop driver: the delay timer's mean wake-up lateness and the lead taken off max_delay.
            out["delay_timer"] = {"lateness_mean_us": self._timer_late_ns / 1e3, "lead_us": self._timer_lead_ns / 1e3,
                                  "samples": len(self._timer_lates)}
        if self._cr_inline_ns is not None:
            # Thread driver with callers running batches: the mean model time that caller_runs="auto"
            # compares with CALLER_RUNS_MAX_MODEL_US, and whether callers run batches now.
            ewma_us = self._sub.model_time_ewma_ns / 1e3
            out["caller_runs"] = {"mode": self.caller_runs, "model_time_ewma_us": ewma_us,
                                  "callers_run_batches": self._cr_inline_ns < 0 or ewma_us * 1e3 <= self._cr_inline_ns}
        return out

    def histograms(self) -> dict[str, Histogram]:
        """The live Histogram objects (for exporters)."""
        return {"batch_size": self._batch_sizes, "queue_wait_s": self._queue_wait, "model_time_s": self._model_time}

    def __repr__(self) -> str:
        return (f"Batcher({self.name!r}, max_batch_size={self.max_batch_size}, max_delay_ms={self.max_delay_ms}, "
                f"driver={self._driver!r}, closed={self._closed})")


# --------------------------------------------------------------------------- outcome helpers


def _as_future(aw: Any) -> Any:
    """An asyncio.Future for an awaitable: a future as is, a coroutine as a task of the running loop."""
    if asyncio.isfuture(aw):
        return aw
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        if hasattr(aw, "close"):
            aw.close()  # not left to warn that it was never awaited
        raise
    return loop.create_task(aw)


def _set_cf(f: cf.Future, ok: bool, value: Any) -> None:
    try:
        if ok:
            f.set_result(value)
        else:
            f.set_exception(value)
    except cf.InvalidStateError:  # cancelled (or expired) meanwhile
        pass


def _set_aio(f: asyncio.Future, ok: bool, value: Any) -> None:
    if f.done():
        return
    if ok:
        f.set_result(value)
    else:
        f.set_exception(value)


def _deliver_aio_many(reqs: list[_Req]) -> None:
    for r in reqs:
        _set_aio(r.sink, r.ok, r.value)


def _chain_cf(src: cf.Future, dst: cf.Future) -> None:
    if src.cancelled():
        dst.cancel()
    elif src.exception() is not None:
        _set_cf(dst, False, src.exception())
    else:
        _set_cf(dst, True, src.result())


def _resubmit_aio(b: Batcher, f: _Req) -> None:
    if f.sink.done():
        return
    try:
        g = b.submit(f.x)
    except Exception as exc:
        _set_aio(f.sink, False, exc)
        return
    asyncio.futures._chain_future(g, f.sink)  # type: ignore[attr-defined]


def _expire_aio(fut: asyncio.Future, b: Batcher, timeout: float) -> None:
    if not fut.done():
        b._py_counts["timeouts"] += 1
        fut.set_exception(TimeoutError(f"batcher {b.name!r}: no result within {timeout} s"))


def _split_results(out: Any, n: int) -> list[Any]:
    if out is None:
        raise BatchResultError(f"the model returned None for a batch of {n}; it must return one result per request")
    try:
        m = len(out)
    except TypeError:
        raise BatchResultError(f"the model returned {type(out).__name__}, which has no length; it must return "
                               f"one result per request ({n})") from None
    if m != n:
        raise BatchResultError(f"the model returned {m} results for a batch of {n} requests")
    return out if isinstance(out, list) else list(out)


# --------------------------------------------------------------------------- SLO-aware policy


class _SloPolicy:
    """Learns model time ~ a*n + b online and picks the delay that keeps p99 under target.

    The latency of a request is at most: the delay it waits for its batch to fill, plus one
    batch already running ahead of it, plus its own batch's model time. With arrival rate r the
    batch that forms within a delay d has about n = min(max, 1 + r*d) requests, so we choose the
    largest d <= max_delay with d + 2*(a*n + b) <= target * margin.
    """

    def __init__(self, b: Batcher, margin: float = 0.8, forget: float = 0.98):
        self.b = b
        self.margin = margin
        self.forget = forget
        # Recursive least squares on (n, t) with forgetting.
        self.sw = self.sn = self.st = self.snn = self.snt = 0.0
        self.rate = 0.0
        self._last_t = None
        self._last_count = 0
        self.delay_ms = b.max_delay_ms
        self.a = self.bcoef = 0.0

    def observe(self, n: int, secs: float) -> None:
        f = self.forget
        self.sw = self.sw * f + 1
        self.sn = self.sn * f + n
        self.st = self.st * f + secs
        self.snn = self.snn * f + n * n
        self.snt = self.snt * f + n * secs
        var = self.snn * self.sw - self.sn * self.sn
        if var > 1e-9 * max(1.0, self.sw * self.snn):
            self.a = max(0.0, (self.snt * self.sw - self.sn * self.st) / var)
            self.bcoef = max(0.0, (self.st - self.a * self.sn) / self.sw)
        else:
            self.a, self.bcoef = 0.0, self.st / max(self.sw, 1e-12) / max(self.sn / max(self.sw, 1e-12), 1)
            self.a = self.bcoef
            self.bcoef = 0.0
        now = time.monotonic()
        count = self.b._py_counts["inferences"] + self.b._q.size()
        if self._last_t is None:
            self._last_t, self._last_count = now, count
        elif now - self._last_t >= 0.05:
            inst = (count - self._last_count) / (now - self._last_t)
            self.rate = inst if self.rate == 0 else 0.7 * self.rate + 0.3 * inst
            self._last_t, self._last_count = now, count
        self._update()

    def model_time(self, n: float) -> float:
        return self.a * n + self.bcoef

    def _update(self) -> None:
        target = self.b.target_p99_ms / 1e3 * self.margin
        mx = self.b.max_batch_size
        lo, hi = 0.0, self.b.max_delay_ms / 1e3
        for _ in range(20):  # bisection on d: the latency bound grows with d
            d = (lo + hi) / 2
            n = min(mx, 1 + self.rate * d)
            if d + 2 * self.model_time(n) <= target:
                lo = d
            else:
                hi = d
        d = lo
        self.delay_ms = d * 1e3
        self.b._q.set_policy(mx, int(d * 1e9))

    def state(self) -> dict[str, float]:
        return {"target_p99_ms": self.b.target_p99_ms, "delay_ms": self.delay_ms, "arrival_rate": self.rate,
                "model_ms_per_item": self.a * 1e3, "model_ms_fixed": self.bcoef * 1e3}


# --------------------------------------------------------------------------- decorator


@functools.lru_cache(maxsize=None)
def _register_infer_call() -> None:
    """The native InferCall is a coroutine for asyncio (create_task, ensure_future, TaskGroup)."""
    import collections.abc

    collections.abc.Coroutine.register(_core().InferCall)


def _mark_coroutine_function(obj: Any) -> None:
    """inspect.iscoroutinefunction (3.12+) and asyncio.iscoroutinefunction (every version) say True."""
    if hasattr(inspect, "markcoroutinefunction"):
        inspect.markcoroutinefunction(obj)
    marker = getattr(asyncio.coroutines, "_is_coroutine", None)
    if marker is not None:
        obj._is_coroutine = marker


class _Batched:
    """What :func:`batched` returns: a single-request callable backed by a Batcher.

    As a method (a descriptor) each
    instance gets its own Batcher over the bound method, made on first use and kept in the
    instance (``__dict__``, or a weak table for classes with ``__slots__``).
    """

    def __init__(self, f: Callable, kwargs: dict[str, Any]):
        if not callable(f):
            raise TypeError(f"@batched needs a callable, got {type(f).__name__}")
        functools.update_wrapper(self, f)
        self._f = f
        self._kw = kwargs
        self._b: Batcher | None = None
        self._mk = threading.Lock()
        self._attr = f"__pyperfcore_batcher_{getattr(f, '__name__', 'fn')}"
        self._by_obj: "weakref.WeakKeyDictionary[Any, _Batched]" = weakref.WeakKeyDictionary()
        self._is_async = inspect.iscoroutinefunction(f)
        if self._is_async:  # so frameworks that check for a coroutine function await it
            _mark_coroutine_function(self)
        if "name" not in kwargs:
            kwargs["name"] = getattr(f, "__qualname__", getattr(f, "__name__", "batched"))
        # Made now so a bad option is an error where the decorator is written; it starts no
        # thread until first used (as a method, the per-instance Batchers are used instead).
        self._b = Batcher(f, **kwargs)

    @property
    def batcher(self) -> Batcher:
        b = self._b
        if b is None:
            with self._mk:
                if self._b is None:
                    self._b = Batcher(self._f, **self._kw)
                b = self._b
        return b

    def __call__(self, x: Any, **kw: Any) -> Any:
        b = self.batcher
        if b._is_async:
            return b.infer(x, **kw)  # a coroutine: `await model(x)` or create_task(model(x))
        return b(x, **kw)

    def submit(self, x: Any, **kw: Any) -> cf.Future:
        return self.batcher.submit(x, **kw)

    async def infer(self, x: Any, **kw: Any) -> Any:
        return await self.batcher.infer(x, **kw)

    def infer_future(self, x: Any, **kw: Any) -> "asyncio.Future[Any]":
        return self.batcher.infer_future(x, **kw)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        d = getattr(obj, "__dict__", None)
        bound = d.get(self._attr) if d is not None else self._by_obj.get(obj)
        if bound is None:
            with self._mk:
                bound = d.get(self._attr) if d is not None else self._by_obj.get(obj)
                if bound is None:
                    bound = _Batched.__new__(_Batched)
                    functools.update_wrapper(bound, self._f)
                    bound._f = self._f.__get__(obj, objtype)
                    bound._kw = self._kw
                    bound._b = None
                    bound._mk = threading.Lock()
                    bound._attr = self._attr
                    bound._by_obj = self._by_obj
                    bound._is_async = self._is_async
                    if self._is_async:
                        _mark_coroutine_function(bound)
                    if d is not None:
                        d[self._attr] = bound
                    else:
                        try:
                            self._by_obj[obj] = bound
                        except TypeError:
                            raise TypeError(f"@batched method on {type(obj).__name__}: instances need a __dict__ "
                                            "or weak references to keep their Batcher") from None
        return bound

    def __repr__(self) -> str:
        return f"<batched {self.__name__}>"


def batched(fn: Callable | None = None, /, **batcher_kwargs: Any) -> Any:
    """Decorator: turns a batch function into a single-request function served by a Batcher.

    ``@batched(max_batch_size=32, max_delay_ms=2)`` over ``def model(xs: list) -> list``
    gives ``model(x) -> result`` (callable from many threads); over ``async def`` it gives
    ``await model(x)``. The Batcher is at ``model.batcher`` (``submit``, ``stats``, ``close``).
    On a method (``def predict(self, xs)``) each instance gets its own Batcher:
    ``obj.predict(x)``, ``obj.predict.batcher``.
    """

    def wrap(f: Callable) -> Any:
        return _Batched(f, dict(batcher_kwargs))

    if fn is not None:
        return wrap(fn)
    return wrap
