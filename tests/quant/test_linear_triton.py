"""Triton W8A8 / FP16 linear kernels against the numpy oracle (TRITON_INTERPRET=1 without a GPU)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyperfcore import quant
from tests import reference as ref

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module", autouse=True)
def no_autotune():
    """No timing runs in this module: the tests vary constexprs (activation, residual, symmetric)
    per example, and on a GPU each new combination would compile and time every config. Every
    config's correctness is checked by the *_every_config_* tests; tuning runs in the benchmarks."""
    from pyperfcore.kernels import quant_gemm as qg

    prev, qg.AUTOTUNE = qg.AUTOTUNE, False
    yield
    qg.AUTOTUNE = prev


def _device():
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@given(m=st.sampled_from([0, 1, 3, 17]), k=st.integers(1, 70), n=st.integers(1, 70), seed=st.integers(0, 2**32 - 1),
       act=st.sampled_from(quant.ACTIVATIONS), sym=st.booleans(), res=st.booleans())
@settings(max_examples=10)
def test_triton_w8a8_matches_oracle(m, k, n, seed, act, sym, res):
    import torch

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    x = rng.standard_normal((m, 2 * k)).astype(np.float32)[:, ::2]  # non-contiguous rows
    r = rng.standard_normal((m, n)).astype(np.float32) if res else None
    layer = quant.QuantizedLinear(w, b, activation=act, act_quant="symmetric" if sym else "asymmetric")
    dev = _device()
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(dev)[:, :]
    y = layer(xt, residual=None if r is None else torch.from_numpy(r).to(dev), backend="triton").cpu().numpy()
    exp = ref.linear_w8a8(x, layer.qweight, layer.wscale, b, act, r, sym)
    np.testing.assert_allclose(y, exp, rtol=2e-5, atol=5e-6 * max(1.0, float(np.abs(exp).max(initial=0))))


@given(m=st.integers(0, 9), k=st.integers(0, 90), sym=st.booleans(), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=10)
def test_triton_activation_quantization_exact(m, k, sym, seed):
    import torch

    x = (np.random.default_rng(seed).standard_normal((m, k)) * 7 + 1).astype(np.float32)
    q, s, z = quant.quantize_activations(torch.from_numpy(x).to(_device()), symmetric=sym, backend="triton")
    eq, es, ez = ref.quantize_rows_u8(x, sym)
    np.testing.assert_array_equal(q.cpu().numpy(), eq)
    np.testing.assert_array_equal(s.cpu().numpy(), es)
    np.testing.assert_array_equal(z.cpu().numpy(), ez)



@pytest.mark.parametrize("one_tile", [True, False])
@given(m=st.integers(1, 6), k=st.integers(1, 200), sym=st.booleans(), seed=st.integers(0, 2**32 - 1),
       nonfinite=st.booleans())
@settings(max_examples=8, deadline=None)
def test_triton_activation_quantization_both_kernel_shapes(one_tile, m, k, sym, seed, nonfinite):
    """The per-token quantization kernel in both of its shapes, launched directly: the row read
    once and quantized from registers (ONE_TILE, BLOCK_K >= K: what every K up to 4096 runs) and
    the two-pass loop over K-blocks (larger K; forced here with BLOCK_K 16..64 so that K spans
    several blocks): exact codes, scales, zero points and NaN/inf flags, non-contiguous rows."""
    import torch
    import triton

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, 2 * k)) * 7 + 1).astype(np.float32)[:, ::2]
    if nonfinite:
        x[rng.integers(0, m), rng.integers(0, k)] = rng.choice([np.nan, np.inf, -np.inf])
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(dev)
    xs = torch.empty((m, k + 3), device=dev)[:, :k]  # row stride k + 3
    xs.copy_(xt)
    block = triton.next_power_of_2(k) if one_tile else int(rng.choice([16, 32, 64]))
    q = torch.full((m, k), 7, dtype=torch.uint8, device=dev)
    sc = torch.empty(m, device=dev)
    z = torch.empty(m, dtype=torch.int32, device=dev)
    bad = torch.full((m,), -1, dtype=torch.int32, device=dev)
    qg._act_quant_kernel[(m,)](xs, q, sc, z, bad, k, xs.stride(0), k, SYMMETRIC=sym, BLOCK_K=block,
                               ONE_TILE=one_tile and k <= block)
    flags = ~np.isfinite(x).all(axis=1)
    np.testing.assert_array_equal(bad.cpu().numpy(), flags.astype(np.int32))
    ok = ~flags
    eq, es, ez = ref.quantize_rows_u8(np.where(np.isfinite(x), x, 0.0).astype(np.float32), sym)
    np.testing.assert_array_equal(q.cpu().numpy()[ok], eq[ok][:, :k])  # (the oracle pads K to 4)
    np.testing.assert_array_equal(sc.cpu().numpy(), es)  # range of the finite values (0 included)
    np.testing.assert_array_equal(z.cpu().numpy(), ez)


