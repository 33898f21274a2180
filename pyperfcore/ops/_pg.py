"""PostgreSQL backend of the ops stores (psycopg 3, imported when a ``postgresql://`` URL is
opened; ``pip install "pyperfcore[postgres]"`` or ``pip install "psycopg[binary]"``).

The guarantees match the SQLite backend:

* **One writer at a time per store namespace.** Every write transaction starts by taking a
  transaction-scoped advisory lock derived from the schema name, the equivalent of SQLite's
  ``BEGIN IMMEDIATE``: read-then-write sequences (the audit chain head, version numbers, alias
  moves) are serialised across threads, processes and replicas, and the lock is released by
  COMMIT or ROLLBACK, also when the client dies (the server ends its session).
* **Durable on return.** ``append`` returns after COMMIT, with the server's
  ``synchronous_commit`` (on by default).
* **Consistent reads.** :meth:`snapshot` is a ``REPEATABLE READ READ ONLY`` transaction; long
  scans stream through a server-side cursor in binary format.
* **Change detection for caches.** Each write transaction bumps ``pyperfcore_generation``;
  :meth:`data_version` reads it (one round trip) so a replica's alias cache sees other
  replicas' moves on its next call, as ``PRAGMA data_version`` does on SQLite.

URL: any libpq URL, plus an optional pyperfcore parameter ``schema`` naming the PostgreSQL
schema (namespace) that holds the tables, e.g.
``postgresql://user@db.internal:5432/mlops?schema=fraud_team``; several registries and audit
logs can share one database in separate schemas. The schema is created if missing.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
from functools import lru_cache
from typing import Iterator, Sequence
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ._db import apply_migrations

__all__ = ["PostgresDatabase", "pg_sql", "split_url"]

_SCHEMA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def _psycopg():
    try:
        import psycopg
    except ImportError as e:  # pragma: no cover - exercised only without psycopg
        raise ImportError("a postgresql:// store needs psycopg 3: pip install "
                          "'psycopg[binary]' (or the pyperfcore[postgres] extra)") from e
    return psycopg


def split_url(url: str) -> tuple:
    """``(libpq URL without the schema parameter, schema name)``."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = "public"
    rest = []
    for k, v in query:
        if k == "schema":
            schema = v
        else:
            rest.append((k, v))
    if not _SCHEMA_RE.match(schema):
        raise ValueError(f"schema name {schema!r} in the store URL must be a plain identifier "
                         "(letters, digits, underscore; at most 63 characters)")
    scheme = "postgresql" if parts.scheme == "postgres" else parts.scheme
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment)), \
        schema


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


_QUOTED = re.compile(r"('(?:[^']|'')*')")


@lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
    """Translate the stores' SQLite-dialect statements: ``?`` placeholders become ``%s``
    (outside string literals), ``INSERT OR IGNORE`` becomes ``ON CONFLICT DO NOTHING``."""
    parts = _QUOTED.split(sql)
    for i in range(0, len(parts), 2):  # even parts are outside quotes
        parts[i] = parts[i].replace("%", "%%").replace("?", "%s")
    out = "".join(parts)
    if out.lstrip().upper().startswith("INSERT OR IGNORE INTO"):
        out = re.sub(r"(?i)INSERT\s+OR\s+IGNORE\s+INTO", "INSERT INTO", out, count=1)
        out += " ON CONFLICT DO NOTHING"
    return out


class PgConnection:
    """A psycopg connection that speaks the stores' SQL (``execute``/``executemany`` with
    ``?`` placeholders, cursors with ``fetchone``/``fetchall``/``fetchmany``)."""

    __slots__ = ("raw",)
    dialect = "postgresql"

    def __init__(self, raw):
        self.raw = raw

    def execute(self, sql: str, args=()):
        if args:
            return self.raw.execute(pg_sql(sql), args)
        return self.raw.execute(pg_sql(sql).replace("%%", "%"))

    def executemany(self, sql: str, rows):
        cur = self.raw.cursor()
        cur.executemany(pg_sql(sql), rows)
        return cur

    def script(self, sql: str) -> None:
        """Several statements, no parameters (schema migrations)."""
        self.raw.execute(sql)

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != _psycopg().pq.TransactionStatus.IDLE


