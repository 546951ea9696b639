"""Services on a 3-host lab swarm (h1 manager, h2/h3 workers, 1 s heartbeats): create/ls/inspect/scale/update/
rollback/rm through the local API, the docker CLI and docker-py; what the managers do with tasks (slots, desired
states, nodes, spread, drain, global); bad input refused with swarm's messages and nothing stored.
Tasks are asserted running: the nodes' executors run them (the full seed flow is tests/lab/test_services_flow.py)."""

from __future__ import annotations

import contextlib
import json
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest

from shoal.client import DaemonError
from shoal.lab import Lab, data_dir, host_address
from tests.lab.helpers import wait_until
from tests.lab.swarm_lab import docker, running_swarm, services_removed_after, sh

HOSTS = ["h1", "h2", "h3"]
NOT_MANAGER = ("This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. "
               "Please run this command on a manager node or promote the current node to a manager.")


@pytest.fixture(scope="module")
def swarm() -> Iterator[Lab]:
    with running_swarm(3, workers=["h2", "h3"]) as lab:
        yield lab


@pytest.fixture
def api(swarm: Lab) -> Iterator[Any]:
    """h1's client; every service a test made is removed after it."""
    with services_removed_after(swarm.client("h1")) as c:
        yield c


def node_ids(lab: Lab) -> dict[str, str]:
    """node id -> hostname."""
    return {n["ID"]: n["Description"]["Hostname"] for n in lab.client("h1").get("/nodes")}


def spec(name: str, replicas: int = 2, **extra: Any) -> dict[str, Any]:
    # sleep as PID 1 ignores SIGTERM: a 1 s grace instead of 10 s for each task stopped (a stop-first update waits
    # for the old task's end before it starts the new one)
    body: dict[str, Any] = {"Name": name, "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "Args": ["sleep", "1d"],
                                                                             "StopGracePeriod": 1_000_000_000}},
                            "Mode": {"Replicated": {"Replicas": replicas}}}
    body.update(extra)
    return body


def tasks_of(c: Any, service_id: str) -> list[dict[str, Any]]:
    return c.get("/tasks", {"filters": json.dumps({"service": {service_id: True}})})


def live(c: Any, service_id: str) -> list[dict[str, Any]]:
    return sorted((t for t in tasks_of(c, service_id) if t["DesiredState"] == "running"), key=lambda t: t.get("Slot", 0))


def all_running(c: Any, service_id: str, n: int) -> list[dict[str, Any]] | None:
    ts = live(c, service_id)
    if len(ts) == n and all(t["Status"]["State"] == "running" and t.get("NodeID") for t in ts):
        return ts
    return None


# ---------------------------------------------------------------------------------------------- create
def test_create_makes_one_task_per_slot_running_spread_over_the_nodes(swarm: Lab, api: Any) -> None:
    sid = api.post("/services/create", spec("web", 3))["ID"]
    ts = wait_until(lambda: all_running(api, sid, 3), 20, interval=0.2)
    names = node_ids(swarm)
    assert [t["Slot"] for t in ts] == [1, 2, 3]
    assert sorted(names[t["NodeID"]] for t in ts) == HOSTS  # spread: one per node
    assert {(t["ServiceID"], t["Spec"]["ContainerSpec"]["Image"], t["Status"]["Message"]) for t in ts} == {
        (sid, "busybox:latest", "started")}


def test_docker_cli_create_ls_ps_and_inspect(swarm: Lab, api: Any) -> None:
    r = docker(swarm, "h1", "service", "create", "-d", "--name", "dk", "--replicas", "2", "-p", "8080:80", "busybox", "sleep", "1d")
    sid = r.stdout.strip()
    assert len(sid) == 25 and api.get(f"/services/{sid}")["Spec"]["Name"] == "dk"
    wait_until(lambda: all_running(api, sid, 2), 20, interval=0.2)
    assert docker(swarm, "h1", "service", "ls").stdout == (
        "ID             NAME      MODE         REPLICAS   IMAGE            PORTS\n"
        f"{sid[:12]}   dk        replicated   2/2        busybox:latest   *:8080->80/tcp\n")
    ps = docker(swarm, "h1", "service", "ps", "--format", "{{.Name}} {{.DesiredState}} {{.CurrentState}}", "dk").stdout
    assert [line.split()[:3] for line in ps.splitlines()] == [["dk.1", "Running", "Running"], ["dk.2", "Running", "Running"]]
    inspected = json.loads(docker(swarm, "h1", "service", "inspect", "dk").stdout)[0]
    assert (inspected["ID"], inspected["Spec"]["Mode"], inspected["Endpoint"]["Spec"]["Ports"]) == (
        sid, {"Replicated": {"Replicas": 2}},
        [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}])


