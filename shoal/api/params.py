"""Parsing of what Docker clients send: API versions, query values, filters and JSON bodies.

Pure functions; shoal.api.routes_* call them and hand the results (shoal.engine.requests) to
the engine. Shape errors raise InvalidParameter (400) naming the bad value.
"""
from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from agent.executor.confinement import ConfinementError, from_host_config
from agent.network import ports
from shoal.api.create_fields import refuse_unapplied
from shoal.engine import createopts, health, restart
from shoal.engine.errors import InvalidParameter
from shoal.engine.records import IPAMConfig
from shoal.engine.requests import ContainerCreate, EndpointRequest, ExecCreate, NetworkCreate

MAX_API_VERSION = "1.50"
MIN_API_VERSION = "1.24"

_VERSION_PREFIX = re.compile(r"^/v([0-9]+(?:\.[0-9]+)?)(/.*)$")
# moby's validContainerNamePattern: at least two characters, the first alphanumeric.
# fullmatch, not `$`: in Python `$` also matches before a final newline ("abc\n").
_CONTAINER_NAME = re.compile(r"/?[a-zA-Z0-9][a-zA-Z0-9_.-]+")


# ---- transport ----------------------------------------------------------------------

def split_version(path: str) -> tuple[str | None, str]:
    """'/v1.50/networks' -> ('1.50', '/networks'); '/_ping' -> (None, '/_ping')."""
    match = _VERSION_PREFIX.match(path)
    if match is None:
        return None, path
    return match.group(1), match.group(2)


def _version_key(version: str) -> tuple[tuple[int, str], ...]:
    """Orders versions numerically without int(): a part may have thousands of digits (Python
    refuses to convert more than 4,300), and (length, digits) orders them as numbers."""
    key = []
    for part in version.split("."):
        digits = part.lstrip("0")
        key.append((len(digits), digits))
    return tuple(key)


def version_before(version: str, other: str) -> bool:
    """moby's versions.LessThan for the API versions check_version lets through."""
    return _version_key(version) < _version_key(other)


def check_version(version: str | None) -> None:
    """Refuses a requested API version outside [MIN, MAX] with moby's wording."""
    if version is None:
        return
    if _version_key(version) > _version_key(MAX_API_VERSION):
        raise InvalidParameter(
            f"client version {version} is too new. Maximum supported API version is {MAX_API_VERSION}"
        )
    if _version_key(version) < _version_key(MIN_API_VERSION):
        raise InvalidParameter(
            f"client version {version} is too old. Minimum supported API version is "
            f"{MIN_API_VERSION}, please upgrade your client to a newer version"
        )


def bool_value(raw: str | None) -> bool:
    """moby BoolValue: '', 0, no, false, none (any case, trimmed) are false; the rest true."""
    if raw is None:
        return False
    return raw.strip().lower() not in ("", "0", "no", "false", "none")


def int_value(raw: str | None, name: str, default: int | None = None) -> int | None:
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise InvalidParameter(f"invalid value for {name}: {raw!r} is not an integer") from None


