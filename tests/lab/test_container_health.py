"""Container health checks on a real daemon (Docker's daemon/health.go): probes run as execs in
the container, State.Health, the ps Status suffix, the health filter, health_status events, the
timeout that kills the probe inside the container, the start period, an image's HEALTHCHECK and
--no-healthcheck, and no probe after a stop. Through the stock docker CLI, raw API bodies and shoal's CLI.

Intervals are 100-300 ms; times are only ever generous deadlines for waiting.
"""
from __future__ import annotations

import hashlib
import io
import json
import tarfile
import time
import urllib.parse

import pytest

from agent.images import busybox
from tests.docker_client import docker_client
from tests.lab.helpers import running_lab, shoal, wait_until
from tests.lab.test_docker_clients import request

pytestmark = pytest.mark.lab

DOCKER = docker_client()
assert DOCKER is not None, "no docker client: scripts/install.sh links one from /opt/shoal-docker-ref"
MS = 1_000_000
IMAGE_WITH_CHECK = "shoal-health:latest"


@pytest.fixture(scope="module")
def lab():
    with running_lab(hosts=1) as lab:
        _load_image_with_check(lab)
        yield lab


def docker(lab, *args: str, check: bool = True):
    return lab.exec("h1", [DOCKER, *args], check=check, timeout=120)


