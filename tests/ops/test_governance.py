"""Fairness metrics against plain numpy formulas, model cards, the fairness monitor."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pyperfcore.ops import AuditLog, FairnessMonitor, Registry, fairness_report, model_card
from pyperfcore.ops.fairness import wilson_interval


def _oracle(yt, yp, g):
    groups = sorted(set(g.tolist()), key=str)
    sel = {k: yp[g == k].mean() for k in groups}
    tpr = {k: yp[(g == k) & (yt == 1)].mean() for k in groups if ((g == k) & (yt == 1)).any()}
    fpr = {k: yp[(g == k) & (yt == 0)].mean() for k in groups if ((g == k) & (yt == 0)).any()}
    acc = {k: (yp[g == k] == yt[g == k]).mean() for k in groups}
    return sel, tpr, fpr, acc


@settings(deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 4), st.integers(20, 300))
def test_matches_numpy_formulas(seed, ngroups, n):
    rng = np.random.default_rng(seed)
    g = rng.integers(0, ngroups, n)
    yt = rng.integers(0, 2, n)
    yp = (rng.random(n) < 0.3 + 0.1 * g).astype(int)
    rep = fairness_report(yt, yp, g)
    sel, tpr, fpr, acc = _oracle(yt, yp, g)
    for k in sel:
        m = rep.groups[str(k)]
        assert m["selection_rate"] == pytest.approx(sel[k])
        assert m["accuracy"] == pytest.approx(acc[k])
        if k in tpr:
            assert m["tpr"] == pytest.approx(tpr[k])
        if k in fpr:
            assert m["fpr"] == pytest.approx(fpr[k])
    assert rep.demographic_parity_difference == pytest.approx(max(sel.values()) -
                                                              min(sel.values()))
    if max(sel.values()) > 0:
        assert rep.demographic_parity_ratio == pytest.approx(min(sel.values()) /
                                                             max(sel.values()))
    gaps = [max(d.values()) - min(d.values()) for d in (tpr, fpr) if d]
    assert rep.equalized_odds_difference == pytest.approx(max(gaps))
    top = max(sel.values())
    assert rep.four_fifths_flagged == sorted(str(k) for k in sel if sel[k] < 0.8 * top)


def test_four_fifths_example_and_intervals():
    # group a selects 50%, group b 30%: 0.6 < 0.8 -> adverse impact for b
    g = np.array(["a"] * 10 + ["b"] * 10)
    yp = np.array([1] * 5 + [0] * 5 + [1] * 3 + [0] * 7)
    yt = np.array([1, 0] * 10)
    rep = fairness_report(yt, yp, g)
    assert rep.four_fifths_flagged == ["b"] and rep.adverse_impact
    assert rep.demographic_parity_ratio == pytest.approx(0.6)
    lo, hi = rep.groups["a"]["selection_rate_ci"]
    assert lo < 0.5 < hi and (lo, hi) == pytest.approx((0.2366, 0.7634), abs=1e-3)
    assert math.isnan(wilson_interval(0, 0)[0])
    assert fairness_report([], [], []).groups == {}
    with pytest.raises(ValueError):
        fairness_report([0, 2], [0, 1], [0, 0])
    with pytest.raises(ValueError):
        fairness_report([0, 1], [0, 1], [0])


def test_against_fairlearn_when_installed():
    fl = pytest.importorskip("fairlearn.metrics")
    rng = np.random.default_rng(3)
    g = rng.integers(0, 3, 500)
    yt = rng.integers(0, 2, 500)
    yp = (rng.random(500) < 0.2 + 0.2 * g).astype(int)
    rep = fairness_report(yt, yp, g)
    assert rep.demographic_parity_difference == pytest.approx(
        fl.demographic_parity_difference(yt, yp, sensitive_features=g))
    assert rep.demographic_parity_ratio == pytest.approx(
        fl.demographic_parity_ratio(yt, yp, sensitive_features=g))
    assert rep.equalized_odds_difference == pytest.approx(
        fl.equalized_odds_difference(yt, yp, sensitive_features=g))


def test_monitor_records_in_audit_trail(tmp_path):
    log = AuditLog(tmp_path / "a.db")
    flagged = []
    g = np.array([0] * 50 + [1] * 50)
    mon = FairnessMonitor(lambda: (np.ones(100, int), (g == 0).astype(int), g), log,
                          model="m", version=3, interval_s=0.01, on_flag=flagged.append)
    rep = mon.run_once()
    assert rep.four_fifths_flagged == ["1"] and flagged
    rec = log.records(kind="fairness_assessment")[0]["record"]
    assert rec["subject"] == "model:m:3" and rec["report"]["demographic_parity_difference"] == 1
    mon.start()
    import time
    deadline = time.monotonic() + 10
    while len(log) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    mon.stop()
    assert len(log) >= 3 and log.verify().ok


def test_model_card_sections_markdown_and_html(tmp_path):
    reg = Registry(tmp_path / "r")
    rng = np.random.default_rng(0)
    g = rng.integers(0, 2, 200)
    rep = fairness_report(rng.integers(0, 2, 200), rng.integers(0, 2, 200), g)
    mv = reg.register("m", {"a.json": b"{}"}, metadata={
        "description": "Scores <b>loans</b>", "metrics": {"auc": 0.8123},
        "intended_use": "Pre-screening only.", "training_data": {"uri": "s3://snap"},
        "ethical_considerations": "Affects credit access.", "fairness": rep.to_dict()})
    card = model_card(mv, approvals=[{"role": "risk", "approver": "r"}])
    md = card.to_markdown()
    for title in ("Model details", "Intended use", "Factors", "Metrics", "Evaluation data",
                  "Training data", "Quantitative analyses", "Ethical considerations",
                  "Caveats and recommendations"):
        assert f"## {title}" in md
    assert "0.8123" in md and "Pre-screening only." in md and "Not provided." in md
    assert "Demographic parity difference" in md and "[95% CI]" in md
    html = card.to_html()
    assert "&lt;b&gt;loans&lt;/b&gt;" in html and "<b>loans" not in html
    card.save(tmp_path / "c.html")
    assert (tmp_path / "c.html").read_text().startswith("<!DOCTYPE html>")
