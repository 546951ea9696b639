"""The routing mesh on one node: published ingress ports open on the host (DOCKER-INGRESS, as Docker)
and spread by the ingress sandbox over every task of the service, on this node or another.

Plans come from agent.network.meshplan; nftables through agent.network.lbnft, iptables through
agent.network.firewall.run_tool. The sandbox's interfaces (ingress network, gateway bridge) are
plumbed by the network drivers; this module only programs rules, in namespaces shoal made.
Blocking kernel calls: the owner runs them on its kernel thread.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from agent.network import meshplan
from agent.network.bridge import attach_endpoint, delete_links_in, links_in
from agent.network.firewall import FirewallError, PublishedPort, run_tool
from agent.network.firewall_live import Firewall
from agent.network.lbnft import NftContext, NftError
from agent.network.netns import create_netns, delete_netns, is_netns, netns_path
from agent.network.nsthread import entered
from agent.network.service_binding import ServiceBinding
from agent.network.sysctl import sysctl_path, write_sysctl
from common.mac import mac_from_ip

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _in(netns_path: str | None) -> Iterator[None]:
    if netns_path is None:
        yield
    else:
        with entered(netns_path):
            yield


@dataclass(slots=True, frozen=True)
class BridgePort:
    """One leg of the ingress sandbox: a veth from `bridge` (in namespace `bridge_netns`, None:
    the caller's) to interface `ifname` with `address_cidr` inside the sandbox."""

    bridge: str
    host_ifname: str
    ifname: str
    address_cidr: str
    bridge_netns: str | None = None
    gateway: str | None = None  # the sandbox's default route (the gateway bridge's address)


def make_ingress_sandbox(name: str, ingress: BridgePort, gateway: BridgePort, alias: str = "") -> Path:
    """The node's ingress sandbox, as Docker's ingress-sbox: namespace `name` with one leg on the
    ingress network's bridge and one on the gateway bridge (docker_gwbridge), its default route
    through the latter. Idempotent; on failure what it made is removed again. Returns its path."""
    existed = is_netns(name)
    path = create_netns(name, ipv6=False)  # as Docker's ingress_sbox
    try:
        for leg in (ingress, gateway):
            with _in(str(netns_path(leg.bridge_netns)) if leg.bridge_netns else None):
                attach_endpoint(leg.bridge, name, leg.host_ifname, leg.ifname, leg.address_cidr,
                                mac_from_ip(leg.address_cidr.split("/")[0]), leg.gateway, None, alias)
    except Exception:
        if not existed:
            remove_ingress_sandbox(name)
        raise
    return path


def remove_ingress_sandbox(name: str) -> None:
    """Delete the ingress sandbox (its veths go with it, on both bridges); no error if gone."""
    if not is_netns(name):
        return
    for ifname in links_in(name):
        if ifname != "lo":
            delete_links_in(name, [ifname])
    delete_netns(name)


class IngressSandbox:
    """The shoal_mesh table of the ingress sandbox (namespace at `netns_path`), whose interface on
    the ingress network is `ingress_ifname`. Forwarding is switched on there (it routes)."""

    def __init__(self, netns_path: str | Path, ingress_ifname: str) -> None:
        meshplan._check_ifname(ingress_ifname)
        self.netns_path = str(netns_path)
        self.ingress_ifname = ingress_ifname
        self.nft = NftContext(netns_path)
        self.ports: list[meshplan.IngressPort] | None = None
        with entered(self.netns_path):
            write_sysctl("net.ipv4.ip_forward", "1")

    def apply(self, ports: list[meshplan.IngressPort]) -> None:
        if ports == self.ports:
            return
        self.nft.run(meshplan.render_sandbox(ports, self.ingress_ifname))
        self.ports = list(ports)

    def in_place(self) -> bool:
        try:
            out = self.nft.run(f"list chain ip {meshplan.TABLE} postrouting\n")
        except NftError:
            return False
        return "masquerade" in out

    def reassert(self) -> bool:
        if self.ports is None or self.in_place():
            return False
        self.nft.run(meshplan.render_sandbox(self.ports, self.ingress_ifname))
        return True

    def remove(self) -> None:
        try:
            self.nft.run(f"table ip {meshplan.TABLE}\ndelete table ip {meshplan.TABLE}\n")
        except NftError as exc:
            log.debug("shoal_mesh: %s", exc)
        self.ports = None
        self.nft.close()


class HostIngress:
    """The host's DOCKER-INGRESS chains (nat and filter) and the jumps to them, in the namespace
    at `netns_path` (None: the calling thread's, the node's own)."""

    def __init__(self, sandbox_ip: IPv4Address | str, gw_bridge: str, netns_path: str | Path | None = None) -> None:
        self.sandbox_ip = IPv4Address(sandbox_ip)
        self.gw_bridge = gw_bridge
        self.netns_path = str(netns_path) if netns_path is not None else None
        self.jumps = meshplan.host_jumps(gw_bridge)
        self.ports: list[meshplan.IngressPort] | None = None

    def apply(self, ports: list[meshplan.IngressPort]) -> None:
        text = meshplan.render_host(ports, self.sandbox_ip, self.gw_bridge)
        with _in(self.netns_path):
            run_tool(["iptables-restore", "-w", "--noflush"], stdin=text["nat"] + text["filter"])
            self._ensure_jumps()
            write_sysctl("net.ipv4.ip_forward", "1")
            key = f"net.ipv4.conf.{self.gw_bridge}.route_localnet"
            if sysctl_path(key).exists():  # the host's 127.0.0.1 connections may be DNATed out
                write_sysctl(key, "1")
        self.ports = list(ports)

    def in_place(self) -> bool:
        """Our jumps are there (FORWARD's in its place: shoal's firewall re-inserts its own at
        the head on a full apply) and the nat chain is not flushed."""
        with _in(self.netns_path):
            return (all(self._has(table, chain, spec) for table, chain, spec in self.jumps if chain != "FORWARD")
                    and meshplan.forward_position(self._forward_rules()) is None
                    and self._has("nat", meshplan.CHAIN, ["-j", "RETURN"]))

    def reassert(self) -> bool:
        if self.ports is None or self.in_place():
            return False
        self.apply(self.ports)
        return True

    def remove(self) -> None:
        """Our jumps and chains go; nothing else is touched."""
        with _in(self.netns_path):
            for table, chain, spec in self.jumps:
                while self._has(table, chain, spec):
                    run_tool(["iptables", "-w", "-t", table, "-D", chain, *spec])
            for table in ("nat", "filter"):
                for args in (["-F", meshplan.CHAIN], ["-X", meshplan.CHAIN]):
                    try:
                        run_tool(["iptables", "-w", "-t", table, *args])
                    except FirewallError:
                        pass  # not there
        self.ports = None

    def _ensure_jumps(self) -> None:
        for table, chain, spec in self.jumps:
            if chain == "FORWARD":
                position = meshplan.forward_position(self._forward_rules())
                if position is not None:
                    while self._has(table, chain, spec):
                        run_tool(["iptables", "-w", "-t", table, "-D", chain, *spec])
                    run_tool(["iptables", "-w", "-t", table, "-I", chain, str(position), *spec])
            elif not self._has(table, chain, spec):
                # Appended: shoal's firewall wants its own rules at the head of built-in chains
                # (firewall.layout_matches); published host ports are matched first, as Docker does.
                run_tool(["iptables", "-w", "-t", table, "-A", chain, *spec])

    def _forward_rules(self) -> list[str]:
        return run_tool(["iptables", "-w", "-t", "filter", "-S", "FORWARD"]).splitlines()

    def _has(self, table: str, chain: str, spec: list[str]) -> bool:
        try:
            run_tool(["iptables", "-w", "-t", table, "-C", chain, *spec])
            return True
        except FirewallError:
            return False


class FirewallIngress:
    """The host side through shoal's own firewall (agent.network.firewall_live.Firewall) instead
    of DOCKER-INGRESS chains: every ingress port is a port the ingress sandbox publishes on the
    gateway bridge, in the firewall's slot chains (DNAT, the ACCEPT ahead of the bridge's DROP,
    the hairpin masquerade). The firewall's rule order, model and watch then hold them; the
    owner's full applies must include published_ports() (NetworkController.published_ports)."""

    OWNER = "ingress-sbox"

    def __init__(self, firewall: Firewall, sandbox_ip: IPv4Address | str, gw_bridge: str,
                 netns_path: str | Path | None = None) -> None:
        self.firewall = firewall
        self.sandbox_ip = IPv4Address(sandbox_ip)
        self.gw_bridge = gw_bridge
        self.netns_path = str(netns_path) if netns_path is not None else None
        self.ports: list[meshplan.IngressPort] | None = None

    def published_ports(self) -> list[PublishedPort]:
        return [PublishedPort(self.gw_bridge, str(self.sandbox_ip), p.published, p.proto, "", p.published, self.OWNER)
                for p in self.ports or ()]

    def apply(self, ports: list[meshplan.IngressPort]) -> None:
        old, self.ports = self.ports, list(ports)
        try:
            with _in(self.netns_path):
                self.firewall.publish(self.OWNER, self.published_ports())
        except Exception:
            self.ports = old
            raise

    def in_place(self) -> bool:
        return True  # the firewall's own watch checks and re-applies its rules

    def reassert(self) -> bool:
        return False

    def remove(self) -> None:
        with _in(self.netns_path):
            self.firewall.unpublish(self.OWNER)
        self.ports = None


@dataclass(slots=True)
class RoutingMesh:
    """The node's part of the mesh: the bindings on the ingress network make the published ports
    of the host and the ingress sandbox's spread, both rewritten on every change (a handful of
    ports: the cost is one small batch each)."""

    ingress_network_id: str
    sandbox: IngressSandbox
    host: HostIngress | FirewallIngress
    bindings: dict[str, ServiceBinding] = field(default_factory=dict)  # service id -> binding
    _lock: threading.RLock = field(default_factory=threading.RLock)

    def update(self, binding: ServiceBinding) -> None:
        if binding.network_id != self.ingress_network_id:
            return
        with self._lock:
            wanted = dict(self.bindings)
            wanted[binding.service_id] = binding
            self._apply(wanted)

    def remove(self, service_id: str) -> None:
        with self._lock:
            if service_id in self.bindings:
                wanted = dict(self.bindings)
                del wanted[service_id]
                self._apply(wanted)

    def set_bindings(self, bindings: Iterable[ServiceBinding]) -> None:
        with self._lock:
            self._apply({b.service_id: b for b in bindings if b.network_id == self.ingress_network_id})

    def in_place(self) -> bool:
        """Whether the sandbox's table and the host's rules are there (for a periodic watch)."""
        return (self.sandbox.ports is None or self.sandbox.in_place()) and \
            (self.host.ports is None or self.host.in_place())

    def reassert(self) -> list[str]:
        with self._lock:
            return [name for name, part in (("sandbox", self.sandbox), ("host", self.host)) if part.reassert()]

    def firewall_ports(self) -> list[PublishedPort]:
        """The ports the node's firewall must keep in its full applies (FirewallIngress's)."""
        return self.host.published_ports() if isinstance(self.host, FirewallIngress) else []

    def close(self) -> None:
        with self._lock:
            self.host.remove()
            self.sandbox.remove()

    def _apply(self, wanted: dict[str, ServiceBinding]) -> None:
        ports = meshplan.ingress_ports(wanted.values(), self.ingress_network_id)  # validates first
        # Sandbox first: a port opens on the host only once the sandbox knows where it goes.
        self.sandbox.apply(ports)
        self.host.apply(ports)
        self.bindings = wanted
