"""Timing notes of the manager's task pipeline (control API create, orchestrator, allocator, scheduler, dispatcher)
for bench/converge.py --timeline: logged only when the daemon runs with SHOAL_TIMING=1 (no cost otherwise)."""

from __future__ import annotations

import logging
import os
import time

log = logging.getLogger("manager.timing")
ENABLED = os.environ.get("SHOAL_TIMING", "") == "1"


class Span:
    """One pass of a component: when it started, how long its planning took, its proposals and their waits."""

    __slots__ = ("what", "start", "planned", "proposals", "waited", "items")

    def __init__(self, what: str) -> None:
        self.what = what
        self.start = time.monotonic()
        self.planned = 0.0
        self.proposals = 0
        self.waited = 0.0
        self.items = 0

    def plan_done(self) -> None:
        self.planned = time.monotonic() - self.start

    def proposed(self, started: float, items: int) -> None:
        self.proposals += 1
        self.waited += time.monotonic() - started
        self.items += items

    def end(self, extra: str = "") -> None:
        if ENABLED and (self.proposals or extra):
            log.info("%s: plan %.1f ms, %d proposals of %d items waited %.1f ms, total %.1f ms%s", self.what,
                     self.planned * 1e3, self.proposals, self.items, self.waited * 1e3,
                     (time.monotonic() - self.start) * 1e3, f" ({extra})" if extra else "")


def note(fmt: str, *args: object) -> None:
    if ENABLED:
        log.info(fmt, *args)
