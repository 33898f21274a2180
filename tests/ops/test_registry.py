"""Registry: artifacts, aliases and history, lifecycle, approvals, serving checks, retention,
events/outbox, bundles, OpenLineage, schema migration; on SQLite and PostgreSQL (``backend``)."""
from __future__ import annotations

import io
import json
import pickle
import sqlite3
import tarfile
import time
import warnings

import numpy as np
import pytest

from pyperfcore.ops import (ApprovalRequired, DeprecatedVersionWarning, IntegrityError,
                            LifecycleError, NotFound, Registry, SchemaMismatch, SchemaTooNew,
                            UnsafeArtifact)
from pyperfcore.ops import registry as registry_mod


def _npy(arr) -> bytes:
    b = io.BytesIO()
    np.save(b, arr)
    return b.getvalue()


META = {"input_schema": {"x": "float32", "y": "int64"}, "feature_version": "fs-3",
        "metrics": {"accuracy": 0.91}, "tags": {"team": "fraud"},
        "training_data": {"uri": "s3://bucket/snap-1", "sha256": "ab" * 32}}


@pytest.fixture
def reg(backend):
    r = backend.registry("reg", user="alice")
    r.backend = backend
    r.register("m", {"w.npy": _npy(np.arange(6.0))}, metadata=META)
    return r


def test_content_addressed_and_deduplicated(reg, tmp_path):
    data = _npy(np.arange(6.0))
    v2 = reg.register("m", {"w.npy": data, "conf/cfg.json": b"{}"}, metadata=META)
    assert v2.version == 2
    sha = v2.manifest["w.npy"]["sha256"]
    assert sha == reg.get("m", 1).manifest["w.npy"]["sha256"]
    assert reg.store.path_of(sha).read_bytes() == data
    assert len(reg.store.all_hashes()) == 2  # same bytes stored once
    f = tmp_path / "model.onnx"
    f.write_bytes(b"onnx-bytes")
    v3 = reg.register("m", f)
    assert list(v3.manifest) == ["model.onnx"] and v3.manifest["model.onnx"]["format"] == "onnx"


@pytest.mark.parametrize("name", ["../x.npy", "/etc/passwd", "a/../../b.npy", "a\\b.npy",
                                  "", "a//b.npy", "./a.npy", "C:evil.npy", "a\x00.npy"])
def test_path_traversal_rejected(reg, name):
    with pytest.raises(UnsafeArtifact):
        reg.register("m", {name: b"x"})
    assert len(reg.versions("m")) == 1


def test_pickle_refused_unless_opted_in(reg):
    with pytest.raises(UnsafeArtifact, match="pickle"):
        reg.register("m", {"model.pkl": pickle.dumps([1])})
    with pytest.raises(UnsafeArtifact, match="pickle"):
        reg.register("m", {"disguised.npy": pickle.dumps([1])})  # content sniffed
    with pytest.raises(UnsafeArtifact):
        reg.register("m", {"obj.npy": _npy(np.array([{"a": 1}], dtype=object))})
    with pytest.raises(UnsafeArtifact, match="no known safe format"):
        reg.register("m", {"weights.xyz": b"123"})
    mv = reg.register("m", {"model.pkl": pickle.dumps([1])}, allow_pickle=True)
    assert mv.manifest["model.pkl"]["format"] == "pickle"
    with pytest.raises(LifecycleError, match="pickle"):
        reg.load("m", mv.version)
    assert reg.load("m", mv.version, allow_pickle=True)


