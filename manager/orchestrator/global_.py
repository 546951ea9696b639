"""The global orchestrator's core (swarmkit's orchestrator/global): one task per eligible node (not down, active,
constraints met); tasks leave nodes that are drained, down, removed or no longer match; ended tasks restart per
policy. Pure: runner.py feeds it nodes and tasks and writes the plan."""

from __future__ import annotations

from collections.abc import Callable

from proto import objects_pb2 as pb

from manager.scheduler.constraints import parse_all

from . import restart
from .nodes import global_eligible, global_keeps
from .plan import Plan, set_desired
from .tasks import S, is_runnable, is_terminal, new_task, newest


def reconcile_global(service: pb.Service, tasks: list[pb.Task], nodes: dict[str, pb.Node], now_ns: int,
                     new_id: Callable[[], str]) -> Plan:
    plan = Plan()
    constraints = parse_all(service.spec.task.placement.constraints)
    per_node: dict[str, list[pb.Task]] = {}
    for t in tasks:
        per_node.setdefault(t.node_id, []).append(t)
    for node_id, history in sorted(per_node.items()):
        node = nodes.get(node_id)
        keep = global_keeps(node, constraints)
        for t in history:
            if not is_runnable(t):
                continue
            if not keep:
                plan.update.append(set_desired(t, S.TASK_STATE_SHUTDOWN))
                continue
            if not is_terminal(t):
                continue
            d = restart.decide(service, t, history, now_ns)
            if d.restart and d.at_ns > now_ns:
                plan.wake(d.at_ns)
                continue
            plan.update.append(set_desired(t, S.TASK_STATE_SHUTDOWN))
            if d.restart:
                plan.create.append(new_task(service, new_id(), now_ns, node_id=node_id))
    for node_id, node in sorted(nodes.items()):
        if not global_eligible(node, constraints):
            continue
        history = per_node.get(node_id, [])
        if any(is_runnable(t) for t in history):
            continue
        if history and newest(history).desired_state == S.TASK_STATE_SHUTDOWN and not _left_and_back(history):
            continue  # ended and held by the restart policy (or being replaced above)
        plan.create.append(new_task(service, new_id(), now_ns, node_id=node_id))
    return plan


def _left_and_back(history: list[pb.Task]) -> bool:
    """The newest task was shut down because the node left (drain/down), not because it ended on its own."""
    t = newest(history)
    return not is_terminal(t) or t.status.state == S.TASK_STATE_SHUTDOWN
