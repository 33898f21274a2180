"""Demo stage: all-MiniLM-L6-v2 in INT8 (W8A8, GELU and residual adds fused into the GEMMs),
with its accuracy report against fp32 and the speed-up, one thread, in the same run."""
from __future__ import annotations

import copy
import time

TITLE = "INT8 inference of a real model, with its accuracy report"


def _throughputs(models, sentences, repeat: int) -> list[float]:
    """Sentences/s of each model, best of `repeat` rounds run alternately (a shared machine's
    load then affects both alike)."""
    best = [float("inf")] * len(models)
    for _ in range(repeat):
        for i, model in enumerate(models):
            t = time.perf_counter()
            model.encode(sentences)
            best[i] = min(best[i], time.perf_counter() - t)
    return [len(sentences) / b for b in best]


def run(ctx) -> dict:
    import torch

    import pyperfcore
    from pyperfcore import quant
    from pyperfcore.quant.bert import load_minilm, varied_sentences

    n = 160 if ctx.quick else 1000
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
                f"(GELU fused into the FFN up-projections, residual adds into the output projections)")
        ref = fp32.encode(sentences)
        cand = int8.encode(sentences)
        sample = sentences[: min(len(sentences), 96 if ctx.quick else 192)]
        sps_fp32, sps_int8 = _throughputs([fp32, int8], sample, 2 if ctx.quick else 3)
    finally:
        torch.set_num_threads(prev[0])
        pyperfcore.set_num_threads(prev[1])
    report = quant.accuracy_report(ref, cand, sentences=n, fp32_sentences_per_s=sps_fp32,
                                   int8_sentences_per_s=sps_int8, speedup=sps_int8 / sps_fp32)
    for line in report.table().splitlines():
        ctx.log(line)
    target = report.meets(0.995, 0.99, 0.95)
    ctx.log(f"accuracy target (mean cos >= 0.995, min >= 0.99, NN agreement >= 95%): {'met' if target else 'NOT met'}")
    report.to_json(ctx.workdir / "quant_accuracy.json")
    saved = quant.save(int8, ctx.workdir / "minilm-int8")
    ctx.data["minilm_int8_dir"] = str(saved)
    ctx.data["minilm_int8"] = int8
    return {"sentences": n, "cosine_mean": report.cosine_mean, "cosine_min": report.cosine_min,
            "nn_agreement": report.nn_agreement, "top1_agreement": report.top1_agreement,
            "fp32_sentences_per_s": sps_fp32, "int8_sentences_per_s": sps_int8, "speedup": sps_int8 / sps_fp32,
            "accuracy_target_met": target, "saved": str(saved)}
