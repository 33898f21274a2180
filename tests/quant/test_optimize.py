"""optimize() on torch modules, torch.library ops under torch.export/compile, save/load,
calibration and the accuracy report."""
from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pyperfcore import quant
from tests import reference as ref

torch = pytest.importorskip("torch")
nn = torch.nn


def _mlp(seed: int = 0, act: nn.Module | None = None) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(48, 96), act or nn.GELU(), nn.Linear(96, 48))


class Block(nn.Module):
    """A module with its own method and a Hugging Face-style dense + intermediate_act_fn pair."""

    def __init__(self) -> None:
        super().__init__()
        self.dense = nn.Linear(32, 64)
        self.intermediate_act_fn = nn.GELU()
        self.out = nn.Linear(64, 32)

    def forward(self, x):
        return self.out(self.intermediate_act_fn(self.dense(x))) + x

    def encode(self, x):
        return self.forward(x).sum(-1)


def test_optimize_replaces_in_place_and_fuses(rng):
    m = _mlp()
    x = torch.from_numpy(rng.standard_normal((7, 48)).astype(np.float32))
    with torch.no_grad():
        expected = m(x)
    out = quant.optimize(m)
    assert out is m
    assert isinstance(m[0], quant.torch_ops.QLinear) and m[0].activation == "gelu"
    assert isinstance(m[1], nn.Identity) and isinstance(m[2], quant.torch_ops.QLinear)
    with torch.no_grad():
        y = m(x)
    rep = quant.accuracy_report(expected, y)
    assert rep.cosine_min > 0.999
    # Exactly the kernel math: layer 0 (GELU fused) then layer 2 from its own oracle.
    h = ref.linear_w8a8(x.numpy(), m[0].qweight.numpy(), m[0].wscale.numpy(), m[0].bias.numpy(), "gelu")
    y_ref = ref.linear_w8a8(h.astype(np.float32), m[2].qweight.numpy(), m[2].wscale.numpy(), m[2].bias.numpy())
    np.testing.assert_allclose(y.numpy(), y_ref, rtol=1e-4, atol=1e-4)


def _one_by_one(seq: nn.Module, x: torch.Tensor) -> torch.Tensor:
    for mod in seq:
        x = mod(x)
    return x


def test_mlp_chains_run_as_one_native_call_with_the_same_bits(rng, monkeypatch):
    torch.manual_seed(3)
    m = nn.Sequential(nn.Linear(40, 72), nn.ReLU(), nn.Linear(72, 56), nn.GELU(), nn.Linear(56, 24))
    quant.optimize(m)
    assert type(m) is nn.Sequential and m.__dict__["_pfc_chains"].keys() == {0}
    calls = []
    real = quant.torch_ops._mlp_eager
    monkeypatch.setattr(quant.torch_ops, "_mlp_eager", lambda a, b, x: calls.append(1) or real(a, b, x))
    for shape in [(1, 40), (9, 40), (2, 5, 40), (0, 40)]:
        x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32) * 3)
        with torch.inference_mode():
            y = m(x)
            torch.testing.assert_close(y, _one_by_one(m, x), rtol=0, atol=0)  # layer by layer
        assert y.shape == (*shape[:-1], 24)
    xt = torch.from_numpy(rng.standard_normal((40, 7)).astype(np.float32)).T  # non-contiguous
    with torch.no_grad():
        torch.testing.assert_close(m(xt), _one_by_one(m, xt), rtol=0, atol=0)
    assert len(calls) == 5
    # a hook on a layer of the run must see its own output: the run falls back to the modules
    seen = []
    h = m[0].register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    with torch.no_grad():
        torch.testing.assert_close(m(xt), _one_by_one(m, xt), rtol=0, atol=0)
    h.remove()
    assert seen == [(7, 72), (7, 72)] and len(calls) == 5
    # an edited Sequential (the run's second layer replaced) is never run as the old run
    # pickling (torch.save of the module) keeps the results; the copy runs layer by layer until
    # fuse_mlp_chains() is called on it
    m2 = pickle.loads(pickle.dumps(m))
    with torch.no_grad():
        torch.testing.assert_close(m2(xt), m(xt), rtol=0, atol=0)
    assert len(calls) == 6
    assert quant.torch_ops.fuse_mlp_chains(m2) == 1
    with torch.no_grad():
        torch.testing.assert_close(m2(xt), m(xt), rtol=0, atol=0)
    assert len(calls) == 8
    m2 = copy.deepcopy(m)
    assert m2.forward.__self__ is m2
    m2[2] = nn.Linear(72, 56)
    with torch.no_grad():
        torch.testing.assert_close(m2(xt), _one_by_one(m2, xt), rtol=0, atol=0)
    assert len(calls) == 8
    # other dtypes and torch.export take the per-layer path (the custom ops stay visible)
    with torch.no_grad():
        torch.testing.assert_close(m(xt.double()), _one_by_one(m, xt.double()), rtol=0, atol=0)
    ep = torch.export.export(m, (xt.contiguous(),))
    assert ep.graph_module.code.count("pyperfcore.w8a8_linear") == 3
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(xt.contiguous()), m(xt), rtol=0, atol=0)
    assert len(calls) == 9


