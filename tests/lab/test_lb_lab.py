"""VIP load balancing, service DNS and the routing mesh on real namespaces (agent.network.lb, lbdns, mesh).

Two lab hosts (fake daemons: only their namespaces and the lab switch are used). The overlay
network and the ingress network are stand-ins: a bridge in a namespace of its own each, which
the tasks and sandboxes of both hosts join by veth (the overlay driver's VXLAN is not used
here). Backends answer every line with "<name> <client address>".
"""
from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address as IP

import pytest

from agent.network import lbdns
from agent.network.dns import NameTable
from agent.network.dnsserver import EmbeddedDns
from agent.network.lb import ServiceLoadBalancer
from agent.network.firewall import BridgeNet
from agent.network.firewall_live import Firewall
from agent.network.mesh import (BridgePort, FirewallIngress, HostIngress, IngressSandbox, RoutingMesh,
                                make_ingress_sandbox, remove_ingress_sandbox)
from agent.network.nsthread import entered
from agent.network.service_binding import Backend, ServiceBinding
from shoal.lab import Lab, down
from tests.lab import lbtopo
from tests.lab.conftest import FAKE_DAEMON, unique_lab_name
from tests.lab.helpers import wait_until

VIP = "10.0.9.2"
NET = "net1"
INGRESS = "ingress1"
PORT = 7000


@dataclass
class Topo:
    lab: Lab
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ns(self, suffix: str) -> str:
        return f"shoal-{self.lab.name}-{suffix}"


@pytest.fixture(scope="module")
def topo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topo]:
    """h1, h2; overlay stand-in 10.0.9.0/24 with client c1 (h1), backends b1 (h1), b2 (h2), b3
    (h2); ingress stand-in 10.255.0.0/16 with each host's ingress sandbox and b1, b2."""
    script = tmp_path_factory.mktemp("fake") / "fake_daemon.py"
    script.write_text(FAKE_DAEMON)
    mp = pytest.MonkeyPatch()
    mp.setenv("SHOAL_LAB_DAEMON_CMD", f"{sys.executable} {script}")
    name = unique_lab_name()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        lab = Lab.up(name, 2)
        t = Topo(lab, procs)
        ovl, ing = t.ns("ovl"), t.ns("ing")
        lbtopo.make_switch(ovl)
        lbtopo.make_switch(ing)
        lbtopo.plug(ovl, t.ns("h1-c1"), "eth0", "10.0.9.10/24")
        for name_, host, last, ingress_last in (("b1", "h1", 5, 5), ("b2", "h2", 6, 6), ("b3", "h2", 7, None)):
            lbtopo.plug(ovl, t.ns(f"{host}-{name_}"), "eth0", f"10.0.9.{last}/24")
            if ingress_last:
                lbtopo.plug(ing, t.ns(f"{host}-{name_}"), "eth1", f"10.255.0.{ingress_last}/16")
            lbtopo.start_server(t.ns(f"{host}-{name_}"), name_, PORT, t.procs)
        for host, last in (("h1", 2), ("h2", 3)):
            lbtopo.bridge_in(lab.netns(host), "gwb", "172.18.0.1/16")
            make_ingress_sandbox(t.ns(f"{host}-isb"),
                                 BridgePort("br0", f"isb{host}", "eth0", f"10.255.0.{last}/16", bridge_netns=ing),
                                 BridgePort("gwb", "isbgw", "eth1", "172.18.0.2/16", bridge_netns=lab.netns(host),
                                            gateway="172.18.0.1"))
        for host, name_, last in (("h1", "b1", 5), ("h2", "b2", 6), ("h2", "b3", 7)):
            wait_until(lbtopo.reachable(t.ns("h1-c1"), f"10.0.9.{last}", PORT), timeout=15)
        yield t
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        down(name)  # every namespace above is shoal-<lab>-...: removed with the lab
        mp.undo()


