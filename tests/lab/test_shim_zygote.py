"""Lab tests for the shim zygote (agent/executor/zygote.py, zygote_client.py) under real runc containers: a forked
shim serves a container as one started as its own Python does, and the zygote's death never costs a container."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.executor.runtime import RuncRuntime
from agent.executor.spec import ProcessSpec
from agent.executor.stdio import ShimConnection, StdioOptions
from tests.lab.test_runc_runtime import (  # noqa: F401 - fixtures
    ENV, REPO, image, netns, pid_alive, prefix, roots, run, rt, wait_until,
)

pytestmark = pytest.mark.lab


def shim_of(rt: RuncRuntime, cid: str) -> int:
    return int((rt.bundle_dir(cid) / "shim.pid").read_text().split()[0])


def settled_fd_kinds(pid: int, cid: str) -> dict[int, str]:
    """The fds of a shim serving its container (start() returns once the container runs, the shim may still be
    tidying up after runc): once it holds the container's pidfd and two looks agree."""
    def look() -> dict[int, str] | None:
        try:
            first, second = fd_kinds(pid, cid), fd_kinds(pid, cid)
        except FileNotFoundError:
            return None  # an fd closed while being read
        return first if first == second and "anon_inode:[pidfd]" in first.values() else None
    got: list[dict[int, str]] = []
    wait_until(lambda: bool(got.append(look()) or got[-1]), what=f"shim {pid} to settle")
    return got[-1]


def fd_kinds(pid: int, cid: str) -> dict[int, str]:
    """A process's fds by kind: inode numbers dropped, the container's id and state dirs replaced by names."""
    kinds = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        target = re.sub(r"\[\d+\]$", "", target)
        target = re.sub(r"^/.*/(state|container-logs)/", r"\1/", target).replace(cid, "ID")
        kinds[int(fd)] = target
    return kinds


async def start_logging(rt: RuncRuntime, cid: str, image: Path, netns: str, **stdio) -> int:  # noqa: ANN003
    tty = bool(stdio.get("tty"))
    args = ["sh"] if tty else ["sh", "-c", "echo started; exec sleep 3600"]
    await rt.prepare(cid, image, ProcessSpec(args, ENV, tty=tty), cid[:12], netns, [])
    return await rt.start(cid, StdioOptions(**stdio))


@pytest.mark.parametrize("stdio", [{}, {"open_stdin": True}, {"tty": True, "open_stdin": True}],
                         ids=["pipes", "stdin", "tty"])
def test_a_forked_shim_holds_the_same_fds_as_one_started_as_its_own_python(
    roots: tuple[Path, ...], image: Path, netns: str, prefix: str, monkeypatch: pytest.MonkeyPatch, stdio: dict,
) -> None:
    forked = RuncRuntime(*roots)
    monkeypatch.setenv("SHOAL_SHIM_ZYGOTE", "0")
    exec_d = RuncRuntime(*roots)
    monkeypatch.delenv("SHOAL_SHIM_ZYGOTE")

    async def body() -> tuple[dict[int, str], dict[int, str], bytes]:
        await start_logging(forked, f"{prefix}-new", image, netns, **stdio)
        await start_logging(exec_d, f"{prefix}-old", image, netns, **stdio)
        new, old = shim_of(forked, f"{prefix}-new"), shim_of(exec_d, f"{prefix}-old")
        return (settled_fd_kinds(new, f"{prefix}-new"), settled_fd_kinds(old, f"{prefix}-old"),
                Path(f"/proc/{new}/cmdline").read_bytes())

    try:
        new, old, cmdline = run(body())
    finally:
        forked.close()
        exec_d.close()
    assert cmdline.split(b"\0")[-2].endswith(b"agent/executor/zygote.py")  # this one was forked
    assert new == old
    assert "socket:" in new.values()  # the attach listener, no other socket (none of the zygote's)
    assert list(new.values()).count("socket:") == 1


def test_after_the_zygote_is_killed_9_the_next_container_starts_and_logs(
    rt: RuncRuntime, image: Path, netns: str, prefix: str
) -> None:
    async def body() -> tuple[int, int, int]:
        await start_logging(rt, f"{prefix}-a", image, netns)
        first = rt._zygote.pid
        os.kill(first, signal.SIGKILL)
        await asyncio.sleep(0)  # (the kill may land with a spare's request in flight: retried, see the unit tests)
        await start_logging(rt, f"{prefix}-b", image, netns)
        return first, rt._zygote.pid, rt.status(f"{prefix}-b").pid

    try:
        first, second, pid = run(body())
    finally:
        rt.close()
    assert second not in (0, first)
    assert pid_alive(pid)
    wait_until(lambda: '"log":"started\\n"' in rt.log_path(f"{prefix}-b").read_text(), what="the log line")
    assert pid_alive(rt.status(f"{prefix}-a").pid)  # the first container did not notice


