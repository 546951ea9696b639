"""Raft core against the rules of the Raft paper (and the etcd extensions shoal relies on).
Each test drives a few manager.raft.core.RaftNode instances by hand through a tiny in-test network."""

from __future__ import annotations

import random
from typing import Callable

import pytest

from manager.raft import (
    Config,
    ConfChangeError,
    ConfChangeOp,
    Entry,
    EntryKind,
    HardState,
    MemoryStorage,
    Message,
    MessageType as MT,
    NotLeader,
    ProposalDropped,
    QuorumLossError,
    RaftNode,
    StateRole,
)
from manager.raft.core import CompactionError


class Net:
    """Nodes over storages, with messages delivered in rounds; persist -> send -> apply per Ready."""

    def __init__(self, ids: list[int] = [1, 2, 3], storages: dict[int, MemoryStorage] | None = None, **cfg) -> None:
        self.cfg = Config(**cfg)
        self.storages = storages or {i: MemoryStorage.bootstrap(ids) for i in ids}
        self.nodes = {i: RaftNode(i, self.storages[i], self.cfg, random.Random(i)) for i in ids}
        self.applied: dict[int, list[Entry]] = {i: [] for i in ids}
        self.blocked: set[int] = set()  # nodes cut off from everyone
        self.pending: list[Message] = []
        self.read_states: dict[int, list] = {i: [] for i in ids}

    def add(self, i: int, storage: MemoryStorage | None = None) -> RaftNode:
        self.storages[i] = storage or MemoryStorage()
        self.nodes[i] = RaftNode(i, self.storages[i], self.cfg, random.Random(i))
        self.applied[i] = []
        self.read_states[i] = []
        return self.nodes[i]

    def restart(self, i: int) -> RaftNode:
        self.nodes[i] = RaftNode(i, self.storages[i], self.cfg, random.Random(i + 100))
        return self.nodes[i]

    def flush(self) -> None:
        for i, n in self.nodes.items():
            if not n.has_ready():
                continue
            rd = n.ready()
            st = self.storages[i]
            if rd.snapshot:
                st.apply_snapshot(rd.snapshot)
            st.append(rd.entries)
            if rd.hard_state:
                st.set_hard_state(rd.hard_state)
            if rd.compaction:
                st.compact(rd.compaction)
            self.pending.extend(rd.messages)
            self.applied[i].extend(rd.committed_entries)
            self.read_states[i].extend(rd.read_states)
            n.advance(rd)

    def round(self, allow: Callable[[Message], bool] = lambda m: True) -> int:
        self.flush()
        msgs, self.pending = self.pending, []
        n = 0
        for m in msgs:
            if m.to in self.blocked or m.from_ in self.blocked or m.to not in self.nodes or not allow(m):
                continue
            self.nodes[m.to].step(m)
            n += 1
        self.flush()
        return n

    def settle(self, allow: Callable[[Message], bool] = lambda m: True, rounds: int = 100) -> None:
        for _ in range(rounds):
            if not self.round(allow) and not self.pending:
                return

    def elect(self, i: int) -> RaftNode:
        self.nodes[i].campaign()
        self.settle()
        assert self.nodes[i].state == StateRole.LEADER
        return self.nodes[i]

    def tick_all(self, n: int, only: list[int] | None = None) -> None:
        for _ in range(n):
            for i, node in self.nodes.items():
                if only is None or i in only:
                    node.tick()
            self.settle()

    def data(self, i: int) -> list[bytes]:
        return [e.data for e in self.applied[i] if e.kind == EntryKind.NORMAL]


def log_of(node: RaftNode) -> list[tuple[int, int]]:
    return [(e.index, e.term) for e in node.log.entries_from(node.log.first_index())]


