"""Control-path operations: model registry, audit trail and governance, cost ledger.

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
