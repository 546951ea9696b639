"""Issue 11's gaps on a 3-host swarm (manager h1, workers h2-h3): `network connect/disconnect` of a container to a
swarm overlay goes through the managers (shoal/swarm/container_attach.py), a worker's local copy of an overlay goes
with its last local container (shoal/swarm/local_copies.py), and `swarm leave` leaves no ingress sandbox, overlay
namespace, rule or link behind (shoal/swarm/overlay_leave.py). Docker's wording checked against dockerd 20.10 in a
lab (DESIGN §10). One cluster for the module; tests run in file order."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import pytest

from shoal.client import DaemonError
from shoal.lab import Lab, data_dir, host_address
from tests.docker_client import docker_client
from tests.lab.helpers import wait_until
from tests.lab.swarm_lab import inspect, running_swarm, sh

pytestmark = pytest.mark.lab

NET = "ovc-net"
NONATT = "ovc-services-only"
PORT = "18080"  # published by a service pinned to the manager: the routing mesh opens it on every node


def docker(lab: Lab, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    path = docker_client()
    assert path is not None, "no docker client: run scripts/install.sh"
    return lab.exec(host, [path, *args], check=check, timeout=120)


def networks_of(lab: Lab, host: str, name: str) -> dict:
    return inspect(lab, host, "inspect", name)["NetworkSettings"]["Networks"]


def network_names(lab: Lab, host: str) -> list[str]:
    return docker(lab, host, "network", "ls", "--format", "{{.Name}}").stdout.split()


def attachments(lab: Lab, host: str) -> dict:
    path = data_dir(lab.name, host) / "swarm-attachments.json"
    return json.loads(path.read_text()) if path.exists() else {}


def attachment_ids(lab: Lab, host: str, container_id: str) -> list[str]:
    return sorted(attachments(lab, host).get(container_id) or [])


def manager_has_task(lab: Lab, task_id: str) -> bool:
    try:
        lab.client("h1").get(f"/tasks/{task_id}")
        return True
    except DaemonError as e:
        if e.status == 404:
            return False
        raise


def namespaces(lab: Lab, host: str) -> list[str]:
    """This host's swarm namespaces: overlay networks' (`-ov-`) and the routing mesh's ingress sandbox."""
    prefix = f"{lab.netns(host)}-"
    names = lab.exec(host, ["ip", "netns", "list"]).stdout.split()
    return sorted(n for n in names if n.startswith((f"{prefix}ov-", f"{prefix}ingress_sbox")))


def overlay_namespaces(lab: Lab, host: str, vni: int) -> list[str]:
    return [n for n in namespaces(lab, host) if n.startswith(f"{lab.netns(host)}-ov-{vni}-")]


def sandbox(lab: Lab, host: str) -> str:
    return f"{lab.netns(host)}-ingress_sbox"


def vni_of(lab: Lab, name: str) -> int:
    return int(inspect(lab, "h1", "network", "inspect", name)["Options"]["com.docker.network.driver.overlay.vxlanid_list"])


def eth(lab: Lab, host: str, name: str) -> dict[str, str]:
    """interface -> IPv4/prefix inside the container (lo left out)."""
    out = sh(lab, host, "exec", name, "ip", "-o", "-4", "addr").stdout.splitlines()
    return {line.split()[1]: line.split()[3] for line in out if line.split()[1] != "lo"}


def ruleset(lab: Lab, host: str) -> str:
    return lab.exec(host, ["iptables-save"]).stdout + lab.exec(host, ["nft", "list", "ruleset"]).stdout


def sandbox_gwbridge_ip(lab: Lab, host: str) -> str:
    """The ingress sandbox's address on docker_gwbridge (the host's published ports DNAT to it)."""
    out = lab.exec(host, ["ip", "netns", "exec", sandbox(lab, host), "ip", "-o", "-4", "addr", "show", "eth1"]).stdout
    return out.split()[3].split("/")[0]


def host_links(lab: Lab, host: str) -> list[str]:
    return sorted(line.split()[0].split("@")[0] for line in lab.exec(host, ["ip", "-br", "link"]).stdout.splitlines())


@pytest.fixture(scope="module")
def swarm() -> Iterator[Lab]:
    with running_swarm(3, workers=["h2", "h3"]) as lab:
        sh(lab, "h1", "network", "create", "-d", "overlay", "--subnet", "10.0.7.0/24", "--attachable", NET)
        sh(lab, "h1", "network", "create", "-d", "overlay", "--subnet", "10.0.8.0/24", NONATT)
        sh(lab, "h2", "run", "-d", "--name", "c1", "busybox", "sleep", "3600")
        yield lab


