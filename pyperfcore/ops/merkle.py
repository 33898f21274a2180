"""RFC 6962 / RFC 9162 Merkle proofs over the audit log's checkpoints.

The audit tree's leaves are *segments* (see :mod:`pyperfcore.ops.audit`): leaf ``i`` is
SHA-256(0x00 || the record hashes of records 64i+1 .. 64i+64), the last one possibly shorter.
A checkpoint is the Merkle Tree Hash over the segment leaves of its first ``tree_size`` records.

* An **inclusion proof** for record ``seq`` in a checkpoint carries the record's segment (its
  record hashes as of that checkpoint) and the RFC 9162 audit path of the segment's leaf.
* A **consistency proof** shows that a later checkpoint extends an earlier one. When the old
  size is a multiple of 64 it is the RFC 9162 proof between the segment trees. Otherwise the
  old tree's last leaf is a partial segment that the new tree has since extended, so it is not
  a prefix at leaf level; the proof then carries the old tree's frontier (the roots of its
  complete subtrees), its partial segment, the same segment as of the new tree (which must
  start with the old one), and the RFC 9162 proof from "old full segments + new segment" to
  the new tree. The verifier recomputes the old root from the frontier, so the frontier is
  bound to the trusted old checkpoint.

Proof verification needs only this module and ``hashlib``: an auditor holding exported
checkpoints can check proofs without the database.
"""
from __future__ import annotations

import hashlib
from typing import Sequence

__all__ = ["inclusion_path", "consistency_path", "verify_inclusion", "verify_consistency",
           "fold_frontier", "frontier", "record_hash", "verify_inclusion_proof",
           "verify_consistency_proof", "ProofError"]

SEGMENT = 64


class ProofError(ValueError):
    """A proof is malformed or does not verify (the message says which step failed)."""


