// Python bindings of the batching core (private: pyperfcore.batching is the public API).
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <utility>
#include <new>
#include <condition_variable>
#include <mutex>
#include <stdexcept>

#if defined(__linux__)
#include <sys/timerfd.h>
#include <unistd.h>
#include <cerrno>
#include <cstring>
#endif

#include "../bindings/bind.hpp"
#include "batching.hpp"
#include "batching_bench.hpp"

namespace pyperfcore {

namespace py = pybind11;
using batching::BatchQueue;
using batching::Completions;
using batching::Config;
using batching::Poll;
using batching::Push;

namespace {

// The batch as runs of consecutive ids [(first, count), ...]: callers that number their
// requests consecutively (bulk and loop-buffered submissions) look them up per run, not per id.
py::list runs_of(const std::vector<uint64_t>& ids) {
  py::list out;
  size_t i = 0, n = ids.size();
  while (i < n) {
    size_t j = i + 1;
    while (j < n && ids[j] == ids[j - 1] + 1) ++j;
    out.append(py::make_tuple(ids[i], j - i));
    i = j;
  }
  return out;
}

py::tuple poll_runs_tuple(const Poll& p) {
  return py::make_tuple(runs_of(p.ids), p.key, static_cast<int>(p.reason), py::cast(p.expired), py::cast(p.dropped),
                        p.next_wake_ns, p.finished, p.oldest_enqueue_ns, p.cost, p.queued);
}

py::tuple poll_tuple(const Poll& p) {
  // (ids, key, reason, expired, dropped, next_wake_ns, finished, oldest_enqueue_ns, cost)
  return py::make_tuple(py::cast(p.ids), p.key, static_cast<int>(p.reason), py::cast(p.expired),
                        py::cast(p.dropped), p.next_wake_ns, p.finished, p.oldest_enqueue_ns, p.cost);
}

// ---------------------------------------------------------------- per-call slots (batcher(x))
//
// A blocking thread caller's request lives in a slot on the caller's own C++ stack: the input
// reference (borrowed: the caller's frame holds it until the call returns), the outcome and a
// tiny mutex/condvar. The slot's address travels through the queue as the request's tag, so the
// worker reads inputs and writes results without any Python object or table entry per request.
// Ids of slot requests are >= kSlotBase; the worker's slot-aware cycle strips them from what
// Python sees.
constexpr uint64_t kSlotBase = (uint64_t{1} << 62) + (uint64_t{1} << 61);
std::atomic<uint64_t> g_slot_ids{0};

struct CallSlot {
  PyObject* x = nullptr;    // borrowed
  PyObject* res = nullptr;  // new reference: the result or the exception (set with the GIL held)
  bool ok = true;
  int state = 0;            // 0 waiting, 1 answered, 2 dropped by close(drain=False); guarded by m
  std::mutex m;
  std::condition_variable cv;
};

// The batcher whose model this thread is running now (nullptr: none). A blocking batcher(x) from
// inside that model would wait for the model slot its own batch holds (one slot): refused with a
// clear error instead of hanging.
thread_local const BatchQueue* t_model_queue = nullptr;
struct ModelScope {
  explicit ModelScope(const BatchQueue* q) : prev(t_model_queue) { t_model_queue = q; }
  ~ModelScope() { t_model_queue = prev; }
  ModelScope(const ModelScope&) = delete;
  ModelScope& operator=(const ModelScope&) = delete;
  const BatchQueue* prev;
};
inline bool reentrant_call(const BatchQueue& q) {
  return t_model_queue == &q && q.config().max_concurrent_batches == 1;
}

void wake_slot(CallSlot* s, int state) {
  // Notify while holding the lock: the caller cannot return (and destroy the slot) before the
  // lock is released, and nothing touches the slot after that.
  std::lock_guard<std::mutex> lk(s->m);
  s->state = state;
  s->cv.notify_one();
}

// The slots of the batch a worker is running (one object per worker thread, reused).
struct SlotBatch {
  std::vector<CallSlot*> slots;
};

struct SlotStatus : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// ---------------------------------------------------------------- loop submitter (asyncio)
//
// The per-request half of the asyncio fast path, as a plain CPython type with vectorcall (a
// pybind11 function call costs several times more than the whole request). Calling it with one
// positional argument on the driving loop's thread, while the fast path is enabled and below its
// admission limit, makes the request's future, appends (x, future) to the two lists the Python
// driver shares with it, schedules the driver once per loop iteration and returns the future.
// Anything else (keywords, another thread, disabled, at the limit) goes to the fallback
// callable with the same arguments, so every check of the checked path still applies.
// It holds references to loop methods and to the batcher's bound driver (a cycle through the
// batcher): hence GC support.
// Id space of the loop fast path (pyperfcore.batching._FAST_BASE .. _BULK_BASE).
constexpr uint64_t kFastBase = uint64_t{1} << 61;
constexpr uint64_t kBulkBase = uint64_t{1} << 62;

// Batch statistics the native runner keeps until Python folds them into its Histograms
// (Histogram.observe's rules: bisect_left on the bounds, len(bounds) + 1 buckets).
struct RunHist {
  std::vector<double> bounds;
  std::vector<int64_t> counts;
  double sum = 0, max = 0;
  int64_t count = 0;
  void observe(double v) {
    counts[static_cast<size_t>(std::lower_bound(bounds.begin(), bounds.end(), v) - bounds.begin())] += 1;
    sum += v;
    count += 1;
    if (v > max) max = v;
  }
  void reset() {
    std::fill(counts.begin(), counts.end(), 0);
    sum = max = 0;
    count = 0;
  }
};
struct RunStats {
  RunHist batch_size, queue_wait, model_time;
  int64_t executions = 0, inferences = 0, cancellations = 0;
  bool pending = false;
  // Exponentially weighted mean (weight 1/8) of natively run batches' model time, ns; kept
  // across take_stats. caller_runs="auto" runs a due batch on the caller's thread only while
  // this is small (see call_slot_runs).
  double model_ewma_ns = 0;
};

struct LoopSubmitter {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  PyObject* fx;           // list: inputs
  PyObject* ff;           // list: futures
  PyObject* create;       // future factory, e.g. loop.create_future
  PyObject* call_soon;    // loop.call_soon
  PyObject* drive;        // the batcher's driver (scheduled once per iteration)
  PyObject* fallback;     // __call__ fallback(x, **kw) -> asyncio.Future
  PyObject* fallback_aw;  // aw() fallback(x, **kw) -> awaitable
  PyObject* fallback_co;  // InferEntry fallback(x, **kw) -> coroutine (checks when awaited)
  PyObject* dict;
  // The batch runner (configure_runner): asyncio.Future, its done / set_result descriptors,
  // asyncio.InvalidStateError; nullptr until configured.
  PyObject* future_type;
  PyObject* done;
  PyObject* set_result;
  PyObject* invalid_state;
  RunStats* stats;
  unsigned long tid;
  Py_ssize_t limit;
  // Fast-path bookkeeping shared with Python (see Batcher._reset_fast): futures[i] belongs to
  // id fbase + i; ids below fpushed are in the native queue; entries below fdead are retired;
  // fnone counts None entries at or above fdead.
  unsigned long long fbase;
  unsigned long long fpushed;
  Py_ssize_t fdead;
  Py_ssize_t fnone;
  int64_t first_ns;  // when the first request buffered since the driver last ran arrived
  int64_t max_queue_size;  // for the admission limit drive_fast keeps up to date; 0: unbounded
  int scheduled;
  int enabled;
};

PyObject* sub_push(LoopSubmitter* s, PyObject* x) {
  PyObject* f = PyObject_CallNoArgs(s->create);
  if (f == nullptr) return nullptr;
  if (PyList_Append(s->fx, x) < 0) {
    Py_DECREF(f);
    return nullptr;
  }
  if (PyList_Append(s->ff, f) < 0) {
    Py_ssize_t n = PyList_GET_SIZE(s->fx);
    PyList_SetSlice(s->fx, n - 1, n, nullptr);
    Py_DECREF(f);
    return nullptr;
  }
  if (!s->scheduled) {
    // The first request since the driver last ran: its arrival starts the delay clock (the
    // push happens one loop iteration later).
    s->first_ns = BatchQueue::now_ns();
    PyObject* r = PyObject_CallOneArg(s->call_soon, s->drive);
    if (r == nullptr) {  // e.g. "Event loop is closed": nothing stays buffered
      Py_ssize_t n = PyList_GET_SIZE(s->ff);
      PyObject *t, *v, *tb;
      PyErr_Fetch(&t, &v, &tb);
      PyList_SetSlice(s->ff, n - 1, n, nullptr);
      PyList_SetSlice(s->fx, n - 1, n, nullptr);
      PyErr_Restore(t, v, tb);
      Py_DECREF(f);
      return nullptr;
    }
    Py_DECREF(r);
    s->scheduled = 1;
  }
  return f;
}

inline bool sub_fast_ok(LoopSubmitter* s, Py_ssize_t nargs, PyObject* kwnames) {
  return nargs == 1 && (kwnames == nullptr || PyTuple_GET_SIZE(kwnames) == 0) && s->enabled &&
         PyList_GET_SIZE(s->ff) < s->limit && PyThread_get_thread_ident() == s->tid;
}

PyObject* sub_fallback(PyObject* fb, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  if (fb == nullptr || fb == Py_None) {
    PyErr_SetString(PyExc_RuntimeError, "pyperfcore batcher: loop submitter is not bound to a loop");
    return nullptr;
  }
  return PyObject_Vectorcall(fb, args, nargsf, kwnames);
}

PyObject* sub_vectorcall(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  auto* s = reinterpret_cast<LoopSubmitter*>(self);
  if (sub_fast_ok(s, PyVectorcall_NARGS(nargsf), kwnames)) return sub_push(s, args[0]);
  return sub_fallback(s->fallback, args, nargsf, kwnames);
}

PyObject* sub_aw(PyObject* self, PyObject* const* args, Py_ssize_t nargs, PyObject* kwnames) {
  auto* s = reinterpret_cast<LoopSubmitter*>(self);
  if (sub_fast_ok(s, nargs, kwnames)) return sub_push(s, args[0]);
  return sub_fallback(s->fallback_aw, args, static_cast<size_t>(nargs), kwnames);
}

int sub_traverse(PyObject* self, visitproc visit, void* arg) {
  auto* s = reinterpret_cast<LoopSubmitter*>(self);
  Py_VISIT(s->fx);
  Py_VISIT(s->ff);
  Py_VISIT(s->create);
  Py_VISIT(s->call_soon);
  Py_VISIT(s->drive);
  Py_VISIT(s->fallback);
  Py_VISIT(s->fallback_aw);
  Py_VISIT(s->fallback_co);
  Py_VISIT(s->dict);
  Py_VISIT(s->future_type);
  Py_VISIT(s->done);
  Py_VISIT(s->set_result);
  Py_VISIT(s->invalid_state);
  return 0;
}

void sub_clear_loop(LoopSubmitter* s) {
  s->enabled = 0;
  Py_CLEAR(s->create);
  Py_CLEAR(s->call_soon);
  Py_CLEAR(s->drive);
  Py_CLEAR(s->fallback);
  Py_CLEAR(s->fallback_aw);
  Py_CLEAR(s->fallback_co);
}

int sub_clear(PyObject* self) {
  auto* s = reinterpret_cast<LoopSubmitter*>(self);
  sub_clear_loop(s);
  Py_CLEAR(s->fx);
  Py_CLEAR(s->ff);
  Py_CLEAR(s->dict);
  Py_CLEAR(s->future_type);
  Py_CLEAR(s->done);
  Py_CLEAR(s->set_result);
  Py_CLEAR(s->invalid_state);
  return 0;
}

void sub_dealloc(PyObject* self) {
  PyObject_GC_UnTrack(self);
  sub_clear(self);
  delete reinterpret_cast<LoopSubmitter*>(self)->stats;
  Py_TYPE(self)->tp_free(self);
}

PyObject* sub_new(PyTypeObject* type, PyObject* args, PyObject* kwds) {
  PyObject *fx, *ff;
  static const char* kwlist[] = {"inputs", "futures", nullptr};
  if (!PyArg_ParseTupleAndKeywords(args, kwds, "O!O!", const_cast<char**>(kwlist), &PyList_Type, &fx, &PyList_Type,
                                   &ff))
    return nullptr;
  auto* s = reinterpret_cast<LoopSubmitter*>(type->tp_alloc(type, 0));
  if (s == nullptr) return nullptr;
  s->vectorcall = sub_vectorcall;
  Py_INCREF(fx);
  s->fx = fx;
  Py_INCREF(ff);
  s->ff = ff;
  s->limit = PY_SSIZE_T_MAX;
  s->fbase = s->fpushed = kFastBase;
  s->stats = new (std::nothrow) RunStats();
  if (s->stats == nullptr) {
    Py_DECREF(s);
    return PyErr_NoMemory();
  }
  return reinterpret_cast<PyObject*>(s);
}

PyObject* sub_enable(PyObject* self, PyObject* args) {
  auto* s = reinterpret_cast<LoopSubmitter*>(self);
  PyObject *create, *call_soon, *drive, *fb, *fb_aw, *fb_co = nullptr;
  unsigned long tid;
  if (!PyArg_ParseTuple(args, "OOOOOk|O", &create, &call_soon, &drive, &fb, &fb_aw, &tid, &fb_co)) return nullptr;
  if (fb_co == nullptr) fb_co = fb_aw;
  for (PyObject* o : {create, call_soon, drive, fb, fb_aw, fb_co}) {
    if (!PyCallable_Check(o)) {
      PyErr_SetString(PyExc_TypeError, "LoopSubmitter.enable: every argument but the thread id must be callable");
      return nullptr;
    }
  }
  sub_clear_loop(s);
  Py_INCREF(create);
  s->create = create;
  Py_INCREF(call_soon);
  s->call_soon = call_soon;
  Py_INCREF(drive);
  s->drive = drive;
  Py_INCREF(fb);
  s->fallback = fb;
  Py_INCREF(fb_aw);
  s->fallback_aw = fb_aw;
  Py_INCREF(fb_co);
  s->fallback_co = fb_co;
  s->tid = tid;
  s->enabled = 1;
  Py_RETURN_NONE;
}

PyObject* sub_disable(PyObject* self, PyObject*) {
  // Keeps the fallbacks: a caller holding the bound object still reaches the checked path.
  reinterpret_cast<LoopSubmitter*>(self)->enabled = 0;
  Py_RETURN_NONE;
}

PyObject* sub_get_scheduled(PyObject* self, void*) {
  return PyBool_FromLong(reinterpret_cast<LoopSubmitter*>(self)->scheduled);
}
int sub_set_scheduled(PyObject* self, PyObject* v, void*) {
  if (v == nullptr) {
    PyErr_SetString(PyExc_AttributeError, "cannot delete scheduled");
    return -1;
  }
  int t = PyObject_IsTrue(v);
  if (t < 0) return -1;
  reinterpret_cast<LoopSubmitter*>(self)->scheduled = t;
  return 0;
}
PyObject* sub_get_limit(PyObject* self, void*) {
  return PyLong_FromSsize_t(reinterpret_cast<LoopSubmitter*>(self)->limit);
}
int sub_set_limit(PyObject* self, PyObject* v, void*) {
  if (v == nullptr) {
    PyErr_SetString(PyExc_AttributeError, "cannot delete limit");
    return -1;
  }
  int overflow = 0;
  long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
  if (x == -1 && PyErr_Occurred()) return -1;
  if (overflow > 0 || x > PY_SSIZE_T_MAX) x = PY_SSIZE_T_MAX;
  if (overflow < 0 || x < 0) x = 0;
  reinterpret_cast<LoopSubmitter*>(self)->limit = static_cast<Py_ssize_t>(x);
  return 0;
}
template <typename T, T LoopSubmitter::*F>
PyObject* sub_get_int(PyObject* self, void*) {
  return PyLong_FromUnsignedLongLong(static_cast<unsigned long long>(reinterpret_cast<LoopSubmitter*>(self)->*F));
}
template <typename T, T LoopSubmitter::*F>
int sub_set_int(PyObject* self, PyObject* v, void*) {
  if (v == nullptr) {
    PyErr_SetString(PyExc_AttributeError, "cannot delete this attribute");
    return -1;
  }
  unsigned long long x = PyLong_AsUnsignedLongLong(v);
  if (x == static_cast<unsigned long long>(-1) && PyErr_Occurred()) return -1;
  reinterpret_cast<LoopSubmitter*>(self)->*F = static_cast<T>(x);
  return 0;
}

PyObject* floats_to_list(const std::vector<int64_t>& v) {
  PyObject* l = PyList_New(static_cast<Py_ssize_t>(v.size()));
  if (l == nullptr) return nullptr;
  for (size_t i = 0; i < v.size(); ++i) PyList_SET_ITEM(l, static_cast<Py_ssize_t>(i), PyLong_FromLongLong(v[i]));
  return l;
}

PyObject* hist_tuple(const RunHist& h) {
  return Py_BuildValue("(Nddn)", floats_to_list(h.counts), h.sum, h.max, static_cast<Py_ssize_t>(h.count));
}

PyObject* sub_take_stats(PyObject* self, PyObject*) {
  // (executions, inferences, cancellations, batch_size, queue_wait, model_time) with each
  // histogram as (counts, sum, max, count), then reset; None when nothing is pending.
  RunStats* st = reinterpret_cast<LoopSubmitter*>(self)->stats;
  if (!st->pending) Py_RETURN_NONE;
  PyObject* out = Py_BuildValue("(LLLNNN)", static_cast<long long>(st->executions),
                                static_cast<long long>(st->inferences), static_cast<long long>(st->cancellations),
                                hist_tuple(st->batch_size), hist_tuple(st->queue_wait), hist_tuple(st->model_time));
  if (out == nullptr) return nullptr;
  st->executions = st->inferences = st->cancellations = 0;
  st->batch_size.reset();
  st->queue_wait.reset();
  st->model_time.reset();
  st->pending = false;
  return out;
}

bool bounds_from(PyObject* seq, std::vector<double>& out) {
  PyObject* f = PySequence_Fast(seq, "bounds must be a sequence of numbers");
  if (f == nullptr) return false;
  Py_ssize_t n = PySequence_Fast_GET_SIZE(f);
  out.clear();
  for (Py_ssize_t i = 0; i < n; ++i) {
    double d = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(f, i));
    if (d == -1.0 && PyErr_Occurred()) {
      Py_DECREF(f);
      return false;
    }
    out.push_back(d);
  }
  Py_DECREF(f);
  return true;
}

PyObject* sub_configure_runner(PyObject* self, PyObject* args) {
  auto* s = reinterpret_cast<LoopSubmitter*>(self);
  PyObject *ft, *done, *setr, *inv, *bs, *tb;
  long long mqs = 0;
  if (!PyArg_ParseTuple(args, "OOOOOO|L", &ft, &done, &setr, &inv, &bs, &tb, &mqs)) return nullptr;
  s->max_queue_size = mqs > 0 ? mqs : 0;
  if (!PyType_Check(ft) || !PyCallable_Check(done) || !PyCallable_Check(setr) || !PyExceptionClass_Check(inv)) {
    PyErr_SetString(PyExc_TypeError,
                    "configure_runner(future_type, done, set_result, InvalidStateError, size_bounds, time_bounds)");
    return nullptr;
  }
  RunStats* st = s->stats;
  if (!bounds_from(bs, st->batch_size.bounds) || !bounds_from(tb, st->queue_wait.bounds)) return nullptr;
  st->model_time.bounds = st->queue_wait.bounds;
  for (RunHist* h : {&st->batch_size, &st->queue_wait, &st->model_time}) {
    if (!std::is_sorted(h->bounds.begin(), h->bounds.end())) {
      PyErr_SetString(PyExc_ValueError, "histogram bounds must be sorted");
      return nullptr;
    }
    h->counts.assign(h->bounds.size() + 1, 0);
  }
  Py_XSETREF(s->future_type, Py_NewRef(ft));
  Py_XSETREF(s->done, Py_NewRef(done));
  Py_XSETREF(s->set_result, Py_NewRef(setr));
  Py_XSETREF(s->invalid_state, Py_NewRef(inv));
  Py_RETURN_NONE;
}

PyObject* sub_get_enabled(PyObject* self, void*) {
  return PyBool_FromLong(reinterpret_cast<LoopSubmitter*>(self)->enabled);
}


// ---------------------------------------------------------------------------------------------
// InferCall: what `batcher.infer(x)` returns on the driving loop (one positional argument). A
// coroutine in the sense asyncio uses (registered as collections.abc.Coroutine: create_task,
// ensure_future, gather, wait_for and TaskGroup take it), made without a Python frame. Like an
// `async def`, nothing happens until it is first awaited or sent to; then the fast path's checks
// run on that thread and the request is queued (LoopSubmitter step), and awaiting it awaits the
// request's future directly; anything else goes to fallback_coroutine(x). A Task drives it
// through am_send. throw()/close() after the start cancel the request's future first (the
// request is dropped before it reaches the model), as cancelling an awaiting task does.

struct InferCall {
  PyObject_HEAD
  PyObject* sub;  // the LoopSubmitter (until started)
  PyObject* x;    // the input (until started)
  PyObject* fut;  // the request's future once queued on the fast path
  PyObject* it;   // what is being driven (the future's or the fallback's iterator) once started by send/throw
  int awaited;    // started: an awaitable is awaited once
  int done;       // finished (returned, raised, thrown into or closed): a further send is an error
};

PyTypeObject InferCallType = {PyVarObject_HEAD_INIT(nullptr, 0)};

PyObject* ic_new(PyObject* sub, PyObject* x) {
  auto* c = PyObject_GC_New(InferCall, &InferCallType);
  if (c == nullptr) return nullptr;
  c->sub = Py_NewRef(sub);
  c->x = Py_NewRef(x);
  c->fut = nullptr;
  c->it = nullptr;
  c->awaited = 0;
  c->done = 0;
  PyObject_GC_Track(c);
  return reinterpret_cast<PyObject*>(c);
}

PyObject* await_of(PyObject* o) {
  PyAsyncMethods* am = Py_TYPE(o)->tp_as_async;
  if (am != nullptr && am->am_await != nullptr) return am->am_await(o);
  return PyObject_CallMethod(o, "__await__", nullptr);
}

// Starts the call: the request is queued (fast path) or the fallback coroutine made. Returns a
// new reference to the iterator to drive.
PyObject* ic_start(InferCall* c) {
  if (c->awaited) {
    PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine (batcher.infer)");
    return nullptr;
  }
  c->awaited = 1;
  auto* s = reinterpret_cast<LoopSubmitter*>(c->sub);
  PyObject* it;
  if (sub_fast_ok(s, 1, nullptr)) {
    PyObject* f = sub_push(s, c->x);
    if (f == nullptr) return nullptr;
    c->fut = f;
    it = await_of(f);
  } else {
    PyObject* fb = s->fallback_co;
    if (fb == nullptr) {
      PyErr_SetString(PyExc_RuntimeError, "pyperfcore batcher: loop submitter is not bound to a loop");
      return nullptr;
    }
    PyObject* co = PyObject_CallOneArg(fb, c->x);
    if (co == nullptr) return nullptr;
    it = await_of(co);
    Py_DECREF(co);
  }
  Py_CLEAR(c->x);
  Py_CLEAR(c->sub);
  return it;
}

PyObject* ic_await(PyObject* self) { return ic_start(reinterpret_cast<InferCall*>(self)); }

PySendResult ic_am_send(PyObject* self, PyObject* arg, PyObject** result) {
  auto* c = reinterpret_cast<InferCall*>(self);
  *result = nullptr;
  if (c->done) {
    PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine (batcher.infer)");
    return PYGEN_ERROR;
  }
  if (c->it == nullptr) {
    if (!c->awaited && arg != Py_None) {
      PyErr_SetString(PyExc_TypeError, "can't send non-None value to a just-started coroutine");
      return PYGEN_ERROR;
    }
    c->it = ic_start(c);
    if (c->it == nullptr) {
      c->done = 1;
      return PYGEN_ERROR;
    }
  }
  PySendResult st = PyIter_Send(c->it, arg, result);
  if (st != PYGEN_NEXT) {
    c->done = 1;
    Py_CLEAR(c->it);
    if (st == PYGEN_ERROR && !PyErr_Occurred())
      PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine (batcher.infer)");
  }
  return st;
}

void set_stop_iteration(PyObject* r) {  // steals r; StopIteration(r) without unpacking a tuple
  PyObject* e = PyObject_CallOneArg(PyExc_StopIteration, r);
  Py_DECREF(r);
  if (e != nullptr) {
    PyErr_SetObject(PyExc_StopIteration, e);
    Py_DECREF(e);
  }
}

PyObject* ic_send(PyObject* self, PyObject* arg) {
  PyObject* r = nullptr;
  PySendResult st = ic_am_send(self, arg, &r);
  if (st == PYGEN_NEXT) return r;
  if (st == PYGEN_RETURN) set_stop_iteration(r);
  return nullptr;
}

PyObject* ic_iternext(PyObject* self) {
  PyObject* r = nullptr;
  PySendResult st = ic_am_send(self, Py_None, &r);
  if (st == PYGEN_NEXT) return r;
  if (st == PYGEN_RETURN) {
    if (r == Py_None) {
      Py_DECREF(r);
      PyErr_SetNone(PyExc_StopIteration);
    } else {
      set_stop_iteration(r);
    }
  }
  return nullptr;
}

int ic_cancel_future(InferCall* c) {
  if (c->fut == nullptr) return 0;
  PyObject* r = PyObject_CallMethod(c->fut, "cancel", nullptr);
  if (r == nullptr) return -1;
  Py_DECREF(r);
  return 0;
}

int raise_thrown(PyObject* const* args, Py_ssize_t nargs) {  // sets the error throw(*args) asks for
  PyObject* typ = args[0];
  if (PyExceptionInstance_Check(typ)) {
    PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(typ)), typ);
  } else if (PyExceptionClass_Check(typ)) {
    if (nargs >= 2 && args[1] != Py_None)
      PyErr_SetObject(typ, args[1]);
    else
      PyErr_SetNone(typ);
  } else {
    PyErr_SetString(PyExc_TypeError, "exceptions must be classes or instances deriving from BaseException");
  }
  return -1;
}

