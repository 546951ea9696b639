"""Specification of agent.network.lbplan: which VIPs a sandbox serves, stable backend slots, and the
nftables batches (whole table, one small change) that program them."""
from __future__ import annotations

from ipaddress import IPv4Address as IP

import pytest

from agent.network import lbplan
from agent.network.service_binding import Backend, ServiceBinding


def _b(service: str, net: str, vip: str | None, *ips: str) -> ServiceBinding:
    return ServiceBinding(service, service + "-name", net, IP(vip) if vip else None,
                          tuple(Backend(f"t{i}", IP(ip)) for i, ip in enumerate(ips)))


def _ips(*ips: str) -> frozenset[IP]:
    return frozenset(IP(x) for x in ips)


def test_wanted_vips_keeps_only_the_sandbox_networks_and_skips_dnsrr() -> None:
    bindings = [_b("s1", "n1", "10.0.0.2", "10.0.0.5"), _b("s2", "n2", "10.1.0.2", "10.1.0.5"),
                _b("s3", "n1", None, "10.0.0.9")]
    assert lbplan.wanted_vips(bindings, ["n1"]) == {IP("10.0.0.2"): _ips("10.0.0.5")}


def test_wanted_vips_refuses_one_vip_for_two_services() -> None:
    bindings = [_b("s1", "n1", "10.0.0.2"), _b("s2", "n1", "10.0.0.2")]
    with pytest.raises(ValueError) as err:
        lbplan.wanted_vips(bindings, ["n1"])
    assert str(err.value) == "VIP 10.0.0.2 is claimed by services s1 and s2"


def test_assign_slots_keeps_kept_backends_in_their_slots() -> None:
    old = (IP("10.0.0.5"), IP("10.0.0.6"), IP("10.0.0.7"))
    assert lbplan.assign_slots(old, _ips("10.0.0.5", "10.0.0.7", "10.0.0.9")) == \
        (IP("10.0.0.5"), IP("10.0.0.9"), IP("10.0.0.7"))


def test_assign_slots_moves_the_last_backend_into_a_hole_when_shrinking() -> None:
    old = (IP("10.0.0.5"), IP("10.0.0.6"), IP("10.0.0.7"))
    assert lbplan.assign_slots(old, _ips("10.0.0.6", "10.0.0.7")) == (IP("10.0.0.7"), IP("10.0.0.6"))


def test_render_full_replaces_the_table_in_one_transaction() -> None:
    table = lbplan.table_from_wanted({IP("10.0.0.2"): _ips("10.0.0.6", "10.0.0.5"), IP("10.0.0.3"): frozenset()})
    text = lbplan.render_full(table)
    lines = text.splitlines()
    assert lines[:3] == ["table ip shoal_lb", "delete table ip shoal_lb", "table ip shoal_lb {"]
    assert "  chain pick_1 {" in lines and "  chain pick_2 {" in lines and "  chain pick_3 {" not in lines
    assert "    dnat to ip daddr . numgen random mod 2 map @backends" in lines
    assert lines[-3:] == ["add element ip shoal_lb vips { 10.0.0.2 : goto pick_2 }",
                          "add element ip shoal_lb backends { 10.0.0.2 . 0 : 10.0.0.5, 10.0.0.2 . 1 : 10.0.0.6 }",
                          "add element ip shoal_lb empty { 10.0.0.3 }"]


def test_render_full_translates_only_tcp_and_udp_so_a_vip_does_not_answer_ping() -> None:
    text = lbplan.render_full(lbplan.table_from_wanted({IP("10.0.0.2"): _ips("10.0.0.5")}))
    assert "    meta l4proto { tcp, udp } ip daddr vmap @vips" in text.splitlines()


def _table() -> lbplan.LbTable:
    return lbplan.table_from_wanted({IP("10.0.0.2"): _ips("10.0.0.5", "10.0.0.6", "10.0.0.7")})


def test_plan_change_removing_a_backend_rewrites_one_slot_and_the_pick() -> None:
    new, script = lbplan.plan_change(_table(), {IP("10.0.0.2"): _ips("10.0.0.5", "10.0.0.7")})
    assert new.slots == {IP("10.0.0.2"): (IP("10.0.0.5"), IP("10.0.0.7"))}
    assert script.splitlines() == [
        "delete element ip shoal_lb vips { 10.0.0.2 }",
        "delete element ip shoal_lb backends { 10.0.0.2 . 1, 10.0.0.2 . 2 }",
        "add element ip shoal_lb backends { 10.0.0.2 . 1 : 10.0.0.7 }",
        "add element ip shoal_lb vips { 10.0.0.2 : goto pick_2 }",
    ]


def test_plan_change_swapping_a_backend_keeps_the_pick_chain() -> None:
    _, script = lbplan.plan_change(_table(), {IP("10.0.0.2"): _ips("10.0.0.5", "10.0.0.8", "10.0.0.7")})
    assert script.splitlines() == [
        "delete element ip shoal_lb backends { 10.0.0.2 . 1 }",
        "add element ip shoal_lb backends { 10.0.0.2 . 1 : 10.0.0.8 }",
    ]


