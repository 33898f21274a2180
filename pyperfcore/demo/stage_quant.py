"""Demo stage: all-MiniLM-L6-v2 in INT8 (W8A8, GELU and residual adds fused into the GEMMs, the
fused attention kernel), with its accuracy report against fp32 and the speed-up, one thread, in
the same run."""
from __future__ import annotations

import copy
import time

TITLE = "INT8 inference of a real model, with its accuracy report"


def _encode_alternating(fp32, int8, sentences, chunks: int):
    """Encodes the sentences with both models, chunk by chunk in alternation, timing each chunk.

    The accuracy pass doubles as the speed measurement (no extra timing rounds); alternating
    chunks lets a shared machine's load hit both models alike, and the speed-up is the median of
    the per-chunk ratios. Returns (fp32 outputs, int8 outputs, fp32 s/sentence, int8 s/sentence,
    speed-up)."""
    import numpy as np

    bounds = np.linspace(0, len(sentences), chunks + 1).astype(int)
    outs = ([], [])
    times = ([], [])
    for a, b in zip(bounds[:-1], bounds[1:]):
        part = sentences[a:b]
        for i, model in enumerate((fp32, int8)):
            t = time.perf_counter()
            outs[i].append(model.encode(part))
            times[i].append((time.perf_counter() - t) / len(part))
    ratios = [f / q for f, q in zip(*times)]
    return (np.concatenate(outs[0]), np.concatenate(outs[1]), float(np.median(times[0])), float(np.median(times[1])),
            float(np.median(ratios)))


def run(ctx) -> dict:
    import torch

    import pyperfcore
    from pyperfcore import quant
    from pyperfcore.quant.bert import load_minilm, varied_sentences

    n = 200 if ctx.quick else 1000
    sentences = varied_sentences(n, seed=int(ctx.rng.integers(1 << 30)))
    prev = torch.get_num_threads(), pyperfcore.get_num_threads()
    torch.set_num_threads(1)
    pyperfcore.set_num_threads(1)
    try:
        fp32 = load_minilm()
        t = time.perf_counter()
        int8 = quant.optimize(copy.deepcopy(fp32))
        t_opt = time.perf_counter() - t
        ctx.log(f"optimize(): {len(quant.torch_ops.quantized_layers(int8))} linear layers -> W8A8 in {t_opt:.2f} s "
                f"(GELU fused into the FFN up-projections, residual adds into the output projections, "
                f"attention in pyperfcore's fused kernel)")
        int8.encode(sentences[:2])  # first call: one-time allocations, outside the timing
        fp32.encode(sentences[:2])
        ref, cand, spf_fp32, spf_int8, speedup = _encode_alternating(fp32, int8, sentences, 4 if ctx.quick else 8)
        sps_fp32, sps_int8 = 1.0 / spf_fp32, 1.0 / spf_int8
    finally:
        torch.set_num_threads(prev[0])
        pyperfcore.set_num_threads(prev[1])
    report = quant.accuracy_report(ref, cand, sentences=n, fp32_sentences_per_s=sps_fp32,
                                   int8_sentences_per_s=sps_int8, speedup=speedup)
    for line in report.table().splitlines():
        ctx.log(line)
    layers, onnx = _validate(ctx, fp32, int8, sentences[: 32 if ctx.quick else 64])
    report.layers = layers
    target = report.meets(0.995, 0.99, 0.95)
    note = "" if n >= 1000 else f" (on {n} sentences in quick mode; the target is defined on 1000)"
    ctx.log(f"accuracy target (mean cos >= 0.995, min >= 0.99, NN agreement >= 95%): "
            f"{'met' if target else 'NOT met'}{note}")
    report.to_json(ctx.workdir / "quant_accuracy.json")
    saved = quant.save(int8, ctx.workdir / "minilm-int8")
    ctx.data["minilm_int8_dir"] = str(saved)
    ctx.data["minilm_int8"] = int8
    worst = min(layers, key=lambda k: layers[k]["local_cosine_mean"])
    return {"sentences": n, "cosine_mean": report.cosine_mean, "layers_checked": len(layers),
            "least_accurate_layer": worst, "least_accurate_layer_local_cosine_mean": layers[worst]["local_cosine_mean"],
            "onnx_ok": onnx.ok, "onnx_torch_max_abs_err": onnx.exported.report.max_abs_err,
            "onnx_vs_int8_cosine_min": onnx.candidate.report.cosine_min, "cosine_min": report.cosine_min,
            "nn_agreement": report.nn_agreement, "top1_agreement": report.top1_agreement,
            "fp32_sentences_per_s": sps_fp32, "int8_sentences_per_s": sps_int8, "speedup": speedup,
            "accuracy_target_met": target, "saved": str(saved)}


def _validate(ctx, fp32, int8, sentences):
    """Per-layer rows (the INT8 model's layers inside the model and alone, on token rows) and the
    ONNX path: the fp32 model exported with torch.onnx, run by onnxruntime, checked against torch
    and against the INT8 model."""
    from pyperfcore import validate

    t = time.perf_counter()
    layers = validate.layer_report(fp32.encode, int8.encode, sentences)
    worst = sorted(layers.items(), key=lambda kv: kv[1]["local_cosine_mean"])[:3]
    ctx.log(f"per-layer rows of {len(layers)} linear layers on {len(sentences)} sentences "
            f"({time.perf_counter() - t:.1f} s); the least accurate alone (cosine over token rows):")
    for name, m in worst:
        ctx.log(f"  {name:<40} alone mean {m['local_cosine_mean']:.5f} min {m['local_cosine_min']:.5f}; "
                f"in the model mean {m['cosine_mean']:.5f}")
    t = time.perf_counter()
    half = len(sentences) // 2
    batches = [fp32.tokenize(sentences[:half]), fp32.tokenize(sentences[half:])]
    onnx = validate.onnx_check(fp32, batches[0], candidate=int8, batches=batches, path=ctx.workdir / "minilm.onnx",
                               min_nn_agreement=None)
    ex, ca = onnx.exported.report, onnx.candidate.report
    ctx.log(f"ONNX: fp32 exported with torch.onnx and run by onnxruntime ({time.perf_counter() - t:.1f} s): "
            f"vs torch max |err| {ex.max_abs_err:.2g} ({'agrees' if onnx.exported.ok else 'DISAGREES'}); "
            f"vs INT8 cosine min {ca.cosine_min:.5f} ({'within' if onnx.candidate.ok else 'OUTSIDE'} tolerance)")
    return layers, onnx