def _web(*backends: tuple[str, str], vip: str | None = VIP, ports: tuple[tuple[int, int, str], ...] = (),
         network: str = NET) -> ServiceBinding:
    return ServiceBinding("svc-web", "web", network, IP(vip) if vip else None,
                          tuple(Backend(f"task-{n}", IP(a), f"web.{i + 1}.task-{n}") for i, (n, a) in enumerate(backends)),
                          aliases=("front",), ingress_ports=ports)


B1, B2, B3 = ("b1", "10.0.9.5"), ("b2", "10.0.9.6"), ("b3", "10.0.9.7")


@pytest.fixture
def slb(topo: Topo) -> Iterator[ServiceLoadBalancer]:
    balancer = ServiceLoadBalancer(dns=NameTable())
    balancer.attach("c1", lbtopo.NETNS / topo.ns("h1-c1"), [NET])
    yield balancer
    balancer.close()


def test_vip_spreads_new_connections_over_every_backend(topo: Topo, slb: ServiceLoadBalancer) -> None:
    slb.update(_web(B1, B2))
    seen = lbtopo.answers(topo.ns("h1-c1"), VIP, PORT, 40)
    assert set(seen) == {"b1", "b2"}


def test_backend_sees_the_client_address(topo: Topo, slb: ServiceLoadBalancer) -> None:
    slb.update(_web(B1))
    assert lbtopo.ask(topo.ns("h1-c1"), VIP, PORT) == "b1 10.0.9.10"


def test_busybox_wget_through_the_vip(topo: Topo, slb: ServiceLoadBalancer) -> None:
    slb.update(_web(B2))
    out = lbtopo.in_ns(topo.ns("h1-c1"), "busybox", "wget", "-q", "-O", "-", f"http://{VIP}:{PORT}/")
    assert out.stdout == "b2 10.0.9.10\n"


def test_removed_backend_never_answers_again(topo: Topo, slb: ServiceLoadBalancer) -> None:
    slb.update(_web(B1, B2, B3))
    slb.update(_web(B1, B3))
    seen = lbtopo.answers(topo.ns("h1-c1"), VIP, PORT, 40)
    assert set(seen) == {"b1", "b3"}


def test_idle_connection_survives_a_change_and_is_kept_longer_than_ipvs(topo: Topo, slb: ServiceLoadBalancer) -> None:
    slb.update(_web(B1))
    with lbtopo.ns_socket(topo.ns("h1-c1")) as s:
        s.settimeout(3)
        s.connect((VIP, PORT))
        reader = s.makefile()
        s.sendall(b"first\n")
        assert reader.readline().strip() == "b1 10.0.9.10"
        slb.update(_web(B2, B3))  # b1 leaves the rotation; this connection stays on it
        assert set(lbtopo.answers(topo.ns("h1-c1"), VIP, PORT, 10)) <= {"b2", "b3"}
        entry = lbtopo.in_ns(topo.ns("h1-c1"), "conntrack", "-L", "-p", "tcp", "--orig-dst", VIP,
                             "--orig-port-src", str(s.getsockname()[1])).stdout.split()
        s.sendall(b"second\n")
        assert reader.readline().strip() == "b1 10.0.9.10"
    # conntrack keeps an established connection for nf_conntrack_tcp_timeout_established (5 days
    # by default), where IPVS would drop it after 900 s idle.
    assert entry[3:6] == ["ESTABLISHED", "src=10.0.9.10", f"dst={VIP}"]
    assert "src=10.0.9.5" in entry  # the reply direction: b1 answers
    assert int(entry[2]) > 900


def test_vip_without_backends_refuses_at_once(topo: Topo, slb: ServiceLoadBalancer) -> None:
    slb.update(_web())
    with pytest.raises(ConnectionRefusedError):
        lbtopo.ask(topo.ns("h1-c1"), VIP, PORT, timeout=2)


def test_vip_does_not_answer_ping_as_with_docker(topo: Topo, slb: ServiceLoadBalancer) -> None:
    slb.update(_web(B1))
    result = lbtopo.in_ns(topo.ns("h1-c1"), "ping", "-c", "1", "-W", "1", VIP, check=False)
    assert result.returncode == 1


