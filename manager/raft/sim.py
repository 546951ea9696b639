"""Deterministic, seeded simulation of Raft clusters under faults, checking invariants after every step.
Drives core.RaftNode over storage.MemoryStorage through a virtual network; run `python -m manager.raft.sim --seeds 0-1999`."""

from __future__ import annotations

import argparse
import heapq
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass, field

from .core import Config, ConfChangeError, NotLeader, ProposalDropped, RaftError, RaftNode, StateRole
from .messages import ConfChangeOp, Entry, EntryKind, HardState, Message, MessageType, Snapshot
from .storage import MemoryStorage

TICK_UNITS = 4  # virtual time units per node tick; messages take 1..max_delay units
CHAOS_TICKS = 200
HEAL_TICKS = 400
CLIENTS = 3
CLIENT_PATIENCE_TICKS = 60


class InvariantViolation(Exception):
    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


@dataclass(slots=True)
class SimNode:
    id: int
    storage: MemoryStorage
    core: RaftNode | None  # None while crashed
    state: list[bytes] = field(default_factory=list)  # the replicated state machine: applied values
    applied: int = 0
    restart_at: int = -1  # tick at which a crashed node comes back
    reads: list[tuple[int, bytes]] = field(default_factory=list)  # read states waiting for apply
    checked_commit: int = 0  # committed prefix already compared with the commit history


@dataclass(slots=True)
class Client:
    id: int
    seq: int = 0
    phase: str = "idle"  # idle -> trying (no entry yet) -> waiting (entry appended at index/term)
    value: bytes = b""
    target: int = 0
    node: int = 0
    index: int = 0
    term: int = 0
    since: int = 0


@dataclass(slots=True)
class Result:
    seed: int
    ok: bool
    invariant: str = ""
    detail: str = ""
    acked: int = 0
    trace: list[str] = field(default_factory=list)


def encode_state(values: list[bytes]) -> bytes:
    return b",".join(values)


def decode_state(data: bytes) -> list[bytes]:
    return data.split(b",") if data else []


