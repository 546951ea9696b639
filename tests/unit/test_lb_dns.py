"""Specification of service names in the embedded DNS (agent.network.lbdns + NameTable's service
names): `<service>` -> VIP (tasks in dnsrr), `tasks.<service>`, aliases, task names and PTR, per network."""
from __future__ import annotations

from ipaddress import IPv4Address as IP

import dns.message
import dns.rdatatype
import pytest

from agent.network import dns as core
from agent.network import lbdns
from agent.network.service_binding import Backend, ServiceBinding

WEB = ServiceBinding("svc1", "web", "net1", IP("10.0.9.2"),
                     (Backend("t1", IP("10.0.9.5"), "web.1.t1"), Backend("t2", IP("10.0.9.6"), "web.2.t2")),
                     aliases=("front",))


def _table() -> core.NameTable:
    table = core.NameTable()
    table.set_endpoint("client", "net1", "mynet", "10.0.9.10", ["client"])
    table.set_endpoint("other", "net2", "othernet", "10.0.8.10", ["other"])
    return table


def test_service_names_of_a_vip_service() -> None:
    names, ptr = lbdns.service_names(WEB)
    assert names == {"web": ["10.0.9.2"], "tasks.web": ["10.0.9.5", "10.0.9.6"],
                     "front": ["10.0.9.2"], "tasks.front": ["10.0.9.5", "10.0.9.6"],
                     "web.1.t1": ["10.0.9.5"], "web.2.t2": ["10.0.9.6"]}
    assert ptr == {"10.0.9.5": "web.1.t1", "10.0.9.6": "web.2.t2"}


def test_service_names_in_dnsrr_mode_give_the_tasks_for_the_service_name() -> None:
    names, _ = lbdns.service_names(ServiceBinding("s", "db", "n", None, (Backend("t", IP("10.0.0.7")),)))
    assert names == {"db": ["10.0.0.7"], "tasks.db": ["10.0.0.7"]}


def test_service_resolves_to_its_vip_for_an_asker_on_its_network() -> None:
    table = _table()
    lbdns.publish(table, WEB)
    assert table.lookup_a("client", "web") == ["10.0.9.2"]
    assert table.lookup_a("client", "tasks.web") == ["10.0.9.5", "10.0.9.6"]
    assert table.lookup_a("client", "web.mynet") == ["10.0.9.2"]
    assert table.lookup_a("client", "tasks.front") == ["10.0.9.5", "10.0.9.6"]


def test_service_is_not_visible_from_another_network() -> None:
    table = _table()
    lbdns.publish(table, WEB)
    assert table.lookup_a("other", "web") == []


def test_a_backend_that_left_is_gone_from_tasks_at_once() -> None:
    table = _table()
    lbdns.publish(table, WEB)
    lbdns.publish(table, ServiceBinding("svc1", "web", "net1", IP("10.0.9.2"), WEB.backends[:1]))
    assert table.lookup_a("client", "tasks.web") == ["10.0.9.5"]
    assert table.lookup_a("client", "web.2.t2") == []
    assert table.lookup_ptr("client", "10.0.9.6") is None


def test_withdraw_removes_every_name_of_the_service() -> None:
    table = _table()
    lbdns.publish(table, WEB)
    lbdns.withdraw(table, "svc1", "net1")
    assert [table.lookup_a("client", n) for n in ("web", "tasks.web", "front", "web.1.t1")] == [[], [], [], []]


def test_task_address_answers_ptr_with_the_task_name() -> None:
    table = _table()
    lbdns.publish(table, WEB)
    assert table.lookup_ptr("client", "10.0.9.5") == "web.1.t1.mynet"


def test_a_bad_address_is_refused_and_changes_nothing() -> None:
    table = _table()
    lbdns.publish(table, WEB)
    version = table.version
    with pytest.raises(ValueError) as err:
        table.set_service_names("svc1", "net1", {"web": ["10.0.9.300"]})
    assert str(err.value) == "invalid IPv4 address '10.0.9.300' for service svc1"
    assert table.lookup_a("client", "web") == ["10.0.9.2"] and table.version == version


def test_the_answer_on_the_wire_carries_the_vip() -> None:
    table = _table()
    lbdns.publish(table, WEB)
    query = dns.message.make_query("web.", dns.rdatatype.A)
    decision = core.answer(query.to_wire(), "client", table)
    assert isinstance(decision, core.Reply)
    reply = dns.message.from_wire(decision.wire)
    assert [r.to_text() for r in reply.answer[0]] == ["10.0.9.2"]


def test_check_refuses_an_empty_alias_naming_the_service() -> None:
    with pytest.raises(ValueError) as err:
        lbdns.check(ServiceBinding("svc1", "web", "net1", IP("10.0.9.2"), aliases=(".",)))
    assert str(err.value) == "invalid DNS name '.' for service svc1"
