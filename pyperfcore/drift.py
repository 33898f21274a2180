"""Streaming drift statistics and detectors.

Functional forms compare two samples in memory (``ks_2samp`` and ``wasserstein_distance`` equal
scipy's; ``psi``, ``jensen_shannon``, ``hellinger``, ``linf``, ``chi2_test``, ``z_test``).
:func:`detect_drift` runs a per-feature / per-dataset test with Evidently's defaults chosen by
reference size and column kind. :class:`ReferenceProfile` freezes reference bins, moments and
vocabularies; :class:`DriftMonitor` updates native accumulators from live batches over tumbling,
sliding or exponentially decayed windows and reports per-feature metrics and flags.

NaN policy (explicit, never silent): accumulators count NaN / +-inf / missing categories in
their own slots and report them (``n_missing``); the sample statistics raise ``ValueError`` on
NaN unless ``nan_policy="omit"`` is passed, which drops them and says how many in the result.
Decisions are effect-size aware: a p-value test only flags drift when the effect (KS D, total
variation distance) also exceeds ``min_effect``, so huge samples do not alarm on negligible
shifts. Set ``preset="evidently"`` to reproduce Evidently's p-value-only decisions.
"""
from __future__ import annotations

import json
import math
import struct
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from ._backends import is_torch_tensor
from ._runtime import _core

__all__ = [
    "KSResult", "ks_2samp", "wasserstein_distance", "psi", "jensen_shannon", "hellinger", "linf",
    "chi2_test", "z_test", "correct_pvalues", "Histogram", "Moments", "CategoryCounts",
    "FeatureDrift", "DriftReport", "detect_drift", "FeatureProfile", "ReferenceProfile",
    "DriftMonitor", "DriftHookError", "validate_schema", "freshness",
]

# Evidently 0.7 defaults (see docs/drift.md): thresholds per method and the reference size at
# which the choice of test switches from p-values to distances.
DEFAULT_THRESHOLDS = {"ks": 0.05, "chisquare": 0.05, "z": 0.05, "wasserstein": 0.1,
                      "jensenshannon": 0.1, "psi": 0.1, "hellinger": 0.1}
DEFAULT_MIN_EFFECT = {"ks": 0.05, "chisquare": 0.05, "z": 0.05}
PVALUE_METHODS = ("ks", "chisquare", "z")
SMALL_REFERENCE = 1000
DRIFT_SHARE = 0.5


# ------------------------------------------------------------------------ input handling
def _to_numpy(x: Any, what: str) -> np.ndarray:
    if x is None:
        raise TypeError(f"{what} must be an array, got None")
    if is_torch_tensor(x):
        if x.is_cuda:
            raise ValueError(f"{what}: CUDA tensors are not supported by drift statistics; pass a CPU tensor")
        x = x.detach().numpy()
    a = np.asarray(x) if not isinstance(x, np.ndarray) else x
    if a.ndim != 1:
        raise ValueError(f"{what} must be 1-D, got shape {a.shape}")
    return a


def _as_float(x: Any, what: str) -> np.ndarray:
    """1-D contiguous float64/float32 view or copy of a numeric input."""
    a = _to_numpy(x, what)
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{what} must be numeric (bool/int/float), got dtype {a.dtype}")
    if a.dtype not in (np.float64, np.float32):
        a = a.astype(np.float64)
    return np.ascontiguousarray(a)


def _clean(x: Any, what: str, nan_policy: str, check: bool = True) -> tuple[np.ndarray, int]:
    """float64 sample without NaN (and, for 'omit', without NaN). Returns (values, n_dropped).
    ``check=False`` skips the NaN scan under 'raise' for callers whose native kernel rejects NaN
    itself (they call :func:`_nan_error` to report it)."""
    if nan_policy not in ("raise", "omit"):
        raise ValueError(f"nan_policy must be 'raise' or 'omit', got {nan_policy!r}")
    a = _as_float(x, what).astype(np.float64, copy=False)
    if nan_policy == "raise" and not check:
        return a, 0
    bad = np.isnan(a)
    nbad = int(bad.sum())
    if nbad:
        if nan_policy == "raise":
            raise ValueError(f"{what} contains {nbad} NaN value(s); pass nan_policy='omit' to drop them explicitly")
        a = a[~bad]
    return a, nbad


def _native_pair(fn, a: np.ndarray, b: np.ndarray, names: tuple[str, str], nan_policy: str):
    """Calls a native two-sample kernel that rejects NaN; reports NaN as _clean does."""
    try:
        return fn(a, b)
    except ValueError as e:
        if nan_policy == "raise" and "NaN" in str(e):
            _clean(a, names[0], nan_policy)
            _clean(b, names[1], nan_policy)
        raise


# ------------------------------------------------------------------------ functional forms
@dataclass(frozen=True)
class KSResult:
    """Two-sample KS result, field for field like scipy's ``KstestResult``."""

    statistic: float
    pvalue: float
    statistic_location: float
    statistic_sign: int
    method: str  # 'exact' or 'asymp': the p-value computation that ran
    n_omitted: int = 0

    def __iter__(self):
        return iter((self.statistic, self.pvalue))


def ks_2samp(data1: Any, data2: Any, alternative: str = "two-sided", method: str = "auto", *,
             nan_policy: str = "raise") -> KSResult:
    """Two-sample Kolmogorov-Smirnov test, equal to ``scipy.stats.ks_2samp``.

    ``alternative`` is ``'two-sided'``, ``'less'`` or ``'greater'`` (scipy's meanings).
    ``method='auto'`` computes the exact p-value when both samples have at most 10,000 values and
    the asymptotic one otherwise, as scipy does; the exact path reports the statistic rounded to
    a multiple of ``1/lcm(n1, n2)`` like scipy. Everything runs natively with the GIL released:
    large samples are not sorted (value buckets bound the ECDF difference and only the buckets
    that can hold the extremes are sorted, see docs/drift.md), small ones are.
    Raises ValueError on empty samples and on NaN (unless ``nan_policy='omit'``).
    """
    if alternative not in ("two-sided", "less", "greater"):
        if alternative in ("auto", "exact", "asymp"):  # scipy's positional order is (alternative, method)
            raise ValueError(f"alternative must be 'two-sided', 'less' or 'greater', got {alternative!r}; "
                             f"pass method={alternative!r} by keyword")
        raise ValueError(f"alternative must be 'two-sided', 'less' or 'greater', got {alternative!r}")
    if method not in ("auto", "exact", "asymp"):
        raise ValueError(f"method must be 'auto', 'exact' or 'asymp', got {method!r}")
    a, na = _clean(data1, "data1", nan_policy, check=False)
    b, nb = _clean(data2, "data2", nan_policy, check=False)
    if a.size == 0 or b.size == 0:
        raise ValueError("ks_2samp needs two non-empty samples")
    core = _core()
    s, p, loc, sign, used = _native_pair(lambda x, y: core.drift_ks_2samp(x, y, method, False, alternative),
                                         a, b, ("data1", "data2"), nan_policy)
    return KSResult(float(s), float(p), float(loc), int(sign), str(used), na + nb)


def wasserstein_distance(u: Any, v: Any, *, nan_policy: str = "raise") -> float:
    """First Wasserstein distance between two samples (``scipy.stats.wasserstein_distance``)."""
    a, _ = _clean(u, "u_values", nan_policy, check=False)
    b, _ = _clean(v, "v_values", nan_policy, check=False)
    if a.size == 0 or b.size == 0:
        raise ValueError("wasserstein_distance needs two non-empty samples")
    core = _core()
    return float(_native_pair(lambda x, y: core.drift_wasserstein(x, y, False), a, b, ("u_values", "v_values"),
                              nan_policy))


def _edges_for(ref: np.ndarray, cur: np.ndarray, bins: Any, strategy: str) -> np.ndarray:
    if isinstance(bins, str):
        return np.histogram_bin_edges(np.concatenate([ref, cur]), bins=bins)
    if np.ndim(bins) == 1:
        return np.asarray(bins, dtype=np.float64)
    if not isinstance(bins, (int, np.integer)) or isinstance(bins, bool) or bins < 1:
        raise ValueError(f"bins must be a positive int, a numpy bin rule name or an array of edges, got {bins!r}")
    if strategy == "quantile":
        e = np.unique(np.quantile(ref, np.linspace(0, 1, int(bins) + 1)))
        if e.size < 2:
            e = np.array([e[0], np.nextafter(e[0], np.inf)])
        # Open outer bins: current values beyond the reference range are counted, not dropped.
        e[0], e[-1] = -np.inf, np.inf
        return e
    if strategy == "uniform":
        return np.histogram_bin_edges(np.concatenate([ref, cur]), bins=int(bins))
    raise ValueError(f"strategy must be 'quantile' or 'uniform', got {strategy!r}")


