"""Linux bridges and veth endpoints in the current network namespace, programmed over netlink.
Used by the network controller (bridge driver); namespaces come from netns.py, MACs from mac.py."""
from __future__ import annotations

import errno
import hashlib
import socket
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_interface
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from agent.network.netns import is_netns, netns_path
from common import failpoint
from agent.network.nsthread import iproute_in
from common import rtnl
from common.rtnl import Rtnl

IFNAMSIZ = 15  # kernel limit on interface names, without the NUL
DEFAULT_ROUTE = "0.0.0.0/0"


class NetworkSetupError(Exception):
    """A bridge or endpoint could not be set up; nothing of it is left behind."""


def host_ifname_for(endpoint_id: str) -> str:
    """Host-side veth name for an endpoint: 'veth' + 7 hex chars, stable for the same id."""
    if not endpoint_id:
        raise ValueError("endpoint id must not be empty")
    return "veth" + hashlib.sha256(endpoint_id.encode()).hexdigest()[:7]


def link_exists(name: str) -> bool:
    """True if an interface with this name exists in the current network namespace."""
    with IPRoute() as ipr:
        return bool(ipr.link_lookup(ifname=name))


def link_kind(name: str) -> str | None:
    """None when no link has this name; else its kind ("bridge", "veth", "" for a device)."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return None
        return _link_kind(ipr.get_links(found[0])[0]) or ""


def link_alias(name: str) -> str:
    """The link's ifalias ("" when it has none or does not exist): shoal's ownership mark."""
    with IPRoute() as ipr:
        found = ipr.link_lookup(ifname=name)
        if not found:
            return ""
        return ipr.get_links(found[0])[0].get_attr("IFLA_IFALIAS") or ""


def bridge_aliases() -> dict[str, str]:
    """Every bridge of the current namespace with its ifalias ("" when none)."""
    with IPRoute() as ipr:
        return {
            link.get_attr("IFLA_IFNAME"): link.get_attr("IFLA_IFALIAS") or ""
            for link in ipr.get_links()
            if _link_kind(link) == "bridge"
        }


def veth_aliases() -> dict[str, str]:
    """Every veth of the current namespace with its ifalias ("" when none)."""
    with IPRoute() as ipr:
        return {
            link.get_attr("IFLA_IFNAME"): link.get_attr("IFLA_IFALIAS") or ""
            for link in ipr.get_links()
            if _link_kind(link) == "veth"
        }


def links_in(netns: str) -> dict[str, str]:
    """The links inside namespace `netns` with their kind ("" for a device such as lo);
    empty when the namespace is gone or was never mounted."""
    path = netns_path(netns)
    if not is_netns(netns):
        return {}
    with iproute_in(path) as nsr:
        return {link.get_attr("IFLA_IFNAME"): _link_kind(link) or "" for link in nsr.get_links()}


def delete_links_in(netns: str, names: list[str]) -> None:
    """Deletes these links inside namespace `netns` (a veth's peer goes with it, at once);
    no error when one or the namespace is gone."""
    path = netns_path(netns)
    if not names or not is_netns(netns):
        return
    with iproute_in(path) as nsr:
        for name in names:
            _delete_link(nsr, name)


def add_address_if_missing(name: str, address_cidr: str) -> bool:
    """Adds the address to the link unless it has it; other addresses are left alone.
    Returns True when it added it."""
    iface = _parse_cidr(address_cidr)
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=name)[0]
        for addr in ipr.get_addr(family=socket.AF_INET, index=index):
            if addr.get("address") == str(iface.ip) and addr["prefixlen"] == iface.network.prefixlen:
                return False
        ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
        return True


def remove_address(name: str, address_cidr: str) -> None:
    """Removes this one address from the link; no error when the link or address is gone."""
    iface = _parse_cidr(address_cidr)
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=name):
            try:
                ipr.addr("del", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            except NetlinkError as exc:
                if exc.code not in (errno.EADDRNOTAVAIL, errno.ENODEV):
                    raise


def set_up(name: str) -> None:
    with IPRoute() as ipr:
        ipr.link("set", index=ipr.link_lookup(ifname=name)[0], state="up")


def ensure_bridge(name: str, address_cidr: str, mtu: int | None = None, alias: str = "") -> None:
    """Create bridge `name` if missing, give it exactly this one IPv4 address, set mtu and the
    ifalias (shoal's ownership mark), bring it up. Only for bridges shoal owns: it rewrites."""
    _check_ifname(name)
    iface = _parse_cidr(address_cidr)
    _check_mtu(mtu)
    with IPRoute() as ipr:
        created = False
        if not ipr.link_lookup(ifname=name):
            try:
                ipr.link("add", ifname=name, kind="bridge")
                created = True
                failpoint.hit("bridge-created-before-mark")
            except NetlinkError as exc:
                if exc.code != errno.EEXIST:
                    raise NetworkSetupError(f"cannot create bridge {name}: {exc}") from exc
        try:
            index = ipr.link_lookup(ifname=name)[0]
            kind = _link_kind(ipr.get_links(index)[0])
            if kind != "bridge":
                raise NetworkSetupError(f"cannot use {name} as a bridge: it is a {kind or 'non-bridge'} link")
            if created and alias:  # marked first: a crash after this leaves a recognisable orphan
                ipr.link("set", index=index, ifalias=alias)
            _ensure_only_address(ipr, index, iface)
            if mtu is not None:
                ipr.link("set", index=index, mtu=mtu)
            if alias and not created:
                ipr.link("set", index=index, ifalias=alias)
            ipr.link("set", index=index, state="up")
        except Exception:
            if created:
                _delete_link(ipr, name)
            raise


def delete_bridge(name: str) -> None:
    """Delete bridge `name`; no error if it does not exist."""
    with IPRoute() as ipr:
        _delete_link(ipr, name)


def host_routed_networks(exclude_ifname: str = "") -> list[IPv4Network]:
    """IPv4 subnets with a route or an address in the current namespace (default routes excluded),
    leaving out those of `exclude_ifname` (an existing bridge a new network will use)."""
    found: list[IPv4Network] = []
    with IPRoute() as ipr:
        excluded = set(ipr.link_lookup(ifname=exclude_ifname)) if exclude_ifname else set()
        for route in ipr.get_routes(family=socket.AF_INET, table=254):
            dst_len = route["dst_len"]
            if dst_len == 0 or route.get("oif") in excluded:
                continue
            found.append(IPv4Network(f"{route.get('dst')}/{dst_len}", strict=False))
        for addr in ipr.get_addr(family=socket.AF_INET):
            if addr["index"] in excluded:
                continue
            net = IPv4Network(f"{addr.get('address')}/{addr['prefixlen']}", strict=False)
            if not net.is_loopback:
                found.append(net)
    unique: list[IPv4Network] = []
    for net in found:
        if net not in unique:
            unique.append(net)
    return unique


def attach_endpoint(bridge: str, netns: str, host_ifname: str, ifname: str, address_cidr: str,
                    mac: str, gateway: str | None, mtu: int | None, alias: str = "") -> None:
    """Connect namespace `netns` to `bridge` with a veth pair named host_ifname / ifname.

    The container side is created directly inside the namespace, so its name ("eth0") never
    clashes with the host's own interfaces. Calling it again for the same endpoint re-asserts the
    settings; if anything fails on first creation, the veth is removed again. The host end gets
    `alias` (shoal's ownership mark) in the request right after the one that creates the pair
    (the kernel ignores IFLA_IFALIAS at creation); until then the pair is only recognisable
    from the container's side (agent.network.plan.stray_sandbox_links).
    """
    _check_ifname(host_ifname)
    _check_ifname(ifname)
    iface = _parse_cidr(address_cidr)
    _check_mtu(mtu)
    mac = _check_mac(mac)
    gw = _parse_gateway(gateway, iface)
    ns_file = netns_path(netns)
    if not ns_file.exists():
        raise NetworkSetupError(f"network namespace {netns} does not exist")
    if _attach_new(bridge, ns_file, host_ifname, ifname, iface, mac, gw, mtu, alias):
        return
    with IPRoute() as ipr:
        bridges = ipr.link_lookup(ifname=bridge)
        if not bridges:
            raise NetworkSetupError(f"bridge {bridge} does not exist")
        bridge_index = bridges[0]
        created = False
        existing = ipr.link_lookup(ifname=host_ifname)
        if existing and not _is_pair(ipr, host_ifname, netns, ifname):
            _delete_link(ipr, host_ifname)  # a stale half from an earlier crash: start over
            existing = []
        if not existing:
            peer: dict[str, Any] = {"ifname": ifname, "net_ns_fd": str(ns_file), "address": mac}
            if mtu is not None:
                peer["mtu"] = mtu
            try:
                ipr.link("add", ifname=host_ifname, kind="veth", peer=peer)
            except NetlinkError as exc:
                raise NetworkSetupError(
                    f"cannot create veth {host_ifname}/{ifname} in {netns}: {exc}") from exc
            created = True
            failpoint.hit("veth-created-before-mark")
        try:
            host_index = existing[0] if existing else ipr.link_lookup(ifname=host_ifname)[0]
            settings: dict[str, Any] = {"master": bridge_index, "state": "up"}
            if alias:
                settings["ifalias"] = alias
            if mtu is not None:
                settings["mtu"] = mtu
            ipr.link("set", index=host_index, **settings)
            # Hairpin: with no userland proxy, a container reaching its own published port
            # through the host's address comes back out of the port it went in (moby does the same).
            ipr.brport("set", index=host_index, mode=1)
            with iproute_in(netns_path(netns)) as nsr:
                index = nsr.link_lookup(ifname=ifname)[0]
                if not created:  # a new peer was made with this MAC and MTU already
                    nsr.link("set", index=index, address=mac, **({"mtu": mtu} if mtu else {}))
                if created:  # a new link has no address yet: no need to list them
                    nsr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
                else:
                    _ensure_only_address(nsr, index, iface)
                nsr.link("set", index=index, state="up")
                if gw is not None:
                    nsr.route("replace", dst=DEFAULT_ROUTE, gateway=str(gw))
        except Exception:
            if created:
                _delete_link(ipr, host_ifname)
            raise


def _attach_new(bridge: str, ns_file: Path, host_ifname: str, ifname: str, iface: IPv4Interface, mac: str,
                gw: IPv4Address | None, mtu: int | None, alias: str) -> bool:
    """attach_endpoint's usual case, a pair that does not exist yet, in plain rtnetlink requests (common/rtnl.py:
    a container start pays each of them): made on the bridge and up, marked, hairpin, then the namespace's end.
    False, having done nothing, when host_ifname exists (the step-by-step path checks what is there)."""
    with Rtnl() as nl:
        bridge_index = nl.link_index(bridge)
        if bridge_index is None:
            raise NetworkSetupError(f"bridge {bridge} does not exist")
        if nl.link_index(host_ifname) is not None:
            return False
        try:
            nl.veth_add(host_ifname, ifname, ns_file, master=bridge_index, mtu=mtu, up=True, peer_mac=mac)
        except rtnl.NetlinkError as exc:
            raise NetworkSetupError(f"cannot create veth {host_ifname}/{ifname} in {ns_file.name}: {exc}") from exc
        try:
            failpoint.hit("veth-created-before-mark")
            host_index = nl.link_index(host_ifname)
            if host_index is None:
                raise NetworkSetupError(f"veth {host_ifname} vanished after its creation")
            if alias:
                nl.link_set(host_index, alias=alias)
            # Hairpin: with no userland proxy, a container reaching its own published port
            # through the host's address comes back out of the port it went in (moby does the same).
            nl.hairpin(host_index)
            with Rtnl(ns_file) as nsr:
                index = nsr.link_index(ifname)
                if index is None:
                    raise NetworkSetupError(f"veth {ifname} did not appear in {ns_file.name}")
                nsr.addr_add(index, str(iface.ip), iface.network.prefixlen)
                nsr.link_set(index, up=True)
                if gw is not None:
                    nsr.default_route(str(gw))
        except BaseException:
            with IPRoute() as ipr:
                _delete_link(ipr, host_ifname)
            raise
    return True


def detach_endpoint(host_ifname: str) -> None:
    """Delete the veth pair by its host side (the kernel removes the peer); no error if gone."""
    with IPRoute() as ipr:
        _delete_link(ipr, host_ifname)


def set_default_route(netns: str, gateway: str | None) -> None:
    """Point the namespace's default route at `gateway`, or remove it when gateway is None."""
    gw = IPv4Address(gateway) if gateway else None
    if not netns_path(netns).exists():
        raise NetworkSetupError(f"network namespace {netns} does not exist")
    with Rtnl(netns_path(netns)) as nsr:  # every container start sets it: one plain request (common/rtnl.py)
        nsr.default_route(str(gw) if gw is not None else None)


def _is_pair(ipr: IPRoute, host_ifname: str, netns: str, ifname: str) -> bool:
    # Both ends name each other's ifindex (IFLA_LINK); that is enough to know the pair is ours.
    host = ipr.get_links(ipr.link_lookup(ifname=host_ifname)[0])[0]
    if _link_kind(host) != "veth" or host.get("IFLA_LINK_NETNSID") is None:
        return False
    with iproute_in(netns_path(netns)) as nsr:
        found = nsr.link_lookup(ifname=ifname)
        if not found:
            return False
        peer = nsr.get_links(found[0])[0]
        return peer.get("IFLA_LINK") == host["index"] and host.get("IFLA_LINK") == peer["index"]


def _ensure_only_address(ipr: IPRoute, index: int, iface: IPv4Interface) -> None:
    present = False
    for addr in ipr.get_addr(family=socket.AF_INET, index=index):
        if addr.get("address") == str(iface.ip) and addr["prefixlen"] == iface.network.prefixlen:
            present = True
            continue
        ipr.addr("del", index=index, address=addr.get("address"), prefixlen=addr["prefixlen"])
    if not present:
        ipr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)


def _delete_link(ipr: IPRoute, name: str) -> None:
    for index in ipr.link_lookup(ifname=name):
        try:
            ipr.link("del", index=index)
        except NetlinkError as exc:
            if exc.code != errno.ENODEV:
                raise


def _link_kind(link: Any) -> str | None:
    info = link.get("IFLA_LINKINFO")
    return info.get("IFLA_INFO_KIND") if info is not None else None


def _parse_cidr(address_cidr: str) -> IPv4Interface:
    try:
        iface = ip_interface(address_cidr)
    except ValueError:
        raise ValueError(f"invalid address {address_cidr!r}: expected IPv4 CIDR like 172.17.0.1/16") from None
    if not isinstance(iface, IPv4Interface) or "/" not in address_cidr:
        raise ValueError(f"invalid address {address_cidr!r}: expected IPv4 CIDR like 172.17.0.1/16")
    return iface


def _parse_gateway(gateway: str | None, iface: IPv4Interface) -> IPv4Address | None:
    if not gateway:
        return None
    try:
        gw = IPv4Address(gateway)
    except ValueError:
        raise ValueError(f"invalid gateway {gateway!r}: expected an IPv4 address") from None
    if gw not in iface.network:
        raise ValueError(f"invalid gateway {gateway}: not in subnet {iface.network}")
    return gw


def _check_ifname(name: str) -> None:
    if not name or len(name) > IFNAMSIZ or "/" in name or any(c.isspace() for c in name):
        raise ValueError(f"invalid interface name {name!r}: 1-{IFNAMSIZ} characters, no '/' or spaces")


def _check_mtu(mtu: int | None) -> None:
    if mtu is not None and not 68 <= mtu <= 65535:
        raise ValueError(f"invalid mtu {mtu}: must be between 68 and 65535")


def _check_mac(mac: str) -> str:
    parts = mac.lower().split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts):
        raise ValueError(f"invalid MAC address {mac!r}")
    return ":".join(parts)
