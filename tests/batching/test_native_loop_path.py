"""The asyncio driver's native steps: the per-request LoopSubmitter (``infer_future`` itself, and
the step inside ``infer``), fast-path batches run by ``batching_drive_fast`` (results, model
errors, bad result counts, cancellations, statistics folded on read), and the timerfd delay
timer. Same outcomes as the Python paths they replace."""
import asyncio
import os
import sys
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyperfcore import batching as B
from pyperfcore._runtime import _core

T = 5.0


async def _started(fn, **kw):
    """A loop-driven batcher whose driver (and fast path) is running."""
    pairs = kw.pop("pairs", False)
    b = B.Batcher(fn, driver="asyncio", **kw)
    await b.infer((-1, 0) if pairs else -1)
    return b


def test_native_runner_is_used_only_where_it_applies():
    async def main():
        b = await _started(lambda xs: xs, max_batch_size=4, max_delay_ms=0.2)
        assert b._native_drive is not None and type(b.infer_future).__name__ == "LoopSubmitter"
        await b.aclose()
        for kw in (dict(stack=True), dict(target_p99_ms=50)):
            b = await _started(lambda xs: list(xs), max_batch_size=4, max_delay_ms=0.2, **kw)
            assert b._native_drive is None  # Python runs these batches
            await b.aclose()

        async def amodel(xs):
            return xs

        b = await _started(amodel, max_batch_size=4, max_delay_ms=0.2)
        assert b._native_drive is None
        await b.aclose()

    asyncio.run(main())


@settings(max_examples=30, deadline=None)
@given(xs=st.lists(st.integers(-10**6, 10**6), min_size=0, max_size=200),
       mbs=st.integers(1, 40), cancel=st.sets(st.integers(0, 199), max_size=30),
       api=st.sampled_from(["infer", "infer_future"]))
def test_native_batches_answer_every_caller_and_count(xs, mbs, cancel, api):
    """Random inputs through the native runner: each caller gets f(its input), cancelled callers
    never reach the model, no input twice, no batch over the limit, and the statistics folded
    from native code agree with what the model saw."""
    seen, sizes = [], []

    def model(batch):  # the model sees (index, value) pairs
        sizes.append(len(batch))
        seen.extend(i for i, _ in batch)
        return [3 * x + 1 for _, x in batch]

    async def main():
        b = await _started(model, max_batch_size=mbs, max_delay_ms=0.3, pairs=True)  # its batch counts too
        call = getattr(b, api)
        futs = [asyncio.ensure_future(call((i, x))) for i, x in enumerate(xs)]
        dropped = [i for i in sorted(cancel) if i < len(futs)]
        for i in dropped:
            futs[i].cancel()
        res = await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), T)
        # After the drain: a cancelled request whose batch had not formed yet (e.g. the only
        # one, still inside max_delay) is dropped, and counted, when its batch forms.
        await b.aclose()
        return res, dropped, b.stats()

    res, dropped, stats = asyncio.run(main())
    for i, (x, r) in enumerate(zip(xs, res)):
        if i in dropped:
            assert isinstance(r, asyncio.CancelledError)
            assert i not in seen  # cancelled before its batch formed: never reached the model
        else:
            assert r == 3 * x + 1
    assert len(seen) == len(set(seen))
    assert all(1 <= s <= mbs for s in sizes)
    assert stats["executions"] == len(sizes) and stats["inferences"] == sum(sizes)
    assert stats["batch_size"]["count"] == len(sizes) and stats["batch_size"]["sum"] == sum(sizes)
    assert stats["batch_size"]["buckets"][-1][1] == len(sizes)
    assert stats["queue_wait_s"]["count"] == len(sizes) == stats["model_time_s"]["count"]
    if api == "infer_future":  # each cancelled future was queued and is counted when its batch forms
        assert stats["cancellations"] == len(dropped)
    else:  # a task cancelled before it started never queued its request
        assert stats["cancellations"] <= len(dropped)


