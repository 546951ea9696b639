"""Real gossip cores (agent/gossip/core.py) carrying real NetworkDBs on a virtual clock, packets delayed 1-10 ms
and never lost: what the lab's gossip agents do (shoal/swarm/gossip_agent.py), minus sockets and encryption. Unlike
tests/unit/netdb_fake.py, which sends each broadcast to 3 random members, here networkdb's network events ride on the
core's packets as they really do (gossip rounds, probes, acks and networkdb's own direct messages), so the tests
see how an event's limited transmissions are actually spent."""

from __future__ import annotations

import heapq
import math
import random

from agent.gossip.core import Datagram, GossipConfig, GossipCore, NodeState
from agent.gossip.delegate import Member, MemberState
from agent.gossip.netdb import NetDBConfig, NetworkDB

PORT = 7946


class NetDBOverCore:
    def __init__(self, names: list[str], seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = 0.0
        self.addrs = {n: f"10.0.0.{i + 1}" for i, n in enumerate(names)}
        self.by_addr = {a: n for n, a in self.addrs.items()}
        self.cores: dict[str, GossipCore] = {}
        self.dbs: dict[str, NetworkDB] = {}
        self._events: list[tuple[float, int, str, tuple]] = []
        self._order = 0
        self._tick_at: dict[str, float] = {}
        for n in names:
            db = NetworkDB(n, random.Random(self.rng.getrandbits(64)), NetDBConfig())
            db.clock = lambda: self.now
            self.dbs[n] = db
            self.cores[n] = GossipCore(n, self.addrs[n], PORT, db, db, random.Random(self.rng.getrandbits(64)),
                                       GossipConfig())
        for n, core in self.cores.items():  # everyone knows everyone: membership is not what these tests are about
            for o in names:
                if o != n:
                    core.nodes[o] = NodeState(o, self.addrs[o], PORT, b"", 0, MemberState.ALIVE, self.now)
                    self.dbs[n].notify_join(Member(name=o, addr=self.addrs[o], port=PORT))
        for n, core in self.cores.items():
            core.start(self.now)
            self._tick_at[n] = math.inf
            self._flush(n)

    def _push(self, when: float, kind: str, args: tuple) -> None:
        self._order += 1
        heapq.heappush(self._events, (when, self._order, kind, args))

    def _flush(self, n: str) -> None:
        """What the gossip agent does after every input: networkdb's direct messages to the core, the core's
        packets onto the wire, the next wake-up at the earlier of both deadlines."""
        core, db = self.cores[n], self.dbs[n]
        for to, data in db.take_outgoing():
            core.send_to(to, data)
        for out in core.pop_outgoing():
            if isinstance(out, Datagram):
                dst = self.by_addr.get(out.addr)
                if dst is not None:
                    self._push(self.now + self.rng.uniform(0.001, 0.010), "packet", (dst, self.addrs[n], out.data))
        due = min(core.next_deadline() or math.inf, db.next_deadline())
        if due < self._tick_at[n]:
            self._tick_at[n] = due
            self._push(due, "tick", (n,))

    def call(self, n: str, fn) -> None:
        """An input from the node's own side (join_network, create_entry...), then its flush."""
        fn(self.dbs[n])
        self._flush(n)

    def run(self, seconds: float) -> None:
        end = self.now + seconds
        while self._events and self._events[0][0] <= end:
            when, _, kind, args = heapq.heappop(self._events)
            self.now = max(self.now, when)
            n = args[0]
            if kind == "tick":
                if when != self._tick_at[n]:
                    continue
                self._tick_at[n] = math.inf
                self.cores[n].tick(self.now)
                self.dbs[n].tick(self.now)
            else:
                self.cores[n].receive((args[1], PORT), args[2], self.now)
            self._flush(n)
        self.now = end
