"""`python -m manager run` flags (manager/__main__.py): the event loop choice.
Pure argument parsing; the managers themselves run in tests/lab/test_manager_*.py and bench/raft_vs_etcd.py."""

from __future__ import annotations

import pytest

from manager.__main__ import build_parser

BASE = ["run", "--id", "1", "--listen", "127.0.0.1:7000", "--data-dir", "/nonexistent"]


def test_event_loop_defaults_to_asyncio() -> None:
    assert build_parser().parse_args(BASE).event_loop == "asyncio"


def test_event_loop_accepts_uvloop() -> None:
    assert build_parser().parse_args([*BASE, "--event-loop", "uvloop"]).event_loop == "uvloop"


def test_event_loop_refuses_an_unknown_loop_naming_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([*BASE, "--event-loop", "tokio"])
    assert exc.value.code == 2
    assert "argument --event-loop: invalid choice: 'tokio' (choose from 'asyncio', 'uvloop')" in capsys.readouterr().err
