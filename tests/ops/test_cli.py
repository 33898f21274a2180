"""The ops CLI through an argparse parser built the way the main CLI builds it."""
from __future__ import annotations

import argparse
import io
import json
import sqlite3
from contextlib import redirect_stdout
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from pyperfcore.ops import CostLedger, Price
from pyperfcore.ops.cli import register


def run(*argv):
    parser = argparse.ArgumentParser(prog="pyperfcore")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(list(argv))
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = args.func(args)
    return rc, buf.getvalue()


def test_registry_workflow(tmp_path):
    r = ["--registry", str(tmp_path / "reg")]
    art = tmp_path / "w.npy"
    np.save(art, np.arange(3.0))
    meta = json.dumps({"metrics": {"acc": 0.9}, "intended_use": "tests"})
    rc, out = run("registry", "register", "m", str(art), "--metadata", meta, "--json", *r)
    assert rc == 0 and json.loads(out)["version"] == 1
    rc, out = run("registry", "register", "m", f"weights.npy={art}", *r)
    assert rc == 0 and "registered m:2" in out
    rc, out = run("registry", "list", "--json", *r)
    assert [(v["name"], v["version"]) for v in json.loads(out)] == [("m", 1), ("m", 2)]
    rc, out = run("registry", "promote", "m", "1", "--by", "ann", "--reason", "go", *r)
    assert rc == 0 and "production -> version 1" in out
    rc, out = run("registry", "alias", "m", "canary", "2", "--reason", "try", *r)
    assert rc == 0
    rc, out = run("registry", "alias", "m", "production", "--json", *r)
    hist = json.loads(out)
    assert hist[0]["set_by"] == "ann" and hist[0]["reason"] == "go"
    rc, out = run("registry", "show", "m:production", "--json", *r)
    assert json.loads(out)["version"] == 1 and json.loads(out)["stage"] == "production"
    rc, out = run("registry", "retention", "--keep-last", "0", "--json", *r)
    plan = json.loads(out)
    assert plan["dry_run"] and plan["actions"] == []  # both versions behind aliases
    rc, out = run("card", "m:1", *r)
    assert rc == 0 and "## Intended use" in out and "tests" in out
    rc, out = run("card", "m:1", "--html", "--out", str(tmp_path / "c.html"), *r)
    assert (tmp_path / "c.html").read_text().startswith("<!DOCTYPE html>")
    rc, out = run("audit", "verify", "--json", *r)
    assert rc == 0 and json.loads(out)["ok"]


def test_refusals_and_failures_have_exit_codes(tmp_path):
    from pyperfcore.ops import Registry
    reg = Registry(tmp_path / "reg")
    reg.register("m", {"a.json": b"{}"})
    reg.set_approval_policy(["legal"])
    r = ["--registry", str(tmp_path / "reg")]
    rc, out = run("registry", "promote", "m", "1", "--json", *r)
    assert rc == 1 and json.loads(out)["missing"] == ["legal"]
    rc, out = run("registry", "show", "nope", "--json", *r)
    assert rc == 2 and json.loads(out)["error"] == "NotFound"
    conn = sqlite3.connect(tmp_path / "reg" / "registry.db")
    conn.execute("DROP TRIGGER audit_no_delete")
    conn.execute("DELETE FROM audit_records WHERE seq = 1")
    conn.commit()
    rc, out = run("audit", "verify", *r)
    assert rc == 1 and "FAILED" in out


def test_cost_report(tmp_path):
    db = tmp_path / "cost.db"
    led = CostLedger(db, prices=[Price("cpu", hourly=1.0)])
    led.record_usage(model="m", version=1, instance="cpu", start=0, end=3600, busy_s=1800,
                     requests=2000, tags={"team": "t"})
    rc, out = run("cost", "report", "--db", str(db), "--json")
    rows = json.loads(out)
    assert rc == 0 and rows[0]["cost_per_1k"] == pytest.approx(0.5)
    rc, out = run("cost", "report", "--db", str(db), "--by", "team")
    assert "team=t" in out and "per 1k 0.5000" in out


def test_demo_stage_without_models(tmp_path):
    from pyperfcore.demo import stage_ops
    logs = []
    ctx = SimpleNamespace(workdir=Path(tmp_path), log=logs.append, models={})
    out = stage_ops.run(ctx)
    assert out["audit_ok"] and out["promotion_refused_missing"] == ["ml", "risk"]
    assert out["production"] == "demo-model:2" and out["cost_per_1k"] > 0
    assert Path(out["model_card"]).read_text().startswith("# Model card")
    assert any("verified OK" in line for line in logs)


def test_demo_stage_with_given_models(tmp_path):
    from pyperfcore.demo import stage_ops
    paths = {}
    for k in ("fp32", "int8"):
        p = tmp_path / f"{k}.npz"
        np.savez(p, w=np.ones(3, dtype=np.float32 if k == "fp32" else np.int8))
        paths[k] = {"path": str(p), "metrics": {"acc": 0.9}, "version_info": {"k": k}}
    ctx = SimpleNamespace(workdir=tmp_path / "w", log=lambda s: None, models=paths)
    out = stage_ops.run(ctx)
    assert out["registered"] == {"fp32": "demo-model:1", "int8": "demo-model:2"}


def test_import_is_light():
    import subprocess
    import sys
    code = ("import sys, pyperfcore.ops; bad = [m for m in ('torch', 'triton', 'mlflow', "
            "'psycopg', 'safetensors', 'jinja2', 'pandas') if m in sys.modules]; "
            "assert not bad, bad")
    env_path = str(Path(__file__).resolve().parents[2])
    subprocess.run([sys.executable, "-c", code], check=True,
                   env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})


def test_postgres_registry_verify_progress_and_proofs(backend, tmp_path, capsys):
    from pyperfcore.ops import Registry
    if backend.is_pg:
        url = backend.url("cli")
        r = ["--registry", url, "--objects", str(tmp_path / "objs")]
        reg = Registry(url, objects_dir=tmp_path / "objs")
    else:
        r = ["--registry", str(tmp_path / "reg")]
        reg = Registry(tmp_path / "reg")
    reg.register("m", {"a.json": b"{}"})
    reg.audit.append_many([{"kind": "x", "i": i} for i in range(300)])
    kept = reg.audit.export_checkpoints()
    rc, out = run("registry", "show", "m:1", "--json", *r)
    assert rc == 0 and json.loads(out)["version"] == 1
    rc, out = run("audit", "verify", "--progress", *r)
    err = capsys.readouterr().err
    assert rc == 0 and "OK: 301 records" in out
    assert "verify [" in err and "301/301 (100%)" in err
    root = kept[-1]["root"]
    rc, out = run("audit", "prove", "--seq", "17", "--root", root, "--json", *r)
    assert rc == 0 and json.loads(out)["verified"] is True
    rc, out = run("audit", "prove", "--old-size", "1", "--old-root", "11" * 32, "--root", root,
                  *r)
    assert rc == 1 and "PROOF FAILED" in out  # a wrong old root is refused
    first = reg.audit.inclusion_proof(1, 1)["root"]
    rc, out = run("audit", "prove", "--old-size", "1", "--old-root", first, "--root", root,
                  "--json", *r)
    assert rc == 0 and json.loads(out)["verified"] is True
    rc, out = run("audit", "prove", "--seq", "17", "--root", "00" * 32, *r)
    assert rc == 1 and "PROOF FAILED" in out
