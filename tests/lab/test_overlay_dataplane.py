"""The VXLAN data plane (issue 11 item 2) on a three-host lab, driven through vxlan.dataplane as the
overlay driver and gossip drive it: endpoints in plain namespaces on h1 and h2 reach each other over
VXLAN, a capture on the lab switch sees only encapsulated traffic with the network's VNI and the
data path address as outer source, the MTU follows the underlay, h3 (no endpoint) has nothing, and
namespaces and devices come and go with the endpoints, also across a "crash".

The lab's daemons are the fake one (tests/lab/conftest.py): nothing here needs a shoal daemon.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address as A, IPv4Interface as I, IPv4Network as N
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, UDP
from scapy.layers.l2 import Ether
from scapy.layers.vxlan import VXLAN

from shoal.lab import Lab
from tests.lab.conftest import FAKE_DAEMON
from tests.lab.helpers import running_lab
from vxlan import kernel, ns, plan
from vxlan.dataplane import LocalEndpoint, OverlayDataPlane
from vxlan.types import OverlayPeer, OverlaySpec

pytestmark = pytest.mark.lab

NET_ID = "0b1e5ca1ab1e" + "0" * 52
VNI = 4097
SUBNET = N("10.0.9.0/24")
GATEWAY = I("10.0.9.1/24")
DATA_H1 = A("192.168.200.111")  # a second address of h1's eth0: the kernel's own choice would be .11
DATA_H2 = A("192.168.200.12")
EP1 = I("10.0.9.2/24")
EP2 = I("10.0.9.3/24")
MAC1 = "02:42:0a:00:09:02"
MAC2 = "02:42:0a:00:09:03"
ETH_P_ALL = 0x0003


def spec(data_addr: A, network_id: str = NET_ID, vni: int = VNI) -> OverlaySpec:
    return OverlaySpec(network_id=network_id, name="ov", vni=vni, subnet=SUBNET, gateway=GATEWAY, data_addr=data_addr)


class Overlay:
    """The lab, one data plane per host and the "containers" (plain namespaces) made for them."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.planes: dict[str, OverlayDataPlane] = {}
        self.sandboxes: list[str] = []

    def prefix(self, host: str) -> str:
        return f"{self.lab.netns(host)}-"

    def plane(self, host: str, prefix: str = "") -> OverlayDataPlane:
        key = f"{host}|{prefix}"
        if key not in self.planes:
            self.planes[key] = OverlayDataPlane(prefix or self.prefix(host), ns.path_of(self.lab.netns(host)))
        return self.planes[key]

    def sandbox(self, host: str, name: str) -> Path:
        full = f"{self.prefix(host)}{name}"
        self.sandboxes.append(full)
        return ns.create(full)

    def exec_in(self, sandbox: str, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", sandbox, *argv], capture_output=True, text=True, timeout=30)

    def close(self) -> None:
        for plane in self.planes.values():
            plane.close()
        for name in self.sandboxes:
            ns.delete(name)


@pytest.fixture(scope="module")
def overlay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Overlay]:
    script = tmp_path_factory.mktemp("fake") / "fake_daemon.py"
    script.write_text(FAKE_DAEMON)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SHOAL_LAB_DAEMON_CMD", f"{sys.executable} {script}")
        with running_lab(hosts=3) as lab:
            lab.exec("h1", ["ip", "addr", "add", f"{DATA_H1}/24", "dev", "eth0"])
            world = Overlay(lab)
            try:
                h1, h2 = world.plane("h1"), world.plane("h2")
                h1.join(spec(DATA_H1), LocalEndpoint("ep1", world.sandbox("h1", "c1"), "eth0", EP1, MAC1))
                h2.join(spec(DATA_H2), LocalEndpoint("ep2", world.sandbox("h2", "c2"), "eth0", EP2, MAC2))
                # What gossip would report: each side the other's endpoint, h3 both (it has none).
                h1.add_peers(NET_ID, [OverlayPeer(EP2.ip, MAC2, DATA_H2)])
                h2.add_peers(NET_ID, [OverlayPeer(EP1.ip, MAC1, DATA_H1)])
                world.plane("h3").add_peers(NET_ID, [OverlayPeer(EP1.ip, MAC1, DATA_H1), OverlayPeer(EP2.ip, MAC2, DATA_H2)])
                yield world
            finally:
                world.close()


def c1(world: Overlay) -> str:
    return f"{world.prefix('h1')}c1"


def capture_switch(world: Overlay, action: Callable[[], object]) -> list[Ether]:
    """Every frame crossing the lab switch's ports while `action` runs (an AF_PACKET socket opened
    inside the switch namespace keeps listening there; unbound, it sees every port of the switch,
    where br0 itself would only see what is flooded or addressed to it)."""
    with ns.entered(ns.path_of(f"shoal-{world.lab.name}-sw")):
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        action()
        frames = []
        sock.settimeout(0.3)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                frames.append(Ether(sock.recv(65535)))
            except TimeoutError:
                break
        return frames
    finally:
        sock.close()


