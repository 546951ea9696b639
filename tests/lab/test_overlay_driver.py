"""The overlay driver behind the network controller and the sandbox (issue 11 items 2 and 3): a
container on an overlay is attached the same way as on a bridge (eth0 in the overlay, its address
from the network's allocation), and when none of its networks gives it a way out it gets a second
interface on docker_gwbridge with the default route there.

Each lab host's network layer (NetworkController + Sandboxes, as the engine builds them) runs in
this process on a thread that entered the host's namespace, so the lab's daemons are the fake one:
the test owns the hosts' bridges and firewall. Until the managers' routes (netalloc) and gossip
(netdb) land, the overlay is created through the controller with its VNI option, as the managers'
record will carry it, and peers are programmed through the driver's program_peers.
"""
from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agent.network.controller import NetworkController, NetworkOptions
from agent.network.drivers.overlay import OPT_VNI, OverlayDriver, enable_overlay
from agent.network.gwbridge import GWBRIDGE
from agent.network.records import EndpointRecord, IPAMConfig
from agent.network.sandbox import Sandboxes, SandboxOptions
from shoal.engine.requests import NetworkCreate
from shoal.lab import Lab
from tests.lab.conftest import FAKE_DAEMON
from tests.lab.helpers import running_lab
from common import netnsmake
from vxlan import ns

pytestmark = pytest.mark.lab

T = TypeVar("T")
SUBNET = "10.0.9.0/24"
VNI = "4097"


class MemoryStore:
    """The controller's record store, in memory (the node's is shoal.engine.state.StateDir)."""

    def __init__(self) -> None:
        self.records: dict[tuple[str, str], dict[str, Any]] = {}

    def save(self, kind: str, object_id: str, data: dict[str, Any]) -> None:
        self.records[(kind, object_id)] = data

    def delete(self, kind: str, object_id: str) -> None:
        self.records.pop((kind, object_id), None)

    def load_records(self, kind: str, parse: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
        return {oid: parse(data) for (k, oid), data in self.records.items() if k == kind}


@dataclass
class Box:
    """A container as the sandbox sees it (shoal.engine.records.ContainerRecord has these fields)."""

    id: str
    name: str
    network_mode: str
    endpoints: dict[str, EndpointRecord] = field(default_factory=dict)
    hostname: str = ""
    domainname: str = ""
    netns: str = ""
    state: str = "running"
    links: list[list[str]] = field(default_factory=list)


class Host:
    """One lab host's network layer, every call made on a thread inside the host's namespace."""

    def __init__(self, lab: Lab, host: str, data_dir: Path) -> None:
        self.lab = lab
        self.name = host
        self.pool = concurrent.futures.ThreadPoolExecutor(1, initializer=self._enter)
        self.prefix = f"{lab.netns(host)}-"
        self.boxes: list[Box] = []
        self.started = 0

        def build() -> tuple[NetworkController, Sandboxes, OverlayDriver]:
            controller = NetworkController(MemoryStore(), NetworkOptions(), daemon_id=f"test{host}")
            controller.restore()
            driver = enable_overlay(controller, lab.address(host), self.prefix)
            return controller, Sandboxes(controller, SandboxOptions(data_dir=data_dir, etc_root=data_dir / "etc",
                                                                    netns_prefix=self.prefix), {}), driver

        self.net, self.sandboxes, self.driver = self.call(build)

    def _enter(self) -> None:
        # For good: the pool's one thread lives in the host's namespace (and so do its children).
        fd = os.open(ns.path_of(self.lab.netns(self.name)), os.O_RDONLY)
        try:
            assert ns._libc.setns(fd, netnsmake.CLONE_NEWNET) == 0, f"setns into {self.lab.netns(self.name)}"
        finally:
            os.close(fd)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        return self.pool.submit(fn, *args).result(timeout=60)

    def network(self, name: str, driver: str, subnet: str, internal: bool = False, **options: str) -> str:
        request = NetworkCreate(name=name, driver=driver, ipam_config=[IPAMConfig(subnet=subnet)], internal=internal,
                                options=options)
        return self.call(self.net.create, request)[0].id

    def start(self, name: str, *network_ids: str) -> Box:
        """A "container" (a namespace of its own, set up by the sandbox as for a runc container)."""
        self.started += 1
        box = Box(id=f"{self.started:02d}{self.name}".ljust(64, "c"), name=name,
                  network_mode=self.net.networks[network_ids[0]].name)
        for index, net_id in enumerate(network_ids):
            box.endpoints[net_id] = EndpointRecord(id=box.id[:32] + f"{index:032x}", network_id=net_id,
                                                   container_id=box.id)
        self.boxes.append(box)
        self.call(self.sandboxes.setup, box)
        return box

    def stop(self, box: Box) -> None:
        self.call(self.sandboxes.teardown, box)
        self.boxes.remove(box)

    def in_box(self, box: Box, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["ip", "netns", "exec", box.netns, *argv], capture_output=True, text=True, timeout=30)

    def close(self) -> None:
        for box in list(self.boxes):
            try:
                self.stop(box)
            except Exception:  # the lab's teardown removes what is left
                pass
        self.pool.shutdown()


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Host]]:
    script = tmp_path_factory.mktemp("fake") / "fake_daemon.py"
    script.write_text(FAKE_DAEMON)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SHOAL_LAB_DAEMON_CMD", f"{sys.executable} {script}")
        with running_lab(hosts=2) as lab:
            made: dict[str, Host] = {}
            try:
                for host in lab.hosts:
                    made[host] = Host(lab, host, tmp_path_factory.mktemp(host))
                yield made
            finally:
                for host in made.values():
                    host.close()