def _round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """x rounded to nearest even in float16/bfloat16 (as the GPU kernel feeds the Tensor cores)."""
    import torch

    return torch.from_numpy(x).to(getattr(torch, dtype)).double().numpy()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_triton_half_matches_oracle(dtype, rng):
    import torch

    w = rng.standard_normal((45, 37)).astype(np.float32)
    b = rng.standard_normal(45).astype(np.float32)
    x = rng.standard_normal((5, 37)).astype(np.float32)
    layer = quant.QuantizedLinear(w, b, activation="gelu", dtype=dtype)
    y = layer(torch.from_numpy(x).to(_device()), backend="triton").cpu().numpy()
    exp = ref.linear_half(_round_to(x, dtype), layer.weight_rounded, b, "gelu")
    np.testing.assert_allclose(y, exp, rtol=1e-4, atol=1e-4)
    # and the rounding of x is the only departure from the fp32-activation oracle
    loose = ref.linear_half(x, layer.weight_rounded, b, "gelu")
    np.testing.assert_allclose(y, loose, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@given(m=st.integers(1, 40), k=st.integers(1, 40).map(lambda v: 2 * v + 1),
       n=st.integers(1, 40).map(lambda v: 2 * v + 1), seed=st.integers(0, 2**32 - 1))
@settings(max_examples=4)
def test_triton_half_every_config_matches_oracle(dtype, m, k, n, seed):
    """The fp16/bf16 Tensor-core kernel (every config the interpreter has, on a GPU every tuned
    one) against the float64 oracle of the rounded operands; odd K and N (off every block, and
    one compile per config on a GPU) exercise every edge. Activations: test_triton_half_*."""
    act, res = "gelu", True
    import torch
    import triton

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, k)) * 4).astype(np.float32)
    w = torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32)).to(getattr(torch, dtype))
    b = rng.standard_normal(n).astype(np.float32)
    r = rng.standard_normal((m, n)).astype(np.float32) if res else None
    exp = ref.linear_half(_round_to(x, dtype), w.double().numpy(), b, act, r)
    xt, wt, bt = torch.from_numpy(x).to(dev), w.to(dev), torch.from_numpy(b).to(dev)
    rt = None if r is None else torch.from_numpy(r).to(dev)
    for c in qg._half_kernel.configs + qg.INTERPRETER_EXTRA["half"]:
        y = torch.full((m, n), float("nan"), device=dev)
        grid = (triton.cdiv(m, c.kwargs["BLOCK_M"]) * triton.cdiv(n, c.kwargs["BLOCK_N"]),)
        qg._half_kernel.fn[grid](xt, wt, bt, y if rt is None else rt, y, m, n, k, qg._bucket(m), xt.stride(0),
                                 wt.stride(0), 0 if rt is None else rt.stride(0), y.stride(0), HAS_BIAS=True,
                                 ACT=qg._ACTS[act], HAS_RES=rt is not None, DOT_F32=qg._INTERPRET and dtype == "bfloat16",
                                 num_warps=c.num_warps, num_stages=c.num_stages, **c.kwargs)
        np.testing.assert_allclose(y.cpu().numpy(), exp, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(exp).max())),
                                   err_msg=str(c))


