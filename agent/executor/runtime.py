"""Runs OCI containers with runc: bundles on an overlay rootfs, a detached shim per container, exec, stop, remove.
Called by the container manager (names, networks, Docker API); builds config.json with agent.executor.spec.

Two places per container, as containerd keeps them for Docker: the bundle (config.json, the rootfs mount point, the
pid, exit and log files of a run, the attach socket) under bundle_root, the daemon's exec root (meant to be memory:
/run is a tmpfs on a systemd host and in the lab, what a reboot ends with the container, and no new disk inode per
file there: each took ~1 ms of CPU on this machine's ext4), and the
writable layer (upper/ and work/ of the overlay, or the private copy of the image) under state_root on disk, kept
until the container is removed."""
from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import fcntl
import json
import logging
import os
import re
import resource
import shutil
import signal as signals
import struct
import sys
import termios
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.executor.spec import (
    NOFILE_LIMIT,
    Mount,
    ProcessSpec,
    SpecExtras,
    build_oci_spec,
    build_process,
)
from agent.executor import exitwatch, stdio
from agent.executor.stdio import StdioOptions
from agent.executor import zygote_client
from common.fsutil import Sync, write_atomic

log = logging.getLogger(__name__)

# runc's own rule for container ids; it also keeps ids from escaping state_root.
MAX_SPARES = 8  # spare shims a burst of prewarm() calls may ask for (each an idle process, forked: pages shared)
_VALID_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")

START_DEADLINE = 30.0
INIT_LAYER_FILES = ("etc/hosts", "etc/hostname", "etc/resolv.conf")  # the bind mounts every container gets
# wait() sleeps on a pidfd of the container's process (then on the bundle's inotify watch and the shim's
# pidfd); it looks at the files again this often all the same, so a change nothing announces (a bundle
# removed under it, a pid recorded without its start time that now names another process) is seen as the
# old 5 Hz poll saw it, only later. Costs ~0.03 ms/s per running container.
EXIT_SAFETY_POLL = 5.0
_CAP_SYS_RESOURCE = 24

# The shim (agent/executor/shim.py) outlives the daemon: its own session, reparented away at
# once. One is kept ready as a spare (waiting for its job on a pipe); a daemon that dies closes
# the pipe and the spare exits. Spares are forked by the zygote (agent/executor/zygote.py: no
# Python start-up per shim); started as their own Python (SHIM_SCRIPT) when it cannot.
SHIM_SCRIPT = Path(__file__).with_name("shim.py")


class RuncError(Exception):
    """runc refused or failed; message is runc's own text where it gave one.

    exit_code is Docker's code for a process that could not be started (127 not found,
    126 not executable), else None."""

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@dataclass(slots=True)
class RuncContainer:
    """One entry of `runc list`: what runc itself knows of a container."""

    id: str
    status: str  # "creating" | "created" | "running" | "paused" | "stopped"
    pid: int
    bundle: str


@dataclass(slots=True)
class ContainerStatus:
    state: str  # "running" | "exited" | "created" | "unknown"
    pid: int = 0
    exit_code: int | None = None


def start_failure_exit_code(message: str) -> int:
    """Docker's exit code for a process runc could not start (moby daemon/start.go)."""
    if "executable file not found" in message or "no such file or directory" in message:
        return 127
    if "permission denied" in message:
        return 126
    return 126


def runc_errors(log_text: str) -> list[str]:
    """Error messages from runc's json log (one object per line; other lines ignored)."""
    errors = []
    for line in log_text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("level") in ("error", "fatal") and entry.get("msg"):
            errors.append(str(entry["msg"]))
    return errors


def validate_container_id(container_id: str) -> None:
    if not _VALID_ID.fullmatch(container_id):
        raise ValueError(f"invalid container id {container_id!r}: use letters, digits, '_', '.', '+', '-'")


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks) of a process, None when it does not exist."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name may contain spaces and parentheses: fields start after the last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    return fields[0], int(fields[19])


def _is_alive(pid: int, start_time: int | None = None) -> bool:
    stat = _proc_stat(pid) if pid > 0 else None
    if stat is None or stat[0] in ("Z", "X"):
        return False
    # A recorded start time guards against the pid having been reused after a reboot or wrap.
    return start_time is None or stat[1] == start_time


def _nofile_limit() -> int:
    """Docker's 1048576 open files when we may raise the hard limit, else the most we can grant."""
    try:
        status = Path("/proc/self/status").read_text()
        cap_eff = int(re.search(r"^CapEff:\s*([0-9a-f]+)", status, re.M).group(1), 16)  # type: ignore[union-attr]
    except (OSError, AttributeError, ValueError):
        cap_eff = 0
    if cap_eff >> _CAP_SYS_RESOURCE & 1:
        return NOFILE_LIMIT
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return NOFILE_LIMIT if hard == resource.RLIM_INFINITY else min(NOFILE_LIMIT, hard)


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None


def _write_atomic(path: Path, data: str, sync: Sync = "none") -> None:
    # The bundle's files are read by runc and people: world-readable, as runc's own.
    # No fsync by default: a kill -9 of the daemon keeps what it wrote (the rename is atomic), and what
    # a power cut may lose is rewritten before it is read again (config.json, image: by every start's
    # prepare; exec-*.json: per exec) or names a process the power cut ended (shim.pid: a missing or
    # empty file reads as "no shim", which is then true). `started` is the exception: see _await_started_watched.
    write_atomic(path, data, mode=0o644, sync=sync)


