"""GPU backends of the prepost ops (triton, cuda) against the same numpy oracles.

Triton tests run on the GPU when there is one, else on CPU tensors under TRITON_INTERPRET=1
(small sizes: the interpreter runs each program op by op). CUDA tests need the GPU.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyperfcore import prepost as pp
from tests import reference as ref

torch = pytest.importorskip("torch")

MEAN = [120.0, 110.0, 100.0]
STD = [60.0, 50.0, 40.0]


@st.composite
def image_cases(draw):
    c = draw(st.sampled_from([1, 3]))
    n = draw(st.integers(1, 2))
    h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = rng.integers(0, 256, (n, h, w, c), dtype=np.uint8)
    size = draw(st.sampled_from([None, "pair"]))
    size = None if size is None else (draw(st.integers(1, 14)), draw(st.integers(1, 14)))
    rh, rw = size or (h, w)
    crop = draw(st.sampled_from([None, "center"]))
    crop = None if crop is None else (draw(st.integers(1, rh)), draw(st.integers(1, rw)))
    return x, size, crop, draw(st.sampled_from(["NCHW", "NHWC"])), draw(st.sampled_from(["RGB", "BGR"])), draw(st.booleans())


def _oracle(x, size, crop, layout, order, aa):
    n, h, w, c = x.shape
    rh, rw = size or (h, w)
    box = None
    if crop is not None:
        box = (int(round((rh - crop[0]) / 2.0)), int(round((rw - crop[1]) / 2.0)), crop[0], crop[1])
    m, s = MEAN[:c] if c == 3 else MEAN[:1], STD[:c] if c == 3 else STD[:1]
    exp = np.stack([ref.prepost_preprocess(im, (rh, rw), box, m, s, order == "BGR", aa) for im in x])
    return exp.transpose(0, 2, 3, 1) if layout == "NHWC" else exp


def _check_images(backend, device, case):
    x, size, crop, layout, order, aa = case
    c = x.shape[3]
    kw = dict(size=size, crop=crop, mean=MEAN if c == 3 else MEAN[0], std=STD if c == 3 else STD[0], layout=layout,
              input_order=order, antialias=aa)
    xt = torch.from_numpy(x).to(device)
    got = pp.preprocess_images(xt, backend=backend, **kw)
    assert got.device.type == device and got.dtype == torch.float32
    np.testing.assert_allclose(got.cpu().numpy(), _oracle(x, size, crop, layout, order, aa), rtol=1e-5, atol=1e-4)
    # The same call into a caller's buffer (a view into a bigger one) gives the same values.
    big = torch.full((x.shape[0] + 1,) + tuple(got.shape[1:]), 7.0, device=device)
    res = pp.preprocess_images(xt, backend=backend, out=big[1:], **kw)
    assert res.data_ptr() == big[1:].data_ptr()
    np.testing.assert_array_equal(big[1:].cpu().numpy(), got.cpu().numpy())
    assert (big[0] == 7.0).all()


def _check_dtypes(backend, device, rng):
    # Exact agreement with the CPU backend (itself checked bit for bit against numpy) for every
    # output type, with strided input (a crop view) and widths around the block sizes.
    for w in (1, 5, 70):
        base = rng.integers(0, 256, (2, 3, w + 4, 3), dtype=np.uint8)
        x = base[:, :, 2:2 + w]
        for dtype in ("float16", "bfloat16", "int8", "uint8"):
            for layout in ("NCHW", "NHWC"):
                kw = dict(mean=MEAN, std=STD, layout=layout, dtype=dtype, input_order="BGR")
                if dtype == "int8":
                    kw["scale"] = 0.02
                got = pp.preprocess_images(torch.from_numpy(x).to(device), backend=backend, **kw)
                exp = pp.preprocess_images(torch.from_numpy(np.ascontiguousarray(x)), backend="cpu", **kw)
                assert got.dtype == exp.dtype and got.shape == exp.shape
                assert torch.equal(got.cpu(), exp), (w, dtype, layout)


def _check_uint8_resize(backend, device, rng):
    # Plain resize to uint8 stays within one unit of the CPU backend (float sums in another order).
    x = rng.integers(0, 256, (2, 11, 13, 3), dtype=np.uint8)
    for aa in (True, False):
        kw = dict(size=(6, 17), dtype="uint8", antialias=aa)
        got = pp.preprocess_images(torch.from_numpy(x).to(device), backend=backend, **kw).cpu().numpy()
        exp = pp.preprocess_images(x, backend="cpu", **kw)
        assert np.abs(got.astype(int) - exp).max() <= 1 and (got == exp).mean() > 0.9


def _check_image_errors(backend, device):
    x = torch.zeros((2, 4, 4, 3), dtype=torch.uint8, device=device)
    with pytest.raises(ValueError, match="same-size"):
        pp.preprocess_images([x[0], x[1]], backend=backend)
    with pytest.raises(TypeError, match="out must be"):
        pp.preprocess_images(x, out=torch.empty((2, 3, 4, 4), dtype=torch.float16, device=device), backend=backend)
    with pytest.raises(ValueError, match="shape"):
        pp.preprocess_images(x, out=torch.empty((2, 4, 4, 3), device=device), backend=backend)
    with pytest.raises(ValueError, match="contiguous"):
        pp.preprocess_images(x, out=torch.empty((2, 3, 4, 8), device=device)[..., ::2], backend=backend)
    empty = pp.preprocess_images(x[:0], backend=backend)
    assert empty.shape == (0, 3, 4, 4)


@st.composite
def logit_cases(draw):
    rows, cols = draw(st.integers(0, 3)), draw(st.integers(1, 70))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["float32", "float16", "int8", "ties"]))
    if kind == "int8":
        q = rng.integers(-128, 128, (rows, cols), dtype=np.int8)
        s = np.float32(0.05) if draw(st.booleans()) else rng.uniform(0.01, 0.2, cols).astype(np.float32)
        return q, s, q.astype(np.float32) * s
    if kind == "ties":
        x = rng.integers(-2, 2, (rows, cols)).astype(np.float32)
        return x, None, x
    x = (rng.standard_normal((rows, cols)) * rng.uniform(0.1, 10)).astype(kind)
    return x, None, x.astype(np.float32)


def _check_topk(backend, device, case, k):
    x, s, xf = case
    k = min(k, xf.shape[1])
    v, i = pp.softmax_topk(torch.from_numpy(x).to(device), k, scale=s, backend=backend)
    pv, pi = ref.prepost_softmax_topk(xf, k)
    assert v.device.type == device and v.dtype == torch.float32 and i.dtype == torch.int64
    np.testing.assert_array_equal(i.cpu().numpy(), pi)
    np.testing.assert_allclose(v.cpu().numpy(), pv, rtol=2e-5, atol=1e-7)
    if xf.shape[0]:
        am = pp.argmax(torch.from_numpy(x).to(device), scale=s, backend=backend)
        np.testing.assert_array_equal(am.cpu().numpy(), np.argmax(xf, axis=1))


def _check_topk_errors(backend, device):
    # The GPU policy: by default (check_finite=True) a bad row raises at the call site, at the
    # cost of one synchronization; check_finite=False poisons it (values NaN, indices -1) instead.
    x = torch.from_numpy(np.random.default_rng(5).standard_normal((3, 5)).astype(np.float32)).to(device)
    good_v, good_i = pp.softmax_topk(x.cpu().numpy(), 2, backend="cpu")
    for bad, what in ((np.nan, "NaN"), (np.inf, "inf")):
        y = x.clone()
        y[1, 2] = bad
        with pytest.raises(ValueError, match=what):
            pp.softmax_topk(y, 2, backend=backend, check_finite=True)
        with pytest.raises(ValueError, match=what):  # the default checks
            pp.softmax_topk(y, 2, backend=backend)
        v, i = pp.softmax_topk(y, 2, backend=backend, check_finite=False)
        v, i = v.cpu().numpy(), i.cpu().numpy()
        assert np.isnan(v[1]).all() and (i[1] == -1).all()
        np.testing.assert_array_equal(i[[0, 2]], good_i[[0, 2]])
        np.testing.assert_allclose(v[[0, 2]], good_v[[0, 2]], rtol=2e-5, atol=1e-7)
        am = pp.argmax(y, backend=backend, check_finite=False).cpu().numpy()
        assert am[1] == -1 and (am[[0, 2]] == good_i[[0, 2], 0]).all()
        with pytest.raises(ValueError, match=what):
            pp.argmax(y, backend=backend, check_finite=True)
        with pytest.raises(ValueError, match=what):  # labels are looked up on the host: always checked
            pp.argmax(y, labels=list("abcde"), backend=backend)
    with pytest.raises(ValueError, match="all -inf"):
        pp.softmax_topk(torch.full((2, 4), -np.inf, device=device), 1, backend=backend, check_finite=True)
    v, i = pp.softmax_topk(torch.full((2, 4), -np.inf, device=device), 1, backend=backend, check_finite=False)
    assert np.isnan(v.cpu().numpy()).all() and (i.cpu().numpy() == -1).all()
    with pytest.raises(ValueError, match="k = 6"):
        pp.softmax_topk(x, 6, backend=backend)
    v, i = pp.softmax_topk(x[:0], 3, backend=backend)
    assert v.shape == (0, 3) and i.shape == (0, 3)


# ---------------------------------------------------------------- triton
@pytest.mark.triton
@settings(max_examples=6)
@given(image_cases())
def test_triton_preprocess_matches_oracle(triton_device, case):
    _check_images("triton", triton_device, case)


@pytest.mark.triton
def test_triton_preprocess_dtypes_resize_errors(triton_device, rng):
    _check_dtypes("triton", triton_device, rng)
    _check_uint8_resize("triton", triton_device, rng)
    _check_image_errors("triton", triton_device)


@pytest.mark.triton
@settings(max_examples=10)
@given(logit_cases(), st.integers(0, 8))
def test_triton_softmax_topk(triton_device, case, k):
    _check_topk("triton", triton_device, case, k)


@pytest.mark.triton
@settings(max_examples=8)
@given(logit_cases())
def test_triton_softmax_log_softmax_sigmoid(triton_device, case):
    x, s, xf = case
    xt = torch.from_numpy(x).to(triton_device)
    if xf.shape[0]:
        np.testing.assert_allclose(pp.softmax(xt, scale=s, backend="triton").cpu().numpy(), ref.prepost_softmax(xf),
                                   rtol=2e-5, atol=1e-7)
        np.testing.assert_allclose(pp.log_softmax(xt, scale=s, backend="triton").cpu().numpy(),
                                   ref.prepost_log_softmax(xf), rtol=1e-5, atol=2e-5)
    for thr in (0.05, 0.5, 0.9):
        got = pp.sigmoid_threshold(xt, thr, scale=s, backend="triton")
        assert got.dtype == torch.bool
        np.testing.assert_array_equal(got.cpu().numpy(), ref.prepost_sigmoid_threshold(xf, thr))


@pytest.mark.triton
@settings(max_examples=8)
@given(st.integers(0, 5), st.integers(1, 150), st.integers(0, 2**32 - 1), st.booleans())
def test_triton_l2_normalize(triton_device, rows, dim, seed, zero_row):
    x = (np.random.default_rng(seed).standard_normal((rows, dim)) * 3).astype(np.float32)
    if zero_row and rows:
        x[0] = 0
    got = pp.l2_normalize(torch.from_numpy(x).to(triton_device), backend="triton")
    np.testing.assert_allclose(got.cpu().numpy(), ref.prepost_l2_normalize(x), rtol=1e-5, atol=1e-7)


@pytest.mark.triton
def test_triton_classify_errors(triton_device):
    _check_topk_errors("triton", triton_device)
    nan = torch.tensor([[0.0, float("nan")]], device=triton_device)
    for fn in (pp.softmax, pp.log_softmax):
        with pytest.raises(ValueError, match="NaN"):
            fn(nan, backend="triton", check_finite=True)
    with pytest.raises(ValueError, match="NaN"):  # a bool mask cannot carry a poison: always checked
        pp.sigmoid_threshold(nan, backend="triton")
    with pytest.raises(ValueError, match="all -inf"):
        pp.softmax(torch.full((1, 3), -np.inf, device=triton_device), backend="triton", check_finite=True)
    # Without check_finite: the bad rows (NaN, +inf, all -inf) come back NaN, the others exact.
    x = torch.from_numpy(np.random.default_rng(9).standard_normal((4, 70)).astype(np.float32)).to(triton_device)
    x[1, 3] = float("nan")
    x[2, 69] = float("inf")
    x[3] = -float("inf")
    for fn in (pp.softmax, pp.log_softmax):
        with pytest.raises(ValueError):  # the default checks
            fn(x, backend="triton")
        got = fn(x, backend="triton", check_finite=False).cpu().numpy()
        assert np.isnan(got[1:]).all()
        np.testing.assert_allclose(got[0], fn(x[:1].cpu().numpy(), backend="cpu")[0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="NaN or infinity"):
        pp.l2_normalize(nan, backend="triton", check_finite=True)


# ---------------------------------------------------------------- cuda
@pytest.mark.cuda
@pytest.mark.gpu
@settings(max_examples=40)
@given(image_cases())
def test_cuda_preprocess_matches_oracle(case):
    _check_images("cuda", "cuda", case)


@pytest.mark.cuda
@pytest.mark.gpu
def test_cuda_preprocess_dtypes_resize_errors(rng):
    _check_dtypes("cuda", "cuda", rng)
    _check_uint8_resize("cuda", "cuda", rng)
    _check_image_errors("cuda", "cuda")


@pytest.mark.cuda
@pytest.mark.gpu
def test_cuda_preprocess_large_matches_cpu(rng):
    # A realistic batch (ImageNet-style resize 256 -> 232, crop 224) against the CPU backend.
    x = rng.integers(0, 256, (4, 256, 300, 3), dtype=np.uint8)
    for aa in (True, False):
        kw = dict(size=232, crop=224, mean=MEAN, std=STD, antialias=aa)
        got = pp.preprocess_images(torch.from_numpy(x).cuda(), backend="cuda", **kw).cpu().numpy()
        np.testing.assert_allclose(got, pp.preprocess_images(x, backend="cpu", **kw), rtol=1e-5, atol=1e-4)
        tri = pp.preprocess_images(torch.from_numpy(x).cuda(), backend="triton", **kw).cpu().numpy()
        np.testing.assert_allclose(tri, got, rtol=1e-5, atol=1e-4)


@pytest.mark.cuda
@pytest.mark.gpu
@settings(max_examples=60)
@given(logit_cases(), st.integers(0, 12))
def test_cuda_softmax_topk(case, k):
    _check_topk("cuda", "cuda", case, k)


@pytest.mark.cuda
@pytest.mark.gpu
def test_cuda_softmax_topk_wide_rows_and_errors(rng):
    x = (rng.standard_normal((7, 50000)) * 4).astype(np.float32)
    v, i = pp.softmax_topk(torch.from_numpy(x).cuda(), 10, backend="cuda")
    pv, pi = ref.prepost_softmax_topk(x, 10)
    np.testing.assert_array_equal(i.cpu().numpy(), pi)
    np.testing.assert_allclose(v.cpu().numpy(), pv, rtol=2e-5, atol=1e-9)
    _check_topk_errors("cuda", "cuda")


@pytest.mark.gpu
def test_cuda_tensors_pick_a_gpu_backend(rng):
    # With no backend named, CUDA tensors run on a GPU backend and stay on the GPU.
    x = torch.from_numpy(rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)).cuda()
    out = pp.preprocess_images(x, mean=MEAN, std=STD)
    assert out.is_cuda
    np.testing.assert_allclose(out.cpu().numpy(), pp.preprocess_images(x.cpu().numpy(), mean=MEAN, std=STD), rtol=1e-6)
    v, i = pp.softmax_topk(torch.randn(4, 100, device="cuda"), 5)
    assert v.is_cuda and i.is_cuda


@pytest.mark.cuda
@pytest.mark.gpu
def test_cuda_softmax_topk_lean_path():
    pp.softmax_topk(torch.randn(2, 10, device="cuda"), 1, backend="cuda")  # the first cuda call enables it
    # The GPU lean path (float CUDA tensor, no scale, no backend or "cuda") gives the same as the
    # full path, applies the same policy, and still rejects a bad k.
    x = torch.randn(9, 300, device="cuda")
    x[4, 7] = float("nan")
    for dt in (torch.float32, torch.float16):
        xd = x.to(dt)
        a = pp.softmax_topk(xd, 4, check_finite=False)
        b = pp.softmax_topk(xd, 4, backend="cuda", check_finite=False)
        torch.testing.assert_close(a[0], b[0], equal_nan=True)
        torch.testing.assert_close(a[1], b[1])
        assert (a[1][4] == -1).all() and torch.isnan(a[0][4]).all()
        with pytest.raises(ValueError, match="NaN"):
            pp.softmax_topk(xd, 4, check_finite=True)
        with pytest.raises(ValueError, match="NaN"):  # the default checks, on the lean path too
            pp.softmax_topk(xd, 4)
        with pytest.raises(ValueError, match="k = 301"):
            pp.softmax_topk(xd, 301)
        v, i = pp.softmax_topk(xd[:, ::2], 3, check_finite=False)  # strided classes
        cv, ci = pp.softmax_topk(xd[:, ::2].float().cpu().numpy()[[0, 1, 2, 3, 5, 6, 7, 8]], 3, backend="cpu")
        np.testing.assert_array_equal(i.cpu().numpy()[[0, 1, 2, 3, 5, 6, 7, 8]], ci)


# ---------------------------------------------------------------- embeddings (triton, cuda)
def _check_embeddings(backend, device, x):
    xt = torch.from_numpy(x).to(device)
    got = pp.l2_normalize(xt, backend=backend)
    assert got.device.type == device and got.dtype == torch.float32
    # The GPU kernels sum the squares in the CPU backend's float32 order: equal bit for bit.
    np.testing.assert_array_equal(got.cpu().numpy(), pp.l2_normalize(x, backend="cpu"))
    for norm in (True, False):
        q, s = pp.compress_embeddings(xt, normalize=norm, backend=backend)
        qc, sc = pp.compress_embeddings(x, normalize=norm, backend="cpu")
        assert q.dtype == torch.int8 and s.dtype == torch.float32 and q.device.type == device
        np.testing.assert_array_equal(q.cpu().numpy(), qc)
        np.testing.assert_array_equal(s.cpu().numpy(), sc)
    if x.shape[0] and x.shape[1]:
        q, s = ref.prepost_compress(ref.prepost_l2_normalize(x))  # and close to the numpy oracle
        qg, sg = pp.compress_embeddings(xt, backend=backend)
        assert np.abs(qg.cpu().numpy().astype(int) - q).max() <= 1
        np.testing.assert_allclose(sg.cpu().numpy(), s, rtol=1e-5)


def _embedding_case(rows, dim, seed, zero_row):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((rows, dim)) * rng.uniform(1e-3, 1e3)).astype(np.float32)
    if zero_row and rows:
        x[0] = 0
    return x


def _check_embedding_errors(backend, device):
    # check_finite=True (the default) raises; check_finite=False poisons the bad row (NaN values;
    # scale NaN and codes 0) and leaves the other rows exact, with no synchronization.
    base = np.random.default_rng(3).standard_normal((3, 20)).astype(np.float32)
    for bad in (np.nan, np.inf, -np.inf):
        x = torch.from_numpy(base).to(device)
        x[1, 17] = bad
        with pytest.raises(ValueError, match="NaN or infinity"):
            pp.l2_normalize(x, backend=backend, check_finite=True)
        with pytest.raises(ValueError, match="NaN or infinity"):
            pp.compress_embeddings(x, backend=backend, check_finite=True)
        with pytest.raises(ValueError, match="NaN or infinity"):  # the default checks
            pp.l2_normalize(x, backend=backend)
        got = pp.l2_normalize(x, backend=backend, check_finite=False).cpu().numpy()
        assert np.isnan(got[1]).all()
        np.testing.assert_array_equal(got[[0, 2]], pp.l2_normalize(base[[0, 2]], backend="cpu"))
        q, s = pp.compress_embeddings(x, backend=backend, check_finite=False)
        q, s = q.cpu().numpy(), s.cpu().numpy()
        assert np.isnan(s[1]) and (q[1] == 0).all()
        qc, sc = pp.compress_embeddings(base[[0, 2]], backend="cpu")
        np.testing.assert_array_equal(q[[0, 2]], qc)
        np.testing.assert_array_equal(s[[0, 2]], sc)
    q, s = pp.compress_embeddings(torch.ones((0, 8), device=device), backend=backend)
    assert q.shape == (0, 8) and s.shape == (0,)
    # Zero-width rows (a null data pointer): empty codes, unit scales, as on the CPU; no launch.
    for rows in (0, 1, 3):
        x = torch.ones((rows, 0), device=device)
        q, s = pp.compress_embeddings(x, backend=backend, check_finite=True)
        qc, sc = pp.compress_embeddings(np.ones((rows, 0), np.float32), backend="cpu")
        assert q.shape == (rows, 0) and q.dtype == torch.int8
        np.testing.assert_array_equal(s.cpu().numpy(), sc)
        assert pp.l2_normalize(x, backend=backend).shape == (rows, 0)


@pytest.mark.triton
@settings(max_examples=8)
@given(st.integers(0, 20), st.integers(0, 70), st.integers(0, 2**32 - 1), st.booleans())
def test_triton_embeddings_equal_cpu(triton_device, rows, dim, seed, zero_row):
    _check_embeddings("triton", triton_device, _embedding_case(rows, dim, seed, zero_row))


@pytest.mark.triton
def test_triton_embedding_errors(triton_device):
    _check_embedding_errors("triton", triton_device)


@pytest.mark.cuda
@pytest.mark.gpu
@settings(max_examples=40)
@given(st.integers(0, 40), st.integers(0, 600), st.integers(0, 2**32 - 1), st.booleans())
def test_cuda_embeddings_equal_cpu(rows, dim, seed, zero_row):
    _check_embeddings("cuda", "cuda", _embedding_case(rows, dim, seed, zero_row))


@pytest.mark.cuda
@pytest.mark.gpu
def test_cuda_embedding_errors_and_strided_rows(rng):
    _check_embedding_errors("cuda", "cuda")
    x = rng.standard_normal((50, 300)).astype(np.float32)
    view = torch.from_numpy(x).cuda()[::2, 7:263]  # row stride != dim
    np.testing.assert_array_equal(pp.l2_normalize(view, backend="cuda").cpu().numpy(),
                                  pp.l2_normalize(np.ascontiguousarray(x[::2, 7:263]), backend="cpu"))


# ---------------------------------------------------------------- normalize fast path
def _check_flat(backend, device, rng, shapes, offsets=(0, 1), orders=("RGB", "BGR")):
    # No resize or crop, packed HWC -> NCHW: the flat path (CUDA: vector loads through shared
    # memory). Sizes give full tiles plus tails, misaligned bases (a 1-byte offset view, an out=
    # view at an odd element offset) and both channel counts: equal to the CPU backend.
    for n, h, w, c in shapes:
        flat = rng.integers(0, 256, n * h * w * c + 1, dtype=np.uint8)
        for off in offsets:
            x = flat[off:off + n * h * w * c].reshape(n, h, w, c)
            xt = torch.from_numpy(flat).to(device)[off:off + n * h * w * c].view(n, h, w, c)
            for dtype in ("float32", "float16", "bfloat16", "int8", "uint8"):
                for order in orders:
                    kw = dict(mean=MEAN[:c] if c == 3 else MEAN[0], std=STD[:c] if c == 3 else STD[0], dtype=dtype,
                              input_order=order)
                    if dtype == "int8":
                        kw["scale"] = 0.02
                    exp = pp.preprocess_images(np.ascontiguousarray(x), backend="cpu", **kw)
                    got = pp.preprocess_images(xt, backend=backend, **kw)
                    assert torch.equal(got.cpu(), torch.from_numpy(exp) if dtype != "bfloat16"
                                       else torch.from_numpy(exp.view(np.int16)).view(torch.bfloat16)), \
                        (n, h, w, c, off, dtype, order)
                    big = torch.zeros((n * c * h * w + 3,), dtype=got.dtype, device=device)
                    res = pp.preprocess_images(xt, backend=backend, out=big[3:].view(got.shape), **kw)
                    assert torch.equal(res.cpu(), got.cpu()) and not big[:3].any()


@pytest.mark.triton
def test_triton_normalize_flat_path_equals_cpu(triton_device, rng):
    # On a GPU each (dtype, channels, order, alignment) is a Triton compile: a lean set there.
    if triton_device == "cpu":
        _check_flat("triton", triton_device, rng, ((2, 5, 7, 3), (1, 40, 30, 1)))
    else:
        _check_flat("triton", triton_device, rng, ((3, 64, 70, 3), (1, 40, 30, 1)), offsets=(0,), orders=("BGR",))


@pytest.mark.cuda
@pytest.mark.gpu
def test_cuda_normalize_flat_path_equals_cpu(rng):
    _check_flat("cuda", "cuda", rng, ((3, 64, 70, 3), (2, 33, 17, 3), (2, 64, 64, 1), (1, 1, 5, 3), (4, 224, 224, 3)))


# ---------------------------------------------------------------- top-k (cuda), larger k and rows
@pytest.mark.cuda
@pytest.mark.gpu
@settings(max_examples=40)
@given(st.integers(1, 5), st.integers(1, 3000), st.integers(0, 2**32 - 1), st.integers(0, 20),
       st.sampled_from(["float32", "float16", "ties", "neginf"]))
def test_cuda_softmax_topk_small_and_large_k(rows, cols, seed, k, kind):
    # k <= 16 takes the single-pass register top-k, k > 16 the multi-pass kernel.
    rng = np.random.default_rng(seed)
    if kind == "ties":
        x = rng.integers(-3, 3, (rows, cols)).astype(np.float32)
    else:
        x = (rng.standard_normal((rows, cols)) * 5).astype(np.float32 if kind != "float16" else np.float16)
    if kind == "neginf":
        x[:, rng.integers(0, cols, max(1, cols // 2))] = -np.inf
        x[:, 0] = 1.0
    k = min(k, cols)
    xf = x.astype(np.float32)
    v, i = pp.softmax_topk(torch.from_numpy(x).cuda(), k, backend="cuda")
    pv, pi = ref.prepost_softmax_topk(xf, k)
    np.testing.assert_array_equal(i.cpu().numpy(), pi)
    np.testing.assert_allclose(v.cpu().numpy(), pv, rtol=2e-5, atol=1e-7)
    np.testing.assert_array_equal(pp.argmax(torch.from_numpy(x).cuda(), backend="cuda").cpu().numpy(),
                                  np.argmax(xf, axis=1))


# ---------------------------------------------------------------- batched NMS (cuda)
@st.composite
def nms_cases(draw):
    n = draw(st.integers(0, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    xy = rng.uniform(0, 60, (n, 2))
    wh = rng.uniform(0, 25, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    if n and draw(st.booleans()):
        boxes[rng.integers(0, n, n // 4)] = boxes[0]  # duplicates: IoU exactly 1
    scores = rng.choice(rng.uniform(0, 1, max(n // 3, 1)), n).astype(np.float32)  # ties on purpose
    idxs = rng.integers(0, draw(st.integers(1, 6)), n)
    return boxes, scores, idxs, draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))


@pytest.mark.cuda
@pytest.mark.gpu
@settings(max_examples=60)
@given(nms_cases())
def test_cuda_batched_nms_matches_oracle(case):
    boxes, scores, idxs, thr = case
    got = pp.batched_nms(torch.from_numpy(boxes).cuda(), torch.from_numpy(scores).cuda(),
                         torch.from_numpy(idxs).cuda(), thr, backend="cuda")
    assert got.is_cuda and got.dtype == torch.int64
    np.testing.assert_array_equal(got.cpu().numpy(), ref.prepost_batched_nms(boxes, scores, idxs, thr))


@pytest.mark.cuda
@pytest.mark.gpu
def test_cuda_batched_nms_large_and_errors(rng):
    # Thousands of boxes over many 64-box blocks and 1 or 80 classes, against the CPU backend.
    for n, ncls in ((3000, 1), (5000, 80)):
        xy = rng.uniform(0, 1000, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(5, 120, (n, 2))], axis=1).astype(np.float32)
        scores = rng.uniform(0, 1, n).astype(np.float32)
        idxs = rng.integers(0, ncls, n)
        got = pp.batched_nms(torch.from_numpy(boxes).cuda(), torch.from_numpy(scores).cuda(),
                             torch.from_numpy(idxs).cuda(), 0.5, backend="cuda")
        np.testing.assert_array_equal(got.cpu().numpy(), pp.batched_nms(boxes, scores, idxs, 0.5, backend="cpu"))
    # NMS always checks (its synchronization for the kept count brings the flag along): a NaN /
    # infinite coordinate or a NaN score anywhere (the flag is set inside the bitmask kernel).
    for pos in (0, 70, 129):
        bb = np.tile(np.array([[0, 0, 1, 1]], np.float32), (130, 1))
        ss = np.ones(130, np.float32)
        b1, b2, s3 = bb.copy(), bb.copy(), ss.copy()
        b1[pos, 3] = np.nan
        b2[pos, 0] = -np.inf
        s3[pos] = np.nan
        for b, s in ((b1, ss), (b2, ss), (bb, s3)):
            with pytest.raises(ValueError, match="NaN or infinity"):
                pp.batched_nms(torch.from_numpy(b).cuda(), torch.from_numpy(s).cuda(),
                               torch.zeros(130, dtype=torch.int64, device="cuda"), 0.5, backend="cuda")
    # +inf / -inf scores are valid (as on the CPU backend) and int32 classes are taken.
    sinf = torch.tensor([np.inf, 1.0, -np.inf], device="cuda")
    bx = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [5, 5, 6, 6]], dtype=torch.float32, device="cuda")
    got = pp.batched_nms(bx, sinf, torch.zeros(3, dtype=torch.int32, device="cuda"), 0.5, backend="cuda")
    np.testing.assert_array_equal(got.cpu().numpy(), pp.batched_nms(bx.cpu().numpy(), sinf.cpu().numpy(),
                                                                     np.zeros(3, np.int32), 0.5, backend="cpu"))
    empty = pp.batched_nms(torch.zeros((0, 4), device="cuda"), torch.zeros(0, device="cuda"),
                           torch.zeros(0, dtype=torch.int64, device="cuda"), 0.5, backend="cuda")
    assert empty.shape == (0,) and empty.is_cuda
    # With no backend named, CUDA tensors now run NMS and the embedding ops on the GPU.
    auto = pp.batched_nms(torch.from_numpy(boxes).cuda(), torch.from_numpy(scores).cuda(),
                          torch.from_numpy(idxs).cuda(), 0.5)
    assert auto.is_cuda
    q, s = pp.compress_embeddings(torch.randn(3, 40, device="cuda"))
    assert q.is_cuda and s.is_cuda and pp.l2_normalize(torch.randn(3, 40, device="cuda")).is_cuda


# ---------------------------------------------------------------- host path (runs everywhere)
def test_plan_cache_reuses_only_identical_arguments(rng):
    # Validated same-size batch plans are cached (the host time of a GPU call); a hit needs every
    # argument equal with the same types, and the images' checks run on every call.
    from pyperfcore.prepost import images as im

    x = rng.integers(0, 256, (2, 9, 11, 3), dtype=np.uint8)
    kw = dict(size=(6, 7), crop=5, mean=MEAN, std=STD, backend="cpu")
    im._PLAN_CACHE.clear()
    a = pp.preprocess_images(x, **kw)
    assert len(im._PLAN_CACHE) == 1
    np.testing.assert_array_equal(pp.preprocess_images(x, **kw), a)
    assert len(im._PLAN_CACHE) == 1
    with pytest.raises(ValueError, match="crop"):
        pp.preprocess_images(x, **dict(kw, crop=5.0))
    with pytest.raises(TypeError, match="uint8"):
        pp.preprocess_images(x.astype(np.int16), **kw)
    for change in (dict(mean=np.array(MEAN, np.float32)), dict(layout="NHWC"), dict(dtype="float16"),
                   dict(input_order="BGR"), dict(crop=(4, 6)), dict(size=8), dict(antialias=False)):
        for imgs in (x, x[:1], np.ascontiguousarray(x[:, :8])):
            got = pp.preprocess_images(imgs, **dict(kw, **change))
            im._PLAN_CACHE.clear()
            np.testing.assert_array_equal(got, pp.preprocess_images(imgs, **dict(kw, **change)))
            np.testing.assert_allclose(got.astype(np.float32), pp.preprocess_images(
                imgs, **dict(kw, **change, backend="reference")).astype(np.float32), rtol=1e-3, atol=1e-3)


def test_check_finite_on_cpu_backends_always_raises():
    # check_finite only changes the GPU backends; the CPU ones raise on bad values either way.
    x = np.random.default_rng(1).standard_normal((3, 20)).astype(np.float32)
    x[1, 4] = np.nan
    for flag in (False, True):
        for backend in ("cpu", "reference", None):
            with pytest.raises(ValueError, match="NaN"):
                pp.softmax_topk(x, 2, backend=backend, check_finite=flag)
            with pytest.raises(ValueError, match="NaN"):
                pp.softmax(x, backend=backend, check_finite=flag)
            with pytest.raises(ValueError, match="NaN"):
                pp.argmax(x, backend=backend, check_finite=flag)
            with pytest.raises(ValueError, match="NaN or infinity"):
                pp.l2_normalize(x, backend=backend, check_finite=flag)
            with pytest.raises(ValueError, match="NaN or infinity"):
                pp.compress_embeddings(torch.from_numpy(x), backend=backend, check_finite=flag)
    good = np.abs(x[[0, 2]])
    np.testing.assert_array_equal(pp.l2_normalize(good, check_finite=True), pp.l2_normalize(good))


class _EmulatedNmsKernels:
    """The two NMS kernels (bitmask + sequential pass) as a numpy greedy pass over the sorted
    boxes, written through the raw pointers the launcher passes: with it the cuda backend's
    Python glue (sorts, score ranks, class ends, the scratch layout, the count / flag read-back
    and the final ordering) runs on CPU tensors here."""

    @staticmethod
    def _arr(ptr, n, dt):
        import ctypes

        return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(np.ctypeslib.as_ctypes_type(dt))), shape=(n,))

    def prepost_nms(self, boxes, scores, classes, class_end, n, thr, mask, removed, keep, count, stream):
        b = self._arr(boxes, 4 * n, np.float32).reshape(n, 4).copy()
        s = self._arr(scores, n, np.float32).copy()
        c = self._arr(classes, n, np.int64).copy()
        e = self._arr(class_end, n, np.int64)
        assert (np.diff(c) >= 0).all()  # sorted by class
        np.testing.assert_array_equal(e, np.searchsorted(c, c, side="right"))
        # greedy in position order (the kernels' order): the oracle with scores falling by position
        kept = ref.prepost_batched_nms(b, -np.arange(n, dtype=np.float32), c, thr) if n else []
        self._arr(keep, n, np.int64)[:len(kept)] = kept
        cnt = self._arr(count, 2, np.int32)
        cnt[0], cnt[1] = len(kept), int(not np.isfinite(b).all() or np.isnan(s).any())


def test_cuda_nms_glue_with_emulated_kernels(monkeypatch):
    from pyperfcore import _backends
    from pyperfcore.prepost import _gpu, detection

    monkeypatch.setitem(_backends._CHECKS, "cuda", lambda: None)
    monkeypatch.setattr(_backends, "device_of", lambda x: "cuda" if isinstance(x, torch.Tensor) else "cpu")
    monkeypatch.setattr(_gpu, "_get_device", lambda: -1)
    monkeypatch.setattr(_gpu, "_raw_stream", lambda i: 0)
    monkeypatch.setattr(detection, "_torch", torch)
    monkeypatch.setattr(detection, "_cuda", _EmulatedNmsKernels())
    rng = np.random.default_rng(0)
    for trial in range(40):
        n = int(rng.integers(1, 150))
        xy = rng.uniform(0, 50, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(1, 30, (n, 2))], 1).astype(np.float32)
        # integer scores: many ties, which must come out by lower index
        scores = (rng.integers(0, 8, n) if trial % 2 else rng.uniform(0, 1, n)).astype(np.float32)
        idxs = rng.integers(0, int(rng.integers(1, 6)), n).astype(np.int32 if trial % 3 else np.int64)
        got = pp.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs), 0.4,
                             backend="cuda")
        np.testing.assert_array_equal(got.numpy(), ref.prepost_batched_nms(boxes, scores, idxs, 0.4))
    boxes[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        pp.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs), 0.4, backend="cuda")


class _EmulatedPostKernels:
    """prepost_embed / prepost_topk / prepost_preprocess with the bindings' argument order,
    computed by the CPU backend through the raw pointers (float32 rows, contiguous outputs)."""

    _arr = staticmethod(_EmulatedNmsKernels._arr)

    def prepost_embed(self, x, rows, dim, row_stride, eps, normalize, out, q, scales, bad, stream):
        a = self._arr(x, (rows - 1) * row_stride + dim, np.float32)
        a = np.stack([a[r * row_stride:r * row_stride + dim] for r in range(rows)])
        finite = np.isfinite(a).all(axis=1)
        if bad:
            self._arr(bad, rows, np.int32)[:] = ~finite
        good = np.where(finite[:, None], a, 0).astype(np.float32)
        if out:
            o = pp.l2_normalize(good, eps, backend="cpu")
            o[~finite] = np.nan
            self._arr(out, rows * dim, np.float32)[:] = o.reshape(-1)
        if q:
            qq, ss = pp.compress_embeddings(good, bool(normalize), eps, backend="cpu")
            qq[~finite], ss[~finite] = 0, np.nan
            self._arr(q, rows * dim, np.int8)[:] = qq.reshape(-1)
            self._arr(scales, rows, np.float32)[:] = ss

    def prepost_topk(self, x, dtype, rows, cols, row_stride, scales, n_scales, k, softmax, values, indices, bad, stream):
        assert dtype == 0 and scales == 0 and n_scales == 0
        a = self._arr(x, (rows - 1) * row_stride + cols, np.float32)
        a = np.stack([a[r * row_stride:r * row_stride + cols] for r in range(rows)])
        ok = ~np.isnan(a).any(axis=1)
        v, i = pp.softmax_topk(np.where(ok[:, None], a, 0).astype(np.float32), k, backend="cpu")
        if not softmax:
            v = np.take_along_axis(a, i, axis=1)
        v[~ok], i[~ok] = np.nan, -1
        if bad:
            self._arr(bad, rows, np.int32)[:] = ~ok
        self._arr(values, rows * k, np.float32)[:] = v.reshape(-1)
        self._arr(indices, rows * k, np.int64)[:] = i.reshape(-1)


def test_cuda_embed_topk_glue_with_emulated_kernels(monkeypatch, rng):
    # The launchers pass the bindings' arguments in their order, allocate the outputs, skip the
    # flags without check_finite, and raise with it.
    from pyperfcore import _backends
    from pyperfcore.prepost import _gpu, classify, embeddings

    fake = _EmulatedPostKernels()
    monkeypatch.setitem(_backends._CHECKS, "cuda", lambda: None)
    monkeypatch.setattr(_backends, "device_of", lambda x: "cuda" if isinstance(x, torch.Tensor) else "cpu")
    monkeypatch.setattr(_gpu, "_get_device", lambda: -1)
    monkeypatch.setattr(_gpu, "_raw_stream", lambda i: 0)
    monkeypatch.setattr(embeddings, "_torch", torch)
    monkeypatch.setattr(embeddings, "_cuda", fake)
    monkeypatch.setattr(classify, "_torch", torch)
    monkeypatch.setattr(classify, "_cuda", fake)
    monkeypatch.setitem(classify._CODES, torch.float32, 0)
    x = rng.standard_normal((7, 40)).astype(np.float32)
    view = torch.from_numpy(x)[:, 3:35]  # row stride 40, dim 32
    xc = np.ascontiguousarray(x[:, 3:35])
    np.testing.assert_array_equal(pp.l2_normalize(view, backend="cuda").numpy(), pp.l2_normalize(xc, backend="cpu"))
    for norm in (True, False):
        q, s = pp.compress_embeddings(view, normalize=norm, backend="cuda")
        qc, sc = pp.compress_embeddings(xc, normalize=norm, backend="cpu")
        np.testing.assert_array_equal(q.numpy(), qc)
        np.testing.assert_array_equal(s.numpy(), sc)
    v, i = pp.softmax_topk(view, 3, backend="cuda")
    cv, ci = pp.softmax_topk(xc, 3, backend="cpu")
    np.testing.assert_array_equal(i.numpy(), ci)
    np.testing.assert_array_equal(v.numpy(), cv)
    np.testing.assert_array_equal(pp.argmax(view, backend="cuda").numpy(), np.argmax(xc, axis=1))
    xn = x.copy()
    xn[2, 10] = np.nan
    bad = torch.from_numpy(xn)[:, 3:35]
    assert np.isnan(pp.l2_normalize(bad, backend="cuda", check_finite=False).numpy()[2]).all()
    with pytest.raises(ValueError, match="NaN or infinity"):  # the default checks
        pp.l2_normalize(bad, backend="cuda")
    with pytest.raises(ValueError, match="NaN or infinity"):
        pp.compress_embeddings(bad, backend="cuda", check_finite=True)
    v, i = pp.softmax_topk(bad, 3, backend="cuda", check_finite=False)
    assert (i.numpy()[2] == -1).all() and (i.numpy()[[0, 1, 3]] == ci[[0, 1, 3]]).all()
    with pytest.raises(ValueError, match="NaN"):
        pp.softmax_topk(bad, 3, backend="cuda", check_finite=True)


def test_cuda_preprocess_launch_arguments(monkeypatch, rng):
    # The cuda launcher passes the binding's arguments in its order, and a repeated call (plan
    # cache hit) passes the same ones, including the cached tap-table pointers.
    from pyperfcore import _backends
    from pyperfcore.prepost import _gpu, images

    calls = []

    class Rec:
        def prepost_preprocess(self, *a):
            calls.append(a)

    monkeypatch.setitem(_backends._CHECKS, "cuda", lambda: None)
    monkeypatch.setattr(_backends, "device_of", lambda x: "cuda" if isinstance(x, torch.Tensor) else "cpu")
    monkeypatch.setattr(_gpu, "_get_device", lambda: -1)
    monkeypatch.setattr(_gpu, "_raw_stream", lambda i: 1234)
    monkeypatch.setattr(images, "_cuda", Rec())
    x = torch.from_numpy(rng.integers(0, 256, (2, 20, 30, 3), dtype=np.uint8))
    out = torch.empty((2, 3, 20, 30))
    for _ in range(2):
        pp.preprocess_images(x, mean=MEAN, std=STD, out=out, input_order="BGR", backend="cuda")
    a = calls[-1]
    assert calls[0] == a and len(a) == 21
    assert a[0] == x.data_ptr() and tuple(a[1]) == (2, 20, 30, 3) and tuple(a[2]) == x.stride()
    assert a[3] == out.data_ptr() and a[4] == 0 and (a[5], a[6]) == (20, 30) and tuple(a[7]) == out.stride()
    np.testing.assert_allclose(a[8], MEAN, rtol=1e-6)
    np.testing.assert_allclose(a[9], 1 / np.float32(STD), rtol=1e-6)
    assert a[10] is True and a[11] == 1.0 and (a[12], a[13]) == (0, 0) and a[14:20] == (0, 0, 0, 0, 0, 0)
    assert a[20] == 1234  # the stream, last
    calls.clear()
    res = pp.preprocess_images(x, size=(10, 16), crop=(8, 12), mean=MEAN, std=STD, layout="NHWC", dtype="float16",
                               backend="cuda")
    assert res.shape == (2, 8, 12, 3) and res.dtype == torch.float16
    a = calls[-1]
    assert a[4] == 1 and (a[5], a[6]) == (8, 12) and a[10] is False
    st = res.stride()
    assert tuple(a[7]) == (st[0], st[3], st[1], st[2])  # (n, c, h, w) element strides
    assert all(a[i] != 0 for i in (14, 15, 17, 18)) and a[16] >= 2 and a[19] >= 2  # tap tables and counts