def test_triton_nan_is_an_error(rng):
    import torch

    layer = quant.QuantizedLinear(rng.standard_normal((8, 8)).astype(np.float32))
    x = torch.zeros((2, 8), device=_device())
    x[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        layer(x, backend="triton")


def _exact_case(m, seed, k=300, n=200):
    # |sum| <= 255 * 127 * 300 < 2^24: with unit scales the float32 output is the exact INT32 sum
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    rng = np.random.default_rng(seed)
    x = torch.from_numpy((rng.standard_normal((m, k)) * rng.uniform(0.1, 5, (m, 1)) + 0.5).astype(np.float32)).to(dev)
    qw = torch.from_numpy(rng.integers(-127, 128, (n, k), dtype=np.int8)).to(dev)
    cs = qw.to(torch.int32).sum(dim=1).to(torch.int32)
    q, sa, zp = qg.quantize_activations(x)
    exact = ((q.double() - zp.double()[:, None]) @ qw.double().T).cpu().numpy()
    assert np.abs(exact).max() < 2**24 and np.unique(zp.cpu().numpy()).size >= min(m, 2)
    ones_m = torch.ones(m, dtype=torch.float32, device=dev)
    ones_n = torch.ones(n, dtype=torch.float32, device=dev)
    return x, q, sa.cpu().numpy(), zp, qw, cs, ones_m, ones_n, exact


@pytest.mark.parametrize("m", [1, 16, 33])
def test_triton_w8a8_every_config_exact(m):
    """Every configuration of the two-pass W8A8 GEMM (on a GPU all tuned ones, under the
    interpreter its own) gives the exact INT32 sums. K and N are not multiples of any block, so
    the masks on every edge are exercised, and zero points differ per row."""
    import torch
    import triton

    from pyperfcore.kernels import quant_gemm as qg

    x, q, _, zp, qw, cs, ones_m, ones_n, exact = _exact_case(m, m)
    dev = x.device
    bad = torch.zeros(m, dtype=torch.int32, device=dev)
    for cfg in qg._w8a8_kernel.configs + qg.INTERPRETER_EXTRA["w8a8"]:
        bm, bn = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"]
        y = torch.full((m, qw.shape[0]), float("nan"), dtype=torch.float32, device=dev)
        qg._w8a8_kernel.fn[(triton.cdiv(m, bm) * triton.cdiv(qw.shape[0], bn),)](
            q, qw, ones_m, zp, bad, ones_n, cs, y, y, y, m, qw.shape[0], q.shape[1], qg._bucket(m), q.stride(0),
            qw.stride(0), 0, y.stride(0), HAS_BIAS=False, ACT=0, HAS_RES=False, num_warps=cfg.num_warps,
            num_stages=cfg.num_stages, **cfg.kwargs)
        np.testing.assert_array_equal(y.cpu().numpy(), exact, err_msg=str(cfg))


@pytest.mark.parametrize("m", [1, 3, 16])
def test_triton_fused_every_config_exact(m):
    """The single-launch small-M kernel (activation quantization inside, split-K with INT32
    partials and a ticket per tile) gives the exact INT32 sums (times the activation scales it
    computes, which must equal the standalone quantizer's) for every configuration, called
    twice in a row: the split-K workspace and tickets must be left zeroed by the first call."""
    import torch
    import triton

    from pyperfcore.kernels import quant_gemm as qg

    x, q, sa, zp, qw, cs, ones_m, ones_n, exact = _exact_case(m, 100 + m)
    dev = x.device
    n, k = qw.shape
    for cfg in qg._w8a8_fused_kernel.configs + qg.INTERPRETER_EXTRA["fused"]:
        ws = torch.zeros(m * n + triton.cdiv(m, 16) * triton.cdiv(n, 16), dtype=torch.int32, device=dev)
        for _ in range(2):
            y = torch.full((m, n), float("nan"), dtype=torch.float32, device=dev)
            bad = torch.full((m,), 7, dtype=torch.int32, device=dev)
            grid = (triton.cdiv(m, cfg.kwargs["BLOCK_M"]), triton.cdiv(n, cfg.kwargs["BLOCK_N"]), cfg.kwargs["SPLIT_K"])
            qg._w8a8_fused_kernel.fn[grid](x, qw, ones_n, cs, y, y, y, bad, ws, ws[m * n:], m, n, k, qg._bucket(m),
                                           x.stride(0), qw.stride(0), 0, y.stride(0), SYMMETRIC=False, HAS_BIAS=False,
                                           ACT=0, HAS_RES=False, num_warps=cfg.num_warps, num_stages=cfg.num_stages,
                                           **cfg.kwargs)
            # the fused kernel applies its own activation scales: float32(sum) * sa, one rounding
            exp = exact.astype(np.float32) * sa[:, None]
            np.testing.assert_array_equal(y.cpu().numpy(), exp, err_msg=str(cfg))
            assert not bad.cpu().numpy().any(), cfg
            assert not ws.cpu().numpy().any(), f"workspace not left zeroed by {cfg}"


@given(m=st.integers(1, 20), k=st.integers(1, 150), n=st.integers(1, 90), seed=st.integers(0, 2**32 - 1),
       act=st.sampled_from(quant.ACTIVATIONS), sym=st.booleans(), res=st.booleans(),
       path=st.sampled_from(["fused", "two_pass"]))
@settings(max_examples=12)
def test_triton_paths_match_oracle(m, k, n, seed, act, sym, res, path):
    """Both W8A8 paths, forced, against the numpy oracle on hypothesis-chosen shapes (M = 1 and
    odd K/N included), non-contiguous x rows, both quantization modes; the second call per shape
    takes the cached-config fast launch."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    layer = quant.QuantizedLinear(w, None, act_quant="symmetric" if sym else "asymmetric")
    b = rng.standard_normal(n).astype(np.float32)
    x = (rng.standard_normal((m, 2 * k)) * rng.uniform(0.1, 4, (m, 1)) + rng.uniform(-1, 1, (m, 1))).astype(np.float32)
    r = rng.standard_normal((m, n)).astype(np.float32) if res else None
    exp = ref.linear_w8a8(x[:, ::2], layer.qweight, layer.wscale, b, act, r, sym)
    xt = torch.from_numpy(x).to(dev)[:, ::2]
    args = (torch.from_numpy(layer.qweight).to(dev), torch.from_numpy(layer.wscale).to(dev),
            torch.from_numpy(layer.qweight.sum(axis=1, dtype=np.int32)).to(dev), torch.from_numpy(b).to(dev), act,
            None if r is None else torch.from_numpy(r).to(dev))
    for _ in range(2):
        y = qg.linear_w8a8(xt, *args, symmetric=sym, path=path).cpu().numpy()
        np.testing.assert_allclose(y, exp, rtol=2e-5, atol=5e-6 * max(1.0, float(np.abs(exp).max(initial=0))))


@pytest.mark.parametrize("path", ["fused", "two_pass"])
def test_triton_nonfinite_rows_poisoned_or_raised(path, rng):
    """Without check_finite the kernels never synchronize: rows holding NaN/inf come out all NaN
    (never finite and wrong, even after a ReLU that would map -inf to 0) while the other rows are
    unaffected; with check_finite=True the call raises."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    n, k = 24, 40
    w = rng.standard_normal((n, k)).astype(np.float32)
    layer = quant.QuantizedLinear(w, None)
    x = rng.standard_normal((5, k)).astype(np.float32)
    x[1, 7], x[3, 0] = np.nan, -np.inf
    args = (torch.from_numpy(layer.qweight).to(dev), torch.from_numpy(layer.wscale).to(dev),
            torch.from_numpy(layer.qweight.sum(axis=1, dtype=np.int32)).to(dev), None, "relu")
    y = qg.linear_w8a8(torch.from_numpy(x).to(dev), *args, path=path).cpu().numpy()
    assert np.isnan(y[[1, 3]]).all()
    ok = [0, 2, 4]
    exp = ref.linear_w8a8(x[ok], layer.qweight, layer.wscale, None, "relu")
    np.testing.assert_allclose(y[ok], exp, rtol=2e-5, atol=1e-5)
    with pytest.raises(ValueError, match="NaN"):
        qg.linear_w8a8(torch.from_numpy(x).to(dev), *args, path=path, check_finite=True)
    with pytest.raises(ValueError, match="path"):
        qg.linear_w8a8(torch.from_numpy(x).to(dev), *args, path="bogus")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_triton_half_nonfinite_rows(dtype, rng):
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    w = torch.from_numpy(rng.standard_normal((20, 33)).astype(np.float32)).to(getattr(torch, dtype)).to(dev)
    x = rng.standard_normal((4, 33)).astype(np.float32)
    x[2, 5] = np.inf
    big = dtype == "float16"
    if big:
        x[0, 1] = 7.0e4  # finite in fp32, beyond float16: must not come out as a wrong finite number
    y = qg.linear_half(torch.from_numpy(x).to(dev), w, None, "relu").cpu().numpy()
    bad_rows = [0, 2] if big else [2]
    assert np.isnan(y[bad_rows]).all() and np.isfinite(np.delete(y, bad_rows, axis=0)).all()
    with pytest.raises(ValueError, match="NaN or infinity"):
        qg.linear_half(torch.from_numpy(x).to(dev), w, None, "relu", check_finite=True)


def test_triton_empty_and_bad_input(rng):
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    qw = torch.from_numpy(rng.integers(-127, 128, (6, 8), dtype=np.int8)).to(dev)
    args = (qw, torch.ones(6, device=dev), qw.to(torch.int32).sum(1).to(torch.int32))
    for path in (None, "fused", "two_pass"):
        assert qg.linear_w8a8(torch.zeros((0, 8), device=dev), *args, path=path).shape == (0, 6)
    with pytest.raises(ValueError, match=r"\[m, 8\]"):
        qg.linear_w8a8(torch.zeros((2, 7), device=dev), *args)
    with pytest.raises(TypeError, match="float32"):
        qg.linear_w8a8(torch.zeros((2, 8), device=dev, dtype=torch.float64), *args)
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        qg.linear_half(torch.zeros((2, 8), device=dev), torch.zeros((6, 8), device=dev))
    assert qg.linear_half(torch.zeros((0, 8), device=dev), torch.zeros((6, 8), device=dev).half()).shape == (0, 6)


@pytest.mark.parametrize("cfg_index", [0, 1])
def test_triton_fused_cached_config_launch(cfg_index, rng, monkeypatch):
    """The fast launch with a remembered config (as after tuning on a GPU), including a SPLIT_K=1
    config, where the launcher allocates no workspace at all."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    m, k, n = 5, 96, 70
    cfg = qg.INTERPRETER_EXTRA["fused"][cfg_index]
    monkeypatch.setitem(qg._BEST, ("fused", qg._bucket(m), n, k, torch.empty(0, device=dev).get_device()), cfg)
    w = rng.standard_normal((n, k)).astype(np.float32)
    layer = quant.QuantizedLinear(w, None)
    b = rng.standard_normal(n).astype(np.float32)
    x = (rng.standard_normal((m, k)) * 2 + 0.3).astype(np.float32)
    exp = ref.linear_w8a8(x, layer.qweight, layer.wscale, b, "silu")
    y = qg.linear_w8a8(torch.from_numpy(x).to(dev), torch.from_numpy(layer.qweight).to(dev),
                       torch.from_numpy(layer.wscale).to(dev), torch.from_numpy(layer.qweight.sum(axis=1, dtype=np.int32)).to(dev),
                       torch.from_numpy(b).to(dev), "silu", path="fused")
    np.testing.assert_allclose(y.cpu().numpy(), exp, rtol=2e-5, atol=1e-5)


def test_triton_autotuned_launch_then_cached(rng, monkeypatch):
    """With tuning on (the default outside this module): the first call of a shape goes through
    the autotuner and records its pick, the second launches the recorded config directly."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    monkeypatch.setattr(qg, "AUTOTUNE", True)
    monkeypatch.setattr(qg, "_BEST", {})
    dev = _device()
    m, k, n = 2, 52, 37
    layer = quant.QuantizedLinear(rng.standard_normal((n, k)).astype(np.float32), None, activation="relu")
    x = rng.standard_normal((m, k)).astype(np.float32)
    exp = ref.linear_w8a8(x, layer.qweight, layer.wscale, None, "relu")
    args = (torch.from_numpy(x).to(dev), torch.from_numpy(layer.qweight).to(dev), torch.from_numpy(layer.wscale).to(dev),
            torch.from_numpy(layer.qweight.sum(axis=1, dtype=np.int32)).to(dev), None, "relu")
    for i in range(2):
        y = qg.linear_w8a8(*args).cpu().numpy()
        np.testing.assert_allclose(y, exp, rtol=2e-5, atol=1e-5)
        assert [key[0] for key in qg._BEST] == ["fused"], qg._BEST
    w16 = torch.from_numpy(layer.dequantized_weight()).to(torch.float16).to(dev)
    exp16 = ref.linear_half(_round_to(x, "float16"), w16.double().cpu().numpy(), None, "none")
    for i in range(2):
        np.testing.assert_allclose(qg.linear_half(args[0], w16).cpu().numpy(), exp16, rtol=1e-4, atol=1e-4)
    assert sorted(key[0] for key in qg._BEST) == ["fused", "half"]


def _w8a8_args(rng, n, k, dev, bias=True):
    import torch

    layer = quant.QuantizedLinear(rng.standard_normal((n, k)).astype(np.float32), None)
    b = rng.standard_normal(n).astype(np.float32)
    return layer, b, (torch.from_numpy(layer.qweight).to(dev), torch.from_numpy(layer.wscale).to(dev),
                      torch.from_numpy(layer.qweight.sum(axis=1, dtype=np.int32)).to(dev),
                      torch.from_numpy(b).to(dev) if bias else None)


@pytest.mark.parametrize("path", ["fused", "two_pass"])
def test_triton_direct_launch_assembly(path, rng, monkeypatch):
    """The direct-launch plumbing, with the compiled kernel's launcher replaced by a recorder (the
    interpreter has no compiled kernels; on a GPU test_triton_direct_launch_on_gpu runs the real
    one): the grid, every pointer passed as an int (scratch pieces at their offsets), the constexpr
    tail appended; a misaligned x takes the normal path and is still right."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    if dev == "cuda":
        pytest.skip("runs with a recording launcher on the CPU only")
    calls: list = []

    def fake_record(dkey, kernel, compiled, args, kw, meta):
        ent = qg._Direct()
        ent.run = lambda *a: calls.append((dkey[0], a))
        ent.function, ent.packed, ent.tail = "FN", "META", ("TAIL", dkey[0])
        ent.bm, ent.bn, ent.sk = meta.get("BLOCK_M", 1), meta.get("BLOCK_N", 1), meta.get("SPLIT_K", 1)
        ent.ptrs = tuple(i for i, a in enumerate(args) if isinstance(a, torch.Tensor))
        qg._DIRECT[dkey] = ent

    monkeypatch.setattr(qg, "FAST_LAUNCH", True)
    monkeypatch.setattr(qg, "_DIRECT", {})
    monkeypatch.setattr(qg, "_SCRATCH", {})
    monkeypatch.setattr(qg, "_record", fake_record)
    monkeypatch.setattr(qg, "_direct_ok", lambda dev: True)
    if path == "fused":  # a split-K config, as the tuner may pick
        monkeypatch.setitem(qg._BEST, ("fused", 4, 37, 40, -1), qg.INTERPRETER_EXTRA["fused"][1])
    m, k, n = 3, 40, 37
    layer, b, args = _w8a8_args(rng, n, k, dev)
    x = (rng.standard_normal((m, k)) * 2).astype(np.float32)
    exp = ref.linear_w8a8(x, layer.qweight, layer.wscale, b, "relu")
    xt = torch.from_numpy(x)
    y = qg.linear_w8a8(xt, *args, "relu", path=path)  # normal path (interpreter), records
    np.testing.assert_allclose(y.numpy(), exp, rtol=2e-5, atol=1e-5)
    assert not calls
    y = qg.linear_w8a8(xt, *args, "relu", path=path)  # direct: the recorder gets the launch
    ints = lambda a: [v for v in a if type(v) is int]  # noqa: E731
    if path == "fused":
        (name, a), = calls
        assert name == "fused"
        cfg = qg.INTERPRETER_EXTRA["fused"][1].kwargs
        assert a[:9] == (-(-m // 16), -(-n // cfg["BLOCK_N"]), cfg["SPLIT_K"], 0, "FN", "META", None, None, None)
        launched = a[9:]
        assert launched[-2:] == ("TAIL", "fused")
        assert launched[0] == xt.data_ptr() and launched[1] == args[0].data_ptr() and launched[6] == y.data_ptr()
        assert launched[4] == args[3].data_ptr()
        ws = qg._SCRATCH[(-1, 0, True)][0]
        assert launched[8] == ws.data_ptr() and launched[9] == ws.data_ptr() + (4 * m * n + 15) // 16 * 16
        assert launched[10:14] == (m, n, k, 4)
    else:
        (n1, a1), (n2, a2) = calls
        assert (n1, n2) == ("aq", "w8a8")
        assert a1[:3] == (m, 1, 1) and a2[0] == -(-m // 16) * -(-n // 32)
        base = qg._SCRATCH[(-1, 0, False)][2]
        o_s = (m * k + 15) // 16 * 16
        assert a1[9:14] == (xt.data_ptr(), base, base + o_s, base + o_s + 16, base + o_s + 32)
        assert a2[9:14] == (base, args[0].data_ptr(), base + o_s, base + o_s + 16, base + o_s + 32)
        assert a2[9 + 9] == y.data_ptr()
    assert all(v % 16 == 0 for v in ints(calls[-1][1][9:13]))
    # x 4 bytes off 16-byte alignment: no direct launch, the normal path computes it
    calls.clear()
    xm = torch.from_numpy(np.concatenate([[0.0], x.ravel()]).astype(np.float32))[1:].view(m, k)
    assert xm.data_ptr() % 16
    y = qg.linear_w8a8(xm, *args, "relu", path=path)
    np.testing.assert_allclose(y.numpy(), exp, rtol=2e-5, atol=1e-5)
    assert not calls, calls

    def refuse(*a):
        raise TypeError("launcher signature differs")

    for ent in qg._DIRECT.values():  # a launcher that refuses its arguments: the normal path, for good
        ent.run = refuse
    for _ in range(2):
        y = qg.linear_w8a8(xt, *args, "relu", path=path)
        np.testing.assert_allclose(y.numpy(), exp, rtol=2e-5, atol=1e-5)
    # (two-pass: the act-quant launch refuses first, so the GEMM never tries)
    assert [key[0] for key, ent in qg._DIRECT.items() if ent.ptrs is None] == ["fused" if path == "fused" else "aq"]


def test_triton_direct_launch_on_gpu(rng, monkeypatch):
    """On a GPU: after the first call of a key the launch is direct (asserted: the entries exist),
    and gives exactly what triton's normal path gives, for both W8A8 paths (split-K config
    included), the act-quant launch, the fp16 kernel, check_finite and a misaligned x."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    if _device() != "cuda":
        pytest.skip("direct launches need compiled kernels (a GPU)")
    if not qg.FAST_LAUNCH:
        pytest.skip("PYPERFCORE_TRITON_FAST_LAUNCH=0")
    monkeypatch.setattr(qg, "_DIRECT", {})
    monkeypatch.setattr(qg, "SMALL_M_PATH", "triton")  # (the default path at small M: Triton's, not a pick)
    assert qg._direct_ok(torch.cuda.current_device()), qg.DIRECT_WHY  # no profiler hooks installed here
    fired: list = []
    real_fire = qg._fire

    def counting_fire(ent, *a):
        ok = real_fire(ent, *a)
        fired.append(ok)
        return ok

    monkeypatch.setattr(qg, "_fire", counting_fire)
    m_small, m_big, k, n = 5, 40, 96, 70
    monkeypatch.setitem(qg._BEST, ("fused", 8, n, k, torch.cuda.current_device()), qg._fused_configs()[2])  # sk2
    layer, b, args = _w8a8_args(rng, n, k, "cuda")
    for m, path in [(m_small, "fused"), (m_big, "two_pass"), (1, "fused")]:
        x = (rng.standard_normal((m, k)) * 3 + 0.5).astype(np.float32)
        r = rng.standard_normal((m, n)).astype(np.float32)
        exp = ref.linear_w8a8(x, layer.qweight, layer.wscale, b, "gelu", r)
        xt, rt = torch.from_numpy(x).cuda(), torch.from_numpy(r).cuda()
        monkeypatch.setattr(qg, "FAST_LAUNCH", False)
        y_normal = qg.linear_w8a8(xt, *args, "gelu", rt, path=path)
        monkeypatch.setattr(qg, "FAST_LAUNCH", True)
        ys = [qg.linear_w8a8(xt, *args, "gelu", rt, path=path) for _ in range(3)]
        fired.clear()
        ys.append(qg.linear_w8a8(xt, *args, "gelu", rt, path=path))  # recorded by now: must go direct
        assert fired == ([True] if path == "fused" else [True, True]), (m, path, fired, qg.DIRECT_WHY)
        for y in ys:
            assert torch.equal(y, y_normal), (m, path)
        np.testing.assert_allclose(ys[-1].cpu().numpy(), exp, rtol=2e-5, atol=1e-5 * max(1.0, float(np.abs(exp).max())))
        xn = xt.clone()
        xn[m - 1, 3] = float("nan")
        with pytest.raises(ValueError, match="NaN"):
            qg.linear_w8a8(xn, *args, "gelu", rt, path=path, check_finite=True)
        y = qg.linear_w8a8(xn, *args, "gelu", rt, path=path).cpu().numpy()
        assert np.isnan(y[m - 1]).all() and np.array_equal(y[:m - 1], ys[-1].cpu().numpy()[:m - 1])
        xm = torch.empty(m * k + 1, device="cuda")[1:].view(m, k)
        xm.copy_(xt)
        assert torch.equal(qg.linear_w8a8(xm, *args, "gelu", rt, path=path), y_normal)
    kinds = sorted({key[0] for key, ent in qg._DIRECT.items() if ent and ent.ptrs is not None})
    assert kinds == ["aq", "fused", "w8a8"], qg._DIRECT
    assert any(ent and ent.sk == 2 for ent in qg._DIRECT.values())
    w16 = torch.from_numpy(layer.dequantized_weight()).half().cuda()
    x = torch.from_numpy(rng.standard_normal((7, k)).astype(np.float32)).cuda()
    monkeypatch.setattr(qg, "FAST_LAUNCH", False)
    y_normal = qg.linear_half(x, w16, args[3], "silu")
    monkeypatch.setattr(qg, "FAST_LAUNCH", True)
    for _ in range(3):
        assert torch.equal(qg.linear_half(x, w16, args[3], "silu"), y_normal)
    fired.clear()
    assert torch.equal(qg.linear_half(x, w16, args[3], "silu"), y_normal)
    assert fired == [True], qg.DIRECT_WHY
    assert any(key[0] == "half" and ent and ent.ptrs is not None for key, ent in qg._DIRECT.items())


