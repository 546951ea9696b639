"""Configs and secrets through the local API and the CLI of any manager (h1 init, h2 manager, h3 worker): create,
ls, inspect, rm, Docker's refusals, a worker's 503, and secret data that never reaches the raft files in plain text."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from shoal.lab import Lab, data_dir, host_address
from tests.docker_client import docker_client
from tests.lab.helpers import SHOAL, running_lab, wait_until

NOT_MANAGER = ("This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. "
               "Please run this command on a manager node or promote the current node to a manager.")
PLAINTEXT = b"s3cr3t-shoal-plaintext-7f1c"
METRICS_PORT = 9323  # each lab host has its own network namespace: the same port everywhere
SCRAPE = ("import urllib.request, sys; "
          f"sys.stdout.write(urllib.request.urlopen('http://127.0.0.1:{METRICS_PORT}/metrics', timeout=5).read().decode())")


def sh(lab: Lab, host: str, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return lab.exec(host, SHOAL + list(args), check=check, timeout=120, input=stdin)


@pytest.fixture(scope="module")
def swarm() -> Iterator[Lab]:
    with running_lab(3, daemon_args=["--metrics-addr", f"127.0.0.1:{METRICS_PORT}"]) as lab:
        sh(lab, "h1", "swarm", "init", "--advertise-addr", host_address("h1"))
        manager = sh(lab, "h1", "swarm", "join-token", "-q", "manager").stdout.strip()
        worker = sh(lab, "h1", "swarm", "join-token", "-q", "worker").stdout.strip()
        sh(lab, "h2", "swarm", "join", "--token", manager, host_address("h1"))
        sh(lab, "h3", "swarm", "join", "--token", worker, host_address("h1"))
        yield lab


def test_a_config_created_on_one_manager_is_listed_and_inspected_on_another(swarm: Lab, tmp_path: Path) -> None:
    src = tmp_path / "app.conf"
    src.write_bytes(b"listen 80\n")
    cid = sh(swarm, "h2", "config", "create", "app.conf", str(src)).stdout.strip()
    assert len(cid) == 25
    assert sh(swarm, "h1", "config", "ls", "-q").stdout == cid + "\n"
    [obj] = json.loads(sh(swarm, "h1", "config", "inspect", "app.conf").stdout)
    assert (obj["ID"], obj["Spec"]["Name"], base64.b64decode(obj["Spec"]["Data"])) == (cid, "app.conf", b"listen 80\n")
    assert obj["Version"]["Index"] > 0 and obj["CreatedAt"] != "0001-01-01T00:00:00Z"


def test_a_second_config_with_the_same_name_is_refused_as_swarm_refuses_it(swarm: Lab) -> None:
    sh(swarm, "h1", "config", "create", "dup.conf", "-", stdin="one")
    r = sh(swarm, "h2", "config", "create", "dup.conf", "-", stdin="two", check=False)
    assert (r.returncode, r.stdout, r.stderr) == (
        1, "", "Error response from daemon: rpc error: code = AlreadyExists desc = config dup.conf already exists\n")


def test_an_invalid_config_name_is_refused_with_swarms_message(swarm: Lab) -> None:
    r = sh(swarm, "h1", "config", "create", "bad!", "-", stdin="x", check=False)
    assert (r.returncode, r.stderr) == (1, (
        "Error response from daemon: rpc error: code = InvalidArgument desc = invalid name, only 64 [a-zA-Z0-9-_.] "
        "characters allowed, and the start and end character must be [a-zA-Z0-9]\n"))
    assert "bad!" not in sh(swarm, "h1", "config", "ls").stdout


def test_a_worker_gets_the_not_a_manager_error_for_configs_and_secrets(swarm: Lab) -> None:
    for verb in ("config", "secret"):
        r = sh(swarm, "h3", verb, "ls", check=False)
        assert (r.returncode, r.stdout, r.stderr) == (1, "", f"Error response from daemon: {NOT_MANAGER}\n")


def test_removing_a_config_by_name_removes_it_and_an_unknown_one_is_not_found(swarm: Lab) -> None:
    cid = sh(swarm, "h1", "config", "create", "gone.conf", "-", stdin="x").stdout.strip()
    assert sh(swarm, "h2", "config", "rm", "gone.conf").stdout == "gone.conf\n"
    assert cid not in sh(swarm, "h1", "config", "ls", "-q").stdout
    r = sh(swarm, "h1", "config", "rm", "gone.conf", check=False)
    assert (r.returncode, r.stderr) == (1, "Error response from daemon: config gone.conf not found\n")


def test_a_secret_is_created_listed_and_inspected_without_its_data(swarm: Lab) -> None:
    sid = sh(swarm, "h1", "secret", "create", "db-pass", "-", stdin=PLAINTEXT.decode()).stdout.strip()
    [obj] = json.loads(sh(swarm, "h2", "secret", "inspect", sid).stdout)
    assert obj["Spec"] == {"Name": "db-pass", "Labels": {}}
    lines = sh(swarm, "h2", "secret", "ls").stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "DRIVER", "CREATED", "UPDATED"]
    assert [line.split()[:2] for line in lines[1:]] == [[sid, "db-pass"]]


def test_secret_data_is_in_no_raft_file_of_any_manager_in_plain_text(swarm: Lab) -> None:
    sh(swarm, "h1", "secret", "create", "plain-check", "-", stdin=PLAINTEXT.decode())
    for host in ("h1", "h2"):
        raft = data_dir(swarm.name, host) / "swarm" / "raft"
        files = [p for p in raft.rglob("*") if p.is_file()]
        assert any(p.name.startswith("raft.db") for p in files)
        assert [p.name for p in files if PLAINTEXT in p.read_bytes()] == []


def test_a_joined_manager_holds_the_same_secrets_key_readable_only_by_root(swarm: Lab) -> None:
    keys = [data_dir(swarm.name, h) / "swarm" / "raft" / "secrets.key" for h in ("h1", "h2")]
    assert keys[0].read_bytes() == keys[1].read_bytes() and len(keys[0].read_bytes()) == 32
    assert [oct(k.stat().st_mode & 0o777) for k in keys] == ["0o600", "0o600"]
    assert not (data_dir(swarm.name, "h3") / "swarm" / "raft" / "secrets.key").exists()


def test_the_docker_cli_creates_and_lists_configs_and_secrets(swarm: Lab) -> None:
    docker = docker_client()
    assert docker is not None, "no docker client: run scripts/install.sh"
    cid = swarm.exec("h2", [docker, "config", "create", "from-docker", "-"], input="x", timeout=60).stdout.strip()
    sid = swarm.exec("h2", [docker, "secret", "create", "from-docker", "-"], input="y", timeout=60).stdout.strip()
    assert cid in swarm.exec("h1", [docker, "config", "ls", "-q"], timeout=60).stdout.split()
    assert sid in swarm.exec("h1", [docker, "secret", "ls", "-q"], timeout=60).stdout.split()


def _metric(lab: Lab, host: str, line_start: str) -> float | None:
    text = lab.exec(host, [sys.executable, "-c", SCRAPE], timeout=30).stdout
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(line_start + " ")]
    return values[0] if values else None


def test_the_leaders_metrics_count_its_dispatcher_sessions_heartbeats_and_nodes(swarm: Lab) -> None:
    wait_until(lambda: _metric(swarm, "h1", "shoal_dispatcher_sessions") == 3.0, 30)
    wait_until(lambda: _metric(swarm, "h1", 'shoal_manager_nodes{state="ready"}') == 3.0, 30)
    wait_until(lambda: (_metric(swarm, "h1", "shoal_dispatcher_heartbeats_total") or 0) >= 1, 30)
    assert _metric(swarm, "h1", 'shoal_manager_nodes{state="down"}') == 0.0


def test_a_manager_forced_out_leaves_the_raft_so_the_rest_keep_quorum(swarm: Lab) -> None:
    # last in the module: it changes the cluster. Swarm would keep h2 a voter that never answers again,
    # and h1 alone would then hold 1 of 2 votes: no quorum, no writes.
    assert sh(swarm, "h2", "swarm", "leave", "--force").stdout == "Node left the swarm.\n"
    rows = [line.split() for line in sh(swarm, "h1", "node", "ls").stdout.splitlines()[1:]]
    managers = [r for r in rows if r[-2] in ("Leader", "Reachable", "Unreachable")]
    assert [r[-2] for r in managers] == ["Leader"]
    assert len(sh(swarm, "h1", "config", "create", "after-leave", "-", stdin="x").stdout.strip()) == 25
