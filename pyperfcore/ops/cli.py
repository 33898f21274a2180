"""Command-line subcommands of the ops layer: ``registry``, ``audit``, ``card``, ``cost``.

The main CLI calls :func:`register`. Every command takes ``--json`` for machine-readable output
and returns an exit status: 0 on success, 1 when a check fails (verification, refused
promotion), 2 for bad input.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

__all__ = ["register"]

_DEFAULT_REGISTRY = "pyperfcore-registry"


def _out(args, data, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        print(text)


def _registry(args):
    from .registry import Registry
    return Registry(args.registry, user=getattr(args, "by", None) or os.environ.get("USER"),
                    objects_dir=getattr(args, "objects", None))


class _Progress:
    """A one-line progress display on stderr for long operations (records done, rate, ETA).

    Drawn when stderr is a terminal or with ``--progress``; redrawn at most every 0.2 s.
    """

    def __init__(self, label: str, enabled: bool, stream=None):
        self.label, self.enabled = label, enabled
        self.stream = stream or sys.stderr
        self.t0 = self.last = time.monotonic()
        self.drawn = False

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        t = time.monotonic()
        if t - self.last < 0.2 and done < total:
            return
        self.last = t
        rate = done / max(t - self.t0, 1e-9)
        frac = done / total if total else 1.0
        bar = "#" * int(30 * frac)
        eta = (total - done) / rate if rate > 0 else 0.0
        self.stream.write(f"\r{self.label} [{bar:<30}] {done:,}/{total:,} "
                          f"({100 * frac:.0f}%) {rate:,.0f}/s ETA {eta:.0f}s ")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()


def _is_url(s) -> bool:
    from ._db import is_postgres_url
    return is_postgres_url(s)


def _add_common(p, registry: bool = True) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")
    if registry:
        p.add_argument("--registry", default=os.environ.get("PYPERFCORE_REGISTRY",
                                                            _DEFAULT_REGISTRY),
                       help="registry directory or postgresql:// URL (default: "
                            "$PYPERFCORE_REGISTRY or %(default)s)")
        p.add_argument("--objects", default=os.environ.get("PYPERFCORE_REGISTRY_OBJECTS"),
                       help="artifact directory (required with a postgresql:// registry; "
                            "default $PYPERFCORE_REGISTRY_OBJECTS)")


def _errors(fn):
    def wrapped(args) -> int:
        from ._db import OpsError
        try:
            return fn(args)
        except (OpsError, ValueError, KeyError, FileNotFoundError) as e:
            if getattr(args, "json", False):
                print(json.dumps({"error": type(e).__name__, "message": str(e),
                                  **({"missing": e.missing} if hasattr(e, "missing") else {})}))
            else:
                print(f"error: {e}", file=sys.stderr)
            from .registry import ApprovalRequired, SchemaMismatch
            return 1 if isinstance(e, (ApprovalRequired, SchemaMismatch)) else 2
    return wrapped


def _fmt_ts(ts) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts))


# ---------------------------------------------------------------- registry
@_errors
def _cmd_register(args) -> int:
    meta = {}
    if args.metadata:
        src = args.metadata
        meta = json.load(open(src[1:])) if src.startswith("@") else json.loads(src)
    arts = {}
    for a in args.artifacts:
        name, sep, path = a.partition("=")
        arts[name if sep else os.path.basename(a)] = path if sep else a
    mv = _registry(args).register(args.name, arts, metadata=meta, by=args.by,
                                  allow_pickle=args.allow_pickle)
    _out(args, mv.to_dict(), f"registered {mv.ref} ({mv.size} bytes, stage {mv.stage})")
    return 0


@_errors
def _cmd_list(args) -> int:
    reg = _registry(args)
    vs = reg.search(name=args.name, stage=args.stage)
    rows = [{"name": v.name, "version": v.version, "stage": v.stage, "aliases": v.aliases,
             "created": v.created, "size": v.size} for v in vs]
    text = "\n".join(f"{r['name']}:{r['version']:<5} {r['stage']:<11} {_fmt_ts(r['created'])}  "
                     f"{','.join(r['aliases']) or '-'}" for r in rows) or "(no versions)"
    _out(args, rows, text)
    return 0


@_errors
def _cmd_show(args) -> int:
    reg = _registry(args)
    name, _, ref = args.ref.partition(":")
    mv = reg.get(name, ref or "latest")
    d = mv.to_dict()
    d["approvals"] = reg.approvals(mv.name, mv.version)
    d["missing_approvals"] = reg.missing_approvals(mv.name, mv.version)
    lines = [f"{mv.ref}  stage={mv.stage}  aliases={','.join(mv.aliases) or '-'}",
             f"registered {_fmt_ts(mv.created)} by {mv.created_by or '-'}"]
    lines += [f"artifact {k}: {v['format']} {v['size']} B sha256={v['sha256']}"
              for k, v in sorted(mv.manifest.items())]
    lines += [f"approval {a['role']}: {a['approver']}" for a in d["approvals"]]
    if d["missing_approvals"]:
        lines.append("missing approvals for production: " + ", ".join(d["missing_approvals"]))
    lines.append("metadata: " + json.dumps(mv.metadata, sort_keys=True))
    _out(args, d, "\n".join(lines))
    return 0


@_errors
def _cmd_alias(args) -> int:
    reg = _registry(args)
    if args.version is None:
        hist = reg.alias_history(args.name, args.alias)
        text = "\n".join(f"v{h['version']:<4} {_fmt_ts(h['from_ts'])} -> {_fmt_ts(h['to_ts'])}"
                         f"  set by {h['set_by'] or '-'} ({h['reason'] or '-'})"
                         + (f"; moved by {h['ended_by']} ({h['end_reason'] or '-'})"
                            if h["to_ts"] else "") for h in hist) or "(never set)"
        _out(args, hist, text)
        return 0
    mv = reg.set_alias(args.name, args.alias, int(args.version), by=args.by, reason=args.reason)
    _out(args, mv.to_dict(), f"{args.name}:{args.alias} -> version {mv.version}")
    return 0


@_errors
def _cmd_promote(args) -> int:
    mv = _registry(args).promote(args.name, int(args.version), alias=args.alias, by=args.by,
                                 reason=args.reason)
    _out(args, mv.to_dict(), f"{args.name}:{args.alias} -> version {mv.version} "
                             f"(stage {mv.stage})")
    return 0


@_errors
def _cmd_retention(args) -> int:
    day = 86400.0
    plan = _registry(args).retention(
        keep_last=args.keep_last, name=args.name,
        archive_after_s=args.archive_after_days * day if args.archive_after_days else None,
        delete_archived_after_s=(args.delete_archived_after_days * day
                                 if args.delete_archived_after_days else None),
        dry_run=not args.apply, by=args.by)
    head = "dry run (nothing changed; --apply to do it)" if plan.dry_run else "applied"
    lines = [head] + [f"  {a['action']:<8} {a['name']}:{a['version']}  ({a['reason']})"
                      for a in plan.actions] + [f"  keep     {k['name']}:{k['version']}  "
                                                f"({k['reason']})" for k in plan.kept]
    _out(args, plan.to_dict(), "\n".join(lines))
    return 0


# ---------------------------------------------------------------- audit, card, cost
def _open_audit(args):
    from .audit import AuditLog
    path = args.db or (args.registry if _is_url(args.registry)
                       else os.path.join(args.registry, "registry.db"))
    if not _is_url(path) and not os.path.exists(path):
        raise FileNotFoundError(f"no audit database at {path}")
    return AuditLog(path), path


@_errors
def _cmd_audit_verify(args) -> int:
    log, path = _open_audit(args)
    show = args.progress if args.progress is not None else (sys.stderr.isatty()
                                                            and not args.json)
    if not args.json:
        print(f"verifying {len(log)} records in {getattr(log._db, 'display', path)} ...",
              file=sys.stderr, flush=True)
    bar = _Progress("verify", show)
    try:
        res = log.verify(checkpoints=args.checkpoints, progress=bar)
    finally:
        bar.close()
    text = (f"OK: {res.records} records, {res.checkpoints_checked} checkpoints, root {res.root}"
            if res.ok else f"FAILED: {len(res.problems)} problem(s)\n" +
            "\n".join(f"  {p}" for p in res.problems))
    _out(args, res.to_dict(), text)
    return 0 if res.ok else 1


@_errors
def _cmd_audit_prove(args) -> int:
    """Inclusion proof for one record, or consistency proof between two sizes; with
    ``--root`` (and ``--old-root``) the proof is also checked against those kept roots."""
    from .merkle import ProofError, verify_consistency_proof, verify_inclusion_proof
    log, _ = _open_audit(args)
    if args.seq is not None:
        proof = log.inclusion_proof(args.seq, args.size)
        check = (lambda: verify_inclusion_proof(proof, args.root)) if args.root else None
    else:
        if args.old_size is None:
            raise ValueError("give --seq N (inclusion) or --old-size N (consistency)")
        proof = log.consistency_proof(args.old_size, args.size)
        if bool(args.root) != bool(args.old_root):
            raise ValueError("checking a consistency proof needs both --old-root and --root")
        check = ((lambda: verify_consistency_proof(proof, args.old_root, args.root))
                 if args.root else None)
    ok = None
    if check is not None:
        try:
            ok = check()
        except ProofError as e:
            proof["verified"] = False
            proof["problem"] = str(e)
            ok = False
        else:
            proof["verified"] = True
    text = json.dumps(proof, indent=2)
    if ok is not None:
        text += "\n" + ("proof verified against the given root(s)" if ok
                        else f"PROOF FAILED: {proof['problem']}")
    _out(args, proof, text)
    return 1 if ok is False else 0


@_errors
def _cmd_card(args) -> int:
    from .cards import model_card
    reg = _registry(args)
    name, _, ref = args.ref.partition(":")
    mv = reg.get(name, ref or "latest")
    card = model_card(mv, approvals=reg.approvals(mv.name, mv.version), aliases=mv.aliases)
    text = card.to_html() if args.html else card.to_markdown()
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
    if args.json:
        print(json.dumps({"ref": mv.ref, "format": "html" if args.html else "markdown",
                          "path": args.out, "card": text}))
    elif not args.out:
        print(text)
    return 0


@_errors
def _cmd_cost_report(args) -> int:
    from .cost import CostLedger
    if not _is_url(args.db) and not os.path.exists(args.db):
        raise FileNotFoundError(f"no cost ledger at {args.db}")
    ledger = CostLedger(args.db)
    by = [b.strip() for b in args.by.split(",") if b.strip()]
    rows = ledger.report(by=by)
    lines = []
    for r in rows:
        key = " ".join(f"{k}={r[k]}" for k in by)
        per1k = "-" if r["cost_per_1k"] is None else f"{r['cost_per_1k']:.4f}"
        util = "-" if r["utilization"] is None else f"{100 * r['utilization']:.0f}%"
        lines.append(f"{key}: cost {r['cost']:.4f}, {r['requests']} requests, per 1k {per1k}, "
                     f"utilization {util}, idle {r['idle_cost']:.4f}")
    _out(args, rows, "\n".join(lines) or "(no usage recorded)")
    return 0


def register(subparsers) -> None:
    """Add ``registry``, ``audit``, ``card`` and ``cost`` to an argparse subparsers object."""
    reg = subparsers.add_parser("registry", help="model registry")
    rsub = reg.add_subparsers(dest="registry_command", required=True)

    p = rsub.add_parser("register", help="register a new model version")
    _add_common(p)
    p.add_argument("name")
    p.add_argument("artifacts", nargs="+", help="PATH or NAME=PATH")
    p.add_argument("--metadata", help="JSON text or @file.json")
    p.add_argument("--by")
    p.add_argument("--allow-pickle", action="store_true")
    p.set_defaults(func=_cmd_register)

    p = rsub.add_parser("list", help="list versions")
    _add_common(p)
    p.add_argument("name", nargs="?")
    p.add_argument("--stage")
    p.set_defaults(func=_cmd_list)

    p = rsub.add_parser("show", help="show one version (NAME[:VERSION|ALIAS])")
    _add_common(p)
    p.add_argument("ref")
    p.set_defaults(func=_cmd_show)

    p = rsub.add_parser("alias", help="move an alias, or show its history without VERSION")
    _add_common(p)
    p.add_argument("name")
    p.add_argument("alias")
    p.add_argument("version", nargs="?")
    p.add_argument("--by")
    p.add_argument("--reason")
    p.set_defaults(func=_cmd_alias)

    p = rsub.add_parser("promote", help="promote a version (approvals and schema checked)")
    _add_common(p)
    p.add_argument("name")
    p.add_argument("version")
    p.add_argument("--alias", default="production")
    p.add_argument("--by")
    p.add_argument("--reason")
    p.set_defaults(func=_cmd_promote)

    p = rsub.add_parser("retention", help="retention policy (dry run unless --apply)")
    _add_common(p)
    p.add_argument("--name")
    p.add_argument("--keep-last", type=int)
    p.add_argument("--archive-after-days", type=float)
    p.add_argument("--delete-archived-after-days", type=float)
    p.add_argument("--apply", action="store_true")
    p.add_argument("--by")
    p.set_defaults(func=_cmd_retention)

    aud = subparsers.add_parser("audit", help="audit trail")
    asub = aud.add_subparsers(dest="audit_command", required=True)
    p = asub.add_parser("verify", help="verify hash chain and Merkle checkpoints")
    _add_common(p)
    p.add_argument("--db", help="audit database (default: REGISTRY/registry.db)")
    p.add_argument("--checkpoints", help="JSON Lines of checkpoints kept outside the database")
    p.add_argument("--progress", action="store_true", default=None,
                   help="draw a progress bar on stderr (default: when stderr is a terminal)")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=_cmd_audit_verify)
    p = asub.add_parser("prove", help="Merkle inclusion (--seq) or consistency (--old-size) "
                                      "proof, checked against --root/--old-root if given")
    _add_common(p)
    p.add_argument("--db", help="audit database or URL (default: REGISTRY/registry.db)")
    p.add_argument("--seq", type=int, help="record to prove included")
    p.add_argument("--old-size", type=int, help="earlier tree size to prove extended")
    p.add_argument("--size", type=int, help="tree size of the proof (default: whole log)")
    p.add_argument("--root", help="checkpoint root at --size, kept outside the database")
    p.add_argument("--old-root", help="checkpoint root at --old-size")
    p.set_defaults(func=_cmd_audit_prove)

    p = subparsers.add_parser("card", help="model card for MODEL[:VERSION|ALIAS]")
    _add_common(p)
    p.add_argument("ref")
    p.add_argument("--html", action="store_true", help="HTML instead of Markdown")
    p.add_argument("--out", help="write to this file")
    p.set_defaults(func=_cmd_card)

    cost = subparsers.add_parser("cost", help="cost ledger")
    csub = cost.add_subparsers(dest="cost_command", required=True)
    p = csub.add_parser("report", help="cost per model/version or per tag")
    _add_common(p, registry=False)
    p.add_argument("--db", default=os.environ.get("PYPERFCORE_COST_DB", "pyperfcore-cost.db"))
    p.add_argument("--by", default="model,version", help="fields or tag keys, comma-separated")
    p.set_defaults(func=_cmd_cost_report)
