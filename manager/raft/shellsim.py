"""Deterministic simulation of real manager shells (manager/raftnode.py's RaftManager: SQLite storage, proposal batching,
forwarding, snapshots) on a virtual-time loop (vloop.py) over a faulty in-memory network; `python -m manager.raft.shellsim --seeds 0-99`.

sim.py checks the sans-IO core; this one checks what only the shell can get wrong (acknowledging, applying or sending
before persisting). The shell runs unmodified; the simulator replaces, per manager, only what touches the outside world:
its disk executor (`_disk`, writes then happen on the loop after a virtual fsync delay), its transport (`transport`),
the `time` module raftnode reads and transport.open_channel (the wiped-member check asks peers over it)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import itertools
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
import types
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from manager.raft.core import RaftError, StateRole
from manager.raft.messages import ConfChange, ConfChangeOp, EntryKind, Message, MessageType
from manager.raft.progress import quorum
from manager.raft.shellparts import FakeChannel, SimDisk, SimNode, SimStore, SimTransport, rpc_error
from manager.raft.vloop import VirtualLoop, VirtualTime
from manager.raft.wirecheck import Rpc, check_message
from proto import objects_pb2, raft_pb2

CHAOS_S = 12.0
HEAL_S = 30.0
CLIENTS = 3
KEYS = 4
CLIENT_TIMEOUT_S = 4.0
TICK_S = 0.1
REMOVED_STOP_DELAY_S = 3.0  # more than the longest election timeout (2 x 10 ticks)


class InvariantViolation(Exception):
    def __init__(self, invariant: str, detail: str) -> None:
        super().__init__(f"{invariant}: {detail}")
        self.invariant = invariant
        self.detail = detail


@dataclass(slots=True)
class Result:
    seed: int
    ok: bool
    invariant: str = ""
    detail: str = ""
    acked: int = 0
    ops: int = 0
    virtual_s: float = 0.0
    trace: list[str] = field(default_factory=list)
    paths: Counter[str] = field(default_factory=Counter)  # what the run exercised (snapshots installed, forwards...)


# ---------------------------------------------------------------------------------- the simulation
class ShellSim:
    """One seeded run; everything random comes from self.rng (the shells' election timers included)."""

    def __init__(self, seed: int, nodes: int | None = None, shell: types.ModuleType | None = None,
                 workdir: Path | None = None, verbose: bool = False, observer: Any = None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        rng = self.rng
        self.size = nodes if nodes is not None else rng.choice([1, 3, 3, 5])
        if self.size not in (1, 3, 5):
            raise ValueError(f"invalid cluster size {self.size}: the shell simulator runs 1, 3 or 5 managers")
        self.shell = shell if shell is not None else importlib.import_module("manager.raftnode")
        self.verbose = verbose
        self.observer = observer  # told of opens, starts, saves, sends and applies (fsynccheck.py's recorder)
        self.trace: list[str] = []
        self.p_drop = rng.choice([0.0, 0.02, 0.1])
        self.max_delay = rng.choice([0.002, 0.01, 0.03])
        self.max_fsync = rng.choice([0.0005, 0.003, 0.02])
        self.snapshot_every = rng.choice([6, 15, 40])
        self.snapshot_keep = rng.choice([0, 2, 5])
        self.p_crash = rng.choice([0.01, 0.03])
        self.loop = VirtualLoop()
        self.vtime = VirtualTime(self.loop)
        self._own_dir = workdir is None
        self.dir = Path(tempfile.mkdtemp(prefix=f"shellsim-{seed}-", dir=_scratch())) if workdir is None else workdir
        self.nodes: dict[int, SimNode] = {}
        self.by_addr: dict[str, SimNode] = {}
        self.founders = list(range(1, self.size + 1))
        self.next_id = self.size + 1
        self.blocked: set[tuple[int, int]] = set()
        self.healing = False
        self.stop_clients = False
        # the cluster's history, as the checks see it
        self.leaders: dict[int, int] = {}  # term -> leader
        self.committed: dict[int, tuple[int, int, bytes]] = {}  # index -> (term, kind, data) of the committed entry
        self.commit_term: dict[int, int] = {}  # index -> upper bound of the term it was committed in
        self.entry_prev: dict[tuple[int, int], tuple[int | None, int, bytes]] = {}
        self.confs: list[tuple[int, tuple[int, ...]]] = [(1, tuple(self.founders))]  # (index, voters from then on)
        self.store_applied: dict[int, bytes] = {}  # index -> data every store applied there
        self.ops: list[Any] = []  # linearizability.Op
        self.acked: list[str] = []
        self.tasks: list[asyncio.Task[Any]] = []
        self.failure: InvariantViolation | None = None
        self.paths: Counter[str] = Counter()

    # ------------------------------------------------------------------ helpers
    def log(self, text: str) -> None:
        if self.verbose:
            self.trace.append(f"t={self.loop.now:.3f} {text}")

    def fail(self, invariant: str, detail: str) -> None:
        """Record the first violation and stop the run (raised from shell callbacks, it would be swallowed)."""
        if self.failure is None:
            self.failure = InvariantViolation(invariant, detail)
            self.log(f"VIOLATION {invariant}: {detail}")
        raise InvariantViolation(self.failure.invariant, self.failure.detail)

    def fsync_delay(self) -> float:
        return self.rng.uniform(0.0001, self.max_fsync)

    def up_nodes(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.up and n.mgr is not None and n.mgr.node is not None]

    def leader(self) -> SimNode | None:
        best = None
        for n in self.up_nodes():
            core = n.mgr.node
            if core.state == StateRole.LEADER and (best is None or core.term > best.mgr.node.term):
                best = n
        return best

    def voters_at(self, index: int) -> tuple[int, ...]:
        voters = self.confs[0][1]
        for at, v in self.confs:
            if at <= index:
                voters = v
        return voters

    # ------------------------------------------------------------------ managers
    def _config(self, node: SimNode) -> Any:
        founders = {i: self.nodes[i].addr for i in self.founders}
        return self.shell.ManagerConfig(
            node_id=node.id, listen=node.addr, peers={**founders, node.id: node.addr}, data_dir=node.data_dir,
            join=node.join, tick_s=TICK_S, election_tick=10, heartbeat_tick=1, snapshot_every=self.snapshot_every,
            snapshot_keep=self.snapshot_keep, storage="sqlite", proposal_timeout_s=3.0,
        )

    async def start_node(self, node: SimNode) -> None:
        node.starting = True
        node.incarnation += 1
        mgr = self.shell.RaftManager(self._config(node), store=SimStore(self, node))
        node.disk = SimDisk(self, node)
        mgr._disk = node.disk
        mgr.transport = SimTransport(self, node, mgr._on_snapshot_result)
        node.mgr = mgr
        node.up = True
        try:
            await mgr.start()
        except BaseException:
            node.up = False
            node.mgr = None
            node.starting = False
            raise
        node.storage = mgr.storage
        core = mgr.node
        core.rng = random.Random(self.rng.getrandbits(64))  # the shell seeds it from the OS
        core._reset_randomized_timeout()
        ready = core.ready

        def observed_ready() -> Any:
            rd = ready()
            self.on_ready(node, rd)
            return rd

        core.ready = observed_ready
        advance = core.advance

        def observed_advance(rd: Any) -> None:
            advance(rd)
            self.on_advance(node, rd)

        core.advance = observed_advance
        node.starting = False
        if self.observer is not None:
            self.observer.started(self, node)
        self.log(f"start node {node.id}")

    async def crash(self, node: SimNode, why: str = "crash") -> None:
        """kill -9 ("crash"): what the disk executor has not finished is lost, nothing more leaves the node.
        A clean stop ("stop") lets the shell's stop() finish its writes (it records the commit index)."""
        if not node.up or node.mgr is None:
            return
        node.up = False  # the network drops what it sends and what is sent to it from now on
        node.incarnation += 1
        assert node.disk is not None
        node.disk.dead = why != "stop"
        self.log(f"{why} node {node.id}")
        self.paths[why] += 1
        await node.mgr.stop()
        node.disk.dead = True
        node.mgr = None

    # ------------------------------------------------------------------ network
    def _link_ok(self, src: int, dst: int) -> bool:
        return (src, dst) not in self.blocked

    def _delay(self) -> float:
        d = self.rng.uniform(0.0002, self.max_delay)
        if self.rng.random() < 0.01:
            d += self.rng.uniform(0.05, 0.5)  # a straggler
        return d

    def net_send(self, src: SimNode, addr: str, m: Message) -> None:
        if not src.up or self.rng.random() < self.p_drop or not self._link_ok(src.id, m.to):
            return
        from manager.transport import message_to_pb

        raw = message_to_pb(m).SerializeToString()
        self.loop.call_later(self._delay(), self._arrive, src.id, addr, raw, self._headers(src))

    @staticmethod
    def _headers(src: SimNode) -> tuple[str, str]:
        """What the sender's stream carries, as transport.Transport.metadata: (its address, its cluster id)."""
        t = src.mgr.transport if src.mgr is not None else None
        return (getattr(t, "advertise", ""), getattr(t, "cluster_id", "")) if t is not None else ("", "")

    def _arrive(self, src: int, addr: str, raw: bytes, headers: tuple[str, str] = ("", "")) -> None:
        from manager.transport import message_from_pb

        dst = self.by_addr.get(addr)
        if dst is None or not dst.up or dst.mgr is None or dst.mgr.node is None or not self._link_ok(src, dst.id):
            return
        m = message_from_pb(raft_pb2.RaftMessage.FromString(raw))
        self._admit(dst, m, Rpc.STEP, headers)

    @staticmethod
    def _stream(dst: SimNode, headers: tuple[str, str]) -> tuple[str, bool]:
        addr, cluster = headers
        return addr, bool(cluster and dst.mgr.transport.cluster_id == cluster)

    def _admit(self, dst: SimNode, m: Message, rpc: Rpc, headers: tuple[str, str] = ("", "")) -> bool:
        why = check_message(m, dst.id, rpc)
        if why is not None:
            self.fail("valid wire messages", f"node {dst.id} refused a message from correct node {m.from_}: {why}")
        if dst.mgr.member_error(m.from_, *self._stream(dst, headers)) is not None:
            return False
        try:
            dst.mgr.deliver([m])
        except InvariantViolation:
            raise
        return True

    def net_snapshot(self, t: SimTransport, addr: str, m: Message) -> None:
        from manager.transport import join_snapshot, split_snapshot

        src = t.node
        incarnation = src.incarnation
        chunks = [c.SerializeToString() for c in split_snapshot(m, chunk_bytes=4096)]
        headers = self._headers(src)

        def report(failed: bool) -> None:
            t.snap_busy.discard(m.to)
            if src.up and src.incarnation == incarnation:
                t.on_snapshot(m.to, failed)

        def arrive() -> None:
            dst = self.by_addr.get(addr)
            lost = self.rng.random() < self.p_drop
            if lost or dst is None or not dst.up or dst.mgr is None or dst.mgr.node is None or not self._link_ok(src.id, dst.id):
                self.loop.call_later(self._delay(), report, True)
                return
            msg = join_snapshot(raft_pb2.SnapshotChunk.FromString(c) for c in chunks)
            ok = self._admit(dst, msg, Rpc.SNAPSHOT, headers)
            self.paths["snapshot sent"] += ok
            self.loop.call_later(self._delay(), report, not ok)

        if not src.up or not self._link_ok(src.id, m.to):
            self.loop.call_later(self._delay() + 0.05, report, True)
            return
        self.loop.call_later(self._delay() * 3, arrive)

    async def net_propose(self, src: SimNode, addr: str, req: raft_pb2.ProposeRequest, timeout: float) -> raft_pb2.ProposeResponse:
        """The Propose RPC: request and answer each cross the network; a lost leg is a deadline exceeded."""
        deadline = self.loop.now + timeout

        async def lost() -> raft_pb2.ProposeResponse:
            await asyncio.sleep(max(0.0, deadline - self.loop.now))
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

        dst = self.by_addr.get(addr)
        if dst is None or self.rng.random() < self.p_drop or not self._link_ok(src.id, dst.id):
            return await lost()
        await asyncio.sleep(min(self._delay(), timeout))
        if not dst.up or dst.mgr is None or dst.mgr.node is None:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
        if self.loop.now >= deadline:
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
        mgr, incarnation = dst.mgr, dst.incarnation
        err = mgr.member_error(getattr(req, "from"), *self._stream(dst, self._headers(src)))
        if err is not None:
            raise rpc_error(grpc.StatusCode.FAILED_PRECONDITION, err)
        self.paths["proposal forwarded"] += 1
        try:
            resp = await asyncio.wait_for(mgr.propose_forwarded(raft_pb2.ProposeRequest.FromString(req.SerializeToString())),
                                          max(0.0, deadline - self.loop.now))
        except RaftError as e:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, str(e)) from None
        except asyncio.TimeoutError:
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded") from None
        if dst.incarnation != incarnation or not src.up:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset")
        if self.rng.random() < self.p_drop or not self._link_ok(dst.id, src.id):
            return await lost()
        await asyncio.sleep(self._delay())
        return raft_pb2.ProposeResponse.FromString(resp.SerializeToString())

    async def net_membership(self, addr: str, req: Any, timeout: float) -> Any:
        dst = self.by_addr.get(addr)
        await asyncio.sleep(self._delay())
        if dst is None or not dst.up or dst.mgr is None or dst.mgr.node is None:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
        return raft_pb2.MembershipResponse.FromString(dst.mgr.membership().SerializeToString())

    # ------------------------------------------------------------------ checks at the shell's boundaries
    def before_save(self, node: SimNode, hs: Any, entries: list[Any], snapshot: Any, compaction: Any) -> None:
        if self.observer is not None:
            self.observer.before_save(self, node, hs, entries, snapshot, compaction)

    def after_save(self, node: SimNode) -> None:
        if self.observer is not None:
            self.observer.after_save(self, node)

    def on_send(self, node: SimNode, m: Message) -> None:
        """What a message promises must be on this node's disk when it leaves (the SQLite storage's mirror
        changes only after its transaction committed)."""
        if self.observer is not None:
            self.observer.on_send(self, node, m)
        st = node.mgr.storage if node.mgr is not None else None
        if st is None:
            return
        if m.type == MessageType.VOTE_RESP and not m.reject:
            hs = st.hard_state()
            if hs.term < m.term or (hs.term == m.term and hs.vote != m.to):
                self.fail("vote durability", f"node {node.id} grants its vote in term {m.term} to {m.to}, but its disk says "
                                             f"term {hs.term} vote {hs.vote}")
        elif m.type == MessageType.APP_RESP and not m.reject:
            durable = max(st.last_index(), st.snapshot().meta.index)
            if m.index > durable:
                self.fail("append durability", f"node {node.id} acknowledges index {m.index}, but its disk ends at {durable}")

    def on_ready(self, node: SimNode, rd: Any) -> None:
        if self.failure is not None:
            self.fail(self.failure.invariant, self.failure.detail)
        core = node.mgr.node
        # election safety and leader completeness
        if core.state == StateRole.LEADER:
            seen = self.leaders.get(core.term)
            if seen is None:
                self.leaders[core.term] = node.id
                self.log(f"node {node.id} leads term {core.term}")
                for i, (term, _k, _d) in self.committed.items():
                    if self.commit_term[i] < core.term and i > core.log.snapshot_index() and core.log.term_or_none(i) != term:
                        self.fail("leader completeness", f"node {node.id} leads term {core.term} without entry {i} (term {term}) "
                                                         f"committed in term {self.commit_term[i]}")
            elif seen != node.id:
                self.fail("election safety", f"term {core.term} has two leaders: {seen} and {node.id}")
        # log matching over what is about to be persisted
        for e in rd.entries:
            key = (e.index, e.term)
            val = (core.log.term_or_none(e.index - 1), int(e.kind), e.data)
            known = self.entry_prev.setdefault(key, val)
            if known != val and known[0] is not None and val[0] is not None:
                self.fail("log matching", f"node {node.id} holds entry {key} with (prev term, kind, data) {val[:2]}, another log has {known[:2]}")
        if rd.snapshot is not None:
            self.paths["snapshot installed"] += 1
            meta = rd.snapshot.meta
            known = self.committed.get(meta.index)
            if known is not None and known[0] != meta.term:
                self.fail("state machine safety", f"node {node.id} installs a snapshot at {meta.index} of term {meta.term}; "
                                                  f"the entry committed there has term {known[0]}")

    def on_advance(self, node: SimNode, rd: Any) -> None:
        """rd is persisted and applied: its committed entries are the cluster's for good (a one-member leader
        counts an entry committed before its write; a crash then loses it unapplied, which is no violation)."""
        for e in rd.committed_entries:
            self._applied_entry(node, e.index, e.term, int(e.kind), e.data)

    def _applied_entry(self, node: SimNode, index: int, term: int, kind: int, data: bytes) -> None:
        """State machine safety over every applied entry (no-ops and membership included)."""
        val = (term, kind, data)
        known = self.committed.get(index)
        if known is None:
            self.committed[index] = val
            self.commit_term[index] = node.mgr.node.term
            if kind == EntryKind.CONF_CHANGE:
                self._conf_committed(index, ConfChange.decode(data))
        elif known != val:
            self.fail("state machine safety", f"node {node.id} applies {val[:2]} at {index}, another node applied {known[:2]}")

    def _conf_committed(self, index: int, cc: ConfChange) -> None:
        voters = list(self.voters_at(index - 1))
        if cc.op == ConfChangeOp.ADD and cc.node_id not in voters:
            voters.append(cc.node_id)
        elif cc.op == ConfChangeOp.REMOVE and cc.node_id in voters:
            voters.remove(cc.node_id)
            gone = self.nodes.get(cc.node_id)
            if gone is not None and not gone.removed:
                gone.removed = True
                # a leader that commits its own removal steps down: the others learn the commit only from their next
                # leader, which needs its vote; stopping it at once could leave two members waiting for each other
                gone.stop_at = self.loop.now + REMOVED_STOP_DELAY_S
                self.log(f"node {cc.node_id} removed at {index}")
        self.confs.append((index, tuple(sorted(voters))))

    def _durable_holders(self, index: int, term: int) -> set[int]:
        out = set()
        for n in self.nodes.values():
            st = n.storage
            if st is None:
                continue
            snap = st.snapshot().meta.index
            if index <= snap or (index <= st.last_index() and st.term(index) == term):
                out.add(n.id)
        return out

    def on_apply(self, node: SimNode, index: int, data: bytes) -> None:
        """A store entry is applied (a client may be answered): it must be on a quorum of disks."""
        if self.failure is not None:
            self.fail(self.failure.invariant, self.failure.detail)
        known = self.store_applied.setdefault(index, data)
        if known != data:
            self.fail("state machine safety", f"node {node.id} applies other data at {index} than another node applied")
        # the entries before it in this node's log are applied too (in this Ready, before advance() says so)
        core = node.mgr.node
        i = index - 1
        while i > core.log.snapshot_index() and i not in self.committed:
            i -= 1
        for e in core.log.slice(i + 1, index + 1) if i + 1 <= index else []:
            self._applied_entry(node, e.index, e.term, int(e.kind), e.data)
        entry = self.committed.get(index)
        if entry is None or entry[2] != data:
            self.fail("state machine safety", f"node {node.id} applies entry {index}, which is not the one its log holds")
        if self.observer is not None:
            self.observer.on_apply(self, node, index)
        holders = self._durable_holders(index, entry[0])
        # the entry was committed under the voters before the last membership change before it, or after it
        candidates = {self.voters_at(index - 1)}
        prior = [at for at, _ in self.confs if at < index]
        if prior:
            candidates.add(self.voters_at(prior[-1] - 1))
        if not any(len(holders & set(v)) >= quorum(len(v)) for v in candidates):
            self.fail("apply durability", f"node {node.id} applies entry {index} held on disk by {sorted(holders)} only "
                                          f"(voters {sorted(candidates)})")

    def on_restore(self, node: SimNode, data: bytes) -> None:
        """A snapshot's store must be the state the committed history gives at its index."""
        from manager.store.store import MemoryStore

        snap_store = node.mgr.store.inner if node.mgr is not None else None
        if snap_store is None:
            return
        ref = MemoryStore(clock=self.vtime.time)
        for i in sorted(k for k in self.store_applied if k <= snap_store.last_index):
            ref.apply(i, self.store_applied[i])
        self.paths["store restored"] += 1
        if ref.snapshot() != snap_store.snapshot():
            self.fail("state machine safety", f"node {node.id} restored a store snapshot at {snap_store.last_index} that differs "
                                              f"from the applied history")

    # ------------------------------------------------------------------ clients
    async def client(self, cid: int) -> None:
        with contextlib.suppress(InvariantViolation):  # recorded in self.failure: the guard ends the run
            await self._client(cid)

    async def _client(self, cid: int) -> None:
        from tests.support.linearizability import Kind, Op, Outcome
        from manager.store.errors import StoreError

        rng = self.rng
        seq = itertools.count(1)
        while not self.stop_clients:
            await asyncio.sleep(rng.uniform(0.0, 0.05))
            nodes = self.up_nodes()
            if not nodes:
                continue
            node = rng.choice(nodes)
            mgr = node.mgr
            key = rng.randrange(KEYS)
            invoke = self.loop.now
            if rng.random() < 0.6:
                v = f"c{cid}v{next(seq)}"
                name = f"k{key}-{v}"
                cfg = objects_pb2.Config(id=f"id-{name}", spec=objects_pb2.ConfigSpec(
                    annotations=objects_pb2.Annotations(name=name), data=b"x"))
                try:
                    await asyncio.wait_for(mgr.propose(lambda tx: tx.create("config", cfg)), CLIENT_TIMEOUT_S)
                except StoreError:
                    outcome = Outcome.FAILED
                except (RaftError, asyncio.TimeoutError, ConnectionError):
                    outcome = Outcome.UNKNOWN
                else:
                    outcome = Outcome.OK
                    self.acked.append(name)
                    if mgr.store.view().find_by_name("config", name) is None:
                        self.fail("acknowledged writes are applied", f"write {name} acknowledged by node {node.id} "
                                                                     f"is not in its store")
                self.ops.append(Op(cid, Kind.WRITE, key, v, invoke, self.loop.now, outcome))
                self.log(f"client {cid} write {name} via {node.id}: {outcome.value}")
            else:
                try:
                    value = await asyncio.wait_for(mgr.read(lambda view: latest(view, key)), CLIENT_TIMEOUT_S)
                except (RaftError, asyncio.TimeoutError, ConnectionError):
                    self.ops.append(Op(cid, Kind.READ, key, None, invoke, self.loop.now, Outcome.UNKNOWN))
                else:
                    self.ops.append(Op(cid, Kind.READ, key, value, invoke, self.loop.now, Outcome.OK))

    # ------------------------------------------------------------------ faults
    async def chaos(self) -> None:
        rng = self.rng
        while not self.healing:
            await asyncio.sleep(TICK_S)
            for n in list(self.nodes.values()):
                if not n.up and not n.removed and 0 <= n.restart_at <= self.loop.now and not n.starting:
                    n.restart_at = -1.0
                    await self.start_node(n)
            r = rng.random()
            live = [n for n in self.up_nodes() if not n.starting]
            if r < self.p_crash and live:
                victim = rng.choice(live)
                await self.crash(victim, "stop" if rng.random() < 0.3 else "crash")
                victim.restart_at = self.loop.now + rng.uniform(0.3, 4.0)
            elif r < self.p_crash + 0.02:
                self.partition()
                self.paths["partition"] += 1
            elif r < self.p_crash + 0.04:
                if self.blocked:
                    self.log("heal partitions")
                self.blocked.clear()
            elif r < self.p_crash + 0.055:
                self.tasks.append(asyncio.ensure_future(self.membership_change()))
            for n in list(self.nodes.values()):
                if n.removed and n.up and not n.starting and self.loop.now >= n.stop_at:
                    await self.crash(n, "stop removed")

    def partition(self) -> None:
        rng = self.rng
        ids = sorted(n.id for n in self.nodes.values() if not n.removed)
        if len(ids) < 2:
            return
        kind = rng.randrange(3)
        if kind == 0:
            x = rng.choice(ids)
            self.blocked |= {(x, y) for y in ids if y != x} | {(y, x) for y in ids if y != x}
            self.log(f"isolate node {x}")
        elif kind == 1:
            shuffled = ids[:]
            rng.shuffle(shuffled)
            cut = rng.randint(1, len(ids) - 1)
            a, b = shuffled[:cut], shuffled[cut:]
            self.blocked |= {(x, y) for x in a for y in b} | {(y, x) for x in a for y in b}
            self.log(f"partition {a} | {b}")
        else:
            x, y = rng.sample(ids, 2)
            self.blocked.add((x, y))
            self.log(f"link {x} -> {y} drops")

    async def membership_change(self) -> None:
        leader = self.leader()
        if leader is None or leader.starting:
            return
        mgr = leader.mgr
        voters = list(mgr.node.voters)
        try:
            if len(voters) < self.size or (len(voters) <= self.size and self.rng.random() < 0.5):
                nid = self.next_id
                self.next_id += 1
                node = self.add_sim_node(nid, join=True)
                await self.start_node(node)
                self.log(f"add node {nid} via {leader.id}")
                await mgr.add_member(nid, node.addr)
                self.paths["member added"] += 1
            elif len(voters) > 1:
                victim = self.rng.choice(voters)
                self.log(f"remove node {victim} via {leader.id}")
                await mgr.remove_member(victim)
                self.paths["member removed"] += 1
        except RaftError as e:
            self.log(f"membership change failed: {e}")

    def add_sim_node(self, nid: int, join: bool) -> SimNode:
        node = SimNode(nid, f"10.77.0.{nid}:2377", self.dir / f"m{nid}", join)
        self.nodes[nid] = node
        self.by_addr[node.addr] = node
        return node

    # ------------------------------------------------------------------ driving
    async def main(self) -> None:
        for i in self.founders:
            self.add_sim_node(i, join=False)
        await asyncio.gather(*(self.start_node(self.nodes[i]) for i in self.founders))
        clients = [asyncio.ensure_future(self.client(c)) for c in range(CLIENTS)]
        chaos = asyncio.ensure_future(self.chaos())
        await asyncio.sleep(CHAOS_S)
        # heal: no more faults, every member back, then a quiet cluster that answers every key
        self.healing = True
        await chaos
        self.stop_clients = True
        await asyncio.gather(*clients)
        for t in self.tasks:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(t, CLIENT_TIMEOUT_S)
        self.blocked.clear()
        self.p_drop = 0.0
        self.log("heal")
        for n in list(self.nodes.values()):
            if not n.up and not n.removed:
                await self.start_node(n)
        deadline = self.loop.now + HEAL_S
        while not self.quiet():
            if self.loop.now > deadline:
                for n in self.up_nodes():
                    c = n.mgr.node
                    self.log(f"node {n.id}: {c.state.name} term {c.term} leader {c.leader} commit {c.committed} applied "
                             f"{n.mgr.applied} last {c.log.last_index()} voters {c.voters}")
                self.fail("liveness", f"no quiet cluster {HEAL_S:.0f}s after healing")
            await asyncio.sleep(TICK_S)
        await self.final_reads()
        self.check_final()

    def quiet(self) -> bool:
        lead = self.leader()
        if lead is None:
            return False
        core = lead.mgr.node
        last = core.log.last_index()
        if core.committed != last or core.log.term_or_none(last) != core.term:
            return False
        for v in core.voters:
            n = self.nodes.get(v)
            if n is None or not n.up or n.mgr is None or n.mgr.node is None:
                return False
            c = n.mgr.node
            if c.term != core.term or c.committed != last or n.mgr.applied != last:
                return False
        return True

    async def final_reads(self) -> None:
        from tests.support.linearizability import Kind, Op, Outcome

        lead = self.leader()
        assert lead is not None
        for v in lead.mgr.node.voters:
            mgr = self.nodes[v].mgr
            for key in range(KEYS):
                invoke = self.loop.now
                value = await asyncio.wait_for(mgr.read(lambda view, key=key: latest(view, key)), CLIENT_TIMEOUT_S)
                self.ops.append(Op(-v, Kind.READ, key, value, invoke, self.loop.now, Outcome.OK))

    def check_final(self) -> None:
        from tests.support.linearizability import check

        lead = self.leader()
        assert lead is not None
        members = [self.nodes[v] for v in lead.mgr.node.voters]
        ref = members[0].mgr.store.inner.snapshot()
        for n in members[1:]:
            if n.mgr.store.inner.snapshot() != ref:
                self.fail("final agreement", f"nodes {members[0].id} and {n.id} hold different stores")
        view = lead.mgr.store.view()
        for name in self.acked:
            if view.find_by_name("config", name) is None:
                self.fail("acknowledged writes survive", f"acknowledged write {name} is not in the healed cluster's store")
        res = check(self.ops)
        if not res.ok:
            self.fail("linearizability", res.explain())

    def run(self) -> Result:
        raftnode = self.shell
        import manager.transport as transport_mod

        saved = (raftnode.time, transport_mod.open_channel, getattr(raftnode, "_request_seq", None))
        quiet = [logging.getLogger("manager"), logging.getLogger(raftnode.__name__)]
        levels = [q.level for q in quiet]
        if not self.verbose:
            for q in quiet:
                q.setLevel(logging.CRITICAL + 1)  # the shells log every fault the simulator makes
        raftnode.time = self.vtime
        transport_mod.open_channel = lambda addr, tls=None: FakeChannel(self, addr)
        if saved[2] is not None:
            raftnode._request_seq = itertools.count(1)
        try:
            self.loop.run_until_complete(self._guarded())
            return Result(self.seed, True, acked=len(self.acked), ops=len(self.ops), virtual_s=self.loop.now, trace=self.trace,
                          paths=self.paths)
        except InvariantViolation as e:
            return Result(self.seed, False, e.invariant, e.detail, len(self.acked), len(self.ops), self.loop.now, self.trace)
        except Exception as e:  # a crash of the shell is a failure of this seed too
            detail = f"{type(e).__name__}: {e}"
            if self.verbose:
                self.trace.append(traceback.format_exc())
            return Result(self.seed, False, "exception", detail, len(self.acked), len(self.ops), self.loop.now, self.trace)
        finally:
            self._shutdown()
            raftnode.time, transport_mod.open_channel = saved[0], saved[1]
            for q, lv in zip(quiet, levels):
                q.setLevel(lv)
            if saved[2] is not None:
                raftnode._request_seq = saved[2]
            if self._own_dir:
                shutil.rmtree(self.dir, ignore_errors=True)

    async def _guarded(self) -> None:
        main = asyncio.ensure_future(self.main())
        while not main.done():
            await asyncio.sleep(TICK_S)
            if self.failure is not None:
                main.cancel()
                self.fail(self.failure.invariant, self.failure.detail)
            for n in self.nodes.values():
                if n.mgr is not None and n.mgr.failure is not None:
                    if isinstance(n.mgr.failure, InvariantViolation):
                        raise n.mgr.failure
                    raise RuntimeError(f"node {n.id} stopped: {n.mgr.failure}")
        await main

    def _shutdown(self) -> None:
        """Close every manager's SQLite file; cancel what is left on the loop."""
        for n in self.nodes.values():
            if n.disk is not None:
                n.disk.dead = True
            if n.mgr is not None and n.mgr.storage is not None:
                with contextlib.suppress(Exception):
                    n.mgr.storage.close()
        with contextlib.suppress(Exception):
            pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
            for t in pending:
                t.cancel()
            if pending:
                self.loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        with contextlib.suppress(Exception):
            self.loop.close()


def latest(view: Any, key: int) -> str | None:
    """The register over configs (as tests/lab/test_manager_faults.py): the value of the last config of key in log order."""
    prefix = f"k{key}-"
    mine = [c for c in view.list("config") if c.spec.annotations.name.startswith(prefix)]
    if not mine:
        return None
    return max(mine, key=lambda c: c.meta.version.index).spec.annotations.name[len(prefix):]


def _scratch() -> str | None:
    """tmpfs when there is one: the simulation fsyncs thousands of times and a real disk would only add waiting."""
    shm = "/dev/shm"
    ok = os.path.isdir(shm) and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 256 << 20  # a container's is 64 MB
    return shm if ok else None


def run_seed(seed: int, nodes: int | None = None, shell: types.ModuleType | None = None, verbose: bool = False,
             observer: Any = None) -> Result:
    return ShellSim(seed, nodes, shell, verbose=verbose, observer=observer).run()


def main(argv: list[str] | None = None) -> int:
    from manager.raft.shellmutate import SHELL_MUTATIONS
    from manager.raft.sim import parse_seeds

    ap = argparse.ArgumentParser(prog="python -m manager.raft.shellsim", description=" ".join(__doc__.split("\n\n")[0].split()))
    ap.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-19"), help="N or START-END (inclusive)")
    ap.add_argument("--nodes", choices=["1", "3", "5", "mixed"], default="mixed")
    ap.add_argument("--mutation", choices=[m.name for m in SHELL_MUTATIONS],
                    help="run a copy of manager/raftnode.py with this shell bug in it (shellmutate.py)")
    ap.add_argument("--verbose", action="store_true", help="print the event trace of failing seeds")
    opts = ap.parse_args(argv)
    shell = None
    if opts.mutation:
        from manager.raft.shellmutate import mutant_shell

        shell = mutant_shell(opts.mutation)
    nodes = None if opts.nodes == "mixed" else int(opts.nodes)
    start = time.monotonic()
    failed = acked = 0
    paths: Counter[str] = Counter()
    for seed in opts.seeds:
        r = run_seed(seed, nodes, shell, opts.verbose)
        acked += r.acked
        paths += r.paths
        if not r.ok:
            failed += 1
            print(f"seed {seed}: FAIL {r.invariant}: {r.detail}", flush=True)
            for line in r.trace if opts.verbose else []:
                print(f"    {line}")
    took = time.monotonic() - start
    n = len(opts.seeds)
    print("exercised: " + ", ".join(f"{k} {v}" for k, v in sorted(paths.items())))
    print(f"{n} seeds, {failed} failed ({acked} acknowledged writes, {took:.1f}s, {n / took:.2f} seeds/s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