def storage_with(entries: list[tuple[int, int]], term: int, ids: list[int] = [1, 2, 3]) -> MemoryStorage:
    """A founding member's storage holding entries (index, term) after the bootstrap snapshot at 1."""
    st = MemoryStorage.bootstrap(ids)
    st.append([Entry(i, t, EntryKind.NORMAL, f"{i}/{t}".encode()) for i, t in entries])
    st.set_hard_state(HardState(term=term, vote=0, commit=1))
    return st


def vote(to: int, frm: int, term: int, last_index: int, last_term: int) -> Message:
    return Message(MT.VOTE, to=to, from_=frm, term=term, index=last_index, log_term=last_term)


def sent(node: RaftNode) -> list[Message]:
    return node.ready().messages if node.has_ready() else []


# ---------------------------------------------------------------- §5.2 leader election
def test_election_safety_at_most_one_leader_per_term() -> None:
    net = Net(pre_vote=False)
    net.nodes[1].campaign()
    net.nodes[2].campaign()  # both candidates in term 2: node 3's single vote decides
    net.settle()
    leaders = [i for i, n in net.nodes.items() if n.state == StateRole.LEADER and n.term == 2]
    assert leaders == [1]
    assert net.nodes[2].state == StateRole.FOLLOWER


def test_follower_grants_at_most_one_vote_per_term() -> None:
    node = RaftNode(3, MemoryStorage.bootstrap([1, 2, 3]), Config(pre_vote=False))
    node.step(vote(3, 1, 2, 1, 1))
    node.step(vote(3, 2, 2, 1, 1))
    resps = [(m.to, m.reject) for m in sent(node) if m.type == MT.VOTE_RESP]
    assert resps == [(1, False), (2, True)]
    assert node.vote == 1


def test_vote_granted_and_persisted_in_the_same_ready_as_the_response() -> None:
    node = RaftNode(3, MemoryStorage.bootstrap([1, 2, 3]), Config(pre_vote=False))
    node.step(vote(3, 1, 2, 1, 1))
    rd = node.ready()
    assert rd.hard_state == HardState(term=2, vote=1, commit=1)
    assert [m.type for m in rd.messages] == [MT.VOTE_RESP]


def test_restarted_node_remembers_its_vote_and_does_not_vote_twice() -> None:
    st = MemoryStorage.bootstrap([1, 2, 3])
    node = RaftNode(3, st, Config(pre_vote=False))
    node.step(vote(3, 1, 2, 1, 1))
    st.set_hard_state(node.ready().hard_state)
    again = RaftNode(3, st, Config(pre_vote=False))
    again.step(vote(3, 2, 2, 1, 1))
    assert [(m.to, m.reject) for m in sent(again)] == [(2, True)]


def test_election_timeout_is_randomized_in_one_to_two_timeouts_from_the_injected_rng() -> None:
    timeouts = set()
    for seed in range(50):
        node = RaftNode(1, MemoryStorage.bootstrap([1, 2, 3]), Config(election_tick=10), random.Random(seed))
        assert 10 <= node.randomized_timeout < 20
        timeouts.add(node.randomized_timeout)
    assert len(timeouts) > 3
    a = RaftNode(1, MemoryStorage.bootstrap([1, 2, 3]), Config(), random.Random(7))
    b = RaftNode(1, MemoryStorage.bootstrap([1, 2, 3]), Config(), random.Random(7))
    assert a.randomized_timeout == b.randomized_timeout


def test_follower_campaigns_after_election_timeout() -> None:
    node = RaftNode(1, MemoryStorage.bootstrap([1, 2, 3]), Config(pre_vote=False), random.Random(1))
    for _ in range(node.randomized_timeout):
        node.tick()
    assert node.state == StateRole.CANDIDATE
    assert node.term == 2
    assert sorted(m.to for m in sent(node) if m.type == MT.VOTE) == [2, 3]


