"""The persistent TMA kernel of FP16/BF16-weight layers (``_half_tma_kernel``: x already of the
weight's type, Hopper or later) against the numpy oracle: under TRITON_INTERPRET=1 without a GPU
(tensor descriptors, the persistent tile loop over 3 programs), on a GPU of compute capability 9.0+
with every tuned config. The pick between it and the pointer kernel is checked here too."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests import reference as ref

pytestmark = pytest.mark.triton

_OUT = ["float32", "float16", "bfloat16"]


@pytest.fixture(scope="module", autouse=True)
def no_autotune():
    from pyperfcore.kernels import quant_gemm as qg

    prev, qg.AUTOTUNE = qg.AUTOTUNE, False
    yield
    qg.AUTOTUNE = prev


def _device():
    import torch

    if not torch.cuda.is_available():
        return "cpu"
    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("the TMA kernel needs compute capability 9.0+")
    return "cuda"


def _case(rng, m, n, k, dtype, res_dtype=None, nan_rows=()):
    import torch

    dt = getattr(torch, dtype)
    x = torch.from_numpy((rng.standard_normal((m, k)) * 2).astype(np.float32)).to(dt)
    for i in nan_rows:
        x[i, int(rng.integers(0, k))] = float("inf") if i % 2 else float("nan")
    w = torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32)).to(dt)
    b = torch.from_numpy(rng.standard_normal(n).astype(np.float32))
    r = None if res_dtype is None else torch.from_numpy(rng.standard_normal((m, n)).astype(np.float32)).to(
        getattr(torch, res_dtype))
    return x, w, b, r


def _oracle(x, w, b, act, r):
    return ref.linear_half(x.double().numpy(), w.double().numpy(), b.numpy(), act,
                           None if r is None else r.double().numpy())


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@given(m=st.integers(1, 70), n=st.integers(1, 70), k8=st.integers(1, 12), seed=st.integers(0, 2**32 - 1),
       act=st.sampled_from(["none", "relu", "gelu", "silu"]), res=st.sampled_from([None, "float32", "float16"]))
@settings(max_examples=5, deadline=None)
def test_tma_every_config_matches_oracle(dtype, m, n, k8, seed, act, res):
    """Every config (the tuned list and the interpreter's extra ones) on random shapes: M and N off
    every block, K a multiple of 8 but not of BLOCK_K (the descriptor's zero fill must add
    nothing; the NaN pads of the strided rows must not be read), more tiles than programs."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    if dev == "cuda":  # one specialization per config there (each compiles): shapes still vary
        act, res = "gelu", "float16"
    k = 8 * k8
    rng = np.random.default_rng(seed)
    x, w, b, r = _case(rng, m, n, k, dtype, res)
    exp = _oracle(x, w, b, act, r)
    # x and w as views with padded rows (strides k + 8 and k + 16: still 16-byte aligned rows); the
    # pads hold NaN, which would poison the output if a descriptor reached past K
    xt = torch.full((m, k + 8), float("nan"), dtype=x.dtype, device=dev)[:, :k]
    xt.copy_(x)
    wt = torch.full((n, k + 16), float("nan"), dtype=w.dtype, device=dev)[:, :k]
    wt.copy_(w)
    bt = b.to(dev)
    rt = None if r is None else r.to(dev)
    meta = dict(HAS_BIAS=True, ACT=qg._ACTS[act], HAS_RES=rt is not None, DOT_F32=qg._INTERPRET and dtype == "bfloat16")
    for c in qg._half_tma_kernel_configs + qg.INTERPRETER_EXTRA["half_tma"]:
        y = torch.full((m, n), float("nan"), device=dev)
        qg._half_tma_run(c, xt, wt, bt, y if rt is None else rt, y, m, n, k, qg._bucket(m),
                         0 if rt is None else rt.stride(0), meta)
        np.testing.assert_allclose(y.cpu().numpy(), exp, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(exp).max())),
                                   err_msg=str(c))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("out_dtype", _OUT)
