"""The stock docker CLI and docker-py against lab daemons in swarm mode (issue 10 item 7): swarm init/leave,
node ls, info's Swarm section, the 503 before init; one 2-host lab for the module (h1 by the CLI, h2 by docker-py)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from shoal.lab import Lab, host_address
from tests.docker_client import docker_client
from tests.lab.helpers import running_lab

NOT_IN_SWARM = ('Error response from daemon: This node is not a swarm manager. Use "docker swarm init" or '
                '"docker swarm join" to connect this node to swarm and try again.\n')


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab(2) as lb:
        yield lb


def docker(lab: Lab, host: str, *args: str, check: bool = True):  # type: ignore[no-untyped-def]
    path = docker_client()
    assert path is not None, "no docker client: run scripts/install.sh"
    return lab.exec(host, [path, *args], check=check)


def test_node_ls_before_init_answers_dockers_503(lab: Lab) -> None:
    r = docker(lab, "h2", "node", "ls", check=False)
    assert (r.returncode, r.stderr) == (1, NOT_IN_SWARM)
    r = docker(lab, "h2", "swarm", "join-token", "worker", check=False)
    assert (r.returncode, r.stderr) == (1, NOT_IN_SWARM)


def test_docker_swarm_init_prints_the_join_command(lab: Lab) -> None:
    out = docker(lab, "h1", "swarm", "init", "--advertise-addr", host_address("h1")).stdout
    m = re.fullmatch(
        r"Swarm initialized: current node \(([0-9a-z]{25})\) is now a manager\.\n\n"
        r"To add a worker to this swarm, run the following command:\n\n"
        r"    docker swarm join --token (SWMTKN-1-[0-9a-z]{50}-[0-9a-z]{25}) 192\.168\.200\.11:2377\n\n"
        r"To add a manager to this swarm, run 'docker swarm join-token manager' and follow the instructions\.\n", out)
    assert m is not None, out
    assert lab.client("h1").get("/info")["Swarm"]["NodeID"] == m.group(1)
    assert lab.client("h1").get("/swarm")["JoinTokens"]["Worker"] == m.group(2)


def test_docker_node_ls_shows_the_manager_as_leader(lab: Lab) -> None:
    nid = lab.client("h1").get("/info")["Swarm"]["NodeID"]
    assert docker(lab, "h1", "node", "ls").stdout == (
        "ID                            HOSTNAME   STATUS    AVAILABILITY   MANAGER STATUS   ENGINE VERSION\n"
        f"{nid} *   h1         Ready     Active         Leader           0.1.0\n")


def test_docker_info_shows_the_swarm_section(lab: Lab) -> None:
    info = lab.client("h1").get("/info")["Swarm"]
    out = docker(lab, "h1", "info").stdout
    assert (f" Swarm: active\n  NodeID: {info['NodeID']}\n  Is Manager: true\n  ClusterID: {info['Cluster']['ID']}\n"
            "  Managers: 1\n  Nodes: 1\n") in out
    assert "  Node Address: 192.168.200.11\n  Manager Addresses:\n   192.168.200.11:2377\n" in out


def test_docker_swarm_leave_on_the_last_manager_needs_force(lab: Lab) -> None:
    r = docker(lab, "h1", "swarm", "leave", check=False)
    assert (r.returncode, r.stderr) == (1, "Error response from daemon: You are attempting to leave the swarm on a node "
            "that is participating as a manager. Removing the last manager erases all current state of the swarm. "
            "Use `--force` to ignore this message.\n")
    assert docker(lab, "h1", "info", "--format", "{{.Swarm.LocalNodeState}}").stdout == "active\n"
    assert docker(lab, "h1", "swarm", "leave", "--force").stdout == "Node left the swarm.\n"
    assert docker(lab, "h1", "info", "--format", "{{.Swarm.LocalNodeState}}").stdout == "inactive\n"


def test_docker_py_swarm_init_and_nodes_list(lab: Lab) -> None:
    import docker as docker_py  # requirements.txt pins docker (docker-py)

    client = docker_py.DockerClient(base_url=f"unix://{lab.socket('h2')}", version="auto")
    try:
        node_id = client.swarm.init(advertise_addr=host_address("h2"), listen_addr="0.0.0.0:2377")
        nodes = client.nodes.list()
        assert [(n.id, n.attrs["Description"]["Hostname"], n.attrs["Spec"]["Role"], n.attrs["ManagerStatus"]["Leader"])
                for n in nodes] == [(node_id, "h2", "manager", True)]
        client.swarm.reload()
        assert client.swarm.attrs["JoinTokens"]["Worker"].startswith("SWMTKN-1-")
        assert client.info()["Swarm"]["ControlAvailable"] is True
    finally:
        client.close()
