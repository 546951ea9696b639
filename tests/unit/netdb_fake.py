"""A test double for the gossip *core* (not for networkdb): an in-memory cluster that calls each NetworkDB's
Delegate/EventDelegate as the SWIM core and its shell would (joins with push-pull, piggybacked broadcasts to 3
random members, direct sends, failures, partitions). Used by tests/unit/test_netdb*.py."""

from __future__ import annotations

import random
from collections.abc import Iterable

from agent.gossip.delegate import Member, MemberState
from agent.gossip.netdb import CREATE, DELETE, UPDATE, NetDBConfig, NetworkDB

TICK_S = 0.2


def member(name: str, state: MemberState = MemberState.ALIVE) -> Member:
    return Member(name=name, addr="127.0.0.1", port=7946, state=state)


class FakeCluster:
    def __init__(self, seed: int = 0, config: NetDBConfig | None = None, loss: float = 0.0) -> None:
        self.rng = random.Random(seed)
        self.loss = loss  # share of messages (broadcast or direct) lost on the way
        self.config = config
        self.now = 0.0
        self.dbs: dict[str, NetworkDB] = {}
        self.cut: set[frozenset[str]] = set()
        self.delivered: list[tuple[str, str, bytes]] = []  # (from, to, data) of every direct and broadcast delivery
        self.events: dict[str, list[tuple[str, str, str, bytes]]] = {}  # node -> watch log of every table

    def reachable(self, a: str, b: str) -> bool:
        return a != b and a in self.dbs and b in self.dbs and frozenset((a, b)) not in self.cut

    def add(self, name: str, watch: Iterable[str] = ("t",)) -> NetworkDB:
        db = NetworkDB(name, random.Random(self.rng.getrandbits(32)), self.config)
        db.tick(self.now)
        self.dbs[name] = db
        log = self.events[name] = []  # a new process: a new watcher
        for table in watch:
            db.watch(table, lambda ev, nid, key, val, table=table, log=log: log.append((ev, table + "/" + nid, key, val)))
        for other in self.dbs:
            if self.reachable(name, other):
                self.meet(name, other)
        return db

    def meet(self, a: str, b: str) -> None:
        """a and b see each other alive, and exchange their full state (the core's join / push-pull)."""
        da, dbb = self.dbs[a], self.dbs[b]
        da.notify_join(member(b))
        dbb.notify_join(member(a))
        dbb.merge_remote_state(da.local_state(True), True)
        da.merge_remote_state(dbb.local_state(True), True)

    def kill(self, name: str) -> None:
        """The node's process dies (its state is lost); the others declare it dead."""
        del self.dbs[name]
        for other in self.dbs.values():
            other.notify_leave(member(name, MemberState.DEAD))

    def restart_unnoticed(self, name: str, watch: Iterable[str] = ()) -> NetworkDB:
        """The node's process restarts (its state is lost) faster than the others' failure detection: they never
        declare it dead, they only see it again (a new incarnation: an update) and exchange state with it."""
        db = NetworkDB(name, random.Random(self.rng.getrandbits(32)), self.config)
        db.tick(self.now)
        self.dbs[name] = db
        self.events[name] = []
        for table in watch:
            log = self.events[name]
            db.watch(table, lambda ev, nid, key, val, table=table, log=log: log.append((ev, table + "/" + nid, key, val)))
        for other, odb in self.dbs.items():
            if self.reachable(name, other):
                db.notify_join(member(other))
                odb.notify_update(member(name))
                odb.merge_remote_state(db.local_state(True), True)
                db.merge_remote_state(odb.local_state(True), True)
        return db

    def leave(self, name: str) -> None:
        del self.dbs[name]
        for other in self.dbs.values():
            other.notify_leave(member(name, MemberState.LEFT))

    def partition(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        for a in side_a:
            for b in side_b:
                self.cut.add(frozenset((a, b)))
                self.dbs[a].notify_leave(member(b, MemberState.DEAD))
                self.dbs[b].notify_leave(member(a, MemberState.DEAD))

    def heal(self) -> None:
        pairs, self.cut = list(self.cut), set()
        for pair in sorted(tuple(sorted(p)) for p in pairs):
            if all(n in self.dbs for n in pair):
                self.meet(*pair)

    def step(self) -> None:
        self.now += TICK_S
        for db in list(self.dbs.values()):
            db.tick(self.now)
        for _ in range(20):  # deliver until quiet: a delivery may cause more sends
            moved = False
            for name, db in list(self.dbs.items()):
                others = [o for o in self.dbs if self.reachable(name, o)]
                for data in db.get_broadcasts(2, 1400):
                    for to in self.rng.sample(others, min(3, len(others))):
                        self._deliver(name, to, data)
                        moved = True
                for to, data in db.take_outgoing():
                    if self.reachable(name, to):
                        self._deliver(name, to, data)
                        moved = True
            if not moved:
                break

    def _deliver(self, src: str, dst: str, data: bytes) -> None:
        if self.loss and self.rng.random() < self.loss:
            return
        self.delivered.append((src, dst, data))
        self.dbs[dst].notify_msg(data)

    def run(self, seconds: float) -> None:
        for _ in range(int(round(seconds / TICK_S))):
            self.step()

    def view(self, name: str, table: str, nid: str) -> dict[str, bytes]:
        return {e.key: e.value for e in self.dbs[name].walk(table, nid)}

    def watched(self, name: str, nid: str, table: str = "t") -> dict[str, bytes]:
        """What a watcher that started empty holds now: the fold of the watch events (a check of the event stream)."""
        out: dict[str, bytes] = {}
        for ev, where, key, val in self.events[name]:
            if where != f"{table}/{nid}":
                continue
            if ev in (CREATE, UPDATE):
                assert ev == UPDATE or key not in out, f"{name}: create of {key} already present"
                assert ev == CREATE or key in out, f"{name}: update of absent {key}"
                out[key] = val
            else:
                assert ev == DELETE and key in out, f"{name}: delete of absent {key}"
                del out[key]
        return out
