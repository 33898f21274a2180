"""The one place where tests are skipped by what was built and what hardware is present.

Markers (registered in pyproject.toml, --strict-markers):
  cuda   - needs pyperfcore._cuda built and a usable NVIDIA GPU
  gpu    - needs a GPU visible to torch
  triton - needs triton (and torch); on a machine without a GPU runs under TRITON_INTERPRET=1
  slow   - long; deselect with -m "not slow"
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# Triton kernels run on CPU through the interpreter when no NVIDIA GPU is present. This must be
# decided before any kernel module is imported, and without importing torch or touching a GPU.
_HAS_NVIDIA_DEVICE = Path("/dev/nvidia0").exists() or Path("/dev/nvidiactl").exists()
if not _HAS_NVIDIA_DEVICE:
    os.environ.setdefault("TRITON_INTERPRET", "1")

from hypothesis import HealthCheck, settings  # noqa: E402

# Fixtures used beside @given (cpu_target, triton_device) are constant for a test, so reusing
# them across examples is intended.
_SUPPRESS = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
settings.register_profile("ci", deadline=None, max_examples=60, suppress_health_check=_SUPPRESS)
settings.register_profile("repro", deadline=None, derandomize=True, max_examples=60, suppress_health_check=_SUPPRESS)
settings.register_profile("thorough", deadline=None, max_examples=500, suppress_health_check=_SUPPRESS)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _cuda_reason() -> str | None:
    try:
        import pyperfcore._cuda as cuda
    except ImportError:
        return "pyperfcore._cuda was not built"
    status = cuda.status()
    return None if status == "ok" else f"CUDA cannot run here: {status}"


def _gpu_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed"
    import torch

    return None if torch.cuda.is_available() else "torch sees no GPU"


def _triton_reason() -> str | None:
    if importlib.util.find_spec("triton") is None or importlib.util.find_spec("torch") is None:
        return "triton/torch not installed"
    return None


_CHECKS = {"cuda": _cuda_reason, "gpu": _gpu_reason, "triton": _triton_reason}
_cache: dict[str, str | None] = {}


def pytest_runtest_setup(item: pytest.Item) -> None:
    for name, check in _CHECKS.items():
        if item.get_closest_marker(name) is None:
            continue
        if name not in _cache:
            _cache[name] = check()
        if _cache[name] is not None:
            pytest.skip(_cache[name])


def supported_cpu_targets() -> list[str]:
    import pyperfcore

    return list(pyperfcore.build_info()["cpu_targets_supported"])


@pytest.fixture(params=supported_cpu_targets())
def cpu_target(request: pytest.FixtureRequest):
    """Parametrizes a test over every CPU target this machine supports, forcing each in turn."""
    import pyperfcore

    with pyperfcore.cpu_target(request.param):
        yield request.param


@pytest.fixture
def rng():
    import numpy as np

    return np.random.default_rng(12345)


@pytest.fixture
def triton_device() -> str:
    """Device for Triton kernel tests: the GPU when there is one, else CPU under TRITON_INTERPRET=1."""
    return "cuda" if _HAS_NVIDIA_DEVICE and _gpu_reason() is None else "cpu"
