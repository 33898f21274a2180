"""Inference logging to rotating Parquet files (pyarrow is optional: skipped without it)."""
from __future__ import annotations

import numpy as np
import pytest

from pyperfcore.ops import monitoring as M
from pyperfcore.ops.access import AccessPolicy

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def test_parquet_log_round_trips_rotates_and_redacts(tmp_path):
    pol = AccessPolicy(pii={"inputs.email": "redact"})
    lg = M.InferenceLogger(tmp_path, format="parquet", policy=pol, max_bytes=8192, max_files=50)
    rng = np.random.default_rng(0)
    sent = []
    for i in range(300):
        x = rng.normal(size=3).round(6)
        rec = dict(inputs={"email": f"u{i}@x.org", "x": x}, outputs=[int(i % 3)],
                   latency_s=float(i) / 1000, model="clf", version=3 if i % 2 else "3b",
                   features={"store": "v7"}, error=None if i % 50 else "boom",
                   predicted_class=i % 3, request_id=f"r{i}")
        lg.log(**rec)
        sent.append(rec)
    lg.close()
    files = lg.files()
    assert len(files) > 1 and all(f.suffix == ".parquet" for f in files)  # rotated
    t = pq.read_table(files[0])
    assert t.schema.field("latency_s").type == pa.float64()  # scalar columns stay typed
    assert t.schema.field("inputs").type == pa.string()      # free-form ones are JSON text
    recs = lg.read()
    assert len(recs) == lg.written == 300 and not lg.errors
    for got, want in zip(recs, sent):
        assert got["request_id"] == want["request_id"]
        assert got["inputs"]["x"] == pytest.approx(want["inputs"]["x"].tolist())
        assert got["inputs"]["email"] != want["inputs"]["email"]  # redacted before writing
        assert got["outputs"] == want["outputs"] and got["features"] == {"store": "v7"}
        assert got["version"] == want["version"]  # mixed int/str column survives as JSON
        assert got["error"] == want["error"] and got["latency_s"] == want["latency_s"]


def test_parquet_rotation_deletes_the_oldest(tmp_path):
    lg = M.InferenceLogger(tmp_path, format="parquet", max_bytes=2048, max_files=2)
    for i in range(400):
        lg.log(inputs=[i] * 4, outputs=i)
    lg.close()
    files = lg.files()
    assert len(files) <= 2
    recs = lg.read()
    ids = [r["outputs"] for r in recs]
    assert ids == sorted(ids) and ids[-1] == 399 and len(ids) < 400
