"""Lab tests of shoal.lab: namespaces, switch, addresses, daemon start/wait/restart, teardown.

Most use a fake daemon (conftest.fake_daemon) so they test the lab machinery alone; the last
one runs the real `shoal daemon`.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from shoal.client import Client
from shoal.lab import DATA_ROOT, RUN_ROOT, Lab, LabError, down, exists, lab_namespaces, wait_until

from .conftest import unique_lab_name

pytestmark = pytest.mark.lab

LabFactory = Callable[..., Lab]


def ip_json(*args: str) -> list[dict]:  # type: ignore[type-arg]
    return json.loads(subprocess.run(["ip", "-j", *args], check=True, capture_output=True, text=True).stdout)


def links(netns: str) -> dict[str, dict]:  # type: ignore[type-arg]
    return {link["ifname"]: link for link in ip_json("-n", netns, "-d", "link", "show")}


def addresses(netns: str, ifname: str) -> list[str]:
    return [f"{a['local']}/{a['prefixlen']}" for link in ip_json("-n", netns, "addr", "show", "dev", ifname)
            for a in link["addr_info"] if a["family"] == "inet"]


def test_up_makes_a_switch_with_one_bridge_port_per_host(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(3)
    switch = links(f"shoal-{made.name}-sw")
    assert sorted(switch) == ["br0", "h1", "h2", "h3", "lo"]
    assert all(switch[h]["master"] == "br0" and "UP" in switch[h]["flags"] for h in ("h1", "h2", "h3"))
    assert "UP" in switch["br0"]["flags"] and addresses(f"shoal-{made.name}-sw", "br0") == []


def test_up_gives_each_host_eth0_with_its_address(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(2)
    for host, address in (("h1", "192.168.200.11/24"), ("h2", "192.168.200.12/24")):
        assert made.netns(host) == f"shoal-{made.name}-{host}"
        host_links = links(made.netns(host))
        assert sorted(host_links) == ["eth0", "lo"]
        assert "UP" in host_links["eth0"]["flags"] and "UP" in host_links["lo"]["flags"]
        assert addresses(made.netns(host), "eth0") == [address]
        assert f"{made.address(host)}/24" == address


def test_hosts_reach_each_other_over_the_switch(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(2)
    result = made.exec("h1", ["ping", "-c", "1", "-W", "2", made.address("h2")], check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_up_leaves_the_root_namespace_untouched(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    before = sorted(link["ifname"] for link in ip_json("link", "show"))
    lab(2)
    assert sorted(link["ifname"] for link in ip_json("link", "show")) == before


def test_up_starts_the_daemon_with_the_lab_command_line(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(1)
    pid = made.daemon_pid("h1")
    assert pid is not None
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
    assert [c.decode() for c in cmdline[-9:]] == [
        "daemon", "--host", f"unix:///run/shoal-lab/{made.name}/h1/shoal.sock",
        "--data-dir", f"/var/lib/shoal-lab/{made.name}/h1", "--exec-root", f"/run/shoal-lab/{made.name}/h1",
        "--netns-prefix", f"shoal-{made.name}-h1-"]
    assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(f"/run/netns/{made.netns('h1')}").st_ino
    # Root mount namespace: namespaces and mounts the daemon makes are visible to everyone.
    assert os.stat(f"/proc/{pid}/ns/mnt").st_ino == os.stat("/proc/self/ns/mnt").st_ino
    assert os.getsid(pid) == pid  # its own session: it outlives the CLI that started it


def test_up_returns_only_once_every_daemon_answers_ping(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon(delay=1.0)
    made = lab(2)
    for host in made.hosts:
        with Client(made.url(host), timeout=5) as client:
            assert client.ping()


def test_up_fails_with_the_daemon_log_and_leaves_nothing(lab_names: list[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_LAB_DAEMON_CMD", "/bin/sh -c 'echo daemon-broke-here; exit 3' sh")
    name = unique_lab_name()
    lab_names.append(name)
    with pytest.raises(LabError, match=r"(?s)daemon of h1 exited before answering /_ping.*daemon-broke-here"):
        Lab.up(name, 2)
    assert not exists(name)


def test_up_refuses_an_existing_lab(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(1)
    with pytest.raises(LabError, match=f"lab '{made.name}' already exists"):
        Lab.up(made.name, 1)


def test_up_force_replaces_an_existing_lab(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(1)
    again = Lab.up(made.name, 2, force=True)
    assert again.hosts == ["h1", "h2"] and lab_namespaces(made.name) == [
        f"shoal-{made.name}-h1", f"shoal-{made.name}-h2", f"shoal-{made.name}-sw"]


def test_up_rejects_bad_host_counts(lab_names: list[str]) -> None:
    with pytest.raises(LabError, match="invalid number of hosts 0"):
        Lab.up(unique_lab_name(), 0)


def test_exec_sets_the_host_socket_and_passes_the_exit_code(lab: LabFactory,
                                                            fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(2)
    result = made.exec("h2", ["sh", "-c", "echo $SHOAL_HOST $DOCKER_HOST; exit 7"], check=False)
    url = f"unix:///run/shoal-lab/{made.name}/h2/shoal.sock"
    assert (result.returncode, result.stdout) == (7, f"{url} {url}\n")
    assert made.socket("h2") == Path(url[len("unix://"):])


def test_exec_check_raises_with_output(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(1)
    with pytest.raises(subprocess.CalledProcessError, match="(?s)stderr: oops"):
        made.exec("h1", ["sh", "-c", "echo oops >&2; exit 1"])


def test_cli_lab_commands(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(2)
    shoal = [sys.executable, "-m", "shoal", "lab"]
    run = lambda *a: subprocess.run([*shoal, *a], capture_output=True, text=True, cwd=Path(__file__).parents[2])  # noqa: E731
    assert run("socket", "--name", made.name, "h2").stdout == f"/run/shoal-lab/{made.name}/h2/shoal.sock\n"
    status = run("status", "--name", made.name).stdout.splitlines()
    assert status[0].split() == ["HOST", "NETNS", "ADDRESS", "PID", "DAEMON", "SOCKET"]
    assert [line.split()[4] for line in status[1:]] == ["up", "up"]
    executed = run("exec", "--name", made.name, "h1", "--", "sh", "-c", "ip -br -4 addr show eth0; exit 5")
    assert executed.returncode == 5 and "192.168.200.11/24" in executed.stdout


def test_restart_daemon_sigkill_starts_a_new_one(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(1)
    old = made.daemon_pid("h1")
    new = made.restart_daemon("h1", kill9=True)
    assert new != old and made.daemon_pid("h1") == new
    assert not Path(f"/proc/{old}").exists() or Path(f"/proc/{old}/stat").read_text().split()[2] == "Z"
    with Client(made.url("h1"), timeout=5) as client:
        assert client.ping()


def test_restart_daemon_sigterm(lab: LabFactory, fake_daemon: Callable[..., Path]) -> None:
    fake_daemon()
    made = lab(1)
    old = made.daemon_pid("h1")
    assert made.restart_daemon("h1", kill9=False) != old
    assert [s.answers for s in made.status()] == [True]


def test_down_removes_everything_up_made(fake_daemon: Callable[..., Path], lab_names: list[str]) -> None:
    fake_daemon()
    name = unique_lab_name()
    lab_names.append(name)
    made = Lab.up(name, 2)
    pids = [made.daemon_pid(h) for h in made.hosts]
    made.down()
    assert lab_namespaces(name) == []
    assert not (RUN_ROOT / name).exists() and not (DATA_ROOT / name).exists()
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)


def _mount_of(path: Path) -> tuple[str, set[str]] | None:
    """(fstype, options) of the mount at exactly `path`, or None."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if fields[4] == str(path):
            return right.split()[0], set(fields[5].split(","))
    return None


