"""Lab tests for bridge.py, netns.py and firewall.py against the real kernel (root, namespaces).
The code under test acts on its process's namespace, so it runs in a child inside a test namespace."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from agent.network import netns as nsmod

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
SUBNET = "10.77.0.0/24"
GATEWAY = "10.77.0.1"


def wait_for(check: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Poll `check` until it is true or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def in_ns(ns: str, code: str) -> Any:
    """Run python `code` inside namespace `ns`; the code may print one JSON value as its result."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, cwd=REPO, env=env)
    if proc.returncode != 0:
        raise AssertionError(f"code in {ns} failed:\n{proc.stderr}")
    out = proc.stdout.strip()
    return json.loads(out) if out else None


def ping(ns: str, addr: str) -> bool:
    return sh("ip", "netns", "exec", ns, "ping", "-c1", "-W2", addr, check=False).returncode == 0


def iptables_save(ns: str) -> str:
    return sh("ip", "netns", "exec", ns, "iptables-save").stdout


def link_state(ns: str) -> list[tuple[Any, ...]]:
    """Identity and settings of every link (ifindex proves nothing was recreated), without operstate."""
    links = json.loads(sh("ip", "-n", ns, "-j", "addr", "show").stdout)
    return [(ln["ifindex"], ln["ifname"], ln.get("address"), sorted(ln["flags"]), ln["mtu"],
             ln.get("master"), [(a["local"], a["prefixlen"]) for a in ln["addr_info"]]) for ln in links]


def rules_of(save: str) -> list[str]:
    return [ln for ln in save.splitlines() if ln.startswith(("-A ", ":", "*"))]


@pytest.fixture
def lab() -> Iterator[dict[str, str]]:
    """A host namespace and two container namespaces, all removed afterwards (links die with them)."""
    prefix = f"shoalt{uuid.uuid4().hex[:8]}"
    names = {"host": f"{prefix}-h", "c1": f"{prefix}-c1", "c2": f"{prefix}-c2", "prefix": prefix}
    try:
        for key in ("host", "c1", "c2"):
            nsmod.create_netns(names[key])
        yield names
    finally:
        for name in nsmod.list_netns(prefix):
            nsmod.delete_netns(name)
        assert nsmod.list_netns(prefix) == []


def attach(lab: dict[str, str], key: str, addr: str, bridge: str = "br0",
           gateway: str | None = GATEWAY, prefixlen: int = 24) -> None:
    in_ns(lab["host"], f"""
        from agent.network import bridge
        from common.mac import mac_from_ip
        bridge.attach_endpoint({bridge!r}, {lab[key]!r}, bridge.host_ifname_for({lab[key]!r}), "eth0",
                               "{addr}/{prefixlen}", mac_from_ip({addr!r}), {gateway!r}, 1400)
    """)


def make_bridge(lab: dict[str, str], name: str = "br0", cidr: str = f"{GATEWAY}/24") -> None:
    in_ns(lab["host"], f"""
        from agent.network import bridge
        bridge.ensure_bridge({name!r}, {cidr!r}, 1400)
    """)


def test_create_netns_is_idempotent_and_brings_lo_up(lab: dict[str, str]) -> None:
    path = nsmod.create_netns(lab["c1"])
    assert path == Path("/run/netns") / lab["c1"]
    assert nsmod.list_netns(lab["prefix"]) == sorted([lab["host"], lab["c1"], lab["c2"]])
    lo = json.loads(sh("ip", "-n", lab["c1"], "-j", "link", "show", "lo").stdout)[0]
    assert "UP" in lo["flags"]


def test_delete_netns_of_missing_namespace_is_no_error(lab: dict[str, str]) -> None:
    nsmod.delete_netns(lab["c2"])
    nsmod.delete_netns(lab["c2"])
    assert lab["c2"] not in nsmod.list_netns(lab["prefix"])


def test_ensure_bridge_twice_keeps_one_address_mtu_and_up(lab: dict[str, str]) -> None:
    make_bridge(lab)
    make_bridge(lab)
    info = json.loads(sh("ip", "-n", lab["host"], "-j", "addr", "show", "br0").stdout)[0]
    v4 = [(a["local"], a["prefixlen"]) for a in info["addr_info"] if a["family"] == "inet"]
    assert v4 == [(GATEWAY, 24)]
    assert info["mtu"] == 1400
    assert "UP" in info["flags"]


