"""The gossip timers at idle: the core's gossip round armed only while broadcasts are queued (and sent within one
interval of being queued), its reap timer only while dead or left members are kept, answered probes leaving no
wake-up behind; networkdb's deadlines (agent/gossip/netdb.py) and the node's gossip loop (shoal/swarm/gossip_agent.py)
woken by inputs instead of a 10 Hz tick. Driven by hand (no sockets, no clock) except the agent's loop."""

from __future__ import annotations

import asyncio
import random

from agent.gossip import netdb_wire as w
from agent.gossip import wire
from agent.gossip.core import Datagram, GossipConfig, GossipCore
from agent.gossip.delegate import Member
from agent.gossip.netdb import REAP_SCAN_S, NetworkDB
from shoal.swarm.gossip_agent import key_ring
from tests.unit.test_gossip_core import Events, UserLayer, packet
from tests.unit.test_netdb_agent import K1, FakeShell, agent, settle

PEERS = ("p0", "p1")


class PendingLayer(UserLayer):
    """A user layer that says whether it has broadcasts (as networkdb does)."""

    def pending_broadcasts(self) -> bool:
        return bool(self.outgoing)


def make(layer: UserLayer | None = None, peers: tuple[str, ...] = PEERS) -> GossipCore:
    core = GossipCore("a", "10.0.0.1", 7946, layer if layer is not None else PendingLayer(), Events(),
                      random.Random(1), GossipConfig())
    core.start(0.0)
    for i, name in enumerate(peers):
        core.receive((f"10.0.1.{i}", 7946), packet(wire.Alive(0, name, f"10.0.1.{i}", 7946, b"")), 0.0)
    return core


def run(core: GossipCore, until: float) -> tuple[list[str], list[wire.Message]]:
    """Tick only when next_deadline says so, peers answering every ping at once; why it woke each time (the kind of
    the earliest timer) and the messages sent."""
    fired: list[str] = []
    sent: list[wire.Message] = []
    while True:
        sent.extend(answer(core))
        due = core.next_deadline()
        if due is None or due > until:
            return fired, sent
        fired.append(core._timers[0][2])
        core.tick(due)


def answer(core: GossipCore) -> list[wire.Message]:
    sent = []
    for out in core.pop_outgoing():
        if isinstance(out, Datagram):
            for part in wire.decode_packet(out.data):
                msg = wire.decode(part)
                sent.append(msg)
                if isinstance(msg, wire.Ping):
                    core.receive((out.addr, out.port), packet(wire.Ack(msg.seq)), core.now)
    return sent


def kinds(core: GossipCore) -> set[str]:
    return {kind for _, _, kind, _ in core._timers}


def test_an_idle_member_with_empty_queues_wakes_only_for_its_probes_and_periodic_syncs() -> None:
    core = make()
    run(core, 5.0)  # the join's broadcasts go out and run out of retransmits
    fired, sent = run(core, 25.0)
    assert len(core.broadcasts) == 0
    assert set(fired) <= {"probe", "push_pull", "reconnect", "rejoin"}
    assert 19 <= fired.count("probe") <= 21   # one a second: the failure detection's own schedule
    assert len(fired) <= 25                   # it used to be ~140 (gossip 5/s, reap 1/s, ack timeouts 1/s)
    assert all(isinstance(m, (wire.Ping, wire.Ack)) for m in sent)


def test_a_queued_broadcast_arms_the_gossip_timer_and_goes_out_within_one_interval() -> None:
    core = make()
    run(core, 5.0)
    assert "gossip" not in kinds(core)
    core.update_meta()   # queues our alive with a new incarnation
    me = core.nodes["a"].incarnation
    assert "gossip" in kinds(core)
    _, sent = run(core, core.now + core.config.gossip_interval)
    assert wire.Alive(me, "a", "10.0.0.1", 7946, b"meta") in sent


def test_the_gossip_timer_sleeps_again_once_the_broadcasts_ran_out_of_retransmits() -> None:
    core = make()
    run(core, 5.0)
    core.update_meta()
    fired, _ = run(core, 10.0)
    assert fired.count("gossip") >= 1
    assert len(core.broadcasts) == 0 and "gossip" not in kinds(core)


def test_a_delegate_broadcast_queued_between_inputs_is_sent_within_one_interval_of_next_deadline() -> None:
    layer = PendingLayer()
    core = make(layer)
    run(core, 5.0)
    layer.outgoing = [b"user-event"]
    t = core.now
    due = core.next_deadline()
    assert due is not None and t <= due <= t + core.config.gossip_interval
    assert "gossip" in kinds(core)
    _, sent = run(core, t + core.config.gossip_interval)
    assert wire.User(b"user-event") in sent


def test_a_delegate_that_cannot_say_keeps_the_gossip_timer_running_as_before() -> None:
    core = make(UserLayer())
    fired, _ = run(core, 5.0)
    assert "gossip" in kinds(core)
    assert fired.count("gossip") >= 20   # every 0.2 s


def test_an_answered_probe_leaves_no_wake_up_for_its_ack_timeout_or_deadline() -> None:
    core = make()
    run(core, 5.0)
    probe_at = next(when for when, _, kind, _ in core._timers if kind == "probe")
    core.tick(probe_at)
    assert {"ack_timeout", "probe_deadline"} <= kinds(core)   # the probe is out, not answered yet
    answer(core)
    assert core.next_deadline() > probe_at + core.config.probe_timeout   # not the dropped ack timeout
    assert core._timers[0][2] == "probe"


