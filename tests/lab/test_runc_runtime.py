"""Lab tests for agent.executor.runtime: real runc containers on a busybox rootfs in a test-made netns.
Needs root; every container, mount, namespace and process made here is removed by the fixtures."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.executor.runtime import ExecRun, RuncError, RuncRuntime
from agent.executor.stdio import ShimConnection, StdioOptions
from agent.executor.spec import Mount, ProcessSpec

pytestmark = pytest.mark.lab
assert shutil.which("runc"), "scripts/install.sh installs runc"

REPO = Path(__file__).resolve().parents[2]
ENV = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def mounted_under(path: Path) -> list[str]:
    text = Path("/proc/self/mountinfo").read_text()
    return [line for line in text.splitlines() if str(path) in line]


def mount_type(point: Path) -> str:
    """The file system type of what is mounted at point ("" when nothing is)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(point):
            return fields[fields.index("-") + 1]
    return ""


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny busybox image rootfs."""
    root = tmp_path_factory.mktemp("image") / "rootfs"
    for sub in ("bin", "etc", "proc", "sys", "dev", "root"):
        (root / sub).mkdir(parents=True)
    (root / "tmp").mkdir(mode=0o1777)
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy2(busybox, root / "bin" / "busybox")
    applets = subprocess.run([busybox, "--list"], capture_output=True, text=True, check=True).stdout.split()
    for applet in applets:
        if applet != "busybox":
            (root / "bin" / applet).symlink_to("busybox")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
    (root / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (root / "etc" / "hosts").write_text("")
    return root


@pytest.fixture
def prefix() -> str:
    return f"shrt{uuid.uuid4().hex[:8]}"


@pytest.fixture
def netns(prefix: str) -> Iterator[str]:
    name = f"{prefix}-ns"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield f"/run/netns/{name}"
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _force_cleanup(runc_root: Path, *dirs: Path) -> None:
    """Removes whatever a test left behind, without trusting the code under test."""
    for root in dirs:
        if not root.is_dir():
            continue
        for d in root.iterdir():
            subprocess.run(["runc", "--root", str(runc_root), "delete", "--force", d.name], capture_output=True)
            shim = d / "shim.pid"
            if shim.exists():
                shim_pid = int(shim.read_text().split()[0])
                if pid_alive(shim_pid):
                    wait_until(lambda: not pid_alive(shim_pid), what=f"shim {shim_pid} to exit")
        for point in sorted((line.split()[4] for line in mounted_under(root)), reverse=True):
            subprocess.run(["umount", "-l", point], check=False)  # overlays, and binds ismount cannot see
    for root in dirs:
        shutil.rmtree(root, ignore_errors=True)
    shutil.rmtree(runc_root, ignore_errors=True)


# Both layouts: bundle and writable layer in one directory per container, and the daemon's (bundles on the exec
# root's tmpfs, layers on disk: RuncRuntime's bundle_root apart from its state_root).
@pytest.fixture(params=["one-dir", "bundles-apart"])
def roots(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Path, ...]]:
    runc_root, state_root = tmp_path / "runc", tmp_path / "state"
    bundles = (tmp_path / "bundles",) if request.param == "bundles-apart" else ()
    try:
        yield (runc_root, state_root, *bundles)
    finally:
        _force_cleanup(runc_root, *bundles, state_root)


@pytest.fixture
def rt(roots: tuple[Path, ...]) -> RuncRuntime:
    return RuncRuntime(*roots)


def run(coro):  # noqa: ANN001, ANN201 - a tiny alias keeps the tests readable
    return asyncio.run(coro)


async def start(rt: RuncRuntime, cid: str, image: Path, args: list[str], netns: str | None, mounts=()) -> int:  # noqa: ANN001
    await rt.prepare(cid, image, ProcessSpec(args, ENV), cid[:12], netns, list(mounts))
    return await rt.start(cid)


async def exec_collect(rt: RuncRuntime, cid: str, args: list[str]) -> tuple[int, bytes, bytes]:
    execution = await rt.exec(cid, ProcessSpec(args, ENV))
    return await execution.collect()


def test_started_container_is_running_with_a_live_pid(rt: RuncRuntime, image: Path, netns: str, prefix: str) -> None:
    cid = f"{prefix}-run"
    pid = run(start(rt, cid, image, ["sleep", "3600"], netns))
    status = rt.status(cid)
    assert (status.state, status.pid, status.exit_code) == ("running", pid, None)
    assert pid_alive(pid)
    assert Path(f"/proc/{pid}/cmdline").read_bytes() == b"sleep\x003600\x00"


def test_container_sees_only_lo_in_its_netns(rt: RuncRuntime, image: Path, netns: str, prefix: str) -> None:
    cid = f"{prefix}-lo"

    async def body() -> tuple[int, bytes, bytes]:
        await start(rt, cid, image, ["sleep", "3600"], netns)
        return await exec_collect(rt, cid, ["ip", "-o", "link"])

    code, out, _ = run(body())
    names = [line.split(":")[1].strip() for line in out.decode().splitlines()]
    assert (code, names) == (0, ["lo"])


def test_host_networking_shares_the_callers_interfaces(rt: RuncRuntime, image: Path, prefix: str) -> None:
    cid = f"{prefix}-host"

    async def body() -> tuple[int, bytes, bytes]:
        await start(rt, cid, image, ["sleep", "3600"], None)
        return await exec_collect(rt, cid, ["cat", "/proc/net/dev"])

    code, out, _ = run(body())
    inside = {line.split(":")[0].strip() for line in out.decode().splitlines()[2:]}
    outside = {line.split(":")[0].strip() for line in Path("/proc/net/dev").read_text().splitlines()[2:]}
    assert code == 0
    assert inside == outside


def test_exit_code_of_sh_exit_3_is_3(rt: RuncRuntime, image: Path, netns: str, prefix: str) -> None:
    cid = f"{prefix}-exit"

    async def body() -> int:
        await start(rt, cid, image, ["sh", "-c", "exit 3"], netns)
        return await rt.wait(cid)

    assert run(body()) == 3
    status = rt.status(cid)
    assert (status.state, status.exit_code) == ("exited", 3)


def test_a_second_start_leaves_none_of_the_first_runs_files_and_runs_again(
    rt: RuncRuntime, image: Path, netns: str, prefix: str
) -> None:
    cid = f"{prefix}-again"

    async def body() -> tuple[int, int, set[str]]:
        await start(rt, cid, image, ["sh", "-c", "exit 3"], netns)
        first = await rt.wait(cid)
        (rt.bundle_dir(cid) / "exit.failed").write_text("1\n")  # as a failed start before leaves it
        pid = await start(rt, cid, image, ["sleep", "3600"], netns)
        return first, pid, set(os.listdir(rt.bundle_dir(cid)))

    first, pid, files = run(body())
    assert first == 3
    assert {"exit", "exit.failed", "exit.tmp"}.isdisjoint(files)
    assert {"pid", "started", "shim.pid"} <= files
    assert (rt.status(cid).state, rt.status(cid).pid) == ("running", pid)


def test_a_start_of_a_running_container_is_refused_and_leaves_it_running(
    rt: RuncRuntime, image: Path, netns: str, prefix: str
) -> None:
    cid = f"{prefix}-twice"
    pid = run(start(rt, cid, image, ["sleep", "3600"], netns))
    with pytest.raises(RuncError, match=rf"^container {cid} is already running$"):
        run(rt.start(cid))
    assert (rt.status(cid).state, rt.status(cid).pid) == ("running", pid)


def test_a_start_without_a_bundle_is_refused(rt: RuncRuntime, prefix: str) -> None:
    with pytest.raises(RuncError, match=rf"^container {prefix}-none has no bundle: prepare it first$"):
        run(rt.start(f"{prefix}-none"))


def test_stop_of_sleep_ignoring_sigterm_ends_in_sigkill_137(rt: RuncRuntime, image: Path, netns: str, prefix: str) -> None:
    cid = f"{prefix}-stop"

    async def body() -> int:
        await start(rt, cid, image, ["sleep", "3600"], netns)
        return await rt.stop(cid, timeout=0.5)

    assert run(body()) == 137
    assert (rt.status(cid).state, rt.status(cid).exit_code) == ("exited", 137)


def test_stop_of_a_process_that_handles_sigterm_returns_its_own_code(
    rt: RuncRuntime, image: Path, netns: str, prefix: str
) -> None:
    cid = f"{prefix}-term"
    script = 'trap "exit 143" TERM; touch /tmp/ready; while true; do sleep 0.05; done'

    async def body() -> int:
        await start(rt, cid, image, ["sh", "-c", script], netns)
        wait_until(lambda: (rt.rootfs(cid) / "tmp" / "ready").exists(), what="trap installed")
        return await rt.stop(cid, timeout=30)

    assert run(body()) == 143


def test_stdout_and_stderr_go_to_the_json_log_in_write_order(
    rt: RuncRuntime, image: Path, netns: str, prefix: str
) -> None:
    cid = f"{prefix}-logs"

    async def body() -> int:
        await start(rt, cid, image, ["sh", "-c", "echo to-out; sleep 0.1; echo to-err >&2; sleep 0.1; echo again"], netns)
        return await rt.wait(cid)

    assert run(body()) == 0
    entries = [json.loads(line) for line in rt.log_path(cid).read_text().splitlines()]
    assert [(e["log"], e["stream"]) for e in entries] == [
        ("to-out\n", "stdout"), ("to-err\n", "stderr"), ("again\n", "stdout")]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", e["time"]) for e in entries)


def test_exec_returns_output_and_exit_code(rt: RuncRuntime, image: Path, netns: str, prefix: str) -> None:
    cid = f"{prefix}-exec"

    async def body() -> tuple[int, bytes, bytes]:
        await start(rt, cid, image, ["sleep", "3600"], netns)
        return await exec_collect(rt, cid, ["sh", "-c", "echo out; echo err >&2; exit 5"])

    assert run(body()) == (5, b"out\n", b"err\n")


def test_exec_output_streams_before_the_process_ends(rt: RuncRuntime, image: Path, netns: str, prefix: str) -> None:
    cid = f"{prefix}-stream"
    script = "echo first; while [ ! -f /tmp/go ]; do sleep 0.05; done; echo second >&2"

    async def body() -> tuple[list[tuple[int, bytes]], int | None, int]:
        await start(rt, cid, image, ["sleep", "3600"], netns)
        execution: ExecRun = await rt.exec_stream(cid, ProcessSpec(["sh", "-c", script], ENV))
        chunks = []
        code_after_first = -1
        async for item in execution.output():
            chunks.append(item)
            if len(chunks) == 1:
                code_after_first = execution.exit_code  # still running: None
                (rt.rootfs(cid) / "tmp" / "go").touch()
        return chunks, code_after_first, await execution.wait()

    chunks, code_after_first, code = run(body())
    assert chunks == [(1, b"first\n"), (2, b"second\n")]
    assert code_after_first is None
    assert code == 0


def test_exec_of_missing_binary_is_127_with_runcs_message(rt: RuncRuntime, image: Path, netns: str, prefix: str) -> None:
    cid = f"{prefix}-nobin"

    async def body() -> tuple[tuple[int, bytes, bytes], str | None]:
        await start(rt, cid, image, ["sleep", "3600"], netns)
        execution = await rt.exec(cid, ProcessSpec(["nosuch"], ENV))
        return await execution.collect(), execution.error

    (code, out, err), error = run(body())
    assert code == 127
    assert out == b""
    assert b'exec: "nosuch": executable file not found in $PATH' in err
    assert error is not None and 'exec: "nosuch": executable file not found in $PATH' in error


def test_exec_in_a_stopped_container_is_refused(rt: RuncRuntime, image: Path, netns: str, prefix: str) -> None:
    cid = f"{prefix}-exstop"

    async def body() -> None:
        await start(rt, cid, image, ["true"], netns)
        await rt.wait(cid)
        await rt.exec(cid, ProcessSpec(["true"], ENV))

    with pytest.raises(RuncError, match=f"container {cid} is not running"):
        run(body())


def test_start_of_missing_binary_raises_runcs_message(rt: RuncRuntime, image: Path, netns: str, prefix: str) -> None:
    cid = f"{prefix}-badstart"
    with pytest.raises(RuncError) as caught:
        run(start(rt, cid, image, ["nosuch"], netns))
    assert 'exec: "nosuch": executable file not found in $PATH' in caught.value.message
    assert caught.value.exit_code == 127
    assert rt.status(cid).state == "created"


def test_failed_start_can_be_retried_after_fixing_the_image(
    rt: RuncRuntime, image: Path, netns: str, prefix: str
) -> None:
    cid = f"{prefix}-retry"

    async def body() -> int:
        with pytest.raises(RuncError):
            await start(rt, cid, image, ["/bin/late"], netns)
        (rt.rootfs(cid) / "bin" / "late").symlink_to("busybox")  # lands in the container's upper layer
        await rt.prepare(cid, image, ProcessSpec(["/bin/late"], ENV), "h", netns, [])  # "late" is not an applet
        await rt.start(cid)
        return await rt.wait(cid)

    assert run(body()) == 127  # busybox: "late: applet not found" — the process itself ran this time
    assert not (image / "bin" / "late").exists()


def test_bind_mount_shows_the_host_file_read_only(
    rt: RuncRuntime, image: Path, netns: str, prefix: str, tmp_path: Path
) -> None:
    cid = f"{prefix}-bind"
    hosts = tmp_path / "hosts"
    hosts.write_text("10.0.0.5 web\n")

    async def body() -> tuple[tuple[int, bytes, bytes], tuple[int, bytes, bytes]]:
        await start(rt, cid, image, ["sleep", "3600"], netns, [Mount(str(hosts), "/etc/hosts", readonly=True)])
        read = await exec_collect(rt, cid, ["cat", "/etc/hosts"])
        write = await exec_collect(rt, cid, ["sh", "-c", "echo x >> /etc/hosts"])
        return read, write

    read, write = run(body())
    assert read == (0, b"10.0.0.5 web\n", b"")
    assert write[0] != 0 and b"Read-only file system" in write[2]
    assert hosts.read_text() == "10.0.0.5 web\n"


def test_second_runtime_sees_running_container_then_its_exit(
    roots: tuple[Path, ...], image: Path, netns: str, prefix: str
) -> None:
    cid = f"{prefix}-restore"
    script = "while [ ! -f /tmp/go ]; do sleep 0.05; done; exit 7"
    first = RuncRuntime(*roots)
    pid = run(start(first, cid, image, ["sh", "-c", script], netns))
    restarted = RuncRuntime(*roots)
    assert restarted.list_ids() == [cid]
    status = restarted.status(cid)
    assert (status.state, status.pid) == ("running", pid)
    (restarted.rootfs(cid) / "tmp" / "go").touch()
    assert run(restarted.wait(cid)) == 7
    status = restarted.status(cid)
    assert (status.state, status.exit_code) == ("exited", 7)


CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    from agent.executor.runtime import RuncRuntime
    from agent.executor.spec import ProcessSpec

    async def main():
        rt = RuncRuntime(Path(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[7]) if len(sys.argv) > 7 else None)
        await rt.prepare(sys.argv[4], Path(sys.argv[5]), ProcessSpec(["sleep", "3600"], ["PATH=/bin"]),
                         "h", sys.argv[6], [])
        print(await rt.start(sys.argv[4]), flush=True)

    asyncio.run(main())
    time.sleep(3600)
    """
)


