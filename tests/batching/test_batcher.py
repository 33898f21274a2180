"""The Python Batcher: threads, asyncio, failures, timeouts, cancellation, closing, fork."""
import asyncio
import concurrent.futures as cf
import os
import threading
import time

import numpy as np
import pytest

from pyperfcore import batching as B

T = 5.0  # bound on every wait: a bug fails the test instead of hanging it


def double(xs):
    return [x * 2 for x in xs]


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_thread_callers_get_their_own_results():
    with B.Batcher(double, max_batch_size=8, max_delay_ms=1) as b:
        assert b(21) == 42
        futs = [b.submit(i) for i in range(50)]
        assert [f.result(T) for f in futs] == [2 * i for i in range(50)]
        st = b.stats()
        assert st["inferences"] == 51 and st["executions"] >= 51 / 8
        assert st["batch_size"]["count"] == st["executions"]


def test_many_threads(n_threads=16, per=300):
    sizes = []

    def fn(xs):
        sizes.append(len(xs))
        return [(x[0], x[1] * 3) for x in xs]

    errors = []
    with B.Batcher(fn, max_batch_size=16, max_delay_ms=0.5) as b:
        def worker(t):
            for i in range(per):
                out = b((t, i)) if i % 2 else b.submit((t, i)).result(T)
                if out != (t, i * 3):
                    errors.append((t, i, out))

        ts = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        assert not any(t.is_alive() for t in ts)
    assert not errors
    assert sum(sizes) == n_threads * per and max(sizes) <= 16
    assert b.stats()["mean_batch_size"] > 1


def test_asyncio_callers_and_async_fn():
    async def model(xs):
        await asyncio.sleep(0)
        return [x + 1 for x in xs]

    async def main():
        b = B.Batcher(model, max_batch_size=32, max_delay_ms=1)
        async def caller(c):
            return [await b.infer(c * 1000 + i) for i in range(50)]
        outs = await asyncio.wait_for(asyncio.gather(*[caller(c) for c in range(64)]), T)
        for c, o in enumerate(outs):
            assert o == [c * 1000 + i + 1 for i in range(50)]
        st = b.stats()
        await b.aclose()
        return st

    st = asyncio.run(main())
    assert st["inferences"] == 64 * 50 and st["mean_batch_size"] > 8


def test_asyncio_sync_fn_with_attributes_and_threads_mixed():
    async def main():
        b = B.Batcher(double, max_batch_size=4, max_delay_ms=1)
        r = await asyncio.wait_for(asyncio.gather(*[b.infer(i, priority=i % 3, key=i % 2, timeout=2.0)
                                                    for i in range(20)]), T)
        assert r == [2 * i for i in range(20)]
        # A thread submitting into the loop-driven batcher.
        loop = asyncio.get_running_loop()
        res = await asyncio.wait_for(loop.run_in_executor(None, lambda: [b.submit(i).result(T) for i in range(5)]), T)
        assert res == [0, 2, 4, 6, 8]
        await b.aclose()
    asyncio.run(main())


def test_thread_driven_batcher_serves_asyncio_callers():
    b = B.Batcher(double, max_batch_size=4, max_delay_ms=1)
    assert b(1) == 2  # thread driver now

    async def main():
        return await asyncio.wait_for(asyncio.gather(*[b.infer(i) for i in range(10)]), T)

    assert asyncio.run(main()) == [2 * i for i in range(10)]
    b.close()


def test_model_exception_goes_to_every_caller_of_that_batch_only():
    clock = Clock()
    calls = []

    def fn(xs):
        calls.append(list(xs))
        if "bad" in xs:
            raise KeyError("boom")
        return xs

    b = B.Batcher(fn, max_batch_size=3, max_delay_ms=10, clock=clock)
    f = [b.submit(x) for x in ["a", "bad", "c", "d", "e", "f"]]
    assert b.step() == 2
    for i in range(3):
        with pytest.raises(KeyError, match="boom"):
            f[i].result(0)
    assert [x.result(0) for x in f[3:]] == ["d", "e", "f"]
    assert b.stats()["failures"] == {"model_error": 1}


@pytest.mark.parametrize("bad", [lambda xs: xs[:-1], lambda xs: None, lambda xs: 5, lambda xs: xs + xs])
def test_wrong_result_count_is_an_error_for_each_caller(bad):
    clock = Clock()
    b = B.Batcher(bad, max_batch_size=3, max_delay_ms=0, clock=clock)
    fs = [b.submit(i) for i in range(3)]
    b.step()
    for f in fs:
        with pytest.raises(B.BatchResultError, match="result|length|None"):
            f.result(0)
    # Later batches run normally once the function behaves.
    b.fn = double
    g = b.submit(4)
    b.step()
    assert g.result(0) == 8


