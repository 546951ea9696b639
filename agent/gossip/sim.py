"""Seeded simulation of many gossip cores on a virtual clock over a lossy, delaying, partitionable network.
Drives agent.gossip.core.GossipCore directly (no sockets); `python -m agent.gossip.sim --members 500 --loss 0.2 --seed N`.

Scenarios (each prints its figures and returns them for the tests in tests/unit/test_gossip_sim.py):
  spread     a user broadcast from one member reaches every member; rounds measured next to the epidemic bound
  failure    a crashed member is declared dead by every live member within the suspicion bound
  slow       members with delayed processing (each packet a slow member receives waits uniform(0, 2.5 s) before
             it is handled): with Lifeguard on no live member, slow or healthy, is ever declared dead; with it
             off (fixed minimum suspicion timeout, no nacks, no local health awareness, no buddy pings) some are
  partition  two halves are cut apart, each declares the other dead; after the heal membership converges
Epidemic bound used (Pittel's push-epidemic estimate, fanout f per round, loss p, effective fanout
f' = f * (1 - p)): rounds(N) = log_(1+f')(N) + ln(N) / f'. A round is one gossip interval (200 ms).
"""

from __future__ import annotations

import argparse
import functools
import heapq
import math
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

from . import wire
from .broadcast import TransmitLimitedQueue
from .core import Datagram, GossipConfig, GossipCore, StreamRequest
from .delegate import Member, MemberState
from .suspicion import suspicion_timeout

GOSSIP_PORT = 7946
_LIVE = (MemberState.ALIVE, MemberState.SUSPECT)


def epidemic_bound(n: int, fanout: int, loss: float) -> float:
    f = max(fanout * (1.0 - loss), 1e-9)
    return math.log(n) / math.log(1.0 + f) + math.log(n) / f


def dead_bound(members: int, config: GossipConfig | None = None, loss: float = 0.0) -> float:
    """Seconds from a member's crash until every other member has declared it dead (the lab's bound; read by
    tests/lab/test_overlay_faults.py and bench/gossip_lab.py): each member probes the others round-robin, one a
    probe interval, so one of them probes the crashed member within members - 1 intervals and suspects it after the
    probe timeout; the others hear the suspicion and run Lifeguard's suspicion timer, at most max_mult x mult x
    max(1, log10 N) probe intervals; one last probe before the verdict; the death spreads in epidemic rounds."""
    c = config or GossipConfig()
    lo = suspicion_timeout(c.suspicion_mult, members, c.probe_interval)
    hi = c.suspicion_max_timeout_mult * lo if c.lifeguard else lo
    detect = (members - 1) * c.probe_interval + c.probe_timeout
    final = c.probe_interval if c.final_probe else 0.0
    return detect + hi + final + epidemic_bound(members, c.gossip_nodes, loss) * c.gossip_interval


@dataclass(slots=True)
class SimDelegate:
    """A user layer like networkdb's, reduced to a set of entries: learn an entry once, then gossip it on."""

    name: str
    queue: TransmitLimitedQueue
    entries: dict[bytes, float] = field(default_factory=dict)
    clock: Callable[[], float] = lambda: 0.0
    by_sync: set[bytes] = field(default_factory=set)   # learned from a push-pull, not from gossip

    def node_meta(self, limit: int) -> bytes:
        return b""

    def notify_msg(self, data: bytes) -> None:
        if data not in self.entries:
            self.entries[data] = self.clock()
            self.queue.queue(data, key=data.decode(errors="replace"))

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        return self.queue.get(overhead, limit)

    def pending_broadcasts(self) -> bool:
        return len(self.queue) > 0

    def local_state(self, join: bool) -> bytes:
        return b"\n".join(sorted(self.entries))

    def merge_remote_state(self, data: bytes, join: bool) -> None:
        for entry in data.split(b"\n"):
            if entry and entry not in self.entries:
                self.entries[entry] = self.clock()
                self.by_sync.add(entry)


