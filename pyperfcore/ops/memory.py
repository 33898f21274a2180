"""Memory planning for torch modules: the footprint (weights, buffers, activations at a batch
size) and, when it exceeds one device, a layer-wise sharding plan that :func:`place` applies.

Activations are measured, not guessed: the module is copied to torch's ``meta`` device (shapes
and dtypes without storage, so a model larger than this machine's memory can be planned) and run
once on an input of the requested batch size; forward hooks record every unit's output bytes.
For inference the activation memory a unit needs is its input plus its output (the input is
freed after the unit ran); the peak over units is what a device must hold besides its weights.

``import torch`` happens inside the functions, never at import time.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

__all__ = ["UnitFootprint", "Footprint", "footprint", "ShardPlan", "shard_plan", "place"]


@dataclass
class UnitFootprint:
    name: str
    param_bytes: int      # weights and buffers
    input_bytes: int
    output_bytes: int

    @property
    def activation_bytes(self) -> int:
        """What running this unit needs live besides weights: its input and its output."""
        return self.input_bytes + self.output_bytes


@dataclass
class Footprint:
    batch_size: int
    weight_bytes: int             # parameters
    buffer_bytes: int             # e.g. batch-norm statistics
    peak_activation_bytes: int    # max over units of input + output
    total_activation_bytes: int   # every unit output kept (an upper bound, e.g. for training)
    units: list = field(default_factory=list)

    @property
    def inference_bytes(self) -> int:
        return self.weight_bytes + self.buffer_bytes + self.peak_activation_bytes

    def to_dict(self) -> dict:
        return {"batch_size": self.batch_size, "weight_bytes": self.weight_bytes,
                "buffer_bytes": self.buffer_bytes,
                "peak_activation_bytes": self.peak_activation_bytes,
                "total_activation_bytes": self.total_activation_bytes,
                "inference_bytes": self.inference_bytes,
                "units": [dict(u.__dict__, activation_bytes=u.activation_bytes) for u in self.units]}


def _nbytes(obj) -> int:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(o) for o in obj)
    if isinstance(obj, Mapping):
        return sum(_nbytes(o) for o in obj.values())
    return 0


def _module_bytes(mod) -> tuple:
    p = sum(t.numel() * t.element_size() for t in mod.parameters())
    b = sum(t.numel() * t.element_size() for t in mod.buffers())
    return p, b


def _as_inputs(example, batch_size: int, dtype, device):
    """``example``: a shape tuple of one sample (``(64,)``), a tensor whose first dimension is
    the batch (resized to ``batch_size``), or a tuple of those for several inputs."""
    import torch

    if isinstance(example, torch.Tensor):
        shape = (batch_size, *example.shape[1:])
        return (torch.empty(shape, dtype=example.dtype, device=device),)
    if isinstance(example, (tuple, list)) and example and all(isinstance(v, int) for v in example):
        if any(v < 0 for v in example):
            raise ValueError(f"sample shape must be non-negative, got {tuple(example)}")
        return (torch.empty((batch_size, *example), dtype=dtype, device=device),)
    if isinstance(example, (tuple, list)) and example:
        return tuple(_as_inputs(e, batch_size, dtype, device)[0] for e in example)
    raise TypeError("example is a per-sample shape tuple, a batch tensor, or a tuple of them")


def _units(module, units: Sequence[str] | None) -> list:
    named = dict(module.named_modules())
    if units is None:
        children = list(module.named_children())
        return children if children else [("", module)]
    out = []
    for u in units:
        if u not in named:
            raise KeyError(f"module has no submodule {u!r}")
        out.append((u, named[u]))
    return out


def footprint(module, example, batch_size: int = 1, *, dtype=None, units: Sequence[str] | None = None,
              device: str = "meta") -> Footprint:
    """Memory footprint of ``module`` at ``batch_size``.

    ``example``: the shape of one sample, e.g. ``(64,)`` or ``(3, 224, 224)`` (``dtype``,
    default float32), or an example batch tensor. ``units``: the submodules to account
    separately (default: the top-level children, in the order they run). ``device='meta'``
    runs without allocating; pass ``'cpu'`` for modules with ops that have no meta kernel.
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    dtype = dtype or torch.float32
    wb, bb = _module_bytes(module)
    probe = copy.deepcopy(module).to(device)
    probe.eval()
    seen: dict = {}
    order: list = []
    hooks = []
    for name, sub in _units(probe, units):
        def hook(mod, args, kwargs, out, name=name):
            if name not in seen:
                order.append(name)
            seen[name] = (_nbytes(args) + _nbytes(kwargs), _nbytes(out))
        hooks.append(sub.register_forward_hook(hook, with_kwargs=True))
    inputs = _as_inputs(example, batch_size, dtype, device)
    try:
        with torch.no_grad():
            out = probe(*inputs)
    finally:
        for h in hooks:
            h.remove()
    real = dict(_units(module, units))
    ulist = []
    for name in order:
        p, b = _module_bytes(real[name])
        ulist.append(UnitFootprint(name, p + b, *seen[name]))
    in_b, out_b = _nbytes(inputs), _nbytes(out)
    peak = max([u.activation_bytes for u in ulist] + [in_b + out_b])
    total = in_b + sum(u.output_bytes for u in ulist)
    return Footprint(batch_size, wb, bb, peak, total, ulist)