def test_delay_clock_and_preferred_sizes_with_injected_clock():
    clock = Clock()
    seen = []

    def fn(xs):
        seen.append(len(xs))
        return xs

    b = B.Batcher(fn, max_batch_size=16, max_delay_ms=10, preferred_batch_sizes=[4], clock=clock)
    for i in range(3):
        b.submit(i)
        clock.t += 0.001
    assert b.step() == 0 and seen == []
    assert b.next_wake() == pytest.approx(1000.010)
    clock.t = 1000.0099
    assert b.step() == 0
    clock.t = 1000.010
    assert b.step() == 1 and seen == [3]
    for i in range(5):
        b.submit(i)
    assert b.step() == 1 and seen == [3, 4]  # preferred size 4 goes at once
    st = b.stats()
    assert st["sent"]["delay"] == 1 and st["sent"]["preferred"] == 1
    b.close()
    assert seen == [3, 4, 1]  # drained at close


def test_timeout_expires_in_queue_and_never_reaches_model():
    clock = Clock()
    seen = []
    b = B.Batcher(lambda xs: seen.extend(xs) or xs, max_batch_size=8, max_delay_ms=50, clock=clock)
    f1 = b.submit("late", timeout=0.01)
    f2 = b.submit("ok")
    clock.t += 0.02
    b.step()
    with pytest.raises(TimeoutError):
        f1.result(0)
    assert not f2.done()
    clock.t += 0.05
    b.step()
    assert f2.result(0) == "ok" and seen == ["ok"]
    assert b.stats()["timeouts"] == 1


def test_deadline_expires_promptly_while_model_busy_threads():
    release = threading.Event()

    def slow(xs):
        release.wait(T)
        return xs

    with B.Batcher(slow, max_batch_size=1, max_delay_ms=0) as b:
        first = b.submit("busy")
        time.sleep(0.01)
        t0 = time.monotonic()
        f = b.submit("waits", timeout=0.02)
        with pytest.raises(TimeoutError):
            f.result(T)
        waited = time.monotonic() - t0
        with pytest.raises(TimeoutError):
            b("also", timeout=0.02)
        release.set()
        assert first.result(T) == "busy"
    assert waited < 2.0  # answered at its deadline, not when the 5 s model call ended


def test_deadline_expires_promptly_while_model_busy_asyncio():
    async def main():
        gate = asyncio.Event()

        async def slow(xs):
            await gate.wait()
            return xs

        b = B.Batcher(slow, max_batch_size=1, max_delay_ms=0)
        first = asyncio.ensure_future(b.infer("busy"))
        await asyncio.sleep(0.005)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(b.infer("waits", timeout=0.02), T)
        gate.set()
        assert await asyncio.wait_for(first, T) == "busy"
        await b.aclose()
    asyncio.run(main())


def test_queue_full_raises_at_once_and_closed_raises():
    clock = Clock()
    b = B.Batcher(double, max_batch_size=2, max_delay_ms=10, max_queue_size=3, clock=clock)
    for i in range(3):
        b.submit(i)
    with pytest.raises(B.QueueFull):
        b.submit(3)
    with pytest.raises(B.QueueFull):
        b.submit_many([1, 2])
    b.close()
    with pytest.raises(B.BatcherClosed):
        b.submit(1)
    with pytest.raises(B.BatcherClosed):
        b(1)
    assert b.stats()["rejected"]["full"] >= 2


def test_cancelled_future_frees_its_place_and_never_wedges():
    clock = Clock()
    seen = []
    b = B.Batcher(lambda xs: seen.extend(xs) or xs, max_batch_size=4, max_delay_ms=10, max_queue_size=2, clock=clock)
    f1 = b.submit(1)
    f2 = b.submit(2)
    assert f1.cancel()
    f3 = b.submit(3)  # the cancelled request's place is free
    clock.t += 1
    b.step()
    assert seen == [2, 3] and f2.result(0) == 2 and f3.result(0) == 3
    assert b.stats()["cancellations"] == 1