@dataclass(slots=True)
class Declaration:
    time: float
    observer: str
    subject: str
    kind: str   # "join" | "leave" | "update"


class SimEvents:
    __slots__ = ("name", "log")

    def __init__(self, name: str, log: list[Declaration]) -> None:
        self.name = name
        self.log = log

    def notify_join(self, member: Member) -> None:
        self.log.append(Declaration(_NOW[0], self.name, member.name, "join"))

    def notify_leave(self, member: Member) -> None:
        kind = "left" if member.state is MemberState.LEFT else "dead"
        self.log.append(Declaration(_NOW[0], self.name, member.name, kind))

    def notify_update(self, member: Member) -> None:
        self.log.append(Declaration(_NOW[0], self.name, member.name, "update"))


_NOW = [0.0]   # the virtual clock, read by delegates and event sinks


@dataclass(slots=True)
class SimMember:
    name: str
    addr: str
    core: GossipCore
    delegate: SimDelegate
    up: bool = True
    slow: float = 0.0          # processing delay: each inbound packet waits uniform(0, slow) extra seconds
    group: int = 0             # partition group; packets cross groups only when not partitioned
    tick_at: float = math.inf


@functools.lru_cache(maxsize=1 << 16)
def _cached_decode(part: bytes) -> wire.Message:
    # every member decodes the same gossip bytes; messages are never mutated by the core, so sharing is safe
    return wire.decode(part)


