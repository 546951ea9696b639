"""Unit tests for agent.network.firewall's pure parts: exact rule text and the apply batch."""
import pytest

from agent.network.firewall import BridgeNet, build_restore, render_rules

FILTER_HEAD = """*filter
:DOCKER - [0:0]
:DOCKER-BRIDGE - [0:0]
:DOCKER-CT - [0:0]
:DOCKER-FORWARD - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-FORWARD
"""
NAT_HEAD = """*nat
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER
"""


def test_render_default_bridge() -> None:
    rules = render_rules([BridgeNet("docker0", "172.17.0.0/16")])
    assert rules["filter"] == FILTER_HEAD + """\
-A DOCKER ! -i docker0 -o docker0 -j DROP
-A DOCKER-BRIDGE -o docker0 -j DOCKER
-A DOCKER-CT -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-FORWARD -j DOCKER-CT
-A DOCKER-FORWARD -j DOCKER-ISOLATION-STAGE-1
-A DOCKER-FORWARD -j DOCKER-BRIDGE
-A DOCKER-FORWARD -i docker0 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
COMMIT
"""
    assert rules["nat"] == NAT_HEAD + """\
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
COMMIT
"""


def test_render_two_bridges_second_without_icc() -> None:
    rules = render_rules([BridgeNet("docker0", "172.17.0.0/16"),
                          BridgeNet("br-1234567890ab", "172.18.0.0/16", icc=False)])
    assert rules["filter"] == FILTER_HEAD + """\
-A DOCKER ! -i docker0 -o docker0 -j DROP
-A DOCKER ! -i br-1234567890ab -o br-1234567890ab -j DROP
-A DOCKER-BRIDGE -o docker0 -j DOCKER
-A DOCKER-BRIDGE -o br-1234567890ab -j DOCKER
-A DOCKER-CT -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-CT -o br-1234567890ab -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-FORWARD -j DOCKER-CT
-A DOCKER-FORWARD -j DOCKER-ISOLATION-STAGE-1
-A DOCKER-FORWARD -j DOCKER-BRIDGE
-A DOCKER-FORWARD -i docker0 -j ACCEPT
-A DOCKER-FORWARD -i br-1234567890ab -o br-1234567890ab -j DROP
-A DOCKER-FORWARD -i br-1234567890ab ! -o br-1234567890ab -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -i br-1234567890ab ! -o br-1234567890ab -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -o br-1234567890ab -j DROP
COMMIT
"""
    assert rules["nat"] == NAT_HEAD + """\
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A POSTROUTING -s 172.18.0.0/16 ! -o br-1234567890ab -j MASQUERADE
COMMIT
"""


def test_render_internal_network_with_and_without_icc() -> None:
    rules = render_rules([BridgeNet("docker0", "172.17.0.0/16"),
                          BridgeNet("br-int", "192.0.2.0/24", internal=True),
                          BridgeNet("br-int2", "198.51.100.0/24", internal=True, icc=False)])
    assert rules["filter"] == FILTER_HEAD + """\
-A DOCKER ! -i docker0 -o docker0 -j DROP
-A DOCKER-BRIDGE -o docker0 -j DOCKER
-A DOCKER-CT -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-FORWARD -j DOCKER-CT
-A DOCKER-FORWARD -j DOCKER-ISOLATION-STAGE-1
-A DOCKER-FORWARD -j DOCKER-BRIDGE
-A DOCKER-FORWARD -i docker0 -j ACCEPT
-A DOCKER-FORWARD -i br-int -o br-int -j ACCEPT
-A DOCKER-FORWARD -i br-int2 -o br-int2 -j DROP
-A DOCKER-ISOLATION-STAGE-1 ! -s 192.0.2.0/24 -o br-int -j DROP
-A DOCKER-ISOLATION-STAGE-1 ! -d 192.0.2.0/24 -i br-int -j DROP
-A DOCKER-ISOLATION-STAGE-1 ! -s 198.51.100.0/24 -o br-int2 -j DROP
-A DOCKER-ISOLATION-STAGE-1 ! -d 198.51.100.0/24 -i br-int2 -j DROP
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
COMMIT
"""
    assert rules["nat"] == NAT_HEAD + """\
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
COMMIT
"""


