"""A 100,000 x 10 data-drift report: pyperfcore ``detect_drift(preset="evidently")`` against
Evidently's ``DataDriftPreset`` (same run, same group, same inputs, same column kinds).

Evidently 0.7 does not import with pandas 3, so this file runs only in an environment that has
it (see docs/drift.md, "Against Evidently"); elsewhere it is skipped.

Before anything is timed, every column's drift score, the method chosen for it, its
drifted / not-drifted decision and the dataset decision are checked to agree. Tolerance for the
scores: 1e-9 relative. Both sides compute the same quantities from the same counts / values:
the normed Wasserstein distance is scipy's ``wasserstein_distance`` (which pyperfcore matches to
1e-9 relative, tests/drift, usually to the last digits) over the same ``np.std`` norm; the
Jensen-Shannon distance is taken over identical bin counts (numpy's sturges edges over both
samples, or the category counts), so only the summation order differs (~1e-15).
"""
from __future__ import annotations

import os

import numpy as np
import pytest

evidently = pytest.importorskip("evidently")
pd = pytest.importorskip("pandas")

from evidently import DataDefinition, Dataset, Report  # noqa: E402
from evidently.presets import DataDriftPreset  # noqa: E402

from pyperfcore import drift  # noqa: E402

N = 100_000
REL = 1e-9
# Evidently's display names of its default tests -> pyperfcore's method names.
METHODS = {"Wasserstein distance (normed)": "wasserstein", "Jensen-Shannon distance": "jensenshannon",
           "K-S p_value": "ks", "chi-square p_value": "chisquare", "Z-test p_value": "z"}


def _frame(rng: np.random.Generator, drifted: bool):
    """10 columns: 5 continuous numeric (normal, scaled normal, log-normal, uniform, values
    rounded to 0.1 = many ties), one integer column with 4 values (numeric, <= 5 distinct ->
    Jensen-Shannon over its values), 4 low-cardinality string columns (2 to 8 categories).
    The current frame drifts in num_normal (+0.3 sigma), num_scale (1.5x std) and cat_color."""
    d = {
        "num_normal": rng.normal(0.3 if drifted else 0.0, 1.0, N),
        "num_scale": rng.normal(5.0, 3.0 if drifted else 2.0, N),
        "num_lognormal": rng.lognormal(0.0, 1.0, N),
        "num_uniform": rng.uniform(-1.0, 1.0, N),
        "num_rounded": np.round(rng.normal(10.0, 3.0, N), 1),
        "num_int_few": rng.integers(0, 4, N),
        "cat_color": rng.choice(["red", "green", "blue"], N, p=[0.2, 0.3, 0.5] if drifted else [0.5, 0.3, 0.2]),
        "cat_size": rng.choice(["S", "M", "L", "XL"], N),
        "cat_flag": rng.choice(["yes", "no"], N),
        "cat_region": rng.choice([f"r{i}" for i in range(8)], N),
    }
    return pd.DataFrame(d)


@pytest.fixture(scope="module")
def frames():
    rng = np.random.default_rng(2026)
    ref, cur = _frame(rng, False), _frame(rng, True)
    num = [c for c in ref.columns if c.startswith("num")]
    cat = [c for c in ref.columns if c.startswith("cat")]
    return ref, cur, num, cat


def _evidently(ref, cur, num, cat):
    dd = DataDefinition(numerical_columns=num, categorical_columns=cat)
    rd, cd = Dataset.from_pandas(ref, data_definition=dd), Dataset.from_pandas(cur, data_definition=dd)
    return Report([DataDriftPreset()], include_tests=True).run(cd, rd)


def _evidently_results(snap) -> tuple[dict, dict, dict, float]:
    d = snap.dict()
    scores, methods, drifted, share = {}, {}, {}, None
    ids = {}
    for m in d["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("ValueDrift"):
            scores[cfg["column"]] = float(m["value"])
            methods[cfg["column"]] = METHODS[cfg["method"]]
            ids[m["id"]] = cfg["column"]
        elif cfg["type"].endswith("DriftedColumnsCount"):
            share = float(m["value"]["share"])
    for t in d["tests"]:
        col = ids.get(t["metric_config"]["metric_id"])
        if col is not None:  # the per-column default test: FAIL = drift detected
            drifted[col] = t["status"] == "FAIL"
    return scores, methods, drifted, share


def _ours(ref, cur, cat):
    return drift.detect_drift(ref, cur, categorical=cat, preset="evidently")


@pytest.fixture(scope="module")
def checked(frames):
    """Runs both once and asserts identical metric values and decisions (before any timing)."""
    ref, cur, num, cat = frames
    scores, methods, dec, share = _evidently_results(_evidently(ref, cur, num, cat))
    rep = _ours(ref, cur, cat)
    assert set(scores) == set(rep.features) == set(ref.columns)
    worst = 0.0
    for c, f in rep.features.items():
        assert f.method == methods[c], (c, f.method, methods[c])
        assert f.statistic == pytest.approx(scores[c], rel=REL, abs=0.0), (c, f.statistic, scores[c])
        if scores[c]:
            worst = max(worst, abs(f.statistic - scores[c]) / abs(scores[c]))
        assert f.drifted == dec[c], (c, f.drifted, dec[c])
    assert len(rep.drifted_features) / len(rep.features) == pytest.approx(share, abs=1e-12)
    assert rep.dataset_drift == (share >= 0.5)
    # the data is built to drift in exactly these columns (guards against both agreeing on nothing)
    assert set(rep.drifted_features) == {"num_normal", "num_scale", "cat_color"}
    return {"max_rel_diff": worst}


@pytest.mark.benchmark(group="drift report 100000 x 10")
@pytest.mark.parametrize("impl", ["pyperfcore", "evidently"])
def test_drift_report(benchmark, frames, checked, impl):
    ref, cur, num, cat = frames
    benchmark.extra_info.update(checked)
    benchmark.extra_info["loadavg_1m"] = os.getloadavg()[0]
    benchmark.extra_info["evidently"] = evidently.__version__
    benchmark.extra_info["pandas"] = pd.__version__
    benchmark.extra_info["values"] = 2 * N * ref.shape[1]
    if impl == "pyperfcore":
        rep = benchmark.pedantic(_ours, args=(ref, cur, cat), rounds=10, iterations=1, warmup_rounds=1)
        assert set(rep.drifted_features) == {"num_normal", "num_scale", "cat_color"}
    else:
        snap = benchmark.pedantic(_evidently, args=(ref, cur, num, cat), rounds=3, iterations=1)
        assert _evidently_results(snap)[3] == pytest.approx(0.3)
    benchmark.extra_info["loadavg_1m_after"] = os.getloadavg()[0]
