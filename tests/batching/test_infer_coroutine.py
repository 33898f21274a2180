"""``infer()`` is a coroutine in every case (create_task, gather, wait_for, TaskGroup, cancellation),
and ``infer_future()`` is the future-returning fast path.

On the driving loop's fast path ``infer(x)`` returns the native ``InferCall`` (the request is queued
at the call; asyncio takes it as a coroutine: ``asyncio.iscoroutine`` is true, ``inspect.iscoroutine``
is not, as for any coroutine-protocol object that is not a Python ``async def`` frame)."""
from __future__ import annotations

import asyncio
import inspect
import sys

import pytest

from pyperfcore import batching as B

T = 10.0  # generous bound: only guards against hangs


def _double(xs):
    return [x * 2 for x in xs]


async def _double_async(xs):
    await asyncio.sleep(0)
    return [x * 2 for x in xs]


@pytest.mark.parametrize("fn", [_double, _double_async], ids=["sync", "async"])
@pytest.mark.parametrize("kw", [{}, {"timeout": 5.0}, {"priority": 1}, {"key": "k"}], ids=["plain", "timeout", "prio", "key"])
def test_infer_is_a_coroutine_and_create_task_works(fn, kw):
    async def main():
        b = B.Batcher(fn, max_batch_size=8, max_delay_ms=1)
        first = b.infer(1, **kw)  # before the driver exists
        assert inspect.iscoroutine(first)
        assert await first == 2
        later = b.infer(2, **kw)  # fast path installed by now (no kw): still a coroutine for asyncio
        assert asyncio.iscoroutine(later) and inspect.isawaitable(later)
        if kw:  # keywords take the checked path: a Python coroutine
            assert inspect.iscoroutine(later)
        tasks = [asyncio.create_task(b.infer(i, **kw)) for i in range(20)]
        assert await asyncio.wait_for(asyncio.gather(*tasks), T) == [i * 2 for i in range(20)]
        assert await later == 4
        await b.aclose()

    asyncio.run(main())


def test_infer_is_a_coroutine_function():
    assert inspect.iscoroutinefunction(B.Batcher.infer)

    async def main():
        b = B.Batcher(_double, max_batch_size=4, max_delay_ms=1)
        await b.infer(0)
        assert asyncio.iscoroutinefunction(b.infer)  # the per-loop native entry too
        if sys.version_info >= (3, 12):
            assert inspect.iscoroutinefunction(b.infer)
        await b.aclose()

    asyncio.run(main())


def test_gather_wait_for_and_taskgroup():
    async def main():
        b = B.Batcher(_double, max_batch_size=16, max_delay_ms=1)
        assert await asyncio.gather(*[b.infer(i) for i in range(50)]) == [i * 2 for i in range(50)]
        assert await asyncio.wait_for(b.infer(21), T) == 42
        if sys.version_info >= (3, 11):
            async with asyncio.TaskGroup() as tg:
                ts = [tg.create_task(b.infer(i)) for i in range(40)]
            assert [t.result() for t in ts] == [i * 2 for i in range(40)]
        st = b.stats()
        assert st["inferences"] == 50 + 1 + (40 if sys.version_info >= (3, 11) else 0)
        await b.aclose()

    asyncio.run(main())


@pytest.mark.parametrize("kw", [{}, {"timeout": 5.0}], ids=["fast", "checked"])
def test_cancelling_a_created_task_drops_its_request(kw):
    seen = []

    async def main():
        gate = asyncio.Event()

        async def model(xs):
            seen.extend(xs)
            await gate.wait()
            return xs

        b = B.Batcher(model, max_batch_size=4, max_delay_ms=0, max_queue_size=8)
        busy = asyncio.create_task(b.infer("busy", **kw))
        await asyncio.sleep(0.01)  # the model is busy with "busy"
        queued = [asyncio.create_task(b.infer(i, **kw)) for i in range(6)]
        await asyncio.sleep(0.01)  # all queued behind the busy model
        for t in queued[:3]:
            t.cancel()
        await asyncio.sleep(0)
        gate.set()
        res = await asyncio.wait_for(asyncio.gather(busy, *queued, return_exceptions=True), T)
        assert res[0] == "busy"
        assert all(isinstance(r, asyncio.CancelledError) for r in res[1:4])
        assert res[4:] == [3, 4, 5]
        assert not ({0, 1, 2} & set(seen))  # cancelled requests never reached the model
        assert b.stats()["cancellations"] == 3
        # Their places are free: the queue takes 8 more.
        more = await asyncio.wait_for(asyncio.gather(*[b.infer(i, **kw) for i in range(8)]), T)
        assert more == list(range(8))
        await b.aclose()

    asyncio.run(main())


