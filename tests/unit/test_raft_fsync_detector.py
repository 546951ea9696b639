"""The missing-fsync detector (manager/raft/fsynccheck.py): real shells on SQLite under strace; every vote grant, append
acknowledgement, commit announcement and apply must come after the fsync covering it, and skipping fsyncs is caught."""

from __future__ import annotations

import re

import pytest

from manager.raft.fsynccheck import Verdict, check, durable_writes, main, run_traced


def test_every_message_that_depends_on_persisted_state_leaves_after_the_fsync_that_covers_it() -> None:
    v = run_traced(range(1, 3))  # a 3-member and a 1-member cluster
    assert v.violations == []
    assert v.saves > 0 and v.durable_saves == v.saves
    assert all(n > 0 for n in v.checked.values()), v.checked


@pytest.mark.parametrize(("sync", "seed", "first"), [
    ("OFF", 1, r"seed 1: node \d granted its vote in term 2 to \d before an fsync; durable: term 1 vote 0"),
    ("NORMAL", 1, r"seed 1: node \d granted its vote in term 2 to \d before an fsync; durable: term 1 vote 0"),
    ("OFF", 2, r"seed 2: node 1 applied index \d+ durable on \[\] of voters \[1\] only"),
    ("LEADER-OFF", 1, r"seed 1: node \d announced commit index \d+ durable on \[\d\] of voters \[1, 2, 3\] only"),
])
def test_a_store_that_skips_fsyncs_is_caught(sync: str, seed: int, first: str) -> None:
    v = run_traced(range(seed, seed + 1), sync)
    assert not v.ok and v.durable_saves < v.saves
    assert re.fullmatch(first, v.violations[0]), v.violations[0]


def test_only_an_fsync_of_the_raft_store_between_a_writes_marks_makes_it_durable() -> None:
    trace = [
        '7 access("/.shoal-fsync-mark/b/1", F_OK) = -1 ENOENT (No such file or directory)',
        '7 fdatasync(4</dev/shm/m1/raft.db-wal>) = 0',
        '7 access("/.shoal-fsync-mark/e/1", F_OK) = -1 ENOENT (No such file or directory)',
        '7 faccessat2(AT_FDCWD, "/.shoal-fsync-mark/b/2", F_OK, 0) = -1 ENOENT (No such file or directory)',
        '7 fsync(5</dev/shm/m1/members.json.tmp>) = 0',
        '7 access("/.shoal-fsync-mark/e/2", F_OK) = -1 ENOENT (No such file or directory)',
        '7 fdatasync(4</dev/shm/m1/raft.db-wal>) = 0',
        '7 access("/.shoal-fsync-mark/b/3", F_OK) = -1 ENOENT (No such file or directory)',
        '7 fsync(3</dev/shm/m1/raft.db>) = 0',
        '7 access("/.shoal-fsync-mark/e/3", F_OK) = -1 ENOENT (No such file or directory)',
    ]
    assert durable_writes(trace) == ({1, 3}, 3)


def test_a_vote_granted_after_a_write_without_fsync_is_a_violation() -> None:
    events = [
        ["start", 0, 2, [1, 0, 1, 1]],
        ["save", 0, 2, 1, [2, 3, 1, 1]],  # term 2, vote for 3: not fsynced
        ["vote", 0, 2, 2, 3],
        ["save", 0, 2, 2, [3, 1, 1, 1]],  # term 3, vote for 1: fsynced
        ["vote", 0, 2, 3, 1],
    ]
    trace = ['1 access("/.shoal-fsync-mark/b/2", F_OK) = -1', '1 fdatasync(4</x/raft.db-wal>) = 0',
             '1 access("/.shoal-fsync-mark/e/2", F_OK) = -1']
    v = check(events, trace)
    assert v.violations == ["seed 0: node 2 granted its vote in term 2 to 3 before an fsync; durable: term 1 vote 0"]
    assert (v.saves, v.durable_saves, v.checked["vote"]) == (2, 1, 2)


def test_a_commit_needs_the_entry_durable_on_a_quorum() -> None:
    events = [["start", 0, n, [1, 0, 5, 1]] for n in (1, 2, 3)] + [["commit", 0, 1, 6, [1, 2, 3]]]
    assert check(events, []).violations == ["seed 0: node 1 announced commit index 6 durable on [] of voters [1, 2, 3] only"]
    assert check(events[:-1] + [["commit", 0, 1, 5, [1, 2, 3]]], []).ok


def test_cli_names_the_first_violations_and_exits_non_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--seeds", "2", "--sync", "OFF"]) == 1
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("seed 2: node 1 applied index ")
    assert re.fullmatch(r"\d+ raft writes, 0 fsynced; checked 0 vote grants, \d+ append acknowledgements, 0 commit "
                        r"announcements, \d+ applies: \d+ did not", out[-1]), out[-1]


def test_verdict_summary_of_a_clean_run() -> None:
    v = Verdict(saves=3, durable_saves=3)
    assert v.summary() == ("3 raft writes, 3 fsynced; checked 0 vote grants, 0 append acknowledgements, 0 commit "
                           "announcements, 0 applies: every one left after the fsync covering it")
