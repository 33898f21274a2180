"""RFC 6962/9162 inclusion and consistency proofs: the tree algorithms against the recursive
definition, and audit-log proofs checked against exported checkpoints."""
from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from pyperfcore.ops import AuditLog
from pyperfcore.ops import merkle
from pyperfcore.ops.audit import leaf_hash, merkle_root
from pyperfcore.ops.merkle import ProofError, verify_consistency_proof, verify_inclusion_proof


def _leaves(n, salt=b""):
    return [leaf_hash(salt + i.to_bytes(4, "big")) for i in range(n)]


def _flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 1]) + h[1:]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 70), data=st.data())
def test_inclusion_paths_verify_and_any_change_fails(n, data):
    leaves = _leaves(n)
    root = merkle_root(leaves)
    i = data.draw(st.integers(0, n - 1))
    path = merkle.inclusion_path(leaves, i)
    assert merkle.verify_inclusion(leaves[i], i, n, path, root)
    assert len(path) <= max(0, (n - 1).bit_length())
    assert not merkle.verify_inclusion(_flip(leaves[i]), i, n, path, root)
    assert not merkle.verify_inclusion(leaves[i], i, n, path, _flip(root))
    if path:
        j = data.draw(st.integers(0, len(path) - 1))
        bad = list(path)
        bad[j] = _flip(bad[j])
        assert not merkle.verify_inclusion(leaves[i], i, n, bad, root)
        assert not merkle.verify_inclusion(leaves[i], i, n, path[:-1], root)
    if n > 1:
        other = data.draw(st.integers(0, n - 1).filter(lambda k: k != i))
        assert not merkle.verify_inclusion(leaves[i], other, n, path, root)
    assert not merkle.verify_inclusion(leaves[i], n, n, path, root)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 70), data=st.data())
def test_consistency_proofs_verify_and_any_change_fails(n, data):
    leaves = _leaves(n)
    m = data.draw(st.integers(1, n))
    r1, r2 = merkle_root(leaves[:m]), merkle_root(leaves)
    proof = merkle.consistency_path(leaves, m)
    assert merkle.verify_consistency(m, n, r1, r2, proof)
    assert not merkle.verify_consistency(m, n, _flip(r1), r2, proof)
    assert not merkle.verify_consistency(m, n, r1, _flip(r2), proof)
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        bad = list(proof)
        bad[j] = _flip(bad[j])
        assert not merkle.verify_consistency(m, n, r1, r2, bad)
    # a tree whose first m leaves differ is not consistent with the old root
    if m < n or m > 1:
        changed = list(leaves)
        changed[data.draw(st.integers(0, m - 1))] = leaf_hash(b"forged")
        p2 = merkle.consistency_path(changed, m)
        assert not merkle.verify_consistency(m, n, r1, merkle_root(changed), p2)
    assert merkle.fold_frontier(merkle.frontier(leaves)) == r2


def test_rfc6962_empty_and_small_trees():
    assert merkle.fold_frontier([]) == hashlib.sha256(b"").digest()
    a, b, c = _leaves(3)
    assert merkle.inclusion_path([a, b, c], 2) == [merkle._node(a, b)]
    assert merkle.consistency_path([a, b, c], 2) == [c]
    with pytest.raises(ValueError):
        merkle.inclusion_path([a], 1)
    with pytest.raises(ValueError):
        merkle.consistency_path([a, b], 0)


@pytest.fixture
def audit_log(backend):
    lg = AuditLog(backend.url("proofs"), checkpoint_every=50)
    for k in range(0, 230, 23):  # several transactions; checkpoints at 50, 100, 150, 200
        lg.append_many([{"kind": "p", "subject": f"u{i % 5}", "i": i}
                        for i in range(k, min(230, k + 23))])
    return lg


