"""
pyperfcore native core (private; use the public pyperfcore modules)
"""
from __future__ import annotations
import numpy
import numpy.typing
import typing
__all__: list[str] = ['compiled_cpu_targets', 'default_num_threads', 'dequantize_int8', 'get_cpu_target', 'get_num_threads', 'parallel_sum_test', 'quantize_int8', 'set_cpu_target', 'set_num_threads', 'supported_cpu_targets']
def compiled_cpu_targets() -> list[str]:
    """
    Names of the CPU targets compiled into this build.
    """
def default_num_threads() -> int:
    """
    PYPERFCORE_NUM_THREADS, else OMP_NUM_THREADS, else the cores available.
    """
def dequantize_int8(q: typing.Annotated[numpy.typing.ArrayLike, numpy.int8], scales: typing.Annotated[numpy.typing.ArrayLike, numpy.float32], target: typing.Any = None) -> numpy.typing.NDArray[numpy.float32]:
    """
    float32 q * scales[channel] for q as [outer, channels, inner].
    """
def get_cpu_target() -> str:
    """
    The CPU target kernels dispatch to (PYPERFCORE_CPU_TARGET, or the best supported).
    """
def get_num_threads() -> int:
    """
    Threads used by native parallel loops.
    """
def parallel_sum_test(n: typing.SupportsInt | typing.SupportsIndex) -> int:
    ...
def quantize_int8(x: numpy.ndarray[typing.Any, numpy.dtype[typing.Any]], target: typing.Any = None) -> tuple:
    """
    Symmetric INT8 quantization of a 3-D [outer, channels, inner] float32/float16 view along its middle axis. Returns (q int8 [outer, channels, inner], scales float32 [channels]). ValueError on NaN or inf.
    """
def set_cpu_target(name: str) -> None:
    """
    Force the CPU target; ValueError if this CPU cannot run it.
    """
def set_num_threads(n: typing.SupportsInt | typing.SupportsIndex) -> None:
    """
    Set the threads used by native parallel loops.
    """
def supported_cpu_targets() -> list[str]:
    """
    Names of the compiled CPU targets this CPU can run.
    """
__version__: str = '0.1.0'
