"""Specification of the embedded DNS hot path (agent.network.dnsfast): the plain-query parser and
the answers kept per asker. Pure; the reference for every reply is agent.network.dns.answer."""
from __future__ import annotations

import random

import dns.edns
import dns.flags
import dns.message
import pytest

from agent.network.dns import Drop, Forward, NameTable, Reply, answer
from agent.network.dnsfast import MAX_CACHED, FastAnswers, PlainQuery, parse_plain_query
from agent.network.dnsserver import EmbeddedDns

WEB, DB, OTHER = "c" * 64, "d" * 64, "e" * 64
NET1, NET2 = "1" * 64, "2" * 64


@pytest.fixture
def table() -> NameTable:
    t = NameTable()
    t.set_endpoint(WEB, NET1, "front", "172.18.0.2", ["web", "www"])
    t.set_endpoint(DB, NET1, "front", "172.18.0.3", ["db"])
    t.set_endpoint(OTHER, NET2, "back", "172.19.0.2", ["other"])
    return t


def query(name: str, rdtype: str = "A", *, qid: int = 4242, edns: int = -1, flags: int = dns.flags.RD,
          options: list[dns.edns.Option] | None = None) -> bytes:
    q = dns.message.make_query(name, rdtype, id=qid, use_edns=edns, options=options)
    q.flags = flags
    return q.to_wire()


# --- parser ---------------------------------------------------------------------------------

def test_parse_reads_lowercased_name_type_end_and_edns() -> None:
    wire = query("Db.Front", "AAAA", edns=0)
    assert parse_plain_query(wire) == PlainQuery(b"\x02db\x05front\x00", 28, 12 + 10 + 4, True)


def test_parse_plain_query_without_edns() -> None:
    assert parse_plain_query(query("db")) == PlainQuery(b"\x02db\x00", 1, 12 + 4 + 4, False)


def test_parse_accepts_a_dns_cookie_option() -> None:
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"\x01" * 8)
    assert parse_plain_query(query("db", edns=0, options=[cookie])) is not None


@pytest.mark.parametrize("wire, why", [
    (query("db", flags=dns.flags.QR | dns.flags.RD), "a response"),
    (query("db", flags=dns.flags.RD | dns.flags.TC), "TC set"),
    (query("db", flags=dns.flags.RD | 0x0800), "opcode IQUERY"),
    (query("db") + b"\x00", "trailing byte"),
    (query("db")[:-1], "cut in QCLASS"),
    (query("db")[:4] + b"\x00\x02" + query("db")[6:], "two questions counted"),
    (query("db")[:-2] + b"\x00\x03", "class CH"),
    (query("db", edns=1), "EDNS version 1"),
    (query("db", edns=0)[:-1], "cut in the OPT record"),
    (query("db")[:12] + b"\xc0\x0c" + query("db")[-4:], "compression pointer in the question"),
    (query("db", edns=0, options=[dns.edns.GenericOption(8, b"\x00\x01\x18\x00\xac\x12\x00")]),
     "client subnet option"),
])
def test_parse_sends_unusual_queries_to_the_slow_path(wire: bytes, why: str) -> None:
    assert parse_plain_query(wire) is None, why


def test_parse_of_every_prefix_of_a_query_is_none() -> None:
    wire = query("db.front", edns=0)
    assert [n for n in range(len(wire)) if parse_plain_query(wire[:n]) is not None] == []


# --- answers --------------------------------------------------------------------------------

def test_hit_is_the_slow_paths_reply_with_the_new_id(table: NameTable) -> None:
    view = FastAnswers(table).view(WEB)
    view.answer(query("db", qid=1))
    assert view.answer(query("db", qid=777)) == answer(query("db", qid=777), WEB, table).wire  # type: ignore[union-attr]
    assert len(view) == 1


@pytest.mark.parametrize("name, rdtype", [("db", "A"), ("DB.front", "A"), ("db", "AAAA"), ("db", "MX"),
                                          ("3.0.18.172.in-addr.arpa", "PTR")])
def test_every_spelling_flag_and_edns_gives_the_slow_paths_bytes(table: NameTable, name: str, rdtype: str) -> None:
    view = FastAnswers(table).view(WEB)
    rng = random.Random(7)
    for _ in range(200):
        spelled = "".join(c.upper() if rng.random() < 0.5 else c for c in name)
        flags = rng.choice([0, dns.flags.RD, dns.flags.RD | dns.flags.AD, dns.flags.RD | dns.flags.CD, dns.flags.CD])
        wire = query(spelled, rdtype, qid=rng.randrange(0x10000), edns=rng.choice([-1, 0]), flags=flags)
        slow = answer(wire, WEB, table)
        assert isinstance(slow, Reply)
        assert view.answer(wire) == slow.wire


