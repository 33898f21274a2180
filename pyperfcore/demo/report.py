"""The demo's report: ``report.html`` (self-contained, inline SVG plots) and ``report.json``.

:func:`write_report` reads what the stages left in ``ctx.results`` (their summaries) and
``ctx.data`` (shared state), and draws what it finds:

=======================  ==============================================================
plot                     source (first one present)
=======================  ==============================================================
request rate             ``data['traffic']['arrival_s']`` (+ ``spike`` and the drift start)
latency percentiles      ``data['latency_series']`` (``t_s``, ``latency_s`` per request),
                         else the SLO stage's per-minute ``data['slo_timeline']``
batch sizes              ``data['batching_stats']['batch_size']`` or
                         ``results['batching']['batch_size_histogram']``
drift score              ``data['drift_series']`` (``x``, ``score``, optional ``threshold``,
                         ``drift_start``), else computed here from ``data['features']``
                         (mean PSI per window against the reference)
SLO burn rate            ``data['slo_timeline']`` and ``data['slo_events']``
canary                   ``data['canary_timeline']`` (stage_release)
=======================  ==============================================================

A plot whose data is missing (a stage that did not run, failed or was skipped) is replaced by
a note saying which stage would provide it; the report is always written. The plots are drawn
by the small SVG code below (no plotting dependency).
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = ["write_report", "collect_series", "svg_line_chart", "svg_bar_chart", "nice_ticks"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")
MAX_POINTS = 600  # per series in the SVG and in report.json


# ------------------------------------------------------------------------------ SVG drawing
def nice_ticks(lo: float, hi: float, n: int = 5) -> list:
    """About ``n`` round tick values covering ``[lo, hi]`` (steps of 1, 2, 2.5 or 5 x 10^k)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return []
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9)
    digits = max(0, 2 - math.floor(math.log10(step)))  # enough decimals for 2.5 x 10^k
    out, k = [], 0
    while (first + k) * step <= hi + step * 1e-9:
        out.append(round((first + k) * step, digits))
        k += 1
    return out


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-3:
        return f"{v:.1e}"
    return f"{v:.4g}"


def _downsample(x: np.ndarray, y: np.ndarray, n: int = MAX_POINTS) -> tuple:
    if x.size <= n:
        return x, y
    idx = np.linspace(0, x.size - 1, n).round().astype(int)
    return x[idx], y[idx]


def _esc(s: Any) -> str:
    return html.escape(str(s), quote=True)


class _Frame:
    """Maps data coordinates to the plot area of a ``w`` x ``h`` SVG."""

    def __init__(self, xlim, ylim, w, h, left=62, right=16, top=30, bottom=42):
        self.x0, self.x1 = xlim
        self.y0, self.y1 = ylim
        if self.x1 <= self.x0:
            self.x1 = self.x0 + 1.0
        if self.y1 <= self.y0:
            self.y1 = self.y0 + 1.0
        self.w, self.h = w, h
        self.l, self.r, self.t, self.b = left, w - right, top, h - bottom

    def px(self, x):
        return self.l + (np.asarray(x, dtype=float) - self.x0) / (self.x1 - self.x0) * (self.r - self.l)

    def py(self, y):
        return self.b - (np.asarray(y, dtype=float) - self.y0) / (self.y1 - self.y0) * (self.b - self.t)


