"""The sans-IO gossip core, its wire format and its Lifeguard parts, driven by hand: no sockets, no clock.
Companions: test_gossip_sim.py (many cores on a virtual network) and test_gossip_shell.py (real loopback sockets)."""

from __future__ import annotations

import random

import pytest

from agent.gossip import wire
from agent.gossip.awareness import Awareness
from agent.gossip.broadcast import TransmitLimitedQueue, retransmit_limit
from agent.gossip.core import Datagram, GossipConfig, GossipCore, StreamRequest
from agent.gossip.delegate import Member, MemberState
from agent.gossip.suspicion import Suspicion, remaining, suspicion_timeout


class Events:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str, MemberState]] = []

    def notify_join(self, m: Member) -> None:
        self.seen.append(("join", m.name, m.state))

    def notify_leave(self, m: Member) -> None:
        self.seen.append(("leave", m.name, m.state))

    def notify_update(self, m: Member) -> None:
        self.seen.append(("update", m.name, m.state))


class UserLayer:
    def __init__(self, state: bytes = b"") -> None:
        self.state = state
        self.msgs: list[bytes] = []
        self.merged: list[tuple[bytes, bool]] = []
        self.outgoing: list[bytes] = []

    def node_meta(self, limit: int) -> bytes:
        return b"meta"

    def notify_msg(self, data: bytes) -> None:
        self.msgs.append(data)

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        out, self.outgoing = self.outgoing, []
        return out

    def local_state(self, join: bool) -> bytes:
        return self.state

    def merge_remote_state(self, data: bytes, join: bool) -> None:
        self.merged.append((data, join))


def make(name: str = "a", n_peers: int = 0, config: GossipConfig | None = None) -> tuple[GossipCore, Events]:
    events = Events()
    core = GossipCore(name, "10.0.0.1", 7946, UserLayer(), events, random.Random(1), config or GossipConfig())
    core.start(0.0)
    for i in range(n_peers):
        core.receive((f"10.0.1.{i}", 7946), packet(wire.Alive(0, f"p{i}", f"10.0.1.{i}", 7946, b"")), 0.0)
    core.pop_outgoing()
    return core, events


def packet(*msgs: wire.Message) -> bytes:
    return wire.encode_packet([wire.encode(m) for m in msgs])


def sent_messages(core: GossipCore) -> list[tuple[str, wire.Message]]:
    out = []
    for o in core.pop_outgoing():
        if isinstance(o, Datagram):
            out.extend((o.addr, wire.decode(p)) for p in wire.decode_packet(o.data))
    return out


ALL_MESSAGES = [
    wire.Ping(1, "b", "a", "10.0.0.1", 7946),
    wire.IndirectPing(2, "c", "10.0.0.3", 7946, True, "a", "10.0.0.1", 7946),
    wire.Ack(3), wire.Nack(4),
    wire.Suspect(5, "c", "a"), wire.Alive(6, "c", "10.0.0.3", 7946, b"m" * 40), wire.Dead(7, "c", "c"),
    wire.User(b"hello"),
]


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: type(m).__name__)
def test_every_message_survives_encode_then_decode(msg: wire.Message) -> None:
    assert wire.decode(wire.encode(msg)) == msg


@pytest.mark.parametrize("msg", ALL_MESSAGES, ids=lambda m: type(m).__name__)
def test_every_truncation_and_trailing_byte_is_refused(msg: wire.Message) -> None:
    raw = wire.encode(msg)
    for cut in range(len(raw)):
        with pytest.raises(wire.DecodeError):
            wire.decode(raw[:cut])
    with pytest.raises(wire.DecodeError, match="1 trailing bytes"):
        wire.decode(raw + b"\x00")


