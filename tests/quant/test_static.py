"""Static (calibrated) per-tensor activation quantization: the native kernels on every CPU target
against the element-wise oracle, bad input, and optimize(act_quant="static") with each range
method, save/load and torch.export."""
from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyperfcore
from pyperfcore import BackendUnavailable, quant
from pyperfcore._runtime import _core
from tests import reference as ref

TARGETS = pyperfcore.build_info()["cpu_targets_supported"]


@settings(max_examples=40)
@given(m=st.integers(0, 9), k=st.integers(1, 90), seed=st.integers(0, 2**32 - 1), spread=st.floats(1e-3, 1e3),
       clip=st.floats(0.05, 2.0))
def test_static_quantization_exact_every_target(m, k, seed, spread, clip):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, k)) * spread).astype(np.float32)
    # clip < 1 puts the threshold inside the data: the largest values saturate at codes 1 and 255
    scale = float(np.float32(max(float(np.abs(x).max(initial=0.0)), 1e-6) * clip / 127))
    want = ref.quantize_rows_u8_static(x, scale)
    for target in TARGETS:
        q, s, z = _core().quantize_rows_u8_static(x, scale, target)
        np.testing.assert_array_equal(q, want[0], err_msg=target)
        np.testing.assert_array_equal(s, want[1])
        np.testing.assert_array_equal(z, want[2])
    if m and clip < 0.9:
        assert (want[0][:, :k] == 1).any() or (want[0][:, :k] == 255).any()


@settings(max_examples=30)
@given(m=st.sampled_from([1, 2, 5, 6, 7, 13, 40]), k=st.integers(1, 70), n=st.integers(1, 140),
       seed=st.integers(0, 2**32 - 1), act=st.sampled_from(list(quant.ACTIVATIONS)), has_res=st.booleans(),
       layout=st.sampled_from(["contig", "rows", "cols"]))
def test_static_linear_every_target_matches_oracle(m, k, n, seed, act, has_res, layout):
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((n, k)) * rng.uniform(0.01, 3)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    base = (rng.standard_normal((2 * m + 1, k + 5)) * rng.uniform(0.1, 10)).astype(np.float32)
    # every other row (row stride != k), a column window of a wider matrix, or contiguous
    x = {"rows": base[::2][:m, :k], "cols": base[:m, 3:3 + k], "contig": np.ascontiguousarray(base[:m, :k])}[layout]
    res = rng.standard_normal((m, n)).astype(np.float32) if has_res else None
    scale = float(np.float32(np.abs(x).max() * rng.uniform(0.3, 1.5) / 127))
    layer = quant.QuantizedLinear(w, bias, activation=act, act_quant="static", act_scale=scale)
    expected = ref.linear_w8a8(x, layer.qweight, layer.wscale, bias, act, res, static_scale=layer.act_scale)
    tol = {"rtol": 2e-5, "atol": 3e-6 * max(1.0, float(np.abs(expected).max()))}
    for target in TARGETS:
        with pyperfcore.cpu_target(target):
            np.testing.assert_allclose(layer(x, residual=res, backend="cpu"), expected, err_msg=target, **tol)
            if res is None:  # the fast path (no backend, no residual)
                np.testing.assert_allclose(layer(x), expected, err_msg=target, **tol)
    np.testing.assert_allclose(layer(x, residual=res, backend="reference"), expected, **tol)


