"""Crash consistency (issue 7 item 4): a create/start/connect/disconnect/stop/rm workload runs
against one lab daemon, which is SIGKILLed at random points and restarted, many times.

After every restart the kernel and runc are compared with what the daemon says (its API, its
IPAM files). The kill loop runs once per module; each test below checks one promise over every
round. SHOAL_KILLS (default 50) and SHOAL_KILL_SEED (default: from the clock) set the run;
the seed is printed and in every failure message.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from shoal.client import ClientError, DaemonError
from shoal.lab import Lab, data_dir, run_dir
from tests.lab.helpers import running_lab, wait_until

pytestmark = pytest.mark.lab

KILLS = int(os.environ.get("SHOAL_KILLS", "50"))
SEED = int(os.environ.get("SHOAL_KILL_SEED", str(time.time_ns() % 1_000_000)))
WORKERS = 3
MAX_CONTAINERS = 10
USER_NETWORKS = ("kc1", "kc2")
SCRATCH_NETWORK = "kscratch"
RUNC_ALIVE = ("creating", "created", "running", "paused")


@dataclass(slots=True)
class Findings:
    """What the kill loop saw: promise -> ["round N: detail", ...]."""

    seed: int
    kills: int = 0
    operations: int = 0
    seconds: float = 0.0
    broken: dict[str, list[str]] = field(default_factory=dict)

    def add(self, promise: str, round_: int, detail: str) -> None:
        self.broken.setdefault(promise, []).append(f"round {round_}: {detail}")

    def check(self, promise: str) -> None:
        found = self.broken.get(promise, [])
        assert not found, f"seed {self.seed} ({self.kills} kills): {promise} broken:\n" + "\n".join(found[:10])


# ---- the workload -------------------------------------------------------------------------------
def _worker(lab: Lab, rng: random.Random, stop: threading.Event, counter: list[int]) -> None:
    """Random operations until stop is set; every error (refusals, the daemon dying) is expected."""
    client = lab.client("h1", timeout=15.0)
    try:
        while not stop.is_set():
            try:
                _one_operation(client, rng)
                counter[0] += 1
            except (ClientError, OSError):
                if stop.is_set():
                    return
                time.sleep(0.01)
    finally:
        client.close()


def _one_operation(client, rng: random.Random) -> None:
    containers = client.get("/containers/json", {"all": "1"})
    op = rng.choices(
        ["run", "create", "start", "stop", "connect", "disconnect", "rm", "network"],
        weights=[5 if len(containers) < MAX_CONTAINERS else 0, 1, 2, 2, 3, 3, 3 if containers else 0, 1],
    )[0]
    pick = rng.choice(containers)["Id"] if containers else None
    if op in ("run", "create"):
        mode = rng.choice(["bridge", *USER_NETWORKS])
        created = client.post("/containers/create",
                              {"Image": "busybox", "Cmd": ["sleep", "600"], "HostConfig": {"NetworkMode": mode}})
        if op == "run":
            client.post(f"/containers/{created['Id']}/start")
    elif pick is None:
        return
    elif op == "start":
        client.post(f"/containers/{pick}/start")
    elif op == "stop":
        client.post(f"/containers/{pick}/stop", query={"t": "0"})
    elif op == "connect":
        client.post(f"/networks/{rng.choice(USER_NETWORKS)}/connect", {"Container": pick})
    elif op == "disconnect":
        client.post(f"/networks/{rng.choice(USER_NETWORKS)}/disconnect", {"Container": pick, "Force": False})
    elif op == "rm":
        client.delete(f"/containers/{pick}", {"force": "1"})
    if op == "network":
        try:
            client.delete(f"/networks/{SCRATCH_NETWORK}")
        except DaemonError:
            client.post("/networks/create", {"Name": SCRATCH_NETWORK, "Driver": "bridge"})


# ---- what the daemon says, what the kernel and runc have ---------------------------------------------
def _run(argv: list[str]) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


def _runc(lab: Lab) -> dict[str, str]:
    out = _run(["runc", "--root", str(run_dir(lab.name, "h1") / "runc"), "list", "--format", "json"])
    return {e["id"]: e["status"] for e in json.loads(out) or []}


def _links(lab: Lab, kind: str) -> set[str]:
    out = lab.exec("h1", ["ip", "-o", "link", "show", "type", kind]).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


def _host_ifname(endpoint_id: str) -> str:
    return "veth" + hashlib.sha256(endpoint_id.encode()).hexdigest()[:7]


def _mounts_under(root: Path) -> set[str]:
    with open("/proc/self/mountinfo") as f:
        points = {line.split()[4] for line in f}
    return {p for p in points if p.startswith(f"{root}/")}


def _check_round(lab: Lab, round_: int, found: Findings) -> None:
    client = lab.client("h1", timeout=30.0)
    try:
        containers = {c["Id"]: client.get(f"/containers/{c['Id']}/json")
                      for c in client.get("/containers/json", {"all": "1"})}
        networks = client.get("/networks")
    finally:
        client.close()
    running = {i for i, c in containers.items() if c["State"]["Status"] == "running"}
    runc = _runc(lab)

    # ps -a matches runc
    runc_running = {i for i, s in runc.items() if s in RUNC_ALIVE}
    for cid in sorted(runc_running - running):
        state = containers[cid]["State"]["Status"] if cid in containers else "missing from ps -a"
        found.add("ps -a matches runc", round_, f"runc runs {cid[:12]}, the daemon says {state}")
    for cid in sorted(running - runc_running):
        found.add("ps -a matches runc", round_, f"{cid[:12]} is running for the daemon, {runc.get(cid, 'absent')} in runc")
    for cid in sorted(set(runc) - set(containers)):
        found.add("no orphan runc container", round_, f"runc has {cid[:12]} ({runc[cid]}), ps -a does not")

    # namespaces: one per running container, no other with its prefix
    prefix = f"{lab.netns('h1')}-"
    netns = {n.split()[0] for n in _run(["ip", "netns", "list"]).splitlines() if n.startswith(prefix)}
    wanted_netns = {f"{prefix}{cid[:12]}" for cid in running}
    for name in sorted(netns - wanted_netns):
        found.add("no orphan namespace", round_, f"namespace {name}")
    for name in sorted(wanted_netns - netns):
        found.add("no orphan namespace", round_, f"running container's namespace {name} is missing")

    # links: a veth per endpoint of a running container; a bridge per bridge network
    wanted_veths = {
        _host_ifname(ep["EndpointID"])
        for cid in running for ep in (containers[cid]["NetworkSettings"]["Networks"] or {}).values()
        if ep.get("EndpointID") and ep.get("IPAddress")
    }
    veths = _links(lab, "veth") - {"eth0"}  # eth0: the lab host's own uplink
    for name in sorted(veths - wanted_veths):
        found.add("no orphan link", round_, f"veth {name}")
    for name in sorted(wanted_veths - veths):
        found.add("every live endpoint has its veth", round_, f"veth {name} is missing")
    bridge_nets = [n for n in networks if n["Driver"] == "bridge"]
    wanted_bridges = {n["Options"].get("com.docker.network.bridge.name") or f"br-{n['Id'][:12]}" for n in bridge_nets}
    for name in sorted(_links(lab, "bridge") - wanted_bridges):
        found.add("no orphan bridge", round_, f"bridge {name}")

    # firewall rules name only bridges and subnets of existing networks
    rules = lab.exec("h1", ["iptables-save"]).stdout
    subnets = {c["Subnet"] for n in bridge_nets for c in (n["IPAM"]["Config"] or [])}
    for bridge in sorted(set(re.findall(r"\bbr-[0-9a-f]{12}\b", rules)) - wanted_bridges):
        found.add("no stale rule", round_, f"rules name bridge {bridge}")
    for line in rules.splitlines():
        match = re.search(r"-s (\S+) .*-j MASQUERADE", line)
        if match and match.group(1) not in subnets:
            found.add("no stale rule", round_, f"MASQUERADE for {match.group(1)}: {line.strip()}")

    # mounts under the daemon's bundles and writable layers belong to containers ps -a shows
    for root in (run_dir(lab.name, "h1") / "bundles", data_dir(lab.name, "h1") / "runtime"):
        for point in sorted(_mounts_under(root)):
            owner = Path(point).relative_to(root).parts[0]
            if owner not in containers:
                found.add("no orphan mount", round_, f"mount {point}")

    # IPAM: the addresses in use are exactly those of live endpoints
    live: dict[str, set[str]] = {}
    for cid in running:
        for ep in (containers[cid]["NetworkSettings"]["Networks"] or {}).values():
            if ep.get("IPAddress"):
                live.setdefault(ep["NetworkID"], set()).add(ep["IPAddress"])
    holders = {  # any container's endpoint naming an address: tells a leak's origin
        (ep["NetworkID"], ep["IPAddress"]): f"{containers[cid]['State']['Status']} {cid[:12]}"
        for cid in containers for ep in (containers[cid]["NetworkSettings"]["Networks"] or {}).values()
        if ep.get("IPAddress")
    }
    ipam_dir = data_dir(lab.name, "h1") / "engine" / "ipam"
    for path in sorted(ipam_dir.glob("*.json")):
        used = set(json.loads(path.read_text()).get("used", []))
        net_id = path.stem
        for address in sorted(used - live.get(net_id, set())):
            found.add("every IPAM address belongs to a live endpoint", round_,
                      f"{address} in network {net_id[:12]} is allocated, no running container has it"
                      f" ({holders.get((net_id, address), 'no record names it')})")
        for address in sorted(live.get(net_id, set()) - used):
            found.add("every IPAM address belongs to a live endpoint", round_,
                      f"{address} in network {net_id[:12]} is used by a container but free in IPAM")


def _kill_loop(lab: Lab) -> Findings:
    print(f"kill-at-random-points: seed {SEED}, {KILLS} kills")
    found = Findings(SEED)
    rng = random.Random(SEED)
    client = lab.client("h1")
    for name in USER_NETWORKS:
        client.post("/networks/create", {"Name": name, "Driver": "bridge"})
    client.close()
    started = time.monotonic()
    for round_ in range(1, KILLS + 1):
        stop = threading.Event()
        counter = [0]
        workers = [threading.Thread(target=_worker, args=(lab, random.Random(rng.random()), stop, counter),
                                    daemon=True) for _ in range(WORKERS)]
        for worker in workers:
            worker.start()
        time.sleep(rng.uniform(0.05, 1.5))  # the random point: the workload runs meanwhile
        pid = lab.daemon_pid("h1")
        os.kill(pid, signal.SIGKILL)
        stop.set()
        wait_until(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), timeout=10)
        for worker in workers:
            worker.join(timeout=20)
        found.operations += counter[0]
        found.kills += 1
        try:
            lab.start_daemon("h1")
        except Exception as exc:  # noqa: BLE001 - reported as the broken promise
            found.add("the daemon restarts after every kill", round_, str(exc)[-2000:])
            break
        _check_round(lab, round_, found)
    found.seconds = time.monotonic() - started
    print(f"kill-at-random-points: seed {SEED}: {found.kills} kills, {found.operations} operations completed, "
          f"{found.seconds:.1f} s; broken: {sorted(found.broken)}")
    return found


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, IndexError):
        return True


@pytest.fixture(scope="module")
def findings():
    with running_lab(hosts=1) as lab:
        yield _kill_loop(lab)


def test_the_daemon_restarts_after_every_kill(findings):
    findings.check("the daemon restarts after every kill")
    assert findings.kills >= KILLS, f"seed {findings.seed}: only {findings.kills} kills"


def test_ps_a_matches_runc_after_every_kill(findings):
    findings.check("ps -a matches runc")


def test_no_orphan_runc_container_after_any_kill(findings):
    findings.check("no orphan runc container")


def test_no_orphan_namespace_after_any_kill(findings):
    findings.check("no orphan namespace")


def test_no_orphan_mount_after_any_kill(findings):
    findings.check("no orphan mount")


def test_no_orphan_link_after_any_kill(findings):
    findings.check("no orphan link")


def test_every_live_endpoint_has_its_veth_after_every_kill(findings):
    findings.check("every live endpoint has its veth")


def test_no_orphan_bridge_after_any_kill(findings):
    findings.check("no orphan bridge")


def test_no_stale_firewall_rule_after_any_kill(findings):
    findings.check("no stale rule")


def test_every_ipam_address_belongs_to_a_live_endpoint_after_every_kill(findings):
    findings.check("every IPAM address belongs to a live endpoint")
