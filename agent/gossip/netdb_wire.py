"""networkdb's wire: encode and bounded, validating decode of the NetdbMessage / NetdbPushPull protobufs.
Used by agent/gossip/netdb.py; a peer's bytes that are too big, garbage or out of range are refused with a reason."""

from __future__ import annotations

import zlib

from google.protobuf.message import DecodeError

from proto import netdb_pb2 as npb

MAX_MESSAGE = 64 * 1024  # one user message (the shell's packets are far smaller: this bounds the parse)
MAX_PUSH_PULL = 8 * 1024 * 1024  # a push-pull state (every attachment of every node)
MAX_NAME = 128  # node name, network id, table name
MAX_KEY = 256
MAX_VALUE = 4096
MAX_LTIME = 1 << 62  # a forged huge clock must not pin everyone's clock at the top
MAX_EVENTS = 4096  # table events in one message
MAX_PARTS = 4096  # parts of one bulk sync
MAX_ATTACHMENTS = 100_000  # attachments in one push-pull
DIGEST_SIZE = 16  # a sync digest (blake2b-128 of a network's entries)
DEFLATE_LEVEL = 6
DEFLATE_WBITS = 12  # a 4 KiB window covers a packed message (a smaller state to set up per message than the default)

NetworkEvent = npb.NetdbNetworkEvent
TableEvent = npb.NetdbTableEvent
TableEvents = npb.NetdbTableEvents
BulkSync = npb.NetdbBulkSync
SyncDigest = npb.NetdbSyncDigest
PushPull = npb.NetdbPushPull
Message = npb.NetdbMessage


class WireError(ValueError):
    """A peer's message refused; str() says why (counted by the caller, never raised further)."""


def _name(what: str, v: str, limit: int = MAX_NAME, empty_ok: bool = False) -> None:
    if not v and not empty_ok:
        raise WireError(f"empty {what}")
    if len(v) > limit:
        raise WireError(f"{what} longer than {limit}")
    if not v.isprintable():
        raise WireError(f"{what} has control characters")


_KNOWN_MAX = 4096
_known: set[str] = set()  # names and keys already found valid (up to MAX_NAME long): a burst repeats the same few
# node, network and table names, and every entry arrives several times; bounded, forgotten all at once when full


def _known_name(what: str, v: str, limit: int) -> None:
    """_name for a non-empty field, remembering the values that passed."""
    if v in _known:
        return
    _name(what, v, limit)
    if len(v) <= MAX_NAME:
        if len(_known) >= _KNOWN_MAX:
            _known.clear()
        _known.add(v)


def _ltime(v: int) -> None:
    if v <= 0 or v > MAX_LTIME:
        raise WireError(f"lamport time {v} out of range")


def check_network_event(e: NetworkEvent) -> None:
    if e.type not in (NetworkEvent.JOIN, NetworkEvent.LEAVE):
        raise WireError(f"network event type {e.type} unknown")
    _ltime(e.ltime)
    _name("node name", e.node_name)
    _name("network id", e.network_id)


def check_table_event(e: TableEvent) -> None:
    if e.type not in (TableEvent.CREATE, TableEvent.UPDATE, TableEvent.DELETE):
        raise WireError(f"table event type {e.type} unknown")
    _ltime(e.ltime)
    _known_name("node name", e.node_name, MAX_NAME)
    _known_name("network id", e.network_id, MAX_NAME)
    _known_name("table name", e.table_name, MAX_NAME)
    _known_name("key", e.key, MAX_KEY)
    if len(e.value) > MAX_VALUE:
        raise WireError(f"value longer than {MAX_VALUE}")


def _parse(data: bytes) -> Message:
    m = Message()
    try:
        m.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:  # protobuf raises more than DecodeError on garbage
        raise WireError(f"undecodable message: {e}") from None
    return m


