"""Unit tests for agent.network.firewall_markers.markers_in_listing: nft's listing of the two marker chains as
iptables-nft 1.8 writes them (pure text)."""
from __future__ import annotations

from agent.network.firewall_markers import markers_in_listing

FORWARD = ("table ip filter {\n\tchain FORWARD {\n\t\ttype filter hook forward priority filter; policy accept;\n"
           "\t\tcounter packets 0 bytes 0 jump DOCKER-FORWARD\n\t}\n}\n")
PREROUTING = ("table ip nat {\n\tchain PREROUTING {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n"
              "\t\tfib daddr type local counter packets 12 bytes 720 jump DOCKER\n\t}\n}\n")
EMPTY_PREROUTING = ("table ip nat {\n\tchain PREROUTING {\n\t\ttype nat hook prerouting priority dstnat; "
                    "policy accept;\n\t}\n}\n")


def test_both_marker_rules_listed_are_in_place() -> None:
    assert markers_in_listing(FORWARD + PREROUTING)


def test_a_flushed_nat_prerouting_is_not_in_place() -> None:
    assert not markers_in_listing(FORWARD + EMPTY_PREROUTING)


def test_a_jump_to_another_chain_with_the_same_prefix_is_not_the_marker() -> None:
    assert not markers_in_listing(FORWARD + PREROUTING.replace("jump DOCKER\n", "jump DOCKER-INGRESS\n"))


def test_a_marker_jump_with_an_extra_match_is_not_the_marker() -> None:
    assert not markers_in_listing(FORWARD.replace("counter", 'iifname "lo" counter') + PREROUTING)


def test_a_marker_rule_in_another_chain_does_not_count() -> None:
    assert not markers_in_listing(FORWARD.replace("chain FORWARD", "chain INPUT") + PREROUTING)
