"""agent/executor/runtime.py's wait(): sleeps on a pidfd of the container's process instead of polling its files,
and keeps every guarantee of the poll (recorded code, lost code, reused pid, no pidfd, a start under way).
The container's process and its shim are stand-in `sleep` processes; the files are the shim's and runc's."""
from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.executor import runtime as runtime_module
from agent.executor.runtime import RuncError, RuncRuntime

CID = "c0ffee"


def start_time(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rfind(")") + 2:].split()[19])


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen]]:
    made: list[subprocess.Popen] = []
    yield made
    for proc in made:
        proc.kill()
        proc.wait()


def sleeper(procs: list[subprocess.Popen]) -> subprocess.Popen:
    proc = subprocess.Popen(["sleep", "60"])
    procs.append(proc)
    return proc


def end(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


@pytest.fixture
def rt(tmp_path: Path) -> RuncRuntime:
    (tmp_path / "state" / CID).mkdir(parents=True)
    return RuncRuntime(tmp_path / "runc", tmp_path / "state")


def files(rt: RuncRuntime) -> Path:
    return rt.state_root / CID


def running(rt: RuncRuntime, procs: list[subprocess.Popen]) -> tuple[subprocess.Popen, subprocess.Popen]:
    """A container whose process and shim both run, as after a start: (process, shim)."""
    process, shim = sleeper(procs), sleeper(procs)
    (files(rt) / "pid").write_text(f"{process.pid}")
    (files(rt) / "started").write_text(f"{process.pid} {start_time(process.pid)}\n")
    (files(rt) / "shim.pid").write_text(f"{shim.pid} {start_time(shim.pid)}\n")
    return process, shim


def shim_records(rt: RuncRuntime, code: int) -> None:
    """As the shim records an exit code: exit.tmp renamed to exit."""
    (files(rt) / "exit.tmp").write_text(f"{code}\n")
    os.rename(files(rt) / "exit.tmp", files(rt) / "exit")


def count_status_calls(rt: RuncRuntime) -> list[int]:
    calls = [0]
    real = rt.status

    def counted(container_id: str):  # noqa: ANN202
        calls[0] += 1
        return real(container_id)

    rt.status = counted  # type: ignore[method-assign]
    return calls


def test_wait_reads_the_containers_state_once_while_its_process_runs(rt, procs):
    process, shim = running(rt, procs)
    calls = count_status_calls(rt)

    async def body() -> int:
        waiter = asyncio.ensure_future(rt.wait(CID))
        await asyncio.sleep(1.0)  # the old 5 Hz poll read the files 8 times in this second
        assert calls[0] == 1
        end(process)
        shim_records(rt, 3)
        return await asyncio.wait_for(waiter, 10)

    assert asyncio.run(body()) == 3


def test_wait_returns_the_code_the_shim_records_after_the_process_ended(rt, procs):
    process, shim = running(rt, procs)

    async def body() -> int:
        waiter = asyncio.ensure_future(rt.wait(CID))
        await asyncio.sleep(0.05)
        end(process)  # the shim is still alive: it records the code a moment later
        await asyncio.sleep(0.3)
        assert not waiter.done()
        shim_records(rt, 42)
        end(shim)
        return await asyncio.wait_for(waiter, 10)

    assert asyncio.run(body()) == 42


def test_wait_reads_the_state_a_few_times_while_the_shim_drains_before_recording(rt, procs):
    process, shim = running(rt, procs)
    calls = count_status_calls(rt)

    async def body() -> int:
        waiter = asyncio.ensure_future(rt.wait(CID))
        await asyncio.sleep(0.05)
        end(process)  # the shim drains the output for up to 2 s before it records the code
        await asyncio.sleep(1.0)  # the old poll (10 ms doubling to 0.2 s) read the files ~9 times in it
        assert not waiter.done()
        assert calls[0] <= 4  # before the pidfd, after it, with the watch in place, after a wake-up at most
        shim_records(rt, 2)
        return await asyncio.wait_for(waiter, 2)

    assert asyncio.run(body()) == 2


def test_wait_for_a_container_whose_shim_dies_after_its_process_without_recording_ends_unknown(rt, procs):
    process, shim = running(rt, procs)

    async def body() -> None:
        waiter = asyncio.ensure_future(rt.wait(CID))
        await asyncio.sleep(0.05)
        end(process)
        await asyncio.sleep(0.2)
        end(shim)  # killed -9 before it recorded the code
        await asyncio.wait_for(waiter, 2)  # the shim's pidfd wakes it, not the 5 s safety poll

    with pytest.raises(RuncError) as caught:
        asyncio.run(body())
    assert caught.value.message == f"container {CID}: exit code is unknown (its shim is gone)"


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EMFILE, errno.ENOMEM], ids=["ENOSYS", "EMFILE", "ENOMEM"])
def test_wait_without_a_pidfd_polls_on_to_the_exit_code(rt, procs, monkeypatch, code):
    process, shim = running(rt, procs)
    asked = []

    def refuse(pid: int, flags: int = 0) -> int:
        asked.append(pid)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "pidfd_open", refuse)

    async def body() -> int:
        waiter = asyncio.ensure_future(rt.wait(CID))
        await asyncio.sleep(0.3)
        assert not waiter.done()
        end(process)
        shim_records(rt, 5)
        return await asyncio.wait_for(waiter, 10)

    assert asyncio.run(body()) == 5
    assert set(asked) == {process.pid}


