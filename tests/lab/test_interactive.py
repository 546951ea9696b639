"""The stock docker CLI under a pseudo-terminal (and docker-py) against a lab daemon: TTY and
stdin for run/exec/attach, detach keys, resize, several attached clients, a daemon kill -9
under an attached client, and the json-file logs (issue 9 items 1 and 2).

The first test is the networking guide's walk-through as a person types it."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.docker_client import docker_client
from tests.lab.helpers import running_lab, wait_until
from tests.lab.ptyterm import PtyProgram

pytestmark = pytest.mark.lab

DOCKER = docker_client()
assert DOCKER is not None, "no docker client: scripts/install.sh links one from /opt/shoal-docker-ref"
PROMPT = rb"/ # "
REDRAWN = rb"\r/ # \x1b\[J"  # busybox's shell redraws its prompt when the terminal is resized
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lab():
    with running_lab(hosts=1) as lab:
        yield lab


def docker(lab, *args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DOCKER, *args], env=lab.host_env("h1"), capture_output=True, text=True,
                          check=check, timeout=120, input=input)


def terminal(lab, *args: str, rows: int = 30, cols: int = 100) -> PtyProgram:
    return PtyProgram([DOCKER, *args], env=lab.host_env("h1"), rows=rows, cols=cols)


def detach(term: PtyProgram, keys: bytes = b"\x10\x11") -> None:
    """The detach keys: the CLI says so and exits 1 (its status for a detach, as against dockerd)."""
    term.send(keys)
    term.expect(rb"read escape sequence")
    assert term.wait() == 1


def running_names(lab) -> list[str]:
    return docker(lab, "ps", "--format", "{{.Names}}").stdout.split()


def test_guide_walk_through_attach_ifconfig_ping_hosts_and_detach(lab) -> None:
    docker(lab, "run", "-itd", "--name=container1", "busybox")
    docker(lab, "run", "-itd", "--name=container2", "busybox")
    bridge = json.loads(docker(lab, "network", "inspect", "bridge").stdout)[0]
    assert sorted(c["Name"] for c in bridge["Containers"].values()) == ["container1", "container2"]
    term = terminal(lab, "attach", "container1")
    try:
        term.send(b"\r")
        term.expect(PROMPT)
        term.send(b"ifconfig\r")
        term.expect(rb"inet addr:172\.17\.0\.2 ")
        term.expect(PROMPT)
        term.send(b"ping -w3 172.17.0.3\r")
        term.expect(rb" 0% packet loss", timeout=20)
        term.expect(PROMPT)
        term.send(b"cat /etc/hosts\r")
        term.expect(rb"172\.17\.0\.2\s+[0-9a-f]{12}")
        detach(term)  # CTRL-p CTRL-q
    finally:
        term.close()
    assert running_names(lab) == ["container2", "container1"]


def test_guide_walk_through_with_network_none_has_only_loopback(lab) -> None:
    docker(lab, "run", "-itd", "--network", "none", "--name=isolated", "busybox")
    term = terminal(lab, "attach", "isolated")
    try:
        term.send(b"ifconfig | grep -c 'Link encap'\r")
        term.expect(rb"\r\n1\r\n")
        detach(term)
    finally:
        term.close()
    assert "isolated" in running_names(lab)
    docker(lab, "rm", "-f", "isolated")


def test_piped_stdin_reaches_a_run_i_container(lab) -> None:
    done = docker(lab, "run", "-i", "--rm", "busybox", "cat", input="abc\n")
    assert (done.stdout, done.returncode) == ("abc\n", 0)


def test_a_large_piped_stdin_arrives_whole(lab) -> None:
    # More than the shim and the daemon buffer: both hold the client back instead.
    done = docker(lab, "run", "-i", "--rm", "busybox", "sh", "-c", "sleep 1; wc -c", input="x" * 5_000_000)
    assert done.stdout.strip() == "5000000"


def test_run_it_gives_a_shell_on_a_terminal_and_its_exit_code(lab) -> None:
    term = terminal(lab, "run", "-it", "--rm", "busybox", "sh")
    try:
        term.expect(PROMPT)
        term.send(b"tty; exit 3\r")
        term.expect(rb"/dev/pts/0")
        assert term.wait() == 3
    finally:
        term.close()


def test_exec_it_gets_its_own_terminal(lab) -> None:
    docker(lab, "run", "-d", "--name", "plain", "busybox", "sleep", "3600")
    term = terminal(lab, "exec", "-it", "plain", "tty")
    try:
        term.expect(rb"/dev/pts/0\r\n")
        assert term.wait() == 0
    finally:
        term.close()
    docker(lab, "rm", "-f", "plain")


def test_exec_it_detaches_with_the_keys_and_the_process_runs_on(lab) -> None:
    docker(lab, "run", "-d", "--name", "execkeys", "busybox", "sleep", "3600")
    term = terminal(lab, "exec", "-it", "execkeys", "sh", "-c", "echo ready; exec sleep 3601")
    try:
        term.expect(rb"ready")
        term.send(b"\x10\x11")
        term.expect(rb"read escape sequence")
        term.wait()
    finally:
        term.close()
    assert "sleep 3601" in docker(lab, "exec", "execkeys", "ps").stdout
    docker(lab, "rm", "-f", "execkeys")


def test_exec_i_passes_piped_stdin(lab) -> None:
    docker(lab, "run", "-d", "--name", "piped", "busybox", "sleep", "3600")
    done = docker(lab, "exec", "-i", "piped", "sh", "-c", "tr a-z A-Z", input="shout\n")
    assert done.stdout == "SHOUT\n"
    docker(lab, "rm", "-f", "piped")


def test_resize_changes_stty_size_inside(lab) -> None:
    docker(lab, "run", "-itd", "--name", "sized", "busybox")
    term = terminal(lab, "attach", "sized", rows=30, cols=100)
    try:
        term.send(b"stty size\r")
        term.expect(rb"\r\n30 100\r\n")
        term.expect(PROMPT)  # back in line editing: only there does the shell redraw on a resize
        term.resize(41, 121)
        term.expect(REDRAWN)  # the CLI passed the SIGWINCH on as a resize
        term.send(b"stty size\r")
        term.expect(rb"\r\n41 121\r\n")
        detach(term)
    finally:
        term.close()
    exec_term = terminal(lab, "exec", "-it", "sized", "sh", rows=20, cols=70)
    try:
        exec_term.expect(PROMPT)
        exec_term.send(b"stty size\r")
        exec_term.expect(rb"\r\n20 70\r\n")
        exec_term.expect(PROMPT)  # back in line editing: only there does the shell redraw on a resize
        exec_term.resize(22, 77)
        exec_term.expect(REDRAWN)
        exec_term.send(b"stty size\r")
        exec_term.expect(rb"\r\n22 77\r\n")
        exec_term.send(b"exit\r")
        assert exec_term.wait() == 0
    finally:
        exec_term.close()
    docker(lab, "rm", "-f", "sized")


def test_custom_detach_keys_detach_and_leave_it_running(lab) -> None:
    docker(lab, "run", "-itd", "--name", "keys", "busybox")
    term = terminal(lab, "attach", "--detach-keys", "ctrl-x,x", "keys")
    try:
        term.send(b"\x10\x11echo still-attached\r")  # the default keys do nothing here
        term.expect(rb"\r\nstill-attached\r\n")
        detach(term, b"\x18x")
    finally:
        term.close()
    assert "keys" in running_names(lab)
    docker(lab, "rm", "-f", "keys")


def test_several_attached_clients_see_the_same_output(lab) -> None:
    docker(lab, "run", "-itd", "--name", "shared", "busybox")
    first, second = terminal(lab, "attach", "shared"), terminal(lab, "attach", "shared")
    try:
        first.expect(REDRAWN)  # each attach resizes the terminal: the shell redraws, so both are on
        second.expect(REDRAWN)
        first.send(b"echo from-first-$((6*7))\r")
        first.expect(rb"from-first-42")
        second.expect(rb"from-first-42")
        detach(second)
        first.send(b"echo first-still-here\r")
        first.expect(rb"\r\nfirst-still-here\r\n")
        detach(first)
    finally:
        first.close()
        second.close()
    docker(lab, "rm", "-f", "shared")


def test_tty_container_and_attached_client_survive_a_daemon_kill9(lab) -> None:
    docker(lab, "run", "-itd", "--name", "survivor", "busybox")
    term = terminal(lab, "attach", "survivor")
    try:
        term.send(b"echo before-kill\r")
        term.expect(rb"\r\nbefore-kill\r\n")
        lab.stop_daemon("h1", kill9=True)
        term.wait(timeout=15)  # the client sees its stream end
    finally:
        term.close()
    lab.start_daemon("h1")
    assert "survivor" in running_names(lab)
    again = terminal(lab, "attach", "survivor")
    try:
        again.send(b"echo after-$((40+2))\r")
        again.expect(rb"\r\nafter-42\r\n")
        detach(again)
    finally:
        again.close()
    docker(lab, "rm", "-f", "survivor")


# ---- docker-py -----------------------------------------------------------------------

def _docker_py(lab):
    import docker as docker_py  # requirements.txt pins docker (docker-py)

    return docker_py.DockerClient(base_url=f"unix://{lab.socket('h1')}", version="auto")


def _read_until(sock, marker: bytes, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    data = b""
    deadline = time.monotonic() + timeout
    while marker not in data:
        if time.monotonic() > deadline:
            raise AssertionError(f"{marker!r} not seen; got {data!r}")
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_docker_py_run_tty_stdin_open_and_attach_socket(lab) -> None:
    client = _docker_py(lab)
    container = client.containers.run("busybox", tty=True, stdin_open=True, detach=True, name="pyattach")
    try:
        sock = client.api.attach_socket(container.id, params={"stdin": 1, "stdout": 1, "stream": 1})
        raw = sock._sock
        raw.sendall(b"echo py-$((1+1))\n")
        assert b"py-2" in _read_until(raw, b"py-2\r\n")
        raw.close()
        container.reload()
        assert container.status == "running"
    finally:
        container.remove(force=True)
        client.close()


def test_non_tty_attach_frames_output_with_the_8_byte_header(lab) -> None:
    client = _docker_py(lab)
    container = client.containers.run("busybox", "cat", stdin_open=True, detach=True, name="pyframes")
    try:
        sock = client.api.attach_socket(container.id, params={"stdin": 1, "stdout": 1, "stream": 1})
        raw = sock._sock
        raw.sendall(b"hello\n")
        assert _read_until(raw, b"hello\n") == b"\x01\x00\x00\x00\x00\x00\x00\x06hello\n"
        raw.close()
    finally:
        container.remove(force=True)
        client.close()


def test_attach_with_logs_replays_the_output_of_a_stopped_container(lab) -> None:
    client = _docker_py(lab)
    container = client.containers.run("busybox", ["sh", "-c", "echo out; echo err >&2"], detach=True,
                                      name="pyreplay")
    try:
        assert container.wait()["StatusCode"] == 0
        assert client.api.attach(container.id, stdout=True, stderr=True, stream=False, logs=True) == b"out\nerr\n"
    finally:
        container.remove(force=True)
        client.close()


def test_docker_py_exec_run_tty_stdin_socket(lab) -> None:
    client = _docker_py(lab)
    container = client.containers.run("busybox", ["sleep", "3600"], detach=True, name="pyexec")
    try:
        result = container.exec_run("sh", tty=True, stdin=True, socket=True)
        raw = result.output._sock
        raw.sendall(b"tty; exit\n")
        assert b"/dev/pts/0" in _read_until(raw, b"/dev/pts/0")
        raw.close()
    finally:
        container.remove(force=True)
        client.close()


# ---- logs ----------------------------------------------------------------------------

def test_logs_interleave_streams_with_timestamps_and_tail(lab) -> None:
    script = "echo one; sleep 0.1; echo two >&2; sleep 0.1; echo three"
    docker(lab, "run", "--name", "logged", "busybox", "sh", "-c", script)
    done = docker(lab, "logs", "logged")
    assert (done.stdout, done.stderr) == ("one\nthree\n", "two\n")
    stamped = docker(lab, "logs", "--timestamps", "--tail", "2", "logged")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z three\n", stamped.stdout)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z two\n", stamped.stderr)
    docker(lab, "rm", "logged")


def test_logs_since_and_until_select_by_time(lab) -> None:
    docker(lab, "run", "-d", "--name", "timed", "busybox", "sh", "-c", "echo early; sleep 2; echo late; sleep 3600")
    wait_until(lambda: "late" in docker(lab, "logs", "timed").stdout, timeout=15)
    stamps = docker(lab, "logs", "-t", "timed").stdout.splitlines()
    late_time = stamps[1].split()[0]
    early_time = stamps[0].split()[0]
    assert docker(lab, "logs", "--since", late_time, "timed").stdout == "late\n"
    assert docker(lab, "logs", "--until", early_time, "timed").stdout == "early\n"
    docker(lab, "rm", "-f", "timed")


def test_logs_follow_streams_new_lines_until_the_container_exits(lab) -> None:
    docker(lab, "run", "-d", "--name", "followed", "busybox", "sh", "-c",
           "for i in 1 2 3; do echo line$i; sleep 0.3; done")
    done = docker(lab, "logs", "-f", "followed")
    assert done.stdout == "line1\nline2\nline3\n"
    docker(lab, "rm", "followed")


def test_logs_rotate_at_max_size_keeping_max_file(lab) -> None:
    docker(lab, "run", "--name", "rotated", "--log-opt", "max-size=1k", "--log-opt", "max-file=2", "busybox",
           "sh", "-c", "i=0; while [ $i -lt 200 ]; do echo line-$i; i=$((i+1)); done")
    lines = docker(lab, "logs", "rotated").stdout.splitlines()
    # Two files of about 1 KiB (~70 bytes an entry): the last lines, in order, none of the first.
    assert 10 < len(lines) < 40
    assert lines == [f"line-{i}" for i in range(200 - len(lines), 200)]
    docker(lab, "rm", "rotated")


def test_a_bad_log_opt_is_refused_naming_it(lab) -> None:
    done = docker(lab, "run", "--log-opt", "max-size=huge", "busybox", "true", check=False)
    assert done.returncode == 125
    assert "invalid size: 'huge'" in done.stderr


# ---- shoal's own CLI -----------------------------------------------------------------

SHOAL = [sys.executable, "-m", "shoal"]


def shoal_terminal(lab, *args: str, rows: int = 30, cols: int = 100) -> PtyProgram:
    env = lab.host_env("h1")
    env["PYTHONPATH"] = str(REPO)
    return PtyProgram([*SHOAL, *args], env=env, rows=rows, cols=cols)


def test_shoal_run_it_gives_a_sized_terminal_and_its_exit_code(lab) -> None:
    term = shoal_terminal(lab, "run", "-it", "--rm", "busybox", "sh", rows=33, cols=99)
    try:
        term.expect(PROMPT)
        term.send(b"tty; stty size; exit 4\r")
        term.expect(rb"/dev/pts/0\r\n33 99\r\n")
        assert term.wait() == 4
    finally:
        term.close()


def test_shoal_run_i_passes_piped_stdin(lab) -> None:
    done = subprocess.run([*SHOAL, "run", "-i", "--rm", "busybox", "cat"], input="abc\n", capture_output=True,
                          text=True, env={**lab.host_env("h1"), "PYTHONPATH": str(REPO)}, timeout=60, cwd=REPO)
    assert (done.stdout, done.returncode) == ("abc\n", 0)


def test_shoal_attach_and_exec_it_and_detach(lab) -> None:
    docker(lab, "run", "-itd", "--name", "shoalside", "busybox")
    term = shoal_terminal(lab, "attach", "shoalside")
    try:
        term.expect(PROMPT)  # redrawn after the attach's resize: attached
        term.send(b"echo via-$((2*21))\r")
        term.expect(rb"\r\nvia-42\r\n")
        detach(term)
    finally:
        term.close()
    exec_term = shoal_terminal(lab, "exec", "-it", "shoalside", "sh", rows=25, cols=81)
    try:
        exec_term.send(b"stty size; exit 2\r")
        exec_term.expect(rb"\r\n25 81\r\n")
        assert exec_term.wait() == 2
    finally:
        exec_term.close()
    assert "shoalside" in running_names(lab)
    docker(lab, "rm", "-f", "shoalside")


def test_shoal_logs_tail_and_timestamps(lab) -> None:
    docker(lab, "run", "--name", "shoallogs", "busybox", "sh", "-c", "echo a; echo b; echo c")
    env = {**lab.host_env("h1"), "PYTHONPATH": str(REPO)}
    done = subprocess.run([*SHOAL, "logs", "-t", "--tail", "1", "shoallogs"], capture_output=True, text=True,
                          env=env, timeout=60, cwd=REPO)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z c\n", done.stdout)
    docker(lab, "rm", "shoallogs")


def test_run_it_detaches_with_the_keys_and_the_container_keeps_running(lab) -> None:
    term = terminal(lab, "run", "-it", "--name", "runkeys", "busybox")
    try:
        term.expect(PROMPT)
        term.send(b"\x10\x11")
        assert term.wait() == 0
    finally:
        term.close()
    assert "runkeys" in running_names(lab)
    docker(lab, "rm", "-f", "runkeys")
