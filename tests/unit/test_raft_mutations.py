"""The simulator catches each classic Raft bug (manager/raft/mutate.py puts one at a time into a copy of the
core): one test per mutation, on a small seed budget; the sim stops at the first failing seed."""

from __future__ import annotations

import pytest

from manager.raft.mutate import MUTATIONS, run_mutation

BUDGET = range(0, 300)
CAUGHT_BY = {
    "figure8": "leader commits its own term",
    "follower-commit": "follower commits what the leader sent",
    "two-conf-changes": "one membership change at a time",
    "vote-not-persisted": "vote durability",
    "conf-before-noop": "membership change after the no-op",
}


@pytest.mark.parametrize("name", sorted(CAUGHT_BY))
def test_the_simulator_catches_the_mutation(name: str) -> None:
    mutation = next(m for m in MUTATIONS if m.name == name)
    out = run_mutation(mutation, BUDGET)
    assert out.caught_at is not None, f"{name} ({mutation.what}) survived {out.seeds_run} seeds"
    assert out.invariant == CAUGHT_BY[name]


def test_the_unmutated_core_passes_the_same_seeds_the_mutants_fail() -> None:
    from manager.raft.sim import run_seed

    for seed in (0, 1, 2, 4, 39):  # the seeds that catch the mutants above
        assert run_seed((seed, "mixed", None, False)).ok
