"""Docker ServiceSpec JSON <-> proto: the docker CLI's and docker-py's bodies, stable round trips, task JSON."""

from __future__ import annotations

import pytest

from common.errdefs import InvalidParameter
from manager.orchestrator.tasks import canonical, same_spec
from proto import objects_pb2 as pb
from shoal.api.service_json import service_json, service_spec_from_json, task_json
from tests.unit.services_fixtures import S, service, task

CLI_BODY = {"Name": "web", "Labels": {}, "TaskTemplate": {
    "ContainerSpec": {"Image": "busybox:latest", "Args": ["sleep", "1d"], "Init": False, "DNSConfig": {}},
    "Resources": {"Limits": {}, "Reservations": {"MemoryBytes": 10485760}}, "Placement": {},
    "Networks": [{"Target": "netid"}], "ForceUpdate": 0},
    "Mode": {"Replicated": {"Replicas": 3}},
    "UpdateConfig": {"Parallelism": 1, "FailureAction": "pause", "Monitor": 5000000000, "MaxFailureRatio": 0, "Order": "stop-first"},
    "EndpointSpec": {"Mode": "vip", "Ports": [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]}}


def stored(body: dict) -> pb.ServiceSpec:
    return canonical(service_spec_from_json(body))


def test_cli_body_becomes_the_spec_it_describes() -> None:
    s = stored(CLI_BODY)
    assert (s.annotations.name, s.replicated.replicas, s.task.container.image, list(s.task.container.args)) == (
        "web", 3, "busybox:latest", ["sleep", "1d"])
    assert s.task.resources.reservations.memory_bytes == 10485760
    assert [n.target for n in s.task.networks] == ["netid"]
    assert [(p.target_port, p.published_port, p.publish_mode) for p in s.endpoint.ports] == [(80, 8080, pb.PortConfig.INGRESS)]
    assert (s.update.parallelism, s.update.monitor.ToNanoseconds()) == (1, 5_000_000_000)


def test_spec_sent_back_unchanged_is_the_same_spec() -> None:
    """docker's `service scale` re-sends the Spec it read: no task may look changed (no rolling update)."""
    first = stored(CLI_BODY)
    svc = pb.Service(id="s")
    svc.spec.CopyFrom(first)
    again = stored(service_json(svc)["Spec"])
    assert same_spec(first.task, again.task)
    assert first.SerializeToString(deterministic=True) == again.SerializeToString(deterministic=True)


def test_docker_py_body_lowercase_mode_and_port_defaults() -> None:
    s = stored({"Name": "py", "TaskTemplate": {"ContainerSpec": {"Image": "busybox"}}, "Mode": {"replicated": {"Replicas": 2}},
                "EndpointSpec": {"Ports": [{"TargetPort": 80, "PublishedPort": 8081}]}})
    assert (s.replicated.replicas, s.task.container.image) == (2, "busybox:latest")
    assert [(p.protocol, p.publish_mode) for p in s.endpoint.ports] == [(pb.PortConfig.TCP, pb.PortConfig.INGRESS)]


def test_replicated_without_replicas_is_one_and_global_is_global() -> None:
    assert stored({"Name": "a", "TaskTemplate": {"ContainerSpec": {"Image": "b"}}, "Mode": {"Replicated": {}}}).replicated.replicas == 1
    assert stored({"Name": "a", "TaskTemplate": {"ContainerSpec": {"Image": "b"}}, "Mode": {"Global": {}}}).WhichOneof("mode") == "global"


def test_negative_replicas_are_refused_with_dockers_message() -> None:
    with pytest.raises(InvalidParameter) as e:
        service_spec_from_json({"Name": "a", "TaskTemplate": {"ContainerSpec": {"Image": "b"}}, "Mode": {"Replicated": {"Replicas": -1}}})
    assert e.value.message == "Number of replicas must be non-negative"


def test_unknown_restart_condition_is_refused_naming_it() -> None:
    with pytest.raises(InvalidParameter) as e:
        service_spec_from_json({"Name": "a", "TaskTemplate": {"ContainerSpec": {"Image": "b"}, "RestartPolicy": {"Condition": "sometimes"}}})
    assert e.value.message == "invalid restart condition: 'sometimes'"


def test_replicas_show_in_mode_and_published_ports_in_endpoint_before_allocation() -> None:
    out = service_json(pb.Service(id="x", spec=stored(CLI_BODY)), {"RunningTasks": 1, "DesiredTasks": 3, "CompletedTasks": 0})
    assert out["Spec"]["Mode"] == {"Replicated": {"Replicas": 3}}
    assert out["Endpoint"]["Ports"] == [{"Protocol": "tcp", "TargetPort": 80, "PublishedPort": 8080, "PublishMode": "ingress"}]
    assert out["ServiceStatus"] == {"RunningTasks": 1, "DesiredTasks": 3, "CompletedTasks": 0}
    assert "UpdateStatus" not in out


