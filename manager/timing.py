"""Timing notes of the manager's task pipeline (control API create, orchestrator, allocator, scheduler, dispatcher)
for bench/converge.py --timeline: logged only when the daemon runs with SHOAL_TIMING=1 (no cost otherwise)."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

log = logging.getLogger("manager.timing")
ENABLED = os.environ.get("SHOAL_TIMING", "") == "1"


class Span:
    """One pass of a component: when it started, how long its planning took, its proposals and their waits."""

    __slots__ = ("what", "clock", "start", "planned", "proposals", "waited", "items", "_mark")

    def __init__(self, what: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.clock = clock
        self.start = clock()
        self.planned = 0.0
        self.proposals = 0
        self.waited = 0.0
        self.items = 0
        self._mark = self.start  # since the start or the last proposal's answer: planning time

    def plan_done(self) -> None:
        now = self.clock()
        self.planned += now - self._mark
        self._mark = now

    def proposed(self, started: float, items: int) -> None:
        now = self.clock()
        self.proposals += 1
        self.waited += now - started
        self.items += items
        self._mark = now

    def end(self, extra: str = "") -> None:
        if ENABLED and (self.proposals or extra):
            log.info("%s: plan %.1f ms, %d proposals of %d items waited %.1f ms, total %.1f ms%s", self.what,
                     self.planned * 1e3, self.proposals, self.items, self.waited * 1e3,
                     (self.clock() - self.start) * 1e3, f" ({extra})" if extra else "")


def note(fmt: str, *args: object) -> None:
    if ENABLED:
        log.info(fmt, *args)
