"""networkdb: per-network tables gossiped among the nodes on each network (Lamport clocks, tombstones, bulk syncs).
Sans-IO Delegate + EventDelegate of the gossip core (agent/gossip/delegate.py); `outbox` goes out via shoal/swarm/gossip_agent.py.

Choices where libnetwork differs:
- A failed (dead) node's entries are kept SUSPENDED, not deleted: watchers see nothing, walk() marks them. When the
  node comes back, each side asks it for a bulk sync; its own entries in that sync are authoritative and complete,
  so they replace the suspended ones and any it no longer has are deleted (moby #53141: no stale entry after a
  flap). A node dead for longer than `dead_node_reap_s` has its entries deleted (watchers see deletes).
- An entry owned by this node that a peer still holds from this node's previous life is deleted by a fresh
  tombstone from this node, so a restart leaves nothing stale behind.
- The periodic bulk sync and a join's pulls again start with a digest of the network's entries (table_digest): the
  peer answers with its bulk sync (and gets ours) only when its entries differ, so a pull once a burst has spread is
  two small messages, not both sides' whole tables. Joins, resyncs and pushes to a new node send the bulk sync itself.
- Table events and bulk sync parts are packed to the packet budget once deflated (zlib; memberlist compresses too):
  a burst's records share most of their bytes, so about three times as many go in a packet, and a burst costs every
  node a third of the packets to send, receive, seal and open.
- The managers' word counts as much as the core's (hold()): a node the managers hold DOWN has its entries suspended
  at once, and when they release it, it is asked for a bulk sync as a returning node is.

Driving it: tick(now) whenever next_deadline() comes (nothing is due while the queues are empty and nothing waits
to be reaped: an idle node's next deadline is its periodic bulk sync); `on_change` is called after every input
that may have queued something or moved a deadline, and `clock` (when set) gives inputs between ticks their time.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agent.gossip import netdb_wire as w
from agent.gossip.delegate import Member, MemberState
from agent.gossip.netdb_queue import BroadcastQueue, retransmit_limit
from common.errdefs import Conflict, InvalidParameter, NotFound

log = logging.getLogger(__name__)

CREATE, UPDATE, DELETE = "create", "update", "delete"
WatchCallback = Callable[[str, str, str, bytes], None]  # (event, network_id, key, value)
REAP_SCAN_S = 1.0
OWN_WRITE_GAP_S = 0.05  # own writes go out at once, but at most one extra gossip round per this many seconds
MAX_ASSEMBLIES = 256  # multi-part bulk syncs being received at once
EVENT_OVERHEAD = 4  # a repeated-field tag and length per table event in a packed message


@dataclass(slots=True)
class NetDBConfig:
    gossip_interval_s: float = 0.2  # memberlist's GossipInterval
    gossip_fanout: int = 3  # memberlist's GossipNodes
    retransmit_mult: int = 4
    bulk_sync_interval_s: float = 30.0  # libnetwork's bulk sync period
    reap_entry_s: float = 1800.0  # tombstones and left attachments (libnetwork's reapEntryInterval)
    dead_node_reap_s: float = 300.0  # a dead node's suspended entries are deleted after this
    packet_budget: int = 1200  # bytes of user payload per direct message (the shell adds its header and the AEAD tag)
    sync_assembly_timeout_s: float = 30.0  # a multi-part bulk sync not complete by then is forgotten
    resync_retry_s: float = 5.0  # a returned node still owning suspended entries is asked again this often
    # a node that joins a network pulls again from another peer at these delays: entries its peers wrote while the
    # join spread (or a sync lost on the way) arrive in seconds, not at the next periodic sync
    join_repull_s: tuple[float, ...] = (1.0, 3.0)
    # a member that hears of a join sends the newcomer its own entries written this recently (the whole table only
    # by a draw): such an entry may have gone out before the join was heard, to the members known then only
    recent_write_s: float = 2.0


class LamportClock:
    def __init__(self) -> None:
        self.value = 0

    def increment(self) -> int:
        self.value += 1
        return self.value

    def witness(self, v: int) -> None:
        if v > self.value:
            self.value = v


@dataclass(slots=True)
class _Entry:
    owner: str
    ltime: int
    value: bytes
    deleting: bool = False
    reap_at: float = 0.0
    suspended: bool = False


@dataclass(slots=True, frozen=True)
class TableEntry:
    key: str
    value: bytes
    owner: str
    suspended: bool = False


@dataclass(slots=True)
class _Attach:
    ltime: int
    leaving: bool
    reap_at: float = 0.0


@dataclass(slots=True)
class _Node:
    member: Member
    failed_at: float | None = None  # None while alive


@dataclass(slots=True)
class _Assembly:
    total: int
    table_clock: int
    reply_wanted: bool
    started: float
    parts: set[int] = field(default_factory=set)
    owned: set[tuple[str, str]] = field(default_factory=set)


DEFLATE_REACH = 4  # a packet's worth of deflated events is looked for among this many packets' worth of raw ones
SYNC_SLACK = 16  # bytes kept free in a bulk sync part: its real part numbers deflate a little differently


def _fit(n_max: int, encode: Callable[[int], bytes], budget: int) -> tuple[int, bytes]:
    """The most leading items (at most n_max) whose encoding fits budget, with that encoding; one item that does
    not fit is returned as it is. A deflated size grows about linearly with the items: a few tries, not a search."""
    n = n_max
    while True:
        data = encode(n)
        if len(data) <= budget or n == 1:
            return n, data
        n = max(1, min(n - 1, n * budget * 19 // (len(data) * 20)))


def _sync_part(base: w.BulkSync, part: int, parts: int, events: list[w.TableEvent]) -> w.BulkSync:
    out = w.BulkSync()
    out.CopyFrom(base)
    out.part, out.parts = part, parts
    out.entries.extend(events)
    return out


def _event_of(nid: str, k: tuple[str, str], e: _Entry) -> w.TableEvent:
    """The table event that carries entry e (table, key = k) of network nid as it is: a create, or a delete for a
    tombstone."""
    typ = w.TableEvent.DELETE if e.deleting else w.TableEvent.CREATE
    return w.TableEvent(type=typ, ltime=e.ltime, node_name=e.owner, network_id=nid,  # type: ignore[arg-type]
                        table_name=k[0], key=k[1], value=e.value)


def _input(method):
    """A public input: it sees the current time (clock) and, once done, tells the driver (on_change)."""
    @functools.wraps(method)
    def wrapper(self: NetworkDB, *args, **kwargs):
        if self.clock is not None:
            self.now = max(self.now, self.clock())
        try:
            return method(self, *args, **kwargs)
        finally:
            self._changed()
    return wrapper


def _check_local(what: str, v: str, limit: int) -> None:
    if not v or len(v) > limit or not v.isprintable():
        raise InvalidParameter(f"invalid {what} {v!r}: must be 1 to {limit} printable characters")


class NetworkDB:
    """One node's view of every network's tables. Drive it with tick(now); deliver `outbox` with the shell's send_to."""

    def __init__(self, name: str, rng: random.Random | None = None, config: NetDBConfig | None = None) -> None:
        _check_local("node name", name, w.MAX_NAME)
        self.name = name
        self.rng = rng or random.Random()
        self.config = config or NetDBConfig()
        self.now = 0.0
        self.network_clock = LamportClock()
        self.table_clock = LamportClock()
        self.nodes: dict[str, _Node] = {}
        self.attachments: dict[str, dict[str, _Attach]] = {}  # node -> network id -> attachment
        self.entries: dict[str, dict[tuple[str, str], _Entry]] = {}  # network id -> (table, key) -> entry
        self.outbox: list[tuple[str, bytes]] = []  # (member name, message) for the shell's send_to
        self.counters: dict[str, int] = {"invalid": 0, "old": 0, "not_member": 0, "applied": 0, "stale_own": 0,
                                         "in_sync": 0}
        self._bq = BroadcastQueue(self.config.retransmit_mult)  # network events, piggybacked by the core
        self._nq: dict[str, BroadcastQueue] = {}  # network id -> its table events
        self._recent_writes: dict[str, dict[tuple[str, str], float]] = {}  # network id -> our writes -> when
        self._rr: dict[str, list[str]] = {}  # network id -> peers still to gossip to in this round-robin pass
        self._watchers: dict[str, list[WatchCallback]] = {}
        self._assemblies: dict[tuple[str, str, int], _Assembly] = {}
        self._resync_due: dict[str, float] = {}  # returned node -> when to ask it again for its entries
        self._repulls: list[tuple[float, str]] = []  # (when, network id): join_repull_s
        self._reaped: dict[str, float] = {}  # nodes reaped as dead -> when; their entries are refused until they return
        self._held: frozenset[str] = frozenset()  # nodes the managers hold DOWN (hold()): their entries suspended
        self._next_gossip = 0.0
        self._last_gossip = -math.inf
        self._deflate_ratio = 3.0  # raw / deflated size of the last packed messages: how many events to try first
        self._next_reap = 0.0  # math.inf while nothing can be reaped (an input re-arms the scan)
        self._next_bulk = self.config.bulk_sync_interval_s
        self.on_change: Callable[[], None] | None = None  # the driver's wake-up (shoal/swarm/gossip_agent.py)
        self.clock: Callable[[], float] | None = None  # the driver's time, for inputs between ticks

    # ------------------------------------------------------------------ queries
    def joined(self, network_id: str) -> bool:
        a = self.attachments.get(self.name, {}).get(network_id)
        return a is not None and not a.leaving

    def networks(self) -> list[str]:
        return sorted(nid for nid, a in self.attachments.get(self.name, {}).items() if not a.leaving)

    def alive(self, node: str) -> bool:
        n = self.nodes.get(node)
        return n is not None and n.failed_at is None

    def counts(self, node: str) -> bool:
        """Whether node's entries count: alive for the core and not held DOWN by the managers."""
        return self.alive(node) and node not in self._held

    def network_nodes(self, network_id: str) -> list[str]:
        """Other nodes attached to network_id (alive or failed)."""
        return sorted(n for n, nets in self.attachments.items()
                      if n != self.name and (a := nets.get(network_id)) is not None and not a.leaving)

    def peers(self, network_id: str) -> list[str]:
        """Alive nodes, other than this one, attached to network_id: the only ones its table events go to."""
        return [n for n in self.network_nodes(network_id) if self.alive(n)]

    def get_entry(self, table: str, network_id: str, key: str) -> bytes:
        e = self.entries.get(network_id, {}).get((table, key))
        if e is None or e.deleting:
            raise NotFound(f"could not get entry in table {table} with network id {network_id} and key {key}")
        return e.value

    def walk(self, table: str, network_id: str) -> list[TableEntry]:
        """The live entries of table on network_id, by key (suspended ones included, marked)."""
        out = [TableEntry(k, e.value, e.owner, e.suspended)
               for (t, k), e in self.entries.get(network_id, {}).items() if t == table and not e.deleting]
        return sorted(out, key=lambda x: x.key)

    def watch(self, table: str, callback: WatchCallback, replay: bool = True) -> Callable[[], None]:
        """callback(event, network_id, key, value) for every change of table; replay: a create for each live entry
        now. Returns the function that stops the watch."""
        self._watchers.setdefault(table, []).append(callback)
        if replay:
            for nid in sorted(self.entries):
                for te in self.walk(table, nid):
                    callback(CREATE, nid, te.key, te.value)

        def cancel() -> None:
            cbs = self._watchers.get(table, [])
            if callback in cbs:
                cbs.remove(callback)
        return cancel

    def take_outgoing(self) -> list[tuple[str, bytes]]:
        out, self.outbox = self.outbox, []
        return out

    # ------------------------------------------------------------------ this node's networks
    @_input
    def join_network(self, network_id: str) -> None:
        _check_local("network id", network_id, w.MAX_NAME)
        if self.joined(network_id):
            return
        lt = self.network_clock.increment()
        self.attachments.setdefault(self.name, {})[network_id] = _Attach(lt, False)
        self.entries.setdefault(network_id, {})
        self._queue_network_event(w.NetworkEvent.JOIN, lt, self.name, network_id)
        peers = self.peers(network_id)
        if peers:  # libnetwork syncs with one node at join; the others send theirs when they see our join
            self._sync_to(self.rng.choice(peers), network_id, reply_wanted=True)
        self._repulls.extend((self.now + d, network_id) for d in self.config.join_repull_s)

    @_input
    def leave_network(self, network_id: str) -> None:
        if not self.joined(network_id):
            raise NotFound(f"could not find network {network_id} while trying to leave")
        lt = self.network_clock.increment()
        self.attachments[self.name][network_id] = _Attach(lt, True, self.now + self.config.reap_entry_s)
        self._queue_network_event(w.NetworkEvent.LEAVE, lt, self.name, network_id)
        # nobody sends us this network's events any more: forget its entries (watchers see them go)
        for (table, key), e in sorted(self.entries.pop(network_id, {}).items()):
            if not e.deleting:
                self._notify(DELETE, table, network_id, key, e.value)
        self._nq.pop(network_id, None)
        self._recent_writes.pop(network_id, None)

    # ------------------------------------------------------------------ this node's entries
    def _own_write(self, table: str, network_id: str, key: str, value: bytes) -> dict[tuple[str, str], _Entry]:
        _check_local("table name", table, w.MAX_NAME)
        _check_local("network id", network_id, w.MAX_NAME)
        _check_local("key", key, w.MAX_KEY)
        if len(value) > w.MAX_VALUE:
            raise InvalidParameter(f"value of {len(value)} bytes for key {key} exceeds {w.MAX_VALUE}")
        if not self.joined(network_id):
            raise NotFound(f"network {network_id} is not joined by node {self.name}")
        size = w.TableEvent(type=w.TableEvent.CREATE, ltime=w.MAX_LTIME, node_name=self.name, network_id=network_id,
                            table_name=table, key=key, value=value).ByteSize() + EVENT_OVERHEAD
        room = self.config.packet_budget - len(w.encode(w.TableEvents(from_node=self.name))) - 8
        if size > room:
            raise InvalidParameter(f"entry {key} of {size} bytes does not fit in a gossip packet ({room} bytes)")
        return self.entries.setdefault(network_id, {})

    @_input
    def create_entry(self, table: str, network_id: str, key: str, value: bytes) -> None:
        ents = self._own_write(table, network_id, key, value)
        old = ents.get((table, key))
        if old is not None and not old.deleting:
            raise Conflict(f"cannot create entry in table {table} with network id {network_id} and key {key}, already exists")
        lt = self.table_clock.increment()
        ents[(table, key)] = _Entry(self.name, lt, value)
        self._notify(CREATE, table, network_id, key, value)
        self._queue_table_event(w.TableEvent.CREATE, lt, self.name, network_id, table, key, value)

    @_input
    def update_entry(self, table: str, network_id: str, key: str, value: bytes) -> None:
        ents = self._own_write(table, network_id, key, value)
        old = ents.get((table, key))
        if old is None or old.deleting:
            raise NotFound(f"cannot update entry in table {table} with network id {network_id} and key {key}, does not exist")
        lt = self.table_clock.increment()
        ents[(table, key)] = _Entry(self.name, lt, value)
        self._notify(UPDATE, table, network_id, key, value)
        self._queue_table_event(w.TableEvent.UPDATE, lt, self.name, network_id, table, key, value)

    @_input
    def delete_entry(self, table: str, network_id: str, key: str) -> None:
        ents = self._own_write(table, network_id, key, b"")
        old = ents.get((table, key))
        if old is None or old.deleting:
            raise NotFound(f"cannot delete entry in table {table} with network id {network_id} and key {key}, does not exist")
        lt = self.table_clock.increment()
        ents[(table, key)] = _Entry(self.name, lt, old.value, deleting=True, reap_at=self.now + self.config.reap_entry_s)
        self._notify(DELETE, table, network_id, key, old.value)
        self._queue_table_event(w.TableEvent.DELETE, lt, self.name, network_id, table, key, old.value)

    # ------------------------------------------------------------------ Delegate
    def node_meta(self, limit: int) -> bytes:
        return b""

    @_input
    def notify_msg(self, data: bytes) -> None:
        try:
            m = w.decode_message(data)
        except w.WireError as e:
            self.counters["invalid"] += 1
            log.debug("netdb: dropped a message: %s", e)
            return
        kind = m.WhichOneof("body")
        if kind == "network_event":
            self._on_network_event(m.network_event, rebroadcast=True)
        elif kind == "table_events":
            for e in m.table_events.events:
                self._on_table_event(e, from_bulk=False, authority="")
        elif kind == "sync_digest":
            self._on_sync_digest(m.sync_digest)
        else:
            self._on_bulk_sync(m.bulk_sync)

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        return self._bq.take(overhead, limit, len(self.nodes) + 1)

    def get_broadcasts_for(self, member: str, overhead: int, limit: int) -> list[bytes]:
        """The network events member has not had from us yet: each goes to every live member once (up to the
        retransmit limit), however many packets one member gets meanwhile."""
        if not self._bq:
            return []
        live = sum(1 for n in self.nodes.values() if n.failed_at is None)
        return self._bq.take(overhead, limit, len(self.nodes) + 1, to=member, live_others=live)

    def local_state(self, join: bool) -> bytes:
        p = w.PushPull(node_name=self.name, network_clock=self.network_clock.value, table_clock=self.table_clock.value)
        for node, nets in sorted(self.attachments.items()):
            for nid, a in sorted(nets.items()):
                p.networks.add(type=w.NetworkEvent.LEAVE if a.leaving else w.NetworkEvent.JOIN,
                               ltime=a.ltime, node_name=node, network_id=nid)
        return p.SerializeToString()

    @_input
    def merge_remote_state(self, data: bytes, join: bool) -> None:
        try:
            p = w.decode_push_pull(data)
        except w.WireError as e:
            self.counters["invalid"] += 1
            log.debug("netdb: dropped a push-pull state: %s", e)
            return
        self.network_clock.witness(p.network_clock)
        self.table_clock.witness(p.table_clock)
        for e in p.networks:
            self._on_network_event(e, rebroadcast=False)

    # ------------------------------------------------------------------ EventDelegate
    @_input
    def notify_join(self, member: Member) -> None:
        if member.name == self.name:
            return
        prev = self.nodes.get(member.name)
        returning = (prev is not None and prev.failed_at is not None) or member.name in self._reaped
        self.nodes[member.name] = _Node(member)
        self._reaped.pop(member.name, None)
        if returning or self._owns_suspended(member.name):
            self._resync_with(member.name)
            # a lost request or answer must not leave its entries suspended: asked again until they are not
            self._resync_due[member.name] = self.now + self.config.resync_retry_s
            return
        # its attachments may have come (push-pull) before the core told us it is alive: it gets our entries now
        for nid in sorted(set(self.networks()) & set(self.network_nodes_of(member.name))):
            self._maybe_push_state(member.name, nid)

    @_input
    def notify_update(self, member: Member) -> None:
        if member.name == self.name:
            return
        if member.state in (MemberState.DEAD, MemberState.LEFT):
            self.notify_leave(member)
            return
        prev = self.nodes.get(member.name)
        if prev is None or prev.failed_at is not None:
            self.notify_join(member)
        else:
            prev.member = member

    @_input
    def notify_leave(self, member: Member) -> None:
        name = member.name
        if name == self.name:
            return
        if member.state == MemberState.LEFT:
            # a graceful leave: its entries and attachments go now (libnetwork does the same)
            self._drop_node(name, dead=False)
            self.nodes.pop(name, None)
            return
        n = self.nodes.get(name)
        if n is None:
            n = self.nodes[name] = _Node(member)
        if n.failed_at is None:
            n.failed_at = self.now
        n.member = member
        for ents in self.entries.values():
            for e in ents.values():
                if e.owner == name:
                    e.suspended = True

    # ------------------------------------------------------------------ the managers' word
    @_input
    def hold(self, nodes: Iterable[str]) -> None:
        """The nodes the managers hold DOWN now (the whole set, from the dispatcher's session). A node entering the
        set has its entries suspended at once, as a failed node's, whatever the core still thinks of it: the load
        balancer and DNS need not wait for gossip's verdict. A node leaving it is a returning node: asked for a bulk
        sync, its entries count again only as its own sync confirms them, so an entry it lost while away (a task the
        managers moved, its process restarted before gossip noticed) never counts again."""
        new = frozenset(n for n in nodes if n and n != self.name)
        if new == self._held:
            return
        entering, leaving = new - self._held, self._held - new
        self._held = new
        for ents in self.entries.values():
            for e in ents.values():
                if e.owner in entering:
                    e.suspended = True
        for name in sorted(leaving):
            if self.alive(name) and self._owns_suspended(name):  # a dead one is asked when the core sees it back
                self._resync_with(name)
                self._resync_due[name] = self.now + self.config.resync_retry_s

    def held(self) -> frozenset[str]:
        return self._held

    # ------------------------------------------------------------------ time
    def _changed(self) -> None:
        if self._next_reap == math.inf:
            self._next_reap = self.now + REAP_SCAN_S  # the input may have made a tombstone, a failed node...
        if self.on_change is not None:
            self.on_change()

    def pending_broadcasts(self) -> bool:
        """Whether the core has network events of ours to piggyback (it keeps its gossip timer armed meanwhile)."""
        return len(self._bq) > 0

    def next_deadline(self) -> float:
        """When tick has work next: a gossip round while a joined network with peers has queued events, the
        periodic bulk sync, join re-pulls, resyncs, the reap scan while anything waits to be reaped."""
        due = min(self._next_bulk, self._next_reap)
        if self._repulls:
            due = min(due, min(when for when, _ in self._repulls))
        if self._resync_due:
            due = min(due, min(self._resync_due.values()))
        if due > self._next_gossip and any(q and self.joined(nid) and self.peers(nid) for nid, q in self._nq.items()):
            due = self._next_gossip
        return due

    def tick(self, now: float) -> None:
        self.now = now
        if now >= self._next_gossip:
            self._next_gossip = now + self.config.gossip_interval_s
            self._last_gossip = now
            self._gossip_round()
        if now >= self._next_bulk:
            self._next_bulk = now + self.config.bulk_sync_interval_s
            for nid in self.networks():
                peers = self.peers(nid)
                if peers:
                    self._pull(self.rng.choice(peers), nid)
        if self._repulls:
            due_now = [nid for when, nid in self._repulls if when <= now]
            self._repulls = [(when, nid) for when, nid in self._repulls if when > now]
            for nid in due_now:
                peers = self.peers(nid) if self.joined(nid) else []
                if peers:
                    self._pull(self.rng.choice(peers), nid)
        for node, due in list(self._resync_due.items()):
            if not self.counts(node) or not self._owns_suspended(node):
                del self._resync_due[node]
            elif now >= due:
                self._resync_due[node] = now + self.config.resync_retry_s
                self._resync_with(node)
        if now >= self._next_reap:  # tombstones live for minutes: a scan a second is plenty
            self._reap(now)

    def _reap(self, now: float) -> None:
        for nid, ents in self.entries.items():
            for k in [k for k, e in ents.items() if e.deleting and e.reap_at <= now]:
                del ents[k]
        for node, nets in list(self.attachments.items()):
            for nid in [nid for nid, a in nets.items() if a.leaving and a.reap_at <= now]:
                del nets[nid]
            if not nets:
                del self.attachments[node]
        for name, n in list(self.nodes.items()):
            if n.failed_at is not None and now - n.failed_at >= self.config.dead_node_reap_s:
                log.info("netdb: node %s dead for %.0f s: its entries are deleted", name, now - n.failed_at)
                self._drop_node(name, dead=True)
                del self.nodes[name]
                self._reaped[name] = now
        for name in [n for n, t in self._reaped.items() if now - t >= self.config.reap_entry_s]:
            del self._reaped[name]
        for k in [k for k, a in self._assemblies.items() if now - a.started >= self.config.sync_assembly_timeout_s]:
            del self._assemblies[k]
        waiting = (self._reaped or self._assemblies or any(n.failed_at is not None for n in self.nodes.values())
                   or any(a.leaving for nets in self.attachments.values() for a in nets.values())
                   or any(e.deleting for ents in self.entries.values() for e in ents.values()))
        self._next_reap = now + REAP_SCAN_S if waiting else math.inf

    # ------------------------------------------------------------------ gossip out
    def _queue_network_event(self, typ: int, lt: int, node: str, nid: str) -> None:
        ev = w.NetworkEvent(type=typ, ltime=lt, node_name=node, network_id=nid)  # type: ignore[arg-type]
        self._bq.queue(("net", node, nid), w.encode(ev))

    def _queue_table_event(self, typ: int, lt: int, owner: str, nid: str, table: str, key: str, value: bytes) -> None:
        ev = w.TableEvent(type=typ, ltime=lt, node_name=owner, network_id=nid,  # type: ignore[arg-type]
                          table_name=table, key=key, value=value)
        self._nq.setdefault(nid, BroadcastQueue(self.config.retransmit_mult)).queue((table, key),
                                                                                 w.frame_event(ev.SerializeToString()))
        if owner == self.name:
            # our own write goes out now, not at the next round (up to gossip_interval later): a task's address
            # reaches the other nodes while its container is still starting; a burst of writes shares rounds
            self._next_gossip = min(self._next_gossip, max(self.now, self._last_gossip + OWN_WRITE_GAP_S))
            recent = self._recent_writes.setdefault(nid, {})
            recent.pop((table, key), None)  # re-inserted last: the dict stays in write order
            recent[(table, key)] = self.now
            self._forget_old_writes(nid)

    def _forget_old_writes(self, nid: str) -> None:
        recent = self._recent_writes.get(nid, {})
        horizon = self.now - self.config.recent_write_s
        while recent:  # in write order (a rewrite moves to the end): the oldest first, stop at the first kept
            k, t = next(iter(recent.items()))
            if t >= horizon:
                break
            del recent[k]

    def _send_recent_writes(self, node: str, nid: str) -> None:
        """Our own entries of nid written within recent_write_s, to node as table events (not a bulk sync: they
        add to what node holds of ours, they do not replace it)."""
        self._forget_old_writes(nid)
        ents = self.entries.get(nid, {})
        q = BroadcastQueue(mult=1)  # each event once
        for k in self._recent_writes.get(nid, {}):
            e = ents.get(k)
            if e is None or e.owner != self.name:
                continue
            q.queue(k, w.frame_event(_event_of(nid, k, e).SerializeToString()))
        while (data := self._pack_events(q, 2)) is not None:
            self.outbox.append((node, data))

    def _gossip_round(self) -> None:
        for nid in self.networks():
            q = self._nq.get(nid)
            if not q:
                continue
            peers = self.peers(nid)
            if not peers:
                continue  # kept: a node that joins gets them by bulk sync anyway, and a returning one too
            # every peer at once when an event's transmissions could reach them all anyway (a small network):
            # one round instead of two or more
            every = len(peers) <= retransmit_limit(self.config.retransmit_mult, len(peers) + 1)
            for target in (peers if every else self._next_targets(nid, peers)):
                data = self._pack_events(q, len(peers) + 1)
                if data is None:
                    break
                self.outbox.append((target, data))

    def _pack_events(self, q: BroadcastQueue, nodes: int) -> bytes | None:
        """One message of queued table events (least sent first) that fits the packet budget once deflated; those
        count as sent. None when nothing is queued."""
        budget = self.config.packet_budget
        while True:
            items = q.peek(0, budget * DEFLATE_REACH)  # the queued events are framed: their cost is their length
            if not items:
                return None
            n, data = _fit(self._first_guess(items), lambda n: w.deflate(w.encode_table_events(
                self.name, [d for _, d in items[:n]])), budget)
            if len(data) > budget:  # one event that does not fit even deflated: it could never be sent
                q.drop(items[0][0])
                continue
            raw = sum(len(d) for _, d in items[:n])
            self._deflate_ratio = (self._deflate_ratio + raw / len(data)) / 2
            q.sent([key for key, _ in items[:n]], nodes)
            return data

    def _first_guess(self, items: list[tuple[object, bytes]]) -> int:
        """How many of items to try packing first: what the recent deflate ratio says fits (most messages then
        deflate once); at least one."""
        room = self.config.packet_budget * min(max(self._deflate_ratio * 0.9, 1.0), DEFLATE_REACH)
        n, used = 0, 0
        for _, d in items:
            used += len(d)
            if n and used > room:
                break
            n += 1
        return n

    def _next_targets(self, nid: str, peers: list[str]) -> list[str]:
        """The next fanout peers of a shuffled round-robin (memberlist probes this way): an event's transmissions
        go to distinct peers, so in a small network its origin alone reaches every member."""
        order = [p for p in self._rr.get(nid, []) if p in peers]
        out: list[str] = []
        want = min(self.config.gossip_fanout, len(peers))
        while len(out) < want:
            if not order:
                order = [p for p in peers if p not in out]
                self.rng.shuffle(order)
            out.append(order.pop(0))
        self._rr[nid] = order
        return out

    def _sync_to(self, node: str, nid: str, reply_wanted: bool) -> None:
        """Send node this node's entries of nid (its own are complete), in parts that fit the packet budget."""
        sync_id = self.rng.getrandbits(63)
        base = w.BulkSync(node_name=self.name, network_id=nid, reply_wanted=reply_wanted, sync_id=sync_id,
                          table_clock=self.table_clock.value, not_member=not self.joined(nid))
        events: list[w.TableEvent] = []
        if self.joined(nid):
            for (table, key), e in sorted(self.entries.get(nid, {}).items()):
                if e.suspended:  # a failed node's entries are not ours to spread
                    continue
                events.append(_event_of(nid, (table, key), e))
        chunks = self._sync_chunks(base, events)[:w.MAX_PARTS]
        for i, evs in enumerate(chunks):
            self.outbox.append((node, w.deflate(w.encode(_sync_part(base, i, len(chunks), evs)))))

    def _sync_chunks(self, base: w.BulkSync, events: list[w.TableEvent]) -> list[list[w.TableEvent]]:
        """Consecutive runs of events whose bulk sync parts fit the packet budget once deflated (sized with the
        largest part numbers; an event too big for a part of its own goes alone)."""
        budget = self.config.packet_budget - SYNC_SLACK
        chunks: list[list[w.TableEvent]] = []
        rest = events
        while rest:
            reach, used = 0, 0
            room = budget * min(max(self._deflate_ratio * 0.9, 1.0), DEFLATE_REACH)
            for ev in rest:  # a first guess: what the recent deflate ratio says fits
                used += ev.ByteSize() + EVENT_OVERHEAD
                if reach and used > room:
                    break
                reach += 1
            run = rest
            n, _ = _fit(reach, lambda n: w.deflate(w.encode(_sync_part(base, w.MAX_PARTS - 1, w.MAX_PARTS, run[:n]))),
                        budget)
            chunks.append(rest[:n])
            rest = rest[n:]
        return chunks or [[]]

    def table_digest(self, network_id: str) -> bytes:
        """A hash of every entry of network_id as this node holds it (tombstones and suspended ones included, marked):
        two nodes with the same digest would change nothing by exchanging bulk syncs."""
        h = hashlib.blake2b(digest_size=w.DIGEST_SIZE)
        for (table, key), e in sorted(self.entries.get(network_id, {}).items()):
            h.update(f"{len(table)}:{table}{len(key)}:{key}{len(e.owner)}:{e.owner}{e.ltime}:{e.deleting:d}"
                     f"{e.suspended:d}{len(e.value)}:".encode())
            h.update(e.value)
        return h.digest()

    def _pull(self, node: str, nid: str) -> None:
        """The periodic and the join's pulls: node gets our digest of nid and answers with its bulk sync (a reply
        wanted, so it gets ours too) only when its entries differ; once a burst has spread, a pull is two small
        messages instead of both sides' whole tables."""
        d = w.SyncDigest(node_name=self.name, network_id=nid, table_clock=self.table_clock.value,
                         digest=self.table_digest(nid))
        self.outbox.append((node, w.encode(d)))

    def _maybe_push_state(self, node: str, nid: str) -> None:
        """node is new on nid: it learns the entries without waiting for a period; in a big network only ~fanout
        of the members send theirs (any one has them all), not every member at once; the others send their
        recent writes, which may have gone out before they heard of node (it would wait for a pull otherwise)."""
        n = len(self.peers(nid))
        if n <= self.config.gossip_fanout or self.rng.random() < self.config.gossip_fanout / n:
            self._sync_to(node, nid, reply_wanted=False)
        else:
            self._send_recent_writes(node, nid)

    def network_nodes_of(self, node: str) -> list[str]:
        """The networks node is attached to, as far as this node knows."""
        return sorted(nid for nid, a in self.attachments.get(node, {}).items() if not a.leaving)

    def _resync_with(self, node: str) -> None:
        """node came back: ask it for its entries of every network we share (or hold its entries on)."""
        nets = set(self.networks()) & (set(self.attachments.get(node, {})) | self._networks_with_entries_of(node))
        for nid in sorted(nets):
            self._sync_to(node, nid, reply_wanted=True)

    # ------------------------------------------------------------------ gossip in
    def _on_network_event(self, e: w.NetworkEvent, rebroadcast: bool) -> None:
        self.network_clock.witness(e.ltime)
        node, nid = e.node_name, e.network_id
        cur = self.attachments.get(node, {}).get(nid)
        if node == self.name:
            # we are the authority on our own attachments: another life's claim is overwritten with the truth
            # (an echo of our own event is not a claim: same clock, same state)
            claims_join = e.type == w.NetworkEvent.JOIN
            if (claims_join if cur is None else
                    e.ltime > cur.ltime or (e.ltime == cur.ltime and claims_join == cur.leaving)):
                self.counters["stale_own"] += 1
                lt = self.network_clock.increment()
                leaving = cur is None or cur.leaving
                self.attachments.setdefault(self.name, {})[nid] = _Attach(lt, leaving, self.now + self.config.reap_entry_s if leaving else 0.0)
                self._queue_network_event(w.NetworkEvent.LEAVE if leaving else w.NetworkEvent.JOIN, lt, self.name, nid)
            return
        if cur is not None and cur.ltime >= e.ltime:
            self.counters["old"] += 1
            return
        self.counters["applied"] += 1
        if e.type == w.NetworkEvent.JOIN:
            self.attachments.setdefault(node, {})[nid] = _Attach(e.ltime, False)
            if self.joined(nid) and self.alive(node):
                self._maybe_push_state(node, nid)
        else:
            self.attachments.setdefault(node, {})[nid] = _Attach(e.ltime, True, self.now + self.config.reap_entry_s)
            self._delete_owned(node, nid)
        if rebroadcast:
            self._bq.queue(("net", node, nid), w.encode(e))

    def _on_table_event(self, e: w.TableEvent, from_bulk: bool, authority: str) -> bool:
        """Apply one table event; authority: the node whose bulk sync carries it (its own entries replace
        suspended ones whatever their clocks). Returns whether it changed anything."""
        self.table_clock.witness(e.ltime)
        nid, owner, k = e.network_id, e.node_name, (e.table_name, e.key)
        if not self.joined(nid):
            self.counters["not_member"] += 1
            return False
        ents = self.entries.setdefault(nid, {})
        cur = ents.get(k)
        if owner == self.name:
            # an entry of ours we do not hold live (another life's) or a newer version than ours: ours wins;
            # a delete of what we do not have agrees with us
            mine = cur is not None and cur.owner == self.name
            if (not mine and e.type != w.TableEvent.DELETE) or (mine and cur.ltime < e.ltime):  # type: ignore[union-attr]
                self._reassert_own(nid, k, cur)
            else:
                self.counters["old"] += 1
            return False
        if owner in self._reaped:
            self.counters["old"] += 1
            return False
        owner_back = cur is not None and cur.suspended and cur.owner == owner and self.counts(owner)
        if cur is not None and cur.ltime >= e.ltime and not (owner_back and (authority == owner or not from_bulk)):
            self.counters["old"] += 1
            return False
        was_live = cur is not None and not cur.deleting
        suspended = (owner in self.nodes and not self.alive(owner)) or owner in self._held
        if e.type == w.TableEvent.DELETE:
            value = cur.value if cur is not None and not e.value else e.value
            ents[k] = _Entry(owner, e.ltime, value, True, self.now + self.config.reap_entry_s, suspended)
            if was_live:
                self._notify(DELETE, e.table_name, nid, e.key, value)
        else:
            ents[k] = _Entry(owner, e.ltime, e.value, False, 0.0, suspended)
            if not was_live:
                self._notify(CREATE, e.table_name, nid, e.key, e.value)
            elif cur is not None and cur.value != e.value:
                self._notify(UPDATE, e.table_name, nid, e.key, e.value)
        self.counters["applied"] += 1
        if not from_bulk:
            self._nq.setdefault(nid, BroadcastQueue(self.config.retransmit_mult)).queue(
                k, w.frame_event(e.SerializeToString()))
        return True

    def _reassert_own(self, nid: str, k: tuple[str, str], cur: _Entry | None) -> None:
        """A peer holds a version of an entry of ours that we do not: ours wins with a newer clock."""
        self.counters["stale_own"] += 1
        lt = self.table_clock.increment()
        ents = self.entries[nid]
        if cur is not None and cur.owner == self.name and not cur.deleting:
            cur.ltime = lt
            self._queue_table_event(w.TableEvent.UPDATE, lt, self.name, nid, k[0], k[1], cur.value)
            return
        value = cur.value if cur is not None else b""
        if cur is not None and not cur.deleting:
            self._notify(DELETE, k[0], nid, k[1], cur.value)
        ents[k] = _Entry(self.name, lt, value, True, self.now + self.config.reap_entry_s)
        self._queue_table_event(w.TableEvent.DELETE, lt, self.name, nid, k[0], k[1], value)

    def _on_sync_digest(self, d: w.SyncDigest) -> None:
        sender, nid = d.node_name, d.network_id
        if sender == self.name:
            self.counters["invalid"] += 1
            return
        self.table_clock.witness(d.table_clock)
        if not self.joined(nid):
            self.counters["not_member"] += 1
            self._sync_to(sender, nid, reply_wanted=False)  # says not_member: it drops what it holds of ours
            return
        if d.digest == self.table_digest(nid):
            self.counters["in_sync"] += 1
            return
        self._sync_to(sender, nid, reply_wanted=True)

    def _on_bulk_sync(self, b: w.BulkSync) -> None:
        sender, nid = b.node_name, b.network_id
        if sender == self.name:
            self.counters["invalid"] += 1
            return
        self.table_clock.witness(b.table_clock)
        if not self.joined(nid):
            self.counters["not_member"] += 1
            if b.reply_wanted and b.part == b.parts - 1 and not b.not_member:
                self._sync_to(sender, nid, reply_wanted=False)  # says not_member: it drops what it holds of ours
            return
        if b.not_member:
            self._delete_owned(sender, nid)
            a = self.attachments.get(sender, {}).get(nid)
            if a is not None and not a.leaving:
                a.leaving, a.reap_at = True, self.now + self.config.reap_entry_s
            return
        key = (sender, nid, b.sync_id)
        asm = self._assemblies.get(key)
        if asm is None:
            if len(self._assemblies) >= MAX_ASSEMBLIES:  # bounded: the oldest unfinished sync is given up
                del self._assemblies[next(iter(self._assemblies))]
            asm = self._assemblies[key] = _Assembly(b.parts, b.table_clock, b.reply_wanted, self.now)
        if b.part in asm.parts or b.parts != asm.total:
            self.counters["invalid"] += 1
            return
        asm.parts.add(b.part)
        for e in b.entries:
            if e.node_name == sender:
                asm.owned.add((e.table_name, e.key))
            self._on_table_event(e, from_bulk=True, authority=sender)
        if len(asm.parts) < asm.total:
            return
        del self._assemblies[key]
        self._complete_sync(sender, nid, asm)
        if asm.reply_wanted:
            self._sync_to(sender, nid, reply_wanted=False)

    def _complete_sync(self, sender: str, nid: str, asm: _Assembly) -> None:
        """The sender's own entries of nid are all in asm.owned: any other one we hold of it is stale."""
        ents = self.entries.get(nid, {})
        for k, e in sorted(ents.items()):
            if e.owner != sender or k in asm.owned or e.deleting:
                continue
            if e.suspended or e.ltime <= asm.table_clock:
                e.deleting, e.reap_at, e.suspended = True, self.now + self.config.reap_entry_s, False
                self._notify(DELETE, k[0], nid, k[1], e.value)
        if self.counts(sender):
            for e in ents.values():
                if e.owner == sender:
                    e.suspended = False

    # ------------------------------------------------------------------ helpers
    def _delete_owned(self, node: str, nid: str, suspend: bool = False) -> None:
        """Tombstones for node's entries of nid; suspend: they yield to the node's own word if it comes back
        (a reaped dead node's entries), and are not spread by our bulk syncs."""
        for (table, key), e in sorted(self.entries.get(nid, {}).items()):
            if e.owner != node:
                continue
            if not e.deleting:
                e.deleting, e.reap_at = True, self.now + self.config.reap_entry_s
                self._notify(DELETE, table, nid, key, e.value)
            e.suspended = suspend

    def _drop_node(self, node: str, dead: bool) -> None:
        for nid in list(self.entries):
            self._delete_owned(node, nid, suspend=dead)
        self.attachments.pop(node, None)
        for k in [k for k in self._assemblies if k[0] == node]:
            del self._assemblies[k]

    def _owns_suspended(self, node: str) -> bool:
        return any(e.owner == node and e.suspended for ents in self.entries.values() for e in ents.values())

    def _networks_with_entries_of(self, node: str) -> set[str]:
        return {nid for nid, ents in self.entries.items() if any(e.owner == node for e in ents.values())}

    def _notify(self, event: str, table: str, nid: str, key: str, value: bytes) -> None:
        for cb in list(self._watchers.get(table, ())):
            try:
                cb(event, nid, key, value)
            except Exception:  # a watcher's bug must not stop the table (nor the other watchers)
                log.exception("netdb: watcher of table %s failed on %s %s", table, event, key)

    # ------------------------------------------------------------------ diagnostics
    def peer_counts(self) -> dict[str, int]:
        """network id -> alive peers on it, for every network this node joined."""
        return {nid: len(self.peers(nid)) for nid in self.networks()}

    def entry_owners(self, network_id: str) -> dict[str, dict[str, int]]:
        """node -> table -> live entries it owns in network_id: which node a count comes from (`node gossip`)."""
        out: dict[str, dict[str, int]] = {}
        for (table, _key), e in self.entries.get(network_id, {}).items():
            if not e.deleting:
                by_table = out.setdefault(e.owner, {})
                by_table[table] = by_table.get(table, 0) + 1
        return out

    def entry_counts(self) -> dict[str, int]:
        return {nid: sum(1 for e in ents.values() if not e.deleting) for nid, ents in sorted(self.entries.items())}
