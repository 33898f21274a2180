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


# ---------------------------------------------------------------- GPU (device check only)
def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no GPU")
    return torch


def _synced(torch, fn, *args):
    def run():
        out = fn(*args)
        torch.cuda.synchronize()
        return out

    return run


def _torch_quantize(torch, x, axis):
    # The same computation in eager torch: amax per channel, IEEE division, round half to even.
    amax = x.abs().amax(dim=1 - axis, keepdim=True) if axis is not None else x.abs().amax()
    scale = torch.where(amax > 0, amax / 127, torch.ones_like(amax))
    return torch.clamp(torch.round(x / scale), -127, 127).to(torch.int8), scale


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton", "torch", "floor_copy"])
@pytest.mark.parametrize("axis", [0, 1], ids=["axis0", "axis1"])
def test_gpu_quantize(benchmark, impl, axis):
    torch = _torch_cuda()
    benchmark.group = f"GPU quantize 8192x8192 f32 {axis=}"
    x = torch.randn(8192, 8192, device="cuda")
    if impl in ("cuda", "triton"):
        if impl == "cuda" and not pyperfcore.build_info()["cuda"]:
            pytest.skip("_cuda not built")
        q, s = quant.quantize(x, axis=axis, backend=impl)
        # Bit-exact against the CPU backend (itself tested against the numpy oracle).
        qc, sc = quant.quantize(x.cpu().numpy(), axis=axis, backend="cpu")
        assert np.array_equal(q.cpu().numpy(), qc) and np.array_equal(s.cpu().numpy(), sc)
        # Eager torch may round differently (its CUDA division need not be IEEE-exact): count it.
        qt, _ = _torch_quantize(torch, x, axis)
        benchmark.extra_info["elements differing from eager torch"] = int((q != qt).sum())
        fn = _synced(torch, quant.quantize, x, axis, "int8", impl)
    elif impl == "torch":
        fn = _synced(torch, _torch_quantize, torch, x, axis)
    else:
        out = torch.empty(x.shape, dtype=torch.int8, device="cuda")
        fn = _synced(torch, out.copy_, x)
    fn()
    benchmark.pedantic(fn, rounds=30, iterations=1, warmup_rounds=3)
    benchmark.extra_info["GB/s (read+write)"] = (x.numel() * 5) / benchmark.stats.stats.median / 1e9