class Simulation:
    def __init__(self, n: int, seed: int, loss: float = 0.0, delay: tuple[float, float] = (0.001, 0.010),
                 config: GossipConfig | None = None, lifeguard: bool = True) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.delay = delay
        self.config = config or GossipConfig()
        self.config.lifeguard = lifeguard
        self.now = 0.0
        self.events: list[tuple[float, int, str, tuple]] = []
        self.order = 0
        self.log: list[Declaration] = []
        self.partitioned = False
        self.members: list[SimMember] = []
        self.by_addr: dict[str, SimMember] = {}
        self.packets = 0
        for i in range(n):
            name = f"m{i:04d}"
            addr = f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}"
            core_rng = random.Random(self.rng.getrandbits(64))
            m = SimMember(name, addr, None, None)  # type: ignore[arg-type]
            m.delegate = SimDelegate(name, None, clock=lambda: _NOW[0])  # type: ignore[arg-type]
            m.core = GossipCore(name, addr, GOSSIP_PORT, m.delegate, SimEvents(name, self.log), core_rng,
                                self._member_config())
            m.delegate.queue = TransmitLimitedQueue(self.config.retransmit_mult, m.core.num_members)
            m.core.decode = _cached_decode
            self.members.append(m)
            self.by_addr[addr] = m

    def _member_config(self) -> GossipConfig:
        c = self.config
        return GossipConfig(**{f: getattr(c, f) for f in c.__dataclass_fields__})

    # --- driving -----------------------------------------------------------------------------------------

    def _push(self, when: float, kind: str, args: tuple) -> None:
        self.order += 1
        heapq.heappush(self.events, (when, self.order, kind, args))

    def _arm(self, m: SimMember) -> None:
        due = m.core.next_deadline()
        if due is not None and due < m.tick_at:
            m.tick_at = due
            self._push(due, "tick", (m,))

    def _flush(self, m: SimMember) -> None:
        for out in m.core.pop_outgoing():
            if isinstance(out, Datagram):
                self._send_datagram(m, out)
            else:
                self._send_stream(m, out)
        self._arm(m)

    def _lost(self, a: SimMember, b: SimMember | None) -> bool:
        if b is None or not b.up:
            return True
        if self.partitioned and a.group != b.group:
            return True
        return False

    def _send_datagram(self, src: SimMember, d: Datagram) -> None:
        self.packets += 1
        dst = self.by_addr.get(d.addr)
        if self._lost(src, dst) or self.rng.random() < self.loss:
            return
        when = self.now + self.rng.uniform(*self.delay)
        if dst.slow:
            when += self.rng.uniform(0.0, dst.slow)
        self._push(when, "packet", (dst, (src.addr, GOSSIP_PORT), d.data))

    def _send_stream(self, src: SimMember, req: StreamRequest) -> None:
        self._push(self.now + self.rng.uniform(*self.delay), "stream", (src, req))

    def step(self) -> bool:
        if not self.events:
            return False
        when, _, kind, args = heapq.heappop(self.events)
        self.now = max(self.now, when)
        _NOW[0] = self.now
        if kind == "tick":
            m = args[0]
            if when != m.tick_at or not m.up:
                return True
            m.tick_at = math.inf
            m.core.tick(self.now)
            self._flush(m)
        elif kind == "packet":
            m, src, data = args
            if m.up:
                m.core.receive(src, data, self.now)
                self._flush(m)
        elif kind == "stream":
            src, req = args
            dst = self.by_addr.get(req.addr)
            reply = None
            if src.up and not self._lost(src, dst):
                reply = dst.core.handle_stream((src.addr, GOSSIP_PORT), req.data, self.now)
                self._flush(dst)
            self._push(self.now + self.rng.uniform(*self.delay), "stream_reply", (src, req.id, reply))
        elif kind == "stream_reply":
            src, rid, reply = args
            if src.up:
                src.core.handle_stream_reply(rid, reply, self.now)
                self._flush(src)
        elif kind == "call":
            args[0]()
        return True

    def run_until(self, t: float, stop: Callable[[], bool] | None = None, check_every: float = 0.1) -> bool:
        """Runs to virtual time t; with stop, returns True as soon as stop() holds (checked every check_every)."""
        next_check = self.now
        while self.events and self.events[0][0] <= t:
            self.step()
            if stop is not None and self.now >= next_check:
                next_check = self.now + check_every
                if stop():
                    return True
        self.now = max(self.now, t)
        _NOW[0] = self.now
        return stop() if stop is not None else True

    # --- scenario building blocks ------------------------------------------------------------------------

    def start(self, bootstrap: str = "static", seeds: int = 3) -> None:
        """static: every table starts with every member (fast); join: each member joins through `seeds` seeds."""
        if bootstrap == "static":
            from .core import NodeState
            for m in self.members:
                for o in self.members:
                    if o is not m:
                        m.core.nodes[o.name] = NodeState(o.name, o.addr, GOSSIP_PORT, b"", 0, MemberState.ALIVE,
                                                         self.now)
        for m in self.members:
            m.core.start(self.now)
            m.core.pop_outgoing()
            self._arm(m)
        if bootstrap == "join":
            seed_addrs = [(m.addr, GOSSIP_PORT) for m in self.members[:seeds]]
            for i, m in enumerate(self.members):
                # members arrive over the first seconds, as daemons starting up would
                self._push(self.now + 0.01 * i, "call", (lambda m=m: (m.core.join(seed_addrs), self._flush(m)),))

    def converged(self, alive: set[str] | None = None) -> bool:
        """Every up member holds exactly the up members as live (alive or suspect: a suspect is being checked,
        and at 20% loss some member is always briefly suspected) and no up member as dead or unknown."""
        up = alive if alive is not None else {m.name for m in self.members if m.up}
        for m in self.members:
            if not m.up:
                continue
            seen = {n.name for n in m.core.nodes.values() if n.state in _LIVE}
            if seen != up:
                return False
        return True

    def crash(self, m: SimMember) -> None:
        m.up = False

    def inject(self, m: SimMember, entry: bytes) -> None:
        m.delegate.notify_msg(entry)
        self._arm(m)   # as the shell's poke: the core arms its gossip timer for the delegate's new broadcast

    def deaths_of_live_members(self, since: float = 0.0) -> list[Declaration]:
        up = {m.name for m in self.members if m.up}
        return [d for d in self.log if d.kind == "dead" and d.subject in up and d.time >= since]


