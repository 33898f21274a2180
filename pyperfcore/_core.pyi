"""
pyperfcore native core (private; use the public pyperfcore modules)
"""
from __future__ import annotations
import collections.abc
import numpy
import numpy.typing
import typing
__all__: list[str] = ['BatchQueue', 'Completions', 'DRIFT_FORMAT_VERSION', 'DriftCategoryCounts', 'DriftHistogram', 'DriftMoments', 'DriftStringCoder', 'InferCall', 'InferEntry', 'LoopSubmitter', 'PackedHalf', 'PackedInt8', 'SlotBatch', 'amx_available', 'amx_bf16_available', 'amx_blocking', 'amx_enabled', 'apply_activation', 'attention', 'batching_bench_engine', 'batching_bench_mutex_queue', 'batching_drive_fast', 'batching_now_ns', 'batching_timerfd', 'batching_timerfd_arm', 'compiled_cpu_targets', 'default_num_threads', 'dequantize_int8', 'drift_chi2_contingency', 'drift_chi2_sf', 'drift_hellinger', 'drift_jensen_shannon', 'drift_ks_2samp', 'drift_ks_2samp_pvalue', 'drift_ks_binned', 'drift_kstwo_sf', 'drift_linf', 'drift_normal_two_sided', 'drift_psi', 'drift_small_support', 'drift_smirnov_sf', 'drift_sort', 'drift_wasserstein', 'drift_wasserstein_binned', 'drift_wasserstein_many', 'gemm_u8s8', 'get_cpu_target', 'get_num_threads', 'half_uses_amx', 'linear_half', 'linear_w8a8', 'linear_w8a8_static', 'mlp_w8a8', 'murmur3_x64_128', 'murmur64a', 'parallel_sum_test', 'prepost_batched_nms', 'prepost_compress_embeddings', 'prepost_l2_normalize', 'prepost_pad_sequences', 'prepost_preprocess_images', 'prepost_resize_taps', 'prepost_sigmoid_threshold', 'prepost_softmax', 'prepost_tabular_encode', 'prepost_topk', 'quantize_int8', 'quantize_rows_u8', 'quantize_rows_u8_static', 'set_amx_blocking', 'set_amx_enabled', 'set_cpu_target', 'set_num_threads', 'supported_cpu_targets']
class PackedInt8:
    """
    INT8 weights packed for the W8A8 GEMM (see linear.hpp).
    """
    @staticmethod
    def from_int8(w: typing.Annotated[numpy.typing.ArrayLike, numpy.int8], scales: typing.Annotated[numpy.typing.ArrayLike, numpy.float32]) -> PackedInt8:
        ...
    @staticmethod
    def from_packed(n: typing.SupportsInt | typing.SupportsIndex, k: typing.SupportsInt | typing.SupportsIndex, data: typing.Annotated[numpy.typing.ArrayLike, numpy.int8], scales: typing.Annotated[numpy.typing.ArrayLike, numpy.float32]) -> PackedInt8:
        ...
    @property
    def colsum(self) -> numpy.typing.NDArray[numpy.int32]:
        ...
    @property
    def data(self) -> numpy.typing.NDArray[numpy.int8]:
        ...
    @property
    def k(self) -> int:
        ...
    @property
    def kp(self) -> int:
        ...
    @property
    def n(self) -> int:
        ...
    @property
    def nbytes(self) -> int:
        ...
    @property
    def scales(self) -> numpy.typing.NDArray[numpy.float32]:
        ...
class PackedHalf:
    """
    FP16/BF16 weights packed in 64-column panels (see linear.hpp).
    """
    @staticmethod
    def from_float(w: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], type: str) -> PackedHalf:
        ...
    @staticmethod
    def from_packed(n: typing.SupportsInt | typing.SupportsIndex, k: typing.SupportsInt | typing.SupportsIndex, type: str, data: typing.Annotated[numpy.typing.ArrayLike, numpy.uint16]) -> PackedHalf:
        ...
    @property
    def data(self) -> numpy.typing.NDArray[numpy.uint16]:
        ...
    @property
    def k(self) -> int:
        ...
    @property
    def n(self) -> int:
        ...
    @property
    def nbytes(self) -> int:
        ...
    @property
    def type(self) -> str:
        ...
