"""agent/executor/runtime.py's prewarm: the spare shim (a Python process waiting for its job) is started when a
swarm task is being prepared, so the node's first start does not wait for Python's start-up."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from agent.executor.runtime import RuncRuntime


def test_prewarm_has_a_spare_shim_waiting_before_any_start(tmp_path: Path) -> None:
    async def run() -> None:
        rt = RuncRuntime(tmp_path / "runc", tmp_path / "state")
        assert rt._spare is None
        rt.prewarm()
        assert rt._refill is not None
        await rt._refill
        assert rt._spare is not None
        pid = rt._spare[0]
        os.kill(pid, 0)  # alive, waiting on its job pipe
        rt.close()  # the pipe closes: the spare exits by itself
    asyncio.run(run())


def test_prewarm_while_a_spare_is_coming_or_ready_starts_no_other(tmp_path: Path) -> None:
    async def run() -> None:
        rt = RuncRuntime(tmp_path / "runc", tmp_path / "state")
        rt.prewarm()
        coming = rt._refill
        rt.prewarm()
        assert rt._refill is coming
        assert coming is not None
        await coming
        spare = rt._spare
        rt.prewarm()
        assert (rt._refill, rt._spare) == (coming, spare)
        rt.close()
    asyncio.run(run())
