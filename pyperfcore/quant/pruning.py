"""Weight pruning: magnitude (unstructured) and N:M semi-structured masks, and a sparsity-vs-accuracy report.

- :func:`magnitude_mask`: keep-mask zeroing exactly ``floor(sparsity * count)`` smallest-|w| entries
  of a tensor or of each output row.
- :func:`semi_structured_mask`: keep the ``n`` largest |w| of every ``m`` consecutive input
  entries (2:4 is the NVIDIA pattern ``torch.sparse.to_sparse_semi_structured`` accepts).
- :func:`prune`: applies either to every ``nn.Linear`` of a torch module, in place (needs torch).
- :func:`sparsity`: fraction of exactly-zero weights per ``nn.Linear`` / ``QLinear`` layer.
- :func:`sparsity_report`: output error of pruned (and optionally quantized) copies of a model
  at several sparsity levels, against the unmodified model.

The masks take numpy arrays or torch tensors and return the same kind. ``import
pyperfcore.quant.pruning`` does not import torch; the numpy paths never need it.
"""
from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._backends import is_torch_tensor
from .report import _nn_agreement, compare, dump_json

__all__ = [
    "magnitude_mask",
    "semi_structured_mask",
    "prune",
    "PruneResult",
    "sparsity",
    "sparsity_report",
    "SparsityReport",
]

_FLOAT_NAMES = ("float16", "bfloat16", "float32", "float64")
_METHODS = {"magnitude": "magnitude", "2:4": "n:m", "semi_structured": "n:m", "semi-structured": "n:m"}
_SCOPES = ("tensor", "row", "global")


# ------------------------------------------------------------------ validation
def _check_sparsity(sparsity: Any) -> float:
    if isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real):
        raise TypeError(f"sparsity must be a float in [0, 1), got {type(sparsity).__name__}")
    s = float(sparsity)
    if not (math.isfinite(s) and 0.0 <= s < 1.0):
        raise ValueError(f"sparsity must be a finite float in [0, 1) (1.0 would remove every weight), got {s}")
    return s


def _check_nm(n: Any, m: Any) -> tuple[int, int]:
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    n, m = int(n), int(m)
    if not 0 < n < m:
        raise ValueError(f"N:M sparsity needs 0 < n < m (keep n of every m weights), got n={n}, m={m}")
    return n, m


def _magnitudes(weight: Any) -> tuple[Any, bool]:
    """|weight| after the dtype and finiteness checks, and whether it is a torch tensor.

    Half types are widened to float32 (exact) so sort/partition/kthvalue work on every device;
    float64 stays float64 so no two distinct magnitudes become a tie.
    """
    if is_torch_tensor(weight):
        import torch

        if weight.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            raise TypeError(f"weight must be a float tensor ({', '.join(_FLOAT_NAMES)}), got {weight.dtype}")
        w = weight.detach()
        bad = int((~torch.isfinite(w)).sum()) if w.numel() else 0
        if bad:
            raise ValueError(f"weight contains {bad} NaN or infinite value(s); a mask of it would be meaningless")
        a = w.abs()
        return (a.float() if a.dtype in (torch.float16, torch.bfloat16) else a), True
    if not isinstance(weight, np.ndarray):
        raise TypeError(f"weight must be a numpy array or a torch tensor, got {type(weight).__name__}")
    if weight.dtype.name not in _FLOAT_NAMES:
        raise TypeError(f"weight must be a float array ({', '.join(_FLOAT_NAMES)}), got {weight.dtype}")
    a = np.abs(weight.astype(np.float64 if weight.dtype == np.float64 else np.float32, copy=False))
    bad = int(a.size - np.count_nonzero(np.isfinite(a)))
    if bad:
        raise ValueError(f"weight contains {bad} NaN or infinite value(s); a mask of it would be meaningless")
    return a, False