class LoopSubmitter:
    """
    LoopSubmitter(inputs, futures): the asyncio fast path's per-request step (see pyperfcore.batching). Calling it returns an asyncio.Future.
    """
    @staticmethod
    def __new__(type, *args, **kwargs):
        """
        Create and return a new object.  See help(type) for accurate signature.
        """
    @staticmethod
    def aw(*args, **kwargs):
        """
        aw(x, **kw): the fast path's future, or fallback_aw(x, **kw) (an awaitable).
        """
    @staticmethod
    def configure_runner(*args, **kwargs):
        """
        configure_runner(future_type, done, set_result, InvalidStateError, size_bounds, time_bounds): lets batching_drive_fast run fast-path batches of a sync model natively.
        """
    @staticmethod
    def coroutine_entry(*args, **kwargs):
        """
        A callable for `await batcher.infer(x)`: with one positional argument an InferCall (a native coroutine object: when first awaited it queues the request on the fast path and awaits its future, or awaits fallback_coroutine(x)); with keywords fallback_coroutine(x, **kw).
        """
    @staticmethod
    def disable(*args, **kwargs):
        """
        Every later call takes the fallback.
        """
    @staticmethod
    def enable(*args, **kwargs):
        """
        enable(create_future, call_soon, drive, fallback, fallback_aw, thread_id, fallback_coroutine=fallback_aw): bind to a loop.
        """
    @staticmethod
    def take_stats(*args, **kwargs):
        """
        The runner's batch statistics since the last call (then reset), or None.
        """
    def __call__(self, *args, **kwargs):
        """
        Call self as a function.
        """
class InferCall:
    """
    One `batcher.infer(x)` call on the asyncio fast path: a coroutine for asyncio (create_task, gather, wait_for, TaskGroup), awaitable once; the request is queued when it is first awaited. Closing or throwing into it cancels the request.
    """
    @staticmethod
    def close(*args, **kwargs):
        """
        close(): cancels the request's future (the request is dropped).
        """
    @staticmethod
    def send(*args, **kwargs):
        """
        send(value): as a coroutine's send (the first one queues the request).
        """
    @staticmethod
    def throw(*args, **kwargs):
        """
        throw(exc): cancels the request's future (the request is dropped) and raises exc.
        """
    def __await__(self):
        """
        Return an iterator to be used in await expression.
        """
    def __iter__(self):
        """
        Implement iter(self).
        """
    def __next__(self):
        """
        Implement next(self).
        """
class InferEntry:
    """
    The asyncio fast path's `batcher.infer` (see LoopSubmitter.coroutine_entry).
    """
    def __call__(self, *args, **kwargs):
        """
        Call self as a function.
        """