def test_push_pull_frame_survives_encode_then_decode_and_refuses_unknown_state() -> None:
    pp = wire.PushPull(True, [wire.MemberRecord("a", "10.0.0.1", 7946, 3, MemberState.SUSPECT, b"x")], b"user")
    raw = wire.encode_push_pull(pp)
    assert wire.decode_push_pull(raw) == pp
    bad = bytearray(raw)
    bad[6 + 2 + 9 + 2 + 4] = 9   # the state byte of the first member
    with pytest.raises(wire.DecodeError, match="unknown member state 9"):
        wire.decode_push_pull(bytes(bad))


def test_push_pull_frame_claiming_too_many_members_is_refused_before_reading_them() -> None:
    raw = bytes([wire.MsgType.PUSH_PULL, 0]) + (200_000).to_bytes(4, "big")
    with pytest.raises(wire.DecodeError, match="push-pull of 200000 members exceeds 100000"):
        wire.decode_push_pull(raw)


def test_garbage_packets_are_counted_and_change_nothing() -> None:
    core, events = make(n_peers=2)
    before = [(m.name, m.state, m.incarnation) for m in core.members()]
    rng = random.Random(7)
    for _ in range(500):
        core.receive(("10.9.9.9", 1), rng.randbytes(rng.randrange(0, 80)), 0.1)
    core.receive(("10.9.9.9", 1), b"\x01\x01\x00\x05\x63garb", 0.1)   # a framed part with an unknown type
    assert core.counters["decode_errors"] >= 500
    assert [(m.name, m.state, m.incarnation) for m in core.members()] == before


def test_forged_dead_and_suspect_with_an_old_incarnation_are_dropped_and_counted() -> None:
    core, events = make(n_peers=1)
    core.receive(("10.0.1.0", 7946), packet(wire.Alive(5, "p0", "10.0.1.0", 7946, b"")), 0.1)
    core.receive(("10.6.6.6", 7946), packet(wire.Dead(4, "p0", "evil"), wire.Suspect(3, "p0", "evil")), 0.2)
    assert core.state_of("p0") is MemberState.ALIVE
    assert core.nodes["p0"].incarnation == 5
    assert core.counters["stale_updates"] == 2
    assert ("leave", "p0", MemberState.DEAD) not in events.seen


def test_a_suspicion_of_ourselves_is_refuted_with_a_higher_incarnation() -> None:
    core, _ = make(n_peers=1)
    core.receive(("10.0.1.0", 7946), packet(wire.Suspect(0, "a", "p0")), 0.1)
    assert core.nodes["a"].incarnation == 1
    assert core.counters["refutes"] == 1
    assert core.awareness.score == 1   # Lifeguard: being suspected hints that we are the slow one
    core.tick(0.3)   # the next gossip round carries the refutation
    assert ("10.0.1.0", wire.Alive(1, "a", "10.0.0.1", 7946, b"meta")) in sent_messages(core)


def test_an_alive_with_a_higher_incarnation_clears_a_suspicion() -> None:
    core, events = make(n_peers=3)
    core.receive(("10.0.1.1", 7946), packet(wire.Suspect(0, "p0", "p1")), 0.1)
    assert core.state_of("p0") is MemberState.SUSPECT
    core.receive(("10.0.1.0", 7946), packet(wire.Alive(1, "p0", "10.0.1.0", 7946, b"")), 0.2)
    assert core.state_of("p0") is MemberState.ALIVE
    assert core.nodes["p0"].incarnation == 1


def test_a_ping_for_another_name_is_ignored_and_counted() -> None:
    core, _ = make()
    core.receive(("10.0.1.0", 7946), packet(wire.Ping(9, "someone-else", "p0", "10.0.1.0", 7946)), 0.1)
    assert core.counters["misdirected_pings"] == 1
    assert sent_messages(core) == []


def test_a_ping_is_answered_with_an_ack_of_its_sequence_number() -> None:
    core, _ = make()
    core.receive(("10.0.1.0", 7946), packet(wire.Ping(9, "a", "p0", "10.0.1.0", 7946)), 0.1)
    assert ("10.0.1.0", wire.Ack(9)) in sent_messages(core)