def test_shoal_cli_ls_matches_the_docker_cli(swarm: Lab, api: Any) -> None:
    sid = sh(swarm, "h1", "service", "create", "-d", "--name", "same", "--replicas", "1", "busybox:latest",
             "sleep", "1d").stdout.strip()
    # compared once the task runs: right after create -d, REPLICAS could change between the two commands
    wait_until(lambda: all_running(api, sid, 1), 20, interval=0.2)
    assert sh(swarm, "h1", "service", "ls").stdout == docker(swarm, "h1", "service", "ls").stdout


def test_scale_up_fills_slots_and_scale_down_removes_the_highest(swarm: Lab, api: Any) -> None:
    sid = api.post("/services/create", spec("sc", 2))["ID"]
    wait_until(lambda: all_running(api, sid, 2), 20, interval=0.2)
    assert docker(swarm, "h1", "service", "scale", "-d", "sc=5").stdout == "sc scaled to 5\n"
    ts = wait_until(lambda: all_running(api, sid, 5), 20, interval=0.2)
    assert [t["Slot"] for t in ts] == [1, 2, 3, 4, 5]
    kept = {t["Slot"]: t["ID"] for t in ts if t["Slot"] <= 2}
    assert sh(swarm, "h1", "service", "scale", "-d", "sc=2").stdout == "sc scaled to 2\n"
    wait_until(lambda: len(live(api, sid)) == 2, 20, interval=0.2)
    assert {t["Slot"]: t["ID"] for t in live(api, sid)} == kept
    assert sorted((t["Slot"], t["DesiredState"]) for t in tasks_of(api, sid) if t["Slot"] > 2) == [
        (3, "remove"), (4, "remove"), (5, "remove")]


def test_update_replaces_parallelism_tasks_at_a_time_with_the_new_spec(swarm: Lab, api: Any) -> None:
    sid = api.post("/services/create", spec("up", 3, UpdateConfig={"Parallelism": 2, "Monitor": 1_000_000_000}))["ID"]
    wait_until(lambda: all_running(api, sid, 3), 20, interval=0.2)
    docker(swarm, "h1", "service", "update", "-d", "--env-add", "V=2", "up")
    seen: list[list[tuple[str, ...]]] = []

    def done() -> bool:
        envs = sorted(tuple(t["Spec"]["ContainerSpec"].get("Env", [])) for t in live(api, sid))
        if not seen or seen[-1] != envs:
            seen.append(envs)
        return envs == [("V=2",)] * 3 and all_running(api, sid, 3) is not None

    wait_until(done, 60, interval=0.1)
    # two slots (the parallelism) were replaced while the third still ran the old spec
    assert [(), ("V=2",), ("V=2",)] in seen, seen
    svc = wait_until(lambda: (v := api.get(f"/services/{sid}"))["UpdateStatus"]["State"] == "completed" and v, 20, interval=0.2)
    assert svc["PreviousSpec"]["TaskTemplate"]["ContainerSpec"].get("Env") is None


def test_rollback_restores_the_previous_spec(swarm: Lab, api: Any) -> None:
    sid = api.post("/services/create", spec("rb", 1))["ID"]
    docker(swarm, "h1", "service", "update", "-d", "--image", "busybox:v2", "rb")
    assert docker(swarm, "h1", "service", "rollback", "-d", "rb").stdout == "rb\n"
    svc = api.get(f"/services/{sid}")
    assert (svc["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"], svc["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"],
            svc["UpdateStatus"]["State"], svc["UpdateStatus"]["Message"]) == (
        "busybox:latest", "busybox:v2", "rollback_started", "manually requested rollback")
    wait_until(lambda: [t["Spec"]["ContainerSpec"]["Image"] for t in live(api, sid)] == ["busybox:latest"], 20, interval=0.2)


def test_a_new_task_failing_after_it_ran_longer_than_the_monitor_does_not_pause_the_update(swarm: Lab, api: Any) -> None:
    """swarmkit's updater counts a new task's failure only within --update-monitor of its start: slot 1's new task runs
    3 s and exits 1 (monitor 1 s, failure action pause, 5 s between slots, so the update still runs then); the restart
    policy restarts it and the update completes (manager/orchestrator/update.py)."""
    second = 1_000_000_000
    sid = api.post("/services/create", spec(
        "mon", 2, TaskTemplate={"ContainerSpec": {"Image": "busybox", "Args": ["sleep", "1d"], "StopGracePeriod": second}},
        UpdateConfig={"Parallelism": 1, "Monitor": second, "Delay": 5 * second, "FailureAction": "pause"}))["ID"]
    wait_until(lambda: all_running(api, sid, 2), 20, interval=0.2)
    svc = api.get(f"/services/{sid}")
    crashing = ["sh", "-c", "sleep 3; exit 1"]
    body = {**svc["Spec"], "TaskTemplate": {**svc["Spec"]["TaskTemplate"],
                                            "ContainerSpec": {**svc["Spec"]["TaskTemplate"]["ContainerSpec"], "Args": crashing}}}
    api.post(f"/services/{sid}/update", body, {"version": svc["Version"]["Index"]})
    done = wait_until(lambda: (v := api.get(f"/services/{sid}")).get("UpdateStatus", {}).get("State") in (
        "completed", "paused") and v, 90, interval=0.2)
    assert (done["UpdateStatus"]["State"], done["UpdateStatus"]["Message"]) == ("completed", "update completed")
    failed = [t for t in tasks_of(api, sid) if t["Spec"]["ContainerSpec"].get("Args") == crashing
              and t["Status"]["State"] == "failed"]
    assert failed, tasks_of(api, sid)  # a new task did fail during the update