@pytest.fixture(scope="module")
def overlay(hosts: dict[str, Host]) -> dict[str, Any]:
    """The same overlay on both hosts (one record per host, as the managers would hand out), a
    container on each, and each host told the other's endpoint."""
    ids = {name: host.network("ov", "overlay", SUBNET, **{OPT_VNI: VNI}) for name, host in hosts.items()}
    boxes = {"h1": hosts["h1"].start("a1", ids["h1"]), "h2": hosts["h2"].start("a2", ids["h2"])}
    for here, there in (("h1", "h2"), ("h2", "h1")):
        ep = boxes[there].endpoints[ids[there]]
        net = hosts[here].net.networks[ids[here]]
        hosts[here].call(hosts[here].driver.program_peers, net, [(ep.ipv4, ep.mac, hosts[there].lab.address(there))])
    return {"ids": ids, "boxes": boxes}


def test_an_overlay_container_gets_eth0_on_the_overlay_with_its_address_and_mtu(hosts, overlay):
    box = overlay["boxes"]["h1"]
    endpoint = box.endpoints[overlay["ids"]["h1"]]
    out = hosts["h1"].in_box(box, "ip", "-o", "-4", "addr", "show", "eth0").stdout
    assert f"inet {endpoint.ipv4}/24" in out
    assert " mtu 1450 " in hosts["h1"].in_box(box, "ip", "-o", "link", "show", "eth0").stdout
    assert endpoint.gateway == ""  # an overlay gives no way out: no default route through it


def test_containers_on_two_hosts_reach_each_other_over_the_overlay(hosts, overlay):
    other = overlay["boxes"]["h2"].endpoints[overlay["ids"]["h2"]].ipv4
    result = hosts["h1"].in_box(overlay["boxes"]["h1"], "ping", "-c1", "-W2", other)
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_overlay_only_container_gets_eth1_on_docker_gwbridge_with_the_default_route(hosts, overlay):
    h1 = hosts["h1"]
    gw = next(n for n in h1.net.networks.values() if n.name == GWBRIDGE)
    endpoint = overlay["boxes"]["h1"].endpoints[gw.id]
    assert endpoint.gateway_only and endpoint.ifname == "eth1"
    routes = h1.in_box(overlay["boxes"]["h1"], "ip", "-4", "route", "show", "default").stdout
    assert routes.startswith(f"default via {gw.ipam_config[0].gateway} dev eth1 ")


