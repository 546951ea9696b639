"""Writes under /proc/sys for the calling thread's network namespace, for the code that makes namespaces
(agent/network/nsthread.py for containers and sandboxes, vxlan/ns.py for overlay networks)."""
from __future__ import annotations

import os
from collections.abc import Sequence

Sysctl = tuple[tuple[str, ...], str]  # (path under /proc/sys, value)

# IPv6 off in a namespace, as Docker has it in every namespace it makes while no network has IPv6: writing `all`
# also sets `default`, so lo and every link made or moved in later has it off too (no link-local address, duplicate
# address detection or multicast listener reports for them).
IPV6_OFF: Sysctl = (("net", "ipv6", "conf", "all", "disable_ipv6"), "1")


def write_proc_sys(sysctls: Sequence[Sysctl]) -> None:
    """Writes each (path under /proc/sys, value) for this thread's network namespace; one the kernel lacks (IPv6
    built out) is skipped."""
    for parts, value in sysctls:
        try:
            fd = os.open(os.path.join("/proc/sys", *parts), os.O_WRONLY)
        except FileNotFoundError:
            continue
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)
