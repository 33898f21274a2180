"""Benchmarks of the fused pre/post-processing ops against numpy, torch, Pillow and OpenCV.

Run: python -m pytest benchmarks/bench_prepost.py --benchmark-only -p no:cacheprovider
Correctness is asserted before timing; every group holds ours and the peers of one run.
torch.compile is timed only with PYPERFCORE_BENCH_COMPILE=1 (its first compile takes a while).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from pyperfcore import prepost as pp

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


@pytest.fixture(scope="module")
def batch224():
    return np.random.default_rng(0).integers(0, 256, (32, 224, 224, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def batch256():
    return np.random.default_rng(1).integers(0, 256, (32, 256, 256, 3), dtype=np.uint8)


def _numpy_chain(x):
    return np.ascontiguousarray(((x.astype(np.float32) - MEAN) / STD).transpose(0, 3, 1, 2))


# ------------------------------------------------------------------ normalize + layout
G1 = "normalize_nchw_f32_32x224x224"


def test_norm_pyperfcore(benchmark, batch224):
    out = np.empty((32, 3, 224, 224), np.float32)
    np.testing.assert_allclose(pp.preprocess_images(batch224, mean=MEAN, std=STD), _numpy_chain(batch224), rtol=1e-5, atol=1e-5)
    benchmark.group = G1
    benchmark.extra_info["GB/s_out"] = out.nbytes / 1e9
    benchmark(pp.preprocess_images, batch224, mean=MEAN, std=STD)


def test_norm_numpy(benchmark, batch224):
    benchmark.group = G1
    benchmark(_numpy_chain, batch224)


def test_norm_copy_floor(benchmark, batch224):
    src = _numpy_chain(batch224)
    dst = np.empty_like(src)
    benchmark.group = G1
    benchmark(np.copyto, dst, src)


def test_norm_copy_floor_fresh(benchmark, batch224):
    src = _numpy_chain(batch224)
    benchmark.group = G1
    benchmark(np.array, src, copy=True)  # includes allocating (page-faulting) the output, like ours


def test_norm_torch(benchmark, batch224):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(batch224)
    m, s = torch.from_numpy(MEAN), torch.from_numpy(STD)

    def chain():
        return ((x.float() - m) / s).permute(0, 3, 1, 2).contiguous()

    np.testing.assert_allclose(chain().numpy(), _numpy_chain(batch224), rtol=1e-5, atol=1e-5)
    benchmark.group = G1
    benchmark(chain)


@pytest.mark.skipif(os.environ.get("PYPERFCORE_BENCH_COMPILE") != "1", reason="set PYPERFCORE_BENCH_COMPILE=1")
def test_norm_torch_compile(benchmark, batch224):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(batch224)
    m, s = torch.from_numpy(MEAN), torch.from_numpy(STD)
    fn = torch.compile(lambda t: ((t.float() - m) / s).permute(0, 3, 1, 2).contiguous())
    np.testing.assert_allclose(fn(x).numpy(), _numpy_chain(batch224), rtol=1e-5, atol=1e-5)
    benchmark.group = G1
    benchmark(fn, x)


# ------------------------------------------------------------------ resize + crop + normalize
G2 = "resize232_crop224_normalize_32x256x256"


def test_rcn_pyperfcore_pil_semantics(benchmark, batch256):
    benchmark.group = G2
    benchmark(pp.preprocess_images, batch256, size=232, crop=224, mean=MEAN, std=STD, antialias=True)


def test_rcn_pyperfcore_opencv_semantics(benchmark, batch256):
    benchmark.group = G2
    benchmark(pp.preprocess_images, batch256, size=232, crop=224, mean=MEAN, std=STD, antialias=False)


def test_rcn_pillow(benchmark, batch256):
    from PIL import Image

    def run():
        out = np.empty((32, 3, 224, 224), np.float32)
        for i in range(32):
            im = Image.fromarray(batch256[i]).resize((232, 232), Image.BILINEAR).crop((4, 4, 228, 228))
            out[i] = ((np.asarray(im, np.float32) - MEAN) / STD).transpose(2, 0, 1)
        return out

    ours = pp.preprocess_images(batch256, size=232, crop=224, mean=MEAN, std=STD)
    assert np.abs(run() - ours).max() <= 1.01 / STD.min()
    benchmark.group = G2
    benchmark(run)


def test_rcn_opencv(benchmark, batch256):
    import cv2

    def run():
        out = np.empty((32, 3, 224, 224), np.float32)
        for i in range(32):
            r = cv2.resize(batch256[i], (232, 232), interpolation=cv2.INTER_LINEAR)[4:228, 4:228]
            f = cv2.multiply(cv2.subtract(r.astype(np.float32), tuple(MEAN.tolist()) + (0.0,)), tuple((1 / STD).tolist()) + (0.0,))
            out[i] = f.transpose(2, 0, 1)
        return out

    ours = pp.preprocess_images(batch256, size=232, crop=224, mean=MEAN, std=STD, antialias=False)
    assert np.abs(run() - ours).max() <= 1.01 / STD.min()
    benchmark.group = G2
    benchmark(run)


# ------------------------------------------------------------------ softmax + top-5
G3 = "softmax_top5_256x1000"


@pytest.fixture(scope="module")
def logits():
    return (np.random.default_rng(2).standard_normal((256, 1000)) * 3).astype(np.float32)


def _np_top5(x):
    m = x.max(axis=1, keepdims=True)
    p = np.exp(x - m)
    p /= p.sum(axis=1, keepdims=True)
    i = np.argpartition(-p, 5, axis=1)[:, :5]
    v = np.take_along_axis(p, i, 1)
    o = np.argsort(-v, axis=1)
    return np.take_along_axis(v, o, 1), np.take_along_axis(i, o, 1)


def test_top5_pyperfcore(benchmark, logits):
    v, i = pp.softmax_topk(logits, 5)
    nv, ni = _np_top5(logits)
    np.testing.assert_array_equal(i, ni)
    np.testing.assert_allclose(v, nv, rtol=1e-5)
    benchmark.group = G3
    benchmark.extra_info["rows/s"] = 256
    benchmark(pp.softmax_topk, logits, 5)


def test_top5_pyperfcore_core_call(benchmark, logits):
    from pyperfcore._runtime import _core

    core = _core()
    benchmark.group = G3
    benchmark(core.prepost_topk, logits, 5, True)  # the native call without the Python checks


def test_top5_numpy(benchmark, logits):
    benchmark.group = G3
    benchmark(_np_top5, logits)


def test_top5_torch(benchmark, logits):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(logits)
    v, i = torch.softmax(x, dim=1).topk(5, dim=1)
    np.testing.assert_array_equal(i.numpy(), _np_top5(logits)[1])
    benchmark.group = G3
    benchmark(lambda: torch.softmax(x, dim=1).topk(5, dim=1))


def test_top5_torch_1thread(benchmark, logits):
    """torch on one thread: on a shared machine its pool's spinning threads can cost far more."""
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(logits)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        benchmark.group = G3
        benchmark(lambda: torch.softmax(x, dim=1).topk(5, dim=1))
    finally:
        torch.set_num_threads(prev)


