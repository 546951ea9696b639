"""common.aiowait.BatchWindow (the agent's status reports, the dispatcher's status writes): no wake-up while nothing
is pending, a queued item ends the wait at the window's end, a kick at once. And the agent's report loop on it."""

from __future__ import annotations

import asyncio

from agent.worker import Worker
from common.aiowait import BatchWindow
from proto import objects_pb2 as pb


def test_with_nothing_pending_the_wait_outlasts_many_windows_until_something_is_noted() -> None:
    async def go() -> tuple[bool, bool]:
        window, kick = BatchWindow(0.01), asyncio.Event()
        waiter = asyncio.create_task(window.wait(False, kick))
        await asyncio.sleep(0.1)   # ten windows: a polling loop would have returned
        idle = not waiter.done()
        window.note()
        await asyncio.wait_for(waiter, 1.0)
        return idle, waiter.done()
    assert asyncio.run(go()) == (True, True)


def test_with_something_pending_a_kick_ends_the_window_at_once() -> None:
    async def go() -> bool:
        window, kick = BatchWindow(3600.0), asyncio.Event()
        waiter = asyncio.create_task(window.wait(True, kick))
        await asyncio.sleep(0)
        kick.set()
        await asyncio.wait_for(waiter, 1.0)
        return waiter.done()
    assert asyncio.run(go())


def test_the_agent_reports_a_recorded_status_after_an_idle_spell() -> None:
    async def go() -> list[list[str]]:
        w = Worker(executor=None, interval=0.01)  # type: ignore[arg-type] - statuses recorded directly
        sent: list[list[str]] = []
        done = asyncio.Event()

        async def send(updates) -> None:
            sent.append([u.task_id for u in updates])
            done.set()
        loop = asyncio.create_task(w.report_loop(send))
        await asyncio.sleep(0.05)   # idle: nothing to send
        w._record("t1", pb.TaskStatus(state=pb.TaskState.TASK_STATE_RUNNING))
        await asyncio.wait_for(done.wait(), 2.0)
        loop.cancel()
        return sent
    assert asyncio.run(go()) == [["t1"]]