def test_render_without_masquerade_omits_postrouting_rule() -> None:
    rules = render_rules([BridgeNet("br0", "10.1.0.0/24", masquerade=False)])
    assert "POSTROUTING" not in rules["nat"]


def test_render_never_declares_docker_user() -> None:
    rules = render_rules([BridgeNet("docker0", "172.17.0.0/16")])
    assert ":DOCKER-USER" not in rules["filter"]


def test_render_rejects_subnet_with_host_bits() -> None:
    with pytest.raises(ValueError, match="invalid subnet '10.0.0.1/24' for bridge br0"):
        render_rules([BridgeNet("br0", "10.0.0.1/24")])


def test_render_rejects_bad_bridge_name() -> None:
    with pytest.raises(ValueError, match="invalid bridge name 'a-name-longer-than-15'"):
        render_rules([BridgeNet("a-name-longer-than-15", "10.0.0.0/24")])


def test_render_rejects_bridge_listed_twice() -> None:
    with pytest.raises(ValueError, match="bridge br0 listed twice"):
        render_rules([BridgeNet("br0", "10.0.0.0/24"), BridgeNet("br0", "10.1.0.0/24")])


EMPTY = {"filter": "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n",
         "nat": "*nat\n:PREROUTING ACCEPT [0:0]\n:POSTROUTING ACCEPT [0:0]\nCOMMIT\n"}


def test_batch_on_empty_tables_creates_docker_user_and_inserts_jumps() -> None:
    batch = build_restore([BridgeNet("docker0", "172.17.0.0/16")], EMPTY)
    lines = batch["filter"].splitlines()
    assert ":DOCKER-USER - [0:0]" in lines
    assert [ln for ln in lines if ln.startswith(("-I", "-D"))] == [
        "-I FORWARD 1 -j DOCKER-USER", "-I FORWARD 2 -j DOCKER-FORWARD"]
    assert [ln for ln in batch["nat"].splitlines() if ln.startswith(("-I", "-D"))] == [
        "-I PREROUTING 1 -m addrtype --dst-type LOCAL -j DOCKER",
        "-I OUTPUT 1 -m addrtype --dst-type LOCAL -j DOCKER",
        "-I POSTROUTING 1 -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE"]


def test_batch_keeps_existing_docker_user_chain_undeclared() -> None:
    current = dict(EMPTY, filter="*filter\n:FORWARD ACCEPT [0:0]\n:DOCKER-USER - [0:0]\n"
                                 "-A DOCKER-USER -s 10.9.0.0/24 -j DROP\nCOMMIT\n")
    batch = build_restore([], current)
    assert ":DOCKER-USER" not in batch["filter"]
    assert "-A DOCKER-USER" not in batch["filter"]


def test_batch_deletes_every_old_copy_of_shoal_jumps_before_inserting() -> None:
    current = dict(EMPTY, filter="*filter\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-FORWARD\n"
                                 "-A FORWARD -j ACCEPT\n-A FORWARD -j DOCKER-USER\n"
                                 "-A FORWARD -j DOCKER-FORWARD\nCOMMIT\n")
    batch = build_restore([], current)
    assert [ln for ln in batch["filter"].splitlines() if ln.startswith(("-I", "-D"))] == [
        "-D FORWARD -j DOCKER-FORWARD", "-D FORWARD -j DOCKER-USER", "-D FORWARD -j DOCKER-FORWARD",
        "-I FORWARD 1 -j DOCKER-USER", "-I FORWARD 2 -j DOCKER-FORWARD"]