class Completions:
    def __init__(self) -> None:
        ...
    def complete(self, ids: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex]) -> None:
        ...
    def expect(self, id: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def forget(self, id: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def size(self) -> int:
        ...
    def wait(self, id: typing.SupportsInt | typing.SupportsIndex, timeout_ns: typing.SupportsInt | typing.SupportsIndex) -> bool:
        """
        Waits with the GIL released; False on timeout.
        """
class SlotBatch:
    """
    The per-call slots of the batch a worker thread is running.
    """
    def __init__(self) -> None:
        ...
    def size(self) -> int:
        ...
class BatchQueue:
    def __init__(self, max_batch_size: typing.SupportsInt | typing.SupportsIndex, max_delay_ns: typing.SupportsInt | typing.SupportsIndex, preferred: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex] = [], max_batch_cost: typing.SupportsInt | typing.SupportsIndex = 0, max_queue_size: typing.SupportsInt | typing.SupportsIndex = 10000, max_concurrent_batches: typing.SupportsInt | typing.SupportsIndex = 1, starvation_ns: typing.SupportsInt | typing.SupportsIndex = 0) -> None:
        ...
    def batch_done(self) -> None:
        ...
    def call_slot(self, x: typing.Any) -> typing.Any:
        """
        One blocking default-attribute request through a per-call slot: returns the result, raises the model's exception, or _BatchSlotStatus(push status; -2 dropped by close).
        """
    def call_slot_runs(self, completions: Completions, x: typing.Any, handler: typing.Any, runner: typing.Any, fn: typing.Any, outcome: typing.Any, inline_max_ns: typing.SupportsInt | typing.SupportsIndex = -1) -> typing.Any:
        """
        call_slot in caller-runs mode: runs due batches on the calling thread through handler(runs, reason, oldest, slot_inputs, expired, dropped) -> (slot results, ok, answered ids) until its own request is answered; with inline_max_ns >= 0 only while the runner's mean model time is at most that many ns.
        """
    def cancel(self, id: typing.SupportsInt | typing.SupportsIndex) -> bool:
        ...
    def close(self, drain: bool) -> None:
        ...
    def closed(self) -> bool:
        ...
    def config(self) -> dict:
        ...
    def counters(self) -> dict:
        ...
    def cycle(self, completions: Completions, answered: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], batch_done: bool, timeout_ns: typing.SupportsInt | typing.SupportsIndex) -> tuple:
        """
        complete(answered) + [batch_done] + wait_runs(timeout_ns), with the GIL released throughout.
        """
    def cycle_slots(self, completions: Completions, answered: collections.abc.Sequence[typing.SupportsInt | typing.SupportsIndex], batch_done: bool, timeout_ns: typing.SupportsInt | typing.SupportsIndex, slots: SlotBatch, results: typing.Any, ok: bool, runner: typing.Any = None, fn: typing.Any = None, outcome: typing.Any = None) -> tuple[list, int, int, typing.Any, typing.Any, int, bool, int, int, int, typing.Any]:
        """
        cycle() plus the per-call slots: answers the previous batch's slot callers with results (or the exception when ok is false), then returns poll_runs' tuple for the other ids and, last, the inputs of the new batch's slot requests (None if none).
        """
    def enter_model(self) -> int:
        """
        Marks this thread as running this queue's model; returns a token for exit_model.
        """
    def exit_model(self, token: typing.SupportsInt | typing.SupportsIndex) -> None:
        """
        Undoes enter_model (token: what it returned).
        """
    def in_flight(self) -> int:
        ...
    def in_model(self) -> bool:
        """
        True while this thread runs this queue's model.
        """
    def interrupt(self) -> None:
        ...
    def poll(self, now_ns: typing.SupportsInt | typing.SupportsIndex) -> tuple:
        """
        Non-blocking: (ids, key, reason, expired, dropped, next_wake_ns, finished, oldest_enqueue_ns, cost).
        """
    def poll_runs(self, now_ns: typing.SupportsInt | typing.SupportsIndex) -> tuple:
        """
        poll() with the batch as runs [(first_id, count), ...] instead of ids, and the queued count last.
        """
    def push(self, id: typing.SupportsInt | typing.SupportsIndex, key: typing.SupportsInt | typing.SupportsIndex, priority: typing.SupportsInt | typing.SupportsIndex, cost: typing.SupportsInt | typing.SupportsIndex, deadline_ns: typing.SupportsInt | typing.SupportsIndex, now_ns: typing.SupportsInt | typing.SupportsIndex) -> int:
        ...
    def push_many(self, first_id: typing.SupportsInt | typing.SupportsIndex, n: typing.SupportsInt | typing.SupportsIndex, key: typing.SupportsInt | typing.SupportsIndex, priority: typing.SupportsInt | typing.SupportsIndex, cost: typing.SupportsInt | typing.SupportsIndex, deadline_ns: typing.SupportsInt | typing.SupportsIndex, now_ns: typing.SupportsInt | typing.SupportsIndex) -> int:
        ...
    def push_poll_runs(self, first_id: typing.SupportsInt | typing.SupportsIndex, n: typing.SupportsInt | typing.SupportsIndex, now_ns: typing.SupportsInt | typing.SupportsIndex) -> tuple[int, tuple]:
        """
        push_many(first_id, n) with default attributes, then poll_runs(now): (push status, poll).
        """
    def push_wait(self, completions: Completions, id: typing.SupportsInt | typing.SupportsIndex, key: typing.SupportsInt | typing.SupportsIndex, priority: typing.SupportsInt | typing.SupportsIndex, cost: typing.SupportsInt | typing.SupportsIndex, deadline_ns: typing.SupportsInt | typing.SupportsIndex, now_ns: typing.SupportsInt | typing.SupportsIndex, timeout_ns: typing.SupportsInt | typing.SupportsIndex) -> int:
        """
        expect + push + wait in one call: 0 answered, -1 timed out, > 0 the push status (nothing queued), -3 called from inside this queue's own model with one model slot (nothing queued).
        """
    def set_policy(self, max_batch_size: typing.SupportsInt | typing.SupportsIndex, max_delay_ns: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def size(self) -> int:
        ...
    def wait(self, timeout_ns: typing.SupportsInt | typing.SupportsIndex) -> tuple:
        """
        Blocking poll on the steady clock with the GIL released (timeout < 0: none).
        """
    def wait_runs(self, timeout_ns: typing.SupportsInt | typing.SupportsIndex) -> tuple:
        """
        wait() with the batch as runs [(first_id, count), ...].
        """
class _BatchSlotStatus(RuntimeError):
    pass
class _DsHll:
    @staticmethod
    def deserialize(arg0: bytes) -> _DsHll:
        ...
    @staticmethod
    def union_of(arg0: _DsHll, arg1: _DsHll, arg2: typing.SupportsInt | typing.SupportsIndex) -> _DsHll:
        ...
    @staticmethod
    def union_update(arg0: _DsHll, arg1: _DsHll, arg2: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    @staticmethod
    def union_update_many(arg0: _DsHll, arg1: collections.abc.Sequence, arg2: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def __copy__(self) -> _DsHll:
        ...
    def __init__(self, arg0: typing.SupportsInt | typing.SupportsIndex, arg1: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def composite_estimate(self) -> float:
        ...
    def copy_as(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> _DsHll:
        ...
    def estimate(self) -> float:
        ...
    def is_empty(self) -> bool:
        ...
    def lower_bound(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> float:
        ...
    def registers(self) -> numpy.typing.NDArray[numpy.uint8]:
        ...
    def serialize(self, arg0: bool) -> bytes:
        ...
    def update(self, arg0: typing.Any) -> None:
        ...
    def upper_bound(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> float:
        ...
    @property
    def lg_k(self) -> int:
        ...
    @property
    def mode(self) -> int:
        ...
    @property
    def out_of_order(self) -> bool:
        ...
    @property
    def type(self) -> int:
        ...
class _RedisHll:
    @staticmethod
    def deserialize(arg0: bytes) -> _RedisHll:
        ...
    def __copy__(self) -> _RedisHll:
        ...
    def __init__(self) -> None:
        ...
    def estimate(self) -> int:
        ...
    def merge(self, arg0: _RedisHll) -> None:
        ...
    def registers(self) -> numpy.typing.NDArray[numpy.uint8]:
        ...
    def serialize(self) -> bytes:
        ...
    def update(self, arg0: typing.Any) -> None:
        ...
    @property
    def is_sparse(self) -> bool:
        ...
class _Kll:
    @staticmethod
    def deserialize(arg0: bytes) -> _Kll:
        ...
    @staticmethod
    def deserialize_ds(arg0: bytes, arg1: typing.SupportsInt | typing.SupportsIndex, arg2: typing.SupportsInt | typing.SupportsIndex) -> _Kll:
        ...
    def __copy__(self) -> _Kll:
        ...
    def __init__(self, arg0: typing.SupportsInt | typing.SupportsIndex, arg1: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def merge(self, arg0: _Kll) -> None:
        ...
    def quantiles(self, arg0: typing.Annotated[numpy.typing.ArrayLike, numpy.float64]) -> numpy.typing.NDArray[numpy.float64]:
        ...
    def ranks(self, arg0: typing.Annotated[numpy.typing.ArrayLike, numpy.float64]) -> numpy.typing.NDArray[numpy.float64]:
        ...
    def serialize(self) -> bytes:
        ...
    def serialize_ds(self, arg0: typing.SupportsInt | typing.SupportsIndex) -> bytes:
        ...
    def update(self, arg0: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]]) -> None:
        ...
    @property
    def k(self) -> int:
        ...
    @property
    def max(self) -> float:
        ...
    @property
    def min(self) -> float:
        ...
    @property
    def n(self) -> int:
        ...
    @property
    def num_retained(self) -> int:
        ...
class DriftHistogram:
    """
    Counts over fixed bin edges; counts = [below, bins..., above, NaN].
    """
    @staticmethod
    def from_bytes(arg0: typing.Any) -> DriftHistogram:
        ...
    def __init__(self, edges: typing.Annotated[numpy.typing.ArrayLike, numpy.float64]) -> None:
        ...
    def clear(self) -> None:
        ...
    def merge(self, other: DriftHistogram) -> None:
        ...
    def to_bytes(self) -> bytes:
        ...
    def update(self, x: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], target: typing.Any = None) -> None:
        ...
    @property
    def bins(self) -> int:
        ...
    @property
    def counts(self) -> numpy.typing.NDArray[numpy.uint64]:
        ...
    @property
    def edges(self) -> numpy.typing.NDArray[numpy.float64]:
        ...
    @property
    def total(self) -> int:
        ...
class DriftMoments:
    """
    Count, mean and central moments M2..M4 of finite values; NaN/inf counted apart.
    """
    @staticmethod
    def from_bytes(arg0: typing.Any) -> DriftMoments:
        ...
    def __init__(self) -> None:
        ...
    def clear(self) -> None:
        ...
    def merge(self, other: DriftMoments) -> None:
        ...
    def to_bytes(self) -> bytes:
        ...
    def update(self, x: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], target: typing.Any = None) -> None:
        ...
    @property
    def state(self) -> dict:
        ...
class DriftCategoryCounts:
    """
    Counts of int64 codes: [0..k) categories, then unknown, then missing.
    """
    @staticmethod
    def from_bytes(arg0: typing.Any) -> DriftCategoryCounts:
        ...
    def __init__(self, k: typing.SupportsInt | typing.SupportsIndex) -> None:
        ...
    def clear(self) -> None:
        ...
    def merge(self, other: DriftCategoryCounts) -> None:
        ...
    def to_bytes(self) -> bytes:
        ...
    def update(self, codes: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]]) -> None:
        ...
    @property
    def categories(self) -> int:
        ...
    @property
    def counts(self) -> numpy.typing.NDArray[numpy.uint64]:
        ...
class DriftStringCoder:
    """
    Hash table from str / bytes values to dense codes in first-seen order.
    """
    def __init__(self) -> None:
        ...
    def __len__(self) -> int:
        ...
    def count(self, values: typing.Any, insert: bool = True) -> typing.Any:
        """
        Like encode, but returns counts: [unknown, missing, code 0, code 1, ...] (len(self) + 2).
        """
    def encode(self, values: typing.Any, insert: bool = True) -> typing.Any:
        """
        Codes of a 1-D 'U' / 'S' / object array, list or tuple: None and float NaN -> -1, a value not
        in the table -> -2 unless insert. Returns None when an object item is not str, bytes, None or
        a float NaN (with insert, the keys of the items before it may have been added).
        """
    def sorted_codes(self) -> numpy.typing.NDArray[numpy.int64]:
        """
        Codes in ascending key order (Python's order for all-str or all-bytes keys).
        """
    def values(self) -> list:
        """
        The keys in code order (str or bytes).
        """
    @property
    def mixed_kinds(self) -> bool:
        ...
def _ds_coupons_u64(keys: typing.Annotated[numpy.typing.ArrayLike, numpy.uint64], is_f64: bool, target: typing.Any = None) -> numpy.typing.NDArray[numpy.uint32]:
    ...
def _ds_hll_candidates(keys: typing.Annotated[numpy.typing.ArrayLike, numpy.uint64], is_f64: bool, regs: typing.Annotated[numpy.typing.ArrayLike, numpy.uint8], lg_k: typing.SupportsInt | typing.SupportsIndex, target: typing.Any = None) -> numpy.typing.NDArray[numpy.uint32]:
    ...
def _ds_murmur3_u64(keys: typing.Annotated[numpy.typing.ArrayLike, numpy.uint64], seed: typing.SupportsInt | typing.SupportsIndex, target: typing.Any = None) -> tuple[numpy.typing.NDArray[numpy.uint64], numpy.typing.NDArray[numpy.uint64]]:
    ...
def _max_bytes(r: typing.Annotated[numpy.typing.ArrayLike, numpy.uint8], s: typing.Annotated[numpy.typing.ArrayLike, numpy.uint8], target: typing.Any = None) -> None:
    ...
def amx_available() -> bool:
    """
    True when the CPU has AMX-INT8 and the OS grants the tile state.
    """
def amx_bf16_available() -> bool:
    """
    True when bf16 layers compute on AMX-BF16 tiles (activations rounded to bf16) on the avx512_vnni target.
    """
def amx_blocking() -> bool:
    """
    True when the AMX INT8 GEMM uses 32-row 2x2 tile blocking.
    """
def amx_enabled() -> bool:
    """
    True when the avx512_vnni INT8 GEMM uses AMX tiles for batches >= 8.
    """
def apply_activation(v: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], activation: str) -> numpy.typing.NDArray[numpy.float32]:
    """
    The scalar epilogue activation (for tests).
    """
def attention(q: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], k: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], v: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], mask: typing.Any = None, scale: typing.SupportsFloat | typing.SupportsIndex = 1.0, threads: typing.SupportsInt | typing.SupportsIndex = 0, target: typing.Any = None) -> numpy.typing.NDArray[numpy.float32]:
    """
    Fused attention over [B, H, T, D] float32 q/k/v with an additive [B, T] key mask: returns [B, T, H, D].
    """
