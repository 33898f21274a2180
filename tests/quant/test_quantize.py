"""The pilot op: every backend and CPU target against the numpy oracle."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pyperfcore
from pyperfcore import quant
from tests import reference as ref


def _strided(draw, dtype):
    """A random float array of random shape, viewed through a random slicing/transposition."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=9))
    base_shape = tuple(s * 2 + 1 for s in shape)
    elems = st.floats(-1e4, 1e4, width=16 if dtype == np.float16 else 32, allow_nan=False, allow_infinity=False)
    base = draw(hnp.arrays(dtype, base_shape, elements=elems))
    steps = draw(st.lists(st.sampled_from([1, 2, -1]), min_size=len(shape), max_size=len(shape)))
    sl = tuple(slice(None, None, s) if s > 0 else slice(None, None, -1) for s in steps)
    view = base[sl][tuple(slice(0, n) for n in shape)]
    if draw(st.booleans()) and view.ndim > 1:
        view = np.swapaxes(view, 0, view.ndim - 1)
    return view


@st.composite
def inputs(draw):
    dtype = draw(st.sampled_from([np.float32, np.float16]))
    x = _strided(draw, dtype)
    axis = draw(st.one_of(st.none(), st.integers(-x.ndim, x.ndim - 1)))
    return x, axis


@given(inputs())
def test_cpu_matches_reference_every_target(data):
    x, axis = data
    q_ref, s_ref = ref.quantize_int8(x, None if axis is None else axis % x.ndim)
    for target in pyperfcore.build_info()["cpu_targets_supported"]:
        with pyperfcore.cpu_target(target):
            q, s = quant.quantize(x, axis=axis, backend="cpu")
        np.testing.assert_array_equal(q, q_ref, err_msg=f"target={target}")
        np.testing.assert_array_equal(s, s_ref, err_msg=f"target={target}")
        assert q.shape == x.shape and q.dtype == np.int8 and s.dtype == np.float32


@given(inputs())
def test_reference_backend_matches_oracle(data):
    x, axis = data
    q_ref, s_ref = ref.quantize_int8(x, None if axis is None else axis % x.ndim)
    q, s = quant.quantize(x, axis=axis, backend="reference")
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(s, s_ref)


@pytest.mark.parametrize("n", [1, 7, 15, 16, 17, 31, 33, 100, 4099])
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_sizes_around_vector_widths(cpu_target, n, axis, rng):
    x = (rng.standard_normal((3, n)) * 10).astype(np.float32)
    q, s = quant.quantize(x, axis=axis)
    q_ref, s_ref = ref.quantize_int8(x, axis)
    np.testing.assert_array_equal(q, q_ref)
    np.testing.assert_array_equal(s, s_ref)


def test_ties_round_half_to_even(cpu_target):
    # amax 127 gives scale 1 exactly, so x / scale are the ties themselves.
    x = np.array([[127.0, 2.5, 3.5, -2.5, -0.5, 0.5, 1.5, -126.5, 126.5] * 4], dtype=np.float32)
    q, s = quant.quantize(x, axis=0)
    assert s[0] == 1.0
    np.testing.assert_array_equal(q[0, :9], [127, 2, 4, -2, 0, 0, 2, -126, 126])


def test_zero_channel_gets_scale_one(cpu_target):
    x = np.zeros((4, 40), dtype=np.float32)
    x[1] = np.linspace(-3, 3, 40)
    q, s = quant.quantize(x, axis=0)
    assert s[0] == 1.0 and s[2] == 1.0 and s[1] == np.float32(3) / np.float32(127)
    assert not q[0].any()


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("backend", ["cpu", "reference"])
@pytest.mark.parametrize("axis", [None, 0, 1])
def test_nonfinite_raises(cpu_target, bad, backend, axis, rng):
    x = rng.standard_normal((5, 37)).astype(np.float32)
    x[3, 20] = bad
    with pytest.raises(ValueError, match="NaN or inf"):
        quant.quantize(x, axis=axis, backend=backend)


