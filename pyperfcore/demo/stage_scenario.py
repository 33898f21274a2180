"""Demo stage: the production scenario every later stage works on.

A real model on real data shipped by a package: a torch MLP classifier trained (seeded, about a
second) on scikit-learn's bundled handwritten-digits data set; live traffic drawn from the
held-out digits, with a spike in the arrival rate and a data drift injected mid-run (the scanner
gets brighter and noisier). Later stages find it in ``ctx.data``:

- ``model`` (torch.nn.Module, eval mode), ``model_fn(x: float32 [n, 64]) -> logits [n, 10]``
- ``features``: ``reference`` (training inputs), ``stream`` (traffic inputs in arrival order),
  ``drift_start`` (index of the first drifted request), ``stream_labels``
- ``traffic``: ``arrival_s`` (arrival time of each request, seconds from start) with a spike
- ``images``: the traffic as uint8 8x8 grey images (for the pre-processing stage)
- ``eval``: held-out ``x``, ``y`` for accuracy reports
and ``ctx.models['digits-fp32']`` with the saved weights, metrics and version info.
"""
from __future__ import annotations

import hashlib
import time
from pathlib import Path

import numpy as np


def _train(x: np.ndarray, y: np.ndarray, seed: int, epochs: int, progress):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    prev_threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: threads only add contention
    model = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 256), nn.GELU(), nn.Linear(256, 10))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    gen = torch.Generator().manual_seed(seed)
    for _ in progress(range(epochs), "training epochs"):
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[idx]), yt[idx]).backward()
            opt.step()
    torch.set_num_threads(prev_threads)
    return model.eval()


def run(ctx) -> dict:
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    x_all = (digits.data / 16.0).astype(np.float32)  # pixel intensities 0..16 -> 0..1
    y_all = digits.target.astype(np.int64)
    rng = np.random.default_rng(7)
    order = rng.permutation(len(x_all))
    n_train = int(0.6 * len(x_all))
    tr, te = order[:n_train], order[n_train:]
    t0 = time.perf_counter()
    model = _train(x_all[tr], y_all[tr], seed=7, epochs=6 if ctx.quick else 20, progress=ctx.progress)
    train_s = time.perf_counter() - t0

    def model_fn(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))).numpy()

    acc = float((model_fn(x_all[te]).argmax(1) == y_all[te]).mean())
    ctx.log(f"digits MLP 64-256-256-10 trained on {len(tr)} images in {train_s:.1f} s; held-out accuracy {acc:.3f}")

    # Traffic: the held-out digits replayed in random order, 3x over; the second half drifts.
    n_req = 1500 if ctx.quick else 6000
    pick = rng.choice(te, size=n_req, replace=True)
    stream = x_all[pick].copy()
    labels = y_all[pick]
    drift_start = n_req // 2
    drifted = stream[drift_start:] * 1.35 + rng.normal(0.0, 0.12, stream[drift_start:].shape).astype(np.float32)
    stream[drift_start:] = np.clip(drifted, 0.0, 1.0)
    # Arrivals: Poisson at a base rate, with a spike of 6x the rate over the middle fifth.
    base_rate = 400.0
    rates = np.full(n_req, base_rate)
    rates[int(0.4 * n_req) : int(0.6 * n_req)] *= 6.0
    arrival_s = np.cumsum(rng.exponential(1.0 / rates))
    drift_acc = float((model_fn(stream[drift_start:]).argmax(1) == labels[drift_start:]).mean())
    clean_acc = float((model_fn(stream[:drift_start]).argmax(1) == labels[:drift_start]).mean())
    ctx.log(f"traffic: {n_req} requests over {arrival_s[-1]:.1f} s, 6x spike from request {int(0.4 * n_req)}; "
            f"drift injected at request {drift_start} (accuracy {clean_acc:.3f} -> {drift_acc:.3f})")

    path = ctx.workdir / "digits-fp32.npz"
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    np.savez(path, **state)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    data_hash = hashlib.sha256(np.ascontiguousarray(x_all[tr]).tobytes()).hexdigest()
    ctx.models["digits-fp32"] = {
        "path": path,
        "metrics": {"accuracy": acc},
        "version_info": {"framework": f"torch {torch.__version__}", "sha256": digest,
                         "training_data": "sklearn.datasets.load_digits", "training_data_sha256": data_hash,
                         "input_schema": {"x": ["float32", [None, 64]]}, "output_schema": {"logits": ["float32", [None, 10]]}},
    }
    # Its INT8 version (pyperfcore kernels), with lineage to the fp32 model and its agreement.
    import copy

    from .. import quant

    model_int8 = quant.optimize(copy.deepcopy(model), dtype="int8")
    with torch.inference_mode():
        lf = model(torch.from_numpy(x_all[te])).numpy()
        li = model_int8(torch.from_numpy(x_all[te])).numpy()
    acc8 = float((li.argmax(1) == y_all[te]).mean())
    agree = float((li.argmax(1) == lf.argmax(1)).mean())
    saved = Path(quant.save(model_int8, ctx.workdir / "digits-int8"))
    path8 = {f.name: f for f in sorted(saved.iterdir())} if saved.is_dir() else saved  # safetensors + JSON
    ctx.log(f"INT8 version (pyperfcore W8A8 kernels): held-out accuracy {acc8:.3f}, "
            f"top-1 agreement with fp32 {agree:.3f}, max |logit diff| {np.abs(li - lf).max():.3f}")
    ctx.models["digits-int8"] = {
        "path": path8,
        "metrics": {"accuracy": acc8, "top1_agreement_with_fp32": agree},
        "version_info": {"framework": "pyperfcore.quant W8A8", "derived_from": "digits-fp32",
                         "quantization": "per-channel symmetric int8 weights, per-token int8 activations"},
    }
    images = np.clip(np.rint(stream * 255.0), 0, 255).astype(np.uint8).reshape(-1, 8, 8, 1)
    ctx.data.update(
        model=model, model_fn=model_fn, model_input_dim=64, model_int8=model_int8, predictions=n_req,
        features={"reference": x_all[tr], "stream": stream, "drift_start": drift_start, "stream_labels": labels},
        traffic={"arrival_s": arrival_s, "spike": (int(0.4 * n_req), int(0.6 * n_req))},
        images=images, eval={"x": x_all[te], "y": y_all[te]},
    )
    return {"model": "MLP 64-256-256-10 (GELU)", "train_images": len(tr), "accuracy": acc,
            "accuracy_int8": acc8, "top1_agreement_int8": agree,
            "requests": n_req, "drift_start": drift_start, "accuracy_before_drift": clean_acc,
            "accuracy_after_drift": drift_acc, "duration_s": float(arrival_s[-1])}
