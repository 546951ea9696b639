"""Gossip convergence in the 5-host lab (the lab half of issue 11's "gossip convergence" benchmark; bench/gossip.py is
the simulator half): shoal's swarm (3 managers + 2 workers, bench/swarm.py builds it) with an attachable overlay and
one container on it on every host, so that every node is on the network's gossip.

Steps, each timed over --rounds rounds (medians printed), every node's netdb read through its own API socket
(GET /shoal/gossip, what `shoal node gossip --json` prints) polled every 20 ms from this process:
  entry        `shoal run -d --network NET` on one host (the hosts take turns) until the network's entry count
               on every other node has grown by the new container's 2 entries (overlay_peer_table and
               container_table); reported from the command's start, and from the moment the source node's own
               netdb held them (the gossip alone)
  delete       `shoal rm -f` of that container: from the moment the source node's netdb dropped its entries until
               every other node's count is back
  dead         SIGKILL of a worker's daemon (h4 and h5 take turns) until every other node says it is dead, next to
               the bound computed from the gossip config (agent.gossip.sim.dead_bound)
  alive again  the daemon started again (`lab start`, timed from its /_ping) until every other node says alive
Everything made is removed on exit (lab down), SIGTERM and Ctrl-C included.
Run: python bench/gossip_lab.py [--rounds 5] [--timeout 120]; the last lines are one `gossip-lab STEP median=...`
summary per step.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.gossip.sim import dead_bound  # noqa: E402
from bench.swarm import (MANAGERS, WORKERS, StepFailed, System, load_average, log, shoal_system,  # noqa: E402
                         sigterm_as_interrupt)
from bench.swarm import Figures as SwarmFigures  # noqa: E402
from bench.swarm import build as build_swarm  # noqa: E402
from shoal.client import Client  # noqa: E402
from shoal.lab import run_dir  # noqa: E402

HOSTS = MANAGERS + WORKERS
NETWORK = "gossip-bench"
POLL_S = 0.02


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="rounds of each step (medians reported)")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds any one step may take")
    a = ap.parse_args(argv)
    if a.rounds < 1:
        ap.error(f"invalid --rounds {a.rounds}: at least 1")
    return a


class Nodes:
    """Each host's API client and node id; the gossip state read from the daemons directly."""

    def __init__(self, system: System) -> None:
        assert system.lab is not None
        self.lab = system.lab
        self.ids = {h: self.client(h).get("/info")["Swarm"]["NodeID"] for h in HOSTS}

    def client(self, host: str) -> Client:
        return Client(self.lab.url(host), timeout=5.0)

    def gossip(self, host: str) -> dict | None:
        try:
            with self.client(host) as c:
                return c.get("/shoal/gossip")
        except Exception:  # noqa: BLE001 - a daemon down or busy: no answer this poll
            return None

    def entries(self, host: str, net_id: str) -> int | None:
        g = self.gossip(host)
        if g is None:
            return None
        return next((n["Entries"] for n in g["Networks"] if n["ID"] == net_id), 0)

    def state(self, host: str, of: str) -> str:
        g = self.gossip(host)
        return "" if g is None else next((m["State"] for m in g["Members"] if m["Name"] == self.ids[of]), "")


def wait(what: str, check: Callable[[], bool], timeout: float) -> float:
    """Polls check until true; returns the monotonic time it first held."""
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise StepFailed(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(POLL_S)
    return time.monotonic()


def start_command(system: System, host: str, *args: str) -> subprocess.Popen[str]:
    """The system's CLI in host, not waited for (bench.swarm.System.run's environment)."""
    assert system.lab is not None
    argv = system.lab.exec_argv(host, [*system.cli, *args])
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**system.lab.host_env(host), "DOCKER_CONFIG": str(run_dir(system.lab.name))})


def spread(system: System, nodes: Nodes, src: str, args: list[str], want: Callable[[str], int], net_id: str,
           timeout: float) -> dict[str, float]:
    """Runs the CLI command on src while polling every node: host -> when its netdb first held want(host) entries
    of the network."""
    cmd = start_command(system, src, *args)
    seen: dict[str, float] = {}
    end = time.monotonic() + timeout
    try:
        while len(seen) < len(HOSTS):
            for h in HOSTS:
                if h not in seen and nodes.entries(h, net_id) == want(h):
                    seen[h] = time.monotonic()
            if time.monotonic() > end:
                raise StepFailed(f"timed out after {timeout:g} s waiting for `{' '.join(args)}` to reach every netdb "
                                 f"(there: {', '.join(sorted(seen)) or 'none'})")
            time.sleep(POLL_S)
        if cmd.wait(timeout=timeout):
            raise StepFailed(f"`{' '.join(args)}` on {src} failed: {cmd.stderr.read() if cmd.stderr else ''}")
    finally:
        if cmd.poll() is None:
            cmd.kill()
            cmd.wait()
    return seen


