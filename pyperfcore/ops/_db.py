"""Database plumbing shared by the ops stores: connections, transactions, schema versions.

SQLite (stdlib ``sqlite3``) is the embedded default; a ``postgresql://`` URL selects
PostgreSQL (:mod:`pyperfcore.ops._pg`, psycopg 3 imported lazily) for fleets of replicas.
Both expose the same small interface (``read()``, ``write()``, ``snapshot()``, ``stream()``,
``data_version()``) and the stores write SQL in SQLite's dialect with ``?`` placeholders,
which the PostgreSQL side translates; only the schema scripts differ per dialect.

Every store (audit, registry, cost) keeps its schema version in one ``pyperfcore_schema`` row
per store name. Opening a database applies the forward migrations the code knows in one
transaction; a database written by a newer pyperfcore is refused with :class:`SchemaTooNew`
rather than guessed at.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .._errors import PyperfcoreError

__all__ = ["SchemaTooNew", "OpsError", "Database", "SQLiteDatabase", "open_database",
           "is_postgres_url", "canonical_json", "now", "run_script"]


class OpsError(PyperfcoreError):
    """Base class of errors raised by the ops stores."""


class SchemaTooNew(OpsError, RuntimeError):
    """The database was written by a newer pyperfcore than this one."""


Migration = Callable[[sqlite3.Connection], None]

# Writers wait this long for another writer's lock before failing; concurrent replicas and
# threads share one file, so a short timeout turns ordinary contention into errors.
BUSY_TIMEOUT_S = 60.0


def now() -> float:
    """Wall-clock time in seconds since the epoch (one place, so tests can reason about it)."""
    return time.time()


def canonical_json(obj) -> str:
    """The one serialisation that hashes are computed over: sorted keys, no spaces, UTF-8 safe."""
    return _ENCODER.encode(obj)


def _json_default(o):
    # numpy scalars and arrays appear in metrics and payloads; paths in lineage.
    if hasattr(o, "item") and getattr(o, "shape", None) == ():
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (Path, bytes)):
        return o.hex() if isinstance(o, bytes) else str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"value of type {type(o).__name__} is not JSON serialisable: {o!r}")


# One encoder object: json.dumps() with non-default options builds a new one per call.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                            allow_nan=False, default=_json_default)


def sqlite_path(url_or_path) -> str:
    """Turn ``path``, ``sqlite:///path`` or ``:memory:`` into a path sqlite3 understands."""
    if isinstance(url_or_path, Path):
        return str(url_or_path)
    if not isinstance(url_or_path, str):
        raise TypeError(f"expected a path or URL string, got {type(url_or_path).__name__}")
    s = url_or_path
    if s.startswith("sqlite://"):
        s = s[len("sqlite://"):]
        if s.startswith("/"):
            s = s[1:] if not s.startswith("//") else s[1:]
        return s or ":memory:"
    if "://" in s:
        scheme = s.split("://", 1)[0]
        raise ValueError(
            f"unsupported store URL scheme {scheme!r}: use an SQLite path, a sqlite:/// URL "
            "or a postgresql:// URL")
    return s


def is_postgres_url(url_or_path) -> bool:
    return isinstance(url_or_path, str) and url_or_path.startswith(("postgresql://",
                                                                    "postgres://"))


def open_database(url_or_path, *, store: str, migrations: Sequence[Migration],
                  pg_migrations: Sequence[Migration] | None = None, **kw):
    """An SQLite or PostgreSQL database for ``store``, migrated forward to the code's schema.

    ``migrations`` are the SQLite schema steps; ``pg_migrations`` the PostgreSQL ones (same
    count, same meaning: version ``i`` is the same schema on both).
    """
    if is_postgres_url(url_or_path):
        if pg_migrations is None:
            raise ValueError(f"the {store!r} store has no PostgreSQL schema")
        from ._pg import PostgresDatabase
        return PostgresDatabase(url_or_path, store=store, migrations=pg_migrations)
    return SQLiteDatabase(url_or_path, store=store, migrations=migrations, **kw)


