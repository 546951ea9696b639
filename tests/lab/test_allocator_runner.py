"""The allocator runner on a real one-member ManagerNode (raft, store, watch) in this process on loopback: an overlay
created through NetworkOps has its subnet and VNI when create answers, and a burst of 300 new tasks is allocated in a
few raft entries (CHUNK updates per entry), each with its own address. Needs no root (127.0.0.1 only)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from manager.allocator.core import ATTACHMENT_LABEL
from manager.allocator.runner import CHUNK, AllocatorRunner
from manager.controlapi_networks import NetworkOps
from manager.node import ManagerNode
from manager.raftnode import ManagerConfig
from proto import objects_pb2 as pb
from tests.support.cluster import free_port

pytestmark = pytest.mark.lab
DEADLINE = 30.0
TASKS = 300


@pytest.fixture(autouse=True)
def _require_root() -> None:
    """Overrides the lab conftest: this manager only needs a loopback address, not root."""


async def until(cond: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


def new_tasks(tx: Any, network_id: str, lo: int, hi: int) -> None:
    for i in range(lo, hi):
        t = pb.Task(id=f"t{i:04d}", desired_state=pb.TASK_STATE_RUNNING)
        t.annotations.labels[ATTACHMENT_LABEL] = f"c{i}"
        t.spec.networks.add(target=network_id)
        tx.create("task", t)


def test_a_burst_of_tasks_is_allocated_in_few_raft_entries(tmp_path: Path) -> None:
    async def scenario() -> tuple[float, int]:
        addr = f"127.0.0.1:{free_port('127.0.0.1')}"
        node = ManagerNode(ManagerConfig(1, addr, {1: addr}, tmp_path / "m1", tick_s=0.05, storage="memory"))
        node.components.append(AllocatorRunner(node.raft, routes=lambda: []))
        await node.start()
        try:
            await node.raft.wait_leader(time.monotonic() + DEADLINE)
            spec = pb.NetworkSpec(attachable=True)
            spec.annotations.name = "backend"
            spec.ipam.configs.add(subnet="10.1.0.0/16")
            net = await NetworkOps(node.raft).create(spec)
            assert (net.ipam.configs[0].subnet, net.ipam.configs[0].gateway, net.vni) == ("10.1.0.0/16", "10.1.0.1", 4096)
            # the store takes at most 200 actions per entry: the burst comes in two entries
            await node.raft.propose(lambda tx: new_tasks(tx, net.id, 0, TASKS // 2))
            await node.raft.propose(lambda tx: new_tasks(tx, net.id, TASKS // 2, TASKS))
            first = node.raft.store.last_index
            t0 = time.monotonic()

            def allocated() -> bool:
                tasks = node.raft.store.view().list("task")
                return len(tasks) == TASKS and all(t.status.state == pb.TASK_STATE_PENDING for t in tasks)

            await until(allocated, "every task allocated")
            took = time.monotonic() - t0
            entries = node.raft.store.last_index - first
            got = sorted(IPv4Address(t.networks[0].addresses[0].split("/")[0]) for t in node.raft.store.view().list("task"))
            assert got == [IPv4Address("10.1.0.2") + i for i in range(TASKS)]
            assert entries <= -(-TASKS // CHUNK) + 1, f"{entries} raft entries for {TASKS} tasks"
            return took, entries
        finally:
            await node.stop()

    took, entries = asyncio.run(scenario())
    print(f"\nallocator: {TASKS} new tasks allocated in {took * 1000:.0f} ms and {entries} raft entries")
