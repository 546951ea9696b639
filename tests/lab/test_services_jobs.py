"""Swarm jobs on a 3-host lab swarm (h1 manager, h2/h3 workers): `--mode replicated-job` runs its completions at
most MaxConcurrent at a time and stops, `--mode global-job` once per node; a failing task is retried per the restart
policy; an update (`--force`, `scale`) is a new run; the shoal CLI and the stock docker CLI follow a job to `job
complete`. Every service a test makes is removed after it (the `api` fixture)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from shoal.client import DaemonError
from shoal.lab import Lab
from tests.lab.helpers import wait_until
from tests.lab.swarm_lab import docker, services_removed_after, sh
from tests.lab.test_services_flow import WEB, answers, container_of, fetch, resolve, running, task_ip
from tests.lab.test_services_lab import swarm  # noqa: F401 (the module's 3-host swarm: h1 manager, h2/h3 workers)

HOSTS = ["h1", "h2", "h3"]
# a task not yet complete nor ended: MaxConcurrent bounds these
ACTIVE = {"new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running"}
SLEEP_THEN_DONE = ["busybox", "sh", "-c", "sleep 1; echo done"]


@pytest.fixture
def api(swarm: Lab) -> Iterator[Any]:
    """h1's client; every service a test made is removed after it, and its tasks gone from the store."""
    with services_removed_after(swarm.client("h1"), wait_for_tasks=True) as c:
        yield c


def tasks_of(c: Any, service_id: str) -> list[dict[str, Any]]:
    return c.get("/tasks", {"filters": json.dumps({"service": {service_id: True}})})


def of_run(tasks: list[dict[str, Any]], run: int) -> list[dict[str, Any]]:
    return [t for t in tasks if (t.get("JobIteration") or {}).get("Index", 0) == run and "JobIteration" in t]


def states(tasks: list[dict[str, Any]]) -> list[str]:
    return sorted(t["Status"]["State"] for t in tasks)


def status(c: Any, name: str) -> dict[str, int]:
    [svc] = [s for s in c.get("/services", {"status": "true"}) if s["Spec"]["Name"] == name]
    return svc["ServiceStatus"]


def test_a_replicated_job_completes_its_total_never_running_more_than_max_concurrent(swarm: Lab, api: Any) -> None:
    sid = sh(swarm, "h1", "service", "create", "-d", "--name", "rj", "--mode", "replicated-job", "--replicas", "4",
             "--max-concurrent", "2", *SLEEP_THEN_DONE).stdout.strip()
    most = 0

    def finished() -> bool:
        nonlocal most
        ts = tasks_of(api, sid)
        most = max(most, sum(1 for t in ts if t["Status"]["State"] in ACTIVE))
        return states(ts).count("complete") == 4

    wait_until(finished, 90, interval=0.1)
    ts = tasks_of(api, sid)
    assert (states(ts), most) == (["complete"] * 4, 2)
    assert sorted((t.get("Slot", 0), t["DesiredState"], t["JobIteration"].get("Index", 0)) for t in ts) == [
        (slot, "complete", 0) for slot in range(4)]
    assert status(api, "rj") == {"RunningTasks": 0, "DesiredTasks": 2, "CompletedTasks": 4}
    logs = docker(swarm, "h1", "service", "logs", "rj").stdout.splitlines()
    assert [line.rsplit("|", 1)[-1].strip() for line in logs] == ["done"] * 4


def test_the_shoal_cli_follows_a_job_until_it_completes(swarm: Lab, api: Any) -> None:
    r = sh(swarm, "h1", "service", "create", "--name", "follow", "--mode", "replicated-job", "--replicas", "2",
           "busybox", "true")
    sid = r.stdout.splitlines()[0]
    assert ("job complete" in r.stdout.splitlines()[-1], states(tasks_of(api, sid))) == (True, ["complete"] * 2)
    assert "job progress: 2 out of 2 complete" in r.stdout


def test_a_global_job_completes_once_per_node_and_cannot_be_scaled(swarm: Lab, api: Any) -> None:
    sid = api.post("/services/create", {"Name": "gj", "Mode": {"GlobalJob": {}}, "TaskTemplate": {
        "ContainerSpec": {"Image": "busybox", "Args": ["sh", "-c", "echo done"]}}})["ID"]
    wait_until(lambda: status(api, "gj") == {"RunningTasks": 0, "DesiredTasks": 0, "CompletedTasks": 3}, 60, interval=0.2)
    names = {n["ID"]: n["Description"]["Hostname"] for n in api.get("/nodes")}
    ts = tasks_of(api, sid)
    assert sorted((names[t["NodeID"]], t["Status"]["State"], t["DesiredState"]) for t in ts) == [
        (h, "complete", "complete") for h in HOSTS]
    r = docker(swarm, "h1", "service", "scale", "-d", "gj=2", check=False)
    assert (r.returncode, r.stderr.strip()) == (1, "gj: scale can only be used with replicated or replicated-job mode")


