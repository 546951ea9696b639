"""Overlay networks in the control API (swarmkit's controlapi/network.go and resourceapi): NetworkOps, the plain
operations (validation with swarm's wording, create/get/list/remove, attachments for containers), used by the gRPC
Control methods (NetworkControl, mixed into controlapi.ControlServicer), by the ResourceAllocator service that workers
call, and in-process by a manager's local API (shoal/api/swarm_networks.py). Allocation is manager/allocator/'s."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Network, ip_address, ip_network
from typing import Any

import grpc

from common.errdefs import Conflict, Forbidden, InvalidParameter, NotFound, Precondition, ShoalError, Unavailable
from manager.allocator.core import (
    ATTACHMENT_LABEL,
    default_pools,
    network_subnet,
    overlap_message,
    task_dead,
    vni_in_use_message,
)
from manager.allocator.pools import VXLANID_OPTION, AllocationError, parse_vni_option, pick_subnet
from manager.configs import new_id
from manager.grpcstatus import abort
from manager.raft.core import RaftError
from manager.store.errors import NAME_CONFLICT, StoreError
from proto import control_pb2, control_pb2_grpc, objects_pb2 as pb

_DNS_NAME = re.compile(r"^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$")  # swarmkit's isValidDNSName
ALLOCATION_WAIT_S = 10.0  # how long create/attach wait for the leader's allocator before answering anyway
POLL_S = 0.02
INGRESS_NAME = "ingress"
OVERLAY = "overlay"


# ---------------------------------------------------------------------------------------------- validation
def validate_network_spec(spec: pb.NetworkSpec) -> None:
    """swarmkit's validateNetworkSpec with its messages, for what shoal supports (one IPv4 config, overlay)."""
    name = spec.annotations.name
    if spec.attachable and spec.ingress:
        raise InvalidParameter("ingress network cannot be attachable")
    if name == "":
        raise InvalidParameter("meta: name must be provided")
    if not _DNS_NAME.match(name):
        raise InvalidParameter("name must be valid as a DNS name component")
    if len(name) > 63:
        raise InvalidParameter("name must be 63 characters or fewer")
    if spec.driver not in ("", OVERLAY):
        raise InvalidParameter(f"network driver {spec.driver!r} is not supported for swarm networks: only {OVERLAY!r}")
    if spec.ipv6_enabled:
        raise InvalidParameter("IPv6 is not supported on swarm networks")
    if spec.ipam.driver not in ("", "default"):
        raise InvalidParameter(f"ipam driver {spec.ipam.driver!r} is not supported: only 'default'")
    if len(spec.ipam.configs) > 1:
        raise InvalidParameter(f"only one IPAM configuration is supported on swarm networks, got {len(spec.ipam.configs)}")
    for cfg in spec.ipam.configs:
        validate_ipam_config(cfg)
    given = spec.driver_options.get(VXLANID_OPTION, "")
    if given:
        try:
            parse_vni_option(given)
        except AllocationError as e:
            raise InvalidParameter(e.message) from None
    mtu = spec.driver_options.get("com.docker.network.driver.mtu", "")
    if mtu and (not mtu.isdigit() or not 68 <= int(mtu) <= 65535):
        raise InvalidParameter(f"invalid mtu {mtu!r}: it must be a number from 68 to 65535")


def validate_ipam_config(cfg: pb.IPAMConfig) -> None:
    """swarmkit's validateIPAMConfiguration, same wording."""
    if cfg.subnet == "" and (cfg.range or cfg.gateway):
        raise InvalidParameter("ipam configuration: cannot be empty")
    if cfg.subnet == "":
        return
    subnet = _cidr(cfg.subnet)
    if subnet is None:
        raise InvalidParameter(f"ipam configuration: invalid subnet {cfg.subnet}")
    if cfg.range:
        rng = _cidr(cfg.range)
        if rng is None:
            raise InvalidParameter(f"ipam configuration: invalid range {cfg.range}")
        if not rng.subnet_of(subnet):
            raise InvalidParameter(f"ipam configuration: subnet {cfg.subnet} does not contain range {cfg.range}")
    if cfg.gateway:
        try:
            gw = ip_address(cfg.gateway)
        except ValueError:
            raise InvalidParameter(f"ipam configuration: invalid gateway {cfg.gateway}") from None
        if not isinstance(gw, IPv4Address) or gw not in subnet:
            raise InvalidParameter(f"ipam configuration: subnet {cfg.subnet} does not contain gateway {cfg.gateway}")


