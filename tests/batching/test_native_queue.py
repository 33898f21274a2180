"""The native queue driven directly with an explicit clock (ns): batch formation rules."""
import pytest

from pyperfcore._runtime import _core

NO = 2**63 - 1
MS = 1_000_000


def make(max_batch_size=4, delay_ms=10, preferred=(), max_cost=0, max_queue=0, slots=1, starve_ms=0):
    return _core().BatchQueue(max_batch_size, delay_ms * MS, list(preferred), max_cost, max_queue, slots,
                              starve_ms * MS)


def push(q, rid, now, key=0, prio=0, cost=1, deadline=NO):
    return q.push(rid, key, prio, cost, deadline, now)


def poll(q, now):
    ids, key, reason, expired, dropped, wake, finished, oldest, cost = q.poll(now)
    return dict(ids=ids, key=key, reason=reason, expired=expired, dropped=dropped, wake=wake, finished=finished,
                oldest=oldest, cost=cost)


FULL, PREFERRED, DELAY, DRAIN = 1, 2, 3, 4


def test_full_batch_is_sent_at_once_and_delay_clock_is_oldest_age():
    q = make(max_batch_size=4, delay_ms=10)
    for i in range(6):
        assert push(q, i, now=i * MS) == 0
    p = poll(q, 6 * MS)
    assert p["ids"] == [0, 1, 2, 3] and p["reason"] == FULL and p["oldest"] == 0
    q.batch_done()
    p = poll(q, 7 * MS)
    assert p["ids"] == [] and p["wake"] == 4 * MS + 10 * MS  # oldest left is #4, enqueued at 4 ms
    p = poll(q, 14 * MS)
    assert p["ids"] == [4, 5] and p["reason"] == DELAY


def test_no_batch_while_model_slot_busy_and_queue_keeps_growing():
    q = make(max_batch_size=2, delay_ms=1)
    for i in range(2):
        push(q, i, 0)
    assert poll(q, 0)["ids"] == [0, 1]
    for i in range(2, 7):
        push(q, i, 0)
    # Long past the delay, but the only slot is busy: nothing is formed on a timer.
    p = poll(q, 50 * MS)
    assert p["ids"] == [] and q.size() == 5
    q.batch_done()
    assert poll(q, 50 * MS)["ids"] == [2, 3]


def test_concurrent_slots():
    q = make(max_batch_size=2, delay_ms=1, slots=2)
    for i in range(6):
        push(q, i, 0)
    assert poll(q, 0)["ids"] == [0, 1]
    assert poll(q, 0)["ids"] == [2, 3]
    assert poll(q, 0)["ids"] == []
    assert q.in_flight() == 2


def test_preferred_sizes_send_largest_available_at_once():
    q = make(max_batch_size=16, delay_ms=100, preferred=(4, 8))
    for i in range(3):
        push(q, i, 0)
    assert poll(q, 0)["ids"] == []
    for i in range(3, 10):
        push(q, i, 0)
    p = poll(q, 0)
    assert p["ids"] == list(range(8)) and p["reason"] == PREFERRED


def test_keys_never_mix():
    q = make(max_batch_size=3, delay_ms=5)
    for i in range(7):
        push(q, i, 0, key=i % 2)
    seen = []
    now = 0
    while q.size():
        p = poll(q, now)
        if p["ids"]:
            assert len({i % 2 for i in p["ids"]}) == 1 and p["key"] == p["ids"][0] % 2
            seen += p["ids"]
            q.batch_done()
        else:
            now = p["wake"]
    assert sorted(seen) == list(range(7))


def test_cost_limit_and_too_costly():
    q = make(max_batch_size=100, delay_ms=5, max_cost=10)
    assert push(q, 0, 0, cost=11) == 3  # too costly: rejected
    for i, c in enumerate([4, 4, 4, 3]):
        push(q, i + 1, 0, cost=c)
    p = poll(q, 0)  # queued cost 15 >= 10: sent, but only what fits
    assert p["ids"] == [1, 2] and p["cost"] == 8 and p["reason"] == FULL
    q.batch_done()
    p = poll(q, 5 * MS)
    assert p["ids"] == [3, 4] and p["cost"] == 7


def test_priority_order_and_fifo_within_level():
    q = make(max_batch_size=4, delay_ms=1)
    push(q, 1, 0, prio=0)
    push(q, 2, 0, prio=5)
    push(q, 3, 0, prio=0)
    push(q, 4, 0, prio=5)
    push(q, 5, 0, prio=9)
    p = poll(q, 0)
    assert p["ids"] == [5, 2, 4, 1]


