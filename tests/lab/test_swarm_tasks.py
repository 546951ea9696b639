"""Swarm tasks from the store to containers and back, on a 2-host swarm (h1 manager, h2 worker; 1 s heartbeats):
tasks written into the store (the managers' test hook, SHOAL_TEST_HOOKS=1) run as containers on their nodes with
Docker's names and labels, their status flows back, a killed container is FAILED, desired SHUTDOWN removes it, a
config lands as a file on a tmpfs, a daemon kill -9 + restart adopts the running container instead of a second one,
and /services/{id}/logs gathers the lines of tasks on both nodes (the worker's through the leader's log broker)."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import sys
import textwrap
from collections.abc import Iterator

import pytest

from proto import objects_pb2 as pb
from shoal.client import DaemonError
from shoal.lab import Lab, data_dir, host_address, run_dir, wait_until
from shoal.swarm.executor import FILES_DIR
from tests.lab.helpers import SHOAL, running_lab

S = pb.TaskState
# stops at SIGTERM (a plain `sleep` as pid 1 ignores it and waits out the 10 s stop grace period)
STOPPABLE = ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]

# Runs inside a lab host with h1's (a manager's) node certificate: writes a StoreProposal, or reads the tasks.
HOOK = textwrap.dedent('''
    import sys, grpc
    from proto import objects_pb2 as pb
    addr, certdir, op = sys.argv[1], sys.argv[2], sys.argv[3]
    rd = lambda n: open(f"{certdir}/{n}", "rb").read()
    creds = grpc.ssl_channel_credentials(rd("swarm-root-ca.crt"), rd("swarm-node.key"), rd("swarm-node.crt"))
    ch = grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", "shoal-manager")])
    data = bytes.fromhex(sys.stdin.read().strip())
    call = ch.unary_unary("/shoal.v1.TestHooks/" + op, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    sys.stdout.write(call(data, timeout=30).hex())
''')


@pytest.fixture(scope="module")
def swarm() -> Iterator[Lab]:
    mp = pytest.MonkeyPatch()
    mp.setenv("SHOAL_TEST_HOOKS", "1")  # the daemons inherit it: the managers serve the test hook
    try:
        with running_lab(2) as lab:
            lab.exec("h1", SHOAL + ["swarm", "init", "--advertise-addr", host_address("h1"), "--dispatcher-heartbeat", "1s"],
                     timeout=120)
            token = lab.exec("h1", SHOAL + ["swarm", "join-token", "-q", "worker"]).stdout.strip()
            lab.exec("h2", SHOAL + ["swarm", "join", "--token", token, host_address("h1")], timeout=120)
            yield lab
    finally:
        mp.undo()


def hook(lab: Lab, op: str, msg: bytes) -> bytes:
    certdir = str(data_dir(lab.name, "h1") / "swarm" / "certificates")
    out = lab.exec("h1", [sys.executable, "-c", HOOK, f"{host_address('h1')}:2377", certdir, op], input=msg.hex(), timeout=60)
    return bytes.fromhex(out.stdout.strip())


def write(lab: Lab, action: int, *objs: object) -> None:
    p = pb.StoreProposal()
    for o in objs:
        a = p.actions.add(action=action)
        getattr(a, "service" if isinstance(o, pb.Service) else "config" if isinstance(o, pb.Config) else "task").CopyFrom(o)
    hook(lab, "Write", p.SerializeToString())


def read_task(lab: Lab, task_id: str) -> pb.Task | None:
    snap = pb.StoreSnapshot.FromString(hook(lab, "Read", b""))
    return next((t for t in snap.tasks if t.id == task_id), None)


def node_id(lab: Lab, host: str) -> str:
    return lab.client(host).get("/info")["Swarm"]["NodeID"]


def new_service(lab: Lab, name: str) -> pb.Service:
    svc = pb.Service(id=secrets.token_hex(12))
    svc.spec.annotations.name = name
    svc.spec.annotations.labels["com.shoal.test.unmanaged"] = ""  # the orchestrator leaves it to this test
    write(lab, pb.StoreAction.CREATE, svc)
    return svc


def new_task(svc: pb.Service, slot: int, node: str, args: list[str], configs: list[pb.ConfigReference] = ()) -> pb.Task:
    t = pb.Task(id=secrets.token_hex(12), service_id=svc.id, slot=slot, node_id=node, desired_state=S.TASK_STATE_RUNNING)
    t.annotations.name = f"{svc.spec.annotations.name}.{slot}.{t.id}"
    t.spec.container.image = "busybox"
    t.spec.container.args.extend(args)
    t.spec.container.configs.extend(configs)
    t.status.state = S.TASK_STATE_ASSIGNED
    return t


def task_containers(lab: Lab, host: str, task_id: str) -> list[dict]:
    found = lab.client(host).get("/containers/json", {"all": "1", "filters": f'{{"label":["com.docker.swarm.task.id={task_id}"]}}'})
    return found


def wait_state(lab: Lab, task_id: str, state: int, timeout: float = 30.0) -> pb.Task:
    def reached() -> pb.Task | None:
        t = read_task(lab, task_id)
        return t if t is not None and t.status.state == state else None

    return wait_until(reached, timeout=timeout, interval=0.3, what=f"task {task_id} in state {S.Name(state)}")


def test_assigned_tasks_run_as_named_labelled_containers_and_report_running(swarm: Lab) -> None:
    svc = new_service(swarm, "web")
    on_worker = new_task(svc, 1, node_id(swarm, "h2"), ["sleep", "3600"])
    on_manager = new_task(svc, 2, node_id(swarm, "h1"), ["sleep", "3600"])
    write(swarm, pb.StoreAction.CREATE, on_worker, on_manager)
    for host, t in (("h2", on_worker), ("h1", on_manager)):
        got = wait_state(swarm, t.id, S.TASK_STATE_RUNNING)
        [c] = task_containers(swarm, host, t.id)
        assert c["Names"] == [f"/web.{t.slot}.{t.id}"]
        assert c["State"] == "running"
        assert {k: v for k, v in c["Labels"].items() if k.startswith("com.docker.swarm")} == {
            "com.docker.swarm.node.id": t.node_id, "com.docker.swarm.service.id": svc.id,
            "com.docker.swarm.service.name": "web", "com.docker.swarm.task": "", "com.docker.swarm.task.id": t.id,
            "com.docker.swarm.task.name": f"web.{t.slot}.{t.id}"}
        assert got.status.container.container_id == c["Id"]
        assert got.status.message == "started"


def test_a_killed_task_container_is_reported_failed_with_its_exit_code(swarm: Lab) -> None:
    svc = new_service(swarm, "killme")
    t = new_task(svc, 1, node_id(swarm, "h2"), ["sleep", "3600"])
    write(swarm, pb.StoreAction.CREATE, t)
    wait_state(swarm, t.id, S.TASK_STATE_RUNNING)
    [c] = task_containers(swarm, "h2", t.id)
    swarm.client("h2").post(f"/containers/{c['Id']}/kill")
    got = wait_state(swarm, t.id, S.TASK_STATE_FAILED)
    assert (got.status.err, got.status.container.exit_code) == ("task: non-zero exit (137)", 137)
    [after] = task_containers(swarm, "h2", t.id)  # kept for logs until the task goes
    assert after["State"] == "exited"


def test_desired_shutdown_stops_the_container_and_keeps_it_until_the_task_is_deleted(swarm: Lab) -> None:
    svc = new_service(swarm, "stopme")
    t = new_task(svc, 1, node_id(swarm, "h2"), STOPPABLE)
    write(swarm, pb.StoreAction.CREATE, t)
    wait_state(swarm, t.id, S.TASK_STATE_RUNNING)
    t.desired_state = S.TASK_STATE_SHUTDOWN
    write(swarm, pb.StoreAction.UPDATE, t)
    wait_state(swarm, t.id, S.TASK_STATE_SHUTDOWN)
    # swarm's workers keep a shut-down task's container, stopped, while the task is in the history (its logs)
    assert [c["State"] for c in task_containers(swarm, "h2", t.id)] == ["exited"]
    write(swarm, pb.StoreAction.REMOVE, t)
    wait_until(lambda: task_containers(swarm, "h2", t.id) == [], timeout=20, what="the container removed")


def test_a_removed_task_takes_its_container_with_it(swarm: Lab) -> None:
    svc = new_service(swarm, "gone")
    t = new_task(svc, 1, node_id(swarm, "h2"), STOPPABLE)
    write(swarm, pb.StoreAction.CREATE, t)
    wait_state(swarm, t.id, S.TASK_STATE_RUNNING)
    write(swarm, pb.StoreAction.REMOVE, t)
    wait_until(lambda: task_containers(swarm, "h2", t.id) == [], timeout=20, what="the container removed")


def test_a_config_is_a_file_with_its_mode_on_a_tmpfs_in_the_run_dir(swarm: Lab) -> None:
    cfg = pb.Config(id=secrets.token_hex(12), spec=pb.ConfigSpec(annotations=pb.Annotations(name="app.conf"), data=b"x=1\n"))
    write(swarm, pb.StoreAction.CREATE, cfg)
    svc = new_service(swarm, "withconf")
    ref = pb.ConfigReference(config_id=cfg.id, config_name="app.conf", file=pb.FileTarget(name="/etc/app.conf", mode=0o440))
    show = "cat /etc/app.conf; stat -c %a /etc/app.conf; " + STOPPABLE[2]
    t = new_task(svc, 1, node_id(swarm, "h2"), ["sh", "-c", show], [ref])
    write(swarm, pb.StoreAction.CREATE, t)
    wait_state(swarm, t.id, S.TASK_STATE_RUNNING)
    [c] = task_containers(swarm, "h2", t.id)
    logs = wait_until(lambda: _logs(swarm, "h2", c["Id"]) if "440" in _logs(swarm, "h2", c["Id"]) else None, timeout=10,
                      what="the container's output")
    assert logs == "x=1\n440\n"
    files = run_dir(swarm.name, "h2") / FILES_DIR / t.id
    assert _fstype(files) == "tmpfs"
    assert not (data_dir(swarm.name, "h2") / FILES_DIR).exists()
    t.desired_state = S.TASK_STATE_SHUTDOWN
    write(swarm, pb.StoreAction.UPDATE, t)
    wait_state(swarm, t.id, S.TASK_STATE_SHUTDOWN)
    write(swarm, pb.StoreAction.REMOVE, t)  # the files go with the container, when the task leaves the history
    wait_until(lambda: task_containers(swarm, "h2", t.id) == [], timeout=20, what="the container removed")
    wait_until(lambda: (_fstype(files), files.exists()) == ("", False), timeout=10, what="the tmpfs gone")


def test_a_secret_is_on_a_tmpfs_at_run_secrets_and_never_on_the_workers_disk(swarm: Lab) -> None:
    word = "hunter2-" + secrets.token_hex(8)
    created = swarm.client("h1").post("/secrets/create", {"Name": "db-pass", "Data": base64.b64encode(word.encode()).decode()})
    svc = new_service(swarm, "withsecret")
    # the task shows a digest of what it reads, never the secret (its command line is on disk in the bundle)
    t = new_task(svc, 1, node_id(swarm, "h2"), ["sh", "-c", "sha256sum < /run/secrets/db-pass; "
                                               "stat -c %a /run/secrets/db-pass; " + STOPPABLE[2]])
    t.spec.container.secrets.add(secret_id=created["ID"], secret_name="db-pass", file=pb.FileTarget(name="db-pass", mode=0o400))
    write(swarm, pb.StoreAction.CREATE, t)
    wait_state(swarm, t.id, S.TASK_STATE_RUNNING)
    [c] = task_containers(swarm, "h2", t.id)
    logs = wait_until(lambda: _logs(swarm, "h2", c["Id"]) if "400" in _logs(swarm, "h2", c["Id"]) else None, timeout=10)
    assert logs == f"{hashlib.sha256(word.encode()).hexdigest()}  -\n400\n"
    assert _fstype(run_dir(swarm.name, "h2") / FILES_DIR / t.id) == "tmpfs"
    assert _files_holding(data_dir(swarm.name, "h2"), word.encode()) == []
    t.desired_state = S.TASK_STATE_SHUTDOWN
    write(swarm, pb.StoreAction.UPDATE, t)
    wait_state(swarm, t.id, S.TASK_STATE_SHUTDOWN)
    write(swarm, pb.StoreAction.REMOVE, t)
    wait_until(lambda: task_containers(swarm, "h2", t.id) == [], timeout=20)


def _files_holding(root: os.PathLike[str], needle: bytes) -> list[str]:
    """Regular files under root (not following links, not below other mounts) that contain needle."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not os.path.ismount(os.path.join(dirpath, d))]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            with open(path, "rb") as f:
                if needle in f.read():
                    found.append(path)
    return found

