"""The scheduler's pure core: place a batch of tasks on nodes. Filters (filters.py) decide where a task may go;
among those, spread: fewest tasks of the same service, then fewest tasks in total, then node id. Assignments made
earlier in the batch count for later ones. No I/O: runner.py gives it the store's state and writes the result."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errdefs import InvalidParameter
from manager.allocator.core import is_attachment_task
from proto import objects_pb2 as pb

from .constraints import Constraint, parse_all
from .filters import explain, fits
from .nodeinfo import NodeInfo, occupies_node

S = pb.TaskState


def skips_allocator(task: pb.Task) -> bool:
    """The allocator (manager/allocator) moves every task NEW -> PENDING, network-less ones too: none skips it."""
    return False


def schedulable(task: pb.Task) -> bool:
    """Waits for a node: allocated (PENDING, or NEW skipping the allocator) and still meant to run."""
    if task.desired_state > S.TASK_STATE_RUNNING:
        return False
    if is_attachment_task(task):  # a container's AttachNetwork address (wire11): held PENDING on its node, never
        return False  # sent to the node's task executor (it has no container spec to run)
    return task.status.state == S.TASK_STATE_PENDING or (task.status.state == S.TASK_STATE_NEW and skips_allocator(task))


@dataclass(slots=True)
class Decisions:
    assigned: dict[str, str] = field(default_factory=dict)  # task id -> node id
    unplaced: dict[str, str] = field(default_factory=dict)  # task id -> why ("no suitable node (...)")


def node_infos(nodes: list[pb.Node], tasks: list[pb.Task]) -> dict[str, NodeInfo]:
    """What each node holds already. A task still waiting for placement is not counted, even when it names its node
    (a global service's): schedule() adds it once it places it. Counted, a global task with a host-mode port found
    that port taken by itself on every node, and its reservations counted twice (swarmkit's scheduler keeps such
    preassigned tasks out of the node's list the same way)."""
    infos = {n.id: NodeInfo(n) for n in nodes}
    for t in tasks:
        if occupies_node(t) and t.node_id in infos and not schedulable(t):
            infos[t.node_id].add(t)
    return infos


def _constraints(task: pb.Task) -> list[Constraint]:
    try:
        return parse_all(list(task.spec.placement.constraints))
    except InvalidParameter:
        return [Constraint("node.id", "==", "")]  # refused at create; a stored bad one places nowhere


def schedule(nodes: list[pb.Node], tasks: list[pb.Task], batch: list[pb.Task]) -> Decisions:
    """Where each task of `batch` goes. `tasks` is every task in the store (for the nodes' load);
    a task with a node_id already (global services) is checked against that node only."""
    infos = node_infos(nodes, tasks)
    out = Decisions()
    for task in sorted(batch, key=lambda t: (t.service_id, t.slot, t.node_id, t.id)):
        constraints = _constraints(task)
        failed: dict[str, int] = {}
        if task.node_id:
            ni = infos.get(task.node_id)
            candidates = [ni] if ni is not None and fits(task, constraints, ni, failed) else []
        else:
            candidates = [ni for ni in infos.values() if fits(task, constraints, ni, failed)]
        if not candidates:
            out.unplaced[task.id] = explain(failed)
            continue
        best = min(candidates, key=lambda ni: (ni.tasks_by_service.get(task.service_id, 0), ni.total, ni.id))
        placed = pb.Task()
        placed.CopyFrom(task)
        placed.node_id = best.id
        best.add(placed)
        out.assigned[task.id] = best.id
    return out
