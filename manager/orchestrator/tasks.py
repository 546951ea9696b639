"""Task helpers shared by the orchestrator cores: making a task for a slot or node, task states, spec comparison.
Pure (ids and times are passed in); used by replicated.py, global_.py, restart.py, update.py and the control API."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from proto import objects_pb2 as pb

from common.errdefs import InvalidParameter
from manager.scheduler.constraints import matches, parse_all

S = pb.TaskState
# A task whose observed state is past RUNNING is finished (complete, shutdown, failed, rejected, ...).
TERMINAL = frozenset({S.TASK_STATE_COMPLETE, S.TASK_STATE_SHUTDOWN, S.TASK_STATE_FAILED, S.TASK_STATE_REJECTED,
                      S.TASK_STATE_REMOVE, S.TASK_STATE_ORPHANED})
FAILURES = frozenset({S.TASK_STATE_FAILED, S.TASK_STATE_REJECTED, S.TASK_STATE_ORPHANED})
STATE_NAMES = {v: k.removeprefix("TASK_STATE_").lower() for k, v in S.items()}


def is_terminal(task: pb.Task) -> bool:
    return task.status.state in TERMINAL


def is_runnable(task: pb.Task) -> bool:
    """The orchestrator still wants it to run (swarmkit: DesiredState <= COMPLETE; a job's task is desired COMPLETE,
    a service's RUNNING)."""
    return task.desired_state <= S.TASK_STATE_COMPLETE


def task_name(service_name: str, slot: int, node_id: str, task_id: str) -> str:
    """swarmkit's naming: <service>.<slot>.<id> for replicated tasks, <service>.<node>.<id> for global ones."""
    return f"{service_name}.{slot if slot else node_id}.{task_id}"


def new_task(service: pb.Service, task_id: str, now_ns: int, slot: int = 0, node_id: str = "") -> pb.Task:
    t = pb.Task(id=task_id, service_id=service.id, slot=slot, node_id=node_id,
                desired_state=S.TASK_STATE_RUNNING, spec_version=service.meta.version.index)
    t.spec.CopyFrom(service.spec.task)
    t.annotations.name = task_name(service.spec.annotations.name, slot, node_id, task_id)
    t.endpoint.spec.CopyFrom(service.spec.endpoint)
    t.status.state = S.TASK_STATE_NEW
    t.status.message = "created"
    t.status.timestamp.FromNanoseconds(now_ns)
    t.meta.created_at.FromNanoseconds(now_ns)  # the store keeps a given created_at: updates compare against it
    return t


_KEEP_EMPTY = frozenset({"google.protobuf.Duration", "google.protobuf.Timestamp", "shoal.v1.GlobalService",
                         "shoal.v1.ReplicatedService", "shoal.v1.GlobalJob", "shoal.v1.ReplicatedJob"})  # the modes


def canonical(msg: Any) -> Any:
    """Clears sub-messages that carry nothing (an empty RestartPolicy is no RestartPolicy), in place, so that a spec
    sent back unchanged (docker's `service scale` re-sends the whole spec) compares equal to the stored one.
    Durations stay: a present zero delay differs from the default. Returns msg."""
    for fd, value in msg.ListFields():
        if fd.type != fd.TYPE_MESSAGE or fd.message_type.full_name in _KEEP_EMPTY:
            continue
        if fd.is_repeated:
            if not fd.message_type.GetOptions().map_entry:
                for item in value:
                    canonical(item)
            continue
        canonical(value)
        if value.ByteSize() == 0:
            msg.ClearField(fd.name)
    return msg


def same_spec(a: pb.TaskSpec, b: pb.TaskSpec) -> bool:
    return a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)


def is_dirty(service: pb.Service, task: pb.Task, node: pb.Node | None = None) -> bool:
    """The task was made from another spec than the service's current one (a rolling update replaces it). As
    swarmkit's IsTaskDirty, a task whose spec differs only in its placement (constraints, preferences, max replicas)
    is not dirty while its node meets the new constraints: a new preference or a looser constraint does not stop
    tasks that may stay where they are. Without the node (or a node that no longer meets them) it is."""
    if service.spec.endpoint.SerializeToString(deterministic=True) != task.endpoint.spec.SerializeToString(
            deterministic=True):
        return True
    if same_spec(service.spec.task, task.spec):
        return False
    return node is None or not _only_placement_differs(service.spec.task, task.spec) or not _meets_constraints(
        node, service.spec.task.placement.constraints)


def _only_placement_differs(current: pb.TaskSpec, old: pb.TaskSpec) -> bool:
    with_old_placement = pb.TaskSpec()
    with_old_placement.CopyFrom(current)
    if old.HasField("placement"):
        with_old_placement.placement.CopyFrom(old.placement)
    else:  # an empty placement set is not an absent one to SerializeToString
        with_old_placement.ClearField("placement")
    return same_spec(with_old_placement, old)


def _meets_constraints(node: pb.Node, exprs: Iterable[str]) -> bool:
    try:
        return matches(node, parse_all(list(exprs)))
    except InvalidParameter:  # checked at create and update; a stored one that no longer parses moves the task
        return False


def by_slot(tasks: Iterable[pb.Task]) -> dict[int, list[pb.Task]]:
    out: dict[int, list[pb.Task]] = {}
    for t in tasks:
        out.setdefault(t.slot, []).append(t)
    return out


def newest(tasks: list[pb.Task]) -> pb.Task:
    """The slot's latest task: the last created (id breaks ties so the choice is deterministic)."""
    return max(tasks, key=lambda t: (t.meta.created_at.ToNanoseconds(), t.status.timestamp.ToNanoseconds(), t.id))
