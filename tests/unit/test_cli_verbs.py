"""shoal.cli.verbs and shoal.cli.runflags: the pure parts (timestamps, event lines, df rows,
the create body the run flags make)."""
from __future__ import annotations

import time

import pytest

from shoal.cli.format import UsageError
from shoal.cli.runflags import adjust, device, restart_policy, ulimit
from shoal.cli.verbs import df_rows, event_line, timestamp_arg


@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.delenv("TZ")
    time.tzset()


def test_timestamp_arg_durations_seconds_and_dates():
    assert timestamp_arg("", 1000.0) == ""
    assert timestamp_arg("10m", 1000.0) == "400.000000000"
    assert timestamp_arg("1h30s", 10000.0) == "6370.000000000"
    assert timestamp_arg("1700000000.5", 0) == "1700000000.5"
    assert timestamp_arg("2024-01-01T00:00:00Z", 0) == "1704067200.000000000"
    with pytest.raises(UsageError, match=r'^failed to parse value as time or duration: "yesterday"$'):
        timestamp_arg("yesterday", 0)


def test_event_line_is_dockers_default_shape(utc):
    message = {"Type": "container", "Action": "die", "timeNano": 1_704_067_200_000_000_001,
               "Actor": {"ID": "abc", "Attributes": {"name": "x", "exitCode": "1", "image": "busybox"}}}
    assert event_line(message) == (
        "2024-01-01T00:00:00.000000001Z container die abc (exitCode=1, image=busybox, name=x)")


def test_df_rows_count_active_and_reclaimable():
    usage = {"LayersSize": 2000, "Images": [{"Size": 1500, "Containers": 1}, {"Size": 500, "Containers": 0}],
             "Containers": [{"State": "running", "SizeRw": 100}, {"State": "exited", "SizeRw": 300}]}
    assert df_rows(usage) == [
        ["Images", "2", "1", "2kB", "500B (25%)"],
        ["Containers", "2", "1", "400B", "300B (75%)"],
        ["Local Volumes", "0", "0", "0B", "0B"],
        ["Build Cache", "0", "0", "0B", "0B"],
    ]


def test_restart_policy_flag():
    assert restart_policy("always") == {"Name": "always"}
    assert restart_policy("on-failure:3") == {"Name": "on-failure", "MaximumRetryCount": 3}
    with pytest.raises(UsageError, match="no policy provided before colon"):
        restart_policy(":3")
    with pytest.raises(UsageError, match="maximum retry count must be an integer"):
        restart_policy("on-failure:x")


def test_ulimit_and_device_flags():
    assert ulimit("nofile=10:20") == {"Name": "nofile", "Soft": 10, "Hard": 20}
    assert ulimit("nproc=5") == {"Name": "nproc", "Soft": 5, "Hard": 5}
    assert device("/dev/null") == {"PathOnHost": "/dev/null", "PathInContainer": "/dev/null", "CgroupPermissions": "rwm"}
    assert device("/dev/null:/dev/x:r") == {"PathOnHost": "/dev/null", "PathInContainer": "/dev/x", "CgroupPermissions": "r"}


def test_adjust_fills_the_body_as_the_docker_cli_does():
    body = {"HostConfig": {"NetworkMode": "bridge"}}
    adjust({"restart": "unless-stopped", "init": True, "stop_signal": "SIGUSR1", "stop_timeout": 3,
            "add_host": ("a:1.2.3.4",), "dns": ("192.0.2.1",), "sysctl": ("net.core.somaxconn=64",),
            "mac_address": "02:00:00:00:00:01"})(body)
    assert body == {
        "StopSignal": "SIGUSR1", "StopTimeout": 3,
        "HostConfig": {"NetworkMode": "bridge", "RestartPolicy": {"Name": "unless-stopped"}, "Init": True,
                       "ExtraHosts": ["a:1.2.3.4"], "Dns": ["192.0.2.1"], "Sysctls": {"net.core.somaxconn": "64"}},
        "NetworkingConfig": {"EndpointsConfig": {"default": {"MacAddress": "02:00:00:00:00:01"}}},
    }


def test_restart_with_rm_is_refused_by_the_cli():
    with pytest.raises(UsageError, match=r"^conflicting options: cannot specify both --restart and --rm$"):
        adjust({"restart": "always"})({"HostConfig": {"AutoRemove": True}})


def _run_params(argv):
    from shoal.cli.container import run

    return run.make_context("run", list(argv)).params


def test_group_add_and_oom_score_adj_flags_fill_the_body_as_the_docker_cli_does():
    body = {"HostConfig": {}}
    adjust(_run_params(["--group-add", "audio", "--group-add", "4242", "--oom-score-adj", "-500", "busybox"]))(body)
    assert body == {"HostConfig": {"GroupAdd": ["audio", "4242"], "OomScoreAdj": -500}}


def test_without_group_add_and_oom_score_adj_the_body_has_neither():
    body = {"HostConfig": {}}
    adjust(_run_params(["busybox"]))(body)
    assert body == {"HostConfig": {}}


def test_the_fast_path_leaves_group_add_and_oom_score_adj_to_click():
    from shoal.cli.fast import parse_fast

    assert parse_fast(["run", "--group-add", "audio", "busybox", "id"]) is None
    assert parse_fast(["run", "--oom-score-adj=500", "busybox", "id"]) is None
