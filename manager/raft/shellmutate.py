"""Shell mutations: classic bugs of a Raft shell (acknowledging, applying or sending before persisting) put one at a time
into a copy of manager/raftnode.py, which the shell simulator (shellsim.py) must catch. `python -m manager.raft.shellmutate`."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import types
from dataclasses import dataclass
from pathlib import Path

SHELL = Path(__file__).resolve().parents[1] / "raftnode.py"


@dataclass(slots=True, frozen=True)
class ShellMutation:
    name: str
    what: str
    edits: tuple[tuple[str, str], ...]  # (old, new): each old must occur exactly once in raftnode.py


SHELL_MUTATIONS = (
    ShellMutation(
        "ack-before-commit", "a proposal is answered as soon as the leader appends it, before it commits",
        (("            self._by_index[p.index] = p.rid\n",
          "            self._by_index[p.index] = p.rid\n            p.future.set_result((p.index, None))\n"),
         ("            await self.wait_applied(index, max(0.0, deadline - time.monotonic()))\n            return index\n",
          "            return index\n")),
    ),
    ShellMutation(
        "apply-before-persist", "committed entries are applied before the Ready that holds them is persisted",
        (("                    early = self._stable_prefix(rd)\n",
          "                    early = rd.committed_entries if rd.snapshot is None else []\n"),),
    ),
    ShellMutation(
        "send-before-persist", "a Ready's messages leave before its entries and hard state are persisted",
        (("                later = rd.committed_entries\n",
          "                later = rd.committed_entries\n                self.transport.send(rd.messages)\n"),
         ("                self.transport.send(outgoing)\n                self._apply(rd, later)\n",
          "                self._apply(rd, later)\n")),
    ),
)


def mutant_source(m: ShellMutation) -> str:
    text = SHELL.read_text()
    for old, new in m.edits:
        n = text.count(old)
        if n != 1:
            raise ValueError(f"shell mutation {m.name}: the code to change occurs {n} times in {SHELL.name}, expected once")
        text = text.replace(old, new)
    return text


def mutant_shell(name: str) -> types.ModuleType:
    """A fresh module built from raftnode.py with the mutation applied (the real manager.raftnode is untouched)."""
    m = next((x for x in SHELL_MUTATIONS if x.name == name), None)
    if m is None:
        raise ValueError(f"unknown shell mutation {name!r}: expected one of {', '.join(x.name for x in SHELL_MUTATIONS)}")
    modname = "mutant_raftnode_" + m.name.replace("-", "_")
    spec = importlib.util.spec_from_loader(modname, loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    mod.__file__ = str(SHELL)
    sys.modules[modname] = mod  # dataclasses look their module up while the class is built
    exec(compile(mutant_source(m), f"<{m.name}> {SHELL}", "exec"), mod.__dict__)
    return mod


def main(argv: list[str] | None = None) -> int:
    from manager.raft.shellsim import run_seed
    from manager.raft.sim import parse_seeds

    ap = argparse.ArgumentParser(prog="python -m manager.raft.shellmutate", description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-9"), help="budget per mutation: N or START-END")
    ap.add_argument("--only", choices=[m.name for m in SHELL_MUTATIONS], action="append")
    opts = ap.parse_args(argv)
    missed = 0
    chosen = [m for m in SHELL_MUTATIONS if not opts.only or m.name in opts.only]
    for m in chosen:
        shell = mutant_shell(m.name)
        t0 = time.monotonic()
        caught = None
        for seed in opts.seeds:
            r = run_seed(seed, shell=shell)
            if not r.ok:
                caught = r
                break
        took = time.monotonic() - t0
        if caught is None:
            missed += 1
            print(f"{m.name}: MISSED over {len(opts.seeds)} seeds ({m.what}) [{took:.1f}s]")
        else:
            print(f"{m.name}: caught at seed {caught.seed} by {caught.invariant} [{took:.1f}s]")
    print(f"{len(chosen) - missed} of {len(chosen)} shell mutations caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
