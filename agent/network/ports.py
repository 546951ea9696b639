"""Published-port specs (-p/--expose, the API's PortBindings) and host-port allocation, as Docker does.
Pure except host_port_in_use; the engine feeds the results to firewall.PublishedPort rules."""
from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path
from typing import Any

PROTOS = ("tcp", "udp")
_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Docker's fallback when the kernel's range cannot be read.
_DEFAULT_RANGE = (32768, 60999)


class PortSpecError(ValueError):
    """A port spec Docker would refuse; `message` is Docker's wording."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class PortConflict(Exception):
    """The host port is taken; `message` is Docker's wording."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(slots=True, frozen=True)
class PortBinding:
    """One container port published on the host; host_port 0 = pick one (within the range if set)."""

    container_port: int
    proto: str
    host_ip: str = ""
    host_port: int = 0
    host_port_end: int = 0


def _port_range(text: str) -> tuple[int, int] | None:
    """'80' or '8000-8010' -> (start, end); None when not a valid 1..65535 range (Docker's rules)."""
    lo, sep, hi = text.partition("-")
    if not sep:
        hi = lo
    if not (lo.isdigit() and hi.isdigit() and lo.isascii() and hi.isascii()):
        return None
    start, end = int(lo), int(hi)
    if start > 65535 or end > 65535 or end < start:
        return None
    return start, end


def _split_spec(raw: str) -> tuple[str, str, str]:
    """ip:hostPort:containerPort, where the ip may itself contain colons (IPv6)."""
    parts = raw.split(":")
    if len(parts) == 1:
        return "", "", parts[0]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    return ":".join(parts[:-2]), parts[-2], parts[-1]


def _check_proto(proto: str) -> str:
    proto = proto.lower()
    if proto not in PROTOS:
        # Docker also accepts sctp; shoal's rules only cover tcp and udp, so it says so.
        raise PortSpecError(f"invalid proto: {proto}")
    return proto


def _check_host_ip(ip: str) -> str:
    if ip.startswith("["):
        if not ip.endswith("]"):
            raise PortSpecError(f"invalid IP address: {ip}")
        ip = ip[1:-1]
    if not ip:
        return ""
    try:
        addr = ip_address(ip)
    except ValueError:
        raise PortSpecError(f"invalid IP address: {ip}") from None
    if isinstance(addr, IPv6Address):
        raise PortSpecError(f"invalid IP address: {ip} (IPv6 port publishing is not supported)")
    return "" if addr == IPv4Address("0.0.0.0") else str(addr)


def parse_publish(spec: str) -> list[PortBinding]:
    """One `-p` value -> its bindings, validated with the docker CLI's messages."""
    ip, host, container = _split_spec(spec)
    container, _, proto = container.partition("/")
    if not container:
        raise PortSpecError(f"no port specified: {spec}<empty>")
    proto = _check_proto(proto or "tcp")
    host_ip = _check_host_ip(ip)
    crange = _port_range(container)
    if crange is None or crange[0] == 0:
        raise PortSpecError(f"invalid containerPort: {container}")
    hrange = (0, 0)
    if host:
        parsed = _port_range(host)
        if parsed is None:
            raise PortSpecError(f"invalid hostPort: {host}")
        hrange = parsed
        # A host range may differ in size only when it is the pool for a single container port.
        if crange[1] - crange[0] != hrange[1] - hrange[0] and crange[0] != crange[1]:
            raise PortSpecError(f"invalid ranges specified for container and host Ports: "
                                f"{container} and {host}")
    count = crange[1] - crange[0] + 1
    if count == 1 and hrange[0] != hrange[1]:
        return [PortBinding(crange[0], proto, host_ip, hrange[0], hrange[1])]
    return [PortBinding(crange[0] + i, proto, host_ip, hrange[0] + i if hrange[0] else 0)
            for i in range(count)]


def parse_expose(spec: str) -> list[tuple[int, str]]:
    """One `--expose` value ('80', '80/udp', '8000-8010') -> [(port, proto)]."""
    ports, _, proto = spec.partition("/")
    proto = _check_proto(proto or "tcp")
    prange = _port_range(ports)
    if prange is None:
        raise PortSpecError(f"invalid range format for --expose: {spec}")
    return [(p, proto) for p in range(prange[0], prange[1] + 1)]


