"""Services and tasks (proto Service, Task) as Docker Engine API JSON, and a Docker ServiceSpec body back to a
proto ServiceSpec (keys matched case-insensitively, docker-py's lowercase mode keys included). The edge
conversion for shoal/api/routes_services.py; nothing else speaks Docker JSON for services."""

from __future__ import annotations

import json
from typing import Any

from agent.volumes.specs import PROPAGATIONS
from common.errdefs import InvalidParameter
from manager.orchestrator.tasks import STATE_NAMES
from proto import objects_pb2 as pb
from shoal.api.params import get_ci
from shoal.api.service_fields import refuse_unapplied

_ZERO_TIME = "0001-01-01T00:00:00Z"
CONDITION = {pb.RestartPolicy.ANY: "any", pb.RestartPolicy.NONE: "none", pb.RestartPolicy.ON_FAILURE: "on-failure"}
PROTOCOL = {pb.PortConfig.TCP: "tcp", pb.PortConfig.UDP: "udp", pb.PortConfig.SCTP: "sctp"}
PUBLISH = {pb.PortConfig.INGRESS: "ingress", pb.PortConfig.HOST: "host"}
RESOLUTION = {pb.EndpointSpec.VIP: "vip", pb.EndpointSpec.DNSRR: "dnsrr"}
FAILURE_ACTION = {pb.UpdateConfig.PAUSE: "pause", pb.UpdateConfig.CONTINUE: "continue", pb.UpdateConfig.ROLLBACK: "rollback"}
ORDER = {pb.UpdateConfig.STOP_FIRST: "stop-first", pb.UpdateConfig.START_FIRST: "start-first"}
MOUNT_TYPE = {pb.Mount.BIND: "bind", pb.Mount.VOLUME: "volume", pb.Mount.TMPFS: "tmpfs"}
UPDATE_STATE = {pb.UpdateStatus.UPDATING: "updating", pb.UpdateStatus.PAUSED: "paused",
                pb.UpdateStatus.COMPLETED: "completed", pb.UpdateStatus.ROLLBACK_STARTED: "rollback_started",
                pb.UpdateStatus.ROLLBACK_PAUSED: "rollback_paused", pb.UpdateStatus.ROLLBACK_COMPLETED: "rollback_completed"}
TASK_STATES = {name: value for value, name in STATE_NAMES.items()}


def _ts(msg: Any, field: str) -> str:
    return getattr(msg, field).ToJsonString() if msg.HasField(field) else _ZERO_TIME


def _reverse(table: dict[int, str], value: Any, what: str) -> int:
    if not isinstance(value, str):
        raise InvalidParameter(f"invalid {what}: {json.dumps(value)}")
    for k, v in table.items():
        if v == value.lower():
            return k
    raise InvalidParameter(f"invalid {what}: {value!r}")


# ---------------------------------------------------------------------------------------------- to JSON
def _resources(r: pb.Resources) -> dict[str, Any]:
    return {**({"NanoCPUs": r.nano_cpus} if r.nano_cpus else {}), **({"MemoryBytes": r.memory_bytes} if r.memory_bytes else {}),
            **({"Pids": r.pids} if r.pids else {})}


def _port(p: pb.PortConfig) -> dict[str, Any]:
    return {**({"Name": p.name} if p.name else {}), "Protocol": PROTOCOL.get(p.protocol, "tcp"), "TargetPort": p.target_port,
            "PublishedPort": p.published_port, "PublishMode": PUBLISH.get(p.publish_mode, "ingress")}


def _update_config(u: pb.UpdateConfig) -> dict[str, Any]:
    return {"Parallelism": u.parallelism, **({"Delay": u.delay.ToNanoseconds()} if u.HasField("delay") else {}),
            "FailureAction": FAILURE_ACTION[u.failure_action],
            **({"Monitor": u.monitor.ToNanoseconds()} if u.HasField("monitor") else {}),
            "MaxFailureRatio": u.max_failure_ratio, "Order": ORDER[u.order]}


