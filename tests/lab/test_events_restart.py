"""`docker events` and restart policies through the stock docker CLI and docker-py against a
lab daemon: the events a container, a network and an image produce, their filters and shape;
`--restart` applied by the daemon, its backoff count, stop, and a daemon restart.
"""
from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from tests.docker_client import docker_client
from tests.lab.helpers import running_lab, wait_until

pytestmark = pytest.mark.lab

DOCKER = docker_client()
assert DOCKER is not None, "no docker client: scripts/install.sh links one from /opt/shoal-docker-ref"


@pytest.fixture(scope="module")
def lab():
    with running_lab(hosts=1) as lab:
        yield lab


def docker(lab, *args: str, check: bool = True):
    return lab.exec("h1", [DOCKER, *args], check=check, timeout=120)


def _events(lab, since: float, *filters: str) -> list[dict]:
    args = ["events", "--since", f"{since:.9f}", "--until", f"{time.time():.9f}", "--format", "{{json .}}"]
    for f in filters:
        args += ["--filter", f]
    return [json.loads(line) for line in docker(lab, *args).stdout.splitlines()]


def _inspect(lab, name: str) -> dict:
    return json.loads(docker(lab, "inspect", name).stdout)[0]


# ---- events -------------------------------------------------------------------------

def test_container_lifecycle_events_with_exit_code(lab):
    since = time.time()
    cid = docker(lab, "run", "-d", "--name", "evc", "-l", "tier=db", "busybox", "sh", "-c", "exit 3").stdout.strip()
    wait_until(lambda: _inspect(lab, "evc")["State"]["Status"] == "exited")
    docker(lab, "rm", "evc")
    events = _events(lab, since, "container=evc")
    assert [e["Action"] for e in events] == ["create", "start", "die", "destroy"]
    die = events[2]
    assert die["Type"] == "container" and die["scope"] == "local"
    assert die["Actor"]["ID"] == cid
    assert {k: die["Actor"]["Attributes"][k] for k in ("exitCode", "image", "name", "tier")} == {
        "exitCode": "3", "image": "busybox", "name": "evc", "tier": "db"}
    assert (die["status"], die["id"], die["from"]) == ("die", cid, "busybox")
    assert die["time"] == die["timeNano"] // 10**9


def test_stop_emits_kill_then_sigkill_die_stop(lab):
    docker(lab, "run", "-d", "--name", "evstop", "busybox", "sleep", "3600")
    since = time.time()
    docker(lab, "stop", "-t", "1", "evstop")
    events = _events(lab, since, "container=evstop")
    # sleep as pid 1 ignores SIGTERM: after the timeout SIGKILL, as dockerd 20.10 reports it
    assert [(e["Action"], e["Actor"]["Attributes"].get("signal")) for e in events] == [
        ("kill", "15"), ("kill", "9"), ("die", None), ("stop", None)]
    assert events[2]["Actor"]["Attributes"]["exitCode"] == "137"
    docker(lab, "rm", "evstop")


def test_docker_restart_emits_stop_start_then_restart(lab):
    docker(lab, "run", "-d", "--name", "evrestart", "busybox", "sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait")
    since = time.time()
    docker(lab, "restart", "evrestart")
    events = _events(lab, since, "container=evrestart")
    assert [e["Action"] for e in events] == ["kill", "die", "stop", "start", "restart"]
    docker(lab, "rm", "-f", "evrestart")


def test_exec_events_carry_the_command_and_exec_id(lab):
    docker(lab, "run", "-d", "--name", "evexec", "busybox", "sleep", "3600")
    since = time.time()
    docker(lab, "exec", "evexec", "true")
    events = _events(lab, since, "container=evexec", "event=exec_create", "event=exec_start", "event=exec_die")
    assert [e["Action"] for e in events] == ["exec_create: true ", "exec_start: true ", "exec_die"]
    assert len({e["Actor"]["Attributes"]["execID"] for e in events}) == 1
    assert events[2]["Actor"]["Attributes"]["exitCode"] == "0"
    docker(lab, "rm", "-f", "evexec")


