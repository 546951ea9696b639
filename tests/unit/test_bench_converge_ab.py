"""Unit tests of bench/converge_ab.py's pure parts: its arguments, the round order, the ratios, the checkout's
command line. The A/B itself (two labs of five hosts) runs by hand: python bench/converge_ab.py --b <checkout>."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("bench_converge_ab", ROOT / "bench" / "converge_ab.py")
assert spec and spec.loader
ab = importlib.util.module_from_spec(spec)
sys.modules["bench_converge_ab"] = ab
spec.loader.exec_module(ab)


def fake_checkout(where: Path, says: str) -> Path:
    (where / "shoal").mkdir(parents=True)
    (where / "shoal" / "__init__.py").write_text("")
    (where / "shoal" / "__main__.py").write_text(f"print({says!r})\n")
    return where


def test_parse_args_takes_this_checkout_as_a_by_default(tmp_path: Path) -> None:
    b = fake_checkout(tmp_path / "b", "b")
    opts = ab.parse_args(["--b", str(b)])
    assert (opts.a, opts.b, opts.replicas, opts.rounds, opts.settle) == (ROOT, b, 20, 7, 8.0)


def test_each_side_runs_this_interpreter_unless_given_its_own(tmp_path: Path) -> None:
    b = fake_checkout(tmp_path / "b", "b")
    opts = ab.parse_args(["--b", str(b), "--b-python", "/usr/bin/python3"])
    assert (opts.a_python, opts.b_python) == (sys.executable, "/usr/bin/python3")
    assert ab.program(b, opts.b_python) == ["env", f"PYTHONPATH={b}", "/usr/bin/python3", "-P", "-m", "shoal"]


def test_parse_args_refuses_a_directory_that_is_not_a_checkout(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        ab.parse_args(["--b", str(tmp_path)])
    assert f"{tmp_path} is not a shoal checkout (no shoal/__main__.py)" in capsys.readouterr().err


def test_parse_args_refuses_zero_rounds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        ab.parse_args(["--b", str(fake_checkout(tmp_path / "b", "b")), "--rounds", "0"])
    assert "--replicas and --rounds must be at least 1" in capsys.readouterr().err


def test_rounds_alternate_which_side_goes_first() -> None:
    assert [ab.order(p) for p in range(4)] == [("A", "B"), ("B", "A"), ("A", "B"), ("B", "A")]


def test_summary_gives_each_pairs_b_over_a_and_their_medians() -> None:
    a = ab.Rounds(wall=[1.0, 2.0, 1.0], cpu=[1.0, 1.0, 2.0])
    b = ab.Rounds(wall=[0.9, 2.0, 1.2], cpu=[0.5, 1.0, 1.0])
    assert ab.summary(a, b).splitlines() == [
        "A: create medians 1.00 s, daemons 1.00 core-s",
        "B: create medians 1.20 s, daemons 1.00 core-s",
        "B/A per pair (wall): 0.90 1.00 1.20; median 1.000",
        "B/A per pair (daemons' CPU): 0.50 1.00 0.50; median 0.500",
    ]


def test_the_checkouts_program_runs_its_own_code_even_from_this_checkouts_directory(tmp_path: Path) -> None:
    b = fake_checkout(tmp_path / "b", "checkout b's shoal")
    out = subprocess.run(ab.program(b), cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout) == (0, "checkout b's shoal\n")


def test_the_daemons_cpu_is_what_proc_says_and_a_gone_process_counts_nothing() -> None:
    import os

    from bench.procstat import process_cpu_s
    sum(i * i for i in range(300_000))  # some CPU of our own to read back
    times = os.times()
    assert abs(process_cpu_s([os.getpid()]) - (times.user + times.system)) <= 0.02
    assert process_cpu_s([2**22 + 1]) == 0.0  # above pid_max's ceiling: never a process
