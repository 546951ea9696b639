"""Unit tests for common.ipam: Docker's validation messages, serial allocation, pool picking."""
import json
from ipaddress import IPv4Address as A
from ipaddress import IPv4Network as N

import pytest

from common.ipam import (AddressInUse, AddressPool, InvalidAddress, InvalidPoolConfig,
                                IPAMError, NoFreePool, PoolExhausted, PoolOverlap, check_overlap,
                                default_local_pools, parse_pool_config, pick_free_subnet)


def allocate_n(pool: AddressPool, n: int) -> list[str]:
    return [str(pool.allocate()) for _ in range(n)]


# --- serial allocation -------------------------------------------------------------------------

def test_allocation_is_serial_after_the_gateway() -> None:
    pool = parse_pool_config("10.0.0.0/24")
    assert allocate_n(pool, 2) == ["10.0.0.2", "10.0.0.3"]


def test_freed_address_is_not_reused_at_once() -> None:
    pool = parse_pool_config("10.0.0.0/24")
    allocate_n(pool, 2)
    pool.release(A("10.0.0.2"))
    assert str(pool.allocate()) == "10.0.0.4"


def test_freed_address_is_reused_after_wrap_around() -> None:
    pool = parse_pool_config("10.0.0.0/29")  # hosts .1-.6, gateway .1
    assert allocate_n(pool, 5) == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    pool.release(A("10.0.0.4"))
    pool.release(A("10.0.0.3"))
    assert allocate_n(pool, 2) == ["10.0.0.3", "10.0.0.4"]


def test_explicit_gateway_is_skipped() -> None:
    pool = parse_pool_config("10.0.0.0/29", gateway="10.0.0.3")
    assert allocate_n(pool, 5) == ["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6"]


def test_network_and_broadcast_are_never_handed_out() -> None:
    pool = parse_pool_config("10.0.0.0/30")
    assert allocate_n(pool, 1) == ["10.0.0.2"]
    with pytest.raises(PoolExhausted):
        pool.allocate()


def test_exhausted_pool_names_the_subnet() -> None:
    pool = parse_pool_config("10.0.0.0/30")
    pool.allocate()
    with pytest.raises(PoolExhausted) as err:
        pool.allocate()
    assert err.value.message == "no available addresses on network 10.0.0.0/30"


def test_exhausted_ip_range_names_subnet_and_range() -> None:
    pool = parse_pool_config("10.0.0.0/24", ip_range="10.0.0.8/31")
    assert allocate_n(pool, 1) == ["10.0.0.9"]  # gateway took .8
    with pytest.raises(PoolExhausted) as err:
        pool.allocate()
    assert err.value.message == "no available addresses on network 10.0.0.0/24 (ip-range 10.0.0.8/31)"


def test_dynamic_allocation_stays_inside_ip_range() -> None:
    pool = parse_pool_config("10.0.0.0/16", ip_range="10.0.5.0/30")
    assert str(pool.gateway) == "10.0.5.0"
    assert allocate_n(pool, 3) == ["10.0.5.1", "10.0.5.2", "10.0.5.3"]
    with pytest.raises(PoolExhausted):
        pool.allocate()


def test_slash_31_uses_both_addresses() -> None:
    pool = parse_pool_config("10.0.0.0/31")
    assert str(pool.gateway) == "10.0.0.0"
    assert allocate_n(pool, 1) == ["10.0.0.1"]


# --- requested addresses -----------------------------------------------------------------------

def test_requested_address_is_handed_out_without_moving_the_cursor() -> None:
    pool = parse_pool_config("10.0.0.0/24")
    assert pool.allocate(A("10.0.0.50")) == A("10.0.0.50")
    assert allocate_n(pool, 1) == ["10.0.0.2"]


def test_requested_address_in_use_is_refused() -> None:
    pool = parse_pool_config("10.0.0.0/24")
    pool.allocate(A("10.0.0.50"))
    with pytest.raises(AddressInUse) as err:
        pool.allocate(A("10.0.0.50"))
    assert err.value.message == "Address already in use"


def test_requested_gateway_is_refused_as_in_use() -> None:
    pool = parse_pool_config("10.0.0.0/24")
    with pytest.raises(AddressInUse) as err:
        pool.allocate(A("10.0.0.1"))
    assert err.value.message == "Address already in use"


def test_requested_broadcast_is_refused_as_in_use() -> None:
    with pytest.raises(AddressInUse):
        parse_pool_config("10.0.0.0/24").allocate(A("10.0.0.255"))


def test_requested_address_outside_subnet_is_refused() -> None:
    pool = parse_pool_config("10.0.0.0/24")
    with pytest.raises(InvalidAddress) as err:
        pool.allocate(A("10.1.0.5"))
    assert err.value.message == "invalid address 10.1.0.5: it is not in subnet 10.0.0.0/24"


def test_requested_address_outside_ip_range_but_in_subnet_is_allowed() -> None:
    pool = parse_pool_config("10.0.0.0/24", ip_range="10.0.0.128/25")
    assert pool.allocate(A("10.0.0.20")) == A("10.0.0.20")


def test_release_of_free_address_is_a_no_op() -> None:
    pool = parse_pool_config("10.0.0.0/24")
    pool.release(A("10.0.0.9"))
    assert pool.used == set()


def test_release_outside_subnet_is_refused() -> None:
    with pytest.raises(InvalidAddress) as err:
        parse_pool_config("10.0.0.0/24").release(A("10.9.0.1"))
    assert err.value.message == "invalid address 10.9.0.1: it is not in subnet 10.0.0.0/24"


# --- persistence -------------------------------------------------------------------------------