def test_load_is_memory_mapped_and_integrity_checked(reg, tmp_path):
    arrs = reg.load("m", 1)
    assert isinstance(arrs["w.npy"], np.memmap) and arrs["w.npy"].tolist() == list(range(6))
    # A second registry object with a local sha256 cache: copied once, then reused.
    cache = tmp_path / "cache"
    r2 = reg.backend.reopen(reg, cache_dir=cache)
    p = r2.artifact_path("m", 1)
    assert p.parent == cache and p.name == reg.get("m", 1).manifest["w.npy"]["sha256"]
    assert r2.artifact_path("m", 1) == p
    # Corrupt the store's blob: a fresh registry object refuses to hand it out.
    blob = reg.store.path_of(reg.get("m", 1).manifest["w.npy"]["sha256"])
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x01")
    with pytest.raises(IntegrityError, match="tampered"):
        reg.backend.reopen(reg).load("m", 1)


def test_metadata_lineage_and_search(reg):
    reg.register("m", {"w.npy": _npy(np.ones(2))},
                 metadata={**META, "parent": "m:1", "metrics": {"accuracy": 0.95},
                           "tags": {"team": "risk"}})
    with pytest.raises(NotFound):
        reg.register("m", {"w.npy": b"\x93NUMPY"}, metadata={"parent": "m:99"})
    with pytest.raises(ValueError, match="name:version"):
        reg.register("m", {"w.npy": b"x"}, metadata={"parent": "nonsense"})
    assert [v.ref for v in reg.lineage("m", 2)] == ["m:2", "m:1"]
    assert [v.version for v in reg.search(metrics={"accuracy": (">=", 0.93)})] == [2]
    assert [v.version for v in reg.search(tags={"team": "fraud"})] == [1]
    assert [v.version for v in reg.search(stage="candidate", name="m")] == [1, 2]
    assert reg.search(where=lambda v: v.size > 10**9) == []
    with pytest.raises(ValueError):
        reg.search(metrics={"accuracy": 0.9})


def _approve_all(reg, version, roles=("legal", "risk", "ml")):
    for i, role in enumerate(roles):
        reg.approve("m", version, role=role, approver=f"person{i}")


def test_promotion_requires_approvals_and_names_missing(reg):
    reg.set_approval_policy(["legal", "risk", "ml"], by="admin")
    with pytest.raises(ApprovalRequired) as ei:
        reg.promote("m", 1)
    assert ei.value.missing == ["legal", "ml", "risk"]
    reg.approve("m", 1, role="legal", approver="lea")
    with pytest.raises(ApprovalRequired, match="missing sign-offs: ml, risk"):
        reg.promote("m", 1)
    assert reg.get("m", 1).stage == "candidate"
    reg.approve("m", 1, role="risk", approver="lea")  # same person, second role
    reg.approve("m", 1, role="ml", approver="max")
    with pytest.raises(ApprovalRequired, match="lea signed legal, risk"):
        reg.promote("m", 1)
    reg.approve("m", 1, role="risk", approver="rita")
    assert reg.get("m", 1).stage == "approved"
    assert reg.promote("m", 1, by="ops", reason="go").stage == "production"
    kinds = [r["record"]["kind"] for r in reg.audit.records()]
    assert kinds.count("approved") == 4 and "policy_changed" in kinds and "promoted" in kinds
    assert reg.audit.verify().ok


def test_schema_and_feature_version_checked_on_promotion(reg):
    reg.declare_serving("m", input_schema={"x": "float32", "z": "float32"},
                        feature_version="fs-4")
    with pytest.raises(SchemaMismatch) as ei:
        reg.promote("m", 1)
    diffs = "\n".join(ei.value.differences)
    assert "feature_version" in diffs and "'y'" in diffs and "'z'" in diffs
    reg.declare_serving("m", input_schema=META["input_schema"], feature_version="fs-3")
    assert reg.promote("m", 1).stage == "production"
    with pytest.raises(SchemaMismatch):
        reg.promote("m", 1, alias="canary", serving={"input_schema": {"x": "float64",
                                                                      "y": "int64"}})


