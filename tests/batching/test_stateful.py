"""Hypothesis state machine: random arrivals, keys, priorities, costs, deadlines, cancellations
and failing model calls through a manually clocked Batcher. Every request gets exactly one
outcome, no batch breaks its limits or mixes keys, and close(drain=True) answers everyone."""
import concurrent.futures as cf

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from pyperfcore import batching as B

MAX_BATCH, MAX_COST, MAX_QUEUE = 4, 6, 12


class BatcherMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.t = 100.0
        self.fail_next = False
        self.batches = []
        self.b = B.Batcher(self.model, max_batch_size=MAX_BATCH, max_delay_ms=5, max_batch_cost=MAX_COST,
                           max_queue_size=MAX_QUEUE, starvation_ms=20, clock=lambda: self.t)
        self.futs = {}  # request -> future
        self.rejected = 0
        self.n = 0

    def model(self, xs):
        self.batches.append(list(xs))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("model failed")
        return [("ok", x) for x in xs]

    @rule(key=st.integers(0, 2), prio=st.integers(-1, 2), cost=st.integers(1, MAX_COST),
          timeout=st.one_of(st.none(), st.floats(0.0, 0.02)))
    def submit(self, key, prio, cost, timeout):
        req = (self.n, key, cost)
        self.n += 1
        try:
            self.futs[req] = self.b.submit(req, key=key, priority=prio, cost=cost, timeout=timeout)
        except B.QueueFull:
            self.rejected += 1

    @rule(ms=st.floats(0.0, 10.0))
    def advance(self, ms):
        self.t += ms / 1e3
        self.b.step()

    @rule(i=st.integers(0, 1000))
    def cancel(self, i):
        pending = [f for f in self.futs.values() if not f.done()]
        if pending:
            pending[i % len(pending)].cancel()

    @rule()
    def fail_next_batch(self):
        self.fail_next = True

    @invariant()
    def batches_respect_limits(self):
        for bt in self.batches:
            assert 1 <= len(bt) <= MAX_BATCH
            assert len({r[1] for r in bt}) == 1, bt
            assert sum(r[2] for r in bt) <= MAX_COST
        seen = [r for bt in self.batches for r in bt]
        assert len(seen) == len(set(seen)), "a request reached the model twice"

    @invariant()
    def queue_bounded(self):
        assert self.b.stats()["queue_depth"] <= MAX_QUEUE

    def teardown(self):
        self.b.close(drain=True)
        ran = {r for bt in self.batches for r in bt}
        for req, f in self.futs.items():
            assert f.done(), f"request {req} left unanswered after close(drain=True)"
            if f.cancelled():
                assert req not in ran  # a cancelled request never reaches the model
                continue
            exc = f.exception(0)
            if exc is None:
                assert f.result(0) == ("ok", req)  # its own result, never another's
                assert req in ran
            elif isinstance(exc, TimeoutError):
                assert req not in ran  # an expired request never reaches the model
            else:
                assert isinstance(exc, RuntimeError) and req in ran
        st_ = self.b.stats()
        assert st_["inferences"] == len([r for bt in self.batches for r in bt])


TestBatcherMachine = BatcherMachine.TestCase
TestBatcherMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
