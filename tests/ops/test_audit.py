"""Audit log: chain, checkpoints, tamper detection, durability, concurrency, schema versions.

Store tests take the ``backend`` fixture (tests/ops/conftest.py) and run on SQLite and on a
real PostgreSQL server; the raw SQL an attacker would run goes through ``backend.execute``.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pyperfcore.ops import AccessPolicy, AuditLog, SchemaTooNew
from pyperfcore.ops.audit import SEGMENT, leaf_hash, merkle_root, node_hash, segment_leaves

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def log(backend):
    lg = AuditLog(backend.url("audit"), checkpoint_every=16)
    lg.append_many([{"kind": "k", "subject": f"s{i % 3}", "actor": "a", "i": i}
                    for i in range(100)])
    lg.backend = backend
    return lg


def _tamper(log, sql, args=()):
    """What an attacker with write access does: drop the append-only triggers and edit."""
    log.backend.execute(log.path, sql, args, tamper=True)


def _raw(log, sql, args=()):
    return log.backend.execute(log.path, sql, args)


def test_rfc6962_hashing_matches_definition():
    # RFC 6962 section 2.1: MTH({}) = SHA-256(); leaf 0x00 prefix; node 0x01 prefix.
    assert merkle_root([]) == hashlib.sha256(b"").digest()
    a, b, c = (leaf_hash(x) for x in (b"a", b"b", b"c"))
    assert a == hashlib.sha256(b"\x00a").digest()
    assert merkle_root([a, b, c]) == node_hash(node_hash(a, b), c)
    assert node_hash(a, b) == hashlib.sha256(b"\x01" + a + b).digest()


@pytest.mark.parametrize("n", [1, 2, 3, 63, 64, 65, 127, 128, 129, 300])
def test_incremental_checkpoints_match_recursive_oracle(tmp_path, n):
    # (SQLite only: the Merkle arithmetic does not depend on the store)
    lg = AuditLog(tmp_path / "a.db", checkpoint_every=7)
    for i in range(0, n, 5):  # several transactions, so the stored frontier is reused
        lg.append_many([{"i": j} for j in range(i, min(n, i + 5))])
    hashes = [bytes.fromhex(r["hash"]) for r in lg.records()]
    cps = lg.checkpoints()
    assert [c["tree_size"] for c in cps] == list(range(7, n + 1, 7))
    for c in cps:
        assert bytes.fromhex(c["root"]) == merkle_root(segment_leaves(hashes[:c["tree_size"]]))
    res = lg.verify()
    assert res.ok, res.problems
    assert bytes.fromhex(res.root) == merkle_root(segment_leaves(hashes))
    assert lg.export_checkpoints()[-1]["tree_size"] == n


def test_chain_links_each_record_to_the_previous(log):
    recs = log.records()
    assert [r["seq"] for r in recs] == list(range(1, 101))
    rows = _raw(log, "SELECT seq, prev, body, hash FROM audit_records ORDER BY seq")
    prev = bytes(32)
    for seq, p, body, h in rows:
        assert p == prev
        assert h == hashlib.sha256(b"\x00" + seq.to_bytes(8, "big") + p + body).digest()
        prev = h
    assert json.loads(rows[4][2])["record"]["i"] == 4


def test_verify_ok_and_append_only_triggers(log):
    assert log.verify().ok
    with pytest.raises(log.backend.errors, match="append-only"):
        _raw(log, "UPDATE audit_records SET hash = ? WHERE seq = 3", (b"\x00",))
    with pytest.raises(log.backend.errors, match="append-only"):
        _raw(log, "DELETE FROM audit_records WHERE seq = 3")
    if log.backend.is_pg:
        with pytest.raises(log.backend.errors, match="append-only"):
            _raw(log, "TRUNCATE audit_records")
    assert log.verify().ok and len(log) == 100


def test_edit_is_detected_and_located(log):
    body = _raw(log, "SELECT body FROM audit_records WHERE seq=40")[0][0]
    _tamper(log, "UPDATE audit_records SET body=? WHERE seq=40",
            (body.replace(b'"i":39', b'"i":99'),))
    res = log.verify()
    assert not res.ok
    assert [(p.seq, p.kind) for p in res.problems if p.kind == "edited"] == [(40, "edited")]


def test_edit_with_recomputed_hash_is_detected(log):
    prev, body = _raw(log, "SELECT prev, body FROM audit_records WHERE seq=40")[0]
    body = body.replace(b'"i":39', b'"i":77')
    h = hashlib.sha256(b"\x00" + (40).to_bytes(8, "big") + prev + body).digest()
    _tamper(log, "UPDATE audit_records SET body=?, hash=? WHERE seq=40", (body, h))
    res = log.verify()
    assert not res.ok
    assert any(p.seq == 40 and p.kind == "edited" for p in res.problems), res.problems


def test_deletion_is_detected(log):
    _tamper(log, "DELETE FROM audit_records WHERE seq IN (50, 51)")
    res = log.verify()
    assert not res.ok
    dels = [p for p in res.problems if p.kind == "deleted"]
    assert dels and dels[0].seq == 52 and "50..51" in dels[0].message


def test_tail_truncation_is_detected(log):
    _tamper(log, "DELETE FROM audit_records WHERE seq > 90")
    res = log.verify()
    assert not res.ok
    assert any(p.kind in ("head", "truncated") for p in res.problems)


def test_reorder_is_detected(log):
    r10 = _raw(log, "SELECT prev, body, hash FROM audit_records WHERE seq=10")[0]
    r11 = _raw(log, "SELECT prev, body, hash FROM audit_records WHERE seq=11")[0]
    _tamper(log, "UPDATE audit_records SET prev=?, body=?, hash=? WHERE seq=10", r11)
    _tamper(log, "UPDATE audit_records SET prev=?, body=?, hash=? WHERE seq=11", r10)
    res = log.verify()
    assert not res.ok
    assert {p.seq for p in res.problems if p.kind == "reordered"} == {10, 11}


def test_insertion_is_detected(log):
    # Shift records 61.. up by one and forge a well-formed record 61 linked to record 60.
    _tamper(log, "UPDATE audit_records SET seq = seq + 1000 WHERE seq > 60")
    _tamper(log, "UPDATE audit_records SET seq = seq - 999 WHERE seq > 1000")
    prev = _raw(log, "SELECT hash FROM audit_records WHERE seq=60")[0][0]
    body = b'{"record":{"forged":true},"seq":61,"ts":1.0}'
    h = hashlib.sha256(b"\x00" + (61).to_bytes(8, "big") + prev + body).digest()
    _tamper(log, "INSERT INTO audit_records(seq, prev, body, hash) VALUES (61,?,?,?)",
            (prev, body, h))
    res = log.verify()
    assert not res.ok
    ins = [p for p in res.problems if p.kind == "inserted"]
    assert ins and ins[0].seq == 62 and "this is record 61" in ins[0].message


def test_full_rewrite_is_caught_only_by_external_checkpoints(tmp_path, log):
    ext = tmp_path / "cps.jsonl"
    log.export_checkpoints(ext)
    # The attacker rebuilds a completely consistent log with one record changed.
    recs = log.records()
    recs[20]["record"]["i"] = -1
    log.close()
    log.backend.destroy(log.path)
    forged = AuditLog(log.path, checkpoint_every=16)
    for r in recs:
        forged.append(r["record"], ts=r["ts"])
    assert forged.verify().ok  # internally consistent...
    res = forged.verify(checkpoints=ext)  # ...but not the log the auditor saw
    assert not res.ok
    assert all(p.kind == "checkpoint" for p in res.problems)
    assert res.problems[0].seq == 32  # the first checkpoint covering record 21


def test_index_columns_cannot_hide_records(log):
    # subject is derived from the hashed body, so there is no unhashed copy to edit.
    with pytest.raises(log.backend.errors):
        _tamper(log, "UPDATE audit_records SET subject='other' WHERE seq=1")
    assert len(log.export_subject("s0")) == 34


# each example builds a fresh database (the fixture only hands out new URLs)
@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_byte_edit_is_detected(backend, data):
    path = backend.url("hyp")
    lg = AuditLog(path, checkpoint_every=4)
    lg.backend = backend
    n = data.draw(st.integers(1, 12))
    # fixed timestamp: the stored bytes (and so the drawn positions) must not depend on time
    lg.append_many([{"kind": "x", "v": data.draw(st.text(max_size=8))} for _ in range(n)],
                   ts=1000.5)
    seq = data.draw(st.integers(1, n))
    col = data.draw(st.sampled_from(["prev", "body", "hash"]))
    blob = bytearray(_raw(lg, f"SELECT {col} FROM audit_records WHERE seq=?", (seq,))[0][0])
    pos = data.draw(st.integers(0, len(blob) - 1))
    delta = data.draw(st.integers(1, 255))
    blob[pos] = (blob[pos] + delta) % 256
    try:
        _tamper(lg, f"UPDATE audit_records SET {col}=? WHERE seq=?", (bytes(blob), seq))
    except backend.errors as e:
        # The body's JSON feeds generated columns, so SQL cannot even store broken JSON.
        assert col == "body" and re.search("malformed JSON|invalid input syntax for type json|"
                                           "invalid byte sequence", str(e)), e
        lg.close()
        return
    res = lg.verify()
    lg.close()
    assert not res.ok
    assert any(p.seq in (seq, seq + 1) for p in res.problems), res.problems


def test_append_many_is_all_or_nothing(backend):
    lg = AuditLog(backend.url())
    lg.append({"ok": 1})
    with pytest.raises(TypeError):
        lg.append_many([{"ok": 2}, {"bad": object()}])
    with pytest.raises(TypeError):
        lg.append_many([{"ok": 2}, "not a mapping"])
    assert len(lg) == 1
    assert lg.append_many([]) == []
    assert lg.append_many([{"a": 1}, {"a": 2}]) == [2, 3]
    assert lg.verify().ok


def test_subject_export_and_decision_sampling(backend, tmp_path):
    lg = AuditLog(backend.url())
    for i in range(200):
        lg.log_decision(model="m", version=1, inputs={"x": i}, output=i % 2,
                        subject=f"user-{i % 10}", explanation={"top": "x"}, sample_rate=0.5)
    n = len(lg)
    assert 60 < n < 140  # deterministic hash sampling near the rate
    # the same input is always (or never) sampled
    again = lg.log_decision(model="m", version=1, inputs={"x": 0}, output=0, sample_rate=0.5)
    first = lg.log_decision(model="m", version=1, inputs={"x": 0}, output=0, sample_rate=0.5)
    assert (again is None) == (first is None)
    out = tmp_path / "subject.jsonl"
    recs = lg.export_subject("user-3", out)
    assert recs and all(r["record"]["subject"] == "user-3" for r in recs)
    assert all("input_sha256" in r["record"] and "x" not in r["record"] for r in recs)
    assert len(out.read_text().splitlines()) == len(recs)
    assert lg.export_subject("nobody") == []


def test_access_policy_redacts_hashes_and_filters(tmp_path):
    # (the policy is applied before any store sees the record: SQLite shows it on the file)
    pol = AccessPolicy(pii={"email": "redact", "user.id": "hash", "ssn": "drop"},
                       roles={"analyst": ["score"], "auditor": "*"}, key=b"k" * 32)
    lg = AuditLog(tmp_path / "a.db", policy=pol)
    lg.append({"kind": "decision", "email": "a@b.c", "user": {"id": 42}, "ssn": "1",
               "score": 0.3})
    lg.append({"kind": "decision", "email": "x@y.z", "user": {"id": 42}, "score": 0.5})
    raw = Path(lg.path).read_bytes() + Path(lg.path + "-wal").read_bytes()
    assert b"a@b.c" not in raw
    full = lg.records(role="auditor")
    assert full[0]["record"]["email"] == "[REDACTED]" and "ssn" not in full[0]["record"]
    h = full[0]["record"]["user"]["id"]
    assert h.startswith("hmac-sha256:") and h == full[1]["record"]["user"]["id"]
    assert lg.records(role="analyst")[0]["record"] == {"kind": "decision", "score": 0.3}
    with pytest.raises(PermissionError):
        lg.records(role="intern")
    with pytest.raises(ValueError):
        AccessPolicy(pii={"x": "hash"})


_WRITER = textwrap.dedent("""
    import sys
    from pyperfcore.ops import AuditLog
    log = AuditLog(sys.argv[1], checkpoint_every=10)
    i = 0
    while True:
        seqs = log.append_many([{"kind": "w", "i": i + k, "pad": "x" * 200} for k in range(7)])
        print(seqs[-1], flush=True)
        i += 7