def test_top5_memory_floor(benchmark, logits):
    """Reading the logits once: a copy of their 1 MB (what any one-pass kernel must at least move)."""
    dst = np.empty_like(logits)
    benchmark.group = G3
    benchmark(np.copyto, dst, logits)


# Argmax, log-softmax and int8 logits (dequantize + softmax + top-5) share the same row kernels.
G3a = "argmax_256x1000"


def test_argmax_pyperfcore(benchmark, logits):
    np.testing.assert_array_equal(pp.argmax(logits), np.argmax(logits, axis=1))
    benchmark.group = G3a
    benchmark(pp.argmax, logits)


def test_argmax_numpy(benchmark, logits):
    benchmark.group = G3a
    benchmark(np.argmax, logits, axis=1)


def test_argmax_torch(benchmark, logits):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(logits)
    benchmark.group = G3a
    benchmark(torch.argmax, x, dim=1)


G3b = "log_softmax_256x1000"


def _np_log_softmax(x):
    m = x.max(axis=1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))


def test_log_softmax_pyperfcore(benchmark, logits):
    np.testing.assert_allclose(pp.log_softmax(logits), _np_log_softmax(logits), rtol=1e-5, atol=1e-5)
    benchmark.group = G3b
    benchmark(pp.log_softmax, logits)


def test_log_softmax_numpy(benchmark, logits):
    benchmark.group = G3b
    benchmark(_np_log_softmax, logits)


