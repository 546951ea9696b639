"""Create options applied when a container starts: --stop-signal/--stop-timeout, --add-host,
--dns/--dns-search/--dns-option, --sysctl, --ulimit, --init, --privileged, --device, --group-add, --oom-score-adj.

Pure parsing and validation with Docker's messages (shoal.api.params calls parse_run_options at
create); the engine turns the result into spec extras (agent.executor.spec.SpecExtras), /etc
files (agent.network.etcfiles) and the embedded DNS's upstreams for the container.
"""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.executor.spec import OOM_SCORE_ADJ_MAX, OOM_SCORE_ADJ_MIN, Mount, SpecExtras, oom_score_adj_message
from agent.network.etcfiles import EtcCustom
from common.errdefs import InvalidParameter
from shoal.engine.helpers import parse_signal

HOST_GATEWAY = "host-gateway"
INIT_PATH_IN_CONTAINER = "/sbin/docker-init"
INIT_CANDIDATES = ("/opt/shoal-docker-ref/bin/docker-init", "/usr/bin/tini-static", "/usr/bin/docker-init")
# go-units' ulimit names
ULIMIT_NAMES = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
                "rss", "rtprio", "rttime", "sigpending", "stack")
_IPC_SYSCTLS = frozenset(("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
                          "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced"))
_DOMAIN = re.compile(r"^(:?(?:[a-zA-Z0-9]|(?:[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9]))(:?\.(?:[a-zA-Z0-9]|"
                     r"(?:[a-zA-Z0-9][a-zA-Z0-9\-]*[a-zA-Z0-9])))*)\.?\s*$")


@dataclass(slots=True)
class Device:
    path_on_host: str
    path_in_container: str
    permissions: str = "rwm"


@dataclass(slots=True)
class RunOptions:
    stop_signal: str = ""
    stop_timeout: int | None = None
    extra_hosts: list[tuple[str, str]] = field(default_factory=list)  # (names, ip or host-gateway)
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    sysctls: dict[str, str] = field(default_factory=dict)
    ulimits: list[tuple[str, int, int]] = field(default_factory=list)  # (name, soft, hard)
    init: bool = False
    privileged: bool = False
    devices: list[Device] = field(default_factory=list)
    group_add: list[str] = field(default_factory=list)  # names resolved at start (shoal.engine.helpers.process_user)
    oom_score_adj: int = 0

    @property
    def custom_dns(self) -> bool:
        return bool(self.dns or self.dns_search or self.dns_options)


def _get(data: Mapping[str, Any] | None, key: str) -> Any:
    if not data:
        return None
    lowered = key.lower()
    return next((v for k, v in data.items() if k.lower() == lowered), None)


def _lowered(data: Mapping[str, Any] | None) -> dict[str, Any]:
    """data by lower-cased key, the first of keys differing only in case winning (as _get): a create body's
    dozens of keys are lowered once, not once for every option looked up in it."""
    index: dict[str, Any] = {}
    for k, v in (data or {}).items():
        index.setdefault(k.lower(), v)
    return index


def _strings(data: Mapping[str, Any] | None, key: str) -> list[str]:
    return _string_list(_get(data, key), key)


