"""A retransmit-limited broadcast queue (memberlist's TransmitLimitedQueue idea) for networkdb's events.
One for network attachment events (piggybacked by the core) and one per network for table events (agent/gossip/netdb.py).

An event taken for a named member (take(..., to=name)) is never sent to that member again: the core piggybacks on
every packet, and a burst of packets to one member (a bulk sync, probe acks) used to spend all of a join's
transmissions on that one member, leaving others without it for seconds (memberlist has the same flaw; its
periodic push-pull hides it). Such an event leaves the queue once it reached every live member, or at the
retransmit limit."""

from __future__ import annotations

import math
from collections.abc import Hashable
from dataclasses import dataclass, field


def retransmit_limit(mult: int, nodes: int) -> int:
    """How many times an event is sent: mult * ceil(log10(nodes + 1)), as memberlist, at least 1."""
    return max(1, mult * math.ceil(math.log10(max(1, nodes) + 1)))


# How many packets to a member that already has an event it may be passed over for before it is dropped: a
# safety valve for a member the core never sends to again (its count of live members said otherwise)
SKIP_LIMIT = 64


@dataclass(slots=True)
class _Item:
    data: bytes
    transmits: int
    seq: int
    reached: set[str] = field(default_factory=set)  # the members it was sent to by name
    skips: int = 0


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

    def take(self, overhead: int, limit: int, nodes: int, to: str | None = None, live_others: int = 0) -> list[bytes]:
        """Events that fit in limit (each costs len + overhead), least sent and newest first; each one taken
        counts as sent once and leaves the queue at the retransmit limit. With to (the member the packet goes to):
        only events that member did not get from us yet, and an event leaves once it reached live_others members."""
        picked = self.peek(overhead, limit, to)
        self.sent([key for key, _ in picked], nodes, to, live_others)
        return [data for _, data in picked]

    def peek(self, overhead: int, limit: int, to: str | None = None) -> list[tuple[Hashable, bytes]]:
        """(key, event) pairs that take() would send, not yet counted as sent (the caller packs them, then says
        which went out with sent()). An event that could never fit in limit is dropped; with to, events that
        member already got are passed over (and dropped after SKIP_LIMIT such packets)."""
        if not self._items:
            return []
        out: list[tuple[Hashable, bytes]] = []
        used = 0
        order = sorted(self._items.items(), key=lambda kv: (kv[1].transmits, -kv[1].seq))
        for key, item in order:
            if to is not None and to in item.reached:
                item.skips += 1
                if item.skips > SKIP_LIMIT:
                    del self._items[key]
                continue
            cost = len(item.data) + overhead
            if cost > limit:  # could never be sent: dropped rather than stuck at the head forever
                self.drop(key)
                continue
            if used + cost > limit:
                continue
            used += cost
            out.append((key, item.data))
        return out

    def sent(self, keys: list[Hashable], nodes: int, to: str | None = None, live_others: int = 0) -> None:
        """These events went out once more (to the member named to, when known): each leaves the queue at the
        retransmit limit, or once it reached live_others distinct members."""
        cap = retransmit_limit(self.mult, nodes)
        for key in keys:
            item = self._items.get(key)
            if item is None:
                continue
            item.transmits += 1
            if to is not None:
                item.reached.add(to)
            if item.transmits >= cap or (to is not None and len(item.reached) >= live_others):
                del self._items[key]

    def drop(self, key: Hashable) -> None:
        """An event too big to send: forgotten (counted in oversized)."""
        if self._items.pop(key, None) is not None:
            self.oversized += 1