# ------------------------------------------------------------------ mask kernels
# Both kernels prune the k smallest entries of every row of a 2-D magnitude array, exactly k, ties
# at the threshold broken by pruning the lower index first (the same result as a stable sort,
# without sorting: a k-th order statistic, then a rank among the tied entries).
def _keep_rows_np(a: np.ndarray, k: int) -> np.ndarray:
    if k == 0 or a.size == 0:
        return np.ones(a.shape, dtype=bool)
    t = np.partition(a, k - 1, axis=1)[:, k - 1:k]
    less, tied = a < t, a == t
    need = k - np.count_nonzero(less, axis=1, keepdims=True)  # >= 1: fewer than k lie below the k-th value
    rank = np.cumsum(tied, axis=1, dtype=np.int64)
    return ~(less | (tied & (rank <= need)))


def _keep_rows_torch(a: Any, k: int) -> Any:
    import torch

    if k == 0 or a.numel() == 0:
        return torch.ones(a.shape, dtype=torch.bool, device=a.device)
    t = torch.kthvalue(a, k, dim=1, keepdim=True).values
    less, tied = a < t, a == t
    need = k - less.sum(dim=1, keepdim=True)
    rank = tied.cumsum(dim=1)
    return ~(less | (tied & (rank <= need)))


def _keep_rows(a: Any, k: int, torch_in: bool) -> Any:
    return _keep_rows_torch(a, k) if torch_in else _keep_rows_np(a, k)


def magnitude_mask(weight: Any, sparsity: float, *, scope: str = "tensor") -> Any:
    """Keep-mask that zeroes the smallest-magnitude entries of ``weight``.

    Parameters
    ----------
    weight : numpy array or torch tensor of float16, bfloat16, float32 or float64.
    sparsity : fraction to prune, a finite float in [0, 1). Exactly ``floor(sparsity * count)``
        entries are pruned, where ``count`` is the whole tensor (``scope="tensor"``) or one
        output row (``scope="row"``). Note ``floor`` sees the binary value: ``0.29 * 100`` is
        ``28.999...``, so 28 entries.
    scope : ``"tensor"`` or ``"row"`` (per row of the leading dimension; needs ``ndim >= 2``).

    Returns
    -------
    Boolean mask of ``weight``'s shape, ``True`` where the entry is kept: a numpy array for a
    numpy input, a torch tensor on ``weight``'s device for a tensor input. Every kept |w| is
    >= every pruned |w|; among equal magnitudes at the threshold the lower flat index is pruned
    first, so the result is deterministic and the count exact.

    Raises
    ------
    TypeError
        ``weight`` is not a float numpy array / torch tensor, or ``sparsity`` is not a number.
    ValueError
        ``sparsity`` outside [0, 1) or not finite, NaN/inf in ``weight`` (the count is named),
        an unknown ``scope``, or ``scope="row"`` on a tensor with fewer than 2 dimensions.
    """
    a, torch_in = _magnitudes(weight)
    s = _check_sparsity(sparsity)
    shape = tuple(a.shape)
    if scope == "tensor":
        rows = a.reshape(1, -1)
    elif scope == "row":
        if len(shape) < 2:
            raise ValueError(f"scope='row' needs a weight with at least 2 dimensions [out, in, ...], got shape {shape}")
        rows = a.reshape(shape[0], math.prod(shape[1:]))  # not -1: ambiguous when shape[0] == 0
    else:
        raise ValueError(f"scope must be 'tensor' or 'row', got {scope!r}")
    k = math.floor(s * rows.shape[1])
    return _keep_rows(rows, k, torch_in).reshape(shape)


