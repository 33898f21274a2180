"""Store backends for the ops tests: every store test runs on SQLite and on a real PostgreSQL.

The PostgreSQL server is a throwaway cluster this session starts itself (``initdb`` and
``pg_ctl`` from /usr/lib/postgresql/*/bin, Debian's ``postgresql`` package) on 127.0.0.1 and a
free port, as the ``postgres`` user when the tests run as root, and stops at the end. Each test
gets its own PostgreSQL schema (``?schema=`` in the store URL). Without the server binaries or
psycopg the ``postgres`` parameter is skipped, saying which is missing.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import uuid

import pytest


def _pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(re.search(r"/(\d+)/bin", p).group(1)))
    return os.path.dirname(found[-1]) if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def pg_server():
    """libpq base URL of a throwaway PostgreSQL cluster (skips if it cannot be had)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL tests need psycopg 3: pip install 'psycopg[binary]'")
    bindir = _pg_bin()
    if bindir is None:
        pytest.skip("PostgreSQL tests need the server binaries (initdb, pg_ctl) under "
                    "/usr/lib/postgresql/*/bin: apt-get install postgresql")
    as_user: list = []
    data = tempfile.mkdtemp(prefix="pyperfcore-pg-")
    if os.geteuid() == 0:
        # PostgreSQL refuses to run as root: hand the data directory to the postgres user.
        import pwd
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        os.chown(data, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"] if shutil.which("runuser") else \
            ["su", "postgres", "-s", "/bin/sh", "-c"]
    port = _free_port()

    def run(*cmd):
        if as_user and as_user[0] == "su":
            cmd = (*as_user, " ".join(cmd))
        else:
            cmd = (*as_user, *cmd)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    r = run(f"{bindir}/initdb", "-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--locale=C", "--no-sync")
    if r.returncode:
        shutil.rmtree(data, ignore_errors=True)
        pytest.fail(f"initdb failed: {r.stderr[-2000:]}")
    # fsync=off only for this throwaway cluster: the durability tests kill clients, not the
    # server, and committed data is in the server either way.
    opts = (f"-c listen_addresses=127.0.0.1 -p {port} -k {data} -c fsync=off "
            "-c max_connections=400 -c shared_buffers=32MB")
    r = run(f"{bindir}/pg_ctl", "-D", data, "-l", f"{data}/server.log", "-w", "-t", "60",
            "-o", f"'{opts}'" if as_user[:1] == ["su"] else opts, "start")
    if r.returncode:
        log = open(f"{data}/server.log").read()[-2000:] if os.path.exists(
            f"{data}/server.log") else ""
        shutil.rmtree(data, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed: {r.stderr[-2000:]} {log}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        run(f"{bindir}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)


class Backend:
    """What a test needs from one store backend: fresh URLs and the raw SQL an attacker with
    write access to the database would run."""

    def __init__(self, name: str, tmp_path, pg_base: str | None):
        self.name = name
        self.tmp = tmp_path
        self.pg_base = pg_base

    @property
    def is_pg(self) -> bool:
        return self.name == "postgres"

    def url(self, tag: str = "a") -> str:
        """A new, empty store location."""
        if self.is_pg:
            safe = re.sub(r"[^a-z0-9_]", "_", tag)
            return f"{self.pg_base}?schema=t{uuid.uuid4().hex[:12]}_{safe}"
        return str(self.tmp / f"{tag}.db")

    def registry(self, tag: str = "reg", **kw):
        from pyperfcore.ops import Registry
        if self.is_pg:
            kw.setdefault("objects_dir", self.tmp / f"{tag}-objects")
            return Registry(self.url(tag), **kw)
        return Registry(self.tmp / tag, **kw)

    @staticmethod
    def reopen(reg, **kw):
        """Another Registry object on the same store (another replica)."""
        from pyperfcore.ops import Registry
        if reg.root is None:
            return Registry(reg.url, objects_dir=reg.store.root, **kw)
        return Registry(reg.root, **kw)

    # -------------------------------------------------- raw access, as an attacker has it
    def db_url(self, obj) -> str:
        """The database of an AuditLog/Registry/CostLedger."""
        return obj._db.path

    def execute(self, where, sql: str, args=(), *, tamper: bool = False) -> list:
        """Run one statement (``?`` placeholders) outside pyperfcore; returns the rows.

        With ``tamper``, first drop the append-only triggers, as an attacker would.
        """
        if self.is_pg:
            import psycopg
            from pyperfcore.ops._pg import pg_sql, split_url
            conninfo, schema = split_url(where)
            with psycopg.connect(conninfo, autocommit=False) as conn:
                conn.execute(f'SET search_path TO "{schema}"')
                if tamper:
                    for t in ("audit_no_update", "audit_no_delete"):
                        conn.execute(f"DROP TRIGGER IF EXISTS {t} ON audit_records")
                cur = conn.execute(pg_sql(sql), args or None)
                rows = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                        for r in cur.fetchall()] if cur.description else []
                conn.commit()
                return rows
        conn = sqlite3.connect(where)
        try:
            if tamper:
                conn.execute("DROP TRIGGER IF EXISTS audit_no_update")
                conn.execute("DROP TRIGGER IF EXISTS audit_no_delete")
                conn.execute("DROP INDEX IF EXISTS audit_by_subject")  # else bad JSON refused
            cur = conn.execute(sql, args)
            rows = cur.fetchall()
            conn.commit()
            return rows
        finally:
            conn.close()

    def destroy(self, where) -> None:
        """Remove a store's database completely (the attacker who rebuilds a log)."""
        if self.is_pg:
            import psycopg
            from pyperfcore.ops._pg import split_url
            conninfo, schema = split_url(where)
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
            return
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(where + suffix):
                os.remove(where + suffix)

    @property
    def errors(self) -> tuple:
        """Exception types a refused raw statement raises."""
        if self.is_pg:
            import psycopg
            return (psycopg.Error,)
        return (sqlite3.Error,)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request, tmp_path):
    pg = request.getfixturevalue("pg_server") if request.param == "postgres" else None
    return Backend(request.param, tmp_path, pg)