def test_ensure_bridge_replaces_a_different_address(lab: dict[str, str]) -> None:
    make_bridge(lab, cidr="10.76.0.1/24")
    make_bridge(lab)
    info = json.loads(sh("ip", "-n", lab["host"], "-j", "addr", "show", "br0").stdout)[0]
    assert [a["local"] for a in info["addr_info"] if a["family"] == "inet"] == [GATEWAY]


def test_host_routed_networks_lists_the_bridge_subnet(lab: dict[str, str]) -> None:
    make_bridge(lab)
    routed = in_ns(lab["host"], """
        import json
        from agent.network.bridge import host_routed_networks
        print(json.dumps([str(n) for n in host_routed_networks()]))
    """)
    assert routed == [SUBNET]


def test_endpoints_on_one_bridge_ping_each_other(lab: dict[str, str]) -> None:
    make_bridge(lab)
    attach(lab, "c1", "10.77.0.2")
    attach(lab, "c2", "10.77.0.3")
    wait_for(lambda: ping(lab["c1"], "10.77.0.3"), what="c1 -> c2 ping")
    assert ping(lab["c2"], "10.77.0.2")
    assert ping(lab["c1"], GATEWAY)


def test_attach_endpoint_sets_mac_address_and_default_route(lab: dict[str, str]) -> None:
    make_bridge(lab)
    attach(lab, "c1", "10.77.0.2")
    eth0 = json.loads(sh("ip", "-n", lab["c1"], "-j", "addr", "show", "eth0").stdout)[0]
    assert eth0["address"] == "02:42:0a:4d:00:02"
    assert eth0["mtu"] == 1400
    assert [(a["local"], a["prefixlen"]) for a in eth0["addr_info"] if a["family"] == "inet"] == [
        ("10.77.0.2", 24)]
    routes = json.loads(sh("ip", "-n", lab["c1"], "-j", "route", "show", "default").stdout)
    assert [(r["dst"], r["gateway"], r["dev"]) for r in routes] == [("default", GATEWAY, "eth0")]
    host_side = json.loads(sh("ip", "-n", lab["host"], "-j", "link", "show", "master", "br0").stdout)
    assert len(host_side) == 1 and host_side[0]["ifname"].startswith("veth")


def test_attach_endpoint_twice_changes_nothing(lab: dict[str, str]) -> None:
    make_bridge(lab)
    attach(lab, "c1", "10.77.0.2")
    before = link_state(lab["c1"]), link_state(lab["host"])
    attach(lab, "c1", "10.77.0.2")
    assert (link_state(lab["c1"]), link_state(lab["host"])) == before


def test_set_default_route_replaces_and_removes(lab: dict[str, str]) -> None:
    make_bridge(lab)
    attach(lab, "c1", "10.77.0.2")
    in_ns(lab["host"], f"""
        from agent.network.bridge import set_default_route
        set_default_route({lab['c1']!r}, "10.77.0.254")
    """)
    assert "default via 10.77.0.254" in sh("ip", "-n", lab["c1"], "route").stdout
    in_ns(lab["host"], f"""
        from agent.network.bridge import set_default_route
        set_default_route({lab['c1']!r}, None)
        set_default_route({lab['c1']!r}, None)
    """)
    assert "default" not in sh("ip", "-n", lab["c1"], "route").stdout


def test_detach_endpoint_removes_both_ends_and_tolerates_repeat(lab: dict[str, str]) -> None:
    make_bridge(lab)
    attach(lab, "c1", "10.77.0.2")
    gone = in_ns(lab["host"], f"""
        import json
        from agent.network import bridge
        name = bridge.host_ifname_for({lab['c1']!r})
        bridge.detach_endpoint(name)
        bridge.detach_endpoint(name)
        print(json.dumps(bridge.link_exists(name)))
    """)
    assert gone is False
    assert sh("ip", "-n", lab["c1"], "link", "show", "eth0", check=False).returncode != 0


def test_attach_endpoint_with_missing_bridge_leaves_no_veth(lab: dict[str, str]) -> None:
    with pytest.raises(AssertionError, match="bridge nobridge does not exist"):
        attach(lab, "c1", "10.77.0.2", bridge="nobridge")
    assert "veth" not in sh("ip", "-n", lab["host"], "-br", "link").stdout
    assert "eth0" not in sh("ip", "-n", lab["c1"], "-br", "link").stdout


