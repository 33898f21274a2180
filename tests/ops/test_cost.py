"""Cost ledger: allocation, per-1k cost by tags, budgets, right-sizing, unloading, reservations."""
from __future__ import annotations

import pytest

from pyperfcore.ops import AuditLog, CostLedger, Price
from pyperfcore.ops.cost import cost_per_request

H = 3600.0


@pytest.fixture
def ledger():
    led = CostLedger(prices=[Price("cpu", hourly=0.5), Price("gpu", hourly=4.0),
                             Price("endpoint", per_1k_requests=0.2, pricing="managed")])
    led.record_usage(model="a", version=1, instance="cpu", start=0, end=H, busy_s=1800,
                     requests=10_000, replicas=2, tags={"team": "x"})
    led.record_usage(model="b", version=1, instance="gpu", start=0, end=H, busy_s=3600,
                     requests=100_000, tags={"team": "x"})
    led.record_usage(model="c", version=1, instance="endpoint", start=0, end=H, busy_s=0,
                     requests=5_000, tags={"team": "y"})
    return led


def test_opencost_allocation_and_cost_per_1k(ledger):
    rows = {r["model"]: r for r in ledger.report()}
    a = rows["a"]  # 2 replicas x 1 h x 0.5 = 1.0, busy 0.5 h of 2 h
    assert a["cost"] == pytest.approx(1.0) and a["idle_cost"] == pytest.approx(0.75)
    assert a["utilization"] == pytest.approx(0.25)
    assert a["cost_per_1k"] == pytest.approx(0.1) and a["cost_per_prediction"] == 1e-4
    assert rows["b"]["cost_per_1k"] == pytest.approx(0.04)
    assert rows["c"]["cost"] == pytest.approx(1.0)  # managed: 5k x 0.2 / 1k
    by_team = {r["team"]: r for r in ledger.report(by=["team"])}
    assert by_team["x"]["cost"] == pytest.approx(5.0) and by_team["x"]["requests"] == 110_000
    # max(allocated, used): busy time above the allocation is billed
    led = CostLedger(prices=[Price("cpu", hourly=1.0)])
    led.record_usage(model="z", instance="cpu", start=0, end=H, busy_s=2 * H, requests=1)
    assert led.report()[0]["cost"] == pytest.approx(2.0)
    assert cost_per_request(3.6, 10, 0.5) == pytest.approx(2e-4)


def test_budgets_alert_once_per_threshold_and_period(backend):
    log = AuditLog(backend.url("audit"))
    led = CostLedger(backend.url("cost"), prices=[Price("cpu", hourly=1.0)], audit=log)
    led.set_budget({"team": "x"}, 10.0, period_s=100 * H, thresholds=(0.5, 1.0))
    led.record_usage(model="a", instance="cpu", start=0, end=6 * H, busy_s=H, requests=1,
                     tags={"team": "x"})
    alerts = led.check_budgets(at=7 * H)
    assert [a["threshold"] for a in alerts] == [0.5] and alerts[0]["spent"] == pytest.approx(6)
    assert led.check_budgets(at=7 * H) == []
    led.record_usage(model="a", instance="cpu", start=6 * H, end=11 * H, busy_s=H,
                     requests=1, tags={"team": "x"})
    assert [a["threshold"] for a in led.check_budgets(at=12 * H)] == [1.0]
    assert len(log.records(kind="budget_alert")) == 2
    # persisted: a fresh ledger on the same store has the usage, budget and alert history
    again = CostLedger(led._db.path)
    assert again.check_budgets(at=12 * H) == [] and len(again._usage()) == 2
    assert {r["model"] for r in again.report()} == {"a"}


def test_rightsizing_unloading_reservation_platforms():
    led = CostLedger(prices=[Price("od", hourly=1.0), Price("ri", hourly=0.6,
                                                             pricing="reserved")])
    # 4 replicas, 24 hourly samples: load of 1 instance most hours, 3 in two peak hours
    for h in range(24):
        busy = 3 * H if h in (12, 13) else 1 * H
        led.record_usage(model="m", instance="od", start=h * H, end=(h + 1) * H,
                         busy_s=busy, requests=1000, replicas=4)
    rs = led.rightsizing("m", target_utilization=0.75, quantile=0.5)
    assert rs["suggested_instances"] == 2 and rs["current_instances"] == 4
    assert rs["hourly_saving"] == pytest.approx(2.0)
    rc = led.reserved_capacity("m", reserved="ri", on_demand="od", coverage=0.8)
    assert rc["reserve_instances"] == 1 and rc["saving"] > 0
    assert rc["cost_all_on_demand"] == pytest.approx(28.0)
    led.record_cold_start("m", 12.0)
    plan = {p["model"]: p for p in led.idle_unload_plan(
        {"m": 0.0, "hot": 0.0, "fresh": 950.0}, unload_after_s=300, keep_alive=["hot"],
        at=1000.0, instance="od")}
    assert plan["m"]["action"] == "unload" and plan["m"]["cold_start_s"] == 12.0
    assert plan["m"]["cold_start_cost"] == pytest.approx(12 / 3600)
    assert plan["hot"]["action"] == "keep" and plan["fresh"]["action"] == "keep"
    cmp_ = CostLedger.compare_platforms(requests_per_month=1e6, peak_rps=50, platforms={
        "vm": {"hourly": 1.0, "capacity_rps": 40},
        "managed": {"per_1k_requests": 2.0},
        "gpu": {"hourly": 3.0, "capacity_rps": 500}})
    assert [r["platform"] for r in cmp_] == ["vm", "managed", "gpu"]
    assert cmp_[0]["instances"] == 2 and cmp_[0]["monthly_cost"] == pytest.approx(1460)


def test_errors():
    with pytest.raises(ValueError):
        Price("x", hourly=-1)
    with pytest.raises(ValueError):
        Price("x", pricing="cheap")
    led = CostLedger()
    with pytest.raises(KeyError, match="no price"):
        led.record_usage(model="m", instance="none", start=0, end=1, busy_s=0, requests=0)
    led.set_price(name="cpu", hourly=1.0)
    with pytest.raises(ValueError):
        led.record_usage(model="m", instance="cpu", start=5, end=1, busy_s=0, requests=0)
    assert led.report() == []
