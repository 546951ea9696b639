"""agent/executor/zygote.py and zygote_client.py: spare shims forked by one long-lived process per daemon. Real
processes (the zygote, its forks), no runc: what a shim gets and what the daemon's side does when the zygote dies."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.executor import zygote_client
from agent.executor.runtime import RuncRuntime
from agent.executor.zygote_client import Zygote, ZygoteUnavailable, parse_reply


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def waiting_for_its_job(pid: int) -> bool:
    """The forked shim is in read(0, ...) (shim.read_job): past become_shim's fd and signal set-up. The zygote
    answers with the pid as soon as it forked, so a look at /proc before this can catch the set-up half-way."""
    try:
        fields = Path(f"/proc/{pid}/syscall").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return fields[:2] == ["0", "0x0"]  # x86-64 read (0) on fd 0


def stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


@pytest.fixture
def tag(monkeypatch: pytest.MonkeyPatch) -> bytes:
    """An environment entry of this test's own: every zygote it starts, and every shim forked, carries it (other
    tests' daemons run zygotes of this checkout at the same time)."""
    entry = f"SHOAL_ZYGOTE_TEST_TAG={uuid.uuid4().hex}"
    monkeypatch.setenv(*entry.split("="))
    return entry.encode()


def forks_of_the_zygote(tag: bytes) -> set[int]:
    """Live processes running this checkout's zygote.py with the test's tag: the zygotes and every shim forked."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
                environ = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(zygote_client.ZYGOTE_SCRIPT).encode() in cmdline and tag in environ and alive(int(entry)):
                found.add(int(entry))
    return found


def test_parse_reply_reads_the_pid() -> None:
    assert parse_reply(b"4242\n") == 4242


def test_parse_reply_of_a_failed_fork_is_unavailable_naming_the_answer() -> None:
    with pytest.raises(ZygoteUnavailable) as err:
        parse_reply(b"0\n")
    assert str(err.value) == "the shim zygote could not fork a shim (answered b'0\\n')"


def test_a_forked_shim_is_in_a_session_of_its_own_reparented_away_from_the_zygote() -> None:
    async def run() -> None:
        zygote = Zygote()
        pid, writer = await zygote.spawn()
        try:
            fields = stat_fields(pid)
            ppid, sid, tty = int(fields[1]), int(fields[3]), int(fields[4])
            # A session of its own (its middle parent's, as a shim started the old way is in its launcher's): no
            # signal to the daemon's or the zygote's group or session reaches it, and no controlling terminal.
            assert sid not in (os.getsid(0), os.getsid(zygote.pid), pid)
            assert tty == 0
            assert ppid not in (zygote.pid, os.getpid())
        finally:
            os.close(writer)
            zygote.close()
        wait_for(lambda: not alive(pid), "the spare to exit once its job pipe closed")
    asyncio.run(run())


def test_a_waiting_shim_holds_only_its_job_pipe_and_dev_null() -> None:
    async def run() -> None:
        zygote = Zygote()
        pid, writer = await zygote.spawn()
        try:
            wait_for(lambda: waiting_for_its_job(pid), "the shim to wait for its job")
            fds = {int(fd): os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
            pipe_inode = os.readlink(f"/proc/self/fd/{writer}")
        finally:
            os.close(writer)
            zygote.close()
        assert fds == {0: pipe_inode, 1: "/dev/null", 2: "/dev/null", 3: "/dev/null"}
    asyncio.run(run())


def test_a_forked_shim_has_no_blocked_signals_and_pythons_usual_dispositions() -> None:
    def sig_lines(pid: int) -> list[str]:
        return [line for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                if line.startswith(("SigBlk", "SigIgn", "SigCgt"))]

    async def run() -> None:
        zygote = Zygote()
        pid, writer = await zygote.spawn()
        try:
            wait_for(lambda: waiting_for_its_job(pid), "the shim to wait for its job")
            # A Python started as the old shims are: the same mask and dispositions.
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-S", "-E", "-c", "import os; print(open('/proc/self/status').read())",
                stdout=asyncio.subprocess.PIPE, start_new_session=True)
            out, _ = await proc.communicate()
            fresh = [line for line in out.decode().splitlines() if line.startswith(("SigBlk", "SigIgn", "SigCgt"))]
            assert sig_lines(pid) == fresh
        finally:
            os.close(writer)
            zygote.close()
    asyncio.run(run())


def test_after_the_zygote_is_killed_9_the_next_spawn_starts_a_new_one() -> None:
    async def run() -> None:
        zygote = Zygote()
        first, writer = await zygote.spawn()
        os.close(writer)
        old = zygote.pid
        os.kill(old, signal.SIGKILL)
        pid, writer = await zygote.spawn()
        os.close(writer)
        assert zygote.pid not in (0, old)
        assert pid not in (0, first)
        zygote.close()
        assert not alive(old)
    asyncio.run(run())


def test_a_zygote_killed_9_with_a_request_in_flight_is_replaced_and_the_spawn_succeeds() -> None:
    async def run() -> None:
        zygote = Zygote()
        _, writer = await zygote.spawn()
        os.close(writer)
        old = zygote.pid
        os.kill(old, signal.SIGSTOP)  # the request waits in its socket
        spawn = asyncio.ensure_future(zygote.spawn())
        await asyncio.sleep(0.05)
        assert not spawn.done()
        os.kill(old, signal.SIGKILL)
        pid, writer = await spawn
        os.close(writer)
        assert zygote.pid not in (0, old)
        zygote.close()
    asyncio.run(run())


def test_a_stuck_zygote_is_killed_after_the_reply_timeout_and_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zygote_client, "REPLY_TIMEOUT", 0.3)

    async def run() -> None:
        zygote = Zygote()
        _, writer = await zygote.spawn()
        os.close(writer)
        old = zygote.pid
        os.kill(old, signal.SIGSTOP)
        _, writer = await zygote.spawn()
        os.close(writer)
        assert zygote.pid not in (0, old)
        assert not alive(old)  # killed and reaped, not left stopped
        zygote.close()
    asyncio.run(run())


def test_a_zygote_that_keeps_failing_is_given_up_for_a_while_naming_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zygote_client, "REPLY_TIMEOUT", 0.2)
    silent = tmp_path / "silent.py"
    silent.write_text("import time\ntime.sleep(60)\n")  # a "zygote" that never answers

    async def run() -> None:
        zygote = Zygote()
        _, writer = await zygote.spawn()
        os.close(writer)
        monkeypatch.setattr(zygote_client, "ZYGOTE_SCRIPT", silent)
        os.kill(zygote.pid, signal.SIGKILL)
        with pytest.raises(ZygoteUnavailable) as err:
            await zygote.spawn()
        assert str(err.value) == "the shim zygote failed: no answer within 0.2s (shims as their own Python for 30 s)"
        with pytest.raises(ZygoteUnavailable) as err:
            await zygote.spawn()  # no third start of a broken one at every spare
        assert str(err.value) == "the shim zygote failed recently"
        zygote.close()
    asyncio.run(run())


def test_a_zygote_dying_after_the_fork_leaves_no_shim_behind(monkeypatch: pytest.MonkeyPatch, tag: bytes) -> None:
    monkeypatch.setenv("SHOAL_FAILPOINT", "zygote-after-fork")

    async def run() -> None:
        zygote = Zygote()
        with pytest.raises(ZygoteUnavailable) as err:
            await zygote.spawn()
        assert str(err.value) == "the shim zygote failed: the shim zygote exited (shims as their own Python for 30 s)"
        zygote.close()
    asyncio.run(run())
    # Two attempts, each forked a shim that got no job: both exit when their job pipe closes.
    wait_for(lambda: not forks_of_the_zygote(tag), "the shims forked for failed spawns to exit")


def test_the_runtime_starts_shims_the_old_way_when_the_zygote_cannot_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(zygote_client, "ZYGOTE_SCRIPT", tmp_path / "missing.py")

    async def run() -> None:
        rt = RuncRuntime(tmp_path / "runc", tmp_path / "state")
        pid, writer = await rt._spawn_shim()
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert cmdline[-2].endswith(b"agent/executor/shim.py")
        finally:
            os.close(writer)
            rt.close()
    asyncio.run(run())


def test_the_runtime_forks_its_shims_from_the_zygote(tmp_path: Path) -> None:
    async def run() -> None:
        rt = RuncRuntime(tmp_path / "runc", tmp_path / "state")
        pid, writer = await rt._spawn_shim()
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            assert cmdline[-2].endswith(b"agent/executor/zygote.py")  # forked, not exec'd
        finally:
            os.close(writer)
            rt.close()
    asyncio.run(run())


def test_shoal_shim_zygote_0_turns_the_zygote_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_SHIM_ZYGOTE", "0")
    assert RuncRuntime(tmp_path / "runc", tmp_path / "state")._zygote is None


def test_a_shim_gets_the_daemons_environment_of_the_moment_it_is_forked(monkeypatch: pytest.MonkeyPatch) -> None:
    def environ_of(pid: int) -> list[bytes]:
        return Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")

    async def run() -> None:
        zygote = Zygote()
        first, writer = await zygote.spawn()
        os.close(writer)
        old = zygote.pid
        monkeypatch.setenv("SHOAL_ZYGOTE_TEST_VALUE", "changed")
        pid, writer = await zygote.spawn()
        try:
            assert b"SHOAL_ZYGOTE_TEST_VALUE=changed" in environ_of(pid)
            assert zygote.pid not in (0, old)  # a zygote of the new environment
        finally:
            os.close(writer)
            zygote.close()
    asyncio.run(run())


def test_spawns_while_the_zygote_is_killed_9_at_random_moments_all_get_a_shim_and_leave_none_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, tag: bytes,
) -> None:
    import random
    import threading

    monkeypatch.setattr(zygote_client, "BROKEN_PAUSE", 0.0)  # a zygote again at every spawn: many kills land
    caplog.set_level(logging.INFO, logger="agent.executor.zygote_client")

    rng = random.Random(12)
    done = threading.Event()
    rt = RuncRuntime(tmp_path / "runc", tmp_path / "state")
    killed = []

    def killer() -> None:
        while not done.wait(rng.uniform(0.01, 0.06)):
            pid = rt._zygote.pid
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                except ProcessLookupError:
                    pass

    async def run() -> list[int]:
        pids = []
        while len(killed) < 5 and len(pids) < 1000:  # until five kills have landed somewhere among the spawns
            pid, writer = await rt._spawn_shim()
            assert alive(pid)  # a live spare every time, from some zygote or the old way
            pids.append(pid)
            os.close(writer)
        return pids

    shim_script = str(Path(zygote_client.__file__).with_name("shim.py")).encode()
    thread = threading.Thread(target=killer)
    thread.start()
    try:
        pids = asyncio.run(run())
    finally:
        done.set()
        thread.join()
        rt.close()
    assert len(set(pids)) == len(pids) and len(killed) >= 5
    # A killed zygote is noticed by its EOF, never by waiting out the reply timeout.
    assert [r.getMessage() for r in caplog.records if "no answer" in r.getMessage()] == []
    wait_for(lambda: not any(alive(pid) for pid in pids), "every spare to exit once its job pipe closed")
    wait_for(lambda: not forks_of_the_zygote(tag), "no zygote nor forked shim left")
    leftover = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if (shim_script in Path(f"/proc/{entry}/cmdline").read_bytes()
                    and tag in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0") and alive(int(entry))):
                leftover.append(int(entry))
        except OSError:
            continue
    assert leftover == []  # nor a shim started the old way


def test_close_with_a_request_in_flight_ends_that_request_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(zygote_client, "REPLY_TIMEOUT", 60.0)

    async def run() -> None:
        zygote = Zygote()
        _, writer = await zygote.spawn()
        os.close(writer)
        old = zygote.pid
        os.kill(old, signal.SIGSTOP)  # the request waits in its socket
        spawn = asyncio.ensure_future(zygote.spawn())
        await asyncio.sleep(0.05)
        zygote.close()  # (kills the stopped zygote: it cannot exit on EOF)
        with pytest.raises(ZygoteUnavailable) as err:
            await asyncio.wait_for(spawn, 10)  # not the reply timeout
        assert str(err.value) == "the shim zygote is closed"
        assert not alive(old)
    asyncio.run(run())


def test_the_runtime_reports_a_broken_zygote_once_not_at_every_shim_of_the_pause(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(zygote_client, "ZYGOTE_SCRIPT", tmp_path / "missing.py")

    async def run() -> None:
        rt = RuncRuntime(tmp_path / "runc", tmp_path / "state")
        for _ in range(3):
            _, writer = await rt._spawn_shim()
            os.close(writer)
        rt.close()
    asyncio.run(run())
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "the shim zygote failed: the shim zygote exited (shims as their own Python for 30 s): "
        "starting the shim as its own Python"]
