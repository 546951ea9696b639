"""Specification of manager/raft/sqlite_storage.py: MemoryStorage's semantics, durable across reopen, one fsync per Ready,
and corruption reported by open(). The SIGKILL crash test is in test_raft_sqlite_crash.py."""

from __future__ import annotations

import os
import random
import sqlite3
import stat
from pathlib import Path

import pytest

from manager.raft import Config, RaftNode, StateRole
from manager.raft.messages import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from manager.raft.sqlite_storage import CorruptLogError, SQLiteStorage
from manager.raft.storage import CompactedError, MemoryStorage, StorageError, UnavailableError


def ents(lo: int, hi: int, term: int) -> list[Entry]:
    """Entries lo..hi (inclusive) of one term, with data naming them."""
    return [Entry(i, term, EntryKind.NORMAL, f"{i}/{term}".encode()) for i in range(lo, hi + 1)]


def snap(index: int, term: int, voters: tuple[int, ...] = (1, 2, 3), data: bytes = b"", removed: tuple[int, ...] = ()) -> Snapshot:
    return Snapshot(SnapshotMeta(index, term, ConfState(voters, removed)), data)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "raft" / "raft.db"


def reopen(st: SQLiteStorage, **kw) -> SQLiteStorage:
    st.close()
    return SQLiteStorage.open(st.path, **kw)


def state_of(st) -> tuple:
    """Everything a Storage shows, for comparing two of them."""
    first, last = st.first_index(), st.last_index()
    return (st.initial_state(), st.snapshot(), first, last, st.entries(first, last + 1), [st.term(i) for i in range(first - 1, last + 1)])


