"""Unit tests for agent.network.ports: -p/--expose parsing with Docker's messages, API shapes, allocation."""
from pathlib import Path

import pytest

from agent.network.ports import (PortAllocator, PortBinding, PortConflict, PortSpecError,
                                 ephemeral_range, from_docker, parse_expose, parse_publish, to_docker)


@pytest.mark.parametrize("spec, expected", [
    ("80", [PortBinding(80, "tcp", "", 0)]),
    ("8080:80", [PortBinding(80, "tcp", "", 8080)]),
    ("127.0.0.1:8080:80", [PortBinding(80, "tcp", "127.0.0.1", 8080)]),
    ("127.0.0.1::80", [PortBinding(80, "tcp", "127.0.0.1", 0)]),
    ("0.0.0.0:8080:80", [PortBinding(80, "tcp", "", 8080)]),
    ("8080:80/udp", [PortBinding(80, "udp", "", 8080)]),
    ("8080:80/UDP", [PortBinding(80, "udp", "", 8080)]),
    ("8000-8010:80", [PortBinding(80, "tcp", "", 8000, 8010)]),
    ("8000-8001:80-81", [PortBinding(80, "tcp", "", 8000), PortBinding(81, "tcp", "", 8001)]),
    ("80-81", [PortBinding(80, "tcp", "", 0), PortBinding(81, "tcp", "", 0)]),
])
def test_parse_publish_forms(spec: str, expected: list[PortBinding]) -> None:
    assert parse_publish(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("abc", "invalid containerPort: abc"),
    ("8080:abc", "invalid containerPort: abc"),
    ("70000", "invalid containerPort: 70000"),
    ("80-70", "invalid containerPort: 80-70"),
    ("0", "invalid containerPort: 0"),
    ("abc:80", "invalid hostPort: abc"),
    ("127.0.0.1:abc:80", "invalid hostPort: abc"),
    ("70000:80", "invalid hostPort: 70000"),
    ("80/xyz", "invalid proto: xyz"),
    ("1.2.3:80:80", "invalid IP address: 1.2.3"),
    ("", "no port specified: <empty>"),
    ("8080:", "no port specified: 8080:<empty>"),
    ("8000-8010:80-81", "invalid ranges specified for container and host Ports: 80-81 and 8000-8010"),
    ("[::1]:80:80", "invalid IP address: ::1 (IPv6 port publishing is not supported)"),
])
def test_parse_publish_rejects_with_docker_message(spec: str, message: str) -> None:
    with pytest.raises(PortSpecError) as info:
        parse_publish(spec)
    assert info.value.message == message
    assert str(info.value) == message


def test_parse_expose_forms() -> None:
    assert parse_expose("80") == [(80, "tcp")]
    assert parse_expose("53/udp") == [(53, "udp")]
    assert parse_expose("8000-8002") == [(8000, "tcp"), (8001, "tcp"), (8002, "tcp")]


@pytest.mark.parametrize("spec, message", [
    ("abc", "invalid range format for --expose: abc"),
    ("70000", "invalid range format for --expose: 70000"),
    ("80/xyz", "invalid proto: xyz"),
])
def test_parse_expose_rejects(spec: str, message: str) -> None:
    with pytest.raises(PortSpecError) as info:
        parse_expose(spec)
    assert info.value.message == message


def test_to_docker_matches_cli_json() -> None:
    bindings = parse_publish("8080:80") + parse_publish("127.0.0.1::80") + parse_publish("53/udp") \
        + parse_publish("8000-8010:90")
    exposed, port_map = to_docker(bindings)
    assert exposed == {"80/tcp": {}, "53/udp": {}, "90/tcp": {}}
    assert port_map == {"80/tcp": [{"HostIp": "", "HostPort": "8080"},
                                   {"HostIp": "127.0.0.1", "HostPort": ""}],
                        "53/udp": [{"HostIp": "", "HostPort": ""}],
                        "90/tcp": [{"HostIp": "", "HostPort": "8000-8010"}]}


def test_from_docker_round_trips_to_docker() -> None:
    bindings = parse_publish("8080:80") + parse_publish("127.0.0.1::80") + parse_publish("8000-8010:90")
    assert from_docker(*to_docker(bindings), publish_all=False) == sorted(
        bindings, key=lambda b: (b.container_port, b.proto, b.host_ip, b.host_port))


def test_from_docker_publish_all_picks_ports_for_unbound_exposed() -> None:
    got = from_docker({"80/tcp": {}, "53/udp": {}, "443/tcp": {}},
                      {"443/tcp": [{"HostIp": "", "HostPort": "8443"}]}, publish_all=True)
    assert got == [PortBinding(53, "udp"), PortBinding(80, "tcp"), PortBinding(443, "tcp", "", 8443)]


def test_from_docker_without_publish_all_ignores_exposed_and_accepts_null_shapes() -> None:
    assert from_docker({"80/tcp": {}}, None, publish_all=False) == []
    assert from_docker(None, {"80": [{"HostPort": "8080"}]}, publish_all=False) == [
        PortBinding(80, "tcp", "", 8080)]


@pytest.mark.parametrize("exposed, port_map, message", [
    ({}, {"abc/tcp": []}, 'invalid port specification: "abc"'),
    ({}, {"80/tcp": [{"HostIp": "", "HostPort": "x1"}]}, 'invalid port specification: "x1"'),
    ({}, {"80/tcp": [{"HostIp": "300.1.1.1", "HostPort": "1"}]}, "invalid IP address: 300.1.1.1"),
    ({}, {"80/sctp": []}, "invalid proto: sctp"),
    ({"0/tcp": {}}, {}, 'invalid port specification: "0"'),
])
def test_from_docker_rejects_bad_shapes(exposed: dict, port_map: dict, message: str) -> None:
    with pytest.raises(PortSpecError) as info:
        from_docker(exposed, port_map, publish_all=False)
    assert info.value.message == message


