"""Timing notes of a container start's steps (network set-up, bundle, shim, runc) for bench/converge.py: logged
only when the daemon runs with SHOAL_TIMING=1, like manager/timing.py. Used by shoal/engine/engine.py's _start."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("shoal.timing")
ENABLED = os.environ.get("SHOAL_TIMING", "") == "1"


class Steps:
    """The steps of one start: each mark() closes the step since the previous mark."""

    __slots__ = ("what", "start", "_mark", "parts")

    def __init__(self, what: str) -> None:
        self.what = what
        self.start = self._mark = time.monotonic()
        self.parts: list[tuple[str, float]] = []

    def mark(self, step: str) -> None:
        if ENABLED:
            now = time.monotonic()
            self.parts.append((step, now - self._mark))
            self._mark = now

    def timed(self, fn: Callable[..., T], waited: str, ran: str) -> Callable[..., T]:
        """fn, marking the wait before it runs (a thread's queue) and its run as two steps."""
        def run(*args: Any, **kwargs: Any) -> T:
            self.mark(waited)
            try:
                return fn(*args, **kwargs)
            finally:
                self.mark(ran)
        return run

    def end(self) -> None:
        if ENABLED:
            total = time.monotonic() - self.start
            log.info("%s: %s, total %.0f ms", self.what, ", ".join(f"{s} {d * 1e3:.0f}" for s, d in self.parts),
                     total * 1e3)