@pytest.mark.parametrize("shape,axis", [((0,), None), ((0, 5), 1), ((3, 0), 0), ((0, 4), 0)])
def test_empty(shape, axis):
    x = np.zeros(shape, dtype=np.float32)
    q, s = quant.quantize(x, axis=axis)
    assert q.shape == shape and q.dtype == np.int8
    expected_channels = () if axis is None else (shape[axis],)
    assert s.shape == expected_channels and np.all(s == 1)


def test_bad_inputs():
    with pytest.raises(TypeError, match="float32 or float16"):
        quant.quantize(np.ones((2, 2), dtype=np.float64), axis=0)
    with pytest.raises(TypeError, match="None"):
        quant.quantize(None)
    with pytest.raises(TypeError, match="numpy.ndarray"):
        quant.quantize([1.0, 2.0])
    with pytest.raises(ValueError, match="out of range"):
        quant.quantize(np.ones((2, 2), dtype=np.float32), axis=2)
    with pytest.raises(ValueError, match="int8"):
        quant.quantize(np.ones((2, 2), dtype=np.float32), dtype="int4")
    with pytest.raises(ValueError, match="unknown backend"):
        quant.quantize(np.ones((2, 2), dtype=np.float32), backend="tpu")
    with pytest.raises(pyperfcore.BackendUnavailable, match="cuda"):
        quant.quantize(np.ones((2, 2), dtype=np.float32), backend="cuda")


@given(inputs())
def test_dequantize_roundtrip(data):
    x, axis = data
    q, s = quant.quantize(x, axis=axis)
    out = quant.dequantize(q, s, axis=axis)
    ax = None if axis is None else axis % x.ndim
    np.testing.assert_array_equal(out, ref.dequantize_int8(q, s, ax))
    np.testing.assert_array_equal(out, quant.dequantize(q, s, axis=axis, backend="reference"))
    # Error bound of symmetric rounding: half a step per element.
    sb = s if ax is None else s.reshape([-1 if d == ax else 1 for d in range(x.ndim)])
    assert np.all(np.abs(out - x.astype(np.float32)) <= sb * 0.5 * (1 + 1e-5) + 1e-30)


def test_dequantize_bad_inputs():
    q = np.zeros((3, 4), dtype=np.int8)
    with pytest.raises(TypeError, match="int8"):
        quant.dequantize(q.astype(np.int16), np.ones(3, np.float32), axis=0)
    with pytest.raises(ValueError, match="entries"):
        quant.dequantize(q, np.ones(5, np.float32), axis=0)


def test_large_matrix_threads_match(rng):
    x = rng.standard_normal((300, 5000)).astype(np.float32)
    results = []
    for n in (1, 2, 3):
        pyperfcore.set_num_threads(n)
        results.append(quant.quantize(x, axis=1))
        results.append(quant.quantize(x, axis=0))
        results.append(quant.quantize(x, axis=None))
    pyperfcore.set_num_threads(pyperfcore._runtime._core().default_num_threads())
    for k in range(3, 9):
        base = results[k % 3]
        np.testing.assert_array_equal(results[k][0], base[0])
        np.testing.assert_array_equal(results[k][1], base[1])


# ---------------------------------------------------------------- torch and triton


def _torch():
    return pytest.importorskip("torch")


@given(inputs())
def test_torch_cpu_tensors(data):
    t = _torch()
    x, axis = data
    xt = t.from_numpy(x.copy())
    if x.ndim > 1:
        xt = xt.transpose(0, x.ndim - 1)
        x = np.ascontiguousarray(np.swapaxes(np.ascontiguousarray(x), 0, x.ndim - 1))
    q, s = quant.quantize(xt, axis=axis)
    assert isinstance(q, t.Tensor) and q.dtype == t.int8
    q_ref, s_ref = ref.quantize_int8(x, None if axis is None else axis % x.ndim)
    np.testing.assert_array_equal(q.numpy(), q_ref)
    np.testing.assert_array_equal(s.numpy(), s_ref)
    back = quant.dequantize(q, s, axis=axis)
    assert isinstance(back, t.Tensor)


