"""Conversion of engine records and images into the Docker Engine API's JSON objects.

Pure functions of their arguments (the clock is passed in); shoal.api.routes_* call them with
records from shoal.engine and images from agent.images.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from shoal.api.params import get_ci
from shoal.humanize import human_duration
from shoal.engine import container_mounts, health
from shoal.engine.records import ContainerRecord, EndpointRecord, ExecRecord, NetworkRecord

ZERO_TIME = "0001-01-01T00:00:00Z"
_FRACTION = re.compile(r"\.(\d+)")


def parse_time(value: str) -> datetime | None:
    """RFC 3339 (nanoseconds allowed) -> aware datetime; the zero time or "" -> None."""
    if not value or value.startswith("0001-01-01"):
        return None
    # Python keeps microseconds: drop digits past the sixth.
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), value, count=1)
    text = text.replace("Z", "+00:00").replace("z", "+00:00")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def unix_seconds(value: str) -> int:
    parsed = parse_time(value)
    return int(parsed.timestamp()) if parsed else 0


def docker_state(c: ContainerRecord) -> str:
    """State.Status: the record's state, "paused" for a running container whose cgroup is frozen,
    "restarting" for an exited one its policy will start again (public_state)."""
    return "paused" if c.state == "running" and c.paused else public_state(c)


def container_status(c: ContainerRecord, now: datetime) -> str:
    """The human STATUS column: "Up 2 minutes", "Exited (0) 5 seconds ago", "Created"."""
    if getattr(c, "restarting", False) and c.state != "running":
        finished = parse_time(c.finished_at)
        ago = f" {human_duration((now - finished).total_seconds())} ago" if finished else ""
        return f"Restarting ({c.exit_code}){ago}"
    if c.state == "running":
        started = parse_time(c.started_at)
        up = "Up " + human_duration((now - started).total_seconds()) if started else "Up"
        return up + " (Paused)" if c.paused else up + health.status_suffix(c.health)
    if c.state == "exited":
        finished = parse_time(c.finished_at)
        if finished is None:
            return f"Exited ({c.exit_code})"
        return f"Exited ({c.exit_code}) {human_duration((now - finished).total_seconds())} ago"
    if c.state == "removing":
        return "Removal In Progress"
    if c.state == "dead":
        return "Dead"
    return "Created"


def public_state(c: ContainerRecord) -> str:
    """State as Docker names it: an exited container its policy will start again is
    "restarting" (shoal.engine.restart)."""
    if getattr(c, "restarting", False) and c.state != "running":
        return "restarting"
    return c.state


# ---- networks -----------------------------------------------------------------------

def _ipam_config(net: NetworkRecord) -> list[dict[str, str]]:
    out = []
    for cfg in net.ipam_config:
        entry = {"Subnet": cfg.subnet}
        if cfg.ip_range:
            entry["IPRange"] = cfg.ip_range
        if cfg.gateway:
            entry["Gateway"] = cfg.gateway
        out.append(entry)
    return out


def network_json(
    net: NetworkRecord, endpoints: list[tuple[ContainerRecord, EndpointRecord]] | None = None
) -> dict[str, Any]:
    """The Network object of `network inspect` (and, with no endpoints, of `network ls`)."""
    containers = {}
    for container, ep in endpoints or []:
        containers[container.id] = {
            # Docker names a sandbox's docker_gwbridge endpoint after the sandbox, not the container.
            "Name": f"gateway_{container.id[:12]}" if ep.gateway_only else container.name,
            "EndpointID": ep.id,
            "MacAddress": ep.mac,
            "IPv4Address": f"{ep.ipv4}/{ep.prefixlen}" if ep.ipv4 else "",
            "IPv6Address": "",
        }
    return {
        "Name": net.name,
        "Id": net.id,
        "Created": net.created,
        "Scope": net.scope,
        "Driver": net.driver,
        "EnableIPv4": bool(net.ipam_config),  # host and none have no addresses
        "EnableIPv6": net.enable_ipv6,
        "IPAM": {
            "Driver": net.ipam_driver,
            "Options": dict(net.ipam_options),
            "Config": _ipam_config(net),
        },
        "Internal": net.internal,
        "Attachable": net.attachable,
        "Ingress": net.ingress,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": containers,
        "Options": dict(net.options),
        "Labels": dict(net.labels),
    }


# ---- containers ---------------------------------------------------------------------

def _dns_names(c: ContainerRecord, ep: EndpointRecord, net: NetworkRecord | None) -> list[str] | None:
    # Only user-defined networks resolve names (S11); Docker leaves DNSNames null elsewhere.
    if net is None or net.predefined:
        return None
    names: list[str] = []
    for name in [c.name, *ep.aliases, c.short_id, c.hostname]:
        if name and name not in names:
            names.append(name)
    return names


def endpoint_settings(
    c: ContainerRecord, ep: EndpointRecord, net: NetworkRecord | None
) -> dict[str, Any]:
    return {
        "IPAMConfig": None,
        "Links": None,
        "Aliases": list(ep.aliases) or None,
        "MacAddress": ep.mac,
        "DriverOpts": None,
        "GwPriority": 0,
        "NetworkID": ep.network_id,
        "EndpointID": ep.id,
        "Gateway": ep.gateway,
        "IPAddress": ep.ipv4,
        "IPPrefixLen": ep.prefixlen,
        "IPv6Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "DNSNames": _dns_names(c, ep, net),
    }


def _networks(c: ContainerRecord, networks: Mapping[str, NetworkRecord]) -> dict[str, Any]:
    """Endpoint settings keyed by network name (the id when the network is unknown)."""
    out = {}
    for net_id, ep in sorted(c.endpoints.items(), key=lambda kv: _net_name(kv[0], networks)):
        if ep.gateway_only:  # docker_gwbridge's way out is not one of the container's networks (as Docker)
            continue
        net = networks.get(net_id)
        out[_net_name(net_id, networks)] = endpoint_settings(c, ep, net)
    return out


def _net_name(net_id: str, networks: Mapping[str, NetworkRecord]) -> str:
    net = networks.get(net_id)
    return net.name if net else net_id


def _command(c: ContainerRecord) -> str:
    return " ".join(c.args)


def _exposed_ports(c: ContainerRecord) -> dict[str, Any]:
    ports = get_ci(c.create_config, "ExposedPorts", {})
    exposed = dict(ports) if isinstance(ports, dict) else {}
    for binding in c.port_bindings:
        exposed.setdefault(f"{binding['container_port']}/{binding['proto']}", {})
    return exposed


def _port_key(key: str) -> tuple[int, str]:
    port, _, proto = key.partition("/")
    return (int(port) if port.isdigit() else 0, proto or "tcp")


def summary_ports(c: ContainerRecord) -> list[dict[str, Any]]:
    """Ports[] of GET /containers/json: published ports (while running), then exposed ones."""
    out: list[dict[str, Any]] = []
    published = set()
    for p in c.published:
        published.add((p["container_port"], p["proto"]))
        out.append({"IP": p["host_ip"] or "0.0.0.0", "PrivatePort": p["container_port"],
                    "PublicPort": p["host_port"], "Type": p["proto"]})
    for key in _exposed_ports(c):
        port, proto = _port_key(key)
        if (port, proto) not in published:
            out.append({"PrivatePort": port, "Type": proto})
    return out


def inspect_ports(c: ContainerRecord) -> dict[str, Any]:
    """NetworkSettings.Ports: "80/tcp" -> [{HostIp, HostPort}] or None when not published."""
    out: dict[str, Any] = {key: None for key in _exposed_ports(c)}
    for p in c.published:
        out.setdefault(f"{p['container_port']}/{p['proto']}", None)
        key = f"{p['container_port']}/{p['proto']}"
        out[key] = (out[key] or []) + [{"HostIp": p["host_ip"] or "0.0.0.0", "HostPort": str(p["host_port"])}]
    return out


def container_summary(
    c: ContainerRecord, networks: Mapping[str, NetworkRecord], now: datetime
) -> dict[str, Any]:
    """One entry of GET /containers/json."""
    return {
        "Id": c.id,
        "Names": ["/" + c.name],
        "Image": c.image,
        "ImageID": c.image_id,
        "Command": _command(c),
        "Created": unix_seconds(c.created),
        "Ports": summary_ports(c),
        "Labels": dict(c.labels),
        "State": docker_state(c),
        "Status": container_status(c, now),
        "HostConfig": {"NetworkMode": c.network_mode},
        "NetworkSettings": {"Networks": _networks(c, networks)},
        "Mounts": container_mounts.inspect_json(c),
    }


_HOST_CONFIG_DEFAULTS: dict[str, Any] = {
    "Binds": None,
    "ContainerIDFile": "",
    "LogConfig": {"Type": "json-file", "Config": {}},
    "NetworkMode": "bridge",
    "PortBindings": {},
    "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
    "AutoRemove": False,
    "VolumeDriver": "",
    "VolumesFrom": None,
    "CapAdd": None,
    "CapDrop": None,
    "CgroupnsMode": "private",
    "Dns": [],
    "DnsOptions": [],
    "DnsSearch": [],
    "ExtraHosts": None,
    "GroupAdd": None,
    "IpcMode": "private",
    "Cgroup": "",
    "Links": None,
    "OomScoreAdj": 0,
    "PidMode": "",
    "Privileged": False,
    "PublishAllPorts": False,
    "ReadonlyRootfs": False,
    "SecurityOpt": None,
    "UTSMode": "",
    "UsernsMode": "",
    "ShmSize": 67108864,
    "Runtime": "runc",
    "Isolation": "",
    "Memory": 0,
    "NanoCpus": 0,
    "CpuShares": 0,
    "Init": None,
}


def _host_config(c: ContainerRecord) -> dict[str, Any]:
    out = dict(_HOST_CONFIG_DEFAULTS)
    out.update({k: v for k, v in c.host_config.items() if v is not None})
    # The engine's view wins over the echoed body; docker-py reads LogConfig.Type.
    out["NetworkMode"] = c.network_mode
    out["AutoRemove"] = c.auto_remove
    if not isinstance(out.get("LogConfig"), dict) or not out["LogConfig"].get("Type"):
        out["LogConfig"] = {"Type": "json-file", "Config": {}}
    return out


def _config(c: ContainerRecord) -> dict[str, Any]:
    raw = c.create_config
    config = {
        "Hostname": c.hostname,
        "Domainname": c.domainname,
        "User": c.user,
        "AttachStdin": bool(get_ci(raw, "AttachStdin", False)),
        "AttachStdout": bool(get_ci(raw, "AttachStdout", False)),
        "AttachStderr": bool(get_ci(raw, "AttachStderr", False)),
        "Tty": c.tty,
        "OpenStdin": bool(get_ci(raw, "OpenStdin", False)),
        "StdinOnce": bool(get_ci(raw, "StdinOnce", False)),
        "Env": list(c.env) or None,
        "Cmd": list(c.cmd) or None,
        "Image": c.image,
        "Volumes": get_ci(raw, "Volumes", None) or None,
        "WorkingDir": c.working_dir,
        "Entrypoint": list(c.entrypoint) or None,
        "OnBuild": None,
        "Labels": dict(c.labels),
    }
    exposed = _exposed_ports(c)
    if exposed:
        config["ExposedPorts"] = exposed
    if c.healthcheck is not None:  # the merged one, as Docker shows it: every member omitempty
        config["Healthcheck"] = {k: v for k, v in c.healthcheck.items() if v}
    for key in ("StopSignal", "StopTimeout"):  # omitempty in Docker's Config
        value = get_ci(raw, key)
        if value is not None and value != "":
            config[key] = value
    return config


def container_inspect(
    c: ContainerRecord, networks: Mapping[str, NetworkRecord], etc_dir: str
) -> dict[str, Any]:
    """GET /containers/{id}/json. etc_dir: the directory of its /etc files (hosts, resolv.conf, hostname)."""
    settings: dict[str, Any] = {
        "Bridge": "",
        "SandboxID": c.id if c.netns else "",
        "SandboxKey": f"/var/run/netns/{c.netns}" if c.netns else "",
        "Ports": inspect_ports(c),
        "HairpinMode": False,
        "LinkLocalIPv6Address": "",
        "LinkLocalIPv6PrefixLen": 0,
        "SecondaryIPAddresses": None,
        "SecondaryIPv6Addresses": None,
        "EndpointID": "",
        "Gateway": "",
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPAddress": "",
        "IPPrefixLen": 0,
        "IPv6Gateway": "",
        "MacAddress": "",
        "Networks": _networks(c, networks),
    }
    # The deprecated top-level fields describe the default bridge endpoint only.
    for net_id, ep in c.endpoints.items():
        net = networks.get(net_id)
        if net is not None and net.name == "bridge":
            settings.update(
                EndpointID=ep.id, Gateway=ep.gateway, IPAddress=ep.ipv4,
                IPPrefixLen=ep.prefixlen, MacAddress=ep.mac,
            )
    return {
        "Id": c.id,
        "Created": c.created,
        "Path": c.args[0] if c.args else "",
        "Args": list(c.args[1:]),
        "State": {
            "Status": docker_state(c),
            "Running": c.state == "running" or public_state(c) == "restarting",
            "Paused": c.state == "running" and c.paused,
            "Restarting": public_state(c) == "restarting",
            "OOMKilled": c.oom_killed,
            "Dead": c.state == "dead",
            "Pid": c.pid,
            "ExitCode": c.exit_code,
            "Error": c.error,
            "StartedAt": c.started_at,
            "FinishedAt": c.finished_at,
            **({"Health": c.health} if c.health is not None else {}),  # omitempty
        },
        "Image": c.image_id,
        "ResolvConfPath": f"{etc_dir}/resolv.conf",
        "HostnamePath": f"{etc_dir}/hostname",
        "HostsPath": f"{etc_dir}/hosts",
        "LogPath": "",
        "Name": "/" + c.name,
        "RestartCount": getattr(c, "restart_count", 0),
        "Driver": "overlay2",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": None,
        "HostConfig": _host_config(c),
        "GraphDriver": {"Data": None, "Name": "overlay2"},
        "Mounts": container_mounts.inspect_json(c),
        "Config": _config(c),
        "NetworkSettings": settings,
    }


# ---- exec ---------------------------------------------------------------------------

def exec_inspect(e: ExecRecord, tty: bool = False) -> dict[str, Any]:
    """GET /exec/{id}/json."""
    return {
        "CanRemove": False,
        "ContainerID": e.container_id,
        "DetachKeys": "",
        "ExitCode": e.exit_code,
        "ID": e.id,
        "OpenStderr": e.attach_stderr,
        "OpenStdin": e.attach_stdin,
        "OpenStdout": e.attach_stdout,
        "ProcessConfig": {
            "arguments": list(e.args[1:]),
            "entrypoint": e.args[0] if e.args else "",
            "privileged": False,
            "tty": tty,
            "user": e.user,
        },
        "Running": e.running,
        "Pid": e.pid,
    }


# ---- images -------------------------------------------------------------------------

def image_summary(image: Any) -> dict[str, Any]:
    """One entry of GET /images/json, from an agent.images Image."""
    config = image.config or {}
    return {
        "Id": image.id,
        "ParentId": "",
        "RepoTags": list(image.repo_tags),
        "RepoDigests": [],
        "Created": unix_seconds(image.created),
        "Size": image.size,
        "SharedSize": -1,
        "Labels": dict(config.get("Labels") or {}),
        "Containers": -1,
    }


def image_inspect(image: Any) -> dict[str, Any]:
    """GET /images/{name}/json."""
    return {
        "Id": image.id,
        "RepoTags": list(image.repo_tags),
        "RepoDigests": [],
        "Parent": "",
        "Comment": "",
        "Created": image.created,
        "DockerVersion": "",
        "Author": "",
        "Config": dict(image.config or {}),
        "Architecture": image.architecture,
        "Os": image.os,
        "Size": image.size,
        "GraphDriver": {"Data": None, "Name": "overlay2"},
        "RootFS": {"Type": "layers", "Layers": list(image.layers)},
        "Metadata": {"LastTagTime": ZERO_TIME},
    }
