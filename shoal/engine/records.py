"""Plain records the engine keeps and persists: containers and execs (networks and endpoints
are agent.network.records, re-exported here).

Persisted as JSON in the data dir by shoal.engine.state; converted to Docker JSON by
shoal.api.convert. Field names follow what they mean, not Docker's spelling.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from agent.network.records import (  # noqa: F401 - re-exported for the engine and the API
    EndpointRecord,
    IPAMConfig,
    NetworkRecord,
    endpoint_from_dict,
    checked_fields as _checked,
    network_from_dict,
    to_dict,
)


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
    paused: bool = False  # running with its cgroup frozen (docker pause); state stays "running"
    oom_killed: bool = False  # the OOM killer killed a process of its last run
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
    mounts: list[dict[str, Any]] = field(default_factory=list)  # agent.volumes.specs.MountPoint dicts
    # restart policies (shoal.engine.restart): what moby keeps on its container
    restart_count: int = 0
    manually_stopped: bool = False  # stopped or killed by the user since its last start
    started_before: bool = False  # only those come back at daemon start
    restarting: bool = False  # exited, its next start scheduled by the policy
    # health checks (shoal.engine.health): the merged Config.Healthcheck (Docker's JSON, None when
    # neither the create nor the image has one) and State.Health, the Docker JSON
    # {"Status", "FailingStreak", "Log"}, None when the container has no check to run
    healthcheck: dict[str, Any] | None = None
    health: dict[str, Any] | None = None

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
    tty: bool = False
    attach_stdin: bool = False
    detach_keys: str = ""
    console_size: tuple[int, int] | None = None
    run: Any = None  # the agent.executor.runtime.ExecRun while it runs (execs are not persisted)


CONTAINER_STATES = ("created", "running", "exited", "dead", "removing")


def container_from_dict(data: dict[str, Any]) -> ContainerRecord:
    """The record saved by to_dict; TypeError/ValueError naming the field when it is not one
    (a truncated, emptied or hand-edited file must not become a half-valid container)."""
    data = _checked(ContainerRecord, data)
    endpoints = data.get("endpoints", {})
    data["endpoints"] = {k: EndpointRecord(**_checked(EndpointRecord, v)) for k, v in endpoints.items()}
    record = ContainerRecord(**data)
    if len(record.id) != 64 or any(c not in "0123456789abcdef" for c in record.id):
        raise ValueError(f"field id: {record.id[:80]!r} is not 64 hex digits")
    if record.state not in CONTAINER_STATES:
        raise ValueError(f"field state: {record.state[:40]!r} is not one of {', '.join(CONTAINER_STATES)}")
    return record
