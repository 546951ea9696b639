"""Local networks of one node: predefined bridge/host/none, user bridges, address pools, endpoints.

Owns NetworkRecords and their AddressPools (persisted through StateDir) and programs the kernel
through agent.network (bridge, veth, firewall). shoal.engine.engine calls it for containers.
"""
from __future__ import annotations

import ipaddress
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from agent.network import bridge as kernel
from agent.network import firewall
from agent.network.firewall_live import Firewall
from agent.network.ipam import (
    AddressPool,
    IPAMError,
    PoolOverlap,
    check_overlap,
    parse_pool_config,
    pick_free_subnet,
)
from agent.network.mac import mac_from_ip
from shoal.engine.errors import Conflict, EngineError, Forbidden, InvalidParameter, NotFound
from shoal.engine.records import EndpointRecord, IPAMConfig, NetworkRecord, network_from_dict, to_dict
from shoal.engine.requests import NetworkCreate
from shoal.engine.state import StateDir
from shoal.engine.timefmt import now_rfc3339

log = logging.getLogger(__name__)

PREDEFINED = ("bridge", "host", "none")
DRIVER_OF_PREDEFINED = {"bridge": "bridge", "host": "host", "none": "null"}
OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"
OPT_HOST_BINDING = "com.docker.network.bridge.host_binding_ipv4"
OPT_DEFAULT_BRIDGE = "com.docker.network.bridge.default_bridge"
OPT_MTU = "com.docker.network.driver.mtu"
BOOL_OPTIONS = (OPT_ICC, OPT_MASQ, OPT_DEFAULT_BRIDGE)


@dataclass(slots=True)
class NetworkOptions:
    bip: str = "172.17.0.1/16"  # the default bridge's gateway address and subnet
    mtu: int = 1500
    default_bridge_name: str = "docker0"


def parse_bool_option(key: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "t", "true"):
        return True
    if lowered in ("0", "f", "false"):
        return False
    raise InvalidParameter(f"invalid value {value!r} for option {key}: expected true or false")


def parse_mtu(value: str) -> int:
    try:
        mtu = int(value)
    except ValueError:
        raise InvalidParameter(f"invalid MTU {value!r}: it must be a number") from None
    if not 68 <= mtu <= 65535:
        raise InvalidParameter(f"invalid MTU {mtu}: it must be between 68 and 65535")
    return mtu