def test_a_global_job_runs_on_a_node_that_becomes_eligible_later(swarm: Lab, api: Any) -> None:
    names = {n["ID"]: n["Description"]["Hostname"] for n in api.get("/nodes")}
    sh(swarm, "h1", "node", "update", "--availability", "drain", "h3")
    try:
        sid = sh(swarm, "h1", "service", "create", "-d", "--name", "later", "--mode", "global-job", "busybox",
                 "true").stdout.strip()
        done_on = lambda: sorted(names[t["NodeID"]] for t in tasks_of(api, sid) if t["Status"]["State"] == "complete")  # noqa: E731
        wait_until(lambda: done_on() == ["h1", "h2"], 60, interval=0.2)
        assert len(tasks_of(api, sid)) == 2
    finally:
        sh(swarm, "h1", "node", "update", "--availability", "active", "h3")
    wait_until(lambda: done_on() == HOSTS, 60, interval=0.2)
    assert [t["JobIteration"].get("Index", 0) for t in tasks_of(api, sid)] == [0, 0, 0]


def test_a_job_on_an_overlay_network_gets_its_address_there(swarm: Lab, api: Any) -> None:
    sh(swarm, "h1", "network", "create", "-d", "overlay", "--subnet", "10.0.77.0/24", "jobnet")
    try:  # the network goes once the job's tasks are gone (the api fixture's cleanup would come after this)
        with services_removed_after(api, wait_for_tasks=True):
            sid = sh(swarm, "h1", "service", "create", "-d", "--name", "onnet", "--mode", "replicated-job", "--replicas",
                     "2", "--network", "jobnet", "busybox", "sh", "-c", "ip -4 addr | grep -q 'inet 10.0.77.'").stdout.strip()
            ended = wait_until(lambda: (ts := tasks_of(api, sid)) and len(ts) >= 2 and all(
                t["Status"]["State"] in ("complete", "failed", "rejected") for t in ts) and ts, 60, interval=0.2)
            assert states(ended) == ["complete"] * 2, [t["Status"] for t in ended]
            # a completed job's task never runs again: the workers' copies of the network go (the job still exists)
            wait_until(lambda: not [h for h in ("h2", "h3") if "jobnet" in docker(swarm, h, "network", "ls").stdout],
                       30, interval=0.2)
    finally:
        sh(swarm, "h1", "network", "rm", "jobnet")


def test_a_running_jobs_tasks_are_in_its_dns_names_and_behind_its_vip(swarm: Lab, api: Any) -> None:
    """A job is a service to the network: its VIP and `tasks.<name>` hold its running tasks (swarmkit allocates
    the VIP whatever the mode; the tasks' containers join the service's records as any task's)."""
    sh(swarm, "h1", "network", "create", "-d", "overlay", "--subnet", "10.0.78.0/24", "jobdns")
    net_id = api.get("/networks/jobdns")["Id"]
    try:
        with services_removed_after(api, wait_for_tasks=True):
            sid = sh(swarm, "h1", "service", "create", "-d", "--name", "webjob", "--mode", "replicated-job",
                     "--replicas", "2", "--network", "jobdns", "--stop-grace-period", "1s", "busybox",
                     *WEB).stdout.strip()
            web = wait_until(lambda: (ts := tasks_of(api, sid)) and len(ts) == 2 and all(
                t["Status"]["State"] == "running" for t in ts) and ts, 90, interval=0.2)
            sh(swarm, "h1", "service", "create", "-d", "--name", "jobclient", "--network", "jobdns",
               "--constraint", "node.hostname==h1", "--stop-grace-period", "1s", "busybox", "sleep", "1d")
            [client_task] = wait_until(lambda: running(swarm, "jobclient", 1), 90, interval=0.2)
            client = container_of(swarm, "h1", client_task["ID"])
            vip = next(v["Addr"].split("/")[0] for v in api.get(f"/services/{sid}")["Endpoint"]["VirtualIPs"]
                       if v["NetworkID"] == net_id)
            ips = sorted(task_ip(t, net_id) for t in web)
            assert (resolve(swarm, "h1", client, "webjob"), resolve(swarm, "h1", client, "tasks.webjob")) == (
                [vip], ips)
            answered = answers(lambda: fetch(swarm, "h1", client, "http://webjob/"), 20)
            assert len(answered) == 2, answered  # both task containers' hostnames, through the VIP
    finally:
        sh(swarm, "h1", "network", "rm", "jobdns")


