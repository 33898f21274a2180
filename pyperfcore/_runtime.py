"""Build information, CPU targets and threads: the process-wide runtime knobs."""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Iterator

from ._errors import BackendUnavailable

_PKG_DIR = Path(__file__).resolve().parent


def _core() -> Any:
    """The native module, imported on first use (so ``import pyperfcore`` stays cheap)."""
    mod = sys.modules.get("pyperfcore._core")
    if mod is not None:
        return mod
    try:
        mod = importlib.import_module("pyperfcore._core")
    except ImportError as exc:  # pragma: no cover - only on a broken install
        raise BackendUnavailable(
            "the native module pyperfcore._core is not built; install pyperfcore with "
            "`pip install .` (or `make dev`) so the C++ core is compiled"
        ) from exc
    env = os.environ.get("PYPERFCORE_CPU_TARGET")
    if env:
        # A request for a target this CPU lacks is an error at the first use, not a silent fallback.
        mod.set_cpu_target(env)
    return mod


def _cuda_module() -> Any | None:
    """pyperfcore._cuda if it was built, else None. Importing it never touches a GPU."""
    try:
        return importlib.import_module("pyperfcore._cuda")
    except ImportError:
        return None


def set_num_threads(n: int) -> None:
    """Set the number of threads native kernels use (``n >= 1``)."""
    if not isinstance(n, int) or isinstance(n, bool):
        raise TypeError(f"set_num_threads: n must be an int, got {type(n).__name__}")
    _core().set_num_threads(n)


def get_num_threads() -> int:
    """Threads native kernels use: set_num_threads, else PYPERFCORE_NUM_THREADS, else
    OMP_NUM_THREADS, else the cores this process may run on."""
    return int(_core().get_num_threads())


def get_cpu_target() -> str:
    """The SIMD target kernels dispatch to: ``scalar``, ``avx2``, ``avx512`` or ``avx512_vnni``."""
    return str(_core().get_cpu_target())


def set_cpu_target(name: str) -> None:
    """Force a CPU target for every kernel. ValueError if unknown or not runnable here."""
    _core().set_cpu_target(name)


@contextlib.contextmanager
def cpu_target(name: str) -> Iterator[str]:
    """Context manager that forces a CPU target and restores the previous one."""
    prev = get_cpu_target()
    set_cpu_target(name)
    try:
        yield name
    finally:
        set_cpu_target(prev)


def _install_dirs() -> list[Path]:
    """Where the build put its files: the package directory, and (in an editable install)
    the directory that holds the compiled _core module."""
    dirs = [_PKG_DIR]
    spec = importlib.util.find_spec("pyperfcore._core")
    if spec is not None and spec.origin:
        d = Path(spec.origin).resolve().parent
        if d not in dirs:
            dirs.append(d)
    return dirs


def get_include() -> str:
    """Directory to add to the include path of a C++ program using the core
    (``#include <pyperfcore/quant/quant.hpp>``)."""
    for d in _install_dirs():
        if (d / "include" / "pyperfcore").is_dir():
            return str(d / "include")
    raise BackendUnavailable(f"C++ headers not found under {_install_dirs()}; this install does not carry them")


def get_cmake_dir() -> str:
    """Directory holding ``pyperfcoreConfig.cmake`` for ``find_package(pyperfcore)``."""
    for d in _install_dirs():
        path = d / "share" / "cmake" / "pyperfcore"
        if (path / "pyperfcoreConfig.cmake").is_file():
            return str(path)
    raise BackendUnavailable(f"CMake package config not found under {_install_dirs()}")


def _triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None and importlib.util.find_spec("torch") is not None


def _gpu_name() -> str | None:
    """Name of the first CUDA device, asked through _cuda (no torch import); None if none."""
    cuda = _cuda_module()
    if cuda is None:
        return None
    try:
        return str(cuda.device_name(0))
    except RuntimeError:
        return None


def build_info() -> dict[str, Any]:
    """What was built and what this machine can run.

    Keys: ``version``, ``cpu_targets`` (compiled), ``cpu_targets_supported`` (runnable here),
    ``cpu_target`` (selected), ``num_threads``, ``cuda`` (the _cuda module was built),
    ``cuda_archs``, ``cuda_runtime``, ``cuda_status`` (why CUDA ops can or cannot run here),
    ``triton`` (importable), ``gpu`` (device name or None).
    """
    from ._version import __version__

    core = _core()
    cuda = _cuda_module()
    info: dict[str, Any] = {
        "version": __version__,
        "cpu_targets": list(core.compiled_cpu_targets()),
        "cpu_targets_supported": list(core.supported_cpu_targets()),
        "cpu_target": str(core.get_cpu_target()),
        "num_threads": int(core.get_num_threads()),
        "cuda": cuda is not None,
        "cuda_archs": list(cuda.archs()) if cuda is not None else [],
        "cuda_runtime": cuda.runtime_version() if cuda is not None else None,
        "cuda_status": cuda.status() if cuda is not None else "not built (PYPERFCORE_CUDA=OFF or no nvcc)",
        "triton": _triton_available(),
        "gpu": _gpu_name(),
    }
    return info