def test_mlp_chain_follows_in_place_weight_updates(rng):
    m = quant.optimize(_mlp())
    x = torch.from_numpy(rng.standard_normal((4, 48)).astype(np.float32))
    with torch.no_grad():
        y0 = m(x)
        m[2].qweight.mul_(-1)
        y1 = m(x)
    torch.testing.assert_close(y1, _one_by_one(m, x), rtol=0, atol=0)
    assert not torch.equal(y0, y1)


def test_optimize_keeps_class_methods_exclude_and_hf_pattern(rng):
    b = Block()
    x = torch.from_numpy(rng.standard_normal((3, 5, 32)).astype(np.float32))
    with torch.no_grad():
        e = b.encode(x)
    quant.optimize(b, exclude=["out"])
    assert isinstance(b, Block) and type(b.out) is nn.Linear
    assert b.dense.activation == "gelu" and isinstance(b.intermediate_act_fn, nn.Identity)
    with torch.no_grad():
        np.testing.assert_allclose(b.encode(x).numpy(), e.numpy(), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("dtype", ["fp16", "bf16"])
def test_optimize_half(dtype, rng):
    m = _mlp(act=nn.SiLU())
    x = torch.from_numpy(rng.standard_normal((4, 48)).astype(np.float32))
    with torch.no_grad():
        e = m(x)
        quant.optimize(m, dtype=dtype)
        y = m(x)
    assert m[0].weight.dtype == (torch.float16 if dtype == "fp16" else torch.bfloat16)
    np.testing.assert_allclose(y.numpy(), e.numpy(), rtol=2e-2, atol=1e-2)


def test_optimize_errors():
    with pytest.raises(ValueError, match="dtype"):
        quant.optimize(_mlp(), dtype="int4")
    with pytest.raises(TypeError):
        quant.optimize(np.zeros(3))
    with pytest.raises(ValueError, match="empty"):
        quant.optimize(_mlp(), calibration=[], smooth_alpha=0.5)
    with pytest.raises(ValueError, match="calibration"):
        quant.optimize(_mlp(), smooth_alpha=0.5)
    m = _mlp()
    with torch.no_grad():
        m[2].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="2"):
        quant.optimize(m)


def test_smoothquant_calibration_reduces_error(rng):
    torch.manual_seed(1)
    m = nn.Sequential(nn.Linear(64, 64))
    xs = rng.standard_normal((64, 64)).astype(np.float32)
    xs[:, 3] *= 80
    x = torch.from_numpy(xs)
    with torch.no_grad():
        e = m(x)
    m_plain = nn.Sequential(nn.Linear(64, 64))
    m_plain.load_state_dict(m.state_dict())
    quant.optimize(m_plain)
    quant.optimize(m, calibration=[x[:32], x[32:]], smooth_alpha=0.5)
    assert m[0].inv_smooth is not None
    with torch.no_grad():
        err_smooth = (m(x) - e).norm()
        err_plain = (m_plain(x) - e).norm()
    assert err_smooth < err_plain