def test_name_not_ours_is_forwarded_and_not_kept(table: NameTable) -> None:
    view = FastAnswers(table).view(WEB)
    assert isinstance(view.answer(query("example.org")), Forward)
    assert len(view) == 0


def test_each_asker_keeps_its_scoped_view(table: NameTable) -> None:
    fast = FastAnswers(table)
    assert isinstance(fast.view(WEB).answer(query("db")), bytes)
    assert isinstance(fast.view(OTHER).answer(query("db")), Forward)


def test_table_change_drops_kept_answers_at_once(table: NameTable) -> None:
    view = FastAnswers(table).view(WEB)
    view.answer(query("db"))
    table.remove_endpoint(DB, NET1)
    assert isinstance(view.answer(query("db")), Forward)
    table.set_endpoint(DB, NET1, "front", "172.18.0.9", ["db"])
    reply = view.answer(query("db"))
    assert isinstance(reply, bytes)
    assert [rd.address for rrset in dns.message.from_wire(reply).answer for rd in rrset] == ["172.18.0.9"]


def test_several_addresses_are_shuffled_per_answer(table: NameTable) -> None:
    table.set_endpoint("f" * 64, NET1, "front", "172.18.0.4", ["www"])
    view = FastAnswers(table, random.Random(1)).view(DB)
    orders = set()
    for qid in range(40):
        reply = view.answer(query("www", qid=qid))
        assert isinstance(reply, bytes)
        message = dns.message.from_wire(reply)
        assert message.id == qid
        orders.add(tuple(rd.address for rrset in message.answer for rd in rrset))
    assert orders == {("172.18.0.2", "172.18.0.4"), ("172.18.0.4", "172.18.0.2")}


def test_answer_too_big_for_512_bytes_is_not_kept(table: NameTable) -> None:
    for n in range(40):  # 40 A records: 640 bytes of answers
        table.set_endpoint(f"{n:064x}", NET1, "front", f"172.18.1.{n + 1}", ["many"])
    view = FastAnswers(table).view(WEB)
    reply = view.answer(query("many"))
    assert isinstance(reply, Reply)
    assert dns.message.from_wire(reply.wire).flags & dns.flags.TC
    assert len(view) == 0


def test_kept_answers_per_asker_are_bounded(table: NameTable) -> None:
    view = FastAnswers(table).view(WEB)
    for rdtype in range(1000, 1000 + MAX_CACHED + 10):
        view.answer(query("db", f"TYPE{rdtype}"))
    assert 0 < len(view) <= MAX_CACHED


def test_fuzzed_queries_never_raise_and_match_the_slow_path(table: NameTable) -> None:
    rng = random.Random(20261201)
    seeds = [query("db"), query("DB.front", edns=0), query("web", "AAAA", edns=0),
             query("3.0.18.172.in-addr.arpa", "PTR"), query("example.org")]
    view = FastAnswers(table).view(WEB)
    for _ in range(20000):
        wire = bytearray(rng.choice(seeds))
        for _ in range(rng.randrange(1, 4)):
            op = rng.randrange(4)
            if op == 0 and wire:
                wire[rng.randrange(len(wire))] = rng.randrange(256)
            elif op == 1:
                del wire[rng.randrange(len(wire) + 1):]
            elif op == 2:
                wire.insert(rng.randrange(len(wire) + 1), rng.randrange(256))
            else:
                wire = bytearray(rng.randbytes(rng.randrange(40)))
        data = bytes(wire)
        fast = view.answer(data)
        slow = answer(data, WEB, table)
        if isinstance(fast, bytes):
            assert isinstance(slow, Reply) and fast == slow.wire, data
        else:
            assert type(fast) is type(slow), data
            if isinstance(slow, Reply):
                assert fast.wire == slow.wire, data  # type: ignore[union-attr]
            elif isinstance(slow, Drop):
                assert fast.reason == slow.reason, data  # type: ignore[union-attr]


# --- server limits --------------------------------------------------------------------------

@pytest.mark.parametrize("limit", ["max_in_flight", "max_forwards_per_container", "max_tcp_total",
                                   "max_tcp_per_container"])
def test_a_limit_below_one_is_refused_with_its_name(limit: str) -> None:
    with pytest.raises(ValueError, match=f"invalid DNS limit {limit}=0: it must be at least 1"):
        EmbeddedDns(NameTable(), [], **{limit: 0})  # type: ignore[arg-type]


def test_a_non_positive_idle_timeout_is_refused() -> None:
    with pytest.raises(ValueError, match="invalid DNS TCP idle timeout 0: it must be positive"):
        EmbeddedDns(NameTable(), [], tcp_idle_timeout=0)
