"""Self-healing firewall: every few seconds check that shoal's iptables rules are still there, and
re-apply them when something (iptables -F, a firewalld reload) wiped them. Used by the engine."""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class FirewallWatch:
    """Runs `check` (blocking, in a thread) every `interval` seconds; calls `reapply` when it is false.

    `reapply` is the engine's apply_firewall, sync or async; a failing check or reapply is logged
    and retried at the next tick, so a transient iptables error never stops the watch. `check`
    must stay cheap with many rules: firewall_live.Firewall.in_place reads two marker rules and
    compares everything only every 15th time.
    """

    def __init__(self, reapply: Callable[[], Awaitable[None]] | Callable[[], None],
                 check: Callable[[], bool], interval: float = 2.0) -> None:
        if interval <= 0:
            raise ValueError(f"invalid interval {interval!r}: must be positive")
        self._reapply = reapply
        self._check = check
        self.interval = interval
        self.reapplied = 0  # how many times the rules had to be restored
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start watching on the running loop; starting twice is no error."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="firewall-watch")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def tick(self) -> bool:
        """One check; re-applies when needed. Returns whether the rules had to be restored."""
        if await asyncio.to_thread(self._check):
            return False
        log.warning("firewall rules missing or changed; re-applying them")
        result = self._reapply()
        if inspect.isawaitable(result):
            await result
        self.reapplied += 1
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep watching: the next tick retries
                log.exception("firewall watch: check or re-apply failed")