""")


def test_sigkill_mid_write_loses_no_committed_record(backend):
    path = backend.url("kill")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for round_ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)],
                                stdout=subprocess.PIPE, env=env, text=True)
        acked = 0
        deadline = time.monotonic() + 30
        while acked < 200 * (round_ + 1) and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked = int(line)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert acked > 0
        lg = AuditLog(path)
        res = lg.verify()
        assert res.ok, res.problems
        assert len(lg) >= acked  # every acknowledged record survived
        assert len(lg) % 7 == 0  # batches are whole: none was half-written
        lg.close()


def test_concurrent_threads(backend):
    lg = AuditLog(backend.url(), checkpoint_every=50)
    errors = []

    def work(t):
        try:
            for i in range(60):
                lg.append({"kind": "t", "thread": t, "i": i})
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)
    ts = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors
    assert len(lg) == 240
    res = lg.verify()
    assert res.ok and res.checkpoints_checked == 4


def _proc_writer(args):
    path, w = args
    lg = AuditLog(path, checkpoint_every=50)
    for i in range(0, 80, 4):
        lg.append_many([{"kind": "p", "w": w, "i": i + k} for k in range(4)])
    lg.close()
    return w


def test_concurrent_processes(backend):
    path = backend.url("procs")
    AuditLog(path).close()
    # spawn, not fork: an SQLite connection must never be inherited across fork()
    with ProcessPoolExecutor(3, mp_context=multiprocessing.get_context("spawn")) as ex:
        assert sorted(ex.map(_proc_writer, [(path, w) for w in range(3)])) == [0, 1, 2]
    lg = AuditLog(path)
    assert len(lg) == 240
    assert lg.verify().ok
    per = {}
    for r in lg.records():
        per.setdefault(r["record"]["w"], []).append(r["record"]["i"])
    assert all(v == list(range(80)) for v in per.values())  # each writer's order preserved


def test_newer_schema_is_a_clear_error(backend):
    path = backend.url()
    AuditLog(path).append({"x": 1})
    backend.execute(path, "UPDATE pyperfcore_schema SET version=99 WHERE store='audit'")
    with pytest.raises(SchemaTooNew, match="version 99.*newer.*upgrade pyperfcore"):
        AuditLog(path)
    assert backend.execute(path, "SELECT COUNT(*) FROM audit_records") == [(1,)]


def test_rejects_bad_input(tmp_path):
    lg = AuditLog(tmp_path / "a.db")
    with pytest.raises(TypeError):
        lg.append(None)
    with pytest.raises(ValueError):
        lg.append({"x": float("nan")})
    with pytest.raises(ValueError):
        AuditLog(tmp_path / "b.db", checkpoint_every=0)
    with pytest.raises(ValueError, match="unsupported"):
        AuditLog("mysql://host/db")
    assert len(lg) == 0 and lg.verify().ok


def test_byte_flip_in_the_database_file_is_detected(tmp_path):
    path = tmp_path / "a.db"
    lg = AuditLog(path)
    lg.append_many([{"kind": "x", "note": f"MARKER{i:04d}"} for i in range(50)])
    lg.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    data = bytearray(path.read_bytes())
    pos = data.index(b"MARKER0017")
    data[pos + 6] ^= 0x01  # MARKER0017 -> MARKER1017, still valid JSON
    path.write_bytes(bytes(data))
    res = AuditLog(path).verify()
    assert not res.ok
    assert [(p.seq, p.kind) for p in res.problems] == [(18, "edited")]


def test_nul_and_unicode_in_records(backend):
    # PostgreSQL's JSON parser cannot extract from documents with a \u0000 escape; the derived
    # columns must still work and the hashed body must keep the exact text.
    lg = AuditLog(backend.url())
    lg.append_many([{"kind": "x", "subject": "s1", "note": "a\x00b", "t": "\\u0000 é 🙂"},
                    {"kind": "y", "subject": "s2", "n": "\x00"}])
    assert lg.verify().ok
    recs = lg.records()
    assert recs[0]["record"]["note"] == "a\x00b" and recs[0]["record"]["t"] == "\\u0000 é 🙂"
    assert [r["seq"] for r in lg.export_subject("s1")] == [1]
    assert [r["seq"] for r in lg.records(kind="x")] == [1]


_json = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=6)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=4), kids,
                                                              max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(rec=st.dictionaries(st.text(max_size=5), _json, max_size=6))
def test_fast_record_encoder_writes_canonical_json(rec):
    # Appends use a prebuilt C encoder; existing logs verify only if its bytes are exactly
    # those of canonical_json.
    from pyperfcore.ops._db import canonical_json
    from pyperfcore.ops.audit import _encode_record
    assert _encode_record(rec) == canonical_json(rec)


def test_fast_record_encoder_errors_leave_it_usable():
    from pyperfcore.ops.audit import _encode_record
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="Circular"):
        _encode_record(loop)
    with pytest.raises(TypeError, match="not JSON serialisable"):
        _encode_record({"a": [1, {"b": object()}]})
    assert _encode_record({"b": [1, 2], "a": {"y": 1, "x": 2.5}}) == \
        '{"a":{"x":2.5,"y":1},"b":[1,2]}'
