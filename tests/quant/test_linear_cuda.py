"""CUDA activation (de)quantization kernels against the numpy oracle (needs an NVIDIA GPU)."""
from __future__ import annotations

import numpy as np
import pytest

from pyperfcore import quant
from tests import reference as ref

pytestmark = [pytest.mark.cuda, pytest.mark.gpu]


@pytest.mark.parametrize("shape", [(0, 5), (1, 1), (3, 7), (17, 384), (64, 1537), (2, 5000)])
@pytest.mark.parametrize("symmetric", [False, True])
def test_cuda_activation_quantization_exact(shape, symmetric, rng):
    import torch

    x = (rng.standard_normal(shape) * 3 + 0.5).astype(np.float32)
    xt = torch.from_numpy(x).cuda()
    q, s, z = quant.quantize_activations(xt, symmetric=symmetric, backend="cuda")
    eq, es, ez = ref.quantize_rows_u8(x, symmetric)
    np.testing.assert_array_equal(q.cpu().numpy(), eq)
    np.testing.assert_array_equal(s.cpu().numpy(), es)
    np.testing.assert_array_equal(z.cpu().numpy(), ez)
    back = quant.dequantize_activations(q, s, z, shape[1]).cpu().numpy()
    np.testing.assert_array_equal(back, quant.dequantize_activations(eq, es, ez, shape[1]))
    if x.size:
        assert np.abs(back - x).max() <= es.max() * 0.5 + 1e-6


