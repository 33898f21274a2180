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


# ------------------------------------------------------------------ classification: each CPU target
# The C++ top-k has three row paths (the fused scan for 1 <= k <= the target's lanes: 8 for scalar
# and AVX2, 16 for AVX-512; the next_greater walk for k = 0 and larger k; softmax rows), a lean
# Python path for 2-D float32 numpy input, and vector tails at every row length: the strategy
# below reaches all of them with values that stress the threshold filter (ties, -inf, offsets
# far from 0).
@st.composite
def hard_logits(draw):
    rows = draw(st.integers(0, 7))
    cols = draw(st.sampled_from([1, 2, 3, 7, 15, 16, 17, 31, 32, 33, 63, 100, 257, 1000]) | st.integers(1, 600))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["normal", "ties", "offset", "neginf", "int8", "float16", "ascending"]))
    if kind == "int8":
        q = rng.integers(-128, 128, (rows, cols), dtype=np.int8)
        s = rng.uniform(0.01, 0.5, cols).astype(np.float32) if draw(st.booleans()) else np.float32(rng.uniform(0.01, 0.5))
        return q, s, q.astype(np.float32) * s
    if kind == "ties":
        x = rng.integers(-2, 3, (rows, cols)).astype(np.float32)
    elif kind == "offset":  # large magnitudes: x - max must stay exact
        x = (rng.standard_normal((rows, cols)) * rng.uniform(0.1, 30) + rng.choice([-3e4, 1e3, 3e4])).astype(np.float32)
    elif kind == "ascending":  # the maximum at the end: every lane maximum moves late
        x = np.sort(rng.standard_normal((rows, cols)).astype(np.float32), axis=1)
    else:
        x = (rng.standard_normal((rows, cols)) * rng.uniform(0.01, 40)).astype(np.float32)
    if kind == "neginf" and cols > 1:  # masked classes, never a whole row
        x[rng.random((rows, cols)) < 0.5] = -np.inf
        x[:, rng.integers(0, cols)] = rng.standard_normal(rows).astype(np.float32)
    if kind == "float16":
        x = np.clip(x, -6e4, 6e4).astype(np.float16)
        return x, None, x.astype(np.float32)
    return x, None, x


def _k_for(data, cols):
    return data.draw(st.sampled_from(sorted({0, 1, min(2, cols), min(5, cols), min(8, cols), min(9, cols), min(16, cols),
                                            min(17, cols), cols})) | st.integers(0, cols))


@given(hard_logits(), st.data())
def test_softmax_topk_matches_oracle_on_every_target(cpu_target, case, data):
    x, s, xf = case
    k = _k_for(data, xf.shape[1])
    pv, pi = ref.prepost_softmax_topk(xf, k)
    for backend in (None, "cpu"):  # None takes the lean path for float32 numpy
        v, i = pp.softmax_topk(x, k, scale=s, backend=backend)
        assert v.shape == i.shape == (xf.shape[0], k) and v.dtype == np.float32 and i.dtype == np.int64
        np.testing.assert_array_equal(i, pi, err_msg=f"{cpu_target} {backend} k={k}")
        # Probabilities: 2-ulp exps of the top values over a sum good to ~2e-7 (docs/prepost.md).
        np.testing.assert_allclose(v, pv, rtol=1e-6, atol=1e-38, err_msg=f"{cpu_target} {backend} k={k}")
    if xf.shape[0]:
        np.testing.assert_array_equal(pp.argmax(x, scale=s), np.argmax(xf, axis=1))
        v, i = pp.softmax_topk(x, k, scale=s)
        np.testing.assert_array_equal(pp.softmax_topk(x[0], k, scale=s)[1], i[0])  # 1-D input


@given(hard_logits())
def test_softmax_and_log_softmax_accuracy_on_every_target(cpu_target, case):
    x, s, xf = case
    if xf.size == 0:
        return
    # Each element carries the float rounding of x - max, as torch's and numpy's float32 softmax
    # do: a relative |x - max| * 2^-24 on top of the few ulp of the exp and the scaling.
    dist = np.abs(xf.astype(np.float64) - xf.max(axis=1, keepdims=True))
    dist[~np.isfinite(dist)] = 0
    for backend in (None, "cpu"):
        got = pp.softmax(x, scale=s, backend=backend)
        want = ref.prepost_softmax(xf)
        assert (np.abs(got - want) <= want * (1e-6 + dist * 6e-8) + 1e-38).all(), f"{cpu_target} {backend}"
        lg = pp.log_softmax(x, scale=s, backend=backend)
        want = ref.prepost_log_softmax(xf)
        finite = np.isfinite(want)
        np.testing.assert_array_equal(np.isfinite(lg), finite)
        np.testing.assert_allclose(lg[finite], want[finite], rtol=1e-6, atol=2e-6, err_msg=f"{cpu_target}")


