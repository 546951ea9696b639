"""The macvlan driver's refusals that need no kernel (agent/network/drivers/macvlan.py), and the
registry's answer for ipvlan on a kernel without it."""
from __future__ import annotations

import pytest

from agent.network.drivers import default_registry
from agent.network.drivers.macvlan import MacvlanDriver
from common.errdefs import ShoalError, http_status


def refusal(options: dict[str, str]) -> tuple[int, str]:
    with pytest.raises(ShoalError) as caught:
        MacvlanDriver("shoal:test:").check_create(options)
    return http_status(caught.value), caught.value.message


def test_macvlan_without_a_parent_is_a_400_naming_the_option() -> None:
    assert refusal({}) == (400, "the macvlan driver needs a parent interface: -o parent=IFACE")


def test_macvlan_with_an_unknown_option_is_a_400_naming_it() -> None:
    assert refusal({"parent": "eth0", "vlan": "10"}) == (400, "invalid option vlan for the macvlan driver")


def test_macvlan_with_a_parent_name_longer_than_the_kernel_allows_is_a_400() -> None:
    assert refusal({"parent": "x" * 16}) == (400, f"invalid parent interface name {'x' * 16!r}")


def test_ipvlan_is_registered_and_refused_with_the_kernels_reason() -> None:
    with pytest.raises(ShoalError) as caught:
        default_registry("shoal:test:", 1500).get("ipvlan").check_create({"parent": "eth0"})
    assert http_status(caught.value) == 501
    assert "ipvlan support, which this host's kernel does not have" in caught.value.message


def test_macvlan_endpoints_have_interfaces_and_accept_the_parents_lan() -> None:
    driver = default_registry("shoal:test:", 1500).get("macvlan")
    assert driver.has_interfaces and driver.subnet_on_host_lan and not driver.exclusive


@pytest.mark.parametrize("parent, expected", [("eth0.10", ("eth0", 10)), ("eth0.4094", ("eth0", 4094)),
                                              ("eth0", None), ("eth0.0", None), ("eth0.4095", None),
                                              (".10", None), ("eth0.x", None)])
def test_the_8021q_parent_form_is_base_dot_vlan_id(parent: str, expected: tuple[str, int] | None) -> None:
    from agent.network.macvlan import vlan_parent

    assert vlan_parent(parent) == expected
