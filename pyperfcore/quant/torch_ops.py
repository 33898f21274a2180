"""torch integration: custom ops (``torch.library``), the ``QLinear`` module and :func:`optimize`.

The ops ``pyperfcore::w8a8_linear`` and ``pyperfcore::half_linear`` take plain tensors (the
module's int8 weight [out, in], its scales, optional bias and residual), so ``torch.export`` and
``torch.compile`` see them as opaque ops with a shape function. On CPU they run the native
kernels (weights packed once per weight tensor and cached); on CUDA the Triton kernels, on the
caller's current stream.
"""
from __future__ import annotations

import fnmatch
import types
import weakref
from typing import Any, Iterable, Optional

import numpy as np
import torch
from torch import nn

from .._runtime import _core
from .linear import ACT_QUANT, ACTIVATIONS, QuantizedLinear

__all__ = ["QLinear", "optimize", "quantized_layers", "fuse_mlp_chains"]

# Packed native weights per weight tensor: id -> (weakref, version, packed). A dead weakref or a
# changed version (in-place update) forces a repack, so a stale packing is never used.
_PACK_CACHE: dict[int, tuple[Any, int, Any]] = {}


def _packed_for(w: torch.Tensor, build: Any) -> Any:
    key = id(w)
    hit = _PACK_CACHE.get(key)
    if hit is not None and hit[0]() is w and hit[1] == w._version:
        return hit[2]
    packed = build()
    _PACK_CACHE[key] = (weakref.ref(w, lambda _r, k=key: _PACK_CACHE.pop(k, None)), w._version, packed)
    return packed


def _threads() -> int:
    return int(torch.get_num_threads())


_HALF = (torch.float16, torch.bfloat16)


def _io_dtype(x: torch.Tensor) -> torch.dtype:
    """The custom ops' output type: x's for float16/bfloat16 x, else float32. On CUDA the kernels
    read half x and write half y themselves (one rounding of the fp32 epilogue on store); the CPU
    kernels compute from x widened to fp32 and the result is rounded once at the end."""
    return x.dtype if x.dtype in _HALF else torch.float32


def _cpu_in(t: Optional[torch.Tensor]) -> Any:
    return None if t is None else (t.float() if t.dtype in _HALF else t).numpy()


def _cpu_out(y: Any, x: torch.Tensor) -> torch.Tensor:
    out = torch.from_numpy(y)
    return out.to(x.dtype) if x.dtype in _HALF else out


@torch.library.custom_op("pyperfcore::w8a8_linear", mutates_args=())
def w8a8_linear(x: torch.Tensor, qweight: torch.Tensor, wscale: torch.Tensor, bias: Optional[torch.Tensor],
                residual: Optional[torch.Tensor], activation: str, symmetric: bool) -> torch.Tensor:
    """W8A8 linear on x [m, k] (float32, or float16/bfloat16: y then has x's type); qweight int8
    [n, k], wscale float32 [n]."""
    if x.is_cuda:
        from ..kernels import quant_gemm as tg

        colsum = _packed_for(qweight, lambda: qweight.sum(dim=1, dtype=torch.int32))
        return tg.linear_w8a8(x, qweight, wscale, colsum, bias, activation, residual, symmetric=symmetric,
                              out_dtype=_io_dtype(x))
    packed = _packed_for(qweight, lambda: _core().PackedInt8.from_int8(qweight.numpy(), wscale.numpy()))
    y = _core().linear_w8a8(_cpu_in(x), packed, None if bias is None else bias.numpy(), activation,
                            _cpu_in(residual), symmetric, _threads())
    return _cpu_out(y, x)


@w8a8_linear.register_fake
def _(x, qweight, wscale, bias, residual, activation, symmetric):
    return x.new_empty((x.shape[0], qweight.shape[0]), dtype=_io_dtype(x))


