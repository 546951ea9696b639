"""The stock docker CLI (28.2.2) and docker-py run against a lab daemon: shoal's local API is
the Docker Engine API, so their commands work and print what they print against dockerd.

Also raw HTTP bad input: malformed JSON, unknown API version, a bad image tar.
"""
from __future__ import annotations

import http.client
import json
import re
import socket
import subprocess

import pytest

from tests.docker_client import docker_client
from tests.lab.helpers import running_lab

pytestmark = pytest.mark.lab

DOCKER = docker_client()
assert DOCKER is not None, "no docker client: scripts/install.sh links one from /opt/shoal-docker-ref"
# 28 on the reference machine; 20.10 where install.sh linked Debian's client from the private folder.
CLIENT_MAJOR = int(re.search(r"version (\d+)\.", subprocess.run(
    [DOCKER, "--version"], capture_output=True, text=True).stdout).group(1)) if DOCKER else 0


@pytest.fixture(scope="module")
def lab():
    with running_lab(hosts=1) as lab:
        yield lab


def docker(lab, *args: str, check: bool = True):
    return lab.exec("h1", [DOCKER, *args], check=check, timeout=120)


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=30)
        self.unix_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.unix_path)


def request(lab, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = UnixHTTPConnection(str(lab.socket("h1")))
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response, data


def test_docker_version_shows_the_server_api_version(lab):
    out = docker(lab, "version", "--format", "{{.Server.APIVersion}} {{.Server.Os}}").stdout
    assert out.strip() == "1.50 linux"


def test_docker_info_prints_the_servers_counts_and_swarm_state(lab):
    out = docker(lab, "info").stdout
    assert re.search(r"^ Containers: \d+$", out, re.M)
    assert " Swarm: inactive" in out


def test_docker_network_ls_lists_the_default_networks(lab):
    out = docker(lab, "network", "ls", "--format", "{{.Name}} {{.Driver}} {{.Scope}}").stdout
    assert out.splitlines() == ["bridge bridge local", "host host local", "none null local"]


def test_docker_network_create_inspect_rm_round_trip(lab):
    created = docker(lab, "network", "create", "--subnet", "10.77.0.0/24", "--label", "k=v", "dnet").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", created)
    info = json.loads(docker(lab, "network", "inspect", "dnet").stdout)[0]
    assert (info["Id"], info["Driver"], info["Labels"]) == (created, "bridge", {"k": "v"})
    assert info["IPAM"]["Config"] == [{"Subnet": "10.77.0.0/24", "Gateway": "10.77.0.1"}]
    assert docker(lab, "network", "rm", "dnet").stdout.strip() == "dnet"
    gone = docker(lab, "network", "inspect", "dnet", check=False)
    assert gone.returncode == 1
    # The daemon answers 404 "network dnet not found"; the 20.10 CLI words a 404 on inspect itself.
    assert ("Error: No such network: dnet" if CLIENT_MAJOR <= 20 else "network dnet not found") in gone.stderr


def test_docker_run_ps_exec_logs_rm(lab):
    cid = docker(lab, "run", "-d", "--name", "dctr", "busybox", "sh", "-c", "echo hello; sleep 3600").stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{64}", cid)
    ps = docker(lab, "ps", "--format", "{{.ID}} {{.Image}} {{.Names}} {{.Status}}").stdout
    assert re.search(rf"^{cid[:12]} busybox dctr Up ", ps, re.M)
    assert docker(lab, "exec", "dctr", "cat", "/etc/hostname").stdout == f"{cid[:12]}\n"
    assert docker(lab, "exec", "dctr", "sh", "-c", "exit 5", check=False).returncode == 5
    assert docker(lab, "logs", "dctr").stdout == "hello\n"
    assert docker(lab, "rm", "-f", "dctr").stdout.strip() == "dctr"
    assert "dctr" not in docker(lab, "ps", "-a", "--format", "{{.Names}}").stdout.split()


def test_docker_py_lists_networks_and_runs_a_container(lab):
    import docker as docker_py  # requirements.txt pins docker (docker-py)
    client = docker_py.DockerClient(base_url=f"unix://{lab.socket('h1')}", version="auto")
    try:
        assert sorted(n.name for n in client.networks.list()) == ["bridge", "host", "none"]
        container = client.containers.run("busybox", ["sleep", "3600"], detach=True, name="pyctr")
        assert container.status in ("created", "running")
        container.reload()
        assert container.status == "running"
        exit_code, output = container.exec_run(["cat", "/etc/hostname"])
        assert (exit_code, output) == (0, f"{container.id[:12]}\n".encode())
        container.remove(force=True)
    finally:
        client.close()


def test_malformed_json_body_is_a_400_naming_it_and_creates_nothing(lab):
    response, data = request(lab, "POST", "/v1.50/networks/create", b"{not json",
                             {"Content-Type": "application/json"})
    assert response.status == 400
    assert response.getheader("Content-Type") == "application/json"
    assert json.loads(data)["message"].startswith("invalid JSON: ")
    response, data = request(lab, "GET", "/v1.50/networks")
    assert sorted(n["Name"] for n in json.loads(data)) == ["bridge", "host", "none"]


def test_a_too_new_api_version_is_refused(lab):
    response, data = request(lab, "GET", "/v1.99/version")
    assert response.status == 400
    assert json.loads(data)["message"] == (
        "client version 1.99 is too new. Maximum supported API version is 1.50"
    )


def test_ping_answers_with_the_headers_the_cli_reads(lab):
    response, data = request(lab, "GET", "/_ping")
    assert (response.status, data) == (200, b"OK")
    assert response.getheader("Api-Version") == "1.50"
    assert response.getheader("Ostype") == "linux"


def test_a_bad_image_tar_is_refused_and_the_image_list_is_unchanged(lab):
    _, before = request(lab, "GET", "/v1.50/images/json")
    response, data = request(lab, "POST", "/v1.50/images/load?quiet=1", b"this is not a tar" * 100,
                             {"Content-Type": "application/x-tar"})
    assert response.status == 400
    assert json.loads(data)["message"].startswith("invalid tar: ")
    _, after = request(lab, "GET", "/v1.50/images/json")
    assert json.loads(after) == json.loads(before)


def test_docker_run_in_the_foreground_prints_the_output_and_exits_with_the_code(lab):
    result = docker(lab, "run", "--name", "fg", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3", check=False)
    assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
    docker(lab, "rm", "fg")


def test_docker_run_rm_removes_the_container_after_it_exits(lab):
    result = docker(lab, "run", "--rm", "--name", "gone", "busybox", "echo", "hi")
    assert result.stdout == "hi\n"
    assert "gone" not in docker(lab, "ps", "-a", "--format", "{{.Names}}").stdout.split()


def test_docker_run_rm_of_a_fast_container_never_loses_its_output(lab):
    # The auto-remove waits for the attached client: the logs must not go before it read them.
    outputs = [docker(lab, "run", "--rm", "busybox", "echo", f"line-{n}").stdout for n in range(25)]
    assert outputs == [f"line-{n}\n" for n in range(25)]


def test_docker_run_of_a_missing_executable_fails_like_docker(lab):
    result = docker(lab, "run", "--rm", "busybox", "nosuchcmd", check=False)
    assert result.returncode == 127
    assert 'exec: "nosuchcmd": executable file not found in $PATH' in result.stderr
    assert docker(lab, "ps", "-aq").stdout.split() == []


def test_docker_network_connect_disconnect_and_published_ports(lab):
    docker(lab, "network", "create", "--subnet", "10.78.0.0/24", "dnet2")
    docker(lab, "run", "-d", "--name", "dpub", "-p", "8090:80", "busybox", "httpd", "-f", "-p", "80", "-h", "/etc")
    try:
        assert docker(lab, "port", "dpub").stdout.splitlines() == ["80/tcp -> 0.0.0.0:8090"]
        assert "0.0.0.0:8090->80/tcp" in docker(lab, "ps", "--format", "{{.Ports}}").stdout
        docker(lab, "network", "connect", "--ip", "10.78.0.50", "dnet2", "dpub")
        nets = json.loads(docker(lab, "inspect", "dpub").stdout)[0]["NetworkSettings"]["Networks"]
        assert nets["dnet2"]["IPAddress"] == "10.78.0.50"
        docker(lab, "network", "disconnect", "dnet2", "dpub")
        nets = json.loads(docker(lab, "inspect", "dpub").stdout)[0]["NetworkSettings"]["Networks"]
        assert sorted(nets) == ["bridge"]
    finally:
        docker(lab, "rm", "-f", "dpub", check=False)
        docker(lab, "network", "rm", "dnet2", check=False)


def test_docker_py_publishes_a_port(lab):
    import docker as docker_py  # requirements.txt pins docker (docker-py)
    client = docker_py.DockerClient(base_url=f"unix://{lab.socket('h1')}", version="auto")
    try:
        container = client.containers.run("busybox", ["sleep", "3600"], detach=True, name="pyport",
                                          ports={"80/tcp": 8091})
        container.reload()
        assert container.ports == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8091"}]}
        container.remove(force=True)
    finally:
        client.close()
