"""shoal's one error vocabulary (like moby's errdefs): what kind of refusal an error is.

Raised by agent/, manager/ and shoal/ alike; the local API maps a kind to an HTTP status once
(shoal/api), the manager maps it to a gRPC code once (manager/). Nothing reads message text.
"""
from __future__ import annotations

from enum import Enum


class Kind(Enum):
    INVALID = "invalid"  # the request itself is wrong: 400 / INVALID_ARGUMENT
    NOT_FOUND = "not found"  # 404 / NOT_FOUND
    CONFLICT = "conflict"  # a name or resource is taken: 409 / ALREADY_EXISTS
    FORBIDDEN = "forbidden"  # valid, but not allowed in this state: 403 / PERMISSION_DENIED
    NOT_MODIFIED = "not modified"  # already in the wanted state: 304
    UNAVAILABLE = "unavailable"  # the node cannot serve it now (not a manager, no quorum): 503 / UNAVAILABLE
    PRECONDITION = "precondition"  # stale version and the like: 500 / FAILED_PRECONDITION (swarm's wording)
    SYSTEM = "system"  # the host failed us (disk full, kernel refused): 500 / INTERNAL
    NOT_IMPLEMENTED = "not implemented"  # a verb shoal does not have (no registry): 501 / UNIMPLEMENTED


class ShoalError(Exception):
    """A refused or failed request. `message` is what the user sees (Docker's wording where
    Docker has one); `kind` decides the status at each edge."""

    kind: Kind = Kind.SYSTEM

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidParameter(ShoalError):
    kind = Kind.INVALID


class NotFound(ShoalError):
    kind = Kind.NOT_FOUND


class Conflict(ShoalError):
    kind = Kind.CONFLICT


class Forbidden(ShoalError):
    kind = Kind.FORBIDDEN


class NotModified(ShoalError):
    kind = Kind.NOT_MODIFIED


class Unavailable(ShoalError):
    kind = Kind.UNAVAILABLE


class Precondition(ShoalError):
    kind = Kind.PRECONDITION


class SystemError_(ShoalError):
    """The host failed (ENOSPC, EMFILE, a kernel refusal): not the caller's fault."""

    kind = Kind.SYSTEM


class NotImplemented_(ShoalError):
    """A verb or feature shoal does not have (moby's errdefs.NotImplemented)."""

    kind = Kind.NOT_IMPLEMENTED


HTTP_STATUS = {
    Kind.INVALID: 400,
    Kind.NOT_FOUND: 404,
    Kind.CONFLICT: 409,
    Kind.FORBIDDEN: 403,
    Kind.NOT_MODIFIED: 304,
    Kind.UNAVAILABLE: 503,
    Kind.PRECONDITION: 500,
    Kind.SYSTEM: 500,
    Kind.NOT_IMPLEMENTED: 501,
}

# gRPC status code names (grpc.StatusCode members); manager/ turns them into grpc.StatusCode
# so that this package needs no grpc import.
GRPC_CODE = {
    Kind.INVALID: "INVALID_ARGUMENT",
    Kind.NOT_FOUND: "NOT_FOUND",
    Kind.CONFLICT: "ALREADY_EXISTS",
    Kind.FORBIDDEN: "PERMISSION_DENIED",
    Kind.NOT_MODIFIED: "FAILED_PRECONDITION",
    Kind.UNAVAILABLE: "UNAVAILABLE",
    Kind.PRECONDITION: "FAILED_PRECONDITION",
    Kind.SYSTEM: "INTERNAL",
    Kind.NOT_IMPLEMENTED: "UNIMPLEMENTED",
}


def http_status(error: ShoalError) -> int:
    return HTTP_STATUS[error.kind]


def grpc_code_name(error: ShoalError) -> str:
    return GRPC_CODE[error.kind]
