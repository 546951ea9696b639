"""The Engine: the one object shoal.api calls for networks, containers, execs and images.

Composes the network controller (shoal.engine.networks), the runc runtime (agent.executor)
and the image store (agent.images); owns the daemon's state directory. Every method either
completes or raises an EngineError and leaves nothing half-done.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import secrets
import signal as signals
import socket
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import shoal
from agent.executor.runtime import RuncError, RuncRuntime
from agent.executor.spec import ProcessSpec
from agent.images.store import ImageError, ImageNotFound, ImageStore
from agent.network import netns as namespaces
from agent.network.dns import NameTable, upstreams_from_resolv_conf
from agent.network.dnsserver import EmbeddedDns
from agent.network.firewall_watch import FirewallWatch
from shoal.engine import links, publish
from shoal.engine.errors import Conflict, EngineError, InvalidParameter, NotFound, NotModified
from shoal.engine.helpers import container_matches, label_filter, merge_env, parse_signal, parse_tail, user_ids
from shoal.engine.names import generate_name, validate_container_name
from shoal.engine.networks import NetworkController, NetworkOptions
from shoal.engine.records import (
    ContainerRecord,
    EndpointRecord,
    ExecRecord,
    NetworkRecord,
    container_from_dict,
    to_dict,
)
from shoal.engine.requests import ContainerCreate, EndpointRequest, ExecCreate, NetworkCreate
from shoal.engine.sandbox import SandboxMixin
from shoal.engine.state import StateDir
from shoal.engine.timefmt import now_rfc3339

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_STOP_TIMEOUT = 10
LOG_POLL_SECONDS = 0.1
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


class Engine(SandboxMixin):
    """Attributes the API reads: `daemon_id` (64 hex, stable across restarts), `data_dir`,
    `images` (agent.images.store.ImageStore)."""

    def __init__(self, options: EngineOptions) -> None:
        self.options = options
        self.version = shoal.__version__
        self.data_dir = options.data_dir
        self.state = StateDir(options.data_dir / "engine")
        self.daemon_id = self.state.daemon_id()
        self.images = ImageStore(options.data_dir / "images")
        self.runtime = RuncRuntime(options.exec_root / "runc", options.data_dir / "runtime")
        self.net = NetworkController(self.state, NetworkOptions(bip=options.bip, mtu=options.mtu))
        self.net.published_ports = self._firewall_ports
        self.ports = publish.PortPublisher(self.state)
        self.dns_table = NameTable()
        self.dns: EmbeddedDns | None = None  # made in restore(), on the event loop
        # S21: a firewalld reload or `iptables -F` wipes our rules; they come back within seconds.
        self.firewall_watch = FirewallWatch(
            reapply=lambda: self._kernel(self.net.apply_firewall),
            check=self.net.firewall_in_place,
            interval=options.firewall_check_interval,
        )
        self.containers: dict[str, ContainerRecord] = {}
        self.execs: dict[str, ExecRecord] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._exited: dict[str, asyncio.Event] = {}
        self._removed: dict[str, asyncio.Event] = {}
        self._watchers: dict[str, asyncio.Task] = {}
        # pyroute2's synchronous API runs its own event loop, so it cannot run on ours:
        # all netlink and namespace work goes through this one thread, in order.
        self._kernel_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="kernel")

    async def _kernel(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._kernel_thread, functools.partial(fn, *args, **kwargs))

    # ---- start-up -------------------------------------------------------------------
    async def restore(self) -> None:
        """Brings kernel and records back in line after a start, a restart or a SIGKILL:
        running containers are adopted, ones that exited meanwhile are marked exited."""
        self.dns = EmbeddedDns(self.dns_table, upstreams_from_resolv_conf(self._host_resolv_conf()))
        await self._kernel(self.net.restore)
        for container_id, data in self.state.load_all("containers").items():
            self.containers[container_id] = container_from_dict(data)
        for container in self.containers.values():
            if container.state != "running":
                continue
            status = self.runtime.status(container.id)
            if status.state == "running":
                container.pid = status.pid
                self._watch(container)
                if container.netns:  # the old daemon's resolver sockets died with it
                    await self._register_dns(container, str(namespaces.netns_path(container.netns)))
                continue
            code = status.exit_code if status.exit_code is not None else 255
            await self._finish(container, code)
        await self._kernel(self._collect_orphan_namespaces)
        if any(c.published for c in self.containers.values()):
            await self._kernel(self.net.apply_firewall)  # published ports of adopted containers
        self.firewall_watch.start()

    def _collect_orphan_namespaces(self) -> None:
        """Namespaces with our prefix that no running container owns: left by a crash."""
        owned = {c.netns for c in self.containers.values() if c.state == "running" and c.netns}
        for name in namespaces.list_netns(self.options.netns_prefix):
            if name not in owned and len(name) == len(self.options.netns_prefix) + 12:
                namespaces.delete_netns(name)

    async def close(self) -> None:
        """Stops watching; containers keep running (live restore)."""
        await self.firewall_watch.stop()
        for task in self._watchers.values():
            task.cancel()
        self._watchers.clear()
        if self.dns is not None:
            await self.dns.close()
        self._kernel_thread.shutdown(wait=True)

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
        return await self._kernel(self.net.create, request)

    async def remove_network(self, ref: str) -> None:
        net = self.net.lookup(ref)
        names = [c.name for c, _ in self.network_endpoints(net.id)]
        await self._kernel(self.net.remove, net.id, names)

    async def connect_network(self, ref: str, container_ref: str, endpoint: EndpointRequest) -> None:
        net = self.net.lookup(ref)
        container = self.get_container(container_ref)
        async with self._lock(container.id):
            self._check_connectable(container, net)
            record = self._new_endpoint(net, container, endpoint)
            if container.state == "running":
                await self._kernel(self.net.allocate_endpoint, net, container.id, record, record.requested_ipv4)
                try:
                    await self._kernel(self.net.plumb, record, container.netns, self._next_ifname(container), False)
                except Exception as exc:
                    await self._kernel(self.net.unplumb, record)
                    await self._kernel(self.net.release_endpoint, record)
                    raise EngineError(f"failed to connect {container.name} to {net.name}: {exc}") from exc
            container.endpoints[net.id] = record
            if container.state == "running":
                await self._kernel(self._refresh_default_route, container)
                self._write_etc_files(container)
                await self._register_dns(container, str(namespaces.netns_path(container.netns)))
            self._save(container)

    def _check_connectable(self, container: ContainerRecord, net: NetworkRecord) -> None:
        if net.id in container.endpoints:
            raise EngineError(
                f"endpoint with name {container.name} already exists in network {net.name}", 403
            )
        if container.network_mode == "host" or net.driver == "host":
            raise InvalidParameter(
                "container cannot be disconnected from host network or connected to host network"
            )
        if container.network_mode == "none" or net.driver == "null":
            raise InvalidParameter(
                "container cannot be connected to multiple networks with one of the networks in private (none) mode"
            )

    async def disconnect_network(self, ref: str, container_ref: str, force: bool) -> None:
        net = self.net.lookup(ref)
        container = self.get_container(container_ref)
        async with self._lock(container.id):
            endpoint = container.endpoints.get(net.id)
            if endpoint is None:
                raise EngineError(f"container {container.id} is not connected to network {net.name}", 403)
            if net.driver in ("host", "null"):
                raise InvalidParameter(
                    "container cannot be disconnected from host network or connected to host network"
                )
            await self._kernel(self.net.unplumb, endpoint)
            await self._kernel(self.net.release_endpoint, endpoint)
            del container.endpoints[net.id]
            if container.network_mode in (net.name, net.id):
                container.network_mode = next(
                    (self.net.networks[n].name for n in container.endpoints if n in self.net.networks), "none"
                ) if container.endpoints else container.network_mode
            self.dns_table.remove_endpoint(container.id, net.id)
            if container.state == "running":
                await self._kernel(self._refresh_default_route, container)
                self._write_etc_files(container)
                if not self._user_endpoints(container) and self.dns is not None:
                    await self.dns.remove_container(container.id)
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
            pruned.append(net.name)
        return sorted(pruned)

    # ---- containers: create, lookup ------------------------------------------------
    async def create_container(self, name: str, request: ContainerCreate) -> tuple[ContainerRecord, list[str]]:
        if name:
            name = validate_container_name(name)
            for other in self.containers.values():
                if other.name == name:
                    raise Conflict(
                        f'Conflict. The container name "/{name}" is already in use by container '
                        f'"{other.id}". You have to remove (or rename) that container to be able '
                        "to reuse that name."
                    )
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
        if request.user:
            user_ids(request.user, image.rootfs)

        container_id = secrets.token_hex(32)
        mode = request.network_mode or "default"
        if mode == "default":
            mode = "bridge"
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
            hostname=request.hostname or (container_id[:12] if mode != "host" else socket.gethostname()),
            domainname=request.domainname,
            labels={**(config.get("Labels") or {}), **request.labels},
            network_mode=mode,
            auto_remove=request.auto_remove,
            tty=request.tty,
            create_config=request.raw_config,
            host_config=request.raw_host_config,
        )
        self._attach_requested_networks(record, request)
        record.port_bindings = publish.store_bindings(request.port_bindings)
        record.links = self._resolve_links(record, request.links)
        self.containers[container_id] = record
        self._save(record)
        return record, []

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
            if record.network_mode == "host":
                raise InvalidParameter("conflicting options: host type networking can't be used with links")
            resolved.append([other.id, alias])
        return resolved

    def _attach_requested_networks(self, record: ContainerRecord, request: ContainerCreate) -> None:
        """Resolves NetworkMode and EndpointsConfig into endpoint records (no addresses yet)."""
        mode = record.network_mode
        if mode.startswith("container:"):
            raise InvalidParameter("network mode container: is not supported by shoal yet")
        if mode in ("host", "none"):
            others = [n for n in request.endpoints if n not in (mode, "default")]
            if others:
                raise InvalidParameter(
                    "conflicting options: cannot attach both user-defined and non-user-defined network-modes"
                )
            net = self.net.lookup(mode)
            record.network_mode = net.name
            record.endpoints[net.id] = self._new_endpoint(net, record, EndpointRequest())
            return
        primary = self.net.lookup(mode)
        if primary.driver in ("host", "null"):
            raise InvalidParameter(
                "conflicting options: cannot attach both user-defined and non-user-defined network-modes"
            )
        record.network_mode = primary.name
        requested = dict(request.endpoints)
        primary_request = EndpointRequest()
        for key in ("default", mode, primary.name, primary.id):  # the CLI sends "default"
            primary_request = requested.pop(key, None) or primary_request
        if primary_request.ipv4 and primary.predefined:
            raise InvalidParameter("user specified IP address is supported on user defined networks only")
        record.endpoints[primary.id] = self._new_endpoint(primary, record, primary_request)
        for ref, endpoint in requested.items():
            net = self.net.lookup(ref)
            self._check_connectable(record, net)
            record.endpoints[net.id] = self._new_endpoint(net, record, endpoint)

    def _new_endpoint(self, net: NetworkRecord, container: ContainerRecord, request: EndpointRequest) -> EndpointRecord:
        aliases = list(request.aliases)
        return EndpointRecord(
            id=secrets.token_hex(32),
            network_id=net.id,
            container_id=container.id,
            aliases=aliases,
            requested_ipv4=request.ipv4,
        )

    def list_containers(self, all: bool, filters: dict[str, list[str]]) -> list[ContainerRecord]:
        allowed = {"id", "name", "label", "status", "network", "ancestor", "exited"}
        for key in filters:
            if key not in allowed:
                raise InvalidParameter(f"invalid filter '{key}'")
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
            try:
                await self._start(container)
            except EngineError:
                if container.auto_remove:  # as moby: a --rm container that cannot start is removed
                    await self._remove(container)
                raise

    async def _start(self, container: ContainerRecord) -> None:
        try:
            image = self.images.get(container.image_id)
        except ImageError as exc:
            raise NotFound(exc.message) from None
        try:
            netns_path = await self._kernel(self._setup_network, container)
            if container.port_bindings and self._publish_endpoint(container) is not None:
                container.published = self.ports.publish(container)
                await self._kernel(self.net.publish_ports, container.id, self._container_ports(container))
            link_env = self._link_env(container)
            mounts = self._write_etc_files(container)
            await self._register_dns(container, netns_path)
            for other, _ in self._linked(container):  # link aliases on user networks
                if other.state == "running" and other.netns:
                    await self._register_dns(other, str(namespaces.netns_path(other.netns)))
            uid, gid = user_ids(container.user, image.rootfs)
            process = ProcessSpec(
                args=container.args,
                env=merge_env(link_env + container.env, [f"HOSTNAME={container.hostname}"], keep_first=True),
                cwd=container.working_dir or "/",
                uid=uid,
                gid=gid,
                tty=container.tty,
            )
            await self.runtime.remove(container.id)  # a stale bundle from an earlier run
            await self.runtime.prepare(container.id, image.rootfs, process, container.hostname, netns_path, mounts)
            if self._exited.get(container.id, _SET_EVENT).is_set():
                # A waiter registered before this start (docker run's next-exit wait) keeps
                # its event; only a spent one is replaced.
                self._exited[container.id] = asyncio.Event()
            pid = await self.runtime.start(container.id)
        except Exception as exc:
            await self._release_ports(container)
            await self._unregister_dns(container)
            await self._kernel(self._teardown_network, container)
            message = exc.message if isinstance(exc, (RuncError, EngineError)) else str(exc)
            container.error = message
            self._save(container)
            if isinstance(exc, EngineError):
                raise
            status = 400 if "executable file not found" in message or "no such file" in message else 500
            raise EngineError(f"failed to start container {container.name}: {message}", status) from exc
        container.state = "running"
        container.pid = pid
        container.exit_code = 0
        container.error = ""
        container.started_at = now_rfc3339()
        container.finished_at = "0001-01-01T00:00:00Z"
        self._save(container)
        self._watch(container)

    def _watch(self, container: ContainerRecord) -> None:
        self._exited.setdefault(container.id, asyncio.Event())
        old = self._watchers.pop(container.id, None)
        if old is not None:
            old.cancel()
        self._watchers[container.id] = asyncio.get_running_loop().create_task(self._watch_exit(container.id))

    async def _watch_exit(self, container_id: str) -> None:
        try:
            code = await self.runtime.wait(container_id)
        except asyncio.CancelledError:
            raise
        except Exception:  # the runtime lost track: report the container as dead
            log.exception("waiting for container %s failed", container_id)
            code = 255
        container = self.containers.get(container_id)
        if container is None:
            return
        async with self._lock(container_id):
            if container.state == "running":
                await self._finish(container, code)
        self._watchers.pop(container_id, None)
        if container.auto_remove and container_id in self.containers:
            await self._remove(container)

    async def _finish(self, container: ContainerRecord, code: int) -> None:
        """Marks a container exited and frees its network resources."""
        container.state = "exited"
        container.exit_code = code
        container.pid = 0
        container.finished_at = now_rfc3339()
        await self._release_ports(container)
        await self._unregister_dns(container)
        await self._kernel(self._teardown_network, container)
        self._save(container)
        self._exited.setdefault(container.id, asyncio.Event()).set()

    async def stop_container(self, ref: str, timeout: int | None = None, signal: str = "") -> None:
        container = self.get_container(ref)
        async with self._lock(container.id):
            if container.state != "running":
                raise NotModified("container already stopped")
            sig = parse_signal(signal) if signal else signals.SIGTERM
            wait = DEFAULT_STOP_TIMEOUT if timeout is None else timeout
            code = await self.runtime.stop(container.id, float(max(wait, 0)), int(sig))
            await self._finish(container, code)

    async def kill_container(self, ref: str, signal: str = "SIGKILL") -> None:
        container = self.get_container(ref)
        sig = parse_signal(signal or "SIGKILL")
        if container.state != "running":
            raise Conflict(f"Cannot kill container: {ref}: Container {container.id} is not running")
        await self.runtime.kill(container.id, int(sig))

    async def remove_container(self, ref: str, force: bool = False) -> None:
        container = self.get_container(ref)
        async with self._lock(container.id):
            if container.state == "running":
                if not force:
                    raise Conflict(
                        f'cannot remove container "/{container.name}": container is running: '
                        "stop the container before removing or force remove"
                    )
                code = await self.runtime.stop(container.id, 0.0, int(signals.SIGKILL))
                await self._finish(container, code)
        await self._remove(container)

    async def _remove(self, container: ContainerRecord) -> None:
        task = self._watchers.pop(container.id, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        await self.runtime.remove(container.id)
        self.containers.pop(container.id, None)
        self.state.delete("containers", container.id)
        for event in (self._exited.pop(container.id, None), self._removed.pop(container.id, None)):
            if event is not None:
                event.set()
        self.execs = {k: v for k, v in self.execs.items() if v.container_id != container.id}

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

    async def container_logs(
        self, ref: str, stdout: bool, stderr: bool, tail: str = "all", follow: bool = False
    ) -> AsyncIterator[tuple[int, bytes]]:
        container = self.get_container(ref)
        paths = self.runtime.log_paths(container.id)
        wanted = [(1, paths[0])] if stdout else []
        if stderr:
            wanted.append((2, paths[1]))
        while follow and container.state == "created" and container.id in self.containers:
            await asyncio.sleep(LOG_POLL_SECONDS)  # attach before start: wait for the output to begin
        offsets: dict[int, int] = {}
        lines_wanted = None if tail in ("", "all") else parse_tail(tail)
        for stream, path in wanted:
            data = path.read_bytes() if path.exists() else b""
            offsets[stream] = len(data)
            if lines_wanted is not None:
                data = b"".join(data.splitlines(keepends=True)[-lines_wanted:]) if lines_wanted else b""
            if data:
                yield stream, data
        while follow:
            running = container.state == "running" and container.id in self.containers
            for stream, path in wanted:
                if not path.exists():
                    continue
                with path.open("rb") as handle:
                    handle.seek(offsets[stream])
                    chunk = handle.read()
                if chunk:
                    offsets[stream] += len(chunk)
                    yield stream, chunk
            if not running:
                break
            await asyncio.sleep(LOG_POLL_SECONDS)

    # ---- exec -----------------------------------------------------------------------
    async def create_exec(self, container_ref: str, request: ExecCreate) -> ExecRecord:
        container = self.get_container(container_ref)
        if container.state != "running":
            raise Conflict(f"container {container.id} is not running")
        if not request.cmd:
            raise InvalidParameter("No exec command specified")
        if request.user:
            user_ids(request.user, self.runtime.rootfs(container.id))
        record = ExecRecord(
            id=secrets.token_hex(32),
            container_id=container.id,
            args=list(request.cmd),
            env=list(request.env),
            working_dir=request.working_dir,
            user=request.user,
            attach_stdout=request.attach_stdout,
            attach_stderr=request.attach_stderr,
        )
        self.execs[record.id] = record
        return record

    def get_exec(self, exec_id: str) -> ExecRecord:
        record = self.execs.get(exec_id)
        if record is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return record

    async def run_exec(self, exec_id: str) -> AsyncIterator[tuple[int, bytes]]:
        record = self.get_exec(exec_id)
        if record.running or record.exit_code is not None:
            raise Conflict(f"Error: Exec command {exec_id} has already run")
        container = self.containers.get(record.container_id)
        if container is None or container.state != "running":
            raise Conflict(f"container {record.container_id} is not running")
        uid, gid = user_ids(record.user or container.user, self.runtime.rootfs(container.id))
        process = ProcessSpec(
            args=record.args,
            env=merge_env(container.env, record.env),
            cwd=record.working_dir or container.working_dir or "/",
            uid=uid,
            gid=gid,
        )
        record.running = True
        try:
            run = await self.runtime.exec(container.id, process)
            record.pid = run.pid
            async for stream, chunk in run.output():
                if (stream == 1 and record.attach_stdout) or (stream == 2 and record.attach_stderr):
                    yield stream, chunk
            record.exit_code = await run.wait()
        except RuncError as exc:
            record.exit_code = 126
            yield 2, (exc.message + "\n").encode()
        finally:
            record.running = False
            if record.exit_code is None:
                record.exit_code = 137

    # ---- system ---------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        states = [c.state for c in self.containers.values()]
        return {
            "Containers": len(states),
            "ContainersRunning": states.count("running"),
            "ContainersPaused": 0,
            "ContainersStopped": len(states) - states.count("running"),
            "Images": len(self.images.list()),
        }

    # ---- helpers --------------------------------------------------------------------
    def _lock(self, container_id: str) -> asyncio.Lock:
        return self._locks.setdefault(container_id, asyncio.Lock())

    def _save(self, container: ContainerRecord) -> None:
        if container.id in self.containers:
            self.state.save("containers", container.id, to_dict(container))
