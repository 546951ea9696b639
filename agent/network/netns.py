"""Named network namespaces (/run/netns/NAME) for containers and drivers, created idempotently.
Used by the sandbox/endpoint controller and by bridge.attach_endpoint; built on pyroute2.netns."""
from __future__ import annotations

from pathlib import Path

from pyroute2 import netns as _pr_netns

from common import netnsmake

NETNS_DIR = Path("/run/netns")
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
    own, applied by runc later, still wins). common/netnsmake.py makes it."""
    return netnsmake.ensure(netns_path(name), ipv6)


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


_is_netns = netnsmake.is_mounted


def _check_name(name: str) -> None:
    if not name or "/" in name or name in (".", "..") or len(name) > _MAX_NAME:
        raise ValueError(f"invalid network namespace name {name!r}")
