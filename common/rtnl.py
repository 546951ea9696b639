"""The few rtnetlink requests a container's network set-up makes (veth pair, address, link settings, default route),
on a plain NETLINK_ROUTE socket: 2 syscalls and ~10 us each, where pyroute2's synchronous API pays ~0.5-1 ms of CPU
per request and as much again per socket (it runs an asyncio loop per socket), and hands the GIL over at every step.

Used by agent/network (netns.py, bridge.py) and vxlan/kernel.py on the start path; everything else keeps pyroute2.
Messages follow linux/rtnetlink.h and linux/if_link.h; a refused request raises NetlinkError with the kernel's errno.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE, NLM_F_REPLACE = 0x1, 0x4, 0x200, 0x400, 0x100
RTM_NEWLINK, RTM_GETLINK, RTM_SETLINK, RTM_NEWADDR, RTM_GETADDR, RTM_NEWROUTE, RTM_DELROUTE = 16, 18, 19, 20, 22, 24, 25
NLM_F_DUMP = 0x300
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_PROTINFO, IFLA_LINKINFO, IFLA_NET_NS_FD, IFLA_IFALIAS = (
    1, 3, 4, 10, 12, 18, 28, 20)
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFLA_VXLAN_ID, IFLA_VXLAN_LOCAL, IFLA_VXLAN_LEARNING, IFLA_VXLAN_PROXY, IFLA_VXLAN_L2MISS, IFLA_VXLAN_L3MISS = 1, 4, 7, 11, 13, 14
IFLA_VXLAN_PORT = 15  # big-endian
IFLA_BRPORT_MODE = 4  # hairpin
IFA_ADDRESS, IFA_LOCAL = 1, 2
RTA_DST, RTA_GATEWAY = 1, 5
NLA_F_NESTED = 0x8000
IFF_UP = 0x1
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RT_SCOPE_NOWHERE, RTN_UNICAST = 254, 4, 0, 255, 1
LOOPBACK_INDEX = 1  # lo is always the first link of a new namespace
CLONE_NEWNET = 0x40000000

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class NetlinkError(OSError):
    """The kernel refused a request: errno and what was asked."""


def _attr(kind: int, data: bytes) -> bytes:
    length = 4 + len(data)
    return struct.pack("=HH", length, kind) + data + b"\0" * (-length % 4)


def _u32(kind: int, value: int) -> bytes:
    return _attr(kind, struct.pack("=I", value))


def _str(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def _attrs(payload: bytes, offset: int) -> dict[int, bytes]:
    """The attributes of an answer from `offset` (after its fixed header): type (nesting flags cleared) -> data; the
    first of a type wins. A malformed length ends the walk."""
    out: dict[int, bytes] = {}
    while offset + 4 <= len(payload):
        length, kind = struct.unpack_from("=HH", payload, offset)
        if length < 4 or offset + length > len(payload):
            break
        out.setdefault(kind & 0x3FFF, payload[offset + 4:offset + length])
        offset += (length + 3) & ~3
    return out


def _ifinfo(index: int = 0, family: int = 0, up: bool | None = None) -> bytes:
    flags = IFF_UP if up else 0
    change = IFF_UP if up is not None else 0
    return struct.pack("=BxHiII", family, 0, index, flags, change)


def vxlan_info(vni: int, local: str, port: int) -> bytes:
    """IFLA_INFO_DATA of a VXLAN device as the overlay makes it: no learning, ARP proxy, no miss notifications."""
    return (_u32(IFLA_VXLAN_ID, vni) + _attr(IFLA_VXLAN_LOCAL, ipaddress.IPv4Address(local).packed)
            + _attr(IFLA_VXLAN_PORT, struct.pack("!H", port)) + _attr(IFLA_VXLAN_LEARNING, b"\0")
            + _attr(IFLA_VXLAN_PROXY, b"\1") + _attr(IFLA_VXLAN_L2MISS, b"\0") + _attr(IFLA_VXLAN_L3MISS, b"\0"))


def _mac(text: str) -> bytes:
    parts = text.split(":")
    if len(parts) != 6:
        raise ValueError(f"invalid MAC address {text!r}")
    return bytes(int(p, 16) for p in parts)


@contextlib.contextmanager
def entered(path: Path | str | None) -> Iterator[None]:
    """This thread in the namespace at `path` for the block (None: where it is), then back where it was: the one
    setns helper of agent/network/nsthread.py and vxlan/ns.py too."""
    if path is None:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(path, os.O_RDONLY)
    try:
        if _libc.setns(target, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
        try:
            yield
        finally:
            if _libc.setns(home, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"setns back: {os.strerror(err)}")
    finally:
        os.close(target)
        os.close(home)


class Rtnl:
    """One rtnetlink socket; it stays in the namespace it was opened in (`netns`: a path, None: the thread's own)."""

    def __init__(self, netns: Path | str | None = None) -> None:
        with entered(netns):
            self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        try:
            self._sock.bind((0, 0))
        except OSError:
            self._sock.close()
            raise
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- requests ----------------------------------------------------------------------
    def _request(self, kind: int, flags: int, body: bytes, what: str) -> list[bytes]:
        """Sends one request and reads until its ack (or error); the payloads of the answers before it."""
        self._seq += 1
        seq = self._seq
        self._sock.send(struct.pack("=IHHII", 16 + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags, seq, 0) + body)
        answers: list[bytes] = []
        while True:
            data = self._sock.recv(65536)
            offset = 0
            while offset + 16 <= len(data):
                length, mtype, _flags, mseq, _pid = struct.unpack_from("=IHHII", data, offset)
                if length < 16:
                    raise NetlinkError(errno.EIO, f"{what}: malformed netlink answer")
                payload = data[offset + 16:offset + length]
                offset += (length + 3) & ~3
                if mseq != seq:
                    continue  # an answer to an earlier request given up on
                if mtype == NLMSG_ERROR:
                    (code,) = struct.unpack_from("=i", payload)
                    if code:
                        raise NetlinkError(-code, f"{what}: {os.strerror(-code)}")
                    return answers
                if mtype == NLMSG_DONE:
                    return answers
                answers.append(payload)

    def link_index(self, name: str) -> int | None:
        """The index of the link called `name`, None when there is none."""
        try:
            answers = self._request(RTM_GETLINK, 0, _ifinfo() + _str(IFLA_IFNAME, name), f"get link {name}")
        except NetlinkError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        for payload in answers:
            return struct.unpack_from("=BxHiII", payload)[2]
        return None

    def link_mtu(self, index: int) -> int | None:
        """The MTU of link `index`, None when there is no such link."""
        try:
            answers = self._request(RTM_GETLINK, 0, _ifinfo(index), f"get link {index}")
        except NetlinkError as exc:
            if exc.errno == errno.ENODEV:
                return None
            raise
        for payload in answers:
            mtu = _attrs(payload, 16).get(IFLA_MTU)
            if mtu is not None and len(mtu) == 4:
                return int(struct.unpack("=I", mtu)[0])
        return None

    def addresses_v4(self) -> list[tuple[int, ipaddress.IPv4Address, int]]:
        """Every IPv4 address of the namespace: (link index, local address, prefix length), one dump request."""
        body = struct.pack("=BBBBI", socket.AF_INET, 0, 0, 0, 0)
        out = []
        for payload in self._request(RTM_GETADDR, NLM_F_DUMP, body, "list addresses"):
            if len(payload) < 8:
                continue
            family, prefixlen, _flags, _scope, index = struct.unpack_from("=BBBBI", payload)
            attrs = _attrs(payload, 8)
            raw = attrs.get(IFA_LOCAL) or attrs.get(IFA_ADDRESS)
            if family == socket.AF_INET and raw is not None and len(raw) == 4:
                out.append((index, ipaddress.IPv4Address(raw), prefixlen))
        return out

    def link_set(self, index: int, *, up: bool | None = None, master: int | None = None, mtu: int | None = None,
                 alias: str | None = None, mac: str | None = None) -> None:
        attrs = b""
        if master is not None:
            attrs += _u32(IFLA_MASTER, master)
        if mtu is not None:
            attrs += _u32(IFLA_MTU, mtu)
        if alias is not None:
            attrs += _str(IFLA_IFALIAS, alias)
        if mac is not None:
            attrs += _attr(IFLA_ADDRESS, _mac(mac))
        self._request(RTM_NEWLINK, 0, _ifinfo(index, up=up) + attrs, f"set link {index}")

    def hairpin(self, index: int) -> None:
        """The bridge port `index` sends a frame back out of the port it came in (`bridge link set hairpin on`)."""
        protinfo = _attr(IFLA_PROTINFO | NLA_F_NESTED, _attr(IFLA_BRPORT_MODE, b"\x01"))
        self._request(RTM_SETLINK, 0, _ifinfo(index, family=socket.AF_BRIDGE) + protinfo, f"hairpin on link {index}")

    def veth_add(self, name: str, peer: str, peer_netns: Path | str, *, master: int | None = None,
                 mtu: int | None = None, up: bool = False, peer_mac: str | None = None) -> None:
        """A veth pair: `name` here (on `master`, up), `peer` made straight in the namespace at `peer_netns` (down:
        the kernel cannot bring a peer up before its pair exists, ENOTCONN). NetlinkError EEXIST when `name` is
        taken."""
        fd = os.open(peer_netns, os.O_RDONLY | os.O_CLOEXEC)
        try:
            peer_attrs = _str(IFLA_IFNAME, peer) + _u32(IFLA_NET_NS_FD, fd)
            if peer_mac is not None:
                peer_attrs += _attr(IFLA_ADDRESS, _mac(peer_mac))
            if mtu is not None:
                peer_attrs += _u32(IFLA_MTU, mtu)
            info = _attr(IFLA_INFO_KIND, b"veth") + _attr(
                IFLA_INFO_DATA | NLA_F_NESTED,
                _attr(VETH_INFO_PEER | NLA_F_NESTED, _ifinfo() + peer_attrs))
            attrs = _str(IFLA_IFNAME, name) + _attr(IFLA_LINKINFO | NLA_F_NESTED, info)
            if master is not None:
                attrs += _u32(IFLA_MASTER, master)
            if mtu is not None:
                attrs += _u32(IFLA_MTU, mtu)
            self._request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, _ifinfo(up=True if up else None) + attrs,
                          f"add veth {name}/{peer}")
        finally:
            os.close(fd)

    def link_add(self, name: str, kind: str, *, info_data: bytes = b"", netns: Path | str | None = None,
                 master: int | None = None, mtu: int | None = None, up: bool = False) -> None:
        """A link of `kind` (bridge, vxlan...), made straight in the namespace at `netns` when given (a VXLAN device's
        socket stays in this socket's namespace all the same). NetlinkError EEXIST when the name is taken."""
        info = _attr(IFLA_INFO_KIND, kind.encode()) + (_attr(IFLA_INFO_DATA | NLA_F_NESTED, info_data)
                                                         if info_data else b"")
        attrs = _str(IFLA_IFNAME, name) + _attr(IFLA_LINKINFO | NLA_F_NESTED, info)
        if master is not None:
            attrs += _u32(IFLA_MASTER, master)
        if mtu is not None:
            attrs += _u32(IFLA_MTU, mtu)
        fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC) if netns is not None else -1
        try:
            if fd >= 0:
                attrs += _u32(IFLA_NET_NS_FD, fd)
            self._request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, _ifinfo(up=True if up else None) + attrs,
                          f"add {kind} {name}")
        finally:
            if fd >= 0:
                os.close(fd)

    def addr_add(self, index: int, address: str, prefixlen: int) -> None:
        ip = ipaddress.IPv4Address(address).packed
        body = struct.pack("=BBBBI", socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, index)
        self._request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, body + _attr(IFA_LOCAL, ip) + _attr(IFA_ADDRESS, ip),
                      f"add address {address}/{prefixlen} on link {index}")

    def default_route(self, gateway: str | None) -> None:
        """Replaces the main table's default route with one via `gateway`; None deletes it (none there: no error)."""
        if gateway is None:
            # protocol 0, scope nowhere, type 0: the kernel's wildcards, any default route of the main table
            wildcard = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, 0, RT_SCOPE_NOWHERE, 0, 0)
            try:
                self._request(RTM_DELROUTE, 0, wildcard, "delete the default route")
            except NetlinkError as exc:
                if exc.errno != errno.ESRCH:
                    raise
            return
        body = struct.pack("=BBBBBBBBI", socket.AF_INET, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE,
                           RTN_UNICAST, 0)
        self._request(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE,
                      body + _attr(RTA_GATEWAY, ipaddress.IPv4Address(gateway).packed), f"default route via {gateway}")
