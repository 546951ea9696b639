"""Lab tests for common/rtnl.py, the plain rtnetlink requests of a container's network set-up, against the real kernel:
what each request leaves (read back with iproute2) and the errno of a refused one. Namespaces are the test's own."""

from __future__ import annotations

import errno
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.network import netns as nsmod
from common.rtnl import LOOPBACK_INDEX, NetlinkError, Rtnl, vxlan_info

pytestmark = pytest.mark.lab


def ip_json(ns: str, *args: str) -> Any:
    out = subprocess.run(["ip", "-n", ns, "-j", "-d", *args], capture_output=True, text=True, check=True).stdout
    return json.loads(out or "[]")


@pytest.fixture
def spaces() -> Iterator[dict[str, Path]]:
    """A 'host' namespace with a bridge br0 (up) and an empty 'sandbox' namespace; both removed afterwards."""
    prefix = f"shoalt{uuid.uuid4().hex[:8]}-nl"
    names = {"host": f"{prefix}-h", "sandbox": f"{prefix}-s"}
    try:
        for name in names.values():
            subprocess.run(["ip", "netns", "add", name], check=True)
        subprocess.run(["ip", "-n", names["host"], "link", "add", "br0", "type", "bridge"], check=True)
        subprocess.run(["ip", "-n", names["host"], "link", "set", "br0", "up"], check=True)
        yield {key: Path("/run/netns") / name for key, name in names.items()}
    finally:
        for name in nsmod.list_netns(prefix):
            subprocess.run(["ip", "netns", "del", name], check=False)
        assert nsmod.list_netns(prefix) == []


def test_veth_add_makes_the_pair_on_the_bridge_up_with_the_peer_in_the_sandbox(spaces: dict[str, Path]) -> None:
    with Rtnl(spaces["host"]) as nl:
        bridge = nl.link_index("br0")
        assert bridge is not None
        nl.veth_add("vh0", "eth0", spaces["sandbox"], master=bridge, mtu=1450, up=True, peer_mac="02:42:0a:00:09:02")
    [host] = ip_json(spaces["host"].name, "link", "show", "vh0")
    assert (host["master"], host["mtu"], "UP" in host["flags"]) == ("br0", 1450, True)
    [peer] = ip_json(spaces["sandbox"].name, "link", "show", "eth0")
    assert (peer["address"], peer["mtu"], "UP" in peer["flags"]) == ("02:42:0a:00:09:02", 1450, False)


def test_veth_add_of_a_taken_name_is_refused_with_eexist(spaces: dict[str, Path]) -> None:
    with Rtnl(spaces["host"]) as nl:
        nl.veth_add("vh0", "eth0", spaces["sandbox"])
        with pytest.raises(NetlinkError) as caught:
            nl.veth_add("vh0", "eth1", spaces["sandbox"])
    assert caught.value.errno == errno.EEXIST
    assert str(caught.value) == "[Errno 17] add veth vh0/eth1: File exists"


def test_link_index_of_a_missing_link_is_none(spaces: dict[str, Path]) -> None:
    with Rtnl(spaces["sandbox"]) as nl:
        assert nl.link_index("nope0") is None
        assert nl.link_index("lo") == LOOPBACK_INDEX


def test_link_set_marks_and_hairpin_turns_hairpin_on(spaces: dict[str, Path]) -> None:
    with Rtnl(spaces["host"]) as nl:
        nl.veth_add("vh0", "eth0", spaces["sandbox"], master=nl.link_index("br0"))
        index = nl.link_index("vh0")
        assert index is not None
        nl.link_set(index, alias="shoal:test", up=True)
        nl.hairpin(index)
    [host] = ip_json(spaces["host"].name, "link", "show", "vh0")
    assert (host["ifalias"], "UP" in host["flags"], host["linkinfo"]["info_slave_data"]["hairpin"]) == (
        "shoal:test", True, True)


