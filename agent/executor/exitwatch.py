"""Waits without polling: for a process to end (a pidfd, pidfd_open(2)) and for a file to be renamed into a
directory (inotify), both read by the event loop. Used by agent.executor.runtime's wait() and start, which fall
back to their polls when no pidfd or inotify instance can be had."""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import enum
import logging
import os
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)


class Outcome(enum.Enum):
    ENDED = "ended"  # the process is gone (or the pid now names another process)
    TIMEOUT = "timeout"  # still running after the timeout
    UNAVAILABLE = "unavailable"  # no pidfd now (ENOSYS, EMFILE, ENOMEM, a seccomp filter...): poll instead


async def process_end(pid: int, is_same: Callable[[], bool], timeout: float) -> Outcome:
    """Until process `pid` ends or `timeout` seconds pass. is_same() is asked once the pidfd is open:
    True when `pid` still names the process meant (its start time), so a reused pid is never waited on."""
    if pid <= 0:
        return Outcome.UNAVAILABLE
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return Outcome.ENDED
    except (OSError, AttributeError) as exc:  # AttributeError: a Python without os.pidfd_open
        log.debug("no pidfd for process %d (%s): polling", pid, exc)
        return Outcome.UNAVAILABLE
    try:
        # Asked after the open: a pidfd names the process that had the pid at open time, and a
        # process with the recorded start time then is the one meant (it started before the open).
        try:
            if not is_same():
                return Outcome.ENDED
        except OSError:  # /proc unreadable now (EMFILE...): the caller's poll decides
            return Outcome.UNAVAILABLE
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Outcome] = loop.create_future()

        def settle(outcome: Outcome) -> None:
            if not done.done():
                done.set_result(outcome)

        try:
            loop.add_reader(fd, settle, Outcome.ENDED)  # a pidfd is readable once the process has exited
        except (OSError, ValueError, NotImplementedError) as exc:  # epoll full (max_user_watches), no readers
            log.debug("cannot watch the pidfd of process %d (%s): polling", pid, exc)
            return Outcome.UNAVAILABLE
        timer = loop.call_later(timeout, settle, Outcome.TIMEOUT)
        try:
            return await done
        finally:
            timer.cancel()
            loop.remove_reader(fd)
    finally:
        os.close(fd)


_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_IN_NONBLOCK, _IN_CLOEXEC = os.O_NONBLOCK, os.O_CLOEXEC
_IN_CLOSE_WRITE, _IN_MOVED_TO, _IN_ONLYDIR = 0x08, 0x80, 0x01000000


class DirWatch:
    """Files renamed into one directory (runc's pid file, the shim's exit file: both written by rename; a file
    written in place, closed after writing, wakes it too) and the end of one process, as one readiness the loop waits on. Made before the files are first looked at, so a
    rename between the look and the wait is not missed. OSError when inotify or the pidfd cannot be had."""

    __slots__ = ("_inotify", "_pidfd")

    def __init__(self, directory: Path, pid: int) -> None:
        self._inotify = _libc.inotify_init1(_IN_NONBLOCK | _IN_CLOEXEC)
        if self._inotify < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        self._pidfd = -1
        try:
            if _libc.inotify_add_watch(self._inotify, os.fsencode(directory),
                                                            _IN_MOVED_TO | _IN_CLOSE_WRITE | _IN_ONLYDIR) < 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), str(directory))
            self._pidfd = os.pidfd_open(pid)
        except BaseException:
            self.close()
            raise

    async def changed(self, timeout: float) -> bool:
        """Until a file was renamed into the directory or the process ended (True; also when that happened
        before this call and was not yet seen), or timeout seconds passed (False)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()

        def settle(value: bool) -> None:
            if not done.done():
                done.set_result(value)

        loop.add_reader(self._inotify, settle, True)
        try:
            loop.add_reader(self._pidfd, settle, True)
        except BaseException:
            loop.remove_reader(self._inotify)
            raise
        timer = loop.call_later(timeout, settle, False)
        try:
            return await done
        finally:
            timer.cancel()
            loop.remove_reader(self._inotify)
            loop.remove_reader(self._pidfd)
            self._drain()

    def _drain(self) -> None:
        # The events say only "something was renamed in": the caller looks at the files itself.
        while True:
            try:
                if not os.read(self._inotify, 4096):
                    return
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return

    def close(self) -> None:
        if self._pidfd >= 0:
            os.close(self._pidfd)
        if self._inotify >= 0:
            _close_inotify(self._inotify)
        self._inotify = self._pidfd = -1


def _close_inotify(fd: int) -> None:
    """Closing an inotify instance waits for an SRCU grace period in the kernel (fsnotify_destroy_group:
    ~15-20 ms measured here): done by a worker thread, so the event loop never stalls on it."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        os.close(fd)
        return
    loop.run_in_executor(None, os.close, fd)
