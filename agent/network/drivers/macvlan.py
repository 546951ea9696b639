"""The macvlan driver: containers get a macvlan child of a host interface (`-o parent=IFACE`)
and appear on that interface's LAN with their own MAC, as with Docker's macvlan driver.

Kernel work goes through agent.network.macvlan; registered by agent.network.drivers.default_registry.
"""
from __future__ import annotations

import logging

from agent.network import macvlan as kernel
from agent.network import plan
from agent.network.bridge import IFNAMSIZ, link_alias
from agent.network.drivers.base import Driver, Join
from agent.network.drivers.bridge import OPT_MTU, parse_mtu
from agent.network.records import EndpointRecord, NetworkRecord
from common.errdefs import InvalidParameter, NotImplemented_

OPT_PARENT = "parent"
OPT_MODE = "macvlan_mode"
KNOWN_OPTIONS = (OPT_PARENT, OPT_MODE, OPT_MTU)

log = logging.getLogger(__name__)


class MacvlanDriver(Driver):
    name = "macvlan"
    has_interfaces = True
    # The subnet is the parent's LAN: it is routed on the host already, and that is the point.
    subnet_on_host_lan = True

    def __init__(self, mark_prefix: str) -> None:
        # An 802.1q parent shoal makes (`-o parent=eth0.10` where eth0.10 does not exist) carries
        # `<mark_prefix><network id>`; only such links are ever deleted.
        self.mark_prefix = mark_prefix

    def mark(self, net: NetworkRecord) -> str:
        return f"{self.mark_prefix}{net.id}"

    def check_create(self, options: dict[str, str]) -> None:
        for key in options:
            if key not in KNOWN_OPTIONS:
                raise InvalidParameter(f"invalid option {key} for the macvlan driver")
        parent = options.get(OPT_PARENT, "")
        if not parent:
            # Docker makes a dummy parent then; this kernel has no dummy links (DESIGN §10).
            raise InvalidParameter("the macvlan driver needs a parent interface: -o parent=IFACE")
        if len(parent) > IFNAMSIZ or "/" in parent or not parent.isprintable():
            raise InvalidParameter(f"invalid parent interface name {parent!r}")
        if kernel.parent_kind(parent) is None:
            vlan = kernel.vlan_parent(parent)
            if vlan is None or kernel.parent_kind(vlan[0]) is None:
                raise InvalidParameter(f"-o parent interface was not found on the host: {parent}")
        mode = options.get(OPT_MODE, "bridge")
        if mode not in kernel.MODES:
            raise InvalidParameter(f"requested macvlan mode '{mode}' is not valid, 'bridge' mode is the macvlan driver default")
        if OPT_MTU in options:
            parse_mtu(options[OPT_MTU])

    def create_network(self, net: NetworkRecord, fresh: bool) -> None:
        """Makes the 802.1q parent when the user named one that does not exist (as Docker does);
        at a restart, makes it again if it went."""
        parent = net.options[OPT_PARENT]
        vlan = kernel.vlan_parent(parent)
        if vlan is not None and kernel.parent_kind(parent) is None:
            kernel.ensure_vlan(parent, vlan[0], vlan[1], self.mark(net))

    def delete_network(self, net: NetworkRecord) -> list[str]:
        parent = net.options.get(OPT_PARENT, "")
        if parent and link_alias(parent) == self.mark(net):
            kernel.delete_link(parent)
        return []

    def abandon(self, net: NetworkRecord) -> list[str]:
        return self.delete_network(net)

    def remove_orphans(self, known_ids: set[str]) -> list[str]:
        """Deletes 802.1q links carrying this daemon's mark whose network has no record."""
        names = plan.orphans_by_mark(kernel.vlan_aliases(), self.mark_prefix, known_ids)
        for name in names:
            log.info("deleting vlan link %s: its network has no record", name)
            kernel.delete_link(name)
        return []

    def join(self, net: NetworkRecord, endpoint: EndpointRecord, join: Join) -> None:
        endpoint.ifname = join.ifname
        endpoint.sandbox = join.netns
        kernel.attach_macvlan(
            parent=net.options[OPT_PARENT],
            mode=net.options.get(OPT_MODE, "bridge"),
            netns=join.netns,
            temp_ifname=endpoint.host_ifname,
            ifname=join.ifname,
            address_cidr=f"{endpoint.ipv4}/{endpoint.prefixlen}",
            mac=endpoint.mac,
            gateway=join.gateway,
            mtu=self.mtu(net),
        )

    def leave(self, net: NetworkRecord, endpoint: EndpointRecord) -> None:
        if endpoint.sandbox and endpoint.ifname:
            kernel.detach_macvlan(endpoint.sandbox, endpoint.ifname)

    def mtu(self, net: NetworkRecord) -> int | None:
        return parse_mtu(net.options[OPT_MTU]) if OPT_MTU in net.options else None


class IpvlanDriver(Driver):
    """ipvlan: this host's kernel has no ipvlan module, so say that, not `plugin not found`."""

    name = "ipvlan"

    def check_create(self, options: dict[str, str]) -> None:
        raise NotImplemented_("the ipvlan driver needs the kernel's ipvlan support, which this host's kernel does not have")