PyObject* ic_throw(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  auto* c = reinterpret_cast<InferCall*>(self);
  if (nargs < 1 || nargs > 3) {
    PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
    return nullptr;
  }
  if (c->it == nullptr || c->done) {
    // Not started, handed out by __await__, or finished: nothing is being driven here; raise as
    // a fresh or finished coroutine does, and it is finished.
    c->awaited = 1;
    c->done = 1;
    Py_CLEAR(c->x);
    Py_CLEAR(c->sub);
    raise_thrown(args, nargs);
    return nullptr;
  }
  if (ic_cancel_future(c) < 0) return nullptr;
  PyObject* meth = PyObject_GetAttrString(c->it, "throw");
  if (meth == nullptr) return nullptr;
  PyObject* r = PyObject_Vectorcall(meth, args, static_cast<size_t>(nargs), nullptr);
  Py_DECREF(meth);
  if (r == nullptr) {  // raised (the usual outcome): finished
    c->done = 1;
    Py_CLEAR(c->it);
    if (!PyErr_Occurred()) raise_thrown(args, nargs);
  }
  return r;
}

PyObject* ic_close(PyObject* self, PyObject*) {
  auto* c = reinterpret_cast<InferCall*>(self);
  c->awaited = 1;
  c->done = 1;
  Py_CLEAR(c->x);
  Py_CLEAR(c->sub);
  if (ic_cancel_future(c) < 0) return nullptr;
  if (c->it != nullptr) {
    PyObject* r = PyObject_CallMethod(c->it, "close", nullptr);
    Py_CLEAR(c->it);
    if (r == nullptr) return nullptr;
    Py_DECREF(r);
  }
  Py_RETURN_NONE;
}