def test_batch_removes_masquerade_of_stale_bridge_only() -> None:
    current = dict(EMPTY, nat="*nat\n-A POSTROUTING -s 10.1.0.0/24 ! -o br-old -j MASQUERADE\n"
                              "-A POSTROUTING -s 10.2.0.0/24 ! -o eth9 -j MASQUERADE\nCOMMIT\n")
    batch = build_restore([], current, stale_bridges=["br-old"])
    nat = batch["nat"].splitlines()
    assert "-D POSTROUTING -s 10.1.0.0/24 ! -o br-old -j MASQUERADE" in nat
    assert not any("eth9" in ln for ln in nat)


# Published ports (S14) and the self-check (S21).
from agent.network.firewall import PublishedPort, rules_match  # noqa: E402

WEB = PublishedPort("br0", "10.77.0.2", 80, "tcp", "", 8080, owner="c1")
DNS_LO = PublishedPort("br0", "10.77.0.3", 53, "udp", "127.0.0.1", 5353, owner="c2")


def test_render_published_ports_exact_text() -> None:
    # One slot per container: its chains hold its rules, sorted; jumps to them newest slot first.
    rules = render_rules([BridgeNet("br0", "10.77.0.0/24")], [WEB, DNS_LO])
    assert rules["filter"] == FILTER_HEAD.replace(
        ":DOCKER-ISOLATION-STAGE-2 - [0:0]\n",
        ":DOCKER-ISOLATION-STAGE-2 - [0:0]\n:SHOAL-PORTS-1 - [0:0]\n:SHOAL-PORTS-0 - [0:0]\n") + """\
-A DOCKER -j SHOAL-PORTS-1
-A DOCKER -j SHOAL-PORTS-0
-A DOCKER ! -i br0 -o br0 -j DROP
-A DOCKER-BRIDGE -o br0 -j DOCKER
-A DOCKER-CT -o br0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-FORWARD -j DOCKER-CT
-A DOCKER-FORWARD -j DOCKER-ISOLATION-STAGE-1
-A DOCKER-FORWARD -j DOCKER-BRIDGE
-A DOCKER-FORWARD -i br0 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i br0 ! -o br0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-2 -o br0 -j DROP
-A SHOAL-PORTS-1 -d 10.77.0.3/32 ! -i br0 -o br0 -p udp -m udp --dport 53 -j ACCEPT
-A SHOAL-PORTS-0 -d 10.77.0.2/32 ! -i br0 -o br0 -p tcp -m tcp --dport 80 -j ACCEPT
COMMIT
"""
    assert rules["nat"] == """*nat
:DOCKER - [0:0]
:SHOAL-DNAT-1 - [0:0]
:SHOAL-HAIRPIN-1 - [0:0]
:SHOAL-DNAT-0 - [0:0]
:SHOAL-HAIRPIN-0 - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -j SHOAL-HAIRPIN-1
-A POSTROUTING -j SHOAL-HAIRPIN-0
-A POSTROUTING -s 10.77.0.0/24 ! -o br0 -j MASQUERADE
-A DOCKER -j SHOAL-DNAT-1
-A DOCKER -j SHOAL-DNAT-0
-A SHOAL-DNAT-1 -d 127.0.0.1/32 -p udp -m udp --dport 5353 -j DNAT --to-destination 10.77.0.3:53
-A SHOAL-HAIRPIN-1 -o br0 -m addrtype --src-type LOCAL -j MASQUERADE
-A SHOAL-HAIRPIN-1 -s 10.77.0.3/32 -d 10.77.0.3/32 -p udp -m udp --dport 53 -j MASQUERADE
-A SHOAL-DNAT-0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.77.0.2:80
-A SHOAL-HAIRPIN-0 -o br0 -m addrtype --src-type LOCAL -j MASQUERADE
-A SHOAL-HAIRPIN-0 -s 10.77.0.2/32 -d 10.77.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE
COMMIT
"""
    assert rules["raw"] == """*raw
:SHOAL-LOOPBACK-1 - [0:0]
-A PREROUTING -j SHOAL-LOOPBACK-1
-A SHOAL-LOOPBACK-1 -d 127.0.0.1/32 ! -i lo -p udp -m udp --dport 5353 -j DROP
COMMIT
"""


