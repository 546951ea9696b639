"""`shoal service` without a daemon: flags to ServiceSpec JSON, the convergence decision, the ps table rows."""

from __future__ import annotations

import pytest

from shoal.cli.format import UsageError
from shoal.cli.service import ps_rows
from shoal.cli.service_opts import create_spec, parse_mount, parse_port, update_spec
from shoal.cli.service_progress import converge_state


def test_publish_short_and_long_forms() -> None:
    assert parse_port("8080:80") == {"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}
    assert parse_port("53/udp") == {"Protocol": "udp", "TargetPort": 53, "PublishedPort": 0, "PublishMode": "ingress"}
    assert parse_port("published=8080,target=80,mode=host") == {
        "Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "host"}


def test_publish_bad_value_is_named() -> None:
    with pytest.raises(UsageError) as e:
        parse_port("80:eighty")
    assert str(e.value) == 'invalid port specification: "80:eighty"'


def test_mount_flag() -> None:
    assert parse_mount("type=bind,source=/srv,target=/data,readonly") == {
        "Type": "bind", "Source": "/srv", "Target": "/data", "ReadOnly": True}


def test_create_spec_carries_every_task_option() -> None:
    s = create_spec({"image": "busybox", "args": ("httpd", "-f"), "name": "web", "replicas": 2, "env": ("A=1",),
                     "hostname": "{{.Service.Name}}-{{.Task.Slot}}", "limit_memory": "64m", "reserve_cpu": "0.5",
                     "restart_condition": "on-failure", "restart_delay": "2s", "restart_max_attempts": 3,
                     "stop_grace_period": "3s", "constraint": ("node.role==worker",), "network": ("appnet",),
                     "publish": ("8080:80",), "update_parallelism": 2, "update_failure_action": "rollback",
                     "endpoint_mode": "vip"})
    t = s["TaskTemplate"]
    assert t["ContainerSpec"] == {"Image": "busybox", "Args": ["httpd", "-f"], "Env": ["A=1"],
                                  "Hostname": "{{.Service.Name}}-{{.Task.Slot}}", "StopGracePeriod": 3_000_000_000, "Init": False}
    assert t["Resources"] == {"Limits": {"MemoryBytes": 64 << 20}, "Reservations": {"NanoCPUs": 500_000_000}}
    assert t["RestartPolicy"] == {"Condition": "on-failure", "Delay": 2_000_000_000, "MaxAttempts": 3}
    assert (t["Placement"], t["Networks"]) == ({"Constraints": ["node.role==worker"]}, [{"Target": "appnet"}])
    assert s["Mode"] == {"Replicated": {"Replicas": 2}}
    assert (s["UpdateConfig"]["Parallelism"], s["UpdateConfig"]["FailureAction"]) == (2, "rollback")


def test_create_without_replicas_sends_an_empty_replicated_mode_like_docker() -> None:
    assert create_spec({"image": "busybox"})["Mode"] == {"Replicated": {}}
    assert create_spec({"image": "busybox", "mode": "global"})["Mode"] == {"Global": {}}


def test_bad_restart_condition_is_refused() -> None:
    with pytest.raises(UsageError) as e:
        create_spec({"image": "busybox", "restart_condition": "always"})
    assert str(e.value) == 'invalid argument "always" for "--restart-condition" flag: must be one of none, on-failure, any'


def test_update_spec_changes_only_what_the_flags_say() -> None:
    base = create_spec({"image": "busybox", "name": "web", "replicas": 2, "env": ("A=1", "B=2")})
    s = update_spec(base, {"image": "busybox:2", "env_add": ("B=3",), "env_rm": ("A",), "force": True})
    assert s["TaskTemplate"]["ContainerSpec"]["Image"] == "busybox:2"
    assert s["TaskTemplate"]["ContainerSpec"]["Env"] == ["B=3"]
    assert s["TaskTemplate"]["ForceUpdate"] == 1
    assert base["TaskTemplate"]["ContainerSpec"]["Image"] == "busybox"


def _task(slot: int, state: str, desired: str = "running", node: str = "n1", created: str = "2026-01-01T00:00:00Z") -> dict:
    return {"ID": f"t{slot}{state}", "Slot": slot, "NodeID": node, "DesiredState": desired, "CreatedAt": created,
            "Status": {"State": state, "Timestamp": created}, "Spec": {"ContainerSpec": {"Image": "busybox"}}}


SVC = {"ID": "s1", "Spec": {"Name": "web", "Mode": {"Replicated": {"Replicas": 2}}}}
NODES = [{"ID": "n1", "Status": {"State": "ready"}}, {"ID": "n2", "Status": {"State": "down"}}]


def test_converged_when_running_tasks_equal_replicas() -> None:
    c = converge_state(SVC, [_task(1, "running"), _task(2, "running")], NODES)
    assert (c.running, c.desired, c.converged, c.slots) == (2, 2, True, [("1/2", "running", ""), ("2/2", "running", "")])


def test_tasks_on_down_nodes_and_shut_down_ones_do_not_count() -> None:
    tasks = [_task(1, "running"), _task(2, "running", node="n2"), _task(2, "running", desired="shutdown")]
    c = converge_state(SVC, tasks, NODES)
    assert (c.running, c.converged, c.slots[1]) == (1, False, ("2/2", "", ""))


def test_paused_update_is_an_error_with_its_message() -> None:
    svc = {**SVC, "UpdateStatus": {"State": "paused", "Message": "update paused due to failure or early termination of task x"}}
    c = converge_state(svc, [_task(1, "running")], NODES)
    assert c.error == "service update paused: update paused due to failure or early termination of task x"


def test_ps_rows_group_by_slot_newest_first() -> None:
    old = _task(1, "shutdown", desired="shutdown", created="2026-01-01T00:00:00Z")
    new = _task(1, "assigned", created="2026-01-01T00:01:00Z")
    rows = ps_rows(SVC, [old, new, _task(2, "assigned")], {"n1": "h1"})
    assert [(r[1], r[3], r[4]) for r in rows] == [("web.1", "h1", "Running"), (" \\_ web.1", "h1", "Shutdown"),
                                                  ("web.2", "h1", "Running")]


class ScriptedDaemon:
    """Answers the progress loop's three requests from a list of task lists, one per poll."""

    def __init__(self, service: dict, polls: list[list[dict]]) -> None:
        self.service, self.polls, self.n = service, polls, 0

    def get(self, path: str, query: dict | None = None) -> object:
        if path.startswith("/services/"):
            return self.service
        if path == "/nodes":
            return NODES
        tasks = self.polls[min(self.n, len(self.polls) - 1)]
        self.n += 1
        return tasks


def test_follow_draws_a_bar_per_slot_and_ends_with_verify(capsys: pytest.CaptureFixture[str]) -> None:
    from shoal.cli.service_progress import follow

    svc = {**SVC, "Spec": {**SVC["Spec"], "UpdateConfig": {"Monitor": 0}}}
    follow(ScriptedDaemon(svc, [[_task(1, "assigned"), _task(2, "preparing")], [_task(1, "running"), _task(2, "running")]]), "s1")
    lines = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    assert lines[0].startswith("overall progress: 2 out of 2 tasks")
    assert [line.split()[0:2] for line in lines[1:3]] == [["1/2:", "running"], ["2/2:", "running"]]
    assert lines[-1] == "verify: Service converged"


def test_follow_stops_with_the_pause_message() -> None:
    from shoal.cli.service_progress import follow

    svc = {**SVC, "UpdateStatus": {"State": "paused", "Message": "update paused due to failure or early termination of task t9"}}
    with pytest.raises(RuntimeError) as e:
        follow(ScriptedDaemon(svc, [[_task(1, "failed")]]), "s1")
    assert str(e.value) == "service update paused: update paused due to failure or early termination of task t9"


@pytest.mark.parametrize(("flag", "attachment"), [
    ("appnet", {"Target": "appnet"}),
    ("name=appnet,alias=front,alias=web2", {"Target": "appnet", "Aliases": ["front", "web2"]}),
    ("name=appnet,driver-opt=com.example=1", {"Target": "appnet", "DriverOpts": {"com.example": "1"}}),
])
def test_network_flag_takes_the_name_or_dockers_long_form(flag: str, attachment: dict) -> None:
    from shoal.cli.service_opts import parse_network

    assert parse_network(flag) == attachment


@pytest.mark.parametrize(("flag", "message"), [
    ("alias=front", "network name/id is not specified"),
    ("name=appnet,color=red", "invalid field key color"),
    ("name=appnet,alias", "invalid field 'alias' must be a key=value pair"),
])
def test_a_bad_long_network_flag_is_refused_with_dockers_message(flag: str, message: str) -> None:
    from shoal.cli.format import UsageError
    from shoal.cli.service_opts import parse_network

    with pytest.raises(UsageError) as e:
        parse_network(flag)
    assert str(e.value) == message


def test_create_health_flags_become_dockers_healthcheck_in_nanoseconds() -> None:
    s = create_spec({"image": "busybox", "health_cmd": "wget -q localhost", "health_interval": "200ms",
                     "health_timeout": "1s", "health_start_period": "2s", "health_start_interval": "100ms",
                     "health_retries": 2})
    assert s["TaskTemplate"]["ContainerSpec"]["Healthcheck"] == {
        "Test": ["CMD-SHELL", "wget -q localhost"], "Interval": 200_000_000, "Timeout": 1_000_000_000,
        "StartPeriod": 2_000_000_000, "StartInterval": 100_000_000, "Retries": 2}


def test_create_without_health_flags_sends_no_healthcheck_and_no_healthcheck_sends_none() -> None:
    assert "Healthcheck" not in create_spec({"image": "busybox"})["TaskTemplate"]["ContainerSpec"]
    assert create_spec({"image": "busybox", "no_healthcheck": True})["TaskTemplate"]["ContainerSpec"]["Healthcheck"] == {
        "Test": ["NONE"]}


def test_no_healthcheck_with_a_health_flag_is_refused_with_dockers_message() -> None:
    with pytest.raises(UsageError) as e:
        create_spec({"image": "busybox", "no_healthcheck": True, "health_retries": 3})
    assert str(e.value) == "--no-healthcheck conflicts with --health-* options"


def test_update_health_flags_change_only_what_they_name() -> None:
    spec = create_spec({"image": "busybox", "health_cmd": "true", "health_interval": "1s"})
    cs = update_spec(spec, {"health_retries": 5})["TaskTemplate"]["ContainerSpec"]
    assert cs["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 1_000_000_000, "Retries": 5}
    cs = update_spec(spec, {"health_cmd": ""})["TaskTemplate"]["ContainerSpec"]  # the image's command again
    assert cs["Healthcheck"] == {"Interval": 1_000_000_000}
    assert update_spec(spec, {"no_healthcheck": True})["TaskTemplate"]["ContainerSpec"]["Healthcheck"] == {"Test": ["NONE"]}
    assert update_spec(spec, {})["TaskTemplate"]["ContainerSpec"]["Healthcheck"] == spec["TaskTemplate"]["ContainerSpec"]["Healthcheck"]


def test_a_health_flag_after_no_healthcheck_drops_its_none() -> None:
    spec = create_spec({"image": "busybox", "no_healthcheck": True})
    assert update_spec(spec, {"health_timeout": "2s"})["TaskTemplate"]["ContainerSpec"]["Healthcheck"] == {"Timeout": 2_000_000_000}


def test_the_fast_path_leaves_health_flags_to_click() -> None:
    from shoal.cli.fast import parse_fast

    assert parse_fast(["service", "create", "--health-cmd", "true", "busybox"]) is None
    assert parse_fast(["service", "create", "--no-healthcheck", "busybox"]) is None