def test_table_is_written_again_after_a_flush_and_others_tables_are_left(topo: Topo, slb: ServiceLoadBalancer) -> None:
    ns = topo.ns("h1-c1")
    lbtopo.in_ns(ns, "nft", "add table ip user_t")
    try:
        slb.update(_web(B2))
        assert slb.reassert() == []
        lbtopo.in_ns(ns, "nft", "delete table ip shoal_lb")
        assert slb.reassert() == ["c1"]
        assert lbtopo.ask(ns, VIP, PORT) == "b2 10.0.9.10"
        slb.detach("c1")
        tables = lbtopo.in_ns(ns, "nft", "list tables").stdout.split("\n")
        assert tables == ["table ip user_t", ""]
    finally:
        lbtopo.in_ns(ns, "nft", "delete table ip user_t")


def test_sandbox_gets_no_table_until_a_vip_concerns_it(topo: Topo, slb: ServiceLoadBalancer) -> None:
    slb.update(_web(B1, vip=None))  # dnsrr: names only
    assert lbtopo.in_ns(topo.ns("h1-c1"), "nft", "list tables").stdout == ""
    slb.update(_web(B1))
    assert lbtopo.in_ns(topo.ns("h1-c1"), "nft", "list tables").stdout == "table ip shoal_lb\n"


