"""Parsed API requests the engine accepts: the Docker JSON bodies after validation of shape.

shoal.api parses bodies into these; the engine validates meaning (names, subnets, refs).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.network.ports import PortBinding
from shoal.engine.records import IPAMConfig


@dataclass(slots=True)
class NetworkCreate:
    name: str
    driver: str = "bridge"
    scope: str = ""
    ipam_driver: str = "default"
    ipam_options: dict[str, str] = field(default_factory=dict)
    ipam_config: list[IPAMConfig] = field(default_factory=list)
    internal: bool = False
    attachable: bool = False
    ingress: bool = False
    enable_ipv6: bool = False
    config_only: bool = False
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    id: str = ""  # never from the API: a swarm network keeps the managers' id on the node (shoal/swarm/executor_net.py)


@dataclass(slots=True)
class EndpointRequest:
    """One entry of NetworkingConfig.EndpointsConfig, or the body of network connect."""

    ipv4: str = ""  # IPAMConfig.IPv4Address
    aliases: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    driver_opts: dict[str, str] = field(default_factory=dict)
    mac: str = ""  # MacAddress (--mac-address), validated


@dataclass(slots=True)
class ContainerCreate:
    image: str
    cmd: list[str] | None = None  # None: the image's Cmd
    entrypoint: list[str] | None = None  # None: the image's Entrypoint
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    hostname: str = ""
    domainname: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    tty: bool = False
    network_mode: str = ""  # "" or "default" means bridge
    auto_remove: bool = False
    links: list[str] = field(default_factory=list)
    port_bindings: list[PortBinding] = field(default_factory=list)  # -p / -P, already parsed
    endpoints: dict[str, EndpointRequest] = field(default_factory=dict)  # network name/id -> request
    raw_config: dict[str, Any] = field(default_factory=dict)  # the body minus HostConfig/NetworkingConfig
    raw_host_config: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class ExecCreate:
    cmd: list[str]
    env: list[str] = field(default_factory=list)
    working_dir: str = ""
    user: str = ""
    attach_stdout: bool = True
    attach_stderr: bool = True
    tty: bool = False
    attach_stdin: bool = False
    detach_keys: str = ""
    console_size: tuple[int, int] | None = None
