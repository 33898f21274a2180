"""The per-request fast paths: loop-buffered asyncio requests (futures answered once per batch),
the one-call thread path, runs of ids from the native queue, @batched on methods, and extra
histogram bounds."""
import asyncio
import threading
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pyperfcore import batching as B
from pyperfcore._runtime import _core

T = 5.0
NO = 2**63 - 1


def test_native_poll_runs_groups_consecutive_ids():
    q = _core().BatchQueue(8, 0, [], 0, 0, 1, 0)
    assert q.push_many(100, 3, 0, 0, 1, NO, 0) == 0
    assert q.push(7, 0, 0, 1, NO, 0) == 0
    assert q.push_many(103, 2, 0, 0, 1, NO, 0) == 0
    runs = q.poll_runs(0)[0]
    assert runs == [(100, 3), (7, 1), (103, 2)]


def test_native_wait_runs_and_cycle():
    q = _core().BatchQueue(4, 0, [], 0, 0, 1, 0)
    c = _core().Completions()
    now = _core().batching_now_ns()
    assert q.push_many(10, 4, 0, 0, 1, NO, now) == 0
    runs, *rest = q.wait_runs(1_000_000_000)
    assert runs == [(10, 4)] and rest[-1] == 0  # last: still queued
    c.expect(10)
    assert q.push(20, 0, 0, 1, NO, now) == 0
    # cycle: wakes 10's waiter, frees the slot taken above, hands out the next batch
    runs = q.cycle(c, [10], True, 1_000_000_000)[0]
    assert runs == [(20, 1)] and q.in_flight() == 1
    assert c.wait(10, 0)  # already completed


def test_native_push_wait_registers_pushes_and_times_out():
    q = _core().BatchQueue(4, 10**9, [], 0, 1, 1, 0)
    c = _core().Completions()
    now = _core().batching_now_ns()
    assert q.push_wait(c, 5, 0, 0, 1, NO, now, 1_000_000) == -1  # nobody answers: times out
    assert c.size() == 0
    assert q.push_wait(c, 6, 0, 0, 1, NO, now, 0) == 1  # queue (size 1) still holds id 5: full
    assert c.size() == 0
    q.close(False)
    assert q.push_wait(c, 7, 0, 0, 1, NO, now, 0) == 2  # closed


def test_native_slots_are_reused_and_stale_entries_skipped():
    q = _core().BatchQueue(3, 0, [], 0, 0, 1, 0)
    for rnd in range(50):  # the same ids over and over: slab slots and index entries recycle
        for i in range(6):
            assert q.push(i, i % 2, i % 3, 1, NO if i % 2 else 10**15, 0) == 0
        assert q.cancel(2) and q.cancel(3)
        got = []
        while q.size():
            ids = q.poll(0)[0]
            got += ids
            q.batch_done()
        assert sorted(got) == [0, 1, 4, 5]


@settings(max_examples=25, deadline=None)
@given(ops=st.lists(st.tuples(st.sampled_from(["fast", "timeout", "prio", "cancel", "tick"]),
                              st.integers(0, 1000)), min_size=1, max_size=60),
       fail_every=st.integers(0, 4))
