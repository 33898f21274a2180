"""Content-addressed artifact store: files named by their SHA-256, safe names, safe formats.

Layout under the store root: ``sha256/<first two hex>/<full hex>``. Writes go to a temporary
file in the same directory tree and are renamed into place after ``fsync``, so a reader never
sees a half-written blob and two writers of the same content do not conflict.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from ._db import OpsError

__all__ = ["ArtifactStore", "UnsafeArtifact", "IntegrityError", "check_artifact_name",
           "SAFE_SUFFIXES", "PICKLE_SUFFIXES"]

SAFE_SUFFIXES = frozenset({".safetensors", ".npz", ".npy", ".onnx", ".json", ".txt", ".md",
                           ".yaml", ".yml", ".csv", ".parquet", ".arrow", ".tflite", ".gguf"})
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".pt", ".pth", ".bin", ".joblib", ".ckpt",
                             ".sav"})
_CHUNK = 1 << 20


class UnsafeArtifact(OpsError, ValueError):
    """An artifact name escapes the store, or its format can execute code when loaded."""


class IntegrityError(OpsError):
    """Stored bytes no longer match their recorded SHA-256."""


def check_artifact_name(name: str) -> str:
    """Return ``name`` if it is a plain relative path inside a version; raise otherwise."""
    if not isinstance(name, str) or not name:
        raise UnsafeArtifact(f"artifact name must be a non-empty string, got {name!r}")
    if "\x00" in name or "\\" in name:
        raise UnsafeArtifact(f"artifact name {name!r} contains NUL or a backslash")
    p = PurePosixPath(name)
    if p.is_absolute() or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArtifact(f"artifact name {name!r} is absolute; use a relative name")
    if any(part in ("", ".", "..") for part in name.split("/")):
        raise UnsafeArtifact(f"artifact name {name!r} has empty, '.' or '..' parts "
                             "(path traversal is refused)")
    return name


def sniff_format(name: str, head: bytes, path=None) -> str:
    """Classify an artifact as a safe format or ``pickle`` from its suffix and first bytes."""
    suffix = PurePosixPath(name).suffix.lower()
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"  # a pickle stream whatever its name says
    if suffix in PICKLE_SUFFIXES:
        return "pickle"
    if head[:4] == b"PK\x03\x04" and path is not None:
        # torch.save zips carry a pickle; npz members may hold object arrays (pickles).
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if any(n.endswith(".pkl") for n in names):
                return "pickle"
            if suffix == ".npz":
                for n in names:
                    if n.endswith(".npy") and _npy_is_object(z.open(n).read(256)):
                        return "pickle"
    if suffix == ".npy" and _npy_is_object(head):
        return "pickle"
    if suffix in SAFE_SUFFIXES:
        return suffix[1:]
    return "unknown"


def _npy_is_object(head: bytes) -> bool:
    if not head.startswith(b"\x93NUMPY"):
        return False
    header = head[10:256]
    return b"'|O'" in header or b"'O'" in header


class ArtifactStore:
    """Blobs by SHA-256 under ``root``; optional local ``cache`` for memory-mapped reads."""

    def __init__(self, root, cache_dir=None):
        self.root = Path(root)
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        if self.cache_dir is not None:
            self.cache_dir.mkdir(parents=True, exist_ok=True)
        # (path, size, mtime_ns, inode) -> sha256 of files already hashed by this process.
        self._verified: dict = {}

    def path_of(self, sha: str) -> Path:
        return self.root / "sha256" / sha[:2] / sha

    def put(self, src, *, name: str, allow_pickle: bool = False) -> dict:
        """Store ``src`` (a path or bytes); return ``{"sha256", "size", "format"}``."""
        check_artifact_name(name)
        fd, tmp = tempfile.mkstemp(dir=self.root / "tmp")
        h = hashlib.sha256()
        size = 0
        head = b""
        try:
            with os.fdopen(fd, "wb") as out:
                stream = io.BytesIO(bytes(src)) if isinstance(src, (bytes, bytearray, memoryview)) \
                    else open(src, "rb")
                with stream:
                    while True:
                        chunk = stream.read(_CHUNK)
                        if not chunk:
                            break
                        if len(head) < 256:
                            head += chunk[:256 - len(head)]
                        h.update(chunk)
                        out.write(chunk)
                        size += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            fmt = sniff_format(name, head, tmp)
            if fmt == "pickle" and not allow_pickle:
                raise UnsafeArtifact(
                    f"artifact {name!r} is a pickle (or contains one), which runs code when "
                    "loaded; store safetensors, npz, npy or ONNX instead, or pass "
                    "allow_pickle=True if you trust its origin")
            if fmt == "unknown" and not allow_pickle:
                raise UnsafeArtifact(
                    f"artifact {name!r} has no known safe format (suffixes allowed: "
                    f"{', '.join(sorted(SAFE_SUFFIXES))}); pass allow_pickle=True to accept "
                    "formats that cannot be checked")
            sha = h.hexdigest()
            dest = self.path_of(sha)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                os.unlink(tmp)
            else:
                os.chmod(tmp, 0o444)
                os.replace(tmp, dest)
            return {"sha256": sha, "size": size, "format": fmt}
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    def exists(self, sha: str) -> bool:
        return self.path_of(sha).exists()

    def delete(self, sha: str) -> bool:
        p = self.path_of(sha)
        try:
            os.chmod(p, 0o644)
            p.unlink()
            return True
        except FileNotFoundError:
            return False

    def local_path(self, sha: str, *, verify: bool = True) -> Path:
        """A local file with content ``sha``: from the cache (copied there once) or the store.

        With ``verify`` the file is hashed the first time this process sees it (and again if
        its size, mtime or inode change), so a corrupted blob is never handed out.
        """
        src = self.path_of(sha)
        path = src
        if self.cache_dir is not None:
            path = self.cache_dir / sha
            if not path.exists():
                if not src.exists():
                    raise IntegrityError(f"artifact {sha} is missing from the store")
                fd, tmp = tempfile.mkstemp(dir=self.cache_dir)
                os.close(fd)
                shutil.copyfile(src, tmp)
                os.chmod(tmp, 0o444)
                os.replace(tmp, path)
        if not path.exists():
            raise IntegrityError(f"artifact {sha} is missing from the store")
        if verify:
            st = path.stat()
            key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
            if self._verified.get(key) != sha:
                actual = file_sha256(path)
                if actual != sha:
                    raise IntegrityError(f"{path}: content hashes to {actual}, expected {sha}; "
                                         "the artifact was corrupted or tampered with")
                self._verified[key] = sha
        return path

    def all_hashes(self) -> set:
        out = set()
        for d in (self.root / "sha256").iterdir():
            if d.is_dir():
                out.update(f.name for f in d.iterdir() if len(f.name) == 64)
        return out


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()
