"""`shoal run` flags of the create options: --restart, --init, --stop-signal, --stop-timeout,
--add-host, --dns, --dns-search, --dns-option, --sysctl, --ulimit, --privileged, --device,
--mac-address, -v/--volume, --mount, --tmpfs, --read-only, --health-* and --no-healthcheck, --group-add,
--oom-score-adj; parsed as the docker CLI parses them into the create body.

shoal.cli.container decorates `run` with `options` and passes `adjust(values)` to
shoal.cli.runner.run_container, which applies it to the body it built.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import click

from shoal.cli.format import UsageError
from shoal.cli.mountflag import parse_mount_flag, parse_tmpfs_flag
from shoal.cli.service_opts import duration_ns

_FLAGS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (("--restart",), {"default": "", "help": "Restart policy to apply when a container exits"}),
    (("--init",), {"is_flag": True, "default": False, "help": "Run an init inside the container"}),
    (("--stop-signal",), {"default": "", "help": "Signal to stop the container"}),
    (("--stop-timeout",), {"type": int, "default": None, "help": "Timeout (in seconds) to stop a container"}),
    (("--add-host",), {"multiple": True, "help": "Add a custom host-to-IP mapping (host:ip)"}),
    (("--dns",), {"multiple": True, "help": "Set custom DNS servers"}),
    (("--dns-search",), {"multiple": True, "help": "Set custom DNS search domains"}),
    (("--dns-option",), {"multiple": True, "help": "Set DNS options"}),
    (("--sysctl",), {"multiple": True, "help": "Sysctl options"}),
    (("--ulimit",), {"multiple": True, "help": "Ulimit options"}),
    (("--privileged",), {"is_flag": True, "default": False, "help": "Give extended privileges to this container"}),
    (("--device",), {"multiple": True, "help": "Add a host device to the container"}),
    (("--mac-address",), {"default": "", "help": "Container MAC address (e.g., 92:d0:c6:0a:29:33)"}),
    (("-v", "--volume"), {"multiple": True, "help": "Bind mount a volume"}),
    (("--mount",), {"multiple": True, "help": "Attach a filesystem mount to the container"}),
    (("--tmpfs",), {"multiple": True, "help": "Mount a tmpfs directory"}),
    (("--read-only",), {"is_flag": True, "default": False, "help": "Mount the container's root filesystem as read only"}),
    (("--health-cmd",), {"default": "", "help": "Command to run to check health"}),
    (("--health-interval",), {"default": "0s", "help": "Time between running the check (ms|s|m|h) (default 0s)"}),
    (("--health-timeout",), {"default": "0s", "help": "Maximum time to allow one check to run (ms|s|m|h) (default 0s)"}),
    (("--health-start-period",), {"default": "0s", "help": "Start period for the container to initialize before "
                                  "starting health-retries countdown (ms|s|m|h) (default 0s)"}),
    (("--health-start-interval",), {"default": "0s", "help": "Time between running the check during the start "
                                    "period (ms|s|m|h) (default 0s)"}),
    (("--health-retries",), {"type": int, "default": 0, "help": "Consecutive failures needed to report unhealthy"}),
    (("--no-healthcheck",), {"is_flag": True, "default": False, "help": "Disable any container-specified HEALTHCHECK"}),
    (("--group-add",), {"multiple": True, "help": "Add additional groups to join"}),
    (("--oom-score-adj",), {"type": int, "default": 0, "help": "Tune host's OOM preferences (-1000 to 1000)"}),
]
NAMES = ("restart", "init", "stop_signal", "stop_timeout", "add_host", "dns", "dns_search", "dns_option",
         "sysctl", "ulimit", "privileged", "device", "mac_address", "volume", "mount", "tmpfs", "read_only",
         "health_cmd", "health_interval", "health_timeout", "health_start_period", "health_start_interval",
         "health_retries", "no_healthcheck", "group_add", "oom_score_adj")
_HEALTH_DURATIONS = (("health_interval", "Interval"), ("health_timeout", "Timeout"),
                     ("health_start_period", "StartPeriod"), ("health_start_interval", "StartInterval"))


def options(command: Callable[..., Any]) -> Callable[..., Any]:
    for names, kwargs in reversed(_FLAGS):
        command = click.option(*names, **kwargs)(command)
    return command


def restart_policy(value: str) -> dict[str, Any]:
    """The docker CLI's ParseRestartPolicy."""
    name, sep, count = value.partition(":")
    if sep and not name:
        raise UsageError("invalid restart policy format: no policy provided before colon")
    policy: dict[str, Any] = {"Name": name}
    if sep:
        try:
            policy["MaximumRetryCount"] = int(count)
        except ValueError:
            raise UsageError("invalid restart policy format: maximum retry count must be an integer") from None
    return policy


def ulimit(value: str) -> dict[str, Any]:
    name, sep, limits = value.partition("=")
    if not sep:
        raise UsageError(f'invalid argument "{value}" for "--ulimit" flag: invalid ulimit argument: {value}')
    soft, _, hard = limits.partition(":")
    try:
        return {"Name": name, "Soft": int(soft), "Hard": int(hard or soft)}
    except ValueError:
        raise UsageError(f'invalid argument "{value}" for "--ulimit" flag: invalid ulimit value: {limits}') from None


