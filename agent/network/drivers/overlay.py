"""The overlay driver: endpoints of swarm-scoped overlay networks get a veth into the network's own
namespace (bridge + VXLAN device), made with the first local endpoint and removed with the last.

The kernel work and the peers are vxlan.dataplane's (this driver is its only caller in agent/); the
node enables it at swarm init/join with `enable_overlay` (until then the registry answers overlay
with 503). The network's VNI and subnet come from the managers (netalloc) in its record's options
and IPAM config; containers' way out is docker_gwbridge (agent.network.sandbox).
"""
from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.network.drivers.base import Driver, Join
from agent.network.drivers.bridge import OPT_MTU, parse_mtu
from agent.network.netns import netns_path
from agent.network.records import EndpointRecord, NetworkRecord
from common.errdefs import InvalidParameter, NotImplemented_
from vxlan.dataplane import LocalEndpoint, OverlayDataPlane
from vxlan.plan import VNI_MAX
from vxlan.types import VXLAN_PORT, OverlayPeer, OverlaySpec

if TYPE_CHECKING:
    from agent.network.controller import NetworkController

OPT_VNI = "com.docker.network.driver.overlay.vxlanid_list"  # Docker's name: the VNI the managers gave
OPT_ENCRYPTED = "encrypted"
OPT_PORT = "com.docker.network.driver.overlay.port"  # the cluster's data path port (swarm init --data-path-port)
KNOWN_OPTIONS = (OPT_VNI, OPT_MTU, OPT_ENCRYPTED, OPT_PORT)

log = logging.getLogger(__name__)


