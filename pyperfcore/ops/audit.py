"""Append-only, tamper-evident audit log on SQLite or PostgreSQL.

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
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from ._db import OpsError, canonical_json, now, open_database, run_script
from .access import AccessPolicy

__all__ = ["AuditLog", "VerifyResult", "Problem", "merkle_root", "leaf_hash", "node_hash"]

_ZERO = bytes(32)
_SEQ = struct.Struct(">Q").pack
# 0x00 || seq (8 bytes big-endian) || prev (32 bytes): the fixed prefix of a record's leaf
# entry, packed in one call. The caller must have checked len(prev) == 32 (32s pads).
_ENTRY_HEAD = struct.Struct(">xQ32s").pack
_sha256 = hashlib.sha256


_INF = float("inf")


def _make_record_encoder():
    """``canonical_json`` without its per-call set-up.

    ``json.JSONEncoder.encode`` builds a new C encoder object for every call; for audit
    batches that set-up costs as much as the encoding. The C encoder built once here has the
    same options as ``canonical_json`` (sorted keys, compact separators, UTF-8, no NaN, the same
    ``default``), so it writes the same bytes; tests compare the two on random records.
    """
    from json import encoder as _je
    from ._db import _ENCODER
    make = getattr(_je, "c_make_encoder", None)
    if make is None:  # pragma: no cover - only without CPython's _json accelerator
        return _ENCODER.encode
    e = _ENCODER
    state = {}

    def build():
        # markers: a fresh dict per encoder; an error mid-encode may leave entries behind, so
        # the encoder is rebuilt after any failure.
        state["f"] = make({}, e.default, _je.encode_basestring, None, e.key_separator,
                          e.item_separator, e.sort_keys, e.skipkeys, e.allow_nan)

    build()
    join = "".join

    def encode(obj) -> str:
        try:
            return join(state["f"](obj, 0))
        except BaseException:
            build()
            raise
    return encode


_encode_record = _make_record_encoder()


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

    def extend(self, hashes: list) -> None:
        """Add many record hashes (the verify path: whole segments joined at once)."""
        tail = self.tail
        i = 0
        if tail:
            i = min(SEGMENT - len(tail), len(hashes))
            tail.extend(hashes[:i])
            if len(tail) < SEGMENT:
                return
            _frontier_push(self.stack, self.nseg, leaf_hash(b"".join(tail)))
            self.nseg += 1
            self.tail = tail = []
        n = len(hashes)
        stack, push, join, nseg = self.stack, _frontier_push, b"".join, self.nseg
        while i + SEGMENT <= n:
            push(stack, nseg, _sha256(b"\x00" + join(hashes[i:i + SEGMENT])).digest())
            nseg += 1
            i += SEGMENT
        self.nseg = nseg
        if i < n:
            self.tail = list(hashes[i:])

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


def _pg_schema_v1(conn) -> None:
    # Same tables as SQLite. ts/kind/subject/actor are STORED generated columns computed from
    # the hashed body (they cannot be updated directly); json, not jsonb, so that any text the
    # canonical encoder writes (\u0000 included) is accepted.
    conn.script(r"""
    CREATE FUNCTION pyperfcore_audit_field(body BYTEA, path TEXT[]) RETURNS TEXT
        LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE AS $$
    DECLARE t TEXT := convert_from(body, 'UTF8');
    BEGIN
        -- PostgreSQL text cannot hold NUL, and its JSON parser refuses to extract anything
        -- from a document with a \u0000 escape: such escapes (not themselves escaped) are
        -- read as U+FFFD for these derived columns; the hashed body is untouched.
        IF position('\u0000' in t) > 0 THEN
            LOOP
                EXIT WHEN t !~ '(^|[^\\])(\\\\)*\\u0000';
                t := regexp_replace(t, '(^|[^\\])((\\\\)*)\\u0000', '\1\2\\ufffd', 'g');
            END LOOP;
        END IF;
        RETURN t::json #>> path;
    END $$;
    CREATE TABLE audit_records (
        seq BIGINT PRIMARY KEY,
        prev BYTEA NOT NULL, body BYTEA NOT NULL, hash BYTEA NOT NULL,
        ts DOUBLE PRECISION GENERATED ALWAYS AS
            (pyperfcore_audit_field(body, '{ts}')::double precision) STORED,
        kind TEXT GENERATED ALWAYS AS (pyperfcore_audit_field(body, '{record,kind}')) STORED,
        subject TEXT GENERATED ALWAYS AS
            (pyperfcore_audit_field(body, '{record,subject}')) STORED,
        actor TEXT GENERATED ALWAYS AS (pyperfcore_audit_field(body, '{record,actor}')) STORED);
    CREATE INDEX audit_by_subject ON audit_records(subject);
    CREATE TABLE audit_head (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        seq BIGINT NOT NULL, hash BYTEA NOT NULL, frontier BYTEA NOT NULL, tail BYTEA NOT NULL);
    INSERT INTO audit_head VALUES (1, 0, decode(repeat('00', 32), 'hex'), ''::bytea, ''::bytea);
    CREATE TABLE audit_checkpoints (
        tree_size BIGINT PRIMARY KEY, root BYTEA NOT NULL, ts DOUBLE PRECISION NOT NULL);
    CREATE FUNCTION pyperfcore_audit_append_only() RETURNS trigger LANGUAGE plpgsql
        AS $$ BEGIN RAISE EXCEPTION 'audit records are append-only'; END $$;
    CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit_records
        FOR EACH ROW EXECUTE FUNCTION pyperfcore_audit_append_only();
    CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit_records
        FOR EACH ROW EXECUTE FUNCTION pyperfcore_audit_append_only();
    CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit_records
        FOR EACH STATEMENT EXECUTE FUNCTION pyperfcore_audit_append_only();
    """)


PG_MIGRATIONS = [_pg_schema_v1]


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
    path_or_url : path of an SQLite file, ``sqlite:///path``, ``":memory:"`` or a
        ``postgresql://`` URL (optionally ``?schema=NAME``; needs psycopg 3).
    checkpoint_every : a Merkle checkpoint is written each time the log reaches a multiple of it.
    policy : an :class:`AccessPolicy` applied to every record before it is written (PII redacted
        or keyed-hashed) and, with ``role=``, when records are read.

    ``append`` returns once the record is committed (SQLite ``synchronous=FULL``; PostgreSQL
    COMMIT); any number of threads, processes and replicas may append at the same time.
    """

    def __init__(self, path_or_url, *, checkpoint_every: int = 1024,
                 policy: AccessPolicy | None = None, _db=None):
        if checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
        self.checkpoint_every = int(checkpoint_every)
        self.policy = policy
        if _db is not None:
            # Sharing another store's database: make sure our tables exist there too.
            _db.ensure("audit", MIGRATIONS, PG_MIGRATIONS)
            self._db = _db
        else:
            self._db = open_database(path_or_url, store="audit", migrations=MIGRATIONS,
                                     pg_migrations=PG_MIGRATIONS)

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
        """Append records in one transaction (all or none); returns their sequence numbers.

        The records of one call share one timestamp (``ts`` or the time of the call).
        """
        records = list(records)
        if not records:
            return []
        with self._db.write() as conn:
            return self._append_in(conn, self._prepare(records, ts))

    def _prepare(self, records: list, ts: float | None) -> tuple:
        """Serialise the records outside the write lock: ``(ts, [record JSON], suffix)``.

        The body of record ``seq`` is the canonical JSON ``{"record":R,"seq":seq,"ts":T}``
        (keys sorted): R and the ``ts`` suffix are built here, the seq spliced in under the
        lock. One timestamp per batch keeps the suffix one string for all records.
        """
        t = now() if ts is None else float(ts)
        if t != t or t in (_INF, -_INF):
            raise ValueError(f"audit timestamp must be finite, got {t}")
        protect = self.policy.protect if self.policy is not None else None
        enc = _encode_record
        out = []
        for r in records:
            if type(r) is not dict and not isinstance(r, Mapping):
                raise TypeError(f"an audit record must be a mapping, got {type(r).__name__}")
            out.append(enc(protect(r) if protect is not None else r))
        return t, out, ',"ts":' + repr(t) + "}"

    def _append_in(self, conn, prepared: tuple) -> list:
        """Append inside the caller's write transaction (the registry uses this so that its
        change and the audit record commit together)."""
        t, jsons, suffix = prepared
        seq, prev, frontier, tail = conn.execute(
            "SELECT seq, hash, frontier, tail FROM audit_head WHERE id=1").fetchone()
        prev = bytes(prev)
        tree = _Tree(bytes(frontier), bytes(tail), seq)
        first = seq + 1
        rows, checkpoints = [], []
        every = self.checkpoint_every
        sha, head, add = _sha256, _ENTRY_HEAD, tree.add
        for rj in jsons:
            seq += 1
            body = ('{"record":%s,"seq":%d%s' % (rj, seq, suffix)).encode()
            h = sha(head(seq, prev) + body).digest()
            rows.append((seq, prev, body, h))
            add(h)
            if not seq % every:
                checkpoints.append((seq, tree.root(), t))
            prev = h
        conn.executemany("INSERT INTO audit_records(seq, prev, body, hash) VALUES (?,?,?,?)",
                         rows)
        if checkpoints:
            conn.executemany("INSERT INTO audit_checkpoints(tree_size, root, ts) VALUES (?,?,?)",
                             checkpoints)
        conn.execute("UPDATE audit_head SET seq=?, hash=?, frontier=?, tail=? WHERE id=1",
                     (seq, prev) + tree.blobs())
        return list(range(first, seq + 1))

    def checkpoint(self) -> dict:
        """Write a checkpoint for the log as it is now and return it (see export_checkpoints)."""
        with self._db.write() as conn:
            seq, frontier, tail = conn.execute(
                "SELECT seq, frontier, tail FROM audit_head WHERE id=1").fetchone()
            root = _Tree(bytes(frontier), bytes(tail), seq).root()
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

    # ---------------------------------------------------------------- proofs
    def _record_hashes(self, n: int) -> list:
        with self._db.snapshot() as conn:
            size = conn.execute("SELECT seq FROM audit_head WHERE id=1").fetchone()[0]
            if not 0 < n <= size:
                raise ValueError(f"tree size {n} is outside the log's 1..{size} records")
            out = []
            for block in self._db.stream(conn, "SELECT hash FROM audit_records WHERE seq <= ? "
                                               "ORDER BY seq", (n,), _BLOCK):
                out.extend(bytes(r[0]) for r in block)
        if len(out) != n:
            raise OpsError(f"the log has {len(out)} stored records up to {n}: run verify()")
        return out

    def inclusion_proof(self, seq: int, tree_size: int | None = None) -> dict:
        """An RFC 9162 inclusion proof that record ``seq`` is in the tree of the first
        ``tree_size`` records (default: all), for :func:`~pyperfcore.ops.merkle.
        verify_inclusion_proof` against a checkpoint root kept elsewhere."""
        from . import merkle
        n = len(self) if tree_size is None else int(tree_size)
        if not 1 <= int(seq) <= n:
            raise ValueError(f"record {seq} is outside a tree of {n} records")
        hashes = self._record_hashes(n)
        leaves = segment_leaves(hashes)
        index = (seq - 1) // SEGMENT
        with self._db.read() as conn:
            prev = bytes(conn.execute("SELECT prev FROM audit_records WHERE seq=?",
                                      (seq,)).fetchone()[0])
        return {"seq": seq, "tree_size": n, "record_hash": hashes[seq - 1].hex(),
                "prev": prev.hex(),
                "segment": [h.hex() for h in hashes[index * SEGMENT:(index + 1) * SEGMENT]],
                "path": [h.hex() for h in merkle.inclusion_path(leaves, index)],
                "root": merkle_root(leaves).hex()}

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> dict:
        """A proof that the log of ``new_size`` records (default: all) extends the log of
        ``old_size`` records unchanged (see :mod:`pyperfcore.ops.merkle`)."""
        from . import merkle
        n2 = len(self) if new_size is None else int(new_size)
        n1 = int(old_size)
        if not 0 < n1 <= n2:
            raise ValueError(f"sizes must satisfy 0 < old ({n1}) <= new ({n2})")
        hashes = self._record_hashes(n2)
        leaves = segment_leaves(hashes)
        out = {"old_size": n1, "new_size": n2, "new_root": merkle_root(leaves).hex()}
        k, r = divmod(n1, SEGMENT)
        if r == 0:
            out["path"] = [h.hex() for h in merkle.consistency_path(leaves, k)]
            return out
        out["old_frontier"] = [h.hex() for h in merkle.frontier(leaves[:k])]
        out["old_segment"] = [h.hex() for h in hashes[k * SEGMENT:n1]]
        out["new_segment"] = [h.hex() for h in hashes[k * SEGMENT:(k + 1) * SEGMENT]]
        out["path"] = [h.hex() for h in merkle.consistency_path(leaves, k + 1)]
        return out

    # ---------------------------------------------------------------- verifying
    def verify(self, *, checkpoints=None, max_problems: int = 100,
               progress=None) -> VerifyResult:
        """Recompute every hash, link and checkpoint; report what does not hold and where.

        Parameters
        ----------
        checkpoints : list of dicts or a JSON Lines file from :meth:`export_checkpoints`, kept
            outside the database. Each must match the root recomputed over the stored records;
            this is what catches an attacker who rewrote the chain and the stored checkpoints.
        progress : optional ``callable(done, total)`` called after each block of records
            (the CLI draws a progress bar with it).
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
            return self._verify(external, problems, report, progress)
        except self._db.errors as e:
            # A damaged file is a failed verification, never an exception or a silent pass.
            problems.append(Problem(None, "corrupt", f"the database cannot be read: {e}"))
            return VerifyResult(ok=False, records=0, checkpoints_checked=0, root="",
                                problems=problems)

    def _verify(self, external, problems, report, progress=None) -> VerifyResult:
        db = self._db
        with db.snapshot() as conn:  # one consistent state while writers go on
            stored_cps = {n: bytes(r) for n, r in conn.execute(
                "SELECT tree_size, root FROM audit_checkpoints").fetchall()}
            head_seq, head_hash, head_frontier, head_tail = (
                v if isinstance(v, int) else bytes(v) for v in conn.execute(
                    "SELECT seq, hash, frontier, tail FROM audit_head WHERE id=1").fetchone())
            # SQLite columns are dynamically typed: an attacker may store text where a blob
            # belongs, so the values are cast to blobs (a no-op for honest rows).
            cols = ("seq, CAST(prev AS BLOB), CAST(body AS BLOB), CAST(hash AS BLOB)"
                    if db.dialect == "sqlite" else "seq, prev, body, hash")
            want = set(stored_cps) | set(external)
            fast = _scan_fast(db, conn, want, progress, head_seq) if db.dialect == "sqlite" else None
            if fast is not None:
                count, prev_h, tree, roots = fast
            else:
                blocks = db.stream(conn, f"SELECT {cols} FROM audit_records ORDER BY seq", (),
                                   _BLOCK)
                count, prev_h, tree, roots = _scan(blocks, want, report, conn, progress, head_seq)
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

_BLOCK = 16384  # rows per fetch: a multiple of SEGMENT, so blocks start on segment boundaries


def _scan_fast(db, conn, want, progress, total):
    """The common case of verify() on SQLite: an intact log, checked reading two columns.

    Seq numbers and stored prev links are checked in SQL (seqs exactly 1..n; every stored prev
    equals the hash of the record before it), so the loop hashes ``seq||prev||body`` from the
    expected seq and the previous computed hash. It returns None at the first anomaly of any
    kind, and verify() then runs the full scan, which reads every column and names what is
    wrong and where: this path only ever confirms an intact log, faster.
    """
    n, lo, hi = conn.execute("SELECT count(*), min(seq), max(seq) FROM audit_records").fetchone()
    if n and (lo != 1 or hi != n):
        return None
    broken = conn.execute(
        "SELECT 1 FROM audit_records a LEFT JOIN audit_records b ON b.seq = a.seq - 1 "
        "WHERE CAST(a.prev AS BLOB) IS NOT coalesce(CAST(b.hash AS BLOB), ?) LIMIT 1",
        (_ZERO,)).fetchone()
    if broken is not None:
        return None
    sha, head = _sha256, _ENTRY_HEAD
    roots: dict = {}
    tree = _Tree()
    prev_h = _ZERO
    count = 0
    wanted = sorted(want)
    wi = 0
    for block in db.stream(conn, "SELECT CAST(body AS BLOB), CAST(hash AS BLOB) FROM audit_records "
                                 "ORDER BY seq", (), _BLOCK):
        seq = count
        for body, h in block:
            seq += 1
            if sha(head(seq, prev_h) + body).digest() != h:
                return None
            prev_h = h
        hashes = [r[1] for r in block]
        k_done = 0
        while wi < len(wanted) and wanted[wi] <= count + len(hashes) - k_done:
            k = wanted[wi] - count
            if k > 0:
                tree.extend(hashes[k_done:k_done + k])
                k_done += k
                count += k
            roots[wanted[wi]] = tree.root()
            wi += 1
        tree.extend(hashes[k_done:])
        count += len(hashes) - k_done
        if progress is not None:
            progress(count, max(total, count))
    if count != n:
        return None
    return count, bytes(prev_h), tree, roots


def _scan(blocks, want, report, conn, progress, total):
    """The hot loop of verify(): per record one SHA-256 over ``0x00||seq||prev||body`` and
    three comparisons; per 64 records one Merkle leaf hash, done per block from a list of the
    block's hashes. Anything that fails goes to :func:`_diagnose`, which reads the full row and
    says what happened. Returns ``(count, last hash, tree, {size: root})``."""
    sha, head = _sha256, _ENTRY_HEAD
    roots: dict = {}
    tree = _Tree()
    prev_h = _ZERO
    count = 0
    expect = 1
    wanted = sorted(want)
    wi = 0
    for block in blocks:
        for seq, prev, body, h in block:
            if (prev != prev_h or seq != expect
                    or sha(head(seq, prev) + body).digest() != h):
                _diagnose(conn, report, seq, bytes(body), bytes(h), prev_h, expect)
            prev_h = h
            expect = seq + 1
        n = len(block)
        hashes = [r[3] for r in block]
        # Checkpoint sizes inside this block need the tree exactly at that size.
        while wi < len(wanted) and wanted[wi] <= count + n:
            k = wanted[wi] - count
            if k > 0:
                tree.extend(hashes[:k])
                hashes = hashes[k:]
                count += k
                n -= k
            roots[wanted[wi]] = tree.root()
            wi += 1
        tree.extend(hashes)
        count += n
        if progress is not None:
            progress(count, max(total, count))
    if not isinstance(prev_h, bytes):
        prev_h = bytes(prev_h)
    return count, prev_h, tree, roots


def _diagnose(conn, report, seq, body, h, prev_h, expect_seq) -> None:
    """Say what happened at a record that failed a check: edited, deleted, inserted or
    reordered. Runs only for failing records, so it may query and parse."""
    if report.full():
        return
    prev = bytes(conn.execute("SELECT prev FROM audit_records WHERE seq = ?",
                              (seq,)).fetchone()[0])
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