@torch.library.custom_op("pyperfcore::w8a8_linear_static", mutates_args=())
def w8a8_linear_static(x: torch.Tensor, qweight: torch.Tensor, wscale: torch.Tensor, act_scale: torch.Tensor,
                       bias: Optional[torch.Tensor], residual: Optional[torch.Tensor], activation: str) -> torch.Tensor:
    """W8A8 linear with a static (calibrated) symmetric activation scale ``act_scale`` [1] (CPU)."""
    if x.is_cuda:
        from .._errors import BackendUnavailable

        raise BackendUnavailable("act_quant='static' runs on the CPU only (the GPU kernels quantize per token)")
    packed = _packed_for(qweight, lambda: _core().PackedInt8.from_int8(qweight.numpy(), wscale.numpy()))
    y = _core().linear_w8a8_static(_cpu_in(x), packed, float(act_scale[0]), None if bias is None else bias.numpy(),
                                   activation, _cpu_in(residual), _threads())
    return _cpu_out(y, x)


@w8a8_linear_static.register_fake
def _(x, qweight, wscale, act_scale, bias, residual, activation):
    return x.new_empty((x.shape[0], qweight.shape[0]), dtype=_io_dtype(x))


@torch.library.custom_op("pyperfcore::half_linear", mutates_args=())
def half_linear(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], residual: Optional[torch.Tensor],
                activation: str) -> torch.Tensor:
    """Linear with float16/bfloat16 weight [n, k], fp32 math, fused epilogue; y has x's type for
    float16/bfloat16 x, else float32."""
    if x.is_cuda:
        from ..kernels import quant_gemm as tg

        return tg.linear_half(x, weight, bias, activation, residual, out_dtype=_io_dtype(x))
    kind = "float16" if weight.dtype == torch.float16 else "bfloat16"
    packed = _packed_for(weight, lambda: _core().PackedHalf.from_float(weight.float().numpy(), kind))
    y = _core().linear_half(_cpu_in(x), packed, None if bias is None else bias.numpy(), activation,
                            _cpu_in(residual), _threads())
    return _cpu_out(y, x)


@half_linear.register_fake
def _(x, weight, bias, residual, activation):
    return x.new_empty((x.shape[0], weight.shape[0]), dtype=_io_dtype(x))


