"""GPU linear layers (K = N = 4096, bias + GELU fused) against cuBLAS and torch._int_mm.

All marked `gpu`: they run only in the device check. Each timed call is synchronized, so small-M
figures include the host launch cost a serving process pays. Groups, one per M:
  gpu-w8a8-linear-{M}x4096x4096-gelu
    pyperfcore_triton_w8a8: the Triton kernels (M <= 16: ONE fused launch, activation quantization
        inside; larger M, the shipped path: per-token quantization kernel + tuned INT8 GEMM with the
        epilogue).
    pyperfcore_auto_w8a8 (M <= 16): the shipped default there (SMALL_M_PATH "auto"): the first call
        times the Triton and the CUDA C++ kernels and keeps the faster.
    pyperfcore_triton_w8a8_checked: the same with check_finite=True (one device sync to raise on
        NaN/inf, as QuantizedLinear does).
    pyperfcore_cuda_w8a8 (M <= 16): the CUDA C++ small-M kernel (kernels/cuda/linear_small.cu):
        quantization + dp4a GEMV-style product with the epilogue, two launches from one C++ call.
    pyperfcore_ptr_w8a8 / pyperfcore_tma_w8a8 (M >= 128): two-pass with the pointer GEMM and with
        the persistent TMA GEMM (Hopper) forced; from TMA_MIN_M (512) the shipped path times both
        on its first call and keeps the faster.
    pyperfcore_triton_w8a8_fp16io: the same kernels reading fp16 x and writing fp16 y (what an fp16
        model's optimize()d layer does on CUDA), the peer's input and output types.
    torch_int_mm+epilogue: torch per-token quantization, torch._int_mm, then dequant, bias and GELU
        as separate kernels (_int_mm refuses M <= 16 on CUDA: skipped there).
    torch_fp16_addmm+gelu: an fp16 model on cuBLAS: addmm (bias fused) then GELU, fp16 in/out.
  gpu-half-linear-{M}x4096x4096-gelu
    pyperfcore_triton_fp16: fp16 weights, fp16 activations, Tensor cores, fp32 accumulation, bias +
        GELU fused, fp32 out; pyperfcore_triton_fp16_out16: the same writing fp16 (half the output
        bytes, as the peer); pyperfcore_cuda_fp16_out16 (M <= 16): the CUDA C++ small-M kernel,
        fp16 in and out; pyperfcore_auto_fp16_out16 (M <= 16): the shipped default, the faster of
        the two by its first call's pick; pyperfcore_ptr_fp16_out16 / pyperfcore_tma_fp16_out16 (M >= 128): the
        pointer kernel and the persistent TMA kernel (Hopper) forced, fp16 out (from TMA_MIN_M the
        shipped path times both on its first call and keeps the faster); torch_fp16_addmm+gelu:
        the same peer.
Correctness is asserted against float64 before timing.
Run: python -m pytest benchmarks/bench_quant_gpu.py -m gpu --benchmark-only -p no:cacheprovider
"""
from __future__ import annotations

import pytest

from pyperfcore import quant

torch = pytest.importorskip("torch")
GPU_M = (1, 16, 128, 1024, 4096)
KN = 4096


def _cuda():
    if not torch.cuda.is_available():
        pytest.skip("torch sees no GPU")


@pytest.fixture(scope="module")
def gpu_layer():
    _cuda()
    g = torch.Generator(device="cpu").manual_seed(0)
    w = torch.randn(KN, KN, generator=g) * 0.02
    b = torch.randn(KN, generator=g) * 0.1
    layer = quant.QuantizedLinear(w.numpy(), b.numpy(), activation="gelu")
    dev = {"qweight": torch.from_numpy(layer.qweight).cuda(), "wscale": torch.from_numpy(layer.wscale).cuda(),
           "bias": b.cuda(), "w16": w.half().cuda(), "b16": b.half().cuda()}
    dev["colsum"] = dev["qweight"].to(torch.int32).sum(dim=1).to(torch.int32)
    dev["w_t"] = dev["qweight"].t()  # [K, N] column-major view, as _int_mm takes it
    dev["wdq"] = torch.from_numpy(layer.dequantized_weight()).cuda().double()
    return layer, dev