def test_plan_change_growing_past_the_biggest_service_adds_the_pick_chain() -> None:
    new, script = lbplan.plan_change(_table(), {IP("10.0.0.2"): _ips("10.0.0.5", "10.0.0.6", "10.0.0.7", "10.0.0.8")})
    assert new.picks == 4
    assert script.splitlines()[:2] == [
        "add chain ip shoal_lb pick_4",
        "add rule ip shoal_lb pick_4 dnat to ip daddr . numgen random mod 4 map @backends",
    ]
    assert script.splitlines()[-1] == "add element ip shoal_lb vips { 10.0.0.2 : goto pick_4 }"


def test_plan_change_last_backend_gone_makes_the_vip_refuse() -> None:
    new, script = lbplan.plan_change(_table(), {IP("10.0.0.2"): frozenset()})
    assert new.slots == {IP("10.0.0.2"): ()}
    assert script.splitlines() == [
        "delete element ip shoal_lb vips { 10.0.0.2 }",
        "delete element ip shoal_lb backends { 10.0.0.2 . 0, 10.0.0.2 . 1, 10.0.0.2 . 2 }",
        "add element ip shoal_lb empty { 10.0.0.2 }",
    ]


def test_plan_change_removed_vip_leaves_nothing() -> None:
    new, script = lbplan.plan_change(_table(), {IP("10.0.0.2"): None})
    assert new.slots == {}
    assert script.splitlines() == [
        "delete element ip shoal_lb vips { 10.0.0.2 }",
        "delete element ip shoal_lb backends { 10.0.0.2 . 0, 10.0.0.2 . 1, 10.0.0.2 . 2 }",
    ]


def test_plan_change_with_the_same_backends_is_empty() -> None:
    table = _table()
    new, script = lbplan.plan_change(table, {IP("10.0.0.2"): _ips("10.0.0.7", "10.0.0.6", "10.0.0.5")})
    assert (new, script) == (table, "")


def test_plan_change_touches_only_the_changed_service_among_many() -> None:
    wanted = {IP(f"10.0.{i // 250}.{i % 250 + 1}"): _ips(f"10.1.{i // 250}.{i % 250 + 1}") for i in range(1000)}
    table = lbplan.table_from_wanted(wanted)
    _, script = lbplan.plan_change(table, {IP("10.0.1.1"): _ips("10.1.9.9")})
    assert script.splitlines() == [
        "delete element ip shoal_lb backends { 10.0.1.1 . 0 }",
        "add element ip shoal_lb backends { 10.0.1.1 . 0 : 10.1.9.9 }",
    ]


LISTING = ("table ip other {\n\tchain output {\n\t\ttype nat hook output priority -100; policy accept;\n\t}\n}\n"
           "table ip shoal_lb {\n\tchain pick_1 {\n\t}\n\tchain output {\n\t\ttype nat hook output priority -100; "
           "policy accept;\n\t}\n\tchain refuse {\n\t\ttype filter hook output priority filter; policy accept;\n\t}\n}\n")


def test_chains_in_place_sees_our_hooked_chains() -> None:
    assert lbplan.chains_in_place(LISTING)


def test_chains_in_place_is_false_without_our_table_even_if_another_has_the_chains() -> None:
    assert not lbplan.chains_in_place(LISTING.split("table ip shoal_lb")[0])


def test_chains_in_place_is_false_when_a_hooked_chain_is_missing() -> None:
    assert not lbplan.chains_in_place(LISTING.replace("\tchain refuse {\n\t\ttype filter hook output priority filter; "
                                                      "policy accept;\n\t}\n", ""))


def test_address_keeps_an_address_and_parses_text() -> None:
    vip = IP("10.0.0.2")
    assert lbplan.address(vip) is vip and lbplan.address("10.0.0.2") == vip


def test_assign_slots_gives_back_the_old_slots_when_the_backends_are_the_same() -> None:
    old = (IP("10.0.0.6"), IP("10.0.0.5"))
    assert lbplan.assign_slots(old, _ips("10.0.0.5", "10.0.0.6")) is old
    assert lbplan.assign_slots((), frozenset()) == ()


def test_plans_work_out_a_change_once_for_equal_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    table = lbplan.table_from_wanted({IP("10.0.0.2"): _ips("10.0.0.5")})
    same = lbplan.table_from_wanted({IP("10.0.0.2"): _ips("10.0.0.5")})
    changes = {IP("10.0.0.2"): _ips("10.0.0.5", "10.0.0.6")}
    expected = lbplan.plan_change(table, changes)
    calls = []
    real = lbplan.plan_change
    monkeypatch.setattr(lbplan, "plan_change", lambda *a: calls.append(a) or real(*a))
    plans = lbplan.Plans()
    first = plans.plan(table, changes)
    second = plans.plan(same, dict(changes))
    assert first == second == expected and len(calls) == 1
    assert first[0] is not second[0]  # each sandbox gets a table of its own


def test_plans_work_out_again_for_a_table_that_differs() -> None:
    plans = lbplan.Plans()
    changes = {IP("10.0.0.2"): _ips("10.0.0.5", "10.0.0.6")}
    behind = lbplan.table_from_wanted({IP("10.0.0.2"): frozenset()})
    plans.plan(lbplan.table_from_wanted({IP("10.0.0.2"): _ips("10.0.0.5")}), changes)
    assert plans.plan(behind, changes) == lbplan.plan_change(behind, changes)