PyObject* ic_get_future(PyObject* self, void*) {
  PyObject* f = reinterpret_cast<InferCall*>(self)->fut;
  return Py_NewRef(f == nullptr ? Py_None : f);
}
PyObject* ic_get_name(PyObject*, void*) { return PyUnicode_FromString("Batcher.infer"); }

int ic_traverse(PyObject* self, visitproc visit, void* arg) {
  auto* c = reinterpret_cast<InferCall*>(self);
  Py_VISIT(c->sub);
  Py_VISIT(c->x);
  Py_VISIT(c->fut);
  Py_VISIT(c->it);
  return 0;
}

int ic_clear(PyObject* self) {
  auto* c = reinterpret_cast<InferCall*>(self);
  Py_CLEAR(c->sub);
  Py_CLEAR(c->x);
  Py_CLEAR(c->fut);
  Py_CLEAR(c->it);
  return 0;
}

void ic_dealloc(PyObject* self) {
  PyObject_GC_UnTrack(self);
  if (!reinterpret_cast<InferCall*>(self)->awaited) {
    // As for an `async def` coroutine: a call that was never awaited is almost always a bug.
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    if (PyErr_WarnEx(PyExc_RuntimeWarning, "coroutine 'Batcher.infer' was never awaited", 1) < 0)
      PyErr_WriteUnraisable(self);
    PyErr_Restore(t, v, tb);
  }
  ic_clear(self);
  PyObject_GC_Del(self);
}

