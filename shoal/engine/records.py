"""Plain records the engine keeps and persists: networks, endpoints, containers, execs.

Persisted as JSON in the data dir by shoal.engine.state; converted to Docker JSON by
shoal.api.convert. Field names follow what they mean, not Docker's spelling.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(slots=True)
class IPAMConfig:
    subnet: str  # "172.17.0.0/16"
    gateway: str = ""  # "172.17.0.1"
    ip_range: str = ""  # "" means the whole subnet


@dataclass(slots=True)
class NetworkRecord:
    id: str  # 64 hex
    name: str
    driver: str  # bridge | host | null
    created: str  # RFC 3339 with nanoseconds, UTC
    scope: str = "local"
    ipam_driver: str = "default"
    ipam_options: dict[str, str] = field(default_factory=dict)
    ipam_config: list[IPAMConfig] = field(default_factory=list)
    internal: bool = False
    attachable: bool = False
    ingress: bool = False
    enable_ipv6: bool = False
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    predefined: bool = False  # bridge, host, none: cannot be removed or configured

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass(slots=True)
class EndpointRecord:
    id: str  # 64 hex
    network_id: str
    container_id: str
    ipv4: str = ""  # "172.17.0.2" ("" on host/none)
    prefixlen: int = 0  # 16
    gateway: str = ""
    mac: str = ""  # "02:42:ac:11:00:02"
    aliases: list[str] = field(default_factory=list)
    requested_ipv4: str = ""  # IPAMConfig.IPv4Address: asked for again at every start
    host_ifname: str = ""  # the veth end on the host side
    ifname: str = ""  # the interface name inside the container ("eth0")


@dataclass(slots=True)
class ContainerRecord:
    id: str  # 64 hex
    name: str  # without the leading "/"
    image: str  # as the user gave it ("busybox")
    image_id: str  # "sha256:..."
    created: str
    args: list[str] = field(default_factory=list)  # the full argv: entrypoint + cmd
    cmd: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    hostname: str = ""
    domainname: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    network_mode: str = "bridge"  # bridge | host | none | a network name or id
    auto_remove: bool = False
    tty: bool = False
    state: str = "created"  # created | running | exited | dead | removing
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_at: str = "0001-01-01T00:00:00Z"
    finished_at: str = "0001-01-01T00:00:00Z"
    netns: str = ""  # name of the network namespace shoal made ("" for host mode)
    endpoints: dict[str, EndpointRecord] = field(default_factory=dict)  # network id -> endpoint
    port_bindings: list[dict[str, Any]] = field(default_factory=list)  # requested: PortBinding fields
    published: list[dict[str, Any]] = field(default_factory=list)  # while running: proto, host_ip, host_port, container_port
    links: list[list[str]] = field(default_factory=list)  # [container id, alias] (--link name:alias)
    create_config: dict[str, Any] = field(default_factory=dict)  # the create body, echoed as Config
    host_config: dict[str, Any] = field(default_factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass(slots=True)
class ExecRecord:
    id: str
    container_id: str
    args: list[str]
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    attach_stdout: bool = True
    attach_stderr: bool = True
    running: bool = False
    exit_code: int | None = None
    pid: int = 0


def to_dict(record: Any) -> dict[str, Any]:
    return asdict(record)


def network_from_dict(data: dict[str, Any]) -> NetworkRecord:
    data = dict(data)
    data["ipam_config"] = [IPAMConfig(**c) for c in data.get("ipam_config", [])]
    return NetworkRecord(**_known(NetworkRecord, data))


def container_from_dict(data: dict[str, Any]) -> ContainerRecord:
    data = dict(data)
    data["endpoints"] = {
        k: EndpointRecord(**_known(EndpointRecord, v)) for k, v in data.get("endpoints", {}).items()
    }
    return ContainerRecord(**_known(ContainerRecord, data))


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in names}
