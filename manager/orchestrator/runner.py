"""The orchestrator's shell: a leader-only component (manager/node.py starts it with leadership) that watches the
store for services, tasks and nodes, runs the pure cores (replicated.py, global_.py, update.py, jobs.py) for each
service touched and writes their plans, at most MAX_CHANGES objects per proposal (re-running until nothing is left)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from common.aiowait import LeadingWindow
from manager import testhooks, timing
from manager.controlapi import new_id
from manager.store.errors import StoreError
from proto import objects_pb2 as pb

from .global_ import reconcile_global
from .jobs import reconcile_global_job, reconcile_replicated_job
from .plan import Plan, wait_or_timeout
from .replicated import reconcile_replicated
from .tasks import S, TERMINAL
from .update import ROLLING, plan_update

log = logging.getLogger(__name__)
MAX_CHANGES = 190  # under the store's 200 actions per transaction
DEBOUNCE_S = 0.02  # at most one pass per window while events come (a node's tasks, status reports): LeadingWindow
IDLE_S = 1.0


def plan_service(service: pb.Service, tasks: list[pb.Task], nodes: dict[str, pb.Node], now_ns: int,
                 make_id: Callable[[], str] = new_id) -> Plan:
    """Everything one pass does for one service: reconcile (scale, restarts, failed nodes), then the update (a job
    has none: each change of its spec is a new run, which its core starts)."""
    mode = service.spec.WhichOneof("mode")
    if mode == "replicated_job":
        return reconcile_replicated_job(service, tasks, nodes, now_ns, make_id, max_create=MAX_CHANGES)
    if mode == "global_job":
        return reconcile_global_job(service, tasks, nodes, now_ns, make_id)
    if mode == "global":
        plan = reconcile_global(service, tasks, nodes, now_ns, make_id)
    else:
        plan = reconcile_replicated(service, tasks, nodes, now_ns, make_id, max_create=MAX_CHANGES)
    touched = {t.id for t in plan.update}
    plan.merge(plan_update(service, tasks, now_ns, make_id, touched, nodes))
    return plan


def apply_plan(tx: Any, plan: Plan, limit: int = MAX_CHANGES) -> int:
    """Writes up to `limit` of the plan's changes in tx; returns how many it wrote."""
    n = 0
    if plan.service is not None:
        tx.update("service", plan.service)
        n += 1
    for t in plan.update:
        if n >= limit:
            return n
        tx.update("task", t)
        n += 1
    for t in plan.create:
        if n >= limit:
            return n
        tx.create("task", t)
        n += 1
    return n


class Orchestrator:
    """Leader component: start() on becoming leader reconciles every service, then follows the store."""

    name = "orchestrator"

    def __init__(self, raft: Any, clock: Callable[[], float] = time.time) -> None:
        self.raft = raft
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._dirty: set[str] = set()
        self._wake: asyncio.Event = asyncio.Event()
        self._timers: dict[str, int] = {}  # service id -> when its plan asked to run again (ns)
        self._window = LeadingWindow(DEBOUNCE_S)
        self.passes = 0  # proposals written

    async def start(self) -> None:
        # the view and the watch with no await between: nothing committed in between is missed
        self._dirty = {s.id for s in self.raft.store.view().list("service")}
        watch = self.raft.store.watch({"service", "task", "node"})
        self._wake = asyncio.Event()
        self._wake.set()
        self._task = asyncio.create_task(self._run(watch), name="orchestrator")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, watch: Any) -> None:
        follower = asyncio.create_task(self._follow(watch), name="orchestrator-watch")
        try:
            while True:
                timeout = IDLE_S
                if self._timers:
                    timeout = min(timeout, max(0.0, min(self._timers.values()) / 1e9 - self.clock()))
                await wait_or_timeout(self._wake, timeout)
                self._wake.clear()
                await self._window.settle()
                now = int(self.clock() * 1e9)
                due = {sid for sid, at in self._timers.items() if at <= now}
                for sid in due:
                    self._timers.pop(sid, None)
                todo, self._dirty = self._dirty | due, set()
                for sid in sorted(todo):
                    try:
                        await self._pass(sid)
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:  # no quorum, a conflicting write: try again on the next pass
                        log.info("orchestrator: service %s: %s", sid, e)
                        self._dirty.add(sid)
                        await asyncio.sleep(0.2)
        finally:
            follower.cancel()
            watch.close()

    async def _follow(self, watch: Any) -> None:
        try:
            async for ev in watch:
                obj = ev.object
                if ev.kind == "service":
                    self._dirty.add(obj.id)
                elif ev.kind == "task":
                    if not obj.service_id or live_progress(ev, self.raft.store.view()):
                        continue  # nothing to plan: no pass (and no wake) for an agent's report
                    self._dirty.add(obj.service_id)
                else:  # a node changed (down, drain, labels, new): every service may care
                    self._dirty |= {s.id for s in self.raft.store.view().list("service")}
                self._wake.set()
        except StoreError as e:  # fell behind or the store was replaced: reconcile everything
            log.info("orchestrator: watch ended (%s): full pass", e)
            self._dirty |= {s.id for s in self.raft.store.view().list("service")}
            self._wake.set()
            self._task_restart_watch()

    def _task_restart_watch(self) -> None:
        async def again() -> None:
            await self._follow(self.raft.store.watch({"service", "task", "node"}))
        asyncio.get_running_loop().create_task(again(), name="orchestrator-rewatch")

    async def _pass(self, service_id: str) -> None:
        """One service until its plan is written out (several proposals when it is big)."""
        span = timing.Span(f"orchestrator {service_id[:12]}")
        try:
            await self._write_out(service_id, span)
        finally:
            span.end()

    async def _write_out(self, service_id: str, span: timing.Span) -> None:
        for _ in range(1000):
            now = int(self.clock() * 1e9)

            def run(tx: Any) -> tuple[int, int | None]:
                service = tx.get("service", service_id)
                tasks = [t for t in tx.list("task") if t.service_id == service_id]
                if service is not None and testhooks.unmanaged(service):
                    return 0, None  # written by the executor's lab tests through the test hook: theirs alone
                if service is None:
                    return reap(tx, tasks, {n.id for n in tx.list("node")}), None
                nodes = {n.id: n for n in tx.list("node")}
                plan = plan_service(service, tasks, nodes, now)
                written = apply_plan(tx, plan)
                written += reap(tx, tasks, set(nodes), MAX_CHANGES - written)
                touched = {t.id for t in plan.update}
                for t in history_to_prune(tasks, history_keep(service, retention(tx)))[:max(0, MAX_CHANGES - written)]:
                    if t.id not in touched and tx.get("task", t.id) is not None:
                        tx.remove("task", t.id)
                        written += 1
                return written, plan.wake_at_ns

            _data, (written, wake) = self.raft.store.prepare(run, "")  # a dry run: anything to write?
            if wake is not None:
                self._timers[service_id] = wake
            if written == 0:
                return
            span.plan_done()
            started = time.monotonic()
            await self.raft.propose(run)
            span.proposed(started, written)
            self.passes += 1


