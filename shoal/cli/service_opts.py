"""The flags of `service create`/`update` (--publish, --mount, --env, limits, restart and update policy ...) turned
into the Docker ServiceSpec JSON the docker CLI sends (CLIENT-SPEC §6). Pure (no click, no daemon): shoal/cli/service.py
calls it; UsageError carries the docker CLI's words."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from shoal.cli.format import UsageError
from shoal.cli.limits import nano_cpus, ram_in_bytes

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
CONDITIONS = ("none", "on-failure", "any")
FAILURE_ACTIONS = ("pause", "continue", "rollback")


def duration_ns(text: str, flag: str) -> int:
    """A Go duration ("5s", "1m30s", "0s") in nanoseconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text)
    if text == "0":
        return 0
    if not parts or "".join(n + u for n, u in parts) != text:
        raise UsageError(f'invalid argument "{text}" for "{flag}" flag: time: invalid duration "{text}"')
    return int(sum(float(n) * _DURATION_UNITS[u] for n, u in parts) * 1e9)


def parse_port(spec: str) -> dict[str, Any]:
    """One --publish value: `8080:80[/udp]`, `80`, or `published=8080,target=80,protocol=udp,mode=host`."""
    if "=" in spec:
        port: dict[str, Any] = {"Protocol": "tcp", "PublishMode": "ingress"}
        for field in spec.split(","):
            key, sep, value = field.partition("=")
            key = key.strip().lower()
            if not sep:
                raise UsageError(f"invalid field '{field}' must be a key=value pair")
            if key == "protocol":
                if value not in ("tcp", "udp", "sctp"):
                    raise UsageError(f"invalid protocol value '{value}'")
                port["Protocol"] = value
            elif key == "mode":
                if value not in ("ingress", "host"):
                    raise UsageError(f"invalid publish mode value ({value}): must be either 'ingress' or 'host'")
                port["PublishMode"] = value
            elif key in ("target", "published"):
                if not value.isdigit() or not 0 < int(value) <= 65535:
                    raise UsageError(f"invalid {key} port ({value}): value must be an integer: invalid syntax")
                port["TargetPort" if key == "target" else "PublishedPort"] = int(value)
            else:
                raise UsageError(f"invalid field key '{key}'")
        if "TargetPort" not in port:
            raise UsageError(f"missing mandatory field 'target'")
        port.setdefault("PublishedPort", 0)
        return {k: port[k] for k in ("Protocol", "TargetPort", "PublishedPort", "PublishMode")}
    body, _, proto = spec.partition("/")
    proto = proto or "tcp"
    if proto not in ("tcp", "udp", "sctp"):
        raise UsageError(f"invalid proto: {proto}")
    parts = body.split(":")
    if len(parts) > 2 or not all(p.isdigit() and 0 < int(p) <= 65535 for p in parts):
        raise UsageError(f'invalid port specification: "{spec}"')
    published, target = (int(parts[0]), int(parts[1])) if len(parts) == 2 else (0, int(parts[0]))
    return {"Protocol": proto, "TargetPort": target, "PublishedPort": published, "PublishMode": "ingress"}


def parse_mount(spec: str) -> dict[str, Any]:
    """One --mount value: `type=bind,source=/a,target=/b,readonly`."""
    m: dict[str, Any] = {"Type": "volume"}
    for field in spec.split(","):
        key, sep, value = field.partition("=")
        key = key.strip().lower()
        if key in ("readonly", "ro"):
            if sep and value.lower() not in ("1", "true", "0", "false"):
                raise UsageError(f"invalid value for {key}: {value}")
            m["ReadOnly"] = not sep or value.lower() in ("1", "true")
        elif not sep:
            raise UsageError(f"invalid field '{field}' must be a key=value pair")
        elif key == "type":
            if value not in ("bind", "volume", "tmpfs"):
                raise UsageError(f"invalid mount type {value!r}: bind, volume or tmpfs")
            m["Type"] = value
        elif key in ("source", "src"):
            m["Source"] = value
        elif key in ("target", "dst", "destination"):
            m["Target"] = value
        else:
            raise UsageError(f"unexpected key '{key}' in '{field}'")
    if not m.get("Target"):
        raise UsageError("target is required")
    return m