def test_ephemeral_range_reads_proc_file(tmp_path: Path) -> None:
    f = tmp_path / "range"
    f.write_text("40000\t40100\n")
    assert ephemeral_range(f) == (40000, 40100)
    assert ephemeral_range(tmp_path / "missing") == (32768, 60999)


def test_allocator_picks_serially_without_reusing_released_port() -> None:
    alloc = PortAllocator(40000, 40003)
    assert [alloc.allocate("tcp", "") for _ in range(3)] == [40000, 40001, 40002]
    alloc.release("tcp", "", 40000)
    assert alloc.allocate("tcp", "") == 40003
    assert alloc.allocate("tcp", "") == 40000  # wraps round to the freed one


def test_allocator_tcp_and_udp_are_independent() -> None:
    alloc = PortAllocator(40000, 40010)
    assert alloc.allocate("tcp", "", 8080) == 8080
    assert alloc.allocate("udp", "", 8080) == 8080


def test_allocator_conflict_message_is_dockers() -> None:
    alloc = PortAllocator(40000, 40010)
    alloc.allocate("tcp", "", 8080)
    with pytest.raises(PortConflict) as info:
        alloc.allocate("tcp", "", 8080)
    assert info.value.message == "Bind for 0.0.0.0:8080 failed: port is already allocated"


def test_allocator_all_addresses_conflicts_with_specific_address_both_ways() -> None:
    alloc = PortAllocator(40000, 40010)
    alloc.allocate("tcp", "127.0.0.1", 8080)
    with pytest.raises(PortConflict, match=r"^Bind for 0\.0\.0\.0:8080 failed: port is already allocated$"):
        alloc.allocate("tcp", "", 8080)
    assert alloc.allocate("tcp", "127.0.0.2", 8080) == 8080
    alloc.allocate("tcp", "", 9090)
    with pytest.raises(PortConflict, match=r"^Bind for 10\.0\.0\.1:9090 failed: port is already allocated$"):
        alloc.allocate("tcp", "10.0.0.1", 9090)


def test_allocator_range_takes_first_free_and_fails_when_full() -> None:
    alloc = PortAllocator(40000, 40010)
    alloc.allocate("tcp", "", 8000)
    assert alloc.allocate("tcp", "", (8000, 8001)) == 8001
    with pytest.raises(PortConflict) as info:
        alloc.allocate("tcp", "", (8000, 8001))
    assert info.value.message == "Bind for 0.0.0.0:8000-8001 failed: port is already allocated"


def test_allocator_dynamic_exhaustion() -> None:
    alloc = PortAllocator(40000, 40001)
    alloc.allocate("tcp", "")
    alloc.allocate("tcp", "")
    with pytest.raises(PortConflict, match="^all ports are allocated$"):
        alloc.allocate("tcp", "")


def test_allocator_release_and_reallocate_same_port() -> None:
    alloc = PortAllocator(40000, 40010)
    alloc.allocate("tcp", "", 8080)
    alloc.release("tcp", "", 8080)
    alloc.release("tcp", "", 8080)
    assert alloc.allocate("tcp", "", 8080) == 8080


def test_allocator_release_owner_frees_only_its_ports() -> None:
    alloc = PortAllocator(40000, 40010)
    alloc.allocate("tcp", "", 8080, owner="c1")
    alloc.allocate("udp", "", 53, owner="c1")
    alloc.allocate("tcp", "", 8081, owner="c2")
    alloc.release_owner("c1")
    assert alloc.allocated() == [("tcp", "", 8081, "c2")]


def test_allocator_persistence_round_trip_keeps_ports_and_serial_position() -> None:
    alloc = PortAllocator(40000, 40010)
    alloc.allocate("tcp", "", owner="c1")
    alloc.allocate("tcp", "127.0.0.1", 8080, owner="c2")
    copy = PortAllocator.from_dict(alloc.to_dict())
    assert copy.allocated() == alloc.allocated()
    assert copy.allocate("tcp", "") == 40001
    with pytest.raises(PortConflict):
        copy.allocate("tcp", "", 8080)


def test_allocator_rejects_bad_input() -> None:
    alloc = PortAllocator(40000, 40010)
    with pytest.raises(PortSpecError, match="invalid proto: sctp"):
        alloc.allocate("sctp", "")
    with pytest.raises(PortSpecError, match="invalid hostPort: 70000"):
        alloc.allocate("tcp", "", 70000)
    assert alloc.allocated() == []


def test_a_port_stays_taken_for_all_addresses_until_its_last_specific_holder_releases_it() -> None:
    alloc = PortAllocator(40000, 40010)
    alloc.allocate("tcp", "10.0.0.1", 8080, owner="a")
    alloc.allocate("tcp", "10.0.0.2", 8080, owner="b")
    alloc.release_owner("a")
    with pytest.raises(PortConflict, match="Bind for 0.0.0.0:8080 failed: port is already allocated"):
        alloc.allocate("tcp", "", 8080, owner="c")
    alloc.release("tcp", "10.0.0.2", 8080)
    assert alloc.allocate("tcp", "", 8080, owner="c") == 8080
    assert PortAllocator.from_dict(alloc.to_dict()).allocated() == [("tcp", "", 8080, "c")]
    alloc.release_owner("c")
    assert alloc.allocated() == []
