"""The daemon's side of the shim fork server (agent/executor/zygote.py): starts it on first use, asks it for spare
shims, replaces it when it dies. RuncRuntime._spawn_shim (agent/executor/runtime.py) uses it, else a Python per shim.

A shim comes back as (pid, write end of its job pipe), exactly what a shim started the old way gives: the daemon
writes the job itself, so a zygote that dies halfway leaves no shim with a job (one waiting on the pipe exits when
the daemon closes it). SHOAL_SHIM_ZYGOTE=0 turns the zygote off (every shim is started as its own Python).
"""
from __future__ import annotations

import array
import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path

log = logging.getLogger(__name__)

ZYGOTE_SCRIPT = Path(__file__).with_name("zygote.py")
REPLY_TIMEOUT = 5.0  # a fork takes a millisecond: a zygote silent this long is stuck, and is replaced
BROKEN_PAUSE = 30.0  # after the zygote failed twice in a row: shims the old way for this long


def enabled() -> bool:
    return os.environ.get("SHOAL_SHIM_ZYGOTE", "1") != "0"


class ZygoteUnavailable(OSError):
    """No shim from the zygote now: the caller starts the shim the old way. quiet: nothing new to report (the zygote
    is closed, or its failure was reported when it happened)."""

    def __init__(self, message: str, quiet: bool = False) -> None:
        super().__init__(message)
        self.quiet = quiet


def parse_reply(data: bytes) -> int:
    """The shim's pid from the zygote's answer (`PID\\n`); ZygoteUnavailable for a failed fork (0) or anything else."""
    text = data.strip()
    if not text.isdigit() or int(text) <= 0:
        raise ZygoteUnavailable(f"the shim zygote could not fork a shim (answered {data[:64]!r})")
    return int(text)