def batching_bench_engine(producers: typing.SupportsInt | typing.SupportsIndex, in_flight: typing.SupportsInt | typing.SupportsIndex, per_producer: typing.SupportsInt | typing.SupportsIndex, max_batch_size: typing.SupportsInt | typing.SupportsIndex, max_delay_ns: typing.SupportsInt | typing.SupportsIndex, caller_runs: bool = False, use_call: bool = False) -> tuple[float, float]:
    """
    C++ producers through the Engine with a no-op model: (round trips/s, mean batch size); use_call: Engine::call(n) per round trip instead of submit + wait.
    """
def batching_bench_mutex_queue(producers: typing.SupportsInt | typing.SupportsIndex, per_producer: typing.SupportsInt | typing.SupportsIndex, max_batch_size: typing.SupportsInt | typing.SupportsIndex) -> float:
    """
    Baseline: blocking producers through a plain mutex + condition variable queue (round trips/s).
    """
def batching_drive_fast(sub: typing.Any, queue: ..., fn: typing.Any) -> tuple:
    """
    The asyncio driver's common case in one call: (push_status, poll_runs tuple or None, finish or None).
    """
def batching_now_ns() -> int:
    """
    The steady clock the native queue waits on (CLOCK_MONOTONIC).
    """
def batching_timerfd() -> int:
    """
    A non-blocking timerfd on the monotonic clock, or -1 where there is none (not Linux).
    """
