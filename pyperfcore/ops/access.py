"""Field-level access control for the records pyperfcore writes and reads.

A policy names PII fields and what happens to them *before* anything is written (``redact``:
replaced by a marker; ``hash``: replaced by a keyed HMAC-SHA256, so equal values still join
without being readable; ``drop``: removed), and which fields each role may read. Field names
are dotted paths into nested dicts (``"user.email"``); ``"*"`` grants every field.
"""
from __future__ import annotations

import copy
import hashlib
import hmac
from typing import Iterable, Mapping

from ._db import OpsError, canonical_json

__all__ = ["AccessPolicy", "AccessDenied", "REDACTED"]

REDACTED = "[REDACTED]"
_ACTIONS = ("redact", "hash", "drop")


class AccessDenied(OpsError, PermissionError):
    """A role asked for records it may not read."""


class AccessPolicy:
    """Which fields are PII and who may read what.

    Parameters
    ----------
    pii : mapping of dotted field path -> ``"redact"`` | ``"hash"`` | ``"drop"``
        Applied by :meth:`protect` to every record before it is written.
    roles : mapping of role -> iterable of dotted field paths (or ``"*"``)
        Applied by :meth:`view` when a role reads a record; fields not granted are removed.
        A role not in the mapping may read nothing (:class:`AccessDenied`).
    key : bytes
        Secret for keyed hashing; required when any field uses ``"hash"``. Keep it outside the
        database: whoever has it can test guesses of a hashed value.
    always_visible : fields every role sees (record bookkeeping such as ``kind``).
    """

    def __init__(self, pii: Mapping[str, str] | None = None,
                 roles: Mapping[str, Iterable[str] | str] | None = None,
                 key: bytes | None = None,
                 always_visible: Iterable[str] = ("kind", "subject", "actor", "ts")):
        self.pii = dict(pii or {})
        for field, action in self.pii.items():
            if action not in _ACTIONS:
                raise ValueError(f"PII field {field!r}: action must be one of {_ACTIONS}, "
                                 f"got {action!r}")
        if any(a == "hash" for a in self.pii.values()):
            if not isinstance(key, (bytes, bytearray)) or len(key) < 16:
                raise ValueError("keyed hashing of PII needs key=bytes of at least 16 bytes")
        self.key = bytes(key) if key is not None else None
        self.roles = {}
        for role, fields in (roles or {}).items():
            self.roles[role] = "*" if fields == "*" else frozenset(
                [fields] if isinstance(fields, str) else fields)
        self.always_visible = frozenset(always_visible)

    def to_dict(self) -> dict:
        """The policy without its key (what the audit log records when a policy changes)."""
        return {"pii": dict(self.pii),
                "roles": {r: (f if f == "*" else sorted(f)) for r, f in self.roles.items()}}

    def keyed_hash(self, value) -> str:
        if self.key is None:
            raise ValueError("this policy has no key for keyed hashing")
        data = value if isinstance(value, bytes) else canonical_json(value).encode()
        return "hmac-sha256:" + hmac.new(self.key, data, hashlib.sha256).hexdigest()

    def protect(self, record: Mapping) -> dict:
        """A copy of ``record`` with every PII field redacted, hashed or dropped."""
        if not isinstance(record, Mapping):
            raise TypeError(f"record must be a mapping, got {type(record).__name__}")
        if not self.pii:
            return dict(record)
        out = copy.deepcopy(dict(record))
        for path, action in self.pii.items():
            parent, leaf = _walk(out, path)
            if parent is None or leaf not in parent:
                continue
            if action == "drop":
                del parent[leaf]
            elif action == "redact":
                parent[leaf] = REDACTED
            else:
                parent[leaf] = self.keyed_hash(parent[leaf])
        return out

    def view(self, record: Mapping, role: str) -> dict:
        """The fields of ``record`` that ``role`` may read."""
        if role not in self.roles:
            raise AccessDenied(f"role {role!r} may not read records; known roles: "
                               f"{sorted(self.roles) or 'none'}")
        granted = self.roles[role]
        if granted == "*":
            return copy.deepcopy(dict(record))
        out: dict = {}
        for path in set(granted) | self.always_visible:
            parent, leaf = _walk(record, path)
            if parent is None or leaf not in parent:
                continue
            _put(out, path, copy.deepcopy(parent[leaf]))
        return out


def _walk(d, path: str):
    parts = path.split(".")
    for p in parts[:-1]:
        if not isinstance(d, Mapping) or p not in d:
            return None, None
        d = d[p]
    if not isinstance(d, Mapping):
        return None, None
    return d, parts[-1]


def _put(d: dict, path: str, value) -> None:
    parts = path.split(".")
    for p in parts[:-1]:
        d = d.setdefault(p, {})
    d[parts[-1]] = value
