"""INT8 / FP16 inference: quantization ops, quantized linear layers, model optimization.

- :func:`quantize` / :func:`dequantize`: symmetric INT8 quantization per channel or per tensor
  (the pilot op; every backend gives identical results).
- :class:`QuantizedLinear`: a linear layer with INT8 weights and per-token INT8 activations (W8A8),
  or FP16/BF16 weights computed in fp32, with a fused epilogue (bias, ReLU/GELU/SiLU, residual);
  built from numpy or torch weights, no torch needed.
- :mod:`~pyperfcore.quant.calibration`: activation ranges (min-max, percentile, entropy/KL, MSE)
  and SmoothQuant smoothing factors.
- :func:`optimize`: replaces a torch module's ``nn.Linear`` layers in place (needs torch).
- :func:`save` / :func:`load`: packed weights as safetensors plus JSON.
- :func:`accuracy_report`: output-equivalence metrics of a candidate against a reference
  (:mod:`pyperfcore.validate` checks declared tolerances over a validation set).
- :func:`prune` / :func:`sparsity_report`: magnitude and 2:4 pruning with a sparsity-vs-accuracy
  report (:mod:`~pyperfcore.quant.pruning`); :func:`distill`: a knowledge-distillation loop
  (temperature-scaled KL, or MSE/cosine for embeddings) for a smaller student
  (:mod:`~pyperfcore.quant.distillation`).
- :func:`warmup`: calls a model at each batch size before it serves, so that GPU autotuning,
  kernel picks and CPU weight packing happen there and not on a request.

``import pyperfcore.quant`` never imports torch.
"""
from __future__ import annotations

from typing import Any

from ._pilot import dequantize, quantize
from .calibration import SmoothQuant, calibrate, smooth_factors
from .linear import ACTIVATIONS, QuantizedLinear, dequantize_activations, quantize_activations
from .pruning import PruneResult, SparsityReport, magnitude_mask, prune, semi_structured_mask, sparsity, sparsity_report
from .report import AccuracyReport, accuracy_report

__all__ = [
    "quantize",
    "dequantize",
    "QuantizedLinear",
    "ACTIVATIONS",
    "quantize_activations",
    "dequantize_activations",
    "calibrate",
    "smooth_factors",
    "SmoothQuant",
    "optimize",
    "sensitivity",
    "save",
    "load",
    "accuracy_report",
    "AccuracyReport",
    "equivalence",
    "magnitude_mask",
    "semi_structured_mask",
    "prune",
    "PruneResult",
    "sparsity",
    "sparsity_report",
    "SparsityReport",
    "distill",
    "distillation_loss",
    "warmup",
]


def optimize(module: Any, dtype: str = "int8", **kwargs: Any) -> Any:
    """Replace a torch module's ``nn.Linear`` layers in place; see :func:`pyperfcore.quant.torch_ops.optimize`."""
    from .torch_ops import optimize as _optimize

    return _optimize(module, dtype=dtype, **kwargs)


def equivalence(reference: Any, candidate: Any, inputs: Any = None, **kwargs: Any) -> Any:
    """Output-equivalence check; see :func:`pyperfcore.validate.equivalence` (where it lives)."""
    from ..validate import equivalence as _equivalence

    return _equivalence(reference, candidate, inputs, **kwargs)


def sensitivity(model: Any, inputs: Any, **kwargs: Any) -> Any:
    """Per-layer sensitivity scan; see :func:`pyperfcore.quant.sensitivity_scan.sensitivity`."""
    # (the module is not named "sensitivity": importing it would rebind this package attribute)
    from .sensitivity_scan import sensitivity as _sensitivity

    return _sensitivity(model, inputs, **kwargs)


def distill(student: Any, teacher: Any, data: Any, **kwargs: Any) -> Any:
    """Knowledge distillation training loop; see :func:`pyperfcore.quant.distillation.distill`."""
    from .distillation import distill as _distill

    return _distill(student, teacher, data, **kwargs)


def distillation_loss(student_logits: Any, teacher_logits: Any, **kwargs: Any) -> Any:
    """Temperature-scaled KL loss; see :func:`pyperfcore.quant.distillation.distillation_loss`."""
    from .distillation import distillation_loss as _loss

    return _loss(student_logits, teacher_logits, **kwargs)


def save(module: Any, path: Any) -> Any:
    """Write an optimized module's quantized weights (safetensors) and configuration (JSON) to
    directory ``path``; returns its ``pathlib.Path``."""
    from .io import save as _save

    return _save(module, path)


def load(module: Any, path: Any) -> Any:
    """Load packed weights written by :func:`save` into ``module`` (its float layers are replaced)."""
    from .io import load as _load

    return _load(module, path)


def warmup(model: Any, example: Any, batch_sizes: Any = None, **kwargs: Any) -> Any:
    """Call a model at each batch size before it serves (GPU autotuning and picks, CPU packing);
    see :func:`pyperfcore.quant.warming.warmup`."""
    from .warming import warmup as _warmup

    return _warmup(model, example, batch_sizes, **kwargs)