def test_torch_export_and_custom_op(rng):
    m = quant.optimize(_mlp())
    x = torch.from_numpy(rng.standard_normal((5, 48)).astype(np.float32))
    with torch.no_grad():
        y = m(x)
    ep = torch.export.export(m, (x,))
    assert "pyperfcore.w8a8_linear" in ep.graph_module.code
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), y, rtol=0, atol=0)
    torch.library.opcheck(torch.ops.pyperfcore.w8a8_linear.default,
                          (x, m[0].qweight, m[0].wscale, m[0].bias, None, "gelu", False))


@pytest.mark.slow
def test_torch_compile(rng):
    m = quant.optimize(_mlp())
    x = torch.from_numpy(rng.standard_normal((5, 48)).astype(np.float32))
    with torch.no_grad():
        y = m(x)
        yc = torch.compile(m, fullgraph=True)(x)
    torch.testing.assert_close(yc, y, rtol=0, atol=0)


def test_pack_cache_follows_in_place_weight_updates(rng):
    m = quant.optimize(_mlp())
    x = torch.from_numpy(rng.standard_normal((2, 48)).astype(np.float32))
    with torch.no_grad():
        before = m(x)
        m[2].qweight.mul_(0)  # bumps the tensor version: the packed copy must be rebuilt
        after = m(x)
    assert not torch.equal(before, after)
    torch.testing.assert_close(after, m[2].bias.expand(2, -1))


def test_save_load_roundtrip(tmp_path, rng):
    m = quant.optimize(_mlp(3), calibration=[torch.randn(4, 48)], smooth_alpha=0.6)
    fresh = _mlp(3)
    quant.save(m, tmp_path)
    meta = json.loads((tmp_path / "quant.json").read_text())
    assert meta["layers"]["0"]["fused_from"] == "1"
    quant.load(fresh, tmp_path)
    assert ("forward" in vars(fresh)) == ("forward" in vars(m))  # load() fuses the MLP chains as optimize() does
    x = torch.from_numpy(rng.standard_normal((6, 48)).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), m(x), rtol=0, atol=0)
    layers = quant.io.load_layers(tmp_path)  # torch-free path
    np.testing.assert_array_equal(layers["0"].qweight, m[0].qweight.numpy())


def test_save_load_half_and_mismatch(tmp_path):
    m = quant.optimize(_mlp(), dtype="bf16")
    quant.save(m, tmp_path)
    other = nn.Sequential(nn.Linear(48, 95), nn.GELU(), nn.Linear(95, 48))
    with pytest.raises(ValueError, match="does not match"):
        quant.load(other, tmp_path)
    with pytest.raises(ValueError, match="no quantized layers"):
        quant.save(_mlp(), tmp_path / "x")


@given(st.data())
@settings(max_examples=40)
def test_malformed_files_are_rejected(tmp_path_factory, data):
    d = tmp_path_factory.mktemp("q")
    layer = quant.QuantizedLinear(np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32), np.ones(5))
    quant.io.save_layers({"l": layer}, d)
    which = data.draw(st.sampled_from(["quant.safetensors", "quant.json"]))
    raw = bytearray((d / which).read_bytes())
    n = data.draw(st.integers(1, 8))
    for _ in range(n):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        raw = raw[: data.draw(st.integers(0, len(raw)))]
    (d / which).write_bytes(bytes(raw))
    try:
        layers = quant.io.load_layers(d)
    except ValueError:
        return
    # Whatever still loads is a valid layer that computes without error.
    for lay in layers.values():
        assert np.isfinite(lay(np.ones((2, lay.in_features), np.float32))).all()


