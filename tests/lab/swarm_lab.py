"""Lab swarms for the swarm test files: h1 inits (1 s heartbeats), the given hosts join as managers or workers, all
ready before the module's tests run; plus the `sh`/`docker`/`inspect`/`node_id` shortcuts those files share.

Builds on tests/lab/helpers.py (running_lab, wait_until); used by the module fixtures of test_overlay_faults.py,
test_overlay_flow.py, test_services_faults.py, test_services_lab.py, test_swarm_networks.py, test_gossip_lab.py,
test_services_flow.py, test_overlay_connect.py.
"""
from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

from shoal.lab import Lab, host_address
from tests.docker_client import docker_client
from tests.lab.helpers import SHOAL, running_lab, wait_until

# what `swarm join` prints when its wait ends before the join does (the join goes on)
JOIN_GOES_ON = "Error response from daemon: Timeout was reached before node joined."
READY_S = 120.0  # a loaded 2-core machine: five daemons joining at once


def sh(lab: Lab, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """`shoal ARGS` in a lab host, talking to that host's daemon."""
    return lab.exec(host, SHOAL + list(args), check=check, timeout=120)


def docker(lab: Lab, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """The docker CLI in a lab host, talking to that host's daemon."""
    client = docker_client()
    assert client is not None, "no docker client: run scripts/install.sh"
    return lab.exec(host, [client, "-H", lab.url(host), *args], check=check, timeout=120)


def inspect(lab: Lab, host: str, *args: str) -> dict:
    """The first object an inspect command prints (`inspect NAME`, `network inspect NAME`)."""
    return json.loads(sh(lab, host, *args).stdout)[0]


def node_id(lab: Lab, host: str) -> str:
    return lab.client(host).get("/info")["Swarm"]["NodeID"]


def ready_nodes(lab: Lab) -> list[str]:
    """Hostnames of the nodes h1 sees ready, sorted."""
    return sorted(n["Description"]["Hostname"] for n in lab.client("h1").get("/nodes") if n["Status"]["State"] == "ready")


def join_swarm(lab: Lab, managers: Sequence[str] = (), workers: Sequence[str] = ()) -> None:
    """h1 inits a swarm with 1 s heartbeats; managers then workers join it; returns once all of them are ready."""
    sh(lab, "h1", "swarm", "init", "--advertise-addr", host_address("h1"), "--dispatcher-heartbeat", "1s")
    tokens = {role: sh(lab, "h1", "swarm", "join-token", "-q", role).stdout.strip() for role in ("manager", "worker")}
    for host, role in [*((h, "manager") for h in managers), *((h, "worker") for h in workers)]:
        joined = sh(lab, host, "swarm", "join", "--token", tokens[role], f"{host_address('h1')}:2377", check=False)
        # on a loaded machine a manager's join may outlast the CLI's wait; it goes on, as the message says
        assert joined.returncode == 0 or joined.stderr.startswith(JOIN_GOES_ON), joined.stderr
    members = sorted(["h1", *managers, *workers])
    wait_until(lambda: ready_nodes(lab) == members, READY_S, interval=0.2)


@contextlib.contextmanager
def services_removed_after(client: Any, wait_for_tasks: bool = False) -> Iterator[Any]:
    """Yields client (a manager's); every service made meanwhile is removed after, and with wait_for_tasks its tasks
    are waited out of the store (a test that removes a network next needs them gone)."""
    before = {s["ID"] for s in client.get("/services")}
    try:
        yield client
    finally:
        made = [s["ID"] for s in client.get("/services") if s["ID"] not in before]
        for sid in made:
            client.delete(f"/services/{sid}")
        if wait_for_tasks:
            wait_until(lambda: not [t for t in client.get("/tasks") if t["ServiceID"] in made], 60, interval=0.2)


@contextlib.contextmanager
def running_swarm(hosts: int, managers: Sequence[str] = (), workers: Sequence[str] = ()) -> Iterator[Lab]:
    """A lab of `hosts` hosts for a whole test module with the swarm of join_swarm on it; always torn down."""
    with running_lab(hosts) as lab:
        join_swarm(lab, managers, workers)
        yield lab