def _binned(reference: Any, current: Any, bins: Any, strategy: str, kind: str, nan_policy: str):
    """Count vectors of both samples over shared bins or categories."""
    if kind == "categorical":
        if nan_policy not in ("raise", "omit"):
            raise ValueError(f"nan_policy must be 'raise' or 'omit', got {nan_policy!r}")
        _, (rc, cc), (rmiss, cmiss) = _joint_counts([reference, current], ["reference", "current"])
        if (rmiss or cmiss) and nan_policy == "raise":
            raise ValueError("input has missing values; pass nan_policy='omit' to drop them explicitly")
        if rc.sum() == 0 or cc.sum() == 0:
            raise ValueError("both samples need at least one non-missing value")
        return rc, cc
    ref, _ = _clean(reference, "reference", nan_policy)
    cur, _ = _clean(current, "current", nan_policy)
    if ref.size == 0 or cur.size == 0:
        raise ValueError("both samples need at least one value")
    edges = _edges_for(ref, cur, bins, strategy)
    hr, hc = _core().DriftHistogram(edges), _core().DriftHistogram(edges)
    hr.update(ref)
    hc.update(cur)
    # under / bins / over; the NaN slot is empty here
    return hr.counts[:-1].astype(np.float64), hc.counts[:-1].astype(np.float64)


def psi(reference: Any, current: Any, bins: Any = 10, *, strategy: str = "quantile", kind: str = "numeric",
        eps: float = 1e-4, nan_policy: str = "raise") -> float:
    """Population stability index ``sum((p - q) * ln(p / q))``.

    ``bins``: an int (``strategy='quantile'``: reference quantile bins with open outer bins, the
    usual PSI deciles; ``'uniform'``: equal-width over both samples), a numpy rule name such as
    ``"sturges"`` over both samples (Evidently's choice), or explicit edges (values outside them
    are counted in extra outer bins, never dropped). Empty bins get ``eps`` (Evidently's rule).
    """
    r, c = _binned(reference, current, bins, strategy, kind, nan_policy)
    return float(_core().drift_psi(r, c, eps))


def jensen_shannon(reference: Any, current: Any, bins: Any = "sturges", *, strategy: str = "uniform",
                   kind: str = "numeric", base: float | None = None, nan_policy: str = "raise") -> float:
    """Jensen-Shannon distance (``scipy.spatial.distance.jensenshannon`` of the binned proportions)."""
    r, c = _binned(reference, current, bins, strategy, kind, nan_policy)
    return float(_core().drift_jensen_shannon(r, c, float(base or 0.0)))


def hellinger(reference: Any, current: Any, bins: Any = "sturges", *, strategy: str = "uniform",
              kind: str = "numeric", nan_policy: str = "raise") -> float:
    """Hellinger distance ``sqrt(1 - sum(sqrt(p q)))`` of the binned proportions."""
    r, c = _binned(reference, current, bins, strategy, kind, nan_policy)
    return float(_core().drift_hellinger(r, c))


def linf(reference: Any, current: Any, *, nan_policy: str = "raise") -> float:
    """L-infinity distance between the category proportions of two categorical samples."""
    r, c = _binned(reference, current, None, "uniform", "categorical", nan_policy)
    return float(_core().drift_linf(r, c))


def _chisquare_counts(r: np.ndarray, c: np.ndarray) -> tuple[float, float]:
    """Evidently's chi-square: goodness of fit of current counts to reference proportions."""
    nr, nc = r.sum(), c.sum()
    exp = r * (nc / nr)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(exp > 0, (c - exp) ** 2 / np.where(exp > 0, exp, 1), np.where(c > 0, np.inf, 0.0))
    stat = float(terms.sum())
    dof = r.size - 1
    p = 1.0 if dof < 1 else float(_core().drift_chi2_sf(stat, float(dof)))
    return stat, p


def chi2_test(reference: Any, current: Any, *, nan_policy: str = "raise") -> tuple[float, float]:
    """Chi-square goodness of fit of the current categories to the reference proportions
    (``scipy.stats.chisquare(f_obs, f_exp)`` as Evidently calls it). Returns (statistic, pvalue)."""
    r, c = _binned(reference, current, None, "uniform", "categorical", nan_policy)
    return _chisquare_counts(r, c)


def _z_counts(ref_other: float, nr: float, cur_other: float, nc: float) -> tuple[float, float]:
    p1, p2 = ref_other / nr, cur_other / nc
    P = (p1 * nr + p2 * nc) / (nr + nc)
    den = math.sqrt(P * (1 - P) * (1.0 / nr + 1.0 / nc))
    if den == 0:
        return 0.0, 1.0
    z = (p1 - p2) / den
    return z, float(_core().drift_normal_two_sided(z))


def z_test(reference: Any, current: Any, *, nan_policy: str = "raise") -> tuple[float, float]:
    """Two-proportion Z-test for a binary feature (Evidently's ``z``). Returns (z, pvalue)."""
    r, c = _binned(reference, current, None, "uniform", "categorical", nan_policy)
    if r.size > 2:
        raise ValueError(f"z_test needs at most 2 categories, got {r.size}")
    return _z_counts(r[1:].sum(), r.sum(), c[1:].sum(), c.sum())


def correct_pvalues(pvalues: Sequence[float], method: str | None = "bh") -> np.ndarray:
    """Multiple-testing adjusted p-values: ``'bonferroni'``, ``'bh'`` (Benjamini-Hochberg) or None."""
    p = np.asarray(pvalues, dtype=np.float64)
    if p.size == 0 or method in (None, "none"):
        return p.copy()
    if np.isnan(p).any():
        raise ValueError("p-values contain NaN")
    m = p.size
    if method == "bonferroni":
        return np.minimum(p * m, 1.0)
    if method == "bh":
        order = np.argsort(p)
        ranked = p[order] * m / np.arange(1, m + 1)
        ranked = np.minimum.accumulate(ranked[::-1])[::-1]
        out = np.empty(m)
        out[order] = np.minimum(ranked, 1.0)
        return out
    raise ValueError(f"correction must be 'bonferroni', 'bh' or None, got {method!r}")


# ------------------------------------------------------------------------ accumulators
class _Acc:
    _cls = ""

    def __init__(self, native: Any):
        self._n = native

    def to_bytes(self) -> bytes:
        """Versioned, little-endian blob (see docs/drift.md)."""
        return self._n.to_bytes()

    @classmethod
    def from_bytes(cls, blob: bytes):
        """Parses a blob; ValueError on anything malformed."""
        obj = cls.__new__(cls)
        obj._n = getattr(_core(), cls._cls).from_bytes(blob)
        return obj

    def merge(self, other) -> None:
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(self).__name__} with {type(other).__name__}")
        self._n.merge(other._n)

    def __getstate__(self):
        return self.to_bytes()

    def __setstate__(self, blob):
        self._n = getattr(_core(), self._cls).from_bytes(blob)


class Histogram(_Acc):
    """Counts over fixed edges; ``counts`` = [below, bins..., above, NaN]."""

    _cls = "DriftHistogram"

    def __init__(self, edges: Any):
        super().__init__(_core().DriftHistogram(np.asarray(edges, dtype=np.float64)))

    def update(self, x: Any, target: str | None = None) -> None:
        self._n.update(_as_float(x, "x"), target)

    @property
    def counts(self) -> np.ndarray:
        return self._n.counts

    @property
    def edges(self) -> np.ndarray:
        return self._n.edges


class Moments(_Acc):
    """Count, mean, variance, skewness, kurtosis of finite values; NaN/inf counted apart."""

    _cls = "DriftMoments"

    def __init__(self):
        super().__init__(_core().DriftMoments())

    def update(self, x: Any, target: str | None = None) -> None:
        self._n.update(_as_float(x, "x"), target)

    @property
    def state(self) -> dict:
        return self._n.state

    def std(self, ddof: int = 0) -> float:
        s = self.state
        return math.sqrt(s["m2"] / (s["n"] - ddof)) if s["n"] > ddof else float("nan")


