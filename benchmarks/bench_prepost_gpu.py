"""GPU benchmarks of the fused pre/post-processing ops (device check only): ours (cuda, triton)
against torch eager, torchvision where importable, and the device copy floor, same run.

Run: python -m pytest benchmarks/bench_prepost_gpu.py --benchmark-only -p no:cacheprovider
Every call is followed by torch.cuda.synchronize(), so a round is what a caller waits for,
host overhead included. benchmarks/gpu_sweep_prepost.py gives the same comparisons with CUDA
event timing as one standalone table.
"""
from __future__ import annotations

import numpy as np
import pytest

from pyperfcore import prepost as pp

MEAN = np.array([123.675, 116.28, 103.53], np.float32)
STD = np.array([58.395, 57.12, 57.375], np.float32)


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch sees no GPU")
    return torch


def _synced(torch, fn):
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def _gpu_available(impl):
    import pyperfcore

    if impl == "cuda" and not pyperfcore.build_info()["cuda"]:
        pytest.skip("_cuda not built")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return {n: rng.integers(0, 256, (n, 224, 224, 3), dtype=np.uint8) for n in (32, 256)}


@pytest.fixture(scope="module")
def images256():
    return np.random.default_rng(1).integers(0, 256, (32, 256, 256, 3), dtype=np.uint8)


@pytest.mark.gpu
@pytest.mark.parametrize("n", [32, 256])
@pytest.mark.parametrize("impl", ["cuda", "triton", "torch", "floor_copy"])
def test_gpu_normalize(benchmark, impl, n, images):
    torch = _torch_cuda()
    benchmark.group = f"GPU normalize NCHW f32 {n}x224x224"
    x = torch.from_numpy(images[n]).cuda()
    m, s = torch.from_numpy(MEAN).cuda(), torch.from_numpy(STD).cuda()
    ref = ((x.float() - m) / s).permute(0, 3, 1, 2).contiguous()
    out = torch.empty_like(ref)
    if impl in ("cuda", "triton"):
        _gpu_available(impl)
        pp.preprocess_images(x, mean=MEAN, std=STD, out=out, backend=impl)
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        fn = _synced(torch, lambda: pp.preprocess_images(x, mean=MEAN, std=STD, out=out, backend=impl))
    elif impl == "torch":
        fn = _synced(torch, lambda: ((x.float() - m) / s).permute(0, 3, 1, 2).contiguous())
    else:
        fn = _synced(torch, lambda: out.copy_(ref))  # device copy of the output's bytes: the floor
    fn()
    benchmark.pedantic(fn, rounds=50, iterations=1, warmup_rounds=5)
    benchmark.extra_info["GB/s (output bytes)"] = ref.numel() * 4 / benchmark.stats.stats.median / 1e9


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton", "torch"])
def test_gpu_normalize_f16(benchmark, impl, images):
    torch = _torch_cuda()
    benchmark.group = "GPU normalize NCHW f16 256x224x224"
    x = torch.from_numpy(images[256]).cuda()
    m, s = torch.from_numpy(MEAN).cuda(), torch.from_numpy(STD).cuda()
    if impl in ("cuda", "triton"):
        _gpu_available(impl)
        out = torch.empty((256, 3, 224, 224), dtype=torch.float16, device="cuda")
        exp = pp.preprocess_images(images[256][:4], mean=MEAN, std=STD, dtype="float16", backend="cpu")
        pp.preprocess_images(x, mean=MEAN, std=STD, dtype="float16", out=out, backend=impl)
        assert torch.equal(out[:4].cpu(), torch.from_numpy(exp))
        fn = _synced(torch, lambda: pp.preprocess_images(x, mean=MEAN, std=STD, dtype="float16", out=out, backend=impl))
    else:
        mh, sh = m.half(), s.half()
        fn = _synced(torch, lambda: ((x.half() - mh) / sh).permute(0, 3, 1, 2).contiguous())
    fn()
    benchmark.pedantic(fn, rounds=50, iterations=1, warmup_rounds=5)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton", "torch"])
def test_gpu_resize_crop_normalize(benchmark, impl, images256):
    torch = _torch_cuda()
    benchmark.group = "GPU resize232 crop224 normalize 32x256x256 (OpenCV semantics)"
    x = torch.from_numpy(images256).cuda()
    m, s = torch.from_numpy(MEAN).cuda().view(1, 3, 1, 1), torch.from_numpy(STD).cuda().view(1, 3, 1, 1)

    def eager():
        r = torch.nn.functional.interpolate(x.permute(0, 3, 1, 2).float(), size=(232, 232), mode="bilinear",
                                            align_corners=False, antialias=False)
        return ((r[:, :, 4:228, 4:228] - m) / s).contiguous()

    if impl in ("cuda", "triton"):
        _gpu_available(impl)
        got = pp.preprocess_images(x, size=232, crop=224, mean=MEAN, std=STD, antialias=False, backend=impl)
        torch.testing.assert_close(got, eager(), rtol=1e-4, atol=1e-4)
        fn = _synced(torch, lambda: pp.preprocess_images(x, size=232, crop=224, mean=MEAN, std=STD, antialias=False,
                                                         backend=impl))
    else:
        fn = _synced(torch, eager)
    fn()
    benchmark.pedantic(fn, rounds=50, iterations=1, warmup_rounds=5)


