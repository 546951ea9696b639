"""The sans-IO SWIM + Lifeguard gossip core: probes, suspicion, dissemination, push-pull, join/rejoin (memberlist-shaped).
Fed by agent.gossip.shell (sockets) or agent.gossip.sim (virtual network); talks up through agent.gossip.delegate.

No sockets, clock or randomness of its own: the caller hands in `now` and a seeded random.Random, feeds
`receive(packet_from, data, now)` / `tick(now)` / push-pull frames, and drains `pop_outgoing()` (Datagram to send
over UDP, StreamRequest to carry over TCP and answer with `handle_stream_reply`). `next_deadline()` says when the
next tick is due: ask it after every input (it also arms the gossip timer for broadcasts a delegate queued meanwhile).

Timers exist only while they have work (an idle member wakes for its probe, about once a second): the gossip
timer runs only while broadcasts are queued (ours, or the delegate's when it has `pending_broadcasts()`), on the
same grid of gossip_interval it always had; the reap timer only while dead or left members are kept; ack and probe
deadlines of a probe that was answered are dropped instead of fired as no-ops.
"""

from __future__ import annotations

import functools
import heapq
import ipaddress
import logging
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from . import wire
from .awareness import Awareness
from .broadcast import TransmitLimitedQueue
from .delegate import Delegate, EventDelegate, Member, MemberState
from .suspicion import Suspicion, suspicion_timeout

log = logging.getLogger(__name__)

Addr = tuple[str, int]


@dataclass(slots=True)
class GossipConfig:
    """Tunables; defaults are memberlist's LAN profile (DESIGN §6) with Lifeguard on."""

    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    indirect_checks: int = 3
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    retransmit_mult: int = 4
    gossip_interval: float = 0.2
    gossip_nodes: int = 3
    gossip_to_the_dead_time: float = 30.0
    push_pull_interval: float = 30.0
    udp_buffer_size: int = 1400
    awareness_max_multiplier: int = 8
    lifeguard: bool = True            # off: fixed suspicion timeout, no nacks, no awareness, no buddy pings
    left_reap_time: float = 30.0      # a member that left is forgotten after this
    reconnect_interval: float = 30.0  # push-pull with one failed member this often (heals partitions)
    reconnect_timeout: float = 3600.0  # a failed member is forgotten (and no longer retried) after this
    rejoin_interval: float = 10.0     # when alone, push-pull with the seeds this often
    leave_timeout: float = 2.0        # the shell waits at most this for the leave to be gossiped
    max_stream_bytes: int = 32 << 20  # a push-pull frame larger than this is refused
    final_probe: bool = True          # probe a suspect once more when its timer runs out (shoal's addition)


@dataclass(slots=True)
class Datagram:
    """A UDP packet to send."""

    addr: str
    port: int
    data: bytes


@dataclass(slots=True)
class StreamRequest:
    """A push-pull exchange to carry over TCP: send data, hand the peer's answer to handle_stream_reply(id, ...)."""

    id: int
    addr: str
    port: int
    data: bytes
    join: bool


Outgoing = Datagram | StreamRequest


@dataclass(slots=True)
class NodeState:
    name: str
    addr: str
    port: int
    meta: bytes
    incarnation: int
    state: MemberState
    state_change: float

    def member(self) -> Member:
        return Member(self.name, self.addr, self.port, self.meta, self.incarnation, self.state)


@dataclass(slots=True)
class _AckHandler:
    kind: str                 # "probe": our own probe; "relay": an indirect ping we forward for origin
    target: str
    sent: float
    origin: Addr | None = None
    origin_seq: int = 0
    want_nack: bool = False
    nacks: int = 0
    expected_nacks: int = 0
    done: bool = False


_ACK_TIMERS = frozenset({"ack_timeout", "probe_deadline", "relay_timeout"})   # their arg is a key of _acks

_COUNTERS = ("packets_in", "packets_out", "msgs_in", "decode_errors", "misdirected_pings", "stale_updates",
             "unknown_acks", "stream_errors", "delegate_errors", "refutes", "probes", "probe_failures",
             "indirect_probes", "suspects", "deaths_declared", "saved_by_final_probe", "handler_errors",
             "bad_addresses")


@functools.lru_cache(maxsize=4096)
def _is_ip(addr: str) -> bool:
    try:
        ipaddress.ip_address(addr)
    except ValueError:
        return False
    return True


