"""Specification of agent.network.meshplan: published ingress ports from bindings, the ingress
sandbox's nftables table, the host's DOCKER-INGRESS rules and where its FORWARD jump goes."""
from __future__ import annotations

from ipaddress import IPv4Address as IP

import pytest

from agent.network import meshplan
from agent.network.service_binding import Backend, ServiceBinding


def _b(service: str, ports: tuple[tuple[int, int, str], ...], *ips: str, net: str = "ing") -> ServiceBinding:
    return ServiceBinding(service, service, net, IP("10.255.0.9"),
                          tuple(Backend(f"t{i}", IP(ip)) for i, ip in enumerate(ips)), ingress_ports=ports)


def test_ingress_ports_of_the_ingress_network_only_sorted_with_sorted_backends() -> None:
    ports = meshplan.ingress_ports([_b("web", ((8080, 80, "TCP"),), "10.255.0.6", "10.255.0.5"),
                                    _b("other", ((9090, 90, "tcp"),), "10.0.0.5", net="overlay1")], "ing")
    assert ports == [meshplan.IngressPort("tcp", 8080, 80, "web", (IP("10.255.0.5"), IP("10.255.0.6")))]


def test_ingress_ports_refuse_one_port_for_two_services_with_swarms_words() -> None:
    with pytest.raises(ValueError) as err:
        meshplan.ingress_ports([_b("web", ((8080, 80, "tcp"),)), _b("api", ((8080, 81, "tcp"),))], "ing")
    assert str(err.value) == "port '8080' is already in use by service 'web' as an ingress port"


def test_ingress_ports_refuse_a_bad_protocol() -> None:
    with pytest.raises(ValueError) as err:
        meshplan.ingress_ports([_b("web", ((8080, 80, "sctp"),))], "ing")
    assert str(err.value) == "invalid protocol 'sctp' for published port 8080"


def test_render_sandbox_spreads_each_port_and_masquerades_out_of_the_ingress_interface() -> None:
    ports = meshplan.ingress_ports([_b("web", ((8080, 80, "tcp"),), "10.255.0.5", "10.255.0.6"),
                                    _b("idle", ((9090, 90, "udp"),))], "ing")
    lines = meshplan.render_sandbox(ports, "eth0").splitlines()
    assert lines[:3] == ["table ip shoal_mesh", "delete table ip shoal_mesh", "table ip shoal_mesh {"]
    assert "    tcp dport 8080 dnat ip to numgen random mod 2 map { 0 : 10.255.0.5 . 80, 1 : 10.255.0.6 . 80 }" in lines
    assert not any("9090" in line for line in lines)  # no task: nothing listens in the sandbox, refused there
    assert '    oifname "eth0" ct status dnat masquerade' in lines


def test_render_host_dnats_to_the_sandbox_and_accepts_forwarding() -> None:
    ports = meshplan.ingress_ports([_b("web", ((8080, 80, "tcp"),), "10.255.0.5")], "ing")
    text = meshplan.render_host(ports, IP("172.18.0.2"), "docker_gwbridge")
    assert text["nat"].splitlines() == [
        "*nat", ":DOCKER-INGRESS - [0:0]",
        "-A DOCKER-INGRESS -p tcp -m tcp --dport 8080 -j DNAT --to-destination 172.18.0.2:8080",
        "-A DOCKER-INGRESS -j RETURN", "COMMIT"]
    assert text["filter"].splitlines() == [
        "*filter", ":DOCKER-INGRESS - [0:0]",
        "-A DOCKER-INGRESS -p tcp -m tcp --dport 8080 -j ACCEPT",
        "-A DOCKER-INGRESS -p tcp -m state --state RELATED,ESTABLISHED -m tcp --sport 8080 -j ACCEPT",
        "-A DOCKER-INGRESS -j RETURN", "COMMIT"]


def test_render_host_refuses_a_bad_bridge_name() -> None:
    with pytest.raises(ValueError) as err:
        meshplan.render_host([], IP("172.18.0.2"), "a bridge")
    assert str(err.value) == "invalid interface name 'a bridge'"


@pytest.mark.parametrize(("rules", "position"), [
    (["-P FORWARD ACCEPT"], 1),
    (["-P FORWARD ACCEPT", "-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-FORWARD"], 2),
    (["-P FORWARD ACCEPT", "-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-INGRESS", "-A FORWARD -j DOCKER-FORWARD"], None),
    # shoal's firewall re-inserted its jumps at the head: ours must move up again
    (["-P FORWARD ACCEPT", "-A FORWARD -j DOCKER-USER", "-A FORWARD -j DOCKER-FORWARD", "-A FORWARD -j DOCKER-INGRESS"], 2),
    (["-P FORWARD ACCEPT", "-A FORWARD -j DOCKER-INGRESS", "-A FORWARD -j DOCKER-INGRESS"], 1),
])
def test_forward_position(rules: list[str], position: int | None) -> None:
    assert meshplan.forward_position(rules) == position
