"""Triton kernels of pyperfcore, shipped as ``pyperfcore.kernels``.

Importing this package imports nothing heavy; each kernel module imports triton and torch
itself, so ``import pyperfcore`` never pulls them in. On a CPU-only machine the kernels run
under ``TRITON_INTERPRET=1`` (it must be set before a kernel module is first imported).
"""
__all__ = ["quant"]
