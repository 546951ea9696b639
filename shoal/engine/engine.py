"""The Engine: the one object shoal.api calls for networks, containers, execs and images.

Keeps the container lifecycle; composes the network layer (agent.network: controller and
sandboxes), the runc runtime (agent.executor) and the image store (agent.images); owns the
daemon's state directory. Every method either completes or raises a common.errdefs error and
leaves nothing half-done.
"""
from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import shutil
import signal as signals
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import shoal
from agent.executor.runtime import RuncError, RuncRuntime
from agent.executor.spec import ProcessSpec
from agent.images.store import ImageError, ImageNotFound, ImageStore
from agent.network import netns as namespaces
from agent.network import links
from agent.network.controller import DEFAULT_NETWORK, NetworkController, NetworkOptions
from agent.network.dns import upstreams_from_resolv_conf
from agent.network.dnsserver import EmbeddedDns
from agent.network.firewall import PublishedPort
from agent.network.firewall_watch import FirewallWatch
from agent.network.mesh import RoutingMesh
from agent.network.sandbox import SandboxOptions, Sandboxes
from agent.volumes.store import VolumeStore
from shoal.engine import container_mounts, createopts, health, publish, reconcile, restart, startfast, steptime
from shoal.engine.healthmon import HealthMonitors
from agent.executor import logfile
from shoal.engine.stdio import stdio_options
from shoal.engine.kernelwork import KernelWork
from shoal.engine.events import EventLog, container_event, exec_action, network_attributes
from shoal.engine.errors import Conflict, EngineError, Forbidden, InvalidParameter, NotFound, NotModified, SystemError_
from shoal.engine.helpers import (
    confinement_of,
    container_matches,
    exposed_of,
    image_process_user,
    label_filter,
    merge_env,
    parse_signal,
    parse_tail,
    process_user,
    ProcessUser,
    user_env,
)
from shoal.engine.names import generate_name, validate_container_name
from shoal.engine.records import (
    ContainerRecord,
    EndpointRecord,
    ExecRecord,
    NetworkRecord,
    container_from_dict,
)
from shoal.engine.resources import ContainerResources
from shoal.engine.requests import ContainerCreate, EndpointRequest, ExecCreate, NetworkCreate
from shoal.engine.state import StateDir
from shoal.engine.timefmt import now_rfc3339

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_STOP_TIMEOUT = 10
AUTO_REMOVE_DRAIN_SECONDS = 30.0
LOG_POLL_SECONDS = 0.1
WAIT_RETRY_SECONDS = 1.0
_SET_EVENT = asyncio.Event()
_SET_EVENT.set()


@dataclass(slots=True)
class EngineOptions:
    data_dir: Path
    exec_root: Path
    netns_prefix: str = "shoal-"
    bip: str = "172.17.0.1/16"
    mtu: int = 1500
    firewall_check_interval: float = 2.0
    dns: list[str] = field(default_factory=list)  # --dns: replaces the host's resolvers


