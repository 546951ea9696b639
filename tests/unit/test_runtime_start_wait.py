"""agent/executor/runtime.py's wait for a start (_await_started): sleeps on an inotify watch of the bundle (runc
renames `pid` into it) and a pidfd of the shim instead of reading the files every 2 ms; still polls without them.
The shim is a stand-in `sleep` process; `pid` and runc.log are written as runc writes them."""
from __future__ import annotations

import asyncio
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.executor import exitwatch
from agent.executor import runtime as runtime_module
from agent.executor.runtime import RuncError, RuncRuntime

CID = "c0ffee"


@pytest.fixture
def shim() -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen(["sleep", "60"])
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def rt(tmp_path: Path) -> RuncRuntime:
    (tmp_path / "state" / CID).mkdir(parents=True)
    return RuncRuntime(tmp_path / "runc", tmp_path / "state")


def bundle(rt: RuncRuntime) -> Path:
    return rt.state_root / CID


async def runc_writes_pid(d: Path, pid: int, after: float) -> None:
    await asyncio.sleep(after)
    (d / ".pid").write_text(str(pid))  # runc's createPidFile: a temp file renamed into place
    os.rename(d / ".pid", d / "pid")


def count_pid_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    real = runtime_module._read_int

    def counted(path: Path) -> int | None:
        calls[0] += 1
        return real(path)

    monkeypatch.setattr(runtime_module, "_read_int", counted)
    return calls


def test_a_start_looks_for_the_pid_file_when_runc_renames_it_in_not_every_2ms(rt, shim, monkeypatch):
    calls = count_pid_reads(monkeypatch)

    async def body() -> int:
        writer = asyncio.ensure_future(runc_writes_pid(bundle(rt), shim.pid, 0.3))
        pid = await asyncio.wait_for(rt._await_started(CID, shim.pid, 0), 10)
        await writer
        return pid

    assert asyncio.run(body()) == shim.pid
    assert calls[0] <= 3  # before the wait, after the rename (the old 2 ms poll: ~150 in 0.3 s)
    assert (bundle(rt) / "started").read_text().split()[0] == str(shim.pid)


def test_a_start_whose_shim_ends_without_a_pid_fails_with_runcs_message(rt, shim):
    (bundle(rt) / "runc.log").write_text(json.dumps(
        {"level": "error", "msg": 'exec: "nope": executable file not found in $PATH'}) + "\n")

    async def body() -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(0.2, shim.kill)
        await asyncio.wait_for(rt._await_started(CID, shim.pid, 0), 10)

    with pytest.raises(RuncError) as caught:
        asyncio.run(body())
    assert (caught.value.message, caught.value.exit_code) == ('exec: "nope": executable file not found in $PATH', 127)


def test_a_start_without_inotify_polls_on_to_the_pid(rt, shim, monkeypatch):
    def refuse(directory: Path, pid: int) -> exitwatch.DirWatch:
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    monkeypatch.setattr(exitwatch, "DirWatch", refuse)

    async def body() -> int:
        writer = asyncio.ensure_future(runc_writes_pid(bundle(rt), shim.pid, 0.1))
        pid = await asyncio.wait_for(rt._await_started(CID, shim.pid, 0), 10)
        await writer
        return pid

    assert asyncio.run(body()) == shim.pid


def test_a_start_leaves_no_descriptor_behind(rt, shim):
    async def body() -> None:
        before = sorted(os.listdir("/proc/self/fd"))
        writer = asyncio.ensure_future(runc_writes_pid(bundle(rt), shim.pid, 0.1))
        await asyncio.wait_for(rt._await_started(CID, shim.pid, 0), 10)
        await writer
        # The inotify instance is closed by a worker thread (its close waits for the kernel's SRCU grace period).
        for _ in range(200):
            if sorted(os.listdir("/proc/self/fd")) == before:
                break
            await asyncio.sleep(0.01)
        assert sorted(os.listdir("/proc/self/fd")) == before

    asyncio.run(body())
