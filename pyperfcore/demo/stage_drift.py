"""Demo stage: a drift injected partway through a feature stream, detected by a DriftMonitor.

Features come from ``ctx.data['features']`` (the scenario stage: ``reference``, ``stream``,
``drift_start``) when an earlier stage provides them, else from scikit-learn's bundled digits
images (8x8 pixel intensities; no network) with a few pixels brightened halfway through (a
sensor / pre-processing fault). A sliding-window monitor raises a dataset-drift alarm and the
stage reports when (rows after the drift began), on which features, and the false alarms before.
"""
from __future__ import annotations

import time

import numpy as np

from .. import drift


def _features(ctx) -> tuple[np.ndarray, np.ndarray, list[str], str, int, list[int]]:
    """(reference, stream, names, source, drift_start, drifted columns or [] for all/unknown)."""
    feats = ctx.data.get("features")
    if feats is not None:
        ref, stream = np.asarray(feats["reference"], dtype=np.float64), np.asarray(feats["stream"], dtype=np.float64)
        names = list(feats.get("names") or [f"f{i}" for i in range(ref.shape[1])])
        if feats.get("drift_start") is not None:  # the scenario injected its own drift
            return ref, stream, names, "scenario traffic", int(feats["drift_start"]), []
    else:
        from sklearn.datasets import load_digits  # shipped with scikit-learn

        x = load_digits().data.astype(np.float64)
        keep = np.flatnonzero(x.std(axis=0) > 2.0)[:16]  # informative pixels
        x = x[:, keep] + ctx.rng.normal(0, 0.25, (x.shape[0], keep.size))  # sensor noise
        idx = ctx.rng.permutation(x.shape[0])
        ref, stream = x[idx[:900]], x[idx[900:]]
        reps = 4 if ctx.quick else 12
        stream = np.concatenate([stream + ctx.rng.normal(0, 0.25, stream.shape) for _ in range(reps)])
        names = [f"px{k}" for k in keep]
    # No drift given: brighten a few columns by half a std from the middle of the stream on.
    inject_at = stream.shape[0] // 2
    drifted = [0, 3] if stream.shape[1] > 3 else [0]
    stream = stream.copy()
    stream[inject_at:, drifted] += 0.5 * ref[:, drifted].std(axis=0)
    return ref, stream, names, "sklearn digits (drift injected here)", inject_at, drifted


def run(ctx) -> dict:
    ref, stream, names, source, drift_start, drifted = _features(ctx)
    where = [names[i] for i in drifted] if drifted else "all features"
    ctx.log(f"{source}: reference {ref.shape[0]} x {ref.shape[1]}, stream {stream.shape[0]} rows; "
            f"drift starts at row {drift_start} ({where})")
    prof = drift.ReferenceProfile.fit(ref, names=names)
    alarms: list[drift.DriftReport] = []
    # The alarm is dataset drift (at least half the features drift, Evidently's rule): single
    # features of a 64-pixel image wobble past their thresholds in small windows by chance.
    mon = drift.DriftMonitor(prof, "sliding", 500, step=250,
                             on_drift=lambda r: alarms.append(r) if r.dataset_drift else None)
    t0 = time.perf_counter()
    for i in ctx.progress(range(0, stream.shape[0], 200), "streaming batches"):
        mon.update(stream[i:i + 200])
    secs = time.perf_counter() - t0
    first = next((r for r in alarms if r.window["end_row"] > drift_start), None)
    false_alarms = sum(1 for r in alarms if r.window["end_row"] <= drift_start)
    before = [r for r in mon.reports if r.window["end_row"] <= drift_start]
    noisy = max((r.share_drifted for r in before), default=0.0)
    if first is not None:
        top = sorted(first.drifted_features, key=lambda n: -first.features[n].statistic / first.features[n].threshold)[:5]
        f0 = first.features[top[0]]
        ctx.log(f"drift alarm at row {first.window['end_row']} ({first.window['end_row'] - drift_start} rows after it "
                f"began): {first.share_drifted:.0%} of features drifted, strongest {top} "
                f"({f0.method} {f0.statistic:.3f} vs threshold {f0.threshold})")
    else:
        ctx.log("no drift alarm after the drift began")
    ctx.log(f"{len(mon.reports)} windows, {false_alarms} false alarms before row {drift_start} (at most "
            f"{noisy:.0%} of features flagged in a clean window); {stream.size / secs / 1e6:.2f} M values/s")
    # The large-sample trap: a p-value alone flags a negligible shift; the effect floor does not.
    a = ctx.rng.normal(0, 1, 200_000 if ctx.quick else 1_000_000)
    b = ctx.rng.normal(0.01, 1, a.size)
    t0 = time.perf_counter()
    ks = drift.ks_2samp(a, b)
    ks_ms = (time.perf_counter() - t0) * 1e3
    verdict = drift.detect_drift({"x": a}, {"x": b}, methods={"x": "ks"}).features["x"]
    ctx.log(f"negligible 0.01-sigma shift, n={a.size}: KS p={ks.pvalue:.2g}, D={ks.statistic:.4f} ({ks_ms:.0f} ms) -> "
            f"drift flagged: {verdict.drifted} ({verdict.note or 'below p-value threshold'})")
    return {"source": source, "drift_start_row": drift_start, "injected_features": where,
            "first_alarm_row": first.window["end_row"] if first else None,
            "first_alarm_features": first.drifted_features if first else [],
            "detection_delay_rows": (first.window["end_row"] - drift_start) if first else None,
            "false_alarms": false_alarms, "max_clean_window_share": noisy, "windows": len(mon.reports),
            "alarms": len(alarms), "values_per_s": stream.size / secs, "ks_1e6_ms": ks_ms,
            "negligible_shift_ks_pvalue": ks.pvalue, "negligible_shift_flagged": verdict.drifted}
