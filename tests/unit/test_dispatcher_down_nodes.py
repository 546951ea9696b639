"""The dispatcher's session message names the nodes the store holds DOWN (down_nodes), and every session is woken to
send a new set the moment a node enters or leaves that state (manager/dispatcher.py), over the manager's real store."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from manager.ca.auth import Authorizer
from manager.dispatcher import MISSES, Dispatcher, _Session
from manager.nodes import NodeOps, State
from manager.store import MemoryStore
from proto import objects_pb2 as pb

PERIOD_S = 5.0  # no cluster object: the dispatcher's default heartbeat period


class Raft:
    """What NodeOps and the dispatcher use of RaftManager on a leader: its store, and proposals committed straight
    into it (as raft would after replication)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.index = itertools.count(1)
        self.leader_id = None
        self.node = None

    async def propose(self, fn: Any) -> Any:
        data, result = self.store.prepare(fn, f"r{self.store.last_index}")
        res = self.store.apply(self.store.last_index + 1, data)
        assert res.error is None, res.error
        return result


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def node(nid: str, state: int) -> pb.Node:
    n = pb.Node(id=nid)
    n.status.state = state
    n.description.hostname = nid
    return n


def dispatcher(*nodes: pb.Node) -> tuple[Dispatcher, NodeOps, Clock]:
    store = MemoryStore()

    def tx(t: Any) -> None:
        for n in nodes:
            t.create("node", n)

    data, _ = store.prepare(tx, "seed")
    store.apply(1, data)
    ops = NodeOps(Raft(store))  # type: ignore[arg-type]
    clock = Clock()
    return Dispatcher(ops, Authorizer(lambda: "", ops.node_exists), clock), ops, clock


def session(d: Dispatcher, nid: str, clock: Clock) -> _Session:
    s = _Session(nid, f"session-{nid}", clock() + MISSES * PERIOD_S)
    d.sessions[nid] = s
    return s


def test_the_session_message_names_every_node_held_down_sorted() -> None:
    async def run() -> list[str]:
        d, _, clock = dispatcher(node("n1", State.READY), node("n3", State.DOWN), node("n2", State.DOWN),
                                 node("n4", State.UNKNOWN))
        await d.start()
        try:
            return list(d._message(session(d, "n1", clock)).down_nodes)
        finally:
            await d.stop()

    assert asyncio.run(run()) == ["n2", "n3"]


def test_a_node_marked_down_wakes_every_session_with_the_new_set_and_its_return_empties_it() -> None:
    async def run() -> list[Any]:
        d, ops, clock = dispatcher(node("n1", State.READY), node("n2", State.READY), node("n3", State.READY))
        await d.start()
        try:
            s1, s2, s3 = (session(d, n, clock) for n in ("n1", "n2", "n3"))
            out: list[Any] = [list(d._message(s1).down_nodes)]
            s2.deadline = clock() - 1  # n2 missed its heartbeats (its daemon was killed)
            for s in (s1, s3):
                s.wake.clear()
            await d.check_once()
            out += [s1.wake.is_set(), s3.wake.is_set(), s2.ended, ops.local_node("n2").status.state == State.DOWN,
                    list(d._message(s1).down_nodes), list(d._message(s3).down_nodes)]
            # n2 registers again (what Session() does): READY, and the set is sent again without it
            for s in (s1, s3):
                s.wake.clear()
            await ops.set_status("n2", State.READY)
            out += [d.refresh_down(), s1.wake.is_set(), list(d._message(s1).down_nodes)]
            for s in (s1, s3):
                s.wake.clear()
            out += [d.refresh_down(), s1.wake.is_set()]  # nothing changed: nobody woken
            return out
        finally:
            await d.stop()

    assert asyncio.run(run()) == [[], True, True, True, True, ["n2"], ["n2"], True, True, [], False, False]


def test_a_node_that_never_registered_under_this_leader_is_named_once_its_grace_ends() -> None:
    async def run() -> list[Any]:
        d, _, clock = dispatcher(node("n1", State.READY), node("n2", State.READY))
        await d.start()  # n2 was READY under the previous leader; it gets MISSES periods to come back
        try:
            s1 = session(d, "n1", clock)
            await d.check_once()
            before = list(d._message(s1).down_nodes)
            clock.now += MISSES * PERIOD_S + 1
            s1.deadline = clock() + MISSES * PERIOD_S
            await d.check_once()
            return [before, list(d._message(s1).down_nodes)]
        finally:
            await d.stop()

    assert asyncio.run(run()) == [[], ["n2"]]