def _axes(f: _Frame, title: str, xlabel: str, ylabel: str, xticks: bool = True) -> list:
    o = [f'<rect x="{f.l}" y="{f.t}" width="{f.r - f.l}" height="{f.b - f.t}" fill="#fff" '
         f'stroke="#999"/>',
         f'<text x="{f.w / 2:.0f}" y="18" text-anchor="middle" font-weight="bold">{_esc(title)}</text>',
         f'<text x="{(f.l + f.r) / 2:.0f}" y="{f.h - 6}" text-anchor="middle">{_esc(xlabel)}</text>',
         f'<text x="14" y="{(f.t + f.b) / 2:.0f}" text-anchor="middle" '
         f'transform="rotate(-90 14 {(f.t + f.b) / 2:.0f})">{_esc(ylabel)}</text>']
    for v in nice_ticks(f.x0, f.x1, 6) if xticks else ():
        x = float(f.px(v))
        o.append(f'<line x1="{x:.1f}" y1="{f.b}" x2="{x:.1f}" y2="{f.b + 4}" stroke="#666"/>'
                 f'<text x="{x:.1f}" y="{f.b + 16}" text-anchor="middle">{_fmt(v)}</text>')
    for v in nice_ticks(f.y0, f.y1, 5):
        y = float(f.py(v))
        o.append(f'<line x1="{f.l}" y1="{y:.1f}" x2="{f.r}" y2="{y:.1f}" stroke="#eee"/>'
                 f'<text x="{f.l - 5}" y="{y + 4:.1f}" text-anchor="end">{_fmt(v)}</text>')
    return o


def _svg(f: _Frame, body: list) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{f.w}" height="{f.h}" '
            f'viewBox="0 0 {f.w} {f.h}" font-family="sans-serif" font-size="11">'
            + "".join(body) + "</svg>")


def _empty_svg(title: str, note: str, w: int = 720, h: int = 90) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" '
            f'font-size="12"><rect x="1" y="1" width="{w - 2}" height="{h - 2}" fill="#fafafa" '
            f'stroke="#ccc"/><text x="12" y="24" font-weight="bold">{_esc(title)}</text>'
            f'<text x="12" y="50" fill="#666">{_esc(note)}</text></svg>')