def _cidr(text: str) -> IPv4Network | None:
    if "/" not in text:
        return None
    try:
        net = ip_network(text, strict=False)
    except ValueError:
        return None
    return net if isinstance(net, IPv4Network) else None


def check_against_store(spec: pb.NetworkSpec, networks: list[pb.Network], cluster: pb.Cluster | None = None) -> None:
    """What the allocator would refuse for good, refused at create instead: an explicit subnet overlapping another
    network's, a given VNI in use, a second ingress network, default pools with no subnet left (routes on the
    leader are the allocator's to weigh)."""
    if spec.ingress:
        present = next((n for n in networks if n.spec.ingress), None)
        if present is not None:
            raise Conflict(f"ingress network ({present.id}) is already present")
    if spec.ipam.configs and spec.ipam.configs[0].subnet:
        subnet = _cidr(spec.ipam.configs[0].subnet)
        assert subnet is not None  # validated
        for n in networks:
            s = network_subnet(n)
            if s is not None and s.overlaps(subnet):
                raise InvalidParameter(overlap_message(subnet, n))
    else:
        taken = [x for x in (network_subnet(n) for n in networks) if x is not None]
        pools, size = default_pools(cluster)
        pick_subnet(pools, size, taken, [])  # AllocationError when every pool is used up
    given = spec.driver_options.get(VXLANID_OPTION, "")
    if given:
        vni = parse_vni_option(given)
        holder = next((n for n in networks if n.vni == vni or n.spec.driver_options.get(VXLANID_OPTION, "").split(",")[0].strip() == str(vni)), None)
        if holder is not None:
            raise InvalidParameter(vni_in_use_message(vni, holder))


