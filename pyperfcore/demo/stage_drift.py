"""Demo stage: a drift injected partway through a feature stream, detected by a DriftMonitor.

Features come from ``ctx.data['features']`` (``{'reference': 2-D array, 'stream': 2-D array}``)
when an earlier stage provides them, else from scikit-learn's bundled digits images (8x8 pixel
intensities; no network). Halfway through the stream a few pixels are brightened (a sensor /
pre-processing fault); the monitor reports when and on which features it noticed.
"""
from __future__ import annotations

import time

import numpy as np

from .. import drift


def _features(ctx) -> tuple[np.ndarray, np.ndarray, list[str], str]:
    feats = ctx.data.get("features")
    if feats is not None:
        ref, stream = np.asarray(feats["reference"], dtype=np.float64), np.asarray(feats["stream"], dtype=np.float64)
        names = list(feats.get("names") or [f"f{i}" for i in range(ref.shape[1])])
        return ref, stream, names, "shared features"
    from sklearn.datasets import load_digits  # shipped with scikit-learn

    x = load_digits().data.astype(np.float64)
    keep = np.flatnonzero(x.std(axis=0) > 2.0)[:16]  # informative pixels
    x = x[:, keep] + ctx.rng.normal(0, 0.25, (x.shape[0], keep.size))  # sensor noise
    idx = ctx.rng.permutation(x.shape[0])
    ref, stream = x[idx[:900]], x[idx[900:]]
    reps = 4 if ctx.quick else 12
    stream = np.concatenate([stream + ctx.rng.normal(0, 0.25, stream.shape) for _ in range(reps)])
    return ref, stream, [f"px{k}" for k in keep], "sklearn digits"


def run(ctx) -> dict:
    ref, stream, names, source = _features(ctx)
    inject_at = stream.shape[0] // 2
    drifted = [0, 3] if stream.shape[1] > 3 else [0]
    stream = stream.copy()
    stream[inject_at:, drifted] += 0.5 * ref[:, drifted].std(axis=0)  # half a std brighter
    ctx.log(f"{source}: reference {ref.shape[0]} x {ref.shape[1]}, stream {stream.shape[0]} rows; "
            f"drift injected at row {inject_at} on {[names[i] for i in drifted]}")
    prof = drift.ReferenceProfile.fit(ref, names=names)
    alerts = []
    mon = drift.DriftMonitor(prof, "sliding", 1000, step=250, on_drift=alerts.append)
    t0 = time.perf_counter()
    for i in ctx.progress(range(0, stream.shape[0], 200), "streaming batches"):
        mon.update(stream[i:i + 200])
    secs = time.perf_counter() - t0
    first = next((r for r in mon.reports if r.drifted_features), None)
    false_alarms = sum(1 for r in mon.reports if r.drifted_features and r.window["end_row"] <= inject_at)
    if first is not None:
        f0 = first.features[first.drifted_features[0]]
        ctx.log(f"first alert at row {first.window['end_row']} ({first.window['end_row'] - inject_at} rows after the "
                f"injection) on {first.drifted_features}: {f0.method} = {f0.statistic:.3f} (threshold {f0.threshold})")
    else:
        ctx.log("no drift detected")
    last = mon.reports[-1]
    ctx.log(f"last window: drifted {last.drifted_features}, dataset drift {last.dataset_drift} "
            f"({last.share_drifted:.0%} of features); {len(mon.reports)} windows, {false_alarms} false alarms, "
            f"{stream.size / secs / 1e6:.1f} M values/s")
    # The large-sample trap: a p-value alone flags a negligible shift; the effect floor does not.
    a = ctx.rng.normal(0, 1, 200_000 if ctx.quick else 1_000_000)
    b = ctx.rng.normal(0.01, 1, a.size)
    ks = drift.ks_2samp(a, b)
    verdict = drift.detect_drift({"x": a}, {"x": b}, methods={"x": "ks"}).features["x"]
    ctx.log(f"negligible 0.01-sigma shift, n={a.size}: KS p={ks.pvalue:.2g}, D={ks.statistic:.4f} -> "
            f"drift flagged: {verdict.drifted} ({verdict.note or 'below p-value threshold'})")
    return {"source": source, "inject_row": inject_at, "injected_features": [names[i] for i in drifted],
            "first_alert_row": first.window["end_row"] if first else None,
            "first_alert_features": first.drifted_features if first else [],
            "detection_delay_rows": (first.window["end_row"] - inject_at) if first else None,
            "false_alarms": false_alarms, "windows": len(mon.reports), "alerts": len(alerts),
            "values_per_s": stream.size / secs, "negligible_shift_ks_pvalue": ks.pvalue,
            "negligible_shift_flagged": verdict.drifted}
