"""Benchmark: TCP throughput (iperf3) between endpoints on two lab hosts over shoal's overlay data
plane, over a hand-made VXLAN (ip/bridge commands, same MTU) and over Docker's own overlay (a swarm
of two dockerd 20.10 in lab namespaces, DESIGN §10), measured in interleaved rounds of one run.

- shoal: vxlan.dataplane (the overlay driver's data plane) on lab hosts h1 and h2: the network's own
  namespace with bridge and VXLAN device, a veth into an endpoint namespace, peers programmed as
  gossip would. Driven directly: the daemon's route to create an overlay (the managers' allocation)
  and gossip land separately, so this measures the data plane, not the control path.
- hand-made: in the same two lab hosts, a VXLAN device (other VNI, same port, `local` pinned,
  nolearning) on a bridge in the host namespace, a veth to an endpoint namespace, static FDB and
  neighbour entries; MTU 1450 like shoal's on this 1500-byte underlay.
- docker: a lab whose daemons are dockerd (bench/swarm.py's command), `swarm init` on h1, h2 joins,
  an attachable overlay, one busybox container per host; iperf3 runs in the containers' network
  namespaces (nsenter --net=/proc/PID/ns/net: busybox has no iperf3).

Each round runs every system once (the order rotates), `iperf3 -t SECONDS` from h1's endpoint to
h2's. Prints the per-round figures, the medians, and the ratios shoal/hand-made (goal >= 0.95) and
shoal/docker (goal >= 1.0). Everything is torn down, even on failure.
Usage: python bench/overlay.py [--rounds 3] [--seconds 5] [--no-docker]
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address as A, IPv4Interface as I, IPv4Network as N
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.swarm import DOCKER_BIN, KEY_JSON, docker_system, log, remove_docker_key, sigterm_as_interrupt  # noqa: E402
from shoal.lab import DAEMON_CMD_ENV, Lab  # noqa: E402
from vxlan import ns  # noqa: E402
from vxlan.dataplane import LocalEndpoint, OverlayDataPlane  # noqa: E402
from vxlan.types import OverlayPeer, OverlaySpec  # noqa: E402

BUSYBOX_TAR = ROOT / "build" / "images" / "busybox.tar"
IPERF_PORT = 5201
GOALS = {"hand-made": 0.95, "docker": 1.0}


def run(argv: list[str], timeout: float = 120, check: bool = True, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {(result.stderr or result.stdout).strip()[-400:]}")
    return result


@dataclass
class Target:
    """One system's pair of endpoints: how to run a command in each (argv prefixes) and the server's address."""

    label: str
    client: list[str]  # argv prefix entering h1's endpoint
    server: list[str]  # argv prefix entering h2's endpoint
    server_ip: str
    gbits: list[float] = field(default_factory=list)
    server_proc: subprocess.Popen[str] | None = None

    def start_server(self) -> None:
        self.server_proc = subprocess.Popen([*self.server, "iperf3", "-s", "-p", str(IPERF_PORT)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while run([*self.server, "ss", "-ltn"], check=False).stdout.find(f":{IPERF_PORT} ") < 0:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.label}: iperf3 server did not listen within 10 s")
            time.sleep(0.05)

    def measure(self, seconds: float) -> float:
        out = run([*self.client, "iperf3", "-c", self.server_ip, "-p", str(IPERF_PORT), "-t", str(seconds), "-J"],
                  timeout=seconds + 60).stdout
        gbits = json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
        self.gbits.append(gbits)
        return gbits

    def stop(self) -> None:
        if self.server_proc is not None:
            self.server_proc.kill()
            self.server_proc.wait()
            self.server_proc = None


# ---- shoal's data plane and the hand-made VXLAN, in one lab with the fake daemon ---------------------
def fake_daemon_cmd(workdir: Path) -> str:
    """The lab's daemons answer /_ping and nothing else (tests/lab/conftest.py's FAKE_DAEMON): the two
    VXLAN systems need only the lab's hosts."""
    from tests.lab.conftest import FAKE_DAEMON as script

    path = workdir / "fake_daemon.py"
    path.write_text(script)
    return f"{sys.executable} {path}"


