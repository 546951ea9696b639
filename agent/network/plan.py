"""Pure decisions of the network layer: what the kernel should look like and what to refuse.

No I/O: from records, the interfaces a sandbox wants (order, names, addresses, default route),
which kernel objects are shoal's to keep, rewrite or delete after a crash (marks, write-ahead
network records, a running container's veths), the IPAM state live endpoints imply, and the
checks on names, subnets and static addresses.
The sandbox (agent.network.sandbox) and the controller apply them through the drivers.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, ip_network

from agent.network.records import EndpointRecord, IPAMConfig, NetworkRecord
from common.errdefs import InvalidParameter
from common.ipam import AddressPool

MAX_NETWORK_NAME = 255  # a file name's limit: names end up in paths, /etc/hosts and DNS

# Subnets a bridge network cannot work with: the kernel treats these addresses specially.
UNUSABLE_SUBNETS = (
    (ip_network("0.0.0.0/8"), "the 'this network' range 0.0.0.0/8"),
    (ip_network("127.0.0.0/8"), "the loopback range 127.0.0.0/8"),
    (ip_network("169.254.0.0/16"), "the link-local range 169.254.0.0/16"),
    (ip_network("224.0.0.0/4"), "the multicast range 224.0.0.0/4"),
)


@dataclass(slots=True, frozen=True)
class WantedInterface:
    """One interface a sandbox should have: endpoint, its name inside, its address."""

    endpoint_id: str
    network_id: str
    ifname: str
    address_cidr: str  # "172.18.0.2/16"; "" while the endpoint has no address yet


# ---- sandbox ------------------------------------------------------------------------
def interface_endpoints(endpoints: dict[str, EndpointRecord], networks: dict[str, NetworkRecord],
                        primary_id: str, has_interfaces: Callable[[NetworkRecord], bool]) -> list[EndpointRecord]:
    """The endpoints that get an interface, in interface order: the primary network
    (NetworkMode) is eth0, then the others by network name (Docker's order)."""
    wanted = [e for n, e in endpoints.items() if n in networks and has_interfaces(networks[n])]
    # docker_gwbridge's gateway endpoint comes last, as Docker adds it after the container's networks.
    return sorted(wanted, key=lambda e: (e.gateway_only, e.network_id != primary_id, networks[e.network_id].name))


def wanted_interfaces(ordered: list[EndpointRecord]) -> list[WantedInterface]:
    """eth0, eth1, ... in order, with each endpoint's address."""
    return [
        WantedInterface(
            endpoint_id=e.id,
            network_id=e.network_id,
            ifname=f"eth{index}",
            address_cidr=f"{e.ipv4}/{e.prefixlen}" if e.ipv4 else "",
        )
        for index, e in enumerate(ordered)
    ]


def next_ifname(taken: Iterable[str]) -> str:
    """The first free ethN for an endpoint connected to a running container."""
    used = set(taken)
    index = 0
    while f"eth{index}" in used:
        index += 1
    return f"eth{index}"


def default_gateway(endpoints: Iterable[EndpointRecord], networks: dict[str, NetworkRecord]) -> str | None:
    """S12: external traffic leaves through the first network by name that has a gateway
    (internal networks have none); None when no network gives one."""
    candidates = sorted(
        (networks[e.network_id].name, e.gateway)
        for e in endpoints
        if e.network_id in networks and e.ipv4 and e.gateway
    )
    return candidates[0][1] if candidates else None


def needs_gateway_endpoint(endpoints: Iterable[EndpointRecord], networks: dict[str, NetworkRecord],
                           external: Callable[[NetworkRecord], bool]) -> bool:
    """libnetwork's rule for docker_gwbridge (issue 11 item 3): a container needs an endpoint there
    when it is on a network that is not internal yet gives no way out (an overlay: `external` False)
    and none of its networks gives it a gateway. Internal networks and the gateway endpoint itself
    do not count; an internal-only container stays without a way out, as it asked."""
    needed = False
    for e in endpoints:
        net = networks.get(e.network_id)
        if net is None or e.gateway_only or net.internal:
            continue
        if e.gateway:
            return False
        if not external(net):
            needed = True
    return needed


def route_endpoint(endpoints: dict[str, EndpointRecord], networks: dict[str, NetworkRecord]) -> EndpointRecord | None:
    """The endpoint of the default route: ports are published on its network."""
    candidates = sorted(
        (networks[e.network_id].name, e.network_id)
        for e in endpoints.values()
        if e.network_id in networks and e.ipv4 and e.gateway
    )
    return endpoints[candidates[0][1]] if candidates else None


# ---- bridges ------------------------------------------------------------------------
def bridge_ownership(kind: str | None, alias: str, mark: str, fresh: bool, adopted: bool) -> str:
    """What to do with a network's bridge name, from what the kernel has there:
    "refuse" (a link that is no bridge), "own" (make it, or rewrite it: it is shoal's) or
    "adopt" (someone else's bridge: use it as it is). `kind` is None when no link has the name.
    An unmarked bridge is someone else's when it was there before the network (fresh) or was
    adopted before; a restored record that made its bridge itself (before marks existed) keeps it."""
    if kind is None:
        return "own"
    if kind != "bridge":
        return "refuse"
    if alias == mark or not (fresh or adopted):
        return "own"
    return "adopt"


def orphans_by_mark(aliases: dict[str, str], mark_prefix: str, known_ids: set[str]) -> list[str]:
    """Names of links whose ifalias is `<mark_prefix><id>` (this daemon's ownership mark)
    with an id not in known_ids: a network or endpoint that no record holds any more."""
    return sorted(
        name for name, alias in aliases.items()
        if alias.startswith(mark_prefix) and alias[len(mark_prefix):] not in known_ids
    )


def derived_bridge_name(net_id: str) -> str:
    """The name shoal gives a network's bridge when the user names none."""
    return f"br-{net_id[:12]}"


def abandoned_bridge(name: str, kind: str | None, alias: str, mark: str, net: NetworkRecord) -> bool:
    """True when the bridge `name` of a network whose create never committed (its record is
    still pending: the daemon died inside `network create`) must be deleted.

    A bridge is made first and marked by a second netlink request (the kernel ignores
    IFLA_IFALIAS on RTM_NEWLINK), so a kill in between leaves it unmarked. What proves it is
    shoal's then is the write-ahead record: it was saved before the bridge was made, saying
    no link had that name (adopted_bridge False), and the name is derived from the network's
    fresh random id. A bridge that existed before (adopted) or a user-given name that is not
    marked is never deleted: nothing proves shoal made it."""
    if kind != "bridge" or net.adopted_bridge:
        return False
    if alias == mark:
        return True
    return alias == "" and name == derived_bridge_name(net.id)


# ---- endpoints ----------------------------------------------------------------------
def stray_sandbox_links(links: dict[str, str], endpoints: Iterable[EndpointRecord]) -> list[str]:
    """Interfaces to delete inside a running container's namespace at restart: veths
    (`links`: name -> kind) that no endpoint of its record names. Such a veth was plumbed by
    a connect whose record was never saved (the daemon died in between); its host end may
    not carry the mark yet. Nothing is deleted when an endpoint with an address has no
    recorded interface name: then the record cannot tell which veth is which."""
    endpoints = list(endpoints)
    if any(e.ipv4 and not e.ifname for e in endpoints):
        return []
    wanted = {e.ifname for e in endpoints if e.ipv4 and e.ifname}
    return sorted(name for name, kind in links.items() if kind == "veth" and name not in wanted)


def missing_sandbox_links(links: dict[str, str], endpoints: Iterable[EndpointRecord]) -> list[EndpointRecord]:
    """Endpoints of a running container's record (with an address and an interface name)
    whose interface its namespace lacks: a disconnect the daemon died in after unplumbing
    and before saving. The record is the truth, so they are plumbed again."""
    return [e for e in endpoints if e.ipv4 and e.ifname and e.ifname not in links]


def live_endpoint_ids(endpoints: Iterable[EndpointRecord]) -> set[str]:
    """Endpoints whose veth must stay: those with an address (plumbed at their start)."""
    return {e.id for e in endpoints if e.ipv4}


# ---- IPAM ---------------------------------------------------------------------------
def rebuild_pool(pool: AddressPool, live_addresses: Iterable[str]) -> AddressPool:
    """The pool as the live endpoints say it is: exactly their addresses in use (those inside
    the subnet and not reserved), the serial cursor kept so freed addresses are not reused at once."""
    used = set()
    for text in live_addresses:
        address = IPv4Address(text)
        if address in pool.subnet and not pool.is_reserved(address):
            used.add(address)
    return AddressPool(subnet=pool.subnet, gateway=pool.gateway, ip_range=pool.ip_range,
                       used=used, cursor=pool.cursor)


# ---- refusals -----------------------------------------------------------------------
def check_network_name(name: str) -> None:
    """dockerd (20.10, checked in a lab namespace) only refuses an empty name: it accepts
    "a\nb", a NUL and 256 characters, and its `network ls` then prints broken rows. shoal also
    refuses control characters (they break listings, /etc/hosts and DNS names; a NUL cannot be
    a C string) and more than 255 characters (a file name's limit). Everything else Docker
    accepts (spaces, unicode, dots) is kept, so names that work with Docker work here."""
    if not name:
        raise InvalidParameter("invalid name: name is empty")
    if len(name) > MAX_NETWORK_NAME:
        raise InvalidParameter(
            f"invalid network name {name[:32]!r}...: {len(name)} characters, at most {MAX_NETWORK_NAME}"
        )
    bad = next((c for c in name if not c.isprintable()), None)
    if bad is not None:
        raise InvalidParameter(f"invalid network name {name!r}: control character {bad!r} is not allowed")


def check_usable_subnet(subnet: IPv4Network) -> None:
    for reserved, what in UNUSABLE_SUBNETS:
        if subnet.overlaps(reserved):
            raise InvalidParameter(f"invalid pool request: subnet {subnet} overlaps {what}")


def check_static_ip(requested: str, config: IPAMConfig | None) -> None:
    """A static --ip must be an IPv4 address of the network's subnet other than its gateway,
    network or broadcast address (Docker's wording for an address outside the subnet)."""
    try:
        address = IPv4Address(requested)
    except ValueError:
        raise InvalidParameter(f"invalid IPv4 address: {requested}") from None
    subnet = ip_network(config.subnet) if config is not None else None
    if subnet is None or address not in subnet:
        raise InvalidParameter(f"no configured subnet or ip-range contain the IP address {requested}")
    if config.gateway and address == IPv4Address(config.gateway):
        raise InvalidParameter(f"invalid IP address {requested}: it is the gateway of subnet {subnet}")
    if subnet.prefixlen < 31 and address in (subnet.network_address, subnet.broadcast_address):
        raise InvalidParameter(
            f"invalid IP address {requested}: it is the network or broadcast address of subnet {subnet}"
        )