def _string_list(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidParameter(f"invalid JSON: {key} must be a list of strings")
    return list(value)


def parse_run_options(config: Mapping[str, Any], host_config: Mapping[str, Any]) -> RunOptions:
    """Every option of this module from a create body, validated; the first bad value is
    refused naming it."""
    options = RunOptions()
    config_ci, host_ci = _lowered(config), _lowered(host_config)  # by lower-cased key
    stop_signal = config_ci.get("stopsignal") or ""
    if not isinstance(stop_signal, str):
        raise InvalidParameter("invalid JSON: StopSignal must be a string")
    if stop_signal:
        parse_signal(stop_signal)  # "Invalid signal: X"
    options.stop_signal = stop_signal
    timeout = config_ci.get("stoptimeout")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool)):
        raise InvalidParameter("invalid JSON: StopTimeout must be an integer")
    options.stop_timeout = timeout
    options.extra_hosts = [parse_extra_host(h) for h in _string_list(host_ci.get("extrahosts"), "ExtraHosts")]
    options.dns = [validate_ip(d, "dns") for d in _string_list(host_ci.get("dns"), "Dns")]
    options.dns_search = [validate_dns_search(s) for s in _string_list(host_ci.get("dnssearch"), "DnsSearch")]
    options.dns_options = _string_list(host_ci.get("dnsoptions"), "DnsOptions")
    network_mode = host_ci.get("networkmode") or ""
    options.sysctls = validate_sysctls(host_ci.get("sysctls") or {}, host_network=network_mode == "host")
    options.ulimits = parse_ulimits(host_ci.get("ulimits") or [])
    init = host_ci.get("init")
    if init is not None and not isinstance(init, bool):
        raise InvalidParameter("invalid JSON: Init must be a boolean")
    options.init = bool(init)
    privileged = host_ci.get("privileged") or False
    if not isinstance(privileged, bool):
        raise InvalidParameter("invalid JSON: Privileged must be a boolean")
    options.privileged = privileged
    options.devices = parse_devices(host_ci.get("devices") or [])
    options.group_add = group_add_of(host_config)
    options.oom_score_adj = validate_oom_score_adj(host_ci.get("oomscoreadj"))
    return options


def group_add_of(host_config: Mapping[str, Any] | None) -> list[str]:
    """HostConfig.GroupAdd alone (the engine resolves its names against the image at create)."""
    return _string_list(_get(host_config, "GroupAdd"), "GroupAdd")


def validate_oom_score_adj(value: Any) -> int:
    """HostConfig.OomScoreAdj (null is 0), within the kernel's range as moby checks it at create."""
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidParameter("invalid JSON: OomScoreAdj must be an integer")
    if not OOM_SCORE_ADJ_MIN <= value <= OOM_SCORE_ADJ_MAX:
        raise InvalidParameter(oom_score_adj_message(value))
    return value


# ---- --mac-address -----------------------------------------------------------------

_MAC = re.compile(r"[0-9a-fA-F]{2}([:-])[0-9a-fA-F]{2}(\1[0-9a-fA-F]{2}){4}")


def validate_mac(value: str) -> str:
    """A unicast 48-bit MAC ("02:42:ac:11:00:99"), lower case with colons."""
    if not _MAC.fullmatch(value):
        raise InvalidParameter(f"address {value}: invalid MAC address")  # Go's net.ParseMAC, as dockerd says it
    mac = value.lower().replace("-", ":")
    if int(mac[:2], 16) & 1:
        raise InvalidParameter(f"address {value}: a multicast MAC address cannot be an interface's")
    return mac


# ---- --add-host, --dns ---------------------------------------------------------------

