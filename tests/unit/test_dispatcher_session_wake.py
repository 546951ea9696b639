"""A store change that alters a node's session message wakes that session at once (manager/dispatcher.py
_follow_store), instead of waiting for the next periodic message (half a heartbeat period): over the real store."""

from __future__ import annotations

import asyncio
from typing import Any

from manager.nodes import Role, State
from proto import objects_pb2 as pb

from tests.unit.test_dispatcher_down_nodes import dispatcher, node, session


def woken_after(change: Any, *extra: pb.Node) -> list[bool]:
    """Whether the sessions of workers n1 and n2 are woken once `change` (a store transaction) is committed, with
    the nodes `extra` in the store too."""
    async def run() -> list[bool]:
        d, _, clock = dispatcher(*extra, node("n1", State.READY), node("n2", State.READY))
        await d.start()
        try:
            s1, s2 = session(d, "n1", clock), session(d, "n2", clock)
            await d.ops.raft.propose(change)
            for _ in range(3):  # the follower task runs on the loop's next turns
                await asyncio.sleep(0)
            return [s1.wake.is_set(), s2.wake.is_set()]
        finally:
            await d.stop()
    return asyncio.run(run())


def updated(nid: str, change: Any) -> Any:
    def tx(t: Any) -> None:
        n = pb.Node()
        n.CopyFrom(t.get("node", nid))
        change(n)
        t.update("node", n)
    return tx


def test_a_change_to_a_workers_record_wakes_its_session_only() -> None:
    assert woken_after(updated("n1", lambda n: n.attachment.addresses.append("10.255.0.2/16"))) == [True, False]


def test_a_change_to_a_manager_wakes_every_session() -> None:
    manager = node("m1", State.READY)
    manager.role = Role.MANAGER
    manager.manager_status.addr = "192.168.200.11:2377"
    change = updated("m1", lambda n: setattr(n.manager_status, "addr", "192.168.200.12:2377"))
    assert woken_after(change, manager) == [True, True]


def test_a_change_to_the_cluster_wakes_every_session() -> None:
    cluster = pb.Cluster(id="c1")
    cluster.spec.annotations.name = "default"
    assert woken_after(lambda t: t.create("cluster", cluster)) == [True, True]