def task_spec_json(t: pb.TaskSpec) -> dict[str, Any]:
    c = t.container
    cs: dict[str, Any] = {"Image": c.image}
    if c.labels:
        cs["Labels"] = dict(c.labels)
    if c.command:
        cs["Command"] = list(c.command)
    if c.args:
        cs["Args"] = list(c.args)
    if c.hostname:
        cs["Hostname"] = c.hostname
    if c.env:
        cs["Env"] = list(c.env)
    if c.dir:
        cs["Dir"] = c.dir
    if c.user:
        cs["User"] = c.user
    if c.mounts:
        cs["Mounts"] = [_mount_json(m) for m in c.mounts]
    if c.HasField("stop_grace_period"):
        cs["StopGracePeriod"] = c.stop_grace_period.ToNanoseconds()
    if c.configs:
        cs["Configs"] = [{"File": {"Name": r.file.name, "UID": r.file.uid or "0", "GID": r.file.gid or "0", "Mode": r.file.mode or 0o444},
                          "ConfigID": r.config_id, "ConfigName": r.config_name} for r in c.configs]
    if c.secrets:
        cs["Secrets"] = [{"File": {"Name": r.file.name, "UID": r.file.uid or "0", "GID": r.file.gid or "0", "Mode": r.file.mode or 0o444},
                          "SecretID": r.secret_id, "SecretName": r.secret_name} for r in c.secrets]
    cs.update(_container_options_json(c))
    cs["Isolation"] = "default"
    out: dict[str, Any] = {"ContainerSpec": cs,
                           "Resources": {"Limits": _resources(t.resources.limits), "Reservations": _resources(t.resources.reservations)}}
    r = t.restart
    if t.HasField("restart"):
        out["RestartPolicy"] = {"Condition": CONDITION[r.condition], **({"Delay": r.delay.ToNanoseconds()} if r.HasField("delay") else {}),
                                "MaxAttempts": r.max_attempts, **({"Window": r.window.ToNanoseconds()} if r.HasField("window") else {})}
    out["Placement"] = {**({"Constraints": list(t.placement.constraints)} if t.placement.constraints else {}),
                        **({"Preferences": [{"Spread": {"SpreadDescriptor": p.spread.spread_descriptor}}
                                            for p in t.placement.preferences]} if t.placement.preferences else {}),
                        **({"MaxReplicas": t.placement.max_replicas} if t.placement.max_replicas else {})}
    if t.networks:
        out["Networks"] = [{"Target": n.target, **({"Aliases": list(n.aliases)} if n.aliases else {})} for n in t.networks]
    out["ForceUpdate"] = t.force_update
    out["Runtime"] = "container"
    return out


def _container_options_json(c: pb.ContainerSpec) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if c.stop_signal:
        out["StopSignal"] = c.stop_signal
    for key, value in (("TTY", c.tty), ("OpenStdin", c.open_stdin), ("ReadOnly", c.read_only), ("Init", c.init)):
        if value:
            out[key] = True
    if c.capability_add:
        out["CapabilityAdd"] = list(c.capability_add)
    if c.capability_drop:
        out["CapabilityDrop"] = list(c.capability_drop)
    if c.hosts:
        out["Hosts"] = list(c.hosts)
    if c.HasField("dns_config"):
        d = c.dns_config
        out["DNSConfig"] = {**({"Nameservers": list(d.nameservers)} if d.nameservers else {}),
                            **({"Search": list(d.search)} if d.search else {}),
                            **({"Options": list(d.options)} if d.options else {})}
    if c.sysctls:
        out["Sysctls"] = dict(c.sysctls)
    if c.ulimits:
        out["Ulimits"] = [{"Name": u.name, "Hard": u.hard, "Soft": u.soft} for u in c.ulimits]
    if c.groups:
        out["Groups"] = list(c.groups)
    if c.oom_score_adj:  # omitempty, as Docker's
        out["OomScoreAdj"] = c.oom_score_adj
    if c.HasField("healthcheck"):
        out["Healthcheck"] = health_json(c.healthcheck)
    return out


_HEALTH_DURATIONS = (("Interval", "interval"), ("Timeout", "timeout"), ("StartPeriod", "start_period"),
                     ("StartInterval", "start_interval"))