def api(lab, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    data = json.dumps(body).encode() if body is not None else None
    response, raw = request(lab, method, path, data, {"Content-Type": "application/json"} if data else None)
    return response.status, json.loads(raw) if raw.strip() else None


def create(lab, name: str, healthcheck: dict | None, image: str = "busybox", cmd: list[str] | None = None) -> int:
    body: dict = {"Image": image, "Cmd": cmd or ["sleep", "3600"]}
    if healthcheck is not None:
        body["Healthcheck"] = healthcheck
    status, _ = api(lab, "POST", f"/v1.50/containers/create?name={name}", body)
    return status


def health(lab, name: str) -> dict | None:
    return api(lab, "GET", f"/containers/{name}/json")[1]["State"].get("Health")  # type: ignore[index]


def wait_health(lab, name: str, predicate, timeout: float = 30.0) -> dict:
    def current() -> dict | None:
        state = health(lab, name)
        return state if state is not None and predicate(state) else None
    return wait_until(current, timeout=timeout, interval=0.1)


def actions(lab, name: str) -> list[str]:
    """The container's events so far, in order (GET /events with an until: it returns)."""
    filters = urllib.parse.quote(json.dumps({"container": [name]}))
    response, raw = request(lab, "GET", f"/events?since=0&until={time.time():.9f}&filters={filters}")
    assert response.status == 200
    return [json.loads(line)["Action"] for line in raw.decode().splitlines() if line.strip()]


def names_with_health(lab, value: str) -> list[str]:
    filters = urllib.parse.quote(json.dumps({"health": [value]}))
    return sorted(c["Names"][0].lstrip("/") for c in api(lab, "GET", f"/containers/json?all=1&filters={filters}")[1])


def _load_image_with_check(lab) -> None:
    """busybox with a HEALTHCHECK in its config (as a Dockerfile's would be), loaded as a docker save tar."""
    layer = busybox.build_layer(busybox.find_busybox())
    layer_hex = hashlib.sha256(layer).hexdigest()
    config = json.dumps({
        "architecture": busybox.host_architecture(), "os": "linux", "created": busybox.CREATED,
        "config": {"Env": [busybox.PATH_ENV], "Cmd": ["sleep", "3600"],
                   "Healthcheck": {"Test": ["CMD-SHELL", "echo image-check"], "Interval": 100 * MS, "Retries": 2}},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + layer_hex]},
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = [{"Config": config_name, "RepoTags": [IMAGE_WITH_CHECK], "Layers": [f"{layer_hex}/layer.tar"]}]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in ((config_name, config), (f"{layer_hex}/layer.tar", layer),
                           ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    response, raw = request(lab, "POST", "/images/load?quiet=1", buf.getvalue(), {"Content-Type": "application/x-tar"})
    assert response.status == 200, raw


# ---- healthy, unhealthy ---------------------------------------------------------------

def test_a_passing_check_makes_the_container_healthy(lab):
    docker(lab, "run", "-d", "--name", "hc-ok", "--health-cmd", "echo fine", "--health-interval", "100ms",
           "busybox", "sleep", "3600")
    state = wait_health(lab, "hc-ok", lambda h: h["Status"] == "healthy")
    assert state["FailingStreak"] == 0
    assert state["Log"][-1]["ExitCode"] == 0 and state["Log"][-1]["Output"] == "fine\n"
    assert docker(lab, "ps", "--filter", "name=hc-ok", "--format", "{{.Status}}").stdout.strip().endswith("(healthy)")
    assert "hc-ok" in names_with_health(lab, "healthy")
    assert "hc-ok" not in names_with_health(lab, "unhealthy")
    seen = actions(lab, "hc-ok")
    assert "health_status: healthy" in seen
    assert "exec_create: /bin/sh -c echo fine" in seen and "exec_start: /bin/sh -c echo fine" in seen
    assert "exec_die" in seen
    docker(lab, "rm", "-f", "hc-ok")


def test_a_container_without_a_check_has_no_health(lab):
    docker(lab, "run", "-d", "--name", "hc-none", "busybox", "sleep", "3600")
    assert health(lab, "hc-none") is None
    assert "hc-none" in names_with_health(lab, "none")
    status = docker(lab, "ps", "--filter", "name=hc-none", "--format", "{{.Status}}").stdout.strip()
    assert status.startswith("Up ") and "(" not in status
    docker(lab, "rm", "-f", "hc-none")


def test_failing_checks_make_it_unhealthy_after_retries_and_it_keeps_running(lab):
    docker(lab, "run", "-d", "--name", "hc-bad", "--health-cmd", "test -f /tmp/ready", "--health-interval", "100ms",
           "--health-retries", "2", "busybox", "sh", "-c", "touch /tmp/ready; exec sleep 3600")
    wait_health(lab, "hc-bad", lambda h: h["Status"] == "healthy")
    docker(lab, "exec", "hc-bad", "rm", "/tmp/ready")
    state = wait_health(lab, "hc-bad", lambda h: h["Status"] == "unhealthy")
    assert state["FailingStreak"] == 2
    assert state["Log"][-1]["ExitCode"] == 1
    assert api(lab, "GET", "/containers/hc-bad/json")[1]["State"]["Running"] is True  # type: ignore[index]
    assert docker(lab, "ps", "--filter", "name=hc-bad", "--format", "{{.Status}}").stdout.strip().endswith("(unhealthy)")
    assert "hc-bad" in names_with_health(lab, "unhealthy")
    assert "health_status: unhealthy" in actions(lab, "hc-bad")
    docker(lab, "exec", "hc-bad", "touch", "/tmp/ready")  # and back
    wait_health(lab, "hc-bad", lambda h: h["Status"] == "healthy")
    docker(lab, "rm", "-f", "hc-bad")


# ---- timeout ----------------------------------------------------------------------------

def _processes(lab, name: str) -> list[str]:
    out = docker(lab, "exec", name, "ps", "-o", "pid,args").stdout
    return [line.strip() for line in out.splitlines()[1:]]


def test_a_probe_past_its_timeout_is_killed_inside_the_container(lab):
    assert create(lab, "hc-slow", {"Test": ["CMD", "sleep", "7"], "Interval": 200 * MS, "Timeout": 300 * MS,
                                   "Retries": 1}) == 201
    docker(lab, "start", "hc-slow")
    state = wait_health(lab, "hc-slow", lambda h: len(h["Log"]) >= 3)
    assert state["Status"] == "unhealthy"
    for entry in state["Log"]:
        assert (entry["ExitCode"], entry["Output"]) == (-1, "Health check exceeded timeout (300ms)")
    # Each timed-out probe was killed: at most the one in flight is left, not one per probe.
    assert len([p for p in _processes(lab, "hc-slow") if "sleep 7" in p]) <= 1
    docker(lab, "rm", "-f", "hc-slow")


def test_the_timeout_message_carries_the_output_so_far(lab):
    assert create(lab, "hc-slow2", {"Test": ["CMD-SHELL", "echo started; sleep 7"], "Interval": 200 * MS,
                                    "Timeout": 500 * MS, "Retries": 1}) == 201
    docker(lab, "start", "hc-slow2")
    state = wait_health(lab, "hc-slow2", lambda h: len(h["Log"]) >= 1)
    assert state["Log"][0]["Output"] == "Health check exceeded timeout (500ms): started\n"
    wait_health(lab, "hc-slow2", lambda h: len(h["Log"]) >= 2)
    assert len([p for p in _processes(lab, "hc-slow2") if "sleep 7" in p]) <= 2  # sh and its sleep, in flight
    docker(lab, "rm", "-f", "hc-slow2")


def test_a_probe_that_cannot_start_fails_with_the_error(lab):
    assert create(lab, "hc-nocmd", {"Test": ["CMD", "/no/such/probe"], "Interval": 100 * MS, "Retries": 1}) == 201
    docker(lab, "start", "hc-nocmd")
    state = wait_health(lab, "hc-nocmd", lambda h: h["Status"] == "unhealthy")
    assert state["Log"][-1]["ExitCode"] == -1
    assert "/no/such/probe" in state["Log"][-1]["Output"]
    docker(lab, "rm", "-f", "hc-nocmd")


# ---- start period ----------------------------------------------------------------------

def test_failures_within_the_start_period_do_not_count(lab):
    docker(lab, "run", "-d", "--name", "hc-start", "--health-cmd", "false", "--health-start-period", "10m",
           "--health-start-interval", "100ms", "--health-interval", "100ms", "--health-retries", "1",
           "busybox", "sleep", "3600")
    state = wait_health(lab, "hc-start", lambda h: len(h["Log"]) >= 3)
    assert (state["Status"], state["FailingStreak"]) == ("starting", 0)
    assert docker(lab, "ps", "--filter", "name=hc-start", "--format", "{{.Status}}").stdout.strip().endswith(
        "(health: starting)")
    assert "hc-start" in names_with_health(lab, "starting")
    docker(lab, "rm", "-f", "hc-start")


# ---- the image's check ------------------------------------------------------------------

def test_the_images_check_runs_and_create_fields_merge_with_it(lab):
    docker(lab, "run", "-d", "--name", "hc-image", "--health-retries", "5", IMAGE_WITH_CHECK)
    config = json.loads(docker(lab, "inspect", "hc-image").stdout)[0]["Config"]["Healthcheck"]
    assert config == {"Test": ["CMD-SHELL", "echo image-check"], "Interval": 100 * MS, "Retries": 5}  # zeros omitted
    state = wait_health(lab, "hc-image", lambda h: h["Status"] == "healthy")
    assert state["Log"][-1]["Output"] == "image-check\n"
    docker(lab, "rm", "-f", "hc-image")


def test_no_healthcheck_disables_the_images_check(lab):
    docker(lab, "run", "-d", "--name", "hc-off", "--no-healthcheck", IMAGE_WITH_CHECK)
    inspected = json.loads(docker(lab, "inspect", "hc-off").stdout)[0]
    # moby's merge keeps the image's non-zero fields beside the user's Test ["NONE"]; nothing runs
    assert inspected["Config"]["Healthcheck"] == {"Test": ["NONE"], "Interval": 100 * MS, "Retries": 2}
    assert "Health" not in inspected["State"]
    assert "exec_create" not in " ".join(actions(lab, "hc-off"))
    docker(lab, "rm", "-f", "hc-off")


# ---- stop ---------------------------------------------------------------------------------

def test_no_probe_runs_after_a_stop(lab):
    docker(lab, "run", "-d", "--name", "hc-stop", "--health-cmd", "true", "--health-interval", "100ms",
           "busybox", "sleep", "3600")
    wait_health(lab, "hc-stop", lambda h: h["Status"] == "healthy")
    docker(lab, "stop", "-t", "0", "hc-stop")
    before = health(lab, "hc-stop")
    time.sleep(1.0)  # ten intervals: a monitor left running would have probed meanwhile
    assert health(lab, "hc-stop") == before
    seen = actions(lab, "hc-stop")
    assert not any(a.startswith("exec_") for a in seen[seen.index("die"):])
    docker(lab, "start", "hc-stop")  # a start checks again, from "starting"
    wait_health(lab, "hc-stop", lambda h: h["Status"] == "healthy" and h["Log"][-1]["Start"] > before["Log"][-1]["Start"])
    docker(lab, "rm", "-f", "hc-stop")


# ---- bad input, Docker's words ------------------------------------------------------------

@pytest.mark.parametrize(("check", "message"), [
    ({"Test": ["CMD", "true"], "Interval": 5}, "Interval in Healthcheck cannot be less than 1ms"),
    ({"Test": ["CMD", "true"], "Timeout": -1}, "Timeout in Healthcheck cannot be less than 1ms"),
    ({"Test": ["CMD", "true"], "StartPeriod": 999}, "StartPeriod in Healthcheck cannot be less than 1ms"),
    ({"Test": ["CMD", "true"], "StartInterval": 1}, "StartInterval in Healthcheck cannot be less than 1ms"),
    ({"Test": ["CMD", "true"], "Retries": -1}, "Retries in Healthcheck cannot be negative"),
])
def test_a_bad_healthcheck_is_refused_and_nothing_is_created(lab, check, message):
    status, body = api(lab, "POST", "/v1.50/containers/create?name=hc-refused", {"Image": "busybox", "Healthcheck": check})
    assert (status, body) == (400, {"message": message})
    assert api(lab, "GET", "/containers/hc-refused/json")[0] == 404


def test_an_unknown_health_filter_value_is_refused(lab):
    filters = urllib.parse.quote(json.dumps({"health": ["sick"]}))
    assert api(lab, "GET", f"/containers/json?filters={filters}") == (
        400, {"message": "Unrecognised filter value for health: sick"})


# ---- shoal's CLI --------------------------------------------------------------------------

def test_shoal_run_health_flags_and_ps_suffix(lab):
    shoal(lab, "run", "-d", "--name", "hc-shoal", "--health-cmd", "true", "--health-interval", "100ms",
          "busybox", "sleep", "3600")
    wait_health(lab, "hc-shoal", lambda h: h["Status"] == "healthy")
    line = next(l for l in shoal(lab, "ps").stdout.splitlines() if l.endswith("hc-shoal"))
    assert "(healthy)" in line
    shoal(lab, "rm", "-f", "hc-shoal")


def test_shoal_run_no_healthcheck_conflicts_with_health_flags(lab):
    result = shoal(lab, "run", "-d", "--no-healthcheck", "--health-cmd", "true", "busybox", check=False)
    assert result.returncode == 125
    assert "--no-healthcheck conflicts with --health-* options" in result.stderr


# ---- daemon restart, pause ----------------------------------------------------------------

def test_a_restarted_daemon_checks_a_running_container_again_from_starting(lab):
    docker(lab, "run", "-d", "--name", "hc-restore", "--health-cmd", "test -f /tmp/ready", "--health-interval",
           "100ms", "--health-retries", "1", "busybox", "sh", "-c", "touch /tmp/ready; exec sleep 3600")
    docker(lab, "run", "-d", "--name", "hc-plain", "busybox", "sleep", "3600")
    wait_health(lab, "hc-restore", lambda h: h["Status"] == "healthy")
    lab.restart_daemon("h1")
    after = health(lab, "hc-restore")
    assert after is not None and after["Status"] in ("starting", "healthy")
    assert api(lab, "GET", "/containers/hc-plain/json")[1]["State"]["Running"] is True  # type: ignore[index]
    assert health(lab, "hc-plain") is None
    docker(lab, "exec", "hc-restore", "rm", "/tmp/ready")  # the new daemon's monitor sees it
    wait_health(lab, "hc-restore", lambda h: h["Status"] == "unhealthy")
    docker(lab, "rm", "-f", "hc-restore", "hc-plain")


def test_no_probe_runs_while_paused(lab):
    docker(lab, "run", "-d", "--name", "hc-pause", "--health-cmd", "true", "--health-interval", "100ms",
           "busybox", "sleep", "3600")
    wait_health(lab, "hc-pause", lambda h: h["Status"] == "healthy")
    docker(lab, "pause", "hc-pause")
    time.sleep(0.3)  # a probe that had begun ends
    before = health(lab, "hc-pause")
    time.sleep(1.0)  # ten intervals
    assert health(lab, "hc-pause") == before
    docker(lab, "unpause", "hc-pause")
    wait_health(lab, "hc-pause", lambda h: h["Log"][-1]["Start"] > before["Log"][-1]["Start"])
    docker(lab, "rm", "-f", "hc-pause")
