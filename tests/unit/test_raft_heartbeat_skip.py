"""The leader's periodic heartbeat is left out for a follower it sent an append since the last round (the append
did the heartbeat's work); every other case keeps its heartbeat. Drives manager.raft.core over test_raft_paper's Net."""

from __future__ import annotations

from manager.raft import MessageType as MT
from manager.raft import RaftNode, StateRole
from tests.unit.test_raft_paper import Net


def heartbeats_at_next_tick(leader: RaftNode) -> list[int]:
    """Followers the leader's next tick sends a heartbeat to (the messages are not delivered)."""
    leader.tick()
    msgs = leader.ready().messages if leader.has_ready() else []
    rd_taken = [m.to for m in msgs if m.type == MT.HEARTBEAT]
    return sorted(rd_taken)


def settled_leader(net: Net) -> RaftNode:
    leader = net.elect(1)
    net.tick_all(1, only=[1])  # a round with no append: the election's appends no longer count
    return leader


def test_no_heartbeat_to_followers_sent_an_append_since_the_last_round() -> None:
    net = Net()
    leader = settled_leader(net)
    leader.propose(b"x")
    net.settle()
    assert heartbeats_at_next_tick(leader) == []


def test_the_next_round_without_an_append_sends_heartbeats_again() -> None:
    net = Net()
    leader = settled_leader(net)
    leader.propose(b"x")
    net.settle()
    net.tick_all(1, only=[1])
    assert heartbeats_at_next_tick(leader) == [2, 3]


def test_a_probed_follower_keeps_its_heartbeat() -> None:
    net = Net()
    leader = settled_leader(net)
    leader.propose(b"x")
    net.settle()
    leader.progress[3].become_probe()
    assert heartbeats_at_next_tick(leader) == [3]


def test_a_waiting_read_keeps_every_heartbeat() -> None:
    net = Net()
    leader = settled_leader(net)
    leader.propose(b"x")
    net.settle()
    leader.read_index(b"r1")
    leader.ready()  # the read's own heartbeat round, not delivered: the read still waits
    for pr in leader.progress.values():
        pr.appended = True
    assert heartbeats_at_next_tick(leader) == [2, 3]


def test_no_skipping_when_two_heartbeat_periods_reach_the_election_timeout() -> None:
    net = Net(heartbeat_tick=5, election_tick=10)
    leader = settled_leader(net)
    net.tick_all(3, only=[1])  # the next tick is the fifth: a heartbeat round
    leader.propose(b"x")
    net.settle()
    assert heartbeats_at_next_tick(leader) == [2, 3]


def test_followers_fed_only_appends_never_campaign() -> None:
    net = Net()
    leader = settled_leader(net)
    term = leader.term
    for i in range(60):  # three election timeouts at most, with an append every round
        leader.propose(f"p{i}".encode())
        net.tick_all(1)
    assert leader.state == StateRole.LEADER and leader.term == term
    assert all(n.term == term and n.lead == 1 for n in net.nodes.values())
