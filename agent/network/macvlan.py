"""macvlan endpoints over netlink: a macvlan child of a parent interface, moved into a sandbox.

Used by the macvlan driver (agent/network/drivers/macvlan.py); namespaces come from netns.py.
"""
from __future__ import annotations

import errno
from ipaddress import IPv4Address, IPv4Interface
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from agent.network.bridge import DEFAULT_ROUTE, NetworkSetupError, _check_ifname, _check_mac, _check_mtu, _delete_link
from agent.network.netns import netns_path
from agent.network.nsthread import iproute_in
from common.errdefs import NotImplemented_

MODES = ("bridge", "private", "vepa", "passthru")


def parent_kind(parent: str) -> str | None:
    """The kind of the parent link ("" for a plain device such as a veth end or a NIC), None if
    there is no such link."""
    with IPRoute() as ipr:
        found = ipr.get_links(ifname=parent) if ipr.link_lookup(ifname=parent) else []
        if not found:
            return None
        info = found[0].get("IFLA_LINKINFO")
        return (info.get("IFLA_INFO_KIND") if info is not None else None) or ""


def attach_macvlan(parent: str, mode: str, netns: str, temp_ifname: str, ifname: str, address_cidr: str,
                   mac: str, gateway: str | None, mtu: int | None) -> None:
    """A macvlan child of `parent` named `ifname` inside `netns`, with its address, MAC and the
    default route when `gateway` is given. Made under `temp_ifname` in this namespace, then
    moved (an "eth0" never clashes with the host's own names); removed again when a step fails.
    Idempotent: an `ifname` already in the namespace is left as it is."""
    _check_ifname(temp_ifname)
    _check_ifname(ifname)
    _check_mtu(mtu)
    mac = _check_mac(mac)
    iface = IPv4Interface(address_cidr)
    gw = IPv4Address(gateway) if gateway else None
    ns_file = netns_path(netns)
    if not ns_file.exists():
        raise NetworkSetupError(f"network namespace {netns} does not exist")
    with iproute_in(ns_file) as nsr:
        if nsr.link_lookup(ifname=ifname):
            return
    with IPRoute() as ipr:
        parents = ipr.link_lookup(ifname=parent)
        if not parents:
            raise NetworkSetupError(f"parent interface {parent} does not exist")
        _delete_link(ipr, temp_ifname)  # a half of an earlier crash
        settings: dict[str, Any] = {"address": mac}
        if mtu is not None:
            settings["mtu"] = mtu
        try:
            ipr.link("add", ifname=temp_ifname, kind="macvlan", link=parents[0], macvlan_mode=mode, **settings)
        except NetlinkError as exc:
            raise NetworkSetupError(f"cannot create macvlan {temp_ifname} on {parent}: {exc}") from exc
        try:
            index = ipr.link_lookup(ifname=temp_ifname)[0]
            ipr.link("set", index=index, net_ns_fd=str(ns_file))
        except Exception:
            _delete_link(ipr, temp_ifname)
            raise
    try:
        with iproute_in(ns_file) as nsr:
            index = nsr.link_lookup(ifname=temp_ifname)[0]
            nsr.link("set", index=index, ifname=ifname)
            nsr.addr("add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen)
            nsr.link("set", index=index, state="up")
            if gw is not None:
                nsr.route("replace", dst=DEFAULT_ROUTE, gateway=str(gw))
    except Exception:
        detach_macvlan(netns, ifname)
        detach_macvlan(netns, temp_ifname)
        raise


def detach_macvlan(netns: str, ifname: str) -> None:
    """Deletes the sandbox's macvlan interface; no error when it or the namespace is gone."""
    ns_file = netns_path(netns)
    if not ns_file.exists():
        return
    with iproute_in(ns_file) as nsr:
        _delete_link(nsr, ifname)


def vlan_parent(parent: str) -> tuple[str, int] | None:
    """("eth0", 10) for the 802.1q form "eth0.10" (VLAN ids 1-4094), else None."""
    base, dot, vid = parent.rpartition(".")
    if not dot or not base or not vid.isdigit() or len(vid) > 4 or not 1 <= int(vid) <= 4094:
        return None
    return base, int(vid)


def ensure_vlan(name: str, base: str, vid: int, alias: str) -> bool:
    """The 802.1q sub-interface `name` of `base`, up and carrying `alias` (shoal's mark) when
    this call made it. Returns whether it was made; an existing link is left as it is."""
    _check_ifname(name)
    with IPRoute() as ipr:
        if ipr.link_lookup(ifname=name):
            index = ipr.link_lookup(ifname=name)[0]
            ipr.link("set", index=index, state="up")
            return False
        bases = ipr.link_lookup(ifname=base)
        if not bases:
            raise NetworkSetupError(f"parent interface {base} of {name} does not exist")
        try:
            ipr.link("add", ifname=name, kind="vlan", link=bases[0], vlan_id=vid)
        except NetlinkError as exc:
            if exc.code == errno.EOPNOTSUPP:
                raise NotImplemented_(
                    f"the parent {name} needs the kernel's 802.1q VLAN support, which this host's kernel does not have"
                ) from None
            raise NetworkSetupError(f"cannot create vlan {name} on {base}: {exc}") from exc
        index = ipr.link_lookup(ifname=name)[0]
        # The kernel ignores IFLA_IFALIAS at creation: the mark takes a second request.
        ipr.link("set", index=index, ifalias=alias, state="up")
        return True


def vlan_aliases() -> dict[str, str]:
    """Every 802.1q link of this namespace with its ifalias ("" when none)."""
    with IPRoute() as ipr:
        result = {}
        for link in ipr.get_links():
            info = link.get("IFLA_LINKINFO")
            if info is not None and info.get("IFLA_INFO_KIND") == "vlan":
                result[link.get_attr("IFLA_IFNAME")] = link.get_attr("IFLA_IFALIAS") or ""
        return result


def delete_link(name: str) -> None:
    with IPRoute() as ipr:
        _delete_link(ipr, name)
