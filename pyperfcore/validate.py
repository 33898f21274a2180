"""Output-equivalence validation: does an optimized model still give the original's answers?

- :func:`equivalence`: runs a reference and a candidate on one input or on a validation set
  (``batches=``) and checks declared tolerances (per-row cosine, element-wise ``atol``/``rtol``,
  top-1 and nearest-neighbour agreement) on every output; with ``layers=True`` (torch modules)
  it adds the per-layer rows of :func:`layer_report`.
- :func:`layer_report`: per linear layer, the error of the candidate's layer output inside the
  whole model (errors of the layers before it included) and of the layer alone (fed the
  reference's input to it), streamed over the batches.
- :func:`onnx_check`: exports the original torch model with ``torch.onnx``, runs it with
  onnxruntime and checks it against torch and against the candidate (the optimized model).

Metrics are streamed batch by batch (:class:`pyperfcore.quant.report.Metrics`), so a validation
set of any size is checked without keeping intermediate activations; only 2-D outputs (one
embedding or logit row per input) are kept, for nearest-neighbour agreement.

Policy: a reference output with NaN or infinity is an error (nothing to judge against); a
candidate that produces NaN or infinity fails the check (its rows are counted and reported, the
metrics cover the finite rows); a model that raises is re-raised as :class:`ModelCallError` with
the side and batch index; outputs that differ in structure or shape are a ``ValueError``. An empty
validation set is a valid input but not evidence: the check reports ``ok=False`` with the reason.

``import pyperfcore.validate`` does not import torch or onnxruntime.
"""
from __future__ import annotations

import math
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from ._backends import is_torch_tensor
from ._errors import PyperfcoreError
from .quant.report import AccuracyReport, Metrics, _nn_agreement, _np

__all__ = ["equivalence", "Equivalence", "layer_report", "onnx_check", "OnnxCheck", "ModelCallError"]

# Nearest-neighbour agreement costs n^2 dot products; beyond this many rows it is skipped (None).
NN_MAX_ROWS = 50_000


class ModelCallError(PyperfcoreError, RuntimeError):
    """A reference or candidate model raised while being validated (the original is chained)."""


def _call(fn: Callable[..., Any], x: Any, who: str, i: int) -> Any:
    # a tuple is positional arguments, a dict keyword arguments, anything else one argument
    try:
        if isinstance(x, tuple):
            return fn(*x)
        if isinstance(x, dict):
            return fn(**x)
        return fn(x)
    except Exception as exc:
        raise ModelCallError(f"the {who} model raised on batch {i}: {type(exc).__name__}: {exc}") from exc


def _leaves(out: Any, name: str = "output") -> dict[str, Any]:
    """Flattens a model output (array, tensor, tuple/list, dict) to named arrays."""
    if is_torch_tensor(out) or isinstance(out, np.ndarray):
        return {name: out}
    if isinstance(out, dict):
        res: dict[str, Any] = {}
        for k, v in out.items():
            res.update(_leaves(v, f"{name}.{k}"))
        return res
    if isinstance(out, (tuple, list)):
        res = {}
        for k, v in enumerate(out):
            res.update(_leaves(v, f"{name}[{k}]"))
        return res
    if isinstance(out, (int, float, np.number)):
        return {name: np.asarray(out, dtype=np.float64)}
    raise TypeError(f"cannot compare a model output of type {type(out).__name__} ({name}); pass output= to "
                    "select the array or tensor to compare")