def _sync(fn):
    def run():
        out = fn()
        torch.cuda.synchronize()
        return out

    return run


def _int_mm_epilogue(x, dev):
    amax = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
    sa = amax / 127
    q = torch.round(x / sa).clamp(-127, 127).to(torch.int8)
    acc = torch._int_mm(q, dev["w_t"])
    return torch.nn.functional.gelu(acc.float() * sa * dev["wscale"] + dev["bias"])


def _x(m):
    return torch.randn(m, KN, generator=torch.Generator(device="cpu").manual_seed(m)).cuda()


TMA_BENCH_M = 128  # the TMA variants are timed from here (the shipped path takes them from TMA_MIN_M)


def _skip_tma_pair(name, m, tma_name, ptr_name):
    """The forced TMA / pointer variants run side by side from M = 128, the TMA one on Hopper+."""
    if name == tma_name and (m < TMA_BENCH_M or torch.cuda.get_device_capability()[0] < 9):
        pytest.skip("the TMA kernel is timed from M = 128 on Hopper or later")
    if name == ptr_name and m < TMA_BENCH_M:
        pytest.skip("timed beside the TMA kernel from M = 128 (below, the shipped path is this kernel)")


def _time(benchmark, fn, m, y, ref64, name):
    yd = y.double()
    cos = torch.nn.functional.cosine_similarity(yd, ref64, dim=1)
    assert float(cos.min()) > 0.999, (name, float(cos.min()))
    benchmark.extra_info.update(cosine_min_vs_fp64=float(cos.min()), max_abs_err=float((yd - ref64).abs().max()),
                                gop=2 * m * KN * KN / 1e9)
    benchmark.pedantic(_sync(fn), rounds=50, iterations=1, warmup_rounds=5)
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["TOP/s"] = 2 * m * KN * KN / benchmark.stats.stats.median / 1e12


@pytest.mark.gpu
@pytest.mark.parametrize("m", GPU_M)
@pytest.mark.parametrize("name", ["pyperfcore_triton_w8a8", "pyperfcore_triton_w8a8_checked",
                                  "pyperfcore_triton_w8a8_fp16io", "pyperfcore_cuda_w8a8", "pyperfcore_auto_w8a8",
                                  "pyperfcore_ptr_w8a8",
                                  "pyperfcore_tma_w8a8", "torch_int_mm+epilogue", "torch_fp16_addmm+gelu"])
def test_gpu_w8a8_linear(benchmark, gpu_layer, name, m):
    from pyperfcore.kernels import quant_gemm as qg

    layer, dev = gpu_layer
    benchmark.group = f"gpu-w8a8-linear-{m}x{KN}x{KN}-gelu"
    if name == "torch_int_mm+epilogue" and m <= 16:
        pytest.skip("torch._int_mm needs M > 16 on CUDA")
    if name in ("pyperfcore_cuda_w8a8", "pyperfcore_auto_w8a8") and m > qg.FUSED_MAX_M:
        pytest.skip("the CUDA small-M kernel (and the pick between it and Triton) is for M <= 16")
    _skip_tma_pair(name, m, "pyperfcore_tma_w8a8", "pyperfcore_ptr_w8a8")
    x = _x(m)
    x16 = x.half()
    args = (dev["qweight"], dev["wscale"], dev["colsum"], dev["bias"], "gelu")
    tri = "fused" if m <= qg.FUSED_MAX_M else None  # (the Triton kernels, whatever SMALL_M_PATH picks)
    fns = {
        "pyperfcore_triton_w8a8": lambda: qg.linear_w8a8(x, *args, path=tri),
        "pyperfcore_triton_w8a8_checked": lambda: qg.linear_w8a8(x, *args, check_finite=True, path=tri),
        "pyperfcore_cuda_w8a8": lambda: qg.linear_w8a8(x, *args, path="cuda"),
        "pyperfcore_auto_w8a8": lambda: qg.linear_w8a8(x, *args),
        "pyperfcore_ptr_w8a8": lambda: qg.linear_w8a8(x, *args, path="pointer"),
        "pyperfcore_tma_w8a8": lambda: qg.linear_w8a8(x, *args, path="tma"),
        "pyperfcore_triton_w8a8_fp16io": lambda: qg.linear_w8a8(x16, *args, out_dtype=torch.float16, path=tri),
        "torch_int_mm+epilogue": lambda: _int_mm_epilogue(x, dev),
        "torch_fp16_addmm+gelu": lambda: torch.nn.functional.gelu(torch.addmm(dev["b16"], x16, dev["w16"].T)),
    }
    with torch.no_grad():
        ref64 = torch.nn.functional.gelu(x.double() @ dev["wdq"].T + dev["bias"].double())
        y = fns[name]()  # first call: Triton compiles and autotunes here, outside the timing
        torch.cuda.synchronize()
        if name.startswith("pyperfcore"):
            # the integer path exactly: the same codes through fp64 math (fp16 output: one rounding)
            q, sa, zp = qg.quantize_activations(x16 if name.endswith("fp16io") else x)
            acc = (q.double() - zp.double()[:, None]) @ dev["qweight"].double().T
            exp = torch.nn.functional.gelu(acc * (sa.double()[:, None] * dev["wscale"].double()[None, :])
                                           + dev["bias"].double())
            err = float((y.double() - exp).abs().max())
            rel = 1e-3 if y.dtype == torch.float16 else 1e-4
            assert err <= rel * max(1.0, float(exp.abs().max())), err
    _time(benchmark, fns[name], m, y, ref64, name)


