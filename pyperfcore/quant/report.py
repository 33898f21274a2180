"""Output-equivalence metrics of a candidate (quantized) model against its reference."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._backends import is_torch_tensor

__all__ = ["AccuracyReport", "accuracy_report", "compare", "Metrics"]


def dump_json(report: Any, path: str | Path | None = None) -> str:
    """A report dataclass as sorted, indented JSON; also written to ``path`` when given."""
    text = json.dumps(asdict(report), indent=2, sort_keys=True)
    if path is not None:
        Path(path).write_text(text)
    return text


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
            # "local" columns (when present): the layer alone, fed the reference model's input to
            # it; the others: the layer's output inside the whole candidate model, errors of the
            # layers before it included
            local = all("local_cosine_min" in m for m in self.layers.values())
            w = max(44, max(len(k) for k in self.layers))
            head = f"{'layer':<{w}} {'cos mean':>9} {'cos min':>9} {'max|err|':>10}"
            out += ["", head + (f" {'local cos min':>13} {'local max|err|':>14}" if local else "")]
            for name, m in self.layers.items():
                row = f"{name:<{w}} {m['cosine_mean']:>9.5f} {m['cosine_min']:>9.5f} {m['max_abs_err']:>10.4g}"
                if local:
                    row += f" {m['local_cosine_min']:>13.5f} {m['local_max_abs_err']:>14.4g}"
                out.append(row)
        return "\n".join(out)

    def to_json(self, path: str | Path | None = None) -> str:
        return dump_json(self, path)


class Metrics:
    """Streaming output-error metrics over row batches (a row is the last axis of an output).

    ``update(reference, candidate)`` may be called once per validation batch; :meth:`result`
    gives the same numbers as one call on the concatenated outputs, without keeping them.
    Rows where the candidate is not finite are counted (``nonfinite_rows``) and left out of the
    means; a non-finite reference is an error (there is nothing to judge against).
    """

    def __init__(self) -> None:
        self.rows = self.elements = self.top1 = self.nonfinite_rows = self.nonfinite_values = 0
        self.cos_sum, self.cos_min, self.err_max, self.err_sum = 0.0, float("inf"), 0.0, 0.0

    def update(self, reference: Any, candidate: Any) -> None:
        r, c = _np(reference), _np(candidate)
        if r.shape != c.shape:
            raise ValueError(f"reference and candidate outputs differ in shape: {r.shape} vs {c.shape}")
        if r.size == 0:
            return
        if not np.isfinite(r).all():
            raise ValueError("the reference output contains NaN or infinity")
        r2, c2 = (r.reshape(-1, r.shape[-1]), c.reshape(-1, c.shape[-1])) if r.ndim > 1 else (r.reshape(1, -1), c.reshape(1, -1))
        finite = np.isfinite(c2)
        good = finite.all(axis=1)
        if not good.all():
            self.nonfinite_rows += int((~good).sum())
            self.nonfinite_values += int((~finite).sum())
            r2, c2 = r2[good], c2[good]
            if r2.shape[0] == 0:
                return
        nr, nc = np.linalg.norm(r2, axis=1), np.linalg.norm(c2, axis=1)
        cos = np.where((nr == 0) & (nc == 0), 1.0, np.sum(r2 * c2, axis=1) / np.maximum(nr * nc, 1e-30))
        err = np.abs(r2 - c2)
        self.rows += r2.shape[0]
        self.elements += err.size
        self.cos_sum += float(cos.sum())
        self.cos_min = min(self.cos_min, float(cos.min()))
        self.err_max = max(self.err_max, float(err.max()))
        self.err_sum += float(err.sum())
        self.top1 += int(np.sum(r2.argmax(1) == c2.argmax(1)))

    def result(self) -> dict[str, float]:
        if self.rows == 0:
            raise ValueError("no finite outputs to compare" if self.nonfinite_rows else "no outputs to compare")
        return {"cosine_mean": self.cos_sum / self.rows, "cosine_min": self.cos_min, "max_abs_err": self.err_max,
                "mean_abs_err": self.err_sum / self.elements, "top1_agreement": self.top1 / self.rows}


def compare(reference: Any, candidate: Any) -> dict[str, float]:
    """Cosine similarity per row (mean, min), max and mean absolute error, top-1 agreement.

    Raises ``ValueError`` on a shape mismatch, on empty outputs and on NaN or infinity in either.
    """
    c = _np(candidate)
    if not np.isfinite(c).all():
        raise ValueError("outputs contain NaN or infinity")
    m = Metrics()
    m.update(reference, c)
    return m.result()


def _nn_agreement(r: np.ndarray, c: np.ndarray, chunk: int = 2048) -> float | None:
    """Fraction of rows whose nearest other row (cosine) is the same under both outputs.

    Computed in row chunks, so memory is ``chunk x n`` rather than ``n x n``."""
    if r.shape[0] < 3:
        return None

    def unit(e: np.ndarray) -> np.ndarray:
        return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-30)

    ru, cu = unit(r), unit(c)
    same = 0
    for a in range(0, r.shape[0], chunk):
        idx = np.arange(a, min(a + chunk, r.shape[0]))
        picks = []
        for e in (ru, cu):
            sim = e[idx] @ e.T
            sim[np.arange(idx.size), idx] = -np.inf
            picks.append(sim.argmax(axis=1))
        same += int(np.sum(picks[0] == picks[1]))
    return same / r.shape[0]


def accuracy_report(reference: Any, candidate: Any, *, layers: dict[str, tuple[Any, Any]] | None = None,
                    embeddings: bool = True, **extra: Any) -> AccuracyReport:
    """Compare outputs ``[n, d]`` of a reference model and a candidate (numpy or torch).

    ``layers`` maps a layer name to its (reference, candidate) outputs, or to metrics already
    computed (a dict, as :func:`pyperfcore.validate.layer_report` returns), for the per-layer rows.
    ``embeddings`` adds nearest-neighbour agreement (rows are embeddings of n inputs).
    """
    m = compare(reference, candidate)
    r, c = _np(reference), _np(candidate)
    r2, c2 = r.reshape(-1, r.shape[-1]), c.reshape(-1, c.shape[-1])
    per_layer = {name: dict(v) if isinstance(v, dict) else compare(*v) for name, v in (layers or {}).items()}
    return AccuracyReport(n=r2.shape[0], cosine_mean=m["cosine_mean"], cosine_min=m["cosine_min"],
                          max_abs_err=m["max_abs_err"], mean_abs_err=m["mean_abs_err"],
                          top1_agreement=m["top1_agreement"], nn_agreement=_nn_agreement(r2, c2) if embeddings else None,
                          layers=per_layer, extra=dict(extra))
