"""A small registry of backends per op: ``reference`` (numpy), ``cpu`` (C++), ``cuda``, ``triton``.

A public op picks the best available backend for its input's device, or the one named by
``backend=``; asking for one that was not built or cannot run here raises
:class:`~pyperfcore.BackendUnavailable` saying why. It never falls back silently.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from typing import Any, Callable

from ._errors import BackendUnavailable

BACKENDS = ("reference", "cpu", "cuda", "triton")


def is_torch_tensor(x: Any) -> bool:
    """True for a torch.Tensor, checked without importing torch."""
    t = type(x)
    return t.__module__.startswith("torch") and hasattr(x, "data_ptr") and hasattr(x, "is_cuda")


def device_of(x: Any) -> str:
    """``cpu`` or ``cuda`` for a torch tensor; ``cpu`` for anything numpy can read."""
    if is_torch_tensor(x):
        return "cuda" if x.is_cuda else "cpu"
    return "cpu"


def _cpu_ok() -> str | None:
    try:
        from . import _runtime

        _runtime._core()
    except BackendUnavailable as exc:
        return str(exc)
    return None


def _cuda_ok() -> str | None:
    from . import _runtime

    mod = _runtime._cuda_module()
    if mod is None:
        return "the cuda backend was not built (build with PYPERFCORE_CUDA=ON and nvcc on PATH)"
    status = mod.status()
    return None if status == "ok" else f"the cuda backend cannot run here: {status}"


def _triton_ok() -> str | None:
    if importlib.util.find_spec("triton") is None or importlib.util.find_spec("torch") is None:
        return "the triton backend needs the 'triton' and 'torch' packages (pip install pyperfcore[triton])"
    return None


def _triton_interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@dataclass(frozen=True)
class Impl:
    fn: Callable[..., Any]
    devices: tuple[str, ...]


_CHECKS: dict[str, Callable[[], str | None]] = {
    "reference": lambda: None,
    "cpu": _cpu_ok,
    "cuda": _cuda_ok,
    "triton": _triton_ok,
}

# Order of preference per device when the caller names no backend.
_PREFERENCE = {"cpu": ("cpu", "reference"), "cuda": ("cuda", "triton")}

_REGISTRY: dict[str, dict[str, Impl]] = {}


def register(op: str, backend: str, devices: tuple[str, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: register ``fn`` as the ``backend`` implementation of ``op`` for ``devices``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY.setdefault(op, {})[backend] = Impl(fn, devices)
        return fn

    return deco


def backends_for(op: str) -> list[str]:
    """Names of the backends registered for ``op`` (built or not)."""
    return list(_REGISTRY.get(op, {}))


# Backends whose check has passed once: a built module, an installed package or a present
# driver does not go away while the process runs, so a success is not re-checked on every call
# (the checks cost a find_spec or a driver query each, which GPU launch paths cannot afford).
# A failure is re-checked each time: its reason is reported, and it may be fixed at run time.
_PASSED: set[str] = set()


def _check(backend: str) -> str | None:
    if backend in _PASSED:
        return None
    why = _CHECKS[backend]()
    if why is None:
        _PASSED.add(backend)
    return why


def available(op: str, backend: str) -> str | None:
    """None if ``backend`` can run ``op`` here, else the reason it cannot."""
    if backend not in _REGISTRY.get(op, {}):
        return f"op {op!r} has no {backend!r} backend (it has: {', '.join(backends_for(op))})"
    return _check(backend)


def select(op: str, x: Any, backend: str | None) -> Callable[..., Any]:
    """The implementation of ``op`` for input ``x``: ``backend`` if given, else the best one."""
    impls = _REGISTRY.get(op, {})
    dev = device_of(x)
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        why = available(op, backend)
        if why is not None:
            raise BackendUnavailable(why)
        impl = impls[backend]
        if dev not in impl.devices and not (backend == "triton" and dev == "cpu" and _triton_interpret()):
            raise BackendUnavailable(
                f"backend {backend!r} of {op!r} runs on {'/'.join(impl.devices)} inputs, but the input is on {dev}"
                + (" (set TRITON_INTERPRET=1 to run triton kernels on CPU tensors)" if backend == "triton" else "")
            )
        return impl.fn
    reasons = []
    for name in _PREFERENCE[dev]:
        if name not in impls:
            continue
        why = _check(name)
        if why is None:
            return impls[name].fn
        reasons.append(why)
    raise BackendUnavailable(f"no backend of {op!r} can run on a {dev} input here: " + "; ".join(reasons))
