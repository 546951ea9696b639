"""Specification of agent.network.controller's refusals: each is a 400/403/404/409 with Docker's
wording where Docker has one, decided before any kernel object or record is made."""
from __future__ import annotations

from typing import Any

import pytest

from agent.network.controller import NetworkController, NetworkOptions
from agent.network.records import EndpointRecord, IPAMConfig, NetworkRecord
from common.errdefs import ShoalError, http_status
from shoal.engine.requests import NetworkCreate


class MemoryStore:
    def __init__(self) -> None:
        self.kinds: dict[str, dict[str, dict[str, Any]]] = {}

    def save(self, kind: str, object_id: str, data: dict[str, Any]) -> None:
        self.kinds.setdefault(kind, {})[object_id] = data

    def delete(self, kind: str, object_id: str) -> None:
        self.kinds.get(kind, {}).pop(object_id, None)

    def load_all(self, kind: str) -> dict[str, dict[str, Any]]:
        return dict(self.kinds.get(kind, {}))

    def load_records(self, kind: str, parse: Any) -> dict[str, Any]:
        return {key: parse(value) for key, value in self.kinds.get(kind, {}).items()}


@pytest.fixture
def controller() -> NetworkController:
    net = NetworkController(MemoryStore(), NetworkOptions(), daemon_id="d" * 64, clock=lambda: "t")
    for net_id, name, driver in (("h" * 64, "host", "host"), ("z" * 64, "none", "null")):
        net.networks[net_id] = NetworkRecord(id=net_id, name=name, driver=driver, created="t", predefined=True)
    net.networks["u" * 64] = NetworkRecord(id="u" * 64, name="user", driver="bridge", created="t",
                                           ipam_config=[IPAMConfig(subnet="10.7.0.0/24", gateway="10.7.0.1")])
    return net


def refusal(controller: NetworkController, **fields: Any) -> tuple[int, str]:
    with pytest.raises(ShoalError) as caught:
        controller.create(NetworkCreate(**fields))
    assert controller.state.load_all("networks") == {}  # nothing half-done
    return http_status(caught.value), caught.value.message


def test_a_newline_in_a_network_name_is_refused(controller):
    assert refusal(controller, name="a\nb") == (
        400, "invalid network name 'a\\nb': control character '\\n' is not allowed")


def test_a_256_character_network_name_is_refused(controller):
    assert refusal(controller, name="n" * 256) == (
        400, f"invalid network name {'n' * 32!r}...: 256 characters, at most 255")


def test_a_second_host_network_is_forbidden(controller):
    assert refusal(controller, name="h2", driver="host") == (403, 'only one instance of "host" network is allowed')


def test_the_name_none_is_forbidden_as_the_null_networks(controller):
    assert refusal(controller, name="none") == (403, 'only one instance of "null" network is allowed')


def test_a_taken_name_is_a_conflict(controller):
    assert refusal(controller, name="user", driver="weave") == (409, "network with name user already exists")


def test_an_unknown_driver_is_not_found(controller):
    assert refusal(controller, name="n", driver="weave") == (404, 'plugin "weave" not found')


def test_overlay_on_a_node_outside_a_swarm_is_unavailable(controller):
    status, message = refusal(controller, name="n", driver="overlay")
    assert (status, message.split(".")[0]) == (503, "This node is not a swarm manager")


@pytest.mark.parametrize("subnet", ["127.0.0.0/16", "224.0.0.0/24", "169.254.1.0/24", "0.0.0.0/8"])
def test_a_subnet_that_cannot_work_is_refused_before_anything_is_made(controller, subnet):
    status, message = refusal(controller, name="n", ipam_config=[IPAMConfig(subnet=subnet)])
    assert (status, message.startswith(f"invalid pool request: subnet {subnet} overlaps the ")) == (400, True)


def test_a_static_ip_outside_the_subnet_is_refused_at_create(controller):
    with pytest.raises(ShoalError) as caught:
        controller.check_endpoint_request(controller.networks["u" * 64], "10.8.0.9")
    assert (http_status(caught.value), caught.value.message) == (
        400, "no configured subnet or ip-range contain the IP address 10.8.0.9")


def test_a_static_ip_on_a_predefined_network_is_refused(controller):
    with pytest.raises(ShoalError) as caught:
        controller.check_endpoint_request(controller.networks["z" * 64], "10.8.0.9")
    assert (http_status(caught.value), caught.value.message) == (
        400, "user specified IP address is supported on user defined networks only")


def test_ipam_is_rebuilt_from_the_live_endpoints(controller):
    from common.ipam import parse_pool_config

    pool = controller.pools["u" * 64] = parse_pool_config("10.7.0.0/24", "10.7.0.1")
    for _ in range(17):
        pool.allocate()  # leaked by a SIGKILL during starts
    live = EndpointRecord(id="e", network_id="u" * 64, container_id="c", ipv4="10.7.0.5", prefixlen=24)
    controller.rebuild_allocations([live])
    assert controller.state.load_all("ipam")["u" * 64]["used"] == ["10.7.0.5"]


@pytest.fixture
def routed_10_0_9(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The host's routes made deterministic: 10.0.9.0/24 is routed here; each consultation is recorded."""
    import ipaddress

    from agent.network import controller as controller_module

    asked: list[str] = []

    def host_routed_networks(exclude_ifname: str = "") -> list[ipaddress.IPv4Network]:
        asked.append(exclude_ifname)
        return [ipaddress.IPv4Network("10.0.9.0/24")]

    monkeypatch.setattr(controller_module.kernel, "host_routed_networks", host_routed_networks)
    return asked


def test_a_bridge_subnet_routed_on_the_host_is_refused(controller, routed_10_0_9):
    status, message = refusal(controller, name="n", ipam_config=[IPAMConfig(subnet="10.0.9.0/24")])
    assert (status, message) == (403, "invalid pool request: Pool 10.0.9.0/24 overlaps with 10.0.9.0/24, "
                                      "which is already routed on this host")


def test_an_overlay_subnet_is_not_checked_against_the_hosts_routes(controller, routed_10_0_9):
    import ipaddress

    from agent.network.drivers.overlay import OPT_VNI, OverlayDriver
    from vxlan.dataplane import OverlayDataPlane

    controller.drivers.register(OverlayDriver(OverlayDataPlane("unit-"), ipaddress.IPv4Address("192.168.200.11")))
    record, _warning = controller.create(NetworkCreate(name="ov", driver="overlay", options={OPT_VNI: "4097"},
                                                       ipam_config=[IPAMConfig(subnet="10.0.9.0/24")]))
    assert (record.driver, record.ipam_config[0].subnet, routed_10_0_9) == ("overlay", "10.0.9.0/24", [])
