"""The scheduler's pure core: place a batch of tasks on nodes. Filters (filters.py) decide where a task may go;
the tasks of one service and spec version are placed as a group, split over the branches of its placement
preferences (preferences.py), and within a branch spread: fewest tasks of the same service, then fewest tasks in
total, then node id. Assignments made earlier in the batch count for later ones. No I/O: runner.py gives it the
store's state and writes the result."""

from __future__ import annotations

from dataclasses import dataclass, field

from common.errdefs import InvalidParameter
from manager.allocator.core import is_attachment_task
from proto import objects_pb2 as pb

from .constraints import Constraint, parse_all
from .filters import explain, fits
from .nodeinfo import NodeInfo, occupies_node
from .preferences import build, place, spread_descriptors

S = pb.TaskState


def skips_allocator(task: pb.Task) -> bool:
    """The allocator (manager/allocator) moves every task NEW -> PENDING, network-less ones too: none skips it."""
    return False


def schedulable(task: pb.Task) -> bool:
    """Waits for a node: allocated (PENDING, or NEW skipping the allocator) and still meant to run."""
    if task.desired_state > S.TASK_STATE_COMPLETE:  # a job's task is desired COMPLETE, a service's RUNNING
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
    for group in _groups(batch):
        if group[0].node_id:
            _place_preassigned(group[0], infos, out)
        else:
            _place_group(group, infos, out)
    return out


def _groups(batch: list[pb.Task]) -> list[list[pb.Task]]:
    """swarmkit's task groups: the tasks of one service and spec version waiting for a node are placed together
    (their preferences split them as a whole); a task with its node already (a global one's) alone. In the order
    of their first task (service, slot, node, id)."""
    out: list[list[pb.Task]] = []
    groups: dict[tuple[str, int], list[pb.Task]] = {}
    for task in sorted(batch, key=lambda t: (t.service_id, t.slot, t.node_id, t.id)):
        if task.node_id:
            out.append([task])
            continue
        key = (task.service_id, task.spec_version)
        if key not in groups:
            groups[key] = []
            out.append(groups[key])
        groups[key].append(task)
    return out


def _assign(task: pb.Task, ni: NodeInfo, out: Decisions) -> None:
    placed = pb.Task()
    placed.CopyFrom(task)
    placed.node_id = ni.id
    ni.add(placed)
    out.assigned[task.id] = ni.id


def _place_preassigned(task: pb.Task, infos: dict[str, NodeInfo], out: Decisions) -> None:
    failed: dict[str, int] = {}
    ni = infos.get(task.node_id)
    if ni is not None and fits(task, _constraints(task), ni, failed):
        _assign(task, ni, out)
    else:
        out.unplaced[task.id] = explain(failed)


def _place_group(group: list[pb.Task], infos: dict[str, NodeInfo], out: Decisions) -> None:
    """The group's tasks over the tree of its preferences (one spec version: the first task's stand for all); at a
    leaf, each task on the least loaded fitting node. What no branch could take says why no node fits."""
    first = group[0]
    constraints = _constraints(first)
    service_id = first.service_id
    done = 0

    def place_on(nodes: list[NodeInfo], n: int) -> int:
        nonlocal done
        placed = 0
        while placed < n and done < len(group):
            fitting = [ni for ni in nodes if fits(group[done], constraints, ni)]
            if not fitting:
                break
            _assign(group[done], min(fitting, key=lambda ni: (ni.tasks_by_service.get(service_id, 0), ni.total, ni.id)), out)
            placed, done = placed + 1, done + 1
        return placed

    place(build(infos.values(), service_id, spread_descriptors(first.spec.placement.preferences)), len(group), place_on)
    for task in group[done:]:
        failed: dict[str, int] = {}
        for ni in infos.values():
            fits(task, constraints, ni, failed)
        out.unplaced[task.id] = explain(failed)
