"""The GPU sweep script runs end to end on the CPU (--dry-run: the interpreter, small shapes), so a
script error is found here rather than in a device check, where device time is scarce. Every row
kind the device check reads must be printed, and no candidate may fail."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.triton, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_quant_sweep_dry_run_prints_every_row_kind():
    import torch

    pytest.importorskip("triton")
    if torch.cuda.is_available():
        pytest.skip("a GPU machine runs the real sweep (device_check.sh); this saves the device's time")
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYPERFCORE_TRITON_TMA_MIN_M": "32"}  # TMA rows at M = 32
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_sweep_quant.py"), "--dry-run", "--m", "1,32",
                          "--budget", "900"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-4000:]
    for row in ["M=    1 SHIPPED w8a8 (fused)", "M=   32 SHIPPED w8a8 (two_pass)", "w8a8 TMA gemm cfg",
                "w8a8 two-pass, tma GEMM (forced)", "shipped w8a8 GEMM pick", "fp16 TMA cfg",
                "fp16 TMA kernel (pick/1st cfg), fp16 out", "shipped fp16 pick", "PEER cuBLAS fp16 addmm + gelu",
                "M=    1 small-M picks (auto)"]:
        assert row in text, (row, text[-3000:])
    assert " failed: " not in text, text[-3000:]
    assert "Traceback" not in text
