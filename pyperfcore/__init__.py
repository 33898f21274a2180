"""pyperfcore: fast, observable and governable ML inference inside your own serving code.

``import pyperfcore`` is cheap: it never imports torch, triton or cuda-python and never
touches a GPU. The native core (``pyperfcore._core``) is loaded on first use.
"""
from __future__ import annotations

from ._version import __version__

__all__ = [
    "__version__",
    "build_info",
    "get_include",
    "get_cmake_dir",
    "set_num_threads",
    "get_num_threads",
    "set_cpu_target",
    "get_cpu_target",
    "cpu_target",
    "PyperfcoreError",
    "BackendUnavailable",
]

from ._errors import BackendUnavailable, PyperfcoreError
from ._runtime import (
    build_info,
    cpu_target,
    get_cmake_dir,
    get_cpu_target,
    get_include,
    get_num_threads,
    set_cpu_target,
    set_num_threads,
)