def test_triton_direct_ok_launch_hooks(monkeypatch):
    """The direct launch is allowed when no launch hook is installed: triton 3.5+ keeps the hooks as
    an empty HookChain (never None), which must not count as installed (it did: the direct path was
    never taken on triton 3.6); an installed hook (a profiler) sends calls to triton's normal path."""
    import torch
    import triton

    from pyperfcore.kernels import quant_gemm as qg

    assert not qg._hook_on(None)
    assert qg._hook_on(lambda meta: None)
    monkeypatch.setattr(torch._C, "_cuda_getDevice", lambda: 0, raising=False)  # CPU-only torch lacks it
    rt = getattr(getattr(triton, "knobs", None), "runtime", None)
    if rt is None:
        pytest.skip("this triton has no triton.knobs")
    assert qg._direct_ok(0), (rt.launch_enter_hook, rt.launch_exit_hook)
    assert not qg._direct_ok(1)  # another device current
    hook = lambda metadata: None  # noqa: E731
    chain = rt.launch_enter_hook
    if hasattr(chain, "add"):
        chain.add(hook)
        try:
            assert qg._hook_on(chain) and not qg._direct_ok(0)
        finally:
            chain.remove(hook)
        assert not qg._hook_on(chain) and qg._direct_ok(0)
    else:  # older triton: a plain attribute, None when unused
        monkeypatch.setattr(rt, "launch_enter_hook", hook)
        assert not qg._direct_ok(0)