def test_cancelled_asyncio_tasks_free_places():
    async def main():
        b = B.Batcher(double, max_batch_size=4, max_delay_ms=5, max_queue_size=4)
        tasks = [asyncio.ensure_future(b.infer(i, priority=1)) for i in range(4)]
        await asyncio.sleep(0)
        for t in tasks[:3]:
            t.cancel()
        fast = [asyncio.ensure_future(b.infer(i)) for i in range(3)]
        r = await asyncio.wait_for(asyncio.gather(*fast, tasks[3]), T)
        assert r == [0, 2, 4, 6]
        for t in tasks[:3]:
            assert t.cancelled()
        await b.aclose()
    asyncio.run(main())


def test_close_without_drain_fails_queued_requests():
    clock = Clock()
    b = B.Batcher(double, max_batch_size=4, max_delay_ms=100, clock=clock)
    fs = [b.submit(i) for i in range(3)]
    b.close(drain=False)
    for f in fs:
        with pytest.raises(B.BatcherClosed):
            f.result(0)


def test_close_drain_answers_everyone_threads():
    release = threading.Event()
    b = B.Batcher(lambda xs: release.wait(T) and xs, max_batch_size=2, max_delay_ms=1000)
    fs = [b.submit(i) for i in range(7)]
    threading.Timer(0.01, release.set).start()
    b.close(drain=True, timeout=T)
    assert [f.result(0) for f in fs] == list(range(7))
    assert b.stats()["sent"]["drain"] >= 1


def test_stack_numpy_and_torch_like():
    clock = Clock()
    b = B.Batcher(lambda a: a.sum(axis=1), max_batch_size=4, max_delay_ms=0, stack=True, clock=clock)
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal(5).astype(np.float32) for _ in range(4)]
    fs = [b.submit(x) for x in xs]
    b.step()
    for x, f in zip(xs, fs):
        np.testing.assert_allclose(f.result(0), x.sum(), rtol=1e-5)
    # Mismatched shapes: a clear error to each caller, not a crash.
    fs = [b.submit(np.zeros(3)), b.submit(np.zeros(4))]
    b.step()
    for f in fs:
        with pytest.raises(ValueError):
            f.result(0)


def test_stack_torch():
    torch = pytest.importorskip("torch")
    clock = Clock()
    b = B.Batcher(lambda t: t * 2, max_batch_size=4, max_delay_ms=0, stack=True, clock=clock)
    fs = [b.submit(torch.full((3,), float(i))) for i in range(4)]
    b.step()
    for i, f in enumerate(fs):
        assert torch.equal(f.result(0), torch.full((3,), 2.0 * i))


def test_cost_limit_rejects_or_splits():
    clock = Clock()
    batches = []

    def fn(xs):
        batches.append(list(xs))
        return [len(x) for x in xs]

    b = B.Batcher(fn, max_batch_size=10, max_delay_ms=0, max_batch_cost=5, clock=clock)
    with pytest.raises(B.RequestTooLarge):
        b.submit("abcdefg", cost=7)
    fs = [b.submit("ab", cost=2), b.submit("abc", cost=3), b.submit("a", cost=1)]
    b.step()
    assert [f.result(0) for f in fs] == [2, 3, 1]
    assert all(sum(len(x) for x in bt) <= 5 for bt in batches)

    def split(x, max_cost):
        return [(x[i:i + max_cost], len(x[i:i + max_cost])) for i in range(0, len(x), max_cost)]

    b2 = B.Batcher(fn, max_batch_size=10, max_delay_ms=0, max_batch_cost=5, splitter=split, merger=sum, clock=clock)
    f = b2.submit("abcdefghijkl", cost=12)
    b2.step()
    assert f.result(0) == 12


def test_batched_decorator_sync_and_async():
    @B.batched(max_batch_size=8, max_delay_ms=1)
    def model(xs):
        return [x.upper() for x in xs]

    assert model("a") == "A"
    with cf.ThreadPoolExecutor(8) as ex:
        assert list(ex.map(model, "abcdefgh" * 4)) == list("ABCDEFGH" * 4)
    model.batcher.close()

    @B.batched(max_batch_size=8, max_delay_ms=1)
    async def amodel(xs):
        return [x * 10 for x in xs]

    async def main():
        r = await asyncio.wait_for(asyncio.gather(*[amodel(i) for i in range(20)]), T)
        await amodel.batcher.aclose()
        return r

    assert asyncio.run(main()) == [i * 10 for i in range(20)]


@pytest.mark.parametrize("kwargs, err", [
    (dict(max_batch_size=0), ValueError), (dict(max_batch_size=-3), ValueError), (dict(max_batch_size=2.5), TypeError),
    (dict(max_delay_ms=-1), ValueError), (dict(max_queue_size=0), ValueError), (dict(max_concurrent_batches=0), ValueError),
    (dict(preferred_batch_sizes=[64]), ValueError), (dict(max_batch_cost=0), ValueError),
    (dict(driver="nope"), ValueError), (dict(target_p99_ms=0), ValueError),
])
def test_bad_config_is_a_clear_error(kwargs, err):
    with pytest.raises(err):
        B.Batcher(double, **kwargs)


