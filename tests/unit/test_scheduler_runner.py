"""The orchestrator's and scheduler's shells over a real MemoryStore (entries applied as soon as proposed, no raft):
many tasks are created and placed in few store transactions, and a removed service's tasks are marked and reaped."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from manager.orchestrator.runner import MAX_CHANGES, Orchestrator
from manager.scheduler.runner import BATCH, Scheduler
from manager.store import MemoryStore
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


@pytest.mark.xfail(strict=True, reason="known gap since the allocator joined the pipeline: over the in-memory store, with "
                   "a stand-in allocator (NEW -> PENDING), the 1,000 tasks never all reach ASSIGNED within the deadline "
                   "(with the real AllocatorRunner the test hangs); the lab service flows pass. Cause not found yet")
def test_a_thousand_replicas_are_created_and_assigned_in_a_few_transactions_each() -> None:
    async def run() -> tuple[int, int, list[pb.Task]]:
        raft = AppliedAtOnce()
        await raft.propose(lambda tx: [tx.create("node", node(f"n{i}")) for i in range(4)])
        # orchestrator (NEW) -> allocator (PENDING) -> scheduler (ASSIGNED); the allocator is not under test here:
        # a stand-in moves every NEW task to PENDING in one write, as the allocator does for network-less tasks
        orch, sched = Orchestrator(raft), Scheduler(raft)

        async def allocate() -> None:
            while True:
                def tx(t: Any) -> None:
                    for task in t.list("task"):
                        if task.status.state == S.TASK_STATE_NEW:
                            task.status.state = S.TASK_STATE_PENDING
                            t.update("task", task)
                if any(t.status.state == S.TASK_STATE_NEW for t in raft.store.view().list("task")):
                    await raft.propose(tx)
                await asyncio.sleep(0.01)

        alloc = asyncio.create_task(allocate())
        await orch.start()
        await sched.start()
        try:
            await raft.propose(lambda tx: tx.create("service", service(replicas=1000)))
            await _until(lambda: sum(1 for t in raft.store.view().list("task") if t.status.state == S.TASK_STATE_ASSIGNED) == 1000)
        finally:
            await sched.stop()
            await orch.stop()
            alloc.cancel()
        return orch.passes, sched.proposals, raft.store.view().list("task")

    orch_writes, sched_writes, tasks = asyncio.run(run())
    assert orch_writes == -(-1000 // MAX_CHANGES)  # 6 transactions of up to 190 new tasks
    assert sched_writes <= 2 * -(-1000 // BATCH)  # placed in batches as they appear (not one write per task)
    per_node: dict[str, int] = {}
    for t in tasks:
        per_node[t.node_id] = per_node.get(t.node_id, 0) + 1
    assert sorted(per_node.values()) == [250, 250, 250, 250]
    assert sorted(t.slot for t in tasks) == list(range(1, 1001))


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
