"""Launch helpers of the prepost CUDA backends, kept to the few C calls a launch needs.

``torch.cuda.current_stream(dev).cuda_stream`` builds a Stream object and ``with
torch.cuda.device(dev)`` a context manager: together several microseconds per call, as much as
the normalize kernel of 32 images takes on an H100. When the tensor's device is already the
current one (the common case) a launch needs only the raw handle of its current stream.

Finite-value policy of the GPU ops (see docs/prepost.md): by default a kernel never makes the
host wait; a row with NaN / infinity is poisoned in the result (NaN values, index -1, NaN scale).
``check_finite=True`` asks the kernel for per-row flags and raises ValueError at the call site,
which costs one synchronization. NMS always checks: its result size needs a synchronization anyway.
"""
from __future__ import annotations

from typing import Any, Callable

_get_device: Callable[[], int] | None = None
_raw_stream: Callable[[int], int] | None = None


def _bind() -> None:
    global _get_device, _raw_stream
    import torch

    get = getattr(torch._C, "_cuda_getDevice", None)
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    if get is None or raw is None:  # an older / different torch: the public (slower) calls
        get = torch.cuda.current_device

        def raw(index: int) -> int:
            return int(torch.cuda.current_stream(index).cuda_stream)

    _get_device, _raw_stream = get, raw


def launch(t: Any, fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args, stream)`` on the current stream of tensor ``t``'s device, with that device
    current during the call (restored after when it was not)."""
    if _raw_stream is None:
        _bind()
    idx = t.get_device()
    if _get_device() == idx:  # type: ignore[misc]
        return fn(*args, _raw_stream(idx))  # type: ignore[misc]
    import torch

    with torch.cuda.device(idx):
        return fn(*args, _raw_stream(idx))  # type: ignore[misc]


def check_kw(check_finite: bool, x: Any, backend: str | None) -> dict[str, bool]:
    """Keyword for a backend call: ``check_finite=True`` only reaches GPU backends (the CPU ones
    always check; their check costs no synchronization)."""
    if not check_finite:
        return {}
    if backend in ("cuda", "triton"):
        return {"check_finite": True}
    if backend is None and getattr(x, "is_cuda", False) is True:
        return {"check_finite": True}
    return {}
