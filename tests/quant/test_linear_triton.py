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
