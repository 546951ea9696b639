"""Durable Raft storage in SQLite: hard state, log entries and the snapshot, one transaction (= one fsync) per Ready.
Implements storage.Storage (read by core.py/log.py) with MemoryStorage's write semantics; the manager's shell writes it."""

from __future__ import annotations

import os
import sqlite3
import struct
import zlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .messages import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from .storage import LogView, StorageError

SCHEMA_VERSION = 1
DEFAULT_CACHE_BYTES = 64 << 20  # the leader re-reads the log tail for every follower: keep it in memory

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    idx INTEGER PRIMARY KEY,
    term INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    length INTEGER NOT NULL,
    data BLOB NOT NULL,
    checksum INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS hard_state (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    term INTEGER NOT NULL,
    vote INTEGER NOT NULL,
    commit_index INTEGER NOT NULL,
    checksum INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS snapshot (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    idx INTEGER NOT NULL,
    term INTEGER NOT NULL,
    voters TEXT NOT NULL,
    removed TEXT NOT NULL,
    length INTEGER NOT NULL,
    data BLOB NOT NULL,
    checksum INTEGER NOT NULL
);
"""


class CorruptLogError(StorageError):
    """What is stored is not what was written (bad checksum, missing or truncated rows): refuse to start on it."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


# -- checksums: CRC32 over a fixed binary header and the payload, so a bit flip anywhere in a row shows ---------------
def entry_checksum(index: int, term: int, kind: int, data: bytes) -> int:
    return zlib.crc32(data, zlib.crc32(struct.pack(">qqB", index, term, kind)))


def hard_state_checksum(hs: HardState) -> int:
    return zlib.crc32(struct.pack(">qqq", hs.term, hs.vote, hs.commit))


def _ids_text(ids: tuple[int, ...]) -> str:
    return ",".join(str(i) for i in ids)


def _ids_parse(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",")) if text else ()


def snapshot_checksum(meta: SnapshotMeta, data: bytes) -> int:
    cs = meta.conf_state
    header = struct.pack(">qq", meta.index, meta.term) + f"{_ids_text(cs.voters)};{_ids_text(cs.removed)}".encode()
    return zlib.crc32(data, zlib.crc32(header))


def _entry_row(e: Entry) -> tuple[int, int, int, int, bytes, int]:
    data = bytes(e.data)
    return (e.index, e.term, int(e.kind), len(data), data, entry_checksum(e.index, e.term, int(e.kind), data))


def _take_within(entries: Iterable[Entry], max_bytes: int | None) -> list[Entry]:
    """storage.limit_size over a lazy sequence: stop reading as soon as the budget is exceeded."""
    out: list[Entry] = []
    total = 0
    for e in entries:
        total += e.size()
        if out and max_bytes is not None and total > max_bytes:
            break
        out.append(e)
    return out


@dataclass(slots=True)
class _Plan:
    """A validated save_ready: what to write, decided before anything is touched."""

    hard_state: HardState | None = None
    snapshot: Snapshot | None = None  # replaces the whole log
    entries: list[Entry] = field(default_factory=list)  # head already trimmed to after the snapshot
    compaction: Snapshot | None = None  # drops entries up to its index

    def empty(self) -> bool:
        return self.hard_state is None and self.snapshot is None and not self.entries and self.compaction is None


def plan_ready(
    base: int,
    last: int,
    hard_state: HardState | None,
    entries: list[Entry],
    snapshot: Snapshot | None,
    compaction: Snapshot | None,
) -> _Plan:
    """Check a Ready against a log holding (base, last] in MemoryStorage's order (snapshot, entries, hard state,
    compaction) and with its rules and errors; raises StorageError before any write."""
    plan = _Plan(hard_state=hard_state)
    if snapshot is not None:
        if snapshot.meta.index <= base:
            raise StorageError(f"snapshot at {snapshot.meta.index} is older than the stored one at {base}")
        plan.snapshot = snapshot
        base = last = snapshot.meta.index
    if entries:
        for prev, e in zip(entries, entries[1:]):
            if e.index != prev.index + 1:
                raise StorageError(f"entries to append are not contiguous: {prev.index} then {e.index}")
        first = entries[0].index
        if first <= base:
            entries = entries[base + 1 - first :]  # the head is already covered by the snapshot
        if entries:
            first = entries[0].index
            if first > last + 1:
                raise StorageError(f"gap: appending at {first} after last index {last}")
            plan.entries = entries
            last = entries[-1].index
    if compaction is not None and compaction.meta.index > base:
        if compaction.meta.index > last:
            raise StorageError(f"compaction at {compaction.meta.index} is past the last index {last}")
        plan.compaction = compaction
    return plan