def test_audit_inclusion_and_consistency_proofs(audit_log, tmp_path):
    lg = audit_log
    ext = tmp_path / "cps.jsonl"
    cps = {c["tree_size"]: c["root"] for c in lg.export_checkpoints(ext)}
    assert sorted(cps) == [50, 100, 150, 200, 230]
    recs = {r["seq"]: r for r in lg.records()}
    for size in (50, 150, 230):
        for seq in (1, 49, 50, 64, 65, 129, size):
            if seq > size:
                continue
            proof = lg.inclusion_proof(seq, size)
            assert verify_inclusion_proof(proof, cps[size], record=recs[seq])
            with pytest.raises(ProofError):
                verify_inclusion_proof(proof, cps[200 if size != 200 else 100])
            forged = {**recs[seq], "record": {**recs[seq]["record"], "i": -1}}
            with pytest.raises(ProofError, match="content"):
                verify_inclusion_proof(proof, cps[size], record=forged)
            bad = {**proof, "segment": list(proof["segment"])}
            bad["segment"][(seq - 1) % 64] = "00" * 32
            with pytest.raises(ProofError):
                verify_inclusion_proof(bad, cps[size])
    sizes = sorted(cps)
    for i, n1 in enumerate(sizes):
        for n2 in sizes[i:]:
            proof = lg.consistency_proof(n1, n2)
            assert verify_consistency_proof(proof, cps[n1], cps[n2]), (n1, n2)
            if n1 < n2:
                with pytest.raises(ProofError):
                    verify_consistency_proof(proof, cps[n2], cps[n1])
                with pytest.raises(ProofError):
                    verify_consistency_proof(proof, cps[n1], cps[sizes[0]])
    # aligned old size (64 records = one full segment): the plain RFC 9162 proof
    lg2 = lg.consistency_proof(64, 230)
    assert "old_frontier" not in lg2
    assert verify_consistency_proof(lg2, lg.inclusion_proof(1, 64)["root"], cps[230])
    with pytest.raises(ValueError):
        lg.inclusion_proof(231)
    with pytest.raises(ValueError):
        lg.consistency_proof(0)


def test_proofs_of_a_rewritten_log_fail_against_kept_checkpoints(tmp_path):
    path = tmp_path / "a.db"
    lg = AuditLog(path, checkpoint_every=40)
    lg.append_many([{"i": i} for i in range(100)], ts=5.0)
    kept = {c["tree_size"]: c["root"] for c in lg.export_checkpoints()}
    lg.close()
    for suffix in ("", "-wal", "-shm"):
        p = tmp_path / ("a.db" + suffix)
        if p.exists():
            p.unlink()
    forged = AuditLog(path, checkpoint_every=40)
    forged.append_many([{"i": i if i != 70 else -70} for i in range(100)], ts=5.0)
    assert forged.verify().ok
    # records before the change still prove against the old checkpoint ...
    assert verify_inclusion_proof(forged.inclusion_proof(10, 40), kept[40])
    # ... but the changed log neither includes record 71 as seen nor extends the checkpoint
    with pytest.raises(ProofError):
        verify_inclusion_proof(forged.inclusion_proof(71, 100), kept[100])
    with pytest.raises(ProofError):
        verify_consistency_proof(forged.consistency_proof(40, 100), kept[40], kept[100])
    assert verify_consistency_proof(forged.consistency_proof(40, 80), kept[40],
                                    forged.consistency_proof(40, 80)["new_root"])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_malformed_proofs_raise_proof_error(data):
    proof = {"seq": data.draw(st.integers(-5, 300)), "tree_size": data.draw(st.integers(-1, 300)),
             "record_hash": data.draw(st.sampled_from(["zz", "00" * 32, "00" * 31, None])),
             "segment": data.draw(st.lists(st.sampled_from(["00" * 32, "xx"]), max_size=3)),
             "path": data.draw(st.lists(st.sampled_from(["11" * 32, "1"]), max_size=3))}
    with pytest.raises(ProofError):
        verify_inclusion_proof(proof, "22" * 32)
    cproof = {"old_size": data.draw(st.integers(-1, 300)),
              "new_size": data.draw(st.integers(-1, 300)),
              "path": data.draw(st.lists(st.sampled_from(["11" * 32, "q"]), max_size=3))}
    with pytest.raises(ProofError):
        verify_consistency_proof(cproof, "22" * 32, "33" * 32)