def test_a_failing_job_task_is_retried_per_the_restart_policy_with_its_exit_error(swarm: Lab, api: Any) -> None:
    sid = sh(swarm, "h1", "service", "create", "-d", "--name", "fails", "--mode", "replicated-job",
             "--restart-condition", "on-failure", "--restart-delay", "100ms", "--restart-max-attempts", "2",
             "busybox", "sh", "-c", "exit 3").stdout.strip()

    def given_up() -> list[dict[str, Any]] | None:
        ts = tasks_of(api, sid)
        return ts if len(ts) == 3 and all(t["DesiredState"] == "shutdown" for t in ts) else None

    ts = wait_until(given_up, 60, interval=0.2)
    assert [(t.get("Slot", 0), t["Status"]["State"], t["Status"]["Err"]) for t in ts] == [
        (0, "failed", "task: non-zero exit (3)")] * 3
    assert status(api, "fails") == {"RunningTasks": 0, "DesiredTasks": 1, "CompletedTasks": 0}


def test_update_force_and_scale_start_a_new_run(swarm: Lab, api: Any) -> None:
    sid = api.post("/services/create", {"Name": "again", "Mode": {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 2}},
                                        "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Args": ["true"]}}})["ID"]
    wait_until(lambda: states(of_run(tasks_of(api, sid), 0)) == ["complete"] * 2, 60, interval=0.2)
    first = api.get(f"/services/{sid}")["JobStatus"]
    sh(swarm, "h1", "service", "update", "-d", "--force", "again")
    wait_until(lambda: states(of_run(tasks_of(api, sid), 1)) == ["complete"] * 2, 60, interval=0.2)
    second = api.get(f"/services/{sid}")["JobStatus"]
    assert (first["JobIteration"], second["JobIteration"], second["LastExecution"] > first["LastExecution"]) == (
        {"Index": 0}, {"Index": 1}, True)
    assert states(of_run(tasks_of(api, sid), 0)) == ["complete"] * 2  # swarmkit keeps an earlier run's completed tasks
    assert docker(swarm, "h1", "service", "scale", "-d", "again=3").stdout == "again scaled to 3\n"
    wait_until(lambda: states(of_run(tasks_of(api, sid), 2)) == ["complete"] * 3, 60, interval=0.2)
    assert api.get(f"/services/{sid}")["Spec"]["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 3}}


def test_the_docker_cli_follows_a_replicated_job_to_its_end_and_lists_its_completions(swarm: Lab, api: Any) -> None:
    r = docker(swarm, "h1", "service", "create", "--name", "dj", "--mode", "replicated-job", "--replicas", "3",
               "--max-concurrent", "2", *SLEEP_THEN_DONE, check=False)
    assert (r.returncode, "job complete" in r.stdout) == (0, True), (r.stdout, r.stderr)
    ls = docker(swarm, "h1", "service", "ls", "--filter", "name=dj", "--format", "{{.Mode}}|{{.Replicas}}").stdout
    assert ls == "replicated job|0/2 (3/3 completed)\n"
    assert [docker(swarm, "h1", "service", "ls", "--filter", f"mode={m}", "--format", "{{.Name}}").stdout
            for m in ("replicated-job", "global-job", "replicated")] == ["dj\n", "", ""]
    assert sh(swarm, "h1", "service", "ls", "--filter", "name=dj").stdout == docker(
        swarm, "h1", "service", "ls", "--filter", "name=dj").stdout
    ps = docker(swarm, "h1", "service", "ps", "--format", "{{.DesiredState}} {{.CurrentState}}", "dj").stdout
    assert [line.split()[:2] for line in ps.splitlines()] == [["Complete", "Complete"]] * 3


def test_the_docker_cli_follows_a_global_job_to_its_end(swarm: Lab, api: Any) -> None:
    r = docker(swarm, "h1", "service", "create", "--name", "dg", "--mode", "global-job", "busybox", "true", check=False)
    assert (r.returncode, "job complete" in r.stdout) == (0, True), (r.stdout, r.stderr)
    ls = docker(swarm, "h1", "service", "ls", "--filter", "name=dg", "--format", "{{.Mode}}|{{.Replicas}}").stdout
    assert ls == "global job|0/0 (3/3 completed)\n"


BAD = [
    ("negative max concurrent", {"ReplicatedJob": {"MaxConcurrent": -1}}, None, 400,
     "Maximum concurrent jobs must not be negative"),
    ("two modes", {"GlobalJob": {}, "ReplicatedJob": {}}, None, 400, "must specify only one service mode"),
    ("an update config", {"GlobalJob": {}}, {"Parallelism": 1}, 400,
     "rpc error: code = InvalidArgument desc = Jobs may not have an update config"),
]


@pytest.mark.parametrize("what,mode,update,code,message", BAD, ids=[b[0] for b in BAD])
def test_a_bad_job_is_refused_with_swarms_message_and_nothing_is_stored(swarm: Lab, api: Any, what: str, mode: dict,
                                                                        update: dict | None, code: int, message: str) -> None:
    body = {"Name": "badjob", "Mode": mode, "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}},
            **({"UpdateConfig": update} if update else {})}
    with pytest.raises(DaemonError) as e:
        api.post("/services/create", body)
    assert (e.value.status, e.value.message, [s for s in api.get("/services") if s["Spec"]["Name"] == "badjob"]) == (
        code, message, [])


def test_a_job_cannot_become_a_service_nor_a_service_a_job(swarm: Lab, api: Any) -> None:
    sid = api.post("/services/create", {"Name": "stays", "Mode": {"ReplicatedJob": {}},
                                        "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Args": ["true"]}}})["ID"]
    svc = api.get(f"/services/{sid}")
    with pytest.raises(DaemonError) as e:
        api.post(f"/services/{sid}/update", {**svc["Spec"], "Mode": {"Replicated": {"Replicas": 1}}},
                 {"version": svc["Version"]["Index"]})
    assert (e.value.status, e.value.message) == (500, "rpc error: code = Unknown desc = service mode change is not allowed")
    assert api.get(f"/services/{sid}")["Spec"]["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 1}}


def test_docker_py_creates_a_replicated_job_that_completes(swarm: Lab, api: Any) -> None:
    import docker as docker_py

    client = docker_py.DockerClient(base_url=swarm.url("h1"))
    mode = docker_py.types.ServiceMode("replicated-job", replicas=3, concurrency=2)
    svc = client.services.create("busybox", ["true"], name="pyjob", mode=mode)
    assert client.services.get(svc.id).attrs["Spec"]["Mode"] == {
        "ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 3}}
    wait_until(lambda: states(tasks_of(api, svc.id)) == ["complete"] * 3, 60, interval=0.2)
    assert [t.get("Slot", 0) for t in sorted(svc.tasks(), key=lambda t: t.get("Slot", 0))] == [0, 1, 2]


def test_a_job_from_an_api_1_40_client_is_a_replicated_service_of_one_task_as_dockerd_makes_it(
        swarm: Lab, api: Any) -> None:
    """API 1.40 had no jobs: moby drops the mode's field (adjustForAPIVersion), and a spec without a mode is a
    replicated service of one task."""
    import docker as docker_py

    old = docker_py.APIClient(base_url=swarm.url("h1"), version="1.40")
    spec = {"Name": "oldjob", "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Args": ["sleep", "1d"],
                                                 "StopGracePeriod": 10**9}},  # sleep ignores SIGTERM
            "Mode": {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 4}}}
    created = old._result(old._post_json(old._url("/services/create"), data=spec), True)
    assert api.get(f"/services/{created['ID']}")["Spec"]["Mode"] == {"Replicated": {"Replicas": 1}}