def test_alias_history_who_why_when_and_rollback(reg):
    for _ in range(2):
        reg.register("m", {"w.npy": _npy(np.zeros(1))}, metadata=META)
    t0 = time.time()
    reg.promote("m", 1, by="ann", reason="launch")
    reg.promote("m", 2, by="bob", reason="better recall")
    t_mid = time.time()
    reg.set_alias("m", "canary", 3, by="cid", reason="try")
    reg.rollback("m", by="dan", reason="latency regression")
    hist = reg.alias_history("m", "production")
    assert [h["version"] for h in hist] == [1, 2, 1]
    assert hist[0]["set_by"] == "ann" and hist[0]["reason"] == "launch"
    assert hist[0]["ended_by"] == "bob" and hist[0]["end_reason"] == "better recall"
    assert hist[1]["ended_by"] == "dan" and hist[1]["end_reason"] == "latency regression"
    assert hist[0]["from_ts"] >= t0 and hist[0]["to_ts"] == hist[1]["from_ts"]
    assert hist[-1]["to_ts"] is None
    assert reg.alias_at("m", "production", t_mid) == 2
    assert reg.alias_at("m", "production", t0 - 100) is None
    assert reg.get("m", 2).stage == "approved" and reg.get("m", 1).stage == "production"
    assert reg.aliases("m")["canary"]["version"] == 3
    assert "rollback" in [r["record"]["kind"] for r in reg.audit.records()]


def test_alias_cache_sees_moves_from_another_process_connection(reg, tmp_path):
    reg.register("m", {"w.npy": _npy(np.zeros(1))}, metadata=META)
    reg.promote("m", 1)
    assert reg.resolve("m", "production") == 1
    other = reg.backend.reopen(reg)  # stands in for another replica (own connection)
    other.promote("m", 2)
    assert reg.resolve("m", "production") == 2
    assert reg.get("m", "latest").version == 2 and reg.get("m:production").version == 2
    with pytest.raises(NotFound):
        reg.resolve("m", "nope")


def test_lifecycle_transitions_and_deprecation_notice(reg):
    reg.register("m", {"w.npy": _npy(np.zeros(1))}, metadata=META)
    reg.promote("m", 1)
    with pytest.raises(LifecycleError, match="alias"):
        reg.set_stage("m", 1, "deprecated")
    with pytest.raises(LifecycleError, match="promote"):
        reg.set_stage("m", 2, "production")
    reg.deprecate("m", 2, notice="use m:1; v2 leaks labels")
    with pytest.warns(DeprecatedVersionWarning, match="leaks labels"):
        reg.load("m", 2)
    with pytest.raises(LifecycleError):
        reg.promote("m", 2)
    reg.set_stage("m", 2, "archived")
    with pytest.raises(LifecycleError, match="archived"):
        reg.load("m", 2)
    with pytest.raises(LifecycleError, match="cannot go from archived"):
        reg.set_stage("m", 2, "candidate")


def test_retention_dry_run_then_apply(reg):
    for _ in range(4):
        reg.register("m", {"w.npy": _npy(np.random.default_rng().random(3))}, metadata=META)
    reg.promote("m", 1)
    reg.set_alias("m", "shadow", 2)
    plan = reg.retention(keep_last=2)
    assert plan.dry_run and {a["version"] for a in plan.actions} == {3}
    assert all(v.stage != "archived" for v in reg.versions("m"))  # dry run changed nothing
    reasons = {k["version"]: k["reason"] for k in plan.kept}
    assert reasons[1] == "an alias points to it" and reasons[5] == "within policy"
    applied = reg.retention(keep_last=2, dry_run=False, by="janitor")
    assert applied.actions == plan.actions and reg.get("m", 3).stage == "archived"
    sha3 = reg.get("m", 3).manifest["w.npy"]["sha256"]
    plan2 = reg.retention(delete_archived_after_s=0, dry_run=False)
    assert [(a["version"], a["action"]) for a in plan2.actions] == [(3, "delete")]
    with pytest.raises(NotFound):
        reg.get("m", 3)
    assert not reg.store.exists(sha3)
    assert reg.audit.verify().ok


