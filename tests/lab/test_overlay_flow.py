"""Issue 11's user flow on a 5-host swarm (managers h1-h3, workers h4-h5): an attachable overlay made on a manager,
containers run on it on h2 and h5 get the managers' addresses (shoal/swarm/container_attach.py), reach each other by
name across hosts over VXLAN (peers and names gossiped: shoal/swarm/overlay_gossip.py), go out via docker_gwbridge;
inspect on a manager; a host without endpoint has no namespace; a kill -9 of h5's daemon heals with no stale FDB entry.
One cluster for the module; tests run in file order."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from shoal.lab import Lab, data_dir, host_address
from tests.lab.helpers import wait_until
from tests.lab.swarm_lab import inspect, node_id, running_swarm, sh

pytestmark = pytest.mark.lab

NET = "my-multi-host-network"
VNI_OPTION = "com.docker.network.driver.overlay.vxlanid_list"


@pytest.fixture(scope="module")
def flow() -> Iterator[Lab]:
    with running_swarm(5, managers=["h2", "h3"], workers=["h4", "h5"]) as lab:
        sh(lab, "h1", "network", "create", "-d", "overlay", "--subnet", "10.0.9.0/24", "--attachable", NET)
        sh(lab, "h2", "run", "-d", "--network", NET, "--name", "a1", "busybox", "sleep", "3600")
        sh(lab, "h5", "run", "-d", "--network", NET, "--name", "a5", "busybox", "sleep", "3600")
        yield lab


def eth0(lab: Lab, host: str, name: str) -> str:
    out = sh(lab, host, "exec", name, "ip", "-o", "-4", "addr", "show", "eth0").stdout.split()
    return out[out.index("inet") + 1]


def overlay_namespaces(lab: Lab, host: str) -> list[str]:
    names = lab.exec(host, ["ip", "netns", "list"]).stdout.split()
    # the ingress overlay (VNI 4096) is on every node for the routing mesh's sandbox: only this flow's network counts
    return [n for n in names if n.startswith(f"{lab.netns(host)}-ov-") and not n.startswith(f"{lab.netns(host)}-ov-4096-")]


def ping(lab: Lab, host: str, name: str, target: str) -> subprocess.CompletedProcess[str]:
    return sh(lab, host, "exec", name, "ping", "-c3", "-w3", target, check=False)


def fdb_vteps(lab: Lab, host: str) -> dict[str, str]:
    """MAC -> remote VTEP of the permanent FDB entries in the host's overlay namespace (one network here)."""
    (ns,) = overlay_namespaces(lab, host)
    out = json.loads(lab.exec(host, ["ip", "netns", "exec", ns, "bridge", "-j", "fdb", "show"]).stdout)
    return {e["mac"]: e["dst"] for e in out if e.get("dst") and e["mac"] != "00:00:00:00:00:00"}


def test_containers_get_the_managers_addresses_on_the_attachable_overlay(flow: Lab) -> None:
    a1 = inspect(flow, "h2", "inspect", "a1")["NetworkSettings"]["Networks"][NET]
    a5 = inspect(flow, "h5", "inspect", "a5")["NetworkSettings"]["Networks"][NET]
    assert (eth0(flow, "h2", "a1"), eth0(flow, "h5", "a5")) == (f"{a1['IPAddress']}/24", f"{a5['IPAddress']}/24")
    assert (a1["IPAddress"], a5["IPAddress"]) == ("10.0.9.2", "10.0.9.3")  # the allocator's serial addresses
    assert a1["NetworkID"] == a5["NetworkID"] == inspect(flow, "h1", "network", "inspect", NET)["Id"]


def test_a_container_pings_another_host_s_container_by_name_over_the_overlay(flow: Lab) -> None:
    result = wait_until(lambda: (r := ping(flow, "h2", "a1", "a5")).returncode == 0 and r, 30)
    a5 = inspect(flow, "h5", "inspect", "a5")["NetworkSettings"]["Networks"][NET]["IPAddress"]
    assert f"PING a5 ({a5})" in result.stdout
    assert "3 packets transmitted, 3 packets received, 0% packet loss" in result.stdout


def test_the_name_resolves_the_other_way_too(flow: Lab) -> None:
    result = wait_until(lambda: (r := ping(flow, "h5", "a5", "a1")).returncode == 0 and r, 30)
    assert "0% packet loss" in result.stdout


