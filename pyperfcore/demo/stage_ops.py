"""Demo stage: register the fp32 and INT8 models with lineage, require sign-offs before
promotion, audit every step and verify the trail, write the model card, report cost per 1k."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np


def _artifacts(ctx) -> dict:
    models = dict(getattr(ctx, "models", None) or {})
    if models:
        return models
    # No earlier stage produced models: make a small fp32 layer and its INT8 version.
    rng = np.random.default_rng(7)
    d = Path(ctx.workdir) / "ops_models"
    d.mkdir(parents=True, exist_ok=True)
    w = rng.standard_normal((64, 32)).astype(np.float32)
    scale = np.abs(w).max(axis=1, keepdims=True) / 127.0
    q = np.clip(np.round(w / scale), -127, 127).astype(np.int8)
    np.savez(d / "fp32.npz", weight=w)
    np.savez(d / "int8.npz", weight=q, scale=scale.astype(np.float32))
    err = float(np.abs(q * scale - w).max())
    return {"fp32": {"path": str(d / "fp32.npz"), "metrics": {"max_abs_weight_error": 0.0},
                     "version_info": {"dtype": "float32"}},
            "int8": {"path": str(d / "int8.npz"), "metrics": {"max_abs_weight_error": err},
                     "version_info": {"dtype": "int8", "scheme": "per-channel symmetric"}}}


def run(ctx) -> dict:
    from pyperfcore.ops import AuditLog, CostLedger, Price, Registry, model_card
    from pyperfcore.ops.registry import ApprovalRequired

    work = Path(ctx.workdir) / "ops"
    work.mkdir(parents=True, exist_ok=True)
    reg = Registry(work / "registry", user="demo")
    models = _artifacts(ctx)
    schema = {"input": "float32[*, features]"}
    snapshot = {"uri": "demo://training-snapshot", "sha256": "0" * 64}
    refs = {}
    parent = None
    for key in sorted(models, key=lambda k: 0 if "fp32" in k else 1):
        m = models[key]
        meta = {"metrics": dict(m.get("metrics") or {}), "version_info": m.get("version_info"),
                "training_data": snapshot, "code_version": "pyperfcore-demo",
                "input_schema": schema, "feature_version": "demo-features-1",
                "tags": {"team": "demo", "variant": key},
                "intended_use": "Demonstration of pyperfcore's serving path.",
                "caveats": "Synthetic evaluation; not for decisions about people."}
        if parent is not None:
            meta["parent"] = parent
        mv = reg.register("demo-model", m["path"], metadata=meta)
        ctx.log(f"registered {key} as {mv.ref} ({mv.size} bytes)")
        refs[key] = mv
        parent = parent or mv.ref
    target = next((mv for k, mv in refs.items() if "int8" in k), next(iter(refs.values())))
    reg.set_approval_policy(["ml", "risk"], by="demo-admin")
    reg.declare_serving("demo-model", input_schema=schema, feature_version="demo-features-1")
    refused = None
    try:
        reg.promote("demo-model", target.version, reason="demo rollout")
    except ApprovalRequired as e:
        refused = e.missing
        ctx.log(f"promotion refused as expected: missing {', '.join(e.missing)}")
    reg.approve("demo-model", target.version, role="ml", approver="ml-lead")
    reg.approve("demo-model", target.version, role="risk", approver="risk-officer")
    reg.promote("demo-model", target.version, reason="accuracy within budget")
    ctx.log(f"demo-model:production -> {target.ref}")
    served_same = _serve_from_registry(ctx, reg, target)

    card_path = work / "model_card.md"
    mv = reg.get("demo-model", "production")
    card = model_card(mv, approvals=reg.approvals(mv.name, mv.version), aliases=mv.aliases)
    card.save(card_path)
    card.save(work / "model_card.html")

    ledger = CostLedger(work / "cost.db", audit=reg.audit)
    ledger.set_price(Price("cpu-2core", hourly=0.096))
    served = int(ctx.data.get("predictions", 0)) if hasattr(ctx, "data") else 0
    served = served or 100_000
    t1 = time.time()
    ledger.record_usage(model="demo-model", version=target.version, instance="cpu-2core",
                        start=t1 - 3600, end=t1, busy_s=1800.0, requests=served,
                        tags={"team": "demo"})
    row = ledger.report()[0]
    ctx.log(f"cost per 1k predictions: ${row['cost_per_1k']:.5f} "
            f"(utilization {100 * row['utilization']:.0f}%)")

    checkpoints = reg.audit.export_checkpoints(work / "audit_checkpoints.jsonl")
    res = AuditLog(reg.audit.path).verify(checkpoints=work / "audit_checkpoints.jsonl")
    ctx.log(f"audit trail: {res.records} records, verified {'OK' if res.ok else 'FAILED'}")
    if not res.ok:
        raise RuntimeError("audit verification failed: " + "; ".join(map(str, res.problems)))
    return {"registered": {k: v.ref for k, v in refs.items()}, "production": target.ref,
            "production_int8_served_from_registry": served_same,
            "promotion_refused_missing": refused, "audit_records": res.records,
            "audit_ok": res.ok, "audit_root": res.root, "checkpoints": len(checkpoints),
            "model_card": str(card_path), "cost_per_1k": row["cost_per_1k"],
            "utilization": row["utilization"]}


def _serve_from_registry(ctx, reg, target):
    """What a serving replica does: load the production INT8 weights from the registry (checked
    against their SHA-256) into a fresh float model, without re-quantizing, and check it answers
    exactly as the model that was registered. None when no INT8 torch model was registered."""
    data = getattr(ctx, "data", {}) or {}
    if "quant.json" not in target.manifest or data.get("model") is None or data.get("model_int8") is None:
        return None
    import copy

    import numpy as np
    import torch

    from pyperfcore.quant.io import load_registered

    served = load_registered(reg, target.name, copy.deepcopy(data["model"]), "production")
    x = torch.from_numpy(np.asarray(data["eval"]["x"][:256], dtype=np.float32))
    with torch.inference_mode():
        same = bool(torch.equal(served(x), data["model_int8"](x)))
    ctx.log(f"a replica loads {target.ref} (production) from the registry into a fresh float model: "
            f"outputs {'identical to' if same else 'DIFFERENT from'} the registered INT8 model")
    if not same:
        raise RuntimeError("the INT8 model loaded from the registry does not reproduce the registered one")
    return same

