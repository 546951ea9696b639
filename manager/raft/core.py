"""The sans-IO Raft state machine: step(msg), tick(), ready()/advance() in the shape of etcd-io/raft.
Reads durable state through storage.py, keeps the log in log.py and per-follower state in progress.py."""

from __future__ import annotations

import enum
import random
from collections import deque
from dataclasses import dataclass, field, replace

from .log import RaftLog
from .messages import (
    NONE,
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType as MT,
    ReadState,
    Snapshot,
    SnapshotMeta,
)
from .progress import Inflights, Progress, ProgressState, quorum
from .storage import CompactedError, Storage

CAMPAIGN_TRANSFER = b"transfer"  # vote context: a leadership transfer, so voters ignore their lease
_LOCAL = (MT.PROP, MT.READ_INDEX)  # carry term 0: not tied to the sender's term


class StateRole(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


class RaftError(Exception):
    pass


class NotLeader(RaftError):
    """Raised on a node that is not the leader; leader_id says where to go (None: unknown yet)."""

    def __init__(self, leader_id: int | None) -> None:
        self.leader_id = leader_id
        where = f"leader is {leader_id}" if leader_id else "leader unknown"
        super().__init__(f"not leader, {where}")


class ProposalDropped(RaftError):
    pass


class ConfChangeError(RaftError):
    pass


class QuorumLossError(ConfChangeError):
    def __init__(self) -> None:
        super().__init__("can't remove member from the raft: this would result in a loss of quorum")


class CompactionError(RaftError):
    pass


@dataclass(slots=True)
class Config:
    election_tick: int = 10  # election timeout is randomized in [election_tick, 2*election_tick)
    heartbeat_tick: int = 1
    max_msg_bytes: int = 1 << 20  # entries per append message, in bytes (one entry always fits)
    max_inflight: int = 256  # append messages in flight to one follower
    check_quorum: bool = True
    pre_vote: bool = True

    def validate(self) -> None:
        if self.heartbeat_tick <= 0:
            raise ValueError(f"invalid heartbeat_tick {self.heartbeat_tick}: must be positive")
        if self.election_tick <= self.heartbeat_tick:
            raise ValueError(f"invalid election_tick {self.election_tick}: must exceed heartbeat_tick {self.heartbeat_tick}")
        if self.max_inflight <= 0:
            raise ValueError(f"invalid max_inflight {self.max_inflight}: must be positive")
        if self.max_msg_bytes <= 0:
            raise ValueError(f"invalid max_msg_bytes {self.max_msg_bytes}: must be positive")


@dataclass(slots=True)
class Ready:
    """What the shell must do, in this order: persist (snapshot, entries, hard_state, compaction),
    then send messages, then apply (snapshot data, committed_entries), then call advance(ready).
    Sending before persisting would let a vote or an acknowledgement outlive a crash that lost it."""

    leader: int
    role: StateRole
    hard_state: HardState | None
    entries: list[Entry]
    snapshot: Snapshot | None  # from the leader: persist it, and restore the state machine from it
    compaction: Snapshot | None  # made by compact(): persist it and drop the log entries it covers
    messages: list[Message]
    committed_entries: list[Entry]
    read_states: list[ReadState]


@dataclass(slots=True)
class _ReadRequest:
    index: int
    requester: int
    ctx: bytes
    acks: set[int] = field(default_factory=set)


class RaftNode:
    def __init__(self, id: int, storage: Storage, config: Config | None = None, rng: random.Random | None = None) -> None:
        if id <= 0:
            raise ValueError(f"invalid node id {id}: must be positive")
        self.id = id
        self.cfg = config or Config()
        self.cfg.validate()
        self.rng = rng if rng is not None else random.Random(id)
        hs, cs = storage.initial_state()
        snap_index = storage.first_index() - 1
        self.log = RaftLog(storage, committed=hs.commit, applied=snap_index)
        self.term = hs.term
        self.vote = hs.vote
        self.msgs: list[Message] = []
        self.read_states: list[ReadState] = []
        self.pending_compaction: Snapshot | None = None
        self._prev_hs = hs
        self.state = StateRole.FOLLOWER
        self.lead = NONE
        self.votes: dict[int, bool] = {}
        self.lead_transferee = NONE
        self.pending_conf_index = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = self.cfg.election_tick
        self._reads: dict[bytes, _ReadRequest] = {}
        self._read_queue: deque[bytes] = deque()
        self._pending_reads: list[Message] = []
        self.voters: list[int] = []
        self.removed: set[int] = set()
        self.progress: dict[int, Progress] = {}
        self._set_conf(cs)
        self._conf_index = snap_index
        # committed conf changes are membership already, even before the app re-applies them
        self._apply_committed_conf(snap_index + 1, hs.commit)
        self.become_follower(self.term, NONE)

    # ------------------------------------------------------------------ public API
    @property
    def leader(self) -> int | None:
        return self.lead or None

    @property
    def committed(self) -> int:
        return self.log.committed

    @property
    def applied(self) -> int:
        return self.log.applied

    def conf_state(self) -> ConfState:
        return ConfState(tuple(self.voters), tuple(sorted(self.removed)))

    def tick(self) -> None:
        if self.state == StateRole.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def campaign(self) -> None:
        """Start an election now (what an election timeout would do)."""
        if self._promotable() and self.state != StateRole.LEADER:
            self._campaign(pre=self.cfg.pre_vote)

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append `data` on the leader; returns (index, term). Committed once an entry with that index
        and term is applied; if another term's entry is applied there, the proposal was lost."""
        self._check_can_propose()
        index = self._append([(EntryKind.NORMAL, data)])
        self._bcast_append()
        return index, self.term

    def propose_batch(self, datas: list[bytes]) -> tuple[int, int]:
        """Append several proposals at once (one append message per follower, not one per proposal);
        returns (index of the first, term): the i-th of datas is at that index + i."""
        self._check_can_propose()
        if not datas:
            raise ValueError("propose_batch needs at least one proposal")
        last = self._append([(EntryKind.NORMAL, d) for d in datas])
        self._bcast_append()
        return last - len(datas) + 1, self.term

    def forward_proposal(self, data: bytes) -> tuple[int, int] | None:
        """Like propose(), but a follower forwards to the leader (no index comes back)."""
        if self.state == StateRole.LEADER:
            return self.propose(data)
        if self.lead == NONE:
            raise NotLeader(None)
        self._send(Message(MT.PROP, to=self.lead, from_=self.id, entries=[Entry(0, 0, EntryKind.NORMAL, data)]))
        return None

    def propose_conf_change(self, op: ConfChangeOp, node_id: int, addr: str = "") -> tuple[int, int]:
        """Single-server membership change; it takes effect when committed. One at a time.
        `addr` rides in the entry (an ADD's address) for the shell; the core ignores it."""
        self._check_can_propose()
        if node_id <= 0:
            raise ConfChangeError(f"invalid node id {node_id}: must be positive")
        if self.pending_conf_index > self.log.committed:
            raise ConfChangeError(
                f"a membership change is already in progress (index {self.pending_conf_index} not committed yet)"
            )
        if op == ConfChangeOp.ADD:
            if node_id in self.removed:
                raise ConfChangeError(f"node id {node_id} was removed from the raft and cannot be reused")
            if node_id in self.voters:
                raise ConfChangeError(f"node {node_id} is already a member of the raft")
        elif op == ConfChangeOp.REMOVE:
            if node_id not in self.voters:
                raise ConfChangeError(f"node {node_id} is not a member of the raft")
            if not self._can_remove(node_id):
                raise QuorumLossError()
        else:
            raise ConfChangeError(f"invalid membership change {op!r}")
        index = self._append([(EntryKind.CONF_CHANGE, ConfChange(op, node_id, addr).encode())])
        self.pending_conf_index = index
        self._bcast_append()
        return index, self.term

    def transfer_leadership(self, to: int) -> None:
        if self.state == StateRole.LEADER:
            if to not in self.voters or to == self.id:
                raise RaftError(f"cannot transfer leadership to {to}: not another voting member")
            self._handle_transfer(to)
        elif self.lead != NONE:
            self._send(Message(MT.TRANSFER_LEADER, to=self.lead, from_=to))
        else:
            raise NotLeader(None)

    def read_index(self, ctx: bytes) -> None:
        """Ask for a linearizable read point; a ReadState(index, ctx) comes out of ready() once the
        leader has confirmed it still leads. Read after applying up to that index."""
        if not ctx:
            raise ValueError("read_index needs a non-empty, unique ctx")
        if self.state == StateRole.LEADER:
            self._handle_read_index(Message(MT.READ_INDEX, to=self.id, from_=self.id, context=ctx))
        elif self.lead != NONE:
            self._send(Message(MT.READ_INDEX, to=self.lead, from_=self.id, context=ctx))
        else:
            raise NotLeader(None)

    def compact(self, index: int, data: bytes) -> Snapshot:
        """The application's snapshot of its state at `index` (already applied); the next Ready
        carries it as `compaction` for the shell to persist and truncate the log."""
        snap_index = self.log.snapshot_index()
        if index <= snap_index:
            raise CompactionError(f"cannot compact at {index}: already compacted up to {snap_index}")
        if index > self.log.applied:
            raise CompactionError(f"cannot compact at {index}: only applied up to {self.log.applied}")
        snap = Snapshot(SnapshotMeta(index, self.log.term(index), self._conf_state_at(index)), data)
        self.pending_compaction = snap
        return snap

    def report_snapshot(self, to: int, failed: bool) -> None:
        """The transport's word on a snapshot it tried to send: on failure, probe again."""
        pr = self.progress.get(to)
        if self.state != StateRole.LEADER or pr is None or pr.state != ProgressState.SNAPSHOT:
            return
        if failed:
            pr.pending_snapshot = 0
        pr.become_probe()

    def has_ready(self) -> bool:
        return bool(
            self.msgs
            or self.read_states
            or self.pending_compaction is not None
            or self.log.unstable
            or self.log.unstable_snapshot is not None
            or self.log.has_next_committed_entries()
            or self._hard_state() != self._prev_hs
        )

    def ready(self) -> Ready:
        hs = self._hard_state()
        rd = Ready(
            leader=self.lead,
            role=self.state,
            hard_state=hs if hs != self._prev_hs else None,
            entries=list(self.log.unstable),
            snapshot=self.log.unstable_snapshot,
            compaction=self.pending_compaction,
            messages=self.msgs,
            committed_entries=self.log.next_committed_entries(),
            read_states=self.read_states,
        )
        self.msgs = []
        self.read_states = []
        self.pending_compaction = None
        return rd

    def advance(self, rd: Ready) -> None:
        """The shell has persisted, sent and applied everything in rd."""
        if rd.hard_state is not None:
            self._prev_hs = rd.hard_state
        if rd.snapshot is not None:
            self.log.stable_snapshot_to(rd.snapshot.meta.index)
            self.log.applied_to(rd.snapshot.meta.index)
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
        if rd.committed_entries:
            self.log.applied_to(rd.committed_entries[-1].index)

    # ------------------------------------------------------------------ step
    def step(self, m: Message) -> None:
        if m.term == 0:
            pass  # local or forwarded: no term to compare
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == CAMPAIGN_TRANSFER
                in_lease = self.cfg.check_quorum and self.lead != NONE and self.election_elapsed < self.cfg.election_tick
                if in_lease and not force:
                    return  # we heard from a live leader recently: don't let a stray node depose it
            if m.type == MT.PRE_VOTE or (m.type == MT.PRE_VOTE_RESP and not m.reject):
                pass  # a pre-vote never changes our term
            else:
                lead = m.from_ if m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP) else NONE
                self.become_follower(m.term, lead)
        elif m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and m.type in (MT.HEARTBEAT, MT.APP):
                # a stale leader would otherwise never learn our term (we ignore it, it keeps leading)
                self._send(Message(MT.APP_RESP, to=m.from_, from_=self.id))
            elif m.type == MT.PRE_VOTE:
                self._send(Message(MT.PRE_VOTE_RESP, to=m.from_, from_=self.id, reject=True))
            return

        if m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote(m)
        elif self.state == StateRole.LEADER:
            self._step_leader(m)
        elif self.state == StateRole.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _handle_vote(self, m: Message) -> None:
        resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        can_vote = (
            self.vote == m.from_
            or (self.vote == NONE and self.lead == NONE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        if can_vote and self._up_to_date(m.index, m.log_term):
            # the granted response carries the candidate's term, so a pre-candidate can count it
            self._send(Message(resp, to=m.from_, from_=self.id, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.from_
        else:
            self._send(Message(resp, to=m.from_, from_=self.id, term=self.term, reject=True))

    def _up_to_date(self, last_index: int, last_term: int) -> bool:
        return self.log.is_up_to_date(last_index, last_term)

    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t in (MT.APP, MT.HEARTBEAT, MT.SNAP):
            self.election_elapsed = 0
            self.lead = m.from_
            if t == MT.APP:
                self._handle_append(m)
            elif t == MT.HEARTBEAT:
                self._handle_heartbeat(m)
            else:
                self._handle_snapshot(m)
        elif t in (MT.PROP, MT.READ_INDEX, MT.TRANSFER_LEADER):
            # Only our own requests go on to the leader. One another member sent us (it took us for the leader,
            # which we no longer are) is dropped, not passed on: passed on it would still name its requester as
            # sender, and the wire check refuses a message whose sender is not the connection's member (shell
            # simulator seed 388). The requester times out and asks again.
            if self.lead != NONE and m.from_ == self.id:
                self.msgs.append(replace(m, to=self.lead))
        elif t == MT.TIMEOUT_NOW:
            if self._promotable():
                self._campaign(pre=False, transfer=True)
        elif t == MT.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))

    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in (MT.APP, MT.HEARTBEAT, MT.SNAP):
            self.become_follower(m.term, m.from_)  # a leader won this term
            self._step_follower(m)
        elif (t == MT.PRE_VOTE_RESP and self.state == StateRole.PRE_CANDIDATE) or (
            t == MT.VOTE_RESP and self.state == StateRole.CANDIDATE
        ):
            self.votes.setdefault(m.from_, not m.reject)
            granted, rejected = self._tally()
            q = quorum(len(self.voters))
            if granted >= q:
                if self.state == StateRole.PRE_CANDIDATE:
                    self._campaign(pre=False)
                else:
                    self.become_leader()
            elif rejected > len(self.voters) - q:
                self.become_follower(self.term, NONE)
        # proposals, read requests and transfers are dropped: no leader to forward to

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MT.PROP:
            if self.lead_transferee == NONE and m.entries:
                # forwarded proposals may only carry normal data; membership goes through the API
                self._append([(EntryKind.NORMAL, e.data) if e.kind == EntryKind.NORMAL else (EntryKind.EMPTY, b"") for e in m.entries])
                self._bcast_append()
            return
        if t == MT.READ_INDEX:
            self._handle_read_index(m)
            return
        if t == MT.TRANSFER_LEADER:
            if m.from_ in self.voters and m.from_ != self.id:
                self._handle_transfer(m.from_)
            return
        pr = self.progress.get(m.from_)
        if pr is None:
            return
        if t == MT.APP_RESP:
            pr.inactive_ticks = 0
            self._handle_append_resp(m, pr)
        elif t == MT.HEARTBEAT_RESP:
            pr.inactive_ticks = 0
            pr.probe_sent = False
            if pr.state == ProgressState.REPLICATE and pr.inflights.full():
                pr.inflights.free_first()
            elif pr.state == ProgressState.SNAPSHOT:
                pr.snapshot_wait += 1
                if pr.snapshot_wait > self.cfg.election_tick:
                    pr.become_probe()  # the snapshot was probably lost: start over
            if pr.match < self.log.last_index():
                self._send_append(m.from_)
            if m.context:
                self._ack_read(m.from_, m.context)

    def _handle_append_resp(self, m: Message, pr: Progress) -> None:
        if m.reject:
            if pr.maybe_decrease(m.index, m.reject_hint):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.from_)
            return
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT:
            if pr.match + 1 >= self.log.first_index():
                pr.become_replicate()
        else:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            if self.state != StateRole.LEADER:
                return
            self._bcast_append()
        # fill the in-flight window
        while m.from_ in self.progress and self._send_append(m.from_, send_empty=False):
            pass
        if m.from_ == self.lead_transferee and pr.match == self.log.last_index():
            self._send(Message(MT.TIMEOUT_NOW, to=m.from_, from_=self.id))

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._send(Message(MT.APP_RESP, to=m.from_, from_=self.id, index=self.log.committed))
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.entries)
        if last_new is None:
            hint = min(m.index, self.log.last_index())
            self._send(Message(MT.APP_RESP, to=m.from_, from_=self.id, index=m.index, reject=True, reject_hint=hint))
            return
        self._commit_to(min(m.commit, last_new))
        self._send(Message(MT.APP_RESP, to=m.from_, from_=self.id, index=last_new))

    def _handle_heartbeat(self, m: Message) -> None:
        self._commit_to(min(m.commit, self.log.last_index()))
        self._send(Message(MT.HEARTBEAT_RESP, to=m.from_, from_=self.id, context=m.context))

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        assert snap is not None
        meta = snap.meta
        if meta.index > self.log.committed:
            if self.log.match_term(meta.index, meta.term):
                self._commit_to(meta.index)  # we already hold it: just fast-forward the commit
            else:
                self.log.restore(snap)
                self.pending_compaction = None
                self._set_conf(meta.conf_state)
                self._conf_index = meta.index
        self._send(Message(MT.APP_RESP, to=m.from_, from_=self.id, index=self.log.committed))

    # ------------------------------------------------------------------ roles
    def become_follower(self, term: int, lead: int) -> None:
        self._reset(term)
        self.lead = lead
        self.state = StateRole.FOLLOWER

    def _become_pre_candidate(self) -> None:
        # neither term nor vote change: losing a pre-vote leaves no trace
        self.state = StateRole.PRE_CANDIDATE
        self.lead = NONE
        self.votes = {self.id: True}
        self._reset_randomized_timeout()

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.state = StateRole.CANDIDATE
        self.votes = {self.id: True}

    def become_leader(self) -> None:
        if self.state == StateRole.FOLLOWER:
            raise RaftError("a follower cannot become leader without an election")
        self._reset(self.term)
        self.lead = self.id
        self.state = StateRole.LEADER
        if self.id in self.progress:
            self.progress[self.id].become_replicate()
        self._append([(EntryKind.EMPTY, b"")])
        # no membership change until everything before our no-op is committed (the single-server
        # change bug: a new leader must commit in its own term first)
        self.pending_conf_index = self.log.last_index()
        self._bcast_append()

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = NONE
        self.lead = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.lead_transferee = NONE
        self.votes = {}
        last = self.log.last_index()
        self.progress = {v: self._new_progress(last) for v in self.voters}
        if self.id in self.progress:
            self.progress[self.id].match = last
        self.pending_conf_index = 0
        self._reads = {}
        self._read_queue = deque()
        self._pending_reads = []

    def _new_progress(self, last: int) -> Progress:
        return Progress(match=0, next=last + 1, inflights=Inflights(self.cfg.max_inflight))

    def _reset_randomized_timeout(self) -> None:
        self.randomized_timeout = self.rng.randrange(self.cfg.election_tick, 2 * self.cfg.election_tick)

    def _promotable(self) -> bool:
        return self.id in self.voters

    # ------------------------------------------------------------------ ticks and elections
    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self._promotable() and self.election_elapsed >= self.randomized_timeout:
            self.election_elapsed = 0
            self._campaign(pre=self.cfg.pre_vote)

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        for v, pr in self.progress.items():
            if v != self.id:
                pr.inactive_ticks += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum and not self._quorum_active():
                self.become_follower(self.term, NONE)
                return
            self.lead_transferee = NONE  # a transfer that did not finish within an election timeout
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat(periodic=True)

    def _quorum_active(self) -> bool:
        active = sum(1 for v in self.voters if v == self.id or self.progress[v].inactive_ticks < self.cfg.election_tick)
        return active >= quorum(len(self.voters))

    def _campaign(self, pre: bool, transfer: bool = False) -> None:
        if pre:
            self._become_pre_candidate()
            kind, term = MT.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            kind, term = MT.VOTE, self.term
        granted, _ = self._tally()
        if granted >= quorum(len(self.voters)):
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self.become_leader()
            return
        last = self.log.last_index()
        last_term = self.log.term(last)
        ctx = CAMPAIGN_TRANSFER if transfer else b""
        for v in self.voters:
            if v != self.id:
                self._send(Message(kind, to=v, from_=self.id, term=term, index=last, log_term=last_term, context=ctx))

    def _tally(self) -> tuple[int, int]:
        granted = sum(1 for v in self.voters if self.votes.get(v) is True)
        rejected = sum(1 for v in self.voters if self.votes.get(v) is False)
        return granted, rejected

    # ------------------------------------------------------------------ replication
    def _send(self, m: Message) -> None:
        if m.term == 0 and m.type not in _LOCAL:
            m.term = self.term
        self.msgs.append(m)

    def _check_can_propose(self) -> None:
        if self.state != StateRole.LEADER:
            raise NotLeader(self.lead or None)
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"proposal dropped: leadership transfer to {self.lead_transferee} in progress")

    def _append(self, items: list[tuple[EntryKind, bytes]]) -> int:
        last = self.log.last_index()
        entries = [Entry(last + i + 1, self.term, kind, data) for i, (kind, data) in enumerate(items)]
        last = self.log.append(entries)
        if self.id in self.progress:
            self.progress[self.id].maybe_update(last)
        self._maybe_commit()
        return last

    def _maybe_commit(self) -> bool:
        """Commit the highest index a quorum holds, but only if it is from our term (§5.4.2,
        figure 8): earlier terms' entries get committed indirectly, never by counting replicas."""
        advanced = False
        while self.state == StateRole.LEADER and self.voters:
            matches = sorted((self.progress[v].match for v in self.voters), reverse=True)
            mci = matches[quorum(len(matches)) - 1]
            if mci <= self.log.committed or self.log.term_or_none(mci) != self.term:
                break
            self._commit_to(mci)
            advanced = True  # a committed removal shrinks the quorum: look again
        return advanced

    def _commit_to(self, index: int) -> None:
        old = self.log.committed
        if not self.log.commit_to(index):
            return
        self._apply_committed_conf(old + 1, self.log.committed)
        if self.state != StateRole.LEADER:
            return
        if self._pending_reads and self.log.term_or_none(self.log.committed) == self.term:
            pending, self._pending_reads = self._pending_reads, []
            for m in pending:
                self._handle_read_index(m)
        if self.id not in self.voters:
            # we committed our own removal: tell the others, then step aside
            self._bcast_append()
            self.become_follower(self.term, NONE)

    def _send_append(self, to: int, send_empty: bool = True) -> bool:
        pr = self.progress[to]
        if pr.paused():
            return False
        prev = pr.next - 1
        prev_term = self.log.term_or_none(prev)
        entries: list[Entry] | None = None
        if prev_term is not None:
            try:
                entries = self.log.entries_from(pr.next, self.cfg.max_msg_bytes)
            except CompactedError:
                entries = None
        if prev_term is None or entries is None:
            return self._send_snapshot(to, pr)
        if not entries and not send_empty:
            return False
        self._send(
            Message(MT.APP, to=to, from_=self.id, index=prev, log_term=prev_term, entries=entries, commit=self.log.committed)
        )
        pr.appended = True
        if pr.state == ProgressState.REPLICATE:
            if entries:
                last = entries[-1].index
                pr.next = last + 1
                pr.inflights.add(last)
        elif pr.state == ProgressState.PROBE:
            pr.probe_sent = True
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if pr.inactive_ticks >= self.cfg.election_tick:
            return False  # not answering: a snapshot would be wasted
        snap = self.log.snapshot()
        pr.become_snapshot(snap.meta.index)
        self._send(Message(MT.SNAP, to=to, from_=self.id, snapshot=snap))
        return True

    def _bcast_append(self) -> None:
        if self.state != StateRole.LEADER:
            return  # e.g. we just committed our own removal and stepped down
        for v in self.voters:
            if v != self.id:
                self._send_append(v)

    def _bcast_heartbeat(self, ctx: bytes = b"", periodic: bool = False) -> None:
        if not ctx and self._read_queue:
            ctx = self._read_queue[-1]
        for v in self.voters:
            if v == self.id:
                continue
            pr = self.progress[v]
            skip = periodic and not ctx and self._append_stands_for_heartbeat(pr)
            pr.appended = False
            if not skip:
                commit = min(pr.match, self.log.committed)
                self._send(Message(MT.HEARTBEAT, to=v, from_=self.id, commit=commit, context=ctx))

    def _append_stands_for_heartbeat(self, pr: Progress) -> bool:
        """A follower sent an append since the last round has heard from us (it resets its election timer
        and learns the commit; its answer counts for check-quorum): a heartbeat now would only cost a message
        each way. Not for a follower we probe or snapshot or whose window is full (a heartbeat's answer is
        what resumes those), not while a read waits for confirmation, and only while two heartbeat periods
        (the longest silence this leaves) stay under the election timeout."""
        return (pr.appended and pr.state == ProgressState.REPLICATE and not pr.inflights.full()
                and 2 * self.cfg.heartbeat_tick < self.cfg.election_tick)

    def _hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    # ------------------------------------------------------------------ membership
    def _set_conf(self, cs: ConfState) -> None:
        self.voters = sorted(cs.voters)
        self.removed = set(cs.removed)
        last = self.log.last_index()
        self.progress = {v: self._new_progress(last) for v in self.voters}

    def _apply_committed_conf(self, lo: int, hi: int) -> None:
        if hi < lo or hi <= self._conf_index:
            return
        for e in self.log.slice(max(lo, self._conf_index + 1), hi + 1):
            if e.kind == EntryKind.CONF_CHANGE:
                self._apply_conf_change(ConfChange.decode(e.data))
                self._conf_index = e.index

    def _apply_conf_change(self, cc: ConfChange) -> None:
        voters, removed = _changed_conf(self.voters, self.removed, cc)
        if voters == self.voters:
            return
        self.voters, self.removed = voters, removed
        if cc.op == ConfChangeOp.ADD:
            self.progress[cc.node_id] = self._new_progress(self.log.last_index())
        else:
            self.progress.pop(cc.node_id, None)
            if self.lead_transferee == cc.node_id:
                self.lead_transferee = NONE

    def _conf_state_at(self, index: int) -> ConfState:
        snap = self.log.snapshot()
        voters, removed = sorted(snap.meta.conf_state.voters), set(snap.meta.conf_state.removed)
        for e in self.log.slice(snap.meta.index + 1, index + 1):
            if e.kind == EntryKind.CONF_CHANGE:
                voters, removed = _changed_conf(voters, removed, ConfChange.decode(e.data))
        return ConfState(tuple(voters), tuple(sorted(removed)))

    def _can_remove(self, node_id: int) -> bool:
        """Like swarmkit: the members left must include a reachable quorum of themselves."""
        remaining = [v for v in self.voters if v != node_id]
        reachable = sum(
            1 for v in remaining if v == self.id or self.progress[v].inactive_ticks < self.cfg.election_tick
        )
        return bool(remaining) and reachable >= quorum(len(remaining))

    def _handle_transfer(self, to: int) -> None:
        if self.lead_transferee == to:
            return
        self.lead_transferee = to
        self.election_elapsed = 0  # the transfer must finish within one election timeout
        if self.progress[to].match == self.log.last_index():
            self._send(Message(MT.TIMEOUT_NOW, to=to, from_=self.id))
        else:
            self._send_append(to)

    # ------------------------------------------------------------------ linearizable reads
    def _handle_read_index(self, m: Message) -> None:
        if self.voters == [self.id]:
            self._answer_read(_ReadRequest(self.log.committed, m.from_, m.context))
            return
        if self.log.term_or_none(self.log.committed) != self.term:
            # our commit index may lag the previous leader's until we commit in our own term
            self._pending_reads.append(m)
            return
        if m.context in self._reads:
            return
        self._reads[m.context] = _ReadRequest(self.log.committed, m.from_, m.context, {self.id})
        self._read_queue.append(m.context)
        self._bcast_heartbeat(m.context)

    def _ack_read(self, voter: int, ctx: bytes) -> None:
        req = self._reads.get(ctx)
        if req is None:
            return
        req.acks.add(voter)
        if sum(1 for v in req.acks if v in self.voters) < quorum(len(self.voters)):
            return
        # leadership confirmed after every earlier request was queued: release them all
        while self._read_queue:
            c = self._read_queue.popleft()
            self._answer_read(self._reads.pop(c))
            if c == ctx:
                break

    def _answer_read(self, req: _ReadRequest) -> None:
        if req.requester in (self.id, NONE):
            self.read_states.append(ReadState(req.index, req.ctx))
        else:
            self._send(Message(MT.READ_INDEX_RESP, to=req.requester, from_=self.id, index=req.index, context=req.ctx))


def _changed_conf(voters: list[int], removed: set[int], cc: ConfChange) -> tuple[list[int], set[int]]:
    """Membership after one change; adding a removed id or removing a non-member changes nothing."""
    if cc.op == ConfChangeOp.ADD:
        if cc.node_id in removed or cc.node_id in voters:
            return voters, removed
        return sorted([*voters, cc.node_id]), removed
    if cc.node_id not in voters:
        return voters, removed
    return [v for v in voters if v != cc.node_id], removed | {cc.node_id}
