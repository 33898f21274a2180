"""SMALL_M_PATH: which kernels take GPU calls with at most FUSED_MAX_M rows (the Triton kernels or
the CUDA C++ small-M kernels). "auto" (the default) checks and times both on the first call of a
shape. The pick's logic runs here on any machine with fake runners and a fake timer (the
interpreter cannot time kernels); on a GPU the whole path runs for real against the oracle."""
from __future__ import annotations

import numpy as np
import pytest

from tests import reference as ref

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.triton


@pytest.fixture
def qg(monkeypatch):
    from pyperfcore.kernels import quant_gemm as qg

    monkeypatch.setattr(qg, "_SMALL", {})
    monkeypatch.setattr(qg, "SMALL_WHY", {})
    monkeypatch.setattr(qg, "SMALL_M_PATH", "auto")
    monkeypatch.setattr(qg, "AUTOTUNE", True)
    monkeypatch.setattr(qg, "_CAN_TIME", True)
    return qg


class _Runs:
    """Fake layer calls: call(path) returns the output of that path and counts the calls."""

    def __init__(self, tri, cu):
        self.out = {"fused": tri, "triton": tri, "cuda": cu}
        self.calls = []

    def __call__(self, path):
        self.calls.append(path)
        out = self.out[path]
        if isinstance(out, Exception):
            raise out
        return out.clone()


def _timer(t_tri, t_cuda, seen):
    """Fake _call_times: (host ms, device ms) per candidate, Triton first."""
    def timer(fns):
        for f in fns:  # (the real timer calls each candidate many times)
            f()
        seen.append(len(fns))
        return [t_tri, t_cuda]
    return timer


@pytest.mark.parametrize("t_tri,t_cuda,want", [
    ((0.012, 0.030), (0.012, 0.021), True),   # device-bound: CUDA's kernel is faster
    ((0.012, 0.020), (0.012, 0.029), False),  # device-bound: Triton's is
    ((0.010, 0.030), (0.035, 0.005), False),  # CUDA's kernel is faster but its host cost sets the pace
    ((0.040, 0.010), (0.015, 0.012), True),   # host-bound Triton launch against a cheaper CUDA call
])
def test_auto_keeps_the_faster_kernel_and_times_once(qg, monkeypatch, t_tri, t_cuda, want):
    y = torch.randn(3, 5)
    runs = _Runs(y, y + 1e-7)  # the epilogues' float math may differ by an ulp
    seen = []
    monkeypatch.setattr(qg, "_call_times", _timer(t_tri, t_cuda, seen))
    x = torch.zeros(3, 8)
    key = ("w8a8", -1, 4, 5, 8)
    assert qg._small_path(key, x, lambda: None, runs) is want
    assert qg._SMALL[key] is want and seen == [2]
    assert runs.calls[:2] == ["fused", "cuda"]  # the check, before any timing
    assert qg.SMALL_WHY[key] == (f"per call (host / device us): triton {t_tri[0] * 1e3:.1f} / {t_tri[1] * 1e3:.1f}, "
                                 f"cuda {t_cuda[0] * 1e3:.1f} / {t_cuda[1] * 1e3:.1f}")
    runs.calls.clear()
    assert qg._small_path(key, x, lambda: None, runs) is want  # later calls: the recorded pick, nothing run
    assert runs.calls == [] and seen == [2]
    half = ("half", -1, 4, 5, 8)
    assert qg._small_path(half, x, lambda: None, runs) is want
    assert runs.calls[0] == "triton"  # FP16/BF16 layers: the Triton path is called "triton"


@pytest.mark.parametrize("fault", ["off_by_1pct", "nan_row", "nothing_written", "raises"])
def test_auto_never_picks_a_cuda_kernel_that_is_wrong(qg, monkeypatch, fault):
    """A CUDA output that disagrees with the Triton one (however fast), or a CUDA call that
    raises, leaves the Triton kernel in place, and SMALL_WHY says why."""
    y = torch.randn(4, 6) * 10
    bad = {"off_by_1pct": y * 1.01, "nan_row": y.clone().index_fill_(0, torch.tensor([2]), float("nan")),
           "nothing_written": torch.zeros_like(y), "raises": RuntimeError("launch failed")}[fault]
    seen = []
    monkeypatch.setattr(qg, "_call_times", _timer((1.0, 1.0), (0.001, 0.001), seen))  # CUDA "faster" by far
    key = ("w8a8", -1, 4, 6, 8)
    assert qg._small_path(key, torch.zeros(4, 8), lambda: None, _Runs(y, bad)) is False
    assert qg._SMALL[key] is False and seen == []
    assert ("raised RuntimeError: launch failed" if fault == "raises" else "differs") in qg.SMALL_WHY[key]


def test_nan_rows_agree_when_both_kernels_poison_them(qg, monkeypatch):
    y = torch.randn(3, 4)
    y[1] = float("nan")
    monkeypatch.setattr(qg, "_call_times", _timer((0.02, 0.02), (0.01, 0.01), []))
    assert qg._small_path(("half", -1, 4, 4, 8), torch.zeros(3, 8), lambda: None, _Runs(y, y.clone())) is True