@pytest.fixture(scope="module")
def ping_capture(overlay: Overlay) -> list[Ether]:
    def ping() -> None:
        result = overlay.exec_in(c1(overlay), "ping", "-c3", "-i0.2", "-W2", str(EP2.ip))
        assert result.returncode == 0, result.stdout + result.stderr

    return capture_switch(overlay, ping)


def vxlan_frames(frames: list[Ether]) -> list[Ether]:
    return [f for f in frames if f.haslayer(VXLAN)]


def test_endpoints_on_two_hosts_ping_each_other_over_vxlan(overlay):
    result = overlay.exec_in(c1(overlay), "ping", "-c1", "-W2", str(EP2.ip))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 received" in result.stdout


def test_the_switch_sees_udp_4789_with_the_vni_around_the_inner_ping(ping_capture):
    inner = [(f[VXLAN].vni, f[UDP].dport, f[VXLAN][IP].src, f[VXLAN][IP].dst)
             for f in vxlan_frames(ping_capture) if f[VXLAN].haslayer(ICMP)]
    assert (VNI, 4789, str(EP1.ip), str(EP2.ip)) in inner
    assert (VNI, 4789, str(EP2.ip), str(EP1.ip)) in inner


def test_the_switch_never_sees_an_overlay_packet_unencapsulated(ping_capture):
    assert vxlan_frames(ping_capture)  # the capture did see the traffic
    bare = [f.summary() for f in ping_capture
            if f.haslayer(IP) and not f.haslayer(VXLAN) and (A(f[IP].src) in SUBNET or A(f[IP].dst) in SUBNET)]
    assert bare == []


def test_the_outer_source_address_is_the_data_path_address(ping_capture):
    from_h1 = {f[IP].src for f in vxlan_frames(ping_capture) if f[VXLAN][IP].src == str(EP1.ip)}
    assert from_h1 == {str(DATA_H1)}


def test_a_df_ping_of_1422_bytes_passes_on_a_1500_byte_underlay(overlay):
    result = overlay.exec_in(c1(overlay), "ping", "-M", "do", "-s", "1422", "-c1", "-W2", str(EP2.ip))
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_df_ping_of_1423_bytes_fails_at_once_reporting_mtu_1450(overlay):
    started = time.monotonic()
    result = overlay.exec_in(c1(overlay), "ping", "-M", "do", "-s", "1423", "-c1", "-W5", str(EP2.ip))
    assert result.returncode == 1
    assert "message too long, mtu=1450" in result.stderr
    assert time.monotonic() - started < 4  # refused locally, not a black hole waiting for -W5


def test_a_host_without_an_endpoint_has_no_namespace_or_device(overlay):
    assert ns.listed(f"{overlay.prefix('h3')}ov-") == []
    assert kernel.vxlan_links(ns.path_of(overlay.lab.netns("h3"))) == {}
    assert len(overlay.plane("h3").peers[NET_ID]) == 2  # what gossip said is kept for a later endpoint


def test_re_adding_the_same_peers_makes_no_kernel_request(overlay):
    h1 = overlay.plane("h1")
    assert h1.add_peers(NET_ID, [OverlayPeer(EP2.ip, MAC2, DATA_H2)]) == 0
    assert h1.remove_peers(NET_ID, [OverlayPeer(EP2.ip, MAC2, DATA_H2)]) == 0  # the second reference goes
    assert h1.sync_peers(NET_ID, [OverlayPeer(EP2.ip, MAC2, DATA_H2)]) == 0


def test_replaying_a_batch_into_the_kernel_is_not_an_error(overlay):
    h1 = overlay.plane("h1")
    names = h1.networks[NET_ID].names
    entries = h1.peers[NET_ID].entries()
    assert kernel.apply_peers(names, entries) == 2
    assert kernel.apply_peers(names, entries) == 2
    assert kernel.kernel_peers(names) == ({str(EP2.ip): MAC2}, {MAC2: str(DATA_H2)})


def test_a_removed_peer_is_unreachable_and_comes_back_when_added(overlay):
    h1 = overlay.plane("h1")
    gone = OverlayPeer(EP2.ip, MAC2, DATA_H2)
    h1.sync_peers(NET_ID, [])
    names = h1.networks[NET_ID].names
    try:
        assert kernel.kernel_peers(names) == ({}, {})
        assert overlay.exec_in(c1(overlay), "ping", "-c1", "-W1", str(EP2.ip)).returncode != 0
    finally:
        h1.add_peers(NET_ID, [gone])
    assert overlay.exec_in(c1(overlay), "ping", "-c1", "-W2", str(EP2.ip)).returncode == 0