def test_static_bad_input(rng):
    w = rng.standard_normal((8, 12)).astype(np.float32)
    layer = quant.QuantizedLinear(w, act_quant="static", act_scale=0.02)
    for bad in (np.nan, np.inf, -np.inf):
        x = rng.standard_normal((3, 12)).astype(np.float32)
        x[1, 7] = bad
        for target in TARGETS:
            with pyperfcore.cpu_target(target), pytest.raises(ValueError, match="NaN or infinity"):
                layer(x)
        with pytest.raises(ValueError, match="NaN or infinity"):
            layer(x, backend="reference")
    # a finite value beyond float32 / scale clips like any large value
    x = np.full((2, 12), 3e38, np.float32)
    assert np.array_equal(layer(x), layer(x, backend="reference"))
    with pytest.raises(ValueError, match="needs act_scale"):
        quant.QuantizedLinear(w, act_quant="static")
    with pytest.raises(ValueError, match="act_quant='static' only"):
        quant.QuantizedLinear(w, act_scale=0.1)
    with pytest.raises(ValueError, match="int8' only"):
        quant.QuantizedLinear(w, dtype="float16", act_quant="static", act_scale=0.1)
    for s in (0.0, -1.0, float("nan"), float("inf"), 1e-45):
        with pytest.raises(ValueError, match="finite float32 > 0"):
            quant.QuantizedLinear(w, act_quant="static", act_scale=s)
    with pytest.raises(TypeError):
        quant.QuantizedLinear(w, act_quant="static", act_scale="big")
    for s in (0.0, float("nan")):
        with pytest.raises(ValueError, match="scale must be finite"):
            _core().quantize_rows_u8_static(np.ones((2, 3), np.float32), s)
    assert layer(np.zeros((0, 12), np.float32)).shape == (0, 8)
    # the saved state carries the scale
    back = quant.QuantizedLinear.from_state(layer.state_dict(), layer.config())
    assert back.act_scale == layer.act_scale
    x = rng.standard_normal((4, 12)).astype(np.float32)
    assert np.array_equal(back(x), layer(x))


torch = pytest.importorskip("torch")
nn = torch.nn


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(48, 96), nn.GELU(), nn.Linear(96, 48)).eval()


def test_optimize_static_each_method(tmp_path):
    m = _mlp()
    g = torch.Generator().manual_seed(1)
    cal = [torch.randn(32, 48, generator=g) for _ in range(4)]
    x = torch.randn(64, 48, generator=g)
    with torch.no_grad():
        want = m(x)
    for method in ("entropy", "percentile", "mse", "minmax"):
        q = quant.optimize(copy.deepcopy(m), act_quant="static", calibration=cal, calib_method=method)
        layers = quant.torch_ops.quantized_layers(q)
        assert all(layer.act_quant == "static" for layer in layers.values())
        # the first layer's scale is exactly the calibrated range of its inputs / 127
        t = quant.calibrate([c.numpy() for c in cal], method)
        assert float(layers["0"].act_scale) == pytest.approx(t / 127, rel=1e-6)
        with torch.no_grad():
            y = q(x)
        assert quant.accuracy_report(want, y).cosine_min > 0.99, method
        # the static layers run one by one (the native MLP call quantizes per token)
        assert "_pfc_chains" not in q.__dict__
        with torch.no_grad():
            h = torch.from_numpy(ref.linear_w8a8(x.numpy(), layers["0"].qweight.numpy(), layers["0"].wscale.numpy(),
                                                 layers["0"].bias.numpy(), "gelu",
                                                 static_scale=float(layers["0"].act_scale)))
            want_q = ref.linear_w8a8(h.numpy(), layers["2"].qweight.numpy(), layers["2"].wscale.numpy(),
                                     layers["2"].bias.numpy(), static_scale=float(layers["2"].act_scale))
        np.testing.assert_allclose(y.numpy(), want_q, rtol=1e-4, atol=1e-4)
    quant.save(q, tmp_path / "s")
    back = quant.load(_mlp(), tmp_path / "s")
    with torch.no_grad():
        assert torch.equal(back(x), q(x))
    ep = torch.export.export(q, (x,))
    assert torch.allclose(ep.module()(x), y)


def test_entropy_clips_rare_outliers_that_minmax_keeps():
    m = _mlp()
    g = torch.Generator().manual_seed(2)
    cal = [torch.randn(64, 48, generator=g) for _ in range(4)]
    cal[2][5, 3] = 80.0  # one outlier in 12k values
    s = {meth: float(quant.torch_ops.quantized_layers(
        quant.optimize(copy.deepcopy(m), act_quant="static", calibration=cal, calib_method=meth))["0"].act_scale)
        for meth in ("minmax", "entropy", "percentile")}
    assert s["minmax"] == pytest.approx(80.0 / 127, rel=1e-6)
    assert s["entropy"] < s["minmax"] / 4 and s["percentile"] < s["minmax"] / 4


