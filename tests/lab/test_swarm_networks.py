"""Overlay networks in a lab swarm (3 managers h1-h3, a worker h4, h5 in no swarm): created through any manager,
exact inspect output, subnets and VNIs from the allocator, swarm's refusals, attachments holding a network, and
allocation surviving a kill -9 of the leader with no address handed out twice. One cluster for the module."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from shoal.lab import Lab, data_dir, host_address
from tests.docker_client import docker_client
from tests.lab.helpers import wait_until
from tests.lab.swarm_lab import running_swarm, sh

MANAGERS = ["h1", "h2", "h3"]
NOT_IN_SWARM = ('This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to connect this '
                'node to swarm and try again.')
NOT_MANAGER = ("This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. "
               "Please run this command on a manager node or promote the current node to a manager.")

# ResourceAllocator calls from inside a lab host with that host's node certificate (shoal/swarm/attachments.py).
ATTACH = textwrap.dedent('''
    import asyncio, sys
    from pathlib import Path
    from common.errdefs import ShoalError
    from manager.transport import TLSFiles
    from shoal.swarm.attachments import attach_network, detach_network
    addr, certdir, call = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    tls = TLSFiles(certdir / "swarm-root-ca.crt", certdir / "swarm-node.crt", certdir / "swarm-node.key")
    async def main():
        if call[0] == "attach":
            aid, att = await attach_network([addr], tls, call[1], call[2])
            print("OK", aid, ",".join(att.addresses))
        else:
            await detach_network([addr], tls, call[1])
            print("OK")
    try:
        asyncio.run(main())
    except ShoalError as e:
        print("ERR", type(e).__name__, e.message)
''')


def docker(lab: Lab, host: str, *args: str) -> subprocess.CompletedProcess[str]:
    path = docker_client()
    assert path is not None, "no docker client: run scripts/install.sh"
    return lab.exec(host, [path, *args], timeout=120)


def resource_call(lab: Lab, host: str, manager: str, *call: str) -> list[str]:
    certdir = str(data_dir(lab.name, host) / "swarm" / "certificates")
    out = lab.exec(host, [sys.executable, "-c", ATTACH, f"{host_address(manager)}:2377", certdir, *call], timeout=60)
    return out.stdout.split()


def attach(lab: Lab, host: str, manager: str, network: str, container: str) -> tuple[str, str]:
    words = resource_call(lab, host, manager, "attach", network, container)
    assert words[0] == "OK" and len(words) == 3, words
    return words[1], words[2]


def inspect(lab: Lab, host: str, name: str) -> dict[str, Any]:
    return json.loads(sh(lab, host, "network", "inspect", name).stdout)[0]


def leader(lab: Lab, via: str) -> str | None:
    try:
        lines = sh(lab, via, "node", "ls").stdout.splitlines()[1:]
    except subprocess.CalledProcessError:
        return None
    return next((h for h in MANAGERS for line in lines if f" {h} " in line and "Leader" in line), None)


@pytest.fixture(scope="module")
def swarm() -> Iterator[Lab]:
    with running_swarm(5, managers=["h2", "h3"], workers=["h4"]) as lab:  # h5 in no swarm
        yield lab


def expected(doc: dict[str, Any], name: str, subnet: str, gateway: str, vni: int, *, attachable: bool = False,
             internal: bool = False, ingress: bool = False, options: dict[str, str] | None = None,
             labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "Name": name, "Id": doc["Id"], "Created": doc["Created"], "Scope": "swarm", "Driver": "overlay",
        "EnableIPv4": True, "EnableIPv6": False,
        "IPAM": {"Driver": "default", "Options": None, "Config": [{"Subnet": subnet, "Gateway": gateway}]},
        "Internal": internal, "Attachable": attachable, "Ingress": ingress, "ConfigFrom": {"Network": ""},
        "ConfigOnly": False, "Containers": None,
        "Options": {**(options or {}), "com.docker.network.driver.overlay.vxlanid_list": str(vni)},
        "Labels": labels,
    }


def test_ingress_exists_after_init_with_the_pool_first_subnet_and_vni_4096(swarm: Lab) -> None:
    doc = inspect(swarm, "h1", "ingress")
    doc.pop("Peers", None)  # the nodes' ingress sandboxes, as Docker lists them: not this test's subject
    assert doc == expected(doc, "ingress", "10.0.0.0/24", "10.0.0.1", 4096, ingress=True)
    assert len(doc["Id"]) == 25 and doc["Created"].endswith("Z")


def test_overlay_created_on_a_follower_is_allocated_and_inspected_alike_on_every_manager(swarm: Lab) -> None:
    created = sh(swarm, "h2", "network", "create", "-d", "overlay", "--attachable", "--internal", "--label", "team=a",
                 "--opt", "com.docker.network.driver.mtu=1400", "net-a").stdout.strip()
    docs = [inspect(swarm, h, "net-a") for h in MANAGERS]
    assert docs[0]["Id"] == created
    assert docs[0] == expected(docs[0], "net-a", "10.0.1.0/24", "10.0.1.1", 4097, attachable=True, internal=True,
                               options={"com.docker.network.driver.mtu": "1400"}, labels={"team": "a"})
    assert docs[1] == docs[0] and docs[2] == docs[0]


def test_explicit_subnet_gateway_and_vni_are_kept(swarm: Lab) -> None:
    sh(swarm, "h3", "network", "create", "-d", "overlay", "--subnet", "10.0.9.0/24", "--gateway", "10.0.9.254",
       "--opt", "com.docker.network.driver.overlay.vxlanid_list=5000", "net-b")
    doc = inspect(swarm, "h1", "net-b")
    assert doc == expected(doc, "net-b", "10.0.9.0/24", "10.0.9.254", 5000)


def test_next_network_takes_the_next_free_subnet_and_vni(swarm: Lab) -> None:
    sh(swarm, "h1", "network", "create", "-d", "overlay", "net-c")
    doc = inspect(swarm, "h2", "net-c")
    assert doc == expected(doc, "net-c", "10.0.2.0/24", "10.0.2.1", 5001)


def test_overlapping_subnet_is_refused_with_what_it_overlaps(swarm: Lab) -> None:
    r = sh(swarm, "h2", "network", "create", "-d", "overlay", "--subnet", "10.0.9.128/25", "clash", check=False)
    assert (r.returncode, r.stderr) == (1, "Error response from daemon: rpc error: code = InvalidArgument desc = "
                                           "invalid pool request: Pool overlaps with other one on this address space: "
                                           "subnet 10.0.9.128/25 overlaps network net-b (10.0.9.0/24)\n")
    assert sh(swarm, "h1", "network", "ls", "--filter", "name=clash", "-q").stdout == ""


def test_vni_in_use_is_refused(swarm: Lab) -> None:
    r = sh(swarm, "h1", "network", "create", "-d", "overlay", "--opt",
           "com.docker.network.driver.overlay.vxlanid_list=4097", "dup-vni", check=False)
    assert (r.returncode, r.stderr) == (1, "Error response from daemon: rpc error: code = InvalidArgument desc = "
                                           "vxlan id 4097 is already in use by network net-a\n")


def test_duplicate_name_is_refused(swarm: Lab) -> None:
    r = sh(swarm, "h3", "network", "create", "-d", "overlay", "net-a", check=False)
    assert (r.returncode, r.stderr) == (1, "Error response from daemon: network with name net-a already exists\n")


def test_overlay_create_on_a_worker_and_off_swarm_gets_dockers_refusals(swarm: Lab) -> None:
    worker = sh(swarm, "h4", "network", "create", "-d", "overlay", "w", check=False)
    outside = sh(swarm, "h5", "network", "create", "-d", "overlay", "w", check=False)
    assert (worker.returncode, worker.stderr) == (1, f"Error response from daemon: {NOT_MANAGER}\n")
    assert (outside.returncode, outside.stderr) == (1, f"Error response from daemon: {NOT_IN_SWARM}\n")


def test_managers_list_the_swarm_networks_and_a_worker_without_attachments_none(swarm: Lab) -> None:
    scope = {"filters": json.dumps({"scope": ["swarm"]})}
    for h in MANAGERS:
        listed = swarm.client(h).get("/networks", scope)
        assert sorted((n["Name"], n["Driver"], n["Scope"]) for n in listed) == [
            ("ingress", "overlay", "swarm"), ("net-a", "overlay", "swarm"), ("net-b", "overlay", "swarm"),
            ("net-c", "overlay", "swarm")]
    # every node is on ingress (its routing-mesh sandbox), as with Docker: a worker lists that one alone. Its copy
    # is made once the node object brings the worker its ingress address (the allocator's, after the join) and the
    # next endpoint pass runs: seconds after the join on a loaded machine, so the listing is awaited, then compared.
    listed = wait_until(lambda: swarm.client("h4").get("/networks", scope), timeout=30)
    assert [(n["Name"], n["Scope"]) for n in listed] == [("ingress", "swarm")]


def test_worker_attachment_gets_an_address_and_holds_the_network_until_detached(swarm: Lab) -> None:
    net_id = inspect(swarm, "h1", "net-a")["Id"]
    aid, addr = attach(swarm, "h4", "h2", "net-a", "container-1")
    assert addr == "10.0.1.2/24"
    refused = sh(swarm, "h3", "network", "rm", "net-a", check=False)
    assert (refused.returncode, refused.stderr) == (
        1, f"Error response from daemon: rpc error: code = FailedPrecondition desc = network {net_id} is in use by task {aid}\n")
    assert resource_call(swarm, "h4", "h1", "detach", aid) == ["OK"]
    assert sh(swarm, "h3", "network", "rm", "net-a").stdout == "net-a\n"
    assert sh(swarm, "h1", "network", "ls", "--filter", "name=net-a", "-q").stdout == ""


def test_attaching_to_a_network_that_is_not_attachable_is_refused(swarm: Lab) -> None:
    assert resource_call(swarm, "h4", "h1", "attach", "net-c", "container-2") == \
        ["ERR", "Forbidden", "network", "net-c", "not", "manually", "attachable"]


def test_the_stock_docker_cli_creates_lists_inspects_and_removes_an_overlay(swarm: Lab) -> None:
    created = docker(swarm, "h3", "network", "create", "-d", "overlay", "--attachable", "dk").stdout.strip()
    listed = docker(swarm, "h1", "network", "ls", "--filter", "driver=overlay", "--format", "{{.Name}} {{.Scope}}").stdout
    shown = docker(swarm, "h2", "network", "inspect", "dk", "--format",
                   "{{.Id}} {{.Driver}} {{.Attachable}} {{json .IPAM.Config}}").stdout
    removed = docker(swarm, "h1", "network", "rm", "dk").stdout
    assert listed == "dk swarm\ningress swarm\nnet-b swarm\nnet-c swarm\n"
    assert shown == f'{created} overlay true [{{"Gateway":"10.0.1.1","Subnet":"10.0.1.0/24"}}]\n'  # net-a's, freed
    assert removed == "dk\n"


def test_allocation_survives_a_leader_kill_with_no_address_handed_out_twice(swarm: Lab) -> None:
    sh(swarm, "h1", "network", "create", "-d", "overlay", "--attachable", "--subnet", "10.0.20.0/28", "small")
    allocated = inspect(swarm, "h1", "small")
    before = [attach(swarm, "h4", "h1", "small", f"pre-{i}") for i in range(4)]
    # one freed before the kill: the new leader must not hand it out again while others are free
    assert resource_call(swarm, "h4", "h1", "detach", before[0][0]) == ["OK"]
    old = wait_until(lambda: leader(swarm, "h1"), 20)
    survivors = [h for h in MANAGERS if h != old]
    swarm.stop_daemon(old, kill9=True)
    try:
        wait_until(lambda: leader(swarm, survivors[0]) not in (None, old), 30, interval=0.2)
        after = [attach(swarm, "h4", survivors[1], "small", f"post-{i}") for i in range(4)]
    finally:
        swarm.start_daemon(old)
    held = [a for _aid, a in before[1:]] + [a for _aid, a in after]
    assert [a for _aid, a in before] == ["10.0.20.2/28", "10.0.20.3/28", "10.0.20.4/28", "10.0.20.5/28"]
    assert [a for _aid, a in after] == ["10.0.20.6/28", "10.0.20.7/28", "10.0.20.8/28", "10.0.20.9/28"]
    assert len(set(held)) == len(held)
    assert inspect(swarm, survivors[0], "small") == allocated
    assert allocated["IPAM"]["Config"] == [{"Subnet": "10.0.20.0/28", "Gateway": "10.0.20.1"}]


def test_swarm_init_default_addr_pool_gives_ingress_its_first_subnet(swarm: Lab) -> None:
    # h5 (in no swarm until now) starts a swarm of its own: last in the module
    bad = sh(swarm, "h5", "swarm", "init", "--advertise-addr", host_address("h5"), "--default-addr-pool", "10.20.0.0/16",
             "--default-addr-pool-mask-length", "30", check=False)
    assert (bad.returncode, bad.stderr) == (1, "Error response from daemon: subnet size is out of range: 30\n")
    sh(swarm, "h5", "swarm", "init", "--advertise-addr", host_address("h5"), "--default-addr-pool", "10.20.0.0/16",
       "--default-addr-pool-mask-length", "26")
    doc = wait_until(lambda: (d := inspect(swarm, "h5", "ingress"))["IPAM"]["Config"] and d, 20)
    assert doc == expected(doc, "ingress", "10.20.0.0/26", "10.20.0.1", 4096, ingress=True)
    info = swarm.client("h5").get("/info")["Swarm"]["Cluster"]
    assert (info["DefaultAddrPool"], info["SubnetSize"]) == (["10.20.0.0/16"], 26)