def test_an_update_with_a_stale_version_is_refused_and_changes_nothing(swarm: Lab, api: Any) -> None:
    sid = api.post("/services/create", spec("stale", 1))["ID"]
    svc = api.get(f"/services/{sid}")
    v = svc["Version"]["Index"]
    api.post(f"/services/{sid}/update", {**svc["Spec"], "Labels": {"a": "1"}}, {"version": v})
    with pytest.raises(DaemonError) as e:
        api.post(f"/services/{sid}/update", {**svc["Spec"], "Labels": {"b": "2"}}, {"version": v})
    assert (e.value.status, e.value.message) == (500, "rpc error: code = Unknown desc = update out of sequence")
    assert api.get(f"/services/{sid}")["Spec"]["Labels"] == {"a": "1"}


BAD = [
    ("negative replicas", spec("neg", -1), 400, "Number of replicas must be non-negative"),
    ("absurd replicas", spec("huge", 10**9), 400,
     "rpc error: code = InvalidArgument desc = invalid replicas value 1000000000: at most 10000 replicas per service"),
    ("bad name", spec("bad_"), 400, "rpc error: code = InvalidArgument desc = name must be valid as a DNS name component"),
    ("invalid constraint", spec("con", 1, TaskTemplate={"ContainerSpec": {"Image": "busybox"},
                                                       "Placement": {"Constraints": ["node.labels.zone"]}}),
     400, "rpc error: code = InvalidArgument desc = constraint expected one operator from ==, !="),
    ("unknown network", spec("nonet", 1, TaskTemplate={"ContainerSpec": {"Image": "busybox"}, "Networks": [{"Target": "nosuch"}]}),
     404, "network nosuch not found"),
    ("duplicate published ports", spec("dup", 1, EndpointSpec={"Ports": [{"TargetPort": 80, "PublishedPort": 9000},
                                                                         {"TargetPort": 81, "PublishedPort": 9000}]}),
     400, "rpc error: code = InvalidArgument desc = EndpointSpec: duplicate published ports provided"),
    ("dnsrr with ingress", spec("rr", 1, EndpointSpec={"Mode": "dnsrr", "Ports": [{"TargetPort": 80, "PublishedPort": 9001}]}),
     400, "rpc error: code = InvalidArgument desc = EndpointSpec: port published with ingress mode can't be used with dnsrr mode"),
    ("no image", {"Name": "noimg", "TaskTemplate": {"ContainerSpec": {}}}, 400,
     "rpc error: code = InvalidArgument desc = ContainerSpec: image reference must be provided"),
]


@pytest.mark.parametrize("what,body,status,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_with_swarms_message_and_nothing_is_stored(swarm: Lab, api: Any, what: str, body: dict,
                                                                         status: int, message: str) -> None:
    services, tasks = api.get("/services"), api.get("/tasks")
    with pytest.raises(DaemonError) as e:
        api.post("/services/create", body)
    assert (e.value.status, e.value.message) == (status, message)
    # other tests' tasks may still be stopping: nothing new is what counts
    assert (api.get("/services"), {t["ID"] for t in api.get("/tasks")} - {t["ID"] for t in tasks}) == (services, set())


def test_duplicate_name_and_taken_ingress_port_are_refused(swarm: Lab, api: Any) -> None:
    sid = api.post("/services/create", spec("taken", 1, EndpointSpec={"Ports": [{"TargetPort": 80, "PublishedPort": 9100}]}))["ID"]
    r = docker(swarm, "h1", "service", "create", "-d", "--name", "taken", "busybox", check=False)
    assert (r.returncode, r.stderr.splitlines()[-1]) == (
        1, "Error response from daemon: rpc error: code = AlreadyExists desc = name conflicts with an existing object")
    with pytest.raises(DaemonError) as e:
        api.post("/services/create", spec("other", 1, EndpointSpec={"Ports": [{"TargetPort": 81, "PublishedPort": 9100}]}))
    assert (e.value.status, e.value.message) == (
        400, f"rpc error: code = InvalidArgument desc = port '9100' is already in use by service 'taken' ({sid}) as an ingress port")
    assert [s["Spec"]["Name"] for s in api.get("/services") if s["Spec"]["Name"] in ("taken", "other")] == ["taken"]


