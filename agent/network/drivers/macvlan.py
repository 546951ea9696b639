"""The macvlan driver: containers get a macvlan child of a host interface (`-o parent=IFACE`)
and appear on that interface's LAN with their own MAC, as with Docker's macvlan driver.

Kernel work goes through agent.network.macvlan; registered by agent.network.drivers.default_registry.
"""
from __future__ import annotations

from agent.network import macvlan as kernel
from agent.network.bridge import IFNAMSIZ
from agent.network.drivers.base import Driver, Join
from agent.network.drivers.bridge import OPT_MTU, parse_mtu
from agent.network.records import EndpointRecord, NetworkRecord
from common.errdefs import InvalidParameter, NotImplemented_

OPT_PARENT = "parent"
OPT_MODE = "macvlan_mode"
KNOWN_OPTIONS = (OPT_PARENT, OPT_MODE, OPT_MTU)


class MacvlanDriver(Driver):
    name = "macvlan"
    has_interfaces = True
    # The subnet is the parent's LAN: it is routed on the host already, and that is the point.
    subnet_on_host_lan = True

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
            raise InvalidParameter(f"-o parent interface was not found on the host: {parent}")
        mode = options.get(OPT_MODE, "bridge")
        if mode not in kernel.MODES:
            raise InvalidParameter(f"requested macvlan mode '{mode}' is not valid, 'bridge' mode is the macvlan driver default")
        if OPT_MTU in options:
            parse_mtu(options[OPT_MTU])

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
