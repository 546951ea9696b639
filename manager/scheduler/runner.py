"""The scheduler's shell: a leader-only component that watches tasks and nodes, runs the pure core (core.py) over
the store's view and writes its decisions, up to BATCH tasks per proposal (many tasks, few raft entries)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from common.aiowait import LeadingWindow
from manager import timing
from manager.orchestrator.plan import wait_or_timeout
from manager.store.errors import StoreError
from proto import objects_pb2 as pb

from .core import Decisions, schedulable, schedule, skips_allocator

log = logging.getLogger(__name__)
S = pb.TaskState
BATCH = 190  # tasks per proposal, under the store's 200 actions
DEBOUNCE_S = 0.02  # at most one pass per window while tasks keep changing (common/aiowait.LeadingWindow)
ASSIGNED_MESSAGE = "scheduler assigned task to node"
PENDING_MESSAGE = "pending task scheduling"


def write_decisions(tx: Any, ids: list[str], d: Decisions, now_ns: int) -> int:
    """Writes the decisions for `ids` that still apply (the task is still waiting, the node still there)."""
    n = 0
    for tid in ids:
        t = tx.get("task", tid)
        if t is None or not schedulable(t):
            continue
        node_id = d.assigned.get(tid)
        if node_id is not None:
            if tx.get("node", node_id) is None:
                continue
            t.node_id = node_id
            t.status.state = S.TASK_STATE_ASSIGNED
            t.status.message = ASSIGNED_MESSAGE
            t.status.err = ""
        else:
            why = d.unplaced.get(tid, "")
            if t.status.err == why and t.status.state == S.TASK_STATE_PENDING:
                continue
            t.status.state = S.TASK_STATE_PENDING
            t.status.message = PENDING_MESSAGE
            t.status.err = why
        t.status.timestamp.FromNanoseconds(now_ns)
        tx.update("task", t)
        n += 1
    return n


def pending_changes(tasks: list[pb.Task], d: Decisions) -> list[str]:
    """Task ids whose decision changes something: assigned, or a new/different reason to wait."""
    by_id = {t.id: t for t in tasks}
    out = list(d.assigned)
    for tid, why in d.unplaced.items():
        t = by_id[tid]
        if t.status.err != why or t.status.state != S.TASK_STATE_PENDING:
            out.append(tid)
    return sorted(out)


def _live(t: pb.Task) -> bool:
    return S.TASK_STATE_ASSIGNED <= t.status.state <= S.TASK_STATE_RUNNING


def wakes(ev: Any) -> bool:
    """Whether a committed change can give the scheduler work: anything but an agent's progress report on a placed
    task (assigned ... running before and after, same node and desired state: nothing to place, no resource freed).
    Each status batch was a pass over every task; the 1 s tick still passes over everything. Nor a task created NEW
    (the orchestrator's): no task skips the allocator (core.skips_allocator), whose move to PENDING wakes the scheduler;
    a pass for the create did nothing but make that one wait out the window (~15 ms of every `service create`)."""
    if ev.kind == "task" and ev.action == "create" and ev.object.status.state == S.TASK_STATE_NEW:
        return skips_allocator(ev.object)
    if ev.kind != "task" or ev.action != "update" or ev.old is None:
        return True
    old, new = ev.old, ev.object
    return not (_live(old) and _live(new) and old.node_id == new.node_id and old.desired_state == new.desired_state)


class Scheduler:
    name = "scheduler"

    def __init__(self, raft: Any, clock: Callable[[], float] = time.time) -> None:
        self.raft = raft
        self.clock = clock
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.proposals = 0  # raft entries written (a figure for the batching)
        self._window = LeadingWindow(DEBOUNCE_S)
        self.assigned = 0

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._wake.set()
        self._task = asyncio.create_task(self._run(self.raft.store.watch({"task", "node"})), name="scheduler")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, watch: Any) -> None:
        while True:
            follower = asyncio.create_task(self._follow(watch), name="scheduler-watch")
            try:
                while not follower.done():
                    await wait_or_timeout(self._wake, 1.0)
                    self._wake.clear()
                    await self._window.settle()
                    try:
                        await self._pass()
                    except asyncio.CancelledError:
                        raise
                    except Exception as e:  # no quorum, a conflicting write: the next pass tries again
                        log.info("scheduler: %s", e)
                        await asyncio.sleep(0.2)
                        self._wake.set()
            finally:
                follower.cancel()
                watch.close()
            self._wake.set()  # the watch ended (fell behind): watch again and pass over everything
            watch = self.raft.store.watch({"task", "node"})

    async def _follow(self, watch: Any) -> None:
        with contextlib.suppress(StoreError):  # fell behind: _run watches again and passes over everything
            async for ev in watch:
                if wakes(ev):
                    self._wake.set()
        self._wake.set()

    async def _pass(self) -> None:
        span = timing.Span("scheduler")
        view = self.raft.store.view()
        tasks = view.list("task")
        batch = [t for t in tasks if schedulable(t)]
        if not batch:
            return
        decisions = schedule(view.list("node"), tasks, batch)
        ids = pending_changes(batch, decisions)
        now = int(self.clock() * 1e9)
        span.plan_done()
        for i in range(0, len(ids), BATCH):
            chunk = ids[i:i + BATCH]
            started = time.monotonic()
            written = await self.raft.propose(lambda tx, chunk=chunk: write_decisions(tx, chunk, decisions, now))
            span.proposed(started, written)
            self.proposals += 1
            self.assigned += sum(1 for tid in chunk if tid in decisions.assigned) if written else 0
        span.end()