class QLinear(nn.Module):
    """Drop-in for ``nn.Linear`` (inference only) running pyperfcore's INT8 or FP16/BF16 kernels.

    ``activation`` is applied inside the kernel's epilogue (set by :func:`optimize` when it fuses
    a following GELU/ReLU/SiLU). ``forward(x, residual=None)``.
    """

    def __init__(self, in_features: int, out_features: int, *, dtype: str = "int8", activation: str = "none",
                 act_quant: str = "asymmetric", has_bias: bool = True, has_smooth: bool = False) -> None:
        super().__init__()
        if activation not in ACTIVATIONS or act_quant not in ACT_QUANT or dtype not in ("int8", "float16", "bfloat16"):
            raise ValueError(f"bad QLinear configuration: dtype={dtype} activation={activation} act_quant={act_quant}")
        self.in_features, self.out_features = in_features, out_features
        self.dtype, self.activation, self.act_quant = dtype, activation, act_quant
        if dtype == "int8":
            self.register_buffer("qweight", torch.zeros(out_features, in_features, dtype=torch.int8))
            self.register_buffer("wscale", torch.ones(out_features, dtype=torch.float32))
        else:
            self.register_buffer("weight", torch.zeros(out_features, in_features,
                                                       dtype=torch.float16 if dtype == "float16" else torch.bfloat16))
        self.register_buffer("bias", torch.zeros(out_features) if has_bias else None)
        self.register_buffer("inv_smooth", torch.ones(in_features) if has_smooth else None)
        self.register_buffer("act_scale", torch.ones(1) if act_quant == "static" else None)
        self.fused_from = ""  # dotted path of the activation module folded into this layer, if any

    @classmethod
    def from_quantized(cls, layer: QuantizedLinear) -> "QLinear":
        m = cls(layer.in_features, layer.out_features, dtype=layer.dtype, activation=layer.activation,
                act_quant=layer.act_quant, has_bias=layer.bias is not None, has_smooth=layer.inv_smooth is not None)
        st = layer.state_dict()
        with torch.no_grad():
            if layer.dtype == "int8":
                m.qweight.copy_(torch.from_numpy(st["qweight"]))
                m.wscale.copy_(torch.from_numpy(st["wscale"]))
            else:
                m.weight.copy_(torch.from_numpy(st["weight"]).to(m.weight.dtype))
            if m.bias is not None:
                m.bias.copy_(torch.from_numpy(st["bias"]))
            if m.inv_smooth is not None:
                m.inv_smooth.copy_(torch.from_numpy(st["inv_smooth"]))
            if m.act_scale is not None:
                m.act_scale.copy_(torch.from_numpy(st["act_scale"]))
        return m

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, dtype={self.dtype}, "
                f"activation={self.activation}, bias={self.bias is not None}")

    def __getstate__(self) -> dict:
        # the native packing is a cache (rebuilt on first use): deepcopy / pickle leave it out
        state = self.__dict__.copy()
        state.pop("_eager", None)
        return state

    def _eager_packed(self) -> tuple:
        # The packed weights live on the module, keyed by the weight tensor and its version (and the
        # bias'), so an in-place update repacks and a stale packing is never used.
        bufs = self._buffers
        w = bufs["qweight"] if self.dtype == "int8" else bufs["weight"]
        bias, sc = bufs["bias"], bufs.get("act_scale")
        key = (id(w), w._version, None if bias is None else (id(bias), bias._version),
               None if sc is None else (id(sc), sc._version))
        cache = self.__dict__.get("_eager")
        if cache is None or cache[0] != key:
            if self.dtype == "int8":
                packed = _core().PackedInt8.from_int8(w.numpy(), bufs["wscale"].numpy())
            else:
                packed = _core().PackedHalf.from_float(w.float().numpy(), self.dtype)
            cache = (key, packed, None if bias is None else bias.numpy(), None if sc is None else float(sc[0]))
            self.__dict__["_eager"] = cache
        return cache

    def _eager_cpu(self, x2: torch.Tensor, r2: Optional[torch.Tensor]) -> torch.Tensor:
        # Same computation as the custom op, minus ~10 us of dispatcher overhead per call.
        cache = self._eager_packed()
        rn = None if r2 is None else r2.numpy()
        if cache[3] is not None:
            y = _core().linear_w8a8_static(x2.numpy(), cache[1], cache[3], cache[2], self.activation, rn,
                                           torch.get_num_threads())
        elif self.dtype == "int8":
            y = _core().linear_w8a8(x2.numpy(), cache[1], cache[2], self.activation, rn, self.act_quant == "symmetric",
                                    torch.get_num_threads())
        else:
            y = _core().linear_half(x2.numpy(), cache[1], cache[2], self.activation, rn, torch.get_num_threads())
        return torch.from_numpy(y)

    def _eager_cuda(self, x2: torch.Tensor, r2: Optional[torch.Tensor]) -> torch.Tensor:
        # The custom op's CUDA branch called directly: the dispatcher costs ~10 us of host time
        # per call (measured on the CPU op), what a small-batch GPU call pays on top of the launch.
        from ..kernels import quant_gemm as tg

        if self.dtype == "int8":
            q = self._buffers["qweight"]
            colsum = _packed_for(q, lambda: q.sum(dim=1, dtype=torch.int32))
            return tg.linear_w8a8(x2, q, self._buffers["wscale"], colsum, self._buffers["bias"], self.activation, r2,
                                  symmetric=self.act_quant == "symmetric", out_dtype=_io_dtype(x2))
        return tg.linear_half(x2, self._buffers["weight"], self._buffers["bias"], self.activation, r2,
                              out_dtype=_io_dtype(x2))

    def forward(self, x: torch.Tensor, residual: Optional[torch.Tensor] = None) -> torch.Tensor:
        shape = x.shape
        x2 = x if len(shape) == 2 else x.reshape(-1, self.in_features)
        # CUDA reads and writes float16/bfloat16 as they come (no conversion kernels around the
        # layer); the CPU kernels take float32
        if x2.dtype != torch.float32 and not (x2.dtype in _HALF and x2.is_cuda):
            x2 = x2.float()
        inv_smooth = self._buffers["inv_smooth"]
        if inv_smooth is not None:
            x2 = x2 * inv_smooth
        if not x2.is_contiguous():
            x2 = x2.contiguous()
        r2 = None
        if residual is not None:
            r2 = residual.reshape(-1, self.out_features)
            if r2.dtype != torch.float32 and not (r2.dtype in _HALF and r2.is_cuda):
                r2 = r2.float()
            r2 = r2.contiguous()
        if (type(x2) is torch.Tensor and not x2.requires_grad and _plain_eager()
                and (r2 is None or type(r2) is torch.Tensor)
                and not (x2.is_cuda and self._buffers.get("act_scale") is not None)):  # (static: the op raises)
            y = self._eager_cuda(x2, r2) if x2.is_cuda else self._eager_cpu(x2, r2)
        elif self._buffers.get("act_scale") is not None:
            y = w8a8_linear_static(x2, self.qweight, self.wscale, self.act_scale, self.bias, r2, self.activation)
        elif self.dtype == "int8":
            y = w8a8_linear(x2, self.qweight, self.wscale, self.bias, r2, self.activation, self.act_quant == "symmetric")
        else:
            y = half_linear(x2, self.weight, self.bias, r2, self.activation)
        if len(shape) != 2:
            y = y.reshape(*shape[:-1], self.out_features)
        return y if y.dtype == x.dtype else y.to(x.dtype)