def parse_network(spec: str) -> dict[str, Any]:
    """`--network NAME` or the docker CLI's long form `name=NAME,alias=A[,alias=B][,driver-opt=K=V]` as a
    NetworkAttachmentConfig (Target is the name: service_create resolves it to the network's id)."""
    if "=" not in spec:
        return {"Target": spec}
    out: dict[str, Any] = {}
    for field in spec.split(","):
        key, sep, value = field.partition("=")
        key = key.strip().lower()
        if not sep:
            raise UsageError(f"invalid field '{field}' must be a key=value pair")
        if key == "name":
            out["Target"] = value
        elif key == "alias":
            out.setdefault("Aliases", []).append(value)
        elif key == "driver-opt":
            k, _, v = value.partition("=")
            out.setdefault("DriverOpts", {})[k] = v
        else:
            raise UsageError(f"invalid field key {key}")
    if not out.get("Target"):
        raise UsageError("network name/id is not specified")
    return out


def _resources(limit_cpu: str | None, limit_memory: str | None) -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        if limit_cpu:
            out["NanoCPUs"] = nano_cpus(limit_cpu)
        if limit_memory:
            out["MemoryBytes"] = ram_in_bytes(limit_memory)
    except ValueError as e:
        raise UsageError(str(e)) from None
    return out


def restart_policy(condition: str | None, delay: str | None, max_attempts: int | None, window: str | None,
                   base: dict[str, Any] | None = None) -> dict[str, Any] | None:
    rp = dict(base or {})
    if condition is not None:
        if condition not in CONDITIONS:
            raise UsageError(f'invalid argument "{condition}" for "--restart-condition" flag: must be one of {", ".join(CONDITIONS)}')
        rp["Condition"] = condition
    if delay is not None:
        rp["Delay"] = duration_ns(delay, "--restart-delay")
    if max_attempts is not None:
        rp["MaxAttempts"] = max_attempts
    if window is not None:
        rp["Window"] = duration_ns(window, "--restart-window")
    return rp or None


def update_config(parallelism: int | None, delay: str | None, failure_action: str | None, monitor: str | None,
                  order: str | None, ratio: float | None, base: dict[str, Any] | None = None, prefix: str = "update") -> dict[str, Any]:
    """The CLI always sends UpdateConfig with swarm's defaults filled in (parallelism 1, pause, 5 s monitor)."""
    u = dict(base or {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5_000_000_000, "MaxFailureRatio": 0,
                      "Order": "stop-first"})
    if parallelism is not None:
        u["Parallelism"] = parallelism
    if delay is not None:
        u["Delay"] = duration_ns(delay, f"--{prefix}-delay")
    if failure_action is not None:
        if failure_action not in FAILURE_ACTIONS:
            raise UsageError(f'invalid argument "{failure_action}" for "--{prefix}-failure-action" flag: must be one of '
                             f'{", ".join(FAILURE_ACTIONS)}')
        u["FailureAction"] = failure_action
    if monitor is not None:
        u["Monitor"] = duration_ns(monitor, f"--{prefix}-monitor")
    if order is not None:
        if order not in ("stop-first", "start-first"):
            raise UsageError(f'invalid argument "{order}" for "--{prefix}-order" flag: must be stop-first or start-first')
        u["Order"] = order
    if ratio is not None:
        u["MaxFailureRatio"] = ratio
    return u


_HEALTH_DURATIONS = (("health_interval", "Interval"), ("health_timeout", "Timeout"),
                     ("health_start_period", "StartPeriod"), ("health_start_interval", "StartInterval"))
_HEALTH_FLAGS = ("health_cmd", "health_retries", *(name for name, _key in _HEALTH_DURATIONS))


def _health_given(o: dict[str, Any]) -> bool:
    return any(o.get(name) is not None for name in _HEALTH_FLAGS)


def _no_healthcheck(o: dict[str, Any]) -> dict[str, Any] | None:
    """--no-healthcheck's Healthcheck, refused beside a --health-* flag as the docker CLI does; None without it."""
    if not o.get("no_healthcheck"):
        return None
    if _health_given(o):
        raise UsageError("--no-healthcheck conflicts with --health-* options")
    return {"Test": ["NONE"]}