def raw(db: Path, sql: str, *args) -> None:
    """Change the file behind the storage's back, as a disk or an operator could."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute(sql, args)
    conn.close()


# ---------------------------------------------------------------------------------------------- opening and creating
def test_open_creates_an_empty_store_with_mode_0600(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.set_hard_state(HardState(1, 0, 0))  # make SQLite create its -wal file too
    modes = {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in db.parent.iterdir()}
    assert modes == {"raft.db": 0o600, "raft.db-wal": 0o600}
    st.close()


def test_fresh_store_is_empty_and_reads_like_an_empty_memory_storage(db: Path) -> None:
    st = SQLiteStorage.open(db)
    assert st.is_empty()
    assert state_of(st) == state_of(MemoryStorage())


def test_store_uses_wal_and_full_sync(db: Path) -> None:
    st = SQLiteStorage.open(db)
    assert st._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert st._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    st.close()


def test_second_open_of_a_store_in_use_is_refused(db: Path) -> None:
    st = SQLiteStorage.open(db)
    with pytest.raises(StorageError, match=f"raft store {db} is in use by another process"):
        SQLiteStorage.open(db)
    st.close()
    SQLiteStorage.open(db).close()


def test_file_that_is_not_a_database_is_reported_corrupt(db: Path) -> None:
    db.parent.mkdir()
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CorruptLogError, match="is unreadable"):
        SQLiteStorage.open(db)


# ---------------------------------------------------------------------------------------------- bootstrap
def test_bootstrap_matches_memory_storage_bootstrap_and_survives_reopen(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.bootstrap([3, 1, 2], b"seed")
    want = state_of(MemoryStorage.bootstrap([3, 1, 2], b"seed"))
    assert state_of(st) == want
    assert not st.is_empty()
    assert state_of(reopen(st)) == want


def test_bootstrap_of_a_non_empty_store_is_refused(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.bootstrap([1])
    with pytest.raises(StorageError, match=r"cannot bootstrap raft store .* already holds state \(last index 1\)"):
        st.bootstrap([1, 2])
    assert st.initial_state()[1] == ConfState((1,))


def test_bootstrap_with_invalid_voters_is_refused_and_writes_nothing(db: Path) -> None:
    st = SQLiteStorage.open(db)
    with pytest.raises(ValueError, match=r"invalid voters \[0, 2\]: need positive node ids"):
        st.bootstrap([0, 2])
    assert st.is_empty() and st.fsyncs == 0
    assert reopen(st).is_empty()


# ---------------------------------------------------------------------------------------------- round trips
def test_hard_state_round_trips_through_reopen(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.bootstrap([1, 2, 3])
    st.append(ents(2, 9, 4))
    st.set_hard_state(HardState(term=7, vote=3, commit=9))
    assert reopen(st).initial_state() == (HardState(7, 3, 9), ConfState((1, 2, 3)))


def test_entries_of_every_kind_round_trip_through_reopen(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.bootstrap([1])
    written = [
        Entry(2, 2, EntryKind.EMPTY, b""),
        Entry(3, 2, EntryKind.NORMAL, bytes(range(256)) * 40),
        Entry(4, 2, EntryKind.CONF_CHANGE, b"add 4"),
        Entry(5, 3, EntryKind.NORMAL, b"\x00"),
    ]
    st.append(written)
    st = reopen(st)
    assert st.entries(2, 6) == written
    assert [st.term(i) for i in range(1, 6)] == [1, 2, 2, 2, 3]
    assert (st.first_index(), st.last_index()) == (2, 5)


def test_snapshot_with_conf_state_and_large_data_round_trips(db: Path) -> None:
    st = SQLiteStorage.open(db)
    data = random.Random(1).randbytes(6 << 20)
    received = snap(100, 9, voters=(1, 4, 5), removed=(2, 3), data=data)
    st.apply_snapshot(received)
    st = reopen(st)
    assert st.snapshot() == received
    assert st.initial_state() == (HardState(), ConfState((1, 4, 5), (2, 3)))
    assert (st.first_index(), st.last_index(), st.term(100)) == (101, 100, 9)


def test_reads_of_entries_older_than_the_cache_come_from_the_database(db: Path) -> None:
    st = SQLiteStorage.open(db, cache_bytes=100)  # about two entries
    st.bootstrap([1])
    st.append(ents(2, 40, 2))
    st = reopen(st, cache_bytes=100)
    assert st.entries(2, 41) == ents(2, 40, 2)
    assert st.entries(5, 41, max_bytes=3 * 28) == ents(5, 7, 2)  # each entry is 4 bytes of data + 24
    assert st.entries(38, 41) == ents(38, 40, 2)


# ---------------------------------------------------------------------------------------------- MemoryStorage semantics
def test_append_overwrites_a_conflicting_tail(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.bootstrap([1])
    st.append(ents(2, 10, 2))
    st.append(ents(6, 7, 3))
    want = ents(2, 5, 2) + ents(6, 7, 3)
    assert st.entries(2, 8) == want and st.last_index() == 7
    st = reopen(st)
    assert st.entries(2, 8) == want and st.last_index() == 7
    with pytest.raises(UnavailableError, match="index 8 is past the last index 7"):
        st.term(8)


def test_append_with_a_gap_is_refused_and_writes_nothing(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.bootstrap([1])
    st.append(ents(2, 3, 2))
    with pytest.raises(StorageError, match="gap: appending at 5 after last index 3"):
        st.save_ready(HardState(5, 1, 3), ents(5, 6, 5), None, None)
    assert st.hard_state() == HardState(1, 0, 1)
    assert state_of(reopen(st))[3] == 3


def test_append_of_entries_covered_by_the_snapshot_keeps_only_the_new_tail(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.apply_snapshot(snap(5, 2))
    st.append(ents(3, 7, 2))
    assert (st.first_index(), st.last_index()) == (6, 7)
    assert reopen(st).entries(6, 8) == ents(6, 7, 2)


def test_append_of_non_contiguous_entries_is_refused(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.bootstrap([1])
    with pytest.raises(StorageError, match="entries to append are not contiguous: 2 then 4"):
        st.append([Entry(2, 1), Entry(4, 1)])
    assert st.last_index() == 1


def test_compaction_drops_covered_entries_and_keeps_the_snapshot(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.bootstrap([1, 2])
    st.append(ents(2, 20, 3))
    st.compact(snap(15, 3, voters=(1, 2), data=b"app state at 15"))
    for s in (st, reopen(st)):
        assert (s.first_index(), s.last_index(), s.term(15)) == (16, 20, 3)
        assert s.snapshot().data == b"app state at 15"
        assert s.entries(16, 21) == ents(16, 20, 3)
        with pytest.raises(CompactedError, match=r"index 15 is compacted \(snapshot at 15\)"):
            s.entries(15, 16)
        with pytest.raises(CompactedError, match=r"index 14 is compacted \(snapshot at 15\)"):
            s.term(14)
    assert s._conn.execute("SELECT min(idx), count(*) FROM entries").fetchone() == (16, 5)


def test_compaction_older_than_the_snapshot_is_ignored_without_a_transaction(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.apply_snapshot(snap(10, 2))
    before = st.fsyncs
    st.compact(snap(8, 2))
    assert st.fsyncs == before and st.snapshot() == snap(10, 2)


def test_compaction_past_the_last_index_is_refused(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.bootstrap([1])
    st.append(ents(2, 4, 1))
    with pytest.raises(StorageError, match="compaction at 5 is past the last index 4"):
        st.compact(snap(5, 1))
    assert st.snapshot().meta.index == 1 and reopen(st).snapshot().meta.index == 1


def test_apply_snapshot_replaces_the_whole_log(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.bootstrap([1])
    st.append(ents(2, 30, 2))
    st.apply_snapshot(snap(12, 4, data=b"leader state"))
    for s in (st, reopen(st)):
        assert (s.first_index(), s.last_index(), s.term(12)) == (13, 12, 4)
        assert s.entries(13, 13) == []
        assert s.snapshot().data == b"leader state"
    assert s._conn.execute("SELECT count(*) FROM entries").fetchone() == (0,)


def test_apply_snapshot_older_than_the_stored_one_is_refused(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.apply_snapshot(snap(12, 4))
    with pytest.raises(StorageError, match="snapshot at 12 is older than the stored one at 12"):
        st.apply_snapshot(snap(12, 5))
    assert reopen(st).snapshot() == snap(12, 4)


OPS = ("append", "append", "append", "hard_state", "apply_snapshot", "compact", "read", "read", "read", "reopen")


def outcome(fn, *args):
    """A call's result or its error, comparable across the two storages."""
    try:
        return ("ok", fn(*args))
    except StorageError as e:
        return ("error", type(e), str(e))