def semi_structured_mask(weight: Any, n: int = 2, m: int = 4) -> Any:
    """N:M keep-mask: the ``n`` largest |w| of every ``m`` consecutive entries along the input dimension.

    With ``n=2, m=4`` this is the 2:4 pattern of NVIDIA sparse tensor cores, the layout
    ``torch.sparse.to_sparse_semi_structured`` accepts for a weight ``[out, in]``.

    Parameters
    ----------
    weight : 2-D numpy array or torch tensor ``[out, in]`` of float16, bfloat16, float32 or
        float64; ``in`` must be a multiple of ``m``.
    n, m : keep ``n`` of every ``m``; ``0 < n < m``.

    Returns
    -------
    Boolean mask of ``weight``'s shape and kind (numpy, or torch on ``weight``'s device), ``True``
    where kept: exactly ``n`` per group. Among equal magnitudes the lower index is kept.

    Raises
    ------
    TypeError
        ``weight`` is not a float numpy array / torch tensor, or ``n``/``m`` are not ints.
    ValueError
        ``weight`` is not 2-D, ``in`` is not a multiple of ``m``, ``not 0 < n < m``, or NaN/inf
        in ``weight``.
    """
    a, torch_in = _magnitudes(weight)
    n, m = _check_nm(n, m)
    if a.ndim != 2:
        raise ValueError(f"semi_structured_mask needs a 2-D weight [out, in], got shape {tuple(a.shape)}")
    rows, cols = a.shape
    if cols % m:
        raise ValueError(f"in_features ({cols}) is not a multiple of m={m}; {n}:{m} sparsity groups "
                         f"{m} consecutive input weights (pad the layer or exclude it)")
    if torch_in:
        import torch

        g = a.reshape(rows, cols // m, m)
        # stable descending sort keeps equal magnitudes in index order, so the lower index wins
        order = torch.sort(g, dim=-1, descending=True, stable=True).indices[..., :n]
        keep = torch.zeros(g.shape, dtype=torch.bool, device=g.device).scatter_(-1, order, True)
        return keep.reshape(rows, cols)
    g = a.reshape(rows, cols // m, m)
    order = np.argsort(-g, axis=-1, kind="stable")[..., :n]
    keep = np.zeros(g.shape, dtype=bool)
    np.put_along_axis(keep, order, True, axis=-1)
    return keep.reshape(rows, cols)


# ------------------------------------------------------------------ torch modules
@dataclass
class PruneResult:
    """What :func:`prune` did.

    ``layers`` maps each pruned layer to ``{"sparsity": fraction of zero weights after pruning,
    "shape": [out, in]}``; ``skipped`` maps each ``nn.Linear`` left alone to the reason.
    """

    layers: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def overall_sparsity(self) -> float:
        """Fraction of zero weights over all pruned layers together (weighted by size)."""
        sizes = {k: math.prod(v["shape"]) for k, v in self.layers.items()}
        total = sum(sizes.values())
        return sum(v["sparsity"] * sizes[k] for k, v in self.layers.items()) / total if total else 0.0


def _method(method: str) -> str:
    kind = _METHODS.get(method) if isinstance(method, str) else None
    if kind is None:
        raise ValueError(f"method must be 'magnitude' or '2:4' (also 'semi_structured'), got {method!r}")
    return kind


def _zero_fraction(t: Any) -> float:
    return float((t == 0).sum()) / t.numel() if t.numel() else 0.0


def prune(module: Any, method: str = "magnitude", sparsity: float = 0.5, *, scope: str = "tensor",
          exclude: Iterable[str] = (), n: int = 2, m: int = 4) -> PruneResult:
    """Zero weights of every ``nn.Linear`` in ``module`` in place.

    Parameters
    ----------
    module : torch ``nn.Module``. Layers of type exactly ``nn.Linear`` are pruned, as in
        :func:`pyperfcore.quant.optimize`; subclasses are listed in ``skipped``, already-quantized
        layers are not ``nn.Linear`` and are left alone.
    method : ``"magnitude"`` (smallest |w|) or ``"2:4"`` / ``"semi_structured"`` (``n`` of every
        ``m`` consecutive input weights kept, see :func:`semi_structured_mask`).
    sparsity : fraction to prune for ``"magnitude"``, in [0, 1). Not used by ``"2:4"``, whose
        sparsity is ``1 - n/m`` by construction.
    scope : for ``"magnitude"``: ``"tensor"`` (each layer pruned to ``sparsity``), ``"row"``
        (each output row) or ``"global"`` (one threshold over all selected layers together:
        exactly ``floor(sparsity * total)`` weights, spread by magnitude, so layers end up with
        different sparsities). ``"2:4"`` accepts only the default ``"tensor"``.
    exclude : layer names or fnmatch patterns left dense (``"encoder.layer.*.output.dense"``).
    n, m : the N:M pattern for ``"2:4"``.

    Returns
    -------
    :class:`PruneResult`. Layers that are not pruned (excluded, a subclass of ``nn.Linear``,
    ``in_features`` not a multiple of ``m``, a weight shared with an earlier layer) are listed in
    ``skipped`` with the reason.

    Notes
    -----
    Masks are applied by multiplication under ``torch.no_grad``: the weights stay dense and the
    ``Parameter`` objects are the same, so optimizers and hooks holding them keep working. The
    mask itself is not kept; further training regrows the zeros (use ``torch.nn.utils.prune``
    for that). Every mask is computed before any weight changes, so an error leaves the module
    as it was.

    Raises
    ------
    TypeError
        ``module`` is not an ``nn.Module``.
    ValueError
        Unknown ``method``/``scope``, bad ``sparsity``/``n``/``m``, no ``nn.Linear`` in
        ``module``, or NaN/inf in a layer's weight (the layer is named).
    """
    import torch
    from torch import nn

    from .torch_ops import _excluded

    if not isinstance(module, nn.Module):
        raise TypeError(f"prune expects a torch.nn.Module, got {type(module).__name__}")
    kind = _method(method)
    if kind == "magnitude":
        if scope not in _SCOPES:
            raise ValueError(f"scope must be one of {_SCOPES} for magnitude pruning, got {scope!r}")
        s = _check_sparsity(sparsity)
    else:
        if scope != "tensor":
            raise ValueError(f"scope={scope!r} applies to magnitude pruning only; N:M groups are always per row")
        n, m = _check_nm(n, m)
    exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)

    linears = [(name, mod) for name, mod in module.named_modules() if isinstance(mod, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(module).__name__} has no nn.Linear layers to prune")
    result = PruneResult()
    targets: list[tuple[str, Any]] = []
    owner: dict[int, str] = {}
    for name, lin in linears:
        w = lin.weight
        pattern = next((p for p in exclude if _excluded(name, (p,))), None)
        if type(lin) is not nn.Linear:
            # subclasses may compute differently (e.g. MultiheadAttention's out_proj is used through
            # F.multi_head_attention_forward); optimize() leaves them alone too
            result.skipped[name] = f"{type(lin).__name__} is a subclass of nn.Linear; only nn.Linear is pruned"
        elif pattern is not None:
            result.skipped[name] = f"excluded by pattern {pattern!r}"
        elif id(w) in owner:
            # a tied weight would be pruned twice and counted twice by scope="global"
            result.skipped[name] = f"shares its weight with layer {owner[id(w)]!r}, pruned there"
        elif kind == "n:m" and lin.in_features % m:
            result.skipped[name] = f"in_features ({lin.in_features}) is not a multiple of m={m}"
        else:
            owner[id(w)] = name
            targets.append((name, w))

    if kind == "magnitude" and scope == "global":
        masks = _global_masks(targets, s)
    else:
        masks = {}
        for name, w in targets:
            try:
                masks[name] = semi_structured_mask(w, n, m) if kind == "n:m" else magnitude_mask(w, s, scope=scope)
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"layer {name!r}: {exc}") from exc

    with torch.no_grad():
        for name, w in targets:
            w.mul_(masks[name])
            result.layers[name] = {"sparsity": _zero_fraction(w), "shape": list(w.shape)}
    return result


def _global_masks(targets: list[tuple[str, Any]], s: float) -> dict[str, Any]:
    """One exact threshold over all layers: the smallest ``floor(s * total)`` |w| of them all."""
    import torch

    mags = []
    for name, w in targets:
        try:
            a, _ = _magnitudes(w)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"layer {name!r}: {exc}") from exc
        mags.append(a.reshape(-1))
    if not mags:
        return {}
    # one dtype and device for the concatenation; float64 only if some layer is float64
    dtype = torch.float64 if any(a.dtype == torch.float64 for a in mags) else torch.float32
    dev = mags[0].device
    flat = torch.cat([a.to(device=dev, dtype=dtype) for a in mags]).reshape(1, -1)
    keep = _keep_rows_torch(flat, math.floor(s * flat.shape[1]))[0]
    out, start = {}, 0
    for (name, w), a in zip(targets, mags):
        out[name] = keep[start:start + a.numel()].reshape(w.shape).to(w.device)
        start += a.numel()
    return out