def test_tma_path_same_bits_as_pointer_kernel_rounding(dtype, out_dtype, rng):
    """linear_half(path='tma') writes the float32 result rounded once to out_dtype (the same
    kernel's float32 output rounded by torch, bit for bit), NaN/inf rows come out NaN, and the
    result agrees with the pointer kernel within float32 summation-order error."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    m, n, k = 45, 37, 56
    x, w, b, r = _case(rng, m, n, k, dtype, "bfloat16", nan_rows=(3, 10))
    xt, wt, bt, rt = x.to(dev), w.to(dev), b.to(dev), r.to(dev)
    y32 = qg.linear_half(xt, wt, bt, "gelu", rt, path="tma").cpu()
    y = qg.linear_half(xt, wt, bt, "gelu", rt, path="tma", out_dtype=getattr(torch, out_dtype)).cpu()
    assert y.dtype == getattr(torch, out_dtype)
    torch.testing.assert_close(y, y32.to(y.dtype), rtol=0, atol=0, equal_nan=True)
    bad = torch.zeros(m, dtype=torch.bool)
    bad[[3, 10]] = True
    assert torch.isnan(y32[bad]).all() and torch.isfinite(y32[~bad]).all()
    yp = qg.linear_half(xt, wt, bt, "gelu", rt, path="pointer").cpu()
    torch.testing.assert_close(y32, yp, rtol=1e-5, atol=1e-5, equal_nan=True)
    exp = _oracle(x[~bad], w, b, "gelu", r[~bad])
    np.testing.assert_allclose(y32[~bad].numpy(), exp, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="NaN or infinity"):
        qg.linear_half(xt, wt, bt, "gelu", rt, path="tma", check_finite=True)


def test_tma_refusals_and_empty(rng):
    """path='tma' explains what it cannot take: x of another type, rows not 16-byte aligned
    (K not a multiple of 8), a strided column; an empty batch is an empty result."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    w = torch.from_numpy(rng.standard_normal((6, 16)).astype(np.float32)).half().to(dev)
    x = torch.from_numpy(rng.standard_normal((3, 16)).astype(np.float32)).to(dev)
    with pytest.raises(ValueError, match="weight's type"):
        qg.linear_half(x, w, path="tma")
    with pytest.raises(ValueError, match="16-byte aligned"):
        qg.linear_half(x[:, :15].half(), w[:, :15].contiguous(), path="tma")
    with pytest.raises(ValueError, match="16-byte aligned"):
        qg.linear_half(x.half()[:, 1:9], w[:, :8].contiguous(), path="tma")  # base off by 2 bytes
    with pytest.raises(ValueError, match="path must be"):
        qg.linear_half(x.half(), w, path="wgmma")
    assert qg.linear_half(x[:0].half(), w, path="tma").shape == (0, 6)


