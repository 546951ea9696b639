"""shoal.engine.health: Docker's health-check rules (moby daemon/health.go), and where the API and
CLI show them (Status suffix, the health filter, the --health-* flags)."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from common.errdefs import InvalidParameter
from shoal.api import convert, params
from shoal.cli.format import UsageError
from shoal.cli.runflags import adjust, healthcheck
from shoal.engine import health
from shoal.engine.helpers import container_matches
from shoal.engine.records import ContainerRecord

S = health.NANOS
MS = 1_000_000


def _probe(**overrides: object) -> health.Probe:
    config = {"Test": ["CMD", "true"], "Retries": 3, "StartPeriod": 0, **overrides}
    probe = health.probe_of(config)
    assert probe is not None
    return probe


def _result(code: int, start_ns: int = 100 * S, output: str = "") -> health.Result:
    return health.Result(start_ns, start_ns + MS, code, output)


# ---- validation (moby's validateHealthCheck) ------------------------------------------

@pytest.mark.parametrize("field", ["Interval", "Timeout", "StartPeriod", "StartInterval"])
@pytest.mark.parametrize("value", [1, MS - 1, -1, -S])
def test_a_duration_below_one_millisecond_is_refused(field: str, value: int) -> None:
    with pytest.raises(InvalidParameter) as info:
        health.validate({"Test": ["CMD", "true"], field: value})
    assert info.value.message == f"{field} in Healthcheck cannot be less than 1ms"


@pytest.mark.parametrize("field", ["Interval", "Timeout", "StartPeriod", "StartInterval"])
def test_a_zero_or_one_millisecond_duration_is_accepted(field: str) -> None:
    health.validate({"Test": ["CMD", "true"], field: 0})
    health.validate({"Test": ["CMD", "true"], field: MS})


def test_negative_retries_are_refused() -> None:
    with pytest.raises(InvalidParameter) as info:
        health.validate({"Test": ["CMD", "true"], "Retries": -1})
    assert info.value.message == "Retries in Healthcheck cannot be negative"


def test_the_create_body_is_refused_with_the_message() -> None:
    with pytest.raises(InvalidParameter) as info:
        params.parse_container_create({"Image": "busybox", "Healthcheck": {"Test": ["CMD", "true"], "Timeout": 5}})
    assert info.value.message == "Timeout in Healthcheck cannot be less than 1ms"


def test_field_names_match_case_insensitively_as_go_decodes_them() -> None:
    with pytest.raises(InvalidParameter) as info:
        health.validate({"test": ["CMD", "true"], "interval": 10})
    assert info.value.message == "Interval in Healthcheck cannot be less than 1ms"


# ---- merge with the image's (moby's daemon/commit.go merge) ---------------------------

IMAGE_CHECK = {"Test": ["CMD-SHELL", "image-check"], "Interval": 7 * S, "Timeout": 3 * S,
               "StartPeriod": 2 * S, "StartInterval": S, "Retries": 4}


def test_no_healthcheck_in_the_create_takes_the_images() -> None:
    assert health.merge(None, IMAGE_CHECK) == IMAGE_CHECK


def test_an_empty_test_takes_the_images_test_and_zero_fields_its_values() -> None:
    assert health.merge({"Test": [], "Interval": S}, IMAGE_CHECK) == {
        "Test": ["CMD-SHELL", "image-check"], "Interval": S, "Timeout": 3 * S,
        "StartPeriod": 2 * S, "StartInterval": S, "Retries": 4,
    }


def test_a_test_of_the_create_wins_over_the_images() -> None:
    merged = health.merge({"Test": ["CMD", "mine"], "Retries": 1}, IMAGE_CHECK)
    assert merged is not None and merged["Test"] == ["CMD", "mine"] and merged["Retries"] == 1


def test_none_in_the_create_disables_the_images_check() -> None:
    merged = health.merge({"Test": ["NONE"]}, IMAGE_CHECK)
    assert merged is not None and merged["Test"] == ["NONE"]
    assert health.probe_of(merged) is None


def test_neither_create_nor_image_gives_no_healthcheck() -> None:
    assert health.merge(None, None) is None


def test_the_create_alone_is_filled_with_zero_fields() -> None:
    assert health.merge({"Test": ["CMD", "true"]}, None) == {
        "Test": ["CMD", "true"], "Interval": 0, "Timeout": 0, "StartPeriod": 0, "StartInterval": 0, "Retries": 0,
    }


# ---- the probe ------------------------------------------------------------------------

def test_cmd_runs_its_argv() -> None:
    assert _probe(Test=["CMD", "cat", "/ready"]).argv == ("cat", "/ready")


def test_cmd_shell_runs_with_bin_sh() -> None:
    assert _probe(Test=["CMD-SHELL", "test -f /ready"]).argv == ("/bin/sh", "-c", "test -f /ready")


def test_cmd_shell_runs_with_the_containers_shell_when_it_has_one() -> None:
    probe = health.probe_of({"Test": ["CMD-SHELL", "x"]}, shell=["/bin/ash", "-ec"])
    assert probe is not None and probe.argv == ("/bin/ash", "-ec", "x")


@pytest.mark.parametrize("test", [[], ["NONE"], ["BOGUS", "x"], ["CMD"]])
def test_no_probe_runs_for(test: list[str]) -> None:
    assert health.probe_of({"Test": test}) is None


def test_defaults_apply_to_zero_fields() -> None:
    probe = _probe(Retries=0)
    assert (probe.interval, probe.timeout, probe.start_period, probe.start_interval, probe.retries) == (
        30.0, 30.0, 0.0, 5.0, 3)


# ---- results (moby's handleProbeResult) -------------------------------------------------

def test_a_passing_probe_makes_it_healthy_and_clears_the_streak() -> None:
    after = health.apply_result({"Status": "starting", "FailingStreak": 2, "Log": []}, _result(0), _probe(), 0)
    assert (after["Status"], after["FailingStreak"]) == ("healthy", 0)


def test_failures_below_retries_leave_the_status() -> None:
    after = health.apply_result({"Status": "healthy", "FailingStreak": 1, "Log": []}, _result(1), _probe(), 0)
    assert (after["Status"], after["FailingStreak"]) == ("healthy", 2)


def test_the_failure_that_reaches_retries_makes_it_unhealthy() -> None:
    after = health.apply_result({"Status": "healthy", "FailingStreak": 2, "Log": []}, _result(1), _probe(), 0)
    assert (after["Status"], after["FailingStreak"]) == ("unhealthy", 3)


def test_a_failure_within_the_start_period_does_not_count_while_starting() -> None:
    started = 100 * S
    after = health.apply_result(health.initial(), _result(1, start_ns=started + 9 * S),
                                _probe(StartPeriod=10 * S, Retries=1), started)
    assert (after["Status"], after["FailingStreak"]) == ("starting", 0)


def test_a_failure_after_the_start_period_counts() -> None:
    started = 100 * S
    after = health.apply_result(health.initial(), _result(1, start_ns=started + 10 * S),
                                _probe(StartPeriod=10 * S, Retries=1), started)
    assert (after["Status"], after["FailingStreak"]) == ("unhealthy", 1)


def test_a_failure_within_the_start_period_counts_once_it_was_healthy() -> None:
    started = 100 * S
    after = health.apply_result({"Status": "healthy", "FailingStreak": 0, "Log": []},
                                _result(1, start_ns=started + S), _probe(StartPeriod=10 * S, Retries=1), started)
    assert (after["Status"], after["FailingStreak"]) == ("unhealthy", 1)


def test_the_log_keeps_the_last_five_results() -> None:
    state = health.initial()
    for code in range(7):
        state = health.apply_result(state, _result(code, start_ns=(code + 1) * S), _probe(Retries=100), 0)
    assert [entry["ExitCode"] for entry in state["Log"]] == [2, 3, 4, 5, 6]


def test_a_log_entry_is_dockers_json() -> None:
    entry = health.Result(1_700_000_000 * S + 5, 1_700_000_001 * S, 1, "no\n").to_json()
    assert entry == {"Start": "2023-11-14T22:13:20.000000005Z", "End": "2023-11-14T22:13:21.000000000Z",
                     "ExitCode": 1, "Output": "no\n"}


def test_a_restart_begins_at_starting_and_keeps_the_log() -> None:
    before = {"Status": "unhealthy", "FailingStreak": 4, "Log": [{"ExitCode": 1}]}
    assert health.restarted(before) == {"Status": "starting", "FailingStreak": 0, "Log": [{"ExitCode": 1}]}


# ---- intervals --------------------------------------------------------------------------

def test_the_interval_applies_without_a_start_period() -> None:
    assert health.next_wait(_probe(Interval=2 * S, StartInterval=S), "starting", 0.0) == 2.0


def test_the_start_interval_applies_while_starting_within_the_start_period() -> None:
    assert health.next_wait(_probe(Interval=30 * S, StartInterval=S, StartPeriod=60 * S), "starting", 5.0) == 1.0


def test_the_wait_is_cut_to_the_end_of_the_start_period() -> None:
    probe = _probe(Interval=30 * S, StartInterval=5 * S, StartPeriod=10 * S)
    assert health.next_wait(probe, "starting", 8.0) == pytest.approx(2.0)


def test_the_interval_applies_within_the_start_period_once_healthy() -> None:
    assert health.next_wait(_probe(Interval=3 * S, StartInterval=S, StartPeriod=60 * S), "healthy", 5.0) == 3.0


def test_the_interval_applies_after_the_start_period() -> None:
    assert health.next_wait(_probe(Interval=3 * S, StartInterval=S, StartPeriod=10 * S), "starting", 11.0) == 3.0


# ---- output -----------------------------------------------------------------------------

def test_output_up_to_4096_bytes_is_kept_whole() -> None:
    assert health.limited_output(b"x" * 4096) == "x" * 4096


def test_longer_output_is_cut_at_4096_bytes_with_dots() -> None:
    assert health.limited_output(b"x" * 5000) == "x" * 4096 + "..."


def test_the_timeout_message_names_the_timeout_in_gos_words() -> None:
    assert health.timeout_output(S, "") == "Health check exceeded timeout (1s)"


def test_the_timeout_message_carries_the_output_so_far() -> None:
    assert health.timeout_output(500 * MS, "partial") == "Health check exceeded timeout (500ms): partial"


@pytest.mark.parametrize(("ns", "text"), [
    (0, "0s"), (S, "1s"), (30 * S, "30s"), (500 * MS, "500ms"), (90 * S, "1m30s"), (60 * S, "1m0s"),
    (3600 * S, "1h0m0s"), (1500 * MS, "1.5s"), (1_500_000, "1.5ms"), (2_000, "2µs"), (7, "7ns"),
])
def test_go_duration_text(ns: int, text: str) -> None:
    assert health.go_duration(ns) == text


# ---- API: Status suffix, inspect, the health filter ------------------------------------

def _container(health_state: dict | None, state: str = "running", paused: bool = False) -> ContainerRecord:
    return ContainerRecord(id="a" * 64, name="c", image="busybox", image_id="sha256:x", created="",
                           state=state, paused=paused, started_at="2026-01-01T00:00:00.000000000Z",
                           health=health_state)


NOW = datetime(2026, 1, 1, 0, 0, 3, tzinfo=timezone.utc)


@pytest.mark.parametrize(("status", "text"), [
    ("starting", "Up 3 seconds (health: starting)"),
    ("healthy", "Up 3 seconds (healthy)"),
    ("unhealthy", "Up 3 seconds (unhealthy)"),
])
def test_ps_status_has_dockers_health_suffix(status: str, text: str) -> None:
    c = _container({"Status": status, "FailingStreak": 0, "Log": []})
    assert convert.container_status(c, NOW) == text


def test_ps_status_of_a_container_without_a_check_has_no_suffix() -> None:
    assert convert.container_status(_container(None), NOW) == "Up 3 seconds"


def test_a_paused_container_shows_paused_not_its_health() -> None:
    c = _container({"Status": "healthy", "FailingStreak": 0, "Log": []}, paused=True)
    assert convert.container_status(c, NOW) == "Up 3 seconds (Paused)"


def test_inspect_shows_state_health() -> None:
    state = {"Status": "healthy", "FailingStreak": 0, "Log": []}
    assert convert.container_inspect(_container(state), {}, "/etc")["State"]["Health"] == state


def test_inspect_has_no_state_health_without_a_check() -> None:
    assert "Health" not in convert.container_inspect(_container(None), {}, "/etc")["State"]


@pytest.mark.parametrize(("value", "health_state", "expected"), [
    ("healthy", {"Status": "healthy"}, True),
    ("healthy", {"Status": "starting"}, False),
    ("none", None, True),
    ("none", {"Status": "unhealthy"}, False),
])
def test_the_health_filter_matches_the_status(value: str, health_state: dict | None, expected: bool) -> None:
    assert container_matches(_container(health_state), {"health": [value]}, None) is expected  # type: ignore[arg-type]


def test_an_unknown_health_filter_value_is_refused_with_dockers_message() -> None:
    with pytest.raises(InvalidParameter) as info:
        health.check_filter(["sick"])
    assert info.value.message == "Unrecognised filter value for health: sick"


# ---- CLI: the --health-* flags (docker CLI's opts.parse) --------------------------------

FLAGS = {"health_cmd": "", "health_interval": "0s", "health_timeout": "0s", "health_start_period": "0s",
         "health_start_interval": "0s", "health_retries": 0, "no_healthcheck": False}


def test_no_health_flag_sends_no_healthcheck() -> None:
    body: dict = {}
    adjust(FLAGS)(body)
    assert "Healthcheck" not in body


def test_health_cmd_is_a_cmd_shell_test_with_durations_in_nanoseconds() -> None:
    flags = {**FLAGS, "health_cmd": "test -f /ready", "health_interval": "100ms", "health_timeout": "1m30s",
             "health_start_period": "2s", "health_start_interval": "50ms", "health_retries": 2}
    assert healthcheck(flags) == {"Test": ["CMD-SHELL", "test -f /ready"], "Interval": 100 * MS,
                                  "Timeout": 90 * S, "StartPeriod": 2 * S, "StartInterval": 50 * MS, "Retries": 2}


def test_a_health_flag_without_a_command_keeps_the_images_test() -> None:
    assert healthcheck({**FLAGS, "health_retries": 5}) == {
        "Test": None, "Interval": 0, "Timeout": 0, "StartPeriod": 0, "StartInterval": 0, "Retries": 5}


def test_no_healthcheck_is_test_none() -> None:
    assert healthcheck({**FLAGS, "no_healthcheck": True}) == {"Test": ["NONE"]}


def test_no_healthcheck_conflicts_with_health_flags() -> None:
    with pytest.raises(UsageError, match="^--no-healthcheck conflicts with --health-\\* options$"):
        healthcheck({**FLAGS, "no_healthcheck": True, "health_cmd": "true"})


def test_a_negative_health_retries_is_refused_by_the_cli() -> None:
    with pytest.raises(UsageError, match="^--health-retries cannot be negative$"):
        healthcheck({**FLAGS, "health_retries": -1})


def test_a_bad_health_duration_is_refused_with_gos_words() -> None:
    with pytest.raises(UsageError, match='invalid argument "soon" for "--health-interval" flag'):
        healthcheck({**FLAGS, "health_interval": "soon"})


def test_a_negative_health_duration_is_refused_by_the_cli() -> None:
    with pytest.raises(UsageError, match="^--health-start-period cannot be negative$"):
        healthcheck({**FLAGS, "health_start_period": "-1s"})


# ---- the record ----------------------------------------------------------------------------

@pytest.mark.parametrize(("check", "state"), [
    (None, None),
    ({"Test": ["CMD", "true"], "Interval": 0, "Timeout": 0, "StartPeriod": 0, "StartInterval": 0, "Retries": 0},
     {"Status": "healthy", "FailingStreak": 0, "Log": [{"ExitCode": 0}]}),
])
def test_a_container_record_keeps_its_check_and_health_across_a_save(check: dict | None, state: dict | None) -> None:
    import json

    from shoal.engine.records import container_from_dict, to_dict

    record = ContainerRecord(id="a" * 64, name="c", image="busybox", image_id="sha256:x", created="",
                             healthcheck=check, health=state)
    loaded = container_from_dict(json.loads(json.dumps(to_dict(record))))
    assert (loaded.healthcheck, loaded.health) == (check, state)
