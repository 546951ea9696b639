"""Lab tests for firewall_live.Firewall: one container's port rules changed in one small batch, the
kernel then equal to a full rewrite, and repairs. Uses test_port_publish's `pp` lab (host, bridge, c1 serving)."""
from __future__ import annotations

import textwrap

import pytest

from tests.lab.test_bridge_kernel import in_ns, iptables_save, rules_of
from tests.lab.test_port_publish import HOST_IP, ok, pp  # noqa: F401  (pp is the fixture)

pytestmark = pytest.mark.lab

SETUP = """
    import json, subprocess
    from agent.network.firewall import BridgeNet, PublishedPort, enable_ip_forward
    from agent.network.firewall_live import Firewall
    NETS = [BridgeNet('br0', '10.77.0.0/24')]
    WEB = PublishedPort('br0', '10.77.0.2', 80, 'tcp', '', 8080)
    LOOP = PublishedPort('br0', '10.77.0.3', 53, 'udp', '127.0.0.1', 5353)
    enable_ip_forward()
    fw = Firewall(deep_every=1)  # every check compares the whole ruleset
    fw.apply_all(NETS)
"""


def run(ns: str, code: str) -> object:
    """A fresh Firewall in `ns` after a full apply, then `code`; what it prints (JSON)."""
    return in_ns(ns, textwrap.dedent(SETUP) + textwrap.dedent(code))


def test_publish_and_unpublish_leave_the_rules_of_a_full_rewrite(pp: dict[str, str]) -> None:
    assert not ok(pp["r"], HOST_IP)
    assert run(pp["h"], """
        fw.publish('c1', [WEB])
        fw.publish('c2', [LOOP])
        print(json.dumps([fw.in_place(), fw.full_applies]))
    """) == [True, 1]  # both publishes were incremental, and the kernel matches the model
    assert ok(pp["r"], HOST_IP)
    incremental = rules_of(iptables_save(pp["h"]))
    run(pp["h"], """
        from dataclasses import replace
        fw.apply_all(NETS, (), [replace(WEB, owner='c1'), replace(LOOP, owner='c2')])
    """)
    assert rules_of(iptables_save(pp["h"])) == incremental
    assert run(pp["h"], """
        fw.publish('c1', [WEB])
        fw.unpublish('c1')
        fw.unpublish('c1')  # twice: no error, nothing changes
        print(json.dumps([fw.in_place(), fw.full_applies]))
    """) == [True, 1]
    assert not ok(pp["r"], HOST_IP)
    assert not any("--dport" in ln for ln in rules_of(iptables_save(pp["h"])))


def test_a_flush_fails_the_cheap_check_and_apply_all_brings_back_the_same_rules(pp: dict[str, str]) -> None:
    assert run(pp["h"], """
        fw.deep_every = 1000  # only the marker check
        fw.publish('c1', [WEB])
        fw.publish('c2', [LOOP])
        before = subprocess.run(['iptables-save'], capture_output=True, text=True).stdout
        first = fw.in_place()
        subprocess.run(['iptables', '-F'], check=True)
        subprocess.run(['iptables', '-t', 'nat', '-F'], check=True)
        flushed = fw.in_place()
        fw.apply_all(NETS, (), fw.ports())
        after = subprocess.run(['iptables-save'], capture_output=True, text=True).stdout
        strip = lambda t: [l for l in t.splitlines() if l.startswith(('-A', ':', '*'))]
        print(json.dumps([first, flushed, fw.in_place(), strip(after) == strip(before)]))
    """) == [True, False, True, True]
    assert ok(pp["r"], HOST_IP)


def test_a_publish_the_kernel_refuses_rewrites_everything(pp: dict[str, str]) -> None:
    assert run(pp["h"], """
        fw.publish('c1', [WEB])
        subprocess.run(['iptables', '-t', 'nat', '-F'], check=True)
        subprocess.run(['iptables', '-t', 'nat', '-X'], check=True)  # no DOCKER chain to jump from
        fw.publish('c2', [LOOP])
        print(json.dumps([fw.full_applies, fw.in_place()]))
    """) == [2, True]
    assert ok(pp["r"], HOST_IP)


def test_a_removed_container_takes_only_its_rules_and_the_next_one_reuses_its_slot() -> None:
    """Through a lab daemon: `run -p` and `rm -f` change one container's chains, nothing else."""
    from tests.lab.helpers import running_lab, shoal, wait_until
    from tests.lab.test_user_networks import fetch_from

    with running_lab(hosts=2) as lab:
        def url(port: int) -> str:
            return f"http://{lab.address('h1')}:{port}/hostname"

        for name, port in (("fwa", 8090), ("fwb", 8091)):
            shoal(lab, "run", "-d", "-p", f"{port}:80", "--name", name, "busybox", "httpd", "-f", "-p", "80",
                  "-h", "/etc")
            assert wait_until(lambda: fetch_from(lab, "h2", url(port)), timeout=15)
        shoal(lab, "rm", "-f", "fwa")
        nat = lab.exec("h1", ["iptables-save", "-t", "nat"]).stdout
        assert "--dport 8090" not in nat
        assert nat.count("--dport 8091") == 1
        assert fetch_from(lab, "h2", url(8090)) is None
        assert fetch_from(lab, "h2", url(8091))
        shoal(lab, "run", "-d", "-p", "8092:80", "--name", "fwc", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
        assert wait_until(lambda: fetch_from(lab, "h2", url(8092)), timeout=15)
        nat = lab.exec("h1", ["iptables-save", "-t", "nat"]).stdout
        assert [ln for ln in nat.splitlines() if ln.startswith("-A DOCKER -j ")] == [
            "-A DOCKER -j SHOAL-DNAT-1", "-A DOCKER -j SHOAL-DNAT-0"]  # fwc took fwa's free slot 0


def test_a_restarted_daemons_full_apply_deletes_the_old_slot_chains(pp: dict[str, str]) -> None:
    run(pp["h"], """
        fw.publish('c1', [WEB])
        fw.publish('c2', [LOOP])
    """)
    run(pp["h"], "")  # a new Firewall, as after a restart: nothing published yet
    save = rules_of(iptables_save(pp["h"]))
    assert not any("SHOAL-" in ln for ln in save)
    assert not ok(pp["r"], HOST_IP)