def test_addr_add_and_default_route_replace_then_delete(spaces: dict[str, Path]) -> None:
    with Rtnl(spaces["host"]) as nl:
        nl.veth_add("vh0", "eth0", spaces["sandbox"], up=True)
    with Rtnl(spaces["sandbox"]) as nl:
        index = nl.link_index("eth0")
        assert index is not None
        nl.addr_add(index, "10.0.9.2", 24)
        nl.link_set(index, up=True)
        nl.default_route("10.0.9.1")
        nl.default_route("10.0.9.3")  # replaces, never a second one
        [addr] = [a for a in ip_json(spaces["sandbox"].name, "addr", "show", "eth0")[0]["addr_info"]
                  if a["family"] == "inet"]
        routes = [r for r in ip_json(spaces["sandbox"].name, "route") if r["dst"] == "default"]
        assert (addr["local"], addr["prefixlen"]) == ("10.0.9.2", 24)
        assert [(r["gateway"], r["dev"], r["protocol"]) for r in routes] == [("10.0.9.3", "eth0", "static")]
        nl.default_route(None)
        nl.default_route(None)  # none left: no error
    assert [r for r in ip_json(spaces["sandbox"].name, "route") if r["dst"] == "default"] == []


def test_addr_add_of_an_address_already_there_is_refused_with_eexist(spaces: dict[str, Path]) -> None:
    with Rtnl(spaces["sandbox"]) as nl:
        nl.addr_add(LOOPBACK_INDEX, "10.0.9.2", 24)
        with pytest.raises(NetlinkError) as caught:
            nl.addr_add(LOOPBACK_INDEX, "10.0.9.2", 24)
    assert caught.value.errno == errno.EEXIST


def test_link_add_makes_a_vxlan_device_in_the_other_namespace_on_its_bridge_with_its_socket_here(
        spaces: dict[str, Path]) -> None:
    host = spaces["host"].name
    subprocess.run(["ip", "-n", host, "link", "add", "u0", "type", "veth", "peer", "name", "u1"], check=True)
    subprocess.run(["ip", "-n", host, "addr", "add", "192.168.77.5/24", "dev", "u0"], check=True)
    with Rtnl(spaces["sandbox"]) as nl:
        nl.link_add("br1", "bridge", mtu=1450, up=True)
        bridge = nl.link_index("br1")
    with Rtnl(spaces["host"]) as nl:
        nl.link_add("vxt1", "vxlan", info_data=vxlan_info(4097, "192.168.77.5", 4789), netns=spaces["sandbox"],
                    master=bridge, mtu=1450, up=True)
    [vx] = ip_json(spaces["sandbox"].name, "link", "show", "vxt1")
    data = vx["linkinfo"]["info_data"]
    assert (vx["master"], vx["mtu"], "UP" in vx["flags"]) == ("br1", 1450, True)
    assert (data["id"], data["local"], data["port"], data["learning"], data["proxy"]) == (
        4097, "192.168.77.5", 4789, False, True)
    sockets = subprocess.run(["ip", "netns", "exec", host, "ss", "-uan"], capture_output=True, text=True,
                             check=True).stdout
    assert ":4789 " in sockets
    subprocess.run(["ip", "-n", spaces["sandbox"].name, "link", "del", "vxt1"], check=True)


def test_addresses_v4_lists_each_address_with_its_link_and_prefix(spaces: dict[str, Path]) -> None:
    ns = spaces["host"].name
    subprocess.run(["ip", "-n", ns, "link", "add", "br1", "type", "bridge"], check=True)
    subprocess.run(["ip", "-n", ns, "addr", "add", "10.31.0.5/22", "dev", "br1"], check=True)
    subprocess.run(["ip", "-n", ns, "addr", "add", "10.32.0.1/24", "dev", "br0"], check=True)
    [other] = ip_json(ns, "link", "show", "br1")
    [bridge] = ip_json(ns, "link", "show", "br0")
    with Rtnl(spaces["host"]) as nl:
        found = sorted((index, str(address), prefixlen) for index, address, prefixlen in nl.addresses_v4())
    assert found == sorted([(other["ifindex"], "10.31.0.5", 22), (bridge["ifindex"], "10.32.0.1", 24)])


def test_link_mtu_reads_a_links_mtu_and_none_for_a_missing_index(spaces: dict[str, Path]) -> None:
    ns = spaces["host"].name
    subprocess.run(["ip", "-n", ns, "link", "set", "br0", "mtu", "1400"], check=True)
    [bridge] = ip_json(ns, "link", "show", "br0")
    with Rtnl(spaces["host"]) as nl:
        assert (nl.link_mtu(bridge["ifindex"]), nl.link_mtu(LOOPBACK_INDEX), nl.link_mtu(99999)) == (1400, 65536, None)
