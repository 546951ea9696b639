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


def test_placement_pref_flags_become_spread_preferences_in_order() -> None:
    s = create_spec({"image": "busybox", "constraint": ("node.role==worker",),
                     "placement_pref": ("spread=node.labels.zone", "spread=engine.labels.rack")})
    assert s["TaskTemplate"]["Placement"] == {"Constraints": ["node.role==worker"], "Preferences": [
        {"Spread": {"SpreadDescriptor": "node.labels.zone"}}, {"Spread": {"SpreadDescriptor": "engine.labels.rack"}}]}


@pytest.mark.parametrize(("value", "why"), [
    ("node.labels.zone", 'placement preference must be of the format "<strategy>=<arg>"'),
    ("=node.labels.zone", 'placement preference must be of the format "<strategy>=<arg>"'),
    ("pack=node.labels.zone", "unsupported placement preference pack (only spread is supported)"),
])
def test_a_bad_placement_pref_is_refused_with_the_docker_clis_message(value: str, why: str) -> None:
    with pytest.raises(UsageError) as e:
        create_spec({"image": "busybox", "placement_pref": (value,)})
    assert str(e.value) == f'invalid argument "{value}" for "--placement-pref" flag: {why}'


def test_update_removes_preferences_by_descriptor_then_appends_the_added_ones() -> None:
    base = create_spec({"image": "busybox", "placement_pref": ("spread=node.labels.rack", "spread=node.labels.row")})
    s = update_spec(base, {"placement_pref_add": ("spread=node.labels.dc",), "placement_pref_rm": ("spread=node.labels.rack",)})
    assert s["TaskTemplate"]["Placement"]["Preferences"] == [{"Spread": {"SpreadDescriptor": "node.labels.row"}},
                                                             {"Spread": {"SpreadDescriptor": "node.labels.dc"}}]
    assert update_spec(base, {})["TaskTemplate"]["Placement"] == base["TaskTemplate"]["Placement"]


def test_a_bad_placement_pref_rm_is_refused_naming_its_flag() -> None:
    with pytest.raises(UsageError) as e:
        update_spec(create_spec({"image": "busybox"}), {"placement_pref_rm": ("rack",)})
    assert str(e.value) == ('invalid argument "rack" for "--placement-pref-rm" flag: '
                            'placement preference must be of the format "<strategy>=<arg>"')


def test_the_fast_path_leaves_placement_pref_to_click() -> None:
    from shoal.cli.fast import parse_fast

    assert parse_fast(["service", "create", "--placement-pref", "spread=node.labels.zone", "busybox"]) is None
    assert parse_fast(["service", "create", "--placement-pref=spread=node.labels.zone", "busybox"]) is None


def test_pretty_inspect_shows_preferences_as_docker_does() -> None:
    from shoal.cli.service import _pretty

    spec = create_spec({"image": "busybox", "name": "web", "replicas": 2,
                        "placement_pref": ("spread=node.labels.zone", "spread=node.labels.rack")})
    lines = _pretty({"ID": "s1", "Spec": spec}).splitlines()
    assert lines[lines.index("Placement:") + 1] == " Preferences:   [spread=node.labels.zone spread=node.labels.rack]"


def _click_params(verb: str, argv: list[str]) -> dict:
    import click

    from shoal.cli.root import cli

    service = cli.get_command(click.Context(cli), "service")  # type: ignore[attr-defined]
    command = service.get_command(click.Context(service), verb)
    return command.make_context(verb, list(argv)).params


def test_create_group_and_oom_score_adj_flags_become_the_container_specs() -> None:
    s = create_spec(_click_params("create", ["--group", "audio", "--group", "4242", "--oom-score-adj", "500", "busybox"]))
    cs = s["TaskTemplate"]["ContainerSpec"]
    assert (cs["Groups"], cs["OomScoreAdj"]) == (["audio", "4242"], 500)


def test_create_without_them_sends_neither_as_dockers_omitempty() -> None:
    cs = create_spec(_click_params("create", ["busybox"]))["TaskTemplate"]["ContainerSpec"]
    assert {"Groups", "OomScoreAdj"} & set(cs) == set()