def test_events_subscribers_and_durable_outbox(reg):
    seen = []
    unsub = reg.subscribe(seen.append, kinds={"promoted", "registered"})
    reg.subscribe(lambda e: 1 / 0)  # a failing subscriber is reported, never fatal
    with pytest.warns(RuntimeWarning, match="subscriber"):
        reg.register("m", {"w.npy": _npy(np.zeros(1))})
    with pytest.warns(RuntimeWarning):
        reg.promote("m", 2)
    assert [e["kind"] for e in seen] == ["registered", "promoted"]
    unsub()
    pending = reg.outbox()
    assert [p["event"]["kind"] for p in pending][:2] == ["registered", "registered"]
    # a webhook that fails once, then works: delivered exactly after success, retried later
    calls = []

    def flaky(ev):
        calls.append(ev["id"])
        if len(calls) == 1:
            raise ConnectionError("503")
    r = reg.deliver_outbox(flaky, backoff_s=0.0)
    assert r["failed"] == 1 and r["delivered"] == len(pending) - 1
    r = reg.deliver_outbox(flaky, backoff_s=0.0)
    assert r == {"delivered": 1, "failed": 0} and reg.outbox() == []
    # the outbox survives a restart: a fresh object sees the same rows
    assert len(reg.backend.reopen(reg).outbox(pending_only=False)) == len(pending)


def test_bundle_round_trip_and_tampered_bundle(reg, tmp_path):
    reg.approve("m", 1, role="ml", approver="x")
    path = reg.export_bundle("m", 1, tmp_path / "m1.tar.gz")
    with tarfile.open(path) as t:
        names = set(t.getnames())
        doc = json.loads(t.extractfile("bundle.json").read())
    assert {"bundle.json", "card.md", "audit.jsonl", "artifacts/w.npy"} <= names
    assert doc["metadata"]["training_data"]["uri"] == "s3://bucket/snap-1"
    other = reg.backend.registry("other")
    mv = other.import_bundle(path)
    assert mv.manifest["w.npy"]["sha256"] == reg.get("m", 1).manifest["w.npy"]["sha256"]
    assert mv.metadata["imported_from"]["version"] == 1
    np.testing.assert_array_equal(other.load("m", mv.version)["w.npy"], np.arange(6.0))
    # tampered artifact in a bundle is refused
    bad = tmp_path / "bad.tar"
    with tarfile.open(path) as src, tarfile.open(bad, "w") as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()
            if m.name == "artifacts/w.npy":
                data = data[:-1] + b"\x07"
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
    with pytest.raises(IntegrityError):
        other.import_bundle(bad)


def test_openlineage_events(reg):
    reg.register("m", {"w.npy": _npy(np.zeros(1))},
                 metadata={**META, "parent": "m:1", "code_version": "abc123"})
    evs = reg.openlineage_events("m", 2)
    assert [e["eventType"] for e in evs] == ["START", "COMPLETE"]
    e = evs[1]
    assert e["schemaURL"].startswith("https://openlineage.io/spec/")
    assert e["run"]["runId"] == evs[0]["run"]["runId"] == reg.openlineage_events("m", 2)[0][
        "run"]["runId"]
    assert e["job"]["name"] == "train/m"
    assert {i["name"] for i in e["inputs"]} == {"s3://bucket/snap-1", "model/m:1"}
    out = e["outputs"][0]
    assert out["name"] == "model/m:2"
    assert [f["name"] for f in out["facets"]["schema"]["fields"]] == ["x", "y"]
    json.dumps(evs)


