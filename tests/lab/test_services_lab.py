"""Services on a 3-host lab swarm (h1 manager, h2/h3 workers, 1 s heartbeats): create/ls/inspect/scale/update/
rollback/rm through the local API, the docker CLI and docker-py; what the managers do with tasks (slots, desired
states, nodes, spread, drain, global); bad input refused with swarm's messages and nothing stored.
Tasks are asserted as the managers leave them (ASSIGNED): running them is the agent executor's (helper tasks)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from shoal.client import DaemonError
from shoal.lab import Lab, host_address
from tests.docker_client import docker_client
from tests.lab.helpers import SHOAL, running_lab, wait_until

HOSTS = ["h1", "h2", "h3"]
NOT_MANAGER = ("This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. "
               "Please run this command on a manager node or promote the current node to a manager.")


def sh(lab: Lab, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return lab.exec(host, SHOAL + list(args), check=check, timeout=120)


def docker(lab: Lab, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    client = docker_client()
    assert client is not None, "no docker client: run scripts/install.sh"
    return lab.exec(host, [client, "-H", lab.url(host), *args], check=check, timeout=120)


@pytest.fixture(scope="module")
def swarm() -> Iterator[Lab]:
    with running_lab(3) as lab:
        sh(lab, "h1", "swarm", "init", "--advertise-addr", host_address("h1"), "--dispatcher-heartbeat", "1s")
        token = sh(lab, "h1", "swarm", "join-token", "-q", "worker").stdout.strip()
        for h in ("h2", "h3"):
            sh(lab, h, "swarm", "join", "--token", token, host_address("h1"))
        wait_until(lambda: len([n for n in lab.client("h1").get("/nodes") if n["Status"]["State"] == "ready"]) == 3,
                   30, interval=0.2)
        yield lab


@pytest.fixture
def api(swarm: Lab) -> Iterator[Any]:
    """h1's client; every service a test made is removed after it."""
    c = swarm.client("h1")
    before = {s["ID"] for s in c.get("/services")}
    yield c
    for s in c.get("/services"):
        if s["ID"] not in before:
            c.delete(f"/services/{s['ID']}")


def node_ids(lab: Lab) -> dict[str, str]:
    """node id -> hostname."""
    return {n["ID"]: n["Description"]["Hostname"] for n in lab.client("h1").get("/nodes")}


def spec(name: str, replicas: int = 2, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Args": ["sleep", "1d"]}},
                            "Mode": {"Replicated": {"Replicas": replicas}}}
    body.update(extra)
    return body


def tasks_of(c: Any, service_id: str) -> list[dict[str, Any]]:
    return c.get("/tasks", {"filters": json.dumps({"service": {service_id: True}})})


def live(c: Any, service_id: str) -> list[dict[str, Any]]:
    return sorted((t for t in tasks_of(c, service_id) if t["DesiredState"] == "running"), key=lambda t: t.get("Slot", 0))


def all_assigned(c: Any, service_id: str, n: int) -> list[dict[str, Any]] | None:
    ts = live(c, service_id)
    if len(ts) == n and all(t["Status"]["State"] == "assigned" and t.get("NodeID") for t in ts):
        return ts
    return None


# ---------------------------------------------------------------------------------------------- create
def test_create_makes_one_task_per_slot_assigned_spread_over_the_nodes(swarm: Lab, api: Any) -> None:
    sid = api.post("/services/create", spec("web", 3))["ID"]
    ts = wait_until(lambda: all_assigned(api, sid, 3), 20, interval=0.2)
    names = node_ids(swarm)
    assert [t["Slot"] for t in ts] == [1, 2, 3]
    assert sorted(names[t["NodeID"]] for t in ts) == HOSTS  # spread: one per node
    assert {(t["ServiceID"], t["Spec"]["ContainerSpec"]["Image"], t["Status"]["Message"]) for t in ts} == {
        (sid, "busybox", "scheduler assigned task to node")}