def test_constraints_place_tasks_and_an_impossible_one_says_why(swarm: Lab, api: Any) -> None:
    on_h2 = api.post("/services/create", spec("onh2", 2, TaskTemplate={
        "ContainerSpec": {"Image": "busybox", "Args": ["sleep", "1d"]}, "Placement": {"Constraints": ["node.hostname==h2"]}}))["ID"]
    ts = wait_until(lambda: all_running(api, on_h2, 2), 20, interval=0.2)
    assert {node_ids(swarm)[t["NodeID"]] for t in ts} == {"h2"}
    nowhere = api.post("/services/create", spec("nowhere", 1, TaskTemplate={
        "ContainerSpec": {"Image": "busybox"}, "Placement": {"Constraints": ["node.labels.zone==mars"]}}))["ID"]
    t = wait_until(lambda: [t for t in live(api, nowhere) if t["Status"].get("Err")], 20, interval=0.2)[0]
    assert (t["Status"]["State"], t["Status"]["Message"], t["Status"]["Err"], t.get("NodeID")) == (
        "pending", "pending task scheduling", "no suitable node (scheduling constraints not satisfied on 3 nodes)", None)


def test_global_service_runs_one_task_per_node_and_leaves_a_drained_node(swarm: Lab, api: Any) -> None:
    sid = api.post("/services/create", {**spec("glob"), "Mode": {"Global": {}}})["ID"]
    ts = wait_until(lambda: all_running(api, sid, 3), 20, interval=0.2)
    names = node_ids(swarm)
    assert sorted(names[t["NodeID"]] for t in ts) == HOSTS and {t.get("Slot") for t in ts} == {None}
    sh(swarm, "h1", "node", "update", "--availability", "drain", "h3")
    try:
        wait_until(lambda: sorted(names[t["NodeID"]] for t in live(api, sid)) == ["h1", "h2"], 20, interval=0.2)
    finally:
        sh(swarm, "h1", "node", "update", "--availability", "active", "h3")
    wait_until(lambda: sorted(names[t["NodeID"]] for t in live(api, sid)) == HOSTS, 20, interval=0.2)


def test_drain_moves_replicated_tasks_to_the_other_nodes(swarm: Lab, api: Any) -> None:
    sid = api.post("/services/create", spec("dr", 3))["ID"]
    ts = wait_until(lambda: all_running(api, sid, 3), 20, interval=0.2)
    names = node_ids(swarm)
    on_h3 = [t for t in ts if names[t["NodeID"]] == "h3"]
    assert len(on_h3) == 1
    sh(swarm, "h1", "node", "update", "--availability", "drain", "h3")
    try:
        moved = wait_until(lambda: all_running(api, sid, 3) if all(names.get(t.get("NodeID", "")) != "h3" for t in live(api, sid)) else None,
                           20, interval=0.2)
    finally:
        sh(swarm, "h1", "node", "update", "--availability", "active", "h3")
    assert sorted(t["Slot"] for t in moved) == [1, 2, 3]
    old = api.get(f"/tasks/{on_h3[0]['ID']}")
    assert (old["DesiredState"], old["Slot"]) == ("shutdown", on_h3[0]["Slot"])


def test_tasks_of_a_node_that_goes_down_are_replaced_elsewhere(swarm: Lab, api: Any) -> None:
    sid = api.post("/services/create", spec("down", 3))["ID"]
    ts = wait_until(lambda: all_running(api, sid, 3), 20, interval=0.2)
    names = node_ids(swarm)
    lost = next(t for t in ts if names[t["NodeID"]] == "h3")
    swarm.stop_daemon("h3", kill9=True)
    try:
        moved = wait_until(lambda: all_running(api, sid, 3) if all(names.get(t.get("NodeID", "")) != "h3" for t in live(api, sid)) else None,
                           30, interval=0.2)
        assert api.get(f"/tasks/{lost['ID']}")["DesiredState"] == "shutdown"
        assert [t["Slot"] for t in moved] == [1, 2, 3]
    finally:
        swarm.start_daemon("h3")
    wait_until(lambda: any(n["Status"]["State"] == "ready" and n["Description"]["Hostname"] == "h3"
                           for n in api.get("/nodes")), 30, interval=0.2)


def test_service_rm_removes_the_service_and_marks_its_tasks_for_removal(swarm: Lab, api: Any) -> None:
    sid = api.post("/services/create", spec("gone", 2))["ID"]
    ts = wait_until(lambda: all_running(api, sid, 2), 20, interval=0.2)
    assert sh(swarm, "h1", "service", "rm", "gone").stdout == "gone\n"
    with pytest.raises(DaemonError) as e:
        api.get(f"/services/{sid}")
    assert (e.value.status, e.value.message) == (404, "service gone not found".replace("gone", sid))
    wait_until(lambda: all(api.get(f"/tasks/{t['ID']}")["DesiredState"] == "remove" for t in ts), 20, interval=0.2)


def test_a_worker_answers_503_with_dockers_message(swarm: Lab) -> None:
    with pytest.raises(DaemonError) as e:
        swarm.client("h2").get("/services")
    assert (e.value.status, e.value.message) == (503, NOT_MANAGER)
    r = sh(swarm, "h2", "service", "ls", check=False)
    assert (r.returncode, r.stderr) == (1, f"Error response from daemon: {NOT_MANAGER}\n")


