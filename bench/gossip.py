"""Gossip convergence in the simulator (the simulator half of issue 11's "gossip convergence" benchmark): for 50,
200 and 500 members, the gossip rounds and virtual seconds an entry takes to reach everyone (next to the epidemic
bound), the time for all to declare a crashed member dead, and (--join) the time for every member to join through
3 seeds.

Runs agent.gossip.sim (the sans-IO core on a virtual clock over a lossy network; virtual time, so the figures do
not depend on the machine's load). Epidemic bound: rounds(N) = log_(1+f')(N) + ln(N)/f' with f' = fanout * (1 - loss).
Run: python bench/gossip.py [--members 50,200,500] [--loss 0.2] [--seeds 3] [--join]; the last lines are one
`gossip N=... rounds=... bound=...` summary per size (median over the seeds).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.gossip.sim import scenario_failure, scenario_spread  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", default="50,200,500", help="comma-separated cluster sizes")
    p.add_argument("--loss", type=float, default=0.2, help="packet loss rate of the simulated network")
    p.add_argument("--seeds", type=int, default=3, help="runs per size (seeds 0..n-1); medians are printed")
    p.add_argument("--join", action="store_true",
                   help="start by having every member join through 3 seeds (and time it) instead of with full "
                        "tables; the join floods N alive broadcasts to N members: minutes of CPU at 500")
    p.add_argument("--no-failure", action="store_true", help="skip the crashed-member detection run")
    a = p.parse_args()
    sizes = [int(x) for x in a.members.split(",") if x]
    summary = []
    for n in sizes:
        rounds, secs, joins, deaths, bound, dbound = [], [], [], [], 0.0, 0.0
        wall = time.monotonic()
        for seed in range(a.seeds):
            r = scenario_spread(n, seed, a.loss, bootstrap="join" if a.join else "static")
            rounds.append(r.rounds)
            secs.append(r.virtual_seconds)
            bound = r.bound
            if r.join_seconds is not None:
                joins.append(r.join_seconds)
            if not a.no_failure:
                f = scenario_failure(n, seed, a.loss)
                deaths.append(f.all_dead)
                dbound = f.bound
        line = (f"gossip N={n} loss={a.loss:.0%}: entry to all in rounds={statistics.median(rounds):.1f} "
                f"({statistics.median(secs):.2f} s virtual) bound={bound:.1f} rounds")
        if joins:
            line += f"; join of all via 3 seeds {statistics.median(joins):.1f} s virtual"
        if deaths:
            line += f"; crashed member dead at all in {statistics.median(deaths):.1f} s virtual (bound {dbound:.1f} s)"
        line += f" [{a.seeds} seeds, {time.monotonic() - wall:.0f} s wall]"
        summary.append(line)
    print()
    for line in summary:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
