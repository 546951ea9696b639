"""Address pools of overlay networks (serial allocation with a quarantine), VNIs and network subnets for the allocator.
Pure: state comes from the store snapshot core.py passes; common/ipam.py is the node-local counterpart."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

VNI_FIRST = 4096  # swarmkit's overlay VNIs start here (lower ones are for manual/local use)
VNI_LAST = (1 << 24) - 1
VXLANID_OPTION = "com.docker.network.driver.overlay.vxlanid_list"
# A freed address is not handed out again for this long unless the pool has nothing else left.
DEFAULT_QUARANTINE_S = 60.0


class AllocationError(Exception):
    """An allocation that cannot be done now; .message is the user-facing text (written on the task)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(slots=True)
class NetPool:
    """One overlay network's addresses on the leader.

    used is always what the store says is held (rebuilt from the snapshot at every pass), so it is exact
    after a restart. Serial: the search starts after the last address handed out and wraps. A released
    address is quarantined (address -> release time): it is skipped until the quarantine period passes,
    and is only handed out earlier when nothing else is free (oldest release first), so exhaustion
    beats quarantine. After a leader change the cursor restarts after the highest address in use, and
    addresses still on dead tasks in the store start quarantined."""

    subnet: IPv4Network
    gateway: IPv4Address | None
    ip_range: IPv4Network | None = None
    used: set[IPv4Address] = field(default_factory=set)
    quarantine: dict[IPv4Address, float] = field(default_factory=dict)
    cursor: int | None = None

    def reserved(self, addr: IPv4Address) -> bool:
        if addr == self.gateway:
            return True
        if self.subnet.prefixlen >= 31:
            return False
        return addr in (self.subnet.network_address, self.subnet.broadcast_address)

    def sync(self, in_use: set[IPv4Address], now: float, quarantine_s: float) -> None:
        """Take the store's view of held addresses; what was held before and is not now is quarantined."""
        for addr in self.used - in_use:
            self.quarantine[addr] = now
        self.used = {a for a in in_use if a in self.subnet}
        for addr in [a for a, t in self.quarantine.items() if a in self.used or now - t >= quarantine_s]:
            del self.quarantine[addr]

    def allocate(self, now: float, quarantine_s: float, requested: IPv4Address | None = None) -> IPv4Address:
        if requested is not None:
            if requested not in self.subnet:
                raise AllocationError(f"invalid address {requested}: it is not in subnet {self.subnet}")
            if requested in self.used or self.reserved(requested):
                raise AllocationError(f"address {requested} is already in use on subnet {self.subnet}")
            self.used.add(requested)
            self.quarantine.pop(requested, None)
            return requested
        net = self.ip_range or self.subnet
        lo, hi = int(net.network_address), int(net.broadcast_address)
        start = self.cursor if self.cursor is not None and lo <= self.cursor <= hi else lo
        for value in _wrapped(start, lo, hi):
            addr = IPv4Address(value)
            if addr in self.used or self.reserved(addr):
                continue
            released = self.quarantine.get(addr)
            if released is not None and now - released < quarantine_s:
                continue
            return self._take(addr, value)
        # nothing free outside the quarantine: the address released longest ago
        waiting = sorted((t, int(a)) for a, t in self.quarantine.items() if lo <= int(a) <= hi and a not in self.used)
        if waiting:
            value = waiting[0][1]
            return self._take(IPv4Address(value), value)
        raise AllocationError(f"could not allocate an address on network subnet {self.subnet}: no available IP addresses left")

    def _take(self, addr: IPv4Address, value: int) -> IPv4Address:
        self.used.add(addr)
        self.quarantine.pop(addr, None)
        self.cursor = value + 1
        return addr


def _wrapped(start: int, lo: int, hi: int) -> Iterable[int]:
    yield from range(start, hi + 1)
    yield from range(lo, start)


def pick_subnet(pools: list[IPv4Network], size: int, in_use: list[IPv4Network], routed: list[IPv4Network]) -> IPv4Network:
    """The first /size of the default pools overlapping no network's subnet and no route on the manager."""
    blocked = list(in_use) + [r for r in routed if r.prefixlen > 0]  # a default route says nothing
    for pool in pools:
        if size < pool.prefixlen:
            continue
        for candidate in _candidates(pool, size, blocked):
            return candidate
    raise AllocationError("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")


def _candidates(pool: IPv4Network, size: int, blocked: list[IPv4Network]) -> Iterable[IPv4Network]:
    # walk the pool in /size steps, jumping over a blocked block as a whole (a /8 in /24s is 65,536 candidates)
    step = 1 << (32 - size)
    value, end = int(pool.network_address), int(pool.broadcast_address)
    while value <= end:
        candidate = IPv4Network((value, size))
        hit = next((b for b in blocked if candidate.overlaps(b)), None)
        if hit is None:
            yield candidate
            value += step
        else:
            value = max(value + step, ((int(hit.broadcast_address) + 1 + step - 1) // step) * step)


def validate_default_pools(pools: list[str], size: int) -> tuple[list[str], int]:
    """swarm init --default-addr-pool / --default-addr-pool-mask-length, as dockerd checks them (sizes 1-29:
    a /30 leaves no room for the addresses an overlay keeps back). Returns the pools trimmed and the size."""
    size = size or 24
    if size > 29:
        raise AllocationError(f"subnet size is out of range: {size}")
    out = []
    for text in pools:
        text = text.strip()
        try:
            if "/" not in text:
                raise ValueError(text)
            net = IPv4Network(text, strict=False)
        except ValueError:  # Go's net.ParseCIDR wording
            raise AllocationError(f"invalid base pool {text}: invalid CIDR address: {text}") from None
        if size < net.prefixlen:
            raise AllocationError(f"invalid CIDR: {text!r}. Subnet size is too small for pool: {size}")
        out.append(str(net))
    return out, size


def next_vni(in_use: set[int], last: int = 0) -> int:
    """Serial: after the highest VNI in use (or the last handed out), wrapping to the lowest free one."""
    start = max([VNI_FIRST - 1, last, *in_use]) + 1
    for vni in itertools.chain(range(start, VNI_LAST + 1), range(VNI_FIRST, start)):  # lazily: 16M candidates
        if vni not in in_use:
            return vni
    raise AllocationError("no available VXLAN id left")


def parse_vni_option(text: str) -> int:
    """--opt com.docker.network.driver.overlay.vxlanid_list=N (the first of a comma list: one subnet here)."""
    first = text.split(",")[0].strip()
    try:
        vni = int(first, 10)
    except ValueError:
        raise AllocationError(f"invalid vxlan id value {first!r} passed") from None
    if not 1 <= vni <= VNI_LAST:
        raise AllocationError(f"vxlan id {vni} is out of range (1-{VNI_LAST})")
    return vni