def test_docker_py_creates_lists_gets_and_scales_a_service(swarm: Lab, api: Any) -> None:
    import docker as docker_py

    client = docker_py.DockerClient(base_url=swarm.url("h1"))
    svc = client.services.create("busybox", ["sleep", "1d"], name="py", mode=docker_py.types.ServiceMode("replicated", 2))
    assert [s.name for s in client.services.list() if s.name == "py"] == ["py"]
    assert client.services.get(svc.id).attrs["Spec"]["Mode"] == {"Replicated": {"Replicas": 2}}
    assert client.services.get(svc.id).scale(4) == {"Warnings": None}
    wait_until(lambda: all_running(api, svc.id, 4), 20, interval=0.2)


GRPC = textwrap.dedent('''
    import sys, grpc
    from proto import control_pb2, control_pb2_grpc, objects_pb2
    addr, certdir, name = sys.argv[1], sys.argv[2], sys.argv[3]
    rd = lambda n: open(f"{certdir}/{n}", "rb").read()
    creds = grpc.ssl_channel_credentials(rd("swarm-root-ca.crt"), rd("swarm-node.key"), rd("swarm-node.crt"))
    ch = grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", "shoal-manager")])
    stub = control_pb2_grpc.ServiceControlStub(ch)
    try:
        watch = stub.Watch(control_pb2.WatchServicesRequest(kinds=["service"]), timeout=30)
        first = next(watch)
        print("established", first.index, first.WhichOneof("object"))
        spec = objects_pb2.ServiceSpec(annotations=objects_pb2.Annotations(name=name))
        spec.task.container.image = "busybox:latest"
        spec.replicated.replicas = 1
        created = stub.CreateService(control_pb2.CreateServiceRequest(spec=spec), timeout=20).service
        ev = next(watch)
        print("event", ev.action, ev.service.spec.annotations.name, ev.service.id == created.id)
        listed = stub.ListServices(control_pb2.ListServicesRequest(
            filters=control_pb2.ListServicesRequest.Filters(names=[name])), timeout=20)
        print("listed", [s.spec.annotations.name for s in listed.services])
        stub.CreateService(control_pb2.CreateServiceRequest(spec=spec), timeout=20)
    except grpc.RpcError as e:
        print("ERR", e.code().name, e.details())
''')


def grpc_services(lab: Lab, host: str, name: str) -> list[str]:
    certdir = str(data_dir(lab.name, host) / "swarm" / "certificates")
    r = lab.exec(host, [sys.executable, "-c", GRPC, f"{host_address('h1')}:2377", certdir, name], timeout=60)
    return r.stdout.strip().splitlines()


def test_the_grpc_service_control_api_creates_lists_and_watches(swarm: Lab, api: Any) -> None:
    assert grpc_services(swarm, "h1", "viagrpc") == [
        "established 0 None", "event create viagrpc True", "listed ['viagrpc']",
        "ERR ALREADY_EXISTS name conflicts with an existing object"]


def test_a_worker_certificate_cannot_call_the_service_control_api(swarm: Lab, api: Any) -> None:
    assert grpc_services(swarm, "h2", "fromworker") == [
        "ERR PERMISSION_DENIED Permission denied: unauthorized peer role: rpc error: code = PermissionDenied "
        "desc = Permission denied: remote certificate not part of the allowed roles"]
    assert [s for s in api.get("/services") if s["Spec"]["Name"] == "fromworker"] == []


def test_rename_and_mode_change_are_refused_with_swarms_words(swarm: Lab, api: Any) -> None:
    sid = api.post("/services/create", spec("fixed", 1))["ID"]
    svc = api.get(f"/services/{sid}")
    v = svc["Version"]["Index"]
    with pytest.raises(DaemonError) as e:
        api.post(f"/services/{sid}/update", {**svc["Spec"], "Name": "renamed"}, {"version": v})
    assert (e.value.status, e.value.message) == (501, "rpc error: code = Unimplemented desc = renaming services is not supported")
    with pytest.raises(DaemonError) as e:
        api.post(f"/services/{sid}/update", {**svc["Spec"], "Mode": {"Global": {}}}, {"version": v})
    assert (e.value.status, e.value.message) == (500, "rpc error: code = Unknown desc = service mode change is not allowed")
    assert api.get(f"/services/{sid}")["Version"]["Index"] == v