def health_json(h: pb.HealthConfig) -> dict[str, Any]:
    """Docker's HealthConfig (durations in nanoseconds, zero members left out as Docker's omitempty does): the
    service's spec in inspect, and the task container's Config.Healthcheck (shoal/swarm/executor.py)."""
    out: dict[str, Any] = {"Test": list(h.test)} if h.test else {}
    for key, name in _HEALTH_DURATIONS:
        if h.HasField(name) and getattr(h, name).ToNanoseconds():
            out[key] = getattr(h, name).ToNanoseconds()
    if h.retries:
        out["Retries"] = h.retries
    return out


def service_spec_json(s: pb.ServiceSpec) -> dict[str, Any]:
    out: dict[str, Any] = {"Name": s.annotations.name, "Labels": dict(s.annotations.labels), "TaskTemplate": task_spec_json(s.task)}
    mode = s.WhichOneof("mode")
    if mode == "global":
        out["Mode"] = {"Global": {}}
    elif mode == "replicated_job":
        out["Mode"] = {"ReplicatedJob": {"MaxConcurrent": s.replicated_job.max_concurrent,
                                         "TotalCompletions": s.replicated_job.total_completions}}
    elif mode == "global_job":
        out["Mode"] = {"GlobalJob": {}}
    else:
        out["Mode"] = {"Replicated": {"Replicas": s.replicated.replicas}}
    if s.HasField("update"):
        out["UpdateConfig"] = _update_config(s.update)
    if s.HasField("rollback"):
        out["RollbackConfig"] = _update_config(s.rollback)
    out["EndpointSpec"] = {"Mode": RESOLUTION[s.endpoint.mode], **({"Ports": [_port(p) for p in s.endpoint.ports]} if s.endpoint.ports else {})}
    return out


def service_json(s: pb.Service, status: dict[str, int] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"ID": s.id, "Version": {"Index": s.meta.version.index}, "CreatedAt": _ts(s.meta, "created_at"),
                           "UpdatedAt": _ts(s.meta, "updated_at"), "Spec": service_spec_json(s.spec)}
    if s.HasField("previous_spec"):
        out["PreviousSpec"] = service_spec_json(s.previous_spec)
    # the allocator fills endpoint.ports; until it has, the spec's published ports are what a client expects
    ports = list(s.endpoint.ports) or [p for p in s.spec.endpoint.ports if p.published_port]
    ep: dict[str, Any] = {"Spec": {"Mode": RESOLUTION[s.spec.endpoint.mode],
                                   **({"Ports": [_port(p) for p in s.spec.endpoint.ports]} if s.spec.endpoint.ports else {})}}
    if ports:
        ep["Ports"] = [_port(p) for p in ports]
    if s.endpoint.virtual_ips:
        ep["VirtualIPs"] = [{"NetworkID": v.network_id, "Addr": v.addr} for v in s.endpoint.virtual_ips]
    out["Endpoint"] = ep
    if s.HasField("update_status") and s.update_status.state in UPDATE_STATE:
        u = s.update_status
        out["UpdateStatus"] = {"State": UPDATE_STATE[u.state], **({"StartedAt": _ts(u, "started_at")} if u.HasField("started_at") else {}),
                               **({"CompletedAt": _ts(u, "completed_at")} if u.HasField("completed_at") else {}), "Message": u.message}
    if status is not None:
        out["ServiceStatus"] = status
    if s.HasField("job_status"):
        out["JobStatus"] = {"JobIteration": {"Index": s.job_status.job_iteration.index},
                            "LastExecution": _ts(s.job_status, "last_execution")}
    return out


def task_json(t: pb.Task) -> dict[str, Any]:
    st = t.status
    status: dict[str, Any] = {"Timestamp": _ts(st, "timestamp"), "State": STATE_NAMES.get(st.state, "new"), "Message": st.message}
    if st.err:
        status["Err"] = st.err
    if st.HasField("container") and st.container.container_id:
        status["ContainerStatus"] = {"ContainerID": st.container.container_id, "PID": st.container.pid,
                                     "ExitCode": st.container.exit_code}
    else:
        status["ContainerStatus"] = {"ContainerID": "", "PID": 0, "ExitCode": 0}
    status["PortStatus"] = {"Ports": [_port(p) for p in st.port_status]} if st.port_status else {}
    out: dict[str, Any] = {"ID": t.id, "Version": {"Index": t.meta.version.index}, "CreatedAt": _ts(t.meta, "created_at"),
                           "UpdatedAt": _ts(t.meta, "updated_at"), "Labels": {}, "Spec": task_spec_json(t.spec),
                           "ServiceID": t.service_id}
    if t.slot:
        out["Slot"] = t.slot
    if t.node_id:
        out["NodeID"] = t.node_id
    out["Status"] = status
    out["DesiredState"] = STATE_NAMES.get(t.desired_state, "running")
    if t.HasField("job_iteration"):
        out["JobIteration"] = {"Index": t.job_iteration.index}
    if t.networks:
        out["NetworksAttachments"] = [{"Network": {"ID": a.network.id, "Spec": {"Name": a.network.spec.annotations.name}},
                                       "Addresses": list(a.addresses)} for a in t.networks]
    return out