def test_candidate_becomes_follower_on_append_from_leader_of_same_term() -> None:
    node = RaftNode(1, MemoryStorage.bootstrap([1, 2, 3]), Config(pre_vote=False))
    node.campaign()
    node.step(Message(MT.APP, to=1, from_=2, term=2, index=1, log_term=1, commit=1))
    assert node.state == StateRole.FOLLOWER
    assert node.leader == 2


def test_higher_term_in_any_message_makes_leader_step_down() -> None:
    net = Net()
    leader = net.elect(1)
    leader.step(Message(MT.APP_RESP, to=1, from_=2, term=leader.term + 5, index=0))
    assert leader.state == StateRole.FOLLOWER
    assert leader.term == 7


def test_stale_term_append_is_refused_and_answered_with_the_current_term() -> None:
    node = RaftNode(2, storage_with([], term=5))
    node.step(Message(MT.APP, to=2, from_=1, term=3, index=1, log_term=1, entries=[Entry(2, 3)], commit=2))
    msgs = sent(node)
    assert [(m.type, m.term) for m in msgs] == [(MT.APP_RESP, 5)]
    assert node.log.last_index() == 1


# ---------------------------------------------------------------- §5.4.1 election restriction
def test_vote_rejected_for_candidate_whose_last_term_is_older() -> None:
    node = RaftNode(3, storage_with([(2, 3)], term=3), Config(pre_vote=False))
    node.step(vote(3, 1, 4, 10, 2))  # longer log, older last term
    assert [m.reject for m in sent(node) if m.type == MT.VOTE_RESP] == [True]


def test_vote_rejected_for_candidate_with_shorter_log_in_the_same_last_term() -> None:
    node = RaftNode(3, storage_with([(2, 2), (3, 2)], term=2), Config(pre_vote=False))
    node.step(vote(3, 1, 3, 2, 2))
    assert [m.reject for m in sent(node) if m.type == MT.VOTE_RESP] == [True]


def test_vote_granted_for_candidate_at_least_as_up_to_date() -> None:
    node = RaftNode(3, storage_with([(2, 2), (3, 2)], term=2), Config(pre_vote=False))
    node.step(vote(3, 1, 3, 3, 2))
    assert [m.reject for m in sent(node) if m.type == MT.VOTE_RESP] == [False]


def test_leader_completeness_node_missing_committed_entry_cannot_win() -> None:
    net = Net(pre_vote=False, check_quorum=False)  # no lease: only the log decides node 2's vote
    leader = net.elect(1)
    net.blocked = {3}
    idx, _ = leader.propose(b"x")
    net.settle()
    assert leader.committed == idx  # committed by nodes 1 and 2 only
    net.blocked = {1}
    net.nodes[3].campaign()
    net.settle()
    assert net.nodes[3].state != StateRole.LEADER
    new = net.elect(2)
    assert new.log.term(idx) == leader.log.term(idx)


# ---------------------------------------------------------------- §5.3 log replication
def test_log_matching_append_rejected_when_previous_entry_differs() -> None:
    node = RaftNode(2, storage_with([(2, 2)], term=3))
    node.step(Message(MT.APP, to=2, from_=1, term=3, index=2, log_term=3, entries=[Entry(3, 3)], commit=1))
    resp = [m for m in sent(node) if m.type == MT.APP_RESP]
    assert [(r.reject, r.index, r.reject_hint) for r in resp] == [(True, 2, 2)]
    assert log_of(node) == [(2, 2)]


def test_log_matching_conflicting_suffix_is_replaced_by_the_leaders_entries() -> None:
    node = RaftNode(2, storage_with([(2, 2), (3, 2), (4, 2)], term=3))
    node.step(Message(MT.APP, to=2, from_=1, term=3, index=2, log_term=2, entries=[Entry(3, 3), Entry(4, 3)], commit=1))
    assert log_of(node) == [(2, 2), (3, 3), (4, 3)]