@dataclass
class ShardPlan:
    assignments: dict          # unit name -> device name, in run order
    device_bytes: dict         # device name -> bytes planned (weights + peak activations)
    capacities: dict
    footprint: Footprint

    def devices(self) -> list:
        return list(dict.fromkeys(self.assignments.values()))

    def to_dict(self) -> dict:
        return {"assignments": dict(self.assignments), "device_bytes": dict(self.device_bytes),
                "capacities": dict(self.capacities), "footprint": self.footprint.to_dict()}


def shard_plan(module, example, capacities: Mapping[str, int], batch_size: int = 1, *,
               reserve: float = 0.1, units: Sequence[str] | None = None, dtype=None,
               fp: Footprint | None = None) -> ShardPlan:
    """Split ``module``'s units, in run order, over ``capacities`` (device name -> bytes, in
    the order to fill): each device takes consecutive units while its weights plus the largest
    activation among them fit in ``(1 - reserve)`` of its capacity (the reserve is left for the
    allocator, workspaces and fragmentation). A single device is used when everything fits.

    Raises ``ValueError`` naming the unit that fits nowhere, or how many bytes are missing.
    """
    if not capacities:
        raise ValueError("need at least one device capacity")
    if not 0 <= reserve < 1:
        raise ValueError("reserve is a fraction in [0, 1)")
    for d, c in capacities.items():
        if not isinstance(c, (int, float)) or c <= 0:
            raise ValueError(f"capacity of {d!r} must be positive bytes, got {c!r}")
    fp = fp or footprint(module, example, batch_size, units=units, dtype=dtype)
    budget = {d: int(c * (1 - reserve)) for d, c in capacities.items()}
    devs = list(capacities)
    assign: dict = {}
    used = {d: 0 for d in devs}
    i, k = 0, 0
    w_on: dict = {d: 0 for d in devs}
    a_on: dict = {d: 0 for d in devs}
    while i < len(fp.units):
        u = fp.units[i]
        if k >= len(devs):
            left = sum(x.param_bytes for x in fp.units[i:])
            raise ValueError(f"the model does not fit: units from {u.name!r} on need at least "
                             f"{left} more bytes of weights than the devices have")
        d = devs[k]
        need = w_on[d] + u.param_bytes + max(a_on[d], u.activation_bytes)
        if need <= budget[d]:
            assign[u.name] = d
            w_on[d] += u.param_bytes
            a_on[d] = max(a_on[d], u.activation_bytes)
            used[d] = w_on[d] + a_on[d]
            i += 1
            continue
        if w_on[d] == 0 and a_on[d] == 0:
            alone = u.param_bytes + u.activation_bytes
            if all(alone > budget[x] for x in devs[k:]):
                raise ValueError(f"unit {u.name!r} needs {alone} bytes, more than any remaining "
                                 f"device holds; split it (pass finer units=)")
        k += 1
    return ShardPlan(assign, {d: b for d, b in used.items() if b}, dict(capacities), fp)


def place(module, plan: ShardPlan, devices: Mapping[str, Any] | None = None):
    """Move each unit to its planned device and make its inputs follow it (a forward pre-hook
    moves tensor arguments to the unit's device), so ``module(x)`` runs across devices and
    returns on the last one. ``devices`` maps plan device names to torch devices (default: the
    names themselves, e.g. ``cuda:0``). Returns the module and the hook handles."""
    import torch

    devices = dict(devices or {})
    named = dict(module.named_modules())

    def to_dev(obj, dev):
        if isinstance(obj, torch.Tensor):
            return obj.to(dev)
        if isinstance(obj, tuple):
            return tuple(to_dev(o, dev) for o in obj)
        if isinstance(obj, list):
            return [to_dev(o, dev) for o in obj]
        if isinstance(obj, dict):
            return {k: to_dev(v, dev) for k, v in obj.items()}
        return obj

    handles = []
    for name, dname in plan.assignments.items():
        if name not in named:
            raise KeyError(f"plan names unit {name!r}, which the module does not have")
        dev = torch.device(devices.get(dname, dname))
        sub = named[name]
        sub.to(dev)

        def pre(mod, args, kwargs, dev=dev):
            return to_dev(args, dev), to_dev(kwargs, dev)
        handles.append(sub.register_forward_pre_hook(pre, with_kwargs=True))
    return module, handles
