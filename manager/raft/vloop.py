"""A virtual-time asyncio event loop for deterministic simulations: timers fire in order, the clock jumps to the next one.
Used by manager/raft/shellsim.py to run real manager shells (manager/raftnode.py) without waiting; no I/O may be awaited on it."""

from __future__ import annotations

import asyncio
import time
from typing import Any


class Deadlock(RuntimeError):
    """Nothing is ready and no timer is pending: the simulation can never make progress."""


class _Selector:
    """Stands where the OS selector would: instead of blocking for `timeout`, moves the clock on by it."""

    def __init__(self, loop: VirtualLoop) -> None:
        self.loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        if timeout is None:
            raise Deadlock("virtual loop: no ready callback and no timer: every task waits for something that never comes")
        if timeout > 0:
            self.loop.now += timeout
        return []

    def close(self) -> None:
        pass


class VirtualLoop(asyncio.BaseEventLoop):
    """loop.time() is virtual seconds from 0. call_soon_threadsafe works (same thread only); sockets do not."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self._selector = _Selector(self)
        self._clock_resolution = 1e-9

    def time(self) -> float:
        return self.now

    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass  # no selector to wake: the next _run_once sees the callback in _ready


class VirtualTime:
    """A stand-in for the `time` module of code run on a VirtualLoop: monotonic() and perf_counter() read the loop."""

    def __init__(self, loop: VirtualLoop, epoch: float = 1_800_000_000.0) -> None:
        self._loop = loop
        self._epoch = epoch

    def monotonic(self) -> float:
        return self._loop.now

    def perf_counter(self) -> float:
        return self._loop.now

    def time(self) -> float:
        return self._epoch + self._loop.now

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)
