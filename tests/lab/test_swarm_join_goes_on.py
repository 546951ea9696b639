"""A join whose wait for the node's session ends first goes on in the background, as docker's does: the node keeps
its certificate, state and (for a manager) its raft membership, registers later, and a retried join is refused as
"already part of a swarm" instead of adding the node a second time.

Real SwarmNodes on loopback (tests/lab/test_swarm_security.py's helpers); the wait is made to end at once
(register_timeout_s = 0), where a loaded machine would take more than 30 s.
"""
from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from common.errdefs import ShoalError, Unavailable
from proto import objects_pb2 as pb
from shoal.swarm.node import ALREADY_IN_SWARM, JOIN_GOES_ON, JoinRequest, SwarmNode
from tests.lab.test_swarm_security import addr, with_cluster

DEADLINE_S = 60.0


async def until(check, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not await check():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def impatient_join(d: Path, remote: str, token: str, name: str) -> tuple[SwarmNode, ShoalError]:
    joiner = SwarmNode(d / name, lambda: name, "0.1.0")
    joiner.register_timeout_s = 0.0
    me = addr()
    with pytest.raises(ShoalError) as e:
        await joiner.join(JoinRequest(remote=remote, token=token, listen_addr=me, advertise_addr=me))
    return joiner, e.value


async def ready_hostnames(mgr: SwarmNode) -> list[str]:
    nodes = await mgr.ops().list_nodes()
    return sorted(n.description.hostname for n in nodes if n.status.state == pb.NodeStatus.READY)


@pytest.mark.parametrize("role", ["worker", "manager"])
def test_a_join_that_outlasts_its_wait_says_so_and_goes_on(tmp_path: Path, role: str) -> None:
    async def body(mgr: SwarmNode, a: str, d: Path) -> None:
        token = getattr((await mgr.ops().get_cluster()).root_ca.join_tokens, role)
        joiner, err = await impatient_join(d, a, token, "j1")
        try:
            assert (type(err), err.message) == (Unavailable, JOIN_GOES_ON)
            assert joiner.active and joiner.paths.state.exists()  # nothing undone
            await until(lambda: _registered(joiner), "the joiner's session")
            async def both_ready() -> bool:
                return await ready_hostnames(mgr) == ["j1", "m1"]
            await until(both_ready, "j1 and m1 Ready")
            if role == "manager":
                assert joiner.manager is not None
                assert sorted(mgr.manager.raft.node.voters) == sorted([mgr.state.raft_id, joiner.state.raft_id])
        finally:
            await joiner.close()

    with_cluster(tmp_path, body)


def test_a_join_retried_after_its_wait_ended_adds_no_second_node(tmp_path: Path) -> None:
    async def body(mgr: SwarmNode, a: str, d: Path) -> None:
        token = (await mgr.ops().get_cluster()).root_ca.join_tokens.manager
        joiner, _ = await impatient_join(d, a, token, "j1")
        try:
            with pytest.raises(ShoalError) as again:
                await joiner.join(JoinRequest(remote=a, token=token, listen_addr=addr(), advertise_addr=addr()))
            assert again.value.message == ALREADY_IN_SWARM
            await until(lambda: _registered(joiner), "the joiner's session")
            assert len(await mgr.ops().list_nodes()) == 2
            assert len(mgr.manager.raft.node.voters) == 2
        finally:
            await joiner.close()

    with_cluster(tmp_path, body)


async def _registered(node: SwarmNode) -> bool:
    return node.session is not None and node.session.registered.is_set()
