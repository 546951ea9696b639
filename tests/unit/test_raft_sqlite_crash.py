"""SIGKILL at random moments must lose nothing manager/raft/sqlite_storage.py acknowledged, and never leave a store open() rejects.
A child process writes batches (and now and then a compaction) and prints each acknowledged range; the parent kills and checks."""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from manager.raft.sqlite_storage import SQLiteStorage

ROOT = Path(__file__).resolve().parents[2]
KILLS = 10
DEADLINE_S = 30.0  # for one child to print what it was asked for; it normally takes milliseconds

CHILD = r"""
import hashlib, random, sys
from pathlib import Path
from manager.raft.messages import ConfState, Entry, EntryKind, HardState, Snapshot, SnapshotMeta
from manager.raft.sqlite_storage import SQLiteStorage

def payload(i, t):
    return hashlib.sha256(f"{i}/{t}".encode()).digest() * 8  # 256 bytes

rng = random.Random(int(sys.argv[2]))
st = SQLiteStorage.open(Path(sys.argv[1]))
if st.is_empty():
    st.bootstrap([1])
term = st.hard_state().term + 1  # like a new leader after every restart: earlier entries are never overwritten
while True:
    first = st.last_index() + 1
    last = first + rng.randint(0, 15)
    compaction = None
    if rng.random() < 0.05 and last - st.first_index() > 100:
        idx = last - 20
        filler = rng.randbytes(rng.randint(0, 2 << 20))
        compaction = Snapshot(SnapshotMeta(idx, term, ConfState((1,))), f"snap {idx}:".encode() + filler)
    entries = [Entry(i, term, EntryKind.NORMAL, payload(i, term)) for i in range(first, last + 1)]
    st.save_ready(HardState(term, 1, last), entries, None, compaction)
    print(first, last, term, flush=True)
"""


def payload(index: int, term: int) -> bytes:
    return hashlib.sha256(f"{index}/{term}".encode()).digest() * 8


class Child:
    """The writer process and the acknowledgements it printed, read without blocking past a deadline."""

    def __init__(self, db: Path, seed: int) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db), str(seed)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        self.buf = b""
        self.acks: list[tuple[int, int, int]] = []

    def _take_lines(self) -> None:
        *lines, self.buf = self.buf.split(b"\n")  # a partial last line is not an acknowledgement yet
        self.acks += [tuple(int(x) for x in line.split()) for line in lines]

    def wait_for_acks(self, n: int) -> None:
        deadline = time.monotonic() + DEADLINE_S
        fd = self.proc.stdout.fileno()
        while len(self.acks) < n:
            left = deadline - time.monotonic()
            assert left > 0, f"child printed {len(self.acks)} of {n} acknowledgements before the deadline"
            if select.select([fd], [], [], left)[0]:
                chunk = os.read(fd, 65536)
                assert chunk, f"child exited early: {self.proc.wait()} {self.proc.stderr.read().decode()}"
                self.buf += chunk
                self._take_lines()

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.buf += self.proc.stdout.read()  # printed before the kill: acknowledged too
        self._take_lines()
        self.proc.stdout.close()
        self.proc.stderr.close()
        assert self.proc.returncode == -signal.SIGKILL


def check_store(db: Path, acked: dict[int, int]) -> tuple[int, int]:
    """Opens cleanly and holds every acknowledged entry (or a snapshot covering it); returns (snapshot index, last)."""
    st = SQLiteStorage.open(db)  # raises CorruptLogError on anything torn
    try:
        base = st.snapshot().meta.index
        assert st.snapshot().data.startswith(f"snap {base}:".encode()) or base == 1
        assert st.hard_state().term >= max(acked.values(), default=0)
        for index, term in sorted(acked.items()):
            if index <= base:
                continue
            assert st.term(index) == term, f"index {index}"
            assert [e.data for e in st.entries(index, index + 1)] == [payload(index, term)], f"index {index}"
        return base, st.last_index()
    finally:
        st.close()


def test_sigkill_at_random_moments_loses_no_acknowledged_entry(tmp_path: Path) -> None:
    db = tmp_path / "raft.db"
    rng = random.Random(20240601)
    acked: dict[int, int] = {}
    bases: set[int] = set()
    for round_ in range(KILLS):
        child = Child(db, seed=round_)
        try:
            child.wait_for_acks(rng.choice([0, 1, rng.randint(2, 60)]))
            time.sleep(rng.random() * 0.02)  # the random moment: mid-batch, mid-compaction or mid-open
        finally:
            child.kill()
        for first, last, term in child.acks:
            acked.update((i, term) for i in range(first, last + 1))
        base, last = check_store(db, acked)
        assert last >= max(acked, default=1)
        bases.add(base)
    # the rounds did write and compact: the checks above were not vacuous
    assert len(acked) > 100 and len(bases) > 1