def device(value: str) -> dict[str, str]:
    parts = value.split(":")
    host = parts[0]
    inside = parts[1] if len(parts) > 1 and parts[1] else host
    permissions = parts[2] if len(parts) > 2 else "rwm"
    return {"PathOnHost": host, "PathInContainer": inside, "CgroupPermissions": permissions}


def _signed_duration_ns(text: str, flag: str) -> int:
    """Go's ParseDuration takes a sign: "-1s" parses, and the CLI then says it cannot be negative."""
    if text[:1] in ("-", "+"):
        try:
            value = duration_ns(text[1:], flag)
        except UsageError:
            value = duration_ns(text, flag)  # raises with the whole text in the message
        return -value if text[0] == "-" else value
    return duration_ns(text, flag)


def healthcheck(values: Mapping[str, Any]) -> dict[str, Any] | None:
    """Config.Healthcheck from the --health-* flags, as the docker CLI builds it (opts.parse):
    None when none is given."""
    durations = {key: _signed_duration_ns(str(values.get(flag) or "0s"), "--" + flag.replace("_", "-"))
                 for flag, key in _HEALTH_DURATIONS}
    retries = int(values.get("health_retries") or 0)
    given = bool(values.get("health_cmd")) or retries != 0 or any(durations.values())
    if values.get("no_healthcheck"):
        if given:
            raise UsageError("--no-healthcheck conflicts with --health-* options")
        return {"Test": ["NONE"]}
    if not given:
        return None
    # the docker CLI's order of checks
    for flag, value in (("interval", durations["Interval"]), ("timeout", durations["Timeout"]), ("retries", retries),
                        ("start-period", durations["StartPeriod"]), ("start-interval", durations["StartInterval"])):
        if value < 0:
            raise UsageError(f"--health-{flag} cannot be negative")
    test = ["CMD-SHELL", values["health_cmd"]] if values.get("health_cmd") else None
    return {"Test": test, **durations, "Retries": retries}


def adjust(values: Mapping[str, Any]) -> Callable[[dict[str, Any]], None]:
    """The change these flags make to a create body (the CLI's own checks first)."""
    def apply(body: dict[str, Any]) -> None:
        host = body.setdefault("HostConfig", {})
        check = healthcheck(values)
        if check is not None:
            body["Healthcheck"] = check
        if values.get("restart"):
            if host.get("AutoRemove"):
                raise UsageError("conflicting options: cannot specify both --restart and --rm")
            host["RestartPolicy"] = restart_policy(values["restart"])
        if values.get("init"):
            host["Init"] = True
        if values.get("stop_signal"):
            body["StopSignal"] = values["stop_signal"]
        if values.get("stop_timeout") is not None:
            body["StopTimeout"] = values["stop_timeout"]
        for flag, key in (("add_host", "ExtraHosts"), ("dns", "Dns"), ("dns_search", "DnsSearch"),
                          ("dns_option", "DnsOptions")):
            if values.get(flag):
                host[key] = list(values[flag])
        if values.get("sysctl"):
            sysctls = {}
            for item in values["sysctl"]:
                key, sep, val = item.partition("=")
                if not sep:
                    raise UsageError(f'invalid argument "{item}" for "--sysctl" flag: sysctl \'{item}\' is not allowed')
                sysctls[key] = val
            host["Sysctls"] = sysctls
        if values.get("ulimit"):
            host["Ulimits"] = [ulimit(u) for u in values["ulimit"]]
        if values.get("privileged"):
            host["Privileged"] = True
        if values.get("device"):
            host["Devices"] = [device(d) for d in values["device"]]
        if values.get("volume"):
            # -v /ctr is an anonymous volume (Config.Volumes), anything with a colon a bind or named volume (Binds)
            anonymous = [v for v in values["volume"] if ":" not in v]
            binds = [v for v in values["volume"] if ":" in v]
            if anonymous:
                body["Volumes"] = {v: {} for v in anonymous}
            if binds:
                host["Binds"] = binds
        if values.get("mount"):
            host["Mounts"] = [parse_mount_flag(m) for m in values["mount"]]
        if values.get("tmpfs"):
            host["Tmpfs"] = dict(parse_tmpfs_flag(t) for t in values["tmpfs"])
        if values.get("read_only"):
            host["ReadonlyRootfs"] = True
        if values.get("group_add"):
            host["GroupAdd"] = list(values["group_add"])
        if values.get("oom_score_adj"):  # the daemon checks its range, as with the docker CLI
            host["OomScoreAdj"] = values["oom_score_adj"]
        if values.get("mac_address"):
            endpoints = body.setdefault("NetworkingConfig", {}).setdefault("EndpointsConfig", {})
            network = host.get("NetworkMode") or "default"
            endpoints.setdefault("default" if network == "bridge" else network, {})["MacAddress"] = values["mac_address"]
    return apply