# ------------------------------------------------------------------ calibration
def test_calibration_methods(rng):
    x = rng.standard_normal(200_000).astype(np.float32)
    x[:5] = 40.0  # a few outliers
    batches = [x[:100_000], x[100_000:]]
    assert quant.calibrate(batches, "minmax") == pytest.approx(40.0)
    p = quant.calibrate(batches, "percentile", percentile=99.9)
    assert p == pytest.approx(np.percentile(np.abs(x), 99.9), rel=1e-6)
    t = quant.calibrate(batches, "entropy")
    assert 2.0 < t < 20.0, t  # clips the outliers, keeps the Gaussian bulk
    t = quant.calibrate(batches, "mse")

    def mse(th):
        s = th / 127
        return float(np.mean((x - np.clip(np.rint(x / s), -127, 127) * s) ** 2))

    assert t < 40.0 and mse(t) <= mse(40.0) * 1.01
    assert mse(t) <= min(mse(th) for th in np.linspace(2, 40, 39)) * 1.05  # near the best threshold


def test_calibration_errors():
    with pytest.raises(ValueError, match="empty"):
        quant.calibrate([], "minmax")
    with pytest.raises(ValueError, match="empty"):
        quant.calibrate([np.zeros(0)], "entropy")
    with pytest.raises(ValueError, match="NaN"):
        quant.calibrate([np.array([1.0, np.nan])])
    with pytest.raises(ValueError, match="method"):
        quant.calibrate([np.ones(3)], "kl")
    assert quant.calibrate([np.zeros(10)], "mse") == 0.0


def test_smooth_factors_formula(rng):
    w = rng.standard_normal((6, 4)).astype(np.float32)
    xa = np.array([1.0, 50.0, 0.0, 3.0], np.float32)
    s = quant.smooth_factors(xa, w, alpha=0.5)
    wa = np.abs(w).max(0)
    np.testing.assert_allclose(s[[0, 1, 3]], np.sqrt(xa[[0, 1, 3]]) / np.sqrt(wa[[0, 1, 3]]), rtol=1e-6)
    assert s[2] == 1.0
    with pytest.raises(ValueError):
        quant.smooth_factors(xa, w, alpha=1.5)


def test_accuracy_report(tmp_path, rng):
    r = rng.standard_normal((20, 16))
    c = r + 0.01 * rng.standard_normal((20, 16))
    rep = quant.accuracy_report(r, c, layers={"fc": (r[:, :4], c[:, :4])}, speedup=3.0)
    assert 0.999 < rep.cosine_mean <= 1.0 and rep.nn_agreement == 1.0 and rep.meets()
    assert "fc" in rep.table() and "cosine" in rep.table()
    assert json.loads(rep.to_json(tmp_path / "r.json"))["layers"]["fc"]["cosine_min"] > 0.99
    bad = quant.accuracy_report(r, -r)
    assert bad.cosine_mean == pytest.approx(-1.0) and not bad.meets()
    with pytest.raises(ValueError, match="shape"):
        quant.accuracy_report(r, r[:3])


def test_optimize_per_tensor_weights_round_trip(tmp_path, rng):
    m = _mlp(3)
    x = torch.from_numpy(rng.standard_normal((5, 48)).astype(np.float32))
    with torch.no_grad():
        expected = m(x)
    quant.optimize(m, weight_quant="tensor")
    for layer in quant.torch_ops.quantized_layers(m).values():
        assert torch.unique(layer.wscale).numel() == 1  # one scale per matrix
    with torch.no_grad():
        y = m(x)
    assert quant.accuracy_report(expected, y).cosine_min > 0.99
    quant.save(m, tmp_path / "t")
    fresh = quant.load(_mlp(3), tmp_path / "t")
    with torch.no_grad():
        assert torch.equal(fresh(x), y)
    with pytest.raises(ValueError, match="weight_quant"):
        quant.optimize(_mlp(), dtype="fp16", weight_quant="tensor")


