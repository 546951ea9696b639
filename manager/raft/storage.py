"""The Raft core's read view of durable state, and an in-memory implementation of it.
The core only reads Storage; the shell writes it from Ready (the SQLite storage will implement the same)."""

from __future__ import annotations

from typing import Protocol

from .messages import ConfState, Entry, HardState, Snapshot, SnapshotMeta


class StorageError(Exception):
    pass


class CompactedError(StorageError):
    """The requested index is at or below the snapshot: only the snapshot covers it."""


class UnavailableError(StorageError):
    """The requested index is past the last stored entry."""


class Storage(Protocol):
    def initial_state(self) -> tuple[HardState, ConfState]: ...
    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]: ...
    def term(self, index: int) -> int: ...
    def first_index(self) -> int: ...
    def last_index(self) -> int: ...
    def snapshot(self) -> Snapshot: ...


def limit_size(entries: list[Entry], max_bytes: int | None) -> list[Entry]:
    """Longest prefix within max_bytes, but never empty: one big entry must still make progress."""
    if max_bytes is None or not entries:
        return entries
    total = entries[0].size()
    n = 1
    while n < len(entries):
        total += entries[n].size()
        if total > max_bytes:
            break
        n += 1
    return entries[:n]


class LogView:
    """The read half of Storage shared by MemoryStorage and SQLiteStorage: a snapshot, then a
    run of entries after it. Subclasses keep `_hard_state`, `_snapshot` and say how many entries
    follow the snapshot (`_log_length`) and the term of one of them (`_term_after_snapshot`)."""

    _hard_state: HardState
    _snapshot: Snapshot

    def _log_length(self) -> int:
        raise NotImplementedError

    def _term_after_snapshot(self, offset: int) -> int:
        """Term of the entry at snapshot index + 1 + offset."""
        raise NotImplementedError

    def initial_state(self) -> tuple[HardState, ConfState]:
        return self._hard_state, self._snapshot.meta.conf_state

    def hard_state(self) -> HardState:
        return self._hard_state

    def first_index(self) -> int:
        return self._snapshot.meta.index + 1

    def last_index(self) -> int:
        return self._snapshot.meta.index + self._log_length()

    def term(self, index: int) -> int:
        base = self._snapshot.meta.index
        if index == base:
            return self._snapshot.meta.term
        if index < base:
            raise CompactedError(f"index {index} is compacted (snapshot at {base})")
        if index > base + self._log_length():
            raise UnavailableError(f"index {index} is past the last index {self.last_index()}")
        return self._term_after_snapshot(index - base - 1)

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def _check_range(self, lo: int, hi: int) -> int:
        """Refuses [lo, hi) that reaches into the snapshot or past the log; returns the snapshot index."""
        base = self._snapshot.meta.index
        if lo <= base:
            raise CompactedError(f"index {lo} is compacted (snapshot at {base})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi - 1} asked, last index is {self.last_index()}")
        return base


class MemoryStorage(LogView):
    """Storage kept in memory; in the simulator it is exactly what a node has fsynced."""

    def __init__(self) -> None:
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        self._entries: list[Entry] = []  # _entries[0].index == snapshot index + 1

    @classmethod
    def bootstrap(cls, voters: list[int], data: bytes = b"") -> "MemoryStorage":
        """A founding member's storage: a snapshot at index 1, term 1 holding the first voters.
        Joiners start empty and are caught up by a snapshot, so they learn the membership."""
        if not voters or any(v <= 0 for v in voters):
            raise ValueError(f"invalid voters {voters!r}: need positive node ids")
        s = cls()
        s._snapshot = Snapshot(SnapshotMeta(1, 1, ConfState(tuple(sorted(voters)))), data)
        s._hard_state = HardState(term=1, commit=1)
        return s

    # -- read view --------------------------------------------------------------------------
    def _log_length(self) -> int:
        return len(self._entries)

    def _term_after_snapshot(self, offset: int) -> int:
        return self._entries[offset].term

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        base = self._check_range(lo, hi)
        return limit_size(self._entries[lo - base - 1 : hi - base - 1], max_bytes)

    # -- writes, done by the shell from Ready ----------------------------------------------
    def set_hard_state(self, hs: HardState) -> None:
        self._hard_state = hs

    def append(self, entries: list[Entry]) -> None:
        """Append, replacing any stored suffix that starts at the first new index."""
        if not entries:
            return
        first = entries[0].index
        base = self._snapshot.meta.index
        if first <= base:
            # the head is already covered by the snapshot
            entries = entries[base + 1 - first :]
            if not entries:
                return
            first = entries[0].index
        if first > self.last_index() + 1:
            raise StorageError(f"gap: appending at {first} after last index {self.last_index()}")
        del self._entries[first - base - 1 :]
        self._entries.extend(entries)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Install a snapshot received from the leader: it replaces the whole log."""
        if snap.meta.index <= self._snapshot.meta.index:
            raise StorageError(
                f"snapshot at {snap.meta.index} is older than the stored one at {self._snapshot.meta.index}"
            )
        self._snapshot = snap
        self._entries = []

    def compact(self, snap: Snapshot) -> None:
        """Record a snapshot the application made locally and drop the entries it covers."""
        base = self._snapshot.meta.index
        if snap.meta.index <= base:
            return  # an older compaction raced with a newer snapshot: nothing to do
        if snap.meta.index > self.last_index():
            raise StorageError(f"compaction at {snap.meta.index} is past the last index {self.last_index()}")
        del self._entries[: snap.meta.index - base]
        self._snapshot = snap
