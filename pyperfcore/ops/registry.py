"""Model registry on SQLite or PostgreSQL: versions, content-addressed artifacts, aliases
with history, lifecycle, approvals, serving checks, retention, events with a durable outbox.

Every change is written in one transaction together with its audit record and its outbox
event, so the registry, the audit trail and the webhook queue never disagree after a crash.
"""
from __future__ import annotations

import json
import math
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Mapping

from ._db import OpsError, canonical_json, is_postgres_url, now, open_database, run_script
from .artifacts import ArtifactStore, IntegrityError, check_artifact_name
from .audit import AuditLog

__all__ = ["Registry", "ModelVersion", "ApprovalRequired", "SchemaMismatch", "LifecycleError",
           "NotFound", "DeprecatedVersionWarning", "STAGES", "RetentionPlan"]

STAGES = ("candidate", "approved", "production", "deprecated", "archived")
# Allowed stage moves. "production" is entered only through promote(); a replaced production
# version returns to "approved" so that it stays a valid rollback target.
_TRANSITIONS = {
    "candidate": {"approved", "deprecated", "archived"},
    "approved": {"production", "deprecated", "archived", "candidate"},
    "production": {"approved", "deprecated"},
    "deprecated": {"archived", "approved"},
    "archived": set(),
}


class NotFound(OpsError, LookupError):
    """No such model, version or alias."""


class LifecycleError(OpsError):
    """A stage change or alias move that the lifecycle does not allow."""


class ApprovalRequired(OpsError):
    """Promotion refused: required sign-offs are missing (``.missing`` lists the roles)."""

    def __init__(self, message, missing):
        super().__init__(message)
        self.missing = list(missing)


class SchemaMismatch(OpsError):
    """Promotion refused: the version was trained on other inputs or feature versions than the
    serving side declares (``.differences`` lists each one)."""

    def __init__(self, message, differences):
        super().__init__(message)
        self.differences = list(differences)


class DeprecatedVersionWarning(UserWarning):
    """Loading a model version that has been deprecated."""


def _v1(conn) -> None:
    run_script(conn, """
    CREATE TABLE reg_models (name TEXT PRIMARY KEY, created REAL NOT NULL, description TEXT);
    CREATE TABLE reg_versions (
        name TEXT NOT NULL REFERENCES reg_models(name), version INTEGER NOT NULL,
        stage TEXT NOT NULL, created REAL NOT NULL, created_by TEXT,
        metadata TEXT NOT NULL, manifest TEXT NOT NULL, size INTEGER NOT NULL,
        stage_changed REAL NOT NULL, notice TEXT,
        PRIMARY KEY (name, version));
    CREATE TABLE reg_aliases (
        name TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL,
        since REAL NOT NULL, set_by TEXT, reason TEXT, PRIMARY KEY (name, alias));
    CREATE TABLE reg_alias_history (
        id INTEGER PRIMARY KEY, name TEXT NOT NULL, alias TEXT NOT NULL,
        version INTEGER NOT NULL, from_ts REAL NOT NULL, to_ts REAL,
        set_by TEXT, reason TEXT, ended_by TEXT, end_reason TEXT);
    CREATE INDEX reg_alias_history_by_alias ON reg_alias_history(name, alias, from_ts);
    CREATE TABLE reg_approvals (
        name TEXT NOT NULL, version INTEGER NOT NULL, role TEXT NOT NULL,
        approver TEXT NOT NULL, ts REAL NOT NULL, comment TEXT,
        PRIMARY KEY (name, version, role));
    CREATE TABLE reg_policies (
        alias TEXT PRIMARY KEY, required_roles TEXT NOT NULL, distinct_approvers INTEGER NOT NULL,
        set_by TEXT, ts REAL NOT NULL);
    CREATE TABLE reg_outbox (
        id INTEGER PRIMARY KEY, ts REAL NOT NULL, kind TEXT NOT NULL, payload TEXT NOT NULL,
        delivered REAL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);
    """)


def _v2(conn) -> None:
    # v2: serving declarations checked at promotion, and webhook retry scheduling.
    run_script(conn, """
    CREATE TABLE reg_serving (
        name TEXT NOT NULL, alias TEXT NOT NULL, spec TEXT NOT NULL, set_by TEXT,
        ts REAL NOT NULL, PRIMARY KEY (name, alias));
    ALTER TABLE reg_outbox ADD COLUMN next_attempt REAL NOT NULL DEFAULT 0;
    CREATE INDEX reg_outbox_pending ON reg_outbox(delivered, next_attempt);
    """)


MIGRATIONS = [_v1, _v2]


def _pg_v1(conn) -> None:
    # The SQLite schema version 1, in PostgreSQL types (REAL there is 4 bytes: timestamps
    # need DOUBLE PRECISION).
    conn.script("""
    CREATE TABLE reg_models (name TEXT PRIMARY KEY, created DOUBLE PRECISION NOT NULL,
        description TEXT);
    CREATE TABLE reg_versions (
        name TEXT NOT NULL REFERENCES reg_models(name), version BIGINT NOT NULL,
        stage TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, created_by TEXT,
        metadata TEXT NOT NULL, manifest TEXT NOT NULL, size BIGINT NOT NULL,
        stage_changed DOUBLE PRECISION NOT NULL, notice TEXT,
        PRIMARY KEY (name, version));
    CREATE TABLE reg_aliases (
        name TEXT NOT NULL, alias TEXT NOT NULL, version BIGINT NOT NULL,
        since DOUBLE PRECISION NOT NULL, set_by TEXT, reason TEXT, PRIMARY KEY (name, alias));
    CREATE TABLE reg_alias_history (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, name TEXT NOT NULL,
        alias TEXT NOT NULL, version BIGINT NOT NULL, from_ts DOUBLE PRECISION NOT NULL,
        to_ts DOUBLE PRECISION, set_by TEXT, reason TEXT, ended_by TEXT, end_reason TEXT);
    CREATE INDEX reg_alias_history_by_alias ON reg_alias_history(name, alias, from_ts);
    CREATE TABLE reg_approvals (
        name TEXT NOT NULL, version BIGINT NOT NULL, role TEXT NOT NULL,
        approver TEXT NOT NULL, ts DOUBLE PRECISION NOT NULL, comment TEXT,
        PRIMARY KEY (name, version, role));
    CREATE TABLE reg_policies (
        alias TEXT PRIMARY KEY, required_roles TEXT NOT NULL,
        distinct_approvers INTEGER NOT NULL, set_by TEXT, ts DOUBLE PRECISION NOT NULL);
    CREATE TABLE reg_outbox (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY, ts DOUBLE PRECISION NOT NULL,
        kind TEXT NOT NULL, payload TEXT NOT NULL, delivered DOUBLE PRECISION,
        attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT);
    """)


