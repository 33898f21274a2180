"""Warm a model up before it serves traffic.

The first call at a new batch size pays one-time costs that a serving process should not put on
a request: on a GPU, Triton compiles and autotunes the linear kernels per power-of-two bucket of
rows, the TMA and small-M picks time their candidates, and the direct launches are recorded; on
the CPU, packed weights and workspaces are made. :func:`warmup` calls the model once per batch
size (first-call time), then a few more times (steady time), and reports what it saw.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._backends import is_torch_tensor
from .report import dump_json

__all__ = ["WarmupReport", "warmup", "default_batch_sizes"]

# What the GPU linear kernels remember per process (pyperfcore.kernels.quant_gemm), counted before
# and after: autotuned configs, TMA picks (timed and forced), small-M picks, direct launches.
_GPU_STATE = {"autotuned": "_BEST", "tma_picks": "_PICK", "tma_forced": "_FORCED", "small_m_picks": "_SMALL",
              "direct_launches": "_DIRECT"}


@dataclass
class WarmupReport:
    """Per batch size: the first call's and the steady (median of ``repeats``) wall time in ms,
    synchronized on CUDA; ``gpu_state``: entries the GPU kernels added during the warm-up;
    ``picks``: the kernel choices made during it (autotuned configs, TMA and small-M picks with
    the times that decided them), one line each."""

    batch_sizes: list[int]
    first_ms: list[float]
    steady_ms: list[float]
    device: str
    gpu_state: dict[str, int] = field(default_factory=dict)
    picks: list[str] = field(default_factory=list)

    def table(self) -> str:
        out = [f"warm-up on {self.device}", f"{'batch':>7}  {'first ms':>10}  {'steady ms':>10}  {'first/steady':>12}"]
        for b, f, s in zip(self.batch_sizes, self.first_ms, self.steady_ms):
            ratio = f"{f / s:.1f}x" if s > 0 else "-"
            out.append(f"{b:>7}  {f:>10.3f}  {s:>10.3f}  {ratio:>12}")
        if any(self.gpu_state.values()):
            out.append("GPU kernel state added: " + ", ".join(f"{k} {v}" for k, v in self.gpu_state.items()))
        out += [f"  {p}" for p in self.picks]
        return "\n".join(out)

    def to_json(self, path: str | Path | None = None) -> str:
        return dump_json(self, path)


def default_batch_sizes(max_batch: int) -> list[int]:
    """1, 2, 4, ... up to ``max_batch``, and ``max_batch`` itself: the GPU kernels tune per
    power-of-two bucket of rows, so these reach every bucket a row-wise model meets."""
    if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
        raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
    sizes, b = [], 1
    while b < max_batch:
        sizes.append(b)
        b *= 2
    return sizes + [int(max_batch)]


def _rows(x: Any, idx: np.ndarray) -> Any:
    if is_torch_tensor(x):
        import torch

        return x[torch.as_tensor(idx, device=x.device)]
    if isinstance(x, np.ndarray):
        return x[idx]
    return x  # (a scalar or an option passed through unchanged)


def _batch_maker(example: Any) -> Callable[[int], Any]:
    """example(b) for a callable; else a batch of b rows cycled from the example's rows (a tensor,
    an array, or a dict / tuple of them sharing the first dimension)."""
    if callable(example) and not is_torch_tensor(example):
        return example
    if isinstance(example, dict):
        parts = list(example.values())
    else:
        parts = list(example) if isinstance(example, (tuple, list)) else [example]
    sized = [p for p in parts if is_torch_tensor(p) or isinstance(p, np.ndarray)]
    if not sized:
        raise TypeError("example must be a tensor, an array, a dict/tuple of them, or a callable batch_size -> input; "
                        f"got {type(example).__name__}")
    if any(p.ndim == 0 for p in sized):
        raise ValueError("example tensors need a batch (first) dimension")
    n = int(sized[0].shape[0])
    if any(int(p.shape[0]) != n for p in sized):
        raise ValueError(f"example tensors disagree on the batch dimension: {[tuple(p.shape) for p in sized]}")
    if n == 0:
        raise ValueError("example has no rows: give at least one row to build the batches from")

    def make(b: int) -> Any:
        idx = np.arange(b) % n
        if isinstance(example, dict):
            return {k: _rows(v, idx) for k, v in example.items()}
        if isinstance(example, (tuple, list)):
            return tuple(_rows(v, idx) for v in example)
        return _rows(example, idx)

    return make


def _call(model: Callable[..., Any], inp: Any) -> Any:
    if isinstance(inp, dict):
        return model(**inp)
    if isinstance(inp, tuple):
        return model(*inp)
    return model(inp)


def _on_cuda(inp: Any) -> bool:
    vals = inp.values() if isinstance(inp, dict) else inp if isinstance(inp, (tuple, list)) else [inp]
    return any(is_torch_tensor(v) and v.is_cuda for v in vals)


def _gpu_keys() -> dict[str, set]:
    qg = sys.modules.get("pyperfcore.kernels.quant_gemm")  # (never imported here: no triton for CPU users)
    if qg is None:
        return {}
    return {name: set(getattr(qg, attr, {})) for name, attr in _GPU_STATE.items()}


def _shape(key: tuple, at: int) -> str:
    """'M<=16 N=4096 K=4096' from a kernel key holding (M bucket, N, K) from index `at`."""
    return f"M<={key[at]} N={key[at + 1]} K={key[at + 2]}"


def _order(key: tuple) -> list:
    return [(0, v, "") if isinstance(v, int) else (1, 0, str(v)) for v in key]  # numbers as numbers


def _describe(before: dict[str, set]) -> list[str]:
    """The kernel choices added since `before`, readable: what was picked for which shape, why."""
    qg = sys.modules.get("pyperfcore.kernels.quant_gemm")
    if qg is None:
        return []
    lines = []
    for key in sorted(set(qg._BEST) - before.get("autotuned", set()), key=_order):  # (kind, M bucket, N, K, dev, ...)
        lines.append(f"autotuned {key[0]} {_shape(key, 1)}: {qg._BEST[key]}")
    for attr, what in (("_PICK", "TMA pick"), ("_FORCED", "TMA forced")):
        for key in sorted(set(getattr(qg, attr)) - before.get("tma_picks" if attr == "_PICK" else "tma_forced", set()),
                          key=_order):
            got = getattr(qg, attr)[key]
            lines.append(f"{what} {key[0]} {_shape(key, 1)}: {'pointer kernel' if got is None else got}")
    # small-M keys: (kind, device, M bucket, N, K, ...)
    for key in sorted(set(qg._SMALL) - before.get("small_m_picks", set()), key=_order):
        lines.append(f"small-M {key[0]} {_shape(key, 2)}: {'cuda C++' if qg._SMALL[key] else 'triton'} "
                     f"({qg.SMALL_WHY.get(key, '')})")
    return lines


def warmup(model: Callable[..., Any], example: Any, batch_sizes: Any = None, *, max_batch: int = 32,
           repeats: int = 3) -> WarmupReport:
    """Call ``model`` at each batch size before it serves, and report first-call and steady times.

    Parameters
    ----------
    model
        Any callable: an ``optimize()``d torch module, a :class:`QuantizedLinear`, a function.
        Torch modules run under ``torch.no_grad()``.
    example
        A tensor or array whose rows are cycled into each batch; a dict or tuple of them (keyword
        or positional inputs, e.g. a tokenizer's output) sharing the first dimension; or a
        callable ``batch_size -> input`` (dict: keyword arguments, tuple: positional).
    batch_sizes
        The sizes to warm; default :func:`default_batch_sizes` of ``max_batch``. For a model whose
        linear layers see ``batch x tokens`` rows, warm the batch shapes it will serve.
    repeats
        Calls after the first, per size; ``steady_ms`` is their median.

    A model that raises is reported as a ``RuntimeError`` naming the batch size (the cause
    chained); an empty ``batch_sizes`` gives an empty report.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    sizes = default_batch_sizes(max_batch) if batch_sizes is None else list(batch_sizes)
    for b in sizes:
        if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
            raise ValueError(f"batch sizes must be ints >= 1, got {b!r}")
    sizes = [int(b) for b in sizes]
    make = _batch_maker(example)
    grad_off = None
    if "torch" in sys.modules:
        import torch

        if isinstance(model, torch.nn.Module):
            grad_off = torch.no_grad
    before = _gpu_keys()
    first, steady, device = [], [], "cpu"
    for b in sizes:
        inp = make(b)
        cuda = _on_cuda(inp)
        if cuda:
            import torch

            device = torch.cuda.get_device_name()
            sync = torch.cuda.synchronize
        else:
            sync = None
        times = []
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            try:
                if grad_off is not None:
                    with grad_off():
                        _call(model, inp)
                else:
                    _call(model, inp)
                if sync is not None:
                    sync()
            except Exception as e:
                raise RuntimeError(f"warmup: the model raised at batch size {b}: {type(e).__name__}: {e}") from e
            times.append((time.perf_counter() - t0) * 1e3)
        first.append(times[0])
        steady.append(float(np.median(times[1:])))
    after = _gpu_keys()
    added = {k: len(after[k] - before.get(k, set())) for k in after}
    return WarmupReport(batch_sizes=sizes, first_ms=first, steady_ms=steady, device=device, gpu_state=added,
                        picks=_describe(before))
