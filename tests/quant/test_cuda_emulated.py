"""The quantization CUDA kernels on the CPU (kernels/cuda/linear_small.cu: small-M W8A8 and
FP16/BF16 layers; kernels/cuda/quant_linear.cu: per-token activation quantization and its
inverse; kernels/cuda/quant.cu: the pilot per-tensor/per-channel quantize op): the same source, built by
the host compiler against the device emulation in tests/cuda_emu/ (threads of a block as
std::threads, warp shuffles, block barriers, dp4a), driven through its C++ launcher and checked
against the numpy oracle: exact activation codes, scales and zero points (W8A8), activations
rounded to the weight's type (FP16/BF16), the fused epilogue, every row-group size and load
width, half inputs and outputs, NaN rows. On a GPU the compiled
kernel itself is checked by tests/quant/test_linear_cuda.py; this runs everywhere (CI included)."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyperfcore import quant
from tests import reference as ref

torch = pytest.importorskip("torch")

_DT = {"float32": (torch.float32, 0), "float16": (torch.float16, 1), "bfloat16": (torch.bfloat16, 2)}
_ACT = {"none": 0, "relu": 1, "gelu": 2, "gelu_tanh": 3, "silu": 4}


@pytest.fixture(scope="module")
def emu():
    from tests.cuda_emu import library

    lib = library()
    if isinstance(lib, str):
        pytest.skip(lib)
    return lib


def _p(t):
    return None if t is None else t.data_ptr()


def _run(lib, x, qw, wscale, colsum, bias, res, act, sym, y_dtype, ws_bytes=None):
    """Calls the launcher; returns (rc, y, workspace)."""
    m, k = x.shape
    n = qw.shape[0]
    need = lib.emu_w8a8_small_workspace(m, k)
    ws = torch.zeros(max(need if ws_bytes is None else ws_bytes, 16), dtype=torch.uint8)
    y = torch.full((m, n), float("nan"), dtype=_DT[y_dtype][0])
    rc = lib.emu_linear_w8a8_small(_p(x), _DT[str(x.dtype).split(".")[1]][1], m, k, x.stride(0), _p(qw), n, qw.stride(0),
                                   _p(wscale), _p(colsum), _p(bias), _p(res),
                                   0 if res is None else _DT[str(res.dtype).split(".")[1]][1],
                                   0 if res is None else res.stride(0), _p(y), _DT[y_dtype][1], n, _ACT[act], int(sym),
                                   _p(ws), need if ws_bytes is None else ws_bytes)
    return rc, y, ws


def _weights(rng, n, k, pad, offset):
    """Per-channel INT8 weights as a view with row stride k + pad starting `offset` bytes into a
    buffer (unaligned rows send the kernel to its narrower loads)."""
    layer = quant.QuantizedLinear(rng.standard_normal((n, k)).astype(np.float32), None)
    buf = torch.from_numpy(rng.integers(-128, 128, (n * (k + pad) + offset + 16,), dtype=np.int8))
    qw = buf[offset:offset + n * (k + pad)].view(n, k + pad)[:, :k]
    qw.copy_(torch.from_numpy(layer.qweight))
    return layer, qw


@given(m=st.integers(1, 34), k=st.one_of(st.integers(0, 70), st.sampled_from([16, 48, 128, 160, 2051, 4112])),
       n=st.integers(1, 70), pad=st.sampled_from([0, 0, 1, 4, 16]), offset=st.sampled_from([0, 0, 1, 4]),
       act=st.sampled_from(list(_ACT)), sym=st.booleans(), x_dtype=st.sampled_from(list(_DT)),
       res_dtype=st.sampled_from([None, *_DT]), y_dtype=st.sampled_from(["float16", "bfloat16"]),
       nan_row=st.booleans(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=15, deadline=None)
def test_emulated_small_w8a8_matches_oracle(emu, m, k, n, pad, offset, act, sym, x_dtype, res_dtype, y_dtype, nan_row,
                                            seed):
    rng = np.random.default_rng(seed)
    layer, qw = _weights(rng, n, k, pad, offset)
    wscale = torch.from_numpy(layer.wscale)
    colsum = qw.to(torch.int32).sum(1).to(torch.int32)
    bias = torch.from_numpy(rng.standard_normal(n).astype(np.float32))
    xs = (rng.standard_normal((m, k + 3)) * rng.uniform(0.1, 4, (m, 1)) + rng.uniform(-1, 1, (m, 1))).astype(np.float32)
    x = torch.from_numpy(xs).to(_DT[x_dtype][0])[:, :k]  # row stride k + 3
    bad = []
    if nan_row and k:
        x[m // 2, k // 2] = float("nan") if m % 2 else float("-inf")
        bad = [m // 2]
    res = None if res_dtype is None else torch.from_numpy(rng.standard_normal((m, n)).astype(np.float32)).to(
        _DT[res_dtype][0])
    rc, y, ws = _run(emu, x, qw, wscale, colsum, bias, res, act, sym, "float32")
    assert rc == 0
    ok = [i for i in range(m) if i not in bad]
    xf = x.float().numpy()
    # the activation codes, scales and zero points, bit for bit (rows without NaN/inf)
    kq = -(-k // 16) * 16
    eq, es, ez = ref.quantize_rows_u8(xf[ok], sym)
    codes = ws[:m * kq].view(m, kq)[:, :k].view(torch.int8).numpy()
    np.testing.assert_array_equal(codes[ok], (eq[:, :k].astype(np.int16) - 128).astype(np.int8))
    vb = -(-4 * m // 16) * 16
    sa = ws[m * kq:m * kq + 4 * m].view(torch.float32).numpy()
    zp = ws[m * kq + vb:m * kq + vb + 4 * m].view(torch.int32).numpy()
    flags = ws[m * kq + 2 * vb:m * kq + 2 * vb + 4 * m].view(torch.int32).numpy()
    np.testing.assert_array_equal(sa[ok], es)
    np.testing.assert_array_equal(zp[ok], ez)
    assert [i for i in range(m) if flags[i]] == bad
    # the product and the epilogue
    exp = ref.linear_w8a8(xf[ok], layer.qweight, layer.wscale, bias.numpy(), act,
                          None if res is None else res.float().numpy()[ok], sym)
    yv = y.numpy()
    np.testing.assert_allclose(yv[ok], exp, rtol=2e-5, atol=5e-6 * max(1.0, float(np.abs(exp).max(initial=0))))
    assert np.isnan(yv[bad]).all()
    # half outputs: the float32 result rounded once
    rc, yh, _ = _run(emu, x, qw, wscale, colsum, bias, res, act, sym, y_dtype)
    assert rc == 0
    torch.testing.assert_close(yh, y.to(yh.dtype), rtol=0, atol=0, equal_nan=True)


def test_emulated_small_w8a8_refuses_bad_arguments(emu, rng):
    layer, qw = _weights(rng, 8, 32, 0, 0)
    x = torch.from_numpy(rng.standard_normal((3, 32)).astype(np.float32))
    args = (torch.from_numpy(layer.wscale), qw.to(torch.int32).sum(1).to(torch.int32), None, None)
    need = emu.emu_w8a8_small_workspace(3, 32)
    assert need == 3 * 32 + 3 * 16
    rc, y, _ = _run(emu, x, qw, *args, "gelu", False, "float32", ws_bytes=need - 1)
    assert rc == 1 and torch.isnan(y).all()  # cudaErrorInvalidValue, nothing written
    rc, y, _ = _run(emu, x, qw, *args, "gelu", False, "float32")
    assert rc == 0 and torch.isfinite(y).all()
    # an empty batch is valid and writes nothing
    rc, y, _ = _run(emu, x[:0], qw, *args, "gelu", False, "float32")
    assert rc == 0 and y.shape == (0, 8)


def _run_half(lib, x, w, bias, res, act, y_dtype):
    m, k = x.shape
    n = w.shape[0]
    need = lib.emu_half_small_workspace(m, k)
    ws = torch.zeros(max(need, 16), dtype=torch.uint8)
    y = torch.full((m, n), float("nan"), dtype=_DT[y_dtype][0])
    rc = lib.emu_linear_half_small(_p(x), _DT[str(x.dtype).split(".")[1]][1], m, k, x.stride(0), _p(w),
                                   _DT[str(w.dtype).split(".")[1]][1], n, w.stride(0), _p(bias), _p(res),
                                   0 if res is None else _DT[str(res.dtype).split(".")[1]][1],
                                   0 if res is None else res.stride(0), _p(y), _DT[y_dtype][1], n, _ACT[act], _p(ws), need)
    return rc, y, ws


@given(m=st.integers(1, 34), k=st.one_of(st.integers(0, 70), st.sampled_from([8, 16, 64, 136, 2049, 4104])),
       n=st.integers(1, 60),
       wdt=st.sampled_from(["float16", "bfloat16"]), pad=st.sampled_from([0, 0, 1, 2, 8]), offset=st.sampled_from([0, 0, 1, 2]),
       act=st.sampled_from(list(_ACT)), x_dtype=st.sampled_from(list(_DT)), res_dtype=st.sampled_from([None, *_DT]),
       y_dtype=st.sampled_from(["float16", "bfloat16"]), nan_row=st.booleans(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=15, deadline=None)
def test_emulated_small_half_matches_oracle(emu, m, k, n, wdt, pad, offset, act, x_dtype, res_dtype, y_dtype, nan_row,
                                            seed):
    """FP16/BF16 weights: x rounded to the weight's type (exactly torch's rounding), fp32 sums
    against the float64 oracle of the rounded operands; weight views with odd strides and offsets
    (every load width); NaN/inf rows NaN; half outputs are the float32 output rounded once."""
    rng = np.random.default_rng(seed)
    wt = getattr(torch, wdt)
    buf = torch.from_numpy(rng.standard_normal(n * (k + pad) + offset + 8).astype(np.float32)).to(wt)
    w = buf[offset:offset + n * (k + pad)].view(n, k + pad)[:, :k]
    bias = torch.from_numpy(rng.standard_normal(n).astype(np.float32))
    x = torch.from_numpy((rng.standard_normal((m, k + 3)) * 3).astype(np.float32)).to(_DT[x_dtype][0])[:, :k]
    bad = []
    if nan_row and k:
        x[m // 2, k // 2] = float("inf") if m % 2 else float("nan")
        bad = [m // 2]
    res = None if res_dtype is None else torch.from_numpy(rng.standard_normal((m, n)).astype(np.float32)).to(
        _DT[res_dtype][0])
    rc, y, ws = _run_half(emu, x, w, bias, res, act, "float32")
    assert rc == 0
    ok = [i for i in range(m) if i not in bad]
    kq = -(-2 * k // 16) * 8
    prepared = ws[:m * kq * 2].view(wt).view(m, kq)[:, :k]
    torch.testing.assert_close(prepared[ok], x.float().to(wt)[ok], rtol=0, atol=0)
    flags = ws[m * kq * 2:m * kq * 2 + 4 * m].view(torch.int32).numpy()
    assert [i for i in range(m) if flags[i]] == bad
    exp = ref.linear_half(x.float().to(wt).double().numpy()[ok], w.double().numpy(), bias.numpy(), act,
                          None if res is None else res.double().numpy()[ok])
    yv = y.numpy()
    np.testing.assert_allclose(yv[ok], exp, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(exp).max(initial=0))))
    assert np.isnan(yv[bad]).all()
    rc, yh, _ = _run_half(emu, x, w, bias, res, act, y_dtype)
    assert rc == 0
    torch.testing.assert_close(yh, y.to(yh.dtype), rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("m", [1, 2, 3, 8, 16, 21])  # every row-group size (1, 2, 4, 8, 16 and two groups)
@pytest.mark.parametrize("kind,k", [("w8a8", 4112), ("w8a8", 2052), ("w8a8", 2051), ("half", 4104), ("half", 2050),
                                    ("half", 2049)])  # 16-, 4- and 1/2-byte loads
def test_emulated_small_long_rows(emu, kind, k, m):
    """Rows long enough for the product kernel's unrolled weight stream (several steps' loads in
    flight, then the one-step tail) at every row-group size and load width, against the oracle."""
    rng = np.random.default_rng(k * 31 + m)
    n = 6
    x = torch.from_numpy((rng.standard_normal((m, k)) * 2 + 0.25).astype(np.float32))
    bias = torch.from_numpy(rng.standard_normal(n).astype(np.float32))
    if kind == "w8a8":
        layer, qw = _weights(rng, n, k, 0, 0)
        colsum = qw.to(torch.int32).sum(1).to(torch.int32)
        rc, y, _ = _run(emu, x, qw, torch.from_numpy(layer.wscale), colsum, bias, None, "gelu", False, "float32")
        exp = ref.linear_w8a8(x.numpy(), layer.qweight, layer.wscale, bias.numpy(), "gelu")
        tol = 2e-5
    else:
        w = torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32)).half()
        rc, y, _ = _run_half(emu, x, w, bias, None, "gelu", "float32")
        exp = ref.linear_half(x.half().double().numpy(), w.double().numpy(), bias.numpy(), "gelu")
        tol = 1e-5
    assert rc == 0
    np.testing.assert_allclose(y.numpy(), exp, rtol=tol, atol=tol * max(1.0, float(np.abs(exp).max())))


def test_emulated_small_half_flags_values_beyond_float16(emu):
    """A finite float32 activation that rounds to inf in float16 poisons its row (never a wrong
    finite answer); the same value is finite in bfloat16."""
    x = torch.tensor([[1.0, 7.0e4], [1.0, 2.0]], dtype=torch.float32)
    for wdt, bad in ((torch.float16, [True, False]), (torch.bfloat16, [False, False])):
        w = torch.ones((3, 2), dtype=wdt)
        rc, y, _ = _run_half(emu, x, w, None, None, "none", "float32")
        assert rc == 0
        assert [bool(torch.isnan(y[i]).all()) for i in range(2)] == bad
        assert torch.isfinite(y[1]).all() and float(y[1, 0]) == 3.0


@given(m=st.integers(0, 12), k=st.one_of(st.integers(0, 300), st.integers(1790, 4700)), extra=st.integers(0, 5),
       sym=st.booleans(), nan=st.booleans(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=20, deadline=None)
def test_emulated_activation_quantization_exact(emu, m, k, extra, sym, nan, seed):
    """quantize_rows_u8 (the launcher the CUDA backend of quant.quantize_activations calls):
    codes (padding columns included), scales and zero points bit for bit the oracle's, rows with a
    row stride, the NaN/inf report; dequantize_rows_u8 exactly (q - zp) * s in float32."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, k + extra)) * rng.uniform(0.01, 9, (m, 1)) + rng.uniform(-2, 2, (m, 1))).astype(np.float32)
    if nan and m and k:
        x[rng.integers(m), rng.integers(k)] = rng.choice([np.nan, np.inf, -np.inf])
    kp = max(4, -(-k // 4) * 4)
    ldq = kp + 4
    q = np.full((max(m, 1), ldq), 7, dtype=np.uint8)
    s = np.zeros(max(m, 1), np.float32)
    z = np.zeros(max(m, 1), np.int32)
    flag, bad = np.zeros(1, np.int32), ctypes.c_int(-1)
    rc = emu.emu_quantize_rows_u8(x.ctypes.data, m, k, k + extra, q.ctypes.data, ldq, s.ctypes.data, z.ctypes.data,
                                  int(sym), flag.ctypes.data, ctypes.byref(bad))
    assert rc == 0
    finite = bool(np.isfinite(x[:, :k]).all())
    assert bad.value == (0 if finite else 1)
    if not m or not finite:
        return
    eq, es, ez = ref.quantize_rows_u8(x[:, :k], sym)
    np.testing.assert_array_equal(q[:m, :kp], eq[:, :kp])
    assert (q[:m, kp:] == 7).all()  # nothing written past the padded row
    np.testing.assert_array_equal(s[:m], es)
    np.testing.assert_array_equal(z[:m], ez)
    out = np.full((m, k), np.nan, np.float32)
    assert emu.emu_dequantize_rows_u8(q.ctypes.data, m, k, ldq, s.ctypes.data, z.ctypes.data, out.ctypes.data) == 0
    exp = (q[:m, :k].astype(np.int32) - z[:m, None]).astype(np.float32) * s[:m, None]
    np.testing.assert_array_equal(out, exp)


@pytest.mark.parametrize("k", [1792, 1793, 2048, 4100])  # 256 threads x 8 loads in flight: the unrolled loop + tail
@pytest.mark.parametrize("where", [None, "unrolled", "tail"])
def test_emulated_activation_quantization_long_rows(emu, k, where):
    """Rows long enough for the prep kernels' unrolled loop (8 loads per thread in flight, then a
    tail): codes, scales and zero points bit for bit the oracle's, and a NaN found in either part."""
    rng = np.random.default_rng(k)
    m = 3
    x = (rng.standard_normal((m, k)) * 4 + 0.5).astype(np.float32)
    x[1, int(rng.integers(k))] = -37.5  # a lone extreme value sets one row's range
    if where:
        x[2, 5 if where == "unrolled" else k - 1] = np.nan
    kp = -(-k // 4) * 4
    q = np.full((m, kp), 7, dtype=np.uint8)
    s, z, flag, bad = np.zeros(m, np.float32), np.zeros(m, np.int32), np.zeros(1, np.int32), ctypes.c_int(-1)
    for sym in (False, True):
        assert emu.emu_quantize_rows_u8(x.ctypes.data, m, k, k, q.ctypes.data, kp, s.ctypes.data, z.ctypes.data,
                                        int(sym), flag.ctypes.data, ctypes.byref(bad)) == 0
        assert bad.value == (1 if where else 0)
        ok = 2 if where else 3
        eq, es, ez = ref.quantize_rows_u8(x[:ok], sym)
        np.testing.assert_array_equal(q[:ok], eq[:, :kp])
        np.testing.assert_array_equal(s[:ok], es)
        np.testing.assert_array_equal(z[:ok], ez)


@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=3), data=st.data(), half=st.booleans(),
       transpose=st.booleans(), bad=st.booleans(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=20, deadline=None)
def test_emulated_pilot_quantize_exact(emu, shape, data, half, transpose, bad, seed):
    """The pilot quantize op's CUDA launcher (per-tensor or per-channel along any axis; the
    column-amax kernel when channels are the contiguous last axis, the strided one otherwise;
    float32 and float16, transposed views): scales and codes bit for bit the oracle's, NaN/inf
    reported; dequantize_int8 exactly q * scale."""
    from pyperfcore._arrays import numpy_view3

    rng = np.random.default_rng(seed)
    axis = data.draw(st.one_of(st.none(), st.integers(0, len(shape) - 1)))
    x = (rng.standard_normal(shape) * rng.uniform(0.01, 50)).astype(np.float16 if half else np.float32)
    if transpose and x.ndim > 1:
        x = x.T
        axis = None if axis is None else x.ndim - 1 - axis
    if bad:
        x.reshape(-1)[rng.integers(x.size)] = np.inf  # (x.T is a view: the write lands in it)
    x3 = numpy_view3(x, axis)
    o, c, i = x3.shape
    so, sc, si = (st_ // x3.itemsize for st_ in x3.strides)
    q = np.zeros((o, c, i), np.int8)
    scales = np.zeros(c, np.float32)
    nonfinite = ctypes.c_int(-1)
    rc = emu.emu_quantize_int8(x3.ctypes.data, int(half), o, c, i, so, sc, si, q.ctypes.data, scales.ctypes.data,
                               ctypes.byref(nonfinite))
    assert rc == 0
    assert nonfinite.value == int(not np.isfinite(x.astype(np.float32)).all())
    if nonfinite.value:
        return
    eq, es = ref.quantize_int8(x, axis)
    np.testing.assert_array_equal(scales, np.asarray(es, np.float32).reshape(-1))
    eq_l = np.empty_like(x, dtype=np.int8)  # the oracle's codes in x's memory layout, seen as x3 is
    eq_l[...] = eq
    np.testing.assert_array_equal(q, numpy_view3(eq_l, axis))
    out = np.full((o, c, i), np.nan, np.float32)
    assert emu.emu_dequantize_int8(q.ctypes.data, scales.ctypes.data, o, c, i, out.ctypes.data) == 0
    np.testing.assert_array_equal(out, q.astype(np.float32) * scales[None, :, None])


@pytest.mark.parametrize("shape,axis", [((2, 5000), 0), ((3, 300), 0), ((200, 260), 1), ((40, 7, 30), 1), ((700,), None)])
def test_emulated_pilot_quantize_large_channels(emu, shape, axis, rng):
    """Channels long enough that every warp of a block, and several blocks per channel, hold
    values (the block-level max reductions and the cross-block atomicMax); the largest value of
    each channel placed at a random position."""
    from pyperfcore._arrays import numpy_view3

    x = rng.standard_normal(shape).astype(np.float32)
    idx = [tuple(int(rng.integers(d)) for d in shape) for _ in range(5)]
    for j in idx:
        x[j] = 1000.0 + rng.uniform()
    x3 = numpy_view3(x, axis)
    o, c, i = x3.shape
    q = np.zeros((o, c, i), np.int8)
    scales = np.zeros(c, np.float32)
    nf = ctypes.c_int(-1)
    assert emu.emu_quantize_int8(x3.ctypes.data, 0, o, c, i, *(s_ // 4 for s_ in x3.strides), q.ctypes.data,
                                 scales.ctypes.data, ctypes.byref(nf)) == 0
    assert nf.value == 0
    eq, es = ref.quantize_int8(x, axis)
    np.testing.assert_array_equal(scales, np.asarray(es, np.float32).reshape(-1))
    eq_l = np.empty_like(x, dtype=np.int8)
    eq_l[...] = eq
    np.testing.assert_array_equal(q, numpy_view3(eq_l, axis))


def test_emulator_fails_a_deadlocked_launch_instead_of_hanging(monkeypatch):
    """Lanes that never meet (half a warp in a shuffle, the other half at a block barrier) make
    the emulated launch time out and report cudaErrorLaunchTimeout; a correct kernel after it
    runs normally (the shuffle's values checked)."""
    import time

    from tests.cuda_emu import HERE, build

    lib = build([HERE / "deadlock_emu.cpp"])
    if isinstance(lib, str):
        pytest.skip(lib)
    monkeypatch.setenv("PFC_EMU_TIMEOUT_S", "1")
    out = np.zeros(32, np.int32)
    t0 = time.monotonic()
    assert lib.emu_launch(1, ctypes.c_void_p(out.ctypes.data)) == 702  # cudaErrorLaunchTimeout
    assert time.monotonic() - t0 < 15
    assert lib.emu_launch(0, ctypes.c_void_p(out.ctypes.data)) == 0
    np.testing.assert_array_equal(out, np.arange(32) ^ 1)


def test_emulator_faults_a_misaligned_vector_load():
    """A 16-byte __ldcs/__ldg from an address that is not a multiple of 16 fails the emulated
    launch with cudaErrorMisalignedAddress, as on the device (x86 would read it silently), so
    the kernels' choice of load width per row alignment is checked here too; aligned is fine."""
    from tests.cuda_emu import HERE, build

    lib = build([HERE / "deadlock_emu.cpp"])
    if isinstance(lib, str):
        pytest.skip(lib)
    buf = np.zeros(64, np.int32)
    buf[4:8] = [1, 2, 3, 4]  # bytes 16..31
    base = buf.ctypes.data + (-buf.ctypes.data) % 16  # numpy aligns to 16 already; be sure
    assert base == buf.ctypes.data
    out = np.zeros(32, np.int32)
    lib.emu_load16.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
    assert lib.emu_load16(base, 16, out.ctypes.data) == 0
    np.testing.assert_array_equal(out, 10)
    for off in (4, 8, 12, 20):
        assert lib.emu_load16(base, off, out.ctypes.data) == 716, off  # cudaErrorMisalignedAddress
    assert lib.emu_load16(base, 32, out.ctypes.data) == 0  # the error was reported once, not sticky