def test_with_nobody_to_send_to_the_gossip_timer_sleeps_until_a_member_appears() -> None:
    core = make(peers=())
    fired, _ = run(core, 5.0)
    assert fired.count("gossip") == 1 and "gossip" not in kinds(core)   # one round found nobody
    assert len(core.broadcasts) == 1                                    # our alive is still queued
    core.receive(("10.0.1.0", 7946), packet(wire.Alive(0, "p0", "10.0.1.0", 7946, b"")), core.now)
    assert core.next_deadline() <= core.now + core.config.gossip_interval
    assert "gossip" in kinds(core)


def test_the_reap_timer_runs_only_while_a_left_member_is_kept() -> None:
    core = make()
    run(core, 5.0)
    assert "reap" not in kinds(core)
    core.receive(("10.0.1.1", 7946), packet(wire.Dead(0, "p1", "p1")), core.now)   # p1 leaves
    assert "reap" in kinds(core)
    run(core, core.now + core.config.left_reap_time + 2.0)
    assert "p1" not in core.nodes and "reap" not in kinds(core)


# --- networkdb --------------------------------------------------------------------------------------------


def db_with_peer(peer: bool = True) -> NetworkDB:
    db = NetworkDB("a", random.Random(1))
    db.tick(0.0)
    db.join_network("n1")
    if peer:
        db.notify_join(Member("b", "10.0.1.2", 7946))
        db.notify_msg(w.encode(w.NetworkEvent(type=w.NetworkEvent.JOIN, ltime=1, node_name="b", network_id="n1")))
    return db


def drain(db: NetworkDB, until: float) -> int:
    """Tick at the deadlines up to until; how many ticks."""
    ticks = 0
    while (due := db.next_deadline()) <= until:
        db.tick(due)
        db.take_outgoing()
        while db.get_broadcasts(3, 10_000):   # the core piggybacks them till they run out of retransmits
            pass
        ticks += 1
    return ticks


def test_an_idle_networkdb_is_next_due_at_its_bulk_sync() -> None:
    db = db_with_peer()
    drain(db, 5.0)   # join re-pulls, the reap scan's last look
    assert db.next_deadline() == db.config.bulk_sync_interval_s
    assert not db.pending_broadcasts()


def test_a_table_event_is_due_at_once_with_a_peer_on_its_network_and_not_without() -> None:
    alone = db_with_peer(peer=False)
    drain(alone, 5.0)
    alone.tick(5.0)
    alone.create_entry("t", "n1", "ep1", b"v")
    assert alone.next_deadline() == 5.0 + REAP_SCAN_S   # the reap scan's look after an input; no gossip round
    db = db_with_peer()
    drain(db, 5.0)
    db.tick(5.0)
    db.create_entry("t", "n1", "ep1", b"v")
    assert db.next_deadline() <= 5.0 + db.config.gossip_interval_s
    db.tick(db.next_deadline())
    assert [to for to, _ in db.take_outgoing()] == ["b"]


def test_the_reap_scan_stops_with_nothing_to_reap_and_a_delete_starts_it() -> None:
    db = db_with_peer()
    db.create_entry("t", "n1", "ep1", b"v")
    drain(db, 5.0)
    assert db.next_deadline() == db.config.bulk_sync_interval_s
    db.delete_entry("t", "n1", "ep1")   # a tombstone: reaped in reap_entry_s, scanned every second till then
    assert db.next_deadline() <= 5.0 + REAP_SCAN_S


def test_an_input_calls_on_change_and_takes_the_clocks_time() -> None:
    db = db_with_peer()
    changes: list[int] = []
    db.on_change = lambda: changes.append(1)
    db.clock = lambda: 42.0
    db.notify_leave(Member("b", "10.0.1.2", 7946))
    assert changes == [1]
    assert db.nodes["b"].failed_at == 42.0


# --- the node's gossip loop -------------------------------------------------------------------------------


def test_the_agent_loop_sends_networkdb_messages_on_the_input_that_made_them() -> None:
    async def go() -> list[tuple]:
        a = agent()
        a.on_keys(key_ring([K1], 1, 0))
        await settle(a)
        a.db.notify_join(Member("mgr1", "192.168.200.11", 7946))
        a.db.notify_msg(w.encode(w.NetworkEvent(type=w.NetworkEvent.JOIN, ltime=5, node_name="mgr1",
                                                network_id="n1")))
        a.db.join_network("n1")   # a bulk sync to mgr1: out on the loop's next pass, not at a tick
        for _ in range(5):
            await asyncio.sleep(0)
        sent = [c for c in FakeShell.instances[0].calls if c[0] == "send_to"]
        await a.stop()
        return sent
    assert [c[1] for c in asyncio.run(go())] == ["mgr1"]


def test_an_idle_agent_loop_does_not_tick_networkdb() -> None:
    async def go() -> int:
        a = agent()
        a.on_keys(key_ring([K1], 1, 0))
        await settle(a)
        ticks = 0
        real = a.db.tick

        def counted(now: float) -> None:
            nonlocal ticks
            ticks += 1
            real(now)
        a.db.tick = counted  # type: ignore[method-assign]
        await asyncio.sleep(0.5)   # five ticks of the old 10 Hz loop
        await a.stop()
        return ticks
    assert asyncio.run(go()) == 0