def test_render_internal_network_never_publishes() -> None:
    rules = render_rules([BridgeNet("br0", "10.77.0.0/24", internal=True)], [WEB])
    assert "10.77.0.2" not in rules["filter"] + rules["nat"] + rules["raw"]


def test_render_rejects_port_on_unknown_bridge() -> None:
    with pytest.raises(ValueError, match="published port 8080/tcp is on unknown bridge br0"):
        render_rules([], [WEB])


def test_render_rejects_bad_published_port() -> None:
    with pytest.raises(ValueError, match="invalid proto: sctp"):
        render_rules([BridgeNet("br0", "10.77.0.0/24")],
                     [PublishedPort("br0", "10.77.0.2", 80, "sctp", "", 8080)])


def test_batch_removes_rules_of_unpublished_ports() -> None:
    nets = [BridgeNet("br0", "10.77.0.0/24")]
    current = dict(EMPTY, nat="*nat\n:DOCKER - [0:0]\n"
                              "-A POSTROUTING -o br0 -m addrtype --src-type LOCAL -j MASQUERADE\n"
                              "-A POSTROUTING -s 10.77.0.2/32 -d 10.77.0.2/32 -p tcp -m tcp --dport 80 "
                              "-j MASQUERADE\nCOMMIT\n",
                   raw="*raw\n-A PREROUTING -d 127.0.0.1/32 ! -i lo -p udp -m udp --dport 5353 -j DROP\n"
                       "-A PREROUTING -d 127.0.0.1/32 ! -i eth0 -j DROP\nCOMMIT\n")
    batch = build_restore(nets, current)
    nat = [ln for ln in batch["nat"].splitlines() if ln.startswith("-D")]
    assert nat == ["-D POSTROUTING -o br0 -m addrtype --src-type LOCAL -j MASQUERADE",
                   "-D POSTROUTING -s 10.77.0.2/32 -d 10.77.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE"]
    assert [ln for ln in batch["raw"].splitlines() if ln.startswith(("-D", "-I", "-A"))] == [
        "-D PREROUTING -d 127.0.0.1/32 ! -i lo -p udp -m udp --dport 5353 -j DROP"]


def _as_saved(rendered: dict[str, str]) -> dict[str, str]:
    """What iptables-save prints after a clean apply: built-in chains declared, DOCKER-USER too."""
    out = {}
    for table, text in rendered.items():
        lines = text.splitlines()
        extra = [":DOCKER-USER - [0:0]"] if table == "filter" else []
        out[table] = "\n".join(lines[:1] + extra + lines[1:]) + "\n"
    return out


def test_rules_match_true_for_exact_rules_plus_user_rules() -> None:
    nets = [BridgeNet("br0", "10.77.0.0/24")]
    rendered = render_rules(nets, [WEB])
    saved = _as_saved(rendered)
    saved["filter"] = saved["filter"].replace("COMMIT", "-A FORWARD -j ACCEPT\n-A DOCKER-USER -j RETURN\nCOMMIT")
    assert rules_match(rendered, saved)


def test_rules_match_false_after_flush_of_nat() -> None:
    nets = [BridgeNet("br0", "10.77.0.0/24")]
    rendered = render_rules(nets, [WEB])
    saved = _as_saved(rendered)
    saved["nat"] = "*nat\n:DOCKER - [0:0]\nCOMMIT\n"
    assert not rules_match(rendered, saved)


def test_rules_match_false_when_a_jump_is_duplicated_or_chain_missing() -> None:
    nets = [BridgeNet("br0", "10.77.0.0/24")]
    rendered = render_rules(nets, [WEB])
    saved = _as_saved(rendered)
    dup = dict(saved, nat=saved["nat"].replace(
        "COMMIT", "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\nCOMMIT"))
    assert not rules_match(rendered, dup)
    no_user = dict(saved, filter=saved["filter"].replace(":DOCKER-USER - [0:0]\n", ""))
    assert not rules_match(rendered, no_user)


