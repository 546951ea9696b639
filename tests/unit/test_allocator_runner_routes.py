"""The allocator runner reads the manager's routes only for a pass that takes a network's subnet from the pools
(manager/allocator/runner.py): tasks, VIPs and networks with a subnet of their own need no netlink read."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Network

from manager.allocator.core import Allocator, network_subnet
from manager.allocator.runner import AllocatorRunner
from proto import objects_pb2 as pb
from tests.unit.test_leader_component_stop import AppliedAtOnce

ROUTED = IPv4Network("10.0.0.0/24")


def overlay(nid: str, subnet: str = "") -> pb.Network:
    n = pb.Network(id=nid, spec=pb.NetworkSpec(annotations=pb.Annotations(name=nid), driver="overlay"))
    if subnet:
        n.spec.ipam.configs.add(subnet=subnet)
    return n


def one_pass(raft: AppliedAtOnce) -> int:
    """Runs one allocator pass over raft's store; returns how often it read the routes."""
    reads = []

    def routes() -> list[IPv4Network]:
        reads.append(1)
        return [ROUTED]

    runner = AllocatorRunner(raft, routes=routes)
    runner.core = Allocator(runner.quarantine_s)
    asyncio.run(runner._pass())
    return len(reads)


def test_a_network_with_its_own_subnet_is_allocated_without_reading_routes() -> None:
    raft = AppliedAtOnce()
    raft.commit(lambda tx: tx.create("network", overlay("n1", "10.77.0.0/24")))
    assert one_pass(raft) == 0
    allocated = raft.store.view().get("network", "n1")
    assert allocated.vni and network_subnet(allocated) == IPv4Network("10.77.0.0/24")


def test_a_pass_with_every_network_allocated_reads_no_routes() -> None:
    raft = AppliedAtOnce()
    raft.commit(lambda tx: tx.create("network", overlay("n1", "10.77.0.0/24")))
    one_pass(raft)
    assert one_pass(raft) == 0


def test_a_network_taking_a_pool_subnet_reads_the_routes_and_avoids_them() -> None:
    raft = AppliedAtOnce()
    raft.commit(lambda tx: tx.create("network", overlay("n1")))
    assert one_pass(raft) == 1
    subnet = network_subnet(raft.store.view().get("network", "n1"))
    assert subnet is not None and not subnet.overlaps(ROUTED)