def test_container_survives_sigkill_of_the_process_that_started_it(
    roots: tuple[Path, ...], image: Path, netns: str, prefix: str
) -> None:
    cid = f"{prefix}-orphan"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(REPO), str(roots[0]), str(roots[1]), cid, str(image), netns,
         *map(str, roots[2:])],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = child.stdout.readline()  # type: ignore[union-attr]
        pid = int(line)
        child.send_signal(signal.SIGKILL)
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert pid_alive(pid)
    restarted = RuncRuntime(*roots)
    assert (restarted.status(cid).state, restarted.status(cid).pid) == ("running", pid)
    assert run(restarted.stop(cid, timeout=0.2)) == 137


def test_kill_of_an_exited_container_is_no_error(rt: RuncRuntime, image: Path, netns: str, prefix: str) -> None:
    cid = f"{prefix}-killx"

    async def body() -> int:
        await start(rt, cid, image, ["true"], netns)
        await rt.wait(cid)
        await rt.kill(cid, signal.SIGKILL)
        return await rt.wait(cid)

    assert run(body()) == 0


def test_prepare_twice_keeps_one_overlay_mount(rt: RuncRuntime, image: Path, netns: str, prefix: str) -> None:
    cid = f"{prefix}-twice"

    async def body() -> None:
        for _ in range(2):
            await rt.prepare(cid, image, ProcessSpec(["true"], ENV), "h", netns, [])

    run(body())
    rootfs = rt.rootfs(cid)
    assert len([line for line in mounted_under(rootfs) if f" {rootfs} " in line]) == 1
    assert (rootfs / "bin" / "busybox").exists()


