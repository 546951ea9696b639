"""Unit tests of manager/metrics.py's pure parts: the address parser and the dispatcher's named setters
as they appear in the exposition text."""
from __future__ import annotations

import pytest

from manager import metrics


def exposed(name: str) -> float:
    text = metrics.render()[0].decode()
    found = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(f"{name} ")]
    assert len(found) == 1, (name, found)
    return float(found[0])


@pytest.mark.parametrize("addr, want", [("127.0.0.1:9323", ("127.0.0.1", 9323)), ("[::1]:9323", ("::1", 9323)),
                                        ("0.0.0.0:1", ("0.0.0.0", 1))])
def test_parse_addr_takes_host_and_port(addr: str, want: tuple[str, int]) -> None:
    assert metrics.parse_addr(addr) == want


@pytest.mark.parametrize("addr", ["9323", ":9323", "localhost", "h:0", "h:65536", "h:x1"])
def test_parse_addr_names_a_bad_address(addr: str) -> None:
    with pytest.raises(ValueError) as info:
        metrics.parse_addr(addr)
    assert str(info.value) == f"invalid metrics address {addr!r}: expected HOST:PORT"


def test_nodes_by_state_sets_every_known_state() -> None:
    metrics.set_nodes_by_state({"ready": 3, "down": 1})
    metrics.set_nodes_by_state({"ready": 4})
    assert exposed('shoal_manager_nodes{state="ready"}') == 4
    assert exposed('shoal_manager_nodes{state="down"}') == 0  # emptied, not stuck at its last value
    assert exposed('shoal_manager_nodes{state="unknown"}') == 0


def test_dispatcher_sessions_and_heartbeats() -> None:
    before = exposed("shoal_dispatcher_heartbeats_total")
    metrics.set_dispatcher_sessions(5)
    metrics.heartbeat_received()
    metrics.heartbeat_received()
    assert exposed("shoal_dispatcher_sessions") == 5
    assert exposed("shoal_dispatcher_heartbeats_total") == before + 2


def test_no_raft_series_while_no_manager_is_bound() -> None:
    assert "shoal_raft_term" not in metrics.render()[0].decode()
