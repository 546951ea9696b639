"""The swarm's overlay networks in the local Docker API of a manager: create/remove through the control API's
NetworkOps (proposals forwarded to the raft leader), and list/inspect with Docker's JSON (Scope "swarm"). Called
from routes_networks.py; the operations are manager/controlapi_networks.py's, allocation manager/allocator/'s."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from common.errdefs import Conflict, InvalidParameter, NotFound, ShoalError, Unavailable
from manager.allocator.pools import VXLANID_OPTION
from manager.controlapi_networks import lookup_network
from proto import objects_pb2 as pb

_ZERO_TIME = "0001-01-01T00:00:00Z"
LEADER_WAIT_S = 4.0  # a manager that does not know the leader this instant waits this long (two of the longest election
# timeouts, 2 x 2 s: a follower that missed the leader's heartbeats under load waits one out, then may need a second
# round) before it answers from its own copy of the store
_LEADER_POLL_S = 0.02
_GRPC_NAMES = {"INVALID_ARGUMENT": "InvalidArgument", "NOT_FOUND": "NotFound", "ALREADY_EXISTS": "AlreadyExists",
               "PERMISSION_DENIED": "PermissionDenied", "FAILED_PRECONDITION": "FailedPrecondition",
               "UNAVAILABLE": "Unavailable", "INTERNAL": "Internal", "UNIMPLEMENTED": "Unimplemented"}


def _swarm(engine: Any) -> Any:
    return getattr(engine, "swarm", None)


def manager_networks(engine: Any) -> Any | None:
    """The manager's NetworkOps when this node is a swarm manager, else None (a worker sees only local copies)."""
    node = _swarm(engine)
    if node is None or not node.is_manager:
        return None
    return node.manager.networks


def is_swarm_create(body: dict[str, Any]) -> bool:
    driver = body.get("Driver") or body.get("driver") or ""
    return driver == "overlay" or (body.get("Scope") or "") == "swarm"


def _as_docker(e: ShoalError) -> ShoalError:
    """Docker relays the control API's error as gRPC status text: 'rpc error: code = X desc = message'."""
    if e.message.startswith(("rpc error:", "network with name")):
        return e
    from common.errdefs import grpc_code_name

    code = _GRPC_NAMES.get(grpc_code_name(e), "Unknown")
    return type(e)(f"rpc error: code = {code} desc = {e.message}")


def spec_from_create(body: dict[str, Any]) -> pb.NetworkSpec:
    """moby's BasicNetworkCreateToGRPC over the parsed create body."""
    from shoal.api import params

    req = params.parse_network_create(body)
    if req.config_only:
        raise InvalidParameter("config-only networks are not supported by shoal")
    spec = pb.NetworkSpec(driver=req.driver or "overlay", internal=req.internal, attachable=req.attachable,
                          ingress=req.ingress, ipv6_enabled=req.enable_ipv6)
    spec.annotations.name = req.name
    spec.annotations.labels.update(req.labels)
    spec.driver_options.update(req.options)
    spec.ipam.driver = req.ipam_driver or "default"
    spec.ipam.options.update(req.ipam_options)
    for c in req.ipam_config:
        spec.ipam.configs.add(subnet=c.subnet, gateway=c.gateway, range=c.ip_range)
    return spec


async def create(engine: Any, body: dict[str, Any]) -> dict[str, Any]:
    """POST /networks/create with Driver overlay: 503 with Docker's message off a manager."""
    from shoal.swarm.node import NOT_IN_SWARM, WORKER_NOT_MANAGER

    node = _swarm(engine)
    if node is None or not node.active:
        raise Unavailable(NOT_IN_SWARM)
    if not node.is_manager:
        raise Unavailable(WORKER_NOT_MANAGER)
    name = str(body.get("Name") or "")
    if _local_named(engine, name):  # bridge, host, none included: dockerd words it so for them too
        raise Conflict(f"network with name {name} already exists")
    spec = spec_from_create(body)
    try:
        n = await node.manager.networks.create(spec)
    except ShoalError as e:
        raise _as_docker(e) from None
    return {"Id": n.id, "Warning": ""}


def _local_named(engine: Any, name: str) -> bool:
    try:
        return engine.get_network(name).name == name
    except ShoalError:
        return False


