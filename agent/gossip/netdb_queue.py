"""A retransmit-limited broadcast queue (memberlist's TransmitLimitedQueue idea) for networkdb's events.
One for network attachment events (piggybacked by the core) and one per network for table events (agent/gossip/netdb.py)."""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass


def retransmit_limit(mult: int, nodes: int) -> int:
    """How many times an event is sent: mult * ceil(log10(nodes + 1)), as memberlist, at least 1."""
    return max(1, mult * math.ceil(math.log10(max(1, nodes) + 1)))


@dataclass(slots=True)
class _Item:
    data: bytes
    transmits: int
    seq: int


class BroadcastQueue:
    """Events keyed by what they are about: a newer event on the same key replaces the queued older one."""

    def __init__(self, mult: int = 4) -> None:
        self.mult = mult
        self._items: dict[Hashable, _Item] = {}
        self._seq = 0
        self.oversized = 0

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, key: Hashable, data: bytes) -> None:
        self._seq += 1
        self._items[key] = _Item(data, 0, self._seq)

    def clear(self) -> None:
        self._items.clear()

    def take(self, overhead: int, limit: int, nodes: int) -> list[bytes]:
        """Events that fit in limit (each costs len + overhead), least sent and newest first; each one taken
        counts as sent once and leaves the queue at the retransmit limit."""
        picked = self.peek(overhead, limit)
        self.sent([key for key, _ in picked], nodes)
        return [data for _, data in picked]

    def peek(self, overhead: int, limit: int) -> list[tuple[Hashable, bytes]]:
        """(key, event) pairs that take() would send, not yet counted as sent (the caller packs them, then says
        which went out with sent()). An event that could never fit in limit is dropped."""
        if not self._items:
            return []
        out: list[tuple[Hashable, bytes]] = []
        used = 0
        order = sorted(self._items.items(), key=lambda kv: (kv[1].transmits, -kv[1].seq))
        for key, item in order:
            cost = len(item.data) + overhead
            if cost > limit:  # could never be sent: dropped rather than stuck at the head forever
                self.drop(key)
                continue
            if used + cost > limit:
                continue
            used += cost
            out.append((key, item.data))
        return out

    def sent(self, keys: list[Hashable], nodes: int) -> None:
        """These events went out once more: each leaves the queue at the retransmit limit."""
        cap = retransmit_limit(self.mult, nodes)
        for key in keys:
            item = self._items.get(key)
            if item is None:
                continue
            item.transmits += 1
            if item.transmits >= cap:
                del self._items[key]

    def drop(self, key: Hashable) -> None:
        """An event too big to send: forgotten (counted in oversized)."""
        if self._items.pop(key, None) is not None:
            self.oversized += 1