def random_entries(rng: random.Random, first: int, n: int) -> list[Entry]:
    return [Entry(i, rng.randint(1, 6), rng.choice(list(EntryKind)), rng.randbytes(rng.randint(0, 40))) for i in range(first, first + n)]


@pytest.mark.parametrize("seed,cache_bytes", [(s, 120 if s % 2 else 1 << 20) for s in range(12)])
def test_random_operations_give_the_same_answers_as_memory_storage(tmp_path: Path, seed: int, cache_bytes: int) -> None:
    rng = random.Random(seed)
    mem = MemoryStorage.bootstrap([1, 2, 3]) if seed % 3 else MemoryStorage()
    sql = SQLiteStorage.open(tmp_path / "raft.db", cache_bytes=cache_bytes)
    if seed % 3:
        sql.bootstrap([1, 2, 3])
    for step in range(250):
        op = rng.choice(OPS)
        base, last = mem.first_index() - 1, mem.last_index()
        if op == "append":
            es = random_entries(rng, rng.randint(max(1, base - 2), last + 2), rng.randint(0, 5))
            calls = [("append", es)]
        elif op == "hard_state":
            calls = [("set_hard_state", HardState(rng.randint(0, 9), rng.randint(0, 3), rng.randint(0, last)))]
        elif op == "apply_snapshot":
            voters = tuple(sorted(rng.sample(range(1, 6), rng.randint(1, 3))))
            s = snap(rng.randint(max(0, base - 1), last + 3), rng.randint(1, 6), voters, rng.randbytes(rng.randint(0, 64)))
            calls = [("apply_snapshot", s)]
        elif op == "compact":
            calls = [("compact", snap(rng.randint(max(0, base - 1), last + 1), rng.randint(1, 6), data=b"c%d" % step))]
        elif op == "read":
            lo = rng.randint(max(0, base - 1), last + 2)
            hi = rng.randint(lo, last + 3)
            max_bytes = rng.choice([None, 0, rng.randint(1, 200)])
            calls = [("entries", lo, hi, max_bytes), ("term", rng.randint(max(0, base - 1), last + 2))]
        else:
            if mem.hard_state().commit <= last:  # a real log never commits past its end (open checks that)
                sql = reopen(sql, cache_bytes=cache_bytes)
            calls = []
        for name, *args in calls:
            got, want = outcome(getattr(sql, name), *args), outcome(getattr(mem, name), *args)
            assert got == want, f"seed {seed} step {step}: {name}{tuple(args)!r}"
        assert state_of(sql) == state_of(mem), f"seed {seed} step {step} after {op}"
    if mem.hard_state().commit <= mem.last_index():
        assert state_of(reopen(sql, cache_bytes=cache_bytes)) == state_of(mem)