class PostgresDatabase:
    """The ops stores' tables in one PostgreSQL schema, shared by threads (one connection per
    thread), processes and replicas. See the module docstring for the guarantees."""

    dialect = "postgresql"

    def __init__(self, url: str, *, store: str, migrations: Sequence):
        psycopg = _psycopg()
        self.errors = (psycopg.Error,)
        self.path = url  # identity: two objects opened on the same URL share the store
        self.conninfo, self.schema = split_url(url)
        self.display = _redact(url)
        self.store = store
        self._migrations = list(migrations)
        # One advisory lock key per schema: the writer lock of this store namespace.
        self._lock_key = int.from_bytes(
            hashlib.sha256(("pyperfcore:" + self.schema).encode()).digest()[:8], "big",
            signed=True)
        self._local = threading.local()
        self._all: list = []
        self._all_lock = threading.Lock()
        self._migrate(store, self._migrations)

    @property
    def schema_version(self) -> int:
        return len(self._migrations)

    # ------------------------------------------------------------ connections
    def connection(self) -> PgConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid() or conn.raw.closed:
            # A connection must never cross fork(): the child opens its own.
            conn = PgConnection(self._connect())
            self._local.conn = conn
            self._local.pid = os.getpid()
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _connect(self):
        psycopg = _psycopg()
        try:
            raw = psycopg.connect(self.conninfo, autocommit=True)
        except psycopg.OperationalError as e:
            raise psycopg.OperationalError(f"cannot connect to {self.display}: {e}") from e
        # The schema may not exist yet (created under the writer lock by _migrate); naming it
        # first keeps other schemas' tables out of reach.
        raw.execute(f'SET search_path TO "{self.schema}"')
        return raw

    def close(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        for c in conns:
            with contextlib.suppress(Exception):
                c.raw.close()
        self._local = threading.local()

    # ------------------------------------------------------------ transactions
    @contextlib.contextmanager
    def write(self) -> Iterator[PgConnection]:
        """A transaction holding this schema's writer lock: committed on success, rolled back
        on error. Nested use joins the outer transaction."""
        conn = self.connection()
        if conn.in_transaction:
            yield conn
            return
        conn.raw.execute(f"BEGIN; SELECT pg_advisory_xact_lock({self._lock_key})")
        try:
            yield conn
            conn.raw.execute("UPDATE pyperfcore_generation SET n = n + 1 WHERE id = 1; COMMIT")
        except BaseException:
            if not conn.raw.closed:
                with contextlib.suppress(Exception):
                    conn.raw.execute("ROLLBACK")
            raise

    @contextlib.contextmanager
    def read(self) -> Iterator[PgConnection]:
        yield self.connection()

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[PgConnection]:
        conn = self.connection()
        conn.raw.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.raw.execute("COMMIT")

    @staticmethod
    def stream(conn: PgConnection, sql: str, args=(), size: int = 8192) -> Iterator[list]:
        """Rows in blocks from a server-side binary cursor (inside :meth:`snapshot`)."""
        cur = conn.raw.cursor(name=f"pyperfcore_stream_{threading.get_ident()}", binary=True)
        try:
            cur.itersize = size
            cur.execute(pg_sql(sql), args or None)
            while True:
                block = cur.fetchmany(size)
                if not block:
                    return
                yield block
        finally:
            with contextlib.suppress(Exception):
                cur.close()

    def data_version(self) -> int:
        return self.connection().raw.execute(
            "SELECT n FROM pyperfcore_generation WHERE id = 1").fetchone()[0]

    # ------------------------------------------------------------ schema
    def ensure(self, store: str, migrations=None, pg_migrations: Sequence | None = None
               ) -> None:
        if pg_migrations is None:
            raise ValueError(f"the {store!r} store has no PostgreSQL schema")
        self._migrate(store, list(pg_migrations))

    def _migrate(self, store: str, migrations: list) -> None:
        conn = self.connection()
        conn.raw.execute(f"BEGIN; SELECT pg_advisory_xact_lock({self._lock_key})")
        try:
            conn.raw.execute(
                f'CREATE SCHEMA IF NOT EXISTS "{self.schema}";'
                "CREATE TABLE IF NOT EXISTS pyperfcore_schema (store TEXT PRIMARY KEY, "
                "version INTEGER NOT NULL, updated DOUBLE PRECISION);"
                "CREATE TABLE IF NOT EXISTS pyperfcore_generation (id INTEGER PRIMARY KEY "
                "CHECK (id = 1), n BIGINT NOT NULL);"
                "INSERT INTO pyperfcore_generation VALUES (1, 0) ON CONFLICT DO NOTHING")
            apply_migrations(conn, self.display, store, migrations)
            conn.raw.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(Exception):
                conn.raw.execute("ROLLBACK")
            raise
