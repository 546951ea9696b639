"""Overlay networks through the shoal daemon (issue 11 items 2 and 3) on a two-host swarm: once the node
is in a swarm the overlay driver is enabled (shoal/swarm/overlay.py), a runc container on an overlay
gets eth0 there and its way out on docker_gwbridge, a host with no endpoint has no namespace for the
network, a daemon kill -9 plumbs the endpoint again, and the namespace goes with the last container.

The network is made on a manager (the allocator gives its VNI) and the container's address comes from the
managers' attachment; cross-host traffic is in test_overlay_driver/_dataplane and test_overlay_flow.
"""
from __future__ import annotations

import json

import pytest

from tests.lab.helpers import inspect_first, running_lab, shoal, wait_until

pytestmark = pytest.mark.lab



@pytest.fixture(scope="module")
def lab():
    with running_lab(hosts=2) as lab:
        shoal(lab, "swarm", "init", "--advertise-addr", lab.address("h1"))
        token = shoal(lab, "swarm", "join-token", "-q", "worker").stdout.strip()
        shoal(lab, "swarm", "join", "--token", token, f"{lab.address('h1')}:2377", host="h2")
        # the managers allocate the VNI (ingress took 4096) and the address; the node makes the network (wire11)
        shoal(lab, "network", "create", "-d", "overlay", "--subnet", "10.0.9.0/24", "--attachable", "ov")
        shoal(lab, "run", "-d", "--name", "a1", "--network", "ov", "busybox", "sleep", "3600")
        yield lab


def overlay_namespaces(lab, host: str) -> list[str]:
    names = lab.exec(host, ["ip", "netns", "list"]).stdout.split()
    # the ingress overlay (VNI 4096) has a namespace on every node: the routing mesh's ingress sandbox is on it
    return [n for n in names if n.startswith(f"{lab.netns(host)}-ov-") and not n.startswith(f"{lab.netns(host)}-ov-4096-")]


def gwbridge_address(lab, name: str) -> str:
    container_id = inspect_first(lab, "inspect", name)["Id"]
    return inspect_first(lab, "network", "inspect", "docker_gwbridge")["Containers"][container_id]["IPv4Address"]


def test_an_overlay_network_has_scope_swarm_and_its_vni_option(lab):
    net = inspect_first(lab, "network", "inspect", "ov")
    assert (net["Driver"], net["Scope"], net["Options"]) == \
        ("overlay", "swarm", {"com.docker.network.driver.overlay.vxlanid_list": "4097"})


def test_an_overlay_container_has_eth0_on_the_overlay_and_eth1_on_docker_gwbridge(lab):
    out = shoal(lab, "exec", "a1", "ip", "-o", "-4", "addr").stdout
    assert "eth0    inet 10.0.9.2/24" in out
    assert f"eth1    inet {gwbridge_address(lab, 'a1')}" in out


def test_the_default_route_of_an_overlay_only_container_is_docker_gwbridge(lab):
    routes = shoal(lab, "exec", "a1", "ip", "route").stdout
    assert routes.splitlines()[0].split() == ["default", "via", "172.18.0.1", "dev", "eth1"]


def test_an_overlay_container_reaches_another_host_through_docker_gwbridge(lab):
    result = shoal(lab, "exec", "a1", "ping", "-c1", "-W2", lab.address("h2"), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_container_inspect_lists_the_overlay_but_not_docker_gwbridge(lab):
    networks = inspect_first(lab, "inspect", "a1")["NetworkSettings"]["Networks"]
    assert list(networks) == ["ov"]
    assert networks["ov"]["Gateway"] == ""


def test_docker_gwbridge_lists_the_containers_gateway_endpoint(lab):
    container_id = inspect_first(lab, "inspect", "a1")["Id"]
    containers = inspect_first(lab, "network", "inspect", "docker_gwbridge")["Containers"]
    assert containers[container_id]["Name"] == f"gateway_{container_id[:12]}"
    # .2 or .3: the routing mesh's ingress sandbox takes the first free address when it is made first (Docker's too)
    assert containers[container_id]["IPv4Address"] in ("172.18.0.2/16", "172.18.0.3/16")


def test_a_host_with_no_endpoint_on_the_overlay_has_no_namespace_for_it(lab):
    assert len(overlay_namespaces(lab, "h1")) == 1
    assert overlay_namespaces(lab, "h2") == []


def test_the_overlay_endpoint_is_plumbed_again_after_a_daemon_kill_9(lab):
    lab.restart_daemon("h1", kill9=True)

    def eth0() -> str:
        result = shoal(lab, "exec", "a1", "ip", "-o", "-4", "addr", "show", "eth0", check=False)
        return result.stdout if result.returncode == 0 else ""

    assert "inet 10.0.9.2/24" in wait_until(eth0, timeout=30)
    assert len(overlay_namespaces(lab, "h1")) == 1


def test_the_overlay_namespace_goes_with_the_last_container(lab):
    shoal(lab, "run", "-d", "--name", "a2", "--network", "ov", "busybox", "sleep", "3600")
    shoal(lab, "rm", "-f", "a1")
    assert len(overlay_namespaces(lab, "h1")) == 1
    shoal(lab, "rm", "-f", "a2")
    assert overlay_namespaces(lab, "h1") == []
    assert json.loads(lab.exec("h1", ["ip", "-j", "link", "show", "type", "vxlan"]).stdout) == []