@pytest.mark.parametrize("bad", ["raise", "short", "none", "tuple"])
def test_native_runner_model_errors_and_bad_results(bad):
    calls = [0]

    def model(xs):
        calls[0] += 1
        if calls[0] == 2:  # the second batch (the first is the warm-up) misbehaves
            if bad == "raise":
                raise KeyError("boom")
            if bad == "short":
                return xs[:-1]
            if bad == "none":
                return None
            return tuple(x + 1 for x in xs)  # a tuple of the right length is accepted
        return [x + 1 for x in xs]

    async def main():
        b = await _started(model, max_batch_size=8, max_delay_ms=0.5)
        first = await asyncio.gather(*[b.infer_future(i) for i in range(3)], return_exceptions=True)
        after = await asyncio.gather(*[b.infer(i) for i in range(5)])  # later batches run normally
        st_ = b.stats()
        await b.aclose()
        return first, after, st_

    first, after, stats = asyncio.run(main())
    assert after == [1, 2, 3, 4, 5]
    if bad == "raise":
        assert all(isinstance(r, KeyError) for r in first)
        assert stats["failures"] == {"model_error": 1}
    elif bad == "tuple":
        assert first == [1, 2, 3] and stats["failures"] == {}
    else:
        assert all(isinstance(r, B.BatchResultError) for r in first)
        assert stats["failures"] == {"result_count": 1}
    assert stats["executions"] == 3  # warm-up, the bad batch, the later one


def test_native_runner_model_cancelling_a_caller_answers_the_rest():
    holder = {}

    def model(xs):
        if len(xs) == 4:
            holder["futs"][1].cancel()  # a caller gives up while its batch runs
        return [x * 2 for x in xs]

    async def main():
        b = await _started(model, max_batch_size=4, max_delay_ms=50)
        futs = [b.infer_future(i) for i in range(4)]
        holder["futs"] = futs
        res = await asyncio.wait_for(asyncio.gather(*futs, return_exceptions=True), T)
        await b.aclose()
        return res

    res = asyncio.run(main())
    assert res[0] == 0 and isinstance(res[1], asyncio.CancelledError) and res[2:] == [4, 6]


def test_loop_submitter_checks_and_falls_back():
    async def main():
        b = await _started(lambda xs: xs, max_batch_size=4, max_delay_ms=0.2, max_queue_size=3)
        sub = b.infer_future
        assert sub.enabled and sub.limit <= 3
        # keywords take the checked path (a task: errors come from the future)
        f = sub(1, priority=2)
        assert isinstance(f, asyncio.Future) and await f == 1
        with pytest.raises(TypeError):
            await sub(1, timeout="soon")
        # a default value spelled out is still the fast path: a plain future
        f = sub(2, timeout=None)
        assert await f == 2
        # over max_queue_size: the checked path raises QueueFull (from the await)
        gate = asyncio.Event()
        futs = [sub(i) for i in range(3)]
        with pytest.raises(B.QueueFull):
            await sub(99)
        assert await asyncio.gather(*futs) == [0, 1, 2]
        del gate
        # from another thread: not the loop's thread, so never the fast path
        err = []

        def other():
            try:
                sub(5)
            except RuntimeError as e:  # no running loop in that thread
                err.append(e)

        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert err
        b.close()
        assert not sub.enabled
        with pytest.raises(B.BatcherClosed):
            await sub(1)  # a held reference falls back to the checked path after close
        with pytest.raises(B.BatcherClosed):
            await b.infer(1)

    asyncio.run(main())


def test_loop_submitter_and_drive_reject_misuse():
    sub = _core().LoopSubmitter([], [])
    with pytest.raises(RuntimeError, match="not bound"):
        sub(1)
    with pytest.raises(TypeError):
        _core().LoopSubmitter((), [])
    with pytest.raises(TypeError):
        sub.enable(1, 2, 3, 4, 5, 0)
    q = _core().BatchQueue(4, 0, [], 0, 0, 1, 0)
    with pytest.raises(TypeError):
        _core().batching_drive_fast(object(), q, lambda xs: xs)
    with pytest.raises(ValueError, match="configure_runner"):
        _core().batching_drive_fast(sub, q, lambda xs: xs)
    with pytest.raises(ValueError, match="sorted"):
        sub.configure_runner(asyncio.Future, asyncio.Future.done, asyncio.Future.set_result,
                             asyncio.InvalidStateError, [2.0, 1.0], [1.0])
    assert sub.take_stats() is None