# --- scenarios -----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class SpreadResult:
    members: int
    rounds: float            # until every member had the entry (by gossip or, for an epidemic's tail, push-pull)
    bound: float
    virtual_seconds: float
    reached: int
    join_seconds: float | None
    by_gossip: int           # members that got it from the epidemic
    gossip_rounds: float     # until the last of those


def scenario_spread(n: int, seed: int, loss: float, bootstrap: str = "static", timeout: float = 130.0,
                    out=print) -> SpreadResult:
    sim = Simulation(n, seed, loss)
    sim.start(bootstrap)
    join_seconds = None
    if bootstrap == "join":
        t0 = sim.now
        if not sim.run_until(t0 + 300.0, sim.converged, check_every=0.5):
            raise AssertionError(f"membership of {n} did not converge in 300 s after join")
        join_seconds = sim.now - t0
    sim.run_until(sim.now + 2.0)
    origin = sim.members[sim.rng.randrange(n)]
    entry = f"entry-{seed}".encode()
    t0 = sim.now
    sim.inject(origin, entry)
    done = sim.run_until(t0 + timeout, lambda: all(entry in m.delegate.entries for m in sim.members),
                         check_every=0.01)
    reached = sum(1 for m in sim.members if entry in m.delegate.entries)
    last = max((m.delegate.entries.get(entry, math.inf) for m in sim.members), default=math.inf)
    gi = sim.config.gossip_interval
    rounds = (last - t0) / gi if done else math.inf
    gossiped = [m.delegate.entries[entry] for m in sim.members
                if entry in m.delegate.entries and entry not in m.delegate.by_sync]
    gossip_rounds = (max(gossiped) - t0) / gi
    bound = epidemic_bound(n, sim.config.gossip_nodes, loss)
    out(f"spread: N={n} loss={loss:.0%} seed={seed}: entry reached {reached}/{n} members in {rounds:.1f} rounds "
        f"({last - t0:.2f} s virtual; {len(gossiped)} by gossip within {gossip_rounds:.1f} rounds, "
        f"{reached - len(gossiped)} by push-pull); epidemic bound log_(1+f')(N) + ln(N)/f' = {bound:.1f} rounds "
        f"(f'={sim.config.gossip_nodes}*(1-{loss}))"
        + (f"; join of all {n} converged in {join_seconds:.1f} s" if join_seconds is not None else ""))
    return SpreadResult(n, rounds, bound, last - t0, reached, join_seconds, len(gossiped), gossip_rounds)


@dataclass(slots=True)
class FailureResult:
    members: int
    first_suspect: float
    all_dead: float
    bound: float
    lo: float
    hi: float


def scenario_failure(n: int, seed: int, loss: float, timeout: float = 200.0, out=print) -> FailureResult:
    sim = Simulation(n, seed, loss)
    sim.start()
    sim.run_until(5.0)
    victim = sim.members[sim.rng.randrange(n)]
    t0 = sim.now
    sim.crash(victim)
    others = [m for m in sim.members if m.up]

    def suspected() -> bool:
        return any(m.core.state_of(victim.name) is not MemberState.ALIVE for m in others)

    sim.run_until(t0 + timeout, suspected, check_every=0.05)
    first = sim.now - t0

    def all_dead() -> bool:
        return all(m.core.state_of(victim.name) is MemberState.DEAD for m in others)

    done = sim.run_until(t0 + timeout, all_dead, check_every=0.05)
    c = sim.config
    lo = suspicion_timeout(c.suspicion_mult, n, c.probe_interval)
    hi = c.suspicion_max_timeout_mult * lo
    # the bound: a probe cycle of detection (suspected within a few probe intervals: ~1 prober per second
    # reaches the victim), the max suspicion timeout, then dissemination of the death (epidemic rounds)
    bound = 5 * c.probe_interval + hi + epidemic_bound(n, c.gossip_nodes, loss) * c.gossip_interval
    t_all = sim.now - t0 if done else math.inf
    out(f"failure: N={n} loss={loss:.0%} seed={seed}: first suspicion after {first:.1f} s, dead at every live "
        f"member after {t_all:.1f} s; suspicion timeout min {lo:.1f} s max {hi:.1f} s; bound "
        f"5*probe + max + dissemination = {bound:.1f} s")
    return FailureResult(n, first, t_all, bound, lo, hi)