def test_rules_match_false_when_a_published_port_rule_is_missing() -> None:
    nets = [BridgeNet("br0", "10.77.0.0/24")]
    saved = _as_saved(render_rules(nets, []))
    assert not rules_match(render_rules(nets, [WEB]), saved)



def test_batch_empties_and_deletes_slot_chains_no_longer_used() -> None:
    current = dict(EMPTY, nat="*nat\n:DOCKER - [0:0]\n:SHOAL-DNAT-3 - [0:0]\n:SHOAL-HAIRPIN-3 - [0:0]\n"
                              "-A POSTROUTING -j SHOAL-HAIRPIN-3\n-A DOCKER -j SHOAL-DNAT-3\n"
                              "-A SHOAL-DNAT-3 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.77.0.2:80\n"
                              "COMMIT\n")
    nat = build_restore([BridgeNet("br0", "10.77.0.0/24")], current)["nat"].splitlines()
    assert nat[:5] == ["*nat", ":DOCKER - [0:0]", ":SHOAL-DNAT-3 - [0:0]", ":SHOAL-HAIRPIN-3 - [0:0]",
                       "-I PREROUTING 1 -m addrtype --dst-type LOCAL -j DOCKER"]
    assert "-D POSTROUTING -j SHOAL-HAIRPIN-3" in nat
    assert nat[-3:] == ["-X SHOAL-DNAT-3", "-X SHOAL-HAIRPIN-3", "COMMIT"]


def test_two_host_ports_for_one_container_port_share_one_accept_and_one_hairpin() -> None:
    other = PublishedPort("br0", "10.77.0.2", 80, "tcp", "", 8081, owner="c1")
    rules = render_rules([BridgeNet("br0", "10.77.0.0/24")], [WEB, other])
    assert rules["filter"].count("-p tcp -m tcp --dport 80 -j ACCEPT") == 1
    assert rules["nat"].count("--dport 80 -j MASQUERADE") == 1
    assert rules["nat"].count("-j DNAT") == 2


# Firewall.publish/unpublish: the plan is pure, and leaves the model equal to a full render.
from agent.network.firewall import Slots, render_layout  # noqa: E402
from agent.network.firewall_live import plan_publish  # noqa: E402

NETS = [BridgeNet("br0", "10.77.0.0/24")]


def slots_of(ports: list[PublishedPort]) -> Slots:
    return Slots({}).assign(sorted({p.owner for p in ports}), {p.owner for p in ports if p.host_ip})


def test_plan_first_publish_makes_slot_0_and_jumps_to_it() -> None:
    layout = render_layout(NETS, [])
    ops, slots = plan_publish(layout, Slots({}), "c1", [WEB])
    assert ops == {
        "filter": [":SHOAL-PORTS-0 - [0:0]",
                   "-A SHOAL-PORTS-0 -d 10.77.0.2/32 ! -i br0 -o br0 -p tcp -m tcp --dport 80 -j ACCEPT",
                   "-I DOCKER 1 -j SHOAL-PORTS-0"],
        "nat": [":SHOAL-DNAT-0 - [0:0]", ":SHOAL-HAIRPIN-0 - [0:0]",
                "-A SHOAL-DNAT-0 -p tcp -m tcp --dport 8080 -j DNAT --to-destination 10.77.0.2:80",
                "-A SHOAL-HAIRPIN-0 -o br0 -m addrtype --src-type LOCAL -j MASQUERADE",
                "-A SHOAL-HAIRPIN-0 -s 10.77.0.2/32 -d 10.77.0.2/32 -p tcp -m tcp --dport 80 -j MASQUERADE",
                "-I DOCKER 1 -j SHOAL-DNAT-0", "-I POSTROUTING 1 -j SHOAL-HAIRPIN-0"],
    }
    assert slots == Slots({"c1": 0}, 1, set())
    assert layout.same(render_layout(NETS, [WEB], slots))
    assert layout.text() == render_rules(NETS, [WEB])


