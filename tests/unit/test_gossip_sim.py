"""The gossip core at scale in the seeded simulator (agent.gossip.sim): 50-200 members, 20% packet loss, slow members,
a partition. Virtual time only: the figures are rounds and virtual seconds, never wall-clock."""

from __future__ import annotations

import math

from agent.gossip.sim import (epidemic_bound, scenario_failure, scenario_partition, scenario_slow,
                              scenario_spread)

LOSS = 0.2


def quiet(_: str) -> None:
    pass


def test_an_entry_reaches_all_200_members_within_the_epidemic_bound_at_20pct_loss() -> None:
    r = scenario_spread(200, seed=1, loss=LOSS, out=quiet)
    assert r.reached == 200
    assert r.bound == epidemic_bound(200, 3, LOSS)
    assert r.rounds <= r.bound


def test_over_eight_seeds_the_epidemic_stays_within_its_bound_and_push_pull_catches_its_tail() -> None:
    # the epidemic reaches a member with high probability, not certainty (at 20% loss and memberlist's
    # retransmit limit, about one run in ten leaves a member or two out); anti-entropy finishes those
    results = [scenario_spread(50, seed=seed, loss=LOSS, out=quiet) for seed in range(8)]
    assert all(r.reached == 50 for r in results)
    assert all(r.gossip_rounds <= r.bound for r in results)
    assert sum(r.by_gossip for r in results) >= 0.98 * 400   # 395 of 400 here
    assert sum(1 for r in results if r.rounds <= r.bound) >= 6


def test_50_members_joining_through_3_seeds_converge_then_spread_an_entry() -> None:
    r = scenario_spread(50, seed=2, loss=LOSS, bootstrap="join", out=quiet)
    assert r.join_seconds is not None and r.join_seconds < 300
    assert r.reached == 50
    assert r.rounds <= r.bound


def test_the_simulation_is_the_same_for_the_same_seed() -> None:
    a = scenario_spread(50, seed=5, loss=LOSS, out=quiet)
    b = scenario_spread(50, seed=5, loss=LOSS, out=quiet)
    assert (a.rounds, a.virtual_seconds) == (b.rounds, b.virtual_seconds)


def test_a_crashed_member_is_declared_dead_by_every_live_member_within_the_suspicion_bound() -> None:
    r = scenario_failure(50, seed=1, loss=LOSS, out=quiet)
    assert r.all_dead != math.inf
    assert r.lo <= r.all_dead <= r.bound   # never before the minimum suspicion timeout, never after the bound


def test_with_lifeguard_no_slow_or_healthy_member_is_ever_declared_dead() -> None:
    for seed in (0, 1):
        r = scenario_slow(50, seed=seed, loss=LOSS, lifeguard=True, duration=40.0, out=quiet)
        assert r.false_deaths == [], f"seed {seed}"


def test_without_lifeguard_a_slow_member_is_declared_dead() -> None:
    # the same scenario as above with Lifeguard off (fixed suspicion timeout, no nacks, no awareness, no
    # buddy): seed 6 kills a slow member (and seed 5 a healthy one; seeds 0-4 and 7-9 none), so the test above can
    # fail. (Seeds pick scenarios: since the gossip timer sleeps with empty queues the members draw fewer random
    # numbers, and seed 1, which killed one before, no longer does; over seeds 10-39 the rate is unchanged.)
    r = scenario_slow(50, seed=6, loss=LOSS, lifeguard=False, duration=40.0, out=quiet)
    assert r.false_deaths_of_slow
    assert {d.subject for d in r.false_deaths_of_slow} <= set(r.slow)


def test_a_partition_heals_and_membership_converges() -> None:
    r = scenario_partition(50, seed=2, loss=LOSS, out=quiet)
    assert r.split_seen      # each half had declared the other dead
    assert r.heal_seconds <= 60.0   # within two reconnect intervals of the heal