def _plain_eager() -> bool:
    """True outside torch.compile / torch.export / jit tracing (where the custom ops must be seen)."""
    return not torch.compiler.is_compiling() and not torch.jit.is_tracing()


# ------------------------------------------------------------------ fused MLP chains
# optimize() marks each QLinear -> (Identity...) -> QLinear run inside an nn.Sequential (an MLP
# whose activation was fused into the first layer). In plain eager mode on CPU the Sequential runs
# such a run as ONE native call (_core().mlp_w8a8): one Python->C++ crossing and one output
# tensor instead of two, the intermediate kept in a native buffer, the same bits as the two layers.
# Anything else (hooks on the layers, grad, compile/export/tracing, other dtypes or devices, a
# Sequential edited afterwards) runs nn.Sequential.forward unchanged.
# Forward hooks only: the fused path runs without autograd (QLinear holds buffers, no parameters,
# and x must not require grad), so backward hooks could never fire on either path.
_HOOK_DICTS = tuple(getattr(torch.nn.modules.module, n, {}) for n in
                    ("_global_forward_hooks", "_global_forward_pre_hooks"))


def _no_hooks(mods: tuple) -> bool:
    if _HOOK_DICTS[0] or _HOOK_DICTS[1]:
        return False
    for m in mods:
        if m._forward_hooks or m._forward_pre_hooks:
            return False
    return True


def _chain_ok(a: QLinear, b: QLinear) -> bool:
    # the native MLP call quantizes per token: static layers run one by one
    return (a.dtype == "int8" and b.dtype == "int8" and b.in_features == a.out_features
            and b._buffers.get("inv_smooth") is None and a.act_quant != "static" and b.act_quant != "static")


def _mlp_eager(a: QLinear, b: QLinear, x: torch.Tensor) -> torch.Tensor:
    # the eager fast path: every step here costs ~1 us, about 1/20 of the b=1 MLP
    shape = x.shape
    x2 = x if len(shape) == 2 else x.reshape(-1, a.in_features)
    inv_smooth = a._buffers["inv_smooth"]
    if inv_smooth is not None:
        x2 = x2 * inv_smooth
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    ca, cb = a._eager_packed(), b._eager_packed()
    y = torch.from_numpy(_core().mlp_w8a8(x2.numpy(), ca[1], ca[2], a.activation, cb[1], cb[2], b.activation, None,
                                          a.act_quant == "symmetric", b.act_quant == "symmetric",
                                          torch.get_num_threads()))
    return y if len(shape) == 2 else y.reshape(*shape[:-1], b.out_features)