def test_a_timing_failure_keeps_triton(qg, monkeypatch):
    """Timing is a choice, never a failure of the call: if it raises, Triton stays, and why."""
    def broken(fns):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(qg, "_call_times", broken)
    y = torch.randn(2, 3)
    key = ("half", -1, 2, 3, 8)
    assert qg._small_path(key, torch.zeros(2, 8), lambda: None, _Runs(y, y.clone())) is False
    assert qg._SMALL[key] is False and qg.SMALL_WHY[key] == (
        "timing failed, Triton kept: RuntimeError: CUDA error: out of memory")


def test_settings_refusals_and_no_timing(qg, monkeypatch):
    """"triton" / "cuda" decide without running anything; a bad value is a clear error; operands the
    CUDA kernel cannot take, and calls that cannot time (autotuning off), stay on Triton and record
    no pick (a later call that can will pick)."""
    runs = _Runs(torch.ones(1, 2), torch.ones(1, 2))
    x = torch.zeros(1, 8)
    for mode, want in (("triton", False), ("cuda", True)):
        monkeypatch.setattr(qg, "SMALL_M_PATH", mode)
        assert qg._small_path(("w8a8", -1, 1, 2, 8), x, lambda: "any refusal", runs) is want
    monkeypatch.setattr(qg, "SMALL_M_PATH", "fast")
    with pytest.raises(ValueError, match="PYPERFCORE_SMALL_M_PATH must be 'auto', 'triton' or 'cuda', got 'fast'"):
        qg._small_path(("w8a8", -1, 1, 2, 8), x, lambda: None, runs)
    monkeypatch.setattr(qg, "SMALL_M_PATH", "auto")
    key = ("w8a8", -1, 1, 2, 8)
    assert qg._small_path(key, x, lambda: "bias is not a contiguous float32 vector", runs) is False
    assert key not in qg._SMALL and "bias" in qg.SMALL_WHY[key]
    monkeypatch.setattr(qg, "AUTOTUNE", False)
    assert qg._small_path(key, x, lambda: None, runs) is False and key not in qg._SMALL
    assert runs.calls == []
    monkeypatch.setattr(qg, "_CUDA_MOD", [None])  # a build without the CUDA module: Triton, for good
    monkeypatch.setattr(qg, "AUTOTUNE", True)
    assert qg._small_path(key, x, lambda: None, runs) is False and qg._SMALL[key] is False and runs.calls == []


def test_cuda_small_refusal_names_the_operand(qg):
    qw = torch.randint(-127, 128, (6, 16), dtype=torch.int8)
    sw, cs = torch.rand(6), qw.to(torch.int32).sum(1, dtype=torch.int32)
    b = torch.randn(6)
    assert qg._cuda_small_refusal(qw, None, sw, cs, b) is None
    assert qg._cuda_small_refusal(qw, None, sw, cs, None) is None
    assert "columns" in qg._cuda_small_refusal(qw.t().contiguous().t(), None, sw, cs, b)
    assert "bias" in qg._cuda_small_refusal(qw, None, sw, cs, b.half())
    assert "bias" in qg._cuda_small_refusal(qw, None, sw, cs, torch.randn(12)[::2])
    assert "scales" in qg._cuda_small_refusal(qw, None, torch.rand(12)[::2], cs, b)
    assert "column sums" in qg._cuda_small_refusal(qw, None, sw, cs.long(), b)
    w16 = torch.randn(6, 16).half()
    assert qg._cuda_small_refusal(w16, w16, None, None, b) is None
    assert "columns" in qg._cuda_small_refusal(w16.t().contiguous().t(), w16, None, None, b)


def test_cpu_tensors_never_pick(qg, rng):
    """The pick is for CUDA tensors only: CPU calls (the interpreter) take the Triton path and
    record nothing, whatever the setting."""
    if not qg._INTERPRET:
        pytest.skip("CPU tensors run the Triton kernels only under TRITON_INTERPRET=1")
    qw = torch.from_numpy(rng.integers(-127, 128, (6, 8), dtype=np.int8))
    args = (qw, torch.ones(6), qw.to(torch.int32).sum(1).to(torch.int32))
    x = torch.from_numpy(rng.standard_normal((2, 8)).astype(np.float32))
    y = qg.linear_w8a8(x, *args)
    assert qg._SMALL == {} and qg.SMALL_WHY == {}
    np.testing.assert_array_equal(y.numpy(), qg.linear_w8a8(x, *args, path="fused").numpy())


