"""Fused attention against a float64 numpy oracle on random shapes, masks and strided views, on
every CPU target; bad input; the BERT encoder's switch under optimize()."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyperfcore
from pyperfcore.quant.attention import attention
from pyperfcore._runtime import _core

TARGETS = pyperfcore.build_info()["cpu_targets_supported"]


def _oracle(q, k, v, mask, scale):
    s = np.einsum("bhtd,bhjd->bhtj", q.astype(np.float64), k.astype(np.float64)) * scale
    if mask is not None:
        s = s + mask.astype(np.float64)[:, None, None, :]
    with np.errstate(invalid="ignore"):
        p = np.exp(s - s.max(-1, keepdims=True))
        p = p / p.sum(-1, keepdims=True)
    return np.einsum("bhtj,bhjd->bthd", p, v.astype(np.float64))


@settings(max_examples=40)
@given(b=st.integers(1, 4), h=st.integers(1, 5), t=st.integers(1, 40), d=st.integers(1, 70),
       seed=st.integers(0, 2**32 - 1), masked=st.booleans(), layout=st.sampled_from(["bhtd", "bthd"]),
       threads=st.sampled_from([1, 2]))
def test_attention_matches_oracle_every_target(b, h, t, d, seed, masked, layout, threads):
    rng = np.random.default_rng(seed)
    if layout == "bthd":  # the model's view: [B, T, H*D] split into heads and transposed
        q, k, v = (rng.standard_normal((b, t, h, d)).astype(np.float32).transpose(0, 2, 1, 3) * 2 for _ in range(3))
    else:
        q, k, v = (rng.standard_normal((b, h, t, d)).astype(np.float32) * 2 for _ in range(3))
    mask = None
    if masked:  # padding at the end of each row, at least one key kept
        mask = np.zeros((b, t), np.float32)
        for r in range(b):
            mask[r, rng.integers(1, t + 1):] = -np.inf
    want = _oracle(q, k, v, mask, 1 / np.sqrt(d))
    for target in TARGETS:
        with pyperfcore.cpu_target(target):
            got = attention(q, k, v, mask, threads=threads)
        assert got.shape == (b, t, h, d) and got.dtype == np.float32
        # fp32 scores, softmax sums and weighted sums of v: errors scale with |v| (cancellation)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, float(np.abs(v).max())), err_msg=target)


def test_fully_masked_rows_are_zero_like_torch_and_others_unaffected(rng):
    # torch's CPU attention returns 0 for a query whose keys are all masked (a padded sequence
    # with no tokens); the fused kernel does the same, so an optimized model answers as the original
    torch = pytest.importorskip("torch")
    q, k, v = (rng.standard_normal((3, 2, 6, 16)).astype(np.float32) for _ in range(3))
    mask = np.zeros((3, 6), np.float32)
    mask[1] = -np.inf
    ref = torch.nn.functional.scaled_dot_product_attention(*(torch.from_numpy(a) for a in (q, k, v)),
                                                           attn_mask=torch.from_numpy(mask)[:, None, None, :])
    ref = ref.transpose(1, 2).numpy()
    assert (ref[1] == 0).all()
    for target in TARGETS:
        with pyperfcore.cpu_target(target):
            got = attention(q, k, v, mask)
        assert (got[1] == 0).all() and np.isfinite(got).all(), target
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_attention_bad_input_and_empty(rng):
    q = rng.standard_normal((2, 3, 4, 8)).astype(np.float32)
    with pytest.raises(TypeError, match="float32"):
        attention(q.astype(np.float64), q, q)
    with pytest.raises(ValueError, match="shapes differ"):
        attention(q, q[:, :, :3], q)
    with pytest.raises(ValueError, match="batch, heads, seq, head_dim"):
        attention(q[0], q[0], q[0])
    with pytest.raises(ValueError, match="contiguous"):
        qq = np.ascontiguousarray(np.swapaxes(q, 2, 3))
        attention(np.swapaxes(qq, 2, 3), q, q)
    with pytest.raises(ValueError, match="mask must be"):
        attention(q, q, q, np.zeros((2, 5), np.float32))
    for bad in (np.nan, np.inf):
        m = np.zeros((2, 4), np.float32)
        m[0, 1] = bad
        with pytest.raises(ValueError, match="NaN or \\+inf"):
            attention(q, q, q, m)
    with pytest.raises(ValueError, match="scale"):
        attention(q, q, q, scale=float("nan"))
    assert attention(q[:0], q[:0], q[:0]).shape == (0, 4, 3, 8)
    assert attention(q[:, :, :0], q[:, :, :0], q[:, :, :0]).shape == (2, 0, 3, 8)
    # a [B, 1, 1, T] mask (as BERT builds it) is the same as [B, T]
    m = np.zeros((2, 4), np.float32)
    m[1, 2:] = -np.inf
    np.testing.assert_array_equal(attention(q, q, q, m[:, None, None, :]), attention(q, q, q, m))
    # explicit scale
    np.testing.assert_allclose(attention(q, q, q, scale=0.3), _oracle(q, q, q, None, 0.3), rtol=1e-5, atol=2e-6)


def test_torch_views_and_the_bert_switch():
    torch = pytest.importorskip("torch")
    from pyperfcore import quant
    from pyperfcore.quant.bert import BertEncoder

    b, t, h, dh = 3, 7, 4, 8
    x = torch.randn(b, t, h * dh)
    qv = x.view(b, t, h, dh).transpose(1, 2)  # not contiguous: only the head dim is
    out = attention(qv, qv, qv)
    assert isinstance(out, torch.Tensor)
    torch.testing.assert_close(out, torch.nn.functional.scaled_dot_product_attention(qv, qv, qv).transpose(1, 2),
                               rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, hidden_size=32, max_position_embeddings=32, num_hidden_layers=2,
               num_attention_heads=4, intermediate_size=64)
    ref = BertEncoder(cfg).eval()
    opt = quant.optimize(copy.deepcopy(ref))
    assert all(m.native_attention for m in opt.modules() if hasattr(type(m), "native_attention"))
    assert not any(m.native_attention for m in ref.modules() if hasattr(type(m), "native_attention"))
    ids = torch.randint(0, 50, (5, 9))
    mask = torch.ones(5, 9, dtype=torch.long)
    mask[2, 4:] = 0
    sdpa = quant.optimize(copy.deepcopy(ref), fuse_attention=False)
    with torch.inference_mode():
        torch.testing.assert_close(opt(ids, mask), sdpa(ids, mask), rtol=1e-5, atol=1e-5)
    # tracing for export sees the plain SDPA graph
    ep = torch.export.export(opt, (ids, mask))
    with torch.inference_mode():
        torch.testing.assert_close(ep.module()(ids, mask), opt(ids, mask), rtol=1e-5, atol=1e-5)


def test_threads_give_the_same_bits(rng):
    q, k, v = (rng.standard_normal((4, 6, 13, 24)).astype(np.float32) for _ in range(3))
    np.testing.assert_array_equal(attention(q, k, v, threads=1), attention(q, k, v, threads=2))
    assert _core().attention(q, k, v, None, 0.2, 1).shape == (4, 13, 6, 24)


def test_finite_min_masks_and_large_scores(rng):
    # Hugging Face models mask with torch.finfo(float32).min rather than -inf; scores of 1e3-1e4
    # must not overflow the softmax
    q, k, v = (rng.standard_normal((2, 3, 9, 16)).astype(np.float32) for _ in range(3))
    mask = np.zeros((2, 9), np.float32)
    mask[0, 5:] = np.finfo(np.float32).min
    want = _oracle(q, k, v, np.where(mask < 0, -np.inf, 0).astype(np.float32), 0.25)
    for target in TARGETS:
        with pyperfcore.cpu_target(target):
            np.testing.assert_allclose(attention(q, k, v, mask, scale=0.25), want, rtol=1e-5, atol=1e-5)
            big = attention(q * 30, k * 30, v, scale=1.0)
        assert np.isfinite(big).all()
        np.testing.assert_allclose(big, _oracle(q * 30, k * 30, v, None, 1.0), rtol=1e-4, atol=1e-4)
