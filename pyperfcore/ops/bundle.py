"""Reproducibility bundles for one model version, and OpenLineage events for its lineage.

A bundle is a tar archive:

- ``bundle.json``: format version, model name/version, metadata (lineage, training-data
  snapshot manifest, evaluation results), artifact manifest (name -> sha256/size/format),
  approvals, alias history;
- ``artifacts/<name>``: the artifact bytes;
- ``card.md``: the model card;
- ``audit.jsonl``: every audit record about the version, each with its chain hash.

Import refuses links, absolute or ``..`` member names, and any artifact whose bytes do not hash
to the manifest.
"""
from __future__ import annotations

import io
import json
import tarfile
import uuid
from datetime import datetime, timezone
from pathlib import Path

from ._db import OpsError, canonical_json
from .artifacts import IntegrityError, check_artifact_name, file_sha256

__all__ = ["export_bundle", "import_bundle", "openlineage_events", "BUNDLE_FORMAT"]

BUNDLE_FORMAT = 1
_PRODUCER = "https://github.com/pyperfcore/pyperfcore/ops"
_RUN_EVENT_SCHEMA = "https://openlineage.io/spec/2-0-2/OpenLineage.json#/$defs/RunEvent"


def export_bundle(reg, name: str, ref, path) -> Path:
    from .cards import model_card
    mv = reg.get(name, ref)
    path = Path(path)
    doc = {"format": BUNDLE_FORMAT, "name": mv.name, "version": mv.version, "stage": mv.stage,
           "created": mv.created, "created_by": mv.created_by, "metadata": mv.metadata,
           "manifest": mv.manifest, "approvals": reg.approvals(mv.name, mv.version),
           "alias_history": {a: [h for h in reg.alias_history(mv.name, a)
                                 if h["version"] == mv.version]
                             for a in _all_aliases(reg, mv.name)}}
    card = model_card(mv, approvals=doc["approvals"]).to_markdown()
    audit_lines = "".join(canonical_json(r) + "\n" for r in reg.audit.records(subject=mv.subject))
    tmp = path.with_name(path.name + ".tmp")
    with tarfile.open(tmp, "w:gz" if path.suffix in (".gz", ".tgz") else "w") as tar:
        _add_bytes(tar, "bundle.json", json.dumps(doc, indent=2, sort_keys=True).encode())
        _add_bytes(tar, "card.md", card.encode())
        _add_bytes(tar, "audit.jsonl", audit_lines.encode())
        for aname in sorted(mv.manifest):
            tar.add(str(reg._artifact_path(mv, aname)), arcname=f"artifacts/{aname}",
                    recursive=False)
    tmp.replace(path)
    reg.audit.append({"kind": "bundle_exported", "subject": mv.subject, "actor": reg.user,
                      "bundle_sha256": file_sha256(path)})
    return path


def _all_aliases(reg, name):
    with reg._db.read() as conn:
        return [a for (a,) in conn.execute("SELECT DISTINCT alias FROM reg_alias_history "
                                           "WHERE name=? ORDER BY alias", (name,))]