def test_network_events_name_the_network_and_container(lab):
    docker(lab, "run", "-d", "--name", "evnetc", "busybox", "sleep", "3600")
    since = time.time()
    net_id = docker(lab, "network", "create", "evnet").stdout.strip()
    docker(lab, "network", "connect", "evnet", "evnetc")
    docker(lab, "network", "disconnect", "evnet", "evnetc")
    docker(lab, "network", "rm", "evnet")
    events = _events(lab, since, "type=network", "network=evnet")
    assert [e["Action"] for e in events] == ["create", "connect", "disconnect", "destroy"]
    cid = _inspect(lab, "evnetc")["Id"]
    assert events[1]["Actor"] == {"ID": net_id, "Attributes": {"container": cid, "name": "evnet", "type": "bridge"}}
    assert "status" not in events[0]
    docker(lab, "rm", "-f", "evnetc")


def test_image_tag_and_untag_events(lab):
    since = time.time()
    docker(lab, "tag", "busybox", "evimg:v1")
    docker(lab, "rmi", "evimg:v1")
    image_id = json.loads(docker(lab, "image", "inspect", "busybox").stdout)[0]["Id"]
    events = _events(lab, since, "type=image")
    assert [(e["Action"], e["Actor"]["ID"], e["Actor"]["Attributes"]["name"]) for e in events] == [
        ("tag", image_id, "evimg:v1"), ("untag", image_id, image_id)]


def test_events_stream_live_until_the_client_leaves(lab):
    argv = lab.exec_argv("h1", [DOCKER, "events", "--filter", "container=evlive", "--format", "{{.Status}}"])
    watcher = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=lab.host_env("h1"))
    try:
        wait_until(lambda: json.loads(docker(lab, "info", "--format", "{{json .NEventsListener}}").stdout) == 1)
        docker(lab, "run", "--name", "evlive", "busybox", "true")
        lines = [watcher.stdout.readline().strip() for _ in range(4)]
        assert lines == ["create", "attach", "start", "die"]  # docker run attaches before it starts (as dockerd)
    finally:
        watcher.kill()
        watcher.wait()
    wait_until(lambda: json.loads(docker(lab, "info", "--format", "{{json .NEventsListener}}").stdout) == 0)
    docker(lab, "rm", "evlive")


def test_default_events_output_shape(lab):
    since = time.time()
    cid = docker(lab, "create", "--name", "evshape", "busybox", "true").stdout.strip()
    out = docker(lab, "events", "--since", f"{since:.9f}", "--until", f"{time.time():.9f}",
                 "--filter", "container=evshape").stdout
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{9}}(?:Z|[+-]\d\d:\d\d) container create {cid} "
        r"\(image=busybox, name=evshape\)\n", out)
    docker(lab, "rm", "evshape")


