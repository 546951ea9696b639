"""Container state across crashes, corrupt records, full disks and fd exhaustion (issue 7,
items 3-5) on a one-host lab: the state of a container comes from runc and its shim.

Each test builds its own lab (they stop daemons, mount tmpfs and rewrite state files).
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from shoal.client import DaemonError
from shoal.lab import Lab, data_dir, run_dir
from tests.lab.helpers import shoal, wait_until

pytestmark = pytest.mark.lab


def etc_root(lab: Lab) -> Path:
    """Where h1's daemon keeps the containers' /etc files (its exec root)."""
    return run_dir(lab.name, "h1") / "containers"


def data(lab: Lab) -> Path:
    return data_dir(lab.name, "h1")


def bundle(lab: Lab, container_id: str) -> Path:
    """The container's runc bundle (config.json, pid, exit and shim files), on the daemon's exec root."""
    return run_dir(lab.name, "h1") / "bundles" / container_id


def record_path(lab: Lab, container_id: str) -> Path:
    return data(lab) / "engine" / "containers" / f"{container_id}.json"


def runc_ids(lab: Lab) -> dict[str, str]:
    """id -> status of every container runc knows under the daemon's runc root."""
    out = subprocess.run(["runc", "--root", str(run_dir(lab.name, "h1") / "runc"), "list", "--format", "json"],
                         capture_output=True, text=True, check=True).stdout
    return {e["id"]: e["status"] for e in json.loads(out) or []}


def container_netns(lab: Lab) -> list[str]:
    prefix = f"{lab.netns('h1')}-"
    return sorted(n.split()[0] for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                                        check=True).stdout.splitlines() if n.startswith(prefix))


def run_id(lab: Lab, *args: str) -> str:
    return shoal(lab, "run", "-d", *args).stdout.strip()


def state_of(lab: Lab, ref: str) -> dict:
    return lab.client("h1").get(f"/containers/{ref}/json")["State"]


@pytest.fixture
def tmpfs_mounts():
    """tmpfs mounted by a test; unmounted at the end whatever happened."""
    mounted: list[Path] = []

    def mount(target: Path, size: str = "64k") -> Path:
        target.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], check=True)
        mounted.append(target)
        return target

    yield mount
    for target in reversed(mounted):
        subprocess.run(["umount", "-l", str(target)], check=False)


