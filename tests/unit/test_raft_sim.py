"""The deterministic Raft simulator (manager.raft.sim): seeds pass, replay exactly, and the checker can fail.
CI runs `python -m manager.raft.sim --seeds 0-1999`; this file keeps a smaller slice in the unit suite."""

from __future__ import annotations

import pytest

from manager.raft import core
from manager.raft.sim import InvariantViolation, Simulation, main, parse_seeds, run_seed


def test_200_seeds_of_3_and_5_node_clusters_keep_every_invariant() -> None:
    failures = [(r.seed, r.invariant, r.detail) for r in (run_seed((s, "mixed", None, False)) for s in range(200))]
    assert [f for f in failures if f[1]] == []


def test_seeds_acknowledge_proposals_so_the_final_check_has_something_to_check() -> None:
    results = [run_seed((s, "mixed", None, False)) for s in range(5)]
    assert all(r.ok and r.acked > 0 for r in results)


def test_a_seed_replays_exactly() -> None:
    a = Simulation(42, 5, verbose=True).run()
    b = Simulation(42, 5, verbose=True).run()
    assert a.trace == b.trace and a.acked == b.acked
    assert any("crash" in line or "partition" in line or "isolate" in line for line in a.trace)


def test_checker_detects_a_node_that_forgets_what_it_fsynced() -> None:
    results = [Simulation(s, 3, fault="amnesia").run() for s in range(30)]
    failed = {r.invariant for r in results if not r.ok}
    assert failed, "amnesia must break an invariant in some seed"
    assert failed <= {
        "election safety", "leader completeness", "log matching", "state machine safety", "one vote per term",
        "term monotonic", "commit monotonic", "acked exactly once", "final agreement", "liveness", "exception",
        "linearizable read", "applied index monotonic",
    }


def test_checker_detects_a_core_that_grants_votes_to_stale_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.RaftNode, "_up_to_date", lambda self, last_index, last_term: True)
    results = [run_seed((s, "mixed", None, False)) for s in range(80)]
    assert any(not r.ok for r in results)


def test_final_check_catches_diverged_state_machines() -> None:
    sim = Simulation(3, 3)
    assert sim.run().ok
    leader = sim._leader()
    follower = sim.nodes[next(v for v in leader.core.voters if v != leader.id)]
    follower.state = follower.state[:-1] + [b"forged"]
    with pytest.raises(InvariantViolation, match="final agreement"):
        sim._check_final()


def test_cli_prints_each_failing_seed_and_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "0-9", "--nodes", "3", "--fault", "amnesia", "--jobs", "1"]) == 1
    out = capsys.readouterr().out.splitlines()
    fails = [line for line in out if line.startswith("seed ")]
    assert fails and all(": FAIL " in line for line in fails)
    assert out[-1].startswith(f"10 seeds, {len(fails)} failed")


def test_cli_exits_zero_when_every_seed_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "0-3", "--jobs", "1"]) == 0
    assert capsys.readouterr().out.startswith("4 seeds, 0 failed")


def test_seed_range_is_inclusive_and_bad_ranges_are_named() -> None:
    assert parse_seeds("5-7") == range(5, 8)
    assert parse_seeds("9") == range(9, 10)
    with pytest.raises(Exception, match="invalid seeds '7-5'"):
        parse_seeds("7-5")
    with pytest.raises(Exception, match="invalid seeds 'x'"):
        parse_seeds("x")


def test_simulation_refuses_unsupported_cluster_sizes() -> None:
    with pytest.raises(ValueError, match="invalid cluster size 4"):
        Simulation(0, 4)
