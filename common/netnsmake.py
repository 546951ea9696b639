"""Making a named network namespace (/run/netns/NAME, as `ip netns add`), once for the whole tree: container and
sandbox namespaces (agent/network/netns.py) and overlay networks' (vxlan/ns.py) are made here alike.

The usual way is in-process: a thread unshares its network namespace, writes the namespace's /proc/sys settings
(before any link is in it), bind-mounts it on the name and switches back; no fork. Until /run/netns is a mount point
of its own (the first namespace on a fresh machine), pyroute2's forking helper makes it, which also sets that up."""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from pyroute2 import netns as _pr_netns

from common import rtnl
from common.procsys import IPV6_OFF, Sysctl, write_proc_sys

CLONE_NEWNET = 0x40000000
MS_BIND = 4096
_FIRST_MOUNT = threading.Lock()  # namespaces are made from several threads: one makes /run/netns a mount

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def check(result: int, what: str) -> None:
    """Raises OSError (errno and what) when a libc call failed."""
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def is_mounted(path: Path) -> bool:
    """A mounted nsfs file has another device than the tmpfs directory holding it."""
    try:
        return path.stat().st_dev != path.parent.stat().st_dev
    except FileNotFoundError:
        return False


def _is_mount_point(path: Path) -> bool:
    """From /proc/self/mountinfo: `ip netns add` bind-mounts /run/netns onto itself, which makes it shared."""
    wanted = str(path)
    with open("/proc/self/mountinfo") as handle:
        return any(line.split()[4] == wanted for line in handle)


def ensure(path: Path, ipv6: bool = True) -> Path:
    """The namespace bound at `path` (made unless it is there), its loopback up; returns path. ipv6=False turns IPv6
    off in a namespace it makes, before any link is in it (procsys.IPV6_OFF, as Docker's namespaces have it)."""
    made = False
    if not is_mounted(path):
        path.unlink(missing_ok=True)  # a plain file a crash left between creating and mounting
        sysctls = () if ipv6 else (IPV6_OFF,)
        try:
            if _is_mount_point(path.parent):
                _create_here(path, sysctls)
            else:
                with _FIRST_MOUNT:
                    _pr_netns.create(path.name)  # forks once, but makes /run/netns a shared mount first
                with rtnl.entered(path):
                    write_proc_sys(sysctls)
            made = True
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
    with rtnl.Rtnl(path) as nl:
        lo = rtnl.LOOPBACK_INDEX if made else nl.link_index("lo")
        if lo is not None:
            nl.link_set(lo, up=True)
    return path


def _create_here(path: Path, sysctls: Sequence[Sysctl]) -> None:
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
        os.close(fd)
        try:
            check(libc.unshare(CLONE_NEWNET), "unshare")
            try:
                write_proc_sys(sysctls)  # before the bind mount: a failure leaves no namespace behind
                check(libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), None, MS_BIND, None),
                       f"bind mount of a new namespace on {path}")
            finally:
                check(libc.setns(home, CLONE_NEWNET), "setns back")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    finally:
        os.close(home)
