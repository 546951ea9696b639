"""System routes of the Docker API: /_ping, /version, /info.

Reads host facts (kernel, CPUs, memory) and engine counters; wired by shoal.api.server.
"""
from __future__ import annotations

import os
import platform
import socket
import uuid
from pathlib import Path
from typing import Any

from aiohttp import web

from shoal.api import params
from shoal.api.server import ENGINE, add_route, json_response

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
        "NEventsListener": 0,
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


def add_routes(app: web.Application) -> None:
    add_route(app, "GET", "/_ping", ping)
    add_route(app, "HEAD", "/_ping", ping)
    add_route(app, "GET", "/version", version)
    add_route(app, "GET", "/info", info)
