"""Per-layer sensitivity scan and automatic exclusion to meet an accuracy budget (torch)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .report import compare

__all__ = ["sensitivity", "SensitivityResult"]


@dataclass
class SensitivityResult:
    layers: dict[str, dict[str, float]]      # layer -> metrics with only that layer quantized
    ranking: list[str]                       # most sensitive first (lowest min cosine)
    excluded: list[str] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)  # all-but-excluded quantized
    met: bool = True


def _default_run(model: Any, inputs: Any) -> np.ndarray:
    import torch

    with torch.inference_mode():
        out = model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)
    return out.detach().float().cpu().numpy()


def sensitivity(model: Any, inputs: Any, *, dtype: str = "int8", min_cosine: float | None = None,
                run: Callable[[Any, Any], np.ndarray] | None = None, **optimize_kwargs: Any) -> SensitivityResult:
    """Quantize one ``nn.Linear`` at a time and measure the output error against the float model.

    ``run(model, inputs)`` produces the outputs compared (default: ``model(inputs)``). With
    ``min_cosine``, the most sensitive layers are kept in float, one by one, until the model with
    all other layers quantized reaches that minimum per-row cosine similarity; ``excluded`` is then
    the list to pass to :func:`pyperfcore.quant.optimize` as ``exclude``. ``model`` is not modified.
    """
    from torch import nn

    from .torch_ops import optimize

    run = run or _default_run
    names = [n for n, m in model.named_modules() if type(m) is nn.Linear]
    if not names:
        raise ValueError("the model has no nn.Linear layers to scan")
    ref = run(model, inputs)

    def quantized_except(excl: list[str]) -> dict[str, float]:
        cand = optimize(copy.deepcopy(model), dtype=dtype, exclude=excl, **optimize_kwargs)
        return compare(ref, run(cand, inputs))

    layers = {name: quantized_except([n for n in names if n != name]) for name in names}
    ranking = sorted(names, key=lambda n: (layers[n]["cosine_min"], layers[n]["cosine_mean"]))
    result = SensitivityResult(layers=layers, ranking=ranking)
    if min_cosine is None:
        return result
    excluded: list[str] = []
    final = quantized_except(excluded)
    for name in ranking:
        if final["cosine_min"] >= min_cosine:
            break
        excluded.append(name)
        final = quantized_except(excluded) if len(excluded) < len(names) else compare(ref, ref)
    result.excluded, result.final, result.met = excluded, final, final["cosine_min"] >= min_cosine
    return result