# ---------------------------------------------------------------------------------------- connect / disconnect
def test_connect_gives_a_running_container_the_managers_address_on_the_overlay(swarm: Lab) -> None:
    assert sh(swarm, "h2", "network", "connect", NET, "c1").stdout == ""
    ep = networks_of(swarm, "h2", "c1")[NET]
    assert (ep["IPAddress"], ep["NetworkID"]) == ("10.0.7.2", inspect(swarm, "h1", "network", "inspect", NET)["Id"])
    assert eth(swarm, "h2", "c1") == {"eth0": eth(swarm, "h2", "c1")["eth0"], "eth1": "10.0.7.2/24"}


def test_the_managers_hold_the_connected_container_s_attachment(swarm: Lab) -> None:
    c1 = inspect(swarm, "h2", "inspect", "c1")["Id"]
    (aid,) = attachment_ids(swarm, "h2", c1)
    assert manager_has_task(swarm, aid)


def test_a_connected_container_reaches_another_host_s_container_by_name(swarm: Lab) -> None:
    sh(swarm, "h3", "run", "-d", "--network", NET, "--name", "c3", "busybox", "sleep", "3600")
    result = wait_until(lambda: (r := sh(swarm, "h2", "exec", "c1", "ping", "-c2", "-w3", "c3", check=False))
                        .returncode == 0 and r, 30)
    assert "PING c3 (10.0.7.3)" in result.stdout
    assert "2 packets transmitted, 2 packets received, 0% packet loss" in result.stdout


def test_the_ingress_sandbox_has_ipv6_off_on_every_link_as_dockers_ingress_sbox(swarm: Lab) -> None:
    wait_until(lambda: sandbox(swarm, "h2") in namespaces(swarm, "h2"), 30, interval=0.2)
    out = swarm.exec("h2", ["ip", "netns", "exec", sandbox(swarm, "h2"), "sh", "-c",
                            "cd /proc/sys/net/ipv6/conf && for f in *; do echo $(cat $f/disable_ipv6); done; ip -6 -o a"])
    assert out.stdout.split() and set(out.stdout.split()) == {"1"}  # lo, all, default, eth0, eth1; no address


def test_connect_to_a_network_that_is_not_attachable_is_refused_with_docker_s_message(swarm: Lab) -> None:
    before = (attachments(swarm, "h2"), networks_of(swarm, "h2", "c1"), network_names(swarm, "h2"))
    refused = docker(swarm, "h2", "network", "connect", NONATT, "c1", check=False)
    assert (refused.returncode, refused.stderr) == (
        1, f"Error response from daemon: Could not attach to network {NONATT}: rpc error: code = PermissionDenied "
           f"desc = network {NONATT} not manually attachable\n")
    assert (attachments(swarm, "h2"), networks_of(swarm, "h2", "c1"), network_names(swarm, "h2")) == before


def test_connect_through_the_api_answers_500_as_dockerd(swarm: Lab) -> None:
    with pytest.raises(DaemonError) as e:
        swarm.client("h2").post(f"/networks/{NONATT}/connect", {"Container": "c1"})
    assert (e.value.status, e.value.message) == (
        500, f"Could not attach to network {NONATT}: rpc error: code = PermissionDenied "
             f"desc = network {NONATT} not manually attachable")


def test_run_on_a_network_that_is_not_attachable_is_refused_in_the_same_words_and_leaves_nothing(swarm: Lab) -> None:
    refused = docker(swarm, "h2", "run", "-d", "--name", "c9", "--network", NONATT, "busybox", "sleep", "3600", check=False)
    # the first line is the daemon's message (the CLI's own trailer differs between docker 20.10 and 28)
    assert (refused.returncode, refused.stderr.splitlines()[0].rstrip(".")) == (
        125, f"docker: Error response from daemon: Could not attach to network {NONATT}: rpc error: code = "
             f"PermissionDenied desc = network {NONATT} not manually attachable")
    # dockerd 20.10 creates the container and fails its start; shoal refuses the create, so nothing is left
    assert docker(swarm, "h2", "ps", "-a", "--filter", "name=c9", "--format", "{{.Names}}").stdout == ""
    assert NONATT not in network_names(swarm, "h2")


