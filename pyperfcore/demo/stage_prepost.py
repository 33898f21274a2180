"""Demo stage: fused pre-processing of real photos and post-processing of model logits.

Pre-processes scikit-learn's bundled sample photos (china.jpg, flower.jpg; no network) as
request images of different sizes into a normalized NCHW batch, checks it against the numpy
reference, and times it against the same chain in numpy; then turns logits into answers
(softmax top-5 with labels, multi-label thresholds, int8 logits, embeddings compressed to int8).\nThe Pillow + numpy chain doing the same work is timed in the same run.
"""
from __future__ import annotations

import time

import numpy as np

from .. import prepost

MEAN = [123.675, 116.28, 103.53]
STD = [58.395, 57.12, 57.375]


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _requests(ctx, n: int) -> list[np.ndarray]:
    """n request images: random crops of different sizes of the real photos."""
    from sklearn.datasets import load_sample_images

    photos = load_sample_images().images  # two 427x640x3 uint8 photos
    out = []
    for _ in range(n):
        p = photos[int(ctx.rng.integers(len(photos)))]
        h, w = int(ctx.rng.integers(200, p.shape[0] + 1)), int(ctx.rng.integers(200, p.shape[1] + 1))
        t, l = int(ctx.rng.integers(0, p.shape[0] - h + 1)), int(ctx.rng.integers(0, p.shape[1] - w + 1))
        out.append(p[t:t + h, l:l + w])  # views: no copy, strided rows
    return out


def _pillow_chain(images: list[np.ndarray]) -> np.ndarray:
    """The same work done the usual way: Pillow resize and crop, numpy normalize and transpose."""
    from PIL import Image

    out = []
    for im in images:
        h, w = im.shape[:2]
        rh, rw = (int(232 * h / w), 232) if w <= h else (232, int(232 * w / h))
        r = Image.fromarray(np.ascontiguousarray(im)).resize((rw, rh), Image.BILINEAR)
        t, l = int(round((rh - 224) / 2.0)), int(round((rw - 224) / 2.0))
        a = np.asarray(r.crop((l, t, l + 224, t + 224)), dtype=np.float32)
        out.append(((a - np.float32(MEAN)) / np.float32(STD)).transpose(2, 0, 1))
    return np.stack(out)


def run(ctx) -> dict:
    n = 8 if ctx.quick else 32
    images = _requests(ctx, n)
    ctx.log(f"{n} request images from sklearn's sample photos, sizes "
            f"{min(i.shape[0] for i in images)}-{max(i.shape[0] for i in images)} x "
            f"{min(i.shape[1] for i in images)}-{max(i.shape[1] for i in images)}")
    kw = dict(size=232, crop=224, mean=MEAN, std=STD)
    batch = prepost.preprocess_images(images, **kw)
    refb = prepost.preprocess_images(images[:1], backend="reference", **kw)
    err = float(np.abs(batch[:1] - refb).max())
    repeat = 2 if ctx.quick else 4
    t_ours = _best(lambda: prepost.preprocess_images(images, **kw), repeat)
    t_ref = _best(lambda: _pillow_chain(images), 1)
    ctx.log(f"preprocess (resize shorter side 232, center crop 224, normalize, NCHW float32): "
            f"{t_ours * 1e3:.1f} ms for {n} images; Pillow + numpy chain {t_ref * 1e3:.0f} ms "
            f"({t_ref / t_ours:.1f}x); max |diff| vs the numpy reference {err:.2e}")
    ctx.data["images_preprocessed"] = batch

    # Post-processing of a model's outputs. A linear "model" over pooled pixels stands in for a
    # classifier here; the logits' shape and scale are those of an ImageNet head.
    rng = np.random.default_rng(7)
    w = rng.standard_normal((3 * 4 * 4, 1000)).astype(np.float32) * 0.3
    pooled = batch.reshape(n, 3, 4, 56, 4, 56).mean(axis=(3, 5)).reshape(n, -1)
    logits = (pooled @ w).astype(np.float32)
    labels = [f"class_{i}" for i in range(1000)]
    t0 = time.perf_counter()
    probs, idx = prepost.softmax_topk(logits, 5)
    t_top = time.perf_counter() - t0
    top1 = prepost.argmax(logits, labels=labels)
    multi = prepost.sigmoid_threshold(logits, 0.9)
    qscale = float(np.abs(logits).max()) / 127
    ql = np.clip(np.rint(logits / qscale), -127, 127).astype(np.int8)
    qprobs, qidx = prepost.softmax_topk(ql, 5, scale=qscale)
    agree = float((qidx[:, 0] == idx[:, 0]).mean())
    emb_q, emb_s = prepost.compress_embeddings(pooled.astype(np.float32))
    cos = prepost.l2_normalize(pooled.astype(np.float32))
    deq = prepost.decompress_embeddings(emb_q, emb_s)
    sim_err = float(np.abs(deq @ deq.T - cos @ cos.T).max())
    ctx.log(f"softmax top-5 over {n}x1000 logits: {t_top * 1e6:.0f} us; request 0 -> {top1[0]} "
            f"(p={probs[0, 0]:.3f}); {int(multi.sum())} labels above sigmoid 0.9")
    ctx.log(f"int8 logits (scale {qscale:.3f}) dequantize+softmax: top-1 agrees with float on {agree:.0%}; "
            f"int8 embeddings: cosine similarity error <= {sim_err:.4f}")
    ctx.data["prepost_timings_ms"] = {"preprocess": t_ours * 1e3, "postprocess": t_top * 1e3}
    return {"images": n, "batch_shape": list(batch.shape), "ms_preprocess": t_ours * 1e3,
            "ms_pillow_numpy": t_ref * 1e3, "speedup_vs_pillow_numpy": t_ref / t_ours, "max_abs_diff": err,
            "ms_softmax_top5": t_top * 1e3, "int8_top1_agreement": agree, "embedding_cos_err": sim_err}
