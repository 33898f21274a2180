"""Output-equivalence metrics of a candidate (quantized) model against its reference."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._backends import is_torch_tensor

__all__ = ["AccuracyReport", "accuracy_report", "compare", "Equivalence", "equivalence"]


def _np(x: Any) -> np.ndarray:
    if is_torch_tensor(x):
        x = x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float64)


@dataclass
class AccuracyReport:
    """Per-output metrics: cosine similarity (mean, min), max/mean absolute error, top-1
    agreement (argmax of each row), nearest-neighbour agreement (for embeddings: each row's nearest
    other row by cosine is the same one under both models), and optional per-layer rows."""

    n: int
    cosine_mean: float
    cosine_min: float
    max_abs_err: float
    mean_abs_err: float
    top1_agreement: float
    nn_agreement: float | None
    layers: dict[str, dict[str, float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def meets(self, cosine_mean: float = 0.995, cosine_min: float = 0.99, nn_agreement: float = 0.95) -> bool:
        ok = self.cosine_mean >= cosine_mean and self.cosine_min >= cosine_min
        return ok and (self.nn_agreement is None or self.nn_agreement >= nn_agreement)

    def table(self) -> str:
        rows = [("outputs", str(self.n)), ("cosine mean", f"{self.cosine_mean:.5f}"), ("cosine min", f"{self.cosine_min:.5f}"),
                ("max |err|", f"{self.max_abs_err:.4g}"), ("mean |err|", f"{self.mean_abs_err:.4g}"),
                ("top-1 agreement", f"{self.top1_agreement:.2%}")]
        if self.nn_agreement is not None:
            rows.append(("nearest-neighbour agreement", f"{self.nn_agreement:.2%}"))
        rows += [(k, f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in self.extra.items()]
        w = max(len(r[0]) for r in rows)
        out = [f"{k:<{w}}  {v}" for k, v in rows]
        if self.layers:
            out.append("")
            out.append(f"{'layer':<44} {'cos mean':>9} {'cos min':>9} {'max|err|':>10}")
            for name, m in self.layers.items():
                out.append(f"{name:<44} {m['cosine_mean']:>9.5f} {m['cosine_min']:>9.5f} {m['max_abs_err']:>10.4g}")
        return "\n".join(out)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(asdict(self), indent=2, sort_keys=True)
        if path is not None:
            Path(path).write_text(text)
        return text


def compare(reference: Any, candidate: Any) -> dict[str, float]:
    r, c = _np(reference), _np(candidate)
    if r.shape != c.shape:
        raise ValueError(f"reference and candidate outputs differ in shape: {r.shape} vs {c.shape}")
    if r.size == 0:
        raise ValueError("no outputs to compare")
    if not (np.isfinite(r).all() and np.isfinite(c).all()):
        raise ValueError("outputs contain NaN or infinity")
    r2, c2 = r.reshape(-1, r.shape[-1]) if r.ndim > 1 else r[None], c.reshape(-1, c.shape[-1]) if c.ndim > 1 else c[None]
    nr, nc = np.linalg.norm(r2, axis=1), np.linalg.norm(c2, axis=1)
    denom = np.maximum(nr * nc, 1e-30)
    cos = np.where((nr == 0) & (nc == 0), 1.0, np.sum(r2 * c2, axis=1) / denom)
    err = np.abs(r2 - c2)
    return {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()), "max_abs_err": float(err.max()),
            "mean_abs_err": float(err.mean()), "top1_agreement": float(np.mean(r2.argmax(1) == c2.argmax(1)))}


def _nn_agreement(r: np.ndarray, c: np.ndarray) -> float | None:
    if r.shape[0] < 3:
        return None

    def nn(e: np.ndarray) -> np.ndarray:
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-30)
        sim = e @ e.T
        np.fill_diagonal(sim, -np.inf)
        return sim.argmax(axis=1)

    return float(np.mean(nn(r) == nn(c)))


def accuracy_report(reference: Any, candidate: Any, *, layers: dict[str, tuple[Any, Any]] | None = None,
                    embeddings: bool = True, **extra: Any) -> AccuracyReport:
    """Compare outputs ``[n, d]`` of a reference model and a candidate (numpy or torch).

    ``layers`` maps a layer name to its (reference, candidate) outputs for the per-layer rows.
    ``embeddings`` adds nearest-neighbour agreement (rows are embeddings of n inputs).
    """
    m = compare(reference, candidate)
    r, c = _np(reference), _np(candidate)
    r2, c2 = r.reshape(-1, r.shape[-1]), c.reshape(-1, c.shape[-1])
    per_layer = {name: compare(a, b) for name, (a, b) in (layers or {}).items()}
    return AccuracyReport(n=r2.shape[0], cosine_mean=m["cosine_mean"], cosine_min=m["cosine_min"],
                          max_abs_err=m["max_abs_err"], mean_abs_err=m["mean_abs_err"],
                          top1_agreement=m["top1_agreement"], nn_agreement=_nn_agreement(r2, c2) if embeddings else None,
                          layers=per_layer, extra=dict(extra))


@dataclass
class Equivalence:
    """Result of :func:`equivalence`: ``ok`` and why not."""

    ok: bool
    report: AccuracyReport
    failures: list[str]

    def __bool__(self) -> bool:
        return self.ok


def equivalence(reference: Any, candidate: Any, inputs: Any, *, atol: float | None = None,
                min_cosine: float = 0.99, min_cosine_mean: float = 0.995, min_nn_agreement: float | None = 0.95,
                embeddings: bool = True) -> Equivalence:
    """Run ``reference(inputs)`` and ``candidate(inputs)`` (callables returning arrays or tensors)
    and check the declared tolerances: per-row cosine (min and mean), optional max absolute error,
    nearest-neighbour agreement for embeddings. Returns an :class:`Equivalence` whose
    ``failures`` name each tolerance that was exceeded."""
    r, c = reference(inputs), candidate(inputs)
    rep = accuracy_report(r, c, embeddings=embeddings)
    fails = []
    if rep.cosine_min < min_cosine:
        fails.append(f"min cosine {rep.cosine_min:.5f} < {min_cosine}")
    if rep.cosine_mean < min_cosine_mean:
        fails.append(f"mean cosine {rep.cosine_mean:.5f} < {min_cosine_mean}")
    if atol is not None and rep.max_abs_err > atol:
        fails.append(f"max |err| {rep.max_abs_err:.4g} > atol {atol}")
    if min_nn_agreement is not None and rep.nn_agreement is not None and rep.nn_agreement < min_nn_agreement:
        fails.append(f"nearest-neighbour agreement {rep.nn_agreement:.3f} < {min_nn_agreement}")
    return Equivalence(ok=not fails, report=rep, failures=fails)
