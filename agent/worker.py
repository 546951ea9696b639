"""The worker (swarmkit's agent/worker.go + reporter): keeps the node's assignments (tasks, configs, networks) from the
dispatcher's stream, runs one TaskRunner (agent/taskexec.py) per task, and sends their status in batches.
Fed by the node's session (shoal/swarm/session.py); the executor it drives is the node's (shoal/swarm/executor.py)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from agent.taskexec import Dependencies, Executor, TaskRunner
from common.aiowait import BatchWindow
from proto import objects_pb2 as pb
from proto import swarm_pb2

log = logging.getLogger(__name__)
REPORT_INTERVAL_S = 0.1  # a batch of status updates at most this often
REPORT_ITEMS = 100  # or as soon as this many tasks have news
# A container whose task is not in a COMPLETE set is removed only if it is still unassigned this much later: a leader
# elected a moment ago may not have applied the last entries yet, and a valid task must not lose its container.
ORPHAN_GRACE_S = 5.0

RUNNING = pb.TaskState.TASK_STATE_RUNNING
Change = swarm_pb2.AssignmentChange
SendStatus = Callable[[list[swarm_pb2.TaskStatusUpdate]], Awaitable[Any]]


class Worker:
    def __init__(self, executor: Executor, interval: float = REPORT_INTERVAL_S, orphan_grace: float = ORPHAN_GRACE_S) -> None:
        self.executor = executor
        self.interval = interval
        self.orphan_grace = orphan_grace
        self._sweep: asyncio.Task[None] | None = None
        self.tasks: dict[str, pb.Task] = {}
        self.deps = Dependencies()
        self.runners: dict[str, TaskRunner] = {}
        self.statuses: dict[str, pb.TaskStatus] = {}  # latest status of each task we run
        self.unsent: set[str] = set()
        self._news = asyncio.Event()
        self._window = BatchWindow(interval)  # no wake-ups while there is nothing to report
        self._lock = asyncio.Lock()
        self.synced = asyncio.Event()  # a COMPLETE set was applied at least once
        # Called (on the event loop) after the tasks or a task's state changed: the service endpoints glue announces
        # a task that runs at once rather than at its next pass.
        self.on_change: Callable[[], None] | None = None

    # ---------------------------------------------------------------- assignments
    async def apply(self, msg: swarm_pb2.AssignmentsMessage) -> None:
        """Takes one AssignmentsMessage: a COMPLETE one replaces the whole set (and containers of tasks not in it go),
        an INCREMENTAL one updates and removes."""
        async with self._lock:
            complete = msg.type == swarm_pb2.AssignmentsMessage.COMPLETE
            log.debug("perf: assignments %s: %d changes", "complete" if complete else "incremental", len(msg.changes))
            if complete:
                tasks: dict[str, pb.Task] = {}
                deps = Dependencies()
            else:
                tasks = dict(self.tasks)
                deps = Dependencies(dict(self.deps.configs), dict(self.deps.secrets), dict(self.deps.networks))
            for ch in msg.changes:
                kind = ch.assignment.WhichOneof("item")
                if kind is None:
                    continue
                obj = getattr(ch.assignment, kind)
                table: dict[str, Any] = tasks if kind == "task" else getattr(deps, kind + "s")
                if ch.action == Change.REMOVE:
                    table.pop(obj.id, None)
                else:
                    table[obj.id] = obj
            self.tasks, self.deps = tasks, deps
            await self._reconcile(adopt=complete)
            if complete:
                self.synced.set()
            self._changed()

    async def _reconcile(self, adopt: bool) -> None:
        for tid in list(self.runners):
            if tid not in self.tasks:
                self.runners[tid].remove()  # its loop removes the container, then ends
        for tid, task in self.tasks.items():
            r = self.runners.get(tid)
            if r is None or (r.done and not r.removed):
                r = TaskRunner(task, self.deps, self.executor, self._record, self._adopt)
                self.runners[tid] = r
                r.start()
            elif r.removed:  # assigned again before its removal finished: let it end, then a new runner
                await r.close()
                r = TaskRunner(task, self.deps, self.executor, self._record, self._adopt)
                self.runners[tid] = r
                r.start()
            else:
                r.update(task, self.deps)
        for tid, r in list(self.runners.items()):
            if r.removed and r.done:
                del self.runners[tid]
                self.statuses.pop(tid, None)
                self.unsent.discard(tid)
        if adopt and (self._sweep is None or self._sweep.done()):
            self._sweep = asyncio.create_task(self._remove_orphans(), name="worker-orphans")

    async def _remove_orphans(self) -> None:
        """Containers of swarm tasks no assignment owns (the task was deleted while this node was away), removed if
        they are still unassigned after the grace period."""
        try:
            found = await self.executor.task_containers()
        except Exception:  # noqa: BLE001
            log.exception("worker: listing task containers failed")
            return
        candidates = {tid: cid for tid, cid in found.items() if tid not in self.tasks and tid not in self.runners}
        if not candidates:
            return
        await asyncio.sleep(self.orphan_grace)
        for tid, cid in candidates.items():
            if tid not in self.tasks and tid not in self.runners:
                log.info("worker: removing container %s of unassigned task %s", cid[:12], tid)
                with contextlib.suppress(Exception):
                    await self.executor.remove_container(cid)

    # ---------------------------------------------------------------- status reports
    def _record(self, task_id: str, st: pb.TaskStatus) -> None:
        prev = self.statuses.get(task_id)
        self.statuses[task_id] = st
        self.unsent.add(task_id)
        self._window.note()
        if len(self.unsent) >= REPORT_ITEMS:
            self._news.set()
        if (st.state == RUNNING) != (prev is not None and prev.state == RUNNING):
            self._changed()  # only running tasks are announced: other moves change nothing there

    def _adopt(self, task_id: str, st: pb.TaskStatus) -> None:
        """A task the managers hold RUNNING whose container this node found running (after a daemon restart): known
        here as running, with nothing to send. Without it the service endpoints glue, which announces the tasks this
        node reports running, left an adopted task out of its service's VIP and names on every node."""
        if task_id in self.statuses:
            return  # this node's own report is newer
        self.statuses[task_id] = st
        if st.state == RUNNING:
            self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except Exception:  # noqa: BLE001 - a listener's failure is not the task's
                log.exception("worker: change listener failed")

    def resend_all(self) -> None:
        """A new session (maybe with a new leader that lost the last batch): everything goes again."""
        self.unsent = set(self.statuses)
        self._window.note()

    def batch(self) -> list[swarm_pb2.TaskStatusUpdate]:
        return [swarm_pb2.TaskStatusUpdate(task_id=tid, status=self.statuses[tid])
                for tid in sorted(self.unsent) if tid in self.statuses]

    async def report_loop(self, send: SendStatus) -> None:
        """Sends batched status updates through `send` until cancelled or a send fails (the session's end)."""
        while True:
            await self._window.wait(bool(self.unsent), self._news)
            self._news.clear()
            updates = self.batch()
            if not updates:
                continue
            try:
                log.debug("perf: status send %d updates", len(updates))
                await send(updates)
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.PERMISSION_DENIED:
                    raise
                # the dispatcher refuses a whole request for one task it no longer gives this node: find it, drop it
                updates = await self._send_each(send, updates)
            for u in updates:  # only what did not change meanwhile counts as sent
                if self.statuses.get(u.task_id) is u.status or self.statuses.get(u.task_id) == u.status:
                    self.unsent.discard(u.task_id)
            for tid in [t for t, r in self.runners.items() if r.removed and r.done]:
                self.runners.pop(tid, None)
                self.statuses.pop(tid, None)
                self.unsent.discard(tid)

    async def _send_each(self, send: SendStatus, updates: list[swarm_pb2.TaskStatusUpdate]) -> list[swarm_pb2.TaskStatusUpdate]:
        sent = []
        for u in updates:
            try:
                await send([u])
                sent.append(u)
            except grpc.aio.AioRpcError as e:
                if e.code() != grpc.StatusCode.PERMISSION_DENIED:
                    raise
                log.warning("worker: status of task %s refused (%s): dropped", u.task_id, e.details())
                self.unsent.discard(u.task_id)
                self.statuses.pop(u.task_id, None)
        return sent

    async def close(self) -> None:
        """Daemon shutdown or leaving the swarm: stop driving tasks (their containers keep running)."""
        if self._sweep is not None:
            self._sweep.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._sweep
        for r in list(self.runners.values()):
            await r.close()
        self.runners.clear()

    async def run_session(self, stub: Any, session_id: str) -> None:
        """One dispatcher session: the assignments stream and the status reports, until either ends."""
        self.resend_all()

        async def send(updates: list[swarm_pb2.TaskStatusUpdate]) -> None:
            await stub.UpdateTaskStatus(swarm_pb2.UpdateTaskStatusRequest(session_id=session_id, updates=updates), timeout=10)

        call = stub.Assignments(swarm_pb2.AssignmentsRequest(session_id=session_id))

        async def consume() -> None:
            async for msg in call:
                await self.apply(msg)

        parts = [asyncio.create_task(self.report_loop(send), name="worker-reports"),
                 asyncio.create_task(consume(), name="worker-assignments")]
        try:
            done, _ = await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                t.result()  # the failure that ended the session, if any
        finally:
            call.cancel()
            for t in parts:
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