def test_task_json_has_the_fields_the_cli_reads() -> None:
    t = task(service(), "t1", 2, "n1", state=S.TASK_STATE_ASSIGNED)
    t.status.err = "no suitable node"
    j = task_json(t)
    assert (j["ID"], j["Slot"], j["NodeID"], j["ServiceID"], j["DesiredState"]) == ("t1", 2, "n1", "svc1", "running")
    assert (j["Status"]["State"], j["Status"]["Err"]) == ("assigned", "no suitable node")
    assert j["Spec"]["ContainerSpec"]["Image"] == "busybox"


def test_configs_and_secrets_references_round_trip() -> None:
    refs = {"Configs": [{"File": {"Name": "/etc/x", "UID": "0", "GID": "0", "Mode": 292}, "ConfigID": "c1", "ConfigName": "x"}],
            "Secrets": [{"File": {"Name": "y", "UID": "0", "GID": "0", "Mode": 256}, "SecretID": "s1", "SecretName": "y"}]}
    body = {"Name": "a", "TaskTemplate": {"ContainerSpec": {"Image": "b:1", **refs}}, "Mode": {"Replicated": {"Replicas": 1}}}
    s = stored(body)
    assert [(r.config_id, r.file.name) for r in s.task.container.configs] == [("c1", "/etc/x")]
    assert [(r.secret_id, r.file.mode) for r in s.task.container.secrets] == [("s1", 256)]
    cs = service_json(pb.Service(id="x", spec=s))["Spec"]["TaskTemplate"]["ContainerSpec"]
    assert (cs["Configs"], cs["Secrets"]) == (refs["Configs"], refs["Secrets"])


def _with(path: list[str], value: object) -> dict:
    """CLI_BODY with one more field at path (every key but the last exists)."""
    import copy

    body = copy.deepcopy(CLI_BODY)
    at = body
    for key in path[:-1]:
        at = at[key]
    at[path[-1]] = value
    return body


@pytest.mark.parametrize(("path", "value", "message"), [
    (["TaskTemplate", "ContainerSpec", "Healthcheck"], {"Test": ["CMD", "true"], "Probes": 3},
     "TaskTemplate.ContainerSpec.Healthcheck.Probes yet (got 3)"),
    (["TaskTemplate", "Resources", "Reservations", "Pids"], 5, "TaskTemplate.Resources.Reservations.Pids yet (got 5)"),
    (["TaskTemplate", "Placement", "Preferences"], [{"Pack": {"PackDescriptor": "node.labels.zone"}}],
     'TaskTemplate.Placement.Preferences.Pack yet (got {"PackDescriptor": "node.labels.zone"})'),  # a kind Docker lacks
    (["TaskTemplate", "LogDriver"], {"Name": "syslog"}, 'TaskTemplate.LogDriver.Name yet (got "syslog")'),
    (["Mode"], {"Batch": {}}, "Mode.Batch yet (got {})"),  # an unknown mode even empty: it is the request
])
def test_a_field_shoal_does_not_apply_to_tasks_is_refused_naming_it(path: list[str], value: object, message: str) -> None:
    with pytest.raises(InvalidParameter) as e:
        service_spec_from_json(_with(path, value))
    assert str(e.value) == f"shoal does not support {message}"


@pytest.mark.parametrize(("path", "value"), [
    (["TaskTemplate", "ContainerSpec", "Healthcheck"], {}),  # `service update --health-cmd ""`: the image's check
    (["TaskTemplate", "ContainerSpec", "Healthcheck"], {"Interval": 0, "Retries": 0}),
    (["TaskTemplate", "ContainerSpec", "Isolation"], "default"),
    (["TaskTemplate", "ContainerSpec", "TTY"], False),
    (["TaskTemplate", "Runtime"], "container"),
    (["TaskTemplate", "LogDriver"], {"Name": "json-file"}),
    (["TaskTemplate", "Placement", "Platforms"], [{"Architecture": "amd64", "OS": "linux"}]),
])
def test_a_field_at_its_default_or_what_shoal_does_anyway_is_accepted(path: list[str], value: object) -> None:
    assert stored(_with(path, value)) == stored(CLI_BODY)


def test_the_spec_shoal_returns_is_accepted_back_unchanged() -> None:
    from shoal.api.service_json import service_spec_json

    s = service_spec_from_json(CLI_BODY)
    assert service_spec_from_json(service_spec_json(s)) == s


