"""The pilot op: symmetric INT8 quantization of a 4096x4096 float32 matrix.

Peers in the same group: the same computation in numpy, and the memory floor
``np.copyto(int8_out, x, casting='unsafe')`` (reads the input once, writes the output once).
"""
from __future__ import annotations

import numpy as np
import pytest

import pyperfcore
from pyperfcore import quant

N = 4096
_X = np.random.default_rng(0).standard_normal((N, N)).astype(np.float32)
_OUT = np.empty((N, N), dtype=np.int8)
TARGETS = pyperfcore.build_info()["cpu_targets_supported"]


def _numpy_quantize(x: np.ndarray, axis: int | None):
    return quant.quantize(x, axis=axis, backend="reference")


@pytest.fixture(scope="module", autouse=True)
def _check_correct():
    for axis in (0, 1, None):
        q, s = quant.quantize(_X, axis=axis)
        qr, sr = _numpy_quantize(_X, axis)
        assert np.array_equal(q, qr) and np.array_equal(s, sr)


def _gbs(benchmark, nbytes: int) -> None:
    benchmark.extra_info["GB/s (read+write)"] = nbytes / benchmark.stats.stats.median / 1e9 if benchmark.stats else None


@pytest.mark.parametrize("axis", [0, 1, None], ids=["axis0", "axis1", "tensor"])
@pytest.mark.parametrize("target", TARGETS)
def test_pyperfcore(benchmark, axis, target):
    benchmark.group = f"quantize 4096x4096 f32 {axis=}"
    with pyperfcore.cpu_target(target):
        benchmark(quant.quantize, _X, axis)
    _gbs(benchmark, _X.nbytes + _X.size)


@pytest.mark.parametrize("axis", [0, 1, None], ids=["axis0", "axis1", "tensor"])
def test_numpy(benchmark, axis):
    benchmark.group = f"quantize 4096x4096 f32 {axis=}"
    benchmark.pedantic(_numpy_quantize, args=(_X, axis), rounds=3, iterations=1)
    _gbs(benchmark, _X.nbytes + _X.size)


@pytest.mark.parametrize("axis", [0, 1, None], ids=["axis0", "axis1", "tensor"])
def test_floor_copyto(benchmark, axis):
    benchmark.group = f"quantize 4096x4096 f32 {axis=}"
    benchmark(np.copyto, _OUT, _X, casting="unsafe")
    _gbs(benchmark, _X.nbytes + _X.size)
