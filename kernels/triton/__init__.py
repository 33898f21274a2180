"""Triton kernels of pyperfcore, shipped as ``pyperfcore.kernels``.

Importing this package imports nothing heavy; each kernel module imports triton and torch
itself, so ``import pyperfcore`` never pulls them in. On a CPU-only machine the kernels run
under ``TRITON_INTERPRET=1`` (it must be set before a kernel module is first imported).
"""
from __future__ import annotations

import os

__all__ = ["quant"]
_CHECKED: list = []


def _version(v: str) -> tuple:
    out = []
    for part in v.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit()) if part[:1].isdigit() else ""
        out.append(int(digits) if digits else 0)
    return tuple(out)


def interpreter_problem(triton_version: str, numpy_version: str, interpret: bool) -> str | None:
    """Why the Triton interpreter cannot run these kernels here, or None. Triton 3.6 and older
    interpret a scalar kernel argument as a one-element numpy array and convert it with int();
    NumPy 2.4 refuses that conversion, so every kernel whose loop bound is an argument fails with
    "only 0-dimensional arrays can be converted to Python scalars" (compiled kernels are fine)."""
    if interpret and _version(triton_version) < (3, 7) and _version(numpy_version) >= (2, 4):
        return (f"TRITON_INTERPRET=1 with triton {triton_version} and numpy {numpy_version}: triton's interpreter "
                "before 3.7 fails on NumPy 2.4 and later (\"only 0-dimensional arrays can be converted to Python "
                "scalars\"); install numpy<2.4 or triton>=3.7 to run the Triton kernels on the CPU")
    return None


def _check_interpreter() -> None:
    """Warn once (on the first kernel module imported) when the interpreter cannot run them."""
    if _CHECKED:
        return
    _CHECKED.append(True)
    import numpy
    import triton

    why = interpreter_problem(triton.__version__, numpy.__version__,
                              os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"))
    if why:
        import warnings

        warnings.warn(why, RuntimeWarning, stacklevel=3)
