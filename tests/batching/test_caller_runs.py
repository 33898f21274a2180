"""``Batcher(..., caller_runs=True)``: a ``batcher(x)`` caller that finds a batch due runs it on
its own thread. Same outcomes as the worker-thread path: results, model errors, QueueFull,
closed, mixed with submit() and timeouts, one batch at a time per model slot."""
import random
import threading
import time

import pytest

from pyperfcore import batching as B

T = 5.0


def test_caller_runs_option_is_checked():
    with pytest.raises(TypeError, match="caller_runs"):
        B.Batcher(lambda xs: xs, caller_runs=1)


def test_callers_run_due_batches_on_their_own_threads():
    where = []

    def model(xs):
        where.append(threading.current_thread().name)
        return [x + 1 for x in xs]

    with B.Batcher(model, max_batch_size=8, max_delay_ms=0, driver="thread", caller_runs=True) as b:
        out = {}

        def caller(k):
            out[k] = [b(k * 100 + i) for i in range(50)]

        ts = [threading.Thread(target=caller, args=(k,), name=f"caller-{k}") for k in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(T)
        assert out == {k: [k * 100 + i + 1 for i in range(50)] for k in range(4)}
        assert any(w.startswith("caller-") for w in where)  # no hand-off to a worker for those
        assert b.stats()["inferences"] == 200


def test_caller_runs_with_a_delay_still_batches_through_the_workers():
    sizes = []

    def model(xs):
        sizes.append(len(xs))
        return xs

    with B.Batcher(model, max_batch_size=16, max_delay_ms=20, driver="thread", caller_runs=True) as b:
        out = {}

        def one(i):
            out[i] = b(i)

        ts = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(T)
        assert out == {i: i for i in range(8)}
        assert max(sizes) > 1  # nothing was due at push time: they waited for the delay together


def test_caller_runs_queue_full_and_closed():
    gate = threading.Event()

    def model(xs):
        if "hold" in xs:
            gate.wait(T)  # releases the GIL: others can push meanwhile
        return xs

    b = B.Batcher(model, max_batch_size=4, max_delay_ms=0, max_queue_size=1, driver="thread", caller_runs=True)
    assert b(0) == 0
    res = {}
    t1 = threading.Thread(target=lambda: res.setdefault("hold", b("hold")))
    t1.start()
    end = time.monotonic() + T
    while b.stats()["in_flight"] == 0 and time.monotonic() < end:  # "hold" runs (on t1)
        time.sleep(0.001)
    t2 = threading.Thread(target=lambda: res.setdefault("queued", b("queued")))
    t2.start()
    while b.stats()["queue_depth"] < 1 and time.monotonic() < end:
        time.sleep(0.001)
    with pytest.raises(B.QueueFull):
        b("over")  # raised at once, not after waiting
    gate.set()
    t1.join(T)
    t2.join(T)
    assert res == {"hold": "hold", "queued": "queued"}
    b.close()
    with pytest.raises(B.BatcherClosed):
        b(1)


@pytest.mark.parametrize("cr", [True, "auto"], ids=["caller-runs", "auto"])
@pytest.mark.parametrize("slow_every", [0, 3], ids=["cheap", "mixed-cost"])
def test_caller_runs_many_threads_with_failing_batches_timeouts_and_submits(cr, slow_every):
    """16 threads mixing plain calls (caller-runs), calls with a timeout and submit(); a third of
    the batches fail; with mixed-cost, every third batch holds the GIL for 60 us so that
    caller_runs="auto" switches between callers and workers during the run. Every call ends with
    its own result or its batch's exception."""
    lock = threading.Lock()
    running = [0]
    peak = [0]
    rnd = random.Random(7)
    calls = [0]

    def model(xs):
        with lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
            fail = rnd.random() < 0.33
            calls[0] += 1
            slow = slow_every and calls[0] % slow_every == 0
        try:
            if slow:
                end = time.perf_counter() + 60e-6
                while time.perf_counter() < end:
                    pass
            if fail:
                raise ValueError(f"batch of {len(xs)} failed")
            return [("ok", x) for x in xs]
        finally:
            with lock:
                running[0] -= 1

    b = B.Batcher(model, max_batch_size=8, max_delay_ms=0, driver="thread", caller_runs=cr)
    outcomes = {}
    olock = threading.Lock()

    def worker(k):
        for i in range(60):
            x = k * 1000 + i
            try:
                if i % 5 == 0:
                    r = b.submit(x).result(T)
                elif i % 7 == 0:
                    r = b(x, timeout=T)
                else:
                    r = b(x)
                assert r == ("ok", x)
                o = "ok"
            except ValueError:
                o = "err"
            with olock:
                outcomes[x] = o

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(16)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(T * 4)
    assert not any(t.is_alive() for t in ts)
    assert len(outcomes) == 16 * 60
    assert peak[0] == 1  # one model slot: never two batches at once, whoever runs them
    st = b.stats()
    assert st["inferences"] == 16 * 60
    assert sum(o == "err" for o in outcomes.values()) > 0 and sum(o == "ok" for o in outcomes.values()) > 0
    b.close()


def test_caller_runs_close_without_drain_while_callers_wait():
    gate = threading.Event()

    def model(xs):
        if "hold" in xs:
            gate.wait(T)
        return xs

    b = B.Batcher(model, max_batch_size=2, max_delay_ms=0, driver="thread", caller_runs=True)
    assert b(0) == 0
    res, errs = {}, {}

    def one(x):
        try:
            res[x] = b(x)
        except Exception as e:  # BatcherClosed for those still queued
            errs[x] = e

    ts = [threading.Thread(target=one, args=("hold",))]
    ts[0].start()
    time.sleep(0.02)
    ts += [threading.Thread(target=one, args=(i,)) for i in range(1, 6)]
    for t in ts[1:]:
        t.start()
    time.sleep(0.05)
    closer = threading.Thread(target=b.close, kwargs={"drain": False})
    closer.start()
    time.sleep(0.02)
    gate.set()
    closer.join(T)
    for t in ts:
        t.join(T)
    assert not any(t.is_alive() for t in ts)
    assert res.get("hold") == "hold"
    assert len(res) + len(errs) == 6
    assert errs and all(isinstance(e, B.BatcherClosed) for e in errs.values())


@pytest.mark.parametrize("cr", [False, True, "auto"], ids=["workers", "caller-runs", "auto"])
def test_base_exception_from_the_model_reaches_the_batch_and_the_batcher_goes_on(cr):
    calls = [0]

    def model(xs):
        calls[0] += 1
        if calls[0] == 2:
            raise SystemExit("model quit")  # not an Exception: still delivered to the batch
        return xs

    b = B.Batcher(model, max_batch_size=4, max_delay_ms=0, driver="thread", caller_runs=cr)
    assert b(1) == 1
    with pytest.raises(SystemExit):
        b(2)
    assert [b(i) for i in range(3, 8)] == list(range(3, 8))  # later batches run normally
    b.close()


def _run_threads(b, n_threads, per, name="caller"):
    out = {}

    def caller(k):
        out[k] = [b(k * 1000 + i) for i in range(per)]

    ts = [threading.Thread(target=caller, args=(k,), name=f"{name}-{k}") for k in range(n_threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(T * 4)
    assert not any(t.is_alive() for t in ts)
    return out


def test_auto_is_the_default_and_a_cheap_model_runs_on_the_callers():
    where = []

    def model(xs):
        where.append(threading.current_thread().name)
        return [x * 3 for x in xs]

    with B.Batcher(model, max_batch_size=8, max_delay_ms=0, driver="thread") as b:
        assert b.caller_runs == "auto"
        out = _run_threads(b, 4, 100)
        assert out == {k: [(k * 1000 + i) * 3 for i in range(100)] for k in range(4)}
        st = b.stats()
        assert st["inferences"] == 400
        cr = st["caller_runs"]
        assert cr["mode"] == "auto" and cr["callers_run_batches"]
        assert 0 < cr["model_time_ewma_us"] <= B.CALLER_RUNS_MAX_MODEL_US
    assert sum(w.startswith("caller-") for w in where) > len(where) // 2


def test_auto_hands_a_costly_model_to_the_workers_which_batch():
    where = []
    sizes = []

    def model(xs):  # 300 us of CPU per batch: callers running it alone would get batches of one
        where.append(threading.current_thread().name)
        sizes.append(len(xs))
        end = time.perf_counter() + 300e-6
        while time.perf_counter() < end:
            time.sleep(0)  # (lets the GIL go, as a native model does, so callers can queue meanwhile;
            # a loop that held it for the whole batch made the batch sizes depend on the scheduler)
        return [x - 1 for x in xs]

    with B.Batcher(model, max_batch_size=16, max_delay_ms=0, driver="thread", caller_runs="auto") as b:
        out = _run_threads(b, 8, 60)
        assert out == {k: [k * 1000 + i - 1 for i in range(60)] for k in range(8)}
        cr = b.stats()["caller_runs"]
        assert cr["model_time_ewma_us"] > B.CALLER_RUNS_MAX_MODEL_US and not cr["callers_run_batches"]
    # The first batches (no model time known yet) may run on callers; the rest run on workers.
    on_callers = sum(w.startswith("caller-") for w in where)
    assert on_callers <= 3, (on_callers, len(where), where[:10])
    later = sizes[len(sizes) // 2:]
    assert sum(later) / len(later) > 1.5, later  # the workers batch what queued while the model ran


def test_auto_returns_to_callers_when_the_model_gets_cheap():
    slow = [True]

    def model(xs):
        if slow[0]:
            time.sleep(0.002)
        return list(xs)

    with B.Batcher(model, max_batch_size=8, max_delay_ms=0, driver="thread") as b:
        for i in range(5):
            assert b(i) == i
        assert not b.stats()["caller_runs"]["callers_run_batches"]
        slow[0] = False
        for i in range(200):  # workers' batches lower the mean too
            assert b(i) == i
        assert b.stats()["caller_runs"]["callers_run_batches"]


def test_auto_without_the_native_runner_leaves_batches_to_the_workers():
    where = []

    def model(a):
        where.append(threading.current_thread().name)
        return a + 1

    import numpy as np

    with B.Batcher(model, max_batch_size=4, max_delay_ms=0, stack=True, driver="thread") as b:
        assert [int(b(np.int64(i))) for i in range(20)] == [i + 1 for i in range(20)]
        assert "caller_runs" not in b.stats()
    assert all(w.startswith("pyperfcore-batcher") for w in where)


@pytest.mark.parametrize("cr", [False, True, "auto"], ids=["workers", "caller-runs", "auto"])
@pytest.mark.parametrize("how", ["plain", "timeout"])
def test_blocking_call_from_inside_the_model_is_refused_not_a_hang(cr, how):
    """A model that calls its own batcher (one model slot) would wait forever for the slot its batch
    holds: the inner call raises RuntimeError at once, the outer caller gets that as the model's
    error, and the batcher goes on serving."""
    holder = {}

    def model(xs):
        if xs[0] == "outer":
            inner = holder["b"]
            return [inner("inner") if how == "plain" else inner("inner", timeout=5.0) for _ in xs]
        return [x.upper() for x in xs]

    with B.Batcher(model, max_batch_size=4, max_delay_ms=0, driver="thread", caller_runs=cr) as b:
        holder["b"] = b
        out = {}

        def call():
            try:
                out["r"] = b("outer")
            except Exception as exc:  # noqa: BLE001 - recorded for the assertions
                out["e"] = exc

        t = threading.Thread(target=call)
        t.start()
        t.join(T)
        assert not t.is_alive()
        assert isinstance(out.get("e"), RuntimeError) and "its own model" in str(out["e"])
        assert b("fine") == "FINE"  # nothing wedged


def test_two_model_slots_allow_a_nested_call_and_manual_driver_refuses_it():
    holder = {}

    def model(xs):
        if xs[0] == "outer":
            return [holder["b"]("inner") for _ in xs]
        return [x.upper() for x in xs]

    with B.Batcher(model, max_batch_size=1, max_delay_ms=0, driver="thread", max_concurrent_batches=2) as b:
        holder["b"] = b
        assert b("outer") == "INNER"  # the second slot serves the nested call

    now = [0.0]
    m = B.Batcher(model, max_batch_size=1, max_delay_ms=0, clock=lambda: now[0])
    holder["b"] = m
    f = m.submit("outer")
    m.step()  # the model's nested m("inner") would wait for a step() that can never come
    with pytest.raises(RuntimeError, match="its own model"):
        f.result(0)
    m.close()