def fill(directory: Path) -> None:
    """Writes into directory until the filesystem is full (ENOSPC)."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == 28
    finally:
        os.close(fd)


# ---- corrupt records ---------------------------------------------------------------------
def test_a_corrupt_container_record_is_moved_aside_named_in_info_and_the_rest_starts(lab):
    lab = lab(hosts=1)
    keep = run_id(lab, "--name", "keep", "busybox", "sleep", "600")
    broken = lab.client("h1").post("/containers/create", {"Image": "busybox", "Cmd": ["true"]}, {"name": "broken"})["Id"]
    lab.stop_daemon("h1", kill9=True)
    record_path(lab, broken).write_text('{"id": "' + broken[:10])
    lab.start_daemon("h1")
    listed = lab.client("h1").get("/containers/json", {"all": "1"})
    assert [(c["Names"], c["State"]) for c in listed] == [(["/keep"], "running")]
    aside = [p for p in record_path(lab, broken).parent.iterdir() if p.name.startswith(f"{broken}.json.corrupt-")]
    assert len(aside) == 1
    warnings = lab.client("h1").get("/info")["Warnings"]
    assert warnings == [
        f"WARNING: unreadable state file {record_path(lab, broken)} moved to {aside[0]}: "
        "JSONDecodeError: Unterminated string starting at: line 1 column 8 (char 7)"
    ]
    assert state_of(lab, keep)["Running"] is True


# ---- a full disk ---------------------------------------------------------------------------
def test_create_on_a_full_disk_answers_500_naming_the_cause_and_leaves_nothing(lab, tmpfs_mounts):
    lab = lab(hosts=1)
    records = tmpfs_mounts(data(lab) / "engine" / "containers")
    fill(records)
    with pytest.raises(DaemonError) as refused:
        lab.client("h1").post("/containers/create", {"Image": "busybox", "Cmd": ["true"]}, {"name": "full"})
    assert refused.value.status == 500
    assert refused.value.message.startswith("cannot save the record of container full: No space left on device (")
    assert os.listdir(records) == ["filler"]  # no record, no temp file
    assert lab.client("h1").get("/containers/json", {"all": "1"}) == []


def test_network_create_on_a_full_disk_answers_500_naming_the_cause_and_leaves_nothing(lab, tmpfs_mounts):
    lab = lab(hosts=1)
    before_links = lab.exec("h1", ["ip", "-o", "link", "show"]).stdout.count("br-")
    records = tmpfs_mounts(data(lab) / "engine" / "networks")
    fill(records)
    with pytest.raises(DaemonError) as refused:
        lab.client("h1").post("/networks/create", {"Name": "nf", "IPAM": {"Config": [{"Subnet": "10.99.0.0/24"}]}})
    assert refused.value.status == 500
    assert refused.value.message == "cannot save the record of network nf: No space left on device"
    assert os.listdir(records) == ["filler"]  # no record, no temp file
    assert "nf" not in [n["Name"] for n in lab.client("h1").get("/networks")]
    assert lab.exec("h1", ["ip", "-o", "link", "show"]).stdout.count("br-") == before_links
    assert "10.99.0.0/24" not in lab.exec("h1", ["iptables-save"]).stdout


def test_run_on_a_full_disk_answers_500_and_its_start_leaves_no_network_runc_or_files(lab, tmpfs_mounts):
    lab = lab(hosts=1)
    etc_files = tmpfs_mounts(etc_root(lab))
    fill(etc_files)
    result = shoal(lab, "run", "-d", "--name", "full", "busybox", "sleep", "60", check=False)
    container_id = json.loads(shoal(lab, "inspect", "full").stdout)[0]["Id"]
    assert result.returncode == 125
    assert result.stderr.splitlines()[0] == (
        "shoal: Error response from daemon: failed to start container full: cannot write its /etc files in "
        f"{etc_files / container_id}: no space left on device"
    )
    assert state_of(lab, "full")["Status"] == "created"
    assert runc_ids(lab) == {}
    assert not (data(lab) / "runtime" / container_id).exists()
    assert not bundle(lab, container_id).exists()
    assert os.listdir(etc_files) == ["filler"]
    assert container_netns(lab) == []
    assert lab.exec("h1", ["ip", "-o", "link", "show", "master", "docker0"]).stdout == ""
    ipam = data(lab) / "engine" / "ipam"
    assert [json.loads(p.read_text())["used"] for p in ipam.glob("*.json")] == [[]]


# ---- files of removed containers -----------------------------------------------------------
def test_removing_a_container_removes_its_etc_files_and_leftovers_go_at_start(lab):
    lab = lab(hosts=1)
    container_id = run_id(lab, "--name", "short", "busybox", "sleep", "600")
    assert sorted(os.listdir(etc_root(lab) / container_id)) == ["hostname", "hosts", "resolv.conf"]
    shoal(lab, "rm", "-f", "short")
    assert os.listdir(etc_root(lab)) == []
    leftover = etc_root(lab) / ("f" * 64)
    leftover.mkdir()
    (leftover / "hosts").write_text("x")
    lab.restart_daemon("h1", kill9=True)
    assert os.listdir(etc_root(lab)) == []


# ---- runc is the truth -----------------------------------------------------------------------
def test_a_runc_container_without_a_record_is_removed_at_start(lab):
    lab = lab(hosts=1)
    orphan = run_id(lab, "--name", "orphan", "busybox", "sleep", "600")
    keep = run_id(lab, "--name", "keep", "busybox", "sleep", "600")
    lab.stop_daemon("h1", kill9=True)
    record_path(lab, orphan).unlink()
    lab.start_daemon("h1")
    assert runc_ids(lab) == {keep: "running"}
    assert not (data(lab) / "runtime" / orphan).exists()
    assert not bundle(lab, orphan).exists()
    assert container_netns(lab) == [f"{lab.netns('h1')}-{keep[:12]}"]


def test_a_created_record_whose_container_runs_in_runc_is_undone_to_created(lab):
    """What a SIGKILL between runc's start and the record's commit leaves."""
    lab = lab(hosts=1)
    half = run_id(lab, "--name", "half", "busybox", "sleep", "600")
    lab.stop_daemon("h1", kill9=True)
    record = json.loads(record_path(lab, half).read_text())
    record.update(state="created", pid=0, netns="", started_at="0001-01-01T00:00:00Z")
    record_path(lab, half).write_text(json.dumps(record))
    lab.start_daemon("h1")
    assert (state_of(lab, "half")["Status"], state_of(lab, "half")["Pid"]) == ("created", 0)
    assert runc_ids(lab) == {}
    assert container_netns(lab) == []
    shoal(lab, "start", "half")
    assert state_of(lab, "half")["Status"] == "running"


def test_a_container_that_dies_with_the_daemon_down_and_no_exit_file_is_exited_255(lab):
    lab = lab(hosts=1)
    gone = run_id(lab, "--name", "gone", "busybox", "sleep", "600")
    pid = state_of(lab, gone)["Pid"]
    lab.stop_daemon("h1", kill9=True)
    shim_pid = int((bundle(lab, gone) / "shim.pid").read_text().split()[0])
    os.kill(shim_pid, 9)  # the shim dies first: nobody records the code
    os.kill(pid, 9)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), timeout=10)
    lab.start_daemon("h1")
    state = state_of(lab, gone)
    assert (state["Status"], state["ExitCode"]) == ("exited", 255)
    assert container_netns(lab) == []


def test_running_out_of_file_descriptors_never_marks_a_running_container_exited(lab):
    """Issue 7 item 3: with no descriptor to spare the daemon cannot read /proc; its
    containers still run and must stay `running`."""
    lab = lab(hosts=1)
    ids = [run_id(lab, "busybox", "sleep", "600") for _ in range(3)]
    daemon = lab.daemon_pid("h1")
    limits = subprocess.run(["prlimit", "--pid", str(daemon), "--nofile", "--output", "SOFT,HARD", "--noheadings"],
                            capture_output=True, text=True, check=True).stdout.split()
    subprocess.run(["prlimit", "--pid", str(daemon), f"--nofile=3:{limits[1]}"], check=True)
    log = lab.log("h1")
    logged_before = log.stat().st_size
    try:
        # Every watcher has hit the limit once it has logged about its container.
        wait_until(lambda: all(i in log.read_text(errors="replace")[logged_before:] for i in ids), timeout=20)
    finally:
        subprocess.run(["prlimit", "--pid", str(daemon), f"--nofile={limits[0]}:{limits[1]}"], check=True)
    for container_id in ids:
        state = state_of(lab, container_id)
        assert (state["Status"], state["Running"]) == ("running", True)
        assert runc_ids(lab)[container_id] == "running"


def test_a_stopped_record_that_still_holds_addresses_releases_them_at_start(lab):
    """What a SIGKILL after a start saved its network but before runc ran anything leaves."""
    lab = lab(hosts=1)
    shoal(lab, "network", "create", "--subnet", "10.77.0.0/24", "held")
    cut = run_id(lab, "--name", "cut", "--network", "held", "busybox", "sleep", "600")
    lab.stop_daemon("h1", kill9=True)
    runc_root = str(run_dir(lab.name, "h1") / "runc")
    subprocess.run(["runc", "--root", runc_root, "delete", "--force", cut], check=True)
    record = json.loads(record_path(lab, cut).read_text())
    assert [e["ipv4"] for e in record["endpoints"].values()] == ["10.77.0.2"]
    record.update(state="created", pid=0)
    record_path(lab, cut).write_text(json.dumps(record))
    lab.start_daemon("h1")
    assert state_of(lab, "cut")["Status"] == "created"
    assert container_netns(lab) == []
    held = lab.client("h1").get("/networks/held")["Id"]
    assert json.loads((data(lab) / "engine" / "ipam" / f"{held}.json").read_text())["used"] == []
    saved = json.loads(record_path(lab, cut).read_text())
    assert (saved["netns"], [e["ipv4"] for e in saved["endpoints"].values()]) == ("", [""])
    shoal(lab, "start", "cut")
    assert state_of(lab, "cut")["Status"] == "running"


def test_a_runc_container_shoal_did_not_make_is_left_alone_at_start(lab, tmp_path):
    """Same runc root, a bundle that is not shoal's: not an orphan of ours, never removed."""
    lab = lab(hosts=1)
    image_rootfs = next((data(lab) / "images" / "sha256").glob("*/rootfs"))
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    subprocess.run(["runc", "spec"], cwd=bundle, check=True)
    spec = json.loads((bundle / "config.json").read_text())
    spec["process"].update(terminal=False, args=["sleep", "600"])
    spec["root"] = {"path": str(image_rootfs), "readonly": True}
    (bundle / "config.json").write_text(json.dumps(spec))
    runc_root = str(run_dir(lab.name, "h1") / "runc")
    subprocess.run(["runc", "--root", runc_root, "run", "-d", "--bundle", str(bundle), "foreign"], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        lab.restart_daemon("h1", kill9=True)
        assert runc_ids(lab) == {"foreign": "running"}
        assert "runc container foreign under" in lab.log("h1").read_text()
    finally:
        subprocess.run(["runc", "--root", runc_root, "delete", "--force", "foreign"], check=False)