def test_unknown_event_filter_is_refused(lab):
    result = docker(lab, "events", "--since", "0", "--until", "1", "--filter", "colour=red", check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == "Error response from daemon: invalid filter 'colour'"


def test_docker_py_reads_past_events_with_filters(lab):
    import docker as docker_py

    client = docker_py.DockerClient(base_url=f"unix://{lab.socket('h1')}", version="auto")
    try:
        since = time.time()
        client.containers.run("busybox", ["true"], name="evpy", detach=False)
        events = list(client.events(since=since, until=time.time() + 0.001, decode=True,
                                    filters={"container": "evpy", "event": ["start", "die"]}))
        assert [(e["Type"], e["Action"]) for e in events] == [("container", "start"), ("container", "die")]
        client.containers.get("evpy").remove()
    finally:
        client.close()


# ---- restart policies ---------------------------------------------------------------

def _starts_within(lab, name: str, seconds: float) -> list[dict]:
    """The start events of `name` in the next `seconds`: the daemon streams until `until`."""
    now = time.time()
    out = docker(lab, "events", "--since", f"{now:.9f}", "--until", f"{now + seconds:.9f}", "--filter",
                 f"container={name}", "--filter", "event=start", "--format", "{{json .}}").stdout
    return [json.loads(line) for line in out.splitlines()]


def test_on_failure_restarts_up_to_its_count(lab):
    since = time.time()
    docker(lab, "run", "-d", "--name", "rsfail", "--restart", "on-failure:2", "busybox", "sh", "-c", "exit 4")

    def settled():
        state = _inspect(lab, "rsfail")
        return state if state["State"]["Status"] == "exited" and state["RestartCount"] == 2 else None

    info = wait_until(settled, timeout=20)
    assert (info["State"]["ExitCode"], info["HostConfig"]["RestartPolicy"]) == (
        4, {"Name": "on-failure", "MaximumRetryCount": 2})
    starts = [e for e in _events(lab, since, "container=rsfail", "event=start")]
    assert len(starts) == 3
    docker(lab, "rm", "rsfail")


def test_on_failure_leaves_a_clean_exit_alone(lab):
    docker(lab, "run", "-d", "--name", "rsclean", "--restart", "on-failure", "busybox", "true")
    wait_until(lambda: _inspect(lab, "rsclean")["State"]["Status"] == "exited")
    assert _inspect(lab, "rsclean")["RestartCount"] == 0
    docker(lab, "rm", "rsclean")


def test_always_restarts_and_docker_stop_ends_it(lab):
    docker(lab, "run", "-d", "--name", "rsalways", "--restart", "always", "busybox", "sh", "-c", "sleep 0.3")
    wait_until(lambda: _inspect(lab, "rsalways")["RestartCount"] >= 2, timeout=20)
    docker(lab, "stop", "-t", "1", "rsalways")
    info = _inspect(lab, "rsalways")
    assert (info["State"]["Status"], info["State"]["Restarting"], info["State"]["Running"]) == ("exited", False, False)
    count = info["RestartCount"]
    assert _starts_within(lab, "rsalways", 1.5) == []  # longer than any pending backoff at this count
    assert (_inspect(lab, "rsalways")["State"]["Status"], _inspect(lab, "rsalways")["RestartCount"]) == ("exited", count)
    docker(lab, "rm", "rsalways")


def test_docker_start_resets_the_restart_count(lab):
    docker(lab, "run", "-d", "--name", "rsreset", "--restart", "on-failure:1", "busybox", "sh", "-c", "exit 1")
    wait_until(lambda: (lambda i: i["State"]["Status"] == "exited" and i["RestartCount"] == 1)(_inspect(lab, "rsreset")),
               timeout=20)
    docker(lab, "start", "rsreset")
    wait_until(lambda: (lambda i: i["State"]["Status"] == "exited" and i["RestartCount"] == 1)(_inspect(lab, "rsreset")),
               timeout=20)
    docker(lab, "rm", "rsreset")


def test_negative_retry_count_is_refused_with_dockers_message(lab):
    result = docker(lab, "run", "-d", "--restart", "on-failure:-1", "busybox", "true", check=False)
    assert result.returncode == 125
    assert "Error response from daemon: invalid restart policy: maximum retry count cannot be negative" in result.stderr


def test_restart_with_rm_is_refused_by_the_cli(lab):
    result = docker(lab, "run", "--rm", "--restart", "always", "busybox", "true", check=False)
    assert result.returncode == 125
    # docker CLI 28's wording (20.10 said "Conflicting options: --restart and --rm")
    assert result.stderr.splitlines()[0] in ("docker: conflicting options: cannot specify both --restart and --rm",
                                             "docker: Conflicting options: --restart and --rm.")


def test_auto_remove_with_a_policy_is_refused_by_the_daemon(lab):
    import docker as docker_py

    client = docker_py.APIClient(base_url=f"unix://{lab.socket('h1')}", version="auto")
    try:
        with pytest.raises(docker_py.errors.APIError) as info:
            client.create_container("busybox", ["true"], host_config=client.create_host_config(
                auto_remove=True, restart_policy={"Name": "always"}))
        assert info.value.status_code == 400
        assert info.value.explanation == "can't create 'AutoRemove' container with restart policy"
    finally:
        client.close()


def _kill_container_process(lab, name: str) -> None:
    pid = _inspect(lab, name)["State"]["Pid"]
    subprocess.run(["kill", "-9", str(pid)], check=True)


def test_daemon_restart_brings_back_always_and_unless_stopped_but_not_a_user_stop(lab):
    for name, policy in (("rbalways", "always"), ("rbunless", "unless-stopped"), ("rbstopped", "unless-stopped"),
                         ("rbno", "no")):
        docker(lab, "run", "-d", "--name", name, "--restart", policy, "busybox", "sleep", "3600")
    docker(lab, "stop", "-t", "0", "rbstopped")
    docker(lab, "run", "-d", "--name", "rbcount", "--restart", "on-failure:1", "busybox", "sh", "-c", "exit 1")
    wait_until(lambda: (lambda i: i["State"]["Status"] == "exited" and i["RestartCount"] == 1)(
        _inspect(lab, "rbcount")), timeout=20)
    lab.stop_daemon("h1", kill9=True)
    try:  # they die while no daemon watches; their shims record the exit
        for name in ("rbalways", "rbunless", "rbno"):
            subprocess.run(["kill", "-9", str(_record_pid(lab, name))], check=True)
    finally:
        lab.start_daemon("h1")
    wait_until(lambda: _inspect(lab, "rbalways")["State"]["Status"] == "running", timeout=20)
    wait_until(lambda: _inspect(lab, "rbunless")["State"]["Status"] == "running", timeout=20)
    assert _inspect(lab, "rbstopped")["State"]["Status"] == "exited"
    assert _inspect(lab, "rbno")["State"]["Status"] == "exited"
    counted = _inspect(lab, "rbcount")  # its retries were spent before: it stays down, its count kept
    assert (counted["State"]["Status"], counted["RestartCount"]) == ("exited", 1)
    for name in ("rbalways", "rbunless", "rbstopped", "rbno", "rbcount"):
        docker(lab, "rm", "-f", name)


def _record_pid(lab, name: str) -> int:
    from shoal.lab import data_dir

    for path in (data_dir(lab.name, "h1") / "engine" / "containers").glob("*.json"):
        record = json.loads(path.read_text())
        if record["name"] == name:
            return record["pid"]
    raise AssertionError(f"no record for {name}")


def test_a_restarting_container_shows_so_and_docker_stop_ends_it(lab):
    docker(lab, "run", "-d", "--name", "rsbackoff", "--restart", "always", "busybox", "sh", "-c", "exit 1")
    # After six quick exits the backoff is 3.2 s: long enough to see the restarting state.
    wait_until(lambda: _inspect(lab, "rsbackoff")["RestartCount"] >= 6, timeout=30)
    info = wait_until(lambda: (i := _inspect(lab, "rsbackoff"))["State"]["Restarting"] and i, timeout=10)
    assert (info["State"]["Status"], info["State"]["Running"], info["State"]["ExitCode"]) == ("restarting", True, 1)
    listed = docker(lab, "ps", "--filter", "status=restarting", "--format", "{{.Names}} {{.Status}}").stdout
    assert re.fullmatch(r"rsbackoff Restarting \(1\) .+ ago\n", listed)
    count = info["RestartCount"]
    docker(lab, "stop", "rsbackoff")
    after = _inspect(lab, "rsbackoff")
    assert (after["State"]["Status"], after["State"]["Restarting"], after["RestartCount"]) == ("exited", False, count)
    assert _starts_within(lab, "rsbackoff", 4.0) == []  # past the pending backoff: it was cancelled
    assert (_inspect(lab, "rsbackoff")["State"]["Status"], _inspect(lab, "rsbackoff")["RestartCount"]) == (
        "exited", count)
    docker(lab, "rm", "rsbackoff")


def test_docker_kill_of_an_always_container_restarts_it(lab):
    docker(lab, "run", "-d", "--name", "rskill", "--restart", "always", "busybox", "sleep", "3600")
    first = _inspect(lab, "rskill")["State"]["Pid"]
    docker(lab, "kill", "rskill")
    info = wait_until(lambda: (i := _inspect(lab, "rskill"))["State"]["Status"] == "running"
                      and i["State"]["Pid"] != first and i, timeout=20)
    assert info["RestartCount"] == 1
    docker(lab, "rm", "-f", "rskill")