# What a run of the container leaves in its bundle (the shim's and runc's): removed before the next start.
_RUN_FILES = ("pid", "exit", "exit.tmp", "exit.failed", "started", "shim.pid")


def _listing(directory: Path) -> set[str]:
    """The names in a directory; none when it does not exist."""
    try:
        return set(os.listdir(directory))
    except FileNotFoundError:
        return set()


def _mkdir(path: str) -> None:
    """Path.mkdir(parents=True, exist_ok=True) in one system call when the parent exists and the
    directory does not (a new bundle), without its stat when it does exist as a directory."""
    try:
        os.mkdir(path)
    except FileNotFoundError:
        Path(path).mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        if not os.path.isdir(path):
            raise


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _rootfs_ready(bundle: Path) -> bool:
    """The bundle's rootfs is there: the overlay (or the bind of the private copy) mounted, or the private copy
    itself made in the bundle (bundle and layer in one directory) when the overlay could not be."""
    return _mounted(bundle / "rootfs") or (bundle / "rootfs.copied").exists()


_BOUND = "rootfs.bound"  # in a bundle whose rootfs is a bind of the layer's private copy


def _mounted(point: Path) -> bool:
    """Whether something is mounted at point. os.path.ismount misses a bind mount from the same file system (it
    compares devices), which the private copy's bind may be: for a bundle marked as bound, mountinfo says."""
    if os.path.ismount(point):
        return True
    if not (point.parent / _BOUND).exists():
        return False
    escaped = str(point).replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == escaped for line in f)


def _mount_overlay(options: str, target: Path) -> bool:
    """True when mount(2) made the overlay; False (changing nothing) when it failed."""
    return _libc.mount(b"overlay", str(target).encode(), b"overlay", 0, options.encode()) == 0


_MS_BIND = 4096


def _bind(source: Path, target: Path) -> None:
    """Bind-mounts source onto target (the layer's private copy of an image onto the bundle's rootfs), marked in
    the bundle so that _mounted sees it."""
    (target.parent / _BOUND).touch()
    if _libc.mount(str(source).encode(), str(target).encode(), None, _MS_BIND, None) != 0:
        err = ctypes.get_errno()
        raise RuncError(f"cannot bind {source} onto {target}: {os.strerror(err)}")