def test_cuda_nan_is_an_error():
    import torch

    x = torch.zeros((4, 9), device="cuda")
    x[2, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinity"):
        quant.quantize_activations(x, backend="cuda")


def test_cuda_module_and_export(rng):
    import torch

    m = torch.nn.Sequential(torch.nn.Linear(384, 1536), torch.nn.GELU(), torch.nn.Linear(1536, 384)).cuda().eval()
    x = torch.randn(16, 384, device="cuda")
    with torch.no_grad():
        e = m(x)
        quant.optimize(m)
        y = m(x)
    assert torch.nn.functional.cosine_similarity(y, e).min() > 0.999
    g = torch.cuda.CUDAGraph()
    with torch.no_grad():
        m(x)
        with torch.cuda.graph(g):
            out = m(x)
    g.replay()
    torch.testing.assert_close(out, y)


@pytest.mark.parametrize("m", [3, 40])  # the fused single-launch path and the two-pass path
def test_cuda_optimized_nan_row_is_poisoned(m):
    """On CUDA the custom ops do not synchronize to check activations: a NaN row in the input
    comes out as a NaN row (also through the fused GELU), the other rows are exactly those of a
    clean run."""
    import torch

    torch.manual_seed(m)
    mod = torch.nn.Sequential(torch.nn.Linear(96, 160), torch.nn.GELU(), torch.nn.Linear(160, 48)).cuda().eval()
    x = torch.randn(m, 96, device="cuda")
    with torch.no_grad():
        quant.optimize(mod)
        clean = mod(x)
        x[1, 5] = float("nan")
        y = mod(x)
    assert torch.isnan(y[1]).all()
    keep = [i for i in range(m) if i != 1]
    torch.testing.assert_close(y[keep], clean[keep], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.parametrize("kind", ["int8", "fp16"])
def test_cuda_half_model_stays_half(dtype, kind, monkeypatch):
    """An fp16/bf16 model optimize()d on CUDA: its layers read and write that type themselves (no
    fp32 round trip), the result stays close to the float model's, and the direct kernel call
    with out_dtype is the fp32 call rounded once."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    monkeypatch.setattr(qg, "AUTOTUNE", False)  # (no timing runs per new specialization in a device check)
    torch.manual_seed(3)
    dt = getattr(torch, dtype)
    m = torch.nn.Sequential(torch.nn.Linear(96, 160), torch.nn.GELU(), torch.nn.Linear(160, 48)).cuda().eval()
    x = torch.randn(24, 96, device="cuda")
    with torch.no_grad():
        e = m(x)
        q = quant.optimize(m.to(dt), dtype=kind)
        y = q(x.to(dt))
    assert y.dtype == dt
    assert torch.nn.functional.cosine_similarity(y.float(), e).min() > 0.995
    lin = q[0]
    xh = x.to(dt)
    if kind == "int8":
        cs = lin.qweight.sum(dim=1, dtype=torch.int32)
        args = (lin.qweight, lin.wscale, cs, lin.bias, "gelu")
        torch.testing.assert_close(qg.linear_w8a8(xh, *args, out_dtype=dt), qg.linear_w8a8(xh, *args).to(dt),
                                   rtol=0, atol=0)
    else:
        torch.testing.assert_close(qg.linear_half(xh, lin.weight, lin.bias, "gelu", out_dtype=dt),
                                   qg.linear_half(xh, lin.weight, lin.bias, "gelu").to(dt), rtol=0, atol=0)


_DT = ["float32", "float16", "bfloat16"]


@pytest.mark.parametrize("m", [1, 2, 3, 5, 8, 11, 16, 17, 40])
@pytest.mark.parametrize("kn", [(384, 1536), (36, 50), (37, 29)], ids=["vec16", "vec4", "bytes"])
def test_cuda_small_w8a8_matches_oracle(m, kn, rng):
    """The CUDA C++ small-M W8A8 kernel (path='cuda') against the numpy oracle: every row-group
    size (1, 2, 4, 8, 16 and several groups), the three load widths (K a multiple of 16, of 4,
    odd), all activations, both quantization modes, residual, non-contiguous x rows; half outputs
    are the float32 output rounded once."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    k, n = kn
    for trial, act in enumerate(quant.ACTIVATIONS):
        sym = bool(trial % 2)
        w = rng.standard_normal((n, k)).astype(np.float32)
        layer = quant.QuantizedLinear(w, None, act_quant="symmetric" if sym else "asymmetric")
        b = rng.standard_normal(n).astype(np.float32)
        x = (rng.standard_normal((m, 2 * k)) * rng.uniform(0.1, 4, (m, 1)) + rng.uniform(-1, 1, (m, 1))).astype(np.float32)
        r = rng.standard_normal((m, n)).astype(np.float32) if trial % 3 else None
        exp = ref.linear_w8a8(x[:, ::2], layer.qweight, layer.wscale, b, act, r, sym)
        xt = torch.from_numpy(x).cuda()[:, ::2]
        qw = torch.from_numpy(layer.qweight).cuda()
        args = (qw, torch.from_numpy(layer.wscale).cuda(), qw.to(torch.int32).sum(1).to(torch.int32),
                torch.from_numpy(b).cuda(), act, None if r is None else torch.from_numpy(r).cuda())
        y = qg.linear_w8a8(xt, *args, symmetric=sym, path="cuda")
        np.testing.assert_allclose(y.cpu().numpy(), exp, rtol=2e-5, atol=5e-6 * max(1.0, float(np.abs(exp).max())))
        for dt in ("float16", "bfloat16"):
            yh = qg.linear_w8a8(xt, *args, symmetric=sym, path="cuda", out_dtype=getattr(torch, dt))
            torch.testing.assert_close(yh, y.to(yh.dtype), rtol=0, atol=0)


@pytest.mark.parametrize("x_dtype", _DT)
def test_cuda_small_w8a8_half_inputs_and_unaligned_weight(x_dtype, rng):
    """Half activations read as is (codes of x widened to fp32), a half residual, and a weight
    view whose rows do not start 16-byte aligned (the kernel drops to narrower loads)."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    m, k, n = 6, 64, 40
    w = rng.standard_normal((n, k)).astype(np.float32)
    layer = quant.QuantizedLinear(w, None)
    big = torch.zeros((n, k + 1), dtype=torch.int8, device="cuda")
    big[:, 1:] = torch.from_numpy(layer.qweight).cuda()
    qw = big[:, 1:]  # row starts at an odd address
    xt = torch.from_numpy(rng.standard_normal((m, k)).astype(np.float32)).cuda().to(getattr(torch, x_dtype))
    rt = torch.from_numpy(rng.standard_normal((m, n)).astype(np.float32)).cuda().half()
    cs = qw.to(torch.int32).sum(1).to(torch.int32)
    y = qg.linear_w8a8(xt, qw, torch.from_numpy(layer.wscale).cuda(), cs, None, "relu", rt, path="cuda")
    exp = ref.linear_w8a8(xt.float().cpu().numpy(), layer.qweight, layer.wscale, None, "relu", rt.float().cpu().numpy())
    np.testing.assert_allclose(y.cpu().numpy(), exp, rtol=2e-5, atol=5e-5)


def test_cuda_small_w8a8_nan_rows_and_graph(rng):
    """NaN/inf rows come out NaN without a synchronization (check_finite=True raises), the other
    rows exactly as in a clean call; the path captures into a CUDA graph and replays."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    m, k, n = 5, 128, 96
    layer = quant.QuantizedLinear(rng.standard_normal((n, k)).astype(np.float32), None)
    qw = torch.from_numpy(layer.qweight).cuda()
    args = (qw, torch.from_numpy(layer.wscale).cuda(), qw.to(torch.int32).sum(1).to(torch.int32), None, "gelu")
    x = torch.from_numpy(rng.standard_normal((m, k)).astype(np.float32)).cuda()
    clean = qg.linear_w8a8(x, *args, path="cuda")
    x2 = x.clone()
    x2[1, 3], x2[4, 0] = float("nan"), float("-inf")
    y = qg.linear_w8a8(x2, *args, path="cuda")
    assert torch.isnan(y[[1, 4]]).all()
    torch.testing.assert_close(y[[0, 2, 3]], clean[[0, 2, 3]], rtol=0, atol=0)
    with pytest.raises(ValueError, match="NaN or infinity"):
        qg.linear_w8a8(x2, *args, path="cuda", check_finite=True)
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        qg.linear_w8a8(x, *args, path="cuda")
    torch.cuda.current_stream().wait_stream(s)
    with torch.cuda.graph(g):
        out = qg.linear_w8a8(x, *args, path="cuda")
    g.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out, clean, rtol=0, atol=0)


def test_cuda_small_path_as_default_in_a_module(monkeypatch):
    """PYPERFCORE_SMALL_M_PATH=cuda (here: the module attribute) sends an optimize()d module's
    small batches through the CUDA kernel: same codes, same sums, so the output equals the
    Triton fused path's up to float rounding of the epilogue."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    monkeypatch.setattr(qg, "AUTOTUNE", False)
    torch.manual_seed(5)
    mod = torch.nn.Sequential(torch.nn.Linear(96, 160), torch.nn.GELU(), torch.nn.Linear(160, 48)).cuda().eval()
    x = torch.randn(7, 96, device="cuda")
    with torch.no_grad():
        quant.optimize(mod)
        tri = mod(x)
        monkeypatch.setattr(qg, "SMALL_M_PATH", "cuda")
        cu = mod(x)
    torch.testing.assert_close(cu, tri, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("wdt", ["float16", "bfloat16"])
@pytest.mark.parametrize("m", [1, 3, 16, 21])
@pytest.mark.parametrize("kn", [(384, 1536), (34, 50), (37, 29)], ids=["vec16", "vec4", "elem"])
def test_cuda_small_half_matches_oracle(wdt, m, kn, rng, monkeypatch):
    """The CUDA C++ small-M kernel for FP16/BF16 weights (linear_half path='cuda') against the
    float64 oracle of the rounded operands (every activation) and against the Triton kernel (one,
    untuned: a device check has no time for a compile per activation); half outputs are the
    float32 output rounded once; NaN rows NaN."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    monkeypatch.setattr(qg, "AUTOTUNE", False)
    k, n = kn
    wt = getattr(torch, wdt)
    w = torch.from_numpy(rng.standard_normal((n, k)).astype(np.float32)).to(wt).cuda()
    b = torch.from_numpy(rng.standard_normal(n).astype(np.float32)).cuda()
    x = torch.from_numpy((rng.standard_normal((m, k)) * 2).astype(np.float32)).cuda()
    r = torch.from_numpy(rng.standard_normal((m, n)).astype(np.float32)).cuda()
    for act in quant.ACTIVATIONS:
        y = qg.linear_half(x, w, b, act, r, path="cuda")
        exp = ref.linear_half(x.to(wt).double().cpu().numpy(), w.double().cpu().numpy(), b.cpu().numpy(), act,
                              r.double().cpu().numpy())
        np.testing.assert_allclose(y.cpu().numpy(), exp, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(exp).max())))
        if act == "gelu":
            torch.testing.assert_close(y, qg.linear_half(x, w, b, act, r, path="triton"), rtol=1e-4, atol=1e-4)
        yh = qg.linear_half(x, w, b, act, r, path="cuda", out_dtype=torch.float16)
        torch.testing.assert_close(yh, y.half(), rtol=0, atol=0)
    x[m // 2, 0] = float("nan")
    y = qg.linear_half(x, w, b, "gelu", None, path="cuda")
    assert torch.isnan(y[m // 2]).all() and torch.isfinite(torch.cat([y[:m // 2], y[m // 2 + 1:]])).all()


@pytest.mark.parametrize("kind", ["int8", "fp16"])
def test_cuda_module_eager_path_equals_custom_op(kind, monkeypatch):
    """On CUDA, a QLinear in plain eager mode calls the kernels directly; the result is bit for bit
    the custom op's (what torch.compile/export and opcheck see)."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

    monkeypatch.setattr(qg, "AUTOTUNE", False)
    torch.manual_seed(11)
    mod = torch.nn.Sequential(torch.nn.Linear(96, 160), torch.nn.GELU(), torch.nn.Linear(160, 48)).cuda().eval()
    quant.optimize(mod, dtype=kind)
    lin = mod[0]
    for dt in (torch.float32, torch.float16):
        x = torch.randn(5, 96, device="cuda").to(dt)
        with torch.no_grad():
            y = lin(x)
            if kind == "int8":
                yo = torch.ops.pyperfcore.w8a8_linear(x, lin.qweight, lin.wscale, lin.bias, None, lin.activation, False)
            else:
                yo = torch.ops.pyperfcore.half_linear(x, lin.weight, lin.bias, None, lin.activation)
        assert y.dtype == dt
        torch.testing.assert_close(y, yo, rtol=0, atol=0)