@example(ops=[("timeout", 0), ("fast", 0), ("fast", 0), ("fast", 0), ("tick", 0), ("cancel", 0)], fail_every=0)
@example(ops=[("fast", 0)], fail_every=1)  # the warm-up call fails too
def test_asyncio_fast_and_checked_paths_mixed(ops, fail_every):
    """Random mixes of fast-path and attributed requests with cancellations and failing model
    calls: every request gets exactly one outcome, cancelled ones never reach the model, and
    no input is seen twice."""
    seen = []
    calls = [0]
    unseen_at_cancel = set()

    def model(xs):
        calls[0] += 1
        seen.extend(xs)
        if fail_every and calls[0] % fail_every == 0:
            raise RuntimeError("boom")
        return [x * 10 for x in xs]

    async def main():
        b = B.Batcher(model, max_batch_size=4, max_delay_ms=0.5, max_queue_size=16)
        try:
            await b.infer(-1)  # first call picks the loop driver
        except RuntimeError:
            pass
        pending = []
        n = 0
        for op, arg in ops:
            if op == "tick":
                await asyncio.sleep(0)
                continue
            if op == "cancel":
                live = [(x, t) for x, t in pending if not t.done()]
                if live:
                    x, t = live[arg % len(live)]
                    t.cancel()
                    if x not in seen:
                        unseen_at_cancel.add(x)
                continue
            kw = {"timeout": 2.0} if op == "timeout" else {"priority": 1} if op == "prio" else {}
            try:
                t = asyncio.ensure_future(b.infer(n, **kw))
            except B.QueueFull:
                n += 1
                continue
            pending.append((n, t))
            n += 1
        await asyncio.wait_for(asyncio.gather(*(t for _, t in pending), return_exceptions=True), T)
        for x, t in pending:
            if t.cancelled():
                continue
            exc = t.exception()
            if exc is None:
                assert t.result() == x * 10
            else:
                assert isinstance(exc, (RuntimeError, B.QueueFull)), exc
        await b.aclose()
        return pending

    pending = asyncio.run(main())
    assert len(seen) == len(set(seen))
    # A request cancelled before the model saw it never reaches the model. (A task cancelled
    # after its result was set ends cancelled too: asyncio semantics, not checked here.)
    assert not (unseen_at_cancel & set(seen))


def test_fast_path_cancelled_requests_free_their_place_when_full():
    async def main():
        gate = asyncio.Event()

        async def slow(xs):
            await gate.wait()
            return xs

        b = B.Batcher(slow, max_batch_size=2, max_delay_ms=0, max_queue_size=4)
        busy = asyncio.ensure_future(b.infer("busy"))
        await asyncio.sleep(0.01)  # the model is busy with "busy"
        queued = [asyncio.ensure_future(b.infer(i)) for i in range(4)]
        await asyncio.sleep(0.01)
        with pytest.raises(B.QueueFull):
            await b.infer("over", priority=1)
        for t in queued[:3]:
            t.cancel()
        await asyncio.sleep(0)
        extra = asyncio.ensure_future(b.infer("late", priority=1))  # a cancelled place is reused
        await asyncio.sleep(0)
        gate.set()
        assert await asyncio.wait_for(asyncio.gather(busy, queued[3], extra), T) == ["busy", 3, "late"]
        assert b.stats()["cancellations"] >= 3
        await b.aclose()

    asyncio.run(main())


def test_close_answers_fast_path_requests():
    async def main():
        b = B.Batcher(lambda xs: xs, max_batch_size=8, max_delay_ms=1000)
        assert await b.infer(0) == 0
        futs = [b.infer_future(i) for i in range(5)]  # buffered on the loop, not yet pushed
        assert all(isinstance(f, asyncio.Future) for f in futs)
        b.close(drain=True)
        assert await asyncio.wait_for(asyncio.gather(*futs), T) == list(range(5))
        b2 = B.Batcher(lambda xs: xs, max_batch_size=8, max_delay_ms=1000)
        assert await b2.infer(0) == 0
        futs = [asyncio.ensure_future(b2.infer(i)) for i in range(5)]
        await asyncio.sleep(0.005)  # pushed, waiting for the delay
        b2.close(drain=False)
        res = await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), T)
        assert all(isinstance(r, B.BatcherClosed) for r in res)
        with pytest.raises(B.BatcherClosed):
            await b2.infer(1)

    asyncio.run(main())


def test_thread_driver_serves_loop_and_threads_with_runs():
    b = B.Batcher(lambda xs: [x + 1 for x in xs], max_batch_size=8, max_delay_ms=0.5, driver="thread")
    out = []

    def worker(k):
        out.append([b(k * 100 + i) for i in range(50)])

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in ts:
        t.start()
    fs = b.submit_many(list(range(1000, 1040)))
    for t in ts:
        t.join(T)
    assert sorted(sum(out, [])) == sorted(k * 100 + i + 1 for k in range(8) for i in range(50))
    assert [f.result(T) for f in fs] == list(range(1001, 1041))
    b.close()