class OverlayDriver(Driver):
    name = "overlay"
    scope = "swarm"
    has_interfaces = True
    subnet_in_own_namespace = True
    external_connectivity = False  # the way out is docker_gwbridge

    def __init__(self, plane: OverlayDataPlane, data_addr: ipaddress.IPv4Address) -> None:
        self.plane = plane  # also the PeerSink gossip (agent/gossip/netdb) feeds
        self.data_addr = data_addr
        # This node's endpoints for gossip to announce (shoal/swarm/overlay.wire_gossip sets them):
        # called on the kernel thread once the kernel work is done; a failure there is only logged.
        self.on_endpoint_up: Callable[[str, str, OverlayPeer], None] | None = None
        self.on_endpoint_down: Callable[[str, str], None] | None = None

    # ---- create ---------------------------------------------------------------------
    def check_create(self, options: dict[str, str]) -> None:
        for key in options:
            if key not in KNOWN_OPTIONS:
                raise InvalidParameter(f"invalid option {key} for the overlay driver")
        if OPT_ENCRYPTED in options:
            # Docker encrypts the data path with IPsec ESP; this kernel has no ESP (DESIGN §10).
            raise NotImplemented_("encrypted overlay networks need the kernel's IPsec ESP support, "
                                  "which this host's kernel does not have")
        parse_vni(options.get(OPT_VNI, ""))
        if OPT_MTU in options:
            parse_mtu(options[OPT_MTU])
        if OPT_PORT in options:
            parse_port(options[OPT_PORT])

    def create_network(self, net: NetworkRecord, fresh: bool) -> None:
        """Nothing in the kernel: the network's namespace is made with its first local endpoint."""

    def delete_network(self, net: NetworkRecord) -> list[str]:
        self.plane.forget_network(net.id)
        return []

    def abandon(self, net: NetworkRecord) -> list[str]:
        return self.delete_network(net)

    def remove_orphans(self, known_ids: set[str]) -> list[str]:
        """At start: a previous run's overlay namespaces and half-made VXLAN devices go (running
        containers' overlay endpoints are plumbed again from their records by the sandbox)."""
        self.plane.remove_stale()
        return []

    # ---- endpoints ------------------------------------------------------------------
    def spec(self, net: NetworkRecord) -> OverlaySpec:
        config = net.ipam_config[0]
        subnet = ipaddress.IPv4Network(config.subnet)
        return OverlaySpec(
            network_id=net.id,
            name=net.name,
            vni=parse_vni(net.options.get(OPT_VNI, "")),
            subnet=subnet,
            gateway=ipaddress.IPv4Interface(f"{config.gateway}/{subnet.prefixlen}"),
            data_addr=self.data_addr,
            mtu=parse_mtu(net.options[OPT_MTU]) if OPT_MTU in net.options else None,
            port=parse_port(net.options[OPT_PORT]) if OPT_PORT in net.options else VXLAN_PORT,
            internal=net.internal,
        )

    def join(self, net: NetworkRecord, endpoint: EndpointRecord, join: Join) -> None:
        endpoint.ifname = join.ifname
        endpoint.sandbox = join.netns
        self.plane.join(self.spec(net), LocalEndpoint(
            endpoint_id=endpoint.id,
            sandbox=netns_path(join.netns),
            ifname=join.ifname,
            address=ipaddress.IPv4Interface(f"{endpoint.ipv4}/{endpoint.prefixlen}"),
            mac=endpoint.mac,
        ))
        self._notify(self.on_endpoint_up, net.id, endpoint.id,
                     OverlayPeer(ip=ipaddress.IPv4Address(endpoint.ipv4), mac=endpoint.mac, vtep=self.data_addr))

    def leave(self, net: NetworkRecord, endpoint: EndpointRecord) -> None:
        self.plane.leave(net.id, endpoint.id)
        self._notify(self.on_endpoint_down, net.id, endpoint.id)

    def local_endpoints(self) -> list[tuple[str, str, OverlayPeer]]:
        """(network id, endpoint id, peer) of every endpoint plumbed on this node now."""
        return [(net_id, ep.endpoint_id, OverlayPeer(ip=ep.address.ip, mac=ep.mac, vtep=self.data_addr))
                for net_id, ep in self.plane.local_endpoints()]

    @staticmethod
    def _notify(callback: Callable[..., None] | None, *args: object) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:  # gossip's trouble must not undo a working endpoint
            log.exception("overlay: telling gossip about endpoint %s failed", args[1])

    def program_peers(self, net: NetworkRecord, peers: list[tuple[str, str, str]]) -> None:
        """The network's remote endpoints are exactly these (ip, mac, node address)."""
        self.plane.sync_peers(net.id, [
            OverlayPeer(ip=ipaddress.IPv4Address(ip), mac=mac, vtep=ipaddress.IPv4Address(vtep))
            for ip, mac, vtep in peers
        ])

    def mtu(self, net: NetworkRecord) -> int | None:
        if OPT_MTU in net.options:
            return parse_mtu(net.options[OPT_MTU])
        return self.plane.mtu(net.id)


def parse_vni(text: str) -> int:
    """The network's VNI (Docker's option may list several, comma-separated: one subnet here)."""
    first = text.split(",")[0].strip()
    if not first:
        raise InvalidParameter(f"an overlay network needs its VNI: -o {OPT_VNI}=N (the managers allocate it)")
    if not first.isdigit() or not 1 <= int(first) <= VNI_MAX:
        raise InvalidParameter(f"invalid VNI {first!r}: must be 1..{VNI_MAX}")
    return int(first)


def parse_port(text: str) -> int:
    if not text.isdigit() or not 1024 <= int(text) <= 49151:
        raise InvalidParameter(f"invalid data path port {text!r}: must be 1024..49151")
    return int(text)


def enable_overlay(controller: NetworkController, data_addr: str, netns_prefix: str) -> OverlayDriver:
    """Registers the overlay driver for this node (at swarm init/join, with the node's data path
    address; on the kernel thread). Idempotent: an enabled driver with the same address is kept.
    Returns it: its `plane` is the PeerSink for gossip."""
    address = ipaddress.IPv4Address(data_addr)
    current = controller.drivers.find(OverlayDriver.name)
    if isinstance(current, OverlayDriver) and current.data_addr == address:
        return current
    driver = OverlayDriver(OverlayDataPlane(netns_prefix), address)
    driver.plane.remove_stale()
    controller.drivers.register(driver)
    return driver
