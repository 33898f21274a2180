"""MLflow adapter against a real local MLflow registry (file store; needs mlflow-skinny)."""
from __future__ import annotations

import io
import json
import os
import pickle

import numpy as np
import pytest

from pyperfcore.ops import IntegrityError, Registry, UnsafeArtifact


@pytest.fixture(scope="module")
def mlflow_mod():
    # MLflow 3 keeps the file store behind an opt-in; the SQLite store needs SQLAlchemy and
    # Alembic, which mlflow-skinny does not bring.
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return pytest.importorskip("mlflow")


@pytest.fixture
def client(mlflow_mod, tmp_path):
    uri = (tmp_path / "mlruns").as_uri()
    return mlflow_mod.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _npy(a) -> bytes:
    b = io.BytesIO()
    np.save(b, a)
    return b.getvalue()


def test_round_trip_through_mlflow(client, tmp_path):
    from pyperfcore.ops.mlflow_adapter import export_to_mlflow, import_from_mlflow
    reg = Registry(tmp_path / "reg")
    w = np.arange(12.0).reshape(3, 4)
    reg.register("ranker", {"w.npy": _npy(w), "conf/cfg.json": b'{"k": 1}'},
                 metadata={"metrics": {"auc": 0.93}, "tags": {"team": "search"},
                           "input_schema": {"x": "float32"}, "feature_version": "fs-2",
                           "description": "ranking model"})
    reg.promote("ranker", 1, alias="canary")
    out = export_to_mlflow(reg, "ranker", 1, client=client)
    assert out.version in ("1", 1)
    mv = client.get_model_version("ranker", out.version)
    assert mv.tags["team"] == "search" and mv.tags["pyperfcore.origin"] == "ranker:1"
    assert client.get_model_version_by_alias("ranker", "canary").version == mv.version
    assert client.get_run(mv.run_id).data.metrics == {"auc": 0.93}
    assert "exported" in [r["record"]["kind"] for r in reg.audit.records()]

    other = Registry(tmp_path / "other")
    got = import_from_mlflow(other, "ranker", client=client)
    assert len(got) == 1
    v = got[0]
    assert v.manifest["w.npy"]["sha256"] == reg.get("ranker", 1).manifest["w.npy"]["sha256"]
    assert set(v.manifest) == {"w.npy", "conf/cfg.json"}
    np.testing.assert_array_equal(other.load("ranker", v.version)["w.npy"], w)
    assert v.metadata["metrics"] == {"auc": 0.93}
    assert v.metadata["tags"] == {"team": "search", "pyperfcore.origin": "ranker:1",
                                  "pyperfcore.stage": "candidate"}
    assert v.metadata["input_schema"] == {"x": "float32"}
    assert v.metadata["feature_version"] == "fs-2"
    assert v.metadata["imported_from"]["system"] == "mlflow"
    assert v.stage == "candidate" and v.aliases == []  # going live needs our approvals
    assert import_from_mlflow(other, "ranker", client=client) == []  # already imported
    assert other.audit.verify().ok


def test_import_native_mlflow_versions_and_safety(client, tmp_path, mlflow_mod):
    from pyperfcore.ops.mlflow_adapter import import_from_mlflow
    # A model version created by MLflow users directly: a run with artifacts, then registered.
    exp = client.create_experiment("e")
    run = client.create_run(exp)
    client.log_metric(run.info.run_id, "rmse", 0.5)
    client.log_param(run.info.run_id, "depth", "6")
    src = tmp_path / "m"
    src.mkdir()
    (src / "model.onnx").write_bytes(b"onnx-bytes")
    client.log_artifacts(run.info.run_id, str(src), artifact_path="model")
    client.create_registered_model("native")
    uri = client.get_run(run.info.run_id).info.artifact_uri + "/model"
    client.create_model_version("native", source=uri, run_id=run.info.run_id,
                                tags={"owner": "ml"}, description="from mlflow")
    client.set_registered_model_alias("native", "champion", "1")
    # a pickled sklearn-style version is refused unless the caller opts in
    (src / "model.pkl").write_bytes(pickle.dumps({"a": 1}))
    run2 = client.create_run(exp)
    client.log_artifacts(run2.info.run_id, str(src), artifact_path="model")
    client.create_model_version("native", source=client.get_run(run2.info.run_id).info
                                .artifact_uri + "/model", run_id=run2.info.run_id)

    reg = Registry(tmp_path / "reg")
    [v] = import_from_mlflow(reg, "native", "champion", client=client, target_name="nat")
    assert v.name == "nat" and v.metadata["metrics"] == {"rmse": 0.5}
    assert v.metadata["params"] == {"depth": "6"} and v.metadata["description"] == "from mlflow"
    assert v.metadata["imported_from"]["aliases"] == ["champion"]
    assert reg.store.path_of(v.manifest["model.onnx"]["sha256"]).read_bytes() == b"onnx-bytes"
    with pytest.raises(UnsafeArtifact, match="pickle"):
        import_from_mlflow(reg, "native", 2, client=client, target_name="nat")
    [v2] = import_from_mlflow(reg, "native", 2, client=client, target_name="nat",
                              allow_pickle=True)
    assert v2.manifest["model.pkl"]["format"] == "pickle"
    # a version whose bytes no longer match the sha256 tags it was exported with is refused
    client.set_model_version_tag("native", "1", "pyperfcore.sha256.model.onnx", "00" * 32)
    with pytest.raises(IntegrityError, match="model.onnx"):
        import_from_mlflow(Registry(tmp_path / "r3"), "native", 1, client=client)
    json.dumps([v.to_dict(), v2.to_dict()])