def apply(lab: dict[str, str], nets: str, stale: str = "()") -> None:
    in_ns(lab["host"], f"""
        from agent.network.firewall import BridgeNet, apply_rules, enable_ip_forward
        enable_ip_forward()
        apply_rules({nets}, {stale})
    """)


TWO_NETS = "[BridgeNet('br0', '10.77.0.0/24'), BridgeNet('br1', '10.78.0.0/24', icc=False)]"


def test_apply_rules_twice_leaves_no_duplicates(lab: dict[str, str]) -> None:
    apply(lab, TWO_NETS)
    first = rules_of(iptables_save(lab["host"]))
    apply(lab, TWO_NETS)
    second = rules_of(iptables_save(lab["host"]))
    assert second == first
    rendered = in_ns(lab["host"], f"""
        import json
        from agent.network.firewall import BridgeNet, render_rules
        print(json.dumps(render_rules({TWO_NETS})))
    """)
    for text in rendered.values():
        for rule in (ln for ln in text.splitlines() if ln.startswith("-A ")):
            assert second.count(rule) == 1, rule
    forward = [ln for ln in second if ln.startswith("-A FORWARD ")]
    assert forward == ["-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-FORWARD"]


def test_apply_rules_keeps_docker_user_content(lab: dict[str, str]) -> None:
    in_ns(lab["host"], """
        from agent.network.firewall import ensure_docker_user_chain
        ensure_docker_user_chain()
    """)
    sh("ip", "netns", "exec", lab["host"],
       "iptables", "-A", "DOCKER-USER", "-s", "10.99.0.0/24", "-j", "DROP")
    apply(lab, TWO_NETS)
    apply(lab, TWO_NETS)
    in_ns(lab["host"], """
        from agent.network.firewall import ensure_docker_user_chain
        ensure_docker_user_chain()
    """)
    save = rules_of(iptables_save(lab["host"]))
    assert [ln for ln in save if ln.startswith("-A DOCKER-USER")] == [
        "-A DOCKER-USER -s 10.99.0.0/24 -j DROP"]


def test_apply_rules_drops_masquerade_of_stale_bridge(lab: dict[str, str]) -> None:
    apply(lab, TWO_NETS)
    apply(lab, "[BridgeNet('br0', '10.77.0.0/24')]", stale="['br1']")
    save = rules_of(iptables_save(lab["host"]))
    assert [ln for ln in save if ln.startswith("-A POSTROUTING")] == [
        "-A POSTROUTING -s 10.77.0.0/24 ! -o br0 -j MASQUERADE"]
    assert not any("br1" in ln for ln in save)


def test_rules_isolate_bridges_from_each_other(lab: dict[str, str]) -> None:
    make_bridge(lab, "br0", "10.77.0.1/24")
    make_bridge(lab, "br1", "10.78.0.1/24")
    attach(lab, "c1", "10.77.0.2", bridge="br0", gateway="10.77.0.1")
    attach(lab, "c2", "10.78.0.2", bridge="br1", gateway="10.78.0.1")
    apply(lab, "[]")  # forwarding on, no network rules yet: the host routes between the bridges
    wait_for(lambda: ping(lab["c1"], "10.78.0.2"), what="routed ping before isolation")
    apply(lab, "[BridgeNet('br0', '10.77.0.0/24'), BridgeNet('br1', '10.78.0.0/24')]")
    assert not ping(lab["c1"], "10.78.0.2")
    assert ping(lab["c1"], "10.77.0.1")


def test_icc_rule_decides_traffic_within_a_bridge(lab: dict[str, str]) -> None:
    make_bridge(lab)
    attach(lab, "c1", "10.77.0.2")
    attach(lab, "c2", "10.77.0.3")
    apply(lab, "[BridgeNet('br0', '10.77.0.0/24')]")
    wait_for(lambda: ping(lab["c1"], "10.77.0.3"), what="ping with icc on")
    apply(lab, "[BridgeNet('br0', '10.77.0.0/24', icc=False)]")
    assert not ping(lab["c1"], "10.77.0.3")
    assert ping(lab["c1"], GATEWAY)
