"""The store's one error type, StoreError(code, message), and the constructors for each refusal.
Raised by tx.py and store.py; the control API maps .code to a gRPC status and rewords name conflicts."""

from __future__ import annotations

from common.errdefs import Kind, ShoalError

ALREADY_EXISTS = "ALREADY_EXISTS"
NOT_FOUND = "NOT_FOUND"
INVALID_ARGUMENT = "INVALID_ARGUMENT"
FAILED_PRECONDITION = "FAILED_PRECONDITION"
UNKNOWN = "UNKNOWN"
RESOURCE_EXHAUSTED = "RESOURCE_EXHAUSTED"
CODES = frozenset({ALREADY_EXISTS, NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION, UNKNOWN, RESOURCE_EXHAUSTED})
# The code travels between managers (ProposeResponse.error_code); the kind decides the gRPC status at the
# control API's edge (manager/grpcstatus.py, through common.errdefs.GRPC_CODE). swarmkit's "update out of
# sequence" is a plain error there (codes.Unknown, HTTP 500): a system error here (INTERNAL, HTTP 500).
_KIND = {
    ALREADY_EXISTS: Kind.CONFLICT,
    NOT_FOUND: Kind.NOT_FOUND,
    INVALID_ARGUMENT: Kind.INVALID,
    FAILED_PRECONDITION: Kind.PRECONDITION,
    UNKNOWN: Kind.SYSTEM,
    RESOURCE_EXHAUSTED: Kind.UNAVAILABLE,  # a watcher fell behind: it may watch again
}

# swarmkit's wordings (manager/state/store/memory.go); the control API turns NAME_CONFLICT into
# e.g. "config 'x' already exists" because only it knows which name the user typed.
NAME_CONFLICT = "name conflicts with an existing object"
SEQUENCE_CONFLICT = "update out of sequence"


class StoreError(ShoalError):
    """A refused store operation; equal to another StoreError with the same code and message.
    A code outside CODES (e.g. from a peer's reply) becomes UNKNOWN: building an error must not fail."""

    def __init__(self, code: str, message: str) -> None:
        if code not in CODES:
            code = UNKNOWN
        super().__init__(message)
        self.code = code
        self.kind = _KIND[code]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoreError) and (self.code, self.message) == (other.code, other.message)

    def __hash__(self) -> int:
        return hash((self.code, self.message))

    def __repr__(self) -> str:
        return f"StoreError({self.code!r}, {self.message!r})"


def name_conflict() -> StoreError:
    return StoreError(ALREADY_EXISTS, NAME_CONFLICT)


def id_conflict(kind: str, object_id: str) -> StoreError:
    return StoreError(ALREADY_EXISTS, f"{kind} {object_id} already exists")


def not_found(kind: str, object_id: str) -> StoreError:
    return StoreError(NOT_FOUND, f"{kind} {object_id} not found")


def sequence_conflict() -> StoreError:
    # UNKNOWN, as swarmkit surfaces it (a plain error becomes codes.Unknown, HTTP 500 in Docker).
    return StoreError(UNKNOWN, SEQUENCE_CONFLICT)


def too_many_actions(count: int, limit: int) -> StoreError:
    # INVALID_ARGUMENT (HTTP 400), as DESIGN.md §9 asks for "transaction too large".
    return StoreError(INVALID_ARGUMENT, f"transaction too large: {count} actions exceeds {limit}")


def too_many_bytes(size: int, limit: int) -> StoreError:
    return StoreError(INVALID_ARGUMENT, f"transaction too large: {size} bytes exceeds {limit}")


def invalid(message: str) -> StoreError:
    return StoreError(INVALID_ARGUMENT, message)
