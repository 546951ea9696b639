"""Waits with a timeout that never swallow a cancellation, for long-running loops (allocator, dispatcher, the
agent's status reports, the log broker).
Python 3.11's asyncio.wait_for returns the result when a cancel races with the awaited thing finishing: a stop()
that cancels the loop then waits forever. asyncio.timeout re-raises the cancel (see orchestrator/plan.py too)."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Awaitable, Callable
from typing import Any


async def next_or_none(stream: Any, timeout: float) -> Any | None:
    """The stream's next item (`await stream.__anext__()`), or None after timeout. StopAsyncIteration and the
    stream's own errors pass through; a cancellation always does.
    A stream with a poll() (a store watch) gives an item it already holds without the timeout's timer: a
    dispatcher's assignment stream reads every store event of a burst, most for other nodes, and a timer armed and
    cancelled per event was most of what a leader's streams cost."""
    poll = getattr(stream, "poll", None)
    if poll is not None and (item := poll()) is not None:
        return item
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, timeout)):
            return await stream.__anext__()
    return None


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Until event is set (True) or timeout passes (False)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, timeout)):
            await event.wait()
            return True
    return False


async def get_or_none(queue: asyncio.Queue[Any], timeout: float) -> Any | None:
    """The queue's next item, or None after timeout; an item is never lost to a timeout racing with it."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, timeout)):
            return await queue.get()
    return None


class BatchWindow:
    """The wait of a batching loop (the agent's status reports, the dispatcher's status writes): nothing while nothing
    is pending, else until the end of the current window of a fixed `interval` grid (or `kick`), as a loop that woke
    every interval would have sent it, without its wake-ups while idle. Call note() whenever something is queued."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._queued = asyncio.Event()
        self._grid: float | None = None

    def note(self) -> None:
        self._queued.set()

    async def wait(self, pending: bool, kick: asyncio.Event) -> None:
        """pending: whether the caller holds anything to send now."""
        loop = asyncio.get_running_loop()
        if self._grid is None:
            self._grid = loop.time()
        if not pending:
            self._queued.clear()
            await self._queued.wait()
        now = loop.time()
        end = now
        if self.interval > 0:
            end = self._grid + math.ceil((now - self._grid) / self.interval) * self.interval
        await wait_event(kick, end - now)


class LeadingWindow:
    """Leading-edge batching for a loop that reacts to store changes (the allocator's, orchestrator's and scheduler's
    passes, the dispatcher's assignment messages). settle() before handling a change: after a quiet spell it returns
    after one turn of the event loop (by then the rest of the raft entry that made the change is queued: a store pushes
    every event of an entry at once), and within `window` of the previous settle() it waits out the rest of that
    window, so a stream of changes costs one pass per window at most.
    It replaces a fixed pause of `window` after every first change, which was pure latency: 4 pauses of 20 ms and one
    of 50 ms between a `service create` and its tasks reaching the nodes."""

    def __init__(self, window: float, clock: Callable[[], float] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.window = window
        self._clock = clock
        self._sleep = sleep
        self._last = -math.inf

    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    async def settle(self) -> None:
        await self._sleep(max(0.0, self._last + self.window - self._now()))
        self._last = self._now()