def create_health(o: dict[str, Any]) -> dict[str, Any] | None:
    """The Healthcheck of `service create`'s --health-* flags (the docker CLI's toHealthConfig); None without any."""
    none = _no_healthcheck(o)
    if none is not None or not _health_given(o):
        return none
    return update_health({}, o)


def update_health(current: dict[str, Any] | None, o: dict[str, Any]) -> dict[str, Any]:
    """The flags given applied to a Healthcheck (the docker CLI's updateHealthcheck): `--health-cmd ""` drops the
    command (the image's then), a --health-* flag after --no-healthcheck drops its NONE."""
    none = _no_healthcheck(o)
    if none is not None:
        return none
    h = dict(current or {})
    if h.get("Test", [None])[:1] == ["NONE"]:
        h.pop("Test")
    for name, key in _HEALTH_DURATIONS:
        if o.get(name) is not None:
            h[key] = duration_ns(o[name], "--" + name.replace("_", "-"))
    if o.get("health_retries") is not None:
        h["Retries"] = o["health_retries"]
    if o.get("health_cmd") is not None:
        if o["health_cmd"]:
            h["Test"] = ["CMD-SHELL", o["health_cmd"]]
        else:
            h.pop("Test", None)
    return h


def placement_prefs(values: Iterable[str], flag: str) -> list[dict[str, Any]]:
    """--placement-pref values (`spread=node.labels.zone`) as PlacementPreferences, refused as the docker CLI's
    placementPrefOpts.Set refuses them; the descriptor is the manager's to read."""
    out = []
    for value in values:
        strategy, sep, arg = value.partition("=")
        if not sep or not strategy:
            why = 'placement preference must be of the format "<strategy>=<arg>"'
        elif strategy != "spread":
            why = f"unsupported placement preference {strategy} (only spread is supported)"
        else:
            out.append({"Spread": {"SpreadDescriptor": arg}})
            continue
        raise UsageError(f'invalid argument "{value}" for "{flag}" flag: {why}')
    return out


def labels(items: Iterable[str]) -> dict[str, str]:
    out = {}
    for item in items:
        k, _, v = item.partition("=")
        out[k] = v
    return out


UPDATE_FLAGS = ("update_parallelism", "update_delay", "update_failure_action", "update_monitor", "update_order",
                "update_max_failure_ratio")


def service_mode(o: dict[str, Any]) -> dict[str, Any]:
    """The spec's Mode from --mode, --replicas, --max-concurrent, --replicas-max-per-node, with the docker CLI's
    refusals (its ToServiceMode): for a replicated job --replicas is TotalCompletions and --max-concurrent defaults to
    it (both absent: the daemon's defaults, 1 and 1)."""
    mode = o.get("mode") or "replicated"
    replicas, concurrent = o.get("replicas"), o.get("max_concurrent")
    if mode in ("global", "global-job"):
        if mode == "global" and replicas is not None:
            raise UsageError("replicas can only be used with replicated or replicated-job mode")
        if o.get("replicas_max_per_node"):
            raise UsageError("replicas-max-per-node can only be used with replicated or replicated-job mode")
    if mode != "replicated-job" and concurrent is not None:
        raise UsageError("max-concurrent can only be used with replicated-job mode")
    if mode == "global":
        return {"Global": {}}
    if mode == "replicated":
        return {"Replicated": {"Replicas": replicas} if replicas is not None else {}}
    if mode == "replicated-job":
        concurrent = replicas if concurrent is None else concurrent
        return {"ReplicatedJob": {**({"MaxConcurrent": concurrent} if concurrent is not None else {}),
                                  **({"TotalCompletions": replicas} if replicas is not None else {})}}
    if mode == "global-job":
        if replicas is not None:
            raise UsageError("replicas can only be used with replicated or replicated-job mode")
        return {"GlobalJob": {}}
    raise UsageError(f"Unknown mode: {mode}, only replicated and global supported")


