"""Specification of agent.network.plan and the driver registry: the pure half of the network
layer (interfaces a sandbox wants, default route, IPAM rebuilt from live endpoints, orphans,
refused names, subnets and static addresses)."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from agent.network import plan
from agent.network.drivers import default_registry
from agent.network.drivers.bridge import orphan_bridges
from agent.network.records import EndpointRecord, IPAMConfig, NetworkRecord
from common.errdefs import InvalidParameter, NotFound, Unavailable, http_status
from common.ipam import parse_pool_config


def _net(net_id: str, name: str, driver: str = "bridge", internal: bool = False) -> NetworkRecord:
    return NetworkRecord(id=net_id, name=name, driver=driver, created="t", internal=internal)


def _ep(net_id: str, ipv4: str = "", gateway: str = "", prefixlen: int = 24) -> EndpointRecord:
    return EndpointRecord(id=f"ep-{net_id}", network_id=net_id, container_id="c", ipv4=ipv4,
                          gateway=gateway, prefixlen=prefixlen if ipv4 else 0)


NETWORKS = {"n1": _net("n1", "zeta"), "n2": _net("n2", "alpha"), "n3": _net("n3", "mid"), "none": _net("none", "none", "null")}


def _has_interfaces(net: NetworkRecord) -> bool:
    return net.driver == "bridge"  # the registry's answer, spelled out for the test


# ---- sandbox interfaces -------------------------------------------------------------
def test_the_primary_network_is_eth0_and_the_others_follow_by_name():
    endpoints = {"n1": _ep("n1"), "n2": _ep("n2"), "n3": _ep("n3")}
    ordered = plan.interface_endpoints(endpoints, NETWORKS, "n1", _has_interfaces)
    assert [e.network_id for e in ordered] == ["n1", "n2", "n3"]


def test_networks_without_interfaces_get_none():
    endpoints = {"none": _ep("none")}
    assert plan.interface_endpoints(endpoints, NETWORKS, "none", _has_interfaces) == []


def test_wanted_interfaces_name_eth0_eth1_with_each_address():
    ordered = [_ep("n1", "10.0.1.2"), _ep("n2", "10.0.2.2")]
    assert plan.wanted_interfaces(ordered) == [
        plan.WantedInterface("ep-n1", "n1", "eth0", "10.0.1.2/24"),
        plan.WantedInterface("ep-n2", "n2", "eth1", "10.0.2.2/24"),
    ]


def test_next_ifname_fills_the_first_gap():
    assert plan.next_ifname(["eth0", "eth2", ""]) == "eth1"


def test_the_default_route_goes_through_the_first_network_by_name_with_a_gateway():
    endpoints = [_ep("n1", "10.0.1.2", "10.0.1.1"), _ep("n2", "10.0.2.2", ""), _ep("n3", "10.0.3.2", "10.0.3.1")]
    assert plan.default_gateway(endpoints, NETWORKS) == "10.0.3.1"  # alpha (n2) is internal: no gateway


def test_no_gateway_means_no_default_route():
    assert plan.default_gateway([_ep("n2", "10.0.2.2", "")], NETWORKS) is None


def test_ports_are_published_on_the_endpoint_of_the_default_route():
    endpoints = {"n1": _ep("n1", "10.0.1.2", "10.0.1.1"), "n3": _ep("n3", "10.0.3.2", "10.0.3.1")}
    assert plan.route_endpoint(endpoints, NETWORKS) is endpoints["n3"]


# ---- IPAM rebuilt from live endpoints -----------------------------------------------------
def test_a_rebuilt_pool_holds_exactly_the_live_addresses():
    pool = parse_pool_config("10.9.0.0/24")
    for _ in range(20):  # 20 leaked by a crash
        pool.allocate()
    rebuilt = plan.rebuild_pool(pool, ["10.9.0.7", "10.9.0.3"])
    assert rebuilt.used == {IPv4Address("10.9.0.3"), IPv4Address("10.9.0.7")}


def test_a_rebuilt_pool_keeps_its_cursor_so_freed_addresses_are_not_reused_at_once():
    pool = parse_pool_config("10.9.0.0/24")
    for _ in range(5):
        pool.allocate()
    assert plan.rebuild_pool(pool, []).allocate() == IPv4Address("10.9.0.7")


def test_a_rebuilt_pool_ignores_addresses_outside_its_subnet_and_reserved_ones():
    pool = parse_pool_config("10.9.0.0/24")
    assert plan.rebuild_pool(pool, ["10.8.0.5", "10.9.0.1", "10.9.0.255"]).used == set()


# ---- bridge ownership -----------------------------------------------------------------------
MARK = "shoal:d1:net-a"


@pytest.mark.parametrize("kind, alias, fresh, adopted, action", [
    (None, "", True, False, "own"),  # no link: shoal makes it
    ("veth", "", True, False, "refuse"),  # eth0, a container's veth
    ("", "", True, False, "refuse"),  # a device without a kind
    ("bridge", "", True, False, "adopt"),  # the user's bridge, named at create
    ("bridge", "someone's", True, False, "adopt"),
    ("bridge", MARK, False, False, "own"),  # ours, at restart
    ("bridge", "", False, True, "adopt"),  # adopted before: still the user's
    ("bridge", "", False, False, "own"),  # made by shoal before marks existed
])
def test_bridge_ownership_follows_the_mark_and_the_record(kind, alias, fresh, adopted, action):
    assert plan.bridge_ownership(kind, alias, MARK, fresh, adopted) == action


# ---- orphans ------------------------------------------------------------------------------
def test_orphans_are_marked_bridges_whose_network_has_no_record():
    aliases = {
        "br-aaa": "shoal:d1:net-a",  # ours, record present
        "br-bbb": "shoal:d1:net-b",  # ours, no record: orphan
        "br-ccc": "shoal:d2:net-c",  # another daemon's
        "br0": "",  # the user's bridge
        "docker0": "made by hand",
    }
    assert orphan_bridges(aliases, "shoal:d1:", {"net-a"}) == ["br-bbb"]


def test_orphan_veths_are_marked_veths_whose_endpoint_is_not_live():
    aliases = {
        "veth1111111": "shoal:d1:ep-live",  # the host end of a running container's endpoint
        "veth2222222": "shoal:d1:ep-gone",  # ours, endpoint in no running container's record
        "veth3333333": "shoal:d2:ep-gone",  # another daemon's on the same host
        "veth4444444": "",  # Docker's or the user's (same name pattern as ours): no mark
        "eth0": "",
    }
    assert plan.orphans_by_mark(aliases, "shoal:d1:", {"ep-live"}) == ["veth2222222"]


def test_live_endpoints_are_those_with_an_address():
    endpoints = [_ep("n1", "10.0.1.2"), _ep("n2")]  # n2: recorded, never plumbed (no address)
    assert plan.live_endpoint_ids(endpoints) == {"ep-n1"}


NET_ID = "4869a2fdb035" + "0" * 52


@pytest.mark.parametrize("name, kind, alias, adopted, delete", [
    ("br-4869a2fdb035", "bridge", "", False, True),  # killed between creation and marking
    ("br-4869a2fdb035", "bridge", f"shoal:d1:{NET_ID}", False, True),  # killed after marking
    ("br-4869a2fdb035", None, "", False, False),  # killed before the bridge was made
    ("br-4869a2fdb035", "veth", "", False, False),  # not a bridge: not ours to delete
    ("br-4869a2fdb035", "bridge", "someone's", False, False),  # marked by someone else
    ("br-4869a2fdb035", "bridge", "", True, False),  # existed before the create: adopted
    ("userbr", "bridge", "", False, False),  # a user-given name proves nothing unmarked
    ("userbr", "bridge", f"shoal:d1:{NET_ID}", False, True),  # marked: ours
    ("userbr", "bridge", f"shoal:d1:{NET_ID}", True, False),  # adopted is never deleted
])
def test_an_abandoned_create_deletes_only_a_bridge_it_can_prove_it_made(name, kind, alias, adopted, delete):
    net = _net(NET_ID, "kscratch")
    net.adopted_bridge = adopted
    net.pending = True
    assert plan.abandoned_bridge(name, kind, alias, f"shoal:d1:{NET_ID}", net) is delete


def _plumbed(net_id: str, ifname: str) -> EndpointRecord:
    endpoint = _ep(net_id, "10.0.1.2")
    endpoint.ifname = ifname
    return endpoint


def test_stray_sandbox_links_are_veths_no_endpoint_of_the_record_names():
    links = {"lo": "", "eth0": "veth", "eth1": "veth", "dummy0": "dummy"}
    # eth1: plumbed by a connect the daemon died in before saving the record
    assert plan.stray_sandbox_links(links, [_plumbed("n1", "eth0")]) == ["eth1"]


def test_a_recorded_endpoint_without_an_address_keeps_no_veth():
    links = {"lo": "", "eth0": "veth", "eth1": "veth"}
    assert plan.stray_sandbox_links(links, [_plumbed("n1", "eth0"), _ep("n2")]) == ["eth1"]


def test_no_stray_link_is_named_when_an_endpoint_has_an_address_but_no_interface_name():
    links = {"lo": "", "eth0": "veth", "eth1": "veth"}
    assert plan.stray_sandbox_links(links, [_plumbed("n1", "eth0"), _ep("n2", "10.0.2.2")]) == []


def test_missing_sandbox_links_are_recorded_interfaces_the_namespace_lacks():
    # eth1: unplumbed by a disconnect the daemon died in before saving the record
    endpoints = [_plumbed("n1", "eth0"), _plumbed("n2", "eth1"), _ep("n3")]
    missing = plan.missing_sandbox_links({"lo": "", "eth0": "veth"}, endpoints)
    assert [e.network_id for e in missing] == ["n2"]


# ---- refusals -----------------------------------------------------------------------------
@pytest.mark.parametrize("name, message", [
    ("", "invalid name: name is empty"),
    ("a\nb", "invalid network name 'a\\nb': control character '\\n' is not allowed"),
    ("a\x00b", "invalid network name 'a\\x00b': control character '\\x00' is not allowed"),
    ("n" * 256, f"invalid network name {'n' * 32!r}...: 256 characters, at most 255"),
])
def test_network_names_that_break_listings_are_refused(name, message):
    with pytest.raises(InvalidParameter) as caught:
        plan.check_network_name(name)
    assert (http_status(caught.value), caught.value.message) == (400, message)


@pytest.mark.parametrize("name", ["n" * 255, "my net", "réseau", "a.b-c_d"])
def test_network_names_docker_accepts_are_kept(name):
    plan.check_network_name(name)


@pytest.mark.parametrize("subnet, what", [
    ("127.0.0.0/24", "the loopback range 127.0.0.0/8"),
    ("224.1.0.0/16", "the multicast range 224.0.0.0/4"),
    ("169.254.0.0/24", "the link-local range 169.254.0.0/16"),
    ("0.0.0.0/8", "the 'this network' range 0.0.0.0/8"),
    ("0.0.0.0/0", "the 'this network' range 0.0.0.0/8"),
])
def test_subnets_that_cannot_work_are_refused_naming_the_subnet(subnet, what):
    with pytest.raises(InvalidParameter) as caught:
        plan.check_usable_subnet(IPv4Network(subnet))
    assert caught.value.message == f"invalid pool request: subnet {subnet} overlaps {what}"


CONFIG = IPAMConfig(subnet="10.7.0.0/24", gateway="10.7.0.1")


@pytest.mark.parametrize("ip, message", [
    ("10.8.0.5", "no configured subnet or ip-range contain the IP address 10.8.0.5"),
    ("10.7.0.1", "invalid IP address 10.7.0.1: it is the gateway of subnet 10.7.0.0/24"),
    ("10.7.0.255", "invalid IP address 10.7.0.255: it is the network or broadcast address of subnet 10.7.0.0/24"),
    ("10.7.0.0", "invalid IP address 10.7.0.0: it is the network or broadcast address of subnet 10.7.0.0/24"),
    ("bogus", "invalid IPv4 address: bogus"),
])
def test_static_addresses_that_cannot_be_given_are_refused(ip, message):
    with pytest.raises(InvalidParameter) as caught:
        plan.check_static_ip(ip, CONFIG)
    assert caught.value.message == message


def test_a_static_address_inside_the_subnet_is_accepted():
    plan.check_static_ip("10.7.0.200", CONFIG)


# ---- registry -----------------------------------------------------------------------------
def test_the_registry_answers_what_each_local_driver_is():
    registry = default_registry("shoal:x:", 1500)
    answers = {
        name: (d.singleton, d.exclusive, d.shares_host_netns, d.has_interfaces)
        for name in ("null", "host", "bridge") for d in [registry.get(name)]
    }
    assert answers == {
        "null": (True, True, False, False),
        "host": (True, True, True, False),
        "bridge": (False, False, False, True),
    }


def test_an_unknown_driver_is_dockers_plugin_not_found():
    with pytest.raises(NotFound) as caught:
        default_registry("shoal:x:", 1500).get("weave")
    assert (http_status(caught.value), caught.value.message) == (404, 'plugin "weave" not found')


def test_overlay_answers_503_until_the_node_is_in_a_swarm():
    with pytest.raises(Unavailable) as caught:
        default_registry("shoal:x:", 1500).get("overlay").check_create({})
    assert http_status(caught.value) == 503
    assert caught.value.message.startswith("This node is not a swarm manager.")
