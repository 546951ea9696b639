"""Enter a network namespace from the calling thread only (setns); namespaces are made by common/netnsmake.py.

pyroute2's `IPRoute(netns=...)` and `netns.create` fork a helper per call (tens of ms each);
a netlink socket keeps the namespace it was created in, so switching the thread is enough.
Used by netns.py and bridge.py; callers run on the engine's kernel threads (shoal/engine/kernelwork.py): each
block leaves the thread where it found it, so a pool thread carries no namespace into its next job.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from pyroute2 import IPRoute

from common import netnsmake, rtnl

CLONE_NEWNET = 0x40000000

_libc = netnsmake.libc
_check = netnsmake.check


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