@pytest.mark.triton
@given(data=inputs())
def test_triton_matches_reference(triton_device, data):
    t = _torch()
    x, axis = data
    assume(x.size <= 2000)
    xt = t.from_numpy(x.copy()).to(triton_device)
    q, s = quant.quantize(xt, axis=axis, backend="triton")
    q_ref, s_ref = ref.quantize_int8(x, None if axis is None else axis % x.ndim)
    np.testing.assert_array_equal(q.cpu().numpy(), q_ref)
    np.testing.assert_array_equal(s.cpu().numpy(), s_ref)
    back = quant.dequantize(q, s, axis=axis, backend="triton")
    np.testing.assert_array_equal(back.cpu().numpy(), ref.dequantize_int8(q_ref, s_ref, None if axis is None else axis % x.ndim))


@pytest.mark.triton
def test_triton_nonfinite_raises(triton_device):
    t = _torch()
    x = t.randn(4, 70, device=triton_device)
    x[2, 5] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        quant.quantize(x, axis=0, backend="triton")


@pytest.mark.cuda
@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@given(inputs())
def test_gpu_backends_match_reference(backend, data):
    t = _torch()
    x, axis = data
    xt = t.from_numpy(x.copy()).cuda()
    if x.ndim > 1:
        xt = xt.transpose(0, x.ndim - 1)
        x = np.ascontiguousarray(np.swapaxes(np.ascontiguousarray(x), 0, x.ndim - 1))
    q, s = quant.quantize(xt, axis=axis, backend=backend)
    assert q.is_cuda and s.is_cuda
    q_ref, s_ref = ref.quantize_int8(x, None if axis is None else axis % x.ndim)
    np.testing.assert_array_equal(q.cpu().numpy(), q_ref)
    np.testing.assert_array_equal(s.cpu().numpy(), s_ref)
    back = quant.dequantize(q, s, axis=axis, backend=backend)
    np.testing.assert_array_equal(back.cpu().numpy(), ref.dequantize_int8(q_ref, s_ref, None if axis is None else axis % x.ndim))


@pytest.mark.cuda
@pytest.mark.gpu
def test_cuda_nonfinite_and_default_backend():
    t = _torch()
    x = t.randn(64, 300, device="cuda")
    q, s = quant.quantize(x, axis=0)  # picks cuda for a CUDA tensor
    assert q.is_cuda
    x[5, 7] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        quant.quantize(x, axis=0, backend="cuda")


@pytest.mark.triton
@pytest.mark.parametrize("shape", [(300, 70), (1000, 5)])
def test_triton_channels_last_split_rows(triton_device, shape, rng):
    # Channels along the last dimension with enough rows to split the reduction across programs.
    t = _torch()
    x = (rng.standard_normal(shape) * 3).astype(np.float32)
    x[:, 1] = 0
    q, s = quant.quantize(t.from_numpy(x).to(triton_device), axis=1, backend="triton")
    q_ref, s_ref = quant.quantize(x, axis=1, backend="cpu")
    np.testing.assert_array_equal(q.cpu().numpy(), q_ref)
    np.testing.assert_array_equal(s.cpu().numpy(), s_ref)


@pytest.mark.parametrize("seed", range(4))
def test_quotients_at_and_next_to_ties(cpu_target, seed):
    # The SIMD kernels multiply by a near-reciprocal and redo lanes close to a rounding tie with
    # an IEEE division; inputs placed exactly on ties (and one ulp either side) exercise that.
    rng = np.random.default_rng(seed)
    amax = np.float32(rng.uniform(0.01, 1000))
    scale = amax / np.float32(127)
    k = rng.integers(-126, 127, size=3000).astype(np.float32)
    x = ((k + np.float32(0.5)) * scale).astype(np.float32)
    x = np.concatenate([x, np.nextafter(x, np.float32(np.inf)), np.nextafter(x, np.float32(-np.inf)), [amax]])
    x = np.tile(x.astype(np.float32), (3, 1))
    for axis in (0, 1, None):
        q, s = quant.quantize(x, axis=axis)
        q_ref, s_ref = quant.quantize(x, axis=axis, backend="reference")
        np.testing.assert_array_equal(q, q_ref)
        np.testing.assert_array_equal(s, s_ref)