def test_an_indirect_ping_is_relayed_and_nacked_when_the_target_stays_silent() -> None:
    core, _ = make()
    core.receive(("10.0.1.0", 7946),
                 packet(wire.IndirectPing(77, "t", "10.0.2.2", 7946, True, "p0", "10.0.1.0", 7946)), 0.1)
    relayed = [m for _, m in sent_messages(core) if isinstance(m, wire.Ping)]
    assert [(p.target) for p in relayed] == ["t"]
    core.tick(0.1 + core.config.probe_timeout + 0.01)
    assert ("10.0.1.0", wire.Nack(77)) in sent_messages(core)


def silent_member_timeline(config: GossipConfig) -> tuple[float, float, GossipCore, Events]:
    core, events = make(n_peers=1, config=config)
    t = 0.0
    suspect_at = dead_at = None
    while t < 120 and dead_at is None:
        t = round(t + 0.05, 2)
        core.tick(t)
        core.pop_outgoing()   # p0 never answers
        if suspect_at is None and core.state_of("p0") is MemberState.SUSPECT:
            suspect_at = t
        if core.state_of("p0") is MemberState.DEAD:
            dead_at = t
    assert suspect_at is not None and dead_at is not None
    return suspect_at, dead_at, core, events


def test_a_silent_member_is_declared_dead_a_suspicion_timeout_and_a_final_probe_after_suspicion() -> None:
    suspect_at, dead_at, core, events = silent_member_timeline(GossipConfig(lifeguard=False))
    # two members: no confirmations to expect, so the minimum timeout (4 s), then one final probe interval
    assert suspicion_timeout(4, 2, 1.0) == 4.0
    assert dead_at - suspect_at == pytest.approx(4.0 + 1.0, abs=0.051)
    assert ("leave", "p0", MemberState.DEAD) in events.seen


def test_with_lifeguard_failed_probes_without_nacks_stretch_our_own_final_probe() -> None:
    suspect_at, dead_at, core, _ = silent_member_timeline(GossipConfig())
    # every failed probe with nobody to nack raised our awareness; the final probe waited (score + 1) intervals
    assert core.awareness.score >= 2
    assert 4.0 + 2.0 <= dead_at - suspect_at <= 4.0 + 8.0 + 0.051


def test_a_suspect_that_answers_the_final_probe_is_not_declared_dead() -> None:
    core, events = make(n_peers=1)
    core.receive(("10.0.1.9", 7946), packet(wire.Suspect(0, "p0", "p9")), 0.0)
    t = 0.0
    while t < 60:
        t += 0.05
        core.tick(t)
        for addr, msg in sent_messages(core):
            if isinstance(msg, wire.Ping) and msg.target == "p0":
                core.receive(("10.0.1.0", 7946), packet(wire.Ack(msg.seq)), t)
    assert core.state_of("p0") is MemberState.ALIVE
    assert core.counters["deaths_declared"] == 0
    assert not [e for e in events.seen if e[0] == "leave"]


def test_suspicion_timeout_starts_at_max_and_reaches_min_after_k_confirmations() -> None:
    lo, hi = 10.0, 60.0
    assert remaining(0, 3, 0.0, lo, hi) == hi
    assert remaining(3, 3, 0.0, lo, hi) == lo
    assert lo < remaining(1, 3, 0.0, lo, hi) < hi
    assert remaining(1, 3, 5.0, lo, hi) == remaining(1, 3, 0.0, lo, hi) - 5.0
    s = Suspicion(100.0, 2, lo, hi, "first", 0)
    assert not s.confirm("first")          # the first suspecter is not its own confirmation
    assert s.confirm("b") and s.confirm("c")
    assert not s.confirm("d")               # k reached: no more shrinking
    assert s.deadline() == 100.0 + lo


def test_suspicion_minimum_scales_with_log10_of_the_cluster() -> None:
    assert suspicion_timeout(4, 5, 1.0) == 4.0
    assert suspicion_timeout(4, 100, 1.0) == pytest.approx(8.0)
    assert suspicion_timeout(4, 1000, 0.5) == pytest.approx(6.0)


