"""Rolling updates (swarmkit's orchestrator/update): replace tasks made from an older spec, `parallelism` at a
time (stop-first: the replacement is made at desired READY, prepared on its node but not started until the task
it replaces stopped, at most OLD_TASK_TIMEOUT_NS later; or start-first: the old task stops once its replacement
runs), each new task watched for
`monitor` once running, `delay` between batches; failures (a new task that ended within `monitor` of starting to
run, or before running) beyond `max_failure_ratio` of the slots pause, continue or roll back (service.previous_spec).
State is the store's (update_status, task states, status.started_at), so a new leader resumes."""

from __future__ import annotations

from collections.abc import Callable

from proto import objects_pb2 as pb

from .plan import Plan, set_desired
from .tasks import FAILURES, S, is_runnable, is_terminal, new_task
from .tasks import is_dirty as task_is_dirty

US = pb.UpdateStatus
FA = pb.UpdateConfig.FailureAction
DEFAULT_MONITOR_NS = 5_000_000_000  # swarmkit's DefaultUpdateConfig.Monitor
# swarmkit's defaultOldTaskTimeout: how long a stop-first replacement waits for the task it replaces to report that
# it stopped (its node may never answer again) before it starts anyway
OLD_TASK_TIMEOUT_NS = 60_000_000_000
ROLLING = (US.UPDATING, US.ROLLBACK_STARTED)
STOPPED = (US.PAUSED, US.ROLLBACK_PAUSED)


def key_of(t: pb.Task) -> str:
    return str(t.slot) if t.slot else t.node_id


def config(service: pb.Service) -> pb.UpdateConfig:
    rolling_back = service.update_status.state == US.ROLLBACK_STARTED
    field = "rollback" if rolling_back else "update"
    if service.spec.HasField(field):
        return getattr(service.spec, field)
    return pb.UpdateConfig(parallelism=1)


def monitor_ns(cfg: pb.UpdateConfig) -> int:
    return cfg.monitor.ToNanoseconds() if cfg.HasField("monitor") else DEFAULT_MONITOR_NS


def status_to_store(cur: pb.TaskStatus | None, new: pb.TaskStatus) -> pb.TaskStatus:
    """The status to store when an agent's report `new` replaces `cur`: `new` with started_at, the time the task
    first reported RUNNING (kept from `cur`; new's own timestamp when it is that first RUNNING report). The monitor
    below reads it: swarmkit's updater keeps it in memory, here it lives in the store so that a new leader has it."""
    if cur is not None and cur.HasField("started_at"):
        since = cur.started_at
    elif new.state == S.TASK_STATE_RUNNING and new.HasField("timestamp") and not new.HasField("started_at"):
        since = new.timestamp
    else:
        return new
    out = pb.TaskStatus()
    out.CopyFrom(new)
    out.started_at.CopyFrom(since)
    return out


def running_since(t: pb.Task) -> int:
    """When the task started running (its status time if it was never seen running: a report without a start)."""
    return (t.status.started_at if t.status.HasField("started_at") else t.status.timestamp).ToNanoseconds()


def failed_within_monitor(t: pb.Task, monitor: int) -> bool:
    """swarmkit's updater: a new task's end counts against the update only when it came within the monitor period
    after the task started running, or before it ran at all; a task that ran longer is the restart policy's."""
    if not t.status.HasField("started_at"):
        return True
    return t.status.timestamp.ToNanoseconds() - t.status.started_at.ToNanoseconds() <= monitor


def _status(service: pb.Service, state: int, now_ns: int, message: str, done: bool = False) -> pb.Service:
    s = pb.Service()
    s.CopyFrom(service)
    if state in ROLLING and service.update_status.state not in ROLLING:
        s.update_status.started_at.FromNanoseconds(now_ns)
    s.update_status.state = state
    s.update_status.message = message
    if done:
        s.update_status.completed_at.FromNanoseconds(now_ns)
    return s


def failure_action(service: pb.Service, failed: pb.Task, now_ns: int) -> pb.Service | None:
    """The service after a new task failed during an update; None to go on (failure action continue)."""
    cfg = config(service)
    if cfg.failure_action == FA.CONTINUE:
        return None
    if service.update_status.state == US.ROLLBACK_STARTED:
        return _status(service, US.ROLLBACK_PAUSED, now_ns, f"rollback paused due to failure or early termination of task {failed.id}")
    if cfg.failure_action == FA.ROLLBACK and service.HasField("previous_spec"):
        s = _status(service, US.ROLLBACK_STARTED, now_ns, f"update rolled back due to failure or early termination of task {failed.id}")
        s.spec.CopyFrom(service.previous_spec)
        s.ClearField("previous_spec")  # as swarmkit's rollbackUpdate: the failed spec is not kept to go back to
        s.update_status.started_at.FromNanoseconds(now_ns)
        return s
    return _status(service, US.PAUSED, now_ns, f"update paused due to failure or early termination of task {failed.id}")


