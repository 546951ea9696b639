"""shoal's own CLI for the verbs of issue 9 items 3 and 6: events, rename, wait --condition,
container/image/system prune, system df, and `shoal run` with --restart, --init, --add-host,
--dns, --sysctl, --ulimit, --stop-signal, --mac-address, --privileged, --device, --group-add, --oom-score-adj.
"""
from __future__ import annotations

import json
import re
import time

import pytest

from tests.lab.helpers import running_lab, shoal, wait_until

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab():
    with running_lab(hosts=1) as lab:
        yield lab


def _inspect(lab, name: str) -> dict:
    return json.loads(shoal(lab, "inspect", name).stdout)[0]


def test_shoal_run_applies_create_options(lab):
    out = shoal(lab, "run", "--rm", "--add-host", "database:10.1.2.3", "--dns", "192.0.2.1", "--sysctl",
                "net.ipv4.ip_forward=1", "--ulimit", "nofile=64:128", "--mac-address", "02:42:ac:11:00:77",
                "busybox", "sh", "-c", "grep database /etc/hosts; grep nameserver /etc/resolv.conf; "
                "cat /proc/sys/net/ipv4/ip_forward; ulimit -n; cat /sys/class/net/eth0/address").stdout
    # "database": never part of a hex container id in the hosts file (a "db" once was)
    assert out == "10.1.2.3\tdatabase\nnameserver 192.0.2.1\n1\n64\n02:42:ac:11:00:77\n"


def test_shoal_run_group_add_and_oom_score_adj(lab):
    out = shoal(lab, "run", "--rm", "--group-add", "nobody", "--group-add", "4242", "--oom-score-adj", "500", "busybox",
                "sh", "-c", "id; cat /proc/self/oom_score_adj").stdout
    assert out == "uid=0(root) gid=0(root) groups=0(root),4242,65534(nobody)\n500\n"


def test_shoal_run_refuses_an_oom_score_adj_out_of_range_with_mobys_message(lab):
    result = shoal(lab, "run", "--rm", "--oom-score-adj", "-1001", "busybox", "true", check=False)
    assert (result.returncode, result.stderr.splitlines()[0]) == (
        125, "shoal: Error response from daemon: Invalid value -1001, range for oom score adj is [-1000, 1000]")


def test_shoal_run_init_privileged_and_device(lab):
    out = shoal(lab, "run", "--rm", "--init", "--privileged", "--device", "/dev/null:/dev/mynull", "busybox",
                "sh", "-c", "cat /proc/1/comm; grep Seccomp: /proc/self/status; test -c /dev/mynull && echo dev").stdout
    assert out == "docker-init\nSeccomp:\t0\ndev\n"


def test_shoal_run_restart_policy_and_its_conflict_with_rm(lab):
    shoal(lab, "run", "-d", "--name", "srestart", "--restart", "on-failure:1", "busybox", "sh", "-c", "exit 3")
    wait_until(lambda: (lambda i: i["State"]["Status"] == "exited" and i["RestartCount"] == 1)(
        _inspect(lab, "srestart")), timeout=20)
    shoal(lab, "rm", "srestart")
    result = shoal(lab, "run", "--rm", "--restart", "always", "busybox", "true", check=False)
    assert result.returncode == 125
    assert result.stderr.splitlines()[0] == "shoal: conflicting options: cannot specify both --restart and --rm"


def test_shoal_stop_uses_the_stop_signal(lab):
    shoal(lab, "run", "-d", "--name", "ssig", "--stop-signal", "SIGUSR1", "busybox", "sh", "-c",
          "trap 'exit 9' USR1; while true; do sleep 0.1; done")
    shoal(lab, "stop", "ssig")
    assert _inspect(lab, "ssig")["State"]["ExitCode"] == 9
    shoal(lab, "rm", "ssig")


def test_shoal_events_json_with_filters(lab):
    since = time.time()
    cid = shoal(lab, "run", "-d", "--name", "sev", "busybox", "true").stdout.strip()
    shoal(lab, "wait", "sev")
    lines = shoal(lab, "events", "--since", f"{since:.9f}", "--until", f"{time.time():.9f}",
                  "--filter", "container=sev", "--format", "json").stdout.splitlines()
    assert [json.loads(line)["Action"] for line in lines] == ["create", "start", "die"]
    default = shoal(lab, "events", "--since", f"{since:.9f}", "--until", f"{time.time():.9f}",
                    "--filter", "container=sev", "--filter", "event=create").stdout
    assert re.fullmatch(rf"\S+ container create {cid} \(image=busybox, name=sev\)\n", default)
    shoal(lab, "rm", "sev")


def test_shoal_rename_and_its_conflict(lab):
    shoal(lab, "run", "-d", "--name", "sren", "busybox", "true")
    shoal(lab, "rename", "sren", "sren2")
    assert _inspect(lab, "sren2")["Name"] == "/sren2"
    shoal(lab, "run", "-d", "--name", "sother", "busybox", "true")
    result = shoal(lab, "rename", "sren2", "sother", check=False)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == "Error: failed to rename container named sren2"
    shoal(lab, "rm", "-f", "sren2", "sother")


def test_shoal_wait_conditions(lab):
    shoal(lab, "run", "-d", "--name", "swait", "busybox", "sh", "-c", "sleep 0.2; exit 6")
    assert shoal(lab, "wait", "swait").stdout == "6\n"
    result = shoal(lab, "wait", "--condition", "bogus", "swait", check=False)
    assert result.stderr.strip() == 'Error response from daemon: invalid condition: "bogus"'
    shoal(lab, "rm", "swait")