def _host_port_text(b: PortBinding) -> str:
    if not b.host_port:
        return ""
    if b.host_port_end and b.host_port_end != b.host_port:
        return f"{b.host_port}-{b.host_port_end}"
    return str(b.host_port)


def to_docker(bindings: list[PortBinding]) -> tuple[dict[str, dict], dict[str, list[dict[str, str]]]]:
    """(ExposedPorts, HostConfig.PortBindings) as the docker CLI sends them."""
    exposed: dict[str, dict] = {}
    port_map: dict[str, list[dict[str, str]]] = {}
    for b in bindings:
        key = f"{b.container_port}/{b.proto}"
        exposed.setdefault(key, {})
        port_map.setdefault(key, []).append({"HostIp": b.host_ip, "HostPort": _host_port_text(b)})
    return exposed, port_map


def _parse_port_key(key: str) -> tuple[int, str]:
    """'80/tcp' (proto optional) as found in ExposedPorts and PortBindings."""
    port, _, proto = str(key).partition("/")
    prange = _port_range(port)
    if prange is None or prange[0] != prange[1] or prange[0] == 0:
        raise PortSpecError(f'invalid port specification: "{port}"')
    return prange[0], _check_proto(proto or "tcp")


def from_docker(exposed: dict | None, port_bindings: dict | None,
                publish_all: bool) -> list[PortBinding]:
    """The API's ExposedPorts / PortBindings / PublishAllPorts -> bindings, sorted by port and proto.

    With publish_all, every exposed port without an explicit binding gets a picked host port.
    """
    out: list[PortBinding] = []
    bound: set[tuple[int, str]] = set()
    for key, entries in (port_bindings or {}).items():
        port, proto = _parse_port_key(key)
        for entry in entries or []:
            entry = entry or {}
            host_port = str(entry.get("HostPort") or "")
            hrange = (0, 0)
            if host_port:
                parsed = _port_range(host_port)
                if parsed is None:
                    raise PortSpecError(f'invalid port specification: "{host_port}"')
                hrange = parsed
            host_ip = _check_host_ip(str(entry.get("HostIp") or ""))
            end = hrange[1] if hrange[1] != hrange[0] else 0
            out.append(PortBinding(port, proto, host_ip, hrange[0], end))
            bound.add((port, proto))
    if publish_all:
        keys = set(exposed or {}) | set(port_bindings or {})
        for key in keys:
            port, proto = _parse_port_key(key)
            if (port, proto) not in bound:
                out.append(PortBinding(port, proto))
    else:
        for key in exposed or {}:
            _parse_port_key(key)  # validated even when not published
    out.sort(key=lambda b: (b.container_port, b.proto, b.host_ip, b.host_port))
    return out


def ephemeral_range(path: Path = _RANGE_FILE) -> tuple[int, int]:
    """The kernel's ephemeral range, the pool Docker picks host ports from."""
    try:
        lo, hi = (int(x) for x in path.read_text().split())
    except (OSError, ValueError):
        return _DEFAULT_RANGE
    return (lo, hi) if 0 < lo <= hi <= 65535 else _DEFAULT_RANGE


def _shown_ip(host_ip: str) -> str:
    return host_ip or "0.0.0.0"