def _dig(ns: str, *args: str) -> Callable[[], asyncio.Future[str]]:
    async def run() -> str:
        proc = await asyncio.create_subprocess_exec(
            "nsenter", f"--net={lbtopo.NETNS / ns}", "dig", "+short", "+tries=1", "+time=2", "@127.0.0.11", *args,
            stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        return out.decode()
    return run  # type: ignore[return-value]


def test_dns_answers_service_tasks_and_aliases_and_follows_the_backends(topo: Topo) -> None:
    ns = topo.ns("h1-c1")

    async def scenario() -> list[str]:
        table = NameTable()
        table.set_endpoint("c1", NET, "mynet", "10.0.9.10", ["client"])
        slb = ServiceLoadBalancer(dns=table)
        server = EmbeddedDns(table, [])
        try:
            await server.add_container("c1", str(lbtopo.NETNS / ns))
            slb.update(_web(B1, B2))
            got = [await _dig(ns, "web")(), await _dig(ns, "tasks.web")(), await _dig(ns, "front.mynet")(),
                   await _dig(ns, "-x", "10.0.9.6")()]
            slb.update(_web(B2))
            got.append(await _dig(ns, "tasks.web")())
            slb.remove("svc-web", NET)
            got.append(await _dig(ns, "tasks.web")())
            return got
        finally:
            await server.close()
            slb.close()

    got = asyncio.run(scenario())
    assert got[0] == "10.0.9.2\n"
    assert sorted(got[1].split()) == ["10.0.9.5", "10.0.9.6"]
    assert got[2] == "10.0.9.2\n"
    assert got[3] == "web.2.task-b2.mynet.\n"
    assert got[4] == "10.0.9.6\n"
    assert got[5] == ""  # forwarded (no upstream here): no stale answer


@pytest.fixture
def meshes(topo: Topo) -> Iterator[dict[str, RoutingMesh]]:
    made = {}
    try:
        for host in ("h1", "h2"):
            made[host] = RoutingMesh(INGRESS, IngressSandbox(lbtopo.NETNS / topo.ns(f"{host}-isb"), "eth0"),
                                     HostIngress("172.18.0.2", "gwb", lbtopo.NETNS / topo.lab.netns(host)))
        yield made
    finally:
        for mesh in made.values():
            mesh.close()


def _mesh_web(*backends: tuple[str, str]) -> ServiceBinding:
    return _web(*backends, ports=((8080, PORT, "tcp"),), network=INGRESS)


def test_published_port_answers_on_a_node_without_a_task(topo: Topo, meshes: dict[str, RoutingMesh]) -> None:
    for mesh in meshes.values():
        mesh.update(_mesh_web(("b1", "10.255.0.5")))  # the only task runs on h1
    h1 = topo.lab.netns("h1")
    # From h1 to h2's published port: h2's ingress sandbox sends it over the ingress network to
    # b1; b1 sees h2's ingress sandbox's ingress address as its client.
    assert lbtopo.ask(h1, topo.lab.address("h2"), 8080) == "b1 10.255.0.3"
    assert lbtopo.ask(topo.lab.netns("h2"), topo.lab.address("h1"), 8080) == "b1 10.255.0.2"


def test_published_port_spreads_over_tasks_on_every_node(topo: Topo, meshes: dict[str, RoutingMesh]) -> None:
    for mesh in meshes.values():
        mesh.update(_mesh_web(("b1", "10.255.0.5"), ("b2", "10.255.0.6")))
    seen = lbtopo.answers(topo.lab.netns("h1"), topo.lab.address("h2"), 8080, 30)
    assert set(seen) == {"b1", "b2"}


def test_published_port_from_the_node_itself(topo: Topo, meshes: dict[str, RoutingMesh]) -> None:
    meshes["h1"].update(_mesh_web(("b2", "10.255.0.6")))
    assert lbtopo.ask(topo.lab.netns("h1"), topo.lab.address("h1"), 8080) == "b2 10.255.0.2"


def test_mesh_rules_come_back_after_iptables_flush(topo: Topo, meshes: dict[str, RoutingMesh]) -> None:
    mesh = meshes["h2"]
    mesh.update(_mesh_web(("b1", "10.255.0.5")))
    lbtopo.in_ns(topo.lab.netns("h2"), "iptables", "-t", "nat", "-F")
    assert mesh.reassert() == ["host"]
    assert lbtopo.ask(topo.lab.netns("h1"), topo.lab.address("h2"), 8080) == "b1 10.255.0.3"


def test_service_removed_closes_the_published_port(topo: Topo, meshes: dict[str, RoutingMesh]) -> None:
    mesh = meshes["h2"]
    mesh.update(_mesh_web(("b1", "10.255.0.5")))
    mesh.remove("svc-web")
    with pytest.raises((ConnectionRefusedError, socket.timeout)):
        lbtopo.ask(topo.lab.netns("h1"), topo.lab.address("h2"), 8080, timeout=2)


def test_forward_jump_goes_back_before_shoals_bridge_drop(topo: Topo, meshes: dict[str, RoutingMesh]) -> None:
    h2 = topo.lab.netns("h2")
    # What shoal's firewall keeps in FORWARD: DOCKER-USER first, then DOCKER-FORWARD, which drops
    # traffic entering a bridge from outside unless a published port accepted it first.
    setup = [["-N", "DOCKER-USER"], ["-N", "DOCKER-FORWARD"], ["-A", "DOCKER-FORWARD", "-o", "gwb", "-j", "DROP"],
             ["-I", "FORWARD", "1", "-j", "DOCKER-FORWARD"], ["-I", "FORWARD", "1", "-j", "DOCKER-USER"]]
    try:
        for args in setup:
            lbtopo.in_ns(h2, "iptables", "-w", *args)
        mesh = meshes["h2"]
        mesh.update(_mesh_web(("b1", "10.255.0.5")))
        assert lbtopo.ask(topo.lab.netns("h1"), topo.lab.address("h2"), 8080) == "b1 10.255.0.3"
        # A full firewall apply re-inserts its own jumps at the head, ahead of ours.
        for jump in ("DOCKER-FORWARD", "DOCKER-USER"):
            lbtopo.in_ns(h2, "iptables", "-w", "-D", "FORWARD", "-j", jump)
            lbtopo.in_ns(h2, "iptables", "-w", "-I", "FORWARD", "1", "-j", jump)
        with pytest.raises(socket.timeout):
            lbtopo.ask(topo.lab.netns("h1"), topo.lab.address("h2"), 8080, timeout=1)
        assert mesh.reassert() == ["host"]
        forward = lbtopo.in_ns(h2, "iptables", "-w", "-S", "FORWARD").stdout.splitlines()
        assert forward == ["-P FORWARD ACCEPT", "-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-INGRESS",
                           "-A FORWARD -j DOCKER-FORWARD"]
        assert lbtopo.ask(topo.lab.netns("h1"), topo.lab.address("h2"), 8080) == "b1 10.255.0.3"
    finally:
        for jump in ("DOCKER-FORWARD", "DOCKER-USER"):
            lbtopo.in_ns(h2, "iptables", "-w", "-D", "FORWARD", "-j", jump, check=False)
            lbtopo.in_ns(h2, "iptables", "-w", "-F", jump, check=False)
            lbtopo.in_ns(h2, "iptables", "-w", "-X", jump, check=False)


def test_mesh_close_leaves_nothing_of_ours_on_the_host(topo: Topo) -> None:
    h2 = topo.lab.netns("h2")
    before = {t: lbtopo.in_ns(h2, "iptables-save", "-t", t).stdout for t in ("nat", "filter")}
    mesh = RoutingMesh(INGRESS, IngressSandbox(lbtopo.NETNS / topo.ns("h2-isb"), "eth0"),
                       HostIngress("172.18.0.2", "gwb", lbtopo.NETNS / h2))
    mesh.update(_mesh_web(("b1", "10.255.0.5")))
    mesh.close()
    after = {t: lbtopo.in_ns(h2, "iptables-save", "-t", t).stdout for t in ("nat", "filter")}
    assert [_rules(after[t]) for t in after] == [_rules(before[t]) for t in before]
    assert lbtopo.in_ns(topo.ns("h2-isb"), "nft", "list tables").stdout == ""


def _rules(text: str) -> list[str]:
    return [line.split(" [")[0] for line in text.splitlines() if line and not line.startswith("#")]


def test_udp_flow_leaves_a_removed_backend(topo: Topo, slb: ServiceLoadBalancer) -> None:
    slb.update(_web(B1))
    with lbtopo.ns_socket(topo.ns("h1-c1"), socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.connect((VIP, PORT))  # one source port throughout: one conntrack flow
        s.send(b"one")
        assert s.recv(100) == b"b1 10.0.9.10\n"
        slb.update(_web(B2))  # b1 is still alive: only forgetting the flow moves it

        # The flow is forgotten by a worker after update returns: a reply of b1's still on its way when
        # conntrack drops the entry comes back un-NATed, from b1's own address, and the connected socket
        # discards it. That is UDP's ordinary loss, which a client meets by sending again, as this one does.
        s.settimeout(0.5)

        def answered_by_b2() -> bool:
            s.send(b"again")
            try:
                return s.recv(100) == b"b2 10.0.9.10\n"
            except TimeoutError:
                return False
        wait_until(answered_by_b2, timeout=5)
        s.settimeout(3)
        s.send(b"last")
        assert s.recv(100) == b"b2 10.0.9.10\n"


def test_ingress_sandbox_made_twice_is_the_same_and_removed_leaves_no_veth(topo: Topo) -> None:
    ing, h1 = topo.ns("ing"), topo.lab.netns("h1")
    legs = (BridgePort("br0", "isbx", "eth0", "10.255.0.99/16", bridge_netns=ing),
            BridgePort("gwb", "isbxgw", "eth1", "172.18.0.99/16", bridge_netns=h1, gateway="172.18.0.1"))
    name = topo.ns("h1-isbx")
    try:
        make_ingress_sandbox(name, *legs)
        make_ingress_sandbox(name, *legs)
        addresses = [w.split("@")[0] for w in lbtopo.ip("-br", "-4", "addr", netns=name).stdout.split()]
        assert addresses == ["lo", "UNKNOWN", "127.0.0.1/8", "eth0", "UP", "10.255.0.99/16",
                             "eth1", "UP", "172.18.0.99/16"]
        assert "default via 172.18.0.1 dev eth1" in lbtopo.ip("route", netns=name).stdout
    finally:
        remove_ingress_sandbox(name)
    assert not (lbtopo.NETNS / name).exists()
    assert lbtopo.ip("link", "show", "isbx", netns=ing, check=False).returncode != 0
    assert lbtopo.ip("link", "show", "isbxgw", netns=h1, check=False).returncode != 0


def test_table_left_by_an_earlier_run_serves_until_the_first_resync_drops_it(topo: Topo) -> None:
    ns = topo.ns("h1-c1")
    earlier = ServiceLoadBalancer()
    earlier.attach("c1", lbtopo.NETNS / ns, [NET])
    earlier.update(_web(B1))  # then the daemon dies: its table stays in the namespace
    assert lbtopo.in_ns(ns, "nft", "list tables").stdout == "table ip shoal_lb\n"
    earlier.sandboxes["c1"].lb.nft.close()  # type: ignore[union-attr]
    restarted = ServiceLoadBalancer()
    restarted.attach("c1", lbtopo.NETNS / ns, [NET], adopted=True)
    assert lbtopo.ask(ns, VIP, PORT) == "b1 10.0.9.10"  # live restore: the VIP still answers
    restarted.set_bindings([])  # the first full resync: the service is gone meanwhile
    assert lbtopo.in_ns(ns, "nft", "list tables").stdout == ""


def test_published_port_through_shoals_own_firewall_keeps_its_layout(topo: Topo) -> None:
    """The node's firewall (DOCKER-USER, DOCKER-FORWARD, the gateway bridge's DROP) manages the
    host side: the port is the ingress sandbox's published port, the firewall's check stays true."""
    h2 = lbtopo.NETNS / topo.lab.netns("h2")
    firewall = Firewall()
    with entered(h2):
        firewall.apply_all([BridgeNet("gwb", "172.18.0.0/16", icc=False)])
    mesh = RoutingMesh(INGRESS, IngressSandbox(lbtopo.NETNS / topo.ns("h2-isb"), "eth0"),
                       FirewallIngress(firewall, "172.18.0.2", "gwb", h2))
    try:
        mesh.update(_mesh_web(("b1", "10.255.0.5"), ("b2", "10.255.0.6")))
        seen = lbtopo.answers(topo.lab.netns("h1"), topo.lab.address("h2"), 8080, 20)
        assert set(seen) == {"b1", "b2"}
        with entered(h2):
            assert firewall.in_place(deep=True)
        mesh.remove("svc-web")
        with pytest.raises(ConnectionRefusedError):
            lbtopo.ask(topo.lab.netns("h1"), topo.lab.address("h2"), 8080, timeout=2)
    finally:
        mesh.sandbox.remove()
        for table in ("filter", "nat", "raw"):  # h2 is the test's own namespace: back to empty
            for flag in ("-F", "-X"):
                lbtopo.in_ns(topo.lab.netns("h2"), "iptables", "-w", "-t", table, flag)


def test_published_udp_port_answers_on_a_node_without_a_task(topo: Topo, meshes: dict[str, RoutingMesh]) -> None:
    meshes["h2"].update(_web(("b1", "10.255.0.5"), ports=((8081, PORT, "udp"),), network=INGRESS))
    with lbtopo.ns_socket(topo.lab.netns("h1"), socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(b"hello", (topo.lab.address("h2"), 8081))
        assert s.recvfrom(100)[0] == b"b1 10.255.0.3\n"


def test_ingress_sandbox_table_comes_back_after_nft_flush(topo: Topo, meshes: dict[str, RoutingMesh]) -> None:
    mesh = meshes["h2"]
    mesh.update(_mesh_web(("b2", "10.255.0.6")))
    assert mesh.in_place() and mesh.reassert() == []
    lbtopo.in_ns(topo.ns("h2-isb"), "nft", "flush ruleset")
    assert not mesh.in_place()
    assert mesh.reassert() == ["sandbox"]
    assert lbtopo.ask(topo.lab.netns("h1"), topo.lab.address("h2"), 8080) == "b2 10.255.0.3"