MOUNTS = [{"Type": "tmpfs", "Target": "/scratch", "TmpfsOptions": {"SizeBytes": 1048576, "Mode": 1023}},
          {"Type": "volume", "Source": "vv", "Target": "/data", "VolumeOptions": {"NoCopy": True, "Labels": {"a": "b"}}},
          {"Type": "bind", "Source": "/srv", "Target": "/host", "ReadOnly": True, "BindOptions": {"Propagation": "rslave"}}]


def test_mount_options_are_kept_and_shown_as_sent() -> None:
    from shoal.api.service_json import service_spec_json

    s = stored(_with(["TaskTemplate", "ContainerSpec", "Mounts"], MOUNTS))
    assert service_spec_json(s)["TaskTemplate"]["ContainerSpec"]["Mounts"] == MOUNTS
    assert stored(service_spec_json(s)) == s


@pytest.mark.parametrize(("mount", "message"), [
    ({"Type": "bind", "Source": "/srv", "Target": "/x", "TmpfsOptions": {"SizeBytes": 1}},
     'invalid mount config for type "bind": field TmpfsOptions must not be specified'),
    ({"Type": "bind", "Source": "/srv", "Target": "/x", "BindOptions": {"Propagation": "sideways"}},
     'invalid mount config: invalid propagation mode "sideways"'),
    ({"Type": "volume", "Source": "v", "Target": "/x", "VolumeOptions": {"DriverConfig": {"Name": "nfs"}}},
     'shoal does not support TaskTemplate.ContainerSpec.Mounts.VolumeOptions.DriverConfig.Name yet (got "nfs")'),
    ({"Type": "tmpfs", "Target": "/x", "TmpfsOptions": {"SizeBytes": -1}},
     "invalid mount config: TmpfsOptions.SizeBytes must not be negative, got -1"),
])
def test_a_bad_or_unapplied_mount_option_is_refused_naming_it(mount: dict, message: str) -> None:
    with pytest.raises(InvalidParameter) as e:
        service_spec_from_json(_with(["TaskTemplate", "ContainerSpec", "Mounts"], [mount]))
    assert str(e.value) == message


OPTIONS = {"StopSignal": "SIGINT", "TTY": True, "OpenStdin": True, "ReadOnly": True, "Init": True,
           "CapabilityAdd": ["CAP_NET_ADMIN"], "CapabilityDrop": ["CAP_CHOWN"], "Hosts": ["10.0.0.1 foo bar"],
           "DNSConfig": {"Nameservers": ["10.0.0.53"], "Search": ["example.org"], "Options": ["ndots:2"]},
           "Sysctls": {"net.core.somaxconn": "1024"}, "Ulimits": [{"Name": "nofile", "Hard": 200, "Soft": 100}]}


def test_container_options_are_kept_and_shown_as_sent() -> None:
    from shoal.api.service_json import service_spec_json

    body = _with(["TaskTemplate", "ContainerSpec"], {**CLI_BODY["TaskTemplate"]["ContainerSpec"], **OPTIONS})
    body["TaskTemplate"]["Resources"]["Limits"] = {"Pids": 50}
    s = stored(body)
    shown = service_spec_json(s)["TaskTemplate"]
    assert {k: shown["ContainerSpec"][k] for k in OPTIONS} == OPTIONS
    assert shown["Resources"]["Limits"] == {"Pids": 50}
    assert stored(service_spec_json(s)) == s


def test_a_hosts_entry_without_a_name_is_refused() -> None:
    with pytest.raises(InvalidParameter) as e:
        service_spec_from_json(_with(["TaskTemplate", "ContainerSpec", "Hosts"], ["10.0.0.1"]))
    assert str(e.value) == 'invalid JSON: Hosts entries are "IP name [alias...]", got "10.0.0.1"'


HEALTH = {"Test": ["CMD-SHELL", "wget -q -O- localhost"], "Interval": 200_000_000, "Timeout": 1_000_000_000,
          "StartPeriod": 5_000_000_000, "StartInterval": 100_000_000, "Retries": 3}


def test_a_health_check_is_kept_and_shown_as_sent() -> None:
    from shoal.api.service_json import service_spec_json

    s = stored(_with(["TaskTemplate", "ContainerSpec", "Healthcheck"], HEALTH))
    h = s.task.container.healthcheck
    assert (list(h.test), h.interval.ToNanoseconds(), h.timeout.ToNanoseconds(), h.start_period.ToNanoseconds(),
            h.start_interval.ToNanoseconds(), h.retries) == (
        ["CMD-SHELL", "wget -q -O- localhost"], 200_000_000, 1_000_000_000, 5_000_000_000, 100_000_000, 3)
    assert service_spec_json(s)["TaskTemplate"]["ContainerSpec"]["Healthcheck"] == HEALTH
    assert stored(service_spec_json(s)) == s


