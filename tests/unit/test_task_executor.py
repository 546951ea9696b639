"""The agent's task side without a kernel: the create body a task becomes (shoal/swarm/executor.py), the config and
secret files it needs, the log details the docker CLI parses (routes_service_logs.py), and the TaskRunner's state
sequence (agent/taskexec.py) over an in-memory container table standing in for the engine."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent.taskexec import Dependencies, Observed, TaskRunner
from common.errdefs import InvalidParameter
from proto import objects_pb2 as pb
from shoal.api.routes_service_logs import details_prefix, with_details
from shoal.swarm.executor import container_name, create_body, expand, task_files

S = pb.TaskState


def task(**kw: Any) -> pb.Task:
    t = pb.Task(id="t0123456789abcdef0123456", service_id="s1", slot=2, node_id="n1", desired_state=S.TASK_STATE_RUNNING)
    t.annotations.name = f"web.2.{t.id}"
    t.spec.container.image = "busybox"
    t.status.state = S.TASK_STATE_ASSIGNED
    for k, v in kw.items():
        setattr(t.spec.container, k, v) if not isinstance(v, list) else getattr(t.spec.container, k).extend(v)
    return t


def test_a_task_container_is_named_service_slot_task_id() -> None:
    t = task()
    assert container_name(t) == f"web.2.{t.id}"
    t.ClearField("annotations")
    assert container_name(t) == f"s1.2.{t.id}"


def test_the_create_body_carries_dockers_swarm_labels_and_swarm_command_semantics() -> None:
    t = task(command=["/bin/sh", "-c"], args=["echo hi"], env=["A=1"], dir="/w", user="nobody")
    t.spec.container.labels["mine"] = "x"
    body = create_body(t, "h2", [], [])
    assert body == {
        "Image": "busybox", "Env": ["A=1"], "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo hi"], "WorkingDir": "/w",
        "User": "nobody", "HostConfig": {"NetworkMode": "default"},
        "Labels": {"mine": "x", "com.docker.swarm.node.id": "n1", "com.docker.swarm.service.id": "s1",
                   "com.docker.swarm.service.name": "web", "com.docker.swarm.task": "",
                   "com.docker.swarm.task.id": t.id, "com.docker.swarm.task.name": f"web.2.{t.id}"},
    }


def test_hostname_and_env_templates_are_expanded_per_task() -> None:
    t = task(hostname="{{.Service.Name}}-{{.Task.Slot}}-{{.Node.Hostname}}", env=["ID={{.Task.ID}}", "N={{ .Node.ID }}"])
    body = create_body(t, "h2", [], [])
    assert (body["Hostname"], body["Env"]) == ("web-2-h2", [f"ID={t.id}", "N=n1"])
    assert expand("{{.Unknown.Thing}}", t, "h2") == "{{.Unknown.Thing}}"


def test_networks_become_endpoints_with_the_allocated_address_first_network_primary() -> None:
    body = create_body(task(), "h2", [("ov1", "10.0.9.3"), ("ov2", "")], [("/run/x/config-c1", "/etc/app.conf")])
    assert body["HostConfig"] == {"NetworkMode": "ov1", "Mounts": [
        {"Type": "bind", "Source": "/run/x/config-c1", "Target": "/etc/app.conf", "ReadOnly": True}]}
    # no aliases: the service's name the VIP (service binding), not this container
    assert body["NetworkingConfig"] == {"EndpointsConfig": {"ov1": {"IPAMConfig": {"IPv4Address": "10.0.9.3"}}, "ov2": {}}}


def test_config_files_take_their_target_mode_and_data_from_the_assignment() -> None:
    t = task()
    t.spec.container.configs.add(config_id="c1", config_name="app.conf", file=pb.FileTarget(name="app.conf", mode=0o440, uid="1"))
    deps = Dependencies(configs={"c1": pb.Config(id="c1", spec=pb.ConfigSpec(data=b"x=1"))})
    assert task_files(t, deps) == [("config-0-c1", b"x=1", 0o440, 1, 0, "/app.conf")]


def test_a_config_missing_from_the_assignment_refuses_the_task() -> None:
    t = task()
    t.spec.container.configs.add(config_id="c9", config_name="gone.conf", file=pb.FileTarget(name="/gone"))
    with pytest.raises(InvalidParameter) as err:
        task_files(t, Dependencies())
    assert str(err.value) == "config gone.conf not found in the task's assignment"


def test_log_details_are_the_three_keys_the_cli_needs_sorted_and_escaped() -> None:
    labels = {"com.docker.swarm.task.id": "t1", "com.docker.swarm.node.id": "n 1", "com.docker.swarm.service.id": "s1",
              "other": "x"}
    d = details_prefix(labels)
    assert d == b"com.docker.swarm.node.id=n%201,com.docker.swarm.service.id=s1,com.docker.swarm.task.id=t1"
    assert with_details(b"hello\n", d, False) == d + b" hello\n"
    assert with_details(b"2026-12-01T22:00:00.000000001Z hello\n", b"k=v", True) == b"2026-12-01T22:00:00.000000001Z k=v hello\n"


# ------------------------------------------------------------------------------------------------ TaskRunner
class Containers:
    """An in-memory container table with the TaskController calls (what the engine does, minus the kernel)."""

    def __init__(self, exit_code: int | None = None, refuse: str = "") -> None:
        self.state: dict[str, str] = {}
        self.exit_code = exit_code  # None: runs until shut down
        self.refuse = refuse
        self.exited = asyncio.Event()
        self.retired: list[str] = []  # tasks whose stopped container stays: told to let go of their networks

    def controller(self, task: pb.Task, deps: Dependencies) -> Any:
        return _Ctl(self, task.id)

    async def task_containers(self) -> dict[str, str]:
        return {tid: tid for tid in self.state}

    async def remove_container(self, container_id: str) -> None:
        self.state.pop(container_id, None)


class _Ctl:
    def __init__(self, table: Containers, tid: str) -> None:
        self.t, self.tid = table, tid

    async def inspect(self) -> Observed:
        st = self.t.state.get(self.tid)
        if st is None:
            return Observed(False)
        return Observed(True, running=st == "running", exited=st == "exited", exit_code=self.t.exit_code or 0, container_id="c")

    async def prepare(self) -> None:
        if self.t.refuse:
            raise InvalidParameter(self.t.refuse)
        self.t.state[self.tid] = "created"

    async def start(self) -> None:
        self.t.state[self.tid] = "running" if self.t.exit_code is None else "exited"

    async def wait(self) -> Observed:
        await self.t.exited.wait()
        self.t.state[self.tid] = "exited"
        return await self.inspect()

    async def shutdown(self, grace_s: float) -> None:
        self.t.state[self.tid] = "exited"
        self.t.exited.set()

    async def retire(self) -> None:
        self.t.retired.append(self.tid)

    async def remove(self) -> None:
        self.t.state.pop(self.tid, None)


def drive(table: Containers, t: pb.Task, then: Any = None) -> list[tuple[int, str, str]]:
    seen: list[tuple[int, str, str]] = []

    async def run() -> None:
        r = TaskRunner(t, Dependencies(), table, lambda _tid, st: seen.append((st.state, st.message, st.err)))
        r.start()
        for _ in range(50):
            await asyncio.sleep(0)
        if then is not None:
            then(r)
            for _ in range(50):
                await asyncio.sleep(0)
        await r.close()

    asyncio.run(run())
    return seen


def test_a_task_that_exits_zero_goes_through_every_state_to_complete() -> None:
    assert [s for s, _m, _e in drive(Containers(exit_code=0), task())] == [
        S.TASK_STATE_ACCEPTED, S.TASK_STATE_PREPARING, S.TASK_STATE_READY, S.TASK_STATE_STARTING, S.TASK_STATE_COMPLETE]


def test_a_task_whose_container_fails_is_failed_with_the_exit_code_in_err() -> None:
    assert drive(Containers(exit_code=3), task())[-1] == (S.TASK_STATE_FAILED, "started", "task: non-zero exit (3)")


def test_a_refused_prepare_rejects_the_task_with_the_refusal() -> None:
    assert drive(Containers(refuse="No such image: nope"), task())[-1] == (S.TASK_STATE_REJECTED, "preparing", "No such image: nope")


def _with_desired(t: pb.Task, desired: int) -> pb.Task:
    out = pb.Task()
    out.CopyFrom(t)
    out.desired_state = desired
    return out


def test_desired_shutdown_of_a_running_task_stops_its_container_keeps_it_and_reports_shutdown() -> None:
    table = Containers()
    t = task()
    seen = drive(table, t, lambda r: r.update(_with_desired(t, S.TASK_STATE_SHUTDOWN), Dependencies()))
    assert [s for s, _m, _e in seen][-2:] == [S.TASK_STATE_RUNNING, S.TASK_STATE_SHUTDOWN]
    assert table.state == {t.id: "exited"}  # its logs and exit code stay readable while the task is in the history
    assert table.retired[-1:] == [t.id]  # the node's copies of the networks only it was on may go


def test_desired_remove_of_a_running_task_stops_and_removes_its_container() -> None:
    table = Containers()
    t = task()
    seen = drive(table, t, lambda r: r.update(_with_desired(t, S.TASK_STATE_REMOVE), Dependencies()))
    assert [s for s, _m, _e in seen][-2:] == [S.TASK_STATE_RUNNING, S.TASK_STATE_SHUTDOWN]
    assert table.state == {}


def test_a_shut_down_tasks_container_is_removed_when_the_task_leaves_the_assignments() -> None:
    table = Containers()
    t = task()

    def shutdown_then_unassign(r: TaskRunner) -> None:
        r.update(_with_desired(t, S.TASK_STATE_SHUTDOWN), Dependencies())
        asyncio.get_running_loop().call_later(0.01, r.remove)

    async def run() -> None:
        r = TaskRunner(t, Dependencies(), table, lambda _tid, _st: None)
        r.start()
        for _ in range(50):
            await asyncio.sleep(0)
        shutdown_then_unassign(r)
        for _ in range(50):
            await asyncio.sleep(0)
        assert table.state == {t.id: "exited"}
        await asyncio.sleep(0.05)
        assert (table.state, r.done) == ({}, True)

    asyncio.run(run())


def test_a_running_container_found_for_a_running_task_is_adopted_not_started_again() -> None:
    table = Containers()
    t = task()
    t.status.state = S.TASK_STATE_RUNNING
    table.state[t.id] = "running"
    assert drive(table, t) == []  # nothing to report, nothing made
    assert table.state == {t.id: "running"}


# ------------------------------------------------------------------------------------------------ Worker
def _complete(*tasks: pb.Task) -> Any:
    from proto import swarm_pb2

    C = swarm_pb2.AssignmentChange
    return swarm_pb2.AssignmentsMessage(type=swarm_pb2.AssignmentsMessage.COMPLETE, changes=[
        C(assignment=swarm_pb2.Assignment(task=t), action=C.UPDATE) for t in tasks])


def test_a_complete_assignment_removes_containers_of_tasks_it_does_not_hold_and_keeps_the_others() -> None:
    from agent.worker import Worker

    table = Containers()
    kept = task()
    kept.status.state = S.TASK_STATE_RUNNING
    table.state = {kept.id: "running", "orphan": "running"}

    async def run() -> None:
        w = Worker(table, orphan_grace=0)
        await w.apply(_complete(kept))
        for _ in range(20):
            await asyncio.sleep(0)
        await w.close()

    asyncio.run(run())
    assert table.state == {kept.id: "running"}


def test_a_container_whose_task_comes_back_within_the_grace_period_is_kept() -> None:
    from agent.worker import Worker

    table = Containers()
    late = task()
    late.status.state = S.TASK_STATE_RUNNING
    table.state = {late.id: "running"}

    async def run() -> None:
        w = Worker(table, orphan_grace=0.05)
        await w.apply(_complete())  # a new leader that has not applied the task's entry yet
        await w.apply(_complete(late))  # and then has
        await asyncio.sleep(0.2)
        await w.close()

    asyncio.run(run())
    assert table.state == {late.id: "running"}


def test_statuses_are_sent_in_one_batch_per_interval_latest_per_task() -> None:
    from agent.worker import Worker

    sent: list[list[tuple[str, int]]] = []

    async def run() -> None:
        w = Worker(Containers(exit_code=0), interval=0.01)
        await w.apply(_complete(task()))

        async def send(updates: list[Any]) -> None:
            sent.append([(u.task_id, u.status.state) for u in updates])
            raise asyncio.CancelledError  # one batch is all this test looks at

        for _ in range(50):
            await asyncio.sleep(0)
        with pytest.raises(asyncio.CancelledError):
            await w.report_loop(send)
        await w.close()

    asyncio.run(run())
    assert sent == [[(task().id, S.TASK_STATE_COMPLETE)]]


def test_a_task_on_a_predefined_network_runs_in_that_network_mode() -> None:
    from shoal.swarm.executor_net import predefined_mode

    t = task()
    t.networks.add(network=pb.Network(id="x", spec=pb.NetworkSpec(
        annotations=pb.Annotations(name="host", labels={"com.docker.swarm.predefined": "true"}), driver="host")))
    assert predefined_mode(t) == "host"
    body = create_body(t, "h2", [], [])
    assert body["HostConfig"] == {"NetworkMode": "host"} and "NetworkingConfig" not in body


def test_host_mode_ports_are_bound_by_the_container_and_ingress_ports_are_not() -> None:
    t = task()
    t.endpoint.ports.add(protocol=pb.PortConfig.TCP, target_port=80, published_port=8080, publish_mode=pb.PortConfig.HOST)
    t.endpoint.ports.add(protocol=pb.PortConfig.UDP, target_port=53, publish_mode=pb.PortConfig.HOST)
    t.endpoint.ports.add(protocol=pb.PortConfig.TCP, target_port=443, published_port=30443)  # ingress: the mesh's
    assert create_body(t, "h2", [], [])["HostConfig"]["PortBindings"] == {
        "80/tcp": [{"HostIp": "", "HostPort": "8080"}], "53/udp": [{"HostIp": "", "HostPort": ""}]}


def test_a_swarm_network_is_created_on_the_node_with_the_managers_id_subnet_and_vni() -> None:
    from shoal.swarm.executor_net import network_create

    net = pb.Network(id="ovid0123456789abcdefghijk", vni=4097, spec=pb.NetworkSpec(
        annotations=pb.Annotations(name="my-net", labels={"a": "b"}), driver="overlay", attachable=True))
    net.ipam.configs.add(subnet="10.0.9.0/24", gateway="10.0.9.1")
    req = network_create(net)
    assert (req.id, req.name, req.driver, req.scope, req.attachable, req.labels) == (
        "ovid0123456789abcdefghijk", "my-net", "overlay", "swarm", True, {"a": "b"})
    assert [(c.subnet, c.gateway, c.ip_range) for c in req.ipam_config] == [("10.0.9.0/24", "10.0.9.1", "")]
    assert req.options == {"com.docker.network.driver.overlay.vxlanid_list": "4097"}


def test_a_secret_is_a_file_under_run_secrets_by_default_with_its_mode() -> None:
    t = task()
    t.spec.container.secrets.add(secret_id="s1", secret_name="db-pass", file=pb.FileTarget(name="db-pass", mode=0o400))
    t.spec.container.secrets.add(secret_id="s1", secret_name="db-pass", file=pb.FileTarget(name="/etc/pw", mode=0o440))
    deps = Dependencies(secrets={"s1": pb.Secret(id="s1", spec=pb.SecretSpec(data=b"hunter2"))})
    assert task_files(t, deps) == [("secret-0-s1", b"hunter2", 0o400, 0, 0, "/run/secrets/db-pass"),
                                   ("secret-1-s1", b"hunter2", 0o440, 0, 0, "/etc/pw")]


def test_mount_options_reach_the_container_create_body() -> None:
    t = task()
    m = t.spec.container.mounts.add(type=pb.Mount.TMPFS, target="/scratch")
    m.tmpfs_options.size_bytes, m.tmpfs_options.mode = 1 << 20, 0o1777
    m = t.spec.container.mounts.add(type=pb.Mount.VOLUME, source="vv", target="/data")
    m.volume_options.nocopy = True
    m.volume_options.labels["a"] = "b"
    m = t.spec.container.mounts.add(type=pb.Mount.BIND, source="/srv", target="/host", read_only=True)
    m.bind_options.propagation = "rslave"
    assert create_body(t, "h2", [], [])["HostConfig"]["Mounts"] == [
        {"Type": "tmpfs", "Target": "/scratch", "ReadOnly": False, "TmpfsOptions": {"SizeBytes": 1 << 20, "Mode": 0o1777}},
        {"Type": "volume", "Target": "/data", "ReadOnly": False, "Source": "vv", "VolumeOptions": {"NoCopy": True, "Labels": {"a": "b"}}},
        {"Type": "bind", "Target": "/host", "ReadOnly": True, "Source": "/srv", "BindOptions": {"Propagation": "rslave"}},
    ]


def test_container_options_of_the_spec_become_the_create_bodys() -> None:
    t = task(stop_signal="SIGINT", tty=True, open_stdin=True, read_only=True, init=True, capability_add=["CAP_NET_ADMIN"],
             capability_drop=["CAP_CHOWN"], hosts=["10.0.0.1 foo bar"])
    c = t.spec.container
    c.dns_config.nameservers.append("10.0.0.53")
    c.dns_config.search.append("example.org")
    c.sysctls["net.core.somaxconn"] = "1024"
    c.ulimits.add(name="nofile", soft=100, hard=200)
    t.spec.resources.limits.pids = 50
    body = create_body(t, "h2", [], [])
    assert (body["StopSignal"], body["Tty"], body["OpenStdin"]) == ("SIGINT", True, True)
    assert body["HostConfig"] == {
        "NetworkMode": "default", "PidsLimit": 50, "ReadonlyRootfs": True, "Init": True, "CapAdd": ["CAP_NET_ADMIN"],
        "CapDrop": ["CAP_CHOWN"], "ExtraHosts": ["foo:10.0.0.1", "bar:10.0.0.1"], "Dns": ["10.0.0.53"],
        "DnsSearch": ["example.org"], "Sysctls": {"net.core.somaxconn": "1024"},
        "Ulimits": [{"Name": "nofile", "Soft": 100, "Hard": 200}]}


def test_an_adopted_running_task_counts_as_running_on_this_node_without_a_report() -> None:
    # after a daemon restart: the service endpoints glue announces what the worker's statuses say runs here
    from agent.worker import Worker

    table = Containers()
    kept = task()
    kept.status.state = S.TASK_STATE_RUNNING
    kept.status.message = "started"
    table.state = {kept.id: "running"}
    changes: list[int] = []

    async def run() -> tuple[dict[str, Any], set[str]]:
        w = Worker(table, orphan_grace=0)
        w.on_change = lambda: changes.append(1)
        await w.apply(_complete(kept))
        for _ in range(20):
            await asyncio.sleep(0)
        seen = ({tid: (st.state, st.message) for tid, st in w.statuses.items()}, set(w.unsent))
        await w.close()
        return seen

    statuses, unsent = asyncio.run(run())
    assert (statuses, unsent) == ({kept.id: (S.TASK_STATE_RUNNING, "started")}, set())
    assert changes  # the glue was told


def test_the_health_check_of_the_spec_becomes_the_create_bodys_in_nanoseconds() -> None:
    t = task()
    h = t.spec.container.healthcheck
    h.test.extend(["CMD-SHELL", "true"])
    h.interval.FromMilliseconds(200)
    h.start_period.FromSeconds(2)
    h.retries = 2
    assert create_body(t, "h2", [], [])["Healthcheck"] == {
        "Test": ["CMD-SHELL", "true"], "Interval": 200_000_000, "StartPeriod": 2_000_000_000, "Retries": 2}


def test_no_healthcheck_reaches_the_create_body_and_an_empty_one_does_not() -> None:
    t = task()
    t.spec.container.healthcheck.SetInParent()
    assert "Healthcheck" not in create_body(t, "h2", [], [])  # the image's check, as without one
    t.spec.container.healthcheck.test.append("NONE")
    assert create_body(t, "h2", [], [])["Healthcheck"] == {"Test": ["NONE"]}


def test_groups_and_oom_score_adj_of_the_spec_become_the_create_bodys() -> None:
    t = task()
    t.spec.container.groups.extend(["audio", "4242"])
    t.spec.container.oom_score_adj = 500
    host = create_body(t, "h2", [], [])["HostConfig"]
    assert (host["GroupAdd"], host["OomScoreAdj"]) == (["audio", "4242"], 500)


def test_an_oom_score_adj_out_of_range_is_refused_by_the_tasks_create_with_mobys_words() -> None:
    from shoal.api import params

    t = task()
    t.spec.container.oom_score_adj = -2000
    with pytest.raises(InvalidParameter) as e:
        params.parse_container_create(create_body(t, "h2", [], []))
    assert str(e.value) == "Invalid value -2000, range for oom score adj is [-1000, 1000]"


def test_a_jobs_task_desired_complete_runs_to_its_end_keeps_its_container_and_lets_go_of_its_networks() -> None:
    table = Containers()
    t = _with_desired(task(), S.TASK_STATE_COMPLETE)  # swarmkit's job task: it runs like a service's

    def running_then_exit(r: TaskRunner) -> None:
        assert (r.state, table.state, table.retired) == (S.TASK_STATE_RUNNING, {t.id: "running"}, [])
        table.exit_code = 0
        table.exited.set()

    seen = drive(table, t, running_then_exit)
    assert [s for s, _m, _e in seen][-2:] == [S.TASK_STATE_RUNNING, S.TASK_STATE_COMPLETE]
    assert (table.state, table.retired) == ({t.id: "exited"}, [t.id])