def batching_timerfd_arm(fd: typing.SupportsInt | typing.SupportsIndex, deadline_ns: typing.SupportsInt | typing.SupportsIndex) -> None:
    """
    Arms the timerfd at an absolute monotonic deadline (0 disarms).
    """
def compiled_cpu_targets() -> list[str]:
    """
    Names of the CPU targets compiled into this build.
    """
def default_num_threads() -> int:
    """
    PYPERFCORE_NUM_THREADS, else OMP_NUM_THREADS, else the cores available.
    """
def dequantize_int8(q: typing.Annotated[numpy.typing.ArrayLike, numpy.int8], scales: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], target: typing.Any = None) -> numpy.typing.NDArray[numpy.float32]:
    """
    float32 q * scales[channel] for q as [outer, channels, inner].
    """
def drift_chi2_contingency(ref: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], cur: typing.Annotated[numpy.typing.ArrayLike, numpy.float64]) -> tuple[float, float, float]:
    ...
def drift_chi2_sf(x: typing.SupportsFloat | typing.SupportsIndex, dof: typing.SupportsFloat | typing.SupportsIndex) -> float:
    ...
def drift_hellinger(ref: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], cur: typing.Annotated[numpy.typing.ArrayLike, numpy.float64]) -> float:
    ...
def drift_jensen_shannon(ref: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], cur: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], base: typing.SupportsFloat | typing.SupportsIndex = 0.0) -> float:
    ...