def test_remove_kills_unmounts_and_deletes_everything(
    rt: RuncRuntime, roots: tuple[Path, ...], image: Path, netns: str, prefix: str
) -> None:
    cid = f"{prefix}-rm"
    pid = run(start(rt, cid, image, ["sleep", "3600"], netns))
    state_dir, bundle = roots[1] / cid, rt.bundle_dir(cid)
    run(rt.remove(cid))
    wait_until(lambda: not pid_alive(pid), what="container process to die")
    assert (state_dir.exists(), bundle.exists()) == (False, False)
    assert mounted_under(state_dir) + mounted_under(bundle) == []
    listed = subprocess.run(["runc", "--root", str(roots[0]), "list", "-q"], capture_output=True, text=True)
    assert cid not in listed.stdout.split()
    assert rt.list_ids() == []
    assert (image / "bin" / "busybox").exists()


def test_remove_is_idempotent(rt: RuncRuntime, image: Path, netns: str, prefix: str) -> None:
    cid = f"{prefix}-rm2"

    async def body() -> None:
        await start(rt, cid, image, ["true"], netns)
        await rt.remove(cid)
        await rt.remove(cid)

    run(body())
    assert rt.status(cid).state == "unknown"


def test_prepare_with_a_missing_image_leaves_nothing_behind(
    rt: RuncRuntime, roots: tuple[Path, ...], tmp_path: Path, netns: str, prefix: str
) -> None:
    cid = f"{prefix}-noimg"
    missing = tmp_path / "no-such-image"
    with pytest.raises(RuncError, match=f"image rootfs {missing} is not a directory"):
        run(rt.prepare(cid, missing, ProcessSpec(["true"], ENV), "h", netns, []))
    assert ((roots[1] / cid).exists(), rt.bundle_dir(cid).exists()) == (False, False)


