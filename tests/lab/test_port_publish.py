"""Lab tests for published ports (S14) and the firewall's self-healing (S21) against the real kernel.
Everything runs in namespaces made here: a host with a bridge, two containers and a remote host."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Iterator

import pytest

from agent.network import netns as nsmod
from tests.lab.test_bridge_kernel import in_ns, iptables_save, rules_of, sh, wait_for

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
HOST_IP, REMOTE_IP = "10.99.0.1", "10.99.0.2"
C1, C2 = "10.77.0.2", "10.77.0.3"
NETS = "[BridgeNet('br0', '10.77.0.0/24')]"
PORTS = "[PublishedPort('br0', '10.77.0.2', 80, 'tcp', '', 8080)]"
APPLY = f"""
    from agent.network.firewall import (BridgeNet, PublishedPort, apply_rules, enable_ip_forward,
                                        ensure_docker_user_chain)
    enable_ip_forward()
    ensure_docker_user_chain()
    apply_rules({NETS}, (), {PORTS})
"""
SERVER = """
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 80))
srv.listen(16)
print("ready", flush=True)
while True:
    conn, peer = srv.accept()
    conn.recv(1024)
    conn.sendall(f"hello {peer[0]}\\n".encode())
    conn.close()
"""
CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as s:
        s.sendall(b"hi")
        print(s.recv(100).decode().strip())
except OSError as exc:
    print(f"error {exc}")
"""


def reach(ns: str, addr: str, port: int = 8080) -> str:
    """What the published server answers to a TCP client in `ns` ('hello <peer>' or 'error ...')."""
    proc = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", CLIENT, addr, str(port)],
                          capture_output=True, text=True, timeout=20)
    return proc.stdout.strip()


def ok(ns: str, addr: str, port: int = 8080) -> bool:
    return reach(ns, addr, port).startswith("hello ")


@pytest.fixture
def pp() -> Iterator[dict[str, str]]:
    """Host with br0 (c1 serving on :80, c2 idle) and a remote host on a veth; all torn down."""
    prefix = f"shoalp{uuid.uuid4().hex[:8]}"
    ns = {k: f"{prefix}-{k}" for k in ("h", "r", "c1", "c2")}
    procs: list[subprocess.Popen[str]] = []
    ns["prefix"] = prefix
    try:
        for key in ("h", "r", "c1", "c2"):
            nsmod.create_netns(ns[key])
        in_ns(ns["h"], """
            from agent.network import bridge
            from common.mac import mac_from_ip
            bridge.ensure_bridge("br0", "10.77.0.1/24", 1500)
        """ + "".join(f"""
            bridge.attach_endpoint("br0", {ns[c]!r}, bridge.host_ifname_for({ns[c]!r}), "eth0",
                                   "{ip}/24", mac_from_ip({ip!r}), "10.77.0.1", 1500)
        """ for c, ip in (("c1", C1), ("c2", C2))))
        sh("ip", "link", "add", "ext0", "netns", ns["h"], "type", "veth",
           "peer", "name", "eth0", "netns", ns["r"])
        for key, addr in (("h", HOST_IP), ("r", REMOTE_IP)):
            dev = "ext0" if key == "h" else "eth0"
            sh("ip", "-n", ns[key], "addr", "add", f"{addr}/24", "dev", dev)
            sh("ip", "-n", ns[key], "link", "set", dev, "up")
        server = subprocess.Popen(["ip", "netns", "exec", ns["c1"], sys.executable, "-c", SERVER],
                                  stdout=subprocess.PIPE, text=True)
        procs.append(server)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        ns["_procs"] = procs  # type: ignore[assignment]
        yield ns
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        for name in nsmod.list_netns(prefix):
            nsmod.delete_netns(name)
        assert nsmod.list_netns(prefix) == []


def test_published_port_reached_from_remote_host(pp: dict[str, str]) -> None:
    assert not ok(pp["r"], HOST_IP)  # nothing published yet
    in_ns(pp["h"], APPLY)
    # The container sees the remote's own address: no masquerade on the way in.
    assert reach(pp["r"], HOST_IP) == f"hello {REMOTE_IP}"


def test_published_port_reached_from_host_itself(pp: dict[str, str]) -> None:
    in_ns(pp["h"], APPLY)
    assert ok(pp["h"], HOST_IP)
    assert ok(pp["h"], "127.0.0.1")


def test_published_port_hairpin_from_other_container(pp: dict[str, str]) -> None:
    in_ns(pp["h"], APPLY)
    assert ok(pp["c2"], HOST_IP)


def test_published_port_hairpin_to_itself_needs_hairpin_mode(pp: dict[str, str]) -> None:
    in_ns(pp["h"], APPLY)
    # br_netfilter sends the DNATed packet back out the port it came in on: like Docker without
    # userland proxy, the endpoint's bridge port needs hairpin mode (bridge.attach_endpoint's job).
    veth = in_ns(pp["h"], f"""
        import json
        from agent.network import bridge
        print(json.dumps(bridge.host_ifname_for({pp['c1']!r})))
    """)
    sh("ip", "-n", pp["h"], "link", "set", "dev", veth, "type", "bridge_slave", "hairpin", "on")
    assert ok(pp["c1"], HOST_IP)