class _Output:
    """The streamed comparison of one named output."""

    def __init__(self, atol: float | None, rtol: float | None, keep_rows: bool) -> None:
        self.metrics = Metrics()
        self.atol, self.rtol = atol, rtol
        self.violations = 0
        self.worst_excess = 0.0
        self.keep: list[tuple[np.ndarray, np.ndarray]] | None = [] if keep_rows else None
        self.kept_rows = 0
        self.width: int | None = None

    def update(self, r: Any, c: Any) -> None:
        r, c = _np(r), _np(c)
        self.metrics.update(r, c)
        if self.atol is not None or self.rtol is not None:
            with np.errstate(invalid="ignore"):
                excess = np.abs(c - r) - ((self.atol or 0.0) + (self.rtol or 0.0) * np.abs(r))
            bad = ~(excess <= 0)  # NaN counts as a violation
            self.violations += int(bad.sum())
            if bad.any():
                finite = excess[np.isfinite(excess)]
                self.worst_excess = max(self.worst_excess, float(finite.max()) if finite.size else math.inf)
        if self.keep is not None:
            # nearest-neighbour agreement needs one row per input, of one width, over all batches
            if r.ndim != 2 or (self.width is not None and r.shape[1] != self.width):
                self.keep = None
                return
            self.width = r.shape[1]
            good = np.isfinite(c).all(axis=1)
            self.keep.append((r[good].astype(np.float32), c[good].astype(np.float32)))
            self.kept_rows += int(good.sum())
            if self.kept_rows > NN_MAX_ROWS:
                self.keep = None

    def report(self, embeddings: bool) -> AccuracyReport:
        m = self.metrics
        extra: dict[str, Any] = {}
        if m.nonfinite_rows:
            extra["nonfinite_rows"] = m.nonfinite_rows
        if self.atol is not None or self.rtol is not None:
            extra["tolerance_violations"] = self.violations
        if m.rows == 0:
            nan = float("nan")
            return AccuracyReport(n=0, cosine_mean=nan, cosine_min=nan, max_abs_err=nan, mean_abs_err=nan,
                                  top1_agreement=nan, nn_agreement=None, extra=extra)
        res = m.result()
        nn = None
        if embeddings and self.keep:
            r = np.concatenate([a for a, _ in self.keep]).astype(np.float64)
            c = np.concatenate([b for _, b in self.keep]).astype(np.float64)
            nn = _nn_agreement(r, c)
        return AccuracyReport(n=m.rows, nn_agreement=nn, extra=extra, **res)


@dataclass
class Equivalence:
    """Result of :func:`equivalence`.

    ``ok`` (also the truth value), ``failures`` (one line per tolerance exceeded, naming the
    output), ``reports`` (an :class:`~pyperfcore.quant.AccuracyReport` per output) and ``report``
    (the first output's, with the per-layer rows when ``layers=True``).
    """

    ok: bool
    report: AccuracyReport
    failures: list[str]
    reports: dict[str, AccuracyReport] = field(default_factory=dict)
    batches: int = 0

    def __bool__(self) -> bool:
        return self.ok

    def table(self) -> str:
        out = [f"equivalence: {'OK' if self.ok else 'FAILED'} ({self.batches} batch(es))"]
        out += [f"  - {f}" for f in self.failures]
        for name, rep in self.reports.items():
            out += ["", f"[{name}]", rep.table()]
        return "\n".join(out)


def _batches(inputs: Any, batches: Iterable[Any] | None) -> Iterable[Any]:
    if batches is not None and inputs is not None:
        raise ValueError("pass either inputs (one input) or batches= (a validation set), not both")
    if batches is None:
        if inputs is None:
            raise ValueError("no inputs: pass inputs (one input) or batches= (a validation set)")
        return (inputs,)
    if isinstance(batches, (str, bytes)) or is_torch_tensor(batches) or isinstance(batches, np.ndarray):
        raise TypeError("batches= is an iterable of inputs (one per batch); for a single input pass inputs=")
    return batches


