"""Specification of the embedded DNS core (S11): NameTable scoping and answer()'s decisions.

Pure: crafted dnspython messages in, exact wire answers out; see tests/lab/test_dns_server.py for sockets."""
from __future__ import annotations

import random

import dns.flags
import dns.message
import dns.update
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from agent.network.dns import (
    Drop,
    DnsRecord,
    Forward,
    NameTable,
    Reply,
    answer,
    refused,
    upstream_reply,
    upstreams_from_resolv_conf,
    usable_upstream,
)

WEB = "c" * 64
DB = "d" * 64
OTHER = "e" * 64
NET1 = "1" * 64
NET2 = "2" * 64


@pytest.fixture
def table() -> NameTable:
    t = NameTable()
    t.set_endpoint(WEB, NET1, "front", "172.18.0.2", ["web", WEB[:12], "www"])
    t.set_endpoint(DB, NET1, "front", "172.18.0.3", ["db", DB[:12]])
    t.set_endpoint(OTHER, NET2, "back", "172.19.0.2", ["other"])
    return t


def ask(table: NameTable, name: str, rdtype: str = "A", asker: str = WEB, **kw: object) -> object:
    query = dns.message.make_query(name, rdtype, id=4242)
    return answer(query.to_wire(), asker, table, **kw)  # type: ignore[arg-type]


def reply_of(decision: object) -> dns.message.Message:
    assert isinstance(decision, Reply), decision
    return dns.message.from_wire(decision.wire)


def a_records(message: dns.message.Message) -> list[tuple[str, int, str]]:
    return [(rrset.name.to_text(), rrset.ttl, rd.address) for rrset in message.answer for rd in rrset]


# --- NameTable ----------------------------------------------------------------------------

def test_lookup_a_finds_container_name_on_shared_network(table: NameTable) -> None:
    assert table.lookup_a(WEB, "db") == ["172.18.0.3"]


def test_lookup_a_finds_alias_and_short_id(table: NameTable) -> None:
    assert table.lookup_a(DB, "www") == ["172.18.0.2"]
    assert table.lookup_a(DB, WEB[:12]) == ["172.18.0.2"]


def test_lookup_a_finds_name_dot_network(table: NameTable) -> None:
    assert table.lookup_a(WEB, "db.front") == ["172.18.0.3"]


def test_lookup_a_name_dot_other_network_is_unknown(table: NameTable) -> None:
    assert table.lookup_a(WEB, "db.back") == []


def test_lookup_a_is_scoped_to_shared_networks(table: NameTable) -> None:
    assert table.lookup_a(OTHER, "web") == []
    assert table.lookup_a(WEB, "other") == []


def test_lookup_a_is_case_insensitive_and_ignores_trailing_dot(table: NameTable) -> None:
    assert table.lookup_a(WEB, "DB.Front.") == ["172.18.0.3"]


def test_lookup_a_of_unknown_asker_is_empty(table: NameTable) -> None:
    assert table.lookup_a("f" * 64, "web") == []


def test_shared_alias_returns_every_holder_in_attachment_order(table: NameTable) -> None:
    table.set_endpoint(OTHER, NET1, "front", "172.18.0.9", ["other", "www"])
    assert table.lookup_a(DB, "www") == ["172.18.0.2", "172.18.0.9"]


def test_container_on_two_networks_sees_both(table: NameTable) -> None:
    table.set_endpoint(WEB, NET2, "back", "172.19.0.5", ["web"])
    assert table.lookup_a(WEB, "other") == ["172.19.0.2"]
    assert table.lookup_a(OTHER, "web") == ["172.19.0.5"]


def test_set_endpoint_replaces_previous_entry(table: NameTable) -> None:
    table.set_endpoint(DB, NET1, "front", "172.18.0.7", ["database"])
    assert table.lookup_a(WEB, "db") == []
    assert table.lookup_a(WEB, "database") == ["172.18.0.7"]


def test_remove_endpoint_makes_names_vanish(table: NameTable) -> None:
    table.remove_endpoint(DB, NET1)
    assert table.lookup_a(WEB, "db") == []
    assert table.lookup_ptr(WEB, "172.18.0.3") is None


def test_remove_endpoint_of_unknown_is_a_no_op(table: NameTable) -> None:
    table.remove_endpoint("nope", NET1)
    table.remove_endpoint(DB, NET2)
    assert table.lookup_a(WEB, "db") == ["172.18.0.3"]


def test_remove_container_forgets_every_network(table: NameTable) -> None:
    table.set_endpoint(DB, NET2, "back", "172.19.0.3", ["db"])
    table.remove_container(DB)
    assert table.lookup_a(WEB, "db") == []
    assert table.lookup_a(OTHER, "db") == []
    assert [r.container_id for r in table.records()].count(DB) == 0