def test_log_softmax_torch(benchmark, logits):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(logits)
    benchmark.group = G3b
    benchmark(torch.log_softmax, x, dim=1)


G3c = "int8_dequant_softmax_top5_256x1000"


@pytest.fixture(scope="module")
def q_logits(logits):
    scale = np.float32(np.abs(logits).max() / 127)
    return np.clip(np.rint(logits / scale), -127, 127).astype(np.int8), scale


def test_int8_top5_pyperfcore(benchmark, q_logits):
    q, s = q_logits
    v, i = pp.softmax_topk(q, 5, scale=s)
    nv, ni = _np_top5(q.astype(np.float32) * s)
    np.testing.assert_allclose(v, nv, rtol=1e-5)
    benchmark.group = G3c
    benchmark(pp.softmax_topk, q, 5, scale=s)


def test_int8_top5_numpy(benchmark, q_logits):
    q, s = q_logits
    benchmark.group = G3c
    benchmark(lambda: _np_top5(q.astype(np.float32) * s))


def test_int8_top5_torch(benchmark, q_logits):
    torch = pytest.importorskip("torch")
    q, s = q_logits
    x = torch.from_numpy(q)
    benchmark.group = G3c
    benchmark(lambda: torch.softmax(x.float() * float(s), dim=1).topk(5, dim=1))


# ------------------------------------------------------------------ batched NMS
G4 = "batched_nms_2000_boxes_20_classes"


@pytest.fixture(scope="module")
def dets():
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 600, (2000, 2))
    wh = rng.uniform(10, 120, (2000, 2))
    return (np.concatenate([xy, xy + wh], 1).astype(np.float32), rng.uniform(0, 1, 2000).astype(np.float32),
            rng.integers(0, 20, 2000))


def test_nms_pyperfcore(benchmark, dets):
    b, s, c = dets
    np.testing.assert_array_equal(pp.batched_nms(b, s, c, 0.5), pp.batched_nms(b, s, c, 0.5, backend="reference"))
    benchmark.group = G4
    benchmark(pp.batched_nms, b, s, c, 0.5)


def test_nms_torch_coordinate_trick(benchmark, dets):
    """torchvision's batched_nms recipe (offset boxes per class, one NMS) in plain torch, since
    PyPI's torchvision does not import beside this torch build."""
    torch = pytest.importorskip("torch")
    b, s, c = (torch.from_numpy(np.asarray(a)) for a in dets)

    def run():
        off = c.to(b) * (b.max() + 1)
        bx = b + off[:, None]
        order = s.argsort(descending=True, stable=True)
        bx = bx[order]
        x1, y1, x2, y2 = bx.unbind(1)
        area = (x2 - x1) * (y2 - y1)
        sup = torch.zeros(len(order), dtype=torch.bool)
        keep = []
        for i in range(len(order)):
            if sup[i]:
                continue
            keep.append(i)
            w = (torch.minimum(x2[i], x2[i + 1:]) - torch.maximum(x1[i], x1[i + 1:])).clamp(min=0)
            h = (torch.minimum(y2[i], y2[i + 1:]) - torch.maximum(y1[i], y1[i + 1:])).clamp(min=0)
            inter = w * h
            sup[i + 1:] |= inter / (area[i] + area[i + 1:] - inter) > 0.5
        return order[keep]

    ours = pp.batched_nms(*dets, 0.5)
    assert len(set(run().tolist()) ^ set(ours.tolist())) <= 2  # float offsets may flip a borderline box
    benchmark.group = G4
    benchmark.pedantic(run, rounds=3, iterations=1)


# ------------------------------------------------------------------ out= (CPU)
def test_norm_pyperfcore_out(benchmark, batch224):
    # A caller's 64-byte-aligned buffer, reused: no allocation, streaming stores.
    raw = np.empty(32 * 3 * 224 * 224 * 4 + 64, np.uint8)
    start = (-raw.ctypes.data) % 64
    out = raw[start:start + 32 * 3 * 224 * 224 * 4].view(np.float32).reshape(32, 3, 224, 224)
    pp.preprocess_images(batch224, mean=MEAN, std=STD, out=out)
    np.testing.assert_allclose(out, _numpy_chain(batch224), rtol=1e-5, atol=1e-5)
    benchmark.group = G1
    benchmark(pp.preprocess_images, batch224, mean=MEAN, std=STD, out=out)
