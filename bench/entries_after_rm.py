"""Gossip entries left behind by `service rm`: a 3+2 lab swarm creates a service of N tasks (`httpd`, which ignores
SIGTERM: every task is killed after its 10 s grace) on an overlay, waits until every task answers from every node
(bench/converge.py's probe), removes it, and prints each node's live networkdb entries of the overlay (per owner and
table) before each round, then 10 s and 50 s after the last removal. Every count should be 0.

2026-12-04: before the fix in shoal/swarm/local_copies.py (a task's exited container holds its networks until its sandbox is torn down), an N=100 round left ~60-90 of its 100 tasks'
`overlay_peer_table` and `container_table` entries live on every node for good (124 after one round, 176 after two;
N=20 rounds left 0, once 4): a node removed its copy of the network while task containers that had exited were not
torn down yet, so their endpoints' leave (and gossip withdrawals) never ran. They piled up, and a later round's task
given one of their addresses on another node was not reached from some nodes (`bench/converge.py --replicas 20,100
--rounds 3` stopped at N=100 round 3 after 300 s). After the fix: 0 after each of two N=100 rounds.

Run: python bench/entries_after_rm.py [N,N,...]   (default 100,100; ~2 min; only lab addresses)
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import converge as bc  # noqa: E402
from bench.swarm import System, attempt, bench_session, log, shoal_system, swarm_with_overlay  # noqa: E402


def owners(system: System) -> dict[str, dict[str, dict[str, int]]]:
    """host -> owner's address -> table -> live entries, for the overlay networks with more than the ingress's."""
    assert system.lab is not None
    out = {}
    for h in bc.HOSTS:
        doc = json.loads(system.lab.exec(h, ["curl", "-s", "--unix-socket", str(system.lab.socket(h)),
                                             "http://shoal/shoal/gossip"]).stdout)
        addrs = {m["Name"]: m["Addr"] for m in doc["Members"]}
        out[h] = {addrs.get(o, o): t for n in doc["Networks"] if n["Entries"] > 10
                  for o, t in n.get("EntryOwners", {}).items()}
    return out


def total(seen: dict[str, dict[str, dict[str, int]]]) -> dict[str, int]:
    return {h: sum(sum(t.values()) for t in by_owner.values()) for h, by_owner in seen.items()}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("replicas", nargs="?", default="100,100", help="the rounds' replica counts, comma-separated")
    plan = [int(x) for x in ap.parse_args(argv).replicas.split(",")]
    with bench_session("entries_after_rm") as session:
        system = shoal_system(300, [])
        with attempt(system, log) as at:
            swarm_with_overlay(system, at, session.workdir, bc.HOSTS, ["--subnet", "10.0.9.0/24", bc.NETWORK], log)
            for r, n in enumerate(plan):
                time.sleep(10)
                seen = owners(system)
                log(f"before round {r}: live entries per node {total(seen)}; by owner {seen['h1']}")
                took = bc.converge(system, n, 120, log)
                log(f"round {r}: N={n} converged in {took:.2f} s")
                bc.remove_service(system, 300)
            for wait in (10, 40):
                time.sleep(wait)
                seen = owners(system)
                log(f"after the last rm (+{wait} s): live entries per node {total(seen)}; by owner {seen['h1']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
