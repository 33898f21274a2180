"""Quantized linear layers with a fused epilogue, usable from numpy (no torch needed).

``y = act(x @ W^T + bias) + residual`` where W is stored as

- ``int8``: symmetric per-output-channel INT8 (``scale = amax / 127``); activations are quantized
  per token (per row) at run time to uint8 with a zero point (``act_quant="asymmetric"``, the
  default: the full 8 bits cover each row's [min, max], which matters after GELU where values
  are nearly all positive) or symmetrically (``"symmetric"``, 255 levels around 0). The INT8 GEMM
  accumulates exactly in INT32; dequantization, bias, activation and residual run in the same
  pass over the output.
- ``float16`` / ``bfloat16``: half-size weights, converted to fp32 inside the GEMM (this CPU has
  no fast half-precision arithmetic), fp32 accumulation.

Bad input policy: NaN/inf in weights or bias is a ``ValueError`` at construction; NaN/inf in
activations is a ``ValueError`` at the call (INT8 quantization has no representation for it; on the
half path too, so both dtypes behave alike); a residual is added as given (NaN propagates).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import _backends
from .._arrays import as_numpy
from .._backends import is_torch_tensor, register
from .._errors import BackendUnavailable
from .._runtime import _core

__all__ = ["QuantizedLinear", "ACTIVATIONS", "DTYPES", "quantize_activations", "dequantize_activations", "quantize_weight_int8"]

ACTIVATIONS = ("none", "relu", "gelu", "gelu_tanh", "silu")
DTYPES = ("int8", "float16", "bfloat16")
ACT_QUANT = ("asymmetric", "symmetric", "static")


def _float_matrix(w: Any, what: str) -> np.ndarray:
    if w is None:
        raise TypeError(f"{what} is None")
    if is_torch_tensor(w):
        w = w.detach().cpu().float().numpy()
    w = np.asarray(w)
    if w.dtype.kind != "f":
        raise TypeError(f"{what} must be a float array, got {w.dtype}")
    w = np.ascontiguousarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ValueError(f"{what} must be 2-D [out_features, in_features], got shape {w.shape}")
    if not np.isfinite(w).all():
        raise ValueError(f"{what} contains NaN or infinity; cannot quantize it")
    return w


def _float_vector(b: Any, n: int, what: str) -> np.ndarray | None:
    if b is None:
        return None
    if is_torch_tensor(b):
        b = b.detach().cpu().float().numpy()
    b = np.ascontiguousarray(np.asarray(b, dtype=np.float32))
    if b.shape != (n,):
        raise ValueError(f"{what} must have shape ({n},), got {b.shape}")
    if not np.isfinite(b).all():
        raise ValueError(f"{what} contains NaN or infinity")
    return b


WEIGHT_QUANT = ("channel", "tensor")


def quantize_weight_int8(w: np.ndarray, granularity: str = "channel") -> tuple[np.ndarray, np.ndarray]:
    """Symmetric INT8 weights: ``(q int8 [n, k], scale float32 [n])``.

    ``channel``: one scale per output channel (row); ``tensor``: one scale for the whole matrix,
    repeated per row, so the kernels (which take a scale per output channel) are unchanged."""
    from ._pilot import quantize

    if granularity not in WEIGHT_QUANT:
        raise ValueError(f"weight_quant must be one of {WEIGHT_QUANT}, got {granularity!r}")
    backend = None if _backends.available("quantize", "cpu") is None else "reference"
    if granularity == "tensor":
        q, s = quantize(w, axis=None, backend=backend)
        return np.asarray(q), np.full(w.shape[0], np.float32(np.asarray(s).reshape(-1)[0]), dtype=np.float32)
    q, s = quantize(w, axis=0, backend=backend)
    return np.asarray(q), np.asarray(s, dtype=np.float32)


def quantize_activations(x: Any, symmetric: bool = False, backend: str | None = None) -> tuple[Any, Any, Any]:
    """Per-token uint8 quantization of a float32 [m, k] matrix, as the W8A8 linear does it.

    Returns ``(q uint8 [m, round_up(k, 4)], scale float32 [m], zero_point int32 [m])`` with
    ``x ~= scale * (q[:, :k] - zero_point)``; padding columns hold the zero point. Asymmetric:
    ``scale = (max(0, max x) - min(0, min x)) / 255``, ``zp = clip(rne(-lo / scale))``,
    ``q = clip(rne(x / scale) + zp, 0, 255)``; symmetric: ``scale = amax / 127``, ``zp = 128``.
    (``/ scale`` is a multiplication by the float32 reciprocal.) ValueError on NaN/inf.
    """
    _check_x(x, None, "quantize_activations")
    impl = _backends.select("quantize_activations", x, backend)
    return impl(x, symmetric)


def _check_x(x: Any, k: int | None, what: str) -> None:
    if x is None:
        raise TypeError(f"{what}: x is None; pass a numpy array or a torch tensor")
    if is_torch_tensor(x):
        name = str(x.dtype).replace("torch.", "")
    elif isinstance(x, np.ndarray):
        name = x.dtype.name
    else:
        raise TypeError(f"{what}: x must be a numpy.ndarray or torch.Tensor, got {type(x).__name__}")
    if name not in ("float32", "float16", "bfloat16"):
        raise TypeError(f"{what}: x must be float32, float16 or bfloat16, got {name}")
    if x.ndim < 1 or (k is None and x.ndim != 2):
        raise ValueError(f"{what}: x must be {'2-D' if k is None else 'at least 1-D'}, got {x.ndim}-D")
    if k is not None and x.shape[-1] != k:
        raise ValueError(f"{what}: x has {x.shape[-1]} features in its last dimension, expected {k}")


class QuantizedLinear:
    """A linear layer with INT8 (W8A8) or FP16/BF16 weights and a fused epilogue.

    Parameters
    ----------
    weight : array-like, float [out_features, in_features]
        numpy array or torch tensor (as ``nn.Linear.weight``). Must be finite.
    bias : array-like [out_features] or None
    activation : str
        Applied after the bias: ``none``, ``relu``, ``gelu`` (erf, as ``nn.GELU()``),
        ``gelu_tanh`` or ``silu``.
    dtype : str
        ``int8`` (W8A8), ``float16`` or ``bfloat16`` (half-size weights, fp32 math).
    act_quant : str
        Activation quantization of the int8 path: per token at run time, ``asymmetric`` (default)
        or ``symmetric``; or ``static``: one calibrated symmetric scale for every row
        (``act_scale``; values beyond ``127 * act_scale`` clip), no per-row range pass.
    act_scale : float or None
        The static activation scale (``calibrate(batches, method) / 127``); required with
        ``act_quant="static"``, rejected otherwise.
    smooth : array-like [in_features] or None
        SmoothQuant factors ``s``: the layer stores ``W * s`` and computes with ``x / s``
        (see :func:`pyperfcore.quant.smooth_factors`). int8 only.
    weight_quant : str
        INT8 weight scale granularity: ``channel`` (default, one symmetric scale per output
        channel) or ``tensor`` (one scale for the matrix: coarser, for comparison with per-tensor
        toolchains).

    Call it as ``layer(x, residual=None, backend=None, threads=0)`` with x of shape
    ``[..., in_features]`` (float32/16, numpy or torch CPU tensor): the result is float32
    ``[..., out_features]`` of x's kind.
    """

    def __init__(self, weight: Any, bias: Any = None, *, activation: str = "none", dtype: str = "int8",
                 act_quant: str = "asymmetric", smooth: Any = None, weight_quant: str = "channel",
                 act_scale: float | None = None) -> None:
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
        if act_quant not in ACT_QUANT:
            raise ValueError(f"act_quant must be one of {ACT_QUANT}, got {act_quant!r}")
        if weight_quant not in WEIGHT_QUANT:
            raise ValueError(f"weight_quant must be one of {WEIGHT_QUANT}, got {weight_quant!r}")
        if weight_quant != "channel" and dtype != "int8":
            raise ValueError("weight_quant applies to dtype='int8' only")
        self.act_scale = _static_scale(act_quant, act_scale, dtype)
        w = _float_matrix(weight, "weight")
        self.out_features, self.in_features = w.shape
        self.bias = _float_vector(bias, self.out_features, "bias")
        self.activation = activation
        self.dtype = dtype
        self.act_quant = act_quant
        self.inv_smooth: np.ndarray | None = None
        if smooth is not None:
            if dtype != "int8":
                raise ValueError("smooth applies to dtype='int8' only")
            s = _float_vector(smooth, self.in_features, "smooth")
            assert s is not None
            if not (s > 0).all():
                raise ValueError("smooth factors must be > 0")
            w = w * s[None, :]
            self.inv_smooth = (np.float32(1) / s).astype(np.float32)
        self.qweight: np.ndarray | None = None
        self.wscale: np.ndarray | None = None
        self._packed: Any = None
        self._half: Any = None
        self._device_cache: dict[Any, Any] = {}
        if dtype == "int8":
            self.qweight, self.wscale = quantize_weight_int8(w, weight_quant)
        else:
            if dtype == "float16" and np.abs(w).max(initial=0) > 65504:
                raise ValueError("a weight exceeds the float16 range (|w| > 65504); use dtype='bfloat16'")
            self.weight_rounded = self._round_half(w)

    # -- construction from saved state (no re-quantization)
    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], config: dict[str, Any]) -> "QuantizedLinear":
        """Rebuild a layer from :meth:`state_dict` / :meth:`config` output."""
        self = cls.__new__(cls)
        self.out_features = int(config["out_features"])
        self.in_features = int(config["in_features"])
        self.activation = config["activation"]
        self.dtype = config["dtype"]
        self.act_quant = config.get("act_quant", "asymmetric")
        if self.activation not in ACTIVATIONS or self.dtype not in DTYPES or self.act_quant not in ACT_QUANT:
            raise ValueError(f"invalid layer configuration {config}")
        sc = state.get("act_scale")
        if sc is not None:
            sc = np.asarray(sc, dtype=np.float32)
            if sc.shape != (1,):
                raise ValueError("saved act_scale must have shape (1,)")
            sc = float(sc[0])
        self.act_scale = _static_scale(self.act_quant, sc, self.dtype)
        self.bias = _float_vector(state.get("bias"), self.out_features, "bias")
        self.inv_smooth = _float_vector(state.get("inv_smooth"), self.in_features, "inv_smooth")
        self._device_cache = {}
        self._packed = self._half = None
        if self.dtype == "int8":
            q = np.ascontiguousarray(state["qweight"], dtype=np.int8)
            s = np.ascontiguousarray(state["wscale"], dtype=np.float32)
            if q.shape != (self.out_features, self.in_features) or s.shape != (self.out_features,):
                raise ValueError("saved int8 weights do not match the layer's shape")
            if (q == -128).any() or not (np.isfinite(s).all() and (s > 0).all()):
                raise ValueError("saved int8 weights are malformed (value -128 or non-positive scale)")
            self.qweight, self.wscale = q, s
        else:
            wr = np.ascontiguousarray(state["weight"], dtype=np.float32)
            if wr.shape != (self.out_features, self.in_features) or not np.isfinite(wr).all():
                raise ValueError("saved half weights are malformed")
            self.qweight = self.wscale = None
            self.weight_rounded = wr
        return self

    def config(self) -> dict[str, Any]:
        return {"in_features": self.in_features, "out_features": self.out_features, "activation": self.activation,
                "dtype": self.dtype, "act_quant": self.act_quant}

    def state_dict(self) -> dict[str, np.ndarray]:
        """Arrays that reproduce the layer exactly: int8 weights + scales, or the half-rounded weights."""
        out: dict[str, np.ndarray] = {}
        if self.dtype == "int8":
            out["qweight"], out["wscale"] = self.qweight, self.wscale
        else:
            out["weight"] = self.weight_rounded
        if self.bias is not None:
            out["bias"] = self.bias
        if self.inv_smooth is not None:
            out["inv_smooth"] = self.inv_smooth
        if self.act_scale is not None:
            out["act_scale"] = np.array([self.act_scale], dtype=np.float32)
        return out

    def _round_half(self, w: np.ndarray) -> np.ndarray:
        if self.dtype == "float16":
            return w.astype(np.float16).astype(np.float32)
        bits = w.view(np.uint32).astype(np.uint64)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16 << 16
        return bits.astype(np.uint32).view(np.float32)

    @property
    def packed(self) -> Any:
        """The native packed weights (built on first use)."""
        if self.dtype == "int8":
            if self._packed is None:
                self._packed = _core().PackedInt8.from_int8(self.qweight, self.wscale)
            return self._packed
        if self._half is None:
            self._half = _core().PackedHalf.from_float(self.weight_rounded, self.dtype)
        return self._half

    def dequantized_weight(self) -> np.ndarray:
        """The float32 weight the layer effectively multiplies by (smoothing folded back out)."""
        if self.dtype == "int8":
            w = self.qweight.astype(np.float32) * self.wscale[:, None]
        else:
            w = self.weight_rounded.copy()
        if self.inv_smooth is not None:
            w = w * self.inv_smooth[None, :]
        return w

    @property
    def nbytes(self) -> int:
        n = self.out_features * self.in_features
        return n + 4 * self.out_features if self.dtype == "int8" else 2 * n

    def __repr__(self) -> str:
        return (f"QuantizedLinear(in_features={self.in_features}, out_features={self.out_features}, "
                f"dtype={self.dtype}, activation={self.activation}, bias={self.bias is not None})")

    def __call__(self, x: Any, residual: Any = None, backend: str | None = None, threads: int = 0) -> Any:
        if (backend is None and residual is None and type(x) is np.ndarray and x.dtype == np.float32 and x.ndim == 2
                and x.shape[1] == self.in_features and x.strides[1] == 4 and self.inv_smooth is None):
            # fast path (the cpu backend, minus the dispatch): the native call validates the rest
            if self.act_scale is not None:
                return _core().linear_w8a8_static(x, self.packed, self.act_scale, self.bias, self.activation, None,
                                                  int(threads))
            if self.dtype == "int8":
                return _core().linear_w8a8(x, self.packed, self.bias, self.activation, None,
                                           self.act_quant == "symmetric", int(threads))
            return _core().linear_half(x, self.packed, self.bias, self.activation, None, int(threads))
        _check_x(x, self.in_features, "QuantizedLinear")
        lead = tuple(x.shape[:-1])
        if residual is not None:
            if tuple(residual.shape) != lead + (self.out_features,):
                raise ValueError(f"residual must have shape {lead + (self.out_features,)}, got {tuple(residual.shape)}")
        op = "linear_w8a8" if self.dtype == "int8" else "linear_half"
        impl = _backends.select(op, x, backend)
        rows = math.prod(lead)
        x2 = x.reshape(rows, self.in_features)
        r2 = None if residual is None else residual.reshape(rows, self.out_features)
        y = impl(self, x2, r2, threads)
        return y.reshape(lead + (self.out_features,))


def _static_scale(act_quant: str, act_scale: Any, dtype: str) -> float | None:
    if act_quant != "static":
        if act_scale is not None:
            raise ValueError("act_scale applies to act_quant='static' only")
        return None
    if dtype != "int8":
        raise ValueError("act_quant='static' applies to dtype='int8' only")
    if act_scale is None:
        raise ValueError("act_quant='static' needs act_scale (e.g. quant.calibrate(batches, 'entropy') / 127)")
    try:
        v = float(act_scale)
    except (TypeError, ValueError):
        raise TypeError(f"act_scale must be a number, got {type(act_scale).__name__}") from None
    if not (math.isfinite(v) and v >= float(np.finfo(np.float32).tiny) and np.float32(v) <= np.finfo(np.float32).max):
        raise ValueError(f"act_scale must be a finite float32 > 0, got {act_scale!r}")
    return float(np.float32(v))


# ------------------------------------------------------------------ helpers shared by backends
def _np_f32_rows(x: Any) -> np.ndarray:
    if is_torch_tensor(x) and str(x.dtype) == "torch.bfloat16":
        x = x.float()
    xn = as_numpy(x)
    if xn.dtype != np.float32:
        xn = xn.astype(np.float32)
    if xn.ndim == 2 and xn.shape[1] > 1 and xn.strides[1] != 4:
        xn = np.ascontiguousarray(xn)
    if xn.ndim == 2 and xn.shape[0] > 1 and (xn.strides[0] < 0 or xn.strides[0] % 4):
        xn = np.ascontiguousarray(xn)
    return xn


def _like(x: Any, y: np.ndarray) -> Any:
    if is_torch_tensor(x):
        import torch

        return torch.from_numpy(y)
    return y


def _smoothed(layer: QuantizedLinear, xn: np.ndarray) -> np.ndarray:
    return xn if layer.inv_smooth is None else (xn * layer.inv_smooth[None, :]).astype(np.float32)


# ------------------------------------------------------------------ cpu (C++)
@register("quantize_activations", "cpu", ("cpu",))
def _qa_cpu(x: Any, symmetric: bool) -> tuple[Any, Any, Any]:
    q, s, z = _core().quantize_rows_u8(_np_f32_rows(x), symmetric)
    return _like(x, q), _like(x, s), _like(x, z)


@register("linear_w8a8", "cpu", ("cpu",))
def _w8a8_cpu(layer: QuantizedLinear, x: Any, r: Any, threads: int) -> Any:
    xn = _smoothed(layer, _np_f32_rows(x))
    rn = None if r is None else _np_f32_rows(r)
    if layer.act_scale is not None:
        y = _core().linear_w8a8_static(xn, layer.packed, layer.act_scale, layer.bias, layer.activation, rn, int(threads))
    else:
        y = _core().linear_w8a8(xn, layer.packed, layer.bias, layer.activation, rn,
                                layer.act_quant == "symmetric", int(threads))
    return _like(x, y)


@register("linear_half", "cpu", ("cpu",))
def _half_cpu(layer: QuantizedLinear, x: Any, r: Any, threads: int) -> Any:
    xn = _np_f32_rows(x)
    rn = None if r is None else _np_f32_rows(r)
    y = _core().linear_half(xn, layer.packed, layer.bias, layer.activation, rn, int(threads))
    return _like(x, y)


# ------------------------------------------------------------------ reference (numpy)
_ERF = np.frompyfunc(math.erf, 1, 1)


def reference_activation(v: np.ndarray, act: str) -> np.ndarray:
    """The epilogue activations in float64 from their definitions, returned as float32."""
    v = np.asarray(v, dtype=np.float64)
    if act == "relu":
        out = np.maximum(v, 0)
    elif act == "gelu":
        out = 0.5 * v * (1 + _ERF(v / math.sqrt(2)).astype(np.float64))
    elif act == "gelu_tanh":
        out = 0.5 * v * (1 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))
    elif act == "silu":
        out = v / (1 + np.exp(-np.clip(v, -80, 80)))
    else:
        out = v
    return out.astype(np.float32)


def reference_quantize_rows(x: np.ndarray, symmetric: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float32)
    if x.size and not np.isfinite(x).all():
        raise ValueError("linear: activations contain NaN or infinity")
    m, k = x.shape
    kp = max(4, (k + 3) // 4 * 4)
    lo = np.minimum(np.min(x, axis=1, initial=np.float32(0)), np.float32(0)).astype(np.float32)
    hi = np.maximum(np.max(x, axis=1, initial=np.float32(0)), np.float32(0)).astype(np.float32)
    f = np.float32
    if symmetric:
        amax = np.maximum(-lo, hi)
        s = (amax / f(127)).astype(np.float32)
        s = np.where(s >= np.finfo(np.float32).tiny, s, f(1)).astype(np.float32)
        inv = (f(1) / s).astype(np.float32)
        zp = np.full(m, 128, dtype=np.float32)
        qmin, qmax = 1, 255
    else:
        rng = (hi - lo).astype(np.float32)
        s = (rng / f(255)).astype(np.float32)
        s = np.where(s >= np.finfo(np.float32).tiny, s, f(1)).astype(np.float32)
        inv = (f(1) / s).astype(np.float32)
        zp = np.clip(np.rint((-lo * inv).astype(np.float32)), 0, 255).astype(np.float32)
        qmin, qmax = 0, 255
    q = np.empty((m, kp), dtype=np.uint8)
    q[:, :k] = np.clip(np.rint((x * inv[:, None]).astype(np.float32)) + zp[:, None], qmin, qmax).astype(np.uint8)
    q[:, k:] = zp[:, None].astype(np.uint8)
    return q, s, zp.astype(np.int32)


def reference_quantize_rows_static(x: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One symmetric scale for every row: q = clip(rne(x * (1 / scale)), -127, 127) + 128."""
    x = np.asarray(x, dtype=np.float32)
    if x.size and not np.isfinite(x).all():
        raise ValueError("linear: activations contain NaN or infinity")
    m, k = x.shape
    kp = max(4, (k + 3) // 4 * 4)
    inv = np.float32(np.float32(1) / np.float32(scale))
    q = np.full((m, kp), 128, dtype=np.uint8)
    with np.errstate(over="ignore"):  # beyond float32 range: inf, clipped like any large value
        q[:, :k] = np.clip(np.rint((x * inv).astype(np.float32)) + np.float32(128), 1, 255).astype(np.uint8)
    return q, np.full(m, scale, dtype=np.float32), np.full(m, 128, dtype=np.int32)


@register("quantize_activations", "reference", ("cpu",))
def _qa_reference(x: Any, symmetric: bool) -> tuple[Any, Any, Any]:
    q, s, z = reference_quantize_rows(_np_f32_rows(x), symmetric)
    return _like(x, q), _like(x, s), _like(x, z)


def _epilogue_np(v: np.ndarray, layer: QuantizedLinear, r: np.ndarray | None) -> np.ndarray:
    if layer.bias is not None:
        v = (v + layer.bias[None, :]).astype(np.float32)
    v = reference_activation(v, layer.activation)
    if r is not None:
        v = (v + r).astype(np.float32)
    return v


@register("linear_w8a8", "reference", ("cpu",))
def _w8a8_reference(layer: QuantizedLinear, x: Any, r: Any, threads: int) -> Any:
    xn = _smoothed(layer, _np_f32_rows(x))
    if layer.act_scale is not None:
        q, s, zp = reference_quantize_rows_static(xn, layer.act_scale)
    else:
        q, s, zp = reference_quantize_rows(xn, layer.act_quant == "symmetric")
    k = layer.in_features
    acc = q[:, :k].astype(np.int64) @ layer.qweight.T.astype(np.int64)
    acc -= zp[:, None].astype(np.int64) * layer.qweight.sum(axis=1, dtype=np.int64)[None, :]
    v = acc.astype(np.float32) * (s[:, None] * layer.wscale[None, :]).astype(np.float32)
    return _like(x, _epilogue_np(v.astype(np.float32), layer, None if r is None else _np_f32_rows(r)))


@register("linear_half", "reference", ("cpu",))
def _half_reference(layer: QuantizedLinear, x: Any, r: Any, threads: int) -> Any:
    xn = _np_f32_rows(x)
    if xn.size and not np.isfinite(xn).all():
        raise ValueError("linear: activations contain NaN or infinity")
    v = (xn.astype(np.float64) @ layer.weight_rounded.T.astype(np.float64)).astype(np.float32)
    return _like(x, _epilogue_np(v, layer, None if r is None else _np_f32_rows(r)))


# ------------------------------------------------------------------ triton (kernels/triton)
def _device_tensors(layer: QuantizedLinear, x: Any) -> dict[str, Any]:
    # keyed by the device index (-1: cpu, as under the interpreter): no torch.device per call
    t = layer._device_cache.get(x.get_device())
    if t is not None:
        return t
    import torch

    device, key = x.device, x.get_device()
    if key not in layer._device_cache:
        t: dict[str, Any] = {}
        if layer.dtype == "int8":
            t["w"] = torch.from_numpy(layer.qweight).to(device)
            t["scale"] = torch.from_numpy(layer.wscale).to(device)
            t["colsum"] = torch.from_numpy(layer.qweight.sum(axis=1, dtype=np.int32)).to(device)
        else:
            t["w"] = torch.from_numpy(layer.weight_rounded).to(device=device, dtype=torch.float16 if layer.dtype == "float16" else torch.bfloat16)
        t["bias"] = None if layer.bias is None else torch.from_numpy(layer.bias).to(device)
        t["inv_smooth"] = None if layer.inv_smooth is None else torch.from_numpy(layer.inv_smooth).to(device)
        layer._device_cache[key] = t
    return layer._device_cache[key]


def _torch_f32() -> Any:
    import torch

    return torch.float32


def _torch_input(x: Any) -> Any:
    import torch

    if not is_torch_tensor(x):
        x = torch.from_numpy(np.ascontiguousarray(x))
    return x


@register("linear_w8a8", "triton", ("cuda",))
def _w8a8_triton(layer: QuantizedLinear, x: Any, r: Any, threads: int) -> Any:
    from ..kernels import quant_gemm as tg

    if layer.act_scale is not None:
        raise BackendUnavailable("act_quant='static' runs on the CPU backends only (the GPU kernels quantize per token)")

    was_np = not is_torch_tensor(x)
    xt = _torch_input(x)
    if xt.dtype is not _torch_f32():
        xt = xt.float()
    t = _device_tensors(layer, xt)
    if t["inv_smooth"] is not None:
        xt = xt * t["inv_smooth"]
    rt = None if r is None else _torch_input(r).float()
    # check_finite: this API promises a ValueError on NaN/inf activations (one device sync); the
    # raw kernels (and the torch custom ops) return NaN rows instead, without synchronizing.
    y = tg.linear_w8a8(xt, t["w"], t["scale"], t["colsum"], t["bias"], layer.activation, rt,
                       symmetric=layer.act_quant == "symmetric", check_finite=True)
    return y.numpy() if was_np else y


@register("linear_half", "triton", ("cuda",))
def _half_triton(layer: QuantizedLinear, x: Any, r: Any, threads: int) -> Any:
    from ..kernels import quant_gemm as tg

    was_np = not is_torch_tensor(x)
    xt = _torch_input(x)
    t = _device_tensors(layer, xt)
    if xt.dtype is not t["w"].dtype and xt.dtype is not _torch_f32():
        xt = xt.float()  # fp16 x with bf16 weights (and the like): through fp32 (exact)
    rt = None if r is None else _torch_input(r).float()
    y = tg.linear_half(xt, t["w"], t["bias"], layer.activation, rt, check_finite=True)
    return y.numpy() if was_np else y


@register("quantize_activations", "triton", ("cuda",))
def _qa_triton(x: Any, symmetric: bool) -> tuple[Any, Any, Any]:
    import torch

    from ..kernels import quant_gemm as tg

    was_np = not is_torch_tensor(x)
    xt = _torch_input(x).float()
    q, s, z = tg.quantize_activations(xt, symmetric)
    k = xt.shape[1]
    kp = max(4, (k + 3) // 4 * 4)
    qp = torch.empty((xt.shape[0], kp), dtype=torch.uint8, device=xt.device)
    qp[:, :k] = q
    qp[:, k:] = z[:, None].to(torch.uint8)  # padding holds the zero point, as on the cpu backend
    return (qp.cpu().numpy(), s.cpu().numpy(), z.cpu().numpy()) if was_np else (qp, s, z)


@register("quantize_activations", "cuda", ("cuda",))
def _qa_cuda(x: Any, symmetric: bool) -> tuple[Any, Any, Any]:
    import torch

    from .._runtime import _cuda_module

    cuda = _cuda_module()
    xt = x.float()
    if xt.shape[1] > 1 and xt.stride(1) != 1:
        xt = xt.contiguous()
    m, k = xt.shape
    kp = max(4, (k + 3) // 4 * 4)
    q = torch.empty((m, kp), dtype=torch.uint8, device=xt.device)
    s = torch.empty((m,), dtype=torch.float32, device=xt.device)
    z = torch.empty((m,), dtype=torch.int32, device=xt.device)
    flag = torch.empty((1,), dtype=torch.int32, device=xt.device)
    with torch.cuda.device(xt.device):
        stream = torch.cuda.current_stream(xt.device).cuda_stream
        cuda.quantize_rows_u8(xt.data_ptr(), m, k, max(xt.stride(0), 1), q.data_ptr(), kp, s.data_ptr(), z.data_ptr(),
                              bool(symmetric), flag.data_ptr(), stream)
    return q, s, z


def dequantize_activations(q: Any, scale: Any, zero_point: Any, k: int) -> Any:
    """float32 ``(q[:, :k] - zero_point) * scale`` (the inverse of :func:`quantize_activations`);
    CUDA tensors use the CUDA kernel, anything else numpy."""
    if is_torch_tensor(q) and q.is_cuda:
        import torch

        from .._runtime import _cuda_module

        cuda = _cuda_module()
        if cuda is None:
            from .._errors import BackendUnavailable

            raise BackendUnavailable("the cuda backend was not built")
        m = q.shape[0]
        out = torch.empty((m, k), dtype=torch.float32, device=q.device)
        qc, sc, zc = q.contiguous(), scale.float().contiguous(), zero_point.to(torch.int32).contiguous()
        with torch.cuda.device(q.device):
            cuda.dequantize_rows_u8(qc.data_ptr(), m, k, qc.shape[1], sc.data_ptr(), zc.data_ptr(), out.data_ptr(),
                                    torch.cuda.current_stream(q.device).cuda_stream)
        return out
    qn, sn, zn = as_numpy(q), np.asarray(as_numpy(scale), np.float32), np.asarray(as_numpy(zero_point), np.int32)
    out = ((qn[:, :k].astype(np.int32) - zn[:, None]).astype(np.float32) * sn[:, None]).astype(np.float32)
    return _like(q, out)