def test_records_lists_one_record_per_name_per_endpoint(table: NameTable) -> None:
    table.remove_container(WEB)
    table.remove_container(OTHER)
    assert table.records() == [
        DnsRecord("db", NET1, "front", DB, "172.18.0.3"),
        DnsRecord(DB[:12], NET1, "front", DB, "172.18.0.3"),
    ]


def test_lookup_ptr_answers_name_dot_network(table: NameTable) -> None:
    assert table.lookup_ptr(WEB, "172.18.0.3") == "db.front"


def test_lookup_ptr_is_scoped(table: NameTable) -> None:
    assert table.lookup_ptr(WEB, "172.19.0.2") is None


def test_set_endpoint_rejects_bad_ipv4_naming_it(table: NameTable) -> None:
    with pytest.raises(ValueError, match="'172.18.0.300'"):
        table.set_endpoint(DB, NET1, "front", "172.18.0.300", ["db2"])
    assert table.lookup_a(WEB, "db") == ["172.18.0.3"]  # nothing half-done
    assert table.lookup_a(WEB, "db2") == []


def test_set_endpoint_rejects_empty_name(table: NameTable) -> None:
    with pytest.raises(ValueError, match="invalid DNS name ''"):
        table.set_endpoint(DB, NET1, "front", "172.18.0.3", ["db", ""])
    assert table.lookup_a(WEB, "db") == ["172.18.0.3"]


def test_set_endpoint_rejects_dotted_network_name(table: NameTable) -> None:
    with pytest.raises(ValueError, match="'a.b'"):
        table.set_endpoint(DB, NET1, "a.b", "172.18.0.3", ["db"])


# --- answer() ------------------------------------------------------------------------------

def test_a_for_container_name_is_answered_with_ttl_600(table: NameTable) -> None:
    message = reply_of(ask(table, "db"))
    assert message.id == 4242
    assert message.rcode() == dns.rcode.NOERROR
    assert a_records(message) == [("db.", 600, "172.18.0.3")]


def test_reply_sets_qr_ra_rd_and_not_aa(table: NameTable) -> None:
    message = reply_of(ask(table, "db"))
    assert message.flags & dns.flags.QR
    assert message.flags & dns.flags.RA
    assert message.flags & dns.flags.RD
    assert not message.flags & dns.flags.AA


def test_answer_keeps_the_question_spelling(table: NameTable) -> None:
    message = reply_of(ask(table, "DB.FRONT"))
    assert a_records(message) == [("DB.FRONT.", 600, "172.18.0.3")]
    assert message.question[0].name.to_text() == "DB.FRONT."


def test_several_holders_unshuffled_in_table_order(table: NameTable) -> None:
    table.set_endpoint(OTHER, NET1, "front", "172.18.0.9", ["www"])
    message = reply_of(ask(table, "www", asker=DB))
    assert [r[2] for r in a_records(message)] == ["172.18.0.2", "172.18.0.9"]


def test_several_holders_shuffled_with_rng(table: NameTable) -> None:
    for n in range(4, 12):
        table.set_endpoint(f"x{n}", NET1, "front", f"172.18.0.{n}", ["pool"])
    expected = [f"172.18.0.{n}" for n in range(4, 12)]
    random.Random(7).shuffle(expected)
    message = reply_of(ask(table, "pool", rng=random.Random(7)))
    # dnspython keeps rdata in insertion order within the rrset.
    assert [r[2] for r in a_records(message)] == expected


def test_aaaa_of_known_name_is_noerror_without_data(table: NameTable) -> None:
    message = reply_of(ask(table, "web", "AAAA"))
    assert message.rcode() == dns.rcode.NOERROR
    assert message.answer == []


def test_mx_of_known_name_is_noerror_without_data(table: NameTable) -> None:
    message = reply_of(ask(table, "web", "MX"))
    assert message.rcode() == dns.rcode.NOERROR
    assert message.answer == []


def test_unknown_name_is_forwarded_not_nxdomain(table: NameTable) -> None:
    decision = ask(table, "example.com")
    assert isinstance(decision, Forward)
    assert decision.query.id == 4242
    assert decision.query.question[0].name.to_text() == "example.com."


def test_name_on_unshared_network_is_forwarded(table: NameTable) -> None:
    assert isinstance(ask(table, "other"), Forward)


def test_aaaa_of_unknown_name_is_forwarded(table: NameTable) -> None:
    assert isinstance(ask(table, "example.com", "AAAA"), Forward)


def test_ptr_of_container_ip_answers_name_dot_network(table: NameTable) -> None:
    query = dns.message.make_query("3.0.18.172.in-addr.arpa", "PTR", id=9)
    message = reply_of(answer(query.to_wire(), WEB, table))
    assert message.id == 9
    assert [(r.name.to_text(), r.ttl, r.rdtype, [rd.target.to_text() for rd in r]) for r in message.answer] == [
        ("3.0.18.172.in-addr.arpa.", 600, dns.rdatatype.PTR, ["db.front."])]


def test_ptr_of_unshared_ip_is_forwarded(table: NameTable) -> None:
    query = dns.message.make_query("2.0.19.172.in-addr.arpa", "PTR")
    assert isinstance(answer(query.to_wire(), WEB, table), Forward)