def equivalence(reference: Callable[..., Any], candidate: Callable[..., Any], inputs: Any = None, *,
                batches: Iterable[Any] | None = None, atol: float | None = None, rtol: float | None = None,
                min_cosine: float | None = 0.99, min_cosine_mean: float | None = 0.995,
                min_nn_agreement: float | None = 0.95, min_top1: float | None = None, embeddings: bool = True,
                output: Callable[[Any], Any] | None = None, layers: bool = False) -> Equivalence:
    """Run both models and check that their outputs agree within the declared tolerances.

    Parameters
    ----------
    reference, candidate
        Callables (torch modules, their bound methods such as ``encode``, onnxruntime wrappers,
        plain functions) returning arrays or tensors, or tuples/lists/dicts of them.
    inputs, batches
        One input, or ``batches=`` an iterable of inputs (a validation set). A tuple is passed as
        positional arguments, a dict as keyword arguments, anything else as one argument.
    atol, rtol
        Element-wise ``|c - r| <= atol + rtol * |r|`` on every output element, when either is given.
    min_cosine, min_cosine_mean
        Bounds on the per-row cosine similarity (a row is the last axis of an output).
    min_nn_agreement
        For 2-D outputs with ``embeddings=True``: the share of inputs whose nearest neighbour
        (cosine, over the whole validation set) is the same under both models.
    min_top1
        Bound on the share of rows whose argmax agrees (classification logits).
    output
        Maps a raw model output to what is compared (``lambda o: o.logits``).
    layers
        Add per-layer rows (:func:`layer_report`; the models must be torch modules or bound
        methods of them, and the candidate an optimized copy with the same module names).

    Returns
    -------
    Equivalence
        ``ok`` and ``failures``; ``reports`` per output.
    """
    for name, v in (("atol", atol), ("rtol", rtol)):
        if v is not None and not (math.isfinite(v) and v >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
    hooks = _LayerHooks(reference, candidate) if layers else None
    outs: dict[str, _Output] = {}
    n_batches = 0
    try:
        for i, x in enumerate(_batches(inputs, batches)):
            if hooks is not None:  # candidate first: its layer outputs wait for the reference pass
                hooks.begin()
                c = _call(candidate, x, "candidate", i)
                hooks.switch()
                r = _call(reference, x, "reference", i)
                hooks.end()
            else:
                r = _call(reference, x, "reference", i)
                c = _call(candidate, x, "candidate", i)
            if output is not None:
                r, c = output(r), output(c)
            lr, lc = _leaves(r), _leaves(c)
            if list(lr) != list(lc):
                raise ValueError(f"reference and candidate outputs differ in structure on batch {i}: "
                                 f"{list(lr)} vs {list(lc)}")
            if i > 0 and list(lr) != list(outs):
                raise ValueError(f"the outputs of batch {i} ({list(lr)}) differ in structure from batch 0 ({list(outs)})")
            for name in lr:
                o = outs.setdefault(name, _Output(atol, rtol, keep_rows=embeddings))
                try:
                    o.update(lr[name], lc[name])
                except ValueError as exc:
                    raise ValueError(f"{name}, batch {i}: {exc}") from None
            n_batches += 1
    finally:
        if hooks is not None:
            hooks.remove()
    reports = {name: o.report(embeddings) for name, o in outs.items()}
    failures: list[str] = []
    if not reports:
        failures.append("no outputs were compared (empty validation set): equivalence is not shown")
        nan = float("nan")
        first = AccuracyReport(n=0, cosine_mean=nan, cosine_min=nan, max_abs_err=nan, mean_abs_err=nan,
                               top1_agreement=nan, nn_agreement=None)
    else:
        first = next(iter(reports.values()))
    for name, rep in reports.items():
        o = outs[name]
        if o.metrics.nonfinite_rows:
            failures.append(f"{name}: the candidate produced {o.metrics.nonfinite_values} NaN/inf value(s) in "
                            f"{o.metrics.nonfinite_rows} row(s)")
        if rep.n == 0:
            if not o.metrics.nonfinite_rows:
                failures.append(f"{name}: empty output, nothing compared")
            continue
        if min_cosine is not None and rep.cosine_min < min_cosine:
            failures.append(f"{name}: min cosine {rep.cosine_min:.5f} < {min_cosine}")
        if min_cosine_mean is not None and rep.cosine_mean < min_cosine_mean:
            failures.append(f"{name}: mean cosine {rep.cosine_mean:.5f} < {min_cosine_mean}")
        if min_top1 is not None and rep.top1_agreement < min_top1:
            failures.append(f"{name}: top-1 agreement {rep.top1_agreement:.4f} < {min_top1}")
        if o.violations:
            failures.append(f"{name}: {o.violations} element(s) outside atol={atol} rtol={rtol} "
                            f"(worst by {o.worst_excess:.4g})")
        if min_nn_agreement is not None and rep.nn_agreement is not None and rep.nn_agreement < min_nn_agreement:
            failures.append(f"{name}: nearest-neighbour agreement {rep.nn_agreement:.4f} < {min_nn_agreement}")
    if hooks is not None:
        first.layers = hooks.result()
    return Equivalence(ok=not failures, report=first, failures=failures, reports=reports, batches=n_batches)


# ------------------------------------------------------------------------------- per layer
def _module_of(fn: Any) -> Any:
    import torch

    m = fn if isinstance(fn, torch.nn.Module) else getattr(fn, "__self__", None)
    if not isinstance(m, torch.nn.Module):
        raise TypeError(f"per-layer rows need torch modules (or their bound methods), got {type(fn).__name__}")
    return m


def _apply_activation(y: Any, name: str) -> Any:
    import torch.nn.functional as F

    if name in ("none", "", None):
        return y
    if name == "relu":
        return F.relu(y)
    if name == "gelu":
        return F.gelu(y)
    if name == "gelu_tanh":
        return F.gelu(y, approximate="tanh")
    if name == "silu":
        return F.silu(y)
    raise ValueError(f"unknown fused activation {name!r}")


class _LayerHooks:
    """Forward hooks on every ``nn.Linear`` of the reference and the module of the same name in
    the candidate. The candidate runs first and each of its layer calls leaves its output (a
    fused residual add taken back out); the reference pass then compares, call by call, the
    reference output (with the candidate's fused activation applied) against it and against the
    candidate layer run alone on the reference's input, so only one output per layer call is held
    between the two passes."""

    def __init__(self, reference: Any, candidate: Any) -> None:
        import torch

        ref, cand = _module_of(reference), _module_of(candidate)
        if ref is cand:
            raise ValueError("per-layer rows need two different modules (optimize a copy: "
                             "quant.optimize(copy.deepcopy(model)))")
        cmods = dict(cand.named_modules())
        self.pairs = {n: (m, cmods[n]) for n, m in ref.named_modules()
                      if type(m) is torch.nn.Linear and n in cmods}
        if not self.pairs:
            raise ValueError("no nn.Linear layer of the reference has a module of the same name in the candidate")
        self.metrics: dict[str, tuple[Metrics, Metrics] | None] = {n: (Metrics(), Metrics()) for n in self.pairs}
        self.side = ""
        self.cand_calls: dict[str, list[Any]] = {}
        self.handles = []
        for n, (rm, cm) in self.pairs.items():
            self.handles.append(rm.register_forward_hook(self._ref_hook(n)))
            self.handles.append(cm.register_forward_hook(self._cand_hook(n), with_kwargs=True))

    def _cand_hook(self, name: str) -> Callable[..., None]:
        def hook(mod: Any, args: tuple, kwargs: dict, out: Any) -> None:
            if self.side != "candidate":
                return
            res = args[1] if len(args) > 1 else kwargs.get("residual")
            y = out.detach()
            if res is not None:
                y = y - res.detach().reshape(y.shape).to(y.dtype)
            self.cand_calls.setdefault(name, []).append(y)
        return hook

    def _ref_hook(self, name: str) -> Callable[..., None]:
        def hook(mod: Any, args: tuple, out: Any) -> None:
            import torch

            pair = self.metrics[name]
            if self.side != "reference" or not args or pair is None:
                return
            waiting = self.cand_calls.get(name)
            if not waiting:
                # a layer the candidate skipped or ran fewer times (a fused path): no call-by-call
                # pairing, so no row
                self.metrics[name] = None
                return
            cm = self.pairs[name][1]
            act = getattr(cm, "activation", "none") if type(cm) is not torch.nn.Linear else "none"
            with torch.no_grad():
                target = _apply_activation(out.detach().float(), act)
                pair[0].update(target, waiting.pop(0).float())
                pair[1].update(target, cm(args[0].detach()).float())
        return hook

    def begin(self) -> None:
        self.cand_calls, self.side = {}, "candidate"

    def switch(self) -> None:
        self.side = "reference"

    def end(self) -> None:
        self.side = ""
        for name, left in self.cand_calls.items():
            if left:  # the candidate ran this layer more often than the reference
                self.metrics[name] = None
        self.cand_calls = {}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []

    def result(self) -> dict[str, dict[str, float]]:
        rows: dict[str, dict[str, float]] = {}
        for name, pair in self.metrics.items():
            if pair is None or pair[0].rows == 0:
                continue
            whole, alone = pair[0].result(), pair[1].result()
            row = {k: whole[k] for k in ("cosine_mean", "cosine_min", "max_abs_err", "mean_abs_err")}
            row.update({f"local_{k}": alone[k] for k in ("cosine_mean", "cosine_min", "max_abs_err", "mean_abs_err")})
            rows[name] = row
        return rows


def layer_report(reference: Any, candidate: Any, inputs: Any = None, *,
                 batches: Iterable[Any] | None = None) -> dict[str, dict[str, float]]:
    """Per ``nn.Linear`` layer of ``reference`` (a torch module or a bound method of one) and the
    module of the same name in ``candidate`` (an optimized copy): cosine (mean, min), max and mean
    absolute error of the layer's output inside the whole candidate model, and the same
    ``local_*`` for the candidate layer alone on the reference layer's input.

    A fused activation (GELU/ReLU/SiLU folded into the layer by :func:`pyperfcore.quant.optimize`)
    is applied to the reference side and a fused residual add removed from the candidate side, so
    both compare the same quantity. Streamed over ``batches``; returns ``{layer: metrics}``.
    """
    hooks = _LayerHooks(reference, candidate)
    try:
        for i, x in enumerate(_batches(inputs, batches)):
            hooks.begin()
            _call(candidate, x, "candidate", i)
            hooks.switch()
            _call(reference, x, "reference", i)
            hooks.end()
    finally:
        hooks.remove()
    return hooks.result()


# ------------------------------------------------------------------------------- ONNX
@dataclass
class OnnxCheck:
    """Result of :func:`onnx_check`: the exported file, torch against onnxruntime
    (``exported``) and onnxruntime against the candidate (``candidate``, when one was given)."""

    path: Path
    exported: Equivalence
    candidate: Equivalence | None

    @property
    def ok(self) -> bool:
        return self.exported.ok and (self.candidate is None or self.candidate.ok)

    def __bool__(self) -> bool:
        return self.ok

    def table(self) -> str:
        out = [f"ONNX export {self.path}: {'OK' if self.ok else 'FAILED'}", "", "torch vs onnxruntime:",
               self.exported.table()]
        if self.candidate is not None:
            out += ["", "onnxruntime vs candidate:", self.candidate.table()]
        return "\n".join(out)


def _as_args(x: Any) -> tuple:
    return x if isinstance(x, tuple) else (x,)


def onnx_check(model: Any, example_inputs: Any, *, candidate: Callable[..., Any] | None = None,
               inputs: Any = None, batches: Iterable[Any] | None = None, path: str | Path | None = None,
               opset: int = 17, dynamic_axes: dict[str, dict[int, str]] | None = None,
               export_tolerance: dict[str, Any] | None = None, providers: Iterable[str] = ("CPUExecutionProvider",),
               **tolerances: Any) -> OnnxCheck:
    """Export the original torch ``model`` to ONNX, run it with onnxruntime, and check it against
    torch and against ``candidate``.

    Parameters
    ----------
    model
        The original (float) torch module; it is exported, never modified.
    example_inputs
        A tensor or a tuple of tensors (the model's positional arguments) used for the export.
    candidate
        The optimized model (or any callable) checked against onnxruntime's outputs.
    inputs, batches
        What is compared (default: ``example_inputs``); each a tensor or a tuple of tensors.
    path
        Where the ``.onnx`` file is written (default: a temporary directory, kept).
    dynamic_axes
        As ``torch.onnx.export`` takes it; by default axis 0 of every input and output is dynamic,
        plus axis 1 of 2-D integer inputs (token ids and masks vary in length).
    export_tolerance
        Tolerances for torch against onnxruntime (default: ``min_cosine=min_cosine_mean=0.9999``
        and ``rtol=1e-3, atol=1e-4``: the same float32 math in another order).
    **tolerances
        Passed to :func:`equivalence` for onnxruntime against the candidate.
    """
    import onnxruntime as ort
    import torch

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"onnx_check exports a torch nn.Module, got {type(model).__name__}")
    ex = _as_args(example_inputs)
    if not ex or not all(isinstance(t, torch.Tensor) for t in ex):
        raise TypeError("example_inputs must be a tensor or a tuple of tensors")
    names = [f"input_{i}" for i in range(len(ex))]
    with torch.no_grad():
        n_out = len(_leaves(model(*ex)))
    out_names = [f"output_{i}" for i in range(n_out)]
    if dynamic_axes is None:
        dynamic_axes = {}
        for n, t in zip(names, ex):
            axes = {0: "batch"}
            if t.ndim == 2 and not t.is_floating_point():
                axes[1] = "sequence"
            dynamic_axes[n] = axes
        dynamic_axes.update({n: {0: "batch"} for n in out_names})
    if path is None:
        path = Path(tempfile.mkdtemp(prefix="pyperfcore-onnx-")) / "model.onnx"
    path = Path(path)
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(model, ex, str(path), input_names=names, output_names=out_names,
                              dynamic_axes=dynamic_axes, opset_version=opset, dynamo=False)
    finally:
        model.train(was_training)
    sess = ort.InferenceSession(str(path), providers=list(providers))

    def run_onnx(*args: Any) -> list[np.ndarray]:
        feed = {n: (a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a))
                for n, a in zip(names, args)}
        return sess.run(None, feed)

    def run_torch(*args: Any) -> Any:
        with torch.no_grad():
            return list(_leaves(model(*args)).values())

    data = list(_batches(inputs, batches)) if (inputs is not None or batches is not None) else [ex]
    data = [_as_args(x) for x in data]
    tol = {"min_cosine": 0.9999, "min_cosine_mean": 0.9999, "min_nn_agreement": None, "rtol": 1e-3, "atol": 1e-4,
           "embeddings": False}
    tol.update(export_tolerance or {})
    exported = equivalence(run_torch, run_onnx, batches=data, **tol)
    cand = None
    if candidate is not None:
        def run_candidate(*args: Any) -> list[Any]:
            with torch.no_grad():
                return list(_leaves(candidate(*args)).values())

        cand = equivalence(run_onnx, run_candidate, batches=data, **tolerances)
    return OnnxCheck(path=path, exported=exported, candidate=cand)
