"""--force-new-cluster (etcd's and swarm's): rewrite a member's surviving raft log so it starts as a one-member cluster.
Works on a Storage with save_ready (sqlite_storage.SQLiteStorage, storage.MemoryStorage via the shell); manager/raftnode.py calls it at start."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .core import RaftError, _changed_conf
from .messages import ConfChange, ConfChangeOp, Entry, EntryKind, HardState


class ForceNewClusterError(RaftError):
    """The data cannot be turned into a one-member cluster (none, or this member is not a voter in it)."""


@dataclass(slots=True, frozen=True)
class ForcedCluster:
    kept: int  # entries up to this index are kept (the recorded commit index)
    dropped: int  # uncommitted entries after it, discarded
    removed: tuple[int, ...]  # members a committed membership entry now removes
    commit: int  # the new commit index (the last removal, or kept)


def force_new_cluster(storage: Any, member: int, where: str = "") -> ForcedCluster:
    """As etcd and swarmkit do: drop the entries after the recorded commit index, then append, committed, one
    membership entry per other voter removing it (in the current term), so the log's last committed configuration
    holds this member alone. Idempotent: on a one-member log it only drops an uncommitted tail. One transaction."""
    where = where or getattr(storage, "describe", lambda: "raft storage")()
    hs, _cs = storage.initial_state()
    snap = storage.snapshot()
    if storage.last_index() == 0 and hs == HardState():
        raise ForceNewClusterError(f"cannot force a new cluster: {where} holds no raft data of member {member}")
    base = snap.meta.index
    commit = max(hs.commit, base)
    voters, removed = sorted(snap.meta.conf_state.voters), set(snap.meta.conf_state.removed)
    if commit > base:
        for e in storage.entries(base + 1, commit + 1):
            if e.kind == EntryKind.CONF_CHANGE:
                voters, removed = _changed_conf(voters, removed, ConfChange.decode(e.data))
    if member not in voters:
        raise ForceNewClusterError(
            f"cannot force a new cluster from member {member}: it is not a voter in the last committed configuration "
            f"of {where} (voters {voters})"
        )
    dropped = storage.last_index() - commit
    others = tuple(v for v in voters if v != member)
    term = max(hs.term, snap.meta.term, 1)
    entries = [Entry(commit + 1 + i, term, EntryKind.CONF_CHANGE, ConfChange(ConfChangeOp.REMOVE, v).encode())
               for i, v in enumerate(others)]
    if not entries and dropped:
        entries = [Entry(commit + 1, term, EntryKind.EMPTY, b"")]  # replaces (so drops) the uncommitted tail
    if entries:
        storage.save_ready(HardState(term, hs.vote, entries[-1].index), entries, None, None)
    return ForcedCluster(commit, dropped, others, entries[-1].index if entries else commit)


def record_commit(storage: Any, core: Any) -> int | None:
    """On a clean stop, in the disk thread after the last Ready's write: persist the core's commit index where the
    stored log holds the committed entries (same term at that index, so the whole prefix matches). Returns the
    index written, None if there was nothing newer to record."""
    hs = storage.hard_state()
    c = min(core.committed, storage.last_index())
    if c <= hs.commit or c <= storage.snapshot().meta.index or storage.term(c) != core.log.term_or_none(c):
        return None
    storage.save_ready(HardState(hs.term, hs.vote, c), [], None, None)
    return c
