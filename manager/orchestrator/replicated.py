"""The replicated orchestrator's core (swarmkit's orchestrator/replicated): keep `replicas` slots, each with one
task meant to run; scale by slot (new slots take the lowest free numbers, scale-down removes the highest), replace
tasks of failed or drained nodes and tasks that ended (restart.py). Pure: runner.py feeds it and writes the plan."""

from __future__ import annotations

from collections.abc import Callable

from proto import objects_pb2 as pb

from . import restart
from .nodes import node_failed
from .plan import Plan, set_desired
from .tasks import S, by_slot, is_runnable, is_terminal, new_task, newest


def slot_status(slot_tasks: list[pb.Task]) -> str:
    """live: a task is meant to run; held: it ended and the restart policy keeps it down (the slot still counts
    as a replica, as in swarm); free: scaled away (every task REMOVE)."""
    if any(is_runnable(t) for t in slot_tasks):
        return "live"
    if newest(slot_tasks).desired_state == S.TASK_STATE_SHUTDOWN:
        return "held"
    return "free"


def reconcile_replicated(service: pb.Service, tasks: list[pb.Task], nodes: dict[str, pb.Node], now_ns: int,
                         new_id: Callable[[], str], max_create: int | None = None) -> Plan:
    """max_create: make at most that many new slots in this plan (one store transaction's worth; the next pass
    makes the rest) instead of building thousands of tasks only to write the first 190."""
    plan = Plan()
    slots = by_slot(tasks)
    occupied: set[int] = set()
    for slot, history in sorted(slots.items()):
        status = slot_status(history)
        if status == "free":
            continue
        occupied.add(slot)
        if status == "held":
            continue
        for t in history:
            if not is_runnable(t):
                continue
            failed_node = bool(t.node_id) and node_failed(nodes.get(t.node_id))
            if not failed_node and not is_terminal(t):
                continue
            d = restart.decide(service, t, history, now_ns, node_failed=failed_node)
            if d.restart and d.at_ns > now_ns:
                plan.wake(d.at_ns)
                continue
            plan.update.append(set_desired(t, S.TASK_STATE_SHUTDOWN))
            if d.restart:
                plan.create.append(new_task(service, new_id(), now_ns, slot=slot))
    want = service.spec.replicated.replicas
    if len(occupied) < want:
        missing = want - len(occupied)
        if max_create is not None:
            missing = min(missing, max(0, max_create - len(plan.create)))
        n, free = 1, []
        while len(free) < missing:
            if n not in occupied:
                free.append(n)
            n += 1
        plan.create += [new_task(service, new_id(), now_ns, slot=s) for s in free]
    elif len(occupied) > want:
        shut = {t.id for t in plan.update}
        for slot in sorted(occupied)[want:]:
            for t in slots[slot]:
                if t.desired_state != S.TASK_STATE_REMOVE:
                    if t.id in shut:  # replaced above: remove instead, and drop its replacement
                        plan.update = [u for u in plan.update if u.id != t.id]
                    plan.update.append(set_desired(t, S.TASK_STATE_REMOVE))
            plan.create = [c for c in plan.create if c.slot != slot]
    return plan