def _version_1_registry(backend, tmp_path):
    """A version-1 registry database, as an older pyperfcore wrote it; returns a Registry
    factory for it."""
    if backend.is_pg:
        import psycopg
        from pyperfcore.ops._pg import PgConnection, split_url
        url = backend.url("old")
        conninfo, schema = split_url(url)
        with psycopg.connect(conninfo, autocommit=True) as raw:
            raw.execute(f'CREATE SCHEMA "{schema}"')
            raw.execute(f'SET search_path TO "{schema}"')
            raw.execute("CREATE TABLE pyperfcore_schema (store TEXT PRIMARY KEY, version "
                        "INTEGER NOT NULL, updated DOUBLE PRECISION)")
            with raw.transaction():
                registry_mod._pg_v1(PgConnection(raw))
                raw.execute("INSERT INTO reg_outbox(ts, kind, payload) VALUES "
                            "(1, 'registered', '{}')")
                raw.execute("INSERT INTO pyperfcore_schema VALUES ('registry', 1, 0)")
        return url, lambda: Registry(url, objects_dir=tmp_path / "objs")
    root = tmp_path / "reg"
    root.mkdir()
    conn = sqlite3.connect(root / "registry.db", isolation_level=None)
    conn.execute("CREATE TABLE pyperfcore_schema (store TEXT PRIMARY KEY, version INTEGER "
                 "NOT NULL, updated REAL)")
    conn.execute("BEGIN")
    registry_mod._v1(conn)
    conn.execute("INSERT INTO reg_outbox(ts, kind, payload) VALUES (1, 'registered', '{}')")
    conn.execute("INSERT INTO pyperfcore_schema VALUES ('registry', 1, 0)")
    conn.execute("COMMIT")
    conn.close()
    return str(root / "registry.db"), lambda: Registry(root)


def test_schema_migrates_forward_and_refuses_newer(backend, tmp_path):
    assert len(registry_mod.MIGRATIONS) == len(registry_mod.PG_MIGRATIONS)
    db, open_registry = _version_1_registry(backend, tmp_path)
    r = open_registry()
    assert len(r.outbox()) == 1  # old rows kept, new column filled in
    r.declare_serving("m", feature_version="f")  # table added by migration 2
    r.close()
    assert backend.execute(db, "SELECT version FROM pyperfcore_schema WHERE store='registry'"
                           ) == [(len(registry_mod.MIGRATIONS),)]
    backend.execute(db, "UPDATE pyperfcore_schema SET version=7 WHERE store='registry'")
    with pytest.raises(SchemaTooNew, match="version 7"):
        open_registry()


def test_bad_names_and_urls(tmp_path):
    r = Registry(tmp_path / "r")
    for bad in ("", "a:b", "a/b", "123", " x"):
        with pytest.raises(ValueError):
            r.register(bad, {"a.npy": _npy(np.zeros(1))})
    with pytest.raises(ValueError, match="unsupported"):
        Registry("mysql://localhost/db")
    with pytest.raises(ValueError, match="objects_dir"):
        Registry("postgresql://localhost/db")
    with pytest.raises(ValueError, match="schema name"):
        Registry("postgresql://localhost/db?schema=a;drop", objects_dir=tmp_path / "o")
    with pytest.raises(ValueError):
        r.register("m", {})


def test_concurrent_registrations_and_alias_moves(backend):
    # Replicas (here: threads with their own Registry objects) register and promote at once:
    # version numbers stay unique and dense, and the shared audit chain stays intact.
    import threading
    base = backend.registry("conc")
    base.register("m", {"w.npy": _npy(np.zeros(1))})
    errors = []

    def work(t):
        try:
            r = backend.reopen(base)
            for i in range(4):
                mv = r.register("m", {"w.npy": _npy(np.full(2, t * 10 + i))})
                r.set_alias("m", f"canary{t}", mv.version, by=f"t{t}")
            r.close()
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
    assert [v.version for v in base.versions("m")] == list(range(1, 18))
    assert all(len(base.alias_history("m", f"canary{t}")) == 4 for t in range(4))
    res = base.audit.verify()
    assert res.ok and res.records == 1 + 16 * 2
