"""Cost ledger: a user-supplied price catalogue, measured usage, and what it costs.

Allocation follows OpenCost: a workload is billed ``max(allocated, used) x hours x rate`` and
the rest of what was paid for is idle. Cost per prediction = billed cost / requests; by the
same token, an instance at ``price`` per hour that sustains ``rps`` requests/s at the SLO while
busy a fraction ``busy`` of the time costs ``price / (3600 * rps * busy)`` per request.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np

from ._db import Database, canonical_json, now, run_script

__all__ = ["Price", "CostLedger", "cost_per_request", "PRICINGS"]

PRICINGS = ("on_demand", "reserved", "spot", "managed")


@dataclass(frozen=True)
class Price:
    """One catalogue entry. ``hourly``: per instance (or accelerator) hour; ``per_1k_requests``:
    for managed endpoints billed per call; both may be set."""
    name: str
    hourly: float = 0.0
    per_1k_requests: float = 0.0
    pricing: str = "on_demand"
    currency: str = "USD"

    def __post_init__(self):
        if self.pricing not in PRICINGS:
            raise ValueError(f"pricing must be one of {PRICINGS}, got {self.pricing!r}")
        for f in ("hourly", "per_1k_requests"):
            v = getattr(self, f)
            if not isinstance(v, (int, float)) or v < 0 or math.isnan(v):
                raise ValueError(f"{f} must be a non-negative number, got {v!r}")


def cost_per_request(hourly: float, sustained_rps: float, busy_fraction: float = 1.0) -> float:
    """``hourly / (3600 * sustained_rps * busy_fraction)``."""
    if sustained_rps <= 0 or not 0 < busy_fraction <= 1:
        raise ValueError("sustained_rps must be > 0 and busy_fraction within (0, 1]")
    return hourly / (3600.0 * sustained_rps * busy_fraction)


def _v1(conn) -> None:
    run_script(conn, """
    CREATE TABLE cost_prices (name TEXT PRIMARY KEY, spec TEXT NOT NULL);
    CREATE TABLE cost_usage (
        id INTEGER PRIMARY KEY, model TEXT NOT NULL, version TEXT, instance TEXT NOT NULL,
        start REAL NOT NULL, end REAL NOT NULL, replicas REAL NOT NULL, busy_s REAL NOT NULL,
        requests INTEGER NOT NULL, tags TEXT NOT NULL);
    CREATE INDEX cost_usage_by_time ON cost_usage(start);
    CREATE TABLE cost_budgets (
        id INTEGER PRIMARY KEY, scope TEXT NOT NULL UNIQUE, amount REAL NOT NULL,
        period_s REAL NOT NULL, thresholds TEXT NOT NULL);
    CREATE TABLE cost_alerts (
        budget INTEGER NOT NULL, window INTEGER NOT NULL, threshold REAL NOT NULL,
        ts REAL NOT NULL, spent REAL NOT NULL, PRIMARY KEY (budget, window, threshold));
    CREATE TABLE cost_cold_starts (model TEXT NOT NULL, ts REAL NOT NULL, seconds REAL NOT NULL);
    """)


MIGRATIONS = [_v1]


class CostLedger:
    """Prices, usage and budgets in SQLite (``":memory:"`` by default).

    Parameters
    ----------
    prices : initial catalogue entries.
    audit : an :class:`~pyperfcore.ops.AuditLog`; budget alerts and price changes are recorded.
    """

    def __init__(self, path=":memory:", *, prices: Iterable[Price] = (), audit=None):
        self._db = Database(path, store="cost", migrations=MIGRATIONS)
        self.audit = audit
        for p in prices:
            self.set_price(p)

    # ------------------------------------------------------------ catalogue and usage
    def set_price(self, price: Price | None = None, **kw) -> Price:
        price = price if price is not None else Price(**kw)
        with self._db.write() as conn:
            conn.execute("INSERT INTO cost_prices VALUES (?,?) ON CONFLICT(name) DO UPDATE SET "
                         "spec=excluded.spec", (price.name, canonical_json(asdict(price))))
        if self.audit is not None:
            self.audit.append({"kind": "price_changed", "subject": f"price:{price.name}",
                               "price": asdict(price)})
        return price

    def prices(self) -> dict:
        with self._db.read() as conn:
            return {n: Price(**json.loads(s)) for n, s in conn.execute(
                "SELECT name, spec FROM cost_prices ORDER BY name")}

    def price(self, name: str) -> Price:
        p = self.prices().get(name)
        if p is None:
            raise KeyError(f"no price named {name!r} in the catalogue; add it with set_price()")
        return p

    def record_usage(self, *, model: str, instance: str, start: float, end: float,
                     busy_s: float, requests: int, version=None, replicas: float = 1.0,
                     tags: Mapping | None = None) -> None:
        """Measured usage of one model version on ``replicas`` instances of price ``instance``
        between ``start`` and ``end`` (epoch seconds): busy seconds summed over replicas and
        requests served. ``tags`` (team, business unit, ...) attribute the cost."""
        if end < start:
            raise ValueError(f"end ({end}) is before start ({start})")
        if busy_s < 0 or requests < 0 or replicas <= 0:
            raise ValueError("busy_s and requests must be >= 0 and replicas > 0")
        self.price(instance)
        with self._db.write() as conn:
            conn.execute("INSERT INTO cost_usage(model, version, instance, start, end, replicas, "
                         "busy_s, requests, tags) VALUES (?,?,?,?,?,?,?,?,?)",
                         (model, None if version is None else str(version), instance, start, end,
                          replicas, busy_s, int(requests), canonical_json(dict(tags or {}))))

    def _usage(self, since=None, until=None) -> list:
        sql = ("SELECT model, version, instance, start, end, replicas, busy_s, requests, tags "
               "FROM cost_usage WHERE 1=1")
        args: list = []
        if since is not None:
            sql += " AND start >= ?"
            args.append(since)
        if until is not None:
            sql += " AND start < ?"
            args.append(until)
        with self._db.read() as conn:
            rows = conn.execute(sql + " ORDER BY start", args).fetchall()
        keys = ("model", "version", "instance", "start", "end", "replicas", "busy_s",
                "requests", "tags")
        out = []
        for r in rows:
            d = dict(zip(keys, r))
            d["tags"] = json.loads(d["tags"])
            out.append(d)
        return out

    @staticmethod
    def _row_cost(u: dict, price: Price) -> dict:
        allocated_h = (u["end"] - u["start"]) * u["replicas"] / 3600.0
        busy_h = u["busy_s"] / 3600.0
        billed_h = max(allocated_h, busy_h)
        cost = billed_h * price.hourly + u["requests"] / 1000.0 * price.per_1k_requests
        return {"allocated_h": allocated_h, "busy_h": busy_h, "cost": cost,
                "idle_cost": (billed_h - busy_h) * price.hourly}

    # ------------------------------------------------------------ reports
    def report(self, *, by: Sequence[str] = ("model", "version"), since=None, until=None
               ) -> list:
        """Cost per group: ``by`` names usage fields (``model``, ``version``, ``instance``) or
        tag keys. Each row: requests, allocated and busy hours, cost, idle cost, utilization,
        cost per prediction and per 1k predictions (None without requests)."""
        prices = self.prices()
        groups: dict = {}
        for u in self._usage(since, until):
            key = tuple(u[k] if k in ("model", "version", "instance") else u["tags"].get(k)
                        for k in by)
            g = groups.setdefault(key, {"requests": 0, "allocated_h": 0.0, "busy_h": 0.0,
                                        "cost": 0.0, "idle_cost": 0.0})
            c = self._row_cost(u, prices[u["instance"]])
            g["requests"] += u["requests"]
            for k in ("allocated_h", "busy_h", "cost", "idle_cost"):
                g[k] += c[k]
        out = []
        for key, g in sorted(groups.items(), key=lambda kv: [str(x) for x in kv[0]]):
            row = dict(zip(by, key))
            row.update(g)
            row["utilization"] = g["busy_h"] / g["allocated_h"] if g["allocated_h"] else None
            row["cost_per_prediction"] = g["cost"] / g["requests"] if g["requests"] else None
            row["cost_per_1k"] = 1000 * g["cost"] / g["requests"] if g["requests"] else None
            out.append(row)
        return out

    # ------------------------------------------------------------ budgets
    def set_budget(self, scope: Mapping, amount: float, *, period_s: float = 30 * 86400,
                   thresholds: Sequence[float] = (0.5, 0.8, 1.0)) -> None:
        """A budget for the usage matching ``scope`` (e.g. ``{"team": "fraud"}`` or
        ``{"model": "ranker"}``) per period; alerts at each threshold fraction."""
        if amount <= 0 or period_s <= 0:
            raise ValueError("amount and period_s must be > 0")
        if not scope:
            raise ValueError("scope must name at least one field or tag")
        with self._db.write() as conn:
            conn.execute("INSERT INTO cost_budgets(scope, amount, period_s, thresholds) VALUES "
                         "(?,?,?,?) ON CONFLICT(scope) DO UPDATE SET amount=excluded.amount, "
                         "period_s=excluded.period_s, thresholds=excluded.thresholds",
                         (canonical_json(dict(scope)), amount, period_s,
                          json.dumps(sorted(thresholds))))

    def check_budgets(self, at: float | None = None) -> list:
        """Alerts for thresholds crossed in the current period; each is raised once per period
        (and recorded in the audit trail when there is one). Returns the new alerts."""
        at = now() if at is None else at
        prices = self.prices()
        with self._db.read() as conn:
            budgets = conn.execute("SELECT id, scope, amount, period_s, thresholds FROM "
                                   "cost_budgets").fetchall()
        alerts = []
        for bid, scope_s, amount, period_s, thr_s in budgets:
            scope = json.loads(scope_s)
            window = int(at // period_s)
            usage = self._usage(window * period_s, at + 1e-9)
            spent = sum(self._row_cost(u, prices[u["instance"]])["cost"] for u in usage
                        if all((u[k] if k in ("model", "version", "instance") else
                                u["tags"].get(k)) == v for k, v in scope.items()))
            for thr in json.loads(thr_s):
                if spent < thr * amount:
                    continue
                with self._db.write() as conn:
                    cur = conn.execute("INSERT OR IGNORE INTO cost_alerts VALUES (?,?,?,?,?)",
                                       (bid, window, thr, at, spent))
                if cur.rowcount:
                    a = {"scope": scope, "amount": amount, "spent": spent, "threshold": thr,
                         "fraction": spent / amount}
                    alerts.append(a)
                    if self.audit is not None:
                        self.audit.append({"kind": "budget_alert", "subject": "budget:" +
                                           canonical_json(scope), **a})
        return alerts

    # ------------------------------------------------------------ right-sizing and policies
    def rightsizing(self, model: str, *, target_utilization: float = 0.6,
                    quantile: float = 0.95) -> dict:
        """Suggested instance count from measured utilization: the ``quantile`` of the busy
        instances per interval divided by ``target_utilization``."""
        if not 0 < target_utilization <= 1:
            raise ValueError("target_utilization must be within (0, 1]")
        rows = [u for u in self._usage() if u["model"] == model and u["end"] > u["start"]]
        if not rows:
            raise ValueError(f"no usage recorded for model {model!r}")
        busy_instances = np.array([u["busy_s"] / (u["end"] - u["start"]) for u in rows])
        replicas = np.array([u["replicas"] for u in rows])
        need = float(np.quantile(busy_instances, quantile))
        suggested = max(1, math.ceil(need / target_utilization - 1e-9))
        current = float(np.median(replicas))
        price = self.price(rows[-1]["instance"])
        util = float(busy_instances.sum() / replicas.sum())
        return {"model": model, "current_instances": current, "suggested_instances": suggested,
                "utilization": util, "idle_fraction": 1 - util,
                "busy_instances_q": need, "quantile": quantile,
                "hourly_saving": (current - suggested) * price.hourly}

    def record_cold_start(self, model: str, seconds: float) -> None:
        with self._db.write() as conn:
            conn.execute("INSERT INTO cost_cold_starts VALUES (?,?,?)", (model, now(), seconds))

    def idle_unload_plan(self, last_request: Mapping[str, float], *, unload_after_s: float,
                         keep_alive: Iterable[str] = (), at: float | None = None,
                         instance: str | None = None) -> list:
        """Which loaded models to unload: idle for ``unload_after_s`` and not in
        ``keep_alive``. Each entry shows the measured mean cold start (what the next request
        would wait) and, with ``instance``, what that reload costs."""
        at = now() if at is None else at
        keep = set(keep_alive)
        with self._db.read() as conn:
            cold = dict(conn.execute("SELECT model, AVG(seconds) FROM cost_cold_starts "
                                     "GROUP BY model").fetchall())
        hourly = self.price(instance).hourly if instance else None
        plan = []
        for model, ts in sorted(last_request.items()):
            idle = at - ts
            action = "keep" if model in keep or idle < unload_after_s else "unload"
            why = ("keep-alive" if model in keep else
                   f"idle {idle:.0f} s >= {unload_after_s:.0f} s" if action == "unload" else
                   f"idle {idle:.0f} s < {unload_after_s:.0f} s")
            cs = cold.get(model)
            plan.append({"model": model, "action": action, "reason": why, "idle_s": idle,
                         "cold_start_s": cs,
                         "cold_start_cost": cs * hourly / 3600 if cs is not None and hourly
                         else None})
        return plan

    def reserved_capacity(self, model: str | None = None, *, reserved: str, on_demand: str,
                          coverage: float = 0.8, bucket_s: float = 3600.0) -> dict:
        """Reserve the instance level the load stays above ``coverage`` of the time.

        Demand per bucket = busy seconds / bucket length (instances kept busy); the level is
        its ``1 - coverage`` quantile. Compares reserving it (the rest on demand) with running
        everything on demand.
        """
        rows = [u for u in self._usage() if model is None or u["model"] == model]
        if not rows:
            raise ValueError("no usage recorded")
        t0 = min(u["start"] for u in rows)
        t1 = max(u["end"] for u in rows)
        nb = max(1, math.ceil((t1 - t0) / bucket_s))
        demand = np.zeros(nb)
        for u in rows:
            # Spread each usage row's busy time evenly over the buckets it spans.
            a = (u["start"] - t0) / bucket_s
            b = max((u["end"] - t0) / bucket_s, a + 1e-12)
            for k in range(int(a), min(nb, math.ceil(b))):
                overlap = min(b, k + 1) - max(a, k)
                demand[k] += u["busy_s"] * overlap / (b - a) / bucket_s
        level = math.floor(float(np.quantile(demand, 1 - coverage)) + 1e-9)
        pr, po = self.price(reserved), self.price(on_demand)
        hours = nb * bucket_s / 3600.0
        need = np.ceil(demand - 1e-9)
        od_only = float(need.sum() * bucket_s / 3600.0 * po.hourly)
        mixed = float(level * hours * pr.hourly +
                      np.maximum(need - level, 0).sum() * bucket_s / 3600.0 * po.hourly)
        return {"reserve_instances": level, "coverage": coverage,
                "fraction_of_time_above": float((demand >= level).mean()) if level else 1.0,
                "cost_all_on_demand": od_only, "cost_with_reservation": mixed,
                "saving": od_only - mixed, "hours": hours}

    @staticmethod
    def compare_platforms(*, requests_per_month: float, peak_rps: float,
                          platforms: Mapping[str, Mapping]) -> list:
        """Monthly total cost of serving a workload on each platform, cheapest first.

        Each platform: ``hourly`` per instance, ``capacity_rps`` per instance at the SLO,
        ``per_1k_requests`` (managed endpoints), ``min_instances`` (default 1) and
        ``fixed_monthly`` (support, egress, ...).
        """
        if requests_per_month < 0 or peak_rps < 0:
            raise ValueError("requests_per_month and peak_rps must be >= 0")
        hours = 730.0
        out = []
        for name, p in platforms.items():
            hourly = float(p.get("hourly", 0.0))
            cap = p.get("capacity_rps")
            inst = 0
            if hourly:
                if not cap or cap <= 0:
                    raise ValueError(f"platform {name!r}: capacity_rps must be > 0 with hourly")
                inst = max(int(p.get("min_instances", 1)), math.ceil(peak_rps / cap))
            total = (inst * hours * hourly + requests_per_month / 1000.0 *
                     float(p.get("per_1k_requests", 0.0)) + float(p.get("fixed_monthly", 0.0)))
            out.append({"platform": name, "instances": inst, "monthly_cost": total,
                        "cost_per_1k": 1000 * total / requests_per_month
                        if requests_per_month else None})
        return sorted(out, key=lambda r: r["monthly_cost"])