class PortAllocator:
    """Which host ports shoal has handed out, per protocol and host IP; one per daemon.

    "" (all addresses) overlaps every specific address on the same port and protocol.
    Picked ports go round the range serially, so a just-released port is not handed out again at once.
    """

    def __init__(self, low: int = 0, high: int = 0) -> None:
        if not low or not high:
            low, high = ephemeral_range()
        if not 0 < low <= high <= 65535:
            raise ValueError(f"invalid port range {low}-{high}")
        self.low, self.high = low, high
        # (proto, host_ip, port) -> owner
        self._used: dict[tuple[str, str, int], str] = {}
        # Indexes so that a check or a release costs the same with 10 or 10,000 ports reserved.
        self._ips: dict[tuple[str, int], set[str]] = {}  # (proto, port) -> host IPs holding it
        self._owned: dict[str, set[tuple[str, str, int]]] = {}  # owner -> its keys
        self._last: dict[str, int] = {}

    def _taken(self, proto: str, host_ip: str, port: int) -> bool:
        if host_ip == "":
            return bool(self._ips.get((proto, port)))
        return (proto, host_ip, port) in self._used or (proto, "", port) in self._used

    def allocate(self, proto: str, host_ip: str, wanted: int | tuple[int, int] = 0,
                 owner: str = "") -> int:
        """Reserve and return a host port: `wanted` exactly, the first free one of a (start, end)
        range, or with 0 the next free one of the allocator's range after the last one picked."""
        if proto not in PROTOS:
            raise PortSpecError(f"invalid proto: {proto}")
        host_ip = _check_host_ip(host_ip)
        if isinstance(wanted, tuple):
            start, end = wanted
            if not 0 < start <= end <= 65535:
                raise PortSpecError(f"invalid hostPort: {start}-{end}")
            if start == end:
                wanted = start
            else:
                for port in range(start, end + 1):
                    if not self._taken(proto, host_ip, port):
                        return self._take(proto, host_ip, port, owner)
                raise PortConflict(f"Bind for {_shown_ip(host_ip)}:{start}-{end} failed: "
                                   f"port is already allocated")
        if wanted:
            if not 0 < wanted <= 65535:
                raise PortSpecError(f"invalid hostPort: {wanted}")
            if self._taken(proto, host_ip, wanted):
                raise PortConflict(f"Bind for {_shown_ip(host_ip)}:{wanted} failed: "
                                   f"port is already allocated")
            return self._take(proto, host_ip, wanted, owner)
        size = self.high - self.low + 1
        last = self._last.get(proto, self.high)
        for step in range(1, size + 1):
            port = self.low + (last - self.low + step) % size
            if not self._taken(proto, host_ip, port):
                self._last[proto] = port
                return self._take(proto, host_ip, port, owner)
        raise PortConflict("all ports are allocated")

    def _take(self, proto: str, host_ip: str, port: int, owner: str) -> int:
        key = (proto, host_ip, port)
        self._used[key] = owner
        self._ips.setdefault((proto, port), set()).add(host_ip)
        self._owned.setdefault(owner, set()).add(key)
        return port

    def _drop(self, key: tuple[str, str, int]) -> None:
        owner = self._used.pop(key, None)
        if owner is None:
            return
        proto, host_ip, port = key
        self._ips[(proto, port)].discard(host_ip)
        if not self._ips[(proto, port)]:
            del self._ips[(proto, port)]
        self._owned[owner].discard(key)
        if not self._owned[owner]:
            del self._owned[owner]

    def release(self, proto: str, host_ip: str, port: int) -> None:
        """Give the port back; releasing one not held is no error."""
        self._drop((proto, _check_host_ip(host_ip), port))

    def release_owner(self, owner: str) -> None:
        """Give back every port reserved for `owner` (a container id)."""
        for key in list(self._owned.get(owner, ())):
            self._drop(key)

    def owned_by(self, owner: str) -> list[tuple[str, str, int]]:
        """(proto, host_ip, port) reserved for `owner`, sorted."""
        return sorted(self._owned.get(owner, ()))

    def allocated(self) -> list[tuple[str, str, int, str]]:
        """(proto, host_ip, port, owner) of every reserved port, sorted."""
        return sorted((p, ip, n, o) for (p, ip, n), o in self._used.items())

    def to_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "last": dict(self._last),
                "used": [{"proto": p, "host_ip": ip, "port": n, "owner": o}
                         for p, ip, n, o in self.allocated()]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PortAllocator:
        alloc = cls(int(data["low"]), int(data["high"]))
        alloc._last = {str(k): int(v) for k, v in data.get("last", {}).items()}
        for u in data.get("used", []):
            alloc._take(u["proto"], u["host_ip"], int(u["port"]), u.get("owner", ""))
        return alloc


def host_port_in_use(proto: str, host_ip: str, port: int) -> bool:
    """Whether another process in this netns holds the port: try to bind it (no SO_REUSEADDR).

    Shoal's own published ports are DNAT rules, not sockets, so this only sees foreign holders.
    A TCP port with connections in TIME_WAIT also reads as in use, as it does for Docker's own bind.
    """
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 0)
        try:
            sock.bind((host_ip or "0.0.0.0", port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False