def test_wait_for_timeout_cancels_the_request():
    seen = []

    async def main():
        gate = asyncio.Event()

        async def model(xs):
            seen.extend(xs)
            await gate.wait()
            return xs

        b = B.Batcher(model, max_batch_size=2, max_delay_ms=0)
        busy = asyncio.create_task(b.infer("busy"))
        await asyncio.sleep(0.01)
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(b.infer("late"), 0.02)
        gate.set()
        assert await asyncio.wait_for(busy, T) == "busy"
        assert await asyncio.wait_for(b.infer("next"), T) == "next"
        assert "late" not in seen
        await b.aclose()

    asyncio.run(main())


def test_errors_are_raised_by_the_await():
    async def main():
        b = B.Batcher(_double, max_batch_size=4, max_delay_ms=1)
        assert await b.infer(1) == 2
        bad = b.infer(1, priority=1.5)
        with pytest.raises(TypeError):
            await bad
        await b.aclose()
        coro = b.infer(1)  # no exception at the call: the coroutine raises when awaited
        with pytest.raises(B.BatcherClosed):
            await coro
        t = asyncio.create_task(b.infer(2))
        with pytest.raises(B.BatcherClosed):
            await t

    asyncio.run(main())


def test_infer_future_returns_futures():
    async def main():
        b = B.Batcher(_double, max_batch_size=8, max_delay_ms=1)
        f0 = b.infer_future(0)  # before the driver exists: a task on the checked path
        assert isinstance(f0, asyncio.Future) and await f0 == 0
        fs = [b.infer_future(i) for i in range(10)]
        assert all(isinstance(f, asyncio.Future) and not inspect.iscoroutine(f) for f in fs)
        fk = b.infer_future(5, priority=2)  # a keyword: checked path, still a Future
        assert isinstance(fk, asyncio.Future)
        assert await asyncio.gather(*fs, fk) == [i * 2 for i in range(10)] + [10]
        fs[0].cancel()  # already done: nothing happens
        f = b.infer_future(7)
        f.cancel()
        await asyncio.sleep(0.01)
        assert b.stats()["cancellations"] == 1
        await b.aclose()
        with pytest.raises(B.BatcherClosed):
            await b.infer_future(1)

    asyncio.run(main())


def test_batched_async_function_returns_coroutines():
    @B.batched(max_batch_size=8, max_delay_ms=1)
    async def model(xs):
        return [x + 1 for x in xs]

    assert asyncio.iscoroutinefunction(model)

    class Svc:
        @B.batched(max_batch_size=4, max_delay_ms=1)
        async def score(self, xs):
            return [x * 3 for x in xs]

    svc = Svc()
    assert asyncio.iscoroutinefunction(svc.score)

    async def main():
        assert await asyncio.create_task(svc.score(2)) == 6
        await svc.score.batcher.aclose()
        c = model(1)
        assert inspect.iscoroutine(c)
        assert await c == 2
        ts = [asyncio.create_task(model(i)) for i in range(10)]
        assert await asyncio.gather(*ts) == list(range(1, 11))
        c3 = model.infer(3)
        assert inspect.iscoroutine(c3) and await c3 == 4
        assert await model.infer_future(4) == 5
        if sys.version_info >= (3, 11):
            async with asyncio.TaskGroup() as tg:
                t = tg.create_task(model(9))
            assert t.result() == 10
        await model.batcher.aclose()

    asyncio.run(main())


def test_thread_driver_infer_is_a_coroutine_too():
    b = B.Batcher(_double, max_batch_size=8, max_delay_ms=1, driver="thread")
    try:
        assert b(1) == 2

        async def main():
            c = b.infer(3)
            assert inspect.iscoroutine(c)
            ts = [asyncio.create_task(b.infer(i)) for i in range(10)]
            assert await asyncio.wait_for(asyncio.gather(c, *ts), T) == [6] + [i * 2 for i in range(10)]

        asyncio.run(main())
    finally:
        b.close()


