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
def test_cuda_half_model_stays_half(dtype, kind):
    """An fp16/bf16 model optimize()d on CUDA: its layers read and write that type themselves (no
    fp32 round trip), the result stays close to the float model's, and the direct kernel call
    with out_dtype is the fp32 call rounded once."""
    import torch

    from pyperfcore.kernels import quant_gemm as qg

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