def test_optimize_static_with_smoothing_calibrates_the_smoothed_inputs():
    m = _mlp()
    g = torch.Generator().manual_seed(3)
    cal = [torch.randn(32, 48, generator=g) * torch.linspace(0.1, 20, 48) for _ in range(3)]
    q = quant.optimize(copy.deepcopy(m), act_quant="static", calibration=cal, calib_method="minmax", smooth_alpha=0.5)
    first = quant.torch_ops.quantized_layers(q)["0"]
    seen = torch.cat(cal) * first.inv_smooth  # what the kernel quantizes
    assert float(first.act_scale) == pytest.approx(float(seen.abs().max()) / 127, rel=1e-5)
    x = torch.randn(16, 48, generator=g) * torch.linspace(0.1, 20, 48)
    with torch.no_grad():
        assert quant.accuracy_report(m(x), q(x)).cosine_min > 0.99


def test_optimize_static_errors():
    m = _mlp()
    with pytest.raises(ValueError, match="needs calibration"):
        quant.optimize(copy.deepcopy(m), act_quant="static")
    with pytest.raises(ValueError, match="needs calibration"):
        quant.optimize(copy.deepcopy(m), dtype="fp16", act_quant="static", calibration=[torch.randn(2, 48)])
    with pytest.raises(ValueError, match="calib_method"):
        quant.optimize(copy.deepcopy(m), act_quant="static", calibration=[torch.randn(2, 48)], calib_method="kl")
    with pytest.raises(ValueError, match="act_quant"):
        quant.optimize(copy.deepcopy(m), act_quant="dynamic")
    with pytest.raises(ValueError, match="empty"):
        quant.optimize(copy.deepcopy(m), act_quant="static", calibration=[])
    bad = torch.randn(4, 48)
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        quant.optimize(copy.deepcopy(m), act_quant="static", calibration=[bad])
    q = quant.optimize(copy.deepcopy(m), act_quant="static", calibration=[torch.randn(4, 48)])
    x = torch.randn(3, 48)
    x[1, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinity"), torch.no_grad():
        q(x)


def test_static_refuses_the_gpu_backend():
    layer = quant.QuantizedLinear(np.ones((4, 8), np.float32), act_quant="static", act_scale=0.1)
    from pyperfcore.quant.linear import _w8a8_triton

    with pytest.raises(BackendUnavailable, match="CPU backends only"):
        _w8a8_triton(layer, np.ones((2, 8), np.float32), None, 0)


def test_static_custom_op_opcheck_and_export_graph():
    m = _mlp()
    g = torch.Generator().manual_seed(4)
    q = quant.optimize(copy.deepcopy(m), act_quant="static", calibration=[torch.randn(8, 48, generator=g)])
    x = torch.randn(5, 48, generator=g)
    first = q[0]
    torch.library.opcheck(torch.ops.pyperfcore.w8a8_linear_static.default,
                          (x, first.qweight, first.wscale, first.act_scale, first.bias, None, "gelu"))
    ep = torch.export.export(q, (x,))
    assert ep.graph_module.code.count("pyperfcore.w8a8_linear_static") == 2
    with torch.no_grad():
        torch.testing.assert_close(ep.module()(x), q(x), rtol=0, atol=0)


def test_optimize_act_quant_per_layer_patterns():
    m = _mlp()
    g = torch.Generator().manual_seed(5)
    cal = [torch.randn(16, 48, generator=g) for _ in range(2)]
    q = quant.optimize(copy.deepcopy(m), act_quant={"2": "symmetric", "*": "static"}, calibration=cal)
    layers = quant.torch_ops.quantized_layers(q)
    assert layers["0"].act_quant == "static" and layers["0"].act_scale is not None
    assert layers["2"].act_quant == "symmetric" and layers["2"].act_scale is None
    # unmatched layers are asymmetric; no static layer means no calibration is needed
    q2 = quant.optimize(copy.deepcopy(m), act_quant={"0": "symmetric"})
    assert [lay.act_quant for lay in quant.torch_ops.quantized_layers(q2).values()] == ["symmetric", "asymmetric"]
    x = torch.randn(7, 48, generator=g)
    with torch.no_grad():
        assert quant.accuracy_report(m(x), q(x)).cosine_min > 0.99
    with pytest.raises(ValueError, match="act_quant"):
        quant.optimize(copy.deepcopy(m), act_quant={"0": "dynamic"})
    with pytest.raises(ValueError, match="needs calibration"):
        quant.optimize(copy.deepcopy(m), act_quant={"0": "static"})