async def _run(*argv: str) -> tuple[int, str]:
    """Runs a short command; (return code, stderr+stdout text)."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace").strip()


class ExecRun:
    """One `runc exec`: iterate output() for (1, chunk) / (2, chunk) as produced, then
    exit_code (or await wait()). A process runc could not start ends with 127/126 and runc's
    message as its stderr, like `docker exec`.

    With a TTY, runc exec runs in the foreground on a pty of ours as its host console (runc
    makes the container-side pty and copies, resizing it on SIGWINCH): output is one stream
    (1), resize() sets our pty's size and signals runc. Without, stdout/stderr are pipes and,
    when asked, stdin too."""

    def __init__(self, proc: asyncio.subprocess.Process, cleanup: list[Path], log_path: Path,
                 master: int | None = None, pid_file: Path | None = None) -> None:
        self._proc = proc
        self._pid_file = pid_file
        self._cleanup = cleanup
        self._log_path = log_path
        self._master = master
        self._queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(maxsize=64)
        if master is not None:
            self._readers = [asyncio.create_task(self._pump_fd(1, master))]
        else:
            self._readers = [
                asyncio.create_task(self._pump(1, proc.stdout)),  # type: ignore[arg-type]
                asyncio.create_task(self._pump(2, proc.stderr)),  # type: ignore[arg-type]
            ]
        self._consumer_started = False
        self._done: asyncio.Task[int] = asyncio.create_task(self._finish())
        self.exit_code: int | None = None
        self.error: str | None = None  # runc's message when the process could not be started

    @property
    def pid(self) -> int:
        """The pid of the runc exec process on the host (not the process inside)."""
        return self._proc.pid

    def process_pid(self) -> int:
        """The host pid of the process inside the container (runc exec --pid-file, when asked for);
        0 before runc wrote it or after it is gone. runc exec does not forward SIGKILL: this is
        the pid to kill."""
        if self._pid_file is None or self.exit_code is not None:
            return 0
        try:
            return int(self._pid_file.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0

    async def _pump(self, stream: int, reader: asyncio.StreamReader) -> None:
        while chunk := await reader.read(65536):
            await self._queue.put((stream, chunk))

    async def _pump_fd(self, stream: int, fd: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            ready = loop.create_future()
            loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
            try:
                await ready
            finally:
                loop.remove_reader(fd)
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                continue
            except OSError:  # EIO: runc closed its side of our pty
                return
            if not chunk:
                return
            await self._queue.put((stream, chunk))

    async def write_stdin(self, data: bytes) -> None:
        if self._master is not None:
            view = memoryview(data)
            while view:
                try:
                    view = view[os.write(self._master, view):]
                except BlockingIOError:
                    await asyncio.sleep(0.005)
                except OSError:
                    return
        elif self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.write(data)
            with contextlib.suppress(ConnectionError):
                await self._proc.stdin.drain()

    async def close_stdin(self) -> None:
        if self._master is None and self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.close()

    def resize(self, rows: int, cols: int) -> None:
        if self._master is None:
            return
        fcntl.ioctl(self._master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(signals.SIGWINCH)

    async def _finish(self) -> int:
        code = await self._proc.wait()
        if self._master is not None:
            # Whatever runc copied before it exited is still in our pty: read it, then close.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.gather(*self._readers), 2.0)
            for task in self._readers:
                task.cancel()
            os.close(self._master)
        else:
            await asyncio.gather(*self._readers)
        try:
            errors = runc_errors(self._log_path.read_text(errors="replace"))
        except FileNotFoundError:
            errors = []
        # runc exits 255 (or 1) with an error logged only when it failed itself; a process that
        # ran and exited non-zero leaves no error in runc's log.
        if code != 0 and errors:
            self.error = errors[-1]
            code = start_failure_exit_code(self.error)
        for path in self._cleanup:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.exit_code = code
        await self._queue.put(None)
        return code

    async def output(self) -> AsyncIterator[tuple[int, bytes]]:
        """(stream, chunk) pairs in arrival order; 1 is stdout, 2 is stderr. Iterate once."""
        if self._consumer_started:
            raise RuntimeError("ExecRun.output() can be iterated only once")
        self._consumer_started = True
        while (item := await self._queue.get()) is not None:
            yield item

    async def wait(self) -> int:
        """The exit code; discards the output if nobody iterates it (so pipes never block)."""
        if not self._consumer_started:
            async for _ in self.output():
                pass
        return await self._done

    async def drain(self) -> int:
        """The exit code, discarding the rest of the output (a client detached from it)."""
        while await self._queue.get() is not None:
            pass
        return await self._done

    async def collect(self) -> tuple[int, bytes, bytes]:
        """(exit code, stdout, stderr) of a short command."""
        out: list[bytes] = []
        err: list[bytes] = []
        async for stream, chunk in self.output():
            (out if stream == 1 else err).append(chunk)
        return await self.wait(), b"".join(out), b"".join(err)

    def kill(self, sig: int = signals.SIGKILL) -> None:
        """Signals runc exec, which forwards the signal to the process in the container."""
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(sig)


class RuncRuntime:
    """Bundles under bundle_root/<id>/ (config.json, rootfs mount point, pid, exit and log files, attach socket),
    writable layers under state_root/<id>/ (upper/, work/), runc state under runc_root. bundle_root defaults to
    state_root (one directory per container). Everything is recoverable from those files after a daemon restart."""

    def __init__(self, runc_root: Path, state_root: Path, bundle_root: Path | None = None, runc: str = "runc") -> None:
        self.runc_root = Path(runc_root)
        self.state_root = Path(state_root)
        self.bundle_root = Path(bundle_root) if bundle_root is not None else self.state_root
        self.runc = shutil.which(runc) or runc
        self._nofile = _nofile_limit()
        self.log_root = self.state_root.parent / "container-logs"
        self.init_layer = self.state_root.parent / "init-layer"
        self._init_layer_ready = False
        self._spares: list[tuple[int, int]] = []  # (shim pid, write end of its job pipe) of shims waiting for a job
        self._coming: set[asyncio.Task] = set()  # spares being started
        self._expected = 0  # starts announced by prewarm() and not made yet
        self._closed = False
        # Spare shims are forked by the zygote (no Python start-up each); started the old way when it cannot.
        self._zygote = zygote_client.Zygote() if zygote_client.enabled() else None
        self.attach_waiting: dict[str, int] = {}  # container id -> attach clients waiting for its start

    # -- paths -------------------------------------------------------------------------------

    def _dir(self, container_id: str) -> Path:
        """The bundle."""
        validate_container_id(container_id)
        return self.bundle_root / container_id

    def _layer_dir(self, container_id: str) -> Path:
        """The writable layer (upper/ and work/, or rootfs/ when copied): the bundle itself when they share a root."""
        validate_container_id(container_id)
        return self.state_root / container_id

    @property
    def _split(self) -> bool:
        return self.bundle_root != self.state_root

    def rootfs(self, container_id: str) -> Path:
        return self._dir(container_id) / "rootfs"

    def log_path(self, container_id: str) -> Path:
        """The json-file log (Docker's <id>-json.log); kept across restarts of the container."""
        validate_container_id(container_id)
        return self.log_root / container_id / f"{container_id}-json.log"

    def bundle_dir(self, container_id: str) -> Path:
        """Where the shim's attach socket is (attach.sock)."""
        return self._dir(container_id)

    def remove_logs(self, container_id: str) -> None:
        validate_container_id(container_id)
        shutil.rmtree(self.log_root / container_id, ignore_errors=True)

    def list_ids(self) -> list[str]:
        """Ids with a bundle or a writable layer."""
        ids: set[str] = set()
        for root in {self.state_root, self.bundle_root}:
            if root.is_dir():
                ids.update(p.name for p in root.iterdir() if p.is_dir() and _VALID_ID.fullmatch(p.name))
        return sorted(ids)

    def _runc(self, *args: str) -> list[str]:
        return [self.runc, "--root", str(self.runc_root), *args]

    # -- bundle ------------------------------------------------------------------------------

    async def prepare(
        self,
        container_id: str,
        image_rootfs: Path,
        process: ProcessSpec,
        hostname: str,
        netns_path: str | None,
        mounts: list[Mount],
        cgroups_path: str | None = None,
        resources: dict | None = None,
        cgroupns: bool = False,
        extras: SpecExtras | None = None,
    ) -> Path:
        """Creates (or refreshes) the bundle; returns the bundle directory. cgroups_path and
        resources (OCI linux.resources) place and limit the container (agent.executor.cgroups)."""
        d = self._dir(container_id)
        image_rootfs = Path(image_rootfs).resolve()
        if not image_rootfs.is_dir():
            raise RuncError(f"image rootfs {image_rootfs} is not a directory")
        # Build (and so validate) the spec before touching the disk: bad input leaves nothing behind.
        config = build_oci_spec(
            process, hostname, str(d / "rootfs"), netns_path, mounts, nofile_limit=self._nofile,
            cgroups_path=cgroups_path, resources=resources, cgroupns=cgroupns, extras=extras,
        )
        layer = self._layer_dir(container_id)
        created, layer_created = not d.exists(), not layer.exists()
        # No indent: the C encoder, ~10x faster than the indenting one with a seccomp section.
        config_text = json.dumps(config)
        image_text = str(image_rootfs)
        with_init_layer = self._ensure_init_layer()
        try:
            # The directories, files and the overlay mount in a thread: each new inode takes milliseconds
            # under load, and the starts of a node's tasks used to queue behind each other's on the event loop.
            if not await asyncio.to_thread(self._make_bundle, d, layer, image_text, config_text, with_init_layer):
                await self._ensure_rootfs(container_id, image_text)  # the slow ways (mount(8), a copy)
                _write_atomic(d / "config.json", config_text)
        except BaseException:
            if created:
                await self._unmount(d / "rootfs")
                shutil.rmtree(d, ignore_errors=True)
            if layer_created and self._split:
                shutil.rmtree(layer, ignore_errors=True)
            raise
        return d

    def _make_bundle(self, d: Path, layer: Path, image: str, config_text: str, with_init_layer: bool) -> bool:
        """prepare's disk work (run in a thread): the layer's and the bundle's directories, `image`, the overlay by
        mount(2) and config.json. False, with config.json not written, when the rootfs needs _ensure_rootfs's slower
        ways."""
        _mkdir(os.path.join(d, "rootfs"))
        _write_atomic(d / "image", image)
        if self._split and (layer / "rootfs.copied").exists():  # the layer is a private copy: bound again, not overlaid
            return _rootfs_ready(d) and self._write_config(d, config_text)
        for sub in ("upper", "work"):
            _mkdir(os.path.join(layer, sub))
        if not _rootfs_ready(d):
            if not os.path.isdir(image) or not _mount_overlay(self._overlay_options(layer, image, with_init_layer),
                                                              d / "rootfs"):
                return False
        return self._write_config(d, config_text)

    @staticmethod
    def _write_config(d: Path, config_text: str) -> bool:
        _write_atomic(d / "config.json", config_text)
        return True

    def _overlay_options(self, layer: Path, image: str, with_init_layer: bool) -> str:
        lower = f"{self.init_layer}:{image}" if with_init_layer else image
        return f"lowerdir={lower},upperdir={layer / 'upper'},workdir={layer / 'work'}"

    async def _ensure_rootfs(self, container_id: str, image: str | None = None) -> None:
        """Mounts the overlay (again, e.g. after a reboot); falls back to a private copy.
        image: what the bundle's `image` file holds, when the caller has just written it (not read back)."""
        d = self._dir(container_id)
        layer = self._layer_dir(container_id)
        rootfs = d / "rootfs"
        if _rootfs_ready(d):
            return
        if self._split and (layer / "rootfs.copied").exists():  # the copy made at an earlier start is the layer
            rootfs.mkdir(parents=True, exist_ok=True)
            _bind(layer / "rootfs", rootfs)
            return
        if image is None:
            image = (d / "image").read_text()
        image = image.strip()
        if not image or not os.path.isdir(image):
            # Never mount or copy from "" (cp -a /.): an `image` file a power cut emptied is rewritten by prepare.
            raise RuncError(f"container {container_id}: its image rootfs {image!r} is not a directory: prepare it again")
        options = self._overlay_options(layer, image, self._ensure_init_layer())
        if _mount_overlay(options, rootfs):  # mount(2) directly: no mount(8) process per start
            return
        code, out = await _run("mount", "-t", "overlay", "overlay", "-o", options, str(rootfs))
        if code == 0:
            return
        log.warning("overlay mount for container %s failed (%s); copying %s instead", container_id, out, image)
        # A half-finished earlier copy is discarded, so the rootfs is exactly the image. The copy is the
        # container's writable layer: on disk in the layer directory, bound onto the bundle's mount point.
        copy = layer / "rootfs"
        shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir(parents=True)
        code, out = await _run("cp", "-a", f"{image}/.", str(copy))
        if code != 0:
            raise RuncError(f"cannot create rootfs for container {container_id}: cp -a {image} failed: {out}")
        (layer / "rootfs.copied").touch()
        if self._split:
            _bind(copy, rootfs)

    def _ensure_init_layer(self) -> bool:
        """The read-only layer above every image (Docker's init layer, shared here: it only holds empty files): the
        mount points of /etc/hosts, /etc/hostname and /etc/resolv.conf. Without it runc init made them at each start
        in the container's writable layer, a copy-up of /etc and three new files on disk per container, which
        `diff` then listed as the container's own changes. False (the image alone is the lower layer) when it cannot
        be made."""
        if self._init_layer_ready:
            return True
        try:
            _mkdir(os.path.join(self.init_layer, "etc"))
            for name in INIT_LAYER_FILES:
                path = os.path.join(self.init_layer, name)
                if not os.path.isfile(path) or os.path.islink(path):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)  # never anything else: only what this function made lives here
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644))
        except OSError as exc:
            log.warning("cannot make the init layer %s (%s): runc makes the mount points in each container",
                        self.init_layer, exc)
            return False
        self._init_layer_ready = True
        return True

    async def _unmount(self, path: Path) -> None:
        if not _mounted(path):
            return
        code, out = await _run("umount", str(path))
        if code != 0 and _mounted(path):
            # Busy (a process still has it open): detach now, the kernel frees it when unused.
            # (Not mounted any more: a concurrent teardown got there first, which is success.)
            log.warning("umount %s failed (%s); detaching lazily", path, out)
            code, out = await _run("umount", "-l", str(path))
            if code != 0 and _mounted(path):
                raise RuncError(f"cannot unmount {path}: {out}")

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self, container_id: str, stdio_options: StdioOptions | None = None, steps: Any = None) -> int:
        """Starts the prepared container under its shim (stdio, log, attach socket); returns the
        host pid of its process once it runs."""
        d = self._dir(container_id)
        # One listing of the bundle instead of a stat, reads and an unlink tried for each file: a bundle
        # just prepared has none of the files a run leaves.
        present = _listing(d)
        if "config.json" not in present:
            raise RuncError(f"container {container_id} has no bundle: prepare it first")
        # Without `started` or `pid` status() says "created" or "exited": only a bundle with one is asked.
        if ("started" in present or "pid" in present) and self.status(container_id).state == "running":
            raise RuncError(f"container {container_id} is already running")
        await self._ensure_rootfs(container_id)
        for name in _RUN_FILES:
            if name in present:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(d, name))
        # A stopped container that ran before may still be known to runc (e.g. shim killed);
        # asking runc costs a process (~5 ms), so only when runc has state for the id.
        if (self.runc_root / container_id).exists():
            await _run(*self._runc("delete", "--force", container_id))
        runc_log = d / "runc.log"
        log_offset = runc_log.stat().st_size if "runc.log" in present else 0
        options = stdio_options or StdioOptions()
        if options.tty and options.console_size:
            # In the spec, runc sizes the pty before the process starts (no 0x0 first moment).
            config = json.loads((d / "config.json").read_text())
            config["process"]["consoleSize"] = {"height": options.console_size[0], "width": options.console_size[1]}
            _write_atomic(d / "config.json", json.dumps(config))
        log_path = self.log_path(container_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        job = {
            "runc": self.runc, "root": str(self.runc_root), "bundle": str(d), "id": container_id,
            "tty": "1" if options.tty else "0", "stdin": "1" if options.open_stdin else "0",
            "stdin_once": "1" if options.stdin_once else "0",
            "hold": str(self.attach_waiting.get(container_id, 0)),
            "log": str(log_path), "log_max_size": str(options.log_max_size),
            "log_max_file": str(options.log_max_file),
            "console_size": f"{options.console_size[0]} {options.console_size[1]}" if options.console_size else "",
        }
        if steps is not None:
            steps.mark("pre-shim")
        shim_pid = await self._hand_job(job)
        if steps is not None:
            steps.mark("shim")
        shim_start = _proc_stat(shim_pid)
        _write_atomic(d / "shim.pid", f"{shim_pid} {shim_start[1] if shim_start else 0}\n")
        pid = await self._await_started(container_id, shim_pid, log_offset)
        if steps is not None:
            steps.mark("runc")
        return pid

    async def _hand_job(self, job: dict[str, str]) -> int:
        """Gives the job to a spare shim (or a new one when none is ready or coming); tops the spares up."""
        data = "".join(f"{k} {v}\n" for k, v in job.items()).encode() + b"\n"
        self._expected = max(0, self._expected - 1)
        while not self._spares and self._coming:
            # A spare on its way is ready sooner than a new one (starts in quick succession).
            await asyncio.wait(set(self._coming), return_when=asyncio.FIRST_COMPLETED)
        spare = self._spares.pop(0) if self._spares else None
        pid = 0
        if spare is not None:
            try:
                os.write(spare[1], data)
                pid = spare[0]
            except OSError:  # the spare died: a fresh one below
                pid = 0
            finally:
                os.close(spare[1])
        if not pid:
            pid, writer = await self._spawn_shim()
            try:
                os.write(writer, data)
            finally:
                os.close(writer)
        self._top_up()
        return pid

    def prewarm(self) -> None:
        """A start is coming (a swarm task is being prepared): one more spare shim on its way now, so the starts of
        the tasks a node is given together do not each wait for Python's start-up of the next one."""
        self._expected = min(self._expected + 1, MAX_SPARES)
        self._top_up()

    def _top_up(self) -> None:
        """As many spares ready or coming as starts are expected, at least one."""
        if self._closed:
            return
        while len(self._spares) + len(self._coming) < max(1, self._expected):
            task = asyncio.get_running_loop().create_task(self._make_spare())
            self._coming.add(task)
            task.add_done_callback(self._coming.discard)

    async def _make_spare(self) -> None:
        try:
            spare = await self._spawn_shim()
        except OSError as exc:
            log.warning("cannot start a spare shim: %s", exc)
            return
        if self._closed:
            os.close(spare[1])
        else:
            self._spares.append(spare)

    async def _spawn_shim(self) -> tuple[int, int]:
        """A new spare shim: (its pid, the write end of its job pipe)."""
        if self._zygote is not None:
            try:
                return await self._zygote.spawn()
            except zygote_client.ZygoteUnavailable as exc:
                if not exc.quiet:
                    log.warning("%s: starting the shim as its own Python", exc)
        return await self._exec_shim()

    async def _exec_shim(self) -> tuple[int, int]:
        """The old way: a Python of its own per shim (the launcher prints the shim's pid and exits)."""
        reader, writer = os.pipe()
        try:
            launcher = await asyncio.create_subprocess_exec(
                sys.executable, "-S", "-E", str(SHIM_SCRIPT),
                stdin=reader, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True,
            )
        except BaseException:
            os.close(writer)
            raise
        finally:
            os.close(reader)
        try:
            out, _ = await launcher.communicate()
        except BaseException:  # cancelled (close): the shim exits once its job pipe closes
            os.close(writer)
            raise
        try:
            return int(out.split()[0]), writer
        except (IndexError, ValueError):
            os.close(writer)
            raise OSError(f"the shim did not start (printed {out[:200]!r})") from None

    def close(self) -> None:
        """Lets the spare shims go (each exits when its job pipe closes)."""
        self._closed = True
        for task in list(self._coming):
            task.cancel()
        spares, self._spares = self._spares, []
        for _pid, writer in spares:
            os.close(writer)
        if self._zygote is not None:
            self._zygote.close()  # its socket closes: it exits (the shims it forked live on)

    async def _await_started(self, container_id: str, shim_pid: int, log_offset: int) -> int:
        """The container's pid once runc has written it; the start's failure once the shim ended without it.
        Sleeps on an inotify watch of the bundle (runc renames `pid` into it) and a pidfd of the shim; polls
        (2 ms, then 50 ms) only where those cannot be had (no inotify instance or descriptor left)."""
        d = self._dir(container_id)
        try:
            watch: exitwatch.DirWatch | None = exitwatch.DirWatch(d, shim_pid)
        except (OSError, AttributeError) as exc:
            log.debug("container %s: no inotify/pidfd for its start (%s): polling", container_id, exc)
            watch = None
        try:
            return await self._await_started_watched(container_id, shim_pid, log_offset, watch)
        finally:
            if watch is not None:
                watch.close()

    async def _await_started_watched(self, container_id: str, shim_pid: int, log_offset: int,
                                     watch: exitwatch.DirWatch | None) -> int:
        d = self._dir(container_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_DEADLINE
        while True:
            pid = _read_int(d / "pid")
            if pid is not None:
                stat = _proc_stat(pid)
                # Durable: its start time is what tells the container's process from a reused pid
                # after a reboot (runc's `pid` file alone would make a stranger look running) where the bundle is
                # on disk (one directory per container); a bundle on the exec root's tmpfs goes with the reboot.
                # (In a thread: on disk a new inode and two fsyncs, milliseconds under load, the loop free meanwhile.)
                await asyncio.to_thread(_write_atomic, d / "started", f"{pid} {stat[1] if stat else 0}\n", "all")
                return pid
            if (d / "exit").exists() or not _is_alive(shim_pid):
                # The pid file may have landed between the two checks.
                if (pid := _read_int(d / "pid")) is not None:
                    continue
                raise self._start_failure(container_id, log_offset)
            if loop.time() > deadline:
                await _run(*self._runc("delete", "--force", container_id))
                raise RuncError(f"container {container_id} did not start within {START_DEADLINE:.0f}s")
            if watch is not None:
                # Woken by the rename of `pid` (or `exit`), or the shim's end; the deadline bounds the rest.
                await watch.changed(max(0.0, deadline - loop.time()) + 0.01)
                continue
            # runc needs ~20 ms: poll finely at first so the start is not padded by the poll.
            await asyncio.sleep(0.002 if loop.time() < deadline - START_DEADLINE + 0.5 else 0.05)

    def _start_failure(self, container_id: str, log_offset: int) -> RuncError:
        d = self._dir(container_id)
        with contextlib.suppress(FileNotFoundError):
            # The container never ran: it stays "created" and can be started again.
            os.replace(d / "exit", d / "exit.failed")
        try:
            with open(d / "runc.log", "rb") as f:
                f.seek(log_offset)
                errors = runc_errors(f.read().decode(errors="replace"))
        except FileNotFoundError:
            errors = []
        message = errors[-1] if errors else f"runc run of container {container_id} exited before starting"
        return RuncError(message, start_failure_exit_code(message))

    def status(self, container_id: str) -> ContainerStatus:
        """From the shim's files and process liveness: correct after a daemon restart."""
        d = self._dir(container_id)
        if not d.is_dir():
            return ContainerStatus("unknown")
        started = _read_pair(d / "started")
        pid = started[0] if started else (_read_int(d / "pid") or 0)
        code = _read_int(d / "exit")
        if code is not None:
            return ContainerStatus("exited", pid, code)
        if pid == 0:
            return ContainerStatus("created")
        if _is_alive(pid, started[1] if started else None):
            return ContainerStatus("running", pid)
        shim = _read_pair(d / "shim.pid")
        if shim and _is_alive(*shim):
            # The process has just exited; the shim is about to record the code.
            return ContainerStatus("running", pid)
        if (code := _read_int(d / "exit")) is not None:
            return ContainerStatus("exited", pid, code)
        return ContainerStatus("unknown", pid)  # e.g. after a reboot: the code is lost

    async def wait(self, container_id: str) -> int:
        """Until the container has exited; its exit code, as the shim recorded it.

        Nothing polls: while the container's process runs, the loop reads a pidfd of that process
        (exitwatch.process_end); once it has ended, an inotify watch of the bundle (the shim renames
        `exit` into it) and a pidfd of the shim (exitwatch.DirWatch). Both re-check the files every
        EXIT_SAFETY_POLL seconds; where they cannot be had, the files are polled (10 ms, up to 0.2 s).
        A file or /proc entry that cannot be read at some moment (EMFILE, ENOMEM...) says
        nothing about the container: the wait goes on. RuncError only when the container is
        known to be gone without a recorded code."""
        delay = 0.01
        ended_pid = 0  # the process seen to end: from then on, wait for the code the shim records
        watch: exitwatch.DirWatch | None = None
        watch_tried = False
        try:
            while True:
                try:
                    st = self.status(container_id)
                except OSError as exc:
                    log.warning("container %s: cannot read its state now (%s); waiting on", container_id, exc)
                    await asyncio.sleep(1.0)
                    continue
                if st.state == "exited":
                    return st.exit_code  # type: ignore[return-value]
                if st.state == "unknown":
                    raise RuncError(f"container {container_id}: exit code is unknown (its shim is gone)")
                if st.state == "created" and not self._start_in_progress(container_id):
                    raise RuncError(f"container {container_id} is not running")
                if st.state == "running" and st.pid != ended_pid:
                    try:
                        same = self._same_process(container_id, st.pid)
                    except OSError:  # `started` unreadable now: the poll below, as for any unreadable file
                        same = None
                    outcome = exitwatch.Outcome.UNAVAILABLE if same is None else await exitwatch.process_end(
                        st.pid, same, EXIT_SAFETY_POLL)
                    if outcome is exitwatch.Outcome.ENDED:
                        ended_pid, delay = st.pid, 0.01
                    if outcome is not exitwatch.Outcome.UNAVAILABLE:
                        continue
                elif st.state == "running":  # its process has ended; the shim is about to record the code
                    if not watch_tried:
                        watch_tried = True
                        watch = self._exit_watch(container_id)
                        continue  # the files again, now that a rename into the bundle cannot be missed
                    if watch is not None:
                        await watch.changed(EXIT_SAFETY_POLL)
                        continue
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.2)
        finally:
            if watch is not None:
                watch.close()

    def _exit_watch(self, container_id: str) -> exitwatch.DirWatch | None:
        """The bundle (where the shim renames `exit`) and the shim's end, or None (then: poll)."""
        try:
            shim = _read_pair(self._dir(container_id) / "shim.pid")
            return exitwatch.DirWatch(self._dir(container_id), shim[0]) if shim else None
        except (OSError, AttributeError) as exc:
            log.debug("container %s: no inotify/pidfd for its exit (%s): polling", container_id, exc)
            return None

    def _same_process(self, container_id: str, pid: int) -> Callable[[], bool]:
        """Whether pid still names the container's process: alive, and started when `started` says
        (no start time recorded yet: alive is all that can be checked, as status() does)."""
        started = _read_pair(self._dir(container_id) / "started")
        start_time = started[1] if started and started[0] == pid else None
        return lambda: _is_alive(pid, start_time)

    def start_in_progress(self, container_id: str) -> bool:
        """True while a shim runs for the container (a start under way, or its process exiting)."""
        return self._start_in_progress(container_id)

    async def list_runc(self) -> dict[str, RuncContainer]:
        """What runc knows under our runc root: id -> entry (RuncError when runc cannot answer)."""
        if not self.runc_root.is_dir():
            return {}
        code, out = await _run(*self._runc("list", "--format", "json"))
        if code != 0:
            raise RuncError(f"runc list failed: {out}")
        try:
            entries = json.loads(out) or []
        except ValueError:
            raise RuncError(f"runc list printed what is not JSON: {out[:200]!r}") from None
        return {
            str(e["id"]): RuncContainer(str(e["id"]), str(e.get("status", "")), int(e.get("pid") or 0),
                                        str(e.get("bundle", "")))
            for e in entries
        }

    def owns_bundle(self, entry: RuncContainer) -> bool:
        """A runc container shoal made: its bundle is bundle_root/<id>, or state_root/<id> where an older shoal
        kept bundles with the layers (shoal deletes only those)."""
        return _VALID_ID.fullmatch(entry.id) is not None and Path(entry.bundle) in (
            self.bundle_root / entry.id, self.state_root / entry.id)

    async def discard_start(self, container_id: str, deadline: float = START_DEADLINE) -> None:
        """Undoes a start that was not committed (the daemon died during it): lets a start in
        progress reach runc, then kills and removes the runc container and its bundle (the
        container's writable layer stays: its files are the container's, not the start's)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + deadline
        while self.status(container_id).state == "created" and self._start_in_progress(container_id):
            if loop.time() > end:
                break
            await asyncio.sleep(0.05)
        await self.remove(container_id, keep_layer=True)

    def _start_in_progress(self, container_id: str) -> bool:
        shim = _read_pair(self._dir(container_id) / "shim.pid")
        return bool(shim) and _is_alive(*shim)  # type: ignore[misc]

    async def kill(self, container_id: str, signal: int) -> None:
        """Sends signal to the container's process; nothing happens if it is not running."""
        if self.status(container_id).state != "running":
            return
        code, out = await _run(*self._runc("kill", container_id, str(int(signal))))
        if code == 0 or self.status(container_id).state != "running":
            return
        if "container does not exist" in out or "container not running" in out:
            return
        raise RuncError(f"runc kill {container_id} {int(signal)} failed: {out}")

    async def stop(self, container_id: str, timeout: float, signal: int = signals.SIGTERM) -> int:
        """signal, then SIGKILL after timeout seconds; the exit code (137 when it took SIGKILL)."""
        st = self.status(container_id)
        if st.state == "exited":
            return st.exit_code  # type: ignore[return-value]
        if st.state != "running":
            raise RuncError(f"container {container_id} is not running")
        await self.kill(container_id, signal)
        try:
            return await asyncio.wait_for(self.wait(container_id), timeout)
        except asyncio.TimeoutError:
            log.info("container %s ignored signal %d for %.1fs; killing", container_id, signal, timeout)
        await self.kill(container_id, signals.SIGKILL)
        return await self.wait(container_id)

    async def exec(self, container_id: str, process: ProcessSpec, stdin: bool = False,
                   console_size: tuple[int, int] | None = None, pid_file: bool = False) -> ExecRun:
        """Starts process in the running container: on a pty of ours when process.tty, else with
        stdout/stderr pipes (and a stdin pipe when asked). pid_file: runc records the process's
        host pid (ExecRun.process_pid), for a caller that must be able to kill it."""
        d = self._dir(container_id)
        if self.status(container_id).state != "running":
            raise RuncError(f"container {container_id} is not running")
        token = uuid.uuid4().hex[:12]
        process_json = d / f"exec-{token}.json"
        exec_log = d / f"exec-{token}.log"
        process_doc = build_process(process, self._nofile)
        if process.tty and console_size:  # runc sizes the pty before the process runs
            process_doc["consoleSize"] = {"height": console_size[0], "width": console_size[1]}
        _write_atomic(process_json, json.dumps(process_doc))
        pid_path = d / f"exec-{token}.pid" if pid_file else None
        pid_args = ("--pid-file", str(pid_path)) if pid_path is not None else ()
        argv = self._runc("--log", str(exec_log), "--log-format", "json", "exec", "--process", str(process_json),
                          *pid_args, container_id)
        cleanup = [process_json, exec_log] + ([pid_path] if pid_path is not None else [])
        if process.tty:
            master, slave = os.openpty()
            if console_size:
                fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", console_size[0], console_size[1], 0, 0))
            os.set_blocking(master, False)
            try:
                proc = await asyncio.create_subprocess_exec(*argv, stdin=slave, stdout=slave, stderr=slave)
            except BaseException:
                os.close(master)
                raise
            finally:
                os.close(slave)
            return ExecRun(proc, cleanup, exec_log, master, pid_path)
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        return ExecRun(proc, cleanup, exec_log, pid_file=pid_path)

    exec_stream = exec  # the name the manager's brief uses

    async def remove(self, container_id: str, keep_layer: bool = False) -> None:
        """Kills the container if needed, deletes it from runc, unmounts and removes its files.
        keep_layer keeps the container's writable layer (upper/ and work/ of its overlay, or the
        copied rootfs) for its next start, as Docker keeps a container's files across restarts."""
        d = self._dir(container_id)
        layer = self._layer_dir(container_id)
        if self._split and not d.exists() and layer.exists():  # a layer alone (the bundle went with a reboot)
            if (self.runc_root / container_id).exists():
                await _run(*self._runc("delete", "--force", container_id))
            if not keep_layer:
                code, out = await _run("rm", "-rf", "--one-file-system", str(layer))
                if code != 0:
                    raise RuncError(f"cannot remove {layer}: {out}")
            return
        if not d.exists():
            if (self.runc_root / container_id).exists():  # runc state whose bundle is gone
                code, out = await _run(*self._runc("delete", "--force", container_id))
                if code != 0 and "does not exist" not in out:
                    raise RuncError(f"runc delete {container_id} failed: {out}")
            return
        if self.status(container_id).state == "running":
            await self.kill(container_id, signals.SIGKILL)
            with contextlib.suppress(RuncError):
                await asyncio.wait_for(self.wait(container_id), 10)
        code, out = await _run(*self._runc("delete", "--force", container_id))
        if code != 0 and "does not exist" not in out:
            raise RuncError(f"runc delete {container_id} failed: {out}")
        rootfs = d / "rootfs"
        await self._unmount(rootfs)
        if _mounted(rootfs):
            raise RuncError(f"rootfs {rootfs} is still mounted; not removing {d}")
        # --one-file-system: never delete through a mount that appeared under the bundle.
        if self._split:
            doomed = [str(d)] + ([str(layer)] if not keep_layer and layer.exists() else [])
        elif keep_layer:
            kept = {"rootfs", "rootfs.copied"} if (d / "rootfs.copied").exists() else {"upper", "work"}
            doomed = [str(p) for p in d.iterdir() if p.name not in kept]
        else:
            doomed = [str(d)]
        if doomed:
            code, out = await _run("rm", "-rf", "--one-file-system", *doomed)
            if code != 0:
                raise RuncError(f"cannot remove {d}: {out}")


def _read_pair(path: Path) -> tuple[int, int] | None:
    try:
        a, b = path.read_text().split()[:2]
        return int(a), int(b)
    except (FileNotFoundError, ValueError):  # other OSErrors (EMFILE) are not "absent": raised
        return None
