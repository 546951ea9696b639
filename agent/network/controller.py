"""Local networks of one node: predefined bridge/host/none, user networks, address pools, endpoints.

Owns NetworkRecords and their AddressPools (persisted through the node's record store) and asks
the driver registry (agent.network.drivers) for everything driver-specific; the sandbox
(agent.network.sandbox) and the engine (shoal.engine) call it for containers.
"""
from __future__ import annotations

import ipaddress
import logging
import secrets
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from agent.network import bridge as kernel
from agent.network import firewall, plan
from agent.network.firewall_live import Firewall
from agent.network.drivers import Driver, Join, Registry, default_registry
from agent.network.drivers.bridge import OPT_BRIDGE_NAME, OPT_MTU, bridge_name, default_bridge_options
from agent.network.plan import check_network_name, check_static_ip, check_usable_subnet, rebuild_pool
from agent.network.records import EndpointRecord, IPAMConfig, NetworkRecord, network_from_dict, to_dict
from common import failpoint
from common.errdefs import (
    Conflict,
    Forbidden,
    InvalidParameter,
    NotFound,
    ShoalError,
    SystemError_,
)
from common.ipam import (
    AddressPool,
    IPAMError,
    PoolOverlap,
    check_overlap,
    parse_pool_config,
    pick_free_subnet,
)
from common.mac import mac_from_ip
from common.timefmt import now_rfc3339

log = logging.getLogger(__name__)

# The predefined networks and their drivers (Docker's names).
PREDEFINED = {"bridge": "bridge", "host": "host", "none": "null"}
DEFAULT_NETWORK = "bridge"  # NetworkMode "default"


class RecordStore(Protocol):
    """Where records are kept (shoal.engine.state.StateDir on a node)."""

    def save(self, kind: str, object_id: str, data: dict[str, Any]) -> None: ...
    def delete(self, kind: str, object_id: str) -> None: ...
    def load_records(self, kind: str, parse: Callable[[dict[str, Any]], Any]) -> dict[str, Any]: ...


@dataclass(slots=True)
class NetworkOptions:
    bip: str = "172.17.0.1/16"  # the default bridge's gateway address and subnet
    mtu: int = 1500
    default_bridge_name: str = "docker0"