class GossipCore:
    def __init__(self, name: str, addr: str, port: int, delegate: Delegate | None, events: EventDelegate | None,
                 rng: random.Random, config: GossipConfig | None = None) -> None:
        self.name = name
        self.addr = addr
        self.port = port
        self.delegate = delegate
        self.events = events
        self.rng = rng
        self.config = config or GossipConfig()
        self.now = 0.0
        self.nodes: dict[str, NodeState] = {}
        self.counters: dict[str, int] = {k: 0 for k in _COUNTERS}
        self.awareness = Awareness(self.config.awareness_max_multiplier)
        self.broadcasts = TransmitLimitedQueue(self.config.retransmit_mult, self.num_members)
        self.seeds: list[Addr] = []
        self.leaving = False
        self.left_done = False
        self._outbox: list[Outgoing] = []
        self._timers: list[tuple[float, int, str, object]] = []
        self._timer_order = 0
        self._seq = self.rng.randrange(1 << 31)
        self._acks: dict[int, _AckHandler] = {}
        self._suspicions: dict[str, Suspicion] = {}
        self._probe_order: list[str] = []
        self._probe_index = 0
        self._streams: dict[int, StreamRequest] = {}
        self._stream_id = 0
        self._started = False
        self._num_cache = -1
        self._gossip_armed = False
        self._gossip_blocked = False   # the last round found nobody to send to: wait for a membership change
        self._gossip_slot = 0.0   # a point of the gossip grid: the timer fires at slot + k * gossip_interval
        self._reap_armed = False
        # a delegate without pending_broadcasts (an older user layer) keeps the gossip timer always armed
        self._delegate_pending = getattr(delegate, "pending_broadcasts", None) if delegate is not None else None
        # a delegate with get_broadcasts_for(member, overhead, limit) is told whom a packet goes to (when known),
        # so that it never spends an event's transmissions on a member that already has it
        self._delegate_for = getattr(delegate, "get_broadcasts_for", None) if delegate is not None else None
        self.decode = wire.decode   # the simulator swaps in a cached one (thousands of cores, the same bytes)

    # --- lifecycle ---------------------------------------------------------------------------------------

    def start(self, now: float) -> None:
        """Become alive (incarnation 0 unless we knew better) and start the periodic timers, staggered."""
        self.now = now
        meta = self._node_meta()
        me = self.nodes.get(self.name)
        inc = me.incarnation + 1 if me else 0
        self._alive(wire.Alive(inc, self.name, self.addr, self.port, meta), bootstrap=True)
        c = self.config
        for kind, every in (("probe", c.probe_interval), ("gossip", c.gossip_interval),
                            ("push_pull", c.push_pull_interval), ("reconnect", c.reconnect_interval),
                            ("rejoin", c.rejoin_interval), ("reap", 1.0)):
            first = now + self.rng.random() * every
            if kind == "gossip":
                self._gossip_slot = first
                self._gossip_armed = self._gossip_blocked = False
                self._arm_gossip()
            elif kind == "reap":
                self._reap_armed = False
                self._arm_reap(first)
            else:
                self._at(first, kind)
        self._started = True

    def join(self, seeds: Iterable[Addr]) -> list[StreamRequest]:
        """Push-pull (join) with every seed; the seeds are also retried whenever we find ourselves alone."""
        self.seeds = [(a, int(p)) for a, p in seeds if (a, int(p)) != (self.addr, self.port)]
        return [self._push_pull_to(a, p, join=True) for a, p in self.seeds]

    def leave(self, now: float) -> None:
        """Graceful leave: gossip our own death (from ourselves = left); shell waits for left_done, then stops."""
        self.now = now
        self.leaving = True
        me = self.nodes[self.name]
        msg = wire.Dead(me.incarnation, self.name, self.name)
        self._dead(msg)
        if not self._peers(alive_only=True):
            self.left_done = True

    # --- inputs ------------------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        self.now = max(self.now, now)
        while self._timers and self._timers[0][0] <= self.now:
            _, _, kind, arg = heapq.heappop(self._timers)
            getattr(self, "_on_" + kind)(arg)

    def next_deadline(self) -> float | None:
        """When tick is next due (None: never). Drops the deadlines of answered probes first, and arms the gossip
        timer when a delegate queued broadcasts since the last input."""
        timers = self._timers
        while timers and timers[0][2] in _ACK_TIMERS and timers[0][3] not in self._acks:
            heapq.heappop(timers)   # its handler would find no probe and return: not worth a wake-up
        if not self._gossip_armed and self._started:
            self._arm_gossip()
        return timers[0][0] if timers else None

    def receive(self, packet_from: Addr, data: bytes, now: float | None = None) -> None:
        """A UDP packet's plaintext. Garbage is counted in decode_errors and dropped; nothing raises."""
        if now is not None:
            self.now = max(self.now, now)
        self.counters["packets_in"] += 1
        try:
            parts = wire.decode_packet(data)
        except wire.DecodeError:
            self.counters["decode_errors"] += 1
            return
        for part in parts:
            try:
                msg = self.decode(part)
            except wire.DecodeError:
                self.counters["decode_errors"] += 1
                continue
            self.counters["msgs_in"] += 1
            try:
                self._handle(packet_from, msg)
            except Exception:  # a peer's message must never take the member down; counted, logged for a bug hunt
                log.debug("gossip message %r from %s failed", msg, packet_from, exc_info=True)
                self.counters["handler_errors"] += 1

    def handle_stream(self, packet_from: Addr, data: bytes, now: float | None = None) -> bytes | None:
        """A peer's push-pull frame: returns our state to send back, or None for garbage (close the connection)."""
        if now is not None:
            self.now = max(self.now, now)
        try:
            remote = wire.decode_push_pull(data)
        except wire.DecodeError:
            self.counters["stream_errors"] += 1
            return None
        reply = wire.encode_push_pull(self._local_push_pull(remote.join))
        self._merge(remote)
        return reply

    def handle_stream_reply(self, request_id: int, data: bytes | None, now: float | None = None) -> bool:
        """The answer to one of our StreamRequests (None when the exchange failed); True when merged."""
        if now is not None:
            self.now = max(self.now, now)
        req = self._streams.pop(request_id, None)
        if req is None or data is None:
            return False
        try:
            remote = wire.decode_push_pull(data)
        except wire.DecodeError:
            self.counters["stream_errors"] += 1
            return False
        self._merge(remote)
        return True

    def pop_outgoing(self) -> list[Outgoing]:
        out, self._outbox = self._outbox, []
        return out

    # --- queries and user messages -----------------------------------------------------------------------

    def members(self) -> list[Member]:
        """Every member we know, ourselves included, with its state (dead ones until forgotten)."""
        return [n.member() for n in self.nodes.values()]

    def num_members(self) -> int:
        """Alive and suspect members, ourselves included (cached: it is asked for on every packet)."""
        if self._num_cache < 0:
            self._num_cache = sum(1 for n in self.nodes.values()
                                  if n.state in (MemberState.ALIVE, MemberState.SUSPECT))
        return self._num_cache

    def state_of(self, name: str) -> MemberState | None:
        node = self.nodes.get(name)
        return node.state if node else None

    def send_to(self, name: str, data: bytes) -> bool:
        """A user message straight to one member over UDP (best effort); False for an unknown or dead member."""
        node = self.nodes.get(name)
        if node is None or node.state in (MemberState.DEAD, MemberState.LEFT) or name == self.name:
            return False
        self._send(node.addr, node.port, [wire.encode(wire.User(data))], to=name)
        return True

    def update_meta(self) -> None:
        """Re-read node_meta from the delegate and gossip it with a new incarnation."""
        me = self.nodes[self.name]
        self._refute(me, me.incarnation, meta=self._node_meta())

    # --- timers ------------------------------------------------------------------------------------------

    def _at(self, when: float, kind: str, arg: object = None) -> None:
        self._timer_order += 1
        heapq.heappush(self._timers, (when, self._timer_order, kind, arg))

    def _on_probe(self, _: object) -> None:
        interval = self.config.probe_interval
        if self.config.lifeguard:
            interval = self.awareness.scale(interval)
        self._at(self.now + interval, "probe")
        if self.leaving:
            return
        node = self._next_probe_target()
        if node is not None:
            self._probe(node, interval)

    def _pending(self) -> bool:
        """Whether a gossip round has anything to send: our broadcasts or the delegate's."""
        if len(self.broadcasts):
            return True
        if self._delegate_pending is None:
            return self.delegate is not None  # a delegate that cannot say: assume it always may have some
        try:
            return bool(self._delegate_pending())
        except Exception:
            log.exception("gossip delegate pending_broadcasts failed")
            self.counters["delegate_errors"] += 1
            return True

    def _arm_gossip(self) -> None:
        """Arm the gossip timer when something is queued: at the next point of its grid (a broadcast goes out
        within one gossip_interval, as when the timer never stopped)."""
        if self._gossip_armed or self._gossip_blocked or not self._pending():
            return
        every = self.config.gossip_interval
        slot = self._gossip_slot
        if slot < self.now:
            slot += math.ceil((self.now - slot) / every) * every
        self._gossip_slot = slot
        self._gossip_armed = True
        self._at(slot, "gossip")

    def _arm_reap(self, when: float) -> None:
        if not self._reap_armed:
            self._reap_armed = True
            self._at(when, "reap")

    def _on_gossip(self, _: object) -> None:
        self._gossip_armed = False
        if not self._pending():
            return   # nothing queued: the timer sleeps until a broadcast arms it again
        c = self.config
        targets = self._random_nodes(c.gossip_nodes, lambda n: n.state in (MemberState.ALIVE, MemberState.SUSPECT)
                                     or (n.state is MemberState.DEAD and
                                         self.now - n.state_change < c.gossip_to_the_dead_time))
        if not targets:
            # nobody to send to: any member becoming a target (alive, suspect, just dead) queues a broadcast
            # about itself, which unblocks and arms the timer again
            self._gossip_blocked = True
            return
        self._gossip_slot = self.now + c.gossip_interval
        self._gossip_armed = True
        self._at(self._gossip_slot, "gossip")
        for node in targets:
            # a target with nothing new for it (it got every queued event already) does not end the round
            self._send(node.addr, node.port, [], require_payload=True, to=node.name)

    def _on_push_pull(self, _: object) -> None:
        n = self.num_members()
        interval = self.config.push_pull_interval
        if n > 32:  # memberlist's pushPullScale: fewer full syncs per member as the cluster grows
            interval *= math.ceil(math.log2(n) - math.log2(32)) + 1
        self._at(self.now + interval, "push_pull")
        if self.leaving:
            return
        peers = self._random_nodes(1, lambda x: x.state is MemberState.ALIVE)
        if peers:
            self._push_pull_to(peers[0].addr, peers[0].port, join=False)

    def _on_reconnect(self, _: object) -> None:
        self._at(self.now + self.config.reconnect_interval, "reconnect")
        if self.leaving:
            return
        failed = self._random_nodes(1, lambda x: x.state is MemberState.DEAD)
        if failed:
            self._push_pull_to(failed[0].addr, failed[0].port, join=False)

    def _on_rejoin(self, _: object) -> None:
        self._at(self.now + self.config.rejoin_interval, "rejoin")
        if self.leaving or not self.seeds or self._peers(alive_only=False):
            return
        for a, p in self.seeds:
            self._push_pull_to(a, p, join=True)

    def _on_reap(self, _: object) -> None:
        self._reap_armed = False
        c = self.config
        kept = False   # a dead or left member still kept: look again in a second
        for name, node in list(self.nodes.items()):
            if name == self.name or node.state not in (MemberState.LEFT, MemberState.DEAD):
                continue
            age = self.now - node.state_change
            if (node.state is MemberState.LEFT and age > c.left_reap_time) or \
                    (node.state is MemberState.DEAD and age > c.reconnect_timeout):
                del self.nodes[name]
                self._num_cache = -1
            else:
                kept = True
        if kept:
            self._arm_reap(self.now + 1.0)

    def _on_ack_timeout(self, seq: int) -> None:
        """No direct ack within probe_timeout: ask k others to probe for us (with nacks under Lifeguard)."""
        h = self._acks.get(seq)
        if h is None or h.done or h.kind == "relay":
            return
        target = self.nodes.get(h.target)
        if target is None:
            return
        helpers = self._random_nodes(self.config.indirect_checks,
                                     lambda n: n.state is MemberState.ALIVE and n.name != h.target)
        nack = self.config.lifeguard
        for helper in helpers:
            self.counters["indirect_probes"] += 1
            msg = wire.IndirectPing(seq, target.name, target.addr, target.port, nack, self.name, self.addr, self.port)
            self._send(helper.addr, helper.port, [wire.encode(msg)], to=helper.name)
        h.expected_nacks = len(helpers) if nack else 0

    def _on_probe_deadline(self, seq: int) -> None:
        h = self._acks.pop(seq, None)
        if h is None or h.done:
            return
        if h.kind == "final":
            susp = self._suspicions.get(h.target)
            if susp is None or not susp.final_probe:
                return
            del self._suspicions[h.target]
            node = self.nodes.get(h.target)
            if node is not None and node.state is MemberState.SUSPECT and \
                    node.incarnation == susp.incarnation:
                self._declare_dead(node)
            return
        self.counters["probe_failures"] += 1
        if self.config.lifeguard:
            # Missing nacks mean the trouble may be ours (Lifeguard LHA): stretch our own timeouts.
            if h.expected_nacks > 0:
                self.awareness.apply_delta(max(0, h.expected_nacks - h.nacks))
            else:
                self.awareness.apply_delta(1)
        node = self.nodes.get(h.target)
        if node is None or node.state in (MemberState.DEAD, MemberState.LEFT):
            return
        self._suspect(wire.Suspect(node.incarnation, node.name, self.name))

    def _on_relay_timeout(self, seq: int) -> None:
        h = self._acks.pop(seq, None)
        if h is None or h.done:
            return
        if h.want_nack and h.origin is not None:
            self._send(h.origin[0], h.origin[1], [wire.encode(wire.Nack(h.origin_seq))])

    def _on_suspicion(self, name: str) -> None:
        s = self._suspicions.get(name)
        if s is None or s.final_probe:
            return
        due = s.deadline()
        if due > self.now + 1e-9:
            self._at(due, "suspicion", name)  # a stale entry after a rescheduling: the live one fires later
            return
        node = self.nodes.get(name)
        if node is None or node.state is not MemberState.SUSPECT or node.incarnation != s.incarnation:
            del self._suspicions[name]
            return
        if not self.config.final_probe:
            del self._suspicions[name]
            self._declare_dead(node)
            return
        # One last probe (direct, indirect, buddy suspect) before the verdict: a lone suspecter that missed the
        # member's refutation (an epidemic's tail under loss) hears it on the ack instead of declaring a live
        # member dead. Costs a dead member one probe interval of detection time.
        s.final_probe = True
        interval = self.config.probe_interval
        if self.config.lifeguard:
            interval = self.awareness.scale(interval)
        self._probe(node, interval, kind="final")

    def _declare_dead(self, node: NodeState) -> None:
        self.counters["deaths_declared"] += 1
        self._dead(wire.Dead(node.incarnation, node.name, self.name))

    # --- probing -----------------------------------------------------------------------------------------

    def _answered_final_probe(self, name: str) -> None:
        """A suspect answered our last probe: it lives. Local only (its refutation, if any, is gossiped by it)."""
        susp = self._suspicions.get(name)
        if susp is None or not susp.final_probe:
            return
        del self._suspicions[name]
        node = self.nodes.get(name)
        if node is not None and node.state is MemberState.SUSPECT:
            self.counters["saved_by_final_probe"] += 1
            node.state = MemberState.ALIVE
            node.state_change = self.now

    def _next_probe_target(self) -> NodeState | None:
        for _ in range(len(self._probe_order) + 1):
            if self._probe_index >= len(self._probe_order):
                self._reset_probe_order()
                if not self._probe_order:
                    return None
            name = self._probe_order[self._probe_index]
            self._probe_index += 1
            node = self.nodes.get(name)
            if node is not None and name != self.name and node.state in (MemberState.ALIVE, MemberState.SUSPECT):
                return node
        return None

    def _reset_probe_order(self) -> None:
        self._probe_order = [n for n in self.nodes if n != self.name]
        self.rng.shuffle(self._probe_order)
        self._probe_index = 0

    def _probe(self, node: NodeState, interval: float, kind: str = "probe") -> None:
        self.counters["probes"] += 1
        seq = self._next_seq()
        self._acks[seq] = _AckHandler(kind, node.name, self.now)
        parts = [wire.encode(wire.Ping(seq, node.name, self.name, self.addr, self.port))]
        if node.state is MemberState.SUSPECT and (self.config.lifeguard or kind == "final"):
            # Lifeguard's buddy system: tell a suspect at once so it can refute; first, so that the refutation
            # is queued before the ack is built and rides on it
            parts.insert(0, wire.encode(wire.Suspect(node.incarnation, node.name, self.name)))
        self._send(node.addr, node.port, parts, to=node.name)
        self._at(self.now + self.config.probe_timeout, "ack_timeout", seq)
        self._at(self.now + interval, "probe_deadline", seq)

    # --- message handling --------------------------------------------------------------------------------

    def _handle(self, packet_from: Addr, msg: wire.Message) -> None:
        match msg:
            case wire.User():  # first: the layer above's messages are most of a busy member's traffic
                self._call("notify_msg", msg.data)
            case wire.Ping():
                if msg.target and msg.target != self.name:
                    self.counters["misdirected_pings"] += 1
                    return
                self._send(packet_from[0], packet_from[1], [wire.encode(wire.Ack(msg.seq))],
                           to=self._name_at(msg.source, packet_from))
            case wire.IndirectPing() if not _is_ip(msg.target_addr):
                self.counters["bad_addresses"] += 1
            case wire.IndirectPing():
                seq = self._next_seq()
                self._acks[seq] = _AckHandler("relay", msg.target, self.now, origin=packet_from,
                                              origin_seq=msg.seq, want_nack=msg.nack)
                ping = wire.Ping(seq, msg.target, self.name, self.addr, self.port)
                self._send(msg.target_addr, msg.target_port, [wire.encode(ping)],
                           to=self._name_at(msg.target, (msg.target_addr, msg.target_port)))
                self._at(self.now + self.config.probe_timeout, "relay_timeout", seq)
            case wire.Ack():
                h = self._acks.get(msg.seq)
                if h is None or h.done:
                    self.counters["unknown_acks"] += 1
                    return
                h.done = True
                del self._acks[msg.seq]
                if h.kind == "probe":
                    if self.config.lifeguard:
                        self.awareness.apply_delta(-1)
                elif h.kind == "final":
                    self._answered_final_probe(h.target)
                elif h.origin is not None:
                    self._send(h.origin[0], h.origin[1], [wire.encode(wire.Ack(h.origin_seq))])
            case wire.Nack():
                h = self._acks.get(msg.seq)
                if h is not None and h.kind == "probe":
                    h.nacks += 1
            case wire.Alive():
                self._alive(msg)
            case wire.Suspect():
                self._suspect(msg)
            case wire.Dead():
                self._dead(msg)

    # --- state transitions (memberlist state.go: aliveNode, suspectNode, deadNode) -------------------------

    def _alive(self, a: wire.Alive, bootstrap: bool = False) -> None:
        if not bootstrap and not _is_ip(a.addr):
            # only IP literals: a name would make the shell resolve it (blocking, and to anywhere)
            self.counters["bad_addresses"] += 1
            return
        if self.leaving and a.node == self.name and not bootstrap:
            return
        node = self.nodes.get(a.node)
        if node is not None and a.incarnation == node.incarnation and node.state is MemberState.ALIVE \
                and not bootstrap and a.node != self.name:
            return   # the common case: news we already have
        if node is None:
            if a.node == self.name and not bootstrap:
                return
            node = NodeState(a.node, a.addr, a.port, a.meta, a.incarnation, MemberState.ALIVE, self.now)
            self.nodes[a.node] = node
            self._num_cache = -1
            if a.node != self.name:
                # a random place in the probe order so newcomers are not all probed at once
                self._probe_order.insert(self.rng.randint(self._probe_index, len(self._probe_order)), a.node)
            self._broadcast(a.node, wire.Alive(a.incarnation, a.node, a.addr, a.port, a.meta))
            self._event("notify_join", node)
            return
        if a.node == self.name and not bootstrap:
            if a.incarnation < node.incarnation or (a.incarnation == node.incarnation and a.addr == node.addr and
                                                   a.port == node.port and a.meta == node.meta):
                return
            # someone says something newer about us than we do: claim ourselves back
            self._refute(node, a.incarnation)
            return
        was_down = node.state in (MemberState.DEAD, MemberState.LEFT)
        addr_change = (a.addr, a.port) != (node.addr, node.port)
        if a.incarnation <= node.incarnation and not bootstrap and not (was_down and addr_change):
            if a.incarnation < node.incarnation:
                self.counters["stale_updates"] += 1
            return
        meta_change = a.meta != node.meta or addr_change
        node.incarnation = a.incarnation
        node.addr, node.port, node.meta = a.addr, a.port, a.meta
        self._suspicions.pop(a.node, None)
        if node.state is not MemberState.ALIVE:
            node.state = MemberState.ALIVE
            node.state_change = self.now
            if was_down:
                self._num_cache = -1
        self._broadcast(a.node, wire.Alive(a.incarnation, a.node, a.addr, a.port, a.meta))
        if was_down:
            self._event("notify_join", node)
        elif meta_change:
            self._event("notify_update", node)

    def _suspect(self, s: wire.Suspect) -> None:
        node = self.nodes.get(s.node)
        if node is None:
            return
        if s.incarnation < node.incarnation:
            self.counters["stale_updates"] += 1
            if s.node == self.name and not self.leaving:
                self._reassert()
            return
        susp = self._suspicions.get(s.node)
        if susp is not None and node.state is MemberState.SUSPECT and s.incarnation > susp.incarnation:
            # the member refuted the suspicion we hold (we missed its alive) and is suspected anew: a fresh timer,
            # not a confirmation of the stale one (memberlist would confirm, and declare it dead too early)
            del self._suspicions[s.node]
            node.state = MemberState.ALIVE
            susp = None
        if susp is not None and node.state is MemberState.SUSPECT:
            if susp.confirm(s.sender):
                self._at(susp.deadline(), "suspicion", s.node)
                self._broadcast(s.node, s)
            return
        if node.state is not MemberState.ALIVE:
            return
        if s.node == self.name:
            if self.leaving:
                return
            self._refute(node, s.incarnation)
            if self.config.lifeguard:
                self.awareness.apply_delta(1)
            return
        self.counters["suspects"] += 1
        node.incarnation = s.incarnation
        node.state = MemberState.SUSPECT
        node.state_change = self.now
        c = self.config
        n = self.num_members()
        k = c.suspicion_mult - 2
        if n - 2 < k or not c.lifeguard:
            k = 0   # not enough members to expect confirmations (or Lifeguard off: the fixed timeout)
        lo = suspicion_timeout(c.suspicion_mult, n, c.probe_interval)
        hi = c.suspicion_max_timeout_mult * lo if c.lifeguard else lo
        susp = Suspicion(self.now, k, lo, hi, s.sender, s.incarnation)
        self._suspicions[s.node] = susp
        self._at(susp.deadline(), "suspicion", s.node)
        self._broadcast(s.node, s)

    def _dead(self, d: wire.Dead) -> None:
        node = self.nodes.get(d.node)
        if node is None:
            return
        if d.incarnation < node.incarnation:
            self.counters["stale_updates"] += 1
            if d.node == self.name and not self.leaving:
                self._reassert()
            return
        if node.state in (MemberState.DEAD, MemberState.LEFT):
            return
        if d.node == self.name and not self.leaving:
            self._refute(node, d.incarnation)
            return
        self._suspicions.pop(d.node, None)
        node.incarnation = d.incarnation
        node.state = MemberState.LEFT if d.sender == d.node else MemberState.DEAD
        node.state_change = self.now
        self._num_cache = -1
        if d.node != self.name:
            self._arm_reap(self.now + 1.0)
        on_done = self._leave_sent if d.node == self.name else None
        self._broadcast(d.node, d, on_done)
        if d.node != self.name:
            self._event("notify_leave", node)

    def _leave_sent(self) -> None:
        self.left_done = True

    def _reassert(self) -> None:
        """Someone still holds an old accusation of us: gossip our current alive again (it rides on the ack)."""
        me = self.nodes[self.name]
        self._broadcast(self.name, wire.Alive(me.incarnation, self.name, self.addr, self.port, me.meta))

    def _refute(self, me: NodeState, accused_inc: int, meta: bytes | None = None) -> None:
        self.counters["refutes"] += 1
        me.incarnation = min(max(me.incarnation, accused_inc) + 1, 0xFFFFFFFF)   # u32 on the wire
        if meta is not None:
            me.meta = meta
        self._broadcast(self.name, wire.Alive(me.incarnation, self.name, self.addr, self.port, me.meta))

    # --- push-pull ---------------------------------------------------------------------------------------

    def _local_push_pull(self, join: bool) -> wire.PushPull:
        records = [wire.MemberRecord(n.name, n.addr, n.port, n.incarnation, n.state, n.meta)
                   for n in self.nodes.values()]
        user = b""
        if self.delegate is not None:
            try:
                user = self.delegate.local_state(join)
            except Exception:  # the layer above must not take membership down with it
                log.exception("gossip delegate local_state failed")
                self.counters["delegate_errors"] += 1
        return wire.PushPull(join, records, user)

    def _push_pull_to(self, addr: str, port: int, join: bool) -> StreamRequest:
        self._stream_id += 1
        req = StreamRequest(self._stream_id, addr, port, wire.encode_push_pull(self._local_push_pull(join)), join)
        self._streams[req.id] = req
        self._outbox.append(req)
        return req

    def _merge(self, remote: wire.PushPull) -> None:
        for r in remote.members:
            if r.state is MemberState.ALIVE:
                self._alive(wire.Alive(r.incarnation, r.name, r.addr, r.port, r.meta))
            elif r.state is MemberState.LEFT:
                self._dead(wire.Dead(r.incarnation, r.name, r.name))
            else:
                # memberlist: a peer's "dead" becomes our suspicion, so the accused can still refute
                if r.name not in self.nodes:
                    continue
                self._suspect(wire.Suspect(r.incarnation, r.name, self.name))
        if self.delegate is not None and remote.user_state:
            self._call("merge_remote_state", remote.user_state, remote.join)

    # --- sending -----------------------------------------------------------------------------------------

    def _send(self, addr: str, port: int, parts: list[bytes], require_payload: bool = False,
              to: str | None = None) -> bool:
        """One packet: the given messages plus as many piggybacked broadcasts as fit in udp_buffer_size; to: the
        member it goes to, when known (the delegate then leaves out what that member already got from us)."""
        overhead = wire.COMPOUND_OVERHEAD
        room = self.config.udp_buffer_size - wire.PACKET_OVERHEAD - sum(len(p) + overhead for p in parts)
        extra = self.broadcasts.get(overhead, room)
        room -= sum(len(b) + overhead for b in extra)
        if self.delegate is not None and room > overhead + 3:
            try:
                if to is not None and self._delegate_for is not None:
                    user = self._delegate_for(to, overhead + 3, room)
                else:
                    user = self.delegate.get_broadcasts(overhead + 3, room)
            except Exception:
                log.exception("gossip delegate get_broadcasts failed")
                self.counters["delegate_errors"] += 1
                user = []
            for data in user:
                if len(data) + 3 + overhead > room:
                    break
                extra.append(wire.encode(wire.User(data)))
                room -= len(data) + 3 + overhead
        if require_payload and not extra:
            return False
        msgs = (parts + extra)[:wire.MAX_PACKET_MSGS]
        if not msgs:
            return False
        self.counters["packets_out"] += 1
        self._outbox.append(Datagram(addr, port, wire.encode_packet(msgs)))
        return True

    def _broadcast(self, key: str, msg: wire.Message, on_done=None) -> None:
        self.broadcasts.queue(wire.encode(msg), key=key, on_done=on_done)
        if self._started:
            self._gossip_blocked = False
            self._arm_gossip()

    # --- helpers -----------------------------------------------------------------------------------------

    def _name_at(self, name: str, addr: Addr) -> str | None:
        """name, if it is the member we know at addr (a packet's claim of its source is not trusted further)."""
        node = self.nodes.get(name)
        return name if node is not None and (node.addr, node.port) == (addr[0], addr[1]) else None

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    def _peers(self, alive_only: bool) -> list[NodeState]:
        ok = (MemberState.ALIVE,) if alive_only else (MemberState.ALIVE, MemberState.SUSPECT)
        return [n for n in self.nodes.values() if n.name != self.name and n.state in ok]

    def _random_nodes(self, k: int, pred) -> list[NodeState]:
        """Up to k distinct random members other than ourselves that satisfy pred (memberlist kRandomNodes)."""
        names = list(self.nodes)
        out: list[NodeState] = []
        tries = 0
        n = len(names)
        # sample with a bounded number of tries first (cheap for big tables), then fall back to a scan
        while len(out) < k and tries < 3 * n:
            tries += 1
            node = self.nodes[names[self.rng.randrange(n)]] if n else None
            if node is None:
                break
            if node.name != self.name and all(x is not node for x in out) and pred(node):
                out.append(node)
        if len(out) < k and tries >= 3 * n:
            taken = {x.name for x in out}
            rest = [x for x in self.nodes.values() if x.name != self.name and x.name not in taken and pred(x)]
            self.rng.shuffle(rest)
            out.extend(rest[:k - len(out)])
        return out

    def _node_meta(self) -> bytes:
        if self.delegate is None:
            return b""
        try:
            meta = self.delegate.node_meta(wire.MAX_META)
        except Exception:
            log.exception("gossip delegate node_meta failed")
            self.counters["delegate_errors"] += 1
            return b""
        return meta[:wire.MAX_META]

    def _event(self, method: str, node: NodeState) -> None:
        if self.events is None:
            return
        try:
            getattr(self.events, method)(node.member())
        except Exception:
            log.exception("gossip event delegate %s failed", method)
            self.counters["delegate_errors"] += 1

    def _call(self, method: str, *args) -> None:
        if self.delegate is None:
            return
        try:
            getattr(self.delegate, method)(*args)
        except Exception:
            log.exception("gossip delegate %s failed", method)
            self.counters["delegate_errors"] += 1
