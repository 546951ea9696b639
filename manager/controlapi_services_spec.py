"""Validation of a ServiceSpec with swarmkit's words (controlapi/service.go): name, container, restart, resources,
placement, update config, endpoint; and the checks that read the store (networks, published-port conflicts).
Pure over a store view; manager/controlapi_services.py runs them inside the write transaction."""

from __future__ import annotations

import re
from typing import Any

from common.errdefs import InvalidParameter, NotFound
from manager.scheduler.constraints import parse_all
from proto import objects_pb2 as pb

_DNS_NAME = re.compile(r"^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$")
MAX_REPLICAS = 10_000  # shoal's own cap: a task object per replica must fit the managers' memory
MIN_MEMORY = 4 * 1024 * 1024
MIN_NANO_CPUS = 1_000_000
MIN_HEALTH_DURATION_NS = 1_000_000  # swarmkit's minimumDuration (1ms)
INGRESS = pb.PortConfig.INGRESS
HOST = pb.PortConfig.HOST
PROTO = {pb.PortConfig.TCP: "tcp", pb.PortConfig.UDP: "udp", pb.PortConfig.SCTP: "sctp"}


def _negative(d: Any) -> bool:
    return d.seconds < 0 or d.nanos < 0


class NetworkNotFound(NotFound):
    """The daemon's own refusal (moby resolves networks before calling swarmkit): shown without "rpc error"."""


def check_annotations(name: str) -> None:
    if name == "":
        raise InvalidParameter("meta: name must be provided")
    if not _DNS_NAME.match(name):
        raise InvalidParameter("name must be valid as a DNS name component")
    if len(name) > 63:
        raise InvalidParameter("name must be 63 characters or fewer")


def check_resources(r: pb.Resources) -> None:
    if r.nano_cpus != 0 and r.nano_cpus < MIN_NANO_CPUS:
        raise InvalidParameter(f"invalid cpu value {r.nano_cpus / 1e9:g}: Must be at least {MIN_NANO_CPUS / 1e9:g}")
    if r.memory_bytes != 0 and r.memory_bytes < MIN_MEMORY:
        raise InvalidParameter(f"invalid memory value {r.memory_bytes}: Must be at least 4MiB")
    if r.nano_cpus < 0 or r.memory_bytes < 0:
        raise InvalidParameter("invalid resources: negative values are not allowed")


def check_task_spec(task: pb.TaskSpec) -> None:
    c = task.container
    if not task.HasField("container"):
        raise InvalidParameter("TaskSpec: missing runtime")
    if not c.image:
        raise InvalidParameter("ContainerSpec: image reference must be provided")
    seen: set[str] = set()
    for m in c.mounts:
        if not m.target.startswith("/"):
            raise InvalidParameter(f"invalid mount target, must be an absolute path: {m.target}")
        if m.target in seen:
            raise InvalidParameter(f"ContainerSpec: duplicate mount point: {m.target}")
        seen.add(m.target)
        if m.type == pb.Mount.BIND and not m.source.startswith("/"):
            raise InvalidParameter(f"invalid bind mount source, must be an absolute path: {m.source}")
    if c.HasField("stop_grace_period") and _negative(c.stop_grace_period):
        raise InvalidParameter("ContainerSpec: stop-grace-period cannot be negative")
    if c.HasField("healthcheck"):
        check_health(c.healthcheck)
    r = task.restart
    if r.HasField("delay") and _negative(r.delay):
        raise InvalidParameter("TaskSpec: restart-delay cannot be negative")
    if r.HasField("window") and _negative(r.window):
        raise InvalidParameter("TaskSpec: restart-window cannot be negative")
    check_resources(task.resources.limits)
    check_resources(task.resources.reservations)
    # swarmkit's validatePlacement checks the constraints only: a preference is stored whatever its descriptor, and the
    # scheduler spreads over node.labels.* and engine.labels.* and skips any other (preferences.spread_descriptors)
    parse_all(list(task.placement.constraints))


def check_health(hc: pb.HealthConfig) -> None:
    """swarmkit's validateHealthCheck: a zero duration is the engine's default; anything else below 1 ms (negative
    included) would make the engine probe in a busy loop."""
    for name, field in (("Interval", "interval"), ("Timeout", "timeout"), ("StartPeriod", "start_period")):
        ns = getattr(hc, field).ToNanoseconds()
        if ns != 0 and ns < MIN_HEALTH_DURATION_NS:
            raise InvalidParameter(f"ContainerSpec: {name} in HealthConfig cannot be less than 1ms")
    if hc.retries < 0:
        raise InvalidParameter("ContainerSpec: Retries in HealthConfig cannot be negative")


