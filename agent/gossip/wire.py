"""The gossip wire format: struct-packed SWIM messages, compound UDP packets and push-pull state frames.
Encoded by agent.gossip.core, carried (encrypted) by agent.gossip.shell; every decode is bounded and raises only DecodeError."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from .delegate import MemberState

WIRE_VERSION = 1
MAX_NAME = 255          # names and addresses are u8-length-prefixed
MAX_META = 512          # memberlist's MetaMaxSize
MAX_USER_MSG = 65535
MAX_PACKET_MSGS = 255
MAX_PUSH_PULL_MEMBERS = 100_000
MAX_PUSH_PULL_USER = 16 << 20

_U8 = struct.Struct("!B")
_U16 = struct.Struct("!H")
_U32 = struct.Struct("!I")
_HDR = struct.Struct("!BB")  # version, message count


class MsgType(IntEnum):
    PING = 1
    INDIRECT_PING = 2
    ACK = 3
    NACK = 4
    SUSPECT = 5
    ALIVE = 6
    DEAD = 7
    USER = 8
    PUSH_PULL = 9


class DecodeError(ValueError):
    """A peer's bytes that are not a well-formed message (counted and dropped by the caller)."""


@dataclass(slots=True)
class Ping:
    seq: int
    target: str          # the name the sender thinks it is probing (misdirected pings are ignored)
    source: str
    source_addr: str
    source_port: int


@dataclass(slots=True)
class IndirectPing:
    seq: int
    target: str
    target_addr: str
    target_port: int
    nack: bool
    source: str
    source_addr: str
    source_port: int


@dataclass(slots=True)
class Ack:
    seq: int


@dataclass(slots=True)
class Nack:
    seq: int


@dataclass(slots=True)
class Suspect:
    incarnation: int
    node: str
    sender: str          # memberlist's From: who suspects (independent confirmations are counted by it)


@dataclass(slots=True)
class Alive:
    incarnation: int
    node: str
    addr: str
    port: int
    meta: bytes


@dataclass(slots=True)
class Dead:
    incarnation: int
    node: str
    sender: str          # sender == node means a graceful leave


@dataclass(slots=True)
class User:
    data: bytes


Message = Ping | IndirectPing | Ack | Nack | Suspect | Alive | Dead | User


@dataclass(slots=True)
class MemberRecord:
    """One member in a push-pull exchange."""

    name: str
    addr: str
    port: int
    incarnation: int
    state: MemberState
    meta: bytes


@dataclass(slots=True)
class PushPull:
    join: bool
    members: list[MemberRecord]
    user_state: bytes


_STATE_CODE = {MemberState.ALIVE: 0, MemberState.SUSPECT: 1, MemberState.DEAD: 2, MemberState.LEFT: 3}
_CODE_STATE = {v: k for k, v in _STATE_CODE.items()}


# --- encoding --------------------------------------------------------------------------------------------


def _s(value: str) -> bytes:
    raw = value.encode()
    if len(raw) > MAX_NAME:
        raise ValueError(f"gossip name or address too long ({len(raw)} > {MAX_NAME} bytes): {value[:40]!r}")
    return _U8.pack(len(raw)) + raw


def _b16(value: bytes, limit: int) -> bytes:
    if len(value) > limit:
        raise ValueError(f"gossip field too long ({len(value)} > {limit} bytes)")
    return _U16.pack(len(value)) + value