def test_awareness_stretches_timeouts_and_stays_in_bounds() -> None:
    a = Awareness(8)
    a.apply_delta(-3)
    assert a.scale(0.5) == 0.5
    a.apply_delta(20)
    assert a.score == 7 and a.scale(1.0) == 8.0


def test_a_broadcast_is_sent_the_retransmit_limit_then_dropped() -> None:
    q = TransmitLimitedQueue(4, lambda: 99)
    q.queue(b"x" * 10, key="n1")
    sends = 0
    while q.get(2, 1400):
        sends += 1
    assert sends == retransmit_limit(4, 99) == 8
    assert len(q) == 0


def test_a_newer_broadcast_about_the_same_member_replaces_the_older() -> None:
    q = TransmitLimitedQueue(4, lambda: 10)
    q.queue(b"old", key="n1")
    q.queue(b"other", key="n2")
    q.queue(b"new", key="n1")
    assert sorted(q.get(2, 1400)) == [b"new", b"other"]


def test_broadcasts_fill_a_packet_up_to_its_limit_fewest_transmits_first() -> None:
    q = TransmitLimitedQueue(4, lambda: 10)
    for i in range(100):
        q.queue(bytes(100), key=f"k{i}")
    first = q.get(2, 1400)
    assert len(first) == 13                      # 13 * (100 + 2) <= 1400 < 14 * 102
    second = q.get(2, 1400)
    assert len(second) == 13 and len(q) == 100   # the next packet carries others, not the same again


def test_user_messages_ride_on_packets_and_reach_the_delegate() -> None:
    a, _ = make("a", n_peers=1)
    a.delegate.outgoing = [b"entry-1"]
    a.send_to("p0", b"direct")
    sent = sent_messages(a)
    assert ("10.0.1.0", wire.User(b"direct")) in sent and ("10.0.1.0", wire.User(b"entry-1")) in sent
    b, _ = make("b")
    b.receive(("10.0.0.1", 7946), packet(wire.User(b"direct"), wire.User(b"entry-1")), 0.1)
    assert b.delegate.msgs == [b"direct", b"entry-1"]


def test_push_pull_exchanges_members_and_user_state_both_ways() -> None:
    a, a_events = make("a", n_peers=1)
    a.delegate.state = b"a-state"
    b = GossipCore("b", "10.0.0.2", 7946, UserLayer(b"b-state"), Events(), random.Random(2), GossipConfig())
    b.start(0.0)
    [req] = b.join([("10.0.0.1", 7946)])
    assert isinstance(req, StreamRequest) and req.join
    reply = a.handle_stream(("10.0.0.2", 40000), req.data, 0.1)
    assert reply is not None
    assert b.handle_stream_reply(req.id, reply, 0.2)
    assert {m.name for m in b.members()} == {"a", "b", "p0"}
    assert {m.name for m in a.members()} == {"a", "b", "p0"}
    assert a.delegate.merged == [(b"b-state", True)]
    assert b.delegate.merged == [(b"a-state", True)]
    assert ("join", "b", MemberState.ALIVE) in a_events.seen


def test_a_garbage_push_pull_is_refused_and_counted() -> None:
    a, _ = make("a")
    assert a.handle_stream(("10.0.0.2", 40000), b"\x09\x00\xff\xff\xff\xff", 0.1) is None
    assert a.handle_stream(("10.0.0.2", 40000), b"nonsense", 0.1) is None
    assert a.counters["stream_errors"] == 2


def test_a_dead_member_in_a_push_pull_becomes_a_suspicion_not_a_death() -> None:
    a, events = make("a", n_peers=2)
    remote = wire.PushPull(False, [wire.MemberRecord("p0", "10.0.1.0", 7946, 0, MemberState.DEAD, b"")], b"")
    a.handle_stream(("10.0.0.2", 40000), wire.encode_push_pull(remote), 0.1)
    assert a.state_of("p0") is MemberState.SUSPECT
    assert not [e for e in events.seen if e[0] == "leave"]


