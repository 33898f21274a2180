"""Exception types shared by every capability."""
from __future__ import annotations


class PyperfcoreError(Exception):
    """Base class of pyperfcore's own exceptions."""


class BackendUnavailable(PyperfcoreError, RuntimeError):
    """A backend was asked for that was not built or cannot run on this machine."""