@pytest.mark.parametrize("mode", ["0", "1", "auto"])
def test_tma_pick_follows_setting(mode, rng, monkeypatch):
    """TMA: "1" sends every eligible call at M >= TMA_MIN_M to the TMA kernel, "0" none,
    "auto" without autotuning keeps the pointer kernel; calls below TMA_MIN_M or with float32 x
    never take it. Same numbers either way."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    monkeypatch.setattr(qg, "TMA", mode)
    monkeypatch.setattr(qg, "TMA_MIN_M", 32)
    monkeypatch.setattr(qg, "_PICK", {})
    calls = []
    real = qg._half_tma_run
    monkeypatch.setattr(qg, "_half_tma_run", lambda *a, **kw: (calls.append(a[0]), real(*a, **kw)))
    x, w, b, _ = _case(rng, 40, 24, 32, "float16")
    xt, wt, bt = x.to(dev), w.to(dev), b.to(dev)
    y = qg.linear_half(xt, wt, bt, "relu")
    assert len(calls) == (1 if mode == "1" else 0)
    qg.linear_half(xt[:20], wt, bt, "relu")  # M below TMA_MIN_M
    qg.linear_half(xt.float(), wt, bt, "relu")  # x of another type
    assert len(calls) == (1 if mode == "1" else 0)
    yp = qg.linear_half(xt, wt, bt, "relu", path="pointer" if mode != "1" else "tma")
    torch.testing.assert_close(y, yp, rtol=1e-5, atol=1e-5)


def test_tma_pick_times_both_kernels(rng, monkeypatch):
    """With autotuning on ("auto"), the first call of a shape times the pointer kernel's winner
    and every TMA config that suits M, keeps the fastest for later calls, and skips a config
    that fails to build (recorded in TMA_WHY) instead of failing the call. The timer is replaced
    here (the interpreter cannot time kernels), so the pick is driven by the fake times."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    if dev == "cuda":
        pytest.skip("the interpreter's pick logic; a GPU times for real in the benchmarks")
    monkeypatch.setattr(qg, "TMA", "auto")
    monkeypatch.setattr(qg, "TMA_MIN_M", 32)
    monkeypatch.setattr(qg, "_PICK", {})
    monkeypatch.setattr(qg, "_BEST", {})
    monkeypatch.setattr(qg, "TMA_WHY", {})
    monkeypatch.setattr(qg, "AUTOTUNE", True)
    monkeypatch.setattr(qg, "_CAN_TIME", True)  # lets _half_pick time (the kernels still interpret)
    cfgs = [qg._cfg(16, 32, 32, 4, 1, GROUP_M=2, FLATTEN=False), qg._cfg(32, 16, 64, 4, 1, GROUP_M=1, FLATTEN=True),
            qg._cfg(16, 64, 16, 4, 1, GROUP_M=8, FLATTEN=True)]
    monkeypatch.setattr(qg, "_half_tma_kernel_configs", cfgs)
    fake = iter([5.0, 7.0, 3.0])  # pointer kernel, cfgs[0], cfgs[2] (cfgs[1] raises below)
    real_run = qg._half_tma_run

    def run(c, *a, **kw):
        if c is cfgs[1]:
            raise RuntimeError("cannot build")
        return real_run(c, *a, **kw)

    def bench(fn, quantiles):
        fn()
        return next(fake)

    monkeypatch.setattr(qg, "_half_tma_run", run)
    monkeypatch.setattr(qg, "_bench_fast", bench)
    monkeypatch.setattr(qg._half_kernel, "configs", [qg._cfg(16, 32, 32, 4, 1, GROUP_M=2)])
    x, w, b, _ = _case(rng, 40, 24, 32, "float16")
    y = qg.linear_half(x, w, b, "relu")
    key = ("half", 64, 24, 32, -1, torch.float16)
    assert qg._PICK[key] is cfgs[2]
    assert list(qg.TMA_WHY.values()) == ["RuntimeError: cannot build"]
    torch.testing.assert_close(y, qg.linear_half(x, w, b, "relu", path="pointer"), rtol=1e-5, atol=1e-5)
    fake = iter([])  # noqa: F841 (read by bench): a second call must not time again
    torch.testing.assert_close(qg.linear_half(x, w, b, "relu"), y, rtol=0, atol=0)