def sparsity(module: Any) -> dict[str, float]:
    """Fraction of exactly-zero weights per ``nn.Linear`` and ``QLinear`` layer of ``module``.

    For an INT8 ``QLinear`` the zero codes of ``qweight`` are counted (symmetric quantization
    maps a weight of exactly 0.0 to code 0, so pruning survives :func:`~pyperfcore.quant.optimize`,
    and small weights may round to 0 as well); for FP16/BF16 ``QLinear`` the zero weights. A module
    without such layers gives ``{}``.
    """
    from torch import nn

    from .torch_ops import QLinear

    if not isinstance(module, nn.Module):
        raise TypeError(f"sparsity expects a torch.nn.Module, got {type(module).__name__}")
    out: dict[str, float] = {}
    for name, mod in module.named_modules():
        if isinstance(mod, nn.Linear):
            out[name] = _zero_fraction(mod.weight.detach())
        elif isinstance(mod, QLinear):
            out[name] = _zero_fraction(mod.qweight if mod.dtype == "int8" else mod.weight)
    return out


# ------------------------------------------------------------------ report
@dataclass
class SparsityReport:
    """Output error of pruned copies of a model at several sparsities (see :func:`sparsity_report`).

    Each row: ``target``, ``sparsity`` (actual fraction of zeros over the pruned layers, weighted by
    size), ``quantized_sparsity`` (zero codes after quantization, or None without ``quantize``),
    ``cosine_mean``, ``cosine_min``, ``max_abs_err``, ``mean_abs_err``, ``top1_agreement``,
    ``nn_agreement`` (None without ``embeddings`` or with fewer than 3 output rows).
    """

    rows: list[dict[str, Any]]
    method: str
    scope: str
    quantize: str | None
    layers: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    def best(self, min_cosine: float = 0.99) -> dict[str, Any] | None:
        """The row with the highest actual sparsity whose ``cosine_min`` is at least ``min_cosine``."""
        ok = [r for r in self.rows if r["cosine_min"] >= min_cosine]
        return max(ok, key=lambda r: (r["sparsity"], r["target"])) if ok else None

    def table(self) -> str:
        head = f"method={self.method}  scope={self.scope}  quantize={self.quantize or 'none'}  layers={len(self.layers)}"
        cols = (f"{'target':>7} {'sparsity':>9} {'cos mean':>9} {'cos min':>9} {'max|err|':>10} "
                f"{'mean|err|':>10} {'top-1':>7} {'nn':>7}")
        out = [head, cols]
        for r in self.rows:
            nn_txt = "-" if r["nn_agreement"] is None else f"{r['nn_agreement']:.2%}"
            out.append(f"{r['target']:>7.2f} {r['sparsity']:>9.4f} {r['cosine_mean']:>9.5f} {r['cosine_min']:>9.5f} "
                       f"{r['max_abs_err']:>10.4g} {r['mean_abs_err']:>10.4g} {r['top1_agreement']:>7.2%} {nn_txt:>7}")
        if self.skipped:
            out.append("")
            out += [f"skipped {name or '<root>'}: {why}" for name, why in self.skipped.items()]
        return "\n".join(out)

    def to_json(self, path: str | Path | None = None) -> str:
        return dump_json(self, path)


