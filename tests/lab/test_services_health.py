"""Services with health checks on a 3-host lab swarm (h1 manager, h2/h3 workers), from the stock docker CLI: a task
whose container has a check is STARTING until the check passes, and only then RUNNING, in `tasks.<name>` and behind
the VIP; an unhealthy container is stopped and its task FAILED ("dockerexec: unhealthy container") and replaced; a
rolling update to a spec whose check fails rolls back; `--no-healthcheck` reaches the container; a daemon killed
while its task waits for the check adopts the container and keeps waiting. Short intervals (100-200 ms) keep it
quick; the waits are generous timeouts, never assertions on time. Under test: agent/taskexec.py's gating, shoal/swarm/executor.py."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from shoal.lab import Lab
from tests.lab.helpers import wait_until
from tests.lab.swarm_lab import docker, running_swarm
from tests.lab.test_services_flow import container_of, fetch, hostnames, resolve, task_ip

NET = "health-net"
UNHEALTHY = "dockerexec: unhealthy container"
# answers with its hostname; /tmp/ok is what the check looks for (the test makes and removes it)
WEB = ["sh", "-c", "hostname > /tmp/index.html; exec httpd -f -p 80 -h /tmp"]
# a check that passes only once /tmp/ok exists: the long start period keeps the task starting until then
GATED = ["--health-cmd", "test -e /tmp/ok", "--health-interval", "200ms", "--health-start-interval", "100ms",
         "--health-start-period", "10m", "--health-retries", "2", "--health-timeout", "2s"]


@pytest.fixture(scope="module")
def swarm() -> Iterator[Lab]:
    with running_swarm(3, workers=["h2", "h3"]) as lab:
        docker(lab, "h1", "network", "create", "-d", "overlay", "--subnet", "10.0.19.0/24", NET)
        docker(lab, "h1", "service", "create", "--detach", "--name", "probe", "--network", NET,
               "--constraint", "node.hostname==h1", "--stop-grace-period", "1s", "busybox", "sleep", "1d")
        yield lab


@pytest.fixture
def client(swarm: Lab) -> str:
    """The container of the `probe` task on h1 (on the overlay), once it runs."""
    t = wait_until(lambda: live(swarm, "probe", "running"), 90, interval=0.5)[0]
    return container_of(swarm, "h1", t["ID"])


@pytest.fixture
def cleanup(swarm: Lab) -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        docker(swarm, "h1", "service", "rm", name, check=False)


def tasks(lab: Lab, service: str) -> list[dict[str, Any]]:
    return lab.client("h1").get("/tasks", {"filters": json.dumps({"service": {service: True}})})


def live(lab: Lab, service: str, state: str, n: int = 1) -> list[dict[str, Any]] | None:
    """The service's n tasks meant to run, when all of them are in state (and placed)."""
    ts = [t for t in tasks(lab, service) if t["DesiredState"] == "running"]
    if len(ts) == n and all(t["Status"]["State"] == state and t.get("NodeID") for t in ts):
        return sorted(ts, key=lambda t: t["Slot"])
    return None


def container(lab: Lab, task: dict[str, Any]) -> tuple[str, str]:
    """(lab host, container id) of a task."""
    host = hostnames(lab)[task["NodeID"]]
    return host, container_of(lab, host, task["ID"])


def health_of(lab: Lab, host: str, cid: str) -> str:
    return lab.client(host).get(f"/containers/{cid}/json")["State"]["Health"]["Status"]