def up_lab(name: str, daemon_cmd: str, hosts: int = 2, deadline: float = 60) -> Lab:
    saved = os.environ.get(DAEMON_CMD_ENV)
    os.environ[DAEMON_CMD_ENV] = daemon_cmd
    try:
        return Lab.up(name, hosts, ping_deadline=deadline)
    finally:
        if saved is None:
            os.environ.pop(DAEMON_CMD_ENV, None)
        else:
            os.environ[DAEMON_CMD_ENV] = saved


def shoal_target(lab: Lab, planes: list[OverlayDataPlane]) -> Target:
    net_id = "be0c" + secrets.token_hex(30)
    endpoints = {"h1": (I("10.0.9.2/24"), "02:42:0a:00:09:02"), "h2": (I("10.0.9.3/24"), "02:42:0a:00:09:03")}
    for host in ("h1", "h2"):
        plane = OverlayDataPlane(f"{lab.netns(host)}-", ns.path_of(lab.netns(host)))
        planes.append(plane)
        spec = OverlaySpec(net_id, "bench", 4097, N("10.0.9.0/24"), I("10.0.9.1/24"), A(lab.address(host)))
        address, mac = endpoints[host]
        plane.join(spec, LocalEndpoint("ep-" + host, ns.create(f"{lab.netns(host)}-sh"), "eth0", address, mac))
        other = "h2" if host == "h1" else "h1"
        plane.add_peers(net_id, [OverlayPeer(endpoints[other][0].ip, endpoints[other][1], A(lab.address(other)))])
    return Target("shoal", ["ip", "netns", "exec", f"{lab.netns('h1')}-sh"],
                  ["ip", "netns", "exec", f"{lab.netns('h2')}-sh"], "10.0.9.3")


def handmade_target(lab: Lab) -> Target:
    """The textbook VXLAN: device and bridge in the host namespace, a veth to the endpoint."""
    addresses = {"h1": ("10.0.8.2", "02:42:0a:00:08:02"), "h2": ("10.0.8.3", "02:42:0a:00:08:03")}
    for host in ("h1", "h2"):
        endpoint_ns = f"{lab.netns(host)}-hm"
        ns.create(endpoint_ns)
        other = "h2" if host == "h1" else "h1"
        ip, mac = addresses[host]
        oip, omac = addresses[other]
        batch = [
            f"link add vxhm type vxlan id 5000 local {lab.address(host)} dstport 4789 nolearning proxy",
            "link set vxhm mtu 1450",
            "link add brhm type bridge", "link set brhm mtu 1450",
            "link set vxhm master brhm", "link set vxhm up", "link set brhm up",
            f"link add vhm type veth peer name eth0 netns {endpoint_ns}",
            "link set vhm mtu 1450", "link set vhm master brhm", "link set vhm up",
            f"neigh replace {oip} lladdr {omac} dev vxhm nud permanent",
        ]
        subprocess.run(["ip", "-n", lab.netns(host), "-batch", "-"], input="".join(f"{c}\n" for c in batch),
                       text=True, check=True, capture_output=True)
        run(["bridge", "-n", lab.netns(host), "fdb", "replace", omac, "dev", "vxhm", "dst", lab.address(other),
             "self", "permanent"])
        subprocess.run(["ip", "-n", endpoint_ns, "-batch", "-"], text=True, check=True, capture_output=True,
                       input=f"link set eth0 address {mac}\nlink set eth0 mtu 1450\naddr add {ip}/24 dev eth0\n"
                             "link set eth0 up\n")
    return Target("hand-made", ["ip", "netns", "exec", f"{lab.netns('h1')}-hm"],
                  ["ip", "netns", "exec", f"{lab.netns('h2')}-hm"], "10.0.8.3")