def encode(msg: Message) -> bytes:
    """One message: type byte + body."""
    match msg:
        case Ping():
            return bytes([MsgType.PING]) + _U32.pack(msg.seq) + _s(msg.target) + _s(msg.source) + \
                _s(msg.source_addr) + _U16.pack(msg.source_port)
        case IndirectPing():
            return bytes([MsgType.INDIRECT_PING]) + _U32.pack(msg.seq) + _s(msg.target) + _s(msg.target_addr) + \
                _U16.pack(msg.target_port) + bytes([1 if msg.nack else 0]) + _s(msg.source) + \
                _s(msg.source_addr) + _U16.pack(msg.source_port)
        case Ack():
            return bytes([MsgType.ACK]) + _U32.pack(msg.seq)
        case Nack():
            return bytes([MsgType.NACK]) + _U32.pack(msg.seq)
        case Suspect():
            return bytes([MsgType.SUSPECT]) + _U32.pack(msg.incarnation) + _s(msg.node) + _s(msg.sender)
        case Alive():
            return bytes([MsgType.ALIVE]) + _U32.pack(msg.incarnation) + _s(msg.node) + _s(msg.addr) + \
                _U16.pack(msg.port) + _b16(msg.meta, MAX_META)
        case Dead():
            return bytes([MsgType.DEAD]) + _U32.pack(msg.incarnation) + _s(msg.node) + _s(msg.sender)
        case User():
            return bytes([MsgType.USER]) + _b16(msg.data, MAX_USER_MSG)
    raise TypeError(f"not a gossip message: {type(msg).__name__}")


COMPOUND_OVERHEAD = 2    # each message in a packet costs a u16 length
PACKET_OVERHEAD = _HDR.size


def encode_packet(parts: list[bytes]) -> bytes:
    """A UDP packet: version, count, then each encoded message length-prefixed."""
    if not 0 < len(parts) <= MAX_PACKET_MSGS:
        raise ValueError(f"a packet holds 1..{MAX_PACKET_MSGS} messages, not {len(parts)}")
    return _HDR.pack(WIRE_VERSION, len(parts)) + b"".join(_U16.pack(len(p)) + p for p in parts)


def encode_push_pull(pp: PushPull) -> bytes:
    out = [bytes([MsgType.PUSH_PULL, 1 if pp.join else 0]), _U32.pack(len(pp.members))]
    for m in pp.members:
        out.append(_s(m.name) + _s(m.addr) + _U16.pack(m.port) + _U32.pack(m.incarnation) +
                   bytes([_STATE_CODE[m.state]]) + _b16(m.meta, MAX_META))
    if len(pp.user_state) > MAX_PUSH_PULL_USER:
        raise ValueError(f"push-pull user state too large ({len(pp.user_state)} bytes)")
    out.append(_U32.pack(len(pp.user_state)) + pp.user_state)
    return b"".join(out)


# --- decoding --------------------------------------------------------------------------------------------


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if end > len(self.buf):
            raise DecodeError(f"truncated: wanted {n} bytes at offset {self.pos}, have {len(self.buf) - self.pos}")
        out = self.buf[self.pos:end]
        self.pos = end
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return _U16.unpack(self.take(2))[0]

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def s(self) -> str:
        raw = self.take(self.u8())
        try:
            return raw.decode()
        except UnicodeDecodeError as exc:
            raise DecodeError("name is not UTF-8") from exc

    def b16(self, limit: int) -> bytes:
        n = self.u16()
        if n > limit:
            raise DecodeError(f"field of {n} bytes exceeds {limit}")
        return self.take(n)

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise DecodeError(f"{len(self.buf) - self.pos} trailing bytes")


def _str(buf: bytes, pos: int) -> tuple[str, int]:
    if pos >= len(buf):
        raise DecodeError(f"truncated at offset {pos}")
    end = pos + 1 + buf[pos]
    if end > len(buf):
        raise DecodeError(f"truncated string at offset {pos}")
    try:
        return buf[pos + 1:end].decode(), end
    except UnicodeDecodeError as exc:
        raise DecodeError("name is not UTF-8") from exc


def _u32(buf: bytes, pos: int) -> int:
    if pos + 4 > len(buf):
        raise DecodeError(f"truncated at offset {pos}")
    return _U32.unpack_from(buf, pos)[0]


def _u16(buf: bytes, pos: int) -> int:
    if pos + 2 > len(buf):
        raise DecodeError(f"truncated at offset {pos}")
    return _U16.unpack_from(buf, pos)[0]


