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


ARP_RETRY_MS = 100
ARP_RETRIES_PER_DEFAULT = 10  # 1000 ms / ARP_RETRY_MS: the same give-up time as the kernel's defaults


def fast_arp_retries(ifname: str) -> list[Sysctl]:
    """Neighbour resolution on `ifname` retried every ARP_RETRY_MS instead of the kernel's 1 s, ten times as many
    times, so an address nobody answers still fails after the same ~3 s: an entry that appears just after the
    first request (an overlay peer programmed from gossip a moment late) answers the next one, 0.1 s later,
    instead of a connection waiting out the second (TCP's own first retry comes after 1 s too). On an overlay
    the requests never reach the wire (the VXLAN device answers them from its own table, or drops them)."""
    base = ("net", "ipv4", "neigh", ifname)
    return [(base + ("retrans_time_ms",), str(ARP_RETRY_MS)),
            (base + ("mcast_solicit",), str(3 * ARP_RETRIES_PER_DEFAULT)),
            (base + ("ucast_solicit",), str(3 * ARP_RETRIES_PER_DEFAULT))]
