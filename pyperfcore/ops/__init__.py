"""Control-path operations: model registry, audit trail and governance, cost ledger, SLOs and
burn-rate alerts, release control, observability and incident response.

Pure Python on stdlib ``sqlite3`` and numpy; ``postgresql://`` URLs use PostgreSQL through
psycopg 3, and the MLflow adapter (:mod:`pyperfcore.ops.mlflow_adapter`) uses MLflow: both are
optional, imported lazily, and say which package to install when missing.
"""
from __future__ import annotations

from ._db import OpsError, SchemaTooNew
from .access import AccessDenied, AccessPolicy
from .artifacts import IntegrityError, UnsafeArtifact
from .audit import AuditLog, Problem, VerifyResult
from .cards import ModelCard, model_card
from .cost import CostLedger, Price
from .fairness import FairnessMonitor, FairnessReport, fairness_report
from .merkle import ProofError, verify_consistency_proof, verify_inclusion_proof
from .registry import (ApprovalRequired, DeprecatedVersionWarning, LifecycleError, ModelVersion,
                       NotFound, Registry, SchemaMismatch)

__all__ = [
    "AccessDenied", "AccessPolicy", "ApprovalRequired", "AuditLog", "CostLedger",
    "DeprecatedVersionWarning", "FairnessMonitor", "FairnessReport", "IntegrityError",
    "LifecycleError", "ModelCard", "ModelVersion", "NotFound", "OpsError", "Price", "Problem",
    "ProofError", "Registry", "SchemaMismatch", "SchemaTooNew", "UnsafeArtifact",
    "VerifyResult", "fairness_report", "model_card", "verify_consistency_proof",
    "verify_inclusion_proof",
]

# SLOs, release control, observability and incidents load on first use, so importing the
# registry or the audit log does not import them.
_LAZY = {
    "SLO": "slo", "SLOTracker": "slo", "BurnTier": "slo", "prometheus_rules": "slo", "rules_yaml": "slo",
    "to_openslo": "slo", "from_openslo": "slo", "load_slos": "slo",
    "Judge": "judge", "MetricConfig": "judge", "mann_whitney": "judge",
    "Router": "release", "CanaryController": "release", "CanaryStep": "release", "OutputDriftConfig": "output_drift",
    "argo_analysis_template": "release", "argo_rollout": "release", "flagger_canary": "release",
    "Metrics": "monitoring", "InferenceLogger": "monitoring", "CanaryProbe": "monitoring",
    "Tracing": "monitoring", "Sampler": "monitoring", "latency_buckets": "monitoring",
    "diagnose": "incident", "postmortem": "incident", "runbook": "incident",
    "decision_threshold": "gate",
}
__all__ += sorted(_LAZY)


def __getattr__(name: str):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'pyperfcore.ops' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{mod}"), name)
    globals()[name] = value
    return value
