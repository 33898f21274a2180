"""``pyperfcore demo``: the main job, an end-to-end production scenario on a real model and
real data shipped by packages (no network).

Each capability contributes one stage module ``pyperfcore/demo/stage_<name>.py`` with
``run(ctx) -> dict``; stages run in the order of ``STAGES``, share state through
``ctx.data`` and their summaries are written to ``report.json`` in the output directory.
"""
from __future__ import annotations

import importlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import numpy as np

T = TypeVar("T")

# (module name, title). A stage whose module is missing is skipped with a note.
STAGES: list[tuple[str, str]] = [
    ("stage_build", "build and machine"),
    ("stage_quant_pilot", "INT8 quantization of a real model's weights"),
    ("stage_scenario", "the model and its traffic: a digits classifier, a spike and a drift"),
    ("stage_prepost", "fused pre- and post-processing of real photos and model logits"),
    ("stage_quant", "INT8 inference of a real model, with its accuracy report"),
    ("stage_batching", "dynamic batching with request cache under a traffic spike"),
    ("stage_sketches", "distinct users, latency histograms and quantiles"),
    ("stage_drift", "drift injected mid-stream and detected"),
    ("stage_slo", "SLOs and burn-rate alerts on a traffic spike"),
    ("stage_ops", "registry, approvals, audit trail, model card and cost"),
    ("stage_release", "canary rollback, CI gate and diagnose"),
]


@dataclass
class DemoContext:
    """What a stage gets: where to write, how to report progress, and shared state."""

    workdir: Path
    quick: bool = False
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(2026))
    data: dict[str, Any] = field(default_factory=dict)  # shared between stages
    models: dict[str, Any] = field(default_factory=dict)  # name -> {'path','metrics','version_info'}
    results: dict[str, Any] = field(default_factory=dict)  # stage name -> summary

    def log(self, msg: str) -> None:
        print(f"  {msg}", flush=True)

    def progress(self, items: Iterable[T], desc: str, total: int | None = None) -> Iterator[T]:
        """Yields items and, when the loop takes more than a second, shows a progress line."""
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        start = last = time.perf_counter()
        shown = False
        tty = sys.stdout.isatty()
        for i, item in enumerate(items, 1):
            yield item
            now = time.perf_counter()
            if now - start > 1.0 and now - last > (0.1 if tty else 2.0):
                last = now
                shown = True
                frac = f"{i}/{total}" if total else str(i)
                end = "\r" if tty else "\n"
                print(f"  {desc}: {frac} ({now - start:.1f} s)", end=end, flush=True)
        if shown:
            print(f"  {desc}: done in {time.perf_counter() - start:.1f} s" + " " * 10, flush=True)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    return x


def run_demo(out_dir: str | Path = "pyperfcore-demo", quick: bool = False, stages: list[str] | None = None,
             log: Callable[[str], None] | None = None) -> int:
    """Runs the stages in order; returns 0 if every stage that ran succeeded."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = DemoContext(workdir=out, quick=quick)
    failed = []
    t0 = time.perf_counter()
    for i, (name, title) in enumerate(STAGES, 1):
        short = name.removeprefix("stage_")
        if stages and short not in stages and name not in stages:
            continue
        print(f"[{i}/{len(STAGES)}] {title}", flush=True)
        try:
            mod = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith(__name__):
                print(f"  (stage {short} not available in this build)")
                continue
            print(f"  skipped: needs {exc.name} (pip install 'pyperfcore[demo]')")
            ctx.results[short] = {"skipped": f"missing {exc.name}"}
            continue
        ts = time.perf_counter()
        try:
            ctx.results[short] = mod.run(ctx) or {}
        except Exception as exc:  # a stage failure is reported, the rest still run
            import traceback

            traceback.print_exc()
            ctx.results[short] = {"error": f"{type(exc).__name__}: {exc}"}
            failed.append(short)
        ctx.results.setdefault(short, {})["seconds"] = round(time.perf_counter() - ts, 3)
    report = out / "report.json"
    report.write_text(json.dumps(_jsonable(ctx.results), indent=2))
    if (Path(__file__).parent / "report.py").is_file():
        try:
            from .report import write_report

            html = write_report(ctx)
            print(f"report with plots: {html}")
        except Exception as exc:  # the JSON report is already written
            print(f"  HTML report failed: {type(exc).__name__}: {exc}")
            failed.append("report")
    status = "with failures in " + ", ".join(failed) if failed else "ok"
    print(f"demo finished in {time.perf_counter() - t0:.1f} s ({status}); report: {report}")
    return 1 if failed else 0