def test_a_container_outlives_the_zygote_that_forked_its_shim_and_stays_attachable(
    rt: RuncRuntime, image: Path, netns: str, prefix: str
) -> None:
    cid = f"{prefix}-tty"

    async def body() -> bytes:
        await start_logging(rt, cid, image, netns, tty=True, open_stdin=True)
        zygote = rt._zygote.pid
        os.kill(zygote, signal.SIGKILL)
        wait_until(lambda: not pid_alive(zygote), what="the zygote to die")
        conn = await ShimConnection.open(rt.bundle_dir(cid), stdin=True, stdout=True, stderr=True)
        await conn.send_stdin(b"echo alive-$((6*7)); exit 3\n")
        out = b"".join([chunk async for _, chunk in conn.output()])
        await conn.close()
        return out

    try:
        out = run(body())
        assert b"alive-42" in out
        assert run(rt.wait(cid)) == 3
    finally:
        rt.close()
    assert "alive-42" in rt.log_path(cid).read_text()


CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from agent.executor.runtime import RuncRuntime
    from agent.executor.spec import ProcessSpec

    async def main():
        rt = RuncRuntime(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[7]) if len(sys.argv) > 7 else None)
        await rt.prepare(sys.argv[4], Path(sys.argv[5]), ProcessSpec(["sh", "-c", "while true; do echo tick; sleep 0.1; done"], ["PATH=/bin"]),
                         "h", sys.argv[6], [])
        pid = await rt.start(sys.argv[4])
        print(pid, rt._zygote.pid, flush=True)

    asyncio.run(main())
    time.sleep(3600)
    """
)


def test_the_zygote_exits_with_the_daemon_killed_9_and_its_containers_keep_logging(
    roots: tuple[Path, ...], image: Path, netns: str, prefix: str
) -> None:
    cid = f"{prefix}-orphan"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(REPO), str(roots[0]), str(roots[1]), cid, str(image), netns,
         *map(str, roots[2:])],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        pid, zygote = (int(x) for x in child.stdout.readline().split())  # type: ignore[union-attr]
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    wait_until(lambda: not pid_alive(zygote), what="the zygote to exit when its daemon's socket closed")
    restarted = RuncRuntime(*roots)
    try:
        assert (restarted.status(cid).state, restarted.status(cid).pid) == ("running", pid)
        log = restarted.log_path(cid)
        lines = log.read_text().count("tick")
        wait_until(lambda: log.read_text().count("tick") > lines, what="the log to grow with no daemon")
        assert run(restarted.stop(cid, timeout=0.2)) == 137
    finally:
        restarted.close()


# ---- a lab daemon ------------------------------------------------------------------------------
def zygotes_of(daemon: int) -> list[int]:
    """The daemon's zygote(s): processes running this checkout's zygote.py whose parent is the daemon."""
    from agent.executor.zygote_client import ZYGOTE_SCRIPT

    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            continue
        if str(ZYGOTE_SCRIPT).encode() in cmdline and ppid == daemon and pid_alive(int(entry)):
            found.append(int(entry))
    return found


def test_a_daemon_killed_9_leaves_its_zygote_to_exit_and_the_next_daemon_starts_its_own(lab) -> None:  # noqa: ANN001
    from tests.lab.helpers import inspect_first, shoal

    lab = lab(hosts=1)
    shoal(lab, "run", "-d", "--name", "ticker", "busybox", "sh", "-c", "while true; do echo tick; sleep 0.1; done")
    first = lab.daemon_pid("h1")
    [old_zygote] = zygotes_of(first)
    lab.restart_daemon("h1", kill9=True)
    wait_until(lambda: not pid_alive(old_zygote), what="the old daemon's zygote to exit")
    ticks = shoal(lab, "logs", "ticker").stdout.count("tick")
    wait_until(lambda: shoal(lab, "logs", "ticker").stdout.count("tick") > ticks, what="the log to grow")
    shoal(lab, "run", "-d", "--name", "second", "busybox", "httpd", "-f", "-p", "80")
    assert inspect_first(lab, "inspect", "second")["State"]["Running"] is True
    assert len(zygotes_of(lab.daemon_pid("h1"))) == 1
