"""Which nodes may keep or receive a service's tasks, as the orchestrators see it (the scheduler has finer filters).
Pure; used by replicated.py (replace tasks of failed or drained nodes) and global_.py (one task per eligible node)."""

from __future__ import annotations

from proto import objects_pb2 as pb

from manager.scheduler.constraints import Constraint, matches

NodeState = pb.NodeStatus.State
Availability = pb.NodeSpec.Availability


def node_failed(node: pb.Node | None) -> bool:
    """Its tasks must be replaced: the node is gone, declared down, or drained."""
    return node is None or node.status.state == NodeState.DOWN or node.spec.availability == Availability.DRAIN


def global_eligible(node: pb.Node, constraints: list[Constraint]) -> bool:
    """A global service runs one task here: not down, active (pause keeps tasks, gets no new ones), constraints met."""
    return (node.status.state != NodeState.DOWN and node.spec.availability == Availability.ACTIVE
            and matches(node, constraints))


def global_keeps(node: pb.Node | None, constraints: list[Constraint]) -> bool:
    return node is not None and not node_failed(node) and matches(node, constraints)
