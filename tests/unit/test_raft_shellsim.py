"""The shell simulator (manager/raft/shellsim.py) runs real manager shells with SQLite storage on a virtual clock:
its seeds pass and replay exactly, and each shell mutation (manager/raft/shellmutate.py) is caught by the invariant named."""

from __future__ import annotations

from collections import Counter

import pytest

from manager.raft.shellmutate import SHELL_MUTATIONS, mutant_shell
from manager.raft.shellsim import Result, ShellSim, main, run_seed

# The CI budget: about 6 s of CPU. Seed 11 has its own test below (a member that missed an addition
# catches up with the added manager as leader).
SEEDS = [*range(0, 11), 12]
CAUGHT_BY = {
    "ack-before-commit": "acknowledged writes are applied",
    "apply-before-persist": "apply durability",
    "send-before-persist": "vote durability",
}


@pytest.fixture(scope="module")
def results() -> list[Result]:
    return [run_seed(s) for s in SEEDS]


def test_seeds_of_1_3_and_5_real_shells_keep_every_invariant_and_a_linearizable_history(results: list[Result]) -> None:
    assert [(r.seed, r.invariant, r.detail) for r in results if not r.ok] == []
    assert {ShellSim(s).size for s in SEEDS} == {1, 3, 5}
    assert all(r.acked > 0 and r.ops > r.acked for r in results)


def test_the_seeds_exercise_snapshots_forwarding_crashes_partitions_and_membership_changes(results: list[Result]) -> None:
    total: Counter[str] = sum((r.paths for r in results), Counter())
    wanted = ["crash", "member added", "member removed", "partition", "proposal forwarded", "snapshot sent",
              "snapshot installed", "store restored"]
    assert {k: total[k] for k in wanted if total[k] == 0} == {}


def test_a_seed_replays_exactly() -> None:
    a = ShellSim(1, verbose=True).run()
    b = ShellSim(1, verbose=True).run()
    assert a.ok and a.trace == b.trace
    assert any("crash node" in line for line in a.trace) and any("leads term" in line for line in a.trace)


@pytest.mark.parametrize("name", sorted(CAUGHT_BY))
def test_the_shell_simulator_catches_the_shell_mutation(name: str) -> None:
    shell = mutant_shell(name)
    failed = next((r for r in (run_seed(s, shell=shell) for s in range(0, 10)) if not r.ok), None)
    assert failed is not None, f"{name} survived 10 seeds"
    assert failed.invariant == CAUGHT_BY[name], failed.detail


def test_every_shell_mutation_has_a_test() -> None:
    assert {m.name for m in SHELL_MUTATIONS} == set(CAUGHT_BY)


def test_an_unknown_mutation_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown shell mutation 'nope': expected one of ack-before-commit, "):
        mutant_shell("nope")


def test_cli_prints_a_summary_with_the_seed_rate(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "3-4"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("2 seeds, 0 failed (") and out[-1].endswith(" seeds/s)")
    assert out[-2].startswith("exercised: ") and "proposal forwarded" in out[-2]


def test_cli_exits_non_zero_and_names_the_invariant_for_a_mutant(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "0", "--mutation", "send-before-persist"]) == 1
    assert capsys.readouterr().out.startswith("seed 0: FAIL vote durability: node ")


# Found by the shell simulator: a member that missed the addition of a manager (seed 11: founder 4 missed the
# addition of 6, which then leads) refused every message from it and had no address to answer, so it never caught
# up. Now a sender whose stream names our cluster is taken in and answered at the address its stream advertises.
@pytest.mark.parametrize("seed", [11])  # 217 and 406 showed it before the write-path changes (raftspeed)
def test_a_member_that_missed_an_addition_catches_up_with_the_added_manager_as_leader(seed: int) -> None:
    sim = ShellSim(seed)
    r = sim.run()
    up = [n.mgr for n in sim.nodes.values() if n.up and n.mgr is not None and n.mgr.node is not None]
    leader = max((m for m in up if m.is_leader), key=lambda m: m.node.term)
    refusing = {m.id: m.member_error(leader.id) for m in up if m.member_error(leader.id) is not None}
    assert refusing == {}
    assert r.ok, f"{r.invariant}: {r.detail}"
