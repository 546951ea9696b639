"""The scheduler's filters (swarmkit's scheduler/filter.go): ready + active, placement constraints, resource
reservations, host-mode port conflicts, max replicas per node. Each says whether a node fits a task and, when
none fits, the words of swarm's "no suitable node (...)" explanation. Pure; core.py runs them in order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from proto import objects_pb2 as pb

from .constraints import Constraint, matches
from .nodeinfo import NodeInfo, host_ports


@dataclass(slots=True)
class Filter:
    name: str
    check: Callable[[pb.Task, list[Constraint], NodeInfo], bool]
    explain: Callable[[int], str]  # number of nodes that failed it -> swarm's words


def _plural(n: int) -> str:
    return f"{n} node" if n == 1 else f"{n} nodes"


def _ready(task: pb.Task, _c: list[Constraint], ni: NodeInfo) -> bool:
    n = ni.node
    return n.status.state == pb.NodeStatus.READY and n.spec.availability == pb.NodeSpec.ACTIVE


def _constraints(_t: pb.Task, constraints: list[Constraint], ni: NodeInfo) -> bool:
    return matches(ni.node, constraints)


def _resources(task: pb.Task, _c: list[Constraint], ni: NodeInfo) -> bool:
    r = task.spec.resources.reservations
    if r.nano_cpus > 0 and ni.free_cpu() < r.nano_cpus:
        return False
    return not (r.memory_bytes > 0 and ni.free_memory() < r.memory_bytes)


def _ports(task: pb.Task, _c: list[Constraint], ni: NodeInfo) -> bool:
    return not (host_ports(task) & ni.ports)


def _max_replicas(task: pb.Task, _c: list[Constraint], ni: NodeInfo) -> bool:
    limit = task.spec.placement.max_replicas
    return limit == 0 or ni.tasks_by_service.get(task.service_id, 0) < limit


FILTERS: tuple[Filter, ...] = (
    Filter("ready", _ready, lambda n: f"{_plural(n)} not available for new tasks"),
    Filter("constraints", _constraints, lambda n: f"scheduling constraints not satisfied on {_plural(n)}"),
    Filter("resources", _resources, lambda n: f"insufficient resources on {_plural(n)}"),
    Filter("ports", _ports, lambda n: f"host-mode port already in use on {_plural(n)}"),
    Filter("max-replicas", _max_replicas, lambda n: f"max replicas per node limit exceed on {_plural(n)}"),
)


def fits(task: pb.Task, constraints: list[Constraint], ni: NodeInfo, failed: dict[str, int] | None = None) -> bool:
    """Every filter passes; with `failed`, counts the first filter that refused the node."""
    for f in FILTERS:
        if not f.check(task, constraints, ni):
            if failed is not None:
                failed[f.name] = failed.get(f.name, 0) + 1
            return False
    return True


def explain(failed: dict[str, int]) -> str:
    """swarm's task error when no node fits: `no suitable node (reason on N nodes; ...)`."""
    if not failed:
        return "no suitable node"
    parts = [f.explain(failed[f.name]) for f in FILTERS if f.name in failed]
    return f"no suitable node ({'; '.join(parts)})"