def test_an_overlay_container_reaches_another_lab_host_through_docker_gwbridge(hosts, overlay):
    result = hosts["h1"].in_box(overlay["boxes"]["h1"], "ping", "-c1", "-W2", hosts["h2"].lab.address("h2"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_an_internal_overlay_container_gets_no_way_out(hosts, overlay):
    h2 = hosts["h2"]
    net_id = h2.network("ov-internal", "overlay", "10.0.10.0/24", internal=True, **{OPT_VNI: "4098"})
    box = h2.start("int", net_id)
    try:
        assert list(box.endpoints) == [net_id]
        assert h2.in_box(box, "ip", "-4", "route", "show", "default").stdout == ""
    finally:
        h2.stop(box)
        h2.call(h2.net.remove, net_id, [])


def test_a_container_also_on_a_bridge_network_gets_no_gwbridge_endpoint(hosts, overlay):
    h2 = hosts["h2"]
    bridge_id = h2.network("plain", "bridge", "172.30.0.0/24")
    box = h2.start("both", overlay["ids"]["h2"], bridge_id)
    try:
        gw = next(n for n in h2.net.networks.values() if n.name == GWBRIDGE)
        assert gw.id not in box.endpoints
        routes = h2.in_box(box, "ip", "-4", "route", "show", "default").stdout
        assert routes.startswith("default via 172.30.0.1 dev eth1 ")
    finally:
        h2.stop(box)
        h2.call(h2.net.remove, bridge_id, [])


def test_the_overlay_namespace_has_ipv6_off_on_every_link_as_dockers(hosts, overlay):
    # Docker 20.10 here: its overlay namespace (br0, vxlan0, the veths) has disable_ipv6=1 everywhere, no inet6
    netns = hosts["h1"].driver.plane.namespace(overlay["ids"]["h1"])
    out = subprocess.run(["nsenter", f"--net={ns.path_of(netns)}", "sh", "-c",
                          "cd /proc/sys/net/ipv6/conf && for f in *; do echo $(cat $f/disable_ipv6); done; ip -6 -o a"],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out and set(out) == {"1"}  # lo, all, default, the bridge, the VXLAN device, h1's veth; no address


def test_the_overlay_namespace_goes_with_the_hosts_last_overlay_container(hosts, overlay):
    h2 = hosts["h2"]
    net_id = h2.network("ov-short", "overlay", "10.0.11.0/24", **{OPT_VNI: "4099"})
    box = h2.start("short", net_id)
    netns = h2.driver.plane.namespace(net_id)
    assert netns is not None and ns.listed(netns) == [netns]
    h2.stop(box)
    assert ns.listed(netns) == []
    h2.call(h2.net.remove, net_id, [])


def test_the_driver_tells_gossip_of_a_local_endpoint_coming_and_going(hosts, overlay):
    h2 = hosts["h2"]
    seen: list[tuple] = []
    h2.driver.on_endpoint_up = lambda nid, eid, peer: seen.append(("up", nid, eid, str(peer.ip), peer.mac, str(peer.vtep)))
    h2.driver.on_endpoint_down = lambda nid, eid: seen.append(("down", nid, eid))
    try:
        box = h2.start("told", overlay["ids"]["h2"])
        endpoint = box.endpoints[overlay["ids"]["h2"]]
        up = ("up", overlay["ids"]["h2"], endpoint.id, endpoint.ipv4, endpoint.mac, "192.168.200.12")
        h2.stop(box)
    finally:
        h2.driver.on_endpoint_up = h2.driver.on_endpoint_down = None
    assert seen == [up, ("down", overlay["ids"]["h2"], endpoint.id)]