def validate_ip(value: str, flag: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise InvalidParameter(f"IP address is not correctly formatted: {value}") from None  # the CLI's words


def parse_extra_host(value: str) -> tuple[str, str]:
    """moby's ValidateExtraHost: "name:ip" or "name=ip", ip may be host-gateway."""
    name, sep, ip = value.partition("=")
    if not sep:
        name, sep, ip = value.partition(":")
    if not sep or not name:
        raise InvalidParameter(f'bad format for add-host: "{value}"')
    if ip != HOST_GATEWAY:
        address = ip[1:-1] if ip.startswith("[") and ip.endswith("]") else ip
        try:
            ip = str(ipaddress.ip_address(address))
        except ValueError:
            raise InvalidParameter(f'invalid IP address in add-host: "{ip}"') from None
    return name, ip


def validate_dns_search(value: str) -> str:
    """The CLI's ValidateDNSSearch: "." (no search) or a domain name."""
    if value == ".":
        return value
    if len(value) > 255 or not _DOMAIN.match(value):
        raise InvalidParameter(f"{value} is not a valid domain")
    return value


def hosts_lines(options: RunOptions, gateway: str) -> list[tuple[str, list[str]]]:
    """--add-host entries as /etc/hosts lines, in order; host-gateway is the default bridge's
    gateway (Docker's default host-gateway-ip)."""
    return [(gateway if ip == HOST_GATEWAY else ip, [name]) for name, ip in options.extra_hosts]


# ---- --sysctl ----------------------------------------------------------------------

def validate_sysctls(sysctls: Any, host_network: bool) -> dict[str, str]:
    """runc's rules (libcontainer/configs/validate): IPC sysctls and fs.mqueue.*, net.* in the
    container's own network namespace, kernel.domainname; everything else is the host's."""
    if not isinstance(sysctls, dict) or not all(isinstance(v, str) for v in sysctls.values()):
        raise InvalidParameter("invalid JSON: Sysctls must be an object of strings")
    for key in sysctls:
        if key in _IPC_SYSCTLS or key.startswith("fs.mqueue."):
            continue
        if key.startswith("net."):
            if host_network:
                raise InvalidParameter(f'sysctl "{key}" not allowed in host network namespace')
            continue
        if key == "kernel.domainname":
            continue
        if key == "kernel.hostname":
            raise InvalidParameter(f'sysctl "{key}" is not allowed as it conflicts with the OCI "hostname" field')
        raise InvalidParameter(f'sysctl "{key}" is not in a separate kernel namespace')
    return dict(sysctls)


# ---- --ulimit ----------------------------------------------------------------------

def parse_ulimits(ulimits: Any) -> list[tuple[str, int, int]]:
    if not isinstance(ulimits, list):
        raise InvalidParameter("invalid JSON: Ulimits must be a list")
    out = []
    for entry in ulimits:
        if not isinstance(entry, dict):
            raise InvalidParameter("invalid JSON: an Ulimits entry must be an object")
        name, soft, hard = _get(entry, "Name"), _get(entry, "Soft"), _get(entry, "Hard")
        if name not in ULIMIT_NAMES:
            raise InvalidParameter(f"invalid ulimit type: {name}")
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (soft, hard)):
            raise InvalidParameter(f"invalid ulimit {name}: Soft and Hard must be integers")
        if soft > hard:
            raise InvalidParameter(f"ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}")
        if soft < -1 or hard < -1:
            raise InvalidParameter(f"invalid ulimit {name}: limits must be -1 (unlimited) or more")
        out.append((name, soft, hard))
    return out


def rlimits(ulimits: list[tuple[str, int, int]]) -> list[tuple[str, int, int]]:
    """OCI rlimits: RLIMIT_NAME with -1 as unlimited (2^64-1)."""
    unlimited = (1 << 64) - 1
    return [(f"RLIMIT_{name.upper()}", unlimited if soft == -1 else soft, unlimited if hard == -1 else hard)
            for name, soft, hard in ulimits]


# ---- --device, --privileged --------------------------------------------------------

def parse_devices(devices: Any) -> list[Device]:
    if not isinstance(devices, list):
        raise InvalidParameter("invalid JSON: Devices must be a list")
    out = []
    for entry in devices:
        if not isinstance(entry, dict):
            raise InvalidParameter("invalid JSON: a Devices entry must be an object")
        host = _get(entry, "PathOnHost") or ""
        inside = _get(entry, "PathInContainer") or host
        permissions = _get(entry, "CgroupPermissions") or "rwm"
        if not isinstance(host, str) or not host.startswith("/"):
            raise InvalidParameter(f"invalid device path on host: {host!r}")
        if not isinstance(inside, str) or not inside.startswith("/"):
            raise InvalidParameter(f"{inside} is not an absolute path")
        if not isinstance(permissions, str) or not permissions or set(permissions) - set("rwm"):
            raise InvalidParameter(f"invalid device cgroup permissions: {permissions!r}")
        out.append(Device(host, inside, permissions))
    return out


