"""`shoal port` lists published ports as the docker CLI's `port`: `PRIVATE -> HOST:PORT` lines in natural order,
or the frontends of one private port, with the CLI's words for a bad or unpublished one."""

from __future__ import annotations

import pytest

from shoal.cli.ports_view import port_lines

INSPECT = {"NetworkSettings": {"Ports": {
    "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
    "9/udp": [{"HostIp": "0.0.0.0", "HostPort": "9009"}],
    "443/tcp": None,
}}}


def test_every_published_port_in_natural_order_with_ipv6_in_brackets() -> None:
    assert port_lines(INSPECT, None, "web") == ["9/udp -> 0.0.0.0:9009", "80/tcp -> 0.0.0.0:8080",
                                                 "80/tcp -> [::]:8080"]


@pytest.mark.parametrize(("asked", "lines"), [("80", ["0.0.0.0:8080", "[::]:8080"]), ("9/udp", ["0.0.0.0:9009"])])
def test_one_private_port_lists_its_frontends_tcp_by_default(asked: str, lines: list[str]) -> None:
    assert port_lines(INSPECT, asked, "web") == lines


@pytest.mark.parametrize(("asked", "message"), [
    ("443", "Error: No public port '443' published for web"),
    ("81/tcp", "Error: No public port '81/tcp' published for web"),
    ("http", 'Error: invalid port (http): strconv.ParseUint: parsing "http": invalid syntax'),
    ("70000", 'Error: invalid port (70000): strconv.ParseUint: parsing "70000": value out of range'),
])
def test_a_bad_or_unpublished_port_is_refused_with_the_docker_clis_words(asked: str, message: str) -> None:
    with pytest.raises(ValueError) as e:
        port_lines(INSPECT, asked, "web")
    assert str(e.value) == message


def test_a_container_without_ports_prints_nothing() -> None:
    assert port_lines({"NetworkSettings": {"Ports": {}}}, None, "web") == []
