"""The allocator's sans-IO core: from a store view (networks, services, tasks, nodes, cluster) to the updates to
propose: network subnets and VNIs, service VIPs and ingress ports, node ingress IPs, task attachments (NEW -> PENDING).
runner.py feeds it on the leader; pools.py and ports.py hold the address/VNI/port arithmetic."""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_interface, ip_network
from typing import Any, Protocol

from google.protobuf.message import Message

from proto import objects_pb2 as pb

from .pools import (
    DEFAULT_QUARANTINE_S,
    VXLANID_OPTION,
    AllocationError,
    NetPool,
    next_vni,
    parse_vni_option,
    pick_subnet,
)
from .ports import DNSRR, INGRESS, PortAllocator, endpoint_spec_error

log = logging.getLogger(__name__)

NEW = pb.TASK_STATE_NEW
PENDING = pb.TASK_STATE_PENDING
RUNNING = pb.TASK_STATE_RUNNING
ALLOCATED_MESSAGE = "pending task scheduling"  # swarmkit's status message once a task is allocated
DEFAULT_POOLS = ("10.0.0.0/8",)
DEFAULT_SUBNET_SIZE = 24
# A task with no service that only holds an address for a container on an attachable network (swarmkit's
# NetworkAttachmentSpec): the label carries the container id. Agents run nothing for it.
ATTACHMENT_LABEL = "com.docker.swarm.network.attachment.container"


class View(Protocol):
    def get(self, kind: str, object_id: str) -> Message | None: ...
    def list(self, kind: str) -> list[Message]: ...


@dataclass(slots=True)
class Plan:
    """What one pass decided: objects to write (copies with the version read), and what could not be done."""

    updates: list[tuple[str, Message]] = field(default_factory=list)
    removals: list[tuple[str, str]] = field(default_factory=list)  # (kind, id): attachments of removed nodes
    failures: dict[str, str] = field(default_factory=dict)  # object id -> why it is not allocated
    duplicates: list[str] = field(default_factory=list)  # addresses held twice in the store (must stay empty)


def task_dead(t: pb.Task) -> bool:
    """swarmkit's taskDead: both the desired and the observed state are past running; its addresses are free."""
    return t.desired_state > RUNNING and t.status.state > RUNNING


def is_attachment_task(t: pb.Task) -> bool:
    return not t.service_id and ATTACHMENT_LABEL in t.annotations.labels


def network_subnet(n: pb.Network) -> IPv4Network | None:
    cfgs = n.ipam.configs or n.spec.ipam.configs
    if not cfgs or not cfgs[0].subnet:
        return None
    try:
        net = ip_network(cfgs[0].subnet, strict=False)
    except ValueError:
        return None
    return net if isinstance(net, IPv4Network) else None


def resolve_network(networks: list[pb.Network], target: str) -> pb.Network | None:
    """A network attachment's target: a full id, else a name, else a unique id prefix (moby's lookup order)."""
    for n in networks:
        if n.id == target:
            return n
    for n in networks:
        if n.spec.annotations.name == target:
            return n
    prefixed = [n for n in networks if target and n.id.startswith(target)]
    return prefixed[0] if len(prefixed) == 1 else None


@functools.lru_cache(maxsize=1 << 17)
def _addr(text: str) -> IPv4Address | None:
    # every pass re-reads every held address: parsing them each time was most of a pass
    try:
        iface = ip_interface(text)
    except ValueError:
        return None
    return iface.ip if isinstance(iface, IPv4Interface) else None


def _copy(msg: Any) -> Any:
    dup = type(msg)()
    dup.CopyFrom(msg)
    return dup


def _stamp(status: pb.TaskStatus, now: float) -> None:
    status.timestamp.FromNanoseconds(int(now * 1e9))


