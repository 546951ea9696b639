"""Lab tests of the lab's fault injection and host identity: hostnames, kill/start, partition/heal,
loss and add-host (shoal.lab, shoal.labfaults, `shoal lab ...`).

Most use the fake daemon (conftest.fake_daemon): the faults act on the switch, not on daemons.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.client import Client
from shoal.lab import Lab, LabError, lab_namespaces, uts_path, wait_until

pytestmark = pytest.mark.lab

LabFactory = Callable[..., Lab]
ROOT = Path(__file__).resolve().parents[2]


def pings(made: Lab, src: str, dst: str, count: int = 2) -> bool:
    """True when `src` gets an answer from `dst` (count echo requests, 1 s each at most)."""
    result = made.exec(src, ["ping", "-c", str(count), "-i", "0.2", "-W", "1", made.address(dst)], check=False)
    return result.returncode == 0


def received(made: Lab, src: str, dst: str, count: int) -> int:
    """Replies to a burst of exactly `count` echo requests. Not `-w`: with -c and -w, iputils ping keeps sending
    until `count` replies came or the deadline passed, so under loss it sends more than `count` (seen: 157
    replies counted against a bound of 143 for 400 requests)."""
    result = made.exec(src, ["ping", "-q", "-c", str(count), "-i", "0.002", "-W", "1", made.address(dst)],
                       check=False)
    match = re.search(r"(\d+) received", result.stdout)
    assert match, result.stdout + result.stderr
    return int(match.group(1))


def shoal_lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoal", "lab", *args], capture_output=True, text=True, cwd=ROOT)


# ---- hostnames -----------------------------------------------------------------------
def test_each_host_has_its_own_hostname(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(2)
    assert [made.exec(h, ["hostname"]).stdout for h in made.hosts] == ["h1\n", "h2\n"]
    assert os.uname().nodename not in ("h1", "h2")


def test_the_daemon_runs_in_its_hosts_uts_namespace(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(2)
    for host in made.hosts:
        pid = made.daemon_pid(host)
        assert os.stat(f"/proc/{pid}/ns/uts").st_ino == os.stat(uts_path(made.name, host)).st_ino


def test_down_unmounts_the_uts_namespaces(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(2)
    made.down()
    assert f"/run/shoal-lab/{made.name}/" not in Path("/proc/self/mountinfo").read_text()


# ---- partition and heal ----------------------------------------------------------------
def test_partition_from_drops_between_the_named_hosts_only(lab: LabFactory,
                                                           fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(3)
    assert made.partition(["h1"], ["h2"]) == [("h1", "h2")]
    assert not pings(made, "h1", "h2")
    assert not pings(made, "h2", "h1")
    assert pings(made, "h1", "h3")
    assert pings(made, "h2", "h3")


def test_partition_without_from_cuts_the_group_off_from_every_other_host(
        lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(3)
    assert made.partition(["h1", "h2"]) == [("h1", "h3"), ("h2", "h3")]
    assert pings(made, "h1", "h2")
    assert not pings(made, "h1", "h3")
    assert not pings(made, "h3", "h2")


def test_heal_restores_every_partitioned_pair(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(3)
    made.partition(["h1"])
    made.partition(["h2"], ["h3"])
    assert made.faults().partitions == {frozenset({"h1", "h2"}), frozenset({"h1", "h3"}), frozenset({"h2", "h3"})}
    made.heal()
    assert made.faults().partitions == frozenset()
    assert pings(made, "h1", "h2") and pings(made, "h1", "h3") and pings(made, "h2", "h3")


def test_heal_keeps_loss_in_force(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(2)
    made.loss("h2", 100)
    made.partition(["h1"])
    made.heal()
    assert made.faults().loss == {"h2": 100.0}
    assert not pings(made, "h1", "h2")


def test_partition_refuses_a_host_on_both_sides(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(2)
    with pytest.raises(LabError, match="^host h1 cannot be on both sides of a partition$"):
        made.partition(["h1"], ["h1", "h2"])
    assert made.faults().partitions == frozenset()


def test_partition_refuses_an_unknown_host(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(2)
    with pytest.raises(LabError, match=rf"^lab '{made.name}' has no host 'h9' \(hosts: h1, h2\)$"):
        made.partition(["h9"])
    assert made.faults().partitions == frozenset()


# ---- loss ----------------------------------------------------------------------------
def test_loss_100_drops_every_frame_and_0_ends_it(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(2)
    made.loss("h1", 100)
    assert received(made, "h2", "h1", 20) == 0
    made.loss("h1", 0)
    assert made.faults().loss == {}
    # ARP again first (a burst outruns the kernel's unresolved queue), polled: h2's entry for h1 is FAILED or
    # still INCOMPLETE from the lossy burst, and one 1.2 s ping window can end before the new resolution does
    assert wait_until(lambda: pings(made, "h2", "h1"), timeout=10)
    assert received(made, "h2", "h1", 20) == 20


def test_loss_drops_a_random_share(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    """50% each way on h1's port: an echo and its reply both pass one time in four. Bounds 5
    standard deviations wide, so a correct rule fails about once in a million runs."""
    fake_daemon()
    made = lab(2)
    assert pings(made, "h1", "h2")  # ARP resolved before loss starts
    made.loss("h1", 50)
    got = received(made, "h2", "h1", 400)
    assert 57 <= got <= 143, got


def test_loss_refuses_a_bad_percentage(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(1)
    with pytest.raises(LabError, match=r"^invalid loss 101: must be a percentage from 0 to 100$"):
        made.loss("h1", 101)
    assert made.faults().loss == {}


# ---- kill, start, add-host -------------------------------------------------------------
def test_kill_then_start_runs_the_same_command_line(lab: LabFactory, fake_daemon: Callable[..., Path],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake_daemon()
    made = lab(1)
    old = made.daemon_pid("h1")
    argv = Path(f"/proc/{old}/cmdline").read_bytes()
    monkeypatch.delenv("SHOAL_LAB_DAEMON_CMD")  # the command saved at up counts, not the caller's environment
    made.kill("h1")
    assert not Path(f"/proc/{old}").exists() or "Z" in Path(f"/proc/{old}/stat").read_text().split(")")[1][:3]
    assert [s.running for s in made.status()] == [False]
    new = made.start("h1")
    assert new != old and Path(f"/proc/{new}/cmdline").read_bytes() == argv
    assert [s.answers for s in made.status()] == [True]


def test_start_refuses_a_running_daemon(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(1)
    pid = made.daemon_pid("h1")
    with pytest.raises(LabError, match=rf"^lab {made.name}: the daemon of h1 is already running \(pid {pid}\)$"):
        made.start("h1")


def test_add_host_grows_a_running_lab(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(2)
    assert made.add_host() == "h3"
    reopened = Lab.open(made.name)
    assert reopened.hosts == ["h1", "h2", "h3"]
    assert reopened.exec("h3", ["hostname"]).stdout == "h3\n"
    assert pings(reopened, "h3", "h1")
    with Client(reopened.url("h3"), timeout=5) as client:
        assert client.ping()
    assert f"shoal-{made.name}-h3" in lab_namespaces(made.name)


def test_add_host_that_fails_leaves_the_lab_as_it_was(lab: LabFactory, fake_daemon: Callable[..., Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    script = fake_daemon()
    # The lab's daemon command (saved at up, used by add-host): the fake, except on h2.
    monkeypatch.setenv("SHOAL_LAB_DAEMON_CMD", shlex.join(
        ["sh", "-c", f'case "$3" in */h2/*) echo no-daemon-here; exit 3;; esac; exec {sys.executable} {script} "$@"',
         "sh"]))
    made = lab(1)
    with pytest.raises(LabError, match=r"(?s)daemon of h2 exited before answering /_ping.*no-daemon-here"):
        made.add_host()
    assert made.hosts == ["h1"] and Lab.open(made.name).hosts == ["h1"]
    assert lab_namespaces(made.name) == [f"shoal-{made.name}-h1", f"shoal-{made.name}-sw"]
    assert not Path(f"/run/shoal-lab/{made.name}/h2").exists()
    assert subprocess.run(["ip", "-n", f"shoal-{made.name}-sw", "link", "show", "h2"], capture_output=True).returncode


def test_cli_fault_commands(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(3)
    part = shoal_lab("partition", "--name", made.name, "h1", "--from", "2")
    assert (part.returncode, part.stdout) == (0, "h1 x h2\n"), part.stderr
    assert shoal_lab("loss", "--name", made.name, "h3", "12.5").returncode == 0
    status = shoal_lab("status", "--name", made.name).stdout.splitlines()
    assert status[-2:] == ["partition: h1 x h2", "loss: h3 12.5%"]
    assert shoal_lab("heal", "--name", made.name).returncode == 0
    assert shoal_lab("status", "--name", made.name).stdout.splitlines()[-1] == "loss: h3 12.5%"
    killed = shoal_lab("kill", "--name", made.name, "h2")
    assert (killed.returncode, killed.stdout) == (0, "")
    assert "not running" in shoal_lab("status", "--name", made.name).stdout.splitlines()[2]
    again = shoal_lab("kill", "--name", made.name, "h2")
    assert (again.returncode, again.stderr) == (1, f"Error: lab {made.name}: the daemon of h2 is not running\n")
    started = shoal_lab("start", "--name", made.name, "h2")
    assert started.returncode == 0 and started.stdout == f"h2 {made.daemon_pid('h2')}\n"
    bad = shoal_lab("loss", "--name", made.name, "h1", "250")
    assert bad.returncode == 125 and "Invalid value for 'PERCENT': 250.0 is not in the range 0<=x<=100." in bad.stderr


# ---- with the real daemon --------------------------------------------------------------
def test_real_daemon_reports_the_hosts_name_and_keeps_containers_across_kill(lab: LabFactory) -> None:
    made = lab(1)
    with made.client("h1") as client:
        assert client.get("/info")["Name"] == "h1"
    made.exec("h1", [sys.executable, "-m", "shoal", "run", "-d", "--name", "sleeper", "busybox", "sleep", "600"])
    with made.client("h1") as client:
        pid = client.get("/containers/sleeper/json")["State"]["Pid"]
    made.kill("h1")
    assert Path(f"/proc/{pid}").exists()  # the container outlives its daemon
    made.start("h1")
    with made.client("h1") as client:
        state = client.get("/containers/sleeper/json")["State"]
    assert (state["Running"], state["Pid"]) == (True, pid)
    wait_until(lambda: made.exec("h1", ["docker", "info", "--format", "{{.Name}}"], check=False).stdout == "h1\n",
               10, what="docker info to show h1")


def test_cli_restart_and_add_host(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(1)
    old = made.daemon_pid("h1")
    restarted = shoal_lab("restart", "--name", made.name, "--kill", "h1")
    new = made.daemon_pid("h1")
    assert (restarted.returncode, restarted.stdout) == (0, f"h1 {new}\n") and new != old
    added = shoal_lab("add-host", "--name", made.name)
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines()[1].split() == ["h2", "192.168.200.12", str(Lab.open(made.name).daemon_pid("h2")),
                                                    f"/run/shoal-lab/{made.name}/h2/shoal.sock"]
    assert [s.answers for s in Lab.open(made.name).status()] == [True, True]
