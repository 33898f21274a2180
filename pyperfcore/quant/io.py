"""Save and load quantized layers: tensors as safetensors, configuration as a small JSON.

Layout of a saved directory: ``quant.safetensors`` (``<layer>.qweight`` int8 [out, in],
``<layer>.wscale`` float32 [out], ``<layer>.weight`` half-rounded float32 for fp16/bf16 layers,
optional ``<layer>.bias``, ``<layer>.inv_smooth`` and, for static activation quantization,
``<layer>.act_scale`` float32 [1]) and ``quant.json``
(``{"format": "pyperfcore.quant", "version": 1, "layers": {name: config}}``). Loading does not
re-quantize: the int8 weights and scales are used as saved, after validation (shapes, value
range, finite positive scales); anything malformed is a ``ValueError``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from .linear import QuantizedLinear

__all__ = ["save", "load", "save_layers", "load_layers", "register", "load_registered"]

FORMAT, VERSION = "pyperfcore.quant", 1
_TENSORS, _CONFIG = "quant.safetensors", "quant.json"
_KEYS = ("qweight", "wscale", "weight", "bias", "inv_smooth", "act_scale")


def save_layers(layers: dict[str, QuantizedLinear], path: str | Path, extra: dict[str, dict[str, Any]] | None = None) -> Path:
    """Write ``{name: QuantizedLinear}`` to directory ``path`` (created if needed)."""
    from safetensors.numpy import save_file

    d = Path(path)
    d.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    configs: dict[str, dict[str, Any]] = {}
    for name, layer in layers.items():
        if "/" in name or not name:
            raise ValueError(f"invalid layer name {name!r}")
        for k, v in layer.state_dict().items():
            tensors[f"{name}.{k}"] = np.ascontiguousarray(v)
        configs[name] = {**layer.config(), **(extra or {}).get(name, {})}
    save_file(tensors, str(d / _TENSORS))
    (d / _CONFIG).write_text(json.dumps({"format": FORMAT, "version": VERSION, "layers": configs}, indent=2, sort_keys=True))
    return d


def _read(path: str | Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    from safetensors.numpy import load_file

    d = Path(path)
    try:
        meta = json.loads((d / _CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read {d / _CONFIG}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise ValueError(f"{d / _CONFIG} is not a {FORMAT} v{VERSION} file")
    if not isinstance(meta.get("layers"), dict):
        raise ValueError(f"{d / _CONFIG}: 'layers' must be an object")
    try:
        tensors = load_file(str(d / _TENSORS))
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise ValueError(f"cannot read {d / _TENSORS}: {exc}") from exc
    return meta, tensors


def load_layers(path: str | Path) -> dict[str, QuantizedLinear]:
    """Read layers written by :func:`save_layers` (or :func:`save`)."""
    meta, tensors = _read(path)
    out: dict[str, QuantizedLinear] = {}
    for name, cfg in meta["layers"].items():
        if not isinstance(cfg, dict):
            raise ValueError(f"layer {name!r}: configuration must be an object")
        state = {k: tensors[f"{name}.{k}"] for k in _KEYS if f"{name}.{k}" in tensors}
        try:
            out[name] = QuantizedLinear.from_state(state, cfg)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"layer {name!r}: incomplete saved state ({exc})") from exc
    return out


def save(module: Any, path: str | Path) -> Path:
    """Save the :class:`~pyperfcore.quant.torch_ops.QLinear` layers of an optimized torch module."""
    from .torch_ops import quantized_layers

    layers, extra = {}, {}
    for name, m in quantized_layers(module).items():
        state = {k: getattr(m, k).detach().cpu() for k in _KEYS if getattr(m, k, None) is not None}
        np_state = {k: (v.float().numpy() if k == "weight" else v.numpy()) for k, v in state.items()}
        layers[name] = QuantizedLinear.from_state(np_state, {"in_features": m.in_features, "out_features": m.out_features,
                                                             "activation": m.activation, "dtype": m.dtype,
                                                             "act_quant": m.act_quant})
        extra[name] = {"fused_from": m.fused_from}
    if not layers:
        raise ValueError("the module has no quantized layers; run pyperfcore.quant.optimize first")
    return save_layers(layers, path, extra)


def load(module: Any, path: str | Path) -> Any:
    """Load saved layers into a float torch module (its ``nn.Linear`` layers by name), in place."""
    from torch import nn

    from .torch_ops import QLinear, _set_child, fuse_mlp_chains

    meta, _ = _read(path)
    layers = load_layers(path)
    module.eval()
    for name, layer in layers.items():
        try:
            old = module.get_submodule(name)
        except AttributeError as exc:
            raise ValueError(f"saved layer {name!r} does not exist in the module") from exc
        if not isinstance(old, (nn.Linear, QLinear)) or (old.in_features, old.out_features) != (layer.in_features, layer.out_features):
            raise ValueError(f"saved layer {name!r} does not match the module's layer {old}")
        new = QLinear.from_quantized(layer)
        fused = meta["layers"][name].get("fused_from", "")
        if fused:
            _set_child(module, fused, nn.Identity())
            new.fused_from = fused
        _set_child(module, name, new)
    fuse_mlp_chains(module)  # as optimize() does: Linear -> act -> Linear runs as one native call
    return module


def register(registry: Any, name: str, module: Any, *, metadata: dict[str, Any] | None = None,
             by: str | None = None) -> Any:
    """Store an optimized module's quantized layers in a :class:`pyperfcore.ops.Registry` as a new
    version of ``name`` (artifacts ``quant.safetensors`` and ``quant.json``); returns the
    registry's ``ModelVersion``."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pyperfcore-quant-") as d:
        saved = save(module, d)
        return registry.register(name, {_TENSORS: saved / _TENSORS, _CONFIG: saved / _CONFIG},
                                 metadata=metadata, by=by)


def load_registered(registry: Any, name: str, module: Any, ref: Any = "latest") -> Any:
    """Load the quantized layers registered as ``name:ref`` (an alias such as ``"production"`` or a
    version) into the float torch ``module``, in place, as :func:`load` does. The registry checks
    each artifact against its SHA-256 before it is read."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pyperfcore-quant-") as d:
        for artifact in (_TENSORS, _CONFIG):
            shutil.copyfile(registry.artifact_path(name, ref, artifact), Path(d) / artifact)
        return load(module, d)