@pytest.mark.gpu
@pytest.mark.parametrize("m", GPU_M)
@pytest.mark.parametrize("name", ["pyperfcore_triton_fp16", "pyperfcore_triton_fp16_out16", "pyperfcore_cuda_fp16_out16",
                                  "pyperfcore_auto_fp16_out16",
                                  "pyperfcore_ptr_fp16_out16", "pyperfcore_tma_fp16_out16", "torch_fp16_addmm+gelu"])
def test_gpu_half_linear(benchmark, gpu_layer, name, m):
    from pyperfcore.kernels import quant_gemm as qg

    _, dev = gpu_layer
    benchmark.group = f"gpu-half-linear-{m}x{KN}x{KN}-gelu"
    if name in ("pyperfcore_cuda_fp16_out16", "pyperfcore_auto_fp16_out16") and m > qg.FUSED_MAX_M:
        pytest.skip("the CUDA small-M kernel (and the pick between it and Triton) is for M <= 16")
    _skip_tma_pair(name, m, "pyperfcore_tma_fp16_out16", "pyperfcore_ptr_fp16_out16")
    x16 = _x(m).half()
    fns = {
        "pyperfcore_triton_fp16": lambda: qg.linear_half(x16, dev["w16"], dev["bias"], "gelu", path="triton"),
        "pyperfcore_auto_fp16_out16": lambda: qg.linear_half(x16, dev["w16"], dev["bias"], "gelu",
                                                            out_dtype=torch.float16),
        "pyperfcore_cuda_fp16_out16": lambda: qg.linear_half(x16, dev["w16"], dev["bias"], "gelu",
                                                            out_dtype=torch.float16, path="cuda"),
        "pyperfcore_triton_fp16_out16": lambda: qg.linear_half(x16, dev["w16"], dev["bias"], "gelu",
                                                              out_dtype=torch.float16, path="triton"),
        "pyperfcore_ptr_fp16_out16": lambda: qg.linear_half(x16, dev["w16"], dev["bias"], "gelu",
                                                           out_dtype=torch.float16, path="pointer"),
        "pyperfcore_tma_fp16_out16": lambda: qg.linear_half(x16, dev["w16"], dev["bias"], "gelu",
                                                           out_dtype=torch.float16, path="tma"),
        "torch_fp16_addmm+gelu": lambda: torch.nn.functional.gelu(torch.addmm(dev["b16"], x16, dev["w16"].T)),
    }
    with torch.no_grad():
        ref64 = torch.nn.functional.gelu(x16.double() @ dev["w16"].double().T + dev["bias"].double())
        y = fns[name]()
        torch.cuda.synchronize()
    _time(benchmark, fns[name], m, y, ref64, name)