def test_log_matching_logs_are_identical_after_replication() -> None:
    net = Net()
    leader = net.elect(1)
    for k in range(5):
        leader.propose(f"v{k}".encode())
    net.settle()
    assert log_of(net.nodes[1]) == log_of(net.nodes[2]) == log_of(net.nodes[3])


def test_leader_append_only_never_overwrites_or_deletes_its_entries() -> None:
    net = Net()
    leader = net.elect(1)
    before = log_of(leader)
    leader.propose(b"a")
    # a deposed leader's append at an older term, and a rejection, must not touch the leader's log
    leader.step(Message(MT.APP, to=1, from_=2, term=1, index=1, log_term=1, entries=[Entry(2, 1)], commit=2))
    leader.step(Message(MT.APP_RESP, to=1, from_=2, term=leader.term, index=1, reject=True, reject_hint=1))
    after = log_of(leader)
    assert after[: len(before)] == before
    assert len(after) == len(before) + 1


def test_follower_commit_stops_at_the_last_entry_the_leader_vouched_for() -> None:
    node = RaftNode(2, storage_with([(2, 2), (3, 2)], term=3))
    # empty append at index 1 with a high commit: entries 2-3 are not yet checked against the leader
    node.step(Message(MT.APP, to=2, from_=1, term=3, index=1, log_term=1, entries=[], commit=3))
    assert node.committed == 1


def test_figure8_leader_commits_old_term_entry_only_through_a_current_term_entry() -> None:
    storages = {1: storage_with([(2, 2)], term=3), 2: storage_with([], term=3), 3: storage_with([], term=3)}
    net = Net(storages=storages, pre_vote=False, max_msg_bytes=1, max_inflight=1)
    leader = net.nodes[1]
    leader.campaign()
    net.settle(allow=lambda m: m.type in (MT.VOTE, MT.VOTE_RESP))
    assert leader.state == StateRole.LEADER and leader.term == 4
    net.blocked = {3}
    leader.tick()  # a heartbeat round restarts the probe the election's appends were lost to
    # replicate to node 2 until it holds the term-2 entry: a majority has it, yet it is not committed
    for _ in range(20):
        net.round()
        if leader.progress[2].match >= 2:
            break
    assert leader.progress[2].match == 2
    assert leader.committed == 1
    net.settle()
    assert leader.committed == 3  # the term-4 no-op commits, and index 2 with it
    assert [(e.index, e.term) for e in net.applied[1]] == [(2, 2), (3, 4)]


def test_state_machine_safety_every_node_applies_the_same_entries_in_order() -> None:
    net = Net()
    leader = net.elect(1)
    for k in range(3):
        leader.propose(f"a{k}".encode())
    net.settle()
    net.blocked = {1}
    net.tick_all(40, only=[2, 3])  # the old leader's lease runs out, then 2 or 3 wins
    new = next(n for n in (net.nodes[2], net.nodes[3]) if n.state == StateRole.LEADER)
    new.propose(b"b0")
    net.settle()
    net.blocked = set()
    net.tick_all(3)
    assert net.data(1) == net.data(2) == net.data(3) == [b"a0", b"a1", b"a2", b"b0"]


def test_append_messages_are_capped_by_max_msg_bytes() -> None:
    net = Net(max_msg_bytes=100)
    leader = net.elect(1)
    net.blocked = {2, 3}
    for k in range(10):
        leader.propose(b"x" * 40)  # 64 bytes each with overhead
    net.blocked = set()
    net.flush()
    apps = [m for m in net.pending if m.type == MT.APP and m.entries]
    assert apps and all(len(m.entries) == 1 for m in apps)
    net.settle()
    assert len(net.data(3)) == 10


def test_in_flight_appends_are_capped_by_max_inflight() -> None:
    net = Net(max_msg_bytes=1, max_inflight=2)
    leader = net.elect(1)
    net.flush()
    net.pending.clear()
    for k in range(6):
        leader.propose(f"v{k}".encode())
    net.flush()
    to2 = [m for m in net.pending if m.type == MT.APP and m.to == 2 and m.entries]
    assert len(to2) == 2
    net.settle()
    assert len(net.data(2)) == 6


