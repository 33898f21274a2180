"""Control-path operations: model registry, audit trail and governance, cost ledger.

Pure Python on stdlib ``sqlite3`` and numpy; optional integrations import their packages
lazily and say which to install.
"""
from __future__ import annotations

from ._db import OpsError, SchemaTooNew
from .access import AccessDenied, AccessPolicy
from .artifacts import IntegrityError, UnsafeArtifact
from .audit import AuditLog, Problem, VerifyResult
from .cards import ModelCard, model_card
from .cost import CostLedger, Price
from .fairness import FairnessMonitor, FairnessReport, fairness_report
from .registry import (ApprovalRequired, DeprecatedVersionWarning, LifecycleError, ModelVersion,
                       NotFound, Registry, SchemaMismatch)

__all__ = [
    "AccessDenied", "AccessPolicy", "ApprovalRequired", "AuditLog", "CostLedger",
    "DeprecatedVersionWarning", "FairnessMonitor", "FairnessReport", "IntegrityError",
    "LifecycleError", "ModelCard", "ModelVersion", "NotFound", "OpsError", "Price", "Problem",
    "Registry", "SchemaMismatch", "SchemaTooNew", "UnsafeArtifact", "VerifyResult",
    "fairness_report", "model_card",
]