class NetworkController:
    def __init__(self, state: StateDir, options: NetworkOptions) -> None:
        self.state = state
        self.options = options
        self.networks: dict[str, NetworkRecord] = {}
        self.pools: dict[str, AddressPool] = {}
        # The engine knows which containers publish what; a full apply asks it (each port's
        # owner is its container); a container's start or exit changes only its own rules.
        self.published_ports: Callable[[], list[firewall.PublishedPort]] = list
        self.firewall = Firewall()

    # ---- start-up -------------------------------------------------------------------
    def restore(self) -> None:
        """Loads persisted networks, makes the predefined ones, and re-asserts the kernel
        state (bridges, forwarding, firewall): idempotent, so a restart duplicates nothing."""
        for net_id, data in self.state.load_all("networks").items():
            self.networks[net_id] = network_from_dict(data)
        for net_id, data in self.state.load_all("ipam").items():
            if net_id in self.networks:
                self.pools[net_id] = AddressPool.from_dict(data)
        for name in PREDEFINED:
            if self._by_name(name) is None:
                self._save(self._predefined(name))
        kernel_bridge = self.networks[self._by_name("bridge").id]
        self._ensure_default_bridge_pool(kernel_bridge)
        firewall.enable_ip_forward()
        for net in self.networks.values():
            if net.driver == "bridge":
                self._ensure_kernel_bridge(net)
        self.apply_firewall()

    def _predefined(self, name: str) -> NetworkRecord:
        record = NetworkRecord(
            id=secrets.token_hex(32),
            name=name,
            driver=DRIVER_OF_PREDEFINED[name],
            created=now_rfc3339(),
            predefined=True,
        )
        if name == "bridge":
            iface = ipaddress.ip_interface(self.options.bip)
            record.ipam_config = [IPAMConfig(subnet=str(iface.network), gateway=str(iface.ip))]
            record.options = {
                OPT_DEFAULT_BRIDGE: "true",
                OPT_ICC: "true",
                OPT_MASQ: "true",
                OPT_HOST_BINDING: "0.0.0.0",
                OPT_BRIDGE_NAME: self.options.default_bridge_name,
                OPT_MTU: str(self.options.mtu),
            }
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
    def create(self, request: NetworkCreate) -> tuple[NetworkRecord, str]:
        name = request.name
        if not name:
            raise InvalidParameter("invalid name: name is empty")
        if name in ("host", "none") or request.driver in ("host", "null"):
            driver = {"host": "host", "none": "null"}.get(name, request.driver)
            raise Forbidden(f'only one instance of "{driver}" network is allowed')
        if self._by_name(name) is not None:
            raise Conflict(f"network with name {name} already exists")
        driver = request.driver or "bridge"
        if driver == "overlay":
            raise EngineError(
                'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" '
                "to connect this node to swarm and try again.",
                503,
            )
        if driver != "bridge":
            raise NotFound(f'plugin "{driver}" not found')
        if request.ipam_driver not in ("", "default"):
            raise NotFound(f'plugin "{request.ipam_driver}" not found')
        if request.config_only:
            raise InvalidParameter("config-only networks are not supported by shoal")
        if request.enable_ipv6:
            raise InvalidParameter("IPv6 networks are not supported by shoal yet")

        options = dict(request.options)
        for key in BOOL_OPTIONS:
            if key in options:
                parse_bool_option(key, options[key])
        if OPT_DEFAULT_BRIDGE in options and parse_bool_option(OPT_DEFAULT_BRIDGE, options[OPT_DEFAULT_BRIDGE]):
            raise Forbidden("default bridge network is already configured")
        if OPT_MTU in options:
            parse_mtu(options[OPT_MTU])
        if OPT_HOST_BINDING in options:
            try:
                ipaddress.IPv4Address(options[OPT_HOST_BINDING])
            except ValueError:
                raise InvalidParameter(
                    f"invalid value {options[OPT_HOST_BINDING]!r} for option {OPT_HOST_BINDING}"
                ) from None

        net_id = secrets.token_hex(32)
        bridge_name = options.get(OPT_BRIDGE_NAME) or f"br-{net_id[:12]}"
        if len(bridge_name) > 15:
            raise InvalidParameter(f"invalid bridge name {bridge_name}: longer than 15 characters")
        for other in self.networks.values():
            if other.driver == "bridge" and self.bridge_name(other) == bridge_name:
                raise Conflict(f"bridge name {bridge_name} is already used by network {other.name}")

        pool, config = self._pool_for(request)
        record = NetworkRecord(
            id=net_id,
            name=name,
            driver="bridge",
            created=now_rfc3339(),
            scope="local",
            ipam_driver="default",
            ipam_options=dict(request.ipam_options),
            ipam_config=[config],
            internal=request.internal,
            attachable=request.attachable,
            ingress=False,
            options=options,
            labels=dict(request.labels),
        )
        try:
            self._ensure_kernel_bridge(record)
            self.networks[net_id] = record
            self.pools[net_id] = pool
            self.apply_firewall()
        except Exception as exc:
            self.networks.pop(net_id, None)
            self.pools.pop(net_id, None)
            kernel.delete_bridge(bridge_name)
            raise EngineError(f"failed to create network {name}: {exc}") from exc
        self._save(record)
        return record, ""

    def _pool_for(self, request: NetworkCreate) -> tuple[AddressPool, IPAMConfig]:
        if len(request.ipam_config) > 1:
            raise InvalidParameter("shoal supports one IPv4 subnet per network")
        in_use = [pool.subnet for pool in self.pools.values()]
        try:
            if request.ipam_config:
                wanted = request.ipam_config[0]
                if not wanted.subnet:
                    raise InvalidParameter("invalid pool request: a subnet is required with a gateway or ip-range")
                pool = parse_pool_config(wanted.subnet, wanted.gateway, wanted.ip_range)
                check_overlap(pool.subnet, in_use)
                for routed in kernel.host_routed_networks():
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
        except IPAMError as exc:
            raise EngineError(exc.message, 403 if isinstance(exc, PoolOverlap) else 400) from None
        return pool, IPAMConfig(subnet=str(pool.subnet), gateway=str(pool.gateway), ip_range=ip_range)

    def remove(self, ref: str, attached_names: list[str]) -> NetworkRecord:
        net = self.lookup(ref)
        if net.predefined:
            raise Forbidden(f"{net.name} is a pre-defined network and cannot be removed")
        if attached_names:
            raise Forbidden(f"network {net.name} has active endpoints ({', '.join(attached_names)})")
        self.networks.pop(net.id, None)
        self.pools.pop(net.id, None)
        if net.driver == "bridge":
            kernel.delete_bridge(self.bridge_name(net))
            self.apply_firewall(stale_bridges=[self.bridge_name(net)])
        self.state.delete("networks", net.id)
        self.state.delete("ipam", net.id)
        return net

    # ---- endpoints ------------------------------------------------------------------
    def allocate_endpoint(self, net: NetworkRecord, container_id: str, endpoint: EndpointRecord, requested_ip: str) -> None:
        """Fills ipv4/prefixlen/gateway/mac of an endpoint on a bridge network."""
        if net.driver != "bridge":
            return
        pool = self.pools[net.id]
        try:
            wanted = ipaddress.IPv4Address(requested_ip) if requested_ip else None
        except ValueError:
            raise InvalidParameter(f"invalid IPv4 address: {requested_ip}") from None
        if wanted is not None and net.predefined:
            raise InvalidParameter("user specified IP address is supported on user defined networks only")
        try:
            address = pool.allocate(wanted)
        except IPAMError as exc:
            raise EngineError(exc.message, 400 if wanted else 500) from None
        endpoint.ipv4 = str(address)
        endpoint.prefixlen = pool.subnet.prefixlen
        endpoint.gateway = "" if net.internal else str(pool.gateway)
        endpoint.mac = mac_from_ip(address)
        endpoint.host_ifname = kernel.host_ifname_for(endpoint.id)
        self._save_pool(net.id)

    def release_endpoint(self, endpoint: EndpointRecord) -> None:
        pool = self.pools.get(endpoint.network_id)
        if pool is not None and endpoint.ipv4:
            pool.release(ipaddress.IPv4Address(endpoint.ipv4))
            self._save_pool(endpoint.network_id)
        endpoint.ipv4 = ""
        endpoint.prefixlen = 0
        endpoint.gateway = ""
        endpoint.mac = ""

    def plumb(self, endpoint: EndpointRecord, netns: str, ifname: str, default_route: bool) -> None:
        net = self.networks[endpoint.network_id]
        if net.driver != "bridge":
            return
        endpoint.ifname = ifname
        kernel.attach_endpoint(
            bridge=self.bridge_name(net),
            netns=netns,
            host_ifname=endpoint.host_ifname,
            ifname=ifname,
            address_cidr=f"{endpoint.ipv4}/{endpoint.prefixlen}",
            mac=endpoint.mac,
            gateway=endpoint.gateway if default_route and endpoint.gateway else None,
            mtu=self.mtu(net),
        )

    def unplumb(self, endpoint: EndpointRecord) -> None:
        if endpoint.host_ifname:
            kernel.detach_endpoint(endpoint.host_ifname)

    # ---- kernel ---------------------------------------------------------------------
    def bridge_name(self, net: NetworkRecord) -> str:
        return net.options.get(OPT_BRIDGE_NAME) or f"br-{net.id[:12]}"

    def mtu(self, net: NetworkRecord) -> int:
        return parse_mtu(net.options[OPT_MTU]) if OPT_MTU in net.options else self.options.mtu

    def _ensure_kernel_bridge(self, net: NetworkRecord) -> None:
        config = net.ipam_config[0]
        prefix = ipaddress.ip_network(config.subnet).prefixlen
        kernel.ensure_bridge(self.bridge_name(net), f"{config.gateway}/{prefix}", self.mtu(net))

    def firewall_bridges(self) -> list[firewall.BridgeNet]:
        bridges = []
        for net in sorted(self.networks.values(), key=lambda n: n.name):
            if net.driver != "bridge":
                continue
            bridges.append(
                firewall.BridgeNet(
                    bridge=self.bridge_name(net),
                    subnet=net.ipam_config[0].subnet,
                    icc=parse_bool_option(OPT_ICC, net.options.get(OPT_ICC, "true")),
                    masquerade=parse_bool_option(OPT_MASQ, net.options.get(OPT_MASQ, "true")),
                    internal=net.internal,
                )
            )
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
