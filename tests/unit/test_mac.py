"""Unit tests for common.mac: Docker's IP-derived MAC rule."""
from ipaddress import IPv4Address

import pytest

from common.mac import mac_from_ip


def test_mac_of_docker0_first_container() -> None:
    assert mac_from_ip("172.17.0.2") == "02:42:ac:11:00:02"


def test_mac_accepts_ipv4address() -> None:
    assert mac_from_ip(IPv4Address("10.0.9.255")) == "02:42:0a:00:09:ff"


def test_mac_of_high_octets_is_lowercase_two_digit_hex() -> None:
    assert mac_from_ip("255.1.16.0") == "02:42:ff:01:10:00"


def test_mac_rejects_non_ipv4() -> None:
    with pytest.raises(ValueError):
        mac_from_ip("fd00::1")
