"""Which local networks a task's container joins, with the addresses the managers' allocator gave it: each
Task.networks attachment is matched to the engine's network of that id (or name); a swarm-scope network the node does
not have yet is created through the engine when its driver is available here. Used by shoal/swarm/executor.py."""

from __future__ import annotations

import logging
from typing import Any

from agent.taskexec import Dependencies
from common.errdefs import NotFound
from proto import objects_pb2 as pb

log = logging.getLogger(__name__)


def _local(engine: Any, net: pb.Network) -> Any | None:
    for ref in (net.id, net.spec.annotations.name):
        if not ref:
            continue
        try:
            return engine.get_network(ref)
        except Exception:  # noqa: BLE001 - NotFound or ambiguous: try the next reference
            continue
    return None


async def ensure_network(engine: Any, net: pb.Network) -> Any:
    """The engine's network for a swarm network: found, else created with the manager's id, subnet and options
    (the overlay driver's job: engine.create_swarm_network, when the node has it)."""
    found = _local(engine, net)
    if found is not None:
        return found
    create = getattr(engine, "create_swarm_network", None)  # added with the overlay driver
    if create is None:
        raise NotFound(f"network {net.spec.annotations.name or net.id} ({net.spec.driver or 'overlay'}) is not "
                       "available on this node: the node has no driver for swarm networks yet")
    return await create(net)


def _ip(addr: str) -> str:
    return addr.split("/", 1)[0]


PREDEFINED = "com.docker.swarm.predefined"  # swarm's copies of a node's host/bridge networks (moby sets NetworkMode)


def predefined_mode(task: pb.Task) -> str:
    """The network mode of a task on a predefined network (`--network host`): its name; "" otherwise."""
    if task.networks:
        spec = task.networks[0].network.spec
        if spec.annotations.labels.get(PREDEFINED) == "true":
            return spec.annotations.name
    return ""


async def task_networks(engine: Any, task: pb.Task, deps: Dependencies) -> list[tuple[str, str, list[str]]]:
    """(local network name, IPv4 address or "", aliases) per attachment, in the task's order; none for a task on a
    predefined network (it runs in that mode, as moby's executor does)."""
    if predefined_mode(task):
        return []
    out = []
    for att in task.networks:
        net = deps.networks.get(att.network.id) or att.network
        local = await ensure_network(engine, net)
        addr = next((_ip(a) for a in att.addresses if "." in a), "")
        out.append((local.name, addr, list(att.aliases)))
    return out