def test_update_adds_then_removes_groups_and_sorts_them_as_the_docker_cli_does() -> None:
    base = create_spec({"image": "busybox", "group": ("wheel", "audio")})
    s = update_spec(base, _click_params("update", ["--group-add", "staff", "--group-add", "video", "--group-rm", "audio",
                                                   "--group-rm", "video", "web"]))
    assert s["TaskTemplate"]["ContainerSpec"]["Groups"] == ["staff", "wheel"]


def test_update_oom_score_adj_sets_it_and_other_updates_keep_it() -> None:
    base = create_spec({"image": "busybox", "oom_score_adj": 500})
    assert update_spec(base, _click_params("update", ["--oom-score-adj", "-100", "web"]))[
        "TaskTemplate"]["ContainerSpec"]["OomScoreAdj"] == -100
    kept = update_spec(base, _click_params("update", ["--env-add", "A=1", "web"]))["TaskTemplate"]["ContainerSpec"]
    assert (kept["OomScoreAdj"], "Groups" in kept) == (500, False)


def test_the_fast_path_leaves_group_and_oom_score_adj_to_click() -> None:
    from shoal.cli.fast import parse_fast

    assert parse_fast(["service", "create", "--group", "audio", "busybox"]) is None
    assert parse_fast(["service", "create", "--oom-score-adj", "500", "busybox"]) is None


# ---- jobs (--mode replicated-job|global-job) ------------------------------------------------
@pytest.mark.parametrize("argv,mode", [
    (["--mode", "replicated-job", "--replicas", "4", "--max-concurrent", "2"], {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 4}}),
    (["--mode", "replicated-job", "--replicas", "4"], {"ReplicatedJob": {"MaxConcurrent": 4, "TotalCompletions": 4}}),
    (["--mode", "replicated-job", "--max-concurrent", "3"], {"ReplicatedJob": {"MaxConcurrent": 3}}),
    (["--mode", "replicated-job"], {"ReplicatedJob": {}}),
    (["--mode", "global-job"], {"GlobalJob": {}}),
])
def test_job_mode_flags_become_the_docker_clis_mode_and_no_update_config(argv: list[str], mode: dict) -> None:
    s = create_spec(_click_params("create", [*argv, "busybox"]))
    assert (s["Mode"], "UpdateConfig" in s) == (mode, False)


