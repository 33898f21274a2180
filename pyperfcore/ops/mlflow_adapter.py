"""MLflow model registry adapter (optional: ``pip install mlflow-skinny`` or ``mlflow``).

* :func:`import_from_mlflow` copies MLflow model versions into a pyperfcore
  :class:`~pyperfcore.ops.Registry`: their artifacts (through pyperfcore's safe-format and
  path checks, so pickled MLflow flavours need ``allow_pickle=True``), description, tags, the
  source run's metrics and parameters, and where they came from. Versions already imported are
  skipped. Stages and aliases are *not* copied: going live happens through pyperfcore's
  approvals and serving checks.
* :func:`export_to_mlflow` writes one pyperfcore version to MLflow: a run holding the artifacts
  (``model/``), metrics and parameters, then a registered-model version pointing at it, tagged
  with the sha256 of every artifact and its pyperfcore origin; aliases that point at the
  version in pyperfcore are set in MLflow too. Importing such a version back checks the
  sha256 tags against the downloaded bytes.

Both take an ``MlflowClient`` or the tracking/registry URIs to build one.
"""
from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from ._db import OpsError
from .artifacts import IntegrityError

__all__ = ["import_from_mlflow", "export_to_mlflow"]

_SHA_TAG = "pyperfcore.sha256."


def _client(client, tracking_uri, registry_uri):
    try:
        from mlflow import MlflowClient
    except ImportError as e:
        raise ImportError("the MLflow adapter needs MLflow: pip install mlflow-skinny "
                          "(or mlflow)") from e
    if client is not None:
        return client
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri or tracking_uri)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _versions(client, name: str, version):
    if version is None:
        vs = client.search_model_versions(f"name='{name}'")
        return sorted(vs, key=lambda v: int(v.version))
    if isinstance(version, int) or (isinstance(version, str) and version.isdigit()):
        return [client.get_model_version(name, str(version))]
    return [client.get_model_version_by_alias(name, version)]


def import_from_mlflow(registry, name: str, version=None, *, client=None, tracking_uri=None,
                       registry_uri=None, target_name: str | None = None,
                       by: str | None = None, allow_pickle: bool = False) -> list:
    """Import MLflow model ``name`` (all versions, one number, or an alias) into ``registry``.

    Returns the new :class:`~pyperfcore.ops.ModelVersion` objects (already imported versions
    are skipped). Raises :class:`~pyperfcore.ops.UnsafeArtifact` for pickled artifacts unless
    ``allow_pickle``, and :class:`~pyperfcore.ops.IntegrityError` when a version carries
    pyperfcore sha256 tags that its downloaded bytes do not match.
    """
    c = _client(client, tracking_uri, registry_uri)
    import mlflow.artifacts
    target = target_name or name
    done = set()
    try:
        for mv in registry.versions(target):
            src = mv.metadata.get("imported_from") or {}
            if src.get("system") == "mlflow":
                done.add((src.get("name"), str(src.get("version"))))
    except Exception:  # a model not in the registry yet has no versions
        pass
    out = []
    for v in _versions(c, name, version):
        if (name, str(v.version)) in done:
            continue
        with tempfile.TemporaryDirectory(prefix="pyperfcore-mlflow-") as tmp:
            uri = c.get_model_version_download_uri(name, v.version)
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
            files = [local] if local.is_file() else sorted(p for p in local.rglob("*")
                                                           if p.is_file())
            if not files:
                raise OpsError(f"MLflow {name} version {v.version} has no artifact files at "
                               f"{uri}")
            arts = {}
            for p in files:
                rel = p.name if local.is_file() else p.relative_to(local).as_posix()
                arts[rel] = p
            tags = dict(v.tags or {})
            for k, want in tags.items():
                if k.startswith(_SHA_TAG):
                    aname = k[len(_SHA_TAG):]
                    if aname not in arts or _sha256(arts[aname]) != want:
                        raise IntegrityError(f"MLflow {name} version {v.version}: artifact "
                                             f"{aname!r} does not match its sha256 tag")
            meta = {"tags": {k: val for k, val in tags.items() if not k.startswith(_SHA_TAG)},
                    "imported_from": {"system": "mlflow", "name": name,
                                      "version": str(v.version), "source": v.source,
                                      "run_id": v.run_id or None,
                                      "aliases": list(getattr(v, "aliases", []) or [])}}
            if v.description:
                meta["description"] = v.description
            if v.run_id:
                try:
                    run = c.get_run(v.run_id)
                except Exception:  # the run may be gone; the version still imports
                    run = None
                if run is not None:
                    if run.data.metrics:
                        meta["metrics"] = dict(run.data.metrics)
                    if run.data.params:
                        meta["params"] = dict(run.data.params)
            for key in ("input_schema", "feature_version", "code_version"):
                if "pyperfcore." + key in meta["tags"]:
                    import json
                    raw = meta["tags"].pop("pyperfcore." + key)
                    meta[key] = json.loads(raw) if key == "input_schema" else raw
            out.append(registry.register(target, arts, metadata=meta, by=by,
                                         allow_pickle=allow_pickle))
    return out