def test_a_graceful_leave_is_gossiped_and_peers_mark_the_member_left() -> None:
    a, _ = make("a", n_peers=1)
    a.leave(1.0)
    dead = [m for _, m in sent_messages(a)]
    a.tick(1.3)
    dead += [m for _, m in sent_messages(a)]
    assert wire.Dead(0, "a", "a") in dead
    assert a.state_of("a") is MemberState.LEFT
    peer, events = make("p0")
    peer.receive(("10.0.0.1", 7946), packet(wire.Alive(0, "a", "10.0.0.1", 7946, b"")), 1.0)
    peer.receive(("10.0.0.1", 7946), packet(wire.Dead(0, "a", "a")), 1.1)
    assert peer.state_of("a") is MemberState.LEFT
    assert ("leave", "a", MemberState.LEFT) in events.seen


def test_an_isolated_member_retries_its_seeds() -> None:
    a, _ = make("a", config=GossipConfig(rejoin_interval=5.0))
    a.join([("10.0.5.5", 7946)])
    a.pop_outgoing()
    a.tick(11.0)
    assert [(r.addr, r.join) for r in a.pop_outgoing() if isinstance(r, StreamRequest)] == [("10.0.5.5", True)]


def test_a_member_or_relay_target_given_by_host_name_is_refused_and_counted() -> None:
    core, events = make()
    core.receive(("10.0.1.0", 7946), packet(wire.Alive(0, "p0", "evil.example.com", 7946, b"")), 0.1)
    core.receive(("10.0.1.0", 7946),
                 packet(wire.IndirectPing(1, "t", "evil.example.com", 7946, True, "p0", "10.0.1.0", 7946)), 0.1)
    assert core.counters["bad_addresses"] == 2
    assert core.state_of("p0") is None
    assert sent_messages(core) == []


def test_a_left_member_is_forgotten_after_the_reap_time_and_a_dead_one_after_the_reconnect_timeout() -> None:
    core, _ = make(n_peers=2, config=GossipConfig(left_reap_time=30.0, reconnect_timeout=100.0))
    core.receive(("10.0.1.0", 7946), packet(wire.Dead(0, "p0", "p0"), wire.Dead(0, "p1", "p9")), 1.0)
    assert (core.state_of("p0"), core.state_of("p1")) == (MemberState.LEFT, MemberState.DEAD)
    core.tick(30.5)
    assert core.state_of("p0") is MemberState.LEFT
    core.tick(32.0)
    assert core.state_of("p0") is None and core.state_of("p1") is MemberState.DEAD
    core.tick(102.0)
    assert core.state_of("p1") is None


def test_a_dead_member_that_comes_back_with_a_higher_incarnation_joins_again() -> None:
    core, events = make(n_peers=1)
    core.receive(("10.0.1.9", 7946), packet(wire.Dead(0, "p0", "p9")), 1.0)
    core.receive(("10.0.1.0", 7946), packet(wire.Alive(0, "p0", "10.0.1.0", 7946, b"")), 1.1)
    assert core.state_of("p0") is MemberState.DEAD     # the same incarnation cannot undo a death
    core.receive(("10.0.1.0", 7946), packet(wire.Alive(1, "p0", "10.0.1.0", 7946, b"")), 1.2)
    assert core.state_of("p0") is MemberState.ALIVE
    assert [e for e in events.seen if e[1] == "p0"] == [("join", "p0", MemberState.ALIVE),
                                                        ("leave", "p0", MemberState.DEAD),
                                                        ("join", "p0", MemberState.ALIVE)]