class Allocator:
    """Leader-side allocation state: address pools per network (cursor and quarantine; the held addresses
    themselves are re-read from the store every pass), the dynamic port cursor and the last VNI."""

    def __init__(self, quarantine_s: float = DEFAULT_QUARANTINE_S) -> None:
        self.quarantine_s = quarantine_s
        self.pools: dict[str, NetPool] = {}
        self.ports = PortAllocator()
        self.last_vni = 0

    # ------------------------------------------------------------------ the pass
    def plan(self, view: View, now: float, routes: list[IPv4Network] | None = None) -> Plan:
        plan = Plan()
        clusters = view.list("cluster")
        networks = view.list("network")
        services = view.list("service")
        tasks = view.list("task")
        nodes = view.list("node")
        cluster = clusters[0] if clusters else None

        written: dict[str, pb.Network] = {}
        for n in sorted(networks, key=_network_order):
            if n.vni:
                continue
            try:
                self._allocate_network(n, networks, cluster, routes or [])
            except AllocationError as e:
                plan.failures[n.id] = e.message
                log.warning("allocator: network %s (%s): %s", n.spec.annotations.name, n.id, e.message)
                continue
            written[n.id] = n
            plan.updates.append(("network", n))
        self._sync_pools(networks, services, tasks, nodes, now, plan)
        by_id = {n.id: n for n in networks}
        allocated = [n for n in networks if _allocated(n)]
        ingress = next((n for n in allocated if n.spec.ingress), None)

        self.ports.sync(services)
        names = {s.id: s.spec.annotations.name for s in services}
        service_errors: dict[str, str] = {}
        ready_services: set[str] = set()
        for s in sorted(services, key=lambda s: s.id):
            try:
                changed = self._allocate_service(s, allocated, ingress, names, now)
            except AllocationError as e:
                service_errors[s.id] = e.message
                plan.failures[s.id] = e.message
                continue
            ready_services.add(s.id)
            if changed:
                plan.updates.append(("service", s))
        svc_by_id = {s.id: s for s in services}

        if ingress is not None:
            for node in nodes:
                if node.attachment.network.id == ingress.id and node.attachment.addresses:
                    continue
                if node.status.state != pb.NodeStatus.READY:
                    # a joining node's record is still being written (certificate, raft join, registration):
                    # writing it now would make those writes fail out of sequence
                    continue
                try:
                    addr = self._pool(ingress).allocate(now, self.quarantine_s)
                except AllocationError as e:
                    plan.failures[node.id] = e.message
                    continue
                node.attachment.network.CopyFrom(ingress)
                del node.attachment.addresses[:]
                node.attachment.addresses.append(f"{addr}/{self._pool(ingress).subnet.prefixlen}")
                plan.updates.append(("node", node))

        node_ids = {n.id for n in nodes}
        for t in tasks:
            # a container attachment outlives nothing: its node left the swarm, so its address goes back
            if is_attachment_task(t) and t.node_id and t.node_id not in node_ids:
                plan.removals.append(("task", t.id))
        for t in sorted(tasks, key=lambda t: (t.meta.created_at.ToNanoseconds(), t.id)):
            if t.status.state != NEW or t.desired_state > pb.TASK_STATE_COMPLETE:  # a job's task: desired COMPLETE
                continue
            if ("task", t.id) in plan.removals:
                continue
            service = svc_by_id.get(t.service_id) if t.service_id else None
            if t.service_id:
                if service is None:
                    continue  # the orchestrator removes tasks of a removed service
                if t.service_id not in ready_services:
                    self._task_error(t, service_errors.get(t.service_id, ""), now, plan)
                    continue
            try:
                attachments = self._allocate_task(t, service, networks, by_id, ingress, now)
            except _Wait:
                continue
            except AllocationError as e:
                self._task_error(t, e.message, now, plan)
                continue
            del t.networks[:]
            t.networks.extend(attachments)
            if service is not None:  # the service's VIPs and ports travel with the task (swarmkit does the same)
                t.endpoint.CopyFrom(service.endpoint)
            t.status.state = PENDING
            t.status.message = ALLOCATED_MESSAGE
            t.status.err = ""
            _stamp(t.status, now)
            plan.updates.append(("task", t))
        return plan

    # ------------------------------------------------------------------ networks
    def _allocate_network(self, n: pb.Network, networks: list[pb.Network], cluster: pb.Cluster | None,
                          routes: list[IPv4Network]) -> None:
        others = [m for m in networks if m.id != n.id]
        used_vnis = {m.vni for m in others if m.vni}
        taken = [s for s in (network_subnet(m) for m in others) if s is not None]
        cfg = n.spec.ipam.configs[0] if n.spec.ipam.configs else pb.IPAMConfig()
        if cfg.subnet:
            subnet = explicit_subnet(cfg.subnet)
            clash = next((m for m in others if (s := network_subnet(m)) is not None and s.overlaps(subnet)), None)
            if clash is not None:
                raise AllocationError(overlap_message(subnet, clash))
        else:
            pools, size = default_pools(cluster)
            subnet = pick_subnet(pools, size, taken, routes)
        gateway = gateway_for(subnet, cfg.gateway)
        given = n.spec.driver_options.get(VXLANID_OPTION, "")
        if given:
            vni = parse_vni_option(given)
            holder = next((m for m in others if m.vni == vni), None)
            if holder is not None:
                raise AllocationError(vni_in_use_message(vni, holder))
        else:
            vni = next_vni(used_vnis, self.last_vni)
            self.last_vni = vni
        n.vni = vni
        n.ipam.driver = n.spec.ipam.driver or "default"
        del n.ipam.configs[:]
        n.ipam.configs.add(subnet=str(subnet), gateway=str(gateway), range=cfg.range)
        self.pools[n.id] = NetPool(subnet, gateway, _range(cfg.range, subnet))

    def _pool(self, n: pb.Network) -> NetPool:
        pool = self.pools.get(n.id)
        if pool is None:
            cfg = n.ipam.configs[0]
            subnet = ip_network(cfg.subnet, strict=False)
            assert isinstance(subnet, IPv4Network)
            pool = NetPool(subnet, _addr(cfg.gateway) if cfg.gateway else None, _range(cfg.range, subnet))
            self.pools[n.id] = pool
        return pool

    def _sync_pools(self, networks: list[pb.Network], services: list[pb.Service], tasks: list[pb.Task],
                    nodes: list[pb.Node], now: float, plan: Plan) -> None:
        """Re-read every held address from the store; what was held and no longer is goes to quarantine."""
        held: dict[str, dict[IPv4Address, str]] = {}
        dead: dict[str, set[IPv4Address]] = {}

        def claim(nid: str, text: str, owner: str) -> None:
            a = _addr(text)
            if a is None:
                return
            holders = held.setdefault(nid, {})
            if a in holders and holders[a] != owner:
                plan.duplicates.append(f"{a} on network {nid} held by {holders[a]} and {owner}")
            holders.setdefault(a, owner)

        for s in services:
            for vip in s.endpoint.virtual_ips:
                claim(vip.network_id, vip.addr, f"service {s.id}")
        for t in tasks:
            for att in t.networks:
                for text in att.addresses:
                    if task_dead(t):
                        if (a := _addr(text)) is not None:
                            dead.setdefault(att.network.id, set()).add(a)
                    else:
                        claim(att.network.id, text, f"task {t.id}")
        for node in nodes:
            for text in node.attachment.addresses:
                claim(node.attachment.network.id, text, f"node {node.id}")
        live = {n.id for n in networks if _allocated(n)}
        for nid in list(self.pools):
            if nid not in live:
                del self.pools[nid]
        for n in networks:
            if not _allocated(n):
                continue
            fresh = n.id not in self.pools
            pool = self._pool(n)
            in_use = set(held.get(n.id, {}))
            if fresh:
                # a (new) leader: addresses of dead tasks still in the store were freed recently
                pool.used = {a for a in in_use if a in pool.subnet}
                pool.quarantine = {a: now for a in dead.get(n.id, set()) - in_use if a in pool.subnet}
                pool.cursor = max((int(a) for a in pool.used), default=None)
                if pool.cursor is not None:
                    pool.cursor += 1
            else:
                pool.sync(in_use, now, self.quarantine_s)

    # ------------------------------------------------------------------ services
    def _allocate_service(self, s: pb.Service, allocated: list[pb.Network], ingress: pb.Network | None,
                          names: dict[str, str], now: float) -> bool:
        """Fills s.endpoint (VIPs and ports); True if it changed. All or nothing."""
        invalid = endpoint_spec_error(s.spec.endpoint)
        if invalid is not None:  # the control API refuses it; a spec that reached the store by another path too
            raise AllocationError(invalid)
        wanted: list[pb.Network] = []
        if s.spec.endpoint.mode != DNSRR:
            for target in s.spec.task.networks:
                n = resolve_network(allocated, target.target)
                if n is None:
                    raise AllocationError(f"network {target.target} not found or not allocated yet")
                if n.id not in {w.id for w in wanted}:
                    wanted.append(n)
        needs_ingress = any(p.publish_mode == INGRESS for p in s.spec.endpoint.ports)
        if needs_ingress:
            if ingress is None:
                raise AllocationError("ingress network is missing")
            if ingress.id not in {w.id for w in wanted}:
                wanted.append(ingress)
        ports = self.ports.allocate(s, names)
        current = {v.network_id: v.addr for v in s.endpoint.virtual_ips}
        vips: list[pb.VirtualIP] = []
        fresh: list[tuple[NetPool, IPv4Address]] = []
        try:
            for n in wanted:
                pool = self._pool(n)
                old = current.get(n.id)
                if old and (a := _addr(old)) is not None and a in pool.used:
                    vips.append(pb.VirtualIP(network_id=n.id, addr=old))
                    continue
                a = pool.allocate(now, self.quarantine_s)
                fresh.append((pool, a))
                vips.append(pb.VirtualIP(network_id=n.id, addr=f"{a}/{pool.subnet.prefixlen}"))
        except AllocationError:
            for pool, a in fresh:
                pool.used.discard(a)
            raise
        endpoint = pb.Endpoint(spec=s.spec.endpoint, ports=ports, virtual_ips=vips)
        if endpoint == s.endpoint:
            return False
        s.endpoint.CopyFrom(endpoint)
        return True

    # ------------------------------------------------------------------ tasks
    def _allocate_task(self, t: pb.Task, service: pb.Service | None, networks: list[pb.Network],
                       by_id: dict[str, pb.Network], ingress: pb.Network | None, now: float) -> list[pb.NetworkAttachment]:
        configs = list(t.spec.networks)
        if service is not None and any(p.publish_mode == INGRESS for p in service.spec.endpoint.ports) and ingress is not None:
            if not any(resolve_network(networks, c.target) is ingress or c.target == ingress.id for c in configs):
                configs.append(pb.NetworkAttachmentConfig(target=ingress.id))
        held = {a.network.id: a for a in t.networks if a.addresses}
        out: list[pb.NetworkAttachment] = []
        fresh: list[tuple[NetPool, IPv4Address]] = []
        try:
            for c in configs:
                n = resolve_network(networks, c.target)
                if n is None:
                    raise AllocationError(f"network {c.target} not found")
                if not _allocated(n):
                    raise _Wait()
                if n.id in {o.network.id for o in out}:
                    continue
                pool = self._pool(n)
                if n.id in held:  # kept from an earlier pass (the task's state write failed then)
                    att = _copy(held[n.id])
                    att.network.CopyFrom(by_id[n.id])
                    out.append(att)
                    continue
                requested = [a for a in (_addr(x) for x in c.addresses) if a is not None]
                a = pool.allocate(now, self.quarantine_s, requested[0] if requested else None)
                fresh.append((pool, a))
                out.append(pb.NetworkAttachment(network=n, addresses=[f"{a}/{pool.subnet.prefixlen}"], aliases=c.aliases))
        except (AllocationError, _Wait):
            for pool, a in fresh:
                pool.used.discard(a)
            raise
        return out

    def _task_error(self, t: pb.Task, message: str, now: float, plan: Plan) -> None:
        if not message:
            return
        plan.failures[t.id] = message
        if t.status.err == message:
            return  # already written: no proposal per pass for the same failure
        t.status.err = message
        t.status.message = "pending task allocation"
        _stamp(t.status, now)
        plan.updates.append(("task", t))