@dataclass(slots=True)
class SlowResult:
    members: int
    slow: list[str]
    lifeguard: bool
    false_deaths: list[Declaration]
    false_deaths_of_slow: list[Declaration]


def scenario_slow(n: int, seed: int, loss: float, lifeguard: bool, slow_members: int = 3, slow_delay: float = 2.5,
                  duration: float = 120.0, out=print) -> SlowResult:
    sim = Simulation(n, seed, loss, lifeguard=lifeguard)
    slow = sim.rng.sample(sim.members, slow_members)
    for m in slow:
        m.slow = slow_delay
    sim.start()
    sim.run_until(duration)
    deaths = sim.deaths_of_live_members()
    slow_names = {m.name for m in slow}
    of_slow = [d for d in deaths if d.subject in slow_names]
    out(f"slow: N={n} loss={loss:.0%} seed={seed} lifeguard={'on' if lifeguard else 'off'}: {slow_members} members "
        f"process each packet up to {slow_delay} s late; live members declared dead {len(deaths)} times "
        f"({len(of_slow)} of them slow ones) in {duration:.0f} s virtual")
    return SlowResult(n, sorted(slow_names), lifeguard, deaths, of_slow)


@dataclass(slots=True)
class PartitionResult:
    members: int
    split_seen: bool
    heal_seconds: float


def scenario_partition(n: int, seed: int, loss: float, cut: float = 60.0, timeout: float = 300.0,
                       out=print) -> PartitionResult:
    sim = Simulation(n, seed, loss)
    sim.start()
    sim.run_until(5.0)
    half = set(sim.rng.sample(range(n), n // 2))
    for i, m in enumerate(sim.members):
        m.group = 1 if i in half else 0
    sim.partitioned = True
    sim.run_until(sim.now + cut)
    split_seen = all({x.name for x in m.core.nodes.values() if x.state in _LIVE} ==
                     {y.name for y in sim.members if y.group == m.group} for m in sim.members)
    sim.partitioned = False
    t0 = sim.now
    done = sim.run_until(t0 + timeout, sim.converged, check_every=0.5)
    heal = sim.now - t0 if done else math.inf
    out(f"partition: N={n} loss={loss:.0%} seed={seed}: halves cut for {cut:.0f} s (each saw only its side: "
        f"{split_seen}); after the heal every member sees all {n} alive in {heal:.1f} s virtual "
        f"(reconnect interval {sim.config.reconnect_interval:.0f} s)")
    return PartitionResult(n, split_seen, heal)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agent.gossip.sim", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--members", type=int, default=100)
    p.add_argument("--loss", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scenario", choices=["all", "spread", "failure", "slow", "partition"], default="all")
    p.add_argument("--bootstrap", choices=["static", "join"], default="static",
                   help="spread: start with full tables, or have every member join through 3 seeds")
    p.add_argument("--no-lifeguard", action="store_true", help="slow: run with Lifeguard off as well")
    a = p.parse_args(argv)
    ok = True
    if a.scenario in ("all", "spread"):
        r = scenario_spread(a.members, a.seed, a.loss, a.bootstrap)
        ok &= r.reached == a.members
    if a.scenario in ("all", "failure"):
        f = scenario_failure(a.members, a.seed, a.loss)
        ok &= f.all_dead <= f.bound
    if a.scenario in ("all", "slow"):
        s = scenario_slow(a.members, a.seed, a.loss, lifeguard=True)
        ok &= not s.false_deaths
        if a.no_lifeguard:
            scenario_slow(a.members, a.seed, a.loss, lifeguard=False)
    if a.scenario in ("all", "partition"):
        pr = scenario_partition(a.members, a.seed, a.loss)
        ok &= pr.heal_seconds != math.inf
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