# ---------------------------------------------------------------------------------------------- from JSON
def _obj(d: Any, key: str) -> dict[str, Any]:
    v = get_ci(d, key, {})
    if not isinstance(v, dict):
        raise InvalidParameter(f"invalid JSON: {key} must be an object, got {json.dumps(v)}")
    return v


def _list(d: Any, key: str) -> list[Any]:
    v = get_ci(d, key, [])
    if not isinstance(v, list):
        raise InvalidParameter(f"invalid JSON: {key} must be a list, got {json.dumps(v)}")
    return v


def _strs(d: Any, key: str) -> list[str]:
    v = _list(d, key)
    if not all(isinstance(x, str) for x in v):
        raise InvalidParameter(f"invalid JSON: {key} must be a list of strings, got {json.dumps(v)}")
    return v


def _str(d: Any, key: str) -> str:
    v = get_ci(d, key, "")
    if not isinstance(v, str):
        raise InvalidParameter(f"invalid JSON: {key} must be a string, got {json.dumps(v)}")
    return v


def _int(d: Any, key: str, what: str | None = None) -> int | None:
    v = get_ci(d, key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidParameter(f"invalid JSON: {what or key} must be an integer, got {json.dumps(v)}")
    return v


def _uint(d: Any, key: str) -> int:
    v = _int(d, key)
    if v is not None and v < 0:
        raise InvalidParameter(f"invalid JSON: {key} must not be negative, got {v}")
    return v or 0


def _duration(d: Any, key: str, target: Any) -> None:
    v = _int(d, key)
    if v is not None:
        target.FromNanoseconds(v)


def _resources_from(d: Any, r: pb.Resources) -> None:
    r.nano_cpus = _int(d, "NanoCPUs") or 0
    r.memory_bytes = _int(d, "MemoryBytes") or 0
    r.pids = _int(d, "Pids") or 0  # service_fields.py lets it through in Limits only


def _bool(d: Any, key: str) -> bool:
    v = get_ci(d, key)
    if v is not None and not isinstance(v, bool):
        raise InvalidParameter(f"invalid JSON: {key} must be a boolean, got {json.dumps(v)}")
    return bool(v)


def _container_options_from(c: dict[str, Any], cs: pb.ContainerSpec) -> None:
    """The ContainerSpec fields that become the task container's create options (executor.create_body); their
    values are checked by that create, as `docker run`'s are, and a bad one rejects the task with its message."""
    cs.stop_signal = _str(c, "StopSignal")
    cs.tty = _bool(c, "TTY")
    cs.open_stdin = _bool(c, "OpenStdin")
    cs.read_only = _bool(c, "ReadOnly")
    cs.init = _bool(c, "Init")
    cs.capability_add.extend(_strs(c, "CapabilityAdd"))
    cs.capability_drop.extend(_strs(c, "CapabilityDrop"))
    for entry in _strs(c, "Hosts"):
        if len(entry.split()) < 2:
            raise InvalidParameter(f"invalid JSON: Hosts entries are \"IP name [alias...]\", got {json.dumps(entry)}")
        cs.hosts.append(entry)
    dns = _obj(c, "DNSConfig")
    if dns:
        cs.dns_config.nameservers.extend(_strs(dns, "Nameservers"))
        cs.dns_config.search.extend(_strs(dns, "Search"))
        cs.dns_config.options.extend(_strs(dns, "Options"))
    cs.sysctls.update({str(k): str(v) for k, v in _obj(c, "Sysctls").items()})
    for u in _list(c, "Ulimits"):
        if not isinstance(u, dict):
            raise InvalidParameter(f"invalid JSON: Ulimits entries must be objects, got {json.dumps(u)}")
        cs.ulimits.add(name=_str(u, "Name"), soft=_int(u, "Soft") or 0, hard=_int(u, "Hard") or 0)
    cs.groups.extend(_strs(c, "Groups"))
    oom = _int(c, "OomScoreAdj")
    if oom is not None and not -2**63 <= oom < 2**63:
        raise InvalidParameter(f"invalid JSON: OomScoreAdj must be a 64-bit integer, got {oom}")
    cs.oom_score_adj = oom or 0  # its range is the engine's to check, at the task's container create (as moby)
    if get_ci(c, "Healthcheck") is not None:
        _health_from(_obj(c, "Healthcheck"), cs.healthcheck)


def _health_from(d: dict[str, Any], h: pb.HealthConfig) -> None:
    """Healthcheck as sent (`--no-healthcheck` is Test ["NONE"]; `service update --health-cmd ""` leaves Test empty,
    the image's check); the values are checked by the manager (controlapi_services_spec.check_health)."""
    h.SetInParent()
    h.test.extend(_strs(d, "Test"))
    for key, name in _HEALTH_DURATIONS:
        ns = _int(d, key)
        if ns:  # zero is the engine's default, and is left out when shown: stored as absent, so a re-sent spec is equal
            getattr(h, name).FromNanoseconds(ns)
    retries = _int(d, "Retries")
    if retries is not None and not -2**31 <= retries < 2**31:
        raise InvalidParameter(f"invalid JSON: Retries must be a 32-bit integer, got {retries}")
    h.retries = retries or 0


def _update_from(d: dict[str, Any], u: pb.UpdateConfig) -> None:
    u.parallelism = _uint(d, "Parallelism")
    _duration(d, "Delay", u.delay)
    _duration(d, "Monitor", u.monitor)
    fa = get_ci(d, "FailureAction")
    if fa:
        u.failure_action = _reverse(FAILURE_ACTION, fa, "FailureAction")  # type: ignore[assignment]
    order = get_ci(d, "Order")
    if order:
        u.order = _reverse(ORDER, order, "Order")  # type: ignore[assignment]
    ratio = get_ci(d, "MaxFailureRatio", 0)
    if not isinstance(ratio, (int, float)) or isinstance(ratio, bool):
        raise InvalidParameter(f"invalid JSON: MaxFailureRatio must be a number, got {json.dumps(ratio)}")
    u.max_failure_ratio = float(ratio)


def _mount_options_from(m: dict[str, Any], mount: pb.Mount) -> None:
    """BindOptions.Propagation, VolumeOptions.NoCopy/Labels, TmpfsOptions.SizeBytes/Mode (the options the rules of
    service_fields.py let through), each only with the mount type it belongs to, as Docker checks."""
    kind = pb.Mount.Type.Name(mount.type).lower()
    for key, owner in (("BindOptions", "bind"), ("VolumeOptions", "volume"), ("TmpfsOptions", "tmpfs")):
        if get_ci(m, key) is not None and owner != kind:
            raise InvalidParameter(f"invalid mount config for type \"{kind}\": field {key} must not be specified")
    bo = _obj(m, "BindOptions")
    if bo:
        prop = _str(bo, "Propagation")
        if prop and prop not in PROPAGATIONS:
            raise InvalidParameter(f"invalid mount config: invalid propagation mode {json.dumps(prop)}")
        mount.bind_options.propagation = prop
    vo = _obj(m, "VolumeOptions")
    if vo:
        mount.volume_options.nocopy = bool(get_ci(vo, "NoCopy", False))
        mount.volume_options.labels.update({str(k): str(v) for k, v in _obj(vo, "Labels").items()})
    to = _obj(m, "TmpfsOptions")
    if to:
        size, mode = _int(to, "SizeBytes"), _int(to, "Mode")
        if size is not None and size < 0:
            raise InvalidParameter(f"invalid mount config: TmpfsOptions.SizeBytes must not be negative, got {size}")
        if mode is not None and not 0 <= mode <= 0o7777:
            raise InvalidParameter(f"invalid mount config: TmpfsOptions.Mode must be a file mode, got {mode}")
        mount.tmpfs_options.size_bytes = size or 0
        mount.tmpfs_options.mode = mode or 0


def _mount_json(m: pb.Mount) -> dict[str, Any]:
    out: dict[str, Any] = {"Type": MOUNT_TYPE[m.type], **({"Source": m.source} if m.source else {}), "Target": m.target,
                           **({"ReadOnly": True} if m.read_only else {})}
    if m.HasField("bind_options"):
        out["BindOptions"] = {"Propagation": m.bind_options.propagation} if m.bind_options.propagation else {}
    if m.HasField("volume_options"):
        out["VolumeOptions"] = {**({"NoCopy": True} if m.volume_options.nocopy else {}),
                                **({"Labels": dict(m.volume_options.labels)} if m.volume_options.labels else {})}
    if m.HasField("tmpfs_options"):
        out["TmpfsOptions"] = {**({"SizeBytes": m.tmpfs_options.size_bytes} if m.tmpfs_options.size_bytes else {}),
                               **({"Mode": m.tmpfs_options.mode} if m.tmpfs_options.mode else {})}
    return out


def tagged(image: str) -> str:
    """The docker client library tags an untagged image `:latest` before it sends a spec; doing the same here keeps
    a service created by docker-py ("busybox") from looking changed when the docker CLI re-sends it ("busybox:latest")."""
    if not image or "@" in image or ":" in image.rsplit("/", 1)[-1]:
        return image
    return image + ":latest"


def task_spec_from_json(d: dict[str, Any], t: pb.TaskSpec) -> None:
    c = _obj(d, "ContainerSpec")
    cs = t.container
    cs.image = tagged(_str(c, "Image"))
    cs.labels.update({str(k): str(v) for k, v in _obj(c, "Labels").items()})
    cs.command.extend(_strs(c, "Command"))
    cs.args.extend(_strs(c, "Args"))
    cs.hostname = _str(c, "Hostname")
    cs.env.extend(_strs(c, "Env"))
    cs.dir = _str(c, "Dir")
    cs.user = _str(c, "User")
    for m in _list(c, "Mounts"):
        if not isinstance(m, dict):
            raise InvalidParameter(f"invalid JSON: Mounts entries must be objects, got {json.dumps(m)}")
        mount = cs.mounts.add(type=_reverse(MOUNT_TYPE, get_ci(m, "Type", "volume"), "mount type"),  # type: ignore[arg-type]
                              source=_str(m, "Source"), target=_str(m, "Target"), read_only=bool(get_ci(m, "ReadOnly", False)))
        if not mount.target:
            raise InvalidParameter("invalid mount config: Target must not be empty")
        _mount_options_from(m, mount)
    _duration(c, "StopGracePeriod", cs.stop_grace_period)
    _container_options_from(c, cs)
    for ref in _list(c, "Configs"):
        f = _obj(ref, "File")
        cs.configs.add(config_id=_str(ref, "ConfigID"), config_name=_str(ref, "ConfigName"),
                       file=pb.FileTarget(name=_str(f, "Name"), uid=_str(f, "UID"), gid=_str(f, "GID"), mode=_uint(f, "Mode")))
    for ref in _list(c, "Secrets"):
        f = _obj(ref, "File")
        cs.secrets.add(secret_id=_str(ref, "SecretID"), secret_name=_str(ref, "SecretName"),
                       file=pb.FileTarget(name=_str(f, "Name"), uid=_str(f, "UID"), gid=_str(f, "GID"), mode=_uint(f, "Mode")))
    res = _obj(d, "Resources")
    _resources_from(_obj(res, "Limits"), t.resources.limits)
    _resources_from(_obj(res, "Reservations"), t.resources.reservations)
    rp = _obj(d, "RestartPolicy")
    if rp:
        cond = get_ci(rp, "Condition")
        if cond:
            t.restart.condition = _reverse(CONDITION, cond, "restart condition")  # type: ignore[assignment]
        _duration(rp, "Delay", t.restart.delay)
        _duration(rp, "Window", t.restart.window)
        t.restart.max_attempts = _uint(rp, "MaxAttempts")
    pl = _obj(d, "Placement")
    t.placement.constraints.extend(_strs(pl, "Constraints"))
    _preferences_from(_list(pl, "Preferences"), t.placement)
    t.placement.max_replicas = _uint(pl, "MaxReplicas")
    for n in _list(d, "Networks"):
        t.networks.add(target=_str(n, "Target"), aliases=_strs(n, "Aliases"))
    t.force_update = _uint(d, "ForceUpdate")


def _preferences_from(prefs: list[Any], placement: pb.Placement) -> None:
    """Placement.Preferences as moby converts them: an entry without Spread (the only kind) is dropped. Shown back,
    every stored entry is a Spread (canonical() empties one whose descriptor is "", which stays "" both ways)."""
    for p in prefs:
        if not isinstance(p, dict):
            raise InvalidParameter(f"invalid JSON: Preferences entries must be objects, got {json.dumps(p)}")
        if get_ci(p, "Spread") is not None:
            placement.preferences.add().spread.spread_descriptor = _str(_obj(p, "Spread"), "SpreadDescriptor")


def _replicated_job_from(d: dict[str, Any], job: pb.ReplicatedJob) -> None:
    """moby's defaults: MaxConcurrent absent is 1, TotalCompletions absent is MaxConcurrent (a given 0 stays 0);
    a negative count gets swarmkit's refusal (moby's JSON decoding into uint64 would fail on it)."""
    concurrent = _int(d, "MaxConcurrent", "MaxConcurrent")
    total = _int(d, "TotalCompletions", "TotalCompletions")
    if concurrent is not None and concurrent < 0:
        raise InvalidParameter("Maximum concurrent jobs must not be negative")
    if total is not None and total < 0:
        raise InvalidParameter("Total completed jobs must not be negative")
    job.SetInParent()
    job.max_concurrent = 1 if concurrent is None else concurrent
    job.total_completions = job.max_concurrent if total is None else total


def service_spec_from_json(d: dict[str, Any]) -> pb.ServiceSpec:
    refuse_unapplied(d)
    s = pb.ServiceSpec()
    s.annotations.name = _str(d, "Name")
    s.annotations.labels.update({str(k): str(v) for k, v in _obj(d, "Labels").items()})
    task_spec_from_json(_obj(d, "TaskTemplate"), s.task)
    if not s.task.networks:  # the deprecated top-level Networks (API < 1.44 clients may still send it)
        for n in _list(d, "Networks"):
            s.task.networks.add(target=_str(n, "Target"), aliases=_strs(n, "Aliases"))
    mode = _obj(d, "Mode")
    if sum(get_ci(mode, m) is not None for m in ("Global", "Replicated", "ReplicatedJob", "GlobalJob")) > 1:
        raise InvalidParameter("must specify only one service mode")  # moby's ServiceSpecToGRPC
    if get_ci(mode, "ReplicatedJob") is not None:
        _replicated_job_from(_obj(mode, "ReplicatedJob"), s.replicated_job)
    elif get_ci(mode, "GlobalJob") is not None:
        s.global_job.SetInParent()
    elif get_ci(mode, "Global") is not None:
        getattr(s, "global").SetInParent()
    else:
        rep = _obj(mode, "Replicated")
        replicas = _int(rep, "Replicas", "Replicas")
        if replicas is not None and replicas < 0:
            raise InvalidParameter("Number of replicas must be non-negative")
        s.replicated.replicas = 1 if replicas is None else replicas
    if get_ci(d, "UpdateConfig") is not None:
        _update_from(_obj(d, "UpdateConfig"), s.update)
    if get_ci(d, "RollbackConfig") is not None:
        _update_from(_obj(d, "RollbackConfig"), s.rollback)
    ep = _obj(d, "EndpointSpec")
    mode_name = get_ci(ep, "Mode")
    if mode_name:
        s.endpoint.mode = _reverse(RESOLUTION, mode_name, "endpoint mode")  # type: ignore[assignment]
    for p in _list(ep, "Ports"):
        s.endpoint.ports.add(name=_str(p, "Name"), protocol=_reverse(PROTOCOL, get_ci(p, "Protocol") or "tcp", "protocol"),  # type: ignore[arg-type]
                             target_port=_uint(p, "TargetPort"), published_port=_uint(p, "PublishedPort"),
                             publish_mode=_reverse(PUBLISH, get_ci(p, "PublishMode") or "ingress", "publish mode"))  # type: ignore[arg-type]
    return s