def _fused_forward(self: nn.Sequential, input: Any) -> Any:
    chains = self.__dict__.get("_pfc_chains")
    x = input
    if (not chains or type(x) is not torch.Tensor or x.dtype is not torch.float32 or not x.is_cpu
            or (x.requires_grad and torch.is_grad_enabled()) or not _plain_eager()):
        return nn.Sequential.forward(self, x)
    mods = tuple(self._modules.values())
    whole = chains.get(0)
    if (whole is not None and whole[0] == len(mods) - 1 and mods == whole[1]
            and mods[-1]._buffers["inv_smooth"] is None and _no_hooks(mods)):
        # the common case, an MLP Sequential that is one run: no per-module loop (~3-7 us a call)
        return _mlp_eager(mods[0], mods[-1], x)
    i, n = 0, len(mods)
    while i < n:
        c = chains.get(i)
        if c is not None:
            end, run = c
            # the same module objects as when the run was found (the Sequential may have been
            # edited since), the second layer still unsmoothed, no hooks to honour, and x (the
            # output of the modules before) still a plain float32 CPU tensor
            if (mods[i:end + 1] == run and run[-1]._buffers["inv_smooth"] is None and _no_hooks(run)
                    and type(x) is torch.Tensor and x.dtype is torch.float32 and x.is_cpu
                    and not (x.requires_grad and torch.is_grad_enabled())):
                x = _mlp_eager(run[0], run[-1], x)
                i = end + 1
                continue
        x = mods[i](x)
        i += 1
    return x


# pickle stores a bound method as getattr(instance, __name__): "forward" resolves on unpickling
_fused_forward.__name__ = "forward"


def fuse_mlp_chains(module: nn.Module) -> int:
    """Let each ``nn.Sequential`` inside ``module`` run its QLinear -> Identity* -> QLinear runs
    (INT8, the activation fused into the first layer) as one native call in eager CPU mode.

    Called by :func:`optimize`; call it after loading saved layers into a model. The module's
    class is unchanged (the Sequential gets an instance-level ``forward`` that falls back to
    ``nn.Sequential.forward`` whenever the fused call does not apply). Returns the number of runs.
    """
    found = 0
    for seq in module.modules():
        if type(seq) is not nn.Sequential:
            continue
        mods = tuple(seq._modules.values())
        chains: dict[int, tuple[int, tuple]] = {}
        i = 0
        while i < len(mods):
            j = i + 1
            if isinstance(mods[i], QLinear):
                while j < len(mods) and type(mods[j]) is nn.Identity:
                    j += 1
                if j < len(mods) and isinstance(mods[j], QLinear) and _chain_ok(mods[i], mods[j]):
                    chains[i] = (j, mods[i:j + 1])
                    i = j + 1
                    continue
            i += 1
        if chains:
            seq.__dict__["_pfc_chains"] = chains
            # a bound method (torch.export reads forward.__code__); deepcopy rebinds it to the copy,
            # pickle stores it as a name lookup, so an unpickled model runs the plain
            # nn.Sequential.forward (same results) until fuse_mlp_chains() is called again
            seq.forward = types.MethodType(_fused_forward, seq)
            found += len(chains)
    return found


_ACT_MODULES = {nn.ReLU: "relu", nn.SiLU: "silu"}


def _activation_name(mod: Any) -> str | None:
    if isinstance(mod, nn.GELU):
        return "gelu_tanh" if mod.approximate == "tanh" else "gelu"
    for t, name in _ACT_MODULES.items():
        if isinstance(mod, t):
            return name
    # Hugging Face's GELUActivation (erf GELU) without importing transformers.
    if type(mod).__name__ == "GELUActivation" and getattr(mod, "act", None) in (nn.functional.gelu,):
        return "gelu"
    return None


def quantized_layers(module: nn.Module) -> dict[str, QLinear]:
    return {n: m for n, m in module.named_modules() if isinstance(m, QLinear)}


def _excluded(name: str, exclude: Iterable[str]) -> bool:
    return any(name == p or fnmatch.fnmatchcase(name, p) for p in exclude)


def _set_child(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, child, new)


@torch.no_grad()
def _collect_inputs(module: nn.Module, names: list[str], calibration: Iterable[Any],
                    keep: set[str]) -> tuple[dict[str, np.ndarray], dict[str, list[np.ndarray]]]:
    """One pass over the calibration batches: per layer the per-channel max |x| of its inputs and,
    for the layers in ``keep``, the |x| rows themselves (for static activation ranges)."""
    amax: dict[str, np.ndarray] = {}
    rows: dict[str, list[np.ndarray]] = {}
    hooks = []
    for name in names:
        def hook(mod: nn.Module, args: tuple, name: str = name) -> None:
            x = args[0].detach().float().reshape(-1, args[0].shape[-1])
            if not torch.isfinite(x).all():
                raise ValueError(f"calibration activations of {name} contain NaN or infinity")
            a = x.abs().cpu().numpy()
            m = a.max(axis=0, initial=0.0)
            amax[name] = m if name not in amax else np.maximum(amax[name], m)
            if name in keep:
                rows.setdefault(name, []).append(a)

        hooks.append(module.get_submodule(name).register_forward_pre_hook(hook))
    seen = 0
    try:
        for batch in calibration:
            seen += 1
            if isinstance(batch, dict):
                module(**batch)
            elif isinstance(batch, (tuple, list)):
                module(*batch)
            else:
                module(batch)
    finally:
        for h in hooks:
            h.remove()
    if seen == 0:
        raise ValueError("the calibration set is empty; pass at least one batch (or calibration=None)")
    return amax, rows