def test_no_healthcheck_is_kept_as_test_none() -> None:
    from shoal.api.service_json import service_spec_json

    s = stored(_with(["TaskTemplate", "ContainerSpec", "Healthcheck"], {"Test": ["NONE"]}))
    assert service_spec_json(s)["TaskTemplate"]["ContainerSpec"]["Healthcheck"] == {"Test": ["NONE"]}


@pytest.mark.parametrize(("health", "message"), [
    ({"Test": "true"}, 'invalid JSON: Test must be a list, got "true"'),
    ({"Interval": "1s"}, 'invalid JSON: Interval must be an integer, got "1s"'),
    ({"Retries": 2**31}, "invalid JSON: Retries must be a 32-bit integer, got 2147483648"),
])
def test_a_malformed_health_check_is_refused_naming_the_member(health: dict, message: str) -> None:
    with pytest.raises(InvalidParameter) as e:
        service_spec_from_json(_with(["TaskTemplate", "ContainerSpec", "Healthcheck"], health))
    assert str(e.value) == message


PREFERENCES = [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}, {"Spread": {"SpreadDescriptor": "engine.labels.rack"}}]


def test_placement_preferences_are_kept_in_order_and_shown_as_docker_shows_them() -> None:
    s = stored(_with(["TaskTemplate", "Placement"], {"Constraints": ["node.role==worker"], "Preferences": PREFERENCES}))
    assert [p.spread.spread_descriptor for p in s.task.placement.preferences] == ["node.labels.zone", "engine.labels.rack"]
    svc = pb.Service(id="s")
    svc.spec.CopyFrom(s)
    assert service_json(svc)["Spec"]["TaskTemplate"]["Placement"] == {"Constraints": ["node.role==worker"],
                                                                     "Preferences": PREFERENCES}
    assert stored(service_json(svc)["Spec"]) == s


def test_a_preference_without_spread_is_dropped_as_moby_does_and_an_empty_descriptor_round_trips() -> None:
    s = stored(_with(["TaskTemplate", "Placement"], {"Preferences": [{}, {"Spread": {"SpreadDescriptor": ""}}]}))
    assert len(s.task.placement.preferences) == 1
    svc = pb.Service(id="s")
    svc.spec.CopyFrom(s)
    shown = service_json(svc)["Spec"]
    assert shown["TaskTemplate"]["Placement"] == {"Preferences": [{"Spread": {"SpreadDescriptor": ""}}]}
    assert stored(shown) == s


@pytest.mark.parametrize(("preferences", "message"), [
    ("node.labels.zone", 'invalid JSON: Preferences must be a list, got "node.labels.zone"'),
    (["spread=node.labels.zone"], 'invalid JSON: Preferences entries must be objects, got "spread=node.labels.zone"'),
    ([{"Spread": "node.labels.zone"}], 'invalid JSON: Spread must be an object, got "node.labels.zone"'),
    ([{"Spread": {"SpreadDescriptor": 7}}], "invalid JSON: SpreadDescriptor must be a string, got 7"),
])
def test_a_malformed_preference_is_refused_naming_the_member(preferences: object, message: str) -> None:
    with pytest.raises(InvalidParameter) as e:
        service_spec_from_json(_with(["TaskTemplate", "Placement"], {"Preferences": preferences}))
    assert str(e.value) == message


def test_groups_and_oom_score_adj_are_kept_and_shown_as_sent() -> None:
    from shoal.api.service_json import service_spec_json

    s = stored(_with(["TaskTemplate", "ContainerSpec"], {"Image": "busybox:latest", "Groups": ["audio", "4242"],
                                                        "OomScoreAdj": -500}))
    shown = service_spec_json(s)["TaskTemplate"]["ContainerSpec"]
    assert (list(s.task.container.groups), s.task.container.oom_score_adj) == (["audio", "4242"], -500)
    assert (shown["Groups"], shown["OomScoreAdj"]) == (["audio", "4242"], -500)
    assert stored(service_spec_json(s)) == s


def test_no_groups_and_an_oom_score_adj_of_0_are_left_out_as_docker_omits_them() -> None:
    from shoal.api.service_json import service_spec_json

    shown = service_spec_json(stored(_with(["TaskTemplate", "ContainerSpec", "OomScoreAdj"], 0)))
    assert {"Groups", "OomScoreAdj"} & set(shown["TaskTemplate"]["ContainerSpec"]) == set()