def check_update(u: pb.UpdateConfig, what: str = "update") -> None:
    if u.HasField("delay") and _negative(u.delay):
        raise InvalidParameter(f"TaskSpec: {what}-delay cannot be negative")
    if u.HasField("monitor") and _negative(u.monitor):
        raise InvalidParameter(f"TaskSpec: {what}-monitor cannot be negative")
    if u.max_failure_ratio < 0 or u.max_failure_ratio > 1:
        raise InvalidParameter(f"TaskSpec: {what}-maxfailureratio cannot be less than 0 or bigger than 1")


def check_endpoint(ep: pb.EndpointSpec) -> None:
    seen: set[tuple[int, int]] = set()
    for p in ep.ports:
        if ep.mode == pb.EndpointSpec.DNSRR and p.publish_mode == INGRESS:
            raise InvalidParameter("EndpointSpec: port published with ingress mode can't be used with dnsrr mode")
        if p.target_port == 0 or p.target_port > 65535 or p.published_port > 65535:
            raise InvalidParameter(f"invalid port specification: target {p.target_port}, published {p.published_port}")
        if p.published_port == 0:
            continue
        key = (p.published_port, p.protocol)
        if key in seen:
            raise InvalidParameter("EndpointSpec: duplicate published ports provided")
        seen.add(key)


def check_spec(spec: pb.ServiceSpec) -> None:
    """Everything that needs no store (swarmkit's validateServiceSpec)."""
    check_annotations(spec.annotations.name)
    check_task_spec(spec.task)
    check_update(spec.rollback, "rollback")
    mode = spec.WhichOneof("mode")
    if mode is None:
        raise InvalidParameter("Unrecognized service mode")
    if mode == "replicated" and spec.replicated.replicas > MAX_REPLICAS:
        raise InvalidParameter(f"invalid replicas value {spec.replicated.replicas}: at most {MAX_REPLICAS} replicas per service")
    if mode in ("replicated_job", "global_job"):
        check_job(spec)
    else:
        check_update(spec.update)
    check_endpoint(spec.endpoint)


def check_job(spec: pb.ServiceSpec) -> None:
    """swarmkit's validateMode and validateJob: counts that are negative as a signed 64-bit number (a client's blind
    cast), no update config (a job's update is a new run, not a rolling one)."""
    job = spec.replicated_job
    if job.max_concurrent >= 1 << 63:
        raise InvalidParameter("Maximum concurrent jobs must not be negative")
    if job.total_completions >= 1 << 63:
        raise InvalidParameter("Total completed jobs must not be negative")
    if job.total_completions > MAX_REPLICAS:  # shoal's own cap: every completed task stays in the store
        raise InvalidParameter(f"invalid total completions value {job.total_completions}: at most {MAX_REPLICAS} "
                               "tasks per job")
    if spec.HasField("update"):
        raise InvalidParameter("Jobs may not have an update config")


def resolve_networks(spec: pb.ServiceSpec, view: Any) -> None:
    """Network targets (an id, a name or a unique id prefix) become ids; unknown ones are refused."""
    for att in spec.task.networks:
        net = find_network(view, att.target)
        if net is None:
            raise NetworkNotFound(f"network {att.target} not found")
        if net.spec.ingress:
            raise InvalidParameter(f'Service cannot be explicitly attached to the ingress network "{net.spec.annotations.name}"')
        att.target = net.id
    targets = [a.target for a in spec.task.networks]
    if len(set(targets)) != len(targets):
        raise InvalidParameter("service cannot be attached to the same network more than once")


def find_network(view: Any, ref: str) -> pb.Network | None:
    if not ref:
        return None
    net = view.get("network", ref) or view.find_by_name("network", ref)
    if net is not None:
        return net
    prefixed = [n for n in view.list("network") if n.id.startswith(ref)]
    return prefixed[0] if len(prefixed) == 1 else None


def check_port_conflicts(spec: pb.ServiceSpec, service_id: str, view: Any) -> None:
    """swarmkit's checkPortConflicts: an ingress port is the cluster's alone; a host port may be shared by host ones."""
    for p in spec.endpoint.ports:
        if p.published_port == 0:
            continue
        for other in view.list("service"):
            if other.id == service_id:
                continue
            ports = list(other.spec.endpoint.ports) + list(other.endpoint.ports)
            for q in ports:
                if q.published_port != p.published_port or q.protocol != p.protocol:
                    continue
                if q.publish_mode == INGRESS:
                    raise InvalidParameter(f"port '{p.published_port}' is already in use by service "
                                           f"'{other.spec.annotations.name}' ({other.id}) as an ingress port")
                if p.publish_mode == INGRESS:
                    raise InvalidParameter(f"port '{p.published_port}' is already in use by service "
                                           f"'{other.spec.annotations.name}' ({other.id}) as a host-published port")