class SQLiteDatabase:
    """One SQLite file shared by threads (one connection per thread) and processes.

    WAL journal, ``synchronous=FULL`` (a commit that returned survives power loss as well as a
    killed process), and ``BEGIN IMMEDIATE`` for every write so that read-then-write sequences
    (the audit chain head, alias moves) are serialised across processes.
    """

    def __init__(self, path, *, store: str, migrations: Sequence[Migration],
                 synchronous: str = "FULL"):
        self.path = sqlite_path(path)
        if self.path != ":memory:":
            parent = Path(self.path).parent
            parent.mkdir(parents=True, exist_ok=True)
        self.store = store
        self._migrations = list(migrations)
        self._synchronous = synchronous
        self._local = threading.local()
        self._memory_conn = None
        self._memory_lock = threading.RLock()
        self._migrate(store, self._migrations)

    dialect = "sqlite"
    errors = (sqlite3.DatabaseError,)

    @property
    def schema_version(self) -> int:
        return len(self._migrations)

    def ensure(self, store: str, migrations: Sequence[Migration],
               pg_migrations: Sequence[Migration] | None = None) -> None:
        """Create or migrate another store's tables in this same database."""
        self._migrate(store, list(migrations))

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (``:memory:`` databases share one, guarded by a lock)."""
        if self.path == ":memory:":
            if self._memory_conn is None:
                self._memory_conn = self._connect()
            return self._memory_conn
        conn = getattr(self._local, "conn", None)
        pid = getattr(self._local, "pid", None)
        if conn is None or pid != os.getpid():
            # A connection must never cross fork(): the child opens its own.
            conn = self._connect()
            self._local.conn = conn
            self._local.pid = os.getpid()
        return conn

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                               check_same_thread=self.path != ":memory:")
        if self.path != ":memory:":
            conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_S * 1000)}")
        return conn

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A ``BEGIN IMMEDIATE`` transaction: committed on success, rolled back on error."""
        lock = self._memory_lock if self.path == ":memory:" else contextlib.nullcontext()
        with lock:
            conn = self.connection()
            if conn.in_transaction:
                # Nested use joins the outer transaction (the registry writes audit records
                # inside its own transaction so both commit or neither does).
                yield conn
                return
            _begin_immediate(conn)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        lock = self._memory_lock if self.path == ":memory:" else contextlib.nullcontext()
        with lock:
            yield self.connection()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees one consistent state while writers
        go on (WAL readers never block writers)."""
        with self.read() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    @staticmethod
    def stream(conn, sql: str, args=(), size: int = 8192) -> Iterator[list]:
        """Rows of a query in blocks of ``size`` (inside :meth:`snapshot` for consistency)."""
        cur = conn.execute(sql, args)
        fetch = cur.fetchmany
        while True:
            block = fetch(size)
            if not block:
                return
            yield block

    def data_version(self) -> int:
        """Changes when *another* connection commits (``PRAGMA data_version``)."""
        with self.read() as conn:
            return conn.execute("PRAGMA data_version").fetchone()[0]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
        if self._memory_conn is not None:
            self._memory_conn.close()
            self._memory_conn = None

    def _migrate(self, store: str, migrations: list) -> None:
        with self.write() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS pyperfcore_schema ("
                         "store TEXT PRIMARY KEY, version INTEGER NOT NULL, updated REAL)")
            apply_migrations(conn, self.path, store, migrations)


def apply_migrations(conn, where: str, store: str, migrations: list) -> None:
    """Inside a write transaction: bring ``store`` from its recorded version to the code's."""
    row = conn.execute("SELECT version FROM pyperfcore_schema WHERE store=?",
                       (store,)).fetchone()
    current = row[0] if row else 0
    known = len(migrations)
    if current > known:
        raise SchemaTooNew(
            f"{where}: the {store!r} schema is version {current}, newer than "
            f"the version {known} this pyperfcore knows; upgrade pyperfcore to open it "
            "(it is never opened read-write by older code, so no data was changed)")
    for v in range(current, known):
        migrations[v](conn)
    if current != known:
        conn.execute("INSERT INTO pyperfcore_schema(store, version, updated) "
                     "VALUES(?,?,?) ON CONFLICT(store) DO UPDATE SET "
                     "version=excluded.version, updated=excluded.updated",
                     (store, known, now()))


# Old name, kept for code that constructs an SQLite store directly.
Database = SQLiteDatabase


def _begin_immediate(conn: sqlite3.Connection) -> None:
    # busy_timeout covers most contention; a short retry loop covers the rare SQLITE_BUSY that
    # WAL returns immediately (e.g. while another connection recovers the WAL index).
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    delay = 0.001
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) and "busy" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)


def run_script(conn: sqlite3.Connection, script: str) -> None:
    """Execute several statements inside the current transaction.

    ``executescript`` would COMMIT first, which breaks the all-or-nothing migration.
    """
    buf = ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--") and not buf.strip():
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            conn.execute(buf)
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement in script: {buf!r}")


def schema_version_of(path, store: str) -> int:
    """The schema version recorded in a database file for ``store`` (0 when absent)."""
    conn = sqlite3.connect(sqlite_path(path))
    try:
        try:
            row = conn.execute("SELECT version FROM pyperfcore_schema WHERE store=?",
                               (store,)).fetchone()
        except sqlite3.OperationalError:
            return 0
        return row[0] if row else 0
    finally:
        conn.close()
