"""Shared settings for the benchmark suites (pytest-benchmark)."""
import os
from pathlib import Path

# Triton kernels can only run through the interpreter without a GPU; benchmarks of them are
# meaningful on a GPU only, and are skipped here by their own checks.
if not (Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists()):
    os.environ.setdefault("TRITON_INTERPRET", "1")
