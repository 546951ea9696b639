"""The manager's asyncio shell around the sans-IO Raft core: ticks, the Ready loop (persist, send, apply), proposals and reads.
Drives manager/raft/core.py with SQLite storage (raft/sqlite_storage.py), the replicated store (store/) and the gRPC transport."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from manager.membership import (
    BOOK_FILE,
    ClusterInfo,
    SnapshotFormatError,
    decode_started,
    encode_started,
    founding_cluster_id,
    load_book,
    pack_snapshot,
    save_book,
    unpack_snapshot,
)
from manager.raft.core import Config, ConfChangeError, NotLeader, ProposalDropped, RaftError, RaftNode, Ready, StateRole
from manager.raft.forcenew import ForceNewClusterError, force_new_cluster, record_commit
from manager.raft.messages import ConfChange, ConfChangeOp, Entry, EntryKind, HardState, Message, MessageType, Snapshot
from manager.raft.storage import MemoryStorage
from manager.raft.wirecheck import address_error
from manager.store.errors import StoreError, too_many_bytes
from manager.store.store import MAX_PROPOSAL_BYTES
from manager.transport import RaftServicer, TLSFiles, Transport
from proto import raft_pb2

log = logging.getLogger(__name__)
T = TypeVar("T")


class PersistError(RaftError):
    """The raft state could not be written: the manager stops (it must not acknowledge what it did not save)."""


class AlreadyBootstrapped(RaftError):
    """This member has no data but its cluster knows it as started: it was wiped (etcd's refusal)."""


class Unavailable(RaftError):
    """The operation could not be done now (no leader, leadership changed, timeout); safe to retry.
    A proposal that failed this way may or may not have been committed."""


@dataclass(slots=True)
class ManagerConfig:
    node_id: int
    listen: str  # host:port of this manager's gRPC server (raft + control API)
    peers: dict[int, str]  # raft id -> address, this node included
    data_dir: Path
    join: bool = False  # start empty and wait for the leader's snapshot instead of bootstrapping
    tick_s: float = 0.1  # DESIGN §6
    election_tick: int = 10
    heartbeat_tick: int = 1
    snapshot_every: int = 10_000
    snapshot_keep: int = 500  # entries kept behind a snapshot so slow followers need no snapshot
    storage: str = "sqlite"  # or "memory" (nothing survives a restart)
    tls: TLSFiles | None = None
    proposal_timeout_s: float = 10.0
    # a leader's proposals wait while its uncommitted ones hold this many bytes (-1: never); 0: one batch in flight
    max_uncommitted_bytes: int = 0
    client_listen: str = ""  # host:port for the control API's front-end processes ("": none, listen serves it alone)
    frontends: int = 1  # front-end processes on client_listen (SO_REUSEPORT), each handing calls over a unix socket
    event_loop: str = "asyncio"  # the front-ends' event loop too
    force_new_cluster: bool = False  # start from this member's data as a one-member cluster (raft/forcenew.py)


class MemoryDurable:
    """MemoryStorage with the SQLite storage's write interface, for tests without a disk."""

    def __init__(self) -> None:
        self.inner = MemoryStorage()
        self.fsyncs = 0
        self.entries_written = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def is_empty(self) -> bool:
        return self.inner.last_index() == 0 and self.inner.hard_state() == HardState()

    def describe(self) -> str:
        return "memory storage"

    def bootstrap(self, voters: list[int], data: bytes = b"") -> None:
        self.inner = MemoryStorage.bootstrap(voters, data)

    def save_ready(self, hard_state: HardState | None, entries: list, snapshot: Snapshot | None, compaction: Snapshot | None) -> None:
        if snapshot is not None:
            self.inner.apply_snapshot(snapshot)
        if entries:
            self.inner.append(entries)
        if hard_state is not None:
            self.inner.set_hard_state(hard_state)
        if compaction is not None:
            self.inner.compact(compaction)
        self.fsyncs += 1
        self.entries_written += len(entries)

    def close(self) -> None:
        pass


def open_storage(cfg: ManagerConfig) -> Any:
    if cfg.storage == "memory":
        return MemoryDurable()
    if cfg.storage != "sqlite":
        raise ValueError(f"invalid storage {cfg.storage!r}: expected sqlite or memory")
    from manager.raft.sqlite_storage import SQLiteStorage

    return SQLiteStorage.open(cfg.data_dir / "raft.db")


def new_store() -> Any:
    from manager.store.store import MemoryStore

    return MemoryStore()


@dataclass(slots=True)
class _Proposal:
    rid: str
    data: bytes
    future: asyncio.Future[tuple[int, StoreError | None]]
    deadline: float  # time.monotonic(); the ticker fails it after this
    index: int = 0
    term: int = 0


@dataclass(slots=True)
class Stats:
    readies: int = 0
    proposals: int = 0
    applied_entries: int = 0
    snapshots_made: int = 0
    snapshots_restored: int = 0
    persist_s: float = 0.0
    started: float = field(default_factory=time.monotonic)


# what a leader may send before its own write of the same Ready is done (see _send_before_persist)
_EARLY_TYPES = frozenset({MessageType.APP, MessageType.HEARTBEAT})

_BOOT = os.urandom(8).hex()  # request ids must not repeat across restarts: a random prefix per process
_request_seq = itertools.count(1)


def new_request_id(node_id: int) -> str:
    return f"{node_id}-{_BOOT}-{next(_request_seq)}"


class RaftManager:
    """One manager: owns the Raft core, its storage, the store and the transport.

    Every call into the core happens on the event loop and never while a Ready is being persisted (the
    storage's in-memory mirror changes in the disk thread then): inputs queue in an inbox that the
    Ready loop drains between persists. That is the group commit: whatever arrives during one fsync
    goes into the next Ready, as one transaction. Two rules make the batches bigger and the round shorter:
    a leader holds new proposals while its last batch is uncommitted (max_uncommitted_bytes, _may_flush),
    and it sends its appends while it writes them itself (_send_before_persist); acknowledgements are
    stepped only after that write, so its own entries count for commit only once on its disk."""

    def __init__(self, cfg: ManagerConfig, store: Any | None = None) -> None:
        self.cfg = cfg
        self.id = cfg.node_id
        self.store = store if store is not None else new_store()
        self.storage: Any = None
        self.node: RaftNode | None = None
        self.transport = Transport(cfg.node_id, {}, cfg.tls, on_snapshot=self._on_snapshot_result)
        self.servicer = RaftServicer(self)
        self.stats = Stats()
        self.applied = 0
        self._inbox: list[Callable[[], None]] = []
        self._msgs: list[Message] = []  # from peers, stepped at the next safe point
        self._proposals: list[_Proposal] = []  # local proposals, appended together as one batch
        self._uncommitted: deque[tuple[int, int]] = deque()  # (last index, bytes) of each batch this leader appended
        self._uncommitted_bytes = 0
        self._wake = asyncio.Event()
        self._disk = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"raft-disk-{self.id}")
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: dict[str, _Proposal] = {}  # request id -> proposal made on this node as leader
        self._by_index: dict[int, str] = {}  # log index -> request id proposed there by this leader
        self._conf_waits: dict[int, tuple[int, asyncio.Future[None]]] = {}  # index -> (term, future)
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._applied_waits: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._leader_term: int | None = None  # the term we lead in, None when not leading
        self._last_snapshot_index = 0
        self._held_snapshot: tuple[int, bytes] | None = None
        self._saved_hs: HardState | None = None  # the hard state last written
        self._unsaved_hs: HardState | None = None  # newer, differing only in commit: written with the next Ready
        self._leadership_listeners: list[Callable[[bool, int], None]] = []
        self._leader_listeners: list[Callable[[int], None]] = []  # on_leader_change
        self._leader_seen = 0
        self.info = ClusterInfo()  # cluster id and member addresses, from the snapshot and committed entries
        self.invalid_snapshots = 0
        self._lost_logged: dict[int, int] = {}  # member -> the match it was reported as lost at
        self.failure: BaseException | None = None
        self.stopped = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle
    @property
    def tick_s(self) -> float:
        return self.cfg.tick_s

    @property
    def tls(self) -> Any:
        return self.cfg.tls

    async def start(self) -> None:
        cfg = self.cfg
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        db = cfg.data_dir / "raft.db"
        existed = db.exists()
        self.storage = await loop.run_in_executor(self._disk, open_storage, cfg)
        if self.storage.is_empty() or cfg.force_new_cluster:
            try:
                if cfg.force_new_cluster:
                    await self._force_new_cluster()
                else:
                    await self._refuse_if_bootstrapped()
            except (AlreadyBootstrapped, ForceNewClusterError):
                await loop.run_in_executor(self._disk, self.storage.close)
                self.storage = None
                if not existed and cfg.storage == "sqlite":  # leave the data dir as we found it
                    for leftover in (db, db.with_name("raft.db-wal"), db.with_name("raft.db-shm")):
                        leftover.unlink(missing_ok=True)
                raise
        if self.storage.is_empty() and not cfg.join:
            # the founders' addresses (the same --peers on every founder) go into the bootstrap snapshot
            founding = ClusterInfo(founding_cluster_id(cfg.peers), dict(cfg.peers))
            data = pack_snapshot(founding, self.store.snapshot())
            await loop.run_in_executor(self._disk, self.storage.bootstrap, sorted(cfg.peers), data)
        self._saved_hs = self.storage.initial_state()[0]
        snap = self.storage.snapshot()
        info, store_data = unpack_snapshot(snap.data)
        if store_data:
            self.store.restore(store_data)
        self.applied = self._last_snapshot_index = snap.meta.index
        self._load_info(info, snap.meta.index)
        rcfg = Config(election_tick=cfg.election_tick, heartbeat_tick=cfg.heartbeat_tick)
        # seeded from the OS: restarts must not replay the same election timeouts
        self.node = RaftNode(self.id, self.storage, rcfg, random.Random(int.from_bytes(os.urandom(8), "big")))
        self._tasks = [
            asyncio.create_task(self._ready_loop(), name=f"raft-ready-{self.id}"),
            asyncio.create_task(self._ticker(), name=f"raft-tick-{self.id}"),
            asyncio.create_task(self._publish_started(), name=f"raft-started-{self.id}"),
        ]
        self._wake.set()

    async def _refuse_if_bootstrapped(self) -> None:
        """Before an empty member bootstraps (or waits to join): if a peer's cluster already counts this id
        as started, this member lost its data; rejoining as a founder would leave the leader sending it
        entries it cannot have. Unreachable peers say nothing (all founders may be starting together)."""
        from manager.transport import open_channel

        async def ask(addr: str) -> raft_pb2.MembershipResponse | None:
            channel = open_channel(addr, self.cfg.tls)
            try:
                call = channel.unary_unary("/shoal.v1.Raft/Membership", request_serializer=lambda r: r.SerializeToString(),
                                           response_deserializer=raft_pb2.MembershipResponse.FromString)
                req = raft_pb2.MembershipRequest()
                setattr(req, "from", self.id)
                return await call(req, timeout=2.0)
            except grpc.aio.AioRpcError:
                return None
            finally:
                await channel.close()

        peers = {nid: addr for nid, addr in self.cfg.peers.items() if nid != self.id}
        answers = await asyncio.gather(*(ask(a) for a in peers.values()))
        for nid, resp in zip(peers, answers):
            if resp is not None and self.id in resp.started:
                raise AlreadyBootstrapped(
                    f"member {self.id} has already been bootstrapped: cluster {resp.cluster_id} (asked member {nid}) "
                    f"knows it as started, but {self.cfg.data_dir} holds no raft data; remove member {self.id} "
                    f"from the cluster and add this manager back under a new id with --join (or, if the cluster "
                    f"lost its quorum for good, restart a surviving member with --force-new-cluster)"
                )

    async def _force_new_cluster(self) -> None:
        """Before the core reads the log: rewrite it into a one-member cluster's (uncommitted entries dropped,
        every other member removed by a committed entry)."""
        forced = await asyncio.get_running_loop().run_in_executor(self._disk, force_new_cluster, self.storage, self.id)
        log.warning("raft %d: forced a new one-member cluster: kept the log up to %d, dropped %d uncommitted entries, "
                    "removed members %s", self.id, forced.kept, forced.dropped, list(forced.removed))

    async def _publish_started(self) -> None:
        """Record in the log that this member runs with its data (once; retried until it commits)."""
        while self.id not in self.info.started:
            rid = new_request_id(self.id)
            try:
                await self.propose_data(encode_started(self.id, rid), rid)
            except (RaftError, StoreError) as e:
                log.info("raft %d: start not published yet: %s", self.id, e)
                await asyncio.sleep(self.cfg.tick_s * self.cfg.election_tick)

    def membership(self) -> raft_pb2.MembershipResponse:
        voters = self.node.voters if self.node is not None else []
        return raft_pb2.MembershipResponse(cluster_id=self.info.cluster_id, voters=voters, started=sorted(self.info.started))

    @property
    def cluster_id(self) -> str:
        return self.info.cluster_id

    def _load_info(self, from_snapshot: ClusterInfo | None, snap_index: int) -> None:
        """The address book at start: the book file if it is newer than the snapshot (it is written as
        membership entries apply; replaying them again is harmless), else the snapshot's. A member that
        has neither yet (it joins, its snapshot has not come) uses the operator's --peers to answer the leader."""
        book = load_book(self.cfg.data_dir)
        if book is not None and (from_snapshot is None or book[0] >= snap_index):
            index, info = book
        elif from_snapshot is not None:
            index, info = snap_index, from_snapshot
        else:
            index, info = 0, ClusterInfo("", dict(self.cfg.peers))
        info.members.setdefault(self.id, self.cfg.listen)
        self._set_info(info, index)

    def _set_info(self, info: ClusterInfo, index: int) -> None:
        """Adopt the book of a snapshot or of a committed membership change, and keep it on disk."""
        for nid in [n for n in self.transport.peers if n not in info.members]:
            self.transport.remove_peer(nid)
        for nid, addr in info.members.items():
            if nid != self.id:
                self.transport.set_peer(nid, addr)
        self.info = info
        self.transport.cluster_id = info.cluster_id
        self.transport.advertise = info.members.get(self.id, "")
        if self.cfg.storage != "memory":
            try:
                save_book(self.cfg.data_dir, index, info)
            except OSError as e:  # a full disk here must stop the node as a failed raft write does, naming the file
                raise PersistError(f"could not persist raft state: cluster book {self.cfg.data_dir / BOOK_FILE}: {e}") from e

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._fail_all(Unavailable("raft manager stopped"))
        await self.transport.close()
        if self.storage is not None:
            if self.node is not None and self.failure is None:
                # a commit index alone is written with the next Ready only: a clean stop records it, so that
                # --force-new-cluster (which drops what is past it) keeps every entry known committed here
                try:
                    await asyncio.get_running_loop().run_in_executor(self._disk, record_commit, self.storage, self.node)
                except Exception as e:  # the log is whole without it: only --force-new-cluster would keep less
                    log.warning("raft %d: commit index not recorded at stop: %s", self.id, e)
            await asyncio.get_running_loop().run_in_executor(self._disk, self.storage.close)
        self._disk.shutdown(wait=True)
        self.stopped.set()

    # ------------------------------------------------------------------ status
    @property
    def leader_id(self) -> int | None:
        return self.node.leader if self.node else None

    @property
    def is_leader(self) -> bool:
        return self.node is not None and self.node.state == StateRole.LEADER

    def leader_addr(self) -> str:
        lid = self.leader_id
        return self.transport.peers.get(lid, "") if lid else ""

    def status(self) -> dict[str, Any]:
        n = self.node
        assert n is not None
        return {
            "node_id": self.id,
            "leader_id": n.leader or 0,
            "leader_addr": self.leader_addr(),
            "term": n.term,
            "role": n.state.name.lower(),
            "commit": n.committed,
            "applied": self.applied,
            "voters": list(n.voters),
            "fsyncs": getattr(self.storage, "fsyncs", 0),
            "entries_written": getattr(self.storage, "entries_written", 0),
            "readies": self.stats.readies,
            "storage": self.cfg.storage,
            "invalid_messages": self.servicer.invalid + self.invalid_snapshots,
        }

    # ------------------------------------------------------------------ the loop
    def _call(self, fn: Callable[[], None]) -> None:
        """Run fn against the core at the next safe point of the Ready loop."""
        self._inbox.append(fn)
        self._wake.set()

    def _drain_inbox(self) -> None:
        node = self.node
        assert node is not None
        while self._inbox or self._msgs or (self._proposals and self._may_flush()):
            if self._msgs:
                msgs, self._msgs = self._msgs, []
                for m in msgs:
                    try:
                        node.step(m)
                    except Exception:  # one bad input must not stop the node
                        log.exception("raft %d: message %s from %d failed", self.id, m.type.name, m.from_)
            if self._inbox:
                batch, self._inbox = self._inbox, []
                for fn in batch:
                    try:
                        fn()
                    except Exception:  # one bad input must not stop the node
                        log.exception("raft %d: input failed", self.id)
            if self._proposals and self._may_flush():
                self._flush_proposals()

    def _may_flush(self) -> bool:
        """Backpressure: while this leader's uncommitted proposals hold max_uncommitted_bytes or more, new ones
        wait in the queue and go as one batch when the commit index moves (bigger batches: fewer fsyncs, appends
        and acknowledgements per write on every member). A non-leader flushes at once (the core refuses)."""
        cap = self.cfg.max_uncommitted_bytes
        if cap < 0:
            return True
        node = self.node
        assert node is not None
        if node.state != StateRole.LEADER:
            return True
        inflight = self._uncommitted
        while inflight and inflight[0][0] <= node.committed:
            self._uncommitted_bytes -= inflight.popleft()[1]
        return not inflight or self._uncommitted_bytes < cap

    def _flush_proposals(self) -> None:
        """Append every queued proposal as one batch: one append message per follower and one fsync for all."""
        node = self.node
        assert node is not None
        queued, self._proposals = self._proposals, []
        batch: list[_Proposal] = []
        rids: set[str] = set()
        for p in queued:
            if p.future.done():
                continue  # timed out while queued
            if p.rid in self._pending or p.rid in rids:
                p.future.set_exception(Unavailable(f"request {p.rid} is already in flight"))
                continue
            rids.add(p.rid)
            batch.append(p)
        if not batch:
            return
        try:
            first, term = node.propose_batch([p.data for p in batch])
        except (NotLeader, ProposalDropped) as e:
            err = e if isinstance(e, NotLeader) else Unavailable(str(e))
            for p in batch:
                p.future.set_exception(err)
            return
        for i, p in enumerate(batch):
            p.index, p.term = first + i, term
            self._pending[p.rid] = p
            self._by_index[p.index] = p.rid
        size = sum(len(p.data) for p in batch)
        self._uncommitted.append((first + len(batch) - 1, size))
        self._uncommitted_bytes += size
        self.stats.proposals += len(batch)

    def _expire_proposals(self) -> None:
        """Fail proposals past their deadline (checked every tick: cheaper than a timer per proposal)."""
        now = time.monotonic()
        err = Unavailable("proposal timed out: outcome unknown")
        for p in self._proposals:
            if p.deadline <= now and not p.future.done():
                p.future.set_exception(err)
        for rid in [rid for rid, p in self._pending.items() if p.deadline <= now]:
            self._fail_request(rid, err)

    async def _ticker(self) -> None:
        assert self.node is not None
        node = self.node
        while True:
            await asyncio.sleep(self.cfg.tick_s)
            self._call(node.tick)
            if self._pending or self._proposals:
                self._expire_proposals()

    async def _ready_loop(self) -> None:
        try:
            await self._ready_loop_inner()
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            # a storage failure: stop acknowledging anything, like etcd's panic
            if isinstance(e, PersistError):
                log.error("raft %d: stopping: %s", self.id, e)
            else:
                log.exception("raft %d: ready loop failed", self.id)
            self.failure = e
            if self._leader_term is not None:
                self._notify_leadership(False, self._leader_term)
                self._leader_term = None
            self._fail_all(Unavailable(f"raft manager {self.id} failed: {e}"))
            self.stopped.set()

    async def _ready_loop_inner(self) -> None:
        node = self.node
        assert node is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            self._drain_inbox()
            self._track_leadership()
            while node.has_ready():
                rd = node.ready()
                self.stats.readies += 1
                hs = self._hard_state_to_save(rd)
                later = rd.committed_entries
                outgoing = rd.messages
                if hs is not None or rd.entries or rd.snapshot is not None or rd.compaction is not None:
                    outgoing = self._send_before_persist(rd, hs)
                    # Committed entries already in our stable log need not wait for this write (it only
                    # holds newer entries): applying them first answers their clients one fsync sooner.
                    early = self._stable_prefix(rd)
                    if early:
                        self._apply_entries(early)
                        later = later[len(early):]
                    t0 = time.perf_counter()
                    try:
                        await loop.run_in_executor(self._disk, self.storage.save_ready, hs, rd.entries, rd.snapshot, rd.compaction)
                    except Exception as e:
                        where = getattr(self.storage, "describe", lambda: "raft storage")()
                        cause = str(e) if where in str(e) else f"{where}: {type(e).__name__}: {e}"
                        raise PersistError(f"could not persist raft state: {cause}") from e
                    if rd.snapshot is not None:
                        # before the reply to the leader goes out: we must be able to address it
                        info, _ = unpack_snapshot(rd.snapshot.data)
                        if info is not None:
                            self._set_info(info, rd.snapshot.meta.index)
                    self._saved_hs = hs or self._saved_hs
                    self._unsaved_hs = None
                    self.stats.persist_s += time.perf_counter() - t0
                self.transport.send(outgoing)
                self._apply(rd, later)
                node.advance(rd)
                self._after_advance(rd)
                self._drain_inbox()
                self._track_leadership()

    def _send_before_persist(self, rd: Ready, hs: HardState | None) -> list[Message]:
        """A leader sends its appends and heartbeats while it writes its own log (Raft thesis §10.2.1, as
        etcd does): followers persist in parallel with it. Its own entries still count for commit only once
        written: the core is not stepped (no acknowledgement is counted) until this Ready's write is done.
        Only when the term and vote to be written are the ones already on disk (a message of a term must
        never leave before that term is saved); everything else waits for the write. Returns the rest."""
        saved = self._saved_hs
        if rd.role != StateRole.LEADER or rd.snapshot is not None or not rd.messages or saved is None:
            return rd.messages
        if hs is not None and (hs.term, hs.vote) != (saved.term, saved.vote):
            return rd.messages
        early = [m for m in rd.messages if m.type in _EARLY_TYPES and m.term == saved.term]
        if not early:
            return rd.messages
        self.transport.send(early)
        return [m for m in rd.messages if not (m.type in _EARLY_TYPES and m.term == saved.term)]

    def _hard_state_to_save(self, rd: Ready) -> HardState | None:
        """The hard state to write with this Ready. A change of the commit index alone is not written
        on its own (commitIndex is volatile state in Raft: a restarted node learns it again); it rides
        along with the next write, so the leader spends no fsync just to record a commit."""
        hs = rd.hard_state or self._unsaved_hs
        if hs is None:
            return None
        saved = self._saved_hs
        alone = not rd.entries and rd.snapshot is None and rd.compaction is None
        if alone and saved is not None and (hs.term, hs.vote) == (saved.term, saved.vote):
            self._unsaved_hs = hs
            return None
        return hs

    def _stable_prefix(self, rd: Ready) -> list[Entry]:
        """The leading committed entries of rd that are already persisted and that this Ready's write does not
        touch (no snapshot, no compaction, new entries only after them)."""
        committed = rd.committed_entries
        if not committed or rd.snapshot is not None or rd.compaction is not None:
            return []
        stable = self.storage.last_index()
        if rd.entries:
            stable = min(stable, rd.entries[0].index - 1)
        if committed[0].index > stable:
            return []
        if committed[-1].index <= stable:
            return committed
        return committed[: stable - committed[0].index + 1]

    def _apply(self, rd: Ready, entries: list[Entry]) -> None:
        """Apply rd's snapshot, the committed entries not applied yet (`entries`), and its read states."""
        node = self.node
        assert node is not None
        if rd.snapshot is not None and rd.snapshot.meta.index > self.applied:
            self.store.restore(unpack_snapshot(rd.snapshot.data)[1])
            self.applied = rd.snapshot.meta.index
            self.stats.snapshots_restored += 1
            # proposals this node made at or below the snapshot: their outcome is unknown here
            for idx in [i for i in self._by_index if i <= self.applied]:
                self._fail_request(self._by_index.pop(idx), Unavailable("proposal dropped: replaced by a leader snapshot"))
        self._apply_entries(entries)
        for rs in rd.read_states:
            fut = self._reads.pop(rs.ctx, None)
            if fut is not None and not fut.done():
                fut.set_result(rs.index)
        self._track_leadership()
        self._release_applied_waits()

    def _apply_entries(self, entries: list[Entry]) -> None:
        for e in entries:
            if e.index <= self.applied:
                continue
            rid = self._by_index.pop(e.index, None)
            applied_rid = None
            started = decode_started(e.data) if e.kind == EntryKind.NORMAL and e.data[:1] == b"\x00" else None
            if started is not None:
                applied_rid = self._apply_started(e.index, *started)
            elif e.kind == EntryKind.NORMAL and e.data:
                try:
                    res = self.store.apply(e.index, e.data)
                except Exception as ex:  # a proposal the store cannot decode: skip it, everywhere alike
                    log.error("raft %d: entry %d not applied: %s", self.id, e.index, ex)
                else:
                    applied_rid = res.request_id
                    prop = self._pending.pop(res.request_id, None)
                    if prop is not None and not prop.future.done():
                        prop.future.set_result((e.index, res.error))
            if rid is not None and rid != applied_rid:
                self._fail_request(rid, Unavailable("proposal dropped: leadership changed"))
            if e.kind == EntryKind.CONF_CHANGE:
                self._apply_membership(e)
            waiter = self._conf_waits.pop(e.index, None)
            if waiter is not None and not waiter[1].done():
                if e.kind == EntryKind.CONF_CHANGE and e.term == waiter[0]:
                    waiter[1].set_result(None)
                else:
                    waiter[1].set_exception(Unavailable("membership change dropped: leadership changed"))
            self.applied = e.index
            self.stats.applied_entries += 1
        if entries:
            self._release_applied_waits()

    def _apply_started(self, index: int, node_id: int, rid: str) -> str:
        if node_id not in self.info.started:
            info = self.info
            self._set_info(ClusterInfo(info.cluster_id, info.members, info.started | {node_id}), index)
        prop = self._pending.pop(rid, None)
        if prop is not None and not prop.future.done():
            prop.future.set_result((index, None))
        return rid

    def _apply_membership(self, e: Entry) -> None:
        """The only way an address changes: a committed ADD carries it, a committed REMOVE drops it."""
        try:
            cc = ConfChange.decode(e.data)
        except ValueError:
            log.error("raft %d: membership entry %d unreadable: %r", self.id, e.index, e.data[:64])
            return
        members = dict(self.info.members)
        if cc.op == ConfChangeOp.ADD and cc.addr:
            members[cc.node_id] = cc.addr
        elif cc.op == ConfChangeOp.REMOVE and cc.node_id != self.id:
            members.pop(cc.node_id, None)
        else:
            return
        if members != self.info.members:
            self._set_info(ClusterInfo(self.info.cluster_id, members, self.info.started), e.index)

    def on_leadership(self, listener: Callable[[bool, int], None]) -> None:
        """listener(True, term) when this node becomes leader, listener(False, term) when it stops leading."""
        self._leadership_listeners.append(listener)

    def on_leader_change(self, listener: Callable[[int], None]) -> None:
        """listener(leader_id) each time the known leader becomes a member other than the last one known (an
        unknown leader in between is no change); checked where the Ready loop runs, so nothing polls for it."""
        self._leader_listeners.append(listener)

    def _track_leadership(self) -> None:
        node = self.node
        assert node is not None
        lead = node.leader or 0
        if lead and lead != self._leader_seen:
            self._leader_seen = lead
            for seen in self._leader_listeners:
                try:
                    seen(lead)
                except Exception:  # a listener's bug must not stop the raft loop
                    log.exception("raft %d: leader listener failed", self.id)
        leading = node.term if node.state == StateRole.LEADER else None
        if leading != self._leader_term:
            if self._leader_term is not None:
                self._notify_leadership(False, self._leader_term)
            if leading is not None:
                self._notify_leadership(True, leading)
        if leading != self._leader_term:
            self._uncommitted.clear()  # a new term: what the last one appended is no longer ours to count
            self._uncommitted_bytes = 0
        if self._leader_term is not None and leading != self._leader_term:
            # proposals of our term may still commit under the next leader, or be overwritten: unknown
            err = Unavailable("proposal dropped: leadership changed")
            for rid in list(self._pending):
                self._fail_request(rid, err)
            self._by_index.clear()
            for idx, (_term, fut) in list(self._conf_waits.items()):
                if not fut.done():
                    fut.set_exception(Unavailable("membership change dropped: leadership changed"))
            self._conf_waits.clear()
        self._leader_term = leading

    def _notify_leadership(self, leader: bool, term: int) -> None:
        for listener in self._leadership_listeners:
            try:
                listener(leader, term)
            except Exception:  # a listener's bug must not stop the raft loop
                log.exception("raft %d: leadership listener failed", self.id)

    def _after_advance(self, rd: Ready) -> None:
        """Compaction: take the store's snapshot every `snapshot_every` entries, but hand it to the core
        only `snapshot_keep` entries later, so the log keeps that many entries behind the snapshot
        for followers that lag a little (they then need no snapshot)."""
        node = self.node
        assert node is not None
        every, keep = self.cfg.snapshot_every, self.cfg.snapshot_keep
        if every <= 0 or self.applied != node.applied:
            return
        if self._held_snapshot is None:
            if self.applied - self._last_snapshot_index >= max(1, every - keep):
                self._held_snapshot = (self.applied, pack_snapshot(self.info, self.store.snapshot()))
        elif self.applied - self._held_snapshot[0] >= keep:
            index, data = self._held_snapshot
            self._held_snapshot = None
            if index > node.log.snapshot_index():
                node.compact(index, data)
                self.stats.snapshots_made += 1
                self._wake.set()
            self._last_snapshot_index = index

    def _fail_request(self, rid: str, err: BaseException) -> None:
        prop = self._pending.pop(rid, None)
        if prop is not None and not prop.future.done():
            prop.future.set_exception(err)

    def _fail_all(self, err: BaseException) -> None:
        queued, self._proposals = self._proposals, []
        for p in queued:
            if not p.future.done():
                p.future.set_exception(err)
        for rid in list(self._pending):
            self._fail_request(rid, err)
        self._by_index.clear()
        for _t, fut in self._conf_waits.values():
            if not fut.done():
                fut.set_exception(err)
        self._conf_waits.clear()
        for fut in self._reads.values():
            if not fut.done():
                fut.set_exception(err)
        self._reads.clear()
        for _i, _s, fut in self._applied_waits:
            if not fut.done():
                fut.set_exception(err)
        self._applied_waits = []

    def _release_applied_waits(self) -> None:
        w = self._applied_waits
        while w and w[0][0] <= self.applied:
            _i, _s, fut = heapq.heappop(w)
            if not fut.done():
                fut.set_result(None)

    async def wait_applied(self, index: int, timeout: float) -> None:
        if self.applied >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._applied_waits, (index, next(self._seq), fut))
        try:
            await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            raise Unavailable(f"timed out waiting for index {index} to be applied (applied {self.applied})") from None

    def _on_snapshot_result(self, peer: int, failed: bool) -> None:
        self._call(lambda: self.node.report_snapshot(peer, failed))  # type: ignore[union-attr]

    # ------------------------------------------------------------------ RaftHost (transport side)
    @property
    def node_id(self) -> int:
        return self.id

    def member_error(self, sender: int, reply_addr: str = "", same_cluster: bool = False) -> str | None:
        """None: step messages from sender. A sender this member does not know yet but whose stream names our
        cluster is a member added by a commit we have not applied (etcd accepts any sender not removed): we take
        its messages and, so that our answers reach it, its advertised address as a reply path until the
        committed membership says more (etcd's AddRemote). Without that, a member that missed the addition
        can never catch up once the added member leads."""
        node = self.node
        if node is None:
            return "raft member is starting"
        if sender in node.removed:
            return f"unknown raft member {sender}: it was removed from the raft"
        if sender in node.voters or sender in self.transport.peers:
            return None
        if same_cluster and self.info.cluster_id:
            if reply_addr:
                self.transport.set_peer(sender, reply_addr)
            return None
        return f"unknown raft member {sender}"

    def deliver(self, msgs: list[Message]) -> None:
        for m in msgs:
            if m.type == MessageType.APP_RESP and m.reject:
                self._check_lost_log(m)
            if m.type == MessageType.SNAP and m.snapshot is not None:
                why = self._snapshot_data_error(m.snapshot.data)
                if why is not None:
                    self.invalid_snapshots += 1
                    log.warning("raft %d: dropped a snapshot from member %d: %s", self.id, m.from_, why)
                    continue
            self._msgs.append(m)
        self._wake.set()

    def _check_lost_log(self, m: Message) -> None:
        """A follower whose log ends below what it acknowledged lost its data (wiped, restored from an old
        backup): Raft cannot repair that, the core ignores such refusals. Say so, once per member and match."""
        node = self.node
        pr = node.progress.get(m.from_) if node is not None and node.state == StateRole.LEADER else None
        if pr is None or m.reject_hint >= pr.match or self._lost_logged.get(m.from_) == pr.match:
            return
        self._lost_logged[m.from_] = pr.match
        log.error("raft %d: member %d lost its log: it holds entries up to %d but had acknowledged %d; "
                  "remove it and add it back under a new id", self.id, m.from_, m.reject_hint, pr.match)

    def _snapshot_data_error(self, data: bytes) -> str | None:
        """A snapshot whose data the store could not restore would stop this manager when applied."""
        try:
            info, store_data = unpack_snapshot(data)
            if info is not None and self.info.cluster_id and info.cluster_id != self.info.cluster_id:
                return f"it belongs to cluster {info.cluster_id}, not {self.info.cluster_id}"
            new_store().restore(store_data)
        except (SnapshotFormatError, StoreError) as e:
            return str(e)
        return None

    async def propose_forwarded(self, req: raft_pb2.ProposeRequest) -> raft_pb2.ProposeResponse:
        if len(req.data) > MAX_PROPOSAL_BYTES:  # the store would refuse it at apply: keep it out of the log
            err = too_many_bytes(len(req.data), MAX_PROPOSAL_BYTES)
            return raft_pb2.ProposeResponse(error_code=err.code, error_message=err.message)
        started = decode_started(req.data)
        if req.data[:1] == b"\x00" and (started is None or started[0] != getattr(req, "from")):
            # only a member itself says it started
            return raft_pb2.ProposeResponse(error_code="INVALID_ARGUMENT", error_message="invalid proposal: not a store proposal")
        index, err = await self._propose_here(req.data, req.request_id, time.monotonic() + self.cfg.proposal_timeout_s)
        if err is None:
            return raft_pb2.ProposeResponse(index=index)
        return raft_pb2.ProposeResponse(index=index, error_code=err.code, error_message=err.message)

    # ------------------------------------------------------------------ proposals
    async def propose(self, fn: Callable[[Any], T]) -> T:
        """Run fn in a write transaction, replicate it and wait until it is applied here.
        Raises the StoreError of the transaction, or Unavailable (retry) if leadership changed."""
        rid = new_request_id(self.id)
        data, result = self.store.prepare(fn, rid)
        await self.propose_data(data, rid)
        return result

    async def propose_data(self, data: bytes, rid: str) -> int:
        """Propose prepared store data; returns its index once applied on this node."""
        deadline = time.monotonic() + self.cfg.proposal_timeout_s
        while True:
            leader = await self.wait_leader(deadline)
            try:
                if leader == self.id:
                    index, err = await self._propose_here(data, rid, deadline)
                else:
                    index, err = await self._forward(leader, data, rid, deadline)
            except NotLeader:
                continue  # lost leadership before proposing: nothing was proposed, go again
            except Unavailable:
                # leadership changed under the proposal: proposing the same bytes again is safe, the
                # store applies a request id once (a duplicate reports the first outcome)
                if time.monotonic() + self.cfg.tick_s >= deadline:
                    raise
                await asyncio.sleep(self.cfg.tick_s)
                continue
            if index == 0:
                continue
            if err is not None:
                raise err
            await self.wait_applied(index, max(0.0, deadline - time.monotonic()))
            return index

    async def _propose_here(self, data: bytes, rid: str, deadline: float) -> tuple[int, StoreError | None]:
        """Queue the proposal for the Ready loop's next batch; resolved when applied here (or failed)."""
        prop = _Proposal(rid, data, asyncio.get_running_loop().create_future(), deadline)
        self._proposals.append(prop)
        self._wake.set()
        return await prop.future

    async def _forward(self, leader: int, data: bytes, rid: str, deadline: float) -> tuple[int, StoreError | None]:
        """Run the proposal on the leader; (0, None) means "not the leader any more, look again"."""
        req = raft_pb2.ProposeRequest(data=data, request_id=rid)
        setattr(req, "from", self.id)
        try:
            resp = await self.transport.propose(leader, req, max(0.01, deadline - time.monotonic()))
        except grpc.aio.AioRpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION and "not leader" in (e.details() or ""):
                await asyncio.sleep(self.cfg.tick_s)
                return 0, None
            if e.code() == grpc.StatusCode.UNAVAILABLE and "not leader" in (e.details() or "") and time.monotonic() < deadline:
                await asyncio.sleep(self.cfg.tick_s)
                return 0, None
            raise Unavailable(f"proposal forwarded to leader {leader} failed: {e.details()}") from None
        except ConnectionError as e:
            raise Unavailable(str(e)) from None
        if resp.error_code:
            return resp.index, StoreError(resp.error_code, resp.error_message)
        return resp.index, None

    async def wait_leader(self, deadline: float) -> int:
        while True:
            lid = self.leader_id
            if lid:
                return lid
            if self.failure is not None or time.monotonic() >= deadline:
                raise Unavailable("no raft leader elected")
            await asyncio.sleep(self.cfg.tick_s)

    # ------------------------------------------------------------------ reads
    async def read(self, fn: Callable[[Any], T]) -> T:
        """Linearizable read: confirm a read index with the leader, wait to apply it, then fn(store.view())."""
        deadline = time.monotonic() + self.cfg.proposal_timeout_s
        index = await self.read_index(deadline)
        await self.wait_applied(index, max(0.0, deadline - time.monotonic()))
        return fn(self.store.view())

    async def read_index(self, deadline: float) -> int:
        loop = asyncio.get_running_loop()
        node = self.node
        assert node is not None
        attempt_s = self.cfg.tick_s * self.cfg.election_tick
        while True:
            await self.wait_leader(deadline)
            ctx = f"{self.id}-{next(self._seq)}-{uuid.uuid4().hex[:8]}".encode()
            fut: asyncio.Future[int] = loop.create_future()
            self._reads[ctx] = fut

            def run(ctx: bytes = ctx, fut: asyncio.Future[int] = fut) -> None:
                try:
                    node.read_index(ctx)
                except NotLeader as e:
                    if not fut.done():
                        fut.set_exception(e)

            self._call(run)
            try:
                return await asyncio.wait_for(asyncio.shield(fut), min(attempt_s, max(0.0, deadline - time.monotonic())))
            except (asyncio.TimeoutError, NotLeader):
                self._reads.pop(ctx, None)
                if time.monotonic() >= deadline:
                    raise Unavailable("linearizable read timed out: no leader confirmed its lease") from None
                await asyncio.sleep(self.cfg.tick_s)

    # ------------------------------------------------------------------ membership
    async def add_member(self, node_id: int, addr: str) -> None:
        """Add a voter (on the leader); the new member should run with join=True. Returns once committed."""
        bad = address_error(addr)
        if bad is not None:
            raise ConfChangeError(bad)
        if node_id in (self.node.voters if self.node else []):
            raise ConfChangeError(f"node {node_id} is already a member of the raft")
        # the address becomes known to every member (this one included) when the entry commits
        await self._conf_change(ConfChangeOp.ADD, node_id, addr)

    async def remove_member(self, node_id: int) -> None:
        """Remove a voter (on the leader); refused with QuorumLossError if the rest could not form a quorum.
        A leader asked to remove itself hands leadership over first and raises NotLeader naming the new leader,
        which the caller asks instead (swarmkit does the same): a leader that commits its own removal and dies
        before any follower learns the commit leaves a two-member cluster with no quorum (shell simulator seed 70)."""
        node = self.node
        if node is not None and node_id == self.id and self.is_leader and len(node.voters) > 1:
            await self._hand_over_leadership()
            raise NotLeader(self.leader_id)
        await self._conf_change(ConfChangeOp.REMOVE, node_id)

    async def _hand_over_leadership(self) -> None:
        node = self.node
        assert node is not None
        others = [v for v in node.voters if v != self.id]
        target = max(others, key=lambda v: (node.progress[v].match if v in node.progress else -1, -v))
        self._call(lambda: node.transfer_leadership(target))
        deadline = time.monotonic() + 2 * self.cfg.election_tick * self.cfg.tick_s
        while self.leader_id in (None, self.id):
            if self.failure is not None or time.monotonic() >= deadline:
                raise Unavailable(f"raft member {self.id} could not hand leadership over before its own removal")
            await asyncio.sleep(self.cfg.tick_s)

    async def _conf_change(self, op: ConfChangeOp, node_id: int, addr: str = "") -> None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[tuple[int, int]] = loop.create_future()
        node = self.node
        assert node is not None

        def run() -> None:
            try:
                done.set_result(node.propose_conf_change(op, node_id, addr))
            except RaftError as e:
                done.set_exception(e)

        self._call(run)
        index, term = await done
        applied: asyncio.Future[None] = loop.create_future()
        self._conf_waits[index] = (term, applied)
        if self.applied >= index:  # raced past already (single node)
            self._conf_waits.pop(index, None)
            return
        try:
            await asyncio.wait_for(applied, self.cfg.proposal_timeout_s)
        except asyncio.TimeoutError:
            self._conf_waits.pop(index, None)
            raise Unavailable(f"membership change {op.name.lower()} {node_id} timed out: outcome unknown") from None
