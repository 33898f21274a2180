"""Append-only, tamper-evident audit log on SQLite.

Each record ``i`` is stored as ``(seq, prev, body, hash)`` with

    hash_i = SHA-256(0x00 || seq_i as 8 bytes big-endian || hash_{i-1} || body_i)

(the RFC 6962 leaf hashing of the entry ``seq || prev || body``). The hashes chain the records:
an edit, deletion, insertion or reordering breaks a link. Records are also covered by an RFC 6962
Merkle tree (leaf = SHA-256(0x00 || entry), node = SHA-256(0x01 || left || right)) whose leaf
entries are *segments*: the concatenated record hashes of records 64k+1 .. 64k+64 (the last
segment may be shorter). Grouping keeps verification near one SHA-256 per record instead of two
(a proof for one record is its segment's 64 hashes plus the usual audit path). The Merkle root is
written as a checkpoint every ``checkpoint_every`` records. Someone who can write the database can rebuild the
whole chain, so checkpoints are meant to be exported (:meth:`AuditLog.export_checkpoints`) and kept
elsewhere; ``verify(checkpoints=...)`` then proves the log still extends them.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

from ._db import Database, OpsError, canonical_json, now, run_script
from .access import AccessPolicy

__all__ = ["AuditLog", "VerifyResult", "Problem", "merkle_root", "leaf_hash", "node_hash"]

_ZERO = bytes(32)
_SEQ = struct.Struct(">Q").pack
_sha256 = hashlib.sha256


def leaf_hash(entry: bytes) -> bytes:
    """RFC 6962 leaf hash: SHA-256(0x00 || entry)."""
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 6962 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(b"\x01" + left + right).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """RFC 6962 Merkle Tree Hash of already leaf-hashed ``leaves`` (recursive definition).

    Slow and obviously right: used by tests as the oracle for the incremental frontier.
    """
    n = len(leaves)
    if n == 0:
        return _sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1 << ((n - 1).bit_length() - 1)  # largest power of two < n
    return node_hash(merkle_root(leaves[:k]), merkle_root(leaves[k:]))


SEGMENT = 64  # record hashes per Merkle leaf entry; part of the format, never change it


def _frontier_push(stack: list, count: int, h: bytes) -> None:
    """Add leaf number ``count`` (0-based) to the list of perfect-subtree roots."""
    stack.append(h)
    c = count + 1
    while not c & 1:
        r = stack.pop()
        stack[-1] = _sha256(b"\x01" + stack[-1] + r).digest()
        c >>= 1


def _frontier_root(stack: list) -> bytes:
    if not stack:
        return _sha256(b"").digest()
    r = stack[-1]
    for left in reversed(stack[:-1]):
        r = _sha256(b"\x01" + left + r).digest()
    return r


class _Tree:
    """Merkle state over record hashes: roots of the complete-segment subtrees plus the record
    hashes of the incomplete last segment. Both are stored in ``audit_head``."""

    __slots__ = ("stack", "nseg", "tail")

    def __init__(self, frontier: bytes = b"", tail: bytes = b"", n_records: int = 0):
        self.stack = [frontier[i:i + 32] for i in range(0, len(frontier), 32)]
        self.tail = [tail[i:i + 32] for i in range(0, len(tail), 32)]
        self.nseg = n_records // SEGMENT

    def add(self, h: bytes) -> None:
        self.tail.append(h)
        if len(self.tail) == SEGMENT:
            _frontier_push(self.stack, self.nseg, leaf_hash(b"".join(self.tail)))
            self.nseg += 1
            self.tail = []

    def root(self) -> bytes:
        if not self.tail:
            return _frontier_root(self.stack)
        stack = list(self.stack)
        _frontier_push(stack, self.nseg, leaf_hash(b"".join(self.tail)))
        return _frontier_root(stack)

    def blobs(self) -> tuple:
        return b"".join(self.stack), b"".join(self.tail)


def segment_leaves(record_hashes: Sequence[bytes]) -> list:
    """The Merkle leaf hashes for a list of record hashes (reference for tests and auditors)."""
    return [leaf_hash(b"".join(record_hashes[i:i + SEGMENT]))
            for i in range(0, len(record_hashes), SEGMENT)]


def _schema_v1(conn) -> None:
    run_script(conn, """
    -- ts/kind/subject/actor are generated from the hashed body, never stored separately, so
    -- no unhashed copy can be edited to hide a record from a query or a subject export.
    CREATE TABLE audit_records (
        seq INTEGER PRIMARY KEY,
        prev BLOB NOT NULL, body BLOB NOT NULL, hash BLOB NOT NULL,
        ts REAL GENERATED ALWAYS AS (json_extract(CAST(body AS TEXT), '$.ts')) VIRTUAL,
        kind TEXT GENERATED ALWAYS AS
            (CAST(json_extract(CAST(body AS TEXT), '$.record.kind') AS TEXT)) VIRTUAL,
        subject TEXT GENERATED ALWAYS AS
            (CAST(json_extract(CAST(body AS TEXT), '$.record.subject') AS TEXT)) VIRTUAL,
        actor TEXT GENERATED ALWAYS AS
            (CAST(json_extract(CAST(body AS TEXT), '$.record.actor') AS TEXT)) VIRTUAL);
    CREATE INDEX audit_by_subject ON audit_records(subject);
    CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq INTEGER NOT NULL, hash BLOB NOT NULL, frontier BLOB NOT NULL, tail BLOB NOT NULL);
    INSERT INTO audit_head VALUES (1, 0, zeroblob(32), x'', x'');
    CREATE TABLE audit_checkpoints (
        tree_size INTEGER PRIMARY KEY, root BLOB NOT NULL, ts REAL NOT NULL);
    -- Append-only for honest code paths; an attacker can drop these, which verify() catches.
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit_records
        BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_records
        BEGIN SELECT RAISE(ABORT, 'audit records are append-only'); END;
    """)


MIGRATIONS = [_schema_v1]


@dataclass(frozen=True)
class Problem:
    """One thing :meth:`AuditLog.verify` found wrong, and where."""
    seq: int | None
    kind: str  # edited|deleted|inserted|reordered|checkpoint|truncated|head|corrupt
    message: str

    def __str__(self) -> str:
        where = f"record {self.seq}" if self.seq is not None else "log"
        return f"{where}: {self.kind}: {self.message}"


@dataclass
class VerifyResult:
    """Outcome of :meth:`AuditLog.verify`: ``ok`` and, when not, the ``problems``."""
    ok: bool
    records: int
    checkpoints_checked: int
    root: str
    problems: list = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.ok

    def to_dict(self) -> dict:
        return {"ok": self.ok, "records": self.records,
                "checkpoints_checked": self.checkpoints_checked, "root": self.root,
                "problems": [{"seq": p.seq, "kind": p.kind, "message": p.message}
                             for p in self.problems]}


class AuditLog:
    """Tamper-evident audit trail.

    Parameters
    ----------
    path_or_url : path of an SQLite file, ``sqlite:///path`` or ``":memory:"``.
    checkpoint_every : a Merkle checkpoint is written each time the log reaches a multiple of it.
    policy : an :class:`AccessPolicy` applied to every record before it is written (PII redacted
        or keyed-hashed) and, with ``role=``, when records are read.

    ``append`` returns once the record is committed with ``synchronous=FULL``; any number of
    threads and processes may append to one file at the same time.
    """

    def __init__(self, path_or_url, *, checkpoint_every: int = 1024,
                 policy: AccessPolicy | None = None, _db: Database | None = None):
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        self.checkpoint_every = int(checkpoint_every)
        self.policy = policy
        self._db = _db or Database(path_or_url, store="audit", migrations=MIGRATIONS)
        if _db is not None:
            # Sharing another store's database: make sure our tables exist there too.
            Database(_db.path, store="audit", migrations=MIGRATIONS).close()

    @property
    def path(self) -> str:
        return self._db.path

    def close(self) -> None:
        self._db.close()

    # ---------------------------------------------------------------- writing
    def append(self, record: Mapping, *, ts: float | None = None) -> int:
        """Append one record (a JSON-serialisable mapping); returns its sequence number.

        Top-level ``kind``, ``subject`` and ``actor`` keys are indexed for queries and
        subject exports. The record is durable when this returns.
        """
        return self.append_many([record], ts=ts)[0]

    def append_many(self, records: Iterable[Mapping], *, ts: float | None = None) -> list:
        """Append records in one transaction (all or none); returns their sequence numbers."""
        records = list(records)
        if not records:
            return []
        prepared = [self._prepare(r, ts) for r in records]
        with self._db.write() as conn:
            return self._append_in(conn, prepared)

    def _prepare(self, record: Mapping, ts: float | None):
        if not isinstance(record, Mapping):
            raise TypeError(f"an audit record must be a mapping, got {type(record).__name__}")
        if self.policy is not None:
            record = self.policy.protect(record)
        t = now() if ts is None else float(ts)
        if t != t or t in (float("inf"), float("-inf")):
            raise ValueError(f"audit timestamp must be finite, got {t}")
        # The body is canonical JSON {"record":...,"seq":...,"ts":...} (keys sorted); the record
        # part is serialised here, outside the write lock, and the seq spliced in under it.
        body = (canonical_json(record).encode(), (',"ts":' + repr(t) + "}").encode())
        return t, body

    def _append_in(self, conn, prepared: list) -> list:
        """Append inside the caller's write transaction (the registry uses this so that its
        change and the audit record commit together)."""
        seq, prev, frontier, tail = conn.execute(
            "SELECT seq, hash, frontier, tail FROM audit_head WHERE id=1").fetchone()
        tree = _Tree(frontier, tail, seq)
        rows, checkpoints, seqs = [], [], []
        every = self.checkpoint_every
        for t, body in prepared:
            seq += 1
            body = b'{"record":' + body[0] + b',"seq":' + str(seq).encode() + body[1]
            h = _sha256(b"\x00" + _SEQ(seq) + prev + body).digest()
            rows.append((seq, prev, body, h))
            tree.add(h)
            if seq % every == 0:
                checkpoints.append((seq, tree.root(), t))
            prev = h
            seqs.append(seq)
        conn.executemany("INSERT INTO audit_records(seq, prev, body, hash) VALUES (?,?,?,?)",
                         rows)
        if checkpoints:
            conn.executemany("INSERT INTO audit_checkpoints(tree_size, root, ts) VALUES (?,?,?)",
                             checkpoints)
        conn.execute("UPDATE audit_head SET seq=?, hash=?, frontier=?, tail=? WHERE id=1",
                     (seq, prev) + tree.blobs())
        return seqs

    def checkpoint(self) -> dict:
        """Write a checkpoint for the log as it is now and return it (see export_checkpoints)."""
        with self._db.write() as conn:
            seq, frontier, tail = conn.execute(
                "SELECT seq, frontier, tail FROM audit_head WHERE id=1").fetchone()
            root = _Tree(frontier, tail, seq).root()
            t = now()
            if seq:
                conn.execute("INSERT OR IGNORE INTO audit_checkpoints(tree_size, root, ts) "
                             "VALUES (?,?,?)", (seq, root, t))
        return {"tree_size": seq, "root": root.hex(), "ts": t}

    def log_decision(self, *, model: str, version, inputs, output, explanation=None,
                     subject: str | None = None, sample_rate: float = 1.0,
                     actor: str | None = None) -> int | None:
        """Record one prediction for regulated domains: a hash of the input (never the input
        itself), the output, the model version and an optional explanation payload.

        Sampling is deterministic in the input hash, so a replayed request is either always or
        never recorded. Returns the sequence number, or ``None`` when not sampled.
        """
        if not 0.0 <= sample_rate <= 1.0:
            raise ValueError(f"sample_rate must be within [0, 1], got {sample_rate}")
        ih = _input_hash(inputs)
        if sample_rate < 1.0 and int(ih[:16], 16) / 2.0 ** 64 >= sample_rate:
            return None
        rec = {"kind": "decision", "model": model, "version": version, "input_sha256": ih,
               "output": output}
        if explanation is not None:
            rec["explanation"] = explanation
        if subject is not None:
            rec["subject"] = subject
        if actor is not None:
            rec["actor"] = actor
        return self.append(rec)

    # ---------------------------------------------------------------- reading
    def __len__(self) -> int:
        with self._db.read() as conn:
            return conn.execute("SELECT seq FROM audit_head WHERE id=1").fetchone()[0]

    def records(self, *, kind: str | None = None, subject: str | None = None,
                since_seq: int = 0, limit: int | None = None,
                role: str | None = None) -> list:
        """Stored records as dicts ``{"seq", "ts", "hash", "record"}``, oldest first.

        With ``role``, each record is filtered through the access policy.
        """
        sql = "SELECT seq, body, hash FROM audit_records WHERE seq > ?"
        args: list = [since_seq]
        if kind is not None:
            sql += " AND kind = ?"
            args.append(kind)
        if subject is not None:
            sql += " AND subject = ?"
            args.append(subject)
        sql += " ORDER BY seq"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._db.read() as conn:
            rows = conn.execute(sql, args).fetchall()
        out = []
        for seq, body, h in rows:
            d = json.loads(body)
            rec = d["record"]
            if role is not None:
                if self.policy is None:
                    raise OpsError("role= needs an AuditLog opened with an access policy")
                rec = self.policy.view(rec, role)
            out.append({"seq": seq, "ts": d["ts"], "hash": h.hex(), "record": rec})
        return out

    def export_subject(self, subject_id: str, path=None, *, role: str | None = None) -> list:
        """Every record about one subject (a GDPR/CCPA access request), each with its hash.

        Written as JSON Lines when ``path`` is given. Records are self-checked first: an export
        never hands out a record whose content no longer matches its hash.
        """
        with self._db.read() as conn:
            rows = conn.execute("SELECT seq, prev, body, hash FROM audit_records "
                                "WHERE subject = ? ORDER BY seq", (subject_id,)).fetchall()
        for seq, prev, body, h in rows:
            if _sha256(b"\x00" + _SEQ(seq) + prev + body).digest() != h:
                raise OpsError(f"audit record {seq} about subject {subject_id!r} does not match "
                               "its hash; run verify() before exporting")
        out = self.records(subject=subject_id, role=role)
        if path is not None:
            with open(path, "w", encoding="utf-8") as f:
                for r in out:
                    f.write(canonical_json(r) + "\n")
        return out

    def checkpoints(self) -> list:
        with self._db.read() as conn:
            rows = conn.execute("SELECT tree_size, root, ts FROM audit_checkpoints "
                                "ORDER BY tree_size").fetchall()
        return [{"tree_size": n, "root": r.hex(), "ts": t} for n, r, t in rows]

    def export_checkpoints(self, path=None) -> list:
        """The checkpoints (tree size and Merkle root), to be kept outside this database.

        Appends a checkpoint for the current size first. With ``path``, writes JSON Lines.
        """
        self.checkpoint()
        cps = self.checkpoints()
        if path is not None:
            tmp = Path(str(path) + ".tmp")
            with open(tmp, "w", encoding="utf-8") as f:
                for c in cps:
                    f.write(canonical_json(c) + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        return cps

    # ---------------------------------------------------------------- verifying
    def verify(self, *, checkpoints=None, max_problems: int = 100) -> VerifyResult:
        """Recompute every hash, link and checkpoint; report what does not hold and where.

        Parameters
        ----------
        checkpoints : list of dicts or a JSON Lines file from :meth:`export_checkpoints`, kept
            outside the database. Each must match the root recomputed over the stored records;
            this is what catches an attacker who rewrote the chain and the stored checkpoints.
        """
        external = _load_checkpoints(checkpoints)
        problems: list = []

        class _Report:
            def __call__(self, seq, kind, msg):
                if len(problems) < max_problems:
                    problems.append(Problem(seq, kind, msg))

            def full(self):
                return len(problems) >= max_problems

        report = _Report()

        try:
            return self._verify(external, problems, report)
        except sqlite3.DatabaseError as e:
            # A damaged file is a failed verification, never an exception or a silent pass.
            problems.append(Problem(None, "corrupt", f"the database cannot be read: {e}"))
            return VerifyResult(ok=False, records=0, checkpoints_checked=0, root="",
                                problems=problems)

    def _verify(self, external, problems, report) -> VerifyResult:
        with self._db.read() as conn:
            conn.execute("BEGIN")  # one consistent snapshot while writers go on
            try:
                stored_cps = {n: r for n, r in conn.execute(
                    "SELECT tree_size, root FROM audit_checkpoints")}
                head_seq, head_hash, head_frontier, head_tail = conn.execute(
                    "SELECT seq, hash, frontier, tail FROM audit_head WHERE id=1").fetchone()
                rows = conn.execute("SELECT seq, prev, body, hash FROM audit_records "
                                    "ORDER BY seq")
                count, prev_h, tree, roots = self._scan(
                    rows, stored_cps, external, report, conn)
            finally:
                conn.execute("COMMIT")
        checked = 0
        for n, r in sorted(stored_cps.items()):
            if n > count:
                report(None, "truncated", f"stored checkpoint at tree size {n} but the log has "
                                          f"only {count} records")
            elif roots.get(n) is not None:
                checked += 1
                if roots[n] != r:
                    report(n, "checkpoint", f"stored checkpoint root at tree size {n} does not "
                                            "match the records")
        for n, r in sorted(external.items()):
            if n > count:
                report(None, "truncated", f"external checkpoint at tree size {n} but the log "
                                          f"has only {count} records: records were removed")
            else:
                checked += 1
                if roots[n] != r:
                    report(n, "checkpoint", f"external checkpoint at tree size {n} does not match "
                                            "the records: the log was rewritten")
        if head_seq != count or head_hash != prev_h:
            report(None, "head", f"chain head says {head_seq} records ending in "
                                 f"{head_hash.hex()[:16]}..., the records give {count} ending in "
                                 f"{prev_h.hex()[:16]}...")
        elif (head_frontier, head_tail) != tree.blobs():
            report(None, "head", "stored Merkle frontier does not match the records")
        return VerifyResult(ok=not problems, records=count, checkpoints_checked=checked,
                            root=tree.root().hex(), problems=problems)

    @staticmethod
    def _scan(rows, stored_cps, external, report, conn):
        # The hot loop of verify(): one SHA-256 per record for the chain, one per 64 records
        # for the Merkle leaf, rows fetched in blocks. Anything that fails goes to _diagnose,
        # which reads the full row and says what happened.
        sha = _sha256
        pk = _SEQ
        want = set(stored_cps) | set(external)
        roots: dict = {}
        tree = _Tree()
        tail = tree.tail
        prev_h = _ZERO
        count = 0
        expect = 1
        while True:
            block = rows.fetchmany(4096)
            if not block:
                break
            for seq, prev, body, h in block:
                if (prev != prev_h or seq != expect
                        or sha(b"\x00" + pk(seq) + prev + body).digest() != h):
                    _diagnose(conn, report, seq, body, h, prev_h, expect)
                count += 1
                tail.append(h)
                if len(tail) == SEGMENT:
                    tree.add(tail.pop())
                    tail = tree.tail
                if count in want:
                    roots[count] = tree.root()
                prev_h = h
                expect = seq + 1
        return count, prev_h, tree, roots


def _diagnose(conn, report, seq, body, h, prev_h, expect_seq) -> None:
    """Say what happened at a record that failed a check: edited, deleted, inserted or
    reordered. Runs only for failing records, so it may query and parse."""
    if report.full():
        return
    prev = conn.execute("SELECT prev FROM audit_records WHERE seq = ?", (seq,)).fetchone()[0]
    if _sha256(b"\x00" + _SEQ(seq) + prev + body).digest() != h:
        orig = _written_seq(body)
        if orig is None or orig == seq or \
                _sha256(b"\x00" + _SEQ(orig) + prev + body).digest() != h:
            report(seq, "edited", "content does not match its stored hash")
            return
        # An intact record that sits at another position than the one it was written at.
        row = conn.execute("SELECT body FROM audit_records WHERE seq = ?", (orig,)).fetchone()
        swapped = row is not None and _written_seq(row[0]) == seq
        if swapped:
            report(seq, "reordered", f"this is record {orig}, moved to position {seq}")
        elif orig < seq:
            report(seq, "inserted", f"this is record {orig}: {seq - orig} record(s) were "
                                    f"inserted before it and later records renumbered")
        else:
            report(seq, "deleted", f"this is record {orig}: {orig - seq} record(s) before it "
                                   f"were deleted and later records renumbered")
        return
    if seq > expect_seq:
        report(seq, "deleted", f"records {expect_seq}..{seq - 1} are missing")
    elif seq < expect_seq:
        report(seq, "reordered", f"sequence number {seq} appears after {expect_seq - 1}")
    elif prev != prev_h:
        # This record is intact, so the one before it is not the one it was chained to.
        row = conn.execute("SELECT seq FROM audit_records WHERE hash = ?", (prev,)).fetchone()
        if row is None:
            report(seq - 1, "edited",
                   f"record {seq - 1} was replaced (content changed and hash recomputed): "
                   f"record {seq} still links to the original")
        elif row[0] < seq - 1:
            report(seq - 1, "inserted", f"record(s) {row[0] + 1}..{seq - 1} are not in the "
                                        f"original chain: record {seq} links to {row[0]}")
        else:
            report(seq, "reordered", f"record {seq} links to record {row[0]}, which comes "
                                     "after it")


def _written_seq(body: bytes):
    try:
        return int(json.loads(body)["seq"])
    except (ValueError, KeyError, TypeError):
        return None


def _load_checkpoints(checkpoints) -> dict:
    if checkpoints is None:
        return {}
    if isinstance(checkpoints, (str, Path)):
        with open(checkpoints, encoding="utf-8") as f:
            checkpoints = [json.loads(line) for line in f if line.strip()]
    out = {}
    for c in checkpoints:
        n = int(c["tree_size"])
        if n > 0:
            out[n] = bytes.fromhex(c["root"])
    return out


def _input_hash(inputs) -> str:
    if isinstance(inputs, (bytes, bytearray, memoryview)):
        return hashlib.sha256(bytes(inputs)).hexdigest()
    if hasattr(inputs, "tobytes") and hasattr(inputs, "dtype"):
        h = hashlib.sha256()
        h.update(f"{inputs.dtype.str}{tuple(inputs.shape)}".encode())
        import numpy as np
        h.update(np.ascontiguousarray(inputs).tobytes())
        return h.hexdigest()
    return hashlib.sha256(canonical_json(inputs).encode()).hexdigest()