def _leaf(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def _node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def _mth(leaves: Sequence[bytes]) -> bytes:
    n = len(leaves)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return leaves[0]
    k = 1 << ((n - 1).bit_length() - 1)
    return _node(_mth(leaves[:k]), _mth(leaves[k:]))


# ------------------------------------------------------------------ RFC 9162 section 2.1
def inclusion_path(leaves: Sequence[bytes], index: int) -> list:
    """PATH(index, leaves): the audit path of leaf ``index`` (leaf hashes given)."""
    n = len(leaves)
    if not 0 <= index < n:
        raise ValueError(f"leaf index {index} outside a tree of {n} leaves")
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if index < k:
        return inclusion_path(leaves[:k], index) + [_mth(leaves[k:])]
    return inclusion_path(leaves[k:], index - k) + [_mth(leaves[:k])]


def consistency_path(leaves: Sequence[bytes], m: int) -> list:
    """PROOF(m, leaves): consistency of the first ``m`` leaves with all of them."""
    n = len(leaves)
    if not 0 < m <= n:
        raise ValueError(f"old size {m} must be within 1..{n}")
    return _subproof(m, leaves, True)


def _subproof(m: int, leaves: Sequence[bytes], b: bool) -> list:
    n = len(leaves)
    if m == n:
        return [] if b else [_mth(leaves)]
    k = 1 << ((n - 1).bit_length() - 1)
    if m <= k:
        return _subproof(m, leaves[:k], b) + [_mth(leaves[k:])]
    return _subproof(m - k, leaves[k:], False) + [_mth(leaves[:k])]


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes],
                     root: bytes) -> bool:
    """RFC 9162 2.1.3.2: does ``path`` prove leaf ``index`` of a ``size``-leaf tree?"""
    if not 0 <= index < size:
        return False
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = _node(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _node(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes,
                       proof: Sequence[bytes]) -> bool:
    """RFC 9162 2.1.4.2: does ``proof`` show the ``size1`` tree is a prefix of ``size2``?"""
    if not 0 < size1 <= size2:
        return False
    if size1 == size2:
        return not proof and root1 == root2
    proof = list(proof)
    if size1 & (size1 - 1) == 0:  # a power of two: the old root is the first node
        proof = [root1] + proof
    if not proof:
        return False
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = _node(c, fr)
            sr = _node(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _node(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == root1 and sr == root2


def frontier(leaves: Sequence[bytes]) -> list:
    """Roots of the perfect subtrees that make up ``leaves`` (largest first)."""
    out, i, n = [], 0, len(leaves)
    while i < n:
        k = 1 << ((n - i).bit_length() - 1)
        out.append(_mth(leaves[i:i + k]))
        i += k
    return out


def fold_frontier(nodes: Sequence[bytes]) -> bytes:
    """MTH of a tree given its perfect-subtree roots (optionally followed by one more leaf):
    node(S1, node(S2, ... node(S_t-1, S_t)))."""
    if not nodes:
        return hashlib.sha256(b"").digest()
    r = nodes[-1]
    for left in reversed(nodes[:-1]):
        r = _node(left, r)
    return r


# ------------------------------------------------------------------ audit-log proofs
def record_hash(seq: int, prev: bytes, body: bytes) -> bytes:
    """A record's chain hash: SHA-256(0x00 || seq (8 bytes big-endian) || prev || body)."""
    return _leaf(seq.to_bytes(8, "big") + prev + body)


def _hx(v, what: str, n: int | None = 32) -> bytes:
    try:
        b = bytes.fromhex(v)
    except (TypeError, ValueError):
        raise ProofError(f"{what} is not hex") from None
    if n is not None and len(b) != n:
        raise ProofError(f"{what} must be {n} bytes, got {len(b)}")
    return b


def _root(root) -> bytes:
    return _hx(root, "root") if isinstance(root, str) else bytes(root)


def verify_inclusion_proof(proof: dict, root, *, record: dict | None = None) -> bool:
    """Check an :meth:`AuditLog.inclusion_proof` against a checkpoint ``root`` (hex or bytes)
    kept outside the database. With ``record`` (``{"seq", "ts", "record"}`` as returned by
    :meth:`AuditLog.records`), also check that this content is the record proven.

    Returns True, or raises :class:`ProofError` saying what does not hold.
    """
    try:
        seq, size = int(proof["seq"]), int(proof["tree_size"])
        rh = _hx(proof["record_hash"], "record_hash")
        seg = [_hx(h, "segment hash") for h in proof["segment"]]
        path = [_hx(h, "path node") for h in proof["path"]]
    except (KeyError, TypeError) as e:
        raise ProofError(f"malformed inclusion proof: {e!r}") from None
    if not 1 <= seq <= size:
        raise ProofError(f"record {seq} is outside a tree of {size} records")
    index, pos = divmod(seq - 1, SEGMENT)
    nseg = -(-size // SEGMENT)
    expect = min(SEGMENT, size - index * SEGMENT)
    if len(seg) != expect or seg[pos] != rh:
        raise ProofError("the segment does not hold the record hash at its position")
    if record is not None:
        from ._db import canonical_json
        if int(record["seq"]) != seq:
            raise ProofError(f"the record given is {record['seq']}, the proof is for {seq}")
        body = canonical_json({"record": record["record"], "seq": seq,
                               "ts": record["ts"]}).encode()
        prev = _hx(proof["prev"], "prev")
        if record_hash(seq, prev, body) != rh:
            raise ProofError(f"record {seq}'s content does not match the proven hash")
    if not verify_inclusion(_leaf(b"".join(seg)), index, nseg, path, _root(root)):
        raise ProofError(f"the audit path does not lead to the checkpoint root at size {size}")
    return True


def verify_consistency_proof(proof: dict, old_root, new_root) -> bool:
    """Check an :meth:`AuditLog.consistency_proof`: the log of ``new_size`` records whose
    root is ``new_root`` extends, unchanged, the log of ``old_size`` records with ``old_root``.

    Returns True, or raises :class:`ProofError` saying what does not hold.
    """
    try:
        n1, n2 = int(proof["old_size"]), int(proof["new_size"])
        path = [_hx(h, "proof node") for h in proof["path"]]
    except (KeyError, TypeError) as e:
        raise ProofError(f"malformed consistency proof: {e!r}") from None
    r1, r2 = _root(old_root), _root(new_root)
    if not 0 < n1 <= n2:
        raise ProofError(f"sizes must satisfy 0 < old ({n1}) <= new ({n2})")
    m2 = -(-n2 // SEGMENT)
    if n1 % SEGMENT == 0:
        if not verify_consistency(n1 // SEGMENT, m2, r1, r2, path):
            raise ProofError(f"the tree of {n2} records does not extend the checkpoint at "
                             f"{n1}")
        return True
    try:
        front = [_hx(h, "frontier node") for h in proof["old_frontier"]]
        old_tail = [_hx(h, "old segment hash") for h in proof["old_segment"]]
        new_seg = [_hx(h, "new segment hash") for h in proof["new_segment"]]
    except (KeyError, TypeError) as e:
        raise ProofError(f"malformed consistency proof: {e!r}") from None
    k = n1 // SEGMENT  # complete segments in the old tree
    if len(old_tail) != n1 % SEGMENT or len(front) != bin(k).count("1"):
        raise ProofError("the old segment or frontier has the wrong length for the old size")
    if fold_frontier(front + [_leaf(b"".join(old_tail))]) != r1:
        raise ProofError(f"the old frontier and segment do not give the checkpoint root at "
                         f"{n1}: the proof is not about this log")
    if new_seg[:len(old_tail)] != old_tail or \
            len(new_seg) != min(SEGMENT, n2 - k * SEGMENT):
        raise ProofError(f"segment {k} was changed after the checkpoint at {n1}")
    mid = fold_frontier(front + [_leaf(b"".join(new_seg))])
    if not verify_consistency(k + 1, m2, mid, r2, path):
        raise ProofError(f"the tree of {n2} records does not extend the checkpoint at {n1}")
    return True
