"""Demo stage: what was built and what this machine can run."""
from __future__ import annotations

from .._runtime import build_info


def run(ctx) -> dict:
    info = build_info()
    for key in ("version", "cpu_target", "cpu_targets_supported", "num_threads", "cuda", "cuda_status", "triton", "gpu"):
        ctx.log(f"{key}: {info[key]}")
    return info
