"""``pyperfcore gate``, ``pyperfcore bench-model`` and ``pyperfcore diagnose``.

Models are named as ``module:attribute`` or ``path/to/file.py:attribute`` (a callable taking one
input). Replayed traffic comes from the inference logger's JSON-lines files (their ``inputs``).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import sys
from pathlib import Path

__all__ = ["register", "load_callable", "read_replay"]


def load_callable(spec: str):
    if ":" not in spec:
        raise ValueError(f"model spec {spec!r}: expected module:attribute or file.py:attribute")
    mod_name, attr = spec.rsplit(":", 1)
    if mod_name.endswith(".py"):
        path = Path(mod_name)
        if not path.is_file():
            raise FileNotFoundError(f"no such file: {path}")
        s = importlib.util.spec_from_file_location(f"_pyperfcore_model_{path.stem}", path)
        mod = importlib.util.module_from_spec(s)
        s.loader.exec_module(mod)
    else:
        mod = importlib.import_module(mod_name)
    fn = getattr(mod, attr, None)
    if fn is None or not callable(fn):
        raise ValueError(f"{spec}: {attr!r} is not a callable in {mod_name}")
    return fn


def read_replay(path, limit: int | None = None) -> tuple:
    """(inputs, labels-or-None) from JSON-lines files (a file or a directory of them)."""
    import numpy as np

    p = Path(path)
    files = sorted(p.glob("*.jsonl")) if p.is_dir() else [p]
    if not files or not all(f.is_file() for f in files):
        raise FileNotFoundError(f"no JSON-lines replay data at {p}")
    xs, ys = [], []
    for f in files:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{f}:{n}: not JSON: {exc}") from exc
            if not isinstance(rec, dict) or "inputs" not in rec:
                raise ValueError(f"{f}:{n}: record has no 'inputs'")
            xs.append(np.asarray(rec["inputs"]))
            ys.append(rec.get("label"))
            if limit and len(xs) >= limit:
                break
    labels = ys if all(y is not None for y in ys) else None
    return xs, labels


def _cmd_gate(args) -> int:
    from .ops.gate import gate

    cand, base = load_callable(args.candidate), load_callable(args.baseline)
    xs, labels = read_replay(args.replay, args.limit)
    size = None
    if args.candidate_file:
        size = sum(f.stat().st_size for f in Path(args.candidate_file).rglob("*") if f.is_file()) \
            if Path(args.candidate_file).is_dir() else Path(args.candidate_file).stat().st_size
    rep = gate(cand, base, xs, candidate_size_bytes=size, max_size_bytes=args.max_size,
               max_p99_s=args.max_p99_ms / 1e3 if args.max_p99_ms else None,
               max_p99_ratio=args.max_p99_ratio, min_agreement=args.min_agreement,
               labels=labels, max_output_psi=args.max_psi, load_rps=args.load_rps,
               load_duration_s=args.load_duration, max_load_p99_ratio=args.max_load_p99_ratio)
    print(json.dumps(rep.to_dict(), indent=2) if args.json else rep.text())
    return 0 if rep.ok else 1


def _cmd_bench_model(args) -> int:
    from .ops.bench import bench_model

    fn = load_callable(args.model)
    xs, _ = read_replay(args.replay, args.limit)
    res = bench_model(fn, xs, profiles=args.profile or ["steady", "ramp", "spike"],
                      rps=args.rps, duration_s=args.duration, max_batch_size=args.max_batch_size,
                      max_delay_ms=args.max_delay_ms, hourly_price=args.hourly_price,
                      model_name=args.model)
    text = json.dumps(res, indent=2)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


def _cmd_diagnose(args) -> int:
    from .ops.incident import diagnose, format_diagnosis

    try:
        signals = json.loads(Path(args.signals).read_text()) if args.signals != "-" else \
            json.load(sys.stdin)
    except json.JSONDecodeError as exc:
        print(f"diagnose: {args.signals} is not JSON: {exc}", file=sys.stderr)
        return 2
    if not isinstance(signals, dict):
        print("diagnose: signals must be a JSON object", file=sys.stderr)
        return 2
    hyps = diagnose(signals)
    if args.json:
        print(json.dumps([h.__dict__ for h in hyps], indent=2))
    else:
        print(format_diagnosis(hyps))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("gate", help="CI/CD gate: candidate vs baseline on replayed traffic")
    p.add_argument("--candidate", required=True, help="module:attr or file.py:attr")
    p.add_argument("--baseline", required=True, help="module:attr or file.py:attr")
    p.add_argument("--replay", required=True, help="inference-log JSONL file or directory")
    p.add_argument("--limit", type=int, default=2000, help="at most this many requests")
    p.add_argument("--candidate-file", help="artifact file or directory, for the size check")
    p.add_argument("--max-size", type=int, help="maximum artifact size in bytes")
    p.add_argument("--max-p99-ms", type=float, help="absolute p99 limit")
    p.add_argument("--max-p99-ratio", type=float, default=1.5, help="p99 vs baseline")
    p.add_argument("--min-agreement", type=float, default=0.98)
    p.add_argument("--max-psi", type=float, default=0.2, help="output drift limit (PSI)")
    p.add_argument("--load-rps", type=float,
                   help="also drive both models through the batcher at this steady rate and "
                        "compare p99 under that load")
    p.add_argument("--load-duration", type=float, default=3.0, help="seconds of load per model")
    p.add_argument("--max-load-p99-ratio", type=float, default=1.5)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_gate)

    p = subparsers.add_parser("bench-model", help="standard load test through the batcher")
    p.add_argument("--model", required=True, help="module:attr or file.py:attr (takes a batch)")
    p.add_argument("--replay", required=True, help="JSONL inputs to cycle through")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--profile", action="append", choices=["steady", "ramp", "spike"])
    p.add_argument("--rps", type=float, default=200.0)
    p.add_argument("--duration", type=float, default=5.0, help="seconds per profile")
    p.add_argument("--max-batch-size", type=int, default=16)
    p.add_argument("--max-delay-ms", type=float, default=2.0)
    p.add_argument("--hourly-price", type=float, help="$/hour of the machine, for cost per 1k")
    p.add_argument("--out", help="write the JSON result here too")
    p.set_defaults(func=_cmd_bench_model)

    p = subparsers.add_parser("diagnose", help="ranked hypotheses for an incident")
    p.add_argument("signals", help="JSON file of signals ('-' for stdin)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_diagnose)