def test_a_task_runs_and_is_reachable_only_once_its_check_passes_and_fails_when_the_check_does(
        swarm: Lab, client: str, cleanup: list[str]) -> None:
    cleanup.append("hok")
    docker(swarm, "h1", "service", "create", "--detach", "--name", "hok", "--network", NET, "--stop-grace-period", "1s",
           "--constraint", "node.role==worker", *GATED, "busybox", *WEB)
    spec = docker(swarm, "h1", "service", "inspect", "--format", "{{json .Spec.TaskTemplate.ContainerSpec.Healthcheck}}",
                  "hok").stdout
    assert json.loads(spec) == {"Test": ["CMD-SHELL", "test -e /tmp/ok"], "Interval": 200_000_000, "Timeout": 2_000_000_000,
                                "StartPeriod": 600_000_000_000, "StartInterval": 100_000_000, "Retries": 2}

    # started, its check probing and failing (within the start period): STARTING, out of DNS and the VIP
    first = wait_until(lambda: live(swarm, "hok", "starting"), 90, interval=0.2)[0]
    host, cid = container(swarm, first)
    assert swarm.client(host).get(f"/containers/{cid}/json")["Config"]["Healthcheck"] == {
        "Test": ["CMD-SHELL", "test -e /tmp/ok"], "Interval": 200_000_000, "Timeout": 2_000_000_000,
        "StartPeriod": 600_000_000_000, "StartInterval": 100_000_000, "Retries": 2}
    wait_until(lambda: len(swarm.client(host).get(f"/containers/{cid}/json")["State"]["Health"]["Log"]) >= 3, 30,
               interval=0.2)
    assert health_of(swarm, host, cid) == "starting"
    assert [(t["ID"], t["Status"]["State"]) for t in tasks(swarm, "hok")] == [(first["ID"], "starting")]
    assert resolve(swarm, "h1", client, "tasks.hok") == []
    assert fetch(swarm, "h1", client, "http://hok/") is None

    # the check passes: RUNNING, in tasks.hok, answering through the VIP
    docker(swarm, host, "exec", cid, "touch", "/tmp/ok")
    (running,) = wait_until(lambda: live(swarm, "hok", "running"), 60, interval=0.2)
    assert (running["ID"], health_of(swarm, host, cid)) == (first["ID"], "healthy")
    net_id = swarm.client("h1").get(f"/networks/{NET}")["Id"]
    assert wait_until(lambda: resolve(swarm, "h1", client, "tasks.hok") == [task_ip(running, net_id)] or None, 30,
                      interval=0.5)
    hostname = swarm.client(host).get(f"/containers/{cid}/json")["Config"]["Hostname"]
    assert wait_until(lambda: fetch(swarm, "h1", client, "http://hok/"), 30, interval=0.5) == hostname

    # the check fails while it runs: stopped (httpd as PID 1 ignores SIGTERM: killed after the grace), FAILED, replaced
    docker(swarm, host, "exec", cid, "rm", "/tmp/ok")
    failed = wait_until(lambda: [t for t in tasks(swarm, "hok") if t["ID"] == first["ID"] and t["Status"]["State"] == "failed"],
                        60, interval=0.2)[0]
    assert (failed["Status"]["Err"], failed["Status"]["ContainerStatus"]["ExitCode"]) == (
        f"task: non-zero exit (137): {UNHEALTHY}", 137)
    second = wait_until(lambda: live(swarm, "hok", "starting"), 60, interval=0.2)[0]
    assert (second["ID"] != first["ID"], second["Slot"]) == (True, first["Slot"])
    assert wait_until(lambda: resolve(swarm, "h1", client, "tasks.hok") == [] or None, 30, interval=0.5)


def test_a_task_whose_check_fails_before_it_passes_is_failed_and_replaced_never_running(
        swarm: Lab, client: str, cleanup: list[str]) -> None:
    cleanup.append("hbad")
    docker(swarm, "h1", "service", "create", "--detach", "--name", "hbad", "--network", NET, "--stop-grace-period", "1s",
           "--restart-delay", "500ms", "--health-cmd", "false", "--health-interval", "200ms", "--health-retries", "1",
           "busybox", "sleep", "1d")

    def failed() -> list[dict[str, Any]]:
        return [t for t in tasks(swarm, "hbad") if t["Status"]["State"] == "failed"]

    deadline = time.monotonic() + 120
    while len(failed()) < 2:  # until two have failed and been replaced, none is ever running nor in tasks.hbad
        assert time.monotonic() < deadline, tasks(swarm, "hbad")
        assert "running" not in {t["Status"]["State"] for t in tasks(swarm, "hbad")}
        assert resolve(swarm, "h1", client, "tasks.hbad") == []
        time.sleep(0.3)
    assert {(t["Slot"], t["Status"]["Message"], t["Status"]["Err"]) for t in failed()} == {
        (1, "starting", f"task: non-zero exit (137): {UNHEALTHY}")}  # sleep ignores SIGTERM: killed after its 1 s
    ps = docker(swarm, "h1", "service", "ps", "--no-trunc", "--format", "{{.Name}}|{{.CurrentState}}|{{.Error}}",
                "hbad").stdout.splitlines()
    failed_line = rf'(\\_ )?hbad\.1\|Failed .+ ago\|"task: non-zero exit \(137\): {UNHEALTHY}"'
    shown = [line for line in ps if re.fullmatch(failed_line, line.strip())]
    assert len(shown) >= 2, ps


def test_an_update_to_a_failing_check_rolls_back_with_update_failure_action_rollback(
        swarm: Lab, cleanup: list[str]) -> None:
    cleanup.append("hroll")
    docker(swarm, "h1", "service", "create", "--detach", "--name", "hroll", "--replicas", "2", "--stop-grace-period", "1s",
           "--update-failure-action", "rollback", "--update-parallelism", "1", "--health-cmd", "true",
           "--health-interval", "200ms", "busybox", "sleep", "1d")
    before = wait_until(lambda: live(swarm, "hroll", "running", 2), 90, interval=0.2)
    docker(swarm, "h1", "service", "update", "--detach", "--health-cmd", "false", "--health-retries", "1", "hroll")

    def rolled_back() -> dict[str, Any] | None:
        s = swarm.client("h1").get("/services/hroll")
        return s if s.get("UpdateStatus", {}).get("State") == "rollback_completed" else None

    svc = wait_until(rolled_back, 120, interval=0.5)
    assert svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Healthcheck"] == {"Test": ["CMD-SHELL", "true"],
                                                                            "Interval": 200_000_000}
    after = wait_until(lambda: live(swarm, "hroll", "running", 2), 90, interval=0.2)
    assert {t["Spec"]["ContainerSpec"]["Healthcheck"]["Test"][1] for t in after} == {"true"}
    failed = [t for t in tasks(swarm, "hroll") if t["Status"]["State"] == "failed"]
    assert {(tuple(t["Spec"]["ContainerSpec"]["Healthcheck"]["Test"]), t["Status"]["Err"]) for t in failed} == {
        (("CMD-SHELL", "false"), f"task: non-zero exit (137): {UNHEALTHY}")}
    # parallelism 1: the first slot's new task failed and the update rolled back; the other slot was never touched
    assert len({t["ID"] for t in before} & {t["ID"] for t in after}) == 1


