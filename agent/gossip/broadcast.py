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


def _rank(item: _Item) -> tuple[int, int]:
    return item.transmits, -item.order


class TransmitLimitedQueue:
    """Broadcasts ordered fewest-transmits first (newest first among equals), each dropped after the limit."""

    def __init__(self, retransmit_mult: int, num_nodes: Callable[[], int], max_depth: int = 4096) -> None:
        self.retransmit_mult = retransmit_mult
        self.num_nodes = num_nodes
        self.max_depth = max_depth
        self._items: list[_Item] = []
        self._keyed: dict[str, _Item] = {}
        self._order = 0

    def __len__(self) -> int:
        return len(self._items)

    def queue(self, data: bytes, key: str | None = None, on_done: Callable[[], None] | None = None) -> None:
        if key is not None:
            old = self._keyed.pop(key, None)
            if old is not None:
                self._items.remove(old)
                if old.on_done:
                    old.on_done()
        self._order += 1
        item = _Item(key, data, 0, self._order, on_done)
        self._items.append(item)
        if key is not None:
            self._keyed[key] = item
        if len(self._items) > self.max_depth:
            # the most-sent oldest go first: they have had their chance
            self._items.sort(key=_rank)
            for dropped in self._items[self.max_depth:]:
                self._forget(dropped)
            del self._items[self.max_depth:]

    def _forget(self, item: _Item) -> None:
        if item.key is not None and self._keyed.get(item.key) is item:
            del self._keyed[item.key]
        if item.on_done:
            item.on_done()

    def pending(self, key: str) -> bool:
        return key in self._keyed

    def get(self, overhead: int, limit: int) -> list[bytes]:
        """Broadcasts that fit in limit bytes (each costing len + overhead); counts a transmit for each."""
        if not self._items:
            return []
        cap = retransmit_limit(self.retransmit_mult, self.num_nodes())
        self._items.sort(key=_rank)
        out: list[bytes] = []
        used = 0
        finished = False
        for item in self._items:
            cost = len(item.data) + overhead
            if used + cost > limit:
                if limit - used < overhead + 8:
                    break
                continue
            used += cost
            out.append(item.data)
            item.transmits += 1
            if item.transmits >= cap:
                finished = True
        if finished:
            keep = []
            for item in self._items:
                if item.transmits >= cap:
                    self._forget(item)
                else:
                    keep.append(item)
            self._items = keep
        return out

    def reset(self) -> None:
        self._items.clear()
        self._keyed.clear()
