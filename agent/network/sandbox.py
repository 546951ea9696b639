"""Containers' sandboxes: namespace, endpoints in order, default route, /etc files, links and
embedded DNS registration — set up before a container's process starts, torn down after it exits.

The pure decisions come from agent.network.plan; addresses and plumbing from the network
controller and its drivers. shoal.engine (and later the swarm agent) call it per container.
"""
from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agent.executor.spec import Mount
from agent.network import bridge as kernel
from agent.network import etcfiles, links, plan
from agent.network import netns as namespaces
from agent.network.controller import DEFAULT_NETWORK, NetworkController
from agent.network.dns import NameTable
from agent.network.dnsserver import EmbeddedDns
from agent.network.drivers import Join
from agent.network.lb import ServiceLoadBalancer
from agent.network.records import EndpointRecord, NetworkRecord
from common import failpoint, rtnl
from common.procsys import fast_arp_retries, write_proc_sys
from common.errdefs import NotFound, SystemError_

log = logging.getLogger(__name__)


class Container(Protocol):
    """What a sandbox needs of a container (shoal.engine.records.ContainerRecord fits)."""

    id: str
    name: str
    hostname: str
    domainname: str
    network_mode: str  # the primary network's name
    netns: str  # "" when the container has no namespace of its own
    state: str
    endpoints: dict[str, EndpointRecord]  # network id -> endpoint
    links: list[list[str]]  # [container id, alias]


@dataclass(slots=True)
class SandboxOptions:
    # <etc_root>/<id>/ holds a container's /etc files: under the exec root (a tmpfs, as containerd's bundles), for
    # they are rebuilt at every start; on the data disk each start's three new files cost a no-journal ext4 an
    # inode search past every recently deleted inode, on the event loop (bench/converge.py: 0.3 s of a 20-task
    # create). <data_dir>/containers/<id>/ is where they were before: a container whose files are still there (it
    # ran under an older daemon and was adopted running) keeps them there, as its bind mounts do.
    data_dir: Path
    etc_root: Path
    netns_prefix: str = "shoal-"
    dns: list[str] = field(default_factory=list)  # --dns: replaces the host's resolvers