class CategoryCounts(_Acc):
    """Counts of int64 codes in [0, k); then 'unknown' (code >= k) and 'missing' (code < 0)."""

    _cls = "DriftCategoryCounts"

    def __init__(self, k: int):
        super().__init__(_core().DriftCategoryCounts(int(k)))

    def update(self, codes: Any) -> None:
        self._n.update(np.ascontiguousarray(_to_numpy(codes, "codes"), dtype=np.int64))

    @property
    def counts(self) -> np.ndarray:
        return self._n.counts


# ------------------------------------------------------------------------ categorical values
class _CategoryColumn:
    """A pandas categorical column with str/bytes categories, kept as its integer codes and its
    categories so no per-row object is made. ``np.asarray`` gives the values as before (object
    array, NaN for missing); :func:`_joint_counts` and the monitor use the codes directly."""

    __slots__ = ("series",)

    def __init__(self, series: Any):
        self.series = series

    @staticmethod
    def wraps(series: Any) -> bool:
        # numpy dtypes and pandas extension dtypes (StringDtype: 'O') both have `kind`
        return str(getattr(series, "dtype", "")) == "category" and \
            getattr(series.cat.categories.dtype, "kind", "") in "OUS"

    @property
    def codes(self) -> np.ndarray:
        return np.asarray(self.series.cat.codes)

    @property
    def categories(self) -> np.ndarray:
        return np.asarray(self.series.cat.categories.to_numpy(), dtype=object)

    def __len__(self) -> int:
        return len(self.series)

    def __array__(self, dtype=None, copy=None):
        a = np.asarray(self.series.to_numpy())
        return a if dtype is None else a.astype(dtype)

    def take(self, start: int, stop: int) -> "_CategoryColumn":
        return _CategoryColumn(self.series.iloc[start:stop])