def test_a_daemon_killed_and_restarted_adopts_the_running_task_container(swarm: Lab) -> None:
    svc = new_service(swarm, "survivor")
    t = new_task(svc, 1, node_id(swarm, "h2"), ["sleep", "3600"])
    write(swarm, pb.StoreAction.CREATE, t)
    wait_state(swarm, t.id, S.TASK_STATE_RUNNING)
    [before] = task_containers(swarm, "h2", t.id)
    swarm.kill("h2")
    swarm.start("h2")
    # the worker is back on the dispatcher (h2 is Ready again) and has seen its assignments
    wait_until(lambda: _node_ready(swarm, "h2"), timeout=30, interval=0.3, what="h2 ready again")
    other = new_task(svc, 2, node_id(swarm, "h2"), ["sleep", "3600"])  # proof the worker runs again
    write(swarm, pb.StoreAction.CREATE, other)
    wait_state(swarm, other.id, S.TASK_STATE_RUNNING)
    after = task_containers(swarm, "h2", t.id)
    assert [(c["Id"], c["State"]) for c in after] == [(before["Id"], "running")]
    assert read_task(swarm, t.id).status.state == S.TASK_STATE_RUNNING


def _node_ready(lab: Lab, host: str) -> bool:
    nid = node_id(lab, host)
    nodes = lab.client("h1").get("/nodes")
    return any(n["ID"] == nid and n["Status"]["State"] == "ready" for n in nodes)


