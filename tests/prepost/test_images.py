"""preprocess_images: every backend and CPU target against the numpy oracle, Pillow and OpenCV."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pyperfcore
from pyperfcore import prepost as pp
from tests import reference as ref

TARGETS = pyperfcore.build_info()["cpu_targets_supported"]


@st.composite
def cases(draw):
    c = draw(st.sampled_from([1, 3]))
    n = draw(st.integers(1, 3))
    same = draw(st.booleans())
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    hw = [(draw(st.integers(1, 40)), draw(st.integers(1, 40)))]
    for _ in range(n - 1):
        hw.append(hw[0] if same else (draw(st.integers(1, 40)), draw(st.integers(1, 40))))
    imgs = [rng.integers(0, 256, (h, w, c), dtype=np.uint8) for h, w in hw]
    size = draw(st.sampled_from(["none", "pair", "int"]))
    if size == "none" and not same:
        size = "pair"
    size_arg = None if size == "none" else ((draw(st.integers(1, 48)), draw(st.integers(1, 48))) if size == "pair"
                                            else draw(st.integers(1, 30)))
    crop = draw(st.sampled_from([None, "center"]))
    layout = draw(st.sampled_from(["NCHW", "NHWC"]))
    order = draw(st.sampled_from(["RGB", "BGR"]))
    aa = draw(st.booleans())
    mean = rng.uniform(0, 255, c).round(3).tolist()
    std = rng.uniform(10, 80, c).round(3).tolist()
    batch = same and draw(st.booleans())
    return imgs, size_arg, crop, layout, order, aa, mean, std, batch


def _geometry(h, w, size):
    if size is None:
        return h, w
    if isinstance(size, int):
        return (int(size * h / w), size) if w <= h else (size, int(size * w / h))
    return size


def _oracle(imgs, size, crop, order, aa, mean, std):
    outs = []
    shapes = [_geometry(im.shape[0], im.shape[1], size) for im in imgs]
    ch = min(s[0] for s in shapes)
    cw = min(s[1] for s in shapes)
    for im, (rh, rw) in zip(imgs, shapes):
        box = None
        if crop == "center":
            box = (int(round((rh - ch) / 2.0)), int(round((rw - cw) / 2.0)), ch, cw)
        outs.append(ref.prepost_preprocess(im, (rh, rw), box, mean, std, order == "BGR", aa))
    return np.stack(outs), (ch, cw)


@given(cases())
def test_float32_matches_oracle_every_backend_and_target(case):
    imgs, size, crop, layout, order, aa, mean, std, batch = case
    shapes = {_geometry(im.shape[0], im.shape[1], size) for im in imgs}
    if crop is None and len(shapes) > 1:
        crop = "center"
    expect, (ch, cw) = _oracle(imgs, size, crop, order, aa, mean, std)
    if layout == "NHWC":
        expect = expect.transpose(0, 2, 3, 1)
    inp = np.stack(imgs) if batch else imgs
    kw = dict(size=size, crop=(ch, cw) if crop else None, mean=mean, std=std, layout=layout, input_order=order,
              antialias=aa)
    got = pp.preprocess_images(inp, backend="reference", **kw)
    np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-4)
    for t in TARGETS:
        with pyperfcore.cpu_target(t):
            got = pp.preprocess_images(inp, backend="cpu", **kw)
        assert got.dtype == np.float32 and got.shape == expect.shape
        np.testing.assert_allclose(got, expect, rtol=1e-5, atol=1e-4, err_msg=f"target={t}")


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "int8", "uint8"])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_output_dtypes(cpu_target, dtype, layout, rng):
    # widths around the 16-pixel SIMD block, BGR input, strided rows (a view of a wider image)
    for w in (1, 15, 16, 17, 47):
        base = rng.integers(0, 256, (4, 9, w + 5, 3), dtype=np.uint8)
        x = base[:, :, 2:2 + w]
        kw = dict(mean=[120.0, 110.0, 100.0], std=[60.0, 50.0, 40.0], layout=layout, dtype=dtype, input_order="BGR")
        if dtype == "int8":
            kw["scale"] = 0.02
        got = pp.preprocess_images(x, **kw)
        exp = pp.preprocess_images(x, backend="reference", **kw)
        f32 = (x[..., ::-1].astype(np.float32) - np.float32([120, 110, 100])) * (np.float32(1) / np.float32([60, 50, 40]))
        if layout == "NCHW":
            f32 = f32.transpose(0, 3, 1, 2)
        if dtype == "float16":
            np.testing.assert_array_equal(got, f32.astype(np.float16))
        elif dtype == "bfloat16":
            assert got.dtype == np.uint16
            np.testing.assert_allclose(ref.prepost_bf16_to_f32(got), f32, rtol=2**-8)
            np.testing.assert_array_equal(got, exp)
        elif dtype == "int8":
            np.testing.assert_array_equal(got, np.clip(np.rint(f32 / np.float32(0.02)), -127, 127).astype(np.int8))
        else:
            np.testing.assert_array_equal(got, np.clip(np.rint(f32), 0, 255).astype(np.uint8))
        np.testing.assert_array_equal(got, exp)


@settings(max_examples=25)
@given(st.integers(2, 90), st.integers(2, 90), st.integers(1, 120), st.integers(1, 120), st.integers(0, 2**32 - 1))
def test_uint8_resize_within_one_of_pillow_and_opencv(h, w, oh, ow, seed):
    from PIL import Image
    import cv2

    img = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    pil = np.asarray(Image.fromarray(img).resize((ow, oh), Image.BILINEAR)).astype(int)
    cv = cv2.resize(img, (ow, oh), interpolation=cv2.INTER_LINEAR).astype(int)
    for t in TARGETS:
        with pyperfcore.cpu_target(t):
            a = pp.preprocess_images([img], size=(oh, ow), dtype="uint8", layout="NHWC", antialias=True)[0]
            b = pp.preprocess_images([img], size=(oh, ow), dtype="uint8", layout="NHWC", antialias=False)[0]
        assert np.abs(a.astype(int) - pil).max() <= 1, t
        assert np.abs(b.astype(int) - cv).max() <= 1, t
        if oh * ow >= 100:  # mostly identical: differences come from rounding ties only
            assert (a.astype(int) == pil).mean() > 0.5 and (b.astype(int) == cv).mean() > 0.5


def test_grayscale_and_int_size_center_crop(rng):
    imgs = [rng.integers(0, 256, (h, w), dtype=np.uint8) for h, w in [(30, 50), (64, 40), (33, 33)]]
    got = pp.preprocess_images(imgs, size=24, crop=20, mean=127.5, std=127.5)
    assert got.shape == (3, 1, 20, 20)
    exp = pp.preprocess_images(imgs, size=24, crop=20, mean=127.5, std=127.5, backend="reference")
    np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-5)


def test_given_crop_box(rng):
    x = rng.integers(0, 256, (2, 20, 30, 3), dtype=np.uint8)
    got = pp.preprocess_images(x, crop=(3, 5, 10, 12), layout="NHWC")
    np.testing.assert_array_equal(got, x[:, 3:13, 5:17].astype(np.float32))


def test_torch_input_gives_torch_output(rng):
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8))
    out = pp.preprocess_images(x, dtype="bfloat16")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16
    np.testing.assert_allclose(out.float().numpy(), x.permute(0, 3, 1, 2).float().numpy())


def test_empty_batches():
    out = pp.preprocess_images(np.zeros((0, 10, 12, 3), np.uint8))
    assert out.shape == (0, 3, 10, 12)
    assert pp.preprocess_images([], crop=(4, 5), layout="NHWC").shape == (0, 4, 5, 3)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_bad_input(backend, rng):
    ok = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(TypeError, match="uint8"):
        pp.preprocess_images(ok.astype(np.float32), backend=backend)
    with pytest.raises(ValueError, match="1 or 3 channels"):
        pp.preprocess_images(rng.integers(0, 256, (2, 8, 8, 4), dtype=np.uint8), backend=backend)
    with pytest.raises(ValueError, match="different channel"):
        pp.preprocess_images([ok[0], ok[0, :, :, 0]], backend=backend)
    with pytest.raises(ValueError, match="output size"):
        pp.preprocess_images([ok[0], ok[0, :4]], backend=backend)
    with pytest.raises(ValueError, match="does not fit"):
        pp.preprocess_images(ok, crop=9, backend=backend)
    with pytest.raises(ValueError, match="std"):
        pp.preprocess_images(ok, std=[1, 0, 1], backend=backend)
    with pytest.raises(ValueError, match="scale"):
        pp.preprocess_images(ok, dtype="int8", backend=backend)
    with pytest.raises(ValueError, match="layout"):
        pp.preprocess_images(ok, layout="CHW", backend=backend)
    with pytest.raises(TypeError):
        pp.preprocess_images(None, backend=backend)
    with pytest.raises(ValueError, match="mean"):
        pp.preprocess_images(ok, mean=[1, 2], backend=backend)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16", "int8", "uint8"])
def test_out_argument(backend, dtype, rng):
    x = rng.integers(0, 256, (3, 10, 19, 3), dtype=np.uint8)
    kw = dict(size=(8, 21), crop=(6, 17), mean=[120.0, 110.0, 100.0], std=[60.0, 50.0, 40.0], dtype=dtype,
              scale=0.02 if dtype == "int8" else None, backend=backend)
    exp = pp.preprocess_images(x, **kw)
    big = np.full((4,) + exp.shape[1:], 7, dtype=exp.dtype)
    res = pp.preprocess_images(x, out=big[1:], **kw)
    assert res is not None and np.shares_memory(res, big)
    np.testing.assert_array_equal(big[1:], exp)
    assert (big[0] == 7).all()
    torch = pytest.importorskip("torch")
    t_out = torch.empty(tuple(exp.shape), dtype=getattr(torch, dtype))
    got = pp.preprocess_images(torch.from_numpy(x), out=t_out, **kw)
    assert got is t_out
    np.testing.assert_array_equal(got.view(torch.int16).numpy().view(np.uint16) if dtype == "bfloat16" else got.numpy(), exp)


def test_out_argument_errors(rng):
    x = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    with pytest.raises(TypeError, match="float32"):
        pp.preprocess_images(x, out=np.empty((2, 3, 8, 8), np.float64))
    with pytest.raises(TypeError, match="uint16"):
        pp.preprocess_images(x, dtype="bfloat16", out=np.empty((2, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="shape"):
        pp.preprocess_images(x, out=np.empty((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match="contiguous"):
        pp.preprocess_images(x, out=np.empty((2, 3, 8, 16), np.float32)[..., ::2])
    ro = np.empty((2, 3, 8, 8), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="writeable"):
        pp.preprocess_images(x, out=ro)
    with pytest.raises(ValueError, match="overlaps"):
        pp.preprocess_images(x, dtype="uint8", layout="NHWC", out=x)
    with pytest.raises(TypeError, match="numpy.ndarray or torch.Tensor"):
        pp.preprocess_images(x, out=[0.0])
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="torch"):
        pp.preprocess_images(torch.from_numpy(x), out=np.empty((2, 3, 8, 8), np.float32))
    with pytest.raises(TypeError, match="numpy"):
        pp.preprocess_images(x, out=torch.empty((2, 3, 8, 8)))


def test_large_outputs_streaming_stores(cpu_target, rng):
    # Outputs of >= 4 MiB take the streaming-store path (64-byte-aligned fresh output, or an
    # aligned out=); a misaligned out= takes plain stores. Both must equal the numpy formula.
    x = rng.integers(0, 256, (28, 224, 224, 3), dtype=np.uint8)
    mean, std = np.float32([120, 110, 100]), np.float32([60, 50, 40])
    f32 = (x[..., ::-1].astype(np.float32) - mean) * (np.float32(1) / std)
    for layout in ("NCHW", "NHWC"):
        v = np.ascontiguousarray(f32.transpose(0, 3, 1, 2)) if layout == "NCHW" else f32
        exp = {"float32": v, "float16": v.astype(np.float16),
               "int8": np.clip(np.rint(v / np.float32(0.05)), -127, 127).astype(np.int8),
               "uint8": np.clip(np.rint(v), 0, 255).astype(np.uint8)}
        for dtype, e in exp.items():
            kw = dict(mean=mean, std=std, layout=layout, dtype=dtype, input_order="BGR",
                      scale=0.05 if dtype == "int8" else None)
            np.testing.assert_array_equal(pp.preprocess_images(x, **kw), e, err_msg=f"{dtype} {layout}")
            raw = np.empty(e.nbytes + 64 + e.itemsize, np.uint8)
            for off in (0, e.itemsize):  # aligned and misaligned caller buffers
                start = (-raw.ctypes.data) % 64 + off
                out = raw[start:start + e.nbytes].view(e.dtype).reshape(e.shape)
                pp.preprocess_images(x, out=out, **kw)
                np.testing.assert_array_equal(out, e, err_msg=f"{dtype} {layout} offset {off}")
