"""Named network namespaces (/run/netns/NAME) for containers and drivers, created idempotently.
Used by the sandbox/endpoint controller and by bridge.attach_endpoint; built on pyroute2.netns."""
from __future__ import annotations

import errno
import threading
from pathlib import Path

from pyroute2 import netns as _pr_netns

from agent.network.nsthread import create_here
from common import rtnl
from common.procsys import IPV6_OFF, write_proc_sys
from common.rtnl import Rtnl

NETNS_DIR = Path("/run/netns")
_FIRST_MOUNT = threading.Lock()
_MAX_NAME = 255


def netns_path(name: str) -> Path:
    """Where the named namespace is bind-mounted."""
    _check_name(name)
    return NETNS_DIR / name


def create_netns(name: str, ipv6: bool = True) -> Path:
    """Create the namespace if it does not exist and bring its loopback up; returns its path.

    ipv6=False turns IPv6 off in a namespace it makes, before any link is in it, as Docker does in a container's
    namespace when none of its networks has IPv6 (`net.ipv6.conf.all.disable_ipv6=1`): no link-local address,
    duplicate address detection or multicast listener reports for its links (a `--sysctl` of the container's
    own, applied by runc later, still wins)."""
    path = netns_path(name)
    made = False
    if not _is_netns(path):
        if path.exists():
            # A plain file left by a crash between mkfile and mount: iproute2 would refuse it too.
            path.unlink()
        sysctls = () if ipv6 else (IPV6_OFF,)
        try:
            if not create_here(path, sysctls):
                with _FIRST_MOUNT:  # sandboxes are made side by side: one thread makes /run/netns a mount
                    _pr_netns.create(name)  # forks, but also sets /run/netns up as a shared mount
                with rtnl.entered(path):
                    write_proc_sys(sysctls)
            made = True
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise
    with Rtnl(path) as nl:  # a container start's path: one request, no pyroute2 socket (common/rtnl.py)
        lo = rtnl.LOOPBACK_INDEX if made else nl.link_index("lo")
        if lo is not None:
            nl.link_set(lo, up=True)
    return path


def delete_netns(name: str) -> None:
    """Remove the namespace's name; no error if it is already gone."""
    path = netns_path(name)
    if not path.exists():
        return
    try:
        _pr_netns.remove(name)
    except FileNotFoundError:
        pass


def is_netns(name: str) -> bool:
    """True when /run/netns/NAME is a mounted namespace (not a plain file a crash left
    between creating the file and mounting on it, which setns refuses)."""
    return _is_netns(netns_path(name))


def list_netns(prefix: str) -> list[str]:
    """Names of the namespaces in /run/netns starting with `prefix`, sorted."""
    return sorted(n for n in _pr_netns.listnetns() if n.startswith(prefix))


def _is_netns(path: Path) -> bool:
    # A mounted nsfs file has a different device than the tmpfs directory holding it.
    try:
        return path.stat().st_dev != path.parent.stat().st_dev
    except FileNotFoundError:
        return False


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or len(name) > _MAX_NAME:
        raise ValueError(f"invalid network namespace name {name!r}")