def test_an_oom_score_adj_out_of_range_is_left_to_the_engine_as_swarmkit_does() -> None:
    assert stored(_with(["TaskTemplate", "ContainerSpec", "OomScoreAdj"], 2000)).task.container.oom_score_adj == 2000


@pytest.mark.parametrize(("key", "value", "message"), [
    ("OomScoreAdj", "5", 'invalid JSON: OomScoreAdj must be an integer, got "5"'),
    ("OomScoreAdj", 2**63, f"invalid JSON: OomScoreAdj must be a 64-bit integer, got {2**63}"),
    ("Groups", [10], "invalid JSON: Groups must be a list of strings, got [10]"),
])
def test_malformed_groups_or_oom_score_adj_are_refused_naming_them(key: str, value: object, message: str) -> None:
    with pytest.raises(InvalidParameter) as e:
        service_spec_from_json(_with(["TaskTemplate", "ContainerSpec", key], value))
    assert str(e.value) == message


# ---- jobs -------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode,concurrent,total", [
    ({"ReplicatedJob": {"MaxConcurrent": 2, "TotalCompletions": 5}}, 2, 5),
    ({"ReplicatedJob": {"TotalCompletions": 5}}, 1, 5),   # moby's defaults: MaxConcurrent 1,
    ({"ReplicatedJob": {"MaxConcurrent": 3}}, 3, 3),      # TotalCompletions = MaxConcurrent,
    ({"ReplicatedJob": {}}, 1, 1),
    ({"ReplicatedJob": {"MaxConcurrent": 0, "TotalCompletions": 0}}, 0, 0),  # a given 0 stays 0
])
def test_a_replicated_job_gets_mobys_defaults_and_round_trips(mode: dict, concurrent: int, total: int) -> None:
    s = stored({**CLI_BODY, "Mode": mode, "UpdateConfig": None})
    assert (s.WhichOneof("mode"), s.replicated_job.max_concurrent, s.replicated_job.total_completions) == (
        "replicated_job", concurrent, total)
    svc = pb.Service(id="s", spec=s)
    back = service_json(svc)["Spec"]["Mode"]
    assert back == {"ReplicatedJob": {"MaxConcurrent": concurrent, "TotalCompletions": total}}
    assert same_spec(stored({**CLI_BODY, "Mode": back, "UpdateConfig": None}).task, s.task)


def test_a_global_job_round_trips_even_empty() -> None:
    s = stored({**CLI_BODY, "Mode": {"GlobalJob": {}}, "UpdateConfig": None})
    assert s.WhichOneof("mode") == "global_job"
    assert service_json(pb.Service(id="s", spec=s))["Spec"]["Mode"] == {"GlobalJob": {}}


@pytest.mark.parametrize("mode,message", [
    ({"ReplicatedJob": {"MaxConcurrent": -1}}, "Maximum concurrent jobs must not be negative"),
    ({"ReplicatedJob": {"TotalCompletions": -2}}, "Total completed jobs must not be negative"),
    ({"ReplicatedJob": {"MaxConcurrent": "2"}}, 'invalid JSON: MaxConcurrent must be an integer, got "2"'),
    ({"GlobalJob": {}, "Replicated": {"Replicas": 1}}, "must specify only one service mode"),
    ({"GlobalJob": {"Nodes": 2}}, "shoal does not support Mode.GlobalJob.Nodes yet (got 2)"),
])
def test_a_bad_job_mode_is_refused_naming_the_value(mode: dict, message: str) -> None:
    with pytest.raises(InvalidParameter) as e:
        service_spec_from_json({**CLI_BODY, "Mode": mode})
    assert e.value.message == message


def test_a_jobs_status_and_its_tasks_iteration_are_shown_as_docker_does() -> None:
    svc = service(replicas=None)
    svc.spec.global_job.SetInParent()
    svc.job_status.job_iteration.index = 2
    svc.job_status.last_execution.FromNanoseconds(1_700_000_000_000_000_000)
    assert service_json(svc)["JobStatus"] == {"JobIteration": {"Index": 2}, "LastExecution": "2023-11-14T22:13:20Z"}
    t = task(svc, "t1", 0, "n1", state=S.TASK_STATE_COMPLETE, desired=S.TASK_STATE_COMPLETE)
    t.job_iteration.index = 2
    assert (task_json(t)["JobIteration"], task_json(t)["DesiredState"]) == ({"Index": 2}, "complete")
    assert "JobStatus" not in service_json(service()) and "JobIteration" not in task_json(task(service(), "t2"))
