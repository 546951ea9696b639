"""Which local networks a task's container joins, with the addresses the managers' allocator gave it: each
Task.networks attachment is matched to the engine's network of that id (or name); a swarm network the node does not
have yet is created through the engine with the managers' id, subnet and VNI (the overlay driver does the kernel part).
Used by shoal/swarm/executor.py."""

from __future__ import annotations

import logging
from typing import Any

from agent.network.records import IPAMConfig
from agent.taskexec import Dependencies
from common.errdefs import Conflict, ShoalError
from proto import objects_pb2 as pb
from shoal.engine.requests import NetworkCreate

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


OPT_VNI = "com.docker.network.driver.overlay.vxlanid_list"  # Docker's option name for the VNI the managers gave


def network_create(net: pb.Network) -> NetworkCreate:
    """The engine's create request for a swarm network, with the managers' id, subnets (as allocated) and VNI."""
    configs = net.ipam.configs or net.spec.ipam.configs
    options = dict(net.spec.driver_options)
    if net.vni:
        options[OPT_VNI] = str(net.vni)
    return NetworkCreate(
        name=net.spec.annotations.name or net.id, driver=net.spec.driver or "overlay", scope="swarm",
        ipam_config=[IPAMConfig(subnet=c.subnet, gateway=c.gateway, ip_range=c.range) for c in configs if c.subnet],
        internal=net.spec.internal, attachable=net.spec.attachable, ingress=net.spec.ingress, options=options,
        labels=dict(net.spec.annotations.labels), id=net.id)


async def ensure_network(engine: Any, net: pb.Network) -> Any:
    """The engine's network for a swarm network: found, else created from the managers' object (the first task on
    this node that uses it brings it here, as in Docker). A driver the node lacks refuses the task with its reason."""
    from shoal.swarm.local_copies import making

    async with making(engine):  # never a copy shoal/swarm/local_copies.py is removing at this moment
        return await _ensure_network(engine, net)


async def _ensure_network(engine: Any, net: pb.Network) -> Any:
    found = _local(engine, net)
    if found is not None:
        return found
    name = net.spec.annotations.name or net.id
    try:
        record, _warning = await engine.create_network(network_create(net))
        return record
    except Conflict:  # another task of the same network made it meanwhile
        found = _local(engine, net)
        if found is not None:
            return found
        raise
    except ShoalError as e:
        raise type(e)(f"network {name} ({net.spec.driver or 'overlay'}) is not available on this node: {e.message}") from None


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


async def task_networks(engine: Any, task: pb.Task, deps: Dependencies) -> list[tuple[str, str]]:
    """(local network name, IPv4 address or "") per attachment, in the task's order; none for a task on a
    predefined network (it runs in that mode, as moby's executor does). The attachment's aliases are the service's:
    they name its VIP (and `tasks.<alias>` its tasks) through the service binding, never one task's container (as
    moby's executor, which gives them to the service config, not to the endpoint)."""
    if predefined_mode(task):
        return []
    out = []
    for att in task.networks:
        net = deps.networks.get(att.network.id) or att.network
        local = await ensure_network(engine, net)
        addr = next((_ip(a) for a in att.addresses if "." in a), "")
        out.append((local.name, addr))
    return out
