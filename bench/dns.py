"""Benchmark: dnsperf against shoal's embedded DNS, dnsmasq and Docker's embedded DNS, each
answering the names of 20 containers on a user network, in interleaved rounds of one run.

- shoal: a one-host lab, `network create` + 20 containers; dnsperf runs in container c00's
  network namespace (nsenter --net) and asks 127.0.0.11 for c00..c19.
- dnsmasq: the same names in an addn-hosts file, dnsmasq on 127.0.0.1 in its own lab namespace.
- docker: a real dockerd (/opt/shoal-docker-ref/bin) in a lab namespace (DESIGN §10) with
  shoal's busybox image, a user network and 20 containers; dnsperf in c00's namespace again.

Each round: a throughput run (dnsperf's default 100 outstanding queries, -l SECONDS) and a
fixed-rate run (-Q 1000 -v) for the latency average and p99. Prints a table and, last,
`ratio dns q/s shoal/docker = X` (medians over rounds). Everything is torn down, even on failure.
Needs the Debian packages dnsperf, dnsmasq-base (or dnsmasq), dnsutils (dig), util-linux (nsenter).
Usage: python bench/dns.py [--rounds 3] [--seconds 10] [--rate-seconds 5] [--keep-going]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from shoal.lab import Lab, down  # noqa: E402

NAMES = [f"c{n:02d}" for n in range(20)]
DOCKER_BIN = Path("/opt/shoal-docker-ref/bin")
BUSYBOX_TAR = ROOT / "build" / "images" / "busybox.tar"
SHOAL = [sys.executable, "-m", "shoal"]
RATE = 1000


@dataclass
class Target:
    label: str
    netns: str          # path of the namespace dnsperf runs in
    server: str
    qps: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds, from the fixed-rate runs
    lost: int = 0


def run(argv: list[str], *, timeout: float = 120, check: bool = True, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip() or result.stdout.strip()}")
    return result


def dnsperf(target: Target, queries: Path, seconds: float, rate: int | None = None) -> subprocess.CompletedProcess[str]:
    argv = ["nsenter", f"--net={target.netns}", "dnsperf", "-s", target.server, "-d", str(queries),
            "-l", str(seconds), "-t", "2"]
    if rate is not None:
        argv += ["-Q", str(rate), "-v"]
    return run(argv, timeout=seconds + 60)


def measure(target: Target, queries: Path, seconds: float, rate_seconds: float) -> None:
    out = dnsperf(target, queries, seconds).stdout
    qps = float(_field(out, r"Queries per second:\s+([\d.]+)"))
    target.lost += int(_field(out, r"Queries lost:\s+(\d+)"))
    target.qps.append(qps)
    out = dnsperf(target, queries, rate_seconds, RATE).stdout
    target.lost += int(_field(out, r"Queries lost:\s+(\d+)"))
    target.latencies += [float(m) for m in re.findall(r"^> NOERROR \S+ A ([\d.]+)$", out, re.M)]
    print(f"  {target.label:8s} {qps:10.0f} q/s", flush=True)


def _field(text: str, pattern: str) -> str:
    match = re.search(pattern, text)
    if match is None:
        raise RuntimeError(f"dnsperf printed no {pattern!r}:\n{text[-2000:]}")
    return match.group(1)


def check_answers(target: Target, expected: dict[str, str]) -> None:
    """Before measuring: every name resolves, to the right address, through this server (which
    may still be starting: each name is retried for up to 10 s)."""
    for name, address in expected.items():
        deadline = time.monotonic() + 10
        while True:
            got = run(["nsenter", f"--net={target.netns}", "dig", "+short", "+time=1", "+tries=1",
                       f"@{target.server}", name, "A"], check=False).stdout.split()
            if got == [address]:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{target.label}: {name} resolved to {got}, not [{address}]")
            time.sleep(0.1)


# --- shoal ----------------------------------------------------------------------------------

def shoal_setup(lab: Lab) -> tuple[Target, dict[str, str]]:
    lab.exec("h1", SHOAL + ["network", "create", "benchnet"])
    for name in NAMES:
        lab.exec("h1", SHOAL + ["run", "-d", "--network", "benchnet", "--name", name, "busybox", "sleep", "3600"])
    client = lab.client("h1")
    addresses = {}
    for name in NAMES:
        info = client.get(f"/containers/{name}/json")
        addresses[name] = info["NetworkSettings"]["Networks"]["benchnet"]["IPAddress"]
    sandbox = client.get(f"/containers/{NAMES[0]}/json")["NetworkSettings"]["SandboxKey"]
    return Target("shoal", sandbox, "127.0.0.11"), addresses


# --- dnsmasq --------------------------------------------------------------------------------

@contextlib.contextmanager
def dnsmasq(lab: Lab, workdir: Path, addresses: dict[str, str]) -> Iterator[Target]:
    ns = f"shoal-{lab.name}-dm"
    binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    hosts = workdir / "hosts"
    hosts.write_text("".join(f"{address} {name}\n" for name, address in addresses.items()))
    # dnsmasq reads the file after dropping to nobody: mkdtemp's 0700 would hide it.
    workdir.chmod(0o755)
    hosts.chmod(0o644)
    run(["ip", "netns", "add", ns])
    run(["ip", "-n", ns, "link", "set", "lo", "up"])
    proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{ns}", binary, "--keep-in-foreground",
                             "--conf-file=/dev/null", "--no-resolv", "--no-hosts", f"--addn-hosts={hosts}",
                             "--listen-address=127.0.0.1", "--bind-interfaces", "--port=53",
                             f"--pid-file={workdir / 'dnsmasq.pid'}", "--log-facility=/dev/null"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield Target("dnsmasq", f"/run/netns/{ns}", "127.0.0.1")
    finally:
        proc.kill()
        proc.wait()


# --- docker ---------------------------------------------------------------------------------

class Dockerd:
    """A real dockerd in lab namespace `ns`, everything of it under `base`; stop() removes it all."""

    def __init__(self, ns: str, base: Path) -> None:
        self.ns = ns
        self.base = base
        self.data, self.exec_root = base / "data", base / "exec"
        self.sock = base / "docker.sock"
        self.cgroup = f"shoal-bench-dns-{os.getpid()}"
        self.env = dict(os.environ, PATH=f"{DOCKER_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")
        self.proc: subprocess.Popen[bytes] | None = None

    def docker(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        return run([str(DOCKER_BIN / "docker"), "-H", f"unix://{self.sock}", *args], timeout=timeout,
                   check=check, env=self.env)

    def start(self) -> None:
        run(["ip", "netns", "add", self.ns])
        run(["ip", "-n", self.ns, "link", "set", "lo", "up"])
        self.data.mkdir(parents=True)
        self.exec_root.mkdir(parents=True)
        log = open(self.base / "dockerd.log", "wb")
        # nsenter, not ip netns exec: the latter remounts /sys and hides the cgroups (DESIGN §10).
        self.proc = subprocess.Popen(
            ["nsenter", f"--net=/run/netns/{self.ns}", str(DOCKER_BIN / "dockerd"), "--data-root", str(self.data),
             "--exec-root", str(self.exec_root), "-H", f"unix://{self.sock}", "--pidfile",
             str(self.base / "dockerd.pid"), "--cgroup-parent", f"/{self.cgroup}", "--log-level", "warn"],
            stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        deadline = time.monotonic() + 60
        while self.docker("version", check=False, timeout=30).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dockerd did not start: {(self.base / 'dockerd.log').read_text()[-2000:]}")
            time.sleep(0.2)

    def setup(self) -> tuple[Target, dict[str, str]]:
        self.docker("load", "-i", str(BUSYBOX_TAR))
        self.docker("network", "create", "benchnet")
        for name in NAMES:
            self.docker("run", "-d", "--network", "benchnet", "--name", name, "busybox", "sleep", "3600")
        addresses = {name: self.docker("inspect", "-f", "{{.NetworkSettings.Networks.benchnet.IPAddress}}",
                                       name).stdout.strip() for name in NAMES}
        sandbox = self.docker("inspect", "-f", "{{.NetworkSettings.SandboxKey}}", NAMES[0]).stdout.strip()
        return Target("docker", sandbox, "127.0.0.11"), addresses

    def stop(self) -> None:
        """Containers, dockerd, containerd, shims, runc state, mounts, cgroups, files: all gone."""
        if self.proc is not None and self.proc.poll() is None:
            ids = self.docker("ps", "-aq", check=False, timeout=60).stdout.split()
            if ids:
                self.docker("rm", "-f", *ids, check=False, timeout=120)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid in _pids_mentioning(str(self.base)):  # containerd and shims left by a failure
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for state in self.exec_root.rglob("state.json") if self.exec_root.exists() else []:
            root, container = state.parent.parent, state.parent.name
            for args in (["kill", container, "KILL"], ["delete", "--force", container]):
                run(["runc", "--root", str(root), *args], check=False, timeout=30)
        for point in _mounts_under(self.base):
            run(["umount", "-l", point], check=False)
        shutil.rmtree(self.base, ignore_errors=True)
        for cgroup in sorted(Path("/sys/fs/cgroup").glob(f"*/{self.cgroup}"), reverse=True):
            for sub in sorted((p for p in cgroup.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                cgroup.rmdir()


def _pids_mentioning(text: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with contextlib.suppress(OSError):
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    pids.append(int(entry.name))
    return pids


def _mounts_under(base: Path) -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == str(base) or point.startswith(f"{base}/"):
            points.append(point)
    return sorted(points, key=len, reverse=True)


# --- main -----------------------------------------------------------------------------------

def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each throughput run")
    parser.add_argument("--rate-seconds", type=float, default=5.0, help="length of each 1k q/s run")
    args = parser.parse_args()
    for tool in ("dnsperf", "dig", "nsenter", "runc"):
        if shutil.which(tool) is None:
            sys.exit(f"bench/dns.py needs {tool} (Debian: dnsperf, dnsutils, util-linux, runc)")
    if not (DOCKER_BIN / "dockerd").exists() or not BUSYBOX_TAR.exists():
        sys.exit(f"needs {DOCKER_BIN}/dockerd (scripts/docker-ref.sh) and {BUSYBOX_TAR}")
    # SIGTERM must tear down like Ctrl-C does.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))

    name = f"bd{os.getpid():x}"
    workdir = Path(tempfile.mkdtemp(prefix="shoal-bench-dns-"))
    docker = Dockerd(f"shoal-{name}-dk", workdir / "docker")
    lab: Lab | None = None
    try:
        lab = Lab.up(name, 1)
        shoal_target, addresses = shoal_setup(lab)
        docker.start()
        docker_target, docker_addresses = docker.setup()
        with dnsmasq(lab, workdir, addresses) as dnsmasq_target:
            queries = workdir / "queries"
            queries.write_text("".join(f"{n} A\n" for n in NAMES))
            check_answers(shoal_target, addresses)
            check_answers(docker_target, docker_addresses)
            check_answers(dnsmasq_target, addresses)
            targets = [shoal_target, docker_target, dnsmasq_target]
            for round_ in range(args.rounds):
                print(f"round {round_ + 1}/{args.rounds}", flush=True)
                order = targets[round_ % 3:] + targets[: round_ % 3]
                for target in order:
                    measure(target, queries, args.seconds, args.rate_seconds)
    finally:
        docker.stop()
        if lab is not None:
            down(lab.name)
        else:
            down(name)
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print(f"dnsperf, 20 names, {args.rounds} interleaved rounds: {args.seconds:g} s at 100 outstanding "
          f"(q/s, median), then {args.rate_seconds:g} s at {RATE} q/s (latency over all rounds)")
    print(f"{'server':10s} {'q/s':>10s} {'avg ms':>8s} {'p99 ms':>8s} {'lost':>6s}")
    for target in targets:
        avg = statistics.fmean(target.latencies) * 1000 if target.latencies else float("nan")
        print(f"{target.label:10s} {statistics.median(target.qps):10.0f} {avg:8.3f} "
              f"{p99(target.latencies) * 1000:8.3f} {target.lost:6d}")
    ratio = statistics.median(shoal_target.qps) / statistics.median(docker_target.qps)
    print(f"ratio dns q/s shoal/docker = {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