def export_to_mlflow(registry, name: str, ref="latest", *, client=None, tracking_uri=None,
                     registry_uri=None, mlflow_name: str | None = None,
                     experiment: str = "pyperfcore-registry", set_aliases: bool = True):
    """Export one pyperfcore version to MLflow; returns the MLflow ``ModelVersion``."""
    import json

    c = _client(client, tracking_uri, registry_uri)
    mv = registry.get(name, ref)
    target = mlflow_name or name
    exp = c.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else c.create_experiment(experiment)
    run = c.create_run(exp_id, run_name=f"{mv.name}-v{mv.version}",
                       tags={"pyperfcore.model": mv.name,
                             "pyperfcore.version": str(mv.version)})
    run_id = run.info.run_id
    try:
        metrics = mv.metadata.get("metrics") or {}
        for k, val in metrics.items():
            if isinstance(val, (int, float)) and not isinstance(val, bool):
                c.log_metric(run_id, k, float(val))
        for k, val in (mv.metadata.get("params") or {}).items():
            c.log_param(run_id, k, val)
        with tempfile.TemporaryDirectory(prefix="pyperfcore-mlflow-") as tmp:
            for aname in mv.manifest:
                dst = Path(tmp, *aname.split("/"))
                dst.parent.mkdir(parents=True, exist_ok=True)
                src = registry.artifact_path(mv.name, mv.version, aname)
                with open(src, "rb") as f, open(dst, "wb") as g:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        g.write(chunk)
            c.log_artifacts(run_id, tmp, artifact_path="model")
        c.set_terminated(run_id)
    except BaseException:
        c.set_terminated(run_id, status="FAILED")
        raise
    try:
        c.get_registered_model(target)
    except Exception:
        c.create_registered_model(target)
    tags = {str(k): str(val) for k, val in (mv.metadata.get("tags") or {}).items()}
    tags.update({_SHA_TAG + a: m["sha256"] for a, m in mv.manifest.items()})
    tags["pyperfcore.origin"] = f"{mv.name}:{mv.version}"
    tags["pyperfcore.stage"] = mv.stage
    if mv.metadata.get("input_schema") is not None:
        tags["pyperfcore.input_schema"] = json.dumps(mv.metadata["input_schema"],
                                                     sort_keys=True)
    for key in ("feature_version", "code_version"):
        if mv.metadata.get(key) is not None:
            tags["pyperfcore." + key] = str(mv.metadata[key])
    source = c.get_run(run_id).info.artifact_uri.rstrip("/") + "/model"
    out = c.create_model_version(target, source=source, run_id=run_id, tags=tags,
                                 description=mv.metadata.get("description"))
    if set_aliases:
        for alias in mv.aliases:
            c.set_registered_model_alias(target, alias, out.version)
    registry.audit.append({"kind": "exported", "subject": mv.subject, "model": mv.name,
                           "version": mv.version, "to": "mlflow", "mlflow_name": target,
                           "mlflow_version": str(out.version)})
    return out