async def find(engine: Any, ref: str) -> pb.Network | None:
    """The swarm network ref names (id, name, id prefix) when this node is a manager; None otherwise."""
    ops = manager_networks(engine)
    if ops is None:
        return None
    try:
        if not await _leader_known(ops):
            raise Unavailable("no raft leader elected")
        return await ops.get(ref)
    except NotFound:
        return None
    except Unavailable:  # no quorum: this manager's own copy of the store still answers
        try:
            return lookup_network(ops.raft.store.view().list("network"), ref)
        except NotFound:
            return None


def _has_leader(ops: Any) -> bool:
    """A leader is known: a linearizable read can be answered (else it would wait for the proposal timeout)."""
    return bool(ops.raft.is_leader or ops.raft.leader_addr())


async def _leader_known(ops: Any, wait_s: float = LEADER_WAIT_S) -> bool:
    """Whether a leader is known, waiting up to wait_s for one. A manager that has just joined (or heard no leader
    for a moment) answered from its own copy of the store at once, which may not hold a network another manager
    has just created: `network inspect` right after a create on another manager said "not found" (1 run in 7-15)."""
    deadline = time.monotonic() + wait_s
    while not _has_leader(ops):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(_LEADER_POLL_S)
    return True


async def remove(engine: Any, n: pb.Network) -> None:
    ops = manager_networks(engine)
    assert ops is not None
    try:
        await ops.remove(n.id)
    except ShoalError as e:
        raise _as_docker(e) from None


async def listed(engine: Any, filters: dict[str, list[str]], local_ids: set[str]) -> list[dict[str, Any]]:
    """The swarm's networks for GET /networks on a manager (those a local copy already shows are left out)."""
    ops = manager_networks(engine)
    if ops is None:
        return []
    try:
        if not await _leader_known(ops):
            raise Unavailable("no raft leader elected")
        networks = await ops.list()
    except Unavailable:  # no quorum: list from this manager's copy rather than fail the local networks too
        networks = sorted(ops.raft.store.view().list("network"), key=lambda n: (n.spec.annotations.name, n.id))
    out = []
    for n in networks:
        if n.id in local_ids:
            continue
        doc = network_json(n)
        if matches(doc, filters):
            out.append(doc)
    return out


def matches(doc: dict[str, Any], filters: dict[str, list[str]]) -> bool:
    """The local network filters (agent/network/controller.py's semantics) over a swarm network's JSON."""
    def any_of(key: str, test: Any) -> bool:
        values = filters.get(key)
        return not values or any(test(v) for v in values)

    labels = doc["Labels"] or {}

    def label(value: str) -> bool:
        k, _, want = value.partition("=")
        return k in labels and ("=" not in value or labels[k] == want)

    if filters.get("dangling"):
        return False  # a swarm network's use is the cluster's, not this node's
    return (any_of("driver", lambda v: doc["Driver"] == v) and any_of("id", lambda v: doc["Id"].startswith(v))
            and any_of("name", lambda v: v in doc["Name"]) and any_of("scope", lambda v: doc["Scope"] == v)
            and any_of("type", lambda v: v == "custom") and all(label(v) for v in filters.get("label", [])))


def network_json(n: pb.Network) -> dict[str, Any]:
    """moby's BasicNetworkFromGRPC: what `docker network inspect` shows for a swarm network on a manager."""
    ipam = n.ipam if n.ipam.configs else n.spec.ipam
    configs = []
    for c in ipam.configs:
        entry = {"Subnet": c.subnet}
        if c.range:
            entry["IPRange"] = c.range
        if c.gateway:
            entry["Gateway"] = c.gateway
        configs.append(entry)
    options = dict(n.spec.driver_options)
    if n.vni:
        options[VXLANID_OPTION] = str(n.vni)
    return {
        "Name": n.spec.annotations.name,
        "Id": n.id,
        "Created": n.meta.created_at.ToJsonString() if n.meta.HasField("created_at") else _ZERO_TIME,
        "Scope": "swarm",
        "Driver": n.spec.driver or "overlay",
        "EnableIPv4": True,
        "EnableIPv6": n.spec.ipv6_enabled,
        "IPAM": {"Driver": ipam.driver or "default", "Options": dict(ipam.options) or None, "Config": configs},
        "Internal": n.spec.internal,
        "Attachable": n.spec.attachable,
        "Ingress": n.spec.ingress,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": None,
        "Options": options,
        "Labels": dict(n.spec.annotations.labels) or None,
    }