def test_the_last_endpoint_leaving_removes_the_namespace_and_device(overlay):
    h3 = overlay.plane("h3")
    other = spec(A("192.168.200.13"), network_id="c" * 64, vni=4200)
    h3.join(other, LocalEndpoint("ep-a", overlay.sandbox("h3", "ca"), "eth0", I("10.0.9.20/24"), "02:42:0a:00:09:14"))
    h3.join(other, LocalEndpoint("ep-b", overlay.sandbox("h3", "cb"), "eth0", I("10.0.9.21/24"), "02:42:0a:00:09:15"))
    netns = plan.names(overlay.prefix("h3"), other).netns
    h3.leave(other.network_id, "ep-a")
    assert ns.listed(netns) == [netns]
    h3.leave(other.network_id, "ep-b")
    assert ns.listed(netns) == []
    assert kernel.vxlan_links(ns.path_of(overlay.lab.netns("h3"))) == {}


def test_stale_objects_of_a_previous_run_are_removed_at_start(overlay):
    prefix = f"{overlay.prefix('h3')}old-"
    host = ns.path_of(overlay.lab.netns("h3"))
    stale = spec(A("192.168.200.13"), network_id="d" * 64, vni=4300)
    crashed = OverlayDataPlane(prefix, host)  # a run that dies without cleaning up
    crashed.join(stale, LocalEndpoint("ep-d", overlay.sandbox("h3", "cd"), "eth0", I("10.0.9.30/24"),
                                      "02:42:0a:00:09:1e"))
    half = spec(A("192.168.200.13"), network_id="e" * 64, vni=4301)  # died between create and move
    names = plan.names(prefix, half)
    overlay.lab.exec("h3", ["ip", "link", "add", names.vxlan, "type", "vxlan", "id", "4301", "local", "192.168.200.13",
                            "dstport", "4789", "nolearning"])
    overlay.lab.exec("h3", ["ip", "link", "set", names.vxlan, "alias", names.mark])
    fresh = overlay.plane("h3", prefix)
    assert sorted(fresh.remove_stale()) == sorted([plan.names(prefix, stale).netns, names.vxlan])
    assert ns.listed(f"{prefix}ov-") == []
    fresh.join(stale, LocalEndpoint("ep-d2", overlay.sandbox("h3", "cd2"), "eth0", I("10.0.9.31/24"),
                                    "02:42:0a:00:09:1f"))  # no "file exists": same VNI, same port
    fresh.leave(stale.network_id, "ep-d2")
    assert kernel.vxlan_links(host) == {}


def test_an_unmarked_vxlan_device_of_someone_else_is_left_alone(overlay):
    host = ns.path_of(overlay.lab.netns("h3"))
    overlay.lab.exec("h3", ["ip", "link", "add", "vxother", "type", "vxlan", "id", "9999", "dstport", "4790"])
    try:
        assert overlay.plane("h3").remove_stale() == []
        assert "vxother" in kernel.vxlan_links(host)
    finally:
        overlay.lab.exec("h3", ["ip", "link", "del", "vxother"])


def test_the_overlay_interfaces_have_the_derived_mtu(overlay):
    out = overlay.exec_in(c1(overlay), "ip", "-o", "link", "show", "eth0").stdout
    assert " mtu 1450 " in out
    assert overlay.plane("h1").mtu(NET_ID) == 1450


def test_a_stale_remote_claim_on_a_new_local_endpoints_address_does_not_cut_it_off_from_its_neighbours(overlay):
    h2 = overlay.plane("h2")
    reused = I("10.0.9.30/24")
    mac = "02:42:0a:00:09:1e"
    stale = OverlayPeer(reused.ip, mac, A("192.168.200.13"))  # the address was h3's before: not withdrawn yet
    h2.add_peers(NET_ID, [stale])
    names = h2.networks[NET_ID].names
    h2.join(spec(DATA_H2), LocalEndpoint("ep-reused", overlay.sandbox("h2", "creused"), "eth0", reused, mac))
    try:
        assert str(reused.ip) not in kernel.kernel_peers(names)[0]
        assert overlay.exec_in(f"{overlay.prefix('h2')}c2", "ping", "-c1", "-W2", str(reused.ip)).returncode == 0
    finally:
        h2.leave(NET_ID, "ep-reused")
    # the endpoint gone, the remote claim is the address's only holder again
    assert kernel.kernel_peers(names)[0][str(reused.ip)] == mac
    h2.remove_peers(NET_ID, [stale])
    assert str(reused.ip) not in kernel.kernel_peers(names)[0]
