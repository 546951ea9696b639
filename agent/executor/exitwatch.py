"""Waits for a process to end without polling: a pidfd (pidfd_open(2)) read by the event loop.
Used by agent.executor.runtime's wait(), which falls back to its poll when no pidfd can be had."""
from __future__ import annotations

import asyncio
import enum
import logging
import os
from collections.abc import Callable

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
