"""W8A8 and FP16/BF16 linear layers: every CPU target and backend against the numpy oracle."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyperfcore
from pyperfcore import BackendUnavailable, quant
from pyperfcore._runtime import _core
from tests import reference as ref

ACTS = list(quant.ACTIVATIONS)
TARGETS = pyperfcore.build_info()["cpu_targets_supported"]


def _tol(expected: np.ndarray) -> dict:
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    return {"rtol": 2e-5, "atol": 3e-6 * scale}


def _noncontiguous(rng, m: int, k: int, kind: str) -> np.ndarray:
    base = (rng.standard_normal((m * 2 + 1, k + 5)) * rng.uniform(0.1, 20)).astype(np.float32)
    if kind == "rows":  # every other row: row stride != k
        return base[::2][:m, :k]
    if kind == "cols":  # a column window of a wider matrix
        return base[:m, 3 : 3 + k]
    return np.ascontiguousarray(base[:m, :k])


@st.composite
def problems(draw):
    m = draw(st.sampled_from([0, 1, 2, 3, 5, 6, 7, 13]))
    k = draw(st.integers(1, 70))
    n = draw(st.integers(1, 140))
    seed = draw(st.integers(0, 2**32 - 1))
    return m, k, n, seed, draw(st.sampled_from(ACTS)), draw(st.booleans()), draw(st.booleans()), \
        draw(st.booleans()), draw(st.sampled_from(["contig", "rows", "cols"]))


@given(problems())
def test_w8a8_every_target_matches_oracle(p):
    m, k, n, seed, act, has_bias, has_res, symmetric, layout = p
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32) * np.float32(rng.uniform(0.01, 3))
    bias = rng.standard_normal(n).astype(np.float32) if has_bias else None
    x = _noncontiguous(rng, m, k, layout)
    res = rng.standard_normal((m, n)).astype(np.float32) if has_res else None
    layer = quant.QuantizedLinear(w, bias, activation=act, act_quant="symmetric" if symmetric else "asymmetric")
    expected = ref.linear_w8a8(x, layer.qweight, layer.wscale, bias, act, res, symmetric)
    for target in TARGETS:
        with pyperfcore.cpu_target(target):
            y = layer(x, residual=res, backend="cpu")
        assert y.shape == (m, n) and y.dtype == np.float32
        np.testing.assert_allclose(y, expected, err_msg=f"target={target}", **_tol(expected))
    y = layer(x, residual=res, backend="reference")
    np.testing.assert_allclose(y, expected, **_tol(expected))


@given(st.integers(1, 20), st.integers(1, 300), st.integers(1, 200), st.integers(0, 2**32 - 1))
def test_int8_gemm_exact_every_target(m, k, n, seed):
    rng = np.random.default_rng(seed)
    wq = rng.integers(-127, 128, (n, k), dtype=np.int8)
    packed = _core().PackedInt8.from_int8(wq, np.ones(n, np.float32))
    a = rng.integers(0, 256, (m, packed.kp), dtype=np.uint8)
    expected = a[:, :k].astype(np.int64) @ wq.T.astype(np.int64)
    for target in TARGETS:
        c = _core().gemm_u8s8(a, packed, target)
        np.testing.assert_array_equal(c, expected, err_msg=f"target={target}")


class _amx:
    """Context manager: allow or forbid AMX tiles in the avx512_vnni INT8 GEMM and pick the AMX
    blocking (2x2 tiles over 32-row blocks, or 16-row blocks), restoring both settings."""

    def __init__(self, on: bool, blocked: bool = True):
        self.on, self.blocked = on, blocked

    def __enter__(self):
        self.prev = _core().amx_enabled() or not _core().amx_available()
        self.prev_blocked = _core().amx_blocking()
        _core().set_amx_enabled(self.on)
        _core().set_amx_blocking(self.blocked)

    def __exit__(self, *exc):
        _core().set_amx_enabled(self.prev)
        _core().set_amx_blocking(self.prev_blocked)


# (AMX on, 2x2 blocking), (AMX on, 16-row blocks), AMX off: every GEMM path of avx512_vnni.
AMX_MODES = ((True, True), (True, False), (False, True))


# AMX runs for m >= 8 (32-row 2x2 blocks or 16-row blocks, partial last block of 1-31 rows, K tail
# after the last 64-byte step by VPDPBUSD); without AMX on this CPU every setting takes the
# VPDPBUSD path and still faces the oracle.
@given(st.integers(1, 80), st.integers(1, 300), st.integers(1, 200), st.integers(0, 2**32 - 1), st.sampled_from([1, 2]))
def test_int8_gemm_exact_amx_and_vnni(m, k, n, seed, threads):
    rng = np.random.default_rng(seed)
    wq = rng.integers(-127, 128, (n, k), dtype=np.int8)
    packed = _core().PackedInt8.from_int8(wq, np.ones(n, np.float32))
    a = rng.integers(0, 256, (m, packed.kp), dtype=np.uint8)
    expected = a[:, :k].astype(np.int64) @ wq.T.astype(np.int64)
    for on, blocked in AMX_MODES:
        with _amx(on, blocked):
            c = _core().gemm_u8s8(a, packed, TARGETS[-1], threads)
        np.testing.assert_array_equal(c, expected, err_msg=f"amx={on} blocked={blocked} target={TARGETS[-1]}")


@given(st.integers(8, 70), st.integers(1, 200), st.integers(1, 140), st.integers(0, 2**32 - 1), st.sampled_from(ACTS),
       st.booleans())
def test_w8a8_amx_bit_identical_to_vnni(m, k, n, seed, act, has_res):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    x = _noncontiguous(rng, m, k, "rows")
    res = rng.standard_normal((m, n)).astype(np.float32) if has_res else None
    layer = quant.QuantizedLinear(w, bias, activation=act)
    expected = ref.linear_w8a8(x, layer.qweight, layer.wscale, bias, act, res, False)
    out = {}
    for mode in AMX_MODES:
        with _amx(*mode), pyperfcore.cpu_target(TARGETS[-1]):
            out[mode] = layer(x, residual=res, backend="cpu")
        np.testing.assert_allclose(out[mode], expected, err_msg=f"amx, blocked={mode}", **_tol(expected))
    # same INT32 sums, same epilogue code: the paths agree to the bit
    for mode in AMX_MODES[1:]:
        np.testing.assert_array_equal(out[AMX_MODES[0]], out[mode], err_msg=f"amx, blocked={mode}")


@st.composite
def mlp_problems(draw):
    m = draw(st.sampled_from([0, 1, 2, 5, 7, 8, 13, 17, 24, 31, 33, 70]))
    k, n1, n2 = draw(st.integers(1, 70)), draw(st.integers(1, 140)), draw(st.integers(1, 90))
    return (m, k, n1, n2, draw(st.integers(0, 2**32 - 1)), draw(st.sampled_from(ACTS)), draw(st.sampled_from(ACTS)),
            draw(st.booleans()), draw(st.booleans()), draw(st.booleans()), draw(st.sampled_from(["contig", "rows"])),
            draw(st.sampled_from([1, 2])))


@given(mlp_problems())
@settings(max_examples=40)
def test_mlp_w8a8_every_target_and_amx_matches_two_layers_and_oracle(p):
    # The fused two-layer call (Linear -> act -> Linear, the intermediate kept native) must give
    # the bits of the two separate layers on every target, with and without AMX; the first layer
    # is checked against the float64 oracle within the epilogue tolerance, and the second layer
    # against the oracle applied to the first layer's float32 output (its codes are exact).
    m, k, n1, n2, seed, act1, act2, has_bias, has_res, sym, layout, threads = p
    rng = np.random.default_rng(seed)
    l1 = quant.QuantizedLinear(rng.standard_normal((n1, k)).astype(np.float32) * np.float32(rng.uniform(0.05, 2)),
                               rng.standard_normal(n1).astype(np.float32) if has_bias else None, activation=act1,
                               act_quant="symmetric" if sym else "asymmetric")
    b2 = rng.standard_normal(n2).astype(np.float32) if has_bias else None
    l2 = quant.QuantizedLinear(rng.standard_normal((n2, n1)).astype(np.float32), b2, activation=act2)
    x = _noncontiguous(rng, m, k, layout)
    res = rng.standard_normal((m, n2)).astype(np.float32) if has_res else None
    for target in TARGETS:
        for amx in (AMX_MODES if target == TARGETS[-1] else ((True, True),)):
            with _amx(*amx), pyperfcore.cpu_target(target):
                y = _core().mlp_w8a8(x, l1.packed, l1.bias, act1, l2.packed, b2, act2, res, sym, False, threads)
                h = l1(x, backend="cpu", threads=threads)
                two = l2(h, residual=res, backend="cpu", threads=threads)
            assert y.shape == (m, n2) and y.dtype == np.float32
            np.testing.assert_array_equal(y, two, err_msg=f"target={target} amx={amx}")
            e1 = ref.linear_w8a8(x, l1.qweight, l1.wscale, l1.bias, act1, None, sym)
            np.testing.assert_allclose(h, e1, err_msg=target, **_tol(e1))
            e2 = ref.linear_w8a8(h, l2.qweight, l2.wscale, b2, act2, res, False)
            np.testing.assert_allclose(y, e2, err_msg=target, **_tol(e2))


def test_mlp_w8a8_long_batches_and_bad_input(rng):
    # long batches run in 32-row chunks (a short last chunk takes VPDPBUSD, the others AMX where present)
    l1 = quant.QuantizedLinear(rng.standard_normal((96, 40)).astype(np.float32), np.ones(96, np.float32),
                               activation="gelu")
    l2 = quant.QuantizedLinear(rng.standard_normal((24, 96)).astype(np.float32))
    x = rng.standard_normal((517, 40)).astype(np.float32)
    res = rng.standard_normal((517, 24)).astype(np.float32)
    y = _core().mlp_w8a8(x, l1.packed, l1.bias, "gelu", l2.packed, None, "relu", res)
    np.testing.assert_array_equal(y, _core().linear_w8a8(l1(x), l2.packed, None, "relu", res))
    assert _core().mlp_w8a8(x[:0], l1.packed, l1.bias, "gelu", l2.packed, None).shape == (0, 24)
    with pytest.raises(ValueError, match="in_features"):
        _core().mlp_w8a8(x, l1.packed, None, "gelu", l1.packed, None)
    with pytest.raises(ValueError, match="columns"):
        _core().mlp_w8a8(x[:, :39], l1.packed, None, "gelu", l2.packed, None)
    with pytest.raises(TypeError, match="float32"):
        _core().mlp_w8a8(x.astype(np.float64), l1.packed, None, "gelu", l2.packed, None)
    with pytest.raises(ValueError, match="residual"):
        _core().mlp_w8a8(x, l1.packed, None, "gelu", l2.packed, None, "none", res[:5])
    bad = x.copy()
    bad[300, 7] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        _core().mlp_w8a8(bad, l1.packed, None, "gelu", l2.packed, None)
    # an intermediate that overflows to inf is refused like the second layer's input would be
    huge = quant.QuantizedLinear(np.full((8, 4), 3e38, np.float32))
    with pytest.raises(ValueError, match="NaN or infinity"):
        _core().mlp_w8a8(np.full((2, 4), 1e3, np.float32), huge.packed, None, "none",
                         quant.QuantizedLinear(np.ones((3, 8), np.float32)).packed, None)


def test_int8_gemm_extreme_values_amx():
    k, n, m = 1537, 70, 45  # a K tail after the last full 64-byte AMX step, partial 16- and 32-row blocks
    wq = np.full((n, k), 127, np.int8)
    wq[1::2] = -127
    packed = _core().PackedInt8.from_int8(wq, np.ones(n, np.float32))
    a = np.full((m, packed.kp), 255, np.uint8)
    for blocked in (True, False):
        with _amx(True, blocked):
            c = _core().gemm_u8s8(a, packed, TARGETS[-1])
        np.testing.assert_array_equal(c, a[:, :k].astype(np.int64) @ wq.T.astype(np.int64), err_msg=f"{blocked=}")


def test_int8_gemm_extreme_values_do_not_saturate(cpu_target):
    # 255 * 127 in every product: the worst case for VPMADDUBSW's int16 pair sums.
    k, n = 1536, 70
    wq = np.full((n, k), 127, np.int8)
    wq[1::2] = -127
    packed = _core().PackedInt8.from_int8(wq, np.ones(n, np.float32))
    a = np.full((3, packed.kp), 255, np.uint8)
    c = _core().gemm_u8s8(a, packed)
    np.testing.assert_array_equal(c, a[:, :k].astype(np.int64) @ wq.T.astype(np.int64))
    # the avx2/avx512 kernels multiply |a - 128| (128 for a = 0) by w with a - 128's sign: codes
    # 0 and 255 beside each other, 128 (a - 128 = 0), and a row of each, against +-127 weights
    a = np.zeros((5, packed.kp), np.uint8)
    a[1] = 255
    a[2, 0::2] = 255
    a[3] = 128
    a[4, 1::4] = 255
    c = _core().gemm_u8s8(a, packed)
    np.testing.assert_array_equal(c, a[:, :k].astype(np.int64) @ wq.T.astype(np.int64))


@given(st.integers(0, 9), st.integers(0, 77), st.booleans(), st.integers(0, 2**32 - 1), st.floats(1e-3, 1e3))
def test_activation_quantization_exact(m, k, symmetric, seed, spread):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((m, k)) * spread + rng.uniform(-1, 1) * spread).astype(np.float32)
    eq, es, ez = ref.quantize_rows_u8(x, symmetric)
    for target in TARGETS:
        with pyperfcore.cpu_target(target):
            q, s, z = quant.quantize_activations(x, symmetric=symmetric, backend="cpu")
        np.testing.assert_array_equal(q, eq, err_msg=target)
        np.testing.assert_array_equal(s, es)
        np.testing.assert_array_equal(z, ez)
    q, s, z = quant.quantize_activations(x, symmetric=symmetric, backend="reference")
    np.testing.assert_array_equal(q, eq)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@given(m=st.sampled_from([0, 1, 4, 7]), k=st.integers(1, 60), n=st.integers(1, 130), seed=st.integers(0, 2**32 - 1),
       act=st.sampled_from(ACTS), has_res=st.booleans())
@settings(max_examples=25)
def test_half_every_target_matches_oracle(dtype, m, k, n, seed, act, has_res):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    x = _noncontiguous(rng, m, k, "cols")
    res = rng.standard_normal((m, n)).astype(np.float32) if has_res else None
    layer = quant.QuantizedLinear(w, b, activation=act, dtype=dtype)
    bound = np.abs(x).astype(np.float64) @ np.abs(layer.weight_rounded).T.astype(np.float64) + 1
    for target in TARGETS:
        # AMX-BF16 (where the CPU has it) computes as a bf16 model: activations rounded to bf16
        amx = _core().half_uses_amx(layer.packed, target)
        expected = ref.linear_half(x, layer.weight_rounded, b, act, res, round_x=amx)
        with pyperfcore.cpu_target(target):
            y = layer(x, residual=res)
        assert np.all(np.abs(y - expected) <= 1e-5 * bound + 1e-5), target


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@given(m=st.integers(13, 40), k=st.integers(1, 90), n=st.integers(1, 140), seed=st.integers(0, 2**32 - 1),
       threads=st.sampled_from([1, 2, 3]))
@settings(max_examples=15)
def test_half_widened_panels_same_bits_as_small_batches(dtype, m, k, n, seed, threads):
    # m > 12 widens each weight panel to fp32 once per thread; m <= 12 converts on the fly. Both
    # must give the same bits row by row, on every target and thread count, and match the oracle.
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    x = _noncontiguous(rng, m, k, "rows")
    layer = quant.QuantizedLinear(w, b, activation="gelu", dtype=dtype)
    bound = np.abs(x).astype(np.float64) @ np.abs(layer.weight_rounded).T.astype(np.float64) + 1
    for target in TARGETS:
        expected = ref.linear_half(x, layer.weight_rounded, b, "gelu", round_x=_core().half_uses_amx(layer.packed, target))
        with pyperfcore.cpu_target(target):
            big = layer(x, backend="cpu", threads=threads)
            small = np.concatenate([layer(x[i:i + 5], backend="cpu", threads=1) for i in range(0, m, 5)])
        np.testing.assert_array_equal(big, small, err_msg=target)
        assert np.all(np.abs(big - expected) <= 1e-5 * bound), target


@pytest.mark.skipif(not _core().amx_bf16_available(), reason="the CPU has no AMX-BF16 (or the OS does not grant AMX)")
@given(m=st.sampled_from([1, 2, 15, 16, 17, 33]), k=st.integers(1, 100), n=st.integers(1, 140),
       seed=st.integers(0, 2**32 - 1), threads=st.sampled_from([1, 2]), act=st.sampled_from(ACTS))
@settings(max_examples=25)
def test_bf16_amx_rounds_activations_and_matches_fma_with_amx_off(m, k, n, seed, threads, act):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((n, k)).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    x = (rng.standard_normal((m, k)) * rng.uniform(0.1, 10)).astype(np.float32)
    res = rng.standard_normal((m, n)).astype(np.float32)
    layer = quant.QuantizedLinear(w, b, activation=act, dtype="bfloat16")
    vnni = TARGETS[-1]
    assert vnni == "avx512_vnni" and _core().half_uses_amx(layer.packed, vnni)
    xr = ref.round_bf16(x)
    bound = np.abs(xr).astype(np.float64) @ np.abs(layer.weight_rounded).T.astype(np.float64) + 1
    with pyperfcore.cpu_target(vnni):
        y = layer(x, residual=res, threads=threads)
        # the activations rounded by hand first: the same bits (rounding is idempotent)
        np.testing.assert_array_equal(layer(xr, residual=res, threads=threads), y)
        with _amx(False):
            assert not _core().half_uses_amx(layer.packed, vnni)
            y_fma = layer(x, residual=res, threads=threads)
    assert np.all(np.abs(y - ref.linear_half(x, layer.weight_rounded, b, act, res, round_x=True)) <= 1e-5 * bound + 1e-5)
    assert np.all(np.abs(y_fma - ref.linear_half(x, layer.weight_rounded, b, act, res)) <= 1e-5 * bound + 1e-5)
    # one copy of the weights (the k-pair layout, K padded to 32): still half the bytes of fp32
    p = layer.packed
    assert p.nbytes == -(-n // 64) * 64 * -(-k // 32) * 32 * 2
    # a packing rebuilt from its bytes (as unpickling does) gets the AMX layout again
    again = _core().PackedHalf.from_packed(p.n, p.k, p.type, p.data)
    assert _core().half_uses_amx(again, vnni)
    with pyperfcore.cpu_target(vnni):
        np.testing.assert_array_equal(_core().linear_half(x, again, b, act, res, threads), y)


@pytest.mark.skipif(not _core().amx_bf16_available(), reason="the CPU has no AMX-BF16 (or the OS does not grant AMX)")
def test_bf16_amx_bad_input_and_float16_unaffected(rng):
    layer = quant.QuantizedLinear(rng.standard_normal((8, 40)).astype(np.float32), dtype="bfloat16")
    with pyperfcore.cpu_target("avx512_vnni"):
        for bad in (np.nan, np.inf):
            x = rng.standard_normal((20, 40)).astype(np.float32)
            x[17, 39] = bad
            with pytest.raises(ValueError, match="NaN or infinity"):
                layer(x)
        assert layer(np.zeros((0, 40), np.float32)).shape == (0, 8)
        # float16 weights keep fp32 activations (there is no AMX-FP16 here)
        assert not _core().half_uses_amx(quant.QuantizedLinear(np.ones((4, 8), np.float32), dtype="float16").packed)


def test_half_weights_round_to_nearest_even():
    w = np.array([[1.0 + 2**-11, 1.0 + 3 * 2**-11, 65504.0, -2.0**-24 * 0.75]], np.float32)
    l16 = quant.QuantizedLinear(w, dtype="float16")
    np.testing.assert_array_equal(l16.weight_rounded, w.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(_core().PackedHalf.from_float(w, "float16").data[[0, 64, 128, 192]],
                                  w.astype(np.float16).view(np.uint16)[0])
    with pytest.raises(ValueError, match="float16 range"):
        quant.QuantizedLinear(np.array([[7e4]], np.float32), dtype="float16")


def test_scalar_activations_match_definitions():
    v = np.linspace(-30, 30, 20001).astype(np.float32)
    for act in ACTS:
        got = _core().apply_activation(v, act)
        exp = ref.activation(v, act)
        # GELU: rational erfc fit (|fit error| 1.3e-8) evaluated in float32, measured within
        # 2e-6 |y| + 7e-8 max(1, |v|); the others are within float rounding of their formulas.
        bound = 2e-6 * np.abs(exp) + 1e-7 * np.maximum(1.0, np.abs(v))
        assert np.all(np.abs(got - exp) <= bound), act


def test_simd_activations_match_definitions(cpu_target):
    # The vector epilogues of every target (through an identity float16 layer: x @ I is exact in
    # fp32, so y = act(x) straight from the epilogue) against the float64 definitions, with the
    # scalar bound; dense around GELU's negative tail, where erf(v / sqrt 2) is near -1.
    v = np.concatenate([np.linspace(-30, 30, 6001), np.linspace(-6.5, 0.5, 14001)]).astype(np.float32)
    x = np.resize(v, (v.size // 64 + 1) * 64).reshape(-1, 64)
    for act in ACTS:
        got = quant.QuantizedLinear(np.eye(64, dtype=np.float32), dtype="float16", activation=act)(x, backend="cpu")
        exp = ref.activation(x, act)
        bound = 2e-6 * np.abs(exp) + 1e-7 * np.maximum(1.0, np.abs(x))
        assert np.all(np.abs(got - exp) <= bound), (act, float(np.max(np.abs(got - exp) / bound)))
    # far in the negative tail GELU is 0 to float precision, also for huge |v| (a clamped erfc
    # approximation would leave |v| * erfc(clamp) there)
    far = np.tile(np.array([-6.0, -7.5, -40.0, -1e3, -1e6, -3e38], np.float32), (1, 11))[:, :64]
    got = quant.QuantizedLinear(np.eye(64, dtype=np.float32), dtype="float16", activation="gelu")(far, backend="cpu")
    assert np.all(np.abs(got) <= 1e-7), got
    assert np.all(np.abs(_core().apply_activation(far.ravel(), "gelu")) <= 1e-7)


def test_leading_dims_and_torch_tensors(rng):
    torch = pytest.importorskip("torch")
    w = rng.standard_normal((24, 16)).astype(np.float32)
    layer = quant.QuantizedLinear(torch.from_numpy(w), torch.zeros(24), activation="relu")
    x = rng.standard_normal((2, 3, 16)).astype(np.float32)
    y_np = layer(x)
    y_t = layer(torch.from_numpy(x))
    assert y_np.shape == (2, 3, 24) and isinstance(y_t, torch.Tensor)
    np.testing.assert_array_equal(y_np, y_t.numpy())
    np.testing.assert_array_equal(layer(x.astype(np.float16)), layer(x.astype(np.float16).astype(np.float32)))


def test_w8a8_is_close_to_float(rng):
    w = (rng.standard_normal((256, 384)) * 0.05).astype(np.float32)
    x = rng.standard_normal((64, 384)).astype(np.float32)
    y = quant.QuantizedLinear(w)(x)
    exact = x @ w.T
    rel = np.linalg.norm(y - exact) / np.linalg.norm(exact)
    assert rel < 0.02
    # Asymmetric activations beat symmetric ones on post-GELU-like (mostly positive) inputs.
    xp = np.abs(x) - 0.1
    e_asym = np.linalg.norm(quant.QuantizedLinear(w)(xp) - xp @ w.T)
    e_sym = np.linalg.norm(quant.QuantizedLinear(w, act_quant="symmetric")(xp) - xp @ w.T)
    assert e_asym < e_sym


@settings(max_examples=20)
@given(n=st.integers(1, 40), k=st.integers(1, 70), m=st.integers(1, 9), seed=st.integers(0, 2**31 - 1))
def test_per_tensor_weights_match_the_oracle(n, k, m, seed):
    rng = np.random.default_rng(seed)
    # rows of very different magnitude: per-tensor scales are coarser for the small rows
    w = (rng.standard_normal((n, k)) * np.exp(rng.uniform(-3, 1, (n, 1)))).astype(np.float32)
    x = rng.standard_normal((m, k)).astype(np.float32)
    layer = quant.QuantizedLinear(w, weight_quant="tensor")
    q, s = ref.quantize_int8(w, None)
    np.testing.assert_array_equal(layer.qweight, q)
    np.testing.assert_array_equal(layer.wscale, np.full(n, s, np.float32))
    np.testing.assert_allclose(layer(x), ref.linear_w8a8(x, q, layer.wscale), rtol=1e-5, atol=1e-5)


def test_per_tensor_weights_are_coarser_than_per_channel(rng):
    w = (rng.standard_normal((64, 96)) * np.exp(rng.uniform(-3, 1, (64, 1)))).astype(np.float32)
    x = rng.standard_normal((32, 96)).astype(np.float32)
    exact = x @ w.T
    e_channel = np.linalg.norm(quant.QuantizedLinear(w)(x) - exact)
    e_tensor = np.linalg.norm(quant.QuantizedLinear(w, weight_quant="tensor")(x) - exact)
    assert e_tensor > 2 * e_channel
    with pytest.raises(ValueError, match="weight_quant"):
        quant.QuantizedLinear(w, weight_quant="group")
    with pytest.raises(ValueError, match="int8' only"):
        quant.QuantizedLinear(w, dtype="float16", weight_quant="tensor")


def test_smoothquant_layer_equals_float_math(rng):
    w = rng.standard_normal((32, 48)).astype(np.float32)
    x = rng.standard_normal((10, 48)).astype(np.float32)
    x[:, 5] *= 60  # an outlier channel
    s = quant.smooth_factors(np.abs(x).max(0), w, 0.5)
    plain = quant.QuantizedLinear(w)
    smooth = quant.QuantizedLinear(w, smooth=s)
    e_plain = np.linalg.norm(plain(x) - x @ w.T)
    e_smooth = np.linalg.norm(smooth(x) - x @ w.T)
    assert e_smooth < e_plain
    np.testing.assert_allclose(smooth.dequantized_weight(), w, atol=np.abs(w).max() / 50)
    exp = ref.linear_w8a8((x * smooth.inv_smooth).astype(np.float32), smooth.qweight, smooth.wscale)
    np.testing.assert_allclose(smooth(x), exp, **_tol(exp))


# ------------------------------------------------------------------ bad input
def test_bad_inputs_raise_clear_errors(rng):
    w = rng.standard_normal((8, 5)).astype(np.float32)
    layer = quant.QuantizedLinear(w)
    with pytest.raises(ValueError, match="5"):
        layer(np.zeros((2, 4), np.float32))
    with pytest.raises(TypeError, match="float32"):
        layer(np.zeros((2, 5), np.int32))
    with pytest.raises(TypeError):
        layer(None)
    with pytest.raises(ValueError, match="residual"):
        layer(np.zeros((2, 5), np.float32), residual=np.zeros((2, 7), np.float32))
    for backend in ("cpu", "reference"):
        bad = np.zeros((3, 5), np.float32)
        bad[1, 2] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            layer(bad, backend=backend)
        bad[1, 2] = np.inf
        with pytest.raises(ValueError, match="NaN or infinity"):
            layer(bad, backend=backend)
    w_bad = w.copy()
    w_bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        quant.QuantizedLinear(w_bad)
    with pytest.raises(ValueError, match="bias"):
        quant.QuantizedLinear(w, np.zeros(3))
    with pytest.raises(ValueError, match="activation"):
        quant.QuantizedLinear(w, activation="tanh")
    with pytest.raises(ValueError, match="dtype"):
        quant.QuantizedLinear(w, dtype="int4")
    with pytest.raises(ValueError, match="-127, 127"):
        _core().PackedInt8.from_int8(np.full((2, 3), -128, np.int8), np.ones(2, np.float32))
    with pytest.raises(ValueError, match="scales"):
        _core().PackedInt8.from_int8(np.ones((2, 3), np.int8), np.array([1, 0], np.float32))
    with pytest.raises(BackendUnavailable):
        layer(np.zeros((1, 5), np.float32), backend="cuda")


def test_empty_inputs(cpu_target, rng):
    layer = quant.QuantizedLinear(rng.standard_normal((9, 6)).astype(np.float32), np.ones(9), activation="gelu")
    assert layer(np.zeros((0, 6), np.float32)).shape == (0, 9)
    assert layer(np.zeros((2, 0, 6), np.float32)).shape == (2, 0, 9)
    # in_features = 0: x @ W^T is all zeros, so the output is act(bias).
    empty_k = quant.QuantizedLinear(np.zeros((4, 0), np.float32), np.arange(4, dtype=np.float32), activation="relu")
    np.testing.assert_array_equal(empty_k(np.zeros((2, 0), np.float32)), np.tile(np.arange(4, dtype=np.float32), (2, 1)))


def test_thread_counts_agree(rng):
    layer = quant.QuantizedLinear(rng.standard_normal((300, 200)).astype(np.float32), activation="silu")
    x = rng.standard_normal((50, 200)).astype(np.float32)
    base = layer(x, threads=1)
    for t in (2, 3, 8):
        np.testing.assert_array_equal(layer(x, threads=t), base)


def test_subnormal_ranges_get_scale_one(cpu_target):
    # amax / 127 (or range / 255) underflows below FLT_MIN: the scale becomes 1 instead of a
    # zero/subnormal one whose reciprocal overflows (which used to give NaN codes).
    tiny = np.array([[1e-44, -1e-44, 0.0, 3e-45, 0.0]], np.float32)
    for sym in (False, True):
        q, s, z = quant.quantize_activations(tiny, symmetric=sym)
        eq, es, ez = ref.quantize_rows_u8(tiny, sym)
        np.testing.assert_array_equal(q, eq)
        assert s[0] == 1.0 and es[0] == 1.0
    qp, sp = quant.quantize(tiny, axis=0)
    assert sp[0] == 1.0 and not qp.any()
    layer = quant.QuantizedLinear(np.ones((3, 5), np.float32))
    assert np.isfinite(layer(tiny)).all()
