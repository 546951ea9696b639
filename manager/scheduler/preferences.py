"""Placement preferences (`--placement-pref spread=node.labels.zone`): swarmkit's decision tree (scheduler/nodeset.go
`tree`, scheduler.go `scheduleNTasksOnSubtree`). Pure; core.py builds a tree per task group and places at its leaves."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from proto import objects_pb2 as pb

from .constraints import ENGINE_LABELS, NODE_LABELS, label_value
from .nodeinfo import NodeInfo

# places up to n of the group's waiting tasks on some of these nodes; returns how many it placed
PlaceOn = Callable[[list[NodeInfo], int], int]


@dataclass(slots=True)
class Branch:
    """The nodes sharing the values of the preferences so far. `tasks` counts the service's tasks on all of them,
    fitting or not, those place() puts there included."""
    tasks: int = 0
    next: dict[str, Branch] = field(default_factory=dict)  # value of the next descriptor -> its nodes; empty at a leaf
    nodes: list[NodeInfo] = field(default_factory=list)  # a leaf's nodes


def spread_descriptors(preferences: Iterable[pb.PlacementPreference]) -> list[str]:
    """The descriptors swarmkit spreads over: `node.labels.NAME` and `engine.labels.NAME` (prefix in any case, NAME
    not empty). Any other (`node.hostname`, `node.labels.`) is accepted at create and spreads nothing, as in
    swarmkit, which skips it when it builds the tree."""
    out = []
    for p in preferences:
        d = p.spread.spread_descriptor if p.WhichOneof("preference") == "spread" else ""
        if any(d.lower().startswith(prefix) and len(d) > len(prefix) for prefix in (NODE_LABELS, ENGINE_LABELS)):
            out.append(d)
    return out


def build(infos: Iterable[NodeInfo], service_id: str, descriptors: list[str]) -> Branch:
    """Every node in the branch of its values, one level per descriptor; a node without the label is in the branch
    of "" (as is one whose label is empty)."""
    root = Branch()
    for ni in infos:
        count = ni.tasks_by_service.get(service_id, 0)
        branch = root
        for d in descriptors:
            branch.tasks += count
            branch = branch.next.setdefault(label_value(ni.node, d) or "", Branch())
        branch.tasks += count
        branch.nodes.append(ni)
    return root


def place(branch: Branch, n: int, place_on: PlaceOn) -> int:
    """Places up to n tasks under branch, evenly over its sub-branches counting the tasks they hold; returns how
    many it placed. swarmkit's rounds (scheduleNTasksOnSubtree): desired, remainder = divmod(tasks of the usable
    branches + tasks left, usable branches); a branch below desired is given the difference, plus one while the
    remainder lasts (a branch at desired just that one), a branch above it nothing; a branch that takes fewer than
    it was given has no fitting node left: it and its tasks leave the usable ones, and the next round splits what
    is left. Three choices where swarmkit's result is chance or an artefact: branches are visited fewest tasks
    first, then by value (swarmkit: Go's random map order); a round counts what earlier rounds placed (swarmkit's
    counts stay as they were built, so a later round may favour a branch that already took its share); no branch
    is given more than is left to place here (swarmkit's desired counts the tasks of branches above it, so a
    nested branch could take its siblings' share)."""
    if not branch.next:
        return place_on(branch.nodes, n)
    placed = 0
    usable = dict(branch.next)
    usable_tasks = branch.tasks
    giving = True
    while placed < n and usable and giving:
        desired, remainder = divmod(usable_tasks + n - placed, len(usable))
        giving = False
        for value, sub in sorted(usable.items(), key=lambda kv: (kv[1].tasks, kv[0])):
            if placed == n:
                break
            if sub.tasks < desired or (sub.tasks == desired and remainder > 0):
                giving = True
                given = min(desired - sub.tasks + (1 if remainder > 0 else 0), n - placed)
                got = place(sub, given, place_on)
                sub.tasks += got
                usable_tasks += got
                placed += got
                if got < given:
                    del usable[value]
                    usable_tasks -= sub.tasks
                elif remainder > 0:
                    remainder -= 1
    return placed