def drift_ks_2samp(data1: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], data2: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], method: str = 'auto', presorted: bool = False, alternative: str = 'two-sided', buckets: typing.SupportsInt | typing.SupportsIndex = 0, target: typing.Any = None) -> tuple[float, float, float, int, str]:
    ...
def drift_ks_2samp_pvalue(n1: typing.SupportsInt | typing.SupportsIndex, n2: typing.SupportsInt | typing.SupportsIndex, d: typing.SupportsFloat | typing.SupportsIndex, method: str = 'auto', alternative: str = 'two-sided') -> tuple[float, float, str]:
    ...
def drift_ks_binned(ref: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], cur: typing.Annotated[numpy.typing.ArrayLike, numpy.float64]) -> tuple[float, float]:
    ...
def drift_kstwo_sf(d: typing.SupportsFloat | typing.SupportsIndex, n: typing.SupportsInt | typing.SupportsIndex) -> float:
    ...
def drift_linf(ref: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], cur: typing.Annotated[numpy.typing.ArrayLike, numpy.float64]) -> float:
    ...
def drift_normal_two_sided(z: typing.SupportsFloat | typing.SupportsIndex) -> float:
    ...
def drift_psi(ref: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], cur: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], eps: typing.SupportsFloat | typing.SupportsIndex = 0.0001) -> float:
    ...
def drift_small_support(reference: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], current: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], cap: typing.SupportsInt | typing.SupportsIndex) -> typing.Any:
    """
    (sorted distinct values, reference counts, current counts) of two NaN-free samples when they
    have at most `cap` distinct values together, else None (found without sorting).
    """
