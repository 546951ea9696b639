"""networkdb's retransmit-limited event queue (agent/gossip/netdb_queue.py): peek picks without counting, sent
counts (and retires at the limit), take is both."""

from __future__ import annotations

from agent.gossip.netdb_queue import SKIP_LIMIT, BroadcastQueue, retransmit_limit


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


def test_an_event_taken_for_a_member_is_not_taken_for_it_again() -> None:
    q = BroadcastQueue(mult=4)
    q.queue("join", b"j")
    assert q.take(0, 100, nodes=5, to="h4", live_others=4) == [b"j"]
    assert q.take(0, 100, nodes=5, to="h4", live_others=4) == []
    assert q.take(0, 100, nodes=5, to="h1", live_others=4) == [b"j"]


def test_an_event_leaves_once_it_reached_every_live_member_before_the_retransmit_limit() -> None:
    q = BroadcastQueue(mult=4)  # limit 4 x ceil(log10(6)) = 4 transmissions; two live members besides us
    q.queue("join", b"j")
    q.take(0, 100, nodes=5, to="h2", live_others=2)
    assert len(q) == 1
    q.take(0, 100, nodes=5, to="h3", live_others=2)
    assert len(q) == 0


def test_a_newer_event_on_the_same_key_goes_again_to_members_that_had_the_older() -> None:
    q = BroadcastQueue(mult=4)
    q.queue("h2/net", b"leave")
    q.take(0, 100, nodes=5, to="h4", live_others=4)
    q.queue("h2/net", b"join")
    assert q.take(0, 100, nodes=5, to="h4", live_others=4) == [b"join"]


def test_an_event_passed_over_more_than_the_skip_limit_is_dropped() -> None:
    # a safety valve: a member counted live that the core never sends to again must not keep the queue busy forever
    q = BroadcastQueue(mult=4)
    q.queue("join", b"j")
    q.take(0, 100, nodes=5, to="h4", live_others=4)
    for _ in range(SKIP_LIMIT):
        q.take(0, 100, nodes=5, to="h4", live_others=4)
    assert len(q) == 1
    q.take(0, 100, nodes=5, to="h4", live_others=4)
    assert len(q) == 0
