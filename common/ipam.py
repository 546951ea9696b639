"""IPv4 address management for one host's networks: pool validation, serial allocation, pool picking.
Pure (no I/O), in common/ so a future allocator on the managers can use it; agent.network persists pools."""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_address, ip_interface
from typing import Any, Iterable


class IPAMError(Exception):
    """A refused IPAM request; .message is the user-facing text (Docker's wording where it has one)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidPoolConfig(IPAMError):
    """Bad --subnet / --gateway / --ip-range (HTTP 400)."""


class PoolOverlap(IPAMError):
    """The subnet overlaps one already in use (Docker answers 403)."""


class InvalidAddress(IPAMError):
    """A requested or released address outside the pool."""


class AddressInUse(IPAMError):
    """A requested address is already allocated or reserved."""


class PoolExhausted(IPAMError):
    """No free address is left for dynamic allocation."""


class NoFreePool(IPAMError):
    """Every default local pool overlaps a network in use or a routed subnet."""


OVERLAP_MESSAGE = "invalid pool request: Pool overlaps with other one on this address space"
IN_USE_MESSAGE = "Address already in use"
NO_FREE_POOL_MESSAGE = (
    "could not find an available, non-overlapping IPv4 address pool among the defaults "
    "to assign to the network"
)


@dataclass(slots=True)
class AddressPool:
    """One network's IPv4 allocation state.

    Allocation is serial, like Docker's: the search starts after the last address handed out and
    wraps around, so a freed address is not reused until the pool wraps (no instant reuse of an IP a
    peer may still have cached). Network, broadcast and gateway addresses are never handed out.
    """

    subnet: IPv4Network
    gateway: IPv4Address
    ip_range: IPv4Network | None = None
    used: set[IPv4Address] = field(default_factory=set)
    # Next address (as an int) where the serial search starts; None = start of the range.
    cursor: int | None = None

    def allocate(self, requested: IPv4Address | None = None) -> IPv4Address:
        """Hand out `requested` (must be in the subnet and free) or the next free address."""
        if requested is not None:
            return self._allocate_requested(IPv4Address(requested))
        lo, hi = self._range_bounds()
        if self._free_in_range(lo, hi) == 0:
            where = f"network {self.subnet}"
            if self.ip_range is not None:
                where += f" (ip-range {self.ip_range})"
            raise PoolExhausted(f"no available addresses on {where}")
        start = self.cursor if self.cursor is not None and lo <= self.cursor <= hi else lo
        for value in _wrapped(start, lo, hi):
            addr = IPv4Address(value)
            if not self._taken(addr):
                self.used.add(addr)
                self.cursor = value + 1
                return addr
        raise AssertionError("free count and scan disagree")  # unreachable: counted above

    def release(self, addr: IPv4Address) -> None:
        """Return `addr` to the pool; releasing a free address is a no-op (reconcile-friendly)."""
        addr = IPv4Address(addr)
        if addr not in self.subnet:
            raise InvalidAddress(f"invalid address {addr}: it is not in subnet {self.subnet}")
        self.used.discard(addr)

    def is_reserved(self, addr: IPv4Address) -> bool:
        """True for the gateway and (on /30 and larger) the network and broadcast addresses."""
        return addr == self.gateway or addr in _edge_addresses(self.subnet)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subnet": str(self.subnet),
            "gateway": str(self.gateway),
            "ip_range": str(self.ip_range) if self.ip_range is not None else None,
            "cursor": _cursor_text(self.cursor),
            "used": [str(a) for a in sorted(self.used)],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AddressPool:
        ip_range = d.get("ip_range")
        cursor = d.get("cursor")
        return cls(
            subnet=IPv4Network(d["subnet"]),
            gateway=IPv4Address(d["gateway"]),
            ip_range=IPv4Network(ip_range) if ip_range else None,
            used={IPv4Address(a) for a in d.get("used", [])},
            cursor=int(IPv4Address(cursor)) if cursor else None,
        )

    def _allocate_requested(self, addr: IPv4Address) -> IPv4Address:
        # Like Docker, a static address only has to be in the subnet: --ip-range limits the
        # dynamic allocations, so users can keep static addresses outside it.
        if addr not in self.subnet:
            raise InvalidAddress(f"invalid address {addr}: it is not in subnet {self.subnet}")
        if self._taken(addr):
            raise AddressInUse(IN_USE_MESSAGE)
        self.used.add(addr)
        return addr

    def _taken(self, addr: IPv4Address) -> bool:
        return addr in self.used or self.is_reserved(addr)

    def _range_bounds(self) -> tuple[int, int]:
        net = self.ip_range if self.ip_range is not None else self.subnet
        return int(net.network_address), int(net.broadcast_address)

    def _free_in_range(self, lo: int, hi: int) -> int:
        reserved = {self.gateway, *_edge_addresses(self.subnet)}
        taken = {a for a in self.used | reserved if lo <= int(a) <= hi}
        return (hi - lo + 1) - len(taken)


def _cursor_text(cursor: int | None) -> str | None:
    # Past 255.255.255.255 the search wraps to the range start anyway, so it is stored as None.
    return str(IPv4Address(cursor)) if cursor is not None and cursor <= 0xFFFFFFFF else None


def _wrapped(start: int, lo: int, hi: int) -> Iterable[int]:
    yield from range(start, hi + 1)
    yield from range(lo, start)


def _edge_addresses(subnet: IPv4Network) -> tuple[IPv4Address, ...]:
    # /31 (RFC 3021) and /32 have no network or broadcast address to keep back.
    if subnet.prefixlen >= 31:
        return ()
    return (subnet.network_address, subnet.broadcast_address)


def _parse_network(kind: str, text: str) -> IPv4Network:
    try:
        if "/" not in text:
            raise ValueError(text)
        iface = ip_interface(text.strip())
    except ValueError:
        raise InvalidPoolConfig(f"invalid {kind} {text}: invalid CIDR address") from None
    if not isinstance(iface, IPv4Interface):
        raise InvalidPoolConfig(f"invalid {kind} {text}: only IPv4 is supported")
    net = iface.network
    if iface.ip != net.network_address:
        raise InvalidPoolConfig(f"invalid {kind} {text}: it should be {net}")
    return net


def _first_host(net: IPv4Network, subnet: IPv4Network) -> IPv4Address:
    edges = _edge_addresses(subnet)
    for value in range(int(net.network_address), int(net.broadcast_address) + 1):
        if IPv4Address(value) not in edges:
            return IPv4Address(value)
    raise InvalidPoolConfig(f"invalid ip-range {net}: it has no usable address in subnet {subnet}")


def parse_pool_config(subnet: str, gateway: str = "", ip_range: str = "") -> AddressPool:
    """Validate a network's IPAM config (Docker's messages) and return a fresh pool.

    The gateway defaults to the first usable address of the ip-range (or of the subnet), and is
    then allocated serially as Docker does, so the first container gets the address after it.
    """
    net = _parse_network("subnet", subnet)
    rng: IPv4Network | None = None
    if ip_range:
        rng = _parse_network("ip-range", ip_range)
        if rng.prefixlen < net.prefixlen:
            raise InvalidPoolConfig(
                f"invalid ip-range {ip_range}: CIDR block is bigger than its parent subnet {net}")
        if not rng.subnet_of(net):
            raise InvalidPoolConfig(
                f"invalid ip-range {ip_range}: parent subnet {net} doesn't contain ip-range")
    if gateway:
        try:
            gw = ip_address(gateway.strip())
        except ValueError:
            raise InvalidPoolConfig(f"invalid gateway {gateway}: invalid IP address") from None
        if not isinstance(gw, IPv4Address) or gw not in net:
            raise InvalidPoolConfig(
                f"invalid gateway {gateway}: parent subnet {net} doesn't contain this address")
        if gw in _edge_addresses(net):
            raise InvalidPoolConfig(
                f"invalid gateway {gateway}: it is the network or broadcast address of {net}")
        return AddressPool(subnet=net, gateway=gw, ip_range=rng)
    gw = _first_host(rng if rng is not None else net, net)
    return AddressPool(subnet=net, gateway=gw, ip_range=rng, cursor=int(gw) + 1)


def default_local_pools() -> list[IPv4Network]:
    """Docker's default local address pools: 172.17-31.0.0/16, then 192.168.0.0/16 in /20s."""
    pools = [IPv4Network(f"172.{n}.0.0/16") for n in range(17, 32)]
    pools += list(IPv4Network("192.168.0.0/16").subnets(new_prefix=20))
    return pools


def pick_free_subnet(in_use: list[IPv4Network], host_routed: list[IPv4Network],
                     pools: list[IPv4Network] | None = None) -> IPv4Network:
    """First pool subnet overlapping neither a network in use nor a subnet routed on the host."""
    # A default route (/0) overlaps everything; it says nothing about which subnets are taken.
    blocked = list(in_use) + [n for n in host_routed if n.prefixlen > 0]
    for candidate in pools if pools is not None else default_local_pools():
        if not any(candidate.overlaps(b) for b in blocked):
            return candidate
    raise NoFreePool(NO_FREE_POOL_MESSAGE)


def check_overlap(subnet: IPv4Network, in_use: list[IPv4Network]) -> None:
    """Refuse a subnet that overlaps any subnet already used by another network."""
    if any(subnet.overlaps(other) for other in in_use):
        raise PoolOverlap(OVERLAP_MESSAGE)
