"""Triton W8A8 / FP16 linear kernels against the numpy oracle (TRITON_INTERPRET=1 without a GPU)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyperfcore import quant
from tests import reference as ref

pytestmark = pytest.mark.triton


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


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_triton_half_matches_oracle(dtype, rng):
    import torch

    w = rng.standard_normal((45, 37)).astype(np.float32)
    b = rng.standard_normal(45).astype(np.float32)
    x = rng.standard_normal((5, 37)).astype(np.float32)
    layer = quant.QuantizedLinear(w, b, activation="gelu", dtype=dtype)
    y = layer(torch.from_numpy(x).to(_device()), backend="triton").cpu().numpy()
    exp = ref.linear_half(x, layer.weight_rounded, b, "gelu")
    np.testing.assert_allclose(y, exp, rtol=1e-4, atol=1e-4)


def test_triton_nan_is_an_error(rng):
    import torch

    layer = quant.QuantizedLinear(rng.standard_normal((8, 8)).astype(np.float32))
    x = torch.zeros((2, 8), device=_device())
    x[1, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        layer(x, backend="triton")


@pytest.mark.parametrize("m", [1, 16, 33])
def test_triton_w8a8_every_config_exact(m):
    """Every autotune configuration of the W8A8 kernel (on a GPU all of them, under the interpreter
    the one it has) gives the exact INT32 sums: with unit scales, no bias and no activation the
    output is float(sum_k (q - zp) * w), exact below 2^24. K and N are not multiples of any block,
    so the masks on every edge are exercised, and zero points differ per row."""
    import torch
    import triton

    from pyperfcore.kernels import quant_gemm as qg

    dev = _device()
    rng = np.random.default_rng(m)
    k, n = 300, 200  # |sum| <= 255 * 127 * 300 < 2^24
    x = torch.from_numpy((rng.standard_normal((m, k)) * rng.uniform(0.1, 5, (m, 1)) + 0.5).astype(np.float32)).to(dev)
    qw = torch.from_numpy(rng.integers(-127, 128, (n, k), dtype=np.int8)).to(dev)
    cs = qw.to(torch.int32).sum(dim=1).to(torch.int32)
    q, _, zp = qg.quantize_activations(x)
    ones_m = torch.ones(m, dtype=torch.float32, device=dev)
    ones_n = torch.ones(n, dtype=torch.float32, device=dev)
    exact = ((q.double() - zp.double()[:, None]) @ qw.double().T).cpu().numpy()
    assert np.abs(exact).max() < 2**24 and np.unique(zp.cpu().numpy()).size >= min(m, 2)
    for cfg in qg._w8a8_kernel.configs:
        bm, bn = cfg.kwargs["BLOCK_M"], cfg.kwargs["BLOCK_N"]
        y = torch.full((m, n), float("nan"), dtype=torch.float32, device=dev)
        qg._w8a8_kernel.fn[(triton.cdiv(m, bm), triton.cdiv(n, bn))](
            q, qw, ones_m, zp, ones_n, cs, y, y, y, m, n, k, qg._bucket(m), q.stride(0), qw.stride(0), 0, y.stride(0),
            HAS_BIAS=False, ACT=0, HAS_RES=False, num_warps=cfg.num_warps, num_stages=cfg.num_stages, **cfg.kwargs)
        np.testing.assert_array_equal(y.cpu().numpy(), exact, err_msg=str(cfg))
