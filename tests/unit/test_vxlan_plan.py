"""vxlan.plan: the names of a network's kernel objects, its MTU, what is stale at start (pure)."""
from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address as A, IPv4Interface as I, IPv4Network as N

import pytest

from vxlan import plan
from vxlan.types import OverlaySpec

NET_ID = "3f2a9c0d11e4b5a6c7d8e9f00112233445566778899aabbccddeeff001122334"
SPEC = OverlaySpec(network_id=NET_ID, name="web", vni=4097, subnet=N("10.0.9.0/24"), gateway=I("10.0.9.1/24"),
                   data_addr=A("192.168.200.11"))


def test_names_carry_the_prefix_vni_and_short_id():
    names = plan.names("shoal-lab-h1-", SPEC)
    assert names.netns == "shoal-lab-h1-ov-4097-3f2a9c0d"
    assert names.vxlan == "vx-001001-3f2a9"
    assert names.mark == f"shoal-overlay:shoal-lab-h1-|{NET_ID}"


def test_the_vxlan_device_name_fits_the_kernel_limit_for_the_largest_vni():
    assert len(plan.names("p-", replace(SPEC, vni=plan.VNI_MAX)).vxlan) <= plan.IFNAMSIZ


def test_mtu_is_the_underlay_less_the_vxlan_overhead():
    assert plan.overlay_mtu(SPEC, 1500) == 1450
    assert plan.overlay_mtu(SPEC, 9000) == 8950


def test_mtu_of_the_spec_wins_over_the_underlay():
    assert plan.overlay_mtu(replace(SPEC, mtu=1300), 1500) == 1300


def test_an_underlay_too_small_for_vxlan_is_refused_naming_both_mtus():
    with pytest.raises(ValueError, match=r"invalid overlay mtu 50 for network web \(underlay mtu 100\)"):
        plan.overlay_mtu(SPEC, 100)


def test_a_vni_out_of_range_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"invalid VNI 16777216 for network web: must be 1..16777215"):
        plan.names("p-", replace(SPEC, vni=1 << 24))


def test_a_gateway_outside_the_subnet_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"invalid gateway 10.0.8.1/24 for network web: not in subnet 10.0.9.0/24"):
        plan.names("p-", replace(SPEC, gateway=I("10.0.8.1/24")))


def test_stale_namespaces_are_ours_and_not_live():
    present = ["shoal-lab-h1-ov-4097-3f2a9c0d", "shoal-lab-h1-ov-4098-aaaaaaaa", "shoal-lab-h1-0123456789ab",
               "shoal-lab-h2-ov-4098-aaaaaaaa"]
    assert plan.stale_namespaces(present, "shoal-lab-h1-", {"shoal-lab-h1-ov-4097-3f2a9c0d"}) == \
        ["shoal-lab-h1-ov-4098-aaaaaaaa"]


def test_stale_vxlan_links_carry_our_mark_for_a_network_not_live():
    links = {
        "vx-001001-3f2a9": f"shoal-overlay:p-|{NET_ID}",
        "vx-001002-bbbbb": "shoal-overlay:p-|" + "b" * 64,
        "vx-001003-ccccc": "shoal-overlay:p-x|" + "c" * 64,  # another prefix's
        "vxlan0": "",  # someone else's
    }
    assert plan.stale_vxlan_links(links, "p-", {NET_ID}) == ["vx-001002-bbbbb"]
