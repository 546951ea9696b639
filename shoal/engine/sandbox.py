"""A container's sandbox: namespace, endpoints, default route, /etc files, links, embedded DNS
entries and published ports — set up before its process starts and torn down after it exits.

A mixin of shoal.engine.engine.Engine: it uses the engine's `net` (NetworkController), `containers`,
`options`, `ports` (PortPublisher), `dns`/`dns_table` and `_kernel` (the netlink thread).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from agent.executor.spec import Mount
from agent.network import bridge as kernel
from agent.network import netns as namespaces
from agent.network.firewall import PublishedPort
from shoal.engine import etcfiles, links, publish
from shoal.engine.errors import EngineError, NotFound
from shoal.engine.helpers import exposed_of, unique, user_env
from shoal.engine.records import ContainerRecord, EndpointRecord, NetworkRecord

if TYPE_CHECKING:
    from shoal.engine.engine import Engine as _Engine
else:
    _Engine = object


class SandboxMixin(_Engine):
    def _setup_network(self, container: ContainerRecord) -> str | None:
        """Kernel thread: the container's namespace and endpoints; returns the namespace path
        (None in host mode). Undoes its own work when a step fails."""
        if container.network_mode == "host":
            return None
        container.netns = f"{self.options.netns_prefix}{container.id[:12]}"
        try:
            path = str(namespaces.create_netns(container.netns))
            for index, endpoint in enumerate(self._bridge_endpoints_in_order(container)):
                net = self.net.networks[endpoint.network_id]
                self.net.allocate_endpoint(net, container.id, endpoint, endpoint.requested_ipv4)
                self.net.plumb(endpoint, container.netns, f"eth{index}", default_route=False)
            self._refresh_default_route(container)
        except Exception:
            self._teardown_network(container)
            raise
        return path

    def _teardown_network(self, container: ContainerRecord) -> None:
        """Kernel thread: frees addresses, veths and the namespace (Docker releases a
        stopped container's addresses; the next start allocates again)."""
        for endpoint in container.endpoints.values():
            self.net.unplumb(endpoint)
            self.net.release_endpoint(endpoint)
        if container.netns:
            namespaces.delete_netns(container.netns)
            container.netns = ""

    def _bridge_endpoints_in_order(self, container: ContainerRecord) -> list[EndpointRecord]:
        endpoints = [
            e for n, e in container.endpoints.items()
            if n in self.net.networks and self.net.networks[n].driver == "bridge"
        ]
        missing = [n for n in container.endpoints if n not in self.net.networks]
        if missing:
            raise NotFound(f"network {missing[0]} not found")
        # The primary network (NetworkMode) is eth0, then the others by name.
        primary = self.net.lookup(container.network_mode).id if container.network_mode not in ("host", "none") else ""
        return sorted(endpoints, key=lambda e: (e.network_id != primary, self.net.networks[e.network_id].name))

    def _next_ifname(self, container: ContainerRecord) -> str:
        taken = {e.ifname for e in container.endpoints.values() if e.ifname.startswith("eth")}
        index = 0
        while f"eth{index}" in taken:
            index += 1
        return f"eth{index}"

    def _refresh_default_route(self, container: ContainerRecord) -> None:
        """S12: external traffic leaves through the first non-internal network by name."""
        if not container.netns:
            return
        candidates = sorted(
            (self.net.networks[e.network_id].name, e.gateway)
            for e in container.endpoints.values()
            if e.network_id in self.net.networks and e.ipv4 and e.gateway
        )
        kernel.set_default_route(container.netns, candidates[0][1] if candidates else None)

    def _write_etc_files(self, container: ContainerRecord) -> list[Mount]:
        """/etc/hosts, resolv.conf and hostname of the container, rewritten in place (a running
        container keeps seeing the same bind-mounted files)."""
        directory = self.options.data_dir / "containers" / container.id
        directory.mkdir(parents=True, exist_ok=True)
        host_resolv = self._host_resolv_conf()
        if container.network_mode == "host":
            hosts = Path("/etc/hosts").read_text() if Path("/etc/hosts").exists() else etcfiles.HOSTS_HEADER
            resolv = host_resolv
        else:
            own_ips = [e.ipv4 for e in self._bridge_endpoints_in_order(container) if e.ipv4]
            names = [container.hostname]
            if container.domainname:
                names.insert(0, f"{container.hostname}.{container.domainname}")
            hosts = etcfiles.hosts_file([(ip, names) for ip in own_ips[:1]], self._link_hosts(container))
            if self._user_endpoints(container):
                resolv = etcfiles.embedded_resolv_conf(host_resolv)
            else:
                resolv = etcfiles.container_resolv_conf(host_resolv)
        files = {"hosts": hosts, "resolv.conf": resolv, "hostname": container.hostname + "\n"}
        mounts = []
        for name, text in files.items():
            path = directory / name
            etcfiles.write_in_place(path, text)
            os.chmod(path, 0o644)
            mounts.append(Mount(source=str(path), destination=f"/etc/{name}"))
        return mounts

    def _host_resolv_conf(self) -> str:
        """The host's resolv.conf, with its nameservers replaced by --dns when given."""
        path = Path("/etc/resolv.conf")
        text = path.read_text() if path.exists() else ""
        if not self.options.dns:
            return text
        kept = [line for line in text.splitlines() if not line.strip().startswith("nameserver")]
        return "\n".join(kept + [f"nameserver {server}" for server in self.options.dns]) + "\n"

    def _user_endpoints(self, container: ContainerRecord) -> list[tuple[NetworkRecord, EndpointRecord]]:
        """Endpoints on user-defined networks: those get the embedded DNS server."""
        return [
            (self.net.networks[e.network_id], e)
            for e in container.endpoints.values()
            if e.network_id in self.net.networks and not self.net.networks[e.network_id].predefined
        ]

    def _linked(self, container: ContainerRecord) -> list[tuple[ContainerRecord, str]]:
        linked = []
        for linked_id, alias in container.links:
            other = self.containers.get(linked_id)
            if other is not None:
                linked.append((other, alias))
        return linked

    def _bridge_ip(self, container: ContainerRecord) -> str:
        bridge = self.net.lookup("bridge")
        endpoint = container.endpoints.get(bridge.id)
        return endpoint.ipv4 if endpoint else ""

    def _link_hosts(self, container: ContainerRecord) -> list[tuple[str, list[str]]]:
        """Links on the default bridge become /etc/hosts lines (S13)."""
        if container.network_mode != "bridge":
            return []
        return [
            links.hosts_entry(self._bridge_ip(other), alias, other.id, other.name)
            for other, alias in self._linked(container)
            if self._bridge_ip(other)
        ]

    def _link_env(self, container: ContainerRecord) -> list[str]:
        if container.network_mode != "bridge":
            return []
        env: list[str] = []
        for other, alias in self._linked(container):
            ip = self._bridge_ip(other)
            if other.state != "running" or not ip:
                raise EngineError(
                    f"Cannot link to a non running container: /{other.name} AS /{container.name}/{alias}", 400
                )
            exposed = sorted(
                (b["container_port"], b["proto"]) for b in other.port_bindings
            ) or exposed_of(other)
            env += links.link_env(alias, container.name, ip, exposed, user_env(other))
        return env

    # ---- embedded DNS ---------------------------------------------------------------
    async def _register_dns(self, container: ContainerRecord, netns_path: str | None) -> None:
        user = self._user_endpoints(container)
        if not user or netns_path is None or self.dns is None:
            return
        aliases_from_links = self._link_aliases()
        for net, endpoint in user:
            if not endpoint.ipv4:
                continue
            names = [container.name, container.id[:12], *endpoint.aliases,
                     *aliases_from_links.get(container.id, [])]
            self.dns_table.set_endpoint(container.id, net.id, net.name, endpoint.ipv4, unique(names))
        await self.dns.add_container(container.id, netns_path)

    def _link_aliases(self) -> dict[str, list[str]]:
        """On user-defined networks a link is only an alias of the linked container (S13)."""
        aliases: dict[str, list[str]] = {}
        for other in self.containers.values():
            if other.network_mode in ("bridge", "host", "none"):
                continue
            for linked_id, alias in other.links:
                aliases.setdefault(linked_id, []).append(alias)
        return aliases

    async def _unregister_dns(self, container: ContainerRecord) -> None:
        self.dns_table.remove_container(container.id)
        if self.dns is not None:
            await self.dns.remove_container(container.id)

    # ---- published ports ------------------------------------------------------------
    def _publish_endpoint(self, container: ContainerRecord) -> EndpointRecord | None:
        """Ports are published on the network that gives the container its default route."""
        candidates = sorted(
            (self.net.networks[e.network_id].name, e.network_id)
            for e in container.endpoints.values()
            if e.network_id in self.net.networks and e.ipv4 and e.gateway
        )
        return container.endpoints[candidates[0][1]] if candidates else None

    def _firewall_ports(self) -> list[PublishedPort]:
        ports: list[PublishedPort] = []
        for container in sorted(self.containers.values(), key=lambda c: c.id):
            if container.published:  # set while starting, cleared at exit
                ports += self._container_ports(container)
        return ports

    def _container_ports(self, container: ContainerRecord) -> list[PublishedPort]:
        endpoint = self._publish_endpoint(container)
        if endpoint is None:
            return []
        bridge = self.net.bridge_name(self.net.networks[endpoint.network_id])
        return publish.firewall_ports(container, bridge, endpoint.ipv4)

    def etc_path(self, container: ContainerRecord, name: str) -> str:
        return str(self.options.data_dir / "containers" / container.id / name)

    async def _release_ports(self, container: ContainerRecord) -> None:
        if container.published:
            container.published = []
            self.ports.unpublish(container)
            await self._kernel(self.net.unpublish_ports, container.id)
