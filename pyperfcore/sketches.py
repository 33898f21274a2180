"""Mergeable monitoring sketches.

* :class:`HyperLogLog` / :class:`HyperLogLogUnion` - distinct counts with Apache DataSketches'
  algorithm and byte-identical serialized images (HLL_4/6/8, lg_k 4..21).
* :class:`RedisHyperLogLog` - distinct counts in Redis' own format (``SET`` the bytes, ``PFCOUNT``).
* :class:`KLLSketch` - quantiles, ranks, CDF and PMF of float streams.
* :class:`Moments`, :class:`FrequentItems`, :class:`LatencyHistogram`, :class:`ReservoirSample`.

Every sketch takes whole arrays (numpy int/float/``S``/``U`` arrays, object arrays, lists of
``str``/``bytes``, torch CPU tensors); the native ones release the GIL while they work. Every
sketch serializes (``to_bytes``/``from_bytes``; formats carry a version), merges, pickles and
deep-copies. Bytes given to ``from_bytes`` are untrusted: anything malformed raises ValueError.

NaN policy: HyperLogLog hashes every NaN as one value (as DataSketches does); KLL, Moments and
LatencyHistogram skip NaN and count it (``nan_count`` where offered); Redis HLL takes no floats
directly (format them as strings the way your Redis client does).
"""
from __future__ import annotations

import copy as _copy
import math
import struct
from typing import Any, Iterable, Sequence

import numpy as np

from ._runtime import _core

__all__ = [
    "HyperLogLog", "HyperLogLogUnion", "RedisHyperLogLog", "KLLSketch", "Moments", "FrequentItems",
    "LatencyHistogram", "ReservoirSample",
]

_HLL_TYPES = {"HLL_4": 0, "HLL_6": 1, "HLL_8": 2}
_HLL_NAMES = {v: k for k, v in _HLL_TYPES.items()}
_MODES = {0: "LIST", 1: "SET", 2: "HLL"}