def test_an_overlay_container_goes_out_via_docker_gwbridge(flow: Lab) -> None:
    routes = sh(flow, "h2", "exec", "a1", "ip", "route").stdout.splitlines()
    assert routes[0].split()[:5] == ["default", "via", "172.18.0.1", "dev", "eth1"]
    result = sh(flow, "h2", "exec", "a1", "ping", "-c1", "-W2", host_address("h4"), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_network_inspect_on_a_manager_shows_scope_swarm_the_vni_and_the_subnet(flow: Lab) -> None:
    net = inspect(flow, "h1", "network", "inspect", NET)
    assert (net["Scope"], net["Driver"], net["Attachable"]) == ("swarm", "overlay", True)
    assert int(net["Options"][VNI_OPTION]) >= 4096
    assert net["IPAM"]["Config"] == [{"Subnet": "10.0.9.0/24", "Gateway": "10.0.9.1"}]


def test_network_inspect_verbose_lists_the_nodes_with_endpoints_as_peers(flow: Lab) -> None:
    want = sorted([{"Name": node_id(flow, "h2"), "IP": host_address("h2")},
                   {"Name": node_id(flow, "h5"), "IP": host_address("h5")}], key=lambda p: p["Name"])

    def peers() -> list[dict[str, str]]:
        return sorted(inspect(flow, "h1", "network", "inspect", "--verbose", NET).get("Peers") or [],
                      key=lambda p: p["Name"])

    assert wait_until(lambda: peers() == want and want, 20) == want


def test_a_host_without_endpoint_has_no_namespace_for_the_overlay(flow: Lab) -> None:
    assert overlay_namespaces(flow, "h3") == []
    assert len(overlay_namespaces(flow, "h2")) == 1


def test_the_remote_container_is_a_permanent_fdb_entry_behind_its_host(flow: Lab) -> None:
    mac = inspect(flow, "h5", "inspect", "a5")["NetworkSettings"]["Networks"][NET]["MacAddress"]
    assert wait_until(lambda: fdb_vteps(flow, "h2") == {mac: host_address("h5")}, 20)


def test_after_a_kill_9_of_h5_s_daemon_connectivity_returns_with_no_stale_fdb_entry(flow: Lab) -> None:
    flow.restart_daemon("h5", kill9=True)
    result = wait_until(lambda: (r := ping(flow, "h2", "a1", "a5")).returncode == 0 and r, 60)
    assert "0% packet loss" in result.stdout
    mac = inspect(flow, "h5", "inspect", "a5")["NetworkSettings"]["Networks"][NET]["MacAddress"]
    assert wait_until(lambda: fdb_vteps(flow, "h2") == {mac: host_address("h5")}, 20)


def test_removing_the_container_releases_its_peer_and_namespace_everywhere(flow: Lab) -> None:
    sh(flow, "h5", "rm", "-f", "a5")
    assert overlay_namespaces(flow, "h5") == []
    assert wait_until(lambda: fdb_vteps(flow, "h2") == {} or None, 20) is not None
    result = ping(flow, "h2", "a1", "a5")
    assert (result.returncode, result.stderr) == (1, "ping: bad address 'a5'\n")


def attachments(lab: Lab, host: str) -> dict[str, list[str]]:
    path = data_dir(lab.name, host) / "swarm-attachments.json"
    return json.loads(path.read_text()) if path.exists() else {}


def test_the_managers_release_the_attachment_with_the_container(flow: Lab) -> None:
    a1 = inspect(flow, "h2", "inspect", "a1")["Id"]
    net_id = inspect(flow, "h1", "network", "inspect", NET)["Id"]
    assert list(attachments(flow, "h5")) == []  # a5's went with it
    (aid,) = attachments(flow, "h2")[a1]
    refused = sh(flow, "h1", "network", "rm", NET, check=False)
    assert (refused.returncode, refused.stderr) == (
        1, f"Error response from daemon: rpc error: code = FailedPrecondition desc = network {net_id} is in use by task {aid}\n")
    sh(flow, "h2", "rm", "-f", "a1")
    assert wait_until(lambda: attachments(flow, "h2") == {} or None, 20) is not None
    assert sh(flow, "h1", "network", "rm", NET).stdout == f"{NET}\n"
