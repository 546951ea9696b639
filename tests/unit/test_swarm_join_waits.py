"""What `swarm init/join` waits for before it returns (SwarmNode._wait_registered): the node's session registered
and, on a manager, its own store caught up with the leader's (a command run on a new manager right after its join
reads what the cluster had: before, `network inspect` of a network made on another manager said "not found" there,
and the new manager refused its own certificate as "not a member"). The manager here is a stand-in whose catch-up
the test releases; tests/lab/test_swarm_join_goes_on.py runs real nodes through the same wait."""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from common.errdefs import Unavailable
from proto import objects_pb2 as pb
from shoal.swarm.node import JOIN_GOES_ON, SwarmNode
from shoal.swarm.session import AgentSession
from shoal.swarm.state import SwarmState


class CatchingUpManager:
    """SwarmManager.caught_up() returns when the test says the store has caught up."""

    def __init__(self) -> None:
        self.store_current = asyncio.Event()

    async def caught_up(self) -> None:
        await self.store_current.wait()


def _joining(tmp_path: Path, role: str) -> SwarmNode:
    node = SwarmNode(tmp_path / "swarm", lambda: "n1", "0.1.0")
    node.state = SwarmState("nodeid", "clusterid", role, "10.0.0.2:2377", "10.0.0.2:2377", ["10.0.0.1:2377"])
    node.session = AgentSession(tls=None, managers=lambda: [], description=pb.NodeDescription(),  # type: ignore[arg-type]
                                on_message=lambda m: None)
    node.register_timeout_s = 30.0
    return node


def test_a_manager_join_waits_for_its_store_after_its_session_registered(tmp_path: Path) -> None:
    async def body() -> tuple[bool, bool]:
        node = _joining(tmp_path, "manager")
        node.manager = manager = CatchingUpManager()  # type: ignore[assignment]
        waiting = asyncio.create_task(node._wait_registered())
        node.session.registered.set()  # type: ignore[union-attr]
        await asyncio.sleep(0.05)
        returned_before_catch_up = waiting.done()
        manager.store_current.set()
        await asyncio.wait_for(waiting, 5)
        return returned_before_catch_up, waiting.done()

    assert asyncio.run(body()) == (False, True)


def test_a_worker_join_returns_once_its_session_registered(tmp_path: Path) -> None:
    async def body() -> None:
        node = _joining(tmp_path, "worker")
        waiting = asyncio.create_task(node._wait_registered())
        node.session.registered.set()  # type: ignore[union-attr]
        await asyncio.wait_for(waiting, 5)

    asyncio.run(body())


def test_a_manager_whose_store_does_not_catch_up_in_time_gets_dockers_goes_on_message(tmp_path: Path) -> None:
    async def body() -> None:
        node = _joining(tmp_path, "manager")
        node.manager = CatchingUpManager()  # type: ignore[assignment]
        node.register_timeout_s = 0.05
        node.session.registered.set()  # type: ignore[union-attr]
        await node._wait_registered()

    with pytest.raises(Unavailable) as e:
        asyncio.run(body())
    assert e.value.message == JOIN_GOES_ON