def _fast_batcher_and_calls(fn=_double):
    calls = []

    def model(xs):
        calls.append(list(xs))
        return fn(xs)

    return B.Batcher(model, max_batch_size=8, max_delay_ms=1), calls


def test_native_infer_call_protocol():
    """The fast path's InferCall: lazy like an ``async def`` (queued when first awaited), awaited
    once, driven by send/throw/close like a coroutine, its result (a tuple too) delivered through
    StopIteration.value, its name in a Task's repr."""
    async def main():
        b, calls = _fast_batcher_and_calls(lambda xs: [(x, -x) for x in xs])
        await b.infer(0)
        c = b.infer(5)
        assert type(c).__name__ == "InferCall" and asyncio.iscoroutine(c)
        assert c.future is None  # nothing queued before the first await
        assert await c == (5, -5)  # a tuple result is not unpacked
        assert isinstance(c.future, asyncio.Future) and c.future.done()
        with pytest.raises(RuntimeError, match="already awaited"):
            await c
        # Driven by hand, as a Task does: the first send queues it and yields the pending future.
        d = b.infer(6)
        with pytest.raises(TypeError, match="non-None"):
            d.send(1)
        fut = d.send(None)
        assert fut is d.future and not fut.done()
        await asyncio.wait_for(asyncio.shield(fut), T)
        with pytest.raises(StopIteration) as si:
            d.send(None)
        assert si.value.value == (6, -6)
        # A Task shows which call it runs.
        t = asyncio.ensure_future(b.infer(7))
        assert "Batcher.infer" in repr(t)
        assert await t == (7, -7)
        assert [x for batch in calls for x in batch] == [0, 5, 6, 7]
        await b.aclose()

    asyncio.run(main())


def test_native_infer_call_close_and_throw_drop_the_request():
    async def main():
        b, calls = _fast_batcher_and_calls()
        await b.infer(0)
        c = b.infer(100)
        c.close()  # never started: nothing was queued
        assert c.future is None
        d = b.infer(200)
        with pytest.raises(KeyError):
            d.throw(KeyError("stop"))  # never started: raised at once, nothing queued
        e = b.infer(300)
        fut = e.send(None)  # queued ...
        with pytest.raises(KeyError):
            e.throw(KeyError("stop"))  # ... and dropped: its future is cancelled before its batch forms
        assert fut.cancelled()
        f = b.infer(400)
        f.send(None)
        f.close()
        assert f.future.cancelled()
        assert await b.infer(3) == 6
        flat = [x for batch in calls for x in batch]
        assert flat == [0, 3]
        await b.aclose()

    asyncio.run(main())


def test_native_infer_call_never_awaited_warns_and_queues_nothing():
    async def main():
        b, calls = _fast_batcher_and_calls()
        await b.infer(0)
        with pytest.warns(RuntimeWarning, match="never awaited"):
            c = b.infer(9)
            del c
            import gc

            gc.collect()
        assert await b.infer(1) == 2
        assert [x for batch in calls for x in batch] == [0, 1]
        await b.aclose()

    asyncio.run(main())


def test_native_infer_call_errors_reach_every_caller_of_the_batch():
    async def main():
        def model(xs):
            if any(x < 0 for x in xs):
                raise ValueError("negative")
            return [x * 2 for x in xs]

        b = B.Batcher(model, max_batch_size=4, max_delay_ms=1)
        await b.infer(0)
        res = await asyncio.gather(b.infer(-1), *[b.infer(i) for i in range(1, 4)], return_exceptions=True)
        assert all(isinstance(r, ValueError) for r in res)  # one batch: the model raised for all
        assert await b.infer(4) == 8
        assert b.stats()["failures"]["model_error"] >= 1
        await b.aclose()

    asyncio.run(main())