# ---------------------------------------------------------------- etcd extensions: pre-vote, check-quorum
def test_pre_vote_isolated_node_does_not_raise_its_term() -> None:
    net = Net()
    net.elect(1)
    term = net.nodes[3].term
    net.blocked = {3}
    net.tick_all(60, only=[3])
    assert net.nodes[3].term == term
    assert net.nodes[3].state == StateRole.PRE_CANDIDATE


def test_pre_vote_rejoining_node_does_not_disrupt_the_leader() -> None:
    net = Net()
    leader = net.elect(1)
    net.blocked = {3}
    net.tick_all(60, only=[3])
    net.blocked = set()
    net.tick_all(5)
    assert leader.state == StateRole.LEADER and leader.term == 2
    assert net.nodes[3].leader == 1


def test_check_quorum_leader_steps_down_when_cut_off() -> None:
    net = Net()
    leader = net.elect(1)
    net.blocked = {1}
    net.tick_all(net.cfg.election_tick + 1, only=[1])
    assert leader.state == StateRole.FOLLOWER
    with pytest.raises(NotLeader):
        leader.propose(b"x")


# ---------------------------------------------------------------- clients
def test_propose_on_follower_raises_not_leader_naming_the_leader() -> None:
    net = Net()
    net.elect(1)
    with pytest.raises(NotLeader) as err:
        net.nodes[2].propose(b"x")
    assert err.value.leader_id == 1
    assert str(err.value) == "not leader, leader is 1"


def test_propose_without_a_leader_says_leader_unknown() -> None:
    node = RaftNode(1, MemoryStorage.bootstrap([1, 2, 3]))
    with pytest.raises(NotLeader, match="^not leader, leader unknown$"):
        node.propose(b"x")


def test_forwarded_proposal_is_committed_by_the_leader() -> None:
    net = Net()
    net.elect(1)
    assert net.nodes[3].forward_proposal(b"via-3") is None
    net.settle()
    assert net.data(1) == net.data(3) == [b"via-3"]


def test_read_index_is_released_after_a_quorum_confirms_leadership() -> None:
    net = Net()
    leader = net.elect(1)
    idx, _ = leader.propose(b"x")
    net.settle()
    leader.read_index(b"r1")
    net.flush()
    assert net.read_states[1] == []  # not before the heartbeat round
    net.settle()
    assert [(r.index, r.ctx) for r in net.read_states[1]] == [(idx, b"r1")]


def test_read_index_on_follower_is_answered_through_the_leader() -> None:
    net = Net()
    leader = net.elect(1)
    net.settle()
    net.nodes[2].read_index(b"r2")
    net.settle()
    assert [(r.index, r.ctx) for r in net.read_states[2]] == [(leader.committed, b"r2")]


def test_read_index_on_a_cut_off_leader_never_completes() -> None:
    net = Net()
    leader = net.elect(1)
    net.blocked = {1}
    leader.read_index(b"stale?")
    net.tick_all(3, only=[1])
    assert net.read_states[1] == []


# ---------------------------------------------------------------- snapshots and compaction
def test_compact_refuses_an_index_not_yet_applied() -> None:
    net = Net()
    leader = net.elect(1)
    with pytest.raises(CompactionError, match="only applied up to"):
        leader.compact(leader.applied + 5, b"")


def test_follower_too_far_behind_is_sent_a_snapshot() -> None:
    net = Net()
    leader = net.elect(1)
    net.blocked = {3}
    for k in range(5):
        leader.propose(f"v{k}".encode())
    net.settle()
    leader.compact(leader.applied, b"state-at-" + str(leader.applied).encode())
    net.flush()
    assert net.storages[1].first_index() == leader.applied + 1
    net.blocked = set()
    net.pending.clear()
    net.tick_all(2)
    assert net.storages[3].snapshot().data == b"state-at-" + str(leader.applied).encode()
    assert net.nodes[3].committed == leader.committed
    leader.propose(b"after")
    net.settle()
    assert net.data(3)[-1] == b"after"


