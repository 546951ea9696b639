"""Lab tests for agent.network.firewall_markers: the watch's marker check answered in-process by nft once it
agrees with `iptables -C`, seeing a flush of either table as `iptables -C` does; iptables-legacy keeps the exec.
Each test runs its code in a fresh namespace of its own (removed afterwards)."""
from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from agent.network import netns as nsmod
from tests.lab.test_bridge_kernel import in_ns

pytestmark = pytest.mark.lab

MARKERS = """
    import json, subprocess
    from agent.network.firewall_markers import MarkerCheck, markers_by_exec
    def sh(*a):
        subprocess.run(a, check=True, capture_output=True)
    def add_markers(tool='iptables'):
        sh(tool, '-N', 'DOCKER-FORWARD')
        sh(tool, '-A', 'FORWARD', '-j', 'DOCKER-FORWARD')
        sh(tool, '-t', 'nat', '-N', 'DOCKER')
        sh(tool, '-t', 'nat', '-A', 'PREROUTING', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'DOCKER')
"""


@pytest.fixture
def ns() -> Iterator[str]:
    name = f"shoalt{uuid.uuid4().hex[:8]}-fwm"
    nsmod.create_netns(name)
    try:
        yield name
    finally:
        nsmod.delete_netns(name)
    assert nsmod.list_netns(name) == []


def test_once_calibrated_the_check_runs_no_iptables_while_the_markers_are_there(ns: str) -> None:
    assert in_ns(ns, MARKERS + """
    add_markers()
    check = MarkerCheck()
    answers = [check() for _ in range(5)]
    print(json.dumps([answers, check.execs, check.nft_checks]))
    """) == [[True] * 5, 1, 4]  # the first answer calibrates (iptables -C and nft agree), the rest are nft's


@pytest.mark.parametrize("flush", [["iptables", "-F"], ["iptables", "-t", "nat", "-F"], ["nft", "flush", "ruleset"]])
def test_a_flush_of_either_table_fails_the_check_as_iptables_c_does_and_the_rules_back_pass_it(
        ns: str, flush: list[str]) -> None:
    assert in_ns(ns, MARKERS + f"""
    add_markers()
    check = MarkerCheck()
    first = [check(), check()]
    sh(*{flush!r})
    flushed = [check(), markers_by_exec()]
    if {flush!r}[0] == 'nft':
        add_markers()
    else:
        sh('iptables', '-A', 'FORWARD', '-j', 'DOCKER-FORWARD')
        sh('iptables', '-t', 'nat', '-A', 'PREROUTING', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'DOCKER')
    print(json.dumps([first, flushed, check()]))
    """) == [[True, True], [False, False], True]


def test_a_marker_jump_with_an_extra_match_is_not_the_marker(ns: str) -> None:
    assert in_ns(ns, MARKERS + """
    add_markers()
    check = MarkerCheck()
    check()
    sh('iptables', '-F', 'FORWARD')
    sh('iptables', '-A', 'FORWARD', '-i', 'lo', '-j', 'DOCKER-FORWARD')
    print(json.dumps([check(), markers_by_exec()]))
    """) == [False, False]


def test_rules_nft_cannot_see_iptables_legacy_keep_the_check_on_iptables_c(ns: str) -> None:
    assert in_ns(ns, MARKERS + """
    add_markers('iptables-legacy')
    def legacy():
        try:
            sh('iptables-legacy', '-w', '-C', 'FORWARD', '-j', 'DOCKER-FORWARD')
            sh('iptables-legacy', '-w', '-t', 'nat', '-C', 'PREROUTING', '-m', 'addrtype', '--dst-type', 'LOCAL',
               '-j', 'DOCKER')
        except subprocess.CalledProcessError:
            return False
        return True
    check = MarkerCheck(by_exec=legacy)
    answers = [check() for _ in range(3)]
    sh('iptables-legacy', '-t', 'nat', '-F')
    answers.append(check())
    print(json.dumps([answers, check.execs, check.nft_checks]))
    """) == [[True, True, True, False], 4, 0]
