"""Validation of every Raft message that comes from the wire, before it reaches the core (pure; no I/O).
The transport (manager/transport.py) drops what check_message refuses; unit tests: tests/unit/test_raft_wirecheck.py."""

from __future__ import annotations

import enum

from .messages import ConfChange, EntryKind, Message, MessageType as MT

# SQLite stores terms and indexes as signed 64-bit integers; keep room for the increments the core
# makes (term + 1 at a campaign, index + 1 at an append) so no value a peer sends can overflow storage.
MAX_VALUE = (1 << 63) - 1 - (1 << 32)
MAX_CONTEXT_BYTES = 1024  # read-index contexts are ~40 bytes


class Rpc(enum.Enum):
    STEP = "Step"
    SNAPSHOT = "StreamSnapshot"


# What each RPC may carry. PROP and TRANSFER_LEADER never travel on the wire here: followers forward
# proposals through the Propose RPC, and a transfer is asked of the local leader.
ALLOWED = {
    Rpc.STEP: frozenset({
        MT.APP, MT.APP_RESP, MT.VOTE, MT.VOTE_RESP, MT.PRE_VOTE, MT.PRE_VOTE_RESP,
        MT.HEARTBEAT, MT.HEARTBEAT_RESP, MT.READ_INDEX, MT.READ_INDEX_RESP, MT.TIMEOUT_NOW,
    }),
    Rpc.SNAPSHOT: frozenset({MT.SNAP}),
}
TERMLESS = frozenset({MT.READ_INDEX})  # a follower forwards its read request with term 0 (the core's "local")
_LOG_TERM_TYPES = frozenset({MT.APP, MT.VOTE, MT.PRE_VOTE})


def check_message(m: Message, self_id: int, rpc: Rpc) -> str | None:
    """Why m must be dropped, or None if the core may step it."""
    if m.from_ <= 0:
        return f"{m.type.name} has no sender"
    if m.from_ == self_id:
        return f"{m.type.name} claims to come from this member ({self_id})"
    if m.to != self_id:
        return f"{m.type.name} is addressed to member {m.to}, not {self_id}"
    if m.type not in ALLOWED[rpc]:
        return f"{m.type.name} is not carried by the {rpc.value} RPC"
    if not (0 <= m.term <= MAX_VALUE and 0 <= m.log_term <= MAX_VALUE and 0 <= m.index <= MAX_VALUE
            and 0 <= m.commit <= MAX_VALUE and 0 <= m.reject_hint <= MAX_VALUE):  # one test on the hot path
        for field in ("term", "log_term", "index", "commit", "reject_hint"):
            value = getattr(m, field)
            if not 0 <= value <= MAX_VALUE:
                return f"{m.type.name} {field} {value} out of range [0, {MAX_VALUE}]"
    if m.term == 0 and m.type not in TERMLESS:
        return f"{m.type.name} has term 0"
    if m.type in _LOG_TERM_TYPES and m.log_term > m.term:
        return f"{m.type.name} log term {m.log_term} above its term {m.term}"
    if len(m.context) > MAX_CONTEXT_BYTES:
        return f"{m.type.name} context of {len(m.context)} bytes exceeds {MAX_CONTEXT_BYTES}"
    if m.entries and m.type != MT.APP:
        return f"{m.type.name} carries entries"
    if m.snapshot is not None and m.type != MT.SNAP:
        return f"{m.type.name} carries a snapshot"
    if m.type == MT.APP:
        return _check_entries(m)
    if m.type == MT.SNAP:
        return _check_snapshot(m)
    return None


def _check_entries(m: Message) -> str | None:
    prev_term = m.log_term
    for i, e in enumerate(m.entries):
        want = m.index + 1 + i
        if e.index != want:
            return f"APP entries not contiguous: entry {i} has index {e.index}, expected {want}"
        if e.index > MAX_VALUE:
            return f"APP entry index {e.index} out of range [1, {MAX_VALUE}]"
        if not 1 <= e.term <= m.term:
            return f"APP entry {e.index} has term {e.term}, outside [1, {m.term}] (the message's term)"
        if e.term < prev_term:
            return f"APP entry {e.index} has term {e.term}, below the term {prev_term} before it"
        prev_term = e.term
        if e.kind == EntryKind.CONF_CHANGE:
            err = conf_change_error(e.data)
            if err is not None:
                return f"APP entry {e.index}: {err}"
    return None


def conf_change_error(data: bytes) -> str | None:
    try:
        cc = ConfChange.decode(data)
    except ValueError:  # UnicodeDecodeError included
        return f"invalid membership change {data[:64]!r}"
    if not 0 < cc.node_id <= MAX_VALUE:
        return f"membership change names invalid member {cc.node_id}"
    return address_error(cc.addr) if cc.addr else None


def address_error(addr: str) -> str | None:
    """A member address must be HOST:PORT (HOST may be [v6]); None when it is."""
    host, sep, port = addr.rpartition(":")
    if not sep or not host or len(addr) > 255 or not port.isdigit() or not 0 < int(port) < 65536:
        return f"invalid member address {addr!r}: expected HOST:PORT"
    if any(c.isspace() or ord(c) < 32 for c in addr):
        return f"invalid member address {addr!r}: expected HOST:PORT"
    return None


def _check_snapshot(m: Message) -> str | None:
    snap = m.snapshot
    if snap is None:
        return "SNAP carries no snapshot"
    meta = snap.meta
    if not 1 <= meta.index <= MAX_VALUE:
        return f"SNAP snapshot index {meta.index} out of range [1, {MAX_VALUE}]"
    if not 1 <= meta.term <= m.term:
        return f"SNAP snapshot term {meta.term} outside [1, {m.term}] (the message's term)"
    voters, removed = meta.conf_state.voters, meta.conf_state.removed
    if not voters:
        return "SNAP snapshot has no voters"
    if any(not 0 < v <= MAX_VALUE for v in (*voters, *removed)):
        return f"SNAP snapshot has an invalid member id in voters {list(voters)} / removed {list(removed)}"
    if len(set(voters)) != len(voters):
        return f"SNAP snapshot repeats a voter: {list(voters)}"
    if set(voters) & set(removed):
        return f"SNAP snapshot lists {sorted(set(voters) & set(removed))} as both voter and removed"
    # The sender may be missing from the voters: a leader added after its snapshot was taken sends it as it is
    # (the shell simulator's seed 188). A sender the snapshot itself lists as removed has no business sending it.
    if m.from_ in removed:
        return f"SNAP snapshot lists its sender {m.from_} as removed"
    return None