@torch.no_grad()
def optimize(module: nn.Module, dtype: str = "int8", *, calibration: Iterable[Any] | None = None,
             exclude: Iterable[str] = (), smooth_alpha: float | None = None,
             act_quant: str | dict[str, str] = "asymmetric",
             fuse_activations: bool = True, weight_quant: str = "channel",
             calib_method: str = "entropy", fuse_attention: bool = True) -> nn.Module:
    """Replace the ``nn.Linear`` layers of ``module`` in place with :class:`QLinear` and return it.

    Parameters
    ----------
    dtype : ``"int8"`` (W8A8: per-channel INT8 weights, per-token INT8 activations), ``"fp16"``
        (``"float16"``) or ``"bf16"`` (``"bfloat16"``): half-size weights, fp32 math.
    calibration : iterable of inputs to ``module`` (tensors, tuples or kwargs dicts), used for
        SmoothQuant (``smooth_alpha``). Without it, the defaults need no data.
    exclude : layer names or fnmatch patterns (``"encoder.layer.*.output.dense"``) kept in fp32.
    smooth_alpha : SmoothQuant migration strength in [0, 1]; needs ``calibration``.
    act_quant : ``"asymmetric"`` (default) or ``"symmetric"``: per token at run time, no data
        needed; ``"static"``: one symmetric scale per layer from the ``calibration`` batches (the
        range ``calib_method`` finds in each layer's inputs, after smoothing), CPU only. A dict maps
        layer names or fnmatch patterns to a mode per layer, the first matching entry winning
        (``{"encoder.layer.*.output.dense": "asymmetric", "*": "static"}``); layers matching none
        are ``"asymmetric"``.
    calib_method : range method of the static scales: ``"entropy"`` (default), ``"percentile"``,
        ``"mse"`` or ``"minmax"`` (see :func:`pyperfcore.quant.calibrate`).
    weight_quant : ``"channel"`` (default: a symmetric scale per output channel) or ``"tensor"``
        (one scale per weight matrix; int8 only).
    fuse_attention : modules that declare a ``native_attention`` switch (the encoders of
        :mod:`pyperfcore.quant.bert`) run pyperfcore's fused attention kernel in CPU inference.
    fuse_activations : fuse an activation that directly follows a linear layer (the next module
        of an ``nn.Sequential``, or Hugging Face's ``dense`` + ``intermediate_act_fn`` pair) into
        the kernel's epilogue, replacing the activation module with ``nn.Identity``.

    The module keeps its class and methods; it is put in eval mode. Layers whose weights are not
    finite raise ``ValueError``; an empty calibration set raises ``ValueError``.
    """
    kind = {"int8": "int8", "fp16": "float16", "float16": "float16", "bf16": "bfloat16", "bfloat16": "bfloat16"}.get(dtype)
    if kind is None:
        raise ValueError(f"dtype must be 'int8', 'fp16' or 'bf16', got {dtype!r}")
    if not isinstance(module, nn.Module):
        raise TypeError(f"optimize expects a torch.nn.Module, got {type(module).__name__}")
    if weight_quant not in ("channel", "tensor") or (weight_quant == "tensor" and kind != "int8"):
        raise ValueError(f"weight_quant must be 'channel' or 'tensor' (int8 only), got {weight_quant!r} with dtype={dtype!r}")
    if smooth_alpha is not None and (calibration is None or kind != "int8"):
        raise ValueError("smooth_alpha needs calibration data and dtype='int8'")
    modes = dict(act_quant) if isinstance(act_quant, dict) else {"*": act_quant}
    for pattern, mode in modes.items():
        if not isinstance(pattern, str) or mode not in ACT_QUANT:
            raise ValueError(f"act_quant must be one of {ACT_QUANT} (or a dict of layer pattern -> mode), "
                             f"got {pattern!r}: {mode!r}")

    def mode_of(name: str) -> str:
        return next((mo for pat, mo in modes.items() if _excluded(name, (pat,))), "asymmetric")

    static = any(mo == "static" for mo in modes.values())
    if static and (calibration is None or kind != "int8"):
        raise ValueError("act_quant='static' needs calibration data and dtype='int8'")
    from .calibration import METHODS, calibrate

    if calib_method not in METHODS:
        raise ValueError(f"calib_method must be one of {METHODS}, got {calib_method!r}")
    if isinstance(exclude, str):
        exclude = (exclude,)
    exclude = tuple(exclude)
    module.eval()
    targets = [n for n, m in module.named_modules() if type(m) is nn.Linear and not _excluded(n, exclude)]
    if isinstance(module, nn.Linear) and "" in targets:
        raise TypeError("optimize replaces layers inside a module; wrap a bare nn.Linear in nn.Sequential")
    # Which activation follows each linear layer (fusable into its epilogue).
    fused: dict[str, tuple[nn.Module, str, str, str]] = {}
    if fuse_activations:
        for pname, parent in module.named_modules():
            prefix = f"{pname}." if pname else ""
            if isinstance(parent, nn.Sequential):
                kids = list(parent.named_children())
                for (a, ma), (b, mb) in zip(kids, kids[1:]):
                    act = _activation_name(mb)
                    if act and f"{prefix}{a}" in targets:
                        fused[f"{prefix}{a}"] = (parent, b, act, f"{prefix}{b}")
            dense, fn = getattr(parent, "dense", None), getattr(parent, "intermediate_act_fn", None)
            if isinstance(dense, nn.Linear) and isinstance(fn, nn.Module) and f"{prefix}dense" in targets:
                act = _activation_name(fn)
                if act:
                    fused[f"{prefix}dense"] = (parent, "intermediate_act_fn", act, f"{prefix}intermediate_act_fn")
    smooth: dict[str, np.ndarray] = {}
    act_scale: dict[str, float] = {}
    if smooth_alpha is not None or static:
        from .calibration import smooth_factors

        keep = {n for n in targets if mode_of(n) == "static"}
        amax, rows = _collect_inputs(module, targets, calibration, keep)  # type: ignore[arg-type]
        for name in targets:
            if smooth_alpha is not None and name in amax:
                smooth[name] = smooth_factors(amax[name], module.get_submodule(name).weight.detach().float().numpy(), smooth_alpha)
            if mode_of(name) == "static":
                if name not in rows:
                    raise ValueError(f"layer {name!r} saw no calibration inputs; exclude it or pass batches that reach it")
                seen = rows.pop(name)
                if name in smooth:  # the kernel quantizes x / s: calibrate that
                    seen = [a / smooth[name][None, :] for a in seen]
                t = calibrate(seen, calib_method)
                act_scale[name] = t / 127.0 if t > 0 else 1.0
    for name in targets:
        lin = module.get_submodule(name)
        act = fused[name][2] if name in fused else "none"
        try:
            q = QuantizedLinear(lin.weight, lin.bias, activation=act, dtype=kind,
                                act_quant=mode_of(name) if kind == "int8" else "asymmetric",
                                smooth=smooth.get(name), weight_quant=weight_quant, act_scale=act_scale.get(name))
        except ValueError as exc:
            raise ValueError(f"layer {name!r}: {exc}") from exc
        new = QLinear.from_quantized(q).to(lin.weight.device)
        _set_child(module, name, new)
        if name in fused:
            parent, attr, _, path = fused[name]
            setattr(parent, attr, nn.Identity())
            new.fused_from = path  # the activation module it replaced (save/load restores this)
    fuse_mlp_chains(module)
    if fuse_attention:
        # modules that declare a native attention switch (pyperfcore.quant.bert's encoders)
        for sub in module.modules():
            if hasattr(type(sub), "native_attention"):
                sub.native_attention = True
    return module