def _categorical_values(x: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(values, missing mask). Missing: None and float NaN in object arrays, NaN in floats."""
    if isinstance(x, (list, tuple)):
        x = np.array(x, dtype=object)
    a = _to_numpy(x, what)
    if a.dtype.kind == "f":
        return a, np.isnan(a)
    if a.dtype.kind in "biuUS":
        return a, np.zeros(a.shape, dtype=bool)
    if a.dtype.kind == "O":
        codes = _core().DriftStringCoder().encode(a, False)  # -1 exactly where an item is None or a float NaN
        if codes is not None:
            return a, codes == -1
        miss = np.fromiter((v is None or (isinstance(v, float) and v != v) for v in a), dtype=bool, count=a.size)
        return a, miss
    raise TypeError(f"{what}: unsupported dtype {a.dtype} for a categorical column")


def _string_input(x: Any, what: str) -> Any:
    """``x`` in a form the native string coder takes ('U' / 'S' / object array, list, tuple), or
    None for anything else (numbers, tensors): those take the general path."""
    if isinstance(x, (list, tuple)):
        return x
    if is_torch_tensor(x):
        return None
    a = _to_numpy(x, what)
    if a.dtype.kind not in "OUS":
        return None
    if a.dtype.kind == "U" and not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return a


def _encode_strings(coder: Any, x: Any, what: str, insert: bool = True) -> np.ndarray | None:
    """Codes of one str/bytes column through ``coder`` (-1 missing, -2 unknown when not
    inserting), or None when the column holds anything else (the coder is then unchanged by it)."""
    if isinstance(x, _CategoryColumn):
        lut = coder.encode(x.categories, insert)
        if lut is None or (lut == -1).any():
            return None
        return np.append(lut, -1)[x.codes]  # pandas' code -1 (missing) -> the appended -1
    a = _string_input(x, what)
    return None if a is None else coder.encode(a, insert)


def _joint_counts(cols: Sequence[Any], whats: Sequence[str]) -> tuple[np.ndarray, list[np.ndarray], list[int]]:
    """Shared vocabulary of several categorical samples and each one's counts over it.

    Returns (vocabulary, [float64 counts per sample], [missing per sample]). The vocabulary holds
    the distinct non-missing values of all samples, sorted (first-seen order when the values
    cannot be ordered, e.g. str mixed with bytes). str / bytes columns are coded natively (one
    hash table for all samples, GIL released while hashing); pandas categoricals reuse their
    codes; anything else (numbers, other objects) goes through numpy / a Python dict."""
    coder = _core().DriftStringCoder()
    binned = []  # per sample: [missing, code 0, code 1, ...] over the codes known after it
    for x, what in zip(cols, whats):
        if isinstance(x, _CategoryColumn):  # pandas' own codes, counted, then mapped to ours
            lut = coder.encode(x.categories)
            if lut is None or (lut < 0).any():
                break
            per_cat = np.bincount(x.codes.astype(np.int64) + 1, minlength=lut.size + 1)
            b = np.zeros(len(coder) + 1, dtype=np.int64)
            b[0] = per_cat[0]
            np.add.at(b, lut + 1, per_cat[1:])
        else:
            a = _string_input(x, what)
            c = None if a is None else coder.count(a)
            if c is None:
                break
            b = c[1:]  # c[0] counts unknown values: none while inserting
        binned.append(b)
    has_cat = any(isinstance(x, _CategoryColumn) for x in cols)
    if len(binned) == len(cols) and not (has_cat and coder.mixed_kinds):
        k = len(coder)
        binned = [np.pad(b, (0, k + 1 - b.size)) for b in binned]
        order = np.arange(k) if coder.mixed_kinds else coder.sorted_codes()
        present = np.zeros(k, dtype=bool)
        for b in binned:
            present |= b[1:] > 0
        order = order[present[order]]  # unused pandas categories are not in the vocabulary
        vals = coder.values()
        kinds = {x.dtype.kind if isinstance(x, np.ndarray) else "O" for x in cols}
        if kinds == {"U"} or kinds == {"S"}:
            vocab = np.array([vals[i] for i in order], dtype=np.result_type(*[x.dtype for x in cols]))
        else:
            vocab = np.empty(order.size, dtype=object)
            vocab[:] = [vals[i] for i in order]
        return vocab, [b[1:][order].astype(np.float64) for b in binned], [int(b[0]) for b in binned]
    # General path: numbers, objects other than str / bytes.
    pairs = [_categorical_values(x, w) for x, w in zip(cols, whats)]
    present = [v[~m] for v, m in pairs]
    voc = _Vocabulary.fit(np.concatenate(present) if len(present) > 1 else present[0])
    k = len(voc)
    return (voc.values, [np.bincount(voc.codes(v), minlength=k).astype(np.float64) for v in present],
            [int(m.sum()) for _, m in pairs])


class _Vocabulary:
    """Sorted distinct values with a vectorized value -> code map (unknown -> len)."""

    def __init__(self, values: np.ndarray):
        self.values = values
        self._index: dict | None = None
        if values.dtype.kind == "O":
            self._index = {v: i for i, v in enumerate(values.tolist())}

    @classmethod
    def fit(cls, values: np.ndarray) -> "_Vocabulary":
        if values.dtype.kind == "O":
            uniq = list(dict.fromkeys(values.tolist()))
            try:
                uniq = sorted(uniq)  # not list.sort(): a failed sort leaves a list half sorted
            except TypeError:  # mixed types: keep first-seen order
                pass
            return cls(np.array(uniq, dtype=object))
        return cls(np.unique(values))

    def __len__(self) -> int:
        return int(self.values.size)

    def codes(self, x: np.ndarray) -> np.ndarray:
        k = len(self)
        if self._index is not None:
            idx = self._index
            return np.fromiter((idx.get(v, k) for v in x.tolist()), dtype=np.int64, count=x.size)
        if k == 0:
            return np.full(x.size, 0, dtype=np.int64)
        try:
            pos = np.searchsorted(self.values, x)
        except TypeError as exc:
            raise TypeError(f"values of dtype {x.dtype} cannot be compared with the vocabulary ({self.values.dtype})") from exc
        pos = np.minimum(pos, k - 1)
        ok = self.values[pos] == x
        return np.where(ok, pos, k).astype(np.int64)


# ------------------------------------------------------------------------ results
@dataclass
class FeatureDrift:
    """One feature's verdict: the method that decided, its value and threshold, and context."""

    name: str
    kind: str  # 'numeric' or 'categorical'
    method: str
    statistic: float
    threshold: float
    drifted: bool
    pvalue: float | None = None
    pvalue_adjusted: float | None = None
    effect: float | None = None  # KS D or total variation distance for p-value methods
    n_reference: int = 0
    n_current: int = 0
    n_missing_current: int = 0
    metrics: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass
class DriftReport:
    """Per-feature results and the dataset verdict (drifted when >= drift_share of features drift)."""

    features: dict[str, FeatureDrift]
    drift_share: float = DRIFT_SHARE
    window: dict[str, Any] = field(default_factory=dict)

    @property
    def drifted_features(self) -> list[str]:
        return [n for n, f in self.features.items() if f.drifted]

    @property
    def share_drifted(self) -> float:
        return len(self.drifted_features) / max(len(self.features), 1)

    @property
    def dataset_drift(self) -> bool:
        return bool(self.features) and self.share_drifted >= self.drift_share

    def to_dict(self) -> dict:
        return {"dataset_drift": self.dataset_drift, "share_drifted": self.share_drifted,
                "drifted_features": self.drifted_features, "window": self.window,
                "features": {n: asdict(f) for n, f in self.features.items()}}


def _choose_method(kind: str, n_ref: int, n_unique: int) -> str:
    """Evidently's default test by reference size, column kind and distinct values."""
    if n_ref <= SMALL_REFERENCE:
        if kind == "numeric" and n_unique > 5:
            return "ks"
        return "chisquare" if n_unique > 2 else "z"
    if kind == "numeric" and n_unique > 5:
        return "wasserstein"
    return "jensenshannon"


def _settings(preset: str, thresholds, min_effect, correction):
    if preset not in ("pyperfcore", "evidently"):
        raise ValueError(f"preset must be 'pyperfcore' or 'evidently', got {preset!r}")
    th = dict(DEFAULT_THRESHOLDS)
    th.update(thresholds or {})
    if min_effect is None:
        me = dict(DEFAULT_MIN_EFFECT) if preset == "pyperfcore" else {}
    elif isinstance(min_effect, (int, float)):
        me = {m: float(min_effect) for m in PVALUE_METHODS}
    else:
        me = dict(min_effect)
    if correction == "default":
        correction = "bh" if preset == "pyperfcore" else None
    return th, me, correction


def _finish(feats: list[FeatureDrift], thresholds, min_effect, correction) -> None:
    """Multiple-testing correction over the p-value features, then the decisions."""
    pv = [f for f in feats if f.method in PVALUE_METHODS and f.pvalue is not None]
    adj = correct_pvalues([f.pvalue for f in pv], correction) if pv else []
    for f, pa in zip(pv, adj):
        f.pvalue_adjusted = float(pa)
    for f in feats:
        if f.method in PVALUE_METHODS:
            alpha = thresholds[f.method]
            p = f.pvalue_adjusted if f.pvalue_adjusted is not None else f.pvalue
            sig = p <= alpha if f.method == "ks" else p < alpha  # Evidently's comparisons
            big = f.effect is None or f.effect >= min_effect.get(f.method, 0.0)
            f.drifted = bool(sig and big)
            if sig and not big:
                f.note = f"significant (p={p:.3g}) but effect {f.effect:.4g} < min_effect {min_effect[f.method]}"
        else:
            f.drifted = bool(f.statistic >= f.threshold)


def _columns(data: Any, names: Sequence[str] | None, what: str) -> dict[str, Any]:
    if isinstance(data, Mapping):
        return {str(k): v for k, v in data.items()}
    if hasattr(data, "columns") and hasattr(data, "__getitem__") and not isinstance(data, np.ndarray):
        out = {}
        for c in data.columns:  # pandas DataFrame: columns as numpy (no copy where pandas allows)
            col = data[c]
            if _CategoryColumn.wraps(col):
                out[str(c)] = _CategoryColumn(col)
            elif not isinstance(col.dtype, np.dtype) and getattr(col.dtype, "kind", "") == "O" \
                    and not isinstance(getattr(col.dtype, "na_value", None), float):
                # pandas "string" dtype: its pd.NA becomes None (missing); str dtypes whose
                # marker is NaN are read as they are (NaN is missing already, and no copy)
                out[str(c)] = col.to_numpy(dtype=object, na_value=None)
            else:
                out[str(c)] = np.asarray(col.to_numpy())
        return out
    a = np.asarray(data)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array, a dict of columns or a DataFrame; got shape {a.shape}")
    if names is None:
        names = [f"f{i}" for i in range(a.shape[1])]
    if len(names) != a.shape[1]:
        raise ValueError(f"{what}: {len(names)} names for {a.shape[1]} columns")
    return {str(n): a[:, i] for i, n in enumerate(names)}


def _kind_of(values: np.ndarray, name: str, categorical: Iterable[str] | None) -> str:
    if (categorical is not None and name in set(categorical)) or isinstance(values, _CategoryColumn):
        return "categorical"
    return "numeric" if np.asarray(values).dtype.kind in "biuf" else "categorical"


def _finite(x: np.ndarray) -> np.ndarray:
    """x without NaN / +-inf; x itself (no copy) when all values are finite."""
    ok = np.isfinite(x)
    return x if ok.all() else x[ok]


def _numeric_feature(name, ref, cur, method, th, wasserstein_jobs: list | None = None) -> FeatureDrift:
    """One numeric column's test. With ``wasserstein_jobs``, a Wasserstein distance is not computed
    here but appended as (feature, r, c) for one batched native call over all columns."""
    ref = _as_float(ref, name).astype(np.float64, copy=False)
    cur = _as_float(cur, name).astype(np.float64, copy=False)
    r, c = _finite(ref), _finite(cur)
    if r.size == 0 or c.size == 0:
        raise ValueError(f"feature {name!r}: needs finite values in both reference and current")
    # Only "more than 5 distinct values?" matters for the choice: a capped scan, not a sort.
    support = _core().drift_small_support(r, c, 5)
    if method is None:
        method = _choose_method("numeric", r.size, 6 if support is None else support[0].size)
    f = FeatureDrift(name, "numeric", method, 0.0, th[method], False, n_reference=int(r.size),
                     n_current=int(c.size), n_missing_current=int(cur.size - c.size))
    if method == "ks":
        s, p, *_ = _core().drift_ks_2samp(r, c, "auto", False)
        f.statistic, f.pvalue, f.effect = float(p), float(p), float(s)
        f.metrics["ks_statistic"] = float(s)
        return f
    if method == "wasserstein":
        if wasserstein_jobs is not None:
            wasserstein_jobs.append((f, r, c))
        else:
            _set_wasserstein(f, r, float(_core().drift_wasserstein(r, c, False)))
        return f
    if support is not None:  # <= 5 distinct values in both: counts per value (<= 20 in the reference)
        return _count_feature(f, support[1].astype(np.float64), support[2].astype(np.float64))
    if method in ("jensenshannon", "psi", "hellinger") and _core().drift_small_support(r, r[:0], 20) is None:
        edges = np.histogram_bin_edges(np.concatenate([r, c]), bins="sturges")
        rc, cc = _binned(r, c, edges, "uniform", "numeric", "raise")
    else:
        rc, cc = _binned(r, c, None, "uniform", "categorical", "raise")
    return _count_feature(f, rc, cc)


def _set_wasserstein(f: FeatureDrift, r: np.ndarray, w: float) -> None:
    """Evidently's normed Wasserstein: distance / max(np.std(reference), 0.001)."""
    f.statistic = float(w / max(float(np.std(r)), 0.001))
    f.metrics["wasserstein"] = float(w)


def _count_feature(f: FeatureDrift, rc: np.ndarray, cc: np.ndarray) -> FeatureDrift:
    core = _core()
    m = f.method
    if m == "jensenshannon":
        f.statistic = float(core.drift_jensen_shannon(rc, cc, 0.0))
    elif m == "psi":
        f.statistic = float(core.drift_psi(rc, cc, 1e-4))
    elif m == "hellinger":
        f.statistic = float(core.drift_hellinger(rc, cc))
    elif m == "chisquare":
        stat, p = _chisquare_counts(rc, cc)
        f.statistic, f.pvalue = p, p
        f.metrics["chi2"] = stat
        f.effect = 0.5 * float(np.abs(rc / rc.sum() - cc / cc.sum()).sum())
    elif m == "z":
        if rc.size <= 1 and cc.size <= 1:
            z, p = 0.0, 1.0
        else:
            z, p = _z_counts(rc[1:].sum(), rc.sum(), cc[1:].sum(), cc.sum())
        f.statistic, f.pvalue = p, p
        f.metrics["z"] = z
        f.effect = 0.5 * float(np.abs(rc / rc.sum() - cc / cc.sum()).sum())
    else:
        raise ValueError(f"method {m!r} does not apply to feature {f.name!r} ({f.kind})")
    return f


def _categorical_feature(name, ref, cur, method, th) -> FeatureDrift:
    vocab, (rc, cc), (_, cmiss) = _joint_counts([ref, cur], [name, name])
    nr, nc = int(rc.sum()), int(cc.sum())
    if nr == 0 or nc == 0:
        raise ValueError(f"feature {name!r}: needs non-missing values in both reference and current")
    if method is None:
        method = _choose_method("categorical", nr, len(vocab))
    f = FeatureDrift(name, "categorical", method, 0.0, th[method], False, n_reference=nr,
                     n_current=nc, n_missing_current=cmiss)
    return _count_feature(f, rc, cc)


def detect_drift(reference: Any, current: Any, *, names: Sequence[str] | None = None,
                 categorical: Iterable[str] | None = None, methods: Mapping[str, str] | None = None,
                 thresholds: Mapping[str, float] | None = None, preset: str = "pyperfcore",
                 min_effect: float | Mapping[str, float] | None = None, correction: str | None = "default",
                 drift_share: float = DRIFT_SHARE) -> DriftReport:
    """Per-feature and dataset drift of ``current`` against ``reference``, in memory and exact.

    The test per column follows Evidently's defaults: reference of at most 1,000 rows -> KS
    (numeric with > 5 distinct values), chi-square (> 2 values) or Z-test; larger reference ->
    Wasserstein normed by the reference std (drift at >= 0.1) for numeric columns with > 5 values,
    Jensen-Shannon distance (>= 0.1) otherwise. Non-finite values are left out of the tests and
    counted in ``n_missing_current``. ``preset='pyperfcore'`` (default) adds an effect-size floor
    to p-value tests (``min_effect``) and Benjamini-Hochberg correction across features;
    ``preset='evidently'`` reproduces Evidently's decisions. ``methods`` overrides per column.
    """
    th, me, corr = _settings(preset, thresholds, min_effect, correction)
    rcols, ccols = _columns(reference, names, "reference"), _columns(current, names, "current")
    if set(rcols) != set(ccols):
        raise ValueError(f"reference and current have different columns: {sorted(set(rcols) ^ set(ccols))}")
    feats, jobs = [], []
    for name, rv in rcols.items():
        meth = (methods or {}).get(name)
        if meth is not None and meth not in th:
            raise ValueError(f"unknown method {meth!r} for {name!r}; choose one of {sorted(th)}")
        if _kind_of(rv, name, categorical) == "numeric":
            feats.append(_numeric_feature(name, rv, ccols[name], meth, th, jobs))
        else:
            feats.append(_categorical_feature(name, rv, ccols[name], meth, th))
    if jobs:  # all Wasserstein columns in one native call, spread over the thread pool
        ws = _core().drift_wasserstein_many([r for _, r, _ in jobs], [c for _, _, c in jobs])
        for (f, r, _), w in zip(jobs, ws):
            _set_wasserstein(f, r, float(w))
    _finish(feats, th, me, corr)
    return DriftReport({f.name: f for f in feats}, drift_share)


# ------------------------------------------------------------------------ reference profile
@dataclass
class FeatureProfile:
    """Frozen reference state of one feature."""

    name: str
    kind: str  # 'numeric', or 'categorical' (also numeric columns with <= 5 distinct values)
    n: int
    n_missing: int
    edges: np.ndarray | None = None  # fine quantile edges (numeric)
    psi_edges: np.ndarray | None = None  # coarse edges, a subset of `edges`
    counts: np.ndarray | None = None  # reference histogram over `edges` (with outer slots) or vocabulary
    vocab: np.ndarray | None = None
    mean: float = 0.0
    std: float = 0.0
    min: float = 0.0
    max: float = 0.0
    n_unique: int = 0
    sample: np.ndarray | None = None  # sorted reference values (or evenly spaced order statistics)
    sample_exact: bool = True


class ReferenceProfile:
    """Per-feature reference bins, moments and vocabularies, frozen from reference data."""

    MAGIC = b"PFDP"
    VERSION = 1

    def __init__(self, features: dict[str, FeatureProfile]):
        self.features = features

    @classmethod
    def fit(cls, data: Any, *, names: Sequence[str] | None = None, categorical: Iterable[str] | None = None,
            bins: int = 10, fine_bins: int = 100, keep_sample: int = 100_000) -> "ReferenceProfile":
        """Freeze reference data (2-D array with ``names``, dict of columns, or DataFrame).

        Numeric columns get ``fine_bins`` quantile bins (for KS/JS/Hellinger/Wasserstein on
        streams), ``bins`` coarse ones for PSI, moments, and a sorted sample of up to
        ``keep_sample`` values for exact in-memory tests. Columns with <= 5 distinct values and
        non-numeric columns are categorical (a vocabulary of the reference values)."""
        if bins < 1 or fine_bins < bins or fine_bins % bins:
            raise ValueError("need 1 <= bins <= fine_bins with fine_bins a multiple of bins")
        feats = {}
        for name, col in _columns(data, names, "reference").items():
            kind = _kind_of(col, name, categorical)
            if kind == "numeric":
                x = _as_float(col, name).astype(np.float64, copy=False)
                fin = x[np.isfinite(x)]
                if fin.size == 0:
                    raise ValueError(f"reference feature {name!r} has no finite values")
                uniq = np.unique(fin)
                if uniq.size > 5:
                    feats[name] = cls._numeric(name, x, fin, uniq.size, bins, fine_bins, keep_sample)
                    continue
                col = np.where(np.isfinite(x), x, np.nan)  # +-inf are missing here, as NaN
            vocab, (counts,), (n_missing,) = _joint_counts([col], [name])
            if counts.sum() == 0:
                raise ValueError(f"reference feature {name!r} has no non-missing values")
            feats[name] = FeatureProfile(name, "categorical", int(counts.sum()), n_missing, counts=counts,
                                         vocab=vocab, n_unique=len(vocab))
        return cls(feats)

    @staticmethod
    def _numeric(name, x, fin, n_unique, bins, fine_bins, keep_sample) -> FeatureProfile:
        q = np.quantile(fin, np.arange(fine_bins + 1) / fine_bins)
        coarse = q[:: fine_bins // bins]
        edges, psi_edges = np.unique(q), np.unique(coarse)
        h = Histogram(edges)
        h.update(fin)
        mo = Moments()
        mo.update(fin)
        s = mo.state
        srt = np.sort(fin)
        exact = srt.size <= keep_sample
        if not exact:
            srt = srt[np.linspace(0, srt.size - 1, keep_sample).round().astype(np.int64)]
        return FeatureProfile(name, "numeric", int(fin.size), int(x.size - fin.size), edges=edges, psi_edges=psi_edges,
                              counts=h.counts[:-1].astype(np.float64), mean=s["mean"], std=math.sqrt(s["m2"] / s["n"]),
                              min=s["min"], max=s["max"], n_unique=int(n_unique), sample=srt, sample_exact=exact)

    def fingerprint(self) -> str:
        """Identifies the bins and vocabularies (monitors merge only with the same fingerprint)."""
        import hashlib

        h = hashlib.sha256()
        for n, f in self.features.items():
            h.update(n.encode() + f.kind.encode())
            if f.edges is not None:
                h.update(f.edges.tobytes())
            if f.vocab is not None:
                h.update(repr(f.vocab.tolist()).encode())
        return h.hexdigest()[:16]

    # serialization: MAGIC, u16 version, u32 JSON length, JSON (arrays as lists of floats)
    def to_bytes(self) -> bytes:
        out = {}
        for n, f in self.features.items():
            d = asdict(f)
            for k in ("edges", "psi_edges", "counts", "sample"):
                if d[k] is not None:
                    d[k] = np.asarray(d[k], dtype=np.float64).tolist()
            if f.vocab is not None:
                if f.vocab.dtype.kind not in "biufUO":
                    raise ValueError(f"feature {n!r}: vocabulary dtype {f.vocab.dtype} cannot be serialized")
                d["vocab"] = [v.item() if hasattr(v, "item") else v for v in f.vocab.tolist()]
                d["vocab_dtype"] = f.vocab.dtype.str
            out[n] = d
        body = json.dumps(out, allow_nan=True).encode()
        return self.MAGIC + struct.pack("<HI", self.VERSION, len(body)) + body

    @classmethod
    def from_bytes(cls, blob: bytes) -> "ReferenceProfile":
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise TypeError("from_bytes expects bytes")
        blob = bytes(blob)
        if len(blob) < 10 or blob[:4] != cls.MAGIC:
            raise ValueError("not a pyperfcore reference profile blob")
        ver, ln = struct.unpack("<HI", blob[4:10])
        if ver != cls.VERSION:
            raise ValueError(f"unsupported profile format version {ver}")
        if ln != len(blob) - 10:
            raise ValueError("profile blob length does not match its header")
        try:
            raw = json.loads(blob[10:].decode())
            feats = {}
            for n, d in raw.items():
                vdt = d.pop("vocab_dtype", None)
                for k in ("edges", "psi_edges", "counts", "sample"):
                    if d.get(k) is not None:
                        d[k] = np.asarray(d[k], dtype=np.float64)
                if d.get("vocab") is not None:
                    d["vocab"] = np.array(d["vocab"], dtype=object if vdt in (None, "|O") else np.dtype(vdt))
                f = FeatureProfile(**d)
                cls._validate(f)
                feats[n] = f
        except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as exc:
            raise ValueError(f"malformed profile blob: {exc}") from exc
        return cls(feats)

    @staticmethod
    def _validate(f: FeatureProfile) -> None:
        if f.kind == "numeric":
            if f.edges is None or f.edges.ndim != 1 or f.edges.size < 2 or not np.all(np.diff(f.edges) > 0):
                raise ValueError(f"feature {f.name}: bad edges")
            if f.counts is None or f.counts.shape != (f.edges.size + 1,) or (f.counts < 0).any():
                raise ValueError(f"feature {f.name}: bad counts")
            if f.psi_edges is None or not np.isin(f.psi_edges, f.edges).all():
                raise ValueError(f"feature {f.name}: bad psi edges")
        elif f.kind == "categorical":
            if f.vocab is None or f.counts is None or f.counts.shape != (len(f.vocab),) or (f.counts < 0).any():
                raise ValueError(f"feature {f.name}: bad vocabulary counts")
        else:
            raise ValueError(f"feature {f.name}: unknown kind {f.kind!r}")


# ------------------------------------------------------------------------ streaming monitor
class DriftHookError(RuntimeError):
    """An ``on_drift`` hook raised; the monitor's state was updated and the report is attached."""

    def __init__(self, msg: str, report: DriftReport):
        super().__init__(msg)
        self.report = report


class _WindowState:
    """Accumulated counts of one window chunk for every feature (float64: decay scales them)."""

    def __init__(self, profile: ReferenceProfile, keep_values: bool):
        self.counts: dict[str, np.ndarray] = {}
        self.missing: dict[str, float] = {}
        self.minmax: dict[str, list[float]] = {}
        self.sums: dict[str, float] = {}
        self.values: dict[str, list[np.ndarray]] | None = {} if keep_values else None
        for n, f in profile.features.items():
            # numeric: [below, bins..., above]; categorical: [categories..., unknown]
            k = f.edges.size + 1 if f.kind == "numeric" else len(f.vocab) + 1
            self.counts[n] = np.zeros(k)
            self.missing[n] = 0.0
            self.minmax[n] = [math.inf, -math.inf]
            self.sums[n] = 0.0
            if self.values is not None:
                self.values[n] = []
        self.rows = 0.0

    def scale(self, w: float) -> None:
        for n in self.counts:
            self.counts[n] *= w
            self.missing[n] *= w
            self.sums[n] *= w
        self.rows *= w

    def add(self, other: "_WindowState") -> None:
        for n in self.counts:
            self.counts[n] += other.counts[n]
            self.missing[n] += other.missing[n]
            self.sums[n] += other.sums[n]
            a, b = self.minmax[n], other.minmax[n]
            self.minmax[n] = [min(a[0], b[0]), max(a[1], b[1])]
            if self.values is not None and other.values is not None:
                self.values[n].extend(other.values[n])
        self.rows += other.rows


class DriftMonitor:
    """Streaming drift detection against a :class:`ReferenceProfile`.

    Windows: ``'tumbling'`` (a report every ``size`` rows, then reset), ``'sliding'`` (the last
    ``size`` rows, evaluated every ``step`` rows), ``'decay'`` (exponentially decayed counts with
    ``half_life`` rows, evaluated every ``step`` rows). Batches are split at window boundaries.
    Tumbling and sliding windows of at most ``exact_limit`` rows keep their values, so KS and
    Wasserstein are exact against the reference sample; otherwise they come from the binned state
    (the KS error bound is reported in ``metrics['ks_error']``). ``on_drift`` hooks are called
    with each report that flags drift; a hook that raises surfaces as :class:`DriftHookError`
    after the state has been updated.
    """

    MAGIC = b"PFDM"
    VERSION = 1

    def __init__(self, profile: ReferenceProfile, window: str = "tumbling", size: int = 10_000, *,
                 step: int | None = None, half_life: float | None = None, preset: str = "pyperfcore",
                 thresholds: Mapping[str, float] | None = None, min_effect: float | Mapping[str, float] | None = None,
                 correction: str | None = "default", methods: Mapping[str, str] | None = None,
                 drift_share: float = DRIFT_SHARE, exact_limit: int = 200_000,
                 on_drift: Callable[[DriftReport], None] | Sequence[Callable[[DriftReport], None]] | None = None):
        if not isinstance(profile, ReferenceProfile):
            raise TypeError("profile must be a ReferenceProfile")
        if window not in ("tumbling", "sliding", "decay"):
            raise ValueError(f"window must be 'tumbling', 'sliding' or 'decay', got {window!r}")
        if not isinstance(size, int) or size < 1:
            raise ValueError("size must be a positive int")
        self.profile, self.window, self.size = profile, window, size
        self.step = size if window == "tumbling" else int(step or size)
        if window == "sliding" and (self.step < 1 or size % self.step):
            raise ValueError("a sliding window needs 1 <= step with size a multiple of step")
        self.half_life = float(half_life or size)
        if self.half_life <= 0:
            raise ValueError("half_life must be > 0")
        self.config = dict(preset=preset, thresholds=dict(thresholds or {}), min_effect=min_effect,
                           correction=correction, methods=dict(methods or {}), drift_share=drift_share)
        self._th, self._me, self._corr = _settings(preset, thresholds, min_effect, correction)
        self.keep_values = window != "decay" and size <= exact_limit
        self.hooks = list(on_drift) if isinstance(on_drift, (list, tuple)) else ([on_drift] if on_drift else [])
        self.reports: list[DriftReport] = []
        self.rows_seen = 0
        self._chunks: list[_WindowState] = []
        self._cur = _WindowState(profile, self.keep_values)
        self._decayed = _WindowState(profile, False)
        self._hists: dict[str, Histogram] = {}
        self._vocabs: dict[str, _Vocabulary] = {}
        self._coders: dict[str, Any] = {}

    # ---- updates
    def update(self, batch: Any, names: Sequence[str] | None = None) -> list[DriftReport]:
        """Adds a batch (same columns as the profile); returns the reports this batch completed."""
        cols = _columns(batch, names or list(self.profile.features), "batch")
        missing = set(self.profile.features) - set(cols)
        if missing:
            raise ValueError(f"batch lacks feature(s) {sorted(missing)}")
        lens = {int(v.shape[0]) if is_torch_tensor(v) else len(v) if isinstance(v, _CategoryColumn) else len(np.asarray(v))
                for v in cols.values()}
        if len(lens) > 1:
            raise ValueError(f"batch columns have different lengths: {sorted(lens)}")
        n = lens.pop() if lens else 0
        out, pos = [], 0
        while pos < n:
            room = int(self.step - self._cur.rows)
            take = min(room, n - pos)
            part = {k: v.take(pos, pos + take) if isinstance(v, _CategoryColumn) else _to_numpy(v, k)[pos:pos + take]
                    for k, v in cols.items()}
            self._add(part, take)
            pos += take
            self.rows_seen += take
            if self._cur.rows >= self.step:
                rep = self._roll()
                if rep is not None:
                    out.append(rep)
        errors = []
        for rep in out:
            self.reports.append(rep)
            if rep.dataset_drift or rep.drifted_features:
                for h in self.hooks:
                    try:
                        h(rep)
                    except Exception as exc:  # surfaced below, after every hook ran
                        errors.append((rep, exc))
        if errors:
            rep, exc = errors[0]
            raise DriftHookError(f"on_drift hook raised {type(exc).__name__}: {exc}", rep) from exc
        return out

    def _add(self, cols: dict[str, np.ndarray], rows: int) -> None:
        st = self._cur
        feats = self.profile.features
        num = [n for n, f in feats.items() if f.kind == "numeric"]
        if num:
            # All numeric columns at once: one float64 block, column-wise reductions in numpy,
            # binning in native code (one cached histogram per feature, GIL released).
            xs = [_as_float(cols[n], n) for n in num]
            X = np.stack(xs, axis=1).astype(np.float64, copy=False) if rows else np.empty((0, len(num)))
            fin = np.isfinite(X)
            mins = np.where(fin, X, np.inf).min(axis=0, initial=np.inf)
            maxs = np.where(fin, X, -np.inf).max(axis=0, initial=-np.inf)
            sums = np.where(fin, X, 0.0).sum(axis=0)
            neg, pos = (X == -np.inf).sum(axis=0), (X == np.inf).sum(axis=0)
            for j, name in enumerate(num):
                h = self._hists.get(name)
                if h is None:
                    h = self._hists[name] = Histogram(feats[name].edges)
                h._n.clear()
                h.update(xs[j])
                c = h.counts.astype(np.float64)
                # +-inf land in the outer bins; count them as missing instead (as NaN is).
                c[0] -= neg[j]
                c[-2] -= pos[j]
                st.counts[name] += c[:-1]
                st.missing[name] += c[-1] + neg[j] + pos[j]
                mm = st.minmax[name]
                st.minmax[name] = [min(mm[0], float(mins[j])), max(mm[1], float(maxs[j]))]
                st.sums[name] += float(sums[j])
                if st.values is not None:
                    st.values[name].append(X[fin[:, j], j])
        for name, f in feats.items():
            if f.kind == "numeric":
                continue
            codes = self._native_codes(name, f, cols[name])
            if codes is None:
                vals, miss = _categorical_values(cols[name], name)
                if vals.dtype.kind == "f":
                    miss = miss | ~np.isfinite(vals)
                voc = self._vocabs.get(name)
                if voc is None:
                    voc = self._vocabs[name] = _Vocabulary(f.vocab)
                codes = _codes_masked(voc, vals, miss)
            k = len(f.vocab)
            c = np.bincount(np.where(codes < 0, k + 1, codes), minlength=k + 2).astype(np.float64)
            st.counts[name] += c[:-1]
            st.missing[name] += c[-1]
        st.rows += rows

    def _native_codes(self, name: str, f: FeatureProfile, col: Any) -> np.ndarray | None:
        """Codes of a str / bytes batch column against the profile's vocabulary through a native
        table seeded with it (lookups only, so unseen values never grow it): unknown -> k,
        missing -> -1. None when the vocabulary or the column is not str / bytes."""
        coder = self._coders.get(name, False)
        if coder is False:
            coder = None
            if f.vocab.dtype.kind in "OUS":
                c = _core().DriftStringCoder()
                seeded = _encode_strings(c, f.vocab, name)
                if seeded is not None and np.array_equal(seeded, np.arange(len(f.vocab))):
                    coder = c
            self._coders[name] = coder
        if coder is None:
            return None
        codes = _encode_strings(coder, col, name, insert=False)
        if codes is None:
            return None
        codes[codes == -2] = len(f.vocab)
        return codes

    def _roll(self) -> DriftReport | None:
        done, self._cur = self._cur, _WindowState(self.profile, self.keep_values)
        if self.window == "tumbling":
            return self._evaluate(done)
        if self.window == "sliding":
            self._chunks.append(done)
            self._chunks = self._chunks[-(self.size // self.step):]
            if len(self._chunks) * self.step < self.size:
                return None
            tot = _WindowState(self.profile, self.keep_values)
            for ch in self._chunks:
                tot.add(ch)
            return self._evaluate(tot)
        self._decayed.scale(0.5 ** (done.rows / self.half_life))
        self._decayed.add(done)
        if self.rows_seen < self.size:  # warm-up: no verdicts before `size` rows were seen
            return None
        return self._evaluate(self._decayed)

    # ---- evaluation
    def _evaluate(self, st: _WindowState) -> DriftReport:
        core = _core()
        feats = []
        for name, f in self.profile.features.items():
            cur = st.counts[name]
            meth = self.config["methods"].get(name) or _choose_method(f.kind, f.n, f.n_unique)
            fd = FeatureDrift(name, f.kind, meth, 0.0, self._th[meth], False, n_reference=f.n,
                              n_current=int(round(cur.sum())), n_missing_current=int(round(st.missing[name])))
            if cur.sum() <= 0:
                fd.note = "no non-missing values in the window"
                feats.append(fd)
                continue
            if f.kind == "categorical":
                ref = np.append(f.counts, 0.0)  # unknown categories: 0 in the reference
                fd.metrics.update(jensenshannon=core.drift_jensen_shannon(ref, cur, 0.0),
                                  hellinger=core.drift_hellinger(ref, cur), linf=core.drift_linf(ref, cur),
                                  unknown=float(cur[-1]))
                chi, p, _ = core.drift_chi2_contingency(ref, cur)
                fd.metrics["chi2_contingency"], fd.metrics["chi2_contingency_p"] = chi, p
                if meth in ("chisquare", "z") and cur[-1] > 0:
                    fd.method, meth = "jensenshannon", "jensenshannon"
                    fd.threshold = self._th[meth]
                    fd.note = "unseen categories: chi-square/Z need reference support; judged by JS"
                _count_feature(fd, ref if meth not in ("chisquare", "z") else ref[:-1],
                               cur if meth not in ("chisquare", "z") else cur[:-1])
                feats.append(fd)
                continue
            ref = f.counts
            psi_map = np.searchsorted(f.psi_edges, f.edges[:-1], side="right")  # fine bin -> coarse slot
            rp = np.bincount(np.r_[0, psi_map, f.psi_edges.size], weights=ref, minlength=f.psi_edges.size + 1)
            cp = np.bincount(np.r_[0, psi_map, f.psi_edges.size], weights=cur, minlength=f.psi_edges.size + 1)
            ks_b, ks_err = core.drift_ks_binned(ref, cur)
            lo = min(f.min, st.minmax[name][0])
            hi = max(f.max, st.minmax[name][1])
            edges = np.r_[lo, f.edges, hi]
            if not (edges[1] > edges[0]):
                edges[0] = np.nextafter(edges[1], -np.inf)
            if not (edges[-1] > edges[-2]):
                edges[-1] = np.nextafter(edges[-2], np.inf)
            w_b = core.drift_wasserstein_binned(ref, cur, edges)
            fd.metrics.update(psi=core.drift_psi(rp, cp, 1e-4), jensenshannon=core.drift_jensen_shannon(ref, cur, 0.0),
                              hellinger=core.drift_hellinger(ref, cur), ks_statistic=ks_b, ks_error=ks_err,
                              wasserstein=w_b)
            n_fin = float(cur[1:-1].sum() + cur[0] + cur[-1])
            fd.metrics["mean_shift_std"] = float((st.sums[name] / n_fin - f.mean) / max(f.std, 1e-12))
            vals = np.concatenate(st.values[name]) if st.values is not None and st.values[name] else None
            if vals is not None and vals.size:
                cs = np.sort(vals)
                # The exact small-sample p-value (path counting, O(n*m)) only where KS decides;
                # as a side metric the asymptotic one is reported.
                s, p, *_ = core.drift_ks_2samp(f.sample, cs, "auto" if meth == "ks" else "asymp", True, "two-sided")
                fd.metrics.update(ks_statistic=float(s), ks_error=0.0 if f.sample_exact else 1.0 / f.sample.size,
                                  wasserstein=float(core.drift_wasserstein(f.sample, cs, True)))
                ks_p = float(p)
            else:
                n_eff = fd.n_current
                ks_p = float(core.drift_ks_2samp_pvalue(f.n, max(n_eff, 1), ks_b, "asymp")[0])
            fd.metrics["ks_pvalue"] = ks_p
            if meth == "ks":
                fd.statistic, fd.pvalue, fd.effect = ks_p, ks_p, fd.metrics["ks_statistic"]
            elif meth == "wasserstein":
                fd.statistic = fd.metrics["wasserstein"] / max(f.std, 0.001)
            elif meth in ("psi", "jensenshannon", "hellinger"):
                fd.statistic = fd.metrics[meth]
            else:
                raise ValueError(f"method {meth!r} does not apply to numeric feature {name!r}")
            feats.append(fd)
        _finish(feats, self._th, self._me, self._corr)
        return DriftReport({f.name: f for f in feats}, self.config["drift_share"],
                           window={"kind": self.window, "rows": float(st.rows), "end_row": self.rows_seen})

    def report(self) -> DriftReport:
        """Evaluates the current window now (partial windows included)."""
        if self.window == "sliding":
            tot = _WindowState(self.profile, self.keep_values)
            for ch in self._chunks:
                tot.add(ch)
            tot.add(self._cur)
            return self._evaluate(tot)
        if self.window == "decay":
            tot = _WindowState(self.profile, False)
            tot.add(self._decayed)
            tot.add(self._cur)
            return self._evaluate(tot)
        return self._evaluate(self._cur)

    # ---- merge and serialization
    def merge(self, other: "DriftMonitor") -> None:
        """Adds another worker's window state (same profile fingerprint and window config)."""
        if not isinstance(other, DriftMonitor):
            raise TypeError("can only merge a DriftMonitor")
        if (other.profile.fingerprint() != self.profile.fingerprint() or other.window != self.window
                or other.size != self.size or other.step != self.step):
            raise ValueError("cannot merge monitors with different profiles or window configurations")
        self._cur.add(other._cur)
        self._decayed.add(other._decayed)
        for i, ch in enumerate(other._chunks[-len(self._chunks):] if self._chunks else []):
            self._chunks[i].add(ch)
        self.rows_seen += other.rows_seen

    def to_bytes(self) -> bytes:
        """Versioned blob of the profile, configuration and window counts (raw window values,
        kept for exact tests, are not serialized: a restored monitor uses the binned state until
        its next window)."""
        def st(s: _WindowState):
            return {"counts": {k: v.tolist() for k, v in s.counts.items()}, "missing": s.missing,
                    "minmax": s.minmax, "sums": s.sums, "rows": s.rows}

        meta = {"window": self.window, "size": self.size, "step": self.step, "half_life": self.half_life,
                "config": self.config, "rows_seen": self.rows_seen, "cur": st(self._cur),
                "decayed": st(self._decayed), "chunks": [st(c) for c in self._chunks]}
        body = json.dumps(meta).encode()
        prof = self.profile.to_bytes()
        return self.MAGIC + struct.pack("<HII", self.VERSION, len(prof), len(body)) + prof + body

    @classmethod
    def from_bytes(cls, blob: bytes) -> "DriftMonitor":
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise TypeError("from_bytes expects bytes")
        blob = bytes(blob)
        if len(blob) < 14 or blob[:4] != cls.MAGIC:
            raise ValueError("not a pyperfcore drift monitor blob")
        ver, lp, lb = struct.unpack("<HII", blob[4:14])
        if ver != cls.VERSION:
            raise ValueError(f"unsupported monitor format version {ver}")
        if 14 + lp + lb != len(blob):
            raise ValueError("monitor blob length does not match its header")
        prof = ReferenceProfile.from_bytes(blob[14:14 + lp])
        try:
            meta = json.loads(blob[14 + lp:].decode())
            cfg = meta["config"]
            mon = cls(prof, meta["window"], int(meta["size"]), step=int(meta["step"]), half_life=float(meta["half_life"]),
                      **cfg)
            mon.rows_seen = int(meta["rows_seen"])

            def load(d) -> _WindowState:
                s = _WindowState(prof, False)
                for k in s.counts:
                    arr = np.asarray(d["counts"][k], dtype=np.float64)
                    if arr.shape != s.counts[k].shape or not np.all(arr >= 0):
                        raise ValueError(f"bad counts for {k}")
                    s.counts[k] = arr
                    s.missing[k] = float(d["missing"][k])
                    s.minmax[k] = [float(v) for v in d["minmax"][k]]
                    s.sums[k] = float(d["sums"][k])
                s.rows = float(d["rows"])
                return s

            mon.keep_values = False
            mon._cur, mon._decayed = load(meta["cur"]), load(meta["decayed"])
            mon._chunks = [load(c) for c in meta["chunks"]]
        except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as exc:
            raise ValueError(f"malformed monitor blob: {exc}") from exc
        return mon

    def __getstate__(self):
        return {"blob": self.to_bytes(), "hooks": self.hooks, "reports": self.reports}

    def __setstate__(self, state):
        other = DriftMonitor.from_bytes(state["blob"])
        self.__dict__.update(other.__dict__)
        self.hooks, self.reports = state["hooks"], state["reports"]


def _codes_masked(voc: _Vocabulary, vals: np.ndarray, miss: np.ndarray) -> np.ndarray:
    codes = np.full(vals.size, -1, dtype=np.int64)
    keep = ~miss
    if keep.any():
        codes[keep] = voc.codes(vals[keep])
    return codes


# ------------------------------------------------------------------------ data quality
def validate_schema(data: Any, schema: Mapping[str, Mapping[str, Any]], *, names: Sequence[str] | None = None) -> dict:
    """Counts violations per feature. ``schema[name]`` may hold ``dtype`` ('numeric' or
    'categorical'), ``min``, ``max``, ``allowed`` (categories) and ``max_null_rate``.
    Returns ``{name: {'rows', 'nulls', 'null_rate', 'below_min', 'above_max', 'not_allowed',
    'dtype_ok', 'violations'}}``; a column missing from the data is a violation, never skipped."""
    cols = _columns(data, names, "data")
    out = {}
    for name, rule in schema.items():
        r: dict[str, Any] = {"rows": 0, "nulls": 0, "null_rate": 0.0, "below_min": 0, "above_max": 0,
                             "not_allowed": 0, "dtype_ok": True, "missing_column": name not in cols}
        if name in cols:
            col = cols[name]
            vals, miss = _categorical_values(col, name) if np.asarray(col).dtype.kind not in "biuf" else (
                np.asarray(col), np.isnan(np.asarray(col, dtype=np.float64)))
            r["rows"], r["nulls"] = int(vals.size), int(miss.sum())
            r["null_rate"] = r["nulls"] / max(r["rows"], 1)
            numeric = np.asarray(col).dtype.kind in "biuf"
            want = rule.get("dtype")
            if want is not None:
                r["dtype_ok"] = (want == "numeric") == numeric
            present = vals[~miss]
            if numeric and present.size:
                x = present.astype(np.float64)
                if "min" in rule:
                    r["below_min"] = int((x < rule["min"]).sum())
                if "max" in rule:
                    r["above_max"] = int((x > rule["max"]).sum())
            if "allowed" in rule and present.size:
                allowed = set(rule["allowed"])
                r["not_allowed"] = int(sum(v not in allowed for v in present.tolist()))
        rate_bad = r["null_rate"] > rule.get("max_null_rate", 1.0)
        r["violations"] = int(r["below_min"] + r["above_max"] + r["not_allowed"] + (not r["dtype_ok"]) + rate_bad
                              + r["missing_column"])
        out[name] = r
    return out


def freshness(event_times: Any, now: float, sla_seconds: float, *, quantiles: Sequence[float] = (0.5, 0.9, 0.99)) -> dict:
    """Age distribution of event timestamps (seconds, or numpy datetime64) at ``now`` and the
    count of values older than the SLA. NaT/NaN timestamps are counted as ``missing``."""
    t = _to_numpy(event_times, "event_times")
    if t.dtype.kind == "M":
        missing = np.isnat(t)
        secs = t.astype("datetime64[ns]").astype(np.int64) / 1e9
        now_s = float(np.datetime64(now, "ns").astype(np.int64) / 1e9) if not isinstance(now, (int, float)) else float(now)
    else:
        secs = _as_float(t, "event_times").astype(np.float64)
        missing = np.isnan(secs)
        now_s = float(now)
    age = now_s - secs[~missing]
    res = {"count": int(t.size), "missing": int(missing.sum()), "stale": int((age > sla_seconds).sum()),
           "future": int((age < 0).sum())}
    res["stale_rate"] = res["stale"] / max(age.size, 1)
    res["age_quantiles"] = {str(q): float(np.quantile(age, q)) for q in quantiles} if age.size else {}
    return res