def test_triton_direct_launch_in_cuda_graph(rng, monkeypatch):
    """Direct launches captured in a CUDA graph (intermediates then come from the graph's pool,
    the split-K workspace zeroed inside the graph) replay with new inputs exactly as eager calls."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    if _device() != "cuda":
        pytest.skip("CUDA graphs need a GPU")
    monkeypatch.setattr(qg, "_DIRECT", {})
    k, n = 96, 70
    monkeypatch.setitem(qg._BEST, ("fused", 4, n, k, torch.cuda.current_device()), qg._fused_configs()[2])  # sk2
    _, _, args = _w8a8_args(rng, n, k, "cuda")
    for m, path in [(3, "fused"), (40, "two_pass")]:
        x = torch.randn(m, k, device="cuda")
        for _ in range(2):
            qg.linear_w8a8(x, *args, "gelu", path=path)  # tune/record the direct launch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            qg.linear_w8a8(x, *args, "gelu", path=path)
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = qg.linear_w8a8(x, *args, "gelu", path=path)
        for _ in range(3):
            x.copy_(torch.randn(m, k, device="cuda") * 2)
            g.replay()
            torch.cuda.synchronize()
            assert torch.equal(out, qg.linear_w8a8(x, *args, "gelu", path=path)), (m, path)
    assert sorted({key[0] for key, ent in qg._DIRECT.items() if ent and ent.ptrs is not None}) == ["aq", "fused", "w8a8"]


_OUT_DTYPES = ["float32", "float16", "bfloat16"]


@given(m=st.integers(1, 18), k=st.integers(1, 70), n=st.integers(1, 40), seed=st.integers(0, 2**32 - 1),
       act=st.sampled_from(quant.ACTIVATIONS), x_dtype=st.sampled_from(_OUT_DTYPES),
       out_dtype=st.sampled_from(_OUT_DTYPES), res_dtype=st.sampled_from([None] + _OUT_DTYPES),
       path=st.sampled_from(["fused", "two_pass"]))
@settings(max_examples=8)
def test_triton_w8a8_half_in_half_out(m, k, n, seed, act, x_dtype, out_dtype, res_dtype, path):
    """x of any float type read as is, y written in out_dtype, residual of any float type: the
    result is the float32 result (same kernel, same config) rounded ONCE to out_dtype (bit for
    bit), and the float32 result is the oracle's on x widened to float32."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    rng = np.random.default_rng(seed)
    layer = quant.QuantizedLinear(rng.standard_normal((n, k)).astype(np.float32), None)
    b = rng.standard_normal(n).astype(np.float32)
    xt = torch.from_numpy((rng.standard_normal((m, k)) * 3).astype(np.float32)).to(getattr(torch, x_dtype))
    rt = None if res_dtype is None else torch.from_numpy(rng.standard_normal((m, n)).astype(np.float32)).to(
        getattr(torch, res_dtype))
    args = (torch.from_numpy(layer.qweight).to(dev), torch.from_numpy(layer.wscale).to(dev),
            torch.from_numpy(layer.qweight.sum(axis=1, dtype=np.int32)).to(dev), torch.from_numpy(b).to(dev), act,
            None if rt is None else rt.to(dev))
    y32 = qg.linear_w8a8(xt.to(dev), *args, path=path).cpu()
    exp = ref.linear_w8a8(xt.float().numpy(), layer.qweight, layer.wscale, b, act,
                          None if rt is None else rt.float().numpy())
    np.testing.assert_allclose(y32.numpy(), exp, rtol=2e-5, atol=5e-6 * max(1.0, float(np.abs(exp).max(initial=0))))
    y = qg.linear_w8a8(xt.to(dev), *args, path=path, out_dtype=getattr(torch, out_dtype)).cpu()
    assert y.dtype == getattr(torch, out_dtype) and y.shape == (m, n)
    torch.testing.assert_close(y, y32.to(y.dtype), rtol=0, atol=0)


