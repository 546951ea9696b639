"""The managers' replicated object store: a pure, deterministic state machine fed with committed raft entries.
The manager shell proposes prepare()'s bytes through manager/raft and feeds every committed entry to apply()."""

from .errors import NAME_CONFLICT, SEQUENCE_CONFLICT, StoreError
from .kinds import KINDS, name_of
from .store import (
    DEDUPE_WINDOW,
    MAX_ACTIONS,
    MAX_PROPOSAL_BYTES,
    WATCH_BUFFER,
    ApplyResult,
    Event,
    MemoryStore,
    ReadTx,
    Watch,
    WriteTx,
)

__all__ = [
    "DEDUPE_WINDOW",
    "KINDS",
    "MAX_ACTIONS",
    "MAX_PROPOSAL_BYTES",
    "NAME_CONFLICT",
    "SEQUENCE_CONFLICT",
    "WATCH_BUFFER",
    "ApplyResult",
    "Event",
    "MemoryStore",
    "ReadTx",
    "StoreError",
    "Watch",
    "WriteTx",
    "name_of",
]
