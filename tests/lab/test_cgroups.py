"""Containers in cgroups (issue 9 item 4): limits checked from inside, OOMKilled, stats, top,
pause/unpause, update, bad values refused with Docker's words, cgroups removed with their
container and orphans cleaned at start, through the stock docker CLI and docker-py.
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from agent.executor.cgroups import PARENT
from shoal.lab import data_dir, run_dir
from tests.docker_client import docker_client
from tests.lab.helpers import running_lab, shoal, wait_until

pytestmark = pytest.mark.lab

DOCKER = docker_client()
assert DOCKER is not None, "no docker client: scripts/install.sh links one from /opt/shoal-docker-ref"
COMMAND_DEADLINE = 60
CGROUP_ROOT = Path("/sys/fs/cgroup")
MB = 1024 * 1024


@pytest.fixture(scope="module")
def lab():
    with running_lab(hosts=1) as lab:
        yield lab


def docker(lab, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return lab.exec("h1", [DOCKER, *args], check=check, timeout=COMMAND_DEADLINE)


_names = itertools.count()


def name() -> str:
    return f"cg{next(_names)}"


def inspect(lab, ref: str) -> dict:
    return json.loads(docker(lab, "inspect", ref).stdout)[0]


def engine_id(lab) -> str:
    return (data_dir(lab.name, "h1") / "engine" / "engine-id").read_text().strip()


def cgroup_dir(lab, controller: str, container_id: str) -> Path:
    return CGROUP_ROOT / controller / PARENT / engine_id(lab)[:12] / container_id


def inside(lab, ref: str, *command: str) -> str:
    return docker(lab, "exec", ref, *command).stdout.strip()


# ---- limits, checked from inside ----------------------------------------------------------------

# The bomb runs in a child shell (the parent shell and it are 2 of the 20 pids): each started
# `sleep` appends a line with builtins only; the child dies at the first failed fork, and the
# parent counts the lines without forking. 40 are attempted: without the limit all 40 start.
FORK_BOMB = (
    'sh -c "i=0; while [ \\$i -lt 40 ]; do sleep 100 & echo >> /tmp/started; i=\\$((i+1)); done" 2>/dev/null; '
    "n=0; while read l; do n=$((n+1)); done < /tmp/started; echo $n"
)


def test_a_fork_bomb_under_pids_limit_20_stops_at_20_processes(lab):
    c = name()
    result = docker(lab, "run", "--name", c, "--pids-limit", "20", "busybox", "sh", "-c", FORK_BOMB)
    assert int(result.stdout.strip()) + 2 == 20  # the sleeps that started, plus the two shells
    docker(lab, "rm", "-f", c)


def test_without_a_pids_limit_the_same_bomb_starts_all_40(lab):
    c = name()
    result = docker(lab, "run", "--name", c, "busybox", "sh", "-c", FORK_BOMB)
    assert result.stdout.strip() == "40"
    docker(lab, "rm", "-f", c)


def test_memory_16m_and_a_bigger_allocation_is_oom_killed_and_inspect_says_so(lab):
    c = name()
    # tail keeps a line in memory until its end: 64 MiB of zeros with no newline
    result = docker(lab, "run", "--name", c, "--memory", "16m", "busybox", "sh", "-c",
                    "head -c 64m /dev/zero | tail", check=False)
    assert result.returncode == 137
    state = inspect(lab, c)["State"]
    assert (state["OOMKilled"], state["ExitCode"], state["Status"]) == (True, 137, "exited")
    docker(lab, "rm", c)


def test_the_same_allocation_without_a_limit_is_not_oom_killed(lab):
    c = name()
    docker(lab, "run", "--name", c, "busybox", "sh", "-c", "head -c 64m /dev/zero | tail > /dev/null")
    assert inspect(lab, c)["State"]["OOMKilled"] is False
    docker(lab, "rm", c)


def test_cpus_half_memory_shares_cpuset_and_pids_show_inside(lab):
    c = name()
    docker(lab, "run", "-d", "--name", c, "--cpus", "0.5", "--memory", "16m", "--cpu-shares", "512",
           "--cpuset-cpus", "0", "--pids-limit", "20", "busybox", "sleep", "3600")
    assert inside(lab, c, "cat", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us",
                  "/sys/fs/cgroup/cpu/cpu.shares", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                  "/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes", "/sys/fs/cgroup/cpuset/cpuset.cpus",
                  "/sys/fs/cgroup/pids/pids.max").split() == [
        "50000", "100000", "512", str(16 * MB), str(32 * MB), "0", "20"]
    host_config = inspect(lab, c)["HostConfig"]
    assert (host_config["NanoCpus"], host_config["Memory"], host_config["MemorySwap"], host_config["PidsLimit"]) == (
        500000000, 16 * MB, 32 * MB, 20)
    docker(lab, "rm", "-f", c)


def test_the_cgroup_tree_inside_is_read_only(lab):
    c = name()
    result = docker(lab, "run", "--name", c, "--memory", "16m", "busybox", "sh", "-c",
                    "echo 999999999 > /sys/fs/cgroup/memory/memory.limit_in_bytes", check=False)
    assert result.returncode != 0
    assert "Read-only file system" in result.stderr
    docker(lab, "rm", "-f", c)


def test_update_raises_the_memory_limit_of_a_running_container(lab):
    c = name()
    docker(lab, "run", "-d", "--name", c, "--memory", "16m", "busybox", "sleep", "3600")
    docker(lab, "update", "--memory", "64m", "--memory-swap", "128m", c)
    assert inside(lab, c, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes") == str(64 * MB)
    assert inspect(lab, c)["HostConfig"]["Memory"] == 64 * MB
    docker(lab, "rm", "-f", c)


def test_an_update_of_a_stopped_container_applies_at_its_next_start(lab):
    c = name()
    docker(lab, "create", "--name", c, "--pids-limit", "20", "busybox", "sleep", "3600")
    docker(lab, "update", "--pids-limit", "30", "--cpus", "0.25", c)
    docker(lab, "start", c)
    assert inside(lab, c, "cat", "/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us").split() == [
        "30", "25000"]
    docker(lab, "rm", "-f", c)


def test_update_above_the_swap_limit_without_swap_is_refused_with_dockers_message(lab):
    c = name()
    docker(lab, "run", "-d", "--name", c, "--memory", "16m", "busybox", "sleep", "3600")
    cid = inspect(lab, c)["Id"]
    result = docker(lab, "update", "--memory", "64m", c, check=False)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"Error response from daemon: Cannot update container {cid}: Memory limit should be smaller than "
        "already set memoryswap limit, update the memoryswap at the same time"
    )
    assert inside(lab, c, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes") == str(16 * MB)
    docker(lab, "rm", "-f", c)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--memory", "4m"], "Minimum memory limit allowed is 6MB"),
        (["--memory", "16m", "--memory-swap", "8m"], "Minimum memoryswap limit should be larger than memory limit, see usage"),
        (["--cpus", str((os.cpu_count() or 1) + 1)],
         f"Range of CPUs is from 0.01 to {os.cpu_count()}.00, as there are only {os.cpu_count()} CPUs available"),
        (["--cpuset-cpus", "99"], "Requested CPUs are not available - requested 99, available: 0-"),
        (["--memory-reservation", "1m"], "Minimum memory reservation allowed is 6MB"),
    ],
)
def test_bad_limits_are_refused_with_dockers_message_and_nothing_is_created(lab, flags, message):
    before = docker(lab, "ps", "-aq").stdout
    result = docker(lab, "run", "-d", *flags, "busybox", "true", check=False)
    assert result.returncode == 125
    assert f"Error response from daemon: {message}" in result.stderr
    assert docker(lab, "ps", "-aq").stdout == before


# ---- stats, top --------------------------------------------------------------------------------

def test_docker_stats_no_stream_shows_a_non_zero_memory_figure(lab):
    c = name()
    docker(lab, "run", "-d", "--name", c, "--memory", "32m", "busybox", "sleep", "3600")
    line = docker(lab, "stats", "--no-stream", "--format", "{{.Name}}|{{.MemUsage}}|{{.PIDs}}", c).stdout.strip()
    stat_name, usage, pids = line.split("|")
    used, limit = (part.strip() for part in usage.split("/"))
    assert (stat_name, limit, pids) == (c, "32MiB", "1")
    assert used not in ("0B", "") and float(used.rstrip("KMGiB")) > 0
    docker(lab, "rm", "-f", c)


def test_stats_has_cpu_and_network_figures_of_the_container(lab):
    c = name()
    docker(lab, "run", "-d", "--name", c, "busybox", "sh", "-c", "while :; do :; done")
    with lab.client("h1") as client:
        stats = client.get(f"/containers/{c}/stats", {"stream": False})
    assert stats["name"] == "/" + c
    assert stats["cpu_stats"]["cpu_usage"]["total_usage"] > stats["precpu_stats"]["cpu_usage"]["total_usage"] > 0
    assert stats["cpu_stats"]["system_cpu_usage"] > stats["precpu_stats"]["system_cpu_usage"] > 0
    assert stats["cpu_stats"]["online_cpus"] == os.cpu_count()
    assert list(stats["networks"]) == ["eth0"] and stats["networks"]["eth0"]["rx_bytes"] >= 0
    assert stats["pids_stats"]["current"] == 1
    docker(lab, "rm", "-f", c)


def test_docker_top_lists_the_containers_processes_only(lab):
    c = name()
    docker(lab, "run", "-d", "--name", c, "busybox", "sh", "-c", "sleep 3600 & sleep 3601; exit 0")
    lines = docker(lab, "top", c).stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["UID", "PID", "PPID"]
    commands = sorted(" ".join(line.split()[7:]) for line in lines[1:])
    assert commands == ["sh -c sleep 3600 & sleep 3601; exit 0", "sleep 3600", "sleep 3601"]
    docker(lab, "rm", "-f", c)


def test_top_of_a_stopped_container_is_refused_with_dockers_message(lab):
    c = name()
    docker(lab, "run", "--name", c, "busybox", "true")
    cid = inspect(lab, c)["Id"]
    result = docker(lab, "top", c, check=False)
    assert result.stderr.strip() == f"Error response from daemon: Container {cid} is not running"
    docker(lab, "rm", c)


# ---- pause / unpause ------------------------------------------------------------------------------

def _counter(lab, cid: str) -> int:
    text = (run_dir(lab.name, "h1") / "bundles" / cid / "rootfs" / "tmp" / "n").read_text().strip()
    return int(text) if text else 0


def test_pause_stops_a_counter_and_unpause_resumes_it(lab):
    c = name()
    docker(lab, "run", "-d", "--name", c, "busybox", "sh", "-c",
           "i=0; while :; do i=$((i+1)); echo $i > /tmp/n; usleep 10000; done")
    cid = inspect(lab, c)["Id"]
    wait_until(lambda: _counter(lab, cid) > 5)
    docker(lab, "pause", c)
    state = inspect(lab, c)["State"]
    assert (state["Status"], state["Paused"], state["Running"]) == ("paused", True, True)
    assert "(Paused)" in docker(lab, "ps", "--filter", f"name={c}", "--format", "{{.Status}}").stdout
    assert docker(lab, "ps", "-q", "--no-trunc", "--filter", "status=paused").stdout.split() == [cid]
    frozen = _counter(lab, cid)
    # frozen: the count stays put for a whole second (the loop adds ~100 in that time)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert _counter(lab, cid) == frozen
        time.sleep(0.05)
    docker(lab, "unpause", c)
    wait_until(lambda: _counter(lab, cid) > frozen + 5)
    assert inspect(lab, c)["State"]["Status"] == "running"
    docker(lab, "rm", "-f", c)


def test_exec_rm_and_pause_of_a_paused_container_answer_as_docker(lab):
    c = name()
    docker(lab, "run", "-d", "--name", c, "busybox", "sleep", "3600")
    cid = inspect(lab, c)["Id"]
    docker(lab, "pause", c)
    assert docker(lab, "pause", c, check=False).stderr.strip() == (
        f"Error response from daemon: Container {cid} is already paused")
    assert docker(lab, "exec", c, "true", check=False).stderr.strip() == (
        f"Error response from daemon: Container {cid} is paused, unpause the container before exec")
    assert docker(lab, "rm", c, check=False).stderr.strip() == (
        f'Error response from daemon: cannot remove container "/{c}": container is paused and must be unpaused first')
    docker(lab, "unpause", c)
    assert docker(lab, "unpause", c, check=False).stderr.strip() == (
        f"Error response from daemon: Container {cid} is not paused")
    docker(lab, "rm", "-f", c)


def test_a_paused_container_stops_and_is_force_removed(lab):
    c = name()
    docker(lab, "run", "-d", "--name", c, "busybox", "sleep", "3600")
    docker(lab, "pause", c)
    docker(lab, "stop", "-t", "1", c)
    state = inspect(lab, c)["State"]
    assert (state["Status"], state["Paused"]) == ("exited", False)
    docker(lab, "start", c)
    docker(lab, "pause", c)
    docker(lab, "rm", "-f", c)
    assert docker(lab, "ps", "-aq", "--filter", f"name={c}").stdout.strip() == ""


# ---- cgroups made and removed -----------------------------------------------------------------------

def test_a_containers_cgroup_goes_at_exit_and_nothing_is_left_after_rm(lab):
    c = name()
    docker(lab, "run", "-d", "--name", c, "--memory", "16m", "busybox", "sleep", "3600")
    cid = inspect(lab, c)["Id"]
    dirs = [cgroup_dir(lab, controller, cid) for controller in ("memory", "pids", "cpu", "freezer")]
    assert all(d.is_dir() for d in dirs)
    docker(lab, "stop", "-t", "0", c)
    wait_until(lambda: not any(d.exists() for d in dirs))
    assert not (lab_runc_root(lab) / cid).exists()  # runc's kept state went with it
    docker(lab, "rm", c)


def lab_runc_root(lab) -> Path:
    return Path(f"/run/shoal-lab/{lab.name}/h1/runc")


def test_orphan_cgroups_of_this_daemon_go_at_start_and_no_other_is_touched(lab):
    c = name()
    docker(lab, "run", "-d", "--name", c, "--memory", "16m", "busybox", "sleep", "3600")
    cid = inspect(lab, c)["Id"]
    orphan = "ab" * 32
    made = [cgroup_dir(lab, "pids", orphan), cgroup_dir(lab, "memory", orphan)]
    foreign = CGROUP_ROOT / "pids" / PARENT / "000000000000" / orphan  # another daemon's
    for d in made + [foreign]:
        d.mkdir(parents=True)
    try:
        lab.restart_daemon("h1", kill9=True)
        assert not any(d.exists() for d in made)
        assert foreign.is_dir()
        assert cgroup_dir(lab, "memory", cid).is_dir()  # the running container keeps its own
        assert inside(lab, c, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes") == str(16 * MB)
    finally:
        foreign.rmdir()
        foreign.parent.rmdir()
        docker(lab, "rm", "-f", c)


def test_an_oom_kill_while_the_daemon_is_down_shows_after_its_restart(lab):
    c = name()
    docker(lab, "run", "-d", "--name", c, "--memory", "16m", "busybox", "sh", "-c",
           "while [ ! -e /tmp/go ]; do usleep 10000; done; head -c 64m /dev/zero | tail")
    cid = inspect(lab, c)["Id"]
    lab.stop_daemon("h1", kill9=True)
    try:
        (run_dir(lab.name, "h1") / "bundles" / cid / "rootfs" / "tmp" / "go").touch()
        wait_until(lambda: (run_dir(lab.name, "h1") / "bundles" / cid / "exit").exists(), timeout=30)
    finally:
        lab.start_daemon("h1")
    state = inspect(lab, c)["State"]
    assert (state["OOMKilled"], state["ExitCode"]) == (True, 137)
    docker(lab, "rm", c)


def test_docker_info_reports_the_cgroupfs_driver_and_version_1(lab):
    fmt = "{{.CgroupDriver}} {{.CgroupVersion}} {{.MemoryLimit}} {{.PidsLimit}} {{.CPUSet}}"
    assert docker(lab, "info", "--format", fmt).stdout.strip() == "cgroupfs 1 true true true"


# ---- docker-py ------------------------------------------------------------------------------------------

def test_docker_py_runs_with_limits_and_reads_stats_top_pause_and_update(lab):
    import docker as docker_py  # requirements.txt pins docker (docker-py)

    client = docker_py.DockerClient(base_url=f"unix://{lab.socket('h1')}", version="auto")
    container = client.containers.run("busybox", ["sleep", "3600"], detach=True, mem_limit="32m",
                                      nano_cpus=500_000_000, pids_limit=30, name=name())
    try:
        stats = container.stats(stream=False)
        assert stats["memory_stats"]["limit"] == 32 * MB and stats["memory_stats"]["usage"] > 0
        assert stats["pids_stats"] == {"current": 1, "limit": 30}
        top = container.top()
        assert "PID" in top["Titles"] and [p[-1] for p in top["Processes"]] == ["sleep 3600"]
        container.pause()
        container.reload()
        assert container.status == "paused"
        container.unpause()
        assert container.update(mem_limit="48m", memswap_limit="96m") == {"Warnings": []}
        container.reload()
        assert container.attrs["HostConfig"]["Memory"] == 48 * MB
        streamed = container.stats(stream=True, decode=True)
        first, second = next(streamed), next(streamed)
        assert second["precpu_stats"]["cpu_usage"]["total_usage"] == first["cpu_stats"]["cpu_usage"]["total_usage"]
        streamed.close()
    finally:
        container.remove(force=True)
        client.close()


# ---- shoal's own CLI ----------------------------------------------------------------------------------

def test_shoal_cli_runs_with_limits_and_has_stats_top_pause_and_update(lab):
    c = name()
    shoal(lab, "run", "-d", "--name", c, "--memory", "32m", "--cpus", "0.5", "--pids-limit", "30",
          "busybox", "sleep", "3600")
    assert inside(lab, c, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                  "/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/pids/pids.max").split() == [
        str(32 * MB), "50000", "30"]
    header, row = shoal(lab, "stats", "--no-stream", c).stdout.strip().splitlines()
    assert header.split()[:4] == ["CONTAINER", "ID", "NAME", "CPU"]
    assert row.split()[1] == c and "/ 32MiB" in row and row.split()[-1] == "1"
    top = shoal(lab, "top", c).stdout.strip().splitlines()
    assert top[0].split()[:2] == ["UID", "PID"] and top[1].endswith("sleep 3600")
    assert shoal(lab, "pause", c).stdout == f"{c}\n"
    assert inspect(lab, c)["State"]["Status"] == "paused"
    assert shoal(lab, "unpause", c).stdout == f"{c}\n"
    assert shoal(lab, "update", "--memory", "48m", c).stdout == f"{c}\n"
    assert inside(lab, c, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes") == str(48 * MB)
    refused = shoal(lab, "run", "-d", "--memory", "4m", "busybox", "true", check=False)
    assert refused.returncode == 125
    assert "Error response from daemon: Minimum memory limit allowed is 6MB" in refused.stderr
    docker(lab, "rm", "-f", c)
