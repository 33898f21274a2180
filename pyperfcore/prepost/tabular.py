"""Tabular pre-processing: standardize / clip / fill numeric columns and one-hot or ordinal
encode categorical ones, by a schema, into one contiguous float32 matrix."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .. import _backends
from .._backends import register
from .._runtime import _core

__all__ = ["Numeric", "OneHot", "Ordinal", "TabularSchema", "encode_tabular"]


@dataclass(frozen=True)
class Numeric:
    """``clip((fill_missing(x) - mean) / std, *clip)``; missing = NaN (or None)."""

    name: str
    mean: float = 0.0
    std: float = 1.0
    clip: tuple[float, float] = (-np.inf, np.inf)
    fill: float | None = None  # raw-unit value for missing entries; None: the mean

    @property
    def width(self) -> int:
        return 1


@dataclass(frozen=True)
class OneHot:
    """One column per category; unknown or missing values give all zeros."""

    name: str
    categories: tuple[Any, ...]

    @property
    def width(self) -> int:
        return len(self.categories)


@dataclass(frozen=True)
class Ordinal:
    """The category's position in ``categories``; unknown or missing values give ``fill``."""

    name: str
    categories: tuple[Any, ...]
    fill: float = -1.0

    @property
    def width(self) -> int:
        return 1


@dataclass
class TabularSchema:
    columns: list[Any] = field(default_factory=list)

    @property
    def width(self) -> int:
        return sum(c.width for c in self.columns)

    def feature_names(self) -> list[str]:
        out = []
        for c in self.columns:
            out += [f"{c.name}={v}" for v in c.categories] if isinstance(c, OneHot) else [c.name]
        return out

    @classmethod
    def fit(cls, data: Mapping[str, Any], numeric: Sequence[str] = (), onehot: Sequence[str] = (),
            ordinal: Sequence[str] = (), clip_sigma: float | None = None) -> "TabularSchema":
        """Learn means/stds (ignoring NaN) and sorted category lists from ``data``."""
        cols: list[Any] = []
        for n in numeric:
            v = np.asarray(data[n], dtype=np.float64)
            mu = float(np.nanmean(v)) if np.isfinite(v).any() else 0.0
            sd = float(np.nanstd(v)) if np.isfinite(v).any() else 1.0
            clip = (-clip_sigma, clip_sigma) if clip_sigma else (-np.inf, np.inf)
            cols.append(Numeric(n, mu, sd if sd > 0 else 1.0, clip))
        for n in onehot:
            cols.append(OneHot(n, tuple(_categories(data[n]))))
        for n in ordinal:
            cols.append(Ordinal(n, tuple(_categories(data[n]))))
        return cls(cols)


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def _categories(values: Any) -> list[Any]:
    return sorted({v for v in np.asarray(values, dtype=object).tolist() if not _missing(v)})


def _codes(values: Any, categories: Sequence[Any], rows: int, name: str) -> np.ndarray:
    """int32 position of each value in categories; -1 for unknown or missing."""
    arr = np.asarray(values)
    if arr.shape != (rows,):
        raise ValueError(f"encode_tabular: column {name!r} has shape {arr.shape}, expected ({rows},)")
    cats = np.asarray(list(categories))
    if arr.dtype.kind in "iuU" and cats.size and cats.dtype.kind == arr.dtype.kind:
        order = np.argsort(cats, kind="stable")
        sc = cats[order]
        pos = np.clip(np.searchsorted(sc, arr), 0, sc.size - 1)
        return np.where(sc[pos] == arr, order[pos], -1).astype(np.int32)
    lut = {v: i for i, v in enumerate(categories)}
    return np.fromiter((lut.get(v, -1) if not _missing(v) else -1 for v in arr.tolist()), dtype=np.int32, count=rows)


def encode_tabular(data: Mapping[str, Any], schema: TabularSchema, backend: str | None = None) -> np.ndarray:
    """float32 [rows, schema.width]: the columns of ``schema`` in order, encoded from ``data``
    (a mapping of column name to 1-D values, e.g. a dict of numpy arrays or a pandas DataFrame)."""
    if data is None:
        raise TypeError("encode_tabular: data is None")
    if not schema.columns:
        raise ValueError("encode_tabular: the schema has no columns")
    missing = [c.name for c in schema.columns if c.name not in data]
    if missing:
        raise KeyError(f"encode_tabular: columns {missing} are not in the data")
    rows = len(np.asarray(data[schema.columns[0].name]))
    specs = []
    for c in schema.columns:
        if isinstance(c, Numeric):
            raw = np.asarray(data[c.name])
            if raw.dtype == object:
                raw = np.array([np.nan if v is None else v for v in raw.tolist()], dtype=np.float64)
            if raw.dtype.kind not in "fiub":
                raise TypeError(f"encode_tabular: numeric column {c.name!r} has dtype {raw.dtype}")
            v = np.ascontiguousarray(raw, dtype=np.float64)
            if v.shape != (rows,):
                raise ValueError(f"encode_tabular: column {c.name!r} has shape {v.shape}, expected ({rows},)")
            if not c.std > 0:
                raise ValueError(f"encode_tabular: column {c.name!r} needs std > 0")
            lo, hi = float(c.clip[0]), float(c.clip[1])
            if lo > hi:
                raise ValueError(f"encode_tabular: column {c.name!r} has clip lo > hi")
            specs.append((0, v, 1, float(c.mean), float(c.std), lo, hi, float(c.mean if c.fill is None else c.fill)))
        elif isinstance(c, (OneHot, Ordinal)):
            codes = _codes(data[c.name], c.categories, rows, c.name)
            fill = float(c.fill) if isinstance(c, Ordinal) else 0.0
            specs.append((1 if isinstance(c, OneHot) else 2, codes, c.width, 0.0, 1.0, 0.0, 0.0, fill))
        else:
            raise TypeError(f"encode_tabular: unknown column spec {type(c).__name__}")
    impl = _backends.select("encode_tabular", np.empty(0), backend)
    if rows == 0:
        return np.zeros((0, schema.width), dtype=np.float32)
    return impl(specs, rows)


@register("encode_tabular", "reference", ("cpu",))
def _tab_reference(specs: list[tuple], rows: int) -> np.ndarray:
    blocks = []
    for kind, data, width, mean, std, lo, hi, fill in specs:
        if kind == 0:
            v = np.where(np.isnan(data), fill, data)
            blocks.append(np.clip((v - mean) / std, lo, hi).reshape(rows, 1))
        elif kind == 1:
            b = np.zeros((rows, width))
            ok = data >= 0
            b[np.nonzero(ok)[0], data[ok]] = 1.0
            blocks.append(b)
        else:
            blocks.append(np.where(data >= 0, data, fill).reshape(rows, 1))
    return np.concatenate(blocks, axis=1).astype(np.float32) if blocks else np.zeros((rows, 0), np.float32)


@register("encode_tabular", "cpu", ("cpu",))
def _tab_cpu(specs: list[tuple], rows: int) -> np.ndarray:
    return _core().prepost_tabular_encode(list(specs), rows)