# ---------------------------------------------------------------- membership
def test_added_member_catches_up_and_counts_in_the_quorum() -> None:
    net = Net()
    leader = net.elect(1)
    leader.propose_conf_change(ConfChangeOp.ADD, 4)
    net.add(4)
    net.settle()
    net.tick_all(2)
    assert leader.voters == [1, 2, 3, 4] and net.nodes[4].voters == [1, 2, 3, 4]
    net.blocked = {2, 3}
    idx, _ = leader.propose(b"needs-3-of-4")
    net.settle()
    assert leader.committed < idx
    net.blocked = set()
    net.tick_all(2)
    assert net.data(4) == [b"needs-3-of-4"]


def test_removal_that_would_lose_quorum_is_refused_and_changes_nothing() -> None:
    net = Net()
    leader = net.elect(1)
    net.blocked = {3}
    net.tick_all(net.cfg.election_tick - 1, only=[1, 2])
    for _ in range(net.cfg.election_tick - 1):
        leader.tick()  # node 3 silent for a whole election timeout; node 2 kept answering
        net.settle()
    last = leader.log.last_index()
    with pytest.raises(QuorumLossError) as err:
        leader.propose_conf_change(ConfChangeOp.REMOVE, 2)
    assert str(err.value) == "can't remove member from the raft: this would result in a loss of quorum"
    assert leader.log.last_index() == last and leader.voters == [1, 2, 3]


def test_removed_member_id_is_never_reused() -> None:
    net = Net()
    leader = net.elect(1)
    leader.propose_conf_change(ConfChangeOp.REMOVE, 3)
    net.settle()
    assert leader.voters == [1, 2]
    with pytest.raises(ConfChangeError, match="node id 3 was removed from the raft and cannot be reused"):
        leader.propose_conf_change(ConfChangeOp.ADD, 3)


def test_only_one_membership_change_may_be_pending() -> None:
    net = Net()
    leader = net.elect(1)
    net.blocked = {2, 3}
    leader.propose_conf_change(ConfChangeOp.ADD, 4)
    with pytest.raises(ConfChangeError, match="already in progress"):
        leader.propose_conf_change(ConfChangeOp.ADD, 5)


def test_leader_that_removes_itself_steps_down_and_the_rest_elect_a_leader() -> None:
    net = Net()
    leader = net.elect(1)
    leader.propose_conf_change(ConfChangeOp.REMOVE, 1)
    net.settle()
    assert leader.state == StateRole.FOLLOWER
    assert net.nodes[2].voters == [2, 3]
    net.tick_all(40, only=[2, 3])
    assert {net.nodes[2].state, net.nodes[3].state} == {StateRole.LEADER, StateRole.FOLLOWER}


# ---------------------------------------------------------------- leadership transfer
def test_leadership_transfer_hands_over_to_the_target() -> None:
    net = Net()
    leader = net.elect(1)
    leader.propose(b"x")
    net.settle()
    leader.transfer_leadership(3)
    net.settle()
    assert net.nodes[3].state == StateRole.LEADER
    assert leader.state == StateRole.FOLLOWER and leader.leader == 3


def test_proposals_are_dropped_while_a_transfer_is_in_progress() -> None:
    net = Net()
    leader = net.elect(1)
    net.blocked = {3}
    leader.transfer_leadership(3)
    with pytest.raises(ProposalDropped, match="leadership transfer to 3"):
        leader.propose(b"x")
    net.tick_all(net.cfg.election_tick, only=[1])  # the transfer times out after an election timeout
    assert leader.state == StateRole.LEADER
    leader.propose(b"x")