@pytest.mark.parametrize("argv,message", [
    (["--mode", "global", "--max-concurrent", "2"], "max-concurrent can only be used with replicated-job mode"),
    (["--mode", "replicated", "--max-concurrent", "2"], "max-concurrent can only be used with replicated-job mode"),
    (["--mode", "global-job", "--replicas", "2"], "replicas can only be used with replicated or replicated-job mode"),
    (["--mode", "global-job", "--replicas-max-per-node", "1"],
     "replicas-max-per-node can only be used with replicated or replicated-job mode"),
    (["--mode", "global", "--replicas", "2"], "replicas can only be used with replicated or replicated-job mode"),
    (["--mode", "replicated-job", "--update-delay", "1s"], "update and rollback configuration is not supported for jobs"),
    (["--mode", "batch"], "Unknown mode: batch, only replicated and global supported"),
])
def test_a_job_flag_in_the_wrong_mode_is_refused_with_the_docker_clis_message(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as e:
        create_spec(_click_params("create", [*argv, "busybox"]))
    assert str(e.value) == message


def test_update_of_a_job_sends_no_update_config_unless_an_update_flag_asks_for_one() -> None:
    base = create_spec(_click_params("create", ["--mode", "replicated-job", "busybox"]))
    assert "UpdateConfig" not in update_spec(base, _click_params("update", ["--force", "job"]))
    assert "UpdateConfig" in update_spec(base, _click_params("update", ["--update-delay", "1s", "job"]))


def test_the_fast_path_takes_a_job_mode_and_leaves_max_concurrent_to_click() -> None:
    from shoal.cli.fast import parse_fast, service_create_options

    _, _, params = parse_fast(["service", "create", "--mode", "replicated-job", "--replicas", "3", "busybox"])
    assert create_spec(service_create_options(params))["Mode"] == {"ReplicatedJob": {"MaxConcurrent": 3, "TotalCompletions": 3}}
    assert parse_fast(["service", "create", "--mode", "replicated-job", "--max-concurrent", "2", "busybox"]) is None


@pytest.mark.parametrize("mode,status,column", [
    ({"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 5}}, {"RunningTasks": 2, "DesiredTasks": 2, "CompletedTasks": 3},
     "2/2 (3/5 completed)"),
    ({"GlobalJob": {}}, {"RunningTasks": 1, "DesiredTasks": 1, "CompletedTasks": 2}, "1/1 (2/3 completed)"),
    ({"Replicated": {"Replicas": 2}}, {"RunningTasks": 1, "DesiredTasks": 2, "CompletedTasks": 0}, "1/2"),
])
def test_ls_shows_a_jobs_mode_and_completions_as_dockers_formatter(mode: dict, status: dict, column: str) -> None:
    from shoal.cli.service import _mode, _replicas

    s = {"Spec": {"Mode": mode}, "ServiceStatus": status}
    names = {"ReplicatedJob": "replicated job", "GlobalJob": "global job", "Replicated": "replicated"}
    assert (_mode(s), _replicas(s)) == (names[next(iter(mode))], column)


def _job_task(slot: int, state: str, run: int = 1, node: str = "n1") -> dict:
    return {"Slot": slot, "NodeID": node, "Status": {"State": state}, "DesiredState": "complete", "JobIteration": {"Index": run}}


def test_job_progress_counts_the_current_runs_completions_and_active_tasks_as_docker_does() -> None:
    from shoal.cli.service_progress import job_state

    svc = {"Spec": {"Mode": {"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 4}}}, "JobStatus": {"JobIteration": {"Index": 1}}}
    tasks = [_job_task(0, "complete"), _job_task(1, "running"), _job_task(2, "starting"), _job_task(0, "complete", run=0)]
    p = job_state(svc, tasks)
    assert (p.completed, p.active, p.done) == (1, 2, False)
    assert p.lines() == ["job progress: 1 out of 4 complete", "active tasks: 2 out of 2 tasks"]
    assert [label for label, _st, _err in p.slots] == ["1/4", "2/4", "3/4"]
    done = job_state(svc, [_job_task(s, "complete") for s in range(4)])
    assert (done.done, done.lines()[1]) == (True, "active tasks: 0 out of 0 tasks")


def test_global_job_progress_follows_the_nodes_of_its_first_look() -> None:
    from shoal.cli.service_progress import job_state

    svc = {"Spec": {"Mode": {"GlobalJob": {}}}, "JobStatus": {"JobIteration": {"Index": 0}}}
    first = job_state(svc, [_job_task(0, "running", 0, "n1"), _job_task(0, "complete", 0, "n2")])
    nodes = {label for label, _st, _err in first.slots}
    later = job_state(svc, [_job_task(0, "complete", 0, n) for n in ("n1", "n2")] + [_job_task(0, "running", 0, "n3")], nodes)
    assert (first.total, first.completed, later.total, later.done) == (2, 1, 2, True)


def test_follow_shows_a_jobs_progress_and_ends_with_job_complete(capsys: pytest.CaptureFixture[str]) -> None:
    from shoal.cli.service_progress import follow

    svc = {"ID": "j1", "Spec": {"Name": "job", "Mode": {"ReplicatedJob": {"MaxConcurrent": 1, "TotalCompletions": 2}}},
           "JobStatus": {"JobIteration": {"Index": 0}}}
    follow(ScriptedDaemon(svc, [[_job_task(0, "running", 0)], [_job_task(0, "complete", 0), _job_task(1, "complete", 0)]]), "j1")
    lines = [line.rstrip() for line in capsys.readouterr().out.splitlines()]
    assert [line.split("━")[0].strip() if "━" in line else line.strip() for line in lines] == [
        "job progress: 2 out of 2 complete", "active tasks: 0 out of 0 tasks", "1/2: complete", "2/2: complete", "job complete"]