def test_native_infer_in_taskgroup_with_cancellation():
    if sys.version_info < (3, 11):
        pytest.skip("TaskGroup is 3.11+")

    async def main():
        b, calls = _fast_batcher_and_calls()
        await b.infer(0)
        async with asyncio.TaskGroup() as tg:
            ts = [tg.create_task(b.infer(i)) for i in range(10)]
        assert [t.result() for t in ts] == [i * 2 for i in range(10)]
        # A task cancelled before it first runs: its request is never queued.
        t = asyncio.get_running_loop().create_task(b.infer(50))
        t.cancel()
        with pytest.raises(asyncio.CancelledError):
            await t
        # Cancelled while waiting for its batch: dropped before the model.
        slow = asyncio.get_running_loop().create_task(b.infer(60))
        await asyncio.sleep(0)  # queued now
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert await b.infer(1) == 2
        flat = [x for batch in calls for x in batch]
        assert 50 not in flat and 60 not in flat
        await b.aclose()

    asyncio.run(main())


def test_start_binds_the_loop_so_the_first_request_takes_the_fast_path():
    async def main():
        seen = []

        def model(xs):
            seen.append(list(xs))
            return [x + 1 for x in xs]

        b = B.Batcher(model, max_batch_size=8, max_delay_ms=50)
        assert b.start() is b and b.start() is b  # idempotent
        assert type(b.infer).__name__ == "InferEntry" and type(b.infer_future).__name__ == "LoopSubmitter"
        t0 = asyncio.get_running_loop().time()
        res = await asyncio.gather(*[b.infer(i) for i in range(8)])  # a full batch leaves at once
        assert res == [i + 1 for i in range(8)] and seen == [list(range(8))]
        assert asyncio.get_running_loop().time() - t0 < 0.04  # no lone warm-up request waited the delay
        await b.aclose()
        with pytest.raises(B.BatcherClosed):
            b.start()

    asyncio.run(main())


def test_start_without_a_loop_starts_threads_and_asyncio_driver_needs_its_loop():
    b = B.Batcher(lambda xs: xs, max_batch_size=4, max_delay_ms=1)
    b.start()
    assert b._driver == "thread" and b._threads
    assert b(5) == 5
    b.close()
    a = B.Batcher(lambda xs: xs, driver="asyncio")
    with pytest.raises(RuntimeError, match="start"):
        a.start()
    a.close()
    m = B.Batcher(lambda xs: xs, clock=lambda: 0.0)
    assert m.start() is m  # manual: nothing to start


from hypothesis import given, settings, strategies as st  # noqa: E402


@pytest.mark.filterwarnings("ignore:coroutine 'Batcher.infer' was never awaited")
@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["send", "send1", "throw", "close", "await", "drop"])),
                    min_size=1, max_size=40))
def test_infer_call_protocol_fuzz(ops):
    """Random send/throw/close/await/drop sequences on native InferCalls: never a crash or hang; a
    call awaited to the end gets its own result; a call closed or thrown into before it started
    never reaches the model; every queued request is answered by the drain."""
    seen = []

    def model(xs):
        seen.extend(xs)
        return [x * 10 for x in xs]

    async def main():
        b = B.Batcher(model, max_batch_size=4, max_delay_ms=0.5)
        b.start()
        calls = {k: b.infer(k) for k in range(6)}
        started, unstarted_dead, results = set(), set(), {}
        for k, op in ops:
            c = calls.get(k)
            if c is None:
                continue
            try:
                if op == "send":
                    r = c.send(None)
                    started.add(k)
                    assert isinstance(r, asyncio.Future)
                elif op == "send1":
                    c.send(1)
                elif op == "throw":
                    c.throw(ValueError("x"))
                elif op == "close":
                    if k not in started:
                        unstarted_dead.add(k)
                    c.close()
                elif op == "await":
                    if k in started:
                        continue  # a half-driven call is finished through its future below
                    results[k] = await asyncio.wait_for(c, T)
                    started.add(k)
                    del calls[k]
                elif op == "drop":  # dropped without being awaited (warns, as an `async def` would)
                    if k not in started:
                        unstarted_dead.add(k)
                    del calls[k], c
            except (ValueError, TypeError, RuntimeError, StopIteration, asyncio.CancelledError):
                if op == "throw" and k not in started:
                    unstarted_dead.add(k)
        for k, c in list(calls.items()):
            f = c.future
            if f is not None and not f.done():
                try:
                    await asyncio.wait_for(asyncio.shield(f), T)
                except asyncio.CancelledError:
                    pass
            calls.pop(k)
        await b.aclose()
        return results, unstarted_dead

    results, dead = asyncio.run(main())
    assert all(v == k * 10 for k, v in results.items())
    assert not (dead & set(seen))
    assert len(seen) == len(set(seen))