def drift_smirnov_sf(n: typing.SupportsInt | typing.SupportsIndex, x: typing.SupportsFloat | typing.SupportsIndex) -> float:
    ...
def drift_sort(x: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]]) -> numpy.typing.NDArray[numpy.float64]:
    ...
def drift_wasserstein(u: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], v: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], presorted: bool = False, buckets: typing.SupportsInt | typing.SupportsIndex = 0, target: typing.Any = None) -> float:
    ...
def drift_wasserstein_binned(ref: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], cur: typing.Annotated[numpy.typing.ArrayLike, numpy.float64], edges: typing.Annotated[numpy.typing.ArrayLike, numpy.float64]) -> float:
    ...
def drift_wasserstein_many(us: list, vs: list, target: typing.Any = None) -> numpy.typing.NDArray[numpy.float64]:
    """
    Wasserstein-1 of each (us[i], vs[i]) pair, columns spread over the thread pool.
    """
def gemm_u8s8(a: typing.Annotated[numpy.typing.ArrayLike, numpy.uint8], w: PackedInt8, target: typing.Any = None, threads: typing.SupportsInt | typing.SupportsIndex = 0) -> numpy.typing.NDArray[numpy.int32]:
    """
    INT32 c = a @ w^T for uint8 activations a [m, kp] and packed INT8 weights.
    """
def get_cpu_target() -> str:
    """
    The CPU target kernels dispatch to (PYPERFCORE_CPU_TARGET, or the best supported).
    """
def get_num_threads() -> int:
    """
    Threads used by native parallel loops.
    """
def half_uses_amx(w: PackedHalf, target: typing.Any = None) -> bool:
    """
    Whether linear_half takes the AMX-BF16 path for these weights on this target (AMX enabled).
    """
def linear_half(x: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], w: PackedHalf, bias: typing.Any = None, activation: str = 'none', residual: typing.Any = None, threads: typing.SupportsInt | typing.SupportsIndex = 0, target: typing.Any = None) -> numpy.typing.NDArray[numpy.float32]:
    """
    FP16/BF16-weight linear computed in fp32 with the fused epilogue.
    """
def linear_w8a8(x: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], w: PackedInt8, bias: typing.Any = None, activation: str = 'none', residual: typing.Any = None, symmetric_act: bool = False, threads: typing.SupportsInt | typing.SupportsIndex = 0, target: typing.Any = None) -> numpy.typing.NDArray[numpy.float32]:
    """
    W8A8 linear: per-token uint8 activations x INT8 weights, fused dequant + bias + activation + residual.
    """
def linear_w8a8_static(x: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], w: PackedInt8, act_scale: typing.SupportsFloat | typing.SupportsIndex, bias: typing.Any = None, activation: str = 'none', residual: typing.Any = None, threads: typing.SupportsInt | typing.SupportsIndex = 0, target: typing.Any = None) -> numpy.typing.NDArray[numpy.float32]:
    """
    W8A8 linear with static (calibrated) per-tensor symmetric activation quantization.
    """
def mlp_w8a8(x: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], w1: PackedInt8, bias1: typing.Any, activation1: str, w2: PackedInt8, bias2: typing.Any, activation2: str = 'none', residual: typing.Any = None, symmetric_act1: bool = False, symmetric_act2: bool = False, threads: typing.SupportsInt | typing.SupportsIndex = 0, target: typing.Any = None) -> numpy.typing.NDArray[numpy.float32]:
    """
    Two W8A8 layers in one call (Linear -> activation -> Linear): the intermediate stays in a native buffer. Same bits as two linear_w8a8 calls.
    """
def murmur3_x64_128(arg0: bytes, arg1: typing.SupportsInt | typing.SupportsIndex) -> tuple[int, int]:
    ...
def murmur64a(arg0: bytes, arg1: typing.SupportsInt | typing.SupportsIndex) -> int:
    ...
def parallel_sum_test(n: typing.SupportsInt | typing.SupportsIndex) -> int:
    ...
def prepost_batched_nms(boxes: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], scores: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], idxs: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], iou_threshold: typing.SupportsFloat | typing.SupportsIndex) -> numpy.typing.NDArray[numpy.int64]:
    ...
def prepost_compress_embeddings(x: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], normalize: bool, eps: typing.SupportsFloat | typing.SupportsIndex, target: typing.Any = None) -> tuple:
    ...
def prepost_l2_normalize(x: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], eps: typing.SupportsFloat | typing.SupportsIndex, target: typing.Any = None) -> numpy.typing.NDArray[numpy.float32]:
    ...
