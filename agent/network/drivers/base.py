"""The network driver interface and the registry that picks a driver by name.

Drivers (null, host, bridge here; macvlan and vxlan's overlay register later) answer what the
network controller and the sandbox ask of a network; nothing else compares driver names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from common.errdefs import InvalidParameter, NotFound, Unavailable

if TYPE_CHECKING:
    from agent.network.firewall import BridgeNet
    from agent.network.records import EndpointRecord, NetworkRecord


@dataclass(slots=True, frozen=True)
class Join:
    """What a driver plumbs for one endpoint in a sandbox (computed by agent.network.plan)."""

    netns: str
    ifname: str  # inside the sandbox: "eth0"
    gateway: str | None  # set when this interface carries the default route


class Driver:
    """A network driver. The defaults describe a driver that has no kernel state of its own.

    The registry only needs these attributes and methods, so a driver from a package below
    agent/ (vxlan/'s overlay, which must not import agent) fits without subclassing; agent code
    registers it."""

    name = ""
    scope = "local"
    # One network of this driver at most (host, null): made by the daemon, never by users.
    singleton = False
    # A container on such a network can be on no other network (host, none).
    exclusive = False
    # Containers share the host's network namespace (host): no sandbox namespace at all.
    shares_host_netns = False
    # Endpoints get an address from the network's pool and an interface in the sandbox.
    has_interfaces = False
    # The network's subnet is a LAN the host is on (macvlan): not refused for being routed here.
    subnet_on_host_lan = False
    # The network's subnet exists only in namespaces of its own (overlay: its bridge and VXLAN device live in the
    # network's namespace), so the host's routes cannot clash with it: not checked against them (as Docker on a
    # kernel with overlay namespaces; that check cost each node's first task on the network a route dump).
    subnet_in_own_namespace = False
    # Its endpoints reach beyond the network through its gateway (bridge, macvlan). An overlay's
    # do not: its containers get their way out on docker_gwbridge (agent.network.plan).
    external_connectivity = True

    def check_create(self, options: dict[str, str]) -> None:
        """Refuses a user's create request the driver cannot serve (before anything is made)."""
        raise NotFound(f'plugin "{self.name}" not found')

    def create_network(self, net: NetworkRecord, fresh: bool) -> None:
        """Makes (fresh) or re-asserts (at restart) the network's kernel objects. Idempotent;
        may note in the record which objects it found rather than made."""

    def before_create(self, net: NetworkRecord) -> None:
        """Notes in a new record what exists already, before the record is written ahead."""

    def abandon(self, net: NetworkRecord) -> list[str]:
        """Undoes a create that never committed (its record still pending at start): deletes
        what it can prove this create made; returns bridge names whose firewall rules must go."""
        return []

    def remove_orphan_endpoints(self, live_ids: set[str]) -> list[str]:
        """Deletes host-side objects of endpoints that are not live (ids of running
        containers' endpoints); returns their names."""
        return []

    def remove_orphans(self, known_ids: set[str]) -> list[str]:
        """Deletes kernel objects this driver made for networks that have no record any more;
        returns bridge names whose firewall rules must go."""
        return []

    def delete_network(self, net: NetworkRecord) -> list[str]:
        """Removes the kernel objects shoal made for it; returns bridge names whose firewall
        rules must go."""
        return []

    def join(self, net: NetworkRecord, endpoint: EndpointRecord, join: Join) -> None:
        """Plumbs the endpoint into the sandbox (the veth, its address, the default route)."""

    def leave(self, net: NetworkRecord, endpoint: EndpointRecord) -> None:
        """Unplumbs the endpoint; no error when it is gone already."""

    def program_peers(self, net: NetworkRecord, peers: list[tuple[str, str, str]]) -> None:
        """(ip, mac, node address) of endpoints on other nodes: overlay only; local drivers
        have no peers."""

    def firewall_net(self, net: NetworkRecord) -> BridgeNet | None:
        """The network as the firewall module sees it (None: no rules of its own)."""
        return None

    def publish_iface(self, net: NetworkRecord) -> str:
        """The host interface published ports of this network's endpoints are DNATed to."""
        return ""

    def mtu(self, net: NetworkRecord) -> int | None:
        return None


class UnavailableDriver(Driver):
    """A driver this node cannot serve yet (overlay before the node joins a swarm)."""

    def __init__(self, name: str, message: str) -> None:
        self.name = name
        self.message = message

    def check_create(self, options: dict[str, str]) -> None:
        raise Unavailable(self.message)

    def join(self, net: NetworkRecord, endpoint: EndpointRecord, join: Join) -> None:
        # a container on such a network (a swarm overlay before the node is back in its swarm) must not
        # start without it: refused, not plumbed as nothing
        raise Unavailable(f"network {net.name} is not available on this node yet: {self.message}")


class Registry:
    """Drivers by name. `get` refuses unknown names with Docker's `plugin "X" not found`."""

    def __init__(self) -> None:
        self._drivers: dict[str, Driver] = {}

    def register(self, driver: Driver) -> None:
        if not driver.name:
            raise InvalidParameter("a network driver needs a name")
        self._drivers[driver.name] = driver

    def get(self, name: str) -> Driver:
        driver = self._drivers.get(name)
        if driver is None:
            raise NotFound(f'plugin "{name}" not found')
        return driver

    def find(self, name: str) -> Driver | None:
        return self._drivers.get(name)

    def names(self) -> list[str]:
        return sorted(self._drivers)