def test_bad_call_arguments():
    with pytest.raises(TypeError, match="callable"):
        B.Batcher(42)
    clock = Clock()
    b = B.Batcher(double, clock=clock)
    with pytest.raises(ValueError, match="timeout"):
        b.submit(1, timeout=-1)
    with pytest.raises(ValueError, match="cost"):
        b.submit(1, cost=-2)
    with pytest.raises(TypeError, match="priority"):
        b.submit(1, priority="high")
    with pytest.raises(TypeError, match="hashable"):
        b.submit(1, key=[1, 2])
    assert b.submit_many([]) == []
    b.close()


def test_priority_with_batcher_and_keys_with_padding():
    clock = Clock()
    got = []
    b = B.Batcher(lambda xs: got.append(list(xs)) or xs, max_batch_size=2, max_delay_ms=1, clock=clock)
    for x, p in [("lo1", 0), ("hi1", 5), ("lo2", 0), ("hi2", 5)]:
        b.submit(x, priority=p)
    clock.t += 1
    b.step()
    assert got == [["hi1", "hi2"], ["lo1", "lo2"]]
    got.clear()
    seqs = [np.arange(n, dtype=np.float32) for n in (3, 7, 2, 9, 5)]
    for s in seqs:
        b.submit(s, key=B.bucket_for(len(s), [4, 8, 16]))
    clock.t += 1
    b.step()
    for batch in got:
        assert len({B.bucket_for(len(s), [4, 8, 16]) for s in batch}) == 1
    batch, mask = B.pad_batch(got[0], buckets=[4, 8, 16])
    assert batch.shape[1] in (4, 8, 16) and mask.sum() == sum(len(s) for s in got[0])


def test_pad_batch():
    a, m = B.pad_batch([np.ones((2, 3)), np.ones((4, 3))])
    assert a.shape == (2, 4, 3) and m.tolist() == [[True, True, False, False], [True] * 4]
    assert a[0, 2:].sum() == 0
    e, em = B.pad_batch([])
    assert e.shape[0] == 0
    with pytest.raises(ValueError, match="trailing"):
        B.pad_batch([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(ValueError, match="exceeds"):
        B.bucket_for(99, [4, 8])


def test_histogram():
    h = B.Histogram([1, 2, 4])
    for v in [0.5, 1.5, 3, 3, 10]:
        h.observe(v)
    snap = h.snapshot()
    assert snap["count"] == 5 and snap["buckets"][-1][1] == 5 and snap["buckets"][0] == (1.0, 1)
    assert h.quantile(0.5) == 4 and h.quantile(1.0) == 10


def test_slo_policy_shortens_delay_when_model_is_slow():
    def model(xs):
        time.sleep(0.002 + 0.0002 * len(xs))
        return xs

    with B.Batcher(model, max_batch_size=16, max_delay_ms=20, target_p99_ms=10) as b:
        for _ in range(6):
            fs = [b.submit(i) for i in range(8)]
            [f.result(T) for f in fs]
        st = b.stats()["slo"]
    # 20 ms of delay would break a 10 ms target: the learned policy uses less.
    assert st["delay_ms"] < 10 and st["model_ms_fixed"] + st["model_ms_per_item"] > 0


def test_fork_child_gets_a_working_batcher():
    if not hasattr(os, "fork"):
        pytest.skip("no fork")
    b = B.Batcher(double, max_batch_size=4, max_delay_ms=1)
    assert b(2) == 4  # parent's worker threads running
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: the parent's threads are gone, the batcher restarts its own
        code = 1
        try:
            # keyword path, then the plain call (caller_runs="auto" slot path) from two threads
            ok = b(5, timeout=2) == 10 and b(6) == 12
            out = []
            ts = [threading.Thread(target=lambda k=k: out.append(b(k))) for k in range(4)]
            for t in ts:
                t.start()
            for t in ts:
                t.join(5)
            code = 0 if ok and sorted(out) == [0, 2, 4, 6] else 2
        finally:
            os.write(w, bytes([code]))
            os._exit(0)
    os.close(w)
    data = os.read(r, 1)
    os.waitpid(pid, 0)
    assert data == b"\x00"
    assert b(3) == 6
    b.close()