def test_wait_for_a_container_whose_shim_was_killed_ends_with_exit_code_unknown(rt, procs):
    process, shim = running(rt, procs)

    async def body() -> None:
        waiter = asyncio.ensure_future(rt.wait(CID))
        await asyncio.sleep(0.05)
        end(shim)  # kill -9 of the shim: nobody will record the code
        await asyncio.sleep(0.2)
        assert not waiter.done()  # the container's process still runs
        end(process)
        await asyncio.wait_for(waiter, 10)

    with pytest.raises(RuncError) as caught:
        asyncio.run(body())
    assert caught.value.message == f"container {CID}: exit code is unknown (its shim is gone)"


def test_wait_never_sleeps_on_a_pid_that_now_names_another_process(rt, procs):
    process, shim = running(rt, procs)
    # `started` names the pid with another start time: the container's process is gone and the pid reused.
    (files(rt) / "started").write_text(f"{process.pid} {start_time(process.pid) + 1}\n")

    async def body() -> int:
        waiter = asyncio.ensure_future(rt.wait(CID))
        await asyncio.sleep(0.1)
        shim_records(rt, 9)  # the shim records the code of the real one
        return await asyncio.wait_for(waiter, 2)  # well under the 5 s safety poll

    assert asyncio.run(body()) == 9


def test_wait_begun_while_a_start_is_under_way_follows_the_started_process(rt, procs):
    shim = sleeper(procs)
    (files(rt) / "shim.pid").write_text(f"{shim.pid} {start_time(shim.pid)}\n")  # runc has not written pid yet
    calls = count_status_calls(rt)

    async def body() -> int:
        waiter = asyncio.ensure_future(rt.wait(CID))
        await asyncio.sleep(0.1)
        assert not waiter.done()
        process = sleeper(procs)
        (files(rt) / "pid").write_text(f"{process.pid}")
        (files(rt) / "started").write_text(f"{process.pid} {start_time(process.pid)}\n")
        await asyncio.sleep(0.5)  # its poll sees the start (<= 0.2 s), then sleeps on the process
        seen = calls[0]
        await asyncio.sleep(0.6)
        assert calls[0] == seen
        end(process)
        shim_records(rt, 0)
        return await asyncio.wait_for(waiter, 10)

    assert asyncio.run(body()) == 0


def test_wait_looks_again_at_the_files_every_safety_poll_while_the_process_runs(rt, procs, monkeypatch):
    monkeypatch.setattr(runtime_module, "EXIT_SAFETY_POLL", 0.05)
    running(rt, procs)

    async def body() -> int:
        waiter = asyncio.ensure_future(rt.wait(CID))
        await asyncio.sleep(0.1)
        shim_records(rt, 7)  # no process ended to announce it
        return await asyncio.wait_for(waiter, 2)

    assert asyncio.run(body()) == 7


def test_a_cancelled_wait_leaves_no_descriptor_and_no_reader_behind(rt, procs):
    running(rt, procs)

    async def body() -> None:
        before = sorted(os.listdir("/proc/self/fd"))
        waiter = asyncio.ensure_future(rt.wait(CID))
        await asyncio.sleep(0.1)
        assert len(os.listdir("/proc/self/fd")) == len(before) + 1  # its pidfd
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert sorted(os.listdir("/proc/self/fd")) == before
        selector = asyncio.get_running_loop()._selector  # type: ignore[attr-defined]
        assert len(selector.get_map()) == 1  # the loop's own self-pipe only

    asyncio.run(body())
