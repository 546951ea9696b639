"""Container create fields shoal does not apply yet: refused with a 400 naming them, never ignored.
Pure; shoal.api.params calls refuse_unapplied() on every create body before parsing it.

A field passes when shoal applies it, when it only shapes the client's own streams, or when it
holds its zero value or the default the docker CLI and docker-py always send (measured: the
body of a plain `docker run busybox true` from docker CLI 20.10 and 28). Anything else, known
to Docker or not, is refused: accepting an option and not applying it is how `--pids-limit 10`
came to run 34 processes.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from agent.executor.cgroups import DOCKER_FIELDS as RESOURCE_FIELDS  # cgroup limits (Memory, NanoCpus, ...)
from shoal.engine.errors import InvalidParameter
from shoal.engine.stdio import log_options

# Config (the body's top level) that shoal applies, or that concern the client's attach only,
# or that Docker itself ignores on Linux containers (build-time and Windows fields).
CONFIG_APPLIED = frozenset(
    k.lower()
    for k in (
        "Hostname", "Domainname", "User", "Env", "Cmd", "Image", "WorkingDir", "Entrypoint", "Labels",
        "ExposedPorts", "Tty", "AttachStdin", "AttachStdout", "AttachStderr", "OpenStdin", "StdinOnce",
        "OnBuild", "Shell", "ArgsEscaped", "HostConfig", "NetworkingConfig",
        "Volumes",  # anonymous volumes (-v /ctr): shoal.engine.container_mounts
        "StopSignal", "StopTimeout", "MacAddress",  # shoal.engine.createopts
        "Healthcheck",  # shoal.engine.health (validated by shoal.api.params)
    )
)  # fmt: skip

HOST_CONFIG_APPLIED = frozenset(
    k.lower()
    for k in (
        "NetworkMode", "PortBindings", "PublishAllPorts", "AutoRemove", "Links",
        "CapAdd", "CapDrop", "SecurityOpt", "ReadonlyRootfs",
        "ContainerIDFile",  # the CLI writes that file itself
        "Binds", "Mounts", "Tmpfs",  # shoal.engine.container_mounts
        "ConsoleSize",  # the TTY's first size, set by the shim
        "LogConfig",  # json-file with max-size/max-file: checked by shoal.engine.stdio.log_options
        "RestartPolicy",  # shoal.engine.restart
        # shoal.engine.createopts
        "ExtraHosts", "Dns", "DnsSearch", "DnsOptions", "Sysctls", "Ulimits", "Init", "Privileged", "Devices",
        "GroupAdd", "OomScoreAdj",
    )
) | frozenset(k.lower() for k in RESOURCE_FIELDS)  # fmt: skip

# Values that mean "what shoal does anyway" besides the zero value of the field's type.
HOST_CONFIG_DEFAULTS: dict[str, tuple[Any, ...]] = {
    "restartpolicy": ({"Name": "no"}, {"Name": "no", "MaximumRetryCount": 0}),
    "cgroupnsmode": ("private",),
    "ipcmode": ("private", "shareable"),
    "shmsize": (67108864,),  # /dev/shm is 64 MiB, Docker's default
    "runtime": ("runc",),
    "isolation": ("default",),
    "memoryswappiness": (-1,),  # the CLI's "unset"
    "usernsmode": ("host",),  # no user namespace: the same as the host's
}

# EndpointsConfig entries: applied, or read-only fields of inspect output Docker ignores on create.
ENDPOINT_APPLIED = frozenset(
    k.lower()
    for k in (
        "Aliases", "Links", "MacAddress",
        "NetworkID", "EndpointID", "Gateway", "IPAddress", "IPPrefixLen", "IPv6Gateway",
        "GlobalIPv6Address", "GlobalIPv6PrefixLen", "DNSNames",
    )
)  # fmt: skip
IPAM_APPLIED = frozenset(("ipv4address",))


# Fields whose JSON object is a Go struct (zero when every member is zero); other objects are
# maps (Tmpfs, Volumes, Sysctls), non-zero as soon as they have a key.
_STRUCTS = frozenset(("logconfig", "restartpolicy", "healthcheck"))


def is_zero(value: Any, struct: bool = False) -> bool:
    """Go's zero value as JSON shows it: null, false, 0, "", an empty list or map, a struct
    of zero members."""
    if value is None or value is False or value == "":
        return True
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value == 0
    if isinstance(value, (list, dict)) and not value:
        return True
    if struct and isinstance(value, dict):
        return all(is_zero(v) for v in value.values())
    return False


def _is_default(key: str, value: Any) -> bool:
    if is_zero(value, key.lower() in _STRUCTS):
        return True
    for default in HOST_CONFIG_DEFAULTS.get(key.lower(), ()):
        if isinstance(default, dict) and isinstance(value, dict):
            # equal on the default's keys, zero elsewhere (e.g. LogConfig.Config {})
            lowered = {k.lower(): v for k, v in value.items()}
            if all(lowered.get(k.lower()) == v for k, v in default.items()) and all(
                is_zero(v) for k, v in value.items() if k.lower() not in {d.lower() for d in default}
            ):
                return True
        elif value == default and type(value) is type(default):
            return True
    return False


def _refuse(field: str, value: Any) -> None:
    raise InvalidParameter(f"shoal does not support {field} yet (got {json.dumps(value)})")


def refuse_unapplied(body: Mapping[str, Any]) -> None:
    """Raises InvalidParameter naming the first field shoal would otherwise accept and ignore."""
    for key, value in body.items():
        if key.lower() not in CONFIG_APPLIED and not is_zero(value, key.lower() in _STRUCTS):
            _refuse(f"Config.{key}", value)
    host_config = _object(body, "hostconfig")
    for key, value in host_config.items():
        if key.lower() not in HOST_CONFIG_APPLIED and not _is_default(key, value):
            _refuse(f"HostConfig.{key}", value)
    log_options(host_config)
    networking = _object(body, "networkingconfig")
    endpoints = _object(networking, "endpointsconfig")
    for net, endpoint in endpoints.items():
        if not isinstance(endpoint, dict):
            continue  # shape errors are params' to report
        for key, value in endpoint.items():
            lowered = key.lower()
            if lowered == "ipamconfig" and isinstance(value, dict):
                for ipam_key, ipam_value in value.items():
                    if ipam_key.lower() not in IPAM_APPLIED and not is_zero(ipam_value):
                        _refuse(f"NetworkingConfig.EndpointsConfig[{net}].IPAMConfig.{ipam_key}", ipam_value)
            elif lowered not in ENDPOINT_APPLIED and lowered != "ipamconfig" and not is_zero(value):
                _refuse(f"NetworkingConfig.EndpointsConfig[{net}].{key}", value)


def _object(data: Mapping[str, Any], lowered_key: str) -> Mapping[str, Any]:
    value = _lookup(data, lowered_key)
    return value if isinstance(value, dict) else {}


def _lookup(data: Mapping[str, Any], lowered_key: str) -> Any:
    return next((v for k, v in data.items() if k.lower() == lowered_key), None)
