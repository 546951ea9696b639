"""`docker info`'s Swarm.LocalNodeState from a SwarmNode, as moby's nodeRunner reports it: inactive outside a swarm,
pending until the node's first session came up (a join going on in the background, a daemon reconnecting after a
restart), active from then on."""
from __future__ import annotations

import asyncio
from pathlib import Path

from proto import objects_pb2 as pb
from shoal.swarm.node import SwarmNode
from shoal.swarm.session import AgentSession
from shoal.swarm.state import SwarmState


def _node(tmp_path: Path) -> SwarmNode:
    return SwarmNode(tmp_path / "swarm", lambda: "n1", "0.1.0")


def _session() -> AgentSession:
    return AgentSession(tls=None, managers=lambda: [], description=pb.NodeDescription(), on_message=lambda m: None)  # type: ignore[arg-type]


def test_a_node_outside_a_swarm_is_inactive(tmp_path: Path) -> None:
    assert _node(tmp_path).info_section()["LocalNodeState"] == "inactive"


def test_a_node_whose_session_has_not_come_up_yet_is_pending(tmp_path: Path) -> None:
    async def body() -> None:
        node = _node(tmp_path)
        node.state = SwarmState("nodeid", "clusterid", "worker", "10.0.0.2:2377", "10.0.0.2:2377", ["10.0.0.1:2377"])
        assert node.info_section()["LocalNodeState"] == "pending"  # no agent yet
        node.session = _session()
        assert node.info_section()["LocalNodeState"] == "pending"  # agent started, not registered
    asyncio.run(body())


def test_a_node_is_active_once_its_first_session_came_up(tmp_path: Path) -> None:
    async def body() -> None:
        node = _node(tmp_path)
        node.state = SwarmState("nodeid", "clusterid", "worker", "10.0.0.2:2377", "10.0.0.2:2377", ["10.0.0.1:2377"])
        node.session = _session()
        node.session.registered.set()
        info = node.info_section()
        assert (info["LocalNodeState"], info["NodeID"], info["NodeAddr"]) == ("active", "nodeid", "10.0.0.2")
    asyncio.run(body())