def svg_line_chart(series: Sequence[dict], *, title: str, xlabel: str = "", ylabel: str = "",
                   vlines: Iterable = (), spans: Iterable = (), hlines: Iterable = (),
                   markers: Iterable = (), width: int = 720, height: int = 260,
                   ylim: tuple | None = None, empty_note: str = "no data") -> str:
    """An SVG line chart.

    ``series``: dicts with ``x``, ``y``, ``label``, optional ``color``, ``dash``, ``step``
    (draw as a step function). ``vlines``: ``(x, label, color)``; ``spans``: ``(x0, x1, label,
    color)`` shaded bands; ``hlines``: ``(y, label, color)``; ``markers``: ``(x, y, label,
    color)``. Non-finite points are dropped; no finite point at all gives a captioned box.
    """
    clean = []
    for i, s in enumerate(series):
        x = np.asarray(s.get("x", []), dtype=float).ravel()
        y = np.asarray(s.get("y", []), dtype=float).ravel()
        if x.size != y.size:
            raise ValueError(f"series {s.get('label')!r}: x has {x.size} points, y {y.size}")
        ok = np.isfinite(x) & np.isfinite(y)
        x, y = _downsample(x[ok], y[ok])
        if x.size:
            clean.append({**s, "x": x, "y": y, "color": s.get("color", PALETTE[i % len(PALETTE)])})
    if not clean:
        return _empty_svg(title, empty_note, width)
    vlines, spans, hlines, markers = list(vlines), list(spans), list(hlines), list(markers)
    xs = np.concatenate([s["x"] for s in clean])
    ys = np.concatenate([s["y"] for s in clean])
    extra_x = [v[0] for v in vlines] + [v for s in spans for v in s[:2]] + [m[0] for m in markers]
    extra_y = [h[0] for h in hlines] + [m[1] for m in markers]
    xlo, xhi = float(min([xs.min(), *extra_x])), float(max([xs.max(), *extra_x]))
    if ylim is None:
        ylo, yhi = float(min([0.0, ys.min(), *extra_y])), float(max([ys.max(), *extra_y]))
        yhi = yhi + 0.08 * (yhi - ylo) if yhi > ylo else ylo + 1.0
        ylim = (ylo, yhi)
    f = _Frame((xlo, xhi), ylim, width, height)
    body = _axes(f, title, xlabel, ylabel)
    for x0, x1, label, color in spans:
        a, b = float(f.px(x0)), float(f.px(x1))
        body.append(f'<rect x="{a:.1f}" y="{f.t}" width="{max(1.0, b - a):.1f}" height="{f.b - f.t}" '
                    f'fill="{color}" fill-opacity="0.15"><title>{_esc(label)}</title></rect>'
                    f'<text x="{a + 3:.1f}" y="{f.t + 44}" fill="{color}">{_esc(label)}</text>')
    for y, label, color in hlines:
        py = float(f.py(y))
        body.append(f'<line x1="{f.l}" y1="{py:.1f}" x2="{f.r}" y2="{py:.1f}" stroke="{color}" '
                    f'stroke-dasharray="6 3"/><text x="{f.r - 4}" y="{py - 4:.1f}" '
                    f'text-anchor="end" fill="{color}">{_esc(label)}</text>')
    for k, (x, label, color) in enumerate(vlines):
        px = float(f.px(x))
        right = px > f.l + 0.75 * (f.r - f.l)  # label on the left of a line near the right edge
        anchor = ' text-anchor="end"' if right else ""
        body.append(f'<line x1="{px:.1f}" y1="{f.t}" x2="{px:.1f}" y2="{f.b}" stroke="{color}" '
                    f'stroke-width="1.5" stroke-dasharray="4 2"/><text x="{px + (-3 if right else 3):.1f}" '
                    f'y="{f.b - 8 - 12 * k}" fill="{color}"{anchor}>{_esc(label)}</text>')
    body.append(f'<clipPath id="c{id(f)}"><rect x="{f.l}" y="{f.t}" width="{f.r - f.l}" '
                f'height="{f.b - f.t}"/></clipPath>')
    for s in clean:
        px, py = f.px(s["x"]), f.py(np.clip(s["y"], f.y0, f.y1))
        if s.get("step") and px.size > 1:
            pts = [(px[0], py[0])]
            for j in range(1, px.size):
                pts += [(px[j], py[j - 1]), (px[j], py[j])]
        else:
            pts = list(zip(px, py))
        d = " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)
        dash = f' stroke-dasharray="{s["dash"]}"' if s.get("dash") else ""
        body.append(f'<polyline clip-path="url(#c{id(f)})" points="{d}" fill="none" '
                    f'stroke="{s["color"]}" stroke-width="1.6"{dash}/>')
    for x, y, label, color in markers:
        body.append(f'<circle cx="{float(f.px(x)):.1f}" cy="{float(f.py(y)):.1f}" r="4" '
                    f'fill="{color}"><title>{_esc(label)}</title></circle>')
    # legend
    lx, ly = f.l + 8, f.t + 10
    for s in clean:
        if not s.get("label"):
            continue
        wid = 28 + 6.5 * len(str(s["label"]))
        if lx + wid > f.r and lx > f.l + 8:  # wrap the legend
            lx, ly = f.l + 8, ly + 14
        body.append(f'<line x1="{lx:.0f}" y1="{ly}" x2="{lx + 16:.0f}" y2="{ly}" '
                    f'stroke="{s["color"]}" stroke-width="2"/><text x="{lx + 20:.0f}" '
                    f'y="{ly + 4}">{_esc(s["label"])}</text>')
        lx += wid
    return _svg(f, body)