def test_connect_to_a_network_nobody_knows_is_the_managers_not_found(swarm: Lab) -> None:
    refused = sh(swarm, "h2", "network", "connect", "ovc-nosuch", "c1", check=False)
    assert (refused.returncode, refused.stderr) == (
        1, "Error response from daemon: Could not attach to network ovc-nosuch: rpc error: code = NotFound "
           "desc = network ovc-nosuch not found\n")


def test_connecting_twice_is_refused_as_docker_and_holds_one_attachment(swarm: Lab) -> None:
    c1 = inspect(swarm, "h2", "inspect", "c1")["Id"]
    with pytest.raises(DaemonError) as e:
        swarm.client("h2").post(f"/networks/{NET}/connect", {"Container": "c1"})
    assert (e.value.status, e.value.message) == (409, f"c1 is already attached to network {NET}")
    assert len(attachment_ids(swarm, "h2", c1)) == 1


def test_connect_gives_a_created_container_its_address_for_its_start(swarm: Lab) -> None:
    docker(swarm, "h2", "create", "--name", "c2", "busybox", "sleep", "3600")
    assert docker(swarm, "h2", "network", "connect", "--ip", "10.0.7.77", NET, "c2").stdout == ""
    sh(swarm, "h2", "start", "c2")
    assert networks_of(swarm, "h2", "c2")[NET]["IPAddress"] == "10.0.7.77"
    assert eth(swarm, "h2", "c2")["eth1"] == "10.0.7.77/24"


def test_a_kill_9_of_the_daemon_keeps_the_connected_container_s_attachment_and_address(swarm: Lab) -> None:
    c1 = inspect(swarm, "h2", "inspect", "c1")["Id"]
    held = attachment_ids(swarm, "h2", c1)
    swarm.restart_daemon("h2", kill9=True)
    assert wait_until(lambda: swarm.client("h2").get("/info")["Swarm"]["LocalNodeState"] == "active", 30)
    # the overlay driver comes back with the swarm membership, then plumbs the running containers' endpoints again
    assert wait_until(lambda: eth(swarm, "h2", "c1").get("eth1"), 30) == "10.0.7.2/24"
    assert attachment_ids(swarm, "h2", c1) == held


def test_disconnect_releases_the_attachment_at_the_managers(swarm: Lab) -> None:
    c1 = inspect(swarm, "h2", "inspect", "c1")["Id"]
    (aid,) = attachment_ids(swarm, "h2", c1)
    assert sh(swarm, "h2", "network", "disconnect", NET, "c1").stdout == ""
    assert attachment_ids(swarm, "h2", c1) == []
    assert not manager_has_task(swarm, aid)
    assert list(eth(swarm, "h2", "c1")) == ["eth0"]


# ---------------------------------------------------------------------------------------- the local copy
def test_the_local_copy_stays_while_a_local_container_uses_it(swarm: Lab) -> None:
    assert NET in network_names(swarm, "h2")  # c2 is still on it
    assert len(overlay_namespaces(swarm, "h2", vni_of(swarm, NET))) == 1


def test_the_local_copy_goes_with_the_last_local_container(swarm: Lab) -> None:
    assert sorted(networks_of(swarm, "h2", "c2")) == ["bridge", NET]  # the last container on NET here
    sh(swarm, "h2", "rm", "-f", "c2")
    assert wait_until(lambda: NET not in network_names(swarm, "h2"), 10)
    assert overlay_namespaces(swarm, "h2", vni_of(swarm, NET)) == []
    assert NET in network_names(swarm, "h1")  # the manager's view is the cluster's
    assert NET in network_names(swarm, "h3")  # c3 is there


def test_disconnect_from_a_network_this_node_has_no_copy_of_is_not_found(swarm: Lab) -> None:
    refused = sh(swarm, "h2", "network", "disconnect", NET, "c1", check=False)
    assert (refused.returncode, refused.stderr) == (1, f"Error response from daemon: network {NET} not found\n")


def test_a_later_connect_brings_the_copy_back(swarm: Lab) -> None:
    sh(swarm, "h2", "network", "connect", NET, "c1")
    assert NET in network_names(swarm, "h2")
    assert eth(swarm, "h2", "c1")["eth1"].endswith("/24")
    sh(swarm, "h2", "network", "disconnect", NET, "c1")
    assert NET not in network_names(swarm, "h2")


