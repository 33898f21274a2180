"""The ``pyperfcore`` command line: ``info``, ``demo`` and the subcommands each capability adds."""
from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Sequence

# Capabilities contribute subcommands through a module with ``register(subparsers)``.
_SUBCOMMAND_MODULES = ("pyperfcore.ops.cli", "pyperfcore.ops_cli")


def _cmd_info(args: argparse.Namespace) -> int:
    from ._runtime import build_info

    info = build_info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    width = max(len(k) for k in info)
    for key, value in info.items():
        if isinstance(value, list):
            value = ", ".join(map(str, value)) or "-"
        print(f"{key:<{width}}  {value}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(out_dir=args.out, quick=args.quick, stages=args.stage)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pyperfcore", description="Fast, watched and governed ML inference.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="what was built and what this machine can run")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("demo", help="run the end-to-end production scenario on its embedded default")
    p.add_argument("--out", default="pyperfcore-demo", help="directory for the report (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="smaller sizes, for tests")
    p.add_argument("--stage", action="append", help="run only these stages (repeatable)")
    p.set_defaults(func=_cmd_demo)
    for name in _SUBCOMMAND_MODULES:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