@pytest.mark.parametrize(("flags", "message"), [
    (["--health-interval", "500us"], "ContainerSpec: Interval in HealthConfig cannot be less than 1ms"),
    (["--health-retries", "-1"], "ContainerSpec: Retries in HealthConfig cannot be negative"),
])
def test_a_bad_health_check_is_refused_with_swarms_words_and_nothing_is_stored(swarm: Lab, flags: list[str],
                                                                               message: str) -> None:
    r = docker(swarm, "h1", "service", "create", "--detach", "--name", "hwrong", *flags, "busybox", "sleep", "1d",
               check=False)
    assert (r.returncode, r.stderr.strip()) == (
        1, f"Error response from daemon: rpc error: code = InvalidArgument desc = {message}")
    assert [s for s in swarm.client("h1").get("/services") if s["Spec"]["Name"] == "hwrong"] == []


def test_no_healthcheck_from_service_update_reaches_the_task_container(swarm: Lab, cleanup: list[str]) -> None:
    cleanup.append("hnone")
    docker(swarm, "h1", "service", "create", "--detach", "--name", "hnone", "--stop-grace-period", "1s",
           "--health-cmd", "true", "--health-interval", "200ms", "busybox", "sleep", "1d")
    wait_until(lambda: live(swarm, "hnone", "running"), 90, interval=0.2)
    docker(swarm, "h1", "service", "update", "--detach", "--no-healthcheck", "hnone")

    def updated() -> dict[str, Any] | None:
        ts = live(swarm, "hnone", "running")
        return ts[0] if ts and ts[0]["Spec"]["ContainerSpec"].get("Healthcheck") == {"Test": ["NONE"]} else None

    t = wait_until(updated, 90, interval=0.2)
    host, cid = container(swarm, t)
    got = swarm.client(host).get(f"/containers/{cid}/json")
    assert (got["Config"]["Healthcheck"], "Health" in got["State"]) == ({"Test": ["NONE"]}, False)


def test_a_daemon_killed_while_its_task_waits_for_its_check_keeps_waiting_then_runs_the_same_container(
        swarm: Lab, cleanup: list[str]) -> None:
    cleanup.append("hkeep")
    docker(swarm, "h1", "service", "create", "--detach", "--name", "hkeep", "--stop-grace-period", "1s",
           "--constraint", "node.hostname==h2", *GATED, "busybox", *WEB)
    (first,) = wait_until(lambda: live(swarm, "hkeep", "starting"), 90, interval=0.2)
    host, cid = container(swarm, first)
    # a long heartbeat while h2's daemon is away: under load a restart can outlast the 1 s one, and a node seen down
    # has its task replaced (then the container stops: the case here is adoption, not a node failure)
    docker(swarm, "h1", "swarm", "update", "--dispatcher-heartbeat", "20s")
    try:
        time.sleep(2)  # every node's session has the new period
        swarm.restart_daemon("h2", kill9=True)
    finally:
        docker(swarm, "h1", "swarm", "update", "--dispatcher-heartbeat", "1s")
    cleanup.append("hproof")  # a task started on h2 after the restart: proof its worker runs its assignments again
    docker(swarm, "h1", "service", "create", "--detach", "--name", "hproof", "--stop-grace-period", "1s",
           "--constraint", "node.hostname==h2", "busybox", "sleep", "1d")
    wait_until(lambda: live(swarm, "hproof", "running"), 90, interval=0.2)
    # the restarted daemon checks again from "starting": the task stays STARTING, its container the same
    try:
        wait_until(lambda: len(swarm.client(host).get(f"/containers/{cid}/json")["State"]["Health"]["Log"]) >= 2, 30,
                   interval=0.2)
    except TimeoutError:  # say what the restarted daemon holds (seen once in a loaded full run, not alone)
        raise AssertionError(swarm.client(host).get(f"/containers/{cid}/json")["State"]) from None
    assert health_of(swarm, host, cid) == "starting"
    assert [(t["ID"], t["Status"]["State"]) for t in tasks(swarm, "hkeep")] == [(first["ID"], "starting")]
    docker(swarm, host, "exec", cid, "touch", "/tmp/ok")
    (running,) = wait_until(lambda: live(swarm, "hkeep", "running"), 60, interval=0.2)
    assert (running["ID"], running["Status"]["ContainerStatus"]["ContainerID"]) == (first["ID"], cid)
    assert [c["Id"] for c in swarm.client(host).get("/containers/json", {"all": "1", "filters": json.dumps(
        {"label": ["com.docker.swarm.service.name=hkeep"]})})] == [cid]