def test_starvation_protection():
    q = make(max_batch_size=1, delay_ms=0, starve_ms=20)
    push(q, 100, 0, prio=0)
    rid = 0
    order = []
    for t in range(0, 40):  # a stream of high-priority work arriving every ms
        push(q, rid, t * MS, prio=10)
        rid += 1
        p = poll(q, t * MS)
        order += p["ids"]
        q.batch_done() if p["ids"] else None
    assert 100 in order
    assert order.index(100) <= 22  # served once it has waited 20 ms, not after the stream ends


def test_strict_priority_without_starvation_option():
    q = make(max_batch_size=1, delay_ms=0)
    push(q, 100, 0, prio=0)
    order = []
    for t in range(40):
        push(q, t, t * MS, prio=10)
        p = poll(q, t * MS)
        order += p["ids"]
        q.batch_done()
    assert 100 not in order


def test_expired_requests_are_removed_while_model_busy():
    q = make(max_batch_size=2, delay_ms=1)
    push(q, 0, 0)
    push(q, 1, 0)
    assert poll(q, 0)["ids"] == [0, 1]  # slot now busy
    push(q, 2, 0, deadline=5 * MS)
    push(q, 3, 0)
    p = poll(q, 1 * MS)
    assert p["expired"] == [] and p["wake"] == 5 * MS  # wakes for the deadline although busy
    p = poll(q, 5 * MS)
    assert p["expired"] == [2] and p["ids"] == []
    q.batch_done()
    assert poll(q, 5 * MS)["ids"] == [3]


def test_max_queue_size_and_cancel_frees_place():
    q = make(max_queue=3)
    for i in range(3):
        assert push(q, i, 0) == 0
    assert push(q, 3, 0) == 1  # full
    assert q.cancel(1) and not q.cancel(1) and not q.cancel(999)
    assert push(q, 3, 0) == 0
    assert push(q, 3, 0) == 1  # full again
    assert q.cancel(0)
    assert push(q, 3, 0) == 4  # duplicate id
    p = poll(q, 100 * MS)
    assert p["ids"] == [2, 3]
    c = q.counters()
    assert c["rejected_full"] == 2 and c["cancelled"] == 2


def test_push_many_all_or_nothing():
    q = make(max_batch_size=8, max_queue=10)
    assert q.push_many(100, 8, 0, 0, 1, NO, 0) == 0
    assert q.push_many(200, 3, 0, 0, 1, NO, 0) == 1
    assert q.size() == 8
    assert poll(q, 0)["ids"] == list(range(100, 108))


def test_close_drain_and_drop():
    q = make(max_batch_size=4, delay_ms=1000)
    for i in range(6):
        push(q, i, 0)
    q.close(True)
    assert push(q, 9, 0) == 2
    p = poll(q, 0)
    assert p["ids"] == [0, 1, 2, 3]
    q.batch_done()
    p = poll(q, 0)  # drained without waiting for the delay
    assert p["ids"] == [4, 5] and p["reason"] == DRAIN
    q.batch_done()
    assert poll(q, 0)["finished"]
    q2 = make()
    for i in range(3):
        push(q2, i, 0)
    q2.close(False)
    p = poll(q2, 0)
    assert sorted(p["dropped"]) == [0, 1, 2] and p["finished"]


def test_bad_config():
    with pytest.raises(ValueError, match="max_batch_size"):
        make(max_batch_size=0)
    with pytest.raises(ValueError, match="preferred"):
        make(max_batch_size=4, preferred=(8,))
    with pytest.raises(ValueError, match="max_concurrent"):
        make(slots=0)


def test_blocking_wait_releases_and_times_out():
    q = make(max_batch_size=2, delay_ms=1000)
    push(q, 0, _core().batching_now_ns())
    ids = q.wait(2 * MS)[0]  # not due: returns empty after the timeout
    assert ids == []
    push(q, 1, _core().batching_now_ns())
    assert q.wait(1000 * MS)[0] == [0, 1]


def test_compaction_after_many_cancels():
    q = make(max_batch_size=4, delay_ms=1)
    for i in range(5000):
        push(q, i, 0, deadline=10**12)
    for i in range(0, 5000, 2):
        q.cancel(i)
    for i in range(1, 5000, 2):
        q.cancel(i)
    assert q.size() == 0
    push(q, 7777, 0)
    assert poll(q, MS)["ids"] == [7777]