def _pg_v2(conn) -> None:
    conn.script("""
    CREATE TABLE reg_serving (
        name TEXT NOT NULL, alias TEXT NOT NULL, spec TEXT NOT NULL, set_by TEXT,
        ts DOUBLE PRECISION NOT NULL, PRIMARY KEY (name, alias));
    ALTER TABLE reg_outbox ADD COLUMN next_attempt DOUBLE PRECISION NOT NULL DEFAULT 0;
    CREATE INDEX reg_outbox_pending ON reg_outbox(delivered, next_attempt);
    """)


PG_MIGRATIONS = [_pg_v1, _pg_v2]


@dataclass
class ModelVersion:
    """One registered version as stored (metadata, manifest, stage)."""
    name: str
    version: int
    stage: str
    created: float
    created_by: str | None
    metadata: dict
    manifest: dict
    size: int
    notice: str | None = None
    aliases: list = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def subject(self) -> str:
        """The audit subject id of this version (``model:NAME:VERSION``)."""
        return f"model:{self.name}:{self.version}"

    def to_dict(self) -> dict:
        return {"name": self.name, "version": self.version, "stage": self.stage,
                "created": self.created, "created_by": self.created_by,
                "metadata": self.metadata, "manifest": self.manifest, "size": self.size,
                "notice": self.notice, "aliases": self.aliases}


@dataclass
class RetentionPlan:
    """What a retention run would do (``dry_run=True``) or did."""
    dry_run: bool
    actions: list  # {"name", "version", "action": "archive"|"delete", "reason"}
    kept: list     # {"name", "version", "reason"}

    def to_dict(self) -> dict:
        return {"dry_run": self.dry_run, "actions": self.actions, "kept": self.kept}


