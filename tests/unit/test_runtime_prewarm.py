"""agent/executor/runtime.py's prewarm: a spare shim (a Python process waiting for its job) is started for each swarm
task being prepared, so the node's starts do not wait for Python's start-up, one after the other."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from agent.executor.runtime import MAX_SPARES, RuncRuntime


def test_prewarm_has_a_spare_shim_waiting_before_any_start(tmp_path: Path) -> None:
    async def run() -> None:
        rt = RuncRuntime(tmp_path / "runc", tmp_path / "state")
        assert rt._spares == [] and not rt._coming
        rt.prewarm()
        assert len(rt._coming) == 1
        await asyncio.gather(*rt._coming)
        assert len(rt._spares) == 1
        pid = rt._spares[0][0]
        os.kill(pid, 0)  # alive, waiting on its job pipe
        rt.close()  # the pipe closes: the spare exits by itself
    asyncio.run(run())


def test_each_prewarm_of_a_burst_starts_one_more_spare(tmp_path: Path) -> None:
    async def run() -> None:
        rt = RuncRuntime(tmp_path / "runc", tmp_path / "state")
        for _ in range(3):
            rt.prewarm()
        assert len(rt._coming) == 3
        await asyncio.gather(*rt._coming)
        assert len(rt._spares) == 3
        assert len({pid for pid, _ in rt._spares}) == 3
        rt.close()
        assert rt._spares == []
    asyncio.run(run())


def test_prewarm_while_enough_spares_are_ready_or_coming_starts_no_other(tmp_path: Path) -> None:
    async def run() -> None:
        rt = RuncRuntime(tmp_path / "runc", tmp_path / "state")
        rt._expected = MAX_SPARES - 1
        rt.prewarm()
        coming = set(rt._coming)
        assert len(coming) == MAX_SPARES
        rt.prewarm()  # at the cap: the burst asks for no more
        assert rt._coming == coming
        await asyncio.gather(*coming)
        assert len(rt._spares) == MAX_SPARES
        rt.close()
    asyncio.run(run())


def test_a_spare_that_arrives_after_close_is_let_go(tmp_path: Path) -> None:
    async def run() -> None:
        rt = RuncRuntime(tmp_path / "runc", tmp_path / "state")
        rt.prewarm()
        coming = set(rt._coming)
        rt.close()
        await asyncio.gather(*coming, return_exceptions=True)
        assert rt._spares == []
        rt.prewarm()  # closed: nothing more is started
        assert not rt._coming
    asyncio.run(run())