# ---- Docker's overlay ---------------------------------------------------------------------------------
def docker_target(log: Callable[[str], None]) -> tuple[Target, Lab]:
    system = docker_system(180.0)
    lab = system.up(2)
    try:
        system.run("h1", "swarm", "init", "--advertise-addr", lab.address("h1"))
        token = system.run("h1", "swarm", "join-token", "-q", "worker").stdout.strip()
        system.run("h2", "swarm", "join", "--token", token, "--advertise-addr", lab.address("h2"),
                   f"{lab.address('h1')}:2377")
        # Same MTU as the two others (dockerd 20.10 picks 1400 here from the machine's own uplink).
        system.run("h1", "network", "create", "-d", "overlay", "--attachable", "--subnet", "10.0.7.0/24",
                   "--opt", "com.docker.network.driver.mtu=1450", "ovbench")
        pids = {}
        for host in ("h1", "h2"):
            system.run(host, "load", "-i", str(BUSYBOX_TAR))
            system.run(host, "run", "-d", "--name", f"ib{host}", "--network", "ovbench", "busybox", "sleep", "36000")
            pids[host] = system.run(host, "inspect", "-f", "{{.State.Pid}}", f"ib{host}").stdout.strip()
        server_ip = system.run("h2", "inspect", "-f", "{{(index .NetworkSettings.Networks \"ovbench\").IPAddress}}",
                               "ibh2").stdout.strip()
        mtu = run(["nsenter", f"--net=/proc/{pids['h1']}/ns/net", "cat", "/sys/class/net/eth0/mtu"]).stdout.strip()
        log(f"docker: overlay up, server {server_ip}, container mtu {mtu}")
        return Target("docker", ["nsenter", f"--net=/proc/{pids['h1']}/ns/net"],
                      ["nsenter", f"--net=/proc/{pids['h2']}/ns/net"], server_ip), lab
    except BaseException:
        system.down()
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--no-docker", action="store_true", help="leave Docker's overlay out")
    args = parser.parse_args(argv)
    sigterm_as_interrupt()
    key_existed = KEY_JSON.exists()
    labs: list[Lab] = []
    planes: list[OverlayDataPlane] = []
    targets: list[Target] = []
    notes: list[str] = []
    workdir = Path(run(["mktemp", "-d", "/tmp/shoal-bench-overlay.XXXXXX"]).stdout.strip())
    try:
        lab = up_lab(f"ov{secrets.token_hex(3)}", fake_daemon_cmd(workdir))
        labs.append(lab)
        targets.append(shoal_target(lab, planes))
        targets.append(handmade_target(lab))
        if not args.no_docker:
            if not (DOCKER_BIN / "dockerd").exists() or not BUSYBOX_TAR.exists():
                notes.append(f"docker left out: needs {DOCKER_BIN}/dockerd (scripts/docker-ref.sh) and {BUSYBOX_TAR}")
            else:
                try:
                    target, docker_lab = docker_target(log)
                    labs.append(docker_lab)
                    targets.append(target)
                except Exception as exc:  # say so, measure the rest
                    notes.append(f"docker left out: its overlay could not be set up: {exc}")
        for target in targets:
            target.start_server()
            result = run([*target.client, "ping", "-c1", "-W2", target.server_ip], check=False)
            if result.returncode:
                raise RuntimeError(f"{target.label}: {target.server_ip} does not answer: {result.stdout}{result.stderr}")
        for index in range(args.rounds):
            order = targets[index % len(targets):] + targets[:index % len(targets)]
            for target in order:
                log(f"round {index + 1}: {target.label:9s} {target.measure(args.seconds):6.2f} Gbit/s")
        medians = {t.label: statistics.median(t.gbits) for t in targets}
        print()
        for target in targets:
            print(f"{target.label:10s} median {medians[target.label]:6.2f} Gbit/s  "
                  f"(rounds: {', '.join(f'{g:.2f}' for g in target.gbits)})")
        for anchor, goal in GOALS.items():
            if anchor in medians:
                ratio = medians["shoal"] / medians[anchor]
                print(f"ratio throughput shoal/{anchor} = {ratio:.2f} (goal >= {goal}: {'met' if ratio >= goal else 'NOT met'})")
        for note in notes:
            print(note)
        return 0
    finally:
        for target in targets:
            target.stop()
        for plane in planes:
            plane.close()
        for lab in labs:
            lab.down()
        remove_docker_key(key_existed)
        run(["rm", "-rf", str(workdir)], check=False)


if __name__ == "__main__":
    sys.exit(main())
