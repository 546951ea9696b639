"""Network namespaces for the overlay data plane: enter one from the calling thread (setns), make and
delete named ones without forking. vxlan/ may not import agent/; the setns helper is common/rtnl.py's, the maker common/netnsmake.py.

A netlink socket keeps the namespace it was opened in, so opening it while the thread is switched is
enough; used by vxlan/kernel.py.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from pyroute2 import IPRoute

from common import rtnl
from common import netnsmake

NETNS_DIR = Path("/run/netns")
MNT_DETACH = 2

_libc = netnsmake.libc
_check = netnsmake.check


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


is_mounted = netnsmake.is_mounted


def create(name: str, ipv6: bool = True) -> Path:
    """The named namespace (made unless it exists), its loopback up; ipv6=False turns IPv6 off in a namespace it
    makes, before any link is in it (Docker's overlay namespaces have it off). common/netnsmake.py makes it."""
    return netnsmake.ensure(path_of(name), ipv6)


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
