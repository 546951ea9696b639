"""Mutation testing of the Raft simulator: puts one classic Raft bug at a time into a copy of this package
and checks that the simulator (sim.py) catches it within a seed budget. `python -m manager.raft.mutate [--seeds 0-299]`."""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(slots=True, frozen=True)
class Mutation:
    name: str
    what: str
    file: str
    old: str  # must occur exactly once in file
    new: str


MUTATIONS = (
    Mutation("figure8", "a leader commits an entry of an earlier term by counting its replicas", "core.py",
             "if mci <= self.log.committed or self.log.term_or_none(mci) != self.term:",
             "if mci <= self.log.committed:"),
    Mutation("two-conf-changes", "two membership changes pending at once", "core.py",
             "        self.pending_conf_index = index\n",
             ""),
    Mutation("follower-commit", "a follower commits past what the leader sent it", "core.py",
             "self._commit_to(min(m.commit, last_new))",
             "self._commit_to(min(m.commit, self.log.last_index()))"),
    Mutation("vote-not-persisted", "the vote left out of the persisted hard state", "core.py",
             "return HardState(self.term, self.vote, self.log.committed)",
             "return HardState(self.term, NONE, self.log.committed)"),
    Mutation("conf-before-noop", "a new leader proposes a membership change before its no-op commits", "core.py",
             "        self.pending_conf_index = self.log.last_index()\n        self._bcast_append()",
             "        self._bcast_append()"),
)


@dataclass(slots=True)
class Outcome:
    mutation: Mutation
    caught_at: int | None  # the first seed that failed, None if every seed passed
    invariant: str = ""
    seeds_run: int = 0


def mutant_package(root: Path, m: Mutation) -> str:
    """A copy of manager/raft named after the mutation under root, with m applied; returns its name."""
    name = "mutant_" + m.name.replace("-", "_")
    dest = root / name
    shutil.copytree(PACKAGE_DIR, dest, ignore=shutil.ignore_patterns("__pycache__", "mutate.py"))
    path = dest / m.file
    text = path.read_text()
    if text.count(m.old) != 1:
        raise ValueError(f"mutation {m.name}: the code to change occurs {text.count(m.old)} times in {m.file}, expected once")
    path.write_text(text.replace(m.old, m.new))
    return name


def run_mutation(m: Mutation, seeds: range) -> Outcome:
    """Run the mutant's simulator seed by seed until one fails (caught) or the budget is spent."""
    with tempfile.TemporaryDirectory(prefix="raft-mutant-") as tmp:
        name = mutant_package(Path(tmp), m)
        sys.path.insert(0, tmp)
        try:
            sim = importlib.import_module(f"{name}.sim")
            ran = 0
            for seed in seeds:
                ran += 1
                result = sim.run_seed((seed, "mixed", None, False))
                if not result.ok:
                    return Outcome(m, seed, result.invariant, ran)
            return Outcome(m, None, "", ran)
        finally:
            sys.path.remove(tmp)
            for mod in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
                del sys.modules[mod]


def main(argv: list[str] | None = None) -> int:
    from .sim import parse_seeds

    ap = argparse.ArgumentParser(prog="python -m manager.raft.mutate", description=__doc__)
    ap.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-299"), help="budget per mutation: N or START-END")
    ap.add_argument("--only", choices=[m.name for m in MUTATIONS], action="append", help="run only these mutations")
    opts = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if not opts.only or m.name in opts.only]
    missed = 0
    for m in chosen:
        t0 = time.monotonic()
        out = run_mutation(m, opts.seeds)
        took = time.monotonic() - t0
        if out.caught_at is None:
            missed += 1
            print(f"{m.name}: MISSED over {out.seeds_run} seeds ({m.what}) [{took:.1f}s]")
        else:
            print(f"{m.name}: caught at seed {out.caught_at} by {out.invariant} after {out.seeds_run} seeds [{took:.1f}s]")
    print(f"{len(chosen) - missed} of {len(chosen)} mutations caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
