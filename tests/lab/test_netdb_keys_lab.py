"""Gossip keys from the leader to every node's agent (manager/gossip_keys.py -> dispatcher session ->
shoal/swarm/gossip_agent.py), seen through `shoal node gossip --json` (GET /shoal/gossip) on a 2-host swarm."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from shoal.lab import Lab, host_address
from tests.lab.helpers import running_lab, shoal, wait_until


@pytest.fixture(scope="module")
def swarm() -> Iterator[Lab]:
    with running_lab(2) as lab:
        shoal(lab, "swarm", "init", "--advertise-addr", host_address("h1"), "--dispatcher-heartbeat", "1s")
        token = shoal(lab, "swarm", "join-token", "-q", "worker").stdout.strip()
        shoal(lab, "swarm", "join", "--token", token, host_address("h1"), host="h2")
        yield lab


def gossip(lab: Lab, host: str) -> dict:
    return json.loads(shoal(lab, "node", "gossip", "--json", host=host).stdout)


def test_every_node_gets_the_clusters_first_gossip_key_from_its_session(swarm: Lab) -> None:
    ids = {h: swarm.client(h).get("/info")["Swarm"]["NodeID"] for h in ("h1", "h2")}
    got = {h: wait_until(lambda h=h: (s := gossip(swarm, h))["Keys"] and s, timeout=20) for h in ("h1", "h2")}
    for h, s in got.items():
        assert (s["NodeID"], s["Keys"], s["KeyLamport"]) == (ids[h], 1, 1)
        assert s["Addr"] in ("", f"{host_address(h)}:7946")


def test_node_gossip_prints_the_state_its_json_gives(swarm: Lab) -> None:
    s = gossip(swarm, "h2")
    lines = shoal(swarm, "node", "gossip", host="h2").stdout.splitlines()
    want = (f"Gossip: running on {s['Addr']}, 1 keys (lamport 1)" if s["Running"] else f"Gossip: not running: {s['Error']}")
    assert lines[0] == want
    assert lines[1].split() == ["NODE", "ADDRESS", "STATE", "INCARNATION"]
    assert len(lines) >= 2 + len(s["Members"])


def test_after_swarm_leave_node_gossip_says_the_node_is_not_in_a_swarm(swarm: Lab) -> None:
    shoal(swarm, "swarm", "leave", host="h2")
    r = shoal(swarm, "node", "gossip", host="h2", check=False)
    assert (r.returncode, r.stderr) == (1, "Error response from daemon: This node is not part of a swarm\n")
