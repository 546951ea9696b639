"""shoal/api/swarm_networks._leader_known: a manager that does not know the leader this instant waits for one (up to
a bound) before reading its own, possibly stale, copy of the store."""
from __future__ import annotations

import asyncio

from shoal.api import swarm_networks


class Raft:
    def __init__(self, leader_after_polls: int | None) -> None:
        self.is_leader = False
        self.polls = 0
        self.leader_after_polls = leader_after_polls

    def leader_addr(self) -> str:
        self.polls += 1
        known = self.leader_after_polls is not None and self.polls > self.leader_after_polls
        return "192.168.200.11:2377" if known else ""


class Ops:
    def __init__(self, raft: Raft) -> None:
        self.raft = raft


def test_a_leader_learned_while_waiting_is_used() -> None:
    raft = Raft(leader_after_polls=3)
    assert asyncio.run(swarm_networks._leader_known(Ops(raft), wait_s=5.0)) is True
    assert raft.polls == 4


def test_no_leader_within_the_wait_means_the_local_copy() -> None:
    assert asyncio.run(swarm_networks._leader_known(Ops(Raft(leader_after_polls=None)), wait_s=0.0)) is False
