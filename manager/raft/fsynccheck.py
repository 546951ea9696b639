"""Missing-fsync detector: runs shell-simulator seeds (shellsim.py: real shells, real SQLite) under strace and checks from the
syscall trace that every message depending on persisted state left after the fsync covering it. `python -m manager.raft.fsynccheck`.

The simulator makes the shell's writes on its event loop and marks each one with two access("/.shoal-fsync-mark/…")
syscalls (begin, end). A write counts as durable only if an fsync/fdatasync of raft.db or raft.db-wal lies between its
marks; each node's durable state is the state after its last durable write. Replaying the recorded sends against it:
a vote grant needs that vote durable, an append acknowledgement its entries, a leader's commit announcement and any
apply need the entries durable on a quorum (the leader's own match index counts only once it is durable)."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .messages import Message, MessageType
from .progress import quorum

MARK = "/.shoal-fsync-mark"
# SQLite's synchronous= for the stores: the storage runs FULL; NORMAL and OFF skip fsyncs; LEADER-OFF skips them on the
# leader only (followers' votes and acknowledgements stay covered: only the leader's own match index is not)
SYNC_MODES = ("FULL", "NORMAL", "OFF", "LEADER-OFF")
_FSYNC = re.compile(r'^\d+\s+f(?:data)?sync\(\d+<(?P<path>[^>]*)>\)\s+=\s+0')
_MARKER = re.compile(r'^\d+\s+(?:access|faccessat2?)\((?:AT_FDCWD,\s*)?"' + re.escape(MARK) + r'/(?P<what>[be])/(?P<k>\d+)"')


class Recorder:
    """A shellsim observer: marks each storage write in the syscall stream and records what the checks replay."""

    def __init__(self, sync: str = "FULL") -> None:
        self.sync = sync
        self.seq = itertools.count(1)
        self.events: list[list[Any]] = []
        self._open: dict[tuple[int, int], int] = {}  # (seed, node) -> the write in progress
        self._announced: dict[tuple[int, int], int] = {}

    @staticmethod
    def _mark(what: str, k: int) -> None:
        os.access(f"{MARK}/{what}/{k}", os.F_OK)  # one syscall strace shows with its argument

    @staticmethod
    def _state(st: Any) -> list[int]:
        hs = st.hard_state()
        return [hs.term, hs.vote, st.last_index(), st.snapshot().meta.index]

    def opened(self, sim: Any, node: Any, storage: Any) -> None:
        if self.sync in ("NORMAL", "OFF"):
            storage._conn.execute(f"PRAGMA synchronous={self.sync}")  # the mutation: SQLite skips (some) fsyncs

    def started(self, sim: Any, node: Any) -> None:
        self.events.append(["start", sim.seed, node.id, self._state(node.mgr.storage)])

    def before_save(self, sim: Any, node: Any, *ready: Any) -> None:
        k = next(self.seq)
        self._open[(sim.seed, node.id)] = k
        if self.sync == "LEADER-OFF":
            leading = node.mgr.node is not None and node.mgr.node.state.name == "LEADER"
            node.mgr.storage._conn.execute(f"PRAGMA synchronous={'OFF' if leading else 'FULL'}")
        self._mark("b", k)

    def after_save(self, sim: Any, node: Any) -> None:
        k = self._open.pop((sim.seed, node.id))
        self._mark("e", k)
        self.events.append(["save", sim.seed, node.id, k, self._state(node.mgr.storage)])

    def on_send(self, sim: Any, node: Any, m: Message) -> None:
        if m.type == MessageType.VOTE_RESP and not m.reject:
            self.events.append(["vote", sim.seed, node.id, m.term, m.to])
        elif m.type == MessageType.APP_RESP and not m.reject:
            self.events.append(["ack", sim.seed, node.id, m.index])
        elif m.type in (MessageType.APP, MessageType.HEARTBEAT) and m.commit:
            key = (sim.seed, node.id)
            if m.commit > self._announced.get(key, 0):
                self._announced[key] = m.commit
                self.events.append(["commit", sim.seed, node.id, m.commit, list(node.mgr.node.voters)])

    def on_apply(self, sim: Any, node: Any, index: int) -> None:
        self.events.append(["apply", sim.seed, node.id, index, list(node.mgr.node.voters)])


@dataclass(slots=True)
class Verdict:
    saves: int = 0
    durable_saves: int = 0
    checked: dict[str, int] = field(default_factory=lambda: {"vote": 0, "ack": 0, "commit": 0, "apply": 0})
    violations: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def summary(self) -> str:
        c = self.checked
        return (f"{self.saves} raft writes, {self.durable_saves} fsynced; checked {c['vote']} vote grants, {c['ack']} append "
                f"acknowledgements, {c['commit']} commit announcements, {c['apply']} applies: "
                + ("every one left after the fsync covering it" if self.ok else f"{len(self.violations)} did not"))


def durable_writes(trace: list[str]) -> tuple[set[int], int]:
    """(writes with an fsync of the raft store between their marks, writes marked) from strace -y output."""
    inside: set[int] = set()
    durable: set[int] = set()
    ended = 0
    for line in trace:
        m = _MARKER.match(line)
        if m:
            k = int(m["k"])
            if m["what"] == "b":
                inside.add(k)
            else:
                inside.discard(k)
                ended += 1
            continue
        f = _FSYNC.match(line)
        if f and f["path"].rsplit("/", 1)[-1] in ("raft.db", "raft.db-wal"):
            durable |= inside  # one thread writes the stores: an fsync inside a write's marks is that write's
    return durable, ended


def _enough(holders: int, voters: int) -> bool:
    # a membership change that commits together with the entry can add one empty voter: allow for it
    return holders >= min(quorum(voters), quorum(max(1, voters - 1)))


def check(events: list[list[Any]], trace: list[str]) -> Verdict:
    fsynced, _ = durable_writes(trace)
    v = Verdict()
    durable: dict[tuple[int, int], list[int]] = {}

    def held(seed: int, nid: int, index: int) -> bool:
        d = durable.get((seed, nid))
        return d is not None and max(d[2], d[3]) >= index

    for ev in events:
        kind, seed, nid = ev[0], ev[1], ev[2]
        d = durable.get((seed, nid))
        if kind == "start":
            durable.setdefault((seed, nid), ev[3])  # what a first start found; later starts find what the disk kept
        elif kind == "save":
            v.saves += 1
            if ev[3] in fsynced:
                v.durable_saves += 1
                durable[(seed, nid)] = ev[4]
        elif kind == "vote":
            v.checked["vote"] += 1
            term, to = ev[3], ev[4]
            if d is None or d[0] < term or (d[0] == term and d[1] != to):
                v.violations.append(f"seed {seed}: node {nid} granted its vote in term {term} to {to} before an fsync; "
                                    f"durable: term {d and d[0]} vote {d and d[1]}")
        elif kind == "ack":
            v.checked["ack"] += 1
            if not held(seed, nid, ev[3]):
                v.violations.append(f"seed {seed}: node {nid} acknowledged index {ev[3]} before an fsync; durable up to "
                                    f"{d and max(d[2], d[3])}")
        elif kind in ("commit", "apply"):
            v.checked[kind] += 1
            index, voters = ev[3], ev[4]
            holders = sorted(x for x in voters if held(seed, x, index))
            if not _enough(len(holders), len(voters)):
                what = "announced commit" if kind == "commit" else "applied"
                v.violations.append(f"seed {seed}: node {nid} {what} index {index} durable on {holders} of voters {voters} only")
    return v


def run_traced(seeds: range, sync: str = "FULL", workdir: Path | None = None) -> Verdict:
    """The child (this module with --child) runs the seeds under strace; then the trace and its events are checked."""
    strace = shutil.which("strace")
    if strace is None:
        raise RuntimeError("strace is not installed (scripts/install.sh installs it)")
    with tempfile.TemporaryDirectory(prefix="fsynccheck-", dir=workdir) as tmp:
        out, events = Path(tmp) / "trace", Path(tmp) / "events.json"
        argv = [strace, "--seccomp-bpf", "-f", "-qq", "-y", "-e", "trace=fsync,fdatasync,access,faccessat,faccessat2",
                "-o", str(out), sys.executable, "-m", "manager.raft.fsynccheck", "--child", "--events", str(events),
                "--seeds", f"{seeds.start}-{seeds.stop - 1}", "--sync", sync]
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "PYTHONPATH": f"{root}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        proc = subprocess.run(argv, cwd=root, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"traced simulation failed (exit {proc.returncode}): {proc.stderr[-2000:]}{proc.stdout[-2000:]}")
        return check(json.loads(events.read_text()), out.read_text().splitlines())


def _child(seeds: range, sync: str, events_path: Path) -> int:
    from .shellsim import run_seed

    rec = Recorder(sync)
    failed = [r for r in (run_seed(s, observer=rec) for s in seeds) if not r.ok]
    events_path.write_text(json.dumps(rec.events))
    # the simulator's own checks see SQLite's commits, not fsyncs: with fsyncs skipped they still pass
    for r in failed:
        print(f"seed {r.seed}: FAIL {r.invariant}: {r.detail}")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    from .sim import parse_seeds

    ap = argparse.ArgumentParser(prog="python -m manager.raft.fsynccheck", description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-1"))
    ap.add_argument("--sync", choices=SYNC_MODES, default="FULL",
                    help="SQLite synchronous= for the stores (all but FULL skip fsyncs: the detector must fail)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--events", type=Path, help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.child:
        return _child(opts.seeds, opts.sync, opts.events)
    verdict = run_traced(opts.seeds, opts.sync)
    for line in verdict.violations[:10]:
        print(line)
    print(verdict.summary())
    return 0 if verdict.ok else 1


if __name__ == "__main__":
    sys.exit(main())
