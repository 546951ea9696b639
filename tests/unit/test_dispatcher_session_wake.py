"""A store change that alters a node's session message wakes that session at once (manager/dispatcher.py
_follow_store), instead of waiting for the next periodic message (half a heartbeat period): over the real store."""

from __future__ import annotations

import asyncio
from typing import Any

from manager.dispatcher import Dispatcher, _Session
from manager.nodes import Role, State
from proto import objects_pb2 as pb

from tests.unit.test_dispatcher_down_nodes import dispatcher, node, session


async def commit(d: Dispatcher, fn: Any) -> None:
    await d.ops.raft.propose(fn)
    for _ in range(3):  # the follower task runs on the loop's next turns
        await asyncio.sleep(0)


def woken(*sessions: _Session) -> list[bool]:
    return [s.wake.is_set() for s in sessions]


def updated(nid: str, change: Any) -> Any:
    def tx(t: Any) -> None:
        n = pb.Node()
        n.CopyFrom(t.get("node", nid))
        change(n)
        t.update("node", n)
    return tx


def test_a_change_to_a_workers_record_wakes_its_session_only() -> None:
    async def run() -> list[bool]:
        d, _, clock = dispatcher(node("n1", State.READY), node("n2", State.READY))
        await d.start()
        try:
            s1, s2 = session(d, "n1", clock), session(d, "n2", clock)
            await commit(d, updated("n1", lambda n: n.attachment.addresses.append("10.255.0.2/16")))
            return woken(s1, s2)
        finally:
            await d.stop()
    assert asyncio.run(run()) == [True, False]


def test_a_change_to_a_manager_wakes_every_session() -> None:
    async def run() -> list[bool]:
        manager = node("m1", State.READY)
        manager.role = Role.MANAGER
        manager.manager_status.addr = "192.168.200.11:2377"
        d, _, clock = dispatcher(manager, node("n1", State.READY), node("n2", State.READY))
        await d.start()
        try:
            s1, s2 = session(d, "n1", clock), session(d, "n2", clock)
            await commit(d, updated("m1", lambda n: setattr(n.manager_status, "addr", "192.168.200.12:2377")))
            return woken(s1, s2)
        finally:
            await d.stop()
    assert asyncio.run(run()) == [True, True]


def test_a_change_to_the_cluster_wakes_every_session() -> None:
    async def run() -> list[bool]:
        d, _, clock = dispatcher(node("n1", State.READY), node("n2", State.READY))
        await d.start()
        try:
            s1, s2 = session(d, "n1", clock), session(d, "n2", clock)
            cluster = pb.Cluster(id="c1")
            cluster.spec.annotations.name = "default"
            await commit(d, lambda t: t.create("cluster", cluster))
            return woken(s1, s2)
        finally:
            await d.stop()
    assert asyncio.run(run()) == [True, True]