# ----------------------------------------------------------------------------- on a GPU
@pytest.mark.gpu
@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["w8a8", "half"])
@pytest.mark.parametrize("m", [1, 5, 16])
def test_auto_pick_on_a_gpu(qg, kind, m, rng):
    """The default path on a GPU: the first call checks and times both kernels for real (SMALL_WHY
    shows the times), the answer matches the float64 oracle whichever won, later calls keep the
    pick, and CUDA graph capture replays the picked path."""
    n, k = 384, 1536
    layer_w = rng.standard_normal((n, k)).astype(np.float32)
    bias = torch.from_numpy(rng.standard_normal(n).astype(np.float32)).cuda()
    x = torch.from_numpy((rng.standard_normal((m, k)) * 2 + 0.3).astype(np.float32)).cuda()
    if kind == "w8a8":
        from pyperfcore import quant

        lay = quant.QuantizedLinear(layer_w, None)
        qw = torch.from_numpy(lay.qweight).cuda()
        args = (qw, torch.from_numpy(lay.wscale).cuda(), qw.to(torch.int32).sum(1, dtype=torch.int32), bias, "gelu")
        fn = lambda: qg.linear_w8a8(x, *args)  # noqa: E731
        exp = ref.linear_w8a8(x.cpu().numpy(), lay.qweight, lay.wscale, bias.cpu().numpy(), "gelu")
        tol = 2e-5
    else:
        w16 = torch.from_numpy(layer_w).half().cuda()
        fn = lambda: qg.linear_half(x, w16, bias, "gelu")  # noqa: E731
        exp = ref.linear_half(x.half().double().cpu().numpy(), w16.double().cpu().numpy(), bias.cpu().numpy(), "gelu")
        tol = 1e-3
    y = fn()
    (key, picked), = qg._SMALL.items()
    assert key[0] == kind and qg.SMALL_WHY[key].startswith("per call (host / device us): triton"), qg.SMALL_WHY
    np.testing.assert_allclose(y.cpu().numpy(), exp, rtol=tol, atol=tol * max(1.0, float(np.abs(exp).max())))
    torch.testing.assert_close(fn(), y, rtol=0, atol=0)
    assert qg._SMALL == {key: picked}
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        out = fn()
    x.mul_(-1.5)
    g.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, fn(), rtol=0, atol=0)


# ------------------------------------------------------------- the interpreter's versions
@pytest.mark.parametrize("tv,nv,interp,bad", [("3.6.0", "2.4.6", True, True), ("3.2.0", "2.4.0", True, True),
                                              ("3.6.0", "2.3.5", True, False), ("3.7.1", "2.4.6", True, False),
                                              ("3.6.0", "2.4.6", False, False), ("3.10.0+git1a2b", "3.0.0rc1", True, False),
                                              ("3.6.0rc1", "2.4.0.dev0", True, True)])
def test_interpreter_version_problem_is_named(tv, nv, interp, bad):
    """Triton 3.6 and older cannot interpret our kernels with NumPy 2.4+ (checked by hand: triton
    3.6.0 fails with numpy 2.4.6 and runs with 2.3.5); importing a kernel module warns then,
    naming the fix, instead of leaving an interpreter TypeError to the first call."""
    from pyperfcore.kernels import interpreter_problem

    why = interpreter_problem(tv, nv, interp)
    assert (why is not None) is bad
    if bad:
        assert f"triton {tv} and numpy {nv}" in why and "numpy<2.4 or triton>=3.7" in why


def test_interpreter_check_warns_once(monkeypatch):
    import numpy
    import triton

    from pyperfcore import kernels

    monkeypatch.setattr(kernels, "_CHECKED", [])
    monkeypatch.setattr(triton, "__version__", "3.5.1")
    monkeypatch.setattr(numpy, "__version__", "2.4.1")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.warns(RuntimeWarning, match="numpy<2.4 or triton>=3.7"):
        kernels._check_interpreter()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kernels._check_interpreter()  # once per process


def test_call_times_host_then_cold_device(qg, monkeypatch):
    """_call_times (GPU-only; its CUDA calls are faked here so that its logic runs everywhere):
    per round and candidate, `calls` unsynchronized calls timed on the host, then the L2 flush,
    then one call between two events; medians per candidate, Triton's first."""
    import triton

    log = []

    class Flush:
        def zero_(self):
            log.append("flush")

    class Event:
        def __init__(self, enable_timing=False):
            assert enable_timing

        def record(self):
            log.append("record")

        def synchronize(self):
            log.append("sync-event")

        def elapsed_time(self, end):  # the call timed: [..., "flush", "record", <fn>, "record", "sync-event"]
            return 0.030 if log[-3] == "a" else 0.010

    class Driver:
        def get_empty_cache_for_benchmark(self):
            return Flush()

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: log.append("sync"))
    monkeypatch.setattr(triton.runtime.driver, "_active", Driver())  # (what `active` returns once set)
    a = lambda: log.append("a")  # noqa: E731
    b = lambda: log.append("b")  # noqa: E731
    (ha, da), (hb, db) = qg._call_times([a, b], rounds=3, calls=4)
    one = ["sync"] + ["a"] * 4 + ["flush", "record", "a", "record", "sync-event"]
    assert log == (one + [x.replace("a", "b") if x == "a" else x for x in one]) * 3
    assert (da, db) == (0.030, 0.010)
    assert ha > 0 and hb > 0
