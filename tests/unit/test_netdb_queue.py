"""networkdb's retransmit-limited event queue (agent/gossip/netdb_queue.py): peek picks without counting, sent
counts (and retires at the limit), take is both."""

from __future__ import annotations

from agent.gossip.netdb_queue import BroadcastQueue, retransmit_limit


def test_peek_picks_least_sent_newest_first_and_counts_nothing() -> None:
    q = BroadcastQueue(mult=1)
    for k in "abc":
        q.queue(k, k.encode() * 10)
    q.sent(["c"], nodes=100)
    assert [k for k, _ in q.peek(0, 25)] == ["b", "a"]
    assert [k for k, _ in q.peek(0, 25)] == ["b", "a"]  # again: nothing was counted
    assert len(q) == 3


def test_sent_events_leave_at_the_retransmit_limit() -> None:
    q = BroadcastQueue(mult=2)
    q.queue("a", b"x")
    cap = retransmit_limit(2, 5)
    for _ in range(cap - 1):
        q.sent(["a", "gone"], nodes=5)
    assert len(q) == 1
    q.sent(["a"], nodes=5)
    assert len(q) == 0


def test_an_event_wider_than_the_limit_is_dropped_and_counted() -> None:
    q = BroadcastQueue()
    q.queue("wide", b"x" * 100)
    q.queue("ok", b"y")
    assert q.take(0, 50, nodes=3) == [b"y"]
    assert q.oversized == 1 and [k for k, _ in q.peek(0, 1000)] == ["ok"]