def test_ptr_of_partial_reverse_name_is_forwarded(table: NameTable) -> None:
    query = dns.message.make_query("18.172.in-addr.arpa", "PTR")
    assert isinstance(answer(query.to_wire(), WEB, table), Forward)


def test_garbage_is_dropped(table: NameTable) -> None:
    assert isinstance(answer(b"\x00\x01garbage", WEB, table), Drop)
    assert isinstance(answer(b"", WEB, table), Drop)


def test_a_response_is_dropped(table: NameTable) -> None:
    query = dns.message.make_query("db", "A")
    response = dns.message.make_response(query)
    assert isinstance(answer(response.to_wire(), WEB, table), Drop)


def test_non_query_opcode_gets_notimp(table: NameTable) -> None:
    query = dns.update.UpdateMessage("front", id=5)
    query.add("db", 600, "A", "172.18.0.99")
    message = reply_of(answer(query.to_wire(), WEB, table))
    assert (message.id, message.rcode()) == (5, dns.rcode.NOTIMP)


def test_query_without_question_gets_formerr(table: NameTable) -> None:
    query = dns.message.Message(id=6)
    query.flags = dns.flags.RD
    message = reply_of(answer(query.to_wire(), WEB, table))
    assert (message.id, message.rcode()) == (6, dns.rcode.FORMERR)


def test_big_local_answer_over_udp_is_truncated_to_512(table: NameTable) -> None:
    for n in range(4, 64):
        table.set_endpoint(f"x{n}", NET1, "front", f"172.18.1.{n}", ["pool"])
    decision = ask(table, "pool")
    assert isinstance(decision, Reply)
    assert len(decision.wire) <= 512
    assert dns.message.from_wire(decision.wire).flags & dns.flags.TC


def test_big_local_answer_over_tcp_is_whole(table: NameTable) -> None:
    for n in range(4, 64):
        table.set_endpoint(f"x{n}", NET1, "front", f"172.18.1.{n}", ["pool"])
    message = reply_of(ask(table, "pool", tcp=True))
    assert not message.flags & dns.flags.TC
    assert len(a_records(message)) == 60


def test_edns_client_gets_edns_answer_up_to_its_size(table: NameTable) -> None:
    for n in range(4, 64):
        table.set_endpoint(f"x{n}", NET1, "front", f"172.18.1.{n}", ["pool"])
    query = dns.message.make_query("pool", "A", use_edns=0, payload=4096)
    message = reply_of(answer(query.to_wire(), WEB, table))
    assert message.edns == 0
    assert not message.flags & dns.flags.TC
    assert len(a_records(message)) == 60


# --- forwarding helpers ------------------------------------------------------------------

def test_upstream_reply_carries_client_id() -> None:
    query = dns.message.make_query("example.com", "A", id=77)
    upstream = dns.message.make_response(dns.message.make_query("example.com", "A", id=1234))
    upstream.answer.append(dns.rrset.from_text("example.com.", 30, "IN", "A", "10.9.9.9"))
    message = dns.message.from_wire(upstream_reply(query, upstream))
    assert message.id == 77
    assert a_records(message) == [("example.com.", 30, "10.9.9.9")]


def test_no_upstream_answer_is_servfail() -> None:
    query = dns.message.make_query("example.com", "A", id=78)
    message = dns.message.from_wire(upstream_reply(query, None))
    assert (message.id, message.rcode()) == (78, dns.rcode.SERVFAIL)


def test_refused_keeps_id() -> None:
    query = dns.message.make_query("example.com", "A", id=79)
    message = dns.message.from_wire(refused(query))
    assert (message.id, message.rcode()) == (79, dns.rcode.REFUSED)


def test_servfail_and_refused_upstreams_are_not_usable() -> None:
    query = dns.message.make_query("example.com", "A")
    response = dns.message.make_response(query)
    assert usable_upstream(response)
    response.set_rcode(dns.rcode.NXDOMAIN)
    assert usable_upstream(response)
    response.set_rcode(dns.rcode.SERVFAIL)
    assert not usable_upstream(response)
    response.set_rcode(dns.rcode.REFUSED)
    assert not usable_upstream(response)


def test_upstreams_from_resolv_conf_keeps_first_three_in_order() -> None:
    text = ("# comment\nsearch example.com\nnameserver 10.0.0.1\nnameserver 127.0.0.53\n"
            "nameserver  10.0.0.1\nnameserver 127.0.0.11\nnameserver bogus\n"
            "nameserver 2001:db8::1 ; v6\nnameserver 10.0.0.4\n")
    assert upstreams_from_resolv_conf(text) == ["10.0.0.1", "127.0.0.53", "2001:db8::1"]


def test_upstreams_from_empty_resolv_conf_is_empty() -> None:
    assert upstreams_from_resolv_conf("search lan\noptions ndots:2\n") == []
