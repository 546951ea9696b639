"""The manager shell's write path rules (manager/raftnode.py): the leader's cap on uncommitted proposals (_may_flush:
with the default cap 0 one batch is in flight and new proposals wait for its commit, to go as one batch; a byte cap
holds only at the cap) and what a leader sends before its own write is done (_send_before_persist)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from manager.raft.core import StateRole
from manager.raftnode import ManagerConfig, RaftManager


@dataclass
class FakeCore:
    state: StateRole = StateRole.LEADER
    committed: int = 0


def manager(cap: int | None = None) -> tuple[RaftManager, FakeCore]:
    cfg = ManagerConfig(node_id=1, listen="127.0.0.1:1", peers={1: "127.0.0.1:1"}, data_dir=Path("/nonexistent"), storage="memory")
    if cap is not None:
        cfg.max_uncommitted_bytes = cap
    m = RaftManager(cfg)
    core = FakeCore()
    m.node = core  # type: ignore[assignment]
    return m, core


def appended(m: RaftManager, last_index: int, size: int) -> None:
    """What _flush_proposals records for one batch."""
    m._uncommitted.append((last_index, size))
    m._uncommitted_bytes += size


def test_default_cap_keeps_one_batch_in_flight() -> None:
    m, core = manager()
    assert m.cfg.max_uncommitted_bytes == 0
    assert m._may_flush()
    appended(m, 5, 300)
    core.committed = 4
    assert not m._may_flush()


def test_proposals_flush_once_the_batch_in_flight_commits() -> None:
    m, core = manager()
    appended(m, 5, 300)
    core.committed = 5
    assert m._may_flush()
    assert (list(m._uncommitted), m._uncommitted_bytes) == ([], 0)


def test_a_byte_cap_holds_only_once_reached() -> None:
    m, core = manager(cap=1000)
    appended(m, 3, 600)
    assert m._may_flush()
    appended(m, 6, 400)
    assert not m._may_flush()
    core.committed = 3
    assert m._may_flush()
    assert m._uncommitted_bytes == 400


def test_minus_one_never_holds() -> None:
    m, _core = manager(cap=-1)
    appended(m, 9, 10 << 20)
    assert m._may_flush()


def test_a_non_leader_flushes_at_once_so_its_proposals_are_refused_without_waiting() -> None:
    m, core = manager()
    appended(m, 5, 300)
    core.state = StateRole.FOLLOWER
    assert m._may_flush()


# ---- a leader's appends leave before its own write (Raft thesis §10.2.1); nothing else does
from manager.raft.core import Ready  # noqa: E402
from manager.raft.messages import Entry, HardState, Message, MessageType as MT  # noqa: E402


class Sent:
    def __init__(self) -> None:
        self.msgs: list[Message] = []

    def send(self, msgs: list[Message]) -> None:
        self.msgs.extend(msgs)


def ready(role: StateRole, msgs: list[Message]) -> Ready:
    return Ready(leader=1, role=role, hard_state=None, entries=[Entry(8, 3)], snapshot=None, compaction=None,
                 messages=msgs, committed_entries=[], read_states=[])


def early_sender(saved: HardState) -> tuple[RaftManager, Sent]:
    m, _core = manager()
    sent = Sent()
    m.transport = sent  # type: ignore[assignment]
    m._saved_hs = saved
    return m, sent


def test_a_leader_sends_appends_and_heartbeats_before_its_write_and_the_rest_after() -> None:
    m, sent = early_sender(HardState(term=3, vote=1, commit=7))
    app = Message(MT.APP, to=2, from_=1, term=3, index=7, log_term=3, entries=[Entry(8, 3)])
    hb = Message(MT.HEARTBEAT, to=3, from_=1, term=3)
    read = Message(MT.READ_INDEX_RESP, to=2, from_=1, term=3, index=7, context=b"r")
    later = m._send_before_persist(ready(StateRole.LEADER, [app, read, hb]), HardState(term=3, vote=1, commit=8))
    assert (sent.msgs, later) == ([app, hb], [read])


def test_nothing_leaves_early_while_a_new_term_or_vote_is_unwritten() -> None:
    m, sent = early_sender(HardState(term=3, vote=1, commit=7))
    app = Message(MT.APP, to=2, from_=1, term=4, index=7, log_term=3, entries=[Entry(8, 4)])
    msgs = [app]
    assert m._send_before_persist(ready(StateRole.LEADER, msgs), HardState(term=4, vote=1, commit=7)) == msgs
    assert sent.msgs == []


def test_a_follower_sends_nothing_before_its_write() -> None:
    m, sent = early_sender(HardState(term=3, vote=2, commit=7))
    resp = Message(MT.APP_RESP, to=2, from_=1, term=3, index=8)
    assert m._send_before_persist(ready(StateRole.FOLLOWER, [resp]), None) == [resp]
    assert sent.msgs == []
