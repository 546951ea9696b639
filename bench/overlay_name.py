"""Name reachability over an overlay: the time from `run -d --network OVERLAY --name X` on one host until a container
on another host reaches X by name, with Docker's swarm (dockerd 20.10) and with shoal in the same run, each on 5 lab
hosts (3 managers + 2 workers, built by bench/swarm.py's swarm_with_overlay; issue 11 "Speed": Docker's figure is
the reference).

How, the same for both systems through their own CLI run in the hosts:
  - an attachable overlay made on h1; a container `client` on h4 (the first host) on it;
  - each round: `exec -d client sh -c LOOP` starts a poll inside the client: every 0.1 s a new `ping -c1 -W1 X`
    (each bounded to 3 s, run side by side: Docker's embedded DNS leaves a name it does not know unanswered in
    the lab, where it has no forwarder to reach, and busybox's resolver waits 5 s for it; shoal's answers at
    once), the first that gets a reply makes /tmp/reached-X; then `run -d --network OVERLAY --name X busybox
    sleep 3600` on h5 (the second host); the figure is the marker's mtime (read from the bench through
    /proc/PID/root, the same clock) minus the instant before `run` started; also printed: how long the `run`
    command itself took. Then `rm -f X` (untimed).
Medians over --rounds rounds per system, the ratio shoal/docker printed (goal: at most 1.0x, Docker's figure the
reference). Everything either side made is removed on exit (labs down, dockerd's runc containers and cgroups),
SIGTERM and Ctrl-C included.
Run: python bench/overlay_name.py [--systems docker,shoal] [--rounds 5] [--timeout 120]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.swarm import (StepFailed, System, attempt, bench_session, cannot_run, docker_system, log,  # noqa: E402
                         shoal_system, swarm_with_overlay)

NETWORK = "name-bench"
SUBNET = "10.0.9.0/24"
FIRST, SECOND = "h4", "h5"
POLL_S = 0.02
GOAL = 1.0  # shoal/docker
# A new attempt every 0.1 s, each on its own and bounded: a lookup the embedded DNS leaves unanswered (busybox's
# resolver then waits 5 s) must not hide that the name resolves meanwhile. The first attempt that gets an echo
# reply makes the marker directory (mkdir: the first one wins, its mtime is the instant it did).
LOOP = ("while [ ! -d /tmp/reached-{name} ]; do "
        "(timeout 3 ping -c1 -W1 {name} >/dev/null 2>&1 && mkdir /tmp/reached-{name} 2>/dev/null) & sleep 0.1; done")


@dataclass(slots=True)
class Result:
    reach: list[float] = field(default_factory=list)  # run started -> reached by name
    command: list[float] = field(default_factory=list)  # the run command alone
    error: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--systems", default="docker,shoal", help="comma-separated: docker, shoal (default both)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds per system (medians reported)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds any one step may take")
    a = ap.parse_args(argv)
    a.systems = [s.strip() for s in a.systems.split(",") if s.strip()]
    if not a.systems or any(s not in ("docker", "shoal") for s in a.systems):
        ap.error("invalid --systems: use docker, shoal or both")
    if a.rounds < 1:
        ap.error(f"invalid --rounds {a.rounds}: at least 1")
    return a


def container_pid(system: System, host: str, name: str) -> int:
    return int(json.loads(system.run(host, "inspect", name).stdout)[0]["State"]["Pid"])


def measure(system: System, rounds: int, timeout: float, workdir: Path) -> Result:
    res = Result()
    with attempt(system, log) as at:
        swarm_with_overlay(system, at, workdir, [FIRST, SECOND], ["--attachable", "--subnet", SUBNET, NETWORK], log)
        at.step = "the client container"
        system.run(FIRST, "run", "-d", "--network", NETWORK, "--name", "client", "busybox", "sleep", "3600")
        root = Path(f"/proc/{container_pid(system, FIRST, 'client')}/root")
        t = time.monotonic()
        r = system.run(FIRST, "exec", "client", "ping", "-c1", "-W1", "no-such-name", check=False)
        log(f"{system.name}: a ping of a name nobody has fails after {time.monotonic() - t:.2f} s: "
            f"{(r.stderr or r.stdout).strip()[-120:]}")
        for r in range(rounds):
            name = f"x{r}"
            at.step = f"round {r + 1}"
            system.run(FIRST, "exec", "-d", "client", "sh", "-c", LOOP.format(name=name))
            marker = root / "tmp" / f"reached-{name}"
            t0 = time.time_ns()
            system.run(SECOND, "run", "-d", "--network", NETWORK, "--name", name, "busybox", "sleep", "3600")
            command = (time.time_ns() - t0) / 1e9
            end = time.monotonic() + timeout
            while not marker.exists():
                if time.monotonic() > end:
                    raise StepFailed(f"{system.name}: client on {FIRST} did not reach {name} by name in {timeout:g} s")
                time.sleep(POLL_S)
            took = (marker.stat().st_mtime_ns - t0) / 1e9
            res.reach.append(took)
            res.command.append(command)
            log(f"{system.name}: round {r + 1}/{rounds}: {name} reached by name {took:.2f} s after `run` started "
                f"(the command took {command:.2f} s)")
            system.run(SECOND, "rm", "-f", name)
    res.error = at.error
    return res


def report(results: dict[str, Result]) -> str:
    lines = []
    for name, res in results.items():
        if res.reach:
            lines.append(f"{name}: reached by name median {statistics.median(res.reach):.2f} s "
                         f"(min {min(res.reach):.2f}, max {max(res.reach):.2f}, n={len(res.reach)}); "
                         f"the run command median {statistics.median(res.command):.2f} s")
        if res.error:
            lines.append(f"{name}: incomplete: {res.error}")
    d, s = results.get("docker"), results.get("shoal")
    if d and s and d.reach and s.reach:
        ratio = statistics.median(s.reach) / statistics.median(d.reach)
        lines.append(f"ratio overlay name reach shoal/docker = {ratio:.2f} (goal <= {GOAL:g}x: "
                     f"{'ok' if ratio <= GOAL else 'MISSED'})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    why = cannot_run("overlay_name.py", a.systems)
    if why:
        print(why, file=sys.stderr)
        return 2
    results: dict[str, Result] = {}
    with bench_session("overlay-name") as session:
        for name in a.systems:
            system = docker_system(a.timeout) if name == "docker" else shoal_system(a.timeout, [])
            results[name] = measure(system, a.rounds, a.timeout, session.workdir)
    print(report(results))
    if session.interrupted:
        return 130
    return 0 if results and all(not r.error for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