def test_shoal_container_prune_and_system_df(lab):
    shoal(lab, "run", "-d", "--name", "sprune", "busybox", "true")
    cid = _inspect(lab, "sprune")["Id"]
    shoal(lab, "wait", "sprune")
    rows = [json.loads(line) for line in shoal(lab, "system", "df", "--format", "json").stdout.splitlines()]
    assert [r["Type"] for r in rows] == ["Images", "Containers", "Local Volumes", "Build Cache"]
    table = shoal(lab, "system", "df").stdout.splitlines()
    assert table[0].split() == ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
    out = shoal(lab, "container", "prune", "-f").stdout
    assert out.startswith(f"Deleted Containers:\n{cid}\n\nTotal reclaimed space: ")
    assert shoal(lab, "system", "prune", "-f").stdout == "Total reclaimed space: 0B\n"
    assert shoal(lab, "image", "prune", "-f").stdout == "Total reclaimed space: 0B\n"


def test_shoal_run_mounts_binds_tmpfs_and_a_read_only_root(lab, tmp_path):
    (tmp_path / "f").write_text("from-host\n")
    out = shoal(lab, "run", "--rm", "-v", f"{tmp_path}:/data:ro", "--mount", "type=tmpfs,dst=/scratch,tmpfs-size=1m",
                "--tmpfs", "/run2:size=2m", "--read-only", "busybox", "sh", "-c",
                "cat /data/f; grep -E ' /(scratch|run2) ' /proc/mounts | cut -d' ' -f2,3; "
                "touch /rootfile 2>/dev/null || echo root-ro; touch /data/x 2>/dev/null || echo data-ro; "
                "touch /scratch/x && echo scratch-rw").stdout
    assert out == "from-host\n/scratch tmpfs\n/run2 tmpfs\nroot-ro\ndata-ro\nscratch-rw\n"


def test_shoal_run_refuses_a_bad_mount_with_the_docker_clis_words(lab):
    r = shoal(lab, "run", "--rm", "--mount", "type=bind,dst=/x,bogus=1", "busybox", "true", check=False)
    assert r.returncode == 125
    assert 'invalid argument "type=bind,dst=/x,bogus=1" for "--mount" flag: unexpected key \'bogus\' in \'bogus=1\'' in r.stderr


# ---------------------------------------------------------------------------------- create, restart, port
def _docker(lab, *args: str, check: bool = True):
    from tests.lab.swarm_lab import docker

    return docker(lab, "h1", *args, check=check)


def test_shoal_create_makes_a_created_container_that_start_runs(lab):
    cid = shoal(lab, "create", "--name", "screated", "-e", "A=1", "busybox", "sh", "-c", "echo $A").stdout.strip()
    state = _inspect(lab, "screated")
    assert (len(cid), state["Id"], state["State"]["Status"], state["Config"]["Env"][-1]) == (64, cid, "created", "A=1")
    shoal(lab, "start", "screated")
    wait_until(lambda: _inspect(lab, "screated")["State"]["Status"] == "exited", timeout=20)
    assert shoal(lab, "logs", "screated").stdout == "1\n"
    shoal(lab, "rm", "screated")


def test_shoal_create_rm_sets_auto_remove_as_docker_create_does(lab):
    for cli, name in ((shoal, "screm"), (lambda lab, *a, **k: _docker(lab, *a, **k), "dcrem")):
        cli(lab, "create", "--rm", "--name", name, "busybox", "true")
    assert [_inspect(lab, n)["HostConfig"]["AutoRemove"] for n in ("screm", "dcrem")] == [True, True]
    shoal(lab, "rm", "screm", "dcrem")


def test_shoal_create_of_a_missing_image_fails_as_docker_create_does(lab):
    # the docker CLI first says it will pull ("Unable to find image ... locally"); shoal's has no registry to try
    mine = shoal(lab, "create", "nosuchimage:1", check=False)
    theirs = _docker(lab, "create", "nosuchimage:1", check=False)
    assert (mine.returncode, mine.stderr) == (theirs.returncode, "Error response from daemon: No such image: nosuchimage:1\n")


def test_shoal_restart_restarts_a_running_container(lab):
    shoal(lab, "run", "-d", "--name", "srestarted", "busybox", "sleep", "1d")
    started = _inspect(lab, "srestarted")["State"]["StartedAt"]
    assert shoal(lab, "restart", "-t", "0", "srestarted").stdout == "srestarted\n"
    after = _inspect(lab, "srestarted")["State"]
    assert (after["Status"], after["StartedAt"] != started) == ("running", True)
    missing = shoal(lab, "restart", "nosuch", check=False)
    assert (missing.returncode, missing.stderr) == (1, _docker(lab, "restart", "nosuch", check=False).stderr)
    shoal(lab, "rm", "-f", "srestarted")


@pytest.mark.parametrize("args", [[], ["80"], ["80/tcp"], ["53/udp"], ["81"], ["82"], ["http"]])
def test_shoal_port_prints_what_docker_port_prints(lab, args):
    shoal(lab, "run", "-d", "--name", "sported", "-p", "8080:80", "-p", "5353:53/udp", "-p", "127.0.0.1::81",
          "busybox", "sleep", "1d")
    try:
        mine, theirs = shoal(lab, "port", "sported", *args, check=False), _docker(lab, "port", "sported", *args,
                                                                                    check=False)
        assert (mine.returncode, mine.stdout, mine.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr)
    finally:
        shoal(lab, "rm", "-f", "sported", check=False)
