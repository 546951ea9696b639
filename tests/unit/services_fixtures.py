"""Builders of Service/Task/Node protobufs for the orchestrator, scheduler and service API unit tests."""

from __future__ import annotations

import itertools

from proto import objects_pb2 as pb

S = pb.TaskState
SEC = 1_000_000_000
NOW = 1_000 * SEC


def ids(prefix: str = "t"):  # type: ignore[no-untyped-def]
    counter = itertools.count(1)
    return lambda: f"{prefix}{next(counter)}"


def service(name: str = "web", replicas: int | None = 2, image: str = "busybox", sid: str = "svc1",
            version: int = 10, **restart: object) -> pb.Service:
    s = pb.Service(id=sid)
    s.meta.version.index = version
    s.spec.annotations.name = name
    s.spec.task.container.image = image
    if replicas is None:
        s.spec.__getattribute__("global").SetInParent()
    else:
        s.spec.replicated.replicas = replicas
    if "condition" in restart:
        s.spec.task.restart.condition = restart["condition"]  # type: ignore[assignment]
    if "delay_s" in restart:
        s.spec.task.restart.delay.FromNanoseconds(int(restart["delay_s"] * SEC))  # type: ignore[operator]
    else:
        s.spec.task.restart.delay.FromNanoseconds(0)
    if "max_attempts" in restart:
        s.spec.task.restart.max_attempts = restart["max_attempts"]  # type: ignore[assignment]
    return s


def task(svc: pb.Service, tid: str, slot: int = 0, node: str = "", state: int = S.TASK_STATE_RUNNING,
         desired: int = S.TASK_STATE_RUNNING, at: int = NOW - 60 * SEC, created: int | None = None) -> pb.Task:
    t = pb.Task(id=tid, service_id=svc.id, slot=slot, node_id=node, desired_state=desired)
    t.spec.CopyFrom(svc.spec.task)
    t.endpoint.spec.CopyFrom(svc.spec.endpoint)
    t.status.state = state
    t.status.timestamp.FromNanoseconds(at)
    t.meta.created_at.FromNanoseconds(created if created is not None else at)
    return t


def node(nid: str, hostname: str = "", state: int = pb.NodeStatus.READY, availability: int = pb.NodeSpec.ACTIVE,
         role: int = pb.NodeSpec.WORKER, labels: dict[str, str] | None = None, cpus: int = 2, memory: int = 1 << 30) -> pb.Node:
    n = pb.Node(id=nid, role=role)
    n.description.hostname = hostname or nid
    n.status.state = state
    n.spec.availability = availability
    n.spec.desired_role = role
    n.spec.annotations.labels.update(labels or {})
    n.description.resources.nano_cpus = cpus * SEC
    n.description.resources.memory_bytes = memory
    return n


def nodes_by_id(*ns: pb.Node) -> dict[str, pb.Node]:
    return {n.id: n for n in ns}
