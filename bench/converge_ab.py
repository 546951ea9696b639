"""A/B of two shoal checkouts on bench/converge.py's create step: is a daemon change faster, on this drifting machine?

This machine's speed drifts by +-20% within minutes (the bare anchor's median moved from 0.76 s to 1.13 s within one
afternoon), so two converge runs minutes apart cannot tell a 5% change from the drift. Here both checkouts' swarms
(5 lab hosts each, 3 managers, the same overlay) are up at once and their rounds alternate (A B, B A, A B, ...): while
one measures, the other's daemons and every process below them are stopped (SIGSTOP, as --interleave does for
bare), so each pair of rounds sees the same minute of the machine and neither pays for the other's idle swarm.

Per round: the create time (bench/converge.py's converge(): `service create --replicas N` until every task answers
HTTP from every host) and the CPU the five daemons used meanwhile (/proc/<pid>/stat, every thread; a figure that
drifts less than wall time, but drifts too). Printed: every round, each pair's B/A ratios and their medians.

A checkout is a directory with this repository's tree (e.g. `git worktree add /tmp/shoal-b <commit>`); its daemons
and CLI run this venv's Python with PYTHONPATH=<checkout> and -P (so the current directory does not win).
--a-python/--b-python run a side's daemons and CLI with another interpreter (e.g. /usr/bin/python3.11 against a
pyenv build) with a venv of its own that holds requirements.txt: an interpreter change against the same code.
Run: python bench/converge_ab.py --b /tmp/shoal-b [--a .] [--replicas 20] [--rounds 7] [--settle 8]
     python bench/converge_ab.py --b . --b-python /tmp/venv-deb/bin/python
"""
from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import converge as bc  # noqa: E402
from bench.procstat import process_cpu_s  # noqa: E402
from bench.swarm import System, attempt, bench_session, cannot_run, log, swarm_with_overlay  # noqa: E402

@dataclass(slots=True)
class Options:
    a: Path
    b: Path
    a_python: str = sys.executable
    b_python: str = sys.executable
    replicas: int = 20
    rounds: int = 7
    settle: float = 8.0
    timeout: float = 300.0


def parse_args(argv: Sequence[str] | None = None) -> Options:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", default=str(ROOT), help="checkout A (default: this one)")
    p.add_argument("--b", required=True, help="checkout B")
    p.add_argument("--a-python", default=sys.executable, help="A's interpreter (default: this one)")
    p.add_argument("--b-python", default=sys.executable, help="B's interpreter (default: this one)")
    p.add_argument("--replicas", type=int, default=20)
    p.add_argument("--rounds", type=int, default=7, help="pairs of rounds")
    p.add_argument("--settle", type=float, default=8.0, help="seconds before each create")
    p.add_argument("--timeout", type=float, default=300.0)
    ns = p.parse_args(argv)
    opts = Options(Path(ns.a).resolve(), Path(ns.b).resolve(), ns.a_python, ns.b_python, ns.replicas, ns.rounds,
                   ns.settle, ns.timeout)
    for tree in (opts.a, opts.b):
        if not (tree / "shoal" / "__main__.py").is_file():
            p.error(f"{tree} is not a shoal checkout (no shoal/__main__.py)")
    if opts.replicas < 1 or opts.rounds < 1:
        p.error("--replicas and --rounds must be at least 1")
    return opts


def program(tree: Path, python: str = sys.executable) -> list[str]:
    """How to run shoal from checkout `tree` with `python` (this venv's by default): its code first on the path,
    not the cwd's."""
    return ["env", f"PYTHONPATH={tree}", python, "-P", "-m", "shoal"]


def system_of(tree: Path, timeout: float, python: str = sys.executable) -> System:
    return System("shoal", shlex.join(program(tree, python)), program(tree, python), [], timeout=timeout)


@dataclass(slots=True)
class Rounds:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)


def order(pair: int) -> tuple[str, str]:
    """A B, then B A, ...: neither side is always the one that runs right after the other woke up."""
    return ("A", "B") if pair % 2 == 0 else ("B", "A")


def summary(a: Rounds, b: Rounds) -> str:
    """Each pair's B/A ratios (wall, daemons' CPU) and their medians; below 1: B is faster."""
    walls = [y / x for x, y in zip(a.wall, b.wall)]
    cpus = [y / x for x, y in zip(a.cpu, b.cpu) if x > 0]
    lines = [f"A: create medians {statistics.median(a.wall):.2f} s, daemons {statistics.median(a.cpu):.2f} core-s",
             f"B: create medians {statistics.median(b.wall):.2f} s, daemons {statistics.median(b.cpu):.2f} core-s",
             "B/A per pair (wall): " + " ".join(f"{r:.2f}" for r in walls) + f"; median {statistics.median(walls):.3f}"]
    if cpus:
        lines.append("B/A per pair (daemons' CPU): " + " ".join(f"{r:.2f}" for r in cpus)
                     + f"; median {statistics.median(cpus):.3f}")
    return "\n".join(lines)


def daemon_cpu(system: System) -> float:
    """Core-seconds the lab's daemons used so far (every thread, user + system)."""
    assert system.lab is not None
    return process_cpu_s([pid for host in system.lab.hosts if (pid := system.lab.daemon_pid(host))])


def one_round(system: System, other: System, opts: Options) -> tuple[float, float]:
    assert other.lab is not None
    with bc.stopped(other.lab):
        time.sleep(opts.settle)
        before = daemon_cpu(system)
        took = bc.converge(system, opts.replicas, opts.timeout, lambda s: None)
        used = daemon_cpu(system) - before
        bc.remove_service(system, opts.timeout)
    return took, used


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    why = cannot_run("converge_ab.py", ["shoal"])
    if why:
        print(why, file=sys.stderr)
        return 2
    systems = {"A": system_of(opts.a, opts.timeout, opts.a_python), "B": system_of(opts.b, opts.timeout, opts.b_python)}
    rounds = {"A": Rounds(), "B": Rounds()}
    net = ["--subnet", f"{bc.SUBNET_PREFIX}.0/24", bc.NETWORK]
    with bench_session("converge-ab") as session:
        with attempt(systems["A"], log) as at_a, attempt(systems["B"], log) as at_b:
            swarm_with_overlay(systems["A"], at_a, Path(tempfile.mkdtemp(dir=session.workdir)), bc.HOSTS, net, log)
            assert systems["A"].lab is not None
            with bc.stopped(systems["A"].lab):
                swarm_with_overlay(systems["B"], at_b, Path(tempfile.mkdtemp(dir=session.workdir)), bc.HOSTS, net, log)
            for pair in range(opts.rounds):
                for name in order(pair):
                    other = systems["B" if name == "A" else "A"]
                    took, used = one_round(systems[name], other, opts)
                    rounds[name].wall.append(took)
                    rounds[name].cpu.append(used)
                    log(f"{name} ({systems[name].daemon_cmd}): create N={opts.replicas} {took:.2f} s, "
                        f"daemons {used:.2f} core-s")
        if at_a.error or at_b.error:
            print(f"stopped: {at_a.error or at_b.error}", file=sys.stderr)
            return 1
    pairs = min(len(rounds["A"].wall), len(rounds["B"].wall))
    if not pairs:
        return 1
    print(summary(Rounds(rounds["A"].wall[:pairs], rounds["A"].cpu[:pairs]),
                  Rounds(rounds["B"].wall[:pairs], rounds["B"].cpu[:pairs])))
    return 130 if session.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
