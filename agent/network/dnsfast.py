"""The embedded DNS hot path: a bounds-checked parser of plain queries and answers kept encoded per
asker and query bytes, patched with the query's id. agent.network.dns decides on a miss."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import NamedTuple

from agent.network import dns as core

# Header flag bits (RFC 1035 §4.1.1).
_QR, _TC = 0x8000, 0x0200
_ONE_QUESTION = b"\x00\x01\x00\x00\x00\x00\x00\x00"
_ONE_QUESTION_ONE_ADDITIONAL = b"\x00\x01\x00\x00\x00\x00\x00\x01"
_TYPE_A, _TYPE_OPT = 1, 41
_EDNS_COOKIE, _EDNS_PADDING = 10, 12
# An A record whose owner is a pointer to the question (offset 12), class IN: 16 bytes each.
_A_RR_HEAD = b"\xc0\x0c\x00\x01\x00\x01"
_A_RR_SIZE = 16
# Replies kept per asker at most; beyond, its cache starts again (a flood of odd spellings or
# types of our names costs the slow path, never memory: 256 x ~200 bytes per container).
MAX_CACHED = 256
# Only answers that fit any client are kept: 512 bytes is what a UDP client without EDNS takes.
MAX_CACHED_SIZE = core.UDP_MIN_SIZE


class PlainQuery(NamedTuple):
    """A one-question IN query with nothing unusual in it: what the hot path may answer."""
    name: bytes          # the question's name in wire form, lower-cased (ASCII only, as DNS compares)
    qtype: int
    question_end: int    # offset just past QCLASS
    edns: bool           # an OPT record (version 0) follows the question


def parse_plain_query(wire: bytes) -> PlainQuery | None:
    """The question of `wire` if it is a plain query the hot path may answer; None otherwise.

    None is not a verdict: the slow path (dnspython) then decides (forward, FORMERR, drop).
    Every offset is checked before it is read; nothing here can raise on any input."""
    size = len(wire)
    if size < 17 or size > MAX_CACHED_SIZE:
        return None
    # QR=0, opcode QUERY, AA=TC=0, Z=0, RCODE=0: only RD, AD and CD may be set.
    if wire[2] & 0xFE or wire[3] & 0xCF:
        return None
    counts = wire[4:12]
    if counts == _ONE_QUESTION:
        edns = False
    elif counts == _ONE_QUESTION_ONE_ADDITIONAL:
        edns = True
    else:
        return None
    offset = 12
    while True:
        if offset >= size:
            return None
        length = wire[offset]
        if length == 0:
            offset += 1
            break
        if length > 63:          # a compression pointer or an extended label type: not plain
            return None
        offset += length + 1
        if offset - 12 > 254:    # a name is at most 255 bytes, root label included
            return None
    name_end = offset
    if name_end + 4 > size or wire[name_end + 2] != 0 or wire[name_end + 3] != 1:  # QCLASS IN
        return None
    qtype = (wire[name_end] << 8) | wire[name_end + 1]
    question_end = name_end + 4
    if not edns:
        return PlainQuery(wire[12:name_end].lower(), qtype, question_end, False) if question_end == size else None
    if not _plain_opt(wire, question_end, size):
        return None
    return PlainQuery(wire[12:name_end].lower(), qtype, question_end, True)


def _plain_opt(wire: bytes, start: int, size: int) -> bool:
    # Root owner, TYPE OPT, extended RCODE 0, version 0, then options that frame the RDATA exactly.
    if start + 11 > size or wire[start] != 0 or wire[start + 1] != 0 or wire[start + 2] != _TYPE_OPT:
        return False
    if wire[start + 5] != 0 or wire[start + 6] != 0:
        return False
    rdlength = (wire[start + 9] << 8) | wire[start + 10]
    offset = start + 11
    if offset + rdlength != size:
        return False
    while offset < size:
        if offset + 4 > size:
            return False
        code = (wire[offset] << 8) | wire[offset + 1]
        length = (wire[offset + 2] << 8) | wire[offset + 3]
        offset += 4 + length
        if offset > size:
            return False
        # Options are not echoed; only those whose content cannot make the parse fail are plain.
        if code == _EDNS_COOKIE and not (length == 8 or 16 <= length <= 40):
            return False
        if code not in (_EDNS_COOKIE, _EDNS_PADDING):
            return False
    return True


@dataclass(slots=True)
class _Encoded:
    """A reply with several A records, after its id: shuffled per answer, as Docker does."""
    head: bytes                 # flags, counts, question
    records: tuple[bytes, ...]  # the 16-byte A records
    tail: bytes                 # what follows them (OPT)

    def shuffled_reply(self, rng: random.Random) -> bytes:
        records = list(self.records)
        rng.shuffle(records)
        return self.head + b"".join(records) + self.tail


class FastAnswers:
    """Answers for names of the table, kept encoded per asker and dropped whenever the table
    changes. Each asker has its own view (its own cache), so scoping is kept by construction."""

    def __init__(self, table: core.NameTable, rng: random.Random | None = None) -> None:
        self.table = table
        self.rng = rng or random.Random()

    def view(self, asker: str) -> AskerAnswers:
        """The answers one container gets (the server keeps one per container it serves)."""
        return AskerAnswers(self, asker)


class AskerAnswers:
    """One asker's cache: the query's bytes after its id -> the reply's bytes after the id.

    A hit costs a dict lookup and a concatenation. A miss goes through core.answer (dnspython);
    its reply is kept only for a plain query (parse_plain_query) whose reply fits any client."""

    __slots__ = ("_parent", "asker", "_version", "_replies")

    def __init__(self, parent: FastAnswers, asker: str) -> None:
        self._parent = parent
        self.asker = asker
        self._version = parent.table.version
        self._replies: dict[bytes, bytes | _Encoded] = {}

    def __len__(self) -> int:
        return len(self._replies)

    def answer(self, wire: bytes, *, tcp: bool = False) -> bytes | core.Decision:
        """The reply bytes when the hot path knows them, else core.answer's decision.

        Either way the bytes equal what core.answer would reply (up to the shuffle of several
        addresses, which is random on both paths)."""
        version = self._parent.table.version
        if version != self._version:
            self._replies.clear()
            self._version = version
        kept = self._replies.get(wire[2:])
        if kept is not None:
            if kept.__class__ is bytes:
                return wire[:2] + kept  # type: ignore[operator]
            return wire[:2] + kept.shuffled_reply(self._parent.rng)  # type: ignore[union-attr]
        return self._miss(wire, tcp)

    def _miss(self, wire: bytes, tcp: bool) -> bytes | core.Decision:
        table, rng = self._parent.table, self._parent.rng
        query = parse_plain_query(wire)
        if query is None:
            return core.answer(wire, self.asker, table, tcp=tcp, rng=rng)
        decision = core.answer(wire, self.asker, table, tcp=tcp, rng=None)
        kept = _encode(decision, wire, query)
        if kept is None:
            if isinstance(decision, core.Reply) and query.qtype == _TYPE_A:
                # Not kept (too big): still shuffle several addresses, as Docker does.
                return core.answer(wire, self.asker, table, tcp=tcp, rng=rng)
            return decision
        if len(self._replies) >= MAX_CACHED:
            self._replies.clear()
        self._replies[wire[2:]] = kept
        if kept.__class__ is bytes:
            return wire[:2] + kept  # type: ignore[operator]
        return wire[:2] + kept.shuffled_reply(rng)  # type: ignore[union-attr]


def _encode(decision: core.Decision, wire: bytes, query: PlainQuery) -> bytes | _Encoded | None:
    """The reply to `wire` after its id, to reuse for the same bytes; None when it must not be."""
    if not isinstance(decision, core.Reply):
        return None
    reply = decision.wire
    end = query.question_end
    if len(reply) > MAX_CACHED_SIZE or len(reply) < end:
        return None
    flags = (reply[2] << 8) | reply[3]
    if flags & _TC or not flags & _QR:
        return None
    if reply[:2] != wire[:2] or reply[12:end] != wire[12:end] or reply[4:6] != b"\x00\x01":
        return None
    answers = (reply[6] << 8) | reply[7]
    if query.qtype != _TYPE_A or answers < 2:
        return reply[2:]
    cut = end + answers * _A_RR_SIZE
    records = tuple(reply[i:i + _A_RR_SIZE] for i in range(end, cut, _A_RR_SIZE))
    if len(reply) < cut or any(len(r) != _A_RR_SIZE or not r.startswith(_A_RR_HEAD) for r in records):
        return None
    return _Encoded(reply[2:end], records, reply[cut:])
