"""vxlan/dataplane.py with endpoints of several containers plumbed side by side (the engine's sandbox threads): a veth
is made outside the plane's lock, so gossip's peers do not wait for it, and the network it joins is held meanwhile:
the last other endpoint leaving does not remove the namespace underneath. Real kernel objects in the test's own
namespaces; the only hook pauses the real attach so the test can act while it is under way."""

from __future__ import annotations

import subprocess
import threading
import uuid
from collections.abc import Iterator
from ipaddress import IPv4Address as A, IPv4Interface as I, IPv4Network as N
from pathlib import Path

import pytest

from vxlan import kernel, ns
from vxlan.dataplane import LocalEndpoint, OverlayDataPlane
from vxlan.types import OverlayPeer, OverlaySpec

pytestmark = pytest.mark.lab

WAIT_S = 10.0  # a bound for what must come, never a measured time
NET_ID = "fee1900d" + "0" * 56
DATA = A("192.168.79.5")


@pytest.fixture
def plane() -> Iterator[tuple[OverlayDataPlane, str]]:
    prefix = f"shoalt{uuid.uuid4().hex[:8]}-"
    host = f"{prefix}host"
    plane = OverlayDataPlane(prefix, ns.path_of(host))
    try:
        ns.create(host)
        subprocess.run(["ip", "-n", host, "link", "add", "u0", "type", "veth", "peer", "name", "u1"], check=True)
        subprocess.run(["ip", "-n", host, "addr", "add", f"{DATA}/24", "dev", "u0"], check=True)
        subprocess.run(["ip", "-n", host, "link", "set", "u0", "up"], check=True)
        yield plane, prefix
    finally:
        plane.close()
        for name in ns.listed(prefix):
            ns.delete(name)
        assert ns.listed(prefix) == []


def spec() -> OverlaySpec:
    return OverlaySpec(network_id=NET_ID, name="ov", vni=4242, subnet=N("10.0.9.0/24"), gateway=I("10.0.9.1/24"),
                       data_addr=DATA)


def endpoint(prefix: str, n: int) -> LocalEndpoint:
    return LocalEndpoint(endpoint_id=f"ep{n}", sandbox=ns.create(f"{prefix}c{n}"), ifname="eth0",
                         address=I(f"10.0.9.{n + 1}/24"), mac=f"02:42:0a:00:09:{n + 1:02x}")


def test_the_last_endpoint_leaving_while_another_joins_keeps_the_network(plane, monkeypatch) -> None:
    dp, prefix = plane
    first, second = endpoint(prefix, 1), endpoint(prefix, 2)
    dp.join(spec(), first)
    netns = dp.networks[NET_ID].names.netns
    inside, release = threading.Event(), threading.Event()
    real_attach = kernel.attach

    def paused_attach(*args: object, **kwargs: object) -> None:
        inside.set()
        release.wait(WAIT_S)
        real_attach(*args, **kwargs)

    monkeypatch.setattr(kernel, "attach", paused_attach)
    joiner = threading.Thread(target=dp.join, args=(spec(), second))
    joiner.start()
    try:
        assert inside.wait(WAIT_S)
        dp.leave(NET_ID, "ep1")  # the last plumbed endpoint goes while ep2's veth is being made
        assert ns.is_mounted(ns.path_of(netns))
    finally:
        release.set()
        joiner.join(WAIT_S)
    assert list(dp.networks[NET_ID].endpoints) == ["ep2"]
    out = subprocess.run(["ip", "-n", second.sandbox.name, "-br", "addr", "show", "eth0"], capture_output=True,
                         text=True, check=True).stdout
    assert "10.0.9.3/24" in out
    dp.leave(NET_ID, "ep2")
    assert NET_ID not in dp.networks
    assert not ns.is_mounted(ns.path_of(netns))


def test_peers_are_programmed_while_a_veth_is_being_made(plane, monkeypatch) -> None:
    dp, prefix = plane
    dp.join(spec(), endpoint(prefix, 1))
    inside, release = threading.Event(), threading.Event()
    real_attach = kernel.attach

    def paused_attach(*args: object, **kwargs: object) -> None:
        inside.set()
        release.wait(WAIT_S)
        real_attach(*args, **kwargs)

    monkeypatch.setattr(kernel, "attach", paused_attach)
    joiner = threading.Thread(target=dp.join, args=(spec(), endpoint(prefix, 2)))
    joiner.start()
    try:
        assert inside.wait(WAIT_S)
        added: list[int] = []
        peer = threading.Thread(target=lambda: added.append(
            dp.add_peers(NET_ID, [OverlayPeer(A("10.0.9.9"), "02:42:0a:00:09:09", A("192.168.79.6"))])))
        peer.start()
        peer.join(WAIT_S)
        assert added == [2]  # neighbour + FDB entry, made while the join still waits: the lock was free
    finally:
        release.set()
        joiner.join(WAIT_S)
    neigh, fdb = kernel.kernel_peers(dp.networks[NET_ID].names)
    assert (neigh.get("10.0.9.9"), fdb.get("02:42:0a:00:09:09")) == ("02:42:0a:00:09:09", "192.168.79.6")