@pytest.mark.parametrize("wdt", ["float16", "bfloat16"])
@pytest.mark.parametrize("out_dtype", _OUT_DTYPES)
def test_triton_half_out_dtype(wdt, out_dtype, rng):
    """FP16/BF16 weights writing float16/bfloat16 directly: the float32 result rounded once; a
    half residual is added in fp32; NaN rows stay NaN in every output type."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    w = torch.from_numpy(rng.standard_normal((29, 41)).astype(np.float32)).to(getattr(torch, wdt)).to(dev)
    b = torch.from_numpy(rng.standard_normal(29).astype(np.float32)).to(dev)
    x = torch.from_numpy((rng.standard_normal((6, 41)) * 2).astype(np.float32))
    x[4, 3] = float("nan")
    r = torch.from_numpy(rng.standard_normal((6, 29)).astype(np.float32)).to(getattr(torch, wdt)).to(dev)
    y32 = qg.linear_half(x.to(dev), w, b, "silu", r).cpu()
    y = qg.linear_half(x.to(dev), w, b, "silu", r, out_dtype=getattr(torch, out_dtype)).cpu()
    assert y.dtype == getattr(torch, out_dtype)
    assert torch.isnan(y[4]).all() and torch.isfinite(torch.cat([y[:4], y[5:]])).all()
    torch.testing.assert_close(y, y32.to(y.dtype), rtol=0, atol=0, equal_nan=True)
    exp = ref.linear_half(_round_to(x.numpy(), wdt), w.cpu().double().numpy(), b.cpu().numpy(), "silu",
                          r.cpu().double().numpy())
    ok = [0, 1, 2, 3, 5]
    np.testing.assert_allclose(y32.numpy()[ok], exp[ok], rtol=1e-4, atol=1e-4)
    with pytest.raises(TypeError, match="out_dtype"):
        qg.linear_half(x.to(dev), w, out_dtype=torch.float64)


def test_triton_bf16_store_rounds_to_nearest_even():
    """Values exactly halfway between two bfloat16 numbers (and just off it) through the W8A8
    epilogue's store: ties go to even, as torch's (and the GPU's) conversion does. The interpreter
    itself truncates, so this pins the kernel's own rounding there."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    # y = 1 * 1 * (acc) + bias with acc = 0 (zero weights): y is the bias, stored as bfloat16
    base = torch.tensor([1.0, 1.0, 3.0, 3.0, -1.0, 2.0 ** 20], dtype=torch.float32)
    bits = base.view(torch.int32) + torch.tensor([0x8000, 0x8001, 0x8000, 0x7FFF, 0x18000, 0x8000], dtype=torch.int32)
    bias = bits.view(torch.float32)
    n, k = bias.numel(), 4
    qw = torch.zeros((n, k), dtype=torch.int8)
    args = (qw.to(dev), torch.ones(n, device=dev), torch.zeros(n, dtype=torch.int32, device=dev), bias.to(dev))
    x = torch.ones((1, k), device=dev)
    y = qg.linear_w8a8(x, *args, out_dtype=torch.bfloat16).cpu()
    assert torch.equal(y[0].view(torch.int16), bias.to(torch.bfloat16).view(torch.int16))


def test_cuda_path_needs_cuda_tensors(rng):
    """path='cuda' (the CUDA C++ small-M kernel) refuses CPU tensors with a clear error; the
    default small-M path on CPU tensors stays the Triton one even when 'cuda' is configured."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    qw = torch.from_numpy(rng.integers(-127, 128, (6, 8), dtype=np.int8))
    args = (qw, torch.ones(6), qw.to(torch.int32).sum(1).to(torch.int32))
    x = torch.from_numpy(rng.standard_normal((2, 8)).astype(np.float32))
    if torch.cuda.is_available():
        pytest.skip("this checks the CPU-tensor refusal")
    with pytest.raises(ValueError, match="CUDA tensors"):
        qg.linear_w8a8(x, *args, path="cuda")
    w16 = torch.from_numpy(rng.standard_normal((6, 8)).astype(np.float32)).half()
    with pytest.raises(ValueError, match="CUDA tensors"):
        qg.linear_half(x, w16, path="cuda")
    with pytest.raises(ValueError, match="path must be"):
        qg.linear_half(x, w16, path="fused")
    assert qg.linear_half(x[:0], w16, path="cuda").shape == (0, 6)  # empty: nothing to launch
    prev, qg.SMALL_M_PATH = qg.SMALL_M_PATH, "cuda"
    try:
        y = qg.linear_w8a8(x, *args)
    finally:
        qg.SMALL_M_PATH = prev
    np.testing.assert_allclose(y.numpy(), qg.linear_w8a8(x, *args, path="fused").numpy(), rtol=0, atol=0)