# ---------------------------------------------------------------------------------------------- group commit
def test_save_ready_is_one_transaction_per_call(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.bootstrap([1, 2, 3])
    assert st.fsyncs == 1
    st.save_ready(HardState(2, 1, 1), ents(2, 65, 2), None, None)
    assert (st.fsyncs, st.entries_written) == (2, 64)
    st.save_ready(HardState(2, 1, 40), ents(66, 70, 2), None, snap(30, 2, data=b"at 30"))
    assert (st.fsyncs, st.entries_written) == (3, 69)
    st.save_ready(HardState(3, 0, 40), ents(71, 71, 3), snap(80, 3), None)
    assert (st.fsyncs, st.entries_written) == (4, 69)  # 71 is covered by the snapshot at 80
    assert (st.first_index(), st.last_index()) == (81, 80)


def test_save_ready_with_nothing_to_write_costs_no_transaction(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.save_ready(None, [], None, None)
    assert st.fsyncs == 0


def test_save_ready_persists_snapshot_entries_hard_state_and_compaction_together(db: Path) -> None:
    st = SQLiteStorage.open(db)
    mem = MemoryStorage()
    hs, es, received, own = HardState(4, 2, 25), ents(21, 30, 4), snap(20, 3, data=b"leader"), snap(25, 4, data=b"mine")
    st.save_ready(hs, es, received, own)
    mem.apply_snapshot(received)
    mem.append(es)
    mem.set_hard_state(hs)
    mem.compact(own)
    assert state_of(st) == state_of(mem)
    assert state_of(reopen(st)) == state_of(mem)


def test_failed_save_ready_changes_neither_memory_nor_disk(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.bootstrap([1])
    st.append(ents(2, 5, 1))
    before = state_of(st)
    with pytest.raises(StorageError, match="compaction at 9 is past the last index 8"):
        st.save_ready(HardState(2, 1, 5), ents(6, 8, 2), None, snap(9, 2))
    assert state_of(st) == before and st.fsyncs == 2
    assert state_of(reopen(st)) == before


class FailingCommit:
    """A connection whose COMMIT fails like a full disk would; everything else goes through."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __getattr__(self, name: str):
        return getattr(self.conn, name)

    def execute(self, sql: str, *args):
        if sql == "COMMIT":
            raise sqlite3.OperationalError("disk I/O error")
        return self.conn.execute(sql, *args)


def test_failed_commit_raises_storage_error_and_changes_neither_memory_nor_disk(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.bootstrap([1])
    before = state_of(st)
    real, st._conn = st._conn, FailingCommit(st._conn)
    with pytest.raises(StorageError, match="write failed, nothing of this Ready is stored: disk I/O error"):
        st.save_ready(HardState(2, 1, 3), ents(2, 3, 2), None, None)
    st._conn = real
    assert state_of(st) == before and (st.fsyncs, st.entries_written) == (1, 0)
    assert state_of(reopen(st)) == before


def test_writes_after_close_are_refused(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.close()
    with pytest.raises(StorageError, match=f"raft store {db} is closed"):
        st.set_hard_state(HardState(1, 0, 0))


# ---------------------------------------------------------------------------------------------- corruption
@pytest.fixture
def written(db: Path) -> Path:
    """A closed store: snapshot at 1, entries 2..20 (term 2), commit 10."""
    st = SQLiteStorage.open(db)
    st.bootstrap([1, 2, 3])
    st.save_ready(HardState(2, 1, 10), ents(2, 20, 2), None, None)
    st.close()
    return db


def test_entry_data_changed_without_its_checksum_is_reported_at_its_index(written: Path) -> None:
    raw(written, "UPDATE entries SET data = ? WHERE idx = 12", b"12/3")  # one byte flipped
    with pytest.raises(CorruptLogError, match="raft log corrupt at index 12: checksum mismatch") as err:
        SQLiteStorage.open(written)
    assert err.value.index == 12


def test_entry_term_changed_without_its_checksum_is_reported_at_its_index(written: Path) -> None:
    raw(written, "UPDATE entries SET term = 3 WHERE idx = 7")
    with pytest.raises(CorruptLogError, match="raft log corrupt at index 7: checksum mismatch"):
        SQLiteStorage.open(written)


def test_missing_middle_entry_is_reported_as_a_gap(written: Path) -> None:
    raw(written, "DELETE FROM entries WHERE idx = 9")
    with pytest.raises(CorruptLogError, match=r"raft log corrupt at index 9: entry missing \(gap between entry 8 and entry 10\)"):
        SQLiteStorage.open(written)


def test_missing_first_entry_after_the_snapshot_is_reported_as_a_gap(written: Path) -> None:
    raw(written, "DELETE FROM entries WHERE idx = 2")
    with pytest.raises(CorruptLogError, match=r"raft log corrupt at index 2: entry missing \(gap between snapshot at 1 and entry 3\)"):
        SQLiteStorage.open(written)


def test_shortened_entry_is_reported_as_truncated(written: Path) -> None:
    raw(written, "UPDATE entries SET data = substr(data, 1, 2) WHERE idx = 15")
    with pytest.raises(CorruptLogError, match="truncated entry at index 15: 2 of 4 bytes"):
        SQLiteStorage.open(written)


def test_lost_committed_tail_is_reported_as_truncated(written: Path) -> None:
    raw(written, "DELETE FROM entries WHERE idx >= 8")
    with pytest.raises(CorruptLogError, match="raft log truncated: commit index 10 is past the last entry 7"):
        SQLiteStorage.open(written)


def test_entry_at_or_below_the_snapshot_is_reported(written: Path) -> None:
    raw(written, "INSERT INTO entries VALUES (1, 1, 0, 0, x'', 0)")
    with pytest.raises(CorruptLogError, match="raft log corrupt at index 1: entry at or below the snapshot at 1"):
        SQLiteStorage.open(written)


def test_hard_state_changed_without_its_checksum_is_reported(written: Path) -> None:
    raw(written, "UPDATE hard_state SET vote = 2")
    with pytest.raises(CorruptLogError, match="raft hard state corrupt: checksum mismatch"):
        SQLiteStorage.open(written)


def test_snapshot_changed_without_its_checksum_is_reported(written: Path) -> None:
    raw(written, "UPDATE snapshot SET voters = '1,2,4'")
    with pytest.raises(CorruptLogError, match="raft snapshot corrupt at index 1: checksum mismatch"):
        SQLiteStorage.open(written)


def test_failed_open_leaves_the_corrupt_store_as_it_was(written: Path) -> None:
    raw(written, "UPDATE entries SET data = ? WHERE idx = 12", b"12/3")
    for _ in range(2):
        with pytest.raises(CorruptLogError, match="index 12"):
            SQLiteStorage.open(written)
    conn = sqlite3.connect(written)
    assert conn.execute("SELECT count(*), max(idx) FROM entries").fetchone() == (19, 20)
    conn.close()


# ---------------------------------------------------------------------------------------------- under the Raft core
def run_cluster(nodes: dict[int, RaftNode], stores: dict[int, SQLiteStorage], applied: dict[int, list[bytes]], rounds: int = 50) -> None:
    """Ready loop over direct delivery: persist in one save_ready, then send, then apply, then advance."""
    for _ in range(rounds):
        msgs = []
        for i, n in nodes.items():
            if n.has_ready():
                rd = n.ready()
                stores[i].save_ready(rd.hard_state, rd.entries, rd.snapshot, rd.compaction)
                msgs += rd.messages
                if rd.snapshot is not None:
                    applied[i] = rd.snapshot.data.split(b",") if rd.snapshot.data else []
                applied[i] += [e.data for e in rd.committed_entries if e.kind == EntryKind.NORMAL]
                n.advance(rd)
        if not msgs:
            return
        for m in msgs:
            if m.to in nodes:
                nodes[m.to].step(m)


def test_raft_cluster_over_sqlite_storage_survives_a_full_restart(tmp_path: Path) -> None:
    cfg = Config(pre_vote=False)
    stores = {i: SQLiteStorage.open(tmp_path / f"n{i}.db") for i in (1, 2, 3)}
    for st in stores.values():
        st.bootstrap([1, 2, 3])
    nodes = {i: RaftNode(i, st, cfg, random.Random(i)) for i, st in stores.items()}
    applied: dict[int, list[bytes]] = {i: [] for i in nodes}
    nodes[1].campaign()
    run_cluster(nodes, stores, applied)
    assert nodes[1].state == StateRole.LEADER
    for k in range(30):
        nodes[1].propose(b"v%d" % k)
        if k == 20:
            nodes[1].compact(nodes[1].log.applied, b",".join(applied[1]))
        run_cluster(nodes, stores, applied)
    want = [b"v%d" % k for k in range(30)]
    assert applied == {1: want, 2: want, 3: want}
    last = stores[1].last_index()
    assert stores[1].first_index() > 2  # the compaction took
    # everyone crashes and restarts from disk; a new leader commits more on top
    for st in stores.values():
        st.close()
    stores = {i: SQLiteStorage.open(tmp_path / f"n{i}.db") for i in (1, 2, 3)}
    assert {i: (st.last_index(), st.hard_state().commit) for i, st in stores.items()} == {i: (last, last) for i in (1, 2, 3)}
    nodes = {i: RaftNode(i, st, cfg, random.Random(10 + i)) for i, st in stores.items()}
    nodes[2].campaign()
    run_cluster(nodes, stores, applied)
    assert nodes[2].state == StateRole.LEADER
    index, term = nodes[2].propose(b"after restart")
    run_cluster(nodes, stores, applied)
    assert [st.term(index) for st in stores.values()] == [term] * 3
    assert all(st.entries(index, index + 1)[0].data == b"after restart" for st in stores.values())


def test_garbage_over_a_database_page_is_reported_corrupt(db: Path) -> None:
    st = SQLiteStorage.open(db)
    st.bootstrap([1])
    st.save_ready(HardState(2, 1, 2), [Entry(i, 2, EntryKind.NORMAL, b"q" * 300) for i in range(2, 2000)], None, None)
    st.close()
    image = bytearray(db.read_bytes())
    for off in range(3 * 4096, 3 * 4096 + 200):  # the head of page 4, somewhere among the entries
        image[off] ^= 0xFF
    db.write_bytes(image)
    with pytest.raises(CorruptLogError, match="raft (store .* is unreadable|log corrupt at index)"):
        SQLiteStorage.open(db)