def test_the_lab_run_dir_is_a_tmpfs_like_a_hosts_run_until_down(fake_daemon: Callable[..., Path],
                                                                 lab_names: list[str]) -> None:
    fake_daemon()
    name = unique_lab_name()
    lab_names.append(name)
    made = Lab.up(name, 1)
    mounted = _mount_of(RUN_ROOT / name)
    assert mounted is not None and mounted[0] == "tmpfs"
    assert {"nosuid", "nodev"} <= mounted[1]
    made.down()
    assert _mount_of(RUN_ROOT / name) is None and not (RUN_ROOT / name).exists()


def test_down_of_a_missing_lab_is_quiet() -> None:
    down(unique_lab_name())


def test_down_after_a_crash_derives_everything_from_names(lab_names: list[str], tmp_path: Path) -> None:
    """No state file, no pid files: a leftover container (runc), a process in a container
    namespace, a mount under the lab's data dir, and namespaces with the lab's prefix."""
    name = unique_lab_name()
    lab_names.append(name)
    namespaces = [f"shoal-{name}-sw", f"shoal-{name}-h1", f"shoal-{name}-h1-c0ffee"]
    for ns in namespaces:
        subprocess.run(["ip", "netns", "add", ns], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", namespaces[2], "sleep", "600"])
    mount_point = DATA_ROOT / name / "h1" / "containers" / "rootfs"
    mount_point.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(mount_point)], check=True)
    runc_root = RUN_ROOT / name / "h1" / "runc"
    runc_root.mkdir(parents=True)
    bundle = _busybox_bundle(tmp_path, f"/run/netns/{namespaces[1]}")
    with open(tmp_path / "runc.log", "wb") as log:  # not a pipe: the container would hold it open
        subprocess.run(["runc", "--root", str(runc_root), "run", "-d", "--bundle", str(bundle), "ctr1"], check=True,
                       stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    runc_pid = json.loads((runc_root / "ctr1" / "state.json").read_text())["init_process_pid"]

    down(name)

    assert lab_namespaces(name) == []
    assert sleeper.wait(timeout=10) == -signal.SIGKILL
    wait_until(lambda: not Path(f"/proc/{runc_pid}").exists(), 10, what="the runc container to be reaped")
    assert str(mount_point) not in Path("/proc/self/mountinfo").read_text()
    assert not (RUN_ROOT / name).exists() and not (DATA_ROOT / name).exists()


def _busybox_bundle(tmp_path: Path, netns_path: str) -> Path:
    bundle = tmp_path / "bundle"
    (bundle / "rootfs" / "bin").mkdir(parents=True)
    busybox = shutil.which("busybox") or "/bin/busybox"
    shutil.copy(busybox, bundle / "rootfs" / "bin" / "busybox")
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["/bin/busybox", "sleep", "600"]
    config["linux"].pop("resources", None)  # the hybrid cgroup hierarchy here: keep it minimal
    config["linux"]["namespaces"] = [ns if ns["type"] != "network" else {"type": "network", "path": netns_path}
                                     for ns in config["linux"]["namespaces"]]
    (bundle / "config.json").write_text(json.dumps(config))
    return bundle


def test_real_daemons_serve_network_ls_in_each_host(lab: LabFactory) -> None:
    made = lab(2)
    for host in made.hosts:
        result = made.exec(host, [sys.executable, "-m", "shoal", "network", "ls"])
        names = sorted(line.split()[1] for line in result.stdout.splitlines()[1:])
        assert names == ["bridge", "host", "none"]
