"""The bridge driver: one Linux bridge per network, a veth per endpoint, Docker's bridge options.

Kernel work goes through agent.network.bridge (netlink); ownership of a bridge is its ifalias
mark, so shoal only deletes or rewrites bridges it made itself (see BridgeDriver).
"""
from __future__ import annotations

import ipaddress
import logging

from agent.network import bridge as kernel
from agent.network import firewall, plan
from agent.network.drivers.base import Driver, Join
from agent.network.records import EndpointRecord, NetworkRecord
from common.errdefs import Forbidden, InvalidParameter

log = logging.getLogger(__name__)

OPT_BRIDGE_NAME = "com.docker.network.bridge.name"
OPT_ICC = "com.docker.network.bridge.enable_icc"
OPT_MASQ = "com.docker.network.bridge.enable_ip_masquerade"
OPT_HOST_BINDING = "com.docker.network.bridge.host_binding_ipv4"
OPT_DEFAULT_BRIDGE = "com.docker.network.bridge.default_bridge"
OPT_MTU = "com.docker.network.driver.mtu"
BOOL_OPTIONS = (OPT_ICC, OPT_MASQ, OPT_DEFAULT_BRIDGE)


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


def bridge_name(net: NetworkRecord) -> str:
    return net.options.get(OPT_BRIDGE_NAME) or plan.derived_bridge_name(net.id)


def gateway_cidr(net: NetworkRecord) -> str:
    config = net.ipam_config[0]
    return f"{config.gateway}/{ipaddress.ip_network(config.subnet).prefixlen}"


def default_bridge_options(name: str, mtu: int) -> dict[str, str]:
    """The predefined `bridge` network's options, as Docker shows them."""
    return {
        OPT_DEFAULT_BRIDGE: "true",
        OPT_ICC: "true",
        OPT_MASQ: "true",
        OPT_HOST_BINDING: "0.0.0.0",
        OPT_BRIDGE_NAME: name,
        OPT_MTU: str(mtu),
    }