def med(values: list[float]) -> str:
    return f"median={statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if os.geteuid() != 0:
        print("bench/gossip_lab.py needs root (network namespaces)", file=sys.stderr)
        return 2
    sigterm_as_interrupt()
    log(f"load average {load_average()} on {os.cpu_count()} cores")
    system = shoal_system(a.timeout, [])
    figs: dict[str, list[float]] = {"entry (from run)": [], "entry (gossip)": [], "delete (gossip)": [],
                                    "dead": [], "alive again": []}
    bound = dead_bound(len(HOSTS))
    error = ""
    try:
        build_swarm(system, SwarmFigures(), log)
        system.run(MANAGERS[0], "network", "create", "-d", "overlay", "--attachable", NETWORK)
        for h in HOSTS:
            system.run(h, "run", "-d", "--network", NETWORK, "--name", f"anchor-{h}", "busybox", "sleep", "3600")
        nodes = Nodes(system)
        net_id = json.loads(system.run(MANAGERS[0], "network", "inspect", NETWORK).stdout)[0]["Id"]
        settled = {h: 2 * len(HOSTS) for h in HOSTS}
        wait("every node to hold every anchor's entries",
             lambda: {h: nodes.entries(h, net_id) for h in HOSTS} == settled, a.timeout)
        for r in range(a.rounds):
            src = HOSTS[r % len(HOSTS)]
            others = [h for h in HOSTS if h != src]
            name = f"probe{r}"
            t0 = time.monotonic()
            seen = spread(system, nodes, src, ["run", "-d", "--network", NETWORK, "--name", name, "busybox", "sleep",
                                               "3600"], lambda h: settled[h] + 2, net_id, a.timeout)
            t_all = max(seen[h] for h in others)
            figs["entry (from run)"].append(t_all - t0)
            figs["entry (gossip)"].append(t_all - seen[src])
            t1 = time.monotonic()
            gone = spread(system, nodes, src, ["rm", "-f", name], lambda h: settled[h], net_id, a.timeout)
            t_del = max(gone[h] for h in others)
            figs["delete (gossip)"].append(t_del - gone[src])
            log(f"entry round {r + 1}/{a.rounds} from {src}: in {src}'s netdb {seen[src] - t0:.2f} s after `run` "
                f"started, at every other node {t_all - seen[src]:.2f} s later; after `rm -f` gone from {src}'s "
                f"netdb in {gone[src] - t1:.2f} s, from every other node {t_del - gone[src]:.2f} s later")
        for r in range(a.rounds):
            victim = WORKERS[r % len(WORKERS)]
            others = [h for h in HOSTS if h != victim]
            wait(f"{victim} alive at every other node", lambda: all(nodes.state(h, victim) == "alive" for h in others),
                 a.timeout)
            system.lab.kill(victim)
            t0 = time.monotonic()
            t_dead = wait(f"{victim} dead at every other node",
                          lambda: all(nodes.state(h, victim) == "dead" for h in others), a.timeout)
            figs["dead"].append(t_dead - t0)
            system.lab.start(victim, deadline=a.timeout)
            t1 = time.monotonic()
            t_alive = wait(f"{victim} alive again at every other node",
                           lambda: all(nodes.state(h, victim) == "alive" for h in others), a.timeout)
            figs["alive again"].append(t_alive - t1)
            log(f"kill round {r + 1}/{a.rounds}: {victim} dead at all {t_dead - t0:.2f} s after kill -9 "
                f"(bound {bound:.1f} s), alive again at all {t_alive - t1:.2f} s after its daemon answered")
    except (StepFailed, OSError) as e:
        error = str(e)
        log(f"stopped: {e}")
    except KeyboardInterrupt:
        error = "interrupted"
        log("interrupted: everything this run made is removed")
    finally:
        system.down()
    log(f"load average {load_average()}")
    print()
    for step, values in figs.items():
        if values:
            extra = f" (bound {bound:.1f} s from the gossip config)" if step == "dead" else ""
            print(f"gossip-lab {step}: {med(values)}{extra}")
    if error:
        print(f"gossip-lab: incomplete: {error}")
    return 1 if error else 0


if __name__ == "__main__":
    sys.exit(main())
