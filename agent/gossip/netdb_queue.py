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
        if not self._items:
            return []
        cap = retransmit_limit(self.mult, nodes)
        out: list[bytes] = []
        used = 0
        order = sorted(self._items.items(), key=lambda kv: (kv[1].transmits, -kv[1].seq))
        for key, item in order:
            cost = len(item.data) + overhead
            if cost > limit:  # could never be sent: dropped rather than stuck at the head forever
                del self._items[key]
                self.oversized += 1
                continue
            if used + cost > limit:
                continue
            used += cost
            out.append(item.data)
            item.transmits += 1
            if item.transmits >= cap:
                del self._items[key]
        return out