def test_sensitivity_finds_the_outlier_layer_and_meets_budget(rng):
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 16))
    with torch.no_grad():
        m[2].weight[:, 7] *= 400  # per-output-channel scales now crush the other 63 inputs of layer 2
    x = torch.from_numpy(rng.standard_normal((64, 32)).astype(np.float32))
    res = quant.sensitivity(m, x, min_cosine=0.9999)
    assert res.ranking[0] == "2"
    assert set(res.layers) == {"0", "2", "4"}
    assert res.met and res.excluded and res.excluded[0] == "2" and res.final["cosine_min"] >= 0.9999
    assert type(m[2]) is nn.Linear  # the model itself is untouched
    table = res.table()
    assert table.splitlines()[1].startswith("2 ") and "yes" in table.splitlines()[1] and "met" in table
    back = json.loads(res.to_json())
    assert back["excluded"] == res.excluded and back["budget"] == {"min_cosine": 0.9999}
    # a budget on the mean alone: met with the float layers it needs, checked against a re-run
    mean = quant.sensitivity(m, x, min_cosine_mean=0.99999)
    assert mean.met and mean.final["cosine_mean"] >= 0.99999
    check = quant.optimize(copy.deepcopy(m), exclude=mean.excluded)
    with torch.no_grad():
        assert quant.accuracy_report(m(x), check(x)).cosine_mean == pytest.approx(mean.final["cosine_mean"])
    with pytest.raises(ValueError, match="min_cosine"):
        quant.sensitivity(m, x, min_cosine=2.0)


def test_equivalence_declared_tolerances(rng):
    w = rng.standard_normal((16, 24)).astype(np.float32)
    x = rng.standard_normal((40, 24)).astype(np.float32)
    layer = quant.QuantizedLinear(w)
    ok = quant.equivalence(lambda v: v @ w.T, layer, x, atol=1.0)
    assert ok and not ok.failures
    bad = quant.equivalence(lambda v: v @ w.T, layer, x, atol=1e-6)
    assert not bad and "atol" in bad.failures[0]
    worse = quant.equivalence(lambda v: v @ w.T, lambda v: rng.standard_normal((40, 16)), x)
    assert not worse and any("cosine" in f for f in worse.failures)


def test_onnx_export_matches_torch_and_optimized(tmp_path, rng):
    ort = pytest.importorskip("onnxruntime")
    m = _mlp(5)
    x = torch.from_numpy(rng.standard_normal((8, 48)).astype(np.float32))
    torch.onnx.export(m, (x,), str(tmp_path / "m.onnx"), input_names=["x"], output_names=["y"], dynamo=False)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    run_onnx = lambda v: sess.run(None, {"x": v.numpy()})[0]  # noqa: E731
    with torch.no_grad():
        assert quant.equivalence(lambda v: m(v), run_onnx, x, atol=1e-4, min_cosine=0.99999)
        opt = quant.optimize(copy.deepcopy(m))
        assert quant.equivalence(run_onnx, lambda v: opt(v), x, min_cosine=0.999, embeddings=False)