class Registry:
    """Model registry rooted at a directory (``registry.db`` plus ``objects/``), or with its
    tables in PostgreSQL and its artifacts in a directory all replicas can read.

    Parameters
    ----------
    path : directory, created if missing (``sqlite:///dir`` accepted); or a
        ``postgresql://`` URL (optionally ``?schema=NAME``), which needs ``objects_dir``.
    objects_dir : directory of the content-addressed artifact store (default
        ``path/objects`` for SQLite; required for PostgreSQL, e.g. a shared volume).
    audit : an :class:`AuditLog`; by default the audit tables live in ``registry.db`` so each
        change and its audit record commit in the same transaction.
    cache_dir : local directory for memory-mapped artifact reads, keyed by SHA-256 (use it when
        ``path`` is on shared or network storage; several replicas may share one cache).
    user : the default actor recorded for changes when ``by=`` is not given.
    """

    def __init__(self, path, *, audit: AuditLog | None = None, cache_dir=None,
                 user: str | None = None, objects_dir=None):
        p = str(path)
        if is_postgres_url(p):
            if objects_dir is None:
                raise ValueError("a PostgreSQL registry needs objects_dir= (the artifact "
                                 "directory every replica can read)")
            self.url = p
            self.root = None
            self._db = open_database(p, store="registry", migrations=MIGRATIONS,
                                     pg_migrations=PG_MIGRATIONS)
        else:
            if p.startswith("sqlite://"):
                p = p[len("sqlite://"):].lstrip("/") if not p.startswith("sqlite:////") \
                    else p[len("sqlite:///"):]
            elif "://" in p:
                raise ValueError(f"unsupported registry URL {p!r}: use a directory path or a "
                                 "postgresql:// URL")
            self.root = Path(p)
            self.root.mkdir(parents=True, exist_ok=True)
            self.url = str(self.root)
            self._db = open_database(self.root / "registry.db", store="registry",
                                     migrations=MIGRATIONS)
        self.store = ArtifactStore(objects_dir if objects_dir is not None
                                   else self.root / "objects", cache_dir=cache_dir)
        if audit is None:
            audit = AuditLog(None, _db=self._db)
        self.audit = audit
        self._audit_shared = audit._db.path == self._db.path
        self.user = user
        self._subscribers: list = []
        self._alias_cache: dict = {}
        self._cache_dv = None
        self._cache_lock = threading.Lock()
        self._tls = threading.local()

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------ internals
    def _commit_change(self, conn, *, kind: str, audit: dict, event: dict) -> dict:
        """Within a write transaction: the audit record and the outbox event for one change."""
        ts = now()
        event = {"kind": kind, "ts": ts, **event}
        conn.execute("INSERT INTO reg_outbox(ts, kind, payload) VALUES (?,?,?)",
                     (ts, kind, canonical_json(event)))
        rec = {"kind": kind, **audit}
        if self._audit_shared:
            self.audit._append_in(conn, self.audit._prepare([rec], ts))
        else:
            self._tls.pending.append(rec)
        return event

    def _run(self, fn):
        """Run ``fn(conn) -> list of events`` in a write transaction, then notify."""
        self._tls.pending = []
        with self._db.write() as conn:
            result, events = fn(conn)
        if not self._audit_shared and self._tls.pending:
            # A separate audit database cannot join this transaction: written right after it.
            self.audit.append_many(self._tls.pending)
        self._alias_cache.clear()
        for ev in events:
            self._notify(ev)
        return result

    def _actor(self, by):
        return by if by is not None else self.user

    def _notify(self, event: dict) -> None:
        for kinds, cb in list(self._subscribers):
            if kinds is None or event["kind"] in kinds:
                try:
                    cb(event)
                except Exception as e:  # a subscriber must not break the registry
                    warnings.warn(f"registry subscriber {cb!r} failed on {event['kind']}: {e!r}",
                                  RuntimeWarning, stacklevel=3)

    def _row_to_version(self, row, conn=None) -> ModelVersion:
        name, version, stage, created, created_by, metadata, manifest, size, notice = row
        mv = ModelVersion(name, version, stage, created, created_by, json.loads(metadata),
                          json.loads(manifest), size, notice)
        if conn is not None:
            mv.aliases = [a for (a,) in conn.execute(
                "SELECT alias FROM reg_aliases WHERE name=? AND version=? ORDER BY alias",
                (name, version))]
        return mv

    _VCOLS = "name, version, stage, created, created_by, metadata, manifest, size, notice"

    def _get(self, conn, name: str, version: int) -> ModelVersion:
        row = conn.execute(f"SELECT {self._VCOLS} FROM reg_versions WHERE name=? AND version=?",
                           (name, version)).fetchone()
        if row is None:
            raise NotFound(f"model {name!r} has no version {version}")
        return self._row_to_version(row, conn)

    # ------------------------------------------------------------ registering
    def register(self, name: str, artifacts, *, metadata: Mapping | None = None,
                 by: str | None = None, allow_pickle: bool = False,
                 description: str | None = None) -> ModelVersion:
        """Register a new version of ``name``.

        Parameters
        ----------
        artifacts : a file path (stored under its base name) or a mapping of artifact name ->
            path or bytes. Names are relative paths; ``..``, absolute paths and backslashes are
            refused. Pickle-based formats are refused unless ``allow_pickle=True``.
        metadata : lineage and description, JSON-serialisable. Keys the registry understands:
            ``parent`` ("name:version"), ``training_data`` (dict with ``sha256``/``uri``/
            ``snapshot``), ``code_version``, ``metrics`` (flat dict of numbers), ``evaluation``,
            ``input_schema`` / ``output_schema`` (field -> type), ``feature_version``,
            ``tags`` (dict), plus the model-card sections (``intended_use``, ``factors``, ...).
        """
        _check_model_name(name)
        if isinstance(artifacts, (str, Path)):
            artifacts = {Path(artifacts).name: artifacts}
        if not isinstance(artifacts, Mapping) or not artifacts:
            raise ValueError("artifacts must be a path or a non-empty mapping name -> path/bytes")
        metadata = dict(metadata or {})
        canonical_json(metadata)  # fail early on non-serialisable metadata
        if "parent" in metadata and metadata["parent"] is not None:
            pname, _, pver = str(metadata["parent"]).rpartition(":")
            if not pname or not pver.isdigit():
                raise ValueError(f"metadata parent must be 'name:version', got "
                                 f"{metadata['parent']!r}")
        manifest = {}
        for aname, src in artifacts.items():
            check_artifact_name(aname)
            manifest[aname] = self.store.put(src, name=aname, allow_pickle=allow_pickle)
        size = sum(m["size"] for m in manifest.values())
        actor = self._actor(by)

        def tx(conn):
            ts = now()
            conn.execute("INSERT OR IGNORE INTO reg_models(name, created, description) "
                         "VALUES (?,?,?)", (name, ts, description))
            if "parent" in metadata and metadata["parent"] is not None:
                pname, _, pver = str(metadata["parent"]).rpartition(":")
                self._get(conn, pname, int(pver))
            version = conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM reg_versions "
                                   "WHERE name=?", (name,)).fetchone()[0]
            conn.execute(f"INSERT INTO reg_versions({self._VCOLS}, stage_changed) "
                         "VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (name, version, "candidate", ts, actor, canonical_json(metadata),
                          canonical_json(manifest), size, None, ts))
            subject = f"model:{name}:{version}"
            ev = self._commit_change(
                conn, kind="registered",
                audit={"subject": subject, "actor": actor, "model": name, "version": version,
                       "manifest": {k: v["sha256"] for k, v in manifest.items()},
                       "parent": metadata.get("parent")},
                event={"name": name, "version": version, "by": actor})
            return self._get(conn, name, version), [ev]
        return self._run(tx)

    # ------------------------------------------------------------ reading
    def models(self) -> list:
        with self._db.read() as conn:
            return [r[0] for r in conn.execute("SELECT name FROM reg_models ORDER BY name")]

    def versions(self, name: str | None = None) -> list:
        sql = f"SELECT {self._VCOLS} FROM reg_versions"
        args: tuple = ()
        if name is not None:
            sql += " WHERE name=?"
            args = (name,)
        with self._db.read() as conn:
            return [self._row_to_version(r, conn) for r in
                    conn.execute(sql + " ORDER BY name, version", args).fetchall()]

    def get(self, name: str, ref="latest") -> ModelVersion:
        """A version by number, alias name or ``"latest"``; ``"name:ref"`` also accepted."""
        if ref == "latest" and ":" in name:
            name, ref = name.split(":", 1)
        version = self.resolve(name, ref)
        with self._db.read() as conn:
            return self._get(conn, name, version)

    def resolve(self, name: str, ref) -> int:
        """Version number for ``ref`` (a number, a digit string, an alias or ``"latest"``).

        Alias lookups are cached per process and the cache is dropped whenever any connection
        commits to the database (``PRAGMA data_version``), so a move made by another replica is
        seen on the next call.
        """
        if isinstance(ref, int) and not isinstance(ref, bool):
            return ref
        if not isinstance(ref, str):
            raise TypeError(f"version reference must be int or str, got {type(ref).__name__}")
        if ref.isdigit():
            return int(ref)
        key = (name, ref)
        dv = self._db.data_version()
        if dv != self._cache_dv:
            with self._cache_lock:
                self._alias_cache.clear()
                self._cache_dv = dv
        hit = self._alias_cache.get(key)
        if hit is not None:
            return hit
        with self._db.read() as conn:
            if ref == "latest":
                row = conn.execute("SELECT MAX(version) FROM reg_versions WHERE name=? AND "
                                   "stage != 'archived'", (name,)).fetchone()
                row = row if row and row[0] is not None else None
            else:
                row = conn.execute("SELECT version FROM reg_aliases WHERE name=? AND alias=?",
                                   (name, ref)).fetchone()
        if row is None:
            raise NotFound(f"model {name!r} has no alias or version {ref!r}")
        self._alias_cache[key] = row[0]
        return row[0]

    def search(self, *, name: str | None = None, stage: str | None = None,
               tags: Mapping | None = None, metrics: Mapping | None = None,
               where: Callable | None = None) -> list:
        """Versions matching every given filter.

        ``tags``: each key must equal; ``metrics``: ``{"accuracy": (">=", 0.9)}`` with one of
        ``< <= > >= == !=``; ``where``: any predicate on :class:`ModelVersion`.
        """
        ops = {"<": float.__lt__, "<=": float.__le__, ">": float.__gt__, ">=": float.__ge__,
               "==": float.__eq__, "!=": float.__ne__}
        for k, cond in (metrics or {}).items():
            if not (isinstance(cond, tuple) and len(cond) == 2 and cond[0] in ops):
                raise ValueError(f"metric filter {k!r} must be (op, value) with op in "
                                 f"{list(ops)}, got {cond!r}")
        if stage is not None and stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        out = []
        for mv in self.versions(name):
            if stage is not None and mv.stage != stage:
                continue
            mtags = mv.metadata.get("tags") or {}
            if tags and any(mtags.get(k) != v for k, v in tags.items()):
                continue
            mm = mv.metadata.get("metrics") or {}
            if metrics and any(k not in mm or not ops[op](float(mm[k]), float(v))
                               for k, (op, v) in metrics.items()):
                continue
            if where is not None and not where(mv):
                continue
            out.append(mv)
        return out

    def lineage(self, name: str, ref="latest") -> list:
        """This version and its ancestors through ``metadata["parent"]``, newest first."""
        chain, seen = [], set()
        mv = self.get(name, ref)
        while mv is not None and mv.ref not in seen:
            seen.add(mv.ref)
            chain.append(mv)
            parent = mv.metadata.get("parent")
            if not parent:
                break
            pname, _, pver = str(parent).rpartition(":")
            mv = self.get(pname, int(pver))
        return chain

    # ------------------------------------------------------------ loading
    def artifact_path(self, name: str, ref="latest", artifact: str | None = None, *,
                      allow_archived: bool = False) -> Path:
        """Local path of one artifact, integrity-checked against its SHA-256."""
        mv = self._for_loading(name, ref, allow_archived)
        return self._artifact_path(mv, artifact)

    def _artifact_path(self, mv: ModelVersion, artifact: str | None) -> Path:
        if artifact is None:
            if len(mv.manifest) != 1:
                raise ValueError(f"{mv.ref} has artifacts {sorted(mv.manifest)}; name one")
            artifact = next(iter(mv.manifest))
        if artifact not in mv.manifest:
            raise NotFound(f"{mv.ref} has no artifact {artifact!r}; it has "
                           f"{sorted(mv.manifest)}")
        try:
            return self.store.local_path(mv.manifest[artifact]["sha256"])
        except IntegrityError as e:
            raise IntegrityError(f"{mv.ref} artifact {artifact!r}: {e}") from None

    def _for_loading(self, name, ref, allow_archived) -> ModelVersion:
        mv = self.get(name, ref)
        if mv.stage == "archived" and not allow_archived:
            raise LifecycleError(f"{mv.ref} is archived; pass allow_archived=True to load it")
        if mv.stage == "deprecated":
            msg = f"{mv.ref} is deprecated" + (f": {mv.notice}" if mv.notice else "")
            warnings.warn(msg, DeprecatedVersionWarning, stacklevel=3)
            self._notify({"kind": "deprecated_load", "ts": now(), "name": mv.name,
                          "version": mv.version, "notice": mv.notice})
        return mv

    def load(self, name: str, ref="latest", *, allow_archived: bool = False,
             allow_pickle: bool = False) -> dict:
        """Load every array artifact of a version, memory-mapped where the format allows.

        ``.npy`` -> read-only ``np.memmap``-backed array; ``.npz`` -> ``NpzFile`` (lazy);
        ``.safetensors`` -> dict of arrays (needs the ``safetensors`` package); other formats
        -> their local path. Integrity is checked before anything is returned; deprecated
        versions warn with their notice.
        """
        import numpy as np
        mv = self._for_loading(name, ref, allow_archived)
        out = {}
        for aname, info in mv.manifest.items():
            path = self._artifact_path(mv, aname)
            fmt = info.get("format")
            if fmt == "pickle" and not allow_pickle:
                raise LifecycleError(f"{mv.ref} artifact {aname!r} is a pickle; pass "
                                     "allow_pickle=True to load it")
            if fmt == "npy":
                out[aname] = np.load(path, mmap_mode="r", allow_pickle=False)
            elif fmt == "npz":
                out[aname] = np.load(path, allow_pickle=False)
            elif fmt == "safetensors":
                out[aname] = _load_safetensors(path)
            else:
                out[aname] = path
        return out

    # ------------------------------------------------------------ approvals
    def set_approval_policy(self, required_roles: Iterable[str], *, alias: str = "production",
                            distinct_approvers: bool = True, by: str | None = None) -> None:
        """Sign-offs a version needs before ``alias`` may point to it (for example
        ``["legal", "risk", "ml"]``). With ``distinct_approvers`` one person cannot sign two
        roles. An empty list removes the requirement. The change is audited."""
        roles = sorted(set(required_roles))
        actor = self._actor(by)

        def tx(conn):
            old = conn.execute("SELECT required_roles FROM reg_policies WHERE alias=?",
                               (alias,)).fetchone()
            if roles:
                conn.execute("INSERT INTO reg_policies VALUES (?,?,?,?,?) ON CONFLICT(alias) DO "
                             "UPDATE SET required_roles=excluded.required_roles, distinct_"
                             "approvers=excluded.distinct_approvers, set_by=excluded.set_by, "
                             "ts=excluded.ts", (alias, json.dumps(roles),
                                                int(distinct_approvers), actor, now()))
            else:
                conn.execute("DELETE FROM reg_policies WHERE alias=?", (alias,))
            ev = self._commit_change(
                conn, kind="policy_changed",
                audit={"subject": f"policy:{alias}", "actor": actor, "alias": alias,
                       "required_roles": roles, "previous": json.loads(old[0]) if old else [],
                       "distinct_approvers": distinct_approvers},
                event={"alias": alias, "required_roles": roles, "by": actor})
            return None, [ev]
        self._run(tx)

    def approval_policy(self, alias: str = "production") -> dict:
        with self._db.read() as conn:
            row = conn.execute("SELECT required_roles, distinct_approvers FROM reg_policies "
                               "WHERE alias=?", (alias,)).fetchone()
        if row is None:
            return {"alias": alias, "required_roles": [], "distinct_approvers": False}
        return {"alias": alias, "required_roles": json.loads(row[0]),
                "distinct_approvers": bool(row[1])}

    def approve(self, name: str, version: int, *, role: str, approver: str,
                comment: str | None = None) -> ModelVersion:
        """Record one sign-off. When a version has every role that the production policy
        requires, a ``candidate`` becomes ``approved``."""
        if not role or not approver:
            raise ValueError("approve needs a role and an approver")

        def tx(conn):
            mv = self._get(conn, name, version)
            if mv.stage in ("deprecated", "archived"):
                raise LifecycleError(f"{mv.ref} is {mv.stage}; it cannot be approved")
            conn.execute("INSERT INTO reg_approvals VALUES (?,?,?,?,?,?) ON CONFLICT(name, "
                         "version, role) DO UPDATE SET approver=excluded.approver, "
                         "ts=excluded.ts, comment=excluded.comment",
                         (name, version, role, approver, now(), comment))
            events = [self._commit_change(
                conn, kind="approved",
                audit={"subject": mv.subject, "actor": approver, "model": name,
                       "version": version, "role": role, "comment": comment},
                event={"name": name, "version": version, "role": role, "by": approver})]
            missing, _ = self._missing(conn, name, version, "production")
            if not missing and mv.stage == "candidate":
                events.append(self._set_stage_in(conn, mv, "approved", approver,
                                                 "all required sign-offs present"))
            return self._get(conn, name, version), events
        return self._run(tx)

    def approvals(self, name: str, version: int) -> list:
        with self._db.read() as conn:
            rows = conn.execute("SELECT role, approver, ts, comment FROM reg_approvals WHERE "
                                "name=? AND version=? ORDER BY role", (name, version)).fetchall()
        return [{"role": r, "approver": a, "ts": t, "comment": c} for r, a, t, c in rows]

    def missing_approvals(self, name: str, version: int, alias: str = "production") -> list:
        with self._db.read() as conn:
            return self._missing(conn, name, version, alias)[0]

    def _missing(self, conn, name, version, alias):
        row = conn.execute("SELECT required_roles, distinct_approvers FROM reg_policies "
                           "WHERE alias=?", (alias,)).fetchone()
        if row is None:
            return [], []
        required = json.loads(row[0])
        have = dict(conn.execute("SELECT role, approver FROM reg_approvals WHERE name=? AND "
                                 "version=?", (name, version)).fetchall())
        missing = [r for r in required if r not in have]
        problems = []
        if row[1]:
            by_person: dict = {}
            for r in required:
                if r in have:
                    by_person.setdefault(have[r], []).append(r)
            for person, roles in sorted(by_person.items()):
                if len(roles) > 1:
                    problems.append(f"{person} signed {', '.join(roles)}; these roles need "
                                    "different people")
        return missing, problems

    # ------------------------------------------------------------ serving checks
    def declare_serving(self, name: str, *, alias: str = "production",
                        input_schema: Mapping | None = None,
                        feature_version: str | None = None, by: str | None = None) -> None:
        """What the serving side behind ``alias`` feeds the model; promotion checks it."""
        spec = {"input_schema": dict(input_schema) if input_schema is not None else None,
                "feature_version": feature_version}
        actor = self._actor(by)

        def tx(conn):
            conn.execute("INSERT INTO reg_serving VALUES (?,?,?,?,?) ON CONFLICT(name, alias) "
                         "DO UPDATE SET spec=excluded.spec, set_by=excluded.set_by, "
                         "ts=excluded.ts", (name, alias, canonical_json(spec), actor, now()))
            ev = self._commit_change(conn, kind="serving_declared",
                                     audit={"subject": f"model:{name}", "actor": actor,
                                            "alias": alias, "spec": spec},
                                     event={"name": name, "alias": alias, "by": actor})
            return None, [ev]
        self._run(tx)

    @staticmethod
    def _schema_differences(mv: ModelVersion, spec: Mapping) -> list:
        diffs = []
        want_fv = spec.get("feature_version")
        have_fv = mv.metadata.get("feature_version")
        if want_fv is not None and have_fv != want_fv:
            diffs.append(f"feature_version: model trained on {have_fv!r}, serving provides "
                         f"{want_fv!r}")
        want = spec.get("input_schema")
        if want is not None:
            have = mv.metadata.get("input_schema")
            if have is None:
                diffs.append("input_schema: the model version declares none")
            else:
                for f in sorted(set(have) | set(want)):
                    if f not in want:
                        diffs.append(f"input field {f!r}: model needs it, serving does not "
                                     "provide it")
                    elif f not in have:
                        diffs.append(f"input field {f!r}: serving provides it, model was not "
                                     "trained on it")
                    elif have[f] != want[f]:
                        diffs.append(f"input field {f!r}: model expects {have[f]!r}, serving "
                                     f"provides {want[f]!r}")
        return diffs

    # ------------------------------------------------------------ aliases and promotion
    def promote(self, name: str, version: int, *, alias: str = "production",
                by: str | None = None, reason: str | None = None,
                serving: Mapping | None = None) -> ModelVersion:
        """Point ``alias`` at ``version`` after every check passes.

        Refused with :class:`ApprovalRequired` when the alias's approval policy is not met
        (naming the missing roles), :class:`SchemaMismatch` when the version's input schema or
        feature version differs from ``serving`` or from what :meth:`declare_serving` recorded,
        and :class:`LifecycleError` for deprecated or archived versions. Promoting to
        ``production`` sets the stage to ``production``; the version it replaces returns to
        ``approved``.
        """
        actor = self._actor(by)

        def tx(conn):
            mv = self._get(conn, name, version)
            if mv.stage in ("deprecated", "archived"):
                raise LifecycleError(f"{mv.ref} is {mv.stage}; it cannot take alias {alias!r}")
            missing, sod = self._missing(conn, name, version, alias)
            if missing or sod:
                parts = []
                if missing:
                    parts.append(f"missing sign-offs: {', '.join(missing)}")
                parts.extend(sod)
                raise ApprovalRequired(f"cannot point {name}:{alias} at version {version}: "
                                       + "; ".join(parts), missing)
            spec = serving
            if spec is None:
                row = conn.execute("SELECT spec FROM reg_serving WHERE name=? AND alias=?",
                                   (name, alias)).fetchone()
                spec = json.loads(row[0]) if row else None
            if spec is not None:
                diffs = self._schema_differences(mv, spec)
                if diffs:
                    raise SchemaMismatch(f"cannot point {name}:{alias} at version {version}: "
                                         + "; ".join(diffs), diffs)
            events = self._move_alias(conn, mv, alias, actor, reason, kind="promoted")
            if alias == "production" and mv.stage != "production":
                for (old,) in conn.execute("SELECT version FROM reg_versions WHERE name=? AND "
                                           "stage='production' AND version != ?",
                                           (name, version)).fetchall():
                    if not conn.execute("SELECT 1 FROM reg_aliases WHERE name=? AND version=? "
                                        "AND alias='production'", (name, old)).fetchone():
                        events.append(self._set_stage_in(conn, self._get(conn, name, old),
                                                         "approved", actor,
                                                         f"replaced by version {version}"))
                events.append(self._set_stage_in(conn, mv, "production", actor, reason,
                                                 check=False))
            return self._get(conn, name, version), events
        return self._run(tx)

    def set_alias(self, name: str, alias: str, version: int, *, by: str | None = None,
                  reason: str | None = None) -> ModelVersion:
        """Move any alias (``canary``, ``shadow``, ...). Approval policies and serving
        declarations for that alias apply exactly as in :meth:`promote`."""
        return self.promote(name, version, alias=alias, by=by, reason=reason)

    def _move_alias(self, conn, mv: ModelVersion, alias, actor, reason, kind) -> list:
        _check_model_name(alias)
        ts = now()
        old = conn.execute("SELECT version FROM reg_aliases WHERE name=? AND alias=?",
                           (mv.name, alias)).fetchone()
        conn.execute("UPDATE reg_alias_history SET to_ts=?, ended_by=?, end_reason=? WHERE "
                     "name=? AND alias=? AND to_ts IS NULL", (ts, actor, reason, mv.name, alias))
        conn.execute("INSERT INTO reg_alias_history(name, alias, version, from_ts, set_by, "
                     "reason) VALUES (?,?,?,?,?,?)", (mv.name, alias, mv.version, ts, actor,
                                                     reason))
        conn.execute("INSERT INTO reg_aliases VALUES (?,?,?,?,?,?) ON CONFLICT(name, alias) DO "
                     "UPDATE SET version=excluded.version, since=excluded.since, "
                     "set_by=excluded.set_by, reason=excluded.reason",
                     (mv.name, alias, mv.version, ts, actor, reason))
        prev = old[0] if old else None
        return [self._commit_change(
            conn, kind=kind,
            audit={"subject": mv.subject, "actor": actor, "model": mv.name,
                   "version": mv.version, "alias": alias, "previous": prev, "reason": reason},
            event={"name": mv.name, "version": mv.version, "alias": alias, "previous": prev,
                   "by": actor, "reason": reason})]

    def rollback(self, name: str, *, alias: str = "production", by: str | None = None,
                 reason: str | None = None) -> ModelVersion:
        """Point ``alias`` back at the version it pointed to before the current one."""
        with self._db.read() as conn:
            hist = conn.execute("SELECT version FROM reg_alias_history WHERE name=? AND alias=? "
                                "ORDER BY id DESC", (name, alias)).fetchall()
        if len(hist) < 2:
            raise LifecycleError(f"{name}:{alias} has no earlier version to roll back to")
        current = hist[0][0]
        target = next((v for (v,) in hist[1:] if v != current), None)
        if target is None:
            raise LifecycleError(f"{name}:{alias} has only ever pointed at version {current}")
        actor = self._actor(by)

        def tx(conn):
            mv = self._get(conn, name, target)
            if mv.stage in ("deprecated", "archived"):
                raise LifecycleError(f"rollback target {mv.ref} is {mv.stage}")
            events = self._move_alias(conn, mv, alias, actor, reason, kind="rollback")
            if alias == "production":
                cur = self._get(conn, name, current)
                if cur.stage == "production":
                    events.append(self._set_stage_in(conn, cur, "approved", actor,
                                                     f"rolled back: {reason}"))
                if mv.stage != "production":
                    events.append(self._set_stage_in(conn, mv, "production", actor, reason,
                                                     check=False))
            return self._get(conn, name, target), events
        return self._run(tx)

    def remove_alias(self, name: str, alias: str, *, by: str | None = None,
                     reason: str | None = None) -> None:
        actor = self._actor(by)

        def tx(conn):
            row = conn.execute("SELECT version FROM reg_aliases WHERE name=? AND alias=?",
                               (name, alias)).fetchone()
            if row is None:
                raise NotFound(f"model {name!r} has no alias {alias!r}")
            ts = now()
            conn.execute("DELETE FROM reg_aliases WHERE name=? AND alias=?", (name, alias))
            conn.execute("UPDATE reg_alias_history SET to_ts=?, ended_by=?, end_reason=? WHERE "
                         "name=? AND alias=? AND to_ts IS NULL", (ts, actor, reason, name,
                                                                  alias))
            ev = self._commit_change(conn, kind="alias_removed",
                                     audit={"subject": f"model:{name}:{row[0]}", "actor": actor,
                                            "alias": alias, "reason": reason},
                                     event={"name": name, "alias": alias, "version": row[0],
                                            "by": actor})
            return None, [ev]
        self._run(tx)

    def aliases(self, name: str) -> dict:
        with self._db.read() as conn:
            rows = conn.execute("SELECT alias, version, since, set_by, reason FROM reg_aliases "
                                "WHERE name=? ORDER BY alias", (name,)).fetchall()
        return {a: {"version": v, "since": s, "set_by": b, "reason": r}
                for a, v, s, b, r in rows}

    def alias_history(self, name: str, alias: str) -> list:
        """Every period ``alias`` pointed at a version: from when to when, who set it and
        why, who moved it away and why (``to_ts`` is None for the current one)."""
        with self._db.read() as conn:
            rows = conn.execute("SELECT version, from_ts, to_ts, set_by, reason, ended_by, "
                                "end_reason FROM reg_alias_history WHERE name=? AND alias=? "
                                "ORDER BY id", (name, alias)).fetchall()
        keys = ("version", "from_ts", "to_ts", "set_by", "reason", "ended_by", "end_reason")
        return [dict(zip(keys, r)) for r in rows]

    def alias_at(self, name: str, alias: str, ts: float) -> int | None:
        """Which version ``alias`` pointed at, at time ``ts`` (None if it pointed nowhere)."""
        with self._db.read() as conn:
            row = conn.execute("SELECT version FROM reg_alias_history WHERE name=? AND alias=? "
                               "AND from_ts <= ? AND (to_ts IS NULL OR to_ts > ?) ORDER BY id "
                               "DESC LIMIT 1", (name, alias, ts, ts)).fetchone()
        return row[0] if row else None

    # ------------------------------------------------------------ lifecycle
    def set_stage(self, name: str, version: int, stage: str, *, by: str | None = None,
                  reason: str | None = None, _notice: str | None = None) -> ModelVersion:
        if stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
        if stage == "production":
            raise LifecycleError("a version enters production only through promote()")
        if stage == "approved":
            missing = self.missing_approvals(name, version)
            if missing:
                raise ApprovalRequired(f"{name}:{version} cannot be approved: missing "
                                       f"sign-offs: {', '.join(missing)}", missing)
        actor = self._actor(by)

        def tx(conn):
            mv = self._get(conn, name, version)
            if stage in ("deprecated", "archived"):
                held = [a for (a,) in conn.execute("SELECT alias FROM reg_aliases WHERE name=? "
                                                   "AND version=?", (name, version))]
                if held:
                    raise LifecycleError(f"{mv.ref} is still behind alias(es) {held}; move "
                                         "them first")
            ev = self._set_stage_in(conn, mv, stage, actor, reason)
            if _notice is not None:
                conn.execute("UPDATE reg_versions SET notice=? WHERE name=? AND version=?",
                             (_notice, name, version))
            return self._get(conn, name, version), [ev]
        return self._run(tx)

    def deprecate(self, name: str, version: int, *, notice: str, by: str | None = None
                  ) -> ModelVersion:
        """Mark a version deprecated; whoever loads it afterwards gets ``notice`` as a
        :class:`DeprecatedVersionWarning` (and subscribers a ``deprecated_load`` event)."""
        return self.set_stage(name, version, "deprecated", by=by, reason=notice, _notice=notice)

    def _set_stage_in(self, conn, mv: ModelVersion, stage: str, actor, reason, *,
                      check: bool = True) -> dict:
        if check and stage != mv.stage and stage not in _TRANSITIONS[mv.stage]:
            raise LifecycleError(f"{mv.ref} cannot go from {mv.stage} to {stage}; allowed: "
                                 f"{sorted(_TRANSITIONS[mv.stage]) or 'none'}")
        conn.execute("UPDATE reg_versions SET stage=?, stage_changed=? WHERE name=? AND "
                     "version=?", (stage, now(), mv.name, mv.version))
        kind = stage if stage in ("deprecated", "archived") else "stage_changed"
        ev = self._commit_change(
            conn, kind=kind,
            audit={"subject": mv.subject, "actor": actor, "model": mv.name,
                   "version": mv.version, "from": mv.stage, "to": stage, "reason": reason},
            event={"name": mv.name, "version": mv.version, "from": mv.stage, "to": stage,
                   "by": actor, "reason": reason})
        mv.stage = stage
        return ev

    def delete_version(self, name: str, version: int, *, by: str | None = None,
                       reason: str | None = None) -> None:
        """Delete an archived version's record and the blobs nothing else uses."""
        actor = self._actor(by)

        def tx(conn):
            mv = self._get(conn, name, version)
            if mv.stage != "archived":
                raise LifecycleError(f"{mv.ref} is {mv.stage}; only archived versions can be "
                                     "deleted")
            conn.execute("DELETE FROM reg_versions WHERE name=? AND version=?", (name, version))
            ev = self._commit_change(
                conn, kind="deleted",
                audit={"subject": mv.subject, "actor": actor, "model": name,
                       "version": version, "reason": reason,
                       "manifest": {k: v["sha256"] for k, v in mv.manifest.items()}},
                event={"name": name, "version": version, "by": actor, "reason": reason})
            return mv, [ev]
        mv = self._run(tx)
        self._collect_garbage({v["sha256"] for v in mv.manifest.values()})

    def _collect_garbage(self, candidates: set) -> None:
        used = set()
        for v in self.versions():
            used.update(m["sha256"] for m in v.manifest.values())
        for sha in candidates - used:
            self.store.delete(sha)

    def retention(self, *, keep_last: int | None = None, archive_after_s: float | None = None,
                  delete_archived_after_s: float | None = None, name: str | None = None,
                  dry_run: bool = True, by: str | None = None) -> RetentionPlan:
        """Apply (or with ``dry_run``, the default, only show) a retention policy.

        Never touches a version any alias points to or that is in production. Beyond the
        newest ``keep_last`` versions of each model, and for versions older than
        ``archive_after_s``, candidates/approved/deprecated versions are archived; archived
        versions older than ``delete_archived_after_s`` (counted from when they were archived)
        are deleted.
        """
        t = now()
        actions, kept = [], []
        with self._db.read() as conn:
            aliased = {(n, v) for n, v in conn.execute("SELECT name, version FROM reg_aliases")}
            rows = conn.execute("SELECT name, version, stage, created, stage_changed FROM "
                                "reg_versions ORDER BY name, version DESC").fetchall()
        rank: dict = {}
        for n, v, stage, created, changed in rows:
            if name is not None and n != name:
                continue
            rank[n] = rank.get(n, 0) + 1
            if (n, v) in aliased:
                kept.append({"name": n, "version": v, "reason": "an alias points to it"})
                continue
            if stage == "production":
                kept.append({"name": n, "version": v, "reason": "in production"})
                continue
            if stage == "archived":
                if delete_archived_after_s is not None and t - changed >= delete_archived_after_s:
                    actions.append({"name": n, "version": v, "action": "delete",
                                    "reason": f"archived {_age(t - changed)} ago"})
                else:
                    kept.append({"name": n, "version": v, "reason": "archived"})
                continue
            why = []
            if keep_last is not None and rank[n] > keep_last:
                why.append(f"not among the last {keep_last} versions")
            if archive_after_s is not None and t - created >= archive_after_s:
                why.append(f"registered {_age(t - created)} ago")
            if why:
                actions.append({"name": n, "version": v, "action": "archive",
                                "reason": "; ".join(why)})
            else:
                kept.append({"name": n, "version": v, "reason": "within policy"})
        if not dry_run:
            for a in actions:
                if a["action"] == "archive":
                    self.set_stage(a["name"], a["version"], "archived", by=by,
                                   reason=f"retention: {a['reason']}")
                else:
                    self.delete_version(a["name"], a["version"], by=by,
                                        reason=f"retention: {a['reason']}")
        return RetentionPlan(dry_run, actions, kept)

    # ------------------------------------------------------------ events
    def subscribe(self, callback: Callable[[dict], None], kinds: Iterable[str] | None = None
                  ) -> Callable[[], None]:
        """Call ``callback(event)`` after each committed change in this process; returns a
        function that unsubscribes. Other processes and webhooks use the outbox."""
        entry = (frozenset(kinds) if kinds is not None else None, callback)
        self._subscribers.append(entry)
        return lambda: self._subscribers.remove(entry)

    def outbox(self, *, pending_only: bool = True, limit: int = 100) -> list:
        sql = "SELECT id, payload, attempts, last_error FROM reg_outbox"
        if pending_only:
            sql += " WHERE delivered IS NULL"
        with self._db.read() as conn:
            rows = conn.execute(sql + " ORDER BY id LIMIT ?", (limit,)).fetchall()
        return [{"id": i, "event": json.loads(p), "attempts": a, "last_error": e}
                for i, p, a, e in rows]

    def deliver_outbox(self, send: Callable[[dict], None], *, max_attempts: int = 8,
                       backoff_s: float = 1.0, limit: int = 100) -> dict:
        """Hand pending events to ``send`` (e.g. an HTTP POST to a webhook) in order.

        An event is marked delivered only after ``send`` returns; a failure is retried later
        with exponential backoff, up to ``max_attempts`` (at-least-once delivery: receivers
        should de-duplicate by the event ``id``).
        """
        t = now()
        with self._db.read() as conn:
            rows = conn.execute("SELECT id, payload, attempts FROM reg_outbox WHERE delivered "
                                "IS NULL AND attempts < ? AND next_attempt <= ? ORDER BY id "
                                "LIMIT ?", (max_attempts, t, limit)).fetchall()
        delivered = failed = 0
        for i, payload, attempts in rows:
            ev = {"id": i, **json.loads(payload)}
            try:
                send(ev)
            except Exception as e:
                failed += 1
                with self._db.write() as conn:
                    conn.execute("UPDATE reg_outbox SET attempts=attempts+1, last_error=?, "
                                 "next_attempt=? WHERE id=?",
                                 (f"{type(e).__name__}: {e}", now() + backoff_s * 2 ** attempts,
                                  i))
                continue
            delivered += 1
            with self._db.write() as conn:
                conn.execute("UPDATE reg_outbox SET delivered=?, attempts=attempts+1 WHERE id=?",
                             (now(), i))
        return {"delivered": delivered, "failed": failed}

    # ------------------------------------------------------------ bundles and lineage
    def export_bundle(self, name: str, ref, path) -> Path:
        """Write one version as a reproducibility bundle (see :mod:`pyperfcore.ops.bundle`)."""
        from .bundle import export_bundle
        return export_bundle(self, name, ref, path)

    def import_bundle(self, path, *, by: str | None = None, name: str | None = None
                      ) -> ModelVersion:
        from .bundle import import_bundle
        return import_bundle(self, path, by=by, name=name)

    def openlineage_events(self, name: str, ref="latest", *, namespace: str = "pyperfcore"
                           ) -> list:
        from .bundle import openlineage_events
        return openlineage_events(self, name, ref, namespace=namespace)


def _check_model_name(name) -> None:
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ValueError(f"model and alias names must be non-empty strings, got {name!r}")
    bad = set(name) & set(':/\\\x00')
    if bad or name.strip() != name or name.isdigit():
        raise ValueError(f"name {name!r} may not contain ':', '/', '\\', NUL, surrounding "
                         "spaces or be all digits")


def _age(seconds: float) -> str:
    if seconds >= 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds:.0f} s" if not math.isnan(seconds) else "?"


def _load_safetensors(path):
    try:
        from safetensors.numpy import load_file
    except ImportError as e:
        raise ImportError("loading .safetensors artifacts needs the 'safetensors' package "
                          "(pip install safetensors)") from e
    return load_file(str(path))
