"""Plain records of the Raft core: entries, hard state, snapshots and messages.
Shared by core.py, log.py, storage.py and (later) the gRPC transport, which maps them 1:1 to protobuf."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

NONE = 0  # "no node": node ids start at 1, so 0 marks "no vote" / "no leader" like etcd


class MessageType(enum.IntEnum):
    PROP = 1  # a proposal forwarded by a follower to the leader (term 0: local)
    APP = 2
    APP_RESP = 3
    VOTE = 4
    VOTE_RESP = 5
    PRE_VOTE = 6
    PRE_VOTE_RESP = 7
    HEARTBEAT = 8
    HEARTBEAT_RESP = 9
    SNAP = 10
    READ_INDEX = 11  # from_ is the node that wants the read state (term 0: local)
    READ_INDEX_RESP = 12
    TIMEOUT_NOW = 13
    TRANSFER_LEADER = 14  # from_ is the transferee, as in etcd


class EntryKind(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1
    EMPTY = 2  # the no-op a new leader appends to commit entries of earlier terms


class ConfChangeOp(enum.IntEnum):
    ADD = 1
    REMOVE = 2


@dataclass(slots=True, frozen=True)
class Entry:
    index: int
    term: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def size(self) -> int:
        # 24 bytes stands for index/term/kind on the wire; only relative sizes matter for the cap
        return len(self.data) + 24


@dataclass(slots=True, frozen=True)
class ConfChange:
    """One membership change. An ADD carries the member's address: addresses live in the log (as
    swarmkit's RaftMember in the conf change context), so they change only when such an entry commits."""

    op: ConfChangeOp
    node_id: int
    addr: str = ""

    def encode(self) -> bytes:
        tail = f" {self.addr}" if self.addr else ""
        return f"{self.op.name.lower()} {self.node_id}{tail}".encode()

    @staticmethod
    def decode(data: bytes) -> "ConfChange":
        """Raises ValueError for anything but "add|remove ID [HOST:PORT]"."""
        parts = data.decode().split(" ")
        if len(parts) not in (2, 3) or not parts[1].isdigit():
            raise ValueError(f"invalid membership change {data[:64]!r}")
        try:
            op = ConfChangeOp[parts[0].upper()]
        except KeyError:
            raise ValueError(f"invalid membership change {data[:64]!r}") from None
        return ConfChange(op, int(parts[1]), parts[2] if len(parts) == 3 else "")


@dataclass(slots=True, frozen=True)
class HardState:
    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(slots=True, frozen=True)
class ConfState:
    voters: tuple[int, ...] = ()
    removed: tuple[int, ...] = ()  # ids that left the cluster: never reusable


@dataclass(slots=True, frozen=True)
class SnapshotMeta:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(slots=True, frozen=True)
class Snapshot:
    meta: SnapshotMeta = field(default_factory=SnapshotMeta)
    data: bytes = b""


@dataclass(slots=True)
class Message:
    type: MessageType
    to: int
    from_: int
    term: int = 0
    log_term: int = 0  # APP: term of the entry at index; VOTE: term of the last entry
    index: int = 0  # APP: index before entries; VOTE: last index; APP_RESP: match or rejected index
    entries: list[Entry] = field(default_factory=list)
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0  # APP_RESP reject: the follower's last index
    snapshot: Snapshot | None = None
    context: bytes = b""  # read-index context, or CAMPAIGN_TRANSFER on votes


@dataclass(slots=True, frozen=True)
class ReadState:
    """Reads at `ctx` are linearizable once the state machine has applied `index`."""

    index: int
    ctx: bytes