class NetworkController:
    def __init__(self, state: RecordStore, options: NetworkOptions, daemon_id: str = "",
                 drivers: Registry | None = None, clock: Callable[[], str] = now_rfc3339) -> None:
        self.state = state
        self.options = options
        # The ownership mark on kernel objects names the daemon too: two daemons sharing a
        # namespace never take each other's bridges for orphans.
        self.drivers = drivers or default_registry(f"shoal:{daemon_id[:12]}:", options.mtu)
        self.clock = clock
        self.networks: dict[str, NetworkRecord] = {}
        self.pools: dict[str, AddressPool] = {}
        # The engine knows which containers publish what; a full apply asks it (each port's
        # owner is its container); a container's start or exit changes only its own rules.
        self.published_ports: Callable[[], list[firewall.PublishedPort]] = list
        self.firewall = Firewall()
        # Sandbox work of different containers runs side by side (shoal.engine.kernelwork): what
        # they share here (IPAM pools and their files, docker_gwbridge's creation) is taken under
        # this lock. Node-wide work (create, remove, restore) runs alone.
        self.lock = threading.RLock()

    # ---- start-up -------------------------------------------------------------------
    def restore(self) -> None:
        """Loads persisted networks, makes the predefined ones, and re-asserts the kernel
        state: bridges of records are made again when missing, bridges carrying our mark with
        no record (a crash in create or remove) are deleted with their firewall rules, and a
        create that never committed (its record still pending) is undone, its bridge deleted
        even when the crash came before the mark. Idempotent, so a restart duplicates nothing."""
        # An unreadable record is moved aside by the store (named in `docker info`), not fatal.
        loaded = self.state.load_records("networks", network_from_dict)
        stale: list[str] = []
        for net_id, net in loaded.items():
            if net.pending:  # the daemon died inside `network create`: undo it
                log.info("network %s (%s): its create was not committed; undoing it", net.name, net_id[:12])
                if net.driver in self.drivers.names():
                    stale += self.driver(net).abandon(net)
                self.state.delete("networks", net_id)
                self.state.delete("ipam", net_id)
            else:
                self.networks[net_id] = net
        for net_id, pool in self.state.load_records("ipam", AddressPool.from_dict).items():
            if net_id in self.networks:
                self.pools[net_id] = pool
            else:  # a crash between the removal of a network's record and of its pool's
                self.state.delete("ipam", net_id)
        for name, driver in PREDEFINED.items():
            if self._by_name(name) is None:
                record = self._predefined(name, driver)
                self.driver(record).create_network(record, fresh=True)
                self._save(record)
        self._ensure_default_bridge_pool(self._by_name(DEFAULT_NETWORK))
        for net in self.networks.values():
            if net.id not in self.pools and net.ipam_config:
                config = net.ipam_config[0]
                self.pools[net.id] = parse_pool_config(config.subnet, config.gateway, config.ip_range)
        firewall.enable_ip_forward()
        orphans: list[str] = []
        for name in self.drivers.names():
            orphans += self.drivers.get(name).remove_orphans(set(self.networks))
        for net in self.networks.values():
            before = (net.adopted_bridge, net.gateway_added)
            self.driver(net).create_network(net, fresh=False)
            if (net.adopted_bridge, net.gateway_added) != before:
                self._save(net)
        if orphans:
            log.info("removed orphan bridges %s", ", ".join(orphans))
        self.apply_firewall(stale_bridges=stale + orphans)

    def remove_orphan_endpoints(self, live: Iterable[EndpointRecord]) -> list[str]:
        """Host-side veths carrying this daemon's mark whose endpoint is not live (not an
        endpoint with an address of a running container) are deleted; returns their names."""
        live_ids = plan.live_endpoint_ids(live)
        removed: list[str] = []
        for name in self.drivers.names():
            removed += self.drivers.get(name).remove_orphan_endpoints(live_ids)
        if removed:
            log.info("removed orphan veths %s", ", ".join(removed))
        return removed

    def rebuild_allocations(self, live: Iterable[EndpointRecord]) -> None:
        """IPAM from the endpoints that really exist (those of running containers): an
        address or a subnet held by a crash is free again, none in use is handed out twice."""
        by_network: dict[str, list[str]] = {}
        for endpoint in live:
            if endpoint.ipv4:
                by_network.setdefault(endpoint.network_id, []).append(endpoint.ipv4)
        for net_id, pool in list(self.pools.items()):
            rebuilt = rebuild_pool(pool, by_network.get(net_id, []))
            if rebuilt.used != pool.used:
                log.info("network %s: IPAM rebuilt from live endpoints (%d in use, was %d)",
                         net_id[:12], len(rebuilt.used), len(pool.used))
            self.pools[net_id] = rebuilt
            self._save_pool(net_id)

    def _predefined(self, name: str, driver: str) -> NetworkRecord:
        record = NetworkRecord(
            id=secrets.token_hex(32),
            name=name,
            driver=driver,
            created=self.clock(),
            predefined=True,
        )
        if name == DEFAULT_NETWORK:
            iface = ipaddress.ip_interface(self.options.bip)
            record.ipam_config = [IPAMConfig(subnet=str(iface.network), gateway=str(iface.ip))]
            record.options = default_bridge_options(self.options.default_bridge_name, self.options.mtu)
        return record

    def _ensure_default_bridge_pool(self, net: NetworkRecord) -> None:
        """The default bridge follows --bip and --mtu of the current start."""
        iface = ipaddress.ip_interface(self.options.bip)
        wanted = IPAMConfig(subnet=str(iface.network), gateway=str(iface.ip))
        changed = net.ipam_config != [wanted] or net.options.get(OPT_MTU) != str(self.options.mtu)
        if changed:
            net.ipam_config = [wanted]
            net.options[OPT_MTU] = str(self.options.mtu)
            self.pools.pop(net.id, None)
        if net.id not in self.pools:
            self.pools[net.id] = parse_pool_config(wanted.subnet, wanted.gateway)
        self._save(net)

    # ---- lookups --------------------------------------------------------------------
    def driver(self, net: NetworkRecord) -> Driver:
        return self.drivers.get(net.driver)

    def _by_name(self, name: str) -> NetworkRecord | None:
        for net in self.networks.values():
            if net.name == name:
                return net
        return None

    def lookup(self, ref: str, scope: str = "") -> NetworkRecord:
        candidates = list(self.networks.values())
        if scope:
            candidates = [n for n in candidates if n.scope == scope]
        for net in candidates:
            if net.id == ref:
                return net
        for net in candidates:
            if net.name == ref:
                return net
        matches = [n for n in candidates if ref and n.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidParameter(
                f"network {ref} is ambiguous ({len(matches)} matches found based on ID prefix)"
            )
        raise NotFound(f"network {ref} not found")

    def mode_driver(self, network_mode: str) -> Driver | None:
        """The driver of a container's NetworkMode, None when it names no network."""
        try:
            return self.driver(self.lookup(network_mode))
        except ShoalError:
            return None

    def is_default_bridge(self, net: NetworkRecord) -> bool:
        """Legacy links work only there (S13)."""
        return net.predefined and net.name == DEFAULT_NETWORK

    def list(self, filters: dict[str, list[str]]) -> list[NetworkRecord]:
        allowed = {"driver", "id", "label", "name", "scope", "type", "dangling"}
        for key in filters:
            if key not in allowed:
                raise InvalidParameter(f"invalid filter '{key}'")
        result = []
        for net in sorted(self.networks.values(), key=lambda n: n.name):
            if _matches(net, filters):
                result.append(net)
        return result

    # ---- create / remove ------------------------------------------------------------
    def create(self, request: Any) -> tuple[NetworkRecord, str]:
        name = request.name
        check_network_name(name)
        existing = self._by_name(name)
        if existing is not None and existing.predefined and self.driver(existing).singleton:
            raise Forbidden(f'only one instance of "{existing.driver}" network is allowed')
        driver = self.drivers.find(request.driver or DEFAULT_NETWORK)
        if driver is not None and driver.singleton:
            raise Forbidden(f'only one instance of "{driver.name}" network is allowed')
        if existing is not None:
            raise Conflict(f"network with name {name} already exists")
        if driver is None:
            raise NotFound(f'plugin "{request.driver}" not found')
        options = dict(request.options or {})
        driver.check_create(options)
        if request.ipam_driver not in ("", "default"):
            raise NotFound(f'plugin "{request.ipam_driver}" not found')
        if request.config_only:
            raise InvalidParameter("config-only networks are not supported by shoal")
        if request.enable_ipv6:
            raise InvalidParameter("IPv6 networks are not supported by shoal yet")

        net_id = getattr(request, "id", "") or secrets.token_hex(32)  # a swarm network keeps the managers' id
        wanted_bridge = options.get(OPT_BRIDGE_NAME) or f"br-{net_id[:12]}"
        for other in self.networks.values():
            if other.driver == driver.name and driver.publish_iface(other) == wanted_bridge:
                raise Conflict(f"bridge name {wanted_bridge} is already used by network {other.name}")

        pool, config = self._pool_for(request, routed_ok=driver.subnet_on_host_lan or driver.subnet_in_own_namespace)
        record = NetworkRecord(
            id=net_id,
            name=name,
            driver=driver.name,
            created=self.clock(),
            scope=driver.scope,
            ipam_driver="default",
            ipam_options=dict(request.ipam_options or {}),
            ipam_config=[config],
            internal=request.internal,
            attachable=request.attachable,
            # only a swarm's ingress overlay (its managers' object says so) is one; a local create cannot make one
            ingress=bool(getattr(request, "ingress", False)) and getattr(request, "scope", "") == "swarm",
            options=options,
            labels=dict(request.labels or {}),
        )
        # Order for crash safety: a pending record first (write-ahead: it names the objects
        # about to be made and says which existed already), the kernel objects, then the
        # record committed. A SIGKILL in between leaves a pending record: the next start
        # deletes what this create made, even a bridge killed before it got its mark.
        driver.before_create(record)
        record.pending = True
        try:
            self.state.save("networks", net_id, to_dict(record))
        except OSError as exc:  # ENOSPC, EDQUOT...: nothing was made yet, nothing to undo
            raise SystemError_(f"cannot save the record of network {name}: {exc.strerror or exc}") from exc
        try:
            driver.create_network(record, fresh=True)
        except Exception as exc:
            driver.delete_network(record)  # deletes only what carries our mark
            self.state.delete("networks", net_id)
            if isinstance(exc, ShoalError):
                raise
            raise SystemError_(f"failed to create network {name}: {exc}") from exc
        failpoint.hit("network-create-after-kernel")
        record.pending = False
        self.networks[net_id] = record
        self.pools[net_id] = pool
        try:
            # A network with no rules of its own (an overlay: a swarm task's first start on a node makes its
            # local copy) leaves shoal's rules as they are: no full rewrite (iptables-restore processes).
            if driver.firewall_net(record) is not None or not self.firewall.applied:
                self.apply_firewall()
            self._save(record)
        except Exception as exc:
            self.networks.pop(net_id, None)
            self.pools.pop(net_id, None)
            self.state.delete("networks", net_id)
            self.state.delete("ipam", net_id)
            stale = driver.delete_network(record)
            self.apply_firewall(stale_bridges=stale)
            if isinstance(exc, ShoalError):
                raise
            raise SystemError_(f"failed to create network {name}: {exc}") from exc
        return record, ""

    def ensure_gwbridge(self) -> tuple[NetworkRecord, bool]:
        """docker_gwbridge for swarm (agent.network.gwbridge): made unless it exists; (record, made now)."""
        from agent.network.gwbridge import ensure_gwbridge

        with self.lock:  # two containers' first starts on a node must not both make it
            return ensure_gwbridge(self)  # type: ignore[no-any-return]

    def _pool_for(self, request: Any, routed_ok: bool = False) -> tuple[AddressPool, IPAMConfig]:
        configs = request.ipam_config or []
        if len(configs) > 1:
            raise InvalidParameter("shoal supports one IPv4 subnet per network")
        in_use = [pool.subnet for pool in self.pools.values()]
        try:
            if configs:
                wanted = configs[0]
                if not wanted.subnet:
                    raise InvalidParameter("invalid pool request: a subnet is required with a gateway or ip-range")
                pool = parse_pool_config(wanted.subnet, wanted.gateway, wanted.ip_range)
                check_usable_subnet(pool.subnet)
                check_overlap(pool.subnet, in_use)
                # Subnets on the bridge the network will use (an existing one) are its own.
                for routed in [] if routed_ok else kernel.host_routed_networks(exclude_ifname=(request.options or {}).get(OPT_BRIDGE_NAME, "")):
                    if routed.prefixlen > 0 and pool.subnet.overlaps(routed):
                        raise Forbidden(
                            f"invalid pool request: Pool {pool.subnet} overlaps with {routed}, "
                            "which is already routed on this host"
                        )
                ip_range = wanted.ip_range
            else:
                subnet = pick_free_subnet(in_use, kernel.host_routed_networks())
                pool = parse_pool_config(str(subnet))
                ip_range = ""
        except PoolOverlap as exc:
            raise Forbidden(exc.message) from None
        except IPAMError as exc:
            raise InvalidParameter(exc.message) from None
        return pool, IPAMConfig(subnet=str(pool.subnet), gateway=str(pool.gateway), ip_range=ip_range)

    def remove(self, ref: str, attached_names: list[str]) -> NetworkRecord:
        net = self.lookup(ref)
        if net.predefined:
            raise Forbidden(f"{net.name} is a pre-defined network and cannot be removed")
        if attached_names:
            raise Forbidden(f"network {net.name} has active endpoints ({', '.join(attached_names)})")
        # Order for crash safety: the records first; the marked bridge and its rules stay
        # recognisable as an orphan until they are gone, so the next start finishes the job.
        self.state.delete("networks", net.id)
        self.state.delete("ipam", net.id)
        self.networks.pop(net.id, None)
        self.pools.pop(net.id, None)
        failpoint.hit("network-remove-after-records")
        driver = self.driver(net)
        self.apply_firewall(stale_bridges=[driver.publish_iface(net)] if driver.publish_iface(net) else [])
        driver.delete_network(net)
        return net

    # ---- endpoints ------------------------------------------------------------------
    def check_endpoint_request(self, net: NetworkRecord, requested_ip: str) -> None:
        """A static address (--ip) is refused at create and connect, not first at start."""
        if not requested_ip:
            return
        if net.predefined:
            raise InvalidParameter("user specified IP address is supported on user defined networks only")
        config = net.ipam_config[0] if net.ipam_config else None
        check_static_ip(requested_ip, config)

    def allocate_endpoint(self, net: NetworkRecord, endpoint: EndpointRecord) -> None:
        """Fills ipv4/prefixlen/gateway/mac of an endpoint on a network with interfaces."""
        if not self.driver(net).has_interfaces:
            return
        with self.lock:
            self._allocate_endpoint(net, endpoint)

    def _allocate_endpoint(self, net: NetworkRecord, endpoint: EndpointRecord) -> None:
        self.check_endpoint_request(net, endpoint.requested_ipv4)
        pool = self.pools[net.id]
        wanted = ipaddress.IPv4Address(endpoint.requested_ipv4) if endpoint.requested_ipv4 else None
        try:
            address = pool.allocate(wanted)
        except IPAMError as exc:
            if wanted is not None:
                raise InvalidParameter(exc.message) from None
            raise SystemError_(exc.message) from None
        endpoint.ipv4 = str(address)
        endpoint.prefixlen = pool.subnet.prefixlen
        # No gateway where the network gives no way out (internal, overlay): the default route
        # goes elsewhere (another network, or docker_gwbridge for overlay containers).
        endpoint.gateway = "" if net.internal or not self.driver(net).external_connectivity else str(pool.gateway)
        endpoint.mac = endpoint.requested_mac or mac_from_ip(address)
        endpoint.host_ifname = kernel.host_ifname_for(endpoint.id)
        # The pool is not saved here (nor at release): every start rebuilds it from the live endpoints
        # (rebuild_allocations) and saves it then, which a record written now would not change. A save per
        # address was a new file and an fsync per endpoint (~1 ms of CPU each on the lab's ext4, two per task).

    def release_endpoint(self, endpoint: EndpointRecord) -> None:
        with self.lock:
            pool = self.pools.get(endpoint.network_id)
            if pool is not None and endpoint.ipv4:
                pool.release(ipaddress.IPv4Address(endpoint.ipv4))  # saved at the next start: see _allocate_endpoint
        endpoint.ipv4 = ""
        endpoint.prefixlen = 0
        endpoint.gateway = ""
        endpoint.mac = ""

    def plumb(self, endpoint: EndpointRecord, join: Join) -> None:
        net = self.networks[endpoint.network_id]
        self.driver(net).join(net, endpoint, join)

    def unplumb(self, endpoint: EndpointRecord) -> None:
        net = self.networks.get(endpoint.network_id)
        if net is not None:
            self.driver(net).leave(net, endpoint)

    # ---- kernel ---------------------------------------------------------------------
    def bridge_name(self, net: NetworkRecord) -> str:
        return bridge_name(net)

    def publish_iface(self, net: NetworkRecord) -> str:
        return self.driver(net).publish_iface(net)

    def firewall_bridges(self) -> list[firewall.BridgeNet]:
        bridges = []
        for net in sorted(self.networks.values(), key=lambda n: n.name):
            rules = self.driver(net).firewall_net(net)
            if rules is not None:
                bridges.append(rules)
        return bridges

    def apply_firewall(self, stale_bridges: list[str] = ()) -> None:
        """Rewrites shoal's chains (bridges and published ports) in one batch per table."""
        self.firewall.apply_all(self.firewall_bridges(), stale_bridges, self.published_ports())

    def publish_ports(self, container_id: str, ports: list[firewall.PublishedPort]) -> None:
        """Adds one container's published-port rules (replacing its old ones); cost independent
        of how many other ports are published."""
        self.firewall.publish(container_id, ports)

    def unpublish_ports(self, container_id: str) -> None:
        """Removes one container's published-port rules; no error if it has none."""
        self.firewall.unpublish(container_id)

    def firewall_in_place(self) -> bool:
        return self.firewall.in_place()

    # ---- persistence ----------------------------------------------------------------
    def _save(self, net: NetworkRecord) -> None:
        self.networks[net.id] = net
        self.state.save("networks", net.id, to_dict(net))
        if net.id in self.pools:
            self._save_pool(net.id)

    def _save_pool(self, net_id: str) -> None:
        self.state.save("ipam", net_id, self.pools[net_id].to_dict())


def _matches(net: NetworkRecord, filters: dict[str, list[str]]) -> bool:
    def any_of(key: str, test) -> bool:
        values = filters.get(key)
        return not values or any(test(v) for v in values)

    def label_matches(value: str) -> bool:
        key, _, want = value.partition("=")
        if key not in net.labels:
            return False
        return "=" not in value or net.labels[key] == want

    def type_matches(value: str) -> bool:
        if value not in ("custom", "builtin"):
            raise InvalidParameter(f"invalid filter: 'type'='{value}'")
        return (value == "builtin") == net.predefined

    return (
        any_of("driver", lambda v: net.driver == v)
        and any_of("id", lambda v: net.id.startswith(v))
        and any_of("name", lambda v: v in net.name)
        and any_of("scope", lambda v: net.scope == v)
        and any_of("type", type_matches)
        and all(label_matches(v) for v in filters.get("label", []))
    )