PyMethodDef ic_methods[] = {
    {"send", ic_send, METH_O, "send(value): as a coroutine's send (the first one queues the request)."},
    {"throw", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(ic_throw)), METH_FASTCALL,
     "throw(exc): cancels the request's future (the request is dropped) and raises exc."},
    {"close", ic_close, METH_NOARGS, "close(): cancels the request's future (the request is dropped)."},
    {nullptr, nullptr, 0, nullptr}};

PyGetSetDef ic_getset[] = {
    {"future", ic_get_future, nullptr, "The request's asyncio.Future once queued on the fast path, else None.",
     nullptr},
    {"__qualname__", ic_get_name, nullptr, "For reprs of tasks that run it.", nullptr},
    {"__name__", ic_get_name, nullptr, "For reprs of tasks that run it.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyAsyncMethods ic_async = {ic_await, nullptr, nullptr, ic_am_send};

// PyType_Ready for a static type filled in by one of the make_*_type functions; a new reference.
PyObject* ready_type(PyTypeObject& t) {
  if (PyType_Ready(&t) < 0) return nullptr;
  Py_INCREF(&t);
  return reinterpret_cast<PyObject*>(&t);
}

PyObject* make_infer_call_type() {
  PyTypeObject& t = InferCallType;
  t.tp_name = "pyperfcore._core.InferCall";
  t.tp_basicsize = sizeof(InferCall);
  t.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
#ifdef Py_TPFLAGS_HAVE_AM_SEND
               | Py_TPFLAGS_HAVE_AM_SEND
#endif
      ;
  t.tp_doc =
      "One `batcher.infer(x)` call on the asyncio fast path: a coroutine for asyncio (create_task, gather, "
      "wait_for, TaskGroup), awaitable once; the request is queued when it is first awaited. Closing or "
      "throwing into it cancels the request.";
  t.tp_as_async = &ic_async;
  t.tp_iter = PyObject_SelfIter;
  t.tp_iternext = ic_iternext;
  t.tp_dealloc = ic_dealloc;
  t.tp_traverse = ic_traverse;
  t.tp_clear = ic_clear;
  t.tp_methods = ic_methods;
  t.tp_getset = ic_getset;
  return ready_type(t);
}

// InferEntry: the per-loop `batcher.infer` (an instance attribute of the Batcher). A vectorcall
// object with a __dict__ (so it carries __doc__, __wrapped__ and the coroutine-function marks).
struct InferEntry {
  PyObject_HEAD
  vectorcallfunc vectorcall;
  PyObject* sub;  // the LoopSubmitter
  PyObject* dict;
};

PyTypeObject InferEntryType = {PyVarObject_HEAD_INIT(nullptr, 0)};

PyObject* ie_vectorcall(PyObject* self, PyObject* const* args, size_t nargsf, PyObject* kwnames) {
  PyObject* sub = reinterpret_cast<InferEntry*>(self)->sub;
  if (sub == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "pyperfcore batcher: infer entry was cleared");
    return nullptr;
  }
  // One positional argument: a lazy InferCall (checks and queueing when first awaited, as with
  // an `async def`); keywords: the fallback coroutine.
  if (PyVectorcall_NARGS(nargsf) == 1 && (kwnames == nullptr || PyTuple_GET_SIZE(kwnames) == 0))
    return ic_new(sub, args[0]);
  return sub_fallback(reinterpret_cast<LoopSubmitter*>(sub)->fallback_co, args, nargsf, kwnames);
}

int ie_traverse(PyObject* self, visitproc visit, void* arg) {
  auto* e = reinterpret_cast<InferEntry*>(self);
  Py_VISIT(e->sub);
  Py_VISIT(e->dict);
  return 0;
}

int ie_clear(PyObject* self) {
  auto* e = reinterpret_cast<InferEntry*>(self);
  Py_CLEAR(e->sub);
  Py_CLEAR(e->dict);
  return 0;
}

void ie_dealloc(PyObject* self) {
  PyObject_GC_UnTrack(self);
  ie_clear(self);
  PyObject_GC_Del(self);
}

PyGetSetDef ie_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, nullptr, nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyObject* make_infer_entry_type() {
  PyTypeObject& t = InferEntryType;
  t.tp_name = "pyperfcore._core.InferEntry";
  t.tp_basicsize = sizeof(InferEntry);
  t.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL;
  t.tp_doc = "The asyncio fast path's `batcher.infer` (see LoopSubmitter.coroutine_entry).";
  t.tp_vectorcall_offset = offsetof(InferEntry, vectorcall);
  t.tp_call = PyVectorcall_Call;
  t.tp_dictoffset = offsetof(InferEntry, dict);
  t.tp_dealloc = ie_dealloc;
  t.tp_traverse = ie_traverse;
  t.tp_clear = ie_clear;
  t.tp_getset = ie_getset;
  return ready_type(t);
}

PyObject* sub_coroutine_entry(PyObject* self, PyObject*) {
  auto* e = PyObject_GC_New(InferEntry, &InferEntryType);
  if (e == nullptr) return nullptr;
  e->vectorcall = ie_vectorcall;
  e->sub = Py_NewRef(self);
  e->dict = nullptr;
  PyObject_GC_Track(e);
  return reinterpret_cast<PyObject*>(e);
}

PyMethodDef sub_methods[] = {
    {"aw", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)(void)>(sub_aw)), METH_FASTCALL | METH_KEYWORDS,
     "aw(x, **kw): the fast path's future, or fallback_aw(x, **kw) (an awaitable)."},
    {"enable", sub_enable, METH_VARARGS,
     "enable(create_future, call_soon, drive, fallback, fallback_aw, thread_id, fallback_coroutine=fallback_aw): "
     "bind to a loop."},
    {"coroutine_entry", sub_coroutine_entry, METH_NOARGS,
     "A callable for `await batcher.infer(x)`: with one positional argument an InferCall (a native coroutine "
     "object: when first awaited it queues the request on the fast path and awaits its future, or awaits "
     "fallback_coroutine(x)); with keywords fallback_coroutine(x, **kw)."},
    {"disable", sub_disable, METH_NOARGS, "Every later call takes the fallback."},
    {"configure_runner", sub_configure_runner, METH_VARARGS,
     "configure_runner(future_type, done, set_result, InvalidStateError, size_bounds, time_bounds): lets "
     "batching_drive_fast run fast-path batches of a sync model natively."},
    {"take_stats", sub_take_stats, METH_NOARGS,
     "The runner's batch statistics since the last call (then reset), or None."},
    {nullptr, nullptr, 0, nullptr}};

PyObject* sub_get_model_ewma(PyObject* self, void*) {
  return PyFloat_FromDouble(reinterpret_cast<LoopSubmitter*>(self)->stats->model_ewma_ns);
}

