"""The CUDA pre/post-processing kernels (kernels/cuda/prepost.cu, prepost_post.cu) on the CPU:
the same sources built by the host compiler against the device emulation (tests/cuda_emu/),
called through the real Python CUDA backends (the launchers' glue, scratch layouts, read-backs)
on CPU tensors, with the checks the GPU tests make on a device: the oracle or the CPU backend,
bit for bit where the GPU tests demand it. On a GPU, tests/prepost/test_gpu.py runs the compiled
kernels themselves."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyperfcore import prepost as pp
from tests import reference as ref
from tests.prepost import test_gpu as g

torch = pytest.importorskip("torch")


@pytest.fixture
def emulated(monkeypatch):
    from pyperfcore import _backends
    from pyperfcore.prepost import _gpu, classify, detection, embeddings, images
    from tests.cuda_emu import EmulatedCuda, library

    lib = library()
    if isinstance(lib, str):
        pytest.skip(lib)
    fake = EmulatedCuda(lib)
    monkeypatch.setitem(_backends._CHECKS, "cuda", lambda: None)
    select = _backends.select

    def select_emulated(op, x, backend):  # backend="cuda" takes CPU tensors here; the rest as usual
        return _backends._REGISTRY[op]["cuda"].fn if backend == "cuda" else select(op, x, backend)

    monkeypatch.setattr(_backends, "select", select_emulated)
    monkeypatch.setattr(_gpu, "_get_device", lambda: -1)
    monkeypatch.setattr(_gpu, "_raw_stream", lambda i: 0)
    for mod in (classify, detection, embeddings):
        monkeypatch.setattr(mod, "_torch", torch)
        monkeypatch.setattr(mod, "_cuda", fake)
    monkeypatch.setattr(images, "_cuda", fake)
    for dt, code in ((torch.float32, 0), (torch.float16, 1), (torch.int8, 2)):
        monkeypatch.setitem(classify._CODES, dt, code)
    return fake


@settings(max_examples=25, deadline=None)
@given(g.image_cases())
def test_emulated_cuda_preprocess_matches_oracle(emulated, case):
    g._check_images("cuda", "cpu", case)
    assert emulated.calls and set(emulated.calls) == {"preprocess"}


def test_emulated_cuda_preprocess_dtypes_flat_and_errors(emulated, rng):
    g._check_dtypes("cuda", "cpu", rng)
    g._check_uint8_resize("cuda", "cpu", rng)
    g._check_flat("cuda", "cpu", rng, ((2, 33, 17, 3), (2, 16, 16, 1), (1, 1, 5, 3)))
    assert "preprocess" in emulated.calls


@settings(max_examples=30, deadline=None)
@given(g.logit_cases(), st.integers(0, 20))
def test_emulated_cuda_softmax_topk(emulated, case, k):
    """k <= 16: the register top-k; k > 16: the multi-pass kernel; float32, float16, int8 with
    scales, ties."""
    g._check_topk("cuda", "cpu", case, k)


def test_emulated_cuda_topk_errors_and_wide_rows(emulated, rng):
    g._check_topk_errors("cuda", "cpu")
    x = (rng.standard_normal((3, 3000)) * 4).astype(np.float32)
    for k in (5, 20):
        v, i = pp.softmax_topk(torch.from_numpy(x), k, backend="cuda")
        pv, pi = ref.prepost_softmax_topk(x, k)
        np.testing.assert_array_equal(i.numpy(), pi)
        np.testing.assert_allclose(v.numpy(), pv, rtol=2e-5, atol=1e-9)
    assert set(emulated.calls) == {"topk"}


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 5), st.sampled_from([1, 7, 16, 33, 100, 128, 129, 256, 300, 512, 700, 1024, 1100]),
       st.integers(0, 2**32 - 1), st.booleans())
def test_emulated_cuda_embeddings_equal_cpu(emulated, rows, dim, seed, zero_row):
    """Every embedding kernel (the register kernels for dim <= 128, 256, 512, 1024 and the
    general one above) against the CPU backend, bit for bit."""
    x = (np.random.default_rng(seed).standard_normal((rows, dim)) * 3).astype(np.float32)
    if zero_row and rows:
        x[0] = 0
    g._check_embeddings("cuda", "cpu", x)


def test_emulated_cuda_embedding_errors(emulated):
    g._check_embedding_errors("cuda", "cpu")
    assert "embed" in emulated.calls


@settings(max_examples=25, deadline=None)
@given(g.nms_cases())
def test_emulated_cuda_batched_nms_matches_oracle(emulated, case):
    boxes, scores, idxs, thr = case
    got = pp.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs), thr, backend="cuda")
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), ref.prepost_batched_nms(boxes, scores, idxs, thr))
    if len(boxes):
        assert emulated.calls[-1] == "nms"


def test_emulated_cuda_batched_nms_many_blocks_and_errors(emulated, rng):
    n = 200  # four 64-box blocks: the cross-block suppression words
    xy = rng.uniform(0, 40, (n, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 20, (n, 2))], 1).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    for ncls in (1, 3):
        idxs = rng.integers(0, ncls, n)
        got = pp.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs), 0.3,
                             backend="cuda")
        np.testing.assert_array_equal(got.numpy(), ref.prepost_batched_nms(boxes, scores, idxs, 0.3))
    boxes[7, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or infinity"):
        pp.batched_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(idxs), 0.3, backend="cuda")
