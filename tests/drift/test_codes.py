"""Native coding of categorical values (str / bytes -> codes) and the whole-report helpers,
checked against one-value-at-a-time Python oracles (tests/reference/drift.py)."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pyperfcore import drift
from pyperfcore._runtime import _core
from tests import reference as ref

Coder = lambda: _core().DriftStringCoder()  # noqa: E731

# Short categories (the fast 8-byte path), longer ones, non-ASCII, astral, empty, NUL inside.
texts = st.one_of(st.sampled_from(["", "a", "red", "green", "blue", "é", "日本", "ü" * 9, "x" * 40, "a\x00b",
                                   "\U0001F600", "12345678", "123456789"]),
                  st.text(max_size=12))
byte_strings = st.one_of(st.sampled_from([b"", b"a", b"red", b"\xff\x00\x01", b"z" * 20]), st.binary(max_size=12))
missing = st.sampled_from([None, float("nan"), np.float64("nan")])


def _check(cols, expect_dtype=None):
    """_joint_counts against the oracle: same vocabulary, counts and missing counts."""
    vocab, counts, miss = drift._joint_counts(cols, ["x"] * len(cols))
    ovocab, ocounts, omiss = ref.drift_category_counts(cols)
    assert list(vocab.tolist()) == ovocab
    assert len(counts) == len(ocounts)
    for c, oc in zip(counts, ocounts):
        assert c.dtype == np.float64
        np.testing.assert_array_equal(c, oc)
    assert miss == omiss
    if expect_dtype is not None:
        assert vocab.dtype == expect_dtype


# ---------------------------------------------------------------- inputs of every form
@given(st.lists(st.one_of(texts, missing), max_size=60), st.lists(st.one_of(texts, missing), max_size=60))
def test_object_and_list_inputs_match_oracle(a, b):
    _check([a, b])
    _check([np.array(a + [0], dtype=object)[:-1], np.array(b + [0], dtype=object)[:-1]])  # object arrays
    _check([tuple(a), b])


@given(st.lists(texts, max_size=60), st.lists(texts, max_size=60))
def test_unicode_arrays_match_oracle(a, b):
    ua, ub = np.array(a, dtype="U"), np.array(b, dtype="U")
    if ua.size == 0:
        ua = ua.astype("U1")
    if ub.size == 0:
        ub = ub.astype("U1")
    _check([ua, ub], np.result_type(ua.dtype, ub.dtype))
    _check([ua, ub.astype(object)])  # mixed forms: same keys ('U' items and str objects agree)
    _check([ua[::-1], ub[::2]])  # negative and non-unit strides


@given(st.lists(byte_strings, max_size=60), st.lists(byte_strings, max_size=60))
def test_bytes_arrays_match_oracle(a, b):
    sa, sb = np.array(a, dtype="S"), np.array(b, dtype="S")
    if sa.size == 0:
        sa = sa.astype("S1")
    if sb.size == 0:
        sb = sb.astype("S1")
    _check([sa, sb], np.result_type(sa.dtype, sb.dtype))  # numpy strips trailing NULs; the oracle sees that
    _check([list(a), list(b)])  # bytes objects keep them


@given(st.lists(st.one_of(texts, byte_strings, missing), max_size=40), st.lists(st.one_of(texts, byte_strings), max_size=40))
def test_str_mixed_with_bytes_keeps_first_seen_order(a, b):
    _check([a, b])  # 'a' and b'a' are different values; an unsortable mix keeps first-seen order


@given(st.lists(st.one_of(texts, st.integers(-3, 3), st.floats(allow_nan=False, width=32), missing), max_size=40))
def test_other_objects_take_the_general_path(a):
    vals = [v for v in a if not isinstance(v, bool)]
    _check([vals, ["red"]])
    _check([["red", None, "blue"], vals])  # a str-only sample next to one that is not


def test_missing_mask_of_object_arrays():
    a = np.array(["a", None, float("nan"), "", b"x", np.float64("nan")], dtype=object)
    assert drift._categorical_values(a, "a")[1].tolist() == [False, True, True, False, False, True]
    b = np.array(["a", None, 3], dtype=object)  # not all str / bytes: the Python path
    assert drift._categorical_values(b, "b")[1].tolist() == [False, True, False]


def test_empty_inputs():
    c = Coder()
    for x in ([], (), np.array([], dtype=object), np.array([], dtype="U3"), np.array([], dtype="S2")):
        codes = c.encode(x)
        assert codes.dtype == np.int64 and codes.size == 0
        np.testing.assert_array_equal(c.count(x), [0, 0])
    assert len(c) == 0 and c.values() == []
    vocab, counts, miss = drift._joint_counts([np.array([], dtype=object), ["a", None]], ["r", "c"])
    assert vocab.tolist() == ["a"] and counts[0].tolist() == [0.0] and counts[1].tolist() == [1.0] and miss == [0, 1]


def test_codes_are_first_seen_and_values_round_trip():
    c = Coder()
    items = ["b", "a", "", "b", "é", None, "\ud800", float("nan"), b"a", "a\x00", "\U0001F600"]
    codes = c.encode(items)
    assert codes.tolist() == [0, 1, 2, 0, 3, -1, 4, -1, 5, 6, 7]
    vals = c.values()
    assert vals == ["b", "a", "", "é", "\ud800", b"a", "a\x00", "\U0001F600"]  # lone surrogates survive
    assert c.mixed_kinds
    u = Coder()
    u.encode(["b", "a", "", "é", "\ud800", "a\x00", "\U0001F600"])
    # byte order of UTF-8 (surrogates as 3 bytes) is Python's code point order
    assert [u.values()[i] for i in u.sorted_codes()] == sorted(u.values())


def test_lookup_without_insert_leaves_table_unchanged():
    c = Coder()
    c.encode(np.array(["x", "y"]))
    for form in (["y", "zz", None, "x"], np.array(["y", "zz", "", "x"]), np.array(["y", "zz", None, "x"], dtype=object)):
        codes = c.encode(form, insert=False)
        assert codes[0] == 1 and codes[1] == -2 and codes[3] == 0
        assert len(c) == 2
    np.testing.assert_array_equal(c.count(["y", "zz", "zz", None, "x"], insert=False), [2, 1, 1, 1])
    assert len(c) == 2


@given(st.lists(st.one_of(texts, missing), max_size=80))
def test_count_agrees_with_encode(a):
    c1, c2 = Coder(), Coder()
    codes = c1.encode(a)
    counts = c2.count(a)
    assert c1.values() == c2.values()
    np.testing.assert_array_equal(counts[1:], np.bincount(codes + 1, minlength=len(c1) + 1))
    assert counts[0] == 0


def test_large_tables_grow_and_keep_codes():
    vals = np.array([f"id-{i}" for i in range(50_000)])
    c = Coder()
    codes = c.encode(np.concatenate([vals, vals[::-1]]))
    np.testing.assert_array_equal(codes[:50_000], np.arange(50_000))
    np.testing.assert_array_equal(codes[50_000:], np.arange(50_000)[::-1])
    assert c.values()[123] == "id-123"
    obj = vals.astype(object)
    np.testing.assert_array_equal(c.encode(obj, insert=False), np.arange(50_000))


def test_bad_inputs_are_errors():
    c = Coder()
    with pytest.raises(ValueError, match="1-D"):
        c.encode(np.array([["a"]]))
    with pytest.raises(TypeError):
        c.encode(np.array([1.5, 2.0]))
    with pytest.raises(TypeError):
        c.encode({"a": 1})
    bad = np.array([0x61, 0x110000], dtype=np.uint32).view("U2")  # not a code point
    with pytest.raises(ValueError, match="U\\+10FFFF"):
        c.encode(bad)
    assert c.encode([1, "a"]) is None  # not str / bytes: callers take their general path
    with pytest.raises(TypeError, match="unsupported dtype"):
        drift._joint_counts([np.array([1 + 2j]), ["a"]], ["r", "c"])


def test_non_native_byte_order_unicode():
    a = np.array(["red", "blue", "red", ""], dtype=">U4")
    _check([a, ["blue"]])


def test_concurrent_use_of_one_coder():
    c = Coder()
    data = [np.array([f"k{(i * 7 + j) % 500}" for j in range(20_000)], dtype=object) for i in range(4)]
    out = [None] * 4

    def work(i):
        out[i] = c.encode(data[i])

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    vals = c.values()
    assert len(vals) == 500
    for d, codes in zip(data, out):
        assert [vals[k] for k in codes[:50]] == d[:50].tolist()


# ---------------------------------------------------------------- pandas columns
def test_pandas_category_and_object_columns_match_numpy_columns(rng):
    pd = pytest.importorskip("pandas")
    ref_vals = rng.choice(["red", "green", "blue", "teal"], 3000)
    cur_vals = rng.choice(["red", "green", "blue"], 3000, p=[0.6, 0.3, 0.1]).astype(object)
    cur_vals[::97] = None
    cats = ["red", "green", "blue", "teal", "unused"]
    rdf = pd.DataFrame({"c": pd.Categorical(ref_vals, categories=cats), "o": ref_vals.astype(object)})
    cdf = pd.DataFrame({"c": pd.Categorical(cur_vals, categories=cats), "o": cur_vals})
    rdf["s"], cdf["s"] = rdf["o"].astype("string"), cdf["o"].astype("string")  # missing: pd.NA
    rep = drift.detect_drift(rdf, cdf, preset="evidently")
    base = drift.detect_drift({"c": ref_vals, "o": ref_vals, "s": ref_vals}, {"c": cur_vals, "o": cur_vals, "s": cur_vals},
                              preset="evidently")
    for col in ("c", "o", "s"):
        f, g = rep.features[col], base.features[col]
        assert (f.method, f.statistic, f.n_reference, f.n_current, f.n_missing_current) == \
               (g.method, g.statistic, g.n_reference, g.n_current, g.n_missing_current)
    vocab, (rc, cc), (rm, cm) = drift._joint_counts([drift._columns(rdf, None, "r")["c"],
                                                      drift._columns(cdf, None, "c")["c"]], ["r", "c"])
    ovocab, (orc, occ), (orm, ocm) = ref.drift_category_counts([ref_vals, cur_vals])
    assert vocab.tolist() == ovocab  # unused categories are not in the vocabulary
    np.testing.assert_array_equal(rc, orc)
    np.testing.assert_array_equal(cc, occ)
    assert (rm, cm) == (orm, ocm)
    # the profile and monitor see the same values as from the object column
    prof = drift.ReferenceProfile.fit(rdf)
    assert prof.features["c"].vocab.tolist() == prof.features["o"].vocab.tolist()
    np.testing.assert_array_equal(prof.features["c"].counts, prof.features["o"].counts)
    mon = drift.DriftMonitor(prof, "tumbling", 1000)
    reps = mon.update(cdf)
    assert len(reps) == 3
    for r in reps:
        assert r.features["c"].statistic == r.features["o"].statistic
        assert r.features["c"].n_missing_current == r.features["o"].n_missing_current


def test_monitor_string_forms_agree(rng):
    base = rng.choice(["a", "bb", "ccc"], 2000)
    prof = drift.ReferenceProfile.fit({"x": base})
    batch = rng.choice(["a", "bb", "ccc", "new"], 600)
    reports = []
    for form in (batch, batch.astype(object), list(batch)):
        mon = drift.DriftMonitor(prof, "tumbling", 600)
        reports.append(mon.update({"x": form})[0].features["x"])
    assert all(r.metrics == reports[0].metrics for r in reports)
    assert reports[0].metrics["unknown"] == float((batch == "new").sum())


# ---------------------------------------------------------------- numeric whole-report helpers
finite = st.floats(-1e6, 1e6, allow_nan=False, width=64)


@given(st.lists(st.one_of(finite, st.sampled_from([0.0, -0.0, 1.0, 2.5])), min_size=1, max_size=80),
       st.lists(st.sampled_from([0.0, -0.0, 1.0, 2.5, 7.0]), max_size=80), st.integers(0, 8))
def test_small_support_matches_unique(a, b, cap):
    a, b = np.array(a), np.array(b, dtype=np.float64)
    got = _core().drift_small_support(a, b, cap)
    want = ref.drift_small_support(a, b, cap)
    if want is None:
        assert got is None
        return
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(got[2], want[2])


@given(pairs=st.lists(st.tuples(st.lists(finite, min_size=1, max_size=60), st.lists(finite, min_size=1, max_size=60)),
                min_size=1, max_size=5))
def test_wasserstein_many_matches_oracle(pairs, cpu_target):
    us = [np.array(u) for u, _ in pairs]
    vs = [np.array(v) for _, v in pairs]
    got = _core().drift_wasserstein_many(us, vs, cpu_target)
    for g, u, v in zip(got, us, vs):
        assert g == pytest.approx(ref.drift_wasserstein(u, v), rel=1e-9, abs=1e-9)


def test_wasserstein_many_large_columns_and_errors(rng):
    us = [rng.normal(0, 1, 50_000), rng.lognormal(0, 1, 30_000), np.round(rng.normal(0, 3, 40_000), 1)]
    vs = [rng.normal(0.2, 1, 40_000), rng.lognormal(0.1, 1, 30_000), np.round(rng.normal(0.5, 3, 20_000), 1)]
    got = _core().drift_wasserstein_many(us, vs)
    for g, u, v in zip(got, us, vs):
        assert g == pytest.approx(ref.drift_wasserstein(u, v), rel=1e-9)
    with pytest.raises(ValueError):
        _core().drift_wasserstein_many([np.array([1.0, np.nan])], [np.array([1.0])])
    with pytest.raises(ValueError):
        _core().drift_wasserstein_many([np.array([1.0])], [])
    assert _core().drift_wasserstein_many([], []).size == 0


def test_detect_drift_numeric_columns_match_oracle(rng):
    r = {"w": rng.normal(0, 1, 5000), "few": rng.integers(0, 4, 5000).astype(float), "ints": rng.integers(0, 5, 5000)}
    c = {"w": rng.normal(0.3, 1, 4000), "few": rng.integers(0, 5, 4000).astype(float), "ints": rng.integers(1, 5, 4000)}
    c["w"][:7] = np.nan
    rep = drift.detect_drift(r, c, preset="evidently")
    fw = rep.features["w"]
    cw = c["w"][np.isfinite(c["w"])]
    assert fw.method == "wasserstein" and fw.n_missing_current == 7
    assert fw.statistic == pytest.approx(ref.drift_wasserstein(r["w"], cw) / np.std(r["w"]), rel=1e-9)
    for k in ("few", "ints"):
        f = rep.features[k]
        assert f.method == "jensenshannon"
        _, (rc, cc), _ = ref.drift_category_counts([r[k].astype(float).tolist(), c[k].astype(float).tolist()])
        assert f.statistic == pytest.approx(ref.drift_js(rc, cc), rel=1e-12)