class Zygote:
    """One zygote process at a time; requests one after another (a fork is quick)."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._sock: socket.socket | None = None
        self._env: dict[str, str] = {}
        self._lock: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None
        self._broken_until = 0.0
        self._closed = False
        self._busy = False  # a request is reading its answer from the socket
        # zygote pid -> (the loop watching it, its pidfd, its Popen): each is reaped as soon as it exits
        self._watched: dict[int, tuple[asyncio.AbstractEventLoop, int, subprocess.Popen]] = {}

    @property
    def pid(self) -> int:
        """The running zygote's pid, 0 when none."""
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else 0

    async def spawn(self) -> tuple[int, int]:
        """A new spare shim: (its pid, the write end of its job pipe). ZygoteUnavailable when the zygote cannot give
        one (closed, broken, failed twice): nothing is left behind then."""
        loop = asyncio.get_running_loop()
        if self._closed:
            raise ZygoteUnavailable("the shim zygote is closed", quiet=True)
        if loop.time() < self._broken_until:
            raise ZygoteUnavailable("the shim zygote failed recently", quiet=True)
        if self._lock is None or self._lock[0] is not loop:
            self._lock = (loop, asyncio.Lock())  # a lock serves one loop (a runtime may outlive its first loop)
        async with self._lock[1]:
            for attempt in (1, 2):
                try:
                    if self._proc is not None and (self._proc.returncode is not None or os.environ != self._env):
                        # Gone (reaped by _exited), or a shim must get the daemon's environment of now, as one
                        # started the old way does.
                        self._stop()
                    if self._closed:
                        raise ZygoteUnavailable("the shim zygote is closed", quiet=True)
                    if self._sock is None:
                        self._start(loop)
                    return await self._request(loop)
                except ZygoteUnavailable:
                    raise
                except asyncio.CancelledError:
                    self._stop()  # its answer would be read as the next request's: a new zygote next time
                    raise
                except (OSError, TimeoutError, ValueError) as exc:
                    self._stop(kill=True)  # stuck or broken: a new one for the retry
                    if attempt == 2:
                        self._broken_until = loop.time() + BROKEN_PAUSE
                        raise ZygoteUnavailable(f"the shim zygote failed: {exc} (shims as their own Python for "
                                                f"{BROKEN_PAUSE:.0f} s)") from None
                    log.info("shim zygote failed (%s): starting another", exc)
        raise AssertionError("unreachable")

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # close_fds: nothing of the daemon's; its own session: no terminal's signals, as the shims.
            proc = subprocess.Popen(
                [sys.executable, "-S", "-E", str(ZYGOTE_SCRIPT)],
                stdin=theirs, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                close_fds=True, start_new_session=True,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        ours.setblocking(False)
        self._proc, self._sock, self._env = proc, ours, os.environ.copy()
        try:
            pidfd = os.pidfd_open(proc.pid)
        except OSError:
            return  # reaped when it is stopped instead
        loop.add_reader(pidfd, self._exited, proc)
        self._watched[proc.pid] = (loop, pidfd, proc)

    async def _request(self, loop: asyncio.AbstractEventLoop) -> tuple[int, int]:
        sock = self._sock
        assert sock is not None
        reader, writer = os.pipe()
        self._busy = True
        try:
            try:
                try:
                    sock.sendmsg([b"s"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [reader]))])
                finally:
                    os.close(reader)  # in flight, the zygote holds its own copy
                reply = await asyncio.wait_for(self._read_reply(loop, sock), REPLY_TIMEOUT)
            except (BrokenPipeError, ConnectionResetError):
                raise ConnectionResetError("the shim zygote exited") from None  # one message, whichever end saw it
            except TimeoutError:
                raise TimeoutError(f"no answer within {REPLY_TIMEOUT}s") from None
            return parse_reply(reply), writer
        except BaseException:
            os.close(writer)  # a shim forked for it (if any) reads EOF and exits
            raise
        finally:
            self._busy = False
            if sock is not self._sock:
                sock.close()  # stopped while this request read from it (_stop only shut it down)

    @staticmethod
    async def _read_reply(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
        data = b""
        while not data.endswith(b"\n"):
            chunk = await loop.sock_recv(sock, 64)
            if not chunk:
                raise ConnectionResetError("the shim zygote exited")
            data += chunk
        return data

    def _exited(self, proc: subprocess.Popen) -> None:
        """A zygote exited (killed, or let go): reaped. Its socket is left to spawn(): a request in flight reads EOF
        from it (closing it under a pending read would leave that read waiting for the timeout)."""
        self._unwatch(proc.pid)
        proc.poll()

    def _unwatch(self, pid: int) -> None:
        entry = self._watched.pop(pid, None)
        if entry is not None:
            loop, pidfd, _ = entry
            if not loop.is_closed():
                loop.remove_reader(pidfd)
            os.close(pidfd)

    def _stop(self, kill: bool = False, wait: bool = False) -> None:
        """Lets the current zygote go: its socket closes and it exits on EOF (killed first when stuck). Reaped when
        its pidfd says it is gone, or here with wait (at close: no loop may run again)."""
        proc, sock = self._proc, self._sock
        self._proc, self._sock = None, None
        if sock is not None and self._busy:
            # A request reads from it: shut down, its read ends with EOF now (a socket closed under a pending read
            # would leave it waiting for the timeout); the request closes it.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        elif sock is not None:
            sock.close()
        if proc is None:
            return
        if kill:
            proc.kill()  # Popen does not signal a pid it has reaped
        if proc.poll() is not None:
            self._unwatch(proc.pid)
        elif wait or proc.pid not in self._watched:
            self._unwatch(proc.pid)
            try:
                proc.wait(timeout=1.0)  # it exits at once on EOF
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        self._closed = True
        self._stop(wait=True)
        for pid, (_, _, proc) in list(self._watched.items()):
            self._unwatch(pid)  # zygotes let go earlier and not reaped yet (their sockets are closed)
            try:
                proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