def test_a_job_with_a_health_check_completes_once_healthy_and_fails_when_unhealthy(swarm: Lab, api: Any) -> None:
    """A job's task whose check passes within its start period completes when it exits 0; one whose check fails is
    stopped and FAILED as a service's task is (moby's controller words), and the policy `none` leaves the run
    there: one task, none completed."""
    check = ["--health-interval", "100ms", "--health-retries", "1", "--health-timeout", "2s"]
    good = sh(swarm, "h1", "service", "create", "-d", "--name", "healthyjob", "--mode", "replicated-job",
              "--replicas", "2", "--health-cmd", "test -e /tmp/ok", *check, "--health-start-period", "1m",
              "busybox", "sh", "-c",
              "sleep 0.5; touch /tmp/ok; sleep 2").stdout.strip()
    bad = sh(swarm, "h1", "service", "create", "-d", "--name", "sickjob", "--mode", "replicated-job",
             "--restart-condition", "none", "--health-cmd", "false", *check, "--stop-grace-period", "1s",
             "busybox", "sleep", "30").stdout.strip()
    wait_until(lambda: states(tasks_of(api, good)) == ["complete"] * 2, 60, interval=0.2)
    [sick] = wait_until(lambda: (ts := tasks_of(api, bad)) and ts[0]["Status"]["State"] == "failed" and ts, 60,
                        interval=0.2)
    assert (sick["Status"]["Err"], len(tasks_of(api, bad)), status(api, "sickjob")["CompletedTasks"]) == (
        "task: non-zero exit (137): dockerexec: unhealthy container", 1, 0)
