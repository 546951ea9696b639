"""The orchestrator's and scheduler's shells over a real MemoryStore (entries applied as soon as proposed, no raft):
many tasks are created and placed in few store transactions, and a removed service's tasks are marked and reaped."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from manager.allocator.runner import AllocatorRunner
from manager.orchestrator.runner import MAX_CHANGES, Orchestrator
from manager.scheduler.runner import BATCH, Scheduler
from manager.store import MAX_ACTIONS, MemoryStore
from proto import objects_pb2 as pb
from tests.unit.services_fixtures import node, service

S = pb.TaskState


class AppliedAtOnce:
    """What the runners need of RaftManager: a store and propose(fn) that commits fn's transaction."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self._index = itertools.count(1)
        self.proposals = 0

    async def propose(self, fn: Any) -> Any:
        data, result = self.store.prepare(fn, f"r{self.proposals}")
        outcome = self.store.apply(next(self._index), data)
        if outcome.error is not None:
            raise outcome.error
        self.proposals += 1
        await asyncio.sleep(0)
        return result


async def _until(cond: Any, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _place_a_thousand(raft: AppliedAtOnce, allocator: Any) -> tuple[int, int, list[pb.Task]]:
    """orchestrator (NEW) -> allocator (PENDING) -> scheduler (ASSIGNED) over 4 nodes until 1,000 tasks are ASSIGNED;
    allocator: a component with start()/stop() run alongside (the real AllocatorRunner or a stand-in)."""
    async def run() -> tuple[int, int, list[pb.Task]]:
        await raft.propose(lambda tx: [tx.create("node", node(f"n{i}")) for i in range(4)])
        orch, sched = Orchestrator(raft), Scheduler(raft)
        await allocator.start()
        await orch.start()
        await sched.start()
        try:
            await raft.propose(lambda tx: tx.create("service", service(replicas=1000)))
            await _until(lambda: sum(1 for t in raft.store.view().list("task") if t.status.state == S.TASK_STATE_ASSIGNED) == 1000)
        finally:
            await sched.stop()
            await orch.stop()
            await allocator.stop()
        return orch.passes, sched.proposals, raft.store.view().list("task")

    return asyncio.run(run())


class StandInAllocator:
    """Moves NEW tasks to PENDING as the allocator does for network-less tasks, at most MAX_ACTIONS per write (a
    write of every NEW task at once is refused by the store once more than 200 wait: the first version of this test
    did that, its stand-in died on the refusal and the test waited for tasks that would never be PENDING)."""

    def __init__(self, raft: AppliedAtOnce) -> None:
        self.raft = raft
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self.task is not None
        if self.task.done():
            self.task.result()  # a stand-in that died says why
        self.task.cancel()

    async def _run(self) -> None:
        while True:
            def tx(t: Any) -> None:
                for task in [x for x in t.list("task") if x.status.state == S.TASK_STATE_NEW][:MAX_ACTIONS]:
                    task.status.state = S.TASK_STATE_PENDING
                    t.update("task", task)
            if any(t.status.state == S.TASK_STATE_NEW for t in self.raft.store.view().list("task")):
                await self.raft.propose(tx)
            await asyncio.sleep(0.01)


def _assert_placed_in_few_writes(orch_writes: int, sched_writes: int, tasks: list[pb.Task]) -> None:
    assert orch_writes == -(-1000 // MAX_CHANGES)  # 6 transactions of up to 190 new tasks
    assert sched_writes <= 2 * -(-1000 // BATCH)  # placed in batches as they appear (not one write per task)
    per_node: dict[str, int] = {}
    for t in tasks:
        per_node[t.node_id] = per_node.get(t.node_id, 0) + 1
    assert sorted(per_node.values()) == [250, 250, 250, 250]
    assert sorted(t.slot for t in tasks) == list(range(1, 1001))


def test_a_thousand_replicas_are_created_and_assigned_in_a_few_transactions_each() -> None:
    raft = AppliedAtOnce()
    _assert_placed_in_few_writes(*_place_a_thousand(raft, StandInAllocator(raft)))


def test_a_thousand_replicas_go_through_the_real_allocator_to_assigned_in_a_few_transactions_each() -> None:
    raft = AppliedAtOnce()
    allocator = AllocatorRunner(raft, routes=lambda: [])  # no network: the manager's routes do not matter
    orch_writes, sched_writes, tasks = _place_a_thousand(raft, allocator)
    _assert_placed_in_few_writes(orch_writes, sched_writes, tasks)
    assert [t.status.message for t in tasks if t.status.state == S.TASK_STATE_ASSIGNED] == ["scheduler assigned task to node"] * 1000
    assert allocator.passes <= 2 * -(-1000 // MAX_CHANGES)  # a pass per orchestrator write at most, not one per task


def test_removing_a_service_marks_its_tasks_for_removal_and_reaps_the_unassigned_ones() -> None:
    async def run() -> list[pb.Task]:
        raft = AppliedAtOnce()
        await raft.propose(lambda tx: tx.create("node", node("n1")))
        orch = Orchestrator(raft)
        await orch.start()
        try:
            await raft.propose(lambda tx: tx.create("service", service(replicas=3)))
            await _until(lambda: len(raft.store.view().list("task")) == 3)

            def assign_one(tx: Any) -> None:
                t = tx.list("task")[0]
                t.node_id, t.status.state = "n1", S.TASK_STATE_RUNNING
                tx.update("task", t)

            await raft.propose(assign_one)
            await raft.propose(lambda tx: tx.remove("service", "svc1"))
            await _until(lambda: [t.desired_state for t in raft.store.view().list("task")] == [S.TASK_STATE_REMOVE])
        finally:
            await orch.stop()
        return raft.store.view().list("task")

    left = asyncio.run(run())
    assert [(t.node_id, t.status.state) for t in left] == [("n1", S.TASK_STATE_RUNNING)]  # until its agent stops it


class CountingStore(MemoryStore):
    """Counts the orchestrator's dry runs (prepare without a request id): one per pass over a service."""

    dry_runs = 0

    def prepare(self, fn: Any, request_id: str) -> Any:
        if not request_id:
            self.dry_runs += 1
        return super().prepare(fn, request_id)


def _progress(raft: AppliedAtOnce, state: int, node_id: str = "n1") -> Any:
    def tx(t: Any) -> None:
        for task in t.list("task"):
            task.node_id = node_id
            task.status.state = state
            t.update("task", task)
    return raft.propose(tx)


def test_an_agents_progress_reports_cost_no_orchestrator_pass_but_an_ended_task_does() -> None:
    async def run() -> tuple[int, int, list[int]]:
        raft = AppliedAtOnce()
        raft.store = CountingStore()
        await raft.propose(lambda tx: tx.create("node", node("n1")))
        orch = Orchestrator(raft)
        await orch.start()
        try:
            await raft.propose(lambda tx: tx.create("service", service(replicas=2)))
            await _until(lambda: len(raft.store.view().list("task")) == 2)
            settled = raft.store.dry_runs
            await _progress(raft, S.TASK_STATE_ASSIGNED)  # the scheduler's write: the node changes, a pass
            await _until(lambda: raft.store.dry_runs > settled)
            await asyncio.sleep(0.1)
            before = raft.store.dry_runs
            for state in (S.TASK_STATE_ACCEPTED, S.TASK_STATE_PREPARING, S.TASK_STATE_STARTING, S.TASK_STATE_RUNNING):
                await _progress(raft, state)
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            progress_passes = raft.store.dry_runs - before
            await _progress(raft, S.TASK_STATE_FAILED)  # ended: replaced (restart condition any, no delay)
            await _until(lambda: len(raft.store.view().list("task")) == 4)
        finally:
            await orch.stop()
        states = sorted(t.status.state for t in raft.store.view().list("task"))
        return progress_passes, raft.store.dry_runs - before, states

    progress_passes, all_passes, states = asyncio.run(run())
    assert progress_passes == 0
    assert all_passes >= 1
    assert states == [S.TASK_STATE_NEW, S.TASK_STATE_NEW, S.TASK_STATE_FAILED, S.TASK_STATE_FAILED]


def test_progress_reports_of_a_service_in_a_rolling_update_still_count_for_the_orchestrator() -> None:
    from manager.orchestrator.runner import live_progress
    from manager.store.watch import Event

    store = MemoryStore()
    svc = service(replicas=1)
    data, _ = store.prepare(lambda tx: tx.create("service", svc), "")
    store.apply(1, data)
    old = pb.Task(id="t1", service_id="svc1", node_id="n1", desired_state=S.TASK_STATE_RUNNING)
    old.status.state = S.TASK_STATE_STARTING
    new = pb.Task()
    new.CopyFrom(old)
    new.status.state = S.TASK_STATE_RUNNING
    idle = live_progress(Event(2, "update", "task", new, old), store.view())
    rolling = store.view().get("service", "svc1")
    rolling.update_status.state = pb.UpdateStatus.UPDATING
    data, _ = store.prepare(lambda tx: tx.update("service", rolling), "")
    store.apply(2, data)
    assert (idle, live_progress(Event(3, "update", "task", new, old), store.view())) == (True, False)


def test_the_scheduler_wakes_for_work_but_not_for_an_agents_progress_report() -> None:
    from manager.scheduler.runner import wakes
    from manager.store.watch import Event

    def upd(old_state: int, new_state: int, new_node: str = "n1", desired: int = S.TASK_STATE_RUNNING) -> Event:
        old = pb.Task(id="t1", node_id="n1" if old_state >= S.TASK_STATE_ASSIGNED else "", desired_state=S.TASK_STATE_RUNNING)
        old.status.state = old_state
        new = pb.Task(id="t1", node_id=new_node, desired_state=desired)
        new.status.state = new_state
        return Event(5, "update", "task", new, old)

    assert [wakes(upd(S.TASK_STATE_STARTING, S.TASK_STATE_RUNNING)),  # progress
            wakes(upd(S.TASK_STATE_NEW, S.TASK_STATE_PENDING, "")),  # allocated: to place
            wakes(upd(S.TASK_STATE_RUNNING, S.TASK_STATE_FAILED)),  # ended: frees its node
            wakes(upd(S.TASK_STATE_RUNNING, S.TASK_STATE_RUNNING, desired=S.TASK_STATE_SHUTDOWN)),
            wakes(Event(5, "update", "node", pb.Node(id="n1"), pb.Node(id="n1")))] == [False, True, True, True, True]


def test_a_task_created_new_does_not_wake_the_scheduler_but_one_created_pending_does() -> None:
    """The orchestrator's NEW tasks wait for the allocator, whose move to PENDING is the scheduler's cue: a pass for the
    create placed nothing and made the pass that could wait out the window."""
    from manager.scheduler.runner import wakes
    from manager.store.watch import Event

    pending = pb.Task(id="t3", desired_state=S.TASK_STATE_RUNNING)
    pending.status.state = S.TASK_STATE_PENDING
    assert [wakes(Event(5, "create", "task", pb.Task(id="t2", desired_state=S.TASK_STATE_RUNNING))),
            wakes(Event(6, "create", "task", pending))] == [False, True]