@pytest.mark.parametrize("kernel", ["half", "w8a8"])
@pytest.mark.parametrize("fault", ["off_by_1pct", "nan", "nothing_written", "one_ulp_w8a8"])
def test_tma_pick_leaves_out_a_config_with_wrong_output(kernel, fault, rng, monkeypatch):
    """The pick runs every TMA candidate once and compares its output with the pointer kernel's
    before timing it: a config whose output is off (1% on one element, a NaN in a finite row,
    nothing written; for W8A8, whose sums are exact, even one float32 ulp) is left out with the
    reason in TMA_WHY, even when it would time fastest; the faster of the rest is picked."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    if _device() == "cuda":
        pytest.skip("the interpreter's pick logic (fake timer)")
    if fault == "one_ulp_w8a8" and kernel == "half":
        pytest.skip("one float32 ulp is within the FP16 path's summation-order tolerance")
    for name, v in [("TMA", "auto"), ("TMA_MIN_M", 32), ("_PICK", {}), ("_BEST", {}), ("TMA_WHY", {}),
                    ("AUTOTUNE", True), ("_CAN_TIME", True)]:
        monkeypatch.setattr(qg, name, v)
    cfgs = [qg._cfg(16, 32, 32, 4, 1, GROUP_M=2, FLATTEN=False), qg._cfg(16, 64, 16, 4, 1, GROUP_M=8, FLATTEN=True)]
    one = [qg._cfg(16, 32, 32, 4, 1, GROUP_M=2)]
    fake = iter([5.0, 4.0, 1.0])  # pointer, cfgs[0]; cfgs[1] (wrong) would be fastest if it were timed

    def bench(fn, quantiles):
        fn()
        return next(fake)

    monkeypatch.setattr(qg, "_bench_fast", bench)
    real_run = qg._half_tma_run if kernel == "half" else qg._w8a8_tma_run

    def spoil(y):
        if fault == "off_by_1pct":  # on the largest element (a ReLU zero would stay zero)
            y.view(-1)[y.abs().argmax()] *= 1.01
        elif fault == "nan":
            y[0, 1] = float("nan")
        elif fault == "nothing_written":
            y.zero_()
        else:
            i = y.abs().argmax()
            y.view(-1)[i] = torch.nextafter(y.view(-1)[i], torch.tensor(float("inf")))

    if kernel == "half":
        monkeypatch.setattr(qg, "_half_tma_kernel_configs", cfgs)
        monkeypatch.setattr(qg._half_kernel, "configs", one)

        def run(c, *a, **kw):
            real_run(c, *a, **kw)
            if c is cfgs[1]:
                spoil(a[4])  # y

        monkeypatch.setattr(qg, "_half_tma_run", run)
        x, w, b, _ = _case(rng, 40, 24, 32, "float16")
        y = qg.linear_half(x, w, b, "relu")
        key = ("half", 64, 24, 32, -1, torch.float16)
        yp = qg.linear_half(x, w, b, "relu", path="pointer")
    else:
        monkeypatch.setattr(qg, "_w8a8_tma_kernel_configs", cfgs)
        monkeypatch.setattr(qg._w8a8_kernel, "configs", one)

        def run(c, targs, *a, **kw):
            real_run(c, targs, *a, **kw)
            if c is cfgs[1]:
                spoil(targs[9])  # y

        monkeypatch.setattr(qg, "_w8a8_tma_run", run)
        _, args, x = _w8a8_case(rng, 40, 24, 32)
        xt = torch.from_numpy(x)
        y = qg.linear_w8a8(xt, *args, "relu")
        key = ("w8a8", 64, 24, 32, -1)
        yp = qg.linear_w8a8(xt, *args, "relu", path="pointer")
    assert qg._PICK[key] is cfgs[0]
    assert list(qg.TMA_WHY.values()) == ["output differs from the pointer kernel's: left out"]
    torch.testing.assert_close(y, yp, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", ["half", "w8a8"])
def test_forced_tma_times_only_tma_configs(kernel, rng, monkeypatch):
    """Forced TMA (path='tma') with autotuning on times only the TMA configs (the pointer kernel
    still gives the reference output, not a candidate) and keeps the fastest in _FORCED, leaving
    the auto pick alone; when every TMA config fails, the call raises and says why."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    if _device() == "cuda":
        pytest.skip("the interpreter's pick logic (fake timer)")
    for name, v in [("TMA", "auto"), ("_PICK", {}), ("_FORCED", {}), ("_BEST", {}), ("TMA_WHY", {}),
                    ("AUTOTUNE", True), ("_CAN_TIME", True)]:
        monkeypatch.setattr(qg, name, v)
    cfgs = [qg._cfg(16, 32, 32, 4, 1, GROUP_M=2, FLATTEN=False), qg._cfg(16, 64, 16, 4, 1, GROUP_M=8, FLATTEN=True)]
    fake = iter([3.0, 1.0])  # cfgs[0], cfgs[1]: no pointer timing

    def bench(fn, quantiles):
        fn()
        return next(fake)

    monkeypatch.setattr(qg, "_bench_fast", bench)
    one = [qg._cfg(16, 32, 32, 4, 1, GROUP_M=2)]
    if kernel == "half":
        monkeypatch.setattr(qg, "_half_tma_kernel_configs", cfgs)
        monkeypatch.setattr(qg._half_kernel, "configs", one)
        x, w, b, _ = _case(rng, 40, 24, 32, "float16")
        call = lambda: qg.linear_half(x, w, b, "relu", path="tma")  # noqa: E731
        ref = qg.linear_half(x, w, b, "relu", path="pointer")
        key = ("half", 64, 24, 32, -1, torch.float16)
    else:
        monkeypatch.setattr(qg, "_w8a8_tma_kernel_configs", cfgs)
        monkeypatch.setattr(qg._w8a8_kernel, "configs", one)
        _, args, xn = _w8a8_case(rng, 40, 24, 32)
        x = torch.from_numpy(xn)
        call = lambda: qg.linear_w8a8(x, *args, "relu", path="tma")  # noqa: E731
        ref = qg.linear_w8a8(x, *args, "relu", path="pointer")
        key = ("w8a8", 64, 24, 32, -1)
    torch.testing.assert_close(call(), ref, rtol=1e-5, atol=1e-5)
    assert qg._FORCED[key] is cfgs[1] and key not in qg._PICK
    torch.testing.assert_close(call(), ref, rtol=1e-5, atol=1e-5)  # no second timing (fake is spent)
    qg._FORCED.clear()
    monkeypatch.setattr(qg, "_half_tma_run" if kernel == "half" else "_w8a8_tma_run",
                        lambda *a, **kw: (_ for _ in ()).throw(RuntimeError("cannot build")))
    with pytest.raises(RuntimeError, match="no TMA config built"):
        call()