# ----------------------------------------------------------------------------- input handling
def _to_numpy(values: Any, what: str) -> Any:
    """numpy array or list of str/bytes, from any accepted input."""
    if values is None:
        raise TypeError(f"{what}: values is None; pass an array, a tensor or a list")
    mod = type(values).__module__
    if mod.startswith("torch"):
        if values.device.type != "cpu":
            raise ValueError(f"{what}: torch tensors must be on the CPU, got {values.device}")
        return values.detach().contiguous().numpy()
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{what}: pass a sequence of values, not a single {type(values).__name__}")
    if isinstance(values, np.ndarray):
        return values
    if isinstance(values, (list, tuple)):
        if len(values) == 0:
            return np.empty(0, dtype=np.int64)  # an empty update of any sketch
        n_text = sum(isinstance(v, (str, bytes)) for v in values)
        if n_text == len(values):
            return list(values)
        if n_text:
            raise TypeError(f"{what}: a list mixes strings/bytes with other values; "
                            "pass one kind per call (or an array of one dtype)")
        # numpy would silently turn [1, 2.5] into floats, and DataSketches hashes the int 1 and
        # the float 1.0 differently: refuse rather than hash something the caller did not pass.
        has_float = any(isinstance(v, (float, np.floating)) for v in values)
        if has_float and any(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            raise TypeError(f"{what}: a list mixes ints and floats; pass an array of one dtype")
        return np.asarray(values)
    if isinstance(values, Iterable):
        return _to_numpy(list(values), what)
    raise TypeError(f"{what}: unsupported input {type(values).__name__}")


def _hash_input(values: Any, what: str, allow_float: bool = True) -> Any:
    """Normalises to what the native update takes: 1-D contiguous int64/float64/S/U, or a list."""
    v = _to_numpy(values, what)
    if isinstance(v, list):
        return v
    v = v.reshape(-1)
    k = v.dtype.kind
    if k in "iub":
        if k == "u" and v.dtype.itemsize < 8:
            v = v.view(np.dtype(f"i{v.dtype.itemsize}"))  # unsigned -> signed of its width first
        return np.ascontiguousarray(v, dtype=np.int64)
    if k == "f":
        if not allow_float:
            raise TypeError(f"{what}: float values must be formatted as strings first")
        return np.ascontiguousarray(v, dtype=np.float64)
    if k in "SU":
        return np.ascontiguousarray(v)
    if k == "O":
        out = v.tolist()
        for i, x in enumerate(out):
            if not isinstance(x, (str, bytes)):
                raise TypeError(f"{what}: object arrays must hold str or bytes, got {type(x).__name__} at {i}")
        return out
    raise TypeError(f"{what}: unsupported dtype {v.dtype}")


def _check_n_std(n_std: int) -> int:
    if n_std not in (1, 2, 3):
        raise ValueError(f"n_std must be 1, 2 or 3, got {n_std!r}")
    return int(n_std)


def _as_bytes(b: Any, what: str) -> bytes:
    if not isinstance(b, (bytes, bytearray, memoryview)):
        raise TypeError(f"{what}: expected bytes, got {type(b).__name__}")
    return bytes(b)


# ----------------------------------------------------------------------------- DataSketches HLL
class HyperLogLog:
    """HyperLogLog distinct counter compatible with Apache DataSketches' ``hll_sketch``.

    Same hashing (MurmurHash3 x64 128, seed 9001: int64 as 8 little-endian bytes, floats
    canonicalised, str as UTF-8, bytes as given, empty strings ignored), same LIST/SET/HLL
    state machine and HIP estimator, and the same serialized image: ``to_bytes()`` equals
    ``datasketches.hll_sketch.serialize_compact()`` for the same input sequence.

    Parameters
    ----------
    lg_k : int
        log2 of the number of registers, 4..21. Relative error about 0.83 / sqrt(2**lg_k).
    hll_type : {"HLL_4", "HLL_6", "HLL_8"}
        Register width in the serialized image (same estimates for all three).
    """

    # _img: (compact, bytes) of the image this sketch was loaded from, until it is updated. Hash
    # tables rebuilt on load (SET coupons, HLL_4 exceptions) may be laid out differently from the
    # stored ones - DataSketches' own reload reorders them too - so an unchanged sketch hands
    # back the bytes it came from, and a changed one serializes as DataSketches' reloaded sketch
    # would after the same updates.
    __slots__ = ("_s", "_img")

    def __init__(self, lg_k: int = 12, hll_type: str = "HLL_8") -> None:
        if hll_type not in _HLL_TYPES:
            raise ValueError(f"hll_type must be one of {sorted(_HLL_TYPES)}, got {hll_type!r}")
        if not isinstance(lg_k, (int, np.integer)) or isinstance(lg_k, bool):
            raise TypeError(f"lg_k must be an int, got {type(lg_k).__name__}")
        self._s = _core()._DsHll(int(lg_k), _HLL_TYPES[hll_type])
        self._img = None

    @classmethod
    def _wrap(cls, s: Any, img: Any = None) -> "HyperLogLog":
        obj = cls.__new__(cls)
        obj._s = s
        obj._img = img
        return obj

    def update(self, values: Any) -> "HyperLogLog":
        """Adds every value of an array / tensor / list (GIL released while hashing)."""
        self._s.update(_hash_input(values, "HyperLogLog.update"))
        self._img = None
        return self

    def estimate(self) -> float:
        """Distinct-count estimate (0 when empty): HIP for one stream, composite after a union."""
        return float(self._s.estimate())

    def lower_bound(self, n_std: int = 1) -> float:
        return float(self._s.lower_bound(_check_n_std(n_std)))

    def upper_bound(self, n_std: int = 1) -> float:
        return float(self._s.upper_bound(_check_n_std(n_std)))

    @property
    def lg_k(self) -> int:
        return int(self._s.lg_k)

    @property
    def hll_type(self) -> str:
        return _HLL_NAMES[self._s.type]

    @property
    def mode(self) -> str:
        """Current mode: ``LIST``, ``SET`` or ``HLL``."""
        return _MODES[self._s.mode]

    def is_empty(self) -> bool:
        return bool(self._s.is_empty())

    def to_bytes(self, compact: bool = True) -> bytes:
        """DataSketches image (serVer 1, family 7); ``compact=False`` gives the updatable image."""
        if self._img is not None and self._img[0] == bool(compact):
            return self._img[1]
        return bytes(self._s.serialize(bool(compact)))

    @classmethod
    def from_bytes(cls, data: Any) -> "HyperLogLog":
        """Reads a DataSketches HLL image (compact or updatable). ValueError if malformed.

        Until it is updated, the sketch serializes back to exactly these bytes (in the same
        compact/updatable form)."""
        b = _as_bytes(data, "HyperLogLog.from_bytes")
        s = _core()._DsHll.deserialize(b)
        compact = bool(b[5] & 8)
        n = len(bytes(s.serialize(compact)))
        return cls._wrap(s, (compact, b[:n]) if len(b) >= n else None)

    def merge(self, other: "HyperLogLog") -> "HyperLogLog":
        """In place: becomes the union of both (lg_k the smaller of the two, type unchanged)."""
        if not isinstance(other, HyperLogLog):
            raise TypeError(f"cannot merge {type(other).__name__} into HyperLogLog")
        u = HyperLogLogUnion(max(self.lg_k, other.lg_k))
        u.update(self)
        u.update(other)
        self._s = u.get_result(self.hll_type)._s
        self._img = None
        return self

    def copy(self) -> "HyperLogLog":
        return self._wrap(self._s.__copy__(), self._img)

    __copy__ = copy

    def __deepcopy__(self, memo: dict) -> "HyperLogLog":
        return self.copy()

    def __reduce__(self):
        return (HyperLogLog.from_bytes, (self.to_bytes(compact=False),))

    def __repr__(self) -> str:
        return f"HyperLogLog(lg_k={self.lg_k}, hll_type={self.hll_type!r}, mode={self.mode}, estimate={self.estimate():.1f})"


class HyperLogLogUnion:
    """Union of HyperLogLog sketches, as DataSketches' ``hll_union`` (an HLL_8 gadget).

    Inputs of any lg_k and type are accepted; larger ones are downsampled to the smallest lg_k
    seen (at most ``lg_max_k``). The result uses the composite estimator once two HLL-mode
    sketches were merged.
    """

    __slots__ = ("_g", "_lg_max_k")

    def __init__(self, lg_max_k: int = 12) -> None:
        self._lg_max_k = int(lg_max_k)
        self._g = _core()._DsHll(self._lg_max_k, 2)

    def update(self, sketch: "HyperLogLog | Any") -> "HyperLogLogUnion":
        """Adds a sketch (or, for an array/list, its values)."""
        if isinstance(sketch, HyperLogLog):
            _core()._DsHll.union_update(self._g, sketch._s, self._lg_max_k)
        else:
            self._g.update(_hash_input(sketch, "HyperLogLogUnion.update"))
        return self

    def update_many(self, sketches: Sequence["HyperLogLog"]) -> "HyperLogLogUnion":
        """Adds every sketch of a list or tuple in one native call (the same result as
        ``update`` with each in turn, faster: the registers are folded together with SIMD and the
        derived counters rebuilt once)."""
        if not isinstance(sketches, (list, tuple)):
            raise TypeError(f"update_many takes a list or tuple of HyperLogLog, got {type(sketches).__name__}")
        for i, s in enumerate(sketches):
            if not isinstance(s, HyperLogLog):
                raise TypeError(f"update_many: item {i} is {type(s).__name__}, not HyperLogLog")
        _core()._DsHll.union_update_many(self._g, [s._s for s in sketches], self._lg_max_k)
        return self

    def get_result(self, hll_type: str = "HLL_8") -> HyperLogLog:
        if hll_type not in _HLL_TYPES:
            raise ValueError(f"hll_type must be one of {sorted(_HLL_TYPES)}, got {hll_type!r}")
        return HyperLogLog._wrap(self._g.copy_as(_HLL_TYPES[hll_type]))

    def estimate(self) -> float:
        return float(self._g.estimate())

    def lower_bound(self, n_std: int = 1) -> float:
        return float(self._g.lower_bound(_check_n_std(n_std)))

    def upper_bound(self, n_std: int = 1) -> float:
        return float(self._g.upper_bound(_check_n_std(n_std)))

    @property
    def lg_max_k(self) -> int:
        return self._lg_max_k

    def to_bytes(self) -> bytes:
        """Image of the union's result (HLL_8, DataSketches format) preceded by nothing else:
        ``HyperLogLogUnion.from_bytes`` and any DataSketches union can read it."""
        return self.get_result("HLL_8").to_bytes()

    @classmethod
    def from_bytes(cls, data: Any, lg_max_k: int | None = None) -> "HyperLogLogUnion":
        sk = HyperLogLog.from_bytes(data)
        u = cls(lg_max_k if lg_max_k is not None else sk.lg_k)
        return u.update(sk)

    def merge(self, other: "HyperLogLogUnion | HyperLogLog") -> "HyperLogLogUnion":
        if isinstance(other, HyperLogLogUnion):
            return self.update(other.get_result("HLL_8"))
        if isinstance(other, HyperLogLog):
            return self.update(other)
        raise TypeError(f"cannot merge {type(other).__name__} into HyperLogLogUnion")

    def __copy__(self) -> "HyperLogLogUnion":
        u = HyperLogLogUnion.__new__(HyperLogLogUnion)
        u._g = self._g.__copy__()
        u._lg_max_k = self._lg_max_k
        return u

    def __deepcopy__(self, memo: dict) -> "HyperLogLogUnion":
        return self.__copy__()

    def __reduce__(self):
        return (_union_from_state, (self._lg_max_k, bytes(self._g.serialize(False)), self._g.out_of_order))


def _union_from_state(lg_max_k: int, image: bytes, ooo: bool) -> HyperLogLogUnion:
    u = HyperLogLogUnion(lg_max_k)
    u._g = _core()._DsHll.deserialize(image)
    return u


# ----------------------------------------------------------------------------- Redis HLL
class RedisHyperLogLog:
    """HyperLogLog in Redis' format (p = 14, 6-bit registers, 'HYLL' header, sparse/dense).

    ``update([42])`` and ``PFADD key 42`` agree (integers are hashed as their decimal strings).
    ``to_bytes()`` can be stored with ``SET`` and read by ``PFCOUNT``/``PFMERGE``; bytes read with
    ``GET`` from a key built by ``PFADD`` load with :meth:`from_bytes` and merge.
    """

    __slots__ = ("_s",)
    VERSION = "redis-hll-v1"

    def __init__(self) -> None:
        self._s = _core()._RedisHll()

    def update(self, values: Any) -> "RedisHyperLogLog":
        """Adds every value, as ``PFADD`` would: integers as their decimal strings, str as UTF-8,
        bytes as given. Floats are refused (clients format them in different ways)."""
        v = _to_numpy(values, "RedisHyperLogLog.update")
        if isinstance(v, np.ndarray) and v.dtype.kind in "ub":
            v = v.reshape(-1)
            if v.dtype.kind == "u" and v.dtype.itemsize == 8 and v.size and int(v.max()) >= 2**63:
                v = v.astype("S20")  # decimal text of the unsigned value, not its int64 wrap
            else:
                v = v.astype(np.int64)  # value-preserving (not DataSketches' signed reinterpretation)
        self._s.update(_hash_input(v, "RedisHyperLogLog.update", allow_float=False))
        return self

    @property
    def registers(self) -> np.ndarray:
        """The 16384 register values (0..51), a copy."""
        return np.asarray(self._s.registers()).copy()

    def is_empty(self) -> bool:
        return not self.registers.any()

    def estimate(self) -> int:
        """Redis' cardinality estimate (Ertl's improved estimator), 0 when empty."""
        return int(self._s.estimate())

    def lower_bound(self, n_std: int = 1) -> float:
        return self.estimate() * (1 - _check_n_std(n_std) * 1.04 / 128.0)

    def upper_bound(self, n_std: int = 1) -> float:
        return self.estimate() * (1 + _check_n_std(n_std) * 1.04 / 128.0)

    @property
    def encoding(self) -> str:
        return "sparse" if self._s.is_sparse else "dense"

    def to_bytes(self) -> bytes:
        return bytes(self._s.serialize())

    @classmethod
    def from_bytes(cls, data: Any) -> "RedisHyperLogLog":
        obj = cls.__new__(cls)
        obj._s = _core()._RedisHll.deserialize(_as_bytes(data, "RedisHyperLogLog.from_bytes"))
        return obj

    def merge(self, other: "RedisHyperLogLog") -> "RedisHyperLogLog":
        if not isinstance(other, RedisHyperLogLog):
            raise TypeError(f"cannot merge {type(other).__name__} into RedisHyperLogLog")
        self._s.merge(other._s)
        return self

    def __copy__(self) -> "RedisHyperLogLog":
        obj = RedisHyperLogLog.__new__(RedisHyperLogLog)
        obj._s = self._s.__copy__()
        return obj

    def __deepcopy__(self, memo: dict) -> "RedisHyperLogLog":
        return self.__copy__()

    def __reduce__(self):
        return (RedisHyperLogLog.from_bytes, (self.to_bytes(),))


# ----------------------------------------------------------------------------- KLL
def _float_input(values: Any, what: str) -> np.ndarray:
    v = _to_numpy(values, what)
    if isinstance(v, list):
        raise TypeError(f"{what}: expected numbers, got strings")
    v = np.asarray(v).reshape(-1)
    if v.dtype.kind not in "iufb":
        raise TypeError(f"{what}: expected a numeric array, got {v.dtype}")
    if v.dtype != np.float32:
        v = v.astype(np.float64, copy=False)
    return np.ascontiguousarray(v)


class KLLSketch:
    """KLL quantile sketch for float64/float32 (NaN values are skipped).

    Normalised rank error about 1.65% at k=200 (DataSketches' KLL bound, two-sided PMF).
    Queries use the inclusive criterion (rank(x) = weight of items <= x).
    """

    __slots__ = ("_s",)

    def __init__(self, k: int = 200, seed: int | None = None) -> None:
        if seed is None:
            seed = int.from_bytes(np.random.default_rng().bytes(8), "little")
        self._s = _core()._Kll(int(k), int(seed) & (2**64 - 1))

    def update(self, values: Any) -> "KLLSketch":
        self._s.update(_float_input(values, "KLLSketch.update"))
        return self

    @property
    def n(self) -> int:
        return int(self._s.n)

    @property
    def k(self) -> int:
        return int(self._s.k)

    def is_empty(self) -> bool:
        return self.n == 0

    @property
    def min(self) -> float:
        self._need()
        return float(self._s.min)

    @property
    def max(self) -> float:
        self._need()
        return float(self._s.max)

    def _need(self) -> None:
        if self.n == 0:
            raise ValueError("the sketch is empty")

    def quantile(self, q: Any) -> Any:
        """Item at normalised rank q (scalar or array, each in [0, 1])."""
        self._need()
        arr = np.asarray(q, dtype=np.float64)
        out = self._s.quantiles(arr.reshape(-1)).reshape(arr.shape)
        return float(out) if arr.ndim == 0 else out

    quantiles = quantile

    def rank(self, x: Any) -> Any:
        """Normalised inclusive rank of x (scalar or array)."""
        self._need()
        arr = np.asarray(x, dtype=np.float64)
        out = self._s.ranks(arr.reshape(-1)).reshape(arr.shape)
        return float(out) if arr.ndim == 0 else out

    def cdf(self, split_points: Sequence[float]) -> np.ndarray:
        """Ranks at each split point, then 1.0 (length len(split_points) + 1)."""
        self._need()
        sp = np.asarray(split_points, dtype=np.float64).reshape(-1)
        if np.isnan(sp).any() or (np.diff(sp) <= 0).any():
            raise ValueError("split points must be unique, increasing and not NaN")
        return np.concatenate([self._s.ranks(sp), [1.0]])

    def pmf(self, split_points: Sequence[float]) -> np.ndarray:
        c = self.cdf(split_points)
        return np.diff(np.concatenate([[0.0], c]))

    def merge(self, other: "KLLSketch") -> "KLLSketch":
        if not isinstance(other, KLLSketch):
            raise TypeError(f"cannot merge {type(other).__name__} into KLLSketch")
        self._s.merge(other._s)
        return self

    def to_bytes(self) -> bytes:
        return bytes(self._s.serialize())

    @classmethod
    def from_bytes(cls, data: Any) -> "KLLSketch":
        """Loads our own image (``to_bytes``) or a DataSketches KLL image (``to_datasketches``, or
        ``serialize()`` of ``kll_doubles_sketch`` / ``kll_floats_sketch``), told apart by the magic."""
        b = _as_bytes(data, "KLLSketch.from_bytes")
        if b[:4] != b"PKLL":
            return cls.from_datasketches(b)
        obj = cls.__new__(cls)
        obj._s = _core()._Kll.deserialize(b)
        return obj

    def to_datasketches(self, item_type: str = "double") -> bytes:
        """The sketch as an Apache DataSketches KLL image: ``datasketches.kll_doubles_sketch``
        (``item_type="double"``) or ``kll_floats_sketch`` (``"float"``) deserializes it, and so
        does any DataSketches library (Java, C++, Spark, Druid...). Levels, weights, n, min and
        max are kept as they are; the random state is not part of that format. ``"float"`` raises
        ValueError unless every kept value is exactly a float32 (e.g. the input was float32)."""
        if item_type not in ("double", "float"):
            raise ValueError(f"item_type must be 'double' or 'float', got {item_type!r}")
        return bytes(self._s.serialize_ds(8 if item_type == "double" else 4))

    @classmethod
    def from_datasketches(cls, data: Any, item_type: str | None = None, seed: int | None = None) -> "KLLSketch":
        """Loads a DataSketches KLL image (``kll_doubles_sketch`` / ``kll_floats_sketch``
        ``serialize()``); ``item_type`` None tells double from float by the image length (an
        empty image has no items either way). Images of unions across different k (min_k < k)
        are refused. The loaded sketch draws its compaction offsets from ``seed``."""
        if item_type not in (None, "double", "float"):
            raise ValueError(f"item_type must be None, 'double' or 'float', got {item_type!r}")
        if seed is None:
            seed = int.from_bytes(np.random.default_rng().bytes(8), "little")
        size = {None: 0, "double": 8, "float": 4}[item_type]
        obj = cls.__new__(cls)
        obj._s = _core()._Kll.deserialize_ds(_as_bytes(data, "KLLSketch.from_datasketches"), size,
                                             int(seed) & (2**64 - 1))
        return obj

    def __copy__(self) -> "KLLSketch":
        obj = KLLSketch.__new__(KLLSketch)
        obj._s = self._s.__copy__()
        return obj

    def __deepcopy__(self, memo: dict) -> "KLLSketch":
        return self.__copy__()

    def __reduce__(self):
        return (KLLSketch.from_bytes, (self.to_bytes(),))




# ----------------------------------------------------------------------------- numpy sketches
# Vectorised numpy per batch; per-element Python work only where a batch holds few distinct keys.
_MOM = struct.Struct("<4sBqqqddddddd")


class Moments:
    """Count, mean, variance, skewness, kurtosis, min, max, NaN and null counts of a numeric stream.

    Batches are reduced with two-pass numpy sums and combined with Chan et al.'s / Pebay's exact
    pairwise update, so merging is exact (up to rounding) and numerically stable.
    """

    __slots__ = ("n", "nan_count", "null_count", "_mean", "_m2", "_m3", "_m4", "_min", "_max")

    def __init__(self) -> None:
        self.n = self.nan_count = self.null_count = 0
        self._mean = self._m2 = self._m3 = self._m4 = 0.0
        self._min, self._max = math.inf, -math.inf

    def update(self, values: Any) -> "Moments":
        v = _to_numpy(values, "Moments.update")
        if isinstance(v, list) or (isinstance(v, np.ndarray) and v.dtype.kind == "O"):
            items = list(v.reshape(-1)) if isinstance(v, np.ndarray) else v
            nulls = sum(x is None for x in items)
            self.null_count += nulls
            rest = [x for x in items if x is not None]
            for x in rest:
                if not isinstance(x, (int, float, np.number)):
                    raise TypeError(f"Moments.update: expected numbers or None, got {type(x).__name__}")
            v = np.asarray(rest, dtype=np.float64)
        v = np.asarray(v).reshape(-1)
        if v.dtype.kind not in "iufb":
            raise TypeError(f"Moments.update: expected numbers, got {v.dtype}")
        v = v.astype(np.float64, copy=False)
        nan = np.isnan(v)
        k = int(nan.sum())
        if k:
            self.nan_count += k
            v = v[~nan]
        if v.size == 0:
            return self
        mean = float(v.mean())
        d = v - mean
        d2 = d * d
        other = Moments()
        other.n = int(v.size)
        other._mean, other._m2, other._m3, other._m4 = mean, float(d2.sum()), float((d2 * d).sum()), float((d2 * d2).sum())
        other._min, other._max = float(v.min()), float(v.max())
        self._combine(other)
        return self

    def _combine(self, o: "Moments") -> None:
        if o.n == 0:
            return
        if self.n == 0:
            self.n, self._mean, self._m2, self._m3, self._m4 = o.n, o._mean, o._m2, o._m3, o._m4
            self._min, self._max = o._min, o._max
            return
        na, nb = float(self.n), float(o.n)
        n = na + nb
        delta = o._mean - self._mean
        d_n = delta / n
        m2 = self._m2 + o._m2 + delta * d_n * na * nb
        m3 = (self._m3 + o._m3 + delta * d_n * d_n * na * nb * (na - nb)
              + 3.0 * d_n * (na * o._m2 - nb * self._m2))
        m4 = (self._m4 + o._m4 + delta * d_n ** 3 * na * nb * (na * na - na * nb + nb * nb)
              + 6.0 * d_n * d_n * (na * na * o._m2 + nb * nb * self._m2)
              + 4.0 * d_n * (na * o._m3 - nb * self._m3))
        self._mean = self._mean + d_n * nb
        self._m2, self._m3, self._m4 = m2, m3, m4
        self.n += o.n
        self._min, self._max = min(self._min, o._min), max(self._max, o._max)

    def merge(self, other: "Moments") -> "Moments":
        if not isinstance(other, Moments):
            raise TypeError(f"cannot merge {type(other).__name__} into Moments")
        self._combine(other)
        self.nan_count += other.nan_count
        self.null_count += other.null_count
        return self

    def _need(self) -> None:
        if self.n == 0:
            raise ValueError("no values")

    @property
    def mean(self) -> float:
        self._need()
        return self._mean

    def variance(self, ddof: int = 0) -> float:
        self._need()
        if self.n - ddof <= 0:
            raise ValueError("not enough values for this ddof")
        return self._m2 / (self.n - ddof)

    @property
    def skewness(self) -> float:
        """Population (biased) skewness, as scipy.stats.skew(bias=True); NaN for constant data."""
        self._need()
        return math.sqrt(self.n) * self._m3 / self._m2 ** 1.5 if self._m2 > 0 else math.nan

    @property
    def kurtosis(self) -> float:
        """Excess (Fisher) kurtosis, as scipy.stats.kurtosis(bias=True); NaN for constant data."""
        self._need()
        return self.n * self._m4 / (self._m2 * self._m2) - 3.0 if self._m2 > 0 else math.nan

    @property
    def min(self) -> float:
        self._need()
        return self._min

    @property
    def max(self) -> float:
        self._need()
        return self._max

    def to_bytes(self) -> bytes:
        return _MOM.pack(b"PMOM", 1, self.n, self.nan_count, self.null_count, self._mean, self._m2, self._m3,
                         self._m4, self._min, self._max, 0.0)

    @classmethod
    def from_bytes(cls, data: Any) -> "Moments":
        b = _as_bytes(data, "Moments.from_bytes")
        if len(b) != _MOM.size:
            raise ValueError(f"Moments image of {len(b)} bytes, expected {_MOM.size}")
        magic, ver, n, nn, nl, mean, m2, m3, m4, mn, mx, _ = _MOM.unpack(b)
        if magic != b"PMOM" or ver != 1:
            raise ValueError("not a Moments image (magic/version)")
        if n < 0 or nn < 0 or nl < 0:
            raise ValueError("negative counts")
        vals = (mean, m2, m3, m4, mn, mx)
        if n > 0 and (not all(math.isfinite(x) for x in vals) or m2 < 0 or m4 < 0 or not mn <= mean <= mx):
            raise ValueError("inconsistent moments")
        if n == 0 and (mean, m2, m3, m4) != (0.0, 0.0, 0.0, 0.0):
            raise ValueError("inconsistent empty moments")
        o = cls()
        o.n, o.nan_count, o.null_count = n, nn, nl
        o._mean, o._m2, o._m3, o._m4, o._min, o._max = mean, m2, m3, m4, (mn if n else math.inf), (mx if n else -math.inf)
        return o

    def __reduce__(self):
        return (Moments.from_bytes, (self.to_bytes(),))


class FrequentItems:
    """Misra-Gries heavy hitters over categorical values (ints, strings, bytes), mergeable.

    Keeps at most ``max_items`` counters. For every item, ``lower_bound <= true count <=
    upper_bound`` with ``upper_bound - lower_bound = maximum_error <= n / (max_items + 1)``.
    """

    def __init__(self, max_items: int = 64) -> None:
        if int(max_items) < 1:
            raise ValueError("max_items must be >= 1")
        self.max_items = int(max_items)
        self.n = 0
        self.maximum_error = 0
        self._c: dict[Any, int] = {}

    def update(self, values: Any) -> "FrequentItems":
        v = _to_numpy(values, "FrequentItems.update")
        arr = np.asarray(v if not isinstance(v, list) else np.array(v, dtype=object)).reshape(-1)
        if arr.size == 0:
            return self
        if arr.dtype.kind == "f":
            raise TypeError("FrequentItems.update: categorical values only (int, str, bytes), got floats")
        keys, counts = np.unique(arr, return_counts=True)
        for key, c in zip(keys.tolist(), counts.tolist()):
            self._c[key] = self._c.get(key, 0) + int(c)
        self.n += int(arr.size)
        self._reduce()
        return self

    def _reduce(self) -> None:
        if len(self._c) <= self.max_items:
            return
        cut = sorted(self._c.values(), reverse=True)[self.max_items]
        self.maximum_error += cut
        self._c = {k: c - cut for k, c in self._c.items() if c > cut}

    def estimate(self, item: Any) -> int:
        return self._c.get(item, 0) + self.maximum_error

    def lower_bound(self, item: Any) -> int:
        return self._c.get(item, 0)

    def upper_bound(self, item: Any) -> int:
        return self._c.get(item, 0) + self.maximum_error

    def frequent_items(self, threshold: int | None = None) -> list[tuple[Any, int, int]]:
        """(item, lower_bound, upper_bound), most frequent first; by default items whose lower
        bound exceeds the maximum error (no false positives)."""
        t = self.maximum_error if threshold is None else threshold
        out = [(k, c, c + self.maximum_error) for k, c in self._c.items() if c > t]
        return sorted(out, key=lambda r: -r[1])

    def merge(self, other: "FrequentItems") -> "FrequentItems":
        if not isinstance(other, FrequentItems):
            raise TypeError(f"cannot merge {type(other).__name__} into FrequentItems")
        for k, c in other._c.items():
            self._c[k] = self._c.get(k, 0) + c
        self.n += other.n
        self.maximum_error += other.maximum_error
        self._reduce()
        return self

    def to_bytes(self) -> bytes:
        import json

        items = [[("s" if isinstance(k, str) else "b" if isinstance(k, bytes) else "i"),
                  (k.hex() if isinstance(k, bytes) else k), c] for k, c in self._c.items()]
        body = json.dumps({"v": 1, "k": self.max_items, "n": self.n, "e": self.maximum_error, "items": items})
        return b"PFIT" + body.encode()

    @classmethod
    def from_bytes(cls, data: Any) -> "FrequentItems":
        import json

        b = _as_bytes(data, "FrequentItems.from_bytes")
        if not b.startswith(b"PFIT"):
            raise ValueError("not a FrequentItems image")
        try:
            d = json.loads(b[4:].decode())
            if d["v"] != 1:
                raise ValueError("unsupported version")
            o = cls(int(d["k"]))
            o.n, o.maximum_error = int(d["n"]), int(d["e"])
            for tag, k, c in d["items"]:
                key = k if tag == "s" else bytes.fromhex(k) if tag == "b" else int(k)
                if tag not in "sbi" or int(c) <= 0:
                    raise ValueError("bad item")
                o._c[key] = int(c)
        except (KeyError, TypeError, ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise ValueError(f"malformed FrequentItems image: {exc}") from None
        if o.n < 0 or o.maximum_error < 0 or len(o._c) > o.max_items or sum(o._c.values()) > o.n:
            raise ValueError("inconsistent FrequentItems image")
        return o

    def __reduce__(self):
        return (FrequentItems.from_bytes, (self.to_bytes(),))


class LatencyHistogram:
    """Log-linear latency histogram with relative error <= ``rel_error`` on every quantile.

    Bucket i holds values in (g**(i-1), g**i] with g = (1 + e) / (1 - e); its representative
    2 g**i / (g + 1) is within e of any value in it. ``thresholds`` (e.g. SLO limits) are counted
    exactly, so Prometheus buckets at those limits are exact. Negative values are an error; NaN is
    counted in ``nan_count`` and skipped; zeros have their own bucket.
    """

    def __init__(self, rel_error: float = 0.01, thresholds: Sequence[float] = ()) -> None:
        if not 0 < rel_error < 0.5:
            raise ValueError("rel_error must be in (0, 0.5)")
        self.rel_error = float(rel_error)
        self._lg = math.log((1 + rel_error) / (1 - rel_error))
        self._counts: dict[int, int] = {}
        self.zero_count = self.nan_count = self.n = 0
        self.sum = 0.0
        t = np.asarray(sorted(set(float(x) for x in thresholds)), dtype=np.float64)
        if t.size and (not np.isfinite(t).all() or (t < 0).any()):
            raise ValueError("thresholds must be finite and >= 0")
        self._thr = t
        self._thr_counts = np.zeros(t.size, dtype=np.int64)

    def update(self, values: Any) -> "LatencyHistogram":
        v = _float_input(values, "LatencyHistogram.update").astype(np.float64, copy=False)
        nan = np.isnan(v)
        if nan.any():
            self.nan_count += int(nan.sum())
            v = v[~nan]
        if v.size == 0:
            return self
        if (v < 0).any() or np.isinf(v).any():
            raise ValueError("latencies must be finite and >= 0")
        pos = v[v > 0]
        self.zero_count += int(v.size - pos.size)
        if pos.size:
            idx = np.ceil(np.log(pos) / self._lg).astype(np.int64)
            keys, counts = np.unique(idx, return_counts=True)
            for k, c in zip(keys.tolist(), counts.tolist()):
                self._counts[k] = self._counts.get(k, 0) + c
        if self._thr.size:
            s = np.sort(v)
            self._thr_counts += np.searchsorted(s, self._thr, side="right")
        self.n += int(v.size)
        self.sum += float(v.sum())
        return self

    def _value(self, i: int) -> float:
        g = math.exp(self._lg)
        return 2.0 * g ** i / (g + 1.0)

    def quantile(self, q: float) -> float:
        if self.n == 0:
            raise ValueError("the histogram is empty")
        if not 0 <= q <= 1:
            raise ValueError("q must be in [0, 1]")
        rank = q * (self.n - 1)
        if rank < self.zero_count:
            return 0.0
        acc = self.zero_count
        for k in sorted(self._counts):
            acc += self._counts[k]
            if acc > rank:
                return self._value(k)
        return self._value(max(self._counts))

    def prometheus_buckets(self, bounds: Sequence[float] | None = None) -> list[tuple[float, int]]:
        """Cumulative (le, count) pairs ending with (+inf, n). Bounds equal to a configured
        threshold are exact; others are resolved to the histogram's relative error."""
        bs = sorted(set(float(b) for b in (bounds if bounds is not None else self._thr.tolist())))
        out = []
        for b in bs:
            j = np.searchsorted(self._thr, b)
            if j < self._thr.size and self._thr[j] == b:
                out.append((b, int(self._thr_counts[j])))
            else:
                lim = math.ceil(math.log(b) / self._lg) if b > 0 else None
                c = self.zero_count + (sum(c for k, c in self._counts.items() if k <= lim) if lim is not None else 0)
                out.append((b, c))
        out.append((math.inf, self.n))
        return out

    def merge(self, other: "LatencyHistogram") -> "LatencyHistogram":
        if not isinstance(other, LatencyHistogram):
            raise TypeError(f"cannot merge {type(other).__name__} into LatencyHistogram")
        if other.rel_error != self.rel_error or not np.array_equal(other._thr, self._thr):
            raise ValueError("histograms differ in rel_error or thresholds")
        for k, c in other._counts.items():
            self._counts[k] = self._counts.get(k, 0) + c
        self.zero_count += other.zero_count
        self.nan_count += other.nan_count
        self.n += other.n
        self.sum += other.sum
        self._thr_counts += other._thr_counts
        return self

    def to_bytes(self) -> bytes:
        keys = np.array(sorted(self._counts), dtype=np.int64)
        cnts = np.array([self._counts[k] for k in keys.tolist()], dtype=np.int64)
        head = struct.pack("<4sBdqqqdqq", b"PLHG", 1, self.rel_error, self.n, self.zero_count, self.nan_count,
                           self.sum, keys.size, self._thr.size)
        return head + keys.tobytes() + cnts.tobytes() + self._thr.tobytes() + self._thr_counts.tobytes()

    @classmethod
    def from_bytes(cls, data: Any) -> "LatencyHistogram":
        b = _as_bytes(data, "LatencyHistogram.from_bytes")
        hs = struct.calcsize("<4sBdqqqdqq")
        if len(b) < hs:
            raise ValueError("truncated LatencyHistogram image")
        magic, ver, e, n, z, nn, sm, nk, nt = struct.unpack_from("<4sBdqqqdqq", b)
        if magic != b"PLHG" or ver != 1:
            raise ValueError("not a LatencyHistogram image")
        if nk < 0 or nt < 0 or len(b) != hs + 16 * nk + 16 * nt:
            raise ValueError("LatencyHistogram image length does not match its counts")
        if not 0 < e < 0.5:
            raise ValueError("bad rel_error")
        keys = np.frombuffer(b, np.int64, nk, hs)
        cnts = np.frombuffer(b, np.int64, nk, hs + 8 * nk)
        thr = np.frombuffer(b, np.float64, nt, hs + 16 * nk)
        tc = np.frombuffer(b, np.int64, nt, hs + 16 * nk + 8 * nt)
        if (cnts <= 0).any() or (np.diff(keys) <= 0).any() or min(n, z, nn) < 0 or int(cnts.sum()) + z != n:
            raise ValueError("inconsistent LatencyHistogram counts")
        if (tc < 0).any() or (tc > n).any() or not np.isfinite(thr).all() or (np.diff(thr) <= 0).any():
            raise ValueError("inconsistent LatencyHistogram thresholds")
        o = cls(e, thr.tolist())
        o._counts = dict(zip(keys.tolist(), cnts.tolist()))
        o.n, o.zero_count, o.nan_count, o.sum = n, z, nn, sm
        o._thr_counts = tc.copy()
        return o

    def __reduce__(self):
        return (LatencyHistogram.from_bytes, (self.to_bytes(),))


class ReservoirSample:
    """Bounded random sample of a stream: uniform, or weighted (``update(values, weights)``).

    Efraimidis-Spirakis A-Res: each item gets the key u**(1/w) (u uniform, w = 1 for uniform
    sampling) and the ``k`` largest keys are kept, so merging two reservoirs is exact: keep the
    ``k`` largest keys of both.
    """

    def __init__(self, k: int = 1024, seed: int | None = None) -> None:
        if int(k) < 1:
            raise ValueError("k must be >= 1")
        self.k = int(k)
        self.n = 0
        self._rng = np.random.default_rng(seed)
        self._keys = np.empty(0, dtype=np.float64)
        self._items: np.ndarray | None = None

    def update(self, values: Any, weights: Any = None) -> "ReservoirSample":
        v = _to_numpy(values, "ReservoirSample.update")
        v = np.asarray(v).reshape(-1)
        if v.size == 0:
            return self
        u = self._rng.random(v.size)
        if weights is None:
            keys = u
        else:
            w = np.asarray(weights, dtype=np.float64).reshape(-1)
            if w.shape != v.shape:
                raise ValueError("weights must have one entry per value")
            if not np.isfinite(w).all() or (w <= 0).any():
                raise ValueError("weights must be finite and > 0")
            keys = u ** (1.0 / w)
        self._add(keys, v)
        self.n += int(v.size)
        return self

    def _add(self, keys: np.ndarray, items: np.ndarray) -> None:
        allk = np.concatenate([self._keys, keys])
        alli = items if self._items is None else np.concatenate([self._items, items])
        if allk.size > self.k:
            top = np.argpartition(-allk, self.k - 1)[: self.k]
            allk, alli = allk[top], alli[top]
        self._keys, self._items = allk, alli

    @property
    def sample(self) -> np.ndarray:
        return np.empty(0) if self._items is None else self._items.copy()

    def merge(self, other: "ReservoirSample") -> "ReservoirSample":
        if not isinstance(other, ReservoirSample):
            raise TypeError(f"cannot merge {type(other).__name__} into ReservoirSample")
        if other._items is not None:
            self._add(other._keys, other._items)
        self.n += other.n
        return self

    def to_bytes(self) -> bytes:
        import io

        buf = io.BytesIO()
        items = self._items if self._items is not None else np.empty(0)
        if items.dtype.kind == "O":
            items = items.astype(str)
        np.save(buf, self._keys, allow_pickle=False)
        np.save(buf, items, allow_pickle=False)
        return struct.pack("<4sBqq", b"PRSV", 1, self.k, self.n) + buf.getvalue()

    @classmethod
    def from_bytes(cls, data: Any) -> "ReservoirSample":
        import io

        b = _as_bytes(data, "ReservoirSample.from_bytes")
        if len(b) < 21 or b[:4] != b"PRSV" or b[4] != 1:
            raise ValueError("not a ReservoirSample image")
        _, _, k, n = struct.unpack_from("<4sBqq", b)
        try:
            f = io.BytesIO(b[21:])
            keys = np.load(f, allow_pickle=False)
            items = np.load(f, allow_pickle=False)
        except Exception as exc:  # numpy raises several types on malformed .npy data
            raise ValueError(f"malformed ReservoirSample image: {exc}") from None
        if k < 1 or n < 0 or keys.ndim != 1 or items.ndim != 1 or keys.size != items.size or keys.size > min(k, n):
            raise ValueError("inconsistent ReservoirSample image")
        if keys.dtype != np.float64 or ((keys < 0) | (keys > 1)).any() or np.isnan(keys).any():
            raise ValueError("bad reservoir keys")
        o = cls(int(k))
        o.n = int(n)
        o._keys = keys
        o._items = items if items.size else None
        return o

    def __reduce__(self):
        return (ReservoirSample.from_bytes, (self.to_bytes(),))
