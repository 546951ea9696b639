"""The overlay driver's pure parts: its options (VNI, MTU, data path port, encryption refused with
the reason) and libnetwork's rule for a docker_gwbridge endpoint (agent.network.plan)."""
from __future__ import annotations

import ipaddress

import pytest

from agent.network import plan
from agent.network.drivers.overlay import OPT_ENCRYPTED, OPT_PORT, OPT_VNI, OverlayDriver
from agent.network.records import EndpointRecord, IPAMConfig, NetworkRecord
from common.errdefs import InvalidParameter, NotImplemented_
from vxlan.dataplane import OverlayDataPlane

DRIVER = OverlayDriver(OverlayDataPlane("unit-"), ipaddress.IPv4Address("192.168.200.11"))


def net(net_id: str, driver: str, internal: bool = False, name: str = "") -> NetworkRecord:
    return NetworkRecord(id=net_id, name=name or net_id, driver=driver, created="", internal=internal,
                         ipam_config=[IPAMConfig(subnet="10.0.9.0/24", gateway="10.0.9.1")],
                         options={OPT_VNI: "4097"} if driver == "overlay" else {})


def endpoint(net_id: str, gateway: str = "", gateway_only: bool = False) -> EndpointRecord:
    return EndpointRecord(id="e" + net_id, network_id=net_id, container_id="c", ipv4="10.0.9.2", prefixlen=24,
                          gateway=gateway, gateway_only=gateway_only)


def external(n: NetworkRecord) -> bool:
    return n.driver != "overlay"


NETS = {n.id: n for n in (net("ov", "overlay"), net("ovi", "overlay", internal=True), net("br", "bridge", name="web"),
                          net("bri", "bridge", internal=True), net("gw", "bridge", name="docker_gwbridge"))}


def test_an_overlay_only_container_needs_a_gateway_endpoint():
    assert plan.needs_gateway_endpoint([endpoint("ov")], NETS, external)


def test_a_container_with_a_gateway_elsewhere_needs_none():
    assert not plan.needs_gateway_endpoint([endpoint("ov"), endpoint("br", gateway="172.18.0.1")], NETS, external)


def test_an_internal_overlay_only_container_needs_none():
    assert not plan.needs_gateway_endpoint([endpoint("ovi")], NETS, external)


def test_an_overlay_and_an_internal_bridge_container_needs_one():
    assert plan.needs_gateway_endpoint([endpoint("ov"), endpoint("bri")], NETS, external)


def test_the_gateway_endpoint_itself_does_not_count_as_a_way_out():
    assert plan.needs_gateway_endpoint([endpoint("ov"), endpoint("gw", gateway="172.18.0.1", gateway_only=True)],
                                       NETS, external)


def test_the_gateway_endpoint_is_the_last_interface():
    endpoints = {"gw": endpoint("gw", gateway="172.18.0.1", gateway_only=True), "ov": endpoint("ov"),
                 "br": endpoint("br", gateway="172.30.0.1")}
    ordered = plan.interface_endpoints(endpoints, NETS, "ov", lambda n: True)
    assert [e.network_id for e in ordered] == ["ov", "br", "gw"]


def test_the_spec_of_an_overlay_record_carries_vni_subnet_gateway_and_data_address():
    spec = DRIVER.spec(NETS["ov"])
    assert (spec.vni, str(spec.subnet), str(spec.gateway), str(spec.data_addr), spec.port) == \
        (4097, "10.0.9.0/24", "10.0.9.1/24", "192.168.200.11", 4789)


def test_an_overlay_without_a_vni_is_refused_naming_the_option():
    with pytest.raises(InvalidParameter, match=f"an overlay network needs its VNI: -o {OPT_VNI}=N"):
        DRIVER.check_create({})


def test_a_vni_out_of_range_is_refused_naming_it():
    with pytest.raises(InvalidParameter, match=r"invalid VNI '16777216': must be 1..16777215"):
        DRIVER.check_create({OPT_VNI: "16777216"})


def test_an_unknown_option_is_refused_naming_it():
    with pytest.raises(InvalidParameter, match=r"invalid option foo for the overlay driver"):
        DRIVER.check_create({OPT_VNI: "4097", "foo": "1"})


def test_a_data_path_port_out_of_range_is_refused_naming_it():
    with pytest.raises(InvalidParameter, match=r"invalid data path port '80': must be 1024..49151"):
        DRIVER.check_create({OPT_VNI: "4097", OPT_PORT: "80"})


def test_encryption_is_refused_with_the_kernels_reason():
    with pytest.raises(NotImplemented_, match="IPsec ESP support, which this host's kernel does not have"):
        DRIVER.check_create({OPT_VNI: "4097", OPT_ENCRYPTED: ""})


def test_the_driver_gives_no_way_out_and_is_swarm_scoped():
    assert (DRIVER.scope, DRIVER.has_interfaces, DRIVER.external_connectivity) == ("swarm", True, False)


def test_a_gossip_callback_that_fails_does_not_raise_into_the_kernel_thread():
    def broken(*args: object) -> None:
        raise RuntimeError("gossip is down")

    OverlayDriver._notify(broken, "net", "ep", None)  # logged, not raised


def test_wire_gossip_feeds_the_plane_and_announces_endpoints_on_the_loop():
    import asyncio

    from shoal.swarm.overlay import wire_gossip
    from vxlan.types import OverlayPeer

    calls: list[tuple] = []

    class Agent:
        def overlay(self, sink):
            calls.append(("overlay", sink))

        def endpoint_up(self, nid, eid, peer):
            calls.append(("up", nid, eid, peer))

        def endpoint_down(self, nid, eid):
            calls.append(("down", nid, eid))

    driver = OverlayDriver(OverlayDataPlane("unit-"), ipaddress.IPv4Address("192.168.200.11"))
    loop = asyncio.new_event_loop()
    try:
        wire_gossip(driver, Agent(), loop)
        peer = OverlayPeer(ipaddress.IPv4Address("10.0.9.2"), "02:42:0a:00:09:02", driver.data_addr)
        driver.on_endpoint_up("net", "ep", peer)
        driver.on_endpoint_down("net", "ep")
        loop.run_until_complete(asyncio.sleep(0))
    finally:
        loop.close()
    assert calls == [("overlay", driver.plane), ("up", "net", "ep", peer), ("down", "net", "ep")]