def plan_update(service: pb.Service, tasks: list[pb.Task], now_ns: int, new_id: Callable[[], str],
                touched: set[str], nodes: dict[str, pb.Node] | None = None) -> Plan:
    """The next step of the service's rolling update. `touched`: task ids the reconcile plan already changes; `nodes`:
    the tasks' nodes, so a task whose spec changed only in placement stays where its node still meets it."""
    plan = Plan()
    nodes = nodes or {}

    def is_dirty(t: pb.Task) -> bool:
        return task_is_dirty(service, t, nodes.get(t.node_id))
    # before the paused check: a replacement already made starts once its slot is free, paused update or not (as
    # swarmkit's delayed start, which outlives the updater that asked for it)
    promoted = start_held(tasks, now_ns, touched, plan)
    touched = touched | promoted
    state = service.update_status.state
    if state in STOPPED:
        return plan
    live = [t for t in tasks if is_runnable(t) and t.id not in touched]
    dirty = [t for t in live if is_dirty(t) and not is_terminal(t)]
    started = service.update_status.started_at.ToNanoseconds() if state in ROLLING else now_ns
    fresh = [t for t in tasks if not is_dirty(t) and t.meta.created_at.ToNanoseconds() >= started
             and t.status.timestamp.ToNanoseconds() >= started] if state in ROLLING else []
    cfg = config(service)
    monitor = monitor_ns(cfg)
    failures = [t for t in fresh if failed_within_monitor(t, monitor) and (
        t.status.state in FAILURES or (t.status.state == S.TASK_STATE_COMPLETE and is_runnable(t)))]
    if failures:
        # swarmkit: the failure action once more than max_failure_ratio of the slots being updated failed
        slots = len({key_of(t) for t in live} | {key_of(t) for t in failures})
        if len(failures) / slots > cfg.max_failure_ratio:
            last = max(failures, key=lambda t: (t.status.timestamp.ToNanoseconds(), t.id))
            after = failure_action(service, last, now_ns)
            if after is not None:
                plan.service = after
                return plan
    unhealthy = [t for t in fresh if is_runnable(t) and not is_terminal(t) and not (
        t.status.state == S.TASK_STATE_RUNNING and running_since(t) + monitor <= now_ns)]
    for t in unhealthy:
        if t.status.state == S.TASK_STATE_RUNNING:
            plan.wake(running_since(t) + monitor)
    # a task of the old spec that ended and waits for its restart (restart.py; e.g. the failed task a rollback
    # undoes) leaves its slot on the old spec: the update (or rollback) is not complete until its replacement ran
    # for the monitor period, nor while this pass's reconcile replaces tasks (`touched`: their replacements are not
    # in `tasks` yet). A crash-looping task of the new spec does not hold it (failure action continue).
    waiting = touched or any(is_terminal(t) and is_dirty(t) for t in live)
    if not dirty:
        if state in ROLLING and not unhealthy and not waiting:
            done = US.COMPLETED if state == US.UPDATING else US.ROLLBACK_COMPLETED
            plan.service = _status(service, done, now_ns, "update completed" if done == US.COMPLETED else "rollback completed", done=True)
        return plan
    if state not in ROLLING:
        plan.service = _status(service, US.UPDATING, now_ns, "update in progress")
        started = now_ns
    # start-first (and any slot that has one): a slot whose new task exists keeps its old task until the new one
    # runs, then the old one stops; such a slot is not updated again
    replaced = {key_of(t): t for t in live if not is_dirty(t) and not is_terminal(t)}
    for t in dirty:
        new = replaced.get(key_of(t))
        if new is not None and new.status.state == S.TASK_STATE_RUNNING:
            plan.update.append(set_desired(t, S.TASK_STATE_SHUTDOWN))
    dirty = [t for t in dirty if key_of(t) not in replaced]
    if unhealthy or not dirty:
        return plan  # the batch in flight must be healthy first
    healthy_at = max((running_since(t) + monitor for t in fresh if is_runnable(t)), default=0)
    delay = cfg.delay.ToNanoseconds()
    if healthy_at and delay and healthy_at + delay > now_ns:
        plan.wake(healthy_at + delay)
        return plan
    width = cfg.parallelism or len(dirty)
    start_first = cfg.order == pb.UpdateConfig.Order.START_FIRST
    for t in sorted(dirty, key=lambda t: (t.slot, t.node_id, t.id))[:width]:
        new = new_task(service if plan.service is None else plan.service, new_id(), now_ns,
                       slot=t.slot, node_id=t.node_id if not t.slot else "")
        if not start_first:
            # stop-first: the old task is told to stop as its replacement is made, and the replacement only gets
            # ready (start_held starts it once the old one stopped): the two never run at once, so a host-mode port,
            # a volume or a license the old one holds is free when the new one starts
            plan.update.append(set_desired(t, S.TASK_STATE_SHUTDOWN))
            new.desired_state = S.TASK_STATE_READY
        plan.create.append(new)
    return plan


def _holds_its_slot(t: pb.Task) -> bool:
    """A task told to stop that may still run on its node: placed and not reported finished."""
    return t.desired_state > S.TASK_STATE_RUNNING and bool(t.node_id) and not is_terminal(t)


def start_held(tasks: list[pb.Task], now_ns: int, touched: set[str], plan: Plan) -> set[str]:
    """Stop-first replacements (desired READY) whose slot is free (no task there told to stop still runs), or made
    OLD_TASK_TIMEOUT_NS ago, are set to run (into plan); the others wake the plan at their timeout. Returns the ids
    set to run."""
    held = [t for t in tasks if t.desired_state == S.TASK_STATE_READY and not is_terminal(t) and t.id not in touched]
    if not held:
        return set()  # every pass of every service comes here: nothing to group without a held replacement
    stopping = {key_of(o) for o in tasks if _holds_its_slot(o)}
    out: set[str] = set()
    for t in held:
        deadline = t.meta.created_at.ToNanoseconds() + OLD_TASK_TIMEOUT_NS
        if now_ns >= deadline or key_of(t) not in stopping:
            plan.update.append(set_desired(t, S.TASK_STATE_RUNNING))
            out.add(t.id)
        else:
            plan.wake(deadline)
    return out
