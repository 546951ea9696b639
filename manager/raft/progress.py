"""What a leader knows of each voter: match/next indexes, replication state, in-flight window, activity.
Owned by core.py's leader; pure bookkeeping with no I/O."""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field


class ProgressState(enum.IntEnum):
    PROBE = 0  # one append at a time until we find where the follower's log matches
    REPLICATE = 1  # stream appends optimistically, bounded by the in-flight window
    SNAPSHOT = 2  # a snapshot is on its way; appends wait for it


@dataclass(slots=True)
class Inflights:
    """Last indexes of appends sent but not yet acknowledged, capped at `capacity` messages."""

    capacity: int
    sent: deque[int] = field(default_factory=deque)

    def add(self, last_index: int) -> None:
        self.sent.append(last_index)

    def free_le(self, index: int) -> None:
        while self.sent and self.sent[0] <= index:
            self.sent.popleft()

    def free_first(self) -> None:
        if self.sent:
            self.sent.popleft()

    def full(self) -> bool:
        return len(self.sent) >= self.capacity

    def reset(self) -> None:
        self.sent.clear()


@dataclass(slots=True)
class Progress:
    match: int
    next: int
    inflights: Inflights
    state: ProgressState = ProgressState.PROBE
    probe_sent: bool = False
    pending_snapshot: int = 0
    inactive_ticks: int = 0  # ticks since the follower last answered; check-quorum reads it
    snapshot_wait: int = 0  # heartbeats answered while a snapshot is outstanding
    appended: bool = False  # an append went to the follower since the last heartbeat round

    def paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def become_probe(self) -> None:
        # after a snapshot, resume right after it even if the ack was lost
        if self.state == ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def become_replicate(self) -> None:
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflights.reset()

    def become_snapshot(self, index: int) -> None:
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_wait = 0
        self.inflights.reset()

    def maybe_update(self, index: int) -> bool:
        """An append up to `index` was accepted; False if that is old news."""
        updated = index > self.match
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decrease(self, rejected: int, hint: int) -> bool:
        """An append at prev index `rejected` was refused; False if the refusal is stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), self.match + 1)
        self.probe_sent = False
        return True


def quorum(n: int) -> int:
    return n // 2 + 1
