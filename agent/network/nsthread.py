"""Enter a network namespace from the calling thread only (setns), and make one without forking.

pyroute2's `IPRoute(netns=...)` and `netns.create` fork a helper per call (tens of ms each);
a netlink socket keeps the namespace it was created in, so switching the thread is enough.
Used by netns.py and bridge.py; callers run on the engine's kernel threads (shoal/engine/kernelwork.py): each
block leaves the thread where it found it, so a pool thread carries no namespace into its next job.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from pyroute2 import IPRoute

from common import rtnl
from common.procsys import Sysctl, write_proc_sys

CLONE_NEWNET = 0x40000000
MS_BIND = 4096

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _setns(fd: int) -> None:
    _check(_libc.setns(fd, CLONE_NEWNET), "setns")


entered = rtnl.entered  # runs the block with this thread inside the namespace at `path`, then switches back


@contextlib.contextmanager
def iproute_in(path: Path | str) -> Iterator[IPRoute]:
    """An IPRoute whose netlink socket lives in the namespace at `path`."""
    with entered(path):
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def _is_mount_point(path: Path) -> bool:
    """From /proc/self/mountinfo: `ip netns add` bind-mounts /run/netns onto itself, which
    os.path.ismount cannot see (same device, same inode)."""
    wanted = str(path)
    with open("/proc/self/mountinfo") as handle:
        return any(line.split()[4] == wanted for line in handle)


def create_here(path: Path, sysctls: Sequence[Sysctl] = ()) -> bool:
    """Makes a new network namespace bound at `path` (like `ip netns add`) from this thread, with `sysctls`
    (write_proc_sys) written in it before any link is.

    Returns False, having changed nothing, when /run/netns is not a mount point of its own
    (then the caller falls back to a forking helper that sets it up)."""
    if not _is_mount_point(path.parent):
        return False
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
        os.close(fd)
        try:
            _check(_libc.unshare(CLONE_NEWNET), "unshare")
            try:
                write_proc_sys(sysctls)  # before the bind mount: a failure leaves no namespace behind
                _check(
                    _libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), None, MS_BIND, None),
                    f"bind mount of the new namespace on {path}",
                )
            finally:
                _setns(home)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    finally:
        os.close(home)
    return True
