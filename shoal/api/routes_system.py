"""System routes of the Docker API: /_ping, /version, /info, /events, /system/df.

Reads host facts (kernel, CPUs, memory), engine counters and the engine's event log
(shoal.engine.events); wired by shoal.api.server.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import time
import socket
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from shoal.api import params, streams
from shoal.api.server import ENGINE, JSON_TYPE, add_route, json_response
from shoal.engine import events as events_mod
from shoal.engine.errors import InvalidParameter

_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le", "s390x": "s390x"}
_PING_HEADERS = {
    "Swarm": "inactive",
    "Builder-Version": "1",
    "Cache-Control": "no-cache, no-store, must-revalidate",
    "Pragma": "no-cache",
}


def go_arch() -> str:
    machine = platform.machine()
    return _GOARCH.get(machine, machine)


def python_version() -> str:
    return "python" + platform.python_version()


def operating_system() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return "Linux"


def mem_total() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def daemon_uuid(daemon_id: str) -> str:
    """Docker shows its engine ID as a UUID; derive a stable one from the 64-hex id."""
    try:
        return str(uuid.UUID(hex=daemon_id[:32]))
    except ValueError:
        return daemon_id


def version_json(engine: Any) -> dict[str, Any]:
    details = {
        "ApiVersion": params.MAX_API_VERSION,
        "MinAPIVersion": params.MIN_API_VERSION,
        "GitCommit": "shoal",
        "GoVersion": python_version(),
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": platform.release(),
        "Experimental": "false",
        "BuildTime": "",
    }
    return {
        "Platform": {"Name": "shoal"},
        "Components": [{"Name": "Engine", "Version": engine.version, "Details": details}],
        "Version": engine.version,
        "ApiVersion": params.MAX_API_VERSION,
        "MinAPIVersion": params.MIN_API_VERSION,
        "GitCommit": "shoal",
        "GoVersion": python_version(),
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": platform.release(),
        "BuildTime": "",
    }


def cgroup_info(engine: Any) -> dict[str, Any]:
    """What `docker info` says of cgroups: the cgroupfs driver (runc writes the files under
    /shoal/<daemon>), the host's version, and the limits shoal applies."""
    version = engine.resources.cgroups.version
    return {
        "MemoryLimit": True,
        "SwapLimit": True,
        "CpuCfsPeriod": True,
        "CpuCfsQuota": True,
        "CPUShares": True,
        "CPUSet": True,
        "PidsLimit": True,
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": version,
    }


def info_json(engine: Any) -> dict[str, Any]:
    from shoal.api.routes_swarm import info_section as swarm_info

    containers = engine.list_containers(True, {})
    running = sum(1 for c in containers if c.state == "running" and not c.paused)
    paused = sum(1 for c in containers if c.state == "running" and c.paused)
    images = engine.images.list()
    return {
        "ID": daemon_uuid(engine.daemon_id),
        "Containers": len(containers),
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": len(containers) - running - paused,
        "Images": len(images),
        "Driver": "overlay2",
        "DriverStatus": [],
        "Plugins": {"Volume": [], "Network": ["bridge", "host", "null"], "Authorization": None, "Log": ["json-file"]},
        **cgroup_info(engine),
        "IPv4Forwarding": True,
        "Debug": False,
        "NFd": 0,
        "OomKillDisable": False,
        "NGoroutines": 0,
        "SystemTime": "",
        "LoggingDriver": "json-file",
        "NEventsListener": engine.events.listeners,
        "KernelVersion": platform.release(),
        "OperatingSystem": operating_system(),
        "OSVersion": "",
        "OSType": "linux",
        "Architecture": platform.machine(),
        "IndexServerAddress": "",
        "RegistryConfig": None,
        "NCPU": os.cpu_count() or 1,
        "MemTotal": mem_total(),
        "GenericResources": None,
        "DockerRootDir": str(engine.data_dir),
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": socket.gethostname(),
        "Labels": [],
        "ExperimentalBuild": False,
        "ServerVersion": engine.version,
        "Runtimes": {"runc": {"path": "runc"}},
        "DefaultRuntime": "runc",
        "Swarm": swarm_info(engine),
        "LiveRestoreEnabled": False,
        "Isolation": "",
        "InitBinary": "",
        "SecurityOptions": ["name=seccomp,profile=builtin"],  # every container gets Docker's default profile
        "Warnings": engine.warnings(),
    }


async def ping(request: web.Request) -> web.Response:
    from shoal.api.routes_swarm import ping_swarm_header

    headers = {**_PING_HEADERS, "Swarm": ping_swarm_header(request.app[ENGINE])}
    if request.method == "HEAD":
        return web.Response(status=200, headers={**headers, "Content-Length": "0"})
    return web.Response(status=200, text="OK", content_type="text/plain", charset="utf-8", headers=headers)


async def version(request: web.Request) -> web.Response:
    return json_response(version_json(request.app[ENGINE]))


async def info(request: web.Request) -> web.Response:
    return json_response(info_json(request.app[ENGINE]))


async def events(request: web.Request) -> web.StreamResponse:
    """moby's getEvents: the ring's past events between since and until, then (unless until
    is already past) live ones until `until` or the client leaves; one JSON object a line."""
    log = request.app[ENGINE].events
    since_raw, until_raw = request.query.get("since", ""), request.query.get("until", "")
    since = events_mod.parse_timestamp(since_raw, "since")
    until = events_mod.parse_timestamp(until_raw, "until")
    if until is not None and since is not None and until < since:
        raise InvalidParameter(f"`since` time ({since_raw}) cannot be after `until` time ({until_raw})")
    filters = params.parse_filters(request.query.get("filters"))
    events_mod.validate_filters(filters)
    now = time.time_ns()
    only_past = until is not None and until < now
    subscription = log.subscribe(filters)  # before reading the ring: nothing falls in between
    try:
        past = log.past(since, until, filters)
        response = web.StreamResponse(status=200, headers={"Content-Type": JSON_TYPE})
        await response.prepare(request)
        seen = past[-1].time_nano if past else 0
        for event in past:
            await response.write(json.dumps(event.to_json()).encode() + b"\n")
        if only_past:
            await response.write_eof()
            return response
        deadline = None if until is None else (until - now) / 1e9
        await _stream_live(request, response, subscription, seen, deadline)
    finally:
        log.unsubscribe(subscription)
    return response


async def _stream_live(
    request: web.Request, response: web.StreamResponse, subscription: events_mod.Subscription,
    seen: int, deadline: float | None,
) -> None:
    gone = asyncio.ensure_future(streams.when_disconnected(request))
    timer = asyncio.ensure_future(asyncio.sleep(deadline if deadline is not None else 1e9))
    try:
        while True:
            getter = asyncio.ensure_future(subscription.queue.get())
            done, _ = await asyncio.wait({getter, gone, timer}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            event = getter.result()
            if event is None:  # too slow a reader: moby drops it too
                break
            if event.time_nano <= seen:
                continue  # already sent from the ring
            await response.write(json.dumps(event.to_json()).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await response.write_eof()
    except ConnectionError:
        pass
    finally:
        gone.cancel()
        timer.cancel()


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/_ping", ping)
    add_route(app, "HEAD", "/_ping", ping)
    add_route(app, "GET", "/version", version)
    add_route(app, "GET", "/info", info)
    add_route(app, "GET", "/events", events)