def test_prepare_with_a_bad_process_leaves_nothing_behind(
    rt: RuncRuntime, roots: tuple[Path, ...], image: Path, netns: str, prefix: str
) -> None:
    cid = f"{prefix}-badproc"
    with pytest.raises(ValueError, match="'NOEQUALS'"):
        run(rt.prepare(cid, image, ProcessSpec(["true"], ["NOEQUALS"]), "h", netns, []))
    assert ((roots[1] / cid).exists(), rt.bundle_dir(cid).exists()) == (False, False)


def test_prepare_falls_back_to_a_copy_when_overlay_fails(
    rt: RuncRuntime, image: Path, netns: str, prefix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cid = f"{prefix}-copy"
    # A comma in lowerdir breaks overlay's option parsing, so the mount fails.
    awkward = tmp_path / "img,with-comma"
    subprocess.run(["cp", "-a", str(image), str(awkward)], check=True)

    async def body() -> tuple[int, bytes, bytes]:
        await rt.prepare(cid, awkward, ProcessSpec(["sleep", "3600"], ENV), "h", netns, [])
        await rt.start(cid)
        return await exec_collect(rt, cid, ["sh", "-c", "echo mine > /tmp/f; cat /tmp/f"])

    async def again() -> tuple[int, bytes, bytes]:  # a restart keeps the copy: it is the container's layer
        await rt.stop(cid, timeout=0.2)
        await rt.remove(cid, keep_layer=True)
        await rt.prepare(cid, awkward, ProcessSpec(["sleep", "3600"], ENV), "h", netns, [])
        await rt.start(cid)
        return await exec_collect(rt, cid, ["cat", "/tmp/f"])

    assert run(body()) == (0, b"mine\n", b"")
    assert mount_type(rt.rootfs(cid)) != "overlay"
    assert "overlay mount for container" in caplog.text
    assert not (awkward / "tmp" / "f").exists()
    assert (rt.state_root / cid / "rootfs" / "tmp" / "f").read_text() == "mine\n"  # on disk, in the layer
    assert run(again()) == (0, b"mine\n", b"")
    run(rt.remove(cid))
    assert rt.list_ids() == []
    assert mounted_under(rt.bundle_root) + mounted_under(rt.state_root) == []


async def _collect_until(conn, marker: bytes, timeout: float = 10.0) -> bytes:
    got = b""

    async def read() -> None:
        nonlocal got
        async for _, chunk in conn.output():
            got += chunk
            if marker in got:
                return

    await asyncio.wait_for(read(), timeout)
    return got


def test_tty_container_gets_a_pty_through_the_console_socket(
    rt: RuncRuntime, image: Path, netns: str, prefix: str
) -> None:
    cid = f"{prefix}-tty"

    async def body() -> tuple[bytes, bytes, int, int | None]:
        await rt.prepare(cid, image, ProcessSpec(["sh"], ENV, tty=True), cid[:12], netns, [])
        await rt.start(cid, StdioOptions(tty=True, open_stdin=True, console_size=(31, 97)))
        conn = await ShimConnection.open(rt.bundle_dir(cid), stdin=True, stdout=True, stderr=True)
        await conn.send_stdin(b"tty; stty size\n")
        # the markers end with the line end: a pty's output may arrive split anywhere (seen in CI: "44 132" in one
        # chunk, its "\r\n" in the next)
        first = await _collect_until(conn, b"31 97\r\n")
        await conn.resize(44, 132)
        await conn.send_stdin(b"stty size; exit 5\n")
        second = await _collect_until(conn, b"44 132\r\n")
        async for _ in conn.output():
            pass  # until the shim closes: after the EXIT frame
        await conn.close()
        return first, second, await rt.wait(cid), conn.exit_code

    first, second, code, reported = run(body())
    assert b"/dev/pts/0\r\n31 97\r\n" in first
    assert b"44 132\r\n" in second
    assert (code, reported) == (5, 5)
    assert "44 132\\r\\n" in rt.log_path(cid).read_text()


def test_stdin_once_closes_the_containers_stdin_when_the_client_ends_it(
    rt: RuncRuntime, image: Path, netns: str, prefix: str
) -> None:
    cid = f"{prefix}-once"

    async def body() -> tuple[bytes, int]:
        await rt.prepare(cid, image, ProcessSpec(["sh", "-c", "tr a-z A-Z"], ENV), cid[:12], netns, [])
        rt.attach_waiting[cid] = 1  # an attach announced before the start: output is held for it
        await rt.start(cid, StdioOptions(open_stdin=True, stdin_once=True))
        del rt.attach_waiting[cid]
        conn = await ShimConnection.open(rt.bundle_dir(cid), stdin=True, stdout=True, stderr=True)
        await conn.send_stdin(b"quiet words\n")
        await conn.close_stdin()
        out = b"".join([chunk async for _, chunk in conn.output()])
        await conn.close()
        return out, await rt.wait(cid)

    assert run(body()) == (b"QUIET WORDS\n", 0)


def test_the_etc_mount_points_come_from_the_init_layer_not_the_containers_writable_layer(
    rt: RuncRuntime, image: Path, netns: str, prefix: str, tmp_path: Path
) -> None:
    cid = f"{prefix}-initlayer"
    files = {}
    for name in ("hosts", "hostname", "resolv.conf"):
        files[name] = tmp_path / name
        files[name].write_text(f"{name} of the container\n")
    mounts = [Mount(str(path), f"/etc/{name}") for name, path in files.items()]

    async def body() -> tuple[int, bytes, bytes]:
        await start(rt, cid, image, ["sleep", "3600"], netns, mounts)
        return await exec_collect(rt, cid, ["cat", "/etc/hosts", "/etc/hostname", "/etc/resolv.conf"])

    assert run(body()) == (0, b"hosts of the container\nhostname of the container\nresolv.conf of the container\n", b"")
    assert sorted(p.name for p in (rt.state_root / cid / "upper").iterdir()) == []
    assert sorted(str(p.relative_to(rt.init_layer)) for p in rt.init_layer.rglob("*")) == [
        "etc", "etc/hostname", "etc/hosts", "etc/resolv.conf"]