class Simulation:
    """One seeded run. Everything random comes from self.rng, so a seed replays exactly."""

    def __init__(self, seed: int, nodes: int = 3, fault: str | None = None, verbose: bool = False) -> None:
        if nodes not in (3, 5):
            raise ValueError(f"invalid cluster size {nodes}: the simulator runs 3 or 5 nodes")
        if fault not in (None, "amnesia"):
            raise ValueError(f"unknown fault {fault!r}")
        self.seed = seed
        self.rng = random.Random(seed)
        self.fault = fault
        self.verbose = verbose
        self.trace: list[str] = []
        rng = self.rng
        self.p_drop = rng.choice([0.0, 0.02, 0.05, 0.15])
        self.p_dup = rng.choice([0.0, 0.02, 0.05])
        self.max_delay = rng.choice([2, 4, 8])
        self.compact_every = rng.choice([4, 10, 30, 10_000])
        self.cfg = Config(
            election_tick=10,
            heartbeat_tick=1,
            max_msg_bytes=rng.choice([64, 300, 1 << 20]),
            max_inflight=rng.choice([1, 4, 256]),
            # shoal runs with both on; turning them off now and then exercises the plain-Raft paths
            check_quorum=rng.random() < 0.8,
            pre_vote=rng.random() < 0.8,
        )
        self.initial = list(range(1, nodes + 1))
        self.next_id = nodes + 1
        self.nodes: dict[int, SimNode] = {}
        for i in self.initial:
            self._add_sim_node(i, MemoryStorage.bootstrap(self.initial))
        self.now = 0  # virtual time units
        self.seq = 0
        self.net: list[tuple[int, int, int, int, Message]] = []  # (due, seq, sender, dst, msg)
        self.blocked: set[tuple[int, int]] = set()  # directed links that drop everything
        self.clients = [Client(i) for i in range(CLIENTS)]
        self.waiting: dict[tuple[int, int], Client] = {}  # (node, index) -> client
        self.acked: list[bytes] = []
        self.reads: dict[bytes, tuple[int, int]] = {}  # ctx -> (node, acked count when issued)
        # global history the invariants are checked against
        self.leaders: dict[int, int] = {}  # term -> leader id
        self.applied_log: dict[int, Entry] = {}  # index -> the entry every node applied there
        self.canonical: list[bytes] = []  # state machine values in applied order
        self.count_at: dict[int, int] = {1: 0}  # index -> len(canonical) after applying it
        self.max_applied = 1
        self.commit_term: list[int] = [0, 0]  # index -> term of the leader that first committed it
        self.commit_entry_term: list[int] = [0, 1]
        self.entry_prev: dict[tuple[int, int], tuple[int, int, bytes]] = {}  # (index, term) -> (prev term, kind, data)
        self.healing = False
        self.leader_commit: dict[int, tuple[int, int]] = {}  # node -> (term, committed) when last seen leading
        self.leader_last: dict[int, tuple[int, int]] = {}  # node -> (term, last index checked) while leading
        self.noop_index: dict[int, int] = {}  # term -> index of its leader's no-op
        self.eager_change = False  # a new leader was just elected: try a membership change at once

    # ------------------------------------------------------------------ helpers
    def log(self, text: str) -> None:
        if self.verbose:
            self.trace.append(f"t={self.now / TICK_UNITS:.2f} {text}")

    def _add_sim_node(self, nid: int, storage: MemoryStorage) -> SimNode:
        node = SimNode(nid, storage, None)
        self.nodes[nid] = node
        self._start(node)
        return node

    def _start(self, node: SimNode) -> None:
        if self.fault == "amnesia":
            # deliberately broken: forget what was fsynced (the checker must notice)
            node.storage = MemoryStorage.bootstrap(self.initial) if node.id in self.initial else MemoryStorage()
        node.core = RaftNode(node.id, node.storage, self.cfg, random.Random(self.rng.getrandbits(64)))
        snap = node.storage.snapshot()
        node.state = decode_state(snap.data)
        node.applied = snap.meta.index
        node.reads = []
        node.restart_at = -1

    def _alive(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.core is not None]

    def _leader(self) -> SimNode | None:
        best = None
        for n in self._alive():
            if n.core.state == StateRole.LEADER and (best is None or n.core.term > best.core.term):
                best = n
        return best

    # ------------------------------------------------------------------ invariants
    def _check_step(self, node: SimNode) -> None:
        core = node.core
        c = core.log.committed
        while len(self.commit_term) <= c:
            # a follower's term bounds the committing leader's from above: that only weakens the check
            i = len(self.commit_term)
            t = core.log.term_or_none(i)
            self.commit_term.append(core.term if t is not None else 1 << 62)
            self.commit_entry_term.append(t or 0)
        self._check_commit_agreement(node)
        if core.state != StateRole.LEADER:
            return
        seen = self.leaders.get(core.term)
        if seen is None:
            self.leaders[core.term] = node.id
            self.noop_index[core.term] = core.log.last_index()
            self.log(f"node {node.id} leads term {core.term}")
            self._check_leader_completeness(node)
            if not self.healing and self.rng.random() < 0.25:
                self.eager_change = True
        elif seen != node.id:
            raise InvariantViolation("election safety", f"term {core.term} has two leaders: {seen} and {node.id}")
        self._check_leader_commit(node)
        self._check_leader_appends(node)

    def _check_commit_agreement(self, node: SimNode) -> None:
        """Every index a node commits holds the entry first committed there (catches a follower that
        commits past what its leader sent it, before anything is applied)."""
        core = node.core
        c = core.log.committed
        if c <= node.checked_commit:
            return
        for i in range(max(node.checked_commit + 1, core.log.snapshot_index() + 1), c + 1):
            t = core.log.term_or_none(i)
            want = self.commit_entry_term[i]
            if t is not None and want and t != want:
                raise InvariantViolation(
                    "commit agreement", f"node {node.id} committed entry {i} of term {t}; it was committed with term {want}"
                )
        node.checked_commit = c

    def _check_leader_commit(self, node: SimNode) -> None:
        """A leader moves its commit index only onto an entry of its own term (§5.4.2, figure 8): entries
        of earlier terms are committed by that, never by counting their replicas."""
        core = node.core
        c = core.log.committed
        prev = self.leader_commit.get(node.id)
        if prev is not None and prev[0] == core.term and c > prev[1] and core.log.term_or_none(c) != core.term:
            raise InvariantViolation(
                "leader commits its own term",
                f"leader {node.id} of term {core.term} moved its commit {prev[1]} -> {c} onto an entry of term {core.log.term_or_none(c)}",
            )
        self.leader_commit[node.id] = (core.term, c)

    def _check_leader_appends(self, node: SimNode) -> None:
        """Membership changes one at a time, and none before the leader's no-op commits (the single-server
        change bug): checked on each entry the leader appends, when it appends it."""
        core = node.core
        last = core.log.last_index()
        prev = self.leader_last.get(node.id)
        start = prev[1] + 1 if prev is not None and prev[0] == core.term else self.noop_index.get(core.term, last + 1)
        self.leader_last[node.id] = (core.term, last)
        start = max(start, core.log.snapshot_index() + 1)
        if start > last:
            return
        for e in core.log.slice(start, last + 1):
            if e.kind != EntryKind.CONF_CHANGE or e.term != core.term:
                continue
            noop = self.noop_index.get(core.term, 0)
            if core.log.committed < noop:
                raise InvariantViolation(
                    "membership change after the no-op",
                    f"leader {node.id} of term {core.term} appended a membership change at {e.index} before its no-op at {noop} committed",
                )
            pending = [x.index for x in core.log.slice(core.log.committed + 1, e.index) if x.kind == EntryKind.CONF_CHANGE]
            if pending:
                raise InvariantViolation(
                    "one membership change at a time",
                    f"leader {node.id} appended a membership change at {e.index} with {pending} not committed",
                )

    def _check_leader_completeness(self, node: SimNode) -> None:
        core = node.core
        first = core.log.snapshot_index()
        for i in range(first + 1, len(self.commit_term)):
            if self.commit_term[i] < core.term and core.log.term_or_none(i) != self.commit_entry_term[i]:
                raise InvariantViolation(
                    "leader completeness",
                    f"node {node.id} leads term {core.term} without entry {i} (term {self.commit_entry_term[i]}) "
                    f"committed in term {self.commit_term[i]}",
                )

    def _check_persisted_entries(self, node: SimNode, entries: list[Entry]) -> None:
        st = node.storage
        for e in entries:
            if e.index <= st.snapshot().meta.index:
                continue
            key = (e.index, e.term)
            val = (st.term(e.index - 1), int(e.kind), e.data)
            known = self.entry_prev.get(key)
            if known is None:
                self.entry_prev[key] = val
            elif known != val:
                raise InvariantViolation(
                    "log matching",
                    f"node {node.id} holds entry {key} with (prev term, kind, data) {val}, another log has {known}",
                )

    def _check_hard_state(self, node: SimNode, hs: HardState) -> None:
        old = node.storage.hard_state()
        if hs.term < old.term:
            raise InvariantViolation("term monotonic", f"node {node.id} term {old.term} -> {hs.term}")
        if hs.term == old.term and old.vote and hs.vote != old.vote:
            raise InvariantViolation("one vote per term", f"node {node.id} voted {old.vote} then {hs.vote} in term {hs.term}")
        if hs.commit < old.commit:
            raise InvariantViolation("commit monotonic", f"node {node.id} commit {old.commit} -> {hs.commit}")

    def _apply_entry(self, node: SimNode, e: Entry) -> None:
        if e.index != node.applied + 1:
            raise InvariantViolation("applied index monotonic", f"node {node.id} applied {node.applied} then {e.index}")
        known = self.applied_log.get(e.index)
        if known is None:
            if e.index != self.max_applied + 1:
                raise InvariantViolation("state machine safety", f"index {e.index} applied before {self.max_applied + 1}")
            self.applied_log[e.index] = e
            if e.kind == EntryKind.NORMAL:
                self.canonical.append(e.data)
            self.count_at[e.index] = len(self.canonical)
            self.max_applied = e.index
        elif known != e:
            raise InvariantViolation(
                "state machine safety", f"node {node.id} applied {e} at {e.index}, another node applied {known}"
            )
        node.applied = e.index
        if e.kind == EntryKind.NORMAL:
            node.state.append(e.data)
        client = self.waiting.pop((node.id, e.index), None)
        if client is not None:
            if e.term == client.term and e.data == client.value:
                self.acked.append(client.value)
                self.log(f"client {client.id} acked {client.value!r} at {e.index}")
            client.phase = "idle"

    def _restore_snapshot(self, node: SimNode, snap: Snapshot) -> None:
        idx = snap.meta.index
        if idx <= node.applied:
            raise InvariantViolation("applied index monotonic", f"node {node.id} restored snapshot {idx} after applying {node.applied}")
        values = decode_state(snap.data)
        if idx not in self.count_at or values != self.canonical[: self.count_at[idx]]:
            raise InvariantViolation("state machine safety", f"node {node.id} got a snapshot at {idx} that differs from the applied history")
        node.state = values
        node.applied = idx
        for key in [k for k in self.waiting if k[0] == node.id and k[1] <= idx]:
            self.waiting.pop(key).phase = "idle"  # skipped over by the snapshot: outcome unknown

    # ------------------------------------------------------------------ ready processing
    def _handle_ready(self, node: SimNode, torn: bool = False) -> None:
        core = node.core
        rd = core.ready()
        st = node.storage
        # 1. persist (this is the fsync: a crash keeps exactly what got here)
        if rd.snapshot is not None:
            st.apply_snapshot(rd.snapshot)
        if rd.entries:
            st.append(rd.entries)
            self._check_persisted_entries(node, rd.entries)
        if rd.hard_state is not None:
            self._check_hard_state(node, rd.hard_state)
            st.set_hard_state(rd.hard_state)
        if rd.compaction is not None:
            st.compact(rd.compaction)
        if torn:
            return  # crashed right after the fsync
        # 2. send (what a message promises must be on disk by now)
        for m in rd.messages:
            self._check_durable(node, m)
            self._send(node.id, m)
        # 3. apply
        if rd.snapshot is not None:
            self._restore_snapshot(node, rd.snapshot)
        for e in rd.committed_entries:
            self._apply_entry(node, e)
        for rs in rd.read_states:
            node.reads.append((rs.index, rs.ctx))
        core.advance(rd)
        self._finish_reads(node)
        if node.applied - core.log.snapshot_index() >= self.compact_every and node.applied == core.log.applied:
            core.compact(node.applied, encode_state(node.state))

    def _check_durable(self, node: SimNode, m: Message) -> None:
        st = node.storage
        if m.type == MessageType.VOTE_RESP and not m.reject:
            hs = st.hard_state()
            # a later term on disk keeps the promise too: the node can never vote in m.term again
            if hs.term < m.term or (hs.term == m.term and hs.vote != m.to):
                raise InvariantViolation(
                    "vote durability",
                    f"node {node.id} grants its vote in term {m.term} to {m.to}, but its disk says term {hs.term} vote {hs.vote}",
                )
        elif m.type == MessageType.APP_RESP and not m.reject and m.index > max(st.last_index(), st.snapshot().meta.index):
            raise InvariantViolation(
                "append durability", f"node {node.id} acknowledges index {m.index}, but its disk ends at {st.last_index()}"
            )

    def _finish_reads(self, node: SimNode) -> None:
        if not node.reads:
            return
        left = []
        for index, ctx in node.reads:
            if node.applied < index:
                left.append((index, ctx))
                continue
            origin = self.reads.pop(ctx, None)
            if origin is None:
                continue
            must_see = self.acked[: origin[1]]
            have = set(node.state)
            missing = [v for v in must_see if v not in have]
            if missing:
                raise InvariantViolation("linearizable read", f"read {ctx!r} on node {node.id} at index {index} misses acked {missing[:3]}")
        node.reads = left

    def _send(self, sender: int, m: Message) -> None:
        if self.rng.random() < self.p_drop:
            return
        copies = 2 if self.rng.random() < self.p_dup else 1
        for _ in range(copies):
            delay = self.rng.randint(1, self.max_delay)
            if self.rng.random() < 0.01:
                delay += self.rng.randint(10, 60)  # a straggler: arrives long after newer messages
            self.seq += 1
            heapq.heappush(self.net, (self.now + delay, self.seq, sender, m.to, m))

    def _deliver(self) -> None:
        while self.net and self.net[0][0] <= self.now:
            _, _, sender, dst, m = heapq.heappop(self.net)
            node = self.nodes.get(dst)
            if node is None or node.core is None or (sender, dst) in self.blocked:
                continue
            before = node.core.log.committed
            node.core.step(m)
            if m.type == MessageType.APP and node.core.log.committed > max(before, m.index + len(m.entries)):
                # Figure 2: commitIndex = min(leaderCommit, index of last new entry), never past what m verified
                raise InvariantViolation(
                    "follower commits what the leader sent",
                    f"node {node.id} committed {node.core.log.committed} on an append covering up to {m.index + len(m.entries)}",
                )
            self._check_step(node)

    # ------------------------------------------------------------------ faults and clients
    def _crash(self, node: SimNode) -> None:
        if self.rng.random() < 0.5 and node.core.has_ready():
            self._handle_ready(node, torn=True)
        node.core = None
        node.reads = []
        node.restart_at = self.now // TICK_UNITS + self.rng.randint(3, 40)
        for key in [k for k in self.waiting if k[0] == node.id]:
            self.waiting.pop(key).phase = "idle"
        self.log(f"crash node {node.id}")

    def _chaos(self) -> None:
        rng = self.rng
        tick = self.now // TICK_UNITS
        for node in self.nodes.values():
            if node.core is None and 0 <= node.restart_at <= tick:
                self._start(node)
                self.log(f"restart node {node.id}")
        r = rng.random()
        alive = self._alive()
        ids = sorted(self.nodes)
        if r < 0.03 and alive:
            self._crash(rng.choice(alive))
        elif r < 0.05:
            self._partition(ids)
        elif r < 0.07:
            if self.blocked:
                self.log("heal partitions")
            self.blocked.clear()
        elif r < 0.085:
            self._membership_change()
        elif r < 0.10:
            leader = self._leader()
            if leader is not None:
                others = [v for v in leader.core.voters if v != leader.id]
                if others:
                    to = rng.choice(others)
                    self.log(f"transfer leadership {leader.id} -> {to}")
                    leader.core.transfer_leadership(to)

    def _partition(self, ids: list[int]) -> None:
        rng = self.rng
        kind = rng.randrange(4)
        if kind == 0:  # isolate one node
            x = rng.choice(ids)
            self.blocked |= {(x, y) for y in ids if y != x} | {(y, x) for y in ids if y != x}
            self.log(f"isolate node {x}")
        elif kind == 1:  # split in two
            shuffled = ids[:]
            rng.shuffle(shuffled)
            cut = rng.randint(1, len(ids) - 1)
            a, b = shuffled[:cut], shuffled[cut:]
            self.blocked |= {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}
            self.log(f"partition {a} | {b}")
        elif kind == 2:  # a node that can hear but not speak
            x = rng.choice(ids)
            self.blocked |= {(x, y) for y in ids if y != x}
            self.log(f"node {x} cannot send")
        else:  # one directed link
            x, y = rng.sample(ids, 2)
            self.blocked.add((x, y))
            self.log(f"link {x} -> {y} drops")

    def _membership_change(self, again: bool = True) -> None:
        leader = self._leader()
        if leader is None:
            return
        if again and self.rng.random() < 0.3:
            self._membership_change(again=False)  # churn: a second change while the first is pending
        voters = leader.core.voters
        n = len(self.initial)
        try:
            if len(voters) <= n - 1 or (len(voters) < n + 1 and self.rng.random() < 0.5):
                nid = self.next_id
                leader.core.propose_conf_change(ConfChangeOp.ADD, nid)
                self.next_id += 1
                self._add_sim_node(nid, MemoryStorage())
                self.log(f"add node {nid} via {leader.id}")
            else:
                victim = self.rng.choice(voters)
                leader.core.propose_conf_change(ConfChangeOp.REMOVE, victim)
                self.log(f"remove node {victim} via {leader.id}")
        except (ConfChangeError, ProposalDropped) as e:
            self.log(f"membership change refused: {e}")
        self._check_step(leader)

    def _client_actions(self) -> None:
        rng = self.rng
        tick = self.now // TICK_UNITS
        for c in self.clients:
            if c.phase == "waiting":
                if tick - c.since > CLIENT_PATIENCE_TICKS:
                    self.waiting.pop((c.node, c.index), None)
                    c.phase = "idle"  # gave up: the value may or may not commit, but never twice
                continue
            if c.phase == "idle":
                if self.healing or rng.random() > 0.3:
                    continue
                c.seq += 1
                c.value = f"c{c.id}-{c.seq}".encode()
                c.phase = "trying"
                c.since = tick
            if rng.random() > 0.5:
                continue
            node = self.nodes.get(c.target)
            if node is None or node.core is None:
                alive = self._alive()
                if not alive:
                    continue
                node = rng.choice(alive)
            try:
                c.index, c.term = node.core.propose(c.value)
            except NotLeader as e:
                c.target = e.leader_id or rng.choice(sorted(self.nodes))
                continue
            except ProposalDropped:
                continue
            c.node, c.target, c.phase, c.since = node.id, node.id, "waiting", tick
            self.waiting[(node.id, c.index)] = c
            self._check_step(node)
        if not self.healing and rng.random() < 0.03:
            alive = [n for n in self._alive() if n.core.leader]
            if alive:
                node = rng.choice(alive)
                self.seq += 1
                ctx = f"r{self.seq}".encode()
                try:
                    node.core.read_index(ctx)
                    self.reads[ctx] = (node.id, len(self.acked))
                except RaftError:
                    pass

    # ------------------------------------------------------------------ driving
    def _unit(self, chaos: bool) -> None:
        if chaos and self.now % TICK_UNITS == 0:
            self._chaos()
        self._deliver()
        if self.eager_change:
            self.eager_change = False
            self._membership_change()
        for node in self.nodes.values():
            if node.core is not None and (self.now + node.id) % TICK_UNITS == 0:
                node.core.tick()
                self._check_step(node)
        self._client_actions()
        for node in self.nodes.values():
            if node.core is not None and node.core.has_ready() and (self.healing or self.rng.random() < 0.8):
                self._handle_ready(node)
        self.now += 1

    def _quiet(self) -> bool:
        leader = self._leader()
        if leader is None or any(c.phase == "waiting" for c in self.clients):
            return False
        lc = leader.core
        if lc.log.committed != lc.log.last_index():
            return False
        for v in lc.voters:  # a removed node may campaign forever at a high term: it is not asked
            n = self.nodes[v]
            if n.core is None or n.core.term != lc.term or n.applied != lc.log.committed or n.core.log.committed != lc.log.committed:
                return False
        return True

    def run(self) -> Result:
        try:
            for _ in range(CHAOS_TICKS * TICK_UNITS):
                self._unit(chaos=True)
            self.healing = True
            self.blocked.clear()
            self.p_drop = self.p_dup = 0.0
            for node in self.nodes.values():
                if node.core is None:
                    self._start(node)
            self.log("heal")
            for _ in range(HEAL_TICKS):
                for _ in range(TICK_UNITS):
                    self._unit(chaos=False)
                if self._quiet():
                    break
            else:
                raise InvariantViolation("liveness", f"no quiet cluster {HEAL_TICKS} ticks after healing")
            self._check_final()
        except InvariantViolation as e:
            return Result(self.seed, False, e.invariant, e.detail, len(self.acked), self.trace)
        except Exception as e:  # a crash in the core is a failure of this seed too
            detail = f"{type(e).__name__}: {e}"
            if self.verbose:
                self.trace.append(traceback.format_exc())
            return Result(self.seed, False, "exception", detail, len(self.acked), self.trace)
        return Result(self.seed, True, acked=len(self.acked), trace=self.trace)

    def _check_final(self) -> None:
        leader = self._leader()
        assert leader is not None
        members = [self.nodes[v] for v in leader.core.voters]
        ref = members[0]
        for n in members[1:]:
            if n.state != ref.state:
                raise InvariantViolation("final agreement", f"nodes {ref.id} and {n.id} applied different sequences")
        counts: dict[bytes, int] = {}
        for v in ref.state:
            counts[v] = counts.get(v, 0) + 1
        for v in self.acked:
            if counts.get(v, 0) != 1:
                raise InvariantViolation("acked exactly once", f"acked {v!r} applied {counts.get(v, 0)} times on node {ref.id}")
        dup = [v for v, k in counts.items() if k > 1]
        if dup:
            raise InvariantViolation("applied exactly once", f"{dup[:3]} applied more than once")


