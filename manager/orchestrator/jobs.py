"""The job orchestrators' cores (swarmkit's orchestrator/jobs): tasks run to completion, per run (the service's
job_status.job_iteration); pure like replicated.py and global_.py, fed and written out by runner.py.

Replicated job: slots 0 .. TotalCompletions-1, at most MaxConcurrent of them active (a task meant to run that has not
completed), until every slot holds a COMPLETE task. Global job: one task per eligible node, a node that becomes
eligible later gets one too. A completed task is never replaced; an ended one is restarted per the restart policy
(restart.py, `any` acting as `on-failure`); a slot or node whose task the policy keeps down holds its place and the run
does not complete. Tasks of an earlier run are removed (replicated: those not yet ended, as swarmkit)."""

from __future__ import annotations

from collections.abc import Callable

from proto import objects_pb2 as pb

from manager.scheduler.constraints import parse_all

from . import restart
from .nodes import global_eligible, global_keeps, node_failed
from .plan import Plan, set_desired
from .tasks import S, by_slot, is_runnable, is_terminal, new_task, newest

JOB_MODES = frozenset({"replicated_job", "global_job"})


def is_job(service: pb.Service) -> bool:
    return service.spec.WhichOneof("mode") in JOB_MODES


def iteration(service: pb.Service) -> int:
    return service.job_status.job_iteration.index


def of_run(task: pb.Task, run: int) -> bool:
    return task.HasField("job_iteration") and task.job_iteration.index == run


def new_job_task(service: pb.Service, task_id: str, now_ns: int, slot: int = 0, node_id: str = "") -> pb.Task:
    """A job's task: desired COMPLETE (swarmkit's), tagged with the current run."""
    t = new_task(service, task_id, now_ns, slot=slot, node_id=node_id)
    t.desired_state = S.TASK_STATE_COMPLETE
    t.job_iteration.index = iteration(service)
    return t


def _retire_earlier_runs(tasks: list[pb.Task], run: int, only_live: bool) -> list[pb.Task]:
    """Desired REMOVE for tasks of an earlier run (the reaper deletes them once ended). swarmkit's replicated job
    leaves the ended ones (its completed tasks stay listed), its global job removes them all."""
    out = []
    for t in tasks:
        if of_run(t, run) or t.desired_state == S.TASK_STATE_REMOVE:
            continue
        if only_live and t.status.state > S.TASK_STATE_RUNNING:
            continue
        out.append(set_desired(t, S.TASK_STATE_REMOVE))
    return out


def _held(history: list[pb.Task]) -> bool:
    """The restart policy kept this place down: its newest task ended on its own (not shut down by us for its node)
    and was not replaced."""
    t = newest(history)
    return not is_runnable(t) and is_terminal(t) and t.status.state != S.TASK_STATE_SHUTDOWN


def _restart_ended(service: pb.Service, history: list[pb.Task], nodes: dict[str, pb.Node], now_ns: int, plan: Plan,
                   replace: Callable[[], pb.Task]) -> str:
    """Handles the place's tasks that ended (or whose node failed) while meant to run. Returns "live" when a task of
    it is still meant to run afterwards, "held" when the restart policy keeps it down, "" otherwise."""
    live, held = False, False
    for t in history:
        if not is_runnable(t) or t.status.state == S.TASK_STATE_COMPLETE:
            continue
        failed_node = bool(t.node_id) and node_failed(nodes.get(t.node_id)) and not is_terminal(t)
        if not failed_node and not is_terminal(t):
            live = True
            continue
        d = restart.decide(service, t, history, now_ns, node_failed=failed_node)
        if d.restart and d.at_ns > now_ns:
            plan.wake(d.at_ns)
            live = True
            continue
        plan.update.append(set_desired(t, S.TASK_STATE_SHUTDOWN))
        if d.restart:
            plan.create.append(replace())
            live = True
        else:
            held = True
    return "live" if live else "held" if held or _held(history) else ""


def reconcile_replicated_job(service: pb.Service, tasks: list[pb.Task], nodes: dict[str, pb.Node], now_ns: int,
                             new_id: Callable[[], str], max_create: int | None = None) -> Plan:
    run = iteration(service)
    job = service.spec.replicated_job
    plan = Plan(update=_retire_earlier_runs(tasks, run, only_live=True))
    completed = active = held = 0
    occupied: set[int] = set()
    for slot, history in sorted(by_slot(t for t in tasks if of_run(t, run)).items()):
        occupied.add(slot)
        if any(t.status.state == S.TASK_STATE_COMPLETE for t in history):
            completed += 1
            continue
        place = _restart_ended(service, history, nodes, now_ns, plan,
                               lambda s=slot: new_job_task(service, new_id(), now_ns, slot=s))  # type: ignore[misc]
        if place == "live":
            active += 1
        elif place == "held":
            held += 1
        else:  # shut down with its node and nothing replaced it (an earlier leader's pass): a free place again
            occupied.discard(slot)
    missing = min(job.max_concurrent - active, job.total_completions - completed - active - held)
    if max_create is not None:
        missing = min(missing, max_create - len(plan.create))
    free = (s for s in range(job.total_completions) if s not in occupied)
    for _ in range(max(0, missing)):
        plan.create.append(new_job_task(service, new_id(), now_ns, slot=next(free)))
    return plan


def reconcile_global_job(service: pb.Service, tasks: list[pb.Task], nodes: dict[str, pb.Node], now_ns: int,
                         new_id: Callable[[], str]) -> Plan:
    run = iteration(service)
    plan = Plan(update=_retire_earlier_runs(tasks, run, only_live=False))
    constraints = parse_all(service.spec.task.placement.constraints)
    per_node: dict[str, list[pb.Task]] = {}
    for t in tasks:
        if of_run(t, run):
            per_node.setdefault(t.node_id, []).append(t)
    placed: set[str] = set()  # nodes with a task of this run meant to run, completed, or held by the policy
    for node_id, history in sorted(per_node.items()):
        if any(t.status.state == S.TASK_STATE_COMPLETE for t in history):
            placed.add(node_id)
            continue
        if not global_keeps(nodes.get(node_id), constraints):
            plan.update += [set_desired(t, S.TASK_STATE_SHUTDOWN) for t in history
                            if is_runnable(t) and not is_terminal(t)]
            continue
        if _restart_ended(service, history, nodes, now_ns, plan,
                          lambda n=node_id: new_job_task(service, new_id(), now_ns, node_id=n)):  # type: ignore[misc]
            placed.add(node_id)
    for node_id, node in sorted(nodes.items()):
        if node_id not in placed and global_eligible(node, constraints):
            plan.create.append(new_job_task(service, new_id(), now_ns, node_id=node_id))
    return plan