def test_live_histograms_include_native_batches():
    async def main():
        b = await _started(lambda xs: xs, max_batch_size=8, max_delay_ms=0.2)
        h = b.histograms()["batch_size"]
        before = h.snapshot()["count"]
        await asyncio.gather(*[b.infer_future(i) for i in range(16)])
        after = h.snapshot()["count"]
        assert h.mean() > 0
        await b.aclose()
        return before, after

    before, after = asyncio.run(main())
    assert after >= before + 2  # at least two batches of at most 8


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux-only")
def test_delay_timer_is_a_timerfd_and_never_fires_more_than_the_lead_early():
    async def main():
        b = await _started(lambda xs: xs, max_batch_size=32, max_delay_ms=3)
        lat = []
        for i in range(5):
            t0 = time.monotonic()
            assert await b.infer(i) == i
            lat.append(time.monotonic() - t0)
        t = b._fdtimer
        assert isinstance(t, B._FdTimer) and t.fd >= 0
        fd = t.fd
        await b.aclose()
        return lat, fd, b

    lat, fd, b = asyncio.run(main())
    # A lone request waits for the delay (batch formation rule), less at most the timer lead
    # (the measured wake-up lateness, capped at a quarter of max_delay).
    assert min(lat) >= 0.003 * (1 - B.TIMER_LEAD_MAX_FRACTION) - 1e-4
    assert b._fdtimer is False
    with pytest.raises(OSError):
        os.fstat(fd)  # closed with the batcher


def test_timerfd_arm_rejects_bad_fd():
    if not sys.platform.startswith("linux"):
        assert _core().batching_timerfd() == -1
        return
    with pytest.raises(RuntimeError):
        _core().batching_timerfd_arm(-1, 1)
    fd = _core().batching_timerfd()
    try:
        _core().batching_timerfd_arm(fd, _core().batching_now_ns())  # already due: readable at once
        time.sleep(0.001)
        assert len(os.read(fd, 8)) == 8
        _core().batching_timerfd_arm(fd, 0)  # disarmed: nothing to read
        with pytest.raises(BlockingIOError):
            os.read(fd, 8)
    finally:
        os.close(fd)


def test_timer_lead_follows_the_measured_lateness_and_is_capped():
    """The loop driver sends delay batches early by the 90th percentile of the timer's last 64
    wake-up latenesses, never by more than TIMER_LEAD_MAX_FRACTION of max_delay; the queue's
    delay is max_delay - lead."""
    async def main():
        b = await _started(lambda xs: xs, max_batch_size=32, max_delay_ms=2)
        b._timer_late_ns, b._timer_lead_ns = 0.0, 0
        b._timer_lates.clear()
        for i in range(64):  # a quarter of the wake-ups 80 us late, the rest 10 us: lead = the p90
            b._note_timer_lateness(80_000 if i % 4 == 0 else 10_000)
        assert b._timer_lead_ns == 80_000
        for _ in range(200):
            b._note_timer_lateness(40_000)
        assert abs(b._timer_lead_ns - 40_000) < 2_500
        st = b.stats()["delay_timer"]
        assert abs(st["lead_us"] - 40) < 2.5 and abs(st["lateness_mean_us"] - 40) < 1
        for _ in range(200):  # a loop blocked for a second: each sample is clipped to the cap
            b._note_timer_lateness(10**9)
        cap = 2e6 * B.TIMER_LEAD_MAX_FRACTION
        assert cap - 2_500 <= b._timer_lead_ns <= cap
        # A lone request still waits max_delay - lead (the queue's own delay rule).
        t0 = time.monotonic()
        assert await b.infer(1) == 1
        assert time.monotonic() - t0 >= (2e6 - b._timer_lead_ns) / 1e9 - 1e-4
        b._note_timer_lateness(-5)  # a clock oddity cannot make the lead negative
        assert b._timer_lead_ns >= 0
        await b.aclose()

        s = await _started(lambda xs: xs, max_batch_size=8, max_delay_ms=2, target_p99_ms=50)
        for _ in range(50):
            s._note_timer_lateness(100_000)
        assert s._timer_lead_ns == 0  # the SLO controller owns the delay
        await s.aclose()

    asyncio.run(main())