def test_docker_user_rule_blocks_remote_only(pp: dict[str, str]) -> None:
    in_ns(pp["h"], APPLY)
    sh("ip", "netns", "exec", pp["h"], "iptables", "-A", "DOCKER-USER", "-s", REMOTE_IP, "-j", "DROP")
    in_ns(pp["h"], APPLY)
    assert reach(pp["r"], HOST_IP).startswith("error")
    assert ok(pp["h"], HOST_IP)
    assert ok(pp["c2"], HOST_IP)
    assert [ln for ln in rules_of(iptables_save(pp["h"])) if ln.startswith("-A DOCKER-USER")] == [
        f"-A DOCKER-USER -s {REMOTE_IP}/32 -j DROP"]


def test_loopback_published_port_only_on_loopback_and_guarded(pp: dict[str, str]) -> None:
    in_ns(pp["h"], APPLY.replace("'tcp', '', 8080", "'tcp', '127.0.0.1', 8080"))
    assert ok(pp["h"], "127.0.0.1")
    assert not ok(pp["h"], HOST_IP)
    assert not ok(pp["r"], HOST_IP)
    save = sh("ip", "netns", "exec", pp["h"], "iptables-save", "-t", "raw").stdout
    # In the container's raw slot chain (agent.network.firewall.Slots), jumped to from PREROUTING.
    assert "-A PREROUTING -j SHOAL-LOOPBACK-0" in save
    assert "-A SHOAL-LOOPBACK-0 -d 127.0.0.1/32 ! -i lo -p tcp -m tcp --dport 8080 -j DROP" in save


def test_rules_in_place_true_after_apply_false_after_flush(pp: dict[str, str]) -> None:
    check = f"""
        import json
        from agent.network.firewall import BridgeNet, PublishedPort, rules_in_place
        print(json.dumps(rules_in_place({NETS}, {PORTS})))
    """
    assert in_ns(pp["h"], check) is False
    in_ns(pp["h"], APPLY)
    assert in_ns(pp["h"], check) is True
    sh("ip", "netns", "exec", pp["h"], "iptables", "-t", "nat", "-F")
    assert in_ns(pp["h"], check) is False


WATCH = f"""
    import asyncio
    from agent.network.firewall import BridgeNet, PublishedPort, apply_rules, rules_in_place
    from agent.network.firewall_watch import FirewallWatch

    async def main():
        watch = FirewallWatch(lambda: apply_rules({NETS}, (), {PORTS}),
                              lambda: rules_in_place({NETS}, {PORTS}), interval=0.2)
        watch.start()
        print("watching", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())
"""


def test_watch_restores_rules_after_flushes_without_duplicates(pp: dict[str, str]) -> None:
    in_ns(pp["h"], APPLY)
    sh("ip", "netns", "exec", pp["h"], "iptables", "-A", "DOCKER-USER", "-s", "10.55.0.0/24", "-j", "DROP")
    before = rules_of(iptables_save(pp["h"]))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    watch = subprocess.Popen(["ip", "netns", "exec", pp["h"], sys.executable, "-c",
                              textwrap.dedent(WATCH)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert watch.stdout is not None and watch.stdout.readline().strip() == "watching"
        sh("ip", "netns", "exec", pp["h"], "iptables", "-F")
        sh("ip", "netns", "exec", pp["h"], "iptables", "-t", "nat", "-F")
        wait_for(lambda: ok(pp["r"], HOST_IP), timeout=20, what="remote reaches the port again")
        wait_for(lambda: rules_of(iptables_save(pp["h"])) == [
            ln for ln in before if not ln.startswith("-A DOCKER-USER")], timeout=10,
            what="rules restored exactly once, DOCKER-USER flushed by the user's own -F")
    finally:
        os.kill(watch.pid, signal.SIGTERM)
        watch.wait(timeout=10)
    save = rules_of(iptables_save(pp["h"]))
    rules = [ln for ln in save if ln.startswith("-A ")]
    assert len(rules) == len(set(rules))


def test_host_port_in_use_sees_a_foreign_listener(pp: dict[str, str]) -> None:
    code = """
        import json, socket
        from agent.network.ports import host_port_in_use
        before = host_port_in_use("tcp", "", 8081)
        s = socket.socket(); s.bind(("127.0.0.1", 8081)); s.listen()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 5353))
        print(json.dumps([before, host_port_in_use("tcp", "", 8081),
                          host_port_in_use("tcp", "127.0.0.1", 8081),
                          host_port_in_use("tcp", "10.99.0.1", 8082),
                          host_port_in_use("udp", "", 5353), host_port_in_use("tcp", "", 5353)]))
    """
    assert in_ns(pp["h"], code) == [False, True, True, False, True, False]
