"""Ops layer: audit appends (batched), chain + Merkle verification, cached alias resolution,
Merkle inclusion proofs.

Issue targets: >= 50,000 appends/s batched, >= 500,000 records/s verified, < 50 us per cached
alias resolution. Throughput goes to extra_info; correctness is asserted before timing.
PostgreSQL appends run when ``PYPERFCORE_BENCH_PG_URL`` names a server
(e.g. ``postgresql://postgres@127.0.0.1:5432/postgres``).
"""
from __future__ import annotations

import io
import os
import uuid

import numpy as np
import pytest

from pyperfcore.ops import AuditLog, Registry, verify_inclusion_proof

BATCH = 1000
N_VERIFY = 100_000


def _records(n, start=0):
    return [{"kind": "decision", "subject": f"user-{i % 997}", "actor": "svc",
             "model": "ranker", "version": 3, "input_sha256": f"{i:064x}", "output": i % 2}
            for i in range(start, start + n)]


@pytest.mark.benchmark(group="audit-append-batched")
def test_audit_append_many(benchmark, tmp_path):
    log = AuditLog(tmp_path / "a.db")
    batches = [_records(BATCH, k * BATCH) for k in range(20)]
    state = {"i": 0}

    def run():
        log.append_many(batches[state["i"] % len(batches)])
        state["i"] += 1
    benchmark.pedantic(run, rounds=20, iterations=1, warmup_rounds=2)
    assert log.verify().ok
    benchmark.extra_info["records_per_s"] = BATCH / benchmark.stats.stats.median
    benchmark.extra_info["batch"] = BATCH


@pytest.mark.benchmark(group="audit-verify")
def test_audit_verify(benchmark, tmp_path):
    log = AuditLog(tmp_path / "a.db", checkpoint_every=1024)
    for k in range(0, N_VERIFY, 5000):
        log.append_many(_records(5000, k))
    res = benchmark.pedantic(log.verify, rounds=5, iterations=1, warmup_rounds=1)
    assert res.ok and res.records == N_VERIFY
    benchmark.extra_info["records_per_s"] = N_VERIFY / benchmark.stats.stats.median
    benchmark.extra_info["checkpoints"] = res.checkpoints_checked


@pytest.mark.benchmark(group="registry-alias-resolve")
def test_alias_resolution_cached(benchmark, tmp_path):
    reg = Registry(tmp_path / "reg")
    b = io.BytesIO()
    np.save(b, np.zeros(4))
    reg.register("m", {"w.npy": b.getvalue()})
    reg.promote("m", 1)
    assert reg.resolve("m", "production") == 1
    v = benchmark(reg.resolve, "m", "production")
    assert v == 1
    benchmark.extra_info["us_per_call"] = benchmark.stats.stats.median * 1e6


@pytest.mark.benchmark(group="audit-append-batched")
def test_audit_append_many_postgres(benchmark):
    base = os.environ.get("PYPERFCORE_BENCH_PG_URL")
    if not base:
        pytest.skip("set PYPERFCORE_BENCH_PG_URL to a PostgreSQL server to benchmark it")
    log = AuditLog(f"{base}?schema=bench_{uuid.uuid4().hex[:10]}")
    batches = [_records(BATCH, k * BATCH) for k in range(20)]
    state = {"i": 0}

    def run():
        log.append_many(batches[state["i"] % len(batches)])
        state["i"] += 1
    benchmark.pedantic(run, rounds=20, iterations=1, warmup_rounds=2)
    assert log.verify().ok
    benchmark.extra_info["records_per_s"] = BATCH / benchmark.stats.stats.median


@pytest.mark.benchmark(group="audit-inclusion-proof")
def test_audit_inclusion_proof(benchmark, tmp_path):
    log = AuditLog(tmp_path / "a.db")
    for k in range(0, N_VERIFY, 5000):
        log.append_many(_records(5000, k))
    root = log.export_checkpoints()[-1]["root"]
    proof = benchmark.pedantic(log.inclusion_proof, args=(54_321,), rounds=5, iterations=1)
    assert verify_inclusion_proof(proof, root)
    benchmark.extra_info["records"] = N_VERIFY