def _logs(lab: Lab, host: str, cid: str) -> str:
    data = lab.client(host).send("GET", f"/containers/{cid}/logs", {"stdout": "1"}).read()
    out, i = b"", 0
    while i + 8 <= len(data):
        n = int.from_bytes(data[i + 4:i + 8], "big")
        out += data[i + 8:i + 8 + n]
        i += 8 + n
    return out.decode()


def _fstype(path: os.PathLike[str]) -> str:
    with open("/proc/self/mounts") as f:
        for line in f:
            parts = line.split()
            if parts[1] == str(path):
                return parts[2]
    return ""


def _frames(data: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i + 8 <= len(data):
        n = int.from_bytes(data[i + 4:i + 8], "big")
        out.append((data[i], data[i + 8:i + 8 + n]))
        i += 8 + n
    return out


@pytest.fixture(scope="module")
def talker(swarm: Lab) -> tuple[pb.Service, list[pb.Task]]:
    """A service with one task on the manager h1 and one on the worker h2, each saying which it is."""
    svc = new_service(swarm, "talker")
    tasks = [new_task(svc, slot, node_id(swarm, host), ["sh", "-c", f"echo hello from {host}; echo oops >&2; sleep 3600"])
             for slot, host in ((1, "h1"), (2, "h2"))]
    write(swarm, pb.StoreAction.CREATE, *tasks)
    for t in tasks:
        wait_state(swarm, t.id, S.TASK_STATE_RUNNING)
    return svc, tasks


def _expected(tasks: list[pb.Task], svc: pb.Service) -> set[tuple[int, bytes]]:
    out = set()
    for t, host in zip(tasks, ("h1", "h2")):
        d = f"com.docker.swarm.node.id={t.node_id},com.docker.swarm.service.id={svc.id},com.docker.swarm.task.id={t.id}"
        out |= {(1, f"{d} hello from {host}\n".encode()), (2, f"{d} oops\n".encode())}
    return out


def test_service_logs_hold_every_tasks_lines_with_the_details_the_cli_needs(swarm: Lab, talker) -> None:
    svc, tasks = talker
    q = {"details": "1", "stdout": "1", "stderr": "1", "tail": "all"}

    def both() -> list[tuple[int, bytes]] | None:
        got = _frames(swarm.client("h1").send("GET", "/services/talker/logs", q).read())
        return got if len(got) == 4 else None

    got = wait_until(both, timeout=15, interval=0.3)
    assert set(got) == _expected(tasks, svc)
    by_id = _frames(swarm.client("h1").send("GET", f"/services/{svc.id}/logs", {**q, "stderr": "0"}).read())
    assert sorted(by_id) == sorted(x for x in _expected(tasks, svc) if x[0] == 1)


def test_service_logs_follow_streams_lines_from_both_nodes(swarm: Lab, talker) -> None:
    svc, tasks = talker
    with swarm.client("h1", timeout=20) as c:
        resp = c.send("GET", "/services/talker/logs", {"details": "1", "stdout": "1", "stderr": "1", "follow": "1"})
        assert resp.header("Content-Type") == "application/vnd.docker.multiplexed-stream"
        buf = b""
        while len(_frames(buf)) < 4:
            chunk = resp.read1(65536)
            assert chunk, f"stream ended early after {_frames(buf)}"
            buf += chunk
        assert set(_frames(buf)) == _expected(tasks, svc)


def test_service_logs_on_a_worker_get_the_not_a_manager_error(swarm: Lab, talker) -> None:
    with pytest.raises(DaemonError) as err:
        swarm.client("h2").send("GET", "/services/talker/logs", {"stdout": "1"}).read()
    assert (err.value.status, err.value.message) == (503, "This node is not a swarm manager. Worker nodes can't be used to "
                                                      "view or modify cluster state. Please run this command on a manager "
                                                      "node or promote the current node to a manager.")


def test_a_task_joins_its_network_with_the_address_the_allocator_gave(swarm: Lab) -> None:
    created = swarm.client("h2").post("/networks/create", {"Name": "tasknet", "Driver": "bridge",
                                                           "IPAM": {"Config": [{"Subnet": "10.77.0.0/24"}]}})
    svc = new_service(swarm, "netted")
    t = new_task(svc, 1, node_id(swarm, "h2"), ["sleep", "3600"])
    net = pb.Network(id=created["Id"], spec=pb.NetworkSpec(annotations=pb.Annotations(name="tasknet"), driver="bridge"))
    t.networks.add(network=net, addresses=["10.77.0.9/24"], aliases=["netted"])
    write(swarm, pb.StoreAction.CREATE, t)
    wait_state(swarm, t.id, S.TASK_STATE_RUNNING)
    [c] = task_containers(swarm, "h2", t.id)
    nets = swarm.client("h2").get(f"/containers/{c['Id']}/json")["NetworkSettings"]["Networks"]
    assert list(nets) == ["tasknet"]
    assert (nets["tasknet"]["IPAddress"], nets["tasknet"]["IPPrefixLen"]) == ("10.77.0.9", 24)


def test_a_task_on_a_network_the_node_cannot_provide_is_rejected_with_the_reason(swarm: Lab) -> None:
    svc = new_service(swarm, "nowhere")
    t = new_task(svc, 1, node_id(swarm, "h2"), ["sleep", "3600"])
    net = pb.Network(id="ov" + secrets.token_hex(11), spec=pb.NetworkSpec(annotations=pb.Annotations(name="faraway"),
                                                                          driver="overlay"))
    t.networks.add(network=net, addresses=["10.0.9.3/24"])
    write(swarm, pb.StoreAction.CREATE, t)
    got = wait_state(swarm, t.id, S.TASK_STATE_REJECTED)
    # an overlay the managers never allocated (no VNI) cannot be made here: the driver says what it lacks
    assert got.status.err == ('network faraway (overlay) is not available on this node: an overlay network needs its '
                              'VNI: -o com.docker.network.driver.overlay.vxlanid_list=N (the managers allocate it)')
    assert task_containers(swarm, "h2", t.id) == []


def test_a_host_mode_port_is_published_on_the_tasks_node_and_reported(swarm: Lab) -> None:
    svc = new_service(swarm, "hostport")
    t = new_task(svc, 1, node_id(swarm, "h2"), ["sh", "-c", "echo task-answer > /tmp/index.html; httpd -f -p 80 -h /tmp"])
    t.endpoint.ports.add(protocol=pb.PortConfig.TCP, target_port=80, published_port=8080, publish_mode=pb.PortConfig.HOST)
    write(swarm, pb.StoreAction.CREATE, t)
    got = wait_state(swarm, t.id, S.TASK_STATE_RUNNING)
    assert [(p.target_port, p.published_port, p.publish_mode) for p in got.status.port_status] == [(80, 8080, pb.PortConfig.HOST)]
    url = f"http://{host_address('h2')}:8080/index.html"
    out = wait_until(lambda: swarm.exec("h1", ["busybox", "wget", "-q", "-O", "-", url], check=False).stdout, timeout=10)
    assert out == "task-answer\n"


def test_zz_leaving_the_swarm_removes_the_nodes_task_containers_and_nothing_else(swarm: Lab) -> None:
    # last in the module: h2 leaves the swarm
    svc = new_service(swarm, "leaver")
    t = new_task(svc, 1, node_id(swarm, "h2"), ["sleep", "3600"])
    write(swarm, pb.StoreAction.CREATE, t)
    wait_state(swarm, t.id, S.TASK_STATE_RUNNING)
    plain = swarm.client("h2").post("/containers/create", {"Image": "busybox", "Cmd": ["sleep", "3600"]}, {"name": "plain"})
    swarm.exec("h2", SHOAL + ["swarm", "leave"], timeout=60)
    left = swarm.client("h2").get("/containers/json", {"all": "1"})
    assert [c["Id"] for c in left] == [plain["Id"]]
    assert list((run_dir(swarm.name, "h2") / FILES_DIR).glob("*")) == []