def create_spec(o: dict[str, Any]) -> dict[str, Any]:
    """The ServiceSpec of `service create` from its parsed flags (keys are the click parameter names)."""
    image = o["image"]
    cs: dict[str, Any] = {"Image": image}
    if o.get("args"):
        cs["Args"] = list(o["args"])
    if o.get("env"):
        cs["Env"] = list(o["env"])
    if o.get("hostname"):
        cs["Hostname"] = o["hostname"]
    if o.get("workdir"):
        cs["Dir"] = o["workdir"]
    if o.get("user"):
        cs["User"] = o["user"]
    if o.get("container_label"):
        cs["Labels"] = labels(o["container_label"])
    if o.get("group"):
        cs["Groups"] = list(o["group"])
    if o.get("oom_score_adj"):  # the daemon checks its range (the docker CLI does not)
        cs["OomScoreAdj"] = o["oom_score_adj"]
    if o.get("mount"):
        cs["Mounts"] = [parse_mount(m) for m in o["mount"]]
    if o.get("stop_grace_period"):
        cs["StopGracePeriod"] = duration_ns(o["stop_grace_period"], "--stop-grace-period")
    health = create_health(o)
    if health is not None:
        cs["Healthcheck"] = health
    cs["Init"] = False
    task: dict[str, Any] = {"ContainerSpec": cs,
                            "Resources": {"Limits": _resources(o.get("limit_cpu"), o.get("limit_memory")),
                                          "Reservations": _resources(o.get("reserve_cpu"), o.get("reserve_memory"))},
                            "Placement": {**({"Constraints": list(o["constraint"])} if o.get("constraint") else {}),
                                          **({"Preferences": placement_prefs(o["placement_pref"], "--placement-pref")}
                                             if o.get("placement_pref") else {}),
                                          **({"MaxReplicas": o["replicas_max_per_node"]} if o.get("replicas_max_per_node") else {})},
                            "ForceUpdate": 0}
    rp = restart_policy(o.get("restart_condition"), o.get("restart_delay"), o.get("restart_max_attempts"), o.get("restart_window"))
    if rp:
        task["RestartPolicy"] = rp
    if o.get("network"):
        task["Networks"] = [parse_network(n) for n in o["network"]]
    svc_mode = service_mode(o)
    spec: dict[str, Any] = {"Name": o.get("name") or "", "Labels": labels(o.get("label") or ()), "TaskTemplate": task,
                            "Mode": svc_mode,
                            "UpdateConfig": update_config(o.get("update_parallelism"), o.get("update_delay"),
                                                          o.get("update_failure_action"), o.get("update_monitor"),
                                                          o.get("update_order"), o.get("update_max_failure_ratio")),
                            "EndpointSpec": {"Mode": o.get("endpoint_mode") or "vip"}}
    if "ReplicatedJob" in svc_mode or "GlobalJob" in svc_mode:
        if any(o.get(f) is not None for f in UPDATE_FLAGS):  # the docker CLI's ToService
            raise UsageError("update and rollback configuration is not supported for jobs")
        del spec["UpdateConfig"]  # swarmkit refuses a job's: "Jobs may not have an update config"
    if spec["EndpointSpec"]["Mode"] not in ("vip", "dnsrr"):
        raise UsageError(f"invalid endpoint mode: {spec['EndpointSpec']['Mode']}")
    if o.get("publish"):
        spec["EndpointSpec"]["Ports"] = [parse_port(p) for p in o["publish"]]
    return spec