def device_nodes(device: Device) -> list[dict[str, Any]]:
    """OCI linux.devices entries for one --device: the node itself, or every node under a
    directory (as moby). Raises InvalidParameter with moby's wording when the host has none."""
    try:
        st = os.stat(device.path_on_host)
    except OSError as exc:
        raise InvalidParameter(
            f'error gathering device information while adding custom device "{device.path_on_host}": '
            f"{(exc.strerror or str(exc)).lower()}") from None
    if stat.S_ISDIR(st.st_mode):
        nodes = []
        for directory, _, files in os.walk(device.path_on_host):
            for name in sorted(files):
                path = os.path.join(directory, name)
                inside = device.path_in_container + path[len(device.path_on_host):]
                node = _node(path, inside)
                if node is not None:
                    nodes.append(node)
        return nodes
    node = _node(device.path_on_host, device.path_in_container)
    if node is None:
        raise InvalidParameter(
            f'error gathering device information while adding custom device "{device.path_on_host}": '
            "not a device node")
    return [node]


def _node(path: str, inside: str) -> dict[str, Any] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        return None
    return {"path": inside, "type": kind, "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
            "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid}


_SKIPPED_DEV_DIRS = ("pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev")


def host_devices(root: str = "/dev") -> list[dict[str, Any]]:
    """Every device node of the host for --privileged (moby's HostDevices skips these dirs
    and /dev/console)."""
    nodes = []
    for directory, dirs, files in os.walk(root):
        if directory == root:
            dirs[:] = [d for d in dirs if d not in _SKIPPED_DEV_DIRS]
        for name in sorted(files):
            path = os.path.join(directory, name)
            if path == os.path.join(root, "console"):
                continue
            node = _node(path, path)
            if node is not None:
                nodes.append(node)
    return nodes


# ---- --init ------------------------------------------------------------------------

def init_binary() -> Path:
    """docker-init (tini, static) for --init; refuses clearly where none is installed."""
    for candidate in (*INIT_CANDIDATES, shutil.which("docker-init") or "", shutil.which("tini-static") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return Path(candidate).resolve()
    raise InvalidParameter("no docker-init binary found for --init (looked for " + ", ".join(INIT_CANDIDATES) + ")")


# ---- what the engine calls at start and stop (shoal.engine.engine) -------------------

def of_container(container: Any) -> RunOptions:
    """A record's options (checked at create; InvalidParameter for one an older shoal took)."""
    return parse_run_options(container.create_config, container.host_config)


def stop_defaults(container: Any, default_timeout: int) -> tuple[str, int]:
    """--stop-signal and --stop-timeout, or Docker's SIGTERM and the default timeout."""
    try:
        options = of_container(container)
    except InvalidParameter:
        return "SIGTERM", default_timeout
    timeout = options.stop_timeout if options.stop_timeout is not None else default_timeout
    return options.stop_signal or "SIGTERM", timeout


def spec_extras(options: RunOptions) -> tuple[SpecExtras, list[Mount]]:
    """Devices and the init binary, read from the host (/dev is walked: call off the loop)."""
    devices = host_devices() if options.privileged else []
    taken = {d["path"] for d in devices}
    rules = []
    for device in options.devices:
        for node in device_nodes(device):
            # moby: each --device node is allowed in the device cgroup with exactly its permissions
            rules.append({"allow": True, "type": node["type"], "major": node["major"], "minor": node["minor"],
                          "access": device.permissions})
            if node["path"] not in taken:
                devices.append(node)
                taken.add(node["path"])
    mounts = [Mount(str(init_binary()), INIT_PATH_IN_CONTAINER, readonly=True)] if options.init else []
    return SpecExtras(sysctls=options.sysctls, devices=devices, device_rules=rules,
                      privileged=options.privileged), mounts


def etc_custom(container: Any, gateway: str) -> EtcCustom | None:
    """--add-host lines and --dns* for the container's /etc files (agent.network.sandbox)."""
    try:
        options = of_container(container)
    except InvalidParameter:
        return None
    if not (options.extra_hosts or options.custom_dns):
        return None
    return EtcCustom(hosts=hosts_lines(options, gateway), dns=options.dns,
                     search=options.dns_search, options=options.dns_options)