class SQLiteStorage(LogView):
    """Storage in one SQLite file (WAL, synchronous=FULL). All terms and the recent tail of entries are kept in
    memory, so term() never touches the disk and entries() only does for old indexes (a slow follower)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, cache_bytes: int) -> None:
        # use open(): it creates the file, checks the schema and verifies every row
        self._conn = conn
        self.path = path
        self._cache_limit = cache_bytes
        self._hard_state = HardState()
        self._snapshot = Snapshot()
        self._terms: list[int] = []  # _terms[i] is the term of index snapshot.meta.index + 1 + i
        self._cache: deque[Entry] = deque()  # the entries from _cache_start to the last index
        self._cache_start = 1
        self._cache_size = 0
        self._closed = False
        self.fsyncs = 0  # committed write transactions since open (each one fsync of the WAL)
        self.entries_written = 0

    # -- opening ------------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: Path | str, cache_bytes: int = DEFAULT_CACHE_BYTES) -> "SQLiteStorage":
        """Create (mode 0600) or open the store at path and verify it all; raises CorruptLogError on a bad row,
        a gap or a truncated entry, StorageError if another process holds it."""
        path = Path(path)
        created = not path.exists()
        if created:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.close(os.open(path, os.O_CREAT | os.O_RDWR, 0o600))  # before SQLite: its -wal file copies the mode
            _fsync_dir(path.parent)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
        try:
            st = cls(conn, path, cache_bytes)
            st._configure()
            st._load()
        except sqlite3.OperationalError as e:  # locked, permissions, I/O: the file may well be fine
            conn.close()
            if "locked" in str(e):
                raise StorageError(f"raft store {path} is in use by another process") from e
            raise StorageError(f"cannot open raft store {path}: {e}") from e
        except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
            conn.close()
            raise CorruptLogError(f"raft store {path} is unreadable: {e}") from e
        except BaseException:
            conn.close()
            raise
        return st

    def _configure(self) -> None:
        c = self._conn
        # one process per store: a second manager on the same data dir would vote twice
        c.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = c.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode.lower() != "wal":
            raise StorageError(f"raft store {self.path}: cannot switch to WAL journal mode (got {mode})")
        c.execute("PRAGMA synchronous=FULL")
        c.execute("PRAGMA journal_size_limit=67108864")  # give back the space a many-MB snapshot took in the WAL
        version = c.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise StorageError(f"raft store {self.path} has schema version {version}, this code knows {SCHEMA_VERSION}")
        c.execute("BEGIN IMMEDIATE")  # takes the exclusive lock now, not at the first Ready
        try:
            if version == 0:
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                c.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            c.execute("COMMIT")
        except BaseException:
            c.execute("ROLLBACK")
            raise

    def _load(self) -> None:
        """Read and verify everything: hard state, snapshot, then every entry in index order."""
        c = self._conn
        where = f"(in {self.path})"
        row = c.execute("SELECT term, vote, commit_index, checksum FROM hard_state WHERE id = 0").fetchone()
        if row is not None:
            hs = HardState(row[0], row[1], row[2])
            if hard_state_checksum(hs) != row[3]:
                raise CorruptLogError(f"raft hard state corrupt: checksum mismatch {where}")
            self._hard_state = hs
        row = c.execute(
            "SELECT idx, term, voters, removed, length, data, checksum FROM snapshot WHERE id = 0"
        ).fetchone()
        if row is not None:
            idx, term, voters, removed, length, data, checksum = row
            data = bytes(data)
            try:
                meta = SnapshotMeta(idx, term, ConfState(_ids_parse(voters), _ids_parse(removed)))
            except ValueError:
                raise CorruptLogError(f"raft snapshot corrupt at index {idx}: bad membership {voters!r}/{removed!r} {where}", idx)
            if len(data) != length:
                raise CorruptLogError(f"truncated snapshot at index {idx}: {len(data)} of {length} bytes {where}", idx)
            if snapshot_checksum(meta, data) != checksum:
                raise CorruptLogError(f"raft snapshot corrupt at index {idx}: checksum mismatch {where}", idx)
            self._snapshot = Snapshot(meta, data)
        base = self._snapshot.meta.index
        expect = base + 1
        self._cache_start = expect
        cur = c.execute("SELECT idx, term, kind, length, data, checksum FROM entries ORDER BY idx")
        for idx, term, kind, length, data, checksum in cur:
            if idx < expect:
                raise CorruptLogError(f"raft log corrupt at index {idx}: entry at or below the snapshot at {base} {where}", idx)
            if idx > expect:
                what = f"snapshot at {base}" if expect == base + 1 else f"entry {expect - 1}"
                raise CorruptLogError(
                    f"raft log corrupt at index {expect}: entry missing (gap between {what} and entry {idx}) {where}", expect
                )
            data = bytes(data)
            if len(data) != length:
                raise CorruptLogError(f"truncated entry at index {idx}: {len(data)} of {length} bytes {where}", idx)
            if entry_checksum(idx, term, kind, data) != checksum:
                raise CorruptLogError(f"raft log corrupt at index {idx}: checksum mismatch {where}", idx)
            try:
                kind = EntryKind(kind)
            except ValueError:
                raise CorruptLogError(f"raft log corrupt at index {idx}: unknown entry kind {kind} {where}", idx)
            self._terms.append(term)
            self._cache_push(Entry(idx, term, kind, data))
            expect += 1
        last = self.last_index()
        if self._hard_state.commit > last:
            # commit and the entries it covers are written in one transaction: the tail was lost afterwards
            raise CorruptLogError(
                f"raft log truncated: commit index {self._hard_state.commit} is past the last entry {last} {where}", last + 1
            )

    # -- state as a whole -------------------------------------------------------------------------------------
    def is_empty(self) -> bool:
        """Nothing that a fresh store would not hold: no hard state, no entries, no snapshot."""
        return self._hard_state == HardState() and self._snapshot.meta.index == 0 and not self._terms

    def bootstrap(self, voters: list[int], data: bytes = b"") -> None:
        """Make this empty store a founding member's, like MemoryStorage.bootstrap: a snapshot at index 1,
        term 1 holding the first voters, and hard state term 1 commit 1."""
        if not voters or any(v <= 0 for v in voters):
            raise ValueError(f"invalid voters {voters!r}: need positive node ids")
        if not self.is_empty():
            raise StorageError(
                f"cannot bootstrap raft store {self.path}: it already holds state (last index {self.last_index()})"
            )
        snap = Snapshot(SnapshotMeta(1, 1, ConfState(tuple(sorted(voters)))), data)
        self.save_ready(HardState(term=1, commit=1), [], snap, None)

    def describe(self) -> str:
        return f"raft store {self.path}"

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._conn.close()

    def __enter__(self) -> "SQLiteStorage":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- read view (storage.Storage, through storage.LogView) --------------------------------------------------
    def _log_length(self) -> int:
        return len(self._terms)

    def _term_after_snapshot(self, offset: int) -> int:
        return self._terms[offset]

    def entries(self, lo: int, hi: int, max_bytes: int | None = None) -> list[Entry]:
        self._check_range(lo, hi)
        if lo >= hi:
            return []
        return _take_within(self._iter_entries(lo, hi), max_bytes)

    def _iter_entries(self, lo: int, hi: int) -> Iterator[Entry]:
        """Entries [lo, hi): the part before the cache from the DB (lazily), the rest from the cache."""
        start = self._cache_start
        if lo < start:
            self._check_open()
            cur = self._conn.execute(
                "SELECT idx, term, kind, data FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (lo, min(hi, start))
            )
            try:
                for idx, term, kind, data in cur:
                    yield Entry(idx, term, EntryKind(kind), bytes(data))
            finally:
                cur.close()  # a caller that stopped early (max_bytes) must not leave the statement open
            lo = start
        for i in range(lo - start, hi - start):
            yield self._cache[i]

    # -- writes --------------------------------------------------------------------------------------------------
    def save_ready(
        self,
        hard_state: HardState | None,
        entries: list[Entry],
        snapshot: Snapshot | None,
        compaction: Snapshot | None,
    ) -> None:
        """Persist what a Ready asks for in ONE transaction (one fsync): the leader's snapshot (replaces the log),
        entries (replacing any conflicting tail), hard state, then the app's compaction. Bad input raises
        StorageError and writes nothing; nothing to write costs no transaction."""
        plan = plan_ready(self._snapshot.meta.index, self.last_index(), hard_state, entries, snapshot, compaction)
        if plan.empty():
            return
        self._check_open()
        c = self._conn
        c.execute("BEGIN IMMEDIATE")
        try:
            if plan.snapshot is not None:
                c.execute("DELETE FROM entries")
                self._write_snapshot(plan.snapshot)
            if plan.entries:
                c.execute("DELETE FROM entries WHERE idx >= ?", (plan.entries[0].index,))
                c.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?)", map(_entry_row, plan.entries))
            if plan.hard_state is not None:
                hs = plan.hard_state
                c.execute(
                    "INSERT OR REPLACE INTO hard_state VALUES (0, ?, ?, ?, ?)",
                    (hs.term, hs.vote, hs.commit, hard_state_checksum(hs)),
                )
            if plan.compaction is not None:
                c.execute("DELETE FROM entries WHERE idx <= ?", (plan.compaction.meta.index,))
                self._write_snapshot(plan.compaction)
            c.execute("COMMIT")
        except BaseException as e:
            if c.in_transaction:
                c.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error):
                # after a failed fsync nothing is certain about the file: the caller must stop the node
                raise StorageError(f"raft store {self.path}: write failed, nothing of this Ready is stored: {e}") from e
            raise
        self.fsyncs += 1
        self.entries_written += len(plan.entries)
        self._apply_plan(plan)

    def set_hard_state(self, hs: HardState) -> None:
        self.save_ready(hs, [], None, None)

    def append(self, entries: list[Entry]) -> None:
        """Append, replacing any stored suffix that starts at the first new index."""
        self.save_ready(None, entries, None, None)

    def apply_snapshot(self, snap: Snapshot) -> None:
        """Install a snapshot received from the leader: it replaces the whole log."""
        self.save_ready(None, [], snap, None)

    def compact(self, snap: Snapshot) -> None:
        """Record a snapshot the application made locally and drop the entries it covers."""
        self.save_ready(None, [], None, snap)

    def _write_snapshot(self, snap: Snapshot) -> None:
        m = snap.meta
        data = bytes(snap.data)
        self._conn.execute(
            "INSERT OR REPLACE INTO snapshot VALUES (0, ?, ?, ?, ?, ?, ?, ?)",
            (m.index, m.term, _ids_text(m.conf_state.voters), _ids_text(m.conf_state.removed), len(data), data,
             snapshot_checksum(m, data)),
        )

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"raft store {self.path} is closed")

    # -- the in-memory mirror, changed only after the transaction committed ---------------------------------------
    def _apply_plan(self, plan: _Plan) -> None:
        if plan.snapshot is not None:
            self._snapshot = plan.snapshot
            self._terms.clear()
            self._cache_reset(plan.snapshot.meta.index + 1)
        if plan.entries:
            first = plan.entries[0].index
            base = self._snapshot.meta.index
            del self._terms[first - base - 1 :]
            self._terms.extend(e.term for e in plan.entries)
            if first <= self._cache_start:
                self._cache_reset(first)
            else:
                while len(self._cache) > first - self._cache_start:
                    self._cache_size -= self._cache.pop().size()
            for e in plan.entries:
                self._cache_push(e)
        if plan.hard_state is not None:
            self._hard_state = plan.hard_state
        if plan.compaction is not None:
            idx = plan.compaction.meta.index
            del self._terms[: idx - self._snapshot.meta.index]
            self._snapshot = plan.compaction
            # the cache always holds the last entry, so this leaves _cache_start > idx
            while self._cache and self._cache[0].index <= idx:
                self._cache_size -= self._cache.popleft().size()
                self._cache_start += 1

    def _cache_reset(self, start: int) -> None:
        self._cache.clear()
        self._cache_size = 0
        self._cache_start = start

    def _cache_push(self, e: Entry) -> None:
        """Add the next entry at the tail, dropping the oldest while over budget (the newest always stays)."""
        self._cache.append(e)
        self._cache_size += e.size()
        while self._cache_size > self._cache_limit and len(self._cache) > 1:
            self._cache_size -= self._cache.popleft().size()
            self._cache_start += 1


def _fsync_dir(path: Path) -> None:
    """Make a newly created file's directory entry durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