def test_plan_second_owner_gets_a_new_slot_with_a_raw_chain_for_its_loopback_port() -> None:
    layout = render_layout(NETS, [WEB])
    ops, slots = plan_publish(layout, slots_of([WEB]), "c2", [DNS_LO])
    assert ops["raw"] == [":SHOAL-LOOPBACK-1 - [0:0]",
                          "-A SHOAL-LOOPBACK-1 -d 127.0.0.1/32 ! -i lo -p udp -m udp --dport 5353 -j DROP",
                          "-I PREROUTING 1 -j SHOAL-LOOPBACK-1"]
    assert ops["filter"][-1] == "-I DOCKER 1 -j SHOAL-PORTS-1"
    assert slots == Slots({"c1": 0, "c2": 1}, 2, {1})
    assert layout.text() == render_rules(NETS, [WEB, DNS_LO])


def test_plan_unpublish_empties_the_slot_chains_and_keeps_the_jumps() -> None:
    layout = render_layout(NETS, [WEB, DNS_LO])
    ops, slots = plan_publish(layout, slots_of([WEB, DNS_LO]), "c1", [])
    assert ops == {"filter": ["-F SHOAL-PORTS-0"], "nat": ["-F SHOAL-DNAT-0", "-F SHOAL-HAIRPIN-0"]}
    assert slots == Slots({"c2": 1}, 2, {1})
    assert layout.same(render_layout(NETS, [DNS_LO], slots))
    assert "-A DOCKER -j SHOAL-PORTS-0" in layout.text()["filter"]


def test_plan_reuses_the_lowest_free_slot_without_new_jumps() -> None:
    layout = render_layout(NETS, [DNS_LO], Slots({"c2": 1}, 2, {1}))
    web3 = PublishedPort("br0", "10.77.0.4", 80, "tcp", "", 8082, owner="c3")
    ops, slots = plan_publish(layout, Slots({"c2": 1}, 2, {1}), "c3", [web3])
    assert not any(line.startswith("-I ") for lines in ops.values() for line in lines)
    assert slots == Slots({"c2": 1, "c3": 0}, 2, {1})
    assert layout.same(render_layout(NETS, [DNS_LO, web3], slots))


def test_plan_republishing_the_same_ports_changes_nothing() -> None:
    layout = render_layout(NETS, [WEB])
    ops, slots = plan_publish(layout, slots_of([WEB]), "c1", [WEB])
    assert ops == {}
    assert slots == slots_of([WEB])


def test_plan_unpublish_of_an_unknown_owner_changes_nothing() -> None:
    layout = render_layout(NETS, [WEB])
    assert plan_publish(layout, slots_of([WEB]), "nobody", []) == ({}, slots_of([WEB]))


def test_slots_keep_their_owners_and_fill_the_lowest_free_one_first() -> None:
    before = Slots({"a": 0, "b": 1, "c": 2}, 3, {2})
    after = before.assign(["b", "d", "e"], {"e"})
    assert after == Slots({"b": 1, "d": 0, "e": 2}, 3, {2})
    assert after.assign(["b", "d", "e", "f"], set()) == Slots({"b": 1, "d": 0, "e": 2, "f": 3}, 4, {2})


def test_a_full_render_keeps_freed_slots_as_empty_chains() -> None:
    text = render_rules(NETS, [DNS_LO], Slots({"c2": 1}, 2, {1}))
    assert ":SHOAL-PORTS-0 - [0:0]" in text["filter"]
    assert "-A SHOAL-PORTS-0 " not in text["filter"]
    assert "-A DOCKER -j SHOAL-DNAT-0" in text["nat"]