PyGetSetDef sub_getset[] = {
    {"model_time_ewma_ns", sub_get_model_ewma, nullptr,
     "Mean model time of natively run batches (exponentially weighted, 1/8), ns.", nullptr},
    {"scheduled", sub_get_scheduled, sub_set_scheduled, "The driver is scheduled for this loop iteration.", nullptr},
    {"limit", sub_get_limit, sub_set_limit, "Fast-path admission: len(futures) must stay below it.", nullptr},
    {"enabled", sub_get_enabled, nullptr, "Bound to a loop and taking fast-path requests.", nullptr},
    {"fbase", sub_get_int<unsigned long long, &LoopSubmitter::fbase>,
     sub_set_int<unsigned long long, &LoopSubmitter::fbase>, "Id of futures[0].", nullptr},
    {"fpushed", sub_get_int<unsigned long long, &LoopSubmitter::fpushed>,
     sub_set_int<unsigned long long, &LoopSubmitter::fpushed>, "Ids below this are in the native queue.", nullptr},
    {"fdead", sub_get_int<Py_ssize_t, &LoopSubmitter::fdead>, sub_set_int<Py_ssize_t, &LoopSubmitter::fdead>,
     "Entries below this index are retired.", nullptr},
    {"fnone", sub_get_int<Py_ssize_t, &LoopSubmitter::fnone>, sub_set_int<Py_ssize_t, &LoopSubmitter::fnone>,
     "None entries at or above fdead.", nullptr},
    {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyTypeObject LoopSubmitterType = {PyVarObject_HEAD_INIT(nullptr, 0)};

PyObject* make_loop_submitter_type() {
  PyTypeObject& t = LoopSubmitterType;
  t.tp_name = "pyperfcore._core.LoopSubmitter";
  t.tp_basicsize = sizeof(LoopSubmitter);
  t.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL;
  t.tp_doc =
      "LoopSubmitter(inputs, futures): the asyncio fast path's per-request step (see pyperfcore.batching). "
      "Calling it returns an asyncio.Future.";
  t.tp_vectorcall_offset = offsetof(LoopSubmitter, vectorcall);
  t.tp_call = PyVectorcall_Call;
  t.tp_dictoffset = offsetof(LoopSubmitter, dict);
  t.tp_new = sub_new;
  t.tp_dealloc = sub_dealloc;
  t.tp_traverse = sub_traverse;
  t.tp_clear = sub_clear;
  t.tp_methods = sub_methods;
  t.tp_getset = sub_getset;
  return ready_type(t);
}

// True when f is done (None entries, already answered, count as done).
int fut_done(LoopSubmitter* s, PyObject* f) {
  if (f == Py_None) return 1;
  PyObject* r;
  if (Py_TYPE(f) == reinterpret_cast<PyTypeObject*>(s->future_type)) {
    PyObject* a[1] = {f};
    r = PyObject_Vectorcall(s->done, a, 1, nullptr);
  } else {
    r = PyObject_CallMethod(f, "done", nullptr);
  }
  if (r == nullptr) return -1;
  int t = PyObject_IsTrue(r);
  Py_DECREF(r);
  return t;
}

// One pass of the asyncio driver for the common case, in one call: pushes the loop's buffered
// fast-path requests, polls, and while the due batch is a single run of fast-path ids (and
// nothing expired or was dropped), runs it right here: drops cancelled callers, calls the sync
// model once, answers every future, records the statistics natively. Returns
// (next_wake_ns,) when nothing is due and nothing needs Python (the admission limit is then
// updated here), else (push_status, poll, finish) to Python:
//  - poll is poll_runs' tuple when Python must act (a push failed, expiries/drops, a mixed or
//    non-fast batch, closed, or no batch: then it carries next_wake);
//  - finish = (futures, ok, out, t0) when the model raised or returned something other than a
//    list of the right length: the slot is still taken; Python answers and calls batch_done().
py::tuple drive_fast(LoopSubmitter* s, BatchQueue& q, PyObject* fn) {
  Poll p;
  for (;;) {
    const int64_t now = BatchQueue::now_ns();
    const uint64_t first = s->fpushed;
    const int64_t n = static_cast<int64_t>(s->fbase + static_cast<uint64_t>(PyList_GET_SIZE(s->ff)) - first);
    int st = 0;
    if (n > 0) {
      // Enqueued as of the oldest buffered request's arrival (never later than now); pushed and
      // polled under one lock (a due batch of them may come straight back without being queued).
      const int64_t enq = s->first_ns > 0 && s->first_ns < now ? s->first_ns : now;
      st = static_cast<int>(q.push_many_poll(first, n, 0, 0, 1, batching::kNoDeadline, now, 0, p, enq));
      if (st == 0) {
        s->fpushed = first + static_cast<uint64_t>(n);
      } else {
        p.clear();
        q.poll(now, p);
      }
    } else {
      p.clear();
      q.poll(now, p);
    }
    bool fast = st == 0 && p.expired.empty() && p.dropped.empty() && !p.finished && !p.ids.empty() &&
                p.ids.front() >= kFastBase && p.ids.back() < kBulkBase;
    for (size_t k = 1; fast && k < p.ids.size(); ++k) fast = p.ids[k] == p.ids[k - 1] + 1;
    Py_ssize_t i = fast ? static_cast<Py_ssize_t>(p.ids.front() - s->fbase) : 0;
    Py_ssize_t e = i + static_cast<Py_ssize_t>(p.ids.size());
    if (fast && (i < s->fdead || e > PyList_GET_SIZE(s->ff))) fast = false;  // never expected: Python decides
    if (!fast) {
      if (st == 0 && !p.has_work()) {
        // Nothing due and nothing for Python to answer: update the fast path's admission limit
        // (Batcher._update_fast_limit) and return only when to look again.
        if (s->max_queue_size > 0) {
          const int64_t live_fast =
              static_cast<int64_t>(s->fpushed - s->fbase) - static_cast<int64_t>(s->fdead + s->fnone);
          const int64_t other = std::max<int64_t>(0, p.queued - live_fast);
          s->limit = static_cast<Py_ssize_t>(s->max_queue_size - other + s->fnone + s->fdead);
        }
        return py::make_tuple(p.next_wake_ns);
      }
      return py::make_tuple(st, poll_runs_tuple(p), py::none());
    }

    // Take futures/inputs [i, e) and retire every entry below e (they have left the queue).
    py::object fs = py::reinterpret_steal<py::object>(PyList_GetSlice(s->ff, i, e));
    py::object xs = py::reinterpret_steal<py::object>(PyList_GetSlice(s->fx, i, e));
    if (!fs || !xs) {
      q.batch_done();
      throw py::error_already_set();
    }
    if (s->fnone) {
      Py_ssize_t nn = 0;
      for (Py_ssize_t k = s->fdead; k < e; ++k) nn += PyList_GET_ITEM(s->ff, k) == Py_None;
      s->fnone -= nn;
    }
    s->limit += e - s->fdead;
    const Py_ssize_t len = PyList_GET_SIZE(s->ff);
    if (e > 64 && 2 * e > len) {
      if (PyList_SetSlice(s->ff, 0, e, nullptr) < 0 || PyList_SetSlice(s->fx, 0, e, nullptr) < 0) {
        q.batch_done();
        throw py::error_already_set();
      }
      s->fbase += static_cast<uint64_t>(e);
      s->limit -= e;
      e = 0;
    }
    s->fdead = e;
    // A cancelled caller's request never reaches the model.
    Py_ssize_t c = PyList_GET_SIZE(fs.ptr()), gone = 0;
    std::vector<char> keep;
    for (Py_ssize_t k = 0; k < c; ++k) {
      int d = fut_done(s, PyList_GET_ITEM(fs.ptr(), k));
      if (d < 0) {
        q.batch_done();
        throw py::error_already_set();
      }
      if (d && keep.empty()) keep.assign(static_cast<size_t>(c), 1);
      if (d) {
        keep[static_cast<size_t>(k)] = 0;
        ++gone;
      }
    }
    RunStats* rs = s->stats;
    if (gone) {
      rs->cancellations += gone;
      rs->pending = true;
      py::list fs2, xs2;
      for (Py_ssize_t k = 0; k < c; ++k) {
        if (!keep[static_cast<size_t>(k)]) continue;
        fs2.append(PyList_GET_ITEM(fs.ptr(), k));
        xs2.append(PyList_GET_ITEM(xs.ptr(), k));
      }
      fs = std::move(fs2);
      xs = std::move(xs2);
      c -= gone;
      if (c == 0) {
        q.batch_done();
        continue;
      }
    }
    const int64_t t0 = BatchQueue::now_ns();
    rs->pending = true;
    rs->executions += 1;
    rs->inferences += c;
    rs->batch_size.observe(static_cast<double>(c));
    rs->queue_wait.observe(static_cast<double>(std::max<int64_t>(0, t0 - p.oldest_enqueue_ns)) / 1e9);
    PyObject* out = PyObject_CallOneArg(fn, xs.ptr());
    if (out == nullptr) {
      if (!PyErr_ExceptionMatches(PyExc_Exception)) {  // KeyboardInterrupt, SystemExit: propagate
        q.batch_done();
        throw py::error_already_set();
      }
      PyObject *t, *v, *tb;
      PyErr_Fetch(&t, &v, &tb);
      PyErr_NormalizeException(&t, &v, &tb);
      if (tb != nullptr) PyException_SetTraceback(v, tb);
      Py_XDECREF(t);
      Py_XDECREF(tb);
      return py::make_tuple(0, py::none(), py::make_tuple(fs, false, py::reinterpret_steal<py::object>(v), t0));
    }
    py::object outo = py::reinterpret_steal<py::object>(out);
    if (!PyList_CheckExact(out) || PyList_GET_SIZE(out) != c)
      return py::make_tuple(0, py::none(), py::make_tuple(fs, true, outo, t0));
    rs->model_time.observe(static_cast<double>(BatchQueue::now_ns() - t0) / 1e9);
    for (Py_ssize_t k = 0; k < c; ++k) {
      PyObject* f = PyList_GET_ITEM(fs.ptr(), k);
      PyObject* v = PyList_GET_ITEM(out, k);
      PyObject* r;
      if (Py_TYPE(f) == reinterpret_cast<PyTypeObject*>(s->future_type)) {
        PyObject* a[2] = {f, v};
        r = PyObject_Vectorcall(s->set_result, a, 2, nullptr);
      } else {
        r = PyObject_CallMethod(f, "set_result", "O", v);
      }
      if (r != nullptr) {
        Py_DECREF(r);
      } else if (PyErr_ExceptionMatches(s->invalid_state)) {
        PyErr_Clear();  // the model cancelled a caller: answer the rest
      } else {
        q.batch_done();
        throw py::error_already_set();
      }
    }
    q.batch_done();
  }
}

Config make_config(int64_t max_batch_size, int64_t max_delay_ns, std::vector<int64_t> preferred, int64_t max_batch_cost,
                   int64_t max_queue_size, int64_t max_concurrent, int64_t starvation_ns) {
  Config c;
  c.max_batch_size = max_batch_size;
  c.max_delay_ns = max_delay_ns;
  c.preferred_batch_sizes = std::move(preferred);
  c.max_batch_cost = max_batch_cost;
  c.max_queue_size = max_queue_size;
  c.max_concurrent_batches = max_concurrent;
  c.starvation_ns = starvation_ns;
  std::string err = batching::validate(c);
  if (!err.empty()) throw py::value_error(err);
  return c;
}

}  // namespace

// One batch of slot requests run in place by a native runner: records it in rs, calls fn(xs)
// (GIL held) and returns its k results, or outcome(k, bad_count, out, t0)'s results when fn raised
// an Exception or returned something other than a list of k results (ok from outcome then).
// A BaseException that is not an Exception (SystemExit, ...) propagates as py::error_already_set.
static py::object run_slot_batch(const BatchQueue& q, RunStats* rs, const py::object& fn, const py::object& xs,
                                 Py_ssize_t k, int64_t oldest_enqueue_ns, const py::object& outcome, bool& ok) {
  const int64_t t0 = BatchQueue::now_ns();
  rs->pending = true;
  rs->executions += 1;
  rs->inferences += k;
  rs->batch_size.observe(static_cast<double>(k));
  rs->queue_wait.observe(static_cast<double>(std::max<int64_t>(0, t0 - oldest_enqueue_ns)) / 1e9);
  PyObject* out;
  {
    ModelScope scope(&q);
    out = PyObject_CallOneArg(fn.ptr(), xs.ptr());
  }
  if (out == nullptr) {
    if (!PyErr_ExceptionMatches(PyExc_Exception)) throw py::error_already_set();
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    PyErr_NormalizeException(&t, &v, &tb);
    if (tb != nullptr) PyException_SetTraceback(v, tb);
    Py_XDECREF(t);
    Py_XDECREF(tb);
    py::tuple r = outcome(k, false, py::reinterpret_steal<py::object>(v), t0);
    ok = r[1].cast<bool>();
    return r[0];
  }
  if (!PyList_CheckExact(out) || PyList_GET_SIZE(out) != k) {
    py::tuple r = outcome(k, true, py::reinterpret_steal<py::object>(out), t0);
    ok = r[1].cast<bool>();
    return r[0];
  }
  const double dt = static_cast<double>(BatchQueue::now_ns() - t0);
  rs->model_time.observe(dt / 1e9);
  rs->model_ewma_ns += (dt - rs->model_ewma_ns) * 0.125;
  return py::reinterpret_steal<py::object>(out);
}

// batcher(x) with default attributes in one native call: the request is queued with its slot
// as tag and the caller sleeps (GIL released) until a worker has put the result in the slot.
static py::object call_slot_wait(BatchQueue& q, const py::object& x) {
  if (reentrant_call(q)) throw SlotStatus("-3");
  CallSlot s;
  s.x = x.ptr();
  const uint64_t id = kSlotBase + g_slot_ids.fetch_add(1, std::memory_order_relaxed);
  Push st;
  {
    py::gil_scoped_release nogil;
    st = q.push(id, 0, 0, 1, batching::kNoDeadline, BatchQueue::now_ns(), reinterpret_cast<uint64_t>(&s));
    if (st == Push::ok) {
      std::unique_lock<std::mutex> lk(s.m);
      s.cv.wait(lk, [&] { return s.state != 0; });
    }
  }
  if (st != Push::ok) throw SlotStatus(std::to_string(static_cast<int>(st)));
  if (s.state == 2) throw SlotStatus("-2");
  if (s.ok) return py::reinterpret_steal<py::object>(s.res);
  PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(s.res)), s.res);
  Py_DECREF(s.res);
  throw py::error_already_set();
}