@pytest.mark.parametrize("where", ["first", "middle", "tail", "last"])
def test_bad_logits_are_found_anywhere_on_every_target(cpu_target, where):
    for cols in (5, 16, 33, 1000):
        pos = {"first": 0, "middle": cols // 2, "tail": cols - 1 - (cols % 16) // 2, "last": cols - 1}[where]
        for bad, msg in ((np.nan, "NaN"), (np.inf, r"\+inf")):
            x = np.random.default_rng(cols).standard_normal((4, cols)).astype(np.float32)
            x[2, pos] = bad
            for k in (1, 3, min(cols, 20)):
                with pytest.raises(ValueError, match=msg):
                    pp.softmax_topk(x, k)
            with pytest.raises(ValueError, match=msg):
                pp.softmax(x)
            with pytest.raises(ValueError, match=msg):
                pp.log_softmax(x)
            with pytest.raises(ValueError, match=msg):
                pp.argmax(x)
    allneg = np.full((2, 40), -np.inf, np.float32)
    allneg[0, 3] = 1.0
    with pytest.raises(ValueError, match="all -inf"):
        pp.softmax_topk(allneg, 2)
    with pytest.raises(ValueError, match="all -inf"):
        pp.softmax(allneg)
    # Without softmax an all -inf row is ordered like any other: the first index wins.
    assert list(pp.argmax(allneg)) == [3, 0]


def test_topk_argument_errors_and_layouts():
    x = np.random.default_rng(0).standard_normal((6, 40)).astype(np.float32)
    for bad_k in (41, -1):
        with pytest.raises(ValueError, match=f"k = {bad_k}"):
            pp.softmax_topk(x, bad_k)
    with pytest.raises(TypeError, match="k must be an int"):
        pp.softmax_topk(x, 2.0)
    with pytest.raises(TypeError, match="k must be an int"):
        pp.softmax_topk(x, True)
    with pytest.raises(TypeError, match="float32"):
        pp.softmax_topk(x.astype(np.float64), 2)
    with pytest.raises(ValueError, match="2-D"):
        pp.softmax_topk(x.reshape(2, 3, 40), 2)
    with pytest.raises(TypeError, match="numpy"):
        pp.softmax_topk(x.tolist(), 2)
    with pytest.raises(ValueError, match="scale"):
        pp.softmax_topk(x, 2, scale=0.5)
    v, i = pp.softmax_topk(x, 0)
    assert v.shape == i.shape == (6, 0)
    v, i = pp.softmax_topk(np.zeros((3, 0), np.float32), 0)
    assert v.shape == (3, 0)
    # Strided, reversed and Fortran-ordered views give the contiguous copy's answer.
    want = ref.prepost_softmax_topk(x, 4)
    for view in (x[::2], x[::-1], np.asfortranarray(x), x[:, ::2], x.T.copy().T):
        wv, wi = ref.prepost_softmax_topk(np.ascontiguousarray(view), 4)
        v, i = pp.softmax_topk(view, 4)
        np.testing.assert_array_equal(i, wi)
        np.testing.assert_allclose(v, wv, rtol=1e-6)
    np.testing.assert_array_equal(pp.softmax_topk(x, 4)[1], want[1])


def test_lean_path_skips_backend_selection(monkeypatch):
    from pyperfcore import _backends

    x = np.random.default_rng(1).standard_normal((8, 100)).astype(np.float32)
    pp.softmax_topk(x, 5)  # caches the native module

    def refuse(*a, **kw):
        raise AssertionError("the lean path must not select a backend")

    monkeypatch.setattr(_backends, "select", refuse)
    v, i = pp.softmax_topk(x, 5)
    np.testing.assert_array_equal(i, ref.prepost_softmax_topk(x, 5)[1])
    np.testing.assert_array_equal(pp.argmax(x), np.argmax(x, axis=1))
    pp.softmax(x), pp.log_softmax(x)
    q = np.clip(np.rint(x * 20), -127, 127).astype(np.int8)
    for sc in (0.05, np.float32(0.05), 1):  # int8 with one scale as a number: lean too
        np.testing.assert_array_equal(pp.softmax_topk(q, 5, scale=sc)[1], ref.prepost_softmax_topk(q * np.float32(sc), 5)[1])
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale"):
            pp.softmax_topk(q, 5, scale=bad)
    np.testing.assert_array_equal(pp.argmax(x.astype(np.float16)), np.argmax(x.astype(np.float16), axis=1))
    with pytest.raises(AssertionError):  # anything else still goes through select
        pp.softmax_topk(np.asfortranarray(x), 5)
    with pytest.raises(AssertionError):
        pp.softmax_topk(q, 5, scale=np.full(100, 0.05, np.float32))


def test_topk_threads_split_large_batches():
    """Above 2^18 values the rows are split into tasks; results equal the single-thread ones."""
    x = np.random.default_rng(2).standard_normal((600, 1000)).astype(np.float32) * 4
    one = pyperfcore.get_num_threads()
    try:
        pyperfcore.set_num_threads(1)
        v1, i1 = pp.softmax_topk(x, 5)
        pyperfcore.set_num_threads(2)
        v2, i2 = pp.softmax_topk(x, 5)
    finally:
        pyperfcore.set_num_threads(one)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(v1, v2)
    x[599, 999] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        pp.softmax_topk(x, 5)


def test_wide_rows_keep_float_accuracy(cpu_target):
    """Vocabulary-sized rows: the vector partial sums are flushed into a double every 2048 values,
    so the sum's rounding does not grow with the row (128k classes measured 1.6e-7, 4e-6 before)."""
    x = (np.random.default_rng(7).standard_normal((2, 70001)) * 3).astype(np.float32)
    xd = x.astype(np.float64)
    lse = xd.max(axis=1, keepdims=True) + np.log(np.exp(xd - xd.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True))
    for k in (5, 20):
        v, i = pp.softmax_topk(x, k)
        np.testing.assert_array_equal(i, ref.prepost_softmax_topk(x, k)[1])
        np.testing.assert_allclose(v, np.exp(np.take_along_axis(xd, i, 1) - lse), rtol=1e-6)
    np.testing.assert_allclose(pp.log_softmax(x), xd - lse, rtol=0, atol=3e-6)
    top = np.argsort(-x, axis=1)[:, :50]
    np.testing.assert_allclose(np.take_along_axis(pp.softmax(x), top, 1), np.exp(np.take_along_axis(xd, top, 1) - lse),
                               rtol=1e-6)