def svg_bar_chart(labels: Sequence[str], values: Sequence[float], *, title: str,
                  xlabel: str = "", ylabel: str = "", width: int = 720, height: int = 240,
                  color: str = PALETTE[0], empty_note: str = "no data") -> str:
    """An SVG bar chart of ``values`` (finite, non-negative) with category ``labels``."""
    v = np.asarray(values, dtype=float).ravel()
    if len(labels) != v.size:
        raise ValueError(f"{len(labels)} labels for {v.size} values")
    if v.size == 0 or not np.isfinite(v).all() or v.max() <= 0:
        return _empty_svg(title, empty_note, width)
    f = _Frame((0, v.size), (0, float(v.max()) * 1.1), width, height)
    body = _axes(f, title, xlabel, ylabel, xticks=False)
    slot = (f.r - f.l) / v.size
    for i, (lab, val) in enumerate(zip(labels, v)):
        x = f.l + i * slot + slot * 0.12
        y = float(f.py(val))
        body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot * 0.76:.1f}" height="{f.b - y:.1f}" '
                    f'fill="{color}"><title>{_esc(lab)}: {val:g}</title></rect>'
                    f'<text x="{x + slot * 0.38:.1f}" y="{f.b + 16}" text-anchor="middle">{_esc(lab)}</text>'
                    f'<text x="{x + slot * 0.38:.1f}" y="{y - 3:.1f}" text-anchor="middle">{val:g}</text>')
    return _svg(f, body)


# ------------------------------------------------------------------------------ data extraction
def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=float).ravel()


def _rate_series(arrival_s: np.ndarray, bins: int = 120) -> dict:
    t = np.sort(arrival_s[np.isfinite(arrival_s)])
    if t.size < 2 or t[-1] <= t[0]:
        return {}
    edges = np.linspace(t[0], t[-1], bins + 1)
    counts, _ = np.histogram(t, edges)
    width = edges[1] - edges[0]
    return {"t_s": (edges[:-1] + width / 2).tolist(), "rps": (counts / width).tolist()}


def _traffic(ctx) -> dict | None:
    tr = ctx.data.get("traffic")
    if not isinstance(tr, dict) or "arrival_s" not in tr:
        return None
    arr = _arr(tr["arrival_s"])
    out = _rate_series(arr)
    if not out:
        return None
    sp = tr.get("spike")
    if sp is not None and len(sp) == 2 and 0 <= sp[0] < sp[1] <= arr.size:
        out["spike_s"] = [float(arr[int(sp[0])]), float(arr[int(sp[1]) - 1])]
    feats = ctx.data.get("features")
    ds = feats.get("drift_start") if isinstance(feats, dict) else None
    if ds is not None and 0 <= int(ds) < arr.size:
        out["drift_start_s"] = float(arr[int(ds)])
    return out


