"""Placement preferences on a 5-host lab swarm (h1 manager, h2-h5 workers, 1 s heartbeats): `--placement-pref
spread=node.labels.zone` splits a service's tasks evenly over the zones whatever their node counts (the rule is
unit-tested in tests/unit/test_scheduler_core.py); the stock docker CLI sets, changes and reads the preferences."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from shoal.lab import Lab
from tests.lab.helpers import wait_until
from tests.lab.swarm_lab import docker, running_swarm, sh
from tests.lab.test_services_lab import all_running, api, node_ids  # noqa: F401 (api: the fixture that removes services)

pytestmark = pytest.mark.lab

ZONES = {"h1": "a", "h2": "b", "h3": "b", "h4": "b", "h5": "b"}
GRACE = ["--stop-grace-period", "1s"]  # sleep as PID 1 ignores SIGTERM: no 10 s wait per task at removal
PREFS = [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}, {"Spread": {"SpreadDescriptor": "node.labels.rack"}}]


@pytest.fixture(scope="module")
def swarm() -> Iterator[Lab]:
    with running_swarm(5, workers=["h2", "h3", "h4", "h5"]) as lab:
        yield lab


@pytest.fixture
def zones(swarm: Lab) -> Iterator[dict[str, str]]:
    """h1 in zone a, h2-h5 in zone b; the labels removed after the test."""
    for host, zone in ZONES.items():
        sh(swarm, "h1", "node", "update", "--label-add", f"zone={zone}", host)
    try:
        yield ZONES
    finally:
        for host in ZONES:
            sh(swarm, "h1", "node", "update", "--label-rm", "zone", host)


def containers_of(lab: Lab, host: str, service_id: str) -> list[dict[str, Any]]:
    """The running task containers of a service on a host, as that host's daemon lists them."""
    query = {"filters": json.dumps({"label": [f"com.docker.swarm.service.id={service_id}"]})}
    return lab.client(host).get("/containers/json", query)


def test_four_replicas_spread_over_two_zones_put_two_on_the_lone_node_of_zone_a(
        swarm: Lab, api: Any, zones: dict[str, str]) -> None:
    sid = sh(swarm, "h1", "service", "create", "--detach", "--name", "zoned", "--replicas", "4", *GRACE,
             "--placement-pref", "spread=node.labels.zone", "busybox", "sleep", "1d").stdout.strip()
    ts = wait_until(lambda: all_running(api, sid, 4), 60, interval=0.2)
    names = node_ids(swarm)
    per_zone = Counter(zones[names[t["NodeID"]]] for t in ts)
    per_host = Counter(names[t["NodeID"]] for t in ts)
    assert (per_zone, per_host["h1"], max(per_host[h] for h in ("h2", "h3", "h4", "h5"))) == (Counter(a=2, b=2), 2, 1)
    # the nodes run what the managers decided: two containers of the service on h1, one on two of the zone-b hosts
    assert sorted(len(containers_of(swarm, h, sid)) for h in ZONES) == [0, 0, 1, 1, 2]
    assert len(containers_of(swarm, "h1", sid)) == 2


def test_the_docker_cli_sets_changes_and_reads_placement_preferences(swarm: Lab, api: Any) -> None:
    docker(swarm, "h1", "service", "create", "--detach", "--name", "dkpref", "--replicas", "1", *GRACE,
           "--placement-pref", "spread=node.labels.zone", "--placement-pref", "spread=node.labels.rack",
           "busybox", "sleep", "1d")
    placement = json.loads(docker(swarm, "h1", "service", "inspect", "dkpref").stdout)[0]["Spec"]["TaskTemplate"]["Placement"]
    assert placement["Preferences"] == PREFS
    pretty = docker(swarm, "h1", "service", "inspect", "--pretty", "dkpref").stdout.splitlines()
    assert " Preferences:   [spread=node.labels.zone spread=node.labels.rack]" in pretty
    sid = api.get("/services/dkpref")["ID"]
    [before] = wait_until(lambda: all_running(api, sid, 1), 60, interval=0.2)
    # not detached: the CLI returns once the service converged (its tasks up to date and running)
    docker(swarm, "h1", "service", "update", "--placement-pref-rm", "spread=node.labels.zone",
           "--placement-pref-add", "spread=engine.labels.dc", "dkpref")
    # as swarmkit's: a change of placement alone does not replace a task whose node still meets the constraints
    assert ([t["ID"] for t in all_running(api, sid, 1) or []], "UpdateStatus" in api.get("/services/dkpref")) == (
        [before["ID"]], False)
    placement = json.loads(docker(swarm, "h1", "service", "inspect", "dkpref").stdout)[0]["Spec"]["TaskTemplate"]["Placement"]
    assert placement["Preferences"] == [PREFS[1], {"Spread": {"SpreadDescriptor": "engine.labels.dc"}}]
    assert " Preferences:   [spread=node.labels.rack spread=engine.labels.dc]" in sh(
        swarm, "h1", "service", "inspect", "--pretty", "dkpref").stdout.splitlines()