def _add_bytes(tar, name, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def import_bundle(reg, path, *, by=None, name=None):
    """Register the bundle's version as a new version of ``name`` (default: its own name);
    the original coordinates and bundle hash are kept in ``metadata["imported_from"]``."""
    path = Path(path)
    artifacts: dict = {}
    doc = None
    with tarfile.open(path, "r:*") as tar:
        for m in tar.getmembers():
            if not m.isfile():
                if m.isdir():
                    continue
                raise OpsError(f"bundle member {m.name!r} is not a regular file (links and "
                               "devices are refused)")
            if m.name == "bundle.json":
                doc = json.loads(tar.extractfile(m).read())
            elif m.name.startswith("artifacts/"):
                aname = check_artifact_name(m.name[len("artifacts/"):])
                artifacts[aname] = tar.extractfile(m).read()
            elif m.name not in ("card.md", "audit.jsonl"):
                raise OpsError(f"unexpected bundle member {m.name!r}")
    if doc is None:
        raise OpsError(f"{path}: not a pyperfcore bundle (no bundle.json)")
    if doc.get("format") != BUNDLE_FORMAT:
        raise OpsError(f"{path}: bundle format {doc.get('format')!r} is not {BUNDLE_FORMAT}")
    import hashlib
    if set(artifacts) != set(doc["manifest"]):
        raise IntegrityError(f"{path}: artifacts {sorted(artifacts)} differ from the manifest "
                             f"{sorted(doc['manifest'])}")
    for aname, data in artifacts.items():
        want = doc["manifest"][aname]["sha256"]
        got = hashlib.sha256(data).hexdigest()
        if got != want:
            raise IntegrityError(f"{path}: artifact {aname!r} hashes to {got}, the manifest "
                                 f"says {want}")
    meta = dict(doc["metadata"])
    meta["imported_from"] = {"name": doc["name"], "version": doc["version"],
                             "bundle_sha256": file_sha256(path),
                             "approvals": doc.get("approvals", [])}
    parent = meta.get("parent")
    if parent:
        pname, _, pver = str(parent).rpartition(":")
        try:
            reg.get(pname, int(pver))
        except OpsError:
            meta["parent_external"] = meta.pop("parent")
    allow_pickle = any(v.get("format") == "pickle" for v in doc["manifest"].values())
    return reg.register(name or doc["name"], artifacts, metadata=meta, by=by,
                        allow_pickle=allow_pickle)


def openlineage_events(reg, name: str, ref="latest", *, namespace: str = "pyperfcore") -> list:
    """OpenLineage RunEvents (START and COMPLETE) describing how a version was produced.

    Job: ``train/<name>``; inputs: the training-data snapshot and the parent model version;
    output: the model version as a dataset, with the artifact hashes as a custom facet and its
    input schema as a SchemaDatasetFacet. ``runId`` is derived from the version, so re-emitting
    gives the same ids.
    """
    mv = reg.get(name, ref)
    md = mv.metadata
    run_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"pyperfcore:{namespace}:{mv.ref}"))
    t = datetime.fromtimestamp(mv.created, timezone.utc).isoformat()
    inputs = []
    td = md.get("training_data")
    if td:
        td = td if isinstance(td, dict) else {"uri": str(td)}
        inputs.append({"namespace": namespace,
                       "name": str(td.get("uri") or td.get("name") or td.get("sha256")),
                       "facets": {"pyperfcore_snapshot": _facet(
                           "PyperfcoreSnapshotFacet", {"snapshot": td})}})
    if md.get("parent"):
        inputs.append({"namespace": namespace, "name": f"model/{md['parent']}", "facets": {}})
    out_facets = {"pyperfcore_model": _facet("PyperfcoreModelFacet", {
        "version": mv.version, "stage": mv.stage,
        "artifacts": {k: v["sha256"] for k, v in mv.manifest.items()},
        "metrics": md.get("metrics") or {}})}
    if md.get("input_schema"):
        out_facets["schema"] = {
            "_producer": _PRODUCER,
            "_schemaURL": "https://openlineage.io/spec/facets/1-1-1/SchemaDatasetFacet.json"
                          "#/$defs/SchemaDatasetFacet",
            "fields": [{"name": k, "type": str(v)} for k, v in md["input_schema"].items()]}
    job = {"namespace": namespace, "name": f"train/{mv.name}", "facets": {}}
    if md.get("code_version"):
        job["facets"]["sourceCodeLocation"] = _facet("SourceCodeLocationJobFacet",
                                                     {"type": "git", "url": "",
                                                      "version": str(md["code_version"])})
    outputs = [{"namespace": namespace, "name": f"model/{mv.ref}", "facets": out_facets}]
    base = {"producer": _PRODUCER, "schemaURL": _RUN_EVENT_SCHEMA, "job": job,
            "inputs": inputs, "outputs": outputs}
    return [{"eventType": "START", "eventTime": t, "run": {"runId": run_id, "facets": {}},
             **base},
            {"eventType": "COMPLETE", "eventTime": t, "run": {"runId": run_id, "facets": {}},
             **base}]


def _facet(kind: str, body: dict) -> dict:
    return {"_producer": _PRODUCER, "_schemaURL": f"{_PRODUCER}/facets/{kind}.json", **body}