def live_progress(ev: Any, view: Any) -> bool:
    """A task update that is only an agent's progress between live states (new ... running: nothing ended) with the
    same desired state and node, for a service not in a rolling update: no core plans anything from it (restarts look
    at ended tasks, the update monitor at running ones only while rolling). Every status batch is such updates: without
    this filter each one cost a full pass over the service's tasks on the leader."""
    old, new = ev.old, ev.object
    if ev.action != "update" or old is None:
        return False
    if old.status.state > S.TASK_STATE_RUNNING or new.status.state > S.TASK_STATE_RUNNING:
        return False
    if old.desired_state != new.desired_state or old.node_id != new.node_id:
        return False
    service = view.get("service", new.service_id)
    return service is not None and service.update_status.state not in ROLLING


def reap(tx: Any, tasks: list[pb.Task], node_ids: set[str], limit: int = MAX_CHANGES) -> int:
    """Deletes tasks the orchestrator removed (desired REMOVE: scaled away, service removed) once nothing runs them:
    finished, never assigned, or their node is gone. A removed service's other tasks are marked REMOVE first."""
    n = 0
    service_gone = bool(tasks) and tx.get("service", tasks[0].service_id) is None
    for t in tasks:
        if n >= limit:
            break
        if t.desired_state < S.TASK_STATE_REMOVE:
            if service_gone:
                t.desired_state = S.TASK_STATE_REMOVE
                tx.update("task", t)
                n += 1
            continue
        if t.status.state in TERMINAL or not t.node_id or t.node_id not in node_ids:
            tx.remove("task", t.id)
            n += 1
    return n


DEFAULT_RETENTION = 5  # swarm's default task history retention limit


def retention(tx: Any) -> int:
    clusters = tx.list("cluster")
    limit = clusters[0].spec.orchestration.task_history_retention_limit if clusters else DEFAULT_RETENTION
    return max(0, limit)


def history_keep(service: pb.Service, limit: int) -> int:
    """Finished tasks to keep per slot: the retention limit, or the restart policy's max attempts if more (restart.py
    counts them from the slot's finished tasks; swarmkit keeps that count in memory, apart from the history)."""
    return max(limit, service.spec.task.restart.max_attempts)


def history_to_prune(tasks: list[pb.Task], keep: int) -> list[pb.Task]:
    """Finished tasks the orchestrator stopped, beyond the newest `keep` per slot (per node for global tasks):
    swarm's task history retention, so `service ps` shows a few old tasks and the store does not grow forever."""
    groups: dict[tuple[int, str], list[pb.Task]] = {}
    for t in tasks:
        if t.desired_state >= S.TASK_STATE_SHUTDOWN and t.status.state in TERMINAL:
            groups.setdefault((t.slot, "" if t.slot else t.node_id), []).append(t)
    out: list[pb.Task] = []
    for group in groups.values():
        group.sort(key=lambda t: (t.meta.created_at.ToNanoseconds(), t.id), reverse=True)
        out += group[keep:]
    return sorted(out, key=lambda t: t.id)
