"""Network namespaces for the overlay data plane: enter one from the calling thread (setns), make and
delete named ones without forking. vxlan/ may not import agent/; the setns helper is common/rtnl.py's.

A netlink socket keeps the namespace it was opened in, so opening it while the thread is switched is
enough; used by vxlan/kernel.py.
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2 import netns as _pr_netns

from common import rtnl
from common.procsys import IPV6_OFF, Sysctl, write_proc_sys

NETNS_DIR = Path("/run/netns")
_FIRST_MOUNT = threading.Lock()
CLONE_NEWNET = 0x40000000
MS_BIND = 4096
MNT_DETACH = 2

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def path_of(name: str) -> Path:
    if not name or "/" in name or name in (".", "..") or len(name) > 255:
        raise ValueError(f"invalid network namespace name {name!r}")
    return NETNS_DIR / name


entered = rtnl.entered  # runs the block with this thread in the namespace at `path` (None: stay where it is)


@contextlib.contextmanager
def iproute(path: Path | str | None) -> Iterator[IPRoute]:
    """An IPRoute whose socket lives in the namespace at `path` (None: the thread's current one)."""
    with entered(path):
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def is_mounted(path: Path) -> bool:
    """A mounted nsfs file has another device than the tmpfs directory holding it."""
    try:
        return path.stat().st_dev != path.parent.stat().st_dev
    except FileNotFoundError:
        return False


def _is_mount_point(path: Path) -> bool:
    wanted = str(path)
    with open("/proc/self/mountinfo") as handle:
        return any(line.split()[4] == wanted for line in handle)


def create(name: str, ipv6: bool = True) -> Path:
    """The named namespace (made unless it exists), its loopback up; ipv6=False turns IPv6 off in a namespace it
    makes, before any link is in it (common/procsys.IPV6_OFF: Docker's overlay namespaces have it off)."""
    path = path_of(name)
    made = False
    if not is_mounted(path):
        path.unlink(missing_ok=True)  # a plain file a crash left between creating and mounting
        sysctls = () if ipv6 else (IPV6_OFF,)
        if _is_mount_point(path.parent):
            _create_here(path, sysctls)
        else:
            with _FIRST_MOUNT:  # namespaces are made from several threads: one makes /run/netns a mount
                try:
                    _pr_netns.create(name)  # forks once, but makes /run/netns a shared mount first
                except OSError as exc:
                    if exc.errno != errno.EEXIST:
                        raise
            with rtnl.entered(path):
                write_proc_sys(sysctls)
        made = True
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
            _check(_libc.unshare(CLONE_NEWNET), "unshare")
            try:
                write_proc_sys(sysctls)  # before the bind mount: a failure leaves no namespace behind
                _check(_libc.mount(b"/proc/thread-self/ns/net", str(path).encode(), None, MS_BIND, None),
                       f"bind mount of a new namespace on {path}")
            finally:
                _check(_libc.setns(home, CLONE_NEWNET), "setns back")
        except BaseException:
            path.unlink(missing_ok=True)
            raise
    finally:
        os.close(home)


def delete(name: str) -> None:
    """Unmounts and removes the namespace's name; no error when it is gone."""
    path = path_of(name)
    if is_mounted(path):
        _check(_libc.umount2(str(path).encode(), MNT_DETACH), f"umount {path}")
    path.unlink(missing_ok=True)


def listed(prefix: str) -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
