"""The allocator's address pools, subnets and VNIs (manager/allocator/pools.py): serial allocation, quarantine,
exhaustion, subnets that avoid networks and routes, serial VNIs from 4096."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

import pytest

from manager.allocator.pools import (
    AllocationError,
    NetPool,
    next_vni,
    parse_vni_option,
    pick_subnet,
    validate_default_pools,
)

Q = 60.0


def pool(subnet: str = "10.0.9.0/29") -> NetPool:
    net = IPv4Network(subnet)
    return NetPool(net, net.network_address + 1)


def test_serial_allocation_skips_network_gateway_and_broadcast() -> None:
    p = pool()
    got = [str(p.allocate(0, Q)) for _ in range(5)]
    assert got == ["10.0.9.2", "10.0.9.3", "10.0.9.4", "10.0.9.5", "10.0.9.6"]


def test_exhausted_pool_names_the_subnet() -> None:
    p = pool()
    for _ in range(5):
        p.allocate(0, Q)
    with pytest.raises(AllocationError) as e:
        p.allocate(0, Q)
    assert e.value.message == "could not allocate an address on network subnet 10.0.9.0/29: no available IP addresses left"


def test_freed_address_is_not_reused_while_others_are_free() -> None:
    p = pool("10.0.9.0/24")
    a = p.allocate(0, Q)
    p.sync(set(), now=1.0, quarantine_s=Q)  # the store no longer holds a
    b = p.allocate(2.0, Q)
    assert (str(a), str(b)) == ("10.0.9.2", "10.0.9.3")


def test_quarantined_address_is_skipped_after_a_wrap_until_the_period_passes() -> None:
    p = pool()
    addrs = [p.allocate(0, Q) for _ in range(5)]
    held = set(addrs)
    held.discard(addrs[0])  # .2 freed at t=10
    held.discard(addrs[1])  # .3 freed at t=10
    p.sync(held, now=10.0, quarantine_s=Q)
    p.quarantine[addrs[1]] = 5.0  # .3 freed earlier, at t=5
    p.sync(held, now=66.0, quarantine_s=Q)  # .3's quarantine (5+60) is over, .2's (10+60) is not
    assert str(p.allocate(66.0, Q)) == "10.0.9.3"


def test_exhaustion_hands_out_the_oldest_quarantined_address() -> None:
    p = pool()
    addrs = [p.allocate(0, Q) for _ in range(5)]
    p.sync(set(addrs) - {addrs[2]}, now=10.0, quarantine_s=Q)
    p.sync(set(addrs) - {addrs[2], addrs[4]}, now=20.0, quarantine_s=Q)
    assert str(p.allocate(21.0, Q)) == "10.0.9.4"  # freed at 10, before .6 (freed at 20)
    assert str(p.allocate(21.0, Q)) == "10.0.9.6"


def test_requested_address_in_use_is_refused() -> None:
    p = pool()
    p.allocate(0, Q, IPv4Address("10.0.9.5"))
    with pytest.raises(AllocationError) as e:
        p.allocate(0, Q, IPv4Address("10.0.9.5"))
    assert e.value.message == "address 10.0.9.5 is already in use on subnet 10.0.9.0/29"


def test_subnet_skips_networks_and_routes_but_not_a_default_route() -> None:
    got = pick_subnet([IPv4Network("10.0.0.0/8")], 24,
                      [IPv4Network("10.0.0.0/24")],
                      [IPv4Network("0.0.0.0/0"), IPv4Network("10.0.1.0/25"), IPv4Network("10.0.2.0/23")])
    assert got == IPv4Network("10.0.4.0/24")


def test_subnet_jumps_over_a_large_route_in_one_step() -> None:
    got = pick_subnet([IPv4Network("10.0.0.0/8")], 24, [], [IPv4Network("10.0.0.0/9")])
    assert got == IPv4Network("10.128.0.0/24")


def test_no_free_subnet_is_an_error() -> None:
    with pytest.raises(AllocationError) as e:
        pick_subnet([IPv4Network("10.0.0.0/23")], 24, [IPv4Network("10.0.0.0/24")], [IPv4Network("10.0.1.0/24")])
    assert e.value.message == ("could not find an available, non-overlapping IPv4 address pool among the defaults "
                               "to assign to the network")


def test_vnis_are_serial_from_4096_and_wrap_to_the_lowest_free() -> None:
    assert next_vni(set()) == 4096
    assert next_vni({4096, 4097}) == 4098
    assert next_vni({4096}, last=4100) == 4101
    assert next_vni({4096, (1 << 24) - 1}) == 4097


def test_vni_option_must_be_a_number_in_range() -> None:
    assert parse_vni_option("4200") == 4200
    with pytest.raises(AllocationError) as e:
        parse_vni_option("x1")
    assert e.value.message == "invalid vxlan id value 'x1' passed"
    with pytest.raises(AllocationError) as e:
        parse_vni_option("16777216")
    assert e.value.message == "vxlan id 16777216 is out of range (1-16777215)"


def test_default_pools_are_checked_as_dockerd_checks_them() -> None:
    assert validate_default_pools([" 10.20.0.0/16 "], 26) == (["10.20.0.0/16"], 26)
    assert validate_default_pools(["10.20.0.0/16"], 0) == (["10.20.0.0/16"], 24)
    for pools, size, message in [
        (["10.20.0.0/16"], 30, "subnet size is out of range: 30"),
        (["10.20.0.0/16"], 8, "invalid CIDR: '10.20.0.0/16'. Subnet size is too small for pool: 8"),
        (["10.20.0.0/33"], 24, "invalid base pool 10.20.0.0/33: invalid CIDR address: 10.20.0.0/33"),
    ]:
        with pytest.raises(AllocationError) as e:
            validate_default_pools(pools, size)
        assert e.value.message == message