def test_a_service_task_brings_the_copy_and_takes_it_away_when_the_service_goes(swarm: Lab) -> None:
    sh(swarm, "h1", "service", "create", "--detach", "--name", "ovc-task", "--network", NET,
       "--constraint", "node.hostname==h2", "busybox", "sleep", "3600")
    assert wait_until(lambda: NET in network_names(swarm, "h2"), 60)
    sh(swarm, "h1", "service", "rm", "ovc-task")
    assert wait_until(lambda: NET not in network_names(swarm, "h2"), 60)
    assert overlay_namespaces(swarm, "h2", vni_of(swarm, NET)) == []


# ---------------------------------------------------------------------------------------- swarm leave
def _publish_on_every_node(lab: Lab) -> None:
    sh(lab, "h1", "service", "create", "--detach", "--name", "ovc-web", "--constraint", "node.role==manager",
       "-p", f"{PORT}:80", "busybox", "httpd", "-f", "-p", "80")
    for h in ("h1", "h3"):
        wait_until(lambda h=h: sandbox(lab, h) in namespaces(lab, h) and f"dport {PORT}" in ruleset(lab, h), 60)


def test_a_worker_leaving_removes_its_ingress_sandbox_overlays_rules_and_links(swarm: Lab) -> None:
    _publish_on_every_node(swarm)
    docker(swarm, "h3", "create", "--name", "c4", "busybox", "sleep", "3600")
    docker(swarm, "h3", "network", "connect", NET, "c4")
    links_before_swarm = {"lo", "eth0", "docker0", "docker_gwbridge"}
    sandbox_gw_ip = sandbox_gwbridge_ip(swarm, "h3")
    assert sandbox_gw_ip in ruleset(swarm, "h3")
    assert sh(swarm, "h3", "swarm", "leave").stdout == "Node left the swarm.\n"
    assert sandbox_gw_ip not in ruleset(swarm, "h3")
    assert list(networks_of(swarm, "h3", "c4")) == ["bridge"]  # a created container's attachment went too
    assert namespaces(swarm, "h3") == []
    assert f"dport {PORT}" not in ruleset(swarm, "h3")
    # c3 was on the overlay only: it is left running with no network, as dockerd leaves it
    assert eth(swarm, "h3", "c3") == {}
    assert set(host_links(swarm, "h3")) == links_before_swarm
    assert inspect(swarm, "h3", "network", "inspect", "docker_gwbridge")["Containers"] == {}


def test_a_node_that_left_lists_only_its_local_networks(swarm: Lab) -> None:
    assert sorted(network_names(swarm, "h3")) == ["bridge", "docker_gwbridge", "host", "none"]


def test_the_managers_released_the_attachments_of_a_node_that_left(swarm: Lab) -> None:
    assert attachments(swarm, "h3") == {}
    assert sh(swarm, "h1", "network", "rm", NET).stdout == f"{NET}\n"  # no attachment of c1-c4 holds it


def test_a_node_that_left_and_joins_again_gets_a_new_ingress_sandbox_and_the_published_port(swarm: Lab) -> None:
    token = sh(swarm, "h1", "swarm", "join-token", "-q", "worker").stdout.strip()
    sh(swarm, "h3", "swarm", "join", "--token", token, f"{host_address('h1')}:2377")
    assert wait_until(lambda: sandbox(swarm, "h3") in namespaces(swarm, "h3") and f"dport {PORT}" in ruleset(swarm, "h3"),
                      60)
    assert sorted(network_names(swarm, "h3")) == ["bridge", "docker_gwbridge", "host", "ingress", "none"]


def test_a_manager_forced_out_removes_its_ingress_sandbox_and_rules(swarm: Lab) -> None:
    assert sandbox(swarm, "h1") in namespaces(swarm, "h1") and f"dport {PORT}" in ruleset(swarm, "h1")
    links_before_swarm = {"lo", "eth0", "docker0", "docker_gwbridge"}
    assert sh(swarm, "h1", "swarm", "leave", "--force").stdout == "Node left the swarm.\n"
    assert namespaces(swarm, "h1") == []
    assert f"dport {PORT}" not in ruleset(swarm, "h1")
    assert set(host_links(swarm, "h1")) == links_before_swarm  # the service's task went with the membership
    assert inspect(swarm, "h1", "network", "inspect", "docker_gwbridge")["Containers"] == {}
    assert sorted(network_names(swarm, "h1")) == ["bridge", "docker_gwbridge", "host", "none"]