def update_spec(spec: dict[str, Any], o: dict[str, Any]) -> dict[str, Any]:
    """`service update` flags applied to the service's current Spec (a copy is changed and returned)."""
    import copy

    s = copy.deepcopy(spec)
    task = s.setdefault("TaskTemplate", {})
    cs = task.setdefault("ContainerSpec", {})
    if o.get("image"):
        cs["Image"] = o["image"]
    if o.get("args") is not None:
        cs["Args"] = o["args"].split() if o["args"] else []
    if o.get("env_rm") or o.get("env_add"):
        removed = set(o.get("env_rm") or ())
        env = [e for e in cs.get("Env") or [] if e.split("=", 1)[0] not in removed]
        for item in o.get("env_add") or ():
            key = item.split("=", 1)[0]
            env = [e for e in env if e.split("=", 1)[0] != key] + [item]
        cs["Env"] = env
    if o.get("hostname") is not None:
        cs["Hostname"] = o["hostname"]
    if o.get("group_add") or o.get("group_rm"):  # the docker CLI's updateGroups: added, then removed, then sorted
        gone = set(o.get("group_rm") or ())
        cs["Groups"] = sorted(g for g in [*(cs.get("Groups") or []), *(o.get("group_add") or ())] if g not in gone)
    if o.get("oom_score_adj") is not None:
        cs["OomScoreAdj"] = o["oom_score_adj"]
    if o.get("mount_add") or o.get("mount_rm"):
        gone = set(o.get("mount_rm") or ())
        mounts = [m for m in cs.get("Mounts") or [] if m.get("Target") not in gone]
        cs["Mounts"] = mounts + [parse_mount(m) for m in o.get("mount_add") or ()]
    if o.get("stop_grace_period"):
        cs["StopGracePeriod"] = duration_ns(o["stop_grace_period"], "--stop-grace-period")
    if o.get("no_healthcheck") or _health_given(o):
        cs["Healthcheck"] = update_health(cs.get("Healthcheck"), o)
    res = task.setdefault("Resources", {})
    for kind, cpu, mem in (("Limits", "limit_cpu", "limit_memory"), ("Reservations", "reserve_cpu", "reserve_memory")):
        if o.get(cpu) or o.get(mem):
            res[kind] = {**(res.get(kind) or {}), **_resources(o.get(cpu), o.get(mem))}
    rp = restart_policy(o.get("restart_condition"), o.get("restart_delay"), o.get("restart_max_attempts"),
                        o.get("restart_window"), task.get("RestartPolicy"))
    if rp:
        task["RestartPolicy"] = rp
    pl = task.setdefault("Placement", {})
    if o.get("constraint_add") or o.get("constraint_rm"):
        gone = set(o.get("constraint_rm") or ())
        pl["Constraints"] = [c for c in pl.get("Constraints") or [] if c not in gone] + list(o.get("constraint_add") or ())
    if o.get("placement_pref_add") or o.get("placement_pref_rm"):  # the docker CLI's updatePlacementPreferences
        added = placement_prefs(o.get("placement_pref_add") or (), "--placement-pref-add")
        gone = {p["Spread"]["SpreadDescriptor"] for p in placement_prefs(o.get("placement_pref_rm") or (), "--placement-pref-rm")}
        pl["Preferences"] = [p for p in pl.get("Preferences") or []
                             if (p.get("Spread") or {}).get("SpreadDescriptor") not in gone] + added
    if o.get("network_add") or o.get("network_rm"):
        gone = set(o.get("network_rm") or ())
        task["Networks"] = [n for n in task.get("Networks") or [] if n.get("Target") not in gone] + [
            parse_network(n) for n in o.get("network_add") or ()]
    if o.get("force"):
        task["ForceUpdate"] = int(task.get("ForceUpdate") or 0) + 1
    if o.get("replicas") is not None:
        if "Replicated" not in (s.get("Mode") or {}):
            raise UsageError("replicas can only be used with replicated mode")  # the docker CLI's updateReplicas
        s["Mode"]["Replicated"]["Replicas"] = o["replicas"]
    job = "ReplicatedJob" in (s.get("Mode") or {}) or "GlobalJob" in (s.get("Mode") or {})
    if not job or any(o.get(f) is not None for f in UPDATE_FLAGS):  # a job's flags go to swarmkit, which refuses them
        s["UpdateConfig"] = update_config(o.get("update_parallelism"), o.get("update_delay"),
                                          o.get("update_failure_action"), o.get("update_monitor"), o.get("update_order"),
                                          o.get("update_max_failure_ratio"), base=s.get("UpdateConfig"))
    ep = s.setdefault("EndpointSpec", {"Mode": "vip"})
    if o.get("endpoint_mode"):
        ep["Mode"] = o["endpoint_mode"]
    if o.get("publish_add") or o.get("publish_rm"):
        gone = set(o.get("publish_rm") or ())
        ports = [p for p in ep.get("Ports") or [] if str(p.get("TargetPort")) not in gone
                 and f"{p.get('PublishedPort')}:{p.get('TargetPort')}" not in gone]
        ep["Ports"] = ports + [parse_port(p) for p in o.get("publish_add") or ()]
    return s
