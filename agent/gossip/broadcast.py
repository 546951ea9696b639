"""The retransmit-limited broadcast queue (memberlist's TransmitLimitedQueue): what is piggybacked on packets.
Used by agent.gossip.core for membership updates; the Delegate above (netdb) may use one for its own messages."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field


def retransmit_limit(mult: int, num_nodes: int) -> int:
    """How many times a broadcast is sent: mult * ceil(log10(N + 1)), as memberlist."""
    return mult * max(1, math.ceil(math.log10(num_nodes + 1)))


@dataclass(slots=True)
class _Item:
    key: str | None      # a newer broadcast with the same key replaces this one (e.g. the member it is about)
    data: bytes
    transmits: int
    order: int
    on_done: Callable[[], None] | None = field(default=None)


class TransmitLimitedQueue:
    """Broadcasts ordered fewest-transmits first (newest first among equals), each dropped after the limit.

    Kept in buckets by transmit count (each an insertion-ordered dict), so queueing, replacing and sending are
    proportional to what is sent, not to the queue's length (a 500-member join queues hundreds of alives)."""

    def __init__(self, retransmit_mult: int, num_nodes: Callable[[], int], max_depth: int = 4096) -> None:
        self.retransmit_mult = retransmit_mult
        self.num_nodes = num_nodes
        self.max_depth = max_depth
        self._buckets: dict[int, dict[int, _Item]] = {}
        self._keyed: dict[str, _Item] = {}
        self._count = 0
        self._order = 0

    def __len__(self) -> int:
        return self._count

    def queue(self, data: bytes, key: str | None = None, on_done: Callable[[], None] | None = None) -> None:
        if key is not None:
            old = self._keyed.get(key)
            if old is not None:
                self._remove(old)
        self._order += 1
        item = _Item(key, data, 0, self._order, on_done)
        self._buckets.setdefault(0, {})[item.order] = item
        self._count += 1
        if key is not None:
            self._keyed[key] = item
        while self._count > self.max_depth:
            # the most-sent oldest go first: they have had their chance
            worst = self._buckets[max(self._buckets)]
            self._remove(next(iter(worst.values())))

    def _remove(self, item: _Item) -> None:
        bucket = self._buckets[item.transmits]
        del bucket[item.order]
        if not bucket:
            del self._buckets[item.transmits]
        self._count -= 1
        if item.key is not None and self._keyed.get(item.key) is item:
            del self._keyed[item.key]
        if item.on_done:
            item.on_done()

    def pending(self, key: str) -> bool:
        return key in self._keyed

    def get(self, overhead: int, limit: int) -> list[bytes]:
        """Broadcasts that fit in limit bytes (each costing len + overhead); counts a transmit for each."""
        if not self._count:
            return []
        cap = retransmit_limit(self.retransmit_mult, self.num_nodes())
        out: list[bytes] = []
        taken: list[_Item] = []
        used = 0
        full = False
        for t in sorted(self._buckets):
            for item in reversed(self._buckets[t].values()):
                cost = len(item.data) + overhead
                if used + cost > limit:
                    if limit - used < overhead + 8:
                        full = True
                        break
                    continue
                used += cost
                out.append(item.data)
                taken.append(item)
            if full:
                break
        for item in taken:
            bucket = self._buckets[item.transmits]
            del bucket[item.order]
            if not bucket:
                del self._buckets[item.transmits]
            item.transmits += 1
            if item.transmits >= cap:
                self._count -= 1
                if item.key is not None and self._keyed.get(item.key) is item:
                    del self._keyed[item.key]
                if item.on_done:
                    item.on_done()
            else:
                self._buckets.setdefault(item.transmits, {})[item.order] = item
        return out

    def reset(self) -> None:
        self._buckets.clear()
        self._keyed.clear()
        self._count = 0