def decode(data: bytes) -> Message:
    """One message from its bytes; DecodeError for anything malformed (hand-unrolled: it is the hot path)."""
    if not data:
        raise DecodeError("empty message")
    kind = data[0]
    msg: Message
    if kind == MsgType.ACK or kind == MsgType.NACK:
        if len(data) < 5:
            raise DecodeError(f"truncated ack/nack of {len(data)} bytes")
        if len(data) > 5:
            raise DecodeError(f"{len(data) - 5} trailing bytes")
        seq = _U32.unpack_from(data, 1)[0]
        return Ack(seq) if kind == MsgType.ACK else Nack(seq)
    if kind == MsgType.SUSPECT or kind == MsgType.DEAD:
        inc = _u32(data, 1)
        node, pos = _str(data, 5)
        sender, pos = _str(data, pos)
        msg = Suspect(inc, node, sender) if kind == MsgType.SUSPECT else Dead(inc, node, sender)
    elif kind == MsgType.ALIVE:
        inc = _u32(data, 1)
        node, pos = _str(data, 5)
        addr, pos = _str(data, pos)
        port = _u16(data, pos)
        n = _u16(data, pos + 2)
        if n > MAX_META:
            raise DecodeError(f"meta of {n} bytes exceeds {MAX_META}")
        pos += 4
        if pos + n > len(data):
            raise DecodeError("truncated meta")
        msg = Alive(inc, node, addr, port, data[pos:pos + n])
        pos += n
    elif kind == MsgType.PING:
        seq = _u32(data, 1)
        target, pos = _str(data, 5)
        source, pos = _str(data, pos)
        saddr, pos = _str(data, pos)
        msg = Ping(seq, target, source, saddr, _u16(data, pos))
        pos += 2
    elif kind == MsgType.INDIRECT_PING:
        seq = _u32(data, 1)
        target, pos = _str(data, 5)
        taddr, pos = _str(data, pos)
        tport = _u16(data, pos)
        if pos + 2 >= len(data):
            raise DecodeError("truncated indirect ping")
        nack = data[pos + 2] != 0
        source, pos = _str(data, pos + 3)
        saddr, pos = _str(data, pos)
        msg = IndirectPing(seq, target, taddr, tport, nack, source, saddr, _u16(data, pos))
        pos += 2
    elif kind == MsgType.USER:
        n = _u16(data, 1)
        pos = 3 + n
        if pos > len(data):
            raise DecodeError("truncated user message")
        msg = User(data[3:pos])
    else:
        raise DecodeError(f"unknown message type {kind}")
    if pos != len(data):
        raise DecodeError(f"{len(data) - pos} trailing bytes")
    return msg


def decode_packet(data: bytes) -> list[bytes]:
    """The message parts of a packet (each still to decode on its own, so one bad part drops only itself)."""
    size = len(data)
    if size < 2:
        raise DecodeError("truncated packet header")
    version, count = data[0], data[1]
    if version != WIRE_VERSION:
        raise DecodeError(f"unknown wire version {version}")
    if count == 0:
        raise DecodeError("empty packet")
    parts = []
    pos = 2
    for _ in range(count):
        if pos + 2 > size:
            raise DecodeError(f"truncated packet at offset {pos}")
        end = pos + 2 + ((data[pos] << 8) | data[pos + 1])
        if end > size:
            raise DecodeError(f"truncated packet part at offset {pos}")
        parts.append(data[pos + 2:end])
        pos = end
    if pos != size:
        raise DecodeError(f"{size - pos} trailing bytes")
    return parts


def decode_push_pull(data: bytes, max_members: int = MAX_PUSH_PULL_MEMBERS) -> PushPull:
    r = _Reader(data)
    if r.u8() != MsgType.PUSH_PULL:
        raise DecodeError("not a push-pull frame")
    join = r.u8() != 0
    count = r.u32()
    if count > max_members:
        raise DecodeError(f"push-pull of {count} members exceeds {max_members}")
    members = []
    for _ in range(count):
        name, addr, port, inc, code = r.s(), r.s(), r.u16(), r.u32(), r.u8()
        state = _CODE_STATE.get(code)
        if state is None:
            raise DecodeError(f"unknown member state {code}")
        members.append(MemberRecord(name, addr, port, inc, state, r.b16(MAX_META)))
    n = r.u32()
    if n > MAX_PUSH_PULL_USER:
        raise DecodeError(f"push-pull user state of {n} bytes exceeds {MAX_PUSH_PULL_USER}")
    user = r.take(n)
    r.done()
    return PushPull(join, members, user)