void bind_batching(py::module_& m) {
  {
    const std::pair<const char*, PyObject* (*)()> types[] = {{"LoopSubmitter", make_loop_submitter_type},
                                                             {"InferCall", make_infer_call_type},
                                                             {"InferEntry", make_infer_entry_type}};
    for (const auto& [name, make] : types) {
      PyObject* t = make();
      if (t == nullptr) throw py::error_already_set();
      m.add_object(name, py::reinterpret_steal<py::object>(t));
    }
  }
  m.def(
      "batching_drive_fast",
      [](py::object sub, BatchQueue& q, py::object fn) {
        if (Py_TYPE(sub.ptr()) != &LoopSubmitterType) throw py::type_error("batching_drive_fast: sub must be a LoopSubmitter");
        auto* s = reinterpret_cast<LoopSubmitter*>(sub.ptr());
        if (s->future_type == nullptr) throw py::value_error("batching_drive_fast: configure_runner() was not called");
        return drive_fast(s, q, fn.ptr());
      },
      py::arg("sub"), py::arg("queue"), py::arg("fn"),
      "The asyncio driver's common case in one call: (push_status, poll_runs tuple or None, finish or None).");
  // The asyncio driver's delay timer: a timerfd on CLOCK_MONOTONIC (the clock of
  // batching_now_ns and time.monotonic_ns) armed at an absolute nanosecond deadline. The loop
  // watches it with add_reader, so the wake-up does not depend on the selector's timeout, which
  // epoll takes in whole milliseconds rounded up (plus the thread's timer slack).
  m.def("batching_timerfd", []() -> int {
#if defined(__linux__)
    int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (fd < 0) throw std::runtime_error(std::string("timerfd_create: ") + std::strerror(errno));
    return fd;
#else
    return -1;
#endif
  }, "A non-blocking timerfd on the monotonic clock, or -1 where there is none (not Linux).");
  m.def(
      "batching_timerfd_arm",
      [](int fd, int64_t deadline_ns) {
#if defined(__linux__)
        itimerspec its{};
        if (deadline_ns > 0) {  // 0: disarm
          its.it_value.tv_sec = static_cast<time_t>(deadline_ns / 1000000000);
          its.it_value.tv_nsec = static_cast<long>(deadline_ns % 1000000000);
        }
        if (timerfd_settime(fd, deadline_ns > 0 ? TFD_TIMER_ABSTIME : 0, &its, nullptr) != 0)
          throw std::runtime_error(std::string("timerfd_settime: ") + std::strerror(errno));
#else
        (void)fd;
        (void)deadline_ns;
        throw std::runtime_error("timerfd is Linux-only");
#endif
      },
      py::arg("fd"), py::arg("deadline_ns"), "Arms the timerfd at an absolute monotonic deadline (0 disarms).");
  m.def("batching_now_ns", &BatchQueue::now_ns, "The steady clock the native queue waits on (CLOCK_MONOTONIC).");

  // Registered before BatchQueue so signatures that take a Completions name the Python type.
  py::class_<Completions> completions(m, "Completions");
  py::class_<SlotBatch> slot_batch(m, "SlotBatch", "The per-call slots of the batch a worker thread is running.");
  py::class_<BatchQueue>(m, "BatchQueue")
      .def(py::init([](int64_t max_batch_size, int64_t max_delay_ns, std::vector<int64_t> preferred,
                       int64_t max_batch_cost, int64_t max_queue_size, int64_t max_concurrent, int64_t starvation_ns) {
             return new BatchQueue(make_config(max_batch_size, max_delay_ns, std::move(preferred), max_batch_cost,
                                               max_queue_size, max_concurrent, starvation_ns));
           }),
           py::arg("max_batch_size"), py::arg("max_delay_ns"), py::arg("preferred") = std::vector<int64_t>{},
           py::arg("max_batch_cost") = 0, py::arg("max_queue_size") = 10000, py::arg("max_concurrent_batches") = 1,
           py::arg("starvation_ns") = 0)
      .def(
          "push",
          [](BatchQueue& q, uint64_t id, int64_t key, int32_t prio, int64_t cost, int64_t deadline, int64_t now) {
            return static_cast<int>(q.push(id, key, prio, cost, deadline, now));
          },
          py::arg("id"), py::arg("key"), py::arg("priority"), py::arg("cost"), py::arg("deadline_ns"),
          py::arg("now_ns"))
      .def(
          "enter_model",
          [](BatchQueue& q) {
            const BatchQueue* prev = t_model_queue;
            t_model_queue = &q;
            return reinterpret_cast<uintptr_t>(prev);
          },
          "Marks this thread as running this queue's model; returns a token for exit_model.")
      .def(
          "exit_model", [](BatchQueue&, uintptr_t token) { t_model_queue = reinterpret_cast<const BatchQueue*>(token); },
          py::arg("token"), "Undoes enter_model (token: what it returned).")
      .def(
          "in_model", [](BatchQueue& q) { return t_model_queue == &q; },
          "True while this thread runs this queue's model.")
      .def(
          "push_wait",
          [](BatchQueue& q, Completions& c, uint64_t id, int64_t key, int32_t prio, int64_t cost, int64_t deadline,
             int64_t now, int64_t timeout_ns) {
            // One call per thread caller: register, push, then wait, all with the GIL released
            // (the queue's mutex may be held by a worker polling; nobody should wait for it while
            // holding the GIL). -3: called from inside this queue's own model (nothing queued).
            if (reentrant_call(q)) return -3;
            py::gil_scoped_release nogil;
            c.expect(id);
            Push st = q.push(id, key, prio, cost, deadline, now);
            if (st != Push::ok) {
              c.forget(id);
              return static_cast<int>(st);
            }
            return c.wait(id, timeout_ns) ? 0 : -1;
          },
          py::arg("completions"), py::arg("id"), py::arg("key"), py::arg("priority"), py::arg("cost"),
          py::arg("deadline_ns"), py::arg("now_ns"), py::arg("timeout_ns"),
          "expect + push + wait in one call: 0 answered, -1 timed out, > 0 the push status (nothing queued), -3 "
          "called from inside this queue's own model with one model slot (nothing queued).")
      .def(
          "call_slot",
          [](BatchQueue& q, py::object x) -> py::object { return call_slot_wait(q, x); },
          py::arg("x"),
          "One blocking default-attribute request through a per-call slot: returns the result, raises the "
          "model's exception, or _BatchSlotStatus(push status; -2 dropped by close).")
      .def(
          "call_slot_runs",
          [](BatchQueue& q, Completions& c, py::object x, py::object handler, py::object runner, py::object fn,
             py::object outcome, int64_t inline_max_ns) -> py::object {
            // batcher(x) in caller-runs mode: the request goes in through a per-call slot as in
            // call_slot, but without waking a worker; while the caller's own request is
            // unanswered and a batch is due, the caller runs it itself, GIL held: no thread
            // hand-off and no GIL hand-off per request when batches are due at once. Only when
            // nothing is due does it wake one worker and sleep (GIL released) on its slot.
            // handler(runs, reason, oldest, slot_inputs or None, expired, dropped) is the
            // worker's per-batch Python step and returns (slot results, ok, answered ids).
            // With runner (a LoopSubmitter whose statistics are configured) a batch of slot
            // requests only is run right here: statistics natively, fn(inputs) called once, and
            // outcome(n, ok, out, t0) -> (results, ok) only when fn raised or did not return a
            // list of the right length.
            // inline_max_ns >= 0 (caller_runs="auto", needs runner): the caller runs batches only
            // while the runner's mean model time is at most that; a costlier model is left to
            // the workers (a caller running it alone gets batches of one where workers batch).
            RunStats* rs = nullptr;
            if (!runner.is_none()) {
              if (Py_TYPE(runner.ptr()) != &LoopSubmitterType ||
                  reinterpret_cast<LoopSubmitter*>(runner.ptr())->future_type == nullptr)
                throw py::type_error("call_slot_runs: runner must be a configured LoopSubmitter or None");
              rs = reinterpret_cast<LoopSubmitter*>(runner.ptr())->stats;
            }
            if (reentrant_call(q)) throw SlotStatus("-3");
            if (inline_max_ns >= 0 && (rs == nullptr || rs->model_ewma_ns > static_cast<double>(inline_max_ns)))
              return call_slot_wait(q, x);  // a costly model: the workers run it (and batch)
            CallSlot s;
            s.x = x.ptr();
            const uint64_t id = kSlotBase + g_slot_ids.fetch_add(1, std::memory_order_relaxed);
            // The push and the first poll under one lock (with an empty queue and a free slot a
            // request that is due at once comes straight back as its own batch).
            Poll p;
            Push st = q.push_many_poll(id, 1, 0, 0, 1, batching::kNoDeadline, BatchQueue::now_ns(),
                                       reinterpret_cast<uint64_t>(&s), p);
            if (st != Push::ok) throw SlotStatus(std::to_string(static_cast<int>(st)));
            std::vector<CallSlot*> slots;
            std::vector<uint64_t> ids, dropped;
            bool polled = true;
            for (;;) {
              {
                std::lock_guard<std::mutex> lk(s.m);
                if (s.state != 0 && !polled) break;
              }
              if (!polled) q.poll(BatchQueue::now_ns(), p);
              polled = false;
              if (p.ids.empty() && p.expired.empty() && p.dropped.empty()) {
                // Nothing to run here: a worker takes what becomes due; sleep until answered.
                py::gil_scoped_release nogil;
                q.wake_one();
                std::unique_lock<std::mutex> lk(s.m);
                s.cv.wait(lk, [&] { return s.state != 0; });
                break;
              }
              slots.clear();
              ids.clear();
              dropped.clear();
              for (size_t i = 0; i < p.ids.size(); ++i) {
                if (p.ids[i] >= kSlotBase)
                  slots.push_back(reinterpret_cast<CallSlot*>(p.tags[i]));
                else
                  ids.push_back(p.ids[i]);
              }
              for (size_t i = 0; i < p.dropped.size(); ++i) {
                if (p.dropped[i] >= kSlotBase)
                  wake_slot(reinterpret_cast<CallSlot*>(p.dropped_tags[i]), 2);
                else
                  dropped.push_back(p.dropped[i]);
              }
              const bool ran = !p.ids.empty();
              py::object xs = py::none();
              if (!slots.empty()) {
                py::list l(slots.size());
                for (size_t i = 0; i < slots.size(); ++i) {
                  Py_INCREF(slots[i]->x);
                  PyList_SET_ITEM(l.ptr(), static_cast<Py_ssize_t>(i), slots[i]->x);
                }
                xs = std::move(l);
              }
              py::object res = py::none();
              bool ok = true;
              std::vector<uint64_t> answered;
              if (rs != nullptr && ids.empty() && dropped.empty() && p.expired.empty() && !slots.empty()) {
                const Py_ssize_t k = static_cast<Py_ssize_t>(slots.size());
                try {
                  res = run_slot_batch(q, rs, fn, xs, k, p.oldest_enqueue_ns, outcome, ok);
                } catch (py::error_already_set& e) {
                  for (CallSlot* o : slots) {
                    Py_INCREF(e.value().ptr());
                    o->res = e.value().ptr();
                    o->ok = false;
                    wake_slot(o, 1);
                  }
                  q.batch_done();
                  throw;
                }
              } else try {
                py::tuple out = handler(runs_of(ids), static_cast<int>(p.reason), p.oldest_enqueue_ns, xs,
                                        py::cast(p.expired), py::cast(dropped));
                res = out[0];
                ok = out[1].cast<bool>();
                answered = out[2].cast<std::vector<uint64_t>>();
              } catch (py::error_already_set& e) {
                // Never leave a caller waiting: the batch's slot callers get the error.
                res = e.value();
                ok = false;
                if (ran) {
                  for (CallSlot* o : slots) {
                    Py_INCREF(res.ptr());
                    o->res = res.ptr();
                    o->ok = false;
                    wake_slot(o, 1);
                  }
                  q.batch_done();
                }
                throw;
              }
              if (!ran) continue;
              if (!slots.empty() && ok &&
                  (!PyList_CheckExact(res.ptr()) || static_cast<size_t>(PyList_GET_SIZE(res.ptr())) != slots.size())) {
                res = py::module_::import("builtins")
                          .attr("RuntimeError")("pyperfcore batcher: results for per-call slots were lost");
                ok = false;
              }
              for (size_t i = 0; i < slots.size(); ++i) {
                PyObject* r = ok ? PyList_GET_ITEM(res.ptr(), static_cast<Py_ssize_t>(i)) : res.ptr();
                Py_INCREF(r);
                slots[i]->res = r;
                slots[i]->ok = ok;
              }
              // Short, never-blocking wakes with the GIL held: releasing it here would hand it
              // to a waiting thread on every batch.
              for (CallSlot* o : slots) wake_slot(o, 1);
              if (!answered.empty()) c.complete(answered.data(), answered.size());
              q.batch_done();
            }
            if (s.state == 2) throw SlotStatus("-2");
            if (s.ok) return py::reinterpret_steal<py::object>(s.res);
            PyErr_SetObject(reinterpret_cast<PyObject*>(Py_TYPE(s.res)), s.res);
            Py_DECREF(s.res);
            throw py::error_already_set();
          },
          py::arg("completions"), py::arg("x"), py::arg("handler"), py::arg("runner"), py::arg("fn"),
          py::arg("outcome"), py::arg("inline_max_ns") = -1,
          "call_slot in caller-runs mode: runs due batches on the calling thread through handler(runs, reason, "
          "oldest, slot_inputs, expired, dropped) -> (slot results, ok, answered ids) until its own request is "
          "answered; with inline_max_ns >= 0 only while the runner's mean model time is at most that many ns.")
      .def(
          "cycle_slots",
          [](BatchQueue& q, Completions& c, std::vector<uint64_t> answered, bool batch_done, int64_t timeout_ns,
             SlotBatch& sb, py::object results, bool ok, py::object runner, py::object fn, py::object outcome) {
            // cycle() that also answers the slot callers of the worker's previous batch
            // (results: a list with one entry per slot, or the exception when ok is false) and
            // hands out the inputs of the next batch's slot requests as a list (None if none).
            // With runner (a LoopSubmitter whose statistics are configured), a next batch made
            // of slot requests only is run right here (fn called once, statistics natively,
            // outcome(n, ok, out, t0) -> (results, ok) only for model errors and bad result
            // counts) and the worker goes round again without returning to Python.
            RunStats* rs = nullptr;
            if (!runner.is_none()) {
              if (Py_TYPE(runner.ptr()) != &LoopSubmitterType ||
                  reinterpret_cast<LoopSubmitter*>(runner.ptr())->future_type == nullptr)
                throw py::type_error("cycle_slots: runner must be a configured LoopSubmitter or None");
              rs = reinterpret_cast<LoopSubmitter*>(runner.ptr())->stats;
            }
            auto& slots = sb.slots;
            for (;;) {
              if (!slots.empty()) {
                if (ok && (!PyList_CheckExact(results.ptr()) ||
                           static_cast<size_t>(PyList_GET_SIZE(results.ptr())) != slots.size())) {
                  // Never leave a caller waiting: a bad hand-over fails the batch's callers.
                  results = py::module_::import("builtins")
                                .attr("RuntimeError")("pyperfcore batcher: results for per-call slots were lost");
                  ok = false;
                }
                for (size_t i = 0; i < slots.size(); ++i) {
                  PyObject* r = ok ? PyList_GET_ITEM(results.ptr(), static_cast<Py_ssize_t>(i)) : results.ptr();
                  Py_INCREF(r);
                  slots[i]->res = r;
                  slots[i]->ok = ok;
                }
              }
              results = py::none();
              Poll p;
              std::vector<uint64_t> ids;
              {
                py::gil_scoped_release nogil;
                for (CallSlot* s : slots) wake_slot(s, 1);
                slots.clear();
                if (!answered.empty()) c.complete(answered.data(), answered.size());
                answered.clear();
                if (batch_done)
                  q.done_and_wait(timeout_ns, p);
                else
                  q.wait(timeout_ns, p);
                ids.reserve(p.ids.size());
                for (size_t i = 0; i < p.ids.size(); ++i) {
                  if (p.ids[i] >= kSlotBase)
                    slots.push_back(reinterpret_cast<CallSlot*>(p.tags[i]));
                  else
                    ids.push_back(p.ids[i]);
                }
                // Slot requests carry no deadline, so only close(drain=False) removes them unrun.
                std::vector<uint64_t> dropped;
                for (size_t i = 0; i < p.dropped.size(); ++i) {
                  if (p.dropped[i] >= kSlotBase)
                    wake_slot(reinterpret_cast<CallSlot*>(p.dropped_tags[i]), 2);
                  else
                    dropped.push_back(p.dropped[i]);
                }
                p.dropped.swap(dropped);
              }
              py::object xs = py::none();
              if (!slots.empty()) {
                py::list l(slots.size());
                for (size_t i = 0; i < slots.size(); ++i) {
                  Py_INCREF(slots[i]->x);
                  PyList_SET_ITEM(l.ptr(), static_cast<Py_ssize_t>(i), slots[i]->x);
                }
                xs = std::move(l);
              }
              if (rs == nullptr || !ids.empty() || !p.expired.empty() || !p.dropped.empty() || p.finished ||
                  slots.empty()) {
                return py::make_tuple(runs_of(ids), p.key, static_cast<int>(p.reason), py::cast(p.expired),
                                      py::cast(p.dropped), p.next_wake_ns, p.finished, p.oldest_enqueue_ns, p.cost,
                                      p.queued, xs);
              }
              // A batch of slot requests only: run it here and go round again.
              const Py_ssize_t k = static_cast<Py_ssize_t>(slots.size());
              batch_done = true;
              ok = true;
              try {
                results = run_slot_batch(q, rs, fn, xs, k, p.oldest_enqueue_ns, outcome, ok);
              } catch (py::error_already_set& e) {
                // SystemExit and the like (or a failing outcome()): the batch's callers get it and
                // the worker carries on, as its Python loop does.
                results = e.value();
                ok = false;
              }
            }
          },
          py::arg("completions"), py::arg("answered"), py::arg("batch_done"), py::arg("timeout_ns"),
          py::arg("slots"), py::arg("results"), py::arg("ok"), py::arg("runner") = py::none(),
          py::arg("fn") = py::none(), py::arg("outcome") = py::none(),
          "cycle() plus the per-call slots: answers the previous batch's slot callers with results (or the "
          "exception when ok is false), then returns poll_runs' tuple for the other ids and, last, the inputs "
          "of the new batch's slot requests (None if none).")
      .def(
          "push_many",
          [](BatchQueue& q, uint64_t first, int64_t n, int64_t key, int32_t prio, int64_t cost, int64_t deadline,
             int64_t now) { return static_cast<int>(q.push_many(first, n, key, prio, cost, deadline, now)); },
          py::arg("first_id"), py::arg("n"), py::arg("key"), py::arg("priority"), py::arg("cost"),
          py::arg("deadline_ns"), py::arg("now_ns"))
      .def("cancel", &BatchQueue::cancel, py::arg("id"))
      .def(
          "poll",
          [](BatchQueue& q, int64_t now) {
            Poll p;
            q.poll(now, p);
            return poll_tuple(p);
          },
          py::arg("now_ns"),
          "Non-blocking: (ids, key, reason, expired, dropped, next_wake_ns, finished, oldest_enqueue_ns, cost).")
      .def(
          "poll_runs",
          [](BatchQueue& q, int64_t now) {
            Poll p;
            q.poll(now, p);
            return poll_runs_tuple(p);
          },
          py::arg("now_ns"),
          "poll() with the batch as runs [(first_id, count), ...] instead of ids, and the queued count last.")
      .def(
          "push_poll_runs",
          [](BatchQueue& q, uint64_t first, int64_t n, int64_t now) {
            // The loop driver's turn in one call: its buffered default-attribute requests
            // (key 0, priority 0, cost 1, no deadline) go in, the next due batch comes out.
            int st = n > 0 ? static_cast<int>(q.push_many(first, n, 0, 0, 1, batching::kNoDeadline, now)) : 0;
            Poll p;
            q.poll(now, p);
            return py::make_tuple(st, poll_runs_tuple(p));
          },
          py::arg("first_id"), py::arg("n"), py::arg("now_ns"),
          "push_many(first_id, n) with default attributes, then poll_runs(now): (push status, poll).")
      .def(
          "wait_runs",
          [](BatchQueue& q, int64_t timeout_ns) {
            Poll p;
            {
              py::gil_scoped_release nogil;
              q.wait(timeout_ns, p);
            }
            return poll_runs_tuple(p);
          },
          py::arg("timeout_ns"), "wait() with the batch as runs [(first_id, count), ...].")
      .def(
          "cycle",
          [](BatchQueue& q, Completions& c, const std::vector<uint64_t>& answered, bool batch_done,
             int64_t timeout_ns) {
            // A worker's whole turn outside the GIL: wake the thread callers it answered, free
            // its model slot, wait for the next batch.
            Poll p;
            {
              py::gil_scoped_release nogil;
              if (!answered.empty()) c.complete(answered.data(), answered.size());
              if (batch_done)
                q.done_and_wait(timeout_ns, p);
              else
                q.wait(timeout_ns, p);
            }
            return poll_runs_tuple(p);
          },
          py::arg("completions"), py::arg("answered"), py::arg("batch_done"), py::arg("timeout_ns"),
          "complete(answered) + [batch_done] + wait_runs(timeout_ns), with the GIL released throughout.")
      .def(
          "wait",
          [](BatchQueue& q, int64_t timeout_ns) {
            Poll p;
            {
              py::gil_scoped_release nogil;
              q.wait(timeout_ns, p);
            }
            return poll_tuple(p);
          },
          py::arg("timeout_ns"), "Blocking poll on the steady clock with the GIL released (timeout < 0: none).")
      .def("batch_done", &BatchQueue::batch_done)
      .def("close", &BatchQueue::close, py::arg("drain"))
      .def(
          "set_policy",
          [](BatchQueue& q, int64_t mbs, int64_t delay) {
            try {
              q.set_policy(mbs, delay);
            } catch (const std::invalid_argument& e) {
              throw py::value_error(e.what());
            }
          },
          py::arg("max_batch_size"), py::arg("max_delay_ns"))
      .def("interrupt", &BatchQueue::interrupt)
      .def("size", &BatchQueue::size)
      .def("in_flight", &BatchQueue::in_flight)
      .def("closed", &BatchQueue::closed)
      .def("config",
           [](const BatchQueue& q) {
             Config c = q.config();
             py::dict d;
             d["max_batch_size"] = c.max_batch_size;
             d["max_delay_ns"] = c.max_delay_ns;
             d["preferred_batch_sizes"] = c.preferred_batch_sizes;
             d["max_batch_cost"] = c.max_batch_cost;
             d["max_queue_size"] = c.max_queue_size;
             d["max_concurrent_batches"] = c.max_concurrent_batches;
             d["starvation_ns"] = c.starvation_ns;
             return d;
           })
      .def("counters", [](const BatchQueue& q) {
        batching::Counters c = q.counters();
        py::dict d;
        d["pushed"] = c.pushed;
        d["rejected_full"] = c.rejected_full;
        d["rejected_closed"] = c.rejected_closed;
        d["rejected_cost"] = c.rejected_cost;
        d["expired"] = c.expired;
        d["cancelled"] = c.cancelled;
        d["dropped"] = c.dropped;
        d["batches"] = c.batches;
        d["batched_requests"] = c.batched_requests;
        d["sent_full"] = c.by_reason[1];
        d["sent_preferred"] = c.by_reason[2];
        d["sent_delay"] = c.by_reason[3];
        d["sent_drain"] = c.by_reason[4];
        return d;
      });

  slot_batch.def(py::init<>()).def("size", [](const SlotBatch& b) { return b.slots.size(); });
  py::register_exception<SlotStatus>(m, "_BatchSlotStatus", PyExc_RuntimeError);

  completions
      .def(py::init<>())
      .def("expect", &Completions::expect, py::arg("id"))
      .def(
          "complete",
          [](Completions& c, const std::vector<uint64_t>& ids) {
            // Short and never blocking: keeping the GIL avoids a convoy with the woken callers.
            c.complete(ids.data(), ids.size());
          },
          py::arg("ids"))
      .def(
          "wait",
          [](Completions& c, uint64_t id, int64_t timeout_ns) {
            py::gil_scoped_release nogil;
            return c.wait(id, timeout_ns);
          },
          py::arg("id"), py::arg("timeout_ns"), "Waits with the GIL released; False on timeout.")
      .def("forget", &Completions::forget, py::arg("id"))
      .def("size", &Completions::size);

  m.def(
      "batching_bench_engine",
      [](int producers, int64_t in_flight, int64_t per_producer, int64_t max_batch_size, int64_t max_delay_ns,
         bool caller_runs, bool use_call) {
        py::gil_scoped_release nogil;
        return batching::bench_engine(producers, in_flight, per_producer, max_batch_size, max_delay_ns, caller_runs,
                                      use_call);
      },
      py::arg("producers"), py::arg("in_flight"), py::arg("per_producer"), py::arg("max_batch_size"),
      py::arg("max_delay_ns"), py::arg("caller_runs") = false, py::arg("use_call") = false,
      "C++ producers through the Engine with a no-op model: (round trips/s, mean batch size); use_call: "
      "Engine::call(n) per round trip instead of submit + wait.");
  m.def(
      "batching_bench_mutex_queue",
      [](int producers, int64_t per_producer, int64_t max_batch_size) {
        py::gil_scoped_release nogil;
        return batching::bench_mutex_queue(producers, per_producer, max_batch_size);
      },
      py::arg("producers"), py::arg("per_producer"), py::arg("max_batch_size"),
      "Baseline: blocking producers through a plain mutex + condition variable queue (round trips/s).");
}

}  // namespace pyperfcore
