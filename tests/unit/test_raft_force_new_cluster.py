"""--force-new-cluster's log rewrite (manager/raft/forcenew.py) on real SQLite storage: the committed prefix is kept,
the uncommitted tail dropped, every other voter removed by a committed entry; and a clean stop records the commit index."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from manager.raft.core import Config, RaftNode
from manager.raft.forcenew import ForceNewClusterError, force_new_cluster, record_commit
from manager.raft.messages import ConfChange, ConfChangeOp, Entry, EntryKind, HardState
from manager.raft.sqlite_storage import SQLiteStorage


def three_member_log(path: Path, commit: int = 4) -> None:
    """Founders 1, 2, 3 (snapshot at 1), member 4 added at 3, store entries; entries 5 and 6 not committed."""
    with SQLiteStorage.open(path) as st:
        st.bootstrap([1, 2, 3])
        ents = [
            Entry(2, 2, EntryKind.EMPTY, b""),
            Entry(3, 2, EntryKind.CONF_CHANGE, ConfChange(ConfChangeOp.ADD, 4, "127.0.0.4:1").encode()),
            Entry(4, 2, EntryKind.NORMAL, b"kept"),
            Entry(5, 3, EntryKind.NORMAL, b"uncommitted-1"),
            Entry(6, 3, EntryKind.NORMAL, b"uncommitted-2"),
        ]
        st.save_ready(HardState(term=3, vote=2, commit=commit), ents, None, None)


def test_the_committed_prefix_stays_the_tail_goes_and_every_other_voter_is_removed_by_a_committed_entry(tmp_path: Path) -> None:
    db = tmp_path / "raft.db"
    three_member_log(db)
    with SQLiteStorage.open(db) as st:
        forced = force_new_cluster(st, 2)
    assert (forced.kept, forced.dropped, forced.removed, forced.commit) == (4, 2, (1, 3, 4), 7)
    with SQLiteStorage.open(db) as st:
        assert st.hard_state() == HardState(term=3, vote=2, commit=7)
        tail = st.entries(4, 8)
        assert [(e.index, e.term, e.kind) for e in tail] == [(4, 2, EntryKind.NORMAL)] + [
            (i, 3, EntryKind.CONF_CHANGE) for i in (5, 6, 7)]
        assert tail[0].data == b"kept"
        assert [ConfChange.decode(e.data) for e in tail[1:]] == [ConfChange(ConfChangeOp.REMOVE, v) for v in (1, 3, 4)]
        core = RaftNode(2, st, Config(), random.Random(0))
        assert core.voters == [2] and core.removed == {1, 3, 4} and core.committed == 7


def test_the_one_member_cluster_elects_itself_and_commits_alone(tmp_path: Path) -> None:
    db = tmp_path / "raft.db"
    three_member_log(db)
    with SQLiteStorage.open(db) as st:
        force_new_cluster(st, 3)
        core = RaftNode(3, st, Config(), random.Random(0))
        for _ in range(2 * core.cfg.election_tick):
            core.tick()
        assert core.leader == 3 and core.term == 4
        assert core.committed == core.log.last_index()  # its no-op, committed by itself alone


def test_forcing_twice_changes_nothing_more(tmp_path: Path) -> None:
    db = tmp_path / "raft.db"
    three_member_log(db)
    with SQLiteStorage.open(db) as st:
        force_new_cluster(st, 1)
        again = force_new_cluster(st, 1)
        assert (again.dropped, again.removed, again.commit) == (0, (), 7)
        assert st.last_index() == 7


def test_a_one_member_log_only_loses_its_uncommitted_tail(tmp_path: Path) -> None:
    db = tmp_path / "raft.db"
    with SQLiteStorage.open(db) as st:
        st.bootstrap([1])
        st.save_ready(HardState(2, 1, 2), [Entry(2, 2, EntryKind.NORMAL, b"a"), Entry(3, 2, EntryKind.NORMAL, b"b")], None, None)
        forced = force_new_cluster(st, 1)
        assert (forced.dropped, forced.removed, forced.commit) == (1, (), 3)
        assert [(e.index, e.kind) for e in st.entries(2, 4)] == [(2, EntryKind.NORMAL), (3, EntryKind.EMPTY)]


def test_a_member_that_is_not_a_committed_voter_is_refused_by_name(tmp_path: Path) -> None:
    db = tmp_path / "raft.db"
    three_member_log(db, commit=2)  # the addition of 4 (index 3) is not committed
    with SQLiteStorage.open(db) as st:
        with pytest.raises(ForceNewClusterError, match=r"cannot force a new cluster from member 4: it is not a voter in the "
                                                        r"last committed configuration of raft store .*raft.db \(voters \[1, 2, 3\]\)"):
            force_new_cluster(st, 4)
        assert st.last_index() == 6 and st.hard_state().commit == 2  # nothing written


def test_an_empty_store_is_refused_naming_it(tmp_path: Path) -> None:
    with SQLiteStorage.open(tmp_path / "raft.db") as st:
        with pytest.raises(ForceNewClusterError, match=f"cannot force a new cluster: raft store {tmp_path}/raft.db holds "
                                                       f"no raft data of member 1"):
            force_new_cluster(st, 1)


def test_a_clean_stop_records_a_commit_index_the_stored_log_backs(tmp_path: Path) -> None:
    db = tmp_path / "raft.db"
    three_member_log(db, commit=2)
    with SQLiteStorage.open(db) as st:
        core = RaftNode(1, st, Config(), random.Random(0))
        core.log.commit_to(5)
        assert record_commit(st, core) == 5
        assert st.hard_state() == HardState(term=3, vote=2, commit=5)
        assert record_commit(st, core) is None  # nothing newer


def test_a_clean_stop_does_not_record_a_commit_over_entries_the_core_replaced_in_memory(tmp_path: Path) -> None:
    db = tmp_path / "raft.db"
    three_member_log(db, commit=4)
    with SQLiteStorage.open(db) as st:
        core = RaftNode(1, st, Config(), random.Random(0))
        core.log.append([Entry(5, 4, EntryKind.NORMAL, b"newer")])  # unstable: entry 5 of term 3 is stale on disk
        core.log.commit_to(5)
        assert record_commit(st, core) is None
        assert st.hard_state().commit == 4


CLI = ["run", "--id", "3", "--listen", "127.0.0.3:7000", "--data-dir", "/nonexistent"]


def test_the_manager_command_passes_force_new_cluster_to_the_manager_config() -> None:
    from manager.__main__ import build_parser, config_from_args

    assert config_from_args(build_parser().parse_args([*CLI, "--force-new-cluster"])).force_new_cluster is True
    assert config_from_args(build_parser().parse_args(CLI)).force_new_cluster is False


@pytest.mark.parametrize("extra", [["--join"], ["--storage", "memory"]])
def test_force_new_cluster_without_a_members_own_durable_data_is_refused(extra: list[str]) -> None:
    from manager.__main__ import build_parser, config_from_args

    with pytest.raises(SystemExit) as exc:
        config_from_args(build_parser().parse_args([*CLI, "--force-new-cluster", *extra]))
    assert exc.value.code == "--force-new-cluster starts from this member's raft data: it needs --storage sqlite and no --join"