def sparsity_report(model: Any, inputs: Any, *, method: str = "magnitude",
                    sparsities: Iterable[float] = (0.0, 0.25, 0.5, 0.75, 0.9), scope: str = "tensor",
                    exclude: Iterable[str] = (), quantize: str | None = None,
                    run: Callable[[Any, Any], Any] | None = None, embeddings: bool = True,
                    n: int = 2, m: int = 4) -> SparsityReport:
    """Prune copies of ``model`` at each sparsity and compare their outputs with the model's own.

    Parameters
    ----------
    model : torch ``nn.Module``; it is not modified (each row prunes a deep copy).
    inputs : what ``run`` passes to the model (a tensor, or a tuple/list of positional args).
    method, scope, exclude, n, m : as in :func:`prune`.
    sparsities : target fractions for ``"magnitude"``; ``"2:4"`` gives a single row at ``1 - n/m``.
    quantize : ``"int8"``, ``"fp16"``, ``"bf16"`` or None: each pruned copy is also passed through
        :func:`pyperfcore.quant.optimize` (with the same ``exclude``), so a row shows pruning and
        quantization together.
    run : ``run(model, inputs)`` returns the outputs compared (array or tensor, ``[..., d]``);
        default: ``model(inputs)`` (or ``model(*inputs)``) under ``torch.inference_mode``.
    embeddings : add nearest-neighbour agreement (output rows are embeddings of the inputs).

    Returns
    -------
    :class:`SparsityReport`, one row per target in the given order.

    Notes
    -----
    The reference and every candidate run in eval mode, on copies: dropout would otherwise make
    the comparison noise, and :func:`~pyperfcore.quant.optimize` puts its copy in eval mode anyway.
    """
    from torch import nn

    from .sensitivity_scan import _default_run
    from .torch_ops import optimize

    if not isinstance(model, nn.Module):
        raise TypeError(f"sparsity_report expects a torch.nn.Module, got {type(model).__name__}")
    kind = _method(method)
    # everything prune() would reject is checked here, before the model is copied and run
    if kind == "n:m":
        n, m = _check_nm(n, m)
        if scope != "tensor":
            raise ValueError(f"scope={scope!r} applies to magnitude pruning only; N:M groups are always per row")
        targets = [1.0 - n / m]
    else:
        if scope not in _SCOPES:
            raise ValueError(f"scope must be one of {_SCOPES} for magnitude pruning, got {scope!r}")
        if isinstance(sparsities, (str, bytes)) or not isinstance(sparsities, Iterable):
            raise TypeError(f"sparsities must be an iterable of floats, got {type(sparsities).__name__}")
        targets = [_check_sparsity(s) for s in sparsities]
    if quantize is not None and quantize not in ("int8", "fp16", "float16", "bf16", "bfloat16"):
        raise ValueError(f"quantize must be None, 'int8', 'fp16' or 'bf16', got {quantize!r}")
    exclude = (exclude,) if isinstance(exclude, str) else tuple(exclude)
    run = run or _default_run

    ref = np.asarray(_as_numpy(run(copy.deepcopy(model).eval(), inputs)), dtype=np.float64)
    # n:m is named by its pattern (method "2:4" with n=1 would be misleading); scope has no meaning there
    report = SparsityReport(rows=[], method="magnitude" if kind == "magnitude" else f"{n}:{m}",
                            scope=scope if kind == "magnitude" else "-", quantize=quantize)
    for target in targets:
        cand = copy.deepcopy(model).eval()
        res = prune(cand, method, target, scope=scope, exclude=exclude, n=n, m=m)
        report.layers, report.skipped = list(res.layers), dict(res.skipped)
        q_sparsity = None
        if quantize is not None:
            optimize(cand, dtype=quantize, exclude=exclude)
            q = sparsity(cand)
            sizes = {k: math.prod(v["shape"]) for k, v in res.layers.items()}
            total = sum(sizes.values())
            q_sparsity = sum(q[k] * sizes[k] for k in sizes) / total if total else 0.0
        out = np.asarray(_as_numpy(run(cand, inputs)), dtype=np.float64)
        metrics = compare(ref, out)
        nn_agree = _nn_agreement(_rows(ref), _rows(out)) if embeddings else None
        report.rows.append({"target": target, "sparsity": res.overall_sparsity, "quantized_sparsity": q_sparsity,
                            **metrics, "nn_agreement": nn_agree})
        del cand  # before the next deepcopy, so at most one pruned copy is alive
    return report


def _as_numpy(x: Any) -> Any:
    if is_torch_tensor(x):
        return x.detach().float().cpu().numpy()
    return x


def _rows(x: np.ndarray) -> np.ndarray:
    # the same [rows, d] view compare() takes: a 1-D output is one row
    return x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)