def test_to_dict_round_trip_keeps_cursor_and_used_set() -> None:
    pool = parse_pool_config("10.0.0.0/24", ip_range="10.0.0.0/25")
    allocate_n(pool, 3)
    pool.release(A("10.0.0.3"))
    saved = json.loads(json.dumps(pool.to_dict()))
    assert saved == {"subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "ip_range": "10.0.0.0/25",
                     "cursor": "10.0.0.5", "used": ["10.0.0.2", "10.0.0.4"]}
    restored = AddressPool.from_dict(saved)
    assert restored == pool
    assert str(restored.allocate()) == "10.0.0.5"


def test_from_dict_of_fresh_pool_without_cursor() -> None:
    pool = AddressPool.from_dict({"subnet": "10.0.0.0/24", "gateway": "10.0.0.1", "ip_range": None,
                                  "cursor": None, "used": []})
    assert allocate_n(pool, 1) == ["10.0.0.2"]


# --- validation messages -----------------------------------------------------------------------

@pytest.mark.parametrize(("args", "message"), [
    (("10.10.10.0/8",), "invalid subnet 10.10.10.0/8: it should be 10.0.0.0/8"),
    (("10.0.0.0/8", "192.168.0.1"),
     "invalid gateway 192.168.0.1: parent subnet 10.0.0.0/8 doesn't contain this address"),
    (("10.0.0.0/16", "", "10.1.0.0/24"),
     "invalid ip-range 10.1.0.0/24: parent subnet 10.0.0.0/16 doesn't contain ip-range"),
    (("10.0.0.0/16", "", "10.0.0.0/8"),
     "invalid ip-range 10.0.0.0/8: CIDR block is bigger than its parent subnet 10.0.0.0/16"),
    (("10.0.0.0/16", "", "10.0.0.1/24"), "invalid ip-range 10.0.0.1/24: it should be 10.0.0.0/24"),
    (("10.0.0.0",), "invalid subnet 10.0.0.0: invalid CIDR address"),
    (("10.0.0.300/24",), "invalid subnet 10.0.0.300/24: invalid CIDR address"),
    (("fd00::/64",), "invalid subnet fd00::/64: only IPv4 is supported"),
    (("10.0.0.0/24", "10.0.0.x"), "invalid gateway 10.0.0.x: invalid IP address"),
    (("10.0.0.0/24", "10.0.0.255"),
     "invalid gateway 10.0.0.255: it is the network or broadcast address of 10.0.0.0/24"),
])
def test_bad_pool_config_is_refused_with_docker_message(args: tuple[str, ...], message: str) -> None:
    with pytest.raises(InvalidPoolConfig) as err:
        parse_pool_config(*args)
    assert err.value.message == message
    assert str(err.value) == message


def test_gateway_defaults_to_first_host_of_subnet() -> None:
    assert parse_pool_config("172.18.0.0/16").gateway == A("172.18.0.1")


def test_gateway_may_lie_outside_ip_range() -> None:
    pool = parse_pool_config("10.0.0.0/24", gateway="10.0.0.254", ip_range="10.0.0.0/25")
    assert (pool.gateway, allocate_n(pool, 1)) == (A("10.0.0.254"), ["10.0.0.1"])


def test_overlapping_subnet_is_refused() -> None:
    with pytest.raises(PoolOverlap) as err:
        check_overlap(N("10.0.1.0/24"), [N("192.168.0.0/20"), N("10.0.0.0/16")])
    assert err.value.message == "invalid pool request: Pool overlaps with other one on this address space"


def test_disjoint_subnet_passes_overlap_check() -> None:
    check_overlap(N("10.1.0.0/16"), [N("10.0.0.0/16"), N("10.2.0.0/16")])


def test_all_errors_are_ipam_errors() -> None:
    for cls in (InvalidPoolConfig, PoolOverlap, InvalidAddress, AddressInUse, PoolExhausted, NoFreePool):
        assert issubclass(cls, IPAMError)


# --- pool picking ------------------------------------------------------------------------------

def test_default_local_pools_match_docker() -> None:
    pools = default_local_pools()
    assert pools[:2] == [N("172.17.0.0/16"), N("172.18.0.0/16")]
    assert pools[14] == N("172.31.0.0/16")
    assert pools[15:17] == [N("192.168.0.0/20"), N("192.168.16.0/20")]
    assert pools[-1] == N("192.168.240.0/20")
    assert len(pools) == 31


def test_pick_skips_subnets_in_use() -> None:
    assert pick_free_subnet([N("172.17.0.0/16")], []) == N("172.18.0.0/16")


def test_pick_skips_subnets_routed_on_the_host() -> None:
    picked = pick_free_subnet([N("172.17.0.0/16")], [N("172.18.3.0/24"), N("172.19.0.0/16")])
    assert picked == N("172.20.0.0/16")


def test_pick_ignores_the_default_route() -> None:
    assert pick_free_subnet([], [N("0.0.0.0/0")]) == N("172.17.0.0/16")


def test_pick_falls_through_to_192_168_slash_20s() -> None:
    assert pick_free_subnet([N("172.16.0.0/12")], [N("192.168.0.0/24")]) == N("192.168.16.0/20")


def test_pick_from_given_pools() -> None:
    pools = [N("10.0.0.0/24"), N("10.0.1.0/24")]
    assert pick_free_subnet([N("10.0.0.0/24")], [], pools) == N("10.0.1.0/24")


def test_pick_with_everything_taken_is_refused() -> None:
    with pytest.raises(NoFreePool) as err:
        pick_free_subnet([N("172.16.0.0/12")], [N("192.168.0.0/16")])
    assert err.value.message == ("could not find an available, non-overlapping IPv4 address pool "
                                 "among the defaults to assign to the network")