def test_random_well_formed_messages_never_break_the_core_and_it_never_concedes_its_own_death() -> None:
    rng = random.Random(11)
    core, _ = make("a", n_peers=3)
    names = ["a", "p0", "p1", "p2", "x"]

    def rand_msg() -> wire.Message:
        n, inc = rng.choice(names), rng.randrange(6)
        return rng.choice([
            wire.Alive(inc, n, f"10.0.1.{rng.randrange(4)}", 7946, rng.randbytes(rng.randrange(3))),
            wire.Suspect(inc, n, rng.choice(names)), wire.Dead(inc, n, rng.choice(names)),
            wire.Ping(rng.randrange(1 << 32), n, "p1", "10.0.1.1", 7946), wire.Ack(rng.randrange(1 << 32)),
            wire.Nack(rng.randrange(1 << 32)), wire.User(rng.randbytes(4)),
            wire.IndirectPing(rng.randrange(1 << 32), n, "10.0.1.2", 7946, True, "p1", "10.0.1.1", 7946),
        ])
    t = 0.0
    for _ in range(3000):
        t += rng.random() * 0.2
        core.receive((f"10.0.1.{rng.randrange(4)}", 7946), packet(*[rand_msg() for _ in range(rng.randrange(1, 4))]),
                     t)
        core.tick(t)
        core.pop_outgoing()
        assert core.state_of("a") is MemberState.ALIVE
    assert core.counters["handler_errors"] == 0


def test_an_accusation_at_the_largest_incarnation_does_not_overflow_the_wire() -> None:
    core, _ = make("a", n_peers=1)
    core.receive(("10.0.1.0", 7946), packet(wire.Suspect(0xFFFFFFFF, "a", "p0")), 0.1)
    assert core.nodes["a"].incarnation == 0xFFFFFFFF
    assert core.handle_stream(("10.0.1.0", 7946), wire.encode_push_pull(wire.PushPull(False, [], b"")), 0.2)
    assert core.counters["handler_errors"] == 0


class TargetedLayer(UserLayer):
    """A delegate that has one message for each member in owed, and says so only for that member."""

    def __init__(self, owed: set[str]) -> None:
        super().__init__()
        self.owed = owed

    def pending_broadcasts(self) -> bool:
        return bool(self.owed)

    def get_broadcasts_for(self, member: str, overhead: int, limit: int) -> list[bytes]:
        if member in self.owed:
            self.owed.discard(member)
            return [b"for-" + member.encode()]
        return []


def make_targeted(owed: set[str], n_peers: int) -> GossipCore:
    core = GossipCore("a", "10.0.0.1", 7946, TargetedLayer(set()), Events(), random.Random(1), GossipConfig())
    core.start(0.0)
    for i in range(n_peers):
        core.receive((f"10.0.1.{i}", 7946), packet(wire.Alive(0, f"p{i}", f"10.0.1.{i}", 7946, b"")), 0.0)
    core.pop_outgoing()
    core.delegate.owed = owed
    return core


def test_a_gossip_round_goes_on_past_targets_that_already_have_everything() -> None:
    # all three members are this round's targets; only p2 lacks something: it gets it in this round whatever the order
    core = make_targeted({"p2"}, n_peers=3)
    t = core.next_deadline()
    while "p2" in core.delegate.owed and t is not None and t < 0.3:
        core.tick(t)
        t = core.next_deadline()
    assert ("10.0.1.2", wire.User(b"for-p2")) in sent_messages(core)


def test_an_ack_carries_what_the_pinging_member_has_not_had() -> None:
    core = make_targeted({"p0"}, n_peers=2)
    core.receive(("10.0.1.0", 7946), packet(wire.Ping(7, "a", "p0", "10.0.1.0", 7946)), 0.01)
    sent = sent_messages(core)
    assert ("10.0.1.0", wire.Ack(7)) in sent and ("10.0.1.0", wire.User(b"for-p0")) in sent


def test_an_ack_to_a_ping_whose_source_name_is_not_at_its_address_is_not_told_whom_it_goes_to() -> None:
    core = make_targeted({"p0"}, n_peers=2)
    core.receive(("10.0.1.1", 7946), packet(wire.Ping(7, "a", "p0", "10.0.1.1", 7946)), 0.01)
    sent = sent_messages(core)
    assert ("10.0.1.1", wire.Ack(7)) in sent and [m for _, m in sent if isinstance(m, wire.User)] == []