class _Wait(Exception):
    """A network the task needs is not allocated yet: try again at a later pass, nothing to report."""


def _allocated(n: pb.Network) -> bool:
    return bool(n.vni and n.ipam.configs and n.ipam.configs[0].subnet)


def default_pools(cluster: pb.Cluster | None) -> tuple[list[IPv4Network], int]:
    """The cluster's default address pools and subnet size (swarm init --default-addr-pool), else 10.0.0.0/8 in /24s."""
    nets = [ip_network(p, strict=False) for p in (cluster.default_address_pool if cluster else [])] or \
        [ip_network(p) for p in DEFAULT_POOLS]
    size = cluster.subnet_size if cluster and cluster.subnet_size else DEFAULT_SUBNET_SIZE
    return [p for p in nets if isinstance(p, IPv4Network)], size


def _network_order(n: pb.Network) -> tuple[int, int, str]:
    # ingress first (it gets the pool's first subnet at init), then in creation order
    return (0 if n.spec.ingress else 1, n.meta.created_at.ToNanoseconds(), n.id)


def _range(text: str, subnet: IPv4Network) -> IPv4Network | None:
    if not text:
        return None
    try:
        r = ip_network(text, strict=False)
    except ValueError:
        return None
    return r if isinstance(r, IPv4Network) and r.subnet_of(subnet) else None


def explicit_subnet(text: str) -> IPv4Network:
    try:
        net = ip_network(text, strict=False)
    except ValueError:
        raise AllocationError(f"ipam configuration: invalid subnet {text}") from None
    if not isinstance(net, IPv4Network):
        raise AllocationError(f"ipam configuration: invalid subnet {text}: only IPv4 is supported")
    return net


def gateway_for(subnet: IPv4Network, given: str) -> IPv4Address:
    if given:
        gw = _addr(given)
        if gw is None or gw not in subnet:
            raise AllocationError(f"ipam configuration: subnet {subnet} does not contain gateway {given}")
        return gw
    return subnet.network_address + 1 if subnet.prefixlen < 31 else subnet.network_address


def overlap_message(subnet: IPv4Network, clash: pb.Network) -> str:
    """libnetwork's overlap wording, with what it overlaps (Docker's swarm only logs it and leaves the network unusable)."""
    return (f"invalid pool request: Pool overlaps with other one on this address space: "
            f"subnet {subnet} overlaps network {clash.spec.annotations.name} ({network_subnet(clash)})")


def vni_in_use_message(vni: int, holder: pb.Network) -> str:
    return f"vxlan id {vni} is already in use by network {holder.spec.annotations.name}"