def test_docker_cli_service_flags_reach_the_task_container(swarm: Lab, api: Any) -> None:
    docker(swarm, "h1", "service", "create", "--detach", "--name", "opts", "--constraint", "node.hostname==h2",
           "--init", "--cap-add", "NET_ADMIN", "--read-only", "--tty", "--host", "foo:10.0.0.1", "--dns-search", "example.org",
           "--sysctl", "net.core.somaxconn=1024", "--ulimit", "nofile=100:200", "--stop-signal", "SIGINT",
           "--limit-pids", "50", "--mount", "type=tmpfs,target=/scratch,tmpfs-size=1m", "busybox", "sleep", "1d")
    sid = api.get("/services/opts")["ID"]
    wait_until(lambda: all_running(api, sid, 1), 30, interval=0.2)
    (c,) = [c for c in swarm.client("h2").get("/containers/json") if c["Names"][0].startswith("/opts.1.")]
    got = swarm.client("h2").get(f"/containers/{c['Id']}/json")
    h = got["HostConfig"]
    assert (got["Config"]["Tty"], got["Config"]["StopSignal"]) == (True, "SIGINT")
    assert (h["Init"], h["ReadonlyRootfs"], h["CapAdd"], h["ExtraHosts"], h["DnsSearch"], h["Sysctls"], h["PidsLimit"]) == (
        True, True, ["CAP_NET_ADMIN"], ["foo:10.0.0.1"], ["example.org"], {"net.core.somaxconn": "1024"}, 50)
    assert h["Ulimits"] == [{"Name": "nofile", "Hard": 200, "Soft": 100}]
    out = docker(swarm, "h2", "exec", c["Id"], "sh", "-c", "ulimit -n; grep -c scratch /proc/mounts; "
                 "grep scratch /proc/mounts | grep -o size=[0-9]*k; touch /x 2>&1 || true").stdout
    assert out.split("\n")[:3] == ["100", "1", "size=1024k"] and "Read-only file system" in out


def test_docker_cli_group_and_oom_score_adj_reach_the_task_container(swarm: Lab, api: Any) -> None:
    docker(swarm, "h1", "service", "create", "--detach", "--name", "grp", "--constraint", "node.hostname==h2",
           "--group", "nobody", "--group", "4242", "--oom-score-adj", "500", "busybox", "sleep", "1d")
    sid = api.get("/services/grp")["ID"]
    wait_until(lambda: all_running(api, sid, 1), 30, interval=0.2)
    (c,) = [c for c in swarm.client("h2").get("/containers/json") if c["Names"][0].startswith("/grp.1.")]
    h = swarm.client("h2").get(f"/containers/{c['Id']}/json")["HostConfig"]
    assert (h["GroupAdd"], h["OomScoreAdj"]) == (["nobody", "4242"], 500)
    out = docker(swarm, "h2", "exec", c["Id"], "sh", "-c", "grep Groups: /proc/1/status; cat /proc/1/oom_score_adj").stdout
    assert out == "Groups:\t0 4242 65534 \n500\n"