def _direct_tma_setup(monkeypatch):
    """GPU direct-launch tests of the TMA kernels: skip without a GPU (or with fast launch off);
    fresh direct-launch entries, TMA forced from 256 rows, and every _fire result recorded."""
    from pyperfcore.kernels import quant_gemm as qg

    if _device() != "cuda":
        pytest.skip("direct launches and graphs need a GPU")
    if not qg.FAST_LAUNCH:
        pytest.skip("PYPERFCORE_TRITON_FAST_LAUNCH=0")
    monkeypatch.setattr(qg, "_DIRECT", {})
    monkeypatch.setattr(qg, "TMA", "1")
    monkeypatch.setattr(qg, "TMA_MIN_M", 256)  # (the tests' calls have 300 rows)
    fired: list = []
    real_fire = qg._fire
    monkeypatch.setattr(qg, "_fire", lambda ent, *a: (fired.append(real_fire(ent, *a)), fired[-1])[1])
    return qg, fired


def test_tma_direct_launch_and_graph_on_gpu(rng, monkeypatch):
    """On Hopper: after the first call of a key the TMA kernel launches directly (descriptors
    rebuilt per call and handed to the compiled launcher), with exactly the normal path's
    numbers; the same call replays in a CUDA graph; a different x of the same shape is read
    through its own descriptor (not the recorded one)."""
    import torch

    qg, fired = _direct_tma_setup(monkeypatch)
    m, n, k = 300, 136, 200
    x, w, b, r = _case(rng, m, n, k, "float16", "float16")
    xt, wt, bt, rt = x.cuda(), w.cuda(), b.cuda(), r.cuda()
    monkeypatch.setattr(qg, "FAST_LAUNCH", False)
    y_normal = qg.linear_half(xt, wt, bt, "gelu", rt, out_dtype=torch.float16)
    monkeypatch.setattr(qg, "FAST_LAUNCH", True)
    for _ in range(2):
        assert torch.equal(qg.linear_half(xt, wt, bt, "gelu", rt, out_dtype=torch.float16), y_normal)
    fired.clear()
    assert torch.equal(qg.linear_half(xt, wt, bt, "gelu", rt, out_dtype=torch.float16), y_normal)
    assert fired == [True], qg.DIRECT_WHY
    assert any(key[0] == "half_tma" and ent and ent.ptrs is not None for key, ent in qg._DIRECT.items())
    x2 = xt.flip(0).contiguous()
    exp2 = qg.linear_half(x2, wt, bt, "gelu", rt, out_dtype=torch.float16, path="pointer")
    torch.testing.assert_close(qg.linear_half(x2, wt, bt, "gelu", rt, out_dtype=torch.float16), exp2,
                               rtol=2e-3, atol=2e-3)
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        with torch.cuda.graph(g, stream=s):
            out = qg.linear_half(xt, wt, bt, "gelu", rt, out_dtype=torch.float16)
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, y_normal)