def lookup_network(networks: list[pb.Network], ref: str) -> pb.Network:
    """Full id, then exact name, then a unique id prefix (moby's network lookup); NotFound otherwise."""
    for n in networks:
        if n.id == ref:
            return n
    named = [n for n in networks if n.spec.annotations.name == ref]
    if len(named) == 1:
        return named[0]
    prefixed = [n for n in networks if ref and n.id.startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    if len(named) + len(prefixed) > 1:
        raise InvalidParameter(f"network {ref} is ambiguous ({len(named) + len(prefixed)} matches found based on name or ID prefix)")
    raise NotFound(f"network {ref} not found")


def matches(n: pb.Network, f: control_pb2.ListNetworksRequest.Filters) -> bool:
    name = n.spec.annotations.name
    if f.names and name not in f.names:
        return False
    if f.name_prefixes and not any(name.startswith(p) for p in f.name_prefixes):
        return False
    if f.id_prefixes and not any(n.id.startswith(p) for p in f.id_prefixes):
        return False
    labels = n.spec.annotations.labels
    return all(k in labels and (v == "" or labels[k] == v) for k, v in f.labels.items())


def in_use_error(n: pb.Network, services: list[pb.Service], tasks: list[pb.Task]) -> str | None:
    """swarmkit's removeNetwork/removeIngressNetwork checks and wording."""
    if n.spec.ingress:
        for s in services:
            if any(p.publish_mode == pb.PortConfig.INGRESS for p in s.spec.endpoint.ports):
                return f"ingress network cannot be removed because service {s.id} depends on it"
        return None
    for s in services:
        if any(_targets(c.target, n) for c in s.spec.task.networks):
            return f"network {n.id} is in use by service {s.id}"
    for t in tasks:
        uses = any(_targets(c.target, n) for c in t.spec.networks) or any(a.network.id == n.id for a in t.networks)
        if uses and t.desired_state <= pb.TASK_STATE_COMPLETE and t.status.state <= pb.TASK_STATE_RUNNING:
            return f"network {n.id} is in use by task {t.id}"
    return None


def _targets(target: str, n: pb.Network) -> bool:
    return target in (n.id, n.spec.annotations.name)


# ---------------------------------------------------------------------------------------------- operations
class NetworkOps:
    """The network operations over a RaftManager (writes forwarded to the leader by propose, reads linearizable)."""

    def __init__(self, raft: Any, allocation_wait_s: float = ALLOCATION_WAIT_S) -> None:
        self.raft = raft
        self.allocation_wait_s = allocation_wait_s

    async def _propose(self, fn: Callable[[Any], Any]) -> Any:
        try:
            return await self.raft.propose(fn)
        except RaftError as e:  # no leader, leadership lost, timed out: the client may retry
            raise Unavailable(f"rpc error: code = Unavailable desc = {e}") from None

    async def _read(self, fn: Callable[[Any], Any]) -> Any:
        try:
            return await self.raft.read(fn)
        except RaftError as e:
            raise Unavailable(f"rpc error: code = Unavailable desc = {e}") from None

    async def create(self, spec: pb.NetworkSpec, wait: bool = True) -> pb.Network:
        validate_network_spec(spec)
        n = pb.Network(id=new_id(), spec=spec)
        if not n.spec.driver:
            n.spec.driver = OVERLAY

        def create(tx: Any) -> None:
            try:
                clusters = tx.list("cluster")
                check_against_store(n.spec, tx.list("network"), clusters[0] if clusters else None)
            except AllocationError as e:
                raise InvalidParameter(e.message) from None
            tx.create("network", n)

        try:
            await self._propose(create)
        except StoreError as e:
            if e.message == NAME_CONFLICT:
                raise Conflict(f"network with name {spec.annotations.name} already exists") from None
            raise
        if wait:
            allocated = await self._until(lambda v: (x := v.get("network", n.id)) is not None and x.vni != 0 and x or None)
            if allocated is not None:
                return allocated
        return self.raft.store.view().get("network", n.id) or n

    async def create_ingress(self) -> pb.Network:
        """The default ingress network swarm init makes (swarmkit's newIngressNetwork: a subnet from the pool)."""
        spec = pb.NetworkSpec(driver=OVERLAY, ingress=True)
        spec.annotations.name = INGRESS_NAME
        return await self.create(spec, wait=False)

    async def get(self, ref: str) -> pb.Network:
        if not ref:
            raise InvalidParameter("invalid argument")
        return await self._read(lambda v: lookup_network(v.list("network"), ref))

    async def list(self, filters: control_pb2.ListNetworksRequest.Filters | None = None) -> list[pb.Network]:
        f = filters or control_pb2.ListNetworksRequest.Filters()
        networks = await self._read(lambda v: v.list("network"))
        return sorted((n for n in networks if matches(n, f)), key=lambda n: (n.spec.annotations.name, n.id))

    async def remove(self, ref: str) -> pb.Network:
        if not ref:
            raise InvalidParameter("invalid argument")
        found: dict[str, pb.Network] = {}

        def remove(tx: Any) -> None:
            n = lookup_network(tx.list("network"), ref)
            why = in_use_error(n, tx.list("service"), tx.list("task"))
            if why is not None:
                raise Precondition(why)
            tx.remove("network", n.id)
            found["n"] = n

        await self._propose(remove)
        return found["n"]

    async def attach(self, config: pb.NetworkAttachmentConfig, container_id: str, node_id: str) -> tuple[str, pb.NetworkAttachment]:
        """swarmkit's ResourceAllocator.AttachNetwork: a task holding an address for a container; waits (bounded)
        for the allocator and returns its attachment (empty if the allocator did not answer in time)."""
        if not config.target or not container_id:
            raise InvalidParameter("invalid argument")
        n = await self._read(lambda v: _find(v.list("network"), config.target))
        if n is None:
            raise NotFound(f"network {config.target} not found")
        if not n.spec.attachable:
            raise Forbidden(f"network {config.target} not manually attachable")
        t = pb.Task(id=new_id(), node_id=node_id, desired_state=pb.TASK_STATE_RUNNING)
        t.annotations.labels[ATTACHMENT_LABEL] = container_id
        t.spec.networks.add(target=n.id, addresses=config.addresses, aliases=config.aliases)
        t.status.state = pb.TASK_STATE_NEW
        t.status.message = "created"
        t.status.timestamp.FromNanoseconds(time.time_ns())
        await self._propose(lambda tx: tx.create("task", t))

        def done(v: Any) -> Any:
            cur = v.get("task", t.id)
            if cur is None:
                return None
            if cur.status.err:
                return cur
            return cur if cur.networks and cur.networks[0].addresses else None

        cur = await self._until(done)
        if cur is not None and cur.status.err and not cur.networks:
            # the allocation failed: do not leave the attachment behind
            await self._propose(lambda tx: tx.remove("task", t.id) if tx.get("task", t.id) else None)
            raise InvalidParameter(f"could not attach to network {config.target}: {cur.status.err}")
        return t.id, (cur.networks[0] if cur is not None and cur.networks else pb.NetworkAttachment())

    async def detach(self, attachment_id: str, node_id: str | None) -> None:
        if not attachment_id:
            raise InvalidParameter("invalid argument")

        def detach(tx: Any) -> None:
            t = tx.get("task", attachment_id)
            if t is None or ATTACHMENT_LABEL not in t.annotations.labels:
                raise NotFound(f"attachment {attachment_id} not found")
            if node_id is not None and t.node_id != node_id:
                raise Forbidden(f"attachment {attachment_id} doesn't belong to this node")
            tx.remove("task", attachment_id)

        await self._propose(detach)

    async def _until(self, probe: Callable[[Any], Any]) -> Any:
        deadline = time.monotonic() + self.allocation_wait_s
        while True:
            got = probe(self.raft.store.view())
            if got is not None or time.monotonic() >= deadline:
                return got
            await asyncio.sleep(POLL_S)


def _find(networks: list[pb.Network], ref: str) -> pb.Network | None:
    try:
        return lookup_network(networks, ref)
    except (NotFound, InvalidParameter):
        return None


def attachments_of_node(tasks: list[pb.Task], node_id: str) -> list[pb.Task]:
    """The live container attachments a node holds (for a worker's network list)."""
    return [t for t in tasks if ATTACHMENT_LABEL in t.annotations.labels and t.node_id == node_id and not task_dead(t)]


# ---------------------------------------------------------------------------------------------- gRPC
async def _rpc(ctx: grpc.aio.ServicerContext, coro: Any) -> Any:
    try:
        return await coro
    except (ShoalError, StoreError, RaftError) as e:
        await abort(ctx, e)
        raise


class NetworkControl:
    """The Control service's network RPCs; mixed into manager.controlapi.ControlServicer (which sets self.m)."""

    m: Any

    def _networks(self) -> NetworkOps:
        ops = getattr(self, "_network_ops", None)
        if ops is None:
            ops = NetworkOps(self.m)
            self._network_ops = ops
        return ops

    async def CreateNetwork(self, request: control_pb2.CreateNetworkRequest, context: grpc.aio.ServicerContext) -> control_pb2.CreateNetworkResponse:
        n = await _rpc(context, self._networks().create(request.spec))
        return control_pb2.CreateNetworkResponse(network=n)

    async def GetNetwork(self, request: control_pb2.GetNetworkRequest, context: grpc.aio.ServicerContext) -> control_pb2.GetNetworkResponse:
        n = await _rpc(context, self._networks().get(request.network_id))
        return control_pb2.GetNetworkResponse(network=n)

    async def ListNetworks(self, request: control_pb2.ListNetworksRequest, context: grpc.aio.ServicerContext) -> control_pb2.ListNetworksResponse:
        networks = await _rpc(context, self._networks().list(request.filters))
        return control_pb2.ListNetworksResponse(networks=networks)

    async def RemoveNetwork(self, request: control_pb2.RemoveNetworkRequest, context: grpc.aio.ServicerContext) -> control_pb2.RemoveNetworkResponse:
        await _rpc(context, self._networks().remove(request.network_id))
        return control_pb2.RemoveNetworkResponse()


class ResourceAllocatorServicer(control_pb2_grpc.ResourceAllocatorServicer):
    """AttachNetwork/DetachNetwork for any node of the swarm; the node is the one its certificate names."""

    def __init__(self, ops: NetworkOps, auth: Any) -> None:
        self.ops = ops
        self.auth = auth

    async def AttachNetwork(self, request: control_pb2.AttachNetworkRequest, context: grpc.aio.ServicerContext) -> control_pb2.AttachNetworkResponse:
        who = await self.auth.check(context, managers_only=False)
        aid, att = await _rpc(context, self.ops.attach(request.config, request.container_id, who.node_id))
        return control_pb2.AttachNetworkResponse(attachment_id=aid, attachment=att)

    async def DetachNetwork(self, request: control_pb2.DetachNetworkRequest, context: grpc.aio.ServicerContext) -> control_pb2.DetachNetworkResponse:
        who = await self.auth.check(context, managers_only=False)
        await _rpc(context, self.ops.detach(request.attachment_id, who.node_id))
        return control_pb2.DetachNetworkResponse()