def run_seed(args: tuple[int, str, str | None, bool]) -> Result:
    seed, nodes, fault, verbose = args
    size = int(nodes) if nodes in ("3", "5") else random.Random(seed ^ 0x5EED).choice([3, 5])
    return Simulation(seed, size, fault, verbose).run()


def parse_seeds(text: str) -> range:
    try:
        if "-" in text:
            lo, hi = text.split("-", 1)
            r = range(int(lo), int(hi) + 1)
        else:
            r = range(int(text), int(text) + 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seeds {text!r}: expected N or START-END") from None
    if len(r) == 0:
        raise argparse.ArgumentTypeError(f"invalid seeds {text!r}: END is before START")
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m manager.raft.sim", description=__doc__)
    ap.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-99"), help="N or START-END (inclusive)")
    ap.add_argument("--nodes", choices=["3", "5", "mixed"], default="mixed")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes")
    ap.add_argument("--fault", choices=["amnesia"], default=None, help="break the simulation on purpose")
    ap.add_argument("--verbose", action="store_true", help="print the event trace of failing seeds")
    opts = ap.parse_args(argv)
    work = [(s, opts.nodes, opts.fault, opts.verbose) for s in opts.seeds]
    start = time.monotonic()
    if opts.jobs > 1 and len(work) > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(opts.jobs) as pool:
            results = pool.map(run_seed, work, chunksize=max(1, len(work) // (opts.jobs * 8)))
    else:
        results = [run_seed(w) for w in work]
    failed = 0
    for r in results:
        if not r.ok:
            failed += 1
            print(f"seed {r.seed}: FAIL {r.invariant}: {r.detail}")
            if opts.verbose:
                for line in r.trace:
                    print(f"    {line}")
    acked = sum(r.acked for r in results)
    print(f"{len(results)} seeds, {failed} failed ({acked} acknowledged proposals, {time.monotonic() - start:.1f}s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
