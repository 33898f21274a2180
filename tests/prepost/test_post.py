"""Post-processing ops (classification, embeddings, NMS) against the numpy oracles."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyperfcore
from pyperfcore import prepost as pp
from tests import reference as ref

TARGETS = pyperfcore.build_info()["cpu_targets_supported"]
BACKENDS = ["reference", "cpu"]


@st.composite
def logits(draw):
    rows, cols = draw(st.integers(0, 6)), draw(st.integers(1, 300))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["float32", "float16", "int8", "ties"]))
    if kind == "int8":
        q = rng.integers(-128, 128, (rows, cols), dtype=np.int8)
        scale = draw(st.sampled_from(["one", "per"]))
        s = np.float32(rng.uniform(0.01, 0.2)) if scale == "one" else rng.uniform(0.01, 0.2, cols).astype(np.float32)
        return q, s, q.astype(np.float32) * s
    if kind == "ties":
        x = rng.integers(-3, 3, (rows, cols)).astype(np.float32)
        return x, None, x
    x = (rng.standard_normal((rows, cols)) * rng.uniform(0.1, 20)).astype(kind)
    return x, None, x.astype(np.float32)


@given(logits(), st.data())
def test_softmax_topk_every_backend_and_target(case, data):
    x, s, xf = case
    k = data.draw(st.integers(0, min(xf.shape[1], 12)))
    pv, pi = ref.prepost_softmax_topk(xf, k)
    for backend in BACKENDS:
        for t in TARGETS if backend == "cpu" else [None]:
            if t:
                pyperfcore.set_cpu_target(t)
            v, i = pp.softmax_topk(x, k, scale=s, backend=backend)
            np.testing.assert_array_equal(i, pi, err_msg=f"{backend} {t}")
            np.testing.assert_allclose(v, pv, rtol=2e-5, atol=1e-7, err_msg=f"{backend} {t}")
            assert v.dtype == np.float32 and i.dtype == np.int64
            am = pp.argmax(x, scale=s, backend=backend)
            if xf.shape[0]:
                np.testing.assert_array_equal(am, np.argmax(xf, axis=1))
    pyperfcore.set_cpu_target(TARGETS[-1])


@given(logits())
def test_softmax_log_softmax_sigmoid(case):
    x, s, xf = case
    if xf.shape[0] == 0:
        return
    for backend in BACKENDS:
        for t in TARGETS if backend == "cpu" else [None]:
            with pyperfcore.cpu_target(t or TARGETS[-1]):
                np.testing.assert_allclose(pp.softmax(x, scale=s, backend=backend), ref.prepost_softmax(xf),
                                           rtol=2e-5, atol=1e-7)
                np.testing.assert_allclose(pp.log_softmax(x, scale=s, backend=backend), ref.prepost_log_softmax(xf),
                                           rtol=1e-5, atol=2e-5)
                for thr in (0.05, 0.5, 0.9):
                    got = pp.sigmoid_threshold(x, thr, scale=s, backend=backend)
                    assert got.dtype == np.bool_
                    np.testing.assert_array_equal(got, ref.prepost_sigmoid_threshold(xf, thr))


def test_argmax_labels_and_1d():
    x = np.array([[0.1, 3.0, 3.0], [5.0, -1.0, 2.0]], dtype=np.float32)
    assert list(pp.argmax(x, labels=["cat", "dog", "eel"])) == ["dog", "cat"]
    v, i = pp.softmax_topk(x[0], 2)
    assert list(i) == [1, 2] and v.shape == (2,)


@pytest.mark.parametrize("backend", BACKENDS)
def test_classify_bad_input(backend):
    x = np.zeros((2, 5), np.float32)
    with pytest.raises(ValueError, match="k = 6"):
        pp.softmax_topk(x, 6, backend=backend)
    bad = x.copy()
    bad[1, 3] = np.nan
    for fn in (lambda: pp.softmax_topk(bad, 2, backend=backend), lambda: pp.softmax(bad, backend=backend),
               lambda: pp.sigmoid_threshold(bad, backend=backend), lambda: pp.log_softmax(bad, backend=backend)):
        with pytest.raises(ValueError, match="NaN"):
            fn()
    with pytest.raises(ValueError, match="scale"):
        pp.softmax_topk(x.astype(np.int8), 1, backend=backend)
    with pytest.raises(TypeError, match="float32"):
        pp.softmax_topk(x.astype(np.float64), 1, backend=backend)
    with pytest.raises(ValueError, match="inf"):
        pp.softmax(np.full((1, 3), -np.inf, np.float32), backend=backend)
    v, i = pp.softmax_topk(np.zeros((0, 5), np.float32), 3, backend=backend)
    assert v.shape == (0, 3) and i.shape == (0, 3)


@settings(max_examples=40)
@given(st.integers(0, 20), st.integers(1, 200), st.integers(0, 2**32 - 1), st.booleans())
def test_embeddings(rows, dim, seed, zero_row):
    x = (np.random.default_rng(seed).standard_normal((rows, dim)) * 3).astype(np.float32)
    if zero_row and rows:
        x[0] = 0
    for backend in BACKENDS:
        for t in TARGETS if backend == "cpu" else [None]:
            with pyperfcore.cpu_target(t or TARGETS[-1]):
                np.testing.assert_allclose(pp.l2_normalize(x, backend=backend), ref.prepost_l2_normalize(x),
                                           rtol=1e-5, atol=1e-7)
                q, s = pp.compress_embeddings(x, backend=backend)
                rq, rs = ref.prepost_compress(x)
                np.testing.assert_allclose(s, rs, rtol=1e-5)
                assert np.abs(q.astype(int) - rq).max(initial=0) <= 1  # float32 vs float64 at rounding ties
                assert (q == rq).mean() > 0.99 if q.size > 100 else True
                deq = pp.decompress_embeddings(q, s)
                assert np.abs(deq - ref.prepost_l2_normalize(x)).max(initial=0) <= s.max(initial=0) * 0.5 + 1e-6
    with pytest.raises(ValueError, match="NaN"):
        pp.l2_normalize(np.full((2, 3), np.nan, np.float32))
    with pytest.raises(TypeError):
        pp.l2_normalize(x.astype(np.float64))


@st.composite
def detections(draw):
    n = draw(st.integers(0, 60))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    xy = rng.uniform(0, 50, (n, 2))
    wh = rng.uniform(0, 20, (n, 2))
    boxes = np.concatenate([xy, xy + wh], axis=1).astype(np.float32)
    scores = rng.choice(rng.uniform(0, 1, max(n // 2, 1)), n).astype(np.float32)  # ties on purpose
    idxs = rng.integers(0, draw(st.integers(1, 4)), n)
    return boxes, scores, idxs, draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))


@given(detections())
def test_batched_nms(case):
    boxes, scores, idxs, thr = case
    expect = ref.prepost_batched_nms(boxes, scores, idxs, thr)
    for backend in BACKENDS:
        np.testing.assert_array_equal(pp.batched_nms(boxes, scores, idxs, thr, backend=backend), expect)


def test_batched_nms_classes_do_not_interact_and_errors():
    b = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], np.float32)
    s = np.array([0.9, 0.8, 0.7], np.float32)
    assert list(pp.batched_nms(b, s, np.array([0, 0, 1]), 0.5)) == [0, 2]
    with pytest.raises(ValueError, match="NaN"):
        pp.batched_nms(b, np.array([np.nan, 0, 0], np.float32), np.zeros(3, int), 0.5)
    with pytest.raises(ValueError):
        pp.batched_nms(b[:, :3], s, np.zeros(3, int), 0.5)
    assert pp.batched_nms(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, int), 0.5).size == 0