def prepost_pad_sequences(ids: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], offsets: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], length: typing.SupportsInt | typing.SupportsIndex, pad_id: typing.SupportsInt | typing.SupportsIndex, keep_end: bool, pad_left: bool) -> tuple:
    ...
def prepost_preprocess_images(images: typing.Any, geometry: typing.Annotated[numpy.typing.ArrayLike, numpy.int64], channels: typing.SupportsInt | typing.SupportsIndex, out_h: typing.SupportsInt | typing.SupportsIndex, out_w: typing.SupportsInt | typing.SupportsIndex, antialias: bool, swap_rb: bool, mean: collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex], inv_std: collections.abc.Sequence[typing.SupportsFloat | typing.SupportsIndex], layout: typing.SupportsInt | typing.SupportsIndex, dtype: typing.SupportsInt | typing.SupportsIndex, out_scale: typing.SupportsFloat | typing.SupportsIndex, out: typing.Any = None, target: typing.Any = None) -> numpy.ndarray[typing.Any, numpy.dtype[typing.Any]]:
    """
    Fused resize/crop/normalize/layout/dtype of uint8 HWC images (a [N,H,W,C] batch or a list); geometry [n, 4] = (resize_h, resize_w, top, left) per image.
    """
def prepost_resize_taps(in_size: typing.SupportsInt | typing.SupportsIndex, out_size: typing.SupportsInt | typing.SupportsIndex, antialias: bool) -> tuple:
    """
    (start int32 [out], count int32 [out], weights float32 [out, max_taps]) of one resize axis.
    """
def prepost_sigmoid_threshold(logits: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], logit_threshold: typing.SupportsFloat | typing.SupportsIndex, scale: typing.Any = None, target: typing.Any = None) -> numpy.ndarray[typing.Any, numpy.dtype[typing.Any]]:
    """
    bool mask logits > logit_threshold.
    """
def prepost_softmax(logits: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], log: bool, scale: typing.Any = None, target: typing.Any = None) -> numpy.typing.NDArray[numpy.float32]:
    """
    softmax or log_softmax of each row, float32.
    """
def prepost_tabular_encode(columns: list, rows: typing.SupportsInt | typing.SupportsIndex) -> numpy.typing.NDArray[numpy.float32]:
    ...
def prepost_topk(logits: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], k: typing.SupportsInt | typing.SupportsIndex, softmax: bool, scale: typing.Any = None, target: typing.Any = None) -> tuple:
    """
    Top-k of each row (values desc, ties lower index), optionally as softmax probabilities.
    """
def quantize_int8(x: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], target: typing.Any = None) -> tuple:
    """
    Symmetric INT8 quantization of a 3-D [outer, channels, inner] float32/float16 view along its middle axis. Returns (q int8 [outer, channels, inner], scales float32 [channels]). ValueError on NaN or inf.
    """
def quantize_rows_u8(x: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], symmetric: bool = False, target: typing.Any = None) -> tuple[numpy.typing.NDArray[numpy.uint8], numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int32]]:
    """
    Per-token uint8 quantization of float32 [m, k]: (q uint8 [m, round_up(k, 4)], scales [m], zero points [m]).
    """
def quantize_rows_u8_static(x: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], scale: typing.SupportsFloat | typing.SupportsIndex, target: typing.Any = None) -> tuple[numpy.typing.NDArray[numpy.uint8], numpy.typing.NDArray[numpy.float32], numpy.typing.NDArray[numpy.int32]]:
    """
    Static symmetric uint8 quantization of float32 [m, k] with one scale: (q [m, round_up(k, 4)], scales, zero points 128).
    """
def set_amx_blocking(on: bool) -> None:
    """
    Select the AMX INT8 GEMM blocking: 32 rows x 2x2 tiles (True, default) or 16-row blocks (False); same results.
    """
def set_amx_enabled(on: bool) -> None:
    """
    Allow (default) or forbid AMX in the avx512_vnni INT8 GEMM; results are identical either way.
    """
def set_cpu_target(name: str) -> None:
    """
    Force the CPU target; ValueError if this CPU cannot run it.
    """
def set_num_threads(n: typing.SupportsInt | typing.SupportsIndex) -> None:
    """
    Set the threads used by native parallel loops.
    """
def supported_cpu_targets() -> list[str]:
    """
    Names of the compiled CPU targets this CPU can run.
    """
DRIFT_FORMAT_VERSION: int = 1
__version__: str = '0.1.0'