def _latency(ctx) -> dict | None:
    ls = ctx.data.get("latency_series")
    if isinstance(ls, dict) and "t_s" in ls and "latency_s" in ls:
        t, lat = _arr(ls["t_s"]), _arr(ls["latency_s"])
        ok = np.isfinite(t) & np.isfinite(lat)
        t, lat = t[ok], lat[ok]
        if t.size >= 10 and t.size == lat.size:
            nb = int(min(60, max(5, t.size // 50)))
            edges = np.linspace(t.min(), t.max() + 1e-9, nb + 1)
            which = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, nb - 1)
            out = {"x": [], "p50_ms": [], "p90_ms": [], "p99_ms": [], "x_unit": "s",
                   "source": ls.get("source", "per-request latencies")}
            for b in range(nb):
                v = lat[which == b]
                if v.size:
                    out["x"].append(float((edges[b] + edges[b + 1]) / 2))
                    for q in (50, 90, 99):
                        out[f"p{q}_ms"].append(float(np.percentile(v, q) * 1e3))
            return out
    tl = ctx.data.get("slo_timeline")
    if isinstance(tl, list) and tl and "p99_ms" in tl[0]:
        return {"x": [r["minute"] for r in tl], "p50_ms": [r["p50_ms"] for r in tl],
                "p90_ms": [r["p90_ms"] for r in tl], "p99_ms": [r["p99_ms"] for r in tl],
                "x_unit": "min", "source": "SLO stage traffic (simulated clock), per minute",
                "threshold_ms": tl[0].get("threshold_ms")}
    return None


def _batch_sizes(ctx) -> dict | None:
    st = ctx.data.get("batching_stats")
    hist = None
    if isinstance(st, dict) and isinstance(st.get("batch_size"), dict):
        hist = st["batch_size"].get("buckets")
    if hist is None:
        hist = (ctx.results.get("batching") or {}).get("batch_size_histogram")
    if not hist:
        return None
    labels, counts, prev, lo = [], [], 0, 0.0
    for le, cum in hist:
        le, cum = float(le), float(cum)
        if cum - prev > 0:
            first = math.floor(lo) + 1  # batch sizes are integers: bucket (lo, le] holds lo+1..le
            labels.append(f">{lo:g}" if not math.isfinite(le) else
                          f"{first}" if first >= le else f"{first}-{le:g}")
            counts.append(cum - prev)
        prev, lo = cum, le
    return {"labels": labels, "batches": counts} if counts else None


def _drift(ctx) -> dict | None:
    ds = ctx.data.get("drift_series")
    if isinstance(ds, dict) and "score" in ds:
        score = _arr(ds["score"])
        x = _arr(ds.get("x", np.arange(score.size)))
        if score.size and score.size == x.size:
            return {"x": x.tolist(), "score": score.tolist(), "threshold": ds.get("threshold"),
                    "drift_start": ds.get("drift_start"), "x_unit": ds.get("x_unit", "request"),
                    "source": ds.get("source", "drift stage")}
    feats = ctx.data.get("features")
    if not isinstance(feats, dict) or "reference" not in feats or "stream" not in feats:
        return None
    ref = np.asarray(feats["reference"], dtype=float)
    cur = np.asarray(feats["stream"], dtype=float)
    if ref.ndim != 2 or cur.ndim != 2 or ref.shape[1] != cur.shape[1] or len(cur) < 20 or len(ref) < 20:
        return None
    from ..ops.gate import psi

    window = max(200, len(cur) // 20)  # PSI of a window of n has a bias of about (bins - 1) / n
    cols = [j for j in range(ref.shape[1]) if np.ptp(ref[:, j]) > 0]  # constant columns carry no signal
    if not cols:
        return None
    xs, scores = [], []
    for start in range(0, len(cur) - window + 1, window):
        w = cur[start:start + window]
        scores.append(float(np.mean([psi(ref[:, j], w[:, j]) for j in cols])))
        xs.append(start + window / 2)
    return {"x": xs, "score": scores, "threshold": 0.1, "drift_start": feats.get("drift_start"),
            "x_unit": "request", "source": f"mean PSI over {len(cols)} features, windows of "
                                            f"{window} requests, computed by the report"}


def _slo(ctx) -> dict | None:
    tl = ctx.data.get("slo_timeline")
    if not isinstance(tl, list) or not tl:
        return None
    burn = {k: [r.get(k) for r in tl] for k in tl[0] if ":burn_" in k}
    if not burn:
        return None
    events = [e for e in ctx.data.get("slo_events", []) if isinstance(e, dict)]
    return {"minute": [r["minute"] for r in tl], "burn": burn,
            "spike_min": ctx.data.get("slo_spike_min"),
            "events": [{"t_min": e.get("t_min"), "event": e.get("event"), "slo": e.get("slo"),
                        "tier": e.get("tier"), "severity": e.get("severity")} for e in events]}


def _canary(ctx) -> dict | None:
    c = ctx.data.get("canary_timeline")
    if not isinstance(c, dict) or not c.get("requests"):
        return None
    return {k: list(v) if isinstance(v, (list, tuple, np.ndarray)) else v for k, v in c.items()}


def collect_series(ctx) -> dict:
    """Everything the report plots, as JSON-ready lists; a missing source gives ``None``."""
    out = {}
    for name, fn in (("request_rate", _traffic), ("latency", _latency),
                     ("batch_sizes", _batch_sizes), ("drift", _drift), ("slo_burn", _slo),
                     ("canary", _canary)):
        try:
            out[name] = fn(ctx)
        except (TypeError, ValueError, KeyError, IndexError) as exc:
            # a stage left malformed data: say so in the report instead of failing it
            out[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


# ------------------------------------------------------------------------------ figures
_NEEDS = {"request_rate": "the scenario stage (ctx.data['traffic'])",
          "latency": "a latency series (ctx.data['latency_series']) or the SLO stage",
          "batch_sizes": "the batching stage",
          "drift": "the drift stage or the scenario's features",
          "slo_burn": "the SLO stage",
          "canary": "the release stage"}


def _figure(name: str, s: dict | None) -> str:
    title = {"request_rate": "Request rate", "latency": "Latency percentiles over time",
             "batch_sizes": "Batch sizes", "drift": "Drift score over time",
             "slo_burn": "SLO burn rate", "canary": "Canary steps and rollback"}[name]
    if s is None:
        return _empty_svg(title, f"not available: needs {_NEEDS[name]}, which did not run")
    if "error" in s:
        return _empty_svg(title, f"not available: {s['error']}")
    if name == "request_rate":
        spans = [(*s["spike_s"], "spike", PALETTE[3])] if "spike_s" in s else []
        vl = [(s["drift_start_s"], "drift injected", PALETTE[1])] if "drift_start_s" in s else []
        return svg_line_chart([{"x": s["t_s"], "y": s["rps"], "label": "requests/s"}], title=title,
                              xlabel="time (s)", ylabel="requests / s", spans=spans, vlines=vl)
    if name == "latency":
        hl = [(s["threshold_ms"], f"SLO {s['threshold_ms']:g} ms", PALETTE[1])] \
            if s.get("threshold_ms") else []
        return svg_line_chart([{"x": s["x"], "y": s[f"p{q}_ms"], "label": f"p{q}"}
                               for q in (50, 90, 99)], title=f"{title} ({s['source']})",
                              xlabel=f"time ({s['x_unit']})", ylabel="ms", hlines=hl)
    if name == "batch_sizes":
        return svg_bar_chart(s["labels"], s["batches"], title=title, xlabel="batch size",
                             ylabel="batches")
    if name == "drift":
        vl = []
        if s.get("drift_start") is not None:
            vl.append((float(s["drift_start"]), "drift injected", PALETTE[1]))
        hl = [(float(s["threshold"]), f"threshold {s['threshold']:g}", PALETTE[3])] \
            if s.get("threshold") is not None else []
        return svg_line_chart([{"x": s["x"], "y": s["score"], "label": "drift score"}],
                              title=f"{title} ({s['source']})", xlabel=s["x_unit"],
                              ylabel="score", vlines=vl, hlines=hl)
    if name == "slo_burn":
        # the first SLO's windows solid, the others' dashed; page alerts of the first SLO marked
        first = next(iter(s["burn"])).split(":burn_")[0]
        series = [{"x": s["minute"], "y": [np.nan if v is None else v for v in ys],
                   "label": k if not k.startswith(first + ":") else k.split(":burn_")[1] + " window",
                   "dash": None if k.startswith(first + ":") else "5 3"}
                  for k, ys in s["burn"].items()]
        title = f"{title}: {first} (others dashed)" if len(series) > 2 else f"{title}: {first}"
        pages = [e for e in s["events"] if e.get("t_min") is not None and e.get("slo") == first
                 and e.get("severity") == "page" and e.get("event") == "firing"]
        vl = [(e["t_min"], f"{e['tier']} page fires", PALETTE[1]) for e in pages[:3]]
        spans = [(*s["spike_min"], "spike", PALETTE[3])] if s.get("spike_min") else []
        return svg_line_chart(series, title=title, xlabel="time (min)",
                              ylabel="burn rate (x budget)", vlines=vl, spans=spans,
                              hlines=[(14.4, "page 14.4x", PALETTE[1]), (1.0, "1x", PALETTE[2])])
    # canary
    series = [{"x": s["requests"], "y": s["weight"], "label": "candidate weight %", "step": True}]
    if s.get("agreement_x"):
        series.append({"x": s["agreement_x"], "y": [100 * a for a in s["agreement"]],
                       "label": "output agreement %", "dash": "3 2"})
    markers = [(m["request"], m["weight"], f"{m['kind']} {m.get('verdict') or ''}".strip(),
                PALETTE[1] if m["kind"] == "rollback" or m.get("verdict") == "fail" else PALETTE[2])
               for m in s.get("events", [])]
    vl = [(m["request"], "rollback", PALETTE[1]) for m in s.get("events", []) if m["kind"] == "rollback"]
    return svg_line_chart(series, title=title, xlabel="requests served", ylabel="%",
                          markers=markers, vlines=vl, ylim=(0, 105))


def _summary_rows(results: dict) -> list:
    rows = []
    for stage, r in results.items():
        if not isinstance(r, dict):
            continue
        if "error" in r:
            state = f"failed: {r['error']}"
        elif "skipped" in r:
            state = f"skipped: {r['skipped']}"
        else:
            keys = [k for k, v in r.items() if isinstance(v, (int, float, str, bool)) and k != "seconds"]
            state = "; ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in
                              ((k, r[k]) for k in keys[:6]))
        rows.append((stage, r.get("seconds"), state))
    return rows


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return v if math.isfinite(v) else None  # strict JSON has no NaN/Infinity
    if isinstance(x, (np.integer, np.bool_)):
        return x.item()
    if isinstance(x, (str, int, bool)) or x is None:
        return x
    return str(x)


def write_report(ctx, *, title: str = "pyperfcore demo") -> Path:
    """Writes ``report.html`` and ``report.json`` into ``ctx.workdir``; returns the HTML path."""
    out = Path(ctx.workdir)
    out.mkdir(parents=True, exist_ok=True)
    series = collect_series(ctx)
    results = dict(getattr(ctx, "results", {}) or {})
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    figs = []
    for name in ("request_rate", "latency", "batch_sizes", "drift", "slo_burn", "canary"):
        figs.append(f'<figure id="{name}">{_figure(name, series[name])}</figure>')
    rows = "".join(f"<tr><td>{_esc(s)}</td><td>{'' if sec is None else f'{sec:.2f}'}</td>"
                   f"<td>{_esc(st)}</td></tr>" for s, sec, st in _summary_rows(results))
    extra = []
    rel = results.get("release") or {}
    if rel.get("rollback_reason"):
        extra.append(f"<p><b>Canary rolled back:</b> {_esc(rel['rollback_reason'])}</p>")
    diag = rel.get("diagnosis")
    if diag:
        items = "".join(f"<li><b>{_esc(h.get('cause'))}</b> (score {h.get('score', 0):.2f}): "
                        f"{_esc('; '.join(map(str, h.get('evidence', [])))) or 'no evidence'}</li>"
                        for h in diag[:3])
        extra.append(f"<h2>Diagnosis</h2><ol>{items}</ol>")
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>
<style>body{{font-family:sans-serif;max-width:780px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;font-size:13px}}td,th{{border:1px solid #ccc;padding:3px 6px;text-align:left}}
figure{{margin:1.2em 0}}</style></head><body>
<h1>{_esc(title)}</h1><p>Generated {now}. Stage summaries are in report.json.</p>
<h2>Stages</h2><table><tr><th>stage</th><th>s</th><th>summary</th></tr>{rows}</table>
{''.join(extra)}
<h2>Plots</h2>
{''.join(figs)}
</body></html>
"""
    html_path = out / "report.html"
    html_path.write_text(doc, encoding="utf-8")
    (out / "report.json").write_text(json.dumps(_jsonable({"title": title, "generated": now,
                                                            "stages": results, "series": series}),
                                                indent=2, allow_nan=False))
    return html_path
