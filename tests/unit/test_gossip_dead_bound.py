"""agent.gossip.sim.dead_bound: the seconds a crashed member may take to be dead at every other member, from the
gossip config (the bound tests/lab/test_overlay_faults.py and bench/gossip_lab.py hold the lab to)."""
from __future__ import annotations

import math

from agent.gossip.core import GossipConfig
from agent.gossip.sim import dead_bound, epidemic_bound


def test_with_the_default_config_5_members_have_a_bound_of_29_8_seconds() -> None:
    # 4 probe intervals + 0.5 s probe timeout + 6 x 4 x max(1, log10 5) s suspicion + 1 s final probe + spread
    spread = epidemic_bound(5, 3, 0.0) * 0.2
    assert math.isclose(dead_bound(5), 4 + 0.5 + 24 + 1 + spread)
    assert round(dead_bound(5), 1) == 29.8


def test_without_lifeguard_or_final_probe_the_suspicion_is_the_minimum_timeout() -> None:
    c = GossipConfig(lifeguard=False, final_probe=False)
    assert math.isclose(dead_bound(5, c), 4 + 0.5 + 4 + epidemic_bound(5, 3, 0.0) * 0.2)


def test_the_bound_grows_with_the_members_through_log10_past_10() -> None:
    # 100 members: suspicion min 4 x log10(100) = 8 s, max 48 s; 99 probe intervals to reach the crashed one
    assert math.isclose(dead_bound(100), 99 + 0.5 + 48 + 1 + epidemic_bound(100, 3, 0.0) * 0.2)