# ----------------------------------------------------------------------------------- W8A8 GEMM
def _w8a8_case(rng, m, n, k, nan_rows=()):
    import torch

    from pyperfcore import quant

    w = rng.standard_normal((n, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    layer = quant.QuantizedLinear(w, b)
    qw = torch.from_numpy(layer.qweight)
    args = [qw, torch.from_numpy(layer.wscale), qw.to(torch.int32).sum(1).to(torch.int32), torch.from_numpy(b)]
    x = (rng.standard_normal((m, k)) * 3 + 0.5).astype(np.float32)
    for i in nan_rows:
        x[i, int(rng.integers(0, k))] = np.nan if i % 2 else np.inf
    return layer, args, x


@given(m=st.integers(1, 70), n=st.integers(1, 70), k16=st.integers(1, 8), seed=st.integers(0, 2**32 - 1),
       act=st.sampled_from(["none", "relu", "gelu", "silu"]), res=st.booleans(), sym=st.booleans())
@settings(max_examples=6, deadline=None)
def test_w8a8_tma_every_config_matches_oracle_and_pointer_kernel(m, n, k16, seed, act, res, sym):
    """The W8A8 TMA GEMM, every config, on random shapes (M, N off every block, K a multiple of 16
    but not of BLOCK_K, more tiles than programs): the float64 oracle within float32 epilogue
    error, and the pointer kernel bit for bit (INT32 sums are exact, the epilogue is shared)."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    if dev == "cuda":  # one specialization per config there (each compiles): shapes still vary
        act, res = "gelu", True
    k = 16 * k16
    rng = np.random.default_rng(seed)
    layer, args, x = _w8a8_case(rng, m, n, k)
    r = rng.standard_normal((m, n)).astype(np.float32) if res else None
    exp = ref.linear_w8a8(x, layer.qweight, layer.wscale, args[3].numpy(), act, r, sym)
    a = [t.to(dev) for t in args]
    qwp = torch.full((n, k + 16), 127, dtype=torch.int8, device=dev)[:, :k]  # weight rows with a pad
    qwp.copy_(a[0])
    a[0] = qwp
    xt = torch.from_numpy(x).to(dev)
    rt = None if r is None else torch.from_numpy(r).to(dev)
    q, sa, zp, bad = qg.quantize_activations_flagged(xt, symmetric=sym)
    yp = qg.linear_w8a8(xt, *a, act, rt, symmetric=sym, path="pointer")
    meta = dict(HAS_BIAS=True, ACT=qg._ACTS[act], HAS_RES=rt is not None)
    for c in qg._w8a8_tma_kernel_configs + qg.INTERPRETER_EXTRA["w8a8_tma"]:
        y = torch.full((m, n), float("nan"), device=dev)
        targs = qg._w8a8_tma_args(c, q, a[0], sa, zp, bad, a[1], a[2], a[3], y if rt is None else rt, y, m, n, k,
                                  qg._bucket(m), 0 if rt is None else rt.stride(0))
        qg._w8a8_tma_run(c, targs, meta, xt.get_device())
        assert torch.equal(y, yp), c
        np.testing.assert_allclose(y.cpu().numpy(), exp, rtol=2e-5, atol=5e-6 * max(1.0, float(np.abs(exp).max())),
                                   err_msg=str(c))


def test_w8a8_tma_path_nan_rows_refusals_and_half_io(rng):
    """linear_w8a8(path='tma'): NaN/inf rows come out NaN (or raise with check_finite), fp16 in
    and out equals the pointer kernel's bits, and what it cannot take is refused by name."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    m, n, k = 41, 30, 48
    layer, args, x = _w8a8_case(rng, m, n, k, nan_rows=(4, 7))
    a = [t.to(dev) for t in args]
    xt = torch.from_numpy(x).to(dev)
    y = qg.linear_w8a8(xt, *a, "silu", path="tma")
    assert torch.isnan(y[[4, 7]]).all() and torch.isfinite(y[[i for i in range(m) if i not in (4, 7)]]).all()
    assert torch.equal(y.isnan(), qg.linear_w8a8(xt, *a, "silu", path="pointer").isnan())
    with pytest.raises(ValueError, match="NaN or infinity"):
        qg.linear_w8a8(xt, *a, "silu", path="tma", check_finite=True)
    x16 = torch.from_numpy(np.nan_to_num(x, nan=0.0, posinf=0.0)).half().to(dev)
    r16 = torch.from_numpy(rng.standard_normal((m, n)).astype(np.float32)).half().to(dev)
    y16 = qg.linear_w8a8(x16, *a, "gelu", r16, path="tma", out_dtype=torch.float16)
    assert y16.dtype == torch.float16
    assert torch.equal(y16, qg.linear_w8a8(x16, *a, "gelu", r16, path="pointer", out_dtype=torch.float16))
    with pytest.raises(ValueError, match="multiple of 16"):
        qg.linear_w8a8(xt[:, :40].contiguous(), a[0][:, :40].contiguous(), *a[1:], path="tma")
    with pytest.raises(ValueError, match="path must be"):
        qg.linear_w8a8(xt, *a, path="wgmma")
    assert qg.linear_w8a8(xt[:0], *a, path="tma").shape == (0, n)


@pytest.mark.parametrize("mode", ["0", "1", "auto"])
def test_w8a8_tma_pick_follows_setting(mode, rng, monkeypatch):
    """TMA "1": every eligible two-pass call at M >= TMA_MIN_M takes the TMA GEMM; "0" and "auto"
    without autotuning: none; M below TMA_MIN_M, K not a multiple of 16 and path='pointer' never.
    The numbers are the same bits either way."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    monkeypatch.setattr(qg, "TMA", mode)
    monkeypatch.setattr(qg, "TMA_MIN_M", 32)
    monkeypatch.setattr(qg, "_PICK", {})
    calls = []
    real = qg._w8a8_tma_run
    monkeypatch.setattr(qg, "_w8a8_tma_run", lambda *a, **kw: (calls.append(a[0]), real(*a, **kw)))
    _, args, x = _w8a8_case(rng, 40, 24, 32)
    a = [t.to(dev) for t in args]
    xt = torch.from_numpy(x).to(dev)
    y = qg.linear_w8a8(xt, *a, "relu")
    assert len(calls) == (1 if mode == "1" else 0)
    qg.linear_w8a8(xt[:20], *a, "relu")  # two-pass below TMA_MIN_M
    qg.linear_w8a8(xt, *a, "relu", path="pointer")
    assert len(calls) == (1 if mode == "1" else 0)
    _, args2, x2 = _w8a8_case(rng, 40, 24, 24)  # K = 24: not a multiple of 16
    qg.linear_w8a8(torch.from_numpy(x2).to(dev), *[t.to(dev) for t in args2], "relu")
    assert len(calls) == (1 if mode == "1" else 0)
    assert torch.equal(y, qg.linear_w8a8(xt, *a, "relu", path="pointer"))


def test_w8a8_tma_pick_times_both_gemms(rng, monkeypatch):
    """Autotuning on, "auto": the first two-pass call of a shape times the pointer GEMM's winner
    and the TMA configs (fake timer here), keeps the fastest, skips one that fails to build, and
    computes y with the pick; later calls do not time again."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    if _device() == "cuda":
        pytest.skip("the interpreter's pick logic; a GPU times for real in the benchmarks")
    for name, v in [("TMA", "auto"), ("TMA_MIN_M", 32), ("_PICK", {}), ("_BEST", {}), ("TMA_WHY", {}),
                    ("AUTOTUNE", True), ("_CAN_TIME", True)]:
        monkeypatch.setattr(qg, name, v)
    cfgs = [qg._cfg(16, 32, 32, 4, 1, GROUP_M=2, FLATTEN=False), qg._cfg(32, 16, 64, 4, 1, GROUP_M=1, FLATTEN=True),
            qg._cfg(16, 64, 16, 4, 1, GROUP_M=8, FLATTEN=True)]
    monkeypatch.setattr(qg, "_w8a8_tma_kernel_configs", cfgs)
    fake = iter([2.0, 1.0, 4.0])  # pointer GEMM, cfgs[0], cfgs[2] (cfgs[1] raises below)
    real_run = qg._w8a8_tma_run
    ran = []

    def run(c, *a, **kw):
        if c is cfgs[1]:
            raise RuntimeError("cannot build")
        ran.append(c)
        return real_run(c, *a, **kw)

    def bench(fn, quantiles):
        fn()
        return next(fake)

    monkeypatch.setattr(qg, "_w8a8_tma_run", run)
    monkeypatch.setattr(qg, "_bench_fast", bench)
    monkeypatch.setattr(qg._w8a8_kernel, "configs", [qg._cfg(16, 32, 32, 4, 1, GROUP_M=2)])
    _, args, x = _w8a8_case(rng, 40, 24, 32)
    xt = torch.from_numpy(x)
    y = qg.linear_w8a8(xt, *args, "relu")
    assert qg._PICK[("w8a8", 64, 24, 32, -1)] is cfgs[0]
    assert list(qg.TMA_WHY.values()) == ["RuntimeError: cannot build"]
    assert ran[-1] is cfgs[0]  # y itself computed by the pick
    assert torch.equal(y, qg.linear_w8a8(xt, *args, "relu", path="pointer"))
    fake = iter([])  # noqa: F841 (read by bench): no second timing
    assert torch.equal(qg.linear_w8a8(xt, *args, "relu"), y)


def test_w8a8_tma_direct_launch_and_graph_on_gpu(rng, monkeypatch):
    """On Hopper: the two-pass call with the TMA GEMM launches directly after its first call (the
    codes in the scratch buffer, read through a descriptor over that address), with the normal
    path's bits, and replays in a CUDA graph."""
    import torch

    qg, fired = _direct_tma_setup(monkeypatch)
    _, args, x = _w8a8_case(rng, 300, 136, 208)
    a = [t.cuda() for t in args]
    xt = torch.from_numpy(x).cuda()
    monkeypatch.setattr(qg, "FAST_LAUNCH", False)
    y_normal = qg.linear_w8a8(xt, *a, "gelu")
    monkeypatch.setattr(qg, "FAST_LAUNCH", True)
    for _ in range(2):
        assert torch.equal(qg.linear_w8a8(xt, *a, "gelu"), y_normal)
    fired.clear()
    assert torch.equal(qg.linear_w8a8(xt, *a, "gelu"), y_normal)
    assert fired == [True, True], qg.DIRECT_WHY  # the quantization and the TMA GEMM
    assert any(key[0] == "w8a8" and ent and ent.ptrs is not None and key[-1] != id(None)
               for key, ent in qg._DIRECT.items())
    assert torch.equal(qg.linear_w8a8(xt, *a, "gelu", path="pointer"), y_normal)
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        with torch.cuda.graph(g, stream=s):
            out = qg.linear_w8a8(xt, *a, "gelu")
    g.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, y_normal)
