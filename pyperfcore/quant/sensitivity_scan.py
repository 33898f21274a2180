"""Per-layer sensitivity scan and automatic exclusion to meet an accuracy budget (torch)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .report import compare, dump_json

__all__ = ["sensitivity", "SensitivityResult"]


@dataclass
class SensitivityResult:
    """``layers``: metrics of the model output with only that layer quantized; ``ranking``: most
    sensitive first (lowest min cosine); ``excluded``: the layers kept in float to meet the
    budget (pass as ``optimize(exclude=...)``); ``final``: metrics with all the others quantized;
    ``met``: whether the budget was met."""

    layers: dict[str, dict[str, float]]
    ranking: list[str]
    excluded: list[str] = field(default_factory=list)
    final: dict[str, float] = field(default_factory=dict)
    met: bool = True
    budget: dict[str, float] = field(default_factory=dict)

    def table(self) -> str:
        w = max([44] + [len(n) for n in self.ranking])
        out = [f"{'layer (most sensitive first)':<{w}} {'cos mean':>9} {'cos min':>9} {'max|err|':>10}  kept float"]
        for n in self.ranking:
            m = self.layers[n]
            out.append(f"{n:<{w}} {m['cosine_mean']:>9.5f} {m['cosine_min']:>9.5f} {m['max_abs_err']:>10.4g}  "
                       f"{'yes' if n in self.excluded else ''}")
        if self.final:
            f = self.final
            out += ["", f"budget {self.budget}: {'met' if self.met else 'NOT met'} with {len(self.excluded)} layer(s) "
                    f"in float; cos mean {f['cosine_mean']:.5f}, cos min {f['cosine_min']:.5f}"]
        return "\n".join(out)

    def to_json(self, path: str | Path | None = None) -> str:
        return dump_json(self, path)


def _default_run(model: Any, inputs: Any) -> np.ndarray:
    import torch

    with torch.inference_mode():
        out = model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)
    return out.detach().float().cpu().numpy()


def sensitivity(model: Any, inputs: Any, *, dtype: str = "int8", min_cosine: float | None = None,
                min_cosine_mean: float | None = None, run: Callable[[Any, Any], np.ndarray] | None = None,
                **optimize_kwargs: Any) -> SensitivityResult:
    """Quantize one ``nn.Linear`` at a time and measure the output error against the float model.

    ``run(model, inputs)`` produces the outputs compared (default: ``model(inputs)``). With a
    budget (``min_cosine`` on the per-row minimum, ``min_cosine_mean`` on the mean), the most
    sensitive layers are kept in float, one by one, until the model with all other layers
    quantized meets it; ``excluded`` is then the list to pass to
    :func:`pyperfcore.quant.optimize` as ``exclude``. ``model`` is not modified.
    """
    for name, v in (("min_cosine", min_cosine), ("min_cosine_mean", min_cosine_mean)):
        if v is not None and not -1.0 <= v <= 1.0:
            raise ValueError(f"{name} must be in [-1, 1], got {v!r}")
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
    if min_cosine is None and min_cosine_mean is None:
        return result
    budget = {k: v for k, v in (("min_cosine", min_cosine), ("min_cosine_mean", min_cosine_mean)) if v is not None}

    def meets(m: dict[str, float]) -> bool:
        return ((min_cosine is None or m["cosine_min"] >= min_cosine)
                and (min_cosine_mean is None or m["cosine_mean"] >= min_cosine_mean))

    excluded: list[str] = []
    final = quantized_except(excluded)
    for name in ranking:
        if meets(final):
            break
        excluded.append(name)
        final = quantized_except(excluded) if len(excluded) < len(names) else compare(ref, ref)
    result.excluded, result.final, result.met, result.budget = excluded, final, meets(final), budget
    return result
