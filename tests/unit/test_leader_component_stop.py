"""Leader components stop when told even if the change they were waiting for arrives in the same moment: the
allocator runner and the dispatcher's status batcher (Python 3.11's asyncio.wait_for swallowed that cancel and
they went on after stop(): another pass, a write, or a stop() waiting forever; manager/aiowait.py's waits do not)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

from common.aiowait import get_or_none, next_or_none, wait_event
from manager.allocator.runner import AllocatorRunner
from manager.dispatcher_tasks import StatusBatcher
from manager.store import MemoryStore
from proto import objects_pb2 as pb
from proto import swarm_pb2
from tests.unit.services_fixtures import node

STOP_S = 5.0  # far more than a stop takes; a swallowed cancel never returns


class AppliedAtOnce:
    def __init__(self) -> None:
        self.store = MemoryStore()
        self._index = itertools.count(1)

    def commit(self, fn: Any) -> Any:
        data, result = self.store.prepare(fn, "")
        outcome = self.store.apply(next(self._index), data)
        assert outcome.error is None
        return result

    async def propose(self, fn: Any) -> Any:
        result = self.commit(fn)
        await asyncio.sleep(0)
        return result


async def _stopped_in_time(stop: Any) -> bool:
    try:
        async with asyncio.timeout(STOP_S):
            await stop()
    except TimeoutError:
        return False
    return True


def test_the_allocator_runner_stops_without_another_pass_when_a_change_arrives_with_the_stop() -> None:
    async def run() -> tuple[bool, int]:
        raft = AppliedAtOnce()
        alloc = AllocatorRunner(raft, routes=lambda: [])
        await alloc.start()
        async with asyncio.timeout(STOP_S):
            while alloc.passes < 1:  # its first pass done, it waits for the next change
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        raft.commit(lambda tx: tx.create("node", node("n1")))  # wakes its wait: no await before the stop
        return await _stopped_in_time(alloc.stop), alloc.passes

    stopped, passes = asyncio.run(run())
    assert (stopped, passes) == (True, 1)


def test_the_status_batcher_stops_without_writing_when_a_full_batch_arrives_with_the_stop() -> None:
    async def run() -> tuple[bool, int]:
        raft = AppliedAtOnce()
        raft.commit(lambda tx: tx.create("task", pb.Task(id="t1", node_id="n1")))
        batcher = StatusBatcher(raft.store, raft.propose, interval=30.0, items=1)
        batcher.start()
        await asyncio.sleep(0.05)  # waiting for its kick
        update = swarm_pb2.TaskStatusUpdate(task_id="t1")
        update.status.state = pb.TASK_STATE_RUNNING
        assert batcher.submit("n1", [update]) == 1  # a full batch kicks it: no await before the stop
        return await _stopped_in_time(batcher.stop), batcher.stats.proposals

    assert asyncio.run(run()) == (True, 0)


def test_next_or_none_gives_the_next_item_or_none_after_the_timeout() -> None:
    class Items:
        def __init__(self, delays: list[float]) -> None:
            self.delays = delays

        async def __anext__(self) -> float:
            if not self.delays:
                raise StopAsyncIteration
            d = self.delays.pop(0)
            await asyncio.sleep(d)
            return d

    async def run() -> list[Any]:
        items = Items([0.0, 10.0])
        got: list[Any] = [await next_or_none(items, 1.0), await next_or_none(items, 0.05)]
        try:
            await next_or_none(items, 1.0)
        except StopAsyncIteration:
            got.append("end")
        return got

    assert asyncio.run(run()) == [0.0, None, "end"]


def test_wait_event_says_whether_the_event_was_set_in_time() -> None:
    async def run() -> tuple[bool, bool]:
        ev = asyncio.Event()
        late = await wait_event(ev, 0.05)
        asyncio.get_running_loop().call_later(0.01, ev.set)
        return late, await wait_event(ev, 5.0)

    assert asyncio.run(run()) == (False, True)


def test_get_or_none_gives_the_item_or_none_after_the_timeout() -> None:
    async def run() -> tuple[object, object]:
        queue: asyncio.Queue[int] = asyncio.Queue()
        queue.put_nowait(7)
        return await get_or_none(queue, 1.0), await get_or_none(queue, 0.01)

    assert asyncio.run(run()) == (7, None)