class Sandboxes:
    """The sandboxes of one node's containers. Kernel methods run on the netlink thread;
    DNS methods on the event loop."""

    def __init__(self, net: NetworkController, options: SandboxOptions,
                 containers: Mapping[str, Container]) -> None:
        self.net = net
        self.options = options
        self.containers = containers
        self.dns_table = NameTable()
        self.dns: EmbeddedDns | None = None  # made by the owner on its event loop
        # Services' VIPs in every sandbox on their networks, and their DNS names (issue 12):
        # fed ServiceBindings by the swarm agent (update/remove/set_bindings).
        self.lb = ServiceLoadBalancer(dns=self.dns_table)
        # --add-host and --dns* of a container (the engine sets it: shoal.engine.createopts)
        self.etc_custom: Callable[[Container], etcfiles.EtcCustom | None] | None = None

    # ---- namespace and endpoints (kernel threads: one container's at a time, several containers side by side) --
    def has_namespace(self, container: Container) -> bool:
        driver = self.net.mode_driver(container.network_mode)
        return driver is None or not driver.shares_host_netns

    def setup(self, container: Container) -> str | None:
        """The container's namespace and endpoints; returns the namespace path (None when it
        shares the host's). Undoes its own work when a step fails."""
        if not self.has_namespace(container):
            return None
        container.netns = f"{self.options.netns_prefix}{container.id[:12]}"
        try:
            path = str(namespaces.create_netns(container.netns, ipv6=False))  # no IPv6 network: Docker turns it off
            ordered = self._ordered(container)
            for endpoint in ordered:
                self.net.allocate_endpoint(self.net.networks[endpoint.network_id], endpoint)
            for wanted in plan.wanted_interfaces(ordered):
                endpoint = container.endpoints[wanted.network_id]
                self._plumb(container, endpoint, wanted.ifname)
            self.refresh_default_route(container)
            self.lb.attach(container.id, path, container.endpoints)
        except Exception:
            self.teardown(container)
            raise
        return path

    def teardown(self, container: Container) -> None:
        """Frees addresses, veths and the namespace (Docker releases a stopped container's
        addresses; the next start allocates again)."""
        self.lb.detach(container.id)
        for endpoint in container.endpoints.values():
            self.net.unplumb(endpoint)
            self.net.release_endpoint(endpoint)
        if container.netns:
            self.delete_namespace(container.netns)
            container.netns = ""

    def delete_namespace(self, name: str) -> None:
        """Deletes a sandbox namespace of ours, its veths first: the kernel destroys a
        namespace (and the host ends of its veths) asynchronously, and only once no process
        holds it; deleted here, the host ends are gone when this returns."""
        try:
            stray = [n for n, kind in kernel.links_in(name).items() if kind == "veth"]
            kernel.delete_links_in(name, stray)
        except OSError as exc:  # the kernel still deletes them with the namespace, later
            log.warning("namespace %s: cannot delete its veths first (%s)", name, exc)
        namespaces.delete_netns(name)

    def reconcile_links(self, container: Container) -> tuple[list[str], list[str]]:
        """At restart, a running container's namespace is made to match its record: veths no
        endpoint names (a connect the daemon died in before saving) are deleted with their
        host end; endpoints whose veth is missing (a disconnect it died in) are plumbed again.
        Returns (deleted interface names, replumbed interface names)."""
        if not container.netns:
            return [], []
        present = kernel.links_in(container.netns)
        if not present:  # the namespace is gone: nothing to match
            return [], []
        stray = plan.stray_sandbox_links(present, container.endpoints.values())
        kernel.delete_links_in(container.netns, stray)
        replumbed = []
        for endpoint in plan.missing_sandbox_links(present, container.endpoints.values()):
            if endpoint.network_id in self.net.networks:
                self._plumb(container, endpoint, endpoint.ifname)
                replumbed.append(endpoint.ifname)
        if replumbed:
            self.refresh_default_route(container)
        self.lb.attach(container.id, namespaces.netns_path(container.netns), container.endpoints, adopted=True)
        return stray, replumbed

    def connect(self, container: Container, endpoint: EndpointRecord) -> None:
        """Adds an endpoint to a running container's sandbox; nothing is left when it fails."""
        net = self.net.networks[endpoint.network_id]
        self.net.allocate_endpoint(net, endpoint)
        taken = [e.ifname for e in container.endpoints.values()]
        try:
            self._plumb(container, endpoint, plan.next_ifname(taken))
            failpoint.hit("connect-after-plumb")  # the container's record does not have it yet
            self.lb.attach(container.id, namespaces.netns_path(container.netns),
                           [*container.endpoints, endpoint.network_id])
        except Exception as exc:
            self.net.unplumb(endpoint)
            self.net.release_endpoint(endpoint)
            raise SystemError_(f"failed to connect {container.name} to {net.name}: {exc}") from exc

    def disconnect(self, container: Container, endpoint: EndpointRecord) -> None:
        if container.netns:
            self.lb.attach(container.id, namespaces.netns_path(container.netns),
                           [n for n in container.endpoints if n != endpoint.network_id])
        self.net.unplumb(endpoint)
        failpoint.hit("disconnect-after-unplumb")  # the container's record still has it
        self.net.release_endpoint(endpoint)

    def _plumb(self, container: Container, endpoint: EndpointRecord, ifname: str) -> None:
        """The endpoint's interface `ifname` in the container's namespace, its neighbour resolution retried every
        100 ms (procsys.fast_arp_retries): an overlay peer's entry that reaches this node just after a first ARP
        for it no longer costs the connection a whole second (the bench's probes missed 1 to 3 rounds in 10)."""
        self.net.plumb(endpoint, Join(netns=container.netns, ifname=ifname, gateway=None))
        with rtnl.entered(namespaces.netns_path(container.netns)):
            write_proc_sys(fast_arp_retries(ifname))

    def _ordered(self, container: Container) -> list[EndpointRecord]:
        missing = [n for n in container.endpoints if n not in self.net.networks]
        if missing:
            raise NotFound(f"network {missing[0]} not found")
        primary = self.net.lookup(container.network_mode)
        return plan.interface_endpoints(container.endpoints, self.net.networks, primary.id,
                                        lambda n: self.net.driver(n).has_interfaces)

    def refresh_default_route(self, container: Container) -> None:
        """S12: external traffic leaves through the first non-internal network by name; a container
        whose networks give it no way out (overlays) gets one on docker_gwbridge first."""
        if not container.netns:
            return
        self.refresh_gateway_endpoint(container)
        kernel.set_default_route(container.netns, plan.default_gateway(container.endpoints.values(), self.net.networks))

    def refresh_gateway_endpoint(self, container: Container) -> None:
        """Adds the docker_gwbridge endpoint (its own interface, after the others) when the
        container needs one (plan.needs_gateway_endpoint), removes it when it no longer does (a
        bridge network connected). It is kept in the container's endpoints, marked gateway_only, so
        a stop, a restart of the daemon and IPAM rebuilds treat it like the others."""
        current = next((e for e in container.endpoints.values() if e.gateway_only), None)
        need = plan.needs_gateway_endpoint(container.endpoints.values(), self.net.networks,
                                           lambda n: self.net.driver(n).external_connectivity)
        if need and current is None:
            gwnet, _made = self.net.ensure_gwbridge()
            endpoint = EndpointRecord(id=secrets.token_hex(32), network_id=gwnet.id, container_id=container.id,
                                      gateway_only=True)
            self.net.allocate_endpoint(gwnet, endpoint)
            taken = [e.ifname for e in container.endpoints.values()]
            try:
                self._plumb(container, endpoint, plan.next_ifname(taken))
            except Exception:
                self.net.unplumb(endpoint)
                self.net.release_endpoint(endpoint)
                raise
            container.endpoints[gwnet.id] = endpoint
        elif not need and current is not None:
            self.net.unplumb(current)
            self.net.release_endpoint(current)
            del container.endpoints[current.network_id]

    def publish_endpoint(self, container: Container) -> EndpointRecord | None:
        """Ports are published on the network that gives the container its default route."""
        return plan.route_endpoint(container.endpoints, self.net.networks)

    # ---- /etc files ---------------------------------------------------------------------
    def etc_roots(self) -> list[Path]:
        """Where the containers' /etc file directories are: the exec root, then the data dir of older daemons."""
        return [self.options.etc_root, self.options.data_dir / "containers"]

    def etc_dir(self, container_id: str) -> Path:
        """The directory of the container's /etc files (see SandboxOptions)."""
        current, legacy = (root / container_id for root in self.etc_roots())
        return legacy if legacy.is_dir() else current

    def etc_dirs(self, container_id: str) -> list[Path]:
        """Every place the container's /etc files may be (for their removal)."""
        return [root / container_id for root in self.etc_roots()]

    def etc_path(self, container: Container, name: str) -> str:
        return str(self.etc_dir(container.id) / name)

    def write_etc_files(self, container: Container) -> list[Mount]:
        """/etc/hosts, resolv.conf and hostname of the container, rewritten in place (a running
        container keeps seeing the same bind-mounted files)."""
        directory = self.etc_dir(container.id)
        directory.mkdir(parents=True, exist_ok=True)
        host_resolv = self.host_resolv_conf()
        if not self.has_namespace(container):
            hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else etcfiles.HOSTS_HEADER
            resolv = host_resolv
        else:
            own_ips = [e.ipv4 for e in self._ordered(container) if e.ipv4]
            names = [container.hostname]
            if container.domainname:
                names.insert(0, f"{container.hostname}.{container.domainname}")
            custom = self.etc_custom(container) if self.etc_custom is not None else None
            extra = self.link_hosts(container) + (custom.hosts if custom else [])
            hosts = etcfiles.hosts_file([(ip, names) for ip in own_ips[:1]], extra)
            if custom is not None and custom.has_dns:
                resolv = etcfiles.custom_resolv_conf(host_resolv, bool(self.user_endpoints(container)), custom)
            elif self.user_endpoints(container):
                resolv = etcfiles.embedded_resolv_conf(host_resolv)
            else:
                resolv = etcfiles.container_resolv_conf(host_resolv)
        files = {"hosts": hosts, "resolv.conf": resolv, "hostname": container.hostname + "\n"}
        mounts = []
        for name, text in files.items():
            path = directory / name
            etcfiles.write_in_place(path, text, mode=0o644)
            mounts.append(Mount(source=str(path), destination=f"/etc/{name}"))
        return mounts

    def host_resolv_conf(self) -> str:
        """The host's resolv.conf, with its nameservers replaced by --dns when given."""
        path = Path("/etc/resolv.conf")
        text = path.read_text() if path.exists() else ""
        if not self.options.dns:
            return text
        kept = [line for line in text.splitlines() if not line.strip().startswith("nameserver")]
        return "\n".join(kept + [f"nameserver {server}" for server in self.options.dns]) + "\n"

    def user_endpoints(self, container: Container) -> list[tuple[NetworkRecord, EndpointRecord]]:
        """Endpoints on user-defined networks: those get the embedded DNS server."""
        return [
            (self.net.networks[e.network_id], e)
            for e in container.endpoints.values()
            if e.network_id in self.net.networks and not self.net.networks[e.network_id].predefined
            and not e.gateway_only  # docker_gwbridge joins every overlay container: no names there
        ]

    # ---- links (S13) ---------------------------------------------------------------------
    def on_default_bridge(self, container: Container) -> bool:
        try:
            return self.net.is_default_bridge(self.net.lookup(container.network_mode))
        except NotFound:
            return False

    def linked(self, container: Container) -> list[tuple[Container, str]]:
        linked = []
        for linked_id, alias in container.links:
            other = self.containers.get(linked_id)
            if other is not None:
                linked.append((other, alias))
        return linked

    def bridge_ip(self, container: Container) -> str:
        """The container's address on the default bridge ("" when it has none)."""
        bridge = self.net.lookup(DEFAULT_NETWORK)
        endpoint = container.endpoints.get(bridge.id)
        return endpoint.ipv4 if endpoint else ""

    def link_hosts(self, container: Container) -> list[tuple[str, list[str]]]:
        """Links on the default bridge become /etc/hosts lines."""
        if not self.on_default_bridge(container):
            return []
        return [
            links.hosts_entry(self.bridge_ip(other), alias, other.id, other.name)
            for other, alias in self.linked(container)
            if self.bridge_ip(other)
        ]

    def link_aliases(self) -> dict[str, list[str]]:
        """On user-defined networks a link is only an alias of the linked container."""
        aliases: dict[str, list[str]] = {}
        for other in self.containers.values():
            try:
                if self.net.lookup(other.network_mode).predefined:
                    continue
            except NotFound:
                continue
            for linked_id, alias in other.links:
                aliases.setdefault(linked_id, []).append(alias)
        return aliases

    # ---- embedded DNS (event loop) ----------------------------------------------------------
    async def register_dns(self, container: Container, netns_path: str | None) -> None:
        user = self.user_endpoints(container)
        if not user or netns_path is None or self.dns is None:
            return
        aliases_from_links = self.link_aliases()
        for net, endpoint in user:
            if not endpoint.ipv4:
                continue
            names = [container.name, container.id[:12], *endpoint.aliases,
                     *aliases_from_links.get(container.id, [])]
            self.dns_table.set_endpoint(container.id, net.id, net.name, endpoint.ipv4, _unique(names))
        await self.dns.add_container(container.id, netns_path)

    async def unregister_dns(self, container: Container) -> None:
        self.dns_table.remove_container(container.id)
        if self.dns is not None:
            await self.dns.remove_container(container.id)

    async def unregister_endpoint(self, container: Container, network_id: str) -> None:
        """After a disconnect: the name goes from that network; the resolver goes when the
        container is on no user-defined network any more."""
        self.dns_table.remove_endpoint(container.id, network_id)
        if container.state == "running" and not self.user_endpoints(container) and self.dns is not None:
            await self.dns.remove_container(container.id)


def _unique(names: list[str]) -> list[str]:
    seen: list[str] = []
    for name in names:
        if name and name not in seen:
            seen.append(name)
    return seen
