"""The engine's error names, kept as aliases of common.errdefs (the one error vocabulary).

Code may raise either spelling; shoal.api.server maps the kind to an HTTP status, once.
"""
from __future__ import annotations

from common.errdefs import (
    Conflict,
    Forbidden,
    InvalidParameter,
    NotFound,
    NotImplemented_,
    NotModified,
    Precondition,
    ShoalError,
    SystemError_,
    Unavailable,
)

EngineError = ShoalError  # the old base name: any refused or failed request

__all__ = [
    "Conflict",
    "EngineError",
    "Forbidden",
    "InvalidParameter",
    "NotFound",
    "NotImplemented_",
    "NotModified",
    "Precondition",
    "ShoalError",
    "SystemError_",
    "Unavailable",
]
