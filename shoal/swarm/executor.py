"""The node's task executor (moby's daemon/cluster/executor/container, first form): agent/taskexec.py's interface over
the engine: a task becomes a container named <service>.<slot>.<task id> with Docker's swarm labels, created through the
same path as `docker create`; configs and secrets are files on a tmpfs under the run dir (never the data dir).
Used by agent/worker.py through shoal/swarm/node.py; network lookup for attachments in shoal/swarm/executor_net.py."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.taskexec import Dependencies, Observed
from common.errdefs import InvalidParameter, NotFound, NotModified, SystemError_
from proto import objects_pb2 as pb
from shoal.api.service_json import health_json
from shoal.engine import steptime
from shoal.swarm.executor_net import predefined_mode, task_networks

log = logging.getLogger(__name__)

L_NODE = "com.docker.swarm.node.id"
L_SERVICE_ID = "com.docker.swarm.service.id"
L_SERVICE_NAME = "com.docker.swarm.service.name"
L_TASK = "com.docker.swarm.task"
L_TASK_ID = "com.docker.swarm.task.id"
L_TASK_NAME = "com.docker.swarm.task.name"
FILES_DIR = "swarm-task-files"  # under the engine's exec root (a tmpfs per task below it)
TMPFS_BYTES = 8 * 1024 * 1024  # configs are < 1000 KiB each (the store's cap); a few per task
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MNT_DETACH = 2, 4, 8, 2
_libc = ctypes.CDLL(None, use_errno=True)


def service_name(task: pb.Task) -> str:
    """<service> of the task's name <service>.<slot|node>.<id>."""
    name = task.annotations.name
    parts = name.rsplit(".", 2)
    return parts[0] if len(parts) == 3 else (task.service_id or name)


def container_name(task: pb.Task) -> str:
    name = task.annotations.name
    if name and ".." not in name:
        return name
    # a replicated job's slot 0 task is named before it has a node ("job..<id>"): swarmkit's naming puts the node
    # id where a task has no slot
    middle = str(task.slot) if task.slot else task.node_id
    return f"{service_name(task)}.{middle}.{task.id}"


_TEMPLATE = re.compile(r"\{\{\s*\.(Service|Task|Node)\.(\w+)\s*\}\}")


def expand(text: str, task: pb.Task, node_hostname: str) -> str:
    """Docker's service templates ({{.Service.Name}}, {{.Task.Slot}}, {{.Node.Hostname}}, ...) in hostname, env, mounts."""
    values = {
        ("Service", "ID"): task.service_id, ("Service", "Name"): service_name(task),
        ("Task", "ID"): task.id, ("Task", "Name"): container_name(task), ("Task", "Slot"): str(task.slot or task.node_id),
        ("Node", "ID"): task.node_id, ("Node", "Hostname"): node_hostname,
    }
    return _TEMPLATE.sub(lambda m: values.get((m.group(1), m.group(2)), m.group(0)), text)


def _has(msg: Any, name: str) -> bool:
    return name in msg.DESCRIPTOR.fields_by_name


def _field(msg: Any, name: str, default: Any = None) -> Any:
    """A field the services/secrets work adds to the objects (mounts, resources, stop_grace_period, secrets):
    read when this build's objects.proto has it, `default` otherwise."""
    return getattr(msg, name) if _has(msg, name) else default


def _enum_name(msg: Any, name: str) -> str:
    value = getattr(msg, name)
    if isinstance(value, str):
        return value.lower()
    f = msg.DESCRIPTOR.fields_by_name[name]
    if f.enum_type is not None:
        return f.enum_type.values_by_number[value].name.lower()
    return str(value)


def mounts_json(c: Any, task: pb.Task, hostname: str) -> list[dict[str, Any]]:
    """ContainerSpec.mounts (swarmkit's Mount: type, source, target, readonly, bind/volume/tmpfs options) as the
    HostConfig.Mounts of `docker create --mount`."""
    out = []
    for m in _field(c, "mounts", []) or []:
        kind = _enum_name(m, "type") if _has(m, "type") else "bind"
        entry: dict[str, Any] = {"Type": kind, "Target": m.target, "ReadOnly": bool(_field(m, "readonly") or _field(m, "read_only"))}
        if m.source:
            entry["Source"] = expand(m.source, task, hostname)
        bo = _field(m, "bind_options")
        if kind == "bind" and bo is not None and m.HasField("bind_options") and _field(bo, "propagation"):
            entry["BindOptions"] = {"Propagation": _enum_name(bo, "propagation").replace("_", "")}
        vo = _field(m, "volume_options")
        if kind == "volume" and vo is not None and m.HasField("volume_options"):
            entry["VolumeOptions"] = {"NoCopy": bool(_field(vo, "nocopy", False)), "Labels": dict(_field(vo, "labels", {}) or {})}
        to = _field(m, "tmpfs_options")
        if kind == "tmpfs" and to is not None and m.HasField("tmpfs_options"):
            opts: dict[str, Any] = {}
            if _field(to, "size_bytes"):
                opts["SizeBytes"] = int(to.size_bytes)
            if _field(to, "mode"):
                opts["Mode"] = int(to.mode)
            entry["TmpfsOptions"] = opts
        out.append(entry)
    return out


