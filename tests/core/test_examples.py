"""The examples run and reach their own checks (they exit non-zero when a check fails)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_shrink_and_validate_example(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("safetensors")
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "shrink_and_validate.py"), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    assert "2:4 pruning: overall sparsity 0.500" in r.stdout
    assert "INT8 against the float student (the quantization alone):\nequivalence: OK" in r.stdout
    report = json.loads((tmp_path / "int8_vs_student.json").read_text())
    assert set(report["layers"]) == {"0", "2", "4"} and report["cosine_min"] >= 0.999
    assert (tmp_path / "int8" / "quant.safetensors").exists()
