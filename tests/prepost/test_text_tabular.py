"""Text padding to buckets and tabular encoding against the numpy oracles."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyperfcore import prepost as pp
from tests import reference as ref


@given(st.lists(st.lists(st.integers(1, 30000), max_size=40), max_size=12),
       st.one_of(st.none(), st.lists(st.integers(1, 48), min_size=1, max_size=4)),
       st.booleans(), st.booleans(), st.integers(-1, 5))
def test_pad_to_buckets(seqs, buckets, keep_end, pad_left, pad_id):
    longest = max((len(s) for s in seqs), default=0)
    if buckets is None:
        length = longest
    else:
        b = sorted(buckets)
        length = next((v for v in b if v >= longest), b[-1])
    e_ids, e_mask = ref.prepost_pad(seqs, length, pad_id, keep_end, pad_left)
    for backend in ("reference", "cpu"):
        out = pp.pad_to_buckets(seqs, buckets, pad_id=pad_id, truncation="left" if keep_end else "right",
                                padding_side="left" if pad_left else "right", backend=backend)
        assert out.length == length
        np.testing.assert_array_equal(out.ids, e_ids)
        np.testing.assert_array_equal(out.mask, e_mask)
        np.testing.assert_array_equal(out.lengths, [min(len(s), length) for s in seqs])


def test_bucket_lengths_and_errors():
    np.testing.assert_array_equal(pp.bucket_lengths([0, 5, 16, 17, 500], [16, 32, 64]), [16, 16, 16, 32, 64])
    with pytest.raises(TypeError):
        pp.pad_to_buckets([[1.5, 2.0]])
    with pytest.raises(ValueError):
        pp.pad_to_buckets([[1]], buckets=[])


@given(st.integers(0, 50), st.integers(0, 2**32 - 1))
def test_encode_tabular(rows, seed):
    rng = np.random.default_rng(seed)
    age = rng.normal(40, 12, rows)
    age[rng.random(rows) < 0.2] = np.nan
    city = rng.choice(np.array(["paris", "oslo", "rome", "lima"]), rows)
    size = rng.choice(np.array([1, 2, 3, 9]), rows)
    data = {"age": age, "city": city, "size": size}
    schema = pp.TabularSchema([pp.Numeric("age", 40.0, 12.0, clip=(-1.5, 1.5), fill=30.0),
                               pp.OneHot("city", ("oslo", "paris", "rome")),
                               pp.Ordinal("size", (1, 2, 3), fill=-1.0)])
    exp = np.zeros((rows, 5))
    exp[:, 0] = np.clip((np.where(np.isnan(age), 30.0, age) - 40) / 12, -1.5, 1.5)
    for j, c in enumerate(("oslo", "paris", "rome")):
        exp[:, 1 + j] = city == c
    exp[:, 4] = np.where(size == 9, -1, size - 1)
    for backend in ("reference", "cpu"):
        got = pp.encode_tabular(data, schema, backend=backend)
        assert got.dtype == np.float32 and got.shape == (rows, 5) and got.flags.c_contiguous
        np.testing.assert_allclose(got, exp.astype(np.float32), rtol=1e-6)


def test_tabular_fit_objects_and_errors():
    data = {"x": np.array([1.0, np.nan, 3.0]), "c": np.array(["a", None, "b"], dtype=object)}
    schema = pp.TabularSchema.fit(data, numeric=["x"], onehot=["c"])
    out = pp.encode_tabular(data, schema)
    np.testing.assert_allclose(out, [[-1, 1, 0], [0, 0, 0], [1, 0, 1]])
    assert schema.feature_names() == ["x", "c=a", "c=b"]
    with pytest.raises(KeyError):
        pp.encode_tabular({"x": data["x"]}, schema)
    with pytest.raises(ValueError, match="shape"):
        pp.encode_tabular({"x": data["x"], "c": data["c"][:2]}, schema)