_PROTO = {pb.PortConfig.TCP: "tcp", pb.PortConfig.UDP: "udp", pb.PortConfig.SCTP: "sctp"}


def _host_options(c: Any) -> dict[str, Any]:
    """The HostConfig options of the ContainerSpec's `docker service create` flags, as `docker run` names them (the
    engine's create checks their values)."""
    out: dict[str, Any] = {}
    if _field(c, "read_only"):
        out["ReadonlyRootfs"] = True
    if _field(c, "init"):
        out["Init"] = True
    for key, name in (("CapAdd", "capability_add"), ("CapDrop", "capability_drop")):
        if _field(c, name):
            out[key] = list(getattr(c, name))
    if _field(c, "hosts"):
        # swarm's "IP name alias..." lines as Docker's "name:IP" entries, one per name
        out["ExtraHosts"] = [f"{name}:{line.split()[0]}" for line in c.hosts for name in line.split()[1:]]
    dns = _field(c, "dns_config")
    if dns is not None and c.HasField("dns_config"):
        for key, name in (("Dns", "nameservers"), ("DnsSearch", "search"), ("DnsOptions", "options")):
            if getattr(dns, name):
                out[key] = list(getattr(dns, name))
    if _field(c, "sysctls"):
        out["Sysctls"] = dict(c.sysctls)
    if _field(c, "ulimits"):
        out["Ulimits"] = [{"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in c.ulimits]
    if _field(c, "groups"):
        out["GroupAdd"] = list(c.groups)
    if _field(c, "oom_score_adj"):  # out of range: the create refuses it, with moby's words, and the task is rejected
        out["OomScoreAdj"] = int(c.oom_score_adj)
    return out


def host_ports(task: pb.Task) -> list[pb.PortConfig]:
    """The task's ports published in host mode (`--publish mode=host`): bound on this node by the container itself;
    ingress ports are the routing mesh's (agent/network/lb*), not the container's."""
    ports = task.endpoint.ports or task.endpoint.spec.ports
    return [p for p in ports if p.publish_mode == pb.PortConfig.HOST and p.target_port]


def create_body(task: pb.Task, node_hostname: str, networks: list[tuple[str, str]],
                files: list[tuple[str, str]]) -> dict[str, Any]:
    """The `docker create` body for a task. networks: (local network name, IPv4 address or ""), first is
    the primary; files: (host file, target in the container) for configs and secrets, mounted read-only."""
    c = task.spec.container
    labels = dict(c.labels)
    labels.update({L_NODE: task.node_id, L_SERVICE_ID: task.service_id, L_SERVICE_NAME: service_name(task),
                   L_TASK: "", L_TASK_ID: task.id, L_TASK_NAME: container_name(task)})
    host: dict[str, Any] = {"NetworkMode": networks[0][0] if networks else (predefined_mode(task) or "default")}
    mounts = mounts_json(c, task, node_hostname)
    mounts += [{"Type": "bind", "Source": src, "Target": dst, "ReadOnly": True} for src, dst in files]
    if mounts:
        host["Mounts"] = mounts
    published = host_ports(task)
    if published:
        bindings: dict[str, list[dict[str, str]]] = {}
        for p in published:  # published 0: a free port of the node, as `-p 80` (moby does the same for mode=host)
            bindings.setdefault(f"{p.target_port}/{_PROTO[p.protocol]}", []).append(
                {"HostIp": "", "HostPort": str(p.published_port) if p.published_port else ""})
        host["PortBindings"] = bindings
    res = _field(task.spec, "resources")
    if res is not None and task.spec.HasField("resources") and res.HasField("limits"):
        if res.limits.memory_bytes:
            host["Memory"] = int(res.limits.memory_bytes)
        if res.limits.nano_cpus:
            host["NanoCpus"] = int(res.limits.nano_cpus)
        if _field(res.limits, "pids"):
            host["PidsLimit"] = int(res.limits.pids)
    host.update(_host_options(c))
    body: dict[str, Any] = {
        "Image": c.image,
        "Env": [expand(e, task, node_hostname) for e in c.env],
        "Labels": labels,
        "HostConfig": host,
    }
    if c.command:
        body["Entrypoint"] = list(c.command)  # swarm's Command replaces the image's entrypoint, Args its Cmd
    if c.args:
        body["Cmd"] = list(c.args)
    if c.dir:
        body["WorkingDir"] = c.dir
    if c.user:
        body["User"] = c.user
    if c.hostname:
        body["Hostname"] = expand(c.hostname, task, node_hostname)
    grace = _field(c, "stop_grace_period")
    if grace is not None and c.HasField("stop_grace_period"):
        body["StopTimeout"] = max(0, round(grace.ToNanoseconds() / 1e9))
    if _field(c, "stop_signal"):
        body["StopSignal"] = c.stop_signal
    if _field(c, "tty"):
        body["Tty"] = True
    if _field(c, "open_stdin"):
        body["OpenStdin"] = True
    if c.HasField("healthcheck"):
        hc = health_json(c.healthcheck)
        if hc:  # an empty one is the image's check, as no Healthcheck at all
            body["Healthcheck"] = hc
    if networks:
        body["NetworkingConfig"] = {"EndpointsConfig": {
            name: {"IPAMConfig": {"IPv4Address": ip}} if ip else {} for name, ip in networks}}
    return body


# ------------------------------------------------------------------------------------------ configs and secrets
def _target(name: str, default_dir: str) -> str:
    return name if name.startswith("/") else f"{default_dir}/{name}"


def task_files(task: pb.Task, deps: Dependencies) -> list[tuple[str, bytes, int, int, int, str]]:
    """(file name on the tmpfs, data, mode, uid, gid, target) of every config and secret the task references (one file
    per reference: the same secret may go to two targets with two modes). Refused (InvalidParameter) when one is not
    in the assignment."""
    out = []
    c = task.spec.container
    for ref in c.configs:
        cfg = deps.configs.get(ref.config_id)
        if cfg is None:
            raise InvalidParameter(f"config {ref.config_name or ref.config_id} not found in the task's assignment")
        f = ref.file
        out.append((f"config-{len(out)}-{ref.config_id}", bytes(cfg.spec.data), f.mode or 0o444, int(f.uid or 0), int(f.gid or 0),
                    _target(f.name or ref.config_name, "")))
    for ref in _field(c, "secrets", []) or []:
        sec = deps.secrets.get(ref.secret_id)
        if sec is None:
            raise InvalidParameter(f"secret {ref.secret_name or ref.secret_id} not found in the task's assignment")
        f = ref.file
        out.append((f"secret-{len(out)}-{ref.secret_id}", bytes(sec.spec.data), f.mode or 0o444, int(f.uid or 0), int(f.gid or 0),
                    _target(f.name or ref.secret_name, "/run/secrets")))
    return out


def _mount_tmpfs(path: Path) -> None:
    if os.path.ismount(path):
        return
    opts = f"size={TMPFS_BYTES},mode=0700".encode()
    if _libc.mount(b"tmpfs", str(path).encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, opts) != 0:
        err = ctypes.get_errno()
        raise SystemError_(f"mount tmpfs on {path}: {os.strerror(err)}")


def _unmount(path: Path) -> None:
    if os.path.ismount(path):
        _libc.umount2(str(path).encode(), _MNT_DETACH)


def write_task_files(root: Path, files: list[tuple[str, bytes, int, int, int, str]]) -> list[tuple[str, str]]:
    """The files on a fresh tmpfs at root (secrets never touch a disk); returns (host path, target) pairs."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    _mount_tmpfs(root)
    out = []
    for name, data, mode, uid, gid, target in files:
        p = root / name
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, data)
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode & 0o7777)
        finally:
            os.close(fd)
        out.append((str(p), target))
    return out


def remove_task_files(root: Path) -> None:
    _unmount(root)
    shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------------------ the executor
class EngineTaskController:
    def __init__(self, ex: EngineExecutor, task: pb.Task, deps: Dependencies) -> None:
        self.ex = ex
        self.task = task
        self.deps = deps

    @property
    def engine(self) -> Any:
        return self.ex.engine

    def _record(self) -> Any | None:
        for c in list(self.engine.containers.values()):
            if c.labels.get(L_TASK_ID) == self.task.id:
                return c
        return None

    async def inspect(self) -> Observed:
        c = self._record()
        if c is None:
            return Observed(exists=False)
        running = c.state == "running" or bool(getattr(c, "restarting", False))
        exited = c.state in ("exited", "dead")
        ports = [(p["proto"], int(p["container_port"]), int(p["host_port"])) for p in (c.published or [])] if running else []
        health = c.health["Status"] if running and c.health else ""
        return Observed(exists=True, running=running, exited=exited, exit_code=int(c.exit_code), container_id=c.id,
                        pid=int(c.pid or 0), error="OOMKilled" if exited and c.oom_killed else "", ports=ports,
                        health=health)

    async def prepare(self) -> None:
        from shoal.api import params  # the API's parser: a task is created exactly as `docker create` would be

        if self._record() is not None:
            return
        prewarm = getattr(getattr(self.engine, "runtime", None), "prewarm", None)
        if prewarm is not None:
            prewarm()  # a spare shim (forked by the zygote) is ready before the start, not made during it
        files_dir = self.ex.files_root / self.task.id
        files = task_files(self.task, self.deps)
        steps = steptime.Steps(f"prepare task {self.task.id[:12]}")
        nets = await task_networks(self.engine, self.task, self.deps)
        steps.mark("networks")
        paths = await asyncio.to_thread(write_task_files, files_dir, files) if files else []
        body = create_body(self.task, self.ex.hostname(), nets, paths)
        try:
            req = params.parse_container_create(body)
            steps.mark("body")
            try:
                # Saved by the start that follows (before runc runs): one record file fewer per task.
                await self.engine.create_container(container_name(self.task), req, save=False)
                steps.mark("create")
                steps.end()
            except NotFound:
                image = self.task.spec.container.image
                if "@" not in image:
                    raise
                # a digest-pinned reference (the CLI resolves one where a registry answers): the local image by name
                body["Image"] = image.split("@", 1)[0]
                await self.engine.create_container(container_name(self.task), params.parse_container_create(body),
                                                   save=False)
        except BaseException:
            if files:
                await asyncio.to_thread(remove_task_files, files_dir)
            raise

    async def start(self) -> None:
        c = self._record()
        if c is None:
            raise NotFound(f"no container for task {self.task.id}")
        t0 = time.monotonic()
        with contextlib.suppress(NotModified):
            await self.engine.start_container(c.id)
        log.debug("perf: task %s start_container in %.3f s", self.task.id[:12], time.monotonic() - t0)

    async def wait(self) -> Observed:
        c = self._record()
        if c is not None:
            with contextlib.suppress(NotFound):
                await self.engine.wait_container(c.id, "not-running")
        return await self.inspect()

    async def wait_health(self, seen: str) -> str:
        c = self._record()
        if c is None:
            return ""
        try:
            current = await self.engine.wait_health(c.id, seen)
        except NotFound:
            return ""
        # the engine answers a stopped container's last status; the runner wants "" then (the exit is the wait's)
        return current if c.state == "running" else ""

    async def retire(self) -> None:
        """The task is over; its stopped container stays only for its logs: the node's copies of the swarm networks
        only it was on can go (shoal.swarm.local_copies does not count a task's stopped container)."""
        from shoal.swarm.container_attach import prune_copies

        await prune_copies(self.engine)

    async def shutdown(self, grace_s: float) -> None:
        c = self._record()
        if c is None:
            return
        with contextlib.suppress(NotModified, NotFound):
            await self.engine.stop_container(c.id, timeout=int(round(grace_s)))

    async def remove(self) -> None:
        c = self._record()
        if c is not None:
            with contextlib.suppress(NotFound):
                await self.engine.remove_container(c.id, force=True, volumes=True)
        await asyncio.to_thread(remove_task_files, self.ex.files_root / self.task.id)


class EngineExecutor:
    def __init__(self, engine: Any, hostname: Callable[[], str]) -> None:
        self.engine = engine
        self.hostname = hostname
        self.files_root = Path(engine.options.exec_root) / FILES_DIR

    def controller(self, task: pb.Task, deps: Dependencies) -> EngineTaskController:
        return EngineTaskController(self, task, deps)

    async def task_containers(self) -> dict[str, str]:
        return {c.labels[L_TASK_ID]: c.id for c in list(self.engine.containers.values()) if c.labels.get(L_TASK_ID)}

    async def remove_container(self, container_id: str) -> None:
        c = self.engine.containers.get(container_id)
        tid = c.labels.get(L_TASK_ID, "") if c is not None else ""
        with contextlib.suppress(NotFound):
            await self.engine.remove_container(container_id, force=True, volumes=True)
        if tid:
            await asyncio.to_thread(remove_task_files, self.files_root / tid)