def test_batched_on_methods_gives_each_instance_its_batcher():
    class Model:
        def __init__(self, k):
            self.k = k
            self.sizes = []

        @B.batched(max_batch_size=8, max_delay_ms=1)
        def predict(self, xs):
            self.sizes.append(len(xs))
            return [x * self.k for x in xs]

        @B.batched(max_batch_size=8, max_delay_ms=1)
        async def apredict(self, xs):
            return [x + self.k for x in xs]

    a, b = Model(2), Model(3)
    assert a.predict(5) == 10 and b.predict(5) == 15
    assert a.predict.batcher is a.predict.batcher and a.predict.batcher is not b.predict.batcher
    assert a.predict.submit(4).result(T) == 8
    assert isinstance(Model.predict, B._Batched)

    async def main():
        r = await asyncio.wait_for(asyncio.gather(*[a.apredict(i) for i in range(10)]), T)
        await a.apredict.batcher.aclose()
        return r

    assert asyncio.run(main()) == [i + 2 for i in range(10)]

    class Slotted:
        __slots__ = ("__weakref__",)

        @B.batched(max_batch_size=4, max_delay_ms=0)
        def f(self, xs):
            return xs

    s = Slotted()
    assert s.f(7) == 7 and s.f.batcher is s.f.batcher
    for m in (a, b):
        m.predict.batcher.close()
    s.f.batcher.close()


def test_extra_histogram_bounds_put_slo_threshold_on_an_edge():
    b = B.Batcher(lambda xs: xs, max_batch_size=4, max_delay_ms=0, extra_buckets_s=[0.0123, 0.3])
    assert b(1) == 1
    st = b.stats()
    for h in ("queue_wait_s", "model_time_s"):
        bounds = [ub for ub, _ in st[h]["buckets"]]
        assert 0.0123 in bounds and 0.3 in bounds and 0.005 in bounds
        assert bounds == sorted(bounds)
    b.close()
    with pytest.raises(ValueError, match="bucket"):
        B.Batcher(lambda xs: xs, extra_buckets_s=[-1.0])
    with pytest.raises(ValueError, match="bucket"):
        B.Batcher(lambda xs: xs, extra_buckets_s=[float("nan")])


# ----------------------------------------------------------------------------- per-call slots


def _threads_call(b, xs, out, errs):
    def one(x):
        try:
            out[x] = b(x)
        except BaseException as exc:  # recorded and checked by the test
            errs[x] = exc

    ts = [threading.Thread(target=one, args=(x,)) for x in xs]
    for t in ts:
        t.start()
    return ts


@pytest.mark.parametrize("cr", [False, True, "auto"], ids=["workers", "caller-runs", "auto"])
def test_slot_calls_mixed_with_submit_in_one_batch(cr):
    gate = threading.Event()
    batches = []

    def model(xs):
        if xs == ["hold"]:
            gate.wait(T)
        batches.append(list(xs))
        return [("r", x) for x in xs]

    b = B.Batcher(model, max_batch_size=32, max_delay_ms=0, driver="thread", caller_runs=cr)
    try:
        assert b(0) == ("r", 0)  # starts the workers (slot path from here on)
        hold = b.submit("hold")
        time.sleep(0.02)  # the model is busy
        out, errs = {}, {}
        ts = _threads_call(b, range(1, 9), out, errs)
        futs = [b.submit(100 + i) for i in range(4)]
        end = time.monotonic() + T
        while b.stats()["submitted"] < 14 and time.monotonic() < end:  # all queued behind "hold"
            time.sleep(0.001)
        gate.set()
        for t in ts:
            t.join(T)
        assert not errs and out == {x: ("r", x) for x in range(1, 9)}
        assert [f.result(T) for f in futs] == [("r", 100 + i) for i in range(4)]
        assert hold.result(T) == ("r", "hold")
        seen = [x for bt in batches for x in bt]
        assert sorted(map(str, seen)) == sorted(map(str, [0, "hold", *range(1, 9), *range(100, 104)]))
        assert any(any(isinstance(x, int) and x < 100 for x in bt) and any(isinstance(x, int) and x >= 100 for x in bt)
                   for bt in batches)  # slot and submit() requests shared a batch
    finally:
        b.close()


