"""Demo stage: per-channel INT8 quantization of a real transformer's weight matrices.

Shows the quantization error per output channel and the speed of the native kernel against
the same computation in numpy, on all-MiniLM-L6-v2's linear layers.
"""
from __future__ import annotations

import time

import numpy as np

from .. import quant
from .models import minilm_linear_weights


def _best_time(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def run(ctx) -> dict:
    weights = minilm_linear_weights()
    ctx.log(f"all-MiniLM-L6-v2: {len(weights)} linear weight matrices, "
            f"{sum(w.size for w in weights.values()) / 1e6:.1f} M parameters")
    rows = []
    for name, w in ctx.progress(list(weights.items()), "quantizing layers"):
        q, s = quant.quantize(w, axis=0)
        deq = quant.dequantize(q, s, axis=0)
        err = np.linalg.norm(deq - w, axis=1) / np.maximum(np.linalg.norm(w, axis=1), 1e-30)
        sqnr = 20 * np.log10(1 / np.maximum(err, 1e-12))
        rows.append((name, w.shape, float(np.median(err)), float(err.max()), float(sqnr.min())))
    worst = sorted(rows, key=lambda r: -r[3])[:5]
    ctx.log("per-channel relative error ||W - deq(q)|| / ||W|| (median over channels, worst channel):")
    for name, shape, med, mx, sq in worst:
        ctx.log(f"  {name:<45} {str(shape):<12} median {med:.4f}  worst {mx:.4f}  (SQNR >= {sq:.1f} dB)")
    all_med = float(np.median([r[2] for r in rows]))
    ctx.log(f"median over all layers: {all_med:.4f}")

    # Speed on one large matrix made of the real weights (the FFN matrices stacked).
    big = np.concatenate([w for n, w in weights.items() if w.shape[0] >= w.shape[1]], axis=0)
    if ctx.quick:
        big = big[:2048]
    repeat = 3 if ctx.quick else 5
    t_ours = _best_time(lambda: quant.quantize(big, axis=0), repeat)
    t_numpy = _best_time(lambda: quant.quantize(big, axis=0, backend="reference"), max(1, repeat // 2))
    q1, s1 = quant.quantize(big, axis=0)
    q2, s2 = quant.quantize(big, axis=0, backend="reference")
    identical = bool(np.array_equal(q1, q2) and np.array_equal(s1, s2))
    gbs = big.nbytes / t_ours / 1e9
    ctx.log(f"{big.shape[0]}x{big.shape[1]} float32: pyperfcore {t_ours * 1e3:.2f} ms ({gbs:.1f} GB/s), "
            f"numpy {t_numpy * 1e3:.1f} ms -> {t_numpy / t_ours:.1f}x faster; results identical: {identical}")
    ctx.data["minilm_weights"] = weights
    return {"layers": len(rows), "median_rel_error": all_med, "worst": [r[0] for r in worst],
            "matrix": list(big.shape), "ms_pyperfcore": t_ours * 1e3, "ms_numpy": t_numpy * 1e3,
            "speedup": t_numpy / t_ours, "identical_to_numpy": identical}