class BridgeDriver(Driver):
    """Ownership: a bridge shoal creates carries the ifalias `<mark_prefix><network id>`.

    The mark lives on the kernel object itself, so a bridge left by a SIGKILL between its
    creation and the save of its record is recognisable as shoal's orphan at the next start
    (a flag in the record could not say that: there is no record). A bridge that existed
    before (a name given with -o com.docker.network.bridge.name) gets no mark: it is used as
    it is, and the record remembers whether shoal added the gateway address to it.
    """

    name = "bridge"
    has_interfaces = True

    def __init__(self, mark_prefix: str, default_mtu: int) -> None:
        self.mark_prefix = mark_prefix
        self.default_mtu = default_mtu

    def mark(self, net: NetworkRecord) -> str:
        return f"{self.mark_prefix}{net.id}"

    # ---- create ---------------------------------------------------------------------
    def check_create(self, options: dict[str, str]) -> None:
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
        name = options.get(OPT_BRIDGE_NAME, "")
        if name:
            if len(name) > kernel.IFNAMSIZ:
                raise InvalidParameter(f"invalid bridge name {name}: longer than 15 characters")
            if "/" in name or any(c.isspace() or not c.isprintable() for c in name):
                raise InvalidParameter(f"invalid bridge name {name!r}")
            kind = kernel.link_kind(name)
            if kind is not None and kind != "bridge":
                raise InvalidParameter(f"existing interface {name} is not a bridge")

    def before_create(self, net: NetworkRecord) -> None:
        """Before the write-ahead record: a bridge that exists already is adopted, so a
        pending record saying adopted_bridge False proves any bridge of that name was made
        by this create (see plan.abandoned_bridge)."""
        kind = kernel.link_kind(bridge_name(net))
        alias = kernel.link_alias(bridge_name(net)) if kind is not None else ""
        net.adopted_bridge = plan.bridge_ownership(kind, alias, self.mark(net), True, False) == "adopt"

    def create_network(self, net: NetworkRecord, fresh: bool) -> None:
        """First creation (fresh) and every restart. A bridge that is not shoal's is only
        given the gateway address when it lacks it; shoal's own bridges follow the record."""
        name = bridge_name(net)
        kind = kernel.link_kind(name)
        alias = kernel.link_alias(name) if kind is not None else ""
        action = plan.bridge_ownership(kind, alias, self.mark(net), fresh, net.adopted_bridge)
        if action == "refuse":
            raise InvalidParameter(f"existing interface {name} is not a bridge")
        if action == "own":
            kernel.ensure_bridge(name, gateway_cidr(net), self.mtu(net), alias=self.mark(net))
            net.adopted_bridge = False
            net.gateway_added = False
            return
        net.adopted_bridge = True
        if kernel.add_address_if_missing(name, gateway_cidr(net)):
            net.gateway_added = True
        kernel.set_up(name)

    def delete_network(self, net: NetworkRecord) -> list[str]:
        name = bridge_name(net)
        if kernel.link_alias(name) == self.mark(net):
            kernel.delete_bridge(name)
        elif net.adopted_bridge and net.gateway_added:
            kernel.remove_address(name, gateway_cidr(net))
        return [name]

    def abandon(self, net: NetworkRecord) -> list[str]:
        """A create that never committed (pending record at start): its bridge goes when
        plan.abandoned_bridge proves it is shoal's, even unmarked."""
        name = bridge_name(net)
        kind = kernel.link_kind(name)
        alias = kernel.link_alias(name) if kind is not None else ""
        if plan.abandoned_bridge(name, kind, alias, self.mark(net), net):
            log.info("network %s: deleting bridge %s of its uncommitted create (%s)", net.id[:12], name,
                     "marked" if alias else "killed before its mark")
            kernel.delete_bridge(name)
        return [name]

    def remove_orphan_endpoints(self, live_ids: set[str]) -> list[str]:
        """Deletes host veths carrying this daemon's endpoint mark whose endpoint no running
        container's record holds (a crash between plumbing and saving, or in a teardown)."""
        names = plan.orphans_by_mark(kernel.veth_aliases(), self.mark_prefix, live_ids)
        for name in names:
            kernel.detach_endpoint(name)
        return names

    def remove_orphans(self, known_ids: set[str]) -> list[str]:
        """Deletes bridges carrying this daemon's mark whose network has no record (a crash
        between creation and the record's save, or between the record's removal and the
        bridge's); returns their names, whose firewall rules must go too."""
        names = orphan_bridges(kernel.bridge_aliases(), self.mark_prefix, known_ids)
        for name in names:
            kernel.delete_bridge(name)
        return names

    # ---- endpoints ------------------------------------------------------------------
    def join(self, net: NetworkRecord, endpoint: EndpointRecord, join: Join) -> None:
        endpoint.ifname = join.ifname
        kernel.attach_endpoint(
            bridge=bridge_name(net),
            netns=join.netns,
            host_ifname=endpoint.host_ifname,
            ifname=join.ifname,
            address_cidr=f"{endpoint.ipv4}/{endpoint.prefixlen}",
            mac=endpoint.mac,
            gateway=join.gateway,
            mtu=self.mtu(net),
            alias=f"{self.mark_prefix}{endpoint.id}",
        )

    def leave(self, net: NetworkRecord, endpoint: EndpointRecord) -> None:
        if endpoint.host_ifname:
            kernel.detach_endpoint(endpoint.host_ifname)

    # ---- what others ask ------------------------------------------------------------
    def mtu(self, net: NetworkRecord) -> int:
        return parse_mtu(net.options[OPT_MTU]) if OPT_MTU in net.options else self.default_mtu

    def firewall_net(self, net: NetworkRecord) -> firewall.BridgeNet:
        return firewall.BridgeNet(
            bridge=bridge_name(net),
            subnet=net.ipam_config[0].subnet,
            icc=parse_bool_option(OPT_ICC, net.options.get(OPT_ICC, "true")),
            masquerade=parse_bool_option(OPT_MASQ, net.options.get(OPT_MASQ, "true")),
            internal=net.internal,
        )

    def publish_iface(self, net: NetworkRecord) -> str:
        return bridge_name(net)

    def is_default(self, net: NetworkRecord) -> bool:
        return net.predefined and net.options.get(OPT_DEFAULT_BRIDGE) == "true"


def orphan_bridges(aliases: dict[str, str], mark_prefix: str, known_ids: set[str]) -> list[str]:
    """Pure: names of bridges whose alias is `<mark_prefix><id>` with an id not in known_ids."""
    return plan.orphans_by_mark(aliases, mark_prefix, known_ids)
