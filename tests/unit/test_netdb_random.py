"""networkdb under seeded random histories (writes, partitions, flaps, kill -9 and restart, network leaves):
once healed, every member of a network holds exactly the live entries their owners hold, and each watcher's fold of
events equals the table (no stale entry, no lost entry, no double create)."""

from __future__ import annotations

import random

import pytest

from agent.gossip.netdb import NetDBConfig
from tests.unit.netdb_fake import FakeCluster

NETS = ["n1", "n2"]
NAMES = ["a", "b", "c", "d", "e"]


def truth(c: FakeCluster, nid: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for name, db in c.dbs.items():
        if db.joined(nid):
            for (t, k), e in db.entries.get(nid, {}).items():
                if t == "t" and e.owner == name and not e.deleting:
                    out[k] = e.value
    return out


def random_history(seed: int, loss: float = 0.0, settle_s: float = 5.0) -> FakeCluster:
    rng = random.Random(seed)
    c = FakeCluster(seed, NetDBConfig(dead_node_reap_s=rng.choice([3.0, 60.0])), loss=loss)
    for n in NAMES:
        c.add(n)
    for n in NAMES:
        for nid in NETS:
            if rng.random() < 0.8:
                c.dbs[n].join_network(nid)
    serial = 0
    for _ in range(60):
        name = rng.choice(sorted(c.dbs))
        db = c.dbs[name]
        nid = rng.choice(NETS)
        r = rng.random()
        own = [k for (t, k), e in db.entries.get(nid, {}).items() if e.owner == name and not e.deleting]
        if r < 0.35 and db.joined(nid):
            serial += 1
            db.create_entry("t", nid, f"{name}-{serial}", f"v{serial}".encode())
        elif r < 0.5 and own:
            serial += 1
            db.update_entry("t", nid, rng.choice(sorted(own)), f"v{serial}".encode())
        elif r < 0.62 and own:
            db.delete_entry("t", nid, rng.choice(sorted(own)))
        elif r < 0.67:
            if db.joined(nid):
                db.leave_network(nid)
            else:
                db.join_network(nid)
        elif r < 0.74 and not c.cut:
            side = rng.sample(sorted(c.dbs), rng.randint(1, 2))
            c.partition(side, [n for n in c.dbs if n not in side])
        elif r < 0.8:
            c.heal()
        elif r < 0.84 and len(c.dbs) > 3:
            c.heal()
            c.kill(name)
            c.run(rng.choice([0.4, 4.0]))
            fresh = c.add(name)
            for n2 in NETS:
                if rng.random() < 0.7:
                    fresh.join_network(n2)
        c.run(rng.choice([0.2, 0.6, 1.0, 3.5]))
    c.heal()
    c.run(settle_s)
    return c


def check_converged(c: FakeCluster, seed: int) -> None:
    for nid in NETS:
        want = truth(c, nid)
        for name, db in c.dbs.items():
            if not db.joined(nid):
                continue
            assert c.view(name, "t", nid) == want, (seed, name, nid)
            assert c.watched(name, nid) == want, (seed, name, nid)
            assert not any(e.suspended for e in db.walk("t", nid)), (seed, name, nid)


@pytest.mark.parametrize("seed", range(20))
def test_after_a_random_history_and_a_heal_every_member_holds_exactly_the_owners_entries(seed: int) -> None:
    check_converged(random_history(seed), seed)


@pytest.mark.parametrize("seed", range(5))
def test_with_a_fifth_of_the_messages_lost_the_periodic_bulk_sync_still_converges_everyone(seed: int) -> None:
    check_converged(random_history(100 + seed, loss=0.2, settle_s=65.0), seed)