def test_registry_stores_and_serves_the_int8_version(tmp_path, rng):
    from pyperfcore.ops import Registry
    from pyperfcore.quant import io as qio

    m = quant.optimize(_mlp(4))
    reg = Registry(tmp_path / "reg", user="test")
    mv = qio.register(reg, "mlp-int8", m, metadata={"metrics": {"cosine_min": 0.999}})
    assert set(mv.manifest) == {"quant.safetensors", "quant.json"}
    reg.promote("mlp-int8", mv.version, reason="test")
    served = qio.load_registered(reg, "mlp-int8", _mlp(4), "production")
    x = torch.from_numpy(rng.standard_normal((6, 48)).astype(np.float32))
    with torch.no_grad():
        assert torch.equal(served(x), m(x))
    assert isinstance(served[0], quant.torch_ops.QLinear) and isinstance(served[1], nn.Identity)
    # a tampered stored artifact is refused by the registry's checksum, not loaded
    blob = reg.artifact_path("mlp-int8", mv.version, "quant.safetensors")
    blob.chmod(0o644)
    data = bytearray(blob.read_bytes())
    data[-1] ^= 0xFF
    blob.write_bytes(bytes(data))
    with pytest.raises(Exception, match="(?i)sha|integrity|checksum"):
        qio.load_registered(reg, "mlp-int8", _mlp(4), mv.version)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_custom_ops_half_activations_give_half_outputs(dtype, rng):
    """The ops' output type follows x: float16/bfloat16 x gives y of that type (on CUDA the kernels
    read and write it directly; here the CPU kernels run on x widened to fp32 and y is rounded once).
    The half result is the fp32 result on the same (widened) input, rounded once; the fake kernels
    declare the same type, so torch.compile/export see it; opcheck covers all three ops."""
    m = _mlp()
    q8 = quant.optimize(copy.deepcopy(m))
    q16 = quant.optimize(copy.deepcopy(m), dtype="fp16")
    x = torch.from_numpy(rng.standard_normal((5, 48)).astype(np.float32)).to(dtype)
    r = torch.from_numpy(rng.standard_normal((5, 96)).astype(np.float32)).to(dtype)
    l8, l16 = q8[0], q16[0]
    qs = quant.optimize(copy.deepcopy(m), act_quant="static", calibration=[torch.randn(8, 48)])
    ls = qs[0]
    cases = [(torch.ops.pyperfcore.w8a8_linear.default, (l8.qweight, l8.wscale, l8.bias), ("gelu", False)),
             (torch.ops.pyperfcore.half_linear.default, (l16.weight, l16.bias), ("gelu",)),
             (torch.ops.pyperfcore.w8a8_linear_static.default, (ls.qweight, ls.wscale, ls.act_scale, ls.bias), ("gelu",))]
    for op, weights, tail in cases:
        y = op(x, *weights, r, *tail)
        assert y.dtype == dtype and y.shape == (5, 96)
        y32 = op(x.float(), *weights, r.float(), *tail)
        torch.testing.assert_close(y, y32.to(dtype), rtol=0, atol=0)
        torch.library.opcheck(op, (x, *weights, r, *tail))
    # the modules: half in, half out (each layer's output is rounded to the half type, as in any
    # half-precision model, so only close to the fp32 run)
    with torch.no_grad():
        y_mod = q8(x)
        ref_mod = q8(x.float())
    assert y_mod.dtype == dtype
    tol = 1e-2 if dtype == torch.float16 else 4e-2
    torch.testing.assert_close(y_mod.float(), ref_mod, rtol=tol, atol=tol)


@pytest.mark.parametrize("kind", ["int8", "fp16", "bf16"])
def test_qlinear_cuda_eager_path_matches_the_custom_op_wiring(kind, rng):
    """QLinear on CUDA tensors in plain eager mode calls the GPU kernels directly (no dispatcher
    hop). Its wiring, run here with CPU tensors through the Triton interpreter: the same weights,
    scales, column sums, bias, activation, residual and quantization mode reach the kernel, so it
    agrees with the CPU kernels (same codes and integer sums for INT8; same rounded operands for
    the half types), and half inputs give half outputs."""
    from pyperfcore.kernels import quant_gemm as qg

    prev, qg.AUTOTUNE = qg.AUTOTUNE, False
    try:
        m = quant.optimize(_mlp(), dtype=kind, act_quant="symmetric" if kind == "int8" else "asymmetric")
        lin = m[0]
        x = torch.from_numpy(rng.standard_normal((3, 48)).astype(np.float32))
        r = torch.from_numpy(rng.standard_normal((3, 96)).astype(np.float32))
        # (the GPU kernels round x to a half weight's type, as an fp16 model does; the CPU ones
        # compute with fp32 x: give both the rounded x)
        xr = x if kind == "int8" else x.to(torch.float16 if kind == "fp16" else torch.bfloat16).float()
        with torch.no_grad():
            cpu = lin._eager_cpu(xr, r)
            gpu_wiring = lin._eager_cuda(x, r)
            half = lin._eager_cuda(x.half(), r)
        assert gpu_wiring.dtype == torch.float32 and half.dtype == torch.float16
        torch.testing.assert_close(gpu_wiring, cpu, rtol=2e-5, atol=2e-5)
        torch.testing.assert_close(half.float(), lin._eager_cuda(x.half().float(), r), rtol=1e-3, atol=1e-3)
    finally:
        qg.AUTOTUNE = prev