def _inflate(data: bytes) -> bytes:
    """A deflated message's bytes, bounded by MAX_MESSAGE whatever the ratio (a bomb is refused, not expanded)."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, MAX_MESSAGE + 1)
    except zlib.error as e:
        raise WireError(f"undecodable deflated message: {e}") from None
    if len(out) > MAX_MESSAGE:
        raise WireError(f"deflated message exceeds {MAX_MESSAGE} bytes")
    if not d.eof or d.unused_data:
        raise WireError("truncated or trailing deflated data")
    return out


def decode_message(data: bytes) -> Message:
    if len(data) > MAX_MESSAGE:
        raise WireError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE}")
    m = _parse(data)
    kind = m.WhichOneof("body")
    if kind == "deflated":
        m = _parse(_inflate(m.deflated))
        kind = m.WhichOneof("body")
        if kind == "deflated":
            raise WireError("deflated message inside a deflated message")
    if kind is None:
        raise WireError("empty message")
    if kind == "network_event":
        check_network_event(m.network_event)
    elif kind == "table_events":
        te = m.table_events
        _name("sender", te.from_node)
        if len(te.events) > MAX_EVENTS:
            raise WireError(f"more than {MAX_EVENTS} table events")
        for e in te.events:
            check_table_event(e)
    elif kind == "sync_digest":
        d = m.sync_digest
        _name("sender", d.node_name)
        _name("network id", d.network_id)
        if d.table_clock > MAX_LTIME:
            raise WireError(f"lamport time {d.table_clock} out of range")
        if len(d.digest) != DIGEST_SIZE:
            raise WireError(f"sync digest of {len(d.digest)} bytes, not {DIGEST_SIZE}")
    else:
        b = m.bulk_sync
        _name("sender", b.node_name)
        _name("network id", b.network_id)
        if not 0 < b.parts <= MAX_PARTS or not 0 <= b.part < b.parts:
            raise WireError(f"bulk sync part {b.part} of {b.parts} out of range")
        if b.table_clock > MAX_LTIME:
            raise WireError(f"lamport time {b.table_clock} out of range")
        if len(b.entries) > MAX_EVENTS:
            raise WireError(f"more than {MAX_EVENTS} entries")
        for e in b.entries:
            check_table_event(e)
            if e.network_id != b.network_id:
                raise WireError(f"entry of network {e.network_id!r} in a bulk sync of {b.network_id!r}")
    return m


def decode_push_pull(data: bytes) -> PushPull:
    if len(data) > MAX_PUSH_PULL:
        raise WireError(f"push-pull state of {len(data)} bytes exceeds {MAX_PUSH_PULL}")
    p = PushPull()
    try:
        p.ParseFromString(data)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise WireError(f"undecodable push-pull state: {e}") from None
    _name("node name", p.node_name)
    if p.network_clock > MAX_LTIME or p.table_clock > MAX_LTIME:
        raise WireError("lamport time out of range")
    if len(p.networks) > MAX_ATTACHMENTS:
        raise WireError(f"more than {MAX_ATTACHMENTS} attachments")
    for e in p.networks:
        check_network_event(e)
    return p


def deflate(message: bytes) -> bytes:
    """An encoded message, deflated when that makes it smaller (a burst's records share most of their bytes: about
    three times as many fit a packet)."""
    z = zlib.compressobj(DEFLATE_LEVEL, zlib.DEFLATED, DEFLATE_WBITS)
    packed = Message(deflated=z.compress(message) + z.flush()).SerializeToString()
    return packed if len(packed) < len(message) else message


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + _varint(len(payload)) + payload


def frame_event(event: bytes) -> bytes:
    """A serialized TableEvent framed as one element of TableEvents.events (field 2): what the send queue keeps,
    so a message is packed by joining bytes."""
    return _field(0x12, event)


def encode_table_events(from_node: str, framed: list[bytes]) -> bytes:
    """encode(TableEvents(from_node, events)) from framed events (frame_event), without parsing them back: the
    protobuf framing of NetdbMessage.table_events (field 2) holding from_node (field 1) and the events."""
    body = _field(0x0A, from_node.encode()) if from_node else b""
    return _field(0x12, body + b"".join(framed))


def encode(body: NetworkEvent | TableEvents | BulkSync | SyncDigest) -> bytes:
    m = Message()
    if isinstance(body, NetworkEvent):
        m.network_event.CopyFrom(body)
    elif isinstance(body, TableEvents):
        m.table_events.CopyFrom(body)
    elif isinstance(body, SyncDigest):
        m.sync_digest.CopyFrom(body)
    else:
        m.bulk_sync.CopyFrom(body)
    return m.SerializeToString()