class Engine:
    """Attributes the API reads: `daemon_id` (64 hex, stable across restarts), `data_dir`,
    `images` (agent.images.store.ImageStore)."""

    def __init__(self, options: EngineOptions) -> None:
        self.options = options
        self.version = shoal.__version__
        self.data_dir = options.data_dir
        self.state = StateDir(options.data_dir / "engine")
        self.daemon_id = self.state.daemon_id()
        self.images = ImageStore(options.data_dir / "images")
        self.volumes = VolumeStore(options.data_dir / "volumes")
        self.runtime = RuncRuntime(options.exec_root / "runc", options.data_dir / "runtime",
                                  bundle_root=options.exec_root / "bundles")
        self.net = NetworkController(
            self.state, NetworkOptions(bip=options.bip, mtu=options.mtu), daemon_id=self.daemon_id, clock=now_rfc3339
        )
        self.net.published_ports = self._firewall_ports
        self.ports = publish.PortPublisher(self.state)
        self.containers: dict[str, ContainerRecord] = {}
        self.sandboxes = Sandboxes(
            self.net,
            SandboxOptions(data_dir=options.data_dir, etc_root=options.exec_root / "containers",
                           netns_prefix=options.netns_prefix, dns=options.dns),
            self.containers,
        )
        # S21: a firewalld reload or `iptables -F` wipes our rules; they come back within seconds.
        self.firewall_watch = FirewallWatch(
            reapply=lambda: self._kernel(self.net.apply_firewall),
            check=self.net.firewall_in_place,
            interval=options.firewall_check_interval,
        )
        # The routing mesh, once the node has the ingress network (agent.network.mesh; the swarm
        # agent makes it). Services' VIP tables and the mesh come back after `nft flush ruleset`.
        self.mesh: RoutingMesh | None = None
        self.lb_watch = FirewallWatch(
            reapply=lambda: self._kernel(self._reassert_services),
            check=lambda: self.sandboxes.lb.in_place() and (self.mesh is None or self.mesh.in_place()),
            interval=options.firewall_check_interval,
        )
        self.execs: dict[str, ExecRecord] = {}
        self.resources = ContainerResources(self)  # cgroups: limits, stats, pause, OOM
        self.events = EventLog()  # GET /events (shoal.engine.events)
        self.restarts = restart.Supervisor(self.restart_after_exit)  # restart policies
        self.health_monitors = HealthMonitors(self)  # health checks (shoal.engine.healthmon)
        self.sandboxes.etc_custom = functools.partial(createopts.etc_custom, gateway=options.bip.split("/", 1)[0])
        self._locks: dict[str, asyncio.Lock] = {}
        self._exited: dict[str, asyncio.Event] = {}
        self._removed: dict[str, asyncio.Event] = {}
        self._watchers: dict[str, asyncio.Task] = {}
        self._readers: dict[str, int] = {}  # attached clients streaming a container's output
        self._readers_gone: dict[str, asyncio.Event] = {}
        self._background: set[asyncio.Task] = set()  # execs whose client detached
        # Netlink, namespaces, nftables: node-wide work in order on one thread, containers' sandbox
        # work side by side (shoal.engine.kernelwork).
        self._kernel_work = KernelWork()

    async def _kernel(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Node-wide kernel work: alone and in order."""
        return await self._kernel_work.node(fn, *args, **kwargs)

    async def _sandbox_kernel(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """One container's sandbox set-up or teardown (under its container lock): beside other containers'."""
        return await self._kernel_work.sandbox(fn, *args, **kwargs)

    # ---- start-up -------------------------------------------------------------------
    async def restore(self) -> None:
        """Brings kernel and records back in line after a start, a restart or a SIGKILL: the
        records are reconciled with runc and the shims (shoal.engine.reconcile): running
        containers are adopted, ones that exited meanwhile are marked exited with the code
        their shim recorded, uncommitted starts are undone, orphans of ours removed."""
        self.sandboxes.dns = EmbeddedDns(self.sandboxes.dns_table, upstreams_from_resolv_conf(self.sandboxes.host_resolv_conf()))
        # Services' DNS names change with their bindings on the kernel thread; the table is the loop's.
        self.sandboxes.lb.dns_dispatch = asyncio.get_running_loop().call_soon_threadsafe
        await self._kernel(self.net.restore)
        for container_id, record in self.state.load_records("containers", container_from_dict).items():
            if record.id != container_id:
                self.state.quarantine(self.state.path("containers", container_id),
                                      f"it holds the record of container {record.id[:12]}")
                continue
            self.containers[container_id] = record
        await self._reconcile_containers()
        await self._cgroups_at_start()
        await self._kernel(self._collect_orphan_namespaces)
        restart.restart_at_boot(self)
        if any(c.published for c in self.containers.values()):
            await self._kernel(self.net.apply_firewall)  # published ports of adopted containers
        self.firewall_watch.start()
        self.lb_watch.start()

    async def _reconcile_containers(self) -> None:
        try:
            in_runc: dict[str, reconcile.RuncEntry] | None = {
                cid: reconcile.RuncEntry(e.status, self.runtime.owns_bundle(e))
                for cid, e in (await self.runtime.list_runc()).items()
            }
        except (RuncError, OSError) as exc:  # then nothing is removed on runc's word
            log.warning("cannot list runc containers (%s): orphans are not collected this time", exc)
            in_runc = None
        observed = {cid: self._observe(cid) for cid in self.containers}
        etc_dirs = {p.name for root in self.sandboxes.etc_roots() if root.is_dir() for p in root.iterdir() if p.is_dir()}
        recorded = {cid: reconcile.UNREADABLE for cid in self.state.quarantined.get("containers", [])}
        recorded.update({cid: c.state for cid, c in self.containers.items()})
        holding = {cid for cid, c in self.containers.items() if _holds_network(c)}
        todo = reconcile.plan(recorded, observed, in_runc, set(self.runtime.list_ids()), etc_dirs, holding)
        for cid in todo.foreign:
            log.warning("runc container %s under %s is not one shoal made: left alone", cid, self.runtime.runc_root)
        for cid in todo.remove:
            log.info("removing orphan container %s (runc state or bundle without a record)", cid)
            try:
                await self.runtime.remove(cid)
                self.runtime.remove_logs(cid)
            except (RuncError, OSError) as exc:
                log.error("cannot remove orphan container %s: %s", cid, exc)
        for cid in todo.remove_etc_dirs:
            self._remove_etc_files(cid)
        for cid in todo.discard:
            container = self.containers[cid]
            log.info("container %s: its start was not committed before the daemon stopped; undoing it", cid)
            try:
                await self.runtime.discard_start(cid)
            except (RuncError, OSError) as exc:
                log.error("cannot undo the start of container %s: %s", cid, exc)
            container.pid = 0
            await self._release_ports(container)
            await self._kernel(self.sandboxes.teardown, container)
            self._save_quietly(container)
        for cid in todo.release:
            container = self.containers[cid]
            log.info("container %s is not running: releasing the network resources its record holds", cid)
            await self._release_ports(container)
            await self._kernel(self.sandboxes.teardown, container)
            self._save_quietly(container)
        for cid, code in todo.finish.items():
            await self._finish(self.containers[cid], code)
        for cid in todo.adopt:
            container = self.containers[cid]
            status = observed[cid]
            if status.state == "running":
                container.pid = self.runtime.status(cid).pid or container.pid
            self._watch(container)
            self.health_monitors.start(container)  # a restarted daemon checks again from "starting"
            if container.netns:  # the old daemon's resolver sockets died with it
                await self.sandboxes.register_dns(container, str(namespaces.netns_path(container.netns)))

    async def _cgroups_at_start(self) -> None:
        """Stopped runc containers kept for their OOM counter (a crash before the exit was
        recorded) go, then this daemon's cgroups that no running container owns."""
        for cid, container in self.containers.items():
            if container.state != "running":
                await self.resources.delete_stopped(cid)
        self.resources.remove_orphans({cid for cid, c in self.containers.items() if c.state == "running"})

    def _observe(self, container_id: str) -> reconcile.Observed:
        try:
            status = self.runtime.status(container_id)
            return reconcile.Observed(status.state, status.exit_code, self.runtime.start_in_progress(container_id))
        except OSError as exc:
            log.warning("container %s: cannot read its runtime state (%s)", container_id, exc)
            return reconcile.Observed("unreadable")

    def _collect_orphan_namespaces(self) -> None:
        """Network side of the restart, once the containers are known: namespaces with our
        prefix that no running container owns (left by a crash) go with their veths, veths
        no record names go (inside running containers, and host ends carrying our mark), the
        record's endpoints whose veth a crash removed are plumbed again, and
        IPAM is rebuilt from the endpoints of running containers, so no address leaks and
        none is given twice."""
        running = [c for c in self.containers.values() if c.state == "running"]
        owned = {c.netns for c in running if c.netns}
        # A container whose record was moved aside may still run: its namespace stays too.
        owned |= {f"{self.options.netns_prefix}{cid[:12]}" for cid in self.state.quarantined.get("containers", [])}
        for name in namespaces.list_netns(self.options.netns_prefix):
            suffix = name[len(self.options.netns_prefix):]
            # Only the names shoal gives (prefix + 12 hex of a container id): never a lab's or
            # another tool's namespace that happens to share the prefix.
            if name not in owned and len(suffix) == 12 and all(c in "0123456789abcdef" for c in suffix):
                self.sandboxes.delete_namespace(name)
        for container in running:
            try:
                stray, replumbed = self.sandboxes.reconcile_links(container)
            except Exception:  # one container's namespace must not stop the daemon's start
                log.exception("container %s: cannot match its interfaces with its record", container.id[:12])
                continue
            if stray:
                log.info("container %s: removed interfaces its record does not name: %s",
                         container.id[:12], ", ".join(stray))
            if replumbed:
                log.info("container %s: plumbed again interfaces its record names: %s",
                         container.id[:12], ", ".join(replumbed))
        if self.state.quarantined.get("containers"):
            # An unreadable record's container may run with veths we cannot tell apart.
            log.warning("container records were moved aside: orphan veths are not collected this time")
        else:
            self.net.remove_orphan_endpoints(e for c in running for e in c.endpoints.values())
        self.net.rebuild_allocations(e for c in running for e in c.endpoints.values())

    async def close(self) -> None:
        """Stops watching; containers keep running (live restore)."""
        self.restarts.close()  # pending restarts happen at the next start (restart_at_boot)
        await self.health_monitors.close()
        await self.firewall_watch.stop()
        await self.lb_watch.stop()
        self.runtime.close()
        await self._kernel(self.sandboxes.lb.close_contexts)
        for task in self._watchers.values():
            task.cancel()
        self._watchers.clear()
        if self.sandboxes.dns is not None:
            await self.sandboxes.dns.close()
        self._kernel_work.shutdown()

    # ---- networks -------------------------------------------------------------------
    def list_networks(self, filters: dict[str, list[str]]) -> list[NetworkRecord]:
        dangling = filters.get("dangling")
        rest = {k: v for k, v in filters.items() if k != "dangling"}
        networks = self.net.list(rest)
        if dangling:
            want = dangling[0].lower() in ("true", "1")
            networks = [
                n for n in networks
                if (not n.predefined and not self.network_endpoints(n.id)) == want
            ]
        return networks

    def get_network(self, ref: str, scope: str = "") -> NetworkRecord:
        return self.net.lookup(ref, scope)

    def network_endpoints(self, network_id: str) -> list[tuple[ContainerRecord, EndpointRecord]]:
        attached = []
        for container in self.containers.values():
            endpoint = container.endpoints.get(network_id)
            if endpoint is not None and container.state == "running":
                attached.append((container, endpoint))
        return sorted(attached, key=lambda pair: pair[0].name)

    async def create_network(self, request: NetworkCreate) -> tuple[NetworkRecord, str]:
        created = await self._kernel(self.net.create, request)
        self.emit_network(created[0], "create")
        return created

    async def remove_network(self, ref: str) -> None:
        net = self.net.lookup(ref)
        names = [c.name for c, _ in self.network_endpoints(net.id)]
        await self._kernel(self.net.remove, net.id, names)
        self.emit_network(net, "destroy")

    async def connect_network(self, ref: str, container_ref: str, endpoint: EndpointRequest) -> None:
        net = self.net.lookup(ref)
        container = self.get_container(container_ref)
        async with self._lock(container.id):
            self._check_connectable(container, net)
            record = self._new_endpoint(net, container, endpoint)
            if container.state == "running":
                await self._kernel(self.sandboxes.connect, container, record)
            container.endpoints[net.id] = record
            if container.state == "running":
                await self._kernel(self.sandboxes.refresh_default_route, container)
                self.sandboxes.write_etc_files(container)
                await self.sandboxes.register_dns(container, str(namespaces.netns_path(container.netns)))
                self.emit_network(net, "connect", container.id)
            self._save(container)

    def _check_connectable(self, container: ContainerRecord, net: NetworkRecord) -> None:
        if net.id in container.endpoints:
            raise Forbidden(f"endpoint with name {container.name} already exists in network {net.name}")
        current = self.net.mode_driver(container.network_mode)
        wanted = self.net.driver(net)
        if any(d is not None and d.exclusive and d.shares_host_netns for d in (current, wanted)):
            raise InvalidParameter(
                "container cannot be disconnected from host network or connected to host network"
            )
        if any(d is not None and d.exclusive for d in (current, wanted)):
            raise InvalidParameter(
                "container cannot be connected to multiple networks with one of the networks in private (none) mode"
            )

    async def disconnect_network(self, ref: str, container_ref: str, force: bool) -> None:
        net = self.net.lookup(ref)
        container = self.get_container(container_ref)
        async with self._lock(container.id):
            endpoint = container.endpoints.get(net.id)
            if endpoint is None:
                raise Forbidden(f"container {container.id} is not connected to network {net.name}")
            if self.net.driver(net).exclusive:
                raise InvalidParameter(
                    "container cannot be disconnected from host network or connected to host network"
                )
            await self._kernel(self.sandboxes.disconnect, container, endpoint)
            del container.endpoints[net.id]
            if container.network_mode in (net.name, net.id):
                container.network_mode = next(
                    (self.net.networks[n].name for n in container.endpoints if n in self.net.networks), "none"
                ) if container.endpoints else container.network_mode
            await self.sandboxes.unregister_endpoint(container, net.id)
            if container.state == "running":
                await self._kernel(self.sandboxes.refresh_default_route, container)
                self.sandboxes.write_etc_files(container)
                self.emit_network(net, "disconnect", container.id)
            self._save(container)

    async def prune_networks(self, filters: dict[str, list[str]]) -> list[str]:
        for key in filters:
            if key not in ("until", "label", "label!"):
                raise InvalidParameter(f"invalid filter '{key}'")
        pruned = []
        for net in list(self.net.networks.values()):
            if net.predefined or self.network_endpoints(net.id):
                continue
            if not all(label_filter(net.labels, v) for v in filters.get("label", [])):
                continue
            await self._kernel(self.net.remove, net.id, [])
            self.emit_network(net, "destroy")
            pruned.append(net.name)
        self.events.emit("network", "prune", "", {"reclaimed": "0"})  # as moby, even when nothing went
        return sorted(pruned)

    # ---- containers: create, lookup ------------------------------------------------
    async def create_container(self, name: str, request: ContainerCreate,
                               save: bool = True) -> tuple[ContainerRecord, list[str]]:
        """save=False: the record stays in memory until its first start writes it (before runc runs anything). For a
        swarm task's container, which its agent starts at once: a crash before that start leaves no container, and
        the agent makes the task's container again; the start spares one record file made, written and synced."""
        if name:
            name = validate_container_name(name)
            self._check_name_free(name)
        else:
            name = generate_name({c.name for c in self.containers.values()})
        if not request.image:
            raise InvalidParameter("config cannot be empty in order to create a container")
        try:
            image = self.images.get(request.image)
        except ImageNotFound as exc:
            raise NotFound(exc.message) from None
        except ImageError as exc:
            raise InvalidParameter(exc.message) from None

        config = image.config or {}
        requested_check = _get_ci(request.raw_config, "Healthcheck")
        health.validate(requested_check)  # the API checked it already; other callers too
        healthcheck = health.merge(requested_check, config.get("Healthcheck"))
        entrypoint = request.entrypoint if request.entrypoint is not None else list(config.get("Entrypoint") or [])
        if request.cmd is not None and request.cmd != []:
            cmd = list(request.cmd)
        elif request.entrypoint is not None:
            cmd = []  # Docker: a new entrypoint resets the image's Cmd
        else:
            cmd = list(config.get("Cmd") or [])
        args = list(entrypoint) + list(cmd)
        if not args:
            raise InvalidParameter("no command specified")
        group_add = createopts.group_add_of(request.raw_host_config)
        if request.user or group_add:  # moby finds a bad one at start only; refused here, nothing is made
            await process_user(request.user or config.get("User") or "", group_add, image.rootfs)
            # The read ran off the loop: a create with the same name or an rmi of this image
            # may have finished meanwhile. Nothing awaits from here until the record is kept.
            self._check_name_free(name)
            try:
                image = self.images.get(image.id)
            except ImageNotFound as exc:
                raise NotFound(exc.message) from None
        # Binds, --mount, --tmpfs, volumes: checked, volumes made and filled (off the loop).
        mounts, made_volumes = await container_mounts.at_create(
            self.volumes, request.raw_host_config, request.raw_config, image)
        try:  # the copy awaited: the name may be taken, the image removed meanwhile
            self._check_name_free(name)
            try:
                image = self.images.get(image.id)
            except ImageNotFound as exc:
                raise NotFound(exc.message) from None
        except EngineError:
            container_mounts.discard(self.volumes, made_volumes)
            raise

        warnings = self.resources.check_create(request.raw_host_config)
        container_id = secrets.token_hex(32)
        mode = request.network_mode or "default"
        if mode == "default":
            mode = DEFAULT_NETWORK
        record = ContainerRecord(
            id=container_id,
            name=name,
            image=request.image,
            image_id=image.id,
            created=now_rfc3339(),
            args=args,
            cmd=cmd,
            entrypoint=list(entrypoint),
            env=merge_env(list(config.get("Env") or []), request.env),
            working_dir=request.working_dir or config.get("WorkingDir") or "",
            user=request.user or config.get("User") or "",
            hostname=request.hostname or (socket.gethostname() if self._shares_host_netns(mode) else container_id[:12]),
            domainname=request.domainname,
            labels={**(config.get("Labels") or {}), **request.labels},
            network_mode=mode,
            auto_remove=request.auto_remove,
            tty=request.tty,
            create_config=request.raw_config,
            host_config=request.raw_host_config,
            mounts=mounts,
            healthcheck=healthcheck,
        )
        try:
            self._attach_requested_networks(record, request)
            record.links = self._resolve_links(record, request.links)
        except EngineError:
            container_mounts.discard(self.volumes, made_volumes)
            raise
        record.port_bindings = publish.store_bindings(request.port_bindings)
        self.containers[container_id] = record
        try:
            if save:
                await self._save_off_loop(record)
        except SystemError_:
            # Nothing of a create that failed stays: not in memory, not on disk (fsutil
            # removed its temp file), and nothing was made in the kernel yet.
            self.containers.pop(container_id, None)
            self.state.delete("containers", container_id)
            container_mounts.discard(self.volumes, made_volumes)
            raise
        self.emit_container(record, "create")
        return record, warnings

    def _check_name_free(self, name: str) -> None:
        for other in self.containers.values():
            if other.name == name:
                raise Conflict(
                    f'Conflict. The container name "/{name}" is already in use by container '
                    f'"{other.id}". You have to remove (or rename) that container to be able '
                    "to reuse that name."
                )

    def _resolve_links(self, record: ContainerRecord, specs: list[str]) -> list[list[str]]:
        resolved = []
        for spec in specs:
            try:
                name, alias = links.parse_link(spec)
            except ValueError as exc:
                raise InvalidParameter(str(exc)) from None
            try:
                other = self.get_container(name)
            except NotFound:
                raise InvalidParameter(f"could not get container for {name}") from None
            if self._shares_host_netns(record.network_mode):
                raise InvalidParameter("conflicting options: host type networking can't be used with links")
            resolved.append([other.id, alias])
        return resolved

    def _attach_requested_networks(self, record: ContainerRecord, request: ContainerCreate) -> None:
        """Resolves NetworkMode and EndpointsConfig into endpoint records (no addresses yet)."""
        mode = record.network_mode
        if mode.startswith("container:"):
            raise InvalidParameter("network mode container: is not supported by shoal yet")
        primary = self.net.lookup(mode)
        if self.net.driver(primary).exclusive:
            others = [n for n in request.endpoints if n not in (mode, primary.name, primary.id, "default")]
            if others:
                raise InvalidParameter(
                    "conflicting options: cannot attach both user-defined and non-user-defined network-modes"
                )
            record.network_mode = primary.name
            record.endpoints[primary.id] = self._new_endpoint(primary, record, EndpointRequest())
            return
        record.network_mode = primary.name
        requested = dict(request.endpoints)
        primary_request = EndpointRequest()
        for key in ("default", mode, primary.name, primary.id):  # the CLI sends "default"
            primary_request = requested.pop(key, None) or primary_request
        record.endpoints[primary.id] = self._new_endpoint(primary, record, primary_request)
        for ref, endpoint in requested.items():
            net = self.net.lookup(ref)
            self._check_connectable(record, net)
            record.endpoints[net.id] = self._new_endpoint(net, record, endpoint)

    def _new_endpoint(self, net: NetworkRecord, container: ContainerRecord, request: EndpointRequest) -> EndpointRecord:
        self.net.check_endpoint_request(net, request.ipv4)  # a bad --ip is refused now, not at start
        aliases = list(request.aliases)
        return EndpointRecord(
            id=secrets.token_hex(32),
            network_id=net.id,
            container_id=container.id,
            aliases=aliases,
            requested_ipv4=request.ipv4,
            requested_mac=request.mac,
        )

    def list_containers(self, all: bool, filters: dict[str, list[str]]) -> list[ContainerRecord]:
        allowed = {"id", "name", "label", "status", "network", "ancestor", "exited", "health"}
        for key in filters:
            if key not in allowed:
                raise InvalidParameter(f"invalid filter '{key}'")
        health.check_filter(filters.get("health", []))
        result = []
        for container in self.containers.values():
            if not all and container.state != "running" and "status" not in filters:
                continue
            if container_matches(container, filters, self.net):
                result.append(container)
        return sorted(result, key=lambda c: c.created, reverse=True)

    def get_container(self, ref: str) -> ContainerRecord:
        if ref in self.containers:
            return self.containers[ref]
        name = ref.lstrip("/")
        for container in self.containers.values():
            if container.name == name:
                return container
        matches = [c for c in self.containers.values() if ref and c.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise InvalidParameter(f"multiple IDs found with provided prefix: {ref}")
        raise NotFound(f"No such container: {ref}")

    # ---- containers: lifecycle ------------------------------------------------------
    async def start_container(self, ref: str) -> None:
        container = self.get_container(ref)
        async with self._lock(container.id):
            if container.state == "running":
                raise NotModified("container already started")
            self.restarts.reset(container.id)  # moby: a user's start resets the restart manager
            container.restart_count, container.manually_stopped, container.restarting = 0, False, False
            try:
                await self._start(container)
            except EngineError:
                if container.auto_remove:  # as moby: a --rm container that cannot start is removed
                    await self._remove(container, volumes=True)
                raise

    async def _start(self, container: ContainerRecord) -> None:
        try:
            image = self.images.get(container.image_id)
        except ImageError as exc:
            raise NotFound(exc.message) from None
        bundle_replaced = False  # the bundle of an earlier run keeps its logs until then
        steps = steptime.Steps(f"start {container.id[:12]}")
        try:
            netns_path = await self._sandbox_kernel(steps.timed(self.sandboxes.setup, "kqueue", "setup"), container)
            steps.mark("back")
            if container.port_bindings and self.sandboxes.publish_endpoint(container) is not None:
                container.published = self.ports.publish(container)
                await self._kernel(self.net.publish_ports, container.id, self._container_ports(container))
            # The addresses, links and ports this start holds are on disk before runc runs
            # anything: a crash from here on is undone at restart from the record alone.
            await self._save_off_loop(container)
            link_env = self._link_env(container)
            try:
                mounts = self.sandboxes.write_etc_files(container)
            except OSError as exc:
                raise SystemError_(
                    f"failed to start container {container.name}: cannot write its /etc files in "
                    f"{self.sandboxes.etc_dir(container.id)}: {_os_message(exc)}"
                ) from exc
            steps.mark("save+etc")
            await self.sandboxes.register_dns(container, netns_path)
            for other, _ in self.sandboxes.linked(container):  # link aliases on user networks
                if other.state == "running" and other.netns:
                    await self.sandboxes.register_dns(other, str(namespaces.netns_path(other.netns)))
            mounts = mounts + await startfast.mounts_at_start(self.volumes, container, image.rootfs)
            run_options = self.run_options(container)
            uid, gid, gids = await image_process_user(container.user, run_options.group_add, image.rootfs)
            process = ProcessSpec(
                args=([createopts.INIT_PATH_IN_CONTAINER, "--"] if run_options.init else []) + container.args,
                env=merge_env(link_env + container.env, [f"HOSTNAME={container.hostname}"], keep_first=True),
                cwd=container.working_dir or "/",
                uid=uid,
                gid=gid,
                tty=container.tty,
                confinement=confinement_of(container),
                rlimits=tuple(createopts.rlimits(run_options.ulimits)),
                additional_gids=gids,
                oom_score_adj=run_options.oom_score_adj,  # 0 too, as moby: not the daemon's own inherited
            )
            extras, extra_mounts = await startfast.spec_extras(run_options)
            mounts = mounts + extra_mounts
            if run_options.dns and self.sandboxes.dns is not None:
                self.sandboxes.dns.set_container_upstreams(container.id, run_options.dns)
            bundle_replaced = True  # from here on a failure also removes the new bundle
            steps.mark("spec")
            # What an earlier run left (runc state, shim files, the old config); the writable
            # layer stays, so a restarted container keeps its files as with Docker.
            await self.runtime.remove(container.id, keep_layer=True)
            steps.mark("rm")
            await self.runtime.prepare(container.id, image.rootfs, process, container.hostname, netns_path, mounts,
                                       cgroups_path=self.resources.path(container.id),
                                       resources=self.resources.oci(container),
                                       cgroupns=self.resources.private_cgroupns,
                                       extras=extras)
            steps.mark("bundle")
            if self._exited.get(container.id, _SET_EVENT).is_set():
                # A waiter registered before this start (docker run's next-exit wait) keeps
                # its event; only a spent one is replaced.
                self._exited[container.id] = asyncio.Event()
            pid = await self.runtime.start(
                container.id, stdio_options(container.create_config, container.host_config, container.tty), steps)
        except Exception as exc:
            await self._undo_start(container, bundle_replaced)
            message = exc.message if isinstance(exc, (RuncError, EngineError, SystemError_)) else _os_message(exc)
            container.error = message
            self._save_quietly(container)
            if isinstance(exc, (EngineError, SystemError_)):
                raise
            # runc tells a process that cannot be started (126/127: the user's command) apart
            kind = InvalidParameter if isinstance(exc, RuncError) and exc.exit_code is not None else SystemError_
            raise kind(f"failed to start container {container.name}: {message}") from exc
        container.state = "running"
        container.started_before, container.restarting = True, False
        container.pid = pid
        container.paused = False
        container.oom_killed = False
        container.exit_code = 0
        container.error = ""
        container.started_at = now_rfc3339()
        container.finished_at = "0001-01-01T00:00:00Z"
        try:
            await self._save_off_loop(container)
        except SystemError_ as exc:
            # A start that cannot be recorded is not kept: the record on disk says created,
            # and so must runc and the kernel.
            container.state = "created"
            container.pid = 0
            container.error = exc.message
            await self._undo_start(container, True)
            raise
        self._emit_endpoints(container, "connect")
        self.emit_container(container, "start")
        self._watch(container)
        self.health_monitors.start(container)
        steps.mark("saved")
        steps.end()

    async def _undo_start(self, container: ContainerRecord, bundle: bool) -> None:
        """Everything a failed start made: the runc container and bundle (when it made one),
        ports, DNS, network, the /etc files. Each step is tried even when one before failed."""
        steps: list[tuple[str, Callable[[], Any]]] = [
            ("published ports", lambda: self._release_ports(container)),
            ("DNS entries", lambda: self.sandboxes.unregister_dns(container)),
            ("network", lambda: self._sandbox_kernel(self.sandboxes.teardown, container)),
        ]
        if bundle:
            steps.insert(0, ("runc container", lambda: self.runtime.remove(container.id, keep_layer=True)))
        for what, step in steps:
            try:
                await step()
            except Exception:
                log.exception("container %s: cannot undo its %s after a failed start", container.id, what)
        self._remove_etc_files(container.id)

    def _remove_etc_files(self, container_id: str) -> None:
        for directory in self.sandboxes.etc_dirs(container_id):
            shutil.rmtree(directory, ignore_errors=True)

    def _watch(self, container: ContainerRecord) -> None:
        self._exited.setdefault(container.id, asyncio.Event())
        old = self._watchers.pop(container.id, None)
        if old is not None:
            old.cancel()
        self._watchers[container.id] = asyncio.get_running_loop().create_task(self._watch_exit(container.id))

    async def _watch_exit(self, container_id: str) -> None:
        code = await self._wait_for_exit(container_id)
        container = self.containers.get(container_id)
        if container is None:
            return
        async with self._lock(container_id):
            if container.state == "running":
                await self._finish(container, code)
                if restart.schedule_after_exit(self, container):
                    self._watchers.pop(container_id, None)
                    return
        self._watchers.pop(container_id, None)
        if container.auto_remove and container_id in self.containers:
            # `docker run --rm` is attached: its client must read all the output before the
            # logs go with the container (bounded: a stuck client does not keep it forever).
            await self._readers_done(container_id, AUTO_REMOVE_DRAIN_SECONDS)
            if container_id in self.containers:
                await self._remove(container, volumes=True)  # --rm takes the anonymous volumes too

    @contextlib.asynccontextmanager
    async def reading_output(self, container_id: str) -> AsyncIterator[None]:
        """Held by an attached client while it streams a container's output: an auto-remove
        waits for it (see _watch_exit)."""
        self._readers[container_id] = self._readers.get(container_id, 0) + 1
        try:
            yield
        finally:
            left = self._readers.get(container_id, 1) - 1
            if left > 0:
                self._readers[container_id] = left
            else:
                self._readers.pop(container_id, None)
                done = self._readers_gone.pop(container_id, None)
                if done is not None:
                    done.set()

    async def _readers_done(self, container_id: str, timeout: float) -> None:
        if not self._readers.get(container_id):
            return
        done = self._readers_gone.setdefault(container_id, asyncio.Event())
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("container %s: an attached client still reads after %.0f s; removing it", container_id, timeout)

    async def _wait_for_exit(self, container_id: str) -> int:
        """The exit code the shim recorded. Failing to read a file or to reach runc at some
        moment (EMFILE, ENOSPC) says nothing about the container: wait again, never guess."""
        while True:
            try:
                return await self.runtime.wait(container_id)
            except asyncio.CancelledError:
                raise
            except RuncError as exc:  # the runtime knows it is gone and no code was recorded
                log.warning("container %s: %s; recording exit code %d", container_id, exc.message,
                            reconcile.LOST_EXIT_CODE)
                return reconcile.LOST_EXIT_CODE
            except Exception:
                log.exception("waiting for container %s failed; waiting again", container_id)
                await asyncio.sleep(WAIT_RETRY_SECONDS)

    async def _finish(self, container: ContainerRecord, code: int) -> None:
        """Marks a container exited and frees its network resources. Each step is tried even
        when one before it failed; the record is saved last (a crash before: redone at start)."""
        await self.health_monitors.stop(container.id)  # no probe runs past the container's end
        self.resources.read_oom_killed(container)
        container.state = "exited"
        container.exit_code = code
        container.pid = 0
        container.paused = False
        container.finished_at = now_rfc3339()
        # The event goes with the state change (no await between): a `wait` that sees the
        # container exited finds its die event already in the log.
        self.emit_container(container, "die", exitCode=code,
                            execDuration=_seconds_between(container.started_at, container.finished_at))
        try:
            await self.resources.at_exit(container)  # the stopped runc container and its cgroup
        except Exception:
            log.exception("container %s: cgroup clean-up failed at exit", container.id)
        for step in (self._release_ports, self.sandboxes.unregister_dns):
            try:
                await step(container)
            except Exception:
                log.exception("container %s: %s failed at exit", container.id, step.__name__)
        try:
            await self._sandbox_kernel(self.sandboxes.teardown, container)
        except Exception:
            log.exception("container %s: network teardown failed at exit", container.id)
        self._emit_endpoints(container, "disconnect")
        self._save_quietly(container)
        self._exited.setdefault(container.id, asyncio.Event()).set()
        self.health_monitors.changed(container.id)  # wait_health returns once it is not running

    async def stop_container(self, ref: str, timeout: int | None = None, signal: str = "") -> None:
        container = self.get_container(ref)
        async with self._lock(container.id):
            if container.restarting:  # waiting for its next start: stopping cancels it
                self.restarts.cancel(container.id)
                container.restarting, container.manually_stopped = False, True
                self._save_quietly(container)
                self.emit_container(container, "stop")
                return
            if container.state != "running":
                raise NotModified("container already stopped")
            self.restarts.cancel(container.id)
            container.manually_stopped = True
            own = createopts.stop_defaults(container, DEFAULT_STOP_TIMEOUT)
            sig = parse_signal(signal or own[0])
            wait = own[1] if timeout is None else timeout
            self.emit_container(container, "kill", signal=int(sig))
            if container.paused:  # a frozen process cannot act on the signal: thaw it (as Docker)
                await self.resources.resume(container)
            # No probe while it shuts down: one failing then would mark it unhealthy on its way out.
            # (After the thaw: a probe caught by the freeze can only end once thawed.)
            await self.health_monitors.stop(container.id)
            code = await self.runtime.stop(container.id, float(max(wait, 0)), int(sig))
            if code == 128 + signals.SIGKILL and sig != signals.SIGKILL:  # the timeout ran out
                self.emit_container(container, "kill", signal=int(signals.SIGKILL))
            await self._finish(container, code)
            self.emit_container(container, "stop")

    async def kill_container(self, ref: str, signal: str = "SIGKILL") -> None:
        container = self.get_container(ref)
        sig = parse_signal(signal or "SIGKILL")
        if container.restarting:
            raise Conflict(f"Cannot kill container: {ref}: Container {container.id} is restarting, "
                           "wait until the container is running")
        if container.state != "running":
            raise Conflict(f"Cannot kill container: {ref}: Container {container.id} is not running")
        container.manually_stopped = True
        if sig == parse_signal(createopts.stop_defaults(container, DEFAULT_STOP_TIMEOUT)[0]):  # moby's ExitOnNext
            self.restarts.cancel(container.id)
        await self.runtime.kill(container.id, int(sig))
        if container.paused and sig == signals.SIGKILL:  # Docker: the kill lands once thawed
            async with self._lock(container.id):
                if container.paused:
                    await self.resources.resume(container)
        self.emit_container(container, "kill", signal=int(sig))

    async def remove_container(self, ref: str, force: bool = False, volumes: bool = False) -> None:
        container = self.get_container(ref)
        async with self._lock(container.id):
            if container.restarting and not force:
                raise Conflict(
                    f'cannot remove container "/{container.name}": container is restarting: '
                    "stop the container before removing or force remove"
                )
            self.restarts.forget(container.id)
            if container.state == "running":
                if container.paused and not force:
                    # Docker 25+'s wording, like the running case below
                    raise Conflict(f'cannot remove container "/{container.name}": container is paused '
                                   "and must be unpaused first")
                if container.paused:
                    await self.resources.resume(container)
                if not force:
                    raise Conflict(
                        f'cannot remove container "/{container.name}": container is running: '
                        "stop the container before removing or force remove"
                    )
                self.emit_container(container, "kill", signal=int(signals.SIGKILL))
                code = await self.runtime.stop(container.id, 0.0, int(signals.SIGKILL))
                await self._finish(container, code)
        await self._remove(container, volumes)

    async def _remove(self, container: ContainerRecord, volumes: bool = False) -> None:
        task = self._watchers.pop(container.id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        await self.runtime.remove(container.id)
        if container.netns:  # a start that failed half-way, or an exit whose teardown failed
            await self._sandbox_kernel(self.sandboxes.teardown, container)
        self.restarts.forget(container.id)
        await self.health_monitors.stop(container.id)
        self.containers.pop(container.id, None)
        self.health_monitors.changed(container.id)
        self.state.delete("containers", container.id)
        self.runtime.remove_logs(container.id)
        self.emit_container(container, "destroy")
        # The /etc files; a crash before this line leaves them to the next start's reconcile.
        self._remove_etc_files(container.id)
        for event in (self._exited.pop(container.id, None), self._removed.pop(container.id, None)):
            if event is not None:
                event.set()
        self.execs = {k: v for k, v in self.execs.items() if v.container_id != container.id}
        await container_mounts.at_remove(self.volumes, container, self.containers, volumes)

    async def wait_container(self, ref: str, condition: str = "not-running") -> int:
        container = self.get_container(ref)
        if condition not in ("", "not-running", "next-exit", "removed"):
            raise InvalidParameter(f"invalid condition: {condition!r}")
        if condition == "removed":
            event = self._removed.setdefault(container.id, asyncio.Event())
            await event.wait()
            return container.exit_code
        if condition in ("", "not-running") and container.state != "running":
            return container.exit_code
        event = self._exited.get(container.id)
        if event is None or event.is_set():
            event = self._exited[container.id] = asyncio.Event()
        await event.wait()
        return container.exit_code

    async def wait_health(self, container_id: str, seen: str) -> str:
        """The container's health status as soon as it differs from `seen`, or once the container
        is no longer running or is gone ("" when it has no check or no longer exists). Woken by
        the monitor's changes, the exit and the removal (no polling)."""
        while True:
            container = self.containers.get(container_id)
            if container is None or container.health is None:
                return ""
            current = str(container.health.get("Status", ""))
            if current != seen or container.state != "running":
                return current
            await self.health_monitors.change_event(container_id).wait()

    async def container_logs(
        self, ref: str, stdout: bool, stderr: bool, tail: str = "all", follow: bool = False,
        since_ns: int = 0, until_ns: int = 0, timestamps: bool = False,
    ) -> AsyncIterator[tuple[int, bytes]]:
        """The json-file log (agent.executor.logfile) as `docker logs` shows it."""
        container = self.get_container(ref)
        while follow and container.state == "created" and container.id in self.containers:
            await asyncio.sleep(LOG_POLL_SECONDS)  # attach before start: wait for the output to begin
        query = logfile.Query(stdout, stderr, None if tail in ("", "all") else parse_tail(tail),
                              since_ns, until_ns, timestamps)
        running = lambda: container.state == "running" and container.id in self.containers  # noqa: E731
        async for item in logfile.read_log(self.runtime.log_path(container.id), query, follow, running):
            yield item

    # ---- exec -----------------------------------------------------------------------
    async def create_exec(self, container_ref: str, request: ExecCreate) -> ExecRecord:
        container = self.get_container(container_ref)
        if container.state != "running":
            raise Conflict(f"container {container.id} is not running")
        if container.paused:
            raise Conflict(f"Container {container.id} is paused, unpause the container before exec")
        if not request.cmd:
            raise InvalidParameter("No exec command specified")
        if request.user:  # moby's early check (exec create), in the container's own files
            await process_user(request.user, self.run_options(container).group_add, self.runtime.rootfs(container.id))
        record = ExecRecord(
            id=secrets.token_hex(32),
            container_id=container.id,
            args=list(request.cmd),
            env=list(request.env),
            working_dir=request.working_dir,
            user=request.user,
            attach_stdout=request.attach_stdout,
            attach_stderr=request.attach_stderr,
            tty=request.tty,
            attach_stdin=request.attach_stdin,
            detach_keys=request.detach_keys,
            console_size=request.console_size,
        )
        self.execs[record.id] = record
        self.emit_container(container, exec_action("exec_create", record.args), execID=record.id)
        return record

    async def _exec_user(self, container: ContainerRecord, user: str, group_add: list[str]) -> ProcessUser:
        """As moby: an exec with a user (its own or the container's) is resolved in the container's files as they
        are now; one without gets the user of the container's process, which start resolved from the image."""
        if user:
            return await process_user(user, group_add, self.runtime.rootfs(container.id))
        try:
            image = self.images.get(container.image_id)
        except ImageError:  # removed under a running container: its files are the closest there is
            return await process_user("", group_add, self.runtime.rootfs(container.id))
        return await image_process_user("", group_add, image.rootfs)

    def get_exec(self, exec_id: str) -> ExecRecord:
        record = self.execs.get(exec_id)
        if record is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return record

    async def run_exec(self, exec_id: str, console_size: tuple[int, int] | None = None,
                       started: Callable[[Any], None] | None = None,
                       pid_file: bool = False) -> AsyncIterator[tuple[int, bytes]]:
        """Runs the exec; yields its output. started(run) gets the runtime's ExecRun (stdin,
        resize) once the process runs; pid_file: the run can tell the process's pid (health
        probes kill it at their timeout)."""
        record = self.get_exec(exec_id)
        if record.running or record.exit_code is not None:
            raise Conflict(f"Error: Exec command {exec_id} has already run")
        container = self.containers.get(record.container_id)
        if container is None or container.state != "running":
            raise Conflict(f"container {record.container_id} is not running")
        run_options = self.run_options(container)
        uid, gid, gids = await self._exec_user(container, record.user or container.user, run_options.group_add)
        process = ProcessSpec(
            args=record.args,
            env=merge_env(container.env, record.env),
            cwd=record.working_dir or container.working_dir or "/",
            uid=uid,
            gid=gid,
            tty=record.tty,
            confinement=confinement_of(container),
            rlimits=tuple(createopts.rlimits(run_options.ulimits)),
            additional_gids=gids,
        )
        record.running = True
        run = None
        self.emit_container(container, exec_action("exec_start", record.args), execID=record.id)
        try:
            run = await self.runtime.exec(container.id, process, stdin=record.attach_stdin,
                                          console_size=console_size or record.console_size, pid_file=pid_file)
            record.pid = run.pid
            record.run = run
            if started is not None:
                started(run)
            async for stream, chunk in run.output():
                if (stream == 1 and record.attach_stdout) or (stream == 2 and record.attach_stderr):
                    yield stream, chunk
            record.exit_code = await run.wait()
        except RuncError as exc:
            record.exit_code = 126
            yield 2, (exc.message + "\n").encode()
        finally:
            if run is not None and run.exit_code is None and record.exit_code is None:
                # The client went away or detached: the process runs on, its output discarded.
                task = asyncio.get_running_loop().create_task(self._exec_detached(record, run))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
            else:
                record.running = False
                record.run = None
                if record.exit_code is None:
                    record.exit_code = 137
                self.emit_container(container, "exec_die", execID=record.id, exitCode=record.exit_code)

    async def _exec_detached(self, record: ExecRecord, run: Any) -> None:
        try:
            record.exit_code = await run.drain()
        finally:
            record.running = False
            record.run = None
            if record.exit_code is None:
                record.exit_code = 137
            container = self.containers.get(record.container_id)
            if container is not None:
                self.emit_container(container, "exec_die", execID=record.id, exitCode=record.exit_code)

    # ---- images ---------------------------------------------------------------------
    async def remove_image(self, ref: str, force: bool = False, noprune: bool = False) -> list[dict[str, str]]:
        """docker rmi: the store applies moby's rules against the containers that use images.
        The index changes here on the loop, in step with container creation (no await between
        the users read and the change); the files go afterwards, in a thread."""
        from agent.images.store import ImageUser

        try:
            image_id = self.images.get(ref).id
        except ImageError:
            image_id = ""  # the store's remove answers for it
        users = [ImageUser(c.id, c.image_id, c.state in ("running", "paused", "restarting"))
                 for c in self.containers.values()]
        records = self.images.remove(ref, force=force, noprune=noprune, users=users)
        for entry in records:  # moby names both by the image id
            if "Untagged" in entry and image_id:
                self.emit_image(image_id, "untag")
            if "Deleted" in entry:
                self.emit_image(entry["Deleted"], "delete")
        await asyncio.to_thread(self.images.empty_trash)
        return records

    # ---- system ---------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        states = [c.state for c in self.containers.values()]
        return {
            "Containers": len(states),
            "ContainersRunning": states.count("running"),
            "ContainersPaused": sum(1 for c in self.containers.values() if c.state == "running" and c.paused),
            "ContainersStopped": len(states) - states.count("running"),
            "Images": len(self.images.list()),
        }

    # ---- the network layer (agent.network): what the lifecycle asks of it -------------
    def _shares_host_netns(self, network_mode: str) -> bool:
        driver = self.net.mode_driver(network_mode)
        return driver is not None and driver.shares_host_netns

    def _link_env(self, container: ContainerRecord) -> list[str]:
        """Docker's ALIAS_* variables for links on the default bridge (S13)."""
        if not self.sandboxes.on_default_bridge(container):
            return []
        env: list[str] = []
        for other, alias in self.sandboxes.linked(container):
            ip = self.sandboxes.bridge_ip(other)
            if other.state != "running" or not ip:
                raise InvalidParameter(
                    f"Cannot link to a non running container: /{other.name} AS /{container.name}/{alias}"
                )
            exposed = sorted(
                (b["container_port"], b["proto"]) for b in other.port_bindings
            ) or exposed_of(other)
            env += links.link_env(alias, container.name, ip, exposed, user_env(other))
        return env

    def _firewall_ports(self) -> list[PublishedPort]:
        ports: list[PublishedPort] = []
        for container in sorted(self.containers.values(), key=lambda c: c.id):
            if container.published:  # set while starting, cleared at exit
                ports += self._container_ports(container)
        if self.mesh is not None:  # the ingress sandbox's published ports (routing mesh)
            ports += self.mesh.firewall_ports()
        return ports

    def _reassert_services(self) -> None:
        self.sandboxes.lb.reassert()
        if self.mesh is not None:
            self.mesh.reassert()

    def _container_ports(self, container: ContainerRecord) -> list[PublishedPort]:
        endpoint = self.sandboxes.publish_endpoint(container)
        if endpoint is None:
            return []
        iface = self.net.publish_iface(self.net.networks[endpoint.network_id])
        return publish.firewall_ports(container, iface, endpoint.ipv4)

    async def _release_ports(self, container: ContainerRecord) -> None:
        if container.published:
            container.published = []
            self.ports.unpublish(container)
            await self._kernel(self.net.unpublish_ports, container.id)

    def warnings(self) -> list[str]:
        """Problems found at start (state files moved aside...): `docker info` prints them."""
        return list(self.state.warnings)

    # ---- restart policies and create options: the work is in shoal.engine.restart/createopts
    async def restart_after_exit(self, container_id: str) -> None:
        await restart.restart_after_exit(self, container_id)

    def run_options(self, container: ContainerRecord) -> createopts.RunOptions:
        return createopts.of_container(container)

    # ---- events ---------------------------------------------------------------------
    def emit_container(self, container: ContainerRecord, action: str, **extra: Any) -> None:
        """A container event (create, start, die, attach, pause...) for `docker events`."""
        container_event(self.events, container, action, **extra)

    def emit_network(self, net: NetworkRecord, action: str, container_id: str = "") -> None:
        self.events.emit("network", action, net.id, network_attributes(net.name, net.driver, container_id))

    def _emit_endpoints(self, container: ContainerRecord, action: str) -> None:
        for net_id in container.endpoints:
            net = self.net.networks.get(net_id)
            if net is not None:
                self.emit_network(net, action, container.id)

    def emit_image(self, image_id: str, action: str, name: str = "") -> None:
        self.events.emit("image", action, image_id, {"name": name or image_id})

    # ---- helpers --------------------------------------------------------------------
    def _lock(self, container_id: str) -> asyncio.Lock:
        return self._locks.setdefault(container_id, asyncio.Lock())

    def _save(self, container: ContainerRecord) -> None:
        """Raises SystemError_ naming the cause (ENOSPC...) when the record cannot be written."""
        if container.id not in self.containers:
            return
        try:
            self.state.save("containers", container.id, container)
        except OSError as exc:
            raise self._save_error(container, exc) from exc

    async def _save_off_loop(self, container: ContainerRecord) -> None:
        """_save with the event loop free meanwhile (the record as it is now; written in order with
        every other save): the hot paths, create and start, where a node's tasks start together."""
        if container.id not in self.containers:
            return
        try:
            await self.state.save_async("containers", container.id, container)
        except OSError as exc:
            raise self._save_error(container, exc) from exc

    def _save_error(self, container: ContainerRecord, exc: OSError) -> SystemError_:
        return SystemError_(f"cannot save the record of container {container.name}: {exc.strerror or exc}"
                            f" ({self.state.path('containers', container.id)})")

    def _save_quietly(self, container: ContainerRecord) -> None:
        """For failure and exit paths: a record that cannot be written is logged; the one on
        disk is older and the next start reconciles it with runc."""
        try:
            self._save(container)
        except SystemError_ as exc:
            log.error("%s", exc.message)


def _os_message(exc: BaseException) -> str:
    """An OSError as the user should read it: its cause and the file ("no space left on
    device: /var/lib/shoal/..."), not a bare "[Errno 28]"."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror.lower()}{where}"
    return str(exc)


def _holds_network(container: ContainerRecord) -> bool:
    """The record still names a namespace, an address or published ports (a start or an exit
    cut short by a crash)."""
    return bool(container.netns or container.published or any(e.ipv4 for e in container.endpoints.values()))


def _seconds_between(start: str, end: str) -> int:
    """Whole seconds between two RFC 3339 times (moby's execDuration); 0 when unknown."""
    from shoal.api.convert import parse_time  # pure; no import cycle at module load

    began, ended = parse_time(start), parse_time(end)
    return max(int((ended - began).total_seconds()), 0) if began and ended else 0


def _get_ci(data: dict[str, Any], key: str) -> Any:
    """A create body's field, matched case-insensitively as Go's JSON decoder does."""
    if key in data:
        return data[key]
    return next((v for k, v in data.items() if k.lower() == key.lower()), None)