@pytest.mark.parametrize("cr", [False, True, "auto"], ids=["workers", "caller-runs", "auto"])
@pytest.mark.parametrize("bad", ["raise", "short", "none"])
def test_slot_calls_get_model_errors(bad, cr):
    def model(xs):
        if bad == "raise":
            raise KeyError("boom")
        if bad == "short":
            return xs[:-1]
        return None

    b = B.Batcher(model, max_batch_size=8, max_delay_ms=1, driver="thread", caller_runs=cr)
    b._ensure_driver(None)
    try:
        out, errs = {}, {}
        for t in _threads_call(b, range(6), out, errs):
            t.join(T)
        assert not out and len(errs) == 6
        want = KeyError if bad == "raise" else B.BatchResultError
        assert all(isinstance(e, want) for e in errs.values())
    finally:
        b.close()


@pytest.mark.parametrize("cr", [False, True, "auto"], ids=["workers", "caller-runs", "auto"])
def test_slot_calls_close_without_drain_answers_everyone(cr):
    gate = threading.Event()

    def model(xs):
        if "hold" in xs:
            gate.wait(T)
        return xs

    b = B.Batcher(model, max_batch_size=4, max_delay_ms=0, driver="thread", caller_runs=cr)
    assert b(0) == 0
    hold = b.submit("hold")
    time.sleep(0.02)
    out, errs = {}, {}
    ts = _threads_call(b, range(1, 7), out, errs)
    time.sleep(0.05)  # all six queued behind the busy model
    closer = threading.Thread(target=b.close, kwargs={"drain": False})
    closer.start()
    time.sleep(0.02)
    gate.set()
    closer.join(T)
    for t in ts:
        t.join(T)
    assert not any(t.is_alive() for t in ts)
    assert hold.result(T) == "hold"
    assert len(out) + len(errs) == 6
    assert all(isinstance(e, B.BatcherClosed) for e in errs.values()) and errs
    with pytest.raises(B.BatcherClosed):
        b(9)


@pytest.mark.parametrize("cr", [False, True, "auto"], ids=["workers", "caller-runs", "auto"])
def test_slot_calls_stack_and_many_threads(cr):
    np = pytest.importorskip("numpy")
    b = B.Batcher(lambda a: a * 2, max_batch_size=16, max_delay_ms=0.2, stack=True, driver="thread", caller_runs=cr)
    try:
        res: dict[int, list] = {}

        def worker(k):
            res[k] = [b(np.full(3, k * 1000 + i, dtype=np.int64)) for i in range(200)]

        ts = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(T * 3)
        for k in range(16):
            assert [int(r[0]) for r in res[k]] == [2 * (k * 1000 + i) for i in range(200)]
        st = b.stats()
        assert st["inferences"] == 16 * 200 and st["mean_batch_size"] > 1
    finally:
        b.close()


@pytest.mark.parametrize("opts", [{"max_concurrent_batches": 3}, {"target_p99_ms": 50}, {"max_delay_ms": 20}],
                         ids=["3-slots", "slo", "drain"])
@pytest.mark.parametrize("cr", [False, True, "auto"], ids=["workers", "caller-runs", "auto"])
def test_slot_calls_concurrent_slots_slo_and_drain(opts, cr):
    running = [0]
    peak = [0]
    lock = threading.Lock()

    def model(xs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.002)
        with lock:
            running[0] -= 1
        return [x + 1 for x in xs]

    kw = {"max_batch_size": 4, "max_delay_ms": 0.5, "driver": "thread", "caller_runs": cr, **opts}
    b = B.Batcher(model, **kw)
    assert b(0) == 1
    out, errs = {}, {}
    ts = _threads_call(b, range(1, 25), out, errs)
    if "max_delay_ms" in opts:
        end = time.monotonic() + T
        while b.stats()["submitted"] < 25 and time.monotonic() < end:  # every caller has pushed
            time.sleep(0.001)
        b.close(drain=True)  # queued slot callers are drained, not dropped
    for t in ts:
        t.join(T)
    assert not errs and out == {x: x + 1 for x in range(1, 25)}
    mc = opts.get("max_concurrent_batches", 1)
    assert 1 <= peak[0] <= mc
    st = b.stats()
    assert st["inferences"] == 25 and all(v >= 0 for v in st["sent"].values())
    if "target_p99_ms" in opts:
        assert st["slo"]["model_ms_per_item"] >= 0
    b.close()