def test_shoal_cli_service_update_changes_groups_and_oom_score_adj(swarm: Lab, api: Any) -> None:
    sh(swarm, "h1", "service", "create", "--detach", "--name", "grpup", "--constraint", "node.hostname==h3",
       "--stop-grace-period", "1s", "--group", "nobody", "--oom-score-adj", "300", "busybox", "sleep", "1d")
    sid = api.get("/services/grpup")["ID"]
    wait_until(lambda: all_running(api, sid, 1), 30, interval=0.2)
    sh(swarm, "h1", "service", "update", "--detach", "--group-rm", "nobody", "--group-add", "4242",
       "--oom-score-adj", "200", "grpup")  # positive: these machines' root lacks CAP_SYS_RESOURCE
    cs = api.get(f"/services/{sid}")["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert (cs["Groups"], cs["OomScoreAdj"]) == (["4242"], 200)
    (t,) = wait_until(lambda: (ts := all_running(api, sid, 1)) and ts[0]["Spec"]["ContainerSpec"].get("OomScoreAdj") == 200
                      and ts, 60, interval=0.2)
    cid = t["Status"]["ContainerStatus"]["ContainerID"]
    out = docker(swarm, "h3", "exec", cid, "sh", "-c", "grep Groups: /proc/1/status; cat /proc/1/oom_score_adj").stdout
    assert out == "Groups:\t0 4242 \n200\n"


def test_a_task_with_an_oom_score_adj_out_of_range_is_rejected_with_mobys_message(swarm: Lab, api: Any) -> None:
    body = spec("oombad", 1)
    body["TaskTemplate"]["ContainerSpec"]["OomScoreAdj"] = 2000  # swarmkit takes it: the engine's create refuses it
    sid = api.post("/services/create", body)["ID"]
    t = wait_until(lambda: next((t for t in tasks_of(api, sid) if t["Status"]["State"] == "rejected"), None), 30,
                   interval=0.2)
    assert t["Status"]["Err"] == "Invalid value 2000, range for oom score adj is [-1000, 1000]"


def test_a_service_flag_shoal_does_not_apply_is_refused_naming_the_field(swarm: Lab, api: Any) -> None:
    r = docker(swarm, "h1", "service", "create", "--detach", "--name", "hc", "--log-driver", "syslog", "busybox", "sleep",
               "1d", check=False)
    assert r.returncode == 1
    assert 'shoal does not support TaskTemplate.LogDriver.Name yet (got "syslog")' in r.stderr
    assert [s for s in api.get("/services") if s["Spec"]["Name"] == "hc"] == []


def test_a_global_service_publishing_a_host_port_runs_on_every_node_and_answers_there(swarm: Lab, api: Any) -> None:
    # its tasks, placed on their nodes beforehand, used to find the port taken by themselves: all pending
    docker(swarm, "h1", "service", "create", "--detach", "--name", "gport", "--mode", "global", "--stop-grace-period", "1s",
           "--publish", "mode=host,target=80,published=8097", "busybox", "httpd", "-f", "-p", "80")
    sid = api.get("/services/gport")["ID"]
    ts = wait_until(lambda: (r := live(api, sid)) and len(r) == 3 and all(t["Status"]["State"] == "running" for t in r) and r,
                    30, interval=0.2)
    assert sorted(node_ids(swarm)[t["NodeID"]] for t in ts) == HOSTS
    for host in HOSTS:
        r = swarm.exec("h1", ["busybox", "timeout", "5", "busybox", "wget", "-q", "-O", "-", f"http://{host_address(host)}:8097/"],
                       check=False)
        assert "404 Not Found" in r.stdout + r.stderr, host  # httpd answers (it serves no index here)


def test_a_finished_tasks_container_stays_stopped_with_its_logs_until_the_task_leaves_the_history(
        swarm: Lab, api: Any) -> None:
    # swarm's workers keep a task's stopped container while the task is in the history: `service logs` of a task that
    # ended (a one-shot job, a crash) still shows what it wrote; the service's removal takes the containers with it
    body = spec("oneshot", replicas=1)
    body["TaskTemplate"]["ContainerSpec"]["Args"] = ["sh", "-c", "echo first line; echo last line"]
    body["TaskTemplate"]["RestartPolicy"] = {"Condition": "none"}
    sid = api.post("/services/create", body)["ID"]
    (done,) = wait_until(lambda: [t for t in tasks_of(api, sid) if t["Status"]["State"] == "complete"
                                  and t["DesiredState"] == "shutdown"] or None, 60)
    host = node_ids(swarm)[done["NodeID"]]
    kept = [c for c in swarm.client(host).get("/containers/json", {"all": "1"})
            if c["Labels"].get("com.docker.swarm.task.id") == done["ID"]]
    assert [(c["State"], c["Status"].split(" (")[0]) for c in kept] == [("exited", "Exited")]
    logs = docker(swarm, "h1", "service", "logs", "oneshot").stdout.splitlines()
    assert [line.split(" | ", 1)[1] for line in logs] == ["first line", "last line"]
    api.delete(f"/services/{sid}")
    wait_until(lambda: not [c for c in swarm.client(host).get("/containers/json", {"all": "1"})
                            if c["Labels"].get("com.docker.swarm.task.id") == done["ID"]], 30)


# ---------------------------------------------------------------------------------------------- logs
def both_logs(lab: Lab, *args: str, check: bool = True) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """(exit code, sorted stdout lines, sorted stderr lines) of `shoal service logs ARGS` and of the docker CLI's
    (tasks on two nodes: the order between them is the arrival's)."""
    def seen(r: Any) -> tuple[Any, ...]:
        return r.returncode, sorted(r.stdout.splitlines()), sorted(r.stderr.splitlines())

    return (seen(sh(lab, "h1", "service", "logs", *args, check=check)),
            seen(docker(lab, "h1", "service", "logs", *args, check=check)))


@pytest.mark.parametrize("flags", [[], ["--no-task-ids"], ["--no-trunc"], ["--no-resolve"], ["--raw"], ["-t"],
                                   ["--details"], ["--tail", "1"]])
def test_shoal_service_logs_prints_what_the_docker_cli_prints(swarm: Lab, api: Any, flags: list[str]) -> None:
    body = spec("chatty", replicas=2)
    body["TaskTemplate"]["ContainerSpec"]["Args"] = ["sh", "-c", "echo out $(hostname); echo err >&2; sleep 1d"]
    sid = api.post("/services/create", body)["ID"]
    wait_until(lambda: all_running(api, sid, 2), 60, interval=0.2)
    wait_until(lambda: len(docker(swarm, "h1", "service", "logs", "chatty").stdout.splitlines()) == 2, 30,
               interval=0.2)
    shoal_sees, docker_sees = both_logs(swarm, *flags, "chatty")
    lines = 2 if "--tail" in flags else 4  # out and err of each task; with --tail 1 each task's last: err
    assert (shoal_sees, len(shoal_sees[1]) + len(shoal_sees[2])) == (docker_sees, lines)


def test_shoal_service_logs_of_a_task_and_of_nothing_as_the_docker_cli(swarm: Lab, api: Any) -> None:
    body = spec("onetask", replicas=1)
    body["TaskTemplate"]["ContainerSpec"]["Args"] = ["sh", "-c", "echo only; sleep 1d"]
    sid = api.post("/services/create", body)["ID"]
    [task] = wait_until(lambda: all_running(api, sid, 1), 60, interval=0.2)
    wait_until(lambda: docker(swarm, "h1", "service", "logs", task["ID"]).stdout, 30, interval=0.2)
    shoal_sees, docker_sees = both_logs(swarm, task["ID"])
    assert (shoal_sees, len(shoal_sees[1])) == (docker_sees, 1)
    shoal_sees, docker_sees = both_logs(swarm, "nosuchthing", check=False)
    assert shoal_sees == docker_sees == (1, [], ["no such task or service: nosuchthing"])


def test_a_tty_services_logs_only_with_raw_as_the_docker_cli(swarm: Lab, api: Any) -> None:
    body = spec("ttylogs", replicas=1)
    body["TaskTemplate"]["ContainerSpec"].update({"Args": ["sh", "-c", "echo on a tty; sleep 1d"], "TTY": True})
    sid = api.post("/services/create", body)["ID"]
    wait_until(lambda: all_running(api, sid, 1), 60, interval=0.2)
    wait_until(lambda: docker(swarm, "h1", "service", "logs", "--raw", "ttylogs").stdout, 30, interval=0.2)
    refused, docker_refused = both_logs(swarm, "ttylogs", check=False)
    assert refused == docker_refused == (1, [], ["tty service logs only supported with --raw"])
    shoal_sees, docker_sees = both_logs(swarm, "--raw", "ttylogs")
    assert shoal_sees == docker_sees == (0, ["on a tty"], [])


# ---------------------------------------------------------------------------------------------- node ps
def _aged(text: str) -> str:
    """A table with its "N seconds ago" cells made equal and its columns' padding squeezed (the two commands run
    a second apart at most)."""
    import re

    return re.sub(r"(Running|Pending|Preparing|Starting|Assigned) .*? ago", r"\1 ago", re.sub(r"  +", "  ", text))


def node_ps_both(lab: Lab, *args: str) -> tuple[tuple[str, str], tuple[str, str]]:
    """(table, stderr) of `shoal node ps ARGS` and of the docker CLI's, once both show the same store: tasks of the
    services earlier tests removed leave it meanwhile (the last pair is returned if they never agree)."""
    def both() -> tuple[tuple[str, str], tuple[str, str]]:
        mine, theirs = sh(lab, "h1", "node", "ps", *args), docker(lab, "h1", "node", "ps", *args)
        return (_aged(mine.stdout), mine.stderr), (_aged(theirs.stdout), theirs.stderr)

    with contextlib.suppress(TimeoutError):
        return wait_until(lambda: (pair := both())[0] == pair[1] and pair, 30, interval=0.5)
    return both()


@pytest.mark.parametrize("args", [[], ["h2"], ["-q", "h2"], ["--no-trunc", "h3"], ["--no-resolve", "h2"],
                                  ["-f", "desired-state=running", "h2"]])
def test_shoal_node_ps_prints_what_the_docker_cli_prints(swarm: Lab, api: Any, args: list[str]) -> None:
    sid = api.post("/services/create", spec("nodeps", replicas=4))["ID"]
    other = api.post("/services/create", spec("another", replicas=2))["ID"]
    wait_until(lambda: all_running(api, sid, 4) and all_running(api, other, 2), 60, interval=0.2)
    shoal_sees, docker_sees = node_ps_both(swarm, *args)
    assert shoal_sees == docker_sees
    assert len(shoal_sees[0].splitlines()) > 1 or "-q" in args


def test_shoal_node_ps_of_two_nodes_lists_each_nodes_tasks_once(swarm: Lab, api: Any) -> None:
    # docker CLI 28.2.2 adds each node to one filter it keeps (no Clone): its second query asks for the tasks of
    # both nodes and the first node's tasks print twice; shoal's lists what `node ps h2` and `node ps h3` list
    sid = api.post("/services/create", spec("twonodes", replicas=4))["ID"]
    wait_until(lambda: all_running(api, sid, 4), 60, interval=0.2)
    f = ["-f", "desired-state=running"]  # not the tasks of earlier tests' services, which leave meanwhile
    both = _aged(sh(swarm, "h1", "node", "ps", *f, "h2", "h3").stdout).splitlines()
    each = [_aged(docker(swarm, "h1", "node", "ps", *f, h).stdout).splitlines() for h in ("h2", "h3")]
    assert (both[0], sorted(both[1:])) == (each[0][0], sorted(each[0][1:] + each[1][1:]))
    names = node_ids(swarm)
    assert len(both) == 1 + sum(1 for t in live(api, sid) if names[t["NodeID"]] in ("h2", "h3"))


def test_shoal_node_ps_of_an_unknown_node_says_what_the_docker_cli_says(swarm: Lab, api: Any) -> None:
    shoal_sees = sh(swarm, "h1", "node", "ps", "nosuchnode", check=False)
    docker_sees = docker(swarm, "h1", "node", "ps", "nosuchnode", check=False)
    assert (shoal_sees.returncode, shoal_sees.stdout, shoal_sees.stderr) == (
        docker_sees.returncode, docker_sees.stdout, docker_sees.stderr)