@pytest.mark.gpu
@pytest.mark.parametrize("rows", [256, 4096])
@pytest.mark.parametrize("impl", ["cuda", "cuda_check_finite", "triton", "triton_check_finite", "torch", "floor_copy"])
def test_gpu_softmax_top5(benchmark, impl, rows):
    torch = _torch_cuda()
    benchmark.group = f"GPU softmax top5 {rows}x1000"
    logits = (np.random.default_rng(2).standard_normal((rows, 1000)) * 3).astype(np.float32)
    x = torch.from_numpy(logits).cuda()
    if impl.startswith(("cuda", "triton")):
        backend, check = impl.split("_")[0], impl.endswith("check_finite")
        _gpu_available(backend)
        v, i = pp.softmax_topk(x, 5, backend=backend, check_finite=check)
        cv, ci = pp.softmax_topk(logits, 5, backend="cpu")
        np.testing.assert_array_equal(i.cpu().numpy(), ci)
        np.testing.assert_allclose(v.cpu().numpy(), cv, rtol=2e-5)
        # check_finite=False: no sync inside the call (bad rows poisoned); the default
        # (check_finite=True) adds one sync inside the call.
        fn = _synced(torch, lambda: pp.softmax_topk(x, 5, backend=backend, check_finite=check))
    elif impl == "torch":
        fn = _synced(torch, lambda: torch.softmax(x, dim=1).topk(5, dim=1))
    else:
        y = torch.empty_like(x)
        fn = _synced(torch, lambda: y.copy_(x))
    fn()
    benchmark.pedantic(fn, rounds=100, iterations=1, warmup_rounds=10)


@pytest.mark.gpu
@pytest.mark.parametrize("n", [1000, 5000])
@pytest.mark.parametrize("impl", ["cuda", "torchvision"])
def test_gpu_batched_nms(benchmark, impl, n):
    torch = _torch_cuda()
    benchmark.group = f"GPU batched_nms {n} boxes 80 classes"
    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 1000, (n, 2))
    bn = np.concatenate([xy, xy + rng.uniform(10, 150, (n, 2))], 1).astype(np.float32)
    sn, cn = rng.uniform(0, 1, n).astype(np.float32), rng.integers(0, 80, n)
    b, s, c = (torch.from_numpy(a).cuda() for a in (bn, sn, cn))
    if impl == "cuda":
        _gpu_available(impl)
        got = pp.batched_nms(b, s, c, 0.5, backend="cuda")
        np.testing.assert_array_equal(got.cpu().numpy(), pp.batched_nms(bn, sn, cn, 0.5, backend="cpu"))
        fn = _synced(torch, lambda: pp.batched_nms(b, s, c, 0.5, backend="cuda"))
    else:
        tv = pytest.importorskip("torchvision.ops")
        fn = _synced(torch, lambda: tv.batched_nms(b, s, c, 0.5))
    fn()
    benchmark.pedantic(fn, rounds=30, iterations=1, warmup_rounds=3)


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["cuda", "triton", "torch"])
def test_gpu_compress_embeddings(benchmark, impl):
    torch = _torch_cuda()
    benchmark.group = "GPU l2-normalize + int8 compress 4096x512"
    xn = np.random.default_rng(4).standard_normal((4096, 512)).astype(np.float32)
    x = torch.from_numpy(xn).cuda()
    if impl in ("cuda", "triton"):
        _gpu_available(impl)
        q, s = pp.compress_embeddings(x, backend=impl)
        qc, sc = pp.compress_embeddings(xn, backend="cpu")
        np.testing.assert_array_equal(q.cpu().numpy(), qc)
        np.testing.assert_array_equal(s.cpu().numpy(), sc)
        # check_finite=False: without the default NaN/inf check's synchronization
        fn = _synced(torch, lambda: pp.compress_embeddings(x, backend=impl, check_finite=False))
    else:
        def eager():
            v = torch.nn.functional.normalize(x, dim=1)
            sc = v.abs().amax(dim=1).clamp(min=1e-30) / 127
            return torch.round(v / sc[:, None]).clamp(-127, 127).to(torch.int8), sc

        fn = _synced(torch, eager)
    fn()
    benchmark.pedantic(fn, rounds=50, iterations=1, warmup_rounds=5)
