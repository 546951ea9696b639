"""The Raft log as the core sees it: stable entries in Storage plus the unstable tail not yet persisted.
Used by core.py; Storage (storage.py) is only read here, the shell writes it from Ready."""

from __future__ import annotations

from .messages import Entry, Snapshot
from .storage import CompactedError, Storage, UnavailableError, limit_size


class LogInvariantError(AssertionError):
    """The log was asked to do something Raft's rules forbid (e.g. truncate a committed entry)."""


class RaftLog:
    def __init__(self, storage: Storage, committed: int, applied: int) -> None:
        self.storage = storage
        self.committed = committed
        self.applied = applied
        # unstable: entries from `offset` on (and maybe a snapshot) that the shell has not persisted yet
        self.offset = storage.last_index() + 1
        self.unstable: list[Entry] = []
        self.unstable_snapshot: Snapshot | None = None

    # -- indexes and terms --------------------------------------------------------------------
    def first_index(self) -> int:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.meta.index + 1
        return self.storage.first_index()

    def last_index(self) -> int:
        if self.unstable:
            return self.offset + len(self.unstable) - 1
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot.meta.index
        return self.storage.last_index()

    def term(self, index: int) -> int:
        """Term of the entry at index; raises CompactedError / UnavailableError."""
        if self.unstable and index >= self.offset:
            if index >= self.offset + len(self.unstable):
                raise UnavailableError(f"index {index} is past the last index {self.last_index()}")
            return self.unstable[index - self.offset].term
        snap = self.unstable_snapshot
        if snap is not None:
            if index == snap.meta.index:
                return snap.meta.term
            if index < snap.meta.index:
                raise CompactedError(f"index {index} is compacted (snapshot at {snap.meta.index})")
            raise UnavailableError(f"index {index} is past the last index {self.last_index()}")
        return self.storage.term(index)

    def term_or_none(self, index: int) -> int | None:
        try:
            return self.term(index)
        except (CompactedError, UnavailableError):
            return None

    def last_term(self) -> int:
        return self.term(self.last_index())

    def match_term(self, index: int, term: int) -> bool:
        return self.term_or_none(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """§5.4.1: a candidate's log is at least as up to date as ours (vote restriction)."""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    # -- reading entries ------------------------------------------------------------------------
    def slice(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        """Entries [lo, hi); raises CompactedError if lo is below the first index."""
        if lo >= hi:
            return []
        if lo < self.first_index():
            raise CompactedError(f"index {lo} is compacted (first index {self.first_index()})")
        if hi > self.last_index() + 1:
            raise UnavailableError(f"entries up to {hi - 1} asked, last index is {self.last_index()}")
        out: list[Entry] = []
        if lo < self.offset:
            out = self.storage.entries(lo, min(hi, self.offset), max_bytes)
            if len(out) < min(hi, self.offset) - lo:
                return out  # the size cap cut the stable part short
        if hi > self.offset:
            out = out + self.unstable[max(lo, self.offset) - self.offset : hi - self.offset]
        return limit_size(out, max_bytes)

    def entries_from(self, lo: int, max_bytes: int | None = None) -> list[Entry]:
        return self.slice(lo, self.last_index() + 1, max_bytes)

    def snapshot(self) -> Snapshot:
        if self.unstable_snapshot is not None:
            return self.unstable_snapshot
        return self.storage.snapshot()

    def snapshot_index(self) -> int:
        return self.first_index() - 1

    # -- appending ------------------------------------------------------------------------------
    def append(self, entries: list[Entry]) -> int:
        if not entries:
            return self.last_index()
        after = entries[0].index - 1
        if after < self.committed:
            raise LogInvariantError(f"appending after {after} would overwrite committed entries up to {self.committed}")
        self._truncate_and_append(entries)
        return self.last_index()

    def _truncate_and_append(self, entries: list[Entry]) -> None:
        first = entries[0].index
        if first == self.offset + len(self.unstable):
            self.unstable.extend(entries)
        elif first <= self.offset:
            # replaces part of the stable log too: the shell's append truncates storage from `first`
            self.offset = first
            self.unstable = list(entries)
        else:
            self.unstable = self.unstable[: first - self.offset] + list(entries)

    def find_conflict(self, entries: list[Entry]) -> int:
        """Index of the first entry that is new or disagrees with our log, 0 if all match."""
        for e in entries:
            if not self.match_term(e.index, e.term):
                return e.index
        return 0

    def maybe_append(self, index: int, log_term: int, entries: list[Entry]) -> int | None:
        """§5.3 consistency check and append; returns the last index the leader vouched for, or None.
        The caller commits up to min(leader commit, that index): later entries may be a stale leader's."""
        if not self.match_term(index, log_term):
            return None
        last_new = index + len(entries)
        conflict = self.find_conflict(entries)
        if conflict:
            if conflict <= self.committed:
                raise LogInvariantError(f"entry {conflict} conflicts with committed entries up to {self.committed}")
            self.append(entries[conflict - index - 1 :])
        return last_new

    def commit_to(self, index: int) -> bool:
        if index <= self.committed:
            return False
        if index > self.last_index():
            raise LogInvariantError(f"commit {index} is past the last index {self.last_index()}")
        self.committed = index
        return True

    def restore(self, snap: Snapshot) -> None:
        self.committed = snap.meta.index
        self.offset = snap.meta.index + 1
        self.unstable = []
        self.unstable_snapshot = snap

    # -- handing out and acknowledging ----------------------------------------------------------
    def next_committed_entries(self) -> list[Entry]:
        lo = max(self.applied + 1, self.first_index())
        if self.committed < lo:
            return []
        return self.slice(lo, self.committed + 1)

    def has_next_committed_entries(self) -> bool:
        return self.committed >= max(self.applied + 1, self.first_index())

    def stable_to(self, index: int, term: int) -> None:
        if index < self.offset or index >= self.offset + len(self.unstable):
            return
        if self.unstable[index - self.offset].term != term:
            return  # replaced since the Ready was handed out
        del self.unstable[: index + 1 - self.offset]
        self.offset = index + 1

    def stable_snapshot_to(self, index: int) -> None:
        if self.unstable_snapshot is not None and self.unstable_snapshot.meta.index == index:
            self.unstable_snapshot = None

    def applied_to(self, index: int) -> None:
        if index > self.committed:
            raise LogInvariantError(f"applied {index} is past committed {self.committed}")
        if index > self.applied:
            self.applied = index
