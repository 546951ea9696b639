"""Shoal's Raft consensus: a sans-IO core (step/tick/ready/advance, like etcd-io/raft) and its simulator.
The manager's asyncio shell drives the core over gRPC with SQLite storage; sim.py drives it over a virtual network."""

from .core import (
    CAMPAIGN_TRANSFER,
    CompactionError,
    ConfChangeError,
    Config,
    NotLeader,
    ProposalDropped,
    QuorumLossError,
    RaftError,
    RaftNode,
    Ready,
    StateRole,
)
from .messages import (
    NONE,
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    ReadState,
    Snapshot,
    SnapshotMeta,
)
from .storage import CompactedError, MemoryStorage, Storage, StorageError, UnavailableError

__all__ = [
    "CAMPAIGN_TRANSFER", "CompactedError", "CompactionError", "ConfChange", "ConfChangeError", "ConfChangeOp",
    "ConfState", "Config", "Entry", "EntryKind", "HardState", "MemoryStorage", "Message", "MessageType", "NONE",
    "NotLeader", "ProposalDropped", "QuorumLossError", "RaftError", "RaftNode", "ReadState", "Ready", "Snapshot",
    "SnapshotMeta", "StateRole", "Storage", "StorageError", "UnavailableError",
]