def parse_filters(raw: str | None) -> dict[str, list[str]]:
    """The `filters` query value: {"k":{"v":true}} (CLI) or {"k":["v"]} (docker-py)."""
    if raw is None or raw.strip() == "":
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidParameter(f"invalid filters {raw!r}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidParameter(f"invalid filters {raw!r}: expected a JSON object")
    out: dict[str, list[str]] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out[key] = [str(v) for v, on in value.items() if on]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            out[key] = list(value)
        elif isinstance(value, str):
            out[key] = [value]
        elif value is None:
            out[key] = []
        else:
            raise InvalidParameter(f"invalid filters {raw!r}: bad value for filter {key!r}")
    return out


# ---- JSON bodies --------------------------------------------------------------------

def parse_json_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object; an empty body (or `null`) is {}."""
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidParameter(f"invalid JSON: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InvalidParameter(f"invalid JSON: expected an object, got {type(data).__name__}")
    return data


def get_ci(data: Mapping[str, Any] | None, key: str, default: Any = None) -> Any:
    """data[key] matched case-insensitively, as Go's encoding/json does; null is default."""
    if not data:
        return default
    value = data.get(key)
    if value is None:
        lowered = key.lower()
        for k, v in data.items():
            if k.lower() == lowered and v is not None:
                value = v
                break
    return default if value is None else value


def _str(data: Mapping[str, Any] | None, key: str, default: str = "") -> str:
    value = get_ci(data, key, default)
    if not isinstance(value, str):
        raise InvalidParameter(f"invalid JSON: {key} must be a string, got {json.dumps(value)}")
    return value


def _bool(data: Mapping[str, Any] | None, key: str) -> bool:
    value = get_ci(data, key, False)
    if not isinstance(value, bool):
        raise InvalidParameter(f"invalid JSON: {key} must be a boolean, got {json.dumps(value)}")
    return value


def _obj(data: Mapping[str, Any] | None, key: str) -> dict[str, Any]:
    value = get_ci(data, key, {})
    if not isinstance(value, dict):
        raise InvalidParameter(f"invalid JSON: {key} must be an object, got {json.dumps(value)}")
    return value


def _str_map(data: Mapping[str, Any] | None, key: str) -> dict[str, str]:
    value = _obj(data, key)
    for k, v in value.items():
        if not isinstance(v, str):
            raise InvalidParameter(f"invalid JSON: {key}[{k!r}] must be a string, got {json.dumps(v)}")
    return dict(value)


def _str_list(data: Mapping[str, Any] | None, key: str) -> list[str]:
    value = get_ci(data, key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidParameter(f"invalid JSON: {key} must be a list of strings, got {json.dumps(value)}")
    return list(value)


def _str_slice(data: Mapping[str, Any] | None, key: str) -> list[str] | None:
    """A Go strslice.StrSlice: a string or a list of strings; null/absent is None."""
    value = get_ci(data, key)
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidParameter(f"invalid JSON: {key} must be a string or a list of strings, got {json.dumps(value)}")


def _without(data: Mapping[str, Any], *keys: str) -> dict[str, Any]:
    lowered = {k.lower() for k in keys}
    return {k: v for k, v in data.items() if k.lower() not in lowered}


# ---- networks -----------------------------------------------------------------------

def parse_network_create(body: Mapping[str, Any]) -> NetworkCreate:
    ipam = _obj(body, "IPAM")
    configs = get_ci(ipam, "Config", [])
    if not isinstance(configs, list):
        raise InvalidParameter(f"invalid JSON: IPAM.Config must be a list, got {json.dumps(configs)}")
    ipam_config = []
    for entry in configs:
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise InvalidParameter(f"invalid JSON: IPAM.Config entries must be objects, got {json.dumps(entry)}")
        ipam_config.append(
            IPAMConfig(
                subnet=_str(entry, "Subnet"),
                gateway=_str(entry, "Gateway"),
                ip_range=_str(entry, "IPRange"),
            )
        )
    return NetworkCreate(
        name=_str(body, "Name"),
        driver=_str(body, "Driver") or "bridge",
        scope=_str(body, "Scope"),
        ipam_driver=_str(ipam, "Driver") or "default",
        ipam_options=_str_map(ipam, "Options"),
        ipam_config=ipam_config,
        internal=_bool(body, "Internal"),
        attachable=_bool(body, "Attachable"),
        ingress=_bool(body, "Ingress"),
        enable_ipv6=_bool(body, "EnableIPv6"),
        config_only=_bool(body, "ConfigOnly"),
        options=_str_map(body, "Options"),
        labels=_str_map(body, "Labels"),
    )


def parse_endpoint(config: Mapping[str, Any] | None) -> EndpointRequest:
    """EndpointSettings as sent in NetworkingConfig or network connect."""
    ipam = _obj(config, "IPAMConfig")
    return EndpointRequest(
        ipv4=_str(ipam, "IPv4Address"),
        aliases=_str_list(config, "Aliases"),
        links=_str_list(config, "Links"),
        driver_opts=_str_map(config, "DriverOpts"),
        mac=createopts.validate_mac(_str(config, "MacAddress")) if _str(config, "MacAddress") else "",
    )


def parse_network_connect(body: Mapping[str, Any]) -> tuple[str, EndpointRequest]:
    return _str(body, "Container"), parse_endpoint(_obj(body, "EndpointConfig"))


def parse_network_disconnect(body: Mapping[str, Any]) -> tuple[str, bool]:
    return _str(body, "Container"), _bool(body, "Force")


# ---- containers ---------------------------------------------------------------------

def validate_container_name(name: str) -> str:
    """The ?name= of container create, without a leading '/'; '' means generate one."""
    if name == "":
        return ""
    if not _CONTAINER_NAME.fullmatch(name):
        raise InvalidParameter(f"Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed")
    return name.lstrip("/")


def _json_type(value: Any) -> str:
    """The JSON type name Go's decoder uses in its errors."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), "value")


def _check_port_bindings(value: dict[str, Any]) -> None:
    """PortBindings' shape as Go's decoder checks it into map[Port][]PortBinding{HostIp, HostPort
    string}; Docker's (Go's) wording, checked against dockerd 20.10."""
    for entries in value.values():
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise InvalidParameter(
                f"json: cannot unmarshal {_json_type(entries)} into Go struct field "
                "HostConfig.HostConfig.PortBindings of type []nat.PortBinding"
            )
        for entry in entries:
            if entry is None:
                continue
            if not isinstance(entry, dict):
                raise InvalidParameter(
                    f"json: cannot unmarshal {_json_type(entry)} into Go struct field "
                    "HostConfig.HostConfig.PortBindings of type nat.PortBinding"
                )
            for field in ("HostIp", "HostPort"):
                item = get_ci(entry, field)
                if item is not None and not isinstance(item, str):
                    raise InvalidParameter(
                        f"json: cannot unmarshal {_json_type(item)} into Go struct field "
                        f"PortBinding.HostConfig.PortBindings.{field} of type string"
                    )


def check_working_dir(path: str) -> None:
    """moby's translateWorkingDir wording; runc would refuse it later with less to go on."""
    if path and not path.startswith("/"):
        raise InvalidParameter(f"the working directory '{path}' is invalid, it needs to be an absolute path")


def parse_container_create(body: Mapping[str, Any]) -> ContainerCreate:
    image = _str(body, "Image")
    if image == "":
        raise InvalidParameter("No image was specified: Config.Image is empty")
    refuse_unapplied(body)
    health.validate(get_ci(body, "Healthcheck"))  # moby's messages; nothing is created
    host_config = _obj(body, "HostConfig")
    restart.parse_policy(host_config)  # moby's messages for a bad policy, or one with AutoRemove
    createopts.parse_run_options(body, host_config)  # --stop-signal, --dns, --sysctl...: checked now
    _check_port_bindings(_obj(host_config, "PortBindings"))
    try:
        from_host_config(host_config)  # capabilities and --security-opt, checked now, applied at start
    except ConfinementError as exc:
        raise InvalidParameter(exc.message) from None
    networking = _obj(body, "NetworkingConfig")
    endpoints_config = _obj(networking, "EndpointsConfig")
    endpoints = {}
    for net, config in endpoints_config.items():
        if config is not None and not isinstance(config, dict):
            raise InvalidParameter(f"invalid JSON: EndpointsConfig[{net!r}] must be an object")
        endpoints[net] = parse_endpoint(config)
    legacy_mac = _str(body, "MacAddress")  # Config.MacAddress (API < 1.44): the primary network's
    if legacy_mac:
        primary = _str(host_config, "NetworkMode") or "default"
        endpoints.setdefault(primary, EndpointRequest())
        endpoints[primary].mac = endpoints[primary].mac or createopts.validate_mac(legacy_mac)
    cmd = _str_slice(body, "Cmd")
    entrypoint = _str_slice(body, "Entrypoint")
    if entrypoint == [""]:
        # `--entrypoint ""` resets the image's entrypoint (moby treats [""] as empty).
        entrypoint = []
    try:
        port_bindings = ports.from_docker(
            _obj(body, "ExposedPorts"), _obj(host_config, "PortBindings"), _bool(host_config, "PublishAllPorts")
        )
    except ports.PortSpecError as exc:
        raise InvalidParameter(exc.message) from None
    env = _str_list(body, "Env")
    for item in env:
        if item.split("=", 1)[0] == "":
            raise InvalidParameter(f"invalid environment variable: {item}")
    check_working_dir(_str(body, "WorkingDir"))
    return ContainerCreate(
        image=image,
        cmd=cmd or None,  # an empty Cmd takes the image's, as moby merges it
        entrypoint=entrypoint,
        env=env,
        working_dir=_str(body, "WorkingDir"),
        user=_str(body, "User"),
        hostname=_str(body, "Hostname"),
        domainname=_str(body, "Domainname"),
        labels=_str_map(body, "Labels"),
        tty=_bool(body, "Tty"),
        network_mode=_str(host_config, "NetworkMode"),
        auto_remove=_bool(host_config, "AutoRemove"),
        links=_str_list(host_config, "Links"),
        port_bindings=port_bindings,
        endpoints=endpoints,
        raw_config=_without(body, "HostConfig", "NetworkingConfig"),
        raw_host_config=dict(host_config),
    )


# ---- exec ---------------------------------------------------------------------------

def parse_exec_create(body: Mapping[str, Any]) -> ExecCreate:
    cmd = _str_slice(body, "Cmd") or []
    if not cmd:
        raise InvalidParameter("No exec command specified")
    check_working_dir(_str(body, "WorkingDir"))
    if _bool(body, "Privileged"):
        # An exec gets the container's capabilities and seccomp profile, never more.
        raise InvalidParameter("shoal does not support a privileged exec (Privileged) yet")
    return ExecCreate(
        cmd=cmd,
        env=_str_list(body, "Env"),
        working_dir=_str(body, "WorkingDir"),
        user=_str(body, "User"),
        attach_stdout=_bool(body, "AttachStdout"),
        attach_stderr=_bool(body, "AttachStderr"),
        tty=_bool(body, "Tty"),
        attach_stdin=_bool(body, "AttachStdin"),
        detach_keys=_str(body, "DetachKeys"),
        console_size=_console_size(body),
    )


def _console_size(body: Mapping[str, Any]) -> tuple[int, int] | None:
    size = get_ci(body, "ConsoleSize")
    if isinstance(size, list) and len(size) == 2 and all(isinstance(x, int) and x > 0 for x in size):
        return size[0], size[1]
    return None


def parse_exec_start(body: Mapping[str, Any]) -> tuple[bool, bool]:
    """Returns (detach, tty)."""
    return _bool(body, "Detach"), _bool(body, "Tty")
